//! The validated, typed configuration the proxy runs with.
//!
//! [`Config::from_toml_str`] parses the [file model](crate::file) and checks it; whatever it
//! returns is safe to start with. Errors name the origin, the line and the key.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::addr::NodeAddr;
use crate::error::ConfigError;
use crate::file::DEFAULT_TRACKING_TABLE_MAX_KEYS;
use crate::file::{
    BackendFile, ConfigFile, LimitsFile, LogFile, TlsFile, DEFAULT_ALLOW_FLUSH,
    DEFAULT_AUTH_FAILURE_DELAY_MS, DEFAULT_AUTH_TIMEOUT_MS, DEFAULT_CLOSE_LINGER_MS,
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_DATABASES, DEFAULT_IDLE_PARK_MS, DEFAULT_LANES,
    DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, DEFAULT_MANAGE_ACL, DEFAULT_MAX_BULK_BYTES,
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_INFLIGHT_REPLY_BYTES, DEFAULT_MAX_INLINE_BYTES,
    DEFAULT_MAX_MULTIBULK_LEN, DEFAULT_MAX_PIPELINE, DEFAULT_MAX_QUERY_BUFFER_BYTES,
    DEFAULT_MAX_REPLY_DEPTH, DEFAULT_MONITOR_BUFFER_BYTES, DEFAULT_OUTPUT_BUFFER_HARD_BYTES,
    DEFAULT_OUTPUT_BUFFER_SOFT_BYTES, DEFAULT_OUTPUT_BUFFER_SOFT_SECONDS,
    DEFAULT_RECONNECT_BACKOFF_MAX_MS, DEFAULT_RECONNECT_BACKOFF_MIN_MS,
    DEFAULT_RESPONSE_TIMEOUT_MS, DEFAULT_SHUTDOWN_GRACE_MS, DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
    MAX_DATABASES, MAX_LANES, MAX_REPLY_DEPTH_LIMIT,
};
use crate::file::{KeylessScripts, DEFAULT_KEYLESS_SCRIPTS, DEFAULT_READY_CONNECTIONS};
use crate::file::{DEFAULT_AUTH_THROTTLE_SOURCES, MAX_AUTH_THROTTLE_SOURCES};
use crate::file::{DEFAULT_BUSY_POLL_US, MAX_BUSY_POLL_US};
use crate::file::{DEFAULT_MAX_UNWRITTEN_BYTES, MAX_MAX_UNWRITTEN_BYTES};
use crate::file::{
    DEFAULT_METRICS_NAMESPACE, DEFAULT_SLOWLOG_MAX_LEN, DEFAULT_SLOWLOG_SLOWER_THAN_US,
    DEFAULT_THREADS, MAX_THREADS, METRICS_LISTEN_OFF,
};
use crate::slot::SlotRange;
use crate::validate::{self, Source};

/// Everything the proxy needs to start. See [`crate::file`] for each key and its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The password clients must `AUTH` with; `None` lets any client in.
    pub password: Option<String>,
    /// Whether FLUSHALL/FLUSHDB may be fanned out to every shard.
    pub allow_flush: bool,
    /// How long clients may drain on SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Where the live topology is persisted; `None` keeps it in memory only.
    pub topology_file: Option<PathBuf>,
    /// Where the HTTP endpoint (metrics, health, reload) listens; `None` when it is off.
    pub metrics_listen: Option<SocketAddr>,
    /// The prefix of every metric name, such as `redshard` in `redshard_connected_clients`.
    pub metrics_namespace: String,
    /// The admin port's Unix socket (owner-only, no password); `None` when it is off.
    pub admin_socket: Option<PathBuf>,
    /// Where the admin port listens on TCP; `None` when it is off. Validation requires
    /// `admin_password` with it.
    pub admin_listen: Option<SocketAddr>,
    /// The password TCP admin clients must AUTH with.
    pub admin_password: Option<String>,
    /// The TLS client listener (`tls_listen` and `[tls]`); `None` when there is none.
    pub tls: Option<TlsConfig>,
    /// How the proxy connects to backends.
    pub backend: BackendConfig,
    /// The fleet's shared state in etcd (`[cluster]`); `None` when the proxy runs alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// How replicas follow their master, and when writes are acknowledged.
    pub replication: crate::ha::ReplicationConfig,
    /// Proxy-side mirroring and replica reads.
    pub mirror: crate::ha::MirrorConfig,
    /// Probes and failover.
    pub health: crate::ha::HealthConfig,
    /// Bounds on client requests and backend replies.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// Worker threads; 0 means half the cores, at least 1.
    pub threads: usize,
    /// How long the worker keeps polling for work after it ran out before it sleeps
    /// (`busy_poll_us`; zero: it sleeps at once). On a VM, waking a thread whose CPU went idle
    /// costs tens of microseconds that polling saves, at the price of CPU time.
    pub busy_poll: Duration,
    /// Which commands SLOWLOG keeps.
    pub slowlog: SlowlogConfig,
    /// The initial cluster. In a validated config every slot is assigned exactly once.
    pub shards: Vec<ShardConfig>,
    /// Key routing rules; part of the initial topology.
    pub rules: Vec<crate::rules::KeyRule>,
    /// Named users (`AUTH name password`), besides the `default` user of `password`.
    pub users: Vec<UserConfig>,
}

/// A `[[user]]`: a named client identity with an access level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserConfig {
    /// The name given to AUTH.
    pub name: String,
    /// The password given to AUTH.
    pub password: String,
    /// What the user may run.
    pub access: crate::file::Access,
}

