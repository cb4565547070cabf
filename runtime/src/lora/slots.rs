//! Run-time LoRA: binding adapters to the low-rank slots of a program
//! compiled with `omnic compile --lora-slots N --lora-rank R`.
//!
//! Such a program computes, for every slotted linear layer at `<module>`,
//! `y = x·Wᵀ + b + (x·Aᵀ)·Bᵀ` where `A = lora.<module>.A: [N·R, in]` and
//! `B = lora.<module>.B: [out, N·R]` are stage inputs. Slot `j` owns rows
//! (of `A`) and columns (of `B`) `j·R .. j·R + R`: an adapter of rank
//! `r ≤ R` in slot `j` writes its `lora_A` into the first `r` of them and
//! `s · scaling · lora_B` into the matching columns; everything else is
//! zero, so a zero binding is the base model and the adapters of several
//! slots add up. The tensors are built once per request
//! ([`LoraSlots::bind`]) and passed unchanged to every stage call.

use super::{Adapter, AdapterCache, AdapterSpec, LoraError};
use crate::tensor::HostTensor;
use std::collections::BTreeMap;

/// Prefix of every slot input.
pub const INPUT_PREFIX: &str = "lora.";
/// Program metadata keys recording the slot count and rank.
pub const META_SLOTS: &str = "lora_slots";
pub const META_RANK: &str = "lora_rank";

/// Name of the `A` input of `module`'s slots.
pub fn a_input(module: &str) -> String {
    format!("{INPUT_PREFIX}{module}.A")
}

/// Name of the `B` input of `module`'s slots.
pub fn b_input(module: &str) -> String {
    format!("{INPUT_PREFIX}{module}.B")
}

/// A linear layer with LoRA slots.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotModule {
    pub in_features: usize,
    pub out_features: usize,
}

/// The LoRA slots of a program.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSlots {
    pub slots: usize,
    pub rank: usize,
    /// module path → its dimensions.
    pub modules: BTreeMap<String, SlotModule>,
}

impl LoraSlots {
    /// Slots from a program's metadata and its inputs (`(name, static
    /// shape)`; `None` for a shape with symbolic dimensions). `Ok(None)` when
    /// the metadata records no slots.
    pub fn from_program<'a>(
        metadata: &BTreeMap<String, String>,
        inputs: impl IntoIterator<Item = (&'a str, Option<Vec<usize>>)>,
    ) -> Result<Option<LoraSlots>, String> {
        let (Some(n), Some(r)) = (metadata.get(META_SLOTS), metadata.get(META_RANK)) else { return Ok(None) };
        let slots: usize = n.parse().map_err(|_| format!("metadata `{META_SLOTS}` is `{n}`, not a count"))?;
        let rank: usize = r.parse().map_err(|_| format!("metadata `{META_RANK}` is `{r}`, not a count"))?;
        let width = slots * rank;
        let mut modules = BTreeMap::new();
        for (name, shape) in inputs {
            let Some(module) = name.strip_prefix(INPUT_PREFIX).and_then(|m| m.strip_suffix(".A")) else { continue };
            match shape.as_deref() {
                Some(&[w, i]) if w == width => {
                    modules.insert(module.to_string(), SlotModule { in_features: i, out_features: 0 });
                }
                other => return Err(format!("LoRA input `{name}` has shape {other:?}, expected [{width}, in]")),
            }
        }
        Ok(Some(LoraSlots { slots, rank, modules }))
    }

