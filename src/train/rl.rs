//! `forge train-rl`: reinforcement learning with verifier rewards (GRPO, as DeepSeek-R1-Zero and TinyZero
//! trained). Each step takes `--prompts-per-step` problems, samples `--group-size` completions of each
//! from the policy itself (forge's decoding kernels over the very weights being trained: no copy), scores
//! them with the verifiers ([`super::reward`]), turns the rewards into group-relative advantages and
//! makes `--iterations` optimizer updates of the clipped GRPO objective with a KL penalty to the
//! starting model ([`super::grpo`]).
//!
//! OUT receives the model (or a LoRA adapter), `metrics.csv` (per step: reward by signal, accuracy,
//! completion length, KL, clipped share, entropy), `loss.png`, `reward.png`, and `rollouts/`: every
//! completion sampled, as a traces dataset with its step, reward, rewards by signal and advantage (filter
//! it, export it, train on it: R1's rejection-sampling stage). Checkpoints every `--save-every` steps; a
//! rerun of a killed command resumes from the last one and ends as an uninterrupted run would.
//!
//! ```text
//! forge train-rl --model M --problems P -o OUT --group-size 8 --reward accuracy=1,format=0.2 --beta 0.04
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field};
use candle_core::{D, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::grpo::{self, Aggregation, Clip, ScaleRewards};
use super::output::{self, Resume};
use super::reward::Rewards;
use super::{Schedule, TrainOutput, TrainReport, candle_err, data::Example, metrics, optim, pack};
use crate::Context;
use crate::dataset::{DatasetWriter, Input, Problem, Provenance, Start, TableKind, WriteOptions};
use crate::error::{Error, Location, Result};
use crate::formats::domain::Domain;
use crate::model::chat::ChatTemplate;
use crate::model::tokenizer::Tokenizer;
use crate::model::{Checkpoint, Decoder};
use crate::report::StageReport;
use crate::teacher::local::Local;
use crate::teacher::traces::{PromptConfig, trace};
use crate::teacher::{Prompt, Sample, SamplingConfig, Teacher};
use crate::verify::{TraceRef, VerifySettings};

/// `forge train-rl`'s settings (the `[train_rl]` section of a pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RlConfig {
    /// The policy to start from (a Hugging Face checkpoint directory); also the KL reference
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Problems with verifiable answers (a problems dataset: gold answers, Countdown metadata, or tests)
    #[arg(long, value_name = "DIR")]
    pub problems: PathBuf,
    /// Completions sampled per problem (G): the group their advantages are relative to
    #[arg(long, default_value_t = defaults::group_size(), value_name = "G")]
    #[serde(default = "defaults::group_size")]
    pub group_size: u32,
    /// Problems per step (each step samples prompts × G completions)
    #[arg(long, default_value_t = defaults::prompts_per_step(), value_name = "N")]
    #[serde(default = "defaults::prompts_per_step")]
    pub prompts_per_step: usize,
    /// Steps (each: sample, score, `--iterations` updates); problems are drawn in a seeded order, epoch after epoch
    #[arg(long, default_value_t = defaults::steps(), value_name = "N")]
    #[serde(default = "defaults::steps")]
    pub steps: u64,
    /// Weighted reward signals: accuracy, format, language, repetition, truncation, length
    #[arg(long, default_value_t = defaults::reward(), value_name = "LIST")]
    #[serde(default = "defaults::reward")]
    pub reward: Rewards,
    /// Weight of the KL penalty to the starting model (k3 estimator); 0 skips the reference model
    #[arg(long, default_value_t = defaults::beta(), value_name = "X")]
    #[serde(default = "defaults::beta")]
    pub beta: f64,
    /// Clip range of the importance ratio: [1 - ε, 1 + ε]
    #[arg(long, default_value_t = defaults::epsilon(), value_name = "X")]
    #[serde(default = "defaults::epsilon")]
    pub epsilon: f64,
    /// Upper clip bound 1 + ε_high (DAPO's clip-higher; default: ε)
    #[arg(long, value_name = "X")]
    pub epsilon_high: Option<f64>,
    /// Optimizer updates per batch of rollouts (μ); above 1 the ratio moves off 1 and clipping acts
    #[arg(long, default_value_t = defaults::iterations(), value_name = "N")]
    #[serde(default = "defaults::iterations")]
    pub iterations: u32,
    /// Divide advantages by the group's std (GRPO), the batch's, or nothing (Dr. GRPO)
    #[arg(long, value_enum, default_value_t = defaults::scale_rewards())]
    #[serde(default = "defaults::scale_rewards")]
    pub scale_rewards: ScaleRewards,
    /// How per-token losses add up: per completion then averaged (grpo), over all tokens (dapo), or over a
    /// constant (dr-grpo)
    #[arg(long, value_enum, default_value_t = defaults::loss_type())]
    #[serde(default = "defaults::loss_type")]
    pub loss_type: Aggregation,
    /// Leave out of the update the groups whose completions all got the same reward (zero advantages: only
    /// their KL term would count); `false` keeps them, as TRL does
    #[arg(long, default_value_t = defaults::yes(), action = clap::ArgAction::Set, value_name = "BOOL")]
    #[serde(default = "defaults::yes")]
    pub skip_flat_groups: bool,
    /// Most tokens per completion; a completion cut there gets the `truncation` signal
    #[arg(long, default_value_t = defaults::max_tokens(), value_name = "N")]
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: usize,
    /// Sampling temperature of the rollouts (log-probabilities in the loss use it too)
    #[arg(long, default_value_t = defaults::temperature(), value_name = "T")]
    #[serde(default = "defaults::temperature")]
    pub temperature: f64,
    /// How prompts are rendered
    #[command(flatten)]
    #[serde(flatten)]
    pub prompt: PromptConfig,
    /// Peak learning rate
    #[arg(long, default_value_t = defaults::lr(), value_name = "LR")]
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// Learning-rate decay after warmup
    #[arg(long, value_enum, default_value_t = defaults::schedule())]
    #[serde(default = "defaults::schedule")]
    pub schedule: Schedule,
    /// Share of the steps spent warming the learning rate up linearly
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    #[serde(default)]
    pub warmup_ratio: f64,
    /// AdamW weight decay
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping)
    #[arg(long, default_value_t = defaults::one(), value_name = "X")]
    #[serde(default = "defaults::one")]
    pub max_grad_norm: f64,
    /// Tokens per forward pass of the update (bounds memory)
    #[arg(long, default_value_t = defaults::micro_batch_tokens(), value_name = "N")]
    #[serde(default = "defaults::micro_batch_tokens")]
    pub micro_batch_tokens: usize,
    /// Checkpoint every N steps (a rerun resumes from the last one); 0: never
    #[arg(long, default_value_t = defaults::save_every(), value_name = "N")]
    #[serde(default = "defaults::save_every")]
    pub save_every: u64,
    /// Seed of the problem order, the rollouts' sampling and the LoRA initialisation
    #[arg(long, default_value_t = defaults::seed(), value_name = "N")]
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// LoRA settings
    #[command(flatten)]
    #[serde(flatten)]
    pub adapter: super::AdapterArgs,
    /// How completions are judged (`[verify]` in a pipeline): tolerance, and the sandbox code runs in
    #[command(flatten)]
    #[serde(default)]
    pub verify: VerifySettings,
}

