//! End-to-end tests across crates, in one binary (each binary that links
//! MLIR/LLVM costs ~200 MB, so integration tests share this one).

mod calibrate;
mod cli;
mod e2e;
mod e2e_decode;
mod lora;
mod parallel_kernels;
mod runtime_independence;
mod support;
