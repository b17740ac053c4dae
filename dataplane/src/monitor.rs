//! MONITOR: every client's commands, across all shards, streamed to the monitoring clients.
//!
//! A monitoring client's session registers its reply queue here; each command the proxy
//! accepts is formatted once, as Redis's `replicationFeedMonitors` writes it
//! (`+1700000000.123456 [0 127.0.0.1:51234] "SET" "k" "v"`), and pushed to every monitor's
//! queue, where it takes its place among that client's replies. What is not shown, as in Redis:
//! `admin` commands (CONFIG, DEBUG, MONITOR itself ...), commands refused before they ran
//! (unknown, wrong arity, NOAUTH, NOPERM, not allowed through redshard; one refused later for
//! its keys, CROSSSLOT, is shown), and the credentials of
//! AUTH and HELLO AUTH, shown as `"(redacted)"`.
//!
//! Commands a script or function calls run on the node, where the proxy does not see them.
//! While anyone monitors, the proxy keeps one MONITOR connection per master (see
//! [`crate::backend::node_monitor`], kept by [`crate::backend::watch`]), following the
//! routing table as the masters change, and relays the node's lines of those commands
//! (`+1700000000.123456 [0 lua] "GET" "k"`, the node's time) to the monitors. A script's
//! lines reach the proxy after its EVAL was shown (the proxy shows EVAL when it sends it);
//! against other clients' commands, and across shards, their order is the order they reach
//! the proxy. The first MONITOR is answered once every master's connection confirmed MONITOR
//! (or failed), so a script sent after the `+OK` is seen; the connections close with the last
//! monitor.
//!
//! Cost: with nobody monitoring, one relaxed atomic load per command ([`Monitors::active`]),
//! and no connection to the nodes. A monitor that does not read its lines cannot make the
//! proxy's memory grow without bound: once more than `[limits] monitor_buffer_bytes` of lines
//! wait in its queue it gets one error line, is closed, and the proxy logs it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::{BufMut, Bytes, BytesMut};
use redshard_config::NodeAddr;
use tracing::{debug, warn};

use crate::backend::node_monitor::{NodeMonitor, ScriptLine};
use crate::backend::watch::{Event, State, Watchers};
use crate::backend::Node;
use crate::replies::{ReplyQueue, ReplyTo};
use crate::router::Router;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{CommandId, CommandSpec, Flags};
use redshard_protocol::resp::Args;

/// What the relay of the nodes' script lines reaches while clients monitor: the routing
/// table whose masters it follows, the monitors, and their buffer limit. Implemented by the
/// state a layer above (`ProxyState`); the relay's task holds it weakly and stops when the
/// state is gone.
pub trait MonitorHub: Send + Sync + 'static {
    /// The live routing table.
    fn router(&self) -> &Router;
    /// The monitoring clients.
    fn monitors(&self) -> &Monitors;
    /// `[limits] monitor_buffer_bytes` in effect now.
    fn monitor_buffer_bytes(&self) -> usize;
}

/// The monitoring clients.
#[derive(Debug, Default)]
pub struct Monitors {
    /// How many clients monitor: read on every command, so relaxed and alone on the path.
    count: AtomicUsize,
    /// The monitors and the nodes' connections.
    inner: Mutex<Inner>,
}

/// What [`Monitors`] holds under its lock.
#[derive(Debug, Default)]
struct Inner {
    /// Each monitor's client id and reply queue.
    list: Vec<(u64, Arc<ReplyQueue>)>,
    /// The masters' MONITOR connections, while `list` is not empty.
    relay: Option<Watchers<ScriptLine>>,
}

impl Monitors {
    /// Whether any client monitors (one relaxed load: the only cost while none does).
    #[inline]
    #[must_use]
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Client `id`, whose replies go through `queue`, monitors from now on; `ok` gets `+OK`
    /// once every master's MONITOR connection has started (at once when they have). The
    /// first monitor opens them.
    pub fn add<H: MonitorHub>(&self, hub: &Arc<H>, id: u64, queue: Arc<ReplyQueue>, ok: ReplyTo) {
        let mut inner = self.lock();
        if !inner.list.iter().any(|(i, _)| *i == id) {
            inner.list.push((id, queue));
        }
        self.count.store(inner.list.len(), Ordering::Relaxed);
        let relay = inner.relay.get_or_insert_with(|| {
            let weak = Arc::downgrade(hub);
            let mut relay = Watchers::open(
                "MONITOR",
                Node::monitor_scripts,
                hub.router().watch_installs(),
                move |event| dispatch(&weak, event),
            );
            follow_masters(&mut relay, hub.router());
            debug!("MONITOR: the masters' MONITOR connections opened");
            relay
        });
        relay.hold(id, ok);
        relay.settle(|_| {});
    }

