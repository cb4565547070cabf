use super::*;
use omnic_ir::regions::{region_inputs, region_outputs};
use omnic_ir::{Builder, DType, Graph, ReduceOp, UnaryOp};

/// The whole graph's compute ops as one kernel (arguments: what they read
/// except literals and iotas; results: the outputs).
fn one_kernel(g: &Graph) -> KernelPlan {
    let members: Vec<_> = g.topo_order().unwrap().into_iter().filter(|&n| !g.node(n).op.is_source()).collect();
    let args = region_inputs(g, &members).into_iter().filter(|v| !matches!(g.node(v.node).op, Op::Constant(_) | Op::Iota { .. })).collect();
    let results = region_outputs(g, &members);
    KernelPlan { members, args, results }
}

fn analyse(b: Builder) -> (Vec<KernelSplit>, KernelPlan) {
    let g = b.finish().unwrap();
    let plan = one_kernel(&g);
    (kernel_splits(&g, &plan), plan)
}

fn seq() -> (Dim, Dim) {
    (Dim::sym("b"), Dim::sym("s"))
}

#[test]
fn modulated_layer_norm_splits_along_batch_and_rows() {
    // [b, s, 64] layer norm, then · (1 + scale[b, 1, 64]) + shift[64].
    let (bd, s) = seq();
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![bd.clone(), s.clone(), 64.into()]).unwrap();
    let sc = b.input("scale", DType::F32, vec![bd.clone(), 1.into(), 64.into()]).unwrap();
    let sh = b.param("shift", DType::F32, vec![64.into()]).unwrap();
    let n = b.layer_norm(x, None, None, 1e-6).unwrap();
    let one = b.add_scalar(sc, 1.0).unwrap();
    let m = b.mul(n, one).unwrap();
    let y = b.add(m, sh).unwrap();
    b.output("y", y);
    let (sp, plan) = analyse(b);
    // Along b: x and scale sliced at axis 0, shift whole. Along s: scale broadcast (whole).
    let by = |v: &ValueRef| plan.args.iter().position(|a| a == v).unwrap();
    let (ix, isc, ish) = (by(&x), by(&sc), by(&sh));
    assert_eq!(sp.len(), 2, "{sp:?}");
    assert_eq!((sp[0].args[ix], sp[0].args[isc], sp[0].args[ish], &sp[0].results[..]), (Some(0), Some(0), None, &[Some(0)][..]));
    assert_eq!((sp[1].args[ix], sp[1].args[isc], sp[1].args[ish], &sp[1].results[..]), (Some(1), None, None, &[Some(1)][..]));
}

#[test]
fn reduction_over_the_rows_does_not_split() {
    // Mean over s: every output element reads every row.
    let (_, s) = seq();
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![s.clone(), 64.into()]).unwrap();
    let m = b.reduce(ReduceOp::Mean, x, &[0], true).unwrap();
    let y = b.sub(x, m).unwrap();
    b.output("y", y);
    let (sp, _) = analyse(b);
    assert!(sp.is_empty(), "{sp:?}");
    // Softmax along the rows: not separable either; along the other axis it is.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![s.clone(), 64.into()]).unwrap();
    let y = b.softmax(x, 0).unwrap();
    b.output("y", y);
    assert!(analyse(b).0.is_empty());
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![s.clone(), 64.into()]).unwrap();
    let y = b.softmax(x, 1).unwrap();
    b.output("y", y);
    assert_eq!(analyse(b).0.len(), 1);
}

#[test]
fn transpose_moves_the_row_axis() {
    // [1, s, 512] → reshape [1, s, 8, 64] → transpose → [1, 8, s, 64] (a head split).
    let (_, s) = seq();
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![1.into(), s.clone(), 512.into()]).unwrap();
    let r = b.reshape(x, vec![1.into(), s.clone(), 8.into(), 64.into()]).unwrap();
    let t = b.transpose(r, &[0, 2, 1, 3]).unwrap();
    let y = b.unary(UnaryOp::Silu, t).unwrap();
    b.output("y", y);
    let (sp, _) = analyse(b);
    assert_eq!(sp.len(), 1, "{sp:?}");
    assert_eq!((&sp[0].args[..], &sp[0].results[..]), (&[Some(1)][..], &[Some(2)][..]));
}

