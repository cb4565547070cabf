//! SD3 / SD3.5 (MMDiT, MMDiT-X): diffusers `SD3Transformer2DModel`
//! (models/transformers/transformer_sd3.py) with `JointTransformerBlock`
//! (models/attention.py) and `JointAttnProcessor2_0`
//! (models/attention_processor.py), `PatchEmbed` with `pos_embed_max_size`
//! cropping and `CombinedTimestepTextProjEmbeddings` (models/embeddings.py),
//! `AdaLayerNormZero`, `SD35AdaLayerNormZeroX` and `AdaLayerNormContinuous`
//! (models/normalization.py).
//!
//! Shapes: `hidden_states [batch, C, height, width]` with symbolic `height`
//! and `width` (multiples of `patch_size`, at most `pos_embed_max_size`
//! patches each way) and `encoder_hidden_states [batch, txt_seq, D]`.
//!
//! * Patchify: the strided conv is written as two index gathers (rows, then
//!   columns) plus a linear with the conv weight flattened to
//!   `[D, C·p·p]`: the IR's dimension algebra cannot prove
//!   `(height/p)·p = height`, so a reshape-based patchify of a symbolic
//!   `height` does not verify, while gathering with `iota(height/p)`-based
//!   indices keeps the token count `(height/p)·(width/p)` exact. Unpatchify
//!   ends with identity gathers by `iota(height)` / `iota(width)` so that
//!   `sample` has exactly the input's declared shape.
//! * Position embedding: the checkpoint's persistent `pos_embed.pos_embed`
//!   table (`[1, M², D]`, `M = pos_embed_max_size`) is centre-cropped in the
//!   graph: `top = (M - height/p) / 2` is computed from `iota(height/p)` at
//!   run time and the crop is two gathers (an image larger than `M` patches
//!   indexes out of range, where diffusers raises).
//! * MMDiT-X (`dual_attention_layers`, SD3.5-medium): listed blocks use
//!   `SD35AdaLayerNormZeroX` (9 modulation chunks) and a second, image-only
//!   self-attention `attn2` on the second modulation of the same norm.
//! * The last block is `context_pre_only`: its text stream is not returned,
//!   so its text queries (`attn.add_q_proj`, `attn.norm_added_q`) cannot
//!   affect the output and are not computed (joint keys/values still are).

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::embed::{timestep_mlp, timestep_sinusoid};
use crate::layers::{feed_forward, gated, layer_norm_plain, linear, merge_heads, modulate, split_heads};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{BinaryOp, DType, Dim, ReduceOp, Role, UnaryOp};
use serde::Deserialize;

/// `config.json` of `SD3Transformer2DModel` (defaults as in diffusers).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d128")]
    pub sample_size: usize,
    #[serde(default = "d2")]
    pub patch_size: usize,
    #[serde(default = "d16")]
    pub in_channels: usize,
    #[serde(default = "d18")]
    pub num_layers: usize,
    #[serde(default = "d64")]
    pub attention_head_dim: usize,
    #[serde(default = "d18")]
    pub num_attention_heads: usize,
    #[serde(default = "d4096")]
    pub joint_attention_dim: usize,
    #[serde(default = "d1152")]
    pub caption_projection_dim: usize,
    #[serde(default = "d2048")]
    pub pooled_projection_dim: usize,
    /// `None` (JSON null) means `in_channels`.
    #[serde(default = "some16")]
    pub out_channels: Option<usize>,
    #[serde(default = "some96")]
    pub pos_embed_max_size: Option<usize>,
    #[serde(default)]
    pub dual_attention_layers: Vec<usize>,
    #[serde(default)]
    pub qk_norm: Option<String>,
}

fn d2() -> usize {
    2
}
fn d16() -> usize {
    16
}
fn d18() -> usize {
    18
}
fn d64() -> usize {
    64
}
fn d128() -> usize {
    128
}
fn d1152() -> usize {
    1152
}
fn d2048() -> usize {
    2048
}
fn d4096() -> usize {
    4096
}
fn some16() -> Option<usize> {
    Some(16)
}
fn some96() -> Option<usize> {
    Some(96)
}