/// `tls_listen` with `[tls]`: a client listener speaking TLS beside the plaintext `listen`.
/// Paths are absolute once the file was read by [`Config::load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// Where TLS clients connect.
    pub listen: SocketAddr,
    /// PEM certificate chain the listener presents.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// PEM certificate authorities clients must present a certificate of (mutual TLS);
    /// `None` accepts clients without certificates.
    pub client_ca_file: Option<PathBuf>,
}

/// `[backend] tls = true` and its `tls_*` keys: every backend connection speaks TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTlsConfig {
    /// PEM certificate authorities that sign the backends' certificates.
    pub ca_file: PathBuf,
    /// The name backend certificates must carry; `None` checks each node's own host.
    pub server_name: Option<String>,
    /// The certificate the proxy presents to backends, when they verify clients.
    pub client_cert: Option<CertFiles>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, own certificate first.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
}

/// `[slowlog]`: the proxy's own SLOWLOG, measured from a request's arrival to its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowlogConfig {
    /// Commands at least this slow (µs) are logged; 0 logs all, negative none.
    pub log_slower_than_us: i64,
    /// Entries kept.
    pub max_len: usize,
}

impl Default for SlowlogConfig {
    fn default() -> SlowlogConfig {
        SlowlogConfig {
            log_slower_than_us: DEFAULT_SLOWLOG_SLOWER_THAN_US,
            max_len: DEFAULT_SLOWLOG_MAX_LEN,
        }
    }
}

/// `[backend]`: connections from the proxy to redis-servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// ACL user to `AUTH` as; `None` uses `AUTH password` (the `default` user).
    pub username: Option<String>,
    /// Password to `AUTH` with; `None` sends no AUTH.
    pub password: Option<String>,
    /// ACL user of the proxy's own control connections; `None` with `control_password` set
    /// means the `default` user.
    pub control_username: Option<String>,
    /// Password of the control connections; `None` uses the client-traffic credentials.
    pub control_password: Option<String>,
    /// Whether client traffic runs as ACL users the proxy creates on every node (see
    /// `docs/access-control.md`), so that a script cannot do what its client may not.
    pub manage_acl: bool,
    /// What a script or function called with no key may do: `NoKeys` only with `manage_acl`
    /// (the proxy's ACL users enforce it).
    pub keyless_scripts: KeylessScripts,
    /// Pipelined connections per node (`0..=64`); a key uses lane `slot % lanes`. 0 means one
    /// per worker thread (the proxy resolves it when it starts).
    pub lanes: usize,
    /// Bytes a lane's connection has copied for its node and not written yet, past which it
    /// takes no more requests from its queue (`1..=`[`MAX_MAX_UNWRITTEN_BYTES`]): a node's
    /// backlog then waits in the queue, referenced, not copied.
    pub max_unwritten_bytes: usize,
    /// How many databases clients may `SELECT` (`1..=65536`): the nodes' own `databases`
    /// must be at least this, which each connection carrying client requests checks when it opens.
    pub databases: u32,
    /// Whether one connection per node and protocol is kept open ahead of need, for the next
    /// client that needs one of its own (blocking commands, transactions, subscriptions).
    pub ready_connections: bool,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time a backend may take to answer before its connection is considered broken.
    pub response_timeout: Duration,
    /// First wait before reconnecting.
    pub reconnect_backoff_min: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_backoff_max: Duration,
    /// TLS to every backend; `None` for plaintext.
    pub tls: Option<BackendTlsConfig>,
    /// Nodes the admin commands may add besides those of the `[[shard]]` lists, while
    /// credentials would be sent to them in plaintext (see [`crate::trust`]).
    pub allowed_nodes: Vec<crate::trust::NodePattern>,
}

impl Config {
    /// Whether the proxy may send its backend credentials to `node`, a node an admin command
    /// wants to add: always when it has none to send or backend TLS verifies the node's
    /// certificate first; otherwise only to a node named in the `[[shard]]` lists or matching
    /// `[backend] allowed_nodes` (live: the reloaded value).
    #[must_use]
    pub fn trusts_node(&self, node: &NodeAddr) -> bool {
        let backend = &self.backend;
        let sends_credentials = backend.password.is_some() || backend.control_password.is_some();
        if !sends_credentials || backend.tls.is_some() {
            return true;
        }
        self.shards
            .iter()
            .any(|s| &s.master == node || s.replicas.contains(node))
            || backend.allowed_nodes.iter().any(|p| p.matches(node))
    }
}

