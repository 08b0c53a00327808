//! CPU kernels for inference only (f32, no backward pass), which the decoder takes instead of its
//! differentiable ops when no input records a gradient graph ([`applies`]): the teacher, and evaluation.
//! A decoding step is a few rows through every weight matrix plus a few hundred small operations; the
//! matrix products go through gemm, which repacks the whole weight for a few rows, and attention as
//! products and a softmax allocates scores it then throws away. Here each is one pass, threaded on
//! candle's spinning pool (rayon's sleeping workers cost more to wake than these take). The element-wise
//! kernels both paths share, with their backward passes, are in [`super::fused`]. Tests check every
//! kernel against the composite path it replaces.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use super::fused::{Mask, SharedOut, avx2, dot, exp8, f32_slice, hsum, parallel};

type CResult<T> = candle_core::Result<T>;

/// Whether the kernels may stand in for the composite ops on `tensors`: f32 on the CPU, recording no
/// gradient graph.
pub fn applies(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// Attention of `q` `[batch, seq, heads, head_dim]` over the keys and values `[batch, kv_heads, keys,
/// head_dim]` (views into the cache: strided, no copy), each query within its key range of `mask`,
/// query head `i` reading kv head `i / (heads / kv_heads)`; the result is `[batch, seq, heads,
/// head_dim]`, as the output projection takes it. Scores, softmax and the weighted sum of values in
/// one pass per query: no `[batch, heads, seq, keys]` tensors, no keys outside the range.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> CResult<Tensor> {
    q.contiguous()?.apply_op3_no_bwd(k, v, &Attention { mask: mask.clone(), scale: scale as f32 })
}

struct Attention {
    mask: Mask,
    scale: f32,
}

/// The rows of a `[batch, kv_heads, keys, head_dim]` view: its data and the offset of row
/// `(b, h, j)`.
struct Rows<'a> {
    data: &'a [f32],
    start: usize,
    strides: [usize; 3],
    d: usize,
}

impl<'a> Rows<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout) -> CResult<Rows<'a>> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("attention: f32 only") };
        let (_, _, _, d) = layout.shape().dims4()?;
        let s = layout.stride();
        if s[3] != 1 {
            candle_core::bail!("attention: the head dimension must be contiguous");
        }
        Ok(Rows { data, start: layout.start_offset(), strides: [s[0], s[1], s[2]], d })
    }

    #[inline(always)]
    fn row(&self, b: usize, h: usize, j: usize) -> &'a [f32] {
        &self.data[self.start + b * self.strides[0] + h * self.strides[1] + j * self.strides[2]..][..self.d]
    }
}

/// The sizes of an attention call.
#[derive(Clone, Copy)]
struct Heads {
    t: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
}

