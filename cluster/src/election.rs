//! One leader among the proxies: a key `<prefix>/leader` created only when absent, bound to
//! the leader's session lease. Its create revision is the leadership's fencing token: a new
//! leadership always has a higher one, and [`crate::EtcdTopologyStore::save`] writes only
//! while the token is current. See `LIFECYCLE.md`.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, Txn, TxnOp, TxnOpResponse, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{ClusterError, Etcd, Session, SessionState};

/// The current leader, as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leading proxy's id.
    pub id: String,
    /// Its fencing token (the leader key's create revision).
    pub token: i64,
}

/// Where a [`Leadership`] is (see `LIFECYCLE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderState {
    /// The leader key is ours and the session alive: this proxy decides.
    Leading,
    /// The leader key was deleted or replaced, or the session was lost. Final.
    Lost,
    /// Given up by [`Leadership::resign`]. Final.
    Resigned,
}

/// A proxy's candidacy for the leadership of its cluster.
#[derive(Clone, Debug)]
pub struct Election {
    /// The etcd connection and key layout.
    etcd: Etcd,
    /// The session the leader key is bound to: when it is lost, so is the leadership.
    session: Session,
    /// This proxy's id, the leader key's value.
    id: String,
}

impl Election {
    /// A candidate `id` whose leadership will be bound to `session`.
    #[must_use]
    pub fn new(etcd: &Etcd, session: &Session, id: impl Into<String>) -> Election {
        Election {
            etcd: etcd.clone(),
            session: session.clone(),
            id: id.into(),
        }
    }

    /// The current leader; `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be read.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, ClusterError> {
        leader(&self.etcd).await
    }

    /// Waits until this proxy leads, and returns its leadership. Waiting costs nothing: the
    /// candidate watches the leader key and tries again when it is deleted (its leader
    /// resigned, or its lease expired).
    ///
    /// # Errors
    ///
    /// [`ClusterError::SessionLost`] when the session ends meanwhile (campaign again with a
    /// new one); [`ClusterError::Etcd`] or [`ClusterError::Timeout`] only for the first
    /// attempt: later failures of etcd are waited out.
    pub async fn campaign(&self) -> Result<Leadership, ClusterError> {
        let mut backoff = Duration::ZERO;
        let mut first = true;
        loop {
            self.session.check_alive()?;
            match self.try_lead().await {
                Ok(Ok(leadership)) => return Ok(leadership),
                Ok(Err(revision)) => {
                    backoff = Duration::ZERO;
                    first = false;
                    self.wait_for_vacancy(revision).await;
                }
                Err(e) if first => return Err(e),
                Err(e) => {
                    tracing::debug!("campaigning for leadership: {e}");
                    backoff = crate::next_backoff(backoff);
                    tokio::select! {
                        // A pause before trying etcd again, not a wait for an event.
                        () = tokio::time::sleep(backoff) => {}
                        _ = self.session.ended() => {}
                    }
                }
            }
        }
    }

    /// One attempt: the leadership, or the revision at which another leader was seen.
    async fn try_lead(&self) -> Result<Result<Leadership, i64>, ClusterError> {
        let key = self.etcd.keys.leader();
        let lease = self.session.lease();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.id.as_str(),
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let response = self.etcd.call(self.etcd.client().txn(txn)).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        if response.succeeded() {
            return Ok(Ok(Leadership::start(self, revision)));
        }
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    // Ours already (a campaign retried after its answer was lost).
                    if kv.lease() == lease && kv.value() == self.id.as_bytes() {
                        return Ok(Ok(Leadership::start(self, kv.create_revision())));
                    }
                }
            }
        }
        Ok(Err(revision))
    }

    /// Returns when the leader key may be free: deleted after `revision`, the watch broken,
    /// or the session ended.
    async fn wait_for_vacancy(&self, revision: i64) {
        let key = self.etcd.keys.leader();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut client = self.etcd.client();
        let watch = async {
            let Ok(Ok(mut stream)) = crate::bounded(
                self.etcd.lease_ttl,
                client.watch(key.as_str(), Some(options)),
            )
            .await
            else {
                return;
            };
            while let Ok(Some(message)) = stream.message().await {
                if message.canceled()
                    || message
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                {
                    return;
                }
            }
        };
        tokio::select! {
            () = watch => {}
            _ = self.session.ended() => {}
        }
    }
}

impl Etcd {
    /// The current leader; `None` when there is none. Needs no session: any client of the
    /// cluster (the admin port, a tool) may ask.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be read.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, ClusterError> {
        leader(self).await
    }
}

/// The current leader of the cluster of `etcd`.
async fn leader(etcd: &Etcd) -> Result<Option<LeaderInfo>, ClusterError> {
    Ok(leader_at(etcd).await?.0)
}

