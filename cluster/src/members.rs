//! Membership of the fleet and the epoch barrier.
//!
//! Each proxy keeps `<prefix>/proxies/<id>` bound to its session's lease, holding its client
//! address and the topology epoch it has installed. A proxy whose lease expires disappears
//! from the list, so a barrier stops waiting for it.

use std::time::{Duration, Instant};

use etcd_client::{GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{ClusterError, Etcd, Laggard, Session};

/// One live proxy of the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: String,
    /// The address its clients connect to.
    pub addr: String,
    /// The address of its admin port, when it has one (for admin commands forwarded to the
    /// leader).
    pub admin: Option<String>,
    /// The newest topology epoch it has installed.
    pub epoch: u64,
}

/// The value of a member key.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The client address.
    addr: String,
    /// The admin port's address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    admin: Option<String>,
    /// The acknowledged epoch.
    epoch: u64,
}

/// This proxy's registration in the fleet, bound to its session.
#[derive(Debug)]
pub struct Membership {
    /// The etcd connection and key layout.
    etcd: Etcd,
    /// The session the member key is bound to.
    session: Session,
    /// This proxy's id.
    id: String,
    /// This proxy's client address.
    addr: String,
    /// This proxy's admin address, if it has an admin port.
    admin: Option<String>,
    /// The highest epoch acknowledged; writes are serialised so an older epoch never
    /// replaces a newer one in etcd.
    epoch: Mutex<u64>,
}

impl Membership {
    /// Registers this proxy as `id`, reachable at `addr`, with `epoch` installed; the entry
    /// is bound to `session` and disappears with it. A proxy that started a new session after
    /// losing one registers again.
    ///
    /// # Errors
    ///
    /// [`ClusterError::SessionLost`] when `session` is not alive; [`ClusterError::InvalidId`];
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be written.
    pub async fn register(
        etcd: &Etcd,
        session: &Session,
        id: &str,
        addr: &str,
        epoch: u64,
    ) -> Result<Membership, ClusterError> {
        Self::register_with_admin(etcd, session, id, addr, None, epoch).await
    }

    /// [`Membership::register`], also recording the address of the proxy's admin port.
    ///
    /// # Errors
    ///
    /// As [`Membership::register`].
    pub async fn register_with_admin(
        etcd: &Etcd,
        session: &Session,
        id: &str,
        addr: &str,
        admin: Option<&str>,
        epoch: u64,
    ) -> Result<Membership, ClusterError> {
        redshard_config::cluster::check_proxy_id(id).map_err(|reason| ClusterError::InvalidId {
            id: id.to_owned(),
            reason,
        })?;
        let membership = Membership {
            etcd: etcd.clone(),
            session: session.clone(),
            id: id.to_owned(),
            addr: addr.to_owned(),
            admin: admin.map(str::to_owned),
            epoch: Mutex::new(epoch),
        };
        membership.write(epoch).await?;
        Ok(membership)
    }

    /// This proxy's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records that this proxy has installed `epoch` (ignored when not above the one
    /// recorded): barriers waiting for it may pass.
    ///
    /// # Errors
    ///
    /// As [`Membership::register`].
    pub async fn ack_epoch(&self, epoch: u64) -> Result<(), ClusterError> {
        let mut held = self.epoch.lock().await;
        if epoch <= *held {
            return Ok(());
        }
        self.write(epoch).await?;
        *held = epoch;
        Ok(())
    }

    async fn write(&self, epoch: u64) -> Result<(), ClusterError> {
        self.session.check_alive()?;
        let value = toml::to_string(&Record {
            addr: self.addr.clone(),
            admin: self.admin.clone(),
            epoch,
        })
        .map_err(|e| ClusterError::Corrupt {
            key: self.etcd.keys.proxy(&self.id),
            message: e.to_string(),
        })?;
        let options = PutOptions::new().with_lease(self.session.lease());
        self.etcd
            .call(
                self.etcd
                    .client()
                    .put(self.etcd.keys.proxy(&self.id), value, Some(options)),
            )
            .await?;
        Ok(())
    }
}

