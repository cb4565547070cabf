//! Can this machine run an artifact? Target triple (architecture and OS)
//! and CPU features, checked at load time.
//!
//! Feature names are those of `std::is_x86_feature_detected!` (which are
//! LLVM's, bar a few: the LLVM spellings `bmi`, `cx16`, `pclmul`, `rdrnd`
//! are accepted too, and a leading `+` as in LLVM feature strings is
//! ignored). AMX (`amx-tile`, `amx-int8`, `amx-bf16`, `amx-fp16`,
//! `amx-complex`) is read from CPUID directly and requires the OS to have
//! enabled tile state (XCR0). On aarch64 the names are those of
//! `std::arch::is_aarch64_feature_detected!`. A name this runtime does not
//! know is an error, never silently accepted.

/// Every feature name [`cpu_has_feature`] knows on this architecture.
#[cfg(target_arch = "x86_64")]
pub const KNOWN_CPU_FEATURES: &[&str] = &[
    "aes",
    "pclmulqdq",
    "rdrand",
    "rdseed",
    "tsc",
    "mmx",
    "sse",
    "sse2",
    "sse3",
    "ssse3",
    "sse4.1",
    "sse4.2",
    "sse4a",
    "sha",
    "avx",
    "avx2",
    "avx512f",
    "avx512cd",
    "avx512er",
    "avx512pf",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512ifma",
    "avx512vbmi",
    "avx512vpopcntdq",
    "avx512vbmi2",
    "avx512vnni",
    "avx512bitalg",
    "avx512bf16",
    "avx512vp2intersect",
    "avx512fp16",
    "avxvnni",
    "avxifma",
    "avxneconvert",
    "avxvnniint8",
    "avxvnniint16",
    "gfni",
    "vaes",
    "vpclmulqdq",
    "f16c",
    "fma",
    "bmi1",
    "bmi2",
    "abm",
    "lzcnt",
    "tbm",
    "popcnt",
    "fxsr",
    "xsave",
    "xsaveopt",
    "xsaves",
    "xsavec",
    "cmpxchg16b",
    "adx",
    "rtm",
    "movbe",
    "ermsb",
    "sha512",
    "sm3",
    "sm4",
    "amx-tile",
    "amx-int8",
    "amx-bf16",
    "amx-fp16",
    "amx-complex",
];

#[cfg(target_arch = "aarch64")]
pub const KNOWN_CPU_FEATURES: &[&str] =
    &["neon", "pmull", "fp", "fp16", "fhm", "dotprod", "i8mm", "bf16", "sve", "sve2", "crc", "lse", "rcpc", "aes", "sha2", "sha3", "rdm", "f32mm", "f64mm"];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const KNOWN_CPU_FEATURES: &[&str] = &[];

/// Whether this CPU has feature `name`; `None` when the name is unknown.
pub fn cpu_has_feature(name: &str) -> Option<bool> {
    let name = name.strip_prefix('+').unwrap_or(name);
    detect(name)
}

