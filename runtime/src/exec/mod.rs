//! The schedule executor: runs the stages of a loaded artifact.
//!
//! [`Executable::load`] opens and verifies the artifact, loads its code
//! objects (only when a stage has `Kernel` steps) from anonymous files and
//! resolves `_mlir_ciface_<symbol>` for every kernel step once, then plans
//! each stage ([`plan`]): dense value slots, the root each view reads,
//! weights as zero-copy views of the mapped artifact (or of the external
//! safetensors files), constants materialised once, and the step after
//! which each computed buffer is dead.
//!
//! [`Executable::run`] takes named host tensors (`x` or `input.x`),
//! checks each against the stage signature (dtype, rank, shape; symbolic
//! dims are bound from the inputs, see [`crate::artifact::dim::bind`]),
//! evaluates every value's shape, then executes the steps in order:
//! computed values get 64-byte aligned buffers allocated just before the
//! step that writes them and released right after their last use (buffers
//! of the same size are reused, within a run and across runs), views share the bytes of the
//! value they view. `Kernel` steps call the generated code (see [`code`]
//! for the ABI), `Ukernel` steps the runtime kernels of
//! [`crate::kernels`]. The outputs come back as named host tensors (bare
//! names, as the stage declares them).
//!
//! Threads: the runtime kernels run on a rayon pool of `threads` workers
//! ([`ExecOptions::threads`]; 0, the default, means the number of physical
//! cores available to the process, see [`crate::kernels::default_threads`]).
//! Generated kernels run on the calling thread, or cut into row blocks on
//! `threads` workers when the compiler marked them separable ([`split`]).
//!
//! Every failure on user input (missing input, wrong dtype or shape, a
//! malformed artifact, a missing symbol) is an [`ExecError`] naming the
//! tensor, value or step; nothing on that path panics.

pub mod buffer;
pub mod code;
pub mod plan;
mod prepack;
pub use prepack::{linear_panel_weights, PACKED_KEY};
pub mod profile;
pub mod runner;
mod split;

use crate::artifact::dim::{self, shape_str};
use crate::artifact::{Artifact, ArtifactError, OpenOptions, Step};
use crate::kernels::{self, TensorMut, TensorRef};
use crate::tensor::{ElemType, HostTensor};
use buffer::AlignedBuf;
use code::{call_kernel, CodeLibrary, MAX_KERNEL_ARGS};
use plan::{Source, StagePlan, StepKind};
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// How to load and run an artifact.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Worker threads for the runtime kernels; 0 = physical cores.
    pub threads: usize,
    /// Look for external weights files here (by file name) instead of the
    /// paths recorded in the manifest.
    pub weights_dir: Option<PathBuf>,
}

/// Why loading or running failed.
#[derive(Debug, Error)]
pub enum ExecError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{}: code object `{name}`: {message}", .path.display())]
    Code { path: PathBuf, name: String, message: String },
    #[error("{}: stage `{stage}` step {step} calls `{}{symbol}`, which no code object defines (code objects: {objects})", .path.display(), code::CIFACE_PREFIX)]
    MissingSymbol { path: PathBuf, stage: String, step: usize, symbol: String, objects: String },
    #[error("{}: stage `{stage}` step {step} (`{symbol}`) takes {n} memref arguments; the runtime calls kernels with at most {MAX_KERNEL_ARGS}", .path.display())]
    TooManyArgs { path: PathBuf, stage: String, step: usize, symbol: String, n: usize },
    #[error("{}: stage `{stage}`: {message}", .path.display())]
    Plan { path: PathBuf, stage: String, message: String },
    #[error("the artifact has no stage `{name}` (it has {available})")]
    NoStage { name: String, available: String },
    #[error("input `{name}` is missing: stage `{stage}` takes {expected} (named `<name>` or `input.<name>`)")]
    MissingInput { stage: String, name: String, expected: String },
    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },
    #[error("{message}")]
    Shape { message: String },
    #[error("stage `{stage}` step {step} ({what}): {message}")]
    Step { stage: String, step: usize, what: String, message: String },
    #[error("out of memory: cannot allocate {bytes} bytes for value {id}")]
    Alloc { id: u32, bytes: usize },
}

