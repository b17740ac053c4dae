//! One lane: a long-lived, pipelined connection to a node that many clients share.
//!
//! The lane task owns the connection. Its writer takes every queued request at once, records
//! each one's reply destination in the in-flight FIFO, and sends them in one vectored write.
//! Its reader cuts the reply stream at reply boundaries (no decoding) and hands each reply, as
//! bytes, to the oldest in-flight request. A timer fails the connection when the oldest
//! request has waited longer than the response timeout.
//!
//! When the connection fails, every in-flight request gets an error reply (its outcome is
//! unknown), and the lane reconnects at once. When a connect fails (the node is gone, or came
//! back as another process), the requests not sent yet stay queued while the lane retries
//! with a backoff, for up to [`LaneConfig::hold_unsent`]: a node that a supervisor restarts
//! at once, or that the controller fails over meanwhile (the lane is then fenced and answers
//! them with an error: they never ran), costs its clients a wait, not an error they cannot
//! tell from a lost write. After that time, queued and newly arriving requests are answered
//! with the connect error until a connect succeeds, so no client waits long on a dead node
//! (the shard's gate stops new requests before they reach the lane anyway). The lane ends
//! when every sender is gone and nothing is in flight.
//!
//! **Group commit.** Under Redis replication with `sync` acknowledgement a write's request
//! says how many replicas must have it ([`LaneRequest::acks`]). A batch that holds such a write
//! ends with `WAIT k ack_timeout_ms` in the same socket write, and every reply of the batch
//! from its first write on is held ([`Commit`]) until the `WAIT` answers: at least `k`
//! releases them in order; fewer (the timeout) or an error sends
//! [`ControlEvent::AckShortfall`] and releases them only once the controller has made the
//! replicas that lack them stale (persisted). Redis runs a connection's commands in order, so
//! the `WAIT` covers every write of the batch and of the batches before it; a reply that came
//! after held ones waits behind them, so no client reads a write before it is acknowledged.
//! When the controller cannot verify the replicas, nor record stale those that may lack the
//! writes ([`AckVerdict::Refuse`]), each held write's reply becomes `-NOREPLICAS` (the write
//! ran on the master, but a failover may lose it: its outcome is unknown to the client) and
//! the other held replies go as they are, in order; later batches are not affected.
//! The `WAIT`'s own reply never reaches a client. Reads-only batches get no `WAIT`. At most
//! `[replication] waits_in_flight` `WAIT`s (one by default) are out on a connection: while
//! that many are, the lane takes nothing from its queue (the master would run none of it
//! before the oldest answers, [`Sending::takes_more`]), and what it takes then goes in one
//! write with the next `WAIT` ([`Sending::seal`]). A request written behind a blocked `WAIT`
//! runs only once it answers, so the response timeout counts from then
//! ([`Commit::waited_at`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::error::LaneError;
use super::stream::BackendStream;
use super::{connect::connect_lane, queue, Dest, LaneConfig, LaneRequest};
use crate::events::{AckVerdict, ControlEvent, EventSender};
use crate::outbuf::OutBuf;
use redshard_metrics as metrics;
use redshard_protocol::client_error::{ClientError, Reached};
use redshard_protocol::resp::{reply, Protocol, ReplyScanner};

/// Requests taken from the queue per write.
const BATCH: usize = 512;
/// Spare room kept in the read buffer before each read.
const READ_RESERVE: usize = 16 * 1024;

/// A request written to the node and not yet answered.
#[derive(Debug)]
struct InFlight {
    /// Where its reply goes.
    dest: Dest,
    /// When it was written, for the response timeout.
    sent: Instant,
    /// Replies it produces; all but the last are dropped (client) or kept (mirror ack).
    replies: u32,
    /// What the replicas get once the master answered.
    mirror: Option<Box<dyn super::AfterMaster>>,
    /// What the request is.
    kind: Kind,
    /// Whether its reply waits for the `WAIT` that ends its batch (it is the batch's first
    /// write or came after it; see [`Commit`]).
    commit: bool,
    /// Whether it is a write the `WAIT` must acknowledge (its request asked for replicas,
    /// [`LaneRequest::acks`]), as opposed to a read that merely follows one in the batch:
    /// only such a reply becomes `-NOREPLICAS` when the acknowledgement is refused.
    write: bool,
}

/// What an in-flight request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A request of a client or of the proxy: its reply goes to its destination.
    Request,
    /// The lane's own `HELLO` switching the connection's protocol, its `AUTH` switching the
    /// backend user, or its `SELECT` switching the database: its reply is checked and
    /// dropped.
    Handshake,
    /// The lane's `WAIT` for this many replicas after a batch of writes (group commit).
    Wait(u32),
}

impl InFlight {
    /// Answers with the lane's error: the request's outcome is unknown.
    fn fail(self, reply: &Bytes) {
        if let Some(job) = self.mirror {
            job.master_lost();
        }
        self.dest.fail(reply.clone());
    }
}

/// How a served connection ended.
enum Ended {
    /// Every sender is gone and nothing is in flight: the lane is no longer used.
    Unused,
    /// The connection failed; reconnect.
    Failed(LaneError),
}

/// What a lane task needs besides its queue.
#[derive(Debug)]
pub struct LaneSetup {
    /// The node.
    pub addr: NodeAddr,
    /// The lane's number on the node, for logs.
    pub index: usize,
    /// The protocol the connection starts in.
    pub protocol: Protocol,
    /// Timeouts, credentials, reconnection.
    pub config: Arc<LaneConfig>,
    /// The node's fence (see [`super::Node::fence`]); `None` never fences.
    pub fenced: Option<watch::Receiver<bool>>,
    /// Where failed connections are reported.
    pub events: Option<mpsc::UnboundedSender<ControlEvent>>,
    /// The node's process as the proxy serves it: checked on every connection (a shared
    /// lane's); `None` does not check.
    pub incarnation: Option<Arc<super::Incarnation>>,
    /// A connection already open to serve first (see `ready.rs`), for a private lane; a
    /// lane that has none, or needs another, connects.
    pub ready: Option<super::stream::BackendStream>,
    /// The node's count of writes answered `-NOREPLICAS` (see [`super::Node::acks_refused`]).
    pub acks_refused: Arc<AtomicU64>,
}

