//! The attribute table: which `{key=value}` attributes each op prints and
//! reads, in both directions, so printer and parser cannot drift apart.
//!
//! Every field of an op is an attribute except what the statement already
//! shows elsewhere: the op family is in the mnemonic (`reduce_sum`, `add`),
//! names of inputs/params and constant values are written right after the
//! mnemonic, and the type of an input/param (or the dtype and shape of a
//! constant) is the result type. Those source attributes (`ty`, `dtype`,
//! `shape`) are printed only when they differ from the result type, which
//! happens only in graphs the verifier rejects.

use super::lexical::fmt_f64;
use crate::dtype::DType;
use crate::op::{BinaryOp, CmpOp, Literal, Op, ReduceOp, TensorType, UnaryOp};
use crate::shape::{shape_str, Dim};
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

/// How an attribute value is spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Non-negative integer: `3`.
    Uint,
    /// Float: `1e-6`, `inf`, `nan`.
    Float,
    /// `none` or a float.
    OptFloat,
    Bool,
    DType,
    Dim,
    /// `[0,2,1]`
    Uints,
    /// `[batch,16]`
    Dims,
    /// `[(0,1),(2,2)]`
    Pairs,
    /// `f32[2,3]`
    Type,
    /// An elementwise function by its mnemonic: `silu`.
    Unary,
}

impl Kind {
    /// What a value of this kind looks like, for "expected ..." messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Uint => "an unsigned integer",
            Kind::Float => "a number",
            Kind::OptFloat => "a number or `none`",
            Kind::Bool => "`true` or `false`",
            Kind::DType => "a dtype",
            Kind::Dim => "a dimension",
            Kind::Uints => "a list of unsigned integers like `[0,1]`",
            Kind::Dims => "a list of dimensions like `[batch,16]`",
            Kind::Pairs => "a list of pairs like `[(0,1),(2,2)]`",
            Kind::Type => "a tensor type like `f32[2,3]`",
            Kind::Unary => "a unary function like `silu`",
        }
    }
}

/// A parsed or to-be-printed attribute value.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Attr {
    Uint(usize),
    Float(f64),
    OptFloat(Option<f64>),
    Bool(bool),
    DType(DType),
    Dim(Dim),
    Uints(Vec<usize>),
    Dims(Vec<Dim>),
    Pairs(Vec<(usize, usize)>),
    Type(TensorType),
    Unary(UnaryOp),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Uint(v) => write!(f, "{v}"),
            Attr::Float(v) => f.write_str(&fmt_f64(*v)),
            Attr::OptFloat(None) => f.write_str("none"),
            Attr::OptFloat(Some(v)) => f.write_str(&fmt_f64(*v)),
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::DType(d) => write!(f, "{d}"),
            Attr::Dim(d) => write!(f, "{d}"),
            Attr::Uints(vs) => {
                let parts: Vec<String> = vs.iter().map(|v| v.to_string()).collect();
                write!(f, "[{}]", parts.join(","))
            }
            Attr::Dims(ds) => f.write_str(&shape_str(ds)),
            Attr::Pairs(ps) => {
                let parts: Vec<String> = ps.iter().map(|(a, b)| format!("({a},{b})")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            Attr::Type(t) => write!(f, "{t}"),
            Attr::Unary(u) => f.write_str(u.name()),
        }
    }
}

