//! FLUX.2: diffusers `Flux2Transformer2DModel`
//! (models/transformers/transformer_flux2.py) with `Flux2TransformerBlock`,
//! `Flux2SingleTransformerBlock` (`Flux2ParallelSelfAttention`),
//! `Flux2FeedForward` / `Flux2SwiGLU`, `Flux2Modulation`, `Flux2PosEmbed`,
//! `Flux2TimestepGuidanceEmbeddings` and `AdaLayerNormContinuous`
//! (models/normalization.py).
//!
//! Differences from FLUX.1 that shape the graph:
//! * one modulation per stream type, shared by every block
//!   (`double_stream_modulation_img/_txt`, `single_stream_modulation`);
//! * no biases anywhere, SwiGLU MLPs whose *first* half is the gate;
//! * single blocks carry one `[text; image]` stream and fuse the attention
//!   and MLP projections (`to_qkv_mlp_proj`, `to_out`);
//! * 4-axis int64 position ids (`img_ids [N, 4]`, `txt_ids [T, 4]`) with
//!   `rope_theta` from the config; the tables are computed in the graph, so
//!   `img_seq` / `txt_seq` stay symbolic.
//!
//! Only the plain forward is built (no reference-image KV cache modes).

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::embed::{timestep_mlp, timestep_sinusoid};
use crate::layers::rope::{apply_rotary_emb, pos_embed, RotaryPairs};
use crate::layers::{gated, layer_norm_plain, linear, merge_heads, modulate, rms_norm, split_heads};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{DType, Dim, Role, UnaryOp};
use serde::Deserialize;

/// `config.json` of `Flux2Transformer2DModel` (defaults as in diffusers).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d1")]
    pub patch_size: usize,
    #[serde(default = "d128")]
    pub in_channels: usize,
    pub out_channels: Option<usize>,
    #[serde(default = "d8")]
    pub num_layers: usize,
    #[serde(default = "d48")]
    pub num_single_layers: usize,
    #[serde(default = "d128")]
    pub attention_head_dim: usize,
    #[serde(default = "d48")]
    pub num_attention_heads: usize,
    #[serde(default = "d15360")]
    pub joint_attention_dim: usize,
    #[serde(default = "d256")]
    pub timestep_guidance_channels: usize,
    #[serde(default = "mlp3")]
    pub mlp_ratio: f64,
    #[serde(default = "axes")]
    pub axes_dims_rope: Vec<usize>,
    #[serde(default = "theta")]
    pub rope_theta: f64,
    #[serde(default = "eps6")]
    pub eps: f64,
    #[serde(default = "yes")]
    pub guidance_embeds: bool,
}

fn d1() -> usize {
    1
}
fn d8() -> usize {
    8
}
fn d48() -> usize {
    48
}
fn d128() -> usize {
    128
}
fn d256() -> usize {
    256
}
fn d15360() -> usize {
    15360
}
fn mlp3() -> f64 {
    3.0
}
fn axes() -> Vec<usize> {
    vec![32, 32, 32, 32]
}
fn theta() -> f64 {
    2000.0
}
fn eps6() -> f64 {
    1e-6
}
fn yes() -> bool {
    true
}

pub fn family() -> Family {
    Family { name: "flux2", classes: &["Flux2Transformer2DModel"], build, stage: "transformer" }
}

/// Dimensions derived from the config, checked once.
struct Dims {
    heads: usize,
    dim: usize,
    /// `int(dim · mlp_ratio)`: hidden width of every SwiGLU MLP.
    mlp_hidden: usize,
    eps: f64,
}

fn config_error(raw: &RawConfig, field: &str, message: String) -> ImportError {
    ImportError::Config { path: raw.path.display().to_string(), field: field.into(), message }
}

fn check(raw: &RawConfig, cfg: &Config) -> Result<Dims> {
    let rope: usize = cfg.axes_dims_rope.iter().sum();
    if rope != cfg.attention_head_dim {
        return Err(config_error(
            raw,
            "axes_dims_rope",
            format!("{:?} sums to {rope} but attention_head_dim is {}", cfg.axes_dims_rope, cfg.attention_head_dim),
        ));
    }
    if let Some(d) = cfg.axes_dims_rope.iter().find(|d| *d % 2 != 0) {
        return Err(config_error(raw, "axes_dims_rope", format!("axis size {d} is odd; rotary axes need an even number of channels")));
    }
    if cfg.patch_size == 0 {
        return Err(config_error(raw, "patch_size", "must be at least 1".into()));
    }
    if cfg.mlp_ratio.is_nan() || cfg.mlp_ratio <= 0.0 {
        return Err(config_error(raw, "mlp_ratio", format!("{} is not a positive ratio", cfg.mlp_ratio)));
    }
    let dim = cfg.num_attention_heads * cfg.attention_head_dim;
    // Python `int(dim * mlp_ratio)` truncates.
    let mlp_hidden = (dim as f64 * cfg.mlp_ratio) as usize;
    Ok(Dims { heads: cfg.num_attention_heads, dim, mlp_hidden, eps: cfg.eps })
}

