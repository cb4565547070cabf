//! Scaled dot-product attention, flash-attention style (the IR's
//! `Attention`):
//! `q [B, H, Sq, D], k [B, Hk, Sk, D], v [B, Hk, Sk, Dv], [mask] → [B, H, Sq, Dv]`,
//! `y = softmax(q·kᵀ·scale + mask)·v` per (batch, head).
//!
//! * Grouped-query attention: head `h` reads key/value head `h / (H / Hk)`.
//! * `scale` defaults to `1/√D`.
//! * `mask` is additive f32, any shape that broadcasts (NumPy rules,
//!   right-aligned) to `[B, H, Sq, Sk]`; `-inf` entries exclude keys.
//! * `causal` masks key `j` for query `i` when `j > i + (Sk − Sq)`
//!   (bottom-right aligned, as for a KV cache): with `Sq > Sk` the first
//!   `Sq − Sk` queries see no key at all.
//! * A query row whose keys are all masked (causal or `-inf` mask) yields
//!   **zeros**, exactly as the IR evaluator (not NaN as a naive softmax).
//!
//! Algorithm: per (batch, head, block of [`BQ`] queries) task, key blocks of
//! [`BK`] are visited in order; `S = Q·Kᵀ` for the block, scale/mask/causal
//! applied, an online softmax keeps the running row max `m` and denominator
//! `l`, rescales the output accumulator and adds `P·V`. The two GEMMs go
//! through the `gemm` crate, single-threaded inside a task (measured: the
//! packed GEMM's 14×32 AVX-512 tile, with the key block packed per task,
//! was no faster at the benchmark's shape; the GEMMs run near the FMA
//! peak, the softmax is the rest). Under `causal`, key
//! blocks past the block's last visible key are skipped, and rows that see
//! none of a key block are left out of its two GEMMs. Everything
//! accumulates in f32; scores are exponentiated with a polynomial `exp`
//! (≈2 ulp), the softmax loops compiled for AVX-512 or AVX2+FMA when the
//! CPU has them. Blocks of 160×512 measured best at the FLUX benchmark's
//! shape (S = 320, D = 64, 8 heads, one thread: 2.0 ms against 3.2 ms with
//! 128×256 and 2.4 ms with 64×512); earlier, 128×256 beat 64×128 by 1.4×. The output
//! block itself is the accumulator; the only scratch (`S`, `m`, `l`) is
//! thread-local and reused. The `B·H·⌈Sq/BQ⌉` tasks are one flat
//! [`super::threads::parallel_for`] on the spinning pool.

use super::gemm::{bcast_strides, gemm_in, Epilogue, MatMut, MatRef};
use super::{threads, KernelError};
use std::cell::RefCell;

const OP: &str = "attention";
/// Queries per task.
pub const BQ: usize = 160;
/// Keys per inner block.
pub const BK: usize = 512;

/// Sizes of an attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
}

/// An additive mask of `shape` (rank ≤ 4) broadcast to `[B, H, Sq, Sk]`.
#[derive(Clone, Copy, Debug)]
pub struct Mask<'a> {
    pub data: &'a [f32],
    pub shape: &'a [usize],
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `exp(x)` in f32 (Cephes `expf` polynomial, ≈2 ulp): 0 below −87.3,
/// NaN in → NaN out; written branch-free so loops over it vectorise.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.3;
    const HI: f32 = 88.7;
    const MAGIC: f32 = 12582912.0; // 1.5·2²³: adding it rounds to an integer
    let xc = x.clamp(LO, HI); // NaN stays NaN
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // t's low mantissa bits hold n (|n| ≤ 128): integer ops that vectorise,
    // unlike a saturating `n as i32`.
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let pow2 = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < LO {
        0.0
    } else {
        e * pow2
    }
}

/// Lanes of the partial reductions below (independent accumulators let
/// the compiler vectorise f32 reductions it may not reassociate).
const LANES: usize = 16;

/// Row maximum (NaN ignored, −inf for an empty or all −inf row).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = row.chunks_exact(LANES);
    for c in &mut it {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    let tail = it.remainder().iter().fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a });
    acc.iter().fold(tail, |a, &x| if x > a { x } else { a })
}

