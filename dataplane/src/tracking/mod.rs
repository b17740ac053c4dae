//! Client-side caching through the proxy: CLIENT TRACKING's invalidations, for clients whose
//! keys live on many masters.
//!
//! A node can only tell the connections it serves which keys they read, and the proxy's lanes
//! are shared by every client. So the proxy does Redis's work itself, from two sources:
//!
//! - **what each client read**: its session records the keys of each read (a command with
//!   Redis's `readonly` flag, and the declared keys of scripts) of a default-mode tracking
//!   client when it *sends* it, in a table `key → clients` ([`Tracking::record`]). Recorded
//!   before the node runs the read, a change racing the read is never missed (an extra
//!   invalidation is possible, as in Redis);
//! - **what changed**: while any client tracks, the proxy keeps one connection per master in
//!   Redis's own broadcast tracking (`CLIENT TRACKING ON BCAST`, see
//!   [`crate::backend::invalidations`], kept by [`crate::backend::watch`]), which reports
//!   every key that changes on the node, whoever changed it: any client of any proxy,
//!   scripts, expiries, evictions, and flushes.
//!
//! A changed key is looked up (and removed: the next read records it again, as in Redis) and
//! its readers get `invalidate [key]`; BCAST clients get the changed keys under their
//! prefixes; a flush sends every tracking client `invalidate null`. An invalidation is
//! appended to the client's reply queue, behind the replies of requests it sent before, so a
//! read's reply never arrives after the invalidation of the value it returned.
//!
//! When a tracking connection is lost, or a master changes (failover, a new topology), changes
//! may have been missed: every tracking client gets `invalidate null` at once and again when
//! the connection is back. `CLIENT TRACKING ON` is answered once every master's connection
//! is up (or has failed once), so a read right after it is covered. See `LIFECYCLE.md`.
//!
//! Nothing of this runs while no client tracks: the connections are closed with the last
//! tracking client, and the session of a client that does not track never calls in here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use smallvec::SmallVec;
use tracing::{debug, warn};

use crate::backend::invalidations::{Change, Invalidation};
use crate::backend::watch::{Event, State, Watchers};
use crate::backend::Node;
use crate::clients::{ClientInfo, Clients, TrackingShown};
use crate::replies::ReplyTo;
use crate::router::Router;
use redshard_protocol::resp::encode;

/// How a client tracks: what [`Tracking::enable`] is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    /// CLIENT TRACKING REDIRECT: the client that gets the invalidations (`None`: itself).
    pub redirect: Option<u64>,
    /// BCAST with these prefixes (the empty prefix matches every key); `None` for the default
    /// mode, where the client is told about the keys it read.
    pub bcast: Option<Vec<Vec<u8>>>,
}

/// The tracking counts INFO shows (see [`Tracking::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackingStats {
    /// Clients with tracking on.
    pub clients: usize,
    /// Keys read by default-mode clients, remembered.
    pub keys: usize,
    /// (key, reader) pairs remembered.
    pub items: usize,
    /// Distinct BCAST prefixes.
    pub prefixes: usize,
}

/// One tracking client.
#[derive(Debug)]
struct Tracker {
    /// The client (its protocol, and its reply queue to push to).
    client: Arc<ClientInfo>,
    /// How it tracks.
    mode: Mode,
    /// Its `CLIENT TRACKING ON` was answered: from then on it may cache, so a missed change
    /// must reach it as a flush.
    acked: bool,
    /// Its redirect target was gone when an invalidation was due (TRACKINGINFO's
    /// `broken_redirect`).
    broken_redirect: bool,
    /// Its session recorded a read whose reply entry is not reserved yet: invalidations wait
    /// in `held` until [`Tracking::recorded`], so none lands before that reply (the client
    /// would then cache the value it carries, no longer tracked).
    recording: bool,
    /// Invalidations held while `recording`, with the client each goes to.
    held: Vec<(Arc<ClientInfo>, Bytes)>,
}

/// Everything the hub holds, under one lock.
#[derive(Debug, Default)]
struct Inner {
    /// Tracking clients by id.
    trackers: HashMap<u64, Tracker>,
    /// Default-mode reads: key → the clients that read it since it last changed.
    table: HashMap<Bytes, SmallVec<[u64; 2]>>,
    /// Redirect targets → how many trackers redirect to each (such a client must not park,
    /// or its invalidations would wait for its next request).
    targets: HashMap<u64, usize>,
    /// The masters' tracking connections, while anyone tracks.
    active: Option<Watchers<Change>>,
}

