//! `omnic inspect DIR`: what a model directory holds and what it costs.

use super::dims::parse_dims;
use anyhow::Result;
use omnic_frontend::convert::to_ir;
use omnic_ir::analysis::{flops, param_bytes};
use omnic_ir::shape::{shape_str, Bindings};
use omnic_ir::Op;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    pub dir: PathBuf,
    /// Bind symbolic dims for the FLOP count, e.g. `batch=1,img_seq=4096`.
    #[arg(long)]
    pub dims: Option<String>,
    /// Bind symbolic dims from the tensors of an inputs file (`input.<name>`).
    #[arg(long)]
    pub inputs: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let imp = omnic_models::import(&a.dir)?;
    println!("model:        {}", a.dir.display());
    println!("architecture: {} (family {})", imp.dir.class, imp.family);
    let params = imp.checkpoint.param_count()?;
    println!("parameters:   {params} ({:.2} M)", params as f64 / 1e6);
    for st in &imp.program.stages {
        let g = &st.graph;
        println!("stage `{}`: {} ops, {} weights", st.name, g.op_count(), g.params().len());
        println!("  inputs:");
        let mut binds = Bindings::new();
        if let Some(p) = &a.inputs {
            let io = omnic_models::parity::read_io(p).map_err(anyhow::Error::msg)?;
            let sel = omnic_models::parity::select_inputs(g, &io).map_err(anyhow::Error::msg)?;
            binds = omnic_ir::eval::bind_inputs(g, &sel)?;
        } else if let Some(io) = find_io(&a.dir) {
            // A fixture directory carries its own inputs: use them for defaults.
            if let Ok(sel) = omnic_models::parity::select_inputs(g, &io) {
                binds = omnic_ir::eval::bind_inputs(g, &sel).unwrap_or_default();
            }
        }
        if let Some(d) = &a.dims {
            binds.extend(parse_dims(d)?);
        }
        for (name, n) in g.inputs() {
            if let Op::Input { ty, .. } = &g.node(n).op {
                println!("    {name:<28} {ty}");
            }
        }
        println!("  outputs:");
        for (name, v) in &g.outputs {
            let t = g.value_type(*v)?;
            println!("    {name:<28} {}{}", t.dtype, shape_str(&t.shape));
        }
        let mut bs: Vec<_> = binds.iter().collect();
        bs.sort();
        let shown: Vec<String> = bs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match flops(g, &binds) {
            Ok(f) => println!("  FLOPs per forward: {:.4} GFLOP (with {})", f as f64 / 1e9, shown.join(", ")),
            Err(e) => println!("  FLOPs per forward: unknown until dims are bound ({e}); pass --dims or --inputs"),
        }
        if let Ok(pb) = param_bytes(g, &binds) {
            println!("  weights used: {:.2} MB as f32", pb as f64 / 1e6);
        }
    }
    println!("control: {:?}", imp.program.control);
    Ok(())
}

fn find_io(dir: &std::path::Path) -> Option<std::collections::HashMap<String, omnic_ir::eval::Tensor>> {
    let p = dir.join("io.safetensors");
    let all = omnic_runtime::io::read_all(&p).ok()?;
    Some(all.into_iter().map(|(n, t)| (n, to_ir(&t))).collect())
}
