//! `forge train-distill`: token-level knowledge distillation. The student is trained on the teacher's
//! next-token distribution at every trained position, not only on the token the teacher wrote:
//! - **offline**, from the `top_logprobs` columns `forge generate --top-logprobs K` wrote (local or HTTP
//!   teacher): the distributions are compared on the teacher's top k tokens ([`Tail`] says what happens to
//!   the rest of the mass);
//! - **online**, with `--teacher local:DIR`: the teacher runs on each batch beside the student and gives
//!   its full-vocabulary distribution (same tokenizer required).
//!
//! Losses per trained token ([`Loss`]), with the teacher's log-probabilities `t` and the student's `s` on
//! the same support, both at `--temperature`: forward KL `Σ p_t (t - s)`, reverse KL `Σ p_s (s - t)`,
//! generalised JSD with β (TRL's `generalized_jsd_loss`: the mixture `m = β p_t + (1-β) p_s`, the loss
//! `β KL(t‖m) + (1-β) KL(s‖m)`; β = 0 is forward KL, β = 1 reverse KL) and total variation
//! `½ Σ |p_t - p_s|`. No `T²` factor (as TRL). `--ce-weight w` mixes in the hard-label loss:
//! `(1-w)·KD + w·CE`; trained tokens without a teacher distribution (rows from another source, such as
//! journey rows, or rows whose text no longer tokenizes as the teacher wrote it) get the CE alone. As in
//! `train-sft`, the loss of a step is the mean over its trained tokens; the held-out loss is the CE, so
//! runs of either trainer compare.
//!
//! ```text
//! forge generate --teacher local:teacher/ --problems p/ -o traces/ --top-logprobs 20
//! forge train-distill --model student/ --data traces/ -o out/ --loss fkl
//! forge train-distill --model student/ --data traces/ -o out/ --teacher local:teacher/ --loss jsd --beta 0.5
//! forge train-distill --model student/ --data traces/ -o out/ --teacher local:teacher/ --lambda 0.5
//! ```
//!
//! With an online teacher, `--lambda` makes a share of the steps on-policy ([`OnPolicy`], GKD): the
//! student's own samples replace the rows' replies, and the teacher scores them.

use candle_core::{D, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::data::Example;
use super::pack::Batch;
use super::{TrainConfig, TrainOutput};
use crate::error::{Error, Result};
use crate::model::Decoder;
use crate::model::tokenizer::Tokenizer;
use crate::teacher::Prompt;
use crate::teacher::local::Local;
use crate::teacher::sampling::SamplingConfig;

/// The divergence between the teacher's and the student's next-token distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Forward KL, KL(teacher ‖ student): mass-covering (Hinton's KD)
    Fkl,
    /// Reverse KL, KL(student ‖ teacher): mode-seeking (MiniLLM)
    Rkl,
    /// Generalised Jensen-Shannon with `--beta` (GKD)
    Jsd,
    /// Total variation distance
    Tvd,
}

/// What offline distillation does with the teacher's mass outside its top k.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Tail {
    /// Both distributions renormalised over the teacher's top k (DistillKit's sparse rule)
    Renorm,
    /// The rest of the mass as one more outcome, `log(1 - Σ top-k)` for each side; temperature then
    /// applies to the k + 1 log-probabilities
    Bucket,
}

