//! Fused CPU kernels (f32) with their own backward pass, which the decoder takes in place of chains of
//! composite ops, for training and inference alike: each composite op allocates its output, and in the
//! backward pass a zero-filled gradient buffer plus a sum, so a chain of five costs a dozen passes over
//! memory where one suffices. Linear layers ([`linear`]), RMSNorm ([`rms_norm`]), rotary embedding
//! ([`rope`]), the gated activation ([`silu_mul`]), attention ([`flash_attention`]) and the output head
//! with cross-entropy ([`head_nll`]), which never holds all positions' logits. Other devices and types
//! take the composite ops ([`cpu_f32`]); tests check each kernel against them, values and gradients.
//!
//! Every attention mask forge builds (causal, left padding, examples packed into one row) lets a query
//! see one contiguous range of keys, so a mask is a `(first, last)` key pair per query ([`Mask`]): flash
//! attention skips the blocks of keys outside every query's range. The composite path applies it as a
//! dense `[b, 1, t, keys]` mask ([`Mask::dense`], [`range_softmax`]).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// For each (batch row, query), the inclusive range of key positions it attends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    ranges: Arc<Vec<(u32, u32)>>,
    /// Rows of the batch.
    pub batch: usize,
    /// Query positions per row.
    pub queries: usize,
    /// Key positions per row.
    pub keys: usize,
}

impl Mask {
    /// `ranges[b * queries + q]` is the first and last key query `q` of row `b` sees (`first <= last < keys`).
    pub fn new(ranges: Vec<(u32, u32)>, batch: usize, queries: usize, keys: usize) -> Mask {
        assert_eq!(ranges.len(), batch * queries, "one key range per query");
        debug_assert!(ranges.iter().all(|&(a, b)| a <= b && (b as usize) < keys));
        Mask { ranges: Arc::new(ranges), batch, queries, keys }
    }

    /// The first and last key position query `q` of row `b` sees.
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

/// `softmax(scale * scores)` over each query's key range, zero outside it, as composite ops over the
/// dense mask: the attention of devices without the fused kernels, and the reference
/// [`flash_attention`] is tested against. `scores` is `[batch, heads, groups * queries, keys]` (query
/// heads grouped under their kv head, query index fastest).
pub fn range_softmax(scores: &Tensor, mask: &Mask, scale: f64) -> CResult<Tensor> {
    let (b, h, gq, k) = scores.dims4()?;
    let s = (scores.to_dtype(DType::F32)? * scale)?
        .reshape((b, h, gq / mask.queries, mask.queries, k))?
        .broadcast_add(&mask.dense(scores.device())?.unsqueeze(1)?)?;
    candle_nn::ops::softmax(&s, candle_core::D::Minus1)?.reshape((b, h, gq, k))?.to_dtype(scores.dtype())
}

pub(super) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("fused kernels: f32 only") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("fused kernels: not contiguous") };
    Ok(&data[start..end])
}

/// Whether this CPU has AVX2 and FMA, which the vector paths below need (detected once, then cached).
pub(super) fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Run `f` over `0..items` on candle's pool, in chunks (`f` gets a range).
pub(super) fn parallel(items: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(items, f);
}

