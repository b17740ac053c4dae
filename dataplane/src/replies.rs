//! The per-client queue of replies, kept in the client's request order.
//!
//! The session reserves one entry per request when it dispatches it; backend lanes fill entries
//! in whatever order the shards answer; the session writes entries out from the front as soon as
//! the front one is complete. A request split across shards (MGET, fan-outs) reserves one entry
//! with several parts, merged by the session once every part has arrived.
//!
//! A [`ReplyTo`] handle (queue, sequence number, part) is all a lane keeps per in-flight request:
//! delivering a reply costs one uncontended lock and no allocation.
//!
//! A plaintext session that waits with nothing else to do offers its socket to the queue (see
//! [`ReplyQueue::load_offering`]): the reply to its one outstanding request is then written
//! by the lane that delivers it, under the queue's lock, instead of waking the session.
//!
//! A pipelining client's replies are held until every request in flight when the session
//! dispatched a read's requests (or last looked) is answered, then leave together: the
//! session is not woken for them, nor takes any, before (see [`ReplyQueue::hold_read`] and
//! [`ReplyQueue::load_offering`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use redshard_protocol::command::Merge;

/// One client's replies in order.
#[derive(Debug, Default)]
pub struct ReplyQueue {
    /// Entries and bookkeeping; locked briefly by the session and by lanes delivering replies.
    inner: Mutex<Inner>,
    /// Set when the front entry may have become complete; the session clears it when it looks.
    /// A flag and one waker instead of a `Notify`: the session waits on it in every turn of
    /// its loop, and registering in a `Notify` costs a lock and a list insert each time.
    ready: AtomicBool,
    /// The session's waker, woken when `ready` is set.
    waker: AtomicWaker,
    /// Set by a connection the client depends on for out-of-band messages (a subscription
    /// connection) when it fails: the session then closes the client's connection, as losing
    /// a node would, so the client reconnects and resubscribes instead of waiting forever.
    /// Also set by CLIENT KILL (see [`crate::clients::ClientInfo::kill`]).
    broken: AtomicBool,
    /// Idle-sweep ticks since the session last read from its client (see
    /// [`ReplyQueue::idle_tick`]): what tells a parkable session it has been idle long enough.
    idle_ticks: AtomicU8,
}

/// The idle-sweep tick at which a session is asked to park: it read nothing for at least one
/// whole sweep interval.
const PARK_AT_TICK: u8 = 2;

/// Reply bytes a hold keeps at most by default (`[limits] coalesce_max_bytes`; see
/// [`ReplyQueue::load_offering`]).
#[cfg(test)]
const HOLD_MAX_BYTES: usize = redshard_config::file::DEFAULT_COALESCE_MAX_BYTES;

/// What a reply in flight is expected to weigh before the client's first replies have shown
/// what its requests bring back: large enough that a client's first burst of requests for big
/// values is not a gigabyte on a node's shared connection (see [`Load::inflight_bytes`]).
const FIRST_REPLY_ESTIMATE: usize = 256 * 1024;

#[derive(Debug)]
struct Inner {
    /// Sequence number of `entries[0]`; sequence numbers only grow.
    head: u64,
    /// Reserved entries, oldest first.
    entries: VecDeque<Entry>,
    /// The requests some entries answer (for metrics and SLOWLOG), by the entry's sequence
    /// number, oldest first. A session labels the last request of each read only, and
    /// out-of-band pushes such as pub/sub messages have none: kept beside the entries, a
    /// label costs its bytes once per read, not in every entry (a pipelining client's 16
    /// entries take 640 bytes instead of 1,536).
    labels: VecDeque<(u64, Meta)>,
    /// Bytes of the replies (and gathered parts) in `entries`: received, not yet taken.
    held: usize,
    /// Entries still waiting for a reply (or for a part): requests in flight. 32 bits (four
    /// billion entries would take over 100 GB), which keeps the queue in its allocation
    /// class beside `hold_max`.
    waiting: u32,
    /// What one reply of this client is expected to weigh: the largest recent reply, decaying
    /// by a sixteenth per reply.
    estimate: usize,
    /// The session is woken when `held` passes this, whatever entry was filled: so it can
    /// enforce its hard limit even while its front entry still waits.
    wake_over: usize,
    /// The session ended: replies still arriving are dropped instead of kept.
    closed: bool,
    /// The client's socket, for replies written straight to it by whoever delivers them (see
    /// [`ReplyQueue::load_offering`]); `None` for a session over TLS, and from the moment the
    /// session ends or parks.
    direct: Option<Arc<tokio::net::TcpStream>>,
    /// SLOWLOG's threshold (`[slowlog] log_slower_than_us`) as the session's last offer read
    /// it: a reply that took as long is not written straight to the socket but left to the
    /// session, which records it.
    direct_slowlog_us: i64,
    /// The session offered the socket: set at the end of a round, in the same look as its
    /// limits; cleared the next time it looks at the queue, before it writes or dispatches
    /// anything. Only ever set while `direct` is there.
    direct_open: bool,
    /// Entries below `hold_until` still waiting for their reply: while any is, a completed
    /// front entry does not wake the session (see [`ReplyQueue::load_offering`]).
    hold_waiting: u32,
    /// The end (exclusive) of the entries the session holds replies for until all are in:
    /// the requests of one read leave in one write, as Redis writes a pipeline's replies
    /// after running what it read. Meaningful only while `hold_waiting` is not 0.
    hold_until: u64,
    /// Reply bytes the current hold keeps at most (`[limits] coalesce_max_bytes`, as the
    /// session read it when the hold began): past them the replies leave as they come
    /// again, so a pipeline of large values is not all buffered before the client gets the
    /// first (and a write per reply costs little beside their size).
    hold_max: u32,
}

/// What a session offers at the end of a round (see [`ReplyQueue::load_offering`]): a reply
/// to its one request may be written to the client by whoever delivers it (a backend lane),
/// without waking the session. That saves the second of the two turns of the session's loop a
/// request at a time costs (woken by the reply, to take it, write it, and wait again). Only for
/// the one entry in the queue, and only when it is labelled: its metrics are recorded there
/// instead, as the session would.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offer {
    /// The session's `[limits] max_pipeline`: with as many entries it does not read, and
    /// waits for replies to leave.
    pub max_pipeline: usize,
    /// `[slowlog] log_slower_than_us` as the session's round read it.
    pub slowlog_us: i64,
}

/// How [`Inner::write_direct`] went.
enum DirectWrite {
    /// All of it: the entry is gone.
    Written,
    /// Part of it: the rest is the entry's reply now, for the session to write.
    Partly,
    /// Not at all (not this entry, not now, or the socket did not take it).
    NotNow,
}

