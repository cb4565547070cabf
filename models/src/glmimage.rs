//! GLM-Image: diffusers `GlmImageTransformer2DModel`
//! (models/transformers/transformer_glm_image.py) with
//! `GlmImageTransformerBlock`, `GlmImageAttnProcessor`,
//! `GlmImageAdaLayerNormZero`, `GlmImageAdaLayerNormContinuous`,
//! `GlmImageRotaryPosEmbed`, `GlmImageImageProjector` and
//! `GlmImageCombinedTimestepSizeEmbeddings`.
//!
//! Shapes: `hidden_states [batch, C, height, width]` and
//! `encoder_hidden_states [batch, txt_seq, text_embed_dim]` are symbolic.
//! The image projector (a `Linear` over `p×p` patches) is emitted as the
//! equivalent strided `conv` with the linear weight viewed as
//! `[D, C, p, p]`, so the patch grid is `((height - p) / p + 1, ...)`
//! (diffusers' floor division, checked exact at run time) and
//! `prior_token_id` / `prior_token_drop` are declared `[batch, grid_h ·
//! grid_w]` in those terms. The 2-D rotary tables are computed in the graph
//! from `iota` over the grid; their frequencies are f32 as in diffusers.
//!
//! Not supported (forward arguments, not config): the text `attention_mask`,
//! KV caches and caller-supplied `image_rotary_emb`.

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::embed::{timestep_mlp, timestep_sinusoid};
use crate::layers::rope::{apply_rotary_emb, RotaryPairs};
use crate::layers::{activation, feed_forward, gated, layer_norm, layer_norm_plain, linear, merge_heads, modulate, split_heads, unsqueeze1};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{DType, Dim, Literal, Role, UnaryOp};
use serde::Deserialize;

/// `config.json` of `GlmImageTransformer2DModel` (defaults as in diffusers).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d2")]
    pub patch_size: usize,
    #[serde(default = "d16")]
    pub in_channels: usize,
    #[serde(default = "d16")]
    pub out_channels: usize,
    #[serde(default = "d30")]
    pub num_layers: usize,
    #[serde(default = "d40")]
    pub attention_head_dim: usize,
    #[serde(default = "d64")]
    pub num_attention_heads: usize,
    #[serde(default = "d1472")]
    pub text_embed_dim: usize,
    #[serde(default = "d512")]
    pub time_embed_dim: usize,
    #[serde(default = "d256")]
    pub condition_dim: usize,
    #[serde(default = "d16384")]
    pub prior_vq_quantizer_codebook_size: usize,
}

fn d2() -> usize {
    2
}
fn d16() -> usize {
    16
}
fn d30() -> usize {
    30
}
fn d40() -> usize {
    40
}
fn d64() -> usize {
    64
}
fn d256() -> usize {
    256
}
fn d512() -> usize {
    512
}
fn d1472() -> usize {
    1472
}
fn d16384() -> usize {
    16384
}

pub fn family() -> Family {
    Family { name: "glmimage", classes: &["GlmImageTransformer2DModel"], build, stage: "transformer" }
}

/// LayerNorm eps of every norm in the model (`nn.LayerNorm(..., eps=1e-5)`).
const EPS: f64 = 1e-5;
/// `GlmImageRotaryPosEmbed(theta=10000.0)`.
const THETA: f32 = 10000.0;

fn config_err(raw: &RawConfig, field: &str, message: String) -> ImportError {
    ImportError::Config { path: raw.path.display().to_string(), field: field.into(), message }
}

