//! One test per distinct error of type/shape inference ([`crate::infer`])
//! and of the verifier ([`crate::verify`]).
//!
//! Each infer test builds valid operands with the [`Builder`], then adds the
//! offending node with [`Graph::add_unchecked`] (as the parser and passes
//! do) and runs [`verify_graph`]. The message must name the op mnemonic (in
//! backticks), the value (`%k`, numbered in topological order) and, for
//! shape errors, the shapes involved. Where the builder has a method for the
//! op, the builder's own error (raised before the node exists, so it names
//! the op and scope instead of `%k`) is checked too.

use crate::builder::{BResult, Builder};
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Edge, Graph, ValueRef};
use crate::op::{BinaryOp, CmpOp, Literal, Op, ReduceOp, TensorType, UnaryOp};
use crate::program::{Control, Program, Stage};
use crate::shape::{Dim, Shape};
use crate::verify::{verify_graph, verify_program};

const F32: DType = DType::F32;
const F16: DType = DType::F16;
const I64: DType = DType::I64;
const I32: DType = DType::I32;
const BOOL: DType = DType::Bool;

fn s(d: &[usize]) -> Shape {
    d.iter().map(|&x| Dim::from(x)).collect()
}

fn tt(dt: DType, d: &[usize]) -> TensorType {
    TensorType::new(dt, s(d))
}

fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message `{msg}` should contain `{p}`");
    }
}

/// Builder for one failing node: inputs first, then the bad node last.
struct Case {
    b: Builder,
}

impl Case {
    fn new() -> Case {
        Case { b: Builder::new() }
    }
    fn input(&mut self, name: &str, dt: DType, d: &[usize]) -> ValueRef {
        self.b.input(name, dt, s(d)).unwrap()
    }
    fn input_s(&mut self, name: &str, dt: DType, shape: Shape) -> ValueRef {
        self.b.input(name, dt, shape).unwrap()
    }
    /// Run a builder method on a copy of the graph so far and check its error.
    fn clone_builder_check(&mut self, f: impl FnOnce(&mut Builder) -> BResult, mnemonic: &str, parts: &[&str]) {
        let mut b2 = Builder::new();
        b2.graph = self.b.graph.clone();
        builder_err(f(&mut b2), mnemonic, parts);
    }
    /// Add `op` on `operands` without inference (recording an arbitrary
    /// type), export it, verify, and return the error text. Checks that the
    /// error is a verifier error naming the op and the new node as `%k`,
    /// where k is the number of nodes before it.
    fn bad(mut self, op: Op, operands: &[ValueRef]) -> String {
        let mnemonic = op.mnemonic();
        let k = self.b.graph.len();
        let n = self.b.graph.add_unchecked(op, operands, vec![tt(F32, &[1])]);
        self.b.graph.outputs.push(("out".into(), ValueRef::new(n, 0)));
        let e = verify_graph(&self.b.graph).unwrap_err();
        match &e {
            IrError::Verify { op, value, .. } => {
                assert_eq!(op, mnemonic, "{e}");
                assert_eq!(value, &format!("%{k}"), "{e}");
            }
            other => panic!("expected a verifier error, got {other:?}"),
        }
        let msg = e.to_string();
        has(&msg, &[&format!("`{mnemonic}`"), &format!("producing %{k}:")]);
        msg
    }
}

/// The builder's error for the same mistake: names the op and the operand types.
fn builder_err(r: BResult, mnemonic: &str, parts: &[&str]) {
    let e = r.unwrap_err();
    assert!(matches!(e, IrError::Verify { .. }), "{e:?}");
    let msg = e.to_string();
    has(&msg, &[&format!("`{mnemonic}`"), &format!("{mnemonic} in <top>"), "operand types"]);
    has(&msg, parts);
}

// ---------------------------------------------------------------- arity and sources

#[test]
fn arity_exact_count() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let y = c.input("y", F32, &[2, 3]);
    let msg = c.bad(Op::Unary(UnaryOp::Exp), &[x, y]);
    has(&msg, &["`exp`", "%2", "expects 1 operands, got 2", "%0: f32[2,3]", "%1: f32[2,3]"]);
    // Optional operands change the count: layer_norm with weight and bias takes 3.
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let msg = c.bad(Op::LayerNorm { eps: 1e-5, weight: true, bias: true }, &[x]);
    has(&msg, &["`layer_norm`", "%1", "expects 3 operands, got 1"]);
    // Sources take none.
    let mut c = Case::new();
    let x = c.input("x", F32, &[2]);
    let msg = c.bad(Op::Iota { len: Dim::from(2usize), dtype: I64 }, &[x]);
    has(&msg, &["`iota`", "%1", "expects 0 operands, got 1"]);
}

#[test]
fn arity_at_least_one_for_concat() {
    let c = Case::new();
    let msg = c.bad(Op::Concat { axis: 0 }, &[]);
    has(&msg, &["`concat`", "%0", "expects at least 1 operands, got 0"]);
}

#[test]
fn constant_literal_value_count() {
    let c = Case::new();
    let msg = c.bad(Op::Constant(Literal { dtype: F32, shape: vec![2, 3], values: vec![1.0; 5] }), &[]);
    has(&msg, &["`constant`", "%0", "literal of shape [2, 3] needs 6 values, has 5"]);
    builder_err(Builder::new().constant(Literal { dtype: F32, shape: vec![2], values: vec![1.0; 3] }), "constant", &["needs 2 values, has 3"]);
}

#[test]
fn iota_of_bool() {
    let c = Case::new();
    let msg = c.bad(Op::Iota { len: Dim::from(4usize), dtype: BOOL }, &[]);
    has(&msg, &["`iota`", "%0", "iota cannot produce bool"]);
    builder_err(Builder::new().iota(Dim::from(4usize), BOOL), "iota", &["cannot produce bool"]);
}

// ---------------------------------------------------------------- elementwise

#[test]
fn unary_on_non_float_operand() {
    let mut c = Case::new();
    let x = c.input("x", I64, &[2, 3]);
    c.clone_builder_check(|b| b.unary(UnaryOp::Sqrt, x), "sqrt", &["operand 0 must be a float tensor, found i64[2,3]"]);
    let msg = c.bad(Op::Unary(UnaryOp::Sqrt), &[x]);
    has(&msg, &["`sqrt`", "%1", "operand 0 must be a float tensor, found i64[2,3]", "(operands %0: i64[2,3])"]);
}

#[test]
fn binary_dtype_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let y = c.input("y", F16, &[2, 3]);
    c.clone_builder_check(|b| b.add(x, y), "add", &["dtypes differ (f32 vs f16)", "f32[2,3], f16[2,3]"]);
    let msg = c.bad(Op::Binary(BinaryOp::Add), &[x, y]);
    has(&msg, &["`add`", "%2", "operands 0 and 1: dtypes differ (f32 vs f16)", "%0: f32[2,3]", "%1: f16[2,3]"]);
}