pub fn family() -> Family {
    Family { name: "sd3", classes: &["SD3Transformer2DModel"], build, stage: "transformer" }
}

/// Per-head query/key normalisation of diffusers `Attention(qk_norm=...)`
/// (eps 1e-6 in the MMDiT blocks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QkNorm {
    None,
    /// `RMSNorm(head_dim)` with a weight.
    RmsNorm,
    /// `nn.LayerNorm(head_dim)` with weight and bias.
    LayerNorm,
    /// `FP32LayerNorm(head_dim, elementwise_affine=False)`.
    Fp32LayerNorm,
    /// `LpNorm(p=2)`: `x / max(‖x‖₂, eps)`.
    L2,
}

impl QkNorm {
    pub fn parse(v: Option<&str>, path: &str) -> Result<QkNorm> {
        Ok(match v {
            None => QkNorm::None,
            Some("rms_norm") => QkNorm::RmsNorm,
            Some("layer_norm") => QkNorm::LayerNorm,
            Some("fp32_layer_norm") => QkNorm::Fp32LayerNorm,
            Some("l2") => QkNorm::L2,
            Some(other) => {
                return Err(ImportError::Config {
                    path: path.into(),
                    field: "qk_norm".into(),
                    message: format!("`{other}` is not supported (supported: null, rms_norm, layer_norm, fp32_layer_norm, l2)"),
                })
            }
        })
    }

    /// Apply to `x [.., head_dim]` with weights under `p` (`p.weight`, `p.bias`).
    pub fn apply(self, ctx: &mut Ctx, p: &str, x: V, head_dim: usize, eps: f64) -> Result<V> {
        ctx.scope(p);
        Ok(match self {
            QkNorm::None => x,
            QkNorm::RmsNorm => {
                let w = ctx.w(&format!("{p}.weight"), &[head_dim])?;
                ctx.b.rms_norm(x, Some(w), eps)?
            }
            QkNorm::LayerNorm => {
                let w = ctx.w(&format!("{p}.weight"), &[head_dim])?;
                let b = ctx.w(&format!("{p}.bias"), &[head_dim])?;
                ctx.b.layer_norm(x, Some(w), Some(b), eps)?
            }
            QkNorm::Fp32LayerNorm => ctx.b.layer_norm(x, None, None, eps)?,
            QkNorm::L2 => {
                let sq = ctx.b.unary(UnaryOp::Square, x)?;
                let ss = ctx.b.reduce(ReduceOp::Sum, sq, &[-1], true)?;
                let n = ctx.b.unary(UnaryOp::Sqrt, ss)?;
                let n = ctx.b.binary_scalar(BinaryOp::Max, n, eps)?;
                ctx.b.div(x, n)?
            }
        })
    }
}

fn cfg_err(raw: &RawConfig, field: &str, message: String) -> ImportError {
    ImportError::Config { path: raw.path.display().to_string(), field: field.into(), message }
}

/// Static model dimensions shared by the builders below.
struct Dims {
    heads: usize,
    head_dim: usize,
    dim: usize,
    qk: QkNorm,
}

/// `[hp, p]` int64 indices `i·p + j` (the rows of patch row `i`).
fn patch_index(ctx: &mut Ctx, n: &Dim, p: usize) -> Result<V> {
    let i = ctx.b.iota(n.clone(), DType::I64)?;
    let i = ctx.b.reshape(i, vec![n.clone(), Dim::from(1usize)])?;
    let i = ctx.b.mul_scalar(i, p as f64)?;
    let j = ctx.b.iota(Dim::from(p), DType::I64)?;
    let j = ctx.b.reshape(j, vec![Dim::from(1usize), Dim::from(p)])?;
    Ok(ctx.b.add(i, j)?)
}

