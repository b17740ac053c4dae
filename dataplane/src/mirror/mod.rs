//! Mirroring: the proxy is the replication channel between a shard's master and its replicas.
//!
//! A write goes to the master on the lane of its slot. When the master's reply arrives, that
//! lane (and only it, so in the order the master executed the lane's requests) hands the
//! write's [`effect`] to lane number *i* of every in-sync replica of the shard. Each replica
//! must answer exactly what [`effect::replica_request`] expects; anything else (an error, a
//! timeout, a different reply, a backlog past `[mirror] max_lag_writes`) makes the replica
//! **stale**: it gets no more writes, is never promoted or read from, and the controller
//! records the new state in the topology and resynchronises it (see `redshard_control`).
//!
//! In `sync` mode the client's reply is released only when the master and every in-sync
//! replica applied the write. When a replica fails a write, the reply is held until the
//! replica's stale state is persisted, so a proxy that crashes right after cannot restart
//! believing that replica holds every acknowledged write; when the controller cannot persist
//! it ([`AckVerdict::Refuse`]), those replies become `-NOREPLICAS` instead (the write ran on
//! the master; whether it survives is unknown). In `async` mode the reply is
//! released as soon as the master answered; a replica's outstanding mirrored writes are
//! bounded by `max_lag_writes`.
//!
//! A master connection that fails with mirrored writes in flight leaves their outcome on the
//! master unknown; the controller is told ([`ControlEvent::MasterWriteLost`]) so it either
//! fails the master over or, if it stays up, resynchronises the replicas.
//!
//! Under `[replication] mode = "redis"` the mirror is inert: Redis's own replication carries
//! the writes, every [`ShardMirror`] is empty (no link, no job, no effect), and the lanes wait
//! for the replicas with `WAIT` instead (see [`crate::backend::lane`]).
//!
//! Blocking commands are the exception to "when the reply arrives": they are served on the
//! client's private connection, right after the write that let them go, whose reply comes
//! back on the slot's shared lane in either order with theirs. Their effect waits for a
//! `PING` on that lane ([`Job::following`]), so the replicas get the write first.

pub mod effect;
pub mod scripts;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use redshard_config::{AckMode, MirrorConfig, NodeAddr, ReplicationMode, ShardId};
use smallvec::SmallVec;
use tokio::sync::mpsc;
use tracing::warn;

use crate::backend::acl::BackendUser;
use crate::backend::{Dest, LaneHandle, LaneRequest, Node, NodePool};
use crate::events::{AckVerdict, ControlEvent};
use effect::Effect;
use redshard_metrics as metrics;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::resp::Protocol;

/// The mirror stream to one replica: shared by every routing table in which the replica is in
/// sync, replaced by a fresh one when a resync makes it in sync again.
#[derive(Debug)]
pub struct ReplicaLink {
    /// The replica.
    addr: NodeAddr,
    /// Its shard.
    shard: ShardId,
    /// Its shard's name, for logs (operators know shards by name, not by index).
    shard_name: Arc<str>,
    /// Its lanes.
    node: Arc<Node>,
    /// Set by the first failed write; from then on nothing more is sent.
    failed: AtomicBool,
    /// Client replies held until the stale state is persisted (see the module docs).
    held: Mutex<Held>,
    /// Mirrored writes sent and not yet answered.
    backlog: AtomicUsize,
    /// Mirrored writes the replica applied as expected, for INFO and metrics.
    applied: AtomicU64,
    /// Where failures are reported.
    events: mpsc::UnboundedSender<ControlEvent>,
}

/// Replies waiting for a failed replica's stale state to be persisted.
#[derive(Debug, Default)]
struct Held {
    /// The controller's verdict once it dealt with the stale state: `Release` when it is
    /// persisted, `Refuse` when it could not be (the replies are then refused).
    recorded: Option<AckVerdict>,
    /// Releases to run once it is.
    waiting: Vec<Release>,
}

impl ReplicaLink {
    /// The replica's address.
    #[must_use]
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Its lanes (replica reads use them too).
    #[must_use]
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Whether writes still go to it.
    #[must_use]
    pub fn is_active(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }

    /// Mirrored writes sent and not yet answered.
    #[must_use]
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Mirrored writes applied as expected.
    #[must_use]
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Stops mirroring to the replica; the first failure is logged and reported.
    pub fn fail(&self, reason: String) {
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        warn!(shard = %self.shard_name, replica = %self.addr, %reason, "replica is stale: it stops receiving writes until resynchronised");
        let _ = self.events.send(ControlEvent::ReplicaFailed {
            shard: self.shard,
            addr: self.addr.clone(),
            reason,
        });
    }

