mod support;

mod elementwise;
mod emit;
mod errors;
mod random;