/// `row ← exp(row·scale − m)`, returning the sum of the new values
/// (`scale` 1 for rows already scaled: the same values as without it).
#[inline(always)]
fn exp_sub_sum(row: &mut [f32], scale: f32, m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut it = row.chunks_exact_mut(LANES);
    for c in &mut it {
        for (a, x) in acc.iter_mut().zip(c) {
            *x = exp_f32(*x * scale - m);
            *a += *x;
        }
    }
    let mut tail = 0.0;
    for x in it.into_remainder() {
        *x = exp_f32(*x * scale - m);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

/// Attention into `out [B, H, Sq, Dv]` (row-major slices throughout).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    dims: AttnDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<Mask>,
    scale: Option<f64>,
    causal: bool,
    out: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    let AttnDims { batch, heads, kv_heads, sq, sk, d, dv } = dims;
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(KernelError::new(OP, format!("{heads} query heads is not a multiple of {kv_heads} kv heads")));
    }
    let sizes = [
        (q.len(), batch * heads * sq * d, "q"),
        (k.len(), batch * kv_heads * sk * d, "k"),
        (v.len(), batch * kv_heads * sk * dv, "v"),
        (out.len(), batch * heads * sq * dv, "output"),
    ];
    for (got, want, what) in sizes {
        if got != want {
            return Err(KernelError::new(OP, format!("{what}: {got} elements, expected {want} for {dims:?}")));
        }
    }
    let full = [batch, heads, sq, sk];
    let mstrides = match mask {
        None => None,
        Some(m) => {
            let ok = m.shape.len() <= 4 && m.shape.iter().rev().zip(full.iter().rev()).all(|(&a, &b)| a == b || a == 1);
            if !ok || m.data.len() != m.shape.iter().product::<usize>() {
                return Err(KernelError::new(OP, format!("mask of shape {:?} ({} elements) does not broadcast to {full:?}", m.shape, m.data.len())));
            }
            let s = bcast_strides(m.shape, 4, 1);
            Some((m.data, [s[0], s[1], s[2], s[3]]))
        }
    };
    if out.is_empty() {
        return Ok(());
    }
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32;
    let group = heads / kv_heads;
    let qblocks = sq.div_ceil(BQ);
    // One flat task space of (batch·head, query block) pairs on the pool.
    let bh_n = out.len() / (sq * dv).max(1);
    let (olen, obase) = (out.len(), threads::SharedMut(out.as_mut_ptr()));
    if dv == 0 {
        return Ok(());
    }
    threads::try_parallel_for(threads, bh_n * qblocks, |task| {
        let (bh, qb) = (task / qblocks, task % qblocks);
        let (b, h) = (bh / heads, bh % heads);
        let kvh = b * kv_heads + h / group;
        let kh = &k[kvh * sk * d..(kvh + 1) * sk * d];
        let vh = &v[kvh * sk * dv..(kvh + 1) * sk * dv];
        let qh = &q[bh * sq * d..(bh + 1) * sq * d];
        let head_mask = mstrides.map(|(m, s)| (&m[b * s[0] + h * s[1]..], [s[2], s[3]]));
        let i0 = qb * BQ;
        let br = BQ.min(sq - i0);
        let lo = (bh * sq + i0) * dv;
        debug_assert!(lo + br * dv <= olen);
        let ob = obase;
        // SAFETY: rows i0..i0+br of head bh: in bounds of `out` (bh < B·H,
        // i0 + br ≤ Sq) and disjoint from every other task's rows.
        let o = unsafe { std::slice::from_raw_parts_mut(ob.0.add(lo), br * dv) };
        let qv = &qh[i0 * d..(i0 + br) * d];
        let job = Block { i0, br, sq, sk, d, dv, scale, causal, mask: head_mask };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => job.run(qv, kh, vh, o, &mut s),
            Err(_) => job.run(qv, kh, vh, o, &mut Vec::new()),
        })
    })
}

/// One (batch, head, query block) task.
struct Block<'a> {
    i0: usize,
    br: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
    scale: f32,
    causal: bool,
    /// The head's mask (offset to `[b, h]`) and its `[Sq, Sk]` strides.
    mask: Option<(&'a [f32], [usize; 2])>,
}

