//! Dispatch regions: groups of nodes that run as one kernel.
//!
//! A node annotated `#dispatch(k)` belongs to region `k` (the
//! `dispatch-formation` pass assigns them; code generation emits one kernel
//! per region). Values a region reads from outside are its *inputs*, values
//! it defines that are used outside it (or are stage outputs) its *outputs*:
//! only those are materialised in memory, everything else stays inside the
//! kernel.
//!
//! Rules, checked by [`verify_regions`] (part of [`crate::verify::verify_graph`]):
//! - only compute ops belong to regions: sources (input, param, constant,
//!   iota) stay outside and reach a region as inputs, so weights and stage
//!   arguments are never copied into a kernel;
//! - a node belongs to at most one region;
//! - the regions can run one after the other, each as a whole: contracting
//!   every region to a single vertex leaves the graph acyclic. In particular
//!   every region is *convex*: no path leaves a region and re-enters it
//!   (otherwise the kernel would need a value computed from its own result).
//!
//! Nodes without a region (all of them before `dispatch-formation`) are
//! steps of their own in the [`schedule`].

use crate::error::IrError;
use crate::graph::{Graph, ValueRef};
use crate::verify::value_names;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

/// One dispatch region of a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub id: u32,
    /// Members in topological order.
    pub members: Vec<NodeIndex>,
    /// Values defined outside and read by a member, in order of first use.
    pub inputs: Vec<ValueRef>,
    /// Values defined by a member and used outside or as a stage output, in
    /// member order then result order.
    pub outputs: Vec<ValueRef>,
}

/// Every region of `g` by id.
pub fn regions(g: &Graph) -> Result<BTreeMap<u32, Region>, IrError> {
    let mut members: BTreeMap<u32, Vec<NodeIndex>> = BTreeMap::new();
    for n in g.topo_order()? {
        if let Some(k) = g.node(n).dispatch() {
            members.entry(k).or_default().push(n);
        }
    }
    Ok(members
        .into_iter()
        .map(|(id, ms)| {
            let (inputs, outputs) = (region_inputs(g, &ms), region_outputs(g, &ms));
            (id, Region { id, members: ms, inputs, outputs })
        })
        .collect())
}

/// Members of region `id` in topological order (empty if there is none).
pub fn region_members(g: &Graph, id: u32) -> Result<Vec<NodeIndex>, IrError> {
    Ok(g.topo_order()?.into_iter().filter(|&n| g.node(n).dispatch() == Some(id)).collect())
}

/// Values read by `members` and defined outside them, in order of first use.
/// Works for any node set, e.g. a candidate region.
pub fn region_inputs(g: &Graph, members: &[NodeIndex]) -> Vec<ValueRef> {
    let set: HashSet<NodeIndex> = members.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for &m in members {
        for v in g.operands(m) {
            if !set.contains(&v.node) && seen.insert(v) {
                out.push(v);
            }
        }
    }
    out
}

/// Values defined by `members` that a node outside them uses or that are
/// stage outputs, in member order then result order.
pub fn region_outputs(g: &Graph, members: &[NodeIndex]) -> Vec<ValueRef> {
    let set: HashSet<NodeIndex> = members.iter().copied().collect();
    let graph_outs: HashSet<ValueRef> = g.outputs.iter().map(|(_, v)| *v).collect();
    let mut out = Vec::new();
    for &m in members {
        let mut ports: Vec<u32> =
            g.g.edges_directed(m, Direction::Outgoing)
                .filter(|e| !set.contains(&e.target()))
                .map(|e| e.weight().port)
                .chain((0..g.node(m).outputs.len() as u32).filter(|&p| graph_outs.contains(&ValueRef::new(m, p))))
                .collect();
        ports.sort();
        ports.dedup();
        out.extend(ports.into_iter().map(|p| ValueRef::new(m, p)));
    }
    out
}

/// One step of the dispatch schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A whole region (one kernel).
    Region(u32),
    /// A compute node outside every region.
    Node(NodeIndex),
}