#[test]
fn binary_arithmetic_on_bool() {
    let mut c = Case::new();
    let x = c.input("x", BOOL, &[4]);
    let y = c.input("y", BOOL, &[4]);
    c.clone_builder_check(|b| b.mul(x, y), "mul", &["arithmetic on bool operands"]);
    let msg = c.bad(Op::Binary(BinaryOp::Mul), &[x, y]);
    has(&msg, &["`mul`", "%2", "arithmetic on bool operands", "bool[4]"]);
}

#[test]
fn binary_shapes_do_not_broadcast() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let y = c.input("y", F32, &[4, 3]);
    c.clone_builder_check(|b| b.sub(x, y), "sub", &["shapes [2,3] and [4,3] do not broadcast"]);
    let msg = c.bad(Op::Binary(BinaryOp::Sub), &[x, y]);
    has(&msg, &["`sub`", "%2", "shapes [2,3] and [4,3] do not broadcast"]);
    // A symbolic dim is never assumed to be 1 or equal to a constant.
    let mut c = Case::new();
    let x = c.input_s("x", F32, vec![Dim::sym("batch"), Dim::from(3usize)]);
    let y = c.input("y", F32, &[2, 3]);
    let msg = c.bad(Op::Binary(BinaryOp::Max), &[x, y]);
    has(&msg, &["`max`", "%2", "shapes [batch,3] and [2,3] do not broadcast"]);
}

#[test]
fn compare_dtype_mismatch_and_broadcast() {
    let mut c = Case::new();
    let x = c.input("x", I64, &[3]);
    let y = c.input("y", I32, &[3]);
    c.clone_builder_check(|b| b.compare(CmpOp::Lt, x, y), "lt", &["dtypes differ (i64 vs i32)"]);
    let msg = c.bad(Op::Compare(CmpOp::Lt), &[x, y]);
    has(&msg, &["`lt`", "%2", "operands 0 and 1: dtypes differ (i64 vs i32)"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 5]);
    let y = c.input("y", F32, &[3, 1]);
    let msg = c.bad(Op::Compare(CmpOp::Ge), &[x, y]);
    has(&msg, &["`ge`", "%2", "shapes [2,5] and [3,1] do not broadcast"]);
}

#[test]
fn where_condition_not_bool() {
    let mut c = Case::new();
    let cond = c.input("c", F32, &[2]);
    let a = c.input("a", F32, &[2]);
    c.clone_builder_check(|b| b.where_(cond, a, a), "where", &["condition must be bool, found f32[2]"]);
    let msg = c.bad(Op::Where, &[cond, a, a]);
    has(&msg, &["`where`", "%2", "condition must be bool, found f32[2]"]);
}

#[test]
fn where_branch_dtypes_differ() {
    let mut c = Case::new();
    let cond = c.input("c", BOOL, &[2]);
    let a = c.input("a", F32, &[2]);
    let b = c.input("b", I64, &[2]);
    let msg = c.bad(Op::Where, &[cond, a, b]);
    has(&msg, &["`where`", "%3", "operands 1 and 2: dtypes differ (f32 vs i64)"]);
}

#[test]
fn where_branches_or_condition_do_not_broadcast() {
    let mut c = Case::new();
    let cond = c.input("c", BOOL, &[3]);
    let a = c.input("a", F32, &[2, 1]);
    let b = c.input("b", F32, &[2]);
    c.clone_builder_check(|bb| bb.where_(cond, a, b), "where", &["condition [3] does not broadcast with [2,2]"]);
    let msg = c.bad(Op::Where, &[cond, a, b]);
    has(&msg, &["`where`", "%3", "condition [3] does not broadcast with [2,2]"]);
    let mut c = Case::new();
    let cond = c.input("c", BOOL, &[1]);
    let a = c.input("a", F32, &[2]);
    let b = c.input("b", F32, &[3]);
    let msg = c.bad(Op::Where, &[cond, a, b]);
    has(&msg, &["`where`", "%3", "shapes [2] and [3] do not broadcast"]);
}

// ---------------------------------------------------------------- reductions and norms

#[test]
fn reduce_without_axes() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let msg = c.bad(Op::Reduce { op: ReduceOp::Sum, axes: vec![], keep_dims: false }, &[x]);
    has(&msg, &["`reduce_sum`", "%1", "reduce needs at least one axis", "f32[2,3]"]);
}

#[test]
fn reduce_axes_unsorted_or_repeated() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3, 4]);
    let msg = c.bad(Op::Reduce { op: ReduceOp::Max, axes: vec![2, 1], keep_dims: true }, &[x]);
    has(&msg, &["`reduce_max`", "%1", "reduce axes [2, 1] must be sorted and unique"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3, 4]);
    let msg = c.bad(Op::Reduce { op: ReduceOp::Min, axes: vec![1, 1], keep_dims: true }, &[x]);
    has(&msg, &["`reduce_min`", "%1", "reduce axes [1, 1] must be sorted and unique"]);
}

#[test]
fn reduce_axis_out_of_range() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let msg = c.bad(Op::Reduce { op: ReduceOp::Sum, axes: vec![0, 2], keep_dims: false }, &[x]);
    has(&msg, &["`reduce_sum`", "%1", "reduce axis 2 out of range for rank 2", "f32[2,3]"]);
    // The builder rejects the axis while normalising it.
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2, 3])).unwrap();
    let e = b.reduce(ReduceOp::Sum, x, &[2], false).unwrap_err();
    has(&e.to_string(), &["axis 2 out of range for rank 2"]);
}

#[test]
fn reduce_mean_of_integers() {
    let mut c = Case::new();
    let x = c.input("x", I32, &[4]);
    c.clone_builder_check(|b| b.reduce(ReduceOp::Mean, x, &[0], false), "reduce_mean", &["mean operand must be a float tensor, found i32[4]"]);
    let msg = c.bad(Op::Reduce { op: ReduceOp::Mean, axes: vec![0], keep_dims: false }, &[x]);
    has(&msg, &["`reduce_mean`", "%1", "mean operand must be a float tensor, found i32[4]"]);
}

#[test]
fn reduce_of_bool() {
    let mut c = Case::new();
    let x = c.input("x", BOOL, &[2, 4]);
    c.clone_builder_check(|b| b.reduce(ReduceOp::Sum, x, &[1], false), "reduce_sum", &["cannot reduce a bool tensor, found bool[2,4]"]);
    let msg = c.bad(Op::Reduce { op: ReduceOp::Max, axes: vec![1], keep_dims: false }, &[x]);
    has(&msg, &["`reduce_max`", "%1", "cannot reduce a bool tensor, found bool[2,4]"]);
}

#[test]
fn softmax_non_float_and_axis_out_of_range() {
    let mut c = Case::new();
    let x = c.input("x", I64, &[2, 3]);
    let msg = c.bad(Op::Softmax { axis: 1 }, &[x]);
    has(&msg, &["`softmax`", "%1", "operand 0 must be a float tensor, found i64[2,3]"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let msg = c.bad(Op::Softmax { axis: 2 }, &[x]);
    has(&msg, &["`softmax`", "%1", "softmax axis 2 out of range for rank 2", "f32[2,3]"]);
}

#[test]
fn norm_of_a_scalar() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[]);
    c.clone_builder_check(|b| b.rms_norm(x, None, 1e-6), "rms_norm", &["norm of a scalar"]);
    let msg = c.bad(Op::LayerNorm { eps: 1e-5, weight: false, bias: false }, &[x]);
    has(&msg, &["`layer_norm`", "%1", "norm of a scalar", "f32[]"]);
}

