//! Tests of the reference evaluator against hand-computed values and
//! independent reference implementations written in the tests.
//!
//! The references deliberately use a different method than the kernels:
//! multi-indices walked with an odometer and flattened by Horner's rule
//! (the kernels use stride tables), explicit per-element formulas instead of
//! (outer, len, inner) decompositions, explicit masked-key lists for
//! attention, alternative closed forms for the unary functions, and so on.
//!
//! Tolerances: every float comparison goes through [`close`], which accepts
//! `|got - want| <= tol * (1 + |want|)` (mixed absolute/relative), requires
//! NaN where NaN is expected and exact equality for infinities. The default
//! `tol` is 1e-12 for `Precision::F64` and 1.2e-7 (about one f32 ulp) for
//! `Precision::F32`; tests state any other tolerance where they use it.
//! "exact" means `==` on the f64 storage.

use super::{bind_inputs, evaluate, evaluate_observed, Data, Precision, Tensor};
use crate::builder::Builder;
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, ValueRef};
use crate::op::{BinaryOp, CmpOp, Literal, Op, ReduceOp, UnaryOp};
use crate::shape::{Dim, Shape};
use std::collections::HashMap;

const F32: DType = DType::F32;
const F16: DType = DType::F16;
const BF16: DType = DType::BF16;
const I64: DType = DType::I64;
const I32: DType = DType::I32;
const BOOL: DType = DType::Bool;
const PRECISIONS: [Precision; 2] = [Precision::F32, Precision::F64];

// ---------------------------------------------------------------- helpers

fn s(d: &[usize]) -> Shape {
    d.iter().map(|&x| Dim::from(x)).collect()
}

fn sym(n: &str) -> Dim {
    Dim::sym(n)
}

/// Deterministic data: multiples of 1/64 in [-2, 2), exact in f32, f16 and bf16.
fn vals(n: usize, seed: u64) -> Vec<f64> {
    let mut st = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(12345);
    (0..n)
        .map(|_| {
            st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((st >> 33) % 256) as f64 / 64.0 - 2.0
        })
        .collect()
}

/// Positive data in [0.25, 4.25), exact in f32.
fn pos_vals(n: usize, seed: u64) -> Vec<f64> {
    vals(n, seed).into_iter().map(|v| v + 2.25).collect()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn ft(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f64(F32, shape, vals(numel(shape), seed))
}

fn ftv(shape: &[usize], v: Vec<f64>) -> Tensor {
    Tensor::from_f64(F32, shape, v)
}

/// Row-major offset by Horner's rule (the kernels use stride tables).
fn off(shape: &[usize], ix: &[usize]) -> usize {
    assert_eq!(shape.len(), ix.len());
    ix.iter().zip(shape).fold(0, |acc, (&i, &d)| {
        assert!(i < d, "index {ix:?} out of {shape:?}");
        acc * d + i
    })
}

/// Every multi-index of `shape` in row-major order (an odometer). A rank-0
/// shape has exactly one (empty) index.
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    if shape.contains(&0) {
        return out;
    }
    let mut ix = vec![0; shape.len()];
    loop {
        out.push(ix.clone());
        let mut j = shape.len();
        loop {
            if j == 0 {
                return out;
            }
            j -= 1;
            ix[j] += 1;
            if ix[j] < shape[j] {
                break;
            }
            ix[j] = 0;
        }
    }
}

/// Index into an operand of shape `inp` broadcast (right-aligned) to an
/// output index `o`.
fn bidx(inp: &[usize], o: &[usize]) -> usize {
    let lead = o.len() - inp.len();
    let ix: Vec<usize> = inp.iter().enumerate().map(|(j, &d)| if d == 1 { 0 } else { o[lead + j] }).collect();
    off(inp, &ix)
}

fn tol(p: Precision) -> f64 {
    match p {
        Precision::F64 => 1e-12,
        Precision::F32 => 1.2e-7,
    }
}

/// Elementwise `|got - want| <= tol * (1 + |want|)`; NaN must match NaN and
/// infinities must match exactly. Also checks the shape.
fn close(got: &Tensor, shape: &[usize], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.shape, shape, "{what}: shape");
    let g = got.to_f64_vec();
    assert_eq!(g.len(), want.len(), "{what}: element count");
    for (i, (&a, &b)) in g.iter().zip(want).enumerate() {
        let ok = if b.is_nan() {
            a.is_nan()
        } else if b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= tol * (1.0 + b.abs())
        };
        assert!(ok, "{what}: element {i}: got {a:e}, want {b:e} (tol {tol:e})");
    }
}

/// [`close`] with the precision's default tolerance; in `Precision::F32`
/// every f32 result must also be exactly representable in f32.
fn check(got: &Tensor, shape: &[usize], want: &[f64], p: Precision, what: &str) {
    close(got, shape, want, tol(p), &format!("{what} ({p:?})"));
    if p == Precision::F32 && got.dtype == F32 {
        for &v in got.floats().unwrap() {
            assert!(v.is_nan() || (v as f32) as f64 == v, "{what}: {v:e} is not an f32 value in F32 precision");
        }
    }
}

fn exact(got: &Tensor, dtype: DType, shape: &[usize], want: &[f64], what: &str) {
    assert_eq!(got.dtype, dtype, "{what}: dtype");
    close(got, shape, want, 0.0, &format!("{what} (exact)"));
}

fn ints(got: &Tensor, dtype: DType, shape: &[usize], want: &[i64], what: &str) {
    assert_eq!(got.dtype, dtype, "{what}: dtype");
    assert_eq!(got.shape, shape, "{what}: shape");
    assert_eq!(got.ints().unwrap(), want, "{what}: values");
}

fn bools(got: &Tensor, shape: &[usize], want: &[bool], what: &str) {
    assert_eq!(got.dtype, BOOL, "{what}: dtype");
    assert_eq!(got.shape, shape, "{what}: shape");
    assert_eq!(got.bools().unwrap(), want, "{what}: values");
}

fn map(items: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    items.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()
}

fn run(g: &Graph, inputs: &[(&str, Tensor)], weights: &[(&str, Tensor)], p: Precision) -> Result<HashMap<String, Tensor>, IrError> {
    evaluate(g, &map(inputs), &map(weights), p)
}

fn run_ok(g: &Graph, inputs: &[(&str, Tensor)], weights: &[(&str, Tensor)], p: Precision) -> HashMap<String, Tensor> {
    run(g, inputs, weights, p).unwrap_or_else(|e| panic!("evaluation failed: {e}"))
}

fn run_err(g: &Graph, inputs: &[(&str, Tensor)], weights: &[(&str, Tensor)]) -> String {
    match run(g, inputs, weights, Precision::F64) {
        Ok(_) => panic!("evaluation unexpectedly succeeded"),
        Err(e) => {
            assert!(matches!(e, IrError::Eval(_)), "expected an evaluator error, got {e:?}");
            e.to_string()
        }
    }
}

fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message `{msg}` should contain `{p}`");
    }
}

/// One-output graph: `f` builds from a fresh builder and returns the output.
fn graph(f: impl FnOnce(&mut Builder) -> ValueRef) -> Graph {
    let mut b = Builder::new();
    let y = f(&mut b);
    b.output("y", y);
    b.finish().unwrap()
}

/// Round `v` to a binary format with `p` significand bits, minimum normal
/// exponent `emin` and largest finite value `max`: scale to an integer
/// (exact, by a power of two), round half to even, scale back. Independent
/// of the `half` crate the evaluator uses.
fn round_fmt(v: f64, p: i32, emin: i32, max: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let e = (((v.abs().to_bits() >> 52) & 0x7ff) as i32 - 1023).max(emin);
    let ulp = 2f64.powi(e - (p - 1));
    let r = (v / ulp).round_ties_even() * ulp;
    if r.abs() > max {
        f64::INFINITY.copysign(v)
    } else {
        r
    }
}

fn f16r(v: f64) -> f64 {
    round_fmt(v, 11, -14, 65504.0)
}

fn bf16r(v: f64) -> f64 {
    round_fmt(v, 8, -126, (2.0 - 2f64.powi(-7)) * 2f64.powi(127))
}

fn f32r(v: f64) -> f64 {
    v as f32 as f64
}

// ---------------------------------------------------------------- sources

#[test]
fn sources_pass_through_inputs_params_constants() {
    let mut b = Builder::new();
    let xi = b.input("xi", I64, s(&[2, 2])).unwrap();
    let xb = b.input("xb", BOOL, s(&[3])).unwrap();
    let w = b.param("w", F32, s(&[2, 3])).unwrap();
    let ci = b.constant(Literal { dtype: I32, shape: vec![2, 2], values: vec![-3.0, 0.0, 7.0, 2147483647.0] }).unwrap();
    let cb = b.constant(Literal { dtype: BOOL, shape: vec![3], values: vec![0.0, 2.0, -1.0] }).unwrap();
    let cf = b.constant(Literal { dtype: F32, shape: vec![2, 1], values: vec![0.5, -0.25] }).unwrap();
    let sc = b.scalar(F32, 3.0).unwrap();
    for (n, v) in [("xi", xi), ("xb", xb), ("w", w), ("ci", ci), ("cb", cb), ("cf", cf), ("sc", sc)] {
        b.output(n, v);
    }
    let g = b.finish().unwrap();
    let wt = ft(&[2, 3], 1);
    for p in PRECISIONS {
        let out = run_ok(
            &g,
            &[("xi", Tensor::from_i64(I64, &[2, 2], vec![i64::MIN, -1, 0, i64::MAX])), ("xb", Tensor::from_bool(&[3], vec![true, false, true]))],
            &[("w", wt.clone())],
            p,
        );
        ints(&out["xi"], I64, &[2, 2], &[i64::MIN, -1, 0, i64::MAX], "input i64");
        bools(&out["xb"], &[3], &[true, false, true], "input bool");
        assert_eq!(out["w"], wt, "param");
        ints(&out["ci"], I32, &[2, 2], &[-3, 0, 7, 2147483647], "constant i32");
        bools(&out["cb"], &[3], &[false, true, true], "constant bool (nonzero is true)");
        exact(&out["cf"], F32, &[2, 1], &[0.5, -0.25], "constant f32");
        exact(&out["sc"], F32, &[], &[3.0], "scalar constant");
    }
}

#[test]
fn constants_are_rounded_to_their_dtype() {
    // An f32 constant that is not an f32 value (as `Builder::scalar(F32, 0.1)`
    // makes) is an f32 result: rounded in F32 precision, kept in F64.
    let mut b = Builder::new();
    let c32 = b.scalar(F32, 0.1).unwrap();
    let c16 = b.scalar(F16, 0.1).unwrap();
    let cbf = b.scalar(BF16, 0.1).unwrap();
    b.output("c32", c32);
    b.output("c16", c16);
    b.output("cbf", cbf);
    let g = b.finish().unwrap();
    let o32 = run_ok(&g, &[], &[], Precision::F32);
    exact(&o32["c32"], F32, &[], &[f32r(0.1)], "f32 constant in F32 precision");
    let o64 = run_ok(&g, &[], &[], Precision::F64);
    exact(&o64["c32"], F32, &[], &[0.1], "f32 constant in F64 precision");
    for o in [&o32, &o64] {
        exact(&o["c16"], F16, &[], &[f16r(0.1)], "f16 constant");
        exact(&o["cbf"], BF16, &[], &[bf16r(0.1)], "bf16 constant");
    }
    assert_eq!(f16r(0.1), 0.0999755859375);
}

#[test]
fn f32_inputs_are_f32_values_in_f32_precision() {
    // An input given with more precision than f32 is rounded in F32
    // precision (storage semantics) and kept in F64 precision.
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[2])).unwrap();
        b.reshape(x, s(&[2, 1])).unwrap()
    });
    let x = ftv(&[2], vec![0.1, 1.0 + 2f64.powi(-30)]);
    let o = run_ok(&g, &[("x", x.clone())], &[], Precision::F32);
    exact(&o["y"], F32, &[2, 1], &[f32r(0.1), 1.0], "F32");
    let o = run_ok(&g, &[("x", x)], &[], Precision::F64);
    exact(&o["y"], F32, &[2, 1], &[0.1, 1.0 + 2f64.powi(-30)], "F64");
}

#[test]
fn iota_static_symbolic_and_float() {
    let mut b = Builder::new();
    let x = b.input("x", F32, vec![sym("n"), Dim::from(2usize)]).unwrap();
    let _ = x;
    let i64s = b.iota(sym("n"), I64).unwrap();
    let i32s = b.iota(Dim::from(4usize), I32).unwrap();
    let f = b.iota(Dim::from(5usize), F32).unwrap();
    let h = b.iota(Dim::from(3usize), F16).unwrap();
    let e = b.iota(Dim::from(0usize), I64).unwrap();
    for (n, v) in [("i64", i64s), ("i32", i32s), ("f", f), ("h", h), ("e", e)] {
        b.output(n, v);
    }
    let g = b.finish().unwrap();
    for n in [1usize, 3] {
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ft(&[n, 2], 0))], &[], p);
            ints(&o["i64"], I64, &[n], &(0..n as i64).collect::<Vec<_>>(), "iota(n) i64");
            ints(&o["i32"], I32, &[4], &[0, 1, 2, 3], "iota i32");
            exact(&o["f"], F32, &[5], &[0.0, 1.0, 2.0, 3.0, 4.0], "iota f32");
            exact(&o["h"], F16, &[3], &[0.0, 1.0, 2.0], "iota f16");
            ints(&o["e"], I64, &[0], &[], "empty iota");
        }
    }
}

// ---------------------------------------------------------------- unary

/// Simpson's rule for `erf x = 2/√π ∫₀ˣ e^(-t²) dt` (20000 intervals; error
/// below 1e-14 for |x| ≤ 3), independent of the kernel's series/fraction.
fn erf_simpson(x: f64) -> f64 {
    let n = 20000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut acc = f(0.0) + f(x);
    for i in 1..n {
        acc += if i % 2 == 1 { 4.0 } else { 2.0 } * f(i as f64 * h);
    }
    acc * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

fn tanh_alt(x: f64) -> f64 {
    let e = (2.0 * x).exp();
    (e - 1.0) / (e + 1.0)
}

fn sigmoid_alt(x: f64) -> f64 {
    0.5 * (1.0 + tanh_alt(0.5 * x))
}

/// Reference values by other formulas than the kernels'.
fn unary_ref(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => 0.0 - x,
        UnaryOp::Abs => {
            if x < 0.0 {
                -x
            } else {
                x
            }
        }
        UnaryOp::Exp => std::f64::consts::E.powf(x),
        UnaryOp::Log => x.log2() * std::f64::consts::LN_2,
        UnaryOp::Sqrt => x.powf(0.5),
        UnaryOp::Rsqrt => x.powf(-0.5),
        UnaryOp::Recip => x.powi(-1),
        UnaryOp::Sin => (x - std::f64::consts::FRAC_PI_2).cos(),
        UnaryOp::Cos => (x + std::f64::consts::FRAC_PI_2).sin(),
        UnaryOp::Tanh => tanh_alt(x),
        UnaryOp::Erf => erf_simpson(x),
        UnaryOp::Sigmoid => sigmoid_alt(x),
        UnaryOp::Silu => x * sigmoid_alt(x),
        UnaryOp::Gelu => 0.5 * x * (1.0 + erf_simpson(x * std::f64::consts::FRAC_1_SQRT_2)),
        UnaryOp::GeluTanh => 0.5 * x * (1.0 + tanh_alt(0.7978845608028654 * (x + 0.044715 * x.powi(3)))),
        UnaryOp::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        UnaryOp::Square => x.powi(2),
    }
}

