//! The `.omni` file: binary layout, writer and verifying reader.
//!
//! All integers are little-endian. Offsets are absolute (from the start of
//! the file).
//!
//! | offset          | size     | field                                                        |
//! |-----------------|----------|--------------------------------------------------------------|
//! | 0               | 8        | magic `OMNIART\0`                                            |
//! | 8               | 4        | format version, u32 ([`FORMAT_VERSION`])                     |
//! | 12              | 4        | flags, u32: reserved, 0 in version 1                         |
//! | 16              | 4        | section count `N`, u32                                       |
//! | 20              | 4        | reserved, 0                                                  |
//! | 24              | 8        | file length `L` in bytes, checksum included, u64             |
//! | 32              | 32 × N   | section table, one 32-byte entry per section (below)         |
//! | 32 + 32N        | …        | section names, UTF-8, packed                                 |
//! | (64-aligned)    | …        | sections, each at a 64-byte aligned offset, zero padding between |
//! | L − 4           | 4        | CRC-32 (IEEE, `crc32fast`) of bytes `[0, L − 4)`, u32        |
//!
//! Section table entry:
//!
//! | offset | size | field                                                  |
//! |--------|------|--------------------------------------------------------|
//! | 0      | 4    | kind, u32: 1 `MANIFEST`, 2 `CODE`, 3 `WEIGHTS`         |
//! | 4      | 4    | name length in bytes, u32                              |
//! | 8      | 8    | section offset, u64 (64-byte aligned)                  |
//! | 16     | 8    | section length, u64                                    |
//! | 24     | 8    | name offset, u64 (inside the names area)               |
//!
//! Sections (the writer emits them in this order):
//!
//! * `MANIFEST` (exactly one, named `manifest`): the [`Manifest`] as JSON.
//! * `CODE` (any number): one code object each (a shared object for the
//!   target), named by the compiler (e.g. `cpu.so`); names are unique.
//! * `WEIGHTS` (exactly one, named `weights`, last): a complete safetensors
//!   file, possibly with no tensors. With [`WeightSource::Embedded`] it holds
//!   every weight; with [`WeightSource::External`] only the weights derived
//!   at compile time (the rest come from the original safetensors files).
//!   The section starts 64-byte aligned and its safetensors header is padded
//!   with spaces (as the format allows) so that the data area starts 64-byte
//!   aligned; every tensor's data is then 64-byte aligned too, gaps being
//!   filled by `U8` padding tensors named `__omni_pad__.<k>` (safetensors
//!   forbids gaps between tensors). Any safetensors reader can load the
//!   section as is (it sees the padding tensors); omnirt hides them.
//!
//! The reader ([`Artifact::open`]) maps the file and checks, in order:
//! magic, format version (a newer one is refused with the version this
//! omnirt reads), header fields, file length (truncation), checksum, section
//! table bounds, manifest JSON (errors name the field), the manifest's
//! internal references, then that this machine can run the code (target
//! triple and CPU features, see [`super::host`]) and that every weight the
//! manifest names resolves with the right dtype and shape. Any byte sequence
//! gives a value or an error, never a panic.

use super::dim::DimExpr;
use super::host::{self, HostMismatch};
use super::manifest::{Control, Manifest, Step, ValueDef, WeightSource, FORMAT_VERSION};
use crate::io::elem_type;
use crate::tensor::{ElemType, HostTensor};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// First 8 bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"OMNIART\0";
/// Fixed header length.
pub const HEADER_LEN: usize = 32;
/// Length of one section table entry.
pub const SECTION_ENTRY_LEN: usize = 32;
/// Alignment of sections and of weight data.
pub const ALIGN: usize = 64;
/// Trailing checksum length.
pub const CHECKSUM_LEN: usize = 4;
/// Name prefix of the padding tensors in the weights section.
pub const PAD_PREFIX: &str = "__omni_pad__.";
/// Upper bound on the section count the reader accepts.
pub const MAX_SECTIONS: u64 = 1 << 16;

/// Kinds of section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Manifest = 1,
    Code = 2,
    Weights = 3,
}

impl SectionKind {
    fn from_u32(v: u32) -> Option<SectionKind> {
        Some(match v {
            1 => SectionKind::Manifest,
            2 => SectionKind::Code,
            3 => SectionKind::Weights,
            _ => return None,
        })
    }
}

/// One entry of the section table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    pub kind: SectionKind,
    pub name: String,
    pub offset: u64,
    pub len: u64,
}