#[test]
fn norm_of_integers() {
    let mut c = Case::new();
    let x = c.input("x", I64, &[2, 3]);
    let msg = c.bad(Op::RmsNorm { eps: 1e-6, weight: false }, &[x]);
    has(&msg, &["`rms_norm`", "%1", "operand 0 must be a float tensor, found i64[2,3]"]);
}

#[test]
fn norm_weight_shape_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 5]);
    let w = c.input("w", F32, &[4]);
    c.clone_builder_check(|b| b.layer_norm(x, Some(w), None, 1e-5), "layer_norm", &["operand 1 has shape [4] but operand 0 [2,5] needs [5]"]);
    let msg = c.bad(Op::LayerNorm { eps: 1e-5, weight: true, bias: false }, &[x, w]);
    has(&msg, &["`layer_norm`", "%2", "operand 1 has shape [4] but operand 0 [2,5] needs [5]"]);
    // Bias is operand 2; a rank-2 weight is also rejected.
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 5]);
    let w = c.input("w", F32, &[5]);
    let b = c.input("b", F32, &[1, 5]);
    let msg = c.bad(Op::LayerNorm { eps: 1e-5, weight: true, bias: true }, &[x, w, b]);
    has(&msg, &["`layer_norm`", "%3", "operand 2 has shape [1,5] but operand 0 [2,5] needs [5]"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[3, 8]);
    let w = c.input("w", F32, &[3]);
    let msg = c.bad(Op::RmsNorm { eps: 1e-6, weight: true }, &[x, w]);
    has(&msg, &["`rms_norm`", "%2", "operand 1 has shape [3] but operand 0 [3,8] needs [8]"]);
}

#[test]
fn norm_weight_dtype_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 5]);
    let w = c.input("w", F16, &[5]);
    let msg = c.bad(Op::RmsNorm { eps: 1e-6, weight: true }, &[x, w]);
    has(&msg, &["`rms_norm`", "%2", "operand 1: dtypes differ (f32 vs f16)"]);
}

#[test]
fn group_norm_rank_below_two() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[6]);
    c.clone_builder_check(|b| b.group_norm(x, None, 2, 1e-5), "group_norm", &["group_norm needs [N, C, ...], found [6]"]);
    let msg = c.bad(Op::GroupNorm { groups: 2, eps: 1e-5, affine: false }, &[x]);
    has(&msg, &["`group_norm`", "%1", "group_norm needs [N, C, ...], found [6]"]);
}

#[test]
fn group_norm_zero_groups() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 6, 4]);
    let msg = c.bad(Op::GroupNorm { groups: 0, eps: 1e-5, affine: false }, &[x]);
    has(&msg, &["`group_norm`", "%1", "group_norm with 0 groups", "f32[2,6,4]"]);
}

#[test]
fn group_norm_channels_not_divisible() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 6, 4]);
    c.clone_builder_check(|b| b.group_norm(x, None, 4, 1e-5), "group_norm", &["6 channels do not split into 4 groups", "f32[2,6,4]"]);
    let msg = c.bad(Op::GroupNorm { groups: 4, eps: 1e-5, affine: false }, &[x]);
    has(&msg, &["`group_norm`", "%1", "6 channels do not split into 4 groups", "f32[2,6,4]"]);
}

#[test]
fn group_norm_affine_parameter_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 6, 4]);
    let w = c.input("w", F32, &[6]);
    let b = c.input("b", F32, &[4]);
    let msg = c.bad(Op::GroupNorm { groups: 3, eps: 1e-5, affine: true }, &[x, w, b]);
    has(&msg, &["`group_norm`", "%3", "operand 2 has shape [4] but channels are [6]"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 6, 4]);
    let w = c.input("w", F16, &[6]);
    let b = c.input("b", F32, &[6]);
    let msg = c.bad(Op::GroupNorm { groups: 3, eps: 1e-5, affine: true }, &[x, w, b]);
    has(&msg, &["`group_norm`", "%3", "operand 1: dtypes differ (f32 vs f16)"]);
}

// ---------------------------------------------------------------- contractions

#[test]
fn matmul_dtype_mismatch() {
    let mut c = Case::new();
    let a = c.input("a", F32, &[2, 3]);
    let b = c.input("b", F16, &[3, 4]);
    let msg = c.bad(Op::MatMul, &[a, b]);
    has(&msg, &["`matmul`", "%2", "operands 0 and 1: dtypes differ (f32 vs f16)"]);
}

#[test]
fn matmul_rank_below_two() {
    let mut c = Case::new();
    let a = c.input("a", F32, &[3]);
    let b = c.input("b", F32, &[3, 4]);
    c.clone_builder_check(|bb| bb.matmul(a, b), "matmul", &["matmul needs rank ≥ 2, found [3] and [3,4]"]);
    let msg = c.bad(Op::MatMul, &[a, b]);
    has(&msg, &["`matmul`", "%2", "matmul needs rank ≥ 2, found [3] and [3,4]"]);
}

#[test]
fn matmul_contraction_mismatch() {
    let mut c = Case::new();
    let a = c.input("a", F32, &[2, 3]);
    let b = c.input("b", F32, &[4, 5]);
    c.clone_builder_check(|bb| bb.matmul(a, b), "matmul", &["contraction dims differ: [2,3] · [4,5] (3 vs 4)", "f32[2,3], f32[4,5]"]);
    let msg = c.bad(Op::MatMul, &[a, b]);
    has(&msg, &["`matmul`", "%2", "contraction dims differ: [2,3] · [4,5] (3 vs 4)", "(operands %0: f32[2,3], %1: f32[4,5])"]);
}

#[test]
fn matmul_batch_dims_do_not_broadcast() {
    let mut c = Case::new();
    let a = c.input("a", F32, &[2, 3, 4]);
    let b = c.input("b", F32, &[3, 4, 5]);
    let msg = c.bad(Op::MatMul, &[a, b]);
    has(&msg, &["`matmul`", "%2", "batch dims of [2,3,4] and [3,4,5] do not broadcast"]);
}

#[test]
fn linear_non_float_input() {
    let mut c = Case::new();
    let x = c.input("x", I64, &[2, 4]);
    let w = c.input("w", I64, &[3, 4]);
    let msg = c.bad(Op::Linear { bias: false }, &[x, w]);
    has(&msg, &["`linear`", "%2", "operand 0 must be a float tensor, found i64[2,4]"]);
}

#[test]
fn linear_weight_dtype_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 4]);
    let w = c.input("w", F16, &[3, 4]);
    let msg = c.bad(Op::Linear { bias: false }, &[x, w]);
    has(&msg, &["`linear`", "%2", "input and weight: dtypes differ (f32 vs f16)"]);
}

