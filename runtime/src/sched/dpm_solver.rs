//! `DPMSolverMultistepScheduler` (diffusers 0.42), DPM-Solver++ only
//! (`algorithm_type` `dpmsolver++`, the default): multistep solver of order
//! 1, 2 (the usual "DPM++ 2M") or 3 on data (x0) predictions, `midpoint` or
//! `heun` second-order update.
//!
//! Schedule:
//! * `alphas_cumprod` as DDIM (float32); training sigmas
//!   `sqrt((1 - a) / a)` in float32;
//! * timesteps by `timestep_spacing` over `n + 1` points with the last one
//!   dropped (`linspace` default, `leading` + `steps_offset`, `trailing`),
//!   limited by `lambda_min_clipped`; or custom integer timesteps;
//! * sigmas: the training sigmas at the timesteps, or re-spaced with
//!   `use_karras_sigmas` / `use_lu_lambdas` / `use_exponential_sigmas`
//!   (float64, timesteps found by log-sigma interpolation, then truncated to
//!   integers as diffusers does), or `use_flow_sigmas` with `flow_shift`
//!   (`exp(mu)` with dynamic shifting); a final sigma of 0 (`zero`) or the
//!   smallest training sigma (`sigma_min`) appended; float32.
//!
//! Step: the model output becomes x0 (`epsilon`, `sample`, `v_prediction`,
//! `flow_prediction`), the x0 history is kept inside; the order is lowered at
//! the start (warm-up), at the last step (`lower_order_final` with fewer than
//! 15 steps, `euler_at_final`, or a zero final sigma) and at the second-last
//! (`lower_order_final` with fewer than 15 steps). Coefficients and updates
//! in float32 in diffusers' operation order.
//!
//! Refused: `dpmsolver` / `sde-*` algorithms, `thresholding`, learned
//! `variance_type`, `use_beta_sigmas`.

use super::common::{alphas_cumprod, check_step_slices, np_arange, np_linspace, rescale_zero_terminal_snr, BetaSchedule, PredictionType, TimestepSpacing};
use super::config::ConfigReader;
use super::{SchedError, Scheduler, TimestepOptions};

const NAME: &str = "DPMSolverMultistepScheduler";

/// `solver_type` for the second-order update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// How inference sigmas are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpmSigmaSpacing {
    /// Training sigmas at the spaced timesteps.
    Default,
    Karras,
    LuLambdas,
    Exponential,
    /// `use_flow_sigmas`: `flow_shift`-shifted `1 - linspace(1, 1/N, n+1)`.
    Flow,
}

/// `final_sigmas_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigmas {
    Zero,
    SigmaMin,
}

/// The config fields DPM-Solver reads (diffusers' defaults in `Default`).
#[derive(Clone, Debug, PartialEq)]
pub struct DpmSolverConfig {
    pub num_train_timesteps: usize,
    pub betas: BetaSchedule,
    /// `beta_schedule` is `squaredcos_cap_v2` (re-spaced timesteps are then not rounded).
    pub cosine_beta_schedule: bool,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub sigma_spacing: DpmSigmaSpacing,
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmas,
    pub lambda_min_clipped: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
    pub use_dynamic_shifting: bool,
}

impl Default for DpmSolverConfig {
    fn default() -> Self {
        DpmSolverConfig {
            num_train_timesteps: 1000,
            betas: BetaSchedule::Linear { beta_start: 0.0001, beta_end: 0.02 },
            cosine_beta_schedule: false,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            sigma_spacing: DpmSigmaSpacing::Default,
            flow_shift: 1.0,
            final_sigmas_type: FinalSigmas::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            use_dynamic_shifting: false,
        }
    }
}

