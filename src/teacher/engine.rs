//! Continuous batching for the local teacher: sequences decode together, one token each per step; a
//! sequence that ends leaves the batch at once, and new prompts join it between steps (prefilled together
//! apart from the batch, [`Batch::prefill`], their KV cache then right-aligned to the running one's, see
//! [`KvCache::join`]). Each sequence has its own sampling settings and random stream, and attends only to
//! its own positions, so what it samples does not depend on what runs beside it: a prompt's tokens are the
//! same in any batch (log-probabilities up to the products' rounding, which moves with the batch's shape).
//! `forge generate` ([`Local::decode_each`]) and `forge serve` drive this loop.

use std::sync::Arc;

use candle_core::Tensor;

use super::local::{Local, candle};
use super::sampling::{SamplingConfig, log_partition, sample, top_logprobs};
use super::{Finish, Sample};
use crate::error::Result;
use crate::model::KvCache;
use crate::rng::Rng;

/// One sequence: a sample of a prompt being decoded.
pub struct Seq {
    /// The caller's index of the prompt (or request) this is a sample of.
    pub owner: usize,
    /// Which of the prompt's samples.
    pub sample: u32,
    /// How it samples.
    pub cfg: Arc<SamplingConfig>,
    /// New tokens at most.
    pub limit: usize,
    /// Go on past end-of-sequence tokens (vLLM's `ignore_eos`, for load tests): only the limit or a stop
    /// string ends the sequence.
    pub ignore_eos: bool,
    /// Added to the logits of these tokens before the sample is drawn (OpenAI's `logit_bias`); the
    /// log-probabilities recorded stay the model's.
    pub bias: Arc<[(u32, f32)]>,
    rng: Rng,
    /// Tokens in its prompt.
    pub prompt_tokens: u32,
    /// Generated so far (without an end-of-sequence token).
    pub tokens: Vec<u32>,
    /// Log-probability of each generated token under the model.
    pub logprobs: Vec<f32>,
    /// The most likely tokens at each generated position (`top_logprobs` of them; empty when not asked).
    pub top: Vec<Vec<(u32, f32)>>,
    /// Why it ended, once it has.
    pub finish: Option<Finish>,
    /// The end-of-sequence token it ended with, and its log-probability.
    pub eos: Option<u32>,
    /// The end-of-sequence token's log-probability.
    pub eos_logprob: f32,
    /// Which positions of the batch's cache are this sequence's (padding before them is not).
    valid: Vec<bool>,
}

impl Seq {
    /// Sample `sample` of the caller's prompt `owner`, at most `limit` new tokens, drawn from `rng`.
    pub fn new(owner: usize, sample: u32, cfg: Arc<SamplingConfig>, limit: u32, rng: Rng) -> Seq {
        Seq {
            owner,
            sample,
            cfg,
            limit: limit as usize,
            ignore_eos: false,
            bias: Arc::new([]),
            rng,
            prompt_tokens: 0,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            top: Vec::new(),
            finish: None,
            eos: None,
            eos_logprob: 0.0,
            valid: Vec::new(),
        }
    }

    /// The finished sample, its text decoded by `local`'s tokenizer.
    pub fn into_sample(self, local: &Local) -> Result<Sample> {
        Ok(Sample {
            text: local.tokenizer.decode(&self.tokens, false)?,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.tokens.len() as u32,
            tokens: self.tokens.iter().copied().chain(self.eos).collect(),
            finish: self.finish.unwrap_or(Finish::Length),
            logprobs: self.logprobs,
            top_logprobs: self.top,
            reasoning: None,
            error: None,
            server: None,
        })
    }

    /// Padding positions before the sequence's own.
    fn padding(&self) -> usize {
        self.valid.iter().position(|&v| v).unwrap_or(self.valid.len())
    }
}

/// Sequences prefilled and waiting to join a batch, with their KV cache rows and first logits.
pub struct Prefilled {
    cache: KvCache,
    seqs: Vec<Seq>,
    next: Vec<Vec<f32>>,
}

impl Prefilled {
    /// The sequences waiting to join.
    pub fn seqs(&self) -> &[Seq] {
        &self.seqs
    }

