//! The reference evaluator: runs any graph on the CPU, naive and obviously
//! correct. It is the semantics oracle for every pass and code generator.
//!
//! Precision: every op accumulates in f64. In [`Precision::F32`] each f32
//! result is rounded to f32 (storage semantics of an f32 implementation); in
//! [`Precision::F64`] f32 values are kept in f64 for checking. f16/bf16
//! results are always rounded to their type.

pub mod kernels;
pub mod moe;
pub mod tensor;
#[cfg(test)]
mod tests;

use crate::error::IrError;
use crate::graph::{Graph, Node, ValueRef};
use crate::op::Op;
use crate::shape::{eval_shape, Bindings, Dim};
use crate::verify::value_names;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
pub use tensor::{Data, Tensor};

/// Precision the evaluator keeps f32 values in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F64,
}

/// Where the evaluator gets weights from.
pub trait WeightStore {
    /// The tensor called `name`, converted to the evaluator's layout.
    fn weight(&self, name: &str) -> Result<Tensor, String>;
}

impl WeightStore for HashMap<String, Tensor> {
    fn weight(&self, name: &str) -> Result<Tensor, String> {
        self.get(name).cloned().ok_or_else(|| format!("no weight named `{name}`"))
    }
}

/// Bind the symbols of the graph's input shapes from actual tensors and
/// check every input's dtype and shape. Errors name the input.
pub fn bind_inputs(g: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Bindings, IrError> {
    let mut b = Bindings::new();
    let ins = g.inputs();
    // First pass: plain symbols bind; second: everything must evaluate equal.
    for pass in 0..2 {
        for (name, n) in &ins {
            let Op::Input { ty, .. } = &g.node(*n).op else { continue };
            let t = inputs.get(name).ok_or_else(|| IrError::Eval(format!("missing input `{name}` (expects {ty})")))?;
            if pass == 0 && t.dtype != ty.dtype {
                return Err(IrError::Eval(format!("input `{name}` has dtype {} but the program expects {ty}", t.dtype)));
            }
            if t.shape.len() != ty.shape.len() {
                return Err(IrError::Eval(format!("input `{name}` has shape {:?} but the program expects {ty}", t.shape)));
            }
            for (d, &actual) in ty.shape.iter().zip(&t.shape) {
                match d {
                    Dim::Sym(s) if pass == 0 => {
                        let prev = b.entry(s.to_string()).or_insert(actual as i64);
                        if *prev != actual as i64 {
                            return Err(IrError::Eval(format!(
                                "input `{name}` has shape {:?} but `{s}` is already bound to {prev} (program expects {ty})",
                                t.shape
                            )));
                        }
                    }
                    _ if pass == 1 => {
                        let want = d.eval(&b).map_err(|e| IrError::Eval(format!("input `{name}`: {e}")))?;
                        if want != actual as i64 {
                            return Err(IrError::Eval(format!(
                                "input `{name}` has shape {:?} but the program expects {ty} (`{d}` = {want})",
                                t.shape
                            )));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(b)
}

/// Evaluate the graph and return its named outputs.
pub fn evaluate(
    g: &Graph,
    inputs: &HashMap<String, Tensor>,
    weights: &dyn WeightStore,
    precision: Precision,
) -> Result<HashMap<String, Tensor>, IrError> {
    evaluate_observed(g, inputs, weights, precision, &mut |_, _, _| {})
}

/// Like [`evaluate`], calling `observe` with every node's results as they
/// are computed (for intermediate comparisons and debugging).
pub fn evaluate_observed(
    g: &Graph,
    inputs: &HashMap<String, Tensor>,
    weights: &dyn WeightStore,
    precision: Precision,
    observe: &mut dyn FnMut(NodeIndex, &Node, &[Tensor]),
) -> Result<HashMap<String, Tensor>, IrError> {
    let binds = bind_inputs(g, inputs)?;
    let order = g.topo_order()?;
    let names = value_names(g)?;
    // Remaining uses per node, so values are freed after their last use.
    let mut remaining: HashMap<NodeIndex, usize> = HashMap::new();
    for &n in &order {
        remaining.insert(n, g.g.edges_directed(n, petgraph::Direction::Outgoing).count());
    }
    let kept: std::collections::HashSet<NodeIndex> = g.outputs.iter().map(|(_, v)| v.node).collect();
    let mut values: HashMap<NodeIndex, Vec<Tensor>> = HashMap::new();
    for n in order {
        let node = g.node(n);
        let operands = g.operands(n);
        let args: Vec<&Tensor> = operands
            .iter()
            .map(|v| values.get(&v.node).and_then(|r| r.get(v.port as usize)).ok_or_else(|| IrError::Eval("operand not computed".into())))
            .collect::<Result<_, _>>()?;
        let res = eval_node(node, &args, inputs, weights, &binds, precision).map_err(|m| {
            let label = node.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
            IrError::Eval(format!("`{}` %{}{label}: {m}", node.op.mnemonic(), names[&n]))
        })?;
        observe(n, node, &res);
        values.insert(n, res);
        for v in operands {
            if let Some(r) = remaining.get_mut(&v.node) {
                *r -= 1;
                if *r == 0 && !kept.contains(&v.node) {
                    values.remove(&v.node);
                }
            }
        }
    }
    let mut out = HashMap::new();
    for (name, ValueRef { node, port }) in &g.outputs {
        let t = values.get(node).and_then(|r| r.get(*port as usize)).ok_or_else(|| IrError::Eval(format!("output `{name}` not computed")))?;
        out.insert(name.clone(), t.clone());
    }
    Ok(out)
}

fn conc(d: &Dim, b: &Bindings) -> Result<usize, String> {
    let v = d.eval(b)?;
    usize::try_from(v).map_err(|_| format!("dimension `{d}` is negative ({v})"))
}

fn eval_node(
    node: &Node,
    a: &[&Tensor],
    inputs: &HashMap<String, Tensor>,
    weights: &dyn WeightStore,
    b: &Bindings,
    p: Precision,
) -> Result<Vec<Tensor>, String> {
    use kernels as k;
    let keep = p == Precision::F64;
    let one = |t: Result<Tensor, String>| t.map(|t| vec![t]);
    // Source values are results too: float ones are rounded to their dtype
    // (f32 only in F32 precision) like every other op's results.
    let src = |mut t: Tensor| {
        if let Data::F(v) = &mut t.data {
            v.iter_mut().for_each(|x| *x = tensor::round_to(t.dtype, *x, keep));
        }
        t
    };
    match &node.op {
        Op::Input { name, .. } => Ok(vec![src(inputs.get(name).cloned().ok_or_else(|| format!("missing input `{name}`"))?)]),
        Op::Param { name, ty } => {
            let w = weights.weight(name)?;
            let want = eval_shape(&ty.shape, b)?;
            if w.shape != want || w.dtype != ty.dtype {
                return Err(format!("weight `{name}` is {}{:?} but the program expects {ty}", w.dtype, w.shape));
            }
            Ok(vec![src(w)])
        }
        Op::Constant(lit) => {
            let t = match lit.dtype {
                d if d.is_float() => k::make_float(d, lit.shape.clone(), lit.values.clone(), keep),
                d if d.is_int() => Tensor::from_i64(d, &lit.shape, lit.values.iter().map(|&v| v as i64).collect()),
                _ => Tensor::from_bool(&lit.shape, lit.values.iter().map(|&v| v != 0.0).collect()),
            };
            Ok(vec![t])
        }
        Op::Iota { len, dtype } => {
            let n = conc(len, b)?;
            let t = if dtype.is_float() {
                k::make_float(*dtype, vec![n], (0..n).map(|i| i as f64).collect(), keep)
            } else {
                Tensor::from_i64(*dtype, &[n], (0..n as i64).collect())
            };
            Ok(vec![t])
        }
        Op::Unary(u) => one(k::unary(*u, a[0], keep)),
        Op::Binary(o) => one(k::binary(*o, a[0], a[1], keep)),
        Op::Compare(c) => one(k::compare(*c, a[0], a[1])),
        Op::Where => one(k::where_(a[0], a[1], a[2])),
        Op::Cast(to) => one(k::cast(a[0], *to, keep)),
        Op::Reduce { op, axes, keep_dims } => one(k::reduce(*op, a[0], axes, *keep_dims, keep)),
        Op::Softmax { axis } => one(k::softmax(a[0], *axis, keep)),
        Op::LayerNorm { eps, weight, bias } => {
            let w = weight.then(|| a[1]);
            let bb = bias.then(|| a[1 + *weight as usize]);
            one(k::layer_norm(a[0], w, bb, *eps, false, keep))
        }
        Op::RmsNorm { eps, weight } => one(k::layer_norm(a[0], weight.then(|| a[1]), None, *eps, true, keep)),
        Op::GroupNorm { groups, eps, affine } => {
            one(k::group_norm(a[0], affine.then(|| (a[1], a[2])), *groups, *eps, keep))
        }
        Op::MatMul => one(k::matmul(a[0], a[1], keep)),
        Op::Linear { bias } => one(k::linear(a[0], a[1], bias.then(|| a[2]), keep)),
        Op::Attention { scale, causal, mask } => {
            one(k::attention(a[0], a[1], a[2], mask.then(|| a[3]), *scale, *causal, keep))
        }
        Op::Conv { stride, padding, dilation, groups, bias } => {
            one(k::conv(a[0], a[1], bias.then(|| a[2]), stride, padding, dilation, *groups, keep))
        }
        Op::UpsampleNearest { scale } => one(k::upsample_nearest(a[0], scale)),
        Op::Pad { pads, value } => {
            // The pad value is an element of the result: round it to the dtype.
            let v = if a[0].dtype.is_float() { tensor::round_to(a[0].dtype, *value, keep) } else { *value };
            one(k::pad(a[0], pads, v))
        }
        Op::Reshape { shape } => {
            let s = eval_shape(shape, b)?;
            if s.iter().product::<usize>() != a[0].numel() {
                return Err(format!("cannot reshape {:?} to {s:?}", a[0].shape));
            }
            let mut t = a[0].clone();
            t.shape = s;
            Ok(vec![t])
        }
        Op::Transpose { perm } => one(k::transpose(a[0], perm)),
        Op::Expand { shape } => one(k::expand(a[0], eval_shape(shape, b)?)),
        Op::Concat { axis } => one(k::concat(a, *axis)),
        Op::Split { axis, sizes } => {
            let mut start = 0;
            let mut out = Vec::new();
            for d in sizes {
                let n = conc(d, b)?;
                out.push(k::slice(a[0], *axis, start, start + n)?);
                start += n;
            }
            if start != a[0].shape[*axis] {
                return Err(format!("split sizes sum to {start}, axis {axis} has {}", a[0].shape[*axis]));
            }
            Ok(out)
        }
        Op::Slice { axis, start, end } => one(k::slice(a[0], *axis, conc(start, b)?, conc(end, b)?)),
        Op::Gather { axis } => one(k::gather(a[0], a[1], *axis)),
        Op::TopK { k: kk } => {
            let (v, i) = k::topk(a[0], *kk)?;
            Ok(vec![v, i])
        }
        Op::Moe { top_k, norm_topk, act } => one(moe::moe(a[0], a[1], a[2], a[3], a[4], *top_k, *norm_topk, *act, keep)),
    }
}