#[test]
fn unary_every_op_rank3_both_precisions() {
    let shape = [2, 3, 4];
    for op in UnaryOp::ALL {
        let positive = matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip);
        let xv = if positive { pos_vals(24, 7) } else { vals(24, 7) };
        let g = graph(|b| {
            let x = b.input("x", F32, s(&shape)).unwrap();
            b.unary(op, x).unwrap()
        });
        let want: Vec<f64> = xv.iter().map(|&x| unary_ref(op, x)).collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&shape, xv.clone()))], &[], p);
            assert_eq!(o["y"].dtype, F32);
            // 1e-13 in F64: the references use other formulas (Simpson for erf).
            let t = if p == Precision::F64 { 1e-13 } else { tol(p) };
            close(&o["y"], &shape, &want, t, &format!("{} {p:?}", op.name()));
        }
    }
}

#[test]
fn erf_matches_table_to_1e_15() {
    // 40-digit values (mpmath) rounded to f64; tolerance 1e-15 absolute.
    let table: [(f64, f64); 17] = [
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (2.0, 0.9953222650189527),
        (3.0, 0.9999779095030014),
        (-1.5, -0.9661051464753108),
        (0.001, 0.0011283787909692364),
        (-0.1, -0.1124629160182849),
        (0.25, 0.27632639016823693),
        (1.75, 0.9866716712191824),
        (2.4, 0.9993114861033549),
        (2.49, 0.999570712132266),
        (2.5, 0.999593047982555),
        (2.6, 0.9997639655834707),
        (3.5, 0.9999992569016276),
        (4.0, 0.9999999845827421),
        (6.0, 1.0),
        (-5.0, -0.9999999999984626),
    ];
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[table.len()])).unwrap();
        b.unary(UnaryOp::Erf, x).unwrap()
    });
    let x = ftv(&[table.len()], table.iter().map(|t| t.0).collect());
    let o = run_ok(&g, &[("x", x)], &[], Precision::F64);
    let got = o["y"].floats().unwrap();
    for (i, (x, want)) in table.iter().enumerate() {
        assert!((got[i] - want).abs() <= 1e-15, "erf({x}) = {:e}, want {want:e}", got[i]);
    }
    // Odd symmetry is exact; erf(0) = 0; limits at ±∞; NaN propagates.
    let pts = [0.3, 1.1, 2.2, 2.7, 3.9];
    let mut xs: Vec<f64> = pts.to_vec();
    xs.extend(pts.iter().map(|v| -v));
    xs.extend([0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN]);
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[xs.len()])).unwrap();
        b.unary(UnaryOp::Erf, x).unwrap()
    });
    let o = run_ok(&g, &[("x", ftv(&[xs.len()], xs.clone()))], &[], Precision::F64);
    let got = o["y"].floats().unwrap();
    for i in 0..pts.len() {
        assert_eq!(got[i], -got[i + pts.len()], "erf is odd at {}", pts[i]);
    }
    let n = 2 * pts.len();
    assert_eq!(got[n], 0.0, "erf(0)");
    assert_eq!(got[n + 1], 1.0, "erf(+inf)");
    assert_eq!(got[n + 2], -1.0, "erf(-inf)");
    assert!(got[n + 3].is_nan(), "erf(NaN)");
}

#[test]
fn erf_dense_table_across_the_method_switch() {
    // erf of the exact f64 inputs by mpmath (40 digits), densest where the
    // evaluator switches from the series to the continued fraction; 1e-15
    // absolute, for x and -x.
    let table: [(f64, f64); 26] = [
        (0.05, 0.05637197779701663),
        (0.2, 0.22270258921047847),
        (0.45, 0.47548171978692366),
        (0.7, 0.6778011938374184),
        (0.95, 0.8208908072732779),
        (1.2, 0.9103139782296353),
        (1.45, 0.9596950256374592),
        (1.49, 0.9648978648432042),
        (1.5, 0.9661051464753108),
        (1.51, 0.9672767481287117),
        (1.7, 0.9837904585907745),
        (1.9, 0.9927904292352575),
        (2.1, 0.997020533343667),
        (2.2, 0.9981371537020182),
        (2.3, 0.9988568234026434),
        (2.35, 0.9991107329678676),
        (2.4, 0.999311486103355),
        (2.45, 0.999469419887749),
        (2.48, 0.9995472358136659),
        (2.5, 0.999593047982555),
        (2.55, 0.9996893396573608),
        (2.8, 0.9999249868053346),
        (3.2, 0.9999939742388483),
        (3.7, 0.9999998328489421),
        (4.5, 0.9999999998033839),
        (5.5, 0.9999999999999927),
    ];
    let n = table.len();
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[2 * n])).unwrap();
        b.unary(UnaryOp::Erf, x).unwrap()
    });
    let mut xs: Vec<f64> = table.iter().map(|t| t.0).collect();
    xs.extend(table.iter().map(|t| -t.0));
    let mut want: Vec<f64> = table.iter().map(|t| t.1).collect();
    want.extend(table.iter().map(|t| -t.1));
    let o = run_ok(&g, &[("x", ftv(&[2 * n], xs))], &[], Precision::F64);
    close(&o["y"], &[2 * n], &want, 1e-15, "erf dense table");
}

#[test]
fn gelu_gelu_tanh_silu_sigmoid_formulas() {
    // Exact GELU at points computed with mpmath (40 digits); 1e-15·(1+|y|).
    let gelu_table: [(f64, f64); 8] = [
        (-3.0, -0.004049694094890284),
        (-1.0, -0.15865525393145705),
        (-0.5, -0.15426876936299345),
        (0.0, 0.0),
        (0.3, 0.1853734266566858),
        (1.0, 0.8413447460685429),
        (2.5, 2.4844758366855597),
        (4.0, 3.9998733150326675),
    ];
    let xs: Vec<f64> = gelu_table.iter().map(|t| t.0).collect();
    let n = xs.len();
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[n])).unwrap();
    for op in [UnaryOp::Gelu, UnaryOp::GeluTanh, UnaryOp::Silu, UnaryOp::Sigmoid] {
        let y = b.unary(op, x).unwrap();
        b.output(op.name(), y);
    }
    let g = b.finish().unwrap();
    let o = run_ok(&g, &[("x", ftv(&[n], xs.clone()))], &[], Precision::F64);
    close(&o["gelu"], &[n], &gelu_table.map(|t| t.1), 1e-15, "gelu table");
    // tanh approximation: x/2·(1 + tanh(√(2/π)(x + 0.044715x³))), written out.
    let gt: Vec<f64> = xs
        .iter()
        .map(|&x| {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            x / 2.0 * (1.0 + u.tanh())
        })
        .collect();
    close(&o["gelu_tanh"], &[n], &gt, 1e-15, "gelu_tanh formula");
    // Hand-checked: gelu_tanh(1) ≈ 0.8411919906, close to but not gelu(1).
    assert!((o["gelu_tanh"].floats().unwrap()[5] - 0.8411919906082768).abs() < 1e-15);
    let si: Vec<f64> = xs.iter().map(|&x| x / (1.0 + (-x).exp())).collect();
    close(&o["silu"], &[n], &si, 1e-15, "silu formula");
    let sg: Vec<f64> = xs.iter().map(|&x| (x).exp() / (1.0 + x.exp())).collect();
    close(&o["sigmoid"], &[n], &sg, 1e-15, "sigmoid formula");
    // Limits: gelu(+inf) = +inf (needs erf(+inf) = 1), sigmoid saturates.
    let o = run_ok(&g, &[("x", ftv(&[n], vec![f64::INFINITY, -800.0, 800.0, 0.0, 0.0, 0.0, 0.0, 0.0]))], &[], Precision::F64);
    assert_eq!(o["gelu"].floats().unwrap()[0], f64::INFINITY);
    assert_eq!(o["sigmoid"].floats().unwrap()[..3], [1.0, 0.0, 1.0]);
    assert_eq!(o["gelu"].floats().unwrap()[3], 0.0);
}

#[test]
fn unary_f16_and_bf16_results_are_rounded() {
    let xs: Vec<f64> = vec![0.5, 1.25, -0.75, 2.0, 0.0625];
    for dt in [F16, BF16] {
        let g = graph(|b| {
            let x = b.input("x", dt, s(&[5])).unwrap();
            b.unary(UnaryOp::Exp, x).unwrap()
        });
        let round = |v: f64| if dt == F16 { f16r(v) } else { bf16r(v) };
        let want: Vec<f64> = xs.iter().map(|&x| round(x.exp())).collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", Tensor::from_f64(dt, &[5], xs.clone()))], &[], p);
            exact(&o["y"], dt, &[5], &want, &format!("exp {dt} {p:?}"));
        }
    }
    // Hand-checked: e^0.5 = 1.6487… → f16 1.6484375 (ulp 2^-10 at [1,2)).
    assert_eq!(f16r(0.5f64.exp()), 1.6484375);
}

// ---------------------------------------------------------------- binary

fn binary_ref(op: BinaryOp, p: f64, q: f64) -> f64 {
    match op {
        BinaryOp::Add => p + q,
        BinaryOp::Sub => p + (-q),
        BinaryOp::Mul => p * q,
        BinaryOp::Div => p * (1.0 / q),
        BinaryOp::Pow => (q * p.ln()).exp(),
        BinaryOp::Max => {
            if p >= q {
                p
            } else {
                q
            }
        }
        BinaryOp::Min => {
            if p <= q {
                p
            } else {
                q
            }
        }
    }
}

#[test]
fn binary_every_op_broadcast_2x1x3_with_4x1() {
    let (sa, sb, so) = ([2usize, 1, 3], [4usize, 1], [2usize, 4, 3]);
    for op in BinaryOp::ALL {
        let av = if op == BinaryOp::Pow { pos_vals(6, 1) } else { vals(6, 1) };
        let bv = if op == BinaryOp::Div { pos_vals(4, 2) } else { vals(4, 2) };
        let g = graph(|b| {
            let x = b.input("a", F32, s(&sa)).unwrap();
            let y = b.input("b", F32, s(&sb)).unwrap();
            b.binary(op, x, y).unwrap()
        });
        // out[i, j, k] = a[i, 0, k] op b[j, 0]
        let mut want = Vec::new();
        for i in 0..2 {
            for j in 0..4 {
                for k in 0..3 {
                    want.push(binary_ref(op, av[off(&sa, &[i, 0, k])], bv[off(&sb, &[j, 0])]));
                }
            }
        }
        for p in PRECISIONS {
            let o = run_ok(&g, &[("a", ftv(&sa, av.clone())), ("b", ftv(&sb, bv.clone()))], &[], p);
            let t = if p == Precision::F64 { 1e-14 } else { tol(p) };
            close(&o["y"], &so, &want, t, &format!("{} {p:?}", op.name()));
        }
    }
}

#[test]
fn binary_scalar_operand_and_rank5_size1_broadcast() {
    // [1,2,1,3,1] op scalar, and [2,1,3,1,2] op [4,1,5,1] → [2,4,3,5,2].
    let (sa, sb) = ([2usize, 1, 3, 1, 2], [4usize, 1, 5, 1]);
    let so = [2usize, 4, 3, 5, 2];
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[1, 2, 1, 3, 1])).unwrap();
    let c = b.scalar(F32, 0.75).unwrap();
    let y1 = b.binary(BinaryOp::Sub, c, x).unwrap();
    let a = b.input("a", F32, s(&sa)).unwrap();
    let bb = b.input("b", F32, s(&sb)).unwrap();
    let y2 = b.mul(a, bb).unwrap();
    b.output("y1", y1);
    b.output("y2", y2);
    let g = b.finish().unwrap();
    let (xv, av, bv) = (vals(6, 3), vals(12, 4), vals(20, 5));
    let want1: Vec<f64> = xv.iter().map(|v| 0.75 - v).collect();
    let want2: Vec<f64> = indices(&so).iter().map(|o| av[bidx(&sa, o)] * bv[bidx(&sb, o)]).collect();
    for p in PRECISIONS {
        let o = run_ok(&g, &[("x", ftv(&[1, 2, 1, 3, 1], xv.clone())), ("a", ftv(&sa, av.clone())), ("b", ftv(&sb, bv.clone()))], &[], p);
        check(&o["y1"], &[1, 2, 1, 3, 1], &want1, p, "scalar - x");
        check(&o["y2"], &so, &want2, p, "rank-5 broadcast mul");
    }
}

#[test]
fn binary_results_round_per_precision_and_dtype() {
    // 1 + 2^-30: rounds to 1 as an f32 in F32 precision, kept in F64; f16
    // and bf16 results round in both precisions.
    let tiny = 2f64.powi(-30);
    for dt in [F32, F16, BF16] {
        let g = graph(|b| {
            let x = b.input("x", dt, s(&[2])).unwrap();
            let y = b.input("y", dt, s(&[2])).unwrap();
            b.add(x, y).unwrap()
        });
        // 2^-30 is exact in f32 and bf16 (normal), and in f16 flushes to 0.
        let yv = vec![tiny, 0.25];
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", Tensor::from_f64(dt, &[2], vec![1.0, 1.0])), ("y", Tensor::from_f64(dt, &[2], yv.clone()))], &[], p);
            let first = if dt == F32 && p == Precision::F64 { 1.0 + tiny } else { 1.0 };
            exact(&o["y"], dt, &[2], &[first, 1.25], &format!("1 + 2^-30 in {dt} {p:?}"));
        }
    }
}

#[test]
fn binary_i64_wraps_and_divides_toward_zero() {
    let m = i64::MIN;
    let x = vec![i64::MAX, m, 3, -7, 7, -7, m, -2, 2, 5, 0, 1, -3];
    let y = vec![1, 1, 1 << 62, 2, -2, -2, -1, 3, 63, -9, 7, 0, -3];
    let g_for = |op| {
        graph(|b| {
            let a = b.input("a", I64, s(&[13])).unwrap();
            let c = b.input("b", I64, s(&[13])).unwrap();
            b.binary(op, a, c).unwrap()
        })
    };
    let ins = [("a", Tensor::from_i64(I64, &[13], x.clone())), ("b", Tensor::from_i64(I64, &[13], y.clone()))];
    let o = run_ok(&g_for(BinaryOp::Add), &ins, &[], Precision::F64);
    ints(&o["y"], I64, &[13], &[m, m + 1, 3 + (1 << 62), -5, 5, -9, i64::MAX, 1, 65, -4, 7, 1, -6], "add wraps");
    let o = run_ok(&g_for(BinaryOp::Sub), &ins, &[], Precision::F64);
    ints(&o["y"], I64, &[13], &[i64::MAX - 1, i64::MAX, 3 - (1 << 62), -9, 9, -5, m + 1, -5, -61, 14, -7, 1, 0], "sub wraps");
    let o = run_ok(&g_for(BinaryOp::Mul), &ins, &[], Precision::F64);
    // 3·2^62 = 2^63 + 2^62 wraps to -2^62; MIN·-1 wraps to MIN.
    ints(&o["y"], I64, &[13], &[i64::MAX, m, -(1 << 62), -14, -14, 14, m, -6, 126, -45, 0, 0, 9], "mul wraps");
    let o = run_ok(&g_for(BinaryOp::Max), &ins, &[], Precision::F64);
    ints(&o["y"], I64, &[13], &[i64::MAX, 1, 1 << 62, 2, 7, -2, -1, 3, 63, 5, 7, 1, -3], "max");
    let o = run_ok(&g_for(BinaryOp::Min), &ins, &[], Precision::F64);
    ints(&o["y"], I64, &[13], &[1, m, 3, -7, -2, -7, m, -2, 2, -9, 0, 0, -3], "min");
    // Division truncates toward zero; MIN / -1 wraps to MIN (no panic).
    let xd = vec![-7, 7, -7, 7, m, 0, i64::MAX];
    let yd = vec![2, -2, -2, 2, -1, 5, -1];
    let ins = [("a", Tensor::from_i64(I64, &[7], xd)), ("b", Tensor::from_i64(I64, &[7], yd))];
    let g = graph(|b| {
        let a = b.input("a", I64, s(&[7])).unwrap();
        let c = b.input("b", I64, s(&[7])).unwrap();
        b.div(a, c).unwrap()
    });
    let o = run_ok(&g, &ins, &[], Precision::F64);
    ints(&o["y"], I64, &[7], &[-3, -3, 3, 3, m, 0, -i64::MAX], "div truncates");
}

