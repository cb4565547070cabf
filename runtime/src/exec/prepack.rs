//! Load-time weight packing for `Linear` ukernel steps.
//!
//! `Linear` computes `x[rows, K] · w[N, K]ᵀ`: in PyTorch's layout the GEMM's
//! right-hand side is column-major. So when a stage is planned, every f32
//! weight whose only uses are as the weight operand of `Linear` steps is
//! copied once into the value's aligned copy in the panel layout of
//! [`crate::kernels::gemm_packed`] (32-column `[K, 32]` blocks, the mapped
//! bytes are then never read), and those steps are marked to call
//! [`gemm_packed::linear_packed`] (an AVX-512 micro-kernel; measured in
//! `runtime/benches/linear_shapes.rs` against the `gemm` crate on a
//! transposed weight). The value keeps its declared shape `[N, K]` (same
//! byte count); only the marked steps read it.
//!
//! Weights the compiler already stored packed (named in the manifest
//! metadata key [`PACKED_KEY`]) are used as they are, with no copy.
//! Weights that anything else reads (an output, a kernel step, another
//! ukernel, a `Linear` as its input) stay as they are.

use super::buffer::AlignedBuf;
use super::plan::{Source, StepKind, StepPlan, ValuePlan};
use super::ExecError;
use crate::artifact::{Artifact, StageSchedule, Step, Ukernel, ValueDef};
use crate::kernels::{gemm_packed, KernelError, TensorMut, TensorRef};
use crate::tensor::ElemType;

/// Manifest metadata key: a JSON list of the weights the compiler stored
/// in the panel layout (absent in older artifacts: none).
pub const PACKED_KEY: &str = "weights.linear_panels";

/// The weights an artifact stores pre-packed ([`PACKED_KEY`]).
pub fn packed_weights(art: &Artifact) -> Result<std::collections::BTreeSet<String>, ExecError> {
    match art.manifest().metadata.get(PACKED_KEY) {
        None => Ok(Default::default()),
        Some(text) => serde_json::from_str::<Vec<String>>(text)
            .map(|v| v.into_iter().collect())
            .map_err(|e| ExecError::Shape { message: format!("manifest metadata `{PACKED_KEY}`: not a list of weight names: {e}") }),
    }
}

/// Which values are read only as the weight operand of `Linear` steps:
/// `values[v] = (root of v, is f32)`, `steps = (the weight's position if
/// the step is a Linear or LinearSections, args)`,
/// `outputs` the stage's output values. Indexed by value; true only on
/// roots. The compiler's and the runtime's packing decisions both use it.
pub fn linear_only_weights(values: &[(usize, bool)], steps: &[(Option<usize>, Vec<usize>)], outputs: &[usize]) -> Vec<bool> {
    let n = values.len();
    let mut other_use = vec![false; n];
    let mut linear_use = vec![false; n];
    for &v in outputs {
        other_use[values[v].0] = true;
    }
    for (weight_arg, args) in steps {
        for (i, &a) in args.iter().enumerate() {
            let r = values[a].0;
            if *weight_arg == Some(i) && r == a {
                linear_use[r] = true;
            } else {
                other_use[r] = true;
            }
        }
    }
    (0..n).map(|r| linear_use[r] && !other_use[r] && values[r].1).collect()
}

/// Names of the weights that every stage of `stages` reads only as the
/// weight operand of `Linear` steps, f32 and rank 2 (the same rule as the
/// load-time packing, on the manifest's schedules): what a compiler may
/// store pre-packed (listing them under [`PACKED_KEY`]).
pub fn linear_panel_weights(stages: &[StageSchedule]) -> std::collections::BTreeSet<String> {
    let mut ok = std::collections::BTreeSet::new();
    let mut bad = std::collections::BTreeSet::new();
    for s in stages {
        let pos: std::collections::HashMap<u32, usize> = s.values.iter().enumerate().map(|(i, v)| (v.id, i)).collect();
        let root = |mut i: usize| {
            for _ in 0..s.values.len() {
                match &s.values[i].def {
                    ValueDef::View { of } => match pos.get(of) {
                        Some(&j) => i = j,
                        None => break,
                    },
                    _ => break,
                }
            }
            i
        };
        let vals: Vec<(usize, bool)> = (0..s.values.len()).map(|i| (root(i), s.values[i].dtype == ElemType::F32 && s.values[i].shape.len() == 2)).collect();
        let idx = |ids: &[u32]| ids.iter().filter_map(|id| pos.get(id).copied()).collect::<Vec<usize>>();
        let steps: Vec<(Option<usize>, Vec<usize>)> = s
            .steps
            .iter()
            .map(|st| match st {
                Step::Ukernel { op, args, .. } => (op.linear_weight_arg(), idx(args)),
                Step::Kernel { args, .. } => (None, idx(args)),
            })
            .collect();
        let outs = idx(&s.outputs.iter().map(|(_, id)| *id).collect::<Vec<_>>());
        let eligible = linear_only_weights(&vals, &steps, &outs);
        for (i, v) in s.values.iter().enumerate() {
            if let ValueDef::Weight { name } = &v.def {
                if eligible[i] {
                    ok.insert(name.clone());
                } else {
                    bad.insert(name.clone());
                }
            }
        }
    }
    ok.retain(|n| !bad.contains(n));
    ok
}

