//! Idle connections, parked: an idle plaintext client costs a map entry instead of a session.
//!
//! A session task is sized for the busiest connection (its state, the select over its
//! socket, replies and timers: a 1 KB task), and an idle client keeps it whole. After
//! `[limits] idle_park_ms` without input, the session keeps only what must outlive it in a
//! [`Parked`] (the socket, the client's place in the client list and under `max_clients`, its
//! reply queue and its per-connection settings), hands that to the park [`room`] and ends,
//! freeing the rest. The room watches the socket outside tokio (no task, no reactor
//! registration); on input (or the client leaving, or shutdown) a session starts again from
//! what was kept, as if nothing had happened: same client id, protocol, user and CLIENT LIST
//! entry.
//!
//! Who parks when: [`sweep`] ticks every registered session's reply queue each interval
//! ([`crate::shutdown::Shutdown::tick_idle_sessions`]); a session that read nothing for a
//! whole interval is woken once ([`crate::replies::ReplyQueue::idle_tick`]) and parks if it
//! holds nothing else: no request or reply in flight, no transaction, WATCH, subscription or
//! held request (`Session::parkable`). A private backend connection (kept after WATCH or a
//! blocking command) is closed when the client parks, which frees a connection on the Redis
//! side too, and opened again at its next use. A read costs the session one relaxed store
//! ([`crate::replies::ReplyQueue::touch`]) and no timer.

pub(crate) mod room;

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redshard_config::Access;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::{Exit, Session, Tcp};
use crate::clients::{Admitted, ClientInfo};
use crate::replies::ReplyQueue;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::state::ProxyState;
use redshard_protocol::resp::Protocol;

/// What a client's task holds besides its session, handed from task to task (and to the park
/// room while it is parked) for as long as the client is connected.
#[derive(Debug)]
pub struct Place {
    /// The client's place under `max_clients`; held for its Drop, which gives the place back.
    pub permit: Admitted,
    /// The listener's count of live sessions: it waits for every clone to be gone at
    /// shutdown; held for its Drop (the listener counts the senders).
    pub done: mpsc::Sender<()>,
}

/// A parked connection: what a session keeps while its client is idle.
#[derive(Debug)]
pub(crate) struct Parked {
    /// The client's connection, out of tokio's reactor while parked.
    stream: std::net::TcpStream,
    /// The proxy's shared state.
    state: Arc<ProxyState>,
    /// The drain signal, for the session that resumes; the reply queue stays registered
    /// with it (the park room itself hands every parked connection back at shutdown).
    shutdown: Shutdown,
    /// The client's CLIENT LIST entry (id, name, library).
    client: Arc<ClientInfo>,
    /// The client's reply queue (empty; its entries' memory given back).
    queue: Arc<ReplyQueue>,
    /// The protocol the client chose (HELLO).
    protocol: Protocol,
    /// What the authenticated user's scripts run as.
    access: Access,
    /// The user it authenticated as (empty: `default`); its rules are looked up again.
    user: String,
    /// Failed AUTH attempts on this connection (each delays the next answer more).
    auth_failures: u32,
}

/// Starts parking idle clients of `state`: opens the park room with the task that resumes
/// its guests, and starts the idle [`sweep`]. Returns the sweep's task, which ends at
/// `trigger`; the room's task is not returned: it resumes parked clients until the last
/// session is gone, so it ends with the runtime, not with the trigger. When the room cannot
/// be opened, clients are not parked (logged).
pub fn start(state: &Arc<ProxyState>, trigger: &ShutdownTrigger) -> JoinHandle<()> {
    let sweep = tokio::spawn(sweep(Arc::clone(state), trigger.subscribe()));
    match room::Room::open() {
        Ok((room, departures)) => {
            let _ = state
                .park_room
                .set(Arc::clone(&room) as Arc<dyn std::any::Any + Send + Sync>);
            tokio::spawn(serve_room(room, departures, trigger.subscribe()));
        }
        Err(e) => tracing::warn!(error = %e, "idle clients will not be parked"),
    }
    sweep
}

/// The park room of `state`, once [`start`] opened one.
pub(super) fn room_of(state: &ProxyState) -> Option<&room::Room> {
    state.park_room.get()?.downcast_ref()
}

/// Serves `session` in a task of its own, parking it when it idles, until the client is gone.
pub fn spawn_session(session: Session<Tcp>, place: Place) {
    tokio::spawn(session_task(session, place));
}

