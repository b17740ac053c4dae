//! SCAN across every master.
//!
//! The client's cursor carries both the shard being visited and that master's own cursor:
//! `client = master_cursor << SHARD_BITS | shard`. A scan starts at shard 0 with cursor 0,
//! walks that master to its end, then continues with the next shard; cursor 0 comes back only
//! after the last shard is done. So a full iteration returns every key that was present for
//! its whole duration, as Redis promises for one server (and, like Redis, may return a key
//! more than once).

use bytes::{Bytes, BytesMut};

use super::dispatch::Action;
use super::merge::MergePlan;
use super::Ctx;
use crate::router::RoutingTable;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::resp::{encode, reply, Args};

/// Low bits of the client's cursor that hold the shard index.
const SHARD_BITS: u32 = 10;

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
/// it is, with that master's own cursor.
pub(super) fn scan(ctx: &Ctx, table: &RoutingTable, args: Args<'_>) -> Action {
    let Some(cursor) = parse_cursor(args.get(1)) else {
        return Action::error(ctx, ClientError::InvalidCursor);
    };
    let shard = (cursor & ((1 << SHARD_BITS) - 1)) as usize;
    let master_cursor = cursor >> SHARD_BITS;
    let shards = table.shards().len();
    if shard >= shards {
        return Action::error(ctx, ClientError::InvalidCursor);
    }
    let master_cursor = master_cursor.to_string();
    let mut parts: Vec<&[u8]> = args.iter().collect();
    parts[1] = master_cursor.as_bytes();
    let mut request = BytesMut::new();
    encode::request(&mut request, &parts);
    let seq = ctx
        .queue
        .reserve_gather(1, MergePlan::Scan { shard, shards });
    table.shards()[shard].master.lane(0).send(
        request.freeze(),
        ctx.queue.part(seq, 0),
        ctx.protocol,
    );
    Action::Done
}

/// Rewrites one master's `[cursor, [keys...]]` reply into the client's cursor.
pub(super) fn rewrite(part: &Bytes, shard: usize, shards: usize, out: &mut BytesMut) {
    let elements = reply::aggregate_elements(part);
    let Some([cursor, keys]) = elements.as_deref() else {
        return ClientError::UnexpectedScanReply.encode(out);
    };
    let master_next = reply::aggregate_elements(&part[cursor.clone()])
        .is_none()
        .then(|| bulk_u64(&part[cursor.clone()]))
        .flatten();
    let Some(master_next) = master_next else {
        return ClientError::UnexpectedScanReply.encode(out);
    };
    let next = if master_next != 0 {
        match master_next
            .checked_shl(SHARD_BITS)
            .filter(|c| c >> SHARD_BITS == master_next)
        {
            Some(high) => high | shard as u64,
            None => return ClientError::ScanCursorTooLarge.encode(out),
        }
    } else if shard + 1 < shards {
        (shard + 1) as u64
    } else {
        0
    };
    encode::array_header(out, 2);
    encode::bulk(out, next.to_string().as_bytes());
    out.extend_from_slice(&part[keys.clone()]);
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

    fn rewritten(reply: &'static [u8], shard: usize, shards: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        rewrite(&Bytes::from_static(reply), shard, shards, &mut out);
        out.to_vec()
    }

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
        let keys = b"*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let mut reply = b"*2\r\n$2\r\n12\r\n".to_vec();
        reply.extend_from_slice(keys);
        let reply: &'static [u8] = Box::leak(reply.into_boxed_slice());
        let got = rewritten(reply, 1, 3);
        let want = format!("*2\r\n$5\r\n{}\r\n", (12 << SHARD_BITS) | 1);
        assert!(
            got.starts_with(want.as_bytes()),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert!(got.ends_with(keys));
        // The master is done: next shard, then 0 after the last one.
        assert!(rewritten(b"*2\r\n$1\r\n0\r\n*0\r\n", 1, 3).starts_with(b"*2\r\n$1\r\n2\r\n"));
        assert!(rewritten(b"*2\r\n$1\r\n0\r\n*0\r\n", 2, 3).starts_with(b"*2\r\n$1\r\n0\r\n"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(rewritten(b"+OK\r\n", 0, 1).starts_with(b"-ERR"));
        assert!(rewritten(b"*2\r\n$1\r\nx\r\n*0\r\n", 0, 1).starts_with(b"-ERR"));
    }
}
