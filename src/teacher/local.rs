//! The local teacher: a Hugging Face checkpoint run with forge's own decoder. Prompts are prefilled
//! together (left-padded); each prompt's KV cache is then copied for its `n` samples, which decode with
//! the other running samples, one token per step, in a continuously refilled batch ([`super::engine`]).

use std::path::Path;

use candle_core::{IndexOp, Tensor};

use super::beam::{End, Search};
use super::engine::{Batch, Seq};
use super::sampling::{SamplingConfig, log_partition, stream, top_logprobs};
use super::{Prompt, Sample, Teacher};
use crate::error::{Error, Result};
use crate::model::chat::ChatTemplate;
use crate::model::tokenizer::Tokenizer;
use crate::model::{Checkpoint, Decoder, KvCache, ModelConfig, attention_mask, positions};
use crate::progress::Progress;

/// The local teacher: a checkpoint decoded with candle on the CPU (or a GPU), with continuous batching,
/// beam search and budget forcing.
pub struct Local {
    id: String,
    config: ModelConfig,
    pub(super) model: Decoder,
    pub(super) tokenizer: Tokenizer,
    chat: ChatTemplate,
    /// Generated so far, and since when: the rate shown in the progress line.
    tokens: u64,
    started: std::time::Instant,
}

/// A token's log-probability, and the most likely tokens at its place with theirs ([`Local::score`]).
pub type Scored = (f32, Vec<(u32, f32)>);

pub(super) fn candle(e: candle_core::Error) -> Error {
    Error::usage(format!("model: {e}"))
}

impl Local {
    /// Load the checkpoint in `dir` (a LoRA adapter loads its base with the adapter attached).
    pub fn open(dir: &Path) -> Result<Local> {
        let device = crate::model::device();
        // Tokenizer and template first: they fail fast, before the weights load.
        let (tokenizer, chat) = (Tokenizer::from_dir(dir)?, ChatTemplate::from_dir(dir)?);
        let (config, model) = Checkpoint::load_frozen(dir, &device)?;
        if config.classifier_labels().is_some() {
            return Err(Error::usage(format!(
                "`{}` is a sequence classifier (a reward model): it scores replies, it does not write them",
                dir.display()
            ))
            .with_hint("give it to `forge eval --reward-model`"));
        }
        Local::with_model(dir, config, model, tokenizer, chat)
    }

    /// A teacher over `model` (weights already loaded; the RL trainer's policy), reading text with the
    /// tokenizer and chat template of `dir`.
    pub fn with_model(
        dir: &Path,
        config: ModelConfig,
        model: Decoder,
        tokenizer: Tokenizer,
        chat: ChatTemplate,
    ) -> Result<Local> {
        if tokenizer.eos_ids.is_empty() {
            return Err(Error::usage(format!("`{}`: no end-of-sequence token found", dir.display()))
                .with_hint("set `eos_token_id` in config.json or generation_config.json"));
        }
        Ok(Local {
            id: format!("local:{}", dir.display()),
            config,
            model,
            tokenizer,
            chat,
            tokens: 0,
            started: std::time::Instant::now(),
        })
    }

    /// The model's vocabulary size (token ids are below it).
    pub fn vocab(&self) -> usize {
        self.config.vocab_size
    }

    /// The model's context: prompt and new tokens together, at most.
    pub fn context(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Each token of `ids` after the ones before it (the first has none): its log-probability and the `top`
    /// most likely tokens at its place, as from sampling's logits (what lm-eval-harness's loglikelihood
    /// asks of a server through `echo`). The head runs over 256 places at a time.
    pub fn score(&self, ids: &[u32], top: usize) -> Result<Vec<Scored>> {
        let t = ids.len();
        if t < 2 {
            return Ok(Vec::new());
        }
        let dev = self.model.device();
        let valid = vec![vec![true; t]];
        let x = Tensor::new(ids, dev).and_then(|x| x.unsqueeze(0)).map_err(candle)?;
        let pos = positions(&valid, 0, dev).map_err(candle)?;
        let hidden = self.model.hidden(&x, &pos, &attention_mask(&valid, 0, t), None).map_err(candle)?;
        let hidden = hidden.squeeze(0).map_err(candle)?;
        let mut out = Vec::with_capacity(t - 1);
        for start in (0..t - 1).step_by(256) {
            let rows = 256.min(t - 1 - start);
            let logits = hidden.narrow(0, start, rows).and_then(|h| self.model.head(&h)).map_err(candle)?;
            for (i, row) in logits.to_vec2::<f32>().map_err(candle)?.iter().enumerate() {
                let next = ids[start + i + 1] as usize;
                out.push(((row[next] as f64 - log_partition(row)) as f32, top_logprobs(row, top)));
            }
        }
        Ok(out)
    }

    /// The token ids of a prompt ([`super::render`]).
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.tokenizer.encode(&super::render(&self.chat, prompt)?)
    }

