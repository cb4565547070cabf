//! The verifier: structure, operand counts, and type/shape inference of
//! every node checked against the types it records; dispatch regions and
//! buffer annotations as [`crate::regions`] says. Errors name the op, the
//! value (with its text-form name and label) and the shapes involved.

use crate::error::IrError;
use crate::graph::{Graph, ValueRef};
use crate::op::Op;
use crate::program::Program;
use std::collections::{HashMap, HashSet};

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
        let mut slots: Vec<u32> = g
            .g
            .edges_directed(n, petgraph::Direction::Incoming)
            .map(|e| e.weight().slot)
            .collect();
        slots.sort();
        if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
            return Err(IrError::Verify { op, value: describe(n), message: format!("operand slots {slots:?} are not 0..{}", slots.len()) });
        }
        let operands = g.operands(n);
        let mut tys = Vec::new();
        for (i, v) in operands.iter().enumerate() {
            let t = g.value_type(*v).map_err(|e| IrError::Verify {
                op: op.clone(),
                value: describe(n),
                message: format!("operand {i}: {e}"),
            })?;
            tys.push(t);
        }
        if let Op::Input { name, .. } = &node.op {
            if !input_names.insert(name.clone()) {
                return Err(IrError::Verify { op, value: describe(n), message: format!("duplicate input name `{name}`") });
            }
        }
        let inferred = crate::infer::infer(&node.op, &tys).map_err(|message| {
            let opnds: Vec<String> = operands
                .iter()
                .zip(&tys)
                .map(|(v, t)| format!("{}: {t}", value_ref_name(g, &names, *v)))
                .collect();
            IrError::Verify { op: op.clone(), value: describe(n), message: format!("{message} (operands {})", opnds.join(", ")) }
        })?;
        if inferred != node.outputs {
            let rec: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
            let inf: Vec<String> = inferred.iter().map(|t| t.to_string()).collect();
            return Err(IrError::Verify {
                op,
                value: describe(n),
                message: format!("recorded type {} but operands give {}", rec.join(", "), inf.join(", ")),
            });
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
    Ok(())
}
