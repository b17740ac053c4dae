//! The errors of the coordination layer. Their `Display` is what an operator reads in a log.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A member that had not acknowledged an epoch when a barrier gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Laggard {
    /// The proxy's id.
    pub id: String,
    /// The epoch it has acknowledged.
    pub epoch: u64,
}

impl fmt::Display for Laggard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at epoch {})", self.id, self.epoch)
    }
}

/// Why an operation on etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd refused the request or could not be reached (the client's own error).
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd did not answer in time.
    #[error("etcd did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// A compare-and-swap of the topology found another epoch than the caller's: someone saved
    /// a topology since the caller read it. Nothing was written.
    #[error("the topology in etcd is at epoch {}, not {expected}; read it again and retry", found.map_or_else(|| "(none)".to_owned(), |e| e.to_string()))]
    Conflict {
        /// The epoch the caller based its change on.
        expected: u64,
        /// The epoch in etcd; `None` when there is no topology.
        found: Option<u64>,
    },
    /// The caller's leadership (its fencing token) is no longer the current one. Nothing was
    /// written.
    #[error("this proxy is not the leader any more (its leadership at revision {token} ended); the current leader decides")]
    NotLeader {
        /// The fencing token of the leadership that ended.
        token: i64,
    },
    /// A save whose topology does not advance the epoch.
    #[error("the new topology's epoch {new} is not above the epoch {expected} it replaces")]
    EpochNotIncreasing {
        /// The epoch the caller based its change on.
        expected: u64,
        /// The epoch of the topology it tried to save.
        new: u64,
    },
    /// etcd holds no topology under the prefix yet.
    #[error("etcd holds no topology at {key}")]
    NoTopology {
        /// The key looked up.
        key: String,
    },
    /// A value redshard wrote could not be read back.
    #[error("the value of {key} in etcd is invalid: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The session's lease expired or could not be renewed for its whole TTL; whatever was
    /// registered under it is gone (or about to be).
    #[error("the etcd session (lease {lease:x}) is lost")]
    SessionLost {
        /// The lease id.
        lease: i64,
    },
    /// A barrier's timeout passed before every live proxy acknowledged its epoch.
    #[error("epoch {epoch} was not acknowledged within {} ms by {}", timeout.as_millis(), list(laggards))]
    BarrierTimeout {
        /// The epoch waited for.
        epoch: u64,
        /// How long the barrier waited.
        timeout: Duration,
        /// The live proxies that had not acknowledged it.
        laggards: Vec<Laggard>,
    },
    /// A TLS file named in `[cluster]` could not be read.
    #[error("cannot read {}: {source}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy id is not usable as the last part of an etcd key.
    #[error("proxy id {id:?} {reason}")]
    InvalidId {
        /// The id.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn list(laggards: &[Laggard]) -> String {
    let names: Vec<String> = laggards.iter().map(ToString::to_string).collect();
    names.join(", ")
}
