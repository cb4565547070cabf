use omnic_runtime::kernels::gemm::*;
use std::time::Instant;
fn per<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let mut b = f64::MAX;
    for _ in 0..5 { let t = Instant::now(); for _ in 0..reps { f(); } b = b.min(t.elapsed().as_secs_f64() / reps as f64); }
    b
}
fn main() {
    let (bq, bk, d) = (64usize, 128usize, 64usize);
    let q: Vec<f32> = (0..bq * d).map(|i| (i % 13) as f32 * 0.1).collect();
    let k: Vec<f32> = (0..bk * d).map(|i| (i % 11) as f32 * 0.1).collect();
    let mut s = vec![0.0f32; bq * bk];
    let mut o = vec![0.0f32; bq * d];
    let t1 = per(2000, || gemm(MatMut::row_major(&mut s, bq, bk), MatRef::row_major(&q, bq, d), MatRef::row_major(&k, bk, d).t(), Epilogue::None, 1).unwrap());
    let t2 = per(2000, || gemm(MatMut::row_major(&mut o, bq, d), MatRef::row_major(&s, bq, bk), MatRef::row_major(&k, bk, d), Epilogue::Accumulate, 1).unwrap());
    let fl = 2.0 * (bq * bk * d) as f64;
    println!("QK^T {:.2} us {:.1} GF/s; PV {:.2} us {:.1} GF/s", t1 * 1e6, fl / t1 / 1e9, t2 * 1e6, fl / t2 / 1e9);
    let t3 = per(2000, || { for x in s.iter_mut() { *x = (*x - 3.0).exp(); } std::hint::black_box(&s); });
    println!("std exp over {} elts: {:.2} us ({:.2} ns/elt)", bq * bk, t3 * 1e6, t3 * 1e9 / (bq * bk) as f64);
}
