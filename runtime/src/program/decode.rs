//! The autoregressive decode loop of a causal LM (the manifest's
//! `Control::Decode`, a mirror of the IR's `DecodeSpec`):
//!
//! 1. `prefill` on the prompt `[1, P]`: last-position logits and, per cache
//!    entry, the keys / values of the `P` positions, copied into a cache
//!    buffer allocated once for `max_len` positions;
//! 2. per new token: choose it ([`super::sample`]), stop on a stop token or
//!    after `max_tokens`; else `step` on `[[token]]` with every cache entry
//!    passed as the filled prefix `[1, n, ...]` of its buffer (no copy: the
//!    buffer's capacity is reserved up front, so appending the step's new
//!    row never reallocates) → logits and the new row, appended in place.
//!
//! One stage call per token, whatever the length; the prefix is never
//! recomputed. Generic over [`StageRunner`], so compiler-side tests drive
//! it with the reference evaluator.

use super::runner::{StageRunner, Tensors};
use super::sample::{choose, Sampling};
use crate::error::RtError;
use crate::tensor::HostTensor;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use thiserror::Error;

/// Metadata key under which `omnic compile` embeds the model's `tokenizer.json`.
pub const TOKENIZER_KEY: &str = "tokenizer.json";

/// Mirror of `omnic_ir::DecodeSpec` (field meanings there).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeSpec {
    pub forward: String,
    pub prefill: String,
    pub step: String,
    pub tokens: String,
    pub logits: String,
    /// (output with the new positions' entries, step input with the cached ones).
    pub cache: Vec<(String, String)>,
    pub max_len: usize,
    pub eos: Vec<i64>,
}

impl DecodeSpec {
    pub fn stage_names(&self) -> Vec<&str> {
        vec![self.forward.as_str(), self.prefill.as_str(), self.step.as_str()]
    }
}

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("decode: stage `{stage}` (token {token}): {source}")]
    Stage { stage: String, token: usize, source: RtError },
    /// A bad request (prompt, lengths, sampling flags).
    #[error("{0}")]
    Request(String),
    /// A stage output that does not fit the program's decode contract.
    #[error("decode: {0}")]
    Output(String),
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct DecodeOptions {
    /// New tokens at most.
    pub max_tokens: usize,
    /// Stop tokens (the program's `eos` unless replaced).
    pub stop: Vec<i64>,
    pub sampling: Sampling,
    /// Keep the logits each token was chosen from (testing, scoring).
    pub keep_logits: bool,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was chosen (it is the last of `tokens`).
    Stop,
    /// `max_tokens` were generated.
    Length,
}

/// The generated tokens and timings.
#[derive(Clone, Debug)]
pub struct DecodeOutput {
    /// New tokens (the prompt not included).
    pub tokens: Vec<i64>,
    /// With `keep_logits`: the logits row each token was chosen from.
    pub logits: Vec<Vec<f32>>,
    pub reason: StopReason,
    pub prefill_ms: f64,
    /// Mean time of one step call (0 when no step ran).
    pub decode_ms_per_token: f64,
    /// Step calls made.
    pub steps: usize,
}

/// The last row of a `[.., n, vocab]` logits tensor, as f32.
fn last_row(name: &str, t: &HostTensor) -> Result<Vec<f32>, DecodeError> {
    let vocab = match t.shape.last() {
        Some(&v) if v > 0 && t.shape.len() >= 2 => v,
        _ => return Err(DecodeError::Output(format!("logits `{name}` has shape {:?}, expected [.., n, vocab]", t.shape))),
    };
    if !t.dtype.is_float() {
        return Err(DecodeError::Output(format!("logits `{name}` is {}, expected a float tensor", t.dtype)));
    }
    let all = t.to_f32_vec();
    Ok(all[all.len() - vocab..].to_vec())
}

fn take(out: &mut Tensors, stage: &str, name: &str) -> Result<HostTensor, DecodeError> {
    out.remove(name).ok_or_else(|| DecodeError::Output(format!("stage `{stage}` has no output `{name}`")))
}

/// Check a request against the program: token ids inside `0..vocab` (when
/// known), a non-empty prompt, and `prompt + max_tokens ≤ max_len`.
pub fn check_request(spec: &DecodeSpec, prompt: &[i64], max_tokens: usize, vocab: Option<usize>) -> Result<(), DecodeError> {
    if prompt.is_empty() {
        return Err(DecodeError::Request("the prompt is empty: give at least one token".into()));
    }
    if let Some(v) = vocab {
        if let Some((i, t)) = prompt.iter().enumerate().find(|(_, &t)| t < 0 || t as u64 >= v as u64) {
            return Err(DecodeError::Request(format!("prompt token {i} is {t}, outside the vocabulary 0..{v}")));
        }
    }
    if prompt.len() + max_tokens > spec.max_len {
        return Err(DecodeError::Request(format!(
            "{} prompt tokens + {max_tokens} new tokens exceed the KV cache of {} positions (compile with a larger `--max-len`)",
            prompt.len(),
            spec.max_len
        )));
    }
    Ok(())
}