/// A stage input as the signature declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: ElemType,
    pub shape: Vec<dim::DimExpr>,
}

/// A loaded artifact, ready to run (thread-safe: runs share nothing but
/// the read-only artifact, code and constants, and the spare buffers).
pub struct Executable {
    artifact: Artifact,
    /// Keeps the kernels' code loaded; `None` when no stage has kernel steps.
    code: Option<CodeLibrary>,
    stages: Vec<StagePlan>,
    threads: usize,
    /// Computed-value buffers of finished runs by byte size: a run takes
    /// them all and gives every buffer back at its end, so repeated runs
    /// (a denoise loop) allocate nothing (kernels write every element, so
    /// stale contents are never read).
    spare: std::sync::Mutex<HashMap<usize, Vec<AlignedBuf>>>,
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executable").field("artifact", &self.artifact).field("code", &self.code).field("threads", &self.threads).finish_non_exhaustive()
    }
}

impl Executable {
    /// Open, verify and prepare an artifact.
    pub fn load(path: impl AsRef<Path>, opts: &ExecOptions) -> Result<Executable, ExecError> {
        let art = Artifact::open_with(path, &OpenOptions { check_host: true, weights_dir: opts.weights_dir.clone() })?;
        Self::from_artifact(art, opts)
    }

    /// Prepare an already opened artifact (opened with host checks, so that
    /// external weights are available).
    pub fn from_artifact(artifact: Artifact, opts: &ExecOptions) -> Result<Executable, ExecError> {
        let path = artifact.path().to_path_buf();
        let m = artifact.manifest();
        let needs_code = m.stages.iter().any(|s| s.steps.iter().any(|st| matches!(st, Step::Kernel { .. })));
        let code = if needs_code {
            Some(CodeLibrary::load(artifact.code_objects()).map_err(|(name, message)| ExecError::Code { path: path.clone(), name, message })?)
        } else {
            None
        };
        let mut stages = Vec::with_capacity(m.stages.len());
        for s in &m.stages {
            stages.push(plan::plan_stage(&artifact, s, code.as_ref())?);
        }
        let threads = kernels::threads::resolve(opts.threads);
        Ok(Executable { artifact, code, stages, threads, spare: std::sync::Mutex::new(HashMap::new()) })
    }

    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// Worker threads the runtime kernels use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Change the worker thread count (0 = physical cores).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = kernels::threads::resolve(threads);
    }

    /// The stage a forward call runs (per the manifest's control).
    pub fn forward_stage(&self) -> &str {
        match &self.artifact.manifest().control {
            crate::artifact::Control::Forward { stage } => stage,
            // A denoise loop runs through `program::denoise`; one model call is its body.
            crate::artifact::Control::Denoise(d) => &d.body,
            // A decode loop runs through `program::decode`; a forward call is its full-sequence stage.
            crate::artifact::Control::Decode(d) => &d.forward,
        }
    }

    /// Names of the stages.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    fn stage(&self, name: &str) -> Result<&StagePlan, ExecError> {
        self.stages.iter().find(|s| s.name == name).ok_or_else(|| ExecError::NoStage {
            name: name.to_string(),
            available: self.stages.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", "),
        })
    }

    /// A stage's inputs in signature order.
    pub fn inputs(&self, stage: &str) -> Result<Vec<InputSpec>, ExecError> {
        let p = self.stage(stage)?;
        Ok(p.inputs.iter().map(|(name, v)| InputSpec { name: name.clone(), dtype: p.values[*v].dtype, shape: p.values[*v].shape.clone() }).collect())
    }

    /// A stage's output names in order.
    pub fn output_names(&self, stage: &str) -> Result<Vec<String>, ExecError> {
        Ok(self.stage(stage)?.outputs.iter().map(|(n, _)| n.clone()).collect())
    }

    /// Which of `names` stage `stage` does not take (neither as `x` nor as
    /// `input.x`).
    pub fn unused_inputs<'n>(&self, stage: &str, names: impl IntoIterator<Item = &'n str>) -> Result<Vec<&'n str>, ExecError> {
        let p = self.stage(stage)?;
        Ok(names.into_iter().filter(|n| !p.inputs.iter().any(|(i, _)| n == i || n.strip_prefix("input.") == Some(i.as_str()))).collect())
    }

    /// Run the forward stage.
    pub fn run_forward<'a>(&self, inputs: impl IntoIterator<Item = (&'a str, &'a HostTensor)>) -> Result<Vec<(String, HostTensor)>, ExecError> {
        self.run(self.forward_stage(), inputs)
    }

    /// Run `stage` on named inputs (`x` or `input.x`; when both are given
    /// `input.x` wins; other names are ignored). Returns the outputs by
    /// their bare names, in the stage's output order.
    pub fn run<'a>(&self, stage: &str, inputs: impl IntoIterator<Item = (&'a str, &'a HostTensor)>) -> Result<Vec<(String, HostTensor)>, ExecError> {
        self.run_profiled(stage, inputs, None)
    }

    /// [`Executable::run`], timing every step into `prof` when given (see
    /// [`profile`]; `None` costs a branch per step).
    pub fn run_profiled<'a>(
        &self,
        stage: &str,
        inputs: impl IntoIterator<Item = (&'a str, &'a HostTensor)>,
        mut prof: Option<&mut profile::Profiler>,
    ) -> Result<Vec<(String, HostTensor)>, ExecError> {
        let p = self.stage(stage)?;
        let given: HashMap<&str, &HostTensor> = inputs.into_iter().collect();
        let Run { mut slots, shapes, binds } = self.bind(p, &given)?;
        if let Some(pr) = prof.as_deref_mut() {
            let flops = self.artifact.manifest().stages.iter().find(|s| s.name == p.name).map_or(&[][..], |s| &s.flops[..]);
            pr.begin(p, flops, &shapes, &binds);
        }
        // Buffers of earlier runs (no allocation or page faults in steady state).
        let mut pool: HashMap<usize, Vec<AlignedBuf>> = self.spare.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default();
        for (si, step) in p.steps.iter().enumerate() {
            // Allocate the results.
            for &r in &step.results {
                let v = &p.values[r];
                let bytes =
                    nbytes(&shapes[r], v.dtype).ok_or_else(|| ExecError::Shape { message: format!("value {} has shape {:?}, too large", v.id, shapes[r]) })?;
                let buf = match pool.get_mut(&bytes).and_then(Vec::pop) {
                    Some(b) => b,
                    None => AlignedBuf::zeroed(bytes).ok_or(ExecError::Alloc { id: v.id, bytes })?,
                };
                slots[r] = Slot::Buf(buf);
            }
            let t0 = prof.is_some().then(std::time::Instant::now);
            self.exec_step(p, si, &step.kind, &step.args, &step.results, &mut slots, &shapes)?;
            if let (Some(pr), Some(t0)) = (prof.as_deref_mut(), t0) {
                pr.record(si, t0);
            }
            for &r in &p.free_after[si] {
                if let Slot::Buf(b) = std::mem::replace(&mut slots[r], Slot::Empty) {
                    pool.entry(b.len()).or_default().push(b);
                }
            }
        }
        let mut out = Vec::with_capacity(p.outputs.len());
        for (name, v) in &p.outputs {
            let root = p.values[*v].root;
            let data = slots[root].bytes().ok_or_else(|| ExecError::Plan {
                path: self.artifact.path().to_path_buf(),
                stage: p.name.clone(),
                message: format!("output `{name}` (value {}) has no data", p.values[*v].id),
            })?;
            out.push((name.clone(), HostTensor { dtype: p.values[*v].dtype, shape: shapes[*v].clone(), data: data.to_vec() }));
        }
        for s in slots {
            if let Slot::Buf(b) = s {
                pool.entry(b.len()).or_default().push(b);
            }
        }
        if let Ok(mut g) = self.spare.lock() {
            for (k, mut v) in pool {
                g.entry(k).or_default().append(&mut v);
            }
        }
        Ok(out)
    }

    /// Check and bind the inputs; evaluate every shape; fill the slots of
    /// inputs, weights and constants.
    fn bind<'a>(&'a self, p: &'a StagePlan, given: &HashMap<&str, &'a HostTensor>) -> Result<Run<'a>, ExecError> {
        let mut chosen: Vec<(&str, &HostTensor)> = Vec::with_capacity(p.inputs.len());
        for (name, v) in &p.inputs {
            let t = given.get(format!("input.{name}").as_str()).or_else(|| given.get(name.as_str())).copied().ok_or_else(|| ExecError::MissingInput {
                stage: p.name.clone(),
                name: name.clone(),
                expected: p.inputs.iter().map(|(n, v)| format!("{n}: {}{}", p.values[*v].dtype, shape_str(&p.values[*v].shape))).collect::<Vec<_>>().join(", "),
            })?;
            let spec = &p.values[*v];
            if t.dtype != spec.dtype {
                return Err(ExecError::Input {
                    name: name.clone(),
                    message: format!("is {}{:?} but the program expects {}{}", t.dtype, t.shape, spec.dtype, shape_str(&spec.shape)),
                });
            }
            if Some(t.data.len()) != nbytes(&t.shape, t.dtype) {
                return Err(ExecError::Input {
                    name: name.clone(),
                    message: format!("has {} bytes of data for shape {:?} of {}", t.data.len(), t.shape, t.dtype),
                });
            }
            chosen.push((name, t));
        }
        let decl: Vec<(&str, &[dim::DimExpr], &[usize])> =
            p.inputs.iter().zip(&chosen).map(|((n, v), (_, t))| (n.as_str(), &p.values[*v].shape[..], &t.shape[..])).collect();
        let binds = dim::bind(&decl).map_err(|message| match decl.iter().find(|(n, _, _)| message.starts_with(&format!("`{n}`"))) {
            Some((n, _, _)) => ExecError::Input { name: n.to_string(), message: message.clone() },
            None => ExecError::Shape { message: message.clone() },
        })?;
        let mut shapes = Vec::with_capacity(p.values.len());
        for v in &p.values {
            let s = dim::eval_shape(&v.shape, &binds)
                .map_err(|e| ExecError::Shape { message: format!("stage `{}`: value {} {}: {e}", p.name, v.id, shape_str(&v.shape)) })?;
            shapes.push(s);
        }
        let mut slots: Vec<Slot<'a>> = (0..p.values.len()).map(|_| Slot::Empty).collect();
        let path = || self.artifact.path().to_path_buf();
        for (i, v) in p.values.iter().enumerate() {
            let want = nbytes(&shapes[i], v.dtype);
            match &v.source {
                Source::Input(k) => {
                    let t = chosen[*k].1;
                    slots[i] = if (t.data.as_ptr() as usize).is_multiple_of(v.dtype.size_bytes()) {
                        Slot::Ref(&t.data)
                    } else {
                        Slot::Buf(AlignedBuf::copy_of(&t.data).ok_or(ExecError::Alloc { id: v.id, bytes: t.data.len() })?)
                    };
                }
                Source::Weight { name, copy } => {
                    let w = self.artifact.weight(name)?;
                    if w.shape != &shapes[i][..] {
                        return Err(ExecError::Shape {
                            message: format!("weight `{name}` has shape {:?} but the program expects {} = {:?}", w.shape, shape_str(&v.shape), shapes[i]),
                        });
                    }
                    slots[i] = match copy {
                        Some(b) => Slot::Ref(b.as_slice()),
                        None => Slot::Ref(w.data),
                    };
                }
                Source::Constant { values, buf } => {
                    slots[i] = match buf {
                        Some(b) => Slot::Ref(b.as_slice()),
                        None => {
                            let bytes = plan::constant_bytes(v.dtype, values);
                            if Some(bytes.len()) != want {
                                return Err(ExecError::Shape {
                                    message: format!("stage `{}`: constant value {} has {} elements for shape {:?}", p.name, v.id, values.len(), shapes[i]),
                                });
                            }
                            Slot::Buf(AlignedBuf::copy_of(&bytes).ok_or(ExecError::Alloc { id: v.id, bytes: bytes.len() })?)
                        }
                    };
                }
                Source::Computed | Source::View => {}
            }
            if let (Source::Input(_) | Source::Weight { .. } | Source::Constant { .. }, Some(s)) = (&v.source, &slots[i].bytes()) {
                if Some(s.len()) != want {
                    return Err(ExecError::Plan {
                        path: path(),
                        stage: p.name.clone(),
                        message: format!("value {} has {} bytes for shape {:?} of {}", v.id, s.len(), shapes[i], v.dtype),
                    });
                }
            }
        }
        // Views: same number of bytes as their root.
        for (i, v) in p.values.iter().enumerate() {
            if matches!(v.source, Source::View) {
                let r = &p.values[v.root];
                let (a, b) = (nbytes(&shapes[i], v.dtype), nbytes(&shapes[v.root], r.dtype));
                if a.is_none() || a != b {
                    return Err(ExecError::Shape {
                        message: format!(
                            "stage `{}`: value {} views value {} as {}{:?}, but that has {}{:?}",
                            p.name, v.id, r.id, v.dtype, shapes[i], r.dtype, shapes[v.root]
                        ),
                    });
                }
            }
        }
        Ok(Run { slots, shapes, binds })
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_step(
        &self,
        p: &StagePlan,
        si: usize,
        kind: &StepKind,
        args: &[usize],
        results: &[usize],
        slots: &mut [Slot<'_>],
        shapes: &[Vec<usize>],
    ) -> Result<(), ExecError> {
        let missing = |v: usize| ExecError::Step {
            stage: p.name.clone(),
            step: si,
            what: kind.describe(),
            message: format!("value {} has no data when the step runs", p.values[v].id),
        };
        // Raw views of every operand: args read through their root, results
        // are distinct computed buffers (checked by the planner).
        let mut arg_ptrs: Vec<(*const u8, usize)> = Vec::with_capacity(args.len());
        for &a in args {
            let s = slots[p.values[a].root].bytes().ok_or_else(|| missing(a))?;
            arg_ptrs.push((s.as_ptr(), s.len()));
        }
        let mut res_ptrs: Vec<(*mut u8, usize)> = Vec::with_capacity(results.len());
        for &r in results {
            match &mut slots[r] {
                Slot::Buf(b) => res_ptrs.push((b.as_mut_ptr(), b.len())),
                _ => return Err(missing(r)),
            }
        }
        match kind {
            StepKind::Kernel { symbol, f, split: splits } => {
                if !splits.is_empty() && self.threads > 1 {
                    let ops: Vec<split::Operand<'_>> = args
                        .iter()
                        .zip(&arg_ptrs)
                        .map(|(&v, &(ptr, _))| (v, ptr as usize))
                        .chain(results.iter().zip(&res_ptrs).map(|(&v, &(ptr, _))| (v, ptr as usize)))
                        .map(|(v, addr)| split::Operand { addr, shape: &shapes[v], elem: p.values[v].dtype.size_bytes() })
                        .collect();
                    // SAFETY: as for the whole call below; `splits` come from
                    // the compiler's analysis of this kernel (checked against
                    // the operands' ranks when the artifact was opened).
                    let done = unsafe { split::run(*f, splits, &ops, args.len(), self.threads) }.map_err(|message| ExecError::Step {
                        stage: p.name.clone(),
                        step: si,
                        what: format!("kernel `{symbol}`"),
                        message,
                    })?;
                    if done {
                        return Ok(());
                    }
                }
                let mut descs: Vec<Vec<i64>> = Vec::with_capacity(args.len() + results.len());
                for (&v, &(ptr, _)) in args.iter().zip(&arg_ptrs) {
                    descs.push(descriptor(ptr as *mut u8, &shapes[v]));
                }
                for (&v, &(ptr, _)) in results.iter().zip(&res_ptrs) {
                    descs.push(descriptor(ptr, &shapes[v]));
                }
                let mut ptrs: Vec<*mut c_void> = descs.iter_mut().map(|d| d.as_mut_ptr().cast::<c_void>()).collect();
                // SAFETY: `f` was resolved from a library `self.code` keeps
                // loaded; each descriptor points at a live buffer of exactly
                // its shape's size (checked when binding), results at
                // distinct writable buffers; the arity is the kernel's by the
                // manifest's contract.
                unsafe { call_kernel(*f, &mut ptrs) }.map_err(|n| ExecError::Step {
                    stage: p.name.clone(),
                    step: si,
                    what: format!("kernel `{symbol}`"),
                    message: format!("{n} memref arguments; at most {MAX_KERNEL_ARGS} are supported"),
                })?;
            }
            StepKind::Ukernel(op) => {
                let refs: Vec<TensorRef<'_>> = args
                    .iter()
                    .zip(&arg_ptrs)
                    // SAFETY: each pointer/length pair is a live slot's bytes.
                    .map(|(&v, &(ptr, len))| TensorRef::new(p.values[v].dtype, &shapes[v], unsafe { slice_or_empty(ptr, len) }))
                    .collect();
                let mut muts: Vec<TensorMut<'_>> = results
                    .iter()
                    .zip(&res_ptrs)
                    // SAFETY: live, distinct result buffers that no argument aliases.
                    .map(|(&v, &(ptr, len))| TensorMut::new(p.values[v].dtype, &shapes[v], unsafe { slice_or_empty_mut(ptr, len) }))
                    .collect();
                let run = if p.weight_t.get(si).copied().unwrap_or(false) { prepack::run_linear_t } else { kernels::run_ukernel };
                run(op, &refs, &mut muts, self.threads).map_err(|e| ExecError::Step {
                    stage: p.name.clone(),
                    step: si,
                    what: kind.describe(),
                    message: e.to_string(),
                })?;
            }
        }
        Ok(())
    }
}