impl Attention {
    /// The queries of batch row and kv head `unit` (`b * kv_heads + h`): the scores of every query of
    /// the group against each key row (read once for the group), softmax within the query's range, then
    /// the weighted sum of the values. (Transposing the keys to score without horizontal sums measured
    /// slower, prompts included.)
    ///
    /// # Safety
    /// `out` is the `[batch, seq, heads, head_dim]` output, whose rows of this unit no other thread writes.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn unit(&self, q: &[f32], k: &Rows, v: &Rows, s: Heads, unit: usize, out: SharedOut, p: &mut Vec<f32>) {
        let (bi, kh) = (unit / s.kv_heads, unit % s.kv_heads);
        let (groups, d) = (s.heads / s.kv_heads, s.d);
        for ti in 0..s.t {
            let (first, last) = self.mask.range(bi, ti);
            let (first, n) = (first as usize, (last - first) as usize + 1);
            // the group's queries are consecutive heads
            let at_q = ((bi * s.t + ti) * s.heads + kh * groups) * d;
            let qs = &q[at_q..][..groups * d];
            p.clear();
            p.resize(groups * n, 0.0);
            for j in 0..n {
                let key = k.row(bi, kh, first + j);
                for (g, q) in qs.chunks_exact(d).enumerate() {
                    p[g * n + j] = dot(q, key);
                }
            }
            for p in p.chunks_exact_mut(n) {
                let max = p.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * self.scale;
                let mut sum = 0f32;
                for x in p.iter_mut() {
                    *x = (*x * self.scale - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                p.iter_mut().for_each(|x| *x *= inv);
            }
            // SAFETY: this unit's queries' output rows
            let o = unsafe { out.slice(at_q, groups * d) };
            for j in 0..n {
                let value = v.row(bi, kh, first + j);
                for (g, o) in o.chunks_exact_mut(d).enumerate() {
                    let w = p[g * n + j];
                    for (o, &x) in o.iter_mut().zip(value) {
                        *o += w * x;
                    }
                }
            }
        }
    }

    /// [`Attention::unit`] in AVX2 and FMA, for a head size that is a multiple of 8: scores of eight keys
    /// at a time (their eight-lane sums reduced together), softmax with a vectorised `exp`, and the values
    /// summed eight output lanes at a time in registers.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and [`Attention::unit`]'s condition holds.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn unit_avx2(&self, q: &[f32], k: &Rows, v: &Rows, s: Heads, unit: usize, out: SharedOut, p: &mut Vec<f32>) {
        use std::arch::x86_64::*;
        let (bi, kh) = (unit / s.kv_heads, unit % s.kv_heads);
        let (groups, d) = (s.heads / s.kv_heads, s.d);
        if d % 8 != 0 {
            // SAFETY: the caller's
            return unsafe { self.unit(q, k, v, s, unit, out, p) };
        }
        let scale = _mm256_set1_ps(self.scale);
        for ti in 0..s.t {
            let (first, last) = self.mask.range(bi, ti);
            let (first, n) = (first as usize, (last - first) as usize + 1);
            let at_q = ((bi * s.t + ti) * s.heads + kh * groups) * d;
            p.clear();
            p.resize(groups * n, 0.0);
            for g in 0..groups {
                let q = &q[at_q + g * d..][..d];
                let p = &mut p[g * n..][..n];
                let mut j = 0;
                while j + 8 <= n {
                    let row = |i: usize| k.row(bi, kh, first + j + i);
                    let keys = [row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7)];
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for c in (0..d).step_by(8) {
                        // SAFETY: c + 8 <= d, the length of the query and of every key row
                        unsafe {
                            let qv = _mm256_loadu_ps(q.as_ptr().add(c));
                            for i in 0..8 {
                                acc[i] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys[i].as_ptr().add(c)), acc[i]);
                            }
                        }
                    }
                    let (t0, t1) = (_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
                    let (t2, t3) = (_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
                    let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
                    let sums =
                        _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(u0, u1), _mm256_permute2f128_ps::<0x31>(u0, u1));
                    // SAFETY: j + 8 <= n
                    unsafe { _mm256_storeu_ps(p.as_mut_ptr().add(j), _mm256_mul_ps(sums, scale)) };
                    j += 8;
                }
                for (j, p) in p.iter_mut().enumerate().skip(j) {
                    *p = dot(q, k.row(bi, kh, first + j)) * self.scale;
                }
                let max = _mm256_set1_ps(p.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
                let mut sum = 0f32;
                let mut j = 0;
                while j + 8 <= n {
                    // SAFETY: j + 8 <= n
                    unsafe {
                        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.as_ptr().add(j)), max));
                        _mm256_storeu_ps(p.as_mut_ptr().add(j), e);
                        sum += hsum(e);
                    }
                    j += 8;
                }
                let max = _mm_cvtss_f32(_mm256_castps256_ps128(max));
                for x in &mut p[j..] {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                p.iter_mut().for_each(|x| *x *= inv);
            }
            // SAFETY: this unit's queries' output rows
            let o = unsafe { out.slice(at_q, groups * d) };
            if d % 32 == 0 {
                // four independent sums per pass over the values (one would wait on each addition)
                for c in (0..d).step_by(32) {
                    for (g, o) in o.chunks_exact_mut(d).enumerate() {
                        let mut acc = [_mm256_setzero_ps(); 4];
                        for (j, &w) in p[g * n..][..n].iter().enumerate() {
                            let (w, value) = (_mm256_set1_ps(w), v.row(bi, kh, first + j)[c..c + 32].as_ptr());
                            for (i, acc) in acc.iter_mut().enumerate() {
                                // SAFETY: the row holds 32 floats from `value`
                                *acc = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(value.add(8 * i)) }, *acc);
                            }
                        }
                        for (i, acc) in acc.iter().enumerate() {
                            // SAFETY: c + 32 <= d, the length of an output row
                            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(c + 8 * i), *acc) };
                        }
                    }
                }
                continue;
            }
            for c in (0..d).step_by(8) {
                for (g, o) in o.chunks_exact_mut(d).enumerate() {
                    let weights = &p[g * n..][..n];
                    let mut acc = _mm256_setzero_ps();
                    for (j, &w) in weights.iter().enumerate() {
                        // SAFETY: c + 8 <= d, the length of a value row
                        unsafe {
                            let value = _mm256_loadu_ps(v.row(bi, kh, first + j).as_ptr().add(c));
                            acc = _mm256_fmadd_ps(_mm256_set1_ps(w), value, acc);
                        }
                    }
                    // SAFETY: c + 8 <= d
                    unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(c), acc) };
                }
            }
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
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
        let q = f32_slice(qs, ql)?;
        let (b, t, heads, d) = ql.shape().dims4()?;
        let (kb, kv_heads, keys, kd) = kl.shape().dims4()?;
        if kb != b || kd != d || vl.shape() != kl.shape() || heads % kv_heads != 0 {
            candle_core::bail!("attention: q {:?}, k {:?}, v {:?} do not fit", ql.shape(), kl.shape(), vl.shape());
        }
        if self.mask.batch != b || self.mask.queries != t || self.mask.keys != keys {
            candle_core::bail!("attention: the mask does not fit q {:?} and k {:?}", ql.shape(), kl.shape());
        }
        let (k, v) = (Rows::new(ks, kl)?, Rows::new(vs, vl)?);
        let mut out = vec![0f32; q.len()];
        let at = SharedOut(out.as_mut_ptr());
        let shape = Heads { t, heads, kv_heads, d };
        // one unit per (batch row, kv head): its keys and values are read once for the whole group
        let vector = avx2();
        parallel(b * kv_heads, |units| {
            let mut scores = Vec::new();
            for unit in units {
                #[cfg(target_arch = "x86_64")]
                if vector {
                    // SAFETY: the CPU has AVX2 and FMA; the unit writes only its own queries' rows
                    unsafe { self.unit_avx2(q, &k, &v, shape, unit, at, &mut scores) };
                    continue;
                }
                // SAFETY: as above
                unsafe { self.unit(q, &k, &v, shape, unit, at, &mut scores) };
            }
        });
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }
}

