//! Load errors. Each names the file, tensor or field at fault.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("model directory `{0}` does not exist")]
    NoDirectory(PathBuf),
    #[error("`{dir}` has no {what}")]
    MissingFile { dir: PathBuf, what: String },
    #[error("{path}:{line}:{col}: malformed JSON: {message}")]
    BadJson { path: PathBuf, line: usize, col: usize, message: String },
    #[error("{path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("{path}: unknown architecture `{class}`; supported: {supported}")]
    UnknownArchitecture { path: PathBuf, class: String, supported: String },
    #[error("tensor `{name}` is missing from the checkpoint in `{dir}`{hint}")]
    MissingTensor { name: String, dir: PathBuf, hint: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor `{name}` in {path} has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    UnsupportedDtype { name: String, path: PathBuf, dtype: String },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Runtime(#[from] omnic_runtime::RtError),
}
