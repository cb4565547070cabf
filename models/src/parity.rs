//! Running an imported program on a fixture's `io.safetensors` with the
//! reference evaluator and comparing against the reference outputs.
//!
//! Inputs are looked up as `input.<name>` (the fixtures' convention) or
//! `<name>`; every program output `o` is compared with `output.<o>` (or
//! `<o>` for `inter.*` intermediates). [`first_divergence`] walks the
//! `inter.*` tensors in graph order to name the first block that drifts.

use crate::Imported;
use omnic_frontend::convert::to_ir;
use omnic_ir::eval::{evaluate, Precision, Tensor};
use omnic_ir::{Dim, Graph, Op};
use std::collections::HashMap;
use std::path::Path;

/// Comparison of one output with its reference.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub reference: String,
    pub max_abs: f64,
    pub rel_l2: f64,
    pub shape: Vec<usize>,
}

/// Every tensor of a safetensors file as evaluator tensors.
pub fn read_io(path: &Path) -> Result<HashMap<String, Tensor>, String> {
    let all = omnic_runtime::io::read_all(path).map_err(|e| e.to_string())?;
    Ok(all.into_iter().map(|(n, t)| (n, to_ir(&t))).collect())
}

/// The program's inputs taken from `io`, named as the graph names them.
pub fn select_inputs(g: &Graph, io: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>, String> {
    let mut out = HashMap::new();
    for (name, _) in g.inputs() {
        let t = io
            .get(&format!("input.{name}"))
            .or_else(|| io.get(&name))
            .ok_or_else(|| format!("the inputs file has no `input.{name}` (or `{name}`)"))?;
        out.insert(name, t.clone());
    }
    Ok(out)
}

/// Reference name of a program output in the fixtures' convention.
pub fn reference_name(output: &str) -> String {
    if output.starts_with("inter.") {
        output.to_string()
    } else {
        format!("output.{output}")
    }
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let num: f64 = x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt();
    let den: f64 = y.iter().map(|q| q * q).sum::<f64>().sqrt();
    if den > 0.0 {
        num / den
    } else {
        num
    }
}

/// Compare every output that has a reference in `io`, in graph-output order.
pub fn compare(g: &Graph, outputs: &HashMap<String, Tensor>, io: &HashMap<String, Tensor>) -> Result<Vec<TensorReport>, String> {
    let mut reps = Vec::new();
    for (name, _) in &g.outputs {
        let rname = reference_name(name);
        let (Some(a), Some(r)) = (outputs.get(name), io.get(&rname)) else { continue };
        let max_abs = a.max_abs_diff(r).map_err(|e| format!("output `{name}` vs `{rname}`: {e}"))?;
        reps.push(TensorReport { name: name.clone(), reference: rname, max_abs, rel_l2: rel_l2(a, r), shape: a.shape.clone() });
    }
    Ok(reps)
}

/// The first `inter.*` report above `tol`, in graph order.
pub fn first_divergence(reports: &[TensorReport], tol: f64) -> Option<&TensorReport> {
    reports.iter().find(|r| r.name.starts_with("inter.") && r.max_abs > tol)
}

/// Restrict inputs to the `[0:1]` batch slice: every input whose declared
/// first dim is the symbol `batch` is sliced.
pub fn batch1_inputs(g: &Graph, inputs: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let batched: Vec<String> = g
        .inputs()
        .into_iter()
        .filter(|(_, n)| matches!(&g.node(*n).op, Op::Input { ty, .. } if ty.shape.first() == Some(&Dim::sym("batch"))))
        .map(|(name, _)| name)
        .collect();
    inputs.iter().map(|(k, t)| (k.clone(), if batched.contains(k) { t.slice_first(0, 1) } else { t.clone() })).collect()
}

/// Slice the references of batched outputs to `[0:1]` (outputs whose
/// declared first dim is `batch`). An output whose first dim is a product
/// with `batch` (a flattened `[batch, ...]`, batch-major, e.g. MoE router
/// logits `[batch·seq, experts]`) keeps its first `1/batch` rows.
pub fn batch1_references(g: &Graph, io: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>, String> {
    let mut out = HashMap::new();
    for (name, v) in &g.outputs {
        let ty = g.value_type(*v).map_err(|e| e.to_string())?;
        let rname = reference_name(name);
        if let Some(r) = io.get(&rname) {
            let batched = ty.shape.first() == Some(&Dim::sym("batch"));
            let flat = matches!(ty.shape.first(), Some(Dim::Mul(f)) if f.contains(&Dim::sym("batch")));
            let r1 = if batched {
                r.slice_first(0, 1)
            } else if flat {
                let b = full_batch(g, io).ok_or_else(|| format!("output `{name}`: no batched input to tell the batch size"))?;
                r.slice_first(0, r.shape[0] / b.max(1))
            } else {
                r.clone()
            };
            out.insert(rname, r1);
        }
    }
    Ok(out)
}

/// The batch size of the reference inputs (first dim of an input declared `batch`-major).
fn full_batch(g: &Graph, io: &HashMap<String, Tensor>) -> Option<usize> {
    g.inputs().into_iter().find_map(|(name, n)| match &g.node(n).op {
        Op::Input { ty, .. } if ty.shape.first() == Some(&Dim::sym("batch")) => {
            io.get(&format!("input.{name}")).or_else(|| io.get(&name)).and_then(|t| t.shape.first().copied())
        }
        _ => None,
    })
}

/// Result of checking a model against a fixture.
#[derive(Debug)]
pub struct FixtureCheck {
    pub full: Vec<TensorReport>,
    pub batch1: Vec<TensorReport>,
}

/// Run the imported program on the fixture's inputs (whole batch, then the
/// `[0:1]` slice) and compare with its references.
pub fn check_io(imp: &Imported, io_path: &Path, precision: Precision) -> Result<FixtureCheck, String> {
    let stage = imp.program.stages.first().ok_or("program has no stage")?;
    let g = &stage.graph;
    let io = read_io(io_path)?;
    let inputs = select_inputs(g, &io)?;
    let outs = evaluate(g, &inputs, &imp.checkpoint, precision).map_err(|e| e.to_string())?;
    let full = compare(g, &outs, &io)?;
    let in1 = batch1_inputs(g, &inputs);
    let outs1 = evaluate(g, &in1, &imp.checkpoint, precision).map_err(|e| e.to_string())?;
    let refs1 = batch1_references(g, &io)?;
    let batch1 = compare(g, &outs1, &refs1)?;
    Ok(FixtureCheck { full, batch1 })
}