/// One op family as the text form knows it: a representative op (fields
/// are placeholders) from which the mnemonic and the schema follow.
fn prototypes() -> Vec<Op> {
    let ty = TensorType::new(DType::F32, vec![]);
    let mut ops = vec![
        Op::Input { name: String::new(), ty: ty.clone() },
        Op::Param { name: String::new(), ty },
        Op::Constant(Literal::scalar(DType::F32, 0.0)),
        Op::Iota { len: Dim::Const(0), dtype: DType::I64 },
        Op::Where,
        Op::Cast(DType::F32),
        Op::Softmax { axis: 0 },
        Op::LayerNorm { eps: 0.0, weight: false, bias: false },
        Op::RmsNorm { eps: 0.0, weight: false },
        Op::GroupNorm { groups: 0, eps: 0.0, affine: false },
        Op::MatMul,
        Op::Linear { bias: false },
        Op::Attention { scale: None, causal: false, mask: false },
        Op::Conv { stride: vec![], padding: vec![], dilation: vec![], groups: 0, bias: false },
        Op::UpsampleNearest { scale: vec![] },
        Op::Pad { pads: vec![], value: 0.0 },
        Op::Reshape { shape: vec![] },
        Op::Transpose { perm: vec![] },
        Op::Expand { shape: vec![] },
        Op::Concat { axis: 0 },
        Op::Split { axis: 0, sizes: vec![] },
        Op::Slice { axis: 0, start: Dim::Const(0), end: Dim::Const(0) },
        Op::Gather { axis: 0 },
        Op::TopK { k: 0 },
        Op::Moe { top_k: 0, norm_topk: false, act: UnaryOp::Silu },
    ];
    ops.extend(UnaryOp::ALL.iter().map(|&u| Op::Unary(u)));
    ops.extend(BinaryOp::ALL.iter().map(|&b| Op::Binary(b)));
    ops.extend(CmpOp::ALL.iter().map(|&c| Op::Compare(c)));
    ops.extend(ReduceOp::ALL.iter().map(|&op| Op::Reduce { op, axes: vec![], keep_dims: false }));
    ops
}

/// Every mnemonic the parser accepts (tests check coverage against it).
#[cfg(test)]
pub(super) fn all_mnemonics() -> Vec<&'static str> {
    prototypes().iter().map(|op| op.mnemonic()).collect()
}

/// The op family of a mnemonic (fields still placeholders).
pub(super) fn prototype(mnemonic: &str) -> Option<Op> {
    static BY_MNEMONIC: OnceLock<HashMap<&'static str, Op>> = OnceLock::new();
    let table = BY_MNEMONIC.get_or_init(|| prototypes().into_iter().map(|op| (op.mnemonic(), op)).collect());
    table.get(mnemonic).cloned()
}

/// The attributes an op family accepts, in printing order.
pub(super) fn schema(op: &Op) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match op {
        Op::Input { .. } | Op::Param { .. } => &[("ty", Type)],
        Op::Constant(_) => &[("dtype", DType), ("shape", Uints)],
        Op::Iota { .. } => &[("len", Dim), ("dtype", DType)],
        Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where | Op::MatMul => &[],
        Op::Cast(_) => &[("to", DType)],
        Op::Reduce { .. } => &[("axes", Uints), ("keep_dims", Bool)],
        Op::Softmax { .. } | Op::Concat { .. } | Op::Gather { .. } => &[("axis", Uint)],
        Op::LayerNorm { .. } => &[("eps", Float), ("weight", Bool), ("bias", Bool)],
        Op::RmsNorm { .. } => &[("eps", Float), ("weight", Bool)],
        Op::GroupNorm { .. } => &[("groups", Uint), ("eps", Float), ("affine", Bool)],
        Op::Linear { .. } => &[("bias", Bool)],
        Op::Attention { .. } => &[("scale", OptFloat), ("causal", Bool), ("mask", Bool)],
        Op::Conv { .. } => &[("stride", Uints), ("padding", Uints), ("dilation", Uints), ("groups", Uint), ("bias", Bool)],
        Op::UpsampleNearest { .. } => &[("scale", Uints)],
        Op::Pad { .. } => &[("pads", Pairs), ("value", Float)],
        Op::Reshape { .. } | Op::Expand { .. } => &[("shape", Dims)],
        Op::Transpose { .. } => &[("perm", Uints)],
        Op::Split { .. } => &[("axis", Uint), ("sizes", Dims)],
        Op::Slice { .. } => &[("axis", Uint), ("start", Dim), ("end", Dim)],
        Op::TopK { .. } => &[("k", Uint)],
        Op::Moe { .. } => &[("top_k", Uint), ("norm_topk", Bool), ("act", Unary)],
    }
}

