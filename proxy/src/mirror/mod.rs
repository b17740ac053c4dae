//! Mirroring: the proxy is the replication channel (DESIGN.md §4).
//!
//! - [`effect`]: what each replica receives for one write, made deterministic.

pub mod effect;