/// The lane task: connect, serve, reconnect, until the lane is no longer used.
pub(crate) async fn run(setup: LaneSetup, mut rx: queue::Receiver<LaneRequest>) {
    let LaneSetup {
        addr,
        index,
        protocol,
        config,
        mut fenced,
        events,
        incarnation,
        mut ready,
        acks_refused,
    } = setup;
    let report = |events: &Option<mpsc::UnboundedSender<ControlEvent>>| {
        if let Some(events) = events {
            let _ = events.send(ControlEvent::ConnectionLost { addr: addr.clone() });
        }
    };
    let mut backoff = config.backoff_min;
    // Since when every connect failed (`None` while connected).
    let mut unreachable: Option<Instant> = None;
    // Counted in the node's lanes not connected while the connection is lost.
    let mut down = LaneDown {
        incarnation: incarnation.as_deref().filter(|_| config.reconnect),
        down: false,
    };
    loop {
        if let Some(fence) = fenced.as_mut() {
            let is_fenced = *fence.borrow_and_update();
            if is_fenced {
                let reply = error_reply(&addr, &LaneError::Fenced, Reached::No);
                if !refuse_while_fenced(&mut rx, fence, &reply).await {
                    return;
                }
                continue;
            }
        }
        let opened = match ready.take() {
            Some(stream) => Ok(stream),
            None => connect_lane(&addr, protocol, &config).await,
        };
        let connected = match opened {
            Ok(mut stream) => match &incarnation {
                Some(incarnation) => match super::connect::run_id(&mut stream, &config).await {
                    Ok(None) => {
                        if incarnation.first_unwatched() {
                            warn!(node = %addr, "the node does not tell its run_id (INFO refused to the proxy's backend user, or not Redis): its restarts are not watched; grant +info");
                        }
                        Ok(stream)
                    }
                    Ok(Some(run_id)) if incarnation.admits(&run_id) => Ok(stream),
                    Ok(Some(run_id)) => {
                        incarnation.restart_seen();
                        if let Some(events) = &events {
                            let _ = events.send(ControlEvent::NodeRestarted {
                                addr: addr.clone(),
                                run_id,
                            });
                        }
                        Err(LaneError::Restarted)
                    }
                    Err(e) => Err(e),
                },
                None => Ok(stream),
            },
            Err(e) => Err(e),
        };
        match connected {
            Ok(stream) => {
                debug!(node = %addr, lane = index, "lane connected");
                backoff = config.backoff_min;
                unreachable = None;
                down.set(false);
                metrics::backend_connected(&addr);
                let ended = serve(
                    stream,
                    &mut rx,
                    &addr,
                    protocol,
                    &config,
                    fenced.as_mut(),
                    Commit::new(&addr, events.as_ref(), &acks_refused),
                )
                .await;
                metrics::backend_disconnected(&addr);
                if let Ended::Failed(error) = &ended {
                    down.set(true);
                    metrics::backend_error(&addr, error.metric_kind());
                    if !matches!(error, LaneError::Fenced) {
                        report(&events);
                    }
                }
                match ended {
                    Ended::Unused => return,
                    Ended::Failed(LaneError::Fenced) => {}
                    Ended::Failed(error) if !config.reconnect => {
                        // A private lane's connection state (WATCH) must not be silently
                        // replaced: what is queued fails, and the owner opens a new lane.
                        debug!(node = %addr, %error, "private lane connection lost");
                        return close_and_fail(&mut rx, &error_reply(&addr, &error, Reached::No));
                    }
                    Ended::Failed(error) => {
                        warn!(node = %addr, lane = index, %error, "lane connection lost");
                    }
                }
            }
            Err(error) if !config.reconnect => {
                metrics::backend_error(&addr, error.metric_kind());
                return close_and_fail(&mut rx, &error_reply(&addr, &error, Reached::No));
            }
            Err(error) => {
                down.set(true);
                metrics::backend_error(&addr, error.metric_kind());
                report(&events);
                if matches!(error, LaneError::Acl(_)) {
                    // A configuration problem, not a passing failure: said as an error.
                    tracing::error!(node = %addr, lane = index, %error, retry_ms = backoff.as_millis() as u64, "lane cannot connect");
                } else {
                    warn!(node = %addr, lane = index, %error, retry_ms = backoff.as_millis() as u64, "lane cannot connect");
                }
                let since = *unreachable.get_or_insert_with(Instant::now);
                let retry = Instant::now() + backoff;
                let hold = incarnation
                    .as_deref()
                    .filter(|i| i.holds() && since.elapsed() < config.hold_unsent);
                let held = match hold {
                    Some(incarnation) => {
                        hold_unsent(
                            retry.min(since + config.hold_unsent),
                            fenced.as_mut(),
                            incarnation,
                        )
                        .await
                    }
                    None => false,
                };
                if !held {
                    let reply = error_reply(&addr, &error, Reached::No);
                    if !refuse_until(&mut rx, retry, &reply).await {
                        return;
                    }
                }
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

/// Whether a shared lane is counted in its node's lanes not connected (see
/// [`super::Incarnation::lanes_connected`]); uncounted when the lane ends.
struct LaneDown<'a> {
    /// The node's; `None` when not counted (private lanes, no controller).
    incarnation: Option<&'a super::Incarnation>,
    /// Whether this lane is counted now.
    down: bool,
}

impl LaneDown<'_> {
    fn set(&mut self, down: bool) {
        if self.down != down {
            self.down = down;
            if let Some(incarnation) = self.incarnation {
                incarnation.lane_down(down);
            }
        }
    }
}

impl Drop for LaneDown<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Answers every request with `reply` while the node is fenced. Returns `false` when every
/// sender is gone.
async fn refuse_while_fenced(
    rx: &mut queue::Receiver<LaneRequest>,
    fence: &mut watch::Receiver<bool>,
    reply: &Bytes,
) -> bool {
    loop {
        tokio::select! {
            changed = fence.changed() => {
                let lifted = changed.is_err() || !*fence.borrow_and_update();
                if lifted {
                    return true;
                }
            }
            request = rx.recv() => match request {
                Some(request) => fail_request(request, reply),
                None => return false,
            },
        }
    }
}

/// Ends a lane: no more requests are accepted, and every queued one is answered with `reply`.
fn close_and_fail(rx: &mut queue::Receiver<LaneRequest>, reply: &Bytes) {
    rx.close();
    while let Some(request) = rx.try_recv() {
        fail_request(request, reply);
    }
}

/// Answers a request that was never written with the lane's error.
fn fail_request(request: LaneRequest, reply: &Bytes) {
    if let Some(job) = request.mirror {
        // Never sent: the master did not run it, but its client is told it failed, so the
        // write is simply not acknowledged; the replicas need nothing.
        job.never_sent();
    }
    request.dest.fail(reply.clone());
}

/// The error reply a client gets for a request this lane could not complete: `reached` is
/// `No` for requests never written, `Unknown` for those in flight.
fn error_reply(addr: &NodeAddr, error: &LaneError, reached: Reached) -> Bytes {
    ClientError::Backend {
        addr: addr.clone(),
        why: error.to_string(),
        reached,
    }
    .to_reply()
}

/// Waits until `deadline` or the node is fenced, reading nothing from the queue: what it
/// holds was never sent, and goes out on the next connection (or gets the fence's error).
/// Returns `false` as soon as the controller stops the hold (the shard is down: nothing will
/// come to serve these requests soon).
async fn hold_unsent(
    deadline: Instant,
    fenced: Option<&mut watch::Receiver<bool>>,
    incarnation: &super::Incarnation,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(deadline) => true,
        _ = wait_fenced(fenced) => true,
        () = incarnation.released() => false,
    }
}

/// Answers every request that arrives before `deadline` with `reply`. Returns `false` when
/// every sender is gone (the lane is no longer used).
async fn refuse_until(
    rx: &mut queue::Receiver<LaneRequest>,
    deadline: Instant,
    reply: &Bytes,
) -> bool {
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            request = rx.recv() => match request {
                Some(request) => fail_request(request, reply),
                None => return false,
            },
        }
    }
}

