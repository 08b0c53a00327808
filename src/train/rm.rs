//! `forge train-rm`: an outcome reward model (a verifier in the sense of Cobbe et al. 2021) trained on
//! samples judged by forge's verifiers. Each sample of a traces dataset is verified against its gold
//! answer (right: label 1, wrong: 0) and rendered as the conversation the policy saw with the sample as
//! the reply ([`crate::teacher::reward_model::conversation`]); the model reads it whole and a one-label
//! `score` head, replacing the language-model head, reads its last token. By default the scores of a
//! problem's right samples are trained to exceed those of its wrong ones (pairwise, Bradley-Terry: what
//! best-of-n needs); `--objective pointwise` fits each score to its label with the logistic loss, as
//! Cobbe et al. did. Everything else is `forge train-sft`'s trainer (packing, AdamW, checkpoints and
//! resume, metrics, held-out loss). The output is a `*ForSequenceClassification` checkpoint that transformers loads, and
//! that `forge eval --reward-model` picks best-of-n with on problems without gold.

use serde::{Deserialize, Serialize};

use super::data::Example;
use super::{TrainConfig, TrainOutput, TrainReport};
use crate::dataset::{Finish, Input, TableKind, Trace};
use crate::error::{Error, Result};
use crate::model::chat::ChatTemplate;
use crate::model::tokenizer::Tokenizer;
use crate::teacher::reward_model::{conversation, conversation_ids};
use crate::teacher::traces::PromptConfig;
use crate::verify::{TraceRef, VerifySettings, verify_trace};

/// `forge train-rm`'s settings (the `[train_rm]` section of a pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RmConfig {
    /// The trainer's settings, as `train-sft` takes them (`--data`: traces datasets with gold answers)
    #[command(flatten)]
    #[serde(flatten)]
    pub train: TrainConfig,
    /// How the problems were posed to the policy (the template `forge generate` used)
    #[command(flatten)]
    #[serde(flatten)]
    pub prompt: PromptConfig,
    /// How the head learns: `pairwise` (a problem's right samples against its wrong ones) or `pointwise`
    /// (each sample against its label)
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub objective: Objective,
}

/// How the score head is trained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// For every right and wrong sample of the same problem, `-log σ(score(right) - score(wrong))`
    /// (Bradley-Terry, as preference reward models are trained): the head learns to rank a problem's
    /// samples, what best-of-n asks of it. A problem's samples share a row; problems with samples of one
    /// label only teach nothing and are left out
    #[default]
    Pairwise,
    /// Each sample on its own, the logistic loss of its score against its label (Cobbe et al. 2021)
    Pointwise,
}

/// Training examples with their labels (1 right, 0 wrong) and problems, in the same order.
pub struct Labelled {
    /// The examples: the conversation's tokens, then one more whose place marks the last token as the
    /// one the head reads.
    pub examples: Vec<Example>,
    /// Each example's label.
    pub labels: Vec<f32>,
    /// Each example's problem (an index, the same for samples of one problem).
    pub problems: Vec<u32>,
}

/// The training and held-out examples of `cfg` (held out: `--eval-data`, or `--eval-share` of the
/// problems drawn by seed, all samples of a problem on one side), and the rows dropped (too long, or an
/// HTTP teacher's error rows).
pub(super) fn examples(cfg: &RmConfig, train: &[Input], eval: Option<&Input>) -> Result<(usize, Labelled, Labelled)> {
    let t = &cfg.train;
    if t.lora_rank.is_some() {
        return Err(Error::usage("`forge train-rm` trains every weight; `--lora-rank` is not supported"));
    }
    let (chat, tokenizer) = (ChatTemplate::from_dir(&t.model)?, Tokenizer::from_dir(&t.model)?);
    // held out by problem, so that no problem has samples on both sides
    let held_out = |problem: &str| {
        let row = xxhash_rust::xxh3::xxh3_64(problem.as_bytes());
        t.eval_data.is_none() && crate::rng::Rng::for_row(t.seed, "eval", row).uniform() < t.eval_share
    };
    let (mut kept, mut held, mut dropped) = (empty(), empty(), 0usize);
    let mut problems: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut read = |inputs: &[Input], split: bool| -> Result<()> {
        for input in inputs {
            for batch in input.rows_of::<Trace>(TableKind::Traces, 0..input.rows()) {
                for trace in batch? {
                    let to = if !split || held_out(&trace.problem_id) { &mut held } else { &mut kept };
                    let next = problems.len() as u32;
                    let problem = *problems.entry(trace.problem_id.clone()).or_insert(next);
                    match example(cfg, &chat, &tokenizer, &trace)? {
                        Some((e, label)) => {
                            to.examples.push(e);
                            to.labels.push(label);
                            to.problems.push(problem);
                        }
                        None => dropped += 1,
                    }
                }
            }
        }
        Ok(())
    };
    read(train, true)?;
    if let Some(eval) = eval {
        read(std::slice::from_ref(eval), false)?;
    }
    if kept.examples.is_empty() {
        return Err(Error::usage("the training data has no sample to train on")
            .with_hint("`forge train-rm` reads traces (`forge generate`) whose problems have gold answers"));
    }
    let right = kept.labels.iter().filter(|&&l| l > 0.5).count();
    if right == 0 || right == kept.labels.len() {
        return Err(Error::usage(format!(
            "all {} training samples are {}: a reward model needs right and wrong ones",
            kept.labels.len(),
            if right == 0 { "wrong" } else { "right" }
        ))
        .with_hint("sample more per problem (`forge generate -n 8` at a temperature), or harder problems"));
    }
    Ok((dropped, kept, held))
}