mod defaults {
    use super::{Aggregation, Rewards, ScaleRewards, Schedule};
    pub fn group_size() -> u32 {
        8
    }
    pub fn prompts_per_step() -> usize {
        4
    }
    pub fn steps() -> u64 {
        100
    }
    pub fn reward() -> Rewards {
        "accuracy=1,format=0.2".parse().expect("valid")
    }
    pub fn beta() -> f64 {
        0.04
    }
    pub fn epsilon() -> f64 {
        0.2
    }
    pub fn iterations() -> u32 {
        1
    }
    pub fn scale_rewards() -> ScaleRewards {
        ScaleRewards::Group
    }
    pub fn loss_type() -> Aggregation {
        Aggregation::Dapo
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_tokens() -> usize {
        256
    }
    pub fn temperature() -> f64 {
        1.0
    }
    pub fn lr() -> f64 {
        1e-6
    }
    pub fn schedule() -> Schedule {
        Schedule::Constant
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn micro_batch_tokens() -> usize {
        4096
    }
    pub fn save_every() -> u64 {
        25
    }
    pub fn seed() -> u64 {
        1
    }
}

impl RlConfig {
    fn clip(&self) -> Clip {
        Clip { epsilon_low: self.epsilon, epsilon_high: self.epsilon_high.unwrap_or(self.epsilon), beta: self.beta }
    }

    fn sampling(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature as f32,
            top_p: 1.0,
            max_new_tokens: self.max_tokens as u32,
            seed: self.seed,
            ..SamplingConfig::default()
        }
    }

    fn check(&self) -> Result<()> {
        if self.group_size < 2 {
            return Err(Error::usage("`--group-size` must be at least 2: advantages are relative to the group"));
        }
        if self.prompts_per_step == 0 || self.iterations == 0 || self.max_tokens == 0 || self.micro_batch_tokens == 0 {
            return Err(Error::usage(
                "`--prompts-per-step`, `--iterations`, `--max-tokens` and `--micro-batch-tokens` must be positive",
            ));
        }
        if self.temperature <= 0.0 {
            return Err(Error::usage("`--temperature` must be positive: RL samples its rollouts"));
        }
        Ok(())
    }
}

/// One sampled completion with its scores.
struct Rollout {
    problem: usize,
    /// Its group's sampling key ([`keys`]); the rollout's row id is `KEY#k`.
    key: Arc<str>,
    k: u32,
    prompt: Arc<Vec<u32>>,
    sample: Sample,
    /// Each reward signal's value, in `--reward`'s order.
    values: Vec<f64>,
    reward: f64,
    advantage: f64,
    correct: bool,
}

/// What one step's update measured.
#[derive(Default)]
struct Measured {
    loss: f64,
    kl: f64,
    entropy: f64,
    clipped: usize,
    /// Token-updates summed over iterations (the denominator of the means above).
    tokens: usize,
    tokens_read: u64,
    grad_norm: f64,
    completions: usize,
}

/// The problems, in file order.
fn read_problems(input: &Input) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    for batch in input.rows_of::<Problem>(TableKind::Problems, 0..input.rows()) {
        out.extend(batch?);
    }
    if out.is_empty() {
        return Err(Error::usage(format!("`{}` has no problems", input.path.display())));
    }
    Ok(out)
}

