//! `omnic import DIR [-o FILE]`: the imported program in IR text form.

use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (config.json + *.safetensors, or a pipeline directory).
    pub dir: PathBuf,
    /// Write the IR here instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also output the reference fixtures' `inter.*` intermediates.
    #[arg(long)]
    pub intermediates: bool,
}

pub fn run(a: Args) -> Result<()> {
    let imp = omnic_models::import_with(&a.dir, &omnic_models::ImportOptions { intermediates: a.intermediates, ..Default::default() })?;
    let text = omnic_ir::text::print_program(&imp.program);
    match a.output {
        Some(p) => std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
