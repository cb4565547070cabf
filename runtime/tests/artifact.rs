//! The `.omni` artifact: write → open round trip, alignment, and every kind
//! of bad file answered with an error naming the file (never a panic).

use omnic_runtime::artifact::format::{ALIGN, HEADER_LEN, SECTION_ENTRY_LEN};
use omnic_runtime::artifact::host::{cpu_has_feature, host_triple, KNOWN_CPU_FEATURES};
use omnic_runtime::artifact::*;
use omnic_runtime::{io, ElemType, HostTensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn sym(s: &str) -> DimExpr {
    DimExpr::Sym(s.into())
}

fn c(v: i64) -> DimExpr {
    DimExpr::Const(v)
}

fn value(id: u32, dtype: ElemType, shape: Vec<DimExpr>, def: ValueDef) -> ValueSpec {
    ValueSpec { id, dtype, shape, def }
}

/// x f32[batch,4] → linear(w f32[8,4], b f32[8]) → gelu kernel → out f32[batch,8];
/// also a view, a constant with -inf, and odd-sized weights (alignment).
fn manifest(weights: WeightSource) -> Manifest {
    let f = ElemType::F32;
    let values = vec![
        value(0, f, vec![sym("batch"), c(4)], ValueDef::Input { name: "x".into() }),
        value(1, f, vec![c(8), c(4)], ValueDef::Weight { name: "w".into() }),
        value(2, f, vec![c(8)], ValueDef::Weight { name: "b".into() }),
        value(3, f, vec![sym("batch"), c(8)], ValueDef::Computed),
        value(4, f, vec![c(2)], ValueDef::Constant { values: vec![0.5, f64::NEG_INFINITY] }),
        value(5, f, vec![sym("batch"), c(8)], ValueDef::Computed),
        value(6, f, vec![DimExpr::Mul(vec![sym("batch"), c(8)])], ValueDef::View { of: 5 }),
        value(7, ElemType::Bool, vec![c(5)], ValueDef::Weight { name: "mask".into() }),
        value(8, ElemType::I64, vec![c(3)], ValueDef::Weight { name: "idx".into() }),
    ];
    let steps = vec![
        Step::Ukernel { op: Ukernel::Linear { bias: true }, args: vec![0, 1, 2], results: vec![3] },
        Step::Kernel { symbol: "gelu_0".into(), args: vec![3, 4, 7, 8], results: vec![5], split: vec![] },
    ];
    Manifest {
        format_version: FORMAT_VERSION,
        compiler: "omnic 0.1.0".into(),
        target: TargetInfo { name: "cpu".into(), triple: host_triple(), cpu: "generic".into(), features: vec![] },
        pipeline: "canonicalize,cse,dce".into(),
        metadata: BTreeMap::from([("architecture".to_string(), "Toy".to_string())]),
        control: Control::Forward { stage: "forward".into() },
        stages: vec![StageSchedule { name: "forward".into(), inputs: vec![0], outputs: vec![("out".into(), 6)], values, steps, flops: vec![] }],
        weights,
    }
}

fn weights() -> Vec<(String, HostTensor)> {
    let w: Vec<f32> = (0..32).map(|i| i as f32 * 0.25 - 3.0).collect();
    vec![
        ("mask".into(), HostTensor::from_bool(&[5], &[true, false, true, true, false])),
        ("w".into(), HostTensor::from_f32(&[8, 4], &w)),
        ("b".into(), HostTensor::from_f32(&[8], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])),
        ("idx".into(), HostTensor::from_i64(&[3], &[-1, 0, 1 << 40])),
    ]
}

fn code() -> Vec<(String, Vec<u8>)> {
    vec![("cpu.so".into(), b"\x7fELF not really a shared object".to_vec()), ("extra.so".into(), vec![7; 100])]
}

fn good(dir: &Path) -> (PathBuf, Vec<u8>) {
    let p = dir.join("model.omni");
    write_artifact(&p, &manifest(WeightSource::Embedded), &code(), &weights()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    (p, bytes)
}

/// Write `bytes` as `name` and open it; the error text.
fn open_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let e = Artifact::open(&p).expect_err("a bad artifact must not open").to_string();
    assert!(e.contains(name), "error does not name the file: {e}");
    e
}