    /// Whether the text of `tokens` ends with one of the `stop` strings. Only the last tokens are decoded:
    /// a token is at least one byte, so a stop string of L bytes lies within the last L tokens, and a few
    /// more cover a character split over tokens (decoding the whole completion every step was O(T²)).
    pub(super) fn ends_with_stop(&self, tokens: &[u32], stop: &[String]) -> Result<bool> {
        let Some(longest) = stop.iter().map(String::len).max() else { return Ok(false) };
        let tail = &tokens[tokens.len().saturating_sub(longest + 4)..];
        let text = self.tokenizer.decode(tail, false)?;
        Ok(stop.iter().any(|s| text.ends_with(s.as_str())))
    }

    /// Every prompt with its new tokens fits the model's context.
    fn check_context(&self, prompts: &[Prompt], ids: &[Vec<u32>], cfg: &SamplingConfig) -> Result<()> {
        let context = self.config.max_position_embeddings;
        for (p, row) in prompts.iter().zip(ids) {
            if row.len() + cfg.max_new_tokens as usize > context {
                return Err(Error::usage(format!(
                    "problem `{}`: {} prompt tokens + {} new tokens exceed the model's context of {context}",
                    p.key,
                    row.len(),
                    cfg.max_new_tokens
                ))
                .with_hint("lower `--max-tokens`, or leave the problem out"));
            }
        }
        Ok(())
    }

    /// Prefill the distinct prompts together, left-padded: the cache, the logits of each prompt's last
    /// position, and which positions of each row are real.
    pub(super) fn prefill(&self, ids: &[Vec<u32>]) -> Result<(KvCache, Tensor, Vec<Vec<bool>>)> {
        let (model, dev) = (&self.model, self.model.device());
        let width = ids.iter().map(Vec::len).max().unwrap_or(0);
        let pad = self.tokenizer.eos_ids[0];
        let padded: Vec<Vec<u32>> =
            ids.iter().map(|r| std::iter::repeat_n(pad, width - r.len()).chain(r.iter().copied()).collect()).collect();
        let valid: Vec<Vec<bool>> = ids
            .iter()
            .map(|r| std::iter::repeat_n(false, width - r.len()).chain(std::iter::repeat_n(true, r.len())).collect())
            .collect();
        let mut cache = KvCache::default();
        let input = Tensor::new(padded, dev).map_err(candle)?;
        let hidden = model
            .hidden(
                &input,
                &positions(&valid, 0, dev).map_err(candle)?,
                &attention_mask(&valid, 0, width),
                Some(&mut cache),
            )
            .map_err(candle)?;
        // logits of the last position only: a real vocabulary over every prompt position would be
        // gigabytes
        let last = hidden.i((.., width - 1, ..)).and_then(|h| model.head(&h)).map_err(candle)?;
        Ok((cache, last, valid))
    }

