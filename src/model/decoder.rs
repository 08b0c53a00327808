//! The Qwen2 / Llama decoder, written so the trainers can backpropagate through it: candle-transformers'
//! models use fused ops without a backward pass (`softmax_last_dim`, fused `rms_norm`, `rope`), where the
//! gradient silently stops (`../shared/notes/training.md`). On the CPU in f32 it takes forge's fused
//! kernels, each with its backward pass ([`super::fused`]), and a layer that records a gradient graph is one
//! node of it with a backward pass written by hand (`model/layer_node.rs`); elsewhere differentiable candle primitives,
//! which are also the reference the kernels are tested against. Inference takes kernels without a
//! backward pass for attention and decoding ([`super::infer`]). Weights live under transformers' exact
//! tensor names, so checkpoints load and save as they are.
//!
//! Shapes: token ids `[batch, seq]`; positions `[batch, seq]` (left padding shifts them per row); a
//! [`Mask`]: the range of keys (of `past + seq`) each query attends to.

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::ModelConfig;
use super::fused::{self, Mask, range_softmax};
use super::infer;
use super::layer_node;

type CResult<T> = candle_core::Result<T>;

#[derive(Clone)]
pub(super) struct Attention {
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) o: Linear,
    pub(super) heads: usize,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
}

#[derive(Clone)]
pub(super) struct Mlp {
    pub(super) gate: Linear,
    pub(super) up: Linear,
    pub(super) down: Linear,
}

/// One decoder block: pre-norm attention and MLP, each added to the residual stream.
#[derive(Clone)]
pub(super) struct Layer {
    pub(super) input_norm: Tensor,
    pub(super) attn: Attention,
    pub(super) post_norm: Tensor,
    pub(super) mlp: Mlp,
    pub(super) eps: f64,
}

/// Keys and values of the positions seen so far, per layer, in buffers with room to grow
/// (`[batch, kv_heads, capacity, head_dim]`, the first `len` positions filled): a decoding step writes its
/// one position in place instead of copying the whole cache into a longer tensor.
#[derive(Default, Clone)]
pub struct KvCache {
    layers: Vec<Option<Slot>>,
}

#[derive(Clone)]
pub(super) struct Slot {
    k: Tensor,
    v: Tensor,
    len: usize,
}

/// Positions a cache buffer grows by (at least; it doubles).
const CACHE_STEP: usize = 256;

impl Slot {
    fn new(k: &Tensor, v: &Tensor) -> CResult<Slot> {
        let (b, kv, t, d) = k.dims4()?;
        let mut slot = Slot {
            k: Tensor::zeros((b, kv, t + CACHE_STEP, d), k.dtype(), k.device())?,
            v: Tensor::zeros((b, kv, t + CACHE_STEP, d), v.dtype(), v.device())?,
            len: 0,
        };
        slot.push(k, v)?;
        Ok(slot)
    }

    /// Append `t` positions.
    fn push(&mut self, k: &Tensor, v: &Tensor) -> CResult<()> {
        let t = k.dim(2)?;
        let cap = self.k.dim(2)?;
        if self.len + t > cap {
            let (b, kv, _, d) = self.k.dims4()?;
            let grown = (self.len + t).max(2 * cap);
            let (nk, nv) = (
                Tensor::zeros((b, kv, grown, d), self.k.dtype(), self.k.device())?,
                Tensor::zeros((b, kv, grown, d), self.v.dtype(), self.v.device())?,
            );
            nk.slice_set(&self.k.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            nv.slice_set(&self.v.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            (self.k, self.v) = (nk, nv);
        }
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += t;
        Ok(())
    }

    /// Append `k` and `v` to the layer's cache `past` (started if empty); all its keys and values since.
    fn extend(past: &mut Option<Slot>, k: &Tensor, v: &Tensor) -> CResult<(Tensor, Tensor)> {
        match past {
            Some(slot) => slot.push(k, v)?,
            None => *past = Some(Slot::new(k, v)?),
        }
        past.as_ref().expect("set above").filled()
    }

    /// The filled part (views, no copy).
    fn filled(&self) -> CResult<(Tensor, Tensor)> {
        Ok((self.k.narrow(2, 0, self.len)?, self.v.narrow(2, 0, self.len)?))
    }
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |s| s.len)
    }

