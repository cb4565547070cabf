//! Differential checking: a pass must not change what a graph computes.
//! Runs the reference evaluator on the graph before and after with the
//! same random inputs and weights and reports the largest difference.

use omnic_ir::eval::{evaluate, Precision, Tensor, WeightStore};
use omnic_ir::shape::{eval_shape, Bindings};
use omnic_ir::{DType, Graph, Op};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Bind every symbol of the graph's inputs to `value`.
pub fn bind_all(g: &Graph, value: i64) -> Bindings {
    let mut syms = Vec::new();
    for (_, n) in g.inputs() {
        if let Op::Input { ty, .. } = &g.node(n).op {
            ty.shape.iter().for_each(|d| d.symbols(&mut syms));
        }
    }
    syms.into_iter().map(|s| (s, value)).collect()
}

fn random_tensor(rng: &mut rand::rngs::StdRng, dtype: DType, shape: &[usize], int_range: i64) -> Tensor {
    let n: usize = shape.iter().product();
    match dtype {
        d if d.is_float() => Tensor::from_f64(d, shape, (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()),
        d if d.is_int() => Tensor::from_i64(d, shape, (0..n).map(|_| rng.random_range(0..int_range.max(1))).collect()),
        _ => Tensor::from_bool(shape, (0..n).map(|_| rng.random_bool(0.5)).collect()),
    }
}

/// Random inputs for every stage input (floats in [-1, 1), integers in
/// `0..int_range`, booleans fair).
pub fn random_inputs(g: &Graph, b: &Bindings, seed: u64, int_range: i64) -> Result<HashMap<String, Tensor>, String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, n) in g.inputs() {
        if let Op::Input { ty, .. } = &g.node(n).op {
            let shape = eval_shape(&ty.shape, b)?;
            out.insert(name, random_tensor(&mut rng, ty.dtype, &shape, int_range));
        }
    }
    Ok(out)
}

/// Random weights for every `param` of the graph.
pub fn random_weights(g: &Graph, b: &Bindings, seed: u64) -> Result<HashMap<String, Tensor>, String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut out = HashMap::new();
    for (name, n) in g.params() {
        if let Op::Param { ty, .. } = &g.node(n).op {
            let shape = eval_shape(&ty.shape, b)?;
            out.insert(name, random_tensor(&mut rng, ty.dtype, &shape, 2));
        }
    }
    Ok(out)
}

/// Largest max-abs difference over all outputs of `before` and `after`
/// (same output names required) evaluated in f64.
pub fn max_output_diff(
    before: &Graph,
    wb: &dyn WeightStore,
    after: &Graph,
    wa: &dyn WeightStore,
    inputs: &HashMap<String, Tensor>,
) -> Result<f64, String> {
    let a = evaluate(before, inputs, wb, Precision::F64).map_err(|e| format!("before: {e}"))?;
    let b = evaluate(after, inputs, wa, Precision::F64).map_err(|e| format!("after: {e}"))?;
    let mut worst = 0.0f64;
    for (name, t) in &a {
        let u = b.get(name).ok_or_else(|| format!("output `{name}` disappeared"))?;
        worst = worst.max(t.max_abs_diff(u).map_err(|e| format!("output `{name}`: {e}"))?);
    }
    if a.len() != b.len() {
        return Err(format!("{} outputs before, {} after", a.len(), b.len()));
    }
    Ok(worst)
}