/// `forge train-distill`'s settings (the `[train_distill]` section of a pipeline): the trainer's, and the
/// loss and its teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The trainer's settings, as `train-sft` takes them
    #[command(flatten)]
    #[serde(flatten)]
    pub train: TrainConfig,
    /// Online distillation from this teacher (`local:DIR`, the same tokenizer as the student), run on each
    /// batch; without it, offline from the rows' `top_logprobs`
    #[arg(long, value_name = "SPEC")]
    pub teacher: Option<String>,
    /// The divergence
    #[arg(long, value_enum, default_value_t = defaults::loss())]
    #[serde(default = "defaults::loss")]
    pub loss: Loss,
    /// `--loss jsd`: the mixture weight of the teacher (0: forward KL, 1: reverse KL)
    #[arg(long, default_value_t = defaults::half(), value_name = "B")]
    #[serde(default = "defaults::half")]
    pub beta: f64,
    /// Softens both distributions (logits, or log-probabilities, divided by T)
    #[arg(long, default_value_t = defaults::one(), value_name = "T")]
    #[serde(default = "defaults::one")]
    pub temperature: f64,
    /// Weight of the hard-label (cross-entropy) loss: `(1-w)·KD + w·CE` (1: SFT)
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    #[serde(default)]
    pub ce_weight: f64,
    /// Offline: the teacher's mass outside its top k
    #[arg(long, value_enum, default_value_t = defaults::tail())]
    #[serde(default = "defaults::tail")]
    pub tail: Tail,
    /// On-policy share (GKD's λ, with `--teacher`): this share of the optimizer steps trains on the
    /// student's own replies to the step's prompts, sampled at `--temperature` and scored by the teacher
    #[arg(long, default_value_t = 0.0, value_name = "L")]
    #[serde(default)]
    pub lambda: f64,
    /// On-policy: new tokens at most per sampled reply
    #[arg(long, default_value_t = defaults::max_new_tokens(), value_name = "N")]
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: u32,
}

mod defaults {
    pub fn loss() -> super::Loss {
        super::Loss::Fkl
    }
    pub fn tail() -> super::Tail {
        super::Tail::Renorm
    }
    pub fn half() -> f64 {
        0.5
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn max_new_tokens() -> u32 {
        128
    }
}

/// Log-probability standing for "not there" (padding of a top-k list shorter than the batch's k):
/// `exp` of it is 0, and differences of it stay finite.
const ABSENT: f32 = -1e9;

/// The teacher's distributions at a micro-batch's picked positions (offline): `[n, k]` token ids and
/// log-probabilities (padding: id 0, [`ABSENT`]), and `[n]` 1 where the position has one, 0 where not.
pub struct Sparse {
    /// `[n, k]` token ids.
    pub ids: Tensor,
    /// `[n, k]` log-probabilities.
    pub logprobs: Tensor,
    /// `[n]`: 1 where the position has a distribution.
    pub has: Tensor,
    /// Positions with a distribution.
    pub count: usize,
}

impl Sparse {
    /// The top-k lists of `lists` (empty: none) as tensors; `None` when no position has one.
    pub fn new(lists: &[&[(u32, f32)]], device: &Device) -> candle_core::Result<Option<Sparse>> {
        let k = lists.iter().map(|l| l.len()).max().unwrap_or(0);
        if k == 0 {
            return Ok(None);
        }
        let n = lists.len();
        let (mut ids, mut logprobs, mut has) = (vec![0u32; n * k], vec![ABSENT; n * k], vec![0f32; n]);
        for (i, list) in lists.iter().enumerate() {
            has[i] = if list.is_empty() { 0.0 } else { 1.0 };
            for (j, &(id, lp)) in list.iter().enumerate() {
                ids[i * k + j] = id;
                logprobs[i * k + j] = lp;
            }
        }
        Ok(Some(Sparse {
            ids: Tensor::from_vec(ids, (n, k), device)?,
            logprobs: Tensor::from_vec(logprobs, (n, k), device)?,
            has: Tensor::from_vec(has, n, device)?,
            count: lists.iter().filter(|l| !l.is_empty()).count(),
        }))
    }
}

/// The settings of the loss, as the trainer applies them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// Which divergence.
    pub loss: Loss,
    /// JSD's interpolation (`--beta`).
    pub beta: f64,
    /// Softmax temperature of both distributions.
    pub temperature: f64,
    /// Weight of the cross-entropy on the reply's tokens beside the divergence.
    pub ce_weight: f64,
    /// What is done with the probability outside the teacher's top k.
    pub tail: Tail,
}

