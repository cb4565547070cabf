//! omnic code generation: target plugins that lower IR stages through MLIR
//! (built with melior) and LLVM (through inkwell) to runnable code.
//!
//! - [`Target`]: the plugin interface; [`target`] looks one up by name
//!   ([`TARGETS`] lists them);
//! - [`cpu`]: the host CPU target. It currently handles stages made of
//!   elementwise ops on static f32 shapes: the whole stage becomes one fused
//!   `linalg.generic` per output shape, lowered to loops and the LLVM dialect,
//!   and can be JIT-run ([`cpu::JitKernel`]) or printed as MLIR / LLVM IR;
//! - [`mlir`]: the shared MLIR plumbing: the one context factory (all
//!   dialects, translations and passes registered), diagnostics capture,
//!   verification, pass pipelines, LLVM IR translation and the JIT engine.
//!
//! Every module built here is verified before it is lowered, and every
//! failure on user input is a [`CodegenError`] naming the op at fault.

pub mod cpu;
pub mod error;
pub mod mlir;

pub use error::{CodegenError, Result};

use omnic_ir::{DType, Stage};

/// What a lowering can print (`omnic --emit mlir|llvm-dialect|llvm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// The module as built: `func.func` on tensors, `linalg.generic`, `arith`, `math`.
    Mlir,
    /// The module after the lowering pipeline, in the LLVM dialect.
    LlvmDialect,
    /// LLVM IR text, translated from the LLVM dialect.
    Llvm,
}

impl Emit {
    pub const ALL: [Emit; 3] = [Emit::Mlir, Emit::LlvmDialect, Emit::Llvm];
    pub fn name(self) -> &'static str {
        match self {
            Emit::Mlir => "mlir",
            Emit::LlvmDialect => "llvm-dialect",
            Emit::Llvm => "llvm",
        }
    }
    pub fn from_name(s: &str) -> Option<Emit> {
        Emit::ALL.into_iter().find(|e| e.name() == s)
    }
}

/// Whether a kernel argument is a stage input or a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    Input,
    Param,
}

/// One tensor argument or result of a compiled kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub kind: ArgKind,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The calling convention of a compiled stage: the kernel `name` (the
/// `func.func` symbol; the C entry point is `_mlir_ciface_<name>`), its
/// arguments (stage inputs in node order, then weights) and its results
/// (the stage outputs in order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSignature {
    pub name: String,
    pub args: Vec<TensorSpec>,
    pub results: Vec<TensorSpec>,
}

/// A stage lowered by a target: its signature and the code at each level.
#[derive(Clone, Debug)]
pub struct LoweredStage {
    pub target: &'static str,
    pub signature: KernelSignature,
    /// The MLIR module as built (tensor level).
    pub mlir: String,
    /// The module after the lowering pipeline (LLVM dialect).
    pub llvm_dialect: String,
    /// LLVM IR text.
    pub llvm_ir: String,
}

impl LoweredStage {
    pub fn emit(&self, what: Emit) -> &str {
        match what {
            Emit::Mlir => &self.mlir,
            Emit::LlvmDialect => &self.llvm_dialect,
            Emit::Llvm => &self.llvm_ir,
        }
    }
}

/// A code generation target.
pub trait Target {
    /// The name it is registered under (`--target NAME`).
    fn name(&self) -> &'static str;
    /// Lower one stage to code. Errors name the first op the target cannot handle.
    fn lower(&self, stage: &Stage) -> Result<LoweredStage>;
}

/// Names of the registered targets.
pub const TARGETS: &[&str] = &[cpu::CpuTarget::NAME];

/// The target registered as `name`.
pub fn target(name: &str) -> Result<Box<dyn Target>> {
    match name {
        cpu::CpuTarget::NAME => Ok(Box::new(cpu::CpuTarget)),
        _ => Err(CodegenError::UnknownTarget { name: name.to_string(), available: TARGETS.join(", ") }),
    }
}
