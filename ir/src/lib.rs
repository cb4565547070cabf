//! omnic IR: the program representation every other crate works on.
//!
//! - [`dtype`], [`shape`]: element types and shapes with symbolic dims;
//! - [`op`]: the closed op set, each op's math in its doc comment;
//! - [`graph`], [`builder`], [`program`]: dataflow graphs, stages, control;
//! - [`verify`]: type/shape checking; [`text`]: printer and parser;
//! - [`regions`]: dispatch regions (kernels) and their schedule; [`dot`]: Graphviz export;
//! - [`eval`]: the reference evaluator, the semantics oracle.

pub mod analysis;
pub mod builder;
pub mod dot;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod graph;
pub mod infer;
pub mod op;
pub mod program;
pub mod regions;
pub mod shape;
pub mod text;
pub mod verify;
#[cfg(test)]
mod verify_tests;

pub use builder::Builder;
pub use dtype::DType;
pub use error::IrError;
pub use graph::{Annotation, Graph, Node, Role, ValueRef};
pub use op::{BinaryOp, CmpOp, Literal, Op, ReduceOp, TensorType, UnaryOp};
pub use program::{CachePolicy, Control, DecodeSpec, DenoiseSpec, Guidance, Program, SigmaSchedule, Stage, TeaCacheSpec};
pub use shape::{Dim, Shape};