/// The current leader and the store revision it was read at.
async fn leader_at(etcd: &Etcd) -> Result<(Option<LeaderInfo>, i64), ClusterError> {
    let key = etcd.keys.leader();
    let response = etcd.call(etcd.client().get(key.as_str(), None)).await?;
    let revision = response.header().map_or(0, |h| h.revision());
    let info = response.kvs().first().map(|kv| LeaderInfo {
        id: String::from_utf8_lossy(kv.value()).into_owned(),
        token: kv.create_revision(),
    });
    Ok((info, revision))
}

/// This proxy's leadership, until it is lost or resigned. Clones share it; its watch task
/// stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// Shared by the clones.
    inner: Arc<LeadershipInner>,
}

#[derive(Debug)]
struct LeadershipInner {
    /// The etcd connection, to resign.
    etcd: Etcd,
    /// The fencing token: the leader key's create revision.
    token: i64,
    /// The current state, published by the watch task.
    state: watch::Receiver<LeaderState>,
    /// Sets [`LeaderState::Resigned`].
    set_state: watch::Sender<LeaderState>,
    /// The task that sees the leadership end.
    task: JoinHandle<()>,
}

impl Drop for LeadershipInner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Leadership {
    fn start(election: &Election, token: i64) -> Leadership {
        let (set_state, state) = watch::channel(LeaderState::Leading);
        // The guard follows the session's state without holding the session: a leadership
        // must not keep renewing the lease of a proxy that dropped its session.
        let task = tokio::spawn(guard(
            election.etcd.clone(),
            election.session.subscribe(),
            token,
            set_state.clone(),
        ));
        Leadership {
            inner: Arc::new(LeadershipInner {
                etcd: election.etcd.clone(),
                token,
                state,
                set_state,
                task,
            }),
        }
    }

    /// The fencing token: what [`crate::EtcdTopologyStore::save`] compares, higher for every
    /// later leadership.
    #[must_use]
    pub fn token(&self) -> i64 {
        self.inner.token
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> LeaderState {
        *self.inner.state.borrow()
    }

    /// Whether this proxy still leads, as far as it knows (a save checks it in etcd).
    #[must_use]
    pub fn is_leading(&self) -> bool {
        self.state() == LeaderState::Leading
    }

    /// A receiver of the state, for the controller to stop deciding on `Lost`.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.inner.state.clone()
    }

    /// Returns once the leadership ended, with its final state.
    pub async fn ended(&self) -> LeaderState {
        let mut state = self.subscribe();
        let ended = match state.wait_for(|s| *s != LeaderState::Leading).await {
            Ok(s) => *s,
            Err(_) => LeaderState::Lost,
        };
        ended
    }

    /// Gives the leadership up (a clean stop): deletes the leader key if it is still this
    /// leadership's, so another candidate leads at once instead of after the lease's TTL.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be told; the
    /// leadership counts as resigned anyway and ends with the session's lease.
    pub async fn resign(&self) -> Result<(), ClusterError> {
        self.inner.task.abort();
        self.inner.set_state.send_replace(LeaderState::Resigned);
        let etcd = &self.inner.etcd;
        let key = etcd.keys.leader();
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                self.token(),
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        etcd.call(etcd.client().txn(txn)).await?;
        Ok(())
    }
}

/// Watches the leader key from the leadership's revision and says `Lost` when it is deleted
/// or replaced, or when the session is lost. While etcd cannot be reached the leadership lasts
/// as long as the session: the key cannot expire before the session's lease does. A session
/// dropped by its owner counts as lost (its lease is no longer renewed).
async fn guard(
    etcd: Etcd,
    mut session: watch::Receiver<SessionState>,
    token: i64,
    state: watch::Sender<LeaderState>,
) {
    let watching = async {
        let key = etcd.keys.leader();
        let mut revision = token;
        let mut backoff = Duration::ZERO;
        loop {
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let mut client = etcd.client();
            if let Ok(Ok(mut stream)) =
                crate::bounded(etcd.lease_ttl, client.watch(key.as_str(), Some(options))).await
            {
                while let Ok(Some(message)) = stream.message().await {
                    if message.canceled() {
                        break;
                    }
                    for event in message.events() {
                        let Some(kv) = event.kv() else { continue };
                        revision = revision.max(kv.mod_revision());
                        if event.event_type() == EventType::Delete || kv.create_revision() != token
                        {
                            return;
                        }
                    }
                }
            }
            backoff = crate::next_backoff(backoff);
            // A pause before trying etcd again, not a wait for an event.
            tokio::time::sleep(backoff).await;
            match leader_at(&etcd).await {
                Ok((Some(info), at)) if info.token == token => {
                    // Still ours: watch again from there.
                    backoff = Duration::ZERO;
                    revision = at;
                }
                Ok(_) => return,
                Err(e) => tracing::debug!("checking the leadership in etcd: {e}"),
            }
        }
    };
    tokio::select! {
        () = watching => {}
        _ = session.wait_for(|s| *s != SessionState::Alive) => {}
    }
    tracing::warn!(token, "leadership lost");
    state.send_replace(LeaderState::Lost);
}
