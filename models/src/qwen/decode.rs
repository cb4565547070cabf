//! The `decode` program of the Qwen causal LMs: besides the plain `forward`
//! stage, a `prefill` stage (prompt → last-position logits and every
//! layer's rotated keys / values) and a `step` stage (one token and the
//! cached keys / values of the `past` earlier positions → logits and the new
//! token's keys / values), run by the runtime's decode loop with a cache
//! preallocated for `max_len` positions; this is what transformers'
//! `generate` does with a `DynamicCache`.
//!
//! Cache entry `l` is the pair (`k.{l}` / `v.{l}`: output, `[1, n, kv_heads,
//! head_dim]` for the `n` new positions; `past_k.{l}` / `past_v.{l}`: step
//! input `[1, past, kv_heads, head_dim]`). The step's position is `past`
//! (taken from the cache length, `max(iota(past + 1))`), so a step needs no
//! other input. Stop tokens come from `generation_config.json`'s
//! `eos_token_id` (else `config.json`'s).

use super::config::{Config, Variant};
use super::decoder::{forward_kv, Kv};
use crate::ctx::Ctx;
use crate::error::{ImportError, Result};
use crate::ImportOptions;
use omnic_frontend::{Checkpoint, ModelDir, RawConfig};
use omnic_ir::{DType, DecodeSpec, Dim, Program, ReduceOp, Stage};

/// Cache length when neither `--max-len` nor a smaller
/// `max_position_embeddings` is given.
pub const DEFAULT_MAX_LEN: usize = 2048;

fn variant(family: &str) -> Option<Variant> {
    match family {
        "qwen2" => Some(Variant::Qwen2),
        "qwen3" => Some(Variant::Qwen3),
        "qwen3_moe" => Some(Variant::Qwen3Moe),
        _ => None,
    }
}

/// Token ids of an `eos_token_id` field (an integer or a list of them).
fn eos_ids(path: &str, v: &serde_json::Value) -> Result<Vec<i64>> {
    let bad = || ImportError::Config { path: path.into(), field: "eos_token_id".into(), message: format!("expected a token id or a list of them, found {v}") };
    match v {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Number(n) => Ok(vec![n.as_i64().filter(|t| *t >= 0).ok_or_else(bad)?]),
        serde_json::Value::Array(a) => a.iter().map(|x| x.as_i64().filter(|t| *t >= 0).ok_or_else(bad)).collect(),
        _ => Err(bad()),
    }
}

/// For a Qwen causal-LM family, add the `prefill` and `step` stages to
/// `program` (whose first stage is the forward) and return the decode
/// control; `None` for other families.
pub fn decode_control(family: &str, md: &ModelDir, ckpt: &Checkpoint, opts: &ImportOptions, program: &mut Program) -> Result<Option<DecodeSpec>> {
    let Some(variant) = variant(family) else { return Ok(None) };
    let raw = &md.config;
    let cfg: Config = raw.parse()?;
    let path = raw.path.display().to_string();
    let spec = cfg.resolve(variant, &path)?;
    let trained = cfg.max_position_embeddings.unwrap_or(DEFAULT_MAX_LEN);
    let max_len = match opts.max_len {
        Some(0) => return Err(ImportError::Config { path, field: "--max-len".into(), message: "the cache needs at least one position".into() }),
        Some(n) => n,
        None => trained.min(DEFAULT_MAX_LEN),
    };
    let gen_path = md.model.join("generation_config.json");
    let eos = if gen_path.is_file() {
        let gen = RawConfig::read(&gen_path)?;
        match gen.value.get("eos_token_id") {
            Some(v) => eos_ids(&gen_path.display().to_string(), v)?,
            None => Vec::new(),
        }
    } else {
        match &cfg.eos_token_id {
            Some(v) => eos_ids(&path, v)?,
            None => Vec::new(),
        }
    };

    // prefill: input_ids [1, seq] → logits [1, 1, vocab], k.{l} / v.{l} [1, seq, kvh, D].
    let prefill = {
        let mut ctx = Ctx::new(ckpt, opts.clone());
        let seq = Dim::sym("seq");
        let ids = ctx.b.input("input_ids", DType::I64, vec![Dim::from(1usize), seq.clone()])?;
        let positions = ctx.b.iota(seq, DType::I64)?;
        let d = forward_kv(&mut ctx, &spec, ids, positions, positions, &vec![Kv::Emit; spec.layers], true)?;
        ctx.b.set_scope(None);
        ctx.b.output("logits", d.logits);
        for (l, (k, v)) in d.kv.into_iter().enumerate() {
            ctx.b.output(&format!("k.{l}"), k);
            ctx.b.output(&format!("v.{l}"), v);
        }
        ctx.b.finish()?
    };
    // step: input_ids [1, 1], past_k.{l} / past_v.{l} [1, past, kvh, D] → logits [1, 1, vocab], k.{l} / v.{l} [1, 1, kvh, D].
    let step = {
        let mut ctx = Ctx::new(ckpt, opts.clone());
        let one = Dim::from(1usize);
        let past = Dim::sym("past");
        let ids = ctx.b.input("input_ids", DType::I64, vec![one.clone(), one.clone()])?;
        let mut kv = Vec::with_capacity(spec.layers);
        for l in 0..spec.layers {
            let shape = vec![one.clone(), past.clone(), Dim::from(spec.kv_heads), Dim::from(spec.head_dim)];
            let k = ctx.b.input(&format!("past_k.{l}"), DType::F32, shape.clone())?;
            let v = ctx.b.input(&format!("past_v.{l}"), DType::F32, shape)?;
            kv.push(Kv::Past(k, v));
        }
        ctx.scope("model.rotary_emb");
        let k_positions = ctx.b.iota(past.add(&one), DType::I64)?;
        // The new position, `past` = max(iota(past + 1)), as a static [1].
        let positions = ctx.b.reduce(ReduceOp::Max, k_positions, &[0], true)?;
        let d = forward_kv(&mut ctx, &spec, ids, positions, k_positions, &kv, true)?;
        ctx.b.set_scope(None);
        ctx.b.output("logits", d.logits);
        for (l, (k, v)) in d.kv.into_iter().enumerate() {
            ctx.b.output(&format!("k.{l}"), k);
            ctx.b.output(&format!("v.{l}"), v);
        }
        ctx.b.finish()?
    };
    program.stages.push(Stage { name: "prefill".into(), graph: prefill });
    program.stages.push(Stage { name: "step".into(), graph: step });
    let forward = program.stages.first().map(|s| s.name.clone()).unwrap_or_else(|| "forward".into());
    let cache = (0..spec.layers).flat_map(|l| [(format!("k.{l}"), format!("past_k.{l}")), (format!("v.{l}"), format!("past_v.{l}"))]).collect();
    program.metadata.insert("max_len".into(), max_len.to_string());
    Ok(Some(DecodeSpec { forward, prefill: "prefill".into(), step: "step".into(), tokens: "input_ids".into(), logits: "logits".into(), cache, max_len, eos }))
}

/// The text of `tokenizer.json` in the model directory, if there is one.
pub fn tokenizer_json(dir: &std::path::Path) -> Result<Option<String>> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|err| omnic_frontend::LoadError::Io { path: path.clone(), err })?;
    Ok(Some(text))
}
