//! `cse`: common-subexpression elimination.
//!
//! What: two nodes with the same op (all attributes equal), the same
//! operands and the same result types compute the same values; the later
//! one is replaced by the earlier. Parameters naming the same weight and
//! equal constants merge too. Roles of a removed node move to the node
//! that replaces it, so they survive; the kept node's block index stays.
//! Why: model builders recompute shared subexpressions (DiT recomputes
//! block 0's conditioning for the output head; rotary tables are built per
//! block), and fusion passes expose more duplicates.
//! When it does not apply: stage inputs are never merged (each is part of
//! the signature); nodes that differ in any attribute, operand or type stay.

use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::{Annotation, Graph, Op, ValueRef};
use std::collections::HashMap;

pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn summary(&self) -> &'static str {
        "merge nodes that compute the same value"
    }
    fn run_on_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(|e| PassError::Invalid { pass: self.name().into(), source: e })?;
        // Key: mnemonic + operands; candidates compared by full op equality.
        let mut seen: HashMap<(&'static str, Vec<ValueRef>), Vec<petgraph::stable_graph::NodeIndex>> = HashMap::new();
        let mut removed = 0;
        for n in order {
            let node = g.node(n);
            if matches!(node.op, Op::Input { .. }) {
                continue;
            }
            let key = (node.op.mnemonic(), g.operands(n));
            let twin = seen.get(&key).and_then(|cands| {
                cands.iter().copied().find(|&c| {
                    let cn = g.node(c);
                    cn.op == node.op && cn.outputs == node.outputs
                })
            });
            match twin {
                Some(keep) => {
                    let nouts = g.node(n).outputs.len() as u32;
                    for p in 0..nouts {
                        g.replace_all_uses(ValueRef::new(n, p), ValueRef::new(keep, p));
                    }
                    let anns = g.node(n).annotations.clone();
                    let kept = g.node_mut(keep);
                    // Roles move; a block index stays the kept node's own.
                    for a in anns.into_iter().filter(|a| matches!(a, Annotation::Role(_))) {
                        if !kept.annotations.contains(&a) {
                            kept.annotations.push(a);
                        }
                    }
                    g.remove_node(n);
                    removed += 1;
                }
                None => seen.entry(key).or_default().push(n),
            }
        }
        cx.stat(self.name(), "nodes merged", removed);
        Ok(removed > 0)
    }
}
