//! Fuzz targets of redshard: the invariant checks they run, in [`checks`].
//!
//! The targets themselves are `fuzz_targets/*.rs`; see `fuzz/README.md`.
#![forbid(unsafe_code)]

pub mod checks;