impl Objective {
    /// The objective `cfg` asks for; an error on values out of range.
    pub fn of(cfg: &DistillConfig) -> Result<Objective> {
        if cfg.temperature.is_nan() || cfg.temperature <= 0.0 {
            return Err(Error::usage("`--temperature` must be positive"));
        }
        if [cfg.beta, cfg.ce_weight, cfg.lambda].iter().any(|x| !(0.0..=1.0).contains(x)) {
            return Err(Error::usage("`--beta`, `--ce-weight` and `--lambda` must be in [0, 1]"));
        }
        if cfg.lambda > 0.0 && cfg.teacher.is_none() {
            return Err(Error::usage(
                "`--lambda` needs `--teacher local:DIR`: the teacher scores the student's samples",
            )
            .with_hint("offline top-k lists cover the teacher's own tokens only"));
        }
        if cfg.lambda > 0.0 && cfg.max_new_tokens == 0 {
            return Err(Error::usage("`--max-new-tokens` must be positive"));
        }
        Ok(Objective {
            loss: cfg.loss,
            beta: cfg.beta,
            temperature: cfg.temperature,
            ce_weight: cfg.ce_weight,
            tail: cfg.tail,
        })
    }

    /// Per-position divergences `[n]` between log-probabilities `t` (teacher) and `s` (student), `[n, m]`
    /// on the same support.
    pub fn divergence(&self, s: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        let kl = |p: &Tensor, q: &Tensor| p.exp()?.mul(&(p - q)?)?.sum(D::Minus1);
        match self.loss {
            Loss::Fkl => kl(t, s),
            Loss::Rkl => kl(s, t),
            Loss::Tvd => (t.exp()? - s.exp()?)?.abs()?.sum(D::Minus1)? * 0.5,
            Loss::Jsd if self.beta == 0.0 => kl(t, s),
            Loss::Jsd if self.beta == 1.0 => kl(s, t),
            Loss::Jsd => {
                let b = self.beta;
                let m = Tensor::stack(&[(s + (1.0 - b).ln())?, (t + b.ln())?], 0)?.log_sum_exp(0)?;
                (kl(t, &m)? * b)? + (kl(s, &m)? * (1.0 - b))?
            }
        }
    }

    /// Teacher and student log-probabilities on the teacher's top k (offline), at the temperature.
    pub fn sparse_logprobs(&self, logits: &Tensor, sparse: &Sparse) -> candle_core::Result<(Tensor, Tensor)> {
        let inv = 1.0 / self.temperature;
        let present = sparse.logprobs.gt(ABSENT / 2.0)?;
        let absent = present.where_cond(&sparse.logprobs.zeros_like()?, &sparse.logprobs)?;
        match self.tail {
            Tail::Renorm => {
                let s = (logits.gather(&sparse.ids, 1)? * inv)?.add(&absent)?;
                let t = (&sparse.logprobs * inv)?;
                Ok((candle_nn::ops::log_softmax(&s, D::Minus1)?, candle_nn::ops::log_softmax(&t, D::Minus1)?))
            }
            Tail::Bucket => {
                let with_tail = |top: &Tensor| -> candle_core::Result<Tensor> {
                    let rest = (1.0 - top.exp()?.sum_keepdim(D::Minus1)?)?.maximum(1e-10)?.log()?;
                    candle_nn::ops::log_softmax(&(Tensor::cat(&[top, &rest], D::Minus1)? * inv)?, D::Minus1)
                };
                let full = candle_nn::ops::log_softmax(logits, D::Minus1)?;
                let s = full.gather(&sparse.ids, 1)?.add(&absent)?;
                Ok((with_tail(&s)?, with_tail(&sparse.logprobs)?))
            }
        }
    }

    /// Teacher and student log-probabilities over the whole vocabulary (online), at the temperature.
    pub fn dense_logprobs(&self, logits: &Tensor, teacher: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let inv = 1.0 / self.temperature;
        let s = candle_nn::ops::log_softmax(&(logits * inv)?, D::Minus1)?;
        let t = candle_nn::ops::log_softmax(&(teacher.detach() * inv)?, D::Minus1)?;
        Ok((s, t))
    }