impl Inner {
    /// Whether the front entry has its whole reply.
    fn front_complete(&self) -> bool {
        match self.entries.front() {
            Some(Entry::Ready(_)) => true,
            Some(Entry::Gather(g)) => g.missing == 0,
            _ => false,
        }
    }

    /// Starts a hold of every entry now in the queue, unless one is on: until the entries
    /// still waiting among them are in, or `max` reply bytes are held (see
    /// [`ReplyQueue::load_offering`]).
    fn hold(&mut self, max: usize) {
        if self.hold_waiting == 0 && self.waiting > 0 {
            self.hold_until = self.head + self.entries.len() as u64;
            self.hold_waiting = self.waiting;
            self.hold_max = u32::try_from(max).unwrap_or(u32::MAX);
        }
    }

    /// Labels the newest entry with the request it answers (again: the new label wins).
    fn label_newest(&mut self, meta: Meta) {
        if self.entries.is_empty() {
            return;
        }
        let newest = self.head + self.entries.len() as u64 - 1;
        match self.labels.back_mut() {
            Some((seq, label)) if *seq == newest => *label = meta,
            _ => self.labels.push_back((newest, meta)),
        }
    }

    /// The front entry's label, if it has one.
    fn front_label(&self) -> Option<&Meta> {
        match self.labels.front() {
            Some((seq, meta)) if *seq == self.head => Some(meta),
            _ => None,
        }
    }

    /// Takes the front entry with its label; the next one is the front then.
    fn pop_front(&mut self) -> Option<(Entry, Option<Meta>)> {
        let entry = self.entries.pop_front()?;
        let label = match self.labels.front() {
            Some((seq, _)) if *seq == self.head => self.labels.pop_front().map(|(_, meta)| meta),
            _ => None,
        };
        self.head += 1;
        Some((entry, label))
    }

    /// Drops every entry and label, and their memory.
    fn clear(&mut self) {
        self.entries = VecDeque::new();
        self.labels = VecDeque::new();
    }

    /// Writes the reply just stored in the front entry straight to the client's socket (see
    /// [`Offer`]) if it is the only entry, a plain reply, labelled, and did not take
    /// SLOWLOG's time; records what the session would have (command metrics, output bytes).
    /// The caller counted it as held and no longer in flight, as any delivered reply.
    fn write_direct(&mut self) -> DirectWrite {
        let (Some(direct), Some(Entry::Ready(reply)), Some(meta), 1) = (
            self.direct.as_ref(),
            self.entries.front(),
            self.front_label(),
            self.entries.len(),
        ) else {
            return DirectWrite::NotNow;
        };
        let took = std::time::Instant::now().saturating_duration_since(meta.start);
        let slowlog_us = self.direct_slowlog_us;
        if slowlog_us >= 0 && took.as_micros() >= u128::from(slowlog_us.unsigned_abs()) {
            return DirectWrite::NotNow;
        }
        let written = match direct.try_write(reply) {
            Ok(n) if n > 0 => n,
            // Would block, or failed: the session writes it and finds out.
            _ => return DirectWrite::NotNow,
        };
        redshard_metrics::bytes_out(written as u64);
        redshard_metrics::command_spec(
            meta.cmd,
            took,
            redshard_protocol::resp::reply::is_error(reply),
        );
        if written < reply.len() {
            // What the socket did not take waits for the session as plain output (its
            // metrics are recorded).
            let rest = reply.slice(written..);
            self.held -= written;
            self.entries[0] = Entry::Ready(rest);
            self.labels.pop_front();
            return DirectWrite::Partly;
        }
        self.held -= reply.len();
        self.pop_front();
        DirectWrite::Written
    }
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            head: 0,
            entries: VecDeque::new(),
            labels: VecDeque::new(),
            held: 0,
            waiting: 0,
            estimate: FIRST_REPLY_ESTIMATE,
            wake_over: usize::MAX,
            closed: false,
            direct: None,
            direct_slowlog_us: -1,
            direct_open: false,
            hold_waiting: 0,
            hold_until: 0,
            hold_max: 0,
        }
    }
}

/// What a client's queue holds, for its session's limits (see [`ReplyQueue::load`]).
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Entries reserved and not yet taken (`max_pipeline`).
    pub entries: usize,
    /// Reply bytes received and not yet taken.
    pub held: usize,
    /// Requests in flight.
    pub waiting: usize,
    /// Expected size of one reply.
    pub estimate: usize,
}

impl Load {
    /// The reply bytes the requests in flight are expected to bring back.
    #[must_use]
    pub(crate) fn inflight_bytes(&self) -> usize {
        self.waiting.saturating_mul(self.estimate)
    }
}

/// Which request an entry answers: for the command metrics and SLOWLOG.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    /// The command's entry in the command table (its metrics are found by its id).
    pub cmd: &'static redshard_protocol::command::CommandSpec,
    /// When the request was dispatched.
    pub start: std::time::Instant,
    /// The request's bytes (a reference to what was forwarded), decoded only for SLOWLOG.
    pub request: Bytes,
}

#[derive(Debug)]
enum Entry {
    /// Sent to a backend; no reply yet.
    Waiting,
    /// Complete.
    Ready(Bytes),
    /// Split across several backend requests; merged when all parts are in.
    Gather(Box<Gather>),
}

#[derive(Debug)]
struct Gather {
    /// One slot per part, in part order.
    parts: Vec<Option<Bytes>>,
    /// Parts still missing.
    missing: usize,
    /// How the session turns the parts into one reply.
    plan: MergePlan,
}

/// A reply that can be written to the client, taken from the front of the queue.
#[derive(Debug)]
pub(crate) enum Completed {
    /// Bytes to write as they are.
    Reply(Bytes),
    /// All parts of a split request, in part order, to be merged by `plan`.
    Gathered {
        /// The parts' replies.
        parts: Vec<Bytes>,
        /// The merge to apply.
        plan: MergePlan,
    },
}

/// Where a lane delivers one reply.
#[derive(Debug)]
pub struct ReplyTo {
    /// The client's queue (kept alive until the reply is delivered, even if the client left).
    queue: Arc<ReplyQueue>,
    /// The entry's sequence number.
    seq: u64,
    /// The part within a gathered entry (0 for a plain entry).
    part: u32,
}