#[test]
fn linear_weight_not_rank_two() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 4]);
    let w = c.input("w", F32, &[4]);
    let msg = c.bad(Op::Linear { bias: false }, &[x, w]);
    has(&msg, &["`linear`", "%2", "linear needs x [*, K] and w [N, K], found [2,4] and [4]"]);
}

#[test]
fn linear_k_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 7, 4]);
    let w = c.input("w", F32, &[3, 5]);
    c.clone_builder_check(|b| b.linear(x, w, None), "linear", &["input [2,7,4] has K = 4 but weight [3,5] has K = 5"]);
    let msg = c.bad(Op::Linear { bias: false }, &[x, w]);
    has(&msg, &["`linear`", "%2", "input [2,7,4] has K = 4 but weight [3,5] has K = 5"]);
}

#[test]
fn linear_bias_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 4]);
    let w = c.input("w", F32, &[3, 4]);
    let b = c.input("b", F32, &[4]);
    c.clone_builder_check(|bb| bb.linear(x, w, Some(b)), "linear", &["bias [4] does not match weight [3,4] (needs [3])"]);
    let msg = c.bad(Op::Linear { bias: true }, &[x, w, b]);
    has(&msg, &["`linear`", "%3", "bias [4] does not match weight [3,4] (needs [3])"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 4]);
    let w = c.input("w", F32, &[3, 4]);
    let b = c.input("b", F16, &[3]);
    let msg = c.bad(Op::Linear { bias: true }, &[x, w, b]);
    has(&msg, &["`linear`", "%3", "input and bias: dtypes differ (f32 vs f16)"]);
}

/// q, k, v (and optional mask) inputs for attention errors.
fn attn_case(q: &[usize], k: &[usize], v: &[usize], dts: [DType; 3], mask: Option<(&[usize], DType)>) -> (Case, Vec<ValueRef>) {
    let mut c = Case::new();
    let mut ops = vec![c.input("q", dts[0], q), c.input("k", dts[1], k), c.input("v", dts[2], v)];
    if let Some((m, dt)) = mask {
        ops.push(c.input("m", dt, m));
    }
    (c, ops)
}

#[test]
fn attention_operand_not_rank_four() {
    let (c, ops) = attn_case(&[1, 2, 3, 8], &[2, 5, 8], &[1, 2, 5, 8], [F32; 3], None);
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: false }, &ops);
    has(&msg, &["`attention`", "%3", "operand 1 must be [B, H, S, D], found [2,5,8]"]);
}

#[test]
fn attention_non_float_operand() {
    let (c, ops) = attn_case(&[1, 2, 3, 8], &[1, 2, 5, 8], &[1, 2, 5, 8], [F32, F32, I64], None);
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: false }, &ops);
    has(&msg, &["`attention`", "%3", "operand 2 must be a float tensor, found i64[1,2,5,8]"]);
}

#[test]
fn attention_dtype_mismatch() {
    let (c, ops) = attn_case(&[1, 2, 3, 8], &[1, 2, 5, 8], &[1, 2, 5, 8], [F32, F16, F32], None);
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: false }, &ops);
    has(&msg, &["`attention`", "%3", "q and k: dtypes differ (f32 vs f16)"]);
    let (c, ops) = attn_case(&[1, 2, 3, 8], &[1, 2, 5, 8], &[1, 2, 5, 8], [F32, F32, F16], None);
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: false }, &ops);
    has(&msg, &["`attention`", "%3", "q and v: dtypes differ (f32 vs f16)"]);
}

#[test]
fn attention_head_dim_mismatch() {
    let (mut c, ops) = attn_case(&[1, 2, 3, 8], &[1, 2, 5, 4], &[1, 2, 5, 8], [F32; 3], None);
    c.clone_builder_check(|b| b.attention(ops[0], ops[1], ops[2], None, None, false), "attention", &["q [1,2,3,8] and k [1,2,5,4] differ in head dim"]);
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: false }, &ops);
    has(&msg, &["`attention`", "%3", "q [1,2,3,8] and k [1,2,5,4] differ in head dim"]);
}

#[test]
fn attention_key_value_mismatch() {
    let (c, ops) = attn_case(&[1, 2, 3, 8], &[1, 2, 5, 8], &[1, 2, 6, 8], [F32; 3], None);
    let msg = c.bad(Op::Attention { scale: None, causal: true, mask: false }, &ops);
    has(&msg, &["`attention`", "%3", "k [1,2,5,8] and v [1,2,6,8] differ in batch, heads or length"]);
}

#[test]
fn attention_batch_mismatch() {
    let (c, ops) = attn_case(&[2, 2, 3, 8], &[1, 2, 5, 8], &[1, 2, 5, 8], [F32; 3], None);
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: false }, &ops);
    has(&msg, &["`attention`", "%3", "q [2,2,3,8] and k [1,2,5,8] differ in batch"]);
}

#[test]
fn attention_heads_not_a_multiple_of_kv_heads() {
    let (mut c, ops) = attn_case(&[1, 6, 3, 8], &[1, 4, 5, 8], &[1, 4, 5, 8], [F32; 3], None);
    c.clone_builder_check(|b| b.attention(ops[0], ops[1], ops[2], None, None, false), "attention", &["q heads 6 not a multiple of kv heads 4"]);
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: false }, &ops);
    has(&msg, &["`attention`", "%3", "q heads 6 not a multiple of kv heads 4", "f32[1,6,3,8]", "f32[1,4,5,8]"]);
}

#[test]
fn attention_symbolic_head_counts_must_match() {
    let mut c = Case::new();
    let d = |v: usize| Dim::from(v);
    let q = c.input_s("q", F32, vec![d(1), Dim::sym("h"), d(3), d(8)]);
    let k = c.input_s("k", F32, vec![d(1), d(2), d(5), d(8)]);
    let v = c.input_s("v", F32, vec![d(1), d(2), d(5), d(8)]);
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: false }, &[q, k, v]);
    has(&msg, &["`attention`", "%3", "symbolic head counts must match: q [1,h,3,8] vs k [1,2,5,8]"]);
}

#[test]
fn attention_mask_does_not_broadcast_to_scores() {
    let (mut c, ops) = attn_case(&[1, 2, 3, 8], &[1, 2, 5, 8], &[1, 2, 5, 8], [F32; 3], Some((&[3, 4], F32)));
    c.clone_builder_check(
        |b| b.attention(ops[0], ops[1], ops[2], Some(ops[3]), None, false),
        "attention",
        &["mask [3,4] does not broadcast to scores [1,2,3,5]"],
    );
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: true }, &ops);
    has(&msg, &["`attention`", "%4", "mask [3,4] does not broadcast to scores [1,2,3,5]"]);
    // A mask larger than the scores (would broadcast the other way) is rejected too.
    let (c, ops) = attn_case(&[1, 2, 3, 8], &[1, 2, 5, 8], &[1, 2, 5, 8], [F32; 3], Some((&[2, 2, 3, 5], F32)));
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: true }, &ops);
    has(&msg, &["`attention`", "%4", "mask [2,2,3,5] does not broadcast to scores [1,2,3,5]"]);
}

