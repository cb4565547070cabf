//! The IR text form: a printer and a parser that round-trip
//! (`print(parse(print(g))) == print(g)`), for dumps, golden tests and
//! hand-written test graphs.
//!
//! # Example
//!
//! ```text
//! graph {
//!   %0 = input "hidden_states" : f32[batch,4,8,8]
//!   %1 = param "proj.weight" : f32[16,4]
//!   %2 = reshape(%0) {shape=[batch,4,64]} : f32[batch,4,64]
//!   %3 = transpose(%2) {perm=[0,2,1]} : f32[batch,64,4]
//!   %4 = linear(%3, %1) {bias=false} : f32[batch,64,16] #block(0) loc("blocks.0.proj")
//!   %5:2 = split(%4) {axis=2, sizes=[8,8]} : f32[batch,64,8], f32[batch,64,8]
//!   %6 = constant [0.5] : f32[]
//!   %7 = mul(%5#0, %6) : f32[batch,64,8] #role(modulated_input)
//!   %8 = add(%7, %5#1) : f32[batch,64,8]   // comments run to the end of the line
//!   output "out" = %8
//! }
//! ```
//!
//! A program adds metadata, named stages (each body is a graph body) and
//! the control that runs them:
//!
//! ```text
//! meta "arch" = "flux"
//! stage "denoise" {
//!   %0 = input "x" : f32[2]
//!   %1 = exp(%0) : f32[2]
//!   output "y" = %1
//! }
//! control forward "denoise"
//! ```
//!
//! # Grammar
//!
//! The form is line-oriented: one statement per line, blank lines and `//`
//! comments anywhere, blanks between tokens free. Errors are
//! [`crate::IrError::Parse`] with the 1-based line and column (in characters).
//!
//! ```text
//! graph     := 'graph' '{' NL body '}' NL
//! program   := { meta | stage | control }          (exactly one control)
//! meta      := 'meta' STRING '=' STRING NL
//! stage     := 'stage' STRING '{' NL body '}' NL
//! control   := 'control' 'forward' STRING NL
//!            | 'control' 'denoise' STRING '{' NL { dfield NL } '}' NL
//!            | 'control' 'decode' '{' NL { kfield NL } '}' NL
//! dfield    := 'scheduler' STRING | 'steps' INT | 'sigmas' ('scheduler' | 'flow_linspace')
//!            | 'latents' STRING '->' STRING | 'timestep' STRING '/' FLOAT | 'timestep_i64'
//!            | 'prediction' STRING | 'input' STRING '->' STRING
//!            | 'guidance' ('none' | 'true_cfg' FLOAT | 'distilled' STRING FLOAT
//!                         | 'class_cfg' FLOAT STRING 'null' INT)
//!            | 'negative' STRING '->' STRING | 'cfg_batch' '[' [STRING {',' STRING}] ']'
//!            | 'teacache' FLOAT '[' FLOAT {',' FLOAT} ']' 'pre' STRING 'blocks' STRING
//!              'post' STRING 'modulated' STRING
//!            | 'residual' STRING '->' STRING
//! kfield    := 'forward' STRING | 'prefill' STRING | 'step' STRING | 'tokens' STRING
//!            | 'logits' STRING | 'max_len' INT | 'eos' '[' [INT {',' INT}] ']'
//!            | 'cache' STRING '->' STRING
//! body      := { node | output }                   (at least one output)
//! output    := 'output' STRING '=' use NL
//! node      := VALUE [':' INT] '=' MNEMONIC [payload] [operands] [attrs]
//!              ':' type {',' type} {annotation | loc} NL   (at most one loc)
//! payload   := STRING                              (input, param: the name)
//!            | '[' [FLOAT {',' FLOAT}] ']'         (constant: row-major values)
//! operands  := '(' [use {',' use}] ')'
//! use       := VALUE ['#' INT]
//! attrs     := '{' [NAME '=' attr {',' NAME '=' attr}] '}'
//! attr      := INT | FLOAT | 'none' | 'true' | 'false' | DTYPE | dim | type
//!            | '[' [INT {',' INT}] ']' | '[' [dim {',' dim}] ']'
//!            | '[' [ '(' INT ',' INT ')' {',' ...}] ']'
//! type      := DTYPE '[' [dim {',' dim}] ']'       e.g. f32[batch,4,(h/2)*(w/2)]
//! dim       := what `Dim::parse` reads: INT, NAME, + - * / and parentheses
//! annotation:= '#block(' INT ')' | '#role(' (NAME | STRING) ')'
//!            | '#dispatch(' INT ')' | '#buffer(' INT [',' 'result' '=' INT] ')'
//! loc       := 'loc(' STRING ')'
//! VALUE     := '%' [A-Za-z0-9_.]+                  (the printer writes %0, %1, …)
//! STRING    := '"' … '"' with escapes \" \\ \n \t \r \u{hex}
//! FLOAT     := Rust f64 syntax, inf, -inf, nan, nan(0x<16 hex digits>)
//! ```
//!
//! Semantics and conventions:
//! - A node defines one value, or `n` values with `%k:n` (split, topk), used
//!   as `%k#0` … `%k#(n-1)`; values are defined before use (the printer
//!   writes nodes in [`Graph::topo_order`], numbered as
//!   [`crate::verify::value_names`]).
//! - The mnemonic is [`crate::op::Op::mnemonic`]. Attributes are all fields
//!   of the op (see `attrs.rs`), each required, in any order. Sources show
//!   their name (input, param) or values (constant) after the mnemonic and
//!   take their type from the result type; `{ty=…}` (input, param) or
//!   `{dtype=…, shape=[…]}` (constant) appear only if those differ.
//! - Floats print as Rust's shortest round-trip `{:?}` form, so constants,
//!   `eps`, `scale` and pad values read back bit-exact; a NaN other than
//!   the canonical one prints its bits as `nan(0x…)`.
//! - `#dispatch(k)` puts a node in dispatch region `k` (see
//!   [`crate::regions`]; the verifier checks regions are convex and
//!   ordered); `#buffer(id)` says result 0 of the node lives in memory-plan
//!   buffer `id` (`#buffer(id, result=p)` for result `p`).
//! - `#role(name)` reads through [`crate::graph::Role::from_name`]; a quoted
//!   role is always `Role::Other`.
//! - After reading a body the parser runs [`crate::verify::verify_graph`];
//!   a type error is reported at the line of the offending node.
//! - Symbol names inside dims must be identifiers for the form to read back.
//! - `control denoise` is [`crate::program::DenoiseSpec`]: the body stage
//!   after the keyword, then one field per line (any order; `input`,
//!   `negative` and `residual` repeat, the others appear once; `cfg_batch`,
//!   `teacache` and `residual` are optional). `a -> b` maps program input
//!   `a` onto body input `b` (`latents`, `input`, `negative`) or pairs the
//!   stream entering the block stack with the one leaving it (`residual`).
//!   The printer writes the fields in the order of the grammar.
//! - `control decode` is [`crate::program::DecodeSpec`]: one field per
//!   line, `cache` repeats (`new output -> cached step input`), the others
//!   appear once and are all required.

mod attrs;
mod cursor;
mod lexical;
mod parse;
mod print;

#[cfg(test)]
mod tests;

pub use parse::{parse_graph, parse_program};
pub use print::{print_graph, print_program};

use crate::graph::Graph;
use crate::program::Program;
use std::fmt;

/// The text form (see the module doc).
impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_graph(self))
    }
}

/// The text form (see the module doc).
impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_program(self))
    }
}
