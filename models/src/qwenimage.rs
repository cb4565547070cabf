//! Qwen-Image: diffusers `QwenImageTransformer2DModel`
//! (models/transformers/transformer_qwenimage.py) with
//! `QwenImageTransformerBlock`, `QwenDoubleStreamAttnProcessor2_0`,
//! `QwenTimestepProjEmbeddings`, `QwenEmbedRope` / `QwenEmbedLayer3DRope`
//! ([`rope`]) and `AdaLayerNormContinuous` / `RMSNorm`
//! (models/normalization.py).
//!
//! Inputs: `hidden_states [batch, img_seq, in_channels]` (packed 2×2
//! latents), `encoder_hidden_states [batch, txt_seq, joint_attention_dim]`,
//! `encoder_hidden_states_mask` int64 `[batch, txt_seq]` (1 = real token,
//! 0 = padding), `timestep` f32 `[batch]` (t/1000), plus
//! `additional_t_cond` int64 `[batch]` when `use_additional_t_cond`.
//!
//! **Image layout.** diffusers also takes `img_shapes`, a Python list of
//! `(frames, height, width)` per image (in patches), which fixes the rotary
//! positions of the image tokens and cannot be recovered from the packed
//! tokens. It is a compile-time parameter here, [`ImageLayout`]:
//! [`import_with_layout`] takes it explicitly; the registry's `import` uses
//! the `img_shapes` recorded in a `meta.json` beside `config.json` (as
//! omnic's fixtures record their forward call), else
//! `QwenImagePipeline`'s default 1024² image (`(1, 64, 64)` for patch 2).
//! The image token count stays the symbol `img_seq` in the program (the
//! rotary tables are sliced to it); it must equal the layout's `Σ f·h·w`
//! for the positions to be right (a larger `img_seq` fails at run time).
//! The text length `txt_seq` is fully symbolic: the text positions are
//! computed in the graph.
//!
//! The padding mask becomes an additive attention mask over the joint
//! `[text, image]` keys: 0 for real text tokens and all image tokens,
//! `f32::MIN` for padding (SDPA's boolean mask; a fully masked row cannot
//! occur since image keys are always visible).
//!
//! `zero_cond_t` (edit models): the blocks' image modulation uses the
//! embedding of `t` for the first image's tokens and of `t = 0` for the
//! conditioning images' tokens; text and the output norm use `t`.
//! `guidance_embeds` is accepted and ignored, as the reference builds no
//! guidance embedder.

mod layout;
pub mod rope;

pub use layout::{import_with_layout, ImageLayout, DEFAULT_IMAGE_PX, VAE_SCALE_FACTOR};

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::embed::{timestep_mlp, timestep_sinusoid};
use crate::layers::{feed_forward, layer_norm_plain, linear, merge_heads, split_heads, unsqueeze1};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{CmpOp, DType, Dim, Literal, Role, UnaryOp};
use serde::Deserialize;

/// `config.json` of `QwenImageTransformer2DModel` (defaults as in diffusers).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d2")]
    pub patch_size: usize,
    #[serde(default = "d64")]
    pub in_channels: usize,
    /// `None` / 0 mean `in_channels` (`out_channels or in_channels`).
    #[serde(default = "some16")]
    pub out_channels: Option<usize>,
    #[serde(default = "d60")]
    pub num_layers: usize,
    #[serde(default = "d128")]
    pub attention_head_dim: usize,
    #[serde(default = "d24")]
    pub num_attention_heads: usize,
    #[serde(default = "d3584")]
    pub joint_attention_dim: usize,
    #[serde(default)]
    pub guidance_embeds: bool,
    #[serde(default = "axes")]
    pub axes_dims_rope: Vec<usize>,
    #[serde(default)]
    pub zero_cond_t: bool,
    #[serde(default)]
    pub use_additional_t_cond: bool,
    #[serde(default)]
    pub use_layer3d_rope: bool,
}

fn d2() -> usize {
    2
}
fn d24() -> usize {
    24
}
fn d60() -> usize {
    60
}
fn d64() -> usize {
    64
}
fn d128() -> usize {
    128
}
fn d3584() -> usize {
    3584
}
fn some16() -> Option<usize> {
    Some(16)
}
fn axes() -> Vec<usize> {
    vec![16, 56, 56]
}

pub fn family() -> Family {
    Family { name: "qwenimage", classes: &["QwenImageTransformer2DModel"], build, stage: "transformer" }
}

const EPS: f64 = 1e-6;

fn cfg_err(raw: &RawConfig, field: &str, message: String) -> ImportError {
    ImportError::Config { path: raw.path.display().to_string(), field: field.into(), message }
}

/// Registry entry: the recorded layout, else the pipeline default.
fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let layout = match ImageLayout::recorded(&raw.path)? {
        Some(l) => l,
        None => ImageLayout::pipeline_default(raw.parse::<Config>()?.patch_size),
    };
    build_with(raw, ctx, &layout)
}