/// The future a session's task runs: every active client's memory. Its task must stay in
/// jemalloc's 1,024-byte size class (tested below): one byte more makes the task 1,152 bytes
/// and the allocation 1,280, and after a burst of clients parks, the few freed cells the
/// allocator keeps cached pin whole 20 KB slabs of that class instead of 4 KB ones.
///
/// No tracing span around it: at the default `info` level an entered span costs every poll of
/// every session the subscriber's bookkeeping (about 270 instructions per request at `-P 1`),
/// and every connection ~240 bytes of span data. The session's own events name the client.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice (see below)
fn session_task(mut session: Session<Tcp>, place: Place) -> impl Future<Output = ()> {
    // Built here and moved into the task once: an async fn would keep its arguments twice
    // (as arguments and as the running body's locals), and these are every client's memory.
    async move {
        if session.run().await == Exit::Park {
            park(session, place);
        }
    }
}

/// Hands an idle session's connection to the park room (`parkable` made sure there is one).
fn park(session: Session<Tcp>, place: Place) {
    let state = Arc::clone(&session.ctx.state);
    let Some(room) = room_of(&state) else {
        return spawn_session(session, place);
    };
    let addr = session.ctx.client.addr;
    match session.into_parked() {
        Ok(parked) => room.enter(parked, place),
        Err(e) => debug!(client = %addr, error = %e, "a connection failed while parking"),
    }
}

/// The runtime's side of the park room: resumes the connections the room hands back, and
/// starts the room's drain at shutdown. Runs until the runtime stops.
async fn serve_room(
    room: Arc<room::Room>,
    mut departures: room::Departures,
    mut shutdown: Shutdown,
) {
    let mut draining = false;
    loop {
        tokio::select! {
            () = shutdown.wait(), if !draining => {
                draining = true;
                room.drain();
            }
            guest = departures.guests.recv() => {
                let Some(guest) = guest else { return };
                let addr = guest.parked.client.addr;
                match Session::resume(guest.parked) {
                    Ok(session) => spawn_session(session, guest.place),
                    Err(e) => debug!(client = %addr, error = %e, "a parked connection failed"),
                }
            }
        }
    }
}

impl Session<Tcp> {
    /// Keeps what outlives the session while it is parked; frees the rest, including a
    /// private backend connection (no WATCH on it, nothing in flight: the next WATCH or
    /// blocking command opens one again).
    ///
    /// # Errors
    /// The socket could not leave tokio's reactor; the client is gone from the client list
    /// and the connection closed.
    fn into_parked(self) -> io::Result<Parked> {
        let ctx = self.ctx;
        // The queue lets go of the socket first: it is the session's alone again.
        ctx.queue.detach_socket();
        let stream = match self
            .stream
            .into_inner()
            .ok_or_else(|| io::Error::other("socket still shared"))
            .and_then(TcpStream::into_std)
        {
            Ok(stream) => stream,
            Err(e) => {
                super::leave(&self.shutdown, &ctx.state, ctx.client.id);
                return Err(e);
            }
        };
        ctx.queue.release_if_empty();
        ctx.queue.forget_waker();
        ctx.state.clients.parked.fetch_add(1, Ordering::Relaxed);
        Ok(Parked {
            stream,
            state: ctx.state,
            shutdown: self.shutdown,
            client: ctx.client,
            queue: ctx.queue,
            protocol: ctx.protocol,
            access: ctx.access,
            user: ctx.user,
            auth_failures: ctx.auth_failures,
        })
    }

    /// A session again for a parked connection, as it was when it parked.
    ///
    /// # Errors
    /// The socket could not join tokio's reactor again; the client is gone from the client
    /// list and the connection closed.
    fn resume(parked: Parked) -> io::Result<Self> {
        parked.state.clients.parked.fetch_sub(1, Ordering::Relaxed);
        let stream = match TcpStream::from_std(parked.stream) {
            Ok(stream) => Tcp::from(stream),
            Err(e) => {
                super::leave(&parked.shutdown, &parked.state, parked.client.id);
                return Err(e);
            }
        };
        // Idle time starts again: a wake that found no input must not park it at once.
        parked.queue.touch();
        parked.queue.restore_room();
        let mut session = Session::with_client(
            stream,
            parked.state,
            parked.shutdown,
            parked.client,
            parked.queue,
        );
        // Only authenticated sessions park.
        session.ctx.authenticated = true;
        session.ctx.protocol = parked.protocol;
        session.ctx.access = parked.access;
        session.ctx.user = parked.user;
        session.ctx.auth_failures = parked.auth_failures;
        Ok(session)
    }
}