/// Everything that can be wrong with an artifact; each names the file.
#[derive(Debug, Error)]
pub enum ArtifactError {
    #[error("{}: {err}", .path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: not an omnic artifact (it starts with {found}, an artifact with \"OMNIART\\0\")", .path.display())]
    BadMagic { path: PathBuf, found: String },
    #[error("{}: truncated: the file has {len} bytes but {what} needs {needed}", .path.display())]
    Truncated { path: PathBuf, what: &'static str, needed: u64, len: u64 },
    #[error("{}: format version {version} is newer than this omnirt reads (format version {supported}); use a newer omnirt", .path.display())]
    NewerVersion { path: PathBuf, version: u32, supported: u32 },
    #[error("{}: format version {version} is not supported (this omnirt reads format version {supported})", .path.display())]
    UnsupportedVersion { path: PathBuf, version: u32, supported: u32 },
    #[error("{}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt", .path.display())]
    Checksum { path: PathBuf, stored: u32, computed: u32 },
    #[error("{}: corrupt artifact: {message}", .path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{}: invalid manifest: {field}: {message}", .path.display())]
    Manifest { path: PathBuf, field: String, message: String },
    #[error("{}: invalid weights section: {message}", .path.display())]
    Weights { path: PathBuf, message: String },
    #[error("{}: cannot run on this machine: {message}", .path.display())]
    WrongTarget { path: PathBuf, message: String },
    #[error("{}: cannot run on this machine: it needs CPU features this CPU lacks: {} (compiled for cpu `{cpu}`)", .path.display(), .missing.join(", "))]
    MissingCpuFeatures { path: PathBuf, missing: Vec<String>, cpu: String },
    #[error("{}: requires CPU features this omnirt does not know: {}", .path.display(), .names.join(", "))]
    UnknownCpuFeatures { path: PathBuf, names: Vec<String> },
    #[error("{}: external weights file {}: {message}", .path.display(), .file.display())]
    ExternalWeights { path: PathBuf, file: PathBuf, message: String },
    #[error("{}: weight `{name}`: {message}", .path.display())]
    Weight { path: PathBuf, name: String, message: String },
    #[error("{}: no code object named `{name}` (it has: {available})", .path.display())]
    NoCode { path: PathBuf, name: String, available: String },
    #[error("{}: cannot write artifact: {message}", .path.display())]
    Write { path: PathBuf, message: String },
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// The safetensors dtype name of an element type.
fn st_dtype_name(e: ElemType) -> &'static str {
    match e {
        ElemType::F32 => "F32",
        ElemType::F16 => "F16",
        ElemType::BF16 => "BF16",
        ElemType::F64 => "F64",
        ElemType::I64 => "I64",
        ElemType::I32 => "I32",
        ElemType::Bool => "BOOL",
    }
}

// ---------------------------------------------------------------------------
// Writer

/// The weights section laid out: header bytes, then data pieces.
struct WeightsBlob<'a> {
    header: Vec<u8>,
    pieces: Vec<Piece<'a>>,
    len: u64,
}

enum Piece<'a> {
    Zeros(usize),
    Data(&'a [u8]),
}

fn plan_weights(weights: &[(String, HostTensor)]) -> Result<WeightsBlob<'_>, String> {
    let mut names = HashSet::new();
    let mut entries = serde_json::Map::new();
    let mut pieces = Vec::new();
    let mut cursor = 0usize;
    let mut npad = 0usize;
    for (name, t) in weights {
        if name.is_empty() || name == "__metadata__" || name.starts_with(PAD_PREFIX) {
            return Err(format!("weight name `{name}` is reserved"));
        }
        if !names.insert(name.as_str()) {
            return Err(format!("weight `{name}` is given twice"));
        }
        let want = t.shape.iter().try_fold(t.dtype.size_bytes(), |a, &d| a.checked_mul(d));
        if want != Some(t.data.len()) {
            return Err(format!("weight `{name}`: {} bytes for shape {:?} of {}", t.data.len(), t.shape, t.dtype));
        }
        let pad = (ALIGN - cursor % ALIGN) % ALIGN;
        if pad > 0 {
            entries.insert(format!("{PAD_PREFIX}{npad}"), serde_json::json!({"dtype": "U8", "shape": [pad], "data_offsets": [cursor, cursor + pad]}));
            npad += 1;
            pieces.push(Piece::Zeros(pad));
            cursor += pad;
        }
        let end = cursor + t.data.len();
        entries.insert(name.clone(), serde_json::json!({"dtype": st_dtype_name(t.dtype), "shape": t.shape, "data_offsets": [cursor, end]}));
        pieces.push(Piece::Data(&t.data));
        cursor = end;
    }
    entries.insert("__metadata__".into(), serde_json::json!({"omnic": format!("weights of an omnic artifact; `{PAD_PREFIX}*` tensors are alignment padding")}));
    let mut json = serde_json::to_vec(&serde_json::Value::Object(entries)).map_err(|e| e.to_string())?;
    // Pad with spaces so that the data area (8 + header) starts aligned.
    let n = align_up(8 + json.len() as u64) as usize - 8;
    json.resize(n, b' ');
    let mut header = (n as u64).to_le_bytes().to_vec();
    header.extend_from_slice(&json);
    let len = (header.len() + cursor) as u64;
    Ok(WeightsBlob { header, pieces, len })
}