/// Serves one established connection until it fails or the lane is no longer used.
///
/// One loop owns everything: the in-flight FIFO is plain local state, and each `select!`
/// branch borrows only its own half (queue, socket writer, socket reader, timer). `commit`
/// holds the replies waiting for `WAIT`s: a fresh one per connection.
async fn serve(
    mut stream: BackendStream,
    rx: &mut queue::Receiver<LaneRequest>,
    addr: &NodeAddr,
    connected: Protocol,
    config: &LaneConfig,
    fenced: Option<&mut watch::Receiver<bool>>,
    mut commit: Commit,
) -> Ended {
    let (mut reader, mut writer) = stream.split();
    let mut send = Sending::new(
        connected,
        config.acl.clone(),
        config.ack_timeout,
        config.waits_in_flight,
    );
    let mut batch = Vec::with_capacity(BATCH);
    let mut buf = BytesMut::with_capacity(READ_RESERVE);
    let mut scanner = ReplyScanner::new(config.max_reply_depth);
    // Armed for the oldest in-flight request; when it fires early (that request was answered)
    // it is re-armed for the new oldest one. Sent times only grow along the FIFO.
    // Without a response timeout (private lanes) the timer is never armed.
    let timeout = config.response_timeout;
    let timer = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(timer);
    let mut open = true;
    // One future for the whole connection (not one per loop turn: this loop is the hot path).
    let fence_set = wait_fenced(fenced);
    tokio::pin!(fence_set);
    // Replies of the front request's group seen so far (length in `buf`).
    let mut pending = Group::default();

    let result: Result<(), LaneError> = loop {
        if !open && send.is_idle() && commit.is_empty() {
            break Ok(());
        }
        if buf.capacity() - buf.len() < READ_RESERVE / 4 {
            buf.reserve(READ_RESERVE);
        }
        let taking = open && send.takes_more(config.max_unwritten, commit.waits_answered);
        tokio::select! {
            received = rx.recv_many(&mut batch, BATCH), if taking => {
                if received == 0 {
                    // Every sender is gone: finish what is in flight, then end.
                    open = false;
                    continue;
                }
                if let (true, Some(timeout)) = (send.in_flight.is_empty(), timeout) {
                    timer.as_mut().reset(Instant::now() + timeout);
                }
                send.take(&mut batch);
                if send.out.is_empty() {
                    continue;
                }
                // Coalesce: let every other task that is ready now (the sessions of clients
                // whose requests arrived in the same poll of the sockets) queue its request
                // before writing, so that one write carries all of them instead of one each.
                // `yield_now` resumes this task only after the runtime has run out of ready
                // tasks and polled the I/O driver; on an idle proxy that costs one extra
                // poll, under load it divides the lane's writes (and the node's reads and
                // wake-ups) by the number of clients served per turn.
                tokio::task::yield_now().await;
                let room = BATCH.saturating_sub(batch.len());
                rx.try_recv_many(&mut batch, room);
                send.take(&mut batch);
                send.seal(commit.waits_answered);
            }
            done = wait_fence(&mut send.fence), if send.fence.is_some() => {
                let () = done;
                send.fence = None;
                send.pump();
                send.seal(commit.waits_answered);
            }
            () = commit.decided(), if commit.awaits_controller() => commit.release(),
            written = send.out.write_some(&mut writer), if !send.out.is_empty() => {
                if let Err(e) = written {
                    break Err(LaneError::Io(e));
                }
            }
            read = reader.read_buf(&mut buf) => {
                match read {
                    Ok(0) => break Err(LaneError::Closed),
                    Err(e) => break Err(LaneError::Io(e)),
                    Ok(_) => {}
                }
                if let Err(e) = deliver_replies(&mut buf, &mut scanner, &mut send.in_flight, &mut pending, &mut commit) {
                    break Err(e);
                }
                if send.in_flight.is_empty() && !send.held.is_empty() {
                    send.pump();
                }
                // Writes admitted while a `WAIT` was out get theirs now that it answered.
                send.seal(commit.waits_answered);
            }
            // It completes only when the node is fenced (never again after that).
            _ = &mut fence_set => break Err(LaneError::Fenced),
            () = &mut timer, if timeout.is_some() && !send.in_flight.is_empty() => {
                let timeout = timeout.unwrap_or_default();
                let oldest = send.in_flight.front().map_or_else(Instant::now, |r| {
                    commit.waited_at.map_or(r.sent, |waited| r.sent.max(waited))
                });
                if oldest.elapsed() >= timeout {
                    break Err(LaneError::Timeout(timeout));
                }
                timer.as_mut().reset(oldest + timeout);
            }
        }
    };
    match result {
        Ok(()) => Ended::Unused,
        Err(error) => {
            // Held requests were never written (they did not run) but share the in-flight
            // ones' line, which cannot say which of the two a request was.
            let reply = error_reply(addr, &error, Reached::Unknown);
            // Replies held for a `WAIT` first (they are older): the master applied those
            // writes, but no replica is known to have them, so their outcome is unknown too.
            commit.fail(&reply);
            for request in send.in_flight {
                request.fail(&reply);
            }
            for request in send.held {
                fail_request(request, &reply);
            }
            Ended::Failed(error)
        }
    }
}

