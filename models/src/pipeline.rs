//! Pipeline directories: a `transformer/` with a `scheduler/` (and maybe a
//! `vae/`) next to it, laid out as diffusers' `save_pretrained` writes a
//! pipeline (with or without `model_index.json`). Importing one yields the
//! transformer stage under a `denoise` control that reproduces the
//! pipeline's sampling loop (see [`omnic_ir::DenoiseSpec`]).
//!
//! Only families whose pipeline loop the runtime reproduces get a loop:
//!
//! | family | pipeline | loop |
//! | --- | --- | --- |
//! | `flux` | `FluxPipeline` | `sigmas = linspace(1, 1/N, N)`, `mu` from the image tokens, the model gets `t / 1000`; latents `latents` → `hidden_states`, `prompt_embeds` → `encoder_hidden_states`, `pooled_prompt_embeds` → `pooled_projections`, `img_ids` / `txt_ids` by name; 28 steps |
//! | `dit` | `DiTPipeline` | the scheduler's own `set_timesteps(N)` (DDIM), the model gets the integer timestep as int64; latents `latents` → `hidden_states`, `class_labels` (int64, one per sample) by name; class CFG with the null class `num_embeds_ada_norm` for the unconditional call, guidance scale 4; 50 steps; a learned-sigma model (`out_channels = 2·in_channels`) steps with the eps half (body output `eps`, the first `in_channels` channels of `sample`) |
//!
//! Guidance (FluxPipeline's defaults): a model with guidance embeddings
//! (FLUX.1-dev) gets distilled guidance through its `guidance` input, scale
//! 3.5; a model without (FLUX.1-schnell style, the `denoise` fixture) gets
//! true CFG with the negative inputs `negative_prompt_embeds` /
//! `negative_pooled_prompt_embeds` and scale 1.0 — as in diffusers, true
//! CFG then runs only when the caller gives the negative inputs *and* a
//! scale above 1 (`omnirt run --true-cfg-scale 4.0`).
//!
//! Other families with a `scheduler/` keep a `forward` control (their
//! pipelines differ: SD3 feeds raw timesteps, Qwen-Image rescales the CFG
//! combination by the norms, Z-Image negates the prediction, ...), with the
//! scheduler recorded in the metadata. A `vae/` is recorded in the
//! metadata; decoding is not part of the loop yet.

use crate::error::{ImportError, Result};
use omnic_frontend::ModelDir;
use omnic_ir::{DenoiseSpec, Guidance, Program, SigmaSchedule};

/// FluxPipeline's `num_inference_steps` default.
pub const FLUX_DEFAULT_STEPS: usize = 28;
/// FluxPipeline's `guidance_scale` default (distilled guidance).
pub const FLUX_DEFAULT_GUIDANCE: f64 = 3.5;
/// FluxPipeline's `true_cfg_scale` default (1.0: true CFG off).
pub const FLUX_DEFAULT_TRUE_CFG: f64 = 1.0;
/// DiTPipeline's `num_inference_steps` default.
pub const DIT_DEFAULT_STEPS: usize = 50;
/// DiTPipeline's `guidance_scale` default.
pub const DIT_DEFAULT_GUIDANCE: f64 = 4.0;