fn empty() -> Labelled {
    Labelled { examples: Vec::new(), labels: Vec::new(), problems: Vec::new() }
}

/// The pairwise objective's rows: each problem with right and wrong samples, its samples packed in order
/// into rows of at most `max_length` tokens (pairs are formed within a row).
pub(super) fn problem_rows(l: &Labelled, max_length: usize) -> Vec<Vec<usize>> {
    let mut by_problem: std::collections::BTreeMap<u32, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, &p) in l.problems.iter().enumerate() {
        by_problem.entry(p).or_default().push(i);
    }
    let mut rows = Vec::new();
    for samples in by_problem.into_values() {
        let right = samples.iter().filter(|&&i| l.labels[i] > 0.5).count();
        if right == 0 || right == samples.len() {
            continue;
        }
        let (mut row, mut length) = (Vec::new(), 0);
        for i in samples {
            let len = l.examples[i].ids.len();
            if length + len > max_length && !row.is_empty() {
                rows.push(std::mem::take(&mut row));
                length = 0;
            }
            row.push(i);
            length += len;
        }
        rows.push(row);
    }
    rows
}

/// The pairwise objective's steps: every epoch the problem rows in a seeded order, `--batch-tokens`
/// worth per step; `--max-steps` cuts it short.
pub(super) fn plan(cfg: &TrainConfig, l: &Labelled) -> Vec<(u64, Vec<Vec<usize>>)> {
    let per_step = (cfg.batch_tokens / cfg.max_length).max(1);
    let mut steps = Vec::new();
    for epoch in 0..cfg.epochs {
        let mut rows = problem_rows(l, cfg.max_length);
        crate::rng::Rng::for_row(cfg.seed, "rm-rows", epoch).shuffle(&mut rows);
        for chunk in rows.chunks(per_step) {
            if cfg.max_steps.is_some_and(|m| steps.len() as u64 >= m) {
                return steps;
            }
            steps.push((epoch, chunk.to_vec()));
        }
    }
    steps
}

/// One trace as an example and its label; `None` for a row with no sample (an HTTP teacher's error row)
/// or too long for `--max-length`.
fn example(cfg: &RmConfig, chat: &ChatTemplate, tokenizer: &Tokenizer, t: &Trace) -> Result<Option<(Example, f32)>> {
    if Finish::of(&t.finish_reason) == Some(Finish::Error) {
        return Ok(None);
    }
    if t.gold.is_none() {
        return Err(Error::usage(format!("sample `{}` has no gold answer to judge it by", t.id))
            .with_hint("a reward model learns from right and wrong samples: give problems with `gold`"));
    }
    let verdict = verify_trace(&TraceRef::of(t), &VerifySettings::default())
        .map_err(|(column, message)| Error::usage(format!("sample `{}`, column `{column}`: {message}", t.id)))?;
    let messages = conversation(&cfg.prompt, &t.domain, &t.prompt, &t.completion);
    let mut ids = conversation_ids(chat, tokenizer, &messages)?;
    if ids.is_empty() || ids.len() + 1 > cfg.train.max_length {
        return Ok(None);
    }
    // the head reads the conversation's last token: the trainer picks the place before a trained token
    let mut train = vec![false; ids.len()];
    ids.push(0);
    train.push(true);
    Ok(Some((Example::new(ids, train), if verdict.correct { 1.0 } else { 0.0 })))
}

/// The logistic loss of scores `x` against labels `y` (both `[n]`), per element: `log(1 + e^x) - x·y`,
/// computed as `max(x, 0) - x·y + log(1 + e^-|x|)` so that it stays finite.
pub fn logistic_loss(x: &candle_core::Tensor, y: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    let soft = ((x.abs()?.neg()?.exp()? + 1.0)?.log()? + x.relu()?)?;
    soft - (x * y)?
}

