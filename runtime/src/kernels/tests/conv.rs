use super::*;
use crate::kernels::testutil::{assert_close, Rng};

/// The IR evaluator's loops in f64, plus `Σ|x·w|` per output.
fn naive(x: &[f32], xs: &[usize], w: &[f32], ws: &[usize], b: Option<&[f32]>, prm: &ConvParams) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let sp = ws.len() - 2;
    let (n, cin, cout, cin_g) = (xs[0], xs[1], ws[0], ws[1]);
    let (ins, ks) = (&xs[2..], &ws[2..]);
    let outs: Vec<usize> = (0..sp).map(|i| (ins[i] + 2 * prm.padding[i] - prm.dilation[i] * (ks[i] - 1) - 1) / prm.stride[i] + 1).collect();
    let st = |s: &[usize]| {
        let mut r = vec![1; s.len()];
        for i in (0..s.len().saturating_sub(1)).rev() {
            r[i] = r[i + 1] * s[i + 1];
        }
        r
    };
    let (os, kst, is) = (st(&outs), st(ks), st(ins));
    let (on, kn, inn): (usize, usize, usize) = (outs.iter().product(), ks.iter().product(), ins.iter().product());
    let cout_g = cout / prm.groups;
    let (mut out, mut mag) = (vec![0.0; n * cout * on], vec![0.0; n * cout * on]);
    for s in 0..n {
        for o in 0..cout {
            let g = o / cout_g;
            for p in 0..on {
                let pos: Vec<usize> = (0..sp).map(|i| (p / os[i]) % outs[i]).collect();
                let mut acc = b.map_or(0.0, |b| b[o] as f64);
                let mut m = acc.abs();
                for c in 0..cin_g {
                    let ci = g * cin_g + c;
                    'k: for kk in 0..kn {
                        let mut xi = 0;
                        for i in 0..sp {
                            let kp = (kk / kst[i]) % ks[i];
                            let coord = (pos[i] * prm.stride[i] + kp * prm.dilation[i]) as isize - prm.padding[i] as isize;
                            if coord < 0 || coord as usize >= ins[i] {
                                continue 'k;
                            }
                            xi += coord as usize * is[i];
                        }
                        let v = x[(s * cin + ci) * inn + xi] as f64 * w[(o * cin_g + c) * kn + kk] as f64;
                        acc += v;
                        m += v.abs();
                    }
                }
                out[(s * cout + o) * on + p] = acc;
                mag[(s * cout + o) * on + p] = m;
            }
        }
    }
    let mut shape = vec![n, cout];
    shape.extend(outs);
    (out, mag, shape)
}

#[allow(clippy::too_many_arguments)]
fn check(xs: &[usize], ws: &[usize], stride: &[usize], padding: &[usize], dilation: &[usize], groups: usize, bias: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let b = rng.vec(ws[0]);
    let prm = ConvParams { stride, padding, dilation, groups };
    let bo = bias.then_some(&b[..]);
    let (want, mag, shape) = naive(&x, xs, &w, ws, bo, &prm);
    assert_eq!(output_shape(xs, ws, &prm).unwrap(), shape);
    for threads in [1, 2] {
        let mut y = vec![f32::NAN; want.len()];
        let mut scratch = Vec::new();
        conv(&x, xs, &w, ws, bo, &prm, &mut y, &mut scratch, threads).unwrap();
        assert!(scratch.len() <= scratch_len(xs, ws, &prm).unwrap().max(1));
        assert_close(&y, &want, &mag, 1e-5, &format!("x {xs:?} w {ws:?} s {stride:?} p {padding:?} d {dilation:?} g {groups} t{threads}"));
    }
}

#[test]
fn conv2d_basic_and_pointwise() {
    check(&[1, 3, 8, 8], &[4, 3, 3, 3], &[1, 1], &[1, 1], &[1, 1], 1, true, 1);
    check(&[2, 5, 7, 9], &[6, 5, 3, 2], &[1, 1], &[0, 0], &[1, 1], 1, false, 2);
    check(&[2, 16, 6, 5], &[7, 16, 1, 1], &[1, 1], &[0, 0], &[1, 1], 1, true, 3); // 1×1, no gather
    check(&[1, 1, 1, 1], &[1, 1, 1, 1], &[1, 1], &[0, 0], &[1, 1], 1, true, 4);
}