/// The order code runs in: regions and region-less compute nodes (sources
/// are not steps), operands before users, ties broken by the topological
/// position of each step's first node. Errors when regions cannot be
/// ordered (see the module doc).
pub fn schedule(g: &Graph) -> Result<Vec<Step>, IrError> {
    let topo = g.topo_order()?;
    let pos: HashMap<NodeIndex, usize> = topo.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    // Vertices of the quotient graph: one per region, one per other node.
    let mut steps: Vec<(Step, usize)> = Vec::new();
    let mut vertex_of: HashMap<NodeIndex, usize> = HashMap::new();
    let mut region_vertex: HashMap<u32, usize> = HashMap::new();
    for &n in &topo {
        let v = match g.node(n).dispatch() {
            Some(k) => *region_vertex.entry(k).or_insert_with(|| {
                steps.push((Step::Region(k), pos[&n]));
                steps.len() - 1
            }),
            None => {
                steps.push((Step::Node(n), pos[&n]));
                steps.len() - 1
            }
        };
        vertex_of.insert(n, v);
    }
    let mut succ: Vec<HashSet<usize>> = vec![HashSet::new(); steps.len()];
    let mut indeg = vec![0usize; steps.len()];
    for e in g.g.edge_references() {
        let (a, b) = (vertex_of[&e.source()], vertex_of[&e.target()]);
        if a != b && succ[a].insert(b) {
            indeg[b] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<(usize, usize)>> = (0..steps.len()).filter(|&v| indeg[v] == 0).map(|v| Reverse((steps[v].1, v))).collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(Reverse((_, v))) = ready.pop() {
        order.push(v);
        for &w in &succ[v] {
            indeg[w] -= 1;
            if indeg[w] == 0 {
                ready.push(Reverse((steps[w].1, w)));
            }
        }
    }
    if order.len() != steps.len() {
        let stuck: Vec<u32> = (0..steps.len())
            .filter(|&v| indeg[v] > 0)
            .filter_map(|v| match steps[v].0 {
                Step::Region(k) => Some(k),
                Step::Node(_) => None,
            })
            .collect();
        return Err(cycle_error(g, &stuck));
    }
    Ok(order
        .into_iter()
        .map(|v| steps[v].0)
        .filter(|s| match s {
            Step::Node(n) => !g.node(*n).op.is_source(),
            Step::Region(_) => true,
        })
        .collect())
}

/// Explain why regions cannot be ordered: a region that is not convex
/// (with the path that leaves and re-enters it) or regions that depend on
/// each other.
fn cycle_error(g: &Graph, stuck: &[u32]) -> IrError {
    let names = value_names(g).unwrap_or_default();
    let name = |n: NodeIndex| names.get(&n).map_or_else(|| format!("node {}", n.index()), |k| format!("%{k}"));
    let mut sorted = stuck.to_vec();
    sorted.sort();
    for &k in &sorted {
        let members: Vec<NodeIndex> = g.g.node_indices().filter(|&n| g.node(n).dispatch() == Some(k)).collect();
        if let Some((outside, back)) = convexity_violation(g, &members) {
            return IrError::Graph(format!(
                "dispatch region {k} is not convex: {} is outside it, depends on it, and {} in it depends on {}",
                name(outside),
                name(back),
                name(outside)
            ));
        }
    }
    let list: Vec<String> = sorted.iter().map(|k| k.to_string()).collect();
    IrError::Graph(format!("dispatch regions {} depend on each other in a cycle: no order runs each as one kernel", list.join(", ")))
}

/// A node outside `members` that depends on them and feeds one of them,
/// with that member: proof that the set is not convex. `None` if convex.
pub fn convexity_violation(g: &Graph, members: &[NodeIndex]) -> Option<(NodeIndex, NodeIndex)> {
    let set: HashSet<NodeIndex> = members.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut queue: VecDeque<NodeIndex> = VecDeque::new();
    for &m in members {
        for s in g.g.neighbors_directed(m, Direction::Outgoing) {
            if !set.contains(&s) && seen.insert(s) {
                queue.push_back(s);
            }
        }
    }
    while let Some(x) = queue.pop_front() {
        for s in g.g.neighbors_directed(x, Direction::Outgoing) {
            if set.contains(&s) {
                return Some((x, s));
            }
            if seen.insert(s) {
                queue.push_back(s);
            }
        }
    }
    None
}

/// The region rules of the module doc, plus well-formed `#buffer`
/// annotations (an existing result, at most one buffer per result).
pub fn verify_regions(g: &Graph) -> Result<(), IrError> {
    let names = value_names(g)?;
    for n in g.g.node_indices() {
        let node = g.node(n);
        let k = names[&n];
        let regions: Vec<u32> = node
            .annotations
            .iter()
            .filter_map(|a| match a {
                crate::graph::Annotation::Dispatch(k) => Some(*k),
                _ => None,
            })
            .collect();
        if regions.len() > 1 {
            return Err(IrError::Graph(format!("%{k} is in several dispatch regions {regions:?}")));
        }
        if let (Some(r), true) = (regions.first(), node.op.is_source()) {
            return Err(IrError::Graph(format!(
                "`{}` %{k} is in dispatch region {r}: sources stay outside regions and are read as region inputs",
                node.op.mnemonic()
            )));
        }
        let mut results = HashSet::new();
        for a in &node.annotations {
            if let crate::graph::Annotation::Buffer { result, .. } = a {
                if *result as usize >= node.outputs.len() {
                    return Err(IrError::Graph(format!("%{k} has a buffer for result {result} but only {} result(s)", node.outputs.len())));
                }
                if !results.insert(*result) {
                    return Err(IrError::Graph(format!("%{k} has two buffers for result {result}")));
                }
            }
        }
    }
    schedule(g).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse_graph;

    const CHAIN: &str = "graph {
  %0 = input \"x\" : f32[4]
  %1 = exp(%0) : f32[4] #dispatch(0)
  %2 = neg(%1) : f32[4] #dispatch(0)
  %3 = tanh(%2) : f32[4] #dispatch(1)
  %4 = add(%3, %1) : f32[4] #dispatch(1)
  output \"y\" = %4
  output \"n\" = %2
}
";

    #[test]
    fn members_inputs_outputs_and_schedule() {
        let g = parse_graph(CHAIN).unwrap();
        let rs = regions(&g).unwrap();
        let ids = |vs: &[ValueRef]| -> Vec<usize> { vs.iter().map(|v| v.node.index()).collect() };
        assert_eq!(rs.len(), 2);
        let (r0, r1) = (&rs[&0], &rs[&1]);
        assert_eq!(ids(&r0.inputs), vec![0]);
        // %1 is read by region 1, %2 by region 1 and as a stage output.
        assert_eq!(ids(&r0.outputs), vec![1, 2]);
        assert_eq!(ids(&r1.inputs), vec![2, 1]);
        assert_eq!(ids(&r1.outputs), vec![4]);
        assert_eq!(region_members(&g, 1).unwrap().len(), 2);
        assert_eq!(schedule(&g).unwrap(), vec![Step::Region(0), Step::Region(1)]);
    }

    #[test]
    fn non_convex_region_is_rejected() {
        // %2 leaves region 0 and %3 re-enters it.
        let text = CHAIN.replace("%3 = tanh(%2) : f32[4] #dispatch(1)", "%3 = tanh(%2) : f32[4]").replace("#dispatch(1)", "#dispatch(0)");
        let e = parse_graph(&text).unwrap_err().to_string();
        assert!(e.contains("dispatch region 0 is not convex: %3 is outside it"), "{e}");
    }

    #[test]
    fn mutually_dependent_regions_are_rejected() {
        // Each region is convex on its own, but 0 feeds 1 and 1 feeds 0.
        let text = "graph {
  %0 = input \"x\" : f32[4]
  %1 = exp(%0) : f32[4] #dispatch(0)
  %2 = neg(%0) : f32[4] #dispatch(1)
  %3 = tanh(%1) : f32[4] #dispatch(1)
  %4 = abs(%2) : f32[4] #dispatch(0)
  output \"a\" = %3
  output \"b\" = %4
}
";
        let e = parse_graph(text).unwrap_err().to_string();
        assert!(e.contains("dispatch regions 0, 1 depend on each other"), "{e}");
    }

    #[test]
    fn sources_and_bad_buffers_are_rejected() {
        let e = parse_graph(&CHAIN.replace("%0 = input \"x\" : f32[4]", "%0 = input \"x\" : f32[4] #dispatch(0)")).unwrap_err().to_string();
        assert!(e.contains("sources stay outside regions"), "{e}");
        let e = parse_graph(&CHAIN.replace("%2 = neg(%1) : f32[4] #dispatch(0)", "%2 = neg(%1) : f32[4] #dispatch(0) #dispatch(1)")).unwrap_err().to_string();
        assert!(e.contains("several dispatch regions"), "{e}");
        let e = parse_graph(&CHAIN.replace("%4 = add(%3, %1) : f32[4] #dispatch(1)", "%4 = add(%3, %1) : f32[4] #dispatch(1) #buffer(0, result=1)"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("buffer for result 1"), "{e}");
    }

    #[test]
    fn annotations_round_trip() {
        let text = CHAIN.replace("%4 = add(%3, %1) : f32[4] #dispatch(1)", "%4 = add(%3, %1) : f32[4] #dispatch(1) #buffer(3)");
        let g = parse_graph(&text).unwrap();
        assert_eq!(g.to_string(), text);
        assert_eq!(g.node(NodeIndex::new(4)).buffer(0), Some(3));
        assert_eq!(g.node(NodeIndex::new(4)).dispatch(), Some(1));
        let multi = "graph {
  %0 = input \"x\" : f32[4]
  %1:2 = split(%0) {axis=0, sizes=[2,2]} : f32[2], f32[2] #dispatch(7) #buffer(0) #buffer(2, result=1)
  output \"a\" = %1#0
  output \"b\" = %1#1
}
";
        let g = parse_graph(multi).unwrap();
        assert_eq!(g.to_string(), multi);
        assert_eq!(g.node(NodeIndex::new(1)).buffer(1), Some(2));
    }
}