impl ReplyQueue {
    /// A new empty queue.
    #[must_use]
    pub fn new() -> Arc<Self> {
        // Room for one entry and one label from the start: a client with one request at a
        // time (most) never needs more, where a first push into an empty deque makes room for
        // four, which every idle client would then keep (4 x 40 + 4 x 64 bytes).
        let inner = Inner {
            entries: VecDeque::with_capacity(1),
            labels: VecDeque::with_capacity(1),
            ..Inner::default()
        };
        Arc::new(Self {
            inner: Mutex::new(inner),
            ..Self::default()
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug in this module; the data stays usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Entries reserved and not yet taken.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry is outstanding.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the queue holds; and from now on the session is woken as soon as the bytes held
    /// pass `wake_over` (its hard limit). One lock, as [`ReplyQueue::len`].
    pub fn load(&self, wake_over: usize) -> Load {
        self.label_and_load(None, wake_over)
    }

    /// [`ReplyQueue::load`] at the end of a round of the session, which says with `offer`
    /// whether it now waits with nothing to do that a reply leaving would change (no output,
    /// nothing held back); then, while the queue holds no reply bytes and fewer entries than
    /// its `max_pipeline`, a reply for its one entry is written straight to the socket by
    /// whoever delivers it (see [`Offer`]).
    ///
    /// With `hold` (`[limits] coalesce_replies`, and no request in flight that may wait
    /// long: `[limits] coalesce_max_bytes`), when no hold is on and two or more requests are
    /// in flight, the session is not woken for their replies, nor takes any, until all of
    /// them are in (or the bytes held pass `hold`, or `wake_over`): the replies to a pipeline, which come from
    /// several nodes at different moments, then leave in one write, as Redis writes a
    /// pipeline's replies after running what it read, instead of one write (and one wake-up
    /// of the client) per node. Requests dispatched meanwhile are not part of the hold: it
    /// ends when the ones in flight now are answered, whatever the client sends next.
    #[inline]
    pub(crate) fn load_offering(
        &self,
        wake_over: usize,
        offer: Option<Offer>,
        hold: Option<usize>,
    ) -> Load {
        let mut inner = self.lock();
        inner.wake_over = wake_over;
        if let Some(max) = hold {
            if inner.waiting >= 2 {
                inner.hold(max);
            }
        }
        let load = Load {
            entries: inner.entries.len(),
            held: inner.held,
            waiting: inner.waiting as usize,
            estimate: inner.estimate,
        };
        inner.direct_open = inner.direct.is_some()
            && load.held == 0
            && offer.is_some_and(|offer| load.entries < offer.max_pipeline);
        if let Some(offer) = offer {
            inner.direct_slowlog_us = offer.slowlog_us;
        }
        load
    }

    /// Holds the replies of every entry in the queue until the last one still waiting is in,
    /// when there are two or more and one still waits: called by the session right after it
    /// dispatched the requests of one read, so that their replies leave in one write, as
    /// Redis writes a pipeline's replies after running what it read. Until then,
    /// [`ReplyQueue::take_ready`] takes none of them and a completed one wakes nobody (as
    /// with the hold of [`ReplyQueue::load_offering`]); past `max` bytes held (`[limits]
    /// coalesce_max_bytes`), they leave as they come again.
    pub(crate) fn hold_read(&self, max: usize) {
        let mut inner = self.lock();
        if inner.waiting >= 1 && inner.entries.len() >= 2 {
            inner.hold(max);
        }
    }

    /// Lets replies be written straight to `socket` once the session offers it (see
    /// [`ReplyQueue::load_offering`]).
    pub(crate) fn attach_socket(&self, socket: Arc<tokio::net::TcpStream>) {
        let mut inner = self.lock();
        inner.direct = Some(socket);
        inner.direct_open = false;
    }

    /// No more replies straight to the socket; the queue lets go of it (the session closes
    /// or parks it).
    pub(crate) fn detach_socket(&self) {
        let mut inner = self.lock();
        inner.direct = None;
        inner.direct_open = false;
    }

    /// Closes the offer of [`ReplyQueue::load_offering`] without another look.
    pub(crate) fn withdraw_offer(&self) {
        self.lock().direct_open = false;
    }

    /// [`ReplyQueue::load`], after labelling the newest entry with `label` (as
    /// [`ReplyQueue::label_last`]) under the same lock: the session labels the request it
    /// dispatched as it looks at its budget for the next one.
    #[inline]
    pub(crate) fn label_and_load(&self, label: Option<Meta>, wake_over: usize) -> Load {
        let mut inner = self.lock();
        // The session is dispatching: replies go through it again until it offers anew.
        inner.direct_open = false;
        if let Some(meta) = label {
            inner.label_newest(meta);
        }
        inner.wake_over = wake_over;
        Load {
            entries: inner.entries.len(),
            held: inner.held,
            waiting: inner.waiting as usize,
            estimate: inner.estimate,
        }
    }

    /// The session ended: every entry is dropped, and replies that still arrive are too.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.held = 0;
        inner.waiting = 0;
        inner.hold_waiting = 0;
        inner.clear();
        inner.direct = None;
        inner.direct_open = false;
    }

    /// Labels the newest entry (the one the request just dispatched reserved).
    pub(crate) fn label_last(&self, meta: Meta) {
        self.lock().label_newest(meta);
    }

    /// Appends a complete reply (answered by the proxy itself, or a pub/sub message).
    pub(crate) fn push_ready(&self, reply: Bytes) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        inner.held += reply.len();
        inner.entries.push_back(Entry::Ready(reply));
        if inner.entries.len() == 1 || inner.held > inner.wake_over {
            drop(inner);
            self.wake();
        }
    }

    /// Appends a complete reply unless the bytes held would pass `limit` (a MONITOR line for
    /// a monitor that does not keep up); returns whether it was appended. A closed queue
    /// takes nothing and reports `true`: its session is gone and needs no closing.
    pub(crate) fn push_within(&self, reply: Bytes, limit: usize) -> bool {
        let inner = self.lock();
        if inner.closed {
            return true;
        }
        if inner.held.saturating_add(reply.len()) > limit {
            return false;
        }
        drop(inner);
        self.push_ready(reply);
        true
    }

    /// The sequence number the next entry will have.
    pub(crate) fn next_seq(&self) -> u64 {
        let inner = self.lock();
        inner.head + inner.entries.len() as u64
    }

    /// Reserves an entry for one backend reply.
    pub fn reserve(self: &Arc<Self>) -> ReplyTo {
        let mut inner = self.lock();
        let seq = inner.head + inner.entries.len() as u64;
        inner.waiting += 1;
        inner.entries.push_back(Entry::Waiting);
        ReplyTo {
            queue: Arc::clone(self),
            seq,
            part: 0,
        }
    }

    /// Reserves an entry of `parts` parts merged by `plan`; returns the sequence number to pass
    /// to [`ReplyQueue::part`].
    pub(crate) fn reserve_gather(&self, parts: usize, plan: MergePlan) -> u64 {
        let mut inner = self.lock();
        let seq = inner.head + inner.entries.len() as u64;
        inner.waiting += 1;
        inner.entries.push_back(Entry::Gather(Box::new(Gather {
            parts: vec![None; parts],
            missing: parts,
            plan,
        })));
        seq
    }

    /// The delivery handle of one part of a gathered entry.
    #[must_use]
    pub fn part(self: &Arc<Self>, seq: u64, part: u32) -> ReplyTo {
        ReplyTo {
            queue: Arc::clone(self),
            seq,
            part,
        }
    }

    /// Takes every complete entry from the front, in order, with its request's label and its
    /// sequence number.
    pub(crate) fn take_ready(&self, mut f: impl FnMut(Completed, Option<Meta>, u64)) {
        let mut inner = self.lock();
        // The session is looking (and will write what it takes): replies go through it
        // again until it offers anew.
        inner.direct_open = false;
        loop {
            if !inner.front_complete() || (inner.hold_waiting > 0 && inner.head < inner.hold_until)
            {
                return;
            }
            let seq = inner.head;
            match inner.pop_front() {
                Some((Entry::Ready(reply), meta)) => {
                    inner.held -= reply.len();
                    f(Completed::Reply(reply), meta, seq);
                }
                Some((Entry::Gather(g), meta)) => {
                    let Gather { parts, plan, .. } = *g;
                    inner.held -= parts.iter().flatten().map(Bytes::len).sum::<usize>();
                    f(
                        Completed::Gathered {
                            parts: parts.into_iter().flatten().collect(),
                            plan,
                        },
                        meta,
                        seq,
                    );
                }
                _ => unreachable!("front entry was checked to be complete"),
            }
        }
    }

    /// Marks the client's connection as no longer serviceable and wakes its session.
    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether [`ReplyQueue::mark_broken`] was called.
    #[must_use]
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Completes when the front entry may have become complete since the last call.
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| self.poll_notified(cx)).await;
    }

    /// Ready when the front entry may have become complete since the last time it was.
    fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.ready.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A wake between the check and the registration would otherwise be missed.
        if self.ready.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// The session read from its client: its idle time starts again.
    #[inline]
    pub fn touch(&self) {
        self.idle_ticks.store(0, Ordering::Relaxed);
    }

    /// One tick of the idle sweep. The tick that makes the session idle for a whole sweep
    /// interval wakes it (once: later ticks leave it alone until it reads again), and from
    /// then on [`ReplyQueue::idle_long`] is true.
    pub(crate) fn idle_tick(&self) {
        let before = self
            .idle_ticks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(1))
            })
            .unwrap_or(u8::MAX);
        if before.saturating_add(1) == PARK_AT_TICK {
            self.wake();
        }
    }

    /// Whether the front entry may have become complete since the session last waited on
    /// [`ReplyQueue::notified`] (which it does not change).
    #[inline]
    #[must_use]
    pub(crate) fn may_be_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether the session read nothing for at least one whole idle-sweep interval.
    #[inline]
    #[must_use]
    pub(crate) fn idle_long(&self) -> bool {
        self.idle_ticks.load(Ordering::Relaxed) >= PARK_AT_TICK
    }

    /// Gives back the entries' memory when there are none (a parked session's queue).
    pub(crate) fn release_if_empty(&self) {
        let mut inner = self.lock();
        if inner.entries.is_empty() {
            inner.clear();
        }
    }

    /// Drops the waker of the session that waited on the queue. A parked connection has no
    /// task waiting (the park room watches its socket), and a kept waker would keep the ended
    /// session task's memory alive (1 KB per parked client).
    pub(crate) fn forget_waker(&self) {
        drop(self.waker.take());
    }

    /// Room for one entry again after [`ReplyQueue::release_if_empty`], as a new queue has
    /// (a first push into an empty deque would make room for four).
    pub(crate) fn restore_room(&self) {
        let mut inner = self.lock();
        if inner.entries.capacity() == 0 {
            inner.entries.reserve_exact(1);
        }
        if inner.labels.capacity() == 0 {
            inner.labels.reserve_exact(1);
        }
    }

    /// Tells the session to look at the queue again (also used without a reply, when it has
    /// something else to look at: shutdown, the idle sweep).
    pub fn wake(&self) {
        self.ready.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn deliver(&self, seq: u64, part: u32, reply: Bytes) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(index) = seq.checked_sub(inner.head) else {
            return; // Already taken (or the session ended): nothing waits for it.
        };
        let Some(entry) = inner.entries.get_mut(index as usize) else {
            return;
        };
        let len = reply.len();
        let (stored, complete) = match entry {
            Entry::Waiting => {
                *entry = Entry::Ready(reply);
                (true, true)
            }
            Entry::Gather(g) => {
                let slot = &mut g.parts[part as usize];
                let stored = slot.is_none();
                if stored {
                    *slot = Some(reply);
                    g.missing -= 1;
                }
                (stored, stored && g.missing == 0)
            }
            Entry::Ready(_) => (false, false),
        };
        if stored {
            inner.held += len;
            inner.estimate = len.max(inner.estimate - inner.estimate / 16);
        }
        // Whether a hold ended with this reply: the front entry is then written if complete.
        let mut released = false;
        if complete {
            inner.waiting -= 1;
            if inner.hold_waiting > 0 && seq < inner.hold_until {
                inner.hold_waiting -= 1;
                released = inner.hold_waiting == 0;
            }
        }
        if inner.hold_waiting > 0 && inner.held > (inner.hold_max as usize).min(inner.wake_over) {
            // Large replies (or past the client's hard limit, which the session must see):
            // what they weigh matters now, not the writes they take.
            inner.hold_waiting = 0;
            released = true;
        }
        // The front entry is complete: the session is woken to write it, unless it offered
        // the socket and the reply, its only entry, went straight to it (a client with one
        // request at a time; a pipelining client's replies leave together, through the
        // session), or it holds the replies until the last one it waits for is in.
        if complete
            && index == 0
            && inner.entries.len() == 1
            && inner.direct_open
            && matches!(inner.write_direct(), DirectWrite::Written)
        {
            return;
        }
        let front = (complete && index == 0 && inner.hold_waiting == 0)
            || (released && inner.front_complete());
        if front || inner.held > inner.wake_over {
            drop(guard);
            self.wake();
        }
    }
}