    /// Per-position losses `[n]` from the student's logits `[n, vocab]` and the next tokens `[n]`:
    /// `(1-w)·KD + w·CE` where the teacher has a distribution, the CE alone where not.
    pub fn per_position(&self, logits: &Tensor, targets: &Tensor, teacher: Teacher) -> candle_core::Result<Tensor> {
        let ce =
            candle_nn::ops::log_softmax(logits, D::Minus1)?.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
        let (kd, has) = match teacher {
            Teacher::None => return Ok(ce),
            Teacher::Sparse(sparse) => {
                let (s, t) = self.sparse_logprobs(logits, sparse)?;
                (self.divergence(&s, &t)?, sparse.has.clone())
            }
            Teacher::Dense(t) => {
                let (s, t) = self.dense_logprobs(logits, t)?;
                (self.divergence(&s, &t)?, ce.ones_like()?)
            }
        };
        let w = self.ce_weight;
        let kd_weight = (&has * (1.0 - w))?;
        let ce_weight = ((&has * (w - 1.0))? + 1.0)?;
        kd.mul(&kd_weight)? + ce.mul(&ce_weight)?
    }
}

/// Where the teacher's distributions come from.
pub enum Source {
    /// The rows' `top_logprobs`, attached to the examples.
    Offline,
    /// A teacher run on each batch.
    Online(Box<Decoder>),
}

/// The objective and its teacher: what the trainer calls for a micro-batch's summed loss.
pub struct Distiller {
    /// The loss.
    pub objective: Objective,
    /// Where the teacher's distributions come from.
    pub source: Source,
    /// On-policy steps (`--lambda`), when asked.
    pub on_policy: Option<OnPolicy>,
}

/// On-policy distillation (GKD, Agarwal et al. 2024): a share of the steps trains on the student's own
/// replies, which the (online) teacher then scores token by token, so the student learns where its own
/// samples go wrong, not only on the teacher's text.
pub struct OnPolicy {
    share: f64,
    sampling: SamplingConfig,
    /// The student as the optimizer leaves it (a detached view of the trained weights).
    policy: Local,
    max_length: usize,
}

impl OnPolicy {
    /// The sampler of `cfg` over `student` (`None` when `--lambda` is 0).
    pub fn new(cfg: &DistillConfig, student: &crate::model::Checkpoint) -> Result<Option<OnPolicy>> {
        if cfg.lambda == 0.0 {
            return Ok(None);
        }
        let dir = &cfg.train.model;
        let (tokenizer, chat) = (Tokenizer::from_dir(dir)?, crate::model::chat::ChatTemplate::from_dir(dir)?);
        let policy = Local::with_model(dir, student.config.clone(), student.model.detached(), tokenizer, chat)?;
        let sampling = SamplingConfig {
            temperature: cfg.temperature as f32,
            max_new_tokens: cfg.max_new_tokens,
            seed: cfg.train.seed,
            ..SamplingConfig::default()
        };
        Ok(Some(OnPolicy { share: cfg.lambda, sampling, policy, max_length: cfg.train.max_length }))
    }

    /// Whether step `step` trains on the student's samples: drawn from the run's seed, so that a resumed
    /// run draws the same.
    pub fn takes(&self, step: u64) -> bool {
        crate::rng::Rng::for_row(self.sampling.seed, "on-policy", step).uniform() < self.share
    }

    /// How many of a run's first `steps` steps are on-policy.
    pub fn steps(&self, steps: u64) -> u64 {
        (0..steps).filter(|&s| self.takes(s)).count() as u64
    }

