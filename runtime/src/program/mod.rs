//! Running a program's control (forward, denoise loop, ...) over its
//! stages. The control logic lives here, in the runtime, so a deployment
//! needs no compiler; it drives stages through [`StageRunner`], which the
//! schedule executor implements for compiled artifacts and which tests on
//! the compiler side implement with the reference evaluator.

pub mod decode;
pub mod denoise;
pub mod generate;
pub mod runner;
pub mod sample;
pub mod textgen;
pub mod teacache_calibrate;

pub use denoise::{run_denoise, DenoiseOptions, DenoiseOutput, DenoiseReport, DenoiseSpec, OnStep};
pub use runner::{StageRunner, Tensors};