/// An output buffer written by the pool's threads at disjoint elements.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: the threads write disjoint elements, and the buffer outlives the pool's call
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }

    /// `len` elements from `at`.
    ///
    /// # Safety
    /// In bounds, and no other thread writes them meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller's
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// The sum of `a[i] * b[i]`, in eight partial sums (vectorised).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Whether the fused kernels apply to `tensors`: f32 on the CPU (other devices and types take the
/// composite ops, which the tests check these against).
pub fn cpu_f32(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// RMSNorm over the last dimension, as transformers computes it: `x * rsqrt(mean(x²) + eps) * weight`;
/// differentiable in both.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> CResult<Tensor> {
    x.contiguous()?.apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

impl RmsNorm {
    /// `1 / rms(row)`.
    #[inline(always)]
    fn inv(&self, row: &[f32]) -> f32 {
        1.0 / (dot(row, row) / row.len() as f32 + self.eps).sqrt()
    }

    /// The rows of `x` and the size of one (the weight's), checked.
    fn rows(x: &Layout, w: &Layout) -> CResult<usize> {
        let h = w.shape().elem_count();
        if h == 0 || !x.shape().elem_count().is_multiple_of(h) {
            candle_core::bail!("rms norm: x {:?} and weight {:?} do not fit", x.shape(), w.shape());
        }
        Ok(h)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, w) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?);
        let h = RmsNorm::rows(xl, wl)?;
        let mut out = vec![0f32; x.len()];
        let at = SharedOut(out.as_mut_ptr());
        parallel(x.len() / h, |rows| {
            for r in rows {
                let row = &x[r * h..][..h];
                let inv = self.inv(row);
                // SAFETY: row r of the output, which only this call writes
                let o = unsafe { at.slice(r * h, h) };
                for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
                    *o = v * inv * w;
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grad(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl RmsNorm {
    /// The gradients of `x` and the weight, from the output's.
    fn grad(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> CResult<(Tensor, Tensor)> {
        let (n, h) = (x.elem_count(), w.elem_count());
        let both = x.apply_op3_no_bwd(w, &grad.contiguous()?, &RmsNormGrad(RmsNorm { eps: self.eps }))?;
        // the weight's gradient copied out: a view would keep the whole buffer (x's size) alive for as long
        // as the gradient store holds it
        let dw = both.narrow(0, n, h)?.force_contiguous()?.reshape(w.shape())?;
        Ok((both.narrow(0, 0, n)?.reshape(x.shape())?, dw))
    }
}

/// [`rms_norm`]'s gradients of `x` and `weight` from the output's, `grad` (a backward pass written by
/// hand: [`super::layer_node`]).
pub(super) fn rms_norm_grad(x: &Tensor, weight: &Tensor, eps: f64, grad: &Tensor) -> CResult<(Tensor, Tensor)> {
    RmsNorm { eps: eps as f32 }.grad(&x.contiguous()?, &weight.contiguous()?, grad)
}

/// RMSNorm's gradients from `(x, weight, dy)`, both in one buffer: `dx` (x's elements), then `dweight`.
/// Per row, with `x̂ = x / rms`: `dx = (dy·w − x̂ · mean(dy·w·x̂)) / rms`; `dweight = Σ_rows dy·x̂`.
struct RmsNormGrad(RmsNorm);

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, w, g) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?, f32_slice(gs, gl)?);
        let h = RmsNorm::rows(xl, wl)?;
        let rows = x.len() / h;
        let mut out = vec![0f32; x.len() + h];
        let mut inv = vec![0f32; rows];
        let (at, at_inv) = (SharedOut(out.as_mut_ptr()), SharedOut(inv.as_mut_ptr()));
        parallel(rows, |rows| {
            for r in rows {
                let (x, g) = (&x[r * h..][..h], &g[r * h..][..h]);
                let i = self.0.inv(x);
                let mean = x.iter().zip(g).zip(w).map(|((x, g), w)| x * g * w).sum::<f32>() * i * i / h as f32;
                // SAFETY: row r of dx and element r of inv, which only this call writes
                let (o, inv_r) = unsafe { (at.slice(r * h, h), at_inv.slice(r, 1)) };
                inv_r[0] = i;
                for (((o, &x), &g), &w) in o.iter_mut().zip(x).zip(g).zip(w) {
                    *o = i * (g * w - x * mean);
                }
            }
        });
        // dweight by blocks of columns, each summed over every row
        const BLOCK: usize = 16;
        let inv = &inv;
        parallel(h.div_ceil(BLOCK), |blocks| {
            for block in blocks {
                let cols = block * BLOCK..((block + 1) * BLOCK).min(h);
                let mut acc = [0f32; BLOCK];
                for (r, &i) in inv.iter().enumerate() {
                    let (x, g) = (&x[r * h + cols.start..r * h + cols.end], &g[r * h + cols.start..r * h + cols.end]);
                    for ((a, &x), &g) in acc.iter_mut().zip(x).zip(g) {
                        *a += g * x * i;
                    }
                }
                // SAFETY: this block's elements of dweight
                let o = unsafe { at.slice(x.len() + cols.start, cols.len()) };
                o.copy_from_slice(&acc[..cols.len()]);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(x.len() + h)))
    }
}

/// Rotary embedding (rotate-half layout) of `x` `[batch, seq, heads, head_dim]` (or `[batch, seq, heads *
/// head_dim]`) by the tables `cos` and `sin` (`batch * seq` rows of `head_dim / 2`); differentiable in `x` (its gradient is the inverse
/// rotation of the output's).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope { inverse: false })
}

/// The rotation, or with `inverse` its inverse (the angles negated).
struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, cos, sin) = (f32_slice(xs, xl)?, f32_slice(cs, cl)?, f32_slice(ss, sl)?);
        // one table row of `half` angles per position; each position's elements are whole heads
        let half = cl.dims().last().copied().unwrap_or(0);
        let positions = cos.len() / half.max(1);
        let (d, row) = (2 * half, x.len() / positions.max(1));
        if half == 0 || sin.len() != cos.len() || row * positions != x.len() || row % d != 0 {
            candle_core::bail!("rope: x {:?} and tables {:?} do not fit", xl.shape(), cl.shape());
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        let at = SharedOut(out.as_mut_ptr());
        parallel(positions, |positions| {
            let mut s = vec![0f32; half];
            for p in positions {
                let c = &cos[p * half..][..half];
                s.iter_mut().zip(&sin[p * half..][..half]).for_each(|(s, &v)| *s = sign * v);
                // SAFETY: position p's heads, which only this call writes
                let o = unsafe { at.slice(p * row, row) };
                for (o, x) in o.chunks_exact_mut(d).zip(x[p * row..][..row].chunks_exact(d)) {
                    let (x1, x2) = x.split_at(half);
                    let (o1, o2) = o.split_at_mut(half);
                    for i in 0..half {
                        o1[i] = x1[i] * c[i] - x2[i] * s[i];
                        o2[i] = x2[i] * c[i] + x1[i] * s[i];
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &Rope { inverse: !self.inverse })?;
        Ok((Some(back), None, None))
    }
}

/// [`rope`]'s gradient of `x` from the output's: the inverse rotation of `grad`.
pub(super) fn rope_grad(grad: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    grad.contiguous()?.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &Rope { inverse: true })
}

/// `silu(gate) * up`, the gated MLP's activation; differentiable in both.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> CResult<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
}

struct SiluMul;

/// Elements per task of the element-wise kernels.
const CHUNK: usize = 4096;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (g, u) = (f32_slice(gs, gl)?, f32_slice(us, ul)?);
        if gl.shape() != ul.shape() {
            candle_core::bail!("silu mul: gate {:?} and up {:?} differ", gl.shape(), ul.shape());
        }
        let mut out = vec![0f32; g.len()];
        let at = SharedOut(out.as_mut_ptr());
        parallel(g.len().div_ceil(CHUNK), |chunks| {
            let range = chunks.start * CHUNK..(chunks.end * CHUNK).min(g.len());
            // SAFETY: this call's own elements
            let o = unsafe { at.slice(range.start, range.len()) };
            let (g, u) = (&g[range.clone()], &u[range]);
            #[cfg(target_arch = "x86_64")]
            if avx2() {
                // SAFETY: the CPU has AVX2 and FMA
                return unsafe { silu_mul_avx2(g, u, o) };
            }
            silu_mul_scalar(g, u, o);
        });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    fn bwd(&self, gate: &Tensor, up: &Tensor, _: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (dgate, dup) = silu_mul_grad(gate, up, grad)?;
        Ok((Some(dgate), Some(dup)))
    }
}

/// [`silu_mul`]'s gradients of `gate` and `up` from the output's.
pub(super) fn silu_mul_grad(gate: &Tensor, up: &Tensor, grad: &Tensor) -> CResult<(Tensor, Tensor)> {
    let n = gate.elem_count();
    let both = gate.contiguous()?.apply_op3_no_bwd(&up.contiguous()?, &grad.contiguous()?, &SiluMulGrad)?;
    Ok((both.narrow(0, 0, n)?.reshape(gate.shape())?, both.narrow(0, n, n)?.reshape(up.shape())?))
}

/// `o = g / (1 + exp(-g)) * u`, eight lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_mul_avx2(g: &[f32], u: &[f32], o: &mut [f32]) {
    use std::arch::x86_64::*;
    let (one, body) = (_mm256_set1_ps(1.0), o.len() / 8 * 8);
    for i in (0..body).step_by(8) {
        // SAFETY: i + 8 <= body, within all three slices (of equal length)
        unsafe {
            let gv = _mm256_loadu_ps(g.as_ptr().add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            let silu = _mm256_div_ps(gv, _mm256_add_ps(one, e));
            _mm256_storeu_ps(o.as_mut_ptr().add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(u.as_ptr().add(i))));
        }
    }
    silu_mul_scalar(&g[body..], &u[body..], &mut o[body..]);
}

/// `o = g / (1 + exp(-g)) * u`, as candle's `silu` then a product.
fn silu_mul_scalar(g: &[f32], u: &[f32], o: &mut [f32]) {
    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// The gated activation's gradients from `(gate, up, dy)`, both in one buffer: with `s = sigmoid(gate)`,
/// `dgate = dy · up · s · (1 + gate · (1 − s))`, then `dup = dy · gate · s`.
struct SiluMulGrad;

impl CustomOp3 for SiluMulGrad {
    fn name(&self) -> &'static str {
        "silu-mul-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (g, u, d) = (f32_slice(gs, gl)?, f32_slice(us, ul)?, f32_slice(ds, dl)?);
        if gl.shape() != ul.shape() || gl.shape() != dl.shape() {
            candle_core::bail!("silu mul grad: {:?}, {:?} and {:?} differ", gl.shape(), ul.shape(), dl.shape());
        }
        let n = g.len();
        let mut out = vec![0f32; 2 * n];
        let at = SharedOut(out.as_mut_ptr());
        parallel(n.div_ceil(CHUNK), |chunks| {
            let range = chunks.start * CHUNK..(chunks.end * CHUNK).min(n);
            // SAFETY: this call's own elements of both halves
            let (dg, du) = unsafe { (at.slice(range.start, range.len()), at.slice(n + range.start, range.len())) };
            let (g, u, d) = (&g[range.clone()], &u[range.clone()], &d[range]);
            #[cfg(target_arch = "x86_64")]
            if avx2() {
                // SAFETY: the CPU has AVX2 and FMA
                return unsafe { silu_mul_grad_avx2(g, u, d, dg, du) };
            }
            silu_mul_grad_scalar(g, u, d, dg, du);
        });
        Ok((CpuStorage::F32(out), Shape::from(2 * n)))
    }
}

