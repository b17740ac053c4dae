//! One client connection.
//!
//! The session reads requests into one buffer, scans them without copying, and dispatches each
//! (see `dispatch.rs`): forwarded as its original bytes to the lane of its key's slot, split
//! across shards and merged, or answered by the proxy. Every request reserves its place in the
//! [`ReplyQueue`] when it is dispatched, so replies leave in request order whatever order the
//! shards answer in. Reading, dispatching and writing all run in one task: a client that does
//! not read its replies stops being read from, and its requests stop being forwarded, once
//! `output_buffer_soft_bytes` of replies are held for it, `max_inflight_reply_bytes` of replies
//! are expected from its requests in flight, or `max_pipeline` replies are outstanding. One
//! exception saves a wake-up per request of a client with one request at a time: while the
//! session waits with nothing that a reply leaving would change (`Session::nothing_pending`,
//! in a plain state), the lane that receives its one outstanding reply writes it to the socket
//! itself (see `crate::replies`).
//!
//! A session runs over plain TCP or over TLS ([`ClientStream`]); it is generic over the
//! stream, so the TCP session is the readiness-driven code it always was.
//!
//! See `LIFECYCLE.md` beside this file for the session's states.

mod acl;
mod admin;
mod client;
pub(crate) mod dispatch;
mod info;
mod local;
pub mod merge;
pub mod park;
mod pubsub;
mod reply_mode;
mod scan;
mod split;
mod stream;
mod tracking;
mod txn;

pub use client::disconnect_users;
pub use local::constant_time_eq;
pub use stream::{ClientStream, Tcp};

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::router::GateState;
use tracing::{debug, warn};

use crate::backend::PrivateLane;
use crate::clients::ClientInfo;
use crate::outbuf::OutBuf;
use crate::replies::{Completed, Meta, ReplyQueue};
use crate::shutdown::Shutdown;
use crate::state::ProxyState;
use redshard_metrics as metrics;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::resp::{reply, FrameKind, Protocol, RequestScanner};

/// Least room made in the read buffer before a read.
const READ_MIN: usize = 1000;
/// A client that keeps sending keeps read and output buffers up to this size between
/// requests (no allocation per request); a larger one (a big request or reply) is freed as
/// soon as it is empty, and every buffer once the client has been idle for a whole idle-sweep
/// interval (see [`ReplyQueue::idle_long`]), so an idle client holds no buffer memory.
const BUF_KEEP: usize = 16 * 1024;
/// Most room made before a read; the room doubles after a read that filled it (and half of
/// it at least) and halves after a read that used under a quarter of it.
const READ_MAX: usize = 64 * 1024;

/// Sleeps until `deadline`; never completes for `None` (the branch is disabled then anyway).
async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        // Boxed: a timer is 100+ bytes that every idle session would carry, and deadlines
        // are rare (an unauthenticated client, an output buffer over its soft limit).
        Some(deadline) => Box::pin(tokio::time::sleep_until(deadline)).await,
        None => std::future::pending().await,
    }
}

/// The settings one round of the session loop works with, read from the live configuration
/// (a reload applies from the next round): once before the round's wait, for what the wait
/// needs, and once after it, for the bookkeeping; not once per use. Not kept across the
/// wait, which would grow every connection's future (see `park::session_task`). Read from
/// [`crate::state::LiveSettings::hot`]: a few plain loads, not an `ArcSwap` load.
type RoundConfig = crate::state::HotSettings;

/// The client `id` is gone: out of the shutdown registry and the client list.
fn leave(shutdown: &Shutdown, state: &ProxyState, id: u64) {
    state.tracking.disable(id);
    shutdown.unregister(id);
    state.clients.remove(id);
}

/// Why a session stops reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Still serving.
    Open,
    /// No more requests will be read (QUIT, protocol error, EOF, shutdown); close once the
    /// outstanding replies are written.
    AfterReplies,
}

