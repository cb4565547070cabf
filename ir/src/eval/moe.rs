//! Reference semantics of the fused `moe` op ([`crate::op::Op::Moe`]):
//! routing through the evaluator's own softmax, top-k and normalisation,
//! then, per token, only the selected experts in ascending expert order,
//! with plain f64 dot products. Every intermediate is rounded to the dtype
//! exactly where the unfused graph (router → dense routing weights →
//! `Σ_e r[:, e] · expert_e(x)`) rounds it, so in f32 mode both forms agree
//! to the last bit except where the unfused form adds exact zeros.

use super::kernels::{self as k, KResult};
use super::tensor::{round_to, Tensor};
use crate::op::{BinaryOp, ReduceOp, UnaryOp};

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| p * q).sum()
}

/// `moe(x, logits, w_gate, w_up, w_down)`; see [`crate::op::Op::Moe`].
#[allow(clippy::too_many_arguments)]
pub fn moe(x: &Tensor, logits: &Tensor, wg: &Tensor, wu: &Tensor, wd: &Tensor, top_k: usize, norm_topk: bool, act: UnaryOp, keep: bool) -> KResult {
    let (&[t, h], &[t2, e], &[e2, inner, h2]) = (x.shape.as_slice(), logits.shape.as_slice(), wg.shape.as_slice()) else {
        return Err(format!("moe: x {:?}, logits {:?}, w_gate {:?} need ranks 2, 2, 3", x.shape, logits.shape, wg.shape));
    };
    if t2 != t || e2 != e || h2 != h || wu.shape != wg.shape || wd.shape != [e, h, inner] {
        return Err(format!("moe: x {:?}, logits {:?}, w_gate {:?}, w_up {:?}, w_down {:?} disagree", x.shape, logits.shape, wg.shape, wu.shape, wd.shape));
    }
    let dt = x.dtype;
    let r = |v: f64| round_to(dt, v, keep);
    let p = k::softmax(logits, 1, keep)?;
    let (mut v, i) = k::topk(&p, top_k)?;
    if norm_topk {
        let s = k::reduce(ReduceOp::Sum, &v, &[1], true, keep)?;
        v = k::binary(BinaryOp::Div, &v, &s, keep)?;
    }
    let (vv, iv) = (v.floats()?, i.ints()?);
    let (xv, gv, uv, dv) = (x.floats()?, wg.floats()?, wu.floats()?, wd.floats()?);
    let mut out = vec![0.0; t * h];
    let mut m = vec![0.0; inner];
    for tok in 0..t {
        let mut sel: Vec<(usize, f64)> = (0..top_k).map(|j| (iv[tok * top_k + j] as usize, vv[tok * top_k + j])).collect();
        sel.sort_by_key(|s| s.0);
        let xr = &xv[tok * h..(tok + 1) * h];
        let o = &mut out[tok * h..(tok + 1) * h];
        for (n, &(ex, w)) in sel.iter().enumerate() {
            for (j, mj) in m.iter_mut().enumerate() {
                let row = (ex * inner + j) * h;
                let g = r(dot(xr, &gv[row..row + h]));
                let u = r(dot(xr, &uv[row..row + h]));
                *mj = r(r(k::unary_f(act, g)) * u);
            }
            for (c, oc) in o.iter_mut().enumerate() {
                let row = (ex * h + c) * inner;
                let y = r(r(dot(&m, &dv[row..row + inner])) * w);
                *oc = if n == 0 { y } else { r(*oc + y) };
            }
        }
    }
    Ok(k::make_float(dt, vec![t, h], out, keep))
}