/// What the hub's manager task reaches while clients track: the shared state that holds the
/// hub, the routing table it follows and the clients it tells. Implemented by the state a
/// layer above (`ProxyState`), so the hub names no type of that layer; the manager holds it
/// weakly and stops when the state is gone.
pub trait Hub: Send + Sync + 'static {
    /// The live routing table, whose masters the tracking connections follow.
    fn router(&self) -> &Router;
    /// The connected clients, to which invalidations go.
    fn clients(&self) -> &Clients;
    /// The hub itself.
    fn tracking(&self) -> &Tracking;
}

/// The proxy's CLIENT TRACKING state, shared by every session (in the proxy's shared state,
/// reached through [`Hub`]).
#[derive(Debug, Default)]
pub struct Tracking {
    /// Locked briefly by sessions (enable, record) and by the manager (per report).
    inner: Mutex<Inner>,
    /// Clients tracking now (written under the lock): while 0, what every session asks
    /// (when it ends, when it might park) is answered without the lock.
    trackers: AtomicUsize,
}

/// What one invalidation says.
#[derive(Clone, Copy, Debug)]
enum Message<'a> {
    /// These keys changed.
    Keys(&'a [Bytes]),
    /// Everything may have changed.
    Flush,
}

impl Tracking {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// CLIENT TRACKING ON for `client` in `mode` (again, if it already tracks: the new mode
    /// replaces the old). `ok` gets `+OK` once every master's tracking connection is settled
    /// (at once when they are).
    pub(crate) fn enable<H: Hub>(
        &self,
        hub: &Arc<H>,
        client: &Arc<ClientInfo>,
        mode: Mode,
        ok: ReplyTo,
    ) {
        let mut inner = self.lock();
        let id = client.id;
        // Answered before (tracking again with new options): it may have cached already.
        let mut acked = false;
        if let Some(old) = inner.trackers.remove(&id) {
            unlink_target(&mut inner, old.mode.redirect);
            acked = old.acked;
        }
        if let Some(target) = mode.redirect {
            *inner.targets.entry(target).or_default() += 1;
        }
        client.fields().tracking = Some(TrackingShown {
            redirect: mode.redirect.unwrap_or(0),
            bcast: mode.bcast.is_some(),
            broken: false,
        });
        inner.trackers.insert(
            id,
            Tracker {
                client: Arc::clone(client),
                mode,
                acked,
                broken_redirect: false,
                recording: false,
                held: Vec::new(),
            },
        );
        self.trackers.store(inner.trackers.len(), Ordering::Relaxed);
        if inner.active.is_none() {
            let weak = Arc::downgrade(hub);
            inner.active = Some(Watchers::open(
                "client-side caching",
                Node::track_invalidations,
                hub.router().watch_installs(),
                move |event| dispatch(&weak, event),
            ));
            follow_masters(&mut inner, hub.router(), hub.clients());
            debug!("client-side caching: tracking connections opened");
        }
        if let Some(active) = inner.active.as_mut() {
            active.hold(id, ok);
        }
        settle(&mut inner);
    }

    /// CLIENT TRACKING OFF, RESET, or the client left: it is told nothing more. With the last
    /// tracking client, the tracking connections close and the table is emptied.
    pub(crate) fn disable(&self, id: u64) {
        if self.trackers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.trackers.remove(&id) {
            unlink_target(&mut inner, old.mode.redirect);
            old.client.fields().tracking = None;
        }
        self.trackers.store(inner.trackers.len(), Ordering::Relaxed);
        if inner.trackers.is_empty() && inner.active.is_some() {
            inner.active = None;
            inner.table = HashMap::new();
            debug!("client-side caching: nobody tracks, tracking connections closed");
        }
    }

