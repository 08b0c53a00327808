//! GRPO's objective (DeepSeekMath §4.1, as TRL 1.16's `GRPOTrainer` computes it): group-relative
//! advantages, the clipped importance ratio, the k3 estimate of the KL to a reference model, and the
//! aggregation of per-token losses into one number. Tensors here are flat: one entry per completion token
//! of the batch, in the order the trainer picks them. `tests/fixtures/grpo_loss.json`
//! (`scripts/grpo_fixtures.py`, TRL's code copied) checks the loss and its gradient for every switch.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

type CResult<T> = candle_core::Result<T>;

/// How the per-token losses of a batch become one loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The mean over each completion's tokens, then over completions (GRPO as published: a long
    /// completion's tokens weigh less).
    Grpo,
    /// The mean over every completion token of the batch (DAPO; TRL's default; `bnpo` is the same with
    /// one process and no accumulation).
    #[value(alias = "bnpo")]
    Dapo,
    /// The sum over tokens divided by completions × `--max-tokens` (Dr. GRPO: a constant, no length bias).
    DrGrpo,
}

/// What the advantages are divided by after the group mean is taken off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    /// The group's standard deviation (GRPO).
    Group,
    /// The whole batch's standard deviation.
    Batch,
    /// Nothing (Dr. GRPO: the std favours questions that are too easy or too hard).
    None,
}

/// The standard deviation with Bessel's correction, as `torch.std` and TRL's `nanstd`.
fn std(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// Each completion's advantage: its reward less its group's mean (groups are `group` consecutive
/// completions of one prompt), divided by the std plus 1e-4 unless `scale` is `None`. A flat group's are
/// exactly zero (the mean of equal floats need not equal them, which left advantages of 1e-13).
pub fn advantages(rewards: &[f64], group: usize, scale: ScaleRewards) -> Vec<f64> {
    let batch_std = std(rewards);
    rewards
        .chunks(group)
        .flat_map(|g| {
            let mean = if flat(g) { g[0] } else { g.iter().sum::<f64>() / g.len() as f64 };
            let by = match scale {
                ScaleRewards::Group => std(g) + 1e-4,
                ScaleRewards::Batch => batch_std + 1e-4,
                ScaleRewards::None => 1.0,
            };
            g.iter().map(move |r| (r - mean) / by)
        })
        .collect()
}

/// Whether every completion of a group got the same reward: its advantages are all zero, so it carries no
/// signal (only the KL term).
pub fn flat(group: &[f64]) -> bool {
    group.iter().all(|r| (r - group[0]).abs() < 1e-6)
}

/// The weight each token of a completion of `len` tokens has in the aggregated loss, among `lengths` (every
/// completion of the batch): the loss is the weighted sum of the per-token losses.
pub fn token_weight(aggregation: Aggregation, len: usize, lengths: &[usize], max_tokens: usize) -> f64 {
    let n = lengths.len() as f64;
    match aggregation {
        Aggregation::Grpo => 1.0 / (len.max(1) as f64 * n),
        Aggregation::Dapo => 1.0 / lengths.iter().sum::<usize>().max(1) as f64,
        Aggregation::DrGrpo => 1.0 / (n * max_tokens as f64),
    }
}

/// The clip range and the KL weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    /// The ratio's lower clip: `1 - epsilon_low`.
    pub epsilon_low: f64,
    /// The ratio's upper clip: `1 + epsilon_high` (DAPO's clip-higher when above `epsilon_low`).
    pub epsilon_high: f64,
    /// Weight of the KL penalty against the reference model.
    pub beta: f64,
}

/// Per-token losses and what the metrics need of them.
pub struct Terms {
    /// `-min(r A, clip(r) A) + β KL`, one per token (a graph to backpropagate).
    pub loss: Tensor,
    /// The k3 KL estimate per token (values only), when β > 0.
    pub kl: Option<Tensor>,
    /// Tokens whose ratio was clipped (below with a negative advantage, above with a positive one).
    pub clipped: usize,
}

