//! `omnic calibrate teacache DIR -o FILE`: measure the TeaCache rescaling
//! polynomial of a pipeline directory's model, so any DiT family gets
//! TeaCache, not only those with published coefficients.
//!
//! Compiles DIR with `teacache{threshold=0 coefficients=0}` (the split
//! without skipping; the zero polynomial is never evaluated at threshold
//! 0) into a temporary artifact, runs the denoise loop through the runtime
//! over sample trajectories — seeds × step counts, all requested classes in
//! one batch for class-conditional models, else the conditioning of
//! `--inputs` with fresh noise per seed — records per step the relative L1
//! change of the modulated input and of the model output, fits the
//! polynomial (`omnic_runtime::program::teacache_calibrate`) and writes the
//! calibration file. `omnic compile DIR --teacache [T]
//! --teacache-coefficients FILE` stores the coefficients in the artifact;
//! saved as `DIR/teacache.json` they are used without the flag.

use anyhow::{bail, Context, Result};
use clap::Parser;
use omnic_runtime::artifact::Control;
use omnic_runtime::exec::{ExecOptions, Executable};
use omnic_runtime::program::denoise::{DenoiseOptions, Guidance};
use omnic_runtime::program::generate::{class_labels_input, initial_latents};
use omnic_runtime::program::teacache_calibrate::{
    fit_stats, non_monotone, polyfit, predicted_compute, record, Sample, TeaCacheCalibration, CALIBRATION_FORMAT,
};
use omnic_runtime::program::Tensors;
use omnic_runtime::HostTensor;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// Fit TeaCache's rescaling polynomial (modulated-input change → model-output change) over sample trajectories.
    Teacache(TeaCacheArgs),
}

#[derive(clap::Args)]
pub struct TeaCacheArgs {
    /// Pipeline directory (`transformer/` + `scheduler/`).
    pub dir: PathBuf,
    /// Write the calibration (JSON) here; `DIR/teacache.json` makes it the model's default.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Inputs (safetensors, `input.<name>` or `<name>`): the conditioning and
    /// the latents' shape; needed unless the model is class-conditional.
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// Noise seeds: one trajectory per seed and step count.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Step counts to sample with (default: the program's).
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<usize>,
    /// Classes of a class-conditional model, all in one batch (default: every class).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<i64>,
    /// Polynomial degree.
    #[arg(long, default_value_t = 4)]
    pub degree: usize,
    /// Threshold recorded as the model's default (`omnic compile --teacache` without a value).
    #[arg(long, default_value_t = omnic_passes::teacache::DEFAULT_THRESHOLD)]
    pub threshold: f64,
    /// Class-CFG or distilled guidance scale (default: the program's).
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// True-CFG scale (with negative inputs in --inputs).
    #[arg(long)]
    pub true_cfg_scale: Option<f64>,
    /// Worker threads (0 = the number of physical cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// CPU to compile for (default: the host's).
    #[arg(long, value_name = "NAME")]
    pub cpu: Option<String>,
    /// Also write every sample as CSV (trajectory, branch, step, x, y).
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,
}

/// `omnic compile`'s flags, parsed from a command line built here.
#[derive(Parser)]
struct CompileCli {
    #[command(flatten)]
    a: super::compile::Args,
}

/// Removes the temporary artifact however calibration ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(a: Args) -> Result<()> {
    match a.what {
        What::Teacache(t) => teacache(t),
    }
}

/// Thresholds the predicted-compute table covers.
const TABLE: [f64; 9] = [0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5];

