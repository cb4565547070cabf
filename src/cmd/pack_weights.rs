//! Compile-time packing of `Linear` weights.
//!
//! The runtime runs `Linear` on weights in the 32-column panel layout of
//! `omnic_runtime::kernels::gemm_packed`; it packs them when a stage is
//! planned unless the artifact already stores them packed. Doing it here
//! moves that work (a permutation of every Linear weight, ~0.4 s for 285 MB)
//! out of every load: each embedded f32 weight that every stage reads only
//! as a `Linear` weight ([`linear_panel_weights`]) is written packed (same
//! name, declared shape `[N, K]` and byte count), and the manifest metadata
//! key [`PACKED_KEY`] lists them (JSON). Artifacts without the key load as
//! before. Weights left in external checkpoint files are not packed.

use anyhow::{Context, Result};
use omnic_runtime::artifact::StageSchedule;
use omnic_runtime::exec::{linear_panel_weights, PACKED_KEY};
use omnic_runtime::kernels::gemm_packed::pack_panels_bytes;
use omnic_runtime::tensor::{ElemType, HostTensor};
use std::collections::BTreeMap;

/// Packs the eligible weights of `weights` in place and records them in
/// `metadata`; returns how many were packed.
pub fn pack_linear_weights(stages: &[StageSchedule], weights: &mut [(String, HostTensor)], metadata: &mut BTreeMap<String, String>) -> Result<usize> {
    let eligible = linear_panel_weights(stages);
    let mut packed = Vec::new();
    for (name, t) in weights.iter_mut() {
        let &[n, k] = t.shape.as_slice() else { continue };
        if !eligible.contains(name) || t.dtype != ElemType::F32 || t.data.len() != n * k * 4 {
            continue;
        }
        let mut out = vec![0u8; t.data.len()];
        pack_panels_bytes(&t.data, n, k, &mut out);
        t.data = out;
        packed.push(name.clone());
    }
    if !packed.is_empty() {
        metadata.insert(PACKED_KEY.to_string(), serde_json::to_string(&packed).context("listing the packed weights")?);
    }
    Ok(packed.len())
}
