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
//! lines reach the proxy after its EVAL was shown (the proxy shows EVAL when it sends it).
//! They come on another connection than its reply, so while anyone monitors, a script's
//! reply waits until they are shown ([`Monitors::mark_after_script`]): the lane sends a
//! marker after the script (`ECHO`, see [`crate::backend::node_monitor::marker_request`]),
//! and the reply goes to the client once the relay has read the marker's line, which the
//! node wrote after every line of the script; so the client's next command is shown after
//! them, as one server shows it. Against other clients' commands, and across shards, the
//! order is the order the lines reach the proxy. The first MONITOR is answered once every
//! master's connection confirmed MONITOR (or failed), so a script sent after the `+OK` is
//! seen; the connections close with the last monitor.
//!
//! Cost: with nobody monitoring, one relaxed atomic load per command ([`Monitors::active`]),
//! and no connection to the nodes. A monitor that does not read its lines cannot make the
//! proxy's memory grow without bound: once more than `[limits] monitor_buffer_bytes` of lines
//! wait in its queue it gets one error line, is closed, and the proxy logs it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use redshard_config::NodeAddr;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::backend::node_monitor::{NodeLine, NodeMonitor};
use crate::backend::watch::{Event, State, Watchers};
use crate::backend::{Dest, Node};
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
    relay: Option<Watchers<NodeLine>>,
    /// The markers sent after scripts whose replies wait for their lines to be shown, by
    /// number: the master each was sent to, and the waiting reply's signal (dropped, which
    /// also releases it, when that master's connection is not ready any more).
    marks: HashMap<u64, (NodeAddr, oneshot::Sender<()>)>,
    /// The next marker's number.
    next_mark: u64,
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

    /// Counts the monitors; with none left, closes the masters' connections (and releases
    /// the replies that waited for their lines).
    fn closed_if_none(&self, inner: &mut Inner) {
        self.count.store(inner.list.len(), Ordering::Relaxed);
        if inner.list.is_empty() && inner.relay.take().is_some() {
            inner.marks.clear();
            debug!("MONITOR: nobody monitors, the masters' MONITOR connections closed");
        }
    }

    /// A script is about to be sent to `master` while someone monitors: when that master's
    /// connection is ready, a marker number for the lane to send right after the script
    /// ([`marker_request`](crate::backend::node_monitor::marker_request)), and what completes
    /// once the relay has read the marker's line (every line of the script was read before
    /// it) or will not read it (its connection failed, nobody monitors any more): the
    /// script's reply waits for it ([`held_until_shown`]). `None` when there is nothing to
    /// wait for.
    pub fn mark_after_script(&self, master: &NodeAddr) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut inner = self.lock();
        if !inner.relay.as_ref()?.is_ready(master) {
            return None;
        }
        let n = inner.next_mark;
        inner.next_mark += 1;
        let (tx, rx) = oneshot::channel();
        inner.marks.insert(n, (master.clone(), tx));
        Some((n, rx))
    }

    /// Forgets marker `n`: the reply that waited for it has gone (its line came, or will
    /// not, or it waited its limit), so an entry is never kept for a line that never comes.
    pub fn forget_mark(&self, n: u64) {
        self.lock().marks.remove(&n);
    }

    /// Releases the replies waiting for a master whose connection is not ready any more.
    fn release_marks(inner: &mut Inner) {
        let Inner { relay, marks, .. } = inner;
        match relay {
            Some(relay) => marks.retain(|_, (node, _)| relay.is_ready(node)),
            None => marks.clear(),
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
        match what {
            NodeMonitor::Message(NodeLine::Script(line)) => {
                // A connection being aborted may still have sent one: it was a master's line.
                self.push(&line, limit);
                return;
            }
            NodeMonitor::Message(NodeLine::Marker(n)) => {
                // Every line of the script before it is shown: its reply may go.
                if let Some((_, seen)) = self.lock().marks.remove(&n) {
                    let _ = seen.send(());
                }
                return;
            }
            NodeMonitor::Ready | NodeMonitor::Lost(_) => {}
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
        Self::release_marks(&mut inner);
    }

    /// The topology changed: follow its masters.
    fn topology_changed(&self, router: &Router) {
        let mut inner = self.lock();
        if let Some(relay) = inner.relay.as_mut() {
            follow_masters(relay, router);
            relay.settle(|_| {});
            Self::release_marks(&mut inner);
        }
    }
}

/// Where a script's reply goes while someone monitors: to `dest` once `seen` completes (the
/// relay read the marker sent after the script, see [`Monitors::mark_after_script`]), or at
/// once if the marker itself failed (`echo`, its reply: an error, or none, when it was
/// refused or its connection failed; no line of it will come), and after `limit` at the most
/// (`[backend] response_timeout_ms`: the marker's line is part of the node's answer). Then
/// `done` (which forgets the marker). For a request of several replies (`group`: a
/// transaction), `dest` gets the last one, as a lane hands a client's entry.
pub(crate) fn held_until_shown(
    dest: Dest,
    group: bool,
    seen: oneshot::Receiver<()>,
    echo: oneshot::Receiver<Bytes>,
    limit: Duration,
    done: impl FnOnce() + Send + 'static,
) -> Dest {
    Dest::on_reply(move |reply| async move {
        let reply = if group { last_reply(reply) } else { reply };
        let shown = async {
            let mut seen = seen;
            tokio::select! {
                _ = &mut seen => return,
                echoed = echo => {
                    if !echoed.is_ok_and(|r| r.first() != Some(&b'-')) {
                        return;
                    }
                }
            }
            let _ = seen.await;
        };
        let _ = tokio::time::timeout(limit, shown).await;
        dest.deliver(reply);
        done();
    })
}

/// The last of the replies one after the other in `whole` (the lane hands a waiter inside
/// the proxy every reply of a group); all of it if it cannot be framed.
fn last_reply(whole: Bytes) -> Bytes {
    // Depth only decides what counts as too deep, which the lane has already replaced.
    let mut scanner = redshard_protocol::resp::ReplyScanner::new(usize::MAX);
    let (mut at, mut last) = (0, 0);
    while at < whole.len() {
        match scanner.scan(&whole[at..]) {
            Ok(Some(len)) => {
                last = at;
                at += len;
            }
            _ => return whole,
        }
    }
    whole.slice(last..)
}

/// Opens a MONITOR connection to each master of the current table that has none, and
/// closes those of nodes that are no longer masters.
fn follow_masters(relay: &mut Watchers<NodeLine>, router: &Router) {
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
fn dispatch<H: MonitorHub>(hub: &Weak<H>, event: Event<NodeLine>) -> bool {
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

    /// A held reply, the signals that release it, where it arrives, and whether its marker
    /// was forgotten.
    struct Held {
        seen: oneshot::Sender<()>,
        echo: oneshot::Sender<Bytes>,
        reply: oneshot::Sender<Bytes>,
        got: oneshot::Receiver<Bytes>,
        forgotten: Arc<std::sync::atomic::AtomicBool>,
    }

    /// The reply, once delivered (and its marker forgotten with it).
    fn delivered(
        got: &mut oneshot::Receiver<Bytes>,
        forgotten: &std::sync::atomic::AtomicBool,
    ) -> Option<Bytes> {
        let reply = got.try_recv().ok();
        assert_eq!(reply.is_some(), forgotten.load(Ordering::SeqCst));
        reply
    }

    fn held(limit: Duration) -> Held {
        let (seen, seen_rx) = oneshot::channel();
        let (echo, echo_rx) = oneshot::channel();
        let (out, got) = oneshot::channel();
        let forgotten = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&forgotten);
        let done = move || flag.store(true, Ordering::SeqCst);
        let Dest::Signal(reply) =
            held_until_shown(Dest::Signal(out), false, seen_rx, echo_rx, limit, done)
        else {
            panic!("a signal");
        };
        Held {
            seen,
            echo,
            reply,
            got,
            forgotten,
        }
    }

    /// Lets the holding task run.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn a_transaction_s_reply_is_the_last_of_its_group() {
        let group = Bytes::from_static(b"+OK\r\n+QUEUED\r\n*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(
            last_reply(group),
            Bytes::from_static(b"*2\r\n$1\r\na\r\n:1\r\n")
        );
        let one = Bytes::from_static(b"-ERR x\r\n");
        assert_eq!(last_reply(one.clone()), one);
        let cut = Bytes::from_static(b"+OK\r\n*2\r\n$1\r\n");
        assert_eq!(last_reply(cut.clone()), cut);
    }

    #[test]
    fn a_forgotten_marker_leaves_nothing_behind() {
        let monitors = Monitors::default();
        let (tx, _rx) = oneshot::channel();
        let node: NodeAddr = "127.0.0.1:7000".parse().unwrap();
        monitors.lock().marks.insert(7, (node, tx));
        monitors.forget_mark(8);
        assert_eq!(monitors.lock().marks.len(), 1);
        monitors.forget_mark(7);
        assert!(monitors.lock().marks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_script_s_reply_waits_for_its_marker_s_line() {
        let mut h = held(Duration::from_secs(5));
        h.reply.send(Bytes::from_static(b"+OK\r\n")).unwrap();
        h.echo.send(Bytes::from_static(b"$2\r\nmk\r\n")).unwrap();
        settle().await;
        assert_eq!(
            delivered(&mut h.got, &h.forgotten),
            None,
            "released before the line was read"
        );
        h.seen.send(()).unwrap();
        settle().await;
        assert_eq!(
            delivered(&mut h.got, &h.forgotten).unwrap(),
            Bytes::from_static(b"+OK\r\n")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_marker_that_failed_or_a_lost_relay_releases_the_reply_at_once() {
        // The marker was refused: its line will never come.
        let mut h = held(Duration::from_secs(5));
        h.reply.send(Bytes::from_static(b":1\r\n")).unwrap();
        h.echo.send(Bytes::from_static(b"-ERR no\r\n")).unwrap();
        settle().await;
        assert_eq!(
            delivered(&mut h.got, &h.forgotten).unwrap(),
            Bytes::from_static(b":1\r\n")
        );
        // Its connection failed without a reply.
        let mut h = held(Duration::from_secs(5));
        h.reply.send(Bytes::from_static(b":2\r\n")).unwrap();
        drop(h.echo);
        settle().await;
        assert_eq!(
            delivered(&mut h.got, &h.forgotten).unwrap(),
            Bytes::from_static(b":2\r\n")
        );
        // The relay's connection is not ready any more (or nobody monitors): `seen` dropped.
        let mut h = held(Duration::from_secs(5));
        h.reply.send(Bytes::from_static(b":3\r\n")).unwrap();
        h.echo.send(Bytes::from_static(b"$2\r\nmk\r\n")).unwrap();
        drop(h.seen);
        settle().await;
        assert_eq!(
            delivered(&mut h.got, &h.forgotten).unwrap(),
            Bytes::from_static(b":3\r\n")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_marker_never_read_holds_the_reply_for_the_limit_at_most() {
        let mut h = held(Duration::from_secs(5));
        h.reply.send(Bytes::from_static(b"+OK\r\n")).unwrap();
        h.echo.send(Bytes::from_static(b"$2\r\nmk\r\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(4900)).await;
        settle().await;
        assert_eq!(
            delivered(&mut h.got, &h.forgotten),
            None,
            "released before the limit"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        settle().await;
        assert_eq!(
            delivered(&mut h.got, &h.forgotten).unwrap(),
            Bytes::from_static(b"+OK\r\n")
        );
        drop(h.seen);
    }
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
