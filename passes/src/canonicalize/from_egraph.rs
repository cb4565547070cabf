//! E-graph → graph: write the extracted form of every root back, reusing
//! the original nodes wherever the extracted e-node is one of them.
//!
//! For an e-class the extractor picked e-node `e`:
//! - if the operand being rebuilt (the hint) is an original node whose
//!   e-node is `e`, it stays, so nothing changes where nothing was
//!   rewritten and identical nodes are not merged behind CSE's back;
//! - else an original node whose e-node is `e` is reused (keeping its
//!   annotations and label), or else a new node is created;
//! - a reused node's operands are rebuilt in turn and rewired where they
//!   changed (an equivalent value of the same type, so every user of the
//!   node is still right).
//!
//! New nodes take the block annotation and label of the original node they
//! are built under (the root, or the reused node whose operand they are).

use super::analysis::EG;
use super::lang::TensorLang;
use super::to_egraph::leaf_value;
use crate::pass::PassError;
use egg::{Id, Language};
use omnic_ir::graph::Edge;
use omnic_ir::{Annotation, Graph, Op, ValueRef};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{HashMap, HashSet};

/// Block and label new nodes inherit.
#[derive(Clone, Default)]
struct Context {
    block: Option<u32>,
    label: Option<String>,
}

impl Context {
    fn of(g: &Graph, n: NodeIndex) -> Context {
        let node = g.node(n);
        Context { block: node.block(), label: node.label.clone() }
    }
}

/// Rebuild state over the graph being rewritten.
pub struct Rebuild<'a> {
    pub g: &'a mut Graph,
    eg: &'a EG,
    /// The e-node the extractor picked for an e-class.
    best: &'a dyn Fn(Id) -> TensorLang,
    /// Original values by their canonical e-node.
    candidates: HashMap<TensorLang, Vec<ValueRef>>,
    memo: HashMap<Id, ValueRef>,
    fixed: HashSet<NodeIndex>,
    pub created: i64,
    pub rewired: i64,
}

fn failed(message: String) -> PassError {
    PassError::Failed { pass: "canonicalize".into(), message }
}

impl<'a> Rebuild<'a> {
    pub fn new(g: &'a mut Graph, eg: &'a EG, best: &'a dyn Fn(Id) -> TensorLang, originals: &[(TensorLang, ValueRef)]) -> Self {
        let mut candidates: HashMap<TensorLang, Vec<ValueRef>> = HashMap::new();
        for (enode, v) in originals {
            candidates.entry(enode.clone().map_children(|c| eg.find(c))).or_default().push(*v);
        }
        Rebuild { g, eg, best, candidates, memo: HashMap::new(), fixed: HashSet::new(), created: 0, rewired: 0 }
    }

    /// The value of the extracted form of `root`'s e-class.
    pub fn root(&mut self, root: ValueRef, class: Id) -> Result<ValueRef, PassError> {
        let cx = Context::of(self.g, root.node);
        self.value(class, Some(root), &cx)
    }

    fn value(&mut self, class: Id, hint: Option<ValueRef>, cx: &Context) -> Result<ValueRef, PassError> {
        let class = self.eg.find(class);
        let best = (self.best)(class).map_children(|c| self.eg.find(c));
        if let TensorLang::Leaf(r) = best {
            return Ok(leaf_value(r));
        }
        let cands = self.candidates.get(&best);
        let reuse = match hint {
            Some(h) if cands.is_some_and(|c| c.contains(&h)) => Some(h),
            _ => self.memo.get(&class).copied().or_else(|| cands.and_then(|c| c.first().copied())),
        };
        let v = match reuse {
            Some(v) => {
                self.fix_operands(v.node, &best)?;
                v
            }
            None => self.create(class, &best, cx)?,
        };
        self.memo.entry(class).or_insert(v);
        Ok(v)
    }

    /// Rebuild the operands of reused node `n` (once) and rewire changed ones.
    fn fix_operands(&mut self, n: NodeIndex, best: &TensorLang) -> Result<(), PassError> {
        if !self.fixed.insert(n) {
            return Ok(());
        }
        let cx = Context::of(self.g, n);
        let current = self.g.operands(n);
        if current.len() != best.operands().len() {
            return Err(failed(format!("node {} has {} operands, its e-node {}", n.index(), current.len(), best.operands().len())));
        }
        for (slot, (&class, &cur)) in best.operands().iter().zip(&current).enumerate() {
            let v = self.value(class, Some(cur), &cx)?;
            if v != cur {
                self.rewire(n, slot as u32, v);
            }
        }
        Ok(())
    }

    fn rewire(&mut self, n: NodeIndex, slot: u32, v: ValueRef) {
        let old: Vec<_> = self.g.g.edges_directed(n, Direction::Incoming).filter(|e| e.weight().slot == slot).map(|e| e.id()).collect();
        for e in old {
            self.g.g.remove_edge(e);
        }
        self.g.g.add_edge(v.node, n, Edge { port: v.port, slot });
        self.rewired += 1;
    }

    /// A new node for e-node `best` of `class`.
    fn create(&mut self, class: Id, best: &TensorLang, cx: &Context) -> Result<ValueRef, PassError> {
        let op = match best {
            TensorLang::Scalar(c) => Op::Constant(c.to_literal()),
            _ => {
                let attr = best.attr_child().and_then(|c| self.eg[c].data.attr.clone());
                best.ir_op(attr.as_ref()).ok_or_else(|| failed(format!("cannot write e-node `{best}` back as an op")))?
            }
        };
        let mut operands = Vec::with_capacity(best.operands().len());
        for &c in best.operands() {
            operands.push(self.value(c, None, cx)?);
        }
        let n = self.g.add(op, &operands).map_err(|e| PassError::Invalid { pass: "canonicalize".into(), source: e })?;
        let want = &self.eg[class].data.ty;
        if self.g.node(n).outputs.first() != want.as_ref() {
            return Err(failed(format!("rebuilt `{best}` has type {:?}, its e-class {want:?}", self.g.node(n).outputs.first())));
        }
        let node = self.g.node_mut(n);
        node.annotations.extend(cx.block.map(Annotation::Block));
        node.label = cx.label.clone();
        self.fixed.insert(n);
        self.created += 1;
        Ok(ValueRef::new(n, 0))
    }
}