    /// Runs `release` once the stale state is recorded (at once if it already is), or
    /// refuses it if it could not be.
    fn release_after_failure(&self, release: Release) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.recorded {
            Some(verdict) => {
                drop(held);
                release.decided(verdict);
            }
            None => held.waiting.push(release),
        }
    }

    /// Called by the controller once it dealt with the replica's stale state: `Release` when
    /// it is persisted releases the replies held for it, `Refuse` (it could not be) answers
    /// their writes `-NOREPLICAS`.
    pub fn stale_recorded(&self, verdict: AckVerdict) {
        let waiting = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.recorded = Some(verdict);
            std::mem::take(&mut held.waiting)
        };
        for release in waiting {
            release.decided(verdict);
        }
    }
}

/// A client reply that waits for replicas.
#[derive(Debug)]
enum Release {
    /// Nothing waits (async mode).
    Nothing,
    /// The only replica's answer releases it.
    One(Dest, Bytes),
    /// The last of several replicas' answers releases it.
    Join(Arc<Join>),
}

/// A reply waiting for several replicas.
#[derive(Debug)]
struct Join {
    /// Answers still missing.
    remaining: AtomicUsize,
    /// Set when one replica's part was refused: the last answer then refuses the reply.
    refused: AtomicBool,
    /// The reply and where it goes, taken by the last answer.
    reply: Mutex<Option<(Dest, Bytes)>>,
}

impl Release {
    /// This replica's part is done: the reply goes once every part is.
    fn done(self) {
        self.decided(AckVerdict::Release);
    }

    /// This replica's part is decided: with `Refuse` (a replica that lacks the write could
    /// not be recorded stale), the reply becomes `-NOREPLICAS` once every part is decided.
    fn decided(self, verdict: AckVerdict) {
        let refuse = |dest: Dest| {
            metrics::write_acks_refused(1);
            dest.fail(ClientError::NoReplicas.to_reply());
        };
        match self {
            Release::Nothing => {}
            Release::One(dest, reply) => match verdict {
                AckVerdict::Release => dest.deliver(reply),
                AckVerdict::Refuse => refuse(dest),
            },
            Release::Join(join) => {
                if verdict == AckVerdict::Refuse {
                    join.refused.store(true, Ordering::Release);
                }
                if join.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let taken = join
                        .reply
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take();
                    if let Some((dest, reply)) = taken {
                        if join.refused.load(Ordering::Acquire) {
                            refuse(dest);
                        } else {
                            dest.deliver(reply);
                        }
                    }
                }
            }
        }
    }
}

/// A replica's pending answer to one mirrored write.
#[derive(Debug)]
pub struct Ack {
    /// The replica.
    link: Arc<ReplicaLink>,
    /// The exact reply (or replies, concatenated) it must give.
    expect: Bytes,
    /// What its answer releases.
    release: Release,
}

impl Ack {
    /// The replica answered.
    pub fn answered(self, reply: Bytes) {
        self.link.backlog.fetch_sub(1, Ordering::Relaxed);
        if reply == self.expect {
            self.link.applied.fetch_add(1, Ordering::Relaxed);
            self.release.done();
            return;
        }
        self.link.fail(format!(
            "answered {} where the master's effect expects {}",
            excerpt(&reply),
            excerpt(&self.expect)
        ));
        self.link.release_after_failure(self.release);
    }

    /// The replica's lane failed the write (connection lost, timeout, lane closed).
    pub fn failed(self, error: Bytes) {
        self.link.backlog.fetch_sub(1, Ordering::Relaxed);
        self.link.fail(format!("write failed: {}", excerpt(&error)));
        self.link.release_after_failure(self.release);
    }
}

/// A reply shortened for a log line.
fn excerpt(bytes: &[u8]) -> String {
    let mut text = String::new();
    for &b in bytes.iter().take(80) {
        if b.is_ascii_graphic() || b == b' ' {
            text.push(char::from(b));
        } else {
            let _ = write!(text, "\\x{b:02x}");
        }
    }
    if bytes.len() > 80 {
        text.push_str("...");
    }
    text
}

