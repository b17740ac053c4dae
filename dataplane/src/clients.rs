//! The proxy's own client list (CLIENT ID / LIST / INFO) and its connection counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

use redshard_protocol::command::{self, CommandSpec};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;
use tokio::sync::watch;

/// What CLIENT LIST shows about one connection.
///
/// `repr(C)`, the fields its session touches on every request first: with the `Arc`'s counts
/// they share one cache line, so a request costs one miss here, not one per field, when
/// thousands of connections keep this cold between two requests of a client.
#[derive(Debug)]
#[repr(C)]
pub struct ClientInfo {
    /// Reply bytes held for the client (received from the nodes, not yet written to it), as
    /// its session last counted them: CLIENT LIST's `omem`, INFO's
    /// `client_recent_max_output_buffer`.
    pub(crate) output_bytes: AtomicUsize,
    /// When the proxy last read from the client, in [`clock_secs`] (CLIENT LIST's `idle`):
    /// stored only when the second changed, so most reads cost one relaxed load.
    active_at: AtomicU32,
    /// The command the client sent last (CLIENT LIST's `cmd`), as its [`CommandId`]'s
    /// number (`CommandId as u16`; [`NO_COMMAND`] before the first): one store per request, no lock.
    last_cmd: AtomicU16,
    /// CLIENT UNBLOCK asked for the client's blocking command to end: [`Unblock`] as a
    /// number, 0 for none; its session answers the command and takes it back.
    unblock: AtomicU8,
    /// Unique, increasing id (CLIENT ID).
    pub id: u64,
    /// When it connected (age).
    pub since: Instant,
    /// Bytes of the requests queued in the client's MULTI (CLIENT LIST's `multi-mem`).
    multi_mem: AtomicUsize,
    /// The blocking command of the client waiting for its answer (CLIENT UNBLOCK's target):
    /// its reply entry's sequence number + 1, 0 for none. By entry, not a flag: the guard of
    /// a command CLIENT UNBLOCK already answered may drop after the next one blocked, and
    /// must not end that one's state.
    blocked: AtomicU64,
    /// The client's session (its reply queue), once it started: CLIENT KILL closes the
    /// client through it, CLIENT UNBLOCK wakes it (weak: the session owns the queue).
    queue: OnceLock<Weak<dyn SessionSignal>>,
    /// Name, library name and version, and the last command: changed by the session.
    pub fields: Mutex<ClientFields>,
    /// The client's address.
    pub addr: SocketAddr,
    /// The proxy address it connected to.
    pub(crate) laddr: SocketAddr,
    /// The client socket's file descriptor (CLIENT LIST's `fd`), recorded once when its
    /// session starts; -1 until then.
    fd: AtomicI32,
    /// Commands queued in the client's MULTI (CLIENT LIST's `multi`), -1 outside one.
    multi: AtomicI32,
    /// The database the client selected (CLIENT LIST's `db`).
    db: AtomicU16,
}

/// What another client's command can tell a session (implemented by its reply queue, a
/// layer above this module).
pub trait SessionSignal: Send + Sync + std::fmt::Debug {
    /// Close the client: write what is ready, then close the connection.
    fn close(&self);
    /// Look at the client's state again (CLIENT UNBLOCK).
    fn wake(&self);
    /// Append an out-of-band message (a client-side caching invalidation) after the
    /// replies already queued.
    fn push(&self, message: bytes::Bytes);
}

/// How CLIENT UNBLOCK ends a blocking command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unblock {
    /// As if its timeout had passed (a null reply).
    Timeout = 1,
    /// With `-UNBLOCKED`.
    Error = 2,
}

/// Every command's full name by its [`ClientInfo::last_cmd`] number, made on first use.
fn names() -> &'static [Option<&'static str>] {
    static NAMES: OnceLock<Vec<Option<&'static str>>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = Vec::new();
        for spec in command::every_spec() {
            let at = usize::from(spec.id as u16);
            if names.len() <= at {
                names.resize(at + 1, None);
            }
            names[at] = Some(spec.name);
        }
        names
    })
}

/// [`ClientInfo::last_cmd`] of a client that sent no command yet (Redis shows `cmd=NULL`).
const NO_COMMAND: u16 = u16::MAX;