#[test]
fn reshape_merging_the_rows_does_not_split() {
    // [s, 8, 64] → [s·8, 64]: the row axis is merged with the heads.
    let (_, s) = seq();
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![s.clone(), 8.into(), 64.into()]).unwrap();
    let r = b.reshape(x, vec![s.mul(&8.into()), 64.into()]).unwrap();
    let y = b.unary(UnaryOp::Neg, r).unwrap();
    b.output("y", y);
    assert!(analyse(b).0.is_empty());
    // [4, s, 64] → [s, 4, 64] by reshape: rows would interleave.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![4.into(), s.clone(), 64.into()]).unwrap();
    let r = b.reshape(x, vec![s.clone(), 4.into(), 64.into()]).unwrap();
    let y = b.unary(UnaryOp::Neg, r).unwrap();
    b.output("y", y);
    assert!(analyse(b).0.is_empty());
}

#[test]
fn cutting_along_the_rows_or_reading_their_size_elsewhere_does_not_split() {
    let (txt, img) = (Dim::sym("txt"), Dim::sym("img"));
    // A joint sequence split into its parts: the split is along the rows.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![txt.add(&img), 64.into()]).unwrap();
    let parts = b.split(x, 0, &[txt.clone(), img.clone()]).unwrap();
    let y = b.unary(UnaryOp::Neg, parts[1]).unwrap();
    b.output("y", y);
    assert!(analyse(b).0.is_empty());
    // The row symbol in another dimension (a square [s, s] table).
    let s = Dim::sym("s");
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![s.clone(), 64.into()]).unwrap();
    let m = b.input("m", DType::F32, vec![s.clone(), s.clone()]).unwrap();
    let y = b.unary(UnaryOp::Neg, x).unwrap();
    let z = b.unary(UnaryOp::Neg, m).unwrap();
    b.output("y", y);
    b.output("z", z);
    assert!(analyse(b).0.is_empty());
    // Static rows: the kernel's types fix the extent.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![320.into(), 64.into()]).unwrap();
    let y = b.unary(UnaryOp::Neg, x).unwrap();
    b.output("y", y);
    assert!(analyse(b).0.is_empty());
}

#[test]
fn broadcast_and_norm_weights_are_passed_whole() {
    // rms_norm over the last axis with weight [64] and a rope table [s, 64]
    // broadcast over the heads of [1, 8, s, 64].
    let s = Dim::sym("s");
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![1.into(), 8.into(), s.clone(), 64.into()]).unwrap();
    let w = b.param("w", DType::F32, vec![64.into()]).unwrap();
    let cos = b.input("cos", DType::F32, vec![s.clone(), 64.into()]).unwrap();
    let n = b.rms_norm(x, Some(w), 1e-6).unwrap();
    let y = b.mul(n, cos).unwrap();
    b.output("y", y);
    let (sp, plan) = analyse(b);
    let by = |v: &ValueRef| plan.args.iter().position(|a| a == v).unwrap();
    assert_eq!(sp.len(), 1, "{sp:?}");
    assert_eq!((sp[0].args[by(&x)], sp[0].args[by(&w)], sp[0].args[by(&cos)]), (Some(2), None, Some(0)));
    assert_eq!(sp[0].results, vec![Some(2)]);
}

#[test]
fn iota_over_the_rows_does_not_split() {
    // x + iota(s) as a column: row indices would restart in each block.
    let s = Dim::sym("s");
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![s.clone(), 1.into()]).unwrap();
    let i = b.iota(s.clone(), DType::F32).unwrap();
    let ic = b.reshape(i, vec![s.clone(), 1.into()]).unwrap();
    let y = b.add(x, ic).unwrap();
    b.output("y", y);
    assert!(analyse(b).0.is_empty());
}
