//! Reading an adapter (PEFT or diffusers layout; see the parent module) into
//! per-module low-rank factors with their scaling.

use super::config::LoraConfig;
use super::{shown, LoraError};
use crate::io::elem_type;
use crate::tensor::HostTensor;
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where an adapter came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterFormat {
    Peft,
    Diffusers,
}

/// The update of one linear layer: `scaling · B·A` with `A: [rank, in]`,
/// `B: [out, rank]` (row-major f32).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraModule {
    pub rank: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    /// `lora_alpha / r` (or `/ √r` with rsLoRA).
    pub scaling: f64,
}

impl LoraModule {
    /// `scale · scaling · B·A` as `[out, in]` (accumulated in f64).
    pub fn delta(&self, scale: f64) -> Vec<f64> {
        let (o, i, r) = (self.out_features, self.in_features, self.rank);
        let s = scale * self.scaling;
        let mut d = vec![0.0f64; o * i];
        for row in 0..o {
            let out = &mut d[row * i..(row + 1) * i];
            for k in 0..r {
                let bk = self.b[row * r + k] as f64 * s;
                if bk == 0.0 {
                    continue;
                }
                for (x, &a) in out.iter_mut().zip(&self.a[k * i..(k + 1) * i]) {
                    *x += bk * a as f64;
                }
            }
        }
        d
    }
}

/// A loaded adapter: module path → its update.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    pub source: PathBuf,
    pub format: AdapterFormat,
    pub modules: BTreeMap<String, LoraModule>,
}

/// The parts found for one module while reading keys.
#[derive(Default)]
struct Parts {
    a: Option<HostTensor>,
    b: Option<HostTensor>,
    alpha: Option<f64>,
}

const PEFT_CONFIG: &str = "adapter_config.json";
const PEFT_WEIGHTS: &str = "adapter_model.safetensors";
/// Components of a diffusers pipeline an adapter may also carry (refused:
/// omnic applies adapters to the denoiser only).
const OTHER_COMPONENTS: [&str; 5] = ["text_encoder", "text_encoder_2", "text_encoder_3", "unet", "prior"];