/// The mutable part of [`ClientInfo`].
#[derive(Debug)]
pub struct ClientFields {
    /// CLIENT SETNAME.
    pub name: String,
    /// CLIENT SETINFO LIB-NAME.
    pub(crate) lib_name: String,
    /// CLIENT SETINFO LIB-VER.
    pub(crate) lib_ver: String,
    /// The protocol version the client chose with HELLO (2 until then).
    pub resp: u8,
    /// The user it authenticated as (empty: `default`), for CLIENT LIST and CLIENT KILL USER.
    pub(crate) user: String,
    /// Its SUBSCRIBE channels, PSUBSCRIBE patterns and SSUBSCRIBE channels, shared with its
    /// session while it has any: CLIENT LIST's `sub`, `psub`, `ssub` (a client with any is
    /// of type `pubsub`), and what a change of its user's channels checks, to close it only
    /// when one of them is no longer allowed, as Redis does.
    pub(crate) subscriptions: Option<Arc<Mutex<Subscribed>>>,
    /// In MONITOR mode (CLIENT LIST's `flags=O`).
    pub(crate) monitor: bool,
    /// Its CLIENT TRACKING, while on (CLIENT LIST's `flags=t`, `B`, `R` and `redir`), kept
    /// by the tracking hub.
    pub(crate) tracking: Option<TrackingShown>,
}

/// A client's subscriptions by name.
#[derive(Debug, Default)]
pub(crate) struct Subscribed {
    /// SUBSCRIBE channels.
    pub(crate) channels: std::collections::BTreeSet<Vec<u8>>,
    /// PSUBSCRIBE patterns.
    pub(crate) patterns: std::collections::BTreeSet<Vec<u8>>,
    /// SSUBSCRIBE channels.
    pub(crate) shard_channels: std::collections::BTreeSet<Vec<u8>>,
}

impl Subscribed {
    /// How many of each: SUBSCRIBE channels, PSUBSCRIBE patterns, SSUBSCRIBE channels.
    pub(crate) fn counts(&self) -> [usize; 3] {
        [
            self.channels.len(),
            self.patterns.len(),
            self.shard_channels.len(),
        ]
    }

    /// Whether `user` allows every one of them (Redis 7.0's `ACLKillPubsubClientsIfNeeded`:
    /// a pattern must be one of the user's patterns as written, a channel match one).
    pub(crate) fn allowed_by(&self, user: &redshard_protocol::acl::User) -> bool {
        self.patterns
            .iter()
            .all(|p| user.subscription_allowed(p, true))
            && self
                .channels
                .iter()
                .chain(&self.shard_channels)
                .all(|c| user.subscription_allowed(c, false))
    }
}

/// What CLIENT LIST shows of a tracking client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrackingShown {
    /// REDIRECT's client id, 0 for none (as Redis shows it).
    pub(crate) redirect: u64,
    /// BCAST mode (`flags=B`).
    pub(crate) bcast: bool,
    /// The redirect target was found gone when an invalidation was due (`flags=R`).
    pub(crate) broken: bool,
}

/// A process-wide clock in whole seconds (since its first reading), for CLIENT LIST's
/// `idle`.
fn clock_secs(now: Instant) -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX)
}

impl Default for ClientFields {
    fn default() -> Self {
        Self {
            name: String::new(),
            lib_name: String::new(),
            lib_ver: String::new(),
            resp: 2,
            user: String::new(),
            subscriptions: None,
            monitor: false,
            tracking: None,
        }
    }
}

