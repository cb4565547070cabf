//! Sampling images from a class-conditional denoise program (DiTPipeline
//! with class CFG): seeded initial latents, the denoising loop, the final
//! latents as images.
//!
//! Noise rule: the initial latents of a sample for class `c` are elements
//! `0..n` of the [`crate::rng`] standard-normal stream of the sample seed
//! `sample_seed(seed, c, r)`, where `r` counts the earlier samples of the
//! same class in the request (0 for the first). A sample therefore depends
//! only on `(seed, class, r)`, not on its position: `--class 3 --seed 0`
//! draws the same noise as the `3` of `--class 0,1,…,9 --seed 0` (the images
//! agree up to float rounding of a different batch size).

use super::denoise::{run_denoise, DenoiseError, DenoiseOptions, DenoiseReport, DenoiseSpec, Guidance, OnStep};
use super::runner::Tensors;
use crate::artifact::Control;
use crate::exec::Executable;
use crate::image::GrayImage;
use crate::rng;
use crate::tensor::HostTensor;
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GenerateError {
    #[error("the artifact has no class-conditional denoise control (a DiTPipeline compiled with class labels); use `omnirt run`")]
    NotClassConditional,
    #[error("class {class} is out of range: this model has classes 0..={} ({null} is the null class)", .null - 1)]
    BadClass { class: i64, null: i64 },
    #[error("no classes requested")]
    NoClasses,
    #[error("latents: {0}")]
    Latents(String),
    #[error(transparent)]
    Denoise(#[from] DenoiseError),
}

/// What to sample.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// One sample per entry.
    pub classes: Vec<i64>,
    pub seed: u64,
    /// `None`: the program's.
    pub steps: Option<usize>,
    /// Class-CFG scale; `None`: the program's.
    pub guidance: Option<f64>,
    /// TeaCache threshold; `None`: the program's (programs compiled with a TeaCache split).
    pub teacache: Option<f64>,
    pub on_step: OnStep,
    /// Extra stage inputs given to every model call (a request's LoRA slot
    /// tensors, `crate::lora::LoraRuntime::inputs`); empty for none.
    pub extra: Vec<(String, HostTensor)>,
}

/// The sampled images.
#[derive(Clone, Debug)]
pub struct Generated {
    /// Final latents, one `height × width` plane per sample (values about [-1, 1]).
    pub samples: Vec<Vec<f32>>,
    pub height: usize,
    pub width: usize,
    pub report: DenoiseReport,
}

impl Generated {
    pub fn images(&self) -> Vec<GrayImage> {
        self.samples.iter().filter_map(|s| GrayImage::from_signed(self.width, self.height, s)).collect()
    }
}

/// The class-CFG parts of a denoise spec: (program input of the labels, null class).
pub fn class_labels_input(spec: &DenoiseSpec) -> Result<(String, i64), GenerateError> {
    let Guidance::ClassCfg { labels, null_class, .. } = &spec.guidance else { return Err(GenerateError::NotClassConditional) };
    // Program inputs reach the stage under their own names unless mapped.
    let program = spec.inputs.iter().find(|(_, body)| body == labels).map(|(p, _)| p.clone());
    Ok((program.unwrap_or_else(|| labels.clone()), *null_class))
}

/// The seed of the stream for the `repeat`-th sample of `class`: the first
/// 64 bits of Philox4x32-10 of counter `(class, repeat, 0x67656e, 0)` under key `seed`.
pub fn sample_seed(seed: u64, class: i64, repeat: u32) -> u64 {
    let r = rng::philox4x32_10([class as u32, repeat, 0x0067_656e, 0], [seed as u32, (seed >> 32) as u32]);
    ((r[0] as u64) << 32) | r[1] as u64
}

/// Initial latents for `classes` (`per_sample` values each), by the noise rule above.
pub fn initial_latents(seed: u64, classes: &[i64], per_sample: usize) -> Vec<f32> {
    let mut seen: HashMap<i64, u32> = HashMap::new();
    let mut v = Vec::with_capacity(classes.len() * per_sample);
    for &c in classes {
        let r = seen.entry(c).or_insert(0);
        v.extend(rng::randn(sample_seed(seed, c, *r), per_sample));
        *r += 1;
    }
    v
}

/// Samples one image per requested class with a loaded artifact.
pub fn generate(exe: &mut Executable, opts: &GenerateOptions) -> Result<Generated, GenerateError> {
    let Control::Denoise(spec) = &exe.artifact().manifest().control else { return Err(GenerateError::NotClassConditional) };
    let spec = spec.clone();
    let (labels_input, null) = class_labels_input(&spec)?;
    if opts.classes.is_empty() {
        return Err(GenerateError::NoClasses);
    }
    if let Some(&class) = opts.classes.iter().find(|&&c| c < 0 || c >= null) {
        return Err(GenerateError::BadClass { class, null });
    }
    // Per-sample latent shape from the model stage's signature (batch axis first).
    let stage = spec.stage_names().first().map(|s| s.to_string()).unwrap_or_default();
    let lat = exe
        .inputs(&stage)
        .map_err(|e| GenerateError::Latents(e.to_string()))?
        .into_iter()
        .find(|i| i.name == spec.latent_input)
        .ok_or_else(|| GenerateError::Latents(format!("stage `{stage}` has no input `{}`", spec.latent_input)))?;
    let bindings = HashMap::new();
    let mut dims = Vec::new();
    for d in lat.shape.iter().skip(1) {
        let v = d.eval(&bindings).map_err(|e| GenerateError::Latents(format!("`{}`: {e}; expected fixed image dimensions", spec.latent_input)))?;
        dims.push(usize::try_from(v).map_err(|_| GenerateError::Latents(format!("negative dimension {v}")))?);
    }
    let (height, width) = match dims.as_slice() {
        [1, h, w] => (*h, *w),
        _ => return Err(GenerateError::Latents(format!("`{}` has per-sample shape {dims:?}; expected one channel [1, H, W]", spec.latent_input))),
    };
    let n = opts.classes.len();
    let per = height * width;
    let mut shape = vec![n];
    shape.extend(&dims);
    let mut inputs: Tensors = HashMap::new();
    inputs.insert(spec.latents.clone(), HostTensor::from_f32(&shape, &initial_latents(opts.seed, &opts.classes, per)));
    inputs.insert(labels_input, HostTensor::from_i64(&[n], &opts.classes));
    let dopts = DenoiseOptions {
        steps: opts.steps,
        guidance_scale: opts.guidance,
        teacache_threshold: opts.teacache,
        on_step: opts.on_step.clone(),
        ..Default::default()
    };
    let out = if opts.extra.is_empty() {
        run_denoise(&spec, exe, &inputs, &dopts)?
    } else {
        let mut runner = crate::lora::request::WithLora { exe, inputs: &opts.extra };
        run_denoise(&spec, &mut runner, &inputs, &dopts)?
    };
    let v = out.latents.to_f32_vec();
    if v.len() != n * per {
        return Err(GenerateError::Latents(format!("the loop returned {} values for {n} samples of {per}", v.len())));
    }
    let samples = v.chunks(per).map(|c| c.to_vec()).collect();
    Ok(Generated { samples, height, width, report: out.report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_depends_on_seed_class_and_repeat_only() {
        let all = initial_latents(0, &[0, 1, 2, 3, 3], 8);
        let one = initial_latents(0, &[3], 8);
        assert_eq!(&all[24..32], &one[..]);
        assert_ne!(&all[24..32], &all[32..40]);
        assert_ne!(initial_latents(1, &[3], 8), one);
    }
}