    /// The first `rows` sequences, taken out.
    pub fn split_off(&mut self, rows: usize, local: &Local) -> Result<Prefilled> {
        if rows >= self.seqs.len() {
            let empty = Prefilled { cache: KvCache::default(), seqs: Vec::new(), next: Vec::new() };
            return Ok(std::mem::replace(self, empty));
        }
        let dev = local.model.device();
        let pick = |r: std::ops::Range<usize>| Tensor::new(r.map(|i| i as u32).collect::<Vec<_>>(), dev);
        let (head, tail) = (pick(0..rows).map_err(candle)?, pick(rows..self.seqs.len()).map_err(candle)?);
        let first = Prefilled {
            cache: self.cache.select(&head).map_err(candle)?,
            seqs: self.seqs.drain(..rows).collect(),
            next: self.next.drain(..rows).collect(),
        };
        self.cache = self.cache.select(&tail).map_err(candle)?;
        Ok(first)
    }
}

/// The running batch: its sequences, their KV cache (row `i` is `seqs[i]`'s), and the logits each one
/// samples its next token from.
pub struct Batch<'t> {
    local: &'t Local,
    cache: KvCache,
    seqs: Vec<Seq>,
    next: Vec<Vec<f32>>,
}

impl<'t> Batch<'t> {
    /// An empty batch over `local`'s model.
    pub fn new(local: &'t Local) -> Batch<'t> {
        Batch { local, cache: KvCache::default(), seqs: Vec::new(), next: Vec::new() }
    }

    /// Sequences running.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// No sequence running.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The sequences running, in the cache's row order.
    pub fn seqs(&self) -> &[Seq] {
        &self.seqs
    }

    /// Whether a prompt of `n` sequences joins a batch of at most `slots`, after `taken` places went to
    /// other prompts joining at this step: whole prompts that fit in the free places, one at least when
    /// nothing runs (a prompt wider than the batch runs alone).
    pub fn fits(&self, slots: usize, taken: usize, n: usize) -> bool {
        taken + n <= slots.saturating_sub(self.len()) || (self.is_empty() && taken == 0)
    }

    /// Prefill the prompts (token ids, each with its sequences) together, and add their sequences to the
    /// batch; they sample their first token at the next [`Batch::step`].
    pub fn admit(&mut self, prompts: Vec<(Vec<u32>, Vec<Seq>)>) -> Result<()> {
        let ready = self.prefill(prompts)?;
        self.join(ready)
    }

    /// Prefill the prompts (token ids, each with its sequences) together, ready to join the batch, whole
    /// or a few prompts at a time ([`Prefilled::split_off`]): a prefill of many prompts uses the cores
    /// far better than one of a single prompt.
    pub fn prefill(&self, prompts: Vec<(Vec<u32>, Vec<Seq>)>) -> Result<Prefilled> {
        let prompts: Vec<_> = prompts.into_iter().filter(|(_, seqs)| !seqs.is_empty()).collect();
        if prompts.is_empty() {
            return Ok(Prefilled { cache: KvCache::default(), seqs: Vec::new(), next: Vec::new() });
        }
        let ids: Vec<Vec<u32>> = prompts.iter().map(|(ids, _)| ids.clone()).collect();
        let (cache, last, valid) = self.local.prefill(&ids)?;
        let order: Vec<u32> =
            prompts.iter().enumerate().flat_map(|(p, (_, seqs))| std::iter::repeat_n(p as u32, seqs.len())).collect();
        let order = Tensor::new(order, self.local.model.device()).map_err(candle)?;
        let cache = cache.select(&order).map_err(candle)?;
        let next: Vec<Vec<f32>> = last.index_select(&order, 0).and_then(|l| l.to_vec2()).map_err(candle)?;
        let mut all = Vec::with_capacity(next.len());
        for (p, (ids, seqs)) in prompts.into_iter().enumerate() {
            for mut s in seqs {
                s.prompt_tokens = ids.len() as u32;
                s.valid = valid[p].clone();
                all.push(s);
            }
        }
        Ok(Prefilled { cache, seqs: all, next })
    }

    /// Add prefilled sequences to the batch, their cache and the batch's right-aligned.
    pub fn join(&mut self, ready: Prefilled) -> Result<()> {
        if ready.seqs.is_empty() {
            return Ok(());
        }
        let (old, new) = (self.cache.len(), ready.cache.len());
        let width = old.max(new);
        for s in &mut self.seqs {
            s.valid.splice(0..0, std::iter::repeat_n(false, width - old));
        }
        for mut s in ready.seqs {
            s.valid.splice(0..0, std::iter::repeat_n(false, width - new));
            self.seqs.push(s);
        }
        self.cache = self.cache.join(&ready.cache).map_err(candle)?;
        self.next.extend(ready.next);
        Ok(())
    }

    /// One step: every sequence samples its next token; those that end (an end-of-sequence token, a stop
    /// string, their limit) leave the batch and are returned; the others are fed their token.
    pub fn step(&mut self) -> Result<Vec<Seq>> {
        let local = self.local;
        for (seq, logits) in self.seqs.iter_mut().zip(&self.next) {
            let (token, logprob) = if seq.bias.is_empty() {
                sample(logits, &seq.cfg, &mut seq.rng)
            } else {
                let mut biased = logits.clone();
                for &(t, b) in seq.bias.iter() {
                    biased[t as usize] += b;
                }
                let (token, _) = sample(&biased, &seq.cfg, &mut seq.rng);
                (token, (f64::from(logits[token as usize]) - log_partition(logits)) as f32)
            };
            if seq.cfg.top_logprobs > 0 {
                seq.top.push(top_logprobs(logits, seq.cfg.top_logprobs as usize));
            }
            if !seq.ignore_eos && local.tokenizer.eos_ids.contains(&token) {
                (seq.finish, seq.eos, seq.eos_logprob) = (Some(Finish::Stop), Some(token), logprob);
                continue;
            }
            seq.tokens.push(token);
            seq.logprobs.push(logprob);
            if local.ends_with_stop(&seq.tokens, &seq.cfg.stop)? {
                seq.finish = Some(Finish::Stop);
            } else if seq.tokens.len() >= seq.limit {
                seq.finish = Some(Finish::Length);
            }
        }
        let done = self.leave()?;
        if self.seqs.is_empty() {
            return Ok(done);
        }
        for s in &mut self.seqs {
            s.valid.push(true);
        }
        let valid: Vec<Vec<bool>> = self.seqs.iter().map(|s| s.valid.clone()).collect();
        let input: Vec<u32> = self.seqs.iter().map(|s| *s.tokens.last().expect("a token")).collect();
        self.next = local.step(&mut self.cache, input, &valid)?;
        Ok(done)
    }

    /// Drop the sequences `which` picks (a client went away); they sample nothing more.
    pub fn cancel(&mut self, which: impl Fn(&Seq) -> bool) -> Result<()> {
        for s in &mut self.seqs {
            if which(s) {
                s.finish = Some(Finish::Length);
            }
        }
        self.leave().map(drop)
    }

    /// Take the sequences that ended out of the batch, with their cache rows and pending logits, and the
    /// padding no remaining sequence needs.
    fn leave(&mut self) -> Result<Vec<Seq>> {
        if self.seqs.iter().all(|s| s.finish.is_none()) {
            return Ok(Vec::new());
        }
        let (mut done, mut keep, mut next) = (Vec::new(), Vec::new(), Vec::new());
        let logits = std::mem::take(&mut self.next);
        for (i, (s, l)) in std::mem::take(&mut self.seqs).into_iter().zip(logits).enumerate() {
            if s.finish.is_some() {
                done.push(s);
            } else {
                keep.push(i as u32);
                self.seqs.push(s);
                next.push(l);
            }
        }
        self.next = next;
        if self.seqs.is_empty() {
            self.cache = KvCache::default();
            return Ok(done);
        }
        let from = self.seqs.iter().map(Seq::padding).min().unwrap_or(0);
        let keep = Tensor::new(keep, self.local.model.device()).map_err(candle)?;
        self.cache = self.cache.compact(&keep, from).map_err(candle)?;
        for s in &mut self.seqs {
            s.valid.drain(..from);
        }
        Ok(done)
    }
}