/// The per-request state that dispatch needs, separate from the read buffer and the scanner
/// so that a request's arguments can be borrowed while it is dispatched.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The proxy's shared state.
    pub state: Arc<ProxyState>,
    /// This client's replies, in order.
    pub queue: Arc<ReplyQueue>,
    /// This client in the proxy's client list.
    pub client: Arc<ClientInfo>,
    /// Whether AUTH succeeded (always true when no proxy password is set).
    pub authenticated: bool,
    /// Set by QUIT and protocol errors.
    pub closing: Closing,
    /// Scratch space for key positions, reused by every request.
    pub keys: smallvec::SmallVec<[usize; 8]>,
    /// For the script request being dispatched, called with no key (`EVAL script 0`): the
    /// keys its body names as literals, which route it as declared keys would
    /// (`redshard_protocol::command::script_keys`); empty for every other request.
    pub script_keys: Vec<bytes::Bytes>,
    /// The client's protocol (HELLO); picks the backend lanes that answer in it.
    pub protocol: Protocol,
    /// The database the client selected (`SELECT`, 0 at first): every request it sends to a
    /// node runs there (the lanes switch with a pipelined `SELECT`).
    pub db: u16,
    /// Set when a request went where later ones do not follow it (another protocol's lanes,
    /// the private connection, subscription connections): nothing more is dispatched until
    /// every earlier reply is out, so requests before and after cannot overtake each other.
    pub barrier: bool,
    /// The client's own backend connection (transactions, blocking commands), if it has one.
    pub private: Option<PrivateLane>,
    /// The transaction being queued, between MULTI and EXEC.
    /// Boxed: most clients never queue one, and every session's future carries this room
    /// (see `park::session_task`).
    pub tx: Option<Box<txn::Transaction>>,
    /// The slot of the keys WATCHed on the private lane, until EXEC, DISCARD or UNWATCH.
    pub watch: Option<redshard_config::Slot>,
    /// Subscriptions and their connections, while the client has any (boxed: most clients
    /// never subscribe, and every session would carry its room).
    pub pubsub: Option<Box<pubsub::PubSub>>,
    /// CLIENT TRACKING's settings, while it is on (boxed: most clients never track).
    pub tracking: Option<Box<tracking::ClientTracking>>,
    /// The level whose backend user the client's scripts run as (see
    /// [`crate::users::LiveUser::scripts`]).
    pub access: redshard_config::Access,
    /// The user name the client authenticated as, for refusals (empty: `default`).
    pub user: String,
    /// The user's rules, when they restrict anything (`None`: every command, key and
    /// channel allowed, no check per request), as of [`Ctx::users_seen`].
    pub acl: Option<Arc<crate::users::LiveUser>>,
    /// The [`crate::users::Users::generation`] `acl` and `access` were looked up at.
    pub users_seen: u64,
    /// Failed AUTH attempts on this connection (each delays the next answer more).
    pub auth_failures: u32,
    /// The command of the request being dispatched, once resolved (labels its reply entry).
    pub(crate) current_cmd: Option<&'static redshard_protocol::command::CommandSpec>,
    /// A WAIT may be outstanding, which (with timeout 0) never completes: when the client
    /// leaves, the session ends at once instead of waiting for its replies.
    pub waiting: bool,
    /// The wait for a paused shard passed `[health] failover_wait_ms`: the held request gets
    /// `-CLUSTERDOWN` instead of waiting again.
    pub(crate) pause_expired: bool,
    /// The keys of the held request have been moved by the running migration: send it.
    pub(crate) migrated: bool,
    /// Moving the keys of the held request failed: answer it with this error.
    pub(crate) migration_failed: Option<String>,
    /// The client is in MONITOR mode (registered in the state's monitors until RESET or it
    /// leaves).
    pub(crate) monitoring: bool,
    /// Set by dispatch, only while some client monitors, when the request is one to show
    /// them; the session feeds it once the request is no longer held.
    pub(crate) monitor_feed: bool,
    /// Replies silenced by CLIENT REPLY OFF / SKIP; `None` until the client sends one
    /// (boxed: every session's future carries this room).
    pub(crate) silence: Option<Box<reply_mode::Silence>>,
}

/// How [`Session::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a parked session still holds an open connection and a client-list entry"]
pub enum Exit {
    /// The connection is closed and the client gone from the client list.
    Closed,
    /// Idle: the session is to be parked (`session::park`); the connection is still open.
    Park,
}

/// One client connection being served, over `S` (plain TCP unless said otherwise).
#[derive(Debug)]
pub struct Session<S = Tcp> {
    /// The client's connection.
    stream: S,
    /// Bytes read and not yet dispatched; the request being scanned starts at index 0.
    rbuf: BytesMut,
    /// Room to make in `rbuf` before the next read, between [`READ_MIN`] and [`READ_MAX`]:
    /// follows how much the client sends at a time.
    read_room: usize,
    /// `rbuf` grew past [`BUF_KEEP`]: it is freed once empty instead of kept for the next
    /// read. (Once requests are split off, `rbuf`'s capacity only shows the room left at
    /// the end of its allocation, not the allocation's size.)
    rbuf_large: bool,
    /// Resumable scanner of the request at the front of `rbuf`.
    scanner: RequestScanner,
    /// Replies waiting for the socket.
    out: OutBuf,
    /// Dispatch state.
    ctx: Ctx,
    /// The proxy's drain signal.
    shutdown: Shutdown,
    /// Complete requests wait in `rbuf` because `max_pipeline`, the client's memory budget or
    /// a protocol barrier stopped dispatching; retried whenever replies leave the queue.
    held_back: bool,
    /// Dispatching stopped because of the client's memory budget (replies held at
    /// `output_buffer_soft_bytes`, or expected in flight at `max_inflight_reply_bytes`):
    /// nothing more is read from the client either, so the kernel's socket buffers fill and
    /// push back on it.
    over_budget: bool,
    /// Since when the reply bytes held have been above `output_buffer_soft_bytes`.
    over_soft_since: Option<Instant>,
    /// When an unauthenticated connection is closed (with a proxy password).
    auth_deadline: Option<tokio::time::Instant>,
    /// What the request at the front of the read buffer waits for before it is dispatched
    /// again.
    paused: Option<Hold>,
}

impl<S: ClientStream> Session<S> {
    /// A session for an accepted client.
    ///
    /// # Errors
    /// The socket's addresses cannot be read (the client already left).
    pub fn new(stream: S, state: Arc<ProxyState>, shutdown: Shutdown) -> io::Result<Self> {
        let client = state.clients.add(stream.peer_addr()?, stream.local_addr()?);
        client.set_fd(stream.raw_fd());
        let queue = ReplyQueue::new();
        shutdown.register(client.id, &queue);
        Ok(Self::with_client(stream, state, shutdown, client, queue))
    }