fn fix_checksum(b: &mut [u8]) {
    let n = b.len() - 4;
    let crc = crc32fast::hash(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
}

fn section(b: &[u8], kind: u32) -> (usize, usize) {
    let count = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    for i in 0..count {
        let e = HEADER_LEN + i * SECTION_ENTRY_LEN;
        if u32::from_le_bytes(b[e..e + 4].try_into().unwrap()) == kind {
            let off = u64::from_le_bytes(b[e + 8..e + 16].try_into().unwrap()) as usize;
            let len = u64::from_le_bytes(b[e + 16..e + 24].try_into().unwrap()) as usize;
            return (off, len);
        }
    }
    panic!("no section of kind {kind}");
}

/// Replace `from` by `to` (same length) in the manifest section, fix the checksum.
fn edit_manifest(b: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let (off, len) = section(b, 1);
    let mut out = b.to_vec();
    let text = String::from_utf8(b[off..off + len].to_vec()).unwrap();
    assert!(text.contains(from), "{from} not in {text}");
    out[off..off + len].copy_from_slice(text.replacen(from, to, 1).as_bytes());
    fix_checksum(&mut out);
    out
}

#[test]
fn round_trip_keeps_manifest_code_and_weights_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let (p, bytes) = good(dir.path());
    let art = Artifact::open(&p).unwrap();
    assert_eq!(art.manifest(), &manifest(WeightSource::Embedded));
    assert_eq!(art.format_version(), FORMAT_VERSION);
    assert_eq!(&bytes[..8], b"OMNIART\0");
    assert_eq!(art.file_len(), bytes.len() as u64);
    // The -inf constant survives JSON.
    match &art.manifest().stages[0].values[4].def {
        ValueDef::Constant { values } => assert_eq!(values[1], f64::NEG_INFINITY),
        d => panic!("{d:?}"),
    }
    // Code objects by name.
    assert_eq!(art.code("cpu.so").unwrap(), code()[0].1.as_slice());
    assert_eq!(
        art.code_objects().map(|(n, b)| (n.to_string(), b.len())).collect::<Vec<_>>(),
        code().iter().map(|(n, b)| (n.clone(), b.len())).collect::<Vec<_>>()
    );
    let e = art.code("gpu.so").unwrap_err().to_string();
    assert!(e.contains("gpu.so") && e.contains("cpu.so"), "{e}");
    // Weights: names (padding hidden), bytes, zero-copy and 64-byte aligned.
    assert_eq!(art.weight_names(), vec!["b", "idx", "mask", "w"]);
    for (name, t) in weights() {
        let v = art.weight(&name).unwrap();
        assert_eq!(v.to_host(), t, "{name}");
        assert_eq!(v.origin, WeightOrigin::Embedded);
        assert_eq!(v.data.as_ptr() as usize % ALIGN, 0, "{name} data is not {ALIGN}-byte aligned");
    }
    let e = art.weight("nope").unwrap_err().to_string();
    assert!(e.contains("`nope`") && e.contains("model.omni"), "{e}");
    // Every section starts aligned; the weights section is a complete
    // safetensors file that the safetensors crate reads as is.
    for s in art.sections() {
        assert_eq!(s.offset % ALIGN as u64, 0, "{s:?}");
    }
    let (woff, wlen) = section(&bytes, 3);
    assert_eq!(woff % ALIGN, 0);
    assert_eq!(art.weights_section(), &bytes[woff..woff + wlen]);
    let st = safetensors::SafeTensors::deserialize(art.weights_section()).unwrap();
    assert_eq!(st.tensor("w").unwrap().data(), weights()[1].1.data.as_slice());
    // Standalone: written out, the section is a safetensors file for any reader.
    let ext = dir.path().join("section.safetensors");
    std::fs::write(&ext, art.weights_section()).unwrap();
    let f = io::MappedFile::open(&ext).unwrap();
    assert_eq!(f.tensor("idx").unwrap(), weights()[3].1);
}