/// Run the decode loop on `prompt` (token ids); see the module doc.
pub fn run_decode(runner: &mut dyn StageRunner, spec: &DecodeSpec, prompt: &[i64], opts: &DecodeOptions) -> Result<DecodeOutput, DecodeError> {
    check_request(spec, prompt, opts.max_tokens, None)?;
    opts.sampling.check().map_err(DecodeError::Request)?;
    let mut out = DecodeOutput { tokens: Vec::new(), logits: Vec::new(), reason: StopReason::Length, prefill_ms: 0.0, decode_ms_per_token: 0.0, steps: 0 };
    if opts.max_tokens == 0 {
        return Ok(out);
    }
    let mut inputs: Tensors = Tensors::new();
    inputs.insert(spec.tokens.clone(), HostTensor::from_i64(&[1, prompt.len()], prompt));
    let t0 = Instant::now();
    let mut res = runner.run_stage(&spec.prefill, &inputs).map_err(|source| DecodeError::Stage { stage: spec.prefill.clone(), token: 0, source })?;
    out.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut logits = last_row(&spec.logits, &take(&mut res, &spec.prefill, &spec.logits)?)?;
    // The cache: one buffer per entry with room for max_len positions.
    let mut rows: Vec<usize> = Vec::with_capacity(spec.cache.len());
    for (new, past) in &spec.cache {
        let t = take(&mut res, &spec.prefill, new)?;
        if t.shape.len() < 2 || t.shape[0] != 1 || t.shape[1] != prompt.len() {
            return Err(DecodeError::Output(format!(
                "cache entry `{new}` of stage `{}` has shape {:?}, expected [1, {}, ...]",
                spec.prefill,
                t.shape,
                prompt.len()
            )));
        }
        let row = t.data.len() / prompt.len();
        let mut data = Vec::new();
        data.try_reserve_exact(row.saturating_mul(spec.max_len))
            .map_err(|e| DecodeError::Output(format!("cache entry `{new}`: cannot allocate {} positions: {e}", spec.max_len)))?;
        data.extend_from_slice(&t.data);
        inputs.insert(past.clone(), HostTensor { dtype: t.dtype, shape: t.shape.clone(), data });
        rows.push(row);
    }
    let mut step_time = 0.0f64;
    loop {
        let token = choose(&logits, &opts.sampling, out.tokens.len() as u64) as i64;
        if opts.keep_logits {
            out.logits.push(std::mem::take(&mut logits));
        }
        out.tokens.push(token);
        if opts.stop.contains(&token) {
            out.reason = StopReason::Stop;
            break;
        }
        if out.tokens.len() >= opts.max_tokens {
            break;
        }
        let n = prompt.len() + out.tokens.len() - 1;
        inputs.insert(spec.tokens.clone(), HostTensor::from_i64(&[1, 1], &[token]));
        let t = Instant::now();
        let mut res =
            runner.run_stage(&spec.step, &inputs).map_err(|source| DecodeError::Stage { stage: spec.step.clone(), token: out.tokens.len(), source })?;
        step_time += t.elapsed().as_secs_f64() * 1e3;
        out.steps += 1;
        logits = last_row(&spec.logits, &take(&mut res, &spec.step, &spec.logits)?)?;
        for ((new, past), &row) in spec.cache.iter().zip(&rows) {
            let t = take(&mut res, &spec.step, new)?;
            let c = inputs.get_mut(past).ok_or_else(|| DecodeError::Output(format!("cache entry `{past}` is gone")))?;
            if t.dtype != c.dtype || t.data.len() != row || t.shape.first() != Some(&1) || t.shape.get(1) != Some(&1) {
                return Err(DecodeError::Output(format!(
                    "cache entry `{new}` of stage `{}` is {}{:?}, expected one position of {} bytes",
                    spec.step, t.dtype, t.shape, row
                )));
            }
            // Within the reserved capacity: no reallocation.
            c.data.extend_from_slice(&t.data);
            c.shape[1] = n + 1;
        }
    }
    out.decode_ms_per_token = if out.steps > 0 { step_time / out.steps as f64 } else { 0.0 };
    Ok(out)
}

#[cfg(test)]
#[path = "tests/decode.rs"]
mod tests;
