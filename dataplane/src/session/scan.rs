//! SCAN across every master.
//!
//! The client's cursor carries both the shard being visited and that master's own cursor:
//! `client = master_cursor << SHARD_BITS | shard`. A scan starts at shard 0 with cursor 0,
//! walks that master to its end, then continues with the next shard; cursor 0 comes back only
//! after the last shard is done. So a full iteration returns every key that was present for
//! its whole duration, as Redis promises for one server (and, like Redis, may return a key
//! more than once).
//!
//! One call goes on to the next shard (from its cursor 0) when a master finished its part
//! before the call returned COUNT keys (10 by default): as one server returns a small
//! keyspace in one call, a small keyspace over several masters comes back in one call too.
//! A call stops at the first master that has more to give (its cursor is not 0), so no part
//! of any master is skipped.

use bytes::{Bytes, BytesMut};

use super::dispatch::Action;
use super::Ctx;
use crate::backend::{Dest, LaneHandle, LaneRequest};
use crate::replies::ReplyTo;
use crate::router::RoutingTable;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::resp::{encode, parse_i64, reply, Args, Protocol};

/// Low bits of the client's cursor that hold the shard index.
const SHARD_BITS: u32 = 10;

/// SCAN's COUNT when the client gives none (Redis's default).
const DEFAULT_COUNT: usize = 10;

