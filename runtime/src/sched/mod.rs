//! Diffusion schedulers: the sampling loop's arithmetic between model calls.
//!
//! Each scheduler reproduces one diffusers 0.42 class (behaviour, not code):
//!
//! | class | file |
//! | --- | --- |
//! | `FlowMatchEulerDiscreteScheduler` | [`flow_match`] |
//! | `DDIMScheduler` (eta = 0) | [`ddim`] |
//! | `DPMSolverMultistepScheduler` (DPM-Solver++ 1/2/3M) | [`dpm_solver`] |
//!
//! Construct one from a `scheduler_config.json` with [`from_config_file`] (or
//! [`from_config_value`]); the `_class_name` picks the class, the other fields
//! take diffusers' defaults when absent. Features the runtime does not emulate
//! (stochastic sampling, dynamic thresholding, beta sigmas, ...) are refused
//! at construction with an error naming the file and the field.
//!
//! Precision: schedules (timesteps, sigmas, alphas) are built with the same
//! dtype choices diffusers makes (float64 where it uses numpy float64, float32
//! where it uses torch float32 or numpy float32), then handed out as float32
//! like diffusers' tensors. Step functions take and return float32 slices and
//! do the per-element arithmetic in float32 in diffusers' operation order, so
//! results agree with diffusers on CPU to the last bit or two.
//!
//! Usage: `set_timesteps`, then for each `timesteps()[i]` call the model and
//! `step` once; the scheduler keeps the step index (and, for multistep
//! solvers, the previous model outputs) itself. The step index always starts
//! at 0 and advances by one per `step`, like a diffusers pipeline that calls
//! `set_begin_index(0)`; diffusers without a begin index looks the first
//! timestep up in the schedule, which only differs when the schedule repeats
//! its first timestep.

pub mod common;
pub mod config;
pub mod ddim;
pub mod dpm_solver;
pub mod flow_match;

pub use ddim::{DdimConfig, DdimScheduler};
pub use dpm_solver::{DpmSolverConfig, DpmSolverMultistepScheduler};
pub use flow_match::{FlowMatchConfig, FlowMatchEulerDiscreteScheduler};

use config::ConfigReader;
use serde_json::Value;
use std::path::Path;
use thiserror::Error;

/// The `_class_name`s [`from_config_value`] accepts.
pub const SUPPORTED_CLASSES: [&str; 3] = ["FlowMatchEulerDiscreteScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"];

#[derive(Debug, Error)]
pub enum SchedError {
    /// A config field is missing, mistyped, out of range or asks for an unsupported feature.
    #[error("{source_name}: field `{field}`: {message}")]
    Config { source_name: String, field: String, message: String },
    #[error("{source_name}: `_class_name` \"{class}\" is not a supported scheduler; supported: {supported}")]
    UnknownClass { source_name: String, class: String, supported: String },
    /// The config file could not be read or parsed.
    #[error("{source_name}: {message}")]
    File { source_name: String, message: String },
    /// A call the scheduler cannot honour (bad `set_timesteps` arguments, step past the end, ...).
    #[error("{scheduler}: {message}")]
    Usage { scheduler: &'static str, message: String },
}

impl SchedError {
    pub fn config(source: &str, field: &str, message: impl Into<String>) -> SchedError {
        SchedError::Config { source_name: source.to_string(), field: field.to_string(), message: message.into() }
    }
    pub fn usage(scheduler: &'static str, message: impl Into<String>) -> SchedError {
        SchedError::Usage { scheduler, message: message.into() }
    }
}

/// Arguments of `set_timesteps` (diffusers' keyword arguments).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimestepOptions {
    /// `num_inference_steps`.
    pub num_inference_steps: Option<usize>,
    /// Custom `sigmas` (FlowMatch only), e.g. [`flux_sigmas`].
    pub sigmas: Option<Vec<f64>>,
    /// Custom `timesteps` (FlowMatch: float timesteps; DPM-Solver: integers).
    pub timesteps: Option<Vec<f64>>,
    /// `mu` for dynamic (resolution-dependent) shifting, e.g. from [`calculate_shift`].
    pub mu: Option<f64>,
}

impl TimestepOptions {
    /// `set_timesteps(num_inference_steps=n)`.
    pub fn steps(n: usize) -> TimestepOptions {
        TimestepOptions { num_inference_steps: Some(n), ..Default::default() }
    }

    /// What `FluxPipeline` passes: `sigmas = np.linspace(1.0, 1/n, n)` and `mu`.
    pub fn flux(n: usize, mu: f64) -> TimestepOptions {
        TimestepOptions { sigmas: Some(flux_sigmas(n)), mu: Some(mu), ..Default::default() }
    }

    pub fn with_mu(mut self, mu: f64) -> TimestepOptions {
        self.mu = Some(mu);
        self
    }
}

