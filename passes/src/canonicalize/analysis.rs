//! The e-class analysis: every tensor e-class knows its static type
//! (dtype and shape, symbolic dims compared structurally), attribute
//! leaves know their attribute, numel-1 constants their value.
//!
//! Why: rules must never change a type. Every rule's right-hand side is
//! type-checked with the IR's own inference ([`omnic_ir::infer::infer`])
//! against the matched e-class before it is added (see `rules.rs`), and
//! merging two e-classes of different types is counted as a conflict that
//! makes the pass fail instead of emitting ill-typed IR.

use super::lang::{Attr, LeafRef, ScalarConst, TensorLang};
use egg::{Analysis, DidMerge, EGraph, Id};
use omnic_ir::infer::infer;
use omnic_ir::{Dim, TensorType};
use std::collections::HashMap;

/// The e-graph type the pass works on.
pub type EG = EGraph<TensorLang, TensorAnalysis>;

/// What the pass knows about an unmodelled graph value.
#[derive(Clone, Debug)]
pub struct LeafInfo {
    pub ty: TensorType,
    /// A `param` or a constant: computations over it alone can be folded
    /// into new weights at compile time.
    pub foldable: bool,
    /// A `param` or non-scalar constant with more than one use in the
    /// original graph: folding a scale into it would duplicate it.
    pub shared: bool,
}

/// Per-e-class facts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Data {
    /// Static type of a tensor e-class (`None` for attribute leaves).
    pub ty: Option<TensorType>,
    /// Attribute of an attribute leaf.
    pub attr: Option<Attr>,
    /// A numel-1 constant (compared by bits, so NaN equals itself).
    pub scalar: Option<ScalarConst>,
    /// Computable from weights and constants alone.
    pub foldable: bool,
    /// Computed from a [`LeafInfo::shared`] weight or constant.
    pub shared: bool,
}

/// The analysis state: facts about leaves (filled in before the leaves
/// are added) and the number of type conflicts seen.
#[derive(Default)]
pub struct TensorAnalysis {
    pub leaves: HashMap<LeafRef, LeafInfo>,
    pub conflicts: usize,
}

impl Data {
    /// Facts about a leaf that does not need the e-graph (attributes and
    /// constants); `None` for operation nodes and unmodelled leaves.
    pub fn of_const_leaf(node: &TensorLang) -> Option<Data> {
        match node {
            TensorLang::Perm(p) => Some(Data { attr: Some(Attr::Perm(p.0.clone())), ..Default::default() }),
            TensorLang::Shape(s) => Some(Data { attr: Some(Attr::Shape(s.0.clone())), ..Default::default() }),
            TensorLang::Scalar(c) => Some(Data {
                ty: Some(TensorType::new(c.dtype, c.shape.iter().map(|&d| Dim::from(d)).collect())),
                scalar: Some(c.clone()),
                foldable: true,
                ..Default::default()
            }),
            _ => None,
        }
    }
}

/// Facts about an operation node from the facts about its children
/// (`child` looks them up). The type is `None` when the IR's inference
/// rejects the operands.
pub fn op_data(node: &TensorLang, child: &dyn Fn(Id) -> Option<Data>) -> Data {
    let attr = node.attr_child().and_then(child).and_then(|d| d.attr);
    let operands: Option<Vec<Data>> = node.operands().iter().map(|&c| child(c)).collect();
    let (Some(op), Some(operands)) = (node.ir_op(attr.as_ref()), operands) else { return Data::default() };
    let tys: Option<Vec<&TensorType>> = operands.iter().map(|d| d.ty.as_ref()).collect();
    let ty = tys.and_then(|tys| infer(&op, &tys).ok()).and_then(|mut v| if v.len() == 1 { v.pop() } else { None });
    Data { ty, foldable: operands.iter().all(|d| d.foldable), shared: operands.iter().any(|d| d.shared), ..Default::default() }
}

impl Analysis<TensorLang> for TensorAnalysis {
    type Data = Data;

    fn make(egraph: &mut EG, enode: &TensorLang) -> Data {
        if let Some(d) = Data::of_const_leaf(enode) {
            return d;
        }
        if let TensorLang::Leaf(r) = enode {
            return match egraph.analysis.leaves.get(r) {
                Some(info) => Data { ty: Some(info.ty.clone()), foldable: info.foldable, shared: info.shared, ..Default::default() },
                None => Data::default(),
            };
        }
        let eg: &EG = egraph;
        op_data(enode, &|c| Some(eg[c].data.clone()))
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        if a.ty.is_some() && b.ty.is_some() && a.ty != b.ty || a.attr.is_some() && b.attr.is_some() && a.attr != b.attr {
            self.conflicts += 1;
        }
        let before = a.clone();
        if a.ty.is_none() {
            a.ty = b.ty.clone();
        }
        if a.attr.is_none() {
            a.attr = b.attr.clone();
        }
        if a.scalar.is_none() {
            a.scalar = b.scalar.clone();
        }
        a.foldable |= b.foldable;
        a.shared |= b.shared;
        DidMerge(*a != before, *a != b)
    }
}
