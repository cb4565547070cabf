//! Errors of code generation. Every failure on user input is one of these;
//! nothing in this crate panics on a graph it is given.

use omnic_ir::IrError;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CodegenError {
    /// The target cannot generate code for this op (yet). Names the op, the
    /// value it produces (`%k` as in the text form, with its label) and why.
    #[error("{target} target: unsupported op `{op}` at {value}: {reason}")]
    Unsupported { target: &'static str, op: String, value: String, reason: String },

    /// No target of that name is registered.
    #[error("unknown target `{name}` (available: {available})")]
    UnknownTarget { name: String, available: String },

    /// The stage graph itself is malformed (the IR verifier's message).
    #[error("invalid stage: {0}")]
    Ir(#[from] IrError),

    /// A module we built failed MLIR verification: a bug in this crate.
    #[error("internal error: {what} does not verify: {diagnostics}")]
    Verify { what: String, diagnostics: String },

    /// The MLIR pass pipeline failed or could not be parsed.
    #[error("MLIR pipeline `{pipeline}` failed: {diagnostics}")]
    Pipeline { pipeline: String, diagnostics: String },

    /// Translating the LLVM dialect to LLVM IR failed.
    #[error("translation to LLVM IR failed: {0}")]
    Translate(String),

    /// Creating the JIT or looking up a kernel in it failed.
    #[error("JIT: {0}")]
    Jit(String),

    /// Arguments given to a compiled kernel do not match its signature.
    #[error("kernel `{kernel}`: {message}")]
    Run { kernel: String, message: String },

    /// Any other internal failure while building MLIR (melior errors).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<melior::Error> for CodegenError {
    fn from(e: melior::Error) -> Self {
        CodegenError::Internal(format!("melior: {e}"))
    }
}

pub type Result<T, E = CodegenError> = std::result::Result<T, E>;