/// The sending half of a connection's state: what is written, what waits, what is in flight.
#[derive(Debug)]
struct Sending {
    /// Bytes admitted and not yet written.
    out: OutBuf,
    /// Requests written (or about to be), oldest first, each with where its reply goes.
    in_flight: VecDeque<InFlight>,
    /// The protocol the connection speaks now; a request for the other one is preceded by a
    /// `HELLO` whose reply the lane checks and drops.
    speaking: Protocol,
    /// The proxy's ACL users, when it manages them: a request of another user than the
    /// connection runs as now is preceded by an `AUTH` the lane checks and drops.
    acl: Option<Arc<super::acl::ManagedUsers>>,
    /// The backend user the connection runs as now (`redshard-client` after connecting).
    acting: super::acl::BackendUser,
    /// The database the connection has selected now (0 after connecting): a request for
    /// another one is preceded by a `SELECT` whose reply the lane checks and drops.
    selected: u16,
    /// Requests waiting behind a fenced one (see [`LaneRequest::via`]), in order.
    held: VecDeque<LaneRequest>,
    /// The signal that the fenced request has been answered, while one is out.
    fence: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The replicas the writes admitted since the last `WAIT` must reach (the most any of
    /// them asked for); 0 while none was admitted. [`Sending::seal`] ends the batch.
    acks: u32,
    /// `[replication] ack_timeout_ms`, the `WAIT`'s timeout.
    ack_timeout: Duration,
    /// The last `WAIT` request built, for its replica count: the count changes only with the
    /// topology, so batches reuse it instead of encoding one each.
    wait: Option<(u32, Bytes)>,
    /// `WAIT`s written on this connection; with [`Commit::waits_answered`], how many are
    /// still out.
    waits_sent: u64,
    /// How many may be out at once (`[replication] waits_in_flight`, at least 1): the writes
    /// admitted while that many are out are covered by the next one, written when the oldest
    /// answers (fewer `WAIT`s, each making the master ask its replicas for their offsets,
    /// for the same acknowledgements). Two let the master block on the next batch's `WAIT`
    /// as soon as the current one answers, instead of a round trip to the proxy later.
    waits_in_flight: u64,
}

impl Sending {
    fn new(
        speaking: Protocol,
        acl: Option<Arc<super::acl::ManagedUsers>>,
        ack_timeout: Duration,
        waits_in_flight: u32,
    ) -> Self {
        Self {
            out: OutBuf::new(),
            in_flight: VecDeque::new(),
            speaking,
            acl,
            acting: super::acl::BackendUser::Client,
            selected: 0,
            held: VecDeque::new(),
            fence: None,
            acks: 0,
            ack_timeout,
            wait: None,
            waits_sent: 0,
            waits_in_flight: u64::from(waits_in_flight.max(1)),
        }
    }

    /// Ends the batch: when it holds a write to acknowledge, a `WAIT` for its replicas
    /// follows it in the same socket write, unless as many `WAIT`s as may be are still out
    /// (`answered` of them were answered): the writes then wait for the next one, sealed when
    /// the oldest answers.
    fn seal(&mut self, answered: u64) {
        if self.acks == 0 || self.waits_full(answered) {
            return;
        }
        let wanted = std::mem::take(&mut self.acks);
        let now = Instant::now();
        // A read-only level's user may not run WAIT (the others may): it runs as the client
        // user then.
        if !self.acting.may_wait() {
            self.switch_user(super::acl::BackendUser::Client, now);
        }
        let bytes = match &self.wait {
            Some((count, bytes)) if *count == wanted => bytes.clone(),
            _ => {
                let bytes = wait_request(wanted, self.ack_timeout);
                self.wait = Some((wanted, bytes.clone()));
                bytes
            }
        };
        self.waits_sent += 1;
        self.push_own(bytes, Kind::Wait(wanted), now);
    }

    /// Writes one request of the lane's own (`kind`), whose reply no client gets.
    fn push_own(&mut self, bytes: Bytes, kind: Kind, now: Instant) {
        self.out.push(bytes);
        self.in_flight.push_back(InFlight {
            dest: Dest::Discard,
            sent: now,
            replies: 1,
            mirror: None,
            kind,
            commit: false,
            write: false,
        });
    }

    /// Switches the connection to backend user `user` with an `AUTH` (when the proxy manages
    /// its users and the connection runs as another one).
    fn switch_user(&mut self, user: super::acl::BackendUser, now: Instant) {
        if user == self.acting {
            return;
        }
        if let Some(auth) = self.acl.as_ref().map(|acl| acl.auth(user).clone()) {
            self.acting = user;
            self.push_own(auth, Kind::Handshake, now);
        }
    }

    /// Whether it takes more requests from the lane's queue (`answered` of its `WAIT`s were
    /// answered):
    /// - not while `max_unwritten` bytes or more it has copied are not written yet. While the
    ///   node reads slower than the clients send, the backlog then stays in the queue,
    ///   referencing the clients' read buffers (which pipelining clients keep for their next
    ///   requests anyway), instead of being copied into an output buffer that grows to the
    ///   largest backlog. The node never waits for it: what is unwritten is several of its
    ///   reads.
    /// - not while as many `WAIT`s as may be are out ([`Sending::waits_in_flight`]): the
    ///   master runs nothing of this connection before the oldest answers, so what it was
    ///   sent meanwhile would only be read by it in pieces (a read and a wake-up each) and
    ///   held. Taken when the `WAIT` answers, it goes in one write with the next `WAIT`
    ///   (+2–4% sync throughput in paired runs). A request still queued is not timed and, if
    ///   the connection fails, is sent on the next one: it never ran.
    fn takes_more(&self, max_unwritten: usize, answered: u64) -> bool {
        self.out.len() < max_unwritten && !self.waits_full(answered)
    }

    /// Whether as many `WAIT`s as may be are out (`answered` of them were answered).
    fn waits_full(&self, answered: u64) -> bool {
        self.waits_sent >= answered + self.waits_in_flight
    }

    /// Whether nothing is waiting, unwritten or unanswered.
    fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.out.is_empty()
            && self.held.is_empty()
            && self.fence.is_none()
    }

    /// Admits every request of `batch`, in order: at once in the usual case, through `held`
    /// when one of them (or one held earlier) must be fenced.
    fn take(&mut self, batch: &mut Vec<LaneRequest>) {
        if self.held.is_empty() && self.fence.is_none() && batch.iter().all(|r| r.via.is_none()) {
            // One clock read for the whole batch: they are written together.
            let now = Instant::now();
            for request in batch.drain(..) {
                self.admit(request, now);
            }
        } else {
            self.held.extend(batch.drain(..));
            self.pump();
        }
    }

    /// Writes `request` to the connection (after a `HELLO` if it changes the protocol).
    fn admit(&mut self, request: LaneRequest, now: Instant) {
        self.switch_user(request.user, now);
        if request.protocol != self.speaking {
            self.speaking = request.protocol;
            let hello = Bytes::from_static(match self.speaking {
                Protocol::Resp2 => b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n",
                Protocol::Resp3 => b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
            });
            self.push_own(hello, Kind::Handshake, now);
        }
        if request.db != self.selected {
            self.selected = request.db;
            self.push_own(select_request(request.db), Kind::Handshake, now);
        }
        self.acks = self.acks.max(request.acks);
        self.out.push(request.bytes);
        self.in_flight.push_back(InFlight {
            dest: request.dest,
            sent: now,
            replies: request.replies.max(1),
            mirror: request.mirror,
            kind: Kind::Request,
            commit: self.acks > 0,
            write: request.acks > 0,
        });
    }