/// `[limits]`: every size is bounded before anything is allocated for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connected clients at most.
    pub max_clients: usize,
    /// Largest bulk string in a request.
    pub max_bulk_bytes: usize,
    /// Most elements in a request's multibulk.
    pub max_multibulk_len: usize,
    /// Longest inline request.
    pub max_inline_bytes: usize,
    /// Most unparsed bytes buffered from one client.
    pub max_query_buffer_bytes: usize,
    /// Replies a client may have outstanding before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Nesting depth accepted in backend replies; a deeper one is refused (its request gets
    /// an error, the connection to the node goes on).
    pub max_reply_depth: usize,
    /// Reply bytes held for one client (received from the nodes, not yet written to it)
    /// above which it is disconnected at once.
    pub output_buffer_hard_bytes: usize,
    /// Reply bytes held for one client at which it is paused: its requests are not forwarded
    /// and it is not read until it reads, so the kernel's socket buffers push back on it.
    pub output_buffer_soft_bytes: usize,
    /// Reply bytes one client's forwarded, unanswered requests may be expected to bring back
    /// (their count times the size of its recent replies); further requests wait, so a node's
    /// shared connection never carries more than this for one client ahead of the others.
    pub max_inflight_reply_bytes: usize,
    /// MONITOR lines waiting for one monitoring client (not yet written to it) beyond which
    /// it is closed: a monitor that cannot keep up costs at most this much memory.
    pub monitor_buffer_bytes: usize,
    /// How long a client may stay above the soft limit before it is disconnected.
    pub output_buffer_soft: Duration,
    /// With a proxy password, how long a connection may stay unauthenticated.
    pub auth_timeout: Duration,
    /// How long a TLS client may take to finish its handshake.
    pub tls_handshake_timeout: Duration,
    /// Added delay per failed AUTH on one connection.
    pub auth_failure_delay: Duration,
    /// How many source addresses (IPv4 addresses, IPv6 /64 prefixes) with failed AUTH
    /// attempts are remembered, so that their attempts on every connection are spaced out;
    /// 0 turns the per-address throttle off.
    pub auth_throttle_sources: usize,
    /// Entries the ACL log keeps (the oldest leave first).
    pub acllog_max_len: usize,
    /// After the last reply of an orderly close, how long the proxy waits for the client to
    /// close its side, reading and dropping what it still sends: closing a socket with unread
    /// input makes the kernel reset the connection, and the client can lose replies still
    /// on their way to it.
    pub close_linger: Duration,
    /// The idle sweep's interval: a plaintext client that sent nothing for a whole interval
    /// is parked (its connection kept in the park room, its session's memory freed) until it
    /// sends again; zero never parks.
    pub idle_park: Duration,
    /// A client idle this long is closed (Redis's `timeout`); zero never closes one.
    pub client_timeout: Duration,
    /// Keys read by CLIENT TRACKING clients (default mode) the proxy remembers at most; when
    /// full, it forgets keys and sends their readers invalidations, as Redis does.
    pub tracking_table_max_keys: usize,
    /// Whether the replies to the requests a pipelining client sent in one read are written
    /// together once all are in (as Redis writes a pipeline's replies after running what it
    /// read), rather than each as soon as it and those before it are in.
    pub coalesce_replies: bool,
    /// Reply bytes held for one client (with `coalesce_replies`) past which its replies
    /// leave as they come again (`1..=`[`crate::file::MAX_COALESCE_MAX_BYTES`]).
    pub coalesce_max_bytes: usize,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing filter directive, such as `info,redshard=debug`.
    pub level: String,
    /// Human text or JSON lines.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// One `[[shard]]` of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    /// Unique name operators use for the shard.
    pub name: String,
    /// The node that takes the shard's reads and writes.
    pub master: NodeAddr,
    /// Nodes the proxy keeps equal to the master.
    pub replicas: Vec<NodeAddr>,
    /// The slots the shard serves at first.
    pub slots: Vec<SlotRange>,
}

impl Default for Config {
    /// The defaults of every key, and no shards (which validation refuses: a real config must
    /// list its shards).
    fn default() -> Config {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 6379)),
            password: None,
            allow_flush: DEFAULT_ALLOW_FLUSH,
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
            topology_file: None,
            metrics_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9121))),
            metrics_namespace: DEFAULT_METRICS_NAMESPACE.to_owned(),
            admin_socket: Some(crate::ha::default_admin_socket()),
            admin_listen: None,
            admin_password: None,
            tls: None,
            backend: BackendConfig::default(),
            cluster: None,
            replication: crate::ha::ReplicationConfig::default(),
            mirror: crate::ha::MirrorConfig::default(),
            health: crate::ha::HealthConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            threads: DEFAULT_THREADS,
            busy_poll: Duration::from_micros(DEFAULT_BUSY_POLL_US),
            slowlog: SlowlogConfig::default(),
            shards: Vec::new(),
            rules: Vec::new(),
            users: Vec::new(),
        }
    }
}

impl Default for BackendConfig {
    fn default() -> BackendConfig {
        BackendConfig {
            username: None,
            password: None,
            control_username: None,
            control_password: None,
            manage_acl: DEFAULT_MANAGE_ACL,
            keyless_scripts: DEFAULT_KEYLESS_SCRIPTS,
            lanes: DEFAULT_LANES,
            max_unwritten_bytes: DEFAULT_MAX_UNWRITTEN_BYTES,
            databases: DEFAULT_DATABASES,
            ready_connections: DEFAULT_READY_CONNECTIONS,
            connect_timeout: Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS),
            response_timeout: Duration::from_millis(DEFAULT_RESPONSE_TIMEOUT_MS),
            reconnect_backoff_min: Duration::from_millis(DEFAULT_RECONNECT_BACKOFF_MIN_MS),
            reconnect_backoff_max: Duration::from_millis(DEFAULT_RECONNECT_BACKOFF_MAX_MS),
            tls: None,
            allowed_nodes: Vec::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: DEFAULT_MAX_CLIENTS,
            max_bulk_bytes: DEFAULT_MAX_BULK_BYTES,
            max_multibulk_len: DEFAULT_MAX_MULTIBULK_LEN,
            max_inline_bytes: DEFAULT_MAX_INLINE_BYTES,
            max_query_buffer_bytes: DEFAULT_MAX_QUERY_BUFFER_BYTES,
            max_pipeline: DEFAULT_MAX_PIPELINE,
            max_reply_depth: DEFAULT_MAX_REPLY_DEPTH,
            output_buffer_hard_bytes: DEFAULT_OUTPUT_BUFFER_HARD_BYTES,
            output_buffer_soft_bytes: DEFAULT_OUTPUT_BUFFER_SOFT_BYTES,
            max_inflight_reply_bytes: DEFAULT_MAX_INFLIGHT_REPLY_BYTES,
            monitor_buffer_bytes: DEFAULT_MONITOR_BUFFER_BYTES,
            output_buffer_soft: Duration::from_secs(DEFAULT_OUTPUT_BUFFER_SOFT_SECONDS),
            auth_timeout: Duration::from_millis(DEFAULT_AUTH_TIMEOUT_MS),
            tls_handshake_timeout: Duration::from_millis(DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS),
            auth_failure_delay: Duration::from_millis(DEFAULT_AUTH_FAILURE_DELAY_MS),
            auth_throttle_sources: DEFAULT_AUTH_THROTTLE_SOURCES,
            acllog_max_len: crate::file::DEFAULT_ACLLOG_MAX_LEN,
            close_linger: Duration::from_millis(DEFAULT_CLOSE_LINGER_MS),
            idle_park: Duration::from_millis(DEFAULT_IDLE_PARK_MS),
            client_timeout: Duration::ZERO,
            tracking_table_max_keys: DEFAULT_TRACKING_TABLE_MAX_KEYS,
            coalesce_replies: crate::file::DEFAULT_COALESCE_REPLIES,
            coalesce_max_bytes: crate::file::DEFAULT_COALESCE_MAX_BYTES,
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: DEFAULT_LOG_FORMAT,
        }
    }
}

