//! `qkv-fusion,const-fold,cse,dce` on real imported models (the FLUX and
//! DiT fixtures in `tests/fixtures`, with their checkpoints as weights):
//! every attention's Q/K/V projections end up in one fused linear, and the
//! evaluator's outputs on the fixture's inputs do not change (≤ 1e-5).

mod dispatch;
mod every_fixture;
mod moe;

use omnic_ir::{Graph, Op};
use omnic_models::parity::{read_io, select_inputs};
use omnic_passes::differential::max_output_diff;
use omnic_passes::pass::Overlay;
use omnic_passes::{Instrumentation, PassContext, PassManager};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const PIPELINE: &str = "qkv-fusion,const-fold,cse,dce";
const TOL: f64 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// What running the pipeline on a fixture gave.
struct Outcome {
    stats: BTreeMap<(String, String), i64>,
    /// Labels of the `linear` nodes left in the optimised graph.
    linears: BTreeSet<String>,
    /// Integer config fields asked for.
    config: BTreeMap<String, usize>,
}

impl Outcome {
    fn stat(&self, pass: &str, what: &str) -> i64 {
        self.stats.get(&(pass.to_string(), what.to_string())).copied().unwrap_or(0)
    }
    fn config_usize(&self, key: &str) -> usize {
        self.config[key]
    }
}

fn linear_labels(g: &Graph) -> BTreeSet<String> {
    g.g.node_indices().filter(|&n| matches!(g.node(n).op, Op::Linear { .. })).filter_map(|n| g.node(n).label.clone()).collect()
}

/// Import fixture `name`, run the pipeline with its checkpoint, and check
/// the outputs on its `io.safetensors` inputs are unchanged.
fn optimise(name: &str, config_keys: &[&str]) -> Outcome {
    let dir = fixture(name);
    let imp = omnic_models::import(&dir).unwrap_or_else(|e| panic!("import {name}: {e}"));
    let before = imp.program.stages[0].graph.clone();
    let mut prog = imp.program.clone();
    let pm = PassManager::parse(PIPELINE, Instrumentation { verify_each: true, ..Default::default() }).expect("pipeline");
    let mut cx = PassContext::with_weights(&imp.checkpoint);
    pm.run(&mut prog, &mut cx, &mut std::io::sink()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = &prog.stages[0].graph;
    for ((pass, what), n) in &cx.stats {
        eprintln!("{name}: {pass}: {n} {what}");
    }
    eprintln!("{name}: {} ops before, {} after", before.op_count(), after.op_count());

    let io = read_io(&dir.join("io.safetensors")).expect("read io");
    let inputs = select_inputs(&before, &io).expect("inputs");
    let derived = Overlay { base: Some(&imp.checkpoint), derived: &cx.derived };
    let d = max_output_diff(&before, &imp.checkpoint, after, &derived, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("{name}: max |Δ| over outputs {d:e}");
    assert!(d <= TOL, "{name}: outputs changed by {d:e} (> {TOL:e})");
    // The fused weights are derived weights now, not concats.
    assert!(!after.g.node_indices().any(|n| matches!(after.node(n).op, Op::Concat { .. }) && is_weight_concat(after, n)));
    let config = config_keys
        .iter()
        .map(|&k| {
            let v = imp.dir.config.value[k].as_u64().unwrap_or_else(|| panic!("{name}: config has no integer `{k}`"));
            (k.to_string(), v as usize)
        })
        .collect();
    Outcome { stats: cx.stats, linears: linear_labels(after), config }
}

/// A concat whose operands are all params (what const-fold must have folded).
fn is_weight_concat(g: &Graph, n: petgraph::stable_graph::NodeIndex) -> bool {
    g.operands(n).iter().all(|v| matches!(g.node(v.node).op, Op::Param { .. }))
}

/// No projection of `unfused` is left as a linear of its own (fused
/// linears have `+` in their label).
fn assert_none_left(o: &Outcome, unfused: &[&str]) {
    for l in o.linears.iter().filter(|l| !l.contains('+')) {
        assert!(!unfused.iter().any(|s| l.ends_with(s)), "linear `{l}` was not fused; linears: {:?}", o.linears);
    }
}

/// FLUX: each double block has two attention groups (image `to_q/k/v`,
/// text `add_q/k/v_proj`), each single block one (`to_q/k/v`, fused with
/// `proj_mlp`, which reads the same normalised input). The pass also fuses
/// non-attention groups (a double block's `norm1.linear` and
/// `norm1_context.linear` both read `silu(temb)`), so the stats are at
/// least the attention counts.
#[test]
fn flux_attention_projections_are_fused() {
    let o = optimise("flux", &["num_layers", "num_single_layers"]);
    let (double, single) = (o.config_usize("num_layers"), o.config_usize("num_single_layers"));
    let attention_groups = 2 * double + single;
    let attention_linears = 6 * double + 4 * single;
    assert!(o.stat("qkv-fusion", "groups fused") >= attention_groups as i64, "stats: {:?}", o.stats);
    assert!(o.stat("qkv-fusion", "linears fused") >= attention_linears as i64, "stats: {:?}", o.stats);
    for i in 0..double {
        for fused in [format!("transformer_blocks.{i}.attn.to_q+to_k+to_v"), format!("transformer_blocks.{i}.attn.add_q_proj+add_k_proj+add_v_proj")] {
            assert!(o.linears.contains(&fused), "no fused linear `{fused}`; linears: {:?}", o.linears);
        }
    }
    for j in 0..single {
        let fused = format!("single_transformer_blocks.{j}.proj_mlp+attn.to_q+attn.to_k+attn.to_v");
        assert!(o.linears.contains(&fused), "no fused linear `{fused}`; linears: {:?}", o.linears);
    }
    assert_none_left(&o, &[".to_q", ".to_k", ".to_v", ".add_q_proj", ".add_k_proj", ".add_v_proj", ".proj_mlp"]);
    assert!(o.stat("const-fold", "weights derived") >= attention_groups as i64, "stats: {:?}", o.stats);
}

/// DiT: one `attn1.to_q/k/v` group per block.
#[test]
fn dit_attention_projections_are_fused() {
    let o = optimise("dit", &["num_layers"]);
    let blocks = o.config_usize("num_layers");
    assert!(o.stat("qkv-fusion", "groups fused") >= blocks as i64, "stats: {:?}", o.stats);
    for i in 0..blocks {
        let fused = format!("transformer_blocks.{i}.attn1.to_q+to_k+to_v");
        assert!(o.linears.contains(&fused), "no fused linear `{fused}`; linears: {:?}", o.linears);
    }
    assert_none_left(&o, &[".to_q", ".to_k", ".to_v"]);
}