/// Per-run state: the bytes of every value slot and every value's shape.
struct Run<'a> {
    slots: Vec<Slot<'a>>,
    shapes: Vec<Vec<usize>>,
    /// The symbols' values (for the profiler's FLOP counts).
    binds: dim::Bindings,
}

/// Where a value's bytes are during a run (only roots have one).
enum Slot<'a> {
    Empty,
    /// Borrowed: an input tensor, a weight or a load-time constant.
    Ref(&'a [u8]),
    /// Owned: a computed value (or a copied input).
    Buf(AlignedBuf),
}

impl Slot<'_> {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Slot::Empty => None,
            Slot::Ref(b) => Some(b),
            Slot::Buf(b) => Some(b.as_slice()),
        }
    }
}

unsafe fn slice_or_empty<'x>(ptr: *const u8, len: usize) -> &'x [u8] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: forwarded to the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

unsafe fn slice_or_empty_mut<'x>(ptr: *mut u8, len: usize) -> &'x mut [u8] {
    if len == 0 {
        &mut []
    } else {
        // SAFETY: forwarded to the caller.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

/// Bytes of a dense tensor, `None` on overflow.
pub(crate) fn nbytes(shape: &[usize], dtype: ElemType) -> Option<usize> {
    shape.iter().try_fold(dtype.size_bytes(), |a, &d| a.checked_mul(d))
}

/// A memref descriptor for a dense row-major buffer:
/// `[allocated, aligned, offset, sizes…, strides…]`.
pub fn descriptor(ptr: *mut u8, shape: &[usize]) -> Vec<i64> {
    let r = shape.len();
    let mut d = Vec::with_capacity(3 + 2 * r);
    d.extend([ptr as i64, ptr as i64, 0]);
    d.extend(shape.iter().map(|&s| s as i64));
    let mut strides = vec![1i64; r];
    for i in (0..r.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1] as i64;
    }
    d.extend(strides);
    d
}

#[cfg(test)]
#[path = "../tests/exec.rs"]
mod tests;