impl crate::clients::SessionSignal for ReplyQueue {
    fn close(&self) {
        self.mark_broken();
    }

    fn wake(&self) {
        ReplyQueue::wake(self);
    }

    fn push(&self, message: Bytes) {
        self.push_ready(message);
    }
}

impl ReplyTo {
    /// The sequence number of its entry in the client's queue.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Delivers the reply to its entry and wakes the session if it can now write.
    pub(crate) fn deliver(self, reply: Bytes) {
        self.queue.deliver(self.seq, self.part, reply);
    }
}

/// How the parts of one split or fanned-out request become one reply (applied by the
/// session's merge once every part is in; defined here, below the session, because a
/// gathered entry of the queue carries it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergePlan {
    /// MGET: `order[i]` is the part that holds the i-th key's value; within a part, values are
    /// in key order.
    Mget {
        /// The part of each key, in the client's key order.
        order: Vec<u32>,
    },
    /// `+OK` when every part said `+OK` (MSET, SCRIPT FLUSH, FLUSHALL).
    AllOk,
    /// The sum of integer replies (DEL, EXISTS, UNLINK, TOUCH, DBSIZE).
    SumIntegers,
    /// One array holding every part's elements (KEYS).
    ConcatArrays,
    /// The first part's reply; every part is expected to say the same (SCRIPT LOAD).
    First,
    /// Element-wise AND of integer arrays (SCRIPT EXISTS: a script exists only if every master has it).
    AndArrays,
    /// The first non-null reply, looking at the parts from `start` on (RANDOMKEY).
    AnyNonNull {
        /// The part to look at first (chosen at random so no master is favoured).
        start: usize,
    },
    /// The smallest integer reply: the oldest time (LASTSAVE).
    Oldest,
    /// PUBSUB NUMSUB / SHARDNUMSUB: `[name, count, ...]` from every master, counts summed by
    /// position.
    SumPairs,
    /// (Un)subscribe confirmations written by the proxy, released once every node confirmed.
    Confirm {
        /// The confirmation frames.
        text: Bytes,
    },
    /// The last part's reply (EXEC after MULTI and the queued commands), errors included.
    Last,
    /// CONFIG GET: one master's parameters (a flat array in RESP2, a map in RESP3), with
    /// those the proxy owns answered by the proxy instead.
    ConfigGet {
        /// The proxy's parameters that the patterns match, with the proxy's values.
        overrides: Vec<(&'static str, String)>,
        /// The client's protocol (the reply's shape).
        protocol: redshard_protocol::resp::Protocol,
    },
    /// EXEC of a transaction in which the proxy answers some commands itself: part 0 is the
    /// master's EXEC reply, the other parts the masters' `INFO keyspace` for a queued INFO;
    /// the proxy's answers are put in at their positions.
    Exec {
        /// The proxy's answers, by position in the transaction, in order.
        answers: Vec<(usize, TxAnswer)>,
        /// The client's protocol.
        protocol: redshard_protocol::resp::Protocol,
    },
    /// INFO: the proxy's own sections, followed by the masters' sections that `nodes` names,
    /// merged (see `session::info`).
    Info {
        /// The sections the proxy wrote, already formatted.
        text: String,
        /// The masters' sections asked for, merged after the proxy's.
        nodes: NodeSections,
        /// The client's protocol (RESP3 gets a verbatim string, as from Redis).
        protocol: redshard_protocol::resp::Protocol,
    },
}

