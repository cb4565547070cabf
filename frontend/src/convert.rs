//! Conversions between runtime and compiler types: host tensors and
//! evaluator tensors, and the `denoise` control spec (IR → manifest).

use omnic_ir::eval::{Data, Tensor};
use omnic_ir::DType;
use omnic_runtime::{ElemType, HostTensor};

/// IR dtype of a runtime element type (f64 has none: it maps to f32).
pub fn ir_dtype(e: ElemType) -> DType {
    match e {
        ElemType::F32 | ElemType::F64 => DType::F32,
        ElemType::F16 => DType::F16,
        ElemType::BF16 => DType::BF16,
        ElemType::I64 => DType::I64,
        ElemType::I32 => DType::I32,
        ElemType::Bool => DType::Bool,
    }
}

/// A host tensor as an evaluator tensor (values widened, never rounded
/// except f64 → f32).
pub fn to_ir(t: &HostTensor) -> Tensor {
    let dtype = ir_dtype(t.dtype);
    let data = match dtype {
        DType::Bool => Data::B(t.to_f64_vec().into_iter().map(|x| x != 0.0).collect()),
        d if d.is_int() => Data::I(t.to_i64_vec().unwrap_or_default()),
        _ => Data::F(t.to_f64_vec().into_iter().map(|x| if t.dtype == ElemType::F64 { x as f32 as f64 } else { x }).collect()),
    };
    Tensor { dtype, shape: t.shape.clone(), data }
}

/// An evaluator tensor as a host tensor (f16/bf16 kept in their type).
pub fn to_host(t: &Tensor) -> HostTensor {
    match (&t.data, t.dtype) {
        (Data::F(v), DType::F16) => {
            HostTensor { dtype: ElemType::F16, shape: t.shape.clone(), data: v.iter().flat_map(|&x| half::f16::from_f64(x).to_le_bytes()).collect() }
        }
        (Data::F(v), DType::BF16) => {
            HostTensor { dtype: ElemType::BF16, shape: t.shape.clone(), data: v.iter().flat_map(|&x| half::bf16::from_f64(x).to_le_bytes()).collect() }
        }
        (Data::F(v), _) => HostTensor::from_f32(&t.shape, &v.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        (Data::I(v), DType::I32) => {
            HostTensor { dtype: ElemType::I32, shape: t.shape.clone(), data: v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect() }
        }
        (Data::I(v), _) => HostTensor::from_i64(&t.shape, v),
        (Data::B(v), _) => HostTensor::from_bool(&t.shape, v),
    }
}

/// A `denoise` control as the artifact manifest stores it (the runtime's
/// mirror of the IR spec, field for field).
pub fn denoise_spec(d: &omnic_ir::DenoiseSpec) -> omnic_runtime::program::denoise::DenoiseSpec {
    use omnic_ir::{Guidance, SigmaSchedule};
    use omnic_runtime::program::denoise as rt;
    rt::DenoiseSpec {
        body: d.body.clone(),
        scheduler_config: d.scheduler_config.clone(),
        steps: d.steps,
        sigmas: match d.sigmas {
            SigmaSchedule::Scheduler => rt::SigmaSchedule::Scheduler,
            SigmaSchedule::FlowLinspace => rt::SigmaSchedule::FlowLinspace,
        },
        latents: d.latents.clone(),
        latent_input: d.latent_input.clone(),
        timestep_input: d.timestep_input.clone(),
        timestep_div: d.timestep_div,
        timestep_i64: d.timestep_i64,
        prediction_output: d.prediction_output.clone(),
        inputs: d.inputs.clone(),
        guidance: match &d.guidance {
            Guidance::None => rt::Guidance::None,
            Guidance::TrueCfg { scale, negative } => rt::Guidance::TrueCfg { scale: *scale, negative: negative.clone() },
            Guidance::Distilled { input, scale } => rt::Guidance::Distilled { input: input.clone(), scale: *scale },
            Guidance::ClassCfg { scale, labels, null_class } => rt::Guidance::ClassCfg { scale: *scale, labels: labels.clone(), null_class: *null_class },
        },
        cfg_batch: d.cfg_batch.clone(),
        cache: d.teacache().map(|t| {
            rt::CachePolicy::TeaCache(rt::TeaCacheSpec {
                threshold: t.threshold,
                coefficients: t.coefficients.clone(),
                pre: t.pre.clone(),
                blocks: t.blocks.clone(),
                post: t.post.clone(),
                modulated: t.modulated.clone(),
                residuals: t.residuals.clone(),
            })
        }),
    }
}

#[cfg(test)]
#[path = "tests/convert.rs"]
mod tests;

/// The runtime's mirror of a decode control.
pub fn decode_spec(d: &omnic_ir::DecodeSpec) -> omnic_runtime::program::decode::DecodeSpec {
    omnic_runtime::program::decode::DecodeSpec {
        forward: d.forward.clone(),
        prefill: d.prefill.clone(),
        step: d.step.clone(),
        tokens: d.tokens.clone(),
        logits: d.logits.clone(),
        cache: d.cache.clone(),
        max_len: d.max_len,
        eos: d.eos.clone(),
    }
}