/// The attributes to print for `op` whose node has result types `outputs`.
pub(super) fn attrs_of(op: &Op, outputs: &[TensorType]) -> Vec<(&'static str, Attr)> {
    let first = outputs.first();
    match op {
        Op::Input { ty, .. } | Op::Param { ty, .. } => {
            if first == Some(ty) {
                vec![]
            } else {
                vec![("ty", Attr::Type(ty.clone()))]
            }
        }
        Op::Constant(lit) => {
            let implied = first.map(|t| (t.dtype, static_dims(&t.shape)));
            if implied == Some((lit.dtype, Some(lit.shape.clone()))) {
                vec![]
            } else {
                vec![("dtype", Attr::DType(lit.dtype)), ("shape", Attr::Uints(lit.shape.clone()))]
            }
        }
        Op::Iota { len, dtype } => vec![("len", Attr::Dim(len.clone())), ("dtype", Attr::DType(*dtype))],
        Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where | Op::MatMul => vec![],
        Op::Cast(to) => vec![("to", Attr::DType(*to))],
        Op::Reduce { axes, keep_dims, .. } => vec![("axes", Attr::Uints(axes.clone())), ("keep_dims", Attr::Bool(*keep_dims))],
        Op::Softmax { axis } | Op::Concat { axis } | Op::Gather { axis } => vec![("axis", Attr::Uint(*axis))],
        Op::LayerNorm { eps, weight, bias } => {
            vec![("eps", Attr::Float(*eps)), ("weight", Attr::Bool(*weight)), ("bias", Attr::Bool(*bias))]
        }
        Op::RmsNorm { eps, weight } => vec![("eps", Attr::Float(*eps)), ("weight", Attr::Bool(*weight))],
        Op::GroupNorm { groups, eps, affine } => {
            vec![("groups", Attr::Uint(*groups)), ("eps", Attr::Float(*eps)), ("affine", Attr::Bool(*affine))]
        }
        Op::Linear { bias } => vec![("bias", Attr::Bool(*bias))],
        Op::Attention { scale, causal, mask } => {
            vec![("scale", Attr::OptFloat(*scale)), ("causal", Attr::Bool(*causal)), ("mask", Attr::Bool(*mask))]
        }
        Op::Conv { stride, padding, dilation, groups, bias } => vec![
            ("stride", Attr::Uints(stride.clone())),
            ("padding", Attr::Uints(padding.clone())),
            ("dilation", Attr::Uints(dilation.clone())),
            ("groups", Attr::Uint(*groups)),
            ("bias", Attr::Bool(*bias)),
        ],
        Op::UpsampleNearest { scale } => vec![("scale", Attr::Uints(scale.clone()))],
        Op::Pad { pads, value } => vec![("pads", Attr::Pairs(pads.clone())), ("value", Attr::Float(*value))],
        Op::Reshape { shape } | Op::Expand { shape } => vec![("shape", Attr::Dims(shape.clone()))],
        Op::Transpose { perm } => vec![("perm", Attr::Uints(perm.clone()))],
        Op::Split { axis, sizes } => vec![("axis", Attr::Uint(*axis)), ("sizes", Attr::Dims(sizes.clone()))],
        Op::Slice { axis, start, end } => {
            vec![("axis", Attr::Uint(*axis)), ("start", Attr::Dim(start.clone())), ("end", Attr::Dim(end.clone()))]
        }
        Op::TopK { k } => vec![("k", Attr::Uint(*k))],
        Op::Moe { top_k, norm_topk, act } => vec![("top_k", Attr::Uint(*top_k)), ("norm_topk", Attr::Bool(*norm_topk)), ("act", Attr::Unary(*act))],
    }
}

/// The sizes of a fully static shape (`None` if any dim is symbolic or negative).
pub(super) fn static_dims(shape: &[Dim]) -> Option<Vec<usize>> {
    shape.iter().map(|d| d.as_const().and_then(|v| usize::try_from(v).ok())).collect()
}

/// Parsed attributes of one statement, taken out by the op builder below.
/// A missing key yields "missing attribute `key` for `op`".
pub(super) struct Attrs {
    pub mnemonic: &'static str,
    pub map: HashMap<&'static str, Attr>,
}

