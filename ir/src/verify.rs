//! The verifier: structure, operand counts, and type/shape inference of
//! every node checked against the types it records; dispatch regions and
//! buffer annotations as [`crate::regions`] says. Errors name the op, the
//! value (with its text-form name and label) and the shapes involved.

use crate::error::IrError;
use crate::graph::{Graph, ValueRef};
use crate::op::Op;
use crate::program::Program;
use std::collections::{HashMap, HashSet};

#[path = "verify_decode.rs"]
mod decode;

/// Text-form names of nodes: `%k` numbered in topological order (the
/// printer uses the same numbering).
pub fn value_names(g: &Graph) -> Result<HashMap<petgraph::stable_graph::NodeIndex, usize>, IrError> {
    Ok(g.topo_order()?.into_iter().enumerate().map(|(i, n)| (n, i)).collect())
}

/// `%k` (or `%k#p` for result `p` of a multi-result op).
pub fn value_ref_name(g: &Graph, names: &HashMap<petgraph::stable_graph::NodeIndex, usize>, v: ValueRef) -> String {
    let k = names.get(&v.node).copied().unwrap_or(v.node.index());
    let multi = g.g.node_weight(v.node).is_some_and(|n| n.outputs.len() > 1);
    if multi {
        format!("%{k}#{}", v.port)
    } else {
        format!("%{k}")
    }
}

/// Check one graph.
pub fn verify_graph(g: &Graph) -> Result<(), IrError> {
    let names = value_names(g)?;
    let describe = |n| {
        let k = names[&n];
        match &g.node(n).label {
            Some(l) => format!("%{k} ({l})"),
            None => format!("%{k}"),
        }
    };
    let mut input_names = HashSet::new();
    for n in g.topo_order()? {
        let node = g.node(n);
        let op = node.op.mnemonic().to_string();
        // Operand slots must be exactly 0..k.
        let mut slots: Vec<u32> = g.g.edges_directed(n, petgraph::Direction::Incoming).map(|e| e.weight().slot).collect();
        slots.sort();
        if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
            return Err(IrError::Verify { op, value: describe(n), message: format!("operand slots {slots:?} are not 0..{}", slots.len()) });
        }
        let operands = g.operands(n);
        let mut tys = Vec::new();
        for (i, v) in operands.iter().enumerate() {
            let t = g.value_type(*v).map_err(|e| IrError::Verify { op: op.clone(), value: describe(n), message: format!("operand {i}: {e}") })?;
            tys.push(t);
        }
        if let Op::Input { name, .. } = &node.op {
            if !input_names.insert(name.clone()) {
                return Err(IrError::Verify { op, value: describe(n), message: format!("duplicate input name `{name}`") });
            }
        }
        let inferred = crate::infer::infer(&node.op, &tys).map_err(|message| {
            let opnds: Vec<String> = operands.iter().zip(&tys).map(|(v, t)| format!("{}: {t}", value_ref_name(g, &names, *v))).collect();
            IrError::Verify { op: op.clone(), value: describe(n), message: format!("{message} (operands {})", opnds.join(", ")) }
        })?;
        if inferred != node.outputs {
            let rec: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
            let inf: Vec<String> = inferred.iter().map(|t| t.to_string()).collect();
            return Err(IrError::Verify { op, value: describe(n), message: format!("recorded type {} but operands give {}", rec.join(", "), inf.join(", ")) });
        }
    }
    let mut out_names = HashSet::new();
    for (name, v) in &g.outputs {
        if !out_names.insert(name) {
            return Err(IrError::Graph(format!("duplicate output name `{name}`")));
        }
        g.value_type(*v).map_err(|e| IrError::Graph(format!("output `{name}`: {e}")))?;
    }
    if g.outputs.is_empty() {
        return Err(IrError::Graph("graph has no outputs".into()));
    }
    crate::regions::verify_regions(g)
}

/// Check every stage of a program and that the control refers to stages
/// that exist.
pub fn verify_program(p: &Program) -> Result<(), IrError> {
    let mut seen = HashSet::new();
    for st in &p.stages {
        if !seen.insert(st.name.as_str()) {
            return Err(IrError::Graph(format!("duplicate stage `{}`", st.name)));
        }
        verify_graph(&st.graph).map_err(|e| match e {
            IrError::Verify { op, value, message } => IrError::Verify { op, value: format!("{value} in stage `{}`", st.name), message },
            IrError::Graph(m) => IrError::Graph(format!("stage `{}`: {m}", st.name)),
            other => other,
        })?;
    }
    for name in p.control.stage_names() {
        if p.stage(name).is_none() {
            return Err(IrError::Graph(format!("control refers to missing stage `{name}`")));
        }
    }
    if let crate::program::Control::Denoise(d) = &p.control {
        verify_denoise(p, d)?;
    }
    if let crate::program::Control::Decode(d) = &p.control {
        decode::verify_decode(p, d)?;
    }
    Ok(())
}

