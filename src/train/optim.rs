//! AdamW as PyTorch defines it (decoupled weight decay, bias-corrected moments), written over plain f32
//! buffers: gradients of micro-batches are summed into one buffer per parameter (exact accumulation),
//! clipped by their global norm, and the update runs in place across cores. candle's own `AdamW` issues a
//! dozen allocating tensor ops per parameter, decays every parameter and has no clipping or schedule
//! (`../shared/notes/training.md` §2).
//!
//! Weight decay skips one-dimensional parameters (norm weights and biases), as transformers' `Trainer`
//! does. Moments and the update stay in f32 whatever the compute type (pure-bf16 AdamW drops small
//! updates).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

type CResult<T> = candle_core::Result<T>;

/// How the learning rate moves after the linear warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Half a cosine from the peak to zero.
    Cosine,
    /// A straight line from the peak to zero.
    Linear,
    /// The peak throughout.
    Constant,
}

/// The learning rate of update `step` (0-based) of `total`: linear warmup over `warmup` updates to
/// `peak` (the first update already uses `peak / warmup`), then the schedule's decay.
pub fn learning_rate(schedule: Schedule, peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match schedule {
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
        Schedule::Linear => peak * (1.0 - progress).max(0.0),
        Schedule::Constant => peak,
    }
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    grad: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// AdamW with decoupled weight decay, as PyTorch's (`torch.optim.AdamW`), its state in f32.
pub struct AdamW {
    params: Vec<Param>,
    /// Updates done.
    pub steps: u64,
    /// Decay of the gradient's running mean.
    pub beta1: f64,
    /// Decay of the squared gradient's running mean.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay (not on norms and biases).
    pub weight_decay: f64,
}

impl AdamW {
    /// An optimizer over every variable of `vars`, in name order.
    pub fn new(vars: &VarMap, weight_decay: f64) -> AdamW {
        let data = vars.data().lock().expect("not poisoned");
        let mut params: Vec<Param> = data
            .iter()
            .map(|(name, var)| {
                let n = var.elem_count();
                Param {
                    name: name.clone(),
                    var: var.clone(),
                    decay: var.rank() >= 2,
                    grad: vec![0.0; n],
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                }
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        AdamW { params, steps: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay }
    }

    /// Add a backward pass's gradients to the accumulated ones.
    pub fn accumulate(&mut self, grads: &GradStore) -> CResult<()> {
        for p in &mut self.params {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                let g = g.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
                p.grad.par_iter_mut().zip(g.par_iter()).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    /// The global L2 norm of the accumulated gradients.
    pub fn grad_norm(&self) -> f64 {
        self.params
            .par_iter()
            .map(|p| p.grad.iter().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>())
            .sum::<f64>()
            .sqrt()
    }

    /// One update with learning rate `lr`, the gradients first scaled down to a global norm of at most
    /// `max_norm` (0: no clipping). Clears the gradients; returns their norm before clipping.
    pub fn step(&mut self, lr: f64, max_norm: f64) -> CResult<f64> {
        let norm = self.grad_norm();
        let scale = if max_norm > 0.0 && norm > max_norm { (max_norm / (norm + 1e-6)) as f32 } else { 1.0 };
        self.steps += 1;
        let t = self.steps as i32;
        // 1 - beta in f64 first: 1 - 0.999f32 is off by 5e-5 relative
        let (c1, c2, b2) = ((1.0 - self.beta1) as f32, (1.0 - self.beta2) as f32, self.beta2 as f32);
        let step_size = (lr / (1.0 - self.beta1.powi(t))) as f32;
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt() as f32;
        let (eps, lr32, wd) = (self.eps as f32, lr as f32, self.weight_decay as f32);
        self.params.par_iter_mut().try_for_each(|p| -> CResult<()> {
            let mut w = p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let shrink = if p.decay { 1.0 - lr32 * wd } else { 1.0 };
            for (((w, g), m), v) in w.iter_mut().zip(&mut p.grad).zip(&mut p.m).zip(&mut p.v) {
                let g_ = *g * scale;
                *m += c1 * (g_ - *m); // torch's `lerp`
                *v = b2 * *v + c2 * g_ * g_;
                *w = *w * shrink - step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                *g = 0.0;
            }
            p.var.set(&Tensor::from_vec(w, p.var.dims(), p.var.device())?)
        })?;
        Ok(norm)
    }

    /// The moments as named tensors (`m.<param>`, `v.<param>`), to checkpoint them.
    pub fn state(&self) -> CResult<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            let dev = p.var.device();
            out.insert(format!("m.{}", p.name), Tensor::from_slice(&p.m, p.var.dims(), dev)?);
            out.insert(format!("v.{}", p.name), Tensor::from_slice(&p.v, p.var.dims(), dev)?);
        }
        Ok(out)
    }

    /// Restore the moments saved by [`AdamW::state`] after `steps` updates.
    pub fn restore(&mut self, state: &HashMap<String, Tensor>, steps: u64) -> CResult<()> {
        for p in &mut self.params {
            for (key, buf) in [("m", &mut p.m), ("v", &mut p.v)] {
                let name = format!("{key}.{}", p.name);
                let t = state
                    .get(&name)
                    .ok_or_else(|| candle_core::Error::Msg(format!("no `{name}` in the optimizer state")))?;
                *buf = t.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The update equals PyTorch's `torch.optim.AdamW` (values from torch 2.15: lr 0.1, wd 0.1, two steps
    /// with gradients [1, -2] then [0.5, 0.5] on w = [1, 1]); a 1-D parameter is not decayed.
    #[test]
    fn matches_torch_adamw() {
        let vars = VarMap::new();
        let w = vars.get((1, 2), "w", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        let b = vars.get(2, "b", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&vars, 0.1);
        for g in [[1.0f32, -2.0], [0.5, 0.5]] {
            let loss = (w.flatten_all().unwrap() * Tensor::new(&g, &Device::Cpu).unwrap()).unwrap().sum_all().unwrap()
                + (b.clone() * Tensor::new(&g, &Device::Cpu).unwrap()).unwrap().sum_all().unwrap();
            opt.accumulate(&loss.unwrap().backward().unwrap()).unwrap();
            opt.step(0.1, 0.0).unwrap();
        }
        let got: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let want = [0.787_882_1_f32, 1.126_046_8];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        let got_b: Vec<f32> = b.to_vec1().unwrap();
        let want_b = [0.806_782_1_f32, 1.146_946_8];
        for (g, w) in got_b.iter().zip(want_b) {
            assert!((g - w).abs() < 1e-6, "{got_b:?} vs {want_b:?}");
        }
    }

    /// Clipping scales the whole gradient to the norm asked for.
    #[test]
    fn clipping_bounds_the_global_norm() {
        let vars = VarMap::new();
        let w = vars.get(2, "w", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&vars, 0.0);
        let loss = (w.clone() * Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()).unwrap().sum_all().unwrap();
        opt.accumulate(&loss.backward().unwrap()).unwrap();
        opt.accumulate(&loss.backward().unwrap()).unwrap();
        assert!((opt.grad_norm() - 10.0).abs() < 1e-9, "accumulation sums gradients");
        assert!((opt.step(1e-3, 1.0).unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(opt.grad_norm(), 0.0, "a step clears the gradients");
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let lr = |s, step| learning_rate(s, 1.0, step, 10, 110);
        assert!((lr(Schedule::Cosine, 0) - 0.1).abs() < 1e-12);
        assert!((lr(Schedule::Cosine, 9) - 1.0).abs() < 1e-12);
        assert!((lr(Schedule::Cosine, 60) - 0.5).abs() < 1e-12);
        assert!(lr(Schedule::Cosine, 110).abs() < 1e-12);
        assert!((lr(Schedule::Linear, 60) - 0.5).abs() < 1e-12);
        assert_eq!(lr(Schedule::Constant, 100), 1.0);
    }
}
