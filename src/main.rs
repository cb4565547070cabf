//! `omnic`: the omnic compiler driver. Subcommands parse flags and call
//! into the crates; no model or compiler logic lives here.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "omnic", version, about = "omnic: ahead-of-time compiler for multimodal generative models")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show a model directory's architecture, parameters, FLOPs, stages, inputs and outputs.
    Inspect(cmd::inspect::Args),
    /// Import a model directory and write its IR in text form.
    Import(cmd::import::Args),
    /// Import a model and run it on the reference evaluator (optionally comparing with references).
    Run(cmd::run::Args),
    /// Run a pass pipeline over a model's IR (or an IR file) and print the result.
    Opt(cmd::opt::Args),
    /// List every pass and the default pipelines.
    Passes(cmd::passes::Args),
    /// Compile a model directory to a .omni artifact that `omnirt run` executes.
    Compile(Box<cmd::compile::Args>),
    /// Measure what a model needs for an optimisation: `calibrate teacache DIR -o FILE` fits TeaCache's rescaling polynomial.
    Calibrate(cmd::calibrate::Args),
}

fn main() {
    omnic_runtime::process::default_sigpipe();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Inspect(a) => cmd::inspect::run(a),
        Cmd::Import(a) => cmd::import::run(a),
        Cmd::Run(a) => cmd::run::run(a),
        Cmd::Opt(a) => cmd::opt::run(a),
        Cmd::Passes(a) => cmd::passes::run(a),
        Cmd::Compile(a) => cmd::compile::run(*a),
        Cmd::Calibrate(a) => cmd::calibrate::run(a),
    };
    if let Err(e) = res {
        eprintln!("omnic: error: {e:#}");
        std::process::exit(1);
    }
}
