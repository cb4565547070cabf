//! Static analyses over a graph: FLOP counts and tensor sizes for concrete
//! bindings of the symbolic dims.
//!
//! FLOP convention (multiply-add = 2 FLOPs): matmul/linear `2·M·N·K` per
//! batch entry, attention `2·B·H·Sq·Sk·(D + Dv)` plus its softmax, conv
//! `2·N·Cout·|out|·(Cin/groups)·|kernel|`, norms/softmax a few FLOPs per
//! element, elementwise 1 per output element, data movement 0.

use crate::graph::Graph;
use crate::op::{Op, TensorType};
use crate::shape::{eval_shape, Bindings, Dim};
use petgraph::stable_graph::NodeIndex;

/// Concrete shape of a value type under `b`.
fn dims(t: &TensorType, b: &Bindings) -> Result<Vec<usize>, String> {
    eval_shape(&t.shape, b)
}

fn numel(t: &TensorType, b: &Bindings) -> Result<u64, String> {
    Ok(dims(t, b)?.iter().map(|&d| d as u64).product())
}

/// FLOPs of one forward of `g` with the symbols bound by `b`.
pub fn flops(g: &Graph, b: &Bindings) -> Result<u64, String> {
    let mut total = 0u64;
    for n in g.g.node_indices() {
        let f = node_flops(g, n)?.eval(b)?;
        total += u64::try_from(f).map_err(|_| format!("node {}: negative FLOP count {f}", n.index()))?;
    }
    Ok(total)
}

/// Product of a shape's dims (1 for a scalar).
fn numel_dim(shape: &[Dim]) -> Dim {
    shape.iter().fold(Dim::Const(1), |a, d| a.mul(d))
}

/// FLOPs of node `n` as an expression over the graph's symbols (the
/// convention of the module doc); the code generator records it per step
/// so that the runtime profiler can report GFLOP/s per kernel.
pub fn node_flops(g: &Graph, n: NodeIndex) -> Result<Dim, String> {
    let node = g.node(n);
    let ins: Vec<TensorType> = g.operands(n).iter().map(|v| g.value_type(*v).cloned()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let Some(out) = node.outputs.first() else { return Ok(Dim::Const(0)) };
    let on = numel_dim(&out.shape);
    let operand = |i: usize| ins.get(i).map(|t| &t.shape[..]).ok_or_else(|| format!("`{}` node {} has no operand {i}", node.op.mnemonic(), n.index()));
    let dim = |s: &[Dim], i: usize| {
        s.get(i).cloned().ok_or_else(|| format!("`{}` node {}: operand of rank {} has no dim {i}", node.op.mnemonic(), n.index(), s.len()))
    };
    let last = |s: &[Dim]| s.last().cloned().unwrap_or(Dim::Const(0));
    let two = Dim::Const(2);
    let plus_bias = |f: Dim, bias: bool| if bias { f.add(&on) } else { f };
    Ok(match &node.op {
        Op::MatMul => two.mul(&on).mul(&last(operand(0)?)),
        Op::Linear { bias } => plus_bias(two.mul(&on).mul(&last(operand(0)?)), *bias),
        Op::Attention { .. } => {
            let (q, k, v) = (operand(0)?, operand(1)?, operand(2)?);
            let bh = dim(q, 0)?.mul(&dim(q, 1)?);
            let per = two.mul(&dim(q, 3)?).add(&two.mul(&dim(v, 3)?)).add(&Dim::Const(5));
            bh.mul(&dim(q, 2)?).mul(&dim(k, 2)?).mul(&per)
        }
        Op::Conv { bias, .. } => {
            let w = operand(1)?;
            plus_bias(two.mul(&on).mul(&numel_dim(w.get(1..).unwrap_or(&[]))), *bias)
        }
        // Per token and selected expert: gate and up `[H → I]`, down `[I → H]`.
        Op::Moe { top_k, .. } => Dim::Const(6 * *top_k as i64).mul(&on).mul(&dim(operand(2)?, 1)?),
        Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::GroupNorm { .. } | Op::Softmax { .. } => Dim::Const(5).mul(&on),
        Op::Reduce { .. } => numel_dim(operand(0)?),
        Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where => on,
        _ => Dim::Const(0),
    })
}

/// Bytes of all `param` tensors.
pub fn param_bytes(g: &Graph, b: &Bindings) -> Result<u64, String> {
    let mut total = 0;
    for (_, n) in g.params() {
        let t = &g.node(n).outputs[0];
        total += numel(t, b)? * t.dtype.size_bytes() as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, DType, Dim};

    #[test]
    fn counts_contractions_with_bound_symbols() {
        let mut bld = Builder::new();
        let x = bld.input("x", DType::F32, vec![Dim::sym("batch"), 8.into(), 16.into()]).unwrap();
        let w = bld.param("w", DType::F32, vec![32.into(), 16.into()]).unwrap();
        let y = bld.linear(x, w, None).unwrap();
        let z = bld.unary(crate::UnaryOp::Silu, y).unwrap();
        bld.output("z", z);
        let g = bld.finish().unwrap();
        let b: Bindings = [("batch".to_string(), 3)].into_iter().collect();
        // linear: 2·(3·8)·32·16, silu: 3·8·32
        assert_eq!(flops(&g, &b).unwrap(), 2 * 24 * 32 * 16 + 24 * 32);
        assert_eq!(param_bytes(&g, &b).unwrap(), 32 * 16 * 4);
        assert!(flops(&g, &Bindings::new()).unwrap_err().contains("batch"));
    }
}
