//! Checks of a `decode` control: the names it uses are inputs / outputs of
//! its stages with the types the runtime's decode loop relies on.

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, ValueRef};
use crate::op::TensorType;
use crate::program::{DecodeSpec, Program};

fn err<T>(m: String) -> Result<T, IrError> {
    Err(IrError::Graph(format!("decode control: {m}")))
}

fn stage<'p>(p: &'p Program, name: &str) -> Result<&'p Graph, IrError> {
    match p.stage(name) {
        Some(s) => Ok(&s.graph),
        None => err(format!("stage `{name}` does not exist")),
    }
}

fn input_type<'g>(g: &'g Graph, stage: &str, name: &str) -> Result<&'g TensorType, IrError> {
    match g.inputs().into_iter().find(|(n, _)| n == name) {
        Some((_, node)) => g.value_type(ValueRef::new(node, 0)),
        None => err(format!("`{name}` is not an input of stage `{stage}`")),
    }
}

fn output_type<'g>(g: &'g Graph, stage: &str, name: &str) -> Result<&'g TensorType, IrError> {
    match g.output(name) {
        Some(v) => g.value_type(v),
        None => err(format!("`{name}` is not an output of stage `{stage}`")),
    }
}

/// Tokens: i64 `[b, n]` input of every stage; logits: rank-3 float output of
/// every stage; cache entries: rank ≥ 2, same dtype and trailing dims (after
/// the position axis 1) in the prefill output, the step output and the step
/// input; at least one position.
pub(crate) fn verify_decode(p: &Program, d: &DecodeSpec) -> Result<(), IrError> {
    if d.max_len == 0 {
        return err("max_len must be at least 1".into());
    }
    let (prefill, step) = (stage(p, &d.prefill)?, stage(p, &d.step)?);
    for name in d.stage_names() {
        let g = stage(p, name)?;
        let t = input_type(g, name, &d.tokens)?;
        if t.dtype != DType::I64 || t.shape.len() != 2 {
            return err(format!("token input `{}` of stage `{name}` is {t}, expected i64 of rank 2", d.tokens));
        }
        let l = output_type(g, name, &d.logits)?;
        if !l.dtype.is_float() || l.shape.len() != 3 {
            return err(format!("logits output `{}` of stage `{name}` is {l}, expected a float tensor of rank 3", d.logits));
        }
    }
    for (new, past) in &d.cache {
        let a = output_type(prefill, &d.prefill, new)?;
        let b = output_type(step, &d.step, new)?;
        let c = input_type(step, &d.step, past)?;
        for (what, t) in [("prefill output", a), ("step output", b), ("step input", c)] {
            if t.shape.len() < 2 {
                return err(format!("cache entry `{new}` -> `{past}`: {what} is {t}, expected rank ≥ 2 (axis 1 = position)"));
            }
        }
        for (what, t) in [("step output", b), ("step input", c)] {
            if t.dtype != a.dtype || t.shape.len() != a.shape.len() || t.shape[2..] != a.shape[2..] {
                return err(format!(
                    "cache entry `{new}` -> `{past}`: {what} is {t} but the prefill output is {a} (same dtype and dims after axis 1 expected)"
                ));
            }
        }
    }
    Ok(())
}