    /// The samples of `prompts`, at most `slots` decoding at once: as samples finish, the next prompts
    /// join the batch in their place. Each prompt's samples go to `done` as soon as its last one ends.
    pub fn decode_each(
        &self,
        prompts: &[Prompt],
        cfg: &SamplingConfig,
        slots: usize,
        done: &mut dyn FnMut(usize, Vec<Sample>) -> Result<()>,
    ) -> Result<()> {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.prompt_ids(p)).collect::<Result<_>>()?;
        self.check_context(prompts, &ids, cfg)?;
        self.decode_ids(prompts, &ids, cfg, slots, done)
    }

    /// [`Local::decode_each`] from prompts already tokenized: `ids[i]` is the i-th prompt's (whose
    /// messages are not read). On-policy distillation samples the student from its training rows so.
    pub fn decode_ids(
        &self,
        prompts: &[Prompt],
        ids: &[Vec<u32>],
        cfg: &SamplingConfig,
        slots: usize,
        done: &mut dyn FnMut(usize, Vec<Sample>) -> Result<()>,
    ) -> Result<()> {
        let shared = std::sync::Arc::new(cfg.clone());
        let seqs = |i: usize| -> Vec<Seq> {
            let p = &prompts[i];
            let seq = |k| Seq::new(i, k, shared.clone(), p.limit(cfg), stream(cfg.seed, &p.key, p.first_sample + k));
            (0..p.n).map(seq).collect()
        };
        let mut batch = Batch::new(self);
        let mut ready = batch.prefill(Vec::new())?;
        let mut finished: Vec<Vec<Option<Sample>>> = prompts.iter().map(|p| vec![None; p.n as usize]).collect();
        let mut left: Vec<u32> = prompts.iter().map(|p| p.n).collect();
        let mut next = 0;
        loop {
            let free = slots.saturating_sub(batch.len());
            // the next prompts are prefilled together, a batch's worth (one prompt at least), and join as
            // slots free up
            if ready.seqs().is_empty() && free > 0 && next < prompts.len() {
                let mut group = Vec::new();
                let mut samples = 0;
                while let Some(p) = prompts.get(next) {
                    if p.n == 0 {
                        done(next, Vec::new())?;
                    } else if samples + p.n as usize <= slots || group.is_empty() {
                        samples += p.n as usize;
                        group.push((ids[next].clone(), seqs(next)));
                    } else {
                        break;
                    }
                    next += 1;
                }
                ready = batch.prefill(group)?;
            }
            let mut rows = 0;
            while let Some(s) = ready.seqs().get(rows) {
                let n = prompts[s.owner].n as usize;
                if !batch.fits(slots, rows, n) {
                    break;
                }
                rows += n;
            }
            if rows > 0 {
                batch.join(ready.split_off(rows, self)?)?;
            }
            if batch.is_empty() {
                return Ok(());
            }
            for seq in batch.step()? {
                let (p, k) = (seq.owner, seq.sample as usize);
                finished[p][k] = Some(seq.into_sample(self)?);
                left[p] -= 1;
                if left[p] == 0 {
                    done(p, std::mem::take(&mut finished[p]).into_iter().map(|s| s.expect("finished")).collect())?;
                }
            }
        }
    }

    /// One decoding step: `tokens[r]` fed to row `r` of the batch after the cached positions (`valid[r]`
    /// marks the real ones, the new one last); the next-token logits of each row.
    pub(super) fn step(&self, cache: &mut KvCache, tokens: Vec<u32>, valid: &[Vec<bool>]) -> Result<Vec<Vec<f32>>> {
        let (dev, past) = (self.model.device(), cache.len());
        let input = Tensor::new(tokens, dev).and_then(|t| t.unsqueeze(1)).map_err(candle)?;
        let logits = self
            .model
            .forward(
                &input,
                &positions(valid, past, dev).map_err(candle)?,
                &attention_mask(valid, past, 1),
                Some(cache),
            )
            .map_err(candle)?;
        logits.squeeze(1).and_then(|l| l.to_vec2()).map_err(candle)
    }

    /// Beam search ([`super::beam`]) with `cfg.beams` beams per prompt, every beam of every prompt in one
    /// batch: the prompts are prefilled together, then each step feeds the running beams' last tokens and
    /// reorders the KV cache by their parents. A prompt's `n` samples are its `n` best hypotheses.
    fn decode_beams(&self, prompts: &[Prompt], cfg: &SamplingConfig) -> Result<Vec<Vec<Sample>>> {
        let dev = self.model.device().clone();
        let width = cfg.beams as usize;
        if let Some(p) = prompts.iter().find(|p| p.n as usize > width) {
            return Err(Error::usage(format!("{} samples of problem `{}` from {width} beams", p.n, p.key))
                .with_hint("`-n` keeps the n best beams: at most `--beams`"));
        }
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.prompt_ids(p)).collect::<Result<_>>()?;
        self.check_context(prompts, &ids, cfg)?;
        let (mut cache, last, valid) = self.prefill(&ids)?;
        let max_new = cfg.max_new_tokens as usize;
        let mut searches: Vec<Search> =
            prompts.iter().map(|_| Search::new(width, cfg.length_penalty, max_new)).collect();
        // the batch: (prompt, beam) per row, and each row's real positions
        let mut rows: Vec<(usize, usize)> = (0..prompts.len()).map(|p| (p, 0)).collect();
        let mut valid = valid;
        let mut next: Vec<Vec<f32>> = last.to_vec2().map_err(candle)?;
        let eos = &self.tokenizer.eos_ids;
        let ends = |tokens: &[u32], t: u32| -> Option<End> {
            if eos.contains(&t) {
                return Some(End::Eos);
            }
            let mut all = tokens.to_vec();
            all.push(t);
            // a decoding error here is a token the tokenizer cannot show: not a stop string
            self.ends_with_stop(&all, &cfg.stop).unwrap_or(false).then_some(End::Stop)
        };
        loop {
            let (mut keep, mut new_rows, mut new_valid) = (Vec::new(), Vec::new(), Vec::new());
            let mut at = 0;
            for (p, search) in searches.iter_mut().enumerate() {
                let count = rows[at..].iter().take_while(|r| r.0 == p).count();
                if count == 0 {
                    continue;
                }
                let logits: Vec<&[f32]> = next[at..at + count].iter().map(Vec::as_slice).collect();
                let parents = search.step(&logits, eos.len(), ends);
                for (beam, parent) in parents.into_iter().enumerate() {
                    keep.push((at + parent) as u32);
                    new_rows.push((p, beam));
                    let mut v = valid[at + parent].clone();
                    v.push(true);
                    new_valid.push(v);
                }
                at += count;
            }
            if keep.is_empty() {
                break;
            }
            cache = cache.select(&Tensor::new(keep, &dev).map_err(candle)?).map_err(candle)?;
            (rows, valid) = (new_rows, new_valid);
            let input: Vec<u32> = rows.iter().map(|&(p, b)| searches[p].last(b)).collect();
            next = self.step(&mut cache, input, &valid)?;
        }
        let mut out = Vec::with_capacity(prompts.len());
        for ((prompt, search), ids) in prompts.iter().zip(searches).zip(&ids) {
            let decoded = search.decoded;
            let mut samples = Vec::with_capacity(prompt.n as usize);
            for (rank, h) in search.finish().into_iter().take(prompt.n as usize).enumerate() {
                let server =
                    serde_json::json!({"beams": width, "rank": rank, "score": h.score, "decoded_tokens": decoded});
                samples.push(Sample {
                    text: self.tokenizer.decode(&h.tokens, false)?,
                    prompt_tokens: ids.len() as u32,
                    completion_tokens: h.tokens.len() as u32,
                    tokens: h.tokens.iter().copied().chain(h.eos).collect(),
                    finish: h.finish,
                    logprobs: h.logprobs[..h.tokens.len()].to_vec(),
                    top_logprobs: Vec::new(),
                    reasoning: None,
                    error: None,
                    server: Some(server.to_string()),
                });
            }
            out.push(samples);
        }
        Ok(out)
    }
}

