//! Fused CPU kernels with their own backward pass, for the places where the composite ops cost most.
//!
//! Every attention mask forge builds (causal, left padding, examples packed into one row) lets a query
//! see one contiguous range of keys, so a mask is a `(first, last)` key pair per query ([`Mask`]), and
//! masked softmax is one pass per row ([`range_softmax`]) instead of a dense `[b, 1, t, keys]` mask, a
//! broadcast add and five softmax ops, each of which also allocates its gradient in the backward pass.
//! Other devices use the composite ops over the dense mask ([`Mask::dense`]); a test checks the two agree,
//! values and gradients.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// For each (batch row, query), the inclusive range of key positions it attends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    ranges: Arc<Vec<(u32, u32)>>,
    pub batch: usize,
    pub queries: usize,
    pub keys: usize,
}

impl Mask {
    /// `ranges[b * queries + q]` is the first and last key query `q` of row `b` sees (`first <= last < keys`).
    pub fn new(ranges: Vec<(u32, u32)>, batch: usize, queries: usize, keys: usize) -> Mask {
        assert_eq!(ranges.len(), batch * queries, "one key range per query");
        debug_assert!(ranges.iter().all(|&(a, b)| a <= b && (b as usize) < keys));
        Mask { ranges: Arc::new(ranges), batch, queries, keys }
    }

    pub fn range(&self, b: usize, q: usize) -> (u32, u32) {
        self.ranges[b * self.queries + q]
    }

    /// The additive mask `[batch, 1, queries, keys]` (0 inside the range, −inf outside).
    pub fn dense(&self, device: &Device) -> CResult<Tensor> {
        let mut data = vec![f32::NEG_INFINITY; self.batch * self.queries * self.keys];
        for (row, &(a, b)) in data.chunks_mut(self.keys).zip(self.ranges.iter()) {
            row[a as usize..=b as usize].fill(0.0);
        }
        Tensor::from_vec(data, (self.batch, 1, self.queries, self.keys), device)
    }
}

/// `softmax(scale * scores)` over each query's key range, zero outside it. `scores` is
/// `[batch, heads, groups * queries, keys]` (query heads grouped under their kv head, query index
/// fastest), f32.
pub fn range_softmax(scores: &Tensor, mask: &Mask, scale: f64) -> CResult<Tensor> {
    if !matches!(scores.device(), Device::Cpu) || scores.dtype() != DType::F32 {
        let (b, h, gq, k) = scores.dims4()?;
        let s = (scores.to_dtype(DType::F32)? * scale)?
            .reshape((b, h, gq / mask.queries, mask.queries, k))?
            .broadcast_add(&mask.dense(scores.device())?.unsqueeze(1)?)?;
        return candle_nn::ops::softmax(&s, candle_core::D::Minus1)?.reshape((b, h, gq, k))?.to_dtype(scores.dtype());
    }
    scores.contiguous()?.apply_op1(RangeSoftmax { mask: mask.clone(), scale: scale as f32 })
}

struct RangeSoftmax {
    mask: Mask,
    scale: f32,
}

impl RangeSoftmax {
    /// The key range of flat row `row` of a `[batch, heads, groups * queries, keys]` tensor.
    fn range(&self, row: usize, rows_per_batch: usize) -> (usize, usize) {
        let (a, b) = self.mask.range(row / rows_per_batch, row % self.mask.queries);
        (a as usize, b as usize)
    }
}

pub(super) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("fused kernels: f32 only") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("fused kernels: not contiguous") };
    Ok(&data[start..end])
}

/// Rows per rayon task: enough work per task that scheduling does not dominate.
const MIN_ROWS: usize = 16;

