//! # redshard-protocol
//!
//! What redshard knows of the Redis protocol, apart from any connection or runtime:
//!
//! - [`resp`]: the hand-written, resumable, bounded request and reply scanners, and the
//!   encoders of synthesized replies.
//! - [`command`]: the Redis 7.0 command table (arity, key positions, flags), generated from a
//!   live server, and how redshard treats each command (its route).
//!
//! The proxy re-exports both modules, so `redshard_proxy::resp` and `redshard_proxy::command`
//! name the same items.
#![forbid(unsafe_code)]

pub mod command;
pub mod resp;
