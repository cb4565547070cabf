//! Flux: diffusers `FluxTransformer2DModel`
//! (models/transformers/transformer_flux.py) with `FluxTransformerBlock`,
//! `FluxSingleTransformerBlock`, `FluxAttention` / `FluxAttnProcessor`,
//! `FluxPosEmbed` (see [`crate::layers::rope`]), `AdaLayerNormZero`,
//! `AdaLayerNormZeroSingle`, `AdaLayerNormContinuous` (models/normalization.py)
//! and `CombinedTimestepGuidanceTextProjEmbeddings` /
//! `CombinedTimestepTextProjEmbeddings` (models/embeddings.py).
//!
//! The double/single-stream stack ([`mmdit_stack`]) and the output head
//! ([`output_head`]) are shared with LongCat-Image ([`crate::longcat`]),
//! whose blocks are the same modules under other class names.

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::embed::{timestep_mlp, timestep_sinusoid};
use crate::layers::rope::{apply_rotary_emb, pos_embed, RotaryPairs};
use crate::layers::{activation, feed_forward, gated, layer_norm_plain, linear, merge_heads, modulate, split_heads, unsqueeze1};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{DType, Dim, Role, UnaryOp};
use serde::Deserialize;

/// `config.json` of `FluxTransformer2DModel` (defaults as in diffusers).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d1")]
    pub patch_size: usize,
    #[serde(default = "d64")]
    pub in_channels: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    #[serde(default = "d19")]
    pub num_layers: usize,
    #[serde(default = "d38")]
    pub num_single_layers: usize,
    #[serde(default = "d128")]
    pub attention_head_dim: usize,
    #[serde(default = "d24")]
    pub num_attention_heads: usize,
    #[serde(default = "d4096")]
    pub joint_attention_dim: usize,
    #[serde(default = "d768")]
    pub pooled_projection_dim: usize,
    #[serde(default)]
    pub guidance_embeds: bool,
    #[serde(default = "axes")]
    pub axes_dims_rope: Vec<usize>,
}

fn d1() -> usize {
    1
}
fn d64() -> usize {
    64
}
fn d19() -> usize {
    19
}
fn d38() -> usize {
    38
}
fn d128() -> usize {
    128
}
fn d24() -> usize {
    24
}
fn d4096() -> usize {
    4096
}
fn d768() -> usize {
    768
}
pub(crate) fn axes() -> Vec<usize> {
    vec![16, 56, 56]
}

pub fn family() -> Family {
    Family { name: "flux", classes: &["FluxTransformer2DModel"], build, stage: "transformer" }
}

/// `FluxPosEmbed(theta=10000, ...)`.
pub const ROPE_THETA: f64 = 10000.0;
/// Epsilon of the q/k RMSNorms (`FluxAttention(eps=1e-6)` in both block kinds).
const QK_EPS: f64 = 1e-6;
/// Epsilon of every LayerNorm in the blocks and `norm_out`.
const LN_EPS: f64 = 1e-6;

/// Sizes of a Flux-style double/single-stream stack.
#[derive(Clone, Debug)]
pub struct MmDit {
    pub heads: usize,
    pub head_dim: usize,
    /// `inner_dim = heads · head_dim`.
    pub dim: usize,
    /// Single-block MLP width `int(dim · mlp_ratio)`, `mlp_ratio = 4`.
    pub mlp: usize,
    pub num_layers: usize,
    pub num_single_layers: usize,
    pub axes_dims_rope: Vec<usize>,
}

impl MmDit {
    /// Check the rope axes cover a head exactly (`cat` of per-axis tables
    /// must match `head_dim` in `apply_rotary_emb`).
    pub fn new(path: &str, heads: usize, head_dim: usize, num_layers: usize, num_single_layers: usize, axes_dims_rope: &[usize]) -> Result<MmDit> {
        if let Some(&odd) = axes_dims_rope.iter().find(|&&a| a % 2 != 0) {
            return Err(ImportError::Config {
                path: path.into(),
                field: "axes_dims_rope".into(),
                message: format!("{axes_dims_rope:?} has odd axis size {odd}; rotary axes need an even number of channels"),
            });
        }
        let sum: usize = axes_dims_rope.iter().sum();
        if sum != head_dim || axes_dims_rope.is_empty() {
            return Err(ImportError::Config {
                path: path.into(),
                field: "axes_dims_rope".into(),
                message: format!("{axes_dims_rope:?} sums to {sum}, but attention_head_dim is {head_dim}"),
            });
        }
        let dim = heads * head_dim;
        Ok(MmDit { heads, head_dim, dim, mlp: dim * 4, num_layers, num_single_layers, axes_dims_rope: axes_dims_rope.to_vec() })
    }
}

