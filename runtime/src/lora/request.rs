//! Run-time LoRA for one loaded program: its slots and the adapters kept
//! resident between requests. A request names its adapters once;
//! [`LoraRuntime::inputs`] returns the slot tensors to pass with every stage
//! call of that request (all denoise steps reuse them).

use super::{AdapterCache, AdapterSpec, LoraError, LoraSlots};
use crate::exec::Executable;
use crate::tensor::HostTensor;

/// Adapters resident by default.
pub const DEFAULT_RESIDENT: usize = 4;

#[derive(Debug)]
pub struct LoraRuntime {
    slots: Option<LoraSlots>,
    cache: AdapterCache,
}

impl LoraRuntime {
    /// For `exe`, keeping up to `resident` adapters loaded.
    pub fn new(exe: &Executable, resident: usize) -> Result<LoraRuntime, LoraError> {
        Ok(LoraRuntime { slots: LoraSlots::of_executable(exe)?, cache: AdapterCache::new(resident) })
    }

    /// The program's slots (`None`: compiled without `--lora-slots`).
    pub fn slots(&self) -> Option<&LoraSlots> {
        self.slots.as_ref()
    }

    pub fn cache(&self) -> &AdapterCache {
        &self.cache
    }

    /// The slot inputs of a request with `adapters` (none: the base model;
    /// empty for a program without slots).
    pub fn inputs(&mut self, adapters: &[AdapterSpec]) -> Result<Vec<(String, HostTensor)>, LoraError> {
        match &self.slots {
            None if adapters.is_empty() => Ok(Vec::new()),
            None => Err(LoraError::NoSlots),
            Some(s) => s.bind_specs(&mut self.cache, adapters),
        }
    }
}

/// An [`Executable`] whose every stage call also gets a request's slot
/// tensors, by reference: a denoise loop driven through it reuses the same
/// tensors at every step without copying them.
pub struct WithLora<'a> {
    pub exe: &'a Executable,
    pub inputs: &'a [(String, HostTensor)],
}

impl crate::program::StageRunner for WithLora<'_> {
    fn run_stage(&mut self, stage: &str, inputs: &crate::program::Tensors) -> Result<crate::program::Tensors, crate::error::RtError> {
        let all = inputs.iter().map(|(n, t)| (n.as_str(), t)).chain(self.inputs.iter().map(|(n, t)| (n.as_str(), t)));
        let out = self.exe.run(stage, all).map_err(|e| crate::error::RtError::Exec(e.to_string()))?;
        Ok(out.into_iter().collect())
    }
}
