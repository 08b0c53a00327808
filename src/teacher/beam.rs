//! Beam search over one prompt, as transformers' `generate(num_beams=W)` does it (its defaults:
//! `early_stopping=False`, `length_penalty=1.0`): each step extends the running beams by every token,
//! keeps the `K = max(2, 1 + #eos) · W` best continuations by summed log-probability, continues the best
//! `W` that did not end, and files those of the top `W` that ended (end-of-sequence, a stop string, or the
//! length limit) as hypotheses scored `sum / length^penalty` (length counts the end token), keeping the
//! best `W`. It stops when `W` hypotheses are filed and the best running beam, at its present length,
//! scores no better than the worst of them, or when the length limit is reached.
//!
//! This module is the bookkeeping only; [`crate::teacher::local`] feeds it the logits of every beam of
//! every prompt in one batch and reorders the KV cache by the parents it returns.

use super::Finish;
use super::sampling::log_partition;

/// A running beam: the tokens so far and their summed log-probability.
#[derive(Debug, Clone, Default)]
struct Beam {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    sum: f64,
}

/// A finished hypothesis.
#[derive(Debug, Clone)]
pub struct Hypothesis {
    /// The generated tokens, without the end-of-sequence token it ended with (`eos`).
    pub tokens: Vec<u32>,
    /// Log-probability of each token.
    pub logprobs: Vec<f32>,
    /// The end-of-sequence token it ended with, if it did.
    pub eos: Option<u32>,
    /// `sum of log-probabilities / length^penalty`.
    pub score: f64,
    /// Why it ended.
    pub finish: Finish,
}

/// The search of one prompt.
#[derive(Debug)]
pub struct Search {
    width: usize,
    length_penalty: f64,
    max_new_tokens: usize,
    running: Vec<Beam>,
    /// Best first, at most `width`.
    finished: Vec<Hypothesis>,
    improvable: bool,
    /// Next-token distributions computed (one per running beam per step): the compute spent.
    pub decoded: u64,
}

/// How a candidate continuation ends, if it does.
pub enum End {
    /// An end-of-sequence token.
    Eos,
    /// A stop string.
    Stop,
}

impl Search {
    /// A search of `width` beams, scoring ended ones `sum / length^length_penalty`.
    pub fn new(width: usize, length_penalty: f32, max_new_tokens: usize) -> Search {
        Search {
            width: width.max(1),
            length_penalty: f64::from(length_penalty),
            max_new_tokens,
            running: vec![Beam::default()],
            finished: Vec::new(),
            improvable: true,
            decoded: 0,
        }
    }

    /// No running beam can beat the hypotheses filed (or none runs, or no token may be generated).
    pub fn done(&self) -> bool {
        !self.improvable || self.running.is_empty() || self.max_new_tokens == 0
    }

    /// The last token of running beam `i` (the model's next input).
    pub fn last(&self, i: usize) -> u32 {
        *self.running[i].tokens.last().expect("a running beam has generated a token")
    }

