use super::testutil::Rng;
use super::*;

fn f32_ref<'a>(shape: &'a [usize], v: &'a [f32]) -> TensorRef<'a> {
    TensorRef::from_f32(shape, v)
}

#[test]
fn dispatch_runs_each_ukernel() {
    let mut rng = Rng::new(9);
    // Linear with bias over a [2, 3, K] input.
    let (x, w, b) = (rng.vec(2 * 3 * 4), rng.vec(5 * 4), rng.vec(5));
    let mut y = vec![0.0f32; 2 * 3 * 5];
    let args = [f32_ref(&[2, 3, 4], &x), f32_ref(&[5, 4], &w), f32_ref(&[5], &b)];
    run_ukernel(&Ukernel::Linear { bias: true }, &args, &mut [TensorMut::from_f32(&[2, 3, 5], &mut y)], 2).unwrap();
    let want: f32 = (0..4).map(|p| x[4 + p] * w[2 * 4 + p]).sum::<f32>() + b[2];
    assert!((y[5 + 2] - want).abs() < 1e-5);

    // MatMul with broadcast batch.
    let (a, bm) = (rng.vec(3 * 2 * 4), rng.vec(4 * 6));
    let mut c = vec![0.0f32; 3 * 2 * 6];
    let args = [f32_ref(&[3, 2, 4], &a), f32_ref(&[1, 4, 6], &bm)];
    run_ukernel(&Ukernel::MatMul, &args, &mut [TensorMut::from_f32(&[3, 2, 6], &mut c)], 1).unwrap();
    let want: f32 = (0..4).map(|p| a[(2 * 2 + 1) * 4 + p] * bm[p * 6 + 3]).sum();
    assert!((c[(2 * 2 + 1) * 6 + 3] - want).abs() < 1e-5);

    // Attention with a mask, GQA.
    let (q, k, v, m) = (rng.vec(4 * 3 * 8), rng.vec(2 * 5 * 8), rng.vec(2 * 5 * 8), vec![0.0f32; 5]);
    let mut o = vec![0.0f32; 4 * 3 * 8];
    let args = [f32_ref(&[1, 4, 3, 8], &q), f32_ref(&[1, 2, 5, 8], &k), f32_ref(&[1, 2, 5, 8], &v), f32_ref(&[5], &m)];
    let op = Ukernel::Attention { scale: None, causal: true, mask: true };
    run_ukernel(&op, &args, &mut [TensorMut::from_f32(&[1, 4, 3, 8], &mut o)], 2).unwrap();
    assert!(o.iter().all(|x| x.is_finite()));

    // Conv 2-D.
    let (xc, wc) = (rng.vec(2 * 4 * 6 * 6), rng.vec(6 * 2 * 3 * 3));
    let mut yc = vec![0.0f32; 2 * 6 * 3 * 3];
    let op = Ukernel::Conv { stride: vec![2, 2], padding: vec![1, 1], dilation: vec![1, 1], groups: 2, bias: false };
    let args = [f32_ref(&[2, 4, 6, 6], &xc), f32_ref(&[6, 2, 3, 3], &wc)];
    run_ukernel(&op, &args, &mut [TensorMut::from_f32(&[2, 6, 3, 3], &mut yc)], 2).unwrap();
    // y[1, 4, 1, 1]: group 1 (channels 2, 3), window rows/cols 1..4.
    let mut want = 0.0f32;
    for c in 0..2 {
        for i in 0..3 {
            for j in 0..3 {
                want += xc[((4 + 2 + c) * 6 + 1 + i) * 6 + 1 + j] * wc[((4 * 2 + c) * 3 + i) * 3 + j];
            }
        }
    }
    assert!((yc[((6 + 4) * 3 + 1) * 3 + 1] - want).abs() < 1e-5);

    // TopK.
    let xt = [0.5f32, 2.0, -1.0, 2.0, 7.0, 0.0];
    let (mut tv, mut ti) = (vec![0.0f32; 4], vec![0i64; 4]);
    let mut res = [TensorMut::from_f32(&[2, 2], &mut tv), TensorMut::from_i64(&[2, 2], &mut ti)];
    run_ukernel(&Ukernel::TopK { k: 2 }, &[f32_ref(&[2, 3], &xt)], &mut res, 0).unwrap();
    assert_eq!((tv, ti), (vec![2.0, 0.5, 7.0, 2.0], vec![1, 0, 1, 0]));
}

#[test]
fn dispatch_errors_name_the_op() {
    let x = [0u8; 8];
    let args = [TensorRef::new(ElemType::F16, &[2, 2], &x), TensorRef::new(ElemType::F16, &[2, 2], &x)];
    let mut out = [0.0f32; 4];
    let e = run_ukernel(&Ukernel::MatMul, &args, &mut [TensorMut::from_f32(&[2, 2], &mut out)], 1).unwrap_err();
    assert_eq!(e.op, "matmul");
    assert!(e.to_string().contains("f16"), "{e}");

    let a = [0.0f32; 6];
    let args = [f32_ref(&[2, 3], &a), f32_ref(&[3, 2], &a)];
    let e = run_ukernel(&Ukernel::Linear { bias: false }, &args, &mut [TensorMut::from_f32(&[2, 2], &mut out)], 1).unwrap_err();
    assert!(e.to_string().starts_with("linear:") && e.to_string().contains("K = 3"), "{e}");
    let e = run_ukernel(&Ukernel::Linear { bias: true }, &args, &mut [TensorMut::from_f32(&[2, 2], &mut out)], 1).unwrap_err();
    assert!(e.to_string().contains("operands"), "{e}");

    let args = [f32_ref(&[2, 3], &a), f32_ref(&[3, 2], &a)];
    let e = run_ukernel(&Ukernel::MatMul, &args, &mut [TensorMut::from_f32(&[4], &mut out)], 1).unwrap_err();
    assert!(e.to_string().contains("result has shape [4], expected [2, 2]"), "{e}");

    let (mut tv, xt, mut ib) = ([0.0f32; 2], [1.0f32; 4], [0u8; 8]);
    let mut res = [TensorMut::from_f32(&[2, 1], &mut tv), TensorMut::new(ElemType::I32, &[2, 1], &mut ib)];
    let e = run_ukernel(&Ukernel::TopK { k: 1 }, &[f32_ref(&[2, 2], &xt)], &mut res, 1).unwrap_err();
    assert!(e.to_string().contains("i64"), "{e}");
}
