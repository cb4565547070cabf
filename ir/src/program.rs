//! Programs: named stages plus the control that runs them.

use crate::graph::Graph;
use std::collections::BTreeMap;

/// A pure function from named tensors to named tensors.
#[derive(Clone, Debug, Default)]
pub struct Stage {
    pub name: String,
    pub graph: Graph,
}

/// How the stages are run. Loop constructs (denoise, decode) join this enum
/// as they are implemented.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per program
pub enum Control {
    /// Run one stage once.
    Forward { stage: String },
    /// A diffusion sampling loop around a model stage (see [`DenoiseSpec`]).
    Denoise(DenoiseSpec),
    /// Autoregressive generation with a KV cache (see [`DecodeSpec`]).
    Decode(DecodeSpec),
}

impl Control {
    /// The stages the control runs (all must exist in the program).
    pub fn stage_names(&self) -> Vec<&str> {
        match self {
            Control::Forward { stage } => vec![stage.as_str()],
            Control::Denoise(d) => d.stage_names(),
            Control::Decode(d) => d.stage_names(),
        }
    }
}

/// A denoising loop: what a diffusers pipeline's `__call__` does between
/// the text encoders and the VAE, for a given (already encoded) prompt.
///
/// ```text
/// timesteps = scheduler.set_timesteps(steps, sigmas, mu)
/// for t in timesteps:
///     cond   = body(latents, t / timestep_div, inputs...)
///     uncond = body(latents, t / timestep_div, negative inputs...)   (true CFG)
///     v = uncond + scale · (cond - uncond)
///     latents = scheduler.step(v, latents)
/// ```
///
/// Program inputs are named as the caller supplies them (`latents`,
/// `prompt_embeds`, ...); `inputs` / `negative` map them onto body inputs,
/// and a body input not mapped is taken from the program input of the same
/// name. The runtime (`omnic_runtime::program::denoise`) executes it with
/// no compiler inside; the artifact manifest carries a mirror of this spec.
#[derive(Clone, Debug, PartialEq)]
pub struct DenoiseSpec {
    /// The stage computing one model call (the transformer). After the
    /// `teacache` pass it is replaced by the cache's three stages and only
    /// names the model in reports.
    pub body: String,
    /// `scheduler/scheduler_config.json`, verbatim (the runtime parses it).
    pub scheduler_config: String,
    /// Default number of inference steps (overridable at run time).
    pub steps: usize,
    /// How the sigmas passed to `set_timesteps` are chosen.
    pub sigmas: SigmaSchedule,
    /// Program input holding the initial latents; the final latents are the
    /// program output of the same name.
    pub latents: String,
    /// Body input receiving the current latents.
    pub latent_input: String,
    /// Body input receiving the timestep (one value per batch row).
    pub timestep_input: String,
    /// The body gets `t / timestep_div` (float32 division, as the pipeline
    /// does): 1000 for Flux-style models whose forward multiplies by 1000.
    pub timestep_div: f64,
    /// The timestep input is int64 (`t / timestep_div` rounded), as
    /// DiTPipeline feeds DDIM's integer timesteps; float32 otherwise.
    pub timestep_i64: bool,
    /// Body output holding the model's prediction (velocity / noise).
    pub prediction_output: String,
    /// (program input, body input) for the conditional branch.
    pub inputs: Vec<(String, String)>,
    pub guidance: Guidance,
    /// `Some(inputs)` when the `cfg-batching` pass found the body batchable:
    /// the conditional and unconditional calls of a step become one call on
    /// a batch of two, concatenating these body inputs (those whose axis 0
    /// is the batch) along axis 0 and splitting the outputs.
    pub cfg_batch: Option<Vec<String>>,
    /// A block-skipping cache (the `teacache` pass), if any.
    pub cache: Option<CachePolicy>,
}

/// Autoregressive decoding of a causal LM with a key/value cache:
///
/// ```text
/// logits, new = prefill(tokens = prompt [1, P])          new: [1, P, ...] per cache entry
/// cache[e][0..P] = new[e]                                 cache preallocated for max_len positions
/// loop: t = sample(logits[0, -1]); stop on eos / max tokens
///       logits, new = step(tokens = [[t]], past[e] = cache[e][0..n])   (n = tokens so far)
///       cache[e][n] = new[e]
/// ```
///
/// Every cache entry is a pair (output of `prefill` and `step` holding the
/// entries of the new positions, axis 1 = position; input of `step`
/// receiving the cached positions `[1, past, ...]`). The step stage's
/// cached inputs have the symbolic length `past`, so one step costs one
/// stage call whatever the length, and the prefix is never recomputed.
/// `forward` is the plain full-sequence stage (all logits), kept for
/// checking and scoring. The runtime (`omnic_runtime::program::decode`)
/// runs the loop and the sampling; the artifact manifest mirrors this spec.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeSpec {
    /// Full-sequence stage: token ids `[batch, seq]` → logits `[batch, seq, vocab]`.
    pub forward: String,
    /// Prompt stage: token ids `[1, seq]` → last-position logits and the cache entries.
    pub prefill: String,
    /// One-token stage: token ids `[1, 1]` and the cached entries → logits and new entries.
    pub step: String,
    /// Input of all three stages holding the token ids (i64).
    pub tokens: String,
    /// Output of all three stages holding the logits `[.., n, vocab]` (the last row is sampled).
    pub logits: String,
    /// (output with the new positions' entries, step input with the cached ones).
    pub cache: Vec<(String, String)>,
    /// Positions the cache holds (prompt plus generated tokens).
    pub max_len: usize,
    /// Token ids that end generation (generation_config.json `eos_token_id`).
    pub eos: Vec<i64>,
}

