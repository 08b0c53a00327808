//! Budget forcing (s1, Muennighoff et al. 2025): control how long a model thinks. With
//! `--max-thinking-tokens N` a sample still thinking after N generated tokens is cut there: the
//! end-of-thinking delimiter and an answer cue are appended and the model writes its answer. With
//! `--min-thinking-tokens N` an end-of-thinking delimiter written before N thinking tokens is replaced by
//! "Wait" and the model thinks on.
//!
//! It works over any teacher whose tokenizer forge has (the local one; an HTTP one through the completions
//! API, with `--chat-template DIR` holding its tokenizer), in rounds as s1 does it: a round
//! samples every unfinished sample on, stopping at the delimiter or at the budget; the text so far becomes
//! the next round's prefill. The first round is plain sampling (the same random streams) with the
//! delimiter as a stop string, so at temperature 0 a sample the budget never touches equals the one
//! `forge generate` writes without it. Thinking tokens are the tokens the model generated before the
//! delimiter (forced text does not count); each sample's count, its "Wait"s and whether it was cut are in
//! its row's `server` column.

use serde::{Deserialize, Serialize};

use super::{Finish, Prompt, Sample, SamplingConfig, Teacher};
use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::progress::Progress;

/// How long a model may think (`forge generate` and `forge eval`; `[generate]` in a pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct BudgetConfig {
    /// Cut the thinking after N generated tokens: append the end-of-thinking delimiter and the answer cue,
    /// and let the model answer (s1 budget forcing; local teacher)
    #[arg(long, alias = "budget", value_name = "N")]
    #[serde(default)]
    pub max_thinking_tokens: Option<u32>,
    /// Think at least N tokens: an end-of-thinking delimiter before that is replaced by `--wait-text`
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub min_thinking_tokens: Option<u32>,
    /// The text that ends the thinking (forge's tiny teacher: 'The answer is')
    #[arg(long, default_value_t = thinking_end(), value_name = "TEXT")]
    #[serde(default = "thinking_end")]
    pub thinking_end: String,
    /// What a cut appends after the delimiter (escapes \n and \t are read)
    #[arg(long, default_value_t = answer_cue(), value_name = "TEXT")]
    #[serde(default = "answer_cue")]
    pub answer_cue: String,
    /// What replaces an early delimiter
    #[arg(long, default_value_t = wait_text(), value_name = "TEXT")]
    #[serde(default = "wait_text")]
    pub wait_text: String,
}

fn thinking_end() -> String {
    "</think>".into()
}
fn answer_cue() -> String {
    "\\n\\nFinal Answer:".into()
}
fn wait_text() -> String {
    "Wait".into()
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            max_thinking_tokens: None,
            min_thinking_tokens: None,
            thinking_end: thinking_end(),
            answer_cue: answer_cue(),
            wait_text: wait_text(),
        }
    }
}

impl BudgetConfig {
    /// Whether a thinking budget was asked for.
    pub fn active(&self) -> bool {
        self.max_thinking_tokens.is_some() || self.min_thinking_tokens.is_some()
    }

    fn check(&self, sampling: &SamplingConfig) -> Result<()> {
        if let (Some(min), Some(max)) = (self.min_thinking_tokens, self.max_thinking_tokens)
            && min > max
        {
            return Err(Error::usage(format!("`--min-thinking-tokens {min}` is above `--max-thinking-tokens {max}`")));
        }
        if self.thinking_end.is_empty() {
            return Err(Error::usage("`--thinking-end` is empty: budget forcing needs the text that ends thinking"));
        }
        if sampling.beams > 1 {
            return Err(Error::usage("budget forcing and beam search do not combine"));
        }
        Ok(())
    }
}

/// Where a sample stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Thinking,
    Answering,
    Done(Finish),
}

/// One sample across its rounds.
struct Thread {
    prompt: usize,
    k: u32,
    phase: Phase,
    /// The completion so far (after the prompt's prefill), forced text included.
    text: String,
    tokens: Vec<u32>,
    prompt_tokens: u32,
    /// Generated tokens, and forced ones.
    generated: u32,
    forced: u32,
    thinking: u32,
    waits: u32,
    cut: bool,
    error: Option<String>,
    /// What the server reported about the last round (an HTTP teacher).
    server: Option<String>,
}

/// A round's sample as budget forcing reads it: its text (with the delimiter a server left out put back),
/// its generated token ids (the local teacher's own; an HTTP teacher's text encoded again) and the
/// end-of-sequence token it ended with.
struct Round {
    text: String,
    ids: Vec<u32>,
    eos: Option<u32>,
    finish: Finish,
}

