//! `omnirt`: the omnic runtime command line. Links no compiler.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use omnic_runtime::io;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "omnirt", version, about = "omnic runtime: runs compiled .omni artifacts and inspects tensors")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the tensors of a safetensors file with dtype, shape and statistics.
    Tensors {
        /// A .safetensors file.
        file: PathBuf,
    },
    /// Compare same-named tensors of two safetensors files (max abs and relative L2 error).
    Compare {
        /// Tensors to check.
        actual: PathBuf,
        /// Reference tensors.
        reference: PathBuf,
        /// Only compare names starting with this prefix (e.g. `output.`).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Fail (exit 1) when a max abs error exceeds this.
        #[arg(long, default_value_t = 1e-4)]
        atol: f64,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("omnirt: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Tensors { file } => {
            for (name, t) in io::read_all(&file)? {
                let (min, max, mean, rms) = t.stats();
                println!(
                    "{name:<48} {:<5} {:<18} min {min:>11.4e} max {max:>11.4e} mean {mean:>11.4e} rms {rms:>10.4e}",
                    t.dtype.name(),
                    format!("{:?}", t.shape)
                );
            }
            Ok(())
        }
        Cmd::Compare { actual, reference, prefix, atol } => {
            let a: BTreeMap<_, _> = io::read_all(&actual)?.into_iter().collect();
            let r: BTreeMap<_, _> = io::read_all(&reference)?.into_iter().collect();
            let mut compared = 0;
            let mut failed = Vec::new();
            for (name, rt) in r.iter().filter(|(n, _)| n.starts_with(&prefix)) {
                let Some(at) = a.get(name) else { continue };
                compared += 1;
                match at.compare(rt) {
                    Some((max_abs, rel)) => {
                        let ok = max_abs <= atol;
                        println!("{name:<40} max_abs {max_abs:.3e}  rel_l2 {rel:.3e}  {}", if ok { "ok" } else { "FAIL" });
                        if !ok {
                            failed.push(name.clone());
                        }
                    }
                    None => {
                        println!("{name:<40} shape {:?} vs reference {:?}  FAIL", at.shape, rt.shape);
                        failed.push(name.clone());
                    }
                }
            }
            if compared == 0 {
                bail!("no tensor named `{prefix}*` is in both {} and {}", actual.display(), reference.display());
            }
            if !failed.is_empty() {
                bail!("{} of {compared} tensors exceed max abs {atol:e}: {}", failed.len(), failed.join(", "));
            }
            println!("{compared} tensors within max abs {atol:e}");
            Ok(())
        }
    }
}
