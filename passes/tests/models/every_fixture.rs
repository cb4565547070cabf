//! Differential test over every single-forward fixture model: each pass on
//! its own, and the whole `-O2` pipeline, leave the evaluator's outputs on
//! the fixture's own inputs unchanged within 1e-5 (f64 evaluation, the
//! checkpoint and any derived weights as weights).

use omnic_models::parity::{read_io, select_inputs};
use omnic_passes::differential::max_output_diff;
use omnic_passes::manager::{all_passes, default_pipeline};
use omnic_passes::pass::Overlay;
use omnic_passes::{Instrumentation, PassContext, PassManager};
use std::path::PathBuf;

const TOL: f64 = 1e-5;

/// Fixtures whose `io.safetensors` holds the inputs of one forward under
/// the program's own input names (zimage takes per-sample lists, lora and
/// denoise are multi-directory layouts tested elsewhere).
const FIXTURES: &[&str] = &[
    "dit", "flux", "flux_noguid", "flux2", "flux2_klein", "sd3", "sd3_dual", "sd3_noqk", "qwenimage", "qwenimage_edit", "qwenimage_layered", "longcat",
    "glmimage", "wan", "vae", "vae_flux", "qwen2", "qwen3", "qwen3moe",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

#[test]
fn every_pass_and_o2_preserve_every_fixture() {
    let mut pipelines: Vec<String> = all_passes().iter().map(|p| p.name().to_string()).collect();
    pipelines.push(default_pipeline(2).to_string());
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in FIXTURES {
        let dir = fixture(name);
        let imp = omnic_models::import(&dir).unwrap_or_else(|e| panic!("import {name}: {e}"));
        let io = read_io(&dir.join("io.safetensors")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let before = imp.program.stages[0].graph.clone();
        let inputs = select_inputs(&before, &io).unwrap_or_else(|e| panic!("{name}: {e}"));
        for pl in &pipelines {
            let mut prog = imp.program.clone();
            let pm = PassManager::parse(pl, Instrumentation { verify_each: true, ..Default::default() }).unwrap();
            let mut cx = PassContext::with_weights(&imp.checkpoint);
            if let Err(e) = pm.run(&mut prog, &mut cx, &mut std::io::sink()) {
                failures.push(format!("{name} [{pl}]: {e}"));
                continue;
            }
            let after_w = Overlay { base: Some(&imp.checkpoint), derived: &cx.derived };
            match max_output_diff(&before, &imp.checkpoint, &prog.stages[0].graph, &after_w, &inputs) {
                Ok(d) if d <= TOL => checked += 1,
                Ok(d) => failures.push(format!("{name} [{pl}]: outputs changed by {d:e}")),
                Err(e) => failures.push(format!("{name} [{pl}]: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, FIXTURES.len() * pipelines.len());
}
