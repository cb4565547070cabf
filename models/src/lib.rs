//! omnic model families. Each module has a serde `Config` read from the
//! model's `config.json` and a builder that emits the IR for one forward,
//! with weights named exactly as in the checkpoint. Every module names the
//! reference implementation it follows.
//!
//! Annotations every later pass relies on: `block(i)` on each repeated
//! transformer block, `role(modulated_input)` on the first block's
//! adaLN-modulated hidden state, `role(timestep_embedding)` on the
//! conditioning embedding, `role(residual_in)` / `role(residual_out)` on the
//! residual streams entering and leaving the block stack.

pub mod ctx;
pub mod error;
pub mod eval_runner;
pub mod layers;
pub mod lora;
pub mod parity;
pub mod pipeline;
mod registry;

pub mod dit;
pub mod vae;
pub mod flux;
pub mod longcat;
pub mod flux2;
pub mod zimage;
pub mod wan;
pub mod glmimage;
pub mod sd3;
pub mod qwenimage;
pub mod qwen;

pub use error::{ImportError, Result};
pub use registry::{import, import_with, supported_classes, Family};

use omnic_frontend::{Checkpoint, ModelDir};
use omnic_ir::Program;

/// Options for importing a model.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Also output the fixtures' `inter.*` intermediates (for debugging).
    pub intermediates: bool,
    /// Positions of the KV cache of causal LMs' decode programs (default:
    /// `max_position_embeddings` capped at 2048).
    pub max_len: Option<usize>,
    /// Keep LoRA slots (a run-time low-rank path) on linear layers (see [`lora`]).
    pub lora: Option<lora::SlotOptions>,
}

/// An imported model: its program, the checkpoint the program's `param`s
/// name, and the directory it came from.
pub struct Imported {
    pub dir: ModelDir,
    pub checkpoint: Checkpoint,
    pub program: Program,
    pub family: &'static str,
}
