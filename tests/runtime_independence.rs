//! The runtime must never depend on a compiler crate nor on MLIR/LLVM:
//! a deployment is an artifact plus `omnirt`.

use std::process::Command;

const FORBIDDEN: [&str; 9] = [
    "omnic-ir",
    "omnic-frontend",
    "omnic-models",
    "omnic-passes",
    "omnic-codegen",
    "melior",
    "mlir-sys",
    "inkwell",
    "llvm-sys",
];

#[test]
fn runtime_dependency_tree_has_no_compiler_or_llvm() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "omnic-runtime", "-e", "normal,build", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("omnic-runtime"), "unexpected cargo tree output:\n{tree}");
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(!FORBIDDEN.contains(&name), "omnic-runtime depends on `{name}`:\n{tree}");
    }
}

#[test]
fn the_check_would_catch_a_compiler_dependency() {
    // The same query on the compiler driver must list compiler crates,
    // proving the parsing above sees dependencies at all.
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "omnic", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().any(|l| l.split_whitespace().next() == Some("omnic-ir")), "{tree}");
}