/// Where one shard's writes are mirrored, for one routing-table epoch.
#[derive(Debug)]
pub struct ShardMirror {
    /// The shard.
    shard: ShardId,
    /// Its master, for [`ControlEvent::MasterWriteLost`].
    master: NodeAddr,
    /// Its in-sync replicas at this epoch (a link may have failed since).
    replicas: Vec<Arc<ReplicaLink>>,
    /// `[mirror]` settings.
    settings: Arc<MirrorConfig>,
    /// `[replication] ack`: whether a reply waits for the replicas.
    ack: AckMode,
    /// Where lost master writes are reported.
    events: mpsc::UnboundedSender<ControlEvent>,
    /// Script bodies, so replicas run `EVALSHA` as `EVAL`.
    scripts: Arc<scripts::ScriptCache>,
    /// Under Redis replication: no replica link and nothing to mirror, ever (not even a
    /// blocking command's effect, which is otherwise prepared while the shard has none).
    inert: bool,
}

impl ShardMirror {
    /// Whether Redis's own replication carries the writes (`[replication] mode = "redis"`):
    /// the proxy mirrors nothing.
    #[must_use]
    pub(crate) fn is_inert(&self) -> bool {
        self.inert
    }

    /// Whether the shard has no in-sync replica (then writes are not mirrored at all).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The in-sync replicas' links.
    #[must_use]
    pub fn replicas(&self) -> &[Arc<ReplicaLink>] {
        &self.replicas
    }

    /// In-sync replicas that still receive writes.
    #[must_use]
    pub fn active(&self) -> usize {
        self.replicas.iter().filter(|l| l.is_active()).count()
    }
}

/// Finds a shard's replicas as they are now (see [`Job::following`]); `None` when the shard
/// or its master changed since.
pub(crate) type Follow = Box<dyn Fn() -> Option<Arc<ShardMirror>> + Send + Sync>;

/// What a blocking command's job needs besides a plain write's (see [`Job::following`]).
struct Blocking {
    /// The master may answer epochs after the command was sent: where its effect goes is
    /// looked up when it answers.
    follow: Follow,
    /// The master's shared lane of the command's slot. The master served the command right
    /// after the write that let it go, which went through that lane; the effect waits until
    /// the lane has answered (and so mirrored) everything it sent before.
    after: LaneHandle,
}

/// The mirroring of one write, carried by the master's lane request.
pub struct Job {
    /// Where it goes (for a [`following`](Job::following) job: where it went when sent).
    shard: Arc<ShardMirror>,
    /// For a blocking command, how it is ordered and where it goes (boxed: the other
    /// mirrored writes, all of them on the hot path, carry only the pointer).
    blocking: Option<Box<Blocking>>,
    /// How the replica request is derived.
    effect: Effect,
    /// The request as sent to the master.
    request: Bytes,
    /// The protocol of the master's reply (and of the replica request).
    protocol: Protocol,
    /// The lane number, also used on the replicas.
    lane: usize,
    /// Wait for the replicas even in async mode (barriers).
    wait: bool,
    /// The backend user the replicas run it as: a restricted client's script runs there as
    /// on the master, so a call its user may not make fails the same way on both.
    user: BackendUser,
    /// The database it ran in on the master (the client's `SELECT`), and runs in on the
    /// replicas.
    db: u16,
}

impl Job {
    /// The mirroring of `request` (sent on lane `lane` in `protocol`) to `shard`'s replicas.
    #[must_use]
    pub fn new(
        shard: Arc<ShardMirror>,
        effect: Effect,
        request: Bytes,
        protocol: Protocol,
        lane: usize,
    ) -> Box<Self> {
        Box::new(Self {
            shard,
            blocking: None,
            effect,
            request,
            protocol,
            lane,
            wait: false,
            user: BackendUser::Client,
            db: 0,
        })
    }

    /// Makes the replicas run the request as `user` (a restricted client's script).
    #[must_use]
    pub(crate) fn as_user(mut self: Box<Self>, user: BackendUser) -> Box<Self> {
        self.user = user;
        self
    }

    /// Makes the replicas run the request in database `db` (the client's `SELECT`).
    #[must_use]
    pub(crate) fn in_db(mut self: Box<Self>, db: u16) -> Box<Self> {
        self.db = db;
        self
    }

    /// Makes a blocking command's job mirror in the master's order and to the replicas in
    /// sync when the master serves the command.
    ///
    /// The master serves a blocked pop right after the write that let it go (an `RPUSH` on the
    /// slot's shared lane, `after`), but the pop's reply comes back on the client's private
    /// connection, so the proxy may see it first; mirrored then, the replica's pop would find
    /// nothing and the replica would go stale. So the effect waits until `after` has answered
    /// a `PING` sent when the pop's reply arrived: by then the write has been mirrored.
    ///
    /// And a blocked command may wait through a resync's cut-over: the replica that joined
    /// then has every write the master made before (Redis's full sync), but not the pop, made
    /// after. `follow` finds the replicas in sync when the master answers, so that replica
    /// gets the pop too instead of silently keeping the element its master handed out.
    #[must_use]
    pub fn following(mut self: Box<Self>, follow: Follow, after: LaneHandle) -> Box<Self> {
        self.blocking = Some(Box::new(Blocking { follow, after }));
        self
    }

