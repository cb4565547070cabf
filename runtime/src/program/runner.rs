//! The interface between control logic and whatever executes a stage.

use crate::error::RtError;
use crate::tensor::HostTensor;
use std::collections::HashMap;

/// Named tensors in and out of a stage.
pub type Tensors = HashMap<String, HostTensor>;

/// Executes stages of one program.
pub trait StageRunner {
    /// Run stage `stage` on `inputs` (named as the stage's inputs) and
    /// return its named outputs.
    fn run_stage(&mut self, stage: &str, inputs: &Tensors) -> Result<Tensors, RtError>;
}
