//! Ahead-of-time compilation of kernels to one shared object.
//!
//! All kernels go into one MLIR module (plus the `memref.copy` helper
//! below), which [`PIPELINE`] lowers to the LLVM dialect; it is translated
//! to LLVM IR, optimised with `default<O3>` for the target machine (the
//! host CPU and its features by default, or a named CPU such as
//! `x86-64-v3`), emitted as a position-independent object and linked into
//! a shared object with `cc -shared … -lm` (or another linker command).
//! The result is the `.so` bytes, the kernel symbols and the target the
//! code needs ([`TargetInfo`]: triple, CPU, features named as the runtime
//! checks them).
//!
//! The generated code calls only `malloc`/`free` (intermediate buffers
//! inside a kernel), `memcpy`/`memset` and libm; anything else is an error
//! at compile time rather than a failed `dlopen` later. MLIR lowers copies
//! between strided buffers to calls of `memrefCopy` from its C runner
//! library; we do not link that library but compile [`MEMREF_COPY`] into
//! the object and redirect those calls to it.

use super::PIPELINE;
use crate::error::{CodegenError, Result};
use crate::mlir::{translate_to_llvm, MlirContext};
use crate::schedule::KernelSource;
use crate::Emit;
use inkwell::module::Linkage;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine};
use inkwell::OptimizationLevel;
use omnic_runtime::artifact::manifest::TargetInfo;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of AOT compilation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AotOptions {
    /// CPU to generate code for: `None` for the host's (its name and
    /// features), or an LLVM CPU name (`x86-64-v3`, `znver4`, ...).
    pub cpu: Option<String>,
    /// LLVM feature string (`+avx2,+fma`) added to the CPU's. Required for
    /// named CPUs other than the x86-64 levels (`x86-64`, `x86-64-v2/3/4`),
    /// whose feature sets are known here, so the artifact can say what it
    /// needs.
    pub features: Option<String>,
    /// LLVM optimisation level 0–3 (`default<Ok>`).
    pub opt_level: u8,
    /// The linker command (`cc` by default): called as
    /// `LINKER -shared -o OUT.so OBJ.o -lm`.
    pub linker: Option<String>,
}

impl Default for AotOptions {
    fn default() -> Self {
        AotOptions { cpu: None, features: None, opt_level: 3, linker: None }
    }
}

/// Time spent in each phase of [`compile`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Parsing, verifying and lowering the MLIR module.
    pub mlir: Duration,
    /// Translation to LLVM IR and `default<O3>`.
    pub llvm: Duration,
    /// Object code emission.
    pub codegen: Duration,
    /// Linking the shared object.
    pub link: Duration,
}

impl Timings {
    pub fn total(&self) -> Duration {
        self.mlir + self.llvm + self.codegen + self.link
    }
}

/// A compiled code object.
#[derive(Clone, Debug)]
pub struct SharedObject {
    /// The shared object file.
    pub bytes: Vec<u8>,
    /// Kernel symbols (each callable as `_mlir_ciface_<symbol>`), in order.
    pub symbols: Vec<String>,
    pub target: TargetInfo,
    pub timings: Timings,
}

/// Name of the copy helper (internal linkage in the object).
const COPY_FN: &str = "omnic_memref_copy";

