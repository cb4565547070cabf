//! omnic code generation: target plugins that lower IR stages through MLIR
//! (built as text, parsed and lowered with melior) and LLVM (through
//! inkwell) to runnable code.
//!
//! - [`schedule`]: an IR stage → the runtime's [`StageSchedule`]: generated
//!   kernels, runtime ukernels (linear, matmul, attention, conv, topk, moe) and
//!   views (reshape), with kernels shared by structure ([`KernelCache`]);
//! - [`partition`]: the steps of a stage from its dispatch regions;
//! - [`cpu`]: the host CPU target: [`cpu::lower`] turns a kernel (a set of
//!   IR nodes) into an MLIR function with the kernel ABI documented there,
//!   [`cpu::aot`] compiles all kernels of a program into one shared object;
//! - [`mlir`]: the shared MLIR plumbing: the one context factory (all
//!   dialects, translations and passes registered), diagnostics capture,
//!   verification, pass pipelines, LLVM IR translation and the JIT engine.
//!
//! Every module built here is verified before it is lowered, and every
//! failure on user input is a [`CodegenError`] naming the op at fault.
//!
//! [`StageSchedule`]: omnic_runtime::artifact::manifest::StageSchedule

pub mod cpu;
pub mod error;
pub mod linear_sections;
pub mod mlir;
pub mod partition;
pub mod schedule;

pub use cpu::aot::{AotOptions, SharedObject};
pub use error::{CodegenError, Result};
pub use schedule::{schedule_program, schedule_stage, KernelCache, KernelSource, ProgramSchedule};

use omnic_ir::Program;

/// What a lowering can print (`omnic --emit mlir|llvm-dialect|llvm|asm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// The kernel as built: `func.func` on tensors, `linalg`, `tensor`, `arith`, `math`.
    Mlir,
    /// The kernel after the lowering pipeline, in the LLVM dialect.
    LlvmDialect,
    /// Optimised LLVM IR.
    Llvm,
    /// Assembly for the target CPU.
    Asm,
}

impl Emit {
    pub const ALL: [Emit; 4] = [Emit::Mlir, Emit::LlvmDialect, Emit::Llvm, Emit::Asm];
    pub fn name(self) -> &'static str {
        match self {
            Emit::Mlir => "mlir",
            Emit::LlvmDialect => "llvm-dialect",
            Emit::Llvm => "llvm",
            Emit::Asm => "asm",
        }
    }
    pub fn from_name(s: &str) -> Option<Emit> {
        Emit::ALL.into_iter().find(|e| e.name() == s)
    }
}

/// A program compiled by a target: its schedules and one code object.
#[derive(Clone, Debug)]
pub struct CompiledProgram {
    pub schedule: ProgramSchedule,
    pub object: SharedObject,
}

/// A code generation target.
pub trait Target {
    /// The name it is registered under (`--target NAME`).
    fn name(&self) -> &'static str;
    /// Schedule every stage of `program` and compile its kernels. Errors
    /// name the first op the target cannot handle.
    fn compile(&self, program: &Program, opts: &AotOptions) -> Result<CompiledProgram>;
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
