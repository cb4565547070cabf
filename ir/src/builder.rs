//! `Builder`: the API model builders use to emit IR.
//!
//! Every method infers the result type immediately and returns an error
//! naming the op and shapes when operands do not fit. Nodes created while a
//! block index or a label scope is set carry that annotation / label.

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Annotation, Graph, Role, ValueRef};
use crate::op::{BinaryOp, CmpOp, Literal, Op, ReduceOp, TensorType, UnaryOp};
use crate::shape::{Dim, Shape};

/// Shorthand for builder results.
pub type BResult = Result<ValueRef, IrError>;

/// Emits a [`Graph`] op by op.
#[derive(Default)]
pub struct Builder {
    pub graph: Graph,
    block: Option<u32>,
    scope: Option<String>,
}

/// Normalise a possibly negative axis.
fn norm_axis(axis: isize, rank: usize) -> Result<usize, IrError> {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    if a < 0 || a as usize >= rank.max(1) && !(rank == 0 && a == 0) {
        return Err(IrError::Graph(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

impl Builder {
    pub fn new() -> Self {
        Builder::default()
    }

    /// Annotate nodes created from now on with `block(i)` (or nothing).
    pub fn set_block(&mut self, block: Option<u32>) {
        self.block = block;
    }

    /// Label nodes created from now on (usually the checkpoint module path).
    pub fn set_scope(&mut self, scope: Option<&str>) {
        self.scope = scope.map(|s| s.to_string());
    }

    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    fn push(&mut self, op: Op, operands: &[ValueRef]) -> Result<petgraph::stable_graph::NodeIndex, IrError> {
        let mnemonic = op.mnemonic();
        let n = self.graph.add(op, operands).map_err(|e| match e {
            IrError::Verify { op, message, .. } => {
                let shapes: Vec<String> =
                    operands.iter().filter_map(|v| self.graph.value_type(*v).ok()).map(|t| t.to_string()).collect();
                IrError::Verify {
                    op,
                    value: format!("{} in {}", mnemonic, self.scope.as_deref().unwrap_or("<top>")),
                    message: format!("{message} (operand types: {})", shapes.join(", ")),
                }
            }
            other => other,
        })?;
        let node = self.graph.node_mut(n);
        if let Some(b) = self.block {
            node.annotations.push(Annotation::Block(b));
        }
        node.label = self.scope.clone();
        Ok(n)
    }

    fn push1(&mut self, op: Op, operands: &[ValueRef]) -> BResult {
        Ok(ValueRef::new(self.push(op, operands)?, 0))
    }

    pub fn ty(&self, v: ValueRef) -> &TensorType {
        self.graph.value_type(v).expect("builder values always exist")
    }
    pub fn shape(&self, v: ValueRef) -> Shape {
        self.ty(v).shape.clone()
    }
    pub fn dtype(&self, v: ValueRef) -> DType {
        self.ty(v).dtype
    }
    pub fn rank(&self, v: ValueRef) -> usize {
        self.ty(v).rank()
    }
    /// Dim `axis` (negative counts from the end).
    pub fn dim(&self, v: ValueRef, axis: isize) -> Dim {
        let r = self.rank(v);
        let a = if axis < 0 { r as isize + axis } else { axis } as usize;
        self.shape(v)[a].clone()
    }

    // ----- sources -----
    pub fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> BResult {
        self.push1(Op::Input { name: name.into(), ty: TensorType::new(dtype, shape) }, &[])
    }
    pub fn param(&mut self, name: &str, dtype: DType, shape: Shape) -> BResult {
        self.push1(Op::Param { name: name.into(), ty: TensorType::new(dtype, shape) }, &[])
    }
    pub fn constant(&mut self, lit: Literal) -> BResult {
        self.push1(Op::Constant(lit), &[])
    }
    pub fn scalar(&mut self, dtype: DType, v: f64) -> BResult {
        self.constant(Literal::scalar(dtype, v))
    }
    pub fn iota(&mut self, len: Dim, dtype: DType) -> BResult {
        self.push1(Op::Iota { len, dtype }, &[])
    }

    // ----- elementwise -----
    pub fn unary(&mut self, op: UnaryOp, x: ValueRef) -> BResult {
        self.push1(Op::Unary(op), &[x])
    }
    pub fn binary(&mut self, op: BinaryOp, a: ValueRef, b: ValueRef) -> BResult {
        self.push1(Op::Binary(op), &[a, b])
    }
    pub fn add(&mut self, a: ValueRef, b: ValueRef) -> BResult {
        self.binary(BinaryOp::Add, a, b)
    }
    pub fn sub(&mut self, a: ValueRef, b: ValueRef) -> BResult {
        self.binary(BinaryOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: ValueRef, b: ValueRef) -> BResult {
        self.binary(BinaryOp::Mul, a, b)
    }
    pub fn div(&mut self, a: ValueRef, b: ValueRef) -> BResult {
        self.binary(BinaryOp::Div, a, b)
    }
    /// `x op c` with a scalar constant of `x`'s dtype.
    pub fn binary_scalar(&mut self, op: BinaryOp, x: ValueRef, c: f64) -> BResult {
        let s = self.scalar(self.dtype(x), c)?;
        self.binary(op, x, s)
    }
    pub fn add_scalar(&mut self, x: ValueRef, c: f64) -> BResult {
        self.binary_scalar(BinaryOp::Add, x, c)
    }
    pub fn mul_scalar(&mut self, x: ValueRef, c: f64) -> BResult {
        self.binary_scalar(BinaryOp::Mul, x, c)
    }
    pub fn compare(&mut self, op: CmpOp, a: ValueRef, b: ValueRef) -> BResult {
        self.push1(Op::Compare(op), &[a, b])
    }
    pub fn where_(&mut self, cond: ValueRef, a: ValueRef, b: ValueRef) -> BResult {
        self.push1(Op::Where, &[cond, a, b])
    }
    pub fn cast(&mut self, x: ValueRef, to: DType) -> BResult {
        self.push1(Op::Cast(to), &[x])
    }

    // ----- reductions and normalisation -----
    pub fn reduce(&mut self, op: ReduceOp, x: ValueRef, axes: &[isize], keep_dims: bool) -> BResult {
        let r = self.rank(x);
        let mut ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?;
        ax.sort();
        ax.dedup();
        self.push1(Op::Reduce { op, axes: ax, keep_dims }, &[x])
    }
    pub fn softmax(&mut self, x: ValueRef, axis: isize) -> BResult {
        let axis = norm_axis(axis, self.rank(x))?;
        self.push1(Op::Softmax { axis }, &[x])
    }
    pub fn layer_norm(&mut self, x: ValueRef, w: Option<ValueRef>, b: Option<ValueRef>, eps: f64) -> BResult {
        let mut ops = vec![x];
        ops.extend(w);
        ops.extend(b);
        self.push1(Op::LayerNorm { eps, weight: w.is_some(), bias: b.is_some() }, &ops)
    }
    pub fn rms_norm(&mut self, x: ValueRef, w: Option<ValueRef>, eps: f64) -> BResult {
        let mut ops = vec![x];
        ops.extend(w);
        self.push1(Op::RmsNorm { eps, weight: w.is_some() }, &ops)
    }
    pub fn group_norm(&mut self, x: ValueRef, wb: Option<(ValueRef, ValueRef)>, groups: usize, eps: f64) -> BResult {
        let mut ops = vec![x];
        if let Some((w, b)) = wb {
            ops.push(w);
            ops.push(b);
        }
        self.push1(Op::GroupNorm { groups, eps, affine: wb.is_some() }, &ops)
    }

    // ----- contractions -----
    pub fn matmul(&mut self, a: ValueRef, b: ValueRef) -> BResult {
        self.push1(Op::MatMul, &[a, b])
    }
    pub fn linear(&mut self, x: ValueRef, w: ValueRef, b: Option<ValueRef>) -> BResult {
        let mut ops = vec![x, w];
        ops.extend(b);
        self.push1(Op::Linear { bias: b.is_some() }, &ops)
    }
    pub fn attention(&mut self, q: ValueRef, k: ValueRef, v: ValueRef, mask: Option<ValueRef>, scale: Option<f64>, causal: bool) -> BResult {
        let mut ops = vec![q, k, v];
        ops.extend(mask);
        self.push1(Op::Attention { scale, causal, mask: mask.is_some() }, &ops)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: ValueRef,
        w: ValueRef,
        b: Option<ValueRef>,
        stride: &[usize],
        padding: &[usize],
        dilation: &[usize],
        groups: usize,
    ) -> BResult {
        let mut ops = vec![x, w];
        ops.extend(b);
        self.push1(
            Op::Conv { stride: stride.to_vec(), padding: padding.to_vec(), dilation: dilation.to_vec(), groups, bias: b.is_some() },
            &ops,
        )
    }

    // ----- data movement -----
    pub fn upsample_nearest(&mut self, x: ValueRef, scale: &[usize]) -> BResult {
        self.push1(Op::UpsampleNearest { scale: scale.to_vec() }, &[x])
    }
    pub fn pad(&mut self, x: ValueRef, pads: &[(usize, usize)], value: f64) -> BResult {
        self.push1(Op::Pad { pads: pads.to_vec(), value }, &[x])
    }
    pub fn reshape(&mut self, x: ValueRef, shape: Shape) -> BResult {
        self.push1(Op::Reshape { shape }, &[x])
    }
    pub fn transpose(&mut self, x: ValueRef, perm: &[usize]) -> BResult {
        self.push1(Op::Transpose { perm: perm.to_vec() }, &[x])
    }
    pub fn expand(&mut self, x: ValueRef, shape: Shape) -> BResult {
        self.push1(Op::Expand { shape }, &[x])
    }
    pub fn concat(&mut self, xs: &[ValueRef], axis: isize) -> BResult {
        let r = xs.first().map(|&x| self.rank(x)).unwrap_or(0);
        let axis = norm_axis(axis, r)?;
        self.push1(Op::Concat { axis }, xs)
    }
    pub fn split(&mut self, x: ValueRef, axis: isize, sizes: &[Dim]) -> Result<Vec<ValueRef>, IrError> {
        let axis = norm_axis(axis, self.rank(x))?;
        let n = self.push(Op::Split { axis, sizes: sizes.to_vec() }, &[x])?;
        Ok((0..sizes.len() as u32).map(|p| ValueRef::new(n, p)).collect())
    }
    /// Split into `parts` equal static pieces.
    pub fn chunk(&mut self, x: ValueRef, parts: usize, axis: isize) -> Result<Vec<ValueRef>, IrError> {
        let d = self.dim(x, axis);
        let n = d.as_const().ok_or_else(|| IrError::Graph(format!("chunk of symbolic dim {d}")))?;
        if parts == 0 || n % parts as i64 != 0 {
            return Err(IrError::Graph(format!("cannot chunk {n} into {parts} equal parts")));
        }
        self.split(x, axis, &vec![Dim::Const(n / parts as i64); parts])
    }
    pub fn slice(&mut self, x: ValueRef, axis: isize, start: Dim, end: Dim) -> BResult {
        let axis = norm_axis(axis, self.rank(x))?;
        self.push1(Op::Slice { axis, start, end }, &[x])
    }
    pub fn gather(&mut self, x: ValueRef, idx: ValueRef, axis: isize) -> BResult {
        let axis = norm_axis(axis, self.rank(x))?;
        self.push1(Op::Gather { axis }, &[x, idx])
    }
    pub fn topk(&mut self, x: ValueRef, k: usize) -> Result<(ValueRef, ValueRef), IrError> {
        let n = self.push(Op::TopK { k }, &[x])?;
        Ok((ValueRef::new(n, 0), ValueRef::new(n, 1)))
    }
    /// Fused sparse MoE MLP ([`Op::Moe`]): `(x [T, H], logits [T, E],
    /// w_gate [E, I, H], w_up [E, I, H], w_down [E, H, I]) → [T, H]`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe(&mut self, x: ValueRef, logits: ValueRef, w_gate: ValueRef, w_up: ValueRef, w_down: ValueRef, top_k: usize, norm_topk: bool, act: UnaryOp) -> BResult {
        self.push1(Op::Moe { top_k, norm_topk, act }, &[x, logits, w_gate, w_up, w_down])
    }

    // ----- annotations and outputs -----
    pub fn annotate(&mut self, v: ValueRef, role: Role) {
        self.graph.node_mut(v.node).annotations.push(Annotation::Role(role));
    }
    pub fn output(&mut self, name: &str, v: ValueRef) {
        self.graph.outputs.push((name.to_string(), v));
    }

    /// Verify and return the graph.
    pub fn finish(self) -> Result<Graph, IrError> {
        crate::verify::verify_graph(&self.graph)?;
        Ok(self.graph)
    }
}
