//! `dispatch-formation`: partition each stage's compute ops into dispatch
//! regions (`#dispatch(k)`), each of which code generation emits as one
//! kernel.
//!
//! What: every compute op (everything but input/param/constant/iota, which
//! stay outside as region inputs) ends up in exactly one region. A region
//! holds at most one *anchor* — an op with its own loop structure:
//! `linear`, `matmul`, `attention`, `conv`, the norms, `softmax`,
//! reductions and `topk` — plus the elementwise and data-movement ops fused
//! around it; regions without an anchor are plain elementwise loops. Regions
//! are numbered in the order they run ([`omnic_ir::regions::schedule`]).
//!
//! Why: launching one kernel per op and writing every intermediate to
//! memory costs more than the arithmetic of most ops in a DiT block. Fusing
//! the bias/activation into the GEMM that produces it, adaLN modulation
//! `norm(x)·(1+scale)+shift` into the norm, gates and residual adds into the
//! projection before them and RoPE into the attention that reads it keeps
//! those values in registers: only region outputs touch memory (see
//! `memory-plan`).
//!
//! Op classes:
//! - *elementwise*: unary, binary, compare, `where`, `cast`;
//! - *view*: `reshape` (metadata only), `transpose`, `split`, `slice`: every
//!   output element is one input element and no input element is used
//!   twice, so a view fuses as a store remap (epilogue) or a load remap
//!   (prologue) and never needs a kernel of its own when it has a neighbour;
//! - `concat`: a view of each operand; an epilogue only when all its
//!   operands come from the same region (the region then writes the whole
//!   result), otherwise a load remap;
//! - *gathers*: `gather`, `pad`, `expand`, `upsample_nearest` read input
//!   elements several times (or write constants), so they only fuse as load
//!   remaps (prologue) or in loops;
//! - *anchors* as above; two anchors never share a region.
//!
//! Rules, applied in two phases:
//! 1. Epilogue (topological order): a non-anchor op joins the region of one
//!    of its operands if it is elementwise and that operand is not
//!    broadcast (its shape is the result shape; other operands broadcast
//!    into it and are read from outside), a view of it, or a concat of
//!    operands all in that region. Otherwise it starts a region. Chains
//!    continue through ops that join, so `linear → add(bias) → gelu`,
//!    `layer_norm → mul(1+scale) → add(shift)`, `linear → mul(gate) →
//!    add(residual)` and `attention → transpose → reshape` each become one
//!    region; a value used by several ops of the region is computed once.
//! 2. Prologue (consumers first, to a fixed point): a region without an
//!    anchor whose results are all used by one other region, and are not
//!    stage outputs, moves into that region (computed where it is loaded):
//!    RoPE (`concat`, `split`, `neg`, `mul`, `add`) into `attention`, the
//!    `1+scale` of a modulation broadcast into its norm, a broadcast into
//!    the loop that reads it. A region containing a transcendental op
//!    (`exp`, `sin`, `tanh`, `silu`, `pow`, …) moves only into uses that read
//!    each element once, never into a GEMM/conv/attention operand or through
//!    a broadcast, since it would be recomputed for every reuse.
//!
//! Every merge keeps the regions orderable (no path leaves a region and
//! re-enters it, and no two regions feed each other), the invariant the
//! verifier checks. A value read by several regions is never fused into
//! one of them: it is a region output, written once.
//!
//! When it does not apply: graphs without compute ops. Ops never fuse
//! across an anchor boundary (a GEMM feeding a GEMM is two regions), a
//! broadcast operand is never an epilogue's source (its region would have
//! to recompute itself per broadcast copy), and a region used by two others
//! or by a stage output stays on its own. Run it last (before
//! `memory-plan`): earlier passes do not maintain regions. Existing
//! `#dispatch` annotations are recomputed from scratch, and `#buffer`
//! annotations dropped unless the regions come out the same.
//!
//! Statistics: `ops before` (compute ops), `dispatches`, and
//! `dispatches per 100 ops` (the ratio, rounded up), over all stages.