/// The INFO sections the proxy takes from the masters and merges (see `session::info`): a
/// set, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeSections(u8);

impl NodeSections {
    /// `# Persistence`.
    pub const PERSISTENCE: Self = Self(1);
    /// `# CPU`.
    pub const CPU: Self = Self(1 << 1);
    /// `# Commandstats`.
    pub const COMMANDSTATS: Self = Self(1 << 2);
    /// `# Errorstats`.
    pub const ERRORSTATS: Self = Self(1 << 3);
    /// `# Keyspace`.
    pub const KEYSPACE: Self = Self(1 << 4);
    /// Every section, in the order they are written, with its name in `INFO`.
    pub const ALL: [(Self, &'static str); 5] = [
        (Self::PERSISTENCE, "persistence"),
        (Self::CPU, "cpu"),
        (Self::COMMANDSTATS, "commandstats"),
        (Self::ERRORSTATS, "errorstats"),
        (Self::KEYSPACE, "keyspace"),
    ];

    /// Whether `section` is in the set.
    #[must_use]
    pub fn has(self, section: Self) -> bool {
        self.0 & section.0 != 0
    }

    /// The set with `section` added.
    #[must_use]
    pub fn with(self, section: Self) -> Self {
        Self(self.0 | section.0)
    }

    /// Both sets.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the set is empty (the masters need not be asked).
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What the proxy answers for one command queued in a transaction (see [`MergePlan::Exec`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxAnswer {
    /// This reply, in place of a command the master never saw.
    Reply(Bytes),
    /// INFO's text written by the proxy, followed by the masters' sections it names merged
    /// (from the gathered parts after the first).
    Info(String, NodeSections),
    /// The master ran CONFIG GET: its reply, with the proxy's parameters put in.
    ConfigGet(Vec<(&'static str, String)>),
}

impl From<Merge> for MergePlan {
    fn from(merge: Merge) -> Self {
        match merge {
            Merge::SumIntegers => Self::SumIntegers,
            Merge::ConcatArrays => Self::ConcatArrays,
            Merge::AllOk => Self::AllOk,
            Merge::First => Self::First,
            Merge::AndArrays => Self::AndArrays,
            Merge::AnyNonNull => Self::AnyNonNull {
                start: random_start(),
            },
            Merge::Oldest => Self::Oldest,
        }
    }
}

/// A cheap, non-cryptographic pick of where RANDOMKEY starts looking.
fn random_start() -> usize {
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static STATE: RandomState = RandomState::new();
    }
    let counter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    STATE.with(|s| s.hash_one(counter)) as usize
}

/// One pipeline of `requests` requests through a fresh client's reply queue, as the session
/// and the lanes drive it: reserve each entry, look at the limits at the end of the round
/// (holding the replies with `hold`, as `[limits] coalesce_replies` does), deliver the
/// replies one by one in request order (as from nodes answering at different moments), and
/// take them each time the session would be woken. Returns how many times it was woken and
/// the bytes taken. For the criterion benchmarks in `benches/`; not an API.
#[doc(hidden)]
#[must_use]
pub fn bench_pipeline(requests: usize, hold: bool) -> (usize, usize) {
    let queue = ReplyQueue::new();
    let entries: Vec<ReplyTo> = (0..requests).map(|_| queue.reserve()).collect();
    queue.load_offering(
        usize::MAX,
        None,
        hold.then_some(redshard_config::file::DEFAULT_COALESCE_MAX_BYTES),
    );
    let (mut wakes, mut bytes) = (0, 0);
    for entry in entries {
        entry.deliver(Bytes::from_static(b"+OK\r\n"));
        if queue.ready.swap(false, Ordering::AcqRel) {
            wakes += 1;
            queue.take_ready(|completed, _, _| {
                if let Completed::Reply(reply) = completed {
                    bytes += reply.len();
                }
            });
        }
    }
    (wakes, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_keeps_its_allocation_size_class() {
        // Every client's queue (parked ones' too) is an `Arc<ReplyQueue>`: 16 bytes of
        // counts and the queue, in jemalloc's 192-byte class (160 before the labels moved
        // out of the entries: 32 bytes more per client, ~900 less per pipelining one).
        assert!(
            16 + std::mem::size_of::<ReplyQueue>() <= 192,
            "{}",
            std::mem::size_of::<ReplyQueue>()
        );
    }

    #[test]
    fn the_idle_sweep_wakes_a_session_once_after_a_whole_interval_without_reads() {
        let q = ReplyQueue::new();
        q.idle_tick();
        assert!(
            !q.idle_long(),
            "one tick can be a moment after the last read"
        );
        assert!(!q.ready.load(Ordering::Acquire));
        q.idle_tick();
        assert!(q.idle_long());
        assert!(q.ready.swap(false, Ordering::AcqRel), "woken to park");
        q.idle_tick();
        assert!(!q.ready.load(Ordering::Acquire), "not woken again");
        q.touch();
        assert!(!q.idle_long(), "a read starts the idle time again");
        q.idle_tick();
        q.idle_tick();
        assert!(q.idle_long() && q.ready.load(Ordering::Acquire));
    }

    #[test]
    fn a_released_queue_gets_room_for_one_entry_back() {
        let q = ReplyQueue::new();
        q.release_if_empty();
        assert_eq!(q.lock().entries.capacity(), 0);
        q.restore_room();
        assert!(q.lock().entries.capacity() >= 1);
        q.push_ready(Bytes::from_static(b"+OK\r\n"));
        assert_eq!(take_all(&q), vec![Bytes::from_static(b"+OK\r\n")]);
        // Not released while entries are outstanding.
        let reply = q.reserve();
        q.release_if_empty();
        assert!(q.lock().entries.capacity() >= 1);
        reply.deliver(Bytes::from_static(b":1\r\n"));
        assert_eq!(take_all(&q), vec![Bytes::from_static(b":1\r\n")]);
    }

    /// A queue whose replies may go straight to a loopback socket, and the client's end.
    async fn direct_queue() -> (Arc<ReplyQueue>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        // The socket's first writability is known once the reactor saw it.
        socket.writable().await.unwrap();
        let q = ReplyQueue::new();
        q.attach_socket(Arc::new(socket));
        (q, client)
    }

    /// Reserves an entry labelled as a GET, as the session does.
    fn labelled(q: &Arc<ReplyQueue>) -> ReplyTo {
        let reply = q.reserve();
        q.label_last(Meta {
            cmd: redshard_protocol::command::lookup(b"get").unwrap(),
            start: std::time::Instant::now(),
            request: Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        });
        reply
    }

    #[test]
    fn labels_go_with_the_entries_they_name_whatever_order_the_replies_come_in() {
        let q = ReplyQueue::new();
        let meta = |name: &'static [u8]| Meta {
            cmd: redshard_protocol::command::lookup(name).unwrap(),
            start: std::time::Instant::now(),
            request: Bytes::from_static(b""),
        };
        // Two reads: three requests, the last labelled; then two, the last labelled twice
        // (the second label wins); and a push with no label at all.
        let mut first: Vec<ReplyTo> = (0..3).map(|_| q.reserve()).collect();
        q.label_last(meta(b"get"));
        let mut second: Vec<ReplyTo> = (0..2).map(|_| q.reserve()).collect();
        q.label_last(meta(b"set"));
        q.label_last(meta(b"incr"));
        q.push_ready(Bytes::from_static(b">push\r\n"));
        // Replies arrive last first.
        for (i, to) in second.drain(..).rev().enumerate() {
            to.deliver(Bytes::from(format!("+b{i}\r\n")));
        }
        for (i, to) in first.drain(..).rev().enumerate() {
            to.deliver(Bytes::from(format!("+a{i}\r\n")));
        }
        let mut seen = Vec::new();
        q.take_ready(|_, meta, seq| seen.push((seq, meta.map(|m| m.cmd.name))));
        assert_eq!(
            seen,
            vec![
                (0, None),
                (1, None),
                (2, Some("get")),
                (3, None),
                (4, Some("incr")),
                (5, None),
            ]
        );
        assert!(q.lock().labels.is_empty());
        // A label of a queue whose entries were all taken names nothing.
        q.label_last(meta(b"get"));
        assert!(q.lock().labels.is_empty());
    }

    /// An offer with SLOWLOG off.
    const OFFER: Option<Offer> = Some(Offer {
        max_pipeline: 1000,
        slowlog_us: -1,
    });

    /// Reads what the client has been sent so far (waits for the first bytes).
    async fn received(client: &mut tokio::net::TcpStream) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the reply arrives")
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn a_reply_the_session_waits_for_with_nothing_to_do_goes_straight_to_the_socket() {
        use futures_util::FutureExt;
        let (q, mut client) = direct_queue().await;
        let reply = labelled(&q);
        let load = q.load_offering(usize::MAX, OFFER, None);
        assert_eq!(load.entries, 1);
        reply.deliver(Bytes::from_static(b"$1\r\nv\r\n"));
        assert_eq!(received(&mut client).await, b"$1\r\nv\r\n");
        assert!(q.is_empty(), "the entry is gone");
        assert_eq!(q.lock().waiting, 0, "nothing in flight");
        assert!(
            q.notified().now_or_never().is_none(),
            "the session is not woken"
        );
        // The next one too, while the session has not looked again.
        let reply = labelled(&q);
        reply.deliver(Bytes::from_static(b"+OK\r\n"));
        assert_eq!(received(&mut client).await, b"+OK\r\n");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_at_once_is_left_to_the_session() {
        use futures_util::FutureExt;
        use tokio::io::AsyncReadExt;
        let (q, mut client) = direct_queue().await;
        let reply = labelled(&q);
        q.load_offering(usize::MAX, OFFER, None);
        // Far more than loopback's socket buffers take while nobody reads.
        let big = Bytes::from(vec![b'x'; 32 << 20]);
        reply.deliver(big.clone());
        assert!(
            q.notified().now_or_never().is_some(),
            "the session is woken"
        );
        let (held, waiting) = {
            let inner = q.lock();
            (inner.held, inner.waiting)
        };
        assert!(held > 0 && held < big.len(), "part was written: {held}");
        assert_eq!(waiting, 0, "nothing in flight any more");
        let mut label = None;
        let mut rest = Vec::new();
        q.take_ready(|c, meta, _| {
            label = Some(meta.is_some());
            if let Completed::Reply(b) = c {
                rest = b.to_vec();
            }
        });
        assert_eq!(label, Some(false), "its metrics were recorded already");
        assert_eq!(rest.len(), held);
        let mut sent = vec![0; big.len() - held];
        client.read_exact(&mut sent).await.unwrap();
        sent.extend_from_slice(&rest);
        assert!(sent == big, "the client gets the whole reply, in order");
        assert_eq!(q.lock().held, 0);
    }

    #[tokio::test]
    async fn replies_go_through_the_session_unless_it_offered_and_only_for_a_lone_labelled_entry() {
        use futures_util::FutureExt;
        let (q, _client) = direct_queue().await;
        // No offer yet.
        labelled(&q).deliver(Bytes::from_static(b"+a\r\n"));
        assert!(q.notified().now_or_never().is_some());
        assert_eq!(take_all(&q), vec!["+a\r\n"]);
        // An offer the session withdrew by looking at the queue (take_ready) or dispatching
        // (label_and_load).
        q.load_offering(usize::MAX, OFFER, None);
        assert!(take_all(&q).is_empty());
        labelled(&q).deliver(Bytes::from_static(b"+b\r\n"));
        assert_eq!(take_all(&q), vec!["+b\r\n"]);
        q.load_offering(usize::MAX, OFFER, None);
        let _ = q.label_and_load(None, usize::MAX);
        labelled(&q).deliver(Bytes::from_static(b"+c\r\n"));
        assert_eq!(take_all(&q), vec!["+c\r\n"]);
        // Not for an unlabelled entry (its metrics are the session's), nor behind another.
        q.load_offering(usize::MAX, OFFER, None);
        q.reserve().deliver(Bytes::from_static(b"+d\r\n"));
        assert_eq!(take_all(&q), vec!["+d\r\n"]);
        q.load_offering(usize::MAX, OFFER, None);
        let first = labelled(&q);
        let second = labelled(&q);
        second.deliver(Bytes::from_static(b"+f\r\n"));
        first.deliver(Bytes::from_static(b"+e\r\n"));
        assert_eq!(take_all(&q), vec!["+e\r\n", "+f\r\n"]);
        // Not one as slow as SLOWLOG's threshold of the session's offer: the session records
        // it.
        q.load_offering(
            usize::MAX,
            Some(Offer {
                max_pipeline: 1000,
                slowlog_us: 0,
            }),
            None,
        );
        let reply = labelled(&q);
        reply.deliver(Bytes::from_static(b"+g\r\n"));
        assert_eq!(take_all(&q), vec!["+g\r\n"]);
        // Not at max_pipeline (the session is not reading: it waits for replies to leave).
        let held = labelled(&q);
        q.load_offering(
            usize::MAX,
            Some(Offer {
                max_pipeline: 1,
                slowlog_us: -1,
            }),
            None,
        );
        held.deliver(Bytes::from_static(b"+h\r\n"));
        assert_eq!(take_all(&q), vec!["+h\r\n"]);
        // Not once the session let go of the socket.
        q.load_offering(usize::MAX, OFFER, None);
        q.detach_socket();
        labelled(&q).deliver(Bytes::from_static(b"+i\r\n"));
        assert_eq!(take_all(&q), vec!["+i\r\n"]);
    }

    fn take_all(q: &ReplyQueue) -> Vec<Bytes> {
        let mut out = Vec::new();
        q.take_ready(|c, _, _| match c {
            Completed::Reply(b) => out.push(b),
            Completed::Gathered { parts, .. } => out.push(Bytes::from(parts.concat())),
        });
        out
    }

    #[test]
    fn a_completed_front_entry_shows_until_the_session_waits_again() {
        use futures_util::FutureExt;
        let q = ReplyQueue::new();
        let a = q.reserve();
        let b = q.reserve();
        b.deliver(Bytes::from_static(b"b"));
        assert!(!q.may_be_ready(), "the front entry still waits");
        a.deliver(Bytes::from_static(b"a"));
        assert!(q.may_be_ready());
        assert!(q.may_be_ready(), "looking does not lower it");
        assert!(q.notified().now_or_never().is_some());
        assert!(!q.may_be_ready(), "the wait lowered it");
        q.push_ready(Bytes::from_static(b"c"));
        assert!(
            !q.may_be_ready(),
            "behind complete entries not yet taken: no news"
        );
        assert_eq!(take_all(&q), vec!["a", "b", "c"]);
        q.push_ready(Bytes::from_static(b"d"));
        assert!(q.may_be_ready(), "a reply of the proxy's own at the front");
    }

    #[test]
    fn a_held_pipeline_wakes_its_session_once_every_reply_is_in() {
        use futures_util::FutureExt;
        let q = ReplyQueue::new();
        let a = q.reserve();
        let b = q.reserve();
        let c = q.reserve();
        q.load_offering(usize::MAX, None, Some(HOLD_MAX_BYTES));
        a.deliver(Bytes::from_static(b"a"));
        assert!(!q.may_be_ready(), "b and c are still in flight");
        c.deliver(Bytes::from_static(b"c"));
        assert!(q.notified().now_or_never().is_none());
        // A request dispatched meanwhile is not part of the hold.
        let d = q.reserve();
        q.load_offering(usize::MAX, None, Some(HOLD_MAX_BYTES));
        b.deliver(Bytes::from_static(b"b"));
        assert!(q.notified().now_or_never().is_some(), "the last held reply");
        assert_eq!(take_all(&q), vec!["a", "b", "c"]);
        // The next look holds nothing for one request in flight.
        q.load_offering(usize::MAX, None, Some(HOLD_MAX_BYTES));
        d.deliver(Bytes::from_static(b"d"));
        assert!(q.notified().now_or_never().is_some());
        assert_eq!(take_all(&q), vec!["d"]);
    }

    #[test]
    fn a_read_s_replies_stay_held_even_when_one_came_back_before_the_hold() {
        use futures_util::FutureExt;
        let q = ReplyQueue::new();
        let a = q.reserve();
        let b = q.reserve();
        // Another thread's lane answered the first request while the session was still
        // dispatching the second.
        a.deliver(Bytes::from_static(b"a"));
        q.hold_read(HOLD_MAX_BYTES);
        assert!(take_all(&q).is_empty(), "held: b is still in flight");
        let _ = q.notified().now_or_never();
        b.deliver(Bytes::from_static(b"b"));
        assert!(q.notified().now_or_never().is_some(), "the last held reply");
        assert_eq!(take_all(&q), vec!["a", "b"]);
        // One request of a read holds nothing.
        let c = q.reserve();
        q.hold_read(HOLD_MAX_BYTES);
        c.deliver(Bytes::from_static(b"c"));
        assert_eq!(take_all(&q), vec!["c"]);
        // Past `[limits] coalesce_max_bytes` held, they leave as they come.
        let d = q.reserve();
        let e = q.reserve();
        let f = q.reserve();
        q.hold_read(4);
        d.deliver(Bytes::from_static(b"dd"));
        assert!(take_all(&q).is_empty(), "2 bytes held: within the limit");
        e.deliver(Bytes::from_static(b"eee"));
        assert_eq!(
            take_all(&q),
            vec!["dd", "eee"],
            "5 bytes held: the hold is over, with f still in flight"
        );
        f.deliver(Bytes::from_static(b"f"));
        assert_eq!(take_all(&q), vec!["f"]);
    }

    #[test]
    fn a_hold_ends_early_for_the_output_limit_and_not_at_all_without_it() {
        use futures_util::FutureExt;
        let q = ReplyQueue::new();
        let a = q.reserve();
        let b = q.reserve();
        q.load_offering(4, None, Some(HOLD_MAX_BYTES));
        a.deliver(Bytes::from_static(b"+aaaa\r\n"));
        assert!(
            q.notified().now_or_never().is_some(),
            "over wake_over: the session must see its limit"
        );
        assert_eq!(take_all(&q), vec!["+aaaa\r\n"]);
        b.deliver(Bytes::from_static(b"b"));
        assert!(q.notified().now_or_never().is_some());
        assert_eq!(take_all(&q), vec!["b"]);

        // Past HOLD_MAX_BYTES the replies leave as they come.
        let a = q.reserve();
        let b = q.reserve();
        let c = q.reserve();
        q.load_offering(usize::MAX, None, Some(HOLD_MAX_BYTES));
        b.deliver(Bytes::from(vec![b'b'; HOLD_MAX_BYTES]));
        assert!(
            q.notified().now_or_never().is_none(),
            "the front still waits"
        );
        a.deliver(Bytes::from(vec![b'a'; 2]));
        assert!(
            q.notified().now_or_never().is_some(),
            "over HOLD_MAX_BYTES held: the hold is over"
        );
        assert_eq!(take_all(&q).len(), 2);
        c.deliver(Bytes::from_static(b"c"));
        assert!(q.notified().now_or_never().is_some());
        assert_eq!(take_all(&q), vec!["c"]);

        // Without hold (coalesce_replies = false, or a request that may wait long), each
        // completed front entry wakes the session as before.
        let a = q.reserve();
        let b = q.reserve();
        q.load_offering(usize::MAX, None, None);
        a.deliver(Bytes::from_static(b"a"));
        assert!(q.notified().now_or_never().is_some());
        b.deliver(Bytes::from_static(b"b"));
        assert_eq!(take_all(&q), vec!["a", "b"]);
    }

    #[test]
    fn a_held_gathered_entry_counts_once_every_part_is_in() {
        use futures_util::FutureExt;
        let q = ReplyQueue::new();
        let seq = q.reserve_gather(2, MergePlan::AllOk);
        let b = q.reserve();
        q.load_offering(usize::MAX, None, Some(HOLD_MAX_BYTES));
        q.part(seq, 0).deliver(Bytes::from_static(b"+OK\r\n"));
        b.deliver(Bytes::from_static(b"b"));
        assert!(
            q.notified().now_or_never().is_none(),
            "one part of the front entry is still in flight"
        );
        q.part(seq, 1).deliver(Bytes::from_static(b"+OK\r\n"));
        assert!(q.notified().now_or_never().is_some());
        assert_eq!(take_all(&q), vec!["+OK\r\n+OK\r\n", "b"]);
    }

    #[test]
    fn closing_ends_a_hold() {
        use futures_util::FutureExt;
        let q = ReplyQueue::new();
        let a = q.reserve();
        let b = q.reserve();
        q.load_offering(usize::MAX, None, Some(HOLD_MAX_BYTES));
        q.close();
        a.deliver(Bytes::from_static(b"a"));
        b.deliver(Bytes::from_static(b"b"));
        assert!(q.is_empty());
        assert_eq!(q.lock().hold_waiting, 0);
        assert!(q.notified().now_or_never().is_none());
    }

    #[test]
    fn replies_leave_in_request_order() {
        let q = ReplyQueue::new();
        let a = q.reserve();
        q.push_ready(Bytes::from_static(b"b"));
        let c = q.reserve();
        c.deliver(Bytes::from_static(b"c"));
        assert!(take_all(&q).is_empty(), "front entry is not complete yet");
        a.deliver(Bytes::from_static(b"a"));
        assert_eq!(take_all(&q), vec!["a", "b", "c"]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_session_is_told_once_per_completed_front_entry() {
        use futures_util::FutureExt;
        let q = ReplyQueue::new();
        let a = q.reserve();
        let b = q.reserve();
        assert!(
            q.notified().now_or_never().is_none(),
            "nothing completed yet"
        );
        b.deliver(Bytes::from_static(b"b"));
        assert!(
            q.notified().now_or_never().is_none(),
            "the front entry is still waiting"
        );
        a.deliver(Bytes::from_static(b"a"));
        assert!(q.notified().now_or_never().is_some());
        assert!(q.notified().now_or_never().is_none(), "told once");
        q.mark_broken();
        assert!(q.notified().now_or_never().is_some());
    }

    #[test]
    fn the_queue_counts_bytes_held_requests_in_flight_and_their_expected_size() {
        use futures_util::FutureExt;
        let q = ReplyQueue::new();
        let a = q.reserve();
        let b = q.reserve();
        let load = q.load(100);
        assert_eq!((load.entries, load.held, load.waiting), (2, 0, 2));
        assert_eq!(load.inflight_bytes(), 2 * FIRST_REPLY_ESTIMATE);
        b.deliver(Bytes::from(vec![b'x'; 60]));
        assert!(
            q.notified().now_or_never().is_none(),
            "under the wake limit, a reply behind the front does not wake"
        );
        let load = q.load(100);
        assert_eq!((load.held, load.waiting), (60, 1));
        assert_eq!(
            load.estimate,
            FIRST_REPLY_ESTIMATE - FIRST_REPLY_ESTIMATE / 16
        );
        let c = q.reserve();
        c.deliver(Bytes::from(vec![b'y'; 50]));
        assert!(
            q.notified().now_or_never().is_some(),
            "over the wake limit (the hard limit), even behind a waiting front"
        );
        q.push_ready(Bytes::from_static(b"+OK\r\n"));
        assert_eq!(q.load(100).held, 115);
        a.deliver(Bytes::from_static(b":1\r\n"));
        assert_eq!(take_all(&q).len(), 4);
        let load = q.load(100);
        assert_eq!((load.entries, load.held, load.waiting), (0, 0, 0));

        let seq = q.reserve_gather(2, MergePlan::AllOk);
        q.part(seq, 0).deliver(Bytes::from_static(b"+OK\r\n"));
        assert_eq!((q.load(100).held, q.load(100).waiting), (5, 1));
        let late = q.part(seq, 1);
        q.close();
        late.deliver(Bytes::from(vec![b'z'; 1000]));
        q.push_ready(Bytes::from_static(b"+OK\r\n"));
        let load = q.load(100);
        assert_eq!(
            (load.entries, load.held),
            (0, 0),
            "a closed queue keeps nothing"
        );
    }

    #[test]
    fn gathered_entry_waits_for_every_part() {
        let q = ReplyQueue::new();
        let seq = q.reserve_gather(2, MergePlan::AllOk);
        q.part(seq, 1).deliver(Bytes::from_static(b"2"));
        assert!(take_all(&q).is_empty());
        q.part(seq, 0).deliver(Bytes::from_static(b"1"));
        assert_eq!(take_all(&q), vec!["12"]);
    }
}
