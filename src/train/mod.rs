//! `forge train-sft`: supervised fine-tuning of a Qwen2 / Llama checkpoint on conversations, with the loss
//! on assistant tokens only ([`data`]), examples packed into rows without attention across them
//! ([`pack`]), AdamW with warmup and decay, clipping and gradient accumulation ([`optim`]), periodic
//! checkpoints that a rerun resumes from, a held-out loss, and a Hugging Face checkpoint as the result
//! ([`output`]).
//!
//! The loss of an optimizer step is the mean over every trained token of the step (all micro-batches
//! together, as transformers does with `num_items_in_batch`), so accumulation gives the gradient of one
//! big batch.
//!
//! ```text
//! forge train-sft --model init/ --data sft/ -o student/ --epochs 3 --lr 3e-4 --batch-tokens 16384
//! ```

pub mod data;
pub mod distill;
pub mod grpo;
pub mod metrics;
pub mod optim;
pub mod output;
pub mod pack;
pub mod reward;
pub mod rl;
pub mod rm;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::Input;
use crate::error::{Error, Result};
use crate::formats::conversation::located;
use crate::model::Checkpoint;
use crate::model::chat::ChatTemplate;
use crate::model::lora::AdapterConfig;
use crate::model::tokenizer::Tokenizer;
use data::{Example, Renderer};
pub use optim::Schedule;
use output::{Resume, TrainState};

/// `forge train-sft`'s settings (the `[train_sft]` section of a pipeline; `train-distill` and `train-rm`
/// build on them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The checkpoint to start from (a Hugging Face directory: config, safetensors, tokenizer, chat template)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Training rows: `messages`, `prompt`/`completion`, a problems dataset with reference `steps`, or
    /// plain `text` (every token trained)
    /// (repeat the flag to train on several datasets together)
    #[arg(long, value_name = "DIR", required = true)]
    pub data: Vec<PathBuf>,
    /// Held-out rows for the evaluation loss (default: `--eval-share` of `--data`)
    #[arg(long, value_name = "DIR")]
    pub eval_data: Option<PathBuf>,
    /// Share of `--data` held out for the evaluation loss when `--eval-data` is not given
    #[arg(long, default_value_t = defaults::eval_share(), value_name = "X")]
    #[serde(default = "defaults::eval_share")]
    pub eval_share: f64,
    /// Evaluation loss every N optimizer steps (and at the end); 0: at the end only
    #[arg(long, default_value_t = defaults::every(), value_name = "N")]
    #[serde(default = "defaults::every")]
    pub eval_every: u64,
    /// Checkpoint every N optimizer steps (a rerun resumes from the last one); 0: never
    #[arg(long, default_value_t = defaults::every(), value_name = "N")]
    #[serde(default = "defaults::every")]
    pub save_every: u64,
    /// Passes over the data
    #[arg(long, default_value_t = defaults::epochs(), value_name = "N")]
    #[serde(default = "defaults::epochs")]
    pub epochs: u64,
    /// Stop after N optimizer steps (the schedule spans N steps)
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Peak learning rate
    #[arg(long, default_value_t = defaults::lr(), value_name = "LR")]
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// Learning-rate decay after warmup
    #[arg(long, value_enum, default_value_t = defaults::schedule())]
    #[serde(default = "defaults::schedule")]
    pub schedule: Schedule,
    /// Share of the steps spent warming the learning rate up linearly
    #[arg(long, default_value_t = defaults::warmup(), value_name = "X")]
    #[serde(default = "defaults::warmup")]
    pub warmup_ratio: f64,
    /// AdamW weight decay (not applied to norm weights and biases)
    #[arg(long, default_value_t = defaults::weight_decay(), value_name = "X")]
    #[serde(default = "defaults::weight_decay")]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping)
    #[arg(long, default_value_t = defaults::one(), value_name = "X")]
    #[serde(default = "defaults::one")]
    pub max_grad_norm: f64,
    /// Tokens per optimizer step (rows of `--max-length` tokens; gradients of micro-batches are accumulated)
    #[arg(long, default_value_t = defaults::batch_tokens(), value_name = "N")]
    #[serde(default = "defaults::batch_tokens")]
    pub batch_tokens: usize,
    /// Tokens per forward pass (bounds memory)
    #[arg(long, default_value_t = defaults::micro_batch_tokens(), value_name = "N")]
    #[serde(default = "defaults::micro_batch_tokens")]
    pub micro_batch_tokens: usize,
    /// Tokens per training row; longer examples are cut, keeping the start
    #[arg(long, default_value_t = defaults::max_length(), value_name = "N")]
    #[serde(default = "defaults::max_length")]
    pub max_length: usize,
    /// Pack several examples into each row (attention stays within each example); `false`: one per row, padded
    #[arg(long, default_value_t = defaults::yes(), action = clap::ArgAction::Set, value_name = "BOOL")]
    #[serde(default = "defaults::yes")]
    pub packing: bool,
    /// Seed of the data order, the held-out split and the LoRA initialisation
    #[arg(long, default_value_t = defaults::seed(), value_name = "N")]
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Train a LoRA adapter of this rank instead of every weight (the output is a peft adapter directory;
    /// `forge merge-lora` folds it into the base)
    #[arg(long, value_name = "R")]
    pub lora_rank: Option<usize>,
    /// LoRA alpha (the update is scaled by alpha / rank); default: twice the rank
    #[arg(long, value_name = "X")]
    pub lora_alpha: Option<f64>,
    /// The type of activations and matrix products (weights, gradients and AdamW stay f32): default bf16 on
    /// a GPU, f32 on the CPU (where bf16 is slower)
    #[arg(long, value_enum, value_name = "TYPE")]
    pub dtype: Option<Precision>,
    /// Layers the adapter targets
    #[arg(long, value_delimiter = ',', default_values_t = crate::model::lora::TARGETS.map(String::from), value_name = "NAMES")]
    #[serde(default = "defaults::targets")]
    pub lora_targets: Vec<String>,
    /// Activation checkpointing: each layer keeps only its input for the backward pass, which runs the
    /// layer again (activation memory of one layer instead of all; measured: 33–43% less peak memory for
    /// about a third fewer tokens/s)
    #[arg(long)]
    #[serde(default)]
    pub checkpoint_layers: bool,
}

