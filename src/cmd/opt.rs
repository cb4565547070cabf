//! `omnic opt DIR`: import a model and run a pass pipeline over its IR
//! (the `mlir-opt` of omnic), printing the result; instrumentation flags
//! show the IR between passes, timings and statistics, and `--dot FILE`
//! (with `--dot-after PASS`) writes a Graphviz picture of the IR.

use super::pass_args::PassArgs;
use anyhow::{Context, Result};
use omnic_passes::PassContext;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or a `.omir` IR text file.
    pub input: PathBuf,
    #[command(flatten)]
    pub passes: PassArgs,
    /// Write the final IR here (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print nothing but instrumentation (no final IR).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    let pm = a.passes.manager()?;
    let mut stderr = std::io::stderr();
    let text = if a.input.is_file() {
        let src = std::fs::read_to_string(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
        let mut p = omnic_ir::text::parse_program(&src).with_context(|| format!("{}", a.input.display()))?;
        let mut cx = PassContext { dims: a.passes.dims()?, ..Default::default() };
        pm.run(&mut p, &mut cx, &mut stderr)?;
        omnic_ir::text::print_program(&p)
    } else {
        let mut imp = omnic_models::import(&a.input)?;
        let mut cx = PassContext::with_weights(&imp.checkpoint);
        cx.dims = fixture_dims(&a.input, &imp.program);
        cx.dims.extend(a.passes.dims()?);
        pm.run(&mut imp.program, &mut cx, &mut stderr)?;
        omnic_ir::text::print_program(&imp.program)
    };
    match (&a.output, a.quiet) {
        (Some(p), _) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        (None, false) => print!("{text}"),
        (None, true) => {}
    }
    Ok(())
}

/// Symbol values of the first stage bound from `DIR/io.safetensors` when a
/// model directory carries one (test fixtures do), so size statistics use
/// real shapes; empty otherwise.
fn fixture_dims(dir: &std::path::Path, p: &omnic_ir::Program) -> omnic_ir::shape::Bindings {
    let (Some(st), Ok(io)) = (p.stages.first(), omnic_models::parity::read_io(&dir.join("io.safetensors"))) else { return Default::default() };
    omnic_models::parity::select_inputs(&st.graph, &io).ok().and_then(|sel| omnic_ir::eval::bind_inputs(&st.graph, &sel).ok()).unwrap_or_default()
}
