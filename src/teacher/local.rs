//! The local teacher: a Hugging Face checkpoint run with forge's own decoder. Prompts of a batch are
//! prefilled together (left-padded); each prompt's KV cache is then copied for its `n` samples, which decode
//! together, one token per step, dropping out of the batch as they finish.

use std::path::Path;

use candle_core::{IndexOp, Tensor};

use super::sampling::{SamplingConfig, sample, stream, top_logprobs};
use super::{Finish, Prompt, Sample, Teacher};
use crate::error::{Error, Result};
use crate::model::chat::ChatTemplate;
use crate::model::tokenizer::Tokenizer;
use crate::model::{Checkpoint, Decoder, KvCache, ModelConfig, attention_mask, positions};
use crate::progress::Progress;

pub struct Local {
    id: String,
    config: ModelConfig,
    model: Decoder,
    tokenizer: Tokenizer,
    chat: ChatTemplate,
    /// Generated so far, and since when: the rate shown in the progress line.
    tokens: u64,
    started: std::time::Instant,
}

fn candle(e: candle_core::Error) -> Error {
    Error::usage(format!("model: {e}"))
}

/// A sequence being decoded.
struct Row {
    prompt: usize,
    valid: Vec<bool>,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    top: Vec<Vec<(u32, f32)>>,
    rng: crate::rng::Rng,
    finish: Option<Finish>,
    /// The end-of-sequence token it ended with.
    eos: Option<u32>,
}

impl Local {
    pub fn open(dir: &Path) -> Result<Local> {
        let device = crate::model::device();
        // Tokenizer and template first: they fail fast, before the weights load.
        let (tokenizer, chat) = (Tokenizer::from_dir(dir)?, ChatTemplate::from_dir(dir)?);
        let (config, model) = Checkpoint::load_frozen(dir, &device)?;
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

    /// The token ids of a prompt ([`super::render`]).
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.tokenizer.encode(&super::render(&self.chat, prompt)?)
    }

    /// Whether the text of `tokens` ends with one of the `stop` strings. Only the last tokens are decoded:
    /// a token is at least one byte, so a stop string of L bytes lies within the last L tokens, and a few
    /// more cover a character split over tokens (decoding the whole completion every step was O(T²)).
    fn ends_with_stop(&self, tokens: &[u32], stop: &[String]) -> Result<bool> {
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
    fn prefill(&self, ids: &[Vec<u32>]) -> Result<(KvCache, Tensor, Vec<Vec<bool>>)> {
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

    fn decode_batch(&self, prompts: &[Prompt], cfg: &SamplingConfig) -> Result<Vec<Vec<Sample>>> {
        let dev = self.model.device().clone();
        let model = &self.model;
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.prompt_ids(p)).collect::<Result<_>>()?;
        self.check_context(prompts, &ids, cfg)?;
        let (cache, last, valid) = self.prefill(&ids)?;
        // one row per sample, each starting from its prompt's cache
        let mut rows = sample_rows(prompts, &valid, cfg);
        let order = Tensor::new(rows.iter().map(|r| r.prompt as u32).collect::<Vec<_>>(), &dev).map_err(candle)?;
        let mut cache = cache.select(&order).map_err(candle)?;
        let mut next: Vec<Vec<f32>> = last.index_select(&order, 0).map_err(candle)?.to_vec2().map_err(candle)?;
        let mut active: Vec<usize> = (0..rows.len()).collect();
        while !active.is_empty() {
            let mut still = Vec::with_capacity(active.len());
            for (slot, &r) in active.iter().enumerate() {
                let row = &mut rows[r];
                let (token, logprob) = sample(&next[slot], cfg, &mut row.rng);
                if cfg.top_logprobs > 0 {
                    row.top.push(top_logprobs(&next[slot], cfg.top_logprobs as usize));
                }
                if self.tokenizer.eos_ids.contains(&token) {
                    row.finish = Some(Finish::Stop);
                    row.eos = Some(token);
                    continue;
                }
                row.tokens.push(token);
                row.logprobs.push(logprob);
                if self.ends_with_stop(&row.tokens, &cfg.stop)? {
                    row.finish = Some(Finish::Stop);
                    continue;
                }
                if row.tokens.len() >= cfg.max_new_tokens as usize {
                    row.finish = Some(Finish::Length);
                    continue;
                }
                still.push(slot);
            }
            if still.len() < active.len() {
                let keep = Tensor::new(still.iter().map(|&s| s as u32).collect::<Vec<_>>(), &dev).map_err(candle)?;
                if !still.is_empty() {
                    cache = cache.select(&keep).map_err(candle)?;
                }
            }
            active = still.iter().map(|&s| active[s]).collect();
            if active.is_empty() {
                break;
            }
            let past = cache.len();
            for &r in &active {
                rows[r].valid.push(true);
            }
            let valid: Vec<Vec<bool>> = active.iter().map(|&r| rows[r].valid.clone()).collect();
            let input: Vec<Vec<u32>> = active.iter().map(|&r| vec![*rows[r].tokens.last().expect("a token")]).collect();
            let logits = model
                .forward(
                    &Tensor::new(input, &dev).map_err(candle)?,
                    &positions(&valid, past, &dev).map_err(candle)?,
                    &attention_mask(&valid, past, 1),
                    Some(&mut cache),
                )
                .map_err(candle)?;
            next = logits.squeeze(1).map_err(candle)?.to_vec2().map_err(candle)?;
        }
        let mut out: Vec<Vec<Sample>> = prompts.iter().map(|p| Vec::with_capacity(p.n as usize)).collect();
        for row in rows {
            let text = self.tokenizer.decode(&row.tokens, false)?;
            out[row.prompt].push(Sample {
                text,
                prompt_tokens: ids[row.prompt].len() as u32,
                completion_tokens: row.tokens.len() as u32,
                tokens: row.tokens.iter().copied().chain(row.eos).collect(),
                finish: row.finish.unwrap_or(Finish::Length),
                logprobs: row.logprobs,
                top_logprobs: row.top,
                reasoning: None,
                error: None,
                server: None,
            });
        }
        Ok(out)
    }
}

/// The rows of a batch: `n` per prompt, each with its own random stream.
fn sample_rows(prompts: &[Prompt], valid: &[Vec<bool>], cfg: &SamplingConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    for (p, prompt) in prompts.iter().enumerate() {
        for k in 0..prompt.n {
            rows.push(Row {
                prompt: p,
                valid: valid[p].clone(),
                tokens: Vec::new(),
                logprobs: Vec::new(),
                top: Vec::new(),
                rng: stream(cfg.seed, &prompt.key, k),
                finish: None,
                eos: None,
            });
        }
    }
    rows
}

impl Teacher for Local {
    fn id(&self) -> &str {
        &self.id
    }

    fn generate(
        &mut self,
        prompts: &[Prompt],
        sampling: &SamplingConfig,
        progress: &Progress,
    ) -> Result<Vec<Vec<Sample>>> {
        let out = self.decode_batch(prompts, sampling)?;
        let samples: usize = out.iter().map(Vec::len).sum();
        self.tokens += out.iter().flatten().map(|s| u64::from(s.completion_tokens)).sum::<u64>();
        progress.inc(samples as u64);
        progress.message(&format!("{:.0} tok/s", self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9)));
        Ok(out)
    }
}