impl Adapter {
    /// Load an adapter from a PEFT directory, a diffusers-layout
    /// `.safetensors` file, or a directory holding exactly one such file.
    pub fn load(path: &Path) -> Result<Adapter, LoraError> {
        if path.is_dir() {
            if path.join(PEFT_CONFIG).is_file() {
                return Self::load_peft(path);
            }
            let mut st: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| crate::error::RtError::io(path, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            st.sort();
            return match st.as_slice() {
                [one] => Self::load_diffusers(one),
                [] => Err(LoraError::NotFound { path: path.to_path_buf() }),
                many => Err(LoraError::Layout {
                    path: path.to_path_buf(),
                    message: format!(
                        "{} .safetensors files and no {PEFT_CONFIG}; name the adapter file itself ({})",
                        many.len(),
                        many.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>().join(", ")
                    ),
                }),
            };
        }
        if path.is_file() && path.extension().is_some_and(|x| x == "safetensors") {
            let dir = path.parent().unwrap_or(Path::new("."));
            if path.file_name().is_some_and(|n| n == PEFT_WEIGHTS) && dir.join(PEFT_CONFIG).is_file() {
                return Self::load_peft(dir);
            }
            return Self::load_diffusers(path);
        }
        if path.is_file() && path.file_name().is_some_and(|n| n == PEFT_CONFIG) {
            return Self::load_peft(path.parent().unwrap_or(Path::new(".")));
        }
        Err(LoraError::NotFound { path: path.to_path_buf() })
    }

    /// A name for messages.
    pub fn name(&self) -> String {
        shown(&self.source)
    }

    /// Largest rank of any module.
    pub fn max_rank(&self) -> usize {
        self.modules.values().map(|m| m.rank).max().unwrap_or(0)
    }

    fn load_peft(dir: &Path) -> Result<Adapter, LoraError> {
        let cfg_path = dir.join(PEFT_CONFIG);
        let cfg = LoraConfig::read(&cfg_path)?;
        let wpath = dir.join(PEFT_WEIGHTS);
        if !wpath.is_file() {
            let hint =
                if dir.join("adapter_model.bin").is_file() { " (adapter_model.bin, a pickle, is not read: save with safe_serialization=True)" } else { "" };
            return Err(LoraError::Layout { path: dir.to_path_buf(), message: format!("{PEFT_CONFIG} but no {PEFT_WEIGHTS}{hint}") });
        }
        let bytes = std::fs::read(&wpath).map_err(|e| crate::error::RtError::io(&wpath, e))?;
        let st = parse(&wpath, &bytes)?;
        let prefix = "base_model.model.";
        let mut keys: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        keys.sort();
        if let Some(k) = keys.iter().find(|k| !k.starts_with(prefix)) {
            return Err(LoraError::Layout { path: wpath, message: format!("key `{k}` does not start with `{prefix}` (PEFT layout)") });
        }
        let parts = collect(&wpath, &st, &keys, prefix)?;
        let mut modules = BTreeMap::new();
        for (m, p) in parts {
            if p.alpha.is_some() {
                return Err(LoraError::Layout {
                    path: wpath,
                    message: format!("module `{m}`: an `.alpha` tensor in a PEFT adapter (the scaling comes from {PEFT_CONFIG})"),
                });
            }
            if !cfg.targets(&m) {
                return Err(LoraError::Config {
                    path: cfg_path,
                    message: format!("module `{m}` has LoRA tensors in {PEFT_WEIGHTS} but `target_modules` does not name it"),
                });
            }
            let lm = module(&wpath, &m, &p, cfg.scaling(&m))?;
            if lm.rank != cfg.rank(&m) {
                return Err(LoraError::Config {
                    path: cfg_path,
                    message: format!("module `{m}`: lora_A has rank {} but the config says r = {}", lm.rank, cfg.rank(&m)),
                });
            }
            modules.insert(m, lm);
        }
        Ok(Adapter { source: dir.to_path_buf(), format: AdapterFormat::Peft, modules })
    }

    fn load_diffusers(file: &Path) -> Result<Adapter, LoraError> {
        let bytes = std::fs::read(file).map_err(|e| crate::error::RtError::io(file, e))?;
        let st = parse(file, &bytes)?;
        let mut keys: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        keys.sort();
        let layout = |message: String| LoraError::Layout { path: file.to_path_buf(), message };
        if let Some(k) = keys.iter().find(|k| k.starts_with("lora_unet_") || k.starts_with("lora_te")) {
            return Err(layout(format!(
                "key `{k}` is in the original kohya-ss layout, which omnic does not convert; load it with diffusers' load_lora_weights and write it with save_lora_weights"
            )));
        }
        if let Some(k) = keys.iter().find(|k| k.starts_with("base_model.model.")) {
            return Err(layout(format!("key `{k}` is in the PEFT layout; pass the directory with {PEFT_CONFIG} instead")));
        }
        if let Some(k) = keys.iter().find(|k| OTHER_COMPONENTS.iter().any(|c| k.starts_with(&format!("{c}.")))) {
            return Err(layout(format!("key `{k}` targets another pipeline component; omnic applies adapters to the transformer only")));
        }
        let prefix = if keys.iter().any(|k| k.starts_with("transformer.")) { "transformer." } else { "" };
        if let Some(k) = keys.iter().find(|k| !k.starts_with(prefix)) {
            return Err(layout(format!("key `{k}` lacks the `{prefix}` prefix the other keys have")));
        }
        // diffusers stores the LoraConfig (prefixed by component) in the header.
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| layout(format!("not a valid safetensors file: {e}")))?;
        let cfg = match meta.metadata().as_ref().and_then(|m| m.get("lora_adapter_metadata")) {
            None => None,
            Some(raw) => {
                let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| LoraError::Config {
                    path: file.to_path_buf(),
                    message: format!("header entry `lora_adapter_metadata` is not valid JSON: {e}"),
                })?;
                let obj = v
                    .as_object()
                    .ok_or_else(|| LoraError::Config { path: file.to_path_buf(), message: "header entry `lora_adapter_metadata` is not an object".into() })?;
                let mine: serde_json::Map<String, serde_json::Value> =
                    obj.iter().filter_map(|(k, v)| k.strip_prefix("transformer.").map(|k| (k.to_string(), v.clone()))).collect();
                if mine.is_empty() {
                    None
                } else {
                    Some(LoraConfig::from_value(file, &serde_json::Value::Object(mine))?)
                }
            }
        };
        let parts = collect(file, &st, &keys, prefix)?;
        let mut modules = BTreeMap::new();
        for (m, p) in parts {
            let rank = p.a.as_ref().map_or(0, |a| a.shape.first().copied().unwrap_or(0));
            let scaling = match (p.alpha, &cfg) {
                (Some(alpha), _) => alpha / rank.max(1) as f64,
                (None, Some(c)) => c.scaling(&m),
                (None, None) => 1.0,
            };
            let lm = module(file, &m, &p, scaling)?;
            if let (None, Some(c)) = (p.alpha, &cfg) {
                if c.rank(&m) != lm.rank {
                    return Err(LoraError::Config {
                        path: file.to_path_buf(),
                        message: format!("module `{m}`: lora_A has rank {} but `lora_adapter_metadata` says r = {}", lm.rank, c.rank(&m)),
                    });
                }
            }
            modules.insert(m, lm);
        }
        Ok(Adapter { source: file.to_path_buf(), format: AdapterFormat::Diffusers, modules })
    }
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, LoraError> {
    SafeTensors::deserialize(bytes).map_err(|e| crate::error::RtError::BadSafetensors { path: path.to_path_buf(), message: e.to_string() }.into())
}

