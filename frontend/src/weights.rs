//! Checkpoint weights: memory-mapped safetensors, single file or sharded.
//!
//! Tensors stay in the page cache until asked for; `f32` copies are made on
//! access (f16 and bf16 are widened exactly).

use crate::dir::RawConfig;
use crate::error::LoadError;
use omnic_ir::eval::{Tensor, WeightStore};
use omnic_runtime::io::{elem_type, MappedFile};
use omnic_runtime::ElemType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// All weights of one model directory.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<MappedFile>,
    /// tensor name → index into `files`
    index: HashMap<String, usize>,
    /// Tensors replaced in memory (merged LoRA updates): name → (shape, f32 values).
    overlay: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Element type and shape of a stored tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub dtype: ElemType,
    pub shape: Vec<usize>,
}

impl Checkpoint {
    /// Open the weights of `dir`: the shards listed by a
    /// `*.safetensors.index.json`, else every `*.safetensors` file.
    pub fn open(dir: &Path) -> Result<Checkpoint, LoadError> {
        let entries = std::fs::read_dir(dir).map_err(|e| LoadError::Io { path: dir.to_path_buf(), err: e })?;
        let mut names: Vec<String> = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        let mut files = Vec::new();
        let mut index = HashMap::new();
        if let Some(idx_name) = names.iter().find(|n| n.ends_with(".safetensors.index.json")) {
            let idx = RawConfig::read(&dir.join(idx_name))?;
            let map = idx.value.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| LoadError::BadConfig {
                path: idx.path.clone(),
                message: "no `weight_map` object".into(),
            })?;
            let mut shard_ids: HashMap<String, usize> = HashMap::new();
            let mut pairs: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            for (tensor, shard) in pairs {
                let shard = shard.as_str().ok_or_else(|| LoadError::BadConfig {
                    path: idx.path.clone(),
                    message: format!("`weight_map.{tensor}` is not a file name"),
                })?;
                let id = match shard_ids.get(shard) {
                    Some(&i) => i,
                    None => {
                        let p = dir.join(shard);
                        if !p.is_file() {
                            return Err(LoadError::MissingFile { dir: dir.to_path_buf(), what: format!("shard `{shard}` listed in {idx_name}") });
                        }
                        files.push(MappedFile::open(&p)?);
                        shard_ids.insert(shard.to_string(), files.len() - 1);
                        files.len() - 1
                    }
                };
                index.insert(tensor.clone(), id);
            }
            // The index must not promise tensors its shards lack.
            for (t, &i) in &index {
                if files[i].parse()?.tensor(t).is_err() {
                    return Err(LoadError::MissingTensor {
                        name: t.clone(),
                        dir: dir.to_path_buf(),
                        hint: format!(" (listed in {idx_name} for {})", files[i].path().display()),
                    });
                }
            }
        } else {
            for n in names.iter().filter(|n| n.ends_with(".safetensors")) {
                let f = MappedFile::open(&dir.join(n))?;
                for t in f.names()? {
                    index.insert(t, files.len());
                }
                files.push(f);
            }
            if files.is_empty() {
                return Err(LoadError::MissingFile { dir: dir.to_path_buf(), what: "*.safetensors weights".into() });
            }
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), files, index, overlay: HashMap::new() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(|s| s.as_str()).collect();
        v.sort();
        v
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn missing(&self, name: &str) -> LoadError {
        // Suggest the stored name sharing the longest suffix, which is what
        // a mis-mapped module path usually looks like.
        let best = self
            .index
            .keys()
            .map(|k| (k.chars().rev().zip(name.chars().rev()).take_while(|(a, b)| a == b).count(), k))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)));
        let hint = match best {
            Some((n, k)) if n >= 6 => format!(" (closest stored name: `{k}`)"),
            _ => String::new(),
        };
        LoadError::MissingTensor { name: name.to_string(), dir: self.dir.clone(), hint }
    }

    /// Replace a stored tensor's values in memory (same shape; read back as
    /// f32 by every accessor). Used to merge LoRA updates into weights.
    pub fn set_overlay(&mut self, name: &str, shape: &[usize], values: Vec<f32>) -> Result<(), LoadError> {
        let info = self.info(name)?;
        if info.shape != shape || values.len() != shape.iter().product::<usize>() {
            return Err(LoadError::ShapeMismatch { name: name.to_string(), expected: info.shape, found: shape.to_vec() });
        }
        self.overlay.insert(name.to_string(), (shape.to_vec(), values));
        Ok(())
    }

    /// Whether `name` was replaced in memory (its values are not those of
    /// the files).
    pub fn is_overlaid(&self, name: &str) -> bool {
        self.overlay.contains_key(name)
    }

    /// Dtype and shape of a stored tensor.
    pub fn info(&self, name: &str) -> Result<TensorInfo, LoadError> {
        if let Some((shape, _)) = self.overlay.get(name) {
            return Ok(TensorInfo { dtype: ElemType::F32, shape: shape.clone() });
        }
        let &i = self.index.get(name).ok_or_else(|| self.missing(name))?;
        let f = &self.files[i];
        let st = f.parse()?;
        let v = st.tensor(name).map_err(|_| self.missing(name))?;
        let dtype = elem_type(v.dtype()).ok_or_else(|| LoadError::UnsupportedDtype {
            name: name.to_string(),
            path: f.path().to_path_buf(),
            dtype: format!("{:?}", v.dtype()),
        })?;
        Ok(TensorInfo { dtype, shape: v.shape().to_vec() })
    }

    /// Check a tensor exists with the expected shape and a float dtype the
    /// compiler accepts (F32, F16, BF16).
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<TensorInfo, LoadError> {
        let info = self.info(name)?;
        if !matches!(info.dtype, ElemType::F32 | ElemType::F16 | ElemType::BF16) {
            return Err(LoadError::UnsupportedDtype {
                name: name.to_string(),
                path: self.files[self.index[name]].path().to_path_buf(),
                dtype: info.dtype.name().to_string(),
            });
        }
        if info.shape != shape {
            return Err(LoadError::ShapeMismatch { name: name.to_string(), expected: shape.to_vec(), found: info.shape });
        }
        Ok(info)
    }

    /// A tensor's values widened to f32.
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LoadError> {
        if let Some((shape, v)) = self.overlay.get(name) {
            return Ok((shape.clone(), v.clone()));
        }
        let &i = self.index.get(name).ok_or_else(|| self.missing(name))?;
        let t = self.files[i].tensor(name)?;
        if !t.dtype.is_float() {
            return Err(LoadError::UnsupportedDtype { name: name.to_string(), path: self.files[i].path().to_path_buf(), dtype: t.dtype.name().into() });
        }
        Ok((t.shape.clone(), t.to_f32_vec()))
    }

    /// Total number of stored elements (parameter count).
    pub fn param_count(&self) -> Result<usize, LoadError> {
        self.names().iter().map(|n| self.info(n).map(|i| i.shape.iter().product::<usize>())).sum()
    }
}

impl WeightStore for Checkpoint {
    fn weight(&self, name: &str) -> Result<Tensor, String> {
        let (shape, v) = self.f32(name).map_err(|e| e.to_string())?;
        Ok(Tensor::from_f32(&shape, &v))
    }
}

#[cfg(test)]
#[path = "tests/weights.rs"]
mod tests;