/// Writes bytes while hashing and counting them.
struct Out<W: Write> {
    w: W,
    crc: crc32fast::Hasher,
    pos: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)?;
        self.crc.update(b);
        self.pos += b.len() as u64;
        Ok(())
    }
    fn zeros(&mut self, mut n: u64) -> std::io::Result<()> {
        const Z: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(Z.len() as u64) as usize;
            self.put(&Z[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
    fn pad_to(&mut self, off: u64) -> std::io::Result<()> {
        self.zeros(off.saturating_sub(self.pos))
    }
}

/// Write an artifact: the manifest, code objects `(name, bytes)` and the
/// weights to embed (all weights, or with external weights those derived at
/// compile time). Checks the manifest as the reader does (its references,
/// and with embedded weights that every weight it names is given with its
/// dtype and shape). Writes to `<path>.partial` and renames, so `path` is
/// never left half-written.
pub fn write_artifact(path: &Path, manifest: &Manifest, code: &[(String, Vec<u8>)], weights: &[(String, HostTensor)]) -> Result<(), ArtifactError> {
    let werr = |message: String| ArtifactError::Write { path: path.to_path_buf(), message };
    if manifest.format_version != FORMAT_VERSION {
        return Err(werr(format!("manifest.format_version is {}, but this writer writes format version {FORMAT_VERSION}", manifest.format_version)));
    }
    let mut code_names = HashSet::new();
    for (name, _) in code {
        if name.is_empty() || !code_names.insert(name.as_str()) {
            return Err(werr(format!("code object name `{name}` is empty or given twice")));
        }
    }
    let blob = plan_weights(weights).map_err(werr)?;
    let given: HashMap<&str, &HostTensor> = weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let external = matches!(manifest.weights, WeightSource::External { .. });
    check_manifest(manifest, &|name| match given.get(name) {
        Some(t) => Lookup::Found(Ok(t.dtype), &t.shape),
        None if external => Lookup::Unchecked,
        None => Lookup::Missing("the weights given to the writer".into()),
    })
    .map_err(|(field, message)| werr(format!("invalid manifest: {field}: {message}")))?;
    let manifest_json = serde_json::to_vec(manifest).map_err(|e| werr(format!("manifest to JSON: {e}")))?;

    // Layout.
    let mut sections: Vec<(SectionKind, &str, u64)> = vec![(SectionKind::Manifest, "manifest", manifest_json.len() as u64)];
    sections.extend(code.iter().map(|(n, b)| (SectionKind::Code, n.as_str(), b.len() as u64)));
    sections.push((SectionKind::Weights, "weights", blob.len));
    let table_end = (HEADER_LEN + SECTION_ENTRY_LEN * sections.len()) as u64;
    let mut name_off = table_end;
    let mut cursor = align_up(table_end + sections.iter().map(|s| s.1.len() as u64).sum::<u64>());
    let mut table = Vec::with_capacity(sections.len() * SECTION_ENTRY_LEN);
    let mut offsets = Vec::new();
    for (kind, name, len) in &sections {
        table.extend_from_slice(&(*kind as u32).to_le_bytes());
        table.extend_from_slice(&(name.len() as u32).to_le_bytes());
        table.extend_from_slice(&cursor.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&name_off.to_le_bytes());
        offsets.push(cursor);
        name_off += name.len() as u64;
        cursor = align_up(cursor + len);
    }
    let data_end = offsets.last().copied().unwrap_or(0) + blob.len;
    let file_len = data_end + CHECKSUM_LEN as u64;

    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut out = Out { w: std::io::BufWriter::with_capacity(1 << 20, f), crc: crc32fast::Hasher::new(), pos: 0 };
        out.put(&MAGIC)?;
        out.put(&FORMAT_VERSION.to_le_bytes())?;
        out.put(&0u32.to_le_bytes())?;
        out.put(&(sections.len() as u32).to_le_bytes())?;
        out.put(&0u32.to_le_bytes())?;
        out.put(&file_len.to_le_bytes())?;
        out.put(&table)?;
        for (_, name, _) in &sections {
            out.put(name.as_bytes())?;
        }
        let mut off = offsets.iter();
        let mut next = |out: &mut Out<_>| out.pad_to(off.next().copied().unwrap_or(0));
        next(&mut out)?;
        out.put(&manifest_json)?;
        for (_, bytes) in code {
            next(&mut out)?;
            out.put(bytes)?;
        }
        next(&mut out)?;
        out.put(&blob.header)?;
        for p in &blob.pieces {
            match p {
                Piece::Zeros(n) => out.zeros(*n as u64)?,
                Piece::Data(d) => out.put(d)?,
            }
        }
        if out.pos != data_end {
            return Err(std::io::Error::other(format!("internal error: wrote {} bytes, planned {data_end}", out.pos)));
        }
        let crc = out.crc.clone().finalize();
        out.w.write_all(&crc.to_le_bytes())?;
        let f = out.w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    })();
    match result.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(ArtifactError::Io { path: path.to_path_buf(), err: e })
        }
    }
}

// ---------------------------------------------------------------------------
// Reader

/// How to open an artifact.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Check that this machine can run the code (triple, CPU features) and
    /// resolve external weights. Off only to inspect an artifact built for
    /// another machine: then external weights are not opened.
    pub check_host: bool,
    /// Look for external weights files (by file name) in this directory
    /// instead of the paths recorded in the manifest.
    pub weights_dir: Option<PathBuf>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { check_host: true, weights_dir: None }
    }
}

struct ExternalFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

struct WeightEntry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// `None`: embedded; `Some(i)`: external file `i`.
    file: Option<usize>,
    start: usize,
    end: usize,
}

