//! LongCat-Image: diffusers `LongCatImageTransformer2DModel`
//! (models/transformers/transformer_longcat_image.py). Its blocks
//! (`LongCatImageTransformerBlock`, `LongCatImageSingleTransformerBlock`,
//! `LongCatImageAttention`), `LongCatImagePosEmbed` and output head are
//! Flux's, reused from [`crate::flux`]; it differs in the conditioning
//! (`LongCatImageTimestepEmbeddings`: timestep only, no pooled text or
//! guidance embedding) and in `out_channels = in_channels`.

use crate::ctx::Ctx;
use crate::error::Result;
use crate::flux::{mmdit_stack, output_head, rope_inputs, seq_inputs, times_1000, timestep_embedding, MmDit};
use crate::layers::linear;
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{DType, Dim, Role};
use serde::Deserialize;

/// `config.json` of `LongCatImageTransformer2DModel` (defaults as in
/// diffusers). `pooled_projection_dim` is stored but unused by the model.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d1")]
    pub patch_size: usize,
    #[serde(default = "d64")]
    pub in_channels: usize,
    #[serde(default = "d19")]
    pub num_layers: usize,
    #[serde(default = "d38")]
    pub num_single_layers: usize,
    #[serde(default = "d128")]
    pub attention_head_dim: usize,
    #[serde(default = "d24")]
    pub num_attention_heads: usize,
    #[serde(default = "d3584")]
    pub joint_attention_dim: usize,
    #[serde(default = "d3584")]
    pub pooled_projection_dim: usize,
    #[serde(default = "crate::flux::axes")]
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
fn d3584() -> usize {
    3584
}

pub fn family() -> Family {
    Family { name: "longcat", classes: &["LongCatImageTransformer2DModel"], build, stage: "transformer" }
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let path = raw.path.display().to_string();
    let d = MmDit::new(&path, cfg.num_attention_heads, cfg.attention_head_dim, cfg.num_layers, cfg.num_single_layers, &cfg.axes_dims_rope)?;

    // Inputs in forward order: hidden_states, encoder_hidden_states,
    // timestep, img_ids, txt_ids.
    let seq = seq_inputs(ctx, cfg.in_channels, cfg.joint_attention_dim)?;
    let t = ctx.b.input("timestep", DType::F32, vec![Dim::sym("batch")])?;
    let rope = rope_inputs(ctx, &d)?;

    let img = linear(ctx, "x_embedder", seq.hidden_states, d.dim)?;
    let t = times_1000(ctx, t)?;
    let temb = timestep_embedding(ctx, "time_embed.timestep_embedder", "time_embed.time_proj", t, d.dim)?;
    ctx.role(temb, Role::TimestepEmbedding);
    let txt = linear(ctx, "context_embedder", seq.encoder_hidden_states, d.dim)?;

    let h = mmdit_stack(ctx, &d, img, txt, temb, rope)?;
    let o = output_head(ctx, h, temb, d.dim, cfg.patch_size * cfg.patch_size * cfg.in_channels)?;
    ctx.b.output("sample", o);
    Ok(())
}
