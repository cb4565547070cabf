//! [`StageRunner`] for compiled artifacts: the control loops of
//! [`crate::program`] (the denoise loop) drive an [`Executable`]'s stages.
//! Names a stage does not take are ignored, as [`Executable::run`] does.

use super::Executable;
use crate::error::RtError;
use crate::program::runner::{StageRunner, Tensors};

impl StageRunner for Executable {
    fn run_stage(&mut self, stage: &str, inputs: &Tensors) -> Result<Tensors, RtError> {
        let out = self.run(stage, inputs.iter().map(|(n, t)| (n.as_str(), t))).map_err(|e| RtError::Exec(e.to_string()))?;
        Ok(out.into_iter().collect())
    }
}