/// Where a weight's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightOrigin<'a> {
    Embedded,
    External(&'a Path),
}

/// A weight, zero-copy: its bytes are a slice of the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub name: &'a str,
    pub dtype: ElemType,
    pub shape: &'a [usize],
    pub data: &'a [u8],
    pub origin: WeightOrigin<'a>,
}

impl WeightView<'_> {
    /// The weight copied into host memory.
    pub fn to_host(&self) -> HostTensor {
        HostTensor { dtype: self.dtype, shape: self.shape.to_vec(), data: self.data.to_vec() }
    }
}

/// A weight's metadata (whatever its dtype, also ones omnirt cannot use).
#[derive(Clone, Debug)]
pub struct WeightMeta<'a> {
    pub name: &'a str,
    /// safetensors dtype name (`F32`, `BF16`, ...).
    pub dtype: String,
    pub shape: &'a [usize],
    pub nbytes: usize,
    pub origin: WeightOrigin<'a>,
}

/// A verified, memory-mapped artifact.
pub struct Artifact {
    path: PathBuf,
    map: memmap2::Mmap,
    version: u32,
    sections: Vec<SectionInfo>,
    manifest: Manifest,
    weights: BTreeMap<String, WeightEntry>,
    external: Vec<ExternalFile>,
    external_loaded: bool,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off.checked_add(4)?)?.try_into().ok().map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off.checked_add(8)?)?.try_into().ok().map(u64::from_le_bytes)
}

fn show_bytes(b: &[u8]) -> String {
    let s: String = b.iter().flat_map(|&c| std::ascii::escape_default(c)).map(char::from).collect();
    format!("\"{s}\"")
}

/// Index a safetensors buffer: name → (dtype, shape, absolute byte range),
/// padding tensors left out. `base` is the buffer's offset in its map.
/// A tensor found in a safetensors buffer: name, dtype, shape, byte range.
type Indexed = (String, Dtype, Vec<usize>, usize, usize);

fn index_safetensors(bytes: &[u8], base: usize) -> Result<Vec<Indexed>, String> {
    let (n, meta) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let data = base.checked_add(8).and_then(|v| v.checked_add(n)).ok_or("header length overflows")?;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        if name.starts_with(PAD_PREFIX) {
            continue;
        }
        let (s, e) = info.data_offsets;
        let (Some(start), Some(end)) = (data.checked_add(s), data.checked_add(e)) else { return Err(format!("tensor `{name}`: offsets overflow")) };
        out.push((name, info.dtype, info.shape.clone(), start, end));
    }
    Ok(out)
}