impl Config {
    /// Parses and validates a configuration. `origin` names the text in error messages
    /// (usually the file's path).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for TOML syntax errors, unknown keys and values of the wrong
    /// type; [`ConfigError::Invalid`] for unacceptable values (see [`crate::file`]). Both
    /// name `origin` and, when known, the line.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let src = Source { text, origin };
        let file: ConfigFile = toml::from_str(text).map_err(|e| src.parse_error(&e))?;
        Config::from_file(file, &src)
    }

    /// Reads, parses and validates the configuration file at `path`. Relative paths
    /// (`topology_file`, the TLS files) are made relative to the file's directory, so the
    /// proxy's working directory does not matter.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`] when the file cannot be read (or is not UTF-8), otherwise as
    /// [`Config::from_toml_str`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_toml_str(&text, &path.display().to_string())?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    /// Makes every relative path of the configuration relative to `dir`.
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |file: &mut PathBuf| {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        };
        if let Some(file) = &mut self.topology_file {
            resolve(file);
        }
        if let Some(file) = &mut self.admin_socket {
            resolve(file);
        }
        if let Some(tls) = &mut self.tls {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
            if let Some(ca) = &mut tls.client_ca_file {
                resolve(ca);
            }
        }
        if let Some(tls) = self.cluster.as_mut().and_then(|c| c.tls.as_mut()) {
            resolve(&mut tls.ca_file);
            if let Some(cert) = &mut tls.client_cert {
                resolve(&mut cert.cert_file);
                resolve(&mut cert.key_file);
            }
        }
        if let Some(tls) = &mut self.backend.tls {
            resolve(&mut tls.ca_file);
            if let Some(cert) = &mut tls.client_cert {
                resolve(&mut cert.cert_file);
                resolve(&mut cert.key_file);
            }
        }
    }

    fn from_file(file: ConfigFile, src: &Source<'_>) -> Result<Config, ConfigError> {
        let listen = match &file.listen {
            Some(listen) => listen.get_ref().parse::<SocketAddr>().map_err(|_| {
                src.invalid(
                    Some(listen),
                    "listen",
                    format!(
                        "{:?} is not an IP:port address (hostnames are not accepted here)",
                        listen.get_ref()
                    ),
                )
            })?,
            None => Config::default().listen,
        };
        let topology_file = match file.topology_file {
            Some(path) if path.get_ref().is_empty() => {
                return Err(src.invalid(Some(&path), "topology_file", "must not be empty"));
            }
            other => other.map(|path| PathBuf::from(path.into_inner())),
        };
        let metrics_listen = metrics_listen(file.metrics_listen.as_ref(), listen, src)?;
        let tls = tls(file.tls_listen, file.tls, listen, metrics_listen, src)?;
        let listens = [Some(listen), tls.as_ref().map(|t| t.listen)];
        let metrics_namespace = match file.metrics_namespace {
            Some(ns) => {
                validate::check_metrics_namespace(ns.get_ref())
                    .map_err(|reason| src.invalid(Some(&ns), "metrics_namespace", reason))?;
                ns.into_inner()
            }
            None => DEFAULT_METRICS_NAMESPACE.to_owned(),
        };
        let admin_listen = crate::ha::admin_listen(file.admin_listen.as_ref(), src)?;
        check_admin_listen(
            file.admin_listen.as_ref(),
            admin_listen,
            listen,
            metrics_listen,
            tls.as_ref().map(|t| t.listen),
            src,
        )?;
        if let (Some(_), None) = (admin_listen, &file.admin_password) {
            return Err(src.invalid(
                file.admin_listen.as_ref(),
                "admin_password",
                "must be set when admin_listen is (anyone who can reach a TCP port could run admin commands); set admin_password, or use the admin socket (admin_socket), which only the proxy's user can open, and set admin_listen = \"off\"",
            ));
        }
        let ack_timeout_given = file.replication.ack_timeout_ms.is_some();
        let config = Config {
            listen,
            password: src.secret(file.password, "password")?,
            allow_flush: file.allow_flush.unwrap_or(DEFAULT_ALLOW_FLUSH),
            shutdown_grace: Duration::from_millis(
                file.shutdown_grace_ms
                    .map_or(DEFAULT_SHUTDOWN_GRACE_MS, |ms| *ms.get_ref()),
            ),
            topology_file,
            metrics_listen,
            metrics_namespace,
            admin_socket: crate::ha::admin_socket(file.admin_socket, src)?,
            admin_listen,
            admin_password: src.secret(file.admin_password, "admin_password")?,
            tls,
            backend: backend(file.backend, src)?,
            cluster: crate::cluster::cluster(file.cluster, src)?,
            replication: crate::ha::replication(file.replication, file.mirror.mode.clone(), src)?,
            mirror: crate::ha::mirror(file.mirror, src)?,
            health: crate::ha::health(file.health, src)?,
            limits: limits(file.limits, src)?,
            log: log(file.log, src)?,
            threads: match file.threads {
                Some(t) if *t.get_ref() > MAX_THREADS => {
                    return Err(src.invalid(
                        Some(&t),
                        "threads",
                        format!("must be at most {MAX_THREADS}"),
                    ));
                }
                Some(t) => t.into_inner(),
                None => DEFAULT_THREADS,
            },
            busy_poll: Duration::from_micros(src.bounded(
                file.busy_poll_us,
                "busy_poll_us",
                DEFAULT_BUSY_POLL_US,
                0,
                Some(MAX_BUSY_POLL_US),
            )?),
            slowlog: SlowlogConfig {
                log_slower_than_us: file
                    .slowlog
                    .log_slower_than_us
                    .unwrap_or(DEFAULT_SLOWLOG_SLOWER_THAN_US),
                max_len: file
                    .slowlog
                    .max_len
                    .map_or(DEFAULT_SLOWLOG_MAX_LEN, toml::Spanned::into_inner),
            },
            shards: validate::shards(&file.shard, &listens, src)?,
            rules: validate::rules(file.rule, src)?,
            users: users(file.user, src)?,
        };
        let mut config = config;
        if config.cluster.is_some() && config.replication.mode == crate::ha::ReplicationMode::Proxy
        {
            return Err(src.invalid_at(
                None,
                "replication.mode",
                "\"proxy\" (proxy-side mirroring) serves one proxy only and cannot be used with [cluster]; use mode = \"redis\"",
            ));
        }
        if config.admin_listen.is_none()
            && config
                .cluster
                .as_ref()
                .is_some_and(|c| c.advertise_admin.is_some())
        {
            return Err(src.invalid_at(
                None,
                "cluster.advertise_admin",
                "is set but admin_listen is not: there is no TCP admin port to advertise",
            ));
        }
        crate::ha::check_ack_timeout(
            &mut config.replication,
            ack_timeout_given,
            config.backend.response_timeout,
            src,
        )?;
        Ok(config)
    }
}