#[test]
fn binary_i32_wraps_at_32_bits() {
    let (mx, mn) = (i32::MAX as i64, i32::MIN as i64);
    let g_for = |op| {
        graph(|b| {
            let a = b.input("a", I32, s(&[2, 3])).unwrap();
            let c = b.input("b", I32, s(&[3])).unwrap();
            b.binary(op, a, c).unwrap()
        })
    };
    let a = Tensor::from_i64(I32, &[2, 3], vec![mx, mn, 65536, -65536, 2, -7]);
    let bv = Tensor::from_i64(I32, &[3], vec![1, -1, 65536]);
    let ins = [("a", a), ("b", bv)];
    let o = run_ok(&g_for(BinaryOp::Add), &ins, &[], Precision::F64);
    ints(&o["y"], I32, &[2, 3], &[mn, mx, 131072, -65535, 1, 65529], "i32 add wraps");
    let o = run_ok(&g_for(BinaryOp::Sub), &ins, &[], Precision::F64);
    ints(&o["y"], I32, &[2, 3], &[mx - 1, mn + 1, 0, -65537, 3, -65543], "i32 sub");
    let o = run_ok(&g_for(BinaryOp::Mul), &ins, &[], Precision::F64);
    // 65536² = 2^32 wraps to 0; MIN·-1 wraps to MIN; -7·65536 = -458752.
    ints(&o["y"], I32, &[2, 3], &[mx, mn, 0, -65536, -2, -458752], "i32 mul wraps");
    let o = run_ok(&g_for(BinaryOp::Div), &ins, &[], Precision::F64);
    ints(&o["y"], I32, &[2, 3], &[mx, mn, 1, -65536, -2, 0], "i32 div (MIN/-1 wraps)");
    // pow: 2^31 wraps to MIN, 2^32 to 0, (-3)^3 = -27, 1^31, 0^32, (-1)^3.
    let g = g_for(BinaryOp::Pow);
    let ins = [("a", Tensor::from_i64(I32, &[2, 3], vec![2, 2, -3, 1, 0, -1])), ("b", Tensor::from_i64(I32, &[3], vec![31, 32, 3]))];
    let o = run_ok(&g, &ins, &[], Precision::F64);
    ints(&o["y"], I32, &[2, 3], &[mn, 0, -27, 1, 0, -1], "i32 pow wraps");
}

#[test]
fn binary_int_pow_large_exponents_wrap() {
    // Exponents beyond u32: 2^(2^32) wraps to 0 mod 2^64, (-1)^(2^32+1) = -1,
    // 1^(2^40) = 1, 3^0 = 1.
    let g = graph(|b| {
        let a = b.input("a", I64, s(&[4])).unwrap();
        let c = b.input("b", I64, s(&[4])).unwrap();
        b.binary(BinaryOp::Pow, a, c).unwrap()
    });
    let ins = [("a", Tensor::from_i64(I64, &[4], vec![2, -1, 1, 3])), ("b", Tensor::from_i64(I64, &[4], vec![1 << 32, (1 << 32) + 1, 1 << 40, 0]))];
    let o = run_ok(&g, &ins, &[], Precision::F64);
    ints(&o["y"], I64, &[4], &[0, -1, 1, 1], "pow with large exponents");
}

#[test]
fn binary_int_errors_name_the_op() {
    let mut b = Builder::new();
    let a = b.input("a", I64, s(&[2])).unwrap();
    let c = b.input("b", I64, s(&[2])).unwrap();
    b.set_scope(Some("blocks.3.ff"));
    let d = b.div(a, c).unwrap();
    b.output("y", d);
    let g = b.finish().unwrap();
    let msg = run_err(&g, &[("a", Tensor::from_i64(I64, &[2], vec![1, 2])), ("b", Tensor::from_i64(I64, &[2], vec![1, 0]))], &[]);
    has(&msg, &["`div`", "%2", "(blocks.3.ff)", "integer division by zero"]);
    let g = graph(|b| {
        let a = b.input("a", I64, s(&[1])).unwrap();
        let c = b.input("b", I64, s(&[1])).unwrap();
        b.binary(BinaryOp::Pow, a, c).unwrap()
    });
    let msg = run_err(&g, &[("a", Tensor::from_i64(I64, &[1], vec![2])), ("b", Tensor::from_i64(I64, &[1], vec![-1]))], &[]);
    has(&msg, &["`pow`", "%2", "negative exponent"]);
}

#[test]
fn binary_float_special_values() {
    let g_for = |op| {
        graph(|b| {
            let a = b.input("a", F32, s(&[6])).unwrap();
            let c = b.input("b", F32, s(&[6])).unwrap();
            b.binary(op, a, c).unwrap()
        })
    };
    let ins = [("a", ftv(&[6], vec![1.0, -1.0, 0.0, -8.0, 2.0, 0.0])), ("b", ftv(&[6], vec![0.0, 0.0, 0.0, 1.0 / 3.0, -1.0, 0.0]))];
    for p in PRECISIONS {
        let o = run_ok(&g_for(BinaryOp::Div), &ins, &[], p);
        exact(&o["y"], F32, &[6], &[f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -24.0, -2.0, f64::NAN], "div by zero");
        let o = run_ok(&g_for(BinaryOp::Pow), &ins, &[], p);
        // x^0 = 1 (also 0^0), negative base to a fractional power is NaN, 2^-1 = 0.5.
        exact(&o["y"], F32, &[6], &[1.0, 1.0, 1.0, f64::NAN, 0.5, 1.0], "pow special cases");
    }
}

// ---------------------------------------------------------------- compare / where

fn cmp_ref(op: CmpOp, p: f64, q: f64) -> bool {
    match op {
        CmpOp::Eq => p == q,
        CmpOp::Ne => p != q,
        CmpOp::Lt => p < q,
        CmpOp::Le => p <= q,
        CmpOp::Gt => p > q,
        CmpOp::Ge => p >= q,
    }
}

#[test]
fn compare_every_op_float_broadcast_with_nan() {
    let (sa, sb, so) = ([2usize, 1, 3], [4usize, 1], [2usize, 4, 3]);
    let av = vec![0.5, -1.0, f64::NAN, 2.0, 0.25, 1.0];
    let bv = vec![0.5, 1.0, -1.0, f64::NAN];
    for op in CmpOp::ALL {
        let g = graph(|b| {
            let x = b.input("a", F32, s(&sa)).unwrap();
            let y = b.input("b", F32, s(&sb)).unwrap();
            b.compare(op, x, y).unwrap()
        });
        let want: Vec<bool> = indices(&so).iter().map(|o| cmp_ref(op, av[bidx(&sa, o)], bv[bidx(&sb, o)])).collect();
        // NaN compares unequal to everything: only `ne` is true.
        let nan_row: Vec<bool> = (0..3).map(|k| want[off(&so, &[0, 3, k])]).collect();
        assert_eq!(nan_row, vec![op == CmpOp::Ne; 3]);
        for p in PRECISIONS {
            let o = run_ok(&g, &[("a", ftv(&sa, av.clone())), ("b", ftv(&sb, bv.clone()))], &[], p);
            bools(&o["y"], &so, &want, op.name());
        }
    }
}

#[test]
fn compare_integers_exactly_beyond_2_pow_53() {
    // 2^53 and 2^53 + 1 are equal as f64 but not as i64.
    let big = 1i64 << 53;
    for op in CmpOp::ALL {
        let g = graph(|b| {
            let x = b.input("a", I64, s(&[3])).unwrap();
            let y = b.input("b", I64, s(&[3])).unwrap();
            b.compare(op, x, y).unwrap()
        });
        let a = vec![big, big + 1, -5];
        let bb = vec![big + 1, big + 1, 3];
        let want: Vec<bool> = a
            .iter()
            .zip(&bb)
            .map(|(p, q)| match op {
                CmpOp::Eq => p == q,
                CmpOp::Ne => p != q,
                CmpOp::Lt => p < q,
                CmpOp::Le => p <= q,
                CmpOp::Gt => p > q,
                CmpOp::Ge => p >= q,
            })
            .collect();
        let o = run_ok(&g, &[("a", Tensor::from_i64(I64, &[3], a)), ("b", Tensor::from_i64(I64, &[3], bb))], &[], Precision::F64);
        bools(&o["y"], &[3], &want, op.name());
    }
}

#[test]
fn compare_bools_and_i32_scalar() {
    let mut b = Builder::new();
    let x = b.input("x", BOOL, s(&[2, 2])).unwrap();
    let y = b.input("y", BOOL, s(&[2])).unwrap();
    let lt = b.compare(CmpOp::Lt, x, y).unwrap();
    let eq = b.compare(CmpOp::Eq, x, y).unwrap();
    let i = b.input("i", I32, s(&[4])).unwrap();
    let c = b.scalar(I32, 2.0).unwrap();
    let ge = b.compare(CmpOp::Ge, i, c).unwrap();
    b.output("lt", lt);
    b.output("eq", eq);
    b.output("ge", ge);
    let g = b.finish().unwrap();
    let o = run_ok(
        &g,
        &[
            ("x", Tensor::from_bool(&[2, 2], vec![false, true, true, false])),
            ("y", Tensor::from_bool(&[2], vec![true, true])),
            ("i", Tensor::from_i64(I32, &[4], vec![1, 2, 3, -4])),
        ],
        &[],
        Precision::F32,
    );
    // false < true only.
    bools(&o["lt"], &[2, 2], &[true, false, false, true], "bool lt");
    bools(&o["eq"], &[2, 2], &[false, true, true, false], "bool eq");
    bools(&o["ge"], &[4], &[false, true, true, false], "i32 >= 2");
}

#[test]
fn where_broadcasts_cond_and_branches_for_every_dtype() {
    // cond [2,1,4], a [3,1], b scalar → [2,3,4].
    let so = [2usize, 3, 4];
    let cv: Vec<bool> = (0..8).map(|i| i % 3 != 1).collect();
    for dt in [F32, I64, BOOL] {
        let g = graph(|b| {
            let c = b.input("c", BOOL, s(&[2, 1, 4])).unwrap();
            let x = b.input("a", dt, s(&[3, 1])).unwrap();
            let y = b.input("b", dt, s(&[])).unwrap();
            b.where_(c, x, y).unwrap()
        });
        let (a, bb, av, bv): (Tensor, Tensor, Vec<f64>, f64) = match dt {
            F32 => (ftv(&[3, 1], vec![1.5, -2.0, 3.25]), ftv(&[], vec![-9.0]), vec![1.5, -2.0, 3.25], -9.0),
            I64 => (Tensor::from_i64(I64, &[3, 1], vec![4, 5, 6]), Tensor::from_i64(I64, &[], vec![-1]), vec![4.0, 5.0, 6.0], -1.0),
            _ => (Tensor::from_bool(&[3, 1], vec![true, false, true]), Tensor::from_bool(&[], vec![false]), vec![1.0, 0.0, 1.0], 0.0),
        };
        let want: Vec<f64> = indices(&so).iter().map(|o| if cv[off(&[2, 1, 4], &[o[0], 0, o[2]])] { av[o[1]] } else { bv }).collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("c", Tensor::from_bool(&[2, 1, 4], cv.clone())), ("a", a.clone()), ("b", bb.clone())], &[], p);
            exact(&o["y"], dt, &so, &want, &format!("where {dt}"));
        }
    }
}

// ---------------------------------------------------------------- cast

fn cast_graph(from: DType, n: usize, to: DType) -> Graph {
    graph(|b| {
        let x = b.input("x", from, s(&[n])).unwrap();
        b.cast(x, to).unwrap()
    })
}

#[test]
fn cast_float_to_int_truncates_toward_zero() {
    let xs = vec![-2.75, -0.5, 0.5, 2.75, 3.0, -3.0, -0.0, 1e10, 123456.9];
    for p in PRECISIONS {
        let o = run_ok(&cast_graph(F32, 9, I64), &[("x", ftv(&[9], xs.clone()))], &[], p);
        ints(&o["y"], I64, &[9], &[-2, 0, 0, 2, 3, -3, 0, 10_000_000_000, 123456], "f32 → i64");
        let o = run_ok(&cast_graph(F32, 8, I32), &[("x", ftv(&[8], xs[..8].iter().map(|v| v.min(1e9)).collect()))], &[], p);
        ints(&o["y"], I32, &[8], &[-2, 0, 0, 2, 3, -3, 0, 1_000_000_000], "f32 → i32");
        let o = run_ok(&cast_graph(F16, 3, I64), &[("x", Tensor::from_f64(F16, &[3], vec![-65504.0, 1.5, -1.5]))], &[], p);
        ints(&o["y"], I64, &[3], &[-65504, 1, -1], "f16 → i64");
    }
}

#[test]
fn cast_int_to_int_wraps() {
    let two31 = 1i64 << 31;
    let o =
        run_ok(&cast_graph(I64, 6, I32), &[("x", Tensor::from_i64(I64, &[6], vec![two31, -two31 - 1, (1 << 32) + 5, -1, 7, i64::MIN]))], &[], Precision::F64);
    ints(&o["y"], I32, &[6], &[-two31, two31 - 1, 5, -1, 7, 0], "i64 → i32 wraps modulo 2^32");
    let o = run_ok(&cast_graph(I32, 2, I64), &[("x", Tensor::from_i64(I32, &[2], vec![-two31, two31 - 1]))], &[], Precision::F64);
    ints(&o["y"], I64, &[2], &[-two31, two31 - 1], "i32 → i64");
}

#[test]
fn cast_to_f16_rounds_to_nearest_even() {
    let u = 2f64.powi(-10); // f16 ulp at [1, 2)
    let sub = 2f64.powi(-24); // smallest f16 subnormal
    let cases: Vec<(f64, f64)> = vec![
        (1.0 + u / 2.0, 1.0),                       // tie → even (down)
        (1.0 + 3.0 * u / 2.0, 1.0 + 2.0 * u),       // tie → even (up)
        (1.0 + u / 2.0 + 2f64.powi(-23), 1.0 + u),  // just above the tie (f32-exact)
        (1.0 + u / 2.0 - 2f64.powi(-23), 1.0),      // just below the tie
        (-(1.0 + 3.0 * u / 2.0), -(1.0 + 2.0 * u)), // sign symmetric
        (65504.0, 65504.0),                         // f16 max
        (65519.0, 65504.0),                         // below the overflow threshold
        (65520.0, f64::INFINITY),                   // overflow threshold rounds to ∞
        (1e-8, 0.0),                                // below half the smallest subnormal
        (sub / 2.0, 0.0),                           // tie between 0 and 2^-24 → 0 (even)
        (0.75 * sub, sub),                          // rounds to the smallest subnormal
        (-1.5 * sub, -2.0 * sub),                   // subnormal tie → even
        (0.1, 0.0999755859375),                     // hand-checked
        (f64::NEG_INFINITY, f64::NEG_INFINITY),
        (f64::NAN, f64::NAN),
    ];
    let n = cases.len();
    let x = ftv(&[n], cases.iter().map(|c| c.0).collect());
    for p in PRECISIONS {
        let o = run_ok(&cast_graph(F32, n, F16), &[("x", x.clone())], &[], p);
        let want: Vec<f64> = cases.iter().map(|c| c.1).collect();
        // 0.1 is not an f32 value: in F32 precision the input is 0.1f32, which
        // rounds to the same f16.
        exact(&o["y"], F16, &[n], &want, &format!("f32 → f16 {p:?}"));
    }
    // In F64 precision an f32 value keeps f64 precision: the bits below f32
    // precision must still break the tie (no double rounding through f32).
    let x = ftv(&[2], vec![1.0 + u / 2.0 + 2f64.powi(-40), -(1.0 + u / 2.0 + 2f64.powi(-40))]);
    let o = run_ok(&cast_graph(F32, 2, F16), &[("x", x)], &[], Precision::F64);
    exact(&o["y"], F16, &[2], &[1.0 + u, -(1.0 + u)], "f64-precision value → f16, single rounding");
}