impl Artifact {
    /// Open and verify an artifact, including that this machine can run it.
    pub fn open(path: impl AsRef<Path>) -> Result<Artifact, ArtifactError> {
        Self::open_with(path, &OpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Artifact, ArtifactError> {
        let path = path.as_ref();
        let p = || path.to_path_buf();
        let io = |e: std::io::Error| ArtifactError::Io { path: path.to_path_buf(), err: e };
        let corrupt = |message: String| ArtifactError::Corrupt { path: path.to_path_buf(), message };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER_LEN as u64 {
            // Too short to map usefully; tell a truncated artifact from another file.
            let bytes = std::fs::read(path).map_err(io)?;
            let k = bytes.len().min(MAGIC.len());
            if bytes.get(..k) != MAGIC.get(..k) {
                return Err(ArtifactError::BadMagic { path: p(), found: show_bytes(bytes.get(..k).unwrap_or(&[])) });
            }
            return Err(ArtifactError::Truncated { path: p(), what: "the header", needed: HEADER_LEN as u64, len: bytes.len() as u64 });
        }
        // SAFETY: read-only map; like every mmap-based loader we rely on the
        // file not being truncated while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let b: &[u8] = &map;
        let len = b.len() as u64;
        if b.get(..8) != Some(&MAGIC[..]) {
            return Err(ArtifactError::BadMagic { path: p(), found: show_bytes(b.get(..8).unwrap_or(&[])) });
        }
        let hdr = |off: usize| u32_at(b, off).unwrap_or(0);
        let version = hdr(8);
        if version > FORMAT_VERSION {
            return Err(ArtifactError::NewerVersion { path: p(), version, supported: FORMAT_VERSION });
        }
        if version != FORMAT_VERSION {
            return Err(ArtifactError::UnsupportedVersion { path: p(), version, supported: FORMAT_VERSION });
        }
        let (flags, count, reserved) = (hdr(12), hdr(16), hdr(20));
        let file_len = u64_at(b, 24).unwrap_or(0);
        if file_len > len {
            return Err(ArtifactError::Truncated { path: p(), what: "the length in its header", needed: file_len, len });
        }
        if file_len < len {
            return Err(corrupt(format!("{} bytes after the end given in its header ({file_len} bytes)", len - file_len)));
        }
        if flags != 0 || reserved != 0 {
            return Err(corrupt(format!("unknown header flags {flags:#x} / reserved field {reserved:#x} (format version {version} has none)")));
        }
        if len < (HEADER_LEN + CHECKSUM_LEN) as u64 {
            return Err(corrupt(format!("{len} bytes is too short for a header and checksum")));
        }
        let body_end = b.len() - CHECKSUM_LEN;
        let stored = u32_at(b, body_end).unwrap_or(0);
        let computed = crc32fast::hash(b.get(..body_end).unwrap_or(&[]));
        if stored != computed {
            return Err(ArtifactError::Checksum { path: p(), stored, computed });
        }

        // Section table.
        if count as u64 > MAX_SECTIONS {
            return Err(corrupt(format!("{count} sections (at most {MAX_SECTIONS})")));
        }
        let table_end = HEADER_LEN + SECTION_ENTRY_LEN * count as usize;
        if table_end > body_end {
            return Err(corrupt(format!("the section table ({count} entries) runs past the end of the file")));
        }
        let in_body = |off: u64, n: u64, what: &str| -> Result<(usize, usize), ArtifactError> {
            let end = off.checked_add(n).filter(|&e| off >= table_end as u64 && e <= body_end as u64);
            match end {
                Some(e) => Ok((off as usize, e as usize)),
                None => Err(corrupt(format!("{what} (bytes {off}..+{n}) lies outside the file's data area ({table_end}..{body_end})"))),
            }
        };
        let mut sections = Vec::with_capacity(count as usize);
        let mut ranges = Vec::new();
        for i in 0..count as usize {
            let e = HEADER_LEN + i * SECTION_ENTRY_LEN;
            let (kind, name_len, off, slen, name_off) =
                (hdr(e), hdr(e + 4), u64_at(b, e + 8).unwrap_or(0), u64_at(b, e + 16).unwrap_or(0), u64_at(b, e + 24).unwrap_or(0));
            let kind = SectionKind::from_u32(kind).ok_or_else(|| corrupt(format!("section {i} has unknown kind {kind}")))?;
            let (ns, ne) = in_body(name_off, name_len as u64, &format!("the name of section {i}"))?;
            let name = std::str::from_utf8(b.get(ns..ne).unwrap_or(&[0xff])).map_err(|_| corrupt(format!("the name of section {i} is not UTF-8")))?.to_string();
            let (s, en) = in_body(off, slen, &format!("section {i} (`{name}`)"))?;
            ranges.push((ns, ne, format!("the name of section {i}")));
            ranges.push((s, en, format!("section {i} (`{name}`)")));
            sections.push(SectionInfo { kind, name, offset: off, len: slen });
        }
        ranges.sort();
        for w in ranges.windows(2) {
            if let [(_, e0, a), (s1, _, c)] = w {
                if s1 < e0 {
                    return Err(corrupt(format!("{a} overlaps {c}")));
                }
            }
        }
        let one = |kind: SectionKind, what: &str| -> Result<&SectionInfo, ArtifactError> {
            let mut it = sections.iter().filter(|s| s.kind == kind);
            match (it.next(), it.next()) {
                (Some(s), None) => Ok(s),
                (None, _) => Err(corrupt(format!("no {what} section"))),
                _ => Err(corrupt(format!("more than one {what} section"))),
            }
        };
        let mut code_names = HashSet::new();
        for s in sections.iter().filter(|s| s.kind == SectionKind::Code) {
            if s.name.is_empty() || !code_names.insert(s.name.as_str()) {
                return Err(corrupt(format!("code object name `{}` is empty or used twice", s.name)));
            }
        }
        let ms = one(SectionKind::Manifest, "manifest")?;
        let ws = one(SectionKind::Weights, "weights")?;
        let mbytes = b.get(ms.offset as usize..(ms.offset + ms.len) as usize).unwrap_or(&[]);
        let (wstart, wend) = (ws.offset as usize, (ws.offset + ws.len) as usize);
        let wbytes = b.get(wstart..wend).unwrap_or(&[]);

        // Manifest.
        let merr = |field: String, message: String| ArtifactError::Manifest { path: path.to_path_buf(), field, message };
        let mut de = serde_json::Deserializer::from_slice(mbytes);
        let manifest: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { "(top level)".to_string() } else { field };
            merr(field, e.into_inner().to_string())
        })?;
        de.end().map_err(|e| merr("(top level)".into(), e.to_string()))?;
        if manifest.format_version != version {
            return Err(merr("format_version".into(), format!("{} but the file header says {version}", manifest.format_version)));
        }
        check_manifest(&manifest, &|_| Lookup::Unchecked).map_err(|(f, m)| merr(f, m))?;

        // Embedded weights.
        let mut weights = BTreeMap::new();
        for (name, dtype, shape, start, end) in index_safetensors(wbytes, wstart).map_err(|message| ArtifactError::Weights { path: p(), message })? {
            weights.insert(name, WeightEntry { dtype, shape, file: None, start, end });
        }

        let mut art = Artifact { path: p(), map, version, sections, manifest, weights, external: Vec::new(), external_loaded: false };
        if opts.check_host {
            art.check_host()?;
            art.load_external(opts)?;
        }
        let loaded = art.external_loaded || matches!(art.manifest.weights, WeightSource::Embedded);
        let where_ = match &art.manifest.weights {
            WeightSource::Embedded => "the weights section".to_string(),
            WeightSource::External { files } => format!("the weights section nor {}", files.join(", ")),
        };
        check_manifest(&art.manifest, &|name| match art.weights.get(name) {
            Some(w) => Lookup::Found(elem_type(w.dtype).ok_or_else(|| format!("unsupported dtype {:?}", w.dtype)), &w.shape),
            None if loaded => Lookup::Missing(where_.clone()),
            None => Lookup::Unchecked,
        })
        .map_err(|(f, m)| merr(f, m))?;
        Ok(art)
    }