#[test]
fn writer_refuses_inconsistent_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.omni");
    let m = manifest(WeightSource::Embedded);
    let e = write_artifact(&p, &m, &code(), &weights()[1..]).unwrap_err().to_string();
    assert!(e.contains("`mask`") && e.contains("stages[0].values[7]"), "{e}");
    let mut m2 = m.clone();
    m2.stages[0].steps[1] = Step::Kernel { symbol: "gelu_0".into(), args: vec![3, 42], results: vec![5], split: vec![] };
    let e = write_artifact(&p, &m2, &code(), &weights()).unwrap_err().to_string();
    assert!(e.contains("stages[0].steps[1].args[1]") && e.contains("value 42"), "{e}");
    // A kernel split needs one axis per argument and per result, within the ranks.
    use omnic_runtime::artifact::manifest::KernelSplit;
    for split in [KernelSplit { args: vec![Some(0)], results: vec![Some(0)] }, KernelSplit { args: vec![None, None, None, None], results: vec![Some(9)] }] {
        let mut ms = m.clone();
        ms.stages[0].steps[1] = Step::Kernel { symbol: "gelu_0".into(), args: vec![3, 4, 7, 8], results: vec![5], split: vec![split] };
        let e = write_artifact(&p, &ms, &code(), &weights()).unwrap_err().to_string();
        assert!(e.contains("stages[0].steps[1].split"), "{e}");
    }
    let mut m3 = m.clone();
    m3.stages[0].steps.swap(0, 1);
    let e = write_artifact(&p, &m3, &code(), &weights()).unwrap_err().to_string();
    assert!(e.contains("used before"), "{e}");
    let mut m4 = m.clone();
    m4.stages[0].flops = vec![omnic_runtime::artifact::DimExpr::Const(1)];
    let e = write_artifact(&p, &m4, &code(), &weights()).unwrap_err().to_string();
    assert!(e.contains("stages[0].flops") && e.contains("1 FLOP counts for 2 steps"), "{e}");
    let mut ws = weights();
    ws[1].1.shape = vec![4, 8];
    let e = write_artifact(&p, &m, &code(), &ws).unwrap_err().to_string();
    assert!(e.contains("`w`") && e.contains("[4, 8]"), "{e}");
    let e = write_artifact(&p, &m, &[("a".into(), vec![]), ("a".into(), vec![])], &weights()).unwrap_err().to_string();
    assert!(e.contains("`a`"), "{e}");
    assert!(!p.exists() && !dir.path().join("bad.omni.partial").exists());
}

#[test]
fn truncated_files_are_reported_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = good(dir.path());
    let (moff, mlen) = section(&bytes, 1);
    let (woff, wlen) = section(&bytes, 3);
    let table_end = HEADER_LEN + 4 * SECTION_ENTRY_LEN;
    let mut lens = vec![0, 1, 7, 8, 12, 20, 24, 31, 32, 40, table_end - 1, table_end + 3, moff, moff + mlen / 2, woff, woff + 4, woff + 40, woff + wlen / 2];
    lens.extend([bytes.len() - 5, bytes.len() - 4, bytes.len() - 1]);
    lens.extend((0..bytes.len()).step_by(97));
    for n in lens {
        let e = open_err(dir.path(), "cut.omni", &bytes[..n]);
        assert!(e.contains("truncated"), "at {n} bytes: {e}");
    }
}

#[test]
fn any_flipped_byte_is_an_error_and_past_the_header_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = good(dir.path());
    let mut b = bytes.clone();
    // Every byte of the header, section table, names and the start of the
    // manifest; then every 3rd byte (each open maps and checksums the file).
    for i in (0..bytes.len()).filter(|&i| i < 512 || i % 3 == 0 || i >= bytes.len() - 8) {
        b[i] ^= 0x20;
        let e = open_err(dir.path(), "flip.omni", &b);
        if i >= HEADER_LEN {
            assert!(e.contains("checksum mismatch"), "byte {i}: {e}");
        }
        b[i] = bytes[i];
    }
}

#[test]
fn corrupted_bytes_with_a_valid_checksum_never_panic() {
    // Past the checksum the parser sees hostile bytes: change bytes of the
    // header, section table, names and manifest (fixing the checksum) and
    // demand an error or a value, never a panic.
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = good(dir.path());
    let (woff, _) = section(&bytes, 3);
    let p = dir.path().join("hostile.omni");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let specials = [0u8, 1, 0x7f, 0x80, 0xff, b'{', b'"', b'-'];
    for i in 12..woff + 200 {
        for k in 0..2 {
            let mut b = bytes.clone();
            b[i] = if k == 0 { specials[(rnd() % specials.len() as u64) as usize] } else { rnd() as u8 };
            if k == 1 {
                let j = 12 + (rnd() as usize) % (bytes.len() - 16);
                b[j] = rnd() as u8;
            }
            fix_checksum(&mut b);
            std::fs::write(&p, &b).unwrap();
            if let Ok(a) = Artifact::open(&p) {
                for n in a.weight_names() {
                    let _ = a.weight(n);
                }
                let _ = a.code_objects().count();
            }
        }
    }
}