/// The names a denoise control uses must be inputs / outputs of the stages
/// it runs (the body, or the TeaCache split of it).
fn verify_denoise(p: &Program, d: &crate::program::DenoiseSpec) -> Result<(), IrError> {
    use crate::program::Guidance;
    let err = |m: String| Err(IrError::Graph(format!("denoise control: {m}")));
    let stages: Vec<&crate::graph::Graph> = d.stage_names().iter().filter_map(|n| p.stage(n)).map(|s| &s.graph).collect();
    let is_input = |name: &str| stages.iter().any(|g| g.inputs().iter().any(|(n, _)| n == name));
    let what = match d.teacache() {
        None => format!("stage `{}`", d.body),
        Some(t) => format!("stages `{}`, `{}`, `{}`", t.pre, t.blocks, t.post),
    };
    let mut body_inputs = vec![("latent input", d.latent_input.as_str()), ("timestep input", d.timestep_input.as_str())];
    body_inputs.extend(d.inputs.iter().map(|(_, b)| ("mapped input", b.as_str())));
    match &d.guidance {
        Guidance::None => {}
        Guidance::TrueCfg { negative, .. } => body_inputs.extend(negative.iter().map(|(_, b)| ("negative input", b.as_str()))),
        Guidance::Distilled { input, .. } => body_inputs.push(("guidance input", input.as_str())),
        Guidance::ClassCfg { labels, .. } => body_inputs.push(("class-label input", labels.as_str())),
    }
    body_inputs.extend(d.cfg_batch.iter().flatten().map(|b| ("cfg-batched input", b.as_str())));
    for (kind, name) in body_inputs {
        if !is_input(name) {
            return err(format!("{kind} `{name}` is not an input of {what}"));
        }
    }
    if d.steps == 0 {
        return err("steps must be at least 1".into());
    }
    if !(d.timestep_div.is_finite() && d.timestep_div != 0.0) {
        return err(format!("timestep divisor {} must be finite and non-zero", d.timestep_div));
    }
    let last = match d.teacache() {
        None => d.body.as_str(),
        Some(t) => t.post.as_str(),
    };
    if p.stage(last).is_some_and(|s| s.graph.output(&d.prediction_output).is_none()) {
        return err(format!("prediction output `{}` is not an output of stage `{last}`", d.prediction_output));
    }
    let Some(t) = d.teacache() else { return Ok(()) };
    let (Some(pre), Some(blocks), Some(post)) = (p.stage(&t.pre), p.stage(&t.blocks), p.stage(&t.post)) else { return Ok(()) };
    if t.coefficients.is_empty() || t.coefficients.iter().any(|c| !c.is_finite()) || !t.threshold.is_finite() {
        return err("teacache needs finite coefficients (at least one) and a finite threshold".into());
    }
    if pre.graph.output(&t.modulated).is_none() {
        return err(format!("teacache modulated input `{}` is not an output of stage `{}`", t.modulated, t.pre));
    }
    for (i, o) in &t.residuals {
        let Some(vi) = pre.graph.output(i).filter(|_| blocks.graph.inputs().iter().any(|(n, _)| n == i)) else {
            return err(format!("teacache residual stream `{i}` must be an output of `{}` and an input of `{}`", t.pre, t.blocks));
        };
        let Some(vo) = blocks.graph.output(o) else {
            return err(format!("teacache residual stream `{o}` is not an output of `{}`", t.blocks));
        };
        if pre.graph.value_type(vi)? != blocks.graph.value_type(vo)? {
            return err(format!("teacache residual streams `{i}` and `{o}` have different types"));
        }
    }
    // When the stack is skipped only the residual streams can be provided.
    for (name, _) in post.graph.inputs() {
        if blocks.graph.output(&name).is_some() && !t.residuals.iter().any(|(_, o)| *o == name) {
            return err(format!("stage `{}` reads `{name}` from `{}`, which is not a cached residual stream", t.post, t.blocks));
        }
    }
    Ok(())
}
