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
