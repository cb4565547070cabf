//! `DDIMScheduler` (diffusers 0.42) with eta = 0: the deterministic DDIM
//! sampler used by SD1.x-era and DiT pipelines.
//!
//! * betas: `linear` / `scaled_linear` (torch float32 linspace, squared) /
//!   `squaredcos_cap_v2` (float64, rounded) / `trained_betas`, optionally
//!   rescaled to zero terminal SNR; `alphas_cumprod` float32.
//! * timesteps (`timestep_spacing`): `leading` (`arange(n) * (N // n)` +
//!   `steps_offset`), `trailing` (`round(arange(N, 0, -N/n)) - 1`),
//!   `linspace` (`round(linspace(0, N-1, n))`), descending, integers.
//! * step: the previous timestep is `t - N // n`; below 0 it uses
//!   `final_alpha_cumprod` (1 with `set_alpha_to_one`, else
//!   `alphas_cumprod[0]`). Predicted x0 from `epsilon` / `sample` /
//!   `v_prediction`, clipped to `clip_sample_range` when `clip_sample`, then
//!   `x_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps`, all in float32.
//!
//! Refused: `thresholding` (per-sample quantiles need the batch layout).
//! `eta > 0` is not offered (it needs noise).

use super::common::{alphas_cumprod, check_step_slices, np_arange, np_linspace, rescale_zero_terminal_snr, BetaSchedule, PredictionType, TimestepSpacing};
use super::config::ConfigReader;
use super::{SchedError, Scheduler, TimestepOptions};

const NAME: &str = "DDIMScheduler";

/// The config fields DDIM reads (diffusers' defaults in `Default`).
#[derive(Clone, Debug, PartialEq)]
pub struct DdimConfig {
    pub num_train_timesteps: usize,
    pub betas: BetaSchedule,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub set_alpha_to_one: bool,
    pub steps_offset: i64,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        DdimConfig {
            num_train_timesteps: 1000,
            betas: BetaSchedule::Linear { beta_start: 0.0001, beta_end: 0.02 },
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
        }
    }
}