    /// A session for `client`, already in the client list, whose replies go through `queue`,
    /// already registered with `shutdown`; with every per-connection setting at its start.
    fn with_client(
        stream: S,
        state: Arc<ProxyState>,
        shutdown: Shutdown,
        client: Arc<ClientInfo>,
        queue: Arc<ReplyQueue>,
    ) -> Self {
        let scanner = RequestScanner::new(state.scan_limits());
        let authenticated = state.users.open_by_default();
        client.attach(&queue);
        if let Some(socket) = stream.shared_socket() {
            queue.attach_socket(socket);
        }
        Self {
            stream,
            rbuf: BytesMut::new(),
            read_room: READ_MIN,
            rbuf_large: false,
            scanner,
            out: OutBuf::new(),
            ctx: Ctx {
                state,
                queue,
                client,
                authenticated,
                closing: Closing::Open,
                keys: smallvec::SmallVec::new(),
                script_keys: Vec::new(),
                protocol: Protocol::Resp2,
                barrier: false,
                private: None,
                tx: None,
                watch: None,
                pubsub: None,
                tracking: None,
                waiting: false,
                pause_expired: false,
                migrated: false,
                migration_failed: None,
                current_cmd: None,
                monitoring: false,
                monitor_feed: false,
                silence: None,
                db: 0,
                auth_failures: 0,
                access: redshard_config::Access::All,
                user: String::new(),
                acl: None,
                // Not yet looked up: the first request does.
                users_seen: u64::MAX,
            },
            shutdown,
            held_back: false,
            over_budget: false,
            over_soft_since: None,
            auth_deadline: None,
            paused: None,
        }
    }

    /// Serves the client until it leaves, QUITs, breaks the protocol, or the proxy shuts down
    /// ([`Exit::Closed`], everything released), or until it has been idle long enough to park
    /// ([`Exit::Park`], only over plain TCP: the connection and the client's entry stay open,
    /// and the caller hands them to the park room, see `session::park`).
    pub async fn run(&mut self) -> Exit {
        let orderly = match self.serve().await {
            Ok(Exit::Park) => return Exit::Park,
            Ok(Exit::Closed) => true,
            Err(e) => {
                debug!(client = %self.ctx.client.addr, error = %e, "client connection ended");
                false
            }
        };
        self.stream.close();
        admin::stop_monitoring(&mut self.ctx);
        // Replies still on their way are dropped on arrival, and those held are freed now.
        self.ctx.queue.close();
        self.ctx.client.output_bytes.store(0, Ordering::Relaxed);
        // Closed for the client: out of CLIENT LIST now, not after the linger.
        self.ctx.state.clients.remove(self.ctx.client.id);
        if orderly {
            self.linger().await;
        }
        leave(&self.shutdown, &self.ctx.state, self.ctx.client.id);
        Exit::Closed
    }

    /// Whether the session holds nothing but the connection and its settings: no request,
    /// reply or output in flight, no transaction, WATCH, subscription or held request,
    /// authenticated, and parking enabled (`[limits] idle_park_ms`, and a park room that
    /// takes guests). A private backend connection without a WATCH holds nothing either (it
    /// is opened on demand): parking closes it.
    fn parkable(&self) -> bool {
        let ctx = &self.ctx;
        S::PARKABLE
            && self.plain_state()
            && !ctx.state.tracking.is_target(ctx.client.id)
            && self.paused.is_none()
            && !self.held_back
            && self.auth_deadline.is_none()
            && self.over_soft_since.is_none()
            && self.rbuf.is_empty()
            && self.out.is_empty()
            && !self.stream.has_pending_output()
            && ctx.queue.is_empty()
            && !ctx.state.live.now().limits.idle_park.is_zero()
            && park::room_of(&ctx.state).is_some_and(park::room::Room::accepts)
    }

    /// Ends an orderly close without resetting the connection: the proxy closes its side
    /// after the last reply, then reads and drops what the client still sends until the
    /// client closes its side too, for at most `[limits] close_linger_ms`. Closing a socket
    /// with unread input makes the kernel answer with a reset and throw away what it had not
    /// sent yet, so a client still sending (a pipeline during a shutdown drain, requests after
    /// QUIT) could lose replies already written for it.
    async fn linger(&mut self) {
        let linger = self.ctx.state.live.now().limits.close_linger;
        if linger.is_zero() {
            return;
        }
        self.stream.half_close();
        // Boxed, like the session's other timers: only closing connections carry one.
        let mut timer = Box::pin(tokio::time::sleep(linger));
        loop {
            self.rbuf.clear();
            self.rbuf.reserve(READ_MIN);
            tokio::select! {
                read = self.stream.read_buf(&mut self.rbuf) => match read {
                    Ok(n) if n > 0 => {}
                    // The client closed too (or the connection failed): done.
                    _ => return,
                },
                () = &mut timer => return,
            }
        }
    }