#[test]
fn cast_to_bf16_rounds_to_nearest_even() {
    let u = 2f64.powi(-7); // bf16 ulp at [1, 2)
    let cases: Vec<(f64, f64)> = vec![
        (1.0 + u / 2.0, 1.0),                      // tie → even (down)
        (1.0 + 3.0 * u / 2.0, 1.0 + 2.0 * u),      // tie → even (up)
        (1.0 + u / 2.0 + 2f64.powi(-23), 1.0 + u), // just above the tie (f32-exact)
        (1.0 + u / 2.0 - 2f64.powi(-23), 1.0),     // just below the tie
        (3.0 + 2f64.powi(-22), 3.0),
        (f32::MAX as f64, f64::INFINITY),                                                 // above bf16 max + half ulp
        ((2.0 - 2f64.powi(-7)) * 2f64.powi(127), (2.0 - 2f64.powi(-7)) * 2f64.powi(127)), // bf16 max
        (0.1, 0.10009765625),                                                             // hand-checked
        (f64::NAN, f64::NAN),
    ];
    let n = cases.len();
    let x = ftv(&[n], cases.iter().map(|c| c.0).collect());
    let want: Vec<f64> = cases.iter().map(|c| c.1).collect();
    for p in PRECISIONS {
        let o = run_ok(&cast_graph(F32, n, BF16), &[("x", x.clone())], &[], p);
        exact(&o["y"], BF16, &[n], &want, &format!("f32 → bf16 {p:?}"));
    }
    let x = ftv(&[1], vec![1.0 + u / 2.0 + 2f64.powi(-40)]);
    let o = run_ok(&cast_graph(F32, 1, BF16), &[("x", x)], &[], Precision::F64);
    exact(&o["y"], BF16, &[1], &[1.0 + u], "f64-precision value → bf16, single rounding");
    // f16 → bf16 and bf16 → f16 round too: 1 + 2^-10 is f16-exact, not bf16.
    let o =
        run_ok(&cast_graph(F16, 2, BF16), &[("x", Tensor::from_f64(F16, &[2], vec![1.0 + 2f64.powi(-10), 1.0 + 3.0 * 2f64.powi(-8)]))], &[], Precision::F32);
    exact(&o["y"], BF16, &[2], &[1.0, 1.0 + 2f64.powi(-6)], "f16 → bf16");
}

#[test]
fn f16_and_bf16_rounding_is_correct_at_and_near_every_tie() {
    // For many adjacent pairs (h, h⁺) of f16/bf16 values, the midpoint
    // itself and points just beside it (±1 f64 ulp, ±2^-40 and ±2^-25
    // relative: below f32 precision and just above it) must round like the
    // independent reference, both signs, in both precisions. This covers
    // the double-rounding and bit-truncation pitfalls of f64 → f16/bf16.
    use super::tensor::round_to;
    let nudges = |m: f64| {
        let up = f64::from_bits(m.to_bits() + 1) - m;
        [0.0, up, -up, m * 2f64.powi(-40), -m * 2f64.powi(-40), m * 2f64.powi(-25), -m * 2f64.powi(-25)]
    };
    let mut checked = 0;
    for (dt, top, decode) in
        [(F16, 0x7bffu16, (|b: u16| half::f16::from_bits(b).to_f64()) as fn(u16) -> f64), (BF16, 0x7f7fu16, |b: u16| half::bf16::from_bits(b).to_f64())]
    {
        let reference = |v: f64| if dt == F16 { f16r(v) } else { bf16r(v) };
        for bits in (0..top).step_by(3).chain([top - 1]) {
            let (h, h1) = (decode(bits), decode(bits + 1));
            let mid = (h + h1) / 2.0; // exact in f64
            for d in nudges(mid) {
                for v in [mid + d, -(mid + d)] {
                    for keep in [true, false] {
                        let got = round_to(dt, v, keep);
                        let want = reference(v);
                        assert!(got == want, "{dt} rounding of {v:e} ({:#x}): got {got:e}, want {want:e}", v.to_bits());
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 100_000);
    // Overflow thresholds: just below rounds to max, at or above to ∞.
    assert_eq!(round_to(F16, 65519.999, true), 65504.0);
    assert_eq!(round_to(F16, 65520.0, true), f64::INFINITY);
    assert_eq!(round_to(F16, -1e300, true), f64::NEG_INFINITY);
    let bmax = (2.0 - 2f64.powi(-7)) * 2f64.powi(127);
    let bthr = (2.0 - 2f64.powi(-8)) * 2f64.powi(127);
    assert_eq!(round_to(BF16, f64::from_bits(bthr.to_bits() - 1), true), bmax);
    assert_eq!(round_to(BF16, bthr, true), f64::INFINITY);
    assert_eq!(round_to(BF16, 1e39, true), f64::INFINITY);
    assert_eq!(round_to(BF16, 1e300, false), f64::INFINITY);
    // Signed zeros and tiny values.
    assert!(round_to(F16, -1e-300, true) == 0.0 && round_to(F16, -1e-300, true).is_sign_negative());
    assert_eq!(round_to(BF16, 2f64.powi(-134), true), 0.0); // tie with the smallest subnormal: even (0)
    assert_eq!(round_to(BF16, 2f64.powi(-134) * 1.5, true), 2f64.powi(-133));
}

#[test]
fn cast_between_floats_and_from_ints() {
    // f16 → f32 is exact; i64 → f32 rounds in F32 precision only; i64 → f16 always.
    let o = run_ok(&cast_graph(F16, 2, F32), &[("x", Tensor::from_f64(F16, &[2], vec![0.1, -65504.0]))], &[], Precision::F32);
    exact(&o["y"], F32, &[2], &[f16r(0.1), -65504.0], "f16 → f32");
    let big = vec![16777217, -16777219, 3];
    let o = run_ok(&cast_graph(I64, 3, F32), &[("x", Tensor::from_i64(I64, &[3], big.clone()))], &[], Precision::F32);
    exact(&o["y"], F32, &[3], &[16777216.0, -16777220.0, 3.0], "i64 → f32 in F32 (ties to even)");
    let o = run_ok(&cast_graph(I64, 3, F32), &[("x", Tensor::from_i64(I64, &[3], big))], &[], Precision::F64);
    exact(&o["y"], F32, &[3], &[16777217.0, -16777219.0, 3.0], "i64 → f32 in F64 keeps precision");
    for p in PRECISIONS {
        let o = run_ok(&cast_graph(I32, 3, F16), &[("x", Tensor::from_i64(I32, &[3], vec![2049, 2051, 70000]))], &[], p);
        exact(&o["y"], F16, &[3], &[2048.0, 2052.0, f64::INFINITY], "i32 → f16");
    }
}

#[test]
fn cast_bool_number_both_ways() {
    for p in PRECISIONS {
        let bv = Tensor::from_bool(&[3], vec![true, false, true]);
        let o = run_ok(&cast_graph(BOOL, 3, F32), &[("x", bv.clone())], &[], p);
        exact(&o["y"], F32, &[3], &[1.0, 0.0, 1.0], "bool → f32");
        let o = run_ok(&cast_graph(BOOL, 3, BF16), &[("x", bv.clone())], &[], p);
        exact(&o["y"], BF16, &[3], &[1.0, 0.0, 1.0], "bool → bf16");
        let o = run_ok(&cast_graph(BOOL, 3, I64), &[("x", bv.clone())], &[], p);
        ints(&o["y"], I64, &[3], &[1, 0, 1], "bool → i64");
        let o = run_ok(&cast_graph(BOOL, 3, I32), &[("x", bv.clone())], &[], p);
        ints(&o["y"], I32, &[3], &[1, 0, 1], "bool → i32");
        let o = run_ok(&cast_graph(BOOL, 3, BOOL), &[("x", bv)], &[], p);
        bools(&o["y"], &[3], &[true, false, true], "bool → bool");
        let xs = vec![0.0, -0.0, 0.5, -1e-30, f64::NAN, f64::NEG_INFINITY];
        let o = run_ok(&cast_graph(F32, 6, BOOL), &[("x", ftv(&[6], xs))], &[], p);
        // x != 0: ±0 false; NaN, tiny and infinite values true. (-1e-30 is a
        // nonzero f32 (subnormal-free: 1e-30 > f32 min normal).)
        bools(&o["y"], &[6], &[false, false, true, true, true, true], "f32 → bool");
        let o = run_ok(&cast_graph(I64, 4, BOOL), &[("x", Tensor::from_i64(I64, &[4], vec![0, 1, -1, i64::MIN]))], &[], p);
        bools(&o["y"], &[4], &[false, true, true, true], "i64 → bool");
    }
}

// ---------------------------------------------------------------- reduce

/// Reference reduction: for each output index, visit every input index and
/// keep those matching on the non-reduced axes.
fn reduce_ref(op: ReduceOp, x: &[f64], shape: &[usize], axes: &[usize]) -> Vec<f64> {
    let kshape: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    indices(&kshape)
        .iter()
        .map(|o| {
            let sel: Vec<f64> =
                indices(shape).iter().filter(|ix| ix.iter().enumerate().all(|(j, &v)| axes.contains(&j) || v == o[j])).map(|ix| x[off(shape, ix)]).collect();
            match op {
                ReduceOp::Sum => sel.iter().sum(),
                ReduceOp::Mean => sel.iter().sum::<f64>() / sel.len() as f64,
                ReduceOp::Max => sel.iter().copied().fold(f64::MIN, |a, b| if b > a { b } else { a }),
                ReduceOp::Min => sel.iter().copied().fold(f64::MAX, |a, b| if b < a { b } else { a }),
            }
        })
        .collect()
}

#[test]
fn reduce_every_op_multi_axis_with_and_without_keep_dims() {
    let shape = [2usize, 3, 4, 5];
    let xv = vals(120, 11);
    // Axes given as [0, -2] (normalised to [0, 2]) and [3, 1] (sorted to [1, 3]).
    for (axes_in, axes) in [(vec![0isize, -2], vec![0usize, 2]), (vec![3, 1], vec![1, 3])] {
        for op in ReduceOp::ALL {
            for keep in [false, true] {
                let g = graph(|b| {
                    let x = b.input("x", F32, s(&shape)).unwrap();
                    b.reduce(op, x, &axes_in, keep).unwrap()
                });
                let want = reduce_ref(op, &xv, &shape, &axes);
                let oshape: Vec<usize> = shape.iter().enumerate().filter_map(|(i, &d)| if axes.contains(&i) { keep.then_some(1) } else { Some(d) }).collect();
                for p in PRECISIONS {
                    let o = run_ok(&g, &[("x", ftv(&shape, xv.clone()))], &[], p);
                    check(&o["y"], &oshape, &want, p, &format!("{} over {axes:?} keep={keep}", op.name()));
                }
            }
        }
    }
}

#[test]
fn reduce_all_axes_to_scalar_and_hand_values() {
    let xv = vec![1.0, -2.0, 3.5, 4.0, 0.5, -6.0];
    let g = |op, keep| {
        graph(|b| {
            let x = b.input("x", F32, s(&[2, 1, 3])).unwrap();
            b.reduce(op, x, &[0, 1, 2], keep).unwrap()
        })
    };
    for p in PRECISIONS {
        for (op, v) in [(ReduceOp::Sum, 1.0), (ReduceOp::Mean, 1.0 / 6.0), (ReduceOp::Max, 4.0), (ReduceOp::Min, -6.0)] {
            let o = run_ok(&g(op, false), &[("x", ftv(&[2, 1, 3], xv.clone()))], &[], p);
            let v = if p == Precision::F32 { f32r(v) } else { v };
            exact(&o["y"], F32, &[], &[v], op.name());
            let o = run_ok(&g(op, true), &[("x", ftv(&[2, 1, 3], xv.clone()))], &[], p);
            exact(&o["y"], F32, &[1, 1, 1], &[v], op.name());
        }
    }
}

#[test]
fn reduce_integers_i32_wraps_i64_exact() {
    let mx = i32::MAX as i64;
    let g = |dt, op| {
        graph(|b| {
            let x = b.input("x", dt, s(&[2, 3])).unwrap();
            b.reduce(op, x, &[1], false).unwrap()
        })
    };
    let x32 = Tensor::from_i64(I32, &[2, 3], vec![mx, 1, 0, -5, 7, -2]);
    let o = run_ok(&g(I32, ReduceOp::Sum), &[("x", x32.clone())], &[], Precision::F64);
    ints(&o["y"], I32, &[2], &[i32::MIN as i64, 0], "i32 sum wraps");
    let o = run_ok(&g(I32, ReduceOp::Max), &[("x", x32.clone())], &[], Precision::F64);
    ints(&o["y"], I32, &[2], &[mx, 7], "i32 max");
    let o = run_ok(&g(I32, ReduceOp::Min), &[("x", x32)], &[], Precision::F64);
    ints(&o["y"], I32, &[2], &[0, -5], "i32 min");
    let big = 1i64 << 53;
    let x64 = Tensor::from_i64(I64, &[2, 3], vec![big, 1, 1, i64::MAX, 1, 0]);
    let o = run_ok(&g(I64, ReduceOp::Sum), &[("x", x64.clone())], &[], Precision::F64);
    ints(&o["y"], I64, &[2], &[big + 2, i64::MIN], "i64 sum exact past 2^53, wraps at 2^63");
    let o = run_ok(&g(I64, ReduceOp::Max), &[("x", x64)], &[], Precision::F64);
    ints(&o["y"], I64, &[2], &[big, i64::MAX], "i64 max");
}

// ---------------------------------------------------------------- softmax / norms

#[test]
fn softmax_middle_axis_rank3() {
    let shape = [2usize, 5, 3];
    let xv = vals(30, 13);
    // y[a, k, c] = e^x[a,k,c] / Σ_k' e^x[a,k',c] (no max shift: small inputs).
    let want: Vec<f64> = indices(&shape)
        .iter()
        .map(|ix| {
            let z: f64 = (0..5).map(|k| xv[off(&shape, &[ix[0], k, ix[2]])].exp()).sum();
            xv[off(&shape, ix)].exp() / z
        })
        .collect();
    for axis in [1isize, -2] {
        let g = graph(|b| {
            let x = b.input("x", F32, s(&shape)).unwrap();
            b.softmax(x, axis).unwrap()
        });
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&shape, xv.clone()))], &[], p);
            check(&o["y"], &shape, &want, p, "softmax axis 1");
        }
    }
}

#[test]
fn softmax_large_and_infinite_inputs() {
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[2, 3])).unwrap();
        b.softmax(x, -1).unwrap()
    });
    let e = std::f64::consts::E;
    let z = 1.0 + 1.0 / e + 1.0 / (e * e);
    // Row 0: [1000, 1001, 1002] (e^1000 overflows without the max shift).
    // Row 1: [-inf, 0, 0] → [0, 1/2, 1/2].
    let want = vec![1.0 / (e * e * z), 1.0 / (e * z), 1.0 / z, 0.0, 0.5, 0.5];
    for p in PRECISIONS {
        let o = run_ok(&g, &[("x", ftv(&[2, 3], vec![1000.0, 1001.0, 1002.0, f64::NEG_INFINITY, 0.0, 0.0]))], &[], p);
        check(&o["y"], &[2, 3], &want, p, "stable softmax");
    }
}

