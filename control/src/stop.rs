//! The clean stop: when the run marker may leave the topology file.
//!
//! A serving proxy's topology file carries the run marker (see `redshard_config::store`); a
//! start that finds it marks every in-sync replica stale, because with proxy mirroring a
//! proxy that stopped in the middle of its work may leave writes on the masters that the
//! replicas never got. A stop is clean, and the marker is removed, only when nothing of that
//! kind is left: the clients were drained within the grace period, every in-sync replica's
//! mirror stream is intact and has no write in flight, and the controller has no report of
//! the data path left to act on (a replica that failed a write, a master connection lost with
//! mirrored writes in flight, a restarted node). Otherwise the marker stays and the next start
//! resynchronises the replicas: slower, never wrong.

use std::time::{Duration, Instant};

use redshard_config::TopologyStore;
use tracing::{info, warn};

use super::Controller;
use redshard_dataplane::events::ControlEvent;

/// How often the stop looks again at mirrored writes still in flight.
const SETTLE_POLL: Duration = Duration::from_millis(5);

impl Controller {
    /// After the drain (`drained`: every client finished in time), removes the run marker
    /// from the topology file if the stop is clean (see the module docs), waiting until
    /// `deadline` at most for mirrored writes still in flight. Logs the outcome.
    pub async fn record_stop(&self, drained: bool, deadline: Instant) {
        let store = match &self.store {
            super::Store::File(store) => store,
            super::Store::Etcd(fleet) => {
                // A clean stop: another proxy leads at once, and none waits for this lease.
                fleet.leave().await;
                return;
            }
            super::Store::None => return,
        };
        if let Err(reason) = self.settled(drained, deadline).await {
            warn!(%reason, "not a clean stop: the next start resynchronises every replica");
            return;
        }
        // Under the change lock, so no change saved after this one puts the marker back.
        let _guard = self.change_lock.lock().await;
        store.set_running(false);
        let topology = std::sync::Arc::clone(self.state.router.load().topology());
        match store.save(&topology) {
            Ok(()) => info!("stopped cleanly: the next start trusts the in-sync replicas"),
            Err(e) => {
                store.set_running(true);
                warn!(error = %e, "the clean stop could not be recorded: the next start resynchronises every replica");
            }
        }
    }

    /// `Ok` when the stop is clean; otherwise why not.
    async fn settled(&self, drained: bool, deadline: Instant) -> Result<(), String> {
        if !drained {
            return Err("clients were still being served at the end of the grace period".into());
        }
        // Mirrored writes whose clients left, or acknowledged early (`async`), may still be
        // on their way to the replicas.
        loop {
            match self.mirror_pending() {
                Ok(None) => break,
                Ok(Some(_)) if Instant::now() < deadline => tokio::time::sleep(SETTLE_POLL).await,
                Ok(Some(busy)) => {
                    return Err(format!(
                    "mirrored writes to {busy} were still in flight at the end of the grace period"
                ))
                }
                Err(reason) => return Err(reason),
            }
        }
        // The controller's task gives its inbox back when it ends; what is still in it was
        // never acted on.
        let mut events = loop {
            let returned = self
                .returned_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            match returned {
                Some(events) => break events,
                None if Instant::now() < deadline => tokio::time::sleep(SETTLE_POLL).await,
                None => {
                    return Err(
                        "the controller was still busy at the end of the grace period".into(),
                    )
                }
            }
        };
        while let Ok(event) = events.try_recv() {
            match event {
                // Nothing to settle: the client's reply is dropped (its connection closes).
                ControlEvent::ConnectionLost { .. }
                | ControlEvent::KillScript { .. }
                | ControlEvent::EveryNode { .. }
                | ControlEvent::SaveUsers { .. } => {}
                unsettled => return Err(format!("not acted on: {unsettled:?}")),
            }
        }
        if self.book().any_write_loss() {
            return Err("a master lost a connection with mirrored writes in flight".into());
        }
        Ok(())
    }

    /// The first in-sync replica with mirrored writes in flight, if any.
    ///
    /// # Errors
    /// An in-sync replica whose mirror stream failed: its stale state may not be recorded.
    fn mirror_pending(&self) -> Result<Option<redshard_config::NodeAddr>, String> {
        let table = self.state.router.load();
        let mirror = self.state.router.mirror();
        let mut busy = None;
        for shard in &table.topology().shards {
            for replica in shard.in_sync_replicas() {
                let Some(link) = mirror.link(&replica.addr) else {
                    continue;
                };
                if !link.is_active() {
                    return Err(format!(
                        "replica {} failed a mirrored write while in sync",
                        replica.addr
                    ));
                }
                if link.backlog() > 0 && busy.is_none() {
                    busy = Some(replica.addr.clone());
                }
            }
        }
        Ok(busy)
    }
}