    /// The examples `picked`, each with the student's sample (keyed by step and place) in place of its
    /// reply: the prompt kept and not trained, the sample trained up to its end-of-sequence token or
    /// `--max-length`. Examples without a prompt to answer (plain text) are kept as they are.
    pub fn sample(&self, examples: &[Example], picked: &[usize], step: u64) -> Result<Vec<Example>> {
        let mut out: Vec<Example> = picked.iter().map(|&i| examples[i].clone()).collect();
        let answerable: Vec<usize> = (0..out.len())
            .filter(|&j| {
                let start = out[j].reply.start;
                start > 0 && start <= out[j].ids.len() && start < self.max_length
            })
            .collect();
        let ids: Vec<Vec<u32>> = answerable.iter().map(|&j| out[j].ids[..out[j].reply.start].to_vec()).collect();
        let prompts: Vec<Prompt> = answerable
            .iter()
            .zip(&ids)
            .map(|(j, ids)| Prompt {
                key: format!("{step}/{j}"),
                messages: Vec::new(),
                prefill: String::new(),
                n: 1,
                max_new_tokens: Some((self.max_length - ids.len()) as u32),
                first_sample: 0,
            })
            .collect();
        let slots = prompts.len().clamp(1, 64);
        let mut samples = vec![Vec::new(); prompts.len()];
        self.policy.decode_ids(&prompts, &ids, &self.sampling, slots, &mut |p, mut s| {
            samples[p] = s.pop().map(|s| s.tokens).unwrap_or_default();
            Ok(())
        })?;
        for ((j, mut ids), tokens) in answerable.into_iter().zip(ids).zip(samples) {
            let start = ids.len();
            ids.extend(tokens);
            let mut train = vec![false; start];
            train.resize(ids.len(), true);
            out[j] = Example { reply: start..ids.len(), ids, train, teacher: Vec::new() };
        }
        Ok(out)
    }
}

impl Distiller {
    /// The summed loss of a micro-batch over its trained tokens (a graph to backpropagate), and how many
    /// of the tokens had a teacher distribution.
    pub fn loss(&self, student: &Decoder, batch: &Batch) -> candle_core::Result<(Tensor, usize)> {
        let logits = logits_at_picks(student, batch)?;
        let (per, count) = match &self.source {
            Source::Offline => match &batch.teacher {
                None => (self.objective.per_position(&logits, &batch.targets, Teacher::None)?, 0),
                Some(sparse) => {
                    (self.objective.per_position(&logits, &batch.targets, Teacher::Sparse(sparse))?, sparse.count)
                }
            },
            Source::Online(teacher) => {
                let t = logits_at_picks(teacher, batch)?.detach();
                (self.objective.per_position(&logits, &batch.targets, Teacher::Dense(&t))?, batch.tokens)
            }
        };
        Ok((per.sum_all()?, count))
    }
}

/// A model's logits `[n, vocab]` at a batch's picked positions.
fn logits_at_picks(model: &Decoder, batch: &Batch) -> candle_core::Result<Tensor> {
    let hidden = model.hidden(&batch.ids, &batch.positions, &batch.mask, None)?;
    model.head(&hidden.flatten_to(1)?.index_select(&batch.picks, 0)?)
}