#[test]
fn layer_norm_every_affine_variant() {
    let shape = [2usize, 3, 5];
    let (xv, wv, bv) = (vals(30, 17), vals(5, 18), vals(5, 19));
    let eps = 1e-5;
    // Per row: mean = Σx/5, var = Σx²/5 - mean² (biased, a different formula).
    let norm: Vec<f64> = indices(&shape)
        .iter()
        .map(|ix| {
            let row: Vec<f64> = (0..5).map(|k| xv[off(&shape, &[ix[0], ix[1], k])]).collect();
            let mean = row.iter().sum::<f64>() / 5.0;
            let var = row.iter().map(|v| v * v).sum::<f64>() / 5.0 - mean * mean;
            (xv[off(&shape, ix)] - mean) / (var + eps).sqrt()
        })
        .collect();
    for (use_w, use_b) in [(false, false), (true, false), (false, true), (true, true)] {
        let g = graph(|b| {
            let x = b.input("x", F32, s(&shape)).unwrap();
            let w = use_w.then(|| b.param("w", F32, s(&[5])).unwrap());
            let bb = use_b.then(|| b.param("b", F32, s(&[5])).unwrap());
            b.layer_norm(x, w, bb, eps).unwrap()
        });
        let want: Vec<f64> = norm
            .iter()
            .enumerate()
            .map(|(f, &y)| {
                let k = f % 5;
                y * if use_w { wv[k] } else { 1.0 } + if use_b { bv[k] } else { 0.0 }
            })
            .collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&shape, xv.clone()))], &[("w", ftv(&[5], wv.clone())), ("b", ftv(&[5], bv.clone()))], p);
            let t = if p == Precision::F64 { 1e-11 } else { tol(p) };
            close(&o["y"], &shape, &want, t, &format!("layer_norm w={use_w} b={use_b} {p:?}"));
        }
    }
    // Hand-checked: [1, 2, 3, 4] with eps 0 → mean 2.5, var 1.25.
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[4])).unwrap();
        b.layer_norm(x, None, None, 0.0).unwrap()
    });
    let o = run_ok(&g, &[("x", ftv(&[4], vec![1.0, 2.0, 3.0, 4.0]))], &[], Precision::F64);
    let r = 1.25f64.sqrt();
    close(&o["y"], &[4], &[-1.5 / r, -0.5 / r, 0.5 / r, 1.5 / r], 1e-15, "layer_norm hand values");
}

#[test]
fn rms_norm_with_and_without_weight() {
    let shape = [3usize, 4];
    let (xv, wv) = (vals(12, 23), vals(4, 24));
    let eps = 1e-6;
    for use_w in [false, true] {
        let g = graph(|b| {
            let x = b.input("x", F32, s(&shape)).unwrap();
            let w = use_w.then(|| b.param("w", F32, s(&[4])).unwrap());
            b.rms_norm(x, w, eps).unwrap()
        });
        let want: Vec<f64> = indices(&shape)
            .iter()
            .map(|ix| {
                let ms = (0..4).map(|k| xv[off(&shape, &[ix[0], k])].powi(2)).sum::<f64>() / 4.0;
                xv[off(&shape, ix)] / (ms + eps).sqrt() * if use_w { wv[ix[1]] } else { 1.0 }
            })
            .collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&shape, xv.clone()))], &[("w", ftv(&[4], wv.clone()))], p);
            check(&o["y"], &shape, &want, p, &format!("rms_norm w={use_w}"));
        }
    }
    // Hand-checked: [3, 4] with eps 0 → rms = √12.5.
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[1, 2])).unwrap();
        b.rms_norm(x, None, 0.0).unwrap()
    });
    let o = run_ok(&g, &[("x", ftv(&[1, 2], vec![3.0, 4.0]))], &[], Precision::F64);
    close(&o["y"], &[1, 2], &[3.0 / 12.5f64.sqrt(), 4.0 / 12.5f64.sqrt()], 1e-15, "rms hand values");
}

/// Group norm by hand: for each (n, g), gather the elements whose channel
/// `c` has `c / (C/G) == g`, take their mean and biased variance.
fn group_norm_ref(x: &[f64], shape: &[usize], groups: usize, eps: f64, wb: Option<(&[f64], &[f64])>) -> Vec<f64> {
    let c = shape[1];
    let cg = c / groups;
    let all = indices(shape);
    let stats = |n: usize, g: usize| {
        let sel: Vec<f64> = all.iter().filter(|ix| ix[0] == n && ix[1] / cg == g).map(|ix| x[off(shape, ix)]).collect();
        let m = sel.iter().sum::<f64>() / sel.len() as f64;
        let v = sel.iter().map(|a| (a - m).powi(2)).sum::<f64>() / sel.len() as f64;
        (m, v)
    };
    all.iter()
        .map(|ix| {
            let (m, v) = stats(ix[0], ix[1] / cg);
            let y = (x[off(shape, ix)] - m) / (v + eps).sqrt();
            match wb {
                Some((w, b)) => y * w[ix[1]] + b[ix[1]],
                None => y,
            }
        })
        .collect()
}

#[test]
fn group_norm_rank3_rank4_rank5_affine_and_not() {
    let cases: [(&[usize], usize, bool); 5] = [
        (&[2, 6, 3, 2], 3, true),
        (&[2, 4, 5], 2, false),
        (&[2, 4, 5], 4, true), // one channel per group (instance norm)
        (&[1, 4, 2, 2, 3], 2, true),
        (&[3, 2], 1, false), // no spatial dims
    ];
    for (shape, groups, affine) in cases {
        let c = shape[1];
        let (xv, wv, bv) = (vals(numel(shape), 29), vals(c, 30), vals(c, 31));
        let eps = 1e-5;
        let g = graph(|b| {
            let x = b.input("x", F32, s(shape)).unwrap();
            let wb = affine.then(|| (b.param("w", F32, s(&[c])).unwrap(), b.param("b", F32, s(&[c])).unwrap()));
            b.group_norm(x, wb, groups, eps).unwrap()
        });
        let want = group_norm_ref(&xv, shape, groups, eps, affine.then_some((&wv[..], &bv[..])));
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(shape, xv.clone()))], &[("w", ftv(&[c], wv.clone())), ("b", ftv(&[c], bv.clone()))], p);
            let t = if p == Precision::F64 { 1e-11 } else { tol(p) };
            close(&o["y"], shape, &want, t, &format!("group_norm {shape:?} g={groups} affine={affine} {p:?}"));
        }
    }
}

// ---------------------------------------------------------------- contractions

/// Batched matmul by explicit loops over output index tuples.
fn matmul_ref(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<usize>, Vec<f64>) {
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    let ba = &sa[..ra - 2];
    let bb = &sb[..rb - 2];
    let nb = ba.len().max(bb.len());
    let batch: Vec<usize> = (0..nb)
        .map(|i| {
            let da = if i + ba.len() >= nb { ba[i + ba.len() - nb] } else { 1 };
            let db = if i + bb.len() >= nb { bb[i + bb.len() - nb] } else { 1 };
            da.max(db)
        })
        .collect();
    let mut oshape = batch.clone();
    oshape.extend([m, n]);
    let y = indices(&oshape)
        .iter()
        .map(|o| {
            let bix = &o[..nb];
            let (i, j) = (o[nb], o[nb + 1]);
            (0..k)
                .map(|kk| {
                    let mut ia: Vec<usize> = bix[nb - ba.len()..].iter().zip(ba).map(|(&v, &d)| if d == 1 { 0 } else { v }).collect();
                    ia.extend([i, kk]);
                    let mut ib: Vec<usize> = bix[nb - bb.len()..].iter().zip(bb).map(|(&v, &d)| if d == 1 { 0 } else { v }).collect();
                    ib.extend([kk, j]);
                    a[off(sa, &ia)] * b[off(sb, &ib)]
                })
                .sum()
        })
        .collect();
    (oshape, y)
}

#[test]
fn matmul_batched_broadcast_shapes() {
    let cases: [(&[usize], &[usize]); 4] = [(&[3, 4], &[4, 2]), (&[2, 1, 3, 4], &[3, 4, 5]), (&[5, 3], &[2, 2, 3, 4]), (&[2, 3, 1, 4], &[1, 4, 2])];
    for (i, (sa, sb)) in cases.into_iter().enumerate() {
        let (av, bv) = (vals(numel(sa), 40 + i as u64), vals(numel(sb), 50 + i as u64));
        let g = graph(|b| {
            let x = b.input("a", F32, s(sa)).unwrap();
            let y = b.input("b", F32, s(sb)).unwrap();
            b.matmul(x, y).unwrap()
        });
        let (oshape, want) = matmul_ref(&av, sa, &bv, sb);
        for p in PRECISIONS {
            let o = run_ok(&g, &[("a", ftv(sa, av.clone())), ("b", ftv(sb, bv.clone()))], &[], p);
            check(&o["y"], &oshape, &want, p, &format!("matmul {sa:?}·{sb:?}"));
        }
    }
    // Hand-checked 2×3 · 3×2.
    let g = graph(|b| {
        let x = b.input("a", F32, s(&[2, 3])).unwrap();
        let y = b.input("b", F32, s(&[3, 2])).unwrap();
        b.matmul(x, y).unwrap()
    });
    let o =
        run_ok(&g, &[("a", ftv(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])), ("b", ftv(&[3, 2], vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0]))], &[], Precision::F32);
    exact(&o["y"], F32, &[2, 2], &[58.0, 64.0, 139.0, 154.0], "matmul hand values");
}

#[test]
fn linear_rank3_with_and_without_bias() {
    let (sx, sw) = ([2usize, 3, 4], [5usize, 4]);
    let (xv, wv, bv) = (vals(24, 61), vals(20, 62), vals(5, 63));
    for bias in [false, true] {
        let g = graph(|b| {
            let x = b.input("x", F32, s(&sx)).unwrap();
            let w = b.param("w", F32, s(&sw)).unwrap();
            let bb = bias.then(|| b.param("b", F32, s(&[5])).unwrap());
            b.linear(x, w, bb).unwrap()
        });
        // y[i, j, n] = Σ_k x[i, j, k] · w[n, k] + b[n]
        let want: Vec<f64> = indices(&[2, 3, 5])
            .iter()
            .map(|o| (0..4).map(|k| xv[off(&sx, &[o[0], o[1], k])] * wv[off(&sw, &[o[2], k])]).sum::<f64>() + if bias { bv[o[2]] } else { 0.0 })
            .collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&sx, xv.clone()))], &[("w", ftv(&sw, wv.clone())), ("b", ftv(&[5], bv.clone()))], p);
            check(&o["y"], &[2, 3, 5], &want, p, &format!("linear bias={bias}"));
        }
    }
    // Hand-checked: x [1, 2] · w [[3, 4], [5, 6], [-1, 0]]ᵀ + b [0.5, 0, 1].
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[2])).unwrap();
        let w = b.param("w", F32, s(&[3, 2])).unwrap();
        let bb = b.param("b", F32, s(&[3])).unwrap();
        b.linear(x, w, Some(bb)).unwrap()
    });
    let o = run_ok(
        &g,
        &[("x", ftv(&[2], vec![1.0, 2.0]))],
        &[("w", ftv(&[3, 2], vec![3.0, 4.0, 5.0, 6.0, -1.0, 0.0])), ("b", ftv(&[3], vec![0.5, 0.0, 1.0]))],
        Precision::F32,
    );
    exact(&o["y"], F32, &[3], &[11.5, 17.0, 0.0], "linear hand values");
}

struct AttnCase<'a> {
    q: &'a [f64],
    qs: [usize; 4],
    k: &'a [f64],
    ks: [usize; 4],
    v: &'a [f64],
    vs: [usize; 4],
    mask: Option<(&'a [f64], &'a [usize])>,
    scale: Option<f64>,
    causal: bool,
}

/// Attention by hand: for each (b, h, i), list the keys query i may see,
/// score them, softmax over that list, mix the values.
fn attention_ref(c: &AttnCase) -> Vec<f64> {
    let [bn, h, sq, d] = c.qs;
    let (hk, sk, dv) = (c.ks[1], c.ks[2], c.vs[3]);
    let scale = c.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let per_kv = h / hk;
    let mut out = Vec::new();
    for b in 0..bn {
        for hh in 0..h {
            let kh = hh / per_kv;
            for i in 0..sq {
                let visible: Vec<usize> = (0..sk).filter(|&j| !c.causal || (j as i64) <= i as i64 + sk as i64 - sq as i64).collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        let dot: f64 = (0..d).map(|t| c.q[off(&c.qs, &[b, hh, i, t])] * c.k[off(&c.ks, &[b, kh, j, t])]).sum();
                        let m = c.mask.map_or(0.0, |(mv, ms)| mv[bidx(ms, &[b, hh, i, j])]);
                        dot * scale + m
                    })
                    .collect();
                let mx = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let ex: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = ex.iter().sum();
                for t in 0..dv {
                    out.push(visible.iter().zip(&ex).map(|(&j, e)| e / z * c.v[off(&c.vs, &[b, kh, j, t])]).sum());
                }
            }
        }
    }
    out
}

/// Builds and evaluates attention for `c` in both precisions against the
/// reference.
fn check_attention(c: &AttnCase, what: &str) {
    let g = graph(|b| {
        let q = b.input("q", F32, s(&c.qs)).unwrap();
        let k = b.input("k", F32, s(&c.ks)).unwrap();
        let v = b.input("v", F32, s(&c.vs)).unwrap();
        let m = c.mask.map(|(_, ms)| b.input("m", F32, s(ms)).unwrap());
        b.attention(q, k, v, m, c.scale, c.causal).unwrap()
    });
    let mut ins = vec![("q", ftv(&c.qs, c.q.to_vec())), ("k", ftv(&c.ks, c.k.to_vec())), ("v", ftv(&c.vs, c.v.to_vec()))];
    if let Some((mv, ms)) = c.mask {
        ins.push(("m", ftv(ms, mv.to_vec())));
    }
    let want = attention_ref(c);
    let oshape = [c.qs[0], c.qs[1], c.qs[2], c.vs[3]];
    for p in PRECISIONS {
        let o = run_ok(&g, &ins, &[], p);
        check(&o["y"], &oshape, &want, p, what);
    }
}

#[test]
fn attention_mha_default_scale() {
    let (qs, ks, vs) = ([2, 3, 4, 6], [2, 3, 5, 6], [2, 3, 5, 3]);
    let (q, k, v) = (vals(144, 71), vals(180, 72), vals(90, 73));
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: None, scale: None, causal: false }, "mha");
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: None, scale: Some(0.3), causal: false }, "mha scale 0.3");
}

#[test]
fn attention_hand_values_single_query() {
    // q = [1, 0], keys [1, 0] and [0, 1], scale 1: scores [1, 0] →
    // p = [e/(e+1), 1/(e+1)]; values [10] and [20].
    let e = std::f64::consts::E;
    let g = graph(|b| {
        let q = b.input("q", F32, s(&[1, 1, 1, 2])).unwrap();
        let k = b.input("k", F32, s(&[1, 1, 2, 2])).unwrap();
        let v = b.input("v", F32, s(&[1, 1, 2, 1])).unwrap();
        b.attention(q, k, v, None, Some(1.0), false).unwrap()
    });
    let ins = [("q", ftv(&[1, 1, 1, 2], vec![1.0, 0.0])), ("k", ftv(&[1, 1, 2, 2], vec![1.0, 0.0, 0.0, 1.0])), ("v", ftv(&[1, 1, 2, 1], vec![10.0, 20.0]))];
    let o = run_ok(&g, &ins, &[], Precision::F64);
    close(&o["y"], &[1, 1, 1, 1], &[(10.0 * e + 20.0) / (e + 1.0)], 1e-14, "attention hand value");
}