#[cfg(target_arch = "x86_64")]
fn detect(name: &str) -> Option<bool> {
    use std::is_x86_feature_detected as has;
    Some(match name {
        "aes" => has!("aes"),
        "pclmulqdq" | "pclmul" => has!("pclmulqdq"),
        "rdrand" | "rdrnd" => has!("rdrand"),
        "rdseed" => has!("rdseed"),
        "tsc" => has!("tsc"),
        "mmx" => has!("mmx"),
        "sse" => has!("sse"),
        "sse2" => has!("sse2"),
        "sse3" => has!("sse3"),
        "ssse3" => has!("ssse3"),
        "sse4.1" => has!("sse4.1"),
        "sse4.2" => has!("sse4.2"),
        "sse4a" => has!("sse4a"),
        "sha" => has!("sha"),
        "avx" => has!("avx"),
        "avx2" => has!("avx2"),
        "avx512f" => has!("avx512f"),
        "avx512cd" => has!("avx512cd"),
        "avx512er" => has!("avx512er"),
        "avx512pf" => has!("avx512pf"),
        "avx512bw" => has!("avx512bw"),
        "avx512dq" => has!("avx512dq"),
        "avx512vl" => has!("avx512vl"),
        "avx512ifma" => has!("avx512ifma"),
        "avx512vbmi" => has!("avx512vbmi"),
        "avx512vpopcntdq" => has!("avx512vpopcntdq"),
        "avx512vbmi2" => has!("avx512vbmi2"),
        "avx512vnni" => has!("avx512vnni"),
        "avx512bitalg" => has!("avx512bitalg"),
        "avx512bf16" => has!("avx512bf16"),
        "avx512vp2intersect" => has!("avx512vp2intersect"),
        "avx512fp16" => has!("avx512fp16"),
        "avxvnni" => has!("avxvnni"),
        "avxifma" => has!("avxifma"),
        "avxneconvert" => has!("avxneconvert"),
        "avxvnniint8" => has!("avxvnniint8"),
        "avxvnniint16" => has!("avxvnniint16"),
        "gfni" => has!("gfni"),
        "vaes" => has!("vaes"),
        "vpclmulqdq" => has!("vpclmulqdq"),
        "f16c" => has!("f16c"),
        "fma" => has!("fma"),
        "bmi1" | "bmi" => has!("bmi1"),
        "bmi2" => has!("bmi2"),
        "abm" => has!("abm"),
        "lzcnt" => has!("lzcnt"),
        "tbm" => has!("tbm"),
        "popcnt" => has!("popcnt"),
        "fxsr" => has!("fxsr"),
        "xsave" => has!("xsave"),
        "xsaveopt" => has!("xsaveopt"),
        "xsaves" => has!("xsaves"),
        "xsavec" => has!("xsavec"),
        "cmpxchg16b" | "cx16" => has!("cmpxchg16b"),
        "adx" => has!("adx"),
        "rtm" => has!("rtm"),
        "movbe" => has!("movbe"),
        "ermsb" => has!("ermsb"),
        "sha512" => has!("sha512"),
        "sm3" => has!("sm3"),
        "sm4" => has!("sm4"),
        "amx-tile" => amx::has(amx::Bit::Leaf7Edx(24)),
        "amx-int8" => amx::has(amx::Bit::Leaf7Edx(25)),
        "amx-bf16" => amx::has(amx::Bit::Leaf7Edx(22)),
        "amx-fp16" => amx::has(amx::Bit::Leaf7Sub1Eax(21)),
        "amx-complex" => amx::has(amx::Bit::Leaf7Sub1Edx(8)),
        _ => return None,
    })
}

