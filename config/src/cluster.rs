//! `[cluster]`: several proxies sharing one cluster through etcd.
//!
//! ```toml
//! [cluster]
//! etcd = ["10.0.0.5:2379", "10.0.0.6:2379", "10.0.0.7:2379"]
//! prefix = "/redshard"
//! lease_ttl_ms = 3000
//! peer_poll_interval_ms = 500
//! proxy_id = "proxy-a"
//! advertise_admin = "10.0.0.21:6390"
//! user = "redshard"
//! password = "pw"
//! ca_file = "tls/etcd-ca.crt"
//! cert_file = "tls/etcd-client.crt"
//! key_file = "tls/etcd-client.key"
//! ```
//!
//! Without `[cluster]` (or without its `etcd` key) the proxy is alone and keeps its topology in
//! `topology_file`, exactly as before: [`crate::Config::cluster`] is `None`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::addr::NodeAddr;
use crate::config::CertFiles;
use crate::error::ConfigError;
use crate::validate::Source;

/// Default of `[cluster] prefix`: every key redshard writes in etcd starts with it.
pub const DEFAULT_CLUSTER_PREFIX: &str = "/redshard";
/// Default of `[cluster] lease_ttl_ms`: a proxy whose etcd session has not been renewed for
/// 3 s stops serving, and a dead leader is replaced within about that long.
pub const DEFAULT_LEASE_TTL_MS: u64 = 3_000;
/// Shortest `[cluster] lease_ttl_ms`: etcd grants no lease shorter than about 1.5 election
/// timeouts (2 s with its default settings) and would silently lengthen a shorter one.
pub const MIN_LEASE_TTL_MS: u64 = 2_000;
/// Longest `[cluster] lease_ttl_ms`: a minute without etcd is already far longer than a
/// proxy should serve a topology it cannot confirm.
pub const MAX_LEASE_TTL_MS: u64 = 60_000;
/// Most etcd endpoints in `[cluster] etcd`.
pub const MAX_ETCD_ENDPOINTS: usize = 16;
/// Default of `[cluster] forward_max_reply_bytes`: the largest reply of the leader that a
/// proxy relays to an admin client (a REBALANCE plan or MIGRATIONS list stays far below).
pub const DEFAULT_FORWARD_MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Largest `[cluster] forward_max_reply_bytes`.
pub const MAX_FORWARD_MAX_REPLY_BYTES: usize = 1024 * 1024 * 1024;
/// Default of `[cluster] forward_timeout_ms`, beyond the twice `[mirror] cutover_timeout_ms`
/// a graceful FAILOVER (the slowest leader-only command) may take at the leader.
pub const DEFAULT_FORWARD_SLACK_MS: u64 = 10_000;

/// Default of `[cluster] peer_poll_interval_ms`: how often a proxy out of touch with etcd asks
/// the other proxies whether they reach it (see `docs/fleet.md`, "etcd entirely down").
pub const DEFAULT_PEER_POLL_INTERVAL_MS: u64 = 500;
/// Shortest `[cluster] peer_poll_interval_ms`.
pub const MIN_PEER_POLL_INTERVAL_MS: u64 = 50;
/// Longest `[cluster] peer_poll_interval_ms`; it must also be at most a quarter of
/// `lease_ttl_ms`, so the other proxies are asked at least twice while this proxy's session is
/// at risk (from half a TTL without a renewal) and before it is lost.
pub const MAX_PEER_POLL_INTERVAL_MS: u64 = 15_000;
/// Longest `[cluster] prefix`, in bytes.
pub const MAX_CLUSTER_PREFIX_LEN: usize = 128;
/// Longest `[cluster] proxy_id`, in bytes.
pub const MAX_PROXY_ID_LEN: usize = 128;

