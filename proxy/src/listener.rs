//! The accept loop.
//!
//! Like Redis, a client over `max_clients` is accepted, told
//! `-ERR max number of clients reached` and closed. `max_clients` is read from the live
//! configuration at each accept, so a reload applies to the next client (clients already
//! connected stay, as with Redis's `CONFIG SET maxclients`). Accept errors (for example running out of
//! file descriptors) back off instead of spinning. Each connection runs in its own task with a
//! tracing span carrying the peer address.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{error, info, Instrument};

use crate::session::Session;
use crate::shutdown::Shutdown;
use crate::state::ProxyState;

/// Accepts clients on `listener` until `shutdown` fires, then waits for every session to
/// finish its in-flight replies (the caller bounds that wait with the grace period).
pub async fn run(listener: TcpListener, state: Arc<ProxyState>, mut shutdown: Shutdown) {
    // Sessions running; only this loop increments it, so it never overshoots `max_clients`.
    let active = Arc::new(AtomicUsize::new(0));
    // Each session holds a clone of `done_tx`; `done_rx` completes when the last one is gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (mut socket, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                error!(error = %e, retry_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if active.load(Ordering::Acquire) >= state.live.load().limits.max_clients {
            state
                .clients
                .rejected_connections
                .fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = socket
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        let permit = Active::enter(&active);
        let _ = socket.set_nodelay(true);
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        let done = done_tx.clone();
        let span = tracing::info_span!("client", peer = %peer);
        tokio::spawn(
            async move {
                if let Ok(session) = Session::new(socket, state, shutdown) {
                    session.run().await;
                }
                drop(permit);
                drop(done);
            }
            .instrument(span),
        );
    }
    drop(listener);
    drop(done_tx);
    info!("stopped accepting; waiting for sessions to finish");
    let _ = done_rx.recv().await;
}

/// One running session in the count of active sessions; leaves it when dropped.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
