//! f32 GEMM: `C[M,N] = A[M,K]·B[K,N] (+ epilogue)` on strided views, built
//! on the `gemm` crate (AVX-512 micro-kernels through its `x86-v4` feature,
//! chosen at run time when the CPU has `avx512f`, AVX2/FMA otherwise).
//!
//! * [`gemm`]: the core, on [`MatRef`]/[`MatMut`] views with arbitrary
//!   element strides (a transposed operand is a view with swapped strides,
//!   e.g. [`MatRef::t`] for `Linear`'s `w[N, K]`).
//! * [`Epilogue`]: what is added to the product: nothing, a bias per column
//!   (`+ b[j]`, Linear) or per row (`+ b[i]`, convolution's `[Cout, P]`).
//!   Implemented by writing the bias into `C` and accumulating the product
//!   onto it, so no second pass reads the result.
//! * [`linear`] (`x[rows, K]·w[N, K]ᵀ + b`) and [`batched_matmul`]
//!   (`a[*, M, K]·b[*, K, N]` with NumPy-broadcast batch dims) on row-major
//!   slices, the IR's `Linear` and `MatMul`.
//!
//! Threads: see [`super::threads`]; a single GEMM is split by the `gemm`
//! crate over the pool, a batch of small ones is split over batch entries.
//! Accumulation is in f32 in the crate's blocked order; against an exact sum
//! the error is about `K · ε · Σ|a·b|` at worst, ~`√K · ε · Σ|a·b|` typically.
//! No allocation here besides the crate's internal packing buffers (which it
//! keeps in thread-local storage).

use super::threads;
use super::KernelError;

const OP: &str = "gemm";

/// A read-only strided f32 matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A writable strided f32 matrix: element `(i, j)` is `data[i·rs + j·cs]`.
/// Distinct elements must not share memory (checked).
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Dense row-major `[rows, cols]`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }
    /// The transpose (same memory, swapped strides).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

impl<'a> MatMut<'a> {
    /// Dense row-major `[rows, cols]`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut { data, rows, cols, rs: cols, cs: 1 }
    }
}

/// What is added to `A·B` before it is stored.
#[derive(Clone, Copy, Debug, Default)]
pub enum Epilogue<'a> {
    /// `C = A·B`.
    #[default]
    None,
    /// `C[i, j] = (A·B)[i, j] + b[j]`, `b.len() == N`.
    BiasN(&'a [f32]),
    /// `C[i, j] = (A·B)[i, j] + b[i]`, `b.len() == M`.
    BiasM(&'a [f32]),
    /// `C += A·B` (the previous contents of `C` are kept).
    Accumulate,
}

/// Offset of the last element, or None when it overflows; 0 for empty.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(rs)?.checked_add((cols - 1).checked_mul(cs)?)?.checked_add(1)
}

fn check_ref(what: &str, m: &MatRef) -> Result<(), KernelError> {
    match span(m.rows, m.cols, m.rs, m.cs) {
        Some(s) if s <= m.data.len() && m.rs <= isize::MAX as usize && m.cs <= isize::MAX as usize => Ok(()),
        _ => Err(KernelError::new(OP, format!("{what}: [{}, {}] with strides ({}, {}) exceeds its {} elements", m.rows, m.cols, m.rs, m.cs, m.data.len()))),
    }
}

/// Sufficient condition for distinct elements at distinct offsets.
fn disjoint(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows <= 1 && cols <= 1 {
        true
    } else if rows <= 1 {
        cs >= 1
    } else if cols <= 1 {
        rs >= 1
    } else {
        (cs >= 1 && rs >= cols.saturating_mul(cs)) || (rs >= 1 && cs >= rows.saturating_mul(rs))
    }
}

/// `C = A·B + epilogue` with `threads` workers (0 = physical cores).
pub fn gemm(c: MatMut, a: MatRef, b: MatRef, epi: Epilogue, threads: usize) -> Result<(), KernelError> {
    threads::run(OP, threads, |t| gemm_in(c, a, b, epi, t))?
}

