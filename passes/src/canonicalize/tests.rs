//! Unit tests of the canonicalize pass.