/// [`SiluMulGrad`] eight lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_mul_grad_avx2(g: &[f32], u: &[f32], d: &[f32], dg: &mut [f32], du: &mut [f32]) {
    use std::arch::x86_64::*;
    let (one, body) = (_mm256_set1_ps(1.0), g.len() / 8 * 8);
    for i in (0..body).step_by(8) {
        // SAFETY: i + 8 <= body, within all five slices (of equal length)
        unsafe {
            let gv = _mm256_loadu_ps(g.as_ptr().add(i));
            let dv = _mm256_loadu_ps(d.as_ptr().add(i));
            let s = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
            let silu = _mm256_mul_ps(gv, s);
            _mm256_storeu_ps(du.as_mut_ptr().add(i), _mm256_mul_ps(dv, silu));
            // s (1 + g (1 - s)) = s + silu (1 - s)
            let local = _mm256_fmadd_ps(silu, _mm256_sub_ps(one, s), s);
            let up = _mm256_mul_ps(dv, _mm256_loadu_ps(u.as_ptr().add(i)));
            _mm256_storeu_ps(dg.as_mut_ptr().add(i), _mm256_mul_ps(up, local));
        }
    }
    silu_mul_grad_scalar(&g[body..], &u[body..], &d[body..], &mut dg[body..], &mut du[body..]);
}

fn silu_mul_grad_scalar(g: &[f32], u: &[f32], d: &[f32], dg: &mut [f32], du: &mut [f32]) {
    for i in 0..g.len() {
        let s = 1.0 / (1.0 + (-g[i]).exp());
        let silu = g[i] * s;
        du[i] = d[i] * silu;
        dg[i] = d[i] * u[i] * (s + silu * (1.0 - s));
    }
}

/// The summed negative log-likelihood `−Σ_r log softmax(hidden_r · weightᵀ)[targets_r]` of the rows of
/// `hidden` `[n, dim]` under the output head `weight` `[vocab, dim]`, as a scalar. The logits are made a
/// chunk of rows at a time, so no `[n, vocab]` logits or probabilities exist at once (at a 150k vocabulary
/// those are 600 KB a row). With a gradient graph the forward pass also computes the gradients, since the
/// loss's gradient with respect to a chunk's logits is known as soon as they are (softmax minus the
/// one-hot target: Liger's fused linear cross-entropy); the backward pass scales them.
pub fn head_nll(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> CResult<Tensor> {
    head_nll_in_chunks(hidden, weight, targets, LOGITS_PER_CHUNK)
}

/// [`head_nll`] with at most `chunk` logits at a time.
fn head_nll_in_chunks(hidden: &Tensor, weight: &Tensor, targets: &Tensor, chunk: usize) -> CResult<Tensor> {
    let op = HeadNll {
        chunk,
        targets: targets.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?,
        wants: (hidden.track_op(), weight.track_op()),
        grads: Mutex::new(None),
    };
    let (hidden, weight) = (hidden.contiguous()?, weight.contiguous()?);
    if op.wants == (false, false) { hidden.apply_op2_no_bwd(&weight, &op) } else { hidden.apply_op2(&weight, op) }
}

/// Logits per chunk of [`head_nll`] (16 MiB of f32).
const LOGITS_PER_CHUNK: usize = 1 << 22;

struct HeadNll {
    /// Logits per chunk.
    chunk: usize,
    targets: Vec<u32>,
    /// Whether `hidden` and `weight` need their gradients.
    wants: (bool, bool),
    /// Their gradients for a unit loss gradient, made by the forward pass.
    grads: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl CustomOp2 for HeadNll {
    fn name(&self) -> &'static str {
        "head-nll"
    }

    fn cpu_fwd(&self, hs: &CpuStorage, hl: &Layout, ws: &CpuStorage, wl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (h, w) = (f32_slice(hs, hl)?, f32_slice(ws, wl)?);
        let ((n, dim), (vocab, wdim)) = (hl.shape().dims2()?, wl.shape().dims2()?);
        if dim != wdim || self.targets.len() != n {
            candle_core::bail!(
                "head nll: hidden {:?}, head {:?}, {} targets",
                hl.shape(),
                wl.shape(),
                self.targets.len()
            );
        }
        if let Some(t) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("head nll: target {t} outside the vocabulary of {vocab}");
        }
        let chunk = (self.chunk / vocab.max(1)).clamp(1, n.max(1));
        let mut logits = vec![0f32; chunk * vocab];
        let (want_h, want_w) = self.wants;
        let mut dh = vec![0f32; if want_h { n * dim } else { 0 }];
        let mut dw = vec![0f32; if want_w { vocab * dim } else { 0 }];
        let mut loss = 0f64;
        for r0 in (0..n).step_by(chunk) {
            let c = chunk.min(n - r0);
            let (lg, rows) = (&mut logits[..c * vocab], &h[r0 * dim..(r0 + c) * dim]);
            // logits = rows · weightᵀ
            let all = Write::ALL;
            matmul([c, vocab, dim], (lg, [vocab, 1]), (rows, [dim, 1]), (w, [1, dim]), all);
            let losses: Vec<f64> = lg
                .par_chunks_mut(vocab)
                .zip(&self.targets[r0..r0 + c])
                .map(|(row, &t)| {
                    let target = row[t as usize];
                    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    let mut sum = 0f32;
                    for x in row.iter_mut() {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    // the logits become the gradient: softmax minus the one-hot target
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|x| *x *= inv);
                    row[t as usize] -= 1.0;
                    f64::from(max + sum.ln() - target)
                })
                .collect();
            loss += losses.iter().sum::<f64>(); // in order: the same sum every run
            if want_h {
                // dhidden = dlogits · weight
                matmul(
                    [c, dim, vocab],
                    (&mut dh[r0 * dim..(r0 + c) * dim], [dim, 1]),
                    (lg, [vocab, 1]),
                    (w, [dim, 1]),
                    all,
                );
            }
            if want_w {
                // dweight += dlogitsᵀ · rows
                matmul(
                    [vocab, dim, c],
                    (&mut dw, [dim, 1]),
                    (lg, [1, vocab]),
                    (rows, [dim, 1]),
                    Write { add: true, ..all },
                );
            }
        }
        if want_h || want_w {
            *self.grads.lock().expect("not poisoned") = Some((dh, dw));
        }
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(&self, h: &Tensor, w: &Tensor, _: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let Some((mut dh, mut dw)) = self.grads.lock().expect("not poisoned").take() else {
            candle_core::bail!("head nll: a second backward pass through the same loss");
        };
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        dh.par_iter_mut().chain(dw.par_iter_mut()).for_each(|x| *x *= g);
        let (want_h, want_w) = self.wants;
        let dh = if want_h { Some(Tensor::from_vec(dh, h.shape(), h.device())?) } else { None };
        let dw = if want_w { Some(Tensor::from_vec(dw, w.shape(), w.device())?) } else { None };
        Ok((dh, dw))
    }
}

/// Attention of `q` `[batch, seq, heads * head_dim]` over `k` and `v` `[batch, seq, kv_heads * head_dim]`
/// (the projections' outputs as they are: nothing is reshaped or transposed), `heads` being `[heads,
/// kv_heads]`, each query within its key range of `mask`, query head `i` reading kv head `i / (heads /
/// kv_heads)`; the result is `[batch, seq, heads * head_dim]`, as the output projection takes it. FlashAttention-2 on the CPU: blocks of [`BLOCK`] queries against
/// blocks of keys with an online softmax, so no `[batch, heads, seq, seq]` scores or probabilities
/// exist, and blocks outside every query's range are skipped (nearly half of them under a causal mask).
/// The backward pass recomputes each block's probabilities from the log-sum-exps the forward pass keeps.
/// Inside, each pass makes a transposed copy of the keys (and the backward pass of the values) for the
/// products that use them transposed (`Dims::transposed`); the backward pass makes its own rather than
/// keep the forward pass's, which would hold one more key-sized buffer per layer until then.
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: [usize; 2],
    mask: &Mask,
    scale: f64,
) -> CResult<Tensor> {
    let op = FlashAttention::new(heads, mask, scale);
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    if [&q, &k, &v].iter().any(|t| t.track_op()) { q.apply_op3(&k, &v, op) } else { op.forward(&q, &k, &v) }
}