/// The token inputs every Flux-style model takes.
pub struct SeqInputs {
    /// `hidden_states [batch, img_seq, in_channels]`.
    pub hidden_states: V,
    /// `encoder_hidden_states [batch, txt_seq, joint_attention_dim]`.
    pub encoder_hidden_states: V,
}

/// Declare `hidden_states` and `encoder_hidden_states`.
pub fn seq_inputs(ctx: &mut Ctx, in_channels: usize, joint_dim: usize) -> Result<SeqInputs> {
    let b = Dim::sym("batch");
    let hidden_states = ctx.b.input("hidden_states", DType::F32, vec![b.clone(), Dim::sym("img_seq"), in_channels.into()])?;
    let encoder_hidden_states = ctx.b.input("encoder_hidden_states", DType::F32, vec![b, Dim::sym("txt_seq"), joint_dim.into()])?;
    Ok(SeqInputs { hidden_states, encoder_hidden_states })
}

/// Declare `img_ids [img_seq, n_axes]` and `txt_ids [txt_seq, n_axes]`
/// (2-D, shared by the batch) and build the rotary tables of
/// `cat(txt_ids, img_ids)` (text tokens first, as the joint attention).
pub fn rope_inputs(ctx: &mut Ctx, d: &MmDit) -> Result<(V, V)> {
    let n = d.axes_dims_rope.len();
    let img_ids = ctx.b.input("img_ids", DType::F32, vec![Dim::sym("img_seq"), n.into()])?;
    let txt_ids = ctx.b.input("txt_ids", DType::F32, vec![Dim::sym("txt_seq"), n.into()])?;
    ctx.scope("pos_embed");
    let ids = ctx.b.concat(&[txt_ids, img_ids], 0)?;
    pos_embed(ctx, ids, &d.axes_dims_rope, ROPE_THETA)
}

/// `timestep · 1000` as the model's forward does (after `.to(dtype)`).
pub fn times_1000(ctx: &mut Ctx, t: V) -> Result<V> {
    let t = if ctx.b.dtype(t) == DType::F32 { t } else { ctx.b.cast(t, DType::F32)? };
    Ok(ctx.b.mul_scalar(t, 1000.0)?)
}

/// `Timesteps(256, flip_sin_to_cos=True, shift=0)` then `TimestepEmbedding`
/// at `{p}` (`linear_1`, SiLU, `linear_2`), both to `dim`.
pub fn timestep_embedding(ctx: &mut Ctx, p: &str, proj_scope: &str, t: V, dim: usize) -> Result<V> {
    ctx.scope(proj_scope);
    let tp = timestep_sinusoid(ctx, t, 256, true, 0.0, 1.0, 10000.0)?;
    timestep_mlp(ctx, p, tp, dim, dim, "silu")
}

/// `PixArtAlphaTextProjection(act_fn="silu")` at `{p}`.
fn text_projection(ctx: &mut Ctx, p: &str, x: V, dim: usize) -> Result<V> {
    let h = linear(ctx, &format!("{p}.linear_1"), x, dim)?;
    let h = activation(ctx, "silu", h)?;
    linear(ctx, &format!("{p}.linear_2"), h, dim)
}

/// `RMSNorm(head_dim)` with its (required) weight at `{p}`, over the last
/// axis of `[B, H, S, head_dim]`.
fn qk_norm(ctx: &mut Ctx, p: &str, x: V, head_dim: usize) -> Result<V> {
    ctx.scope(p);
    let w = ctx.w(&format!("{p}.weight"), &[head_dim])?;
    Ok(ctx.b.rms_norm(x, Some(w), QK_EPS)?)
}