    /// Admits held requests in order up to the next fenced one; sends that one on its own
    /// lane once nothing is in flight here, and holds the rest until it is answered.
    fn pump(&mut self) {
        let now = Instant::now();
        while self.fence.is_none() {
            let Some(front) = self.held.front() else {
                return;
            };
            if front.via.is_some() {
                if !self.in_flight.is_empty() {
                    return; // wait until everything before it has run
                }
                let Some(mut request) = self.held.pop_front() else {
                    return;
                };
                let Some(via) = request.via.take() else {
                    return;
                };
                let (done, wait) = tokio::sync::oneshot::channel();
                request.dest = Dest::Then(Box::new((request.dest, done)));
                via.submit(request);
                self.fence = Some(wait);
                return;
            }
            if let Some(request) = self.held.pop_front() {
                self.admit(request, now);
            }
        }
    }
}

/// `SELECT db`, as the lane switches databases (the connection checked, when it opened, that
/// the node has every database a client may select).
fn select_request(db: u16) -> Bytes {
    let mut bytes = BytesMut::with_capacity(24);
    let db = db.to_string();
    redshard_protocol::resp::encode::request(&mut bytes, &[b"SELECT", db.as_bytes()]);
    bytes.freeze()
}

/// Completes when the fenced request has been answered (or dropped).
async fn wait_fence(fence: &mut Option<tokio::sync::oneshot::Receiver<()>>) {
    match fence.as_mut() {
        Some(wait) => {
            let _ = wait.await;
        }
        None => std::future::pending().await,
    }
}

/// Completes with `true` when the node becomes fenced (`false` if the fence is gone); never
/// without a fence.
pub(super) async fn wait_fenced(fenced: Option<&mut watch::Receiver<bool>>) -> bool {
    let Some(fence) = fenced else {
        return std::future::pending().await;
    };
    let fenced = fence.wait_for(|f| *f).await.is_ok();
    if !fenced {
        std::future::pending::<()>().await;
    }
    true
}

/// How far the reader is into the front request's group of replies.
#[derive(Debug, Default)]
struct Group {
    /// Replies of the group already complete in `buf`.
    seen: u32,
    /// Their total length, from the start of `buf`.
    len: usize,
    /// Where the last complete one starts.
    last: usize,
}

/// Cuts every complete reply (or group of replies) off the front of `buf` and hands it to the
/// oldest request.
fn deliver_replies(
    buf: &mut BytesMut,
    scanner: &mut ReplyScanner,
    in_flight: &mut VecDeque<InFlight>,
    group: &mut Group,
    commit: &mut Commit,
) -> Result<(), LaneError> {
    while let Some(mut len) = scanner
        .scan(&buf[group.len..])
        .map_err(LaneError::Protocol)?
    {
        if scanner.too_deep() {
            // Deeper than any Redis reply: only its own request fails, the stream goes on.
            len = replace_reply(buf, group.len, len, &scanner.too_deep_error());
        }
        let Some(front) = in_flight.front() else {
            return Err(LaneError::Unsolicited);
        };
        group.last = group.len;
        group.len += len;
        group.seen += 1;
        if group.seen < front.replies {
            continue;
        }
        let whole = buf.split_to(group.len).freeze();
        // Where the last reply starts (0 for a request with one reply: all of `whole`).
        let last = group.last;
        *group = Group::default();
        let Some(request) = in_flight.pop_front() else {
            return Err(LaneError::Unsolicited);
        };
        if let Kind::Wait(wanted) = request.kind {
            commit.waited(wanted, &whole);
            // The requests behind it ran only now: their response time counts from here.
            commit.waited_at = Some(Instant::now());
            continue;
        }
        if request.kind == Kind::Handshake {
            if reply::is_error(&whole) {
                let text = String::from_utf8_lossy(&whole).trim_end().to_owned();
                return Err(if let Some(text) = text.strip_prefix("-WRONGPASS") {
                    // The switch to one of the proxy's users (deleted since the connection
                    // opened): the new connection creates it again.
                    LaneError::Acl(format!("WRONGPASS{text}"))
                } else {
                    LaneError::Switch(text)
                });
            }
            continue;
        }
        let reply = match request.dest {
            // The proxy's own waiters and replica checks read every reply of a group.
            Dest::Mirror(_) | Dest::Signal(_) if request.mirror.is_none() => whole,
            // No second reference to count up and down for the usual single reply.
            _ if last == 0 => whole,
            _ => whole.slice(last..),
        };
        commit.reply(Release {
            dest: request.dest,
            reply,
            mirror: request.mirror,
            commit: request.commit,
            write: request.write,
        });
    }
    Ok(())
}

/// Replaces the `len` bytes of the reply at `at` in `buf` by `with`; returns `with`'s length.
fn replace_reply(buf: &mut BytesMut, at: usize, len: usize, with: &[u8]) -> usize {
    let mut rebuilt = BytesMut::with_capacity(buf.len() - len + with.len());
    rebuilt.extend_from_slice(&buf[..at]);
    rebuilt.extend_from_slice(with);
    rebuilt.extend_from_slice(&buf[at + len..]);
    *buf = rebuilt;
    with.len()
}

/// A reply the master gave, and where it goes.
#[derive(Debug)]
struct Release {
    /// Where it goes.
    dest: Dest,
    /// The reply (every reply of the group for the proxy's own waiters, else the last).
    reply: Bytes,
    /// The mirroring its write starts once released.
    mirror: Option<Box<dyn super::AfterMaster>>,
    /// Whether it waits for its batch's `WAIT`.
    commit: bool,
    /// Whether it is a write the `WAIT` acknowledges (see [`InFlight::write`]).
    write: bool,
}

impl Release {
    fn deliver(self) {
        match self.mirror {
            Some(job) => job.master_answered(self.reply, self.dest),
            None => self.dest.deliver(self.reply),
        }
    }

    /// Its `WAIT`'s acknowledgement was refused: a write gets `-NOREPLICAS` (its outcome is
    /// unknown), anything else its reply as it is. Returns whether it was a write.
    fn refuse(self) -> bool {
        if !self.write {
            self.deliver();
            return false;
        }
        if let Some(job) = self.mirror {
            job.master_lost();
        }
        self.dest.fail(ClientError::NoReplicas.to_reply());
        true
    }
}

/// What an answered `WAIT` says of the replies it covers.
#[derive(Debug)]
enum Covered {
    /// Known: released as they are, or with their writes refused.
    Decided(AckVerdict),
    /// The `WAIT` fell short and the controller has not answered yet.
    Pending(tokio::sync::oneshot::Receiver<AckVerdict>),
}