impl Round {
    fn of(s: Sample, end: &str, tokenizer: &Tokenizer) -> Result<Round> {
        let mut text = s.text;
        // vLLM ends at a stop string without writing it; it names it in `stop_reason`
        let server: Option<serde_json::Value> = s.server.as_deref().and_then(|j| serde_json::from_str(j).ok());
        let stripped = server.is_some_and(|v| v["stop_reason"].as_str() == Some(end));
        if s.finish == Finish::Stop && !text.ends_with(end) && stripped {
            text += end;
        }
        if s.tokens.is_empty() {
            let ids = tokenizer.encode(&text)?;
            return Ok(Round { text, ids, eos: None, finish: s.finish });
        }
        let mut ids = s.tokens;
        let eos = (ids.len() > s.completion_tokens as usize).then(|| ids.pop()).flatten();
        Ok(Round { text, ids, eos, finish: s.finish })
    }
}

/// The forced texts, with their token ids.
struct Forced {
    end: String,
    end_len: u32,
    cut: String,
    cut_ids: Vec<u32>,
    wait: String,
    wait_ids: Vec<u32>,
}

impl Thread {
    /// Take in a round's sample.
    fn absorb(
        &mut self,
        s: Sample,
        budget: &BudgetConfig,
        f: &Forced,
        tokenizer: &Tokenizer,
        max_total: u32,
    ) -> Result<()> {
        if self.generated == 0 && self.forced == 0 {
            self.prompt_tokens = s.prompt_tokens;
        }
        self.server = s.server.clone();
        if s.finish == Finish::Error {
            self.error = s.error;
            self.phase = Phase::Done(Finish::Error);
            return Ok(());
        }
        let round = Round::of(s, &f.end, tokenizer)?;
        if self.phase != Phase::Thinking {
            self.take(&round);
            self.phase = Phase::Done(round.finish);
            return Ok(());
        }
        let at_end = round.finish == Finish::Stop && round.text.ends_with(&f.end);
        let count = round.ids.len() as u32;
        let before = if at_end { count.saturating_sub(f.end_len) } else { count };
        let left = budget.max_thinking_tokens.map(|m| m.saturating_sub(self.thinking));
        if let Some(left) = left.filter(|&left| before > left) {
            // still thinking at the budget: cut at exactly `left` tokens
            let kept = &round.ids[..left as usize];
            self.text += &tokenizer.decode(kept, false)?;
            self.tokens.extend(kept);
            self.generated += left;
            self.thinking += left;
            self.text += &f.cut;
            self.tokens.extend(&f.cut_ids);
            self.forced += f.cut_ids.len() as u32;
            self.cut = true;
            self.phase = Phase::Answering;
        } else if at_end && self.thinking + before < budget.min_thinking_tokens.unwrap_or(0) {
            // an early end of thinking: "Wait" instead, and think on
            self.text += &round.text[..round.text.len() - f.end.len()];
            self.text += &f.wait;
            self.tokens.extend(&round.ids[..before as usize]);
            self.tokens.extend(&f.wait_ids);
            self.generated += before;
            self.thinking += before;
            self.forced += f.wait_ids.len() as u32;
            self.waits += 1;
        } else {
            self.thinking += before;
            self.take(&round);
            // the thinking ended within the budget (the answer comes next), or the sample ended
            self.phase = if at_end { Phase::Answering } else { Phase::Done(round.finish) };
        }
        if !matches!(self.phase, Phase::Done(_)) && self.generated + self.forced >= max_total {
            self.phase = Phase::Done(Finish::Length);
        }
        Ok(())
    }

    fn take(&mut self, round: &Round) {
        self.text += &round.text;
        self.tokens.extend(&round.ids);
        self.tokens.extend(round.eos);
        self.generated += round.ids.len() as u32;
    }

    /// New tokens left to this sample's next round: a thinking round may run past the thinking budget
    /// by the delimiter's length, so that a delimiter right at the budget is seen whole.
    fn left(&self, budget: &BudgetConfig, f: &Forced, max_total: u32) -> u32 {
        let total = max_total.saturating_sub(self.generated + self.forced);
        match (self.phase, budget.max_thinking_tokens) {
            (Phase::Thinking, Some(m)) => total.min(m.saturating_sub(self.thinking) + f.end_len),
            _ => total,
        }
    }

