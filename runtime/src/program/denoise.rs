//! The denoising loop: what a diffusers pipeline's `__call__` does between
//! the text encoders and the VAE, run over a program's stages through any
//! [`StageRunner`] (compiled artifacts, or the reference evaluator in the
//! compiler's tests). No compiler is involved: the loop reads its
//! [`DenoiseSpec`] (the artifact manifest's `control`, mirroring
//! `omnic_ir::program::DenoiseSpec`) and the scheduler config stored in it.
//!
//! Per step `t` of the scheduler's schedule:
//!
//! 1. the model is called on `latents` and `t / timestep_div` (float32, as
//!    the pipelines compute it) — once, or for true CFG once with the
//!    positive and once with the negative inputs; with `cfg_batch` (the
//!    `cfg-batching` pass) the two calls are one call on a batch of two
//!    (inputs concatenated along axis 0, outputs split);
//! 2. true CFG combines `uncond + scale · (cond − uncond)` in float32;
//! 3. the scheduler steps the latents.
//!
//! With a TeaCache policy (the `teacache` pass split the model into `pre`,
//! `blocks` and `post`), each model call runs `pre`, decides per guidance
//! branch whether the block stack must run (see [`TeaCacheSpec`]), runs
//! `blocks` or adds the cached residuals, then runs `post`. In a CFG-batched
//! call the decision and the cached residuals are per branch (the batch rows
//! of that branch); `blocks` runs on the whole batch when any branch needs
//! it, and the rows of branches that skip take their cached residuals.
//!
//! Stage inputs: each stage call gets the program inputs (under their own
//! names, `input.` prefix stripped), the mapped body inputs and everything
//! earlier stages of the same call produced; runners ignore names a stage
//! does not take (as `exec::Executable::run` does).
//!
//! Timestep schedule: [`SigmaSchedule::FlowLinspace`] passes
//! `sigmas = linspace(1, 1/N, N)` (FluxPipeline, QwenImagePipeline), the
//! other asks for `num_inference_steps`; with dynamic shifting `mu` comes
//! from the image token count: axis 1 of rank-3 (packed) latents, else the
//! product of the spatial axes over 4 (2×2 patches).