#[test]
fn wrong_magic_and_newer_version_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = good(dir.path());
    let mut b = bytes.clone();
    b[..4].copy_from_slice(b"GGUF");
    fix_checksum(&mut b);
    let e = open_err(dir.path(), "magic.omni", &b);
    assert!(e.contains("not an omnic artifact") && e.contains("GGUF"), "{e}");
    let e = open_err(dir.path(), "readme.omni", b"# a markdown file, long enough to have a header\n");
    assert!(e.contains("not an omnic artifact"), "{e}");
    let e = open_err(dir.path(), "short.omni", b"PK\x03");
    assert!(e.contains("not an omnic artifact"), "{e}");

    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    fix_checksum(&mut b);
    let e = open_err(dir.path(), "newer.omni", &b);
    assert!(e.contains(&format!("format version {} is newer", FORMAT_VERSION + 1)) && e.contains(&format!("reads (format version {FORMAT_VERSION})")), "{e}");
    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    fix_checksum(&mut b);
    let e = open_err(dir.path(), "zero.omni", &b);
    assert!(e.contains("format version 0 is not supported"), "{e}");
    // Trailing garbage is not silently ignored.
    let mut b = bytes.clone();
    b.extend_from_slice(b"junk");
    let e = open_err(dir.path(), "long.omni", &b);
    assert!(e.contains("4 bytes after the end"), "{e}");
}

fn with_target(dir: &Path, name: &str, triple: &str, features: &[&str]) -> PathBuf {
    let mut m = manifest(WeightSource::Embedded);
    m.target.triple = triple.into();
    m.target.cpu = "somecpu".into();
    m.target.features = features.iter().map(|s| s.to_string()).collect();
    let p = dir.join(name);
    write_artifact(&p, &m, &code(), &weights()).unwrap();
    p
}

#[test]
fn cpu_features_and_triple_are_checked_against_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_triple();
    let present: Vec<&str> = KNOWN_CPU_FEATURES.iter().copied().filter(|f| cpu_has_feature(f) == Some(true)).take(3).collect();
    let p = with_target(dir.path(), "ok.omni", &host, &present);
    Artifact::open(&p).unwrap();

    match KNOWN_CPU_FEATURES.iter().find(|f| cpu_has_feature(f) == Some(false)) {
        Some(missing) => {
            let mut fs = present.clone();
            fs.push(missing);
            let p = with_target(dir.path(), "nofeat.omni", &host, &fs);
            let e = Artifact::open(&p).unwrap_err().to_string();
            assert!(e.contains("nofeat.omni") && e.contains("lacks") && e.contains(missing) && e.contains("somecpu"), "{e}");
            for f in &present {
                assert!(!e.contains(&format!(" {f}")), "{f} is present but named missing: {e}");
            }
            // Still inspectable without the host check.
            let a = Artifact::open_with(&p, &OpenOptions { check_host: false, ..Default::default() }).unwrap();
            assert!(a.check_host().is_err());
        }
        None => eprintln!("this CPU has every feature omnirt knows; skipping the missing-feature case"),
    }

    let p = with_target(dir.path(), "unknown.omni", &host, &["avx2", "warp-drive"]);
    let e = Artifact::open(&p).unwrap_err().to_string();
    assert!(e.contains("unknown.omni") && e.contains("warp-drive") && e.contains("does not know") && !e.contains("avx2"), "{e}");

    let other = if std::env::consts::ARCH == "x86_64" { "aarch64-apple-darwin" } else { "x86_64-unknown-linux-gnu" };
    let p = with_target(dir.path(), "arch.omni", other, &[]);
    let e = Artifact::open(&p).unwrap_err().to_string();
    assert!(e.contains("arch.omni") && e.contains(other) && e.contains("this machine is"), "{e}");
    let other_os = format!("{}-pc-windows-msvc", std::env::consts::ARCH);
    let p = with_target(dir.path(), "os.omni", &other_os, &[]);
    let e = Artifact::open(&p).unwrap_err().to_string();
    assert!(e.contains("windows"), "{e}");
    let p = with_target(dir.path(), "triple.omni", "", &[]);
    let e = Artifact::open(&p).unwrap_err().to_string();
    assert!(e.contains("triple"), "{e}");
}

