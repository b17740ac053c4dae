//! The Redis protocol on the hot path.
//!
//! The proxy forwards the client's **original request bytes** and the backends' **original
//! reply bytes**; it never decodes a value it does not need. So this module does not build
//! frames: it finds boundaries.
//!
//! - [`request`]: [`RequestScanner`] finds where each client request ends and the spans of its
//!   arguments, for RESP multibulk requests and for inline commands, exactly as Redis 7.0's
//!   `processMultibulkBuffer` / `processInlineBuffer` frame them (so the proxy and the backend
//!   never disagree on where a request ends), with Redis's size limits and error texts.
//! - [`reply`]: [`ReplyScanner`] finds where each RESP2/RESP3 reply of a backend ends, plus a
//!   few helpers that look into one complete reply when split commands are merged.
//! - [`encode`]: encoders for the replies the proxy synthesizes and for the sub-requests of
//!   split commands.
//!
//! Both scanners are **resumable**: on a partial read they keep their position and partial
//! state, so bytes already scanned are never scanned again and the total work is linear in the
//! input. Every size announced by the peer is checked against a bound before anything is
//! sized by it. Neither scanner panics, whatever the input.

pub mod encode;
mod inline;
mod lex;
pub mod reply;
pub mod request;

pub use lex::parse_i64;
pub use reply::ReplyScanner;

/// The protocol a client speaks, chosen with `HELLO 2` / `HELLO 3`. Backend lanes come in both
/// kinds, so a RESP3 client's replies arrive in RESP3 straight from Redis and are forwarded
/// as bytes like any other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RESP2, every connection's protocol until HELLO 3.
    #[default]
    Resp2,
    /// RESP3 (maps, sets, doubles, `_` nulls, pushes).
    Resp3,
}
pub use request::{Args, Frame, FrameKind, RequestScanner, ScanLimits};

/// A violation of the protocol by the peer.
///
/// `Display` is Redis's exact error reply without the leading `-` and the trailing CRLF, error
/// code included (`ERR Protocol error: invalid bulk length`: Redis's `addReplyError` prefixes
/// `ERR `), so the session writes it with [`encode::error`] and closes the connection, as Redis
/// does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An inline command line longer than [`ScanLimits::max_inline_len`].
    #[error("ERR Protocol error: too big inline request")]
    InlineTooBig,
    /// An inline command with an unterminated quote, or a closing quote not followed by a space.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A `*<count>` line with no CR within [`ScanLimits::max_inline_len`] bytes.
    #[error("ERR Protocol error: too big mbulk count string")]
    MultibulkCountTooBig,
    /// A `*<count>` that is not a number, or is above [`ScanLimits::max_multibulk_len`].
    #[error("ERR Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$<len>` line with no CR within [`ScanLimits::max_inline_len`] bytes.
    #[error("ERR Protocol error: too big bulk count string")]
    BulkCountTooBig,
    /// An argument header that does not start with `$`; holds the byte found instead.
    #[error("ERR Protocol error: expected '$', got '{}'", shown_byte(*.0))]
    ExpectedDollar(u8),
    /// A `$<len>` that is not a number, is negative, or is above [`ScanLimits::max_bulk_len`].
    #[error("ERR Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A malformed reply from a backend: the stream can no longer be framed.
    #[error("ERR Protocol error: invalid reply: {0}")]
    InvalidReply(&'static str),
}

/// How Redis shows the byte of "expected '$', got '%c'": CR and LF become spaces
/// (`addReplyErrorFormat` maps them so the reply stays one line). A non-ASCII byte is shown as
/// the Latin-1 character of that value, since a Rust string cannot hold the raw byte.
fn shown_byte(b: u8) -> char {
    match b {
        b'\r' | b'\n' => ' ',
        _ => char::from(b),
    }
}