    /// Records that client `id` (tracking in the default mode) is about to send a read of
    /// `keys`. Its invalidations are held until [`Tracking::recorded`], which the session
    /// calls once the read's reply entry is reserved. Past `max_keys` keys in the table, some
    /// are forgotten and their readers invalidated.
    pub(crate) fn record<'a>(
        &self,
        clients: &Clients,
        id: u64,
        keys: impl Iterator<Item = &'a [u8]>,
        max_keys: usize,
    ) {
        let mut inner = self.lock();
        if let Some(tracker) = inner.trackers.get_mut(&id) {
            tracker.recording = true;
        }
        for key in keys {
            match inner.table.get_mut(key) {
                Some(ids) => {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                None => {
                    inner
                        .table
                        .insert(Bytes::copy_from_slice(key), SmallVec::from_slice(&[id]));
                }
            }
        }
        if inner.table.len() > max_keys {
            // Forget a hundredth at once, so a full table does not pay a scan per read.
            let excess = inner.table.len() - max_keys;
            let count = excess.max(max_keys / 100).min(inner.table.len());
            let victims: Vec<Bytes> = inner.table.keys().take(count).cloned().collect();
            invalidate_keys(&mut inner, clients, &victims);
        }
    }

    /// Client `id`'s read recorded by [`Tracking::record`] has its reply entry: the
    /// invalidations held meanwhile go out, behind it.
    pub(crate) fn recorded(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(tracker) = inner.trackers.get_mut(&id) {
            tracker.recording = false;
            for (target, message) in tracker.held.drain(..) {
                target.push(message);
            }
        }
    }

    /// Whether client `id` is a redirect target of a tracking client.
    #[must_use]
    pub(crate) fn is_target(&self, id: u64) -> bool {
        self.trackers.load(Ordering::Relaxed) > 0 && self.lock().targets.contains_key(&id)
    }

    /// Whether client `id`'s redirect target was found gone (TRACKINGINFO).
    #[must_use]
    pub(crate) fn broken_redirect(&self, id: u64) -> bool {
        self.lock()
            .trackers
            .get(&id)
            .is_some_and(|t| t.broken_redirect)
    }

    /// What INFO shows, with Redis's names: `tracking_clients`, `tracking_total_keys`,
    /// `tracking_total_items` (key-reader pairs) and `tracking_total_prefixes`.
    #[must_use]
    pub fn stats(&self) -> TrackingStats {
        let inner = self.lock();
        TrackingStats {
            clients: inner.trackers.len(),
            keys: inner.table.len(),
            items: inner.table.values().map(SmallVec::len).sum(),
            prefixes: inner
                .trackers
                .values()
                .filter_map(|t| t.mode.bcast.as_ref())
                .flatten()
                .collect::<std::collections::HashSet<_>>()
                .len(),
        }
    }

    /// Handles one report of a master's tracking connection.
    fn report(&self, clients: &Clients, addr: &NodeAddr, what: Invalidation) {
        let mut inner = self.lock();
        let Some(was) = inner
            .active
            .as_mut()
            .and_then(|active| active.note(addr, &what))
        else {
            return; // A master of an older topology: its connection is being aborted.
        };
        match what {
            Invalidation::Message(Change::Keys(keys)) => {
                invalidate_keys(&mut inner, clients, &keys)
            }
            Invalidation::Message(Change::Flush) => flush(&mut inner, clients, false),
            Invalidation::Ready => {
                debug!(node = %addr, "client-side caching: a master reports its changes");
                // Changes while it was not ready were not reported.
                flush(&mut inner, clients, true);
                settle(&mut inner);
            }
            Invalidation::Lost(why) => {
                if was != State::Failed {
                    warn!(node = %addr, reason = %why, "client-side caching: a tracking connection to a master is lost; tracking clients are told to drop their caches");
                }
                flush(&mut inner, clients, true);
                settle(&mut inner);
            }
        }
    }

    /// The topology changed: follow its masters.
    fn topology_changed(&self, router: &Router, clients: &Clients) {
        let mut inner = self.lock();
        if inner.active.is_some() {
            follow_masters(&mut inner, router, clients);
            settle(&mut inner);
        }
    }
}

/// One redirect to `target` fewer.
fn unlink_target(inner: &mut Inner, target: Option<u64>) {
    let Some(target) = target else { return };
    if let Some(count) = inner.targets.get_mut(&target) {
        *count -= 1;
        if *count == 0 {
            inner.targets.remove(&target);
        }
    }
}

/// Opens a tracking connection to each master of the current table that has none, and
/// closes those of nodes that are no longer masters. A master that changed may have taken
/// writes no connection saw: every acknowledged tracker is told to flush.
fn follow_masters(inner: &mut Inner, router: &Router, clients: &Clients) {
    let Some(active) = inner.active.as_mut() else {
        return;
    };
    let table = router.load();
    if active.follow(table.shards().iter().map(|route| Arc::clone(&route.master))) {
        flush(inner, clients, true);
    }
}