impl TrainConfig {
    /// Its LoRA and precision settings. (They are not a flattened [`AdapterArgs`] here: `DistillConfig`
    /// flattens this struct, and serde refuses every key when a flattened struct that denies unknown keys
    /// flattens another.)
    pub fn adapter(&self) -> AdapterArgs {
        AdapterArgs {
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
            dtype: self.dtype,
            lora_targets: self.lora_targets.clone(),
            checkpoint_layers: self.checkpoint_layers,
        }
    }
}

/// What is trained and in which type: every weight, or a LoRA adapter (train-sft, train-distill and
/// train-rl share these flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct AdapterArgs {
    /// Train a LoRA adapter of this rank instead of every weight (the output is a peft adapter directory;
    /// `forge merge-lora` folds it into the base)
    #[arg(long, value_name = "R")]
    pub lora_rank: Option<usize>,
    /// LoRA alpha (the update is scaled by alpha / rank); default: twice the rank
    #[arg(long, value_name = "X")]
    pub lora_alpha: Option<f64>,
    /// The type of activations and matrix products (weights, gradients and AdamW stay f32): default bf16 on
    /// a GPU, f32 on the CPU (where bf16 is slower)
    #[arg(long, value_enum, value_name = "TYPE")]
    pub dtype: Option<Precision>,
    /// Layers the adapter targets
    #[arg(long, value_delimiter = ',', default_values_t = crate::model::lora::TARGETS.map(String::from), value_name = "NAMES")]
    #[serde(default = "defaults::targets")]
    pub lora_targets: Vec<String>,
    /// Activation checkpointing: each layer keeps only its input for the backward pass, which runs the
    /// layer again (activation memory of one layer instead of all; measured: 33–43% less peak memory for
    /// about a third fewer tokens/s)
    #[arg(long)]
    #[serde(default)]
    pub checkpoint_layers: bool,
}

impl AdapterArgs {
    /// The adapter to train on `model`, with `--lora-rank`.
    pub fn config(&self, model: &Path) -> Option<AdapterConfig> {
        self.lora_rank.map(|r| AdapterConfig {
            r,
            lora_alpha: self.lora_alpha.unwrap_or(2.0 * r as f64),
            target_modules: self.lora_targets.clone(),
            base_model_name_or_path: Some(
                std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf()).display().to_string(),
            ),
            use_rslora: false,
        })
    }
}