#[test]
fn attention_mask_not_float() {
    let (c, ops) = attn_case(&[1, 2, 3, 8], &[1, 2, 5, 8], &[1, 2, 5, 8], [F32; 3], Some((&[3, 5], BOOL)));
    let msg = c.bad(Op::Attention { scale: None, causal: false, mask: true }, &ops);
    has(&msg, &["`attention`", "%4", "mask must be a float tensor, found bool[3,5]"]);
}

// ---------------------------------------------------------------- conv

fn conv_op(stride: &[usize], padding: &[usize], dilation: &[usize], groups: usize, bias: bool) -> Op {
    Op::Conv { stride: stride.to_vec(), padding: padding.to_vec(), dilation: dilation.to_vec(), groups, bias }
}

#[test]
fn conv_non_float_or_dtype_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", I64, &[1, 3, 8, 8]);
    let w = c.input("w", I64, &[4, 3, 3, 3]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "operand 0 must be a float tensor, found i64[1,3,8,8]"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3, 8, 8]);
    let w = c.input("w", F16, &[4, 3, 3, 3]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "input and weight: dtypes differ (f32 vs f16)"]);
}

#[test]
fn conv_wrong_ranks() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3, 8]);
    let w = c.input("w", F32, &[4, 3, 3]);
    let msg = c.bad(conv_op(&[1], &[0], &[1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "with 2 or 3 spatial dims, found [1,3,8] and [4,3,3]"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3, 8, 8, 8]);
    let w = c.input("w", F32, &[4, 3, 3, 3]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "found [1,3,8,8,8] and [4,3,3,3]"]);
}

#[test]
fn conv_parameter_lengths() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3, 8, 8]);
    let w = c.input("w", F32, &[4, 3, 3, 3]);
    c.clone_builder_check(|b| b.conv(x, w, None, &[1, 1, 1], &[0, 0], &[1, 1], 1), "conv", &["stride/padding/dilation need 2 entries each"]);
    let msg = c.bad(conv_op(&[1, 1], &[0], &[1, 1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "stride/padding/dilation need 2 entries each", "f32[1,3,8,8]", "f32[4,3,3,3]"]);
}

#[test]
fn conv_zero_groups_stride_or_dilation() {
    for op in [conv_op(&[1, 1], &[0, 0], &[1, 1], 0, false), conv_op(&[1, 0], &[0, 0], &[1, 1], 1, false), conv_op(&[1, 1], &[0, 0], &[0, 1], 1, false)] {
        let mut c = Case::new();
        let x = c.input("x", F32, &[1, 3, 8, 8]);
        let w = c.input("w", F32, &[4, 3, 3, 3]);
        let msg = c.bad(op, &[x, w]);
        has(&msg, &["`conv`", "%2", "groups, stride and dilation must be positive"]);
    }
}

#[test]
fn conv_input_channel_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 4, 8, 8]);
    let w = c.input("w", F32, &[6, 3, 3, 3]);
    c.clone_builder_check(
        |b| b.conv(x, w, None, &[1, 1], &[0, 0], &[1, 1], 1),
        "conv",
        &["input [1,4,8,8] has 4 channels but weight [6,3,3,3] with groups=1 needs 3"],
    );
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "input [1,4,8,8] has 4 channels but weight [6,3,3,3] with groups=1 needs 3"]);
    // With groups, the weight holds Cin/groups channels.
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 4, 8, 8]);
    let w = c.input("w", F32, &[6, 4, 3, 3]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 2, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "input [1,4,8,8] has 4 channels but weight [6,4,3,3] with groups=2 needs 8"]);
}

#[test]
fn conv_output_channels_not_divisible_by_groups() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 4, 8, 8]);
    let w = c.input("w", F32, &[6, 1, 3, 3]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 4, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "6 output channels do not split into 4 groups"]);
}

#[test]
fn conv_bias_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3, 8, 8]);
    let w = c.input("w", F32, &[6, 3, 3, 3]);
    let b = c.input("b", F32, &[5]);
    c.clone_builder_check(|bb| bb.conv(x, w, Some(b), &[1, 1], &[0, 0], &[1, 1], 1), "conv", &["bias [5] does not match weight [6,3,3,3]"]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 1, true), &[x, w, b]);
    has(&msg, &["`conv`", "%3", "bias [5] does not match weight [6,3,3,3]"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3, 8, 8]);
    let w = c.input("w", F32, &[6, 3, 3, 3]);
    let b = c.input("b", F16, &[6]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 1, true), &[x, w, b]);
    has(&msg, &["`conv`", "%3", "input and bias: dtypes differ (f32 vs f16)"]);
}

#[test]
fn conv_kernel_size_must_be_static() {
    let mut c = Case::new();
    let d = |v: usize| Dim::from(v);
    let x = c.input("x", F32, &[1, 3, 8, 8]);
    let w = c.input_s("w", F32, vec![d(4), d(3), Dim::sym("kh"), d(3)]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "kernel size must be static", "f32[4,3,kh,3]"]);
}

#[test]
fn conv_kernel_larger_than_padded_input() {
    // Stride 1: output size 4 + 2·0 - 5 + 1 = 0.
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3, 8, 4]);
    let w = c.input("w", F32, &[2, 3, 3, 5]);
    c.clone_builder_check(|b| b.conv(x, w, None, &[1, 1], &[0, 0], &[1, 1], 1), "conv", &["kernel larger than padded input along spatial axis 1"]);
    let msg = c.bad(conv_op(&[1, 1], &[0, 0], &[1, 1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "kernel larger than padded input along spatial axis 1", "f32[1,3,8,4]", "f32[2,3,3,5]"]);
    // Stride 2 with dilation: span 2·(3-1)+1 = 5 > 3 + 2·0.
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3, 3, 3, 8]);
    let w = c.input("w", F32, &[2, 3, 3, 1, 1]);
    let msg = c.bad(conv_op(&[2, 1, 1], &[0, 0, 0], &[2, 1, 1], 1, false), &[x, w]);
    has(&msg, &["`conv`", "%2", "kernel larger than padded input along spatial axis 0"]);
}

// ---------------------------------------------------------------- data movement

#[test]
fn upsample_rank_mismatch_and_zero_scale() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 2, 3]);
    c.clone_builder_check(|b| b.upsample_nearest(x, &[2, 2]), "upsample_nearest", &["upsample with 2 scales needs rank 4, found [1,2,3]"]);
    let msg = c.bad(Op::UpsampleNearest { scale: vec![2, 2] }, &[x]);
    has(&msg, &["`upsample_nearest`", "%1", "upsample with 2 scales needs rank 4, found [1,2,3]"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 2, 3, 3]);
    let msg = c.bad(Op::UpsampleNearest { scale: vec![2, 0] }, &[x]);
    has(&msg, &["`upsample_nearest`", "%1", "upsample scale 0", "f32[1,2,3,3]"]);
}