/// `memrefCopy(elem_size, UnrankedMemRef *src, UnrankedMemRef *dst)` as in
/// MLIR's C runner library: copies a strided `src` into a strided `dst` of
/// the same sizes, one `memcpy` per innermost row when both rows are
/// contiguous, per element otherwise (a 4-byte load/store for 4-byte
/// elements rather than a `memcpy` call). The innermost row is the last
/// dimension of size ≠ 1 (trailing unit dimensions, as in a slice
/// `[…, 32, 1]` of interleaved pairs, would make every row one element and
/// the per-row index arithmetic the whole cost).
pub const MEMREF_COPY: &str = r#"func.func @omnic_memref_copy(%es: i64, %src: !llvm.ptr, %dst: !llvm.ptr) {
  %c0 = arith.constant 0 : i64
  %c1 = arith.constant 1 : i64
  %i0 = arith.constant 0 : index
  %i1 = arith.constant 1 : index
  %rank = llvm.load %src : !llvm.ptr -> i64
  %sdp = llvm.getelementptr %src[8] : (!llvm.ptr) -> !llvm.ptr, i8
  %sd = llvm.load %sdp : !llvm.ptr -> !llvm.ptr
  %ddp = llvm.getelementptr %dst[8] : (!llvm.ptr) -> !llvm.ptr, i8
  %dd = llvm.load %ddp : !llvm.ptr -> !llvm.ptr
  %sap = llvm.getelementptr %sd[8] : (!llvm.ptr) -> !llvm.ptr, i8
  %sa = llvm.load %sap : !llvm.ptr -> !llvm.ptr
  %sop = llvm.getelementptr %sd[16] : (!llvm.ptr) -> !llvm.ptr, i8
  %so = llvm.load %sop : !llvm.ptr -> i64
  %dap = llvm.getelementptr %dd[8] : (!llvm.ptr) -> !llvm.ptr, i8
  %da = llvm.load %dap : !llvm.ptr -> !llvm.ptr
  %dop = llvm.getelementptr %dd[16] : (!llvm.ptr) -> !llvm.ptr, i8
  %do = llvm.load %dop : !llvm.ptr -> i64
  %ssz = llvm.getelementptr %sd[24] : (!llvm.ptr) -> !llvm.ptr, i8
  %sst = llvm.getelementptr %ssz[%rank] : (!llvm.ptr, i64) -> !llvm.ptr, i64
  %dsz = llvm.getelementptr %dd[24] : (!llvm.ptr) -> !llvm.ptr, i8
  %dst2 = llvm.getelementptr %dsz[%rank] : (!llvm.ptr, i64) -> !llvm.ptr, i64
  %is0 = arith.cmpi eq, %rank, %c0 : i64
  scf.if %is0 {
    %sob = arith.muli %so, %es : i64
    %dob = arith.muli %do, %es : i64
    %sp2 = llvm.getelementptr %sa[%sob] : (!llvm.ptr, i64) -> !llvm.ptr, i8
    %dp2 = llvm.getelementptr %da[%dob] : (!llvm.ptr, i64) -> !llvm.ptr, i8
    "llvm.intr.memcpy"(%dp2, %sp2, %es) <{isVolatile = false}> : (!llvm.ptr, !llvm.ptr, i64) -> ()
  } else {
    %ranki = arith.index_cast %rank : i64 to index
    %last = scf.for %d = %i0 to %ranki step %i1 iter_args(%acc = %c0) -> (i64) {
      %di = arith.index_cast %d : index to i64
      %p = llvm.getelementptr %ssz[%di] : (!llvm.ptr, i64) -> !llvm.ptr, i64
      %s = llvm.load %p : !llvm.ptr -> i64
      %big = arith.cmpi ne, %s, %c1 : i64
      %m = arith.select %big, %di, %acc : i64
      scf.yield %m : i64
    }
    %inp = llvm.getelementptr %ssz[%last] : (!llvm.ptr, i64) -> !llvm.ptr, i64
    %inner = llvm.load %inp : !llvm.ptr -> i64
    %sisp = llvm.getelementptr %sst[%last] : (!llvm.ptr, i64) -> !llvm.ptr, i64
    %sis = llvm.load %sisp : !llvm.ptr -> i64
    %disp = llvm.getelementptr %dst2[%last] : (!llvm.ptr, i64) -> !llvm.ptr, i64
    %dis = llvm.load %disp : !llvm.ptr -> i64
    %lasti = arith.index_cast %last : i64 to index
    %outer = scf.for %d = %i0 to %lasti step %i1 iter_args(%acc = %c1) -> (i64) {
      %di = arith.index_cast %d : index to i64
      %p = llvm.getelementptr %ssz[%di] : (!llvm.ptr, i64) -> !llvm.ptr, i64
      %s = llvm.load %p : !llvm.ptr -> i64
      %m = arith.muli %acc, %s : i64
      scf.yield %m : i64
    }
    %a = arith.cmpi eq, %sis, %c1 : i64
    %b = arith.cmpi eq, %dis, %c1 : i64
    %contig = arith.andi %a, %b : i1
    %c4 = arith.constant 4 : i64
    %es4 = arith.cmpi eq, %es, %c4 : i64
    %outeri = arith.index_cast %outer : i64 to index
    %inneri = arith.index_cast %inner : i64 to index
    %rowbytes = arith.muli %inner, %es : i64
    scf.for %o = %i0 to %outeri step %i1 {
      %oi = arith.index_cast %o : index to i64
      %r:3 = scf.for %k = %i0 to %lasti step %i1 iter_args(%rem = %oi, %soff = %so, %doff = %do) -> (i64, i64, i64) {
        %ki = arith.index_cast %k : index to i64
        %dd1 = arith.subi %last, %ki : i64
        %d = arith.subi %dd1, %c1 : i64
        %p = llvm.getelementptr %ssz[%d] : (!llvm.ptr, i64) -> !llvm.ptr, i64
        %sz = llvm.load %p : !llvm.ptr -> i64
        %idx = arith.remui %rem, %sz : i64
        %rem2 = arith.divui %rem, %sz : i64
        %sp = llvm.getelementptr %sst[%d] : (!llvm.ptr, i64) -> !llvm.ptr, i64
        %ss = llvm.load %sp : !llvm.ptr -> i64
        %dp = llvm.getelementptr %dst2[%d] : (!llvm.ptr, i64) -> !llvm.ptr, i64
        %ds = llvm.load %dp : !llvm.ptr -> i64
        %t1 = arith.muli %idx, %ss : i64
        %soff2 = arith.addi %soff, %t1 : i64
        %t2 = arith.muli %idx, %ds : i64
        %doff2 = arith.addi %doff, %t2 : i64
        scf.yield %rem2, %soff2, %doff2 : i64, i64, i64
      }
      scf.if %contig {
        %sb = arith.muli %r#1, %es : i64
        %db = arith.muli %r#2, %es : i64
        %sp = llvm.getelementptr %sa[%sb] : (!llvm.ptr, i64) -> !llvm.ptr, i8
        %dp = llvm.getelementptr %da[%db] : (!llvm.ptr, i64) -> !llvm.ptr, i8
        "llvm.intr.memcpy"(%dp, %sp, %rowbytes) <{isVolatile = false}> : (!llvm.ptr, !llvm.ptr, i64) -> ()
      } else {
        scf.if %es4 {
          scf.for %i = %i0 to %inneri step %i1 {
            %ii = arith.index_cast %i : index to i64
            %u = arith.muli %ii, %sis : i64
            %v = arith.addi %r#1, %u : i64
            %u2 = arith.muli %ii, %dis : i64
            %v2 = arith.addi %r#2, %u2 : i64
            %sp = llvm.getelementptr %sa[%v] : (!llvm.ptr, i64) -> !llvm.ptr, i32
            %dp = llvm.getelementptr %da[%v2] : (!llvm.ptr, i64) -> !llvm.ptr, i32
            %x = llvm.load %sp : !llvm.ptr -> i32
            llvm.store %x, %dp : i32, !llvm.ptr
          }
        } else {
          scf.for %i = %i0 to %inneri step %i1 {
            %ii = arith.index_cast %i : index to i64
            %u = arith.muli %ii, %sis : i64
            %v = arith.addi %r#1, %u : i64
            %sb = arith.muli %v, %es : i64
            %u2 = arith.muli %ii, %dis : i64
            %v2 = arith.addi %r#2, %u2 : i64
            %db = arith.muli %v2, %es : i64
            %sp = llvm.getelementptr %sa[%sb] : (!llvm.ptr, i64) -> !llvm.ptr, i8
            %dp = llvm.getelementptr %da[%db] : (!llvm.ptr, i64) -> !llvm.ptr, i8
            "llvm.intr.memcpy"(%dp, %sp, %es) <{isVolatile = false}> : (!llvm.ptr, !llvm.ptr, i64) -> ()
          }
        }
      }
    }
  }
  return
}
"#;

