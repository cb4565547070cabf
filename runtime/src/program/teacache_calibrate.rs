//! TeaCache calibration: the rescaling polynomial for any model with a
//! TeaCache split, measured instead of published.
//!
//! TeaCache skips the block stack while the accumulated estimate of the
//! model output's change stays under a threshold; the estimate is a
//! polynomial of the relative L1 change of the modulated input (see
//! [`super::denoise::TeaCacheSpec`]). Published polynomials exist for a few
//! families (FLUX.1, Qwen-Image); for any other one this module measures
//! it:
//!
//! 1. run the loop without skipping (threshold 0) over sample trajectories
//!    (seeds, classes or prompts), one model call per guidance branch
//!    (CFG batching off), recording per call the modulated input (output
//!    `modulated` of `pre`) and the prediction (output of `post`);
//! 2. per branch and step `1 ≤ i < N − 1`: `x = mean|m_i − m_{i−1}| /
//!    mean|m_{i−1}|` (exactly what the loop accumulates on) and `y` the
//!    same for the prediction (the model output change TeaCache
//!    estimates). The last step is left out: the loop always computes it,
//!    and its output change (the schedule's end, e.g. DDIM at t ≈ 0) is an
//!    outlier that would dominate the least squares where no decision is
//!    ever made;
//! 3. fit `y ≈ p(x)` by least squares ([`polyfit`]: Householder QR on the
//!    Vandermonde matrix of `x` scaled to [-1, 1], so degree 4 stays well
//!    conditioned), highest power first as `numpy.polyfit` returns it.
//!
//! [`TeaCacheCalibration`] is the file `omnic calibrate teacache` writes and
//! `omnic compile --teacache-coefficients` reads; it also holds the fit's
//! residuals and, per threshold, the share of branch-steps that would
//! compute when the fitted estimate is accumulated along the recorded
//! trajectories ([`predicted_compute`]; an estimate: a skipping run drifts
//! slightly from the recorded one).

use super::denoise::{run_denoise, DenoiseError, DenoiseOptions, DenoiseReport, DenoiseSpec, TeaCacheSpec};
use super::runner::{StageRunner, Tensors};
use crate::error::RtError;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CalibrateError {
    #[error("the program has no TeaCache split (compile it with the `teacache` pass, e.g. `teacache{{threshold=0}}`)")]
    NoSplit,
    #[error(transparent)]
    Denoise(#[from] DenoiseError),
    #[error("calibration: {0}")]
    Record(String),
    #[error("polynomial fit: {0}")]
    Fit(String),
}

/// One (input change, output change) pair of a branch between two steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub trajectory: usize,
    /// 0: conditional, 1: unconditional branch.
    pub branch: usize,
    /// Step `i` (compared with step `i − 1`).
    pub step: usize,
    /// Relative L1 change of the modulated input.
    pub x: f64,
    /// Relative L1 change of the model output.
    pub y: f64,
}

/// Passes stages through to a runner and keeps, per model call, the
/// modulated input and the prediction.
struct Recorder<'a> {
    inner: &'a mut dyn StageRunner,
    tc: &'a TeaCacheSpec,
    prediction: &'a str,
    modulated: Vec<Vec<f32>>,
    predictions: Vec<Vec<f32>>,
}

fn floats(stage: &str, out: &Tensors, name: &str) -> Result<Vec<f32>, RtError> {
    let t = out.get(name).ok_or_else(|| RtError::Tensor { name: name.into(), message: format!("stage `{stage}` returned no such output") })?;
    if !t.dtype.is_float() {
        return Err(RtError::Tensor { name: name.into(), message: format!("dtype {}, expected a float tensor", t.dtype) });
    }
    Ok(t.to_f32_vec())
}

impl StageRunner for Recorder<'_> {
    fn run_stage(&mut self, stage: &str, inputs: &Tensors) -> Result<Tensors, RtError> {
        let out = self.inner.run_stage(stage, inputs)?;
        if stage == self.tc.pre {
            self.modulated.push(floats(stage, &out, &self.tc.modulated)?);
        } else if stage == self.tc.post {
            self.predictions.push(floats(stage, &out, self.prediction)?);
        }
        Ok(out)
    }
}

/// `mean|a − b| / mean|b|` (`None` when `b` is all zeros or the lengths differ).
pub fn rel_l1(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x - y).abs() as f64).sum();
    let den: f64 = b.iter().map(|&y| y.abs() as f64).sum();
    let r = num / den;
    r.is_finite().then_some(r)
}

