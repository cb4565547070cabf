//! `linear → split` and `concat → linear` along the last axis become
//! `LinearSections` ukernel steps (no split/concat kernel), and match the
//! reference evaluator; a split whose sections are not multiples of 32
//! keeps the unfused path.

use super::elementwise::{f32t, shape};
use super::support::{check, stage, Tol};
use omnic_codegen::{schedule_stage, KernelCache};
use omnic_ir::{Annotation, Builder, DType, Dim, Graph, UnaryOp};
use omnic_runtime::artifact::manifest::{Step, Ukernel};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

const WITH_GEMM: Tol = Tol { rtol: 1e-5, atol: 1e-5 };

/// `linear(x) → split [a, 32, c] → (heads of the first piece, silu, gelu)
/// → concat → linear`, as in a FLUX single block; `one_region` puts every
/// compute op in dispatch region 0.
fn graph(a: i64, c: i64, one_region: bool) -> Graph {
    let s = Dim::sym("s");
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![1.into(), s.clone(), 48.into()]).unwrap();
    let w1 = b.param("w1", DType::F32, shape(&[(a + 32 + c) as usize, 48])).unwrap();
    let b1 = b.param("b1", DType::F32, shape(&[(a + 32 + c) as usize])).unwrap();
    let w2 = b.param("w2", DType::F32, shape(&[24, (32 + c) as usize])).unwrap();
    let pre = b.unary(UnaryOp::Silu, x).unwrap();
    let h = b.linear(pre, w1, Some(b1)).unwrap();
    let parts = b.split(h, -1, &[a.into(), 32.into(), c.into()]).unwrap();
    let q = b.reshape(parts[0], vec![1.into(), s.clone(), 2.into(), (a / 2).into()]).unwrap();
    let q = b.transpose(q, &[0, 2, 1, 3]).unwrap();
    let k = b.unary(UnaryOp::Silu, parts[1]).unwrap();
    let m = b.unary(UnaryOp::Gelu, parts[2]).unwrap();
    let cat = b.concat(&[k, m], -1).unwrap();
    let y = b.linear(cat, w2, None).unwrap();
    b.output("q", q);
    b.output("y", y);
    let mut g = b.finish().unwrap();
    if one_region {
        for n in g.topo_order().unwrap() {
            if !g.node(n).op.is_source() {
                g.node_mut(n).annotations.push(Annotation::Dispatch(0));
            }
        }
    }
    g
}

fn run_case(name: &str, a: i64, c: i64, one_region: bool) -> (Vec<Step>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(77);
    let st = stage(name, graph(a, c, one_region));
    let mut cache = KernelCache::new();
    let sched = schedule_stage(&st, &mut cache).unwrap();
    let origins = cache.kernels.iter().map(|k| k.origin.clone()).collect();
    let n1 = (a + 32 + c) as usize;
    let weights = HashMap::from([
        ("w1".to_string(), f32t(&mut rng, &[n1, 48], -0.3, 0.3)),
        ("b1".to_string(), f32t(&mut rng, &[n1], -0.3, 0.3)),
        ("w2".to_string(), f32t(&mut rng, &[24, 32 + c as usize], -0.3, 0.3)),
    ]);
    for s in [1, 5, 17] {
        let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[1, s, 48], -1.0, 1.0))]);
        check(&st, &inputs, &weights, WITH_GEMM);
    }
    (sched.steps, origins)
}

fn has_op(origins: &[String], op: &str) -> bool {
    origins.iter().any(|o| o.split(": ").nth(1).is_some_and(|ops| ops.split(['(', ',', ' ']).any(|t| t == op)))
}

#[test]
fn split_and_concat_fold_into_the_linear_steps() {
    for one_region in [true, false] {
        let (steps, origins) = run_case("sections", 64, 40, one_region);
        let sections: Vec<&Ukernel> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Ukernel { op: op @ Ukernel::LinearSections { .. }, .. } => Some(op),
                _ => None,
            })
            .collect();
        // The first linear writes the split's three pieces, the second reads the concat's two operands.
        assert_eq!(sections, [&Ukernel::LinearSections { bias: true, inputs: 1 }, &Ukernel::LinearSections { bias: false, inputs: 2 }], "{steps:?}");
        let results: Vec<usize> = steps.iter().filter_map(|s| if let Step::Ukernel { results, .. } = s { Some(results.len()) } else { None }).collect();
        assert_eq!(results, [3, 1]);
        assert!(!has_op(&origins, "split") && !has_op(&origins, "concat"), "region {one_region}: a split/concat kernel remains: {origins:?}");
    }
}

#[test]
fn split_off_the_panel_grid_stays_unfused() {
    // 48 is not a multiple of 32: the split stays a kernel (the concat still folds).
    let (steps, origins) = run_case("sections_off_grid", 48, 40, true);
    assert!(has_op(&origins, "split"), "{origins:?}");
    assert!(steps.iter().any(|s| matches!(s, Step::Ukernel { op: Ukernel::Linear { bias: true }, .. })), "{steps:?}");
    assert!(steps.iter().any(|s| matches!(s, Step::Ukernel { op: Ukernel::LinearSections { bias: false, inputs: 2 }, .. })), "{steps:?}");
    assert!(!has_op(&origins, "concat"), "{origins:?}");
}

#[test]
fn a_split_whose_pieces_would_overflow_a_kernel_stays_unfused() {
    // 40 pieces summed by one kernel: absorbing the split would give that
    // kernel 40 arguments, past the runtime's 32 descriptors.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![3.into(), 8.into()]).unwrap();
    let w = b.param("w", DType::F32, shape(&[40 * 32, 8])).unwrap();
    let h = b.linear(x, w, None).unwrap();
    let parts = b.split(h, -1, &vec![Dim::from(32i64); 40]).unwrap();
    let mut acc = parts[0];
    for &p in &parts[1..] {
        acc = b.add(acc, p).unwrap();
    }
    b.output("sum", acc);
    let mut g = b.finish().unwrap();
    for n in g.topo_order().unwrap() {
        if !g.node(n).op.is_source() {
            g.node_mut(n).annotations.push(Annotation::Dispatch(0));
        }
    }
    let st = stage("sections_overflow", g);
    let sched = schedule_stage(&st, &mut KernelCache::new()).unwrap();
    assert!(sched.steps.iter().any(|s| matches!(s, Step::Ukernel { op: Ukernel::Linear { bias: false }, .. })), "{:?}", sched.steps);
    for s in &sched.steps {
        if let Step::Kernel { args, results, .. } = s {
            assert!(args.len() + results.len() <= 32, "{s:?}");
        }
    }
    // (Not run: lowering a 40-way split fused with its 39 adds into one
    // kernel fails MLIR verification; that is the unfused path, a separate issue.)
}
