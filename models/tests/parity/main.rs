//! Parity of every imported family with its diffusers / transformers
//! fixture (tests/fixtures/<name>, produced by the real libraries).

mod common;
mod dit;
