//! Connections opened ahead of need (`[backend] ready_connections`): one per node and
//! protocol, connected and authenticated, for the next client that needs a connection of its
//! own (a blocking command, a transaction, a subscription).
//!
//! Without one, such a client's first command waits for a TCP connect, AUTH (and TLS) before
//! it reaches the node, and a command another client sends right after it over a shared lane,
//! already open, gets there first: a `PUBLISH` sent a moment after a `SUBSCRIBE` reached no
//! subscriber, an `LPUSH` right after a `BLPOP` was not popped by it, as never with one
//! server. With one ready, the command is written at once.
//!
//! Each take starts the next connect in the background (tried again, backing off as lanes do,
//! while the node cannot be reached), so a node keeps at most one idle connection per
//! protocol in use. A ready connection the node closed meanwhile (a restart, its `timeout`)
//! is noticed when taken, with one poll that does not wait, and not used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::FutureExt;
use redshard_config::NodeAddr;
use redshard_protocol::resp::Protocol;
use tokio::io::AsyncReadExt;

use super::connect::connect_lane;
use super::stream::BackendStream;
use super::LaneConfig;

/// The connections ready for one node.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    /// The connection ready for each protocol (RESP2, RESP3), if one is.
    slots: Mutex<[Option<BackendStream>; 2]>,
    /// Whether a connect is running for each protocol, so that one at a time is.
    filling: [AtomicBool; 2],
}

/// The slot of `protocol`.
fn slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Resp2 => 0,
        Protocol::Resp3 => 1,
    }
}

impl Ready {
    /// The connection ready for `protocol`, if one is and the node has not closed it; starts
    /// opening the next one either way.
    pub(crate) fn take(
        self: &Arc<Self>,
        addr: &NodeAddr,
        protocol: Protocol,
        config: &Arc<LaneConfig>,
    ) -> Option<BackendStream> {
        let taken =
            self.slots.lock().unwrap_or_else(PoisonError::into_inner)[slot(protocol)].take();
        self.fill(addr, protocol, config);
        taken.and_then(|mut stream| still_open(&mut stream).then_some(stream))
    }

    /// Whether a connection is ready for `protocol` now.
    pub(crate) fn has(&self, protocol: Protocol) -> bool {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)[slot(protocol)].is_some()
    }

    /// Opens a connection for `protocol` in the background unless one is ready or opening;
    /// it is dropped unused when the node is (the task holds no strong reference).
    pub(crate) fn fill(
        self: &Arc<Self>,
        addr: &NodeAddr,
        protocol: Protocol,
        config: &Arc<LaneConfig>,
    ) {
        let i = slot(protocol);
        if self.filling[i].swap(true, Ordering::AcqRel) {
            return;
        }
        if self.slots.lock().unwrap_or_else(PoisonError::into_inner)[i].is_some() {
            self.filling[i].store(false, Ordering::Release);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.filling[i].store(false, Ordering::Release);
            return;
        };
        let ready: Weak<Self> = Arc::downgrade(self);
        let addr = addr.clone();
        let config = Arc::clone(config);
        runtime.spawn(async move {
            // A node that cannot be reached now is tried again, backing off as lanes do,
            // for as long as the node is in use.
            let mut backoff = config.backoff_min;
            loop {
                let opened = connect_lane(&addr, protocol, &config).await;
                let Some(ready) = ready.upgrade() else { return };
                if let Ok(stream) = opened {
                    ready.slots.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(stream);
                    ready.filling[i].store(false, Ordering::Release);
                    return;
                }
                drop(ready);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.backoff_max);
            }
        });
    }
}

/// Whether the node has neither closed `stream` nor sent anything on it (a connection nobody
/// used has nothing to read). One poll, which does not wait.
fn still_open(stream: &mut BackendStream) -> bool {
    let mut byte = [0u8; 1];
    // Pending: nothing arrived and the node has not closed it.
    stream.read(&mut byte).now_or_never().is_none()
}