/// Run the loop of `spec` once without skipping and return its samples
/// (numbered as trajectory `trajectory`) and the loop's report. `opts`
/// chooses steps and guidance; the threshold is forced to 0 and CFG
/// batching off, so each model call is one branch.
pub fn record(
    spec: &DenoiseSpec,
    runner: &mut dyn StageRunner,
    inputs: &Tensors,
    opts: &DenoiseOptions,
    trajectory: usize,
) -> Result<(Vec<Sample>, DenoiseReport), CalibrateError> {
    let tc = spec.teacache().ok_or(CalibrateError::NoSplit)?;
    let mut rec = Recorder { inner: runner, tc, prediction: &spec.prediction_output, modulated: Vec::new(), predictions: Vec::new() };
    let opts = DenoiseOptions { teacache_threshold: Some(0.0), cfg_batch: Some(false), dump_steps: false, ..opts.clone() };
    let out = run_denoise(spec, &mut rec, inputs, &opts)?;
    let report = out.report;
    let branches = if report.true_cfg { 2 } else { 1 };
    let calls = report.steps.len() * branches;
    if rec.modulated.len() != calls || rec.predictions.len() != calls {
        return Err(CalibrateError::Record(format!(
            "expected {calls} model calls ({} steps × {branches} branch(es)), recorded {} `{}` and {} `{}` calls",
            report.steps.len(),
            rec.modulated.len(),
            tc.pre,
            rec.predictions.len(),
            tc.post
        )));
    }
    let mut samples = Vec::new();
    for b in 0..branches {
        for step in 1..report.steps.len().saturating_sub(1) {
            let (i, j) = (step * branches + b, (step - 1) * branches + b);
            if let (Some(x), Some(y)) = (rel_l1(&rec.modulated[i], &rec.modulated[j]), rel_l1(&rec.predictions[i], &rec.predictions[j])) {
                samples.push(Sample { trajectory, branch: b, step, x, y });
            }
        }
    }
    Ok((samples, report))
}

/// Least-squares polynomial of degree `degree` through `(x, y)`, highest
/// power first (as `numpy.polyfit`). Needs `degree + 1` distinct finite `x`.
pub fn polyfit(x: &[f64], y: &[f64], degree: usize) -> Result<Vec<f64>, String> {
    let (n, m) = (x.len(), degree + 1);
    if n != y.len() {
        return Err(format!("{} x values but {} y values", n, y.len()));
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err("the samples contain a non-finite value".into());
    }
    let mut distinct: Vec<f64> = x.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < m {
        return Err(format!("a degree-{degree} fit needs at least {m} distinct x values, got {}", distinct.len()));
    }
    let s = x.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
    // Row-major n × m Vandermonde of t = x / s (ascending powers).
    let mut a: Vec<f64> = x.iter().flat_map(|&v| (0..m).map(move |j| (v / s).powi(j as i32))).collect();
    let mut b = y.to_vec();
    for k in 0..m {
        let norm = (k..n).map(|i| a[i * m + k] * a[i * m + k]).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if a[k * m + k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (k..n).map(|i| a[i * m + k]).collect();
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|e| e * e).sum();
        if vv == 0.0 {
            continue;
        }
        for j in k..m {
            let d: f64 = v.iter().enumerate().map(|(r, vi)| vi * a[(k + r) * m + j]).sum();
            let f = 2.0 * d / vv;
            for (r, vi) in v.iter().enumerate() {
                a[(k + r) * m + j] -= f * vi;
            }
        }
        let d: f64 = v.iter().enumerate().map(|(r, vi)| vi * b[k + r]).sum();
        let f = 2.0 * d / vv;
        for (r, vi) in v.iter().enumerate() {
            b[k + r] -= f * vi;
        }
    }
    let rmax = (0..m).map(|k| a[k * m + k].abs()).fold(0.0f64, f64::max);
    let mut c = vec![0.0; m];
    for k in (0..m).rev() {
        let r = a[k * m + k];
        if r.abs() <= 1e-12 * rmax {
            return Err(format!("the degree-{degree} fit is rank deficient (the x values do not determine {m} coefficients)"));
        }
        let tail: f64 = (k + 1..m).map(|j| a[k * m + j] * c[j]).sum();
        c[k] = (b[k] - tail) / r;
    }
    // Undo the scaling: p(x) = Σ c_j (x/s)^j; highest power first.
    Ok((0..m).rev().map(|j| c[j] / s.powi(j as i32)).collect())
}

/// Fit quality on the data it was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitStats {
    /// Root mean square of `y − p(x)`.
    pub rms_residual: f64,
    pub max_abs_residual: f64,
    /// Coefficient of determination (1 − SS_res / SS_tot).
    pub r2: f64,
    pub x_min: f64,
    pub x_max: f64,
    pub y_mean: f64,
}

