//! A proxy's etcd session: one lease, renewed in the background. See `LIFECYCLE.md`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{bounded, ClusterError, Etcd};

/// How soon a failed renewal is tried again (on a new stream).
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(200);

/// Where a [`Session`] is (see `LIFECYCLE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// A keep-alive succeeded less than a TTL ago (counted from when it was sent): etcd still
    /// holds the lease and every key bound to it.
    Alive,
    /// No keep-alive succeeded for a whole TTL, or etcd said the lease is gone: the keys bound
    /// to it are (or are about to be) deleted, and no other proxy waits for this one. Final:
    /// a proxy that wants to serve again starts a new session.
    Lost,
    /// Revoked by [`Session::close`] on a clean stop. Final.
    Closed,
}

/// A lease with its keep-alive task. Clones share the lease; the keep-alive stops when the
/// last clone is dropped (the lease then expires within its TTL) or on [`Session::close`].
#[derive(Clone, Debug)]
pub struct Session {
    /// Shared by the clones, so the keep-alive lives as long as any of them.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The etcd connection, to revoke the lease.
    etcd: Etcd,
    /// The lease id, what keys are bound to.
    lease: i64,
    /// The current state, published by the keep-alive task.
    state: watch::Receiver<SessionState>,
    /// Sets [`SessionState::Closed`] after a revoke.
    set_state: watch::Sender<SessionState>,
    /// The keep-alive task, aborted when the last clone goes.
    task: JoinHandle<()>,
    /// When renewals last succeeded, written by the keep-alive task (see [`Contact`]).
    contact: Arc<Mutex<Contact>>,
    /// The lease's TTL: contact lapses after half of it without a renewal.
    ttl: Duration,
}

/// Whether the session is in touch with etcd, which a proxy tells the others when etcd
/// may be down (see `docs/fleet.md`, "etcd entirely down").
#[derive(Clone, Copy, Debug)]
struct Contact {
    /// When the last renewal that succeeded was sent (the grant at first).
    renewed: Instant,
    /// Since when renewals have succeeded without a gap of half a TTL.
    since: Instant,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Grants a lease of the cluster's TTL and starts keeping it alive.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd does not grant it.
    pub async fn start(etcd: &Etcd) -> Result<Session, ClusterError> {
        let ttl = etcd.lease_ttl();
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let sent = Instant::now();
        let granted = etcd.call(etcd.client().lease_grant(secs, None)).await?;
        let lease = granted.id();
        // etcd may lengthen a TTL below its minimum, never shorten one: ours is the bound.
        let (set_state, state) = watch::channel(SessionState::Alive);
        let contact = Arc::new(Mutex::new(Contact {
            renewed: sent,
            since: Instant::now(),
        }));
        let task = tokio::spawn(keep_alive(
            etcd.clone(),
            lease,
            ttl,
            sent,
            set_state.clone(),
            Arc::clone(&contact),
        ));
        Ok(Session {
            inner: Arc::new(Inner {
                etcd: etcd.clone(),
                lease,
                state,
                set_state,
                task,
                contact,
                ttl,
            }),
        })
    }

    /// The lease id.
    #[must_use]
    pub fn lease(&self) -> i64 {
        self.inner.lease
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> SessionState {
        *self.inner.state.borrow()
    }

    /// Whether the session is [`SessionState::Alive`].
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.state() == SessionState::Alive
    }

    /// Whether the session is alive and in touch with etcd: a renewal sent less than half a
    /// TTL ago succeeded. Renewals are sent every third of the TTL, so a session out of touch
    /// has missed one at least: etcd may be down, or this proxy cut off from it.
    #[must_use]
    pub fn in_contact(&self) -> bool {
        self.contact_since().is_some()
    }

    /// Since when the session has been in touch with etcd without a lapse (see
    /// [`Session::in_contact`]); `None` while it is not. A proxy that lapsed may have told
    /// others it cannot reach etcd: it waits before deciding anything (`docs/fleet.md`).
    #[must_use]
    pub fn contact_since(&self) -> Option<Instant> {
        if !self.is_alive() {
            return None;
        }
        let contact = *self
            .inner
            .contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (contact.renewed.elapsed() <= self.inner.ttl / 2).then_some(contact.since)
    }

