//! Code objects: a shared object from the artifact loaded without touching
//! the file system (Linux `memfd_create`, else a temporary file removed
//! right after `dlopen`), its kernels resolved once by symbol, and called
//! through arity trampolines.
//!
//! Calling convention (see [`crate::artifact::manifest::Step::Kernel`]):
//! `void _mlir_ciface_<symbol>(D0*, D1*, …)`, one pointer to a memref
//! descriptor per argument, then per result. A rank-`R` descriptor is
//! `{ i64 allocated, i64 aligned, i64 offset, i64 sizes[R], i64 strides[R] }`
//! (rank 0: the first three fields). Results are preallocated by the
//! runtime, row-major and contiguous; the kernel writes every element.

use std::ffi::c_void;
use std::path::PathBuf;

/// Most memref arguments (args + results) a kernel call may take.
pub const MAX_KERNEL_ARGS: usize = 32;

/// Prefix of the C-interface entry point of a kernel symbol.
pub const CIFACE_PREFIX: &str = "_mlir_ciface_";

/// The address of a resolved kernel entry point (the library that defines
/// it is kept loaded by the [`CodeLibrary`] it came from).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPtr(usize);

impl KernelPtr {
    /// A function address as a kernel pointer (tests).
    #[cfg(test)]
    pub(crate) fn from_fn_addr(addr: usize) -> KernelPtr {
        KernelPtr(addr)
    }
}

struct Loaded {
    name: String,
    lib: libloading::Library,
    /// The anonymous file backing the library (kept open while loaded).
    _file: Option<std::fs::File>,
}

/// Every code object of an artifact, loaded.
pub struct CodeLibrary {
    objects: Vec<Loaded>,
}

impl std::fmt::Debug for CodeLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.objects.iter().map(|o| &o.name)).finish()
    }
}

impl CodeLibrary {
    /// Load code objects `(name, bytes)`; an error names the object.
    pub fn load<'a>(objects: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<CodeLibrary, (String, String)> {
        let mut loaded = Vec::new();
        for (name, bytes) in objects {
            let (lib, file) = load_object(name, bytes).map_err(|m| (name.to_string(), m))?;
            loaded.push(Loaded { name: name.to_string(), lib, _file: file });
        }
        Ok(CodeLibrary { objects: loaded })
    }

    /// Names of the loaded objects.
    pub fn names(&self) -> Vec<&str> {
        self.objects.iter().map(|o| o.name.as_str()).collect()
    }

    /// The entry point `_mlir_ciface_<symbol>`, searched in every object.
    pub fn resolve(&self, symbol: &str) -> Option<KernelPtr> {
        let mut name = Vec::with_capacity(CIFACE_PREFIX.len() + symbol.len() + 1);
        name.extend_from_slice(CIFACE_PREFIX.as_bytes());
        name.extend_from_slice(symbol.as_bytes());
        name.push(0);
        self.objects.iter().find_map(|o| {
            // SAFETY: the symbol is only read as an address here; it is called
            // with the kernel ABI by `call_kernel`.
            let sym = unsafe { o.lib.get::<*mut c_void>(&name) }.ok()?;
            let p = *sym as usize;
            (p != 0).then_some(KernelPtr(p))
        })
    }
}

#[cfg(target_os = "linux")]
fn anonymous_file(name: &str, bytes: &[u8]) -> Result<(PathBuf, Option<std::fs::File>), String> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let cname = std::ffi::CString::new(format!("omnirt:{}", name.replace('\0', "_"))).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated name; the returned descriptor is owned below.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return temp_file(name, bytes);
    }
    // SAFETY: `fd` is a fresh descriptor this process owns.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes).map_err(|e| format!("writing to an anonymous file: {e}"))?;
    Ok((PathBuf::from(format!("/proc/self/fd/{fd}")), Some(f)))
}

#[cfg(not(target_os = "linux"))]
fn anonymous_file(name: &str, bytes: &[u8]) -> Result<(PathBuf, Option<std::fs::File>), String> {
    temp_file(name, bytes)
}

/// A temporary file holding `bytes` (removed by the caller after loading).
fn temp_file(name: &str, bytes: &[u8]) -> Result<(PathBuf, Option<std::fs::File>), String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
    let p = std::env::temp_dir().join(format!("omnirt-{}-{}-{safe}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&p, bytes).map_err(|e| format!("writing {}: {e}", p.display()))?;
    Ok((p, None))
}

fn load_object(name: &str, bytes: &[u8]) -> Result<(libloading::Library, Option<std::fs::File>), String> {
    if cfg!(target_os = "linux") && !bytes.starts_with(b"\x7fELF") {
        return Err("not a shared object (no ELF header)".to_string());
    }
    let (path, file) = anonymous_file(name, bytes)?;
    let lib = open_library(&path);
    if file.is_none() {
        // A temporary file: the mapping outlives the name.
        let _ = std::fs::remove_file(&path);
    }
    Ok((lib.map_err(|e| format!("cannot load it: {e}"))?, file))
}

#[cfg(unix)]
fn open_library(path: &std::path::Path) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the object's initialisers; the code comes from a
    // verified artifact produced by omnic.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
}

#[cfg(not(unix))]
fn open_library(path: &std::path::Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: as above.
    unsafe { libloading::Library::new(path) }
}

/// Call a kernel with one descriptor pointer per memref (args then
/// results). `Err(n)` when `n` exceeds [`MAX_KERNEL_ARGS`].
///
/// # Safety
/// `f` must be an entry point of a library that is still loaded, taking
/// exactly `args.len()` descriptor pointers, each valid for the kernel's
/// accesses (see the module doc).
pub unsafe fn call_kernel(f: KernelPtr, args: &mut [*mut c_void]) -> Result<(), usize> {
    let p = f.0 as *const c_void;
    macro_rules! arity {
        (@ty $i:literal) => { *mut c_void };
        ($($i:literal)*) => {{
            // SAFETY: the caller guarantees the signature.
            let g: unsafe extern "C" fn($(arity!(@ty $i)),*) = unsafe { std::mem::transmute::<*const c_void, unsafe extern "C" fn($(arity!(@ty $i)),*)>(p) };
            unsafe { g($(args[$i]),*) }
        }};
    }
    match args.len() {
        0 => arity!(),
        1 => arity!(0),
        2 => arity!(0 1),
        3 => arity!(0 1 2),
        4 => arity!(0 1 2 3),
        5 => arity!(0 1 2 3 4),
        6 => arity!(0 1 2 3 4 5),
        7 => arity!(0 1 2 3 4 5 6),
        8 => arity!(0 1 2 3 4 5 6 7),
        9 => arity!(0 1 2 3 4 5 6 7 8),
        10 => arity!(0 1 2 3 4 5 6 7 8 9),
        11 => arity!(0 1 2 3 4 5 6 7 8 9 10),
        12 => arity!(0 1 2 3 4 5 6 7 8 9 10 11),
        13 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12),
        14 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13),
        15 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
        16 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15),
        17 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
        18 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17),
        19 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18),
        20 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19),
        21 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20),
        22 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21),
        23 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22),
        24 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23),
        25 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24),
        26 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25),
        27 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26),
        28 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27),
        29 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28),
        30 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29),
        31 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30),
        32 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31),
        n => return Err(n),
    }
    Ok(())
}