/// The teacher's side of a micro-batch's positions.
pub enum Teacher<'a> {
    /// No position has a distribution.
    None,
    /// Top-k lists (offline).
    Sparse(&'a Sparse),
    /// Full-vocabulary logits `[n, vocab]` (online).
    Dense(&'a Tensor),
}

/// The online teacher of `spec` (`local:DIR`), frozen, after checking that it reads text as the student
/// does.
pub fn online_teacher(spec: &str, student: &std::path::Path, device: &Device) -> Result<Decoder> {
    let Some(dir) = spec.strip_prefix("local:") else {
        return Err(Error::usage(format!("`--teacher {spec}`: online distillation takes `local:DIR`")).with_hint(
            "an HTTP teacher gives top-k log-probabilities: `forge generate --top-logprobs 20`, then train offline",
        ));
    };
    let dir = std::path::Path::new(dir);
    let (theirs, ours) = (Tokenizer::from_dir(dir)?, Tokenizer::from_dir(student)?);
    if theirs.vocab() != ours.vocab() {
        return Err(Error::usage(format!(
            "the teacher `{}` and the student `{}` have different tokenizers ({} and {} tokens, or the same \
             tokens with other ids): token-level distillation compares distributions over one vocabulary",
            dir.display(),
            student.display(),
            theirs.vocab_size(),
            ours.vocab_size()
        ))
        .with_hint("distil from a teacher of the student's family, or train on its text with `forge train-sft`"));
    }
    let (config, model) = crate::model::Checkpoint::load_frozen(dir, device)?;
    let rows = crate::model::ModelConfig::read(&student.join("config.json"))?.vocab_size;
    if config.vocab_size != rows {
        return Err(Error::usage(format!(
            "the teacher `{}` has {} rows of logits and the student `{}` {rows}: with the same tokenizer, the \
             models' vocabularies must have the same (padded) size too",
            dir.display(),
            config.vocab_size,
            student.display()
        )));
    }
    Ok(model)
}

/// Attach a row's teacher distributions (`top_logprobs`, checked against `token_logprobs` where given) to
/// its example: the i-th list is the distribution of the i-th token of the reply. Returns false when the
/// lists do not line up with the reply's tokens (the text tokenizes otherwise than the teacher wrote it);
/// the example is then left without.
pub fn attach(example: &mut Example, fields: &Map<String, Value>) -> std::result::Result<bool, (&'static str, String)> {
    let Some(Value::Array(lists)) = fields.get("top_logprobs") else {
        return Ok(true);
    };
    let parse = |v: &Value| -> Option<Vec<(u32, f32)>> {
        v.as_array()?
            .iter()
            .map(|e| Some((u32::try_from(e.get("token")?.as_u64()?).ok()?, e.get("logprob")?.as_f64()? as f32)))
            .collect()
    };
    let tops: Vec<Vec<(u32, f32)>> = lists
        .iter()
        .enumerate()
        .map(|(i, v)| parse(v).ok_or(("top_logprobs", format!("position {i}: expected a list of {{token, logprob}}"))))
        .collect::<std::result::Result<_, _>>()?;
    let reply = example.reply.clone();
    // the teacher's lists cover the reply's tokens, with or without the end-of-turn token's
    if tops.len() != reply.len() && tops.len() + 1 != reply.len() {
        return Ok(false);
    }
    let sampled: Option<Vec<f64>> =
        fields.get("token_logprobs").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_f64).collect());
    if let Some(sampled) = &sampled {
        for (i, (top, lp)) in tops.iter().zip(sampled).enumerate() {
            let id = example.ids.get(reply.start + i);
            if let Some(&(_, t)) = top.iter().find(|(tok, _)| Some(tok) == id)
                && (f64::from(t) - lp).abs() > 1e-3 * lp.abs().max(1.0)
            {
                return Ok(false);
            }
        }
    }
    let mut teacher = vec![Vec::new(); example.ids.len()];
    for (i, top) in tops.into_iter().enumerate() {
        if let Some(slot) = teacher.get_mut(reply.start + i) {
            *slot = top;
        }
    }
    example.teacher = teacher;
    Ok(true)
}

/// `forge train-distill`.
pub struct TrainDistill;

