//! `FlowMatchEulerDiscreteScheduler` (diffusers 0.42): rectified-flow Euler
//! sampling, `x_next = x + (sigma_next - sigma) * v`, used by Flux, SD3,
//! Qwen-Image, LTX, Wan (flow variants), ...
//!
//! Schedule (`set_timesteps`), following diffusers' dtype choices:
//! * without custom sigmas: `linspace(sigma_max*N, sigma_min*N, n) / N` in
//!   float64, where `sigma_max`/`sigma_min` are the float32 ends of the
//!   training schedule (which is already shifted when the shift is static);
//! * with custom `sigmas` (FluxPipeline passes `linspace(1, 1/n, n)`) or
//!   custom `timesteps`: numpy float32, and the shifting below runs in
//!   float32 too (numpy keeps float32 arrays float32 against Python scalars);
//! * shift: static `s*x / (1 + (s-1)*x)` or, with `use_dynamic_shifting`,
//!   `time_shift(mu)`: exponential `e^mu / (e^mu + (1/x - 1))` or linear
//!   `mu / (mu + (1/x - 1))`; then `shift_terminal` stretching, then an
//!   optional Karras / exponential re-spacing (float64);
//! * sigmas rounded to float32, `timesteps = sigmas * N` in float32, a
//!   terminal sigma 0 appended (1 with `invert_sigmas`, where sigmas become
//!   `1 - sigma`).
//!
//! Refused: `stochastic_sampling` (needs torch's noise generator to match),
//! `use_beta_sigmas` (needs scipy's beta quantile function).

use super::common::np_linspace;
use super::config::ConfigReader;
use super::{calculate_shift, SchedError, Scheduler, TimestepOptions};

const NAME: &str = "FlowMatchEulerDiscreteScheduler";

/// `time_shift_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeShiftType {
    Exponential,
    Linear,
}

/// `use_karras_sigmas` / `use_exponential_sigmas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigmaSpacing {
    Default,
    Karras,
    Exponential,
}

/// The config fields this scheduler reads (diffusers' defaults in `Default`).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowMatchConfig {
    pub num_train_timesteps: usize,
    pub shift: f64,
    pub use_dynamic_shifting: bool,
    pub base_shift: Option<f64>,
    pub max_shift: Option<f64>,
    pub base_image_seq_len: usize,
    pub max_image_seq_len: usize,
    pub invert_sigmas: bool,
    pub shift_terminal: Option<f64>,
    pub sigma_spacing: SigmaSpacing,
    pub time_shift_type: TimeShiftType,
}

impl Default for FlowMatchConfig {
    fn default() -> Self {
        FlowMatchConfig {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            base_shift: Some(0.5),
            max_shift: Some(1.15),
            base_image_seq_len: 256,
            max_image_seq_len: 4096,
            invert_sigmas: false,
            shift_terminal: None,
            sigma_spacing: SigmaSpacing::Default,
            time_shift_type: TimeShiftType::Exponential,
        }
    }
}

impl FlowMatchConfig {
    pub fn from_reader(c: &ConfigReader) -> Result<FlowMatchConfig, SchedError> {
        let d = FlowMatchConfig::default();
        c.refuse_true("stochastic_sampling", "it draws noise from torch's generator, which the runtime does not reproduce")?;
        let karras = c.bool_or("use_karras_sigmas", false)?;
        let exponential = c.bool_or("use_exponential_sigmas", false)?;
        let beta = c.bool_or("use_beta_sigmas", false)?;
        if [karras, exponential, beta].iter().filter(|&&b| b).count() > 1 {
            return Err(c.err("use_exponential_sigmas", "only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be true"));
        }
        if beta {
            return Err(c.unsupported("use_beta_sigmas", "true", "beta sigmas need scipy's beta quantile function"));
        }
        let num_train_timesteps = c.usize_or("num_train_timesteps", d.num_train_timesteps)?;
        if num_train_timesteps == 0 {
            return Err(c.err("num_train_timesteps", "must be at least 1"));
        }
        let time_shift_type = match c.choice("time_shift_type", "exponential", &["exponential", "linear"])? {
            "linear" => TimeShiftType::Linear,
            _ => TimeShiftType::Exponential,
        };
        Ok(FlowMatchConfig {
            num_train_timesteps,
            shift: c.f64_or("shift", d.shift)?,
            use_dynamic_shifting: c.bool_or("use_dynamic_shifting", false)?,
            base_shift: c.opt_f64("base_shift")?.or(d.base_shift),
            max_shift: c.opt_f64("max_shift")?.or(d.max_shift),
            base_image_seq_len: c.usize_or("base_image_seq_len", d.base_image_seq_len)?,
            max_image_seq_len: c.usize_or("max_image_seq_len", d.max_image_seq_len)?,
            invert_sigmas: c.bool_or("invert_sigmas", false)?,
            shift_terminal: c.opt_f64("shift_terminal")?,
            sigma_spacing: if karras {
                SigmaSpacing::Karras
            } else if exponential {
                SigmaSpacing::Exponential
            } else {
                SigmaSpacing::Default
            },
            time_shift_type,
        })
    }
}

