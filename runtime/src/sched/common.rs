//! Numerics shared by the schedulers, written to reproduce what diffusers'
//! numpy / torch (CPU) calls compute, operation by operation and in the same
//! dtype, so schedules agree to the last bit or two:
//!
//! * `np_linspace` / `np_arange`: numpy's float64 algorithms (`i*step + start`
//!   with the last linspace point set to `stop`; arange fills
//!   `start + i*((start+step) - start)`).
//! * `torch_linspace_f32`: torch's CPU `linspace(dtype=float32)` kernel, which
//!   computes `start + step*i` for the first half and `end - step*(n-1-i)` for
//!   the second in float32, contracted to a fused multiply-add by the compiler
//!   on x86-64 builds with FMA (verified bit-exact against torch 2.15 for 1000
//!   betas; a plain multiply-then-add differs in ~20% of the elements by 1 ulp).
//! * `torch_cumprod_f32`: torch's CPU cumprod accumulates float32 in float64
//!   and rounds each partial product to float32.
//! * beta schedules and zero-terminal-SNR rescaling as `DDIMScheduler` /
//!   `DPMSolverMultistepScheduler` build them (float32 tensors).
//!
//! One thing is not reproduced: torch's CPU float32 `sqrt` (MKL VML in the
//! reference build) is not always correctly rounded (about 1% of random
//! inputs come out 1 ulp away from IEEE `sqrt`); the runtime uses the IEEE
//! square root, so schedules that take square roots of whole arrays
//! (`rescale_betas_zero_snr`) or step coefficients can differ by 1 ulp.

use super::config::ConfigReader;
use super::SchedError;

/// `numpy.linspace(start, stop, num)` (endpoint included), float64.
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> =
        if step == 0.0 { (0..num).map(|i| (i as f64 / div) * delta + start).collect() } else { (0..num).map(|i| i as f64 * step + start).collect() };
    y[num - 1] = stop;
    y
}

/// `numpy.arange(start, stop, step)` with a float step, float64.
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let mut v = Vec::with_capacity(len);
    v.push(start);
    if len > 1 {
        let second = start + step;
        v.push(second);
        let delta = second - start;
        for i in 2..len {
            v.push(start + i as f64 * delta);
        }
    }
    v
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU.
pub fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let s = start as f32;
    let e = end as f32;
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps).map(|i| if i < halfway { step.mul_add(i as f32, s) } else { (-step).mul_add((steps - 1 - i) as f32, e) }).collect()
}

/// `torch.cumprod(x, 0)` for float32 on CPU (float64 accumulator).
pub fn torch_cumprod_f32(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// The DDPM-family beta schedules (`beta_schedule`), as float32 like diffusers.
#[derive(Clone, Debug, PartialEq)]
pub enum BetaSchedule {
    Linear { beta_start: f64, beta_end: f64 },
    ScaledLinear { beta_start: f64, beta_end: f64 },
    SquaredCosCapV2,
    Trained(Vec<f64>),
}

impl BetaSchedule {
    /// Reads `beta_schedule`, `beta_start`, `beta_end`, `trained_betas` with diffusers' defaults
    /// (`linear`, 0.0001, 0.02, null).
    pub fn from_config(c: &ConfigReader) -> Result<BetaSchedule, SchedError> {
        if let Some(tb) = c.opt_f64_list("trained_betas")? {
            return Ok(BetaSchedule::Trained(tb));
        }
        let beta_start = c.f64_or("beta_start", 0.0001)?;
        let beta_end = c.f64_or("beta_end", 0.02)?;
        match c.str_or("beta_schedule", "linear")? {
            "linear" => Ok(BetaSchedule::Linear { beta_start, beta_end }),
            "scaled_linear" => Ok(BetaSchedule::ScaledLinear { beta_start, beta_end }),
            "squaredcos_cap_v2" => Ok(BetaSchedule::SquaredCosCapV2),
            other => Err(c.err("beta_schedule", format!("\"{other}\" is not one of \"linear\", \"scaled_linear\", \"squaredcos_cap_v2\""))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            BetaSchedule::Linear { .. } => "linear",
            BetaSchedule::ScaledLinear { .. } => "scaled_linear",
            BetaSchedule::SquaredCosCapV2 => "squaredcos_cap_v2",
            BetaSchedule::Trained(_) => "trained_betas",
        }
    }

    /// The `num_train_timesteps` betas, float32.
    pub fn betas(&self, num_train_timesteps: usize) -> Vec<f32> {
        match self {
            BetaSchedule::Trained(b) => b.iter().map(|&x| x as f32).collect(),
            BetaSchedule::Linear { beta_start, beta_end } => torch_linspace_f32(*beta_start, *beta_end, num_train_timesteps),
            BetaSchedule::ScaledLinear { beta_start, beta_end } => {
                torch_linspace_f32(beta_start.powf(0.5), beta_end.powf(0.5), num_train_timesteps).into_iter().map(|b| b * b).collect()
            }
            BetaSchedule::SquaredCosCapV2 => betas_for_alpha_bar_cosine(num_train_timesteps, 0.999),
        }
    }
}

/// `betas_for_alpha_bar(n, max_beta, "cosine")`: float64 math, float32 result.
pub fn betas_for_alpha_bar_cosine(n: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powf(2.0);
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr(betas)` (arXiv 2305.08891, Algorithm 1) in float32 like diffusers.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
    let mut s: Vec<f32> = torch_cumprod_f32(&alphas).into_iter().map(f32::sqrt).collect();
    let (Some(&s0), Some(&st)) = (s.first(), s.last()) else { return Vec::new() };
    let k = s0 / (s0 - st);
    for v in s.iter_mut() {
        *v -= st;
        *v *= k;
    }
    let ab: Vec<f32> = s.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    for i in 1..ab.len() {
        out.push(1.0 - ab[i] / ab[i - 1]);
    }
    out
}

/// `alphas_cumprod = cumprod(1 - betas)` (float32).
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
    torch_cumprod_f32(&alphas)
}

/// `timestep_spacing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl TimestepSpacing {
    pub fn from_config(c: &ConfigReader, default: &'static str) -> Result<TimestepSpacing, SchedError> {
        Ok(match c.choice("timestep_spacing", default, &["leading", "trailing", "linspace"])? {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            _ => TimestepSpacing::Linspace,
        })
    }
}

/// `prediction_type`: what the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    Sample,
    VPrediction,
    /// DPM-Solver with flow sigmas only: the flow velocity.
    FlowPrediction,
}

impl PredictionType {
    pub fn from_config(c: &ConfigReader, allowed: &[&str]) -> Result<PredictionType, SchedError> {
        Ok(match c.choice("prediction_type", "epsilon", allowed)? {
            "sample" => PredictionType::Sample,
            "v_prediction" => PredictionType::VPrediction,
            "flow_prediction" => PredictionType::FlowPrediction,
            _ => PredictionType::Epsilon,
        })
    }
}

/// Checks shared by the step functions.
pub fn check_step_slices(who: &'static str, model_output: &[f32], sample: &[f32], prev_sample: &[f32]) -> Result<(), SchedError> {
    if model_output.len() != sample.len() || prev_sample.len() != sample.len() {
        return Err(SchedError::usage(
            who,
            format!("step: model_output has {} elements, sample {}, prev_sample {}; they must match", model_output.len(), sample.len(), prev_sample.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests/common.rs"]
mod tests;