/// `x · wᵀ` for the rows of a decoding step: `x` `[m, k]`, `w` `[n, k]` (a linear layer's weight as
/// stored), both f32 on the CPU. Every output is the dot product of two contiguous rows, computed the same
/// way whatever `m`, and `w` is read once per block of rows. gemm first repacks all of `w` for its
/// microkernel, which at a few rows costs about as much as the product (a third of decoding time at batch
/// 8, profiled). Inference only: it has no backward.
pub fn decode_matmul(x: &Tensor, w: &Tensor) -> CResult<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &DecodeMatmul)
}

struct DecodeMatmul;

/// Rows of `x` a thread takes at once when there are more (with fewer, the threads split the columns).
const ROW_BLOCK: usize = 32;

/// Weight rows (output columns) a kernel call holds at once.
const TILE_COLUMNS: usize = 3;

impl CustomOp2 for DecodeMatmul {
    fn name(&self) -> &'static str {
        "small-matmul"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let ((m, k), (n, kw)) = (xl.shape().dims2()?, wl.shape().dims2()?);
        if k != kw {
            candle_core::bail!("decode matmul: x {:?} and w {:?} do not fit", xl.shape(), wl.shape());
        }
        let (x, w) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?);
        let mut out = vec![0f32; m * n];
        let at = SharedOut(out.as_mut_ptr());
        // candle's spinning pool rather than rayon's: a decoding step runs about a hundred of these, each
        // a fraction of a millisecond, and rayon's sleeping workers cost more to wake than that. Each
        // thread takes one contiguous share of `w`, which streams from memory at decode time.
        if m > ROW_BLOCK {
            // many rows (a large batch, or final states gathered for a loss): blocks of rows, each
            // through every weight row, so that a block stays in the cache while the weight streams past
            parallel(m.div_ceil(ROW_BLOCK), |blocks| {
                for block in blocks {
                    let rows = block * ROW_BLOCK..((block + 1) * ROW_BLOCK).min(m);
                    let x = &x[rows.start * k..rows.end * k];
                    // SAFETY: a block writes only its own rows of `out`
                    unsafe { products(x, rows.len(), k, w, 0, n, at.get().wrapping_add(rows.start * n)) };
                }
            });
            return Ok((CpuStorage::F32(out), Shape::from((m, n))));
        }
        let pool = candle_core::utils::barrier_pool();
        let share = n.div_ceil(TILE_COLUMNS).div_ceil(pool.n_workers() + 1) * TILE_COLUMNS;
        pool.execute(|thread| {
            let columns = (thread * share).min(n)..((thread + 1) * share).min(n);
            // SAFETY: a thread writes only its own columns of `out`, which outlives the pool's call
            unsafe { products(x, m, k, &w[columns.start * k..columns.end * k], columns.start, n, at.get()) };
        });
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `out[i * n + first + j] = x[i] · w[j]` for the `m` rows of `x` and the rows `w[j]` (`k` long each).
///
/// # Safety
/// `out` holds `m * n` elements, and `first + w.len() / k <= n`.
unsafe fn products(x: &[f32], m: usize, k: usize, w: &[f32], first: usize, n: usize, out: *mut f32) {
    assert!(x.len() == m * k && w.len().is_multiple_of(k), "decode matmul: sizes");
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above; the caller vouches for `out`
        return unsafe { products_avx2(x, m, k, w, first, n, out) };
    }
    for (j, w) in w.chunks_exact(k).enumerate() {
        for (i, x) in x.chunks_exact(k).enumerate() {
            // SAFETY: i < m and first + j < n, the caller's bounds
            unsafe { *out.add(i * n + first + j) = x.iter().zip(w).map(|(a, b)| a * b).sum() };
        }
    }
}

