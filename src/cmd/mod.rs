//! One module per `omnic` subcommand.

pub mod dims;
pub mod import;
pub mod inspect;
pub mod run;
