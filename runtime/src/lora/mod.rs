//! LoRA adapters for diffusion models: reading them and binding them to a
//! compiled program's low-rank slots.
//!
//! A LoRA adapter changes a linear layer `y = x·Wᵀ + b` into
//! `y = x·(W + s·c·B·A)ᵀ + b` with `A: [r, in]`, `B: [out, r]`, the user's
//! scale `s` and the adapter's scaling `c = lora_alpha / r` (`lora_alpha /
//! √r` with `use_rslora`).
//!
//! Formats read ([`Adapter::load`]):
//! - PEFT (`save_pretrained` of a `PeftModel`): a directory with
//!   `adapter_config.json` (`r`, `lora_alpha`, `target_modules`,
//!   `use_rslora`, `rank_pattern`, `alpha_pattern`) and
//!   `adapter_model.safetensors` with keys
//!   `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`;
//! - the diffusers layout that `save_lora_weights` writes
//!   (`pytorch_lora_weights.safetensors`, a file or a directory holding
//!   one): keys `transformer.<module>.lora_A.weight` / `.lora_B.weight`,
//!   the scaling from kohya-style `transformer.<module>.alpha` scalars, else
//!   from the `lora_adapter_metadata` header entry diffusers stores
//!   (`transformer.lora_alpha`, ...), else `alpha = r` (diffusers'
//!   convention when neither is given).
//!
//! `<module>` is the module path in the model (`transformer_blocks.0.attn.to_q`);
//! the compiler names a linear's weight `<module>.weight`, so adapters map
//! onto the program by name. The compiler merges adapters into the weights
//! (`omnic compile --lora`); programs compiled with `--lora-slots` keep the
//! low-rank path and [`slots::LoraSlots`] binds adapters at run time, with
//! [`cache::AdapterCache`] keeping recently used adapters loaded.

pub mod adapter;
pub mod cache;
mod config;
pub mod request;
pub mod slots;

pub use adapter::{Adapter, AdapterFormat, LoraModule};
pub use cache::AdapterCache;
pub use request::LoraRuntime;
pub use slots::{LoraSlots, SlotModule};

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoraError {
    #[error(transparent)]
    Rt(#[from] crate::error::RtError),
    #[error("{path}: not a LoRA adapter: expected a directory with adapter_config.json and adapter_model.safetensors (PEFT), or a .safetensors file (or a directory with one) in the diffusers layout (`transformer.<module>.lora_A.weight`)")]
    NotFound { path: PathBuf },
    #[error("{path}: malformed adapter config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error("adapter {adapter}: target module `{module}` is not in the model{hint}")]
    UnknownModule { adapter: String, module: String, hint: String },
    #[error("adapter {adapter}: module `{module}`: the update lora_B·lora_A is {found:?} ([out, in]) but the model's weight is {expected:?}")]
    ShapeMismatch { adapter: String, module: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("adapter {adapter}: module `{module}` has rank {rank}, above the program's slot rank {slot_rank} (compile with a larger --lora-rank)")]
    RankTooHigh { adapter: String, module: String, rank: usize, slot_rank: usize },
    #[error("{given} adapters given but the program has {slots} LoRA slot(s) (compile with --lora-slots {given})")]
    TooManyAdapters { given: usize, slots: usize },
    #[error("`{spec}`: {message}")]
    BadSpec { spec: String, message: String },
    #[error("the program has no LoRA slots (compile it with `omnic compile --lora-slots N --lora-rank R`, or merge the adapter with `omnic compile --lora`)")]
    NoSlots,
}

/// An adapter named on a command line: `PATH[:SCALE]` (scale 1 by default).
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterSpec {
    pub path: PathBuf,
    pub scale: f64,
}

impl AdapterSpec {
    /// Parse `PATH[:SCALE]`; the part after the last `:` is a scale only if it
    /// parses as a number (so paths with colons still work).
    pub fn parse(s: &str) -> Result<AdapterSpec, LoraError> {
        if s.is_empty() {
            return Err(LoraError::BadSpec { spec: s.into(), message: "empty adapter path".into() });
        }
        if let Some((p, sc)) = s.rsplit_once(':') {
            if let Ok(scale) = sc.parse::<f64>() {
                if !scale.is_finite() {
                    return Err(LoraError::BadSpec { spec: s.into(), message: format!("scale `{sc}` is not a finite number") });
                }
                if p.is_empty() {
                    return Err(LoraError::BadSpec { spec: s.into(), message: "empty adapter path before `:`".into() });
                }
                return Ok(AdapterSpec { path: PathBuf::from(p), scale });
            }
        }
        Ok(AdapterSpec { path: PathBuf::from(s), scale: 1.0 })
    }
}

/// `path` as shown in messages.
pub(crate) fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
#[path = "tests/lora.rs"]
mod tests;