    /// No position in the cache yet.
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
                Some(s) => Ok(Some(Slot { k: s.k.index_select(rows, 0)?, v: s.v.index_select(rows, 0)?, len: s.len })),
                None => Ok(None),
            })
            .collect::<CResult<_>>()?;
        Ok(KvCache { layers })
    }

    /// [`KvCache::select`], also dropping the first `from` positions (padding no kept row attends to).
    pub fn compact(&self, rows: &Tensor, from: usize) -> CResult<KvCache> {
        if from == 0 {
            return self.select(rows);
        }
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some(s) => {
                    let keep = |t: &Tensor| t.index_select(rows, 0)?.narrow(2, from, s.len - from);
                    Ok(Some(Slot::new(&keep(&s.k)?, &keep(&s.v)?)?))
                }
                None => Ok(None),
            })
            .collect::<CResult<_>>()?;
        Ok(KvCache { layers })
    }

    /// The rows of `self` then those of `other`, each right-aligned to the longer of the two: the shorter
    /// one's rows get padding positions at the front, which their attention masks leave out (continuous
    /// batching: a prompt prefilled on its own joins a running batch).
    pub fn join(&self, other: &KvCache) -> CResult<KvCache> {
        if self.is_empty() {
            return Ok(other.clone());
        }
        if other.is_empty() {
            return Ok(self.clone());
        }
        let width = self.len().max(other.len());
        let pad = |t: Tensor| -> CResult<Tensor> {
            let (b, kv, len, d) = t.dims4()?;
            if len == width {
                return Ok(t);
            }
            Tensor::cat(&[&Tensor::zeros((b, kv, width - len, d), t.dtype(), t.device())?, &t], 2)
        };
        let layers = self
            .layers
            .iter()
            .zip(&other.layers)
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => {
                    let ((ak, av), (bk, bv)) = (a.filled()?, b.filled()?);
                    let k = Tensor::cat(&[pad(ak)?, pad(bk)?], 0)?;
                    let v = Tensor::cat(&[pad(av)?, pad(bv)?], 0)?;
                    Ok(Some(Slot::new(&k, &v)?))
                }
                _ => candle_core::bail!("joining a KV cache with layers missing"),
            })
            .collect::<CResult<_>>()?;
        Ok(KvCache { layers })
    }
}

/// A Qwen2 or Llama decoder (embedding, layers, final norm, output head) over candle tensors: training
/// with gradients, and inference with forge's decoding kernels and a [`KvCache`].
pub struct Decoder {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    eps: f64,
    inv_freq: Tensor,
    /// The type activations and matrix products are computed in (f32, or bf16 on a GPU); weights keep
    /// their own type and are cast where they are used.
    compute: DType,
    /// Where the layers' nodes leave their weight gradients in a backward pass ([`layer_node`]).
    layer_grads: layer_node::LayerGrads,
    /// Activation checkpointing ([`Decoder::checkpoint_layers`]).
    checkpoint: bool,
    /// Each layer's fused kernels as graph nodes of their own instead of one node per layer: the
    /// reference the layer nodes are tested against.
    pub(super) per_op: bool,
    /// The checkpoint's `config.json`.
    pub config: ModelConfig,
}

/// `x W^T + b` over `[batch, seq, in]` as one matrix product of `[batch * seq, in]`: candle's `Linear`
/// broadcasts the weight over the batch instead, one small product per row, which at decode time (seq = 1)
/// is a gemm per sequence and made batching nearly useless. With a LoRA adapter, `+ scale * x A^T B^T`
/// (peft's convention: the base output is not scaled).
#[derive(Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    pub(super) bias: Option<Tensor>,
    /// A LoRA adapter on it, when one is trained.
    pub lora: Option<Lora>,
}

