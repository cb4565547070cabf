//! Fused sparse mixture-of-experts gated MLP (the IR's `moe`, runtime
//! [`crate::artifact::manifest::Ukernel::Moe`]), in one call:
//!
//! 1. **route**: per token `t`, `p = softmax(logits[t])` (f64 sums, each
//!    probability rounded to f32), the `top_k` largest with the
//!    [`super::topk`] order (ties keep the lower expert), renormalised to
//!    sum 1 when `norm_topk`;
//! 2. **group**: the (token, weight) pairs of each expert, tokens ascending
//!    (a counting sort over the `T·k` selections);
//! 3. **grouped GEMM**: for each expert with tokens, its rows of `x`
//!    gathered into `xe [n_e, H]`, `g = xe·w_gate[e]ᵀ`, `u = xe·w_up[e]ᵀ`
//!    ([`gemm::linear`]), `h = act(g) ⊙ u`, `ye = h·w_down[e]ᵀ`;
//! 4. **weighted combine**: `y[t] += w · ye[r]`, experts in ascending order,
//!    so each token's sum has the IR's order.
//!
//! Experts nobody selected cost nothing; at decode (`T = 1`) only `k` of
//! the `E` experts' weights are read. Scratch is per call (a few `n_e × I`
//! and `n_e × H` buffers).

use super::{gemm, topk, KernelError};
use crate::artifact::manifest::MoeAct;

const OP: &str = "moe";

/// Sizes of a `moe` call.
#[derive(Clone, Copy, Debug)]
pub struct MoeDims {
    pub tokens: usize,
    pub hidden: usize,
    pub experts: usize,
    pub inner: usize,
    pub top_k: usize,
}

#[inline]
fn activate(act: MoeAct, v: f32) -> f32 {
    match act {
        MoeAct::Silu => v / (1.0 + (-v).exp()),
        MoeAct::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        MoeAct::Relu => v.max(0.0),
        MoeAct::GeluTanh => {
            let c = (2.0f32 / std::f32::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        }
    }
}

/// Per-token routing: `(weights [T, k], experts [T, k])`.
fn route(d: MoeDims, logits: &[f32], norm_topk: bool) -> Result<(Vec<f32>, Vec<i64>), KernelError> {
    let (t, e, k) = (d.tokens, d.experts, d.top_k);
    let mut probs = vec![0.0f32; t * e];
    for (row, p) in logits.chunks_exact(e).zip(probs.chunks_exact_mut(e)) {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for (pi, &v) in p.iter_mut().zip(row) {
            *pi = ((v as f64 - m).exp() / s) as f32;
        }
    }
    let (mut w, mut ix) = (vec![0.0f32; t * k], vec![0i64; t * k]);
    topk::topk(&probs, e, k, &mut w, &mut ix, 1).map_err(|err| KernelError::new(OP, format!("routing: {}", err.message)))?;
    if norm_topk {
        for row in w.chunks_exact_mut(k) {
            let s = row.iter().map(|&v| v as f64).sum::<f64>() as f32;
            row.iter_mut().for_each(|v| *v /= s);
        }
    }
    Ok((w, ix))
}

/// `y [T, H] = moe(x [T, H], logits [T, E], w_gate [E, I, H], w_up [E, I, H], w_down [E, H, I])`.
#[allow(clippy::too_many_arguments)]
pub fn moe(
    d: MoeDims,
    x: &[f32],
    logits: &[f32],
    w_gate: &[f32],
    w_up: &[f32],
    w_down: &[f32],
    norm_topk: bool,
    act: MoeAct,
    y: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    let MoeDims { tokens: t, hidden: h, experts: e, inner: i, top_k: k } = d;
    let sizes = [("x", x.len(), t * h), ("logits", logits.len(), t * e), ("w_gate", w_gate.len(), e * i * h), ("w_up", w_up.len(), e * i * h)];
    for (what, got, want) in sizes.into_iter().chain([("w_down", w_down.len(), e * h * i), ("result", y.len(), t * h)]) {
        if got != want {
            return Err(KernelError::new(OP, format!("{what} has {got} elements, expected {want} for {d:?}")));
        }
    }
    if k == 0 || k > e {
        return Err(KernelError::new(OP, format!("top_k = {k} for {e} experts")));
    }
    y.iter_mut().for_each(|v| *v = 0.0);
    if t == 0 {
        return Ok(());
    }
    let (weights, experts) = route(d, logits, norm_topk)?;
    // Group the selections by expert (counting sort; tokens stay ascending).
    let mut start = vec![0usize; e + 1];
    for &ex in &experts {
        start[ex as usize + 1] += 1;
    }
    for j in 0..e {
        start[j + 1] += start[j];
    }
    let mut fill = start.clone();
    let mut order = vec![(0usize, 0.0f32); t * k];
    for (s, (&ex, &w)) in experts.iter().zip(&weights).enumerate() {
        let slot = &mut fill[ex as usize];
        order[*slot] = (s / k, w);
        *slot += 1;
    }
    let max_n = (0..e).map(|j| start[j + 1] - start[j]).max().unwrap_or(0);
    let (mut xe, mut g, mut u, mut ye) = (vec![0.0f32; max_n * h], vec![0.0f32; max_n * i], vec![0.0f32; max_n * i], vec![0.0f32; max_n * h]);
    for ex in 0..e {
        let group = &order[start[ex]..start[ex + 1]];
        let n = group.len();
        if n == 0 {
            continue;
        }
        for (r, &(tok, _)) in group.iter().enumerate() {
            xe[r * h..(r + 1) * h].copy_from_slice(&x[tok * h..(tok + 1) * h]);
        }
        let (wg, wu, wd) = (&w_gate[ex * i * h..(ex + 1) * i * h], &w_up[ex * i * h..(ex + 1) * i * h], &w_down[ex * h * i..(ex + 1) * h * i]);
        let within = |err: KernelError| KernelError::new(OP, format!("expert {ex}: {}: {}", err.op, err.message));
        gemm::linear(&xe[..n * h], n, h, wg, i, None, &mut g[..n * i], threads).map_err(within)?;
        gemm::linear(&xe[..n * h], n, h, wu, i, None, &mut u[..n * i], threads).map_err(within)?;
        for (gv, &uv) in g[..n * i].iter_mut().zip(&u[..n * i]) {
            *gv = activate(act, *gv) * uv;
        }
        gemm::linear(&g[..n * i], n, i, wd, h, None, &mut ye[..n * h], threads).map_err(within)?;
        for (r, &(tok, w)) in group.iter().enumerate() {
            for (o, &v) in y[tok * h..(tok + 1) * h].iter_mut().zip(&ye[r * h..(r + 1) * h]) {
                *o += w * v;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests/moe.rs"]
mod tests;
