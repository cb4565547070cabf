//! Qwen causal language models: transformers `Qwen2ForCausalLM`
//! (models/qwen2/modeling_qwen2.py), `Qwen3ForCausalLM`
//! (models/qwen3/modeling_qwen3.py) and `Qwen3MoeForCausalLM`
//! (models/qwen3_moe/modeling_qwen3_moe.py), each `model(input_ids,
//! use_cache=False).logits` without a cache.
//!
//! Program: stage `forward`, input `input_ids` i64 `[batch, seq]`, output
//! `logits` f32 `[batch, seq, vocab_size]`; Qwen3-MoE also outputs
//! `router_logits.{l}` `[batch·seq, experts]` for the `l`-th MoE layer (the
//! order of transformers' `router_logits` tuple). Positions are `0..seq`
//! (`iota`).
//!
//! * [`config`]: the serde config (both transformers-5 and older layouts)
//!   resolved into a checked [`config::Spec`];
//! * [`decoder`]: embedding, decoder layers, final norm, LM head;
//! * [`moe`]: router + experts in the unfused dense form.

pub mod config;
pub mod decode;
pub mod decoder;
pub mod moe;

use crate::ctx::Ctx;
use crate::error::Result;
use crate::registry::Family;
use config::{Config, Variant};
use omnic_frontend::RawConfig;
use omnic_ir::{DType, Dim};

pub fn qwen2_family() -> Family {
    Family { name: "qwen2", classes: &["Qwen2ForCausalLM"], build: build_qwen2, stage: "forward" }
}

pub fn qwen3_family() -> Family {
    Family { name: "qwen3", classes: &["Qwen3ForCausalLM"], build: build_qwen3, stage: "forward" }
}

pub fn qwen3_moe_family() -> Family {
    Family { name: "qwen3_moe", classes: &["Qwen3MoeForCausalLM"], build: build_qwen3_moe, stage: "forward" }
}

fn build_qwen2(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    build(raw, ctx, Variant::Qwen2)
}

fn build_qwen3(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    build(raw, ctx, Variant::Qwen3)
}

fn build_qwen3_moe(raw: &RawConfig, ctx: &mut Ctx) -> Result<()> {
    build(raw, ctx, Variant::Qwen3Moe)
}

fn build(raw: &RawConfig, ctx: &mut Ctx, variant: Variant) -> Result<()> {
    let cfg: Config = raw.parse()?;
    let spec = cfg.resolve(variant, &raw.path.display().to_string())?;
    let seq = Dim::sym("seq");
    let ids = ctx.b.input("input_ids", DType::I64, vec![Dim::sym("batch"), seq.clone()])?;
    let positions = ctx.b.iota(seq, DType::I64)?;
    let (logits, router_logits) = decoder::forward(ctx, &spec, ids, positions)?;
    ctx.b.output("logits", logits);
    for (l, r) in router_logits.into_iter().enumerate() {
        ctx.b.output(&format!("router_logits.{l}"), r);
    }
    Ok(())
}