/// A low-rank update of a linear layer: `A` is `[rank, in]`, `B` is `[out, rank]`.
#[derive(Clone)]
pub struct Lora {
    /// `[rank, in]`.
    pub a: Tensor,
    /// `[out, rank]`, zero at the start.
    pub b: Tensor,
    /// `alpha / rank`.
    pub scale: f64,
}

impl Linear {
    fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias, lora: None }
    }

    fn detached(&self) -> Linear {
        let lora = self.lora.as_ref().map(|l| Lora { a: l.a.detach(), b: l.b.detach(), scale: l.scale });
        Linear { weight: self.weight.detach(), bias: self.bias.as_ref().map(Tensor::detach), lora }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (b, t, i) = x.dims3()?;
        let w = cast(&self.weight, x.dtype())?;
        // a decoding step (one position per row, nothing to differentiate) skips gemm's repacking of the
        // weight; prompts take gemm. Choosing by the step rather than the row count keeps each row's
        // numbers independent of how many rows share the batch.
        let decoding = t == 1 && infer::applies(&[x, &w]);
        if !decoding && fused::cpu_f32(&[x, &w]) {
            let y = fused::linear(x, &w, self.bias.as_ref())?;
            let Some(l) = &self.lora else { return Ok(y) };
            let (a, b) = (cast(&l.a, x.dtype())?, cast(&l.b, x.dtype())?);
            return y + (fused::linear(&fused::linear(x, &a, None)?, &b, None)? * l.scale)?;
        }
        let x = x.reshape((b * t, i))?;
        let mut y = if decoding { infer::decode_matmul(&x, &w)? } else { x.matmul(&w.t()?)? };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(&cast(bias, x.dtype())?)?;
        }
        if let Some(l) = &self.lora {
            let (a, b) = (cast(&l.a, x.dtype())?, cast(&l.b, x.dtype())?);
            y = (y + (x.matmul(&a.t()?)?.matmul(&b.t()?)? * l.scale)?)?;
        }
        y.reshape((b, t, ()))
    }
}

