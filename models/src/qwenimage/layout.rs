//! The image-token layout of a Qwen-Image forward (`img_shapes`).
//!
//! diffusers passes `img_shapes` as a Python list, one entry per sample,
//! each a list of `(frames, height, width)` in patches: the generated image
//! first, then any conditioning images (Qwen-Image-Edit). It only shapes
//! the rotary positions (and, with `zero_cond_t`, which tokens are
//! conditioning tokens); the rope uses sample 0's entry for the whole batch.
//! A compiled program fixes it: see the module doc of [`crate::qwenimage`].

use crate::ctx::Ctx;
use crate::error::{ImportError, Result};
use crate::{ImportOptions, Imported};
use omnic_frontend::{Checkpoint, ModelDir};
use omnic_ir::Program;
use std::path::Path;

/// Default generation size of `QwenImagePipeline` (pixels, square) and its
/// VAE's spatial scale: the layout used when nothing else names one.
pub const DEFAULT_IMAGE_PX: usize = 1024;
pub const VAE_SCALE_FACTOR: usize = 8;

/// One sample's `img_shapes` entry: `(frames, height, width)` per image, in
/// patches (packed tokens), generated image first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    pub shapes: Vec<[usize; 3]>,
}

impl ImageLayout {
    /// A single image of `frames × height × width` patches.
    pub fn single(frames: usize, height: usize, width: usize) -> Self {
        ImageLayout { shapes: vec![[frames, height, width]] }
    }

    /// `QwenImagePipeline`'s default (1024² px → `(1, 64, 64)` for patch 2).
    pub fn pipeline_default(patch_size: usize) -> Self {
        let n = DEFAULT_IMAGE_PX / VAE_SCALE_FACTOR / patch_size.max(1);
        Self::single(1, n, n)
    }

    /// Total image tokens `Σ f·h·w`.
    pub fn tokens(&self) -> usize {
        self.shapes.iter().map(|s| s[0] * s[1] * s[2]).sum()
    }

    /// Tokens of the first (generated) image.
    pub fn first_tokens(&self) -> usize {
        self.shapes.first().map(|s| s[0] * s[1] * s[2]).unwrap_or(0)
    }

    /// `img_shapes` as JSON, following the reference's reading of it:
    /// a list of per-sample lists of triples takes sample 0's list; a list
    /// of triples takes its first triple (`video_fhw[0]`).
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<Self, String> {
        let triple = |t: &serde_json::Value| -> std::result::Result<[usize; 3], String> {
            let a = t.as_array().filter(|a| a.len() == 3).ok_or_else(|| format!("expected [frames, height, width], found {t}"))?;
            let mut out = [0usize; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_u64().filter(|&n| n > 0).ok_or_else(|| format!("expected positive integers, found {t}"))? as usize;
            }
            Ok(out)
        };
        let first = v.as_array().and_then(|a| a.first()).ok_or_else(|| format!("expected a non-empty list, found {v}"))?;
        let is_triple = first.as_array().is_some_and(|a| a.iter().all(|x| x.is_number()));
        let shapes = if is_triple {
            vec![triple(first)?]
        } else {
            let imgs = first.as_array().filter(|a| !a.is_empty()).ok_or_else(|| format!("expected a list of [frames, height, width], found {first}"))?;
            imgs.iter().map(triple).collect::<std::result::Result<_, _>>()?
        };
        Ok(ImageLayout { shapes })
    }

    /// The layout the model directory records: `img_shapes` in a `meta.json`
    /// beside `config.json` (how omnic's fixtures record the forward call).
    pub fn recorded(config_path: &Path) -> Result<Option<Self>> {
        let Some(meta) = config_path.parent().map(|d| d.join("meta.json")) else { return Ok(None) };
        let Ok(text) = std::fs::read_to_string(&meta) else { return Ok(None) };
        // A `meta.json` that is not JSON is someone else's file: ignore it.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return Ok(None) };
        let err = |message: String| ImportError::Config { path: meta.display().to_string(), field: "img_shapes".into(), message };
        match v.get("img_shapes") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(s) => Ok(Some(Self::from_json(s).map_err(err)?)),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.shapes).unwrap_or_default()
    }
}

/// Import a Qwen-Image directory for an explicit image layout (the
/// registry's `import` uses the recorded or default one).
pub fn import_with_layout(dir: &Path, opts: &ImportOptions, layout: &ImageLayout) -> Result<Imported> {
    let md = ModelDir::open(dir)?;
    let fam = super::family();
    if !fam.classes.contains(&md.class.as_str()) {
        return Err(ImportError::Config {
            path: md.config.path.display().to_string(),
            field: "_class_name".into(),
            message: format!("`{}` is not a Qwen-Image transformer ({})", md.class, fam.classes.join(", ")),
        });
    }
    let checkpoint = Checkpoint::open(&md.model)?;
    let graph = {
        let mut ctx = Ctx::new(&checkpoint, opts.clone());
        super::build_with(&md.config, &mut ctx, layout)?;
        ctx.b.set_scope(None);
        ctx.b.finish()?
    };
    let mut program = Program::single(fam.stage, graph);
    program.metadata.insert("architecture".into(), md.class.clone());
    program.metadata.insert("family".into(), fam.name.into());
    program.metadata.insert("img_shapes".into(), layout.to_json());
    Ok(Imported { dir: md, checkpoint, program, family: fam.name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_img_shapes_like_the_reference() {
        let v: serde_json::Value = serde_json::from_str("[[[1, 4, 6]], [[1, 4, 6]]]").unwrap();
        assert_eq!(ImageLayout::from_json(&v).unwrap(), ImageLayout::single(1, 4, 6));
        let v: serde_json::Value = serde_json::from_str("[[[1, 4, 6], [1, 2, 2]]]").unwrap();
        assert_eq!(ImageLayout::from_json(&v).unwrap().shapes, vec![[1, 4, 6], [1, 2, 2]]);
        let v: serde_json::Value = serde_json::from_str("[[1, 8, 8], [1, 2, 2]]").unwrap();
        assert_eq!(ImageLayout::from_json(&v).unwrap(), ImageLayout::single(1, 8, 8));
        assert!(ImageLayout::from_json(&serde_json::Value::from(3)).is_err());
        assert_eq!(ImageLayout::pipeline_default(2), ImageLayout::single(1, 64, 64));
    }
}
