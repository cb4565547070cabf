//! Errors of the IR crate.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    /// A type or shape check failed: names the op, the value and the shapes.
    #[error("verifier: `{op}` producing {value}: {message}")]
    Verify { op: String, value: String, message: String },
    /// Malformed graph structure (dangling value, cycle, ...).
    #[error("graph: {0}")]
    Graph(String),
    /// Text form could not be parsed.
    #[error("parse error at line {line}, column {col}: {message}")]
    Parse { line: usize, col: usize, message: String },
    /// Evaluation failed (missing input, shape mismatch at run time, ...).
    #[error("evaluator: {0}")]
    Eval(String),
}
