//! Wan: diffusers `WanTransformer3DModel`
//! (models/transformers/transformer_wan.py) with `WanTransformerBlock`,
//! `WanAttention` / `WanAttnProcessor`, `WanRotaryPosEmbed`,
//! `WanTimeTextImageEmbedding` and `WanImageEmbedding`.
//!
//! Shapes: `hidden_states [batch, C, frames, height, width]` and
//! `encoder_hidden_states [batch, txt_seq, text_dim]` are symbolic in every
//! size but the channels. The `Conv3d` patch embedding is a strided `conv`,
//! so the patch grid is `((frames - p_t) / p_t + 1, ...)` — diffusers' floor
//! division, checked exact at run time (a size the patch does not divide is
//! an error rather than a silently cropped video). The rotary tables are
//! computed in the graph from `iota` over that grid (see
//! [`crate::layers::rope`]), so they need no precomputed size; unlike
//! diffusers, grids longer than `rope_max_seq_len` are not rejected.
//!
//! Supported: Wan2.1 / Wan2.2 T2V (1-D `timestep [batch]`), and I2V
//! (`image_dim` → extra input `encoder_hidden_states_image [batch,
//! img_seq, image_dim]`; `added_kv_proj_dim` → the image part of the
//! cross-attention context goes through `add_k_proj` / `add_v_proj`). As in
//! diffusers, that image part is everything but the last 512 context tokens
//! (the text encoder length it hardcodes). There is no I2V fixture: the
//! image branch is checked only structurally (tests/parity/wan.rs). Not supported: `pos_embed_seq_len`
//! (FLF2V: it folds pairs of batch entries together) and Wan2.2 TI2V's
//! per-token `timestep [batch, seq]`.
//!
//! diffusers builds `norm_q` / `norm_k` as RMSNorm across heads whatever
//! `qk_norm` says (the field is unused there), and so does this module.

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::embed::{timestep_mlp, timestep_sinusoid};
use crate::layers::rope::{apply_rotary_emb, pos_embed, RotaryPairs};
use crate::layers::{activation, feed_forward, layer_norm_plain, linear, merge_heads, split_heads};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{DType, Dim, Role, UnaryOp};
use serde::Deserialize;

/// Context tokens diffusers reserves for text when it splits off the image
/// part in I2V cross-attention (`WanAttnProcessor`).
const TEXT_CONTEXT_LEN: usize = 512;

/// `config.json` of `WanTransformer3DModel` (defaults as in diffusers).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "patch")]
    pub patch_size: Vec<usize>,
    #[serde(default = "d40")]
    pub num_attention_heads: usize,
    #[serde(default = "d128")]
    pub attention_head_dim: usize,
    #[serde(default = "d16")]
    pub in_channels: usize,
    /// `None` (or 0) means `in_channels`, as `out_channels or in_channels`.
    #[serde(default = "some16")]
    pub out_channels: Option<usize>,
    #[serde(default = "d4096")]
    pub text_dim: usize,
    #[serde(default = "d256")]
    pub freq_dim: usize,
    #[serde(default = "d13824")]
    pub ffn_dim: usize,
    #[serde(default = "d40")]
    pub num_layers: usize,
    #[serde(default = "yes")]
    pub cross_attn_norm: bool,
    #[serde(default = "qk")]
    pub qk_norm: Option<String>,
    #[serde(default = "eps6")]
    pub eps: f64,
    #[serde(default)]
    pub image_dim: Option<usize>,
    #[serde(default)]
    pub added_kv_proj_dim: Option<usize>,
    #[serde(default = "d1024")]
    pub rope_max_seq_len: usize,
    #[serde(default)]
    pub pos_embed_seq_len: Option<usize>,
}

fn patch() -> Vec<usize> {
    vec![1, 2, 2]
}
fn d16() -> usize {
    16
}
fn some16() -> Option<usize> {
    Some(16)
}
fn d40() -> usize {
    40
}
fn d128() -> usize {
    128
}
fn d256() -> usize {
    256
}
fn d1024() -> usize {
    1024
}
fn d4096() -> usize {
    4096
}
fn d13824() -> usize {
    13824
}
fn yes() -> bool {
    true
}
fn qk() -> Option<String> {
    Some("rms_norm_across_heads".into())
}
fn eps6() -> f64 {
    1e-6
}