mod defaults {
    use super::Schedule;
    pub fn eval_share() -> f64 {
        0.02
    }
    pub fn every() -> u64 {
        50
    }
    pub fn epochs() -> u64 {
        3
    }
    pub fn lr() -> f64 {
        2e-5
    }
    pub fn schedule() -> Schedule {
        Schedule::Cosine
    }
    pub fn warmup() -> f64 {
        0.03
    }
    pub fn weight_decay() -> f64 {
        0.01
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn batch_tokens() -> usize {
        16384
    }
    pub fn micro_batch_tokens() -> usize {
        4096
    }
    pub fn max_length() -> usize {
        1024
    }
    pub fn yes() -> bool {
        true
    }
    pub fn seed() -> u64 {
        1
    }
    pub fn targets() -> Vec<String> {
        crate::model::lora::TARGETS.map(String::from).to_vec()
    }
}

/// The compute type of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats throughout
    F32,
    /// bfloat16 activations and matrix products (weights, gradients and AdamW stay f32)
    Bf16,
}

/// Where a training run writes, and whether it may replace or must continue what is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct TrainOutput {
    /// The checkpoint directory to write (the model, `metrics.csv`, `loss.png`, `checkpoints/`)
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Continue the interrupted run in `--output` from its last checkpoint (a rerun of the same command
    /// does so anyway; with `--resume`, finding nothing to resume is an error)
    #[arg(long)]
    #[serde(default)]
    pub resume: bool,
    /// Replace an existing output of a different run (the same run's output is kept: finished, or resumed)
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
}

/// What a finished run reports (`train-report.json` in the output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Hash of the settings and inputs: the run this checkpoint belongs to.
    pub fingerprint: String,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Epochs begun (`--max-steps` can end a run before `--epochs`); the last one may be partial.
    pub epochs: u64,
    /// Training examples.
    pub examples: usize,
    /// Held-out examples (`--eval-data`, or `--eval-share` of the training rows).
    pub eval_examples: usize,
    /// Rows dropped because no trained token was left within `max_length`.
    pub dropped: usize,
    /// Tokens the model read (padding aside).
    pub tokens: u64,
    /// Tokens with a loss.
    pub trained_tokens: u64,
    /// Mean loss of the last step.
    pub final_loss: f64,
    /// Loss on the held-out examples at the end, if any.
    pub final_eval_loss: Option<f64>,
    /// Distillation: trained tokens that had a teacher distribution.
    #[serde(default)]
    pub distilled_tokens: u64,
    /// Distillation: rows whose teacher lists did not line up with their tokens (trained on their tokens
    /// alone).
    #[serde(default)]
    pub unaligned_rows: usize,
    /// On-policy distillation: steps trained on the student's own samples.
    #[serde(default)]
    pub on_policy_steps: u64,
    /// RL: the mean reward of the last step's rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_reward: Option<f64>,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// Tokens read per second over this invocation's steps.
    pub tokens_per_second: f64,
}

/// Rows read into examples, and what was left out or could not be used.
#[derive(Default)]
struct Loaded {
    examples: Vec<Example>,
    /// Rows with no trained token left within `max_length`.
    dropped: usize,
    /// Rows whose teacher distributions do not line up with their tokens.
    unaligned: usize,
}

/// Read the inputs' rows and tokenize them, keeping rows whose global index (over all inputs, in order)
/// passes `keep`; rows with no trained token left are counted, not kept. With `teacher`, the rows'
/// top-k distributions are attached (offline distillation).
fn load_examples(
    inputs: &[Input],
    renderer: &Renderer,
    teacher: bool,
    keep: impl Fn(u64) -> bool + Sync,
) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut offset = 0u64;
    for input in inputs {
        let records: Vec<_> = input.records(0..input.rows()).collect::<Result<_>>()?;
        let done: Vec<Result<Option<(Example, bool)>>> = records
            .par_iter()
            .enumerate()
            .filter(|(i, _)| keep(offset + *i as u64))
            .map(|(_, r)| {
                let Some(mut example) = renderer.row(&r.fields).map_err(|e| located(r, e))? else {
                    return Ok(None);
                };
                let aligned = !teacher || distill::attach(&mut example, &r.fields).map_err(|e| located(r, e))?;
                Ok(Some((example, aligned)))
            })
            .collect();
        offset += input.rows();
        for e in done {
            match e? {
                Some((e, aligned)) => {
                    loaded.unaligned += usize::from(!aligned);
                    loaded.examples.push(e);
                }
                None => loaded.dropped += 1,
            }
        }
    }
    Ok(loaded)
}

