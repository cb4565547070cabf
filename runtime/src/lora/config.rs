//! A PEFT `LoraConfig` as `adapter_config.json` stores it (and as diffusers
//! stores it, prefixed by component, in a safetensors header).
//!
//! Fields read: `r` (default 8), `lora_alpha` (default 8), `use_rslora`,
//! `target_modules`, `rank_pattern`, `alpha_pattern`; fields that change
//! the math in ways this reader does not implement (`use_dora`,
//! `fan_in_fan_out`, `lora_bias`, a `peft_type` other than `LORA`) are
//! refused. Pattern keys match a module whose name is the key or ends with
//! `.<key>` (PEFT matches them as regular expressions anchored the same way;
//! plain module names, which is what PEFT and diffusers write, behave
//! identically).

use super::LoraError;
use serde_json::Value;
use std::path::Path;

/// Which modules a config targets.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Module names (or name suffixes after a `.`).
    Names(Vec<String>),
    /// A regular expression (not checked here: the stored tensors decide).
    Regex(String),
    /// Not given.
    Any,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub targets: Targets,
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
}

/// Whether `module` matches the pattern key `key` (see the module doc).
pub fn matches(module: &str, key: &str) -> bool {
    module == key || module.ends_with(&format!(".{key}"))
}

impl LoraConfig {
    /// Parse a config object; `path` names the file in errors.
    pub fn from_value(path: &Path, v: &Value) -> Result<LoraConfig, LoraError> {
        let bad = |message: String| LoraError::Config { path: path.to_path_buf(), message };
        let obj = v.as_object().ok_or_else(|| bad("the config is not a JSON object".into()))?;
        let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
        if let Some(t) = present("peft_type") {
            if t.as_str() != Some("LORA") {
                return Err(bad(format!("`peft_type` is {t}, expected \"LORA\"")));
            }
        }
        let flag = |k: &str| -> Result<bool, LoraError> {
            match present(k) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(bad(format!("`{k}` is {other}, expected true or false"))),
            }
        };
        for k in ["use_dora", "fan_in_fan_out", "lora_bias"] {
            if flag(k)? {
                return Err(bad(format!("`{k}: true` is not supported (only plain LoRA: W + (alpha/r)·B·A)")));
            }
        }
        let use_rslora = flag("use_rslora")?;
        let r = match present("r") {
            None => 8,
            Some(v) => positive_int(v).ok_or_else(|| bad(format!("`r` is {v}, expected a positive integer")))?,
        };
        let lora_alpha = match present("lora_alpha") {
            None => 8.0,
            Some(v) => v.as_f64().filter(|a| a.is_finite()).ok_or_else(|| bad(format!("`lora_alpha` is {v}, expected a number")))?,
        };
        let targets = match present("target_modules") {
            None => Targets::Any,
            Some(Value::String(s)) => Targets::Regex(s.clone()),
            Some(Value::Array(a)) => Targets::Names(
                a.iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(format!("`target_modules` holds {x}, expected module names"))))
                    .collect::<Result<_, _>>()?,
            ),
            Some(other) => return Err(bad(format!("`target_modules` is {other}, expected a list of module names or a regular expression"))),
        };
        let pattern = |k: &str| -> Result<Vec<(String, f64)>, LoraError> {
            match present(k) {
                None => Ok(Vec::new()),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(name, v)| {
                        v.as_f64().filter(|x| x.is_finite()).map(|x| (name.clone(), x)).ok_or_else(|| bad(format!("`{k}.{name}` is {v}, expected a number")))
                    })
                    .collect(),
                Some(other) => Err(bad(format!("`{k}` is {other}, expected an object"))),
            }
        };
        let mut rank_pattern = Vec::new();
        for (name, x) in pattern("rank_pattern")? {
            if x < 1.0 || x.fract() != 0.0 {
                return Err(bad(format!("`rank_pattern.{name}` is {x}, expected a positive integer")));
            }
            rank_pattern.push((name, x as usize));
        }
        let alpha_pattern = pattern("alpha_pattern")?;
        Ok(LoraConfig { r, lora_alpha, use_rslora, targets, rank_pattern, alpha_pattern })
    }

    /// Read `adapter_config.json`.
    pub fn read(path: &Path) -> Result<LoraConfig, LoraError> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::error::RtError::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LoraError::Config { path: path.to_path_buf(), message: format!("invalid JSON at line {}, column {}: {e}", e.line(), e.column()) })?;
        Self::from_value(path, &v)
    }

    /// Configured rank of `module` (`rank_pattern` first).
    pub fn rank(&self, module: &str) -> usize {
        self.rank_pattern.iter().find(|(k, _)| matches(module, k)).map_or(self.r, |(_, r)| *r)
    }

    /// `lora_alpha` of `module` (`alpha_pattern` first).
    pub fn alpha(&self, module: &str) -> f64 {
        self.alpha_pattern.iter().find(|(k, _)| matches(module, k)).map_or(self.lora_alpha, |(_, a)| *a)
    }

    /// The scaling PEFT applies to `module`'s update: `alpha / r`, or
    /// `alpha / √r` with rsLoRA.
    pub fn scaling(&self, module: &str) -> f64 {
        let r = self.rank(module) as f64;
        if self.use_rslora {
            self.alpha(module) / r.sqrt()
        } else {
            self.alpha(module) / r
        }
    }

    /// Whether the config targets `module`.
    pub fn targets(&self, module: &str) -> bool {
        match &self.targets {
            Targets::Names(n) => n.iter().any(|k| matches(module, k)),
            Targets::Regex(_) | Targets::Any => true,
        }
    }
}

fn positive_int(v: &Value) -> Option<usize> {
    v.as_u64().filter(|&x| x >= 1).map(|x| x as usize)
}
