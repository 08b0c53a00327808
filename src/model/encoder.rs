//! A BERT-family sentence encoder, forward only: sentence-transformers' models such as all-MiniLM-L6-v2
//! (a directory with `config.json`, `model.safetensors`, `tokenizer.json`, `sentence_bert_config.json`).
//! An embedding is the mean of the last layer's vectors over the real tokens, L2-normalised, as
//! sentence-transformers computes it (Transformer, then Pooling with mean tokens, then Normalize).
//!
//! Texts are tokenized with the model's own `tokenizer.json`, cut at `max_seq_length` tokens, and packed
//! end to end into batches of about [`TOKENS`] tokens: no padding, each text attending to its own tokens
//! only. The forward pass works on the packed `tokens × hidden` matrix with the fused kernels' matrix
//! product: one product for q, k and v together, attention per (text, head) on strided views of it,
//! biases, GELU, residuals and LayerNorm in one pass over each row, on all of candle's threads.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::fused::{SharedOut, Write, exp_row, matmul, parallel};
use crate::error::{Error, Location, Result};

/// Tokens per forward pass (a longer text goes alone).
const TOKENS: usize = 4096;

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

/// A linear layer's weight `[out, in]` and bias, row-major.
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    out: usize,
}

/// LayerNorm's scale and shift.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// query, key and value stacked: `[3 · hidden, hidden]`
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// A loaded encoder: tokenizer and weights (f32, CPU).
pub struct SentenceEncoder {
    tokenizer: tokenizers::Tokenizer,
    words: Vec<f32>,
    positions: Vec<f32>,
    /// token type 0's vector (BERT's segment A: every token of a sentence-transformers input)
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    eps: f32,
    /// Length of an embedding.
    pub dim: usize,
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
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len.min(config.max_position_embeddings),
                ..Default::default()
            }))
            .map_err(|e| Error::usage(format!("tokenizer truncation: {e}")))?;
        let file = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only; forge does not modify it while it is open.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&file], DType::F32, &Device::Cpu) }
            .map_err(|e| Error::data(Location::file(&file), format!("cannot read safetensors: {e}")))?;
        Self::build(&config, tokenizer, vb).map_err(candle(format!("loading `{}`", file.display())))
    }

    fn build(c: &Config, tokenizer: tokenizers::Tokenizer, vb: VarBuilder) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        if c.num_attention_heads == 0 || !h.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!("{} attention heads do not divide hidden size {h}", c.num_attention_heads);
        }
        let get = |vb: &VarBuilder, shape: &[usize], name: &str| -> candle_core::Result<Vec<f32>> {
            vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()
        };
        let dense = |vb: VarBuilder, out: usize, inputs: usize| -> candle_core::Result<Dense> {
            Ok(Dense { weight: get(&vb, &[out, inputs], "weight")?, bias: get(&vb, &[out], "bias")?, out })
        };
        let norm = |vb: VarBuilder| -> candle_core::Result<Norm> {
            Ok(Norm { weight: get(&vb, &[h], "weight")?, bias: get(&vb, &[h], "bias")? })
        };
        let e = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let [q, k, v] = ["query", "key", "value"].map(|n| dense(l.pp("attention.self").pp(n), h, h));
                let (q, k, v) = (q?, k?, v?);
                Ok(Layer {
                    qkv: Dense {
                        weight: [q.weight, k.weight, v.weight].concat(),
                        bias: [q.bias, k.bias, v.bias].concat(),
                        out: 3 * h,
                    },
                    attention_out: dense(l.pp("attention.output.dense"), h, h)?,
                    attention_norm: norm(l.pp("attention.output.LayerNorm"))?,
                    intermediate: dense(l.pp("intermediate.dense"), c.intermediate_size, h)?,
                    output: dense(l.pp("output.dense"), h, c.intermediate_size)?,
                    output_norm: norm(l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<Layer>>>()?;
        let types = get(&e.pp("token_type_embeddings"), &[c.type_vocab_size, h], "weight")?;
        Ok(SentenceEncoder {
            tokenizer,
            words: get(&e.pp("word_embeddings"), &[c.vocab_size, h], "weight")?,
            positions: get(&e.pp("position_embeddings"), &[c.max_position_embeddings, h], "weight")?,
            token_type: types[..h].to_vec(),
            embedding_norm: norm(e.pp("LayerNorm"))?,
            layers,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps as f32,
            dim: h,
        })
    }

    /// The embeddings of `texts`, in order: unit vectors of length [`SentenceEncoder::dim`].
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::usage(format!("tokenizing for the encoder: {e}")))?;
        let mut out = Vec::with_capacity(texts.len());
        let mut batch: Vec<&[u32]> = Vec::new();
        let mut tokens = 0;
        for ids in encodings.iter().map(tokenizers::Encoding::get_ids) {
            if tokens + ids.len() > TOKENS && !batch.is_empty() {
                out.extend(self.forward(&batch)?);
                (batch, tokens) = (Vec::new(), 0);
            }
            batch.push(ids);
            tokens += ids.len();
        }
        if !batch.is_empty() {
            out.extend(self.forward(&batch)?);
        }
        Ok(out)
    }

    /// The embeddings of a batch of token sequences, packed into one `tokens × hidden` matrix.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.dim;
        let mut spans = Vec::with_capacity(batch.len());
        let mut x = Vec::new();
        for ids in batch {
            let start = x.len() / h;
            for (p, &id) in ids.iter().enumerate() {
                let (word, position) =
                    (self.words.get(id as usize * h..(id as usize + 1) * h), self.positions.get(p * h..(p + 1) * h));
                let (Some(word), Some(position)) = (word, position) else {
                    return Err(Error::usage(format!(
                        "the encoder's tokenizer gave token {id} at position {p}, outside its embeddings"
                    )));
                };
                x.extend(word.iter().zip(position).zip(&self.token_type).map(|((w, p), t)| w + p + t));
            }
            spans.push((start, ids.len()));
        }
        let n = x.len() / h;
        layer_norm(&mut x, None, None, &self.embedding_norm, self.eps);
        let (heads, head_dim) = (self.heads, h / self.heads);
        let mut qkv = vec![0f32; n * 3 * h];
        let mut context = vec![0f32; n * h];
        let mut y = vec![0f32; n * h];
        let mut inner = vec![0f32; n * self.layers.first().map_or(0, |l| l.intermediate.out)];
        for l in &self.layers {
            product(&x, &l.qkv, &mut qkv);
            add_bias(&mut qkv, &l.qkv.bias, false);
            attention(&qkv, &mut context, &spans, heads, head_dim);
            product(&context, &l.attention_out, &mut y);
            layer_norm(&mut x, Some(&y), Some(&l.attention_out.bias), &l.attention_norm, self.eps);
            product(&x, &l.intermediate, &mut inner);
            add_bias(&mut inner, &l.intermediate.bias, true);
            product(&inner, &l.output, &mut y);
            layer_norm(&mut x, Some(&y), Some(&l.output.bias), &l.output_norm, self.eps);
        }
        Ok(spans
            .iter()
            .map(|&(start, len)| {
                let mut mean = vec![0f32; h];
                for row in x[start * h..(start + len) * h].chunks_exact(h) {
                    mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
                }
                let count = len.max(1) as f32;
                mean.iter_mut().for_each(|m| *m /= count);
                let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                mean.iter_mut().for_each(|m| *m /= norm);
                mean
            })
            .collect())
    }
}