use super::runner::{StageRunner, Tensors};
use crate::error::RtError;
use crate::sched::{self, SchedError, Scheduler, TimestepOptions};
use crate::tensor::{ElemType, HostTensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;
use thiserror::Error;

/// A denoising loop (mirror of `omnic_ir::program::DenoiseSpec`; field
/// meanings are documented there).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenoiseSpec {
    /// The model stage (after the `teacache` pass only a name for reports).
    pub body: String,
    /// `scheduler_config.json`, verbatim.
    pub scheduler_config: String,
    /// Default number of inference steps.
    pub steps: usize,
    pub sigmas: SigmaSchedule,
    /// Program input with the initial latents; program output with the final ones.
    pub latents: String,
    pub latent_input: String,
    pub timestep_input: String,
    /// The model gets `t / timestep_div` (float32).
    pub timestep_div: f64,
    /// ... as int64 (rounded) instead of float32 (DiTPipeline with DDIM).
    #[serde(default)]
    pub timestep_i64: bool,
    pub prediction_output: String,
    /// (program input, body input) pairs of the conditional branch.
    pub inputs: Vec<(String, String)>,
    pub guidance: Guidance,
    /// Body inputs concatenated for a CFG-batched call (`None`: two calls).
    #[serde(default)]
    pub cfg_batch: Option<Vec<String>>,
    #[serde(default)]
    pub cache: Option<CachePolicy>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmaSchedule {
    Scheduler,
    FlowLinspace,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guidance {
    None,
    /// `negative`: (program input, body input) pairs of the unconditional branch.
    TrueCfg {
        scale: f64,
        negative: Vec<(String, String)>,
    },
    Distilled {
        input: String,
        scale: f64,
    },
    /// Class-conditional CFG (DiTPipeline): the unconditional call gets
    /// body input `labels` filled with `null_class` (int64).
    ClassCfg {
        scale: f64,
        labels: String,
        null_class: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CachePolicy {
    TeaCache(TeaCacheSpec),
}

/// TeaCache (arXiv 2411.19108). Per guidance branch: `rel = mean|m − m_prev|
/// / mean|m_prev|` for the modulated input `m` (output `modulated` of
/// `pre`) against the previous step's, `acc += poly(rel)` (coefficients
/// highest power first); if `acc < threshold` the block stack is skipped
/// (each stream `o` leaving it is `i + cached residual`), otherwise it runs,
/// the residuals `o − i` are cached and `acc = 0`. The first and the last
/// step always compute, and `threshold <= 0` never skips.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeaCacheSpec {
    pub threshold: f64,
    pub coefficients: Vec<f64>,
    pub pre: String,
    pub blocks: String,
    pub post: String,
    pub modulated: String,
    /// (stream entering the stack, stream leaving it).
    pub residuals: Vec<(String, String)>,
}

impl DenoiseSpec {
    /// The stages the loop runs.
    pub fn stage_names(&self) -> Vec<&str> {
        match &self.cache {
            None => vec![self.body.as_str()],
            Some(CachePolicy::TeaCache(t)) => vec![t.pre.as_str(), t.blocks.as_str(), t.post.as_str()],
        }
    }

    pub fn teacache(&self) -> Option<&TeaCacheSpec> {
        match &self.cache {
            Some(CachePolicy::TeaCache(t)) => Some(t),
            None => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum DenoiseError {
    #[error("denoise: scheduler: {0}")]
    Sched(#[from] SchedError),
    #[error("denoise: step {step}: stage `{stage}`: {source}")]
    Stage { stage: String, step: usize, source: RtError },
    /// A missing or malformed input, or a stage output that does not fit.
    #[error("denoise: {0}")]
    Input(String),
}

fn input_err<T>(m: impl Into<String>) -> Result<T, DenoiseError> {
    Err(DenoiseError::Input(m.into()))
}

/// Run-time choices; `None` keeps what the program was compiled with.
#[derive(Clone, Debug, Default)]
pub struct DenoiseOptions {
    pub steps: Option<usize>,
    /// True-CFG scale (`--true-cfg-scale`).
    pub true_cfg_scale: Option<f64>,
    /// Distilled guidance scale (`--guidance-scale`).
    pub guidance_scale: Option<f64>,
    /// TeaCache threshold (`--teacache`); only for programs with a cache.
    pub teacache_threshold: Option<f64>,
    /// `Some(false)` forces two model calls per CFG step.
    pub cfg_batch: Option<bool>,
    /// Record `step.*` tensors.
    pub dump_steps: bool,
    /// Called after each step (progress display).
    pub on_step: OnStep,
}

/// A per-step callback: the step just done and the number of steps.
#[derive(Clone, Default)]
#[allow(clippy::type_complexity)]
pub struct OnStep(pub Option<std::sync::Arc<dyn Fn(&StepReport, usize) + Send + Sync>>);

impl std::fmt::Debug for OnStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "OnStep(Some(..))" } else { "OnStep(None)" })
    }
}

/// One step of the loop.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub index: usize,
    /// The scheduler timestep (the model got it divided by `timestep_div`).
    pub timestep: f32,
    /// Stage calls made in this step.
    pub stage_calls: usize,
    /// Guidance branches whose block stack ran / was skipped (TeaCache;
    /// without a cache every branch computes).
    pub computed: usize,
    pub skipped: usize,
    pub seconds: f64,
}

/// What a loop did.
#[derive(Clone, Debug, Default)]
pub struct DenoiseReport {
    pub steps: Vec<StepReport>,
    /// True CFG ran (scale > 1 and negative inputs given).
    pub true_cfg: bool,
    /// The two branches ran as one batched call.
    pub cfg_batched: bool,
    /// Why guidance or batching is off, when it is.
    pub notes: Vec<String>,
    /// The TeaCache threshold in effect.
    pub teacache_threshold: Option<f64>,
    pub computed: usize,
    pub skipped: usize,
    pub stage_calls: usize,
    pub seconds: f64,
}

impl DenoiseReport {
    /// A human summary: steps, calls, cache hits, time per step.
    pub fn summary(&self) -> String {
        let n = self.steps.len().max(1) as f64;
        let mut s = format!(
            "denoise: {} steps in {:.3} s ({:.2} ms/step), {} stage calls, true CFG {}{}",
            self.steps.len(),
            self.seconds,
            1e3 * self.seconds / n,
            self.stage_calls,
            if self.true_cfg { "on" } else { "off" },
            if self.cfg_batched { " (batched)" } else { "" }
        );
        if let Some(t) = self.teacache_threshold {
            s.push_str(&format!(", teacache {t}: {} computed, {} skipped (branch-steps)", self.computed, self.skipped));
        }
        for note in &self.notes {
            s.push_str(&format!("\n  note: {note}"));
        }
        s
    }
}

/// The loop's result.
#[derive(Clone, Debug)]
pub struct DenoiseOutput {
    pub latents: HostTensor,
    /// `step.latents` (N+1 entries: before step 0 … after the last),
    /// `step.noise_pred` and, with true CFG, `step.noise_pred_cond` /
    /// `step.noise_pred_uncond`, stacked on a new axis 0 (the batch axis is
    /// dropped when the batch is 1, as in the `denoise` fixture).
    pub dumps: Vec<(String, HostTensor)>,
    pub report: DenoiseReport,
}

impl DenoiseOutput {
    /// `output.<latents>` then the dumps, ready to be written to safetensors.
    pub fn tensors(&self, spec: &DenoiseSpec) -> Vec<(String, HostTensor)> {
        let mut v = vec![(format!("output.{}", spec.latents), self.latents.clone())];
        v.extend(self.dumps.iter().cloned());
        v
    }
}

/// `numpy.poly1d(coefficients)(x)`: highest power first.
pub fn poly(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().fold(0.0, |acc, &c| acc * x + c)
}

/// Concatenation along axis 0 (same dtype and trailing shape).
fn concat_rows(name: &str, ts: &[&HostTensor]) -> Result<HostTensor, DenoiseError> {
    let Some(first) = ts.first() else { return input_err(format!("`{name}`: nothing to concatenate")) };
    if first.shape.is_empty() {
        return input_err(format!("`{name}` is a scalar; it has no batch axis to concatenate"));
    }
    let mut shape = first.shape.clone();
    shape[0] = 0;
    let mut data = Vec::new();
    for t in ts {
        if t.dtype != first.dtype || t.shape.len() != first.shape.len() || t.shape[1..] != first.shape[1..] {
            return input_err(format!("`{name}`: cannot batch {}{:?} with {}{:?}", first.dtype, first.shape, t.dtype, t.shape));
        }
        shape[0] += t.shape[0];
        data.extend_from_slice(&t.data);
    }
    Ok(HostTensor { dtype: first.dtype, shape, data })
}

/// `k` copies of `t` stacked along axis 0.
fn repeat_rows(name: &str, t: &HostTensor, k: usize) -> Result<HostTensor, DenoiseError> {
    if k == 1 {
        return Ok(t.clone());
    }
    concat_rows(name, &vec![t; k])
}

/// Float values of a stage output (f32, f16, bf16 or f64).
fn floats(what: &str, t: &HostTensor) -> Result<Vec<f32>, DenoiseError> {
    if !t.dtype.is_float() {
        return input_err(format!("{what} has dtype {}, expected a float tensor", t.dtype));
    }
    if t.data.len() != t.numel() * t.dtype.size_bytes() {
        return input_err(format!("{what}: {} bytes for shape {:?} of {}", t.data.len(), t.shape, t.dtype));
    }
    Ok(t.to_f32_vec())
}

fn mean_abs(v: &[f32]) -> f64 {
    v.iter().map(|&x| x.abs() as f64).sum::<f64>() / v.len().max(1) as f64
}

/// TeaCache state of one guidance branch.
#[derive(Default)]
struct BranchCache {
    prev_modulated: Option<Vec<f32>>,
    acc: f64,
    /// Cached residual per stream pair (`None` until the stack first ran).
    residuals: Option<Vec<Vec<f32>>>,
}

/// Model calls made together: one branch, or both as one batch.
struct Group {
    /// Branch indices (0 = conditional, 1 = unconditional), in row order.
    branches: Vec<usize>,
    /// Inputs that do not change between steps.
    env: Tensors,
}

struct Loop<'a> {
    spec: &'a DenoiseSpec,
    runner: &'a mut dyn StageRunner,
    teacache: Option<(&'a TeaCacheSpec, f64)>,
    caches: Vec<BranchCache>,
    step: usize,
    steps: usize,
    stage_calls: usize,
}

impl Loop<'_> {
    fn run(&mut self, stage: &str, env: &Tensors) -> Result<Tensors, DenoiseError> {
        self.stage_calls += 1;
        self.runner.run_stage(stage, env).map_err(|source| DenoiseError::Stage { stage: stage.to_string(), step: self.step, source })
    }

    fn output<'t>(stage: &str, out: &'t Tensors, name: &str) -> Result<&'t HostTensor, DenoiseError> {
        out.get(name).ok_or_else(|| DenoiseError::Input(format!("stage `{stage}` returned no output `{name}`")))
    }

    /// One model call for a group; returns the prediction (all rows) and
    /// the number of branches that computed / skipped the block stack.
    fn call(&mut self, group: &Group, mut env: Tensors) -> Result<(Vec<f32>, usize, usize), DenoiseError> {
        let spec = self.spec;
        let Some((tc, threshold)) = self.teacache else {
            let out = self.run(&spec.body, &env)?;
            let p = floats(&format!("prediction `{}`", spec.prediction_output), Self::output(&spec.body, &out, &spec.prediction_output)?)?;
            return Ok((p, group.branches.len(), 0));
        };
        let k = group.branches.len();
        let pre = self.run(&tc.pre, &env)?;
        let m = floats(&format!("modulated input `{}`", tc.modulated), Self::output(&tc.pre, &pre, &tc.modulated)?)?;
        env.extend(pre);
        let first_last = self.step == 0 || self.step + 1 == self.steps;
        if m.len() % k != 0 {
            return input_err(format!("modulated input `{}` has {} values, not divisible among {k} branches", tc.modulated, m.len()));
        }
        let per = m.len() / k;
        let mut compute = vec![true; k];
        for (j, &b) in group.branches.iter().enumerate() {
            let mb = &m[j * per..(j + 1) * per];
            let c = &mut self.caches[b];
            let decide = !first_last && threshold > 0.0 && c.residuals.is_some();
            compute[j] = match (&c.prev_modulated, decide) {
                (Some(prev), true) if prev.len() == mb.len() => {
                    let rel = mb.iter().zip(prev).map(|(&x, &y)| (x - y).abs() as f64).sum::<f64>() / per.max(1) as f64 / mean_abs(prev);
                    c.acc += poly(&tc.coefficients, rel);
                    // A NaN (all-zero previous input) computes.
                    c.acc >= threshold || c.acc.is_nan()
                }
                _ => true,
            };
            if compute[j] {
                c.acc = 0.0;
            }
            c.prev_modulated = Some(mb.to_vec());
        }
        let computed = compute.iter().filter(|&&c| c).count();
        let blocks = if computed > 0 { Some(self.run(&tc.blocks, &env)?) } else { None };
        for (r, (i_name, o_name)) in tc.residuals.iter().enumerate() {
            let inp = env.get(i_name).ok_or_else(|| DenoiseError::Input(format!("stage `{}` returned no output `{i_name}`", tc.pre)))?;
            let computed_out = match &blocks {
                Some(out) => Some(Self::output(&tc.blocks, out, o_name)?.clone()),
                None => None,
            };
            if inp.dtype != ElemType::F32 {
                return input_err(format!("teacache stream `{i_name}` has dtype {}; cached residuals need f32", inp.dtype));
            }
            let iv = floats(&format!("teacache stream `{i_name}`"), inp)?;
            if iv.len() % k != 0 {
                return input_err(format!("teacache stream `{i_name}` has {} values, not divisible among {k} branches", iv.len()));
            }
            let ov = match &computed_out {
                Some(t) if t.shape == inp.shape && t.dtype == ElemType::F32 => Some(floats(&format!("teacache stream `{o_name}`"), t)?),
                Some(t) => return input_err(format!("teacache stream `{o_name}` is {}{:?} but `{i_name}` is {}{:?}", t.dtype, t.shape, inp.dtype, inp.shape)),
                None => None,
            };
            let rows = iv.len() / k;
            let mut stream = Vec::with_capacity(iv.len());
            for (j, &b) in group.branches.iter().enumerate() {
                let (ib, c) = (&iv[j * rows..(j + 1) * rows], &mut self.caches[b]);
                match (&ov, compute[j]) {
                    (Some(ov), true) => {
                        let ob = &ov[j * rows..(j + 1) * rows];
                        let res = c.residuals.get_or_insert_with(|| vec![Vec::new(); tc.residuals.len()]);
                        res[r] = ob.iter().zip(ib).map(|(&o, &i)| o - i).collect();
                        stream.extend_from_slice(ob);
                    }
                    _ => {
                        let cached = c.residuals.as_ref().and_then(|res| res.get(r)).filter(|v| v.len() == ib.len());
                        let Some(cached) = cached else { return input_err(format!("teacache: no cached residual for `{o_name}`")) };
                        stream.extend(ib.iter().zip(cached).map(|(&i, &d)| i + d));
                    }
                }
            }
            env.insert(o_name.clone(), HostTensor::from_f32(&inp.shape, &stream));
        }
        if let Some(out) = blocks {
            for (name, t) in out {
                env.entry(name).or_insert(t);
            }
        }
        let out = self.run(&tc.post, &env)?;
        let p = floats(&format!("prediction `{}`", spec.prediction_output), Self::output(&tc.post, &out, &spec.prediction_output)?)?;
        Ok((p, computed, k - computed))
    }
}

