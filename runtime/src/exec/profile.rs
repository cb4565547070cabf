//! Per-step timing of stage runs, for `omnirt bench`.
//!
//! [`Executable::run_profiled`](super::Executable::run_profiled) with a
//! [`Profiler`] times every step (dispatch) of a run; a plain
//! [`Executable::run`](super::Executable::run) passes `None`, so the only
//! cost when not profiling is a branch per step. Each run first describes
//! its steps ([`StepInfo`]: kind, op class, concrete shapes, FLOPs from the
//! manifest's per-step `flops` evaluated with the run's symbol bindings)
//! and the activation bytes the buffer plan keeps live at its peak; then
//! every dispatch appends an [`Event`] (start and duration relative to the
//! profiler's creation).
//!
//! The FLOP convention is the compiler's (multiply-add = 2 FLOPs, see
//! `omnic_ir::analysis`); artifacts written before per-step FLOPs existed
//! report none.

use super::nbytes;
use super::plan::{Source, StagePlan, StepKind};
use crate::artifact::dim::{Bindings, DimExpr};
use crate::kernels::ukernel_name;
use std::time::{Duration, Instant};

/// What one step of the profiled stage does.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInfo {
    /// `kernel` (generated code) or `ukernel` (a runtime kernel).
    pub kind: &'static str,
    /// Op class: the ukernel's name, or a generated kernel's leading op
    /// (its symbol without the `omnic_k<i>_` prefix).
    pub class: String,
    /// The kernel symbol or the ukernel name.
    pub name: String,
    /// Concrete shapes, `args -> results`.
    pub shapes: String,
    /// FLOPs of the step, when the artifact records them.
    pub flops: Option<u64>,
}

/// One timed dispatch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    /// Which profiled run (0-based).
    pub run: usize,
    /// Step index in the stage.
    pub step: usize,
    /// Start, relative to the profiler's creation.
    pub start: Duration,
    pub dur: Duration,
}

/// Collects the steps' descriptions and the timed dispatches of profiled runs.
#[derive(Clone, Debug)]
pub struct Profiler {
    epoch: Instant,
    stage: String,
    steps: Vec<StepInfo>,
    events: Vec<Event>,
    runs: usize,
    planned_activation_bytes: u64,
}

impl Default for Profiler {
    fn default() -> Self {
        Self::new()
    }
}

impl Profiler {
    pub fn new() -> Profiler {
        Profiler { epoch: Instant::now(), stage: String::new(), steps: Vec::new(), events: Vec::new(), runs: 0, planned_activation_bytes: 0 }
    }

    /// The stage of the last profiled run.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The steps of the last profiled run's stage, in order.
    pub fn steps(&self) -> &[StepInfo] {
        &self.steps
    }

    /// Every timed dispatch, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Number of profiled runs.
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// Peak bytes of computed buffers live at once under the stage's buffer
    /// plan (liveness of the last profiled run's shapes).
    pub fn planned_activation_bytes(&self) -> u64 {
        self.planned_activation_bytes
    }

    /// Time since the profiler was created (the trace's clock).
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// A run of `p` starts with these shapes and bindings.
    pub(crate) fn begin(&mut self, p: &StagePlan, flops: &[DimExpr], shapes: &[Vec<usize>], binds: &Bindings) {
        self.stage = p.name.clone();
        self.steps = describe(p, flops, shapes, binds);
        self.planned_activation_bytes = planned_peak(p, shapes);
        self.runs += 1;
    }

    /// Step `step` ran from `start` until now.
    pub(crate) fn record(&mut self, step: usize, start: Instant) {
        let end = Instant::now();
        self.events.push(Event {
            run: self.runs.saturating_sub(1),
            step,
            start: start.saturating_duration_since(self.epoch),
            dur: end.saturating_duration_since(start),
        });
    }
}

/// The op class of a generated kernel: its symbol without `omnic_k<i>_`.
pub fn kernel_class(symbol: &str) -> &str {
    symbol
        .strip_prefix("omnic_k")
        .and_then(|rest| rest.split_once('_'))
        .filter(|(i, _)| !i.is_empty() && i.bytes().all(|c| c.is_ascii_digit()))
        .map_or(symbol, |(_, hint)| hint)
}

fn describe(p: &StagePlan, flops: &[DimExpr], shapes: &[Vec<usize>], binds: &Bindings) -> Vec<StepInfo> {
    let fmt = |vs: &[usize]| vs.iter().map(|&v| format!("{:?}", shapes[v])).collect::<Vec<_>>().join(", ");
    p.steps
        .iter()
        .enumerate()
        .map(|(si, st)| {
            let (kind, class, name) = match &st.kind {
                StepKind::Kernel { symbol, .. } => ("kernel", kernel_class(symbol).to_string(), symbol.clone()),
                StepKind::Ukernel(op) => ("ukernel", ukernel_name(op).to_string(), ukernel_name(op).to_string()),
            };
            let flops = flops.get(si).and_then(|f| f.eval(binds).ok()).and_then(|f| u64::try_from(f).ok());
            StepInfo { kind, class, name, shapes: format!("{} -> {}", fmt(&st.args), fmt(&st.results)), flops }
        })
        .collect()
}

/// Peak bytes of computed buffers live at once: each step's results are
/// allocated before it runs, and the plan frees dead buffers after it.
fn planned_peak(p: &StagePlan, shapes: &[Vec<usize>]) -> u64 {
    let bytes = |r: usize| nbytes(&shapes[r], p.values[r].dtype).unwrap_or(0) as u64;
    let (mut live, mut peak) = (0u64, 0u64);
    for (si, st) in p.steps.iter().enumerate() {
        live += st.results.iter().filter(|&&r| matches!(p.values[r].source, Source::Computed)).map(|&r| bytes(r)).sum::<u64>();
        peak = peak.max(live);
        live = live.saturating_sub(p.free_after[si].iter().map(|&r| bytes(r)).sum::<u64>());
    }
    peak
}

/// Peak resident set size of this process (`VmHWM` of `/proc/self/status`),
/// `None` where that file does not exist.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM")
}

/// A `kB` field of `/proc/self/status` in bytes (`VmHWM`, `RssAnon`,
/// `RssFile`, …), `None` where that file or field does not exist.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
#[path = "../tests/profile.rs"]
mod tests;