/// `y = x · weightᵀ` (`y` `rows × out`), on all threads; the bias is added by the pass that follows.
fn product(x: &[f32], dense: &Dense, y: &mut [f32]) {
    let inputs = dense.weight.len() / dense.out;
    let rows = x.len() / inputs;
    matmul(
        [rows, dense.out, inputs],
        (&mut y[..rows * dense.out], [dense.out, 1]),
        (x, [inputs, 1]),
        (&dense.weight, [1, inputs]),
        Write::ALL,
    );
}

/// `y[row] += bias`, then GELU (erf form) when `gelu`, in parallel over rows.
fn add_bias(y: &mut [f32], bias: &[f32], gelu: bool) {
    rows_in_parallel(y, bias.len(), |_, row| {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        if gelu {
            row.iter_mut().for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2)));
        }
    });
}

/// `x[row] = LayerNorm(x[row] + y[row] + bias)` (`y` and `bias` when given), in parallel over rows.
fn layer_norm(x: &mut [f32], y: Option<&[f32]>, bias: Option<&[f32]>, norm: &Norm, eps: f32) {
    let cols = norm.weight.len();
    rows_in_parallel(x, cols, |i, row| {
        if let Some(y) = y {
            row.iter_mut().zip(&y[i * cols..(i + 1) * cols]).for_each(|(v, y)| *v += y);
        }
        if let Some(bias) = bias {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
        let mean = sum(row.iter().copied()) / cols as f32;
        let var = sum(row.iter().map(|v| (v - mean) * (v - mean))) / cols as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
            *v = (*v - mean) * inv * w + b;
        }
    });
}