/// Modulation of one stream: `(shift, scale, gate)` each broadcastable to
/// `[B, S, D]` (`[B, 1, D]`, or `[B, S, D]` per token with `zero_cond_t`).
type Mod = [V; 3];

/// `RMSNorm` whose weight must be stored.
fn rms_norm_w(ctx: &mut Ctx, p: &str, x: V, d: usize) -> Result<V> {
    ctx.scope(p);
    let w = ctx.w(&format!("{p}.weight"), &[d])?;
    Ok(ctx.b.rms_norm(x, Some(w), EPS)?)
}

/// `x · (1 + scale) + shift` with already-broadcastable parameters.
fn modulate3(ctx: &mut Ctx, x: V, [shift, scale, _]: Mod) -> Result<V> {
    let s1 = ctx.b.add_scalar(scale, 1.0)?;
    let y = ctx.b.mul(x, s1)?;
    Ok(ctx.b.add(y, shift)?)
}

/// Six `[B, 1, D]` modulation vectors from a `*_mod.1` linear of `silu_t`.
fn mod_params(ctx: &mut Ctx, p: &str, silu_t: V, dim: usize) -> Result<Vec<V>> {
    let m = linear(ctx, p, silu_t, 6 * dim)?;
    let parts = ctx.b.chunk(m, 6, 1)?;
    parts.into_iter().map(|v| unsqueeze1(ctx, v)).collect()
}

/// The image stream's two modulations; with `zero_cond_t`, per token:
/// `where(first_image, params(t), params(0))`.
fn image_mods(ctx: &mut Ctx, p: &str, silu_t: V, silu_0: Option<(V, V)>, dim: usize) -> Result<[Mod; 2]> {
    let mt = mod_params(ctx, p, silu_t, dim)?;
    let m = match silu_0 {
        None => mt,
        Some((silu_0, first)) => {
            let m0 = mod_params(ctx, p, silu_0, dim)?;
            mt.iter().zip(&m0).map(|(&a, &b)| ctx.b.where_(first, a, b)).collect::<std::result::Result<Vec<_>, _>>()?
        }
    };
    Ok([[m[0], m[1], m[2]], [m[3], m[4], m[5]]])
}

/// q, k, v of one stream, `[B, H, S, hd]`, q/k RMS-normalised and rotated.
#[allow(clippy::too_many_arguments)]
fn qkv(ctx: &mut Ctx, ap: &str, x: V, proj: [&str; 3], norms: [&str; 2], heads: usize, hd: usize, rope: (V, V)) -> Result<[V; 3]> {
    let dim = heads * hd;
    let mut out = Vec::with_capacity(3);
    for (i, name) in proj.iter().enumerate() {
        let y = linear(ctx, &format!("{ap}.{name}"), x, dim)?;
        let y = split_heads(ctx, y, heads)?;
        let y = if i < 2 {
            let y = rms_norm_w(ctx, &format!("{ap}.{}", norms[i]), y, hd)?;
            ctx.scope(ap);
            rope::apply(ctx, y, rope)?
        } else {
            y
        };
        out.push(y);
    }
    Ok([out[0], out[1], out[2]])
}

/// Shapes and shared values for the blocks.
struct Blocks {
    heads: usize,
    head_dim: usize,
    dim: usize,
    /// Additive mask `[B, 1, 1, txt_seq + img_seq]`.
    mask: V,
    img_rope: (V, V),
    txt_rope: (V, V),
}