/// `Flux2TimestepGuidanceEmbeddings`: sinusoid (`flip_sin_to_cos`, shift 0)
/// of `t · 1000` through `timestep_embedder`, plus the same for guidance.
fn time_guidance_embed(ctx: &mut Ctx, t: V, guidance: Option<V>, channels: usize, dim: usize) -> Result<V> {
    let p = "time_guidance_embed";
    ctx.scope(&format!("{p}.time_proj"));
    let ts = ctx.b.mul_scalar(t, 1000.0)?;
    let tp = timestep_sinusoid(ctx, ts, channels, true, 0.0, 1.0, 10000.0)?;
    let mut temb = timestep_mlp(ctx, &format!("{p}.timestep_embedder"), tp, dim, dim, "silu")?;
    if let Some(g) = guidance {
        ctx.scope(&format!("{p}.time_proj"));
        let gs = ctx.b.mul_scalar(g, 1000.0)?;
        let gp = timestep_sinusoid(ctx, gs, channels, true, 0.0, 1.0, 10000.0)?;
        let gemb = timestep_mlp(ctx, &format!("{p}.guidance_embedder"), gp, dim, dim, "silu")?;
        temb = ctx.b.add(temb, gemb)?;
    }
    Ok(temb)
}

/// `Flux2Modulation`: `linear(silu(temb))` split into `3 · sets` vectors `[B, D]`.
fn modulation(ctx: &mut Ctx, p: &str, act: V, dim: usize, sets: usize) -> Result<Vec<V>> {
    let m = linear(ctx, &format!("{p}.linear"), act, 3 * sets * dim)?;
    Ok(ctx.b.chunk(m, 3 * sets, -1)?)
}

/// `Flux2SwiGLU`: `silu(x[..., :h]) · x[..., h:]` (the first half gates).
fn swiglu(ctx: &mut Ctx, gate: V, up: V) -> Result<V> {
    let g = ctx.b.unary(UnaryOp::Silu, gate)?;
    Ok(ctx.b.mul(g, up)?)
}

/// `Flux2FeedForward`: `linear_out(swiglu(linear_in(x)))`.
fn feed_forward(ctx: &mut Ctx, p: &str, x: V, d: &Dims) -> Result<V> {
    let h = linear(ctx, &format!("{p}.linear_in"), x, 2 * d.mlp_hidden)?;
    let parts = ctx.b.chunk(h, 2, -1)?;
    let h = swiglu(ctx, parts[0], parts[1])?;
    linear(ctx, &format!("{p}.linear_out"), h, d.dim)
}

/// `[B, S, H·Dh] → [B, H, S, Dh]` followed by the per-head RMSNorm `{p}`.
fn heads_normed(ctx: &mut Ctx, p: &str, x: V, d: &Dims) -> Result<V> {
    let x = split_heads(ctx, x, d.heads)?;
    rms_norm(ctx, p, x, d.eps)
}

/// `x + gate[:, None] · y`.
fn gated_add(ctx: &mut Ctx, x: V, gate: V, y: V) -> Result<V> {
    let g = gated(ctx, gate, y)?;
    Ok(ctx.b.add(x, g)?)
}

/// `norm(x) · (1 + scale) + shift` with a LayerNorm without affine.
fn norm_modulate(ctx: &mut Ctx, p: &str, x: V, shift: V, scale: V, eps: f64) -> Result<V> {
    ctx.scope(p);
    let n = layer_norm_plain(ctx, x, eps)?;
    modulate(ctx, n, shift, scale)
}

/// The rotary tables of the joint `[text; image]` sequence.
struct Rope {
    cos: V,
    sin: V,
}