/// `PatchEmbed` projection: `[B, C, H, W] → [B, (H/p)·(W/p), D]`.
fn patch_embed(ctx: &mut Ctx, x: V, cfg: &Config, dim: usize, hp: &Dim, wp: &Dim) -> Result<V> {
    let p = cfg.patch_size;
    let c = cfg.in_channels;
    let batch = ctx.b.dim(x, 0);
    ctx.scope("pos_embed.proj");
    let rows = patch_index(ctx, hp, p)?;
    let x = ctx.b.gather(x, rows, 2)?; // [B, C, hp, p, W]
    let cols = patch_index(ctx, wp, p)?;
    let x = ctx.b.gather(x, cols, 4)?; // [B, C, hp, p, wp, p]
    let x = ctx.b.transpose(x, &[0, 2, 4, 1, 3, 5])?;
    let x = ctx.b.reshape(x, vec![batch, hp.mul(wp), Dim::from(c * p * p)])?;
    let w = ctx.w("pos_embed.proj.weight", &[dim, c, p, p])?;
    let w = ctx.b.reshape(w, vec![Dim::from(dim), Dim::from(c * p * p)])?;
    let b = ctx.w_opt("pos_embed.proj.bias", &[dim])?;
    Ok(ctx.b.linear(x, w, b)?)
}

/// `top + iota(n)` with `top = (m - n) / 2` computed at run time.
fn centred_index(ctx: &mut Ctx, n: &Dim, m: usize) -> Result<V> {
    let i = ctx.b.iota(n.clone(), DType::I64)?;
    let last = ctx.b.reduce(ReduceOp::Max, i, &[0], false)?; // n - 1
    let neg = ctx.b.mul_scalar(last, -1.0)?;
    let rem = ctx.b.add_scalar(neg, (m as f64) - 1.0)?; // m - n
    let top = ctx.b.binary_scalar(BinaryOp::Div, rem, 2.0)?;
    Ok(ctx.b.add(i, top)?)
}

/// `PatchEmbed.cropped_pos_embed`: the centred `hp × wp` window of the
/// stored `M × M` table, as `[1, hp·wp, D]`.
fn cropped_pos_embed(ctx: &mut Ctx, m: usize, dim: usize, hp: &Dim, wp: &Dim) -> Result<V> {
    ctx.scope("pos_embed");
    let table = ctx.w("pos_embed.pos_embed", &[1, m * m, dim])?;
    let grid = ctx.b.reshape(table, vec![1usize.into(), m.into(), m.into(), dim.into()])?;
    let rows = centred_index(ctx, hp, m)?;
    let g = ctx.b.gather(grid, rows, 1)?; // [1, hp, M, D]
    let cols = centred_index(ctx, wp, m)?;
    let g = ctx.b.gather(g, cols, 2)?; // [1, hp, wp, D]
    Ok(ctx.b.reshape(g, vec![1usize.into(), hp.mul(wp), dim.into()])?)
}

/// `CombinedTimestepTextProjEmbeddings`: `timestep_embedder(sinusoid(t)) +
/// text_embedder(pooled)`.
fn conditioning(ctx: &mut Ctx, t: V, pooled: V, dim: usize) -> Result<V> {
    ctx.scope("time_text_embed.time_proj");
    let tp = timestep_sinusoid(ctx, t, 256, true, 0.0, 1.0, 10000.0)?;
    let te = timestep_mlp(ctx, "time_text_embed.timestep_embedder", tp, dim, dim, "silu")?;
    let pe = timestep_mlp(ctx, "time_text_embed.text_embedder", pooled, dim, dim, "silu")?;
    ctx.scope("time_text_embed");
    Ok(ctx.b.add(te, pe)?)
}

/// q/k/v of one stream: `[B, S, D] → 3 × [B, H, S, hd]`, q and k normalised.
/// `q` is skipped (None) when `with_q` is false.
fn qkv(ctx: &mut Ctx, x: V, names: [&str; 3], norms: [&str; 2], d: &Dims, with_q: bool) -> Result<(Option<V>, V, V)> {
    let q = if with_q {
        let q = linear(ctx, names[0], x, d.dim)?;
        let q = split_heads(ctx, q, d.heads)?;
        Some(d.qk.apply(ctx, norms[0], q, d.head_dim, 1e-6)?)
    } else {
        None
    };
    let k = linear(ctx, names[1], x, d.dim)?;
    let k = split_heads(ctx, k, d.heads)?;
    let k = d.qk.apply(ctx, norms[1], k, d.head_dim, 1e-6)?;
    let v = linear(ctx, names[2], x, d.dim)?;
    let v = split_heads(ctx, v, d.heads)?;
    Ok((q, k, v))
}