/// Summed negative log-likelihood of a micro-batch's trained tokens (a graph to backpropagate).
pub fn nll(model: &crate::model::Decoder, batch: &pack::Batch) -> candle_core::Result<candle_core::Tensor> {
    nll_of_hidden(model, &model.hidden(&batch.ids, &batch.positions, &batch.mask, None)?, batch)
}

/// [`nll`] from the decoder's final hidden states `[b, t, hidden]`: the head runs only at the positions
/// whose next token is trained.
pub fn nll_of_hidden(
    model: &crate::model::Decoder,
    hidden: &candle_core::Tensor,
    batch: &pack::Batch,
) -> candle_core::Result<candle_core::Tensor> {
    model.head_nll(&hidden.flatten_to(1)?.index_select(&batch.picks, 0)?, &batch.targets)
}

/// Mean loss per trained token over `examples` (no update; give it a [`Decoder::detached`] model, so no
/// gradient graph is recorded and the fused head makes no gradients).
///
/// [`Decoder::detached`]: crate::model::Decoder::detached
fn eval_loss(
    model: &crate::model::Decoder,
    loss: Loss,
    (examples, rows): (&[Example], &[Vec<usize>]),
    cfg: &TrainConfig,
    device: &Device,
) -> Result<f64> {
    let per_micro = (cfg.micro_batch_tokens / cfg.max_length).max(1);
    let (mut sum, mut tokens) = (0.0, 0usize);
    for chunk in rows.chunks(per_micro) {
        let batch = pack::batch(examples, chunk, device).map_err(candle_err)?;
        let micro = loss.sum(model, &batch, examples, chunk).map_err(candle_err)?;
        sum += f64::from(micro.to_scalar::<f32>().map_err(candle_err)?);
        tokens += batch.tokens;
    }
    Ok(sum / tokens.max(1) as f64)
}

/// What a training run optimises.
#[derive(Clone, Copy)]
pub enum Task<'a> {
    /// Cross-entropy on the trained tokens (`train-sft`).
    Sft,
    /// A distillation objective (`train-distill`).
    Distill(&'a distill::DistillConfig),
    /// An outcome reward model (`train-rm`).
    Reward(&'a rm::RmConfig),
}

/// The loss of a micro-batch.
#[derive(Clone, Copy)]
enum Loss<'a> {
    /// Cross-entropy of the trained tokens (also the held-out loss of distillation).
    Nll,
    Distill(&'a distill::Distiller),
    /// A reward model's loss of the scores at each example's last token against the labels (`labels[i]`
    /// is example `i`'s), pointwise or pairwise ([`rm::loss`]).
    Reward(&'a [f32], rm::Objective),
}

impl Loss<'_> {
    /// The summed loss of `batch` (`rows` of `examples`), a graph to backpropagate; distillation's
    /// objective is the distiller's ([`distill::Distiller::loss`]), here its held-out cross-entropy.
    fn sum(
        self,
        model: &crate::model::Decoder,
        batch: &pack::Batch,
        examples: &[Example],
        rows: &[Vec<usize>],
    ) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Loss::Nll | Loss::Distill(_) => nll(model, batch),
            Loss::Reward(labels, objective) => {
                let hidden = model.hidden(&batch.ids, &batch.positions, &batch.mask, None)?;
                let scores = model.head(&hidden.flatten_to(1)?.index_select(&batch.picks, 0)?)?.squeeze(1)?;
                rm::loss(&scores, examples, rows, labels, objective)
            }
        }
    }
}

pub(crate) fn candle_err(e: candle_core::Error) -> Error {
    Error::usage(format!("training: {e}"))
}

fn check(cfg: &TrainConfig) -> Result<()> {
    if cfg.batch_tokens == 0 || cfg.micro_batch_tokens == 0 || cfg.max_length < 2 {
        return Err(Error::usage("`--batch-tokens`, `--micro-batch-tokens` and `--max-length` must be positive"));
    }
    if !(0.0..1.0).contains(&cfg.eval_share) {
        return Err(Error::usage("`--eval-share` must be in [0, 1)"));
    }
    Ok(())
}