    /// When the last renewal that succeeded was sent (the grant, before any).
    #[must_use]
    pub fn renewed_at(&self) -> Instant {
        self.inner
            .contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .renewed
    }

    /// A receiver of every state change, for the proxy to stop serving on `Lost`. Once every
    /// clone of the session is dropped its channel closes: treat that as `Lost` too (nothing
    /// renews the lease any more).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.inner.state.clone()
    }

    /// Returns once the session is no longer alive, with its final state.
    pub async fn ended(&self) -> SessionState {
        let mut state = self.subscribe();
        let ended = match state.wait_for(|s| *s != SessionState::Alive).await {
            Ok(s) => *s,
            Err(_) => SessionState::Lost,
        };
        ended
    }

    /// [`ClusterError::SessionLost`] unless the session is alive.
    pub(crate) fn check_alive(&self) -> Result<(), ClusterError> {
        if self.is_alive() {
            Ok(())
        } else {
            Err(ClusterError::SessionLost {
                lease: self.lease(),
            })
        }
    }

    /// Revokes the lease (a clean stop): every key bound to it is deleted at once, so the
    /// others need not wait for its TTL. The session is then [`SessionState::Closed`].
    ///
    /// # Errors
    ///
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be told; the
    /// keep-alive has stopped anyway, so the lease expires within its TTL.
    pub async fn close(&self) -> Result<(), ClusterError> {
        self.inner.task.abort();
        let etcd = &self.inner.etcd;
        let result = etcd.call(etcd.client().lease_revoke(self.lease())).await;
        self.inner.set_state.send_replace(SessionState::Closed);
        match result {
            Ok(_) => Ok(()),
            // Already expired: the keys are gone either way.
            Err(ClusterError::Etcd(e)) if e.to_string().contains("requested lease not found") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Renews the lease every third of its TTL until a whole TTL passes without a success
/// (counted from the sending of the last renewal that succeeded, so the proxy gives up no
/// later than etcd could let the lease expire) or etcd says the lease is gone.
async fn keep_alive(
    etcd: Etcd,
    lease: i64,
    ttl: Duration,
    granted_at: Instant,
    state: watch::Sender<SessionState>,
    contact: Arc<Mutex<Contact>>,
) {
    let interval = ttl / 3;
    let mut last_ok = granted_at;
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = granted_at + interval;
    loop {
        let deadline = last_ok + ttl;
        tokio::time::sleep_until(next.min(deadline).into()).await;
        if Instant::now() >= deadline {
            tracing::warn!(
                lease,
                "etcd session lost: no keep-alive succeeded for {ttl:?}"
            );
            state.send_replace(SessionState::Lost);
            return;
        }
        next = Instant::now() + interval;
        let sent = Instant::now();
        let attempt = bounded(crate::left(deadline).min(interval), async {
            if stream.is_none() {
                stream = Some(etcd.client().lease_keep_alive(lease).await?);
            }
            let Some((keeper, responses)) = stream.as_mut() else {
                return Ok(None);
            };
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        match attempt {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                last_ok = sent;
                let mut contact = contact.lock().unwrap_or_else(PoisonError::into_inner);
                // Out of touch just before this answer (and maybe said so to another proxy):
                // contact starts again now.
                if contact.renewed.elapsed() > ttl / 2 {
                    contact.since = Instant::now();
                }
                contact.renewed = sent;
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease, "etcd session lost: etcd says the lease expired");
                state.send_replace(SessionState::Lost);
                return;
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                // The stream broke (etcd restarting, a connection lost): open a new one at
                // the next renewal, a third of the TTL later at most.
                stream = None;
                next = next.min(Instant::now() + RETRY_AFTER_ERROR.min(interval));
            }
        }
    }
}
