use super::*;
use crate::artifact::{
    host, write_artifact, Control, DimExpr, Manifest, StageSchedule, Step, TargetInfo, Ukernel, ValueDef, ValueSpec, WeightSource, FORMAT_VERSION,
};
use crate::exec::ExecOptions;
use crate::ElemType;

const F: ElemType = ElemType::F32;

/// x [n, 8] → linear(w [16, 8]) → h [n, 16] → linear(w2 [8, 16]) → y [n, 8],
/// with per-step FLOPs 2·n·16·8 each (over the symbol `n`) unless `flops` is false.
fn write_chain(dir: &std::path::Path, flops: bool) -> std::path::PathBuf {
    let (sym, c) = (|s: &str| DimExpr::Sym(s.into()), DimExpr::Const);
    let val = |id, shape, def| ValueSpec { id, dtype: F, shape, def };
    let stage = StageSchedule {
        name: "forward".into(),
        inputs: vec![0],
        outputs: vec![("y".into(), 4)],
        values: vec![
            val(0, vec![sym("n"), c(8)], ValueDef::Input { name: "x".into() }),
            val(1, vec![c(16), c(8)], ValueDef::Weight { name: "w".into() }),
            val(2, vec![c(8), c(16)], ValueDef::Weight { name: "w2".into() }),
            val(3, vec![sym("n"), c(16)], ValueDef::Computed),
            val(4, vec![sym("n"), c(8)], ValueDef::Computed),
        ],
        steps: vec![
            Step::Ukernel { op: Ukernel::Linear { bias: false }, args: vec![0, 1], results: vec![3] },
            Step::Ukernel { op: Ukernel::Linear { bias: false }, args: vec![3, 2], results: vec![4] },
        ],
        flops: if flops { vec![DimExpr::Mul(vec![c(256), sym("n")]); 2] } else { vec![] },
    };
    let m = Manifest {
        format_version: FORMAT_VERSION,
        compiler: "omnic test".into(),
        target: TargetInfo { name: "cpu".into(), triple: host::host_triple(), cpu: "generic".into(), features: vec![] },
        pipeline: String::new(),
        metadata: Default::default(),
        control: Control::Forward { stage: "forward".into() },
        stages: vec![stage],
        weights: WeightSource::Embedded,
    };
    let p = dir.join(if flops { "chain.omni" } else { "noflops.omni" });
    let w = HostTensor::from_f32(&[16, 8], &[0.25; 128]);
    let w2 = HostTensor::from_f32(&[8, 16], &[0.5; 128]);
    write_artifact(&p, &m, &[], &[("w".into(), w), ("w2".into(), w2)]).unwrap();
    p
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert_eq!(median(&[]), 0.0);
}

#[test]
fn bench_times_every_dispatch_and_counts_flops_with_bound_symbols() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Executable::load(write_chain(dir.path(), true), &ExecOptions { threads: 1, ..Default::default() }).unwrap();
    let inputs = vec![("input.x".to_string(), HostTensor::from_f32(&[5, 8], &[1.0; 40]))];
    let r = bench(&exe, "forward", &inputs, BenchOptions { iters: 3, warmup: 1 }).unwrap();
    assert_eq!(r.times_ms.len(), 3);
    // One event per dispatch per timed run, in order.
    let ev = r.profiler.events();
    assert_eq!(ev.len(), 6);
    assert_eq!(ev.iter().map(|e| (e.run, e.step)).collect::<Vec<_>>(), vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
    assert!(ev.windows(2).all(|w| w[0].start + w[0].dur <= w[1].start));
    // 2 linears of 2·5·16·8 FLOPs with n = 5.
    assert_eq!(r.flops(), Some(2 * 2 * 5 * 16 * 8));
    let rows = r.classes();
    assert_eq!(rows[0].class, "linear");
    assert_eq!((rows[0].kind, rows[0].steps, rows[0].flops), ("ukernel", 2, Some(2560)));
    assert_eq!(rows.last().map(|r| r.class.as_str()), Some("(executor)"));
    let share: f64 = rows.iter().map(|r| r.share).sum();
    assert!((share - 100.0).abs() < 1e-6, "{share}");
    // Peak activations under the plan: h [5,16] and y [5,8] live together.
    assert_eq!(r.profiler.planned_activation_bytes(), (5 * 16 + 5 * 8) * 4);
    assert_eq!(r.weights_bytes, 2 * 128 * 4);
    assert_eq!(r.profiler.steps()[1].shapes, "[5, 16], [8, 16] -> [5, 8]");
    let table = r.table();
    assert!(table.contains("linear") && table.contains("0.000003 GFLOP") && table.contains("memory: peak RSS"), "{table}");
    let trace = r.trace_json();
    let events = trace["traceEvents"].as_array().unwrap();
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e["ph"] == "X" && e["name"] == "linear" && e["args"]["flops"] == 1280 && e["dur"].as_f64().unwrap() >= 0.0));
}

#[test]
fn artifacts_without_step_flops_report_none() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Executable::load(write_chain(dir.path(), false), &ExecOptions { threads: 1, ..Default::default() }).unwrap();
    let inputs = vec![("x".to_string(), HostTensor::from_f32(&[2, 8], &[1.0; 16]))];
    let r = bench(&exe, "forward", &inputs, BenchOptions { iters: 1, warmup: 0 }).unwrap();
    assert_eq!(r.flops(), None);
    assert!(r.table().contains(" - "), "{}", r.table());
}