/// Queries, and keys, per block of [`flash_attention`].
const BLOCK: usize = 64;

/// One call of [`flash_attention`]; it keeps the log-sum-exps its backward pass reads. [`FlashAttention::forward`]
/// and [`FlashAttention::grad`] are the two passes without a graph node, for a backward pass written by
/// hand ([`super::layer_node`]).
pub(super) struct FlashAttention {
    /// Query heads and kv heads.
    heads: [usize; 2],
    mask: Mask,
    scale: f32,
    /// The log-sum-exp of each query's scores (`[batch, seq, heads]`), for the backward pass.
    lse: Mutex<Option<Vec<f32>>>,
}

/// The sizes of a [`flash_attention`] call, and where rows start.
#[derive(Clone, Copy)]
struct Dims {
    t: usize,
    heads: usize,
    kv: usize,
    d: usize,
}

impl Dims {
    fn new(q: &Shape, k: &Shape, v: &Shape, [heads, kv]: [usize; 2], mask: &Mask) -> CResult<Dims> {
        let (b, t, qrow) = q.dims3()?;
        let (kb, kt, krow) = k.dims3()?;
        let d = qrow / heads.max(1);
        if (kb, kt) != (b, t) || v != k || kv == 0 || heads % kv != 0 || qrow != heads * d || krow != kv * d {
            candle_core::bail!("flash attention: q {q:?}, k {k:?} and v {v:?} do not fit {heads} heads, {kv} kv heads");
        }
        if (mask.batch, mask.queries, mask.keys) != (b, t, t) {
            candle_core::bail!("flash attention: the mask does not fit q {q:?}");
        }
        Ok(Dims { t, heads, kv, d })
    }

    /// The first element of query row `(b, i, h)` (its row stride is `heads * d`).
    fn q(&self, b: usize, i: usize, h: usize) -> usize {
        ((b * self.t + i) * self.heads + h) * self.d
    }

    /// The first element of key (or value) row `(b, j, kh)` (its row stride is `kv * d`).
    fn k(&self, b: usize, j: usize, kh: usize) -> usize {
        ((b * self.t + j) * self.kv + kh) * self.d
    }

    fn blocks(&self) -> usize {
        self.t.div_ceil(BLOCK)
    }

    /// The first element of kv head `kh` of batch row `b` in [`Dims::transposed`]'s layout (`[d, t]`).
    fn kt(&self, b: usize, kh: usize) -> usize {
        (b * self.kv + kh) * self.d * self.t
    }

    /// Keys (or values) `[batch, seq, kv * d]` as `[batch, kv, d, seq]`: the products with them
    /// transposed (`Q Kᵀ`, `dO Vᵀ`) then read rows, not columns, which gemm runs about half again as
    /// fast at these block sizes.
    fn transposed(&self, x: &[f32]) -> Vec<f32> {
        let Dims { t, kv, d, .. } = *self;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * t).enumerate().for_each(|(unit, dst)| {
            let (b, kh) = (unit / kv, unit % kv);
            for j in 0..t {
                let row = &x[self.k(b, j, kh)..][..d];
                row.iter().enumerate().for_each(|(e, &x)| dst[e * t + j] = x);
            }
        });
        out
    }
}

impl FlashAttention {
    /// Attention of `[heads, kv_heads]` heads within `mask`, scores scaled by `scale`.
    pub(super) fn new(heads: [usize; 2], mask: &Mask, scale: f64) -> FlashAttention {
        FlashAttention { heads, mask: mask.clone(), scale: scale as f32, lse: Mutex::new(None) }
    }

    /// The attention of `q` over `k` and `v` (contiguous), keeping the log-sum-exps for [`FlashAttention::grad`].
    pub(super) fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> CResult<Tensor> {
        q.apply_op3_no_bwd(k, v, self)
    }

    /// The key ranges of the queries of block `qb` of row `b`, and the union of them.
    fn ranges(&self, dims: Dims, b: usize, qb: usize) -> (Vec<(usize, usize)>, usize, usize) {
        let rows = qb * BLOCK..((qb + 1) * BLOCK).min(dims.t);
        let ranges: Vec<(usize, usize)> = rows
            .map(|i| {
                let (a, z) = self.mask.range(b, i);
                (a as usize, z as usize)
            })
            .collect();
        let lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        (ranges, lo, hi)
    }

    /// The scaled scores of a block of queries against keys `k0..k0 + nk`, as probabilities:
    /// `exp(scale · s − shift)` within each query's range, 0 outside. `s` holds the raw scores
    /// (`ranges.len() × nk`); `shift[i]` is each query's subtrahend. Returns each row's sum.
    fn probabilities(
        &self,
        s: &mut [f32],
        nk: usize,
        k0: usize,
        ranges: &[(usize, usize)],
        shift: &[f32],
        sums: &mut [f32],
    ) {
        for ((row, &(a, z)), (&m, sum)) in s.chunks_exact_mut(nk).zip(ranges).zip(shift.iter().zip(sums)) {
            let (from, to) = (a.max(k0), (z + 1).min(k0 + nk));
            if from >= to {
                row.fill(0.0);
                *sum = 0.0;
                continue;
            }
            row[..from - k0].fill(0.0);
            row[to - k0..].fill(0.0);
            *sum = exp_row(&mut row[from - k0..to - k0], self.scale, m);
        }
    }

