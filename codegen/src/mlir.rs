//! Shared MLIR plumbing.
//!
//! Rules that keep melior from crashing (it segfaults rather than erroring):
//! - every context comes from [`MlirContext::new`], which registers and
//!   loads *all* dialects, the LLVM translations and the passes, so no code
//!   ever touches an unloaded dialect;
//! - every module is verified ([`MlirContext::verify`]) before a pass
//!   pipeline, a translation or the JIT sees it;
//! - the JIT is created only from a module that [`check_llvm_dialect`]
//!   accepted, and its creation result is checked (melior's
//!   `ExecutionEngine::new` does not check for failure, so [`Engine`] wraps
//!   the C API directly).

use crate::error::{CodegenError, Result};
use melior::dialect::DialectRegistry;
use melior::ir::operation::{OperationLike, WalkOrder, WalkResult};
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes};
use melior::{Context, StringRef};
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// An MLIR context with everything registered, collecting its diagnostics.
pub struct MlirContext {
    context: Context,
    diagnostics: Arc<Mutex<Vec<String>>>,
}

impl MlirContext {
    /// The one context factory: all dialects registered *and loaded*, all
    /// LLVM translations and all passes registered, multi-threading off
    /// (contexts are short-lived and one per kernel; a thread pool each would
    /// cost more than it gives), diagnostics captured for error messages.
    pub fn new() -> Self {
        Self::with_threading(false)
    }

    /// As [`MlirContext::new`], with MLIR's thread pool on or off (on pays
    /// off for modules with many functions: pass pipelines run per function
    /// in parallel).
    pub fn with_threading(threading: bool) -> Self {
        register_all_passes();
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        let context = Context::new_with_registry(&registry, threading);
        context.load_all_available_dialects();
        register_all_llvm_translations(&context);
        let diagnostics = Arc::new(Mutex::new(Vec::new()));
        let sink = diagnostics.clone();
        context.attach_diagnostic_handler(move |d| {
            let msg = format!("{}: {}", d.location(), d);
            if let Ok(mut v) = sink.lock() {
                v.push(msg);
            }
            true
        });
        MlirContext { context, diagnostics }
    }

    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Diagnostics reported since the last call, one per line.
    pub fn take_diagnostics(&self) -> String {
        let v = self.diagnostics.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        if v.is_empty() {
            "(no diagnostics)".to_string()
        } else {
            v.join("\n")
        }
    }

    /// Parse MLIR text into a verified module; errors carry MLIR's diagnostics.
    pub fn parse(&self, text: &str, what: &str) -> Result<Module<'_>> {
        self.take_diagnostics();
        let m =
            Module::parse(&self.context, text).ok_or_else(|| CodegenError::Verify { what: format!("{what} (parse)"), diagnostics: self.take_diagnostics() })?;
        self.verify(&m, what)?;
        Ok(m)
    }

    /// Verify a module; the error carries MLIR's diagnostics.
    pub fn verify(&self, module: &Module, what: &str) -> Result<()> {
        self.take_diagnostics();
        if module.as_operation().verify() {
            Ok(())
        } else {
            Err(CodegenError::Verify { what: what.to_string(), diagnostics: self.take_diagnostics() })
        }
    }

    /// Run a textual pass pipeline (`builtin.module(...)`) on a verified module.
    pub fn run_pipeline(&self, module: &mut Module, pipeline: &str) -> Result<()> {
        self.verify(module, "module before the pipeline")?;
        let pm = PassManager::new(&self.context);
        let err = |diagnostics: String| CodegenError::Pipeline { pipeline: pipeline.to_string(), diagnostics };
        parse_pass_pipeline(pm.as_operation_pass_manager(), pipeline).map_err(|e| err(e.to_string()))?;
        pm.run(module).map_err(|_| err(self.take_diagnostics()))?;
        self.verify(module, "module after the pipeline")
    }
}

impl Default for MlirContext {
    fn default() -> Self {
        Self::new()
    }
}

