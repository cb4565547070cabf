//! The artifact manifest: everything `omnirt` needs to run a compiled
//! program besides code and weights. Serialised as JSON inside the `.omni`
//! file. The compiler builds it; the runtime owns the schema (so the
//! runtime never depends on the compiler).
//!
//! Execution model (IREE-like): a stage is a list of [`Step`]s over values.
//! A value is a stage input, a weight, a small constant, a view of another
//! value (reshape: same bytes, new shape) or the result of a step. Steps
//! are generated kernels (`Kernel`, called through the C interface of the
//! code object) or hand-written runtime kernels (`Ukernel`: GEMM,
//! attention, convolution, top-k).

use super::dim::DimExpr;
use crate::tensor::ElemType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the manifest/artifact format this runtime reads and writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// `omnic <version>` that wrote the artifact.
    pub compiler: String,
    pub target: TargetInfo,
    /// The pass pipeline the program went through.
    pub pipeline: String,
    /// Model metadata (architecture, family, config values worth keeping).
    pub metadata: BTreeMap<String, String>,
    pub control: Control,
    pub stages: Vec<StageSchedule>,
    pub weights: WeightSource,
}

/// What the code was generated for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Target plugin name (`cpu`).
    pub name: String,
    /// LLVM target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub triple: String,
    /// CPU the code was tuned for (`znver4`, `x86-64-v3`, ...).
    pub cpu: String,
    /// CPU features the code requires (e.g. `avx2`, `fma`, `avx512f`); the
    /// runtime refuses to run on a machine lacking one.
    pub features: Vec<String>,
}

/// Where the weights are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightSource {
    /// In the artifact's weights section (a safetensors blob).
    Embedded,
    /// In the original safetensors files (paths as given at compile time);
    /// derived weights (folded at compile time) are still embedded.
    External { files: Vec<String> },
}

/// How stages are run: one stage once, or a sampling loop over the stages
/// (`Denoise`, run by [`crate::program::denoise`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// One per artifact: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Control {
    Forward { stage: String },
    Denoise(crate::program::denoise::DenoiseSpec),
    /// Autoregressive generation with a KV cache ([`crate::program::decode`]).
    Decode(crate::program::decode::DecodeSpec),
}

/// One value of a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueSpec {
    pub id: u32,
    pub dtype: ElemType,
    pub shape: Vec<DimExpr>,
    pub def: ValueDef,
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueDef {
    /// Stage input `name`.
    Input { name: String },
    /// Weight `name` (embedded section or external files).
    Weight { name: String },
    /// A small literal (row-major, exact for f32/f16/bf16 and ints ≤ 2^53).
    /// (Non-finite values are written as "nan", "inf", "-inf".)
    Constant {
        #[serde(with = "super::nonfinite")]
        values: Vec<f64>,
    },
    /// Written by a step.
    Computed,
    /// The bytes of value `of`, read with this value's shape (reshape).
    View { of: u32 },
}

/// A stage's schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSchedule {
    pub name: String,
    /// Input value ids, in signature order.
    pub inputs: Vec<u32>,
    /// Named outputs.
    pub outputs: Vec<(String, u32)>,
    pub values: Vec<ValueSpec>,
    pub steps: Vec<Step>,
    /// FLOPs of each step (index-aligned with `steps`) over the stage's
    /// symbols, for the profiler (`omnirt bench`); empty when unknown
    /// (artifacts written before it existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flops: Vec<DimExpr>,
}

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Generated code: `_mlir_ciface_<symbol>` called with a memref
    /// descriptor pointer for each arg, then each result (destination
    /// passing: results are written into runtime-allocated buffers).
    Kernel {
        symbol: String,
        args: Vec<u32>,
        results: Vec<u32>,
        /// The ways the kernel may be cut into independent calls over row
        /// blocks (see [`KernelSplit`]; one per separable axis); empty:
        /// always called whole (and in artifacts written before it existed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        split: Vec<KernelSplit>,
    },
    /// A runtime kernel.
    Ukernel { op: Ukernel, args: Vec<u32>, results: Vec<u32> },
}

/// A kernel whose iteration space is separable along one axis: calling it
/// on a block of rows `lo..hi` of that axis (each argument with an axis
/// sliced to those rows, the others whole; each result sliced) computes
/// exactly those rows of every result. `args[i]` / `results[i]` is the
/// axis of argument / result `i` that carries the rows (`None`: the
/// argument does not vary along it and is passed whole; every result has
/// one). The axis has the same extent in every sliced operand, and the
/// kernel reads it from the descriptors' sizes (it is symbolic in the
/// kernel's types). Decided at compile time (`omnic_codegen`'s
/// `cpu::parallel`), used by the executor to run the kernel on several
/// threads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSplit {
    pub args: Vec<Option<u32>>,
    pub results: Vec<Option<u32>>,
}

/// Hand-written runtime kernels; semantics exactly those of the IR op of
/// the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ukernel {
    /// `(x [*, K], w [N, K], [b [N]]) → x·wᵀ + b`
    Linear { bias: bool },
    /// `Linear` with a sectioned input and output (a `concat` before it and
    /// a `split` after it, both along the last axis, done by the GEMM in
    /// place): `(x_0 [*, K_0], …, x_{m−1} [*, K_{m−1}], w [N, ΣK_i], [b [N]])
    /// → (y_0 [*, N_0], …, y_{r−1} [*, N_{r−1}])` = `split(concat(x_i)·wᵀ + b)`
    /// with `m = inputs` and the widths from the shapes (`ΣN_o = N`; every
    /// `N_o` but the last a multiple of 32). The weight is arg `inputs`.
    /// A variant of its own so that runtimes without it reject the artifact.
    LinearSections { bias: bool, inputs: usize },
    /// `(a [*, M, K], b [*, K, N]) → a·b`, batch dims broadcast
    MatMul,
    /// `(q, k, v, [mask]) → softmax(q·kᵀ·scale + mask)·v`, GQA, causal bottom-right
    Attention { scale: Option<f64>, causal: bool, mask: bool },
    /// NC* convolution, 2 or 3 spatial dims
    Conv { stride: Vec<usize>, padding: Vec<usize>, dilation: Vec<usize>, groups: usize, bias: bool },
    /// largest `k` along the last axis: values and i64 indices
    TopK { k: usize },
    /// fused sparse MoE gated MLP `(x [T, H], logits [T, E], w_gate [E, I, H],
    /// w_up [E, I, H], w_down [E, H, I]) → [T, H]`: softmax top-k routing
    /// (renormalised when `norm_topk`), only the selected experts computed
    Moe { top_k: usize, norm_topk: bool, act: MoeAct },
}

/// The gate activation of a [`Ukernel::Moe`] (the IR unary of the same name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoeAct {
    Silu,
    Sigmoid,
    Relu,
    GeluTanh,
}

impl Ukernel {
    /// The weight operand's position for `Linear` and `LinearSections`
    /// (what load-time and compile-time packing look at), else `None`.
    pub fn linear_weight_arg(&self) -> Option<usize> {
        match self {
            Ukernel::Linear { .. } => Some(1),
            Ukernel::LinearSections { inputs, .. } => Some(*inputs),
            _ => None,
        }
    }
}

impl StageSchedule {
    pub fn value(&self, id: u32) -> Option<&ValueSpec> {
        self.values.iter().find(|v| v.id == id)
    }
}
