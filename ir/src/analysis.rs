//! Static analyses over a graph: FLOP counts and tensor sizes for concrete
//! bindings of the symbolic dims.
//!
//! FLOP convention (multiply-add = 2 FLOPs): matmul/linear `2·M·N·K` per
//! batch entry, attention `2·B·H·Sq·Sk·(D + Dv)` plus its softmax, conv
//! `2·N·Cout·|out|·(Cin/groups)·|kernel|`, norms/softmax a few FLOPs per
//! element, elementwise 1 per output element, data movement 0.

use crate::graph::Graph;
use crate::op::{Op, TensorType};
use crate::shape::{eval_shape, Bindings};

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
        let node = g.node(n);
        let ins: Vec<TensorType> = g.operands(n).iter().map(|v| g.value_type(*v).cloned()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let out = match node.outputs.first() {
            Some(t) => t,
            None => continue,
        };
        let on = numel(out, b)?;
        let f = match &node.op {
            Op::MatMul => {
                let a = dims(&ins[0], b)?;
                2 * on * a[a.len() - 1] as u64
            }
            Op::Linear { bias } => {
                let k = *dims(&ins[0], b)?.last().unwrap_or(&0) as u64;
                2 * on * k + if *bias { on } else { 0 }
            }
            Op::Attention { .. } => {
                let q = dims(&ins[0], b)?;
                let k = dims(&ins[1], b)?;
                let v = dims(&ins[2], b)?;
                let (bh, sq, sk) = ((q[0] * q[1]) as u64, q[2] as u64, k[2] as u64);
                bh * sq * sk * (2 * q[3] as u64 + 2 * v[3] as u64 + 5)
            }
            Op::Conv { groups, bias, .. } => {
                let w = dims(&ins[1], b)?;
                let per_out: u64 = w[1..].iter().map(|&d| d as u64).product();
                let _ = groups;
                2 * on * per_out + if *bias { on } else { 0 }
            }
            Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::GroupNorm { .. } => 5 * on,
            Op::Softmax { .. } => 5 * on,
            Op::Reduce { .. } => numel(&ins[0], b)?,
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where => on,
            _ => 0,
        };
        total += f;
    }
    Ok(total)
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