#[test]
fn malformed_manifests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = good(dir.path());
    let cases = [
        // unknown dtype
        ("\"dtype\":\"f32\"", "\"dtype\":\"q32\"", "stages[0].values[0].dtype"),
        // missing field
        ("\"compiler\"", "\"compilex\"", "missing field `compiler`"),
        // wrong type
        ("\"format_version\":1", "\"format_version\":\"", "format_version"),
        // not JSON
        ("{", "[", "invalid manifest"),
        // a dangling reference
        ("\"of\":5", "\"of\":9", "stages[0].values[6]"),
        // header and manifest disagree on the version
        ("\"format_version\":1", "\"format_version\":7", "header says 1"),
        // the control names no stage
        ("{\"forward\":{\"stage\":\"forward\"}}", "{\"forward\":{\"stage\":\"fxrward\"}}", "control.forward.stage"),
        // a weight of the wrong dtype
        ("\"dtype\":\"bool\"", "\"dtype\":\"i32\" ", "weight `mask` is bool"),
    ];
    for (from, to, needle) in cases {
        let e = open_err(dir.path(), "manifest.omni", &edit_manifest(&bytes, from, to));
        assert!(e.contains("invalid manifest") && e.contains(needle), "{from} → {to}: {e}");
    }
}

#[test]
fn external_weights_resolve_from_the_original_files() {
    let dir = tempfile::tempdir().unwrap();
    let all = weights();
    // w and b stay in the checkpoint; mask and idx are "derived" (embedded).
    let ckpt = dir.path().join("ckpt.safetensors");
    let mut extra = all[1..3].to_vec();
    extra.push(("unused.bias".into(), HostTensor::from_f32(&[1], &[0.0])));
    io::write(&ckpt, &extra, None).unwrap();
    let m = manifest(WeightSource::External { files: vec!["ckpt.safetensors".into()] });
    let derived = vec![all[0].clone(), all[3].clone()];
    let p = dir.path().join("ext.omni");
    write_artifact(&p, &m, &code(), &derived).unwrap();
    let art = Artifact::open(&p).unwrap();
    assert_eq!(art.manifest(), &m);
    for (name, t) in &all {
        let v = art.weight(name).unwrap();
        assert_eq!(&v.to_host(), t, "{name}");
        let external = name == "w" || name == "b";
        assert_eq!(matches!(v.origin, WeightOrigin::External(f) if f.ends_with("ckpt.safetensors")), external, "{name}");
    }
    assert_eq!(art.external_files().len(), 1);
    // Only the derived weights are in the artifact.
    let st = safetensors::SafeTensors::deserialize(art.weights_section()).unwrap();
    let mut embedded: Vec<&str> = st.names().into_iter().filter(|n| !n.starts_with("__omni_pad__")).collect();
    embedded.sort();
    assert_eq!(embedded, vec!["idx", "mask"]);

    // A weights_dir override finds moved files.
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    std::fs::rename(&ckpt, moved.join("ckpt.safetensors")).unwrap();
    let e = Artifact::open(&p).unwrap_err().to_string();
    assert!(e.contains("ext.omni") && e.contains("ckpt.safetensors") && e.contains("external weights file"), "{e}");
    let art = Artifact::open_with(&p, &OpenOptions { weights_dir: Some(moved.clone()), ..Default::default() }).unwrap();
    assert_eq!(art.weight("w").unwrap().to_host(), all[1].1);
    // Without the host check the external files are not opened.
    let art = Artifact::open_with(&p, &OpenOptions { check_host: false, weights_dir: None }).unwrap();
    assert!(!art.external_loaded());
    assert!(art.weight("w").unwrap_err().to_string().contains("not opened"));

    // A checkpoint that lacks a weight: the weight and the file are named.
    io::write(&ckpt, &all[1..2], None).unwrap();
    let e = Artifact::open(&p).unwrap_err().to_string();
    assert!(e.contains("ext.omni") && e.contains("weight `b`") && e.contains("ckpt.safetensors"), "{e}");
    // A checkpoint with a different shape.
    io::write(&ckpt, &[("w".into(), HostTensor::from_f32(&[4, 8], &[0.0; 32])), all[2].clone()], None).unwrap();
    let e = Artifact::open(&p).unwrap_err().to_string();
    assert!(e.contains("weight `w`") && e.contains("[4, 8]"), "{e}");
    // Not a safetensors file.
    std::fs::write(&ckpt, b"garbage").unwrap();
    let e = Artifact::open(&p).unwrap_err().to_string();
    assert!(e.contains("ckpt.safetensors") && e.contains("not a valid safetensors"), "{e}");
}