pub fn fit_stats(samples: &[Sample], coefficients: &[f64]) -> FitStats {
    let n = samples.len().max(1) as f64;
    let y_mean = samples.iter().map(|s| s.y).sum::<f64>() / n;
    let res: Vec<f64> = samples.iter().map(|s| s.y - super::denoise::poly(coefficients, s.x)).collect();
    let ss_res: f64 = res.iter().map(|r| r * r).sum();
    let ss_tot: f64 = samples.iter().map(|s| (s.y - y_mean).powi(2)).sum();
    FitStats {
        rms_residual: (ss_res / n).sqrt(),
        max_abs_residual: res.iter().fold(0.0f64, |a, r| a.max(r.abs())),
        r2: if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 1.0 },
        x_min: samples.iter().map(|s| s.x).fold(f64::INFINITY, f64::min),
        x_max: samples.iter().map(|s| s.x).fold(f64::NEG_INFINITY, f64::max),
        y_mean,
    }
}

/// Share of branch-steps that compute the block stack when `poly(x)` is
/// accumulated along the recorded trajectories with `threshold` (the
/// loop's rule: the first and last step of each trajectory compute, a
/// step computes when the accumulated estimate reaches the threshold and
/// then resets it). `steps_of(trajectory)` is each trajectory's step count;
/// samples of the last step may be absent ([`record`] leaves them out).
pub fn predicted_compute(samples: &[Sample], coefficients: &[f64], threshold: f64, steps_of: &dyn Fn(usize) -> usize) -> f64 {
    let mut keys: Vec<(usize, usize)> = samples.iter().map(|s| (s.trajectory, s.branch)).collect();
    keys.sort();
    keys.dedup();
    let (mut computed, mut total) = (0usize, 0usize);
    for (t, b) in keys {
        let n = steps_of(t);
        let mut acc = 0.0;
        // Step 0 computes; the samples cover steps 1..n.
        computed += 1;
        total += 1;
        let mut by_step: Vec<&Sample> = samples.iter().filter(|s| s.trajectory == t && s.branch == b && s.step + 1 < n).collect();
        by_step.sort_by_key(|s| s.step);
        for s in by_step {
            total += 1;
            acc += super::denoise::poly(coefficients, s.x);
            if threshold <= 0.0 || acc >= threshold || acc.is_nan() {
                computed += 1;
                acc = 0.0;
            }
        }
        if n > 1 {
            // The last step always computes.
            computed += 1;
            total += 1;
        }
    }
    if total == 0 {
        1.0
    } else {
        computed as f64 / total as f64
    }
}

/// The calibration file (`omnic calibrate teacache -o FILE`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeaCacheCalibration {
    /// Always [`CALIBRATION_FORMAT`].
    pub format: String,
    /// Model family and architecture it was measured on.
    pub family: String,
    pub architecture: String,
    /// The fitted polynomial, highest power first.
    pub coefficients: Vec<f64>,
    /// The threshold `omnic compile --teacache` (without a value) uses.
    pub threshold: f64,
    /// What was run: trajectories, steps per trajectory, guidance scale.
    pub trajectories: usize,
    pub steps: Vec<usize>,
    pub guidance_scale: Option<f64>,
    pub samples: usize,
    pub fit: FitStats,
    /// (threshold, predicted share of branch-steps computing the block stack).
    pub predicted_compute: Vec<(f64, f64)>,
}

/// The `format` field of a calibration file.
pub const CALIBRATION_FORMAT: &str = "omnic-teacache-calibration-1";

impl TeaCacheCalibration {
    /// Parse and check a calibration file's text (`source` names it in errors).
    pub fn from_json(text: &str, source: &str) -> Result<Self, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let c: TeaCacheCalibration = serde_path_to_error::deserialize(de).map_err(|e| format!("{source}: not a TeaCache calibration file: {e}"))?;
        if c.format != CALIBRATION_FORMAT {
            return Err(format!("{source}: field `format` is `{}`, expected `{CALIBRATION_FORMAT}`", c.format));
        }
        if c.coefficients.is_empty() || c.coefficients.iter().any(|v| !v.is_finite()) {
            return Err(format!("{source}: field `coefficients` must be a non-empty list of finite numbers"));
        }
        if !c.threshold.is_finite() {
            return Err(format!("{source}: field `threshold` must be a finite number"));
        }
        Ok(c)
    }
}

/// Where `p` decreases or is negative on `[lo, hi]` (checked on a grid of
/// 200 points): `(first x, last x)` of those points, if any. A rescaling
/// polynomial should grow with the input change and stay positive (the
/// loop adds it as it is, as TeaCache does).
pub fn non_monotone(coefficients: &[f64], lo: f64, hi: f64) -> Option<(f64, f64)> {
    let xs: Vec<f64> = (0..=200).map(|i| lo + (hi - lo) * i as f64 / 200.0).collect();
    let bad: Vec<f64> = xs
        .windows(2)
        .filter(|w| super::denoise::poly(coefficients, w[1]) < super::denoise::poly(coefficients, w[0]) || super::denoise::poly(coefficients, w[1]) < 0.0)
        .map(|w| w[1])
        .collect();
    Some((*bad.first()?, *bad.last()?))
}

#[cfg(test)]
#[path = "tests/teacache_calibrate.rs"]
mod tests;