/// One `QwenImageTransformerBlock`: returns `(text, image)`.
fn block(ctx: &mut Ctx, i: usize, h: V, c: V, silu_t: V, silu_0: Option<(V, V)>, b: &Blocks) -> Result<(V, V)> {
    let bp = format!("transformer_blocks.{i}");
    let dim = b.dim;
    let [im1, im2] = image_mods(ctx, &format!("{bp}.img_mod.1"), silu_t, silu_0, dim)?;
    let tm = mod_params(ctx, &format!("{bp}.txt_mod.1"), silu_t, dim)?;
    let (tm1, tm2): (Mod, Mod) = ([tm[0], tm[1], tm[2]], [tm[3], tm[4], tm[5]]);

    ctx.scope(&format!("{bp}.img_norm1"));
    let nh = layer_norm_plain(ctx, h, EPS)?;
    let nh = modulate3(ctx, nh, im1)?;
    if i == 0 {
        ctx.role(nh, Role::ModulatedInput);
    }
    ctx.scope(&format!("{bp}.txt_norm1"));
    let nc = layer_norm_plain(ctx, c, EPS)?;
    let nc = modulate3(ctx, nc, tm1)?;

    // Joint attention over [text, image].
    let ap = format!("{bp}.attn");
    let [q, k, v] = qkv(ctx, &ap, nh, ["to_q", "to_k", "to_v"], ["norm_q", "norm_k"], b.heads, b.head_dim, b.img_rope)?;
    let [cq, ck, cv] = qkv(ctx, &ap, nc, ["add_q_proj", "add_k_proj", "add_v_proj"], ["norm_added_q", "norm_added_k"], b.heads, b.head_dim, b.txt_rope)?;
    ctx.scope(&ap);
    let lens = [ctx.b.dim(cq, 2), ctx.b.dim(q, 2)];
    let jq = ctx.b.concat(&[cq, q], 2)?;
    let jk = ctx.b.concat(&[ck, k], 2)?;
    let jv = ctx.b.concat(&[cv, v], 2)?;
    let a = ctx.b.attention(jq, jk, jv, Some(b.mask), None, false)?;
    let a = merge_heads(ctx, a)?;
    let parts = ctx.b.split(a, 1, &lens)?;
    let img_attn = linear(ctx, &format!("{ap}.to_out.0"), parts[1], dim)?;
    let txt_attn = linear(ctx, &format!("{ap}.to_add_out"), parts[0], dim)?;

    ctx.scope(&bp);
    let g = ctx.b.mul(im1[2], img_attn)?;
    let h = ctx.b.add(h, g)?;
    let g = ctx.b.mul(tm1[2], txt_attn)?;
    let c = ctx.b.add(c, g)?;

    ctx.scope(&format!("{bp}.img_norm2"));
    let n2 = layer_norm_plain(ctx, h, EPS)?;
    let n2 = modulate3(ctx, n2, im2)?;
    let f = feed_forward(ctx, &format!("{bp}.img_mlp"), n2, 4 * dim, dim, "gelu-approximate")?;
    ctx.scope(&bp);
    let g = ctx.b.mul(im2[2], f)?;
    let h = ctx.b.add(h, g)?;

    ctx.scope(&format!("{bp}.txt_norm2"));
    let n2 = layer_norm_plain(ctx, c, EPS)?;
    let n2 = modulate3(ctx, n2, tm2)?;
    let f = feed_forward(ctx, &format!("{bp}.txt_mlp"), n2, 4 * dim, dim, "gelu-approximate")?;
    ctx.scope(&bp);
    let g = ctx.b.mul(tm2[2], f)?;
    let c = ctx.b.add(c, g)?;
    Ok((c, h))
}

/// `QwenTimestepProjEmbeddings` of `t` (plus the additional-condition
/// embedding when configured).
fn time_embed(ctx: &mut Ctx, t: V, extra: Option<V>, dim: usize) -> Result<V> {
    ctx.scope("time_text_embed.time_proj");
    let tp = timestep_sinusoid(ctx, t, 256, true, 0.0, 1000.0, 10000.0)?;
    let e = timestep_mlp(ctx, "time_text_embed.timestep_embedder", tp, dim, dim, "silu")?;
    Ok(match extra {
        Some(x) => {
            ctx.scope("time_text_embed");
            ctx.b.add(e, x)?
        }
        None => e,
    })
}

/// Additive `[B, 1, 1, txt_seq + img_seq]` mask from the int64 text mask.
fn joint_mask(ctx: &mut Ctx, m: V, batch: &Dim, txt: &Dim, img: &Dim) -> Result<V> {
    ctx.scope("attention_mask");
    let zero_i = ctx.b.scalar(DType::I64, 0.0)?;
    let keep = ctx.b.compare(CmpOp::Ne, m, zero_i)?;
    let zero = ctx.b.scalar(DType::F32, 0.0)?;
    let neg = ctx.b.scalar(DType::F32, f32::MIN as f64)?;
    let tm = ctx.b.where_(keep, zero, neg)?; // [B, T]
    let im = ctx.b.expand(zero, vec![batch.clone(), img.clone()])?;
    let jm = ctx.b.concat(&[tm, im], 1)?;
    let one = Dim::from(1usize);
    Ok(ctx.b.reshape(jm, vec![batch.clone(), one.clone(), one, txt.add(img)])?)
}