/// `w` in `dtype`: the weights stay f32 (the optimizer's master copy) and are cast where they are used when
/// the model computes in bf16; `to_dtype` passes the gradient back to the f32 weight.
fn cast(w: &Tensor, dtype: DType) -> CResult<Tensor> {
    if w.dtype() == dtype { Ok(w.clone()) } else { w.to_dtype(dtype) }
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
                eps: config.rms_norm_eps,
            });
        }
        let norm = vb.get(h, "model.norm.weight")?;
        let norm_dtype = norm.dtype();
        let lm_head = if let Some(labels) = config.classifier_labels() {
            linear(&vb, h, labels, false, "score")?
        } else if config.tie_word_embeddings {
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
            compute: norm_dtype,
            layer_grads: Default::default(),
            checkpoint: false,
            per_op: false,
            config: config.clone(),
        })
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        self.norm.device()
    }

    /// The same model over the same weights, recording no gradient graph: the storage is shared, so an
    /// optimizer's in-place updates show at once (no copy), and it decodes with the inference kernels.
    /// The RL trainer samples its rollouts with it.
    pub fn detached(&self) -> Decoder {
        Decoder {
            embed: Embedding::new(self.embed.embeddings().detach(), self.config.hidden_size),
            layers: self.layers.iter().map(Layer::detached).collect(),
            norm: self.norm.detach(),
            lm_head: self.lm_head.detached(),
            eps: self.eps,
            inv_freq: self.inv_freq.clone(),
            compute: self.compute,
            layer_grads: Default::default(),
            checkpoint: false,
            per_op: false,
            config: self.config.clone(),
        }
    }

    /// Compute in `dtype` (bf16 for mixed-precision training: the weights stay as they are).
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
    }

    /// The type activations and matrix products are computed in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Activation checkpointing from now on: in a pass without a cache each layer keeps only its input
    /// for the backward pass, which runs it again (`model/layer_node.rs`).
    pub fn checkpoint_layers(&mut self) {
        self.checkpoint = true;
    }

    /// The gradients of `loss`: `loss.backward()`, plus the weight gradients the layers' nodes computed
    /// on the side (`model/layer_node.rs`). `loss.backward()` alone misses those.
    pub fn backward(&self, loss: &Tensor) -> CResult<GradStore> {
        let take = || std::mem::take(&mut *self.layer_grads.lock().expect("not poisoned"));
        take(); // left over by a backward pass that failed half-way
        let mut grads = loss.backward()?;
        grads.extend(take())?;
        Ok(grads)
    }

    /// Every linear layer of the blocks with its transformers module path
    /// (`model.layers.0.self_attn.q_proj`, ...); the head is not among them.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &mut l.attn;
            for (name, lin) in [("q_proj", &mut a.q), ("k_proj", &mut a.k), ("v_proj", &mut a.v), ("o_proj", &mut a.o)]
            {
                out.push((format!("{p}.self_attn.{name}"), lin));
            }
            let m = &mut l.mlp;
            for (name, lin) in [("gate_proj", &mut m.gate), ("up_proj", &mut m.up), ("down_proj", &mut m.down)] {
                out.push((format!("{p}.mlp.{name}"), lin));
            }
        }
        out
    }

    /// Logits `[batch, seq, vocab]` (f32) for `ids` at `positions`, attending through `mask` to the cache
    /// (when given, it is extended with this call's keys and values) and to each other.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Mask,
        cache: Option<&mut KvCache>,
    ) -> CResult<Tensor> {
        self.head(&self.hidden(ids, positions, mask, cache)?)
    }

    /// Replace the language-model head with a fresh, trainable one-label `score` head (zeros, in `vars`
    /// as `score.weight`): the model becomes a reward model, as transformers' `*ForSequenceClassification`
    /// with one label. A resumed run restores the head's weights from its checkpoint by that name.
    pub fn score_head(&mut self, vars: &candle_nn::VarMap) -> CResult<()> {
        let h = self.config.hidden_size;
        let w = vars.get((1, h), "score.weight", candle_nn::Init::Const(0.0), DType::F32, self.device())?;
        self.lm_head = Linear::new(w, None);
        Ok(())
    }

    /// Logits (f32) of final hidden states `[.., hidden]`.
    pub fn head(&self, hidden: &Tensor) -> CResult<Tensor> {
        // rows of final states are one position each, as in a decoding step
        let x = if hidden.rank() == 2 { hidden.unsqueeze(1)? } else { hidden.clone() };
        let logits = self.lm_head.forward(&x)?.to_dtype(DType::F32)?;
        if hidden.rank() == 2 { logits.squeeze(1) } else { Ok(logits) }
    }

    /// The summed negative log-likelihood of `targets` (`[n]`) after the final hidden states `hidden`
    /// (`[n, hidden]`): the head and cross-entropy fused on the CPU ([`fused::head_nll`]).
    pub fn head_nll(&self, hidden: &Tensor, targets: &Tensor) -> CResult<Tensor> {
        let head = &self.lm_head;
        if head.bias.is_none() && head.lora.is_none() && fused::cpu_f32(&[hidden, &head.weight]) {
            return fused::head_nll(hidden, &head.weight, targets);
        }
        let logp = candle_nn::ops::log_softmax(&self.head(hidden)?, D::Minus1)?;
        logp.gather(&targets.unsqueeze(1)?, 1)?.sum_all()?.neg()
    }

    /// The final (normed) hidden states `[batch, seq, hidden]`, before the head: the trainer applies the
    /// head only at the positions that carry a loss.
    pub fn hidden(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Mask,
        cache: Option<&mut KvCache>,
    ) -> CResult<Tensor> {
        let (b, t) = ids.dims2()?;
        let (cos, sin) = self.rope_tables(positions, b, t)?;
        let mut x = self.embed.forward(ids)?.to_dtype(self.compute)?;
        let mut cache = cache;
        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() != self.layers.len()
        {
            c.layers = vec![None; self.layers.len()];
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let past = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let node = past.is_none() && (self.checkpoint || (!self.per_op && layer_node::applies(layer, &x)));
            x = if node {
                layer_node::layer(layer, &x, [&cos, &sin], mask, &self.layer_grads, self.checkpoint)?
            } else {
                layer.forward(&x, &cos, &sin, mask, past)?
            };
        }
        rms_norm(&x, &self.norm, self.eps)
    }

    /// cos and sin of every position's rotation, `[batch, 1, seq, head_dim / 2]`.
    fn rope_tables(&self, positions: &Tensor, b: usize, t: usize) -> CResult<(Tensor, Tensor)> {
        let pos = positions.to_dtype(DType::F32)?.reshape((b, t, 1))?;
        let angles = pos.broadcast_mul(&self.inv_freq.reshape((1, 1, ()))?)?;
        let dtype = self.compute;
        Ok((angles.cos()?.unsqueeze(1)?.to_dtype(dtype)?, angles.sin()?.unsqueeze(1)?.to_dtype(dtype)?))
    }
}

