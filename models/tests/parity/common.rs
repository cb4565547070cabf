//! Shared fixture checking: import with intermediates, run the reference
//! evaluator in f32 on the whole batch and on the `[0:1]` slice, compare.

use omnic_ir::eval::Precision;
use omnic_models::parity::{check_io, first_divergence, TensorReport};
use omnic_models::{import_with, ImportOptions};
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn show(reps: &[TensorReport]) -> String {
    reps.iter().map(|r| format!("  {:<44} max_abs {:.3e} rel_l2 {:.3e}\n", r.name, r.max_abs, r.rel_l2)).collect()
}

/// Import `tests/fixtures/<name>` and require every `output.*` within
/// `tol` max abs (whole batch and batch-1); on failure report the first
/// diverging intermediate.
pub fn check_fixture(name: &str, tol: f64) {
    let dir = fixture(name);
    let imp = import_with(&dir, &ImportOptions { intermediates: true, ..Default::default() }).unwrap_or_else(|e| panic!("import {name}: {e}"));
    let rep = check_io(&imp, &dir.join("io.safetensors"), Precision::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
    let outputs: Vec<&TensorReport> = rep.full.iter().filter(|r| !r.name.starts_with("inter.")).collect();
    assert!(!outputs.is_empty(), "{name}: no output was compared");
    let bad = rep.full.iter().chain(&rep.batch1).any(|r| r.max_abs > tol);
    if bad {
        let first = first_divergence(&rep.full, tol).map(|r| r.name.clone()).unwrap_or_else(|| "(none of the intermediates)".into());
        panic!("{name}: exceeds max abs {tol:e}; first diverging: {first}\nfull batch:\n{}batch 1:\n{}", show(&rep.full), show(&rep.batch1));
    }
    eprintln!("{name}: ok\n{}", show(&rep.full));
}
