//! Schedules: kernels shared by structure, regions split around ukernels,
//! the fallback partition, and whole graphs with linear layers run end to
//! end (generated kernels and the runtime's ukernels).

use super::elementwise::{f32t, shape};
use super::support::{check, compile, stage, Tol, TOL};
use omnic_codegen::{schedule_program, schedule_stage, KernelCache};
use omnic_ir::{Annotation, Builder, DType, Dim, Program, UnaryOp, ValueRef};
use omnic_runtime::artifact::manifest::Step;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

/// A tiny transformer-like block: layer norm, linear, gelu, linear,
/// residual add.
fn block(b: &mut Builder, x: ValueRef, i: usize, d: usize) -> ValueRef {
    b.set_block(Some(i as u32));
    let w1 = b.param(&format!("blocks.{i}.fc1.weight"), DType::F32, shape(&[2 * d, d])).unwrap();
    let b1 = b.param(&format!("blocks.{i}.fc1.bias"), DType::F32, shape(&[2 * d])).unwrap();
    let w2 = b.param(&format!("blocks.{i}.fc2.weight"), DType::F32, shape(&[d, 2 * d])).unwrap();
    let h = b.layer_norm(x, None, None, 1e-6).unwrap();
    let h = b.linear(h, w1, Some(b1)).unwrap();
    let h = b.unary(UnaryOp::Gelu, h).unwrap();
    let h = b.linear(h, w2, None).unwrap();
    let h = b.mul_scalar(h, 0.5).unwrap();
    b.add(x, h).unwrap()
}

fn blocks_graph(n: usize, d: usize) -> omnic_ir::Graph {
    let mut b = Builder::new();
    let mut x = b.input("x", DType::F32, vec![Dim::sym("batch"), Dim::sym("seq"), d.into()]).unwrap();
    for i in 0..n {
        x = block(&mut b, x, i, d);
    }
    b.set_block(None);
    let y = b.unary(UnaryOp::Tanh, x).unwrap();
    b.output("y", y);
    b.finish().unwrap()
}

fn block_weights(rng: &mut StdRng, n: usize, d: usize) -> HashMap<String, omnic_ir::eval::Tensor> {
    let mut w = HashMap::new();
    for i in 0..n {
        w.insert(format!("blocks.{i}.fc1.weight"), f32t(rng, &[2 * d, d], -0.3, 0.3));
        w.insert(format!("blocks.{i}.fc1.bias"), f32t(rng, &[2 * d], -0.3, 0.3));
        w.insert(format!("blocks.{i}.fc2.weight"), f32t(rng, &[d, 2 * d], -0.3, 0.3));
    }
    w
}

/// End to end with GEMM ukernels: those accumulate in f32 in a different
/// order than the f64 reference, hence 1e-5 here (the generated kernels
/// alone are held to 1e-6 elsewhere).
const WITH_GEMM: Tol = Tol { rtol: 1e-5, atol: 1e-5 };

#[test]
fn identical_blocks_share_kernels_and_run() {
    let mut rng = StdRng::seed_from_u64(41);
    let (n, d) = (3, 16);
    let mut g = blocks_graph(n, d);
    // Without regions (fallback partition) and with dispatch-formation's.
    for formed in [false, true] {
        if formed {
            omnic_passes::dispatch_formation::form_regions(&mut g).unwrap();
        }
        let st = stage(&format!("blocks_{formed}"), g.clone());
        let mut cache = KernelCache::new();
        let sched = schedule_stage(&st, &mut cache).unwrap();
        let kernel_steps: Vec<&String> = sched.steps.iter().filter_map(|s| if let Step::Kernel { symbol, .. } = s { Some(symbol) } else { None }).collect();
        let ukernels = sched.steps.iter().filter(|s| matches!(s, Step::Ukernel { .. })).count();
        eprintln!(
            "{n} blocks (regions formed: {formed}): {} steps, {} kernel steps, {ukernels} ukernel steps, {} distinct kernels: {:?}",
            sched.steps.len(),
            kernel_steps.len(),
            cache.kernels.len(),
            cache.kernels.iter().map(|k| (&k.symbol, k.uses)).collect::<Vec<_>>()
        );
        assert_eq!(ukernels, 2 * n);
        // Per block the same kernels: the distinct kernels do not grow with n.
        let per_block = (kernel_steps.len() - 1) / n;
        assert!(cache.kernels.len() <= per_block + 2, "{} kernels for {} kernel steps", cache.kernels.len(), kernel_steps.len());
        assert!(cache.kernels.iter().any(|k| k.uses == n), "no kernel used by every block");
        let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[2, 3, d], -1.0, 1.0))]);
        check(&st, &inputs, &block_weights(&mut rng, n, d), WITH_GEMM);
    }
}