/// The problems of `step`: the next `--prompts-per-step` of a seeded order, reshuffled each epoch.
fn pick(n: usize, step: u64, cfg: &RlConfig) -> Vec<usize> {
    let mut orders: Vec<(u64, Vec<usize>)> = Vec::new();
    (0..cfg.prompts_per_step)
        .map(|j| {
            let at = step as usize * cfg.prompts_per_step + j;
            let epoch = (at / n) as u64;
            if !orders.iter().any(|(e, _)| *e == epoch) {
                let mut order: Vec<usize> = (0..n).collect();
                crate::rng::Rng::for_row(cfg.seed, "rl-order", epoch).shuffle(&mut order);
                orders.push((epoch, order));
            }
            orders.iter().find(|(e, _)| *e == epoch).expect("made above").1[at % n]
        })
        .collect()
}

/// The sampling key of each group of a step: `ID@STEP`, so that each step samples afresh (and a resumed run
/// the same); a problem drawn twice in one step (fewer problems than prompts per step, or the end of an
/// epoch meeting the start of the next) gets its slot too, so that its groups differ.
fn keys(problems: &[Problem], picked: &[usize], step: u64) -> Vec<Arc<str>> {
    picked
        .iter()
        .enumerate()
        .map(|(j, &i)| {
            let key = format!("{}@{step}", problems[i].id);
            if picked[..j].contains(&i) { format!("{key}/{j}").into() } else { key.into() }
        })
        .collect()
}

/// Sample the step's groups from the policy and score them.
fn rollouts(policy: &mut Local, problems: &[Problem], step: u64, cfg: &RlConfig) -> Result<Vec<Rollout>> {
    let picked = pick(problems.len(), step, cfg);
    let keys = keys(problems, &picked, step);
    let prompts: Vec<Prompt> = picked
        .iter()
        .zip(&keys)
        .map(|(&i, key)| cfg.prompt.prompt(&problems[i], key.to_string(), cfg.group_size))
        .collect();
    let groups = policy.generate(&prompts, &cfg.sampling(), &crate::progress::Progress::hidden())?;
    let prefill = cfg.prompt.prefill();
    let mut out = Vec::new();
    for (((&i, key), prompt), group) in picked.iter().zip(&keys).zip(&prompts).zip(groups) {
        let ids = Arc::new(policy.prompt_ids(prompt)?);
        for (k, sample) in group.into_iter().enumerate() {
            let rollout = Rollout {
                problem: i,
                key: key.clone(),
                k: k as u32,
                prompt: ids.clone(),
                sample,
                values: Vec::new(),
                reward: 0.0,
                advantage: 0.0,
                correct: false,
            };
            out.push(rollout);
        }
    }
    let judged: Vec<Result<(Vec<f64>, bool)>> = out
        .par_iter()
        .map(|r| {
            let problem = &problems[r.problem];
            let completion = format!("{prefill}{}", r.sample.text);
            let row = TraceRef {
                domain: Domain::of(&problem.domain),
                gold: problem.gold.as_deref(),
                output: &completion,
                prompt: Some(&problem.prompt),
                metadata: Some(&problem.metadata),
                tests: problem.tests.as_deref(),
                finish_reason: Some(r.sample.finish.name()),
            };
            let verdict = crate::verify::verify_trace(&row, &cfg.verify).map_err(|(column, message)| {
                Error::data(
                    Location::file(&cfg.problems).column(column),
                    format!("problem `{}`: {message}", problem.id),
                )
            })?;
            Ok((cfg.reward.values(&verdict, r.sample.tokens.len(), cfg.max_tokens), verdict.correct))
        })
        .collect();
    for (r, j) in out.iter_mut().zip(judged) {
        (r.values, r.correct) = j?;
        r.reward = cfg.reward.total(&r.values);
    }
    let rewards: Vec<f64> = out.iter().map(|r| r.reward).collect();
    for (r, a) in out.iter_mut().zip(grpo::advantages(&rewards, cfg.group_size as usize, cfg.scale_rewards)) {
        r.advantage = a;
    }
    Ok(out)
}