impl CustomOp1 for RangeSoftmax {
    fn name(&self) -> &'static str {
        "range-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let scores = f32_slice(storage, layout)?;
        let (b, _, _, keys) = layout.shape().dims4()?;
        if keys != self.mask.keys || b != self.mask.batch {
            candle_core::bail!("range softmax: scores {:?} do not fit the mask", layout.shape());
        }
        let rows_per_batch = scores.len() / keys / b;
        let mut out = vec![0f32; scores.len()];
        out.par_chunks_mut(keys).zip(scores.par_chunks(keys)).enumerate().with_min_len(MIN_ROWS).for_each(
            |(row, (o, s))| {
                let (a, z) = self.range(row, rows_per_batch);
                let (s, o) = (&s[a..=z], &mut o[a..=z]);
                let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * self.scale;
                let mut sum = 0f32;
                for (o, &x) in o.iter_mut().zip(s) {
                    *o = (x * self.scale - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|x| *x *= inv);
            },
        );
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _scores: &Tensor, probs: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let op = RangeSoftmaxGrad { mask: self.mask.clone(), scale: self.scale };
        Ok(Some(probs.apply_op2_no_bwd(&grad, &op)?))
    }
}

/// d scores = scale * p * (d p - sum(p * d p)) within each row's range.
struct RangeSoftmaxGrad {
    mask: Mask,
    scale: f32,
}

impl CustomOp2 for RangeSoftmaxGrad {
    fn name(&self) -> &'static str {
        "range-softmax-grad"
    }

    fn cpu_fwd(&self, ps: &CpuStorage, pl: &Layout, gs: &CpuStorage, gl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (p, g) = (f32_slice(ps, pl)?, f32_slice(gs, gl)?);
        let keys = self.mask.keys;
        let rows_per_batch = p.len() / keys / self.mask.batch;
        let fwd = RangeSoftmax { mask: self.mask.clone(), scale: self.scale };
        let mut out = vec![0f32; p.len()];
        out.par_chunks_mut(keys)
            .zip(p.par_chunks(keys).zip(g.par_chunks(keys)))
            .enumerate()
            .with_min_len(MIN_ROWS)
            .for_each(|(row, (o, (p, g)))| {
                let (a, z) = fwd.range(row, rows_per_batch);
                let (p, g, o) = (&p[a..=z], &g[a..=z], &mut o[a..=z]);
                let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
                for ((o, &p), &g) in o.iter_mut().zip(p).zip(g) {
                    *o = self.scale * p * (g - dot);
                }
            });
        Ok((CpuStorage::F32(out), pl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The fused kernel equals the composite ops over the dense mask: values, and gradients of a
    /// weighted sum (packed rows, a padding query, grouped heads).
    #[test]
    fn range_softmax_matches_the_composite_path() {
        let dev = Device::Cpu;
        let (b, h, groups, t) = (2, 2, 3, 5);
        let ranges = vec![(0, 0), (0, 1), (0, 2), (3, 3), (3, 4), (0, 0), (0, 1), (2, 2), (2, 3), (4, 4)];
        let mask = Mask::new(ranges, b, t, t);
        let n = b * h * groups * t * t;
        let mut rng = crate::rng::Rng::for_row(1, "test", 0);
        let values: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 3.0).collect();
        let weights: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let weights = Tensor::from_vec(weights, (b, h, groups * t, t), &dev).unwrap();
        let scores = Var::from_tensor(&Tensor::from_vec(values, (b, h, groups * t, t), &dev).unwrap()).unwrap();
        let fused = range_softmax(scores.as_tensor(), &mask, 0.5).unwrap();
        let composite = {
            let s = (scores.as_tensor() * 0.5)
                .unwrap()
                .reshape((b, h, groups, t, t))
                .unwrap()
                .broadcast_add(&mask.dense(&dev).unwrap().unsqueeze(1).unwrap())
                .unwrap();
            candle_nn::ops::softmax(&s, candle_core::D::Minus1).unwrap().reshape((b, h, groups * t, t)).unwrap()
        };
        let max_diff = |a: &Tensor, b: &Tensor| {
            (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        assert!(max_diff(&fused, &composite) < 1e-6);
        let g_fused = (&fused * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g_comp = (&composite * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gc) = (g_fused.get(scores.as_tensor()).unwrap(), g_comp.get(scores.as_tensor()).unwrap());
        assert!(max_diff(gf, gc) < 1e-6, "gradients differ by {}", max_diff(gf, gc));
        assert!(gf.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 1.0);
    }
}