/// The sum of `values` in eight partial sums, so the compiler can vectorise it.
#[inline(always)]
fn sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0f32; 8];
    for (i, v) in values.enumerate() {
        acc[i % 8] += v;
    }
    acc.iter().sum()
}

/// Rows of `data` per task of [`rows_in_parallel`].
const ROWS: usize = 16;

/// `f(row index, row)` for each row of `data` (`cols` wide), on all of candle's threads, compiled for
/// AVX2 and FMA where the CPU has them (the element-wise passes are loops the compiler vectorises).
fn rows_in_parallel(data: &mut [f32], cols: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = data.len() / cols.max(1);
    let out = SharedOut(data.as_mut_ptr());
    let avx2 = super::fused::avx2();
    parallel(rows.div_ceil(ROWS), |tasks| {
        for t in tasks {
            let (from, to) = (t * ROWS, ((t + 1) * ROWS).min(rows));
            // SAFETY: tasks cover disjoint rows of `data`
            let block = unsafe { out.slice(from * cols, (to - from) * cols) };
            let each = |block: &mut [f32]| block.chunks_exact_mut(cols).enumerate().for_each(|(i, r)| f(from + i, r));
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA
                unsafe { with_avx2(block, each) };
                continue;
            }
            each(block);
        }
    });
}

/// `f(block)` compiled with AVX2 and FMA enabled (`f` is inlined into it).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2(block: &mut [f32], f: impl Fn(&mut [f32])) {
    f(block);
}

/// Each text's self-attention, head by head, from the packed `[q | k | v]` rows (`tokens × 3 · hidden`)
/// into `context` (`tokens × hidden`, heads side by side), one task per (text, head).
fn attention(qkv: &[f32], context: &mut [f32], spans: &[(usize, usize)], heads: usize, d: usize) {
    let h = heads * d;
    let stride = 3 * h;
    let scale = 1.0 / (d as f32).sqrt();
    let out = SharedOut(context.as_mut_ptr());
    parallel(spans.len() * heads, |tasks| {
        let mut scores = Vec::new();
        for task in tasks {
            let ((start, len), head) = (spans[task / heads], task % heads);
            if len == 0 {
                continue;
            }
            scores.clear();
            scores.resize(len * len, 0.0);
            let q = &qkv[start * stride + head * d..];
            let k = &qkv[start * stride + h + head * d..];
            let v = &qkv[start * stride + 2 * h + head * d..];
            // scores = q · kᵀ (keys read as the columns of kᵀ)
            matmul([len, len, d], (&mut scores, [len, 1]), (q, [stride, 1]), (k, [1, stride]), Write::SET);
            for row in scores.chunks_exact_mut(len) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum = exp_row(row, scale, max * scale);
                row.iter_mut().for_each(|p| *p /= sum);
            }
            // SAFETY: this task alone writes rows start..start + len, columns head · d.. of `context`
            let dst = unsafe { out.slice(start * h + head * d, (len - 1) * h + d) };
            matmul([len, d, len], (dst, [h, 1]), (&scores, [len, 1]), (v, [stride, 1]), Write::SET);
        }
    });
}

/// `erf(x)` for f32 without branches (so a loop of it vectorises): the rational approximation of Eigen
/// and XLA, `x · P(x²) / Q(x²)` on `x` clamped to [−4, 4] (beyond, erf is ±1 in f32); within a few f32
/// ulps of the exact value.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for a in [2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.9546e-3, -1.609_603_3e-2] {
        p = p * x2 + a;
    }
    let mut q = -1.456_607_2e-5_f32;
    for b in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + b;
    }
    x * p / q
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_and_gelu_match_libm() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 / 10_000.0;
            worst = worst.max((super::erf(x) - candle_core::cpu::erf::erf_f32(x)).abs());
        }
        assert!(worst < 1e-6, "erf off by {worst}");
        let mut rows: Vec<f32> = (-40..40).map(|i| i as f32 / 8.0).collect();
        let want: Vec<f32> =
            rows.iter().map(|&x| <candle_core::op::GeluErf as candle_core::op::UnaryOpT>::f32(x)).collect();
        super::add_bias(&mut rows, &[0.0; 20], true);
        for (g, w) in rows.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "gelu {g} vs {w}");
        }
    }
}