/// Packs the weights of `Linear` steps that only `Linear` reads (see the
/// module doc). Returns, per step, whether it reads a packed weight.
pub(crate) fn transpose_linear_weights(
    art: &Artifact,
    values: &mut [ValuePlan],
    steps: &[StepPlan],
    outputs: &[(String, usize)],
) -> Result<Vec<bool>, ExecError> {
    let mut marked = vec![false; steps.len()];
    let pre = packed_weights(art)?;
    let vals: Vec<(usize, bool)> = values.iter().map(|v| (v.root, v.dtype == ElemType::F32)).collect();
    let weight_arg = |st: &StepPlan| match &st.kind {
        StepKind::Ukernel(op) => op.linear_weight_arg(),
        _ => None,
    };
    let sts: Vec<(Option<usize>, Vec<usize>)> = steps.iter().map(|st| (weight_arg(st), st.args.clone())).collect();
    let outs: Vec<usize> = outputs.iter().map(|(_, v)| *v).collect();
    let eligible = linear_only_weights(&vals, &sts, &outs);
    let n = values.len();
    let mut packed = vec![false; n];
    for r in 0..n {
        let Source::Weight { name, copy } = &mut values[r].source else { continue };
        let stored_packed = pre.contains(name.as_str());
        if !eligible[r] {
            if stored_packed {
                let msg = format!("weight `{name}` is stored packed for Linear (manifest `{PACKED_KEY}`) but this stage reads it otherwise");
                return Err(ExecError::Shape { message: msg });
            }
            continue;
        }
        let w = art.weight(name)?;
        let &[rows, cols] = w.shape else { continue };
        if w.data.len() != rows * cols * 4 {
            continue;
        }
        if !stored_packed {
            let mut buf = AlignedBuf::zeroed(w.data.len()).ok_or(ExecError::Alloc { id: values[r].id, bytes: w.data.len() })?;
            gemm_packed::pack_panels_bytes(w.data, rows, cols, buf.as_mut_slice());
            *copy = Some(buf);
        }
        packed[r] = true;
    }
    for (si, st) in steps.iter().enumerate() {
        if weight_arg(st).is_some_and(|i| st.args.get(i).is_some_and(|&w| packed[w])) {
            marked[si] = true;
        }
    }
    Ok(marked)
}

/// A `Linear` step whose weight (declared `[N, K]`) holds the panel
/// layout of [`gemm_packed`]: the checks of [`crate::kernels::run_ukernel`],
/// then [`gemm_packed::linear_packed`].
pub(crate) fn run_linear_t(op: &Ukernel, args: &[TensorRef], results: &mut [TensorMut], threads: usize) -> Result<(), KernelError> {
    const NAME: &str = "linear";
    let bias = match op {
        Ukernel::Linear { bias } => bias,
        Ukernel::LinearSections { bias, inputs } => return crate::kernels::linear_sections::run(*bias, *inputs, args, results, true, threads),
        _ => return Err(KernelError::new(NAME, "a packed weight on a step that is not linear")),
    };
    if args.len() != 2 + *bias as usize || results.len() != 1 {
        return Err(KernelError::new(NAME, format!("{} operands and {} results, expected {} and 1", args.len(), results.len(), 2 + *bias as usize)));
    }
    let (x, w) = (&args[0], &args[1]);
    let (xd, wd) = (x.f32s(NAME, "input")?, w.f32s(NAME, "weight")?);
    let (Some((&k, lead)), [n, k2]) = (x.shape.split_last(), w.shape) else {
        return Err(KernelError::new(NAME, format!("input {:?} needs rank ≥ 1 and weight {:?} rank 2", x.shape, w.shape)));
    };
    if k != *k2 {
        return Err(KernelError::new(NAME, format!("input K = {k}, weight {:?}", w.shape)));
    }
    let bd = if *bias {
        if args[2].shape != [*n] {
            return Err(KernelError::new(NAME, format!("bias has shape {:?}, expected [{n}]", args[2].shape)));
        }
        Some(args[2].f32s(NAME, "bias")?)
    } else {
        None
    };
    let mut want = lead.to_vec();
    want.push(*n);
    if results[0].shape != want.as_slice() {
        return Err(KernelError::new(NAME, format!("result has shape {:?}, expected {want:?}", results[0].shape)));
    }
    let y = results[0].f32s_mut(NAME, "result")?;
    gemm_packed::linear_packed(xd, lead.iter().product(), k, wd, *n, bd, y, threads).map_err(|e| KernelError::new(NAME, e.to_string()))
}

#[cfg(test)]
#[path = "tests/prepack.rs"]
mod tests;
