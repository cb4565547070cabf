//! Elementwise ops (unary, binary, compare, where, cast, expand, iota)
//! compiled ahead of time and run through the kernel ABI, against the
//! reference evaluator.

use super::support::{check, compile, stage, Tol, TOL};
use omnic_ir::eval::Tensor;
use omnic_ir::{BinaryOp, Builder, CmpOp, DType, Dim, Literal, Shape, UnaryOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

pub fn shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| d.into()).collect()
}

pub fn values(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

pub fn f32t(rng: &mut StdRng, dims: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::from_f32(dims, &values(rng, dims.iter().product(), lo, hi))
}

/// Single ops: libm functions and IEEE arithmetic are within a few ulp (f32
/// ulp = 1.19e-7 relative); composite formulas round each step in f32 where
/// the reference rounds once. The absolute part covers results near zero.
const SINGLE_OP: Tol = Tol { rtol: 1e-6, atol: 1e-7 };

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
        xs[0] = lo;
        xs[1] = hi;
        if lo < 0.0 {
            xs[2] = 0.0;
        }
        let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[7, 37], &xs))]);
        let r = check(&st, &inputs, &HashMap::new(), SINGLE_OP);
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
            BinaryOp::Add => (values(&mut rng, 65, 0.1, 8.0), values(&mut rng, 65, 0.1, 8.0)),
            BinaryOp::Sub => (values(&mut rng, 65, 0.1, 8.0), values(&mut rng, 65, -8.0, -0.1)),
            BinaryOp::Div => (values(&mut rng, 65, -8.0, 8.0), values(&mut rng, 65, 0.1, 8.0)),
            _ => (values(&mut rng, 65, -8.0, 8.0), values(&mut rng, 65, -8.0, 8.0)),
        };
        let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[5, 13], &xs)), ("y".to_string(), Tensor::from_f32(&[5, 13], &ys))]);
        let r = check(&st, &inputs, &HashMap::new(), SINGLE_OP);
        eprintln!("binary {:>5}: max rel err {:.2e}", op.name(), r.max_rel);
    }
}

/// Integer arithmetic wraps like the evaluator; division by zero and
/// `MIN / -1` do not trap (the kernel gives 0 and MIN where the evaluator
/// reports an error, so those cases are checked here directly).
#[test]
fn integer_binary_ops() {
    for dt in [DType::I64, DType::I32] {
        for op in BinaryOp::ALL {
            let mut b = Builder::new();
            let x = b.input("x", dt, shape(&[9])).unwrap();
            let y = b.input("y", dt, shape(&[9])).unwrap();
            let z = b.binary(op, x, y).unwrap();
            b.output("z", z);
            let st = stage(&format!("int_{}_{dt}", op.name()), b.finish().unwrap());
            let big = if dt == DType::I32 { i32::MAX as i64 } else { i64::MAX };
            let xs = vec![7, -7, 3, 0, big, -big - 1, 2, 5, -3];
            let ys = match op {
                BinaryOp::Div => vec![2, 2, -2, 5, 3, 7, 1, -5, 4],
                BinaryOp::Pow => vec![3, 3, 0, 2, 2, 1, 40, 7, 5],
                _ => vec![2, 5, -9, 0, 3, 7, big, 1, -4],
            };
            let inputs = HashMap::from([("x".to_string(), Tensor::from_i64(dt, &[9], xs)), ("y".to_string(), Tensor::from_i64(dt, &[9], ys))]);
            check(&st, &inputs, &HashMap::new(), TOL);
        }
        // The trapping cases.
        let mut b = Builder::new();
        let x = b.input("x", dt, shape(&[3])).unwrap();
        let y = b.input("y", dt, shape(&[3])).unwrap();
        let z = b.div(x, y).unwrap();
        b.output("z", z);
        let c = compile(&stage("int_div_edge", b.finish().unwrap())).unwrap();
        let min = if dt == DType::I32 { i32::MIN as i64 } else { i64::MIN };
        let inputs =
            HashMap::from([("x".to_string(), Tensor::from_i64(dt, &[3], vec![5, min, 9])), ("y".to_string(), Tensor::from_i64(dt, &[3], vec![0, -1, -1]))]);
        let out = c.run(&inputs, &HashMap::new());
        assert_eq!(out["z"].ints().unwrap(), &[0, min, -9]);
    }
}

