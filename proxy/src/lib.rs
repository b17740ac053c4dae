//! # redshard
//!
//! A sharding proxy for the Redis protocol in front of plain (non-cluster) Redis nodes.
//!
//! One request flows through the modules in this order:
//!
//! ```text
//! listener ─▶ session ─▶ command (classify) ─▶ router (slot table) ─▶ backend lane ─▶ master
//!                ▲                                                        │
//!                └────────────── replies, in the client's order ◀─────────┘
//! ```
//!
//! - [`listener`]: the accept loop, max-clients permits, one task per client.
//! - [`session`]: one client connection: reads requests, dispatches them, writes the replies
//!   back in order; answers connection-local commands itself.
//! - [`resp`]: the hand-written, resumable, bounded request and reply scanners, and the
//!   encoders of synthesized replies.
//! - [`command`]: the Redis 7.0 command table (arity, key positions, flags) and how redshard
//!   treats each command.
//! - [`router`]: the slot table in an `ArcSwap`, and the routing of one request.
//! - [`backend`]: per-node lanes: long-lived, multiplexed, pipelined connections.
//! - [`shutdown`]: the drain signal shared by every task.
#![forbid(unsafe_code)]

pub mod backend;
pub mod command;
pub mod listener;
pub mod resp;
pub mod router;
pub mod session;
pub mod shutdown;
