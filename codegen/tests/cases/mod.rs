mod support;

mod bench;
mod elementwise;
mod emit;
mod errors;
mod fixtures;
mod linear_sections;
mod movement;
mod norm;
mod random;
mod reduce;
mod scheduling;
mod views;
