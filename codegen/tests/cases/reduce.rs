//! Reductions (every op, any axes, keep_dims, ints, symbolic sizes) and
//! softmax along every axis, against the reference evaluator.

use super::elementwise::{f32t, shape};
use super::support::{check, stage, TOL};
use omnic_ir::eval::Tensor;
use omnic_ir::{Builder, DType, Dim, ReduceOp, UnaryOp};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

#[test]
fn every_reduction_over_axis_sets() {
    let mut rng = StdRng::seed_from_u64(11);
    let dims = [3usize, 4, 5];
    let axis_sets: [&[isize]; 6] = [&[0], &[1], &[2], &[0, 2], &[1, 2], &[0, 1, 2]];
    for op in ReduceOp::ALL {
        for axes in axis_sets {
            for keep in [false, true] {
                let mut b = Builder::new();
                let x = b.input("x", DType::F32, shape(&dims)).unwrap();
                let y = b.reduce(op, x, axes, keep).unwrap();
                b.output("y", y);
                let st = stage(&format!("reduce_{}_{axes:?}_{keep}", op.name()), b.finish().unwrap());
                let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &dims, 0.1, 2.0))]);
                check(&st, &inputs, &HashMap::new(), TOL);
            }
        }
    }
}

#[test]
fn integer_and_half_reductions() {
    for dt in [DType::I64, DType::I32] {
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            let mut b = Builder::new();
            let x = b.input("x", dt, shape(&[2, 5])).unwrap();
            let y = b.reduce(op, x, &[1], false).unwrap();
            let z = b.reduce(op, x, &[0], true).unwrap();
            b.output("y", y);
            b.output("z", z);
            let st = stage(&format!("ireduce_{}_{dt}", op.name()), b.finish().unwrap());
            let big = if dt == DType::I32 { i32::MAX as i64 } else { i64::MAX };
            let inputs = HashMap::from([("x".to_string(), Tensor::from_i64(dt, &[2, 5], vec![3, -7, big, 2, 9, -1, 0, 4, big, -big]))]);
            check(&st, &inputs, &HashMap::new(), TOL);
        }
    }
    for dt in [DType::F16, DType::BF16] {
        let mut b = Builder::new();
        let x = b.input("x", dt, shape(&[3, 6])).unwrap();
        let s = b.reduce(ReduceOp::Mean, x, &[1], false).unwrap();
        let m = b.reduce(ReduceOp::Max, x, &[0], false).unwrap();
        b.output("s", s);
        b.output("m", m);
        let st = stage(&format!("hreduce_{dt}"), b.finish().unwrap());
        let xs: Vec<f64> = (0..18).map(|i| (i as f64 - 7.5) * 0.37).collect();
        let inputs = HashMap::from([("x".to_string(), Tensor::from_f64(dt, &[3, 6], xs))]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

/// Symbolic sizes; a reduction of a fused elementwise prologue and an
/// elementwise epilogue reading the (broadcast) result.
#[test]
fn symbolic_reduce_with_prologue_and_epilogue() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![Dim::sym("n"), Dim::sym("d")]).unwrap();
    let sq = b.unary(UnaryOp::Square, x).unwrap();
    let ms = b.reduce(ReduceOp::Mean, sq, &[-1], true).unwrap();
    let r = b.unary(UnaryOp::Rsqrt, ms).unwrap();
    let y = b.mul(x, r).unwrap();
    let tot = b.reduce(ReduceOp::Sum, x, &[0, 1], false).unwrap();
    b.output("y", y);
    b.output("tot", tot);
    let st = stage("sym_reduce", b.finish().unwrap());
    for (n, d) in [(3, 7), (1, 1), (5, 16)] {
        let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[n, d], 0.5, 2.0))]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

#[test]
fn softmax_every_axis() {
    let mut rng = StdRng::seed_from_u64(13);
    for axis in 0..3isize {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, vec![Dim::sym("a"), 5.into(), 6.into()]).unwrap();
        let y = b.softmax(x, axis).unwrap();
        b.output("y", y);
        let st = stage(&format!("softmax_{axis}"), b.finish().unwrap());
        let mut xt = f32t(&mut rng, &[4, 5, 6], -4.0, 4.0);
        if let omnic_ir::eval::Data::F(v) = &mut xt.data {
            v[3] = f64::NEG_INFINITY; // a masked entry
        }
        let inputs = HashMap::from([("x".to_string(), xt)]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
    // f16 softmax, rounding once.
    let mut b = Builder::new();
    let x = b.input("x", DType::F16, shape(&[3, 9])).unwrap();
    let y = b.softmax(x, -1).unwrap();
    b.output("y", y);
    let xs: Vec<f64> = (0..27).map(|i| ((i * 7) % 11) as f64 * 0.3 - 1.5).collect();
    let inputs = HashMap::from([("x".to_string(), Tensor::from_f64(DType::F16, &[3, 9], xs))]);
    check(&stage("softmax_f16", b.finish().unwrap()), &inputs, &HashMap::new(), TOL);
}