/// Rounding of one arithmetic result to the dtype numpy computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prec {
    F32,
    F64,
}

impl Prec {
    /// IEEE float32 `+ - * /` equal the float64 result rounded to float32
    /// (float64 has more than twice float32's precision), so rounding every
    /// intermediate reproduces float32 arithmetic exactly.
    fn r(self, x: f64) -> f64 {
        match self {
            Prec::F32 => x as f32 as f64,
            Prec::F64 => x,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FlowMatchEulerDiscreteScheduler {
    config: FlowMatchConfig,
    shift: f64,
    sigma_min: f64,
    sigma_max: f64,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    step_index: usize,
    ready: bool,
}

impl FlowMatchEulerDiscreteScheduler {
    pub fn new(config: FlowMatchConfig) -> Result<Self, SchedError> {
        if config.num_train_timesteps == 0 {
            return Err(SchedError::usage(NAME, "num_train_timesteps must be at least 1"));
        }
        // Ends of the training schedule: t = N..1 (float32), sigma = t / N in float32,
        // statically shifted in float32 unless the shift is dynamic.
        let n = config.num_train_timesteps as f32;
        let end = |t: f32| -> f64 {
            let s = (t / n) as f64;
            if config.use_dynamic_shifting {
                s
            } else {
                static_shift(Prec::F32, config.shift, s)
            }
        };
        let sigma_max = end(n);
        let sigma_min = end(1.0);
        Ok(FlowMatchEulerDiscreteScheduler {
            shift: config.shift,
            config,
            sigma_min,
            sigma_max,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: 0,
            ready: false,
        })
    }

    pub fn config(&self) -> &FlowMatchConfig {
        &self.config
    }

    /// The static shift used by `set_timesteps` (diffusers' `set_shift`).
    pub fn set_shift(&mut self, shift: f64) {
        self.shift = shift;
    }

    pub fn shift(&self) -> f64 {
        self.shift
    }

    fn time_shift(&self, p: Prec, mu: f64, t: f64) -> f64 {
        // (1/t - 1) ** 1.0 is exact.
        let b = p.r(p.r(1.0 / t) - 1.0);
        match self.config.time_shift_type {
            TimeShiftType::Exponential => {
                let em = p.r(mu.exp());
                p.r(em / p.r(em + b))
            }
            TimeShiftType::Linear => {
                let m = p.r(mu);
                p.r(m / p.r(m + b))
            }
        }
    }
}

fn static_shift(p: Prec, shift: f64, s: f64) -> f64 {
    p.r(p.r(p.r(shift) * s) / p.r(1.0 + p.r(p.r(shift - 1.0) * s)))
}

impl Scheduler for FlowMatchEulerDiscreteScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps(&mut self, opts: &TimestepOptions) -> Result<(), SchedError> {
        let cfg = &self.config;
        let ntt = cfg.num_train_timesteps as f64;
        if cfg.use_dynamic_shifting && opts.mu.is_none() {
            return Err(SchedError::usage(NAME, "`mu` must be passed when `use_dynamic_shifting` is true (see calculate_shift / dynamic_shift_mu)"));
        }
        if let (Some(s), Some(t)) = (&opts.sigmas, &opts.timesteps) {
            if s.len() != t.len() {
                return Err(SchedError::usage(NAME, format!("{} sigmas but {} timesteps; they must have the same length", s.len(), t.len())));
            }
        }
        let n = match opts.num_inference_steps {
            Some(n) => {
                let custom = opts.sigmas.as_ref().or(opts.timesteps.as_ref());
                if let Some(c) = custom.filter(|c| c.len() != n) {
                    return Err(SchedError::usage(NAME, format!("num_inference_steps is {n} but {} custom sigmas/timesteps were given", c.len())));
                }
                n
            }
            None => match opts.sigmas.as_ref().or(opts.timesteps.as_ref()) {
                Some(c) => c.len(),
                None => return Err(SchedError::usage(NAME, "set_timesteps needs num_inference_steps, sigmas or timesteps")),
            },
        };
        if n == 0 {
            return Err(SchedError::usage(NAME, "the schedule must have at least one step"));
        }
        let custom_t: Option<Vec<f32>> = opts.timesteps.as_ref().map(|t| t.iter().map(|&x| x as f32).collect());

        // Base sigmas and the precision numpy works in from here on.
        let (p, base): (Prec, Vec<f64>) = match (&opts.sigmas, &custom_t) {
            (Some(s), _) => (Prec::F32, s.iter().map(|&x| x as f32 as f64).collect()),
            (None, Some(t)) => (Prec::F32, t.iter().map(|&x| (x / cfg.num_train_timesteps as f32) as f64).collect()),
            (None, None) => (Prec::F64, np_linspace(self.sigma_max * ntt, self.sigma_min * ntt, n).into_iter().map(|t| t / ntt).collect()),
        };

        let mut sig: Vec<f64> = match (cfg.use_dynamic_shifting, opts.mu) {
            (true, Some(mu)) => base.iter().map(|&s| self.time_shift(p, mu, s)).collect(),
            _ => base.iter().map(|&s| static_shift(p, self.shift, s)).collect(),
        };

        if let Some(st) = cfg.shift_terminal.filter(|&st| st != 0.0) {
            let omz: Vec<f64> = sig.iter().map(|&s| p.r(1.0 - s)).collect();
            let scale = p.r(omz[omz.len() - 1] / p.r(1.0 - st));
            sig = omz.iter().map(|&o| p.r(1.0 - p.r(o / scale))).collect();
        }

        let smin = sig[sig.len() - 1];
        let smax = sig[0];
        match cfg.sigma_spacing {
            SigmaSpacing::Default => {}
            SigmaSpacing::Karras => {
                let rho = 7.0f64;
                let min_inv = smin.powf(1.0 / rho);
                let max_inv = smax.powf(1.0 / rho);
                sig = np_linspace(0.0, 1.0, n).into_iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect();
            }
            SigmaSpacing::Exponential => {
                sig = np_linspace(smax.ln(), smin.ln(), n).into_iter().map(f64::exp).collect();
            }
        }

        let nt = cfg.num_train_timesteps as f32;
        let mut sigmas: Vec<f32> = sig.iter().map(|&s| s as f32).collect();
        let mut timesteps: Vec<f32> = match custom_t {
            Some(t) => t,
            None => sigmas.iter().map(|&s| s * nt).collect(),
        };
        if cfg.invert_sigmas {
            for s in sigmas.iter_mut() {
                *s = 1.0 - *s;
            }
            timesteps = sigmas.iter().map(|&s| s * nt).collect();
            sigmas.push(1.0);
        } else {
            sigmas.push(0.0);
        }
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.step_index = 0;
        self.ready = true;
        Ok(())
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn step_index(&self) -> usize {
        self.step_index
    }

    fn dynamic_shift_mu(&self, image_seq_len: usize) -> Option<f64> {
        let c = &self.config;
        c.use_dynamic_shifting
            .then(|| calculate_shift(image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift.unwrap_or(0.5), c.max_shift.unwrap_or(1.15)))
    }

    fn step(&mut self, model_output: &[f32], sample: &[f32], prev_sample: &mut [f32]) -> Result<(), SchedError> {
        super::common::check_step_slices(NAME, model_output, sample, prev_sample)?;
        if !self.ready {
            return Err(SchedError::usage(NAME, "step called before set_timesteps"));
        }
        let i = self.step_index;
        if i >= self.timesteps.len() {
            return Err(SchedError::usage(NAME, format!("all {} steps of the schedule have been taken; call set_timesteps again", self.timesteps.len())));
        }
        let dt = self.sigmas[i + 1] - self.sigmas[i];
        for ((o, &s), &v) in prev_sample.iter_mut().zip(sample).zip(model_output) {
            *o = s + dt * v;
        }
        self.step_index += 1;
        Ok(())
    }
}