/// `GlmImageRotaryPosEmbed` over the patch grid `[gh, gw]` → `(cos, sin)`,
/// each `[gh·gw, head_dim]`: channel `c` (mod `head_dim/2`) rotates by
/// `row · f[c]` for the first quarter and `col · f[c - head_dim/4]` for the
/// second, with `f[j] = 1 / θ^(2j / (head_dim/2))` computed in f32.
fn rope_tables(ctx: &mut Ctx, gh: &Dim, gw: &Dim, head_dim: usize) -> Result<(V, V)> {
    ctx.scope("rope");
    let half = head_dim / 2;
    let quarter = half / 2;
    let inv: Vec<f32> = (0..quarter).map(|j| 1.0f32 / THETA.powf((2 * j) as f32 / half as f32)).collect();
    let (axis, freq): (Vec<f64>, Vec<f64>) = (0..head_dim)
        .map(|c| {
            let c = c % half;
            if c < quarter {
                (0.0, inv[c] as f64)
            } else {
                (1.0, inv[c - quarter] as f64)
            }
        })
        .unzip();
    let full = vec![gh.clone(), gw.clone(), Dim::from(1usize)];
    let rows = ctx.b.iota(gh.clone(), DType::F32)?;
    let rows = ctx.b.reshape(rows, vec![gh.clone(), 1usize.into(), 1usize.into()])?;
    let rows = ctx.b.expand(rows, full.clone())?;
    let cols = ctx.b.iota(gw.clone(), DType::F32)?;
    let cols = ctx.b.reshape(cols, vec![1usize.into(), gw.clone(), 1usize.into()])?;
    let cols = ctx.b.expand(cols, full)?;
    let ids = ctx.b.concat(&[rows, cols], 2)?;
    let ids = ctx.b.reshape(ids, vec![gh.mul(gw), 2usize.into()])?;
    let idx = ctx.b.constant(Literal { dtype: DType::I64, shape: vec![head_dim], values: axis })?;
    let per_ch = ctx.b.gather(ids, idx, 1)?;
    let f = ctx.b.constant(Literal { dtype: DType::F32, shape: vec![head_dim], values: freq })?;
    let angle = ctx.b.mul(per_ch, f)?;
    let cos = ctx.b.unary(UnaryOp::Cos, angle)?;
    let sin = ctx.b.unary(UnaryOp::Sin, angle)?;
    Ok((cos, sin))
}

/// `GlmImageCombinedTimestepSizeEmbeddings` → `silu(t_emb + cond_emb)` `[B, time_embed_dim]`.
fn conditioning(ctx: &mut Ctx, t: V, target_size: V, crop_coords: V, cfg: &Config) -> Result<V> {
    let p = "time_condition_embed";
    let ted = cfg.time_embed_dim;
    let cd = cfg.condition_dim;
    let batch = Dim::sym("batch");
    ctx.scope(&format!("{p}.time_proj"));
    let tp = timestep_sinusoid(ctx, t, ted, true, 0.0, 1.0, 10000.0)?;
    ctx.scope(&format!("{p}.condition_proj"));
    let mut conds = Vec::new();
    for v in [crop_coords, target_size] {
        let flat = ctx.b.reshape(v, vec![batch.mul(&Dim::from(2usize))])?;
        let e = timestep_sinusoid(ctx, flat, cd, true, 0.0, 1.0, 10000.0)?;
        conds.push(ctx.b.reshape(e, vec![batch.clone(), (2 * cd).into()])?);
    }
    let cond = ctx.b.concat(&conds, 1)?;
    let te = timestep_mlp(ctx, &format!("{p}.timestep_embedder"), tp, ted, ted, "silu")?;
    let ce = linear(ctx, &format!("{p}.condition_embedder.linear_1"), cond, ted)?;
    let ce = activation(ctx, "silu", ce)?;
    let ce = linear(ctx, &format!("{p}.condition_embedder.linear_2"), ce, ted)?;
    ctx.scope(p);
    let sum = ctx.b.add(te, ce)?;
    Ok(ctx.b.unary(UnaryOp::Silu, sum)?)
}

/// Projection, per-head LayerNorm (`qk_norm="layer_norm"`) and head split.
fn qk(ctx: &mut Ctx, ap: &str, proj: &str, norm: &str, x: V, dim: usize, heads: usize) -> Result<V> {
    let y = linear(ctx, &format!("{ap}.{proj}"), x, dim)?;
    let y = split_heads(ctx, y, heads)?;
    layer_norm(ctx, &format!("{ap}.{norm}"), y, EPS)
}

/// Rotary embedding on the image part (after the text tokens) of `x [B, H, T+S, D]`.
fn rope_image_part(ctx: &mut Ctx, x: V, txt_len: &Dim, img_len: &Dim, rope: (V, V)) -> Result<V> {
    let parts = ctx.b.split(x, 2, &[txt_len.clone(), img_len.clone()])?;
    let img = apply_rotary_emb(ctx, parts[1], rope.0, rope.1, RotaryPairs::Halves)?;
    Ok(ctx.b.concat(&[parts[0], img], 2)?)
}

