//! The decoder stack shared by the Qwen causal LMs: `Qwen2Model` /
//! `Qwen3Model` / `Qwen3MoeModel` and the LM head (transformers
//! models/qwen2/modeling_qwen2.py, qwen3/modeling_qwen3.py,
//! qwen3_moe/modeling_qwen3_moe.py): token embedding, pre-norm decoder
//! layers (RMSNorm → GQA self-attention with rotate-half RoPE → residual,
//! RMSNorm → SwiGLU MLP or sparse MoE → residual), final RMSNorm, LM head
//! (`model.embed_tokens.weight` when `tie_word_embeddings`).
//!
//! Positions are a graph value: [`forward`] takes `positions` (i64 `[seq]`)
//! and derives the rotary tables and the sliding-window mask from it, and
//! attention uses the IR's bottom-right-aligned causal mask. The KV-cache
//! stages ([`super::decode`]) go through [`forward_kv`]: with [`Kv::Emit`]
//! every layer also returns its rotated keys and values of the new
//! positions as `[B, S, kv_heads, D]`; with [`Kv::Past`] the cached ones
//! (`[B, past, kv_heads, D]`) are concatenated in front of them between the
//! rotary step and the attention op.

use super::config::{Mlp, Spec};
use super::moe::sparse_moe;
use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::rope::{apply_rotary_emb, RotaryPairs};
use crate::layers::{linear_nobias, rms_norm};
use omnic_ir::{BinaryOp, CmpOp, DType, Dim, IrError, Literal, Role, UnaryOp};

/// `inv_freq = 1 / θ^(2j/d)` for `j < d/2`, in f32 arithmetic as
/// `compute_default_rope_parameters` does (`arange(0, d, 2, dtype=float)`).
pub fn inv_freq(head_dim: usize, theta: f64) -> Vec<f64> {
    let base = theta as f32;
    (0..head_dim / 2).map(|j| (1.0f32 / base.powf((2 * j) as f32 / head_dim as f32)) as f64).collect()
}

/// `Qwen*RotaryEmbedding(x, positions)` for integer `positions [..., S]`:
/// `(cos, sin)`, each f32 `[..., S, head_dim]`, of `emb = cat(freqs, freqs)`
/// with `freqs = positions.float() · inv_freq` (one f32 product, as there).
pub fn rope_tables(ctx: &mut Ctx, positions: V, head_dim: usize, theta: f64) -> Result<(V, V)> {
    let pos = ctx.b.cast(positions, DType::F32)?;
    let mut s = ctx.b.shape(pos);
    s.push(Dim::from(1usize));
    let pos = ctx.b.reshape(pos, s)?;
    let f = inv_freq(head_dim, theta);
    let freqs_c = ctx.b.constant(Literal { dtype: DType::F32, shape: vec![f.len()], values: f })?;
    let freqs = ctx.b.mul(pos, freqs_c)?;
    let emb = ctx.b.concat(&[freqs, freqs], -1)?;
    let cos = ctx.b.unary(UnaryOp::Cos, emb)?;
    let sin = ctx.b.unary(UnaryOp::Sin, emb)?;
    Ok((cos, sin))
}

/// Additive `[Sq, Sk]` mask of transformers' `sliding_window_overlay`:
/// key `j` is visible to query `i` when `q_pos[i] - k_pos[j] < window`
/// (0), else `f32::MIN`; causality comes from the attention op.
pub fn sliding_window_mask(ctx: &mut Ctx, q_pos: V, k_pos: V, window: usize) -> Result<V> {
    let sq = ctx.b.dim(q_pos, 0);
    let sk = ctx.b.dim(k_pos, 0);
    let q = ctx.b.reshape(q_pos, vec![sq, Dim::from(1usize)])?;
    let k = ctx.b.reshape(k_pos, vec![Dim::from(1usize), sk])?;
    let dist = ctx.b.binary(BinaryOp::Sub, q, k)?;
    let w = ctx.b.scalar(ctx.b.dtype(dist), window as f64)?;
    let inside = ctx.b.compare(CmpOp::Lt, dist, w)?;
    let zero = ctx.b.scalar(DType::F32, 0.0)?;
    let min = ctx.b.scalar(DType::F32, f32::MIN as f64)?;
    Ok(ctx.b.where_(inside, zero, min)?)
}

/// `[B, S, n·D] → [B, S, n, D]`.
fn heads_view(ctx: &mut Ctx, x: V, n: usize, d: usize) -> Result<V> {
    let s = ctx.b.shape(x);
    Ok(ctx.b.reshape(x, vec![s[0].clone(), s[1].clone(), Dim::from(n), Dim::from(d)])?)
}

