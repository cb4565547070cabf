//! Planning a stage at load time: dense value indices, the root value each
//! view reads, resolved kernels, weights (zero-copy, or copied once when
//! their bytes are not aligned for their dtype), constants materialised
//! once (when their shape is static), and liveness: after which step each
//! computed buffer is no longer needed.

use super::buffer::AlignedBuf;
use super::code::{CodeLibrary, KernelPtr, MAX_KERNEL_ARGS};
use super::{nbytes, ExecError};
use crate::artifact::dim::{eval_shape, Bindings, DimExpr};
use crate::artifact::{Artifact, StageSchedule, Step, Ukernel, ValueDef};
use crate::kernels::ukernel_name;
use crate::tensor::ElemType;
use std::collections::{HashMap, HashSet};

/// Where a planned value's bytes come from.
pub(crate) enum Source {
    /// Stage input number `k` (signature order).
    Input(usize),
    /// A weight; `copy` holds an aligned copy when the mapped bytes are
    /// misaligned for the dtype.
    Weight {
        name: String,
        copy: Option<AlignedBuf>,
    },
    /// A literal; `buf` is materialised at load when the shape is static.
    Constant {
        values: Vec<f64>,
        buf: Option<AlignedBuf>,
    },
    Computed,
    /// The bytes of the root value, reshaped.
    View,
}

pub(crate) struct ValuePlan {
    pub id: u32,
    pub dtype: ElemType,
    pub shape: Vec<DimExpr>,
    /// Index of the value whose bytes this one reads (itself unless a view).
    pub root: usize,
    pub source: Source,
}

pub(crate) enum StepKind {
    Kernel { symbol: String, f: KernelPtr, split: Vec<crate::artifact::manifest::KernelSplit> },
    Ukernel(Ukernel),
}

impl StepKind {
    pub fn describe(&self) -> String {
        match self {
            StepKind::Kernel { symbol, .. } => format!("kernel `{symbol}`"),
            StepKind::Ukernel(op) => format!("ukernel `{}`", ukernel_name(op)),
        }
    }
}

pub(crate) struct StepPlan {
    pub kind: StepKind,
    pub args: Vec<usize>,
    pub results: Vec<usize>,
}

pub(crate) struct StagePlan {
    pub name: String,
    /// `(name, value index)` in signature order.
    pub inputs: Vec<(String, usize)>,
    pub outputs: Vec<(String, usize)>,
    pub values: Vec<ValuePlan>,
    pub steps: Vec<StepPlan>,
    /// Computed roots whose buffers are dead after step `i`.
    pub free_after: Vec<Vec<usize>>,
    /// Per step: a `Linear` whose weight was transposed at load ([`super::prepack`]).
    pub weight_t: Vec<bool>,
}

/// Little-endian bytes of `values` as `dtype` (f32/f16/bf16 rounded to
/// nearest, integers truncated, bool: non-zero).
pub(crate) fn constant_bytes(dtype: ElemType, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size_bytes());
    for &v in values {
        match dtype {
            ElemType::F32 => out.extend((v as f32).to_le_bytes()),
            ElemType::F64 => out.extend(v.to_le_bytes()),
            ElemType::F16 => out.extend(half::f16::from_f64(v).to_le_bytes()),
            ElemType::BF16 => out.extend(half::bf16::from_f64(v).to_le_bytes()),
            ElemType::I64 => out.extend((v as i64).to_le_bytes()),
            ElemType::I32 => out.extend((v as i32).to_le_bytes()),
            ElemType::Bool => out.push((v != 0.0) as u8),
        }
    }
    out
}