/// Whether binding `a` and `b` would clash: the same port (not 0, which picks a free one) on
/// the same or an unspecified IP.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    let same_ip = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
    a.port() != 0 && a.port() == b.port() && same_ip
}

/// `admin_listen` must not take the port of `listen`, `metrics_listen` or `tls_listen`.
fn check_admin_listen(
    value: Option<&toml::Spanned<String>>,
    admin: Option<SocketAddr>,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    let Some(admin) = admin else {
        return Ok(());
    };
    let default = if value.is_none() {
        " (the default)"
    } else {
        ""
    };
    let other = if same_socket(admin, listen) {
        "the client address `listen`"
    } else if metrics.is_some_and(|m| same_socket(admin, m)) {
        "the HTTP endpoint's address `metrics_listen`"
    } else if tls.is_some_and(|t| same_socket(admin, t)) {
        "the TLS client address `tls_listen`"
    } else {
        return Ok(());
    };
    Err(src.invalid(
        value,
        "admin_listen",
        format!("{admin}{default} is also {other}; choose another port"),
    ))
}

/// A file path: not empty. Made absolute by [`Config::load`].
fn path(value: Spanned<String>, key: &str, src: &Source<'_>) -> Result<PathBuf, ConfigError> {
    if value.get_ref().is_empty() {
        return Err(src.invalid(Some(&value), key, "must not be empty"));
    }
    Ok(PathBuf::from(value.into_inner()))
}

/// `tls_listen` and `[tls]`: both or neither, on an address of their own.
fn tls(
    listen_value: Option<Spanned<String>>,
    table: Option<Spanned<TlsFile>>,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    src: &Source<'_>,
) -> Result<Option<TlsConfig>, ConfigError> {
    let (listen_value, table) = match (listen_value, table) {
        (None, None) => return Ok(None),
        (Some(value), None) => {
            return Err(src.invalid(
                Some(&value),
                "tls_listen",
                "needs a [tls] table with cert_file and key_file",
            ));
        }
        (None, Some(table)) => {
            return Err(src.invalid(
                Some(&table),
                "tls",
                "[tls] is set but tls_listen is not; set tls_listen to serve TLS, or remove [tls]",
            ));
        }
        (Some(value), Some(table)) => (value, table.into_inner()),
    };
    let addr = listen_value.get_ref().parse::<SocketAddr>().map_err(|_| {
        src.invalid(
            Some(&listen_value),
            "tls_listen",
            format!(
                "{:?} is not an IP:port address (hostnames are not accepted here)",
                listen_value.get_ref()
            ),
        )
    })?;
    for (other, key) in [(Some(listen), "listen"), (metrics, "metrics_listen")] {
        if other.is_some_and(|other| same_socket(addr, other)) {
            return Err(src.invalid(
                Some(&listen_value),
                "tls_listen",
                format!("{addr} is also `{key}`; choose another port"),
            ));
        }
    }
    Ok(Some(TlsConfig {
        listen: addr,
        cert_file: path(table.cert_file, "tls.cert_file", src)?,
        key_file: path(table.key_file, "tls.key_file", src)?,
        client_ca_file: table
            .client_ca_file
            .map(|ca| path(ca, "tls.client_ca_file", src))
            .transpose()?,
    }))
}