/// q, k, v of one stream of attention module `a`: projections
/// `{a}.{proj}`, heads split, q/k normalised by `{a}.{norms}`.
fn qkv(ctx: &mut Ctx, x: V, d: &MmDit, a: &str, proj: [&str; 3], norms: [&str; 2]) -> Result<[V; 3]> {
    let q = linear(ctx, &format!("{a}.{}", proj[0]), x, d.dim)?;
    let k = linear(ctx, &format!("{a}.{}", proj[1]), x, d.dim)?;
    let v = linear(ctx, &format!("{a}.{}", proj[2]), x, d.dim)?;
    let (q, k, v) = (split_heads(ctx, q, d.heads)?, split_heads(ctx, k, d.heads)?, split_heads(ctx, v, d.heads)?);
    let q = qk_norm(ctx, &format!("{a}.{}", norms[0]), q, d.head_dim)?;
    let k = qk_norm(ctx, &format!("{a}.{}", norms[1]), k, d.head_dim)?;
    Ok([q, k, v])
}

/// Projections and q/k norms of the image (or single-block) stream.
const IMG_QKV: ([&str; 3], [&str; 2]) = (["to_q", "to_k", "to_v"], ["norm_q", "norm_k"]);
/// Projections and q/k norms of the text stream of a double block.
const TXT_QKV: ([&str; 3], [&str; 2]) = (["add_q_proj", "add_k_proj", "add_v_proj"], ["norm_added_q", "norm_added_k"]);

/// Rotary embedding on q and k, then SDPA → `[B, S, dim]`.
fn rope_attention(ctx: &mut Ctx, p: &str, [q, k, v]: [V; 3], rope: (V, V)) -> Result<V> {
    ctx.scope(p);
    let q = apply_rotary_emb(ctx, q, rope.0, rope.1, RotaryPairs::Interleaved)?;
    let k = apply_rotary_emb(ctx, k, rope.0, rope.1, RotaryPairs::Interleaved)?;
    let a = ctx.b.attention(q, k, v, None, None, false)?;
    merge_heads(ctx, a)
}

/// `AdaLayerNormZero` at `{p}` (`linear` → 6 chunks): returns the
/// modulated `LayerNorm(x)` and `[gate_msa, shift_mlp, scale_mlp, gate_mlp]`.
fn ada_ln_zero(ctx: &mut Ctx, p: &str, x: V, silu_temb: V, dim: usize) -> Result<(V, [V; 4])> {
    let m = linear(ctx, &format!("{p}.linear"), silu_temb, 6 * dim)?;
    let c = ctx.b.chunk(m, 6, 1)?;
    ctx.scope(&format!("{p}.norm"));
    let n = layer_norm_plain(ctx, x, LN_EPS)?;
    let n = modulate(ctx, n, c[0], c[1])?;
    Ok((n, [c[2], c[3], c[4], c[5]]))
}

/// Gated FFN half of a double block: `x + gate · ff(LN(x)·(1+scale)+shift)`.
fn ff_residual(ctx: &mut Ctx, p: &str, norm: &str, x: V, [shift, scale, gate]: [V; 3], dim: usize) -> Result<V> {
    ctx.scope(norm);
    let n = layer_norm_plain(ctx, x, LN_EPS)?;
    let n = modulate(ctx, n, shift, scale)?;
    let f = feed_forward(ctx, p, n, 4 * dim, dim, "gelu-approximate")?;
    let f = gated(ctx, gate, f)?;
    Ok(ctx.b.add(x, f)?)
}

