//! AutoencoderKL decoder: diffusers `AutoencoderKL.decode`
//! (models/autoencoders/autoencoder_kl.py: optional `post_quant_conv`, then
//! `Decoder` from models/autoencoders/vae.py) with `UNetMidBlock2D` and
//! `UpDecoderBlock2D` (models/unets/unet_2d_blocks.py), `ResnetBlock2D`
//! (models/resnet.py), `Upsample2D` (models/upsampling.py) and the
//! group-normed, residual single-head `Attention` run by `AttnProcessor2_0`
//! (models/attention_processor.py).
//!
//! The program's input is `z`, exactly what `decode` receives (pipelines
//! first un-scale: `latents / scaling_factor + shift_factor`; both factors go
//! into the program metadata). Batch and the latent height/width are symbolic.

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::conv::{channels, conv2d, group_norm};
use crate::layers::{linear, merge_heads, split_heads};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{DType, Dim, UnaryOp};
use serde::Deserialize;

/// `config.json` of `AutoencoderKL` (defaults as in diffusers; the encoder's
/// fields are not needed for decoding).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d3")]
    pub out_channels: usize,
    #[serde(default = "up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "block_out")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d1")]
    pub layers_per_block: usize,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "d4")]
    pub latent_channels: usize,
    #[serde(default = "d32")]
    pub norm_num_groups: usize,
    #[serde(default = "sd_scale")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn d1() -> usize {
    1
}
fn d3() -> usize {
    3
}
fn d4() -> usize {
    4
}
fn d32() -> usize {
    32
}
fn up_blocks() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn block_out() -> Vec<usize> {
    vec![64]
}
fn silu() -> String {
    "silu".into()
}
fn sd_scale() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}

/// `eps` of every GroupNorm in the decoder (`resnet_eps=1e-6`, conv_norm_out).
const EPS: f64 = 1e-6;

pub fn family() -> Family {
    Family { name: "vae", classes: &["AutoencoderKL"], build, stage: "vae_decoder" }
}

fn bad(raw: &RawConfig, field: &str, message: String) -> ImportError {
    ImportError::Config { path: raw.path.display().to_string(), field: field.into(), message }
}

/// Checked config plus what the builder derives from it.
struct Plan {
    cfg: Config,
    act: UnaryOp,
}

fn plan(raw: &RawConfig) -> Result<Plan> {
    let cfg: Config = raw.parse()?;
    // diffusers `get_activation` (ACT2CLS, lower-cased); mish is not offered.
    let act = match cfg.act_fn.to_lowercase().as_str() {
        "silu" | "swish" => UnaryOp::Silu,
        "gelu" => UnaryOp::Gelu,
        "relu" => UnaryOp::Relu,
        other => return Err(bad(raw, "act_fn", format!("unsupported activation `{other}` (supported: silu, swish, gelu, relu)"))),
    };
    if cfg.block_out_channels.is_empty() || cfg.block_out_channels.contains(&0) {
        return Err(bad(raw, "block_out_channels", format!("{:?} needs at least one positive entry", cfg.block_out_channels)));
    }
    if cfg.up_block_types.len() > cfg.block_out_channels.len() {
        return Err(bad(raw, "up_block_types", format!("{} up blocks but only {} block_out_channels", cfg.up_block_types.len(), cfg.block_out_channels.len())));
    }
    if let Some(t) = cfg.up_block_types.iter().find(|t| t.as_str() != "UpDecoderBlock2D") {
        return Err(bad(raw, "up_block_types", format!("`{t}` is not supported (supported: UpDecoderBlock2D)")));
    }
    let g = cfg.norm_num_groups;
    if g == 0 || cfg.block_out_channels.iter().any(|c| c % g != 0) {
        return Err(bad(raw, "norm_num_groups", format!("{g} groups do not divide block_out_channels {:?}", cfg.block_out_channels)));
    }
    if cfg.latent_channels == 0 || cfg.out_channels == 0 {
        let f = if cfg.latent_channels == 0 { "latent_channels" } else { "out_channels" };
        return Err(bad(raw, f, "must be positive".into()));
    }
    if !cfg.scaling_factor.is_finite() || cfg.scaling_factor == 0.0 {
        return Err(bad(raw, "scaling_factor", format!("{} is not a usable scale", cfg.scaling_factor)));
    }
    Ok(Plan { cfg, act })
}

/// `ResnetBlock2D` without a time embedding: `norm1 → act → conv1 → norm2 →
/// act → conv2`, plus the input (through the 1×1 `conv_shortcut` when the
/// channel count changes); `output_scale_factor` is 1 in the decoder.
fn resnet(ctx: &mut Ctx, p: &str, x: V, out: usize, pl: &Plan) -> Result<V> {
    let inp = channels(ctx, x)?;
    let g = pl.cfg.norm_num_groups;
    let h = group_norm(ctx, &format!("{p}.norm1"), x, g, EPS)?;
    let h = ctx.b.unary(pl.act, h)?;
    let h = conv2d(ctx, &format!("{p}.conv1"), h, out, 3, 1)?;
    let h = group_norm(ctx, &format!("{p}.norm2"), h, g, EPS)?;
    let h = ctx.b.unary(pl.act, h)?;
    let h = conv2d(ctx, &format!("{p}.conv2"), h, out, 3, 1)?;
    let skip = if inp != out { conv2d(ctx, &format!("{p}.conv_shortcut"), x, out, 1, 0)? } else { x };
    ctx.scope(p);
    Ok(ctx.b.add(skip, h)?)
}

