//! Activation checkpointing (`--checkpoint-layers`): a decoder layer keeps only its input for the backward
//! pass, which runs the layer again from it, with a gradient graph, and backpropagates through that. The
//! activations inside a layer (the normed inputs, q/k/v, the attention output, the MLP's gate, up and
//! product, each `[tokens, width]`) are then held for one layer at a time instead of for all of them; the
//! price is one more forward pass of the layers.
//!
//! In candle's graph a checkpointed layer is one node over its input (a custom op whose forward pass
//! hands on the output computed without a graph). Custom ops take at most three inputs, so the layer's
//! weight gradients cannot flow back through the node: its backward pass leaves them in a [`LayerGrads`]
//! store, which [`super::Decoder::backward`] adds to the gradients it returns.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Shape, Tensor, Var};

use super::decoder::Layer;
use super::fused::Mask;

type CResult<T> = candle_core::Result<T>;

/// Weight gradients of checkpointed layers, gathered during a backward pass.
pub(super) type LayerGrads = Arc<Mutex<GradStore>>;

/// `layer` over `x` (no cache), checkpointed: the gradient graph gets one node for it.
pub(super) fn layer(
    layer: &Layer,
    x: &Tensor,
    [cos, sin]: [&Tensor; 2],
    mask: &Mask,
    grads: &LayerGrads,
) -> CResult<Tensor> {
    let y = layer.detached().forward(&x.detach(), cos, sin, mask, None)?.contiguous()?;
    // The node is recorded only over an input that records a graph: the first layer's input does not
    // when the embedding is frozen (LoRA), but the layer's own weights may still be trained.
    let x = if x.track_op() { x.clone() } else { Var::from_tensor(x)?.into_inner() };
    let op = Checkpointed {
        layer: layer.clone(),
        cos: cos.clone(),
        sin: sin.clone(),
        mask: mask.clone(),
        grads: grads.clone(),
    };
    x.apply_op2(&y, op)
}

struct Checkpointed {
    layer: Layer,
    cos: Tensor,
    sin: Tensor,
    mask: Mask,
    grads: LayerGrads,
}

impl CustomOp2 for Checkpointed {
    fn name(&self) -> &'static str {
        "checkpointed-layer"
    }

    // the output is the second operand, computed without a graph
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, y: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        Ok((y.try_clone(layout)?, layout.shape().clone()))
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, y: &CudaStorage, layout: &Layout) -> CResult<(CudaStorage, Shape)> {
        Ok((y.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
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
