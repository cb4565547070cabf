//! The `omnic` and `omnirt` command lines: help lists only real
//! subcommands, the main job works, bad input gives a clear error and a
//! non-zero exit.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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
    let p = bin(name);
    if name == "omnirt" && !p.exists() {
        let st = Command::new(env!("CARGO")).args(["build", "-q", "-p", "omnic-runtime", "--bin", "omnirt"]).status().expect("build omnirt");
        assert!(st.success());
    }
    Command::new(&p).args(args).current_dir(root()).output().unwrap_or_else(|e| panic!("run {}: {e}", p.display()))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
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
    for (name, expected) in [("omnic", vec!["inspect", "import", "run", "opt", "passes"]), ("omnirt", vec!["tensors", "compare"])] {
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