/// The training examples, the held-out ones (`--eval-data`, or `--eval-share` of the rows drawn by seed)
/// and how many rows were dropped with no trained token left.
fn training_examples(
    cfg: &TrainConfig,
    train: &[Input],
    eval: Option<&Input>,
    teacher: bool,
) -> Result<(Loaded, Vec<Example>)> {
    let renderer = Renderer::new(ChatTemplate::from_dir(&cfg.model)?, Tokenizer::from_dir(&cfg.model)?, cfg.max_length);
    let held_out = |row: u64| {
        cfg.eval_data.is_none() && crate::rng::Rng::for_row(cfg.seed, "eval", row).uniform() < cfg.eval_share
    };
    let mut loaded = load_examples(train, &renderer, teacher, |r| !held_out(r))?;
    let eval = match eval {
        Some(input) => load_examples(std::slice::from_ref(input), &renderer, false, |_| true)?,
        None => load_examples(train, &renderer, false, held_out)?,
    };
    loaded.dropped += eval.dropped;
    if loaded.examples.is_empty() {
        return Err(Error::usage("the training data has no row to train on")
            .with_hint("rows need an assistant message with tokens within `--max-length`"));
    }
    Ok((loaded, eval.examples))
}

/// Where the run starts: the last checkpoint of an interrupted run, or step 0 (`--resume` insists on
/// the former).
fn start(
    resume: &Resume,
    out: &TrainOutput,
    checkpoint: &Checkpoint,
    opt: &mut optim::AdamW,
    total: u64,
    quiet: bool,
) -> Result<TrainState> {
    Ok(match resume {
        Resume::From(dir) => {
            let state = output::restore(dir, checkpoint, opt)?;
            if !quiet {
                eprintln!("resuming from step {} of {total} (`{}`)", state.step, dir.display());
            }
            state
        }
        _ if out.resume => {
            return Err(Error::usage(format!("`{}` has no checkpoint to resume from", out.output.display())));
        }
        _ => TrainState::default(),
    })
}

/// One optimizer step's gradients, accumulated over its micro-batches: each micro-batch's summed loss
/// over the step's `tokens` trained tokens, so the sum is the gradient of the step's mean loss. Returns
/// the summed loss and the tokens read.
fn accumulate(
    model: &crate::model::Decoder,
    loss: Loss,
    opt: &mut optim::AdamW,
    examples: &[Example],
    rows: &[Vec<usize>],
    (per_micro, tokens): (usize, usize),
    device: &Device,
) -> Result<(f64, u64, u64)> {
    let (mut loss_sum, mut seen, mut distilled) = (0.0, 0u64, 0u64);
    for chunk in rows.chunks(per_micro) {
        let batch = pack::batch(examples, chunk, device).map_err(candle_err)?;
        if batch.tokens == 0 {
            continue;
        }
        seen += batch.seen as u64;
        let sum = match loss {
            Loss::Distill(d) => {
                let (sum, count) = d.loss(model, &batch).map_err(candle_err)?;
                distilled += count as u64;
                sum
            }
            loss => loss.sum(model, &batch, examples, chunk).map_err(candle_err)?,
        };
        loss_sum += f64::from(sum.to_scalar::<f32>().map_err(candle_err)?);
        let grads = model.backward(&(sum / tokens as f64).map_err(candle_err)?).map_err(candle_err)?;
        opt.accumulate(&grads).map_err(candle_err)?;
    }
    Ok((loss_sum, seen, distilled))
}

/// The held-out examples in rows, as the first epoch packs training examples.
fn eval_rows(cfg: &TrainConfig, examples: &[Example]) -> Vec<Vec<usize>> {
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    pack::epoch_rows(&lengths, cfg.max_length, cfg.packing, cfg.seed, 0)
}

/// The whole run's steps, fixed up front: each is its epoch and a list of rows, each row a list of
/// examples; `--max-steps` cuts it short.
fn plan(cfg: &TrainConfig, examples: &[Example]) -> Vec<(u64, Vec<Vec<usize>>)> {
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let per_step = (cfg.batch_tokens / cfg.max_length).max(1);
    let mut steps = Vec::new();
    for epoch in 0..cfg.epochs {
        let rows = pack::epoch_rows(&lengths, cfg.max_length, cfg.packing, cfg.seed, epoch);
        for chunk in rows.chunks(per_step) {
            if cfg.max_steps.is_some_and(|m| steps.len() as u64 >= m) {
                return steps;
            }
            steps.push((epoch, chunk.to_vec()));
        }
    }
    steps
}

