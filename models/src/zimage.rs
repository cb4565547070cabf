//! Z-Image: diffusers `ZImageTransformer2DModel`
//! (models/transformers/transformer_z_image.py) in its basic (non-omni)
//! mode: `TimestepEmbedder`, `ZImageTransformerBlock` (with
//! `ZSingleStreamAttnProcessor`, SwiGLU `FeedForward`), `FinalLayer`,
//! `RopeEmbedder`, `patchify_and_embed` / `_prepare_sequence` /
//! `_build_unified_sequence` / `unpatchify`.
//!
//! ## One sample per program
//! diffusers takes *lists* (one latent `[C, F, H, W]` and one caption
//! `[L, cap_feat_dim]` per sample) and batches them internally by padding to
//! the longest sequence with a key mask, which is exactly equivalent to running
//! every sample on its own. The program therefore describes ONE sample:
//! inputs `x [C, frames, height, width]`, `cap_feats [cap_seq, cap_feat_dim]`,
//! `t [1]` (the pipeline's `(1000 - t) / 1000`); output `sample [C, F, H, W]`.
//! A runtime calls it once per list element.
//!
//! ## Padding to a multiple of 32 with symbolic lengths
//! The image tokens and the caption tokens are each padded to a multiple of
//! `SEQ_MULTI_OF = 32` with a learned pad token (`x_pad_token`,
//! `cap_pad_token`), and those pad tokens are *not* masked: they take part
//! in attention, so their number changes the result. The padded length
//! `⌈n/32⌉·32` is not expressible as a [`Dim`] of a symbolic `n`, so rather
//! than fixing the caption length (and image size) at import time, each
//! sequence gets `n + 31` slots: the `n` tokens, then 31 pad tokens. The
//! first `⌈n/32⌉·32` slots are exactly diffusers' padded sequence; the other
//! `31 - (-n mod 32)` slots are surplus and are masked out as attention
//! *keys* by an additive mask computed in the graph from `iota(n + 31)`
//! (`slot < ((n + 31) div 32)·32`). Surplus slots still compute (finite,
//! unused) values of their own and are dropped at the end, so the valid
//! slots match diffusers exactly, one program serves every caption length
//! and image size, and the cost is at most 31 extra tokens per sequence
//! plus a key mask. The image's rotary frame offset (padded caption length + 1)
//! is computed the same way. Patchifying uses a stride-`p` convolution with
//! the `x_embedder` weight rearranged (the identical sum): a reshape
//! `height → [height/p, p]` would not verify with symbolic dims (the IR does
//! not simplify `(h/2)·2` back to `h`), a convolution's output dims do.
//!
//! Intermediates (`inter.noise_refiner.{i}.0`, `inter.context_refiner.{i}.0`,
//! `inter.layers.{i}.0`) are output in this slot layout `[1, slots, dim]`:
//! the image sequence is slots `0..⌈N/32⌉·32` of the `N + 31`, the caption
//! follows at slot `N + 31` in the unified sequence.
//!
//! Annotations: blocks are numbered in execution order (noise refiner
//! `0..r`, context refiner `r..2r`, main layers `2r..2r+n`); the modulated
//! input is that of `noise_refiner.0` (the first block, image tokens);
//! `residual_in` is the padded image sequence entering the stack and
//! `residual_out` the image slots of the unified sequence leaving it (the
//! caption part never reaches the output), as for Flux.
//!
//! Patch size: the forward's `patch_size` / `f_patch_size` arguments pick
//! one `all_x_embedder` / `all_final_layer` pair; the program uses the only
//! pair when the config has one, else the forward's default `(2, 1)`.
//! `n_kv_heads` is unused, as in diffusers (its `Attention` has `n_heads`
//! key/value heads); the omni-mode SigLIP weights are not used.

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::embed::timestep_sinusoid;
use crate::layers::rope::{apply_rotary_emb, pos_embed, RotaryPairs};
use crate::layers::{gated, layer_norm_plain, linear, merge_heads, rms_norm, split_heads, unsqueeze1};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{BinaryOp, CmpOp, DType, Dim, Literal, ReduceOp, Role, UnaryOp};
use serde::Deserialize;