/// Answers the held `CLIENT TRACKING ON`s once no connection is still starting.
fn settle(inner: &mut Inner) {
    let Inner {
        active, trackers, ..
    } = inner;
    if let Some(active) = active.as_mut() {
        active.settle(|id| {
            if let Some(tracker) = trackers.get_mut(&id) {
                tracker.acked = true;
            }
        });
    }
}

/// `keys` changed: their default-mode readers (who forget them: their next read records
/// them again) and the BCAST clients whose prefixes match are told.
fn invalidate_keys(inner: &mut Inner, clients: &Clients, keys: &[Bytes]) {
    let mut readers: HashMap<u64, Vec<Bytes>> = HashMap::new();
    for key in keys {
        if let Some(ids) = inner.table.remove(key) {
            for id in ids {
                readers.entry(id).or_default().push(key.clone());
            }
        }
    }
    for (id, keys) in readers {
        if let Some(tracker) = inner.trackers.get_mut(&id) {
            if tracker.mode.bcast.is_none() {
                send(clients, tracker, Message::Keys(&keys));
            }
        }
    }
    let mut matching = Vec::new();
    for tracker in inner.trackers.values_mut() {
        let Some(prefixes) = &tracker.mode.bcast else {
            continue;
        };
        matching.clear();
        matching.extend(
            keys.iter()
                .filter(|key| prefixes.iter().any(|p| key.starts_with(p)))
                .cloned(),
        );
        if !matching.is_empty() {
            send(clients, tracker, Message::Keys(&matching));
        }
    }
}

/// Every tracking client (only those whose `CLIENT TRACKING ON` was answered, when
/// `acked_only`) is told that everything may have changed; the table is emptied.
fn flush(inner: &mut Inner, clients: &Clients, acked_only: bool) {
    inner.table.clear();
    for tracker in inner.trackers.values_mut() {
        if tracker.acked || !acked_only {
            send(clients, tracker, Message::Flush);
        }
    }
}

/// Sends one invalidation to `tracker`, or to its redirect target, as Redis does: a push to
/// a RESP3 client, a `__redis__:invalidate` message to a RESP2 redirect target in pub/sub
/// mode, nothing to a RESP2 client otherwise; a gone target is reported to a RESP3 tracker
/// with `tracking-redir-broken`.
fn send(clients: &Clients, tracker: &mut Tracker, message: Message<'_>) {
    let origin_resp = tracker.client.fields().resp;
    let (target, redirected) = match tracker.mode.redirect {
        None => (Arc::clone(&tracker.client), false),
        Some(id) => {
            if let Some(target) = clients.get(id) {
                (target, true)
            } else {
                tracker.broken_redirect = true;
                if let Some(shown) = tracker.client.fields().tracking.as_mut() {
                    shown.broken = true;
                }
                if origin_resp >= 3 {
                    let mut out = BytesMut::new();
                    out.extend_from_slice(b">2\r\n$21\r\ntracking-redir-broken\r\n");
                    encode::integer(&mut out, i64::try_from(id).unwrap_or(i64::MAX));
                    let origin = Arc::clone(&tracker.client);
                    deliver(tracker, origin, out.freeze());
                }
                return;
            }
        }
    };
    let (resp, subscribed) = {
        let fields = target.fields();
        (fields.resp, fields.subscribed())
    };
    let mut out = BytesMut::new();
    if resp >= 3 {
        out.extend_from_slice(b">2\r\n$10\r\ninvalidate\r\n");
    } else if redirected && subscribed {
        out.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n");
    } else {
        return;
    }
    match message {
        // The null of the tracking client's protocol, as Redis writes it.
        Message::Flush if origin_resp >= 3 => out.extend_from_slice(b"_\r\n"),
        Message::Flush => out.extend_from_slice(encode::NULL_BULK),
        Message::Keys(keys) => {
            encode::array_header(&mut out, keys.len());
            for key in keys {
                encode::bulk(&mut out, key);
            }
        }
    }
    deliver(tracker, target, out.freeze());
}

/// Pushes `message` to `target`, or holds it while `tracker`'s session records a read.
fn deliver(tracker: &mut Tracker, target: Arc<ClientInfo>, message: Bytes) {
    if tracker.recording {
        tracker.held.push((target, message));
    } else {
        target.push(message);
    }
}