/// Error unless every operation in `module` is in the LLVM dialect (what
/// translation and the JIT require).
pub fn check_llvm_dialect(module: &Module) -> Result<()> {
    let mut bad: Vec<String> = Vec::new();
    module.as_operation().walk(WalkOrder::PreOrder, |op| {
        let name = op.name();
        let name = name.as_string_ref().as_str().unwrap_or("?").to_string();
        if name != "builtin.module" && !name.starts_with("llvm.") && !bad.contains(&name) {
            bad.push(name);
        }
        WalkResult::Advance
    });
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CodegenError::Internal(format!("module is not fully lowered to the LLVM dialect; left: {}", bad.join(", "))))
    }
}

/// Translate an LLVM-dialect module to LLVM IR text (through inkwell, so the
/// same LLVM module can later go to a `TargetMachine` for object code).
pub fn translate_to_llvm_ir(module: &Module) -> Result<String> {
    let llvm = inkwell::context::Context::create();
    let m = translate_to_llvm(module, &llvm)?;
    Ok(m.print_to_string().to_string())
}

/// Translate an LLVM-dialect module to a (verified) LLVM module in `llvm`.
pub fn translate_to_llvm<'l>(module: &Module, llvm: &'l inkwell::context::Context) -> Result<inkwell::module::Module<'l>> {
    check_llvm_dialect(module)?;
    // SAFETY: both pointer types name the same C type `LLVMContextRef`
    // (bindgen generated one per -sys crate); the module is verified and in
    // the LLVM dialect, and its context registered the LLVM translations.
    let raw = unsafe { mlir_sys::mlirTranslateModuleToLLVMIR(module.as_operation().to_raw(), llvm.raw() as mlir_sys::LLVMContextRef) };
    if raw.is_null() {
        return Err(CodegenError::Translate("mlirTranslateModuleToLLVMIR returned no module".into()));
    }
    // SAFETY: non-null module created in `llvm`'s context; inkwell owns it
    // and the `'l` lifetime keeps it from outliving the context.
    let m = unsafe { inkwell::module::Module::new(raw as inkwell::llvm_sys::prelude::LLVMModuleRef) };
    m.verify().map_err(|e| CodegenError::Translate(format!("LLVM verifier: {}", e.to_string())))?;
    Ok(m)
}

/// An MLIR `ExecutionEngine` (ORC JIT), created with the failure check
/// melior's wrapper lacks. Owns nothing of the MLIR module it came from.
pub struct Engine {
    raw: mlir_sys::MlirExecutionEngine,
}

impl Engine {
    /// JIT-compile an LLVM-dialect module at LLVM optimisation level `opt` (0–3).
    pub fn new(module: &Module, opt: u32) -> Result<Engine> {
        check_llvm_dialect(module)?;
        // SAFETY: the module is verified and fully in the LLVM dialect; no
        // shared libraries are passed (null pointer with count 0).
        let raw = unsafe { mlir_sys::mlirExecutionEngineCreate(module.to_raw(), opt.min(3) as i32, 0, std::ptr::null(), false, false) };
        if raw.ptr.is_null() {
            return Err(CodegenError::Jit("could not create the execution engine (translation or JIT compilation failed)".into()));
        }
        Ok(Engine { raw })
    }

    /// Address of the packed wrapper `_mlir_<name>` (a `void(void**)`
    /// function taking pointers to each argument, then to the result).
    pub fn lookup_packed(&self, name: &str) -> Result<unsafe extern "C" fn(*mut *mut c_void)> {
        // SAFETY: `raw` is a live engine; the name is copied by MLIR.
        let p = unsafe { mlir_sys::mlirExecutionEngineLookupPacked(self.raw, StringRef::new(name).to_raw()) };
        if p.is_null() {
            return Err(CodegenError::Jit(format!("no function `{name}` in the JIT-compiled module")));
        }
        // SAFETY: packed wrappers generated by the engine have this signature.
        Ok(unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut *mut c_void)>(p) })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: created by mlirExecutionEngineCreate, destroyed once.
        unsafe { mlir_sys::mlirExecutionEngineDestroy(self.raw) }
    }
}
