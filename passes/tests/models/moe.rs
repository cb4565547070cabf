//! `moe-fusion` on the Qwen3-MoE fixture (`tests/fixtures/qwen3moe`, made by
//! transformers): under `-O2` every sparse MoE block of every stage becomes
//! one `moe` op (no per-expert linear is left), and the optimised program,
//! evaluated in f32 on the fixture's inputs, still matches transformers'
//! logits and router logits within 1e-4.

use omnic_ir::eval::{evaluate, Precision};
use omnic_ir::Op;
use omnic_models::parity::{read_io, reference_name, select_inputs};
use omnic_passes::manager::default_pipeline;
use omnic_passes::pass::Overlay;
use omnic_passes::{Instrumentation, PassContext, PassManager};

#[test]
fn qwen3moe_o2_fuses_every_moe_block_and_matches_transformers() {
    let dir = super::fixture("qwen3moe");
    let imp = omnic_models::import(&dir).expect("import qwen3moe");
    let layers = imp.dir.config.value["num_hidden_layers"].as_u64().expect("num_hidden_layers") as usize;
    let mut prog = imp.program.clone();
    let pm = PassManager::parse(default_pipeline(2), Instrumentation { verify_each: true, ..Default::default() }).expect("pipeline");
    let mut cx = PassContext::with_weights(&imp.checkpoint);
    pm.run(&mut prog, &mut cx, &mut std::io::sink()).expect("-O2");
    let fused = cx.stats.get(&("moe-fusion".to_string(), "moe blocks fused".to_string())).copied().unwrap_or(0);
    assert_eq!(fused as usize, layers * prog.stages.len(), "one fused block per layer in each of the {} stages", prog.stages.len());
    for st in &prog.stages {
        let g = &st.graph;
        let moes = g.g.node_indices().filter(|&n| matches!(g.node(n).op, Op::Moe { top_k: 2, norm_topk: true, .. })).count();
        assert_eq!(moes, layers, "stage `{}`", st.name);
        let experts: Vec<String> =
            g.g.node_indices().filter_map(|n| g.node(n).label.clone()).filter(|l| l.contains(".experts.") && l.ends_with("_proj")).collect();
        assert!(experts.is_empty(), "stage `{}` still has per-expert ops: {experts:?}", st.name);
    }

    let io = read_io(&dir.join("io.safetensors")).expect("io");
    let g = &prog.stages[0].graph;
    let inputs = select_inputs(g, &io).expect("inputs");
    let weights = Overlay { base: Some(&imp.checkpoint), derived: &cx.derived };
    let outs = evaluate(g, &inputs, &weights, Precision::F32).expect("evaluate");
    let mut compared = 0;
    for (name, _) in &g.outputs {
        let Some(r) = io.get(&reference_name(name)) else { continue };
        let d = outs[name].max_abs_diff(r).expect("same shape");
        eprintln!("qwen3moe -O2 {name}: max |Δ| vs transformers {d:e}");
        assert!(d <= 1e-4, "{name}: {d:e} > 1e-4");
        compared += 1;
    }
    assert!(compared > layers, "compared {compared} outputs");
}
