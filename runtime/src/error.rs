//! Runtime errors: each names the file, tensor or field at fault.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RtError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a valid safetensors file: {message}")]
    BadSafetensors { path: PathBuf, message: String },
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
    /// A stage execution failed (the executor's error, as text).
    #[error("{0}")]
    Exec(String),
}

impl RtError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RtError::Io { path: path.into(), err: source }
    }
}
