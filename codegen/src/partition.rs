//! A stage's compute ops split into the steps the runtime runs: generated
//! kernels, runtime ukernels and views.
//!
//! Regions come from the IR's `#dispatch(k)` annotations (the
//! `dispatch-formation` pass); compute nodes without one are regions of
//! their own. A graph with no annotation at all gets a simple fallback
//! partition: every compute op is its own region, except that an
//! elementwise op joins the region of an elementwise operand of its own
//! shape (so chains of elementwise ops fuse).
//!
//! Each region then becomes steps:
//! - `linear`, `matmul`, `attention`, `conv`, `topk` and `moe` nodes are
//!   [`Unit::Ukernel`]s (runtime kernels, never generated code);
//! - a `reshape` is a *view* (same bytes, new shape) unless it sits between
//!   two kernel members of the region (its operand is computed by the region's
//!   kernel and a non-ukernel member reads it), in which case the kernel
//!   computes it;
//! - the remaining members form kernels: members that depend on the same set
//!   of the region's ukernels form one kernel, so a region `prologue →
//!   linear → epilogue` gives a prologue kernel, the ukernel and an
//!   epilogue kernel, in an order that respects every dependency.
//!
//! A `Linear` that absorbs the `concat` feeding it or the `split` reading it
//! ([`crate::linear_sections`]) takes that node out of its region: the
//! ukernel step reads the concat's operands and writes the split's results
//! ([`Partition::linear_fusions`]).
//!
//! An `iota` read by something other than a kernel (a ukernel, a view, a
//! stage output) gets a kernel of its own; kernels compute the iotas and
//! literals they read themselves.

use crate::cpu::lower::{is_lazy, KernelPlan};
use crate::error::{CodegenError, Result};
use crate::linear_sections::{linear_fusions, LinearFusion};
use omnic_ir::regions::{region_inputs, region_outputs};
use omnic_ir::{Graph, Op, ValueRef};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

/// Whether `op` runs as a runtime ukernel.
pub fn is_ukernel(op: &Op) -> bool {
    matches!(op, Op::Linear { .. } | Op::MatMul | Op::Attention { .. } | Op::Conv { .. } | Op::TopK { .. } | Op::Moe { .. })
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Generated code; `region` is the dispatch region it came from (if any).
    Kernel { plan: KernelPlan, region: Option<u32> },
    /// A runtime kernel for one node.
    Ukernel { node: NodeIndex },
}

/// The steps of a stage in execution order, and its views.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    pub units: Vec<Unit>,
    /// Reshape nodes that are views, with the value whose bytes they read
    /// (never itself a view).
    pub views: HashMap<NodeIndex, ValueRef>,
    /// `Linear` ukernels that absorb a `concat` (input sections) and/or a
    /// `split` (result sections); those nodes are in no unit.
    pub linear_fusions: HashMap<NodeIndex, LinearFusion>,
}