/// Comparisons of every dtype (NaN included), `where` and casts between
/// every pair of dtypes, fused in one kernel.
#[test]
fn compare_where_cast_all_dtypes() {
    let vals = [-2.75, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5, 3e9, -3e9, 1e20, f64::NAN, 65504.0, 7.0];
    let n = vals.len();
    for from in DType::ALL {
        let mut b = Builder::new();
        let x = b.input("x", from, shape(&[n])).unwrap();
        let y = b.input("y", from, shape(&[n])).unwrap();
        for c in CmpOp::ALL {
            let r = b.compare(c, x, y).unwrap();
            b.output(&format!("cmp_{}", c.name()), r);
        }
        let gt = b.compare(CmpOp::Gt, x, y).unwrap();
        let w = b.where_(gt, x, y).unwrap();
        b.output("where", w);
        for to in DType::ALL {
            let c = b.cast(x, to).unwrap();
            b.output(&format!("cast_{to}"), c);
        }
        let st = stage(&format!("cmp_cast_{from}"), b.finish().unwrap());
        let (xs, ys): (Tensor, Tensor) = match from {
            d if d.is_float() => {
                let x: Vec<f64> = vals.to_vec();
                let y: Vec<f64> = vals.iter().rev().copied().collect();
                (Tensor::from_f64(d, &[n], x), Tensor::from_f64(d, &[n], y))
            }
            DType::Bool => (Tensor::from_bool(&[n], (0..n).map(|i| i % 3 == 0).collect()), Tensor::from_bool(&[n], (0..n).map(|i| i % 2 == 0).collect())),
            d => {
                let x: Vec<i64> = vec![-3, 0, 5, 7, i32::MAX as i64, -9, 1, 1 << 40, 2, -1, 0, 64, 3];
                let x: Vec<i64> = if d == DType::I32 { x.into_iter().map(|v| v as i32 as i64).collect() } else { x };
                let y: Vec<i64> = x.iter().rev().copied().collect();
                (Tensor::from_i64(d, &[n], x), Tensor::from_i64(d, &[n], y))
            }
        };
        let inputs = HashMap::from([("x".to_string(), xs), ("y".to_string(), ys)]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

/// f16 and bf16 chains: loads widen, every op rounds to the type, stores
/// narrow; mixed with f32 through casts.
#[test]
fn half_precision_chains() {
    let mut rng = StdRng::seed_from_u64(9);
    for dt in [DType::F16, DType::BF16] {
        let mut b = Builder::new();
        let x = b.input("x", dt, shape(&[4, 33])).unwrap();
        let w = b.param("w", dt, shape(&[33])).unwrap();
        let t = b.mul(x, w).unwrap();
        let t = b.unary(UnaryOp::Silu, t).unwrap();
        let t = b.add_scalar(t, 0.1).unwrap();
        let u = b.cast(t, DType::F32).unwrap();
        let u = b.unary(UnaryOp::Tanh, u).unwrap();
        let v = b.cast(u, dt).unwrap();
        b.output("t", t);
        b.output("v", v);
        let st = stage(&format!("half_{dt}"), b.finish().unwrap());
        let xs: Vec<f64> = (0..4 * 33).map(|_| rng.random_range(-3.0..3.0)).collect();
        let ws: Vec<f64> = (0..33).map(|_| rng.random_range(-2.0..2.0)).collect();
        let inputs = HashMap::from([("x".to_string(), Tensor::from_f64(dt, &[4, 33], xs))]);
        let weights = HashMap::from([("w".to_string(), Tensor::from_f64(dt, &[33], ws))]);
        // One unit in the last place of the half type (f16: 2^-11, bf16:
        // 2^-8 relative) where f32 arithmetic and the f64 reference round
        // to different neighbours.
        let ulp = if dt == DType::F16 { 1.0 / 1024.0 } else { 1.0 / 128.0 };
        check(&st, &inputs, &weights, Tol { rtol: ulp, atol: 1e-6 });
    }
}

/// Scalar constants, rank-0 inputs, size-1 axes, expand and general
/// broadcasting in one fused kernel, with outputs of several shapes.
#[test]
fn broadcasting_and_scalars() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[4, 1, 6])).unwrap();
    let row = b.input("row", DType::F32, shape(&[3, 1])).unwrap();
    let s = b.input("s", DType::F32, shape(&[])).unwrap();
    let one = b.input("one", DType::F32, shape(&[1, 1, 1])).unwrap();
    let xs = b.mul_scalar(x, 0.5).unwrap();
    let t = b.add(xs, row).unwrap();
    let t = b.mul(t, s).unwrap();
    let t = b.sub(t, one).unwrap();
    let u = b.unary(UnaryOp::Tanh, t).unwrap();
    let g = b.unary(UnaryOp::Gelu, row).unwrap();
    let sg = b.unary(UnaryOp::Sigmoid, s).unwrap();
    let e = b.expand(g, shape(&[2, 3, 5])).unwrap();
    b.output("u", u);
    b.output("g", g);
    b.output("sig", sg);
    b.output("e", e);
    let st = stage("broadcast", b.finish().unwrap());
    let inputs = HashMap::from([
        ("x".to_string(), f32t(&mut rng, &[4, 1, 6], -2.0, 2.0)),
        ("row".to_string(), f32t(&mut rng, &[3, 1], -2.0, 2.0)),
        ("s".to_string(), Tensor::from_f32(&[], &[0.75])),
        ("one".to_string(), Tensor::from_f32(&[1, 1, 1], &[0.25])),
    ]);
    check(&st, &inputs, &HashMap::new(), TOL);
}