/// `[cluster]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `etcd`: the etcd endpoints, `host:port` each (1 to [`MAX_ETCD_ENDPOINTS`]). Absent: no
    /// fleet; the proxy runs alone with `topology_file`.
    pub etcd: Option<Spanned<Vec<Spanned<String>>>>,
    /// `prefix`: the start of every key redshard writes in etcd, so several clusters can share
    /// one etcd. Default [`DEFAULT_CLUSTER_PREFIX`].
    pub prefix: Option<Spanned<String>>,
    /// `lease_ttl_ms`: the TTL of each proxy's etcd lease, whole seconds between
    /// [`MIN_LEASE_TTL_MS`] and [`MAX_LEASE_TTL_MS`]. Default [`DEFAULT_LEASE_TTL_MS`].
    pub lease_ttl_ms: Option<Spanned<u64>>,
    /// `peer_poll_interval_ms`: while this proxy is out of touch with etcd, how often it asks
    /// the other proxies (on their admin ports) whether any of them reaches etcd. Between
    /// [`MIN_PEER_POLL_INTERVAL_MS`] and a quarter of `lease_ttl_ms`. Default
    /// [`DEFAULT_PEER_POLL_INTERVAL_MS`].
    pub peer_poll_interval_ms: Option<Spanned<u64>>,
    /// `forward_timeout_ms`: how long a proxy waits for the leader's reply to an admin command
    /// it forwarded (the command goes on at the leader). Default: twice `[mirror]
    /// cutover_timeout_ms` plus [`DEFAULT_FORWARD_SLACK_MS`], what a graceful FAILOVER takes.
    pub forward_timeout_ms: Option<Spanned<u64>>,
    /// `forward_max_reply_bytes`: the largest leader's reply relayed; a bigger one is refused,
    /// not buffered. Default [`DEFAULT_FORWARD_MAX_REPLY_BYTES`].
    pub forward_max_reply_bytes: Option<Spanned<usize>>,
    /// `proxy_id`: this proxy's name in the fleet. Default: the client listener's `IP:port`
    /// when that names one proxy, else one made from the host name and process id.
    pub proxy_id: Option<Spanned<String>>,
    /// `advertise_admin`: the `host:port` at which the other proxies reach this proxy's admin
    /// port (commands they forward to the leader). Default: `admin_listen`, with the `listen`
    /// IP in place of a wildcard; needed when both are wildcards (`0.0.0.0`) or the proxy is
    /// reached through another address (NAT, containers).
    pub advertise_admin: Option<Spanned<String>>,
    /// `user`: etcd user to authenticate as; needs `password`.
    pub user: Option<Spanned<String>>,
    /// `password`: that user's password.
    pub password: Option<Spanned<String>>,
    /// `ca_file`: PEM certificate authorities that sign the etcd servers' certificates; set,
    /// the proxy speaks TLS (`https://`) to etcd.
    pub ca_file: Option<Spanned<String>>,
    /// `cert_file`: PEM certificate chain the proxy presents to etcd (client certificate
    /// authentication). Needs `key_file` and `ca_file`.
    pub cert_file: Option<Spanned<String>>,
    /// `key_file`: PEM private key of `cert_file`.
    pub key_file: Option<Spanned<String>>,
}

/// The validated `[cluster]`: where the fleet's shared state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The etcd endpoints, `host:port`, in the configured order.
    pub etcd: Vec<NodeAddr>,
    /// Key prefix: starts with `/`, does not end with one.
    pub prefix: String,
    /// TTL of the proxy's etcd lease: longer without renewing it, the proxy stops serving.
    pub lease_ttl: Duration,
    /// While out of touch with etcd, how often the proxy asks the other proxies whether any
    /// reaches it; an ask is given half of it. A leader changes the topology only once in
    /// touch with etcd for three of these without a lapse (see `docs/fleet.md`).
    pub peer_poll_interval: Duration,
    /// How long a forwarded admin command's reply is waited for; `None`: twice `[mirror]
    /// cutover_timeout_ms` plus [`DEFAULT_FORWARD_SLACK_MS`] (see
    /// [`ClusterFile::forward_timeout_ms`]).
    pub forward_timeout: Option<Duration>,
    /// The largest leader's reply relayed to an admin client.
    pub forward_max_reply_bytes: usize,
    /// This proxy's name in the fleet when configured; `None` lets the proxy derive one at
    /// start (see [`ClusterFile::proxy_id`]).
    pub proxy_id: Option<String>,
    /// Where the other proxies reach this proxy's admin port, when configured; `None` derives
    /// it from `admin_listen` and `listen` at start.
    pub advertise_admin: Option<NodeAddr>,
    /// etcd user and password, when etcd has authentication enabled.
    pub auth: Option<EtcdAuth>,
    /// TLS to etcd; `None` for plaintext.
    pub tls: Option<EtcdTlsConfig>,
}

/// An etcd user's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    /// The etcd user name.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// TLS to etcd. Paths are absolute once the file was read by [`crate::Config::load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTlsConfig {
    /// PEM certificate authorities that sign the etcd servers' certificates.
    pub ca_file: PathBuf,
    /// The certificate the proxy presents, when etcd verifies clients.
    pub client_cert: Option<CertFiles>,
}

