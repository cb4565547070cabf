//! End-to-end tests across crates, in one binary (each binary that links
//! MLIR/LLVM costs ~200 MB, so integration tests share this one).

mod cli;
mod e2e;
mod runtime_independence;
