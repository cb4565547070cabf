use super::*;
use crate::kernels::testutil::{assert_close, Rng};

/// The unfused form in f64: dense routing weights (zero for experts a token
/// did not select), every expert on every token, summed in expert order.
#[allow(clippy::too_many_arguments)]
fn dense(d: MoeDims, x: &[f32], l: &[f32], wg: &[f32], wu: &[f32], wd: &[f32], norm: bool, act: fn(f64) -> f64) -> (Vec<f64>, Vec<f64>) {
    let MoeDims { tokens: t, hidden: h, experts: e, inner: i, top_k: k } = d;
    let (mut y, mut mag) = (vec![0.0; t * h], vec![0.0; t * h]);
    for tok in 0..t {
        let row: Vec<f64> = l[tok * e..(tok + 1) * e].iter().map(|&v| v as f64).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let p: Vec<f64> = row.iter().map(|v| (v - m).exp() / s).collect();
        let mut ord: Vec<usize> = (0..e).collect();
        ord.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let z: f64 = if norm { ord[..k].iter().map(|&j| p[j]).sum() } else { 1.0 };
        let mut r = vec![0.0; e];
        for &j in &ord[..k] {
            r[j] = p[j] / z;
        }
        let xr = &x[tok * h..(tok + 1) * h];
        for (ex, &rw) in r.iter().enumerate() {
            let hid: Vec<f64> = (0..i)
                .map(|j| {
                    let dot = |w: &[f32]| (0..h).map(|c| xr[c] as f64 * w[(ex * i + j) * h + c] as f64).sum::<f64>();
                    act(dot(wg)) * dot(wu)
                })
                .collect();
            for c in 0..h {
                let terms: Vec<f64> = (0..i).map(|j| hid[j] * wd[(ex * h + c) * i + j] as f64).collect();
                y[tok * h + c] += rw * terms.iter().sum::<f64>();
                mag[tok * h + c] += rw * terms.iter().map(|v| v.abs()).sum::<f64>() * 4.0;
            }
        }
    }
    (y, mag)
}

#[test]
fn matches_the_dense_unfused_sum() {
    let mut rng = Rng::new(5);
    let silu = |v: f64| v / (1.0 + (-v).exp());
    let relu = |v: f64| v.max(0.0);
    for (t, e, k, norm, act, f) in [
        (0, 4, 2, true, MoeAct::Silu, silu as fn(f64) -> f64),
        (1, 4, 2, true, MoeAct::Silu, silu),
        (7, 8, 2, true, MoeAct::Silu, silu),
        (33, 5, 3, false, MoeAct::Relu, relu),
        (16, 3, 3, true, MoeAct::Silu, silu),
        (9, 6, 1, false, MoeAct::Silu, silu),
    ] {
        let (h, i) = (12, 10);
        let d = MoeDims { tokens: t, hidden: h, experts: e, inner: i, top_k: k };
        let (x, l) = (rng.vec(t * h), rng.vec(t * e).iter().map(|v| v * 3.0).collect::<Vec<f32>>());
        let (wg, wu, wd) = (rng.vec(e * i * h), rng.vec(e * i * h), rng.vec(e * h * i));
        let (want, mag) = dense(d, &x, &l, &wg, &wu, &wd, norm, f);
        for threads in [1, 2] {
            let mut y = vec![f32::NAN; t * h];
            moe(d, &x, &l, &wg, &wu, &wd, norm, act, &mut y, threads).unwrap();
            assert_close(&y, &want, &mag, 1e-5, &format!("t {t} e {e} k {k} threads {threads}"));
        }
    }
}

#[test]
fn bad_sizes_and_k_are_errors() {
    let d = MoeDims { tokens: 2, hidden: 3, experts: 2, inner: 4, top_k: 1 };
    let (x, l, w) = (vec![0.0; 6], vec![0.0; 4], vec![0.0; 24]);
    let mut y = vec![0.0; 6];
    let e = moe(d, &x, &l[..3], &w, &w, &w, true, MoeAct::Silu, &mut y, 1).unwrap_err();
    assert!(e.to_string().contains("logits has 3 elements"), "{e}");
    let e = moe(MoeDims { top_k: 3, ..d }, &x, &l, &w, &w, &w, true, MoeAct::Silu, &mut y, 1).unwrap_err();
    assert!(e.to_string().contains("top_k = 3"), "{e}");
    // Equal logits: ties go to the lower expert, so expert 0 alone computes.
    let x = vec![1.0; 6];
    let (mut wg, wu, mut wd) = (vec![1.0; 24], vec![1.0; 24], vec![1.0; 24]);
    wg[12..].iter_mut().for_each(|v| *v = f32::NAN);
    wd[12..].iter_mut().for_each(|v| *v = f32::NAN);
    moe(d, &x, &l, &wg, &wu, &wd, true, MoeAct::Relu, &mut y, 1).unwrap();
    assert_eq!(y, vec![36.0; 6]);
}

#[test]
fn dispatch_checks_shapes_and_runs() {
    use crate::artifact::manifest::Ukernel;
    use crate::kernels::{run_ukernel, TensorMut, TensorRef};
    let mut rng = Rng::new(3);
    let (t, h, e, i) = (5, 6, 4, 3);
    let (x, l) = (rng.vec(t * h), rng.vec(t * e));
    let (wg, wu, wd) = (rng.vec(e * i * h), rng.vec(e * i * h), rng.vec(e * h * i));
    let op = Ukernel::Moe { top_k: 2, norm_topk: true, act: MoeAct::Silu };
    let (sx, sl, sw, sd) = ([t, h], [t, e], [e, i, h], [e, h, i]);
    let args = [
        TensorRef::from_f32(&sx, &x),
        TensorRef::from_f32(&sl, &l),
        TensorRef::from_f32(&sw, &wg),
        TensorRef::from_f32(&sw, &wu),
        TensorRef::from_f32(&sd, &wd),
    ];
    let mut y = vec![0.0f32; t * h];
    run_ukernel(&op, &args, &mut [TensorMut::from_f32(&sx, &mut y)], 2).unwrap();
    let d = MoeDims { tokens: t, hidden: h, experts: e, inner: i, top_k: 2 };
    let silu = |v: f64| v / (1.0 + (-v).exp());
    let (want, mag) = dense(d, &x, &l, &wg, &wu, &wd, true, silu);
    assert_close(&y, &want, &mag, 1e-5, "run_ukernel moe");
    // w_down given as [E, I, H]: named in the error.
    let bad = [
        TensorRef::from_f32(&sx, &x),
        TensorRef::from_f32(&sl, &l),
        TensorRef::from_f32(&sw, &wg),
        TensorRef::from_f32(&sw, &wu),
        TensorRef::from_f32(&sw, &wd),
    ];
    let err = run_ukernel(&op, &bad, &mut [TensorMut::from_f32(&sx, &mut y)], 1).unwrap_err().to_string();
    assert!(err.contains("moe: w_down has shape [4, 3, 6], expected [4, 6, 3]"), "{err}");
    let err = run_ukernel(&op, &args[..4], &mut [TensorMut::from_f32(&sx, &mut y)], 1).unwrap_err().to_string();
    assert!(err.contains("4 operands and 1 results, expected 5 and 1"), "{err}");
}
