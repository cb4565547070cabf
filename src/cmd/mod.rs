//! One module per `omnic` subcommand.

pub mod calibrate;
pub mod compile;
pub mod dims;
pub mod import;
pub mod inspect;
pub mod lora_opts;
pub mod opt;
pub mod pack_weights;
pub mod pass_args;
pub mod passes;
pub mod run;
pub mod teacache_opts;