/// [`gemm`] for a caller already inside [`threads::run`] with `t` threads.
pub(crate) fn gemm_in(c: MatMut, a: MatRef, b: MatRef, epi: Epilogue, t: usize) -> Result<(), KernelError> {
    let (m, n, k) = (c.rows, c.cols, a.cols);
    if a.rows != m || b.rows != k || b.cols != n {
        return Err(KernelError::new(OP, format!("shapes: C [{m}, {n}] = A [{}, {}] · B [{}, {}]", a.rows, a.cols, b.rows, b.cols)));
    }
    check_ref("A", &a)?;
    check_ref("B", &b)?;
    let cv = MatRef { data: c.data, rows: m, cols: n, rs: c.rs, cs: c.cs };
    check_ref("C", &cv)?;
    if !disjoint(m, n, c.rs, c.cs) {
        return Err(KernelError::new(OP, format!("C: strides ({}, {}) make elements overlap", c.rs, c.cs)));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let read_dst = match epi {
        Epilogue::None => false,
        Epilogue::Accumulate => true,
        Epilogue::BiasN(bias) | Epilogue::BiasM(bias) => {
            let (len, per_col) = if matches!(epi, Epilogue::BiasN(_)) { (n, true) } else { (m, false) };
            if bias.len() != len {
                return Err(KernelError::new(OP, format!("bias has {} elements, expected {len}", bias.len())));
            }
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.rs + j * c.cs] = if per_col { bias[j] } else { bias[i] };
                }
            }
            true
        }
    };
    if k == 0 {
        if !read_dst {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.rs + j * c.cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let par = if t > 1 { gemm::Parallelism::Rayon(t) } else { gemm::Parallelism::None };
    // SAFETY: every element the crate touches, (i, j) for i < M, j < N
    // (and the k range for A and B), lies inside its slice (checked by
    // `check_ref`), C's elements do not overlap (checked by `disjoint`),
    // and C is borrowed mutably so nothing else reads it meanwhile.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            c.cs as isize,
            c.rs as isize,
            read_dst,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// `got` elements for a `[r, c]` operand of a `linear` kernel.
pub(super) fn need(what: &str, got: usize, r: usize, c: usize) -> Result<(), KernelError> {
    if Some(got) == r.checked_mul(c) {
        Ok(())
    } else {
        Err(KernelError::new("linear", format!("{what}: {got} elements for [{r}, {c}]")))
    }
}

/// `y[rows, N] = x[rows, K] · w[N, K]ᵀ (+ bias[N])`, all row-major (the
/// IR's `Linear`, PyTorch weight layout).
#[allow(clippy::too_many_arguments)]
pub fn linear(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32], threads: usize) -> Result<(), KernelError> {
    need("x", x.len(), rows, k)?;
    need("w", w.len(), n, k)?;
    need("y", y.len(), rows, n)?;
    let epi = bias.map_or(Epilogue::None, Epilogue::BiasN);
    gemm(MatMut::row_major(y, rows, n), MatRef::row_major(x, rows, k), MatRef::row_major(w, n, k).t(), epi, threads)
}

/// [`linear`] with the weight pre-transposed: `y[rows, N] = x[rows, K] ·
/// wt[K, N] (+ bias[N])`, all row-major (a row-major right-hand side runs
/// ~15% faster in the `gemm` crate than a column-major one). The executor
/// now runs `Linear` on panel-packed weights (`super::gemm_packed`); this
/// stays as the baseline of `runtime/benches/linear_shapes.rs`.
#[allow(clippy::too_many_arguments)]
pub fn linear_t(x: &[f32], rows: usize, k: usize, wt: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32], threads: usize) -> Result<(), KernelError> {
    need("x", x.len(), rows, k)?;
    need("wt", wt.len(), k, n)?;
    need("y", y.len(), rows, n)?;
    let epi = bias.map_or(Epilogue::None, Epilogue::BiasN);
    gemm(MatMut::row_major(y, rows, n), MatRef::row_major(x, rows, k), MatRef::row_major(wt, k, n), epi, threads)
}

/// Broadcast of two batch shapes (NumPy rules, right-aligned).
pub(crate) fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize], out: &mut Vec<usize>) -> Result<(), KernelError> {
    let r = a.len().max(b.len());
    out.clear();
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out.push(if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(KernelError::new(op, format!("batch dims {a:?} and {b:?} do not broadcast")));
        });
    }
    Ok(())
}

