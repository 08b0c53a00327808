//! `forge train-rm`: an outcome reward model (a verifier in the sense of Cobbe et al. 2021) trained on
//! samples judged by forge's verifiers. Each sample of a traces dataset is verified against its gold
//! answer (right: label 1, wrong: 0) and rendered as the conversation the policy saw with the sample as
//! the reply ([`crate::teacher::reward_model::conversation`]); the model reads it whole and a one-label
//! `score` head, replacing the language-model head, is trained with the logistic loss at its last token.
//! Everything else is `forge train-sft`'s trainer (packing, AdamW, checkpoints and resume, metrics,
//! held-out loss). The output is a `*ForSequenceClassification` checkpoint that transformers loads, and
//! that `forge eval --reward-model` picks best-of-n with on problems without gold.

use serde::{Deserialize, Serialize};

use super::data::Example;
use super::{Loaded, TrainConfig, TrainOutput, TrainReport};
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
}

/// Training examples with their labels (1 right, 0 wrong), in the same order.
pub struct Labelled {
    /// The examples: the conversation's tokens, then one more whose place marks the last token as the
    /// one the head reads.
    pub examples: Vec<Example>,
    /// Each example's label.
    pub labels: Vec<f32>,
}

/// The training and held-out examples of `cfg` (held out: `--eval-data`, or `--eval-share` of the
/// problems drawn by seed, all samples of a problem on one side), and the rows dropped (too long, or an
/// HTTP teacher's error rows).
pub(super) fn examples(cfg: &RmConfig, train: &[Input], eval: Option<&Input>) -> Result<(Loaded, Labelled, Labelled)> {
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
    let mut read = |inputs: &[Input], split: bool| -> Result<()> {
        for input in inputs {
            for batch in input.rows_of::<Trace>(TableKind::Traces, 0..input.rows()) {
                for trace in batch? {
                    let to = if !split || held_out(&trace.problem_id) { &mut held } else { &mut kept };
                    match example(cfg, &chat, &tokenizer, &trace)? {
                        Some((e, label)) => {
                            to.examples.push(e);
                            to.labels.push(label);
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
    let loaded = Loaded { examples: Vec::new(), dropped, unaligned: 0 };
    Ok((loaded, kept, held))
}

fn empty() -> Labelled {
    Labelled { examples: Vec::new(), labels: Vec::new() }
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

/// The summed logistic loss of scores `x` against labels `y` (both `[n]`): `log(1 + e^x) - x·y`, computed
/// as `max(x, 0) - x·y + log(1 + e^-|x|)` so that it stays finite.
pub fn logistic_loss(x: &candle_core::Tensor, y: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    let soft = ((x.abs()?.neg()?.exp()? + 1.0)?.log()? + x.relu()?)?;
    (soft - (x * y)?)?.sum_all()
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
         conversation; its language-model head is replaced by a one-label `score` head, trained with the \
         logistic loss at the last token, together with the rest of the weights. Everything else is \
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