/// `np.linspace(1.0, 1 / n, n)`: the custom sigmas `FluxPipeline` (and the
/// pipelines copied from it) pass to `set_timesteps`.
pub fn flux_sigmas(n: usize) -> Vec<f64> {
    common::np_linspace(1.0, 1.0 / n as f64, n)
}

/// `calculate_shift` of `FluxPipeline` (also used by SD3 / Qwen-Image / LTX
/// pipelines): `mu` interpolated linearly in the image sequence length,
/// float64 like Python.
pub fn calculate_shift(image_seq_len: usize, base_seq_len: usize, max_seq_len: usize, base_shift: f64, max_shift: f64) -> f64 {
    let m = (max_shift - base_shift) / (max_seq_len as i64 - base_seq_len as i64) as f64;
    let b = base_shift - m * base_seq_len as f64;
    image_seq_len as f64 * m + b
}

/// One diffusers scheduler.
pub trait Scheduler: Send + std::fmt::Debug {
    /// The diffusers class this reproduces.
    fn class_name(&self) -> &'static str;

    /// Builds the inference schedule and resets the step index and any multistep state.
    fn set_timesteps(&mut self, opts: &TimestepOptions) -> Result<(), SchedError>;

    /// The timesteps to feed the model, one per step (integral values for
    /// DDIM / DPM-Solver; FlowMatch models such as Flux take `t / 1000`).
    fn timesteps(&self) -> &[f32];

    /// The noise levels, `timesteps().len() + 1` long (terminal value last),
    /// for sigma-parameterised schedulers; `None` for DDIM.
    fn sigmas(&self) -> Option<&[f32]>;

    /// Steps taken since `set_timesteps`.
    fn step_index(&self) -> usize;

    /// The timestep of the next `step`, if any.
    fn current_timestep(&self) -> Option<f32> {
        self.timesteps().get(self.step_index()).copied()
    }

    /// Standard deviation of the initial noise (`init_noise_sigma`): the
    /// initial latents are `init_noise_sigma * N(0, 1)`.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// `scale_model_input`: scales the model input in place (a no-op for the
    /// schedulers here, as in diffusers).
    fn scale_model_input(&self, _sample: &mut [f32]) {}

    /// `mu` for dynamic shifting from the image sequence length (packed latent
    /// tokens), computed as `FluxPipeline` does from this config's
    /// `base_image_seq_len`, `max_image_seq_len`, `base_shift`, `max_shift`;
    /// `None` when the scheduler does not use dynamic shifting.
    fn dynamic_shift_mu(&self, _image_seq_len: usize) -> Option<f64> {
        None
    }

    /// One sampler step: from the model output at the current timestep and
    /// the current sample, writes the previous (less noisy) sample. All three
    /// slices have the same length.
    fn step(&mut self, model_output: &[f32], sample: &[f32], prev_sample: &mut [f32]) -> Result<(), SchedError>;

    /// [`Scheduler::step`] returning a new vector.
    fn step_vec(&mut self, model_output: &[f32], sample: &[f32]) -> Result<Vec<f32>, SchedError> {
        let mut out = vec![0.0f32; sample.len()];
        self.step(model_output, sample, &mut out)?;
        Ok(out)
    }
}

/// A scheduler from a parsed `scheduler_config.json`; `source` names it in errors.
pub fn from_config_value(value: &Value, source: &str) -> Result<Box<dyn Scheduler>, SchedError> {
    let c = ConfigReader::new(value, source)?;
    let class = match value.get("_class_name") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(c.err("_class_name", format!("expected a string, found {other}"))),
        None => return Err(c.err("_class_name", format!("missing; expected one of {}", config::quote_list(&SUPPORTED_CLASSES)))),
    };
    Ok(match class {
        "FlowMatchEulerDiscreteScheduler" => Box::new(FlowMatchEulerDiscreteScheduler::new(FlowMatchConfig::from_reader(&c)?)?),
        "DDIMScheduler" => Box::new(DdimScheduler::new(DdimConfig::from_reader(&c)?)),
        "DPMSolverMultistepScheduler" => Box::new(DpmSolverMultistepScheduler::new(DpmSolverConfig::from_reader(&c)?)),
        other => return Err(SchedError::UnknownClass { source_name: source.to_string(), class: other.to_string(), supported: SUPPORTED_CLASSES.join(", ") }),
    })
}

/// A scheduler from a `scheduler_config.json` file.
pub fn from_config_file(path: &Path) -> Result<Box<dyn Scheduler>, SchedError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SchedError::File { source_name: name.clone(), message: e.to_string() })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| SchedError::File { source_name: name.clone(), message: format!("not valid JSON: {e}") })?;
    from_config_value(&value, &name)
}

#[cfg(test)]
#[path = "tests/mod_tests.rs"]
mod tests;
