//! End-to-end tests across crates, in one binary (each binary that links
//! MLIR/LLVM costs ~200 MB, so integration tests share this one).

mod cli;
mod runtime_independence;
