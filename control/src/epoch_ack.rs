//! In a fleet, this proxy's acknowledgement of each epoch it installs (see [`crate::follow`]).
//!
//! Acknowledging epoch E in etcd tells the leader that no request routed here by a table older
//! than E is still on its way, and, when E begins migrating slots, that the lanes of their
//! sources have run every request sent to them: once every proxy acknowledged it, keys of
//! those slots may move. So an epoch is acknowledged only once those waits are over, however
//! long they take (a source master stopped or busy for a while): a wait that runs long is
//! logged every [`EPOCH_DRAIN`] and goes on, and the leader's barrier waits with it. Giving up
//! after a while instead could let a late write reach a source after its key moved, which
//! loses the write.
//!
//! The waits run on one task of their own, in epoch order, so newer epochs are still installed
//! (and routed by) while an older one's wait runs; an epoch is acknowledged once its own wait
//! and every earlier one are over. When newer epochs are queued behind the one whose wait just
//! ended, only the newest is acknowledged, once its wait is over too.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redshard_dataplane::router::ShardRoute;
use tokio::sync::mpsc;
use tracing::warn;

/// How long one try of a wait runs before it is logged and tried again.
pub(crate) const EPOCH_DRAIN: Duration = Duration::from_secs(5);

/// What an installed epoch waits for before it is acknowledged.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The epoch installed.
    pub(crate) epoch: u64,
    /// The shards whose slots this epoch begins migrating, as the table installed with it
    /// routes them: their master's lanes must run what was sent before. Taken at install,
    /// not looked up later, when a newer table may route the shard to another master; clones,
    /// not the table, which the epoch barrier waits to see dropped.
    pub(crate) sources: Vec<ShardRoute>,
}

/// The installs waiting for their acknowledgement, in epoch order.
#[derive(Debug)]
pub(crate) struct Queue {
    /// Where installs are queued. Unbounded: one entry per topology change, and each wait
    /// takes every entry queued behind it at once.
    tx: mpsc::UnboundedSender<Pending>,
    /// The receiving end, until the fleet's acknowledging task takes it.
    rx: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
}

impl Default for Queue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Queue {
    /// Queues `pending` behind the installs already waiting.
    pub(crate) fn push(&self, pending: Pending) {
        // Closed only once the acknowledging task ended, at shutdown: nothing to acknowledge.
        let _ = self.tx.send(pending);
    }

    /// The receiving end, for the one task that acknowledges (`None` after the first call).
    pub(crate) fn take(&self) -> Option<mpsc::UnboundedReceiver<Pending>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Acknowledges the installs of `rx` in order: each one's `wait`, then `ack` of the newest
/// whose wait and every earlier one's are over. Ends when the queue is closed.
pub(crate) async fn acknowledge<W, WF, A, AF>(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    wait: W,
    ack: A,
) where
    W: Fn(Pending) -> WF,
    WF: Future<Output = u64>,
    A: Fn(u64) -> AF,
    AF: Future<Output = ()>,
{
    while let Some(pending) = rx.recv().await {
        let mut epoch = wait(pending).await;
        // Installs queued meanwhile: their waits come first, then one acknowledgement.
        while let Ok(next) = rx.try_recv() {
            epoch = wait(next).await;
        }
        ack(epoch).await;
    }
}

/// Runs `attempt` (one try bounded by [`EPOCH_DRAIN`], true when the wait is over) until it
/// succeeds, logging each try that did not, with how long `what` has waited for `epoch`.
pub(crate) async fn until_over<F, Fut>(epoch: u64, what: &str, attempt: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !attempt().await {
        warn!(
            epoch,
            waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "{what}; the epoch is not acknowledged until they are, and the fleet's barriers wait"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::{watch, Mutex as AsyncMutex};

    use super::*;

    /// Waits that end when the test says so: each epoch's wait ends once `released` reaches it.
    fn gated(
        released: watch::Receiver<u64>,
    ) -> impl Fn(Pending) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> {
        move |pending| {
            let mut released = released.clone();
            Box::pin(async move {
                let _ = released.wait_for(|r| *r >= pending.epoch).await;
                pending.epoch
            })
        }
    }

    /// Lets the acknowledging task run until it waits (it has no timer of its own: a wait
    /// that has not ended keeps it waiting however long this yields).
    async fn settle() {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    fn pending(epoch: u64) -> Pending {
        Pending {
            epoch,
            sources: Vec::new(),
        }
    }

    #[tokio::test]
    async fn an_epoch_is_acknowledged_only_after_its_wait_and_every_earlier_one() {
        let queue = Queue::default();
        let (release, released) = watch::channel(0u64);
        let acked = Arc::new(AsyncMutex::new(Vec::new()));
        let task = tokio::spawn({
            let acked = Arc::clone(&acked);
            acknowledge(
                queue.take().expect("first take"),
                gated(released),
                move |epoch| {
                    let acked = Arc::clone(&acked);
                    async move { acked.lock().await.push(epoch) }
                },
            )
        });
        assert!(queue.take().is_none(), "one task acknowledges");

        // Epoch 2's wait does not end: nothing is acknowledged (no timer gives up on it), and
        // the epochs installed meanwhile are not acknowledged past it either.
        queue.push(pending(2));
        settle().await;
        queue.push(pending(3));
        queue.push(pending(4));
        settle().await;
        assert!(acked.lock().await.is_empty());

        // Epochs 2 and 3 over, 4 not yet: still nothing (4 was queued before 2 ended).
        release.send(3).unwrap();
        settle().await;
        assert!(acked.lock().await.is_empty());

        // All over: one acknowledgement, of the newest.
        release.send(4).unwrap();
        settle().await;
        assert_eq!(*acked.lock().await, vec![4]);

        // A later install alone is acknowledged once its wait is over.
        release.send(5).unwrap();
        queue.push(pending(5));
        settle().await;
        assert_eq!(*acked.lock().await, vec![4, 5]);
        drop(queue);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_wait_is_tried_again_until_it_is_over() {
        let tries = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&tries);
        until_over(7, "test", move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { n >= 3 }
        })
        .await;
        assert_eq!(tries.load(std::sync::atomic::Ordering::Relaxed), 4);
    }
}