/// Functions generated code may call besides LLVM intrinsics.
const ALLOWED_EXTERNS: &[&str] = &[
    "malloc",
    "free",
    "aligned_alloc",
    "memcpy",
    "memmove",
    "memset",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "cbrt",
    "ceil",
    "copysign",
    "cos",
    "cosh",
    "erf",
    "erfc",
    "exp",
    "exp2",
    "expm1",
    "fabs",
    "floor",
    "fma",
    "fmod",
    "log",
    "log10",
    "log1p",
    "log2",
    "pow",
    "round",
    "roundeven",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
];

fn extern_allowed(name: &str) -> bool {
    ALLOWED_EXTERNS.contains(&name) || name.strip_suffix('f').is_some_and(|b| ALLOWED_EXTERNS.contains(&b))
}

/// The x86-64 micro-architecture levels (psABI), as runtime feature names.
fn level_features(cpu: &str) -> Option<Vec<&'static str>> {
    const V1: &[&str] = &["sse", "sse2", "fxsr", "mmx"];
    const V2: &[&str] = &["cmpxchg16b", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3"];
    const V3: &[&str] = &["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"];
    const V4: &[&str] = &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
    let levels: &[&[&str]] = match cpu {
        "x86-64" => &[V1],
        "x86-64-v2" => &[V1, V2],
        "x86-64-v3" => &[V1, V2, V3],
        "x86-64-v4" => &[V1, V2, V3, V4],
        _ => return None,
    };
    Some(levels.iter().flat_map(|l| l.iter().copied()).collect())
}

