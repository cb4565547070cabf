//! Graph → e-graph: the modelled ops of a stage become e-nodes, every
//! other value they read becomes an opaque leaf.
//!
//! A node is modelled when the language has its op (see `lang.rs`), it
//! has one result, and the type the analysis infers for it is the type the
//! graph declares (a node that disagrees is left alone rather than
//! trusted). Numel-1 constants become [`TensorLang::Scalar`] leaves. Roots
//! are the modelled values the rest of the graph sees: those used by an
//! unmodelled node, named as a stage output, or carrying a role (later
//! passes find them by it, so a replaced one hands its role on); the
//! rebuild starts there.

use super::analysis::{op_data, LeafInfo, TensorAnalysis, EG};
use super::lang::{LeafRef, ScalarConst, TensorLang};
use egg::Id;
use omnic_ir::{Annotation, Graph, IrError, Op, ValueRef};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

/// A stage's modelled region as an e-graph.
pub struct Region {
    pub egraph: EG,
    /// Roots in topological order of their nodes.
    pub roots: Vec<ValueRef>,
    /// E-class of every modelled value and every leaf added.
    pub class_of: HashMap<ValueRef, Id>,
    /// Each original modelled node or scalar constant as first added
    /// (children not yet canonical).
    pub originals: Vec<(TensorLang, ValueRef)>,
}

/// The leaf reference of a graph value.
pub fn leaf_ref(v: ValueRef) -> LeafRef {
    LeafRef { node: v.node.index() as u32, port: v.port }
}

/// The graph value of a leaf reference.
pub fn leaf_value(r: LeafRef) -> ValueRef {
    ValueRef::new(NodeIndex::new(r.node as usize), r.port)
}

struct Builder<'g> {
    g: &'g Graph,
    eg: EG,
    class_of: HashMap<ValueRef, Id>,
    originals: Vec<(TensorLang, ValueRef)>,
}

impl Builder<'_> {
    /// The e-class of `v`, adding an opaque leaf for a value seen first.
    fn class(&mut self, v: ValueRef) -> Result<Id, IrError> {
        if let Some(&id) = self.class_of.get(&v) {
            return Ok(id);
        }
        let ty = self.g.value_type(v)?.clone();
        let op = &self.g.node(v.node).op;
        let foldable = matches!(op, Op::Param { .. } | Op::Constant(_));
        let info = LeafInfo { ty, foldable, shared: foldable && self.g.use_count(v) > 1 };
        let r = leaf_ref(v);
        self.eg.analysis.leaves.insert(r, info);
        let id = self.eg.add(TensorLang::Leaf(r));
        self.class_of.insert(v, id);
        Ok(id)
    }

    /// Add node `n` if it is modelled; returns whether it was.
    fn node(&mut self, n: NodeIndex) -> Result<bool, IrError> {
        let node = self.g.node(n);
        if node.outputs.len() != 1 {
            return Ok(false);
        }
        let v = ValueRef::new(n, 0);
        if let Op::Constant(lit) = &node.op {
            if let Some(c) = ScalarConst::from_literal(lit) {
                let leaf = TensorLang::Scalar(c);
                let id = self.eg.add(leaf.clone());
                self.class_of.insert(v, id);
                self.originals.push((leaf, v));
            }
            return Ok(false);
        }
        if !TensorLang::models(&node.op) {
            return Ok(false);
        }
        let operands = self.g.operands(n);
        let ids: Vec<Id> = operands.iter().map(|&o| self.class(o)).collect::<Result<_, _>>()?;
        let attr = TensorLang::attr_leaf(&node.op).map(|leaf| self.eg.add(leaf));
        let Some(enode) = TensorLang::from_ir(&node.op, &ids, attr) else { return Ok(false) };
        let eg = &self.eg;
        let facts = op_data(&enode, &|c| Some(eg[c].data.clone()));
        if facts.ty.as_ref() != node.outputs.first() {
            return Ok(false);
        }
        let id = self.eg.add(enode.clone());
        self.class_of.insert(v, id);
        self.originals.push((enode, v));
        Ok(true)
    }
}

fn has_role(g: &Graph, n: NodeIndex) -> bool {
    g.node(n).annotations.iter().any(|a| matches!(a, Annotation::Role(_)))
}

/// Build the region of `g`.
pub fn region(g: &Graph) -> Result<Region, IrError> {
    let mut b = Builder { g, eg: EG::new(TensorAnalysis::default()), class_of: HashMap::new(), originals: Vec::new() };
    let order = g.topo_order()?;
    let mut modelled = HashSet::new();
    for &n in &order {
        if b.node(n)? {
            modelled.insert(n);
        }
    }
    let outputs: HashSet<ValueRef> = g.outputs.iter().map(|(_, v)| *v).collect();
    let roots = order
        .iter()
        .filter(|n| modelled.contains(n))
        .map(|&n| ValueRef::new(n, 0))
        .filter(|v| outputs.contains(v) || has_role(g, v.node) || g.users(v.node).iter().any(|u| !modelled.contains(u)))
        .collect();
    let mut egraph = b.eg;
    egraph.rebuild();
    Ok(Region { egraph, roots, class_of: b.class_of, originals: b.originals })
}