impl DdimConfig {
    pub fn from_reader(c: &ConfigReader) -> Result<DdimConfig, SchedError> {
        let d = DdimConfig::default();
        c.refuse_true("thresholding", "dynamic thresholding needs per-sample quantiles over the batch layout")?;
        let num_train_timesteps = c.usize_or("num_train_timesteps", d.num_train_timesteps)?;
        if num_train_timesteps == 0 {
            return Err(c.err("num_train_timesteps", "must be at least 1"));
        }
        let betas = BetaSchedule::from_config(c)?;
        if let BetaSchedule::Trained(b) = &betas {
            if b.len() != num_train_timesteps {
                return Err(c.err("trained_betas", format!("has {} values but num_train_timesteps is {num_train_timesteps}", b.len())));
            }
        }
        let clip_sample_range = c.f64_or("clip_sample_range", d.clip_sample_range)?;
        if clip_sample_range.is_nan() || clip_sample_range < 0.0 {
            return Err(c.err("clip_sample_range", format!("must be a non-negative number, got {clip_sample_range}")));
        }
        Ok(DdimConfig {
            num_train_timesteps,
            betas,
            clip_sample: c.bool_or("clip_sample", d.clip_sample)?,
            clip_sample_range,
            set_alpha_to_one: c.bool_or("set_alpha_to_one", d.set_alpha_to_one)?,
            steps_offset: c.i64_or("steps_offset", d.steps_offset)?,
            prediction_type: PredictionType::from_config(c, &["epsilon", "sample", "v_prediction"])?,
            timestep_spacing: TimestepSpacing::from_config(c, "leading")?,
            rescale_betas_zero_snr: c.bool_or("rescale_betas_zero_snr", d.rescale_betas_zero_snr)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct DdimScheduler {
    config: DdimConfig,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    timesteps_i: Vec<i64>,
    timesteps: Vec<f32>,
    num_inference_steps: usize,
    step_index: usize,
}

impl DdimScheduler {
    pub fn new(config: DdimConfig) -> DdimScheduler {
        let mut betas = config.betas.betas(config.num_train_timesteps);
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas_cumprod = alphas_cumprod(&betas);
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        DdimScheduler { config, alphas_cumprod, final_alpha_cumprod, timesteps_i: Vec::new(), timesteps: Vec::new(), num_inference_steps: 0, step_index: 0 }
    }

    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    /// The training schedule's cumulative alpha products (float32).
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The inference timesteps as integers.
    pub fn timesteps_i64(&self) -> &[i64] {
        &self.timesteps_i
    }
}

impl Scheduler for DdimScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps(&mut self, opts: &TimestepOptions) -> Result<(), SchedError> {
        if opts.sigmas.is_some() || opts.timesteps.is_some() || opts.mu.is_some() {
            return Err(SchedError::usage(NAME, "set_timesteps takes only num_inference_steps (no custom sigmas, timesteps or mu)"));
        }
        let ntt = self.config.num_train_timesteps;
        let n = opts.num_inference_steps.ok_or_else(|| SchedError::usage(NAME, "set_timesteps needs num_inference_steps"))?;
        if n == 0 || n > ntt {
            return Err(SchedError::usage(NAME, format!("num_inference_steps must be between 1 and num_train_timesteps ({ntt}), got {n}")));
        }
        let ts: Vec<i64> = match self.config.timestep_spacing {
            TimestepSpacing::Leading => {
                let ratio = (ntt / n) as i64;
                (0..n as i64).rev().map(|i| i * ratio + self.config.steps_offset).collect()
            }
            TimestepSpacing::Trailing => np_arange(ntt as f64, 0.0, -(ntt as f64 / n as f64)).into_iter().map(|t| t.round_ties_even() as i64 - 1).collect(),
            TimestepSpacing::Linspace => np_linspace(0.0, (ntt - 1) as f64, n).into_iter().rev().map(|t| t.round_ties_even() as i64).collect(),
        };
        if let Some(&bad) = ts.iter().find(|&&t| t < 0 || t >= ntt as i64) {
            return Err(SchedError::usage(NAME, format!("timestep {bad} is outside 0..{ntt} (steps_offset {})", self.config.steps_offset)));
        }
        self.timesteps = ts.iter().map(|&t| t as f32).collect();
        self.timesteps_i = ts;
        self.num_inference_steps = n;
        self.step_index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    fn step_index(&self) -> usize {
        self.step_index
    }

    fn step(&mut self, model_output: &[f32], sample: &[f32], prev_sample: &mut [f32]) -> Result<(), SchedError> {
        check_step_slices(NAME, model_output, sample, prev_sample)?;
        if self.num_inference_steps == 0 {
            return Err(SchedError::usage(NAME, "step called before set_timesteps"));
        }
        let Some(&t) = self.timesteps_i.get(self.step_index) else {
            return Err(SchedError::usage(NAME, format!("all {} steps of the schedule have been taken; call set_timesteps again", self.timesteps_i.len())));
        };
        let prev_t = t - (self.config.num_train_timesteps / self.num_inference_steps) as i64;
        let a_t = self.alphas_cumprod[t as usize];
        let a_prev = if prev_t >= 0 { self.alphas_cumprod[prev_t as usize] } else { self.final_alpha_cumprod };
        let b_t = 1.0 - a_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        // eta = 0: std_dev_t = 0 * sqrt(variance) (NaN only if the variance is).
        let b_prev = 1.0 - a_prev;
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev = 0.0f32 * variance.sqrt();
        let dir_coef = (1.0 - a_prev - std_dev * std_dev).sqrt();
        let sa_prev = a_prev.sqrt();
        let clip = self.config.clip_sample.then_some(self.config.clip_sample_range as f32);
        let pt = self.config.prediction_type;
        for ((o, &x), &m) in prev_sample.iter_mut().zip(sample).zip(model_output) {
            let (mut x0, eps) = match pt {
                PredictionType::Epsilon => ((x - sb * m) / sa, m),
                PredictionType::Sample => (m, (x - sa * m) / sb),
                PredictionType::VPrediction | PredictionType::FlowPrediction => (sa * x - sb * m, sa * m + sb * x),
            };
            if let Some(r) = clip {
                x0 = x0.clamp(-r, r);
            }
            *o = sa_prev * x0 + dir_coef * eps;
        }
        self.step_index += 1;
        Ok(())
    }
}
