//! Graphviz export: a graph (or every stage of a program) as a `digraph`,
//! for looking at what passes did (`omnic opt --dot FILE`).
//!
//! Nodes are labelled with their text-form name, mnemonic and result
//! types (`%12 = linear` / `f32[batch,64,16]`); sources are ellipses,
//! compute ops boxes, stage outputs plain text. Dispatch regions are
//! clusters (`subgraph cluster_…`, labelled `dispatch k`), so a fused graph
//! shows its kernels. Edges from multi-result nodes carry the result index.
//! Render with `dot -Tsvg FILE -o out.svg`.

use crate::graph::Graph;
use crate::op::Op;
use crate::program::Program;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// One graph as `digraph "graph" { … }`.
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::from("digraph \"graph\" {\n  node [fontname=\"monospace\", fontsize=10];\n");
    body(g, "n", "  ", &mut out);
    out.push_str("}\n");
    out
}

/// Every stage of a program as a cluster of one `digraph`.
pub fn program_to_dot(p: &Program) -> String {
    let mut out = String::from("digraph \"program\" {\n  compound=true;\n  node [fontname=\"monospace\", fontsize=10];\n");
    for (i, st) in p.stages.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_stage{i} {{\n    label=\"stage {}\";", escape(&st.name));
        body(&st.graph, &format!("s{i}n"), "    ", &mut out);
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// `"…"` contents: quotes, backslashes and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Nodes (grouped into region clusters), output nodes and edges. Node ids
/// are `{prefix}{k}` with `k` the text-form number.
fn body(g: &Graph, prefix: &str, ind: &str, out: &mut String) {
    let order: Vec<NodeIndex> = g.topo_order().unwrap_or_else(|_| g.g.node_indices().collect());
    let names: HashMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut clusters: BTreeMap<u32, Vec<NodeIndex>> = BTreeMap::new();
    let mut loose = Vec::new();
    for &n in &order {
        match g.node(n).dispatch() {
            Some(k) => clusters.entry(k).or_default().push(n),
            None => loose.push(n),
        }
    }
    for &n in &loose {
        node_stmt(g, &names, prefix, n, ind, out);
    }
    for (k, ms) in &clusters {
        let _ = writeln!(out, "{ind}subgraph cluster_{prefix}d{k} {{\n{ind}  label=\"dispatch {k}\"; style=rounded; color=blue;");
        for &n in ms {
            node_stmt(g, &names, prefix, n, &format!("{ind}  "), out);
        }
        let _ = writeln!(out, "{ind}}}");
    }
    for (i, (name, _)) in g.outputs.iter().enumerate() {
        let _ = writeln!(out, "{ind}{prefix}out{i} [shape=plaintext, label=\"output {}\"];", escape(name));
    }
    let mut edges: Vec<(usize, usize, u32, u32)> =
        g.g.edge_references().map(|e| (names[&e.source()], names[&e.target()], e.weight().slot, e.weight().port)).collect();
    edges.sort();
    for (a, b, _, port) in edges {
        let multi = g.node(order[a]).outputs.len() > 1;
        let label = if multi { format!(" [label=\"#{port}\"]") } else { String::new() };
        let _ = writeln!(out, "{ind}{prefix}{a} -> {prefix}{b}{label};");
    }
    for (i, (_, v)) in g.outputs.iter().enumerate() {
        if let Some(&k) = names.get(&v.node) {
            let _ = writeln!(out, "{ind}{prefix}{k} -> {prefix}out{i};");
        }
    }
}

fn node_stmt(g: &Graph, names: &HashMap<NodeIndex, usize>, prefix: &str, n: NodeIndex, ind: &str, out: &mut String) {
    let node = g.node(n);
    let k = names[&n];
    let head = match &node.op {
        Op::Input { name, .. } | Op::Param { name, .. } => format!("%{k} = {} \"{name}\"", node.op.mnemonic()),
        op => format!("%{k} = {}", op.mnemonic()),
    };
    let tys: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
    let shape = if node.op.is_source() { "ellipse" } else { "box" };
    let _ = writeln!(out, "{ind}{prefix}{k} [shape={shape}, label=\"{}\\n{}\"];", escape(&head), escape(&tys.join(", ")));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse_graph;

    #[test]
    fn digraph_with_one_statement_per_node_and_region_clusters() {
        let g = parse_graph(
            "graph {
  %0 = input \"x \\\"q\\\"\" : f32[batch,4]
  %1 = param \"w\" : f32[8,4]
  %2 = linear(%0, %1) {bias=false} : f32[batch,8] #dispatch(0)
  %3 = silu(%2) : f32[batch,8] #dispatch(0)
  %4:2 = split(%3) {axis=1, sizes=[4,4]} : f32[batch,4], f32[batch,4] #dispatch(1)
  %5 = mul(%4#0, %4#1) : f32[batch,4] #dispatch(1)
  output \"y\" = %5
}
",
        )
        .unwrap();
        let d = to_dot(&g);
        assert!(d.starts_with("digraph \"graph\" {\n") && d.ends_with("}\n"), "{d}");
        assert_eq!(d.matches('{').count(), d.matches('}').count(), "{d}");
        let node_lines = d.lines().filter(|l| l.trim_start().starts_with('n') && l.contains(" [shape=") && !l.contains("->")).count();
        assert_eq!(node_lines, g.len() + g.outputs.len(), "{d}");
        assert_eq!(d.matches("subgraph cluster_").count(), 2);
        assert_eq!(d.matches(" -> ").count(), g.g.edge_count() + g.outputs.len());
        assert!(d.contains("n2 [shape=box, label=\"%2 = linear\\nf32[batch,8]\"]"), "{d}");
        assert!(d.contains("input \\\"x \\\"q\\\"\\\""), "quotes escaped: {d}");
        assert!(d.contains("n4 -> n5 [label=\"#1\"]"), "{d}");
        let p = program_to_dot(&Program::single("main", g));
        assert!(p.contains("subgraph cluster_stage0") && p.contains("s0n2 -> s0n3;"), "{p}");
    }
}
