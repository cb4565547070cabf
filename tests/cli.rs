//! The `omnic` and `omnirt` command lines: help lists only real
//! subcommands, the main job works, bad input gives a clear error and a
//! non-zero exit.

use crate::support::text;
use std::path::PathBuf;
use std::process::Output;

fn bin(name: &str) -> PathBuf {
    // Integration tests get CARGO_BIN_EXE_<name> for this package's binaries;
    // `omnirt` lives in the runtime crate, next to it in the target dir.
    let omnic = PathBuf::from(env!("CARGO_BIN_EXE_omnic"));
    if name == "omnic" {
        omnic
    } else {
        omnic.with_file_name(name)
    }
}

fn run(name: &str, args: &[&str]) -> Output {
    let p = if name == "omnirt" { crate::support::omnirt() } else { bin(name) };
    crate::support::run(&p, args)
}

/// Subcommand names listed under "Commands:" in clap's help.
fn listed_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(|s| s.to_string()))
        .filter(|s| s != "help")
        .collect()
}

#[test]
fn help_lists_only_subcommands_that_run() {
    for (name, expected) in [
        ("omnic", vec!["inspect", "import", "run", "opt", "passes", "compile", "calibrate"]),
        ("omnirt", vec!["tensors", "compare", "inspect", "run", "bench", "generate"]),
    ] {
        let o = run(name, &["--help"]);
        assert!(o.status.success());
        let listed = listed_subcommands(&text(&o));
        assert_eq!(listed, expected, "{name} --help");
        for sub in &listed {
            let o = run(name, &[sub, "--help"]);
            assert!(o.status.success(), "{name} {sub} --help: {}", text(&o));
        }
    }
}

#[test]
fn run_matches_the_bundled_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let o = run("omnic", &["run", "tests/fixtures/dit", "--inputs", "tests/fixtures/dit/io.safetensors", "--outputs", out.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("all 1 outputs match the reference"), "{t}");
    // The written outputs compare with the references through omnirt too.
    let o = run("omnirt", &["compare", out.to_str().unwrap(), "tests/fixtures/dit/io.safetensors", "--prefix", "output."]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("output.sample"), "{}", text(&o));
}

