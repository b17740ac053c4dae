//! SLOWLOG at the proxy: the commands whose reply took longest, timed from the request's
//! arrival at the proxy to its reply being ready (so it includes the backend, the network and
//! any wait behind earlier requests), in Redis's format.
//!
//! Only slow commands cost anything: the request's bytes are kept (a reference, not a copy)
//! until its reply, and decoded into arguments only when it turns out slow.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use redshard_protocol::resp::{encode, FrameKind, RequestScanner};

/// Arguments kept per entry, like Redis's `SLOWLOG_ENTRY_MAX_ARGC`.
const MAX_ARGS: usize = 32;
/// Bytes kept per argument, like Redis's `SLOWLOG_ENTRY_MAX_STRING`.
const MAX_ARG_BYTES: usize = 128;

/// One slow command.
#[derive(Debug)]
struct Entry {
    /// Increasing id.
    id: u64,
    /// Unix time when it was logged, in seconds.
    timestamp: u64,
    /// How long it took, in microseconds.
    micros: u64,
    /// Its arguments, shortened like Redis does.
    args: Vec<Vec<u8>>,
    /// The client's address.
    client_addr: String,
    /// The client's name.
    client_name: String,
}

/// The proxy's slow log, shared by every session.
#[derive(Debug, Default)]
pub struct SlowLog {
    /// Newest first.
    entries: Mutex<VecDeque<Entry>>,
    /// The next entry's id.
    next_id: AtomicU64,
}

/// Redis's shortening: at most 32 arguments (the last one saying how many more there were),
/// each at most 128 bytes (followed by how many more bytes there were).
fn shorten(request: &[u8]) -> Vec<Vec<u8>> {
    let mut scanner = RequestScanner::default();
    let Ok(Some(frame)) = scanner.scan(request) else {
        return Vec::new();
    };
    if frame.kind == FrameKind::Empty {
        return Vec::new();
    }
    let args = scanner.args(request);
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if i == MAX_ARGS - 1 && args.len() > MAX_ARGS {
            out.push(format!("... ({} more arguments)", args.len() - MAX_ARGS + 1).into_bytes());
            break;
        }
        if arg.len() > MAX_ARG_BYTES {
            let mut short = arg[..MAX_ARG_BYTES].to_vec();
            short.extend_from_slice(
                format!("... ({} more bytes)", arg.len() - MAX_ARG_BYTES).as_bytes(),
            );
            out.push(short);
        } else {
            out.push(arg.to_vec());
        }
    }
    out
}

impl SlowLog {
    /// Logs `request` (its RESP bytes) if it took at least `threshold_us` (negative: never),
    /// keeping at most `max_len` entries.
    pub fn record(
        &self,
        request: &Bytes,
        took: Duration,
        threshold_us: i64,
        max_len: usize,
        client_addr: &str,
        client_name: &str,
    ) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if threshold_us < 0 || micros < threshold_us.unsigned_abs() || max_len == 0 {
            return;
        }
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            micros,
            args: shorten(request),
            client_addr: client_addr.to_owned(),
            client_name: client_name.to_owned(),
        };
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.push_front(entry);
        entries.truncate(max_len);
    }

    /// SLOWLOG LEN.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is logged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SLOWLOG RESET.
    pub fn reset(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// `SLOWLOG GET [count]`: the newest `count` entries (all for a negative count), each
    /// `[id, timestamp, microseconds, [args...], client address, client name]`.
    #[must_use]
    pub fn get(&self, count: i64) -> Bytes {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = usize::try_from(count).map_or(entries.len(), |c| c.min(entries.len()));
        let mut out = BytesMut::new();
        encode::array_header(&mut out, n);
        for e in entries.iter().take(n) {
            encode::array_header(&mut out, 6);
            encode::integer(&mut out, e.id as i64);
            encode::integer(&mut out, e.timestamp as i64);
            encode::integer(&mut out, e.micros as i64);
            encode::array_header(&mut out, e.args.len());
            for a in &e.args {
                encode::bulk(&mut out, a);
            }
            encode::bulk(&mut out, e.client_addr.as_bytes());
            encode::bulk(&mut out, e.client_name.as_bytes());
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_shortens_like_redis() {
        let log = SlowLog::default();
        let big = "x".repeat(200);
        let mut request = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$200\r\n{big}\r\n").into_bytes();
        log.record(
            &Bytes::from(request.clone()),
            Duration::from_millis(20),
            10_000,
            2,
            "1.2.3.4:5",
            "n",
        );
        log.record(
            &Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            Duration::from_millis(1),
            10_000,
            2,
            "a",
            "",
        );
        assert_eq!(log.len(), 1, "under the threshold: not logged");
        for _ in 0..3 {
            log.record(
                &Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
                Duration::from_millis(11),
                10_000,
                2,
                "a",
                "",
            );
        }
        assert_eq!(log.len(), 2, "max_len keeps the newest");
        log.reset();
        log.record(
            &Bytes::from(std::mem::take(&mut request)),
            Duration::from_millis(20),
            0,
            8,
            "1.2.3.4:5",
            "n",
        );
        let got = log.get(10);
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("... (72 more bytes)"), "{text}");
        assert!(text.contains("$9\r\n1.2.3.4:5\r\n$1\r\nn\r\n"), "{text}");
        log.record(
            &Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            Duration::ZERO,
            -1,
            8,
            "a",
            "",
        );
        assert_eq!(log.len(), 1, "negative threshold logs nothing");
    }

    #[test]
    fn many_arguments_are_cut_at_32() {
        let mut request = b"*40\r\n".to_vec();
        for i in 0..40 {
            let a = i.to_string();
            request.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        let args = shorten(&request);
        assert_eq!(args.len(), 32);
        assert_eq!(args[31], b"... (9 more arguments)");
    }
}
