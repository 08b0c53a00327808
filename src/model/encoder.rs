//! A BERT-family sentence encoder, forward only: sentence-transformers' models such as all-MiniLM-L6-v2
//! (a directory with `config.json`, `model.safetensors`, `tokenizer.json`, `sentence_bert_config.json`).
//! An embedding is the mean of the last layer's vectors over the real tokens, L2-normalised, as
//! sentence-transformers computes it (Transformer, then Pooling with mean tokens, then Normalize).
//!
//! Texts are tokenized with the model's own `tokenizer.json`, cut at `max_seq_length` tokens, sorted by
//! length and padded per batch (so a batch of short texts pays for short texts), and put back in order.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::error::{Error, Location, Result};

/// Texts encoded together.
const BATCH: usize = 32;

#[derive(serde::Deserialize)]
struct Config {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    #[serde(default = "gelu")]
    hidden_act: String,
}

fn gelu() -> String {
    "gelu".into()
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A loaded encoder: tokenizer and weights (memory-mapped, f32, CPU).
pub struct SentenceEncoder {
    tokenizer: tokenizers::Tokenizer,
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    /// Length of an embedding.
    pub dim: usize,
    device: Device,
}

fn candle(context: impl std::fmt::Display) -> impl FnOnce(candle_core::Error) -> Error {
    move |e| Error::usage(format!("{context}: {e}"))
}

impl SentenceEncoder {
    /// Load a sentence-transformers model directory.
    pub fn load(dir: &Path) -> Result<SentenceEncoder> {
        let read = |name: &str| fs_err::read_to_string(dir.join(name));
        let config: Config = serde_json::from_str(&read("config.json")?)
            .map_err(|e| Error::data(Location::file(dir.join("config.json")), format!("not a BERT config: {e}")))?;
        if config.hidden_act != "gelu" {
            return Err(Error::data(
                Location::file(dir.join("config.json")),
                format!("hidden_act `{}`: only BERT's `gelu` is implemented", config.hidden_act),
            ));
        }
        let max_len = match read("sentence_bert_config.json") {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["max_seq_length"].as_u64())
                .map_or(config.max_position_embeddings, |n| n as usize),
            Err(_) => config.max_position_embeddings,
        };
        let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            Error::data(Location::file(dir.join("tokenizer.json")), format!("cannot read the tokenizer: {e}"))
        })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| Error::usage(format!("tokenizer truncation: {e}")))?;
        let file = dir.join("model.safetensors");
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only; forge does not modify it while it is open.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&file], DType::F32, &device) }
            .map_err(|e| Error::data(Location::file(&file), format!("cannot read safetensors: {e}")))?;
        Self::build(&config, tokenizer, vb, device).map_err(candle(format!("loading `{}`", file.display())))
    }

    fn build(
        c: &Config,
        tokenizer: tokenizers::Tokenizer,
        vb: VarBuilder,
        device: Device,
    ) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        let norm = |vb: VarBuilder| candle_nn::layer_norm(h, c.layer_norm_eps, vb);
        let e = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                Ok(Layer {
                    query: candle_nn::linear(h, h, l.pp("attention.self.query"))?,
                    key: candle_nn::linear(h, h, l.pp("attention.self.key"))?,
                    value: candle_nn::linear(h, h, l.pp("attention.self.value"))?,
                    attention_out: candle_nn::linear(h, h, l.pp("attention.output.dense"))?,
                    attention_norm: norm(l.pp("attention.output.LayerNorm"))?,
                    intermediate: candle_nn::linear(h, c.intermediate_size, l.pp("intermediate.dense"))?,
                    output: candle_nn::linear(c.intermediate_size, h, l.pp("output.dense"))?,
                    output_norm: norm(l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<Layer>>>()?;
        Ok(SentenceEncoder {
            tokenizer,
            words: candle_nn::embedding(c.vocab_size, h, e.pp("word_embeddings"))?,
            positions: candle_nn::embedding(c.max_position_embeddings, h, e.pp("position_embeddings"))?,
            token_types: candle_nn::embedding(c.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            embedding_norm: norm(e.pp("LayerNorm"))?,
            layers,
            heads: c.num_attention_heads,
            dim: h,
            device,
        })
    }

    /// The embeddings of `texts`, in order: unit vectors of length [`SentenceEncoder::dim`].
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::usage(format!("tokenizing for the encoder: {e}")))?;
        let ids: Vec<&[u32]> = encodings.iter().map(tokenizers::Encoding::get_ids).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i]).collect();
            let vectors = self.forward(&batch).map_err(candle("running the encoder"))?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let (b, t) = (batch.len(), batch.iter().map(|ids| ids.len()).max().unwrap_or(1).max(1));
        let mut ids = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (row, seq) in batch.iter().enumerate() {
            ids[row * t..row * t + seq.len()].copy_from_slice(seq);
            mask[row * t..row * t + seq.len()].fill(1.0);
        }
        let ids = Tensor::from_vec(ids, (b, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, t), &self.device)?;
        let positions = Tensor::arange(0u32, t as u32, &self.device)?;
        let types = Tensor::zeros((b, t), DType::U32, &self.device)?;
        let x = self.words.forward(&ids)?.broadcast_add(&self.positions.forward(&positions)?)?;
        let x = self.embedding_norm.forward(&x.add(&self.token_types.forward(&types)?)?)?;
        // Tokens as rows of one `(b·t) × hidden` matrix: every linear layer is then one matrix product
        // (a 3-d input would make candle multiply batch by batch).
        let mut x = x.reshape((b * t, self.dim))?;
        // padding keys get a large negative score (transformers uses the dtype's minimum)
        let bias = ((mask.ones_like()? - &mask)? * f64::from(f32::MIN))?.reshape((b, 1, 1, t))?;
        let (heads, head_dim) = (self.heads, self.dim / self.heads);
        let split = |y: Tensor| y.reshape((b, t, heads, head_dim))?.transpose(1, 2)?.contiguous();
        for l in &self.layers {
            let q = split((l.query.forward(&x)? / (head_dim as f64).sqrt())?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let context = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
            let context = context.transpose(1, 2)?.reshape((b * t, self.dim))?;
            x = l.attention_norm.forward(&(l.attention_out.forward(&context)? + &x)?)?;
            let h = l.intermediate.forward(&x)?.gelu_erf()?;
            x = l.output_norm.forward(&(l.output.forward(&h)? + &x)?)?;
        }
        let x = x.reshape((b, t, self.dim))?;
        let mask = mask.unsqueeze(2)?;
        let sum = x.broadcast_mul(&mask)?.sum(1)?;
        let mean = sum.broadcast_div(&mask.sum(1)?.clamp(1e-9, f64::MAX)?)?;
        let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}