/// The idle sweep: every `[limits] idle_park_ms` (read each round, so a reload applies; every
/// second when it is 0), one tick on every session's reply queue, until shutdown. A session
/// idle for a whole interval frees its buffers, and parks if it can and parking is on.
async fn sweep(state: Arc<ProxyState>, mut shutdown: Shutdown) {
    loop {
        let (every, timeout) = {
            let live = state.live.now();
            (live.limits.idle_park, live.limits.client_timeout)
        };
        let mut wait = if every.is_zero() {
            Duration::from_secs(1)
        } else {
            every
        };
        if !timeout.is_zero() {
            // Idle timeouts count whole seconds, like Redis's.
            wait = wait.min(Duration::from_secs(1));
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(wait) => {}
        }
        shutdown.tick_idle_sessions();
        if !timeout.is_zero() {
            close_idle(&state, timeout.as_secs());
        }
    }
}

/// Closes the clients idle `secs` seconds or more (`[limits] client_timeout_s`, Redis's
/// `timeout`), parked ones included.
fn close_idle(state: &ProxyState, secs: u64) {
    for client in state.clients.timed_out(secs) {
        disconnect(state, &client);
    }
}

/// Closes `client` (CLIENT KILL, a user deleted, idle too long), parked or not.
pub(in crate::session) fn disconnect(state: &ProxyState, client: &ClientInfo) {
    client.kill();
    // A parked client has no task to see it: the park room hands it back first.
    if let Some(room) = room_of(state) {
        room.release(client.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What tokio 1.x adds around a task's future in its allocation: the header (32 bytes),
    /// the scheduler handle and task id (8 + 8), the stage's discriminant (8) and the trailer
    /// (48); the allocation is a multiple of 128 bytes.
    const TOKIO_TASK_OVERHEAD: usize = 32 + 8 + 8 + 8 + 48;

    /// Counts the spans a subscriber at `info` (the default level) is asked to create and
    /// enter.
    #[derive(Default)]
    struct SpanCount {
        created: std::sync::atomic::AtomicUsize,
        entered: std::sync::atomic::AtomicUsize,
    }

    struct Counting(Arc<SpanCount>);

    impl tracing::Subscriber for Counting {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            *metadata.level() <= tracing::Level::INFO
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let n = self.0.created.fetch_add(1, Ordering::Relaxed);
            tracing::span::Id::from_u64(n as u64 + 1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {
            self.0.entered.fetch_add(1, Ordering::Relaxed);
        }
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// A session's task creates and enters no span at the default log level: an entered span
    /// costs every poll of every client the subscriber's bookkeeping, and every connection
    /// the span's data.
    #[tokio::test]
    async fn a_session_enters_no_span_at_the_default_log_level() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let count = Arc::new(SpanCount::default());
        // This thread's subscriber: the test's runtime runs the session's task here too.
        let _default = tracing::subscriber::set_default(Counting(Arc::clone(&count)));
        // The trigger kept: dropping it would start the drain.
        let (session, mut client, _trigger) = crate::session::tests::serving_session().await;
        let (done, _listener) = mpsc::channel(1);
        let permit = session.ctx.state.clients.admit(1).unwrap();
        let task = tokio::spawn(session_task(session, Place { permit, done }));
        for _ in 0..3 {
            client.write_all(b"PING\r\n").await.unwrap();
            let mut pong = [0u8; 7];
            client.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong, b"+PONG\r\n");
        }
        drop(client);
        task.await.unwrap();
        assert_eq!(count.created.load(Ordering::Relaxed), 0, "spans created");
        assert_eq!(count.entered.load(Ordering::Relaxed), 0, "spans entered");
    }

    #[tokio::test]
    async fn the_session_task_fits_the_allocators_1_kib_class() {
        let (session, _client) = crate::session::tests::session().await;
        let (done, _listener) = mpsc::channel(1);
        let permit = session.ctx.state.clients.admit(1).unwrap();
        let task = session_task(session, Place { permit, done });
        let size = std::mem::size_of_val(&task) + TOKIO_TASK_OVERHEAD;
        assert!(
            size <= 1024,
            "a session task of {size} bytes: see `session_task` for why it must stay at 1,024"
        );
    }
}
