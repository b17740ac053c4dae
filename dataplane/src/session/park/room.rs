//! The park room: where parked connections wait, outside tokio.
//!
//! A parked connection in tokio costs a task (256 bytes) and the reactor's registration of
//! its socket (256 bytes), which is half of what an idle client costs. Here its socket leaves
//! tokio's reactor (`TcpStream::into_std`) and joins one epoll set of the room's own (mio),
//! watched by one thread; what the connection keeps waits in a map. When the socket becomes
//! readable (a request, or the client closing), the thread takes the connection out of the
//! set and hands it to a task in the runtime, which starts a session again. Shutdown hands
//! every parked connection back at once, so its session sees the drain and closes it.
//!
//! The kernel's epoll entry is not the proxy's memory; the thread sleeps in `epoll_wait`
//! until a parked client does something.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Parked, Place};

/// The token of the room's waker (parked sockets get the others).
const WAKE: Token = Token(usize::MAX);

/// Room for this many guests is kept when fewer are parked; more is given back once the
/// crowd left (a burst of pooled clients closing must not leave its map behind).
const ROOM_KEEP: usize = 64;

/// A parked connection in the room.
#[derive(Debug)]
pub(crate) struct Guest {
    /// The connection and what its session keeps.
    pub parked: Parked,
    /// Its place under `max_clients` and in the listener's count.
    pub place: Place,
}

/// The room: its epoll set, who is in it, and the way back to the runtime.
#[derive(Debug)]
pub(crate) struct Room {
    /// Adds and removes parked sockets (any thread may).
    registry: Registry,
    /// Wakes the room's thread: shutdown started, or the runtime stopped taking guests.
    waker: Arc<Waker>,
    /// The parked connections, by the token their socket is registered with.
    guests: Mutex<Guests>,
    /// Set at shutdown: every guest leaves, and nobody new stays.
    draining: AtomicBool,
    /// Guests whose socket became readable go to the runtime's resuming task through this.
    leaving: mpsc::UnboundedSender<Box<Guest>>,
}

/// The map of guests and the next token to give.
#[derive(Debug, Default)]
struct Guests {
    /// Parked connections by token. Boxed: the map keeps up to twice as many slots as
    /// guests (it grows by doubling), and an empty slot then costs a pointer, not a guest
    /// (~100 bytes per parked client less with 1,000 of them).
    by_token: HashMap<usize, Box<Guest>>,
    /// The token the next guest gets (never [`WAKE`]'s).
    next: usize,
}

/// The runtime's end of the room: the guests handed back. Dropping it (the runtime stopped)
/// wakes the room's thread, which then ends.
#[derive(Debug)]
pub(crate) struct Departures {
    /// Guests to resume, in the order their sockets became readable.
    pub(crate) guests: mpsc::UnboundedReceiver<Box<Guest>>,
    /// Wakes the thread when this end is gone.
    waker: Arc<Waker>,
}

impl Drop for Departures {
    fn drop(&mut self) {
        // Closed before the wake, so the woken thread sees it (the receiver itself is
        // dropped only after this).
        self.guests.close();
        let _ = self.waker.wake();
    }
}

