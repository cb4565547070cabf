//! Single ops and hand-written graphs through the cpu JIT, against the
//! reference evaluator.

use super::support::{check_against_reference, stage, Tol};
use omnic_codegen::cpu;
use omnic_ir::eval::Tensor;
use omnic_ir::{BinaryOp, Builder, DType, Literal, Shape, UnaryOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Single ops: the libm functions and IEEE arithmetic are within a few ulp
/// (f32 ulp = 1.19e-7 relative); composite formulas (sigmoid, silu, gelu)
/// round each step in f32 where the reference rounds once. The absolute part
/// covers results near zero (sin x near π, erf/tanh of tiny x, ...).
const SINGLE_OP: Tol = Tol { rtol: 1e-6, atol: 1e-7 };

fn shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| d.into()).collect()
}

fn values(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Input range on which `op` is defined and well conditioned.
fn domain(op: UnaryOp) -> (f32, f32) {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => (0.01, 50.0),
        UnaryOp::Recip => (0.05, 20.0),
        UnaryOp::Exp => (-20.0, 20.0),
        _ => (-6.0, 6.0),
    }
}

#[test]
fn every_unary_op_matches_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    for op in UnaryOp::ALL {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, shape(&[7, 37])).unwrap();
        let y = b.unary(op, x).unwrap();
        b.output("y", y);
        let st = stage(&format!("unary_{}", op.name()), b.finish().unwrap());
        let (lo, hi) = domain(op);
        let mut xs = values(&mut rng, 7 * 37, lo, hi);
        xs[0] = lo; // include the ends and (where defined) zero
        xs[1] = hi;
        if lo < 0.0 {
            xs[2] = 0.0;
        }
        let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[7, 37], &xs))]);
        let r = check_against_reference(&st, &inputs, &HashMap::new(), SINGLE_OP);
        eprintln!("unary {:>10}: max rel err {:.2e}, max abs err {:.2e}", op.name(), r.max_rel, r.max_abs);
    }
}

#[test]
fn every_binary_op_matches_reference() {
    let mut rng = StdRng::seed_from_u64(2);
    for op in BinaryOp::ALL {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, shape(&[5, 13])).unwrap();
        let y = b.input("y", DType::F32, shape(&[5, 13])).unwrap();
        let z = b.binary(op, x, y).unwrap();
        b.output("z", z);
        let st = stage(&format!("binary_{}", op.name()), b.finish().unwrap());
        let (xs, ys) = match op {
            BinaryOp::Pow => (values(&mut rng, 65, 0.1, 4.0), values(&mut rng, 65, -3.0, 3.0)),
            // Operands of one sign: the error bound is relative to the result.
            BinaryOp::Add => (values(&mut rng, 65, 0.1, 8.0), values(&mut rng, 65, 0.1, 8.0)),
            BinaryOp::Sub => (values(&mut rng, 65, 0.1, 8.0), values(&mut rng, 65, -8.0, -0.1)),
            BinaryOp::Div => (values(&mut rng, 65, -8.0, 8.0), values(&mut rng, 65, 0.1, 8.0)),
            _ => (values(&mut rng, 65, -8.0, 8.0), values(&mut rng, 65, -8.0, 8.0)),
        };
        let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[5, 13], &xs)), ("y".to_string(), Tensor::from_f32(&[5, 13], &ys))]);
        let r = check_against_reference(&st, &inputs, &HashMap::new(), SINGLE_OP);
        eprintln!("binary {:>5}: max rel err {:.2e}", op.name(), r.max_rel);
    }
}

/// Scalar constants, rank-0 inputs, size-1 axes and general static
/// broadcasting in one fused kernel.
#[test]
fn broadcasting_and_scalars() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[4, 1, 6])).unwrap();
    let row = b.input("row", DType::F32, shape(&[3, 1])).unwrap();
    let s = b.input("s", DType::F32, shape(&[])).unwrap();
    let one = b.input("one", DType::F32, shape(&[1, 1, 1])).unwrap();
    let xs = b.mul_scalar(x, 0.5).unwrap(); // scalar constant
    let t = b.add(xs, row).unwrap(); // [4,1,6] + [3,1] -> [4,3,6]
    let t = b.mul(t, s).unwrap(); // rank-0 input
    let t = b.sub(t, one).unwrap(); // [1,1,1]
    let u = b.unary(UnaryOp::Tanh, t).unwrap();
    let g = b.unary(UnaryOp::Gelu, row).unwrap(); // a second output shape: [3,1]
    let sg = b.unary(UnaryOp::Sigmoid, s).unwrap(); // and a scalar output
    b.output("u", u);
    b.output("g", g);
    b.output("sig", sg);
    let st = stage("broadcast", b.finish().unwrap());
    let inputs = HashMap::from([
        ("x".to_string(), Tensor::from_f32(&[4, 1, 6], &values(&mut rng, 24, -2.0, 2.0))),
        ("row".to_string(), Tensor::from_f32(&[3, 1], &values(&mut rng, 3, -2.0, 2.0))),
        ("s".to_string(), Tensor::from_f32(&[], &[0.75])),
        ("one".to_string(), Tensor::from_f32(&[1, 1, 1], &[0.25])),
    ]);
    let sig = cpu::signature(&st).unwrap();
    assert_eq!(sig.results.iter().map(|r| r.shape.clone()).collect::<Vec<_>>(), vec![vec![4, 3, 6], vec![3, 1], vec![]]);
    // tanh after a sub with mixed signs: absolute tolerance for results near 0.
    check_against_reference(&st, &inputs, &HashMap::new(), Tol { rtol: 1e-6, atol: 1e-6 });
}

