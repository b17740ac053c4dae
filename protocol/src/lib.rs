//! # redshard-protocol
//!
//! What redshard knows of the Redis protocol, apart from any connection or runtime:
//!
//! - [`resp`]: the hand-written, resumable, bounded request and reply scanners, and the
//!   encoders of synthesized replies.
//! - [`command`]: the Redis 7.0 command table (arity, key positions, flags), generated from a
//!   live server, and how redshard treats each command (its route).
//! - [`client_error`]: every error reply the proxy itself gives a client ([`ClientError`]),
//!   and whether the request reached a node ([`Reached`]).
//!
//! The proxy re-exports these modules, so `redshard_proxy::resp`, `redshard_proxy::command`
//! and `redshard_proxy::client_error` name the same items.
#![forbid(unsafe_code)]

pub mod acl;
pub mod client_error;
pub mod command;
pub mod glob;
pub mod resp;

pub use client_error::{ClientError, Reached};
