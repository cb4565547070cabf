//! `omnirt bench`: timed runs of an artifact's forward stage with a
//! per-kernel-class profile, a Chrome/Perfetto trace and a memory report.
//!
//! [`bench`] runs the stage `warmup` times untimed, then `iters` times with
//! a [`Profiler`] (every dispatch timed). [`BenchReport`] gives the median
//! forward time, a table of the time per op class (generated kernels by
//! their leading op, runtime ukernels by name; the time between dispatches
//! — allocation, binding, output copies — is its own `(executor)` row, so
//! the shares add up to the forward time), the Chrome trace JSON of every
//! dispatch (`traceEvents`, `ph: "X"`, microseconds) and peak RSS against
//! the weights plus the buffer plan's peak activation bytes.

use crate::exec::profile::{peak_rss_bytes, proc_status_bytes, Profiler};
use crate::exec::{ExecError, Executable};
use crate::io::human_bytes;
use crate::HostTensor;
use std::collections::BTreeMap;
use std::time::Instant;

/// How to bench.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Timed runs (≥ 1).
    pub iters: usize,
    /// Untimed runs first.
    pub warmup: usize,
}

/// Timings and profile of a bench.
#[derive(Debug)]
pub struct BenchReport {
    pub stage: String,
    pub threads: usize,
    /// Wall time of each timed forward, ms.
    pub times_ms: Vec<f64>,
    pub profiler: Profiler,
    /// Bytes of every weight of the artifact.
    pub weights_bytes: u64,
    /// Peak RSS of the process after the runs (`None` off Linux).
    pub peak_rss: Option<u64>,
    /// Resident anonymous and file-backed (mapped artifact, code) bytes after the runs.
    pub rss_anon_file: Option<(u64, u64)>,
}

/// One row of the per-class table.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRow {
    pub kind: &'static str,
    pub class: String,
    /// Dispatches per forward.
    pub steps: usize,
    /// Mean time per forward, ms.
    pub ms: f64,
    /// Share of the mean forward time, %.
    pub share: f64,
    /// FLOPs per forward (`None` when a step's count is unknown).
    pub flops: Option<u64>,
}