    /// Points the job at the shard's replicas as `follow` finds them now. False when the
    /// shard's master is no longer the one the command was sent to (a failover).
    fn follow_now(&mut self, follow: &Follow) -> bool {
        let Some(now) = follow() else {
            return true;
        };
        if now.shard != self.shard.shard || now.master != self.shard.master {
            return false;
        }
        self.shard = now;
        true
    }

    /// Makes the client's reply wait for the replicas whatever the mode.
    #[must_use]
    pub fn waiting(mut self: Box<Self>) -> Box<Self> {
        self.wait = true;
        self
    }

    /// The master answered `reply`: mirror the effect, then (or meanwhile, in async mode)
    /// hand `reply` to `dest`.
    pub(crate) fn master_answered(mut self, reply: Bytes, dest: Dest) {
        if let Some(blocking) = self.blocking.take() {
            // A blocking command served: the replicas in sync now get it (one cut over later
            // has it through its full sync).
            let Blocking {
                follow,
                after: lane,
            } = *blocking;
            if !self.follow_now(&follow) {
                // Served by a master that has been replaced: like a write on a failed master.
                self.master_lost();
                dest.deliver(reply);
                return;
            }
            let effect =
                effect::replica_request(&self.effect, &self.request, &reply, self.protocol);
            if matches!(effect, Ok(None)) || self.shard.active() == 0 {
                // A timeout or nothing popped, or no replica: no effect to order.
                dest.deliver(reply);
                return;
            }
            let protocol = self.protocol;
            let db = self.db;
            lane.submit(LaneRequest {
                bytes: Bytes::from_static(PING),
                dest: Dest::Sequenced(Box::new(Sequenced {
                    job: self,
                    effect,
                    reply,
                    dest,
                })),
                protocol,
                replies: 1,
                mirror: None,
                via: None,
                acks: 0,
                user: BackendUser::Client,
                db,
            });
            return;
        }
        self.mirror(reply, dest);
    }

    /// Mirrors the effect of the master's `reply` to the replicas of `self.shard`, then (or
    /// meanwhile, in async mode) hands `reply` to `dest`.
    fn mirror(mut self, reply: Bytes, dest: Dest) {
        if matches!(self.effect, Effect::Same) {
            if let Some(eval) = self.shard.scripts.observe(&self.request, &reply) {
                self.request = eval;
            }
        }
        let effect = effect::replica_request(&self.effect, &self.request, &reply, self.protocol);
        self.send(effect, reply, dest);
    }