/// The verdict on a shortfall the controller dropped unanswered (it stopped): nothing
/// verified the replicas.
fn unanswered(master: &NodeAddr) -> AckVerdict {
    warn!(node = %master, "the controller stopped before checking the replicas that did not acknowledge a batch of writes; its writes are answered -NOREPLICAS");
    AckVerdict::Refuse
}

/// The replies a connection holds for `WAIT`s (group commit; see the module docs), in the
/// order the master gave them. Allocation-free once its queues have grown to the lane's
/// usual number of replies in flight.
struct Commit {
    /// Replies not released yet, oldest first.
    held: VecDeque<Release>,
    /// Replies ever pushed to `held`.
    pushed: u64,
    /// Replies ever released from `held`.
    released: u64,
    /// Answered `WAIT`s whose replies are not all released yet, oldest first: how many
    /// replies had been pushed when it answered (it covers every one of them), and what is
    /// known of their acknowledgement.
    waits: VecDeque<(u64, Covered)>,
    /// The master, for the controller.
    master: NodeAddr,
    /// Where shortfalls are reported; `None` (no controller) releases at once.
    events: Option<EventSender>,
    /// `WAIT`s answered on this connection (see [`Sending::waits_sent`]).
    waits_answered: u64,
    /// When the last `WAIT` answered: a request written behind a blocked `WAIT` (or behind
    /// several, `[replication] waits_in_flight`) runs only once they answer, so the response
    /// timeout counts from then, not from its write; otherwise a replica that stops
    /// answering would time the whole connection out instead of being made stale.
    waited_at: Option<Instant>,
    /// The node's count of writes answered `-NOREPLICAS`.
    acks_refused: Arc<AtomicU64>,
}

impl Commit {
    fn new(master: &NodeAddr, events: Option<&EventSender>, acks_refused: &Arc<AtomicU64>) -> Self {
        Self {
            held: VecDeque::new(),
            pushed: 0,
            released: 0,
            waits: VecDeque::new(),
            master: master.clone(),
            events: events.cloned(),
            waits_answered: 0,
            waited_at: None,
            acks_refused: Arc::clone(acks_refused),
        }
    }

    /// Whether nothing is held.
    fn is_empty(&self) -> bool {
        self.held.is_empty() && self.waits.is_empty()
    }

    /// Hands `reply` over at once, or holds it: when it waits for its `WAIT`, or when older
    /// replies are held (replies leave in the master's order).
    fn reply(&mut self, reply: Release) {
        if !reply.commit && self.held.is_empty() {
            reply.deliver();
            return;
        }
        self.held.push_back(reply);
        self.pushed += 1;
    }

    /// A `WAIT` for `wanted` replicas answered `answer`: it covers every reply held so far.
    fn waited(&mut self, wanted: u32, answer: &Bytes) {
        self.waits_answered += 1;
        let acked = reply_integer(answer).is_some_and(|n| n >= i64::from(wanted));
        let covered = match (&self.events, acked) {
            (Some(events), false) => {
                let (done, verdict) = tokio::sync::oneshot::channel();
                let answer = String::from_utf8_lossy(answer).trim_end().to_owned();
                // The controller logs what it finds (once per check, not per batch).
                debug!(node = %self.master, wanted, %answer, "replicas did not acknowledge a batch of writes in time; holding its replies until the replicas that lack them are stale");
                let _ = events.send(ControlEvent::AckShortfall {
                    master: self.master.clone(),
                    wanted,
                    answer,
                    done,
                });
                Covered::Pending(verdict)
            }
            _ => Covered::Decided(AckVerdict::Release),
        };
        self.waits.push_back((self.pushed, covered));
        self.release();
    }

    /// Whether the oldest answered `WAIT` waits for the controller.
    fn awaits_controller(&self) -> bool {
        matches!(self.waits.front(), Some((_, Covered::Pending(_))))
    }

    /// Completes when the controller has dealt with the oldest `WAIT`'s shortfall (never
    /// while none is pending). Cancel-safe: the verdict is stored as soon as it is read.
    async fn decided(&mut self) {
        match self.waits.front_mut() {
            Some((_, covered @ Covered::Pending(_))) => {
                let Covered::Pending(pending) = covered else {
                    return;
                };
                let verdict = match pending.await {
                    Ok(verdict) => verdict,
                    Err(_) => unanswered(&self.master),
                };
                *covered = Covered::Decided(verdict);
            }
            _ => std::future::pending().await,
        }
    }

    /// Releases, in order, every held reply that a decided `WAIT` covers (a write whose
    /// acknowledgement the controller refused gets `-NOREPLICAS`), and after the last such
    /// `WAIT` those that wait for none.
    fn release(&mut self) {
        use tokio::sync::oneshot::error::TryRecvError;
        loop {
            match self.waits.front_mut() {
                Some((upto, covered)) => {
                    let verdict = match covered {
                        Covered::Decided(verdict) => *verdict,
                        Covered::Pending(pending) => {
                            let verdict = match pending.try_recv() {
                                Err(TryRecvError::Empty) => return,
                                Ok(verdict) => verdict,
                                Err(TryRecvError::Closed) => unanswered(&self.master),
                            };
                            *covered = Covered::Decided(verdict);
                            verdict
                        }
                    };
                    if self.released < *upto {
                        if let Some(reply) = self.held.pop_front() {
                            self.released += 1;
                            let refused = match verdict {
                                AckVerdict::Release => {
                                    reply.deliver();
                                    false
                                }
                                AckVerdict::Refuse => reply.refuse(),
                            };
                            if refused {
                                self.acks_refused.fetch_add(1, Ordering::Relaxed);
                                metrics::write_acks_refused(1);
                            }
                        }
                    } else {
                        self.waits.pop_front();
                    }
                }
                None => match self.held.front() {
                    Some(reply) if !reply.commit => {
                        if let Some(reply) = self.held.pop_front() {
                            self.released += 1;
                            reply.deliver();
                        }
                    }
                    _ => return,
                },
            }
        }
    }

    /// The connection failed: every held reply gets the lane's error instead.
    fn fail(&mut self, error: &Bytes) {
        self.waits.clear();
        for held in self.held.drain(..) {
            if let Some(job) = held.mirror {
                job.master_lost();
            }
            held.dest.fail(error.clone());
        }
    }
}

/// `WAIT wanted timeout` as RESP.
fn wait_request(wanted: u32, timeout: Duration) -> Bytes {
    let (count, ms) = (wanted.to_string(), timeout.as_millis().to_string());
    let mut out = String::with_capacity(32);
    let _ = write!(
        out,
        "*3\r\n$4\r\nWAIT\r\n${}\r\n{count}\r\n${}\r\n{ms}\r\n",
        count.len(),
        ms.len()
    );
    Bytes::from(out)
}