/// AMX detection (unstable in `is_x86_feature_detected!`): CPUID bits plus
/// the OS having enabled the tile state components (XCR0 bits 17 and 18).
#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    pub enum Bit {
        Leaf7Edx(u32),
        Leaf7Sub1Eax(u32),
        Leaf7Sub1Edx(u32),
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        _xgetbv(0)
    }

    #[allow(unused_unsafe)]
    pub fn has(bit: Bit) -> bool {
        // SAFETY: CPUID is available on every x86_64 CPU; leaf 7 is only read
        // when the maximum leaf says it exists.
        let max_leaf = unsafe { __cpuid(0) }.eax;
        if max_leaf < 7 {
            return false;
        }
        let leaf1 = unsafe { __cpuid(1) };
        let osxsave = leaf1.ecx & (1 << 27) != 0;
        if !osxsave {
            return false;
        }
        // SAFETY: OSXSAVE is set, so XGETBV is enabled.
        let xcr0 = unsafe { xcr0() };
        if xcr0 & (0b11 << 17) != 0b11 << 17 {
            return false;
        }
        let l7 = unsafe { __cpuid_count(7, 0) };
        match bit {
            Bit::Leaf7Edx(b) => l7.edx & (1 << b) != 0,
            Bit::Leaf7Sub1Eax(b) | Bit::Leaf7Sub1Edx(b) => {
                if l7.eax < 1 {
                    return false;
                }
                let s1 = unsafe { __cpuid_count(7, 1) };
                let reg = if matches!(bit, Bit::Leaf7Sub1Eax(_)) { s1.eax } else { s1.edx };
                reg & (1 << b) != 0
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
fn detect(name: &str) -> Option<bool> {
    use std::arch::is_aarch64_feature_detected as has;
    Some(match name {
        "neon" | "asimd" => has!("neon"),
        "pmull" => has!("pmull"),
        "fp" => has!("fp"),
        "fp16" | "fullfp16" => has!("fp16"),
        "fhm" | "fp16fml" => has!("fhm"),
        "dotprod" => has!("dotprod"),
        "i8mm" => has!("i8mm"),
        "bf16" => has!("bf16"),
        "sve" => has!("sve"),
        "sve2" => has!("sve2"),
        "crc" => has!("crc"),
        "lse" => has!("lse"),
        "rcpc" => has!("rcpc"),
        "aes" => has!("aes"),
        "sha2" => has!("sha2"),
        "sha3" => has!("sha3"),
        "rdm" => has!("rdm"),
        "f32mm" => has!("f32mm"),
        "f64mm" => has!("f64mm"),
        _ => return None,
    })
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect(_name: &str) -> Option<bool> {
    None
}

/// A triple for this machine, as the compiler would write it
/// (`x86_64-unknown-linux-gnu`, `aarch64-apple-darwin`, ...).
pub fn host_triple() -> String {
    let arch = std::env::consts::ARCH;
    match std::env::consts::OS {
        "linux" => format!("{arch}-unknown-linux-gnu"),
        "macos" => format!("{arch}-apple-darwin"),
        "windows" => format!("{arch}-pc-windows-msvc"),
        os => format!("{arch}-unknown-{os}"),
    }
}

/// Architecture and OS of a target triple, in `std::env::consts` terms
/// (`x86_64`/`aarch64`, `linux`/`macos`/`windows`).
pub fn triple_arch_os(triple: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = triple.split('-').collect();
    let arch = match parts.first().copied().unwrap_or("") {
        "" => return Err(format!("target triple `{triple}` is empty or malformed")),
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        "i386" | "i486" | "i586" | "i686" => "x86",
        a => a,
    };
    let os = parts.iter().skip(1).find_map(|p| {
        Some(match p {
            p if p.starts_with("linux") => "linux",
            p if p.starts_with("darwin") || p.starts_with("macos") => "macos",
            p if p.starts_with("windows") => "windows",
            p if p.starts_with("freebsd") => "freebsd",
            p if p.starts_with("netbsd") => "netbsd",
            p if p.starts_with("openbsd") => "openbsd",
            p if p.starts_with("android") => "android",
            p if p.starts_with("ios") => "ios",
            _ => return None,
        })
    });
    let Some(os) = os else { return Err(format!("cannot tell the operating system of target triple `{triple}`")) };
    Ok((arch.to_string(), os.to_string()))
}

/// Why this machine cannot run code for a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMismatch {
    /// Triple unparsable, or architecture/OS differ.
    Triple { triple: String, message: String },
    /// Feature names this runtime does not know.
    UnknownFeatures(Vec<String>),
    /// Known features this CPU lacks.
    MissingFeatures(Vec<String>),
}

/// Check a target triple and required CPU features against this machine.
pub fn check_host(triple: &str, features: &[String]) -> Result<(), HostMismatch> {
    let (arch, os) = triple_arch_os(triple).map_err(|message| HostMismatch::Triple { triple: triple.to_string(), message })?;
    let (host_arch, host_os) = (std::env::consts::ARCH, std::env::consts::OS);
    if arch != host_arch || os != host_os {
        return Err(HostMismatch::Triple {
            triple: triple.to_string(),
            message: format!("built for {arch}/{os} (`{triple}`), but this machine is {host_arch}/{host_os}"),
        });
    }
    let unknown: Vec<String> = features.iter().filter(|f| cpu_has_feature(f).is_none()).cloned().collect();
    if !unknown.is_empty() {
        return Err(HostMismatch::UnknownFeatures(unknown));
    }
    let missing: Vec<String> = features.iter().filter(|f| cpu_has_feature(f) == Some(false)).cloned().collect();
    if !missing.is_empty() {
        return Err(HostMismatch::MissingFeatures(missing));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triples_parse_to_arch_and_os() {
        assert_eq!(triple_arch_os("x86_64-unknown-linux-gnu"), Ok(("x86_64".into(), "linux".into())));
        assert_eq!(triple_arch_os("arm64-apple-macosx14.0"), Ok(("aarch64".into(), "macos".into())));
        assert_eq!(triple_arch_os("aarch64-apple-darwin"), Ok(("aarch64".into(), "macos".into())));
        assert_eq!(triple_arch_os("x86_64-pc-windows-msvc"), Ok(("x86_64".into(), "windows".into())));
        assert!(triple_arch_os("").is_err());
        assert!(triple_arch_os("x86_64-unknown-elf").is_err_and(|e| e.contains("operating system")));
        assert_eq!(triple_arch_os(&host_triple()), Ok((std::env::consts::ARCH.to_string(), std::env::consts::OS.to_string())));
    }

    #[test]
    fn every_known_feature_is_detectable() {
        for f in KNOWN_CPU_FEATURES {
            assert!(cpu_has_feature(f).is_some(), "{f}");
        }
        assert_eq!(cpu_has_feature("warp-drive"), None);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(cpu_has_feature("sse2"), Some(true));
            assert_eq!(cpu_has_feature("+sse2"), Some(true));
            assert_eq!(cpu_has_feature("cx16"), cpu_has_feature("cmpxchg16b"));
        }
    }
}