    async fn serve(&mut self) -> io::Result<Exit> {
        if !self.ctx.authenticated {
            let timeout = self.ctx.state.live.now().limits.auth_timeout;
            self.auth_deadline = Some(tokio::time::Instant::now() + timeout);
        }
        let mut draining = false;
        // Entries in the reply queue: as the end of the previous round saw them (the output
        // limits' look at the queue, the last thing that round did with it), not a lock of
        // its own each round.
        let mut backlog = self.ctx.queue.len();
        loop {
            if self.ctx.closing == Closing::AfterReplies && backlog == 0 && self.out.is_empty() {
                return Ok(Exit::Closed);
            }
            if self.ctx.authenticated {
                self.auth_deadline = None;
            }
            // `[limits]` can change with a reload: read them each round, and keep only what
            // the wait needs across it (this future is every connection's memory).
            let (reading, deadline) = {
                let round = self.ctx.state.live.hot();
                let reading = self.ctx.closing == Closing::Open
                    && backlog < round.max_pipeline
                    && !self.over_budget;
                let soft_deadline = self
                    .over_soft_since
                    .map(|since| tokio::time::Instant::from_std(since) + round.soft_for);
                // One timer for both deadlines keeps the per-connection future small.
                let deadline = match (self.auth_deadline, soft_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (reading, deadline)
            };
            let pausing = self.paused.is_some();
            let mut received = false;
            // Readiness first, buffers only once there is something to read or write.
            tokio::select! {
                biased;
                ready = self.stream.writable(), if !self.out.is_empty() || self.stream.has_pending_output() => {
                    ready?;
                    self.stream.try_write(&mut self.out)?;
                }
                () = self.ctx.queue.notified() => {}
                ready = self.stream.readable(), if reading => {
                    ready?;
                    self.make_read_room();
                    let spare = self.rbuf.capacity() - self.rbuf.len();
                    // A read into an empty buffer starts what the client sent next; one
                    // after a partial request may only be the rest of what a full buffer
                    // cut (it says nothing of how much the client sends at a time).
                    let fresh = self.rbuf.is_empty();
                    // A read that does not fill the buffer marks the socket drained, which
                    // saves the extra read that would only return EAGAIN: `read_now` (TCP),
                    // else one poll of AsyncRead, which does the same.
                    let read = match self.stream.read_now(&mut self.rbuf) {
                        Some(read) => read,
                        None => {
                            let mut read = std::pin::pin!(self.stream.read_buf(&mut self.rbuf));
                            let polled =
                                std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx)))
                                    .await;
                            let Poll::Ready(read) = polled else {
                                // Spurious readiness: wait again (the queue may have
                                // changed during the wait).
                                backlog = self.ctx.queue.len();
                                continue;
                            };
                            read
                        }
                    };
                    // A TLS client that closes without close_notify has still closed.
                    let read = match read {
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                        read => read,
                    };
                    match read {
                        Ok(0) => {
                            if self.ctx.private.is_some() || self.ctx.waiting {
                                // It may be blocked (BLPOP 0, WAIT 1 0) on something only
                                // closing frees: the client is gone, so end now.
                                return Ok(Exit::Closed);
                            }
                            // The client closed its side: answer what it sent, then close.
                            self.ctx.closing = Closing::AfterReplies;
                        }
                        Ok(n) => {
                            self.ctx.queue.touch();
                            metrics::bytes_in(n as u64);
                            // Grows when a read filled the room and was a large part of
                            // it (a read that only filled the end of the buffer says
                            // little); shrinks when a fresh read used little of it.
                            if n >= spare && n >= self.read_room / 2 {
                                self.read_room = (self.read_room * 2).min(READ_MAX);
                            } else if fresh && n < self.read_room / 4 {
                                self.read_room = (self.read_room / 2).max(READ_MIN);
                            }
                            received = true; // dispatched below
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                outcome = wait_hold(&mut self.paused), if pausing => {
                    self.paused = None;
                    match outcome {
                        Released::Gate { expired } => self.ctx.pause_expired = expired,
                        Released::Migrated(Ok(())) => self.ctx.migrated = true,
                        Released::Migrated(Err(e)) => self.ctx.migration_failed = Some(e),
                        Released::Unpaused => {}
                    }
                    self.held_back = true;
                }
                () = sleep_until_opt(deadline), if deadline.is_some() => {
                    if self.auth_deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                        debug!(client = %self.ctx.client.addr, "closing a connection that did not authenticate in time");
                        return Ok(Exit::Closed);
                    }
                    // Otherwise the output soft limit: checked below, after the bookkeeping.
                }
                // Shutdown wakes the session through its reply queue (see `crate::shutdown`).
                // After the I/O branches: the session drains only when nothing else is ready,
                // so what the client already sent is read first (closing a socket with unread
                // input would reset the connection, losing replies in flight to it).
                () = std::future::ready(()), if !draining
                    && self.ctx.closing == Closing::Open
                    && self.shutdown.is_draining() =>
                {
                    draining = true;
                    if (self.ctx.private.is_some() || self.ctx.waiting) && !self.ctx.queue.is_empty()
                    {
                        // Blocked on its private connection: it could wait forever.
                        return Ok(Exit::Closed);
                    }
                    self.ctx.closing = Closing::AfterReplies;
                }
                // The idle sweep woke it after a whole interval without input: hand the
                // connection to the park room, which frees this task (see `park`). Last,
                // for the same reason as draining, which wins when both are ready.
                () = std::future::ready(()), if self.ctx.queue.idle_long() && self.parkable() => {
                    return Ok(Exit::Park);
                }
            }
            if let Some(how) = self.ctx.client.take_unblock() {
                self.unblock(how);
            }
            let round = self.ctx.state.live.hot();
            if received {
                self.dispatch_buffered(&round);
                if self.rbuf.len() > round.max_query {
                    self.ctx
                        .queue
                        .push_ready(ClientError::QueryBufferLimit.to_reply());
                    self.ctx.closing = Closing::AfterReplies;
                }
            }
            // A turn woken by the client's requests takes replies only if one may have become
            // complete since the select looked at the queue: the previous turn took every
            // complete one (its output was not over the soft limit, or this one's would not
            // be empty), and a completed front entry raises the flag the select lowered.
            if !received
                || !self.out.is_empty()
                || self.ctx.silence.is_some()
                || self.ctx.queue.may_be_ready()
            {
                self.take_replies(&round);
            }
            if self.ctx.queue.is_broken() && self.ctx.closing == Closing::Open {
                // A subscription connection failed, or CLIENT KILL: finish what is ready,
                // then close.
                debug!(client = %self.ctx.client.addr, "closing a client that was killed or whose subscription connection failed");
                self.ctx.closing = Closing::AfterReplies;
                self.stream.try_write(&mut self.out)?;
                return Ok(Exit::Closed);
            }
            if self.held_back {
                // Replies left the queue: requests held back by max_pipeline or a barrier
                // may go now.
                self.dispatch_buffered(&round);
                self.take_replies(&round);
            }
            // Write at once; the writable branch above only handles a full socket.
            self.stream.try_write(&mut self.out)?;
            backlog = self.check_output_limits(&round)?;
            self.release_buffers();
        }
    }

