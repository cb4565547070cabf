//! Data movement: transpose, expand, concat, split, slice (symbolic start
//! and end), pad, gather, upsample, reshape (inside a kernel and as a view),
//! iota and literals, against the reference evaluator.

use super::elementwise::{f32t, shape};
use super::support::{check, compile, stage, TOL};
use omnic_ir::eval::Tensor;
use omnic_ir::{Builder, DType, Dim, Literal, UnaryOp};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

#[test]
fn transpose_expand_and_symbolic_concat() {
    let mut rng = StdRng::seed_from_u64(31);
    let (n, s, t) = (Dim::sym("n"), Dim::sym("s"), Dim::sym("t"));
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![n.clone(), s.clone(), 4.into()]).unwrap();
    let y = b.input("y", DType::F32, vec![n.clone(), t.clone(), 4.into()]).unwrap();
    let c = b.concat(&[x, y, x], 1).unwrap(); // [n, 2s+t, 4]
    let tr = b.transpose(c, &[2, 0, 1]).unwrap(); // [4, n, 2s+t]
    let e = b.unary(UnaryOp::Neg, tr).unwrap();
    let k = b.input("k", DType::F32, vec![1.into(), 4.into()]).unwrap();
    let ex = b.expand(k, vec![n.clone(), 3.into(), 4.into()]).unwrap();
    let c2 = b.concat(&[ex, x], 1).unwrap(); // [n, 3+s, 4]
    b.output("e", e);
    b.output("c2", c2);
    let st = stage("movement1", b.finish().unwrap());
    for (nn, ss, tt) in [(2, 3, 1), (1, 1, 4)] {
        let inputs = HashMap::from([
            ("x".to_string(), f32t(&mut rng, &[nn, ss, 4], -1.0, 1.0)),
            ("y".to_string(), f32t(&mut rng, &[nn, tt, 4], -1.0, 1.0)),
            ("k".to_string(), f32t(&mut rng, &[1, 4], -1.0, 1.0)),
        ]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

#[test]
fn split_and_symbolic_slice() {
    let mut rng = StdRng::seed_from_u64(32);
    let (txt, img) = (Dim::sym("txt"), Dim::sym("img"));
    // A joint sequence [1, txt+img, 8] split back into its parts, and
    // slices with symbolic bounds; `t` and `i` bind `txt` and `img` (a sum
    // binds nothing).
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![1.into(), txt.add(&img), 8.into()]).unwrap();
    let tt = b.input("t", DType::F32, vec![txt.clone()]).unwrap();
    let ii = b.input("i", DType::F32, vec![img.clone()]).unwrap();
    let parts = b.split(x, 1, &[txt.clone(), img.clone()]).unwrap();
    let a = b.unary(UnaryOp::Sin, parts[0]).unwrap();
    let s = b.slice(x, 1, txt.clone(), txt.add(&img)).unwrap();
    let s2 = b.slice(x, 2, 2.into(), 6.into()).unwrap();
    let halves = b.chunk(x, 2, -1).unwrap();
    let m = b.mul(halves[0], halves[1]).unwrap();
    let tn = b.unary(UnaryOp::Neg, tt).unwrap();
    b.output("a", a);
    b.output("img", parts[1]);
    b.output("s", s);
    b.output("s2", s2);
    b.output("m", m);
    b.output("tn", tn);
    b.output("i", ii);
    let st = stage("split_slice_bound", b.finish().unwrap());
    for (t, i) in [(2, 5), (3, 1), (0, 4)] {
        let inputs = HashMap::from([
            ("x".to_string(), f32t(&mut rng, &[1, t + i, 8], -2.0, 2.0)),
            ("t".to_string(), f32t(&mut rng, &[t], -1.0, 1.0)),
            ("i".to_string(), f32t(&mut rng, &[i], -1.0, 1.0)),
        ]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

#[test]
fn pad_all_dtypes() {
    for dt in DType::ALL {
        let mut b = Builder::new();
        let x = b.input("x", dt, vec![Dim::sym("h"), 3.into()]).unwrap();
        let p = b.pad(x, &[(1, 2), (0, 3)], if dt == DType::Bool { 1.0 } else { -1.5 }).unwrap();
        b.output("p", p);
        let st = stage(&format!("pad_{dt}"), b.finish().unwrap());
        let x = match dt {
            d if d.is_float() => Tensor::from_f64(d, &[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            DType::Bool => Tensor::from_bool(&[2, 3], vec![false, true, false, true, true, false]),
            d => Tensor::from_i64(d, &[2, 3], vec![1, -2, 3, 4, 5, 6]),
        };
        check(&st, &HashMap::from([("x".to_string(), x)]), &HashMap::new(), TOL);
    }
}

#[test]
fn gather_embedding_and_middle_axis() {
    let mut rng = StdRng::seed_from_u64(33);
    for idt in [DType::I64, DType::I32] {
        let mut b = Builder::new();
        let table = b.param("emb", DType::F32, shape(&[10, 6])).unwrap();
        let ids = b.input("ids", idt, vec![Dim::sym("b"), Dim::sym("s")]).unwrap();
        let e = b.gather(table, ids, 0).unwrap(); // [b, s, 6]
        let x = b.input("x", DType::F32, shape(&[2, 5, 3])).unwrap();
        let j = b.input("j", idt, shape(&[4])).unwrap();
        let g = b.gather(x, j, 1).unwrap(); // [2, 4, 3]
        let s = b.input("s0", idt, shape(&[])).unwrap();
        let g0 = b.gather(x, s, 2).unwrap(); // [2, 5]
        b.output("e", e);
        b.output("g", g);
        b.output("g0", g0);
        let st = stage(&format!("gather_{idt}"), b.finish().unwrap());
        let inputs = HashMap::from([
            ("ids".to_string(), Tensor::from_i64(idt, &[2, 3], vec![0, 9, -1, 4, -10, 5])),
            ("x".to_string(), f32t(&mut rng, &[2, 5, 3], -1.0, 1.0)),
            ("j".to_string(), Tensor::from_i64(idt, &[4], vec![4, 0, -2, 2])),
            ("s0".to_string(), Tensor::from_i64(idt, &[], vec![-1])),
        ]);
        let weights = HashMap::from([("emb".to_string(), f32t(&mut rng, &[10, 6], -1.0, 1.0))]);
        check(&st, &inputs, &weights, TOL);
    }
}

#[test]
fn upsample_nearest_2d_3d() {
    let mut rng = StdRng::seed_from_u64(34);
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![1.into(), 3.into(), Dim::sym("h"), Dim::sym("w")]).unwrap();
    let y = b.upsample_nearest(x, &[2, 3]).unwrap();
    let v = b.input("v", DType::F16, shape(&[1, 2, 2, 2, 3])).unwrap();
    let u = b.upsample_nearest(v, &[1, 2, 2]).unwrap();
    b.output("y", y);
    b.output("u", u);
    let st = stage("upsample", b.finish().unwrap());
    let vs: Vec<f64> = (0..24).map(|i| i as f64 * 0.5).collect();
    let inputs =
        HashMap::from([("x".to_string(), f32t(&mut rng, &[1, 3, 2, 5], -1.0, 1.0)), ("v".to_string(), Tensor::from_f64(DType::F16, &[1, 2, 2, 2, 3], vs))]);
    check(&st, &inputs, &HashMap::new(), TOL);
}

/// Reshape between kernels is a view; inside a kernel (its operand computed
/// there and a kernel op reading it) it is a `tensor.reshape`, also of a
/// strided slice; head split/merge as in attention layouts.
#[test]
fn reshape_views_and_inside_kernels() {
    let mut rng = StdRng::seed_from_u64(35);
    let (bt, sq) = (Dim::sym("b"), Dim::sym("s"));
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![bt.clone(), sq.clone(), 12.into()]).unwrap();
    let h = b.reshape(x, vec![bt.clone(), sq.clone(), 3.into(), 4.into()]).unwrap(); // a view
    let t = b.transpose(h, &[0, 2, 1, 3]).unwrap(); // [b, 3, s, 4]
    let t = b.unary(UnaryOp::Exp, t).unwrap();
    let back = b.transpose(t, &[0, 2, 1, 3]).unwrap();
    let merged = b.reshape(back, vec![bt.clone(), sq.clone(), 12.into()]).unwrap(); // a view of a kernel result
    let sl = b.slice(x, 2, 2.into(), 10.into()).unwrap(); // [b, s, 8]
    let rs = b.reshape(sl, vec![bt.clone(), sq.mul(&Dim::Const(2)), 4.into()]).unwrap();
    let r = b.unary(UnaryOp::Tanh, rs).unwrap();
    b.output("merged", merged);
    b.output("r", r);
    b.output("h", h);
    let mut g = b.finish().unwrap();
    // One region for slice → reshape → tanh, so the reshape is inside a kernel.
    let fused = [sl.node, rs.node, r.node];
    let mut k = 0;
    for n in g.topo_order().unwrap() {
        if g.node(n).op.is_source() {
            continue;
        }
        let id = if fused.contains(&n) { 100 } else { k };
        k += 1;
        g.node_mut(n).annotations.push(omnic_ir::Annotation::Dispatch(id));
    }
    let st = stage("reshape", g);
    let c = compile(&st).unwrap();
    let kernels: Vec<&str> = c.kernels.iter().map(|k| k.mlir.as_str()).collect();
    assert!(kernels.iter().any(|t| t.contains("tensor.reshape")), "no reshape inside a kernel:\n{}", kernels.join("\n"));
    let views = c.schedule.values.iter().filter(|v| matches!(v.def, omnic_runtime::artifact::manifest::ValueDef::View { .. })).count();
    assert!(views >= 2, "{views} views");
    for (nb, ns) in [(2, 3), (1, 1)] {
        let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[nb, ns, 12], -1.0, 1.0))]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}

/// Literals of every dtype read by kernels (inlined) and returned.
#[test]
fn literals_and_iota_all_dtypes() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[2, 3])).unwrap();
    let c = b.constant(Literal { dtype: DType::F32, shape: vec![3], values: vec![0.1, f64::INFINITY, -2.0] }).unwrap();
    let y = b.mul(x, c).unwrap();
    let ci = b.constant(Literal { dtype: DType::I32, shape: vec![2, 1], values: vec![3.0, -4.0] }).unwrap();
    let cf = b.cast(ci, DType::F32).unwrap();
    let y = b.add(y, cf).unwrap();
    let cb = b.constant(Literal { dtype: DType::Bool, shape: vec![3], values: vec![1.0, 0.0, 1.0] }).unwrap();
    let w = b.where_(cb, y, x).unwrap();
    let ch = b.constant(Literal { dtype: DType::F16, shape: vec![2], values: vec![0.1, 3.3] }).unwrap();
    let chc = b.cast(ch, DType::F32).unwrap();
    let io = b.iota(5.into(), DType::I32).unwrap();
    let c2 = b.concat(&[ci, ci], 0).unwrap();
    b.output("w", w);
    b.output("chc", chc);
    b.output("io", io);
    b.output("c2", c2);
    b.output("cb", cb);
    let st = stage("literals", b.finish().unwrap());
    let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[2, 3], &[1.0, -2.0, 3.0, 0.5, 0.0, -1.0]))]);
    check(&st, &inputs, &HashMap::new(), TOL);
}

