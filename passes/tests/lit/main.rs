//! Runs every `passes/tests/*.omir` file: each holds `// RUN: <pipeline>`,
//! then one or more cases separated by `// -----`, each a `graph { ... }`
//! with CHECK lines on the printed result (see `omnic_passes::filecheck`).
//! Every case is also evaluated before and after the pipeline on random
//! inputs and weights: outputs must agree within 1e-5.
//!
//! A case without `graph {` is a whole program (`meta`, `stage`, `control`
//! statements) for program-level passes; CHECK lines then run on the
//! printed program, and the evaluator compares one model call of a
//! `denoise` control's body (its TeaCache split run in turn) before and
//! after, or each stage of a `forward` program.

use omnic_ir::eval::Precision;
use omnic_ir::text::{parse_graph, parse_program, print_graph, print_program};
use omnic_ir::{Control, Program};
use omnic_passes::differential::{bind_all, max_output_diff, random_inputs, random_weights};
use omnic_passes::pass::Overlay;
use omnic_passes::teacache::evaluate_denoise_body;
use omnic_passes::{filecheck, Instrumentation, PassContext, PassManager};
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-5;

fn run_file(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let pipeline = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("// RUN:"))
        .ok_or("no `// RUN: <pipeline>` line")?
        .trim()
        .to_string();
    let cases: Vec<&str> = text.split("// -----").collect();
    for (i, case) in cases.iter().enumerate() {
        let fail = |m: String| format!("case {} of {}: {m}", i + 1, cases.len());
        if !case.contains("graph {") {
            run_program_case(case, &pipeline).map_err(fail)?;
            continue;
        }
        let start = case.find("graph {").ok_or_else(|| fail("no `graph {`".into()))?;
        let g0 = parse_graph(&case[start..]).map_err(|e| fail(format!("parse: {e}")))?;
        let mut prog = Program::single("main", g0.clone());
        let pm = PassManager::parse(&pipeline, Instrumentation { verify_each: true, ..Default::default() }).map_err(|e| fail(e.to_string()))?;
        let b = bind_all(&g0, 4);
        let weights = random_weights(&g0, &b, 7).map_err(&fail)?;
        let mut cx = PassContext::with_weights(&weights);
        pm.run(&mut prog, &mut cx, &mut std::io::sink()).map_err(|e| fail(e.to_string()))?;
        let g1 = &prog.stages[0].graph;
        let printed = print_graph(g1);
        filecheck::check(case, &printed).map_err(|e| fail(format!("{e}\n--- full output ---\n{printed}")))?;
        let inputs = random_inputs(&g0, &b, 11, 3).map_err(&fail)?;
        let after_w = Overlay { base: Some(&weights), derived: &cx.derived };
        let d = max_output_diff(&g0, &weights, g1, &after_w, &inputs).map_err(&fail)?;
        if d > TOL {
            return Err(fail(format!("outputs changed by {d:e} (> {TOL:e})")));
        }
    }
    Ok(cases.len())
}

/// A program case (see the module doc).
fn run_program_case(case: &str, pipeline: &str) -> Result<(), String> {
    let p0 = parse_program(case).map_err(|e| format!("parse: {e}"))?;
    let mut prog = p0.clone();
    let pm = PassManager::parse(pipeline, Instrumentation { verify_each: true, ..Default::default() }).map_err(|e| e.to_string())?;
    // Random weights and inputs for every stage, sizes bound to 4.
    let mut weights = std::collections::HashMap::new();
    let mut inputs = std::collections::HashMap::new();
    for (k, st) in p0.stages.iter().enumerate() {
        let b = bind_all(&st.graph, 4);
        weights.extend(random_weights(&st.graph, &b, 7)?);
        inputs.extend(random_inputs(&st.graph, &b, 11 + k as u64, 3)?);
    }
    let mut cx = PassContext::with_weights(&weights);
    pm.run(&mut prog, &mut cx, &mut std::io::sink()).map_err(|e| e.to_string())?;
    let printed = print_program(&prog);
    filecheck::check(case, &printed).map_err(|e| format!("{e}\n--- full output ---\n{printed}"))?;
    let after_w = Overlay { base: Some(&weights), derived: &cx.derived };
    match &p0.control {
        Control::Denoise(_) => {
            let a = evaluate_denoise_body(&p0, &inputs, &weights, Precision::F64)?;
            let b = evaluate_denoise_body(&prog, &inputs, &after_w, Precision::F64)?;
            if a.len() != b.len() {
                return Err(format!("{} outputs before, {} after", a.len(), b.len()));
            }
            for (name, t) in &a {
                let u = b.get(name).ok_or_else(|| format!("output `{name}` disappeared"))?;
                let d = t.max_abs_diff(u)?;
                if d > TOL {
                    return Err(format!("output `{name}` changed by {d:e} (> {TOL:e})"));
                }
            }
        }
        // Decode programs: every stage (forward, prefill, step) is a plain graph.
        Control::Forward { .. } | Control::Decode(_) => {
            for st in &p0.stages {
                let after = prog.stage(&st.name).ok_or_else(|| format!("stage `{}` disappeared", st.name))?;
                let d = max_output_diff(&st.graph, &weights, &after.graph, &after_w, &inputs)?;
                if d > TOL {
                    return Err(format!("stage `{}`: outputs changed by {d:e} (> {TOL:e})", st.name));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn every_pass_test_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "omir")).collect();
    files.sort();
    assert!(!files.is_empty(), "no .omir files in {}", dir.display());
    let mut errors = Vec::new();
    for f in &files {
        match run_file(f) {
            Ok(n) => eprintln!("{}: {n} case(s) ok", f.display()),
            Err(e) => errors.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

#[test]
fn every_registered_pass_has_a_test_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    for p in omnic_passes::manager::all_passes() {
        let f = dir.join(format!("{}.omir", p.name()));
        assert!(f.is_file(), "pass `{}` has no test file {}", p.name(), f.display());
    }
}