    /// CLIENT UNBLOCK of this client: its blocking command gets the proxy's answer (`how`),
    /// and the private connection it waits on is closed, which ends it on the node.
    ///
    /// The blocked state names the command's reply entry: a reply the node sent meanwhile
    /// filled it first (then this answer is dropped), and the state ends here rather than
    /// when the closed connection drops the request, so a next blocking command is not seen
    /// as answered.
    fn unblock(&mut self, how: crate::clients::Unblock) {
        let Some(seq) = self.ctx.client.blocked_entry() else {
            return; // Answered in the meantime.
        };
        let reply = client::unblocked_reply(self.ctx.client.last_command(), how, self.ctx.protocol);
        self.ctx.queue.part(seq, 0).deliver(reply);
        self.ctx.state.clients.unblocked(&self.ctx.client, seq);
        self.ctx.private = None;
    }

    /// Makes room in `rbuf` for the next read. Everything read so far dispatched, at least
    /// half the room: `reserve` takes the buffer back in place once no request still holds a
    /// part of it, so a client that sends a pipeline, waits for its replies and sends the next
    /// gets each in one read of the same buffer. A buffer more than twice the room (the client
    /// sends less than it did) is replaced by one of the room: `reserve` alone would keep
    /// allocating at least the largest this buffer ever had (`BytesMut` remembers it).
    fn make_read_room(&mut self) {
        let spare = self.rbuf.capacity() - self.rbuf.len();
        if self.rbuf.is_empty() {
            if spare < self.read_room / 2 {
                self.rbuf.reserve(self.read_room);
            }
            if self.rbuf.capacity() > 2 * self.read_room {
                self.rbuf = BytesMut::with_capacity(self.read_room);
            }
        } else if spare < self.read_room / 4 {
            self.rbuf.reserve(self.read_room);
        }
        self.rbuf_large |= self.rbuf.capacity() > BUF_KEEP;
    }

    /// Frees the empty read and output buffers of an idle client, and large ones of any
    /// client (see [`BUF_KEEP`]).
    fn release_buffers(&mut self) {
        let idle = self.ctx.queue.idle_long();
        // Not by `capacity`: an empty buffer whose requests were split off may have no room
        // left and still hold their allocation.
        if self.rbuf.is_empty() && (idle || self.rbuf_large) {
            self.rbuf = BytesMut::new();
            self.rbuf_large = false;
        }
        // The scanner keeps a little for the next request itself (see `RequestScanner::reset`).
        if idle && self.rbuf.is_empty() && self.ctx.queue.is_empty() {
            self.scanner.release();
        }
        self.out.release_if_empty(if idle { 0 } else { BUF_KEEP });
    }

