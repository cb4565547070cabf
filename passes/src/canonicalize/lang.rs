//! The e-graph language: the tensor ops `canonicalize` rewrites, plus
//! leaves for everything it does not model.
//!
//! Attributes (a transpose's permutation, a reshape's target shape) are
//! leaf e-nodes in the operation's first child so that rule patterns can
//! bind them to variables (`(transpose ?p ?x)`); `egg` data variants with
//! children cannot be matched by a pattern without fixing the data.
//! Numel-1 constants are [`ScalarConst`] leaves keyed by dtype, shape and
//! value, so equal constants share an e-class and rules can read them.
//! Every other graph value is an opaque [`LeafRef`] leaf keyed by the
//! node and result port it came from: the pass never looks inside it.

use egg::{define_language, Id};
use omnic_ir::shape::shape_str;
use omnic_ir::{BinaryOp, DType, Dim, Literal, Op, Shape, UnaryOp};
use std::fmt;
use std::str::FromStr;

define_language! {
    /// Operation nodes carry their tensor operands as children; transpose
    /// and reshape carry their attribute leaf first.
    pub enum TensorLang {
        "transpose" = Transpose([Id; 2]),
        "reshape" = Reshape([Id; 2]),
        "add" = Add([Id; 2]),
        "sub" = Sub([Id; 2]),
        "mul" = Mul([Id; 2]),
        "div" = Div([Id; 2]),
        "neg" = Neg(Id),
        "matmul" = MatMul([Id; 2]),
        "linear" = Linear([Id; 2]),
        "linear_b" = LinearBias([Id; 3]),
        Perm(Perm),
        Shape(ShapeAttr),
        Scalar(ScalarConst),
        Leaf(LeafRef),
    }
}

/// A transpose permutation, printed `perm[1,0]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Perm(pub Vec<usize>);

/// A reshape target shape, printed `shape[batch,4]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeAttr(pub Shape);

/// A constant with exactly one element. The value is kept as f64 bits so
/// that it can be hashed; printed `const(f32[1],2.5)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScalarConst {
    pub dtype: DType,
    pub shape: Vec<usize>,
    bits: u64,
}

/// An unmodelled graph value (input, param, larger constant, result of an
/// op the pass does not rewrite): node index and result port, printed
/// `v12#0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeafRef {
    pub node: u32,
    pub port: u32,
}

/// The attribute an attribute leaf carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Perm(Vec<usize>),
    Shape(Shape),
}

impl ScalarConst {
    pub fn new(dtype: DType, shape: Vec<usize>, value: f64) -> Self {
        ScalarConst { dtype, shape, bits: value.to_bits() }
    }
    pub fn value(&self) -> f64 {
        f64::from_bits(self.bits)
    }
    /// The constant as a literal, when it has one element.
    pub fn from_literal(lit: &Literal) -> Option<Self> {
        match lit.values.as_slice() {
            [v] if lit.dtype != DType::Bool => Some(ScalarConst::new(lit.dtype, lit.shape.clone(), *v)),
            _ => None,
        }
    }
    pub fn to_literal(&self) -> Literal {
        Literal { dtype: self.dtype, shape: self.shape.clone(), values: vec![self.value()] }
    }
}

impl TensorLang {
    /// The tensor operands of an operation node (the attribute child of
    /// transpose and reshape excluded); empty for leaves.
    pub fn operands(&self) -> &[Id] {
        match self {
            TensorLang::Transpose(c) | TensorLang::Reshape(c) => &c[1..],
            other => egg::Language::children(other),
        }
    }

    /// The attribute child of transpose and reshape.
    pub fn attr_child(&self) -> Option<Id> {
        match self {
            TensorLang::Transpose(c) | TensorLang::Reshape(c) => Some(c[0]),
            _ => None,
        }
    }

    /// True for leaves (no children, no run-time work of their own).
    pub fn is_leaf(&self) -> bool {
        matches!(self, TensorLang::Perm(_) | TensorLang::Shape(_) | TensorLang::Scalar(_) | TensorLang::Leaf(_))
    }

    /// The IR op of an operation node, given the attribute of its attribute
    /// child. `None` for leaves and for a missing or mismatched attribute.
    pub fn ir_op(&self, attr: Option<&Attr>) -> Option<Op> {
        Some(match (self, attr) {
            (TensorLang::Transpose(_), Some(Attr::Perm(p))) => Op::Transpose { perm: p.clone() },
            (TensorLang::Reshape(_), Some(Attr::Shape(s))) => Op::Reshape { shape: s.clone() },
            (TensorLang::Add(_), _) => Op::Binary(BinaryOp::Add),
            (TensorLang::Sub(_), _) => Op::Binary(BinaryOp::Sub),
            (TensorLang::Mul(_), _) => Op::Binary(BinaryOp::Mul),
            (TensorLang::Div(_), _) => Op::Binary(BinaryOp::Div),
            (TensorLang::Neg(_), _) => Op::Unary(UnaryOp::Neg),
            (TensorLang::MatMul(_), _) => Op::MatMul,
            (TensorLang::Linear(_), _) => Op::Linear { bias: false },
            (TensorLang::LinearBias(_), _) => Op::Linear { bias: true },
            _ => return None,
        })
    }