/// Run `stage` of `exe` on `inputs` as `opts` says.
pub fn bench(exe: &Executable, stage: &str, inputs: &[(String, HostTensor)], opts: BenchOptions) -> Result<BenchReport, ExecError> {
    let named = || inputs.iter().map(|(n, t)| (n.as_str(), t));
    for _ in 0..opts.warmup {
        exe.run(stage, named())?;
    }
    let mut profiler = Profiler::new();
    let mut times_ms = Vec::with_capacity(opts.iters);
    for _ in 0..opts.iters.max(1) {
        let t = Instant::now();
        exe.run_profiled(stage, named(), Some(&mut profiler))?;
        times_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let weights_bytes = exe.artifact().weights().map(|w| w.nbytes as u64).sum();
    Ok(BenchReport {
        stage: stage.to_string(),
        threads: exe.threads(),
        times_ms,
        profiler,
        weights_bytes,
        peak_rss: peak_rss_bytes(),
        rss_anon_file: proc_status_bytes("RssAnon").zip(proc_status_bytes("RssFile")),
    })
}

/// Median of `xs` (mean of the middle two for an even count; 0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

impl BenchReport {
    pub fn median_ms(&self) -> f64 {
        median(&self.times_ms)
    }

    fn mean_ms(&self) -> f64 {
        self.times_ms.iter().sum::<f64>() / self.times_ms.len().max(1) as f64
    }

    /// FLOPs per forward, when every step's count is known.
    pub fn flops(&self) -> Option<u64> {
        self.profiler.steps().iter().map(|s| s.flops).sum()
    }

    /// Time per op class, largest first, then the `(executor)` row (time
    /// outside the dispatches); shares are of the mean forward time.
    pub fn classes(&self) -> Vec<ClassRow> {
        let steps = self.profiler.steps();
        let runs = self.profiler.runs().max(1) as f64;
        let mut by: BTreeMap<(&'static str, &str), (usize, f64, Option<u64>)> = BTreeMap::new();
        for s in steps {
            let e = by.entry((s.kind, s.class.as_str())).or_insert((0, 0.0, Some(0)));
            e.0 += 1;
            e.2 = e.2.zip(s.flops).map(|(a, b)| a + b);
        }
        for ev in self.profiler.events() {
            if let Some(s) = steps.get(ev.step) {
                if let Some(e) = by.get_mut(&(s.kind, s.class.as_str())) {
                    e.1 += ev.dur.as_secs_f64() * 1e3 / runs;
                }
            }
        }
        let total = self.mean_ms();
        let share = |ms: f64| if total > 0.0 { 100.0 * ms / total } else { 0.0 };
        let mut rows: Vec<ClassRow> =
            by.into_iter().map(|((kind, class), (steps, ms, flops))| ClassRow { kind, class: class.to_string(), steps, ms, share: share(ms), flops }).collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let in_steps: f64 = rows.iter().map(|r| r.ms).sum();
        let rest = (total - in_steps).max(0.0);
        rows.push(ClassRow { kind: "-", class: "(executor)".into(), steps: 0, ms: rest, share: share(rest), flops: None });
        rows
    }

    /// The per-class table, the forward summary and the memory line.
    pub fn table(&self) -> String {
        let gflops = |f: Option<u64>| f.map_or("-".to_string(), |f| format!("{:.4}", f as f64 / 1e9));
        let rate = |f: Option<u64>, ms: f64| match f {
            Some(f) if f > 0 && ms > 0.0 => format!("{:.1}", f as f64 / 1e9 / (ms / 1e3)),
            _ => "-".to_string(),
        };
        let mut out = format!(
            "stage `{}`: {} timed run(s), {} threads\n{:<24} {:<8} {:>6} {:>10} {:>7} {:>9} {:>9}\n",
            self.stage,
            self.times_ms.len(),
            self.threads,
            "class",
            "kind",
            "steps",
            "ms/run",
            "share",
            "GFLOP",
            "GFLOP/s"
        );
        for r in self.classes() {
            out +=
                &format!("{:<24} {:<8} {:>6} {:>10.3} {:>6.1}% {:>9} {:>9}\n", r.class, r.kind, r.steps, r.ms, r.share, gflops(r.flops), rate(r.flops, r.ms));
        }
        let (med, min, max) =
            (self.median_ms(), self.times_ms.iter().copied().fold(f64::INFINITY, f64::min), self.times_ms.iter().copied().fold(0.0, f64::max));
        out += &format!(
            "forward: median {med:.3} ms (min {min:.3}, max {max:.3}), {} GFLOP, {} GFLOP/s\n",
            self.flops().map_or("-".to_string(), |f| format!("{:.6}", f as f64 / 1e9)),
            rate(self.flops(), med)
        );
        out += &self.memory_line();
        out
    }

    /// Peak RSS against weights plus the plan's peak activations.
    pub fn memory_line(&self) -> String {
        let act = self.profiler.planned_activation_bytes();
        let planned = self.weights_bytes + act;
        let hb = |b: u64| human_bytes(b);
        let now = self.rss_anon_file.map_or(String::new(), |(a, f)| format!("; resident now: {} anonymous, {} file-backed", hb(a), hb(f)));
        match self.peak_rss {
            Some(rss) => format!(
                "memory: peak RSS {} vs weights {} + planned activations {} = {} (ratio {:.2}){now}\n",
                hb(rss),
                hb(self.weights_bytes),
                hb(act),
                hb(planned),
                rss as f64 / planned.max(1) as f64
            ),
            None => format!("memory: weights {} + planned activations {} = {} (peak RSS unavailable)\n", hb(self.weights_bytes), hb(act), hb(planned)),
        }
    }

    /// The Chrome/Perfetto trace of every dispatch (`chrome://tracing`,
    /// ui.perfetto.dev): one complete event (`ph: "X"`, µs) per dispatch per
    /// timed run, named by kernel symbol or ukernel, with class, step, run,
    /// shapes and FLOPs as args.
    pub fn trace_json(&self) -> serde_json::Value {
        let steps = self.profiler.steps();
        let events: Vec<serde_json::Value> = self
            .profiler
            .events()
            .iter()
            .filter_map(|e| {
                let s = steps.get(e.step)?;
                Some(serde_json::json!({
                    "name": s.name,
                    "cat": s.kind,
                    "ph": "X",
                    "ts": e.start.as_secs_f64() * 1e6,
                    "dur": e.dur.as_secs_f64() * 1e6,
                    "pid": 1,
                    "tid": 1,
                    "args": { "class": s.class, "step": e.step, "run": e.run, "shapes": s.shapes, "flops": s.flops },
                }))
            })
            .collect();
        serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms", "otherData": { "stage": self.stage, "threads": self.threads } })
    }
}

#[cfg(test)]
#[path = "tests/bench.rs"]
mod tests;
