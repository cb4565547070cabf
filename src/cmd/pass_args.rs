//! Pass-pipeline flags shared by `omnic opt` (and `omnic compile`).

use anyhow::Result;
use omnic_passes::{Instrumentation, PassManager};

#[derive(clap::Args, Clone, Debug)]
pub struct PassArgs {
    /// Optimisation level: the default pipeline (0, 1 or 2).
    #[arg(short = 'O', default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub opt_level: u8,
    /// Explicit pipeline, e.g. `canonicalize,cse,dce` (overrides -O).
    #[arg(long)]
    pub passes: Option<String>,
    /// Print the IR before this pass (repeatable).
    #[arg(long, value_name = "PASS")]
    pub print_ir_before: Vec<String>,
    /// Print the IR after this pass (repeatable).
    #[arg(long, value_name = "PASS")]
    pub print_ir_after: Vec<String>,
    /// Print the IR after every pass.
    #[arg(long)]
    pub print_ir_after_all: bool,
    /// Print the IR after each pass that changed it.
    #[arg(long)]
    pub print_ir_after_change: bool,
    /// Print a table of pass times.
    #[arg(long)]
    pub time_passes: bool,
    /// Verify the IR after every pass (default: on in debug builds).
    #[arg(long, default_value_t = cfg!(debug_assertions), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub verify_each: bool,
    /// Skip this pass (repeatable).
    #[arg(long, value_name = "PASS")]
    pub disable_pass: Vec<String>,
    /// Print per-pass statistics.
    #[arg(long)]
    pub stats: bool,
    /// Write the IR as Graphviz to FILE: every stage, nodes labelled with
    /// op and type, dispatch regions as clusters (render: `dot -Tsvg FILE`).
    /// Written at the end of the pipeline, or after --dot-after.
    #[arg(long, value_name = "FILE")]
    pub dot: Option<std::path::PathBuf>,
    /// Write --dot right after this pass (its last run) instead of at the end.
    #[arg(long, value_name = "PASS", requires = "dot")]
    pub dot_after: Option<String>,
    /// Symbol values for size statistics (memory-plan), e.g.
    /// `batch=1,img_seq=4096`; they override those bound from a model
    /// directory's `io.safetensors`. Other symbols default to 64.
    #[arg(long, value_name = "NAME=VALUE,...")]
    pub dims: Option<String>,
}

impl PassArgs {
    pub fn manager(&self) -> Result<PassManager> {
        let pipeline = self.passes.clone().unwrap_or_else(|| omnic_passes::manager::default_pipeline(self.opt_level).to_string());
        let instr = Instrumentation {
            print_before: self.print_ir_before.clone(),
            print_after: self.print_ir_after.clone(),
            print_after_all: self.print_ir_after_all,
            print_after_change: self.print_ir_after_change,
            time_passes: self.time_passes,
            verify_each: self.verify_each,
            disabled: self.disable_pass.clone(),
            stats: self.stats,
            dot: self.dot.clone(),
            dot_after: self.dot_after.clone(),
        };
        Ok(PassManager::parse(&pipeline, instr)?)
    }

    /// `--dims` as bindings (empty when absent).
    pub fn dims(&self) -> Result<omnic_ir::shape::Bindings> {
        self.dims.as_deref().map_or_else(|| Ok(Default::default()), super::dims::parse_dims)
    }
}
