//! The closed set of IR operations, each with its math.
//!
//! Conventions used in the docs: `x[i]` indexes a tensor, shapes broadcast
//! as stated in [`crate::shape`], axes are non-negative (builders normalise
//! negative axes), "last axis" is axis `rank-1`. Floating results are computed
//! in the evaluator's precision (f32 or f64) and rounded to the result dtype.

use crate::dtype::DType;
use crate::shape::{Dim, Shape};
use std::fmt;

/// A tensor type: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> Self {
        TensorType { dtype, shape }
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, crate::shape::shape_str(&self.shape))
    }
}

/// A literal tensor stored in the graph. Values are kept as f64 (exact for
/// every f32/f16/bf16 value and for integers up to 2^53).
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Literal {
    pub fn scalar(dtype: DType, v: f64) -> Self {
        Literal { dtype, shape: vec![], values: vec![v] }
    }
}

/// Elementwise functions of one operand: `y[i] = f(x[i])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `e^x`
    Exp,
    /// natural logarithm `ln x`
    Log,
    /// `√x`
    Sqrt,
    /// `1/√x`
    Rsqrt,
    /// `1/x`
    Recip,
    /// `sin x` (radians)
    Sin,
    /// `cos x` (radians)
    Cos,
    /// `tanh x`
    Tanh,
    /// error function `erf x = 2/√π ∫₀ˣ e^(-t²) dt`
    Erf,
    /// `1 / (1 + e^(-x))`
    Sigmoid,
    /// `x · sigmoid(x)`
    Silu,
    /// exact GELU: `x/2 · (1 + erf(x/√2))`
    Gelu,
    /// tanh-approximated GELU: `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`
    GeluTanh,
    /// `max(x, 0)`
    Relu,
    /// `x²`
    Square,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 17] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Sigmoid,
        UnaryOp::Silu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Relu,
        UnaryOp::Square,
    ];
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Erf => "erf",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Silu => "silu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Relu => "relu",
            UnaryOp::Square => "square",
        }
    }
}

/// Elementwise functions of two broadcast operands: `z[i] = f(x[i], y[i])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `x + y`
    Add,
    /// `x - y`
    Sub,
    /// `x · y`
    Mul,
    /// `x / y` (integers: truncating division)
    Div,
    /// `x^y`
    Pow,
    /// `max(x, y)`
    Max,
    /// `min(x, y)`
    Min,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 7] =
        [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Max, BinaryOp::Min];
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
        }
    }
}

