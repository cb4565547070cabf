//! `Linear` on a weight pre-packed into column panels, with an AVX-512
//! micro-kernel.
//!
//! Layout ([`pack_panels`]): `w[N, K]` (PyTorch) is cut into panels of
//! [`NR`] = 32 output columns; panel `p` holds columns `32p .. 32p + w_p`
//! (`w_p = min(32, N − 32p)`) as a `[K, w_p]` row-major block starting at
//! element `32p·K`. So the packed weight has exactly `N·K` elements (the
//! last panel is narrower, not padded) and the micro-kernel streams one
//! contiguous block per panel.
//!
//! Kernel: `y[M, N] = x[M, K]·W + b` blocked as `for k-block (KC rows of
//! the panel, ~32 KiB, L1) { for panel { for MR-row tile of x { MR×32
//! register tile } } }`: 2·MR zmm accumulators (MR = 14 → 28 of the 32
//! registers) starting at zero, `x` elements broadcast from memory; at the
//! end of a k-block the tile's sum is added to the earlier blocks' partial
//! result in `y` (or to the bias, for the first block) and stored. The last panel and the tile's N tail use masked loads/stores.
//!
//! Threads: panels are split into contiguous ranges, one per thread (each
//! thread writes a disjoint set of output columns); with one panel and
//! several threads the rows are split instead.
//!
//! Sections ([`linear_packed_sections`]): the input may come as several
//! column blocks (a `concat` along K the GEMM reads in place) and the output
//! may go to several column blocks (a `split` along N written in place).
//!
//! Selected at run time when the CPU has `avx512f`; otherwise each panel
//! is one call of the `gemm` crate (a row-major `[K, w_p]` right-hand side)
//! per input section.
//! Accumulation is sequential in `k` within a k-block, blocks summed in
//! order (f32), error as in [`super::gemm`].

use super::gemm::{self as g, Epilogue, MatMut, MatRef};
use super::threads;
use super::KernelError;

/// Output columns per panel.
pub const NR: usize = 32;
/// Panel rows per k-block (a 32 KiB slice of a panel).
const KC: usize = 256;
/// Rows of `x` per register tile.
const MR: usize = 14;

const OP: &str = "linear";

/// Packs `w[N, K]` row-major (PyTorch layout) into panels (module doc).
pub fn pack_panels(w: &[f32], n: usize, k: usize, out: &mut [f32]) {
    pack_with(n, k, |j, kk| w[j * k + kk], out)
}

/// [`pack_panels`] reading `w` as little-endian f32 bytes into a byte buffer.
pub fn pack_panels_bytes(src: &[u8], n: usize, k: usize, dst: &mut [u8]) {
    for p0 in (0..n).step_by(NR) {
        let wp = NR.min(n - p0);
        let base = p0 * k;
        for j in 0..wp {
            let row = &src[4 * (p0 + j) * k..4 * (p0 + j + 1) * k];
            for kk in 0..k {
                let o = 4 * (base + kk * wp + j);
                dst[o..o + 4].copy_from_slice(&row[4 * kk..4 * kk + 4]);
            }
        }
    }
}

fn pack_with(n: usize, k: usize, get: impl Fn(usize, usize) -> f32, out: &mut [f32]) {
    for p0 in (0..n).step_by(NR) {
        let wp = NR.min(n - p0);
        let base = p0 * k;
        for j in 0..wp {
            for kk in 0..k {
                out[base + kk * wp + j] = get(p0 + j, kk);
            }
        }
    }
}

