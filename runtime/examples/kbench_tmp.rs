use omnic_runtime::kernels::{attention, gemm};
use std::time::Instant;
fn best<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let mut b = f64::MAX;
    for _ in 0..reps { let t = Instant::now(); f(); b = b.min(t.elapsed().as_secs_f64()); }
    b
}
fn main() {
    let n = 1024;
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
    let b = a.clone();
    let mut c = vec![0.0f32; n * n];
    for t in [1, 2] {
        let s = best(10, || gemm::gemm(gemm::MatMut::row_major(&mut c, n, n), gemm::MatRef::row_major(&a, n, n), gemm::MatRef::row_major(&b, n, n), gemm::Epilogue::None, t).unwrap());
        println!("gemm 1024^3 t{t}: {:.1} GFLOP/s", 2.0 * (n * n * n) as f64 / s / 1e9);
        let s = best(10, || gemm::gemm(gemm::MatMut::row_major(&mut c, n, n), gemm::MatRef::row_major(&a, n, n), gemm::MatRef::row_major(&b, n, n).t(), gemm::Epilogue::None, t).unwrap());
        println!("gemm 1024^3 B^T t{t}: {:.1} GFLOP/s", 2.0 * (n * n * n) as f64 / s / 1e9);
    }
    for &(bsz, h, hk, s_, d, causal) in &[(1usize, 16usize, 16usize, 256usize, 64usize, false), (1, 16, 16, 256, 64, true), (1, 8, 8, 256, 128, false), (1, 8, 8, 1024, 64, false)] {
        let q: Vec<f32> = (0..bsz * h * s_ * d).map(|i| ((i * 31) % 97) as f32 * 1e-2 - 0.5).collect();
        let k: Vec<f32> = (0..bsz * hk * s_ * d).map(|i| ((i * 17) % 89) as f32 * 1e-2 - 0.4).collect();
        let v = k.clone();
        let mut o = vec![0.0f32; q.len()];
        let dims = attention::AttnDims { batch: bsz, heads: h, kv_heads: hk, sq: s_, sk: s_, d, dv: d };
        for t in [1, 2] {
            let s = best(10, || attention::attention(dims, &q, &k, &v, None, None, causal, &mut o, t).unwrap());
            let fl = 4.0 * (bsz * h * s_ * s_ * d) as f64 * if causal { 0.5 } else { 1.0 };
            println!("attn B{bsz} H{h} S{s_} D{d} causal {causal} t{t}: {:.3} ms, {:.1} GFLOP/s", s * 1e3, fl / s / 1e9);
        }
    }
}
