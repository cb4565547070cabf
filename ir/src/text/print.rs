//! The printer: graphs and programs to text (grammar in the module doc of
//! [`super`]). Printing never fails: a graph with a cycle still prints, in
//! node-index order after a comment saying so, so that broken graphs can be
//! looked at.

use super::attrs::attrs_of;
use super::lexical::{fmt_f64, is_ident, quote};
use crate::graph::{Annotation, Graph, Role, ValueRef};
use crate::op::Op;
use crate::program::{CachePolicy, Control, DecodeSpec, DenoiseSpec, Guidance, Program};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
use std::fmt::Write;

/// Indentation of statements inside `graph { }` and `stage { }`.
const INDENT: &str = "  ";

/// `graph { … }` with one statement per line.
pub fn print_graph(g: &Graph) -> String {
    let mut out = String::from("graph {\n");
    print_body(g, &mut out);
    out.push_str("}\n");
    out
}

/// Metadata, stages and control of a program.
pub fn print_program(p: &Program) -> String {
    let mut out = String::new();
    for (k, v) in &p.metadata {
        let _ = writeln!(out, "meta {} = {}", quote(k), quote(v));
    }
    for st in &p.stages {
        let _ = writeln!(out, "stage {} {{", quote(&st.name));
        print_body(&st.graph, &mut out);
        out.push_str("}\n");
    }
    match &p.control {
        Control::Forward { stage } => {
            let _ = writeln!(out, "control forward {}", quote(stage));
        }
        Control::Denoise(d) => print_denoise(d, &mut out),
        Control::Decode(d) => print_decode(d, &mut out),
    }
    out
}

/// `control decode { … }`, one field per line in a fixed order.
fn print_decode(d: &DecodeSpec, out: &mut String) {
    out.push_str("control decode {\n");
    let _ = writeln!(out, "{INDENT}forward {}", quote(&d.forward));
    let _ = writeln!(out, "{INDENT}prefill {}", quote(&d.prefill));
    let _ = writeln!(out, "{INDENT}step {}", quote(&d.step));
    let _ = writeln!(out, "{INDENT}tokens {}", quote(&d.tokens));
    let _ = writeln!(out, "{INDENT}logits {}", quote(&d.logits));
    let _ = writeln!(out, "{INDENT}max_len {}", d.max_len);
    let eos: Vec<String> = d.eos.iter().map(|e| e.to_string()).collect();
    let _ = writeln!(out, "{INDENT}eos [{}]", eos.join(", "));
    for (new, past) in &d.cache {
        let _ = writeln!(out, "{INDENT}cache {} -> {}", quote(new), quote(past));
    }
    out.push_str("}\n");
}

/// `control denoise "body" { … }`, one field per line in a fixed order.
fn print_denoise(d: &DenoiseSpec, out: &mut String) {
    let _ = writeln!(out, "control denoise {} {{", quote(&d.body));
    let _ = writeln!(out, "{INDENT}scheduler {}", quote(&d.scheduler_config));
    let _ = writeln!(out, "{INDENT}steps {}", d.steps);
    let _ = writeln!(out, "{INDENT}sigmas {}", d.sigmas.name());
    let _ = writeln!(out, "{INDENT}latents {} -> {}", quote(&d.latents), quote(&d.latent_input));
    let _ = writeln!(out, "{INDENT}timestep {} / {}", quote(&d.timestep_input), fmt_f64(d.timestep_div));
    if d.timestep_i64 {
        let _ = writeln!(out, "{INDENT}timestep_i64");
    }
    let _ = writeln!(out, "{INDENT}prediction {}", quote(&d.prediction_output));
    for (from, to) in &d.inputs {
        let _ = writeln!(out, "{INDENT}input {} -> {}", quote(from), quote(to));
    }
    match &d.guidance {
        Guidance::None => {
            let _ = writeln!(out, "{INDENT}guidance none");
        }
        Guidance::TrueCfg { scale, negative } => {
            let _ = writeln!(out, "{INDENT}guidance true_cfg {}", fmt_f64(*scale));
            for (from, to) in negative {
                let _ = writeln!(out, "{INDENT}negative {} -> {}", quote(from), quote(to));
            }
        }
        Guidance::Distilled { input, scale } => {
            let _ = writeln!(out, "{INDENT}guidance distilled {} {}", quote(input), fmt_f64(*scale));
        }
        Guidance::ClassCfg { scale, labels, null_class } => {
            let _ = writeln!(out, "{INDENT}guidance class_cfg {} {} null {null_class}", fmt_f64(*scale), quote(labels));
        }
    }
    if let Some(names) = &d.cfg_batch {
        let names: Vec<String> = names.iter().map(|n| quote(n)).collect();
        let _ = writeln!(out, "{INDENT}cfg_batch [{}]", names.join(", "));
    }
    match &d.cache {
        None => {}
        Some(CachePolicy::TeaCache(t)) => {
            let coeffs: Vec<String> = t.coefficients.iter().map(|&c| fmt_f64(c)).collect();
            let _ = writeln!(
                out,
                "{INDENT}teacache {} [{}] pre {} blocks {} post {} modulated {}",
                fmt_f64(t.threshold),
                coeffs.join(", "),
                quote(&t.pre),
                quote(&t.blocks),
                quote(&t.post),
                quote(&t.modulated)
            );
            for (i, o) in &t.residuals {
                let _ = writeln!(out, "{INDENT}residual {} -> {}", quote(i), quote(o));
            }
        }
    }
    out.push_str("}\n");
}