/// Two stages of a program share kernels too.
#[test]
fn kernels_are_shared_across_stages() {
    let g = blocks_graph(1, 8);
    let p =
        Program { stages: vec![stage("a", g.clone()), stage("b", g)], control: omnic_ir::Control::Forward { stage: "a".into() }, metadata: Default::default() };
    let ps = schedule_program(&p).unwrap();
    let per_stage = ps.stages[0].steps.iter().filter(|s| matches!(s, Step::Kernel { .. })).count();
    assert_eq!(ps.kernels.len(), per_stage);
    assert!(ps.kernels.iter().all(|k| k.uses == 2));
    assert_eq!(ps.stages[0].steps, ps.stages[1].steps);
}

/// A region `prologue → linear → epilogue` becomes three steps in order,
/// and a reshape feeding the linear is a view.
#[test]
fn regions_split_around_ukernels() {
    let mut rng = StdRng::seed_from_u64(42);
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, vec![Dim::sym("n"), 2.into(), 4.into()]).unwrap();
    let w = b.param("w", DType::F32, shape(&[6, 8])).unwrap();
    let bias = b.param("b", DType::F32, shape(&[6])).unwrap();
    let pre = b.unary(UnaryOp::Silu, x).unwrap();
    let flat = b.reshape(pre, vec![Dim::sym("n"), 8.into()]).unwrap();
    let y = b.linear(flat, w, Some(bias)).unwrap();
    let z = b.unary(UnaryOp::Gelu, y).unwrap();
    let z = b.mul(z, y).unwrap();
    b.output("z", z);
    let mut g = b.finish().unwrap();
    for n in g.topo_order().unwrap() {
        if !g.node(n).op.is_source() {
            g.node_mut(n).annotations.push(Annotation::Dispatch(0));
        }
    }
    let st = stage("split_region", g);
    let mut cache = KernelCache::new();
    let sched = schedule_stage(&st, &mut cache).unwrap();
    let kinds: Vec<&str> = sched.steps.iter().map(|s| if matches!(s, Step::Kernel { .. }) { "kernel" } else { "ukernel" }).collect();
    assert_eq!(kinds, ["kernel", "ukernel", "kernel"]);
    assert!(sched.values.iter().any(|v| matches!(v.def, omnic_runtime::artifact::manifest::ValueDef::View { .. })));
    let inputs = HashMap::from([("x".to_string(), f32t(&mut rng, &[3, 2, 4], -1.0, 1.0))]);
    let weights = HashMap::from([("w".to_string(), f32t(&mut rng, &[6, 8], -0.5, 0.5)), ("b".to_string(), f32t(&mut rng, &[6], -0.5, 0.5))]);
    check(&st, &inputs, &weights, WITH_GEMM);
}

/// Without regions, a chain of elementwise ops is one kernel.
#[test]
fn fallback_fuses_elementwise_chains() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, shape(&[4, 5])).unwrap();
    let mut t = x;
    for u in [UnaryOp::Exp, UnaryOp::Neg, UnaryOp::Tanh, UnaryOp::Square] {
        t = b.unary(u, t).unwrap();
    }
    let s = b.softmax(t, -1).unwrap();
    let s = b.mul_scalar(s, 3.0).unwrap();
    b.output("s", s);
    let st = stage("chain", b.finish().unwrap());
    let c = compile(&st).unwrap();
    assert_eq!(c.schedule.steps.len(), 3, "{:#?}", c.schedule.steps);
    let mut rng = StdRng::seed_from_u64(43);
    check(&st, &HashMap::from([("x".to_string(), f32t(&mut rng, &[4, 5], -1.0, 1.0))]), &HashMap::new(), TOL);
}