/// The model to train: the whole checkpoint, or (with `--lora-rank`) its frozen weights with trainable
/// adapters attached (initialised from `seed`); in the compute precision asked for, its layers
/// checkpointed if asked.
fn trainable(model: &Path, adapter: &AdapterArgs, seed: u64, device: &Device) -> Result<Checkpoint> {
    let mut checkpoint = match adapter.config(model) {
        None => Checkpoint::load(model, device)?,
        Some(adapter) => {
            if adapter.r == 0 {
                return Err(Error::usage("`--lora-rank` must be at least 1"));
            }
            let (config, mut decoder) = Checkpoint::load_frozen(model, device)?;
            let vars = candle_nn::VarMap::new();
            crate::model::lora::attach_trainable(&mut decoder, &vars, &adapter, seed)?;
            Checkpoint { dir: model.to_path_buf(), config, vars, model: decoder }
        }
    };
    let precision = adapter.dtype.unwrap_or(if device.is_cuda() { Precision::Bf16 } else { Precision::F32 });
    if precision == Precision::Bf16 {
        checkpoint.model.set_compute_dtype(candle_core::DType::BF16);
    }
    if adapter.checkpoint_layers {
        checkpoint.model.checkpoint_layers();
    }
    Ok(checkpoint)
}

/// Run (or resume) a training run; the flag is false when `out` already held this run's finished result
/// (then nothing was done).
///
/// The loss is `task`'s (its config's `train` being `cfg`): cross-entropy, a distillation objective, or
/// a reward model's logistic loss.
pub fn run(cfg: &TrainConfig, task: Task, out: &TrainOutput, ctx: &crate::Context) -> Result<(TrainReport, bool)> {
    check(cfg)?;
    let distill = match task {
        Task::Distill(d) => Some(d),
        _ => None,
    };
    let objective = distill.map(distill::Objective::of).transpose()?;
    let started = Instant::now();
    let device = crate::model::device();
    let train_input: Vec<Input> = cfg.data.iter().map(|d| Input::open(d)).collect::<Result<_>>()?;
    let eval_input = cfg.eval_data.as_deref().map(Input::open).transpose()?;
    let settings = match task {
        Task::Distill(d) => ("train-distill", serde_json::to_value(d)),
        Task::Reward(r) => ("train-rm", serde_json::to_value(r)),
        Task::Sft => ("train-sft", serde_json::to_value(cfg)),
    };
    let settings = (settings.0, settings.1.map_err(|e| Error::usage(e.to_string()))?);
    let fingerprint = output::fingerprint(settings, &cfg.model, &train_input, eval_input.as_ref())?;
    let resume = match output::prepare(&out.output, &fingerprint, out)? {
        Resume::Finished(report) => return Ok((report, false)),
        r => r,
    };
    let online = distill.and_then(|d| d.teacher.as_deref());
    let offline = objective.is_some() && online.is_none();
    // a reward model's examples come labelled, and (pairwise) in rows of one problem each
    let (loaded, examples, eval_examples, steps, eval_rows, reward) = match task {
        Task::Reward(r) => {
            let (dropped, train, held) = rm::examples(r, &train_input, eval_input.as_ref())?;
            let loaded = Loaded { examples: Vec::new(), dropped, unaligned: 0 };
            let (steps, eval_rows) = match r.objective {
                rm::Objective::Pairwise => (rm::plan(cfg, &train), rm::problem_rows(&held, cfg.max_length)),
                rm::Objective::Pointwise => (plan(cfg, &train.examples), eval_rows(cfg, &held.examples)),
            };
            let reward = Some((train.labels, held.labels, r.objective));
            (loaded, train.examples, held.examples, steps, eval_rows, reward)
        }
        _ => {
            let (mut loaded, eval_examples) = training_examples(cfg, &train_input, eval_input.as_ref(), offline)?;
            let examples = std::mem::take(&mut loaded.examples);
            let (steps, eval_rows) = (plan(cfg, &examples), eval_rows(cfg, &eval_examples));
            (loaded, examples, eval_examples, steps, eval_rows, None)
        }
    };

    let total = steps.len() as u64;
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as u64;
    let per_micro = (cfg.micro_batch_tokens / cfg.max_length).max(1);
    let lora = cfg.adapter().config(&cfg.model);
    let mut checkpoint = trainable(&cfg.model, &cfg.adapter(), cfg.seed, &device)?;
    if reward.is_some() {
        checkpoint.model.score_head(&checkpoint.vars).map_err(candle_err)?;
    }
    let distiller = match objective {
        None => None,
        Some(objective) => {
            let source = match online {
                Some(spec) => {
                    let mut teacher = distill::online_teacher(spec, &cfg.model, &device)?;
                    teacher.set_compute_dtype(checkpoint.model.compute_dtype());
                    distill::Source::Online(Box::new(teacher))
                }
                None => distill::Source::Offline,
            };
            let on_policy = distill.map(|d| distill::OnPolicy::new(d, &checkpoint)).transpose()?.flatten();
            Some(distill::Distiller { objective, source, on_policy })
        }
    };
    let mut opt = optim::AdamW::new(&checkpoint.vars, cfg.weight_decay);
    let mut state = start(&resume, out, &checkpoint, &mut opt, total, ctx.quiet)?;
    let mut log = metrics::Log::open(&out.output, state.step)?;
    let progress = crate::progress::Progress::steps("train", total, ctx.quiet);
    progress.inc(state.step);
    let run_started = Instant::now();
    let mut run_tokens = 0u64;
    let mut last_loss = f64::NAN;
    for (step, (epoch, rows)) in steps.iter().enumerate().skip(state.step as usize) {
        let step = step as u64;
        // an on-policy step trains on the student's own replies to the step's prompts, packed afresh
        let on_policy = distiller.as_ref().and_then(|d| d.on_policy.as_ref()).filter(|p| p.takes(step));
        let sampled = on_policy.map(|p| p.sample(&examples, &rows.concat(), step)).transpose()?;
        let (examples, rows) = match &sampled {
            Some(sampled) => {
                let lengths: Vec<usize> = sampled.iter().map(|e| e.ids.len()).collect();
                (sampled, &pack::epoch_rows(&lengths, cfg.max_length, cfg.packing, cfg.seed, step))
            }
            None => (&examples, rows),
        };
        let tokens = pack::trained_tokens(examples, rows);
        let model = &checkpoint.model;
        let loss = match (&distiller, &reward) {
            (Some(d), _) => Loss::Distill(d),
            (None, Some((train, _, objective))) => Loss::Reward(train, *objective),
            (None, None) => Loss::Nll,
        };
        let (loss_sum, seen, distilled) =
            accumulate(model, loss, &mut opt, examples, rows, (per_micro, tokens), &device)?;
        run_tokens += seen;
        state.distilled_tokens += distilled;
        state.tokens += seen;
        let lr = optim::learning_rate(cfg.schedule, cfg.lr, step, warmup, total);
        let grad_norm = opt.step(lr, cfg.max_grad_norm).map_err(candle_err)?;
        last_loss = loss_sum / tokens.max(1) as f64;
        state.step = step + 1;
        state.trained_tokens += tokens as u64;
        let last = state.step == total;
        let eval = (!eval_examples.is_empty() && (last || (cfg.eval_every > 0 && state.step % cfg.eval_every == 0)))
            .then(|| {
                let loss = reward.as_ref().map_or(Loss::Nll, |(_, held, objective)| Loss::Reward(held, *objective));
                eval_loss(&checkpoint.model.detached(), loss, (&eval_examples, &eval_rows), cfg, &device)
            })
            .transpose()?;
        if eval.is_some() {
            state.eval_loss = eval;
        }
        let rate = run_tokens as f64 / run_started.elapsed().as_secs_f64().max(1e-9);
        log.push(&metrics::Row {
            step: state.step,
            epoch: *epoch,
            loss: last_loss,
            eval_loss: eval,
            lr,
            grad_norm,
            tokens: state.tokens,
            tokens_per_second: rate,
        })?;
        progress.message(&format!("loss {last_loss:.4}  {rate:.0} tok/s"));
        progress.inc(1);
        if !last && cfg.save_every > 0 && state.step % cfg.save_every == 0 {
            output::save_checkpoint(&out.output, &checkpoint, &opt, &state)?;
        }
    }
    progress.finish();
    let report = TrainReport {
        fingerprint,
        steps: total,
        epochs: steps.last().map_or(0, |(epoch, _)| epoch + 1),
        examples: examples.len(),
        eval_examples: eval_examples.len(),
        dropped: loaded.dropped,
        tokens: state.tokens,
        trained_tokens: state.trained_tokens,
        final_loss: last_loss,
        final_eval_loss: state.eval_loss,
        distilled_tokens: state.distilled_tokens,
        unaligned_rows: loaded.unaligned,
        on_policy_steps: distiller.as_ref().and_then(|d| d.on_policy.as_ref()).map_or(0, |p| p.steps(total)),
        final_reward: None,
        seconds: started.elapsed().as_secs_f64(),
        tokens_per_second: run_tokens as f64 / run_started.elapsed().as_secs_f64().max(1e-9),
    };
    output::finish(&out.output, &cfg.model, &checkpoint, &report, lora.as_ref())?;
    if reward.is_some() {
        rm::classifier_config(&out.output)?;
    }
    Ok((report, true))
}