    /// Disconnects a client whose held reply bytes (received from the nodes and waiting in
    /// its reply queue, and in its output buffer) passed the hard limit, or stayed above the
    /// soft limit too long (like Redis's `client-output-buffer-limit`). Returns the entries in
    /// the reply queue, from the same look.
    ///
    /// The same look offers the queue to write a reply straight to the client's socket
    /// while the session waits with nothing that a reply leaving would change (see
    /// [`Session::nothing_pending`] and `crate::replies`).
    fn check_output_limits(&mut self, round: &RoundConfig) -> io::Result<usize> {
        // No state that treats replies specially (a transaction, subscriptions, tracking,
        // MONITOR, CLIENT REPLY, a private connection, WAIT): read once for both uses below.
        let plain = self.ctx.private.is_none() && self.plain_state();
        let offer = (plain && self.nothing_pending()).then_some(crate::replies::Offer {
            max_pipeline: round.max_pipeline,
            slowlog_us: round.slowlog.log_slower_than_us,
        });
        // The same look holds the replies of the requests in flight until all are in (see
        // `ReplyQueue::load_offering`), unless one of them may wait long: a blocking command
        // (its private connection), a WAIT, a transaction, a subscription.
        let hold = (round.coalesce_replies && plain).then_some(round.coalesce_max_bytes);
        let load = self.ctx.queue.load_offering(round.hard_bytes, offer, hold);
        let pending = load.held + self.out.len();
        self.ctx
            .client
            .output_bytes
            .store(pending, Ordering::Relaxed);
        if pending > round.hard_bytes {
            warn!(client = %self.ctx.client.addr, pending, "closing a client over output_buffer_hard_bytes");
            return Err(io::Error::other("output buffer hard limit"));
        }
        if pending > round.soft_bytes {
            let since = *self.over_soft_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= round.soft_for {
                warn!(
                    client = %self.ctx.client.addr,
                    pending,
                    "closing a client over output_buffer_soft_bytes for too long"
                );
                return Err(io::Error::other("output buffer soft limit"));
            }
        } else {
            self.over_soft_since = None;
        }
        Ok(load.entries)
    }

    /// Whether the session, about to wait, has nothing of its own that needs it to see its
    /// replies leave: no output, nothing held back or held, no deadline. With the plain state
    /// and no private connection besides (see [`Session::check_output_limits`]), the one reply
    /// it waits for may be written to the client by whoever delivers it, with its metrics,
    /// without waking the session.
    fn nothing_pending(&self) -> bool {
        self.out.is_empty()
            && !self.held_back
            && !self.over_budget
            && self.paused.is_none()
            && self.over_soft_since.is_none()
            && self.auth_deadline.is_none()
            && !self.stream.has_pending_output()
    }

    /// The connection state both parking and direct reply writes need: authenticated, open,
    /// no barrier or WAIT, no transaction, WATCH, subscription, tracking, MONITOR or CLIENT
    /// REPLY state, and no held request's outcome pending.
    fn plain_state(&self) -> bool {
        let ctx = &self.ctx;
        ctx.authenticated
            && ctx.closing == Closing::Open
            && !ctx.barrier
            && !ctx.waiting
            && ctx.tx.is_none()
            && ctx.watch.is_none()
            && ctx.pubsub.is_none()
            && ctx.tracking.is_none()
            && !ctx.monitoring
            && ctx.silence.is_none()
            && !ctx.pause_expired
            && !ctx.migrated
            && ctx.migration_failed.is_none()
    }

    /// Moves every complete reply from the front of the queue to the output buffer, until the
    /// output passes the soft limit: the rest waits in the queue, where it counts towards the
    /// client's limits all the same.
    fn take_replies(&mut self, round: &RoundConfig) {
        if self.out.len() > round.soft_bytes {
            // Not looking at the queue: still, what this session writes next must not
            // race a reply written straight to the socket.
            self.ctx.queue.withdraw_offer();
            return;
        }
        let out = &mut self.out;
        let state = &self.ctx.state;
        let client = &self.ctx.client;
        let slowlog = round.slowlog;
        let mut silence = self.ctx.silence.as_deref_mut();
        // One clock read for every reply taken now: they leave together. Read at the first
        // labelled reply, not before looking: most calls (a turn of the loop woken by the
        // client's request, not by a reply) take nothing.
        let mut now = None;
        self.ctx.queue.take_ready(|completed, meta, seq| {
            // CLIENT REPLY OFF / SKIP: dropped here, after keeping its place in the queue.
            let silenced = silence.as_deref_mut().is_some_and(|s| s.drops(seq));
            let failed = match completed {
                Completed::Reply(bytes) => {
                    let failed = reply::is_error(&bytes);
                    if !silenced {
                        out.push(bytes);
                    }
                    failed
                }
                Completed::Gathered { parts, plan } => {
                    let failed = parts.iter().any(|p| reply::is_error(p));
                    if !silenced {
                        merge::merge(&parts, plan, out);
                    }
                    failed
                }
            };
            if let Some(meta) = meta {
                let took = now
                    .get_or_insert_with(Instant::now)
                    .saturating_duration_since(meta.start);
                metrics::command_spec(meta.cmd, took, failed);
                if slowlog.log_slower_than_us >= 0
                    && took.as_micros() >= u128::from(slowlog.log_slower_than_us.unsigned_abs())
                {
                    let name = client.fields().name.clone();
                    state.slowlog.record(
                        &meta.request,
                        took,
                        slowlog.log_slower_than_us,
                        slowlog.max_len,
                        &client.addr.to_string(),
                        &name,
                    );
                }
            }
        });
        if self
            .ctx
            .silence
            .as_deref()
            .is_some_and(reply_mode::Silence::idle)
        {
            self.ctx.silence = None;
        }
    }

