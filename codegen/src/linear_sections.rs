//! `concat → linear` and `linear → split` along the last axis, done by the
//! runtime's GEMM in place (the manifest's `Ukernel::LinearSections`).
//!
//! What: a `Linear` whose input is a `concat` along the last axis reads the
//! concat's operands directly (the GEMM takes each k-block from the operand
//! holding it), and a `Linear` whose result is only read by a `split` along
//! the last axis writes the split's pieces directly (each 32-column panel of
//! the weight into the piece holding its columns). The `concat` / `split`
//! node then leaves its dispatch region: no kernel copies the data.
//!
//! Why: a fused qkv+MLP projection followed by a split into heads, or an
//! `[attention, MLP]` concat feeding an output projection (FLUX single
//! blocks), otherwise costs a full extra read and write of the activations
//! per block.
//!
//! When it applies (else the unfused path, unchanged):
//! - concat: the `Linear`'s input (operand 0) is port 0 of a `concat` with
//!   `axis` = last; the `Linear` is its only user (not as weight or bias);
//!   the concat is not a stage output;
//! - split: every user of the `Linear` is one `split` with `axis` = last
//!   reading it; the `Linear`'s result is not a stage output; the split's
//!   sizes are constants and all but the last a multiple of 32 (the
//!   runtime's panel width, `omnic_runtime::kernels::gemm_packed::NR`).

use omnic_ir::{Dim, Graph, Op, ValueRef};
use omnic_runtime::kernels::gemm_packed::NR;
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

/// The `concat` and `split` a `Linear` absorbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearFusion {
    /// A concat whose operands are the step's input sections.
    pub concat: Option<NodeIndex>,
    /// A split whose results are the step's results.
    pub split: Option<NodeIndex>,
}

impl LinearFusion {
    /// The absorbed nodes.
    pub fn nodes(&self) -> impl Iterator<Item = NodeIndex> {
        self.concat.into_iter().chain(self.split)
    }
}

/// Every `Linear` of `g` with a concat or split to absorb (module doc).
pub fn linear_fusions(g: &Graph, topo: &[NodeIndex]) -> HashMap<NodeIndex, LinearFusion> {
    let outputs: HashSet<ValueRef> = g.outputs.iter().map(|(_, v)| *v).collect();
    let mut out = HashMap::new();
    for &n in topo {
        if !matches!(g.node(n).op, Op::Linear { .. }) {
            continue;
        }
        let f = LinearFusion { concat: concat_input(g, n, &outputs), split: split_result(g, n, &outputs) };
        if f.concat.is_some() || f.split.is_some() {
            out.insert(n, f);
        }
    }
    out
}

fn rank(g: &Graph, v: ValueRef) -> Option<usize> {
    g.value_type(v).ok().map(|t| t.shape.len())
}

fn concat_input(g: &Graph, lin: NodeIndex, outputs: &HashSet<ValueRef>) -> Option<NodeIndex> {
    let ops = g.operands(lin);
    let x = *ops.first()?;
    let Op::Concat { axis } = g.node(x.node).op else { return None };
    let r = rank(g, x)?;
    let only_user = g.users(x.node).iter().all(|&u| u == lin) && ops[1..].iter().all(|v| v.node != x.node);
    (x.port == 0 && r > 0 && axis + 1 == r && only_user && !outputs.contains(&x)).then_some(x.node)
}

fn split_result(g: &Graph, lin: NodeIndex, outputs: &HashSet<ValueRef>) -> Option<NodeIndex> {
    let y = ValueRef::new(lin, 0);
    if outputs.contains(&y) {
        return None;
    }
    let users = g.users(lin);
    let &s = users.first()?;
    if users.iter().any(|&u| u != s) {
        return None;
    }
    let Op::Split { axis, sizes } = &g.node(s).op else { return None };
    let r = rank(g, y)?;
    if r == 0 || axis + 1 != r || g.operands(s).first() != Some(&y) {
        return None;
    }
    let consts: Option<Vec<i64>> = sizes.iter().map(|d| if let Dim::Const(c) = d { Some(*c) } else { None }).collect();
    let consts = consts?;
    let (_, head) = consts.split_last()?;
    head.iter().all(|&c| c >= 0 && (c as usize).is_multiple_of(NR)).then_some(s)
}