/// `JointAttnProcessor2_0` over `[image, text]`: returns the projected
/// image output and (unless `context_pre_only`) the projected text output.
fn joint_attention(ctx: &mut Ctx, ap: &str, img: V, txt: V, d: &Dims, context_pre_only: bool) -> Result<(V, Option<V>)> {
    let n = |s: &str| format!("{ap}.{s}");
    let (q, k, v) = qkv(ctx, img, [&n("to_q"), &n("to_k"), &n("to_v")], [&n("norm_q"), &n("norm_k")], d, true)?;
    let (cq, ck, cv) = qkv(ctx, txt, [&n("add_q_proj"), &n("add_k_proj"), &n("add_v_proj")], [&n("norm_added_q"), &n("norm_added_k")], d, !context_pre_only)?;
    let q = q.ok_or_else(|| ImportError::Ir(omnic_ir::IrError::Graph("missing image queries".into())))?;
    ctx.scope(ap);
    let k = ctx.b.concat(&[k, ck], 2)?;
    let v = ctx.b.concat(&[v, cv], 2)?;
    let (q, lens) = match cq {
        Some(cq) => {
            let lens = [ctx.b.dim(q, 2), ctx.b.dim(cq, 2)];
            (ctx.b.concat(&[q, cq], 2)?, Some(lens))
        }
        None => (q, None),
    };
    let a = ctx.b.attention(q, k, v, None, None, false)?;
    let a = merge_heads(ctx, a)?;
    let (ai, at) = match lens {
        Some(lens) => {
            let parts = ctx.b.split(a, 1, &lens)?;
            (parts[0], Some(parts[1]))
        }
        None => (a, None),
    };
    let oi = linear(ctx, &n("to_out.0"), ai, d.dim)?;
    let ot = match at {
        Some(at) => Some(linear(ctx, &n("to_add_out"), at, d.dim)?),
        None => None,
    };
    Ok((oi, ot))
}

/// Image-only self-attention `attn2` of an MMDiT-X block.
fn self_attention(ctx: &mut Ctx, ap: &str, x: V, d: &Dims) -> Result<V> {
    let n = |s: &str| format!("{ap}.{s}");
    let (q, k, v) = qkv(ctx, x, [&n("to_q"), &n("to_k"), &n("to_v")], [&n("norm_q"), &n("norm_k")], d, true)?;
    let q = q.ok_or_else(|| ImportError::Ir(omnic_ir::IrError::Graph("missing queries".into())))?;
    ctx.scope(ap);
    let a = ctx.b.attention(q, k, v, None, None, false)?;
    let a = merge_heads(ctx, a)?;
    linear(ctx, &n("to_out.0"), a, d.dim)
}