impl ClientInfo {
    /// The mutable fields, locked.
    pub fn fields(&self) -> MutexGuard<'_, ClientFields> {
        self.fields
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ties the client to its session's reply queue (once, when the session starts).
    pub(crate) fn attach<Q: SessionSignal + 'static>(&self, queue: &Arc<Q>) {
        let queue: Arc<dyn SessionSignal> = Arc::clone(queue) as Arc<dyn SessionSignal>;
        let queue = Arc::downgrade(&queue);
        let _ = self.queue.set(queue);
    }

    /// Closes the client (CLIENT KILL): its session writes what is ready and closes.
    /// Returns whether its session was still there.
    pub(crate) fn kill(&self) -> bool {
        match self.queue.get().and_then(Weak::upgrade) {
            Some(queue) => {
                queue.close();
                true
            }
            None => false,
        }
    }

    /// Appends `message` to the client's replies (an invalidation for its client-side cache);
    /// false when its session is gone.
    pub(crate) fn push(&self, message: bytes::Bytes) -> bool {
        match self.queue.get().and_then(Weak::upgrade) {
            Some(queue) => {
                queue.push(message);
                true
            }
            None => false,
        }
    }

    /// Asks the client's session to end its blocking command as `how` says (CLIENT
    /// UNBLOCK). Returns whether the client is blocked.
    pub(crate) fn unblock(&self, how: Unblock) -> bool {
        if !self.is_blocked() {
            return false;
        }
        let Some(queue) = self.queue.get().and_then(Weak::upgrade) else {
            return false;
        };
        self.unblock.store(how as u8, Ordering::Release);
        queue.wake();
        true
    }

    /// The unblocking CLIENT UNBLOCK asked for, if any (taken: asked once, done once).
    pub(crate) fn take_unblock(&self) -> Option<Unblock> {
        match self.unblock.swap(0, Ordering::AcqRel) {
            1 => Some(Unblock::Timeout),
            2 => Some(Unblock::Error),
            _ => None,
        }
    }

    /// Whether a blocking command of the client waits for its answer.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Acquire) != 0
    }

    /// The reply entry (sequence number) of the client's blocking command waiting for its
    /// answer, if one is.
    pub(crate) fn blocked_entry(&self) -> Option<u64> {
        self.blocked.load(Ordering::Acquire).checked_sub(1)
    }

    /// Ends the blocked state of entry `seq` (a newer blocking command's stays); returns
    /// whether it was the one in force.
    fn end_blocked(&self, seq: u64) -> bool {
        self.blocked
            .compare_exchange(seq + 1, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The user the client authenticated as, `default` when none.
    fn user_name(fields: &ClientFields) -> &str {
        if fields.user.is_empty() {
            "default"
        } else {
            &fields.user
        }
    }

    /// Records the client socket's file descriptor (once, when its session starts).
    pub(crate) fn set_fd(&self, fd: i32) {
        self.fd.store(fd, Ordering::Relaxed);
    }

    /// Records that the proxy read from the client at `now` (CLIENT LIST's `idle`): a store
    /// only when the clock's second changed.
    #[inline]
    pub(crate) fn touch(&self, now: Instant) {
        let secs = clock_secs(now);
        if self.active_at.load(Ordering::Relaxed) != secs {
            self.active_at.store(secs, Ordering::Relaxed);
        }
    }

    /// Seconds since the proxy last read from the client (CLIENT LIST's `idle`).
    #[must_use]
    pub fn idle_secs(&self) -> u64 {
        u64::from(clock_secs(Instant::now()).saturating_sub(self.active_at.load(Ordering::Relaxed)))
    }

    /// The client's MULTI: `Some((commands, bytes))` queued so far, `None` outside one.
    /// Records the database the client selected.
    pub(crate) fn set_db(&self, db: u16) {
        self.db.store(db, Ordering::Relaxed);
    }

    pub(crate) fn set_multi(&self, queued: Option<(usize, usize)>) {
        let (count, bytes) = queued.map_or((-1, 0), |(count, bytes)| {
            (i32::try_from(count).unwrap_or(i32::MAX), bytes)
        });
        self.multi.store(count, Ordering::Relaxed);
        self.multi_mem.store(bytes, Ordering::Relaxed);
    }

    /// Records the command the client is sending now.
    #[inline]
    pub(crate) fn set_command(&self, spec: &CommandSpec) {
        self.last_cmd.store(spec.id as u16, Ordering::Relaxed);
    }

    /// The full name (`client|list`) of the command the client sent last, `NULL` before any.
    pub(crate) fn last_command(&self) -> &'static str {
        let id = self.last_cmd.load(Ordering::Relaxed);
        if id == NO_COMMAND {
            return "NULL";
        }
        names()
            .get(usize::from(id))
            .copied()
            .flatten()
            .unwrap_or("NULL")
    }

    /// One CLIENT LIST line (without the trailing newline), in Redis's field order.
    /// `argv_mem` is the bytes of the arguments of the command the client runs now: those
    /// of the client asking (its own CLIENT LIST or INFO, as in Redis), 0 for the others.
    ///
    /// `qbuf`, `qbuf-free`, `rbs`, `rbp`, `obl` and `oll` are 0: the proxy dispatches each
    /// request as soon as it is read whole, and holds replies in one queue (their bytes are
    /// `omem`) rather than Redis's reply buffer and list; `tot-mem` is `omem` + `argv-mem` +
    /// `multi-mem`.
    #[must_use]
    pub fn line(&self, argv_mem: usize) -> String {
        let f = self.fields();
        let [sub, psub, ssub] = f.subscription_counts();
        let omem = self.output_bytes.load(Ordering::Relaxed);
        let multi = self.multi.load(Ordering::Relaxed);
        let multi_mem = if multi >= 0 {
            self.multi_mem.load(Ordering::Relaxed)
        } else {
            0
        };
        // Redis's letters, in Redis's order (`catClientInfoString`).
        let mut flags = String::with_capacity(4);
        if f.monitor {
            flags.push('O');
        }
        if f.subscribed() {
            flags.push('P');
        }
        if multi >= 0 {
            flags.push('x');
        }
        if self.is_blocked() {
            flags.push('b');
        }
        if let Some(t) = f.tracking {
            flags.push('t');
            if t.broken {
                flags.push('R');
            }
            if t.bcast {
                flags.push('B');
            }
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let redir = f
            .tracking
            .map_or(-1, |t| i64::try_from(t.redirect).unwrap_or(i64::MAX));
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db={} sub={sub} psub={psub} ssub={ssub} multi={multi} qbuf=0 qbuf-free=0 argv-mem={argv_mem} multi-mem={multi_mem} rbs=0 rbp=0 obl=0 oll=0 omem={omem} tot-mem={} events=r cmd={} user={} redir={redir} resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd.load(Ordering::Relaxed),
            f.name,
            self.since.elapsed().as_secs(),
            self.idle_secs(),
            self.db.load(Ordering::Relaxed),
            omem + argv_mem + multi_mem,
            self.last_command(),
            Self::user_name(&f),
            f.resp,
            f.lib_name,
            f.lib_ver
        )
    }
}

