//! `PassManager`: textual pipelines, default pipelines per optimisation
//! level, and instrumentation (TVM/MLIR style: print before/after, timing,
//! verify each, disable, statistics, Graphviz dumps).

use crate::pass::{Pass, PassContext, PassError};
use omnic_ir::Program;
use std::io::Write;
use std::time::{Duration, Instant};

/// Every pass, in the order `omnic passes` lists them.
pub fn all_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(crate::canonicalize::Canonicalize),
        Box::new(crate::cse::Cse),
        Box::new(crate::dce::Dce),
        Box::new(crate::moe_fusion::MoeFusion),
        Box::new(crate::qkv_fusion::QkvFusion),
        Box::new(crate::const_fold::ConstFold),
        Box::new(crate::dispatch_formation::DispatchFormation),
        Box::new(crate::memory_plan::MemoryPlan),
        Box::new(crate::cfg_batching::CfgBatching),
        Box::new(crate::teacache::TeaCache::default()),
    ]
}

/// Split a pipeline at commas outside `{…}` (option lists may hold commas).
fn split_pipeline(pipeline: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in pipeline.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&pipeline[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&pipeline[start..]);
    out
}

/// `name` or `name{key=value key=value}` (MLIR-style pass options).
fn parse_element(pipeline: &str, element: &str) -> Result<(String, Vec<(String, String)>), PassError> {
    let bad = |m: &str| PassError::Failed { pass: element.to_string(), message: format!("in pipeline `{pipeline}`: {m}") };
    let Some(open) = element.find('{') else { return Ok((element.to_string(), Vec::new())) };
    let body = element[open + 1..].strip_suffix('}').ok_or_else(|| bad("options must end with `}`"))?;
    let mut opts = Vec::new();
    for kv in body.split_whitespace() {
        let (k, v) = kv.split_once('=').ok_or_else(|| bad(&format!("option `{kv}` is not `key=value`")))?;
        opts.push((k.to_string(), v.to_string()));
    }
    Ok((element[..open].trim().to_string(), opts))
}

/// The default pipeline for `-O0`, `-O1`, `-O2`. `cfg-batching` is on by
/// default (it only fires on true-CFG denoise loops whose model it proves
/// batchable); `teacache` changes results, so it is only added on request
/// (`omnic compile --teacache T` should insert `teacache{threshold=T}` right
/// after `cfg-batching`, while the importer's role annotations are intact;
/// the later passes then work on the three stages it creates).
pub fn default_pipeline(level: u8) -> &'static str {
    match level {
        0 => "",
        1 => "cfg-batching,canonicalize,const-fold,cse,dce",
        _ => "cfg-batching,moe-fusion,canonicalize,cse,qkv-fusion,const-fold,cse,dce,dispatch-formation,memory-plan",
    }
}

/// What to print, time and check while a pipeline runs.
#[derive(Clone, Debug, Default)]
pub struct Instrumentation {
    pub print_before: Vec<String>,
    pub print_after: Vec<String>,
    pub print_after_all: bool,
    /// Print after a pass only when it changed the program.
    pub print_after_change: bool,
    /// Print a table of pass times at the end.
    pub time_passes: bool,
    /// Run the verifier after every pass.
    pub verify_each: bool,
    /// Passes named here are skipped.
    pub disabled: Vec<String>,
    /// Print per-pass statistics at the end.
    pub stats: bool,
    /// Write the program as Graphviz ([`omnic_ir::dot::program_to_dot`])
    /// to this file: right after the pass `dot_after` names (after each run
    /// of it, so a pass that runs twice leaves its last run), or at the end
    /// of the pipeline when `dot_after` is `None`.
    pub dot: Option<std::path::PathBuf>,
    /// The pass after which `dot` is written; it must be in the pipeline.
    pub dot_after: Option<String>,
}

/// Write `p` as Graphviz to `path`.
fn write_dot(path: &std::path::Path, p: &Program) -> Result<(), PassError> {
    std::fs::write(path, omnic_ir::dot::program_to_dot(p))
        .map_err(|e| PassError::Failed { pass: "instrumentation".into(), message: format!("writing {}: {e}", path.display()) })
}

/// A parsed pipeline.
pub struct PassManager {
    pub passes: Vec<Box<dyn Pass>>,
    pub instr: Instrumentation,
}

/// Timing and change record of one pass run.
#[derive(Clone, Debug)]
pub struct PassRun {
    pub name: &'static str,
    pub time: Duration,
    pub changed: bool,
    pub skipped: bool,
}