impl Block<'_> {
    fn run(&self, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32], scratch: &mut Vec<f32>) -> Result<(), KernelError> {
        let Block { i0, br, sq, sk, d, dv, causal, .. } = *self;
        o.fill(0.0);
        // Keys visible to the block's last row (causal): j ≤ i + sk − sq.
        let kend = if causal { (i0 + br + sk).saturating_sub(sq).min(sk) } else { sk };
        if kend == 0 {
            return Ok(());
        }
        let need = br * BK + 2 * br;
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
        let (s, ml) = scratch.split_at_mut(br * BK);
        let (m, l) = ml.split_at_mut(br);
        m[..br].fill(f32::NEG_INFINITY);
        l[..br].fill(0.0);
        let mut kb = 0;
        while kb < kend {
            let bc = BK.min(kend - kb);
            // Causal: rows r < r0 see none of this block's keys (row i sees
            // key kb iff i ≥ kb + sq − sk); they are left out entirely.
            let r0 = if causal { (kb + sq).saturating_sub(sk + i0).min(br) } else { 0 };
            let nr = br - r0;
            let s = &mut s[..nr * bc];
            let kblk = MatRef::row_major(&k[kb * d..(kb + bc) * d], bc, d).t();
            gemm_in(MatMut::row_major(s, nr, bc), MatRef::row_major(&q[r0 * d..], nr, d), kblk, Epilogue::None, 1)?;
            let orows = &mut o[r0 * dv..];
            self.softmax_rows(kb, bc, r0, s, &mut m[r0..], &mut l[r0..], orows);
            let vblk = MatRef::row_major(&v[kb * dv..(kb + bc) * dv], bc, dv);
            gemm_in(MatMut::row_major(orows, nr, dv), MatRef::row_major(s, nr, bc), vblk, Epilogue::Accumulate, 1)?;
            kb += bc;
        }
        for r in 0..br {
            let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
            o[r * dv..(r + 1) * dv].iter_mut().for_each(|x| *x *= inv);
        }
        Ok(())
    }

    /// Scale, mask and causal-mask the scores `s [br − r0, bc]` of rows
    /// `r0..br` and key block `kb` (`m`, `l`, `o` start at row `r0`), then the online-softmax update: `s ← exp(s − m_new)`,
    /// `l ← l·corr + Σs`, `o ← o·corr`, `m ← m_new` per row. Compiled for
    /// AVX-512 / AVX2+FMA when the CPU has them (chosen at run time).
    #[allow(clippy::too_many_arguments)]
    fn softmax_rows(&self, kb: usize, bc: usize, r0: usize, s: &mut [f32], m: &mut [f32], l: &mut [f32], o: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports the enabled features (just checked).
                return unsafe { self.softmax_rows_avx512(kb, bc, r0, s, m, l, o) };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: as above.
                return unsafe { self.softmax_rows_avx2(kb, bc, r0, s, m, l, o) };
            }
        }
        self.softmax_rows_impl(kb, bc, r0, s, m, l, o)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn softmax_rows_avx512(&self, kb: usize, bc: usize, r0: usize, s: &mut [f32], m: &mut [f32], l: &mut [f32], o: &mut [f32]) {
        self.softmax_rows_impl(kb, bc, r0, s, m, l, o)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn softmax_rows_avx2(&self, kb: usize, bc: usize, r0: usize, s: &mut [f32], m: &mut [f32], l: &mut [f32], o: &mut [f32]) {
        self.softmax_rows_impl(kb, bc, r0, s, m, l, o)
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn softmax_rows_impl(&self, kb: usize, bc: usize, r0: usize, s: &mut [f32], m: &mut [f32], l: &mut [f32], o: &mut [f32]) {
        let Block { i0, br, sq, sk, dv, scale, causal, mask, .. } = *self;
        for r in 0..br - r0 {
            let i = i0 + r0 + r;
            let row = &mut s[r * bc..(r + 1) * bc];
            // Without a mask and with scale > 0, the scale is applied inside
            // the exp pass (max(x)·scale = max(x·scale): rounding is
            // monotonic, so the values are those of a separate scale pass).
            let fused = mask.is_none() && scale > 0.0;
            match mask {
                Some((mk, [si, 0])) => {
                    let add = mk[i * si];
                    row.iter_mut().for_each(|x| *x = *x * scale + add);
                }
                Some((mk, [si, _])) => {
                    let base = i * si + kb;
                    row.iter_mut().zip(&mk[base..base + bc]).for_each(|(x, a)| *x = *x * scale + a);
                }
                None if fused => {}
                None => row.iter_mut().for_each(|x| *x *= scale),
            }
            if causal {
                // Keys j > i + sk − sq are masked: local index ≥ lim.
                let lim = (i + sk + 1).saturating_sub(sq).saturating_sub(kb).min(bc);
                row[lim..].fill(f32::NEG_INFINITY);
            }
            let (mx, row_scale) = if fused { (row_max(row) * scale, scale) } else { (row_max(row), 1.0) };
            let m_new = m[r].max(mx);
            let orow = &mut o[r * dv..(r + 1) * dv];
            if m_new == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let sum = exp_sub_sum(row, row_scale, m_new);
            let corr = exp_f32(m[r] - m_new);
            if corr != 1.0 {
                orow.iter_mut().for_each(|x| *x *= corr);
            }
            l[r] = l[r] * corr + sum;
            m[r] = m_new;
        }
    }
}

#[cfg(test)]
#[path = "tests/attention.rs"]
mod tests;
