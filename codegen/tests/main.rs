//! The codegen crate's one integration-test binary. Every binary that links
//! MLIR and LLVM statically weighs ~200 MB, so all integration tests live in
//! modules under `cases/` (a folder Cargo does not turn into more binaries).

mod cases;
