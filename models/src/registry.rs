//! Architecture registry: `config.json` class name → family builder.

use crate::ctx::Ctx;
use crate::error::{ImportError, Result};
use crate::{ImportOptions, Imported};
use omnic_frontend::{Checkpoint, LoadError, ModelDir, RawConfig};
use omnic_ir::Program;
use std::path::Path;

/// A model family: the class names it imports and its graph builder.
pub struct Family {
    pub name: &'static str,
    pub classes: &'static [&'static str],
    /// Emits the forward into `ctx` (inputs, params, outputs).
    pub build: fn(&RawConfig, &mut Ctx) -> Result<()>,
    /// Name of the stage the forward becomes.
    pub stage: &'static str,
}

/// Every family omnic imports.
pub fn families() -> Vec<Family> {
    vec![crate::dit::family(), crate::vae::family(), crate::flux::family(), crate::longcat::family(), crate::flux2::family(), crate::zimage::family(), crate::wan::family(), crate::glmimage::family(), crate::sd3::family(), crate::qwenimage::family(), crate::qwen::qwen2_family(), crate::qwen::qwen3_family(), crate::qwen::qwen3_moe_family()]
}

/// Class names accepted in `config.json`, sorted.
pub fn supported_classes() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = families().iter().flat_map(|f| f.classes.iter().copied()).collect();
    v.sort();
    v
}

/// Import a model directory with default options.
pub fn import(dir: &Path) -> Result<Imported> {
    import_with(dir, &ImportOptions::default())
}

/// Import a model directory: detect the architecture, check the weights,
/// build and verify the program.
pub fn import_with(dir: &Path, opts: &ImportOptions) -> Result<Imported> {
    let md = ModelDir::open(dir)?;
    let fams = families();
    let fam = fams.iter().find(|f| f.classes.contains(&md.class.as_str())).ok_or_else(|| {
        ImportError::Load(LoadError::UnknownArchitecture {
            path: md.config.path.clone(),
            class: md.class.clone(),
            supported: supported_classes().join(", "),
        })
    })?;
    let checkpoint = Checkpoint::open(&md.model)?;
    let (graph, metadata) = {
        let mut ctx = Ctx::new(&checkpoint, opts.clone());
        (fam.build)(&md.config, &mut ctx)?;
        ctx.b.set_scope(None);
        let metadata = std::mem::take(&mut ctx.metadata);
        (ctx.b.finish()?, metadata)
    };
    let mut program = Program::single(fam.stage, graph);
    program.metadata.extend(metadata);
    program.metadata.insert("architecture".into(), md.class.clone());
    program.metadata.insert("family".into(), fam.name.into());
    // A pipeline directory (transformer/ + scheduler/): the sampling loop.
    if let Some(spec) = crate::pipeline::denoise_control(fam.name, &md, &mut program)? {
        program.control = omnic_ir::Control::Denoise(spec);
        omnic_ir::verify::verify_program(&program)?;
    }
    // A causal LM: prefill + KV-cache step stages and the decode loop.
    if let Some(spec) = crate::qwen::decode::decode_control(fam.name, &md, &checkpoint, opts, &mut program)? {
        program.control = omnic_ir::Control::Decode(spec);
        omnic_ir::verify::verify_program(&program)?;
    }
    Ok(Imported { dir: md, checkpoint, program, family: fam.name })
}