/// The statements of a graph body: nodes in topological order, then outputs.
fn print_body(g: &Graph, out: &mut String) {
    let order = match g.topo_order() {
        Ok(order) => order,
        Err(e) => {
            let _ = writeln!(out, "{INDENT}// {e}: nodes listed in index order");
            g.g.node_indices().collect()
        }
    };
    // Same numbering as `verify::value_names` (which fails on a cycle).
    let names: HashMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    for &n in &order {
        out.push_str(INDENT);
        node_line(g, &names, n, out);
        out.push('\n');
    }
    for (name, v) in &g.outputs {
        let _ = writeln!(out, "{INDENT}output {} = {}", quote(name), value_name(g, &names, *v));
    }
}

/// `%k` for single-result nodes, `%k#p` for results of multi-result nodes
/// (and for a port that does not exist, so that it shows).
fn value_name(g: &Graph, names: &HashMap<NodeIndex, usize>, v: ValueRef) -> String {
    let k = names.get(&v.node).copied().unwrap_or(v.node.index());
    let results = g.g.node_weight(v.node).map_or(0, |n| n.outputs.len());
    if results == 1 && v.port == 0 {
        format!("%{k}")
    } else {
        format!("%{k}#{}", v.port)
    }
}

/// One node statement (without indentation or newline).
fn node_line(g: &Graph, names: &HashMap<NodeIndex, usize>, n: NodeIndex, out: &mut String) {
    let node = g.node(n);
    let _ = write!(out, "%{}", names[&n]);
    if node.outputs.len() != 1 {
        let _ = write!(out, ":{}", node.outputs.len());
    }
    let _ = write!(out, " = {}", node.op.mnemonic());
    match &node.op {
        Op::Input { name, .. } | Op::Param { name, .. } => {
            let _ = write!(out, " {}", quote(name));
        }
        Op::Constant(lit) => {
            let vals: Vec<String> = lit.values.iter().map(|&v| fmt_f64(v)).collect();
            let _ = write!(out, " [{}]", vals.join(", "));
        }
        _ => {}
    }
    let operands = g.operands(n);
    if !operands.is_empty() || !node.op.is_source() {
        let ops: Vec<String> = operands.iter().map(|&v| value_name(g, names, v)).collect();
        let _ = write!(out, "({})", ops.join(", "));
    }
    let attrs = attrs_of(&node.op, &node.outputs);
    if !attrs.is_empty() {
        let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(out, " {{{}}}", parts.join(", "));
    }
    let tys: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
    let _ = write!(out, " : {}", tys.join(", "));
    for a in &node.annotations {
        out.push(' ');
        annotation(a, out);
    }
    if let Some(l) = &node.label {
        let _ = write!(out, " loc({})", quote(l));
    }
}

/// `#block(i)`, `#dispatch(k)`, `#buffer(id[, result=p])` or `#role(name)`. A role is written bare only when reading
/// the bare word gives the same role back; otherwise it is quoted (a quoted
/// role always reads as `Role::Other`).
fn annotation(a: &Annotation, out: &mut String) {
    match a {
        Annotation::Block(i) => {
            let _ = write!(out, "#block({i})");
        }
        Annotation::Dispatch(_) | Annotation::Buffer { .. } => {
            let _ = write!(out, "#{a}");
        }
        Annotation::Role(r) => {
            let name = r.name();
            if is_ident(name) && Role::from_name(name) == *r {
                let _ = write!(out, "#role({name})");
            } else {
                let _ = write!(out, "#role({})", quote(name));
            }
        }
    }
}