/// Log-probabilities (at `temperature`) of a micro-batch's completion tokens, and, with `entropy`, the
/// entropy of the distribution each was drawn from (values only: a pass over the whole vocabulary, which
/// the reference's and the sampling policy's passes skip).
fn token_logprobs(
    model: &Decoder,
    batch: &pack::Batch,
    temperature: f64,
    entropy: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let hidden = model.hidden(&batch.ids, &batch.positions, &batch.mask, None)?;
    let picked = hidden.flatten_to(1)?.index_select(&batch.picks, 0)?;
    let logits = (model.head(&picked)? / temperature)?;
    let all = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let logp = all.gather(&batch.targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let entropy = entropy
        .then(|| {
            let values = all.detach();
            (values.exp()? * &values)?.sum(D::Minus1)?.neg()
        })
        .transpose()?;
    Ok((logp, entropy))
}

/// The rollouts an update trains on as examples (prompt then completion, the completion trained), packed
/// into micro-batches; with each micro-batch, its tokens' advantages and weights in the order the batch
/// picks them.
struct Plan {
    examples: Vec<Example>,
    micro: Vec<(Vec<Vec<usize>>, Tensor, Tensor)>,
}

fn plan(rollouts: &[&Rollout], cfg: &RlConfig, step: u64, device: &Device) -> candle_core::Result<Plan> {
    let examples: Vec<Example> = rollouts
        .iter()
        .map(|r| {
            let (p, c) = (r.prompt.len(), r.sample.tokens.len());
            let ids = r.prompt.iter().chain(&r.sample.tokens).copied().collect();
            Example::new(ids, std::iter::repeat_n(false, p).chain(std::iter::repeat_n(true, c)).collect())
        })
        .collect();
    let lengths: Vec<usize> = rollouts.iter().map(|r| r.sample.tokens.len()).collect();
    let sizes: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let capacity = sizes.iter().copied().max().unwrap_or(1).max(cfg.micro_batch_tokens.min(4 * cfg.max_tokens));
    let rows = pack::epoch_rows(&sizes, capacity, true, cfg.seed, step);
    let per_micro = (cfg.micro_batch_tokens / capacity).max(1);
    let mut micro = Vec::new();
    for chunk in rows.chunks(per_micro) {
        let (mut adv, mut weight) = (Vec::new(), Vec::new());
        for &e in chunk.iter().flatten() {
            let w = grpo::token_weight(cfg.loss_type, lengths[e], &lengths, cfg.max_tokens);
            adv.extend(std::iter::repeat_n(rollouts[e].advantage as f32, lengths[e]));
            weight.extend(std::iter::repeat_n(w as f32, lengths[e]));
        }
        micro.push((chunk.to_vec(), Tensor::new(adv, device)?, Tensor::new(weight, device)?));
    }
    Ok(Plan { examples, micro })
}

/// The models an update reads: the one trained, the policy as it sampled (for μ > 1), the reference.
struct Models<'a> {
    train: &'a Decoder,
    sampled: &'a Decoder,
    reference: Option<&'a Decoder>,
}

/// `--iterations` optimizer updates on the step's rollouts (groups with equal rewards left out when asked).
fn update(
    models: &Models,
    opt: &mut optim::AdamW,
    rollouts: &[Rollout],
    (cfg, step, lr): (&RlConfig, u64, f64),
    device: &Device,
) -> Result<Measured> {
    let g = cfg.group_size as usize;
    let kept: Vec<&Rollout> = rollouts
        .chunks(g)
        .filter(|group| !(cfg.skip_flat_groups && grpo::flat(&group.iter().map(|r| r.reward).collect::<Vec<_>>())))
        .flatten()
        .collect();
    let mut m = Measured { completions: kept.len(), ..Measured::default() };
    if kept.is_empty() {
        return Ok(m);
    }
    let plan = plan(&kept, cfg, step, device).map_err(candle_err)?;
    let logps = |model: &Decoder| -> Result<Vec<Tensor>> {
        let batches = plan.micro.iter().map(|(rows, _, _)| pack::batch(&plan.examples, rows, device));
        batches
            .map(|b| Ok(token_logprobs(model, &b?, cfg.temperature, false)?.0))
            .collect::<candle_core::Result<_>>()
            .map_err(candle_err)
    };
    let old = if cfg.iterations > 1 { Some(logps(models.sampled)?) } else { None };
    let reference = models.reference.map(logps).transpose()?;
    for _ in 0..cfg.iterations {
        for (i, (rows, adv, weight)) in plan.micro.iter().enumerate() {
            let batch = pack::batch(&plan.examples, rows, device).map_err(candle_err)?;
            let (logp, entropy) = token_logprobs(models.train, &batch, cfg.temperature, true).map_err(candle_err)?;
            let old = old.as_ref().map_or_else(|| logp.detach(), |o| o[i].clone());
            let terms =
                grpo::per_token(&logp, &old, reference.as_ref().map(|r| &r[i]), adv, cfg.clip()).map_err(candle_err)?;
            let loss = terms.loss.mul(weight).and_then(|l| l.sum_all()).map_err(candle_err)?;
            let scalar = |t: &Tensor| t.sum_all().and_then(|s| s.to_scalar::<f32>()).map(f64::from).map_err(candle_err);
            m.loss += scalar(&loss)?;
            m.entropy += scalar(&entropy.expect("asked for"))?;
            if let Some(kl) = &terms.kl {
                m.kl += scalar(kl)?;
            }
            m.clipped += terms.clipped;
            m.tokens += batch.tokens;
            m.tokens_read += batch.seen as u64;
            opt.accumulate(&models.train.backward(&loss).map_err(candle_err)?).map_err(candle_err)?;
        }
        m.grad_norm = opt.step(lr, cfg.max_grad_norm).map_err(candle_err)?;
    }
    m.loss /= f64::from(cfg.iterations);
    Ok(m)
}