/// diffusers `SEQ_MULTI_OF`: every sequence is padded to a multiple of it.
pub const SEQ_MULTI_OF: usize = 32;
/// diffusers `ADALN_EMBED_DIM`: width of the timestep embedding is `min(dim, 256)`.
const ADALN_EMBED_DIM: usize = 256;
/// `TimestepEmbedder(frequency_embedding_size=256, mid_size=1024)`.
const T_FREQ_DIM: usize = 256;
const T_MID: usize = 1024;
/// Additive attention-mask value for surplus slots.
const MASKED: f64 = -1e30;

/// `config.json` of `ZImageTransformer2DModel` (defaults as in diffusers).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "p2")]
    pub all_patch_size: Vec<usize>,
    #[serde(default = "p1")]
    pub all_f_patch_size: Vec<usize>,
    #[serde(default = "d16")]
    pub in_channels: usize,
    #[serde(default = "d3840")]
    pub dim: usize,
    #[serde(default = "d30")]
    pub n_layers: usize,
    #[serde(default = "d2")]
    pub n_refiner_layers: usize,
    #[serde(default = "d30")]
    pub n_heads: usize,
    #[serde(default = "d30")]
    pub n_kv_heads: usize,
    #[serde(default = "eps5")]
    pub norm_eps: f64,
    #[serde(default = "yes")]
    pub qk_norm: bool,
    #[serde(default = "d2560")]
    pub cap_feat_dim: usize,
    #[serde(default)]
    pub siglip_feat_dim: Option<usize>,
    #[serde(default = "theta")]
    pub rope_theta: f64,
    #[serde(default = "t_scale")]
    pub t_scale: f64,
    #[serde(default = "axes_dims")]
    pub axes_dims: Vec<usize>,
    #[serde(default = "axes_lens")]
    pub axes_lens: Vec<usize>,
}