impl Layer {
    pub(super) fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Mask,
        past: Option<&mut Option<Slot>>,
    ) -> CResult<Tensor> {
        let attn = self.attn.forward(&rms_norm(x, &self.input_norm, self.eps)?, cos, sin, mask, past)?;
        let x = (x + attn)?;
        let mlp = self.mlp.forward(&rms_norm(&x, &self.post_norm, self.eps)?)?;
        x + mlp
    }

    /// The same layer over the same weights, recording no gradient graph.
    pub(super) fn detached(&self) -> Layer {
        let a = &self.attn;
        Layer {
            input_norm: self.input_norm.detach(),
            attn: Attention { q: a.q.detached(), k: a.k.detached(), v: a.v.detached(), o: a.o.detached(), ..*a },
            post_norm: self.post_norm.detach(),
            mlp: Mlp { gate: self.mlp.gate.detached(), up: self.mlp.up.detached(), down: self.mlp.down.detached() },
            eps: self.eps,
        }
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (gate, up) = (self.gate.forward(x)?, self.up.forward(x)?);
        let act = if fused::cpu_f32(&[&gate, &up]) { fused::silu_mul(&gate, &up)? } else { (gate.silu()? * up)? };
        self.down.forward(&act)
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Mask,
        past: Option<&mut Option<Slot>>,
    ) -> CResult<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (q, k, v) = (self.q.forward(x)?, self.k.forward(x)?, self.v.forward(x)?);
        if infer::applies(&[&q, &k, &v, cos]) {
            return self.forward_inference(q, k, v, cos, sin, mask, past);
        }
        let d = self.head_dim;
        let scale = 1.0 / (d as f64).sqrt();
        if past.is_none() && fused::cpu_f32(&[&q, &k, &v, cos]) {
            let (q, k) = (fused::rope(&q, cos, sin)?, fused::rope(&k, cos, sin)?);
            return self.o.forward(&fused::flash_attention(&q, &k, &v, [self.heads, self.kv_heads], mask, scale)?);
        }
        let split = |y: Tensor, heads: usize| y.reshape((b, t, heads, d))?.transpose(1, 2);
        let q = rotate(&split(q, self.heads)?, cos, sin)?;
        let mut k = rotate(&split(k, self.kv_heads)?, cos, sin)?.contiguous()?;
        let mut v = split(v, self.kv_heads)?.contiguous()?;
        if let Some(past) = past {
            (k, v) = Slot::extend(past, &k, &v)?;
        }
        // Query heads grouped under their kv head, `[b, kv, groups * t, d]`, so each kv head's keys and
        // values serve its whole group without being copied per head (query head i reads kv head
        // i / groups, as transformers' `repeat_kv`).
        let groups = self.heads / self.kv_heads;
        let q = q.contiguous()?.reshape((b, self.kv_heads, groups * t, d))?;
        let probs = range_softmax(&q.matmul(&k.t()?)?, mask, scale)?.to_dtype(v.dtype())?;
        let out = probs.matmul(&v)?;
        let out = out.reshape((b, self.heads, t, d))?.transpose(1, 2)?;
        self.o.forward(&out.reshape((b, t, self.heads * d))?)
    }

    /// The same with the inference kernels: rotation and attention on `[batch, seq, heads, head_dim]`,
    /// which is the projections' layout, so nothing is transposed but the keys and values the cache keeps.
    #[allow(clippy::too_many_arguments)]
    fn forward_inference(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Mask,
        past: Option<&mut Option<Slot>>,
    ) -> CResult<Tensor> {
        let (b, t, _) = q.dims3()?;
        let d = self.head_dim;
        let q = fused::rope(&q.reshape((b, t, self.heads, d))?, cos, sin)?;
        let k = fused::rope(&k.reshape((b, t, self.kv_heads, d))?, cos, sin)?;
        let (mut k, mut v) =
            (k.transpose(1, 2)?.contiguous()?, v.reshape((b, t, self.kv_heads, d))?.transpose(1, 2)?.contiguous()?);
        if let Some(past) = past {
            (k, v) = Slot::extend(past, &k, &v)?;
        }
        let out = infer::attention(&q, &k, &v, mask, 1.0 / (d as f64).sqrt())?;
        self.o.forward(&out.reshape((b, t, self.heads * d))?)
    }
}