/// The denoise loop for a pipeline directory, when `md` is one and the
/// family's pipeline is known; also records the components in `program`'s
/// metadata. The scheduler config is checked with the runtime's reader.
pub fn denoise_control(family: &str, md: &ModelDir, program: &mut Program) -> Result<Option<DenoiseSpec>> {
    let Some(sched_dir) = md.component("scheduler") else { return Ok(None) };
    let path = sched_dir.join("scheduler_config.json");
    let config_err = |field: &str, message: String| ImportError::Config { path: path.display().to_string(), field: field.into(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| config_err("<file>", format!("cannot read the scheduler config: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| config_err("<file>", format!("not valid JSON: {e}")))?;
    let sched = omnic_runtime::sched::from_config_value(&value, &path.display().to_string()).map_err(|e| config_err("_class_name", e.to_string()))?;
    program.metadata.insert("scheduler".into(), sched.class_name().into());
    if let Some(vae) = md.component("vae") {
        program.metadata.insert("vae".into(), vae.display().to_string());
    }
    let Some(stage) = program.stages.first() else { return Ok(None) };
    let g = &stage.graph;
    let has_input = |n: &str| g.inputs().iter().any(|(k, _)| k == n);
    let spec = match family {
        "flux" => {
            let guidance = if has_input("guidance") {
                Guidance::Distilled { input: "guidance".into(), scale: FLUX_DEFAULT_GUIDANCE }
            } else {
                Guidance::TrueCfg {
                    scale: FLUX_DEFAULT_TRUE_CFG,
                    negative: vec![
                        ("negative_prompt_embeds".into(), "encoder_hidden_states".into()),
                        ("negative_pooled_prompt_embeds".into(), "pooled_projections".into()),
                    ],
                }
            };
            program.metadata.insert("pipeline".into(), "FluxPipeline".into());
            DenoiseSpec {
                body: stage.name.clone(),
                scheduler_config: text,
                steps: FLUX_DEFAULT_STEPS,
                sigmas: if sched.class_name() == "FlowMatchEulerDiscreteScheduler" { SigmaSchedule::FlowLinspace } else { SigmaSchedule::Scheduler },
                latents: "latents".into(),
                latent_input: "hidden_states".into(),
                timestep_input: "timestep".into(),
                timestep_div: 1000.0,
                timestep_i64: false,
                prediction_output: "sample".into(),
                inputs: vec![("prompt_embeds".into(), "encoder_hidden_states".into()), ("pooled_prompt_embeds".into(), "pooled_projections".into())],
                guidance,
                cfg_batch: None,
                cache: None,
            }
        }
        "dit" => {
            let Some(null_class) = md.config.value.get("num_embeds_ada_norm").and_then(|v| v.as_i64()) else {
                return Err(ImportError::Config {
                    path: md.config.path.display().to_string(),
                    field: "num_embeds_ada_norm".into(),
                    message: "DiTPipeline's class-conditional loop needs the number of classes (the null class for guidance)".into(),
                });
            };
            let timestep_i64 = g.inputs().iter().any(|(k, n)| k == "timestep" && g.node(*n).outputs.first().is_some_and(|t| t.dtype == omnic_ir::DType::I64));
            let body = stage.name.clone();
            let prediction_output = learned_sigma_eps(md, program)?;
            program.metadata.insert("pipeline".into(), "DiTPipeline".into());
            DenoiseSpec {
                body,
                scheduler_config: text,
                steps: DIT_DEFAULT_STEPS,
                sigmas: SigmaSchedule::Scheduler,
                latents: "latents".into(),
                latent_input: "hidden_states".into(),
                timestep_input: "timestep".into(),
                timestep_div: 1.0,
                timestep_i64,
                prediction_output,
                inputs: Vec::new(),
                guidance: Guidance::ClassCfg { scale: DIT_DEFAULT_GUIDANCE, labels: "class_labels".into(), null_class },
                cfg_batch: None,
                cache: None,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(spec))
}

/// DiTPipeline's learned sigma: when `out_channels == 2 · in_channels` the
/// model predicts eps and the variance; the pipeline combines guidance on
/// and steps with the first `in_channels` channels only. Adds that slice as
/// body output `eps` and returns the prediction output's name (`sample`
/// when the model predicts eps alone).
fn learned_sigma_eps(md: &ModelDir, program: &mut Program) -> Result<String> {
    let cfg = &md.config.value;
    let Some(in_ch) = cfg.get("in_channels").and_then(|v| v.as_i64()) else { return Ok("sample".into()) };
    let out_ch = cfg.get("out_channels").and_then(|v| v.as_i64()).unwrap_or(in_ch);
    if out_ch != 2 * in_ch {
        return Ok("sample".into());
    }
    let Some(stage) = program.stages.first_mut() else { return Ok("sample".into()) };
    let g = &mut stage.graph;
    let Some(sample) = g.output("sample") else {
        return Err(ImportError::Config {
            path: md.config.path.display().to_string(),
            field: "out_channels".into(),
            message: "learned sigma (out_channels = 2·in_channels) needs the model output `sample`".into(),
        });
    };
    let n = g.add(omnic_ir::Op::Slice { axis: 1, start: omnic_ir::shape::Dim::Const(0), end: omnic_ir::shape::Dim::Const(in_ch) }, &[sample])?;
    g.node_mut(n).label = Some("learned_sigma_eps".into());
    g.outputs.push(("eps".into(), omnic_ir::ValueRef::new(n, 0)));
    Ok("eps".into())
}