macro_rules! getter {
    ($name:ident, $variant:ident, $ty:ty) => {
        pub fn $name(&mut self, key: &'static str) -> Result<$ty, String> {
            match self.map.remove(key) {
                Some(Attr::$variant(v)) => Ok(v),
                // The parser reads each key with the kind from `schema`, so
                // another variant means the table above is inconsistent.
                Some(other) => Err(format!("attribute `{key}` of `{}` has the wrong kind: {other}", self.mnemonic)),
                None => Err(format!("missing attribute `{key}` for `{}`", self.mnemonic)),
            }
        }
    };
}

impl Attrs {
    getter!(uint, Uint, usize);
    getter!(float, Float, f64);
    getter!(opt_float, OptFloat, Option<f64>);
    getter!(boolean, Bool, bool);
    getter!(dtype, DType, DType);
    getter!(dim, Dim, Dim);
    getter!(uints, Uints, Vec<usize>);
    getter!(dims, Dims, Vec<Dim>);
    getter!(pairs, Pairs, Vec<(usize, usize)>);
    getter!(unary, Unary, UnaryOp);
}

/// The op of family `proto` with its fields taken from `a`. Source ops
/// (input, param, constant) are assembled by the parser, which also has
/// their name or values and the result type.
pub(super) fn build(proto: Op, a: &mut Attrs) -> Result<Op, String> {
    Ok(match proto {
        Op::Iota { .. } => Op::Iota { len: a.dim("len")?, dtype: a.dtype("dtype")? },
        Op::Cast(_) => Op::Cast(a.dtype("to")?),
        Op::Reduce { op, .. } => Op::Reduce { op, axes: a.uints("axes")?, keep_dims: a.boolean("keep_dims")? },
        Op::Softmax { .. } => Op::Softmax { axis: a.uint("axis")? },
        Op::Concat { .. } => Op::Concat { axis: a.uint("axis")? },
        Op::Gather { .. } => Op::Gather { axis: a.uint("axis")? },
        Op::LayerNorm { .. } => Op::LayerNorm { eps: a.float("eps")?, weight: a.boolean("weight")?, bias: a.boolean("bias")? },
        Op::RmsNorm { .. } => Op::RmsNorm { eps: a.float("eps")?, weight: a.boolean("weight")? },
        Op::GroupNorm { .. } => Op::GroupNorm { groups: a.uint("groups")?, eps: a.float("eps")?, affine: a.boolean("affine")? },
        Op::Linear { .. } => Op::Linear { bias: a.boolean("bias")? },
        Op::Attention { .. } => Op::Attention { scale: a.opt_float("scale")?, causal: a.boolean("causal")?, mask: a.boolean("mask")? },
        Op::Conv { .. } => Op::Conv {
            stride: a.uints("stride")?,
            padding: a.uints("padding")?,
            dilation: a.uints("dilation")?,
            groups: a.uint("groups")?,
            bias: a.boolean("bias")?,
        },
        Op::UpsampleNearest { .. } => Op::UpsampleNearest { scale: a.uints("scale")? },
        Op::Pad { .. } => Op::Pad { pads: a.pairs("pads")?, value: a.float("value")? },
        Op::Reshape { .. } => Op::Reshape { shape: a.dims("shape")? },
        Op::Expand { .. } => Op::Expand { shape: a.dims("shape")? },
        Op::Transpose { .. } => Op::Transpose { perm: a.uints("perm")? },
        Op::Split { .. } => Op::Split { axis: a.uint("axis")?, sizes: a.dims("sizes")? },
        Op::Slice { .. } => Op::Slice { axis: a.uint("axis")?, start: a.dim("start")?, end: a.dim("end")? },
        Op::TopK { .. } => Op::TopK { k: a.uint("k")? },
        Op::Moe { .. } => Op::Moe { top_k: a.uint("top_k")?, norm_topk: a.boolean("norm_topk")?, act: a.unary("act")? },
        other @ (Op::Input { .. }
        | Op::Param { .. }
        | Op::Constant(_)
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Where
        | Op::MatMul) => other,
    })
}