#[test]
fn inspect_reports_architecture_params_and_flops() {
    let o = run("omnic", &["inspect", "tests/fixtures/dit", "--dims", "batch=1"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("DiTTransformer2DModel"), "{t}");
    assert!(t.contains("hidden_states") && t.contains("f32[batch,4,8,8]"), "{t}");
    assert!(t.contains("GFLOP (with batch=1)"), "{t}");
}

#[test]
fn bad_input_fails_cleanly_naming_the_culprit() {
    let cases: [(&[&str], &str); 5] = [
        (&["inspect", "no/such/dir"], "no/such/dir"),
        (&["run", "tests/fixtures/dit", "--inputs", "no/such.safetensors"], "no/such.safetensors"),
        (&["run", "tests/fixtures/dit", "--inputs", "tests/fixtures/flux/io.safetensors"], "input.class_labels"),
        (&["inspect", "tests/fixtures/dit", "--dims", "batch=two"], "two"),
        (&["inspect", "tests/fixtures"], "config.json"),
    ];
    for (args, needle) in cases {
        let o = run("omnic", args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains("error") && t.contains(needle), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
    }
    let o = run("omnirt", &["tensors", "README.md"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("README.md"), "{}", text(&o));
}

/// A small artifact written with the runtime API: x f32[batch,4] → linear → out f32[batch,8].
fn write_toy_artifact(path: &std::path::Path) {
    use omnic_runtime::artifact::{
        host, write_artifact, Control, DimExpr, Manifest, StageSchedule, Step, TargetInfo, Ukernel, ValueDef, ValueSpec, WeightSource, FORMAT_VERSION,
    };
    use omnic_runtime::{ElemType, HostTensor};
    let (f, sym, c) = (ElemType::F32, |s: &str| DimExpr::Sym(s.into()), DimExpr::Const);
    let values = vec![
        ValueSpec { id: 0, dtype: f, shape: vec![sym("batch"), c(4)], def: ValueDef::Input { name: "x".into() } },
        ValueSpec { id: 1, dtype: f, shape: vec![c(8), c(4)], def: ValueDef::Weight { name: "w".into() } },
        ValueSpec { id: 2, dtype: f, shape: vec![sym("batch"), c(8)], def: ValueDef::Computed },
    ];
    let m = Manifest {
        format_version: FORMAT_VERSION,
        compiler: "omnic test".into(),
        target: TargetInfo { name: "cpu".into(), triple: host::host_triple(), cpu: "generic".into(), features: vec![] },
        pipeline: "canonicalize".into(),
        metadata: [("architecture".to_string(), "Toy".to_string())].into(),
        control: Control::Forward { stage: "forward".into() },
        stages: vec![StageSchedule {
            name: "forward".into(),
            inputs: vec![0],
            outputs: vec![("out".into(), 2)],
            values,
            steps: vec![Step::Ukernel { op: Ukernel::Linear { bias: false }, args: vec![0, 1], results: vec![2] }],
            flops: vec![],
        }],
        weights: WeightSource::Embedded,
    };
    let w = HostTensor::from_f32(&[8, 4], &[0.5; 32]);
    write_artifact(path, &m, &[("cpu.so".into(), vec![0; 10])], &[("w".into(), w)]).unwrap();
}

#[test]
fn omnirt_inspect_verifies_and_prints_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("toy.omni");
    write_toy_artifact(&good);
    let o = run("omnirt", &["inspect", good.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for needle in [
        "format version 1",
        "omnic test",
        "canonicalize",
        "architecture = Toy",
        "embedded: 1 tensors",
        "cpu.so",
        "x: f32[batch,4]",
        "out: f32[batch,8]",
        "linear 1",
    ] {
        assert!(t.contains(needle), "`{needle}` missing:\n{t}");
    }
    let o = run("omnirt", &["inspect", "--json", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let j = String::from_utf8_lossy(&o.stdout);
    assert!(j.trim_start().starts_with('{') && j.contains("\"format_version\": 1") && j.contains("\"stages\""), "{j}");

    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.omni");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    flipped[100] ^= 1;
    let flip = dir.path().join("flip.omni");
    std::fs::write(&flip, &flipped).unwrap();
    for (file, needle) in
        [(cut.to_str().unwrap(), "truncated"), (flip.to_str().unwrap(), "checksum"), ("README.md", "not an omnic artifact"), ("no/such.omni", "no/such.omni")]
    {
        let o = run("omnirt", &["inspect", file]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{file}: {t}");
        assert!(t.contains("error") && t.contains(file) && t.contains(needle), "{file}: {t}");
        assert!(!t.contains("panicked"), "{file}: {t}");
    }
}

#[test]
fn opt_writes_graphviz_of_the_ir_after_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("flux.dot");
    let d = dot.to_str().unwrap();
    let o = run("omnic", &["opt", "tests/fixtures/flux", "--quiet", "--stats", "--dot", d, "--dot-after", "dispatch-formation"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("dispatch-formation:") && t.contains("peak activation bytes"), "{t}");
    let g = std::fs::read_to_string(&dot).unwrap();
    assert!(g.starts_with("digraph \"program\" {") && g.trim_end().ends_with('}'), "{g}");
    assert_eq!(g.matches('{').count(), g.matches('}').count());
    let dispatches: usize = t.lines().find_map(|l| l.strip_prefix("dispatch-formation: ")?.strip_suffix(" dispatches")?.parse().ok()).unwrap();
    assert_eq!(g.matches("label=\"dispatch ").count(), dispatches, "one cluster per region");
    // Before fusion there are no regions to draw.
    let o = run("omnic", &["opt", "tests/fixtures/flux", "--quiet", "--dot", d, "--dot-after", "canonicalize"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!std::fs::read_to_string(&dot).unwrap().contains("cluster_s0nd"));
    let o = run("omnic", &["opt", "tests/fixtures/flux", "-O1", "--quiet", "--dot", d, "--dot-after", "memory-plan"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not in the pipeline"), "{}", text(&o));
}

#[test]
fn omnirt_run_executes_an_artifact_and_reports_bad_inputs() {
    use omnic_runtime::HostTensor;
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("toy.omni");
    write_toy_artifact(&art);
    let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    let inputs = dir.path().join("in.safetensors");
    let extra = HostTensor::from_f32(&[1], &[0.0]);
    omnic_runtime::io::write(&inputs, &[("input.x".into(), HostTensor::from_f32(&[3, 4], &x)), ("output.out".into(), extra)], None).unwrap();
    let out = dir.path().join("sub/out.safetensors");
    let (a, i, o) = (art.to_str().unwrap(), inputs.to_str().unwrap(), out.to_str().unwrap());
    let r = run("omnirt", &["run", a, "--inputs", i, "--outputs", o, "--threads", "2", "--verbose"]);
    let t = text(&r);
    assert!(r.status.success(), "{t}");
    assert!(t.contains("ms") && t.contains("ignored 1 tensor") && t.contains("output.out") && t.contains("x: f32[batch,4]"), "{t}");
    let got = omnic_runtime::io::read_all(&out).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "output.out");
    assert_eq!(got[0].1.shape, vec![3, 8]);
    let want: Vec<f32> = (0..3).flat_map(|b| std::iter::repeat_n(0.5 * x[b * 4..b * 4 + 4].iter().sum::<f32>(), 8)).collect();
    assert_eq!(got[0].1.to_f32_vec(), want);

    // Bad inputs: exit 1, a message naming the tensor, no panic.
    let wrong_shape = dir.path().join("shape.safetensors");
    omnic_runtime::io::write(&wrong_shape, &[("x".into(), HostTensor::from_f32(&[3, 5], &[0.0; 15]))], None).unwrap();
    let wrong_dtype = dir.path().join("dtype.safetensors");
    omnic_runtime::io::write(&wrong_dtype, &[("x".into(), HostTensor::from_i64(&[3, 4], &[0; 12]))], None).unwrap();
    let missing = dir.path().join("missing.safetensors");
    omnic_runtime::io::write(&missing, &[("input.y".into(), HostTensor::from_f32(&[3, 4], &x))], None).unwrap();
    let cases: [(&str, &str, &[&str]); 5] = [
        (a, wrong_shape.to_str().unwrap(), &["input `x`", "[3, 5]", "[batch,4]"]),
        (a, wrong_dtype.to_str().unwrap(), &["input `x`", "i64", "f32[batch,4]"]),
        (a, missing.to_str().unwrap(), &["input `x` is missing"]),
        ("README.md", i, &["README.md", "not an omnic artifact"]),
        (a, "no/such.safetensors", &["no/such.safetensors"]),
    ];
    for (art, inp, needles) in cases {
        let r = run("omnirt", &["run", art, "--inputs", inp, "--outputs", o]);
        let t = text(&r);
        assert_eq!(r.status.code(), Some(1), "{art} {inp}: {t}");
        assert!(!t.contains("panicked"), "{t}");
        for n in needles {
            assert!(t.contains("error") && t.contains(n), "`{n}` missing: {t}");
        }
    }
}

/// `omnirt bench` on a compiled fixture: a per-class table whose shares add
/// up to the forward time, a trace with one event per dispatch per timed
/// run whose FLOPs add up to the table's, the machine-readable last line;
/// bad flags fail cleanly.
#[test]
fn omnirt_bench_profiles_a_compiled_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("flux.omni");
    let o = run("omnic", &["compile", "tests/fixtures/flux", "-o", art.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let trace = dir.path().join("trace.json");
    let (a, inp) = (art.to_str().unwrap(), "tests/fixtures/flux/io.safetensors");
    let o = run("omnirt", &["bench", a, "--inputs", inp, "--threads", "2", "--iters", "3", "--warmup", "1", "--profile", trace.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let last = out.lines().last().unwrap_or_default();
    let median: f64 =
        last.strip_prefix("median_ms=").and_then(|r| r.strip_suffix(" iters=3")).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("last line: {last:?}"));
    assert!(median > 0.0, "{t}");

    // Table rows: class, kind, steps, ms, share%, GFLOP, GFLOP/s.
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.starts_with("class"))
        .skip(1)
        .take_while(|l| !l.starts_with("forward:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.iter().any(|r| r[0] == "linear" && r[1] == "ukernel") && rows.iter().any(|r| r[1] == "kernel"), "{t}");
    let share: f64 = rows.iter().map(|r| r[4].trim_end_matches('%').parse::<f64>().unwrap()).sum();
    assert!((share - 100.0).abs() < 0.5, "shares add up to {share}: {t}");
    let steps: usize = rows.iter().map(|r| r[2].parse::<usize>().unwrap()).sum();
    let gflop: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("forward: "))
        .and_then(|l| l.split(", ").find_map(|s| s.strip_suffix(" GFLOP")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no GFLOP: {t}"));
    assert!(t.contains("memory: peak RSS") && t.contains("planned activations"), "{t}");

    // The artifact's step count; the trace: one complete event per dispatch per run.
    let m = omnic_runtime::artifact::Artifact::open(&art).unwrap();
    let omnic_runtime::artifact::Control::Forward { stage } = &m.manifest().control else { panic!("not a forward program") };
    let n = m.manifest().stages.iter().find(|s| &s.name == stage).map(|s| s.steps.len()).unwrap();
    assert_eq!(steps, n, "{t}");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let ev = j["traceEvents"].as_array().unwrap();
    assert_eq!(ev.len(), 3 * n);
    for run in 0..3u64 {
        let mine: Vec<&serde_json::Value> = ev.iter().filter(|e| e["args"]["run"] == run).collect();
        assert_eq!(mine.len(), n);
        assert!(mine.iter().all(|e| e["ph"] == "X" && e["dur"].as_f64().is_some_and(|d| d >= 0.0) && e["args"]["class"].is_string()));
        let f: u64 = mine.iter().map(|e| e["args"]["flops"].as_u64().unwrap()).sum();
        assert!(gflop > 0.0 && (f as f64 / 1e9 - gflop).abs() <= 1e-6, "trace FLOPs {f} vs table {gflop} GFLOP");
    }

    // Bad flags: non-zero exit naming the flag or path, no panic.
    let bad = dir.path().join("no/such/dir/trace.json");
    let cases: [(&[&str], &[&str]); 3] = [
        (&["bench", a, "--inputs", inp, "--iters", "0"], &["--iters", "0"]),
        (&["bench", a, "--inputs", inp, "--profile", bad.to_str().unwrap()], &["--profile", "no/such/dir/trace.json"]),
        (&["bench", a, "--inputs", "no/such.safetensors"], &["no/such.safetensors"]),
    ];
    for (args, needles) in cases {
        let o = run("omnirt", args);
        let t = text(&o);
        assert!(!o.status.success() && !t.contains("panicked"), "{args:?}: {t}");
        for s in needles {
            assert!(t.contains("error") && t.contains(s), "`{s}` missing: {t}");
        }
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `omnic compile DIR --emit llvm | head -1`: the reader leaves after one
    // line; the rest of the output (~1 MB, far more than a pipe buffer)
    // hits a closed pipe. That must end the process quietly, not as a panic.
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = crate::support::fixture("flux");
    let mut child =
        Command::new(bin("omnic")).args(["compile", dir.to_str().unwrap(), "--emit", "llvm"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "no output before the pipe closed");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "omnic failed on a closed pipe: {err}");
}