    /// Whether the language has `op`.
    pub fn models(op: &Op) -> bool {
        matches!(
            op,
            Op::Transpose { .. }
                | Op::Reshape { .. }
                | Op::Binary(BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div)
                | Op::Unary(UnaryOp::Neg)
                | Op::MatMul
                | Op::Linear { .. }
        )
    }

    /// The e-node for an IR op over e-classes `operands`, with `attr` the
    /// e-class of its attribute leaf (transpose, reshape). `None` for ops
    /// the language does not model.
    pub fn from_ir(op: &Op, operands: &[Id], attr: Option<Id>) -> Option<TensorLang> {
        let two = || -> Option<[Id; 2]> { operands.try_into().ok() };
        Some(match op {
            Op::Transpose { .. } => TensorLang::Transpose([attr?, *operands.first()?]),
            Op::Reshape { .. } => TensorLang::Reshape([attr?, *operands.first()?]),
            Op::Binary(BinaryOp::Add) => TensorLang::Add(two()?),
            Op::Binary(BinaryOp::Sub) => TensorLang::Sub(two()?),
            Op::Binary(BinaryOp::Mul) => TensorLang::Mul(two()?),
            Op::Binary(BinaryOp::Div) => TensorLang::Div(two()?),
            Op::Unary(UnaryOp::Neg) => TensorLang::Neg(*operands.first()?),
            Op::MatMul => TensorLang::MatMul(two()?),
            Op::Linear { bias: false } => TensorLang::Linear(two()?),
            Op::Linear { bias: true } => TensorLang::LinearBias(operands.try_into().ok()?),
            _ => return None,
        })
    }

    /// The attribute leaf an op needs (transpose: its perm; reshape: its shape).
    pub fn attr_leaf(op: &Op) -> Option<TensorLang> {
        match op {
            Op::Transpose { perm } => Some(TensorLang::Perm(Perm(perm.clone()))),
            Op::Reshape { shape } => Some(TensorLang::Shape(ShapeAttr(shape.clone()))),
            _ => None,
        }
    }
}

fn bad(what: &str, s: &str) -> String {
    format!("`{s}` is not a {what}")
}

/// Split `[a,b,c]` into its items (no nesting: dims contain no commas).
fn list(s: &str) -> Option<Vec<&str>> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    Some(if inner.trim().is_empty() { Vec::new() } else { inner.split(',').map(str::trim).collect() })
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        write!(f, "perm[{}]", items.join(","))
    }
}

impl FromStr for Perm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let items = s.strip_prefix("perm").and_then(list).ok_or_else(|| bad("permutation", s))?;
        items.iter().map(|i| i.parse::<usize>().map_err(|_| bad("permutation", s))).collect::<Result<_, _>>().map(Perm)
    }
}

impl fmt::Display for ShapeAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shape{}", shape_str(&self.0))
    }
}

impl FromStr for ShapeAttr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let items = s.strip_prefix("shape").and_then(list).ok_or_else(|| bad("shape", s))?;
        items.iter().map(|d| Dim::parse(d)).collect::<Result<_, _>>().map(ShapeAttr)
    }
}

impl fmt::Display for ScalarConst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        write!(f, "const({}[{}],{:?})", self.dtype, dims.join(","), self.value())
    }
}

impl FromStr for ScalarConst {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let inner = s.strip_prefix("const(").and_then(|r| r.strip_suffix(')')).ok_or_else(|| bad("constant", s))?;
        let (ty, value) = inner.rsplit_once(',').ok_or_else(|| bad("constant", s))?;
        let open = ty.find('[').ok_or_else(|| bad("constant", s))?;
        let dtype: DType = ty[..open].parse()?;
        let shape = list(&ty[open..])
            .ok_or_else(|| bad("constant", s))?
            .iter()
            .map(|d| d.parse::<usize>().map_err(|_| bad("constant", s)))
            .collect::<Result<Vec<_>, _>>()?;
        if shape.iter().product::<usize>() != 1 {
            return Err(format!("`{s}`: a scalar constant has exactly one element"));
        }
        let value: f64 = value.trim().parse().map_err(|_| bad("constant", s))?;
        Ok(ScalarConst::new(dtype, shape, value))
    }
}

impl fmt::Display for LeafRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}#{}", self.node, self.port)
    }
}

impl FromStr for LeafRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, p) = s.strip_prefix('v').and_then(|r| r.split_once('#')).ok_or_else(|| bad("leaf reference", s))?;
        Ok(LeafRef { node: n.parse().map_err(|_| bad("leaf reference", s))?, port: p.parse().map_err(|_| bad("leaf reference", s))? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_print_and_parse_back() {
        for s in ["perm[1,0,2]", "shape[batch,4,(h/2)*(w/2)]", "const(f32[1,1],2.5)", "const(i64[],-3.0)", "v12#1"] {
            let n: TensorLang = egg::FromOp::from_op(s, vec![]).unwrap();
            assert_eq!(n.to_string(), s);
        }
        assert!("const(f32[2],1.0)".parse::<ScalarConst>().is_err());
        assert!("perm[a]".parse::<Perm>().is_err());
    }
}