#[test]
fn conv2d_stride_padding_dilation() {
    check(&[2, 4, 11, 13], &[5, 4, 3, 3], &[2, 2], &[1, 1], &[1, 1], 1, true, 5);
    check(&[1, 3, 15, 12], &[4, 3, 3, 5], &[3, 2], &[2, 3], &[2, 1], 1, true, 6);
    check(&[1, 2, 9, 9], &[3, 2, 3, 3], &[1, 1], &[4, 4], &[3, 3], 1, false, 7); // padding ≥ kernel span
    check(&[1, 4, 10, 10], &[8, 4, 1, 1], &[2, 2], &[0, 0], &[1, 1], 1, true, 8); // strided 1×1
    check(&[1, 2, 5, 5], &[3, 2, 2, 2], &[1, 1], &[1, 1], &[1, 1], 1, true, 9);
    // even kernel, padded
}

#[test]
fn conv2d_groups_and_depthwise() {
    check(&[2, 6, 9, 8], &[4, 3, 3, 3], &[1, 2], &[1, 0], &[1, 1], 2, true, 10);
    check(&[1, 8, 7, 7], &[8, 2, 3, 3], &[1, 1], &[1, 1], &[2, 2], 4, true, 11);
    check(&[2, 5, 9, 11], &[5, 1, 3, 3], &[1, 1], &[1, 1], &[1, 1], 5, true, 12); // depthwise
    check(&[1, 3, 10, 9], &[6, 1, 5, 3], &[2, 3], &[2, 1], &[1, 2], 3, false, 13); // depthwise ×2, strided
    check(&[1, 4, 6, 6], &[4, 1, 1, 1], &[1, 1], &[0, 0], &[1, 1], 4, true, 14);
    // depthwise 1×1 (pointwise path)
}

#[test]
fn conv3d() {
    check(&[1, 3, 5, 6, 7], &[4, 3, 3, 3, 3], &[1, 1, 1], &[1, 1, 1], &[1, 1, 1], 1, true, 15);
    check(&[2, 4, 6, 7, 5], &[6, 2, 2, 3, 3], &[2, 1, 2], &[0, 1, 1], &[1, 2, 1], 2, true, 16);
    check(&[1, 3, 4, 9, 9], &[3, 1, 3, 3, 3], &[1, 2, 2], &[1, 1, 1], &[1, 1, 1], 3, false, 17); // depthwise 3-D
    check(&[1, 8, 3, 4, 5], &[5, 8, 1, 1, 1], &[1, 1, 1], &[0, 0, 0], &[1, 1, 1], 1, true, 18);
}

#[test]
fn conv_chunks_output_positions() {
    // rows = 64·9 = 576 → chunks of COL_BUDGET/576 = 7281 positions < 100·100.
    check(&[1, 64, 100, 100], &[3, 64, 3, 3], &[1, 1], &[1, 1], &[1, 1], 1, true, 19);
}

#[test]
fn conv_rejects_bad_shapes() {
    let prm = ConvParams { stride: &[1, 1], padding: &[0, 0], dilation: &[1, 1], groups: 2 };
    let e = output_shape(&[1, 3, 4, 4], &[2, 1, 3, 3], &prm).unwrap_err();
    assert!(e.to_string().contains("channels"), "{e}");
    let prm = ConvParams { stride: &[1], padding: &[0, 0], dilation: &[1, 1], groups: 1 };
    assert!(output_shape(&[1, 3, 4, 4], &[2, 3, 3, 3], &prm).is_err());
    let prm = ConvParams { stride: &[1, 1], padding: &[0, 0], dilation: &[1, 1], groups: 1 };
    let e = output_shape(&[1, 3, 2, 4], &[2, 3, 3, 3], &prm).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert!(output_shape(&[1, 3, 4], &[2, 3, 3], &prm).is_err());
}
