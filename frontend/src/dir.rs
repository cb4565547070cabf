//! Model directory detection and config reading.

use crate::error::LoadError;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A parsed JSON config with the file it came from (for error messages).
#[derive(Clone, Debug)]
pub struct RawConfig {
    pub path: PathBuf,
    pub value: serde_json::Value,
}

impl RawConfig {
    /// Read and parse a JSON file; syntax errors report line and column.
    pub fn read(path: &Path) -> Result<RawConfig, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io { path: path.to_path_buf(), err: e })?;
        let value = serde_json::from_str(&text).map_err(|e| LoadError::BadJson {
            path: path.to_path_buf(),
            line: e.line(),
            col: e.column(),
            message: e.to_string(),
        })?;
        Ok(RawConfig { path: path.to_path_buf(), value })
    }

    /// Deserialize into a typed config; a missing or mistyped field is named.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, LoadError> {
        serde_json::from_value(self.value.clone())
            .map_err(|e| LoadError::BadConfig { path: self.path.clone(), message: format!("invalid config: {e}") })
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.value.get(key).and_then(|v| v.as_str())
    }
}

/// A model directory: where its config and weights are and which
/// architecture it holds.
#[derive(Clone, Debug)]
pub struct ModelDir {
    /// The directory the user named.
    pub root: PathBuf,
    /// The directory holding the main model's config and weights (the
    /// `transformer/` component of a pipeline directory, else `root`).
    pub model: PathBuf,
    /// Architecture class name (`FluxTransformer2DModel`, `Qwen3ForCausalLM`, ...).
    pub class: String,
    pub config: RawConfig,
    /// Pipeline components (name → sub-directory) when `root` has `model_index.json`.
    pub components: Vec<(String, PathBuf)>,
}

/// Components of a pipeline that hold the denoiser, in preference order.
const DENOISER_COMPONENTS: [&str; 2] = ["transformer", "unet"];

impl ModelDir {
    pub fn open(root: &Path) -> Result<ModelDir, LoadError> {
        if !root.is_dir() {
            return Err(LoadError::NoDirectory(root.to_path_buf()));
        }
        let index = root.join("model_index.json");
        let mut components = Vec::new();
        let model = if index.is_file() {
            let idx = RawConfig::read(&index)?;
            let obj = idx.value.as_object().ok_or_else(|| LoadError::BadConfig { path: index.clone(), message: "expected a JSON object".into() })?;
            for (k, v) in obj {
                if !k.starts_with('_') && v.is_array() {
                    components.push((k.clone(), root.join(k)));
                }
            }
            components.sort();
            let comp = DENOISER_COMPONENTS.iter().find(|c| components.iter().any(|(k, _)| k == *c)).ok_or_else(|| {
                LoadError::BadConfig { path: index.clone(), message: "pipeline has no `transformer` or `unet` component".into() }
            })?;
            root.join(comp)
        } else if root.join("transformer").join("config.json").is_file() {
            // A pipeline laid out without model_index.json (transformer/ + scheduler/ [+ vae/]).
            for c in ["transformer", "scheduler", "vae", "text_encoder", "tokenizer"] {
                if root.join(c).is_dir() {
                    components.push((c.to_string(), root.join(c)));
                }
            }
            root.join("transformer")
        } else {
            root.to_path_buf()
        };
        let cfg_path = model.join("config.json");
        if !cfg_path.is_file() {
            return Err(LoadError::MissingFile { dir: model.clone(), what: "config.json".into() });
        }
        let config = RawConfig::read(&cfg_path)?;
        let class = config
            .get_str("_class_name")
            .map(|s| s.to_string())
            .or_else(|| config.value.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).map(|s| s.to_string()))
            .ok_or_else(|| LoadError::BadConfig {
                path: cfg_path.clone(),
                message: "no `_class_name` (diffusers) or `architectures` (transformers) field: cannot tell the architecture".into(),
            })?;
        Ok(ModelDir { root: root.to_path_buf(), model, class, config, components })
    }

    /// Sub-directory of a pipeline component, if present.
    pub fn component(&self, name: &str) -> Option<&Path> {
        self.components.iter().find(|(k, _)| k == name).map(|(_, p)| p.as_path()).filter(|p| p.is_dir())
    }
}

#[cfg(test)]
#[path = "tests/dir.rs"]
mod tests;