    /// Sends `effect` (the replica request derived from the master's `reply`) to the replicas
    /// of `self.shard`, then (or meanwhile, in async mode) hands `reply` to `dest`.
    fn send(
        self,
        effect: Result<Option<effect::Mirrored>, effect::MirrorError>,
        reply: Bytes,
        dest: Dest,
    ) {
        // The replicas mirrored to now, asked only where a write is mirrored.
        let active = || -> SmallVec<[&Arc<ReplicaLink>; 4]> {
            self.shard
                .replicas
                .iter()
                .filter(|l| l.is_active())
                .collect()
        };
        let mirrored = match effect {
            Ok(Some(mirrored)) => mirrored,
            Ok(None) => {
                dest.deliver(reply);
                return;
            }
            Err(e) => {
                // The master did something the proxy cannot replay: no replica can be
                // trusted to hold it. The reply waits until each is recorded stale.
                let active = active();
                if active.is_empty() {
                    dest.deliver(reply);
                    return;
                }
                let join = Arc::new(Join {
                    remaining: AtomicUsize::new(active.len()),
                    refused: AtomicBool::new(false),
                    reply: Mutex::new(Some((dest, reply))),
                });
                for link in active {
                    link.fail(format!("the master's effect cannot be mirrored: {e}"));
                    link.release_after_failure(Release::Join(Arc::clone(&join)));
                }
                return;
            }
        };
        let active = active();
        if active.is_empty() {
            dest.deliver(reply);
            return;
        }
        let settings = &self.shard.settings;
        let sync = self.wait || self.shard.ack == AckMode::Sync;
        let replies = if matches!(self.effect, Effect::Same) && !self.request.starts_with(MULTI) {
            1
        } else {
            count_replies(&mirrored.expect)
        };
        let mut releases: SmallVec<[Release; 4]> = if !sync {
            dest.deliver(reply);
            active.iter().map(|_| Release::Nothing).collect()
        } else if active.len() == 1 {
            smallvec::smallvec![Release::One(dest, reply)]
        } else {
            let join = Arc::new(Join {
                remaining: AtomicUsize::new(active.len()),
                refused: AtomicBool::new(false),
                reply: Mutex::new(Some((dest, reply))),
            });
            active
                .iter()
                .map(|_| Release::Join(Arc::clone(&join)))
                .collect()
        };
        for (link, release) in active.into_iter().zip(releases.drain(..)) {
            let backlog = link.backlog.fetch_add(1, Ordering::Relaxed);
            if backlog >= settings.max_lag_writes {
                link.backlog.fetch_sub(1, Ordering::Relaxed);
                link.fail(format!(
                    "fell behind by {backlog} writes ([mirror] max_lag_writes)"
                ));
                link.release_after_failure(release);
                continue;
            }
            link.node.lane_at(self.lane).submit(LaneRequest {
                bytes: mirrored.request.clone(),
                dest: Dest::Mirror(Box::new(Ack {
                    link: Arc::clone(link),
                    expect: mirrored.expect.clone(),
                    release,
                })),
                protocol: self.protocol,
                replies,
                mirror: None,
                via: None,
                user: self.user,
                acks: 0,
                db: self.db,
            });
        }
    }

    /// The master connection failed after the write was sent: its outcome is unknown.
    pub(crate) fn master_lost(mut self) {
        // The replicas to tell about: those in sync now (for a blocking command; whichever
        // master is the shard's now, the controller decides).
        if let Some(blocking) = self.blocking.take() {
            let _ = self.follow_now(&blocking.follow);
        }
        if matches!(self.effect, Effect::Skip | Effect::Refused) || self.shard.active() == 0 {
            return;
        }
        let _ = self.shard.events.send(ControlEvent::MasterWriteLost {
            shard: self.shard.shard,
            master: self.shard.master.clone(),
        });
    }

    /// The write was never sent to the master: nothing to mirror.
    pub(crate) fn never_sent(self) {}
}

impl crate::backend::AfterMaster for Job {
    fn master_answered(self: Box<Self>, reply: Bytes, dest: Dest) {
        Job::master_answered(*self, reply, dest);
    }

    fn master_lost(self: Box<Self>) {
        Job::master_lost(*self);
    }

    fn never_sent(self: Box<Self>) {
        Job::never_sent(*self);
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("shard", &self.shard)
            .field("blocking", &self.blocking.as_ref().map(|b| &b.after))
            .field("effect", &self.effect)
            .field("request", &self.request)
            .field("protocol", &self.protocol)
            .field("lane", &self.lane)
            .field("wait", &self.wait)
            .finish()
    }
}

/// A blocking command the master answered, waiting for the shared lane of its slot (see
/// [`Job::following`]).
#[derive(Debug)]
pub struct Sequenced {
    /// Its mirroring, now without the lane to wait for.
    job: Job,
    /// The replica request derived from the reply when it arrived.
    effect: Result<Option<effect::Mirrored>, effect::MirrorError>,
    /// The master's reply.
    reply: Bytes,
    /// Where the reply goes.
    dest: Dest,
}

impl Sequenced {
    /// The lane answered its `PING`: the write that let the command go has been mirrored;
    /// mirror the command's effect now.
    pub fn resume(self) {
        self.job.send(self.effect, self.reply, self.dest);
    }

    /// The lane failed before answering: the write that let the command go may be lost with
    /// it, so the command's effect cannot be ordered after it. The master did serve the
    /// command: the client gets its reply, unmirrored, and the controller hears of a lost
    /// write as for any request in flight on a failed master connection (if the master is
    /// then replaced, a popped element may be served again: at least once, never lost).
    pub fn lost(self) {
        self.job.master_lost();
        self.dest.deliver(self.reply);
    }
}

impl crate::backend::ReplyHook for Sequenced {
    fn answered(self: Box<Self>, _reply: Bytes) {
        self.resume();
    }

    fn failed(self: Box<Self>, _error: Bytes) {
        self.lost();
    }
}