/// `metrics.csv`'s columns: train-sft's, then the RL ones.
fn header(cfg: &RlConfig) -> String {
    let signals: Vec<String> = cfg.reward.0.iter().map(|(s, _)| format!("reward_{}", s.name())).collect();
    format!(
        "{},reward,reward_std,{},accuracy,completion_length,kl,clip_fraction,entropy,flat_groups,trained_completions\n",
        metrics::HEADER.trim_end(),
        signals.join(",")
    )
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n.max(1) as f64
}

/// One `metrics.csv` line.
fn line(cfg: &RlConfig, row: &metrics::Row, rollouts: &[Rollout], m: &Measured) -> String {
    let rewards: Vec<f64> = rollouts.iter().map(|r| r.reward).collect();
    let avg = mean(rewards.iter().copied());
    let std = (mean(rewards.iter().map(|r| (r - avg).powi(2)))).sqrt();
    let signals: Vec<String> =
        (0..cfg.reward.0.len()).map(|i| format!("{:.6}", mean(rollouts.iter().map(|r| r.values[i])))).collect();
    let groups = rollouts.chunks(cfg.group_size as usize);
    let flat = groups.clone().filter(|g| grpo::flat(&g.iter().map(|r| r.reward).collect::<Vec<_>>())).count();
    let per_token = |x: f64| x / m.tokens.max(1) as f64;
    format!(
        "{},{avg:.6},{std:.6},{},{:.6},{:.2},{:.6},{:.6},{:.6},{:.4},{}\n",
        metrics::line(row).trim_end(),
        signals.join(","),
        mean(rollouts.iter().map(|r| f64::from(u8::from(r.correct)))),
        mean(rollouts.iter().map(|r| r.sample.tokens.len() as f64)),
        per_token(m.kl),
        m.clipped as f64 / m.tokens.max(1) as f64,
        per_token(m.entropy),
        flat as f64 / groups.len().max(1) as f64,
        m.completions
    )
}

/// `rollouts/`: every sampled completion as a traces row, with the step, reward, rewards by signal,
/// advantage and whether it was right. Its shards close at checkpoints, so a resumed run finds the rows
/// of the steps before its checkpoint written and the later ones to write again. (`None`: a run killed
/// after finishing it, resumed: every row is there already, the same as the resumed steps make.)
struct RolloutLog {
    writer: Option<DatasetWriter>,
    rows: u64,
}

/// The rollouts dataset's directory in a run's output.
pub const ROLLOUTS: &str = "rollouts";

impl RolloutLog {
    fn open(cfg: &RlConfig, out: &TrainOutput, fingerprint: &str, ctx: &Context, from_step: u64) -> Result<RolloutLog> {
        let per_step = cfg.prompts_per_step as u64 * u64::from(cfg.group_size);
        let rows_per_shard = per_step * if cfg.save_every > 0 { cfg.save_every } else { cfg.steps.max(1) };
        let options = WriteOptions { rows_per_shard, overwrite: true, ..WriteOptions::default() };
        let mut provenance = Provenance::start("train-rl", &ctx.command, cfg, Vec::new());
        provenance.fingerprint = fingerprint.to_string();
        let dir = out.output.join(ROLLOUTS);
        let mut writer =
            match DatasetWriter::create(&dir, TableKind::Traces, crate::dataset::Shard::ALL, &options, provenance)? {
                Start::Write(w) => w,
                Start::UpToDate(_) => {
                    return Err(Error::usage(format!("`{}` is finished but its run is not", dir.display())));
                }
            };
        writer.append_columns([
            Field::new("step", DataType::UInt64, false),
            Field::new("reward", DataType::Float64, false),
            Field::new("rewards", DataType::Utf8, false),
            Field::new("advantage", DataType::Float64, false),
            Field::new("correct", DataType::Boolean, false),
        ]);
        writer.skip(from_step * per_step)?;
        Ok(RolloutLog { writer: Some(writer), rows: from_step * per_step })
    }