    /// Queries `qb` of batch row `b`, head `h`: their outputs (written to `out`) and log-sum-exps. The keys
    /// come [`Dims::transposed`].
    #[allow(clippy::too_many_arguments)]
    fn forward_block(
        &self,
        dims: Dims,
        (q, kt, v): (&[f32], &[f32], &[f32]),
        b: usize,
        h: usize,
        qb: usize,
        out: SharedOut,
        lse: SharedOut,
    ) {
        let Dims { heads, kv, d, .. } = dims;
        let kh = h / (heads / kv);
        let (ranges, lo, hi) = self.ranges(dims, b, qb);
        let nq = ranges.len();
        let q0 = qb * BLOCK;
        let (mut o, mut s) = (vec![0f32; nq * d], vec![0f32; nq * BLOCK]);
        let (mut m, mut l, mut sums) = (vec![f32::NEG_INFINITY; nq], vec![0f32; nq], vec![0f32; nq]);
        let mut shift = vec![0f32; nq];
        let queries = (&q[dims.q(b, q0, h)..], [heads * d, 1]);
        for k0 in (lo..=hi).step_by(BLOCK) {
            let nk = BLOCK.min(hi + 1 - k0);
            let s = &mut s[..nq * nk];
            // scores = Q Kᵀ
            matmul([nq, nk, d], (s, [nk, 1]), queries, (&kt[dims.kt(b, kh) + k0..], [dims.t, 1]), Write::SET);
            // the new running maxima, and the old sums and outputs rescaled to them
            for i in 0..nq {
                let (a, z) = ranges[i];
                let (from, to) = (a.max(k0), (z + 1).min(k0 + nk));
                let row = &s[i * nk..][..nk];
                let max = row
                    .get(from.saturating_sub(k0)..to.saturating_sub(k0))
                    .unwrap_or(&[])
                    .iter()
                    .fold(f32::NEG_INFINITY, |x, &y| x.max(y))
                    * self.scale;
                let new = m[i].max(max);
                shift[i] = new;
                if new > m[i] && m[i] > f32::NEG_INFINITY {
                    let alpha = (m[i] - new).exp();
                    l[i] *= alpha;
                    o[i * d..][..d].iter_mut().for_each(|x| *x *= alpha);
                }
                m[i] = new;
            }
            self.probabilities(s, nk, k0, &ranges, &shift, &mut sums);
            l.iter_mut().zip(&sums).for_each(|(l, s)| *l += s);
            // outputs += P V
            matmul([nq, d, nk], (&mut o, [d, 1]), (s, [nk, 1]), (&v[dims.k(b, k0, kh)..], [kv * d, 1]), Write::ADD);
        }
        for i in 0..nq {
            let inv = 1.0 / l[i];
            // SAFETY: query (b, q0 + i, h)'s output row and log-sum-exp, which only this block writes
            let (row, at) = unsafe { (out.slice(dims.q(b, q0 + i, h), d), lse.slice(dims.q(b, q0 + i, h) / d, 1)) };
            row.iter_mut().zip(&o[i * d..][..d]).for_each(|(r, &x)| *r = x * inv);
            at[0] = m[i] + l[i].ln();
        }
    }

    /// Keys `kb` of batch row `b`, kv head `kh`: their keys' and values' gradients (written to `dk` and
    /// `dv`), and their share of the gradients of the kv head's queries, added to `dq` (`[seq, groups,
    /// head_dim]`: the queries of this batch row and kv head only).
    #[allow(clippy::too_many_arguments)]
    fn backward_block(
        &self,
        dims: Dims,
        [q, k, kt, vt, dout, lse, delta]: [&[f32]; 7],
        b: usize,
        kh: usize,
        kb: usize,
        (dq, dk, dv): (&mut [f32], SharedOut, SharedOut),
    ) {
        let Dims { t, heads, kv, d } = dims;
        let groups = heads / kv;
        let k0 = kb * BLOCK;
        let nk = BLOCK.min(t - k0);
        let keys = (&k[dims.k(b, k0, kh)..], [kv * d, 1]);
        let (keys_t, values_t) = ((&kt[dims.kt(b, kh) + k0..], [t, 1]), (&vt[dims.kt(b, kh) + k0..], [t, 1]));
        let (mut gk, mut gv) = (vec![0f32; nk * d], vec![0f32; nk * d]);
        let (mut p, mut dp, mut sums) = (vec![0f32; BLOCK * nk], vec![0f32; BLOCK * nk], vec![0f32; BLOCK]);
        for qb in 0..dims.blocks() {
            let (ranges, lo, hi) = self.ranges(dims, b, qb);
            if hi < k0 || lo >= k0 + nk {
                continue;
            }
            let (nq, q0) = (ranges.len(), qb * BLOCK);
            let (p, dp) = (&mut p[..nq * nk], &mut dp[..nq * nk]);
            for h in kh * groups..(kh + 1) * groups {
                let at = dims.q(b, q0, h);
                let (queries, grads) = ((&q[at..], [heads * d, 1]), (&dout[at..], [heads * d, 1]));
                let lse: Vec<f32> = (0..nq).map(|i| lse[dims.q(b, q0 + i, h) / d]).collect();
                // P, recomputed from the scores and the log-sum-exps
                matmul([nq, nk, d], (p, [nk, 1]), queries, keys_t, Write::SET);
                self.probabilities(p, nk, k0, &ranges, &lse, &mut sums[..nq]);
                // dV += Pᵀ dO
                matmul([nk, d, nq], (&mut gv, [d, 1]), (p, [1, nk]), grads, Write::ADD);
                // dP = dO Vᵀ, then dS = P (dP − delta) in its place
                matmul([nq, nk, d], (dp, [nk, 1]), grads, values_t, Write::SET);
                for (i, (dp, p)) in dp.chunks_exact_mut(nk).zip(p.chunks_exact(nk)).enumerate() {
                    let delta = delta[dims.q(b, q0 + i, h) / d];
                    dp.iter_mut().zip(p).for_each(|(g, &p)| *g = p * (*g - delta));
                }
                // dQ += scale dS K; dK += scale dSᵀ Q
                let scaled = Write { factor: self.scale, ..Write::ADD };
                let rows = (q0 * groups + h - kh * groups) * d;
                matmul([nq, d, nk], (&mut dq[rows..], [groups * d, 1]), (dp, [nk, 1]), keys, scaled);
                matmul([nk, d, nq], (&mut gk, [d, 1]), (dp, [1, nk]), queries, scaled);
            }
        }
        for j in 0..nk {
            // SAFETY: key (b, k0 + j, kh)'s gradient rows, which only this block writes
            unsafe {
                dk.slice(dims.k(b, k0 + j, kh), d).copy_from_slice(&gk[j * d..][..d]);
                dv.slice(dims.k(b, k0 + j, kh), d).copy_from_slice(&gv[j * d..][..d]);
            }
        }
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let dims = Dims::new(ql.shape(), kl.shape(), vl.shape(), self.heads, &self.mask)?;
        let (q, k, v) = (f32_slice(qs, ql)?, f32_slice(ks, kl)?, f32_slice(vs, vl)?);
        let kt = dims.transposed(k);
        let inputs = (q, &kt[..], v);
        let mut out = vec![0f32; inputs.0.len()];
        let mut lse = vec![0f32; inputs.0.len() / dims.d];
        let (at, at_lse) = (SharedOut(out.as_mut_ptr()), SharedOut(lse.as_mut_ptr()));
        let (heads, blocks) = (dims.heads, dims.blocks());
        (0..self.mask.batch * heads * blocks).into_par_iter().for_each(|task| {
            let (b, h, qb) = (task / (heads * blocks), task / blocks % heads, task % blocks);
            self.forward_block(dims, inputs, b, h, qb, at, at_lse);
        });
        *self.lse.lock().expect("not poisoned") = Some(lse);
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dq, dk, dv] = self.grad(q, k, v, out, grad)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

impl FlashAttention {
    /// The gradients of `q`, `k` and `v` from the output's (`out` is the output of the forward pass).
    pub(super) fn grad(&self, q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, grad: &Tensor) -> CResult<[Tensor; 3]> {
        let Some(lse) = self.lse.lock().expect("not poisoned").take() else {
            candle_core::bail!("flash attention: a second backward pass through the same call");
        };
        let grad = grad.contiguous()?;
        let guards = [q, k, v, out, &grad].map(|t| t.storage_and_layout());
        let slices: Vec<&[f32]> = guards.iter().map(cpu_f32_slice).collect::<CResult<_>>()?;
        let [q_, k_, v_, o_, g_] = slices[..] else { unreachable!("five tensors") };
        let dims = Dims::new(q.shape(), k.shape(), v.shape(), self.heads, &self.mask)?;
        let d = dims.d;
        // delta = rowsum(dO ∘ O) per query row
        let delta: Vec<f32> = g_.par_chunks(d).zip(o_.par_chunks(d)).map(|(g, o)| dot(g, o)).collect();
        let (mut dk, mut dv) = (vec![0f32; k_.len()], vec![0f32; v_.len()]);
        let (at_k, at_v) = (SharedOut(dk.as_mut_ptr()), SharedOut(dv.as_mut_ptr()));
        let mut dq = vec![0f32; q_.len()];
        let at_q = SharedOut(dq.as_mut_ptr());
        let (kv, groups) = (dims.kv, dims.heads / dims.kv);
        let (kt, vt) = (dims.transposed(k_), dims.transposed(v_));
        // One task per batch row and kv head, its key blocks in order: the queries' gradients of a kv head
        // sum over its key blocks in a fixed order, so training stays deterministic.
        (0..self.mask.batch * kv).into_par_iter().for_each(|unit| {
            let (b, kh) = (unit / kv, unit % kv);
            let mut local = vec![0f32; dims.t * groups * d];
            for kb in 0..dims.blocks() {
                let inputs = [q_, k_, &kt, &vt, g_, &lse[..], &delta[..]];
                self.backward_block(dims, inputs, b, kh, kb, (&mut local, at_k, at_v));
            }
            for (i, rows) in local.chunks_exact(groups * d).enumerate() {
                // SAFETY: the gradient rows of queries (b, i, heads of kv head kh), which only this task writes
                unsafe { at_q.slice(dims.q(b, i, kh * groups), groups * d) }.copy_from_slice(rows);
            }
        });
        let dev = q.device();
        Ok([
            Tensor::from_vec(dq, q.shape(), dev)?,
            Tensor::from_vec(dk, k.shape(), dev)?,
            Tensor::from_vec(dv, v.shape(), dev)?,
        ])
    }
}

/// `x[j] = exp(scale · x[j] − shift)`; returns their sum.
pub(super) fn exp_row(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA
        return unsafe { exp_row_avx2(x, scale, shift) };
    }
    x.iter_mut()
        .map(|v| {
            *v = (*v * scale - shift).exp();
            *v
        })
        .sum()
}