impl DecodeSpec {
    /// The stages the control runs: forward, prefill, step.
    pub fn stage_names(&self) -> Vec<&str> {
        vec![self.forward.as_str(), self.prefill.as_str(), self.step.as_str()]
    }
}

/// How the timestep schedule is requested from the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigmaSchedule {
    /// `set_timesteps(num_inference_steps)` (SD3, DDIM, DPM-Solver pipelines).
    Scheduler,
    /// `sigmas = linspace(1, 1/N, N)` and, with dynamic shifting, `mu` from
    /// the image token count (FluxPipeline, QwenImagePipeline).
    FlowLinspace,
}

impl SigmaSchedule {
    pub fn name(self) -> &'static str {
        match self {
            SigmaSchedule::Scheduler => "scheduler",
            SigmaSchedule::FlowLinspace => "flow_linspace",
        }
    }
}

/// Classifier-free guidance of a denoising loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Guidance {
    /// One model call per step.
    None,
    /// Two model calls per step (true CFG), combined as
    /// `uncond + scale · (cond - uncond)`. `negative` maps program inputs
    /// onto the body inputs they replace in the unconditional call. As in
    /// diffusers, guidance only runs when `scale > 1` and the negative
    /// inputs are given; otherwise the step is the conditional call alone.
    TrueCfg { scale: f64, negative: Vec<(String, String)> },
    /// Guidance-distilled models (FLUX.1-dev): one call, the scale fed to
    /// body input `input` (one value per batch row).
    Distilled { input: String, scale: f64 },
    /// Class-conditional CFG (DiTPipeline): two model calls per step, the
    /// unconditional one with every class label of body input `labels`
    /// replaced by `null_class`; combined as for `TrueCfg`, only when
    /// `scale > 1`.
    ClassCfg { scale: f64, labels: String, null_class: i64 },
}

/// A cache that skips model work between steps.
#[derive(Clone, Debug, PartialEq)]
pub enum CachePolicy {
    TeaCache(TeaCacheSpec),
}

/// TeaCache (arXiv 2411.19108): the body split at the block stack into
/// `pre` (embeddings and the first block's modulated input), `blocks` (the
/// stack) and `post` (output head). Per step and guidance branch, the
/// relative L1 change of the modulated input against the previous step,
/// rescaled by the polynomial `coefficients` (highest power first), is
/// accumulated; while the sum stays below `threshold` the stack is skipped
/// and each residual stream leaving it is its input plus the cached
/// residual (output − input of the stack at the last computed step).
/// First and last steps always compute; `threshold <= 0` never skips.
#[derive(Clone, Debug, PartialEq)]
pub struct TeaCacheSpec {
    pub threshold: f64,
    /// Rescaling polynomial, highest power first.
    pub coefficients: Vec<f64>,
    pub pre: String,
    pub blocks: String,
    pub post: String,
    /// Output of `pre` holding the modulated input.
    pub modulated: String,
    /// (stream entering the stack = output of `pre`, stream leaving it =
    /// output of `blocks`), one pair per cached residual stream.
    pub residuals: Vec<(String, String)>,
}

impl DenoiseSpec {
    /// The stages the loop runs: the body, or the cache's three stages.
    pub fn stage_names(&self) -> Vec<&str> {
        match &self.cache {
            None => vec![self.body.as_str()],
            Some(CachePolicy::TeaCache(t)) => vec![t.pre.as_str(), t.blocks.as_str(), t.post.as_str()],
        }
    }

    /// The TeaCache policy, if any.
    pub fn teacache(&self) -> Option<&TeaCacheSpec> {
        match &self.cache {
            Some(CachePolicy::TeaCache(t)) => Some(t),
            None => None,
        }
    }
}

/// A compiled unit: stages, control and free-form metadata (architecture,
/// source directory, config values worth keeping).
#[derive(Clone, Debug)]
pub struct Program {
    pub stages: Vec<Stage>,
    pub control: Control,
    pub metadata: BTreeMap<String, String>,
}

impl Program {
    /// A one-stage program run once.
    pub fn single(name: &str, graph: Graph) -> Program {
        Program { stages: vec![Stage { name: name.to_string(), graph }], control: Control::Forward { stage: name.to_string() }, metadata: BTreeMap::new() }
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    pub fn stage_mut(&mut self, name: &str) -> Option<&mut Stage> {
        self.stages.iter_mut().find(|s| s.name == name)
    }
}