/// `GlmImageAttnProcessor`: joint attention over `[text; image]`, rotary on
/// the image tokens. Returns `(image, text)` outputs.
fn joint_attention(ctx: &mut Ctx, ap: &str, img: V, txt: V, rope: (V, V), dim: usize, heads: usize) -> Result<(V, V)> {
    ctx.scope(ap);
    let txt_len = ctx.b.dim(txt, 1);
    let img_len = ctx.b.dim(img, 1);
    let x = ctx.b.concat(&[txt, img], 1)?;
    let q = qk(ctx, ap, "to_q", "norm_q", x, dim, heads)?;
    let k = qk(ctx, ap, "to_k", "norm_k", x, dim, heads)?;
    let v = linear(ctx, &format!("{ap}.to_v"), x, dim)?;
    let v = split_heads(ctx, v, heads)?;
    ctx.scope(&format!("{ap}.rope"));
    let q = rope_image_part(ctx, q, &txt_len, &img_len, rope)?;
    let k = rope_image_part(ctx, k, &txt_len, &img_len, rope)?;
    ctx.scope(ap);
    let a = ctx.b.attention(q, k, v, None, None, false)?;
    let a = merge_heads(ctx, a)?;
    let a = linear(ctx, &format!("{ap}.to_out.0"), a, dim)?;
    let parts = ctx.b.split(a, 1, &[txt_len, img_len])?;
    Ok((parts[1], parts[0]))
}

/// What every block needs besides its streams.
struct Dims {
    dim: usize,
    heads: usize,
    /// Rotary `(cos, sin)` tables `[img_seq, head_dim]`.
    rope: (V, V),
}

