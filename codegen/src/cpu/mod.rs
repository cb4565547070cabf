//! The host CPU target.
//!
//! Current scope (the first step of CPU code generation): stages made of
//! elementwise ops — `input`, `param`, `constant`, every [`UnaryOp`] and
//! [`BinaryOp`] — on f32 tensors with static shapes and NumPy broadcasting.
//! Each distinct output shape becomes one fused `linalg.generic` whose body
//! computes the whole expression DAG per element with `arith`/`math` ops
//! (see [`elementwise`]); the module is lowered by [`PIPELINE`] to the LLVM
//! dialect, then JIT-compiled ([`JitKernel`]) or translated to LLVM IR.
//!
//! [`UnaryOp`]: omnic_ir::UnaryOp
//! [`BinaryOp`]: omnic_ir::BinaryOp

pub mod elementwise;
mod jit;

pub use jit::JitKernel;

use crate::error::Result;
use crate::mlir::{translate_to_llvm_ir, Engine, MlirContext};
use crate::{KernelSignature, LoweredStage, Target};
use melior::ir::Module;
use omnic_ir::Stage;

/// The lowering pipeline from the built module (tensors, linalg, arith,
/// math, func) to the LLVM dialect:
/// - one-shot bufferization across function boundaries with identity
///   layouts, so the C interface sees plain row-major memref descriptors
///   (each result is a fresh `malloc`ed buffer the caller frees);
/// - linalg to scf loops to cf;
/// - `math` ops with an LLVM intrinsic go to it (`convert-math-to-llvm`),
///   the rest (`math.erf`, ...) become libm calls (`convert-math-to-libm`),
///   resolved by the JIT from the process or by the linker;
/// - everything else to the LLVM dialect, casts reconciled.
pub const PIPELINE: &str = "builtin.module(\
one-shot-bufferize{bufferize-function-boundaries=1 function-boundary-type-conversion=identity-layout-map},\
convert-linalg-to-loops,\
convert-scf-to-cf,\
expand-strided-metadata,\
lower-affine,\
finalize-memref-to-llvm,\
convert-math-to-llvm,\
convert-math-to-libm,\
convert-arith-to-llvm,\
convert-cf-to-llvm,\
convert-func-to-llvm,\
reconcile-unrealized-casts)";

/// LLVM optimisation level used by the JIT.
pub const JIT_OPT_LEVEL: u32 = 3;

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

    fn lower(&self, stage: &Stage) -> Result<LoweredStage> {
        let plan = elementwise::plan(stage)?;
        let ctx = MlirContext::new();
        let mut module = elementwise::build_module(&ctx, &plan)?;
        let mlir = module.as_operation().to_string();
        ctx.run_pipeline(&mut module, PIPELINE)?;
        let llvm_dialect = module.as_operation().to_string();
        let llvm_ir = translate_to_llvm_ir(&module)?;
        Ok(LoweredStage { target: Self::NAME, signature: plan.signature, mlir, llvm_dialect, llvm_ir })
    }
}

/// Build, lower and JIT-compile a stage for the host.
pub fn jit(stage: &Stage) -> Result<JitKernel> {
    let plan = elementwise::plan(stage)?;
    let ctx = MlirContext::new();
    let engine = {
        let mut module: Module = elementwise::build_module(&ctx, &plan)?;
        ctx.run_pipeline(&mut module, PIPELINE)?;
        Engine::new(&module, JIT_OPT_LEVEL)?
        // The engine holds its own LLVM module; the MLIR one can go.
    };
    JitKernel::new(engine, plan.signature)
}

/// The kernel signature the cpu target would give `stage`, or the error
/// naming the first op it cannot handle (cheap: builds no MLIR).
pub fn signature(stage: &Stage) -> Result<KernelSignature> {
    Ok(elementwise::plan(stage)?.signature)
}
