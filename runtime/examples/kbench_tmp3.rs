use omnic_runtime::kernels::attention;
use std::time::Instant;
fn main() {
    let t: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let (h, s_, d) = (16usize, 256usize, 64usize);
    let q: Vec<f32> = (0..h * s_ * d).map(|i| ((i * 31) % 97) as f32 * 1e-2 - 0.5).collect();
    let k = q.clone(); let v = q.clone();
    let mut o = vec![0.0f32; q.len()];
    let dims = attention::AttnDims { batch: 1, heads: h, kv_heads: h, sq: s_, sk: s_, d, dv: d };
    let st = Instant::now();
    let mut n = 0;
    while st.elapsed().as_secs_f64() < 2.0 { attention::attention(dims, &q, &k, &v, None, None, false, &mut o, t).unwrap(); n += 1; }
    let s = st.elapsed().as_secs_f64() / n as f64;
    println!("t{t}: {:.3} ms {:.1} GFLOP/s", s * 1e3, 4.0 * (h * s_ * s_ * d) as f64 / s / 1e9);
}