/// `FluxTransformerBlock` at `{p}`: joint attention over `[txt; img]`.
/// Returns `(txt, img)`. `first` marks the modulated image input.
#[allow(clippy::too_many_arguments)]
pub fn double_block(ctx: &mut Ctx, p: &str, img: V, txt: V, silu_temb: V, rope: (V, V), d: &MmDit, first: bool) -> Result<(V, V)> {
    let (n_img, [g_msa, sh_mlp, sc_mlp, g_mlp]) = ada_ln_zero(ctx, &format!("{p}.norm1"), img, silu_temb, d.dim)?;
    if first {
        ctx.role(n_img, Role::ModulatedInput);
    }
    let (n_txt, [cg_msa, csh_mlp, csc_mlp, cg_mlp]) = ada_ln_zero(ctx, &format!("{p}.norm1_context"), txt, silu_temb, d.dim)?;

    let a = format!("{p}.attn");
    let [iq, ik, iv] = qkv(ctx, n_img, d, &a, IMG_QKV.0, IMG_QKV.1)?;
    let [tq, tk, tv] = qkv(ctx, n_txt, d, &a, TXT_QKV.0, TXT_QKV.1)?;
    ctx.scope(&a);
    let q = ctx.b.concat(&[tq, iq], 2)?;
    let k = ctx.b.concat(&[tk, ik], 2)?;
    let v = ctx.b.concat(&[tv, iv], 2)?;
    let o = rope_attention(ctx, &a, [q, k, v], rope)?;
    let (ts, is) = (ctx.b.dim(txt, 1), ctx.b.dim(img, 1));
    let parts = ctx.b.split(o, 1, &[ts, is])?;
    let img_attn = linear(ctx, &format!("{a}.to_out.0"), parts[1], d.dim)?;
    let txt_attn = linear(ctx, &format!("{a}.to_add_out"), parts[0], d.dim)?;

    let ga = gated(ctx, g_msa, img_attn)?;
    let img = ctx.b.add(img, ga)?;
    let img = ff_residual(ctx, &format!("{p}.ff"), &format!("{p}.norm2"), img, [sh_mlp, sc_mlp, g_mlp], d.dim)?;

    let gc = gated(ctx, cg_msa, txt_attn)?;
    let txt = ctx.b.add(txt, gc)?;
    let txt = ff_residual(ctx, &format!("{p}.ff_context"), &format!("{p}.norm2_context"), txt, [csh_mlp, csc_mlp, cg_mlp], d.dim)?;
    Ok((txt, img))
}

/// `FluxSingleTransformerBlock` at `{p}` on the concatenated `[txt; img]`
/// stream: attention and `proj_mlp` in parallel, `proj_out` over their
/// concatenation. Returns `(txt, img)` split back. `first` marks the
/// modulated input (only when the stack has no double blocks).
#[allow(clippy::too_many_arguments)]
pub fn single_block(ctx: &mut Ctx, p: &str, img: V, txt: V, silu_temb: V, rope: (V, V), d: &MmDit, first: bool) -> Result<(V, V)> {
    let (ts, is) = (ctx.b.dim(txt, 1), ctx.b.dim(img, 1));
    ctx.scope(p);
    let x = ctx.b.concat(&[txt, img], 1)?;
    let m = linear(ctx, &format!("{p}.norm.linear"), silu_temb, 3 * d.dim)?;
    let c = ctx.b.chunk(m, 3, 1)?;
    ctx.scope(&format!("{p}.norm.norm"));
    let n = layer_norm_plain(ctx, x, LN_EPS)?;
    let n = modulate(ctx, n, c[0], c[1])?;
    if first {
        ctx.role(n, Role::ModulatedInput);
    }

    let mlp = linear(ctx, &format!("{p}.proj_mlp"), n, d.mlp)?;
    let mlp = activation(ctx, "gelu-approximate", mlp)?;
    let a = format!("{p}.attn");
    let qkv = qkv(ctx, n, d, &a, IMG_QKV.0, IMG_QKV.1)?;
    let attn = rope_attention(ctx, &a, qkv, rope)?;
    ctx.scope(&format!("{p}.proj_out"));
    let cat = ctx.b.concat(&[attn, mlp], 2)?;
    let o = linear(ctx, &format!("{p}.proj_out"), cat, d.dim)?;
    let o = gated(ctx, c[2], o)?;
    let x = ctx.b.add(x, o)?;
    let parts = ctx.b.split(x, 1, &[ts, is])?;
    Ok((parts[0], parts[1]))
}

