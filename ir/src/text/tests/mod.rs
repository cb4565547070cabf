//! Tests of the text form: generated round trips, a hand-written graph,
//! one test per error kind, and mutated text that must never panic.

mod errors;
mod fuzz;
mod gen;
mod handwritten;
mod roundtrip;
mod denoise;
