//! FLUX through the whole `-O2` pipeline, which ends with
//! `dispatch-formation` and `memory-plan`: dispatches are at most 40% of
//! the compute ops before dispatch formation, the plan's activation
//! footprint (at the fixture's `io.safetensors` shapes) at most 50% of the
//! sum of all intermediate tensors, every compute op is in exactly one
//! region, the recorded plan checks out, and the evaluator's outputs on the
//! fixture inputs do not change (≤ 1e-5).

use super::{fixture, TOL};
use omnic_ir::regions::regions;
use omnic_models::parity::{read_io, select_inputs};
use omnic_passes::differential::max_output_diff;
use omnic_passes::memory_plan::read_plan;
use omnic_passes::pass::Overlay;
use omnic_passes::{Instrumentation, PassContext, PassManager};

#[test]
fn flux_o2_fuses_into_few_dispatches_and_plans_memory() {
    let dir = fixture("flux");
    let imp = omnic_models::import(&dir).expect("import flux");
    let before = imp.program.stages[0].graph.clone();
    let io = read_io(&dir.join("io.safetensors")).expect("read io");
    let inputs = select_inputs(&before, &io).expect("inputs");
    let mut prog = imp.program.clone();
    let pm = PassManager::parse(omnic_passes::manager::default_pipeline(2), Instrumentation { verify_each: true, ..Default::default() }).expect("pipeline");
    let mut cx = PassContext::with_weights(&imp.checkpoint);
    cx.dims = omnic_ir::eval::bind_inputs(&before, &inputs).expect("bind");
    pm.run(&mut prog, &mut cx, &mut std::io::sink()).expect("-O2");
    let stat = |pass: &str, what: &str| cx.stats.get(&(pass.to_string(), what.to_string())).copied().unwrap_or(-1);
    let (ops, dispatches) = (stat("dispatch-formation", "ops before"), stat("dispatch-formation", "dispatches"));
    let (peak, sum) = (stat("memory-plan", "peak activation bytes"), stat("memory-plan", "sum of intermediate bytes"));
    eprintln!("flux -O2: {ops} ops before dispatch-formation, {dispatches} dispatches ({:.1}%)", 100.0 * dispatches as f64 / ops as f64);
    eprintln!(
        "flux -O2 at {:?}: {} buffers, peak {peak} B, peak live {} B, materialised {} B, intermediates {sum} B ({:.1}%)",
        cx.dims,
        stat("memory-plan", "buffers"),
        stat("memory-plan", "peak live bytes"),
        stat("memory-plan", "sum of materialised bytes"),
        100.0 * peak as f64 / sum as f64
    );
    assert!(ops > 100 && dispatches > 0, "stats: {:?}", cx.stats);
    assert!(dispatches * 100 <= 40 * ops, "{dispatches} dispatches for {ops} ops is more than 40%");
    assert!(peak > 0 && peak * 100 <= 50 * sum, "peak {peak} B is more than 50% of {sum} B");

    let after = &prog.stages[0].graph;
    assert_eq!(after.op_count() as i64, ops, "passes after dispatch-formation must not change ops");
    for n in after.g.node_indices() {
        let node = after.node(n);
        assert_eq!(node.dispatch().is_some(), !node.op.is_source(), "`{}` {:?}: compute ops are in exactly one region", node.op.mnemonic(), node.label);
    }
    assert_eq!(regions(after).expect("regions").len() as i64, dispatches);
    let plan = read_plan(after).expect("recorded plan");
    assert_eq!(plan.len() as i64, stat("memory-plan", "buffers"));

    let derived = Overlay { base: Some(&imp.checkpoint), derived: &cx.derived };
    let d = max_output_diff(&before, &imp.checkpoint, after, &derived, &inputs).expect("evaluate");
    eprintln!("flux -O2: max |Δ| over outputs {d:e}");
    assert!(d <= TOL, "outputs changed by {d:e} (> {TOL:e})");
}