/// The per-token GRPO loss of the policy's log-probabilities `logp` (`[n]`, differentiable) against those
/// of the policy that sampled (`old`) and of the reference (`reference`, needed when β > 0), each token
/// carrying its completion's advantage.
pub fn per_token(logp: &Tensor, old: &Tensor, reference: Option<&Tensor>, adv: &Tensor, clip: Clip) -> CResult<Terms> {
    let coef_1 = (logp - old)?.exp()?;
    let coef_2 = coef_1.clamp(1.0 - clip.epsilon_low, 1.0 + clip.epsilon_high)?;
    let mut loss = (coef_1.mul(adv)?.minimum(&coef_2.mul(adv)?)?).neg()?;
    let mut kl = None;
    if clip.beta != 0.0 {
        let reference =
            reference.ok_or_else(|| candle_core::Error::Msg("β > 0 needs reference log-probabilities".into()))?;
        let d = (reference - logp)?;
        let k3 = ((d.exp()? - &d)? - 1.0)?;
        loss = (loss + (&k3 * clip.beta)?)?;
        kl = Some(k3.detach());
    }
    let ratios: Vec<f64> = coef_1.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    let advs: Vec<f64> = adv.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    let clipped = ratios
        .iter()
        .zip(&advs)
        .filter(|&(&r, &a)| (r < 1.0 - clip.epsilon_low && a < 0.0) || (r > 1.0 + clip.epsilon_high && a > 0.0))
        .count();
    Ok(Terms { loss, kl, clipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use serde_json::Value;

    fn flat_f64(v: &Value) -> Vec<f64> {
        v.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect()
    }

    /// The advantages, loss, clipped share and the gradient of the loss with respect to every token's
    /// log-probability equal TRL's for every aggregation, reward scaling, β and clip range, to 1e-6 (f64;
    /// TRL's `nanstd` takes its Bessel factor `n / (n - 1)` in f32, 1e-8 off); a group whose rewards are
    /// equal gets zero advantages.
    #[test]
    fn loss_and_gradient_match_trl() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grpo_loss.json");
        let f: Value = serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap();
        let group = f["group_size"].as_u64().unwrap() as usize;
        let max_tokens = f["max_completion_length"].as_u64().unwrap() as usize;
        let rewards: Vec<f64> = f["rewards"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let lengths: Vec<usize> = f["logps"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().len()).collect();
        let dev = Device::Cpu;
        let tensor = |v: Vec<f64>| Tensor::new(v, &dev).unwrap();
        let (old, reference) = (tensor(flat_f64(&f["old_logps"])), tensor(flat_f64(&f["ref_logps"])));
        let cases = f["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 48);
        for case in cases {
            let name = format!(
                "{} {} β={} ε={}/{}",
                case["loss_type"], case["scale_rewards"], case["beta"], case["epsilon_low"], case["epsilon_high"]
            );
            let scale = match case["scale_rewards"].as_str().unwrap() {
                "group" => ScaleRewards::Group,
                "batch" => ScaleRewards::Batch,
                _ => ScaleRewards::None,
            };
            let aggregation = match case["loss_type"].as_str().unwrap() {
                "grpo" => Aggregation::Grpo,
                "dr_grpo" => Aggregation::DrGrpo,
                _ => Aggregation::Dapo,
            };
            let adv = advantages(&rewards, group, scale);
            let want: Vec<f64> = case["advantages"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            for (a, w) in adv.iter().zip(&want) {
                assert!((a - w).abs() < 1e-6, "{name}: advantage {a} vs {w}");
            }
            assert!(adv[8..].iter().all(|&a| a == 0.0) && flat(&rewards[8..]) && !flat(&rewards[..4]));
            let per_token_adv: Vec<f64> =
                lengths.iter().zip(&adv).flat_map(|(&n, &a)| std::iter::repeat_n(a, n)).collect();
            let weights: Vec<f64> = lengths
                .iter()
                .flat_map(|&n| std::iter::repeat_n(token_weight(aggregation, n, &lengths, max_tokens), n))
                .collect();
            let logp = Var::from_tensor(&tensor(flat_f64(&f["logps"]))).unwrap();
            let clip = Clip {
                epsilon_low: case["epsilon_low"].as_f64().unwrap(),
                epsilon_high: case["epsilon_high"].as_f64().unwrap(),
                beta: case["beta"].as_f64().unwrap(),
            };
            let terms = per_token(logp.as_tensor(), &old, Some(&reference), &tensor(per_token_adv), clip).unwrap();
            let loss = terms.loss.mul(&tensor(weights)).unwrap().sum_all().unwrap();
            let value = loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            let want = case["loss"].as_f64().unwrap();
            assert!((value - want).abs() < 1e-6, "{name}: loss {value} vs {want}");
            let tokens = lengths.iter().sum::<usize>() as f64;
            let share = terms.clipped as f64 / tokens;
            assert!((share - case["clip_fraction"].as_f64().unwrap()).abs() < 1e-6, "{name}: clipped {share}");
            let grads = loss.backward().unwrap();
            let grad: Vec<f64> = grads.get(logp.as_tensor()).unwrap().to_vec1().unwrap();
            for (i, (g, w)) in grad.iter().zip(flat_f64(&case["grad"])).enumerate() {
                assert!((g - w).abs() < 1e-6, "{name}: gradient of token {i}: {g} vs {w}");
            }
        }
    }
}