/// `GlmImageTransformerBlock` `i` on the image stream `h` and text stream `e`.
fn block(ctx: &mut Ctx, i: usize, h: V, e: V, temb: V, d: &Dims) -> Result<(V, V)> {
    let Dims { dim, heads, rope } = *d;
    let bp = format!("transformer_blocks.{i}");
    let m = linear(ctx, &format!("{bp}.norm1.linear"), temb, 12 * dim)?;
    let m = ctx.b.chunk(m, 12, 1)?;
    let (shift_msa, c_shift_msa, scale_msa, c_scale_msa, gate_msa, c_gate_msa) = (m[0], m[1], m[2], m[3], m[4], m[5]);
    let (shift_mlp, c_shift_mlp, scale_mlp, c_scale_mlp, gate_mlp, c_gate_mlp) = (m[6], m[7], m[8], m[9], m[10], m[11]);

    ctx.scope(&format!("{bp}.norm1.norm"));
    let nh = layer_norm_plain(ctx, h, EPS)?;
    let nh = modulate(ctx, nh, shift_msa, scale_msa)?;
    if i == 0 {
        ctx.role(nh, Role::ModulatedInput);
    }
    ctx.scope(&format!("{bp}.norm1.norm_context"));
    let ne = layer_norm_plain(ctx, e, EPS)?;
    let ne = modulate(ctx, ne, c_shift_msa, c_scale_msa)?;

    let (ah, ae) = joint_attention(ctx, &format!("{bp}.attn1"), nh, ne, rope, dim, heads)?;
    ctx.scope(&bp);
    let ah = gated(ctx, gate_msa, ah)?;
    let h = ctx.b.add(h, ah)?;
    let ae = gated(ctx, c_gate_msa, ae)?;
    let e = ctx.b.add(e, ae)?;

    ctx.scope(&format!("{bp}.norm2"));
    let nh = layer_norm_plain(ctx, h, EPS)?;
    let nh = modulate(ctx, nh, shift_mlp, scale_mlp)?;
    ctx.scope(&format!("{bp}.norm2_context"));
    let ne = layer_norm_plain(ctx, e, EPS)?;
    let ne = modulate(ctx, ne, c_shift_mlp, c_scale_mlp)?;
    let fh = feed_forward(ctx, &format!("{bp}.ff"), nh, 4 * dim, dim, "gelu-approximate")?;
    let fe = feed_forward(ctx, &format!("{bp}.ff"), ne, 4 * dim, dim, "gelu-approximate")?;
    ctx.scope(&bp);
    let fh = gated(ctx, gate_mlp, fh)?;
    let h = ctx.b.add(h, fh)?;
    let fe = gated(ctx, c_gate_mlp, fe)?;
    let e = ctx.b.add(e, fe)?;
    Ok((h, e))
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let heads = cfg.num_attention_heads;
    let hd = cfg.attention_head_dim;
    if heads == 0 || hd == 0 {
        return Err(config_err(raw, "num_attention_heads", "heads and head dim must be positive".into()));
    }
    if !hd.is_multiple_of(4) {
        return Err(config_err(
            raw,
            "attention_head_dim",
            format!("{hd} is not a multiple of 4 (the 2-D rotary embedding splits it into row and column pairs)"),
        ));
    }
    let p = cfg.patch_size;
    if p == 0 {
        return Err(config_err(raw, "patch_size", "must be positive".into()));
    }
    let dim = heads * hd;
    let c = cfg.in_channels;
    let batch = Dim::sym("batch");

    let x = ctx.b.input("hidden_states", DType::F32, vec![batch.clone(), c.into(), Dim::sym("height"), Dim::sym("width")])?;
    let text = ctx.b.input("encoder_hidden_states", DType::F32, vec![batch.clone(), Dim::sym("txt_seq"), cfg.text_embed_dim.into()])?;

    // 1. Image projector: Linear over p×p patches, as a strided conv.
    ctx.scope("image_projector.proj");
    let w = ctx.w("image_projector.proj.weight", &[dim, c * p * p])?;
    let w = ctx.b.reshape(w, vec![dim.into(), c.into(), p.into(), p.into()])?;
    let bias = ctx.w_opt("image_projector.proj.bias", &[dim])?;
    let conv = ctx.b.conv(x, w, bias, &[p, p], &[0, 0], &[1, 1], 1)?;
    let cs = ctx.b.shape(conv);
    let (gh, gw) = (cs[2].clone(), cs[3].clone());
    let seq = gh.mul(&gw);
    let flat = ctx.b.reshape(conv, vec![batch.clone(), dim.into(), seq.clone()])?;
    let img = ctx.b.transpose(flat, &[0, 2, 1])?;

    let prior_id = ctx.b.input("prior_token_id", DType::I64, vec![batch.clone(), seq.clone()])?;
    let prior_drop = ctx.b.input("prior_token_drop", DType::Bool, vec![batch.clone(), seq.clone()])?;
    let t = ctx.b.input("timestep", DType::F32, vec![batch.clone()])?;
    let target_size = ctx.b.input("target_size", DType::F32, vec![batch.clone(), 2usize.into()])?;
    let crop_coords = ctx.b.input("crop_coords", DType::F32, vec![batch.clone(), 2usize.into()])?;

    let rope = rope_tables(ctx, &gh, &gw, hd)?;
    let d = Dims { dim, heads, rope };

    // 2. Text (glyph) projector, prior-token embedding (dropped → 0), conditioning.
    let mut e = feed_forward(ctx, "glyph_projector", text, dim, dim, "gelu")?;
    ctx.scope("prior_token_embedding");
    let table = ctx.w("prior_token_embedding.weight", &[cfg.prior_vq_quantizer_codebook_size, dim])?;
    let prior = ctx.b.gather(table, prior_id, 0)?;
    let drop = ctx.b.reshape(prior_drop, vec![batch.clone(), seq.clone(), 1usize.into()])?;
    let zero = ctx.b.scalar(DType::F32, 0.0)?;
    let prior = ctx.b.where_(drop, zero, prior)?;
    let prior = feed_forward(ctx, "prior_projector", prior, dim, dim, "linear-silu")?;
    ctx.scope("prior_projector");
    let mut h = ctx.b.add(img, prior)?;

    let temb = conditioning(ctx, t, target_size, crop_coords, &cfg)?;
    ctx.role(temb, Role::TimestepEmbedding);

    // 3. Blocks.
    ctx.role(h, Role::ResidualIn);
    for i in 0..cfg.num_layers {
        ctx.block(Some(i));
        (h, e) = block(ctx, i, h, e, temb, &d)?;
        ctx.inter(&format!("transformer_blocks.{i}.0"), h);
        ctx.inter(&format!("transformer_blocks.{i}.1"), e);
    }
    ctx.block(None);
    ctx.role(h, Role::ResidualOut);

    // 4. Output AdaLN (no SiLU; scale first), projection, unpatchify.
    let m = linear(ctx, "norm_out.linear", temb, 2 * dim)?;
    let m = ctx.b.chunk(m, 2, 1)?;
    let (scale, shift) = (m[0], m[1]);
    let n = layer_norm(ctx, "norm_out.norm", h, EPS)?;
    let sc = unsqueeze1(ctx, scale)?;
    let sc = ctx.b.add_scalar(sc, 1.0)?;
    let n = ctx.b.mul(n, sc)?;
    let sh = unsqueeze1(ctx, shift)?;
    let n = ctx.b.add(n, sh)?;
    let o = linear(ctx, "proj_out", n, p * p * cfg.out_channels)?;
    ctx.scope("unpatchify");
    let oc = cfg.out_channels;
    let o = ctx.b.reshape(o, vec![batch.clone(), gh.clone(), gw.clone(), oc.into(), p.into(), p.into()])?;
    let o = ctx.b.transpose(o, &[0, 3, 1, 4, 2, 5])?;
    let o = ctx.b.reshape(o, vec![batch, oc.into(), gh.mul(&Dim::from(p)), gw.mul(&Dim::from(p))])?;
    ctx.b.output("sample", o);
    Ok(())
}