/// One `JointTransformerBlock`; returns `(text, image)` (text `None` for the
/// `context_pre_only` block). `silu_t` is `silu(temb)`.
#[allow(clippy::too_many_arguments)]
fn block(ctx: &mut Ctx, i: usize, h: V, c: V, silu_t: V, d: &Dims, context_pre_only: bool, dual: bool) -> Result<(Option<V>, V)> {
    let bp = format!("transformer_blocks.{i}");
    let dim = d.dim;
    // norm1: AdaLayerNormZero (6 chunks) or SD35AdaLayerNormZeroX (9 chunks).
    let m = linear(ctx, &format!("{bp}.norm1.linear"), silu_t, if dual { 9 } else { 6 } * dim)?;
    let mods = ctx.b.chunk(m, if dual { 9 } else { 6 }, 1)?;
    ctx.scope(&format!("{bp}.norm1.norm"));
    let nh = layer_norm_plain(ctx, h, 1e-6)?;
    let nx = modulate(ctx, nh, mods[0], mods[1])?;
    if i == 0 {
        ctx.role(nx, Role::ModulatedInput);
    }
    let (gate_msa, shift_mlp, scale_mlp, gate_mlp) = (mods[2], mods[3], mods[4], mods[5]);
    // norm1_context: AdaLayerNormContinuous (scale, shift) or AdaLayerNormZero.
    let (nc, cmods) = if context_pre_only {
        let m = linear(ctx, &format!("{bp}.norm1_context.linear"), silu_t, 2 * dim)?;
        let ss = ctx.b.chunk(m, 2, 1)?;
        ctx.scope(&format!("{bp}.norm1_context.norm"));
        let nc = layer_norm_plain(ctx, c, 1e-6)?;
        (modulate(ctx, nc, ss[1], ss[0])?, None)
    } else {
        let m = linear(ctx, &format!("{bp}.norm1_context.linear"), silu_t, 6 * dim)?;
        let cm = ctx.b.chunk(m, 6, 1)?;
        ctx.scope(&format!("{bp}.norm1_context.norm"));
        let nc = layer_norm_plain(ctx, c, 1e-6)?;
        (modulate(ctx, nc, cm[0], cm[1])?, Some(cm))
    };
    let (ai, ac) = joint_attention(ctx, &format!("{bp}.attn"), nx, nc, d, context_pre_only)?;
    ctx.scope(&bp);
    let g = gated(ctx, gate_msa, ai)?;
    let mut h = ctx.b.add(h, g)?;
    if dual {
        ctx.scope(&format!("{bp}.norm1.norm"));
        let nx2 = modulate(ctx, nh, mods[6], mods[7])?;
        let a2 = self_attention(ctx, &format!("{bp}.attn2"), nx2, d)?;
        ctx.scope(&bp);
        let g2 = gated(ctx, mods[8], a2)?;
        h = ctx.b.add(h, g2)?;
    }
    ctx.scope(&format!("{bp}.norm2"));
    let n2 = layer_norm_plain(ctx, h, 1e-6)?;
    let n2 = modulate(ctx, n2, shift_mlp, scale_mlp)?;
    let f = feed_forward(ctx, &format!("{bp}.ff"), n2, 4 * dim, dim, "gelu-approximate")?;
    ctx.scope(&bp);
    let f = gated(ctx, gate_mlp, f)?;
    let h = ctx.b.add(h, f)?;
    let c = match (cmods, ac) {
        (Some(cm), Some(ac)) => {
            let g = gated(ctx, cm[2], ac)?;
            let c = ctx.b.add(c, g)?;
            ctx.scope(&format!("{bp}.norm2_context"));
            let n2 = layer_norm_plain(ctx, c, 1e-6)?;
            let n2 = modulate(ctx, n2, cm[3], cm[4])?;
            let f = feed_forward(ctx, &format!("{bp}.ff_context"), n2, 4 * dim, dim, "gelu-approximate")?;
            ctx.scope(&bp);
            let f = gated(ctx, cm[5], f)?;
            Some(ctx.b.add(c, f)?)
        }
        _ => None,
    };
    Ok((c, h))
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let path = raw.path.display().to_string();
    let qk = QkNorm::parse(cfg.qk_norm.as_deref(), &path)?;
    let heads = cfg.num_attention_heads;
    let dim = heads * cfg.attention_head_dim;
    let p = cfg.patch_size;
    let out_ch = cfg.out_channels.unwrap_or(cfg.in_channels);
    let m = cfg.pos_embed_max_size.ok_or_else(|| {
        cfg_err(raw, "pos_embed_max_size", "null (uncropped, interpolated sin-cos positions) is not supported; SD3 checkpoints store a cropped table".into())
    })?;
    if cfg.caption_projection_dim != dim {
        return Err(cfg_err(
            raw,
            "caption_projection_dim",
            format!("{} must equal num_attention_heads·attention_head_dim = {dim} (the joint blocks use one width)", cfg.caption_projection_dim),
        ));
    }
    if p == 0 || cfg.num_layers == 0 {
        return Err(cfg_err(raw, if p == 0 { "patch_size" } else { "num_layers" }, "must be positive".into()));
    }
    if let Some(&bad) = cfg.dual_attention_layers.iter().find(|&&l| l >= cfg.num_layers) {
        return Err(cfg_err(raw, "dual_attention_layers", format!("layer {bad} is out of range for num_layers = {}", cfg.num_layers)));
    }
    let d = Dims { heads, head_dim: cfg.attention_head_dim, dim, qk };
    let batch = Dim::sym("batch");
    let (height, width) = (Dim::sym("height"), Dim::sym("width"));
    let (hp, wp) = (height.div(p as i64), width.div(p as i64));

    let x = ctx.b.input("hidden_states", DType::F32, vec![batch.clone(), cfg.in_channels.into(), height.clone(), width.clone()])?;
    let enc = ctx.b.input("encoder_hidden_states", DType::F32, vec![batch.clone(), Dim::sym("txt_seq"), cfg.joint_attention_dim.into()])?;
    let pooled = ctx.b.input("pooled_projections", DType::F32, vec![batch.clone(), cfg.pooled_projection_dim.into()])?;
    let t = ctx.b.input("timestep", DType::F32, vec![batch.clone()])?;

    let tokens = patch_embed(ctx, x, &cfg, dim, &hp, &wp)?;
    let pos = cropped_pos_embed(ctx, m, dim, &hp, &wp)?;
    let mut h = ctx.b.add(tokens, pos)?;
    let temb = conditioning(ctx, t, pooled, dim)?;
    ctx.role(temb, Role::TimestepEmbedding);
    let mut c = linear(ctx, "context_embedder", enc, cfg.caption_projection_dim)?;
    // The image stream is the residual a block-skipping cache reuses; the
    // text stream ends unused after the context_pre_only block.
    ctx.role(h, Role::ResidualIn);
    ctx.scope("time_text_embed");
    let silu_t = ctx.b.unary(UnaryOp::Silu, temb)?;

    for i in 0..cfg.num_layers {
        ctx.block(Some(i));
        let cpo = i + 1 == cfg.num_layers;
        let (nc, nh) = block(ctx, i, h, c, silu_t, &d, cpo, cfg.dual_attention_layers.contains(&i))?;
        h = nh;
        if let Some(nc) = nc {
            c = nc;
            ctx.inter(&format!("transformer_blocks.{i}.0"), c);
        }
        ctx.inter(&format!("transformer_blocks.{i}.1"), h);
    }
    ctx.block(None);
    ctx.role(h, Role::ResidualOut);

    // norm_out (AdaLayerNormContinuous: scale, shift) and proj_out.
    let mo = linear(ctx, "norm_out.linear", silu_t, 2 * dim)?;
    let ss = ctx.b.chunk(mo, 2, 1)?;
    ctx.scope("norm_out.norm");
    let nh = layer_norm_plain(ctx, h, 1e-6)?;
    let nh = modulate(ctx, nh, ss[1], ss[0])?;
    let o = linear(ctx, "proj_out", nh, p * p * out_ch)?;
    // Unpatchify: einsum nhwpqc->nchpwq, then identity gathers onto the
    // input's symbolic height/width.
    ctx.scope("unpatchify");
    let o = ctx.b.reshape(o, vec![batch.clone(), hp.clone(), wp.clone(), p.into(), p.into(), out_ch.into()])?;
    let o = ctx.b.transpose(o, &[0, 5, 1, 3, 2, 4])?;
    let o = ctx.b.reshape(o, vec![batch, out_ch.into(), hp.mul(&Dim::from(p)), wp.mul(&Dim::from(p))])?;
    let ih = ctx.b.iota(height, DType::I64)?;
    let o = ctx.b.gather(o, ih, 2)?;
    let iw = ctx.b.iota(width, DType::I64)?;
    let o = ctx.b.gather(o, iw, 3)?;
    ctx.b.output("sample", o);
    Ok(())
}