impl ClientFields {
    /// Whether the client has any subscription (Redis's client type `pubsub`).
    #[must_use]
    pub fn subscribed(&self) -> bool {
        self.subscription_counts().iter().any(|&n| n > 0)
    }

    /// CLIENT LIST's `sub`, `psub` and `ssub` (the session's lock is taken after this one's,
    /// never the other way round).
    pub(crate) fn subscription_counts(&self) -> [usize; 3] {
        self.subscriptions.as_ref().map_or([0; 3], |sets| {
            sets.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .counts()
        })
    }
}

/// Which clients CLIENT LIST shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFilter {
    /// Every client (`CLIENT LIST`).
    All,
    /// `TYPE normal` (`pubsub: false`) or `TYPE pubsub` (`true`).
    Subscribed(bool),
    /// `TYPE master|replica|slave`: no such clients connect to the proxy.
    Nobody,
    /// `ID id...`: those clients, in the order given (repeats repeated, as Redis does).
    Ids(Vec<i64>),
}

/// Every connected client, plus connection counters for INFO.
#[derive(Debug)]
pub struct Clients {
    /// Next CLIENT ID.
    next_id: AtomicU64,
    /// Connected clients by id.
    live: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    /// Connections accepted since start (INFO total_connections_received).
    pub total_connections: AtomicU64,
    /// Connections refused at max clients (INFO rejected_connections).
    pub rejected_connections: AtomicU64,
    /// Requests processed since start (INFO total_commands_processed).
    pub(crate) total_commands: AtomicU64,
    /// The three counters above (connections, rejected, commands) when a client last ran
    /// CONFIG RESETSTAT: INFO shows what was counted since (`/metrics` keeps the totals,
    /// counters that never go back).
    stats_base: Mutex<[u64; 3]>,
    /// Idle clients whose connection is parked (INFO parked_clients; see `session::park`).
    pub parked: AtomicUsize,
    /// Connections holding a place under `max_clients`: sessions of both listeners and TLS
    /// handshakes in progress.
    admitted: Arc<AtomicUsize>,
    /// Clients waiting for a blocking command's answer (INFO blocked_clients), each counted
    /// by the [`Blocked`] its request carries.
    blocked: Arc<AtomicUsize>,
    /// Whether a CLIENT PAUSE may be in force: one load per request while none is.
    pausing: AtomicBool,
    /// The CLIENT PAUSE in force (`None`: none); held requests wait for a change.
    pause: watch::Sender<Option<Pause>>,
}

