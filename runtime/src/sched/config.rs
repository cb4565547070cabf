//! Reading a diffusers `scheduler_config.json`: typed field access with
//! diffusers' defaults, errors that name the file and the field.
//!
//! Unknown keys are ignored (diffusers does the same, with a warning), so a
//! config written for a sibling class (SD1.x ships a `PNDMScheduler` config
//! that pipelines re-use for DDIM) loads as long as the fields we read make
//! sense. `null` for a boolean is read as `false` (Python truthiness, which
//! is what diffusers tests); `null` for a required number is an error.

use super::SchedError;
use serde_json::{Map, Value};

/// A scheduler config object plus the name of where it came from.
pub struct ConfigReader<'a> {
    map: &'a Map<String, Value>,
    source: &'a str,
}

impl<'a> ConfigReader<'a> {
    pub fn new(value: &'a Value, source: &'a str) -> Result<Self, SchedError> {
        match value.as_object() {
            Some(map) => Ok(ConfigReader { map, source }),
            None => Err(SchedError::config(source, "<root>", "a scheduler config must be a JSON object")),
        }
    }

    pub fn source(&self) -> &str {
        self.source
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// An error about `field` of this config.
    pub fn err(&self, field: &str, message: impl Into<String>) -> SchedError {
        SchedError::config(self.source, field, message)
    }

    /// `field` set to a value the runtime refuses to emulate.
    pub fn unsupported(&self, field: &str, value: impl std::fmt::Display, why: &str) -> SchedError {
        self.err(field, format!("{value} is not supported by the runtime scheduler ({why})"))
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, SchedError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Err(self.err(key, "is null; expected a number")),
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    /// A float that may be absent or `null` (diffusers' `float | None`).
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, SchedError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.err(key, format!("expected a number or null, found {v}"))),
        }
    }

    /// A non-negative integer (an integral float such as `1000.0` is accepted).
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize, SchedError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Err(self.err(key, "is null; expected a non-negative integer")),
            Some(v) => {
                if let Some(u) = v.as_u64() {
                    return Ok(u as usize);
                }
                match v.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e15 => Ok(f as usize),
                    _ => Err(self.err(key, format!("expected a non-negative integer, found {v}"))),
                }
            }
        }
    }

    /// An integer (may be negative).
    pub fn i64_or(&self, key: &str, default: i64) -> Result<i64, SchedError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Err(self.err(key, "is null; expected an integer")),
            Some(v) => {
                if let Some(i) = v.as_i64() {
                    return Ok(i);
                }
                match v.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(f as i64),
                    _ => Err(self.err(key, format!("expected an integer, found {v}"))),
                }
            }
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, SchedError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str, SchedError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(v) => Err(self.err(key, format!("expected a string, found {v}"))),
        }
    }

    /// A string that must be one of `allowed`.
    pub fn choice(&self, key: &str, default: &'a str, allowed: &[&str]) -> Result<&'a str, SchedError> {
        let s = self.str_or(key, default)?;
        if allowed.contains(&s) {
            Ok(s)
        } else {
            Err(self.err(key, format!("\"{s}\" is not one of {}", quote_list(allowed))))
        }
    }

    /// An optional list of numbers (`trained_betas`).
    pub fn opt_f64_list(&self, key: &str) -> Result<Option<Vec<f64>>, SchedError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_f64().ok_or_else(|| self.err(key, format!("element {i}: expected a number, found {v}"))))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.err(key, format!("expected a list of numbers or null, found {v}"))),
        }
    }

    /// Refuse `key` when it is set to true.
    pub fn refuse_true(&self, key: &str, why: &str) -> Result<(), SchedError> {
        if self.bool_or(key, false)? {
            Err(self.unsupported(key, "true", why))
        } else {
            Ok(())
        }
    }
}

pub(crate) fn quote_list(items: &[&str]) -> String {
    items.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}