impl Room {
    /// Opens a room and starts its thread.
    ///
    /// # Errors
    /// The epoll set, its waker or the thread cannot be made.
    pub(crate) fn open() -> io::Result<(Arc<Self>, Departures)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (leaving, guests) = mpsc::unbounded_channel();
        let room = Arc::new(Self {
            registry,
            waker: Arc::clone(&waker),
            guests: Mutex::new(Guests::default()),
            draining: AtomicBool::new(false),
            leaving,
        });
        let watcher = Arc::clone(&room);
        std::thread::Builder::new()
            .name("redshard-park".into())
            .spawn(move || watcher.watch(poll))?;
        Ok((room, Departures { guests, waker }))
    }

    /// Parks `parked`: its socket joins the room's epoll set. Hands it straight back (to be
    /// resumed) when the room is draining or the socket cannot join.
    pub(crate) fn enter(&self, parked: Parked, place: Place) {
        if self.draining.load(Ordering::Acquire) {
            let _ = self.leaving.send(Box::new(Guest { parked, place }));
            return;
        }
        let fd = parked.stream.as_raw_fd();
        let token = {
            let mut guests = self.lock();
            let token = guests.next;
            guests.next = (guests.next + 1) % WAKE.0;
            guests
                .by_token
                .insert(token, Box::new(Guest { parked, place }));
            token
        };
        // Registered after it is in the map: an event finds it there. Level of readiness at
        // registration counts: bytes already waiting wake the thread at once.
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        {
            warn!(error = %e, "could not park a connection; it stays served");
            if let Some(guest) = self.lock().by_token.remove(&token) {
                let _ = self.leaving.send(guest);
            }
            return;
        }
        if self.draining.load(Ordering::Acquire) {
            // The drain began while it was coming in (the thread may have drained the map
            // before it was there, or be gone after a failure): it leaves again at once.
            // Whoever takes it out of the map hands it back, so it leaves exactly once.
            if let Some(guest) = self.lock().by_token.remove(&token) {
                let _ = self.registry.deregister(&mut SourceFd(&fd));
                let _ = self.leaving.send(guest);
            }
        }
    }

    /// Hands the parked connection of client `id` back to the runtime, if it is here (CLIENT
    /// KILL: its session resumes, sees it was killed, and closes).
    pub(crate) fn release(&self, id: u64) {
        let guest = {
            let mut guests = self.lock();
            let token = guests
                .by_token
                .iter()
                .find(|(_, guest)| guest.parked.client.id == id)
                .map(|(&token, _)| token);
            token.and_then(|token| guests.by_token.remove(&token))
        };
        if let Some(guest) = guest {
            let fd = guest.parked.stream.as_raw_fd();
            let _ = self.registry.deregister(&mut SourceFd(&fd));
            let _ = self.leaving.send(guest);
        }
    }

    /// Whether connections may park (not after the drain started or the epoll set failed).
    pub(crate) fn accepts(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
    }

    /// Starts the drain: every guest is handed back, and so is everyone who enters later.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    /// How many connections are parked here now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Guests> {
        // A panic while holding the map leaves it consistent (inserts and removes only).
        self.guests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The room's thread: waits for parked sockets to become readable and hands their
    /// connections to the runtime, until the runtime's end is gone.
    fn watch(&self, mut poll: Poll) {
        let mut events = Events::with_capacity(256);
        let mut leaving = Vec::new();
        loop {
            let failed = match poll.poll(&mut events, None) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Everyone leaves, and nobody stays from now on (see `enter`).
                    warn!(error = %e, "the park room's epoll failed; no more clients are parked");
                    self.draining.store(true, Ordering::Release);
                    true
                }
                Ok(()) => false,
            };
            {
                let mut guests = self.lock();
                if self.draining.load(Ordering::Acquire) {
                    leaving.extend(guests.by_token.drain().map(|(_, guest)| guest));
                } else {
                    for event in &events {
                        if event.token() != WAKE {
                            leaving.extend(guests.by_token.remove(&event.token().0));
                        }
                    }
                }
                // A map never shrinks by itself: after a crowd left, give its room back.
                let (len, capacity) = (guests.by_token.len(), guests.by_token.capacity());
                if capacity > ROOM_KEEP && len < capacity / 4 {
                    guests.by_token.shrink_to(len * 2);
                }
            }
            for guest in leaving.drain(..) {
                let fd = guest.parked.stream.as_raw_fd();
                let _ = self.registry.deregister(&mut SourceFd(&fd));
                // Fails only when the runtime is gone: the connection closes with the guest.
                let _ = self.leaving.send(guest);
            }
            leaving.shrink_to(ROOM_KEEP);
            if failed {
                return;
            }
            if self.leaving.is_closed() {
                debug!("the park room closes");
                // Whoever is still here leaves with the room (the runtime is gone).
                self.lock().by_token.clear();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Parks a fresh session's connection in `room`; returns the client's end and its
    /// address (what tells the guests apart: each session here has a proxy of its own).
    async fn park_one(room: &Room) -> (tokio::net::TcpStream, std::net::SocketAddr) {
        let (session, client) = crate::session::tests::session().await;
        let id = client.local_addr().unwrap();
        assert_eq!(session.ctx.client.addr, id);
        let permit = session.ctx.state.clients.admit(1).unwrap();
        let (done, _listener) = mpsc::channel(1);
        room.enter(session.into_parked().unwrap(), Place { permit, done });
        (client, id)
    }

    async fn next(departures: &mut Departures) -> Box<Guest> {
        tokio::time::timeout(Duration::from_secs(5), departures.guests.recv())
            .await
            .expect("a guest leaves")
            .expect("the room is open")
    }

    #[tokio::test]
    async fn a_guest_leaves_when_its_client_sends_and_everyone_leaves_at_the_drain() {
        let (room, mut departures) = Room::open().unwrap();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(park_one(&room).await);
        }
        assert_eq!(room.len(), 3);

        clients[1].0.write_all(b"PING\r\n").await.unwrap();
        let guest = next(&mut departures).await;
        assert_eq!(guest.parked.client.addr, clients[1].1, "the one that sent");
        assert_eq!(room.len(), 2);

        // A client that closes leaves too (its session will read the EOF).
        let (closing, addr) = clients.remove(2);
        drop(closing);
        let guest = next(&mut departures).await;
        assert_eq!(guest.parked.client.addr, addr);
        assert_eq!(room.len(), 1);

        room.drain();
        let guest = next(&mut departures).await;
        assert_eq!(
            guest.parked.client.addr, clients[0].1,
            "the silent one, at the drain"
        );
        assert_eq!(room.len(), 0);

        // After the drain nobody stays.
        let (_client, id) = park_one(&room).await;
        assert_eq!(next(&mut departures).await.parked.client.addr, id);
        assert_eq!(room.len(), 0);
    }

    #[tokio::test]
    async fn the_rooms_thread_ends_with_the_runtimes_end() {
        let (room, departures) = Room::open().unwrap();
        let _kept = park_one(&room).await;
        drop(departures);
        for _ in 0..500 {
            if Arc::strong_count(&room) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(Arc::strong_count(&room), 1, "the thread let go of the room");
        assert_eq!(room.len(), 0, "and of its guests");
    }
}