impl PassManager {
    /// Parse `"cse,dce"` (names separated by commas; blanks ignored).
    pub fn parse(pipeline: &str, instr: Instrumentation) -> Result<PassManager, PassError> {
        let mut passes = Vec::new();
        let trimmed = pipeline.trim();
        if !trimmed.is_empty() {
            for element in split_pipeline(trimmed).into_iter().map(str::trim) {
                let (name, options) = parse_element(pipeline, element)?;
                if name.is_empty() {
                    return Err(PassError::BadPipeline(pipeline.to_string()));
                }
                let p = all_passes().into_iter().find(|p| p.name() == name).ok_or_else(|| PassError::UnknownPass {
                    name: name.to_string(),
                    known: all_passes().iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
                })?;
                passes.push(if options.is_empty() { p } else { p.with_options(&options)? });
            }
        }
        if let Some(d) = &instr.dot_after {
            if !passes.iter().any(|p| p.name() == d.as_str()) {
                return Err(PassError::Failed { pass: d.clone(), message: format!("--dot-after names a pass that is not in the pipeline `{pipeline}`") });
            }
        }
        for d in instr.disabled.iter().chain(&instr.print_before).chain(&instr.print_after) {
            if !all_passes().iter().any(|p| p.name() == d) {
                return Err(PassError::UnknownPass {
                    name: d.clone(),
                    known: all_passes().iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
                });
            }
        }
        Ok(PassManager { passes, instr })
    }

    /// The pipeline as text.
    pub fn pipeline(&self) -> String {
        self.passes.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
    }

    /// Run every pass on `p`, writing instrumentation output to `out`.
    pub fn run(&self, p: &mut Program, cx: &mut PassContext, out: &mut dyn Write) -> Result<Vec<PassRun>, PassError> {
        let mut runs = Vec::new();
        let io = |e: std::io::Error| PassError::Failed { pass: "instrumentation".into(), message: e.to_string() };
        for pass in &self.passes {
            let name = pass.name();
            let dot_here = self.instr.dot.as_deref().filter(|_| self.instr.dot_after.as_deref() == Some(name));
            if self.instr.disabled.iter().any(|d| d == name) {
                runs.push(PassRun { name, time: Duration::ZERO, changed: false, skipped: true });
                if let Some(path) = dot_here {
                    write_dot(path, p)?;
                }
                continue;
            }
            if self.instr.print_before.iter().any(|d| d == name) {
                writeln!(out, "// ----- IR before {name} -----\n{}", omnic_ir::text::print_program(p)).map_err(io)?;
            }
            let t0 = Instant::now();
            let changed = pass.run(p, cx)?;
            let time = t0.elapsed();
            if self.instr.verify_each {
                omnic_ir::verify::verify_program(p).map_err(|e| PassError::Invalid { pass: name.to_string(), source: e })?;
            }
            let after = self.instr.print_after_all
                || self.instr.print_after.iter().any(|d| d == name)
                || (self.instr.print_after_change && changed);
            if after {
                writeln!(out, "// ----- IR after {name}{} -----\n{}", if changed { "" } else { " (unchanged)" }, omnic_ir::text::print_program(p))
                    .map_err(io)?;
            }
            runs.push(PassRun { name, time, changed, skipped: false });
            if let Some(path) = dot_here {
                write_dot(path, p)?;
            }
        }
        if let (Some(path), None) = (&self.instr.dot, &self.instr.dot_after) {
            write_dot(path, p)?;
        }
        if self.instr.time_passes {
            let total: Duration = runs.iter().map(|r| r.time).sum();
            writeln!(out, "===== pass execution timing =====").map_err(io)?;
            writeln!(out, "{:>10}  {:>6}  pass", "wall (ms)", "share").map_err(io)?;
            for r in &runs {
                let share = if total.is_zero() { 0.0 } else { 100.0 * r.time.as_secs_f64() / total.as_secs_f64() };
                let note = if r.skipped { " (disabled)" } else if r.changed { "" } else { " (no change)" };
                writeln!(out, "{:>10.3}  {:>5.1}%  {}{note}", r.time.as_secs_f64() * 1e3, share, r.name).map_err(io)?;
            }
            writeln!(out, "{:>10.3}  100.0%  total", total.as_secs_f64() * 1e3).map_err(io)?;
        }
        if self.instr.stats {
            writeln!(out, "===== pass statistics =====").map_err(io)?;
            for ((pass, what), n) in &cx.stats {
                writeln!(out, "{pass}: {n} {what}").map_err(io)?;
            }
        }
        Ok(runs)
    }
}
