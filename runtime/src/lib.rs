//! omnic runtime: host tensors, safetensors I/O and (as the compiler grows)
//! artifact loading and execution. This crate never depends on a compiler
//! crate nor on MLIR/LLVM: a deployment needs only an artifact and `omnirt`.

pub mod artifact;
pub mod bench;
pub mod error;
pub mod exec;
pub mod image;
pub mod io;
pub mod kernels;
pub mod lora;
pub mod process;
pub mod program;
pub mod rng;
pub mod sched;
pub mod tensor;

pub use error::RtError;
pub use tensor::{ElemType, HostTensor};