/// `Linear` with a bias exactly when `bias` (a required weight then).
fn proj(ctx: &mut Ctx, p: &str, x: V, out: usize, bias: bool) -> Result<V> {
    if bias {
        let inp = crate::layers::last_dim(ctx, x)?;
        ctx.scope(p);
        let w = ctx.w(&format!("{p}.weight"), &[out, inp])?;
        let b = ctx.w(&format!("{p}.bias"), &[out])?;
        Ok(ctx.b.linear(x, w, Some(b))?)
    } else {
        linear_nobias(ctx, p, x, out)
    }
}

/// What a layer does with its keys and values.
#[derive(Clone, Copy, Debug)]
pub enum Kv {
    /// Plain forward: nothing kept.
    None,
    /// Return the new positions' keys and values (prefill).
    Emit,
    /// Attend over these cached keys / values `[B, past, kv_heads, D]`
    /// followed by the new ones, and return the new ones (one decode step).
    Past(V, V),
}

/// The outputs of [`forward_kv`].
pub struct Decoded {
    /// `[B, S, vocab]` (`[B, 1, vocab]` with `last_only`).
    pub logits: V,
    /// `[B·S, experts]` per MoE layer, in layer order.
    pub router_logits: Vec<V>,
    /// Per layer, the new positions' keys and values `[B, S, kv_heads, D]`
    /// (empty for [`Kv::None`]).
    pub kv: Vec<(V, V)>,
}

/// `Qwen*Attention` of module path `p` on `x [B, S, hidden]` with rotary
/// tables `(cos, sin) [S, D]` and an optional additive mask.
pub fn self_attention(ctx: &mut Ctx, p: &str, x: V, spec: &Spec, rope: (V, V), mask: Option<V>) -> Result<V> {
    Ok(self_attention_kv(ctx, p, x, spec, rope, mask, Kv::None)?.0)
}