/// Enabled features of an LLVM feature string (`+a,-b`), as the runtime
/// names them (features the runtime does not know are left out).
fn enabled_features(s: &str) -> Vec<String> {
    s.split(',')
        .filter_map(|f| f.strip_prefix('+'))
        .map(|f| match f {
            "bmi" => "bmi1",
            "cx16" => "cmpxchg16b",
            "pclmul" => "pclmulqdq",
            "rdrnd" => "rdrand",
            other => other,
        })
        .filter(|f| omnic_runtime::artifact::host::cpu_has_feature(f).is_some())
        .map(str::to_string)
        .collect()
}

/// A target machine for `opts` and the target description for the artifact.
fn target_machine(opts: &AotOptions) -> Result<(TargetMachine, TargetInfo)> {
    Target::initialize_native(&InitializationConfig::default()).map_err(|e| CodegenError::Internal(format!("LLVM native target: {e}")))?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| CodegenError::Internal(format!("LLVM target for {triple}: {e}")))?;
    let (cpu, llvm_features, mut features) = match &opts.cpu {
        None => {
            let cpu = TargetMachine::get_host_cpu_name().to_string();
            let mut host = TargetMachine::get_host_cpu_features().to_string();
            // LLVM tunes Intel server CPUs to prefer 256-bit vectors; the
            // elementwise kernels (polynomial exp/tanh) measured faster with
            // 512-bit ones.
            if host.split(',').any(|f| f == "+avx512f") {
                host.push_str(",-prefer-256-bit");
            }
            let all = match &opts.features {
                Some(extra) if !extra.is_empty() => format!("{host},{extra}"),
                _ => host,
            };
            let f = enabled_features(&all);
            (cpu, all, f)
        }
        Some(cpu) => {
            let extra = opts.features.clone().unwrap_or_default();
            let mut f: Vec<String> = match level_features(cpu) {
                Some(l) => l.into_iter().filter(|f| omnic_runtime::artifact::host::cpu_has_feature(f).is_some()).map(str::to_string).collect(),
                None if opts.features.is_some() => Vec::new(),
                None => {
                    return Err(CodegenError::Internal(format!(
                        "cpu `{cpu}`: its feature set is not known here; give the features it may use (e.g. `+avx2,+fma`) or use x86-64, x86-64-v2, x86-64-v3, x86-64-v4 or the host"
                    )))
                }
            };
            f.extend(enabled_features(&extra));
            (cpu.clone(), extra, f)
        }
    };
    features.sort();
    features.dedup();
    let level = match opts.opt_level {
        0 => OptimizationLevel::None,
        1 => OptimizationLevel::Less,
        2 => OptimizationLevel::Default,
        _ => OptimizationLevel::Aggressive,
    };
    let tm = target
        .create_target_machine(&triple, &cpu, &llvm_features, level, RelocMode::PIC, CodeModel::Default)
        .ok_or_else(|| CodegenError::Internal(format!("LLVM cannot create a target machine for {triple}, cpu `{cpu}`, features `{llvm_features}`")))?;
    let info = TargetInfo { name: super::CpuTarget::NAME.to_string(), triple: triple.as_str().to_string_lossy().into_owned(), cpu, features };
    Ok((tm, info))
}

