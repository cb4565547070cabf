//! Sparse MoE MLP of Qwen3-MoE: transformers `Qwen3MoeSparseMoeBlock`
//! with `Qwen3MoeTopKRouter` and `Qwen3MoeExperts`
//! (models/qwen3_moe/modeling_qwen3_moe.py); the optional shared expert
//! follows `Qwen2MoeSparseMoeBlock` (models/qwen2_moe/modeling_qwen2_moe.py).
//!
//! On the flattened tokens `x [T, H]` (`T = batch·seq`):
//!
//! * router: `logits = x · gateᵀ` (`mlp.gate.weight [E, H]`), `p =
//!   softmax(logits)`, `(top_p, top_i) = topk(p, k)`, renormalised to sum 1
//!   when `norm_topk_prob`;
//! * dense routing weights `r [T, E]`: `r[t, e] = Σ_k (top_i[t, k] == e) ?
//!   top_p[t, k] : 0` (compare / where / reduce_sum), zero for experts a
//!   token did not select;
//! * `y = Σ_e r[:, e] · expert_e(x)` in expert order, each expert the SwiGLU
//!   MLP `mlp.experts.{e}.{gate,up,down}_proj`, run densely on every token.
//!
//! This is the unfused "before" form: every expert runs on every token and
//! the unselected ones are weighted by 0 (the same sum as the reference's
//! `index_add_` over the selected experts, in the same order). The
//! `moe-fusion` pass (`passes/src/moe_fusion.rs`, first in `-O2`) recognises
//! this pattern and replaces it by one `moe` op that computes only the
//! selected experts.

use super::config::MoeSpec;
use super::decoder::gated_mlp;
use crate::ctx::{Ctx, V};
use crate::error::Result;
use crate::layers::linear_nobias;
use omnic_ir::{CmpOp, DType, Dim, ReduceOp, UnaryOp};

/// Dense routing weights `[T, E]` from the router logits `[T, E]`.
pub fn routing_weights(ctx: &mut Ctx, logits: V, moe: &MoeSpec) -> Result<V> {
    let t = ctx.b.dim(logits, 0);
    let k = moe.top_k;
    let probs = ctx.b.softmax(logits, -1)?;
    let (mut top_p, top_i) = ctx.b.topk(probs, k)?;
    if moe.norm_topk_prob {
        let s = ctx.b.reduce(ReduceOp::Sum, top_p, &[-1], true)?;
        top_p = ctx.b.div(top_p, s)?;
    }
    let ids = ctx.b.iota(Dim::from(moe.experts), DType::I64)?;
    let ids = ctx.b.reshape(ids, vec![Dim::from(1usize), Dim::from(1usize), Dim::from(moe.experts)])?;
    let top_i = ctx.b.reshape(top_i, vec![t.clone(), Dim::from(k), Dim::from(1usize)])?;
    let top_p = ctx.b.reshape(top_p, vec![t, Dim::from(k), Dim::from(1usize)])?;
    let hit = ctx.b.compare(CmpOp::Eq, top_i, ids)?;
    let zero = ctx.b.scalar(DType::F32, 0.0)?;
    let per_slot = ctx.b.where_(hit, top_p, zero)?;
    Ok(ctx.b.reduce(ReduceOp::Sum, per_slot, &[1], false)?)
}

/// The MoE block of module path `p` on `x [B, S, H]`: its output
/// `[B, S, H]` and the raw router logits `[B·S, E]`.
pub fn sparse_moe(ctx: &mut Ctx, p: &str, x: V, hidden: usize, moe: &MoeSpec, act: UnaryOp) -> Result<(V, V)> {
    let s = ctx.b.shape(x);
    ctx.scope(p);
    let flat = ctx.b.reshape(x, vec![s[0].mul(&s[1]), Dim::from(hidden)])?;
    let logits = linear_nobias(ctx, &format!("{p}.gate"), flat, moe.experts)?;
    let route = routing_weights(ctx, logits, moe)?;
    let mut acc: Option<V> = None;
    for e in 0..moe.experts {
        let y = gated_mlp(ctx, &format!("{p}.experts.{e}"), flat, moe.intermediate, hidden, act)?;
        ctx.scope(&format!("{p}.experts.{e}"));
        let w = ctx.b.slice(route, -1, Dim::from(e), Dim::from(e + 1))?;
        let y = ctx.b.mul(y, w)?;
        acc = Some(match acc {
            Some(a) => ctx.b.add(a, y)?,
            None => y,
        });
    }
    let mut out = acc.ok_or_else(|| omnic_ir::IrError::Graph(format!("{p}: a sparse MoE block needs at least one expert")))?;
    if let Some(inner) = moe.shared {
        let sh = gated_mlp(ctx, &format!("{p}.shared_expert"), flat, inner, hidden, act)?;
        let g = linear_nobias(ctx, &format!("{p}.shared_expert_gate"), flat, 1)?;
        let g = ctx.b.unary(UnaryOp::Sigmoid, g)?;
        let sh = ctx.b.mul(g, sh)?;
        out = ctx.b.add(out, sh)?;
    }
    ctx.scope(p);
    let out = ctx.b.reshape(out, s)?;
    Ok((out, logits))
}