/// [`exp_row`] eight lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_row_avx2(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    use std::arch::x86_64::*;
    let (s, m, body) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift), x.len() / 8 * 8);
    let mut acc = _mm256_setzero_ps();
    for i in (0..body).step_by(8) {
        // SAFETY: i + 8 <= body <= x.len()
        unsafe {
            let e = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), s, m));
            _mm256_storeu_ps(x.as_mut_ptr().add(i), e);
            acc = _mm256_add_ps(acc, e);
        }
    }
    let tail: f32 = x[body..]
        .iter_mut()
        .map(|v| {
            *v = (*v * scale - shift).exp();
            *v
        })
        .sum();
    hsum(acc) + tail
}

/// `x · weightᵀ + bias` over the last dimension of `x` (`weight` `[out, in]`, as a linear layer stores
/// it), as one node of the gradient graph. Its backward pass is two products read straight from the
/// operands (`dx = dy · weight`, `dweight = dyᵀ · x`, the latter skipped for a frozen weight) and the
/// bias's column sums; candle's composite path (reshape, transpose, product, broadcast add, reshape)
/// allocates a zeroed gradient and adds into it at each of its five nodes.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> CResult<Tensor> {
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    let tracked = x.track_op() || weight.track_op() || bias.is_some_and(Tensor::track_op);
    match (bias, tracked) {
        (None, false) => x.apply_op2_no_bwd(&weight, &Linear),
        (None, true) => x.apply_op2(&weight, Linear),
        (Some(b), false) => x.apply_op3_no_bwd(&weight, &b.contiguous()?, &Linear),
        (Some(b), true) => x.apply_op3(&weight, &b.contiguous()?, Linear),
    }
}

struct Linear;

impl Linear {
    /// `[rows, in, out]` of `x` and `weight`, checked.
    fn dims(x: &Shape, w: &Shape) -> CResult<[usize; 3]> {
        let (out, inputs) = w.dims2()?;
        let last = x.dims().last().copied().unwrap_or(0);
        if last != inputs || x.rank() < 2 {
            candle_core::bail!("linear: x {x:?} and weight {w:?} do not fit");
        }
        Ok([x.elem_count() / inputs.max(1), inputs, out])
    }

