//! Import errors.

use omnic_frontend::LoadError;
use omnic_ir::IrError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImportError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("building the graph failed: {0}")]
    Ir(#[from] IrError),
    /// A config value the builder cannot use (names the field).
    #[error("{path}: field `{field}`: {message}")]
    Config { path: String, field: String, message: String },
}

pub type Result<T> = std::result::Result<T, ImportError>;
