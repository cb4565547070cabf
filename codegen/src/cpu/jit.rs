//! Calling a JIT-compiled stage kernel.
//!
//! With `llvm.emit_c_interface`, `func.func @k(tensor…) -> (tensor…)`
//! bufferizes to memrefs and gets the C entry point
//! `void _mlir_ciface_k(Results *out, Desc *arg0, Desc *arg1, …)` where each
//! `Desc` is a memref descriptor `{T *allocated, T *aligned, i64 offset,
//! i64 sizes[R], i64 strides[R]}` and `Results` packs one descriptor per
//! result (just the descriptor for one result). The engine's packed wrapper
//! `_mlir__mlir_ciface_k(void **args)` takes a pointer to each of those
//! pointer arguments. Every result is a fresh `malloc`ed buffer (each output
//! is its own `linalg.generic` result over a `tensor.empty`), which is copied
//! out and freed here.

use crate::error::{CodegenError, Result};
use crate::mlir::Engine;
use crate::{ArgKind, KernelSignature, TensorSpec};
use omnic_ir::eval::{Tensor, WeightStore};
use omnic_ir::DType;
use std::collections::HashMap;
use std::ffi::c_void;

extern "C" {
    /// The C library's `free`, matching the `malloc` that
    /// `finalize-memref-to-llvm` emits (the JIT resolves it from this process).
    fn free(ptr: *mut c_void);
}

/// A stage compiled for the host, ready to run.
pub struct JitKernel {
    signature: KernelSignature,
    entry: unsafe extern "C" fn(*mut *mut c_void),
    // Keeps the code `entry` points into alive.
    _engine: Engine,
}

/// Words (8 bytes each) of a rank-`r` memref descriptor.
fn desc_words(rank: usize) -> usize {
    3 + 2 * rank
}

fn row_major_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

impl JitKernel {
    pub(crate) fn new(engine: Engine, signature: KernelSignature) -> Result<JitKernel> {
        let entry = engine.lookup_packed(&format!("_mlir_ciface_{}", signature.name))?;
        Ok(JitKernel { signature, entry, _engine: engine })
    }

    pub fn signature(&self) -> &KernelSignature {
        &self.signature
    }

    fn err(&self, message: String) -> CodegenError {
        CodegenError::Run { kernel: self.signature.name.clone(), message }
    }

    /// Run on flat row-major f32 buffers, one per argument in signature
    /// order; returns one buffer per result.
    pub fn run_f32(&self, args: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let sig = &self.signature;
        if args.len() != sig.args.len() {
            return Err(self.err(format!("expects {} arguments, got {}", sig.args.len(), args.len())));
        }
        // Argument descriptors (the kernel only reads its arguments).
        let mut descs: Vec<Vec<i64>> = Vec::with_capacity(args.len());
        for (spec, data) in sig.args.iter().zip(args) {
            if data.len() != spec.numel() {
                return Err(self.err(format!("argument `{}` has {} elements, expected {} (shape {:?})", spec.name, data.len(), spec.numel(), spec.shape)));
            }
            let p = data.as_ptr() as i64;
            let mut d = vec![p, p, 0];
            d.extend(spec.shape.iter().map(|&s| s as i64));
            d.extend(row_major_strides(&spec.shape));
            descs.push(d);
        }
        let mut out: Vec<i64> = vec![0; sig.results.iter().map(|r| desc_words(r.shape.len())).sum()];

        let mut arg_ptrs: Vec<*mut i64> = Vec::with_capacity(1 + descs.len());
        arg_ptrs.push(out.as_mut_ptr());
        arg_ptrs.extend(descs.iter_mut().map(|d| d.as_mut_ptr()));
        let mut packed: Vec<*mut c_void> = arg_ptrs.iter_mut().map(|p| p as *mut *mut i64 as *mut c_void).collect();
        // SAFETY: `packed` holds one pointer per C-interface parameter (result
        // struct first), each pointing at a live descriptor laid out as
        // documented above; the kernel reads `numel` f32s from each argument.
        unsafe { (self.entry)(packed.as_mut_ptr()) };

        // Copy the results out and free their buffers (all of them, even if
        // one is malformed, before reporting).
        let mut results = Vec::with_capacity(sig.results.len());
        let mut problem = None;
        let mut off = 0;
        for spec in &sig.results {
            let r = spec.shape.len();
            let d = &out[off..off + desc_words(r)];
            off += desc_words(r);
            let (allocated, aligned, offset) = (d[0] as *mut c_void, d[1] as *const f32, d[2]);
            let (sizes, strides) = (&d[3..3 + r], &d[3 + r..3 + 2 * r]);
            let n = spec.numel();
            if sizes.iter().zip(&spec.shape).any(|(&a, &b)| a != b as i64) {
                problem.get_or_insert(format!("result `{}` came back with sizes {sizes:?}, expected {:?}", spec.name, spec.shape));
                results.push(Vec::new());
            } else if n > 0 && aligned.is_null() {
                problem.get_or_insert(format!("result `{}` came back without data", spec.name));
                results.push(Vec::new());
            } else {
                let mut v = Vec::with_capacity(n);
                let mut idx = vec![0usize; r];
                for _ in 0..n {
                    let lin: i64 = offset + idx.iter().zip(strides).map(|(&i, &s)| i as i64 * s).sum::<i64>();
                    // SAFETY: in bounds of the result buffer the kernel
                    // allocated with these sizes and strides.
                    v.push(unsafe { *aligned.offset(lin as isize) });
                    for a in (0..r).rev() {
                        idx[a] += 1;
                        if idx[a] < spec.shape[a] {
                            break;
                        }
                        idx[a] = 0;
                    }
                }
                results.push(v);
            }
            // SAFETY: each result is a distinct buffer `malloc`ed by the kernel.
            unsafe { free(allocated) };
        }
        match problem {
            Some(p) => Err(self.err(p)),
            None => Ok(results),
        }
    }

    /// Run like [`omnic_ir::eval::evaluate`]: named inputs, weights from a
    /// store, named outputs.
    pub fn run(&self, inputs: &HashMap<String, Tensor>, weights: &dyn WeightStore) -> Result<HashMap<String, Tensor>> {
        let mut bufs: Vec<Vec<f32>> = Vec::with_capacity(self.signature.args.len());
        for spec in &self.signature.args {
            let t = match spec.kind {
                ArgKind::Input => inputs.get(&spec.name).cloned().ok_or_else(|| self.err(format!("missing input `{}`", spec.name)))?,
                ArgKind::Param => weights.weight(&spec.name).map_err(|e| self.err(e))?,
            };
            check(spec, &t).map_err(|m| self.err(m))?;
            bufs.push(t.to_f32_vec());
        }
        let refs: Vec<&[f32]> = bufs.iter().map(|b| b.as_slice()).collect();
        let outs = self.run_f32(&refs)?;
        Ok(self.signature.results.iter().zip(outs).map(|(spec, v)| (spec.name.clone(), Tensor::from_f32(&spec.shape, &v))).collect())
    }
}

fn check(spec: &TensorSpec, t: &Tensor) -> std::result::Result<(), String> {
    if t.dtype != DType::F32 || t.shape != spec.shape || t.floats().map(|f| f.len()).unwrap_or(0) != spec.numel() {
        return Err(format!("`{}` is {}{:?} but the kernel expects {}{:?}", spec.name, t.dtype, t.shape, spec.dtype, spec.shape));
    }
    Ok(())
}