/// [`self_attention`] with a key/value cache mode; returns the output and,
/// unless `kv` is [`Kv::None`], the new keys and values `[B, S, kv_heads, D]`.
pub fn self_attention_kv(ctx: &mut Ctx, p: &str, x: V, spec: &Spec, rope: (V, V), mask: Option<V>, kv: Kv) -> Result<(V, Option<(V, V)>)> {
    let (h, kvh, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let q = proj(ctx, &format!("{p}.q_proj"), x, h * d, spec.qkv_bias)?;
    let k = proj(ctx, &format!("{p}.k_proj"), x, kvh * d, spec.qkv_bias)?;
    let v = proj(ctx, &format!("{p}.v_proj"), x, kvh * d, spec.qkv_bias)?;
    let mut q = heads_view(ctx, q, h, d)?;
    let mut k = heads_view(ctx, k, kvh, d)?;
    let v = heads_view(ctx, v, kvh, d)?;
    if spec.qk_norm {
        // Qwen3: RMSNorm over each head's channels, before the rotation.
        q = rms_norm(ctx, &format!("{p}.q_norm"), q, spec.eps)?;
        k = rms_norm(ctx, &format!("{p}.k_norm"), k, spec.eps)?;
    }
    ctx.scope(p);
    let q = ctx.b.transpose(q, &[0, 2, 1, 3])?;
    let k = ctx.b.transpose(k, &[0, 2, 1, 3])?;
    let v = ctx.b.transpose(v, &[0, 2, 1, 3])?;
    let q = apply_rotary_emb(ctx, q, rope.0, rope.1, RotaryPairs::Halves)?;
    let k = apply_rotary_emb(ctx, k, rope.0, rope.1, RotaryPairs::Halves)?;
    let (k, v, new) = match kv {
        Kv::None => (k, v, None),
        Kv::Emit | Kv::Past(..) => {
            let kn = ctx.b.transpose(k, &[0, 2, 1, 3])?;
            let vn = ctx.b.transpose(v, &[0, 2, 1, 3])?;
            match kv {
                Kv::Past(pk, pv) => {
                    let pk = ctx.b.transpose(pk, &[0, 2, 1, 3])?;
                    let pv = ctx.b.transpose(pv, &[0, 2, 1, 3])?;
                    let k = ctx.b.concat(&[pk, k], 2)?;
                    let v = ctx.b.concat(&[pv, v], 2)?;
                    (k, v, Some((kn, vn)))
                }
                _ => (k, v, Some((kn, vn))),
            }
        }
    };
    // GQA: the attention op maps query head i to key/value head i / (h / kvh),
    // as `repeat_kv` does; scale 1/√D; causal.
    let a = ctx.b.attention(q, k, v, mask, None, true)?;
    let a = crate::layers::merge_heads(ctx, a)?;
    Ok((proj(ctx, &format!("{p}.o_proj"), a, spec.hidden, spec.o_bias)?, new))
}

/// `Qwen*MLP`: `down_proj(act(gate_proj(x)) · up_proj(x))`.
pub fn gated_mlp(ctx: &mut Ctx, p: &str, x: V, inner: usize, out: usize, act: UnaryOp) -> Result<V> {
    let g = linear_nobias(ctx, &format!("{p}.gate_proj"), x, inner)?;
    let u = linear_nobias(ctx, &format!("{p}.up_proj"), x, inner)?;
    let g = ctx.b.unary(act, g)?;
    let m = ctx.b.mul(g, u)?;
    linear_nobias(ctx, &format!("{p}.down_proj"), m, out)
}

/// The whole causal LM on `ids [B, S]` at `positions [S]`: returns the
/// logits `[B, S, vocab]` and the router logits `[B·S, experts]` of every
/// MoE layer, in layer order.
pub fn forward(ctx: &mut Ctx, spec: &Spec, ids: V, positions: V) -> Result<(V, Vec<V>)> {
    let d = forward_kv(ctx, spec, ids, positions, positions, &vec![Kv::None; spec.layers], false)?;
    Ok((d.logits, d.router_logits))
}

/// The causal LM on `ids [B, S]` at `positions [S]` with key positions
/// `k_positions [Sk]` (for the sliding-window masks: `positions` itself,
/// or the cached positions followed by them), one [`Kv`] per layer, and
/// with `last_only` the final norm and LM head on the last position only.
pub fn forward_kv(ctx: &mut Ctx, spec: &Spec, ids: V, positions: V, k_positions: V, kv: &[Kv], last_only: bool) -> Result<Decoded> {
    if kv.len() != spec.layers {
        return Err(ImportError::Ir(IrError::Graph(format!("{} cache modes for {} layers", kv.len(), spec.layers))));
    }
    ctx.scope("model.embed_tokens");
    let table = ctx.w("model.embed_tokens.weight", &[spec.vocab, spec.hidden])?;
    let mut h = ctx.b.gather(table, ids, 0)?;
    ctx.inter("model.embed_tokens.0", h);
    ctx.role(h, Role::ResidualIn);

    ctx.scope("model.rotary_emb");
    let rope = rope_tables(ctx, positions, spec.head_dim, spec.rope_theta)?;
    // One additive mask per distinct sliding window, shared by its layers.
    let mut masks: Vec<(usize, V)> = Vec::new();
    for w in spec.windows.iter().flatten() {
        if !masks.iter().any(|(x, _)| x == w) {
            ctx.scope("model.sliding_window_mask");
            masks.push((*w, sliding_window_mask(ctx, positions, k_positions, *w)?));
        }
    }
    let mut router_logits = Vec::new();
    let mut new_kv = Vec::new();
    for i in 0..spec.layers {
        let p = format!("model.layers.{i}");
        ctx.block(Some(i));
        let mask = spec.windows[i].and_then(|w| masks.iter().find(|(x, _)| *x == w).map(|(_, m)| *m));
        let n = rms_norm(ctx, &format!("{p}.input_layernorm"), h, spec.eps)?;
        let (a, new) = self_attention_kv(ctx, &format!("{p}.self_attn"), n, spec, rope, mask, kv[i])?;
        new_kv.extend(new);
        h = ctx.b.add(h, a)?;
        let n = rms_norm(ctx, &format!("{p}.post_attention_layernorm"), h, spec.eps)?;
        let m = match (&spec.mlps[i], &spec.moe) {
            (Mlp::Sparse, Some(moe)) => {
                let (m, logits) = sparse_moe(ctx, &format!("{p}.mlp"), n, spec.hidden, moe, spec.act)?;
                router_logits.push(logits);
                m
            }
            (Mlp::Sparse, None) => return Err(ImportError::Ir(IrError::Graph(format!("layer {i} is sparse but no MoE settings were resolved")))),
            (Mlp::Dense(inner), _) => gated_mlp(ctx, &format!("{p}.mlp"), n, *inner, spec.hidden, spec.act)?,
        };
        ctx.scope(&p);
        h = ctx.b.add(h, m)?;
        ctx.inter(&format!("model.layers.{i}.0"), h);
    }
    ctx.block(None);
    ctx.role(h, Role::ResidualOut);

    let h = if last_only {
        ctx.scope("model.norm");
        let s = ctx.b.dim(h, 1);
        let first = s.add(&Dim::from(-1i64));
        ctx.b.slice(h, 1, first, s)?
    } else {
        h
    };
    let h = rms_norm(ctx, "model.norm", h, spec.eps)?;
    ctx.inter("model.norm.0", h);
    let logits = if spec.tie_embeddings {
        ctx.scope("lm_head");
        ctx.b.linear(h, table, None)?
    } else {
        linear_nobias(ctx, "lm_head", h, spec.vocab)?
    };
    Ok(Decoded { logits, router_logits, kv: new_kv })
}
