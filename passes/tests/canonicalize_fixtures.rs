//! `canonicalize` on real imported programs: the DiT and FLUX fixtures
//! (tests/fixtures/<name>). Their outputs on the fixture's own inputs must
//! not move by more than 1e-5 (reference evaluator in f64, before and
//! after), and neither the op count nor the number of run-time ops (those
//! that depend on a stage input; the rest `const-fold` folds) may grow.

use omnic_ir::eval::{evaluate, Precision};
use omnic_ir::{Graph, Op};
use omnic_models::parity::{read_io, select_inputs};
use omnic_passes::{Instrumentation, PassContext, PassManager};
use std::collections::HashSet;
use std::path::PathBuf;

const TOL: f64 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// Compute ops that depend on a stage input.
fn runtime_ops(g: &Graph) -> usize {
    let mut dep = HashSet::new();
    for n in g.topo_order().unwrap() {
        if matches!(g.node(n).op, Op::Input { .. }) || g.operands(n).iter().any(|v| dep.contains(&v.node)) {
            dep.insert(n);
        }
    }
    dep.iter().filter(|&&n| !g.node(n).op.is_source()).count()
}

/// Op counts before and after, having checked the outputs.
fn check(name: &str) -> (usize, usize) {
    let dir = fixture(name);
    let imp = omnic_models::import(&dir).unwrap_or_else(|e| panic!("import {name}: {e}"));
    let before = imp.program.clone();
    let mut after = imp.program.clone();
    let pm = PassManager::parse("canonicalize", Instrumentation { verify_each: true, stats: true, ..Default::default() }).unwrap();
    let mut cx = PassContext::with_weights(&imp.checkpoint);
    let mut log = Vec::new();
    pm.run(&mut after, &mut cx, &mut log).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("{name}:\n{}", String::from_utf8_lossy(&log));
    assert!(cx.derived.is_empty(), "{name}: canonicalize derives no weights itself");

    let io = read_io(&dir.join("io.safetensors")).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (mut ops_before, mut ops_after, mut rt_before, mut rt_after) = (0, 0, 0, 0);
    for (s0, s1) in before.stages.iter().zip(&after.stages) {
        let (g0, g1) = (&s0.graph, &s1.graph);
        ops_before += g0.op_count();
        ops_after += g1.op_count();
        rt_before += runtime_ops(g0);
        rt_after += runtime_ops(g1);
        let names0: Vec<&String> = g0.outputs.iter().map(|(n, _)| n).collect();
        let names1: Vec<&String> = g1.outputs.iter().map(|(n, _)| n).collect();
        assert_eq!(names0, names1, "{name}: output names changed");
        for ((_, v0), (_, v1)) in g0.outputs.iter().zip(&g1.outputs) {
            assert_eq!(g0.value_type(*v0).unwrap(), g1.value_type(*v1).unwrap(), "{name}: an output type changed");
        }
        let inputs = select_inputs(g0, &io).unwrap_or_else(|e| panic!("{name}: {e}"));
        let y0 = evaluate(g0, &inputs, &imp.checkpoint, Precision::F64).unwrap_or_else(|e| panic!("{name} before: {e}"));
        let y1 = evaluate(g1, &inputs, &imp.checkpoint, Precision::F64).unwrap_or_else(|e| panic!("{name} after: {e}"));
        for (out, t0) in &y0 {
            let d = t0.max_abs_diff(&y1[out]).unwrap_or_else(|e| panic!("{name} `{out}`: {e}"));
            assert!(d <= TOL, "{name}: output `{out}` moved by {d:e}");
        }
    }
    eprintln!("{name}: ops {ops_before} -> {ops_after}, run-time ops {rt_before} -> {rt_after}");
    assert!(ops_after <= ops_before, "{name}: op count grew from {ops_before} to {ops_after}");
    assert!(rt_after <= rt_before, "{name}: run-time op count grew from {rt_before} to {rt_after}");
    (ops_before, ops_after)
}

#[test]
fn dit_outputs_unchanged_and_ops_not_more() {
    check("dit");
}

#[test]
fn flux_outputs_unchanged_and_ops_not_more() {
    check("flux");
}