fn p2() -> Vec<usize> {
    vec![2]
}
fn p1() -> Vec<usize> {
    vec![1]
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
fn d2560() -> usize {
    2560
}
fn d3840() -> usize {
    3840
}
fn eps5() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn theta() -> f64 {
    256.0
}
fn t_scale() -> f64 {
    1000.0
}
fn axes_dims() -> Vec<usize> {
    vec![32, 48, 48]
}
fn axes_lens() -> Vec<usize> {
    vec![1024, 512, 512]
}

pub fn family() -> Family {
    Family { name: "zimage", classes: &["ZImageTransformer2DModel"], build, stage: "transformer" }
}

/// Sizes derived from the config.
struct Dims {
    dim: usize,
    heads: usize,
    /// `heads · (dim // heads)`: width of q/k/v.
    inner: usize,
    /// `int(dim / 3 * 8)`.
    ffn: usize,
    adaln: usize,
    eps: f64,
    qk_norm: bool,
    /// Spatial and temporal patch size.
    p: usize,
    pf: usize,
    out_ch: usize,
}

fn config_error(raw: &RawConfig, field: &str, message: String) -> ImportError {
    ImportError::Config { path: raw.path.display().to_string(), field: field.into(), message }
}

fn check(raw: &RawConfig, cfg: &Config) -> Result<Dims> {
    if cfg.all_patch_size.len() != cfg.all_f_patch_size.len() || cfg.all_patch_size.is_empty() {
        return Err(config_error(
            raw,
            "all_patch_size",
            format!("{:?} and all_f_patch_size {:?} must be non-empty lists of equal length", cfg.all_patch_size, cfg.all_f_patch_size),
        ));
    }
    let pairs: Vec<(usize, usize)> = cfg.all_patch_size.iter().copied().zip(cfg.all_f_patch_size.iter().copied()).collect();
    let (p, pf) = if pairs.len() == 1 {
        pairs[0]
    } else if pairs.contains(&(2, 1)) {
        (2, 1)
    } else {
        return Err(config_error(raw, "all_patch_size", format!("several patch sizes {pairs:?} and none is the forward's default (2, 1)")));
    };
    if p == 0 || pf == 0 {
        return Err(config_error(raw, "all_patch_size", format!("patch size ({p}, {pf}) must be positive")));
    }
    if cfg.n_heads == 0 || cfg.dim < cfg.n_heads {
        return Err(config_error(raw, "n_heads", format!("{} heads for dim {}", cfg.n_heads, cfg.dim)));
    }
    let head_dim = cfg.dim / cfg.n_heads;
    let rope: usize = cfg.axes_dims.iter().sum();
    if rope != head_dim {
        return Err(config_error(raw, "axes_dims", format!("{:?} sums to {rope} but the head dim (dim // n_heads) is {head_dim}", cfg.axes_dims)));
    }
    if let Some(d) = cfg.axes_dims.iter().find(|d| *d % 2 != 0) {
        return Err(config_error(raw, "axes_dims", format!("axis size {d} is odd; rotary axes need an even number of channels")));
    }
    if cfg.axes_lens.len() != cfg.axes_dims.len() {
        return Err(config_error(raw, "axes_lens", format!("{} entries but axes_dims has {}", cfg.axes_lens.len(), cfg.axes_dims.len())));
    }
    if cfg.axes_dims.len() != 3 {
        return Err(config_error(raw, "axes_dims", format!("{} rope axes; Z-Image positions are (frame, row, col)", cfg.axes_dims.len())));
    }
    Ok(Dims {
        dim: cfg.dim,
        heads: cfg.n_heads,
        inner: cfg.n_heads * head_dim,
        ffn: (cfg.dim as f64 / 3.0 * 8.0) as usize,
        adaln: cfg.dim.min(ADALN_EMBED_DIM),
        eps: cfg.norm_eps,
        qk_norm: cfg.qk_norm,
        p,
        pf,
        out_ch: cfg.in_channels,
    })
}

/// A padded sequence in slot layout: `x [1, n + 31, D]`, its additive key
/// mask `[1, 1, 1, n + 31]` and rotary tables `[n + 31, head_dim]`.
struct Seq {
    x: V,
    mask: V,
    cos: V,
    sin: V,
}

/// `[1]` i64: `⌈n/32⌉·32` for a sequence of `slots = n + 31`, and the
/// additive key mask of those slots.
fn slot_mask(ctx: &mut Ctx, slots: &Dim) -> Result<(V, V)> {
    let j = ctx.b.iota(slots.clone(), DType::I64)?;
    let last = ctx.b.reduce(ReduceOp::Max, j, &[0], true)?;
    let count = ctx.b.add_scalar(last, 1.0)?;
    let blocks = ctx.b.binary_scalar(BinaryOp::Div, count, SEQ_MULTI_OF as f64)?;
    let padded = ctx.b.mul_scalar(blocks, SEQ_MULTI_OF as f64)?;
    let valid = ctx.b.compare(CmpOp::Lt, j, padded)?;
    let zero = ctx.b.scalar(DType::F32, 0.0)?;
    let neg = ctx.b.scalar(DType::F32, MASKED)?;
    let m = ctx.b.where_(valid, zero, neg)?;
    let m = ctx.b.reshape(m, vec![1usize.into(), 1usize.into(), 1usize.into(), slots.clone()])?;
    Ok((padded, m))
}

/// `tokens [n, D]` followed by 31 copies of the pad token `{name} [1, D]`,
/// as `[1, n + 31, D]`.
fn pad_slots(ctx: &mut Ctx, tokens: V, name: &str, dim: usize) -> Result<V> {
    ctx.scope(name);
    let pad = ctx.w(name, &[1, dim])?;
    let pads = ctx.b.expand(pad, vec![(SEQ_MULTI_OF - 1).into(), dim.into()])?;
    let s = ctx.b.concat(&[tokens, pads], 0)?;
    let slots = ctx.b.dim(s, 0);
    Ok(ctx.b.reshape(s, vec![1usize.into(), slots, dim.into()])?)
}

/// `[d0, d1, ...]` → `[1, d0, d1, ...]`.
fn lead1(ctx: &mut Ctx, x: V) -> Result<V> {
    let mut s = vec![Dim::from(1usize)];
    s.extend(ctx.b.shape(x));
    Ok(ctx.b.reshape(x, s)?)
}

/// i64 `iota(len)` shaped for broadcasting over the `[F, H, W]` grid along `axis`.
fn grid_axis(ctx: &mut Ctx, grid: &[Dim; 3], axis: usize) -> Result<V> {
    let i = ctx.b.iota(grid[axis].clone(), DType::I64)?;
    let mut shape = vec![Dim::from(1usize); 3];
    shape[axis] = grid[axis].clone();
    let i = ctx.b.reshape(i, shape)?;
    Ok(ctx.b.expand(i, grid.to_vec())?)
}

/// `ZSingleStreamAttnProcessor` with the key mask and rotary tables of `s`.
fn attention(ctx: &mut Ctx, p: &str, x: V, s: &Seq, d: &Dims) -> Result<V> {
    let q = linear(ctx, &format!("{p}.to_q"), x, d.inner)?;
    let k = linear(ctx, &format!("{p}.to_k"), x, d.inner)?;
    let v = linear(ctx, &format!("{p}.to_v"), x, d.inner)?;
    let mut q = split_heads(ctx, q, d.heads)?;
    let mut k = split_heads(ctx, k, d.heads)?;
    let v = split_heads(ctx, v, d.heads)?;
    if d.qk_norm {
        // diffusers `Attention(qk_norm="rms_norm", eps=1e-5)`.
        q = rms_norm(ctx, &format!("{p}.norm_q"), q, 1e-5)?;
        k = rms_norm(ctx, &format!("{p}.norm_k"), k, 1e-5)?;
    }
    ctx.scope(p);
    let q = apply_rotary_emb(ctx, q, s.cos, s.sin, RotaryPairs::Interleaved)?;
    let k = apply_rotary_emb(ctx, k, s.cos, s.sin, RotaryPairs::Interleaved)?;
    let a = ctx.b.attention(q, k, v, Some(s.mask), None, false)?;
    let a = merge_heads(ctx, a)?;
    linear(ctx, &format!("{p}.to_out.0"), a, d.dim)
}

/// `FeedForward`: `w2(silu(w1 x) · w3 x)`.
fn feed_forward(ctx: &mut Ctx, p: &str, x: V, d: &Dims) -> Result<V> {
    let a = linear(ctx, &format!("{p}.w1"), x, d.ffn)?;
    let b = linear(ctx, &format!("{p}.w3"), x, d.ffn)?;
    ctx.scope(p);
    let a = ctx.b.unary(UnaryOp::Silu, a)?;
    let h = ctx.b.mul(a, b)?;
    linear(ctx, &format!("{p}.w2"), h, d.dim)
}

/// `ZImageTransformerBlock` `p` on `s.x`; modulated by `adaln [1, adaln]`
/// when given. Returns the new stream and the modulated attention input.
fn block(ctx: &mut Ctx, p: &str, s: &Seq, adaln: Option<V>, d: &Dims) -> Result<(V, V)> {
    let mods = match adaln {
        Some(c) => {
            let m = linear(ctx, &format!("{p}.adaLN_modulation.0"), c, 4 * d.dim)?;
            let m = ctx.b.chunk(m, 4, -1)?;
            let scale_msa = ctx.b.add_scalar(m[0], 1.0)?;
            let gate_msa = ctx.b.unary(UnaryOp::Tanh, m[1])?;
            let scale_mlp = ctx.b.add_scalar(m[2], 1.0)?;
            let gate_mlp = ctx.b.unary(UnaryOp::Tanh, m[3])?;
            Some([scale_msa, gate_msa, scale_mlp, gate_mlp])
        }
        None => None,
    };
    let scaled = |ctx: &mut Ctx, x: V, i: usize| -> Result<V> {
        match mods {
            Some(m) => {
                let sc = unsqueeze1(ctx, m[i])?;
                Ok(ctx.b.mul(x, sc)?)
            }
            None => Ok(x),
        }
    };
    let gated_by = |ctx: &mut Ctx, y: V, i: usize| -> Result<V> {
        match mods {
            Some(m) => gated(ctx, m[i], y),
            None => Ok(y),
        }
    };
    let x = s.x;
    let n = rms_norm(ctx, &format!("{p}.attention_norm1"), x, d.eps)?;
    let n = scaled(ctx, n, 0)?;
    let a = attention(ctx, &format!("{p}.attention"), n, s, d)?;
    let a = rms_norm(ctx, &format!("{p}.attention_norm2"), a, d.eps)?;
    let a = gated_by(ctx, a, 1)?;
    let x = ctx.b.add(x, a)?;
    let h = rms_norm(ctx, &format!("{p}.ffn_norm1"), x, d.eps)?;
    let h = scaled(ctx, h, 2)?;
    let f = feed_forward(ctx, &format!("{p}.feed_forward"), h, d)?;
    let f = rms_norm(ctx, &format!("{p}.ffn_norm2"), f, d.eps)?;
    let f = gated_by(ctx, f, 3)?;
    Ok((ctx.b.add(x, f)?, n))
}

/// `TimestepEmbedder`: `mlp(sinusoid(t · t_scale))`, `[cos, sin]` order.
fn t_embedder(ctx: &mut Ctx, t: V, t_scale: f64, d: &Dims) -> Result<V> {
    ctx.scope("t_embedder");
    let ts = ctx.b.mul_scalar(t, t_scale)?;
    let f = timestep_sinusoid(ctx, ts, T_FREQ_DIM, true, 0.0, 1.0, 10000.0)?;
    let h = linear(ctx, "t_embedder.mlp.0", f, T_MID)?;
    let h = ctx.b.unary(UnaryOp::Silu, h)?;
    linear(ctx, "t_embedder.mlp.2", h, d.adaln)
}

/// Patchify + `all_x_embedder`: a stride-`p` convolution whose kernel is the
/// linear weight `[dim, pf·p·p·C]` (patch order `(pf, ph, pw, c)`)
/// rearranged to `[dim, C, pf, p, p]`. Returns `[N, dim]` and the token grid.
fn embed_image(ctx: &mut Ctx, x: V, c: usize, d: &Dims) -> Result<(V, [Dim; 3])> {
    let name = format!("all_x_embedder.{}-{}", d.p, d.pf);
    ctx.scope(&name);
    let w = ctx.w(&format!("{name}.weight"), &[d.dim, d.pf * d.p * d.p * c])?;
    let b = ctx.w(&format!("{name}.bias"), &[d.dim])?;
    let w = ctx.b.reshape(w, vec![d.dim.into(), d.pf.into(), d.p.into(), d.p.into(), c.into()])?;
    let w = ctx.b.transpose(w, &[0, 4, 1, 2, 3])?;
    let x5 = lead1(ctx, x)?;
    let y = ctx.b.conv(x5, w, Some(b), &[d.pf, d.p, d.p], &[0, 0, 0], &[1, 1, 1], 1)?;
    let s = ctx.b.shape(y);
    let grid = [s[2].clone(), s[3].clone(), s[4].clone()];
    let n = Dim::product(grid.iter());
    let y = ctx.b.reshape(y, vec![d.dim.into(), n])?;
    Ok((ctx.b.transpose(y, &[1, 0])?, grid))
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let d = check(raw, &cfg)?;
    let (c, dim) = (cfg.in_channels, d.dim);
    let (frames, height, width, cap_seq) = (Dim::sym("frames"), Dim::sym("height"), Dim::sym("width"), Dim::sym("cap_seq"));
    let x = ctx.b.input("x", DType::F32, vec![c.into(), frames, height, width])?;
    let cap = ctx.b.input("cap_feats", DType::F32, vec![cap_seq.clone(), cfg.cap_feat_dim.into()])?;
    let t = ctx.b.input("t", DType::F32, vec![1usize.into()])?;

    let adaln = t_embedder(ctx, t, cfg.t_scale, &d)?;
    ctx.role(adaln, Role::TimestepEmbedding);

    // Caption: RMSNorm + linear, then padded slots with positions (1 + j, 0, 0).
    let ce = rms_norm(ctx, "cap_embedder.0", cap, d.eps)?;
    let ce = linear(ctx, "cap_embedder.1", ce, dim)?;
    let cap_x = pad_slots(ctx, ce, "cap_pad_token", dim)?;
    let cap_slots = cap_seq.add(&Dim::from(SEQ_MULTI_OF - 1));
    ctx.scope("rope_embedder");
    let (cap_len, cap_mask) = slot_mask(ctx, &cap_slots)?;
    let j = ctx.b.iota(cap_slots.clone(), DType::I64)?;
    let j1 = ctx.b.add_scalar(j, 1.0)?;
    let j1 = ctx.b.reshape(j1, vec![cap_slots.clone(), 1usize.into()])?;
    let zero = ctx.b.scalar(DType::I64, 0.0)?;
    let zeros = ctx.b.expand(zero, vec![cap_slots.clone(), 2usize.into()])?;
    let cap_ids = ctx.b.concat(&[j1, zeros], 1)?;
    let (cc, cs) = pos_embed(ctx, cap_ids, &cfg.axes_dims, cfg.rope_theta)?;

    // Image: patch embedding, padded slots, positions (cap_len + 1 + f, h, w), pads at (0, 0, 0).
    let (xe, grid) = embed_image(ctx, x, c, &d)?;
    let n_img = Dim::product(grid.iter());
    let img_x = pad_slots(ctx, xe, "x_pad_token", dim)?;
    let img_slots = n_img.add(&Dim::from(SEQ_MULTI_OF - 1));
    ctx.role(img_x, Role::ResidualIn);
    ctx.scope("rope_embedder");
    let (_, img_mask) = slot_mask(ctx, &img_slots)?;
    let f_ids = grid_axis(ctx, &grid, 0)?;
    let off = ctx.b.add_scalar(cap_len, 1.0)?;
    let f_ids = ctx.b.add(f_ids, off)?;
    let h_ids = grid_axis(ctx, &grid, 1)?;
    let w_ids = grid_axis(ctx, &grid, 2)?;
    let mut cols = Vec::new();
    for v in [f_ids, h_ids, w_ids] {
        cols.push(ctx.b.reshape(v, vec![n_img.clone(), 1usize.into()])?);
    }
    let ids = ctx.b.concat(&cols, 1)?;
    let pad_ids = ctx.b.constant(Literal { dtype: DType::I64, shape: vec![SEQ_MULTI_OF - 1, 3], values: vec![0.0; 3 * (SEQ_MULTI_OF - 1)] })?;
    let img_ids = ctx.b.concat(&[ids, pad_ids], 0)?;
    let (ic, is) = pos_embed(ctx, img_ids, &cfg.axes_dims, cfg.rope_theta)?;

    let r = cfg.n_refiner_layers;
    let mut img = Seq { x: img_x, mask: img_mask, cos: ic, sin: is };
    for i in 0..r {
        ctx.block(Some(i));
        let p = format!("noise_refiner.{i}");
        let (y, modulated) = block(ctx, &p, &img, Some(adaln), &d)?;
        if i == 0 {
            ctx.role(modulated, Role::ModulatedInput);
        }
        img.x = y;
        ctx.inter(&format!("{p}.0"), y);
    }
    let mut caps = Seq { x: cap_x, mask: cap_mask, cos: cc, sin: cs };
    for i in 0..r {
        ctx.block(Some(r + i));
        let p = format!("context_refiner.{i}");
        caps.x = block(ctx, &p, &caps, None, &d)?.0;
        ctx.inter(&format!("{p}.0"), caps.x);
    }

    // Unified [image; caption] sequence through the main layers.
    ctx.block(None);
    ctx.scope("layers");
    let mut uni = Seq {
        x: ctx.b.concat(&[img.x, caps.x], 1)?,
        mask: ctx.b.concat(&[img.mask, caps.mask], 3)?,
        cos: ctx.b.concat(&[img.cos, caps.cos], 0)?,
        sin: ctx.b.concat(&[img.sin, caps.sin], 0)?,
    };
    for i in 0..cfg.n_layers {
        ctx.block(Some(2 * r + i));
        let p = format!("layers.{i}");
        uni.x = block(ctx, &p, &uni, Some(adaln), &d)?.0;
        ctx.inter(&format!("{p}.0"), uni.x);
    }
    ctx.block(None);
    ctx.scope("layers");
    let out = ctx.b.slice(uni.x, 1, Dim::from(0usize), img_slots)?;
    ctx.role(out, Role::ResidualOut);
    let out = ctx.b.slice(out, 1, Dim::from(0usize), n_img.clone())?;

    // FinalLayer: LayerNorm · (1 + linear(silu(c))), then linear.
    let fp = format!("all_final_layer.{}-{}", d.p, d.pf);
    ctx.scope(&fp);
    let act = ctx.b.unary(UnaryOp::Silu, adaln)?;
    let scale = linear(ctx, &format!("{fp}.adaLN_modulation.1"), act, dim)?;
    let scale = ctx.b.add_scalar(scale, 1.0)?;
    let scale = unsqueeze1(ctx, scale)?;
    ctx.scope(&format!("{fp}.norm_final"));
    let n = layer_norm_plain(ctx, out, 1e-6)?;
    let n = ctx.b.mul(n, scale)?;
    let o = linear(ctx, &format!("{fp}.linear"), n, d.p * d.p * d.pf * d.out_ch)?;

    // Unpatchify: "f h w pf ph pw c -> c (f pf) (h ph) (w pw)".
    ctx.scope("unpatchify");
    let [gf, gh, gw] = grid;
    let o = ctx.b.reshape(o, vec![gf.clone(), gh.clone(), gw.clone(), d.pf.into(), d.p.into(), d.p.into(), d.out_ch.into()])?;
    let o = ctx.b.transpose(o, &[6, 0, 3, 1, 4, 2, 5])?;
    let o = ctx.b.reshape(o, vec![d.out_ch.into(), gf.mul(&Dim::from(d.pf)), gh.mul(&Dim::from(d.p)), gw.mul(&Dim::from(d.p))])?;
    ctx.b.output("sample", o);
    Ok(())
}