/// Symbolic sizes: `[batch, seq, 8]` with a `[seq, 1]` operand and an iota
/// of length `seq` broadcast along the last axis.
#[test]
fn symbolic_broadcasting_and_iota() {
    let mut rng = StdRng::seed_from_u64(4);
    let (bt, sq) = (Dim::sym("batch"), Dim::sym("seq"));
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![bt.clone(), sq.clone(), 8.into()]).unwrap();
    let p = b.input("p", DType::F32, vec![sq.clone(), 1.into()]).unwrap();
    let io = b.iota(sq.clone(), DType::F32).unwrap();
    let io2 = b.iota(8.into(), DType::I64).unwrap();
    let t = b.mul(x, p).unwrap();
    let pos = b.mul_scalar(io, 0.25).unwrap();
    let pos = b.expand(pos, vec![8.into(), sq.clone()]).unwrap();
    let c = b.cast(io2, DType::F32).unwrap();
    let t = b.add(t, c).unwrap();
    let t = b.unary(UnaryOp::Exp, t).unwrap();
    b.output("t", t);
    b.output("pos", pos);
    b.output("iota", io2);
    let st = stage("symbolic", b.finish().unwrap());
    for (nb, ns) in [(2, 3), (1, 7), (3, 1)] {
        let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[nb, ns, 8], -1.0, 1.0)), ("p".to_string(), f32t(&mut rng, &[ns, 1], -1.0, 1.0))]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

/// Outputs that are inputs or constants, one value output twice, weights
/// as kernel arguments, a non-scalar literal; running twice gives the same.
#[test]
fn outputs_params_and_literals() {
    let mut rng = StdRng::seed_from_u64(5);
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
    b.output("c", c);
    let st = stage("params", b.finish().unwrap());
    let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[2, 3], -3.0, 3.0))]);
    let weights = HashMap::from([("w".to_string(), f32t(&mut rng, &[3], -3.0, 3.0))]);
    check(&st, &inputs, &weights, TOL);
    let c = compile(&st).unwrap();
    let a = c.run(&inputs, &weights);
    assert_eq!(a, c.run(&inputs, &weights));
    assert_eq!(a["two"].to_f64_vec(), vec![2.0]);
    assert_eq!(a["x"], inputs["x"]);
}

/// A larger tensor, so the loops run long.
#[test]
fn large_tensor() {
    let mut rng = StdRng::seed_from_u64(6);
    let n = [64, 257];
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&n)).unwrap();
    let y = b.input("y", DType::F32, shape(&n)).unwrap();
    let t = b.mul(x, y).unwrap();
    let t = b.unary(UnaryOp::GeluTanh, t).unwrap();
    let t = b.binary(BinaryOp::Max, t, x).unwrap();
    b.output("out", t);
    let st = stage("large", b.finish().unwrap());
    let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &n, -3.0, 3.0)), ("y".to_string(), f32t(&mut rng, &n, -3.0, 3.0))]);
    check(&st, &inputs, &HashMap::new(), TOL);
}

/// Zero-sized tensors run fine; a stage named like a C function the kernel
/// calls does not clash with it.
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
        check(&st, &inputs, &HashMap::new(), SINGLE_OP);
    }
}