impl crate::stage::Stage for TrainDistill {
    const NAME: &'static str = "train-distill";
    const ABOUT: &'static str =
        "Distil a teacher into a student: train on its next-token distributions (offline top-k, or online)";
    const LONG_ABOUT: Option<&'static str> = Some(
        "Token-level knowledge distillation: everything `forge train-sft` does (packing, masks, LoRA, \
         checkpoints and resume, metrics, held-out loss, a Hugging Face checkpoint), with the loss \
         comparing the student's next-token distribution to the teacher's at every trained token.\n\n\
         Offline (the default): the rows' `top_logprobs`, written by `forge generate --top-logprobs K` \
         (local or HTTP teacher); both distributions are compared on the teacher's top k (`--tail renorm`: \
         renormalised there; `--tail bucket`: the remaining mass as one more outcome). Rows without them \
         (journey rows, other datasets) are trained on their tokens (cross-entropy). Online: `--teacher \
         local:DIR` runs the teacher on every batch for its full distribution; it must share the \
         student's tokenizer. With it, `--lambda L` makes a share L of the steps on-policy (GKD): the \
         student samples its own replies to the step's prompts (at `--temperature`, up to \
         `--max-new-tokens`) and is trained on the teacher's distributions over them.\n\n\
         Losses: `fkl` (KL(teacher‖student)), `rkl` (KL(student‖teacher)), `jsd` (generalised \
         Jensen-Shannon, `--beta`: 0 is fkl, 1 is rkl, as TRL's GKD), `tvd`; `--temperature` softens \
         both; `--ce-weight W` trains on `(1-W)·KD + W·CE`. The loss of a step is its mean over trained \
         tokens; the held-out loss is the cross-entropy, comparable with train-sft's.",
    );
    const EXAMPLES: &'static str =
        "  forge generate --teacher local:teacher/ --problems p/ -o traces/ -n 4 --top-logprobs 20
  forge train-distill --model student/ --data traces/ -o distilled/ --loss fkl --epochs 3 --lr 1e-3
  forge train-distill --model student/ --data traces/ -o distilled/ --loss jsd --beta 0.5 --ce-weight 0.5
  forge train-distill --model student/ --data traces/ -o distilled/ --teacher local:teacher/ --temperature 2
  forge train-distill --model student/ --data traces/ -o distilled/ --teacher local:teacher/ --loss jsd --lambda 0.5
  forge train-distill --model Qwen2.5-0.5B/ --data traces/ -o lora/ --lora-rank 16 --lr 2e-4";
    type Config = DistillConfig;
    type Target = TrainOutput;

    fn run(cfg: &DistillConfig, out: &TrainOutput, ctx: &crate::Context) -> Result<crate::stage::Done> {
        let (report, ran) = super::run(&cfg.train, super::Task::Distill(cfg), out, ctx)?;
        Ok(super::done(&report, ran, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &Value) -> Vec<f32> {
        match v {
            Value::Array(items) => items.iter().flat_map(floats).collect(),
            x => vec![x.as_f64().expect("a number") as f32],
        }
    }

    /// Every loss, teacher form (dense, top-k renormalised, top-k with a tail bucket), temperature and
    /// CE weight: the per-position losses and the gradient with respect to the student's logits equal
    /// PyTorch's (scripts/kd_fixtures.py, float64; dense JSD by TRL's own function) to 1e-5.
    #[test]
    fn losses_match_torch() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kd_losses.json");
        let f: Value = serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap();
        let dev = Device::Cpu;
        let n = f["student_logits"].as_array().unwrap().len();
        let student =
            Tensor::from_vec(floats(&f["student_logits"]), (n, floats(&f["student_logits"]).len() / n), &dev).unwrap();
        let teacher = Tensor::from_vec(floats(&f["teacher_logits"]), student.dims(), &dev).unwrap();
        let targets: Vec<u32> = f["targets"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        let targets = Tensor::new(targets, &dev).unwrap();
        let tops: Vec<Vec<(u32, f32)>> = f["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l.as_array()
                    .unwrap()
                    .iter()
                    .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32))
                    .collect()
            })
            .collect();
        let lists: Vec<&[(u32, f32)]> = tops.iter().map(Vec::as_slice).collect();
        let sparse = Sparse::new(&lists, &dev).unwrap().unwrap();
        let cases = f["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 72);
        for case in cases {
            let name = |k: &str| case[k].as_str().unwrap().to_string();
            let num = |k: &str| case[k].as_f64().unwrap();
            let loss = match name("loss").as_str() {
                "fkl" => Loss::Fkl,
                "rkl" => Loss::Rkl,
                "jsd" => Loss::Jsd,
                _ => Loss::Tvd,
            };
            let tail = if name("mode") == "bucket" { Tail::Bucket } else { Tail::Renorm };
            let objective = Objective {
                loss,
                beta: num("beta"),
                temperature: num("temperature"),
                ce_weight: num("ce_weight"),
                tail,
            };
            let z = candle_core::Var::from_tensor(&student).unwrap();
            let side = if name("mode") == "dense" { Teacher::Dense(&teacher) } else { Teacher::Sparse(&sparse) };
            let per = objective.per_position(z.as_tensor(), &targets, side).unwrap();
            let grad = per.sum_all().unwrap().backward().unwrap().get(&z).unwrap().clone();
            let close = |got: Vec<f32>, want: Vec<f32>, what: &str| {
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{} {} beta {} T {} w {}: {what}[{i}]: {g} vs {w}",
                        name("mode"),
                        name("loss"),
                        num("beta"),
                        num("temperature"),
                        num("ce_weight")
                    );
                }
            };
            close(per.to_vec1().unwrap(), floats(&case["per_position"]), "loss");
            close(grad.flatten_all().unwrap().to_vec1().unwrap(), floats(&case["grad"]), "grad");
        }
    }
}
