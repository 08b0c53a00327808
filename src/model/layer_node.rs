//! A decoder layer as one node of candle's gradient graph, with a backward pass written by hand from the
//! fused kernels' gradients (CPU, f32, no LoRA adapter). Left to candle, a layer is fifteen nodes (two
//! norms, seven linear layers, two rotations, attention, the gated activation, two residual adds), and
//! candle's backward pass gives every input of every node a zeroed gradient buffer and adds the node's
//! gradient into it: in a profile of a small model's step on a 2-core Intel Xeon those memsets, adds and
//! the thread pool's waits around them took about a fifth of the time. Here the forward pass keeps the
//! activations the backward pass reads, and the backward pass chains the kernels' gradients, the linear
//! layers that read one input adding their products into one buffer.
//!
//! Activation checkpointing (`--checkpoint-layers`) makes the node keep only its input: its backward pass
//! runs the layer's forward pass again first. The activations inside a layer (the normed inputs, q/k/v,
//! the attention output, the MLP's gate, up and product, each `[tokens, width]`) are then held for one
//! layer at a time instead of for all of them; the price is one more forward pass of the layers. Where the
//! fused kernels do not apply (another device or type, a LoRA adapter), a checkpointed layer is recomputed
//! with a candle graph and backpropagated through that.
//!
//! Custom ops take at most three inputs, so the layer's weight gradients cannot flow back through the
//! node: its backward pass leaves them in a [`LayerGrads`] store, which [`super::Decoder::backward`] adds to
//! the gradients it returns.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Shape, Tensor, Var};

use super::decoder::{Layer, Linear};
use super::fused::{self, FlashAttention, Mask};

type CResult<T> = candle_core::Result<T>;

/// Weight gradients of layer nodes, gathered during a backward pass.
pub(super) type LayerGrads = Arc<Mutex<GradStore>>;

/// Whether `layer` over `x` runs as one node with the hand-written backward pass: a graph is recorded, and
/// the fused kernels apply (CPU, f32, no adapter).
pub(super) fn applies(layer: &Layer, x: &Tensor) -> bool {
    let weights = weights(layer);
    (x.track_op() || weights.iter().any(|w| w.track_op()))
        && linears(layer).iter().all(|l| l.lora.is_none())
        && fused::cpu_f32(&[x])
        && fused::cpu_f32(&weights)
}

/// `layer` over `x` (no cache) as one node of the gradient graph; `checkpoint` keeps only `x` for the
/// backward pass. Without the fused kernels ([`applies`]) only a checkpointed layer is made a node.
pub(super) fn layer(
    layer: &Layer,
    x: &Tensor,
    [cos, sin]: [&Tensor; 2],
    mask: &Mask,
    grads: &LayerGrads,
    checkpoint: bool,
) -> CResult<Tensor> {
    let fused = applies(layer, x);
    let (y, kept) = if fused {
        let (y, kept) = forward(layer, x, [cos, sin], mask)?;
        (y, (!checkpoint).then_some(kept))
    } else {
        (layer.detached().forward(&x.detach(), cos, sin, mask, None)?.contiguous()?, None)
    };
    // The node is recorded only over an input that records a graph: the first layer's input does not
    // when the embedding is frozen (LoRA), but the layer's own weights may still be trained.
    let x = if x.track_op() { x.clone() } else { Var::from_tensor(x)?.into_inner() };
    let op = Node {
        layer: layer.clone(),
        cos: cos.clone(),
        sin: sin.clone(),
        mask: mask.clone(),
        grads: grads.clone(),
        fused,
        kept: Mutex::new(kept),
    };
    x.apply_op2(&y, op)
}