pub fn family() -> Family {
    Family { name: "wan", classes: &["WanTransformer3DModel"], build, stage: "transformer" }
}

fn config_err(raw: &RawConfig, field: &str, message: String) -> ImportError {
    ImportError::Config { path: raw.path.display().to_string(), field: field.into(), message }
}

/// What every block needs besides its streams.
struct Dims {
    heads: usize,
    dim: usize,
    eps: f64,
    /// Rotary `(cos, sin)` tables `[seq, head_dim]`.
    rope: (V, V),
}

/// `torch.nn.RMSNorm(n, eps)` with its (required) weight, over the last dim.
fn rms_norm_w(ctx: &mut Ctx, p: &str, x: V, n: usize, eps: f64) -> Result<V> {
    ctx.scope(p);
    let w = ctx.w(&format!("{p}.weight"), &[n])?;
    Ok(ctx.b.rms_norm(x, Some(w), eps)?)
}

/// `FP32LayerNorm(n, eps, elementwise_affine=True)` with required weight and bias.
fn layer_norm_affine(ctx: &mut Ctx, p: &str, x: V, n: usize, eps: f64) -> Result<V> {
    ctx.scope(p);
    let w = ctx.w(&format!("{p}.weight"), &[n])?;
    let b = ctx.w(&format!("{p}.bias"), &[n])?;
    Ok(ctx.b.layer_norm(x, Some(w), Some(b), eps)?)
}

/// `x · (1 + scale) + shift` with `scale`, `shift` `[B, 1, D]`.
fn modulate3(ctx: &mut Ctx, x: V, shift: V, scale: V) -> Result<V> {
    let s1 = ctx.b.add_scalar(scale, 1.0)?;
    let y = ctx.b.mul(x, s1)?;
    Ok(ctx.b.add(y, shift)?)
}

/// Projection, across-heads RMSNorm and head split of one of q / k.
fn proj_norm_heads(ctx: &mut Ctx, ap: &str, proj: &str, norm: &str, x: V, d: &Dims) -> Result<V> {
    let y = linear(ctx, &format!("{ap}.{proj}"), x, d.dim)?;
    let y = rms_norm_w(ctx, &format!("{ap}.{norm}"), y, d.dim, d.eps)?;
    split_heads(ctx, y, d.heads)
}

/// `WanAttention` self-attention with rotary embedding.
fn self_attention(ctx: &mut Ctx, ap: &str, x: V, d: &Dims) -> Result<V> {
    let q = proj_norm_heads(ctx, ap, "to_q", "norm_q", x, d)?;
    let k = proj_norm_heads(ctx, ap, "to_k", "norm_k", x, d)?;
    let v = linear(ctx, &format!("{ap}.to_v"), x, d.dim)?;
    let v = split_heads(ctx, v, d.heads)?;
    ctx.scope(&format!("{ap}.rope"));
    let q = apply_rotary_emb(ctx, q, d.rope.0, d.rope.1, RotaryPairs::Interleaved)?;
    let k = apply_rotary_emb(ctx, k, d.rope.0, d.rope.1, RotaryPairs::Interleaved)?;
    let a = ctx.b.attention(q, k, v, None, None, false)?;
    let a = merge_heads(ctx, a)?;
    linear(ctx, &format!("{ap}.to_out.0"), a, d.dim)
}

