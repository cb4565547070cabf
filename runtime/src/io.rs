//! safetensors files: memory-mapped reading and writing.

use crate::error::RtError;
use crate::tensor::{ElemType, HostTensor};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// The runtime element type of a safetensors dtype, if supported.
pub fn elem_type(d: Dtype) -> Option<ElemType> {
    Some(match d {
        Dtype::F32 => ElemType::F32,
        Dtype::F16 => ElemType::F16,
        Dtype::BF16 => ElemType::BF16,
        Dtype::F64 => ElemType::F64,
        Dtype::I64 => ElemType::I64,
        Dtype::I32 => ElemType::I32,
        Dtype::BOOL => ElemType::Bool,
        _ => return None,
    })
}

fn st_dtype(e: ElemType) -> Dtype {
    match e {
        ElemType::F32 => Dtype::F32,
        ElemType::F16 => Dtype::F16,
        ElemType::BF16 => Dtype::BF16,
        ElemType::F64 => Dtype::F64,
        ElemType::I64 => Dtype::I64,
        ElemType::I32 => Dtype::I32,
        ElemType::Bool => Dtype::BOOL,
    }
}

/// A memory-mapped safetensors file.
pub struct MappedFile {
    path: std::path::PathBuf,
    map: memmap2::Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<MappedFile, RtError> {
        let f = std::fs::File::open(path).map_err(|e| RtError::io(path, e))?;
        // SAFETY: the file is opened read-only; like every mmap-based loader we
        // rely on it not being truncated while mapped.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| RtError::io(path, e))?;
        let mf = MappedFile { path: path.to_path_buf(), map };
        mf.parse()?;
        Ok(mf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Parsed view of the mapped bytes (cheap: header only).
    pub fn parse(&self) -> Result<SafeTensors<'_>, RtError> {
        SafeTensors::deserialize(&self.map[..])
            .map_err(|e| RtError::BadSafetensors { path: self.path.clone(), message: e.to_string() })
    }

    /// Names in the file, sorted.
    pub fn names(&self) -> Result<Vec<String>, RtError> {
        let mut n: Vec<String> = self.parse()?.names().into_iter().map(|s| s.to_string()).collect();
        n.sort();
        Ok(n)
    }

    /// One tensor copied out of the map.
    pub fn tensor(&self, name: &str) -> Result<HostTensor, RtError> {
        let st = self.parse()?;
        let v = st.tensor(name).map_err(|_| RtError::Tensor {
            name: name.to_string(),
            message: format!("not found in {}", self.path.display()),
        })?;
        let dtype = elem_type(v.dtype()).ok_or_else(|| RtError::UnsupportedDtype {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", v.dtype()),
        })?;
        Ok(HostTensor { dtype, shape: v.shape().to_vec(), data: v.data().to_vec() })
    }
}

/// Read every tensor of a safetensors file.
pub fn read_all(path: &Path) -> Result<Vec<(String, HostTensor)>, RtError> {
    let f = MappedFile::open(path)?;
    f.names()?.into_iter().map(|n| f.tensor(&n).map(|t| (n, t))).collect()
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        st_dtype(self.dtype)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Write tensors to a safetensors file (optionally with string metadata).
pub fn write(path: &Path, tensors: &[(String, HostTensor)], metadata: Option<HashMap<String, String>>) -> Result<(), RtError> {
    for (name, t) in tensors {
        if t.data.len() != t.numel() * t.dtype.size_bytes() {
            return Err(RtError::Tensor { name: name.clone(), message: format!("{} bytes for shape {:?} of {}", t.data.len(), t.shape, t.dtype) });
        }
    }
    let items: Vec<(&str, &HostTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    safetensors::tensor::serialize_to_file(items, metadata, path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(io) => RtError::io(path, io),
        other => RtError::BadSafetensors { path: path.to_path_buf(), message: other.to_string() },
    })
}

/// A byte count for people: `512 B`, `1.5 KiB`, `272.4 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
#[path = "tests/io.rs"]
mod tests;
