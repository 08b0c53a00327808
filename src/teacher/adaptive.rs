//! Adaptive sampling (`forge generate --until-correct K`, `--pass-rate LO:HI`): a problem is sampled in
//! rounds of `--samples-per-round`, each sample checked by the verifier as it comes, and no more once
//! `K` samples are right, or once its pass rate is decided outside the window the filter will apply
//! (Wilson interval at `--pass-rate-confidence`: too easy or too hard to keep), or at `-n`. Compute goes
//! to the problems that need it.
//!
//! Sample `k` of a problem is the sample `k` a fixed `-n` run draws (its stream depends on the seed, the
//! problem and `k` only), so the rows written are a prefix of each problem's fixed-n rows: filtered to
//! the first K right ones (`forge filter --max-per-problem K --pick first --no-exact-dup`), the two keep
//! the same rows. (With the filter's dedup on, a problem whose right samples repeat one text keeps one
//! row either way, but fixed-n may find a second, different right text past the K-th right sample.)
//! A problem's rows are written together, in sample order; a killed run reads back the problems its
//! finished shards hold and samples on from there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::budget::BudgetConfig;
use super::traces::trace;
use super::{Prompt, SamplingConfig, Teacher};
use crate::dataset::{DatasetWriter, Input, Problem, TableKind, Trace};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::verify::pass_rate::{PassRate, Side};
use crate::verify::{TraceRef, VerifySettings, verify_trace};

/// When to stop sampling a problem before `-n` (`forge generate`; `[generate]` in a pipeline).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct AdaptiveConfig {
    /// Stop sampling a problem once K of its samples are verified right (at most `-n` samples; repeats
    /// count, as the filter's dedup will drop them)
    #[arg(long, value_name = "K")]
    #[serde(default)]
    pub until_correct: Option<u32>,
    /// Stop sampling a problem once its pass rate is decided outside LO:HI (the window `forge filter
    /// --pass-rate` will apply): too easy or too hard to keep
    #[arg(long, value_name = "LO:HI")]
    #[serde(default)]
    pub pass_rate: Option<PassRate>,
    /// How sure "decided" is: the two-sided confidence of the pass rate's Wilson interval
    #[arg(long, default_value_t = confidence(), value_name = "C")]
    #[serde(default = "confidence")]
    pub pass_rate_confidence: f64,
    /// Samples of a problem per round (adaptive sampling)
    #[arg(long, default_value_t = per_round(), value_name = "R")]
    #[serde(default = "per_round")]
    pub samples_per_round: u32,
}

fn confidence() -> f64 {
    0.95
}
fn per_round() -> u32 {
    4
}

impl AdaptiveConfig {
    /// Whether adaptive sampling was asked for (`--until-correct` or `--pass-rate`).
    pub fn active(&self) -> bool {
        self.until_correct.is_some() || self.pass_rate.is_some()
    }

    /// Refuse settings adaptive sampling cannot run with (beam search, counts of 0, a confidence outside
    /// (0, 1)).
    pub fn check(&self, sampling: &SamplingConfig) -> Result<()> {
        if sampling.beams > 1 {
            return Err(Error::usage("adaptive sampling draws samples; beam search's are the same every round")
                .with_hint("leave out `--beams`, or `--until-correct` and `--pass-rate`"));
        }
        if self.until_correct == Some(0) || self.samples_per_round == 0 {
            return Err(Error::usage("`--until-correct` and `--samples-per-round` must be at least 1"));
        }
        if !(self.pass_rate_confidence > 0.0 && self.pass_rate_confidence < 1.0) {
            return Err(Error::usage(format!(
                "`--pass-rate-confidence {}` is not a confidence: expected a number between 0 and 1, e.g. 0.95",
                self.pass_rate_confidence
            )));
        }
        Ok(())
    }
}

/// Why a problem's sampling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    Correct,
    TooEasy,
    TooHard,
    Limit,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Correct => "stopped_correct",
            Stop::TooEasy => "stopped_too_easy",
            Stop::TooHard => "stopped_too_hard",
            Stop::Limit => "stopped_at_n",
        }
    }
}

/// What an adaptive run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Samples drawn.
    pub samples: u64,
    /// Tokens generated.
    pub tokens: u64,
    /// Samples that failed (HTTP teacher errors).
    pub errors: u64,
    /// Problems per reason they stopped (report keys, e.g. `stopped_correct`).
    pub stopped: BTreeMap<&'static str, u64>,
}

/// The problems of the finished shards an interrupted run left, with their rows, in order; the last is
/// left out (its rows may go on in the unfinished shard: it is sampled again, and the writer drops the
/// rows it already has).
fn finished(writer: &DatasetWriter) -> Result<Vec<(String, Vec<Trace>)>> {
    let mut out: Vec<(String, Vec<Trace>)> = Vec::new();
    for path in writer.finished_prefix() {
        let input = Input::open(&path)?;
        for batch in input.rows_of::<Trace>(TableKind::Traces, 0..input.rows()) {
            for t in batch? {
                match out.last_mut() {
                    Some((id, rows)) if *id == t.problem_id => rows.push(t),
                    _ => out.push((t.problem_id.clone(), vec![t])),
                }
            }
        }
    }
    out.pop();
    Ok(out)
}

