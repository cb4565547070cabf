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

/// `y[rows, N] = x[rows, K] · w[N, K]ᵀ (+ bias[N])`, all row-major (the
/// IR's `Linear`, PyTorch weight layout).
#[allow(clippy::too_many_arguments)]
pub fn linear(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32], threads: usize) -> Result<(), KernelError> {
    let need = |what: &str, got: usize, r: usize, c: usize| {
        if Some(got) == r.checked_mul(c) {
            Ok(())
        } else {
            Err(KernelError::new("linear", format!("{what}: {got} elements for [{r}, {c}]")))
        }
    };
    need("x", x.len(), rows, k)?;
    need("w", w.len(), n, k)?;
    need("y", y.len(), rows, n)?;
    let epi = bias.map_or(Epilogue::None, Epilogue::BiasN);
    gemm(MatMut::row_major(y, rows, n), MatRef::row_major(x, rows, k), MatRef::row_major(w, n, k).t(), epi, threads)
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
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, Rng};

    /// Naive f64 `A·B` with `A[i, p] = a(i, p)`, `B[p, j] = b(p, j)`; also
    /// returns `Σ|a·b|` per element for the tolerance.
    fn naive(m: usize, n: usize, k: usize, a: impl Fn(usize, usize) -> f32, b: impl Fn(usize, usize) -> f32) -> (Vec<f64>, Vec<f64>) {
        let (mut c, mut mag) = (vec![0.0; m * n], vec![0.0; m * n]);
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let x = a(i, p) as f64 * b(p, j) as f64;
                    c[i * n + j] += x;
                    mag[i * n + j] += x.abs();
                }
            }
        }
        (c, mag)
    }

    #[test]
    fn gemm_matches_naive_on_odd_shapes_layouts_and_threads() {
        let mut rng = Rng::new(1);
        for &(m, n, k) in &[(1, 1, 1), (1, 37, 19), (23, 1, 31), (17, 29, 1), (33, 65, 47), (130, 67, 259), (3, 300, 2)] {
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect(); // [N, K]
            let (want, mag) = naive(m, n, k, |i, p| a[i * k + p], |p, j| b[p * n + j]);
            for threads in [1, 2, 3] {
                for trans in [false, true] {
                    let mut c = vec![f32::NAN; m * n];
                    let bv = if trans { MatRef::row_major(&bt, n, k).t() } else { MatRef::row_major(&b, k, n) };
                    gemm(MatMut::row_major(&mut c, m, n), MatRef::row_major(&a, m, k), bv, Epilogue::None, threads).unwrap();
                    assert_close(&c, &want, &mag, 1e-5, &format!("{m}x{n}x{k} t{threads} trans {trans}"));
                }
            }
        }
    }

    #[test]
    fn gemm_epilogues_and_strided_output() {
        let mut rng = Rng::new(2);
        let (m, n, k) = (19, 13, 21);
        let (a, b, bn, bm) = (rng.vec(m * k), rng.vec(k * n), rng.vec(n), rng.vec(m));
        let (p, mag) = naive(m, n, k, |i, q| a[i * k + q], |q, j| b[q * n + j]);
        let av = MatRef::row_major(&a, m, k);
        let bv = MatRef::row_major(&b, k, n);
        let mut c = vec![0.0; m * n];
        gemm(MatMut::row_major(&mut c, m, n), av, bv, Epilogue::BiasN(&bn), 2).unwrap();
        let want: Vec<f64> = (0..m * n).map(|x| p[x] + bn[x % n] as f64).collect();
        assert_close(&c, &want, &mag, 1e-5, "bias n");
        gemm(MatMut::row_major(&mut c, m, n), av, bv, Epilogue::Accumulate, 2).unwrap();
        let want2: Vec<f64> = (0..m * n).map(|x| want[x] + p[x]).collect();
        assert_close(&c, &want2, &mag, 2e-5, "accumulate");
        // Column-major C with a row stride gap, bias per row.
        let mut cc = vec![-7.0; (m + 3) * n];
        gemm(MatMut { data: &mut cc, rows: m, cols: n, rs: 1, cs: m + 3 }, av, bv, Epilogue::BiasM(&bm), 1).unwrap();
        let got: Vec<f32> = (0..m * n).map(|x| cc[(x % n) * (m + 3) + x / n]).collect();
        let want3: Vec<f64> = (0..m * n).map(|x| p[x] + bm[x / n] as f64).collect();
        assert_close(&got, &want3, &mag, 1e-5, "col-major bias m");
        assert!(cc[m..m + 3].iter().all(|&v| v == -7.0), "gap untouched");
        // K = 0: bias only / zeros.
        let mut z = vec![5.0; 6];
        gemm(MatMut::row_major(&mut z, 2, 3), MatRef::row_major(&[], 2, 0), MatRef::row_major(&[], 0, 3), Epilogue::None, 1).unwrap();
        assert_eq!(z, vec![0.0; 6]);
        gemm(MatMut::row_major(&mut z, 2, 3), MatRef::row_major(&[], 2, 0), MatRef::row_major(&[], 0, 3), Epilogue::BiasN(&[1.0, 2.0, 3.0]), 1).unwrap();
        assert_eq!(z, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn gemm_rejects_bad_views() {
        let a = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        let e = gemm(MatMut::row_major(&mut c, 2, 2), MatRef::row_major(&a, 2, 3), MatRef::row_major(&a, 2, 3), Epilogue::None, 1);
        assert!(e.unwrap_err().to_string().contains("shapes"));
        let e = gemm(MatMut::row_major(&mut c, 2, 2), MatRef::row_major(&a, 2, 4), MatRef::row_major(&a, 4, 2), Epilogue::None, 1);
        assert!(e.unwrap_err().to_string().contains("exceeds"));
        let e = gemm(MatMut { data: &mut c, rows: 2, cols: 2, rs: 1, cs: 1 }, MatRef::row_major(&a, 2, 3), MatRef::row_major(&a, 3, 2), Epilogue::None, 1);
        assert!(e.unwrap_err().to_string().contains("overlap"));
        let e = gemm(MatMut::row_major(&mut c, 2, 2), MatRef::row_major(&a, 2, 3), MatRef::row_major(&a, 3, 2), Epilogue::BiasN(&[1.0]), 1);
        assert!(e.unwrap_err().to_string().contains("bias"));
    }

    #[test]
    fn linear_matches_naive() {
        let mut rng = Rng::new(3);
        for &(rows, k, n) in &[(1, 64, 33), (7, 1, 5), (45, 77, 91)] {
            let (x, w, b) = (rng.vec(rows * k), rng.vec(n * k), rng.vec(n));
            let (p, mag) = naive(rows, n, k, |i, q| x[i * k + q], |q, j| w[j * k + q]);
            for bias in [false, true] {
                let mut y = vec![0.0; rows * n];
                linear(&x, rows, k, &w, n, bias.then_some(&b[..]), &mut y, 2).unwrap();
                let want: Vec<f64> = (0..rows * n).map(|i| p[i] + if bias { b[i % n] as f64 } else { 0.0 }).collect();
                assert_close(&y, &want, &mag, 1e-5, &format!("linear {rows}x{k}x{n} bias {bias}"));
            }
        }
    }

    #[test]
    fn batched_matmul_broadcasts_batch_dims() {
        let mut rng = Rng::new(4);
        // (a shape, b shape, out batch)
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[2, 3, 5, 7], &[2, 3, 7, 4], &[2, 3]),
            (&[2, 1, 5, 7], &[1, 3, 7, 4], &[2, 3]),
            (&[4, 9, 7], &[7, 11], &[4]),       // shared B: folded into one GEMM
            (&[9, 7], &[3, 2, 7, 11], &[3, 2]), // broadcast A
            (&[6, 1, 1], &[6, 1, 3], &[6]),     // M = K = 1
            (&[5, 3, 0], &[5, 0, 2], &[5]),     // K = 0
            (&[40, 3, 8], &[40, 8, 5], &[40]),  // many small: split over batch
        ];
        for &(ash, bsh, batch) in cases {
            let (ra, rb) = (ash.len(), bsh.len());
            let (m, k, n) = (ash[ra - 2], ash[ra - 1], bsh[rb - 1]);
            let a = rng.vec(ash.iter().product());
            let b = rng.vec(bsh.iter().product());
            let nb: usize = batch.iter().product();
            let (sa, sb) = (bcast_strides(&ash[..ra - 2], batch.len(), m * k), bcast_strides(&bsh[..rb - 2], batch.len(), k * n));
            let (mut want, mut mag) = (Vec::new(), Vec::new());
            for bi in 0..nb {
                let (mut rem, mut oa, mut ob) = (bi, 0, 0);
                for d in (0..batch.len()).rev() {
                    oa += (rem % batch[d]) * sa[d];
                    ob += (rem % batch[d]) * sb[d];
                    rem /= batch[d];
                }
                let (w, g) = naive(m, n, k, |i, p| a[oa + i * k + p], |p, j| b[ob + p * n + j]);
                want.extend(w);
                mag.extend(g);
            }
            for threads in [1, 2] {
                let mut c = vec![f32::NAN; nb * m * n];
                batched_matmul(&a, ash, &b, bsh, &mut c, threads).unwrap();
                assert_close(&c, &want, &mag, 1e-5, &format!("{ash:?}·{bsh:?} t{threads}"));
            }
        }
        let mut c = vec![0.0; 4];
        let e = batched_matmul(&[0.0; 12], &[3, 2, 2], &[0.0; 8], &[2, 2, 2], &mut c, 1).unwrap_err();
        assert!(e.to_string().contains("broadcast"), "{e}");
    }
}