/// The layer's seven linear layers.
fn linears(l: &Layer) -> [&Linear; 7] {
    let (a, m) = (&l.attn, &l.mlp);
    [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
}

/// Every weight and bias of the layer.
fn weights(l: &Layer) -> Vec<&Tensor> {
    let mut out = vec![&l.input_norm, &l.post_norm];
    for lin in linears(l) {
        out.push(&lin.weight);
        out.extend(&lin.bias);
    }
    out
}

/// What the backward pass reads, kept by the forward pass (none of it records a graph).
struct Kept {
    /// The layer's input, and it normed.
    x: Tensor,
    normed: Tensor,
    /// The rotated queries and keys, and the values.
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attention: FlashAttention,
    /// The attention's output, before the output projection.
    attended: Tensor,
    /// The residual stream after attention, and it normed.
    mid: Tensor,
    mid_normed: Tensor,
    gate: Tensor,
    up: Tensor,
    /// `silu(gate) · up`.
    act: Tensor,
}

/// The layer's output over `x` with the fused kernels, recording no graph, and what its backward pass reads.
fn forward(l: &Layer, x: &Tensor, [cos, sin]: [&Tensor; 2], mask: &Mask) -> CResult<(Tensor, Kept)> {
    let linear = |lin: &Linear, x: &Tensor| {
        fused::linear(x, &lin.weight.detach(), lin.bias.as_ref().map(Tensor::detach).as_ref())
    };
    let (a, m) = (&l.attn, &l.mlp);
    let x = x.detach().contiguous()?;
    let normed = fused::rms_norm(&x, &l.input_norm.detach(), l.eps)?;
    let q = fused::rope(&linear(&a.q, &normed)?, cos, sin)?;
    let k = fused::rope(&linear(&a.k, &normed)?, cos, sin)?;
    let v = linear(&a.v, &normed)?;
    let attention = FlashAttention::new([a.heads, a.kv_heads], mask, 1.0 / (a.head_dim as f64).sqrt());
    let attended = attention.forward(&q, &k, &v)?;
    let mid = (&x + linear(&a.o, &attended)?)?;
    let mid_normed = fused::rms_norm(&mid, &l.post_norm.detach(), l.eps)?;
    let (gate, up) = (linear(&m.gate, &mid_normed)?, linear(&m.up, &mid_normed)?);
    let act = fused::silu_mul(&gate, &up)?;
    let y = (&mid + linear(&m.down, &act)?)?;
    Ok((y, Kept { x, normed, q, k, v, attention, attended, mid, mid_normed, gate, up, act }))
}

/// The gradient of the layer's input from its output's, `dy`; the weights' gradients go to `grads`.
fn backward(l: &Layer, kept: Kept, dy: &Tensor, [cos, sin]: [&Tensor; 2], grads: &mut GradStore) -> CResult<Tensor> {
    let (a, m) = (&l.attn, &l.mlp);
    let dy = dy.detach().contiguous()?;
    let mut keep = |lins: &[&Linear], got: Vec<[Option<Tensor>; 2]>| -> CResult<()> {
        for (lin, [dw, db]) in lins.iter().zip(got) {
            add(grads, &lin.weight, dw)?;
            if let Some(b) = &lin.bias {
                add(grads, b, db)?;
            }
        }
        Ok(())
    };
    // the MLP and its residual
    let (dact, got) = fused::linear_grads(&kept.act, &[(&m.down.weight, None, &dy)])?;
    keep(&[&m.down], got)?;
    let (dgate, dup) = fused::silu_mul_grad(&kept.gate, &kept.up, &dact)?;
    let (dnormed, got) =
        fused::linear_grads(&kept.mid_normed, &[(&m.gate.weight, None, &dgate), (&m.up.weight, None, &dup)])?;
    keep(&[&m.gate, &m.up], got)?;
    let (dmid, dnorm) = fused::rms_norm_grad(&kept.mid, &l.post_norm, l.eps, &dnormed)?;
    let dmid = (dmid + dy)?;
    // attention and its residual
    let (dattended, got) = fused::linear_grads(&kept.attended, &[(&a.o.weight, None, &dmid)])?;
    keep(&[&a.o], got)?;
    let [dq, dk, dv] = kept.attention.grad(&kept.q, &kept.k, &kept.v, &kept.attended, &dattended)?;
    let (dq, dk) = (fused::rope_grad(&dq, cos, sin)?, fused::rope_grad(&dk, cos, sin)?);
    let qkv = [&a.q, &a.k, &a.v];
    let (dnormed, got) = fused::linear_grads(
        &kept.normed,
        &[
            (&a.q.weight, a.q.bias.as_ref(), &dq),
            (&a.k.weight, a.k.bias.as_ref(), &dk),
            (&a.v.weight, a.v.bias.as_ref(), &dv),
        ],
    )?;
    keep(&qkv, got)?;
    let (dx, dinput_norm) = fused::rms_norm_grad(&kept.x, &l.input_norm, l.eps, &dnormed)?;
    add(grads, &l.post_norm, l.post_norm.track_op().then_some(dnorm))?;
    add(grads, &l.input_norm, l.input_norm.track_op().then_some(dinput_norm))?;
    dx + dmid
}

/// Add `grad` (when there is one) to `tensor`'s gradient in `grads`.
fn add(grads: &mut GradStore, tensor: &Tensor, grad: Option<Tensor>) -> CResult<()> {
    let Some(grad) = grad else { return Ok(()) };
    let sum = match grads.remove(tensor) {
        Some(before) => (before + grad)?,
        None => grad,
    };
    grads.insert(tensor, sum);
    Ok(())
}

struct Node {
    layer: Layer,
    cos: Tensor,
    sin: Tensor,
    mask: Mask,
    grads: LayerGrads,
    /// Whether the fused kernels compute the layer (else a checkpointed layer recomputed with a graph).
    fused: bool,
    /// What the backward pass reads, until it runs; `None` for a checkpointed layer.
    kept: Mutex<Option<Kept>>,
}

impl CustomOp2 for Node {
    fn name(&self) -> &'static str {
        "decoder-layer"
    }

    // the output is the second operand, computed without a graph
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, y: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        Ok((y.try_clone(layout)?, layout.shape().clone()))
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, y: &CudaStorage, layout: &Layout) -> CResult<(CudaStorage, Shape)> {
        Ok((y.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let tables = [&self.cos, &self.sin];
        if self.fused {
            let kept = self.kept.lock().expect("not poisoned").take();
            let kept = match kept {
                Some(kept) => kept,
                None => forward(&self.layer, x, tables, &self.mask)?.1,
            };
            let mut grads = self.grads.lock().expect("not poisoned");
            return Ok((Some(backward(&self.layer, kept, grad, tables, &mut grads)?), None));
        }
        let input = Var::from_tensor(&x.detach())?;
        let out = self.layer.forward(input.as_tensor(), &self.cos, &self.sin, &self.mask, None)?;
        // d(sum(out · grad)) / d(weights) is the weights' share of the outer loss's gradient
        let grad = grad.detach();
        let mut grads = (out * &grad)?.sum_all()?.backward()?;
        // candle differentiates by `grad` too: that product with `out` would keep the recomputed layer's
        // activations alive until the optimizer step
        grads.remove(&grad);
        let dx = grads.remove(input.as_tensor());
        self.grads.lock().expect("not poisoned").extend(grads)?;
        Ok((dx, None))
    }
}
