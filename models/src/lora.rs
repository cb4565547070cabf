//! LoRA slots in imported programs (`omnic compile --lora-slots N
//! --lora-rank R`).
//!
//! For each targeted linear layer at module `<module>` the importer adds the
//! low-rank path `y += (x·Aᵀ)·Bᵀ` with two stage inputs,
//! `lora.<module>.A: f32[N·R, in]` and `lora.<module>.B: f32[out, N·R]`
//! (two `linear`s without bias and an `add`), and records `lora_slots` /
//! `lora_rank` in the program metadata. The runtime
//! (`omnic_runtime::lora::slots`) fills them from adapters, with the user's
//! scale and the adapter's `alpha / r` folded into `B`, and zeros for no
//! adapter (the base model). The slots' inputs carry no batch or sequence
//! dimension, so they behave like weights for the passes (`cfg-batching`
//! passes them unchanged to both branches), except that `const-fold` and
//! `qkv-fusion` leave them alone: they are not weight-only. `qkv-fusion`
//! still fuses the base `linear`s (same input, weight-only weights); each
//! member's low-rank update is then added to its slice of the fused
//! result (per-slice updates). Stacking the members' `A` factors instead
//! would concatenate stage inputs on every call (or need a fused slot
//! layout); the rank-`N·R` GEMMs are thin, so per-slice costs little.

use crate::ctx::{Ctx, V};
use crate::error::Result;
use omnic_ir::{DType, Dim};
use omnic_runtime::lora::slots::{a_input, b_input};

/// Which linear layers get slots.
#[derive(Clone, Debug, PartialEq)]
pub enum SlotTargets {
    /// Every linear layer.
    All,
    /// Modules whose path is one of these or ends with `.<name>` (PEFT's
    /// `target_modules` rule), e.g. `to_q,to_k,to_v,to_out.0`.
    Names(Vec<String>),
}

/// LoRA slots to keep in the program.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotOptions {
    /// Adapters that can be active at once.
    pub slots: usize,
    /// Largest adapter rank a slot holds.
    pub rank: usize,
    pub targets: SlotTargets,
}

impl SlotOptions {
    /// Whether the linear layer at `module` gets slots.
    pub fn targets(&self, module: &str) -> bool {
        match &self.targets {
            SlotTargets::All => true,
            SlotTargets::Names(n) => n.iter().any(|k| module == k || module.ends_with(&format!(".{k}"))),
        }
    }
}

/// `y` plus the low-rank path of the linear layer at `module` (input `x`,
/// `inp` → `out` features) when the import keeps LoRA slots for it.
pub fn low_rank(ctx: &mut Ctx, module: &str, x: V, y: V, inp: usize, out: usize) -> Result<V> {
    let Some(opts) = ctx.opts.lora.clone() else { return Ok(y) };
    if !opts.targets(module) {
        return Ok(y);
    }
    let w = opts.slots * opts.rank;
    ctx.scope(&format!("{module}.lora"));
    // A module applied twice (DiT reuses block 0's timestep embedder for
    // the final layer) reuses its slot inputs.
    let a = slot_input(ctx, &a_input(module), vec![Dim::from(w), Dim::from(inp)])?;
    let b = slot_input(ctx, &b_input(module), vec![Dim::from(out), Dim::from(w)])?;
    let h = ctx.b.linear(x, a, None)?;
    let d = ctx.b.linear(h, b, None)?;
    let r = ctx.b.add(y, d)?;
    ctx.metadata.insert(omnic_runtime::lora::slots::META_SLOTS.into(), opts.slots.to_string());
    ctx.metadata.insert(omnic_runtime::lora::slots::META_RANK.into(), opts.rank.to_string());
    ctx.scope(module);
    Ok(r)
}

/// The stage input `name`, created on first use.
fn slot_input(ctx: &mut Ctx, name: &str, shape: Vec<Dim>) -> Result<V> {
    if let Some((_, n)) = ctx.b.graph.inputs().into_iter().find(|(k, _)| k == name) {
        return Ok(omnic_ir::ValueRef::new(n, 0));
    }
    Ok(ctx.b.input(name, DType::F32, shape)?)
}

/// The LoRA slots of an imported program (from its metadata and the first
/// stage's inputs), `None` when it has none; for binding adapters when the
/// program runs on the reference evaluator.
pub fn program_slots(p: &omnic_ir::Program) -> std::result::Result<Option<omnic_runtime::lora::LoraSlots>, String> {
    let Some(st) = p.stages.first() else { return Ok(None) };
    let g = &st.graph;
    let mut inputs = Vec::new();
    for (name, n) in g.inputs() {
        let ty = g.value_type(omnic_ir::ValueRef::new(n, 0)).map_err(|e| e.to_string())?;
        let shape: Option<Vec<usize>> = ty.shape.iter().map(|d| d.as_const().and_then(|v| usize::try_from(v).ok())).collect();
        inputs.push((name, shape));
    }
    let Some(s) = omnic_runtime::lora::LoraSlots::from_program(&p.metadata, inputs.iter().map(|(n, s)| (n.as_str(), s.clone())))? else { return Ok(None) };
    Ok(Some(s.with_outputs(inputs.iter().map(|(n, s)| (n.as_str(), s.clone())))?))
}
