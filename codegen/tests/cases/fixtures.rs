//! Every fixture model's stage through the `-O2` passes, the schedule and
//! AOT compilation (coverage of the op set as the model families use it),
//! then run end to end with the fixture's inputs (generated kernels and the
//! runtime's ukernels) against the reference evaluator on the same
//! optimised graph.

use super::support::{compare, compile, Tol};
use omnic_codegen::cpu::aot;
use omnic_codegen::{schedule_program, AotOptions};
use omnic_ir::eval::{evaluate, Precision, Tensor, WeightStore};
use omnic_passes::pass::Overlay;
use omnic_passes::{Instrumentation, PassContext, PassManager};
use omnic_runtime::artifact::manifest::{Step, ValueDef};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

fn fixtures() -> Vec<(String, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for d in dirs {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        if d.join("config.json").exists() {
            out.push((name, d));
        } else {
            for sub in ["transformer", "base"] {
                if d.join(sub).join("config.json").exists() {
                    out.push((format!("{name}/{sub}"), d.join(sub)));
                }
            }
        }
    }
    out
}

/// End to end: the ukernels (GEMM, attention, conv) accumulate in f32 in
/// another order than the f64 reference; errors are measured relative to
/// each output's largest magnitude.
const E2E_REL: f64 = 1e-5;

#[test]
fn every_fixture_compiles_and_runs() {
    let mut largest = (String::new(), 0usize, 0.0f64);
    let mut max_arity = 0;
    let mut lines = Vec::new();
    for (name, dir) in fixtures() {
        let imp = match omnic_models::import(&dir) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{name}: not importable here ({e}); skipped");
                continue;
            }
        };
        let mut prog = imp.program.clone();
        let pm = PassManager::parse(omnic_passes::manager::default_pipeline(2), Instrumentation::default()).unwrap();
        let mut cx = PassContext::with_weights(&imp.checkpoint);
        pm.run(&mut prog, &mut cx, &mut std::io::sink()).unwrap_or_else(|e| panic!("{name}: passes: {e}"));
        let t = Instant::now();
        let ps = schedule_program(&prog).unwrap_or_else(|e| panic!("{name}: schedule: {e}"));
        let t_sched = t.elapsed().as_secs_f64();
        let so = aot::compile(&ps.kernels, &AotOptions::default()).unwrap_or_else(|e| panic!("{name}: compile: {e}"));
        let total = t.elapsed().as_secs_f64();
        let steps: usize = ps.stages.iter().map(|s| s.steps.len()).sum();
        let kernel_steps: usize = ps.stages.iter().flat_map(|s| &s.steps).filter(|s| matches!(s, Step::Kernel { .. })).count();
        let ops: usize = prog.stages.iter().map(|s| s.graph.op_count()).sum();
        // The runtime calls kernels with at most 32 descriptors.
        let arity = ps
            .stages
            .iter()
            .flat_map(|s| &s.steps)
            .filter_map(|s| if let Step::Kernel { args, results, .. } = s { Some(args.len() + results.len()) } else { None })
            .max()
            .unwrap_or(0);
        assert!(arity <= 32, "{name}: a kernel takes {arity} descriptors");
        max_arity = max_arity.max(arity);
        let tm = so.timings;
        lines.push(format!(
            "{name:<20} {ops:>5} ops, {steps:>4} steps ({kernel_steps} kernel), {:>3} distinct kernels, {:>7} KiB .so; schedule+lower {:.2}s, mlir {:.2}s, llvm {:.2}s, obj {:.2}s, link {:.2}s, total {:.2}s",
            ps.kernels.len(),
            so.bytes.len() / 1024,
            t_sched,
            tm.mlir.as_secs_f64(),
            tm.llvm.as_secs_f64(),
            tm.codegen.as_secs_f64(),
            tm.link.as_secs_f64(),
            total
        ));
        if ops > largest.1 {
            largest = (name.clone(), ops, total);
        }

        // End to end on the fixture's inputs.
        let io = match omnic_models::parity::read_io(&dir.join("io.safetensors")).or_else(|_| omnic_models::parity::read_io(&dir.join("../io.safetensors"))) {
            Ok(io) => io,
            Err(_) => continue,
        };
        let st = &prog.stages[0];
        let Ok(inputs) = omnic_models::parity::select_inputs(&st.graph, &io) else { continue };
        let store = Overlay { base: Some(&imp.checkpoint), derived: &cx.derived };
        let c = compile(st).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut weights: HashMap<String, Tensor> = HashMap::new();
        for v in &c.schedule.values {
            if let ValueDef::Weight { name: w } = &v.def {
                let t = store.weight(w).unwrap();
                weights.insert(
                    w.clone(),
                    if t.dtype == super::support::dtype_of(v.dtype) {
                        t
                    } else {
                        omnic_ir::eval::kernels::cast(&t, super::support::dtype_of(v.dtype), false).unwrap()
                    },
                );
            }
        }
        let t = Instant::now();
        let got = c.run(&inputs, &weights);
        let t_run = t.elapsed().as_secs_f64();
        let want = evaluate(&st.graph, &inputs, &store, Precision::F32).unwrap();
        let mut worst = 0.0f64;
        for (o, w) in &want {
            let mag = w.to_f64_vec().iter().fold(0.0f64, |a, &x| a.max(x.abs())).max(1e-30);
            let one = HashMap::from([(o.clone(), w.clone())]);
            let g1 = HashMap::from([(o.clone(), got[o].clone())]);
            let r = compare(&format!("{name} output `{o}`"), &g1, &one, Tol { rtol: 0.0, atol: E2E_REL * mag });
            worst = worst.max(r.max_abs / mag);
        }
        lines.push(format!("{name:<20} ran in {t_run:.3}s; max |error| / max |output| = {worst:.2e}"));
    }
    for l in &lines {
        eprintln!("{l}");
    }
    eprintln!("largest: {} ({} ops) compiled in {:.2}s; most descriptors of a kernel call: {max_arity}", largest.0, largest.1, largest.2);
    assert!(largest.1 > 0, "no fixture compiled");
}