/// `WanAttention` cross-attention to `context`; with `add_k_proj` the first
/// `len - 512` context tokens are image tokens attended separately.
fn cross_attention(ctx: &mut Ctx, ap: &str, x: V, context: V, added_kv: bool, d: &Dims) -> Result<V> {
    let (img, txt) = if added_kv {
        ctx.scope(ap);
        let len = ctx.b.dim(context, 1);
        let text = Dim::from(TEXT_CONTEXT_LEN);
        let parts = ctx.b.split(context, 1, &[len.sub(&text), text])?;
        (Some(parts[0]), parts[1])
    } else {
        (None, context)
    };
    let q = proj_norm_heads(ctx, ap, "to_q", "norm_q", x, d)?;
    let k = proj_norm_heads(ctx, ap, "to_k", "norm_k", txt, d)?;
    let v = linear(ctx, &format!("{ap}.to_v"), txt, d.dim)?;
    let v = split_heads(ctx, v, d.heads)?;
    ctx.scope(ap);
    let mut a = ctx.b.attention(q, k, v, None, None, false)?;
    if let Some(img) = img {
        let ki = proj_norm_heads(ctx, ap, "add_k_proj", "norm_added_k", img, d)?;
        let vi = linear(ctx, &format!("{ap}.add_v_proj"), img, d.dim)?;
        let vi = split_heads(ctx, vi, d.heads)?;
        ctx.scope(ap);
        let ai = ctx.b.attention(q, ki, vi, None, None, false)?;
        a = ctx.b.add(a, ai)?;
    }
    let a = merge_heads(ctx, a)?;
    linear(ctx, &format!("{ap}.to_out.0"), a, d.dim)
}

/// `WanTransformerBlock` `i`; `tproj [B, 6, D]` is the projected timestep.
fn block(ctx: &mut Ctx, i: usize, h: V, context: V, tproj: V, cfg: &Config, d: &Dims) -> Result<V> {
    let bp = format!("blocks.{i}");
    ctx.scope(&bp);
    let table = ctx.w(&format!("{bp}.scale_shift_table"), &[1, 6, d.dim])?;
    let m = ctx.b.add(table, tproj)?;
    let m = ctx.b.chunk(m, 6, 1)?;
    let (shift_msa, scale_msa, gate_msa, c_shift, c_scale, c_gate) = (m[0], m[1], m[2], m[3], m[4], m[5]);

    // 1. Self-attention on the adaLN-modulated stream.
    ctx.scope(&format!("{bp}.norm1"));
    let n = layer_norm_plain(ctx, h, d.eps)?;
    let n = modulate3(ctx, n, shift_msa, scale_msa)?;
    if i == 0 {
        ctx.role(n, Role::ModulatedInput);
    }
    let a = self_attention(ctx, &format!("{bp}.attn1"), n, d)?;
    ctx.scope(&bp);
    let a = ctx.b.mul(a, gate_msa)?;
    let h = ctx.b.add(h, a)?;

    // 2. Cross-attention to the text (and image) context, ungated.
    let n = if cfg.cross_attn_norm { layer_norm_affine(ctx, &format!("{bp}.norm2"), h, d.dim, d.eps)? } else { h };
    let a = cross_attention(ctx, &format!("{bp}.attn2"), n, context, cfg.added_kv_proj_dim.is_some(), d)?;
    ctx.scope(&bp);
    let h = ctx.b.add(h, a)?;

    // 3. Feed-forward on the norm3-normalised, modulated stream.
    ctx.scope(&format!("{bp}.norm3"));
    let n = layer_norm_plain(ctx, h, d.eps)?;
    let n = modulate3(ctx, n, c_shift, c_scale)?;
    let f = feed_forward(ctx, &format!("{bp}.ffn"), n, cfg.ffn_dim, d.dim, "gelu-approximate")?;
    ctx.scope(&bp);
    let f = ctx.b.mul(f, c_gate)?;
    Ok(ctx.b.add(h, f)?)
}

/// `WanImageEmbedding` (no `pos_embed`): LN → FeedForward(gelu, mult 1) → LN.
fn image_embedding(ctx: &mut Ctx, x: V, image_dim: usize, dim: usize) -> Result<V> {
    let p = "condition_embedder.image_embedder";
    let y = layer_norm_affine(ctx, &format!("{p}.norm1"), x, image_dim, 1e-5)?;
    let y = feed_forward(ctx, &format!("{p}.ff"), y, image_dim, dim, "gelu")?;
    layer_norm_affine(ctx, &format!("{p}.norm2"), y, dim, 1e-5)
}

