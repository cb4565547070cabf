use super::*;
use crate::kernels::testutil::{assert_close, Rng};

/// The IR evaluator's algorithm in f64; also `Σ p·|v|` per output for the
/// tolerance (the magnitude accumulated into each element).
fn naive(dm: AttnDims, q: &[f32], k: &[f32], v: &[f32], mask: Option<Mask>, scale: Option<f64>, causal: bool) -> (Vec<f64>, Vec<f64>) {
    let AttnDims { batch, heads: h, kv_heads: hk, sq, sk, d, dv } = dm;
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let ms = mask.map(|m| (m.data, bcast_strides(m.shape, 4, 1)));
    let (mut out, mut mag) = (vec![0.0; batch * h * sq * dv], vec![0.0; batch * h * sq * dv]);
    let mut s = vec![0.0f64; sk];
    for b in 0..batch {
        for hh in 0..h {
            let kh = hh / (h / hk);
            for i in 0..sq {
                for j in 0..sk {
                    let mut dot = 0.0;
                    for c in 0..d {
                        dot += q[((b * h + hh) * sq + i) * d + c] as f64 * k[((b * hk + kh) * sk + j) * d + c] as f64;
                    }
                    dot *= scale;
                    if let Some((m, st)) = &ms {
                        dot += m[b * st[0] + hh * st[1] + i * st[2] + j * st[3]] as f64;
                    }
                    if causal && j + sq > i + sk {
                        dot = f64::NEG_INFINITY;
                    }
                    s[j] = dot;
                }
                let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut z = 0.0;
                for x in s.iter_mut() {
                    *x = if mx == f64::NEG_INFINITY { 0.0 } else { (*x - mx).exp() };
                    z += *x;
                }
                let o = ((b * h + hh) * sq + i) * dv;
                for j in 0..sk {
                    let p = if z > 0.0 { s[j] / z } else { 0.0 };
                    for c in 0..dv {
                        let x = p * v[((b * hk + kh) * sk + j) * dv + c] as f64;
                        out[o + c] += x;
                        mag[o + c] += x.abs();
                    }
                }
            }
        }
    }
    (out, mag)
}