/// Validates `[cluster]`: `None` when there is no fleet.
pub(crate) fn cluster(
    file: Option<Spanned<ClusterFile>>,
    src: &Source<'_>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(file) = file else {
        return Ok(None);
    };
    let table_span = file.span();
    let file = file.into_inner();
    let Some(etcd) = file.etcd else {
        return Err(src.invalid_at(
            Some(table_span),
            "cluster.etcd",
            "is missing: [cluster] needs the etcd endpoints, e.g. etcd = [\"127.0.0.1:2379\"]; remove [cluster] to run one proxy alone",
        ));
    };
    let etcd = endpoints(etcd, src)?;
    let prefix = match file.prefix {
        Some(prefix) => {
            check_prefix(prefix.get_ref())
                .map_err(|reason| src.invalid(Some(&prefix), "cluster.prefix", reason))?;
            prefix.into_inner()
        }
        None => DEFAULT_CLUSTER_PREFIX.to_owned(),
    };
    let ttl_span = file.lease_ttl_ms.as_ref().map(Spanned::span);
    let ttl = src.bounded(
        file.lease_ttl_ms,
        "cluster.lease_ttl_ms",
        DEFAULT_LEASE_TTL_MS,
        MIN_LEASE_TTL_MS,
        Some(MAX_LEASE_TTL_MS),
    )?;
    if ttl % 1000 != 0 {
        return Err(src.invalid_at(
            ttl_span,
            "cluster.lease_ttl_ms",
            format!("must be whole seconds (etcd leases count seconds), not {ttl}"),
        ));
    }
    let poll_span = file.peer_poll_interval_ms.as_ref().map(Spanned::span);
    let peer_poll = src.bounded(
        file.peer_poll_interval_ms,
        "cluster.peer_poll_interval_ms",
        DEFAULT_PEER_POLL_INTERVAL_MS,
        MIN_PEER_POLL_INTERVAL_MS,
        Some(MAX_PEER_POLL_INTERVAL_MS),
    )?;
    if peer_poll.saturating_mul(4) > ttl {
        return Err(src.invalid_at(
            poll_span.or(ttl_span),
            "cluster.peer_poll_interval_ms",
            format!("must be at most a quarter of cluster.lease_ttl_ms ({ttl}), not {peer_poll}: the other proxies must be asked at least twice between half a lease TTL without a renewal and the session's loss"),
        ));
    }
    let proxy_id = match file.proxy_id {
        Some(id) => {
            check_proxy_id(id.get_ref())
                .map_err(|reason| src.invalid(Some(&id), "cluster.proxy_id", reason))?;
            Some(id.into_inner())
        }
        None => None,
    };
    let advertise_admin = match file.advertise_admin {
        Some(value) => Some(
            advertised(&value)
                .map_err(|reason| src.invalid(Some(&value), "cluster.advertise_admin", reason))?,
        ),
        None => None,
    };
    let user_span = file.user.as_ref().map(Spanned::span);
    let password_span = file.password.as_ref().map(Spanned::span);
    let auth = match (
        src.secret(file.user, "cluster.user")?,
        src.secret(file.password, "cluster.password")?,
    ) {
        (None, None) => None,
        (Some(user), Some(password)) => Some(EtcdAuth { user, password }),
        (Some(_), None) => {
            return Err(src.invalid_at(
                user_span,
                "cluster.user",
                "is set but cluster.password is not; etcd authentication needs both",
            ));
        }
        (None, Some(_)) => {
            return Err(src.invalid_at(
                password_span,
                "cluster.password",
                "is set but cluster.user is not; etcd authentication needs both",
            ));
        }
    };
    let tls = tls(file.ca_file, file.cert_file, file.key_file, src)?;
    Ok(Some(ClusterConfig {
        etcd,
        prefix,
        lease_ttl: Duration::from_millis(ttl),
        peer_poll_interval: Duration::from_millis(peer_poll),
        forward_timeout: match file.forward_timeout_ms {
            Some(ms) => Some(Duration::from_millis(src.bounded(
                Some(ms),
                "cluster.forward_timeout_ms",
                DEFAULT_FORWARD_SLACK_MS,
                1,
                None,
            )?)),
            None => None,
        },
        forward_max_reply_bytes: src.bounded(
            file.forward_max_reply_bytes,
            "cluster.forward_max_reply_bytes",
            DEFAULT_FORWARD_MAX_REPLY_BYTES,
            1024,
            Some(MAX_FORWARD_MAX_REPLY_BYTES),
        )?,
        proxy_id,
        advertise_admin,
        auth,
        tls,
    }))
}