    fn sample(self) -> Sample {
        let Phase::Done(finish) = self.phase else { unreachable!("sampled to the end") };
        // the counts, beside what a server reported about the last round
        let mut server =
            self.server.as_deref().and_then(|j| serde_json::from_str(j).ok()).unwrap_or(serde_json::json!({}));
        for (key, value) in
            [("thinking_tokens", self.thinking.into()), ("waits", self.waits.into()), ("cut", self.cut.into())]
        {
            server[key] = value;
        }
        Sample {
            text: self.text,
            reasoning: None,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated + self.forced,
            tokens: self.tokens,
            finish,
            // the forced tokens have no sampled log-probability
            logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            error: self.error,
            server: Some(server.to_string()),
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\t", "\t")
}

/// `n` samples of each prompt, their thinking held to `budget`; `progress` counts finished samples.
pub fn generate(
    teacher: &mut dyn Teacher,
    prompts: &[Prompt],
    sampling: &SamplingConfig,
    budget: &BudgetConfig,
    progress: &Progress,
) -> Result<Vec<Vec<Sample>>> {
    budget.check(sampling)?;
    let Some(tokenizer) = teacher.tokenizer().cloned() else {
        return Err(Error::usage(format!(
            "budget forcing counts tokens with the teacher's tokenizer; `{}` has none here",
            teacher.id()
        ))
        .with_hint(
            "use a local teacher, or an HTTP one through `--api completions --chat-template DIR` (DIR with its tokenizer.json)",
        ));
    };
    let end = unescape(&budget.thinking_end);
    let cut = format!("\n{end}{}", unescape(&budget.answer_cue));
    let wait = unescape(&budget.wait_text);
    let forced = Forced {
        end_len: tokenizer.encode(&end)?.len() as u32,
        cut_ids: tokenizer.encode(&cut)?,
        wait_ids: tokenizer.encode(&wait)?,
        end,
        cut,
        wait,
    };
    let max_total = sampling.max_new_tokens;
    let mut threads: Vec<Thread> = prompts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| (0..p.n).map(move |k| (i, p.first_sample + k)))
        .map(|(prompt, k)| Thread {
            prompt,
            k,
            phase: Phase::Thinking,
            text: String::new(),
            tokens: Vec::new(),
            prompt_tokens: 0,
            generated: 0,
            forced: 0,
            thinking: 0,
            waits: 0,
            cut: false,
            error: None,
            server: None,
        })
        .collect();
    let hidden = Progress::hidden();
    let thinking_cfg = SamplingConfig {
        stop: sampling.stop.iter().cloned().chain([forced.end.clone()]).collect(),
        ..sampling.clone()
    };
    // round 0: the prompts as given, n samples each (the streams of plain sampling)
    let first: Vec<Prompt> = prompts
        .iter()
        .map(|p| Prompt {
            max_new_tokens: budget.max_thinking_tokens.map(|m| (m + forced.end_len).min(p.limit(sampling))),
            ..p.clone()
        })
        .collect();
    let samples = teacher.generate(&first, &thinking_cfg, &hidden)?;
    for (t, s) in threads.iter_mut().zip(samples.into_iter().flatten()) {
        t.absorb(s, budget, &forced, &tokenizer, max_total)?;
    }
    for round in 1.. {
        let mut any = false;
        for (phase, cfg) in [(Phase::Thinking, &thinking_cfg), (Phase::Answering, sampling)] {
            let open: Vec<usize> = (0..threads.len()).filter(|&i| threads[i].phase == phase).collect();
            if open.is_empty() {
                continue;
            }
            any = true;
            let round_prompts: Vec<Prompt> = open
                .iter()
                .map(|&i| {
                    let (t, p) = (&threads[i], &prompts[threads[i].prompt]);
                    Prompt {
                        key: format!("{}\u{1f}{}\u{1f}{round}", p.key, t.k),
                        messages: p.messages.clone(),
                        prefill: format!("{}{}", p.prefill, t.text),
                        n: 1,
                        max_new_tokens: Some(t.left(budget, &forced, max_total)),
                        first_sample: 0,
                    }
                })
                .collect();
            let samples = teacher.generate(&round_prompts, cfg, &hidden)?;
            for (&i, s) in open.iter().zip(samples.into_iter().flatten()) {
                threads[i].absorb(s, budget, &forced, &tokenizer, max_total)?;
            }
        }
        if !any {
            break;
        }
    }
    let mut out: Vec<Vec<Sample>> = prompts.iter().map(|p| Vec::with_capacity(p.n as usize)).collect();
    for t in threads {
        out[t.prompt].push(t.sample());
    }
    progress.inc(out.iter().map(Vec::len).sum::<usize>() as u64);
    Ok(out)
}