/// `[backend] tls` and its `tls_*` keys.
fn backend_tls(
    file: &mut BackendFile,
    src: &Source<'_>,
) -> Result<Option<BackendTlsConfig>, ConfigError> {
    let enabled = file.tls.as_ref().is_some_and(|tls| *tls.get_ref());
    let keys = [
        (file.tls_ca_file.take(), "backend.tls_ca_file"),
        (file.tls_server_name.take(), "backend.tls_server_name"),
        (file.tls_cert_file.take(), "backend.tls_cert_file"),
        (file.tls_key_file.take(), "backend.tls_key_file"),
    ];
    if !enabled {
        if let Some((value, key)) = keys.iter().find_map(|(v, k)| Some((v.as_ref()?, *k))) {
            return Err(src.invalid(
                Some(value),
                key,
                "is set but backend.tls is not true; set `tls = true` in [backend] or remove it",
            ));
        }
        return Ok(None);
    }
    let [(ca, _), (server_name, _), (cert, _), (key, _)] = keys;
    let Some(ca) = ca else {
        return Err(src.invalid(
            file.tls.as_ref(),
            "backend.tls",
            "needs backend.tls_ca_file, the certificate authorities that sign the backends' certificates",
        ));
    };
    let server_name = match server_name {
        Some(name) => {
            let text = name.get_ref();
            let valid = text.parse::<std::net::IpAddr>().is_ok()
                || crate::addr::check_hostname(text).is_ok();
            if !valid {
                return Err(src.invalid(
                    Some(&name),
                    "backend.tls_server_name",
                    format!("{text:?} is not a hostname or an IP address"),
                ));
            }
            Some(name.into_inner())
        }
        None => None,
    };
    let client_cert = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(CertFiles {
            cert_file: path(cert, "backend.tls_cert_file", src)?,
            key_file: path(key, "backend.tls_key_file", src)?,
        }),
        (Some(cert), None) => {
            return Err(src.invalid(
                Some(&cert),
                "backend.tls_cert_file",
                "is set but backend.tls_key_file is not; a client certificate needs its key",
            ));
        }
        (None, Some(key)) => {
            return Err(src.invalid(
                Some(&key),
                "backend.tls_key_file",
                "is set but backend.tls_cert_file is not; a key needs its certificate",
            ));
        }
    };
    Ok(Some(BackendTlsConfig {
        ca_file: path(ca, "backend.tls_ca_file", src)?,
        server_name,
        client_cert,
    }))
}

/// `metrics_listen`: an `IP:port` other than the client port, or `"off"`.
fn metrics_listen(
    value: Option<&toml::Spanned<String>>,
    listen: SocketAddr,
    src: &Source<'_>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let addr = match value {
        // The default is DEFAULT_METRICS_LISTEN (a unit test checks they agree).
        None => match Config::default().metrics_listen {
            Some(addr) => addr,
            None => return Ok(None),
        },
        Some(value) if value.get_ref() == METRICS_LISTEN_OFF => return Ok(None),
        Some(value) => value.get_ref().parse::<SocketAddr>().map_err(|_| {
            src.invalid(
                Some(value),
                "metrics_listen",
                format!(
                    "{:?} is not an IP:port address (hostnames are not accepted here) nor \
                     \"{METRICS_LISTEN_OFF}\"",
                    value.get_ref()
                ),
            )
        })?,
    };
    if same_socket(addr, listen) {
        let default = if value.is_none() {
            " (the default)"
        } else {
            ""
        };
        return Err(src.invalid(
            value,
            "metrics_listen",
            format!("{addr}{default} is also the client address `listen`; choose another port"),
        ));
    }
    Ok(Some(addr))
}