/// A connection's place under `max_clients`, given back when dropped.
#[derive(Debug)]
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client waiting for a blocking command's answer: counted in INFO `blocked_clients`, and
/// shown blocked in CLIENT LIST (`flags=b`), until the answer is handed over, the request
/// dropped, or CLIENT UNBLOCK answered it (whichever comes first ends it).
#[derive(Debug)]
pub struct Blocked {
    /// INFO `blocked_clients`, counted down by whoever ends the state.
    count: Arc<AtomicUsize>,
    /// The client blocked.
    client: Arc<ClientInfo>,
    /// The blocking command's reply entry.
    seq: u64,
}

impl Drop for Blocked {
    fn drop(&mut self) {
        if self.client.end_blocked(self.seq) {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A CLIENT PAUSE in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pause {
    /// When it ends by itself.
    pub until: tokio::time::Instant,
    /// Every command is held (`ALL`), or only writes (`WRITE`).
    pub all: bool,
}

/// Which clients CLIENT KILL closes: those every given filter matches.
#[derive(Debug, Default)]
pub struct KillFilter {
    /// `ID id`.
    pub id: Option<u64>,
    /// `ADDR ip:port` (the old form's argument too).
    pub addr: Option<String>,
    /// `LADDR ip:port`.
    pub laddr: Option<String>,
    /// `USER name` (`default` for clients that did not authenticate as a named user).
    pub user: Option<String>,
    /// `TYPE normal|pubsub` (`Some(true)`: subscribed); `master|replica|slave` match nobody.
    pub subscribed: Option<bool>,
    /// `TYPE master|replica|slave`: no such client connects to the proxy.
    pub nobody: bool,
    /// `MAXAGE secs`: clients connected longer than this.
    pub max_age: Option<u64>,
    /// `SKIPME yes` (the new form's default): not the client that asks, by id.
    pub skip: Option<u64>,
}

impl KillFilter {
    fn matches(&self, info: &ClientInfo) -> bool {
        if self.nobody || self.skip == Some(info.id) {
            return false;
        }
        if self.id.is_some_and(|id| id != info.id)
            || self
                .addr
                .as_ref()
                .is_some_and(|a| *a != info.addr.to_string())
            || self
                .laddr
                .as_ref()
                .is_some_and(|a| *a != info.laddr.to_string())
            || self
                .max_age
                .is_some_and(|age| info.since.elapsed().as_secs() <= age)
        {
            return false;
        }
        let fields = info.fields();
        !(self
            .user
            .as_ref()
            .is_some_and(|u| u != ClientInfo::user_name(&fields))
            || self.subscribed.is_some_and(|s| s != fields.subscribed()))
    }
}

impl Default for Clients {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::default(),
            live: Mutex::default(),
            total_connections: AtomicU64::default(),
            rejected_connections: AtomicU64::default(),
            total_commands: AtomicU64::default(),
            stats_base: Mutex::default(),
            parked: AtomicUsize::default(),
            admitted: Arc::default(),
            blocked: Arc::default(),
            pausing: AtomicBool::new(false),
            pause: watch::Sender::new(None),
        }
    }
}

impl Clients {
    /// Counts `client` as waiting for the blocking command whose reply entry is `seq` until
    /// the guard drops (or [`Clients::unblocked`]).
    #[must_use]
    pub fn blocked(&self, client: &Arc<ClientInfo>, seq: u64) -> Blocked {
        if client.blocked.swap(seq + 1, Ordering::AcqRel) == 0 {
            self.blocked.fetch_add(1, Ordering::AcqRel);
        }
        Blocked {
            count: Arc::clone(&self.blocked),
            client: Arc::clone(client),
            seq,
        }
    }