/// The manager task's work: a connection's report, or a new topology, whose masters it
/// follows. `false` once the state is gone.
fn dispatch<H: Hub>(hub: &Weak<H>, event: Event<Change>) -> bool {
    let Some(hub) = hub.upgrade() else {
        return false;
    };
    match event {
        Event::Report(addr, what) => hub.tracking().report(hub.clients(), &addr, what),
        Event::Topology => hub.tracking().topology_changed(hub.router(), hub.clients()),
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::replies::{Completed, ReplyQueue};

    /// What the hub needs, without the rest of the proxy's state.
    struct TestHub {
        router: Router,
        clients: Clients,
        tracking: Tracking,
        /// The router's topology writer, held (unused) so the router's install watch stays open.
        _writer: Box<dyn std::any::Any + Send + Sync>,
    }

    impl Hub for TestHub {
        fn router(&self) -> &Router {
            &self.router
        }
        fn clients(&self) -> &Clients {
            &self.clients
        }
        fn tracking(&self) -> &Tracking {
            &self.tracking
        }
    }

    /// A hub whose one master (port 1) never answers, and a RESP3 client of it.
    fn setup() -> (Arc<TestHub>, Arc<ClientInfo>, Arc<ReplyQueue>) {
        let (router, writer) = crate::router::tests::router();
        let state = Arc::new(TestHub {
            router,
            clients: Clients::default(),
            tracking: Tracking::default(),
            _writer: Box::new(writer),
        });
        let addr = "127.0.0.1:5".parse().unwrap();
        let client = state.clients.add(addr, addr);
        let queue = ReplyQueue::new();
        client.attach(&queue);
        client.fields().resp = 3;
        (state, client, queue)
    }

    /// The complete replies of `queue`, waiting (10 s at most) until there are `count`;
    /// null invalidations (the unreachable master's) left out.
    async fn replies(queue: &ReplyQueue, count: usize) -> Vec<Bytes> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                queue.take_ready(|completed, _, _| {
                    if let Completed::Reply(bytes) = completed {
                        if &bytes[..] != b">2\r\n$10\r\ninvalidate\r\n_\r\n" {
                            got.push(bytes);
                        }
                    }
                });
                if got.len() >= count {
                    return;
                }
                queue.notified().await;
            }
        })
        .await
        .expect("the replies came");
        got
    }

    #[tokio::test]
    async fn an_invalidation_arriving_while_a_read_is_dispatched_waits_behind_its_reply() {
        let (state, client, queue) = setup();
        state
            .tracking
            .enable(&state, &client, Mode::default(), queue.reserve());
        // The session records the read, then (another thread) the key changes, then the
        // session reserves the read's reply entry.
        let master = state.router.load().shards()[0].master.addr().clone();
        state
            .tracking
            .record(&state.clients, client.id, [&b"k"[..]].into_iter(), 10);
        state.tracking.report(
            &state.clients,
            &master,
            Invalidation::Message(Change::Keys(vec![Bytes::from_static(b"k")])),
        );
        let read = queue.reserve();
        state.tracking.recorded(client.id);
        read.deliver(Bytes::from_static(b"$1\r\nv\r\n"));
        let got = replies(&queue, 3).await;
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"+OK\r\n"),
                Bytes::from_static(b"$1\r\nv\r\n"),
                Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"),
            ],
            "the invalidation comes after the value it invalidates"
        );
    }

    #[tokio::test]
    async fn tracking_turned_off_before_the_masters_settle_still_answers_on() {
        let (state, client, queue) = setup();
        // No await in between: the master's connection is still starting when the last
        // tracking client turns tracking off, which closes the connections.
        state
            .tracking
            .enable(&state, &client, Mode::default(), queue.reserve());
        state.tracking.disable(client.id);
        let got = replies(&queue, 1).await;
        assert_eq!(got, vec![Bytes::from_static(b"+OK\r\n")]);
    }

    #[tokio::test]
    async fn a_full_table_forgets_keys_and_invalidates_their_readers() {
        let (state, client, queue) = setup();
        state
            .tracking
            .enable(&state, &client, Mode::default(), queue.reserve());
        for key in [&b"a"[..], b"b", b"c"] {
            state
                .tracking
                .record(&state.clients, client.id, [key].into_iter(), 2);
            state.tracking.recorded(client.id);
        }
        assert_eq!(state.tracking.stats().keys, 2);
        let got = replies(&queue, 2).await;
        assert_eq!(got[0], Bytes::from_static(b"+OK\r\n"));
        assert!(
            got[1].starts_with(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\n"),
            "{:?}",
            got[1]
        );
        state.tracking.disable(client.id);
        assert_eq!(state.tracking.stats(), TrackingStats::default());
    }
}