    /// Client `id` monitors no more (RESET, or it left). With the last monitor, the masters'
    /// MONITOR connections close.
    pub fn remove(&self, id: u64) {
        let mut inner = self.lock();
        inner.list.retain(|(i, _)| *i != id);
        self.closed_if_none(&mut inner);
    }

    /// Counts the monitors; with none left, closes the masters' connections.
    fn closed_if_none(&self, inner: &mut Inner) {
        self.count.store(inner.list.len(), Ordering::Relaxed);
        if inner.list.is_empty() && inner.relay.take().is_some() {
            debug!("MONITOR: nobody monitors, the masters' MONITOR connections closed");
        }
    }

    /// Shows `args` (the command `spec`, sent in database `db` by the client at `addr`) to
    /// every monitor, if Redis would show it. A monitor with more than `limit` bytes waiting
    /// gets [`ClientError::MonitorTooSlow`] and is closed.
    pub fn feed(
        &self,
        spec: &CommandSpec,
        args: &Args<'_>,
        (db, addr): (u16, &SocketAddr),
        limit: usize,
    ) {
        if spec.flags.contains(Flags::ADMIN) {
            return;
        }
        let line = line(spec.id, args, (db, addr), std::time::SystemTime::now());
        self.push(&line, limit);
    }

    /// Pushes `line` to every monitor, closing those more than `limit` bytes behind.
    fn push(&self, line: &Bytes, limit: usize) {
        let mut inner = self.lock();
        inner.list.retain(|(id, queue)| {
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
        self.closed_if_none(&mut inner);
    }

    /// Handles one report of a master's MONITOR connection.
    fn report(&self, addr: &NodeAddr, what: NodeMonitor, limit: usize) {
        if let NodeMonitor::Message(ScriptLine(line)) = what {
            // A connection being aborted may still have sent one: it was a master's line.
            self.push(&line, limit);
            return;
        }
        let mut inner = self.lock();
        let Some(relay) = inner.relay.as_mut() else {
            return;
        };
        let Some(was) = relay.note(addr, &what) else {
            return; // A master of an older topology: its connection is being aborted.
        };
        match what {
            NodeMonitor::Ready => {
                debug!(node = %addr, "MONITOR: a master's script commands are relayed");
            }
            NodeMonitor::Lost(why) if was != State::Failed => {
                warn!(node = %addr, reason = %why, "MONITOR: the MONITOR connection to a master is lost; the commands its scripts run are not shown until it is back");
            }
            NodeMonitor::Lost(_) | NodeMonitor::Message(_) => {}
        }
        relay.settle(|_| {});
    }

    /// The topology changed: follow its masters.
    fn topology_changed(&self, router: &Router) {
        if let Some(relay) = self.lock().relay.as_mut() {
            follow_masters(relay, router);
            relay.settle(|_| {});
        }
    }
}

/// Opens a MONITOR connection to each master of the current table that has none, and
/// closes those of nodes that are no longer masters.
fn follow_masters(relay: &mut Watchers<ScriptLine>, router: &Router) {
    relay.follow(
        router
            .load()
            .shards()
            .iter()
            .map(|route| Arc::clone(&route.master)),
    );
}

/// The relay's task's work: a connection's report, or a new topology, whose masters it
/// follows. `false` once the state is gone.
fn dispatch<H: MonitorHub>(hub: &Weak<H>, event: Event<ScriptLine>) -> bool {
    let Some(hub) = hub.upgrade() else {
        return false;
    };
    match event {
        Event::Report(addr, what) => {
            hub.monitors()
                .report(&addr, what, hub.monitor_buffer_bytes());
        }
        Event::Topology => hub.monitors().topology_changed(hub.router()),
    }
    true
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

/// One MONITOR line: `+<unix time with µs> [<db> <addr>] "arg" ...\r\n`, each argument
/// quoted as Redis's `sdscatrepr` does.
fn line(
    id: CommandId,
    args: &Args<'_>,
    (db, addr): (u16, &SocketAddr),
    now: std::time::SystemTime,
) -> Bytes {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = BytesMut::with_capacity(64 + args.iter().map(|a| a.len() + 3).sum::<usize>());
    out.put_slice(
        format!(
            "+{}.{:06} [{db} {addr}] ",
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
            String::from_utf8(line(id, &args, (0, &addr), at).to_vec()).unwrap()
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