/// Tiles of up to four rows of `x` by three rows of `w`: twelve eight-lane sums in registers, seven loads
/// for every twelve fused multiply-adds.
///
/// # Safety
/// The CPU must have AVX2 and FMA, and [`products`]' bounds hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn products_avx2(x: &[f32], m: usize, k: usize, w: &[f32], first: usize, n: usize, out: *mut f32) {
    let columns = w.len() / k;
    for j in (0..columns).step_by(TILE_COLUMNS) {
        let cols = (columns - j).min(TILE_COLUMNS);
        // a tile of fewer columns repeats its last one and writes only the real ones
        let wrow = |c: usize| &w[(j + c.min(cols - 1)) * k..][..k];
        let ws = [wrow(0), wrow(1), wrow(2)];
        // the next tile's rows, fetched into the cache while this one computes: at decoding sizes the
        // weights stream from memory
        let next = w.as_ptr().wrapping_add((j + TILE_COLUMNS) * k);
        let prefetch = if j + TILE_COLUMNS < columns { Some(next) } else { None };
        let mut i = 0;
        while i < m {
            let out = out.wrapping_add(i * n + first + j);
            let x = &x[i * k..];
            let prefetch = if i == 0 { prefetch } else { None };
            // SAFETY: the caller's bounds, with the rows and columns counted here
            unsafe {
                match m - i {
                    1 => tile::<1>(x, k, ws, cols, prefetch, out, n),
                    2 => tile::<2>(x, k, ws, cols, prefetch, out, n),
                    3 => tile::<3>(x, k, ws, cols, prefetch, out, n),
                    _ => tile::<4>(x, k, ws, cols, prefetch, out, n),
                }
            }
            i += 4;
        }
    }
}

