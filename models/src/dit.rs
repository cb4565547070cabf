//! DiT: diffusers `DiTTransformer2DModel` (models/transformers/dit_transformer_2d.py)
//! with `BasicTransformerBlock` in `ada_norm_zero` mode (models/attention.py),
//! `PatchEmbed` with 2-D sin-cos positions and `CombinedTimestepLabelEmbeddings`
//! (models/embeddings.py).

use crate::ctx::{Ctx, V};
use crate::error::{ImportError, Result};
use crate::layers::embed::{timestep_mlp, timestep_sinusoid};
use crate::layers::{feed_forward, gated, layer_norm_plain, linear, merge_heads, modulate, split_heads};
use crate::registry::Family;
use omnic_frontend::RawConfig;
use omnic_ir::{DType, Dim, Literal, Role, UnaryOp};
use serde::Deserialize;

/// `config.json` of `DiTTransformer2DModel` (defaults as in diffusers).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d16")]
    pub num_attention_heads: usize,
    #[serde(default = "d72")]
    pub attention_head_dim: usize,
    #[serde(default = "d4")]
    pub in_channels: usize,
    pub out_channels: Option<usize>,
    #[serde(default = "d28")]
    pub num_layers: usize,
    #[serde(default = "d32")]
    pub sample_size: usize,
    #[serde(default = "d2")]
    pub patch_size: usize,
    #[serde(default = "gelu_approx")]
    pub activation_fn: String,
    #[serde(default = "d1000")]
    pub num_embeds_ada_norm: usize,
    #[serde(default = "ada_norm_zero")]
    pub norm_type: String,
    #[serde(default)]
    pub norm_elementwise_affine: bool,
    #[serde(default = "eps5")]
    pub norm_eps: f64,
}

fn d16() -> usize {
    16
}
fn d72() -> usize {
    72
}
fn d4() -> usize {
    4
}
fn d28() -> usize {
    28
}
fn d32() -> usize {
    32
}
fn d2() -> usize {
    2
}
fn d1000() -> usize {
    1000
}
fn gelu_approx() -> String {
    "gelu-approximate".into()
}
fn ada_norm_zero() -> String {
    "ada_norm_zero".into()
}
fn eps5() -> f64 {
    1e-5
}

pub fn family() -> Family {
    Family { name: "dit", classes: &["DiTTransformer2DModel"], build, stage: "transformer" }
}

/// diffusers `get_2d_sincos_pos_embed(dim, grid, base_size=grid)`: token
/// `i·n + j` gets `[sincos(j), sincos(i)]` (width coordinate first, as the
/// `meshgrid(w, h, indexing="xy")` there produces), computed in f64.
pub fn sincos_pos_embed_2d(dim: usize, n: usize) -> Vec<f64> {
    let half = dim / 2;
    let quarter = half / 2;
    let omega: Vec<f64> = (0..quarter).map(|k| 1.0 / 10000f64.powf(k as f64 / (half as f64 / 2.0))).collect();
    let one_d = |pos: f64, out: &mut Vec<f64>| {
        out.extend(omega.iter().map(|w| (pos * w).sin()));
        out.extend(omega.iter().map(|w| (pos * w).cos()));
    };
    let mut v = Vec::with_capacity(n * n * dim);
    for i in 0..n {
        for j in 0..n {
            one_d(j as f64, &mut v);
            one_d(i as f64, &mut v);
        }
    }
    v
}

/// `CombinedTimestepLabelEmbeddings` of block `i`'s `norm1.emb`.
fn conditioning(ctx: &mut Ctx, p: &str, t: V, labels: V, cfg: &Config, dim: usize) -> Result<V> {
    ctx.scope(&format!("{p}.time_proj"));
    let tp = timestep_sinusoid(ctx, t, 256, true, 1.0, 1.0, 10000.0)?;
    let te = timestep_mlp(ctx, &format!("{p}.timestep_embedder"), tp, dim, dim, "silu")?;
    let table_name = format!("{p}.class_embedder.embedding_table.weight");
    // The table has a null class row when label dropout was configured.
    let rows = ctx.ckpt.info(&table_name)?.shape.first().copied().unwrap_or(0);
    if rows != cfg.num_embeds_ada_norm && rows != cfg.num_embeds_ada_norm + 1 {
        return Err(ImportError::Config {
            path: "config.json".into(),
            field: "num_embeds_ada_norm".into(),
            message: format!("{} classes but `{table_name}` has {rows} rows", cfg.num_embeds_ada_norm),
        });
    }
    ctx.scope(&format!("{p}.class_embedder"));
    let table = ctx.w(&table_name, &[rows, dim])?;
    let ce = ctx.b.gather(table, labels, 0)?;
    Ok(ctx.b.add(te, ce)?)
}