fn check(dm: AttnDims, mask_shape: Option<&[usize]>, neg_inf_every: usize, scale: Option<f64>, causal: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let AttnDims { batch, heads, kv_heads, sq, sk, d, dv } = dm;
    let q = rng.vec(batch * heads * sq * d).iter().map(|x| 3.0 * x).collect::<Vec<_>>();
    let k = rng.vec(batch * kv_heads * sk * d);
    let v = rng.vec(batch * kv_heads * sk * dv);
    let mut md = mask_shape.map(|s| rng.vec(s.iter().product()));
    if let Some(md) = md.as_mut() {
        for (i, x) in md.iter_mut().enumerate() {
            if neg_inf_every > 0 && i % neg_inf_every == 0 {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    let mask = mask_shape.zip(md.as_deref()).map(|(shape, data)| Mask { data, shape });
    let (want, mag) = naive(dm, &q, &k, &v, mask, scale, causal);
    for threads in [1, 2, 3] {
        let mut out = vec![f32::NAN; want.len()];
        attention(dm, &q, &k, &v, mask, scale, causal, &mut out, threads).unwrap();
        // Scores are f32 (|q·k| ≲ 3·√D·scale); each output is a convex
        // combination of v rows: error ≲ 1e-5 of Σ p·|v| plus exp's error.
        assert_close(&out, &want, &mag, 2e-5, &format!("{dm:?} mask {mask_shape:?} causal {causal} t{threads}"));
    }
}

fn dims(batch: usize, heads: usize, kv_heads: usize, sq: usize, sk: usize, d: usize, dv: usize) -> AttnDims {
    AttnDims { batch, heads, kv_heads, sq, sk, d, dv }
}

#[test]
fn exp_f32_is_accurate() {
    for i in -1830..=2000 {
        let x = i as f32 * 0.0437; // down to −80: below, results go subnormal
        let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
        assert!(((got - want) / want).abs() < 3e-7, "exp({x}) = {got} vs {want}");
    }
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_f32(-100.0), 0.0);
    assert_eq!(exp_f32(0.0), 1.0);
    assert!(exp_f32(f32::NAN).is_nan());
}

#[test]
fn plain_and_multi_block() {
    check(dims(1, 1, 1, 1, 1, 1, 1), None, 0, None, false, 1);
    check(dims(2, 3, 3, 5, 7, 8, 8), None, 0, None, false, 2);
    // Several query and key blocks, odd sizes, Dv ≠ D, explicit scale.
    check(dims(1, 2, 2, BQ + 13, 2 * BK + 37, 24, 40), None, 0, Some(0.3), false, 3);
}

#[test]
fn gqa_8_query_heads_2_kv_heads() {
    check(dims(2, 8, 2, 19, 33, 16, 16), None, 0, None, false, 4);
    check(dims(1, 8, 2, 70, 150, 32, 32), None, 0, None, true, 5);
    check(dims(1, 6, 1, 1, 200, 64, 64), None, 0, None, false, 6); // decode, MQA
}

#[test]
fn causal_bottom_right() {
    check(dims(1, 2, 1, 9, 9, 8, 8), None, 0, None, true, 7); // square
    check(dims(2, 2, 2, 5, 150, 16, 12), None, 0, None, true, 8); // Sq < Sk (KV cache)
    check(dims(1, 1, 1, 1, 300, 16, 16), None, 0, None, true, 9); // decode step
                                                                  // Several query and key blocks: rows skipping whole key blocks.
    check(dims(1, 2, 1, BQ + 40, 2 * BK + 50, 16, 16), None, 0, None, true, 20);
    check(dims(1, 1, 1, 2 * BQ + 5, 2 * BQ + 5, 8, 8), Some(&[2 * BQ + 5, 2 * BQ + 5]), 7, None, true, 21);
    // Sq > Sk: the first Sq − Sk rows see nothing and must be zero.
    let dm = dims(1, 1, 1, 12, 5, 8, 8);
    check(dm, None, 0, None, true, 10);
    let mut rng = Rng::new(11);
    let (q, k, v) = (rng.vec(12 * 8), rng.vec(5 * 8), rng.vec(5 * 8));
    let mut out = vec![f32::NAN; 12 * 8];
    attention(dm, &q, &k, &v, None, None, true, &mut out, 2).unwrap();
    assert!(out[..7 * 8].iter().all(|&x| x == 0.0));
    assert!(out[7 * 8..].iter().all(|&x| x != 0.0 && x.is_finite()));
}

#[test]
fn masks_broadcast_with_neg_inf() {
    let dm = dims(2, 4, 2, 37, 140, 16, 16);
    check(dm, Some(&[2, 4, 37, 140]), 3, None, false, 12); // full
    check(dm, Some(&[2, 1, 1, 140]), 4, None, false, 13); // padding mask
    check(dm, Some(&[37, 140]), 5, None, true, 14); // rank 2, with causal
    check(dm, Some(&[1, 4, 37, 1]), 0, None, false, 15); // per-row bias
    check(dims(1, 2, 2, 3, 4, 8, 8), Some(&[1]), 0, None, false, 16); // scalar-like
}

#[test]
fn fully_masked_rows_are_zero() {
    let dm = dims(1, 2, 1, 4, 6, 8, 8);
    let mut rng = Rng::new(17);
    let (q, k, v) = (rng.vec(2 * 4 * 8), rng.vec(6 * 8), rng.vec(6 * 8));
    // Row 1 of every head fully masked, others partly.
    let mut m = vec![0.0f32; 4 * 6];
    m[6..12].fill(f32::NEG_INFINITY);
    m[0] = f32::NEG_INFINITY;
    let mask = Mask { data: &m, shape: &[4, 6] };
    let (want, mag) = naive(dm, &q, &k, &v, Some(mask), None, false);
    let mut out = vec![f32::NAN; 2 * 4 * 8];
    attention(dm, &q, &k, &v, Some(mask), None, false, &mut out, 1).unwrap();
    assert_close(&out, &want, &mag, 2e-5, "fully masked");
    for h in 0..2 {
        assert!(out[(h * 4 + 1) * 8..(h * 4 + 2) * 8].iter().all(|&x| x == 0.0));
    }
}

#[test]
fn rejects_bad_inputs() {
    let dm = dims(1, 3, 2, 1, 1, 1, 1);
    let e = attention(dm, &[0.0; 3], &[0.0; 2], &[0.0; 2], None, None, false, &mut [0.0; 3], 1).unwrap_err();
    assert!(e.to_string().contains("multiple"), "{e}");
    let dm = dims(1, 2, 2, 2, 3, 1, 1);
    let mask = Mask { data: &[0.0; 4], shape: &[2, 2] };
    let e = attention(dm, &[0.0; 4], &[0.0; 6], &[0.0; 6], Some(mask), None, false, &mut [0.0; 4], 1).unwrap_err();
    assert!(e.to_string().contains("broadcast"), "{e}");
}