    /// Can this machine run the code: triple (arch and OS) and CPU features.
    pub fn check_host(&self) -> Result<(), ArtifactError> {
        let t = &self.manifest.target;
        host::check_host(&t.triple, &t.features).map_err(|m| match m {
            HostMismatch::Triple { message, .. } => ArtifactError::WrongTarget { path: self.path.clone(), message },
            HostMismatch::UnknownFeatures(names) => ArtifactError::UnknownCpuFeatures { path: self.path.clone(), names },
            HostMismatch::MissingFeatures(missing) => ArtifactError::MissingCpuFeatures { path: self.path.clone(), missing, cpu: t.cpu.clone() },
        })
    }

    fn load_external(&mut self, opts: &OpenOptions) -> Result<(), ArtifactError> {
        let WeightSource::External { files } = &self.manifest.weights else { return Ok(()) };
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        for f in files {
            let recorded = Path::new(f);
            let file = match (&opts.weights_dir, recorded.file_name()) {
                (Some(d), Some(n)) => d.join(n),
                _ if recorded.is_absolute() => recorded.to_path_buf(),
                _ => dir.join(recorded),
            };
            let xerr = |message: String| ArtifactError::ExternalWeights { path: self.path.clone(), file: file.clone(), message };
            let fh = std::fs::File::open(&file).map_err(|e| xerr(format!("{e} (external weights are looked up relative to the artifact's directory)")))?;
            // SAFETY: as for the artifact itself.
            let map = unsafe { memmap2::Mmap::map(&fh) }.map_err(|e| xerr(e.to_string()))?;
            let idx = self.external.len();
            for (name, dtype, shape, start, end) in index_safetensors(&map, 0).map_err(|e| xerr(format!("not a valid safetensors file: {e}")))? {
                if let Some(prev) = self.weights.get(&name) {
                    let other =
                        prev.file.and_then(|i| self.external.get(i)).map(|x| x.path.display().to_string()).unwrap_or_else(|| "the weights section".into());
                    return Err(xerr(format!("tensor `{name}` is also in {other}")));
                }
                self.weights.insert(name, WeightEntry { dtype, shape, file: Some(idx), start, end });
            }
            self.external.push(ExternalFile { path: file, map });
        }
        self.external_loaded = true;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version of the file.
    pub fn format_version(&self) -> u32 {
        self.version
    }

    /// Size of the artifact file in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The section table.
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    fn section_bytes(&self, s: &SectionInfo) -> &[u8] {
        self.map.get(s.offset as usize..(s.offset + s.len) as usize).unwrap_or(&[])
    }

    /// Code objects `(name, bytes)`, in file order.
    pub fn code_objects(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.sections.iter().filter(|s| s.kind == SectionKind::Code).map(|s| (s.name.as_str(), self.section_bytes(s)))
    }

    /// The bytes of code object `name`.
    pub fn code(&self, name: &str) -> Result<&[u8], ArtifactError> {
        self.code_objects().find(|(n, _)| *n == name).map(|(_, b)| b).ok_or_else(|| ArtifactError::NoCode {
            path: self.path.clone(),
            name: name.to_string(),
            available: self.code_objects().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        })
    }

    /// The weights section: a complete safetensors file.
    pub fn weights_section(&self) -> &[u8] {
        self.sections.iter().find(|s| s.kind == SectionKind::Weights).map(|s| self.section_bytes(s)).unwrap_or(&[])
    }

    /// Whether external weights files were opened (see [`OpenOptions`]).
    pub fn external_loaded(&self) -> bool {
        self.external_loaded
    }

    /// The external weights files as resolved, when loaded.
    pub fn external_files(&self) -> Vec<&Path> {
        self.external.iter().map(|x| x.path.as_path()).collect()
    }

    /// Names of all weights (embedded, and external when loaded), sorted.
    pub fn weight_names(&self) -> Vec<&str> {
        self.weights.keys().map(String::as_str).collect()
    }

    fn origin(&self, w: &WeightEntry) -> WeightOrigin<'_> {
        match w.file.and_then(|i| self.external.get(i)) {
            Some(x) => WeightOrigin::External(&x.path),
            None => WeightOrigin::Embedded,
        }
    }

    fn bytes_of(&self, w: &WeightEntry) -> &[u8] {
        let map: &[u8] = match w.file.and_then(|i| self.external.get(i)) {
            Some(x) => &x.map,
            None => &self.map,
        };
        map.get(w.start..w.end).unwrap_or(&[])
    }