/// Row-major strides of `shape` right-aligned to rank `r`, 0 on broadcast
/// (size-1 or missing) dims; in units of `unit` elements.
pub(crate) fn bcast_strides(shape: &[usize], r: usize, unit: usize) -> Vec<usize> {
    let mut s = vec![0; r];
    let mut acc = unit;
    for (i, &d) in shape.iter().enumerate().rev() {
        let o = r - shape.len() + i;
        s[o] = if d == 1 { 0 } else { acc };
        acc *= d;
    }
    s
}

/// Per-batch work below which a batch is split across threads (each GEMM
/// single-threaded) rather than each GEMM split by the crate.
const SMALL_GEMM_FLOPS: usize = 2 * 128 * 128 * 128;

/// `c[*, M, N] = a[*, M, K] · b[*, K, N]`, row-major, batch dims broadcast
/// (the IR's `MatMul`; ranks ≥ 2). `c` has the broadcast batch shape.
pub fn batched_matmul(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], c: &mut [f32], threads: usize) -> Result<(), KernelError> {
    const OP: &str = "matmul";
    let (ra, rb) = (a_shape.len(), b_shape.len());
    if ra < 2 || rb < 2 {
        return Err(KernelError::new(OP, format!("operands need rank ≥ 2, got {a_shape:?} and {b_shape:?}")));
    }
    let (m, k, k2, n) = (a_shape[ra - 2], a_shape[ra - 1], b_shape[rb - 2], b_shape[rb - 1]);
    if k != k2 {
        return Err(KernelError::new(OP, format!("contraction {k} vs {k2} ({a_shape:?} · {b_shape:?})")));
    }
    let mut batch = Vec::new();
    broadcast_shapes(OP, &a_shape[..ra - 2], &b_shape[..rb - 2], &mut batch)?;
    let nb: usize = batch.iter().product();
    let (na, nbb): (usize, usize) = (a_shape[..ra - 2].iter().product(), b_shape[..rb - 2].iter().product());
    let sizes = [(a.len(), na * m * k, "a"), (b.len(), nbb * k * n, "b"), (c.len(), nb * m * n, "c")];
    for (got, want, what) in sizes {
        if got != want {
            return Err(KernelError::new(OP, format!("{what}: {got} elements, expected {want}")));
        }
    }
    // One shared B and an unbroadcast A: a single [nb·M, K]·[K, N] GEMM.
    if nbb == 1 && na == nb {
        return gemm(MatMut::row_major(c, nb * m, n), MatRef::row_major(a, nb * m, k), MatRef::row_major(b, k, n), Epilogue::None, threads);
    }
    let sa = bcast_strides(&a_shape[..ra - 2], batch.len(), m * k);
    let sb = bcast_strides(&b_shape[..rb - 2], batch.len(), k * n);
    let offsets = |bi: usize| {
        let (mut rem, mut oa, mut ob) = (bi, 0, 0);
        for d in (0..batch.len()).rev() {
            let idx = rem % batch[d];
            rem /= batch[d];
            oa += idx * sa[d];
            ob += idx * sb[d];
        }
        (oa, ob)
    };
    let per = m * n;
    if per == 0 {
        return Ok(());
    }
    threads::run(OP, threads, |t| {
        let one = |bi: usize, cc: &mut [f32], t: usize| {
            let (oa, ob) = offsets(bi);
            let av = MatRef::row_major(&a[oa..oa + m * k], m, k);
            let bv = MatRef::row_major(&b[ob..ob + k * n], k, n);
            gemm_in(MatMut::row_major(cc, m, n), av, bv, Epilogue::None, t)
        };
        let small = 2 * m * n * k < SMALL_GEMM_FLOPS;
        if t > 1 && nb >= t && (small || nb >= 4 * t) {
            threads::for_each_chunk(t, c, per, |bi, cc| one(bi, cc, 1))
        } else {
            for (bi, cc) in c.chunks_mut(per).enumerate() {
                one(bi, cc, t)?;
            }
            Ok(())
        }
    })?
}

#[cfg(test)]
#[path = "tests/gemm.rs"]
mod tests;