    fn write(
        &mut self,
        cfg: &RlConfig,
        problems: &[Problem],
        step: u64,
        rollouts: Vec<Rollout>,
        id: &str,
    ) -> Result<()> {
        let Some(writer) = &mut self.writer else { return Ok(()) };
        let prefill = cfg.prompt.prefill();
        let sampling = cfg.sampling();
        let mut extra = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut traces = Vec::with_capacity(rollouts.len());
        for r in rollouts {
            let signals: serde_json::Map<String, serde_json::Value> =
                cfg.reward.0.iter().zip(&r.values).map(|((s, _), v)| (s.name().to_string(), (*v).into())).collect();
            extra.0.push(r.reward);
            extra.1.push(serde_json::Value::Object(signals).to_string());
            extra.2.push(r.advantage);
            extra.3.push(r.correct);
            let mut row = trace(&sampling, &problems[r.problem], r.k, r.sample, id, &prefill);
            // a problem comes back in later steps: the key makes the id unique
            row.id = format!("{}#{}", r.key, r.k);
            traces.push(row);
        }
        let n = traces.len();
        let base = crate::dataset::to_batch(&TableKind::Traces.schema(), &traces)?;
        let mut columns: Vec<ArrayRef> = base.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from(vec![step; n])));
        columns.push(Arc::new(Float64Array::from(extra.0)));
        columns.push(Arc::new(StringArray::from(extra.1)));
        columns.push(Arc::new(Float64Array::from(extra.2)));
        columns.push(Arc::new(BooleanArray::from(extra.3)));
        let batch = RecordBatch::try_new(writer.schema().clone(), columns).map_err(|e| Error::arrow("rollouts", e))?;
        writer.write(&batch)?;
        self.rows += n as u64;
        Ok(())
    }

    fn finish(self, seconds: f64) -> Result<()> {
        let Some(writer) = self.writer else { return Ok(()) };
        let mut report = StageReport::new("train-rl", self.rows, self.rows, seconds);
        report.rows_per_second = self.rows as f64 / seconds.max(1e-9);
        writer.finish(report)?;
        Ok(())
    }
}

/// Run (or resume) an RL run; the flag is false when `out` already held this run's finished result.
pub fn run(cfg: &RlConfig, out: &TrainOutput, ctx: &Context) -> Result<(TrainReport, bool)> {
    cfg.check()?;
    let started = Instant::now();
    let device = crate::model::device();
    let input = Input::open(&cfg.problems)?;
    let settings = ("train-rl", serde_json::to_value(cfg).map_err(|e| Error::usage(e.to_string()))?);
    let fingerprint = output::fingerprint(settings, &cfg.model, std::slice::from_ref(&input), None)?;
    let resume = match output::prepare(&out.output, &fingerprint, out)? {
        Resume::Finished(report) => return Ok((report, false)),
        r => r,
    };
    let problems = read_problems(&input)?;
    let lora = cfg.adapter.config(&cfg.model);
    let checkpoint = super::trainable(&cfg.model, &cfg.adapter, cfg.seed, &device)?;
    let reference = if cfg.beta != 0.0 { Some(Checkpoint::load_frozen(&cfg.model, &device)?.1) } else { None };
    let sampled = checkpoint.model.detached();
    let (tokenizer, chat) = (Tokenizer::from_dir(&cfg.model)?, ChatTemplate::from_dir(&cfg.model)?);
    let mut policy =
        Local::with_model(&cfg.model, checkpoint.config.clone(), checkpoint.model.detached(), tokenizer, chat)?;
    let mut opt = optim::AdamW::new(&checkpoint.vars, cfg.weight_decay);
    let mut state = super::start(&resume, out, &checkpoint, &mut opt, cfg.steps, ctx.quiet)?;
    let mut log = metrics::Log::with_header(&out.output, state.step, &header(cfg))?;
    let mut written = RolloutLog::open(cfg, out, &fingerprint, ctx, state.step)?;
    let models = Models { train: &checkpoint.model, sampled: &sampled, reference: reference.as_ref() };
    let progress = crate::progress::Progress::steps("train-rl", cfg.steps, ctx.quiet);
    progress.inc(state.step);
    let (run_started, mut run_tokens) = (Instant::now(), 0u64);
    let warmup = (cfg.warmup_ratio * cfg.steps as f64).ceil() as u64;
    let (mut last_loss, mut last_reward) = (f64::NAN, f64::NAN);
    for step in state.step..cfg.steps {
        let batch = rollouts(&mut policy, &problems, step, cfg)?;
        let lr = optim::learning_rate(cfg.schedule, cfg.lr, step, warmup, cfg.steps);
        let m = update(&models, &mut opt, &batch, (cfg, step, lr), &device)?;
        let completion: u64 = batch.iter().map(|r| r.sample.tokens.len() as u64).sum();
        run_tokens += m.tokens_read + completion;
        state.tokens += m.tokens_read;
        state.trained_tokens += m.tokens as u64;
        state.step = step + 1;
        last_loss = m.loss;
        last_reward = mean(batch.iter().map(|r| r.reward));
        let rate = run_tokens as f64 / run_started.elapsed().as_secs_f64().max(1e-9);
        let epoch = (step * cfg.prompts_per_step as u64) / problems.len() as u64;
        let row = metrics::Row {
            step: state.step,
            epoch,
            loss: m.loss,
            eval_loss: None,
            lr,
            grad_norm: m.grad_norm,
            tokens: state.tokens,
            tokens_per_second: rate,
        };
        log.push_line(&line(cfg, &row, &batch, &m))?;
        written.write(cfg, &problems, step, batch, policy.id())?;
        progress.message(&format!("reward {last_reward:.3}  {rate:.0} tok/s"));
        progress.inc(1);
        if state.step < cfg.steps && cfg.save_every > 0 && state.step % cfg.save_every == 0 {
            output::save_checkpoint(&out.output, &checkpoint, &opt, &state)?;
        }
    }
    progress.finish();
    written.finish(started.elapsed().as_secs_f64())?;
    let report = TrainReport {
        fingerprint,
        steps: cfg.steps,
        epochs: (cfg.steps * cfg.prompts_per_step as u64).div_ceil(problems.len() as u64),
        examples: problems.len(),
        eval_examples: 0,
        dropped: 0,
        tokens: state.tokens,
        trained_tokens: state.trained_tokens,
        final_loss: last_loss,
        final_eval_loss: None,
        distilled_tokens: 0,
        unaligned_rows: 0,
        on_policy_steps: 0,
        final_reward: Some(last_reward),
        seconds: started.elapsed().as_secs_f64(),
        tokens_per_second: run_tokens as f64 / run_started.elapsed().as_secs_f64().max(1e-9),
    };
    metrics::plot_rewards(&out.output)?;
    output::finish(&out.output, &cfg.model, &checkpoint, &report, lora.as_ref())?;
    Ok((report, true))
}