/// Build the forward for the image layout `layout`.
pub fn build_with(raw: &RawConfig, ctx: &mut Ctx, layout: &ImageLayout) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let path = raw.path.display().to_string();
    let heads = cfg.num_attention_heads;
    let hd = cfg.attention_head_dim;
    let dim = heads * hd;
    let p = cfg.patch_size;
    let out_ch = cfg.out_channels.filter(|&c| c > 0).unwrap_or(cfg.in_channels);
    if cfg.axes_dims_rope.len() != 3 || cfg.axes_dims_rope.iter().sum::<usize>() != hd {
        return Err(cfg_err(raw, "axes_dims_rope", format!("{:?} must be 3 axes summing to attention_head_dim = {hd}", cfg.axes_dims_rope)));
    }
    if layout.shapes.is_empty() || layout.shapes.iter().any(|s| s.contains(&0)) {
        return Err(cfg_err(raw, "img_shapes", format!("image layout {} needs at least one non-empty image", layout.to_json())));
    }
    if cfg.use_layer3d_rope && layout.shapes.last().is_some_and(|s| s[0] != 1) {
        return Err(cfg_err(raw, "use_layer3d_rope", format!("the condition image (last of {}) must have 1 frame", layout.to_json())));
    }
    let ch = rope::channel_freqs(&cfg.axes_dims_rope, &path)?;
    let batch = Dim::sym("batch");
    let (img, txt) = (Dim::sym("img_seq"), Dim::sym("txt_seq"));

    let x = ctx.b.input("hidden_states", DType::F32, vec![batch.clone(), img.clone(), cfg.in_channels.into()])?;
    let enc = ctx.b.input("encoder_hidden_states", DType::F32, vec![batch.clone(), txt.clone(), cfg.joint_attention_dim.into()])?;
    let mask = ctx.b.input("encoder_hidden_states_mask", DType::I64, vec![batch.clone(), txt.clone()])?;
    let t = ctx.b.input("timestep", DType::F32, vec![batch.clone()])?;
    let extra = if cfg.use_additional_t_cond {
        let a = ctx.b.input("additional_t_cond", DType::I64, vec![batch.clone()])?;
        ctx.scope("time_text_embed.addition_t_embedding");
        let table = ctx.w("time_text_embed.addition_t_embedding.weight", &[2, dim])?;
        Some(ctx.b.gather(table, a, 0)?)
    } else {
        None
    };

    let mut h = linear(ctx, "img_in", x, dim)?;
    let en = rms_norm_w(ctx, "txt_norm", enc, cfg.joint_attention_dim)?;
    let mut c = linear(ctx, "txt_in", en, dim)?;
    // The image stream is the residual a block-skipping cache reuses (the
    // text stream is not read after the last block).
    ctx.role(h, Role::ResidualIn);

    let temb = time_embed(ctx, t, extra, dim)?;
    ctx.role(temb, Role::TimestepEmbedding);
    ctx.scope("time_text_embed");
    let silu_t = ctx.b.unary(UnaryOp::Silu, temb)?;
    let silu_0 = if cfg.zero_cond_t {
        let t0 = ctx.b.mul_scalar(t, 0.0)?;
        let e0 = time_embed(ctx, t0, extra, dim)?;
        ctx.scope("time_text_embed");
        let s0 = ctx.b.unary(UnaryOp::Silu, e0)?;
        // modulate_index == 0 on the first image's tokens.
        let n = layout.tokens();
        let first = layout.first_tokens();
        let f = ctx.b.constant(Literal { dtype: DType::Bool, shape: vec![n], values: (0..n).map(|i| (i < first) as u8 as f64).collect() })?;
        let f = ctx.b.slice(f, 0, Dim::from(0usize), img.clone())?;
        let f = ctx.b.reshape(f, vec![Dim::from(1usize), img.clone(), Dim::from(1usize)])?;
        Some((s0, f))
    } else {
        None
    };

    ctx.scope("pos_embed");
    let img_rope = rope::image_tables(ctx, layout, cfg.use_layer3d_rope, &ch, &img)?;
    let txt_rope = rope::text_tables(ctx, rope::text_offset(layout, cfg.use_layer3d_rope), &ch, &txt)?;
    let mask = joint_mask(ctx, mask, &batch, &txt, &img)?;
    let blocks = Blocks { heads, head_dim: hd, dim, mask, img_rope, txt_rope };

    for i in 0..cfg.num_layers {
        ctx.block(Some(i));
        let (nc, nh) = block(ctx, i, h, c, silu_t, silu_0, &blocks)?;
        (c, h) = (nc, nh);
        ctx.inter(&format!("transformer_blocks.{i}.0"), c);
        ctx.inter(&format!("transformer_blocks.{i}.1"), h);
    }
    ctx.block(None);
    ctx.role(h, Role::ResidualOut);

    // norm_out: AdaLayerNormContinuous (scale, shift), then proj_out.
    let m = linear(ctx, "norm_out.linear", silu_t, 2 * dim)?;
    let ss = ctx.b.chunk(m, 2, 1)?;
    let (scale, shift) = (unsqueeze1(ctx, ss[0])?, unsqueeze1(ctx, ss[1])?);
    ctx.scope("norm_out.norm");
    let nh = layer_norm_plain(ctx, h, EPS)?;
    let nh = modulate3(ctx, nh, [shift, scale, shift])?;
    let o = linear(ctx, "proj_out", nh, p * p * out_ch)?;
    ctx.b.output("sample", o);
    Ok(())
}
