//! The extraction cost: which equivalent form the pass writes back.
//!
//! A cost is compared lexicographically:
//! 1. `runtime_ops`: operations that depend on a stage input. Fewer is
//!    better: every rule's cheaper side does the same work or less, so
//!    choosing fewer such ops never adds FLOPs (each rule either drops an
//!    op or moves a scalar multiplication onto weights);
//! 2. `folded_ops`: operations over weights and constants alone, which
//!    `const-fold` turns into new weights at compile time (they cost
//!    compile time and maybe weight bytes, not run time);
//! 3. `new_nodes`: e-nodes (and constants) that are not in the original
//!    graph, so that among equally cheap forms the original one is kept
//!    and the pass does not churn the graph.
//!
//! Leaves cost nothing. Costs are tree costs (egg's [`egg::Extractor`]):
//! a subterm shared by two users counts twice, which only makes the
//! extractor more eager to remove shared work.

use super::analysis::EG;
use super::lang::TensorLang;
use egg::{CostFunction, Id, Language};
use std::collections::HashSet;

/// See the module doc.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Cost {
    pub runtime_ops: u64,
    pub folded_ops: u64,
    pub new_nodes: u64,
}

impl Cost {
    fn plus(self, o: Cost) -> Cost {
        Cost {
            runtime_ops: self.runtime_ops.saturating_add(o.runtime_ops),
            folded_ops: self.folded_ops.saturating_add(o.folded_ops),
            new_nodes: self.new_nodes.saturating_add(o.new_nodes),
        }
    }
}

/// The cost function over an e-graph after saturation. `original` holds
/// the original graph's e-nodes with canonical children.
pub struct RuntimeCost<'a> {
    pub egraph: &'a EG,
    pub original: &'a HashSet<TensorLang>,
}

impl CostFunction<TensorLang> for RuntimeCost<'_> {
    type Cost = Cost;

    fn cost<C>(&mut self, enode: &TensorLang, mut costs: C) -> Cost
    where
        C: FnMut(Id) -> Cost,
    {
        let canonical = enode.clone().map_children(|c| self.egraph.find(c));
        let new = u64::from(!self.original.contains(&canonical));
        let own = match enode {
            TensorLang::Perm(_) | TensorLang::Shape(_) | TensorLang::Leaf(_) => Cost::default(),
            TensorLang::Scalar(_) => Cost { new_nodes: new, ..Default::default() },
            op if op.operands().iter().all(|&c| self.egraph[c].data.foldable) => Cost { folded_ops: 1, new_nodes: new, ..Default::default() },
            _ => Cost { runtime_ops: 1, new_nodes: new, ..Default::default() },
        };
        enode.fold(own, |acc, c| acc.plus(costs(c)))
    }
}
