//! The drain signal shared by every task.
//!
//! One [`ShutdownTrigger`] (held by `main` or a test) and any number of [`Shutdown`] watchers.
//! Once triggered, the listener stops accepting, sessions stop reading new requests and close
//! after their in-flight replies are written, and backend lanes close when no session uses
//! them any more.
//!
//! Tasks wait for the signal on a `watch` channel. Client sessions do not: each would keep a
//! waiting future (160 bytes) for its whole life and poll it whenever it goes to sleep, once
//! or twice per request. A session [registers](Shutdown::register) its reply queue instead;
//! the trigger sets a flag and wakes every registered queue, and the session looks at the
//! flag ([`Shutdown::is_draining`], one atomic load) each time it wakes up. The idle sweep
//! that parks idle clients goes through the same registry ([`Shutdown::tick_idle_sessions`],
//! see `crate::session::park`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::watch;

use crate::replies::ReplyQueue;

/// Fires the shutdown of everything that holds a [`Shutdown`] made from the same channel.
#[derive(Debug)]
pub struct ShutdownTrigger {
    /// `true` once shutdown has begun; never goes back to `false`.
    tx: watch::Sender<bool>,
    /// The sessions' side of the signal.
    sessions: Arc<Sessions>,
}

/// A task's view of the shutdown signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    /// Receives the one transition from `false` to `true`.
    rx: watch::Receiver<bool>,
    /// The sessions' side of the signal.
    sessions: Arc<Sessions>,
}

/// What client sessions watch instead of the channel (see the [module docs](self)).
#[derive(Debug, Default)]
struct Sessions {
    /// Set (before the queues are woken) when shutdown begins or the trigger is dropped.
    draining: AtomicBool,
    /// The reply queue of every registered session, by client id.
    queues: Mutex<HashMap<u64, Weak<ReplyQueue>>>,
}

impl Sessions {
    /// Sets the flag, then wakes every registered session. A session registered after the
    /// queues were taken sees the flag at its first look.
    fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for queue in self.live_queues() {
            queue.wake();
        }
    }

    /// The queues of the sessions still alive, taken out of the lock before they are used.
    fn live_queues(&self) -> Vec<Arc<ReplyQueue>> {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

/// A new trigger and its first watcher.
#[must_use]
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    let sessions = Arc::new(Sessions::default());
    (
        ShutdownTrigger {
            tx,
            sessions: Arc::clone(&sessions),
        },
        Shutdown { rx, sessions },
    )
}

impl ShutdownTrigger {
    /// Begins the shutdown. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
        self.sessions.drain();
    }

    /// A new watcher of this trigger.
    #[must_use]
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
            sessions: Arc::clone(&self.sessions),
        }
    }
}

impl Drop for ShutdownTrigger {
    /// A dropped trigger ends everything too (the watchers of the channel see it closed).
    fn drop(&mut self) {
        self.sessions.drain();
    }
}

impl Shutdown {
    /// Completes once shutdown has begun (at once if it already has). Also completes when the
    /// trigger was dropped, which only happens when the whole proxy is going away.
    pub async fn wait(&mut self) {
        // An error means the sender is gone: treat that as shutdown too.
        let _ = self.rx.wait_for(|triggered| *triggered).await;
    }

    /// Registers a client session's reply queue, to be woken when shutdown begins; the session
    /// then finds [`Shutdown::is_draining`] true. Undone by [`Shutdown::unregister`].
    pub(crate) fn register(&self, client: u64, queue: &Arc<ReplyQueue>) {
        self.sessions
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client, Arc::downgrade(queue));
    }

    /// Forgets a session registered with [`Shutdown::register`].
    pub(crate) fn unregister(&self, client: u64) {
        self.sessions
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&client);
    }

    /// One tick of the idle sweep on every registered session's reply queue (see
    /// `crate::session::park`).
    pub(crate) fn tick_idle_sessions(&self) {
        for queue in self.sessions.live_queues() {
            queue.idle_tick();
        }
    }

    /// Whether shutdown has begun (or the trigger was dropped), for registered sessions: one
    /// atomic load.
    #[must_use]
    pub(crate) fn is_draining(&self) -> bool {
        self.sessions.draining.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether the queue's session would be woken within a short wait.
    async fn woken(queue: &ReplyQueue) -> bool {
        tokio::time::timeout(Duration::from_millis(200), queue.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_trigger_wakes_registered_sessions_and_sets_the_flag() {
        let (trigger, watch) = channel();
        let queue = ReplyQueue::new();
        watch.register(7, &queue);
        assert!(!watch.is_draining());
        assert!(!woken(&queue).await, "nothing happened yet");
        trigger.trigger();
        assert!(watch.is_draining());
        assert!(woken(&queue).await);
        // A session registered later sees the flag at its first look.
        let later = ReplyQueue::new();
        trigger.subscribe().register(8, &later);
        assert!(trigger.subscribe().is_draining());
    }

    #[tokio::test]
    async fn the_idle_sweep_wakes_sessions_idle_for_a_whole_tick() {
        let (_trigger, watch) = channel();
        let idle = ReplyQueue::new();
        let busy = ReplyQueue::new();
        watch.register(1, &idle);
        watch.register(2, &busy);
        watch.tick_idle_sessions();
        assert!(!woken(&idle).await, "one tick may come right after a read");
        busy.touch();
        watch.tick_idle_sessions();
        assert!(woken(&idle).await && idle.idle_long());
        assert!(
            !woken(&busy).await && !busy.idle_long(),
            "it read in between"
        );
        assert!(!watch.is_draining());
    }

    #[tokio::test]
    async fn a_dropped_trigger_drains_too_and_unregistered_sessions_are_left_alone() {
        let (trigger, watch) = channel();
        let kept = ReplyQueue::new();
        let gone = ReplyQueue::new();
        watch.register(1, &kept);
        watch.register(2, &gone);
        watch.unregister(2);
        drop(trigger);
        assert!(watch.is_draining());
        assert!(woken(&kept).await);
        assert!(!woken(&gone).await);
    }
}
