//! The Qwen2 / Llama decoder, written with differentiable candle primitives only, so the trainers can
//! backpropagate through it: candle-transformers' models use fused ops without a backward pass
//! (`softmax_last_dim`, fused `rms_norm`, `rope`), where the gradient silently stops
//! (`../shared/notes/training.md`). Weights live under transformers' exact tensor names, so checkpoints
//! load and save as they are.
//!
//! Shapes: token ids `[batch, seq]`; positions `[batch, seq]` (left padding shifts them per row); an
//! additive mask `[batch, 1, seq, past + seq]` (0 where a query may attend, −inf elsewhere).

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::ModelConfig;

type CResult<T> = candle_core::Result<T>;

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Layer {
    input_norm: Tensor,
    attn: Attention,
    post_norm: Tensor,
    mlp: Mlp,
}

/// Keys and values of the positions seen so far, per layer (`[batch, kv_heads, past, head_dim]`).
#[derive(Default, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep only the rows `rows` of the batch (finished sequences drop out; a prompt's cache is copied for
    /// each of its samples).
    pub fn select(&self, rows: &Tensor) -> CResult<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((k.index_select(rows, 0)?, v.index_select(rows, 0)?))),
                None => Ok(None),
            })
            .collect::<CResult<_>>()?;
        Ok(KvCache { layers })
    }
}

pub struct Decoder {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    eps: f64,
    inv_freq: Tensor,
    pub config: ModelConfig,
}

/// `x W^T + b` over `[batch, seq, in]` as one matrix product of `[batch * seq, in]`: candle's `Linear`
/// broadcasts the weight over the batch instead, one small product per row, which at decode time (seq = 1)
/// is a gemm per sequence and made batching nearly useless.
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (b, t, i) = x.dims3()?;
        let y = x.reshape((b * t, i))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        y.reshape((b, t, ()))
    }
}

fn linear(vb: &VarBuilder, inputs: usize, outputs: usize, bias: bool, name: &str) -> CResult<Linear> {
    let w = vb.get((outputs, inputs), &format!("{name}.weight"))?;
    let b = if bias { Some(vb.get(outputs, &format!("{name}.bias"))?) } else { None };
    Ok(Linear::new(w, b))
}

impl Decoder {
    /// Build the model over `vb` (a `VarMap` for training, or loaded tensors).
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> CResult<Decoder> {
        let (h, heads, kv_heads, d) =
            (config.hidden_size, config.num_attention_heads, config.kv_heads(), config.head_dim());
        let bias = config.qkv_bias();
        let embed_w = vb.get((config.vocab_size, h), "model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                input_norm: vb.get(h, &format!("{p}.input_layernorm.weight"))?,
                attn: Attention {
                    q: linear(&vb, h, heads * d, bias, &format!("{p}.self_attn.q_proj"))?,
                    k: linear(&vb, h, kv_heads * d, bias, &format!("{p}.self_attn.k_proj"))?,
                    v: linear(&vb, h, kv_heads * d, bias, &format!("{p}.self_attn.v_proj"))?,
                    o: linear(&vb, heads * d, h, false, &format!("{p}.self_attn.o_proj"))?,
                    heads,
                    kv_heads,
                    head_dim: d,
                },
                post_norm: vb.get(h, &format!("{p}.post_attention_layernorm.weight"))?,
                mlp: Mlp {
                    gate: linear(&vb, h, config.intermediate_size, false, &format!("{p}.mlp.gate_proj"))?,
                    up: linear(&vb, h, config.intermediate_size, false, &format!("{p}.mlp.up_proj"))?,
                    down: linear(&vb, config.intermediate_size, h, false, &format!("{p}.mlp.down_proj"))?,
                },
            });
        }
        let norm = vb.get(h, "model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            Linear::new(embed_w.clone(), None)
        } else {
            linear(&vb, h, config.vocab_size, false, "lm_head")?
        };
        let inv_freq = Tensor::new(config.inv_freq(), vb.device())?;
        Ok(Decoder {
            embed: Embedding::new(embed_w, h),
            layers,
            norm,
            lm_head,
            eps: config.rms_norm_eps,
            inv_freq,
            config: config.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        self.norm.device()
    }

    /// Logits `[batch, seq, vocab]` (f32) for `ids` at `positions`, attending through `mask` to the cache
    /// (when given, it is extended with this call's keys and values) and to each other.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> CResult<Tensor> {
        let (b, t) = ids.dims2()?;
        let (cos, sin) = self.rope_tables(positions, b, t)?;
        let mut x = self.embed.forward(ids)?;
        let mut cache = cache;
        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() != self.layers.len()
        {
            c.layers = vec![None; self.layers.len()];
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let past = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let normed = rms_norm(&x, &layer.input_norm, self.eps)?;
            let attn = layer.attn.forward(&normed, &cos, &sin, mask, past)?;
            x = (x + attn)?;
            let normed = rms_norm(&x, &layer.post_norm, self.eps)?;
            let mlp = layer
                .mlp
                .down
                .forward(&(layer.mlp.gate.forward(&normed)?.silu()? * layer.mlp.up.forward(&normed)?)?)?;
            x = (x + mlp)?;
        }
        let x = rms_norm(&x, &self.norm, self.eps)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32)
    }

    /// cos and sin of every position's rotation, `[batch, 1, seq, head_dim / 2]`.
    fn rope_tables(&self, positions: &Tensor, b: usize, t: usize) -> CResult<(Tensor, Tensor)> {
        let pos = positions.to_dtype(DType::F32)?.reshape((b, t, 1))?;
        let angles = pos.broadcast_mul(&self.inv_freq.reshape((1, 1, ()))?)?;
        let dtype = self.norm.dtype();
        Ok((angles.cos()?.unsqueeze(1)?.to_dtype(dtype)?, angles.sin()?.unsqueeze(1)?.to_dtype(dtype)?))
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        past: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> CResult<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor, heads: usize| y.reshape((b, t, heads, self.head_dim))?.transpose(1, 2);
        let q = rotate(&split(self.q.forward(x)?, self.heads)?, cos, sin)?;
        let mut k = rotate(&split(self.k.forward(x)?, self.kv_heads)?, cos, sin)?.contiguous()?;
        let mut v = split(self.v.forward(x)?, self.kv_heads)?.contiguous()?;
        if let Some(past) = past {
            if let Some((pk, pv)) = past.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *past = Some((k.clone(), v.clone()));
        }
        let groups = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(k, groups)?, repeat_kv(v, groups)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?.to_dtype(DType::F32)?;
        let scores = scores.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(v.dtype())?;
        let out = probs.matmul(&v.contiguous()?)?;
        self.o.forward(&out.transpose(1, 2)?.reshape((b, t, self.heads * self.head_dim))?)
    }
}