impl Teacher for Local {
    fn id(&self) -> &str {
        &self.id
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        Some(&self.tokenizer)
    }

    fn generate_each(
        &mut self,
        prompts: &[Prompt],
        sampling: &SamplingConfig,
        slots: usize,
        progress: &Progress,
        done: &mut dyn FnMut(usize, Vec<Sample>) -> Result<()>,
    ) -> Result<()> {
        let (before, started) = (self.tokens, self.started);
        let mut tokens = 0;
        let mut count = |samples: &[Sample]| {
            tokens += samples.iter().map(|s| u64::from(s.completion_tokens)).sum::<u64>();
            progress.inc(samples.len() as u64);
            progress.message(&rate(before + tokens, started));
        };
        if sampling.beams > 1 {
            // beam search decodes static batches: as many prompts as sampling would decode at once
            let mut at = 0;
            while at < prompts.len() {
                let (mut end, mut used) = (at + 1, prompts[at].n as usize);
                while end < prompts.len() && used.saturating_add(prompts[end].n as usize) <= slots {
                    (used, end) = (used + prompts[end].n as usize, end + 1);
                }
                for (i, samples) in self.decode_beams(&prompts[at..end], sampling)?.into_iter().enumerate() {
                    count(&samples);
                    done(at + i, samples)?;
                }
                at = end;
            }
        } else {
            self.decode_each(prompts, sampling, slots, &mut |p, samples| {
                count(&samples);
                done(p, samples)
            })?;
        }
        self.tokens += tokens;
        Ok(())
    }
}