    fn forward(
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<&[f32]>,
    ) -> CResult<(CpuStorage, Shape)> {
        let [rows, inputs, out] = Linear::dims(x.1.shape(), w.1.shape())?;
        let (xs, ws) = (f32_slice(x.0, x.1)?, f32_slice(w.0, w.1)?);
        let mut y = vec![0f32; rows * out];
        matmul([rows, out, inputs], (&mut y, [out, 1]), (xs, [inputs, 1]), (ws, [1, inputs]), Write::ALL);
        if let Some(bias) = bias {
            if bias.len() != out {
                candle_core::bail!("linear: a bias of {} for {out} outputs", bias.len());
            }
            y.par_chunks_mut(out).for_each(|row| row.iter_mut().zip(bias).for_each(|(y, b)| *y += b));
        }
        let mut shape = x.1.dims().to_vec();
        *shape.last_mut().expect("rank >= 2") = out;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    /// The gradients of `x` (when `want_x`) and of each layer's weight and bias (where they record a
    /// graph) for `layers` of `(weight, bias, output gradient)` that all read `x`; `x`'s gradient is the
    /// sum over the layers, each product adding into one buffer.
    #[allow(clippy::type_complexity)]
    fn grads(
        x: &Tensor,
        layers: &[(&Tensor, Option<&Tensor>, &Tensor)],
        want_x: bool,
    ) -> CResult<(Option<Tensor>, Vec<[Option<Tensor>; 2]>)> {
        let x = x.contiguous()?;
        let xg = x.storage_and_layout();
        let xs = cpu_f32_slice(&xg)?;
        let (dev, inputs) = (x.device(), x.dims().last().copied().unwrap_or(0));
        let mut dx = if want_x { Some(vec![0f32; xs.len()]) } else { None };
        let mut out = Vec::with_capacity(layers.len());
        for (i, &(w, bias, grad)) in layers.iter().enumerate() {
            let [rows, _, n] = Linear::dims(x.shape(), w.shape())?;
            let (w, grad) = (w.contiguous()?, grad.contiguous()?);
            if grad.elem_count() != rows * n {
                candle_core::bail!(
                    "linear: a gradient {:?} for x {:?} and weight {:?}",
                    grad.shape(),
                    x.shape(),
                    w.shape()
                );
            }
            let guards = [&w, &grad].map(|t| t.storage_and_layout());
            let [ws, gs] = [0, 1].map(|i| cpu_f32_slice(&guards[i]));
            let (ws, gs) = (ws?, gs?);
            if let Some(dx) = &mut dx {
                let how = Write { add: i > 0, ..Write::ALL };
                matmul([rows, inputs, n], (&mut dx[..], [inputs, 1]), (gs, [n, 1]), (ws, [inputs, 1]), how);
            }
            let dw = if w.track_op() {
                let mut dw = vec![0f32; n * inputs];
                matmul([n, inputs, rows], (&mut dw, [inputs, 1]), (gs, [1, n]), (xs, [inputs, 1]), Write::ALL);
                Some(Tensor::from_vec(dw, w.shape(), dev)?)
            } else {
                None
            };
            let db = match bias {
                Some(b) if b.track_op() => {
                    // column sums by blocks of columns, each over the rows in order (deterministic)
                    let mut db = vec![0f32; n];
                    db.par_chunks_mut(64).enumerate().for_each(|(c, sums)| {
                        for row in gs.chunks_exact(n) {
                            sums.iter_mut().zip(&row[c * 64..]).for_each(|(s, g)| *s += g);
                        }
                    });
                    Some(Tensor::from_vec(db, b.shape(), dev)?)
                }
                _ => None,
            };
            out.push([dw, db]);
        }
        let dx = dx.map(|dx| Tensor::from_vec(dx, x.shape(), dev)).transpose()?;
        Ok((dx, out))
    }

    /// The gradients of `x`, `weight` and (given) `bias`, each only where it records a graph.
    fn backward(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, grad: &Tensor) -> CResult<[Option<Tensor>; 3]> {
        let (dx, mut layers) = Linear::grads(x, &[(w, bias, grad)], x.track_op())?;
        let [dw, db] = layers.pop().expect("one layer");
        Ok([dx, dw, db])
    }
}

/// The gradients of [`linear`] layers that read the same `x`, given as `(weight, bias, output gradient)`:
/// `x`'s (summed over the layers), and each layer's weight and bias where they record a graph.
#[allow(clippy::type_complexity)]
pub(super) fn linear_grads(
    x: &Tensor,
    layers: &[(&Tensor, Option<&Tensor>, &Tensor)],
) -> CResult<(Tensor, Vec<[Option<Tensor>; 2]>)> {
    let (dx, grads) = Linear::grads(x, layers, true)?;
    Ok((dx.expect("asked for"), grads))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> CResult<(CpuStorage, Shape)> {
        Linear::forward((xs, xl), (ws, wl), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let [dx, dw, _] = Linear::backward(x, w, None, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        Linear::forward((xs, xl), (ws, wl), Some(f32_slice(bs, bl)?))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dx, dw, db] = Linear::backward(x, w, Some(b), grad)?;
        Ok((dx, dw, db))
    }
}

/// The f32 elements of a CPU tensor's storage, as [`Tensor::storage_and_layout`] lends them.
fn cpu_f32_slice<'a>((storage, layout): &'a (candle_core::StorageRef<'_>, &Layout)) -> CResult<&'a [f32]> {
    match &**storage {
        candle_core::Storage::Cpu(s) => f32_slice(s, layout),
        _ => candle_core::bail!("fused kernels: CPU tensors only"),
    }
}

/// A matrix operand: its elements, and its row and column strides within them.
pub(super) type Operand<'a> = (&'a [f32], [usize; 2]);

/// How [`matmul`] writes: `dst = factor · lhs · rhs`, or `dst += factor · lhs · rhs` when `add`; on all of
/// candle's threads when `parallel`.
#[derive(Clone, Copy)]
pub(super) struct Write {
    add: bool,
    factor: f32,
    parallel: bool,
}

impl Write {
    pub(super) const SET: Write = Write { add: false, factor: 1.0, parallel: false };
    pub(super) const ALL: Write = Write { parallel: true, ..Write::SET };
    const ADD: Write = Write { add: true, factor: 1.0, parallel: false };
}

/// `dst (m × n) ← lhs (m × k) · rhs (k × n)` as `how` says, through gemm (the crate candle's CPU backend
/// uses), each operand given by its strides.
pub(super) fn matmul(
    [m, n, k]: [usize; 3],
    (dst, [dst_rs, dst_cs]): (&mut [f32], [usize; 2]),
    lhs: Operand,
    rhs: Operand,
    how: Write,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, [rs, cs]: [usize; 2]| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, n, [dst_rs, dst_cs]) < dst.len(), "matmul: dst too short");
    assert!(
        k == 0 || (last(m, k, lhs.1) < lhs.0.len() && last(k, n, rhs.1) < rhs.0.len()),
        "matmul: operand too short"
    );
    let threads = if how.parallel { candle_core::utils::get_num_threads() } else { 1 };
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let ((lhs, [lhs_rs, lhs_cs]), (rhs, [rhs_rs, rhs_cs])) = (lhs, rhs);
    // SAFETY: every element the strides reach is within its slice (asserted above); dst is not aliased
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            how.add,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if how.add { 1.0 } else { 0.0 },
            how.factor,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `exp` of eight lanes: Cephes' single-precision polynomial, inputs clamped to [-87, 88] (where `exp`
/// is a normal float; below, the softmax weight or the activation it feeds is 0 to f32 anyway).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0)), _mm256_set1_ps(-87.0));
    // x = n ln 2 + r, |r| <= ln 2 / 2
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
    }
    let y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
    // 2^n: n + 127 in the exponent bits (n is within [-127, 128) after the clamp)
    let pow2 =
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
    _mm256_mul_ps(y, pow2)
}