/// The directory a run keeps its checkpoints in.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

impl crate::stage::Target for TrainOutput {
    fn in_pipeline(dir: &std::path::Path) -> Option<TrainOutput> {
        Some(TrainOutput { output: dir.to_path_buf(), resume: false, overwrite: true })
    }

    fn output_mut(&mut self) -> Option<&mut std::path::PathBuf> {
        Some(&mut self.output)
    }
}

/// `forge train-sft`.
pub struct TrainSft;

impl crate::stage::Stage for TrainSft {
    const NAME: &'static str = "train-sft";
    const ABOUT: &'static str =
        "Fine-tune a model on conversations (loss on assistant tokens), write a Hugging Face checkpoint";
    const LONG_ABOUT: Option<&'static str> = Some(
        "Fine-tune a Qwen2 / Llama checkpoint on conversations. Rows are `messages` (every assistant \
                      message is trained), `prompt`/`completion` (strings or message lists; the completion is \
                      trained), a problems dataset with reference `steps` (the reference solution is \
                      trained, under `forge generate`'s instruction), or plain `text` (language modelling: \
                      every token trained, for pretraining a base). `segments` with `train = false` are \
                      left out of the loss. Examples are packed into rows of `--max-length` tokens without \
                      attention across them; AdamW with warmup and cosine decay, gradient clipping and \
                      accumulation up to `--batch-tokens` per step.\n\n\
                      OUT receives the model (config, safetensors, tokenizer: transformers and vLLM load it), \
                      metrics.csv, loss.png and train-report.json; checkpoints/ holds periodic checkpoints \
                      while it runs, and a rerun of an interrupted command resumes from the last one.",
    );
    const EXAMPLES: &'static str =
        "  forge train-sft --model init/ --data sft/ -o student/ --epochs 3 --lr 3e-4 --batch-tokens 16384
  forge train-sft --model Qwen2.5-0.5B-Instruct/ --data curated/ --eval-data heldout/ -o ft/ --lr 1e-5 --max-length 4096
  forge train-sft --model init/ --data igsm/ -o teacher/ --max-steps 2000 --lr 1e-3 --schedule linear
  forge train-sft --model init/ --data sft/ -o student/ --resume     # continue an interrupted run";
    type Config = TrainConfig;
    type Target = TrainOutput;

    fn run(cfg: &TrainConfig, out: &TrainOutput, ctx: &crate::Context) -> Result<crate::stage::Done> {
        let (report, ran) = run(cfg, Task::Sft, out, ctx)?;
        Ok(done(&report, ran, out))
    }
}