#[test]
fn attention_gqa_8_query_heads_2_kv_heads() {
    let (qs, ks, vs) = ([2, 8, 3, 4], [2, 2, 5, 4], [2, 2, 5, 3]);
    let (q, k, v) = (vals(192, 81), vals(80, 82), vals(60, 83));
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: None, scale: None, causal: false }, "gqa 8/2");
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: None, scale: None, causal: true }, "gqa 8/2 causal");
    // Cross-check: GQA equals MHA with each kv head repeated 4 times
    // (query head h reads kv head h / 4).
    let rep = |x: &[f64], sh: [usize; 4]| -> Vec<f64> {
        let full = [sh[0], 8, sh[2], sh[3]];
        indices(&full).iter().map(|ix| x[off(&sh, &[ix[0], ix[1] / 4, ix[2], ix[3]])]).collect()
    };
    let (k8, v8) = (rep(&k, ks), rep(&v, vs));
    let mut b = Builder::new();
    let qi = b.input("q", F32, s(&qs)).unwrap();
    let ki = b.input("k", F32, s(&ks)).unwrap();
    let vi = b.input("v", F32, s(&vs)).unwrap();
    let k8i = b.input("k8", F32, s(&[2, 8, 5, 4])).unwrap();
    let v8i = b.input("v8", F32, s(&[2, 8, 5, 3])).unwrap();
    let gqa = b.attention(qi, ki, vi, None, None, false).unwrap();
    let mha = b.attention(qi, k8i, v8i, None, None, false).unwrap();
    b.output("gqa", gqa);
    b.output("mha", mha);
    let g = b.finish().unwrap();
    let o = run_ok(
        &g,
        &[("q", ftv(&qs, q)), ("k", ftv(&ks, k)), ("v", ftv(&vs, v)), ("k8", ftv(&[2, 8, 5, 4], k8)), ("v8", ftv(&[2, 8, 5, 3], v8))],
        &[],
        Precision::F64,
    );
    assert_eq!(o["gqa"], o["mha"], "GQA must equal MHA over repeated kv heads (exact)");
}

#[test]
fn attention_causal_bottom_right_aligned() {
    // Sq = 2 < Sk = 5: query i sees keys j ≤ i + 3.
    let (qs, ks, vs) = ([1, 2, 2, 3], [1, 2, 5, 3], [1, 2, 5, 4]);
    let (q, k, v) = (vals(12, 91), vals(30, 92), vals(40, 93));
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: None, scale: None, causal: true }, "causal sq<sk");
    // Independent of the reference: changing key/value 4 must not change
    // query 0's output, and must change query 1's.
    let g = graph(|b| {
        let q = b.input("q", F32, s(&qs)).unwrap();
        let k = b.input("k", F32, s(&ks)).unwrap();
        let v = b.input("v", F32, s(&vs)).unwrap();
        b.attention(q, k, v, None, None, true).unwrap()
    });
    let run_kv = |k: &[f64], v: &[f64]| {
        run_ok(&g, &[("q", ftv(&qs, q.clone())), ("k", ftv(&ks, k.to_vec())), ("v", ftv(&vs, v.to_vec()))], &[], Precision::F64)["y"].clone()
    };
    let base = run_kv(&k, &v);
    let (mut k2, mut v2) = (k.clone(), v.clone());
    for h in 0..2 {
        for t in 0..3 {
            k2[off(&ks, &[0, h, 4, t])] += 1.0;
        }
        for t in 0..4 {
            v2[off(&vs, &[0, h, 4, t])] += 5.0;
        }
    }
    let moved = run_kv(&k2, &v2);
    let (bv, mv) = (base.floats().unwrap(), moved.floats().unwrap());
    for h in 0..2 {
        for t in 0..4 {
            let i0 = off(&[1, 2, 2, 4], &[0, h, 0, t]);
            let i1 = off(&[1, 2, 2, 4], &[0, h, 1, t]);
            assert_eq!(bv[i0], mv[i0], "query 0 must not see key 4");
            assert_ne!(bv[i1], mv[i1], "query 1 sees key 4");
        }
    }
    // Sq = Sk: the first query sees only key 0, so its output is v[0] exactly.
    let (qs, ks, vs) = ([1, 1, 4, 2], [1, 1, 4, 2], [1, 1, 4, 3]);
    let (q, k, v) = (vals(8, 94), vals(8, 95), vals(12, 96));
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: None, scale: None, causal: true }, "causal square");
    let g = graph(|b| {
        let qi = b.input("q", F32, s(&qs)).unwrap();
        let ki = b.input("k", F32, s(&ks)).unwrap();
        let vi = b.input("v", F32, s(&vs)).unwrap();
        b.attention(qi, ki, vi, None, None, true).unwrap()
    });
    let o = run_ok(&g, &[("q", ftv(&qs, q)), ("k", ftv(&ks, k)), ("v", ftv(&vs, v.clone()))], &[], Precision::F64);
    assert_eq!(o["y"].floats().unwrap()[..3], v[..3], "first causal row is v[0]");
}

#[test]
fn attention_additive_mask_broadcast_scale_and_causal() {
    let (qs, ks, vs) = ([2, 4, 3, 4], [2, 2, 5, 4], [2, 2, 5, 2]);
    let (q, k, v) = (vals(96, 101), vals(80, 102), vals(40, 103));
    // [Sq, Sk] mask broadcast over batch and heads.
    let m2 = vals(15, 104);
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: Some((&m2, &[3, 5])), scale: Some(0.7), causal: false }, "mask [Sq,Sk]");
    // [B, 1, 1, Sk] key-padding mask with -inf for padded keys.
    let mut mp = vec![0.0; 10];
    mp[4] = f64::NEG_INFINITY; // batch 0: key 4 padded
    mp[5 + 1] = f64::NEG_INFINITY; // batch 1: keys 1 and 3 padded
    mp[5 + 3] = f64::NEG_INFINITY;
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: Some((&mp, &[2, 1, 1, 5])), scale: None, causal: false }, "padding mask");
    // Full [B, H, Sq, Sk] mask together with causal (Sq = 3 < Sk = 5).
    let mf = vals(120, 105);
    check_attention(&AttnCase { q: &q, qs, k: &k, ks, v: &v, vs, mask: Some((&mf, &[2, 4, 3, 5])), scale: Some(0.25), causal: true }, "full mask + causal");
}

/// Convolution by the direct formula: each output position sums over input
/// channels of its group and kernel offsets, skipping padded positions.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f64],
    xs: &[usize],
    w: &[f64],
    ws: &[usize],
    b: Option<&[f64]>,
    stride: &[usize],
    pad: &[usize],
    dil: &[usize],
    groups: usize,
) -> (Vec<usize>, Vec<f64>) {
    let sp = xs.len() - 2;
    let (n, cout, cin_g) = (xs[0], ws[0], ws[1]);
    let mut oshape = vec![n, cout];
    for i in 0..sp {
        oshape.push((xs[2 + i] + 2 * pad[i] - dil[i] * (ws[2 + i] - 1) - 1) / stride[i] + 1);
    }
    let y = indices(&oshape)
        .iter()
        .map(|o| {
            let g = o[1] / (cout / groups);
            let mut acc = b.map_or(0.0, |b| b[o[1]]);
            for c in 0..cin_g {
                for kk in indices(&ws[2..]) {
                    let mut xi = vec![o[0], g * cin_g + c];
                    let inside = (0..sp).all(|i| {
                        let coord = (o[2 + i] * stride[i] + kk[i] * dil[i]) as i64 - pad[i] as i64;
                        xi.push(coord.max(0) as usize);
                        coord >= 0 && (coord as usize) < xs[2 + i]
                    });
                    if inside {
                        let mut wi = vec![o[1], c];
                        wi.extend(&kk);
                        acc += x[off(xs, &xi)] * w[off(ws, &wi)];
                    }
                }
            }
            acc
        })
        .collect();
    (oshape, y)
}

#[allow(clippy::too_many_arguments)]
fn check_conv(xs: &[usize], ws: &[usize], bias: bool, stride: &[usize], pad: &[usize], dil: &[usize], groups: usize, seed: u64) {
    let (xv, wv, bv) = (vals(numel(xs), seed), vals(numel(ws), seed + 1), vals(ws[0], seed + 2));
    let g = graph(|b| {
        let x = b.input("x", F32, s(xs)).unwrap();
        let w = b.param("w", F32, s(ws)).unwrap();
        let bb = bias.then(|| b.param("b", F32, s(&[ws[0]])).unwrap());
        b.conv(x, w, bb, stride, pad, dil, groups).unwrap()
    });
    let (oshape, want) = conv_ref(&xv, xs, &wv, ws, bias.then_some(&bv[..]), stride, pad, dil, groups);
    // The verifier's inferred shape agrees with the formula.
    let out = g.output("y").unwrap();
    assert_eq!(g.value_type(out).unwrap().shape, s(&oshape), "inferred conv shape");
    for p in PRECISIONS {
        let o = run_ok(&g, &[("x", ftv(xs, xv.clone()))], &[("w", ftv(ws, wv.clone())), ("b", ftv(&[ws[0]], bv.clone()))], p);
        check(&o["y"], &oshape, &want, p, &format!("conv x{xs:?} w{ws:?} s{stride:?} p{pad:?} d{dil:?} g{groups}"));
    }
}

#[test]
fn conv2d_hand_computed() {
    // x = 1..9 as 3×3, w = [[1, 0], [0, -1]]: y[i,j] = x[i,j] - x[i+1,j+1] = -4, + bias 0.5.
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[1, 1, 3, 3])).unwrap();
        let w = b.param("w", F32, s(&[1, 1, 2, 2])).unwrap();
        let bb = b.param("b", F32, s(&[1])).unwrap();
        b.conv(x, w, Some(bb), &[1, 1], &[0, 0], &[1, 1], 1).unwrap()
    });
    let x = ftv(&[1, 1, 3, 3], (1..=9).map(|v| v as f64).collect());
    let ws = [("w", ftv(&[1, 1, 2, 2], vec![1.0, 0.0, 0.0, -1.0])), ("b", ftv(&[1], vec![0.5]))];
    let o = run_ok(&g, &[("x", x.clone())], &ws, Precision::F32);
    exact(&o["y"], F32, &[1, 1, 2, 2], &[-3.5; 4], "conv2d hand values");
    // Padding 1, 3×3 all-ones kernel: sums of 3×3 neighbourhoods.
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[1, 1, 3, 3])).unwrap();
        let w = b.param("w", F32, s(&[1, 1, 3, 3])).unwrap();
        b.conv(x, w, None, &[1, 1], &[1, 1], &[1, 1], 1).unwrap()
    });
    let o = run_ok(&g, &[("x", x)], &[("w", ftv(&[1, 1, 3, 3], vec![1.0; 9]))], Precision::F64);
    exact(&o["y"], F32, &[1, 1, 3, 3], &[12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0], "box filter with zero padding");
}

#[test]
fn conv2d_stride_padding_dilation_groups_bias() {
    check_conv(&[2, 4, 5, 7], &[6, 2, 3, 2], true, &[2, 1], &[1, 2], &[1, 2], 2, 110);
    check_conv(&[1, 3, 6, 5], &[4, 3, 2, 3], false, &[2, 3], &[0, 1], &[2, 1], 1, 120);
    // Depthwise: groups = channels.
    check_conv(&[1, 3, 4, 4], &[3, 1, 3, 3], true, &[1, 1], &[1, 1], &[1, 1], 3, 130);
    // Channel multiplier 2 per group.
    check_conv(&[2, 2, 3, 4], &[4, 1, 1, 2], true, &[1, 2], &[0, 0], &[1, 1], 2, 140);
}

#[test]
fn conv3d_stride_padding_dilation_groups() {
    check_conv(&[1, 4, 3, 5, 4], &[6, 2, 2, 3, 2], true, &[1, 2, 1], &[1, 1, 0], &[1, 1, 2], 2, 150);
    check_conv(&[2, 2, 4, 3, 3], &[3, 2, 3, 1, 2], false, &[2, 1, 1], &[1, 0, 1], &[1, 1, 1], 1, 160);
}

// ---------------------------------------------------------------- data movement

#[test]
fn upsample_nearest_2d_and_3d() {
    for (xs, scale) in [(vec![1usize, 2, 2, 3], vec![2usize, 3]), (vec![2, 1, 2, 2, 2], vec![2, 1, 3])] {
        let xv = vals(numel(&xs), 170);
        let g = graph(|b| {
            let x = b.input("x", F32, s(&xs)).unwrap();
            b.upsample_nearest(x, &scale).unwrap()
        });
        let mut os = xs.clone();
        for (i, f) in scale.iter().enumerate() {
            os[2 + i] *= f;
        }
        // y[n, c, p] = x[n, c, ⌊p / scale⌋]
        let want: Vec<f64> = indices(&os)
            .iter()
            .map(|o| {
                let ix: Vec<usize> = o.iter().enumerate().map(|(j, &v)| if j >= 2 { v / scale[j - 2] } else { v }).collect();
                xv[off(&xs, &ix)]
            })
            .collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&xs, xv.clone()))], &[], p);
            exact(&o["y"], F32, &os, &want, &format!("upsample {xs:?} × {scale:?}"));
        }
    }
    // Integer data, hand-checked.
    let g = graph(|b| {
        let x = b.input("x", I64, s(&[1, 1, 1, 2])).unwrap();
        b.upsample_nearest(x, &[2, 2]).unwrap()
    });
    let o = run_ok(&g, &[("x", Tensor::from_i64(I64, &[1, 1, 1, 2], vec![5, 6]))], &[], Precision::F64);
    ints(&o["y"], I64, &[1, 1, 2, 4], &[5, 5, 6, 6, 5, 5, 6, 6], "upsample i64");
}

#[test]
fn pad_float_int_bool_and_rank3() {
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[2, 3])).unwrap();
        b.pad(x, &[(1, 0), (2, 1)], -1.5).unwrap()
    });
    let o = run_ok(&g, &[("x", ftv(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))], &[], Precision::F32);
    let p = -1.5;
    #[rustfmt::skip]
    let want = [
        p, p, p, p, p, p,
        p, p, 1.0, 2.0, 3.0, p,
        p, p, 4.0, 5.0, 6.0, p,
    ];
    exact(&o["y"], F32, &[3, 6], &want, "pad f32");
    let g = graph(|b| {
        let x = b.input("x", I64, s(&[2])).unwrap();
        b.pad(x, &[(2, 1)], 7.0).unwrap()
    });
    let o = run_ok(&g, &[("x", Tensor::from_i64(I64, &[2], vec![-1, -2]))], &[], Precision::F64);
    ints(&o["y"], I64, &[5], &[7, 7, -1, -2, 7], "pad i64");
    let g = graph(|b| {
        let x = b.input("x", BOOL, s(&[1, 2])).unwrap();
        b.pad(x, &[(0, 1), (1, 0)], 1.0).unwrap()
    });
    let o = run_ok(&g, &[("x", Tensor::from_bool(&[1, 2], vec![false, true]))], &[], Precision::F64);
    bools(&o["y"], &[2, 3], &[true, false, true, true, true, true], "pad bool");
    // Rank 3 against the formula y[i] = x[i - before] inside, value outside.
    let (xs, pads) = ([2usize, 3, 2], [(0usize, 1usize), (1, 1), (2, 0)]);
    let xv = vals(12, 180);
    let g = graph(|b| {
        let x = b.input("x", F32, s(&xs)).unwrap();
        b.pad(x, &pads, 0.25).unwrap()
    });
    let os: Vec<usize> = xs.iter().zip(&pads).map(|(d, (a, b))| d + a + b).collect();
    let want: Vec<f64> = indices(&os)
        .iter()
        .map(|o| {
            let inside = (0..3).all(|j| o[j] >= pads[j].0 && o[j] - pads[j].0 < xs[j]);
            if inside {
                xv[off(&xs, &(0..3).map(|j| o[j] - pads[j].0).collect::<Vec<_>>())]
            } else {
                0.25
            }
        })
        .collect();
    for p in PRECISIONS {
        let o = run_ok(&g, &[("x", ftv(&xs, xv.clone()))], &[], p);
        exact(&o["y"], F32, &os, &want, "pad rank 3");
    }
}