    /// CLIENT UNBLOCK answered `client`'s blocking command (reply entry `seq`): it is no
    /// longer blocked, even while its request is still out on the connection being closed.
    pub(crate) fn unblocked(&self, client: &ClientInfo, seq: u64) {
        if client.end_blocked(seq) {
            self.blocked.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// CLIENT PAUSE: holds every client's commands (`all`) or writes until `until`; a pause
    /// already in force ends no earlier, and holds all commands if either does (as Redis).
    pub fn pause(&self, until: tokio::time::Instant, all: bool) {
        self.pause.send_modify(|pause| {
            *pause = Some(match *pause {
                Some(p) if p.until > tokio::time::Instant::now() => Pause {
                    until: p.until.max(until),
                    all: p.all || all,
                },
                _ => Pause { until, all },
            });
        });
        self.pausing.store(true, Ordering::Release);
    }

    /// CLIENT UNPAUSE: the held commands go.
    pub fn unpause(&self) {
        self.pausing.store(false, Ordering::Release);
        self.pause.send_replace(None);
    }

    /// The CLIENT PAUSE in force now, and a receiver told when it changes.
    pub(crate) fn paused(&self) -> Option<(Pause, watch::Receiver<Option<Pause>>)> {
        if !self.pausing.load(Ordering::Acquire) {
            return None;
        }
        let pause = (*self.pause.borrow())?;
        if pause.until <= tokio::time::Instant::now() {
            return None;
        }
        Some((pause, self.pause.subscribe()))
    }

    /// CLIENT KILL: the clients `filter` matches.
    pub(crate) fn matching(&self, filter: &KillFilter) -> Vec<Arc<ClientInfo>> {
        self.live()
            .values()
            .filter(|info| filter.matches(info))
            .cloned()
            .collect()
    }

    /// The clients idle for `secs` seconds or more that Redis's `timeout` closes: not one
    /// blocked in a command, subscribed or monitoring, which may wait as long as they like.
    pub(crate) fn timed_out(&self, secs: u64) -> Vec<Arc<ClientInfo>> {
        self.live()
            .values()
            .filter(|info| info.idle_secs() >= secs && !info.is_blocked())
            .filter(|info| {
                let fields = info.fields();
                !fields.subscribed() && !fields.monitor
            })
            .cloned()
            .collect()
    }

    /// The client `id`, if connected.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.live().get(&id).cloned()
    }

    /// Clients waiting for a blocking command's answer now.
    #[must_use]
    pub(crate) fn blocked_now(&self) -> usize {
        self.blocked.load(Ordering::Acquire)
    }

    fn live(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ClientInfo>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for one more connection, unless `max_clients` hold one already. Several
    /// listeners may ask at once: the count never passes `max_clients`.
    pub fn admit(&self, max_clients: usize) -> Option<Admitted> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_clients).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(Arc::clone(&self.admitted)))
    }

    /// The counters as INFO shows them: connections received, commands processed and
    /// connections rejected since the start or the last CONFIG RESETSTAT.
    pub(crate) fn stats(&self) -> [u64; 3] {
        let base = *self
            .stats_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = self.stats_now();
        [0, 1, 2].map(|i| now[i].saturating_sub(base[i]))
    }

    fn stats_now(&self) -> [u64; 3] {
        [
            self.total_connections.load(Ordering::Relaxed),
            self.total_commands.load(Ordering::Relaxed),
            self.rejected_connections.load(Ordering::Relaxed),
        ]
    }

    /// CONFIG RESETSTAT: INFO's counters start again from 0.
    pub(crate) fn reset_stats(&self) {
        let now = self.stats_now();
        *self
            .stats_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }

    /// Counts a connection refused at `max_clients` (INFO rejected_connections).
    pub fn refused(&self) {
        self.rejected_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a new connection; it stays listed until [`Clients::remove`].
    pub fn add(&self, addr: SocketAddr, laddr: SocketAddr) -> Arc<ClientInfo> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let info = Arc::new(ClientInfo {
            id,
            addr,
            laddr,
            since: now,
            fd: AtomicI32::new(-1),
            active_at: AtomicU32::new(clock_secs(now)),
            multi: AtomicI32::new(-1),
            multi_mem: AtomicUsize::new(0),
            db: AtomicU16::new(0),
            fields: Mutex::new(ClientFields::default()),
            output_bytes: AtomicUsize::new(0),
            last_cmd: AtomicU16::new(NO_COMMAND),
            queue: OnceLock::new(),
            blocked: AtomicU64::new(0),
            unblock: AtomicU8::new(0),
        });
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        self.live().insert(id, Arc::clone(&info));
        info
    }

    /// Forgets a closed connection.
    pub fn remove(&self, id: u64) {
        self.live().remove(&id);
    }

    /// Connected clients now.
    #[must_use]
    pub fn connected(&self) -> usize {
        self.live().len()
    }