/// Stack per-step tensors on a new axis 0, dropping a batch axis of 1.
fn stack(name: &str, items: &[Vec<f32>], shape: &[usize]) -> (String, HostTensor) {
    let inner: Vec<usize> = if shape.first() == Some(&1) { shape[1..].to_vec() } else { shape.to_vec() };
    let mut full = vec![items.len()];
    full.extend(inner);
    let data: Vec<f32> = items.iter().flatten().copied().collect();
    (name.to_string(), HostTensor::from_f32(&full, &data))
}

/// Tokens the dynamic shift is computed from (see the module doc).
fn image_seq_len(latents: &[usize]) -> usize {
    match latents.len() {
        0..=2 => latents.last().copied().unwrap_or(1),
        3 => latents[1],
        _ => latents[2..].iter().product::<usize>() / 4,
    }
}

/// Run the loop of `spec` from `inputs` (named as the program's inputs, an
/// `input.` prefix allowed) with the stages executed by `runner`.
pub fn run_denoise(spec: &DenoiseSpec, runner: &mut dyn StageRunner, inputs: &Tensors, opts: &DenoiseOptions) -> Result<DenoiseOutput, DenoiseError> {
    let t_start = Instant::now();
    let mut report = DenoiseReport::default();

    // Program inputs by bare name (`input.x` wins over `x`).
    let mut given: Tensors = HashMap::new();
    for (k, t) in inputs {
        if ["output.", "step.", "schedule.", "inter."].iter().any(|p| k.starts_with(p)) {
            continue;
        }
        match k.strip_prefix("input.") {
            Some(bare) => {
                given.insert(bare.to_string(), t.clone());
            }
            None => {
                given.entry(k.clone()).or_insert_with(|| t.clone());
            }
        }
    }
    let Some(lat0) = given.get(&spec.latents) else {
        return input_err(format!("missing input `{}` (the initial latents)", spec.latents));
    };
    let lat_shape = lat0.shape.clone();
    let mut latents = floats(&format!("input `{}`", spec.latents), lat0)?;
    let batch = lat_shape.first().copied().unwrap_or(0);
    if lat_shape.len() < 2 || batch == 0 {
        return input_err(format!("latents `{}` have shape {lat_shape:?}; expected a batch axis and at least one more", spec.latents));
    }

    // Scheduler and its schedule.
    let cfg_value: serde_json::Value = serde_json::from_str(&spec.scheduler_config)
        .map_err(|e| SchedError::File { source_name: "scheduler_config.json (in the program)".into(), message: format!("not valid JSON: {e}") })?;
    let mut sch: Box<dyn Scheduler> = sched::from_config_value(&cfg_value, "scheduler_config.json (in the program)")?;
    let steps = opts.steps.unwrap_or(spec.steps);
    if steps == 0 {
        return input_err("the number of steps must be at least 1");
    }
    let mu = sch.dynamic_shift_mu(image_seq_len(&lat_shape));
    let mut topts = match spec.sigmas {
        SigmaSchedule::FlowLinspace => TimestepOptions { sigmas: Some(sched::flux_sigmas(steps)), ..Default::default() },
        SigmaSchedule::Scheduler => TimestepOptions::steps(steps),
    };
    topts.mu = mu;
    sch.set_timesteps(&topts)?;
    let timesteps: Vec<f32> = sch.timesteps().to_vec();
    let n = timesteps.len();

    // Branch environments.
    let mut cond = given.clone();
    for (from, to) in &spec.inputs {
        let t = given.get(from).ok_or_else(|| DenoiseError::Input(format!("missing input `{from}` (for model input `{to}`)")))?;
        cond.insert(to.clone(), t.clone());
    }
    let mut uncond = None;
    match &spec.guidance {
        Guidance::None => {}
        Guidance::Distilled { input, scale } => {
            let g = opts.guidance_scale.unwrap_or(*scale) as f32;
            cond.insert(input.clone(), HostTensor::from_f32(&[batch], &vec![g; batch]));
        }
        Guidance::ClassCfg { scale, labels, null_class } => {
            let scale = opts.guidance_scale.or(opts.true_cfg_scale).unwrap_or(*scale);
            let Some(l) = cond.get(labels) else { return input_err(format!("missing input `{labels}` (the class labels)")) };
            if l.dtype != ElemType::I64 {
                return input_err(format!("class labels `{labels}` have dtype {}, expected i64", l.dtype));
            }
            if scale <= 1.0 {
                report.notes.push(format!("class CFG off: scale {scale} <= 1"));
            } else {
                let null = HostTensor::from_i64(&l.shape, &vec![*null_class; l.numel()]);
                let mut u = cond.clone();
                u.insert(labels.clone(), null);
                uncond = Some((u, scale as f32));
                report.true_cfg = true;
            }
        }
        Guidance::TrueCfg { scale, negative } => {
            let scale = opts.true_cfg_scale.unwrap_or(*scale);
            let missing: Vec<&str> = negative.iter().filter(|(p, _)| !given.contains_key(p)).map(|(p, _)| p.as_str()).collect();
            if !missing.is_empty() && missing.len() < negative.len() {
                return input_err(format!("true CFG needs all negative inputs; missing {}", missing.join(", ")));
            }
            if negative.is_empty() || !missing.is_empty() {
                report.notes.push("true CFG off: no negative inputs given".into());
            } else if scale <= 1.0 {
                report.notes.push(format!("true CFG off: scale {scale} <= 1"));
            } else {
                let mut u = cond.clone();
                for (from, to) in negative {
                    if let Some(t) = given.get(from) {
                        u.insert(to.clone(), t.clone());
                    }
                }
                uncond = Some((u, scale as f32));
                report.true_cfg = true;
            }
        }
    }

    // CFG batching: both branches in one call when the inputs line up.
    let mut batched = false;
    if let (Some((u, _)), Some(names)) = (&uncond, &spec.cfg_batch) {
        if opts.cfg_batch == Some(false) {
            report.notes.push("cfg batching off (run-time option)".into());
        } else {
            let per_step = [spec.latent_input.as_str(), spec.timestep_input.as_str()];
            let mismatch = names.iter().filter(|n| !per_step.contains(&n.as_str())).find_map(|n| match (cond.get(n), u.get(n)) {
                (Some(a), Some(b)) if a.dtype == b.dtype && a.shape == b.shape => None,
                (Some(a), Some(b)) => Some(format!("`{n}` is {}{:?} for the positive and {}{:?} for the negative branch", a.dtype, a.shape, b.dtype, b.shape)),
                _ => Some(format!("`{n}` is not given")),
            });
            match mismatch {
                Some(why) => report.notes.push(format!("cfg batching off: {why}")),
                None => batched = true,
            }
        }
    } else if opts.cfg_batch == Some(true) && spec.cfg_batch.is_none() && uncond.is_some() {
        report.notes.push("cfg batching requested but the program was not compiled batchable".into());
    }
    report.cfg_batched = batched;

    let mut groups = vec![Group { branches: vec![0], env: cond }];
    if let Some((u, _)) = &uncond {
        if batched {
            let names = spec.cfg_batch.iter().flatten();
            let g = &mut groups[0];
            for name in names {
                if let (Some(a), Some(b)) = (g.env.get(name), u.get(name)) {
                    let cat = concat_rows(name, &[a, b])?;
                    g.env.insert(name.clone(), cat);
                }
            }
            g.branches.push(1);
        } else {
            groups.push(Group { branches: vec![1], env: u.clone() });
        }
    }
    let cfg_scale = uncond.as_ref().map(|(_, s)| *s);

    let teacache = spec.teacache().map(|t| (t, opts.teacache_threshold.unwrap_or(t.threshold)));
    report.teacache_threshold = teacache.map(|(_, th)| th);
    let mut lp = Loop { spec, runner, teacache, caches: (0..2).map(|_| BranchCache::default()).collect(), step: 0, steps: n, stage_calls: 0 };

    let (mut d_lat, mut d_pred, mut d_cond, mut d_uncond) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if opts.dump_steps {
        d_lat.push(latents.clone());
    }
    for (i, &t) in timesteps.iter().enumerate() {
        let t0 = Instant::now();
        let calls0 = lp.stage_calls;
        lp.step = i;
        let t_model = t / spec.timestep_div as f32;
        let lat_t = HostTensor::from_f32(&lat_shape, &latents);
        let mut preds: Vec<Vec<f32>> = vec![Vec::new(); 2];
        let (mut computed, mut skipped) = (0, 0);
        for g in &groups {
            let k = g.branches.len();
            let mut env = g.env.clone();
            env.insert(spec.latent_input.clone(), repeat_rows(&spec.latent_input, &lat_t, k)?);
            let ts = if spec.timestep_i64 {
                HostTensor::from_i64(&[batch * k], &vec![t_model.round() as i64; batch * k])
            } else {
                HostTensor::from_f32(&[batch * k], &vec![t_model; batch * k])
            };
            env.insert(spec.timestep_input.clone(), ts);
            let (p, c, s) = lp.call(g, env)?;
            if p.len() != latents.len() * k {
                return input_err(format!("prediction `{}` has {} values per call; the latents have {}", spec.prediction_output, p.len() / k, latents.len()));
            }
            let per = latents.len();
            for (j, &b) in g.branches.iter().enumerate() {
                preds[b] = p[j * per..(j + 1) * per].to_vec();
            }
            computed += c;
            skipped += s;
        }
        let pred_cond = std::mem::take(&mut preds[0]);
        let v: Vec<f32> = match cfg_scale {
            Some(s) => pred_cond.iter().zip(&preds[1]).map(|(&c, &u)| u + s * (c - u)).collect(),
            None => pred_cond.clone(),
        };
        let next = sch.step_vec(&v, &latents)?;
        latents = next;
        if opts.dump_steps {
            d_lat.push(latents.clone());
            if cfg_scale.is_some() {
                d_cond.push(pred_cond);
                d_uncond.push(std::mem::take(&mut preds[1]));
            }
            d_pred.push(v);
        }
        report.computed += computed;
        report.skipped += skipped;
        report.steps.push(StepReport { index: i, timestep: t, stage_calls: lp.stage_calls - calls0, computed, skipped, seconds: t0.elapsed().as_secs_f64() });
        if let (Some(f), Some(last)) = (&opts.on_step.0, report.steps.last()) {
            f(last, n);
        }
    }
    report.stage_calls = lp.stage_calls;
    let mut dumps = Vec::new();
    if opts.dump_steps {
        dumps.push(stack("step.latents", &d_lat, &lat_shape));
        dumps.push(stack("step.noise_pred", &d_pred, &lat_shape));
        if cfg_scale.is_some() {
            dumps.push(stack("step.noise_pred_cond", &d_cond, &lat_shape));
            dumps.push(stack("step.noise_pred_uncond", &d_uncond, &lat_shape));
        }
        let sig = sch.sigmas().map(|s| s.to_vec());
        dumps.push(("schedule.timesteps".into(), HostTensor::from_f32(&[n], &timesteps)));
        if let Some(s) = sig {
            dumps.push(("schedule.sigmas".into(), HostTensor::from_f32(&[s.len()], &s)));
        }
    }
    report.seconds = t_start.elapsed().as_secs_f64();
    Ok(DenoiseOutput { latents: HostTensor::from_f32(&lat_shape, &latents), dumps, report })
}

#[cfg(test)]
#[path = "tests/denoise.rs"]
mod tests;