/// `WanRotaryPosEmbed`: per-token `(frame, row, col)` over the patch grid
/// `[pf, ph, pw]` → `(cos, sin)` tables `[pf·ph·pw, head_dim]`.
fn rope_tables(ctx: &mut Ctx, grid: [Dim; 3], head_dim: usize) -> Result<(V, V)> {
    ctx.scope("rope");
    let h_dim = 2 * (head_dim / 6);
    let t_dim = head_dim - 2 * h_dim;
    let full: Vec<Dim> = vec![grid[0].clone(), grid[1].clone(), grid[2].clone(), Dim::from(1usize)];
    let mut cols = Vec::new();
    for (a, n) in grid.iter().enumerate() {
        let pos = ctx.b.iota(n.clone(), DType::F32)?;
        let mut shape = vec![Dim::from(1usize); 4];
        shape[a] = n.clone();
        let pos = ctx.b.reshape(pos, shape)?;
        cols.push(ctx.b.expand(pos, full.clone())?);
    }
    let ids = ctx.b.concat(&cols, 3)?;
    let seq = Dim::product(&grid);
    let ids = ctx.b.reshape(ids, vec![seq, Dim::from(3usize)])?;
    pos_embed(ctx, ids, &[t_dim, h_dim, h_dim], 10000.0)
}

