use super::*;
use crate::kernels::testutil::{assert_close, Rng};

/// Naive f64 `x·wᵀ + b` and `Σ|terms|` for the tolerance.
fn naive(rows: usize, k: usize, n: usize, x: &[f32], w: &[f32], b: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut mag) = (vec![0.0; rows * n], vec![0.0; rows * n]);
    for i in 0..rows {
        for j in 0..n {
            let mut s = b.map_or(0.0, |b| b[j] as f64);
            let mut m = s.abs();
            for p in 0..k {
                let t = x[i * k + p] as f64 * w[j * k + p] as f64;
                s += t;
                m += t.abs();
            }
            y[i * n + j] = s;
            mag[i * n + j] = m;
        }
    }
    (y, mag)
}

#[test]
fn packed_linear_matches_naive_on_odd_shapes_and_threads() {
    let mut rng = Rng::new(11);
    // Rows, K, N around the tile sizes (MR 14, NR 32, 16-lane halves, KC 256).
    let shapes = [(1, 1, 1), (1, 7, 3), (2, 300, 17), (13, 5, 31), (14, 33, 32), (15, 257, 33), (29, 513, 48), (64, 64, 130), (3, 1, 64), (40, 19, 16)];
    for &(rows, k, n) in &shapes {
        let x = rng.vec(rows * k);
        let w = rng.vec(n * k);
        let b = rng.vec(n);
        let mut wp = vec![f32::NAN; n * k];
        pack_panels(&w, n, k, &mut wp);
        for bias in [false, true] {
            let (want, mag) = naive(rows, k, n, &x, &w, bias.then_some(&b[..]));
            for threads in [1, 2, 3] {
                let mut y = vec![f32::NAN; rows * n];
                linear_packed(&x, rows, k, &wp, n, bias.then_some(&b[..]), &mut y, threads).unwrap();
                assert_close(&y, &want, &mag, 1e-5, &format!("{rows}x{k}x{n} bias {bias} t{threads}"));
                if threads == 1 {
                    let mut y2 = vec![f32::NAN; rows * n];
                    fallback(&[&x], &[k], rows, &wp, n, bias.then_some(&b[..]), &mut [&mut y2], &[n], 1).unwrap();
                    assert_close(&y2, &want, &mag, 1e-5, &format!("fallback {rows}x{k}x{n} bias {bias}"));
                }
            }
        }
    }
}

#[test]
fn byte_packing_equals_f32_packing() {
    let mut rng = Rng::new(3);
    for (n, k) in [(1, 1), (33, 7), (70, 40), (64, 3)] {
        let w = rng.vec(n * k);
        let mut wp = vec![0f32; n * k];
        pack_panels(&w, n, k, &mut wp);
        let src: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut dst = vec![0u8; src.len()];
        pack_panels_bytes(&src, n, k, &mut dst);
        let got: Vec<f32> = dst.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(got, wp, "{n}x{k}");
    }
}

#[test]
fn packed_linear_rejects_bad_sizes() {
    let (x, w, mut y) = (vec![0f32; 6], vec![0f32; 8], vec![0f32; 8]);
    let e = linear_packed(&x, 2, 3, &w, 4, None, &mut y, 1).unwrap_err();
    assert!(e.to_string().contains("packed weight: 8 elements for [3, 4]"), "{e}");
    let e = linear_packed(&x, 2, 3, &[0f32; 12], 4, Some(&[0.0; 3]), &mut y, 1).unwrap_err();
    assert!(e.to_string().contains("bias has 3 elements"), "{e}");
}

/// The sectioned GEMM (input as column blocks, output as column blocks)
/// on both paths (the AVX-512 one where the CPU has it, and the `gemm`-crate
/// fallback) equals the unfused packed linear on the concatenated input,
/// split afterwards; ragged last panel, k-blocks cut at section boundaries.
#[test]
fn sections_equal_the_unfused_packed_linear() {
    let mut rng = Rng::new(17);
    let cases: [(usize, &[usize], &[usize]); 4] =
        [(15, &[300, 260], &[64, 32, 17]), (3, &[1, 255, 2], &[96]), (14, &[512], &[32, 32]), (29, &[7, 0, 9], &[33])];
    for (rows, ks, ns) in cases {
        let (k, n): (usize, usize) = (ks.iter().sum(), ns.iter().sum());
        let xs: Vec<Vec<f32>> = ks.iter().map(|&kk| rng.vec(rows * kk)).collect();
        let mut xcat = vec![0f32; rows * k];
        let mut koff = 0;
        for (x, &kk) in xs.iter().zip(ks) {
            for r in 0..rows {
                xcat[r * k + koff..r * k + koff + kk].copy_from_slice(&x[r * kk..(r + 1) * kk]);
            }
            koff += kk;
        }
        let w = rng.vec(n * k);
        let b = rng.vec(n);
        let mut wp = vec![f32::NAN; n * k];
        pack_panels(&w, n, k, &mut wp);
        let (want, mag) = naive(rows, k, n, &xcat, &w, Some(&b));
        let xr: Vec<&[f32]> = xs.iter().map(|x| &x[..]).collect();
        for (path, threads) in [("avx512-or-fallback", 1), ("avx512-or-fallback", 3), ("fallback", 1)] {
            let mut ys: Vec<Vec<f32>> = ns.iter().map(|&nn| vec![f32::NAN; rows * nn]).collect();
            let mut yr: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
            if path == "fallback" {
                fallback(&xr, ks, rows, &wp, n, Some(&b), &mut yr, ns, threads).unwrap();
            } else {
                linear_packed_sections(&xr, ks, rows, &wp, n, Some(&b), &mut yr, ns, threads).unwrap();
            }
            let mut noff = 0;
            for (o, (y, &nn)) in ys.iter().zip(ns).enumerate() {
                let pick = |v: &[f64]| (0..rows).flat_map(|r| v[r * n + noff..r * n + noff + nn].to_vec()).collect::<Vec<f64>>();
                assert_close(y, &pick(&want), &pick(&mag), 1e-5, &format!("{path} t{threads} rows {rows} ks {ks:?} ns {ns:?} section {o}"));
                noff += nn;
            }
        }
    }
    assert!(linear_packed_sections(&[&[0.0; 4]], &[2], 2, &[0.0; 2 * 40], 40, None, &mut [&mut [0.0; 16], &mut [0.0; 64]], &[8, 32], 1).is_err());
}