/// A cursor as Redis 7.0 reads it (`parseScanCursorOrReply`: C's `strtoul`, base 10): an
/// optional sign (`-1` wraps to `u64::MAX`), digits, nothing after; no leading space; the text
/// ends at a NUL byte, so an empty cursor is 0; an overflow is refused.
fn parse_cursor(text: &[u8]) -> Option<u64> {
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    if text.is_empty() {
        return Some(0);
    }
    let (negative, digits) = match text[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().try_fold(0u64, |v, &d| {
        v.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// Dispatches `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` to the master whose turn
/// it is, with that master's own cursor, and to the next ones while they finish before COUNT
/// keys are found (see the module docs).
pub(super) fn scan(ctx: &Ctx, table: &RoutingTable, args: Args<'_>) -> Action {
    let Some(cursor) = parse_cursor(args.get(1)) else {
        return Action::error(ctx, ClientError::InvalidCursor);
    };
    let shard = (cursor & ((1 << SHARD_BITS) - 1)) as usize;
    let master_cursor = cursor >> SHARD_BITS;
    if shard >= table.shards().len() {
        return Action::error(ctx, ClientError::InvalidCursor);
    }
    // The master checks the options; a COUNT it refuses is answered with its error.
    let count = (2..args.len().saturating_sub(1))
        .step_by(2)
        .find(|&i| args.get(i).eq_ignore_ascii_case(b"count"))
        .and_then(|i| parse_i64(args.get(i + 1)))
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(DEFAULT_COUNT);
    let walk = Walk {
        args: args.iter().map(<[u8]>::to_vec).collect(),
        lanes: table.shards()[shard..]
            .iter()
            .map(|route| route.master.lane(0).clone())
            .collect(),
        first: shard,
        shards: table.shards().len(),
        count,
        protocol: ctx.protocol,
        db: ctx.db,
    };
    let reply = ctx.queue.reserve();
    tokio::spawn(walk.run(master_cursor, reply));
    Action::Done
}

/// One SCAN call over the masters from the one whose turn it is.
struct Walk {
    /// The client's arguments (the cursor is replaced for each master).
    args: Vec<Vec<u8>>,
    /// The first lane of the masters from `first` on, in shard order.
    lanes: Vec<LaneHandle>,
    /// The shard of the client's cursor.
    first: usize,
    /// How many shards there are.
    shards: usize,
    /// The keys after which the call ends at the end of a master.
    count: usize,
    /// The client's protocol.
    protocol: Protocol,
    /// The client's database.
    db: u16,
}

impl Walk {
    /// Scans from `master_cursor` of the first master on, and delivers the client's reply.
    async fn run(self, mut master_cursor: u64, reply: ReplyTo) {
        let mut keys = BytesMut::new();
        let mut found = 0;
        let mut shard = self.first;
        let next = loop {
            let part = self.ask(shard, master_cursor).await;
            if reply::is_error(&part) {
                return reply.deliver(part);
            }
            let (master_next, elements) = match split_reply(&part) {
                Ok(split) => split,
                Err(e) => return reply.deliver(e.to_reply()),
            };
            found += elements.len();
            if let (Some(a), Some(b)) = (elements.first(), elements.last()) {
                keys.extend_from_slice(&part[a.start..b.end]);
            }
            if master_next != 0 || shard + 1 == self.shards || found >= self.count {
                match next_cursor(master_next, shard, self.shards) {
                    Ok(next) => break next,
                    Err(e) => return reply.deliver(e.to_reply()),
                }
            }
            shard += 1;
            master_cursor = 0;
        };
        let mut out = BytesMut::with_capacity(keys.len() + 32);
        encode::array_header(&mut out, 2);
        encode::bulk(&mut out, next.to_string().as_bytes());
        encode::array_header(&mut out, found);
        out.extend_from_slice(&keys);
        reply.deliver(out.freeze());
    }

    /// Asks master `shard` for its part from `cursor`.
    async fn ask(&self, shard: usize, cursor: u64) -> Bytes {
        let cursor = cursor.to_string();
        let mut parts: Vec<&[u8]> = self.args.iter().map(Vec::as_slice).collect();
        parts[1] = cursor.as_bytes();
        let mut request = BytesMut::new();
        encode::request(&mut request, &parts);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut request = LaneRequest::new(request.freeze(), Dest::Signal(tx), self.protocol);
        request.db = self.db;
        self.lanes[shard - self.first].submit(request);
        // Dropped unanswered only when the lane is gone.
        rx.await
            .unwrap_or_else(|_| ClientError::LaneClosed.to_reply())
    }
}

/// One master's `[cursor, [keys...]]` reply: its next cursor and its keys' ranges.
fn split_reply(part: &[u8]) -> Result<(u64, Vec<std::ops::Range<usize>>), ClientError> {
    let elements = reply::aggregate_elements(part);
    let Some([cursor, keys]) = elements.as_deref() else {
        return Err(ClientError::UnexpectedScanReply);
    };
    let master_next = reply::aggregate_elements(&part[cursor.clone()])
        .is_none()
        .then(|| bulk_u64(&part[cursor.clone()]))
        .flatten()
        .ok_or(ClientError::UnexpectedScanReply)?;
    let keys = reply::aggregate_elements(&part[keys.clone()])
        .ok_or(ClientError::UnexpectedScanReply)?
        .into_iter()
        .map(|r| r.start + keys.start..r.end + keys.start)
        .collect();
    Ok((master_next, keys))
}

/// The client's cursor after master `shard` answered `master_next`.
fn next_cursor(master_next: u64, shard: usize, shards: usize) -> Result<u64, ClientError> {
    if master_next != 0 {
        return master_next
            .checked_shl(SHARD_BITS)
            .filter(|c| c >> SHARD_BITS == master_next)
            .map(|high| high | shard as u64)
            .ok_or(ClientError::ScanCursorTooLarge);
    }
    Ok(if shard + 1 < shards {
        (shard + 1) as u64
    } else {
        0
    })
}

/// The number in a bulk reply such as `$3\r\n128\r\n`.
fn bulk_u64(reply: &[u8]) -> Option<u64> {
    let rest = reply.strip_prefix(b"$")?;
    let header_end = rest.iter().position(|&b| b == b'\r')?;
    let body = rest.get(header_end + 2..)?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_read_like_strtoul() {
        for (text, want) in [
            (&b"0"[..], 0),
            (b"", 0),
            (b"\0", 0),
            (b"1\0junk", 1),
            (b"+1", 1),
            (b"01", 1),
            (b"-0", 0),
            (b"-1", u64::MAX),
            (b"18446744073709551615", u64::MAX),
            (b"1024", 1024),
        ] {
            assert_eq!(
                parse_cursor(text),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        for bad in [
            &b" 1"[..],
            b"1 ",
            b"+",
            b"-",
            b"x",
            b"1x",
            b"18446744073709551616",
        ] {
            assert_eq!(
                parse_cursor(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn cursor_moves_through_the_master_then_to_the_next_shard() {
        assert_eq!(next_cursor(12, 1, 3), Ok((12 << SHARD_BITS) | 1));
        // The master is done: next shard, then 0 after the last one.
        assert_eq!(next_cursor(0, 1, 3), Ok(2));
        assert_eq!(next_cursor(0, 2, 3), Ok(0));
        assert_eq!(
            next_cursor(u64::MAX, 0, 3),
            Err(ClientError::ScanCursorTooLarge)
        );
    }

    #[test]
    fn a_master_reply_is_split_into_its_cursor_and_keys() {
        let part = b"*2\r\n$2\r\n12\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let (next, keys) = split_reply(part).unwrap();
        assert_eq!(next, 12);
        let keys: Vec<&[u8]> = keys.into_iter().map(|r| &part[r]).collect();
        assert_eq!(keys, [&b"$1\r\na\r\n"[..], b"$1\r\nb\r\n"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(split_reply(b"+OK\r\n").is_err());
        assert!(split_reply(b"*2\r\n$1\r\nx\r\n*0\r\n").is_err());
        assert!(split_reply(b"*2\r\n$1\r\n1\r\n:3\r\n").is_err());
    }
}
