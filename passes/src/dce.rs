//! `dce`: dead-code elimination.
//!
//! What: removes every node none of whose results reaches a stage output.
//! Why: imports and other passes leave unused values behind (a modulation
//! chunk a block never reads, a weight a fusion replaced); dead nodes cost
//! compile time, code and, for weights, artifact bytes.
//! When it does not apply: nodes that reach an output are kept, including
//! stage inputs, which are part of the stage's signature even when unused.

use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::{Graph, Op};
use petgraph::Direction;
use std::collections::HashSet;

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn summary(&self) -> &'static str {
        "remove nodes that do not reach a stage output"
    }
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let mut live = HashSet::new();
        let mut stack: Vec<_> = g.outputs.iter().map(|(_, v)| v.node).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(g.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<_> = g.g.node_indices().filter(|n| !live.contains(n) && !matches!(g.node(*n).op, Op::Input { .. })).collect();
        for &n in &dead {
            g.remove_node(n);
        }
        cx.stat(self.name(), "nodes removed", dead.len() as i64);
        Ok(!dead.is_empty())
    }
}
