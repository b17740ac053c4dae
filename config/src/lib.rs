//! # redshard-config
//!
//! Everything redshard knows before it opens a socket, pure and synchronous:
//!
//! - [`slot`]: hash slots, [`Slot::for_key`] (Redis Cluster's CRC16 and hash-tag rules) and
//!   [`SlotRange`].
//! - [`addr`]: [`NodeAddr`], a validated `host:port` of a backend redis-server.
//! - [`error`]: the error types; their `Display` is what an operator reads.

#![forbid(unsafe_code)]

pub mod addr;
pub mod error;
pub mod slot;

pub use addr::NodeAddr;
pub use error::{NodeAddrError, SlotRangeError};
pub use slot::{Slot, SlotRange, SLOT_COUNT};