#[test]
fn pad_entry_count() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    c.clone_builder_check(|b| b.pad(x, &[(1, 1)], 0.0), "pad", &["pad has 1 entries for rank-2 operand [2,3]"]);
    let msg = c.bad(Op::Pad { pads: vec![(1, 1)], value: 0.0 }, &[x]);
    has(&msg, &["`pad`", "%1", "pad has 1 entries for rank-2 operand [2,3]"]);
}

#[test]
fn reshape_element_count_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    c.clone_builder_check(|b| b.reshape(x, s(&[4, 2])), "reshape", &["cannot reshape [2,3] (6 elements) to [4,2] (8 elements)"]);
    let msg = c.bad(Op::Reshape { shape: s(&[4, 2]) }, &[x]);
    has(&msg, &["`reshape`", "%1", "cannot reshape [2,3] (6 elements) to [4,2] (8 elements)"]);
    // Symbolic: [batch, 6] cannot become [batch, 4].
    let mut c = Case::new();
    let x = c.input_s("x", F32, vec![Dim::sym("batch"), Dim::from(6usize)]);
    let msg = c.bad(Op::Reshape { shape: vec![Dim::sym("batch"), Dim::from(4usize)] }, &[x]);
    has(&msg, &["`reshape`", "%1", "cannot reshape [batch,6]", "to [batch,4]"]);
}

#[test]
fn transpose_permutation_wrong_length() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3, 4]);
    c.clone_builder_check(|b| b.transpose(x, &[1, 0]), "transpose", &["permutation [1, 0] for rank-3 operand [2,3,4]"]);
    let msg = c.bad(Op::Transpose { perm: vec![1, 0] }, &[x]);
    has(&msg, &["`transpose`", "%1", "permutation [1, 0] for rank-3 operand [2,3,4]"]);
}

#[test]
fn transpose_not_a_permutation() {
    for perm in [vec![0, 0, 1], vec![0, 3, 1]] {
        let mut c = Case::new();
        let x = c.input("x", F32, &[2, 3, 4]);
        let msg = c.bad(Op::Transpose { perm: perm.clone() }, &[x]);
        has(&msg, &["`transpose`", "%1", &format!("{perm:?} is not a permutation of 0..3"), "f32[2,3,4]"]);
    }
}

#[test]
fn expand_incompatible_shape() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[3, 2]);
    c.clone_builder_check(|b| b.expand(x, s(&[3, 4])), "expand", &["cannot expand [3,2] to [3,4]"]);
    let msg = c.bad(Op::Expand { shape: s(&[3, 4]) }, &[x]);
    has(&msg, &["`expand`", "%1", "cannot expand [3,2] to [3,4]"]);
    // Expand never drops axes.
    let mut c = Case::new();
    let x = c.input("x", F32, &[1, 3]);
    let msg = c.bad(Op::Expand { shape: s(&[3]) }, &[x]);
    has(&msg, &["`expand`", "%1", "cannot expand [1,3] to [3]"]);
}

#[test]
fn concat_axis_out_of_range() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let msg = c.bad(Op::Concat { axis: 2 }, &[x, x]);
    has(&msg, &["`concat`", "%1", "concat axis 2 out of range for rank 2", "f32[2,3]"]);
}

#[test]
fn concat_dtype_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let y = c.input("y", F16, &[2, 3]);
    let msg = c.bad(Op::Concat { axis: 0 }, &[x, y]);
    has(&msg, &["`concat`", "%2", "operand 1: dtypes differ (f32 vs f16)"]);
}

#[test]
fn concat_rank_mismatch() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3]);
    let y = c.input("y", F32, &[2]);
    let msg = c.bad(Op::Concat { axis: 0 }, &[x, y]);
    has(&msg, &["`concat`", "%2", "operand 1 [2] has a different rank than operand 0 [2,3]"]);
}

#[test]
fn concat_shape_mismatch_off_axis() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 3, 4]);
    let y = c.input("y", F32, &[2, 5, 3]);
    c.clone_builder_check(|b| b.concat(&[x, y], 1), "concat", &["operand 1 [2,5,3] differs from operand 0 [2,3,4] on axis 2"]);
    let msg = c.bad(Op::Concat { axis: 1 }, &[x, y]);
    has(&msg, &["`concat`", "%2", "operand 1 [2,5,3] differs from operand 0 [2,3,4] on axis 2"]);
}

#[test]
fn split_axis_out_of_range() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 6]);
    let msg = c.bad(Op::Split { axis: 2, sizes: vec![Dim::from(1usize)] }, &[x]);
    has(&msg, &["`split`", "%1", "split axis 2 out of range for rank 2", "f32[2,6]"]);
}

#[test]
fn split_into_zero_pieces() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 6]);
    let msg = c.bad(Op::Split { axis: 1, sizes: vec![] }, &[x]);
    has(&msg, &["`split`", "%1", "split into zero pieces"]);
}

#[test]
fn split_sizes_do_not_sum_to_axis() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 6]);
    let sizes = vec![Dim::from(2usize), Dim::from(3usize)];
    let mut b2 = Builder::new();
    b2.graph = c.b.graph.clone();
    let e = b2.split(x, 1, &sizes).unwrap_err().to_string();
    has(&e, &["`split`", "split sizes sum to 5 but axis 1 of [2,6] is 6"]);
    let msg = c.bad(Op::Split { axis: 1, sizes }, &[x]);
    has(&msg, &["`split`", "%1", "split sizes sum to 5 but axis 1 of [2,6] is 6"]);
    // Symbolic sizes must sum to the symbolic axis.
    let mut c = Case::new();
    let x = c.input_s("x", F32, vec![Dim::sym("n")]);
    let msg = c.bad(Op::Split { axis: 0, sizes: vec![Dim::sym("n"), Dim::from(1usize)] }, &[x]);
    has(&msg, &["`split`", "%1", "split sizes sum to 1+n but axis 0 of [n] is n"]);
}

#[test]
fn slice_out_of_bounds() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[4, 2]);
    c.clone_builder_check(|b| b.slice(x, 0, Dim::from(1usize), Dim::from(5usize)), "slice", &["slice 1..5 out of bounds for axis 0 of [4,2]"]);
    let msg = c.bad(Op::Slice { axis: 0, start: Dim::from(1usize), end: Dim::from(5usize) }, &[x]);
    has(&msg, &["`slice`", "%1", "slice 1..5 out of bounds for axis 0 of [4,2]"]);
}

#[test]
fn slice_reversed_or_negative() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[4, 2]);
    let msg = c.bad(Op::Slice { axis: 0, start: Dim::from(3usize), end: Dim::from(2usize) }, &[x]);
    has(&msg, &["`slice`", "%1", "slice 3..2 is empty or reversed", "f32[4,2]"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[4, 2]);
    let msg = c.bad(Op::Slice { axis: 1, start: Dim::Const(-1), end: Dim::from(1usize) }, &[x]);
    has(&msg, &["`slice`", "%1", "slice -1..1"]);
}

#[test]
fn slice_axis_out_of_range() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[4, 2]);
    let msg = c.bad(Op::Slice { axis: 2, start: Dim::from(0usize), end: Dim::from(1usize) }, &[x]);
    has(&msg, &["`slice`", "%1", "slice axis 2 out of range for rank 2", "f32[4,2]"]);
}