fn check_config(raw: &RawConfig, cfg: &Config) -> Result<[usize; 3]> {
    let [pt, ph, pw] = cfg.patch_size[..] else {
        return Err(config_err(raw, "patch_size", format!("expected 3 sizes (t, h, w), found {:?}", cfg.patch_size)));
    };
    if pt == 0 || ph == 0 || pw == 0 {
        return Err(config_err(raw, "patch_size", format!("patch sizes must be positive, found {:?}", cfg.patch_size)));
    }
    if cfg.num_attention_heads == 0 || cfg.attention_head_dim == 0 {
        return Err(config_err(raw, "num_attention_heads", "heads and head dim must be positive".into()));
    }
    if !cfg.attention_head_dim.is_multiple_of(2) {
        return Err(config_err(raw, "attention_head_dim", format!("{} is odd; the rotary embedding needs channel pairs", cfg.attention_head_dim)));
    }
    if let Some(n) = cfg.pos_embed_seq_len {
        return Err(config_err(raw, "pos_embed_seq_len", format!("{n}: the FLF2V image position embedding is not supported")));
    }
    if let Some(k) = cfg.added_kv_proj_dim {
        let dim = cfg.num_attention_heads * cfg.attention_head_dim;
        if k != dim {
            // diffusers builds add_k_proj as Linear(added_kv_proj_dim, inner_dim) but feeds it the
            // embedded context, which has inner_dim features.
            return Err(config_err(raw, "added_kv_proj_dim", format!("{k} differs from the inner dim {dim} of the context it projects")));
        }
    }
    Ok([pt, ph, pw])
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let [pt, ph, pw] = check_config(raw, &cfg)?;
    let dim = cfg.num_attention_heads * cfg.attention_head_dim;
    let out_ch = cfg.out_channels.filter(|&c| c != 0).unwrap_or(cfg.in_channels);
    let batch = Dim::sym("batch");

    let x = ctx.b.input("hidden_states", DType::F32, vec![batch.clone(), cfg.in_channels.into(), Dim::sym("frames"), Dim::sym("height"), Dim::sym("width")])?;
    let t = ctx.b.input("timestep", DType::F32, vec![batch.clone()])?;
    let text = ctx.b.input("encoder_hidden_states", DType::F32, vec![batch.clone(), Dim::sym("txt_seq"), cfg.text_dim.into()])?;
    let image = match cfg.image_dim {
        Some(n) => Some(ctx.b.input("encoder_hidden_states_image", DType::F32, vec![batch.clone(), Dim::sym("img_seq"), n.into()])?),
        None => None,
    };

    // 1. Patch embedding (Conv3d, stride = kernel) → tokens [B, S, D].
    ctx.scope("patch_embedding");
    let w = ctx.w("patch_embedding.weight", &[dim, cfg.in_channels, pt, ph, pw])?;
    let bias = ctx.w_opt("patch_embedding.bias", &[dim])?;
    let conv = ctx.b.conv(x, w, bias, &[pt, ph, pw], &[0, 0, 0], &[1, 1, 1], 1)?;
    let cs = ctx.b.shape(conv);
    let grid = [cs[2].clone(), cs[3].clone(), cs[4].clone()];
    let seq = Dim::product(&grid);
    let flat = ctx.b.reshape(conv, vec![batch.clone(), dim.into(), seq])?;
    let mut h = ctx.b.transpose(flat, &[0, 2, 1])?;
    let rope = rope_tables(ctx, grid.clone(), cfg.attention_head_dim)?;
    let d = Dims { heads: cfg.num_attention_heads, dim, eps: cfg.eps, rope };

    // 2. Conditioning: timestep → temb → 6 modulation vectors; text (+ image) context.
    let ce = "condition_embedder";
    ctx.scope(&format!("{ce}.timesteps_proj"));
    let tp = timestep_sinusoid(ctx, t, cfg.freq_dim, true, 0.0, 1.0, 10000.0)?;
    let temb = timestep_mlp(ctx, &format!("{ce}.time_embedder"), tp, dim, dim, "silu")?;
    ctx.role(temb, Role::TimestepEmbedding);
    let act = ctx.b.unary(UnaryOp::Silu, temb)?;
    let tproj = linear(ctx, &format!("{ce}.time_proj"), act, 6 * dim)?;
    let tproj = ctx.b.reshape(tproj, vec![batch.clone(), 6usize.into(), dim.into()])?;
    let txt = linear(ctx, &format!("{ce}.text_embedder.linear_1"), text, dim)?;
    let txt = activation(ctx, "gelu_tanh", txt)?;
    let mut context = linear(ctx, &format!("{ce}.text_embedder.linear_2"), txt, dim)?;
    if let (Some(img), Some(n)) = (image, cfg.image_dim) {
        let img = image_embedding(ctx, img, n, dim)?;
        ctx.scope(ce);
        context = ctx.b.concat(&[img, context], 1)?;
    }

    // 3. Blocks.
    ctx.role(h, Role::ResidualIn);
    for i in 0..cfg.num_layers {
        ctx.block(Some(i));
        h = block(ctx, i, h, context, tproj, &cfg, &d)?;
        ctx.inter(&format!("blocks.{i}.0"), h);
    }
    ctx.block(None);
    ctx.role(h, Role::ResidualOut);

    // 4. Output norm (shift, scale from temb, no SiLU), projection, unpatchify.
    ctx.scope("norm_out");
    let table = ctx.w("scale_shift_table", &[1, 2, dim])?;
    let te = ctx.b.reshape(temb, vec![batch.clone(), 1usize.into(), dim.into()])?;
    let ss = ctx.b.add(table, te)?;
    let ss = ctx.b.chunk(ss, 2, 1)?;
    let n = layer_norm_plain(ctx, h, d.eps)?;
    let n = modulate3(ctx, n, ss[0], ss[1])?;
    let o = linear(ctx, "proj_out", n, out_ch * pt * ph * pw)?;
    ctx.scope("unpatchify");
    let [f, gh, gw] = grid;
    let o = ctx.b.reshape(o, vec![batch.clone(), f.clone(), gh.clone(), gw.clone(), pt.into(), ph.into(), pw.into(), out_ch.into()])?;
    let o = ctx.b.transpose(o, &[0, 7, 1, 4, 2, 5, 3, 6])?;
    let o = ctx.b.reshape(o, vec![batch, out_ch.into(), f.mul(&Dim::from(pt)), gh.mul(&Dim::from(ph)), gw.mul(&Dim::from(pw))])?;
    ctx.b.output("sample", o);
    Ok(())
}
