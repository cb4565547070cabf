//! The op classes of `dispatch-formation` (see its module doc) and the
//! cost facts its prologue rule needs.

use omnic_ir::{BinaryOp, Graph, Op, UnaryOp, ValueRef};
use petgraph::stable_graph::NodeIndex;

/// How an op fuses (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    Source,
    Anchor,
    Elementwise,
    View,
    Concat,
    Gathers,
}

pub(super) fn class(op: &Op) -> Class {
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Constant(_) | Op::Iota { .. } => Class::Source,
        Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where | Op::Cast(_) => Class::Elementwise,
        Op::Reshape { .. } | Op::Transpose { .. } | Op::Split { .. } | Op::Slice { .. } => Class::View,
        Op::Concat { .. } => Class::Concat,
        Op::Gather { .. } | Op::Pad { .. } | Op::Expand { .. } | Op::UpsampleNearest { .. } => Class::Gathers,
        Op::Reduce { .. }
        | Op::Softmax { .. }
        | Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::GroupNorm { .. }
        | Op::MatMul
        | Op::Linear { .. }
        | Op::Attention { .. }
        | Op::Conv { .. }
        | Op::TopK { .. }
        | Op::Moe { .. } => Class::Anchor,
    }
}

/// Ops too costly to recompute for every reuse of their result.
pub(super) fn is_transcendental(op: &Op) -> bool {
    use UnaryOp::*;
    match op {
        Op::Unary(u) => matches!(u, Exp | Log | Sqrt | Rsqrt | Sin | Cos | Tanh | Erf | Sigmoid | Silu | Gelu | GeluTanh),
        Op::Binary(b) => *b == BinaryOp::Pow,
        _ => false,
    }
}

/// Whether `user` reads elements of its operand `v` more than once (so a
/// producer fused into it would be recomputed per read).
pub(super) fn reuses(g: &Graph, user: NodeIndex, v: ValueRef) -> bool {
    let node = g.node(user);
    match &node.op {
        Op::Linear { .. } | Op::MatMul | Op::Conv { .. } | Op::Attention { .. } | Op::Moe { .. } => true,
        Op::Gather { .. } | Op::Expand { .. } | Op::UpsampleNearest { .. } => true,
        op if class(op) == Class::Elementwise => g.value_type(v).map_or(true, |t| node.outputs.first().is_none_or(|o| o.shape != t.shape)),
        _ => false,
    }
}