    /// Dispatches every complete request in the read buffer.
    fn dispatch_buffered(&mut self, round: &RoundConfig) {
        if self.paused.is_some() {
            // The front request waits for a shard's gate.
            return;
        }
        let max_pipeline = round.max_pipeline;
        let table = self.ctx.state.router.load();
        let mut count = 0u64;
        self.held_back = false;
        self.over_budget = false;
        // One clock read for the requests dispatched now: they arrived in the same read.
        let start = Instant::now();
        // CLIENT LIST's `idle`: a store only when the second changed.
        self.ctx.client.touch(start);
        // The label of the request just dispatched, put on its (newest) reply entry with the
        // next look at the budget: one lock, not two.
        let mut label = None;
        while self.ctx.closing == Closing::Open {
            // The client's budget: one add and compare per request, on what its queue counts.
            let load = self
                .ctx
                .queue
                .label_and_load(label.take(), round.hard_bytes);
            if load.held + self.out.len() >= round.soft_bytes
                || (load.waiting > 0 && load.inflight_bytes() >= round.inflight_bytes)
            {
                self.over_budget = true;
                self.held_back = true;
                break;
            }
            if load.entries >= max_pipeline || (self.ctx.barrier && load.entries > 0) {
                self.held_back = true;
                break;
            }
            self.ctx.barrier = false;
            let frame = match self.scanner.scan(&self.rbuf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    metrics::protocol_error();
                    self.ctx
                        .queue
                        .push_ready(ClientError::Protocol(e).to_reply());
                    self.ctx.closing = Closing::AfterReplies;
                    break;
                }
            };
            if frame.kind == FrameKind::Empty {
                self.rbuf.advance(frame.len);
                self.scanner.reset();
                continue;
            }
            self.ctx.current_cmd = None;
            let action = dispatch::dispatch(&mut self.ctx, &table, self.scanner.args(&self.rbuf));
            if matches!(action, dispatch::Action::HoldBack) {
                // The frame stays scanned; it is dispatched again once the queue is empty.
                self.ctx.barrier = true;
                self.held_back = true;
                break;
            }
            if let dispatch::Action::ClientPause(until, changes) = action {
                // The frame stays scanned; it is dispatched again when the pause changes or
                // ends.
                self.paused = Some(Hold::ClientPause(Box::new((changes, until))));
                break;
            }
            if let dispatch::Action::Pause(gate) = action {
                // The frame stays scanned; it is dispatched again when the gate opens.
                let wait = self.ctx.state.live.now().health.failover_wait;
                self.paused = Some(Hold::Gate(gate, tokio::time::Instant::now() + wait));
                break;
            }
            if let dispatch::Action::Migrate(keys) = action {
                // The frame stays scanned; it is dispatched again once its keys have moved.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let state = Arc::clone(&self.ctx.state);
                tokio::spawn(async move {
                    let moved = state.migrations.ensure_moved(&state.router, &keys).await;
                    let _ = tx.send(moved.map(|_| ()));
                });
                self.paused = Some(Hold::Migration(rx));
                break;
            }
            self.ctx.pause_expired = false;
            self.ctx.migrated = false;
            if std::mem::take(&mut self.ctx.monitor_feed) {
                if let Some(spec) = self.ctx.current_cmd {
                    let limit = self.ctx.state.live.now().limits.monitor_buffer_bytes;
                    self.ctx.state.monitors.feed(
                        spec,
                        &self.scanner.args(&self.rbuf),
                        (self.ctx.db, &self.ctx.client.addr),
                        limit,
                    );
                }
            }
            // Where this request's reply entries start, for CLIENT REPLY SKIP.
            let first_seq = self
                .ctx
                .silence
                .is_some()
                .then(|| self.ctx.queue.next_seq());
            count += 1;
            let bytes = if frame.kind == FrameKind::Inline {
                let bytes = bytes::Bytes::copy_from_slice(self.scanner.inline_resp());
                self.rbuf.advance(frame.len);
                bytes
            } else {
                self.rbuf.split_to(frame.len).freeze()
            };
            self.scanner.reset();
            let request = bytes.clone();
            dispatch::finish(&mut self.ctx, &table, action, bytes);
            tracking::after_dispatch(&mut self.ctx);
            if let Some(first) = first_seq {
                let next = self.ctx.queue.next_seq();
                if let Some(silence) = self.ctx.silence.as_deref_mut() {
                    silence.dispatched(first, next);
                }
            }
            label = self.ctx.current_cmd.take().map(|cmd| Meta {
                cmd,
                start,
                request,
            });
        }
        if let Some(meta) = label {
            // Closing (QUIT) ended the loop before the next look.
            self.ctx.queue.label_last(meta);
        }
        // The replies of a read's requests leave together, even when some came back while
        // the rest were being dispatched (another worker thread's lane was quicker): the
        // hold starts here, before this turn takes any reply (see `ReplyQueue::hold_read`).
        // Not for a request at a time (no second reply to wait for), nor in a state that
        // treats replies specially (see `Session::check_output_limits`).
        if count >= 2 && round.coalesce_replies && self.ctx.private.is_none() && self.plain_state()
        {
            self.ctx.queue.hold_read(round.coalesce_max_bytes);
        }
        // A request held back (not sent) had its read recorded all the same.
        tracking::after_dispatch(&mut self.ctx);
        self.ctx
            .state
            .clients
            .total_commands
            .fetch_add(count, Ordering::Relaxed);
    }
}