/// Elementwise comparisons of two broadcast operands, producing `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub const ALL: [CmpOp; 6] = [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge];
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// `Σ x`
    Sum,
    /// `Σ x / n` with `n` the number of reduced elements
    Mean,
    /// `max x`
    Max,
    /// `min x`
    Min,
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min];
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// One IR operation. Operands are listed in order; "→" gives the result(s).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Stage argument `name` of type `ty`. No operands.
    Input { name: String, ty: TensorType },
    /// Model weight `name` (a key in the weight store) of type `ty`. No
    /// operands. Weights are run-time buffers, never code constants.
    Param { name: String, ty: TensorType },
    /// A literal tensor (small: scalars, short tables). No operands.
    Constant(Literal),
    /// `y[i] = i` for `i` in `0..len`, of dtype `dtype`. No operands.
    Iota { len: Dim, dtype: DType },
    /// Elementwise unary function (see [`UnaryOp`]); float operands.
    Unary(UnaryOp),
    /// Elementwise binary function with broadcasting (see [`BinaryOp`]);
    /// both operands of the same dtype.
    Binary(BinaryOp),
    /// Elementwise comparison with broadcasting, result `bool`.
    Compare(CmpOp),
    /// `(cond, a, b) → y`, `y[i] = cond[i] ? a[i] : b[i]`, all three broadcast;
    /// `cond` is bool, `a` and `b` share a dtype.
    Where,
    /// Convert to `DType`: float→int truncates toward zero, bool→number is
    /// 0/1, number→bool is `x != 0`, float→f16/bf16 rounds to nearest even.
    Cast(DType),
    /// Reduce over `axes` (sorted, unique); `keep_dims` keeps them as size 1.
    Reduce { op: ReduceOp, axes: Vec<usize>, keep_dims: bool },
    /// `y = e^(x - max x) / Σ e^(x - max x)` along `axis`.
    Softmax { axis: usize },
    /// `(x, [w], [b])`: over the last axis,
    /// `y = (x - mean) / √(var + eps) · w + b` with the biased variance.
    LayerNorm { eps: f64, weight: bool, bias: bool },
    /// `(x, [w])`: over the last axis, `y = x / √(mean(x²) + eps) · w`.
    RmsNorm { eps: f64, weight: bool },
    /// `(x, [w, b])` with `x` of shape `[N, C, *spatial]`: channels split
    /// into `groups` groups; each (sample, group) is normalised over its
    /// channels and all spatial positions with the biased variance, then
    /// `y[:, c] = ŷ[:, c] · w[c] + b[c]` when `affine`.
    GroupNorm { groups: usize, eps: f64, affine: bool },
    /// `(a [*, M, K], b [*, K, N]) → [*, M, N]`, `y = a · b` per batch index;
    /// batch dims broadcast, rank ≥ 2 on both sides.
    MatMul,
    /// `(x [*, K], w [N, K], [b [N]]) → [*, N]`, `y = x · wᵀ + b`
    /// (PyTorch `nn.Linear` weight layout).
    Linear { bias: bool },
    /// Scaled dot-product attention
    /// `(q [B, H, Sq, D], k [B, Hk, Sk, D], v [B, Hk, Sk, Dv], [mask]) → [B, H, Sq, Dv]`:
    /// `y = softmax(q kᵀ · scale + mask) v` per (batch, head), where head `h`
    /// reads key/value head `h / (H / Hk)` (grouped-query attention; `H` a
    /// multiple of `Hk`), `scale` defaults to `1/√D`, `mask` is an additive
    /// float tensor broadcast to `[B, H, Sq, Sk]`, and `causal` masks key `j`
    /// for query `i` when `j > i + (Sk - Sq)` (bottom-right aligned).
    Attention { scale: Option<f64>, causal: bool, mask: bool },
    /// `(x [N, Cin, *S], w [Cout, Cin/groups, *K], [b [Cout]]) → [N, Cout, *S']`:
    /// cross-correlation with 2 (conv2d) or 3 (conv3d) spatial dims,
    /// `S'ᵢ = (Sᵢ + 2·padᵢ - dilᵢ·(Kᵢ-1) - 1) / strideᵢ + 1`, zero padding,
    /// `y[n, o, p] = b[o] + Σ_{c, k} x[n, g·Cin/groups + c, p·stride + k·dil - pad] · w[o, c, k]`
    /// where `g = o / (Cout/groups)`.
    Conv { stride: Vec<usize>, padding: Vec<usize>, dilation: Vec<usize>, groups: usize, bias: bool },
    /// `x [N, C, *S] → [N, C, *S·scale]`, `y[n, c, p] = x[n, c, ⌊p / scale⌋]`.
    UpsampleNearest { scale: Vec<usize> },
    /// Constant padding: axis `i` gets `pads[i].0` elements of `value`
    /// before and `pads[i].1` after.
    Pad { pads: Vec<(usize, usize)>, value: f64 },
    /// Same elements in row-major order, new shape (same element count).
    Reshape { shape: Shape },
    /// `y[i₀..] = x[i_{perm⁻¹}]`: result axis `j` is input axis `perm[j]`.
    Transpose { perm: Vec<usize> },
    /// Broadcast to `shape` (rules of [`crate::shape::broadcast`]).
    Expand { shape: Shape },
    /// Join operands (≥ 1, same dtype, same shape except `axis`) along `axis`.
    Concat { axis: usize },
    /// Cut `axis` into consecutive pieces of `sizes` (summing to the axis
    /// length); one result per piece.
    Split { axis: usize, sizes: Vec<Dim> },
    /// Elements `start..end` of `axis` (`0 ≤ start ≤ end ≤ len`).
    Slice { axis: usize, start: Dim, end: Dim },
    /// `(x, idx int) → y`, `y = x.index_select(axis, idx)` generalised to
    /// any index shape: shape `x.shape[..axis] ++ idx.shape ++ x.shape[axis+1..]`,
    /// `y[a, j, b] = x[a, idx[j], b]`. Embedding lookup is `Gather{axis: 0}`.
    Gather { axis: usize },
    /// Along the last axis: the `k` largest values in descending order and
    /// their indices (i64); ties keep the lower index first. Two results.
    TopK { k: usize },
    /// Sparse mixture-of-experts gated MLP with top-k routing, fused
    /// (transformers `Qwen3MoeSparseMoeBlock` without its router linear):
    /// `(x [T, H], logits [T, E], w_gate [E, I, H], w_up [E, I, H], w_down [E, H, I]) → [T, H]`.
    /// Per token `t`: `p = softmax(logits[t])`; `(v, i) = topk(p, top_k)`
    /// (ties keep the lower expert first, as [`Op::TopK`]); when
    /// `norm_topk`, `v = v / Σⱼ v[j]`. Selected expert `e = i[j]` computes
    /// `y_e = (act(x[t] · w_gate[e]ᵀ) ⊙ (x[t] · w_up[e]ᵀ)) · w_down[e]ᵀ`, and
    /// `y[t] = Σⱼ v[j] · y_{i[j]}`, summed in ascending expert order. Experts
    /// a token did not select are not computed. All operands share one float
    /// dtype; `1 ≤ top_k ≤ E`.
    Moe { top_k: usize, norm_topk: bool, act: UnaryOp },
}