/// Split a stage graph into steps (see the module doc).
pub fn partition(g: &Graph) -> Result<Partition> {
    let topo = g.topo_order()?;
    let mut fusions = linear_fusions(g, &topo);
    // An absorbed split hands its pieces to the kernels that read them (one
    // argument each), an absorbed concat makes its operands results of the
    // kernels computing them: where that takes a kernel past the runtime's
    // descriptor limit, that fusion is undone and the stage partitioned again.
    loop {
        let p = partition_with(g, &topo, fusions.clone())?;
        let mut changed = false;
        for u in &p.units {
            let Unit::Kernel { plan, .. } = u else { continue };
            if plan.args.len() + plan.results.len() <= omnic_runtime::exec::code::MAX_KERNEL_ARGS {
                continue;
            }
            for f in fusions.values_mut() {
                if f.split.is_some_and(|s| plan.args.iter().any(|v| v.node == s)) {
                    f.split = None;
                    changed = true;
                }
                if f.concat.is_some_and(|c| g.operands(c).iter().any(|v| plan.results.contains(v))) {
                    f.concat = None;
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(p);
        }
        fusions.retain(|_, f| f.concat.is_some() || f.split.is_some());
    }
}

/// [`partition`] with the given `Linear` fusions.
fn partition_with(g: &Graph, topo: &[NodeIndex], fusions: HashMap<NodeIndex, LinearFusion>) -> Result<Partition> {
    let pos: HashMap<NodeIndex, usize> = topo.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let regions = regions(g, topo);
    let absorbed: HashSet<NodeIndex> = fusions.values().flat_map(|f| f.nodes()).collect();

    let mut views: HashMap<NodeIndex, ValueRef> = HashMap::new();
    let mut units: Vec<Unit> = Vec::new();
    let mut kernel_members: HashSet<NodeIndex> = HashSet::new();
    for (id, members) in &regions {
        let set: HashSet<NodeIndex> = members.iter().copied().collect();
        let uk: HashSet<NodeIndex> = members.iter().copied().filter(|&n| is_ukernel(&g.node(n).op)).collect();
        let mut is_view: HashSet<NodeIndex> = HashSet::new();
        for &m in members {
            if !matches!(g.node(m).op, Op::Reshape { .. }) {
                continue;
            }
            let src = g.operands(m).first().copied();
            let in_kernel = |n: &NodeIndex| set.contains(n) && !uk.contains(n) && !absorbed.contains(n);
            let src_in_kernel = src.is_some_and(|v| in_kernel(&v.node));
            let kernel_user = g.users(m).into_iter().any(|u| in_kernel(&u));
            if !(src_in_kernel && kernel_user) {
                is_view.insert(m);
            }
        }
        // Ukernel ancestors of each member within the region.
        let mut anc: HashMap<NodeIndex, BTreeSet<NodeIndex>> = HashMap::new();
        for &m in members {
            let mut a = BTreeSet::new();
            for v in g.operands(m) {
                if set.contains(&v.node) {
                    if let Some(pa) = anc.get(&v.node) {
                        a.extend(pa.iter().copied());
                    }
                    if uk.contains(&v.node) {
                        a.insert(v.node);
                    }
                }
            }
            anc.insert(m, a);
        }
        let mut groups: BTreeMap<Vec<NodeIndex>, Vec<NodeIndex>> = BTreeMap::new();
        for &m in members {
            if uk.contains(&m) {
                units.push(Unit::Ukernel { node: m });
            } else if !is_view.contains(&m) && !absorbed.contains(&m) {
                groups.entry(anc[&m].iter().copied().collect()).or_default().push(m);
            }
        }
        for (_, ms) in groups {
            kernel_members.extend(ms.iter().copied());
            units.push(Unit::Kernel { plan: plan_for(g, ms), region: *id });
        }
        for m in is_view {
            views.insert(m, ValueRef::new(m, 0));
        }
    }
    // Resolve views to the value whose bytes they read.
    let keys: Vec<NodeIndex> = views.keys().copied().collect();
    for m in keys {
        let mut v = ValueRef::new(m, 0);
        let mut guard = 0;
        while views.contains_key(&v.node) {
            v = g.operands(v.node).first().copied().ok_or_else(|| CodegenError::Internal("reshape without an operand".into()))?;
            guard += 1;
            if guard > g.len() {
                return Err(CodegenError::Internal("cycle of reshapes".into()));
            }
        }
        views.insert(m, v);
    }
    // Iotas read by something other than a kernel.
    let outputs: HashSet<NodeIndex> = g.outputs.iter().map(|(_, v)| v.node).collect();
    for &n in topo {
        if !matches!(g.node(n).op, Op::Iota { .. }) {
            continue;
        }
        let needed = outputs.contains(&n) || g.users(n).into_iter().any(|u| !kernel_members.contains(&u)) || views.values().any(|v| v.node == n);
        if needed {
            units.push(Unit::Kernel { plan: KernelPlan { members: vec![n], args: vec![], results: vec![ValueRef::new(n, 0)] }, region: None });
        }
    }
    // Drop steps whose results nobody reads.
    units.retain(|u| match u {
        Unit::Kernel { plan, .. } => !plan.results.is_empty(),
        Unit::Ukernel { node } => outputs.contains(node) || !g.users(*node).is_empty(),
    });
    let units = order(g, &pos, units, &views, &fusions)?;
    Ok(Partition { units, views, linear_fusions: fusions })
}

/// Kernel plan for members (topologically sorted): arguments are the
/// values read from outside except literals and iotas, which the kernel
/// computes; results are the values used outside or returned.
fn plan_for(g: &Graph, members: Vec<NodeIndex>) -> KernelPlan {
    let args = region_inputs(g, &members).into_iter().filter(|v| !matches!(g.node(v.node).op, Op::Constant(_) | Op::Iota { .. })).collect();
    let results = region_outputs(g, &members);
    KernelPlan { members, args, results }
}

/// Regions as (dispatch id, members in topological order), in order of
/// their first member.
fn regions(g: &Graph, topo: &[NodeIndex]) -> Vec<(Option<u32>, Vec<NodeIndex>)> {
    let compute: Vec<NodeIndex> = topo.iter().copied().filter(|&n| !g.node(n).op.is_source()).collect();
    let annotated = compute.iter().any(|&n| g.node(n).dispatch().is_some());
    let mut out: Vec<(Option<u32>, Vec<NodeIndex>)> = Vec::new();
    if annotated {
        let mut by_id: HashMap<u32, usize> = HashMap::new();
        for &n in &compute {
            match g.node(n).dispatch() {
                Some(k) => match by_id.get(&k) {
                    Some(&i) => out[i].1.push(n),
                    None => {
                        by_id.insert(k, out.len());
                        out.push((Some(k), vec![n]));
                    }
                },
                None => out.push((None, vec![n])),
            }
        }
        return out;
    }
    // Fallback: elementwise chains.
    let pos: HashMap<NodeIndex, usize> = topo.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut group_of: HashMap<NodeIndex, usize> = HashMap::new();
    let mut min_pos: Vec<usize> = Vec::new();
    let mut all_lazy: Vec<bool> = Vec::new();
    for &n in &compute {
        let node = g.node(n);
        let lazy = is_lazy(&node.op);
        let mut joined = None;
        if lazy {
            let ops = g.operands(n);
            for v in &ops {
                let Some(&k) = group_of.get(&v.node) else { continue };
                let same_shape = g.value_type(*v).is_ok_and(|t| node.outputs.first().is_some_and(|o| o.shape == t.shape));
                if !all_lazy[k] || !same_shape {
                    continue;
                }
                // No other operand may depend on group k (that would be a cycle).
                let ok = ops.iter().all(|u| g.node(u.node).op.is_source() || group_of.get(&u.node) == Some(&k) || pos[&u.node] < min_pos[k]);
                if ok {
                    joined = Some(k);
                    break;
                }
            }
        }
        match joined {
            Some(k) => {
                out[k].1.push(n);
                group_of.insert(n, k);
            }
            None => {
                group_of.insert(n, out.len());
                out.push((None, vec![n]));
                min_pos.push(pos[&n]);
                all_lazy.push(lazy);
            }
        }
    }
    out
}

/// Units in an order where every value is written before it is read
/// (ties: the unit whose first member comes first).
fn order(
    g: &Graph,
    pos: &HashMap<NodeIndex, usize>,
    units: Vec<Unit>,
    views: &HashMap<NodeIndex, ValueRef>,
    fusions: &HashMap<NodeIndex, LinearFusion>,
) -> Result<Vec<Unit>> {
    let mut producer: HashMap<ValueRef, usize> = HashMap::new();
    let mut first: Vec<usize> = Vec::with_capacity(units.len());
    let mut reads: Vec<Vec<ValueRef>> = Vec::with_capacity(units.len());
    for (i, u) in units.iter().enumerate() {
        match u {
            Unit::Kernel { plan, .. } => {
                for &r in &plan.results {
                    producer.insert(r, i);
                }
                first.push(plan.members.iter().map(|n| pos[n]).min().unwrap_or(usize::MAX));
                reads.push(plan.args.clone());
            }
            Unit::Ukernel { node } => {
                let f = fusions.get(node).copied().unwrap_or_default();
                for n in [Some(*node), f.split].into_iter().flatten() {
                    for p in 0..g.node(n).outputs.len() {
                        producer.insert(ValueRef::new(n, p as u32), i);
                    }
                }
                first.push(pos[node]);
                let mut r = g.operands(*node);
                if let Some(c) = f.concat {
                    r.extend(g.operands(c));
                }
                reads.push(r);
            }
        }
    }
    let n = units.len();
    let mut succ: Vec<HashSet<usize>> = vec![HashSet::new(); n];
    let mut indeg = vec![0usize; n];
    for (i, rs) in reads.iter().enumerate() {
        for v in rs {
            let root = views.get(&v.node).copied().unwrap_or(*v);
            if let Some(&p) = producer.get(&root) {
                if p != i && succ[p].insert(i) {
                    indeg[i] += 1;
                }
            }
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<(usize, usize)>> = (0..n).filter(|&i| indeg[i] == 0).map(|i| std::cmp::Reverse((first[i], i))).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse((_, i))) = ready.pop() {
        out.push(i);
        let next: Vec<usize> = succ[i].iter().copied().collect();
        for j in next {
            indeg[j] -= 1;
            if indeg[j] == 0 {
                ready.push(std::cmp::Reverse((first[j], j)));
            }
        }
    }
    if out.len() != n {
        return Err(CodegenError::Internal("the steps of the stage depend on each other in a cycle (a dispatch region cannot run as one kernel)".into()));
    }
    let mut slots: Vec<Option<Unit>> = units.into_iter().map(Some).collect();
    Ok(out.into_iter().filter_map(|i| slots[i].take()).collect())
}
