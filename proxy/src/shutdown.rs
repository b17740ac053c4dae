//! The drain signal shared by every task.
//!
//! One [`ShutdownTrigger`] (held by `main` or a test) and any number of [`Shutdown`] watchers.
//! Once triggered, the listener stops accepting, sessions stop reading new requests and close
//! after their in-flight replies are written, and backend lanes close when no session uses
//! them any more.

use tokio::sync::watch;

/// Fires the shutdown of everything that holds a [`Shutdown`] made from the same channel.
#[derive(Debug)]
pub struct ShutdownTrigger {
    /// `true` once shutdown has begun; never goes back to `false`.
    tx: watch::Sender<bool>,
}

/// A task's view of the shutdown signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    /// Receives the one transition from `false` to `true`.
    rx: watch::Receiver<bool>,
}

/// A new trigger and its first watcher.
#[must_use]
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Begins the shutdown. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// A new watcher of this trigger.
    #[must_use]
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once shutdown has begun (at once if it already has). Also completes when the
    /// trigger was dropped, which only happens when the whole proxy is going away.
    pub async fn wait(&mut self) {
        // An error means the sender is gone: treat that as shutdown too.
        let _ = self.rx.wait_for(|triggered| *triggered).await;
    }
}