fn teacache(a: TeaCacheArgs) -> Result<()> {
    let t0 = Instant::now();
    if !a.dir.is_dir() {
        bail!("calibrate teacache: {} is not a directory (expected a pipeline directory with transformer/ and scheduler/)", a.dir.display());
    }
    if !a.threshold.is_finite() || a.threshold < 0.0 {
        bail!("--threshold {}: expected a finite number >= 0", a.threshold);
    }
    if a.degree == 0 || a.degree > 8 {
        bail!("--degree {}: expected 1..=8", a.degree);
    }
    if a.steps.iter().any(|&s| s < 3) {
        bail!("--steps {:?}: each trajectory needs at least 3 steps", a.steps);
    }
    let given: Tensors = match &a.inputs {
        Some(p) => omnic_runtime::io::read_all(p)?.into_iter().map(|(n, t)| (n.strip_prefix("input.").map(str::to_string).unwrap_or(n), t)).collect(),
        None => HashMap::new(),
    };
    if let Some(parent) = a.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }

    // The split without skipping, compiled to a temporary artifact.
    let art = TempFile(std::env::temp_dir().join(format!("omnic-calibrate-{}.omni", std::process::id())));
    let dir = a.dir.to_string_lossy().into_owned();
    let art_s = art.0.to_string_lossy().into_owned();
    let mut argv = vec!["compile", dir.as_str(), "-o", art_s.as_str(), "--teacache", "0", "--teacache-coefficients", "0"];
    if let Some(c) = &a.cpu {
        argv.extend(["--cpu", c.as_str()]);
    }
    let cli = CompileCli::try_parse_from(&argv).context("calibrate teacache: building the compile command")?;
    super::compile::run(cli.a).with_context(|| format!("calibrate teacache: compiling {}", a.dir.display()))?;
    let mut exe = Executable::load(&art.0, &ExecOptions { threads: a.threads, weights_dir: None })?;
    let manifest = exe.artifact().manifest().clone();
    let Control::Denoise(spec) = &manifest.control else {
        bail!(
            "calibrate teacache: {} has no denoise loop (a pipeline directory with transformer/ and scheduler/ of a family whose loop omnic knows)",
            a.dir.display()
        )
    };
    let Some(tc) = spec.teacache() else { bail!("calibrate teacache: {}: the compiled program has no TeaCache split", a.dir.display()) };
    let meta = |k: &str| manifest.metadata.get(k).cloned().unwrap_or_default();
    let steps_list = if a.steps.is_empty() { vec![spec.steps] } else { a.steps.clone() };
    if steps_list.iter().any(|&s| s < 3) {
        bail!("calibrate teacache: the program's {} steps are too few (each trajectory needs at least 3); pass --steps", spec.steps);
    }

    // Trajectory inputs per seed.
    let class_cfg = matches!(spec.guidance, Guidance::ClassCfg { .. });
    let mut base = given.clone();
    let (lat_shape, classes) = if class_cfg {
        let (labels, null) = class_labels_input(spec).map_err(anyhow::Error::msg)?;
        let classes: Vec<i64> = if a.classes.is_empty() { (0..null).collect() } else { a.classes.clone() };
        if let Some(c) = classes.iter().find(|&&c| c < 0 || c >= null) {
            bail!("--classes: class {c} is out of range 0..={}", null - 1);
        }
        let input = exe
            .inputs(&tc.pre)?
            .into_iter()
            .find(|i| i.name == spec.latent_input)
            .with_context(|| format!("stage `{}` has no input `{}`", tc.pre, spec.latent_input))?;
        let mut shape = vec![classes.len()];
        for d in input.shape.iter().skip(1) {
            let v = d.eval(&Default::default()).map_err(|e| anyhow::anyhow!("latents `{}`: {e}; pass --inputs with latents", spec.latent_input))?;
            shape.push(usize::try_from(v).context("negative latent dimension")?);
        }
        base.insert(labels, HostTensor::from_i64(&[classes.len()], &classes));
        (shape, Some(classes))
    } else {
        if !a.classes.is_empty() {
            bail!("--classes: {} is not class-conditional", a.dir.display());
        }
        let Some(l) = given.get(&spec.latents) else {
            let needed: Vec<String> = std::iter::once(spec.latents.clone()).chain(spec.inputs.iter().map(|(p, _)| p.clone())).collect();
            bail!("calibrate teacache: {} needs --inputs with its conditioning and latents shape ({})", a.dir.display(), needed.join(", "))
        };
        (l.shape.clone(), None)
    };
    let numel: usize = lat_shape.iter().product();
    let opts = DenoiseOptions { true_cfg_scale: a.true_cfg_scale, guidance_scale: a.guidance_scale, ..Default::default() };

    let mut samples: Vec<Sample> = Vec::new();
    let mut traj_steps: Vec<usize> = Vec::new();
    let mut guidance_used = None;
    for &steps in &steps_list {
        for seed in 0..a.seeds {
            let noise = match &classes {
                Some(cs) => initial_latents(seed, cs, numel / cs.len()),
                None => omnic_runtime::rng::randn(seed, numel),
            };
            let mut inputs = base.clone();
            inputs.insert(spec.latents.clone(), HostTensor::from_f32(&lat_shape, &noise));
            let traj = traj_steps.len();
            let t = Instant::now();
            let (s, report) = record(spec, &mut exe, &inputs, &DenoiseOptions { steps: Some(steps), ..opts.clone() }, traj)?;
            println!(
                "trajectory {traj}: seed {seed}, {steps} steps, {} branch(es): {} samples in {:.2} s",
                if report.true_cfg { 2 } else { 1 },
                s.len(),
                t.elapsed().as_secs_f64()
            );
            guidance_used = match (&spec.guidance, report.true_cfg) {
                (Guidance::ClassCfg { scale, .. }, true) => Some(a.guidance_scale.unwrap_or(*scale)),
                (Guidance::TrueCfg { scale, .. }, true) => Some(a.true_cfg_scale.unwrap_or(*scale)),
                (Guidance::Distilled { scale, .. }, _) => Some(a.guidance_scale.unwrap_or(*scale)),
                _ => None,
            };
            samples.extend(s);
            traj_steps.push(steps);
        }
    }
    let x: Vec<f64> = samples.iter().map(|s| s.x).collect();
    let y: Vec<f64> = samples.iter().map(|s| s.y).collect();
    let coefficients = polyfit(&x, &y, a.degree).map_err(|e| anyhow::anyhow!("calibrate teacache: polynomial fit: {e}"))?;
    let fit = fit_stats(&samples, &coefficients);
    let steps_of = |t: usize| traj_steps.get(t).copied().unwrap_or(0);
    let table: Vec<(f64, f64)> = TABLE.iter().map(|&th| (th, predicted_compute(&samples, &coefficients, th, &steps_of))).collect();
    let cal = TeaCacheCalibration {
        format: CALIBRATION_FORMAT.into(),
        family: meta("family"),
        architecture: meta("architecture"),
        coefficients: coefficients.clone(),
        threshold: a.threshold,
        trajectories: traj_steps.len(),
        steps: steps_list,
        guidance_scale: guidance_used,
        samples: samples.len(),
        fit: fit.clone(),
        predicted_compute: table.clone(),
    };
    std::fs::write(&a.output, serde_json::to_string_pretty(&cal)? + "\n").with_context(|| format!("writing {}", a.output.display()))?;
    if let Some(p) = &a.samples {
        let mut csv = String::from("trajectory,branch,step,x,y\n");
        for s in &samples {
            csv.push_str(&format!("{},{},{},{:e},{:e}\n", s.trajectory, s.branch, s.step, s.x, s.y));
        }
        std::fs::write(p, csv).with_context(|| format!("writing {}", p.display()))?;
    }

    // Mean (x, y) per step over trajectories and branches of the first step count.
    let mut per_step: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
    for s in samples.iter().filter(|s| steps_of(s.trajectory) == cal.steps[0]) {
        let e = per_step.entry(s.step).or_default();
        *e = (e.0 + s.x, e.1 + s.y, e.2 + 1);
    }
    println!("step  mean rel change: modulated input   model output   fit");
    for (step, (sx, sy, n)) in &per_step {
        let (mx, my) = (sx / *n as f64, sy / *n as f64);
        println!("{step:>4}  {mx:>34.4e} {my:>14.4e} {:>10.4e}", omnic_runtime::program::denoise::poly(&coefficients, mx));
    }
    let cs: Vec<String> = coefficients.iter().map(|c| format!("{c:.6e}")).collect();
    println!(
        "fit (degree {}, {} samples, x in [{:.3e}, {:.3e}]): coefficients [{}]; rms residual {:.3e}, max {:.3e}, R² {:.4}",
        a.degree,
        samples.len(),
        fit.x_min,
        fit.x_max,
        cs.join(", "),
        fit.rms_residual,
        fit.max_abs_residual,
        fit.r2
    );
    if let Some((lo, hi)) = non_monotone(&coefficients, fit.x_min, fit.x_max) {
        println!(
            "note: the fitted polynomial decreases or is negative for x in about [{lo:.3e}, {hi:.3e}] (the loop adds the estimate as it is); \
             more trajectories or other step counts (--steps) may give a better-behaved fit"
        );
    }
    let row: Vec<String> = table.iter().map(|(t, c)| format!("{t}: {:.0}%", 100.0 * c)).collect();
    println!("predicted share of branch-steps computing the block stack per threshold: {}", row.join(", "));
    println!(
        "wrote {} (threshold {}) in {:.1} s; use it with `omnic compile {} --teacache --teacache-coefficients {}`",
        a.output.display(),
        a.threshold,
        t0.elapsed().as_secs_f64(),
        a.dir.display(),
        a.output.display()
    );
    Ok(())
}
