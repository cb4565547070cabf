//! Merging LoRA adapters into a checkpoint (`omnic compile --lora`).
//!
//! Each adapter module `<module>` updates the weight `<module>.weight` (the
//! name the importer gives a linear layer's weight `param`):
//! `W ← W + Σ s · scaling · B·A` over the adapters, accumulated in f64 and
//! stored as an f32 overlay of the checkpoint, so the importer, the
//! evaluator, `const-fold` and the artifact writer all read merged weights
//! and the program is the base model's, unchanged. Adapters are read by
//! `omnic_runtime::lora` (the same reader `omnirt` uses for run-time
//! adapters).

use crate::Checkpoint;
use omnic_runtime::lora::{Adapter, LoraError};
use std::collections::BTreeMap;

/// What a merge changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergeReport {
    /// Weights updated (by at least one adapter).
    pub weights: usize,
    /// (adapter, module) updates applied.
    pub updates: usize,
}

/// Merge `adapters` (adapter, user scale) into `ckpt`. Every module must
/// name a 2-D weight of the checkpoint whose shape is the update's.
pub fn merge(ckpt: &mut Checkpoint, adapters: &[(&Adapter, f64)]) -> Result<MergeReport, LoraError> {
    // Check everything before changing anything.
    for (a, _) in adapters {
        for (m, lm) in &a.modules {
            let name = format!("{m}.weight");
            let info = ckpt.info(&name).map_err(|e| LoraError::UnknownModule { adapter: a.name(), module: m.clone(), hint: format!(" ({e})") })?;
            let found = vec![lm.out_features, lm.in_features];
            if info.shape != found {
                return Err(LoraError::ShapeMismatch { adapter: a.name(), module: m.clone(), expected: info.shape, found });
            }
        }
    }
    let mut sums: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut updates = 0;
    for (a, scale) in adapters {
        for (m, lm) in &a.modules {
            let d = lm.delta(*scale);
            let acc = sums.entry(format!("{m}.weight")).or_insert_with(|| vec![0.0; d.len()]);
            for (x, y) in acc.iter_mut().zip(d) {
                *x += y;
            }
            updates += 1;
        }
    }
    for (name, delta) in &sums {
        let (shape, w) = ckpt.f32(name).map_err(|e| LoraError::Rt(omnic_runtime::RtError::Tensor { name: name.clone(), message: e.to_string() }))?;
        let merged: Vec<f32> = w.iter().zip(delta).map(|(&w, &d)| (w as f64 + d) as f32).collect();
        ckpt.set_overlay(name, &shape, merged).map_err(|e| LoraError::Rt(omnic_runtime::RtError::Tensor { name: name.clone(), message: e.to_string() }))?;
    }
    Ok(MergeReport { weights: sums.len(), updates })
}
