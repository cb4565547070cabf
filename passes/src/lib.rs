//! omnic passes. A pass is a small trait impl ([`Pass`]) in a file of its
//! own that starts with a doc comment saying what it does, why, and when it
//! does not apply. The [`PassManager`] runs textual pipelines
//! (`"canonicalize,cse,dce"`) with instrumentation: printing the IR before /
//! after passes, timing, verification after each pass, disabling passes, and
//! per-pass statistics.
//!
//! Tests: every pass has IR-text tests in `passes/tests/<pass>.omir` with
//! FileCheck-style CHECK lines (see [`filecheck`]), each of which is also run
//! through the reference evaluator before and after to prove the pass
//! preserves semantics.

pub mod differential;
pub mod filecheck;
pub mod manager;
pub mod pass;

pub mod canonicalize;
pub mod cfg_batching;
pub mod const_fold;
pub mod cse;
pub mod dce;
pub mod dispatch_formation;
pub mod memory_plan;
pub mod moe_fusion;
pub mod qkv_fusion;
pub mod teacache;

pub use manager::{Instrumentation, PassManager};
pub use pass::{Pass, PassContext, PassError};