/// Why a problem with `right` of `taken` samples right stops, if it does.
fn rule(cfg: &AdaptiveConfig, right: u64, taken: u64, n: u32) -> Option<Stop> {
    let decided = cfg.pass_rate.and_then(|w| w.decided(right, taken, cfg.pass_rate_confidence));
    if cfg.until_correct.is_some_and(|k| right >= u64::from(k)) {
        Some(Stop::Correct)
    } else if let Some(side) = decided {
        Some(if side == Side::TooEasy { Stop::TooEasy } else { Stop::TooHard })
    } else if taken >= u64::from(n) {
        Some(Stop::Limit)
    } else {
        None
    }
}

/// Whether the verifier finds `t` right.
fn judge(t: &Trace, settings: &VerifySettings) -> Result<bool> {
    let verdict = verify_trace(&TraceRef::of(t), settings).map_err(|(column, message)| {
        Error::usage(format!("problem `{}`, column `{column}`: {message}", t.problem_id))
    })?;
    Ok(verdict.correct)
}

/// Everything [`write`] samples with.
pub struct Run<'a> {
    /// The teacher.
    pub teacher: &'a mut dyn Teacher,
    /// How each sample is drawn.
    pub sampling: &'a SamplingConfig,
    /// Budget forcing, if any.
    pub budget: &'a BudgetConfig,
    /// How prompts are rendered.
    pub prompt: &'a super::traces::PromptConfig,
    /// Samples at most per problem.
    pub n: u32,
    /// Problems decoded together.
    pub batch_size: usize,
    /// Where progress goes.
    pub progress: &'a Progress,
}

/// Sample `problems` adaptively into `writer` (problems finished by an interrupted run are stepped over).
pub fn write(
    cfg: &AdaptiveConfig,
    run: &mut Run,
    problems: impl Iterator<Item = Result<Vec<Problem>>>,
    writer: &mut DatasetWriter,
) -> Result<Outcome> {
    cfg.check(run.sampling)?;
    let settings = VerifySettings::default();
    let mut out = Outcome::default();
    let mut done = finished(writer)?.into_iter().peekable();
    for batch in problems {
        let mut todo = Vec::new();
        for p in batch? {
            if let Some((_, rows)) = done.next_if(|(id, _)| *id == p.id) {
                // judged again, so that the report counts it as an uninterrupted run does
                let right = rows.iter().map(|t| judge(t, &settings)).collect::<Result<Vec<_>>>()?;
                let right = right.into_iter().filter(|&r| r).count() as u64;
                let taken = rows.len() as u64;
                let stop = rule(cfg, right, taken, run.n).unwrap_or(Stop::Limit);
                *out.stopped.entry(stop.name()).or_default() += 1;
                writer.skip(taken)?;
                out.samples += taken;
                run.progress.inc(1);
                continue;
            }
            todo.push(p);
        }
        // a round takes `samples_per_round` of each problem where a fixed run takes `n`: as many more
        // problems per chunk keep the first round's batch as large as a fixed run's
        let problems_per_chunk = run.batch_size * run.n.div_ceil(cfg.samples_per_round.min(run.n)) as usize;
        for chunk in todo.chunks(problems_per_chunk) {
            let traces = sample_chunk(cfg, run, chunk, &settings, &mut out)?;
            writer.write_rows(&traces)?;
        }
    }
    Ok(out)
}

/// Sample `chunk` in rounds until each problem stops; its rows, problem by problem.
fn sample_chunk(
    cfg: &AdaptiveConfig,
    run: &mut Run,
    chunk: &[Problem],
    settings: &VerifySettings,
    out: &mut Outcome,
) -> Result<Vec<Trace>> {
    let prefill = run.prompt.prefill();
    let mut rows: Vec<Vec<Trace>> = chunk.iter().map(|_| Vec::new()).collect();
    let mut right = vec![0u64; chunk.len()];
    let mut stopped: Vec<Option<Stop>> = vec![None; chunk.len()];
    let hidden = Progress::hidden();
    loop {
        let open: Vec<usize> = (0..chunk.len()).filter(|&i| stopped[i].is_none()).collect();
        if open.is_empty() {
            break;
        }
        let prompts: Vec<Prompt> = open
            .iter()
            .map(|&i| {
                let taken = rows[i].len() as u32;
                Prompt {
                    first_sample: taken,
                    ..run.prompt.prompt(&chunk[i], chunk[i].id.clone(), cfg.samples_per_round.min(run.n - taken))
                }
            })
            .collect();
        let samples = if run.budget.active() {
            super::budget::generate(run.teacher, &prompts, run.sampling, run.budget, &hidden)?
        } else {
            run.teacher.generate(&prompts, run.sampling, &hidden)?
        };
        let id = run.teacher.id().to_string();
        for ((&i, prompt), samples) in open.iter().zip(&prompts).zip(samples) {
            for (j, s) in samples.into_iter().enumerate() {
                out.tokens += u64::from(s.completion_tokens);
                out.errors += u64::from(s.finish == super::Finish::Error);
                let t = trace(run.sampling, &chunk[i], prompt.first_sample + j as u32, s, &id, &prefill);
                right[i] += u64::from(judge(&t, settings)?);
                rows[i].push(t);
            }
            let taken = rows[i].len() as u64;
            stopped[i] = rule(cfg, right[i], taken, run.n);
            if let Some(stop) = stopped[i] {
                *out.stopped.entry(stop.name()).or_default() += 1;
                out.samples += taken;
                run.progress.inc(1);
            }
        }
    }
    Ok(rows.into_iter().flatten().collect())
}