pub(crate) fn plan_stage(art: &Artifact, s: &StageSchedule, code: Option<&CodeLibrary>) -> Result<StagePlan, ExecError> {
    let path = art.path().to_path_buf();
    let err = |message: String| ExecError::Plan { path: path.clone(), stage: s.name.clone(), message };
    let index: HashMap<u32, usize> = s.values.iter().enumerate().map(|(i, v)| (v.id, i)).collect();
    let idx = |id: u32| index.get(&id).copied().ok_or_else(|| err(format!("value {id} is not defined")));

    // Inputs in signature order.
    let mut inputs = Vec::with_capacity(s.inputs.len());
    let mut input_pos: HashMap<usize, usize> = HashMap::new();
    for (k, id) in s.inputs.iter().enumerate() {
        let i = idx(*id)?;
        let ValueDef::Input { name } = &s.values[i].def else { return Err(err(format!("stage input {id} is not an input value"))) };
        input_pos.insert(i, k);
        inputs.push((name.clone(), i));
    }

    // Roots of views (bounded walk: no cycles).
    let mut roots = Vec::with_capacity(s.values.len());
    for (i, _) in s.values.iter().enumerate() {
        let mut cur = i;
        let mut hops = 0;
        while let ValueDef::View { of } = &s.values[cur].def {
            cur = idx(*of)?;
            hops += 1;
            if hops > s.values.len() {
                return Err(err(format!("value {} is a view in a cycle of views", s.values[i].id)));
            }
        }
        roots.push(cur);
    }

    let mut values = Vec::with_capacity(s.values.len());
    for (i, v) in s.values.iter().enumerate() {
        let source = match &v.def {
            ValueDef::Input { .. } => Source::Input(*input_pos.get(&i).ok_or_else(|| err(format!("input value {} is not in the stage's input list", v.id)))?),
            ValueDef::Weight { name } => {
                let w = art.weight(name)?;
                if w.dtype != v.dtype {
                    return Err(err(format!("weight `{name}` is {} but the program expects {}", w.dtype, v.dtype)));
                }
                let misaligned = !(w.data.as_ptr() as usize).is_multiple_of(v.dtype.size_bytes());
                let copy = if misaligned { Some(AlignedBuf::copy_of(w.data).ok_or(ExecError::Alloc { id: v.id, bytes: w.data.len() })?) } else { None };
                Source::Weight { name: name.clone(), copy }
            }
            ValueDef::Constant { values: lits } => {
                let buf = match eval_shape(&v.shape, &Bindings::new()) {
                    Ok(shape) => {
                        let bytes = constant_bytes(v.dtype, lits);
                        if Some(bytes.len()) != nbytes(&shape, v.dtype) {
                            return Err(err(format!("constant value {} has {} elements for shape {shape:?}", v.id, lits.len())));
                        }
                        Some(AlignedBuf::copy_of(&bytes).ok_or(ExecError::Alloc { id: v.id, bytes: bytes.len() })?)
                    }
                    Err(_) => None,
                };
                Source::Constant { values: lits.clone(), buf }
            }
            ValueDef::Computed => Source::Computed,
            ValueDef::View { .. } => Source::View,
        };
        values.push(ValuePlan { id: v.id, dtype: v.dtype, shape: v.shape.clone(), root: roots[i], source });
    }

    // Steps: resolve kernels; results must be computed values written once,
    // never aliasing an argument of the same step.
    let mut steps = Vec::with_capacity(s.steps.len());
    let mut written: HashSet<usize> = HashSet::new();
    for (si, st) in s.steps.iter().enumerate() {
        let (kind, args, results) = match st {
            Step::Kernel { symbol, args, results, split } => {
                let n = args.len() + results.len();
                if n > MAX_KERNEL_ARGS {
                    return Err(ExecError::TooManyArgs { path: path.clone(), stage: s.name.clone(), step: si, symbol: symbol.clone(), n });
                }
                let f = code.and_then(|c| c.resolve(symbol)).ok_or_else(|| ExecError::MissingSymbol {
                    path: path.clone(),
                    stage: s.name.clone(),
                    step: si,
                    symbol: symbol.clone(),
                    objects: code.map(|c| c.names().iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")).unwrap_or_else(|| "none".into()),
                })?;
                (StepKind::Kernel { symbol: symbol.clone(), f, split: split.clone() }, args, results)
            }
            Step::Ukernel { op, args, results } => (StepKind::Ukernel(op.clone()), args, results),
        };
        let args: Vec<usize> = args.iter().map(|a| idx(*a)).collect::<Result<_, _>>()?;
        let results: Vec<usize> = results.iter().map(|a| idx(*a)).collect::<Result<_, _>>()?;
        for &a in &args {
            let r = roots[a];
            if matches!(values[r].source, Source::Computed) && !written.contains(&r) {
                return Err(err(format!("step {si} reads value {} before a step computes it", values[a].id)));
            }
        }
        for &r in &results {
            if !matches!(values[r].source, Source::Computed) {
                return Err(err(format!("step {si} writes value {}, which is not a computed value", values[r].id)));
            }
            if !written.insert(r) {
                return Err(err(format!("value {} is computed twice", values[r].id)));
            }
        }
        steps.push(StepPlan { kind, args, results });
    }

    let mut outputs = Vec::with_capacity(s.outputs.len());
    for (name, id) in &s.outputs {
        let i = idx(*id)?;
        let r = roots[i];
        if matches!(values[r].source, Source::Computed) && !written.contains(&r) {
            return Err(err(format!("output `{name}` is value {id}, which no step computes")));
        }
        outputs.push((name.clone(), i));
    }

    // Liveness: a computed root dies after the last step reading it (or
    // right after the step writing it when nothing reads it); outputs live
    // to the end.
    let keep: HashSet<usize> = outputs.iter().map(|(_, i)| roots[*i]).collect();
    let mut last: HashMap<usize, usize> = HashMap::new();
    for (si, st) in steps.iter().enumerate() {
        for &r in &st.results {
            last.entry(r).or_insert(si);
        }
        for &a in &st.args {
            last.insert(roots[a], si);
        }
    }
    let mut free_after = vec![Vec::new(); steps.len()];
    for (r, si) in last {
        if matches!(values[r].source, Source::Computed) && !keep.contains(&r) {
            free_after[si].push(r);
        }
    }
    for f in &mut free_after {
        f.sort_unstable();
    }
    let weight_t = super::prepack::transpose_linear_weights(art, &mut values, &steps, &outputs).map_err(|e| match e {
        ExecError::Shape { message } => err(message),
        e => e,
    })?;
    Ok(StagePlan { name: s.name.clone(), inputs, outputs, values, steps, free_after, weight_t })
}