/// `advertise_admin`: one `host:port` the other proxies can connect to (not a wildcard).
fn advertised(value: &Spanned<String>) -> Result<NodeAddr, String> {
    let addr = NodeAddr::parse(value.get_ref()).map_err(|e| e.to_string())?;
    if addr
        .host()
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return Err(format!(
            "{addr} is a wildcard address, which other proxies cannot connect to; give this proxy's own address"
        ));
    }
    Ok(addr)
}

/// `etcd`: 1 to [`MAX_ETCD_ENDPOINTS`] distinct `host:port`s.
fn endpoints(
    list: Spanned<Vec<Spanned<String>>>,
    src: &Source<'_>,
) -> Result<Vec<NodeAddr>, ConfigError> {
    let span = list.span();
    let list = list.into_inner();
    if list.is_empty() {
        return Err(src.invalid_at(
            Some(span),
            "cluster.etcd",
            "must list at least one etcd endpoint (\"host:port\"); remove [cluster] to run one proxy alone",
        ));
    }
    if list.len() > MAX_ETCD_ENDPOINTS {
        return Err(src.invalid_at(
            Some(span),
            "cluster.etcd",
            format!("must list at most {MAX_ETCD_ENDPOINTS} endpoints"),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        let key = format!("cluster.etcd[{i}]");
        let text = value.get_ref();
        if text.contains("://") {
            return Err(src.invalid(
                Some(value),
                key,
                format!("{text:?} must be a host:port without a scheme; set cluster.ca_file to speak TLS"),
            ));
        }
        let addr =
            NodeAddr::parse(text).map_err(|e| src.invalid(Some(value), &key, e.to_string()))?;
        if !seen.insert(addr.clone()) {
            return Err(src.invalid(Some(value), key, format!("{addr} is listed twice")));
        }
        out.push(addr);
    }
    Ok(out)
}

/// `ca_file`, `cert_file`, `key_file`.
fn tls(
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    src: &Source<'_>,
) -> Result<Option<EtcdTlsConfig>, ConfigError> {
    let path = |value: Spanned<String>, key: &str| {
        if value.get_ref().is_empty() {
            return Err(src.invalid(Some(&value), key, "must not be empty"));
        }
        Ok(PathBuf::from(value.into_inner()))
    };
    let Some(ca) = ca else {
        if let Some((value, name)) = [(&cert, "cluster.cert_file"), (&key, "cluster.key_file")]
            .into_iter()
            .find_map(|(v, k)| Some((v.as_ref()?, k)))
        {
            return Err(src.invalid(
                Some(value),
                name,
                "is set but cluster.ca_file is not; TLS to etcd needs the certificate authorities of its servers",
            ));
        }
        return Ok(None);
    };
    let client_cert = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(CertFiles {
            cert_file: path(cert, "cluster.cert_file")?,
            key_file: path(key, "cluster.key_file")?,
        }),
        (Some(cert), None) => {
            return Err(src.invalid(
                Some(&cert),
                "cluster.cert_file",
                "is set but cluster.key_file is not; a client certificate needs its key",
            ));
        }
        (None, Some(key)) => {
            return Err(src.invalid(
                Some(&key),
                "cluster.key_file",
                "is set but cluster.cert_file is not; a key needs its certificate",
            ));
        }
    };
    Ok(Some(EtcdTlsConfig {
        ca_file: path(ca, "cluster.ca_file")?,
        client_cert,
    }))
}

/// A key prefix: `/` then 1-127 bytes of `A-Za-z0-9._-/`, not ending with `/` and without
/// `//`, so `<prefix>/topology` is one unambiguous key.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err("must start with '/' and name something, e.g. \"/redshard\"");
    }
    if prefix.len() > MAX_CLUSTER_PREFIX_LEN {
        return Err("must be at most 128 characters");
    }
    if prefix.ends_with('/') || prefix.contains("//") {
        return Err("must not end with '/' nor contain '//'");
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err("may hold only letters, digits, '.', '_', '-' and '/'");
    }
    Ok(())
}

/// A proxy id: 1-128 bytes of `A-Za-z0-9._:-[]` (an `IP:port` fits), no `/`: it is the last
/// part of an etcd key.
///
/// # Errors
///
/// The reason `id` is refused, for a message naming the key it came from.
pub fn check_proxy_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("must not be empty");
    }
    if id.len() > MAX_PROXY_ID_LEN {
        return Err("must be at most 128 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'[' | b']'))
    {
        return Err("may hold only letters, digits, '.', '_', '-', ':', '[' and ']'");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