/// The summed loss of a micro-batch's `scores` (`[n]`, one per example of `rows`, row by row) against the
/// examples' `labels`: pointwise, the logistic loss of each; pairwise, for each row's right and wrong
/// pairs the logistic loss of the difference (label 1), a row's pairs weighted to count as many as its
/// samples (so the step's mean over samples is a mean over rows of their pairs' mean).
pub(super) fn loss(
    scores: &candle_core::Tensor,
    examples: &[Example],
    rows: &[Vec<usize>],
    labels: &[f32],
    objective: Objective,
) -> candle_core::Result<candle_core::Tensor> {
    let device = scores.device();
    // each row's picks (their index among the batch's, in the order it packs them) and whether right
    let mut next = 0u32;
    let by_row: Vec<Vec<(u32, bool)>> = rows
        .iter()
        .map(|row| {
            let trained = row.iter().filter(|&&i| examples[i].trained() > 0);
            trained
                .map(|&i| {
                    next += 1;
                    (next - 1, labels[i] > 0.5)
                })
                .collect()
        })
        .collect();
    if objective == Objective::Pointwise {
        let y: Vec<f32> = by_row.iter().flatten().map(|&(_, right)| f32::from(u8::from(right))).collect();
        return logistic_loss(scores, &candle_core::Tensor::new(y, device)?)?.sum_all();
    }
    let (mut right, mut wrong, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    for row in &by_row {
        let good: Vec<u32> = row.iter().filter(|p| p.1).map(|p| p.0).collect();
        let bad: Vec<u32> = row.iter().filter(|p| !p.1).map(|p| p.0).collect();
        let pairs = good.len() * bad.len();
        for (g, b) in good.iter().flat_map(|&g| bad.iter().map(move |&b| (g, b))) {
            right.push(g);
            wrong.push(b);
            weight.push(row.len() as f32 / pairs as f32);
        }
    }
    if right.is_empty() {
        return scores.sum_all()? * 0.0;
    }
    let pick = |k: Vec<u32>| scores.index_select(&candle_core::Tensor::new(k, device)?, 0);
    let differences = (pick(right)? - pick(wrong)?)?;
    let ones = candle_core::Tensor::ones(weight.len(), candle_core::DType::F32, device)?;
    (logistic_loss(&differences, &ones)? * candle_core::Tensor::new(weight, device)?)?.sum_all()
}

/// Write `out/config.json` as transformers' one-label sequence classifier over the base's architecture.
pub(super) fn classifier_config(out: &std::path::Path) -> Result<()> {
    let path = out.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(&path)?)
        .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
    let family = match config["model_type"].as_str() {
        Some("llama") => "Llama",
        _ => "Qwen2",
    };
    config["architectures"] = serde_json::json!([format!("{family}ForSequenceClassification")]);
    config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    config["label2id"] = serde_json::json!({"LABEL_0": 0});
    crate::dataset::write_atomic(&path, &serde_json::to_vec_pretty(&config).expect("json"))
}

/// `forge train-rm`.
pub struct TrainRm;

impl crate::stage::Stage for TrainRm {
    const NAME: &'static str = "train-rm";
    const ABOUT: &'static str =
        "Train an outcome reward model (a verifier) on samples judged right or wrong by forge's verifiers";
    const LONG_ABOUT: Option<&'static str> = Some(
        "Train an outcome reward model, a verifier as in Cobbe et al. 2021: every sample of the traces \
         datasets (`forge generate`, several per problem at a temperature, on problems with gold answers) \
         is verified, labelled 1 when right and 0 when wrong, and rendered as the conversation the policy \
         saw (`--prompt-template`, `--system`, `--prefill` as given to `forge generate`) with the sample as \
         the reply. The model (`--model`, usually the policy itself or a sibling) reads the whole \
         conversation; its language-model head is replaced by a one-label `score` head read at the last \
         token, trained with the rest of the weights. `--objective pairwise` (the default) trains each \
         problem's right samples to score above its wrong ones (Bradley-Terry over the pairs; problems \
         whose samples are all right or all wrong are left out); `pointwise` fits each score to its label \
         with the logistic loss, which also learns which problems are easy. Everything else is \
         `forge train-sft`'s trainer: packing, AdamW, checkpoints and resume, metrics.csv, loss.png, the \
         held-out loss.\n\n\
         OUT is a `Qwen2ForSequenceClassification` / `LlamaForSequenceClassification` checkpoint: \
         transformers loads it, and `forge eval --strategy best-of-N --reward-model OUT` picks each \
         problem's sample by it, with no gold answer needed.",
    );
    const EXAMPLES: &'static str =
        "  forge generate --teacher local:teacher/ --problems train-problems/ -n 8 --temperature 0.8 -o samples/
  forge train-rm --model teacher/ --data samples/ -o rm/ --epochs 2 --lr 1e-4
  forge eval --model teacher/ --problems test/ --strategy best-of-16 --temperature 0.8 --reward-model rm/";
    type Config = RmConfig;
    type Target = TrainOutput;

    fn run(cfg: &RmConfig, out: &TrainOutput, ctx: &crate::Context) -> Result<crate::stage::Done> {
        let (report, ran): (TrainReport, bool) = super::run(&cfg.train, super::Task::Reward(cfg), out, ctx)?;
        Ok(super::done(&report, ran, out))
    }
}