/// What a training stage reports.
fn done(report: &TrainReport, ran: bool, out: &TrainOutput) -> crate::stage::Done {
    let dir = out.output.display();
    let eval = report.final_eval_loss.map(|e| format!(", eval loss {e:.4}")).unwrap_or_default();
    let distilled = match (report.distilled_tokens, report.unaligned_rows) {
        (0, 0) => String::new(),
        (d, 0) => format!("; {d} tokens distilled"),
        (d, u) => format!("; {d} tokens distilled ({u} rows whose teacher lists did not line up: their tokens only)"),
    } + &match report.on_policy_steps {
        0 => String::new(),
        n => format!(", {n} of the steps on the student's own samples"),
    };
    let summary = format!(
        "{}{} steps over {} examples ({} dropped), {} tokens ({} trained): loss {:.4}{eval}; {:.0} tokens/s{distilled}\nwrote the model to `{dir}`",
        if ran { String::new() } else { format!("`{dir}` already holds this finished run; nothing to do\n") },
        report.steps,
        report.examples,
        report.dropped,
        report.tokens,
        report.trained_tokens,
        report.final_loss,
        report.tokens_per_second
    );
    crate::stage::Done {
        up_to_date: !ran,
        rows_in: Some(report.examples as u64),
        loss: Some(report.final_loss),
        eval_loss: report.final_eval_loss,
        summary,
        ..Default::default()
    }
}