    /// Metadata of every weight, sorted by name.
    pub fn weights(&self) -> impl Iterator<Item = WeightMeta<'_>> {
        self.weights.iter().map(|(name, w)| WeightMeta {
            name,
            dtype: format!("{:?}", w.dtype),
            shape: &w.shape,
            nbytes: w.end.saturating_sub(w.start),
            origin: self.origin(w),
        })
    }

    /// A weight, zero-copy.
    pub fn weight(&self, name: &str) -> Result<WeightView<'_>, ArtifactError> {
        let werr = |message: String| ArtifactError::Weight { path: self.path.clone(), name: name.to_string(), message };
        let Some((key, w)) = self.weights.get_key_value(name) else {
            let message = match (&self.manifest.weights, self.external_loaded) {
                (WeightSource::External { .. }, false) => "not in the weights section, and external weights were not opened".to_string(),
                (WeightSource::External { files }, true) => format!("neither in the weights section nor in {}", files.join(", ")),
                (WeightSource::Embedded, _) => "not in the weights section".to_string(),
            };
            return Err(werr(message));
        };
        let dtype = elem_type(w.dtype).ok_or_else(|| werr(format!("unsupported dtype {:?}", w.dtype)))?;
        Ok(WeightView { name: key, dtype, shape: &w.shape, data: self.bytes_of(w), origin: self.origin(w) })
    }
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact").field("path", &self.path).field("version", &self.version).field("sections", &self.sections).finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Manifest checks (shared by writer and reader)

/// What a weight name resolves to.
enum Lookup<'a> {
    /// dtype (or why it is unusable) and shape.
    Found(Result<ElemType, String>, &'a [usize]),
    /// Not found in the named place.
    Missing(String),
    /// Not checked (external weights not opened).
    Unchecked,
}

/// A dimension that is a constant expression, evaluated without overflow.
fn const_dim(d: &DimExpr) -> Option<i64> {
    match d {
        DimExpr::Const(v) => Some(*v),
        DimExpr::Sym(_) => None,
        DimExpr::Add(ts) => ts.iter().try_fold(0i64, |a, t| a.checked_add(const_dim(t)?)),
        DimExpr::Mul(ts) => ts.iter().try_fold(1i64, |a, t| a.checked_mul(const_dim(t)?)),
        DimExpr::Div(x, k) => {
            let v = const_dim(x)?;
            (*k > 0 && v % k == 0).then_some(v / k)
        }
    }
}

fn const_shape(s: &[DimExpr]) -> Option<Vec<usize>> {
    s.iter().map(|d| const_dim(d).and_then(|v| usize::try_from(v).ok())).collect()
}

