//! MONITOR: every client's commands, across all shards, streamed to the monitoring clients.
//!
//! A monitoring client's session registers its reply queue here; each command the proxy
//! accepts is formatted once, as Redis's `replicationFeedMonitors` writes it
//! (`+1700000000.123456 [0 127.0.0.1:51234] "SET" "k" "v"`), and pushed to every monitor's
//! queue, where it takes its place among that client's replies. What is not shown, as in Redis:
//! `admin` commands (CONFIG, DEBUG, MONITOR itself ...), commands refused before they ran
//! (unknown, wrong arity, NOAUTH, NOPERM, not allowed through redshard; one refused later for
//! its keys, CROSSSLOT, is shown), and the credentials of
//! AUTH and HELLO AUTH, shown as `"(redacted)"`. Commands a script calls run on the node and
//! are not seen by the proxy.
//!
//! Cost: with nobody monitoring, one relaxed atomic load per command ([`Monitors::active`]).
//! A monitor that does not read its lines cannot make the proxy's memory grow without bound:
//! once more than `[limits] monitor_buffer_bytes` of lines wait in its queue it gets one error
//! line, is closed, and the proxy logs it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};
use tracing::warn;

use crate::replies::ReplyQueue;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{CommandId, CommandSpec, Flags};
use redshard_protocol::resp::Args;

/// The monitoring clients.
#[derive(Debug, Default)]
pub struct Monitors {
    /// How many clients monitor: read on every command, so relaxed and alone on the path.
    count: AtomicUsize,
    /// Each monitor's client id and reply queue.
    list: Mutex<Vec<(u64, Arc<ReplyQueue>)>>,
}

impl Monitors {
    /// Whether any client monitors (one relaxed load: the only cost while none does).
    #[inline]
    #[must_use]
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<ReplyQueue>)>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Client `id`, whose replies go through `queue`, monitors from now on.
    pub fn add(&self, id: u64, queue: Arc<ReplyQueue>) {
        let mut list = self.lock();
        if !list.iter().any(|(i, _)| *i == id) {
            list.push((id, queue));
        }
        self.count.store(list.len(), Ordering::Relaxed);
    }

    /// Client `id` monitors no more (RESET, or it left).
    pub fn remove(&self, id: u64) {
        let mut list = self.lock();
        list.retain(|(i, _)| *i != id);
        self.count.store(list.len(), Ordering::Relaxed);
    }

    /// Shows `args` (the command `spec`, sent by the client at `addr`) to every monitor, if
    /// Redis would show it. A monitor with more than `limit` bytes waiting gets
    /// [`ClientError::MonitorTooSlow`] and is closed.
    pub fn feed(&self, spec: &CommandSpec, args: &Args<'_>, addr: &SocketAddr, limit: usize) {
        if spec.flags.contains(Flags::ADMIN) {
            return;
        }
        let line = line(spec.id, args, addr, std::time::SystemTime::now());
        let mut list = self.lock();
        list.retain(|(id, queue)| {
            if queue.push_within(line.clone(), limit) {
                return true;
            }
            warn!(
                client = id,
                limit, "closing a MONITOR client that fell behind (limits.monitor_buffer_bytes)"
            );
            queue.push_ready(ClientError::MonitorTooSlow { limit }.to_reply());
            queue.mark_broken();
            false
        });
        self.count.store(list.len(), Ordering::Relaxed);
    }
}

/// Whether argument `index` of command `id` is shown as `"(redacted)"`: AUTH's user and
/// password, HELLO's after AUTH (Redis's `redactClientCommandArgument`).
fn redacted(id: CommandId, args: &Args<'_>, index: usize) -> bool {
    match id {
        CommandId::Auth => index >= 1,
        CommandId::Hello => (2..index).any(|at| {
            args.get(at).eq_ignore_ascii_case(b"AUTH")
                && (index == at + 1 || index == at + 2)
                && args.len() > at + 2
        }),
        _ => false,
    }
}

/// One MONITOR line: `+<unix time with µs> [0 <addr>] "arg" ...\r\n`, each argument quoted
/// as Redis's `sdscatrepr` does.
fn line(id: CommandId, args: &Args<'_>, addr: &SocketAddr, now: std::time::SystemTime) -> Bytes {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = BytesMut::with_capacity(64 + args.iter().map(|a| a.len() + 3).sum::<usize>());
    out.put_slice(
        format!(
            "+{}.{:06} [0 {addr}] ",
            since.as_secs(),
            since.subsec_micros()
        )
        .as_bytes(),
    );
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.put_u8(b' ');
        }
        if redacted(id, args, i) {
            out.put_slice(b"\"(redacted)\"");
        } else {
            repr(&mut out, arg);
        }
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// Redis's `sdscatrepr`: quoted, `\\` `\"` `\n` `\r` `\t` `\a` `\b` escaped, other bytes that
/// are not printable ASCII as `\xhh`.
fn repr(out: &mut BytesMut, arg: &[u8]) {
    out.put_u8(b'"');
    for &b in arg {
        match b {
            b'\\' | b'"' => {
                out.put_u8(b'\\');
                out.put_u8(b);
            }
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            0x07 => out.put_slice(b"\\a"),
            0x08 => out.put_slice(b"\\b"),
            0x20..=0x7e => out.put_u8(b),
            _ => out.put_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use redshard_protocol::resp::RequestScanner;

    fn with_args<R>(request: &[u8], f: impl FnOnce(Args<'_>) -> R) -> R {
        let mut scanner = RequestScanner::new(Default::default());
        let frame = scanner.scan(request).unwrap().unwrap();
        assert_eq!(frame.len, request.len());
        f(scanner.args(request))
    }

    fn shown(id: CommandId, request: &[u8]) -> String {
        let addr: SocketAddr = "127.0.0.1:51234".parse().unwrap();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_000_123);
        with_args(request, |args| {
            String::from_utf8(line(id, &args, &addr, at).to_vec()).unwrap()
        })
    }

    #[test]
    fn lines_are_redis_s() {
        assert_eq!(
            shown(CommandId::Set, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
            "+1700000000.000123 [0 127.0.0.1:51234] \"SET\" \"k\" \"v\"\r\n"
        );
        assert_eq!(
            shown(
                CommandId::Set,
                b"*3\r\n$3\r\nset\r\n$4\r\na\"\\b\r\n$5\r\n\x01\n\xff\t\x07\r\n"
            ),
            "+1700000000.000123 [0 127.0.0.1:51234] \"set\" \"a\\\"\\\\b\" \"\\x01\\n\\xff\\t\\a\"\r\n"
        );
    }

    #[test]
    fn credentials_are_redacted() {
        assert!(shown(CommandId::Auth, b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n")
            .ends_with("\"AUTH\" \"(redacted)\"\r\n"));
        assert!(shown(
            CommandId::Auth,
            b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$2\r\npw\r\n"
        )
        .ends_with("\"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"));
        let hello = shown(
            CommandId::Hello,
            b"*7\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nauth\r\n$1\r\nu\r\n$2\r\npw\r\n$7\r\nSETNAME\r\n$1\r\nn\r\n",
        );
        assert!(
            hello.ends_with(
                "\"HELLO\" \"3\" \"auth\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"n\"\r\n"
            ),
            "{hello}"
        );
    }
}