impl Op {
    /// Short mnemonic used by the text form and in diagnostics.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Constant(_) => "constant",
            Op::Iota { .. } => "iota",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Where => "where",
            Op::Cast(_) => "cast",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Sum => "reduce_sum",
                ReduceOp::Mean => "reduce_mean",
                ReduceOp::Max => "reduce_max",
                ReduceOp::Min => "reduce_min",
            },
            Op::Softmax { .. } => "softmax",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::GroupNorm { .. } => "group_norm",
            Op::MatMul => "matmul",
            Op::Linear { .. } => "linear",
            Op::Attention { .. } => "attention",
            Op::Conv { .. } => "conv",
            Op::UpsampleNearest { .. } => "upsample_nearest",
            Op::Pad { .. } => "pad",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Expand { .. } => "expand",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Slice { .. } => "slice",
            Op::Gather { .. } => "gather",
            Op::TopK { .. } => "topk",
            Op::Moe { .. } => "moe",
        }
    }

    /// Allowed operand counts (inclusive range).
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input { .. } | Op::Param { .. } | Op::Constant(_) | Op::Iota { .. } => (0, 0),
            Op::Unary(_)
            | Op::Cast(_)
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::UpsampleNearest { .. }
            | Op::Pad { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Expand { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::TopK { .. } => (1, 1),
            Op::Binary(_) | Op::Compare(_) | Op::MatMul | Op::Gather { .. } => (2, 2),
            Op::Where => (3, 3),
            Op::Moe { .. } => (5, 5),
            Op::LayerNorm { weight, bias, .. } => {
                let n = 1 + *weight as usize + *bias as usize;
                (n, n)
            }
            Op::RmsNorm { weight, .. } => {
                let n = 1 + *weight as usize;
                (n, n)
            }
            Op::GroupNorm { affine, .. } => {
                let n = if *affine { 3 } else { 1 };
                (n, n)
            }
            Op::Linear { bias } | Op::Conv { bias, .. } => {
                let n = 2 + *bias as usize;
                (n, n)
            }
            Op::Attention { mask, .. } => {
                let n = 3 + *mask as usize;
                (n, n)
            }
            Op::Concat { .. } => (1, usize::MAX),
        }
    }

    /// True for ops without operands that bring data into the graph.
    pub fn is_source(&self) -> bool {
        self.arity().1 == 0
    }
}