#[test]
fn gather_non_integer_indices() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[5, 3]);
    let i = c.input("i", F32, &[2]);
    c.clone_builder_check(|b| b.gather(x, i, 0), "gather", &["indices must be integer, found f32[2]"]);
    let msg = c.bad(Op::Gather { axis: 0 }, &[x, i]);
    has(&msg, &["`gather`", "%2", "indices must be integer, found f32[2]", "%0: f32[5,3]"]);
}

#[test]
fn gather_axis_out_of_range() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[5, 3]);
    let i = c.input("i", I64, &[2]);
    let msg = c.bad(Op::Gather { axis: 2 }, &[x, i]);
    has(&msg, &["`gather`", "%2", "gather axis 2 out of range for rank 2", "f32[5,3]"]);
}

#[test]
fn topk_of_a_scalar() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[]);
    let msg = c.bad(Op::TopK { k: 1 }, &[x]);
    has(&msg, &["`topk`", "%1", "topk of a scalar", "f32[]"]);
}

#[test]
fn topk_k_too_large_or_zero() {
    let mut c = Case::new();
    let x = c.input("x", F32, &[2, 5]);
    let mut b2 = Builder::new();
    b2.graph = c.b.graph.clone();
    let e = b2.topk(x, 6).unwrap_err().to_string();
    has(&e, &["`topk`", "k = 6 out of range for last axis of [2,5]"]);
    let msg = c.bad(Op::TopK { k: 6 }, &[x]);
    has(&msg, &["`topk`", "%1", "k = 6 out of range for last axis of [2,5]"]);
    // k = 0 is rejected even when the last axis is symbolic.
    let mut c = Case::new();
    let x = c.input_s("x", F32, vec![Dim::from(2usize), Dim::sym("n")]);
    let msg = c.bad(Op::TopK { k: 0 }, &[x]);
    has(&msg, &["`topk`", "%1", "k = 0 for topk of [2,n]"]);
}

#[test]
fn moe_weights_dtypes_and_k() {
    let moe = |wd: &[usize], k: usize, logits_dt: DType| {
        let mut c = Case::new();
        let x = c.input("x", F32, &[3, 4]);
        let l = c.input("l", logits_dt, &[3, 2]);
        let wg = c.input("wg", F32, &[2, 5, 4]);
        let wu = c.input("wu", F32, &[2, 5, 4]);
        let wd = c.input("wd", F32, wd);
        c.bad(Op::Moe { top_k: k, norm_topk: true, act: UnaryOp::Silu }, &[x, l, wg, wu, wd])
    };
    has(&moe(&[2, 5, 4], 1, F32), &["`moe`", "%5", "w_down [2,5,4] must be [E, H, I] = [2,4,5]"]);
    has(&moe(&[2, 4, 5], 3, F32), &["`moe`", "top_k = 3 exceeds the 2 experts of logits [3,2]"]);
    has(&moe(&[2, 4, 5], 0, F32), &["`moe`", "top_k = 0"]);
    has(&moe(&[2, 4, 5], 1, F16), &["`moe`", "x and logits: dtypes differ (f32 vs f16)"]);
    let mut c = Case::new();
    let x = c.input("x", F32, &[3, 4]);
    let l = c.input("l", F32, &[7, 2]);
    let w = c.input("w", F32, &[2, 4, 4]);
    let msg = c.bad(Op::Moe { top_k: 1, norm_topk: false, act: UnaryOp::Relu }, &[x, l, w, w, w]);
    has(&msg, &["`moe`", "logits [7,2] and x [3,4] differ in token count"]);
}

// ---------------------------------------------------------------- verifier structure

#[test]
fn recorded_type_differs_from_inferred() {
    // transpose [2,3] recorded as [2,3] instead of [3,2].
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2, 3])).unwrap();
    let t = b.graph.add_unchecked(Op::Transpose { perm: vec![1, 0] }, &[x], vec![tt(F32, &[2, 3])]);
    b.output("y", ValueRef::new(t, 0));
    let msg = verify_graph(&b.graph).unwrap_err().to_string();
    has(&msg, &["`transpose`", "producing %1", "recorded type f32[2,3] but operands give f32[3,2]"]);
    // Wrong dtype recorded.
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2, 3])).unwrap();
    let y = b.input("y", F32, s(&[3])).unwrap();
    let n = b.graph.add_unchecked(Op::Compare(CmpOp::Eq), &[x, y], vec![tt(F32, &[2, 3])]);
    b.output("y", ValueRef::new(n, 0));
    let msg = verify_graph(&b.graph).unwrap_err().to_string();
    has(&msg, &["`eq`", "producing %2", "recorded type f32[2,3] but operands give bool[2,3]"]);
    // Wrong number of results recorded for a multi-result op.
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2, 5])).unwrap();
    let n = b.graph.add_unchecked(Op::TopK { k: 2 }, &[x], vec![tt(F32, &[2, 2])]);
    b.output("v", ValueRef::new(n, 0));
    let msg = verify_graph(&b.graph).unwrap_err().to_string();
    has(&msg, &["`topk`", "producing %1", "recorded type f32[2,2] but operands give f32[2,2], i64[2,2]"]);
    // An input whose recorded type differs from its declared type.
    let mut g = Graph::new();
    let n = g.add_unchecked(Op::Input { name: "x".into(), ty: tt(F32, &[4]) }, &[], vec![tt(F32, &[5])]);
    g.outputs.push(("x".into(), ValueRef::new(n, 0)));
    let msg = verify_graph(&g).unwrap_err().to_string();
    has(&msg, &["`input`", "producing %0", "recorded type f32[5] but operands give f32[4]"]);
}

#[test]
fn duplicate_input_names() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    let x2 = b.input("x", F32, s(&[2])).unwrap();
    let y = b.add(x, x2).unwrap();
    b.output("y", y);
    let e = b.finish().unwrap_err();
    assert!(matches!(e, IrError::Verify { .. }));
    has(&e.to_string(), &["`input`", "producing %1", "duplicate input name `x`"]);
}

#[test]
fn duplicate_output_names() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    let y = b.unary(UnaryOp::Neg, x).unwrap();
    b.output("y", x);
    b.output("y", y);
    let e = b.finish().unwrap_err();
    assert!(matches!(e, IrError::Graph(_)));
    has(&e.to_string(), &["duplicate output name `y`"]);
}

#[test]
fn no_outputs() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    b.unary(UnaryOp::Neg, x).unwrap();
    let e = b.finish().unwrap_err();
    assert_eq!(e, IrError::Graph("graph has no outputs".into()));
}

#[test]
fn output_refers_to_missing_result() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    b.output("y", ValueRef::new(x.node, 3));
    let e = b.finish().unwrap_err();
    assert!(matches!(e, IrError::Graph(_)));
    has(&e.to_string(), &["output `y`", "`input` node 0 has no result 3"]);
}