/// A kernel that splits a joint sequence `[1, txt+img, 8]` but returns
/// neither part cannot derive `txt` or `img` from its own sizes: a stage
/// input carrying one is added as an extra (size-only) argument.
#[test]
fn size_carriers_for_underivable_symbols() {
    let mut rng = StdRng::seed_from_u64(36);
    let (txt, img) = (Dim::sym("txt"), Dim::sym("img"));
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![1.into(), txt.add(&img), 8.into()]).unwrap();
    let tt = b.input("t", DType::F32, vec![txt.clone(), 2.into()]).unwrap();
    let ii = b.input("i", DType::F32, vec![img.clone()]).unwrap();
    let parts = b.split(x, 1, &[txt.clone(), img.clone()]).unwrap();
    let s = b.reduce(omnic_ir::ReduceOp::Sum, parts[1], &[1], false).unwrap();
    let r = b.reduce(omnic_ir::ReduceOp::Max, parts[0], &[1], false).unwrap();
    let y = b.add(s, r).unwrap();
    b.output("y", y);
    b.output("t", tt);
    b.output("i", ii);
    let mut g = b.finish().unwrap();
    for n in g.topo_order().unwrap() {
        if !g.node(n).op.is_source() {
            g.node_mut(n).annotations.push(omnic_ir::Annotation::Dispatch(0));
        }
    }
    let st = stage("carriers", g);
    let c = compile(&st).unwrap();
    let omnic_runtime::artifact::manifest::Step::Kernel { args, .. } = &c.schedule.steps[0] else { panic!("not a kernel") };
    // x and one carrier (with `img` known, `txt` = (txt+img) - img).
    assert_eq!(args.len(), 2, "{:?}", c.schedule.steps);
    for (t, i) in [(2, 5), (1, 1)] {
        let inputs = HashMap::from([
            ("x".to_string(), f32t(&mut rng, &[1, t + i, 8], -2.0, 2.0)),
            ("t".to_string(), f32t(&mut rng, &[t, 2], -1.0, 1.0)),
            ("i".to_string(), f32t(&mut rng, &[i], -1.0, 1.0)),
        ]);
        check(&st, &inputs, &HashMap::new(), TOL);
    }
}