/// Group `keys` (all starting with `prefix`) by module.
fn collect(path: &Path, st: &SafeTensors, keys: &[String], prefix: &str) -> Result<BTreeMap<String, Parts>, LoraError> {
    let mut out: BTreeMap<String, Parts> = BTreeMap::new();
    for k in keys {
        let rest = &k[prefix.len()..];
        let (module, part) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
            (m, 'A')
        } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
            (m, 'B')
        } else if let Some(m) = rest.strip_suffix(".alpha") {
            (m, 'a')
        } else {
            return Err(LoraError::Layout {
                path: path.to_path_buf(),
                message: format!("key `{k}` is not a LoRA tensor omnic reads (expected `{prefix}<module>.lora_A.weight`, `.lora_B.weight` or `.alpha`)"),
            });
        };
        if module.is_empty() {
            return Err(LoraError::Layout { path: path.to_path_buf(), message: format!("key `{k}` names no module") });
        }
        let v = st.tensor(k).map_err(|e| LoraError::Layout { path: path.to_path_buf(), message: format!("tensor `{k}`: {e}") })?;
        let dtype = elem_type(v.dtype()).filter(|d| d.is_float()).ok_or_else(|| crate::error::RtError::UnsupportedDtype {
            path: path.to_path_buf(),
            name: k.clone(),
            dtype: format!("{:?}", v.dtype()),
        })?;
        let t = HostTensor { dtype, shape: v.shape().to_vec(), data: v.data().to_vec() };
        let e = out.entry(module.to_string()).or_default();
        match part {
            'A' => e.a = Some(t),
            'B' => e.b = Some(t),
            _ => {
                if t.numel() != 1 {
                    return Err(LoraError::Layout { path: path.to_path_buf(), message: format!("`{k}` has shape {:?}, expected a scalar", t.shape) });
                }
                let a = t.to_f64_vec()[0];
                if !a.is_finite() {
                    return Err(LoraError::Layout { path: path.to_path_buf(), message: format!("`{k}` is {a}, expected a finite number") });
                }
                e.alpha = Some(a);
            }
        }
    }
    Ok(out)
}

/// Check one module's factors and build it.
fn module(path: &Path, m: &str, p: &Parts, scaling: f64) -> Result<LoraModule, LoraError> {
    let layout = |message: String| LoraError::Layout { path: path.to_path_buf(), message: format!("module `{m}`: {message}") };
    let a = p.a.as_ref().ok_or_else(|| layout("lora_B.weight without lora_A.weight".into()))?;
    let b = p.b.as_ref().ok_or_else(|| layout("lora_A.weight without lora_B.weight".into()))?;
    let (&[r, i], &[o, rb]) = (a.shape.as_slice(), b.shape.as_slice()) else {
        return Err(layout(format!("lora_A is {:?} and lora_B is {:?}; expected [r, in] and [out, r] (linear layers only)", a.shape, b.shape)));
    };
    if r != rb || r == 0 {
        return Err(layout(format!("lora_A is {:?} and lora_B is {:?}: their ranks differ", a.shape, b.shape)));
    }
    Ok(LoraModule { rank: r, in_features: i, out_features: o, a: a.to_f32_vec(), b: b.to_f32_vec(), scaling })
}