/// The block stack: `num_layers` double blocks (global block index `i`),
/// then `num_single_layers` single blocks (index `num_layers + j`).
/// `temb` is the conditioning embedding (`[B, dim]`). Returns the image
/// stream leaving the stack.
pub fn mmdit_stack(ctx: &mut Ctx, d: &MmDit, img: V, txt: V, temb: V, rope: (V, V)) -> Result<V> {
    // Both streams are residual streams of the stack (a block-skipping
    // cache reuses the residual of each).
    ctx.role(img, Role::ResidualIn);
    ctx.role(txt, Role::ResidualIn);
    let (mut img, mut txt) = (img, txt);
    for i in 0..d.num_layers {
        ctx.block(Some(i));
        let p = format!("transformer_blocks.{i}");
        ctx.scope(&p);
        // Each AdaLayerNorm applies its own SiLU; one node serves them all.
        let st = ctx.b.unary(UnaryOp::Silu, temb)?;
        (txt, img) = double_block(ctx, &p, img, txt, st, rope, d, i == 0)?;
        ctx.inter(&format!("{p}.0"), txt);
        ctx.inter(&format!("{p}.1"), img);
    }
    for j in 0..d.num_single_layers {
        ctx.block(Some(d.num_layers + j));
        let p = format!("single_transformer_blocks.{j}");
        ctx.scope(&p);
        let st = ctx.b.unary(UnaryOp::Silu, temb)?;
        (txt, img) = single_block(ctx, &p, img, txt, st, rope, d, d.num_layers == 0 && j == 0)?;
        ctx.inter(&format!("{p}.0"), txt);
        ctx.inter(&format!("{p}.1"), img);
    }
    ctx.block(None);
    ctx.role(img, Role::ResidualOut);
    // After single blocks both streams are results of one split node, which
    // carries the role for both.
    if txt.node != img.node {
        ctx.role(txt, Role::ResidualOut);
    }
    Ok(img)
}

/// `norm_out = AdaLayerNormContinuous(dim, dim, elementwise_affine=False,
/// eps=1e-6)` (its linear chunks as **scale, shift**) then `proj_out`.
pub fn output_head(ctx: &mut Ctx, h: V, temb: V, dim: usize, out: usize) -> Result<V> {
    ctx.scope("norm_out");
    let st = ctx.b.unary(UnaryOp::Silu, temb)?;
    let m = linear(ctx, "norm_out.linear", st, 2 * dim)?;
    let c = ctx.b.chunk(m, 2, 1)?;
    ctx.scope("norm_out.norm");
    let n = layer_norm_plain(ctx, h, LN_EPS)?;
    let sc = unsqueeze1(ctx, c[0])?;
    let sc1 = ctx.b.add_scalar(sc, 1.0)?;
    let sh = unsqueeze1(ctx, c[1])?;
    let n = ctx.b.mul(n, sc1)?;
    let n = ctx.b.add(n, sh)?;
    linear(ctx, "proj_out", n, out)
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let path = raw.path.display().to_string();
    let d = MmDit::new(&path, cfg.num_attention_heads, cfg.attention_head_dim, cfg.num_layers, cfg.num_single_layers, &cfg.axes_dims_rope)?;
    let out_ch = cfg.out_channels.unwrap_or(cfg.in_channels);
    let batch = Dim::sym("batch");

    let seq = seq_inputs(ctx, cfg.in_channels, cfg.joint_attention_dim)?;
    let pooled = ctx.b.input("pooled_projections", DType::F32, vec![batch.clone(), cfg.pooled_projection_dim.into()])?;
    let t = ctx.b.input("timestep", DType::F32, vec![batch.clone()])?;
    let rope = rope_inputs(ctx, &d)?;
    let guidance = if cfg.guidance_embeds { Some(ctx.b.input("guidance", DType::F32, vec![batch])?) } else { None };

    let img = linear(ctx, "x_embedder", seq.hidden_states, d.dim)?;

    // time_text_embed: timestep (+ guidance) embedding + pooled text projection.
    let t = times_1000(ctx, t)?;
    let mut temb = timestep_embedding(ctx, "time_text_embed.timestep_embedder", "time_text_embed.time_proj", t, d.dim)?;
    if let Some(g) = guidance {
        let g = times_1000(ctx, g)?;
        let ge = timestep_embedding(ctx, "time_text_embed.guidance_embedder", "time_text_embed.time_proj", g, d.dim)?;
        temb = ctx.b.add(temb, ge)?;
    }
    let pe = text_projection(ctx, "time_text_embed.text_embedder", pooled, d.dim)?;
    ctx.scope("time_text_embed");
    let temb = ctx.b.add(temb, pe)?;
    ctx.role(temb, Role::TimestepEmbedding);

    let txt = linear(ctx, "context_embedder", seq.encoder_hidden_states, d.dim)?;
    let h = mmdit_stack(ctx, &d, img, txt, temb, rope)?;
    let o = output_head(ctx, h, temb, d.dim, cfg.patch_size * cfg.patch_size * out_ch)?;
    ctx.b.output("sample", o);
    Ok(())
}