#[test]
fn pad_value_is_rounded_to_the_dtype() {
    for dt in [F16, BF16, F32] {
        let g = graph(|b| {
            let x = b.input("x", dt, s(&[1])).unwrap();
            b.pad(x, &[(1, 0)], 0.1).unwrap()
        });
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", Tensor::from_f64(dt, &[1], vec![1.0]))], &[], p);
            let want = match (dt, p) {
                (F16, _) => f16r(0.1),
                (BF16, _) => bf16r(0.1),
                (_, Precision::F32) => f32r(0.1),
                _ => 0.1,
            };
            exact(&o["y"], dt, &[2], &[want, 1.0], &format!("pad value in {dt} {p:?}"));
        }
    }
}

#[test]
fn reshape_static_and_symbolic() {
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[2, 3, 4])).unwrap();
        b.reshape(x, s(&[4, 6])).unwrap()
    });
    let xv = vals(24, 190);
    let o = run_ok(&g, &[("x", ftv(&[2, 3, 4], xv.clone()))], &[], Precision::F32);
    exact(&o["y"], F32, &[4, 6], &xv, "reshape keeps row-major order");
    let g = graph(|b| {
        let x = b.input("x", I64, vec![sym("batch"), Dim::from(6usize)]).unwrap();
        b.reshape(x, vec![sym("batch"), Dim::from(2usize), Dim::from(3usize)]).unwrap()
    });
    for batch in [1usize, 3] {
        let v: Vec<i64> = (0..6 * batch as i64).collect();
        let o = run_ok(&g, &[("x", Tensor::from_i64(I64, &[batch, 6], v.clone()))], &[], Precision::F64);
        ints(&o["y"], I64, &[batch, 2, 3], &v, &format!("symbolic reshape batch={batch}"));
    }
}

#[test]
fn transpose_rank4_and_rank5() {
    for (xs, perm) in [(vec![2usize, 3, 4, 5], vec![2usize, 0, 3, 1]), (vec![2, 1, 3, 2, 2], vec![4, 2, 0, 3, 1]), (vec![3, 4], vec![1, 0])] {
        let xv = vals(numel(&xs), 200);
        let g = graph(|b| {
            let x = b.input("x", F32, s(&xs)).unwrap();
            b.transpose(x, &perm).unwrap()
        });
        let os: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
        // Result axis j is input axis perm[j]: in[perm[j]] = out[j].
        let want: Vec<f64> = indices(&os)
            .iter()
            .map(|o| {
                let mut ix = vec![0; xs.len()];
                for (j, &p) in perm.iter().enumerate() {
                    ix[p] = o[j];
                }
                xv[off(&xs, &ix)]
            })
            .collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&xs, xv.clone()))], &[], p);
            exact(&o["y"], F32, &os, &want, &format!("transpose {xs:?} {perm:?}"));
        }
    }
    // Hand-checked 2×3 transpose of integers.
    let g = graph(|b| {
        let x = b.input("x", I32, s(&[2, 3])).unwrap();
        b.transpose(x, &[1, 0]).unwrap()
    });
    let o = run_ok(&g, &[("x", Tensor::from_i64(I32, &[2, 3], vec![1, 2, 3, 4, 5, 6]))], &[], Precision::F64);
    ints(&o["y"], I32, &[3, 2], &[1, 4, 2, 5, 3, 6], "transpose i32");
}

#[test]
fn expand_size1_new_leading_and_symbolic() {
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[3, 1])).unwrap();
        b.expand(x, s(&[2, 3, 4])).unwrap()
    });
    let o = run_ok(&g, &[("x", ftv(&[3, 1], vec![1.0, 2.0, 3.0]))], &[], Precision::F32);
    let want: Vec<f64> = indices(&[2, 3, 4]).iter().map(|o| (o[1] + 1) as f64).collect();
    exact(&o["y"], F32, &[2, 3, 4], &want, "expand [3,1] → [2,3,4]");
    let g = graph(|b| {
        let x = b.input("x", BOOL, s(&[1, 2])).unwrap();
        let n = b.input("n", F32, vec![sym("batch")]).unwrap();
        let _ = n;
        b.expand(x, vec![sym("batch"), Dim::from(2usize)]).unwrap()
    });
    for batch in [1usize, 3] {
        let o = run_ok(&g, &[("x", Tensor::from_bool(&[1, 2], vec![true, false])), ("n", ft(&[batch], 0))], &[], Precision::F64);
        bools(&o["y"], &[batch, 2], &[true, false].repeat(batch), "symbolic expand");
    }
}

#[test]
fn concat_axis_middle_last_and_single() {
    let (sa, sb, sc) = ([2usize, 1, 3], [2usize, 3, 3], [2usize, 2, 3]);
    let (av, bv, cv) = (vals(6, 210), vals(18, 211), vals(12, 212));
    let g = graph(|b| {
        let x = b.input("a", F32, s(&sa)).unwrap();
        let y = b.input("b", F32, s(&sb)).unwrap();
        let z = b.input("c", F32, s(&sc)).unwrap();
        b.concat(&[x, y, z], 1).unwrap()
    });
    let want: Vec<f64> = indices(&[2, 6, 3])
        .iter()
        .map(|o| match o[1] {
            0 => av[off(&sa, &[o[0], 0, o[2]])],
            1..=3 => bv[off(&sb, &[o[0], o[1] - 1, o[2]])],
            _ => cv[off(&sc, &[o[0], o[1] - 4, o[2]])],
        })
        .collect();
    for p in PRECISIONS {
        let o = run_ok(&g, &[("a", ftv(&sa, av.clone())), ("b", ftv(&sb, bv.clone())), ("c", ftv(&sc, cv.clone()))], &[], p);
        exact(&o["y"], F32, &[2, 6, 3], &want, "concat axis 1");
    }
    let g = graph(|b| {
        let x = b.input("a", I64, s(&[2, 1])).unwrap();
        let y = b.input("b", I64, s(&[2, 2])).unwrap();
        b.concat(&[x, y, x], -1).unwrap()
    });
    let o = run_ok(&g, &[("a", Tensor::from_i64(I64, &[2, 1], vec![1, 2])), ("b", Tensor::from_i64(I64, &[2, 2], vec![3, 4, 5, 6]))], &[], Precision::F64);
    ints(&o["y"], I64, &[2, 4], &[1, 3, 4, 1, 2, 5, 6, 2], "concat last axis, operand repeated");
    let g = graph(|b| {
        let x = b.input("a", BOOL, s(&[2])).unwrap();
        b.concat(&[x], 0).unwrap()
    });
    let o = run_ok(&g, &[("a", Tensor::from_bool(&[2], vec![true, false]))], &[], Precision::F64);
    bools(&o["y"], &[2], &[true, false], "single-operand concat");
}

#[test]
fn split_uneven_sizes_gives_every_piece() {
    let xs = [2usize, 6, 3];
    let xv = vals(36, 220);
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&xs)).unwrap();
    let parts = b.split(x, -2, &[Dim::from(1usize), Dim::from(3usize), Dim::from(2usize)]).unwrap();
    for (i, pv) in parts.iter().enumerate() {
        b.output(&format!("p{i}"), *pv);
    }
    let g = b.finish().unwrap();
    for p in PRECISIONS {
        let o = run_ok(&g, &[("x", ftv(&xs, xv.clone()))], &[], p);
        for (i, (start, len)) in [(0usize, 1usize), (1, 3), (4, 2)].into_iter().enumerate() {
            let want: Vec<f64> = indices(&[2, len, 3]).iter().map(|ix| xv[off(&xs, &[ix[0], start + ix[1], ix[2]])]).collect();
            exact(&o[&format!("p{i}")], F32, &[2, len, 3], &want, &format!("split piece {i}"));
        }
    }
}

#[test]
fn concat_then_split_with_symbolic_sizes() {
    // concat([n,3], [m,3]) → [n+m, 3]; split(n, m) recovers both.
    let mut b = Builder::new();
    let x = b.input("x", F32, vec![sym("n"), Dim::from(3usize)]).unwrap();
    let y = b.input("y", F32, vec![sym("m"), Dim::from(3usize)]).unwrap();
    let c = b.concat(&[x, y], 0).unwrap();
    assert_eq!(b.shape(c)[0], sym("n").add(&sym("m")));
    let parts = b.split(c, 0, &[sym("n"), sym("m")]).unwrap();
    b.output("x2", parts[0]);
    b.output("y2", parts[1]);
    b.output("c", c);
    let g = b.finish().unwrap();
    for (n, m) in [(1usize, 2usize), (3, 1)] {
        let (xt, yt) = (ft(&[n, 3], 230), ft(&[m, 3], 231));
        let o = run_ok(&g, &[("x", xt.clone()), ("y", yt.clone())], &[], Precision::F64);
        assert_eq!(o["x2"], xt);
        assert_eq!(o["y2"], yt);
        let mut cat = xt.to_f64_vec();
        cat.extend(yt.to_f64_vec());
        exact(&o["c"], F32, &[n + m, 3], &cat, "symbolic concat");
    }
}

#[test]
fn slice_static_symbolic_and_empty() {
    let xs = [3usize, 5, 2];
    let xv = vals(30, 240);
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&xs)).unwrap();
    let a = b.slice(x, 1, Dim::from(1usize), Dim::from(4usize)).unwrap();
    let e = b.slice(x, -1, Dim::from(2usize), Dim::from(2usize)).unwrap();
    b.output("a", a);
    b.output("e", e);
    let g = b.finish().unwrap();
    let want: Vec<f64> = indices(&[3, 3, 2]).iter().map(|ix| xv[off(&xs, &[ix[0], ix[1] + 1, ix[2]])]).collect();
    for p in PRECISIONS {
        let o = run_ok(&g, &[("x", ftv(&xs, xv.clone()))], &[], p);
        exact(&o["a"], F32, &[3, 3, 2], &want, "slice 1..4 of axis 1");
        exact(&o["e"], F32, &[3, 5, 0], &[], "empty slice");
    }
    // Drop the first row of a symbolic batch: rows 1..batch.
    let g = graph(|b| {
        let x = b.input("x", I64, vec![sym("batch"), Dim::from(2usize)]).unwrap();
        b.slice(x, 0, Dim::from(1usize), sym("batch")).unwrap()
    });
    for batch in [1usize, 3] {
        let v: Vec<i64> = (0..2 * batch as i64).collect();
        let o = run_ok(&g, &[("x", Tensor::from_i64(I64, &[batch, 2], v.clone()))], &[], Precision::F64);
        ints(&o["y"], I64, &[batch - 1, 2], &v[2..], &format!("symbolic slice batch={batch}"));
    }
}

#[test]
fn gather_2d_and_negative_indices() {
    let xs = [2usize, 3, 4];
    let xv = vals(24, 250);
    let idx = vec![0i64, 2, -1, 1];
    for dt in [I64, I32] {
        let g = graph(|b| {
            let x = b.input("x", F32, s(&xs)).unwrap();
            let i = b.input("i", dt, s(&[2, 2])).unwrap();
            b.gather(x, i, 1).unwrap()
        });
        // y[a, i, j, c] = x[a, idx[i, j] mod 3, c]
        let want: Vec<f64> = indices(&[2, 2, 2, 4])
            .iter()
            .map(|o| {
                let j = idx[off(&[2, 2], &[o[1], o[2]])];
                let j = if j < 0 { (j + 3) as usize } else { j as usize };
                xv[off(&xs, &[o[0], j, o[3]])]
            })
            .collect();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&xs, xv.clone())), ("i", Tensor::from_i64(dt, &[2, 2], idx.clone()))], &[], p);
            exact(&o["y"], F32, &[2, 2, 2, 4], &want, &format!("gather axis 1 with {dt} [2,2] indices"));
        }
    }
}

#[test]
fn gather_embedding_and_scalar_index() {
    // Embedding lookup: table [5, 3], ids [2, 3] → [2, 3, 3].
    let table: Vec<f64> = (0..15).map(|v| v as f64).collect();
    let g = graph(|b| {
        let t = b.param("emb", F32, s(&[5, 3])).unwrap();
        let i = b.input("ids", I32, s(&[2, 3])).unwrap();
        b.gather(t, i, 0).unwrap()
    });
    let ids = vec![4, 0, 2, 2, -5, 1];
    let o = run_ok(&g, &[("ids", Tensor::from_i64(I32, &[2, 3], ids.clone()))], &[("emb", ftv(&[5, 3], table))], Precision::F32);
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| {
            let r = if i < 0 { i + 5 } else { i } as f64;
            [3.0 * r, 3.0 * r + 1.0, 3.0 * r + 2.0]
        })
        .collect();
    exact(&o["y"], F32, &[2, 3, 3], &want, "embedding");
    // Scalar index removes the axis: x[:, 2] of [2, 3] i64.
    let g = graph(|b| {
        let x = b.input("x", I64, s(&[2, 3])).unwrap();
        let i = b.constant(Literal { dtype: I64, shape: vec![], values: vec![2.0] }).unwrap();
        b.gather(x, i, -1).unwrap()
    });
    let o = run_ok(&g, &[("x", Tensor::from_i64(I64, &[2, 3], vec![1, 2, 3, 4, 5, 6]))], &[], Precision::F64);
    ints(&o["y"], I64, &[2], &[3, 6], "scalar index");
}

#[test]
fn gather_out_of_range_index_is_an_error() {
    let g = graph(|b| {
        let x = b.input("x", F32, s(&[4, 2])).unwrap();
        let i = b.input("i", I64, s(&[2])).unwrap();
        b.gather(x, i, 0).unwrap()
    });
    for bad in [4i64, -5] {
        let msg = run_err(&g, &[("x", ft(&[4, 2], 0)), ("i", Tensor::from_i64(I64, &[2], vec![0, bad]))], &[]);
        has(&msg, &["`gather`", "%2", &format!("index {bad} out of range"), "length 4"]);
    }
}

/// Top-k by repeated selection: take the largest remaining value, the lowest
/// index among equals.
fn topk_ref(row: &[f64], k: usize) -> (Vec<f64>, Vec<i64>) {
    let mut taken = vec![false; row.len()];
    let (mut v, mut ix) = (Vec::new(), Vec::new());
    for _ in 0..k {
        let mut best: Option<usize> = None;
        for j in 0..row.len() {
            if !taken[j] && best.is_none_or(|b| row[j] > row[b]) {
                best = Some(j);
            }
        }
        let b = best.unwrap();
        taken[b] = true;
        v.push(row[b]);
        ix.push(b as i64);
    }
    (v, ix)
}

#[test]
fn topk_ties_keep_lower_index_first() {
    let xs = vec![3.0, 1.0, 3.0, 2.0, 3.0];
    for (k, wv, wi) in
        [(3, vec![3.0, 3.0, 3.0], vec![0i64, 2, 4]), (4, vec![3.0, 3.0, 3.0, 2.0], vec![0, 2, 4, 3]), (5, vec![3.0, 3.0, 3.0, 2.0, 1.0], vec![0, 2, 4, 3, 1])]
    {
        let mut b = Builder::new();
        let x = b.input("x", F32, s(&[5])).unwrap();
        let (v, i) = b.topk(x, k).unwrap();
        b.output("v", v);
        b.output("i", i);
        let g = b.finish().unwrap();
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&[5], xs.clone()))], &[], p);
            exact(&o["v"], F32, &[k], &wv, "topk values");
            ints(&o["i"], I64, &[k], &wi, "topk indices");
        }
    }
}

#[test]
fn topk_rank3_rows_against_selection() {
    let xs = [2usize, 3, 6];
    // Values in {-2, -1.75, …}: many ties.
    let xv: Vec<f64> = vals(36, 260).into_iter().map(|v| (v * 4.0).round() / 4.0).collect();
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&xs)).unwrap();
    let (v, i) = b.topk(x, 4).unwrap();
    b.output("v", v);
    b.output("i", i);
    let g = b.finish().unwrap();
    let (mut wv, mut wi) = (Vec::new(), Vec::new());
    for r in 0..6 {
        let (a, b) = topk_ref(&xv[r * 6..r * 6 + 6], 4);
        wv.extend(a);
        wi.extend(b);
    }
    for p in PRECISIONS {
        let o = run_ok(&g, &[("x", ftv(&xs, xv.clone()))], &[], p);
        exact(&o["v"], F32, &[2, 3, 4], &wv, "topk rank 3 values");
        ints(&o["i"], I64, &[2, 3, 4], &wi, "topk rank 3 indices");
    }
}