/// The MLIR module text for `kernels` (and the copy helper).
pub fn module_text(kernels: &[KernelSource]) -> String {
    let mut s = String::from("module {\n");
    for k in kernels {
        s.push_str(&k.mlir);
    }
    s.push_str(MEMREF_COPY);
    s.push_str("}\n");
    s
}

/// Lower MLIR module text to an optimised LLVM module in `llvm`.
fn to_llvm<'l>(
    text: &str,
    llvm: &'l inkwell::context::Context,
    tm: &TargetMachine,
    opts: &AotOptions,
    threads: bool,
    timings: &mut Timings,
) -> Result<inkwell::module::Module<'l>> {
    let t0 = Instant::now();
    let ctx = MlirContext::with_threading(threads);
    let mut module = ctx.parse(text, "generated kernels")?;
    ctx.run_pipeline(&mut module, PIPELINE)?;
    timings.mlir += t0.elapsed();
    let t1 = Instant::now();
    let m = translate_to_llvm(&module, llvm)?;
    drop(module);
    m.set_triple(&tm.get_triple());
    m.set_data_layout(&tm.get_target_data().get_data_layout());
    // Calls to MLIR's runtime copy go to our helper.
    let helper = m.get_function(COPY_FN).ok_or_else(|| CodegenError::Internal("copy helper missing after lowering".into()))?;
    if let Some(decl) = m.get_function("memrefCopy") {
        decl.replace_all_uses_with(helper);
        // SAFETY: a declaration without uses (all replaced just above).
        unsafe { decl.delete() };
    }
    helper.set_linkage(Linkage::Internal);
    for f in m.get_functions() {
        let name = f.get_name().to_string_lossy().into_owned();
        if f.count_basic_blocks() == 0 && !name.starts_with("llvm.") && !extern_allowed(&name) {
            return Err(CodegenError::Internal(format!("generated code calls `{name}`, which the shared object cannot provide")));
        }
    }
    let level = opts.opt_level.min(3);
    m.run_passes(&format!("default<O{level}>"), tm, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Translate(format!("LLVM optimisation: {}", e.to_string())))?;
    m.verify().map_err(|e| CodegenError::Translate(format!("LLVM verifier after optimisation: {}", e.to_string())))?;
    timings.llvm += t1.elapsed();
    Ok(m)
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("omnic-aot-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&p).map_err(|e| CodegenError::Internal(format!("creating {}: {e}", p.display())))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Link an object file into a shared object.
fn link(object: &[u8], opts: &AotOptions) -> Result<Vec<u8>> {
    let dir = TempDir::new()?;
    let obj = dir.0.join("kernels.o");
    let so = dir.0.join("kernels.so");
    std::fs::write(&obj, object).map_err(|e| CodegenError::Internal(format!("writing {}: {e}", obj.display())))?;
    let linker = opts.linker.clone().unwrap_or_else(|| "cc".to_string());
    let out = std::process::Command::new(&linker)
        .arg("-shared")
        .arg("-o")
        .arg(&so)
        .arg(&obj)
        .arg("-lm")
        .output()
        .map_err(|e| CodegenError::Internal(format!("running the linker `{linker}`: {e}")))?;
    if !out.status.success() {
        return Err(CodegenError::Internal(format!("linker `{linker}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    std::fs::read(&so).map_err(|e| CodegenError::Internal(format!("reading {}: {e}", so.display())))
}

/// Compile `kernels` into one shared object (see the module doc).
pub fn compile(kernels: &[KernelSource], opts: &AotOptions) -> Result<SharedObject> {
    let (tm, target) = target_machine(opts)?;
    let mut timings = Timings::default();
    let llvm = inkwell::context::Context::create();
    let m = to_llvm(&module_text(kernels), &llvm, &tm, opts, kernels.len() > 8, &mut timings)?;
    let t = Instant::now();
    let obj = tm.write_to_memory_buffer(&m, FileType::Object).map_err(|e| CodegenError::Translate(format!("object emission: {}", e.to_string())))?;
    timings.codegen = t.elapsed();
    let t = Instant::now();
    let bytes = link(obj.as_slice(), opts)?;
    timings.link = t.elapsed();
    Ok(SharedObject { bytes, symbols: kernels.iter().map(|k| k.symbol.clone()).collect(), target, timings })
}

/// One kernel at level `what`: the MLIR as built, the module after the
/// lowering pipeline, the optimised LLVM IR or the assembly.
pub fn emit(kernel: &KernelSource, what: Emit, opts: &AotOptions) -> Result<String> {
    if what == Emit::Mlir {
        return Ok(kernel.mlir.clone());
    }
    let text = format!("module {{\n{}}}\n", kernel.mlir);
    if what == Emit::LlvmDialect {
        let ctx = MlirContext::new();
        let mut module = ctx.parse(&text, "kernel")?;
        ctx.run_pipeline(&mut module, PIPELINE)?;
        return Ok(module.as_operation().to_string());
    }
    let (tm, _) = target_machine(opts)?;
    let llvm = inkwell::context::Context::create();
    let m = to_llvm(&module_text(std::slice::from_ref(kernel)), &llvm, &tm, opts, false, &mut Timings::default())?;
    match what {
        Emit::Llvm => Ok(m.print_to_string().to_string()),
        _ => {
            let buf =
                tm.write_to_memory_buffer(&m, FileType::Assembly).map_err(|e| CodegenError::Translate(format!("assembly emission: {}", e.to_string())))?;
            Ok(String::from_utf8_lossy(buf.as_slice()).into_owned())
        }
    }
}

/// Write every kernel at every level into `dir`: `<symbol>.mlir` (as built),
/// `<symbol>.lowered.mlir` (LLVM dialect), `<symbol>.ll` (optimised LLVM
/// IR), `<symbol>.s`, and `kernels.txt` listing each kernel's origin and
/// number of uses. Returns the files written.
pub fn dump(dir: &Path, kernels: &[KernelSource], opts: &AotOptions) -> Result<Vec<PathBuf>> {
    let io = |p: &Path, e: std::io::Error| CodegenError::Internal(format!("writing {}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut files = Vec::new();
    let mut index = String::new();
    for k in kernels {
        index.push_str(&format!("{}\tuses {}\t{}\n", k.symbol, k.uses, k.origin));
        for (what, ext) in [(Emit::Mlir, "mlir"), (Emit::LlvmDialect, "lowered.mlir"), (Emit::Llvm, "ll"), (Emit::Asm, "s")] {
            let p = dir.join(format!("{}.{ext}", k.symbol));
            std::fs::write(&p, emit(k, what, opts)?).map_err(|e| io(&p, e))?;
            files.push(p);
        }
    }
    let p = dir.join("kernels.txt");
    std::fs::write(&p, index).map_err(|e| io(&p, e))?;
    files.push(p);
    Ok(files)
}