/// `Flux2TransformerBlock` `i`: returns `(txt, img)`.
#[allow(clippy::too_many_arguments)]
fn double_block(ctx: &mut Ctx, i: usize, img: V, txt: V, m_img: &[V], m_txt: &[V], rope: &Rope, d: &Dims) -> Result<(V, V)> {
    let bp = format!("transformer_blocks.{i}");
    let n_img = norm_modulate(ctx, &format!("{bp}.norm1"), img, m_img[0], m_img[1], d.eps)?;
    if i == 0 {
        ctx.role(n_img, Role::ModulatedInput);
    }
    let n_txt = norm_modulate(ctx, &format!("{bp}.norm1_context"), txt, m_txt[0], m_txt[1], d.eps)?;

    // Joint attention: text tokens first, then image tokens.
    let ap = format!("{bp}.attn");
    let q = linear(ctx, &format!("{ap}.to_q"), n_img, d.dim)?;
    let k = linear(ctx, &format!("{ap}.to_k"), n_img, d.dim)?;
    let v = linear(ctx, &format!("{ap}.to_v"), n_img, d.dim)?;
    let cq = linear(ctx, &format!("{ap}.add_q_proj"), n_txt, d.dim)?;
    let ck = linear(ctx, &format!("{ap}.add_k_proj"), n_txt, d.dim)?;
    let cv = linear(ctx, &format!("{ap}.add_v_proj"), n_txt, d.dim)?;
    let q = heads_normed(ctx, &format!("{ap}.norm_q"), q, d)?;
    let k = heads_normed(ctx, &format!("{ap}.norm_k"), k, d)?;
    let v = split_heads(ctx, v, d.heads)?;
    let cq = heads_normed(ctx, &format!("{ap}.norm_added_q"), cq, d)?;
    let ck = heads_normed(ctx, &format!("{ap}.norm_added_k"), ck, d)?;
    let cv = split_heads(ctx, cv, d.heads)?;
    ctx.scope(&ap);
    let q = ctx.b.concat(&[cq, q], 2)?;
    let k = ctx.b.concat(&[ck, k], 2)?;
    let v = ctx.b.concat(&[cv, v], 2)?;
    let q = apply_rotary_emb(ctx, q, rope.cos, rope.sin, RotaryPairs::Interleaved)?;
    let k = apply_rotary_emb(ctx, k, rope.cos, rope.sin, RotaryPairs::Interleaved)?;
    let a = ctx.b.attention(q, k, v, None, None, false)?;
    let a = merge_heads(ctx, a)?;
    let (t_len, i_len) = (ctx.b.dim(txt, 1), ctx.b.dim(img, 1));
    let parts = ctx.b.split(a, 1, &[t_len, i_len])?;
    let a_txt = linear(ctx, &format!("{ap}.to_add_out"), parts[0], d.dim)?;
    let a_img = linear(ctx, &format!("{ap}.to_out.0"), parts[1], d.dim)?;

    // Image stream.
    let img = gated_add(ctx, img, m_img[2], a_img)?;
    let n = norm_modulate(ctx, &format!("{bp}.norm2"), img, m_img[3], m_img[4], d.eps)?;
    let f = feed_forward(ctx, &format!("{bp}.ff"), n, d)?;
    let img = gated_add(ctx, img, m_img[5], f)?;
    // Text stream.
    let txt = gated_add(ctx, txt, m_txt[2], a_txt)?;
    let n = norm_modulate(ctx, &format!("{bp}.norm2_context"), txt, m_txt[3], m_txt[4], d.eps)?;
    let f = feed_forward(ctx, &format!("{bp}.ff_context"), n, d)?;
    let txt = gated_add(ctx, txt, m_txt[5], f)?;
    Ok((txt, img))
}