fn backend(mut file: BackendFile, src: &Source<'_>) -> Result<BackendConfig, ConfigError> {
    let tls = backend_tls(&mut file, src)?;
    let allowed = file.allowed_nodes.take();
    let username_span = file.username.as_ref().map(toml::Spanned::span);
    let username = src.secret(file.username, "backend.username")?;
    let password = src.secret(file.password, "backend.password")?;
    if username.is_some() && password.is_none() {
        return Err(src.invalid_at(
            username_span,
            "backend.username",
            "is set but backend.password is not; AUTH needs both",
        ));
    }
    let control_span = file.control_username.as_ref().map(toml::Spanned::span);
    let control_username = src.secret(file.control_username, "backend.control_username")?;
    let control_password = src.secret(file.control_password, "backend.control_password")?;
    if control_username.is_some() && control_password.is_none() {
        return Err(src.invalid_at(
            control_span,
            "backend.control_username",
            "is set but backend.control_password is not; AUTH needs both",
        ));
    }
    let lanes = src.bounded(
        file.lanes,
        "backend.lanes",
        DEFAULT_LANES,
        0,
        Some(MAX_LANES),
    )?;
    let max_unwritten_bytes = src.bounded(
        file.max_unwritten_bytes,
        "backend.max_unwritten_bytes",
        DEFAULT_MAX_UNWRITTEN_BYTES,
        1,
        Some(MAX_MAX_UNWRITTEN_BYTES),
    )?;
    let databases = src.bounded(
        file.databases,
        "backend.databases",
        DEFAULT_DATABASES,
        1,
        Some(MAX_DATABASES),
    )?;
    let ms = |value, key, default| src.bounded(value, key, default, 1, None);
    let connect = ms(
        file.connect_timeout_ms,
        "backend.connect_timeout_ms",
        DEFAULT_CONNECT_TIMEOUT_MS,
    )?;
    let response = ms(
        file.response_timeout_ms,
        "backend.response_timeout_ms",
        DEFAULT_RESPONSE_TIMEOUT_MS,
    )?;
    let min_span = file
        .reconnect_backoff_min_ms
        .as_ref()
        .map(toml::Spanned::span);
    let min = ms(
        file.reconnect_backoff_min_ms,
        "backend.reconnect_backoff_min_ms",
        DEFAULT_RECONNECT_BACKOFF_MIN_MS,
    )?;
    let max_span = file
        .reconnect_backoff_max_ms
        .as_ref()
        .map(toml::Spanned::span);
    let max = ms(
        file.reconnect_backoff_max_ms,
        "backend.reconnect_backoff_max_ms",
        DEFAULT_RECONNECT_BACKOFF_MAX_MS,
    )?;
    if min > max {
        let (span, key) = match (min_span, max_span) {
            (_, Some(span)) => (Some(span), "backend.reconnect_backoff_max_ms"),
            (span, None) => (span, "backend.reconnect_backoff_min_ms"),
        };
        return Err(src.invalid_at(
            span,
            key,
            format!(
                "reconnect_backoff_min_ms ({min}) is larger than reconnect_backoff_max_ms ({max})"
            ),
        ));
    }
    let manage_acl = file
        .manage_acl
        .map_or(DEFAULT_MANAGE_ACL, toml::Spanned::into_inner);
    let keyless_scripts = match file.keyless_scripts {
        Some(written) if *written.get_ref() == KeylessScripts::NoKeys && !manage_acl => {
            return Err(src.invalid_at(
                Some(written.span()),
                "backend.keyless_scripts",
                "\"no-keys\" is enforced by the proxy's ACL users on the nodes: it needs manage_acl = true (or set keyless_scripts = \"any-master\")",
            ));
        }
        Some(written) => written.into_inner(),
        None if manage_acl => DEFAULT_KEYLESS_SCRIPTS,
        None => KeylessScripts::AnyMaster,
    };
    Ok(BackendConfig {
        username,
        password,
        control_username,
        control_password,
        manage_acl,
        keyless_scripts,
        lanes,
        max_unwritten_bytes,
        databases,
        ready_connections: file
            .ready_connections
            .map_or(DEFAULT_READY_CONNECTIONS, toml::Spanned::into_inner),
        connect_timeout: Duration::from_millis(connect),
        response_timeout: Duration::from_millis(response),
        reconnect_backoff_min: Duration::from_millis(min),
        reconnect_backoff_max: Duration::from_millis(max),
        tls,
        allowed_nodes: crate::trust::allowed_nodes(allowed, src)?,
    })
}