/// Mid-block `Attention`: GroupNorm over the NCHW map, spatial positions as
/// tokens, one head of width C (`attention_head_dim = C`, default scale
/// `1/√C`), `to_out.0` projection, residual added (`rescale_output_factor` 1).
fn attention(ctx: &mut Ctx, p: &str, x: V, pl: &Plan) -> Result<V> {
    let c = channels(ctx, x)?;
    let s = ctx.b.shape(x);
    let (b, h, w) = (s[0].clone(), s[2].clone(), s[3].clone());
    let n = group_norm(ctx, &format!("{p}.group_norm"), x, pl.cfg.norm_num_groups, EPS)?;
    ctx.scope(p);
    let n = ctx.b.reshape(n, vec![b.clone(), c.into(), h.mul(&w)])?;
    let tokens = ctx.b.transpose(n, &[0, 2, 1])?;
    let q = linear(ctx, &format!("{p}.to_q"), tokens, c)?;
    let k = linear(ctx, &format!("{p}.to_k"), tokens, c)?;
    let v = linear(ctx, &format!("{p}.to_v"), tokens, c)?;
    ctx.scope(p);
    let (q, k, v) = (split_heads(ctx, q, 1)?, split_heads(ctx, k, 1)?, split_heads(ctx, v, 1)?);
    let a = ctx.b.attention(q, k, v, None, None, false)?;
    let a = merge_heads(ctx, a)?;
    let a = linear(ctx, &format!("{p}.to_out.0"), a, c)?;
    ctx.scope(p);
    let a = ctx.b.transpose(a, &[0, 2, 1])?;
    let a = ctx.b.reshape(a, vec![b, c.into(), h, w])?;
    Ok(ctx.b.add(a, x)?)
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let pl = plan(raw)?;
    let cfg = &pl.cfg;
    ctx.metadata.insert("scaling_factor".into(), cfg.scaling_factor.to_string());
    if let Some(s) = cfg.shift_factor {
        ctx.metadata.insert("shift_factor".into(), s.to_string());
    }
    let boc = &cfg.block_out_channels;
    let top = boc[boc.len() - 1];

    let z = ctx.b.input("z", DType::F32, vec![Dim::sym("batch"), cfg.latent_channels.into(), Dim::sym("h"), Dim::sym("w")])?;
    let mut x = z;
    if cfg.use_post_quant_conv {
        x = conv2d(ctx, "post_quant_conv", x, cfg.latent_channels, 1, 0)?;
    }

    x = conv2d(ctx, "decoder.conv_in", x, top, 3, 1)?;
    ctx.inter("decoder.conv_in.0", x);

    // UNetMidBlock2D (num_layers=1): resnet, [attention], resnet.
    x = resnet(ctx, "decoder.mid_block.resnets.0", x, top, &pl)?;
    if cfg.mid_block_add_attention {
        x = attention(ctx, "decoder.mid_block.attentions.0", x, &pl)?;
    }
    x = resnet(ctx, "decoder.mid_block.resnets.1", x, top, &pl)?;
    ctx.inter("decoder.mid_block.0", x);

    // Up blocks over the reversed channel list; every block but the one at
    // index len(block_out_channels)-1 ends with nearest ×2 + 3×3 conv.
    for i in 0..cfg.up_block_types.len() {
        let out = boc[boc.len() - 1 - i];
        let bp = format!("decoder.up_blocks.{i}");
        for j in 0..=cfg.layers_per_block {
            x = resnet(ctx, &format!("{bp}.resnets.{j}"), x, out, &pl)?;
        }
        if i != boc.len() - 1 {
            ctx.scope(&format!("{bp}.upsamplers.0"));
            x = ctx.b.upsample_nearest(x, &[2, 2])?;
            x = conv2d(ctx, &format!("{bp}.upsamplers.0.conv"), x, out, 3, 1)?;
        }
        ctx.inter(&format!("{bp}.0"), x);
    }

    // Output head: GroupNorm over block_out_channels[0], SiLU (always), conv_out.
    x = group_norm(ctx, "decoder.conv_norm_out", x, cfg.norm_num_groups, EPS)?;
    ctx.scope("decoder.conv_act");
    x = ctx.b.unary(UnaryOp::Silu, x)?;
    x = conv2d(ctx, "decoder.conv_out", x, cfg.out_channels, 3, 1)?;
    ctx.b.output("sample", x);
    Ok(())
}