    /// The most reply bytes held for one connected client now (INFO
    /// `client_recent_max_output_buffer`).
    #[must_use]
    pub(crate) fn max_output_bytes(&self) -> usize {
        self.live()
            .values()
            .map(|info| info.output_bytes.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// CLIENT LIST: one line per connection `filter` selects, each ending in a newline;
    /// `asking` is the client that asks, by id, with its command's argument bytes (its
    /// `argv-mem`).
    #[must_use]
    pub fn list(&self, filter: &ListFilter, asking: (u64, usize)) -> String {
        let mut out = String::new();
        let mut add = |info: &ClientInfo| {
            let argv_mem = if info.id == asking.0 { asking.1 } else { 0 };
            out.push_str(&info.line(argv_mem));
            out.push('\n');
        };
        let live = self.live();
        match filter {
            ListFilter::All => live.values().for_each(|info| add(info)),
            ListFilter::Subscribed(subscribed) => live
                .values()
                .filter(|info| info.fields().subscribed() == *subscribed)
                .for_each(|info| add(info)),
            ListFilter::Nobody => {}
            ListFilter::Ids(ids) => ids
                .iter()
                .filter_map(|&id| u64::try_from(id).ok().and_then(|id| live.get(&id)))
                .for_each(|info| add(info)),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(clients: &Clients, port: u16) -> Arc<ClientInfo> {
        clients.add(
            format!("127.0.0.1:{port}").parse().unwrap(),
            "127.0.0.1:6379".parse().unwrap(),
        )
    }

    #[test]
    fn the_last_command_is_shown_by_its_full_name() {
        let clients = Clients::default();
        let c = client(&clients, 1000);
        assert_eq!(c.last_command(), "NULL");
        for name in [
            &[&b"client"[..], b"setinfo"][..],
            &[b"get"],
            &[b"CLIENT", b"LIST"],
        ] {
            let spec = command::every_spec()
                .find(|s| s.name.as_bytes().eq_ignore_ascii_case(&name.join(&b'|')))
                .unwrap();
            c.set_command(spec);
            assert_eq!(c.last_command(), spec.name);
        }
    }

    #[test]
    fn kill_filters_all_match() {
        let clients = Clients::default();
        let a = client(&clients, 1000);
        let b = client(&clients, 1001);
        b.fields().user = "app".into();
        let mut sets = Subscribed::default();
        sets.channels.insert(b"news".to_vec());
        b.fields().subscriptions = Some(Arc::new(Mutex::new(sets)));
        let ids = |filter: &KillFilter| -> Vec<u64> {
            clients.matching(filter).iter().map(|c| c.id).collect()
        };
        assert_eq!(ids(&KillFilter::default()), [a.id, b.id]);
        let by_addr = KillFilter {
            addr: Some("127.0.0.1:1001".into()),
            ..KillFilter::default()
        };
        assert_eq!(ids(&by_addr), [b.id]);
        let default_user = KillFilter {
            user: Some("default".into()),
            ..KillFilter::default()
        };
        assert_eq!(ids(&default_user), [a.id]);
        let normal_but_b = KillFilter {
            subscribed: Some(false),
            id: Some(b.id),
            ..KillFilter::default()
        };
        assert!(ids(&normal_but_b).is_empty());
        let skip_a = KillFilter {
            skip: Some(a.id),
            laddr: Some("127.0.0.1:6379".into()),
            ..KillFilter::default()
        };
        assert_eq!(ids(&skip_a), [b.id]);
        let nobody = KillFilter {
            nobody: true,
            ..KillFilter::default()
        };
        assert!(ids(&nobody).is_empty());
        let old = KillFilter {
            max_age: Some(1000),
            ..KillFilter::default()
        };
        assert!(ids(&old).is_empty());
    }
}

#[cfg(test)]
mod layout_tests {
    use super::ClientInfo;

    #[test]
    fn the_fields_a_request_touches_share_the_first_cache_line() {
        // After the `Arc`'s two counts (16 bytes), in a 64-byte-aligned block (jemalloc's
        // 320-byte class).
        let last = [
            std::mem::offset_of!(ClientInfo, output_bytes),
            std::mem::offset_of!(ClientInfo, active_at),
            std::mem::offset_of!(ClientInfo, last_cmd),
            std::mem::offset_of!(ClientInfo, unblock),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        assert!(16 + last < 64, "{last}");
        // Every client (parked ones' too) has one: it stays in the 320-byte class.
        assert!(
            16 + std::mem::size_of::<ClientInfo>() <= 320,
            "{}",
            std::mem::size_of::<ClientInfo>()
        );
    }
}