/// The value of an integer reply (`:n`), else `None`.
fn reply_integer(reply: &[u8]) -> Option<i64> {
    let text = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply for a proxy waiter, and the receiver that sees when it is released; one that
    /// waits for its `WAIT` (`commit`) is a write's.
    fn reply(text: &'static str, commit: bool) -> (Release, tokio::sync::oneshot::Receiver<Bytes>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let release = Release {
            dest: Dest::Signal(tx),
            reply: Bytes::from_static(text.as_bytes()),
            mirror: None,
            commit,
            write: commit,
        };
        (release, rx)
    }

    /// Where the replies of [`recorded`] go, in the order they are handed over.
    type Log = Arc<std::sync::Mutex<Vec<(&'static str, Bytes)>>>;

    /// Writes down the reply it gets, under its name.
    #[derive(Debug)]
    struct Record(&'static str, Log);

    impl super::super::ReplyHook for Record {
        fn answered(self: Box<Self>, reply: Bytes) {
            self.1.lock().unwrap().push((self.0, reply));
        }
        fn failed(self: Box<Self>, error: Bytes) {
            self.1.lock().unwrap().push((self.0, error));
        }
    }

    /// A reply named `name` that goes to `log`: a write's (`write`), or another request's
    /// that waits for a `WAIT` or not (`commit`).
    fn recorded(log: &Log, name: &'static str, commit: bool, write: bool) -> Release {
        Release {
            dest: Dest::Mirror(Box::new(Record(name, Arc::clone(log)))),
            reply: Bytes::from(format!("+{name}\r\n")),
            mirror: None,
            commit,
            write,
        }
    }

    fn counter() -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(0))
    }

    fn released(rx: &mut tokio::sync::oneshot::Receiver<Bytes>) -> Option<Bytes> {
        rx.try_recv().ok()
    }

    #[test]
    fn wait_requests_and_answers_are_resp() {
        assert_eq!(
            &wait_request(2, Duration::from_millis(1000))[..],
            b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$4\r\n1000\r\n"
        );
        assert_eq!(reply_integer(b":3\r\n"), Some(3));
        assert_eq!(
            reply_integer(b"-ERR WAIT cannot be used with replica instances\r\n"),
            None
        );
    }

    #[test]
    fn a_batch_s_replies_wait_for_its_wait_from_its_first_write_on() {
        let master: NodeAddr = "127.0.0.1:7000".parse().unwrap();
        let mut commit = Commit::new(&master, None, &counter());
        let (read, mut read_rx) = reply("+read\r\n", false);
        let (write, mut write_rx) = reply("+OK\r\n", true);
        let (after, mut after_rx) = reply("+after\r\n", true);
        commit.reply(read);
        assert!(
            released(&mut read_rx).is_some(),
            "a read before the first write goes at once"
        );
        commit.reply(write);
        commit.reply(after);
        assert!(released(&mut write_rx).is_none() && released(&mut after_rx).is_none());
        // A read of the next batch, answered before this batch's WAIT, waits behind it.
        let (next, mut next_rx) = reply("+next\r\n", false);
        commit.waited(1, &Bytes::from_static(b":1\r\n"));
        assert!(released(&mut write_rx).is_some() && released(&mut after_rx).is_some());
        commit.reply(next);
        assert!(released(&mut next_rx).is_some());
        assert!(commit.is_empty());
    }

    #[tokio::test]
    async fn a_short_wait_holds_replies_until_the_controller_answered() {
        let master: NodeAddr = "127.0.0.1:7000".parse().unwrap();
        let (events, mut inbox) = crate::events::channel();
        let mut commit = Commit::new(&master, Some(&events), &counter());
        let (first, mut first_rx) = reply("+1\r\n", true);
        let (second, mut second_rx) = reply("+2\r\n", true);
        let (read, mut read_rx) = reply("+r\r\n", false);
        commit.reply(first);
        commit.waited(2, &Bytes::from_static(b":1\r\n"));
        let Ok(ControlEvent::AckShortfall {
            master: seen,
            wanted,
            answer,
            done,
        }) = inbox.try_recv()
        else {
            panic!("a shortfall is reported");
        };
        assert_eq!((seen, wanted, answer.as_str()), (master, 2, ":1"));
        assert!(commit.awaits_controller());
        // Later batches queue behind, even when their own WAIT was enough.
        commit.reply(second);
        commit.waited(2, &Bytes::from_static(b":2\r\n"));
        commit.reply(read);
        commit.release();
        assert!(released(&mut first_rx).is_none() && released(&mut second_rx).is_none());
        assert!(released(&mut read_rx).is_none());
        done.send(AckVerdict::Release).unwrap();
        commit.decided().await;
        commit.release();
        assert_eq!(released(&mut first_rx).as_deref(), Some(&b"+1\r\n"[..]));
        assert_eq!(released(&mut second_rx).as_deref(), Some(&b"+2\r\n"[..]));
        assert!(released(&mut read_rx).is_some());
        assert!(commit.is_empty());
        // An error from WAIT (a demoted master) is a shortfall too.
        let (third, mut third_rx) = reply("+3\r\n", true);
        commit.reply(third);
        commit.waited(1, &Bytes::from_static(b"-ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.\r\n"));
        assert!(matches!(
            inbox.try_recv(),
            Ok(ControlEvent::AckShortfall { .. })
        ));
        // The connection fails meanwhile: the held reply gets the lane's error.
        commit.fail(&Bytes::from_static(b"-ERR backend gone\r\n"));
        assert_eq!(
            released(&mut third_rx).as_deref(),
            Some(&b"-ERR backend gone\r\n"[..])
        );
        assert!(commit.is_empty());
    }

    #[tokio::test]
    async fn a_refused_acknowledgement_answers_the_writes_noreplicas_and_the_rest_as_they_are() {
        let master: NodeAddr = "127.0.0.1:7000".parse().unwrap();
        let (events, mut inbox) = crate::events::channel();
        let refused = counter();
        let mut commit = Commit::new(&master, Some(&events), &refused);
        let log = Log::default();
        // One batch: a read before its first write, two writes with a read between them.
        commit.reply(recorded(&log, "read0", false, false));
        commit.reply(recorded(&log, "set1", true, true));
        commit.reply(recorded(&log, "get", true, false));
        commit.reply(recorded(&log, "set2", true, true));
        commit.waited(1, &Bytes::from_static(b":0\r\n"));
        let Ok(ControlEvent::AckShortfall { done, .. }) = inbox.try_recv() else {
            panic!("a shortfall is reported");
        };
        // The next batch, acknowledged, and a read after it: they wait behind.
        commit.reply(recorded(&log, "set3", true, true));
        commit.waited(1, &Bytes::from_static(b":1\r\n"));
        commit.reply(recorded(&log, "read4", false, false));
        assert_eq!(
            log.lock().unwrap().len(),
            1,
            "only the read before the writes"
        );
        done.send(AckVerdict::Refuse).unwrap();
        commit.decided().await;
        commit.release();
        assert!(commit.is_empty());
        let no = ClientError::NoReplicas.to_reply();
        let seen = log.lock().unwrap().clone();
        let expected: Vec<(&str, Bytes)> = vec![
            ("read0", Bytes::from_static(b"+read0\r\n")),
            ("set1", no.clone()),
            ("get", Bytes::from_static(b"+get\r\n")),
            ("set2", no),
            ("set3", Bytes::from_static(b"+set3\r\n")),
            ("read4", Bytes::from_static(b"+read4\r\n")),
        ];
        assert_eq!(seen, expected);
        assert_eq!(refused.load(Ordering::Relaxed), 2);
        // A controller that stops without answering verified nothing either.
        commit.reply(recorded(&log, "set5", true, true));
        commit.waited(1, &Bytes::from_static(b":0\r\n"));
        drop(inbox);
        commit.release();
        assert!(commit.is_empty());
        assert_eq!(
            log.lock().unwrap().last().map(|(n, r)| (*n, r.clone())),
            Some(("set5", ClientError::NoReplicas.to_reply()))
        );
        assert_eq!(refused.load(Ordering::Relaxed), 3);
    }

    /// A write whose reply waits for one replica's acknowledgement.
    fn acked_write() -> LaneRequest {
        let mut request = LaneRequest::new(
            Bytes::from_static(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
            Dest::Discard,
            Protocol::Resp2,
        );
        request.acks = 1;
        request
    }

    /// A read.
    fn read() -> LaneRequest {
        LaneRequest::new(
            Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
            Dest::Discard,
            Protocol::Resp2,
        )
    }

    /// The `WAIT`s `send` has queued to write, by their replica counts.
    fn waits_written(send: &Sending) -> Vec<u32> {
        send.in_flight
            .iter()
            .filter_map(|r| match r.kind {
                Kind::Wait(wanted) => Some(wanted),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_connection_has_at_most_waits_in_flight_waits_out() {
        let mut send = Sending::new(Protocol::Resp2, None, Duration::from_millis(1000), 2);
        // A read-only batch gets no WAIT.
        send.take(&mut vec![read()]);
        send.seal(0);
        assert!(waits_written(&send).is_empty());
        // A batch of `n` writes, ended once `answered` WAITs were answered.
        let batch = |send: &mut Sending, n: usize, answered: u64| {
            send.take(&mut (0..n).map(|_| acked_write()).collect());
            send.seal(answered);
        };
        // Two batches of writes, two WAITs out.
        batch(&mut send, 2, 0);
        batch(&mut send, 1, 0);
        assert_eq!(waits_written(&send), vec![1, 1]);
        // A third batch waits for the oldest to answer, and one WAIT covers what came meanwhile.
        batch(&mut send, 1, 0);
        batch(&mut send, 1, 0);
        assert_eq!(waits_written(&send).len(), 2);
        send.seal(1);
        assert_eq!(waits_written(&send).len(), 3);
        send.seal(1);
        assert_eq!(waits_written(&send).len(), 3, "nothing left to cover");
        let last = send.in_flight.back().map(|r| r.kind);
        assert_eq!(last, Some(Kind::Wait(1)), "the WAIT ends the batch");
        // With one allowed, the next batch's WAIT waits for the answer.
        let mut one = Sending::new(Protocol::Resp2, None, Duration::from_millis(1000), 1);
        batch(&mut one, 1, 0);
        batch(&mut one, 1, 0);
        assert_eq!(waits_written(&one).len(), 1);
        one.seal(1);
        assert_eq!(waits_written(&one).len(), 2);
    }

    #[test]
    fn a_connection_takes_no_more_requests_while_its_waits_block_the_master() {
        let max = 64 * 1024;
        for allowed in [1_u32, 2] {
            let mut send =
                Sending::new(Protocol::Resp2, None, Duration::from_millis(1000), allowed);
            // Reads alone never block it.
            send.take(&mut vec![read()]);
            send.seal(0);
            assert!(send.takes_more(max, 0));
            // Each batch of writes puts out a WAIT; at the allowed count it takes no more.
            for out in 1..=u64::from(allowed) {
                assert!(send.takes_more(max, 0), "{out} of {allowed}");
                send.take(&mut vec![acked_write()]);
                send.seal(0);
            }
            assert_eq!(waits_written(&send).len(), allowed as usize);
            assert!(!send.takes_more(max, 0));
            // The oldest answers: it takes again.
            assert!(send.takes_more(max, 1));
        }
    }

    #[tokio::test]
    async fn a_connection_takes_no_more_requests_while_its_unwritten_bytes_pass_the_limit() {
        let set = |n: usize| {
            let mut bytes = BytesMut::new();
            let value = vec![b'v'; 1000];
            let key = format!("k{n}");
            redshard_protocol::resp::encode::request(&mut bytes, &[b"SET", key.as_bytes(), &value]);
            LaneRequest::new(bytes.freeze(), Dest::Discard, Protocol::Resp2)
        };
        let max = 4000;
        let mut send = Sending::new(Protocol::Resp2, None, Duration::from_millis(1000), 1);
        let mut taken = 0;
        while send.takes_more(max, 0) {
            send.take(&mut vec![set(taken)]);
            taken += 1;
        }
        assert_eq!(
            taken, 4,
            "three requests of ~1 KB stay under the limit, the fourth reaches it"
        );
        assert!(send.out.len() >= max);
        // A node that reads nothing: still nothing more.
        assert!(!send.takes_more(max, 0));
        // It reads part of what was written: below the limit, the connection takes again.
        let (mut node, mut proxy) = tokio::io::duplex(2048);
        let written = send.out.write_some(&mut proxy).await.unwrap();
        assert!(written > 0 && written <= 2048);
        assert!(send.takes_more(max, 0));
        let mut seen = vec![0; written];
        tokio::io::AsyncReadExt::read_exact(&mut node, &mut seen)
            .await
            .unwrap();
        assert!(seen.starts_with(b"*3\r\n$3\r\nSET\r\n$2\r\nk0\r\n"));
    }

    #[test]
    fn error_replies_are_one_line() {
        let addr: NodeAddr = "127.0.0.1:6390".parse().unwrap();
        let reply = error_reply(
            &addr,
            &LaneError::Auth("WRONGPASS bad\r\nx".into()),
            Reached::No,
        );
        assert_eq!(
            &reply[..],
            b"-ERR backend 127.0.0.1:6390 refused the proxy's credentials: WRONGPASS bad  x\r\n"
        );
    }
}