impl DpmSolverConfig {
    pub fn from_reader(c: &ConfigReader) -> Result<DpmSolverConfig, SchedError> {
        let d = DpmSolverConfig::default();
        let num_train_timesteps = c.usize_or("num_train_timesteps", d.num_train_timesteps)?;
        if num_train_timesteps < 2 {
            return Err(c.err("num_train_timesteps", "must be at least 2"));
        }
        let betas = BetaSchedule::from_config(c)?;
        if let BetaSchedule::Trained(b) = &betas {
            if b.len() != num_train_timesteps {
                return Err(c.err("trained_betas", format!("has {} values but num_train_timesteps is {num_train_timesteps}", b.len())));
            }
        }
        let cosine_beta_schedule = c.str_or("beta_schedule", "linear")? == "squaredcos_cap_v2";
        match c.str_or("algorithm_type", "dpmsolver++")? {
            // diffusers maps `deis` to dpmsolver++.
            "dpmsolver++" | "deis" => {}
            a @ ("sde-dpmsolver++" | "sde-dpmsolver") => {
                return Err(c.unsupported(
                    "algorithm_type",
                    format!("\"{a}\""),
                    "SDE variants draw noise from torch's generator, which the runtime does not reproduce",
                ))
            }
            "dpmsolver" => return Err(c.unsupported("algorithm_type", "\"dpmsolver\"", "only the data-prediction solver dpmsolver++ is implemented")),
            other => {
                return Err(c.err("algorithm_type", format!("\"{other}\" is not one of \"dpmsolver++\", \"dpmsolver\", \"sde-dpmsolver++\", \"sde-dpmsolver\"")))
            }
        }
        let solver_type = match c.str_or("solver_type", "midpoint")? {
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => return Err(c.err("solver_type", format!("\"{other}\" is not one of \"midpoint\", \"heun\""))),
        };
        let solver_order = c.usize_or("solver_order", d.solver_order)?;
        if !(1..=3).contains(&solver_order) {
            return Err(c.err("solver_order", format!("{solver_order} is not supported (1, 2 or 3)")));
        }
        c.refuse_true("thresholding", "dynamic thresholding needs per-sample quantiles over the batch layout")?;
        if let Ok(v @ ("learned" | "learned_range")) = c.str_or("variance_type", "") {
            return Err(c.unsupported("variance_type", format!("\"{v}\""), "the model output would have to be split by channel"));
        }
        let karras = c.bool_or("use_karras_sigmas", false)?;
        let exponential = c.bool_or("use_exponential_sigmas", false)?;
        let beta = c.bool_or("use_beta_sigmas", false)?;
        if [karras, exponential, beta].iter().filter(|&&b| b).count() > 1 {
            return Err(c.err("use_exponential_sigmas", "only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be true"));
        }
        let lu = c.bool_or("use_lu_lambdas", false)?;
        let flow = c.bool_or("use_flow_sigmas", false)?;
        // diffusers' precedence: karras, lu lambdas, exponential, beta, flow.
        let sigma_spacing = if karras {
            DpmSigmaSpacing::Karras
        } else if lu {
            DpmSigmaSpacing::LuLambdas
        } else if exponential {
            DpmSigmaSpacing::Exponential
        } else if beta {
            return Err(c.unsupported("use_beta_sigmas", "true", "beta sigmas need scipy's beta quantile function"));
        } else if flow {
            DpmSigmaSpacing::Flow
        } else {
            DpmSigmaSpacing::Default
        };
        let final_sigmas_type = match c.choice("final_sigmas_type", "zero", &["zero", "sigma_min"])? {
            "sigma_min" => FinalSigmas::SigmaMin,
            _ => FinalSigmas::Zero,
        };
        c.choice("time_shift_type", "exponential", &["exponential"])?;
        Ok(DpmSolverConfig {
            num_train_timesteps,
            betas,
            cosine_beta_schedule,
            solver_order,
            prediction_type: PredictionType::from_config(c, &["epsilon", "sample", "v_prediction", "flow_prediction"])?,
            solver_type,
            lower_order_final: c.bool_or("lower_order_final", d.lower_order_final)?,
            euler_at_final: c.bool_or("euler_at_final", d.euler_at_final)?,
            sigma_spacing,
            flow_shift: c.f64_or("flow_shift", d.flow_shift)?,
            final_sigmas_type,
            lambda_min_clipped: c.opt_f64("lambda_min_clipped")?.unwrap_or(d.lambda_min_clipped),
            timestep_spacing: TimestepSpacing::from_config(c, "linspace")?,
            steps_offset: c.i64_or("steps_offset", d.steps_offset)?,
            rescale_betas_zero_snr: c.bool_or("rescale_betas_zero_snr", d.rescale_betas_zero_snr)?,
            use_dynamic_shifting: c.bool_or("use_dynamic_shifting", d.use_dynamic_shifting)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct DpmSolverMultistepScheduler {
    config: DpmSolverConfig,
    flow_shift: f64,
    alphas_cumprod: Vec<f32>,
    /// Training sigmas `sqrt((1 - a) / a)` (float32) and their logs.
    train_sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
    timesteps_i: Vec<i64>,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    /// The last `solver_order` x0 predictions, oldest first.
    model_outputs: Vec<Option<Vec<f32>>>,
    lower_order_nums: usize,
    step_index: usize,
    ready: bool,
}

impl DpmSolverMultistepScheduler {
    pub fn new(config: DpmSolverConfig) -> DpmSolverMultistepScheduler {
        let mut betas = config.betas.betas(config.num_train_timesteps);
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut acp = alphas_cumprod(&betas);
        if config.rescale_betas_zero_snr {
            if let Some(last) = acp.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let train_sigmas: Vec<f32> = acp.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let log_sigmas = train_sigmas.iter().map(|&s| (s as f64).ln() as f32).collect();
        DpmSolverMultistepScheduler {
            flow_shift: config.flow_shift,
            model_outputs: vec![None; config.solver_order],
            config,
            alphas_cumprod: acp,
            train_sigmas,
            log_sigmas,
            timesteps_i: Vec::new(),
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            lower_order_nums: 0,
            step_index: 0,
            ready: false,
        }
    }

    pub fn config(&self) -> &DpmSolverConfig {
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

    /// `_sigma_to_t`: fractional training timestep of `sigma` by linear
    /// interpolation in log sigma (float64 against the float32 log sigmas).
    fn sigma_to_t(&self, sigma: f64) -> f64 {
        let ls = &self.log_sigmas;
        let log_sigma = sigma.max(1e-10).ln();
        // Index of the last log sigma <= log_sigma (0 if none), at most len - 2.
        let low = ls.iter().rposition(|&l| log_sigma - l as f64 >= 0.0).unwrap_or(0).min(ls.len() - 2);
        let (lo, hi) = (ls[low], ls[low + 1]);
        let w = ((lo as f64 - log_sigma) / (lo - hi) as f64).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }

    fn alpha_sigma(&self, sigma: f32) -> (f32, f32) {
        if self.config.sigma_spacing == DpmSigmaSpacing::Flow {
            (1.0 - sigma, sigma)
        } else {
            let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
            (alpha, sigma * alpha)
        }
    }

    fn lambda(&self, sigma: f32) -> (f32, f32, f32) {
        let (a, s) = self.alpha_sigma(sigma);
        (a, s, a.ln() - s.ln())
    }

    /// `lambda_min_clipped` -> the number of training timesteps to space over.
    fn last_timestep(&self) -> usize {
        let n = self.config.num_train_timesteps;
        let clip = self.config.lambda_min_clipped;
        if clip == f64::NEG_INFINITY {
            return n;
        }
        // lambda_t = log(sqrt(a)) - log(sqrt(1 - a)) in float32; searchsorted on the flipped
        // (ascending) array counts the entries below the clip value.
        let clip32 = clip as f32;
        let below = self
            .alphas_cumprod
            .iter()
            .filter(|&&a| {
                let lam = a.sqrt().ln() - (1.0 - a).sqrt().ln();
                lam < clip32
            })
            .count();
        n - below
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps(&mut self, opts: &TimestepOptions) -> Result<(), SchedError> {
        let cfg = self.config.clone();
        let ntt = cfg.num_train_timesteps;
        if opts.sigmas.is_some() {
            return Err(SchedError::usage(NAME, "set_timesteps takes no custom sigmas (pass num_inference_steps or timesteps)"));
        }
        if let Some(mu) = opts.mu {
            if !cfg.use_dynamic_shifting {
                return Err(SchedError::usage(NAME, "`mu` was passed but the config has use_dynamic_shifting false"));
            }
            // Like diffusers (which writes `config.flow_shift`), this persists for later calls.
            self.flow_shift = mu.exp();
        }
        let respaced = matches!(cfg.sigma_spacing, DpmSigmaSpacing::Karras | DpmSigmaSpacing::LuLambdas | DpmSigmaSpacing::Exponential);
        let mut ts: Vec<i64> = match (opts.num_inference_steps, &opts.timesteps) {
            (Some(_), Some(_)) => return Err(SchedError::usage(NAME, "pass only one of num_inference_steps and timesteps")),
            (None, None) => return Err(SchedError::usage(NAME, "set_timesteps needs num_inference_steps or timesteps")),
            (None, Some(_)) if respaced => {
                return Err(SchedError::usage(NAME, format!("custom timesteps cannot be used with {:?} sigma spacing", cfg.sigma_spacing)))
            }
            (None, Some(t)) => t.iter().map(|&x| x as i64).collect(),
            (Some(n), None) => {
                if n == 0 {
                    return Err(SchedError::usage(NAME, "num_inference_steps must be at least 1"));
                }
                let last = self.last_timestep();
                match cfg.timestep_spacing {
                    TimestepSpacing::Linspace => {
                        let v = np_linspace(0.0, last as f64 - 1.0, n + 1);
                        v.iter().rev().take(n).map(|t| t.round_ties_even() as i64).collect()
                    }
                    TimestepSpacing::Leading => {
                        let ratio = (last / (n + 1)) as i64;
                        (1..=n as i64).rev().map(|i| i * ratio + cfg.steps_offset).collect()
                    }
                    TimestepSpacing::Trailing => {
                        np_arange(last as f64, 0.0, -(ntt as f64 / n as f64)).into_iter().map(|t| t.round_ties_even() as i64 - 1).collect()
                    }
                }
            }
        };
        if ts.is_empty() {
            return Err(SchedError::usage(NAME, "the schedule has no timesteps"));
        }
        let n = opts.num_inference_steps.unwrap_or(ts.len());
        let round = !cfg.cosine_beta_schedule;
        let ramp = || np_linspace(0.0, 1.0, n);
        let (s_min, s_max) = (self.train_sigmas[0] as f64, self.train_sigmas[ntt - 1] as f64);
        let sig: Vec<f64> = match cfg.sigma_spacing {
            DpmSigmaSpacing::Default => ts.iter().map(|&t| self.train_sigmas[t.clamp(0, ntt as i64 - 1) as usize] as f64).collect(),
            DpmSigmaSpacing::Karras => {
                let rho = 7.0f64;
                let (min_inv, max_inv) = (s_min.powf(1.0 / rho), s_max.powf(1.0 / rho));
                ramp().into_iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect()
            }
            DpmSigmaSpacing::LuLambdas => {
                let (l_min, l_max) = (self.log_sigmas[0] as f64, self.log_sigmas[ntt - 1] as f64);
                ramp().into_iter().map(|r| (l_max + r * (l_min - l_max)).exp()).collect()
            }
            DpmSigmaSpacing::Exponential => np_linspace(s_max.ln(), s_min.ln(), n).into_iter().map(f64::exp).collect(),
            DpmSigmaSpacing::Flow => {
                let fs = self.flow_shift;
                let alphas = np_linspace(1.0, 1.0 / ntt as f64, n + 1);
                let shifted: Vec<f64> = alphas.iter().map(|&a| 1.0 - a).map(|s| fs * s / (1.0 + (fs - 1.0) * s)).collect();
                shifted.into_iter().rev().take(n).collect()
            }
        };
        match cfg.sigma_spacing {
            DpmSigmaSpacing::Default => {}
            DpmSigmaSpacing::Karras | DpmSigmaSpacing::LuLambdas => {
                ts = sig.iter().map(|&s| self.sigma_to_t(s)).map(|t| if round { t.round_ties_even() } else { t } as i64).collect();
            }
            DpmSigmaSpacing::Exponential => ts = sig.iter().map(|&s| self.sigma_to_t(s) as i64).collect(),
            DpmSigmaSpacing::Flow => ts = sig.iter().map(|&s| (s * ntt as f64) as i64).collect(),
        }
        let last = match cfg.final_sigmas_type {
            FinalSigmas::Zero => 0.0f32,
            FinalSigmas::SigmaMin => self.train_sigmas[0],
        };
        let mut sigmas: Vec<f32> = sig.iter().map(|&s| s as f32).collect();
        sigmas.push(last);
        self.timesteps = ts.iter().map(|&t| t as f32).collect();
        self.timesteps_i = ts;
        self.sigmas = sigmas;
        self.model_outputs = vec![None; cfg.solver_order];
        self.lower_order_nums = 0;
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

    fn step(&mut self, model_output: &[f32], sample: &[f32], prev_sample: &mut [f32]) -> Result<(), SchedError> {
        check_step_slices(NAME, model_output, sample, prev_sample)?;
        if !self.ready {
            return Err(SchedError::usage(NAME, "step called before set_timesteps"));
        }
        let n = self.timesteps.len();
        let i = self.step_index;
        if i >= n {
            return Err(SchedError::usage(NAME, format!("all {n} steps of the schedule have been taken; call set_timesteps again")));
        }
        let cfg = &self.config;
        let lower_order_final = i == n - 1 && (cfg.euler_at_final || (cfg.lower_order_final && n < 15) || cfg.final_sigmas_type == FinalSigmas::Zero);
        let lower_order_second = i + 2 == n && cfg.lower_order_final && n < 15;

        // Model output -> x0 prediction.
        let sigma = self.sigmas[i];
        let (alpha_t, sigma_t) = self.alpha_sigma(sigma);
        let x0: Vec<f32> = match cfg.prediction_type {
            PredictionType::Epsilon => sample.iter().zip(model_output).map(|(&x, &m)| (x - sigma_t * m) / alpha_t).collect(),
            PredictionType::Sample => model_output.to_vec(),
            PredictionType::VPrediction => sample.iter().zip(model_output).map(|(&x, &m)| alpha_t * x - sigma_t * m).collect(),
            PredictionType::FlowPrediction => sample.iter().zip(model_output).map(|(&x, &m)| x - sigma * m).collect(),
        };
        self.model_outputs.rotate_left(1);
        if let Some(last) = self.model_outputs.last_mut() {
            *last = Some(x0);
        }

        let order = if cfg.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            1
        } else if cfg.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            2
        } else {
            3
        };
        let k = self.model_outputs.len();
        // The order is capped by `lower_order_nums`, so every slot read holds an x0 from an earlier step.
        let m = |j: usize| self.model_outputs.get((k - 1).wrapping_sub(j)).and_then(|o| o.as_deref()).unwrap_or(&[]);
        let (a_t, s_t, l_t) = self.lambda(self.sigmas[i + 1]);
        let (_, s_0, l_0) = self.lambda(sigma);
        let h = l_t - l_0;
        let em1 = (-h).exp() - 1.0;
        let ca = s_t / s_0;
        let cb = a_t * em1;
        match order {
            1 => {
                let m0 = m(0);
                for ((o, &x), &d0) in prev_sample.iter_mut().zip(sample).zip(m0) {
                    *o = ca * x - cb * d0;
                }
            }
            2 => {
                let (m0, m1) = (m(0), m(1));
                let (_, _, l_1) = self.lambda(self.sigmas[i - 1]);
                let r0 = (l_0 - l_1) / h;
                let inv_r0 = 1.0 / r0;
                match cfg.solver_type {
                    SolverType::Midpoint => {
                        let cd = 0.5 * cb;
                        for (j, o) in prev_sample.iter_mut().enumerate() {
                            let d1 = inv_r0 * (m0[j] - m1[j]);
                            *o = ca * sample[j] - cb * m0[j] - cd * d1;
                        }
                    }
                    SolverType::Heun => {
                        let cd = a_t * (em1 / h + 1.0);
                        for (j, o) in prev_sample.iter_mut().enumerate() {
                            let d1 = inv_r0 * (m0[j] - m1[j]);
                            *o = ca * sample[j] - cb * m0[j] + cd * d1;
                        }
                    }
                }
            }
            _ => {
                let (m0, m1, m2) = (m(0), m(1), m(2));
                let (_, _, l_1) = self.lambda(self.sigmas[i - 1]);
                let (_, _, l_2) = self.lambda(self.sigmas[i - 2]);
                let r0 = (l_0 - l_1) / h;
                let r1 = (l_1 - l_2) / h;
                let (inv_r0, inv_r1) = (1.0 / r0, 1.0 / r1);
                let w = r0 / (r0 + r1);
                let inv_sum = 1.0 / (r0 + r1);
                let c1 = a_t * (em1 / h + 1.0);
                let c2 = a_t * ((em1 + h) / (h * h) - 0.5);
                for (j, o) in prev_sample.iter_mut().enumerate() {
                    let d1_0 = inv_r0 * (m0[j] - m1[j]);
                    let d1_1 = inv_r1 * (m1[j] - m2[j]);
                    let diff = d1_0 - d1_1;
                    let d1 = d1_0 + w * diff;
                    let d2 = inv_sum * diff;
                    *o = ca * sample[j] - cb * m0[j] + c1 * d1 - c2 * d2;
                }
            }
        }
        if self.lower_order_nums < cfg.solver_order {
            self.lower_order_nums += 1;
        }
        self.step_index += 1;
        Ok(())
    }
}