impl Etcd {
    /// Every live proxy of the fleet, by id.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be read.
    pub async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        Ok(self.members_at().await?.0)
    }

    /// The members and the store revision they were read at. Unreadable entries (written by
    /// something else than redshard) are skipped with a warning: they name no proxy to wait
    /// for.
    async fn members_at(&self) -> Result<(Vec<Member>, i64), ClusterError> {
        let prefix = self.keys.proxies();
        let response = self
            .call(
                self.client()
                    .get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut members = Vec::with_capacity(response.kvs().len());
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let id = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
            let record = std::str::from_utf8(kv.value())
                .map_err(|e| e.to_string())
                .and_then(|text| toml::from_str::<Record>(text).map_err(|e| e.to_string()));
            match record {
                Ok(record) => members.push(Member {
                    id,
                    addr: record.addr,
                    admin: record.admin,
                    epoch: record.epoch,
                }),
                Err(e) => tracing::warn!("ignoring the invalid member entry {key}: {e}"),
            }
        }
        Ok((members, revision))
    }

    /// The barrier: waits until every live proxy has acknowledged `epoch` or a newer one, and
    /// returns the members it saw then. A proxy whose lease expires stops counting; one that
    /// registers meanwhile counts. With no proxy registered it returns at once.
    ///
    /// # Errors
    ///
    /// [`ClusterError::BarrierTimeout`] naming the proxies still behind after `timeout`;
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be read at the
    /// start (later failures are retried until `timeout`).
    pub async fn wait_acked(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Vec<Member>, ClusterError> {
        let deadline = Instant::now() + timeout;
        let mut first = true;
        let mut laggards = Vec::new();
        loop {
            let revision = match self.members_at().await {
                Ok((members, revision)) => {
                    laggards = members
                        .iter()
                        .filter(|m| m.epoch < epoch)
                        .map(|m| Laggard {
                            id: m.id.clone(),
                            epoch: m.epoch,
                        })
                        .collect();
                    if laggards.is_empty() {
                        return Ok(members);
                    }
                    Some(revision)
                }
                Err(e) if first => return Err(e),
                Err(e) => {
                    tracing::debug!("barrier for epoch {epoch}: {e}");
                    None
                }
            };
            first = false;
            if Instant::now() >= deadline {
                return Err(ClusterError::BarrierTimeout {
                    epoch,
                    timeout,
                    laggards,
                });
            }
            let wait = async {
                match revision {
                    Some(revision) => self.wait_for_member_change(revision).await,
                    // A pause before trying etcd again, not a wait for an event.
                    None => tokio::time::sleep(crate::RETRY_MAX).await,
                }
            };
            let _ = tokio::time::timeout(crate::left(deadline), wait).await;
        }
    }

    /// Returns at the first change of a member entry after `revision`, or when the watch
    /// breaks (the caller reads the members again either way).
    async fn wait_for_member_change(&self, revision: i64) {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut client = self.client();
        let prefix = self.keys.proxies();
        let Ok(Ok(mut stream)) =
            crate::bounded(self.lease_ttl, client.watch(prefix.as_str(), Some(options))).await
        else {
            // A pause before trying etcd again, not a wait for an event.
            tokio::time::sleep(crate::RETRY_MIN).await;
            return;
        };
        while let Ok(Some(message)) = stream.message().await {
            if message.canceled() || !message.events().is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Record;

    #[test]
    fn a_record_without_an_admin_address_reads_and_writes_as_before() {
        let old: Record = toml::from_str("addr = \"127.0.0.1:6379\"\nepoch = 3\n").unwrap();
        assert_eq!(
            (old.addr.as_str(), old.admin, old.epoch),
            ("127.0.0.1:6379", None, 3)
        );
        let text = toml::to_string(&Record {
            addr: "127.0.0.1:6379".into(),
            admin: None,
            epoch: 3,
        })
        .unwrap();
        assert!(!text.contains("admin"), "{text}");
        let with: Record = toml::from_str(
            &toml::to_string(&Record {
                addr: "127.0.0.1:6379".into(),
                admin: Some("127.0.0.1:6390".into()),
                epoch: 4,
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(with.admin.as_deref(), Some("127.0.0.1:6390"));
    }
}