    /// Record the `out` dimension of each module from its `B` input shape.
    pub fn with_outputs<'a>(mut self, inputs: impl IntoIterator<Item = (&'a str, Option<Vec<usize>>)>) -> Result<LoraSlots, String> {
        let width = self.slots * self.rank;
        for (name, shape) in inputs {
            let Some(module) = name.strip_prefix(INPUT_PREFIX).and_then(|m| m.strip_suffix(".B")) else { continue };
            let Some(m) = self.modules.get_mut(module) else { return Err(format!("LoRA input `{name}` has no matching `.A` input")) };
            match shape.as_deref() {
                Some(&[o, w]) if w == width => m.out_features = o,
                other => return Err(format!("LoRA input `{name}` has shape {other:?}, expected [out, {width}]")),
            }
        }
        if let Some((m, _)) = self.modules.iter().find(|(_, s)| s.out_features == 0) {
            return Err(format!("LoRA module `{m}` has an `.A` input but no `.B` input"));
        }
        Ok(self)
    }

    /// Slots of a loaded artifact (every stage's inputs), `None` when it was
    /// compiled without `--lora-slots`.
    pub fn of_executable(exe: &crate::exec::Executable) -> Result<Option<LoraSlots>, LoraError> {
        let m = exe.artifact().manifest();
        let mut inputs: BTreeMap<String, Option<Vec<usize>>> = BTreeMap::new();
        for name in exe.stage_names() {
            let specs = exe.inputs(name).map_err(|e| crate::error::RtError::Exec(e.to_string()))?;
            for s in specs.into_iter().filter(|s| s.name.starts_with(INPUT_PREFIX)) {
                let shape = s.shape.iter().map(|d| d.size(&Default::default()).ok()).collect::<Option<Vec<usize>>>();
                inputs.insert(s.name, shape);
            }
        }
        let bad = |e: String| LoraError::Rt(crate::error::RtError::Exec(format!("{}: {e}", exe.artifact().path().display())));
        let Some(s) = Self::from_program(&m.metadata, inputs.iter().map(|(n, s)| (n.as_str(), s.clone()))).map_err(bad)? else { return Ok(None) };
        Ok(Some(s.with_outputs(inputs.iter().map(|(n, s)| (n.as_str(), s.clone()))).map_err(bad)?))
    }

    /// Check that `adapter` fits: every module has slots, dimensions agree,
    /// rank within the slot rank.
    pub fn check(&self, adapter: &Adapter) -> Result<(), LoraError> {
        for (name, m) in &adapter.modules {
            let Some(s) = self.modules.get(name) else {
                return Err(LoraError::UnknownModule { adapter: adapter.name(), module: name.clone(), hint: self.hint(name) });
            };
            if (s.out_features, s.in_features) != (m.out_features, m.in_features) {
                return Err(LoraError::ShapeMismatch {
                    adapter: adapter.name(),
                    module: name.clone(),
                    expected: vec![s.out_features, s.in_features],
                    found: vec![m.out_features, m.in_features],
                });
            }
            if m.rank > self.rank {
                return Err(LoraError::RankTooHigh { adapter: adapter.name(), module: name.clone(), rank: m.rank, slot_rank: self.rank });
            }
        }
        Ok(())
    }

    fn hint(&self, name: &str) -> String {
        let n = self.modules.len();
        let first: Vec<&str> = self.modules.keys().take(4).map(String::as_str).collect();
        let more = if n > first.len() { ", ..." } else { "" };
        let last = name.rsplit('.').next().unwrap_or(name);
        let similar = self.modules.keys().filter(|k| k.rsplit('.').next() == Some(last)).count();
        let why = if similar == 0 { format!("; no slotted module is named `…{last}` (compile with --lora-targets including it)") } else { String::new() };
        format!(" (the program has LoRA slots on {n} module(s): {}{more}{why})", first.join(", "))
    }

    /// The slot inputs for `adapters` (adapter, user scale) in slots 0, 1, …;
    /// no adapter gives zeros (the base model).
    pub fn bind(&self, adapters: &[(&Adapter, f64)]) -> Result<Vec<(String, HostTensor)>, LoraError> {
        if adapters.len() > self.slots {
            return Err(LoraError::TooManyAdapters { given: adapters.len(), slots: self.slots });
        }
        for (a, _) in adapters {
            self.check(a)?;
        }
        let w = self.slots * self.rank;
        let mut out = Vec::with_capacity(2 * self.modules.len());
        for (name, s) in &self.modules {
            let (i, o) = (s.in_features, s.out_features);
            let mut a_t = vec![0f32; w * i];
            let mut b_t = vec![0f32; o * w];
            for (j, (ad, scale)) in adapters.iter().enumerate() {
                let Some(m) = ad.modules.get(name) else { continue };
                let base = j * self.rank;
                a_t[base * i..(base + m.rank) * i].copy_from_slice(&m.a);
                let f = scale * m.scaling;
                for row in 0..o {
                    for k in 0..m.rank {
                        b_t[row * w + base + k] = (m.b[row * m.rank + k] as f64 * f) as f32;
                    }
                }
            }
            out.push((a_input(name), HostTensor::from_f32(&[w, i], &a_t)));
            out.push((b_input(name), HostTensor::from_f32(&[o, w], &b_t)));
        }
        Ok(out)
    }

    /// [`Self::bind`] for adapters named by path (loaded through `cache`).
    pub fn bind_specs(&self, cache: &mut AdapterCache, specs: &[AdapterSpec]) -> Result<Vec<(String, HostTensor)>, LoraError> {
        let loaded = specs.iter().map(|s| cache.get(&s.path).map(|a| (a, s.scale))).collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<(&Adapter, f64)> = loaded.iter().map(|(a, s)| (a.as_ref(), *s)).collect();
        self.bind(&refs)
    }
}
