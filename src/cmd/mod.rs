//! One module per `omnic` subcommand.

pub mod compile;
pub mod dims;
pub mod import;
pub mod inspect;
pub mod opt;
pub mod pass_args;
pub mod passes;
pub mod run;