/// `out[r * n + c] = x[r] · ws[c]` for `R` rows of `x` and the first `cols` of `ws`, prefetching the
/// `3 * k` floats at `prefetch`.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `x` holds `R` rows of `k`, `out` has room for them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    x: &[f32],
    k: usize,
    ws: [&[f32]; TILE_COLUMNS],
    cols: usize,
    prefetch: Option<*const f32>,
    out: *mut f32,
    n: usize,
) {
    use std::arch::x86_64::*;
    let body = k / 8 * 8;
    let xs: [&[f32]; R] = std::array::from_fn(|r| &x[r * k..][..k]);
    let mut acc = [[_mm256_setzero_ps(); TILE_COLUMNS]; R];
    let mut o = 0;
    while o < body {
        // SAFETY: o + 8 <= body <= k, the length of every row; a prefetch of any address is harmless
        unsafe {
            if let Some(p) = prefetch
                && o % 16 == 0
            {
                for c in 0..TILE_COLUMNS {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(c * k + o) as *const i8);
                }
            }
            let wv = [
                _mm256_loadu_ps(ws[0].as_ptr().add(o)),
                _mm256_loadu_ps(ws[1].as_ptr().add(o)),
                _mm256_loadu_ps(ws[2].as_ptr().add(o)),
            ];
            for r in 0..R {
                let xv = _mm256_loadu_ps(xs[r].as_ptr().add(o));
                for c in 0..TILE_COLUMNS {
                    acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
                }
            }
        }
        o += 8;
    }
    for r in 0..R {
        for c in 0..cols {
            let tail: f32 = xs[r][body..].iter().zip(&ws[c][body..]).map(|(a, b)| a * b).sum();
            // SAFETY: the caller's bounds
            unsafe { *out.add(r * n + c) = hsum(acc[r][c]) + tail };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    /// Attention over strided cache views (a buffer with spare positions), two query heads per kv head,
    /// left padding and a padding query, equals scores, masked softmax and values as separate products:
    /// head sizes for each path of the vector code (multiples of 8 and of 32; blocks of eight keys and a
    /// tail) and one it does not take.
    #[test]
    fn attention_equals_the_composite_path() {
        for (d, past) in [(12, 2), (16, 9), (32, 9), (64, 17)] {
            let (b, t, heads, kv) = (2, 3, 4, 2);
            let keys = past + t;
            let q = randn(&[b, t, heads, d]);
            let buffer_k = randn(&[b, kv, keys + 4, d]);
            let buffer_v = randn(&[b, kv, keys + 4, d]);
            let (k, v) = (buffer_k.narrow(2, 0, keys).unwrap(), buffer_v.narrow(2, 0, keys).unwrap());
            // row 0: every key real; row 1: padding up to its last two positions (its first query pads)
            let valid = vec![vec![true; keys], (0..keys).map(|j| j + 2 >= keys).collect()];
            let mask = super::super::attention_mask(&valid, past, t);
            let got = attention(&q, &k, &v, &mask, 0.3).unwrap();

            let groups = heads / kv;
            let qg = q.transpose(1, 2).unwrap().contiguous().unwrap().reshape((b, kv, groups * t, d)).unwrap();
            let scores = qg.matmul(&k.t().unwrap()).unwrap();
            let probs = super::super::fused::range_softmax(&scores, &mask, 0.3).unwrap();
            let want = probs.matmul(&v.contiguous().unwrap()).unwrap();
            let want = want.reshape((b, heads, t, d)).unwrap().transpose(1, 2).unwrap();
            assert!(max_diff(&got, &want) < 1e-5, "head size {d}: differ by {}", max_diff(&got, &want));
        }
    }

    /// The decoding product equals gemm's, with sizes that leave tails (k not a multiple of 8, n not a
    /// multiple of a tile's columns), a transposed input, one row and blocks of rows.
    #[test]
    fn decode_matmul_equals_matmul() {
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 37, 5), (8, 256, 259), (16, 100, 130), (75, 64, 40)] {
            let x = Tensor::randn(0f32, 1.0, (k, m), &dev).unwrap().t().unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let got = decode_matmul(&x, &w).unwrap();
            assert_eq!(got.dims(), &[m, n]);
            let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-5 * scale, "{m}x{k}x{n}: {diff} of {scale}");
        }
    }
}
