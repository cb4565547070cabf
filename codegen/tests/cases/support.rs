//! Shared helpers: run a stage through the JIT and through the reference
//! evaluator, compare with a stated tolerance.

use omnic_codegen::cpu;
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::{Graph, Stage};
use std::collections::HashMap;

/// `|jit - ref| <= RTOL·|ref| + ATOL` elementwise, against the evaluator in
/// `Precision::F32` (every op computed in f64 and rounded to f32).
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rtol: f64,
    pub atol: f64,
}

/// Largest error seen, in units of the allowed error (≤ 1 passes).
pub struct Report {
    pub worst: f64,
    pub max_rel: f64,
    pub max_abs: f64,
}

pub fn stage(name: &str, graph: Graph) -> Stage {
    Stage { name: name.to_string(), graph }
}

/// Compile `stage` with the cpu JIT, run it and the reference evaluator on
/// `inputs` (and `weights`), and check every output within `tol`.
pub fn check_against_reference(stage: &Stage, inputs: &HashMap<String, Tensor>, weights: &HashMap<String, Tensor>, tol: Tol) -> Report {
    let kernel = cpu::jit(stage).unwrap_or_else(|e| panic!("jit of `{}` failed: {e}", stage.name));
    let got = kernel.run(inputs, weights).unwrap_or_else(|e| panic!("running `{}` failed: {e}", stage.name));
    let want = evaluate(&stage.graph, inputs, weights, Precision::F32).expect("reference evaluation");
    compare(&stage.name, &got, &want, tol)
}

pub fn compare(what: &str, got: &HashMap<String, Tensor>, want: &HashMap<String, Tensor>, tol: Tol) -> Report {
    assert_eq!(got.len(), want.len(), "{what}: number of outputs");
    let mut r = Report { worst: 0.0, max_rel: 0.0, max_abs: 0.0 };
    for (name, w) in want {
        let g = got.get(name).unwrap_or_else(|| panic!("{what}: output `{name}` missing"));
        assert_eq!(g.shape, w.shape, "{what}: shape of `{name}`");
        let (gv, wv) = (g.to_f64_vec(), w.to_f64_vec());
        for (i, (&a, &b)) in gv.iter().zip(&wv).enumerate() {
            if a.is_nan() && b.is_nan() || a == b {
                continue;
            }
            let d = (a - b).abs();
            let allowed = tol.rtol * b.abs() + tol.atol;
            r.worst = r.worst.max(d / allowed);
            r.max_abs = r.max_abs.max(d);
            if b != 0.0 {
                r.max_rel = r.max_rel.max(d / b.abs());
            }
            assert!(d <= allowed, "{what}: output `{name}`[{i}] = {a:e}, reference {b:e}: error {d:e} exceeds {:e} ({tol:?})", allowed);
        }
    }
    r
}