/// References of a manifest: every id defined once and used where defined,
/// inputs/outputs/steps/views resolve, step results are `Computed` values
/// written once, before any use; constants match their shape; weights
/// resolve with their dtype and shape (as far as `weight` knows).
fn check_manifest<'w>(m: &Manifest, weight: &dyn Fn(&str) -> Lookup<'w>) -> Result<(), (String, String)> {
    let mut stage_names = HashSet::new();
    for (si, s) in m.stages.iter().enumerate() {
        let at = |rest: String| format!("stages[{si}]{rest}");
        let sn = &s.name;
        if !stage_names.insert(sn.as_str()) {
            return Err((at(".name".into()), format!("stage `{sn}` is defined twice")));
        }
        let mut by_id: HashMap<u32, usize> = HashMap::new();
        for (vi, v) in s.values.iter().enumerate() {
            if by_id.insert(v.id, vi).is_some() {
                return Err((at(format!(".values[{vi}].id")), format!("value {} is defined twice in stage `{sn}`", v.id)));
            }
        }
        let mut input_names = HashSet::new();
        for (vi, v) in s.values.iter().enumerate() {
            let f = || at(format!(".values[{vi}]"));
            match &v.def {
                ValueDef::View { of } => {
                    if !by_id.contains_key(of) {
                        return Err((f(), format!("value {} is a view of value {of}, which stage `{sn}` does not define", v.id)));
                    }
                }
                ValueDef::Constant { values } => {
                    if let Some(n) = const_shape(&v.shape).and_then(|d| d.iter().try_fold(1usize, |a, &x| a.checked_mul(x))) {
                        if n != values.len() {
                            return Err((f(), format!("constant value {} has {} elements for {n} of its shape", v.id, values.len())));
                        }
                    }
                }
                ValueDef::Input { name } => {
                    if !input_names.insert(name.as_str()) {
                        return Err((f(), format!("input `{name}` is defined twice in stage `{sn}`")));
                    }
                }
                ValueDef::Weight { name } => match weight(name) {
                    Lookup::Found(Ok(dtype), shape) => {
                        if dtype != v.dtype {
                            return Err((f(), format!("weight `{name}` is {dtype} but the program expects {}", v.dtype)));
                        }
                        if let Some(want) = const_shape(&v.shape) {
                            if want != shape {
                                return Err((f(), format!("weight `{name}` has shape {shape:?} but the program expects {want:?}")));
                            }
                        }
                    }
                    Lookup::Found(Err(e), _) => return Err((f(), format!("weight `{name}`: {e}"))),
                    Lookup::Missing(place) => return Err((f(), format!("weight `{name}` is not in {place}"))),
                    Lookup::Unchecked => {}
                },
                ValueDef::Computed => {}
            }
        }
        // Views resolve to a root without cycles.
        let root = |id: u32| -> Option<u32> {
            let mut cur = id;
            for _ in 0..=s.values.len() {
                match s.values.get(*by_id.get(&cur)?).map(|v| &v.def) {
                    Some(ValueDef::View { of }) => cur = *of,
                    Some(_) => return Some(cur),
                    None => return None,
                }
            }
            None
        };
        for v in &s.values {
            if matches!(v.def, ValueDef::View { .. }) && root(v.id).is_none() {
                return Err((at(".values".into()), format!("value {} is a view in a cycle of views", v.id)));
            }
        }
        let def_of = |id: u32| by_id.get(&id).and_then(|&i| s.values.get(i)).map(|v| &v.def);
        let mut listed = HashSet::new();
        for (ii, id) in s.inputs.iter().enumerate() {
            if !matches!(def_of(*id), Some(ValueDef::Input { .. })) || !listed.insert(*id) {
                return Err((at(format!(".inputs[{ii}]")), format!("value {id} is not an input value of stage `{sn}` (or is listed twice)")));
            }
        }
        if let Some(v) = s.values.iter().find(|v| matches!(v.def, ValueDef::Input { .. }) && !listed.contains(&v.id)) {
            return Err((at(".inputs".into()), format!("input value {} is missing from the stage's input list", v.id)));
        }
        let mut written: HashSet<u32> = HashSet::new();
        let ready = |id: u32, written: &HashSet<u32>| match root(id).and_then(def_of) {
            Some(ValueDef::Computed) => root(id).is_some_and(|r| written.contains(&r)),
            Some(_) => true,
            None => false,
        };
        for (ti, step) in s.steps.iter().enumerate() {
            let (args, results) = match step {
                Step::Kernel { symbol, args, results, split } => {
                    if symbol.is_empty() || !symbol.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$') {
                        return Err((at(format!(".steps[{ti}].symbol")), format!("`{symbol}` is not a valid symbol name")));
                    }
                    for sp in split {
                        let rank = |id: &u32| s.values.iter().find(|v| v.id == *id).map_or(0, |v| v.shape.len());
                        let ok = |axes: &[Option<u32>], ids: &[u32]| {
                            axes.len() == ids.len() && axes.iter().zip(ids).all(|(a, id)| a.is_none_or(|a| (a as usize) < rank(id)))
                        };
                        if !ok(&sp.args, args) || !ok(&sp.results, results) || sp.results.iter().any(Option::is_none) {
                            return Err((
                                at(format!(".steps[{ti}].split")),
                                "needs one axis (or null) per argument and one axis per result, each below the value's rank".to_string(),
                            ));
                        }
                    }
                    (args, results)
                }
                Step::Ukernel { args, results, .. } => (args, results),
            };
            for (ai, a) in args.iter().enumerate() {
                if def_of(*a).is_none() {
                    return Err((at(format!(".steps[{ti}].args[{ai}]")), format!("value {a} is not defined in stage `{sn}`")));
                }
                if !ready(*a, &written) {
                    return Err((at(format!(".steps[{ti}].args[{ai}]")), format!("value {a} is used before a step computes it")));
                }
            }
            for (ri, r) in results.iter().enumerate() {
                if !matches!(def_of(*r), Some(ValueDef::Computed)) {
                    return Err((at(format!(".steps[{ti}].results[{ri}]")), format!("value {r} is not a computed value of stage `{sn}`")));
                }
                if !written.insert(*r) {
                    return Err((at(format!(".steps[{ti}].results[{ri}]")), format!("value {r} is computed twice")));
                }
            }
        }
        if !s.flops.is_empty() && s.flops.len() != s.steps.len() {
            return Err((at(".flops".into()), format!("{} FLOP counts for {} steps", s.flops.len(), s.steps.len())));
        }
        let mut out_names = HashSet::new();
        for (oi, (name, id)) in s.outputs.iter().enumerate() {
            if !out_names.insert(name.as_str()) {
                return Err((at(format!(".outputs[{oi}]")), format!("output `{name}` is listed twice")));
            }
            if def_of(*id).is_none() || !ready(*id, &written) {
                return Err((at(format!(".outputs[{oi}]")), format!("output `{name}` is value {id}, which no step of stage `{sn}` computes")));
            }
        }
    }
    match &m.control {
        Control::Forward { stage } => {
            if !stage_names.contains(stage.as_str()) {
                return Err(("control.forward.stage".into(), format!("stage `{stage}` is not defined")));
            }
        }
        Control::Denoise(d) => {
            for stage in d.stage_names() {
                if !stage_names.contains(stage) {
                    return Err(("control.denoise".into(), format!("stage `{stage}` is not defined")));
                }
            }
        }
        Control::Decode(d) => {
            for stage in d.stage_names() {
                if !stage_names.contains(stage) {
                    return Err(("control.decode".into(), format!("stage `{stage}` is not defined")));
                }
            }
            if d.max_len == 0 {
                return Err(("control.decode.max_len".into(), "must be at least 1".into()));
            }
        }
    }
    Ok(())
}