    /// One step: `logits[i]` are the next-token logits of running beam `i`; `ends(tokens, token)` says
    /// whether a beam of `tokens` ending with `token` ends there. Returns the running beam each new
    /// running beam continues (what to reorder the KV cache by); empty once done.
    pub fn step(
        &mut self,
        logits: &[&[f32]],
        eos_count: usize,
        ends: impl Fn(&[u32], u32) -> Option<End>,
    ) -> Vec<usize> {
        debug_assert_eq!(logits.len(), self.running.len());
        self.decoded += logits.len() as u64;
        let keep = 2usize.max(1 + eos_count) * self.width;
        // the best `keep` continuations of each beam hold the best `keep` of all
        let mut candidates: Vec<(f64, usize, u32, f32)> = Vec::new();
        for (b, row) in logits.iter().enumerate() {
            let log_z = log_partition(row);
            let mut order: Vec<u32> = (0..row.len() as u32).collect();
            let by = |a: &u32, c: &u32| row[*c as usize].total_cmp(&row[*a as usize]).then(a.cmp(c));
            if keep < order.len() {
                order.select_nth_unstable_by(keep - 1, by);
                order.truncate(keep);
            }
            for t in order {
                let lp = (f64::from(row[t as usize]) - log_z) as f32;
                candidates.push((self.running[b].sum + f64::from(lp), b, t, lp));
            }
        }
        candidates.sort_unstable_by(|a, c| c.0.total_cmp(&a.0).then(a.1.cmp(&c.1)).then(a.2.cmp(&c.2)));
        candidates.truncate(keep);
        let length = self.running[0].tokens.len() + 1;
        let at_limit = length >= self.max_new_tokens;
        let mut next = Vec::with_capacity(self.width);
        let mut parents = Vec::with_capacity(self.width);
        let denominator = (length as f64).powf(self.length_penalty);
        for (rank, &(sum, b, t, lp)) in candidates.iter().enumerate() {
            let parent = &self.running[b];
            let end = ends(&parent.tokens, t);
            if end.is_none() && !at_limit {
                if next.len() < self.width {
                    let mut beam = parent.clone();
                    beam.tokens.push(t);
                    beam.logprobs.push(lp);
                    beam.sum = sum;
                    next.push(beam);
                    parents.push(b);
                }
                continue;
            }
            // only the top `width` may be filed; the rest were kept so that `width` beams can run on
            if rank >= self.width || !self.improvable {
                continue;
            }
            let mut h = Hypothesis {
                tokens: parent.tokens.clone(),
                logprobs: parent.logprobs.clone(),
                eos: None,
                score: sum / denominator,
                finish: if end.is_some() { Finish::Stop } else { Finish::Length },
            };
            h.logprobs.push(lp);
            match end {
                Some(End::Eos) => h.eos = Some(t),
                _ => h.tokens.push(t),
            }
            self.finished.push(h);
        }
        self.finished.sort_by(|a, c| c.score.total_cmp(&a.score));
        self.finished.truncate(self.width);
        self.running = next;
        if at_limit {
            self.running.clear();
        }
        if let (Some(best), true) = (self.running.first(), self.finished.len() == self.width) {
            let worst = self.finished.last().expect("full").score;
            self.improvable &= best.sum / denominator > worst;
        }
        if self.done() { Vec::new() } else { parents }
    }

    /// The hypotheses, best first.
    pub fn finish(self) -> Vec<Hypothesis> {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits over 3 tokens (token 2 ends) that make greedy choose a short, unlikely path and beam search
    /// a longer, likelier one.
    #[test]
    fn wider_beams_find_the_likelier_sequence() {
        // step 1: token 0 (p .5) or 1 (p .4); after 0: flat (each ~.33); after 1: token 2 (end) at p .9
        let ln = |ps: [f64; 3]| ps.map(|p| p.ln() as f32);
        let logits = |tokens: &[u32]| match tokens {
            [] => ln([0.5, 0.4, 0.1]),
            [0, ..] => ln([0.34, 0.33, 0.33]),
            [1] => ln([0.05, 0.05, 0.9]),
            _ => ln([0.05, 0.05, 0.9]),
        };
        let ends = |_: &[u32], t: u32| (t == 2).then_some(End::Eos);
        let run = |width: usize| {
            let mut s = Search::new(width, 0.0, 3);
            while !s.done() {
                let rows: Vec<[f32; 3]> = s.running.iter().map(|b| logits(&b.tokens)).collect();
                let refs: Vec<&[f32]> = rows.iter().map(<[f32; 3]>::as_slice).collect();
                s.step(&refs, 1, ends);
            }
            s.finish()
        };
        let greedy = run(1);
        assert_eq!(greedy[0].tokens, [0, 0, 0], "greedy follows token 0 to the length limit");
        let wide = run(2);
        assert_eq!((wide[0].tokens.as_slice(), wide[0].eos), ([1u32].as_slice(), Some(2)));
        assert!((wide[0].score - (0.4f64 * 0.9).ln()).abs() < 1e-5);
        assert!(wide[0].score > greedy[0].score);
    }
}