/// RMSNorm as transformers computes it: in f32, then back to the input's type, then the weight.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> CResult<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let rms = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x32.broadcast_div(&rms)?.to_dtype(dtype)?.broadcast_mul(weight)
}

/// Rotary embedding, rotate-half layout (as transformers' Qwen2 and Llama).
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let (x1, x2) = (x.narrow(D::Minus1, 0, half)?, x.narrow(D::Minus1, half, half)?);
    let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[a, b], D::Minus1)
}

/// `[b, kv, s, d]` → `[b, kv * groups, s, d]`, each kv head repeated for its group of query heads.
fn repeat_kv(x: Tensor, groups: usize) -> CResult<Tensor> {
    if groups == 1 {
        return Ok(x);
    }
    let (b, kv, s, d) = x.dims4()?;
    Tensor::cat(&vec![&x; groups], 2)?.reshape((b, kv * groups, s, d))
}

/// The additive mask for `batch` rows of `t` new positions after `past` cached ones: causal, and closed
/// to keys where `valid` (`[batch][past + t]`) is false (left padding).
pub fn attention_mask(valid: &[Vec<bool>], past: usize, t: usize, device: &Device) -> CResult<Tensor> {
    let total = past + t;
    let mut data = Vec::with_capacity(valid.len() * t * total);
    for row in valid {
        for q in 0..t {
            for k in 0..total {
                let open = k <= past + q && row.get(k).copied().unwrap_or(false);
                data.push(if open { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    // A padded query row would see no key at all (softmax of all −inf is NaN): let it see itself.
    for (r, row) in valid.iter().enumerate() {
        for q in 0..t {
            if !row.get(past + q).copied().unwrap_or(false) {
                data[(r * t + q) * total + past + q] = 0.0;
            }
        }
    }
    Tensor::from_vec(data, (valid.len(), 1, t, total), device)
}

/// Rotary positions of the last `valid[r].len() - past` entries of each row: the number of real tokens
/// before each one (left padding does not count), `[batch, t]`.
pub fn positions(valid: &[Vec<bool>], past: usize, device: &Device) -> CResult<Tensor> {
    let rows: Vec<Vec<u32>> = valid
        .iter()
        .map(|row| {
            let mut seen = 0u32;
            let all: Vec<u32> = row
                .iter()
                .map(|&v| {
                    let here = seen;
                    seen += u32::from(v);
                    here
                })
                .collect();
            all[past..].to_vec()
        })
        .collect();
    Tensor::new(rows, device)
}