fn build(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    let cfg: Config = raw.parse()?;
    if cfg.norm_type != "ada_norm_zero" {
        return Err(ImportError::Config {
            path: raw.path.display().to_string(),
            field: "norm_type".into(),
            message: format!("`{}` is not supported for DiT (supported: ada_norm_zero)", cfg.norm_type),
        });
    }
    let heads = cfg.num_attention_heads;
    let dim = heads * cfg.attention_head_dim;
    let p = cfg.patch_size;
    let out_ch = cfg.out_channels.unwrap_or(cfg.in_channels);
    let n = cfg.sample_size / p;
    let batch = Dim::sym("batch");

    let x = ctx.b.input("hidden_states", DType::F32, vec![batch.clone(), cfg.in_channels.into(), cfg.sample_size.into(), cfg.sample_size.into()])?;
    let t = ctx.b.input("timestep", DType::I64, vec![batch.clone()])?;
    let labels = ctx.b.input("class_labels", DType::I64, vec![batch.clone()])?;

    // Patch embedding: strided conv, flatten to tokens, add 2-D sin-cos positions.
    ctx.scope("pos_embed");
    let w = ctx.w("pos_embed.proj.weight", &[dim, cfg.in_channels, p, p])?;
    let bias = ctx.w_opt("pos_embed.proj.bias", &[dim])?;
    let conv = ctx.b.conv(x, w, bias, &[p, p], &[0, 0], &[1, 1], 1)?;
    let flat = ctx.b.reshape(conv, vec![batch.clone(), dim.into(), (n * n).into()])?;
    let tokens = ctx.b.transpose(flat, &[0, 2, 1])?;
    let pos = ctx.b.constant(Literal { dtype: DType::F32, shape: vec![1, n * n, dim], values: sincos_pos_embed_2d(dim, n) })?;
    let mut h = ctx.b.add(tokens, pos)?;
    ctx.role(h, Role::ResidualIn);

    for i in 0..cfg.num_layers {
        let bp = format!("transformer_blocks.{i}");
        ctx.block(Some(i));
        // adaLN-Zero: per-block conditioning → 6 modulation vectors.
        let cond = conditioning(ctx, &format!("{bp}.norm1.emb"), t, labels, &cfg, dim)?;
        if i == 0 {
            ctx.role(cond, Role::TimestepEmbedding);
        }
        let act = ctx.b.unary(UnaryOp::Silu, cond)?;
        let m = linear(ctx, &format!("{bp}.norm1.linear"), act, 6 * dim)?;
        let mods = ctx.b.chunk(m, 6, 1)?;
        let (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) = (mods[0], mods[1], mods[2], mods[3], mods[4], mods[5]);
        ctx.scope(&format!("{bp}.norm1.norm"));
        let nx = layer_norm_plain(ctx, h, 1e-6)?;
        let nx = modulate(ctx, nx, shift_msa, scale_msa)?;
        if i == 0 {
            ctx.role(nx, Role::ModulatedInput);
        }
        // Self-attention.
        let ap = format!("{bp}.attn1");
        let q = linear(ctx, &format!("{ap}.to_q"), nx, dim)?;
        let k = linear(ctx, &format!("{ap}.to_k"), nx, dim)?;
        let v = linear(ctx, &format!("{ap}.to_v"), nx, dim)?;
        let (q, k, v) = (split_heads(ctx, q, heads)?, split_heads(ctx, k, heads)?, split_heads(ctx, v, heads)?);
        let a = ctx.b.attention(q, k, v, None, None, false)?;
        let a = merge_heads(ctx, a)?;
        let a = linear(ctx, &format!("{ap}.to_out.0"), a, dim)?;
        let a = gated(ctx, gate_msa, a)?;
        h = ctx.b.add(a, h)?;
        // Feed-forward on the norm3-normalised, modulated stream.
        ctx.scope(&format!("{bp}.norm3"));
        let nx = if cfg.norm_elementwise_affine {
            crate::layers::layer_norm(ctx, &format!("{bp}.norm3"), h, cfg.norm_eps)?
        } else {
            layer_norm_plain(ctx, h, cfg.norm_eps)?
        };
        let nx = modulate(ctx, nx, shift_mlp, scale_mlp)?;
        let f = feed_forward(ctx, &format!("{bp}.ff"), nx, 4 * dim, dim, &cfg.activation_fn)?;
        let f = gated(ctx, gate_mlp, f)?;
        h = ctx.b.add(f, h)?;
        ctx.inter(&format!("transformer_blocks.{i}.0"), h);
    }
    ctx.block(None);
    ctx.role(h, Role::ResidualOut);

    // Output head: block 0's conditioning drives the final adaLN.
    let cond = conditioning(ctx, "transformer_blocks.0.norm1.emb", t, labels, &cfg, dim)?;
    let act = ctx.b.unary(UnaryOp::Silu, cond)?;
    let m = linear(ctx, "proj_out_1", act, 2 * dim)?;
    let ss = ctx.b.chunk(m, 2, 1)?;
    ctx.scope("norm_out");
    let nx = layer_norm_plain(ctx, h, 1e-6)?;
    let nx = modulate(ctx, nx, ss[0], ss[1])?;
    let o = linear(ctx, "proj_out_2", nx, p * p * out_ch)?;
    // Unpatchify: [B, n·n, p·p·C] → [B, C, n·p, n·p] (einsum nhwpqc->nchpwq).
    ctx.scope("unpatchify");
    let o = ctx.b.reshape(o, vec![batch.clone(), n.into(), n.into(), p.into(), p.into(), out_ch.into()])?;
    let o = ctx.b.transpose(o, &[0, 5, 1, 3, 2, 4])?;
    let o = ctx.b.reshape(o, vec![batch, out_ch.into(), (n * p).into(), (n * p).into()])?;
    ctx.b.output("sample", o);
    Ok(())
}