#[test]
fn cycle() {
    let mut g = Graph::new();
    let a = g.add_unchecked(Op::Unary(UnaryOp::Neg), &[], vec![tt(F32, &[2])]);
    let b = g.add_unchecked(Op::Unary(UnaryOp::Abs), &[ValueRef::new(a, 0)], vec![tt(F32, &[2])]);
    g.g.add_edge(b, a, Edge { port: 0, slot: 0 });
    g.outputs.push(("y".into(), ValueRef::new(b, 0)));
    let e = verify_graph(&g).unwrap_err();
    assert!(matches!(e, IrError::Graph(_)));
    has(&e.to_string(), &["graph has a cycle through 2 nodes"]);
    // A self-loop is a cycle too.
    let mut g = Graph::new();
    let a = g.add_unchecked(Op::Unary(UnaryOp::Neg), &[], vec![tt(F32, &[2])]);
    g.g.add_edge(a, a, Edge { port: 0, slot: 0 });
    g.outputs.push(("y".into(), ValueRef::new(a, 0)));
    has(&verify_graph(&g).unwrap_err().to_string(), &["cycle through 1 nodes"]);
}

#[test]
fn operand_slots_not_contiguous() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    let y = b.input("y", F32, s(&[2])).unwrap();
    let n = b.graph.add_unchecked(Op::Binary(BinaryOp::Add), &[x], vec![tt(F32, &[2])]);
    b.graph.g.add_edge(y.node, n, Edge { port: 0, slot: 2 });
    b.output("z", ValueRef::new(n, 0));
    let msg = verify_graph(&b.graph).unwrap_err().to_string();
    has(&msg, &["`add`", "producing %2", "operand slots [0, 2] are not 0..2"]);
}

#[test]
fn operand_refers_to_missing_result() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    let n = b.graph.add_unchecked(Op::Unary(UnaryOp::Neg), &[ValueRef::new(x.node, 1)], vec![tt(F32, &[2])]);
    b.output("z", ValueRef::new(n, 0));
    let msg = verify_graph(&b.graph).unwrap_err().to_string();
    has(&msg, &["`neg`", "producing %1", "operand 0: graph: `input` node 0 has no result 1"]);
}

#[test]
fn label_and_multi_result_names_in_messages() {
    // The failing node's label follows its %k; operands of multi-result
    // ops are named %k#p.
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2, 6])).unwrap();
    let parts = b.split(x, 1, &[Dim::from(2usize), Dim::from(4usize)]).unwrap();
    b.set_scope(Some("blocks.0.attn"));
    let n = b.graph.add_unchecked(Op::Binary(BinaryOp::Add), &[parts[0], parts[1]], vec![tt(F32, &[2, 4])]);
    b.graph.node_mut(n).label = Some("blocks.0.attn".into());
    b.output("y", ValueRef::new(n, 0));
    let msg = verify_graph(&b.graph).unwrap_err().to_string();
    has(&msg, &["`add`", "producing %2 (blocks.0.attn)", "shapes [2,2] and [2,4] do not broadcast", "(operands %1#0: f32[2,2], %1#1: f32[2,4])"]);
    // The builder's error names the scope.
    let e = b.add(parts[0], parts[1]).unwrap_err().to_string();
    has(&e, &["`add`", "add in blocks.0.attn", "f32[2,2], f32[2,4]"]);
}

#[test]
fn numbering_follows_topological_order_not_insertion() {
    // Node indices are reused after removal; %k follows the topological
    // order with ties by node index.
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    let dead = b.unary(UnaryOp::Exp, x).unwrap();
    let y = b.input("y", F32, s(&[3])).unwrap();
    b.graph.remove_node(dead.node);
    let n = b.graph.add_unchecked(Op::Binary(BinaryOp::Mul), &[x, y], vec![tt(F32, &[2])]);
    b.output("z", ValueRef::new(n, 0));
    let names = crate::verify::value_names(&b.graph).unwrap();
    let k = names[&n];
    let msg = verify_graph(&b.graph).unwrap_err().to_string();
    has(&msg, &["`mul`", &format!("producing %{k}:"), "shapes [2] and [3] do not broadcast", "%0: f32[2]"]);
}

#[test]
fn valid_graphs_verify() {
    let d = |v: usize| Dim::from(v);
    let mut b = Builder::new();
    let x = b.input("x", F32, vec![Dim::sym("batch"), d(4), d(8)]).unwrap();
    let w = b.param("w", F32, s(&[8, 8])).unwrap();
    let h = b.linear(x, w, None).unwrap();
    let q = b.reshape(h, vec![Dim::sym("batch"), d(4), d(2), d(4)]).unwrap();
    let q = b.transpose(q, &[0, 2, 1, 3]).unwrap();
    let a = b.attention(q, q, q, None, None, true).unwrap();
    let img = b.input("img", F16, s(&[1, 4, 6, 6])).unwrap();
    let cw = b.param("cw", F16, s(&[8, 2, 3, 3])).unwrap();
    let cv = b.conv(img, cw, None, &[2, 2], &[1, 1], &[1, 1], 2).unwrap();
    let gn = b.group_norm(cv, None, 4, 1e-5).unwrap();
    let (tv, ti) = b.topk(a, 2).unwrap();
    b.output("a", a);
    b.output("gn", gn);
    b.output("tv", tv);
    b.output("ti", ti);
    let g = b.finish().unwrap();
    verify_graph(&g).unwrap();
    assert_eq!(g.value_type(cv).unwrap().shape, s(&[1, 8, 3, 3]));
    assert_eq!(g.value_type(ti).unwrap().dtype, I64);
}

// ---------------------------------------------------------------- programs

fn tiny_graph() -> Graph {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2])).unwrap();
    b.output("x", x);
    b.finish().unwrap()
}

#[test]
fn program_duplicate_stage() {
    let mut p = Program::single("s", tiny_graph());
    p.stages.push(Stage { name: "s".into(), graph: tiny_graph() });
    let e = verify_program(&p).unwrap_err();
    assert_eq!(e, IrError::Graph("duplicate stage `s`".into()));
}

#[test]
fn program_control_refers_to_missing_stage() {
    let mut p = Program::single("s", tiny_graph());
    p.control = Control::Forward { stage: "t".into() };
    let e = verify_program(&p).unwrap_err();
    assert_eq!(e, IrError::Graph("control refers to missing stage `t`".into()));
    verify_program(&Program::single("s", tiny_graph())).unwrap();
}

#[test]
fn program_stage_errors_name_the_stage() {
    let mut b = Builder::new();
    let x = b.input("x", F32, s(&[2, 3])).unwrap();
    let t = b.graph.add_unchecked(Op::Transpose { perm: vec![0, 0] }, &[x], vec![tt(F32, &[2, 3])]);
    b.output("y", ValueRef::new(t, 0));
    let p = Program::single("denoise", b.graph);
    let msg = verify_program(&p).unwrap_err().to_string();
    has(&msg, &["`transpose`", "producing %1 in stage `denoise`", "[0, 0] is not a permutation of 0..2"]);
    let mut g = tiny_graph();
    g.outputs.clear();
    let p = Program::single("decode", g);
    assert_eq!(verify_program(&p).unwrap_err(), IrError::Graph("stage `decode`: graph has no outputs".into()));
}
