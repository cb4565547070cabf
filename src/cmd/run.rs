//! `omnic run DIR --inputs FILE`: import a model and run it on the
//! reference evaluator; with references in the inputs file (`output.*`),
//! print how the result compares.

use anyhow::{bail, Result};
use omnic_frontend::convert::to_host;
use omnic_ir::eval::{evaluate, Precision};
use omnic_models::parity::{compare, read_io, select_inputs};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    pub dir: PathBuf,
    /// safetensors file with the inputs (`input.<name>` or `<name>`); other tensors are ignored.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Write the outputs here as `output.<name>`.
    #[arg(long)]
    pub outputs: Option<PathBuf>,
    /// Evaluate in f64 instead of f32.
    #[arg(long)]
    pub f64: bool,
    /// Fail when an output differs from its reference by more than this (max abs).
    #[arg(long, default_value_t = 1e-4)]
    pub atol: f64,
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    let imp = omnic_models::import(&a.dir)?;
    let g = &imp.program.stages[0].graph;
    println!("imported {} ({}): {} ops in {:.0} ms", a.dir.display(), imp.dir.class, g.op_count(), t0.elapsed().as_secs_f64() * 1e3);
    let io = read_io(&a.inputs).map_err(anyhow::Error::msg)?;
    let inputs = select_inputs(g, &io).map_err(anyhow::Error::msg)?;
    let t1 = Instant::now();
    let prec = if a.f64 { Precision::F64 } else { Precision::F32 };
    let outs = evaluate(g, &inputs, &imp.checkpoint, prec)?;
    println!("reference evaluator ({}): {:.0} ms", if a.f64 { "f64" } else { "f32" }, t1.elapsed().as_secs_f64() * 1e3);
    if let Some(p) = &a.outputs {
        let mut ts: Vec<(String, omnic_runtime::HostTensor)> = outs.iter().map(|(k, t)| (format!("output.{k}"), to_host(t))).collect();
        ts.sort_by(|x, y| x.0.cmp(&y.0));
        if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
        }
        omnic_runtime::io::write(p, &ts, None)?;
        println!("wrote {} outputs to {}", ts.len(), p.display());
    }
    let reps = compare(g, &outs, &io).map_err(anyhow::Error::msg)?;
    if reps.is_empty() {
        println!("no reference outputs in {} to compare with", a.inputs.display());
        return Ok(());
    }
    let mut bad = Vec::new();
    for r in &reps {
        let ok = r.max_abs <= a.atol;
        println!("  {:<24} vs {:<24} {:?}  max_abs {:.3e}  rel_l2 {:.3e}  {}", r.name, r.reference, r.shape, r.max_abs, r.rel_l2, if ok { "ok" } else { "FAIL" });
        if !ok {
            bad.push(r.name.clone());
        }
    }
    if !bad.is_empty() {
        bail!("{} output(s) exceed max abs {:e}: {}", bad.len(), a.atol, bad.join(", "));
    }
    println!("all {} outputs match the reference within max abs {:e}", reps.len(), a.atol);
    Ok(())
}