/// `forge train-rl`.
pub struct TrainRl;

impl crate::stage::Stage for TrainRl {
    const NAME: &'static str = "train-rl";
    const ABOUT: &'static str = "Reinforcement learning with verifier rewards (GRPO): sample, score, update";
    const LONG_ABOUT: Option<&'static str> = Some(
        "Reinforcement learning with verifier rewards (GRPO, as R1-Zero and TinyZero). Each step samples \
         `--group-size` completions of `--prompts-per-step` problems from the policy itself, scores them with \
         the verifiers (`--reward accuracy=1,format=0.2,language=0.1`: accuracy, format, language \
         consistency, repetition, truncation, length), takes each completion's reward less its group's mean \
         (divided by the group's std unless `--scale-rewards none`) as its advantage, and makes \
         `--iterations` AdamW updates of the clipped objective (`--epsilon`, `--epsilon-high`) with a KL \
         penalty to the starting model (`--beta`, k3 estimator; 0 loads no reference). Losses aggregate per \
         token (`--loss-type dapo`), per completion (`grpo`) or over a constant (`dr-grpo`).\n\n\
         OUT receives the model (or a LoRA adapter with `--lora-rank`), metrics.csv (reward by signal, \
         accuracy, completion length, KL, clipped share, entropy per step), loss.png, reward.png, \
         train-report.json, and rollouts/: every completion as a traces dataset with its step, reward, \
         rewards, advantage and correct columns (filter it, export it, train-sft on it). A rerun of a \
         killed command resumes from its last checkpoint.",
    );
    const EXAMPLES: &'static str = "  forge train-rl --model sft/ --problems countdown/ -o rl/ --group-size 8 --reward accuracy=1,format=0.2 --beta 0.04
  forge train-rl --model Qwen2.5-0.5B-Instruct/ --problems gsm8k/ -o rl/ --lora-rank 16 --lr 1e-5 --prefill '<think>\\n'
  forge train-rl --model teacher/ --problems arith/ -o rl/ --steps 60 --lr 2e-5 --beta 0 --scale-rewards none --loss-type dr-grpo";
    type Config = RlConfig;
    type Target = TrainOutput;

    fn run(cfg: &RlConfig, out: &TrainOutput, ctx: &Context) -> Result<crate::stage::Done> {
        let (report, ran) = run(cfg, out, ctx)?;
        let mut done = super::done(&report, ran, out);
        if let Some(r) = report.final_reward {
            done.summary = format!(
                "{}\nlast step's mean reward {r:.4}; rollouts in `{}`",
                done.summary,
                out.output.join(ROLLOUTS).display()
            );
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tiny::{Size, write};

    fn rollout(tokens: Vec<u32>, advantage: f64) -> Rollout {
        let sample = Sample { tokens, ..Sample::error("") };
        Rollout {
            problem: 0,
            key: "p@0".into(),
            k: 0,
            prompt: Arc::new(vec![1, 2, 3]),
            sample,
            values: Vec::new(),
            reward: advantage,
            advantage,
            correct: false,
        }
    }

    /// Summed log-probability of each rollout's completion under `model`.
    fn likelihoods(model: &Decoder, rollouts: &[Rollout], cfg: &RlConfig) -> Vec<f32> {
        rollouts
            .iter()
            .map(|r| {
                let plan = plan(&[r], cfg, 0, &Device::Cpu).unwrap();
                let batch = pack::batch(&plan.examples, &plan.micro[0].0, &Device::Cpu).unwrap();
                token_logprobs(model, &batch, cfg.temperature, false).unwrap().0.sum_all().unwrap().to_scalar().unwrap()
            })
            .collect()
    }

    /// The sign is right: one update makes the completion with a positive advantage more likely and the
    /// one with a negative advantage less likely, under the policy that samples (which shares the weights).
    #[test]
    fn an_update_favours_positive_advantages() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), crate::model::Arch::Qwen2, Size::default(), 1).unwrap();
        let checkpoint = Checkpoint::load(dir.path(), &Device::Cpu).unwrap();
        let sampled = checkpoint.model.detached();
        let cfg: RlConfig = serde_json::from_value(
            serde_json::json!({"model": dir.path(), "problems": "p", "group_size": 2, "beta": 0.0}),
        )
        .unwrap();
        let rollouts = vec![rollout(vec![5, 6, 7], 1.0), rollout(vec![8, 9], -1.0)];
        let before = likelihoods(&sampled, &rollouts, &cfg);
        let mut opt = optim::AdamW::new(&checkpoint.vars, 0.0);
        let models = Models { train: &checkpoint.model, sampled: &sampled, reference: None };
        let m = update(&models, &mut opt, &rollouts, (&cfg, 0, 1e-3), &Device::Cpu).unwrap();
        assert_eq!((m.completions, m.tokens), (2, 5));
        let after = likelihoods(&sampled, &rollouts, &cfg);
        assert!(after[0] > before[0] && after[1] < before[1], "{before:?} -> {after:?}");
    }

    /// The trainer scores exactly the tokens the policy sampled: its log-probabilities of a rollout's
    /// completion (end-of-sequence token aside, which the sampler does not record) equal the sampler's.
    #[test]
    fn trainer_log_probabilities_equal_the_samplers() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), crate::model::Arch::Qwen2, Size::default(), 2).unwrap();
        let checkpoint = Checkpoint::load(dir.path(), &Device::Cpu).unwrap();
        let (tokenizer, chat) = (Tokenizer::from_dir(dir.path()).unwrap(), ChatTemplate::from_dir(dir.path()).unwrap());
        let mut policy =
            Local::with_model(dir.path(), checkpoint.config.clone(), checkpoint.model.detached(), tokenizer, chat)
                .unwrap();
        let cfg: RlConfig =
            serde_json::from_value(serde_json::json!({"model": dir.path(), "problems": "p", "max_tokens": 12}))
                .unwrap();
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "id": "p1", "source": "t", "domain": "math", "prompt": "2 + 2?", "gold": "4", "metadata": "{}"
        }))
        .unwrap();
        let prompt = cfg.prompt.prompt(&problem, "p1@0".into(), 3);
        let samples = policy
            .generate(std::slice::from_ref(&prompt), &cfg.sampling(), &crate::progress::Progress::hidden())
            .unwrap();
        let ids = Arc::new(policy.prompt_ids(&prompt).unwrap());
        for sample in samples.into_iter().flatten() {
            let want = sample.logprobs.clone();
            let r = Rollout { prompt: ids.clone(), ..rollout(sample.tokens.clone(), 0.0) };
            let plan = plan(&[&r], &cfg, 0, &Device::Cpu).unwrap();
            let batch = pack::batch(&plan.examples, &plan.micro[0].0, &Device::Cpu).unwrap();
            let got: Vec<f32> = token_logprobs(&checkpoint.model, &batch, 1.0, false).unwrap().0.to_vec1().unwrap();
            assert!(!want.is_empty() && got.len() >= want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
            }
        }
    }

    /// Problems are drawn in a seeded order, each once per epoch; a problem drawn twice in one step (here:
    /// three problems, four per step) gets a key of its own for its second group.
    #[test]
    fn each_group_of_a_step_has_its_own_key() {
        let cfg: RlConfig =
            serde_json::from_value(serde_json::json!({"model": "m", "problems": "p", "prompts_per_step": 4})).unwrap();
        let problems: Vec<Problem> = (0..3)
            .map(|i| {
                serde_json::from_value(serde_json::json!({"id": format!("q{i}"), "source": "t", "domain": "math", "prompt": "x", "metadata": "{}"}))
                    .unwrap()
            })
            .collect();
        let first: Vec<usize> = (0..3).flat_map(|step| pick(3, step, &cfg)).collect();
        for epoch in first.chunks(3) {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2], "{first:?}");
        }
        assert_eq!(pick(3, 1, &cfg), pick(3, 1, &cfg));
        for step in 0..3 {
            let picked = pick(3, step, &cfg);
            let keys = keys(&problems, &picked, step);
            let unique: std::collections::BTreeSet<&str> = keys.iter().map(|k| &**k).collect();
            assert_eq!(unique.len(), 4, "{keys:?}");
            assert_eq!(&*keys[0], format!("q{}@{step}", picked[0]));
        }
    }
}