/// What a held request waits for.
#[derive(Debug)]
enum Hold {
    /// A paused shard's gate, until a deadline.
    Gate(watch::Receiver<GateState>, tokio::time::Instant),
    /// The move of its keys by the running migration.
    Migration(tokio::sync::oneshot::Receiver<Result<(), String>>),
    /// A CLIENT PAUSE, until it changes (UNPAUSE, another PAUSE) or its end. Boxed: rare, and
    /// unboxed it would grow every session's future past its allocation class (see
    /// `park::session_task`).
    ClientPause(
        Box<(
            watch::Receiver<Option<crate::clients::Pause>>,
            tokio::time::Instant,
        )>,
    ),
}

/// How a hold ended.
enum Released {
    /// The gate opened, or the wait `expired`.
    Gate {
        /// The wait passed `[health] failover_wait_ms`.
        expired: bool,
    },
    /// The keys moved, or could not be.
    Migrated(Result<(), String>),
    /// The CLIENT PAUSE changed or ended (dispatching again checks it again).
    Unpaused,
}

/// Waits until the hold ends.
async fn wait_hold(hold: &mut Option<Hold>) -> Released {
    match hold.as_mut() {
        None => std::future::pending().await,
        Some(Hold::Gate(gate, deadline)) => {
            let deadline = *deadline;
            // Boxed: every session's future holds room for this wait, used by few.
            Box::pin(async move {
                tokio::select! {
                    _ = gate.wait_for(|s| *s != GateState::Paused) => Released::Gate { expired: false },
                    () = tokio::time::sleep_until(deadline) => Released::Gate { expired: true },
                }
            })
            .await
        }
        Some(Hold::ClientPause(pause)) => {
            // No binding but the box lives across the wait (each would take room in every
            // session's future).
            Box::pin(async move {
                let (changes, until) = &mut **pause;
                tokio::select! {
                    _ = changes.changed() => {}
                    () = tokio::time::sleep_until(*until) => {}
                }
            })
            .await;
            Released::Unpaused
        }
        Some(Hold::Migration(rx)) => Released::Migrated(
            rx.await
                .unwrap_or_else(|_| Err("the move was abandoned".into())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// A session for a client connected over loopback, with one shard that is never
    /// contacted; and the client's end. Its shutdown signal's trigger is gone, so a running
    /// session drains at once: [`serving_session`] keeps it.
    pub(super) async fn session() -> (Session, TcpStream) {
        let (session, client, _trigger) = serving_session().await;
        (session, client)
    }

    /// [`session`], and the trigger of its shutdown signal, for a test that runs it: the
    /// session serves until the trigger fires or is dropped.
    pub(super) async fn serving_session() -> (Session, TcpStream, crate::shutdown::ShutdownTrigger)
    {
        let config = redshard_config::Config::from_toml_str(
            "[[shard]]\nname = \"s1\"\nmaster = \"127.0.0.1:1\"\nslots = [\"0-16383\"]\n",
            "test",
        )
        .unwrap();
        let topology = redshard_config::Topology::from_config(&config);
        let (state, _controller) = ProxyState::new(config, topology, 0).unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        (
            Session::new(Tcp::from(socket), state, shutdown).unwrap(),
            client,
            trigger,
        )
    }

    /// Makes the session's buffers hold memory as serving one request leaves them: a read
    /// buffer whose request was split off, and a written reply.
    fn serve_one(s: &mut Session) {
        s.rbuf.reserve(READ_MIN);
        s.rbuf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let request = s.rbuf.split_to(s.rbuf.len()).freeze();
        drop(request);
        s.out.push_slice(b"+PONG\r\n");
        s.out.try_write_to(s.stream.get_ref()).unwrap();
        assert!(s.out.is_empty());
    }

    #[tokio::test]
    async fn a_busy_client_keeps_its_small_buffers_and_an_idle_one_frees_them() {
        let (mut s, _client) = session().await;
        serve_one(&mut s);
        let read_room = s.rbuf.capacity();
        s.release_buffers();
        assert_eq!(s.rbuf.capacity(), read_room, "kept for the next request");
        assert!(s.out.staging_room() > 0, "kept for the next reply");

        // One sweep tick can come right after a read; the second means a whole interval.
        s.ctx.queue.idle_tick();
        s.release_buffers();
        assert_eq!(s.rbuf.capacity(), read_room, "not idle yet");
        s.ctx.queue.idle_tick();
        s.release_buffers();
        assert_eq!(s.rbuf.capacity(), 0, "idle: read buffer freed");
        assert_eq!(s.out.staging_room(), 0, "idle: output buffer freed");

        s.ctx.queue.touch();
        serve_one(&mut s);
        s.release_buffers();
        assert!(s.rbuf.capacity() > 0, "busy again: kept");
    }

    #[tokio::test]
    async fn a_large_buffer_is_freed_as_soon_as_it_is_empty() {
        let (mut s, _client) = session().await;
        serve_one(&mut s);
        s.rbuf.reserve(BUF_KEEP * 2);
        s.rbuf_large = true;
        s.out.push_slice(&vec![b'x'; BUF_KEEP * 2]);
        s.release_buffers();
        assert!(s.out.staging_room() > 0, "not while bytes wait");
        s.out.write_all(&mut tokio::io::sink()).await.unwrap();
        s.release_buffers();
        assert_eq!(s.rbuf.capacity(), 0);
        assert!(!s.rbuf_large);
        assert_eq!(s.out.staging_room(), 0);
    }
}
