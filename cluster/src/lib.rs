//! # redshard-cluster
//!
//! How several redshard proxies share one cluster through etcd. Each piece is a small handle
//! over one etcd client ([`Etcd`]); the proxy's controller and data path use them (see
//! `docs/fleet.md`):
//!
//! - [`EtcdTopologyStore`]: the topology in etcd, in the text a `topology_file` holds.
//!   [`EtcdTopologyStore::save`] is one etcd transaction that compares the stored epoch and
//!   the caller's leadership before it writes; [`EtcdTopologyStore::watch_topology`] follows
//!   the newest topology, never going back to an older epoch.
//! - [`Session`]: the proxy's lease, kept alive in the background, [`SessionState::Alive`]
//!   until a keep-alive has not succeeded for the lease's TTL ([`SessionState::Lost`]: the
//!   proxy must stop serving).
//! - [`Membership`]: the proxy's entry under `<prefix>/proxies/`, bound to its lease, with the
//!   epoch it has installed; [`Etcd::members`] and the barrier [`Etcd::wait_acked`].
//! - [`Election`] and [`Leadership`]: one leader among the proxies (a lease-bound key created
//!   only when absent); the key's create revision is the fencing token [`save`] compares.
//! - [`HealthReports`]: each proxy's view of the nodes, for the leader to weigh.
//!
//! The states of [`Session`] and [`Leadership`] are drawn in `LIFECYCLE.md` beside this file;
//! the keys in [`keys`](crate::keys)' table.
//!
//! [`save`]: EtcdTopologyStore::save

#![forbid(unsafe_code)]

mod election;
mod error;
mod health;
mod keys;
mod members;
mod session;
mod store;

use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use redshard_config::ClusterConfig;

pub use election::{Election, LeaderInfo, LeaderState, Leadership};
pub use error::{ClusterError, Laggard};
pub use health::{HealthReports, HealthView, NodeHealth};
pub use members::{Member, Membership};
pub use session::{Session, SessionState};
pub use store::{EtcdTopologyStore, TopologyWatch};

use keys::Keys;

/// Shortest wait before retrying a broken watch or keep-alive stream.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest wait between retries of a broken watch.
const RETRY_MAX: Duration = Duration::from_millis(1000);

/// A connection to etcd for one cluster (its key prefix), cheap to clone. The connection is
/// made lazily and again after etcd restarts; each request is bounded by the lease TTL.
#[derive(Clone)]
pub struct Etcd {
    /// The etcd client (clones share its connections).
    client: Client,
    /// The keys under the configured prefix.
    keys: Keys,
    /// The TTL of sessions' leases: also the bound on one request, since an answer later than
    /// that could no longer be acted on safely.
    lease_ttl: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("keys", &self.keys)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Prepares a client for the endpoints of `config`. Without credentials nothing is sent
    /// yet (a down etcd is no error here); with them, the user is authenticated at once.
    ///
    /// # Errors
    ///
    /// [`ClusterError::TlsFile`] when a TLS file cannot be read; [`ClusterError::Etcd`] when
    /// the endpoints are unusable or authentication fails; [`ClusterError::Timeout`].
    pub async fn connect(config: &ClusterConfig) -> Result<Etcd, ClusterError> {
        let lease_ttl = config.lease_ttl;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(lease_ttl / 2)
            .with_keep_alive(Duration::from_secs(1), lease_ttl / 2)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(auth) = &config.auth {
            // etcd's tokens expire (5 minutes by default); the client signs in again.
            options = options
                .with_user(auth.user.clone(), auth.password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &config.tls {
            let ca = read(&tls.ca_file).await?;
            let mut tls_options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some(cert) = &tls.client_cert {
                let chain = read(&cert.cert_file).await?;
                let key = read(&cert.key_file).await?;
                tls_options = tls_options.identity(Identity::from_pem(chain, key));
            }
            options = options.with_tls(tls_options);
        }
        let endpoints: Vec<String> = config.etcd.iter().map(ToString::to_string).collect();
        let client = bounded(lease_ttl, Client::connect(endpoints, Some(options))).await??;
        Ok(Etcd {
            client,
            keys: Keys::new(&config.prefix),
            lease_ttl,
        })
    }

    /// The TTL of this cluster's session leases.
    #[must_use]
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// The topology store of this cluster.
    #[must_use]
    pub fn topology_store(&self) -> EtcdTopologyStore {
        EtcdTopologyStore::new(self.clone())
    }

    /// A clone of the client, for one request (etcd-client's calls take `&mut self`).
    fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs one request, bounded by the lease TTL.
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        Ok(bounded(self.lease_ttl, request).await??)
    }
}

/// `future`, or [`ClusterError::Timeout`] after `limit`.
async fn bounded<T>(
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> Result<T, ClusterError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| ClusterError::Timeout(limit))
}

async fn read(path: &std::path::Path) -> Result<Vec<u8>, ClusterError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| ClusterError::TlsFile {
            path: path.to_owned(),
            source,
        })
}

/// This proxy's id in the fleet: `[cluster] proxy_id` when configured; else the client
/// listener `listen` when it names one proxy (a specific IP and port); else one made of the
/// host name and the process id, which differs between two proxies on one host.
///
/// # Errors
///
/// [`ClusterError::InvalidId`] when the host name makes an id etcd keys cannot hold.
pub fn proxy_id(
    config: &ClusterConfig,
    listen: std::net::SocketAddr,
) -> Result<String, ClusterError> {
    let id = match &config.proxy_id {
        Some(id) => id.clone(),
        None if !listen.ip().is_unspecified() && listen.port() != 0 => listen.to_string(),
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default();
            let host = if host.is_empty() {
                "redshard".to_owned()
            } else {
                host
            };
            format!("{host}-{}", std::process::id())
        }
    };
    redshard_config::cluster::check_proxy_id(&id).map_err(|reason| ClusterError::InvalidId {
        id: id.clone(),
        reason,
    })?;
    Ok(id)
}

/// The wait before the next retry: doubles from [`RETRY_MIN`] up to [`RETRY_MAX`].
fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(RETRY_MIN, RETRY_MAX)
}

/// The time left until `deadline`, zero when it passed.
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn config(id: Option<&str>) -> ClusterConfig {
        let text = format!(
            "[cluster]\netcd = [\"127.0.0.1:2379\"]\n{}\n\
             [[shard]]\nname = \"s\"\nmaster = \"127.0.0.1:1\"\nslots = [\"0-16383\"]\n",
            id.map_or(String::new(), |id| format!("proxy_id = {id:?}"))
        );
        redshard_config::Config::from_toml_str(&text, "test")
            .unwrap()
            .cluster
            .unwrap()
    }

    #[test]
    fn the_proxy_id_is_the_configured_one_else_the_listen_address() {
        let listen: SocketAddr = "10.0.0.5:6379".parse().unwrap();
        assert_eq!(proxy_id(&config(Some("p1")), listen).unwrap(), "p1");
        assert_eq!(proxy_id(&config(None), listen).unwrap(), "10.0.0.5:6379");
    }

    #[test]
    fn an_address_shared_by_several_proxies_is_no_id() {
        for listen in ["0.0.0.0:6379", "127.0.0.1:0"] {
            let id = proxy_id(&config(None), listen.parse().unwrap()).unwrap();
            assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        }
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        assert_eq!(next_backoff(Duration::ZERO), RETRY_MIN);
        assert_eq!(next_backoff(RETRY_MIN), RETRY_MIN * 2);
        assert_eq!(next_backoff(RETRY_MAX), RETRY_MAX);
    }
}