/// Whether the AVX-512 micro-kernel runs on this CPU.
pub fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y[rows, N] = x[rows, K] · W (+ bias[N])` with `W` packed by
/// [`pack_panels`] from `w[N, K]`; all row-major.
#[allow(clippy::too_many_arguments)]
pub fn linear_packed(x: &[f32], rows: usize, k: usize, wp: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32], threads: usize) -> Result<(), KernelError> {
    linear_packed_sections(&[x], &[k], rows, wp, n, bias, &mut [y], &[n], threads)
}

/// [`linear_packed`] on an input given as column sections and an output
/// written as column sections: `split(concat(x_0, …, x_{m−1}) · W + b)`
/// along the last axis, without materialising either. `xs[i]` is
/// `[rows, ks[i]]` row-major (`K = Σ ks`), `ys[o]` is `[rows, ns[o]]`
/// row-major (`N = Σ ns`). Every output section but the last must be a
/// multiple of [`NR`] columns wide, so that each panel lies in one output
/// (the GEMM writes panel `p` into the output holding its columns, at that
/// output's row stride); k-blocks are cut at input-section boundaries
/// (`kc = min(KC, boundary − k0)`) and read from the section holding them.
#[allow(clippy::too_many_arguments)]
pub fn linear_packed_sections(
    xs: &[&[f32]],
    ks: &[usize],
    rows: usize,
    wp: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    ys: &mut [&mut [f32]],
    ns: &[usize],
    threads: usize,
) -> Result<(), KernelError> {
    let need = g::need;
    if xs.is_empty() || xs.len() != ks.len() || ys.is_empty() || ys.len() != ns.len() {
        let msg = format!("{} input sections with {} widths, {} output sections with {} widths", xs.len(), ks.len(), ys.len(), ns.len());
        return Err(KernelError::new(OP, msg));
    }
    let multi = xs.len() > 1 || ys.len() > 1;
    for (i, (x, &kk)) in xs.iter().zip(ks).enumerate() {
        need(&if multi { format!("input section {i}") } else { "x".to_string() }, x.len(), rows, kk)?;
    }
    let k: usize = ks.iter().sum();
    if ns.iter().sum::<usize>() != n {
        return Err(KernelError::new(OP, format!("output sections {ns:?} do not add up to N = {n}")));
    }
    if let Some(o) = ns[..ns.len() - 1].iter().position(|w| !w.is_multiple_of(NR)) {
        let msg = format!("output section {o} is {} columns wide: every section but the last must be a multiple of {NR}", ns[o]);
        return Err(KernelError::new(OP, msg));
    }
    need("packed weight", wp.len(), k, n)?;
    for (o, (y, &w)) in ys.iter().zip(ns).enumerate() {
        need(&if multi { format!("output section {o}") } else { "y".to_string() }, y.len(), rows, w)?;
    }
    if let Some(b) = bias {
        if b.len() != n {
            return Err(KernelError::new(OP, format!("bias has {} elements, expected {n}", b.len())));
        }
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        let mut c0 = 0;
        for (y, &w) in ys.iter_mut().zip(ns) {
            if w > 0 {
                for r in y.chunks_mut(w) {
                    match bias {
                        Some(b) => r.copy_from_slice(&b[c0..c0 + w]),
                        None => r.fill(0.0),
                    }
                }
            }
            c0 += w;
        }
        return Ok(());
    }
    if avx512_available() {
        #[cfg(target_arch = "x86_64")]
        {
            let outs: Vec<avx512::Out> = ys.iter_mut().map(|y| avx512::Out(y.as_mut_ptr())).collect();
            return avx512::run(xs, ks, rows, wp, n, bias, &outs, ns, threads::resolve(threads));
        }
    }
    fallback(xs, ks, rows, wp, n, bias, ys, ns, threads)
}

/// The output section holding column `c` and its first column (`ns` as
/// checked by [`linear_packed_sections`], `c < Σ ns`).
fn section_of(ns: &[usize], c: usize) -> (usize, usize) {
    let (mut o, mut off) = (0, 0);
    while o + 1 < ns.len() && c >= off + ns[o] {
        off += ns[o];
        o += 1;
    }
    (o, off)
}

/// One `gemm`-crate call per panel and input section (the first with the
/// bias, the others accumulating), written into the panel's output section.
#[allow(clippy::too_many_arguments)]
fn fallback(
    xs: &[&[f32]],
    ks: &[usize],
    rows: usize,
    wp: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    ys: &mut [&mut [f32]],
    ns: &[usize],
    threads: usize,
) -> Result<(), KernelError> {
    let k: usize = ks.iter().sum();
    for p0 in (0..n).step_by(NR) {
        let w = NR.min(n - p0);
        let (o, off) = section_of(ns, p0);
        let mut koff = 0;
        for (x, &kk) in xs.iter().zip(ks) {
            if kk == 0 {
                continue;
            }
            let b = MatRef::row_major(&wp[p0 * k + koff * w..p0 * k + (koff + kk) * w], kk, w);
            let c = MatMut { data: &mut ys[o][p0 - off..], rows, cols: w, rs: ns[o], cs: 1 };
            let epi = match (koff, bias) {
                (0, Some(b)) => Epilogue::BiasN(&b[p0..p0 + w]),
                (0, None) => Epilogue::None,
                _ => Epilogue::Accumulate,
            };
            g::gemm(c, MatRef::row_major(x, rows, kk), b, epi, threads)?;
            koff += kk;
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::threads;
    use super::KernelError;
    use super::{KC, MR, NR};
    use std::arch::x86_64::*;

    /// A raw output pointer shared by threads that write disjoint elements.
    #[derive(Clone, Copy)]
    pub(super) struct Out(pub(super) *mut f32);
    // SAFETY: threads write disjoint column (or row) ranges of `y`.
    unsafe impl Send for Out {}
    unsafe impl Sync for Out {}

    /// Splits the work over `t` threads (module doc) and runs the blocks.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        xs: &[&[f32]],
        ks: &[usize],
        rows: usize,
        wp: &[f32],
        n: usize,
        bias: Option<&[f32]>,
        outs: &[Out],
        ns: &[usize],
        t: usize,
    ) -> Result<(), KernelError> {
        let panels = n.div_ceil(NR);
        let job = |p_lo: usize, p_hi: usize, r_lo: usize, r_hi: usize| {
            // SAFETY: lengths checked by the caller (xs[i]: rows·ks[i], wp:
            // K·N, outs[o]: rows·ns[o], bias: N, sections before the last
            // multiples of NR); this job writes only rows r_lo..r_hi of
            // panels p_lo..p_hi, disjoint from every other job's.
            unsafe { blocks(xs, ks, wp, n, bias, outs, ns, p_lo, p_hi, r_lo, r_hi) }
        };
        if t <= 1 {
            job(0, panels, 0, rows);
            Ok(())
        } else if panels >= t {
            threads::parallel_for(t, t, |i| job(i * panels / t, (i + 1) * panels / t, 0, rows))
        } else {
            // Few panels: split rows too, in whole MR tiles.
            let tiles = rows.div_ceil(MR);
            let per_p = t.div_ceil(panels).min(tiles).max(1);
            threads::parallel_for(t, panels * per_p, |i| {
                let (p, s) = (i / per_p, i % per_p);
                job(p, p + 1, (s * tiles / per_p * MR).min(rows), ((s + 1) * tiles / per_p * MR).min(rows))
            })
        }
    }

    /// Rows `r_lo..r_hi` × panels `p_lo..p_hi` of the output, k-block
    /// outermost (k-blocks cut at input-section boundaries).
    ///
    /// # Safety
    /// The CPU has avx512f; slices as checked by `linear_packed_sections`;
    /// `outs[o]` points at `rows·ns[o]` writable f32 of which this call is
    /// the only writer of the given block.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn blocks(
        xs: &[&[f32]],
        ks: &[usize],
        wp: &[f32],
        n: usize,
        bias: Option<&[f32]>,
        outs: &[Out],
        ns: &[usize],
        p_lo: usize,
        p_hi: usize,
        r_lo: usize,
        r_hi: usize,
    ) {
        let k: usize = ks.iter().sum();
        let mut koff = 0;
        for (x, &ksec) in xs.iter().zip(ks) {
            let mut k0 = 0;
            while k0 < ksec {
                let kc = KC.min(ksec - k0);
                let kabs = koff + k0;
                let first = kabs == 0;
                for p in p_lo..p_hi {
                    let c0 = p * NR;
                    let w = NR.min(n - c0);
                    let (o, off) = super::section_of(ns, c0);
                    let (y, ldc) = (outs[o].0.add(c0 - off), ns[o]);
                    let m0: __mmask16 = if w >= 16 { 0xffff } else { ((1u32 << w) - 1) as __mmask16 };
                    let m1: __mmask16 = if w >= 32 {
                        0xffff
                    } else if w > 16 {
                        ((1u32 << (w - 16)) - 1) as __mmask16
                    } else {
                        0
                    };
                    let b = wp.as_ptr().add(c0 * k + kabs * w);
                    let bias_p = match (first, bias) {
                        (true, Some(bs)) => bs.as_ptr().add(c0),
                        _ => std::ptr::null(),
                    };
                    // The next panel's block, prefetched into L2 by the first
                    // tile (weights are read once per forward: cold in cache).
                    let (pf, pf_ld) = if p + 1 < p_hi {
                        let wn = NR.min(n - c0 - NR);
                        (wp.as_ptr().add((c0 + NR) * k + kabs * wn), wn)
                    } else {
                        (std::ptr::null(), 0)
                    };
                    let mut r = r_lo;
                    while r < r_hi {
                        let mr = MR.min(r_hi - r);
                        let a = x.as_ptr().add(r * ksec + k0);
                        let c = y.add(r * ldc);
                        let pf = if r == r_lo { pf } else { std::ptr::null() };
                        let args = Tile { kc, a, lda: ksec, b, ldb: w, c, ldc, m0, m1, load_c: !first, bias: bias_p, pf, pf_ld };
                        match mr {
                            14 => tile::<14>(&args),
                            13 => tile::<13>(&args),
                            12 => tile::<12>(&args),
                            11 => tile::<11>(&args),
                            10 => tile::<10>(&args),
                            9 => tile::<9>(&args),
                            8 => tile::<8>(&args),
                            7 => tile::<7>(&args),
                            6 => tile::<6>(&args),
                            5 => tile::<5>(&args),
                            4 => tile::<4>(&args),
                            3 => tile::<3>(&args),
                            2 => tile::<2>(&args),
                            _ => tile::<1>(&args),
                        }
                        r += mr;
                    }
                }
                k0 += kc;
            }
            koff += ksec;
        }
    }

    struct Tile {
        kc: usize,
        /// R rows of `x` at stride `lda`.
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        m0: __mmask16,
        m1: __mmask16,
        load_c: bool,
        bias: *const f32,
        /// Null, or `kc` rows at stride `pf_ld` to prefetch into L2.
        pf: *const f32,
        pf_ld: usize,
    }

    /// One `R×32` output tile over `kc` rows of a panel.
    ///
    /// # Safety
    /// avx512f; `a` has R rows of `kc` readable f32 at stride `lda`, `b`
    /// `kc` rows of `ldb` (masked by m0/m1) at stride `ldb`, `c` R rows of
    /// the masked columns at stride `ldc`; `bias` null or the masked columns.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(t: &Tile) {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        let (mut a, mut b) = (t.a, t.b);
        if !t.pf.is_null() {
            let mut pf = t.pf;
            for _ in 0..t.kc {
                _mm_prefetch::<_MM_HINT_T1>(pf.cast::<i8>());
                _mm_prefetch::<_MM_HINT_T1>(pf.wrapping_add(16).cast::<i8>());
                let b0 = _mm512_maskz_loadu_ps(t.m0, b);
                let b1 = _mm512_maskz_loadu_ps(t.m1, b.wrapping_add(16));
                for i in 0..R {
                    let av = _mm512_set1_ps(*a.add(i * t.lda));
                    acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
                    acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
                }
                a = a.add(1);
                b = b.add(t.ldb);
                pf = pf.wrapping_add(t.pf_ld);
            }
        } else if t.ldb == NR {
            for _ in 0..t.kc {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for i in 0..R {
                    let av = _mm512_set1_ps(*a.add(i * t.lda));
                    acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
                    acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
                }
                a = a.add(1);
                b = b.add(NR);
            }
        } else {
            for _ in 0..t.kc {
                let b0 = _mm512_maskz_loadu_ps(t.m0, b);
                let b1 = _mm512_maskz_loadu_ps(t.m1, b.wrapping_add(16));
                for i in 0..R {
                    let av = _mm512_set1_ps(*a.add(i * t.lda));
                    acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
                    acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
                }
                a = a.add(1);
                b = b.add(t.ldb);
            }
        }
        // The block's sum is added to the earlier blocks' (or the bias)
        // last: blocked summation, and the `gemm` crate's rounding order.
        if t.load_c {
            for i in 0..R {
                acc0[i] = _mm512_add_ps(acc0[i], _mm512_maskz_loadu_ps(t.m0, t.c.add(i * t.ldc)));
                acc1[i] = _mm512_add_ps(acc1[i], _mm512_maskz_loadu_ps(t.m1, t.c.wrapping_add(i * t.ldc + 16)));
            }
        } else if !t.bias.is_null() {
            let b0 = _mm512_maskz_loadu_ps(t.m0, t.bias);
            let b1 = _mm512_maskz_loadu_ps(t.m1, t.bias.wrapping_add(16));
            for i in 0..R {
                acc0[i] = _mm512_add_ps(acc0[i], b0);
                acc1[i] = _mm512_add_ps(acc1[i], b1);
            }
        }
        for i in 0..R {
            _mm512_mask_storeu_ps(t.c.add(i * t.ldc), t.m0, acc0[i]);
            _mm512_mask_storeu_ps(t.c.wrapping_add(i * t.ldc + 16), t.m1, acc1[i]);
        }
    }
}

#[cfg(test)]
#[path = "tests/gemm_packed.rs"]
mod tests;
