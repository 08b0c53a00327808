//! Choosing the next token: greedy, or temperature with top-k, top-p and min-p truncation. Each sample
//! draws from its own stream, seeded by (run seed, problem id, sample index), so a sample does not depend
//! on the batch it ran in, and a resumed run reproduces an uninterrupted one.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// How samples are drawn: temperature and truncation, length, seed, stop strings, log-probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 picks the most likely token (greedy)
    #[arg(long, default_value_t = DEFAULT.temperature)]
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability adds up to this (1: off)
    #[arg(long, default_value_t = DEFAULT.top_p)]
    pub top_p: f32,
    /// Keep only the k most likely tokens
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Drop tokens less likely than this share of the most likely one (0: off)
    #[arg(long, default_value_t = DEFAULT.min_p)]
    pub min_p: f32,
    /// Stop after this many generated tokens (`finish_reason = length`)
    #[arg(long = "max-tokens", default_value_t = DEFAULT.max_new_tokens, value_name = "N")]
    pub max_new_tokens: u32,
    /// Seed of the run; each sample's stream derives from it, the problem id and the sample index
    #[arg(long, default_value_t = DEFAULT.seed)]
    pub seed: u64,
    /// Stop when the text ends with this string (repeatable); the end-of-sequence tokens always stop
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Also record the K most likely tokens and their log-probabilities at every generated position
    /// (for distillation)
    #[arg(long, default_value_t = DEFAULT.top_logprobs, value_name = "K")]
    pub top_logprobs: u32,
    /// Beam search with this many beams (local teacher; above 1 the search is deterministic:
    /// temperature, top-p, top-k and min-p do not apply, and `-n` is how many of the best beams to keep)
    #[arg(long, default_value_t = DEFAULT.beams, value_name = "W")]
    pub beams: u32,
    /// Beam search scores a sequence `sum of log-probabilities / length^P` (transformers' default 1;
    /// 0 ranks by likelihood alone, and one beam is then greedy decoding)
    #[arg(long, default_value_t = DEFAULT.length_penalty, value_name = "P")]
    pub length_penalty: f32,
}

const DEFAULT: SamplingConfig = SamplingConfig {
    temperature: 0.7,
    top_p: 1.0,
    top_k: None,
    min_p: 0.0,
    max_new_tokens: 1024,
    seed: 1,
    stop: Vec::new(),
    top_logprobs: 0,
    beams: 1,
    length_penalty: 1.0,
};

impl Default for SamplingConfig {
    fn default() -> Self {
        DEFAULT
    }
}

/// The random stream of one sample.
pub fn stream(seed: u64, problem: &str, sample: u32) -> Rng {
    Rng::for_row(seed ^ xxhash_rust::xxh3::xxh3_64(problem.as_bytes()), "sample", u64::from(sample))
}

/// `log Σ exp(logits)`, computed stably: a token's log-probability is its logit minus this.
pub fn log_partition(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max as f64 + logits.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>().ln()
}

/// The `k` most likely tokens of `logits` with their log-probabilities, most likely first.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let log_z = log_partition(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    order.select_nth_unstable_by(k - 1, by_logit);
    order.truncate(k);
    order.sort_unstable_by(by_logit);
    order.into_iter().map(|t| (t as u32, (logits[t] as f64 - log_z) as f32)).collect()
}

/// Pick the next token from `logits`; returns it with its log-probability under the model (before
/// temperature and truncation: what distillation needs).
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut Rng) -> (u32, f32) {
    let log_z = log_partition(logits);
    let logprob = |t: usize| (logits[t] as f64 - log_z) as f32;
    if cfg.temperature <= 0.0 {
        let best = logits.iter().enumerate().fold(0, |b, (i, &l)| if l > logits[b] { i } else { b });
        return (best as u32, logprob(best));
    }
    let t = f64::from(cfg.temperature);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let keep_k = cfg.top_k.map_or(logits.len(), |k| (k as usize).clamp(1, logits.len()));
    if keep_k < logits.len() {
        order.select_nth_unstable_by(keep_k - 1, |&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order.truncate(keep_k);
    }
    order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let top = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - top) / t).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut keep = probs.len();
    if cfg.min_p > 0.0 {
        let floor = f64::from(cfg.min_p) * probs[0];
        keep = keep.min(probs.iter().position(|&p| p < floor).unwrap_or(probs.len()).max(1));
    }
    if cfg.top_p < 1.0 {
        let mut cum = 0.0;
        let cut = probs.iter().position(|&p| {
            cum += p;
            cum >= f64::from(cfg.top_p)
        });
        keep = keep.min(cut.map_or(probs.len(), |i| i + 1));
    }
    let mass: f64 = probs[..keep].iter().sum();
    let mut u = rng.uniform() * mass;
    for (i, &p) in probs[..keep].iter().enumerate() {
        if u < p {
            return (order[i] as u32, logprob(order[i]));
        }
        u -= p;
    }
    (order[keep - 1] as u32, logprob(order[keep - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(cfg: &SamplingConfig, logits: &[f32], n: usize) -> Vec<usize> {
        let mut counts = vec![0; logits.len()];
        let mut rng = stream(cfg.seed, "p", 0);
        for _ in 0..n {
            counts[sample(logits, cfg, &mut rng).0 as usize] += 1;
        }
        counts
    }

    #[test]
    fn greedy_truncation_and_frequencies() {
        let logits = [1.0f32, 3.0, 2.0, 0.0];
        let greedy = SamplingConfig { temperature: 0.0, ..Default::default() };
        let (tok, lp) = sample(&logits, &greedy, &mut stream(1, "p", 0));
        assert_eq!(tok, 1);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((lp - (3f32.exp() / z).ln()).abs() < 1e-5);
        let t1 = SamplingConfig { temperature: 1.0, ..Default::default() };
        let counts = draws(&t1, &logits, 20_000);
        for (i, c) in counts.iter().enumerate() {
            let p = logits[i].exp() / z;
            assert!((*c as f32 / 20_000.0 - p).abs() < 0.015, "token {i}: {c} vs p {p}");
        }
        let top2 = SamplingConfig { top_k: Some(2), ..t1.clone() };
        let c = draws(&top2, &logits, 2_000);
        assert_eq!(c[0] + c[3], 0, "{c:?}");
        let top_p = SamplingConfig { top_p: 0.5, ..t1.clone() };
        assert_eq!(draws(&top_p, &logits, 500)[1], 500, "the top token alone holds over half the mass");
        let min_p = SamplingConfig { min_p: 0.3, ..t1.clone() }; // keeps p >= 0.3 p_max: tokens 1 and 2
        let c = draws(&min_p, &logits, 2_000);
        assert!(c[0] + c[3] == 0 && c[2] > 0, "{c:?}");
    }

    #[test]
    fn streams_depend_on_problem_and_sample_only() {
        let logits = [0.0f32; 50];
        let cfg = SamplingConfig { temperature: 1.0, ..Default::default() };
        let run = |p: &str, k: u32| {
            let mut rng = stream(7, p, k);
            (0..20).map(|_| sample(&logits, &cfg, &mut rng).0).collect::<Vec<_>>()
        };
        assert_eq!(run("a", 0), run("a", 0));
        assert_ne!(run("a", 0), run("a", 1));
        assert_ne!(run("a", 0), run("b", 0));
    }
}
