//! `omnic compile` LoRA options: adapters merged into the weights
//! (`--lora ADAPTER[:SCALE]`, repeatable, adapters add up) and run-time
//! slots (`--lora-slots N --lora-rank R [--lora-targets NAMES]`, bound by
//! `omnirt run --lora`). See `omnic_frontend::lora` and `omnic_models::lora`.

use anyhow::{bail, Context, Result};
use omnic_models::lora::{SlotOptions, SlotTargets};
use omnic_runtime::lora::{Adapter, AdapterSpec};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct LoraArgs {
    /// Merge a LoRA adapter into the weights: W + SCALE·(alpha/r)·B·A (a PEFT
    /// directory or a diffusers-layout .safetensors file; repeatable, the
    /// updates add up; SCALE defaults to 1).
    #[arg(long = "lora", value_name = "ADAPTER[:SCALE]")]
    pub lora: Vec<String>,
    /// Keep a run-time low-rank path on linear layers with room for N
    /// adapters at once (`omnirt run --lora` binds them; none = base model).
    #[arg(long, value_name = "N", requires = "lora_rank")]
    pub lora_slots: Option<usize>,
    /// Largest adapter rank a slot holds (with --lora-slots).
    #[arg(long, value_name = "R", requires = "lora_slots")]
    pub lora_rank: Option<usize>,
    /// Linear layers that get slots: `all` (default) or module names as in
    /// PEFT's target_modules (`to_q,to_k,to_v,to_out.0`: a module matches
    /// when its path is the name or ends with `.name`).
    #[arg(long, value_name = "NAMES", value_delimiter = ',', requires = "lora_slots")]
    pub lora_targets: Vec<String>,
}

impl LoraArgs {
    /// The import's slot options (`None` without --lora-slots).
    pub fn slots(&self) -> Result<Option<SlotOptions>> {
        let (Some(slots), Some(rank)) = (self.lora_slots, self.lora_rank) else { return Ok(None) };
        if slots == 0 {
            bail!("--lora-slots 0: need at least one slot");
        }
        if rank == 0 {
            bail!("--lora-rank 0: the slot rank must be at least 1");
        }
        let names: Vec<String> = self.lora_targets.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        let targets = if names.is_empty() || names.iter().any(|n| n == "all") { SlotTargets::All } else { SlotTargets::Names(names) };
        Ok(Some(SlotOptions { slots, rank, targets }))
    }

    /// Merge the --lora adapters into `imp`'s checkpoint; a line to print
    /// when any was given.
    pub fn merge(&self, imp: &mut omnic_models::Imported) -> Result<Option<String>> {
        if self.lora.is_empty() {
            return Ok(None);
        }
        let mut loaded = Vec::new();
        for s in &self.lora {
            let spec = AdapterSpec::parse(s).context("--lora")?;
            let a = Adapter::load(&spec.path).with_context(|| format!("--lora {s}"))?;
            loaded.push((a, spec.scale));
        }
        let refs: Vec<(&Adapter, f64)> = loaded.iter().map(|(a, s)| (a, *s)).collect();
        let rep = omnic_frontend::lora::merge(&mut imp.checkpoint, &refs).context("--lora")?;
        Ok(Some(format!("lora: merged {} adapter(s) into {} weight(s)", loaded.len(), rep.weights)))
    }
}