fn limits(file: LimitsFile, src: &Source<'_>) -> Result<Limits, ConfigError> {
    let at_least_one = |value, key, default| src.bounded(value, key, default, 1, None);
    let bulk_span = file.max_bulk_bytes.as_ref().map(toml::Spanned::span);
    let inline_span = file.max_inline_bytes.as_ref().map(toml::Spanned::span);
    let query_span = file
        .max_query_buffer_bytes
        .as_ref()
        .map(toml::Spanned::span);
    let limits = Limits {
        max_clients: at_least_one(file.max_clients, "limits.max_clients", DEFAULT_MAX_CLIENTS)?,
        max_bulk_bytes: at_least_one(
            file.max_bulk_bytes,
            "limits.max_bulk_bytes",
            DEFAULT_MAX_BULK_BYTES,
        )?,
        max_multibulk_len: at_least_one(
            file.max_multibulk_len,
            "limits.max_multibulk_len",
            DEFAULT_MAX_MULTIBULK_LEN,
        )?,
        max_inline_bytes: at_least_one(
            file.max_inline_bytes,
            "limits.max_inline_bytes",
            DEFAULT_MAX_INLINE_BYTES,
        )?,
        max_query_buffer_bytes: at_least_one(
            file.max_query_buffer_bytes,
            "limits.max_query_buffer_bytes",
            DEFAULT_MAX_QUERY_BUFFER_BYTES,
        )?,
        max_pipeline: at_least_one(
            file.max_pipeline,
            "limits.max_pipeline",
            DEFAULT_MAX_PIPELINE,
        )?,
        max_reply_depth: src.bounded(
            file.max_reply_depth,
            "limits.max_reply_depth",
            DEFAULT_MAX_REPLY_DEPTH,
            1,
            Some(MAX_REPLY_DEPTH_LIMIT),
        )?,
        output_buffer_hard_bytes: at_least_one(
            file.output_buffer_hard_bytes,
            "limits.output_buffer_hard_bytes",
            DEFAULT_OUTPUT_BUFFER_HARD_BYTES,
        )?,
        output_buffer_soft_bytes: at_least_one(
            file.output_buffer_soft_bytes,
            "limits.output_buffer_soft_bytes",
            DEFAULT_OUTPUT_BUFFER_SOFT_BYTES,
        )?,
        max_inflight_reply_bytes: at_least_one(
            file.max_inflight_reply_bytes,
            "limits.max_inflight_reply_bytes",
            DEFAULT_MAX_INFLIGHT_REPLY_BYTES,
        )?,
        monitor_buffer_bytes: at_least_one(
            file.monitor_buffer_bytes,
            "limits.monitor_buffer_bytes",
            DEFAULT_MONITOR_BUFFER_BYTES,
        )?,
        output_buffer_soft: Duration::from_secs(src.bounded(
            file.output_buffer_soft_seconds,
            "limits.output_buffer_soft_seconds",
            DEFAULT_OUTPUT_BUFFER_SOFT_SECONDS,
            1,
            None,
        )?),
        auth_timeout: Duration::from_millis(src.bounded(
            file.auth_timeout_ms,
            "limits.auth_timeout_ms",
            DEFAULT_AUTH_TIMEOUT_MS,
            1,
            None,
        )?),
        tls_handshake_timeout: Duration::from_millis(src.bounded(
            file.tls_handshake_timeout_ms,
            "limits.tls_handshake_timeout_ms",
            DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
            1,
            None,
        )?),
        auth_failure_delay: Duration::from_millis(src.bounded(
            file.auth_failure_delay_ms,
            "limits.auth_failure_delay_ms",
            DEFAULT_AUTH_FAILURE_DELAY_MS,
            0,
            Some(60_000),
        )?),
        auth_throttle_sources: src.bounded(
            file.auth_throttle_sources,
            "limits.auth_throttle_sources",
            DEFAULT_AUTH_THROTTLE_SOURCES,
            0,
            Some(MAX_AUTH_THROTTLE_SOURCES),
        )?,
        acllog_max_len: src.bounded(
            file.acllog_max_len,
            "limits.acllog_max_len",
            crate::file::DEFAULT_ACLLOG_MAX_LEN,
            0,
            Some(crate::file::MAX_ACLLOG_MAX_LEN),
        )?,
        close_linger: Duration::from_millis(src.bounded(
            file.close_linger_ms,
            "limits.close_linger_ms",
            DEFAULT_CLOSE_LINGER_MS,
            0,
            Some(60_000),
        )?),
        idle_park: Duration::from_millis(src.bounded(
            file.idle_park_ms,
            "limits.idle_park_ms",
            DEFAULT_IDLE_PARK_MS,
            0,
            Some(3_600_000),
        )?),
        client_timeout: Duration::from_secs(src.bounded(
            file.client_timeout_s,
            "limits.client_timeout_s",
            0,
            0,
            // Redis's own bound for `timeout`.
            Some(u64::from(i32::MAX.unsigned_abs())),
        )?),
        tracking_table_max_keys: at_least_one(
            file.tracking_table_max_keys,
            "limits.tracking_table_max_keys",
            DEFAULT_TRACKING_TABLE_MAX_KEYS,
        )?,
        coalesce_replies: file.coalesce_replies.map_or(
            crate::file::DEFAULT_COALESCE_REPLIES,
            toml::Spanned::into_inner,
        ),
        coalesce_max_bytes: src.bounded(
            file.coalesce_max_bytes,
            "limits.coalesce_max_bytes",
            crate::file::DEFAULT_COALESCE_MAX_BYTES,
            1,
            Some(crate::file::MAX_COALESCE_MAX_BYTES),
        )?,
    };
    if limits.output_buffer_soft_bytes > limits.output_buffer_hard_bytes {
        return Err(src.invalid(
            None::<&toml::Spanned<usize>>,
            "limits.output_buffer_soft_bytes",
            "must not exceed limits.output_buffer_hard_bytes",
        ));
    }
    // A request that cannot fit in the query buffer could never be accepted.
    for (value, key, span) in [
        (limits.max_bulk_bytes, "limits.max_bulk_bytes", bulk_span),
        (
            limits.max_inline_bytes,
            "limits.max_inline_bytes",
            inline_span,
        ),
    ] {
        if value > limits.max_query_buffer_bytes {
            return Err(src.invalid_at(
                span.or_else(|| query_span.clone()),
                key,
                format!(
                    "{value} is larger than limits.max_query_buffer_bytes ({})",
                    limits.max_query_buffer_bytes
                ),
            ));
        }
    }
    Ok(limits)
}

fn users(
    files: Vec<toml::Spanned<crate::file::UserFile>>,
    src: &Source<'_>,
) -> Result<Vec<UserConfig>, ConfigError> {
    let mut users: Vec<UserConfig> = Vec::with_capacity(files.len());
    for (i, file) in files.into_iter().enumerate() {
        let file = file.into_inner();
        let key = format!("user[{i}]");
        let name = file.name.get_ref();
        if name.is_empty() || name.eq_ignore_ascii_case("default") {
            return Err(src.invalid(
                Some(&file.name),
                format!("{key}.name"),
                "must be a non-empty name other than \"default\" (the default user's password is the top-level `password`)",
            ));
        }
        if users.iter().any(|u| &u.name == name) {
            return Err(src.invalid(
                Some(&file.name),
                format!("{key}.name"),
                format!("user \"{name}\" is defined twice"),
            ));
        }
        if file.password.get_ref().is_empty() {
            return Err(src.invalid(
                Some(&file.password),
                format!("{key}.password"),
                "must not be empty",
            ));
        }
        users.push(UserConfig {
            name: file.name.into_inner(),
            password: file.password.into_inner(),
            access: file.access,
        });
    }
    Ok(users)
}

fn log(file: LogFile, src: &Source<'_>) -> Result<LogConfig, ConfigError> {
    let level = match file.level {
        Some(level) if level.get_ref().trim().is_empty() => {
            return Err(src.invalid(Some(&level), "log.level", "must not be empty"));
        }
        Some(level) => level.into_inner(),
        None => DEFAULT_LOG_LEVEL.to_owned(),
    };
    Ok(LogConfig {
        level,
        format: file.format.unwrap_or(DEFAULT_LOG_FORMAT),
    })
}

#[cfg(test)]
mod tests;