/// The sum of the eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn randn(shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// `fused` and `composite` of `inputs` agree within `tol` (relative to the largest value): outputs,
    /// and the gradients of a random weighting of the output with respect to each input.
    fn agree(inputs: &[&Var], fused: impl Fn() -> Tensor, composite: impl Fn() -> Tensor, tol: f32) {
        let (f, c) = (fused(), composite());
        let scale = |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(f.dims(), c.dims());
        assert!(max_diff(&f, &c) <= tol * scale(&c).max(1.0), "values differ by {}", max_diff(&f, &c));
        let weights = Tensor::randn(0f32, 1.0, c.shape(), &Device::Cpu).unwrap();
        let gf = (&f * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&c * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in inputs.iter().enumerate() {
            let (a, b) = (gf.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).unwrap());
            assert!(scale(b) > 0.0, "input {i}: no gradient");
            assert!(
                max_diff(a, b) <= tol * scale(b),
                "input {i}: gradients differ by {} of {}",
                max_diff(a, b),
                scale(b)
            );
        }
    }

    /// RMSNorm, rotation and the gated activation equal their composite ops, values and gradients, at
    /// sizes that leave vector tails (20 columns of 16; 12 and 6; 15,003 activations in chunks of 4,096).
    #[test]
    fn elementwise_kernels_equal_the_composite_ops() {
        let (x, w) = (randn(&[3, 5, 20]), randn(&[20]));
        let composite = || {
            let rms = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6).unwrap().sqrt().unwrap();
            x.broadcast_div(&rms).unwrap().broadcast_mul(&w).unwrap()
        };
        agree(&[&x, &w], || rms_norm(&x, &w, 1e-6).unwrap(), composite, 1e-5);

        let (x, cos, sin) = (randn(&[2, 3, 4, 12]), randn(&[2, 3, 1, 6]), randn(&[2, 3, 1, 6]));
        let composite = || {
            let (x1, x2) = (x.narrow(3, 0, 6).unwrap(), x.narrow(3, 6, 6).unwrap());
            let a = (x1.broadcast_mul(&cos).unwrap() - x2.broadcast_mul(&sin).unwrap()).unwrap();
            let b = (x2.broadcast_mul(&cos).unwrap() + x1.broadcast_mul(&sin).unwrap()).unwrap();
            Tensor::cat(&[a, b], 3).unwrap()
        };
        let (c, s) = (cos.as_tensor().detach(), sin.as_tensor().detach());
        agree(&[&x], || rope(&x, &c, &s).unwrap(), composite, 1e-6);

        let (g, u) = (randn(&[3, 5001]), randn(&[3, 5001]));
        let g = Var::from_tensor(&(g.as_tensor() * 4.0).unwrap()).unwrap(); // into the sigmoid's tails
        agree(&[&g, &u], || silu_mul(&g, &u).unwrap(), || (g.silu().unwrap() * u.as_tensor()).unwrap(), 1e-5);
    }

    /// The fused linear layer equals reshape, product with the transposed weight and bias, values and
    /// gradients (with a bias and without); a frozen weight and bias get no gradient.
    #[test]
    fn linear_equals_the_composite_ops() {
        let (x, w, bias) = (randn(&[2, 5, 12]), randn(&[7, 12]), randn(&[7]));
        let composite = |bias: Option<&Var>| {
            let y = x.reshape((10, 12)).unwrap().matmul(&w.t().unwrap()).unwrap();
            let y = match bias {
                Some(b) => y.broadcast_add(b).unwrap(),
                None => y,
            };
            y.reshape((2, 5, 7)).unwrap()
        };
        agree(&[&x, &w, &bias], || linear(&x, &w, Some(&bias)).unwrap(), || composite(Some(&bias)), 1e-5);
        agree(&[&x, &w], || linear(&x, &w, None).unwrap(), || composite(None), 1e-5);
        let (fw, fb) = (w.as_tensor().detach(), bias.as_tensor().detach());
        let grads = linear(&x, &fw, Some(&fb)).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&fw).is_none() && grads.get(&fb).is_none() && grads.get(x.as_tensor()).is_some());
    }

    /// The fused head and cross-entropy equal log-softmax of the logits at the targets, summed: in one
    /// chunk and in chunks of 2 rows and of 1 (fewer logits per chunk than the vocabulary); a frozen head
    /// gets no gradient, and a forward pass without a graph gives the same loss.
    #[test]
    fn head_nll_equals_log_softmax_of_the_logits() {
        let (n, dim, vocab) = (7, 24, 37);
        let (h, w) = (randn(&[n, dim]), randn(&[vocab, dim]));
        let targets = Tensor::new(&[0u32, 36, 5, 5, 12, 1, 30], &Device::Cpu).unwrap();
        let composite = || {
            let logits = h.matmul(&w.t().unwrap()).unwrap();
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
            logp.gather(&targets.unsqueeze(1).unwrap(), 1).unwrap().sum_all().unwrap().neg().unwrap()
        };
        for chunk in [LOGITS_PER_CHUNK, 2 * vocab, 1] {
            agree(&[&h, &w], || head_nll_in_chunks(&h, &w, &targets, chunk).unwrap(), composite, 1e-5);
        }
        let frozen = w.as_tensor().detach();
        let loss = head_nll(&h, &frozen, &targets).unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(&frozen).is_none() && grads.get(h.as_tensor()).is_some());
        let plain = head_nll(&h.as_tensor().detach(), &frozen, &targets).unwrap();
        assert_eq!(plain.to_scalar::<f32>().unwrap(), loss.to_scalar::<f32>().unwrap());
        let outside = Tensor::new(&[0u32, 37, 5, 5, 12, 1, 30], &Device::Cpu).unwrap();
        let err = head_nll(&h, &w, &outside).unwrap_err().to_string();
        assert!(err.contains("target 37 outside the vocabulary of 37"), "{err}");
    }

    /// Flash attention equals scores, masked softmax and values as separate products (the composite
    /// path), values and gradients of queries, keys and values: two query heads per kv head, a row of
    /// two packed examples and a row with left padding (padding queries see only themselves), 150
    /// positions (blocks of 64 and a tail), head sizes 16 and 12; without a graph, the same output.
    #[test]
    fn flash_attention_equals_the_composite_path() {
        let (b, t, heads, kv) = (2, 150, 4, 2);
        let mut ranges = Vec::new();
        for i in 0..t {
            ranges.push(if i < 70 { (0, i as u32) } else { (70, i as u32) });
        }
        for i in 0..t {
            ranges.push(if i < 30 { (i as u32, i as u32) } else { (30, i as u32) });
        }
        let mask = Mask::new(ranges, b, t, t);
        for d in [16, 12] {
            let (q, k, v) = (randn(&[b, t, heads, d]), randn(&[b, t, kv, d]), randn(&[b, t, kv, d]));
            let scale = 1.0 / (d as f64).sqrt();
            let composite = || {
                let groups = heads / kv;
                let qg = q.transpose(1, 2).unwrap().contiguous().unwrap().reshape((b, kv, groups * t, d)).unwrap();
                let heads_first = |x: &Var| x.transpose(1, 2).unwrap().contiguous().unwrap();
                let scores = qg.matmul(&heads_first(&k).t().unwrap()).unwrap();
                let probs = range_softmax(&scores, &mask, scale).unwrap();
                let out = probs.matmul(&heads_first(&v)).unwrap();
                out.reshape((b, heads, t, d)).unwrap().transpose(1, 2).unwrap()
            };
            let flat = |x: &Tensor| x.flatten_from(2).unwrap();
            let fused = || flash_attention(&flat(&q), &flat(&k), &flat(&v), [heads, kv], &mask, scale).unwrap();
            agree(&[&q, &k, &v], fused, || flat(&composite()), 1e-5);
            let plain = |x: &Var| flat(&x.as_tensor().detach());
            let detached = flash_attention(&plain(&q), &plain(&k), &plain(&v), [heads, kv], &mask, scale).unwrap();
            assert_eq!(max_diff(&detached, &fused()), 0.0);
        }
    }

    /// The vectorised `exp` stays within 2 ulp of the correctly rounded value over the range softmax and
    /// the activation use, and clamps outside it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp8_is_within_two_ulp() {
        if !avx2() {
            return;
        }
        let mut worst = 0f64;
        for i in 0..200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let mut lanes = [0f32; 8];
            // SAFETY: the CPU has AVX2 and FMA (checked above); lanes holds eight f32
            unsafe {
                use std::arch::x86_64::*;
                _mm256_storeu_ps(lanes.as_mut_ptr(), exp8(_mm256_set1_ps(x)));
            }
            let exact = f64::from(x).exp();
            let ulp = f64::from(f32::EPSILON) * exact;
            worst = worst.max((f64::from(lanes[0]) - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} ulp");
        let mut lanes = [0f32; 8];
        // SAFETY: as above
        unsafe {
            use std::arch::x86_64::*;
            _mm256_storeu_ps(lanes.as_mut_ptr(), exp8(_mm256_setr_ps(-1e9, -100.0, 100.0, 1e9, 0.0, -0.0, 1.0, -1.0)));
        }
        assert!(lanes[0] < 1e-37 && lanes[1] < 1e-37 && lanes[2].is_finite() && lanes[3].is_finite());
        assert_eq!((lanes[4], lanes[5]), (1.0, 1.0));
    }
}
