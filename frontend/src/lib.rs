//! omnic frontend: finds what a Hugging Face model directory holds.
//!
//! - [`dir`]: detects the architecture from `config.json` (`_class_name` for
//!   diffusers, `architectures` for transformers) or `model_index.json` for
//!   pipeline directories;
//! - [`weights`]: memory-maps `*.safetensors` (single or sharded through
//!   `*.safetensors.index.json`), converts f16/bf16 to f32 on access.
//!
//! Every error names the file, tensor or field at fault.

pub mod convert;
pub mod dir;
pub mod error;
pub mod lora;
pub mod weights;

pub use dir::{ModelDir, RawConfig};
pub use error::LoadError;
pub use weights::Checkpoint;
