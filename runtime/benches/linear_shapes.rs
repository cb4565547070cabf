//! `Linear` GEMM on the FLUX benchmark's shapes, side by side: the `gemm`
//! crate on a `[K, N]` row-major weight (`gemm::linear_t`, the previous
//! path) against the panel-packed AVX-512 kernel (`gemm_packed`), as
//! GFLOP/s and the ratio packed / crate (> 1 = packed faster).
//!
//! `cargo bench -p omnic-runtime --bench linear_shapes [-- THREADS]`
//! (default 1 thread). Median of 15 timed runs after 3 warm-ups, each run
//! repeated to take ≥ 20 ms. Note the machine load (`uptime`) with results.

use omnic_runtime::kernels::{gemm, gemm_packed, KernelError};
use std::time::Instant;

/// (tokens, K, N) of the benchmark model's Linear steps (hidden 512,
/// 256 image + 64 text tokens, MLP ×4, single blocks' fused qkv+MLP
/// 512 → 3584 and proj_out 2560 → 512, modulation GEMVs on one row).
const SHAPES: &[(usize, usize, usize)] = &[
    (256, 512, 1536),
    (64, 512, 1536),
    (256, 512, 512),
    (64, 512, 512),
    (256, 512, 2048),
    (256, 2048, 512),
    (64, 512, 2048),
    (64, 2048, 512),
    (320, 512, 3584),
    (320, 512, 1536),
    (320, 512, 2048),
    (320, 2560, 512),
    (256, 64, 512),
    (1, 512, 3072),
    (1, 512, 1536),
];

fn median_secs(mut f: impl FnMut() -> Result<(), KernelError>) -> Result<f64, KernelError> {
    for _ in 0..3 {
        f()?;
    }
    let t = Instant::now();
    f()?;
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let reps = ((0.02 / once).ceil() as usize).max(1);
    let mut v = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        v.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

fn main() -> Result<(), KernelError> {
    let threads: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1);
    println!("threads {threads}, avx512 kernel: {}", gemm_packed::avx512_available());
    println!("{:>5} {:>5} {:>5} | {:>9} {:>9} | {:>6}", "M", "K", "N", "crate GF", "packed GF", "ratio");
    let (mut tc, mut tp) = (0.0, 0.0);
    for &(m, k, n) in SHAPES {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
        let mut wt = vec![0f32; n * k];
        for j in 0..n {
            for p in 0..k {
                wt[p * n + j] = w[j * k + p];
            }
        }
        let mut wp = vec![0f32; n * k];
        gemm_packed::pack_panels(&w, n, k, &mut wp);
        let mut y = vec![0f32; m * n];
        let mut y2 = vec![0f32; m * n];
        let sc = median_secs(|| gemm::linear_t(&x, m, k, &wt, n, Some(&b), &mut y, threads))?;
        let sp = median_secs(|| gemm_packed::linear_packed(&x, m, k, &wp, n, Some(&b), &mut y2, threads))?;
        let diff = y.iter().zip(&y2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-3, "results differ by {diff}");
        let fl = 2.0 * (m * k * n) as f64 * 1e-9;
        tc += sc;
        tp += sp;
        println!("{m:>5} {k:>5} {n:>5} | {:>9.1} {:>9.1} | {:>6.3}", fl / sc, fl / sp, sc / sp);
    }
    println!("sum of medians: crate {:.3} ms, packed {:.3} ms, ratio {:.3}", tc * 1e3, tp * 1e3, tc / tp);
    Ok(())
}
