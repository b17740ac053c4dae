//! The crate's error types. Each one's `Display` is the message an operator reads: it names the
//! file, line, key, shard or slot concerned and, where there is one, the way out.

/// A slot range that is not `N` or `N-M` with `N <= M <= 16383`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotRangeError {
    /// Not digits, or not one `-` between two numbers.
    #[error("slot range {text:?} is not a slot number or a range like \"0-5460\"")]
    Syntax {
        /// The text given.
        text: String,
    },
    /// A bound is 16384 or more.
    #[error("slot range {text:?} is out of range: slots are numbered 0-16383")]
    OutOfRange {
        /// The text given.
        text: String,
    },
    /// `start > end`.
    #[error("slot range {text:?} starts after it ends")]
    Reversed {
        /// The text given.
        text: String,
    },
}

/// A node address that is not a valid `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeAddrError {
    /// No `:port`, or brackets that do not close.
    #[error("node address {text:?} must be host:port, [ipv6]:port or hostname:port")]
    Syntax {
        /// The text given.
        text: String,
    },
    /// The port is not a number in `1..=65535`.
    #[error("node address {text:?} has an invalid port: ports are 1-65535")]
    Port {
        /// The text given.
        text: String,
    },
    /// The host is not an IP address or a valid hostname.
    #[error("node address {text:?} has an invalid host: {reason}")]
    Host {
        /// The text given.
        text: String,
        /// What is wrong with the host.
        reason: &'static str,
    },
}