/// RMSNorm as transformers computes it: in f32, then back to the input's type, then the weight.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> CResult<Tensor> {
    if fused::cpu_f32(&[x, weight]) {
        return fused::rms_norm(x, weight, eps);
    }
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let rms = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x32.broadcast_div(&rms)?.to_dtype(dtype)?.broadcast_mul(&cast(weight, dtype)?)
}

/// Rotary embedding, rotate-half layout (as transformers' Qwen2 and Llama).
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let (x1, x2) = (x.narrow(D::Minus1, 0, half)?, x.narrow(D::Minus1, half, half)?);
    let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[a, b], D::Minus1)
}

/// The mask for `batch` rows of `t` new positions after `past` cached ones: causal, and closed to the
/// keys before each row's first valid one (`valid` is `[batch][past + t]`: left padding, then real
/// tokens). A padding query sees only itself (a query that saw no key would make softmax NaN).
pub fn attention_mask(valid: &[Vec<bool>], past: usize, t: usize) -> Mask {
    let mut ranges = Vec::with_capacity(valid.len() * t);
    for row in valid {
        let first = row.iter().position(|&v| v).unwrap_or(0);
        for q in past..past + t {
            let real = row.get(q).copied().unwrap_or(false) && first <= q;
            ranges.push(if real { (first as u32, q as u32) } else { (q as u32, q as u32) });
        }
    }
    Mask::new(ranges, valid.len(), t, past + t)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Appending past the buffer's capacity grows it and keeps every position in order.
    #[test]
    fn cache_slot_grows_and_keeps_order() {
        let dev = Device::Cpu;
        let step = |i: usize| Tensor::full(i as f32, (1, 2, 1, 4), &dev).unwrap();
        let mut slot = Slot::new(&step(0), &step(0)).unwrap();
        for i in 1..(2 * CACHE_STEP + 10) {
            slot.push(&step(i), &step(i)).unwrap();
        }
        let (k, v) = slot.filled().unwrap();
        assert_eq!(k.dims(), &[1, 2, 2 * CACHE_STEP + 10, 4]);
        let firsts: Vec<f32> =
            k.narrow(1, 1, 1).unwrap().narrow(3, 0, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(firsts.iter().enumerate().all(|(i, &x)| x == i as f32));
        assert_eq!(
            v.flatten_all().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(),
            k.flatten_all().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
        );
    }
}
