//! `omnic passes`: every pass with its one-line summary, and the default
//! pipelines.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> Result<()> {
    for p in omnic_passes::manager::all_passes() {
        println!("{:<20} {}", p.name(), p.summary());
    }
    println!();
    for level in 0..=2 {
        let pl = omnic_passes::manager::default_pipeline(level);
        println!("-O{level}: {}", if pl.is_empty() { "(no passes)" } else { pl });
    }
    Ok(())
}
