//! Helpers shared by the integration test modules: paths, the two binaries,
//! running a command and reading its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn omnic() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_omnic"))
}

/// `omnirt` lives in the runtime crate, next to `omnic` in the target dir;
/// cargo does not build another package's binary for this test binary, so
/// build it once per run (a no-op when up to date).
pub fn omnirt() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let st = Command::new(env!("CARGO")).args(["build", "-q", "-p", "omnic-runtime", "--bin", "omnirt"]).status().expect("build omnirt");
        assert!(st.success());
    });
    omnic().with_file_name("omnirt")
}

/// Stdout then stderr.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Run `bin` with `args` in the repository root.
pub fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).current_dir(root()).output().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}