#[test]
fn topk_integers_exact_and_nan_largest() {
    // i64 values that collide as f64 must still order exactly.
    let big = 1i64 << 53;
    let mut b = Builder::new();
    let x = b.input("x", I64, s(&[4])).unwrap();
    let (v, i) = b.topk(x, 2).unwrap();
    b.output("v", v);
    b.output("i", i);
    let g = b.finish().unwrap();
    let o = run_ok(&g, &[("x", Tensor::from_i64(I64, &[4], vec![big, big + 1, -3, big]))], &[], Precision::F64);
    ints(&o["v"], I64, &[2], &[big + 1, big], "topk i64 values");
    ints(&o["i"], I64, &[2], &[1, 0], "topk i64 indices");
    // NaN sorts as the largest value (as in PyTorch), without panicking.
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2, 5])).unwrap();
    let (v, i) = b.topk(x, 3).unwrap();
    b.output("v", v);
    b.output("i", i);
    let g = b.finish().unwrap();
    let nan = f64::NAN;
    let o = run_ok(&g, &[("x", ftv(&[2, 5], vec![1.0, nan, 3.0, nan, 2.0, -1.0, -2.0, f64::INFINITY, nan, 0.0]))], &[], Precision::F64);
    exact(&o["v"], F32, &[2, 3], &[nan, nan, 3.0, nan, f64::INFINITY, 0.0], "topk with NaN values");
    ints(&o["i"], I64, &[2, 3], &[1, 3, 2, 3, 2, 4], "topk with NaN indices");
}

// ---------------------------------------------------------------- whole graphs

#[test]
fn symbolic_batch_evaluated_at_1_and_3() {
    // x [batch, 4] → linear(w [3,4], b) → softmax → sum over the last axis,
    // plus iota(batch) cast to f32 added per row.
    let mut b = Builder::new();
    let x = b.input("x", F32, vec![sym("batch"), Dim::from(4usize)]).unwrap();
    let w = b.param("w", F32, s(&[3, 4])).unwrap();
    let bias = b.param("b", F32, s(&[3])).unwrap();
    let h = b.linear(x, w, Some(bias)).unwrap();
    let sm = b.softmax(h, -1).unwrap();
    let r = b.reduce(ReduceOp::Max, sm, &[-1], true).unwrap();
    let io = b.iota(sym("batch"), F32).unwrap();
    let io = b.reshape(io, vec![sym("batch"), Dim::from(1usize)]).unwrap();
    let y = b.add(r, io).unwrap();
    b.output("y", y);
    b.output("h", h);
    let g = b.finish().unwrap();
    assert_eq!(g.value_type(y).unwrap().shape, vec![sym("batch"), Dim::from(1usize)]);
    let (wv, bv) = (vals(12, 270), vals(3, 271));
    let xv_all = vals(12, 272);
    for batch in [1usize, 3] {
        let xv = xv_all[..4 * batch].to_vec();
        let mut wh = Vec::new();
        let mut wy = Vec::new();
        for r in 0..batch {
            let hr: Vec<f64> = (0..3).map(|n| (0..4).map(|k| xv[r * 4 + k] * wv[n * 4 + k]).sum::<f64>() + bv[n]).collect();
            let z: f64 = hr.iter().map(|v| v.exp()).sum();
            let mx = hr.iter().map(|v| v.exp() / z).fold(0.0, f64::max);
            wh.extend(&hr);
            wy.push(mx + r as f64);
        }
        for p in PRECISIONS {
            let o = run_ok(&g, &[("x", ftv(&[batch, 4], xv.clone()))], &[("w", ftv(&[3, 4], wv.clone())), ("b", ftv(&[3], bv.clone()))], p);
            check(&o["h"], &[batch, 3], &wh, p, &format!("linear batch={batch}"));
            // Two roundings in F32 precision (softmax, then reduce/add).
            let t = if p == Precision::F64 { 1e-12 } else { 4e-7 };
            close(&o["y"], &[batch, 1], &wy, t, &format!("y batch={batch} {p:?}"));
        }
        // Rows do not interact: row 0 of batch 3 equals batch 1.
    }
    let b = bind_inputs(&g, &map(&[("x", ft(&[3, 4], 0))])).unwrap();
    assert_eq!(b.get("batch"), Some(&3));
}

#[test]
fn values_used_twice_and_outputs_also_consumed() {
    // x*x uses one value twice; `t` is both an output and an operand of the
    // next node; the same value is exported under two names.
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[3])).unwrap();
    let t = b.mul(x, x).unwrap();
    let u = b.add(t, x).unwrap();
    let v = b.mul(u, t).unwrap();
    b.output("t", t);
    b.output("v", v);
    b.output("t_again", t);
    let g = b.finish().unwrap();
    let xv = vec![1.0, -2.0, 0.5];
    let o = run_ok(&g, &[("x", ftv(&[3], xv.clone()))], &[], Precision::F64);
    exact(&o["t"], F32, &[3], &[1.0, 4.0, 0.25], "t");
    exact(&o["t_again"], F32, &[3], &[1.0, 4.0, 0.25], "t again");
    exact(&o["v"], F32, &[3], &[2.0, 8.0, 0.1875], "v = (x² + x) x²");
    assert_eq!(o.len(), 3);
}

#[test]
fn f16_chain_rounds_after_every_op() {
    // In f16, (1 + 2^-11) + 2^-11 rounds twice: each add lands on a tie and
    // rounds to even (1.0), unlike one rounding of 1 + 2^-10.
    let g = graph(|b| {
        let x = b.input("x", F16, s(&[1])).unwrap();
        let e = b.scalar(F16, 2f64.powi(-11)).unwrap();
        let y = b.add(x, e).unwrap();
        b.add(y, e).unwrap()
    });
    for p in PRECISIONS {
        let o = run_ok(&g, &[("x", Tensor::from_f64(F16, &[1], vec![1.0]))], &[], p);
        exact(&o["y"], F16, &[1], &[1.0], &format!("f16 per-op rounding {p:?}"));
    }
}

// ---------------------------------------------------------------- errors

fn simple_graph() -> Graph {
    let mut b = Builder::new();
    let x = b.input("x", F32, vec![sym("batch"), Dim::from(3usize)]).unwrap();
    let y = b.input("y", F32, vec![sym("batch"), Dim::from(2usize)]).unwrap();
    let w = b.param("w", F32, s(&[2, 3])).unwrap();
    let h = b.linear(x, w, None).unwrap();
    let z = b.add(h, y).unwrap();
    b.output("z", z);
    b.finish().unwrap()
}

#[test]
fn error_missing_input() {
    let g = simple_graph();
    let msg = run_err(&g, &[("x", ft(&[2, 3], 0))], &[("w", ft(&[2, 3], 1))]);
    has(&msg, &["missing input `y`", "f32[batch,2]"]);
}

#[test]
fn error_wrong_input_dtype() {
    let g = simple_graph();
    let msg = run_err(&g, &[("x", Tensor::from_i64(I64, &[2, 3], vec![0; 6])), ("y", ft(&[2, 2], 0))], &[("w", ft(&[2, 3], 1))]);
    has(&msg, &["input `x`", "dtype i64", "f32[batch,3]"]);
}

#[test]
fn error_wrong_input_shape() {
    let g = simple_graph();
    // Wrong rank.
    let msg = run_err(&g, &[("x", ft(&[2, 3, 1], 0)), ("y", ft(&[2, 2], 0))], &[("w", ft(&[2, 3], 1))]);
    has(&msg, &["input `x`", "[2, 3, 1]", "f32[batch,3]"]);
    // Wrong static dim.
    let msg = run_err(&g, &[("x", ft(&[2, 4], 0)), ("y", ft(&[2, 2], 0))], &[("w", ft(&[2, 3], 1))]);
    has(&msg, &["input `x`", "[2, 4]", "f32[batch,3]", "`3` = 3"]);
}

#[test]
fn error_symbol_bound_inconsistently_names_the_input() {
    let g = simple_graph();
    let msg = run_err(&g, &[("x", ft(&[2, 3], 0)), ("y", ft(&[5, 2], 0))], &[("w", ft(&[2, 3], 1))]);
    has(&msg, &["input `y`", "[5, 2]", "`batch` is already bound to 2"]);
    // A compound dim checked against bindings from another input.
    let g = graph(|b| {
        let x = b.input("x", F32, vec![sym("n")]).unwrap();
        let y = b.input("y", F32, vec![sym("n").mul(&Dim::from(2usize))]).unwrap();
        let _ = x;
        y
    });
    let msg = run_err(&g, &[("x", ft(&[3], 0)), ("y", ft(&[5], 0))], &[]);
    has(&msg, &["input `y`", "[5]", "`2*n` = 6"]);
    run_ok(&g, &[("x", ft(&[3], 0)), ("y", ft(&[6], 0))], &[], Precision::F64);
}

#[test]
fn error_missing_weight() {
    let g = simple_graph();
    let msg = run_err(&g, &[("x", ft(&[2, 3], 0)), ("y", ft(&[2, 2], 0))], &[]);
    has(&msg, &["`param`", "%2", "no weight named `w`"]);
}

#[test]
fn error_weight_of_wrong_shape_or_dtype() {
    let g = simple_graph();
    let ins = [("x", ft(&[2, 3], 0)), ("y", ft(&[2, 2], 0))];
    let msg = run_err(&g, &ins, &[("w", ft(&[3, 2], 1))]);
    has(&msg, &["`param`", "%2", "weight `w`", "[3, 2]", "expects f32[2,3]"]);
    let msg = run_err(&g, &ins, &[("w", Tensor::from_f64(F16, &[2, 3], vec![0.0; 6]))]);
    has(&msg, &["`param`", "weight `w` is f16", "expects f32[2,3]"]);
    // A weight whose shape is symbolic is checked against the bindings.
    let g = graph(|b| {
        let x = b.input("x", F32, vec![sym("n")]).unwrap();
        let w = b.param("w", F32, vec![sym("n")]).unwrap();
        b.add(x, w).unwrap()
    });
    let msg = run_err(&g, &[("x", ft(&[3], 0))], &[("w", ft(&[4], 0))]);
    has(&msg, &["weight `w`", "[4]", "f32[n]"]);
    run_ok(&g, &[("x", ft(&[3], 0))], &[("w", ft(&[3], 0))], Precision::F32);
}

#[test]
fn error_graph_with_a_cycle() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    let a = b.unary(UnaryOp::Neg, x).unwrap();
    let c = b.unary(UnaryOp::Abs, a).unwrap();
    b.output("y", c);
    let mut g = b.graph;
    // Make `neg` also read `abs`: a two-node cycle.
    g.g.add_edge(c.node, a.node, crate::graph::Edge { port: 0, slot: 1 });
    let e = evaluate(&g, &map(&[("x", ft(&[2], 0))]), &map(&[]), Precision::F64).unwrap_err();
    assert!(matches!(e, IrError::Graph(_)), "{e:?}");
    has(&e.to_string(), &["cycle", "2 nodes"]);
}

#[test]
fn evaluate_observed_reports_every_node_once() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2, 3])).unwrap();
    let w = b.param("w", F32, s(&[4, 3])).unwrap();
    let h = b.linear(x, w, None).unwrap();
    let parts = b.split(h, 1, &[Dim::from(1usize), Dim::from(3usize)]).unwrap();
    let c = b.scalar(F32, 2.0).unwrap();
    let m = b.mul(parts[1], c).unwrap();
    let (tv, ti) = b.topk(m, 2).unwrap();
    let dead = b.unary(UnaryOp::Exp, x).unwrap(); // not an output, still evaluated
    let _ = dead;
    b.output("v", tv);
    b.output("i", ti);
    b.output("p0", parts[0]);
    let g = b.finish().unwrap();
    let mut seen: Vec<(petgraph::stable_graph::NodeIndex, &'static str, Vec<Vec<usize>>)> = Vec::new();
    let out = evaluate_observed(&g, &map(&[("x", ft(&[2, 3], 1))]), &map(&[("w", ft(&[4, 3], 2))]), Precision::F64, &mut |n, node, res| {
        seen.push((n, node.op.mnemonic(), res.iter().map(|t| t.shape.clone()).collect()));
    })
    .unwrap();
    assert_eq!(seen.len(), g.len(), "one report per node");
    let mut ids: Vec<_> = seen.iter().map(|s| s.0).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), g.len(), "each node reported once");
    // Reports come in a topological order: operands before users.
    let pos: HashMap<_, _> = seen.iter().enumerate().map(|(i, s)| (s.0, i)).collect();
    for n in g.g.node_indices() {
        for v in g.operands(n) {
            assert!(pos[&v.node] < pos[&n], "operand reported after its user");
        }
    }
    // Every report has one tensor per result, with the recorded shapes.
    for (n, mn, shapes) in &seen {
        let node = g.node(*n);
        assert_eq!(*mn, node.op.mnemonic());
        let recorded: Vec<Vec<usize>> = node.outputs.iter().map(|t| crate::shape::eval_shape(&t.shape, &Default::default()).unwrap()).collect();
        assert_eq!(shapes, &recorded, "`{mn}` result shapes");
    }
    let split_report = seen.iter().find(|s| s.1 == "split").unwrap();
    assert_eq!(split_report.2, vec![vec![2, 1], vec![2, 3]]);
    let topk_report = seen.iter().find(|s| s.1 == "topk").unwrap();
    assert_eq!(topk_report.2, vec![vec![2, 2], vec![2, 2]]);
    assert!(seen.iter().any(|s| s.1 == "exp"), "dead nodes are evaluated and reported");
    assert_eq!(out.len(), 3);
    // The plain evaluator gives the same outputs.
    let plain = evaluate(&g, &map(&[("x", ft(&[2, 3], 1))]), &map(&[("w", ft(&[4, 3], 2))]), Precision::F64).unwrap();
    assert_eq!(plain, out);
}

#[test]
fn evaluator_errors_on_unverified_graph_operand_mismatch() {
    // A graph built without inference (recorded types lie) fails at run
    // time with a message naming the op rather than panicking.
    let mut g = Graph::new();
    let x = g.add(Op::Input { name: "x".into(), ty: crate::op::TensorType::new(F32, s(&[2, 3])) }, &[]).unwrap();
    let y = g.add(Op::Input { name: "y".into(), ty: crate::op::TensorType::new(F32, s(&[4, 3])) }, &[]).unwrap();
    let z = g.add_unchecked(Op::Binary(BinaryOp::Add), &[ValueRef::new(x, 0), ValueRef::new(y, 0)], vec![crate::op::TensorType::new(F32, s(&[2, 3]))]);
    g.outputs.push(("z".into(), ValueRef::new(z, 0)));
    let msg = run_err(&g, &[("x", ft(&[2, 3], 0)), ("y", ft(&[4, 3], 1))], &[]);
    has(&msg, &["`add`", "%2", "[2, 3]", "[4, 3]", "do not broadcast"]);
}

#[test]
fn data_variants_match_dtypes() {
    // Results carry storage consistent with their dtype.
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    let c = b.cast(x, I32).unwrap();
    let d = b.cast(x, BOOL).unwrap();
    let e = b.cast(c, F16).unwrap();
    b.output("c", c);
    b.output("d", d);
    b.output("e", e);
    let g = b.finish().unwrap();
    let o = run_ok(&g, &[("x", ftv(&[2], vec![1.5, -0.0]))], &[], Precision::F32);
    assert!(matches!(o["c"].data, Data::I(_)));
    assert!(matches!(o["d"].data, Data::B(_)));
    assert!(matches!(o["e"].data, Data::F(_)));
    exact(&o["e"], F16, &[2], &[1.0, 0.0], "f32 → i32 → f16");
}
