//! The host CPU target.
//!
//! Every op that is not a runtime ukernel is generated code: a stage is
//! split into kernels ([`crate::partition`]), each kernel is lowered to an
//! MLIR function on tensors ([`lower`], which documents the kernel ABI),
//! and all kernels of a program are lowered by [`PIPELINE`] to the LLVM
//! dialect and compiled ahead of time into one shared object ([`aot`]).

pub mod aot;
pub mod lower;
pub mod parallel;

use crate::schedule::schedule_program;
use crate::{AotOptions, CompiledProgram, Result, Target};
use omnic_ir::Program;

/// The lowering pipeline from the built module (tensors, linalg, tensor,
/// arith, math, scf, func) to the LLVM dialect:
/// - producer/consumer fusion of elementwise generics (a norm's output
///   generic with the epilogue reading it), canonicalisation;
/// - `eliminate-empty-tensors` then one-shot bufferization: the last op
///   producing each result writes straight into the result buffer; buffers
///   of intermediates are `malloc`ed and freed inside the kernel
///   (ownership-based deallocation);
/// - linalg to loops, scf to cf, memref/affine/index to LLVM;
/// - `math` ops with an LLVM intrinsic go to it (`convert-math-to-llvm`),
///   the rest (`math.erf`, ...) become libm calls (`convert-math-to-libm`);
/// - everything else to the LLVM dialect, casts reconciled.
pub const PIPELINE: &str = "builtin.module(\
linalg-fuse-elementwise-ops,\
canonicalize,\
cse,\
eliminate-empty-tensors,\
one-shot-bufferize,\
func.func(buffer-deallocation-pipeline),\
convert-linalg-to-loops,\
convert-scf-to-cf,\
expand-strided-metadata,\
lower-affine,\
finalize-memref-to-llvm,\
convert-math-to-llvm,\
convert-math-to-libm,\
convert-arith-to-llvm,\
convert-index-to-llvm,\
convert-cf-to-llvm,\
convert-func-to-llvm,\
convert-ub-to-llvm,\
reconcile-unrealized-casts)";

/// The host CPU target.
#[derive(Clone, Debug, Default)]
pub struct CpuTarget;

impl CpuTarget {
    pub const NAME: &'static str = "cpu";
}

impl Target for CpuTarget {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn compile(&self, program: &Program, opts: &AotOptions) -> Result<CompiledProgram> {
        let schedule = schedule_program(program)?;
        let object = aot::compile(&schedule.kernels, opts)?;
        Ok(CompiledProgram { schedule, object })
    }
}