/// `Flux2SingleTransformerBlock` `j` on the joint stream `x [B, T+N, D]`.
fn single_block(ctx: &mut Ctx, j: usize, x: V, m: &[V], rope: &Rope, d: &Dims) -> Result<V> {
    let bp = format!("single_transformer_blocks.{j}");
    let n = norm_modulate(ctx, &format!("{bp}.norm"), x, m[0], m[1], d.eps)?;
    let ap = format!("{bp}.attn");
    let proj = linear(ctx, &format!("{ap}.to_qkv_mlp_proj"), n, 3 * d.dim + 2 * d.mlp_hidden)?;
    let (dd, mh) = (Dim::from(d.dim), Dim::from(d.mlp_hidden));
    let parts = ctx.b.split(proj, -1, &[dd.clone(), dd.clone(), dd, mh.clone(), mh])?;
    let q = heads_normed(ctx, &format!("{ap}.norm_q"), parts[0], d)?;
    let k = heads_normed(ctx, &format!("{ap}.norm_k"), parts[1], d)?;
    let v = split_heads(ctx, parts[2], d.heads)?;
    ctx.scope(&ap);
    let q = apply_rotary_emb(ctx, q, rope.cos, rope.sin, RotaryPairs::Interleaved)?;
    let k = apply_rotary_emb(ctx, k, rope.cos, rope.sin, RotaryPairs::Interleaved)?;
    let a = ctx.b.attention(q, k, v, None, None, false)?;
    let a = merge_heads(ctx, a)?;
    let mlp = swiglu(ctx, parts[3], parts[4])?;
    let cat = ctx.b.concat(&[a, mlp], -1)?;
    let out = linear(ctx, &format!("{ap}.to_out"), cat, d.dim)?;
    gated_add(ctx, x, m[2], out)
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let d = check(raw, &cfg)?;
    let dim = d.dim;
    let out_ch = cfg.out_channels.unwrap_or(cfg.in_channels);
    let n_axes = cfg.axes_dims_rope.len();
    let (batch, img_seq, txt_seq) = (Dim::sym("batch"), Dim::sym("img_seq"), Dim::sym("txt_seq"));

    let hs = ctx.b.input("hidden_states", DType::F32, vec![batch.clone(), img_seq.clone(), cfg.in_channels.into()])?;
    let ehs = ctx.b.input("encoder_hidden_states", DType::F32, vec![batch.clone(), txt_seq.clone(), cfg.joint_attention_dim.into()])?;
    let t = ctx.b.input("timestep", DType::F32, vec![batch.clone()])?;
    let img_ids = ctx.b.input("img_ids", DType::I64, vec![img_seq.clone(), n_axes.into()])?;
    let txt_ids = ctx.b.input("txt_ids", DType::I64, vec![txt_seq.clone(), n_axes.into()])?;
    let guidance = if cfg.guidance_embeds { Some(ctx.b.input("guidance", DType::F32, vec![batch])?) } else { None };

    // Conditioning and the shared modulations.
    let temb = time_guidance_embed(ctx, t, guidance, cfg.timestep_guidance_channels, dim)?;
    ctx.role(temb, Role::TimestepEmbedding);
    let act = ctx.b.unary(UnaryOp::Silu, temb)?;
    let m_img = modulation(ctx, "double_stream_modulation_img", act, dim, 2)?;
    let m_txt = modulation(ctx, "double_stream_modulation_txt", act, dim, 2)?;
    let m_single = modulation(ctx, "single_stream_modulation", act, dim, 1)?;

    let mut img = linear(ctx, "x_embedder", hs, dim)?;
    let mut txt = linear(ctx, "context_embedder", ehs, dim)?;
    ctx.role(img, Role::ResidualIn);

    // Rotary tables of the joint [text; image] sequence.
    ctx.scope("pos_embed");
    let (ic, is) = pos_embed(ctx, img_ids, &cfg.axes_dims_rope, cfg.rope_theta)?;
    let (tc, ts) = pos_embed(ctx, txt_ids, &cfg.axes_dims_rope, cfg.rope_theta)?;
    let rope = Rope { cos: ctx.b.concat(&[tc, ic], 0)?, sin: ctx.b.concat(&[ts, is], 0)? };

    for i in 0..cfg.num_layers {
        ctx.block(Some(i));
        (txt, img) = double_block(ctx, i, img, txt, &m_img, &m_txt, &rope, &d)?;
        ctx.inter(&format!("transformer_blocks.{i}.0"), txt);
        ctx.inter(&format!("transformer_blocks.{i}.1"), img);
    }
    ctx.block(None);
    ctx.scope("single_transformer_blocks");
    let mut x = ctx.b.concat(&[txt, img], 1)?;
    for j in 0..cfg.num_single_layers {
        ctx.block(Some(cfg.num_layers + j));
        x = single_block(ctx, j, x, &m_single, &rope, &d)?;
        ctx.inter(&format!("single_transformer_blocks.{j}.0"), x);
    }
    ctx.block(None);
    ctx.scope("single_transformer_blocks");
    let img = ctx.b.slice(x, 1, txt_seq.clone(), txt_seq.add(&img_seq))?;
    ctx.role(img, Role::ResidualOut);

    // Output head: AdaLayerNormContinuous (scale first, then shift).
    let m = linear(ctx, "norm_out.linear", act, 2 * dim)?;
    let ss = ctx.b.chunk(m, 2, -1)?;
    let n = norm_modulate(ctx, "norm_out.norm", img, ss[1], ss[0], d.eps)?;
    let out = linear(ctx, "proj_out", n, cfg.patch_size * cfg.patch_size * out_ch)?;
    ctx.b.output("sample", out);
    Ok(())
}