impl crate::backend::ReplyHook for Ack {
    fn answered(self: Box<Self>, reply: Bytes) {
        Ack::answered(*self, reply);
    }

    fn failed(self: Box<Self>, error: Bytes) {
        Ack::failed(*self, error);
    }
}

/// `PING`, which lanes send to learn that everything before it was answered.
pub(crate) const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// The start of a transaction sent as one request.
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";

/// How many complete replies `bytes` holds (mirrored transactions expect several).
fn count_replies(bytes: &[u8]) -> u32 {
    let mut scanner = redshard_protocol::resp::ReplyScanner::default();
    let mut at = 0;
    let mut count = 0;
    while at < bytes.len() {
        match scanner.scan(&bytes[at..]) {
            Ok(Some(len)) => {
                at += len;
                count += 1;
            }
            _ => break,
        }
    }
    count.max(1)
}

/// Every replica link, by address, and what new routing tables need to mirror.
#[derive(Debug)]
pub struct Mirror {
    /// `[mirror]` settings.
    settings: Arc<MirrorConfig>,
    /// `[replication] ack`: whether replies wait for the replicas.
    ack: AckMode,
    /// Links by replica address; a link survives table changes until the replica leaves or
    /// is resynchronised.
    links: Mutex<HashMap<NodeAddr, Arc<ReplicaLink>>>,
    /// Where failures are reported (the controller).
    events: mpsc::UnboundedSender<ControlEvent>,
    /// Script bodies seen (see [`scripts`]).
    scripts: Arc<scripts::ScriptCache>,
    /// `[replication] mode`: under `redis` the mirror is inert.
    mode: ReplicationMode,
}

impl Mirror {
    /// Mirroring with `settings`, acknowledging writes per `ack`, reporting to `events`; inert
    /// when `mode` is Redis's own replication.
    #[must_use]
    pub fn new(
        settings: MirrorConfig,
        ack: AckMode,
        mode: ReplicationMode,
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Self {
        Self {
            ack,
            mode,
            scripts: Arc::new(scripts::ScriptCache::new(settings.max_scripts)),
            settings: Arc::new(settings),
            links: Mutex::new(HashMap::new()),
            events,
        }
    }

    /// The scripts the proxy knows, to load into a resynchronised replica.
    #[must_use]
    pub fn scripts(&self) -> &scripts::ScriptCache {
        &self.scripts
    }

    /// The `[mirror]` settings.
    #[must_use]
    pub fn settings(&self) -> &MirrorConfig {
        &self.settings
    }

    /// Whether Redis's own replication carries the writes: every shard's mirror is inert.
    #[must_use]
    pub(crate) fn is_inert(&self) -> bool {
        self.mode == ReplicationMode::Redis
    }

    /// `[replication] ack`.
    #[must_use]
    pub fn ack(&self) -> AckMode {
        self.ack
    }

    /// The mirror of `shard` (named `name`, master `master`) to the in-sync replicas
    /// `replicas` (to none when the mirror [is inert](Mirror::is_inert)).
    #[must_use]
    pub fn shard(
        &self,
        shard: ShardId,
        name: &str,
        master: &NodeAddr,
        replicas: &[&NodeAddr],
        pool: &NodePool,
    ) -> Arc<ShardMirror> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let inert = self.is_inert();
        let replicas = replicas
            .iter()
            .filter(|_| !inert)
            .map(|&addr| {
                Arc::clone(links.entry(addr.clone()).or_insert_with(|| {
                    Arc::new(ReplicaLink {
                        addr: addr.clone(),
                        shard,
                        shard_name: name.into(),
                        node: pool.node(addr),
                        failed: AtomicBool::new(false),
                        held: Mutex::new(Held::default()),
                        backlog: AtomicUsize::new(0),
                        applied: AtomicU64::new(0),
                        events: self.events.clone(),
                    })
                }))
            })
            .collect();
        Arc::new(ShardMirror {
            shard,
            master: master.clone(),
            replicas,
            settings: Arc::clone(&self.settings),
            ack: self.ack,
            events: self.events.clone(),
            scripts: Arc::clone(&self.scripts),
            inert,
        })
    }

    /// The link of `addr`, if it is (or was) an in-sync replica.
    #[must_use]
    pub fn link(&self, addr: &NodeAddr) -> Option<Arc<ReplicaLink>> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(addr)
            .cloned()
    }

    /// Forgets `addr`'s link: the next table that lists it in sync starts a fresh one (after
    /// a resync, or when it left the topology).
    pub fn forget(&self, addr: &NodeAddr) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(addr);
    }
}