mod classes;
mod partition;

use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::regions::{schedule, Step};
use omnic_ir::{Annotation, Graph, Program};
use partition::Partition;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

const NAME: &str = "dispatch-formation";

pub struct DispatchFormation;

/// What forming regions in one graph gave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Formed {
    pub ops: usize,
    pub dispatches: usize,
    pub epilogue_ops: i64,
    pub prologues: i64,
    pub changed: bool,
}

/// Replace the graph's regions by freshly formed ones; a memory plan
/// (`#buffer` annotations) is dropped unless the regions come out the same.
pub fn form_regions(g: &mut Graph) -> Result<Formed, PassError> {
    let invalid = |e| PassError::Invalid { pass: NAME.into(), source: e };
    let topo = g.topo_order().map_err(invalid)?;
    let before: Vec<(NodeIndex, Vec<Annotation>)> = topo.iter().map(|&n| (n, g.node(n).annotations.clone())).collect();
    let (groups, epilogue_ops, prologues) = {
        let mut p = Partition::new(g, &topo);
        let e = p.epilogues(&topo);
        let pr = p.prologues();
        (p.groups.into_iter().flatten().map(|gr| gr.members).collect::<Vec<_>>(), e, pr)
    };
    for &n in &topo {
        g.node_mut(n).annotations.retain(|a| !matches!(a, Annotation::Dispatch(_)));
    }
    // Provisional ids, then renumber in schedule order.
    for (k, ms) in groups.iter().enumerate() {
        for &m in ms {
            g.node_mut(m).annotations.push(Annotation::Dispatch(k as u32));
        }
    }
    let order: Vec<u32> = schedule(g)
        .map_err(invalid)?
        .into_iter()
        .filter_map(|s| match s {
            Step::Region(k) => Some(k),
            Step::Node(_) => None,
        })
        .collect();
    let renumber: HashMap<u32, u32> = order.iter().enumerate().map(|(i, &k)| (k, i as u32)).collect();
    for &n in &topo {
        for a in g.node_mut(n).annotations.iter_mut() {
            if let Annotation::Dispatch(k) = a {
                *k = renumber[k];
            }
        }
    }
    // A memory plan stays valid only over the regions it was made for.
    let same_regions = before.iter().all(|(n, anns)| {
        let old = anns.iter().find_map(|a| if let Annotation::Dispatch(k) = a { Some(*k) } else { None });
        old == g.node(*n).dispatch()
    });
    for (n, anns) in &before {
        if same_regions {
            g.node_mut(*n).annotations = anns.clone();
        } else {
            g.node_mut(*n).annotations.retain(|a| !matches!(a, Annotation::Buffer { .. }));
        }
    }
    let changed = before.iter().any(|(n, anns)| g.node(*n).annotations != *anns);
    Ok(Formed { ops: g.op_count(), dispatches: groups.len(), epilogue_ops, prologues, changed })
}

impl Pass for DispatchFormation {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "group ops into dispatch regions (one kernel each): epilogue, prologue and elementwise fusion"
    }
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let f = form_regions(g)?;
        cx.stat(NAME, "ops before", f.ops as i64);
        cx.stat(NAME, "dispatches", f.dispatches as i64);
        cx.stat(NAME, "ops fused as epilogues", f.epilogue_ops);
        cx.stat(NAME, "groups fused as prologues", f.prologues);
        Ok(f.changed)
    }
    fn run(&self, p: &mut Program, cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for st in &mut p.stages {
            changed |= self.run_on_graph(&mut st.graph, cx)?;
        }
        let get = |cx: &PassContext, what: &str| cx.stats.get(&(NAME.to_string(), what.to_string())).copied().unwrap_or(0);
        let (ops, dispatches) = (get(cx, "ops before"), get(cx, "dispatches"));
        if ops > 0 {
            cx.set_stat(NAME, "dispatches per 100 ops", (100 * dispatches + ops - 1) / ops);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests;