/// Outputs that are inputs or constants, one value output twice, weights as
/// kernel arguments, a non-scalar literal.
#[test]
fn outputs_params_and_literals() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[2, 3])).unwrap();
    let w = b.param("w", DType::F32, shape(&[3])).unwrap();
    let c = b.constant(Literal { dtype: DType::F32, shape: vec![2, 1], values: vec![1.5, -0.5] }).unwrap();
    let k = b.scalar(DType::F32, 2.0).unwrap();
    let y = b.mul(x, w).unwrap();
    let y = b.add(y, c).unwrap();
    let y = b.unary(UnaryOp::Silu, y).unwrap();
    b.output("y", y);
    b.output("y_again", y);
    b.output("x", x);
    b.output("two", k);
    let st = stage("params", b.finish().unwrap());
    let sig = cpu::signature(&st).unwrap();
    assert_eq!(sig.args.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["x", "w"]);
    let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[2, 3], &values(&mut rng, 6, -3.0, 3.0)))]);
    let weights = HashMap::from([("w".to_string(), Tensor::from_f32(&[3], &values(&mut rng, 3, -3.0, 3.0)))]);
    check_against_reference(&st, &inputs, &weights, Tol { rtol: 1e-6, atol: 1e-6 });

    // Running twice gives the same answer (no state, results freed).
    let kernel = cpu::jit(&st).unwrap();
    let a = kernel.run(&inputs, &weights).unwrap();
    let b2 = kernel.run(&inputs, &weights).unwrap();
    assert_eq!(a, b2);
    assert_eq!(a["two"].to_f64_vec(), vec![2.0]);
    assert_eq!(a["x"], inputs["x"]);
}

/// A larger tensor, so the loops run long and the buffer handling is real.
#[test]
fn large_tensor() {
    let mut rng = StdRng::seed_from_u64(5);
    let n = [64, 257];
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&n)).unwrap();
    let y = b.input("y", DType::F32, shape(&n)).unwrap();
    let t = b.mul(x, y).unwrap();
    let t = b.unary(UnaryOp::GeluTanh, t).unwrap();
    let t = b.binary(BinaryOp::Max, t, x).unwrap();
    b.output("out", t);
    let st = stage("large", b.finish().unwrap());
    let inputs = HashMap::from([
        ("x".to_string(), Tensor::from_f32(&n, &values(&mut rng, n[0] * n[1], -3.0, 3.0))),
        ("y".to_string(), Tensor::from_f32(&n, &values(&mut rng, n[0] * n[1], -3.0, 3.0))),
    ]);
    check_against_reference(&st, &inputs, &HashMap::new(), Tol { rtol: 1e-6, atol: 1e-6 });
}

#[test]
fn run_rejects_wrong_arguments() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[2, 2])).unwrap();
    let y = b.unary(UnaryOp::Exp, x).unwrap();
    b.output("y", y);
    let kernel = cpu::jit(&stage("args", b.finish().unwrap())).unwrap();
    let e = kernel.run(&HashMap::new(), &HashMap::new()).unwrap_err().to_string();
    assert!(e.contains("missing input `x`"), "{e}");
    let bad = HashMap::from([("x".to_string(), Tensor::from_f32(&[4], &[1.0; 4]))]);
    let e = kernel.run(&bad, &HashMap::new()).unwrap_err().to_string();
    assert!(e.contains("`x` is f32[4]"), "{e}");
    let e = kernel.run_f32(&[&[1.0; 3]]).unwrap_err().to_string();
    assert!(e.contains("3 elements, expected 4"), "{e}");
    assert_eq!(kernel.run_f32(&[&[0.0; 4]]).unwrap(), vec![vec![1.0; 4]]);
}

/// Zero-sized tensors run (and free) fine; a stage named like a C function
/// the kernel calls does not clash with it.
#[test]
fn empty_tensors_and_awkward_names() {
    for name in ["malloc", "erff", "9 lives/ü"] {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, shape(&[0, 3])).unwrap();
        let y = b.unary(UnaryOp::Erf, x).unwrap();
        let z = b.add_scalar(y, 1.0).unwrap();
        b.output("z", z);
        let st = stage(name, b.finish().unwrap());
        let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[0, 3], &[]))]);
        check_against_reference(&st, &inputs, &HashMap::new(), SINGLE_OP);
    }
}