/// The progress line's generation rate.
fn rate(tokens: u64, since: std::time::Instant) -> String {
    format!("{:.0} tok/s", tokens as f64 / since.elapsed().as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat::Message;

    fn teacher() -> Local {
        Local::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher")).unwrap()
    }

    fn prompts(texts: &[&str], n: u32) -> Vec<Prompt> {
        let prompt = |t: &&str| Prompt {
            key: t.to_string(),
            messages: vec![Message::new("user", t)],
            prefill: String::new(),
            n,
            max_new_tokens: None,
            first_sample: 0,
        };
        texts.iter().map(prompt).collect()
    }

    /// One beam ranked by likelihood alone is greedy decoding: the same tokens, log-probabilities and
    /// finish, for prompts of different lengths decoded in one batch.
    #[test]
    fn one_beam_is_greedy() {
        let mut t = teacher();
        let ps = prompts(&["What is 3 + 4?", "Compute 12 * 5 - 7.", "1+1"], 1);
        let greedy = SamplingConfig { temperature: 0.0, max_new_tokens: 60, ..Default::default() };
        let beam = SamplingConfig { beams: 1, length_penalty: 0.0, ..greedy.clone() };
        let (a, b) = (t.generate(&ps, &greedy, &Progress::hidden()).unwrap(), t.decode_beams(&ps, &beam).unwrap());
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert_eq!((&x.tokens, x.finish), (&y.tokens, y.finish));
            assert!(x.logprobs.iter().zip(&y.logprobs).all(|(p, q)| (p - q).abs() < 1e-4));
        }
    }

    /// A random model over the tiny teacher's byte vocabulary, its weights spread enough that the next
    /// token is uncertain (a trained model is too sure of itself for a narrow search to go wrong).
    fn uncertain() -> Local {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher");
        let config: ModelConfig = serde_json::from_value(serde_json::json!({
            "model_type": "qwen2", "vocab_size": 259, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "tie_word_embeddings": true, "max_position_embeddings": 512,
            "bos_token_id": 256, "eos_token_id": 258,
        }))
        .unwrap();
        let ck = Checkpoint::random(&config, 5, &candle_core::Device::Cpu).unwrap();
        for (name, var) in ck.vars.data().lock().unwrap().iter() {
            if !name.ends_with("norm.weight") {
                var.set(&(var.as_tensor() * 6.0).unwrap()).unwrap();
            }
        }
        let (tokenizer, chat) = (Tokenizer::from_dir(&dir).unwrap(), ChatTemplate::from_dir(&dir).unwrap());
        Local::with_model(&dir, config, ck.model, tokenizer, chat).unwrap()
    }

    /// Continuous batching changes no sample: prompts of different lengths, sample counts and budgets
    /// decoded three samples at a time (prompts joining a running batch whose cache is shorter and longer
    /// than theirs, padding trimmed as samples leave) give the tokens, log-probabilities and top
    /// log-probabilities of each prompt decoded alone; short prompts overtake long ones.
    #[test]
    fn continuous_batching_equals_decoding_each_prompt_alone() {
        let mut t = uncertain();
        let texts = ["What is 2 + 2?", "7*8", "A much longer prompt, with many more tokens than the others.", "ok"];
        let mut ps = prompts(&[texts.as_slice(), texts.as_slice()].concat(), 1);
        for (i, p) in ps.iter_mut().enumerate() {
            p.max_new_tokens = Some([40, 3, 25, 7, 12, 60, 5, 30][i]);
            p.n = [1, 2, 1, 3, 1, 1, 2, 1][i];
            p.key = format!("{i}");
        }
        let cfg = SamplingConfig { temperature: 1.0, max_new_tokens: 64, top_logprobs: 3, ..Default::default() };
        let (mut got, mut order) = (vec![Vec::new(); ps.len()], Vec::new());
        t.decode_each(&ps, &cfg, 3, &mut |p, s| {
            order.push(p);
            got[p] = s;
            Ok(())
        })
        .unwrap();
        assert!(order.windows(2).any(|w| w[0] > w[1]), "prompts finished in order: {order:?}");
        for (p, got) in ps.iter().zip(&got) {
            let alone = &t.generate(std::slice::from_ref(p), &cfg, &Progress::hidden()).unwrap()[0];
            assert_eq!(got.len(), p.n as usize);
            for (a, b) in got.iter().zip(alone) {
                assert_eq!((&a.text, &a.tokens, a.finish), (&b.text, &b.tokens, b.finish), "prompt {}", p.key);
                // the products' rounding depends on the batch's shape (static batches too): within 1e-5
                let close = |x: &f32, y: &f32| (x - y).abs() < 1e-5;
                assert!(a.logprobs.iter().zip(&b.logprobs).all(|(x, y)| close(x, y)), "prompt {}", p.key);
                let tops = a.top_logprobs.iter().flatten().zip(b.top_logprobs.iter().flatten());
                assert!(tops.clone().all(|(x, y)| x.0 == y.0 && close(&x.1, &y.1)), "prompt {}", p.key);
                assert_eq!(a.top_logprobs.len(), b.top_logprobs.len());
            }
        }
    }

    /// With as many beams as tokens and two new tokens, beam search is exhaustive: its best hypothesis
    /// is the best of every one- and two-token continuation, each scored from a full forward pass
    /// (no cache) as `sum of log-probabilities / length`; two beams miss it on some prompts (the test
    /// can tell a search from a guess).
    #[test]
    fn beam_search_equals_exhaustive_search_over_a_short_horizon() {
        let t = uncertain();
        let vocab = t.config.vocab_size;
        let ps = prompts(&["What is 2 + 2?", "7*8", "zq#", "Wait", "}{", "The answer", "x^2 = ", "ok"], 1);
        let cfg = SamplingConfig { beams: vocab as u32, max_new_tokens: 2, ..Default::default() };
        let beams = t.decode_beams(&ps, &cfg).unwrap();
        let narrow = t.decode_beams(&ps, &SamplingConfig { beams: 2, ..cfg.clone() }).unwrap();
        let score = |s: &Sample| {
            let v: serde_json::Value = serde_json::from_str(s.server.as_deref().unwrap()).unwrap();
            v["score"].as_f64().unwrap()
        };
        let misses = beams.iter().zip(&narrow).filter(|(a, b)| score(&b[0]) < score(&a[0]) - 1e-6).count();
        assert!(misses > 0, "two beams find every best continuation: the horizon is too easy to test the search");
        let dev = t.model.device().clone();
        let log_softmax = |row: &[f32]| {
            let z = super::super::sampling::log_partition(row);
            row.iter().map(|&l| f64::from(l) - z).collect::<Vec<f64>>()
        };
        let last_logits = |ids: &[Vec<u32>]| -> Vec<Vec<f32>> {
            let valid = vec![vec![true; ids[0].len()]; ids.len()];
            let input = Tensor::new(ids.to_vec(), &dev).unwrap();
            let w = ids[0].len();
            let out =
                t.model.forward(&input, &positions(&valid, 0, &dev).unwrap(), &attention_mask(&valid, 0, w), None);
            out.unwrap().i((.., w - 1, ..)).unwrap().to_vec2().unwrap()
        };
        let eos = &t.tokenizer.eos_ids;
        for (p, got) in ps.iter().zip(&beams) {
            let prompt = t.prompt_ids(p).unwrap();
            let first = log_softmax(&last_logits(std::slice::from_ref(&prompt))[0]);
            // (score, tokens including the end token)
            let mut best = (f64::NEG_INFINITY, Vec::new());
            let mut consider = |score: f64, tokens: Vec<u32>| {
                if score > best.0 {
                    best = (score, tokens);
                }
            };
            let firsts: Vec<u32> = (0..vocab as u32).filter(|a| !eos.contains(a)).collect();
            for &a in eos {
                consider(first[a as usize], vec![a]);
            }
            let rows: Vec<Vec<u32>> = firsts.iter().map(|&a| [prompt.clone(), vec![a]].concat()).collect();
            for (chunk, logits) in rows.chunks(64).zip(rows.chunks(64).map(last_logits)) {
                for (row, l) in chunk.iter().zip(logits) {
                    let a = *row.last().unwrap();
                    for (b, lp) in log_softmax(&l).into_iter().enumerate() {
                        consider((first[a as usize] + lp) / 2.0, vec![a, b as u32]);
                    }
                }
            }
            let top = &got[0];
            assert_eq!(top.tokens, best.1, "{}", p.key);
            assert!((score(top) - best.0).abs() < 1e-4, "{} vs {}", score(top), best.0);
        }
    }
}
