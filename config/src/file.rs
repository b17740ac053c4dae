//! The configuration file, key by key, as written (TOML). [`crate::Config`] is its validated
//! form; every default below is a `DEFAULT_*` constant.
//!
//! ```toml
//! listen = "127.0.0.1:6379"
//! password = "secret"
//! allow_flush = false
//! shutdown_grace_ms = 5000
//! topology_file = "/var/lib/redshard/topology.toml"
//! metrics_listen = "127.0.0.1:9121"
//! metrics_namespace = "redshard"
//! tls_listen = "127.0.0.1:6380"
//!
//! [tls]
//! cert_file = "tls/redshard.crt"
//! key_file = "tls/redshard.key"
//! client_ca_file = "tls/clients-ca.crt"
//!
//! [backend]
//! username = "proxyuser"
//! password = "pw"
//! lanes = 2
//! connect_timeout_ms = 1000
//! response_timeout_ms = 5000
//! reconnect_backoff_min_ms = 50
//! reconnect_backoff_max_ms = 2000
//! tls = true
//! tls_ca_file = "tls/redis-ca.crt"
//! tls_server_name = "redis.internal"
//! tls_cert_file = "tls/redshard-client.crt"
//! tls_key_file = "tls/redshard-client.key"
//!
//! [limits]
//! max_clients = 10000
//! max_bulk_bytes = 536870912
//! max_multibulk_len = 1048576
//! max_inline_bytes = 65536
//! max_query_buffer_bytes = 1073741824
//! max_pipeline = 100000
//! coalesce_replies = true
//! max_reply_depth = 16384
//!
//! [log]
//! level = "info"
//! format = "text"
//!
//! [[shard]]
//! name = "s1"
//! master = "127.0.0.1:6381"
//! replicas = ["127.0.0.1:6384"]
//! slots = ["0-5460"]
//! ```
//!
//! Unknown keys are refused (a misspelt key must not silently keep its default). Values whose
//! acceptability is checked after parsing are kept [`Spanned`] so the error names their line.

use serde::Deserialize;
use toml::Spanned;

use crate::config::LogFormat;

/// Default of `listen`: the Redis port, on loopback only (like Redis's `protected-mode`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6379";
/// Default of `threads`: 0, meaning half the machine's cores (at least 1), leaving the rest
/// to the kernel's network work and to Redis when it runs on the same machine.
pub const DEFAULT_THREADS: usize = 0;
/// Most worker threads `threads` accepts.
pub const MAX_THREADS: usize = 256;
/// Default of `busy_poll_us`: 0, the worker sleeps as soon as it runs out of work.
pub const DEFAULT_BUSY_POLL_US: u64 = 0;
/// Most `busy_poll_us` accepts: 10 ms of polling after the last work is past any use.
pub const MAX_BUSY_POLL_US: u64 = 10_000;
/// Default of `[slowlog] log_slower_than_us`: Redis's `slowlog-log-slower-than`.
pub const DEFAULT_SLOWLOG_SLOWER_THAN_US: i64 = 10_000;
/// Default of `[slowlog] max_len`: Redis's `slowlog-max-len`.
pub const DEFAULT_SLOWLOG_MAX_LEN: usize = 128;

/// Default of `allow_flush`: FLUSHALL/FLUSHDB through the proxy are refused.
pub const DEFAULT_ALLOW_FLUSH: bool = false;
/// Default of `shutdown_grace_ms`: 5 s to drain clients on SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 5000;
/// Default of `metrics_listen`: the HTTP endpoint (`/metrics`, `/livez`, `/readyz`,
/// `/-/reload`) on loopback, on redis_exporter's port.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9121";
/// The value of `metrics_listen` that turns the HTTP endpoint off.
pub const METRICS_LISTEN_OFF: &str = "off";
/// Default of `metrics_namespace`: the prefix of every metric name.
pub const DEFAULT_METRICS_NAMESPACE: &str = "redshard";
/// Longest `metrics_namespace`, in bytes.
pub const MAX_METRICS_NAMESPACE_LEN: usize = 64;
/// Default of `backend.lanes`: connections per backend node; 0 means one per worker thread.
/// One lane per node batches the most requests per write (measured on 2 cores with one
/// worker: 2 lanes cost about 10% more CPU per request at `-P 1`); with several worker
/// threads, one lane per thread lets them share a node's traffic.
pub const DEFAULT_LANES: usize = 0;
/// Default of `backend.manage_acl`: the proxy confines client traffic (scripts included) with
/// ACL users of its own on every node. On nodes without a password the proxy is Redis's
/// `default` user, which may create them, so the default needs nothing from the operator.
pub const DEFAULT_MANAGE_ACL: bool = true;
/// What a script or function called with no key may do (`backend.keyless_scripts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeylessScripts {
    /// It runs on a master as an ACL user that may access no key: `redis.call` on a key fails
    /// with Redis's own ACL error, so a script that needs keys of every shard (which the
    /// proxy cannot route) fails loudly instead of answering from one master's keys.
    #[default]
    NoKeys,
    /// It runs on a master (the first one up) with the client's full rights, and sees only
    /// that master's keys.
    AnyMaster,
}

impl std::fmt::Display for KeylessScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NoKeys => "no-keys",
            Self::AnyMaster => "any-master",
        })
    }
}

/// Default of `backend.keyless_scripts` (with `manage_acl`; without it, `any-master`).
pub const DEFAULT_KEYLESS_SCRIPTS: KeylessScripts = KeylessScripts::NoKeys;
/// Default of `backend.ready_connections`: on, so that a `SUBSCRIBE` or `BLPOP` is on its
/// node before a command another client sends right after it.
pub const DEFAULT_READY_CONNECTIONS: bool = true;
/// Largest accepted `backend.lanes`.
pub const MAX_LANES: usize = 64;
/// Default of `backend.max_unwritten_bytes`: bytes of requests a lane's connection has copied
/// for its node and not written yet, past which it takes no more from its queue. Four of a
/// node's 16 KB reads: the node never waits for the proxy, and 1,000 pipelining clients that
/// send faster than the nodes read leave their backlog in the queue (where it references the
/// clients' read buffers) instead of in copies (measured: ~3 KB less RSS per client, the same
/// CPU per request).
pub const DEFAULT_MAX_UNWRITTEN_BYTES: usize = 64 * 1024;
/// Largest accepted `backend.max_unwritten_bytes`.
pub const MAX_MAX_UNWRITTEN_BYTES: usize = 1 << 30;
/// Default of `backend.databases`: Redis's own default for `databases`, so `SELECT 0`..`15`
/// work as on one server.
pub const DEFAULT_DATABASES: u32 = 16;
/// Largest accepted `backend.databases` (database numbers travel as `u16`).
pub const MAX_DATABASES: u32 = 65_536;
/// Default of `backend.connect_timeout_ms`.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
/// Default of `backend.response_timeout_ms`.
pub const DEFAULT_RESPONSE_TIMEOUT_MS: u64 = 5000;
/// Default of `backend.reconnect_backoff_min_ms`.
pub const DEFAULT_RECONNECT_BACKOFF_MIN_MS: u64 = 50;
/// Default of `backend.reconnect_backoff_max_ms`.
pub const DEFAULT_RECONNECT_BACKOFF_MAX_MS: u64 = 2000;
/// Default of `limits.max_clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Default of `limits.max_bulk_bytes`: 512 MiB, Redis's `proto-max-bulk-len`.
pub const DEFAULT_MAX_BULK_BYTES: usize = 512 * 1024 * 1024;
/// Default of `limits.max_multibulk_len`: 1024*1024 elements, as Redis.
pub const DEFAULT_MAX_MULTIBULK_LEN: usize = 1024 * 1024;
/// Default of `limits.max_inline_bytes`: 64 KiB, Redis's `PROTO_INLINE_MAX_SIZE`.
pub const DEFAULT_MAX_INLINE_BYTES: usize = 64 * 1024;
/// Default of `limits.max_query_buffer_bytes`: 1 GiB, Redis's `client-query-buffer-limit`.
pub const DEFAULT_MAX_QUERY_BUFFER_BYTES: usize = 1024 * 1024 * 1024;
/// Default of `limits.coalesce_replies`: on. Redis itself writes a pipeline's replies after
/// running what it read from the client; the proxy, whose replies come from several nodes,
/// does the same (one write and one wake-up of the client instead of one per node).
pub const DEFAULT_COALESCE_REPLIES: bool = true;
/// Default of `limits.coalesce_max_bytes`: reply bytes a client's held replies may reach before
/// they leave as they come again, so a pipeline of large values is not all buffered before
/// the client gets the first (beyond a few tens of KB, a write per reply costs little beside
/// the bytes).
pub const DEFAULT_COALESCE_MAX_BYTES: usize = 64 * 1024;
/// Largest accepted `limits.coalesce_max_bytes` (the queue counts them in 32 bits).
pub const MAX_COALESCE_MAX_BYTES: usize = 1 << 30;

/// Default of `limits.max_pipeline`.
pub const DEFAULT_MAX_PIPELINE: usize = 100_000;
/// Default of `limits.output_buffer_hard_bytes`: a client whose unsent replies exceed 1 GiB is
/// disconnected at once (twice the largest bulk, so one maximal reply still fits).
pub const DEFAULT_OUTPUT_BUFFER_HARD_BYTES: usize = 1024 * 1024 * 1024;
/// Default of `limits.output_buffer_soft_bytes`: once 64 MiB of replies are held for a client
/// (received from the nodes and not yet written to it) the proxy stops forwarding its
/// requests and stops reading from it until it reads.
pub const DEFAULT_OUTPUT_BUFFER_SOFT_BYTES: usize = 64 * 1024 * 1024;
/// Default of `limits.max_inflight_reply_bytes`: a client's requests on their way to the nodes
/// may be expected to bring back at most 16 MiB of replies at once; its further requests wait.
/// A node's connection carries at most this much for one client before it serves the others.
pub const DEFAULT_MAX_INFLIGHT_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Default of `limits.monitor_buffer_bytes`: a MONITOR connection more than 32 MiB of
/// command lines behind is closed (Redis's hard limit for its pubsub class).
pub const DEFAULT_MONITOR_BUFFER_BYTES: usize = 32 * 1024 * 1024;
/// Default of `limits.output_buffer_soft_seconds`: how long a client may stay above the soft
/// limit before it is disconnected (Redis's pubsub class uses 60 s).
pub const DEFAULT_OUTPUT_BUFFER_SOFT_SECONDS: u64 = 60;
/// Default of `limits.auth_timeout_ms`: with a `password`, a connection that has not
/// authenticated within 10 s is closed.
pub const DEFAULT_AUTH_TIMEOUT_MS: u64 = 10_000;
/// Default of `limits.tls_handshake_timeout_ms`: a TLS client must finish its handshake
/// within 10 s.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default of `limits.close_linger_ms`: after the last reply of an orderly close (shutdown
/// drain, QUIT, ...), how long the proxy keeps reading and dropping what the client still
/// sends, waiting for it to close its side too.
pub const DEFAULT_CLOSE_LINGER_MS: u64 = 500;
/// Default of `limits.idle_park_ms`: a plaintext client that sent nothing for between one
/// and two of these intervals is parked (its connection kept in the park room, its session's
/// memory freed) until it sends again.
pub const DEFAULT_IDLE_PARK_MS: u64 = 1000;
/// Default of `limits.tracking_table_max_keys`: keys remembered for clients' client-side
/// caches (CLIENT TRACKING), like Redis's `tracking-table-max-keys` (whose default is 1M).
pub const DEFAULT_TRACKING_TABLE_MAX_KEYS: usize = 1_000_000;
/// Default of `limits.auth_failure_delay_ms`: each failed AUTH on a connection delays its
/// answer by this much more than the previous one (at most 20 times), slowing guessing.
pub const DEFAULT_AUTH_FAILURE_DELAY_MS: u64 = 100;
/// Default of `limits.auth_throttle_sources`: source addresses with failed AUTH attempts
/// remembered at once (about 100 bytes each); when full, the one whose last failure is oldest
/// is forgotten first.
pub const DEFAULT_AUTH_THROTTLE_SOURCES: usize = 4096;
/// Default of `limits.acllog_max_len`: Redis's `acllog-max-len`, the ACL log's entries.
pub const DEFAULT_ACLLOG_MAX_LEN: usize = 128;
/// Largest accepted `limits.acllog_max_len`.
pub const MAX_ACLLOG_MAX_LEN: usize = 1_000_000;
/// Largest accepted `limits.auth_throttle_sources`: the table is scanned when full.
pub const MAX_AUTH_THROTTLE_SOURCES: usize = 65_536;
/// Default of `limits.max_reply_depth`: twice the deepest reply Redis 7 itself produces (a
/// Lua script returning a recursive table gets 7,995 nested arrays before `reached lua stack
/// limit`), so every reply a Redis server sends is forwarded.
pub const DEFAULT_MAX_REPLY_DEPTH: usize = 16_384;
/// Largest accepted `limits.max_reply_depth`. Deeper replies are still framed (their memory is
/// bounded by their bytes); the limit only says which ones the proxy refuses.
pub const MAX_REPLY_DEPTH_LIMIT: usize = 1_048_576;
/// Longest shard name, in bytes.
pub const MAX_SHARD_NAME_LEN: usize = 64;
/// Default of `log.level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default of `log.format`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

/// The top level of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `listen`: the client listener, an `IP:port` (no hostname). Default
    /// [`DEFAULT_LISTEN`]. Port 0 picks a free port (for tests).
    pub listen: Option<Spanned<String>>,
    /// `password`: when set, clients must `AUTH` with it before any other command. Default:
    /// unset (no AUTH). Must not be empty.
    pub password: Option<Spanned<String>>,
    /// `allow_flush`: whether FLUSHALL/FLUSHDB are fanned out to every shard. Default
    /// [`DEFAULT_ALLOW_FLUSH`] (refused), because one typo would empty the whole cluster.
    pub allow_flush: Option<bool>,
    /// `threads`: worker threads serving clients. Default [`DEFAULT_THREADS`] (0: half the
    /// cores, at least 1). Read at start only.
    pub threads: Option<Spanned<usize>>,
    /// `busy_poll_us`: how long a worker keeps polling for work after it ran out, before it
    /// sleeps. Default [`DEFAULT_BUSY_POLL_US`] (off); at most [`MAX_BUSY_POLL_US`]. Read at
    /// start only.
    pub busy_poll_us: Option<Spanned<u64>>,
    /// `shutdown_grace_ms`: how long clients may drain on SIGTERM/SIGINT before the proxy
    /// exits. Default [`DEFAULT_SHUTDOWN_GRACE_MS`]; 0 exits at once.
    pub shutdown_grace_ms: Option<Spanned<u64>>,
    /// `topology_file`: where the live topology (after failovers and slot moves) is
    /// persisted and read back on start. Default: unset (changes are lost on restart). A
    /// relative path is relative to the configuration file's directory.
    pub topology_file: Option<Spanned<String>>,
    /// `metrics_listen`: the HTTP endpoint serving `/metrics` (Prometheus), `/livez`, `/readyz`
    /// and `POST /-/reload`, an `IP:port` (no hostname), or [`METRICS_LISTEN_OFF`] (`"off"`)
    /// for none. Default [`DEFAULT_METRICS_LISTEN`]. It must differ from `listen`.
    pub metrics_listen: Option<Spanned<String>>,
    /// `metrics_namespace`: the prefix of every metric name (`<namespace>_connected_clients`):
    /// 1-64 characters of `A-Za-z0-9_`, not starting with a digit. Default
    /// [`DEFAULT_METRICS_NAMESPACE`]; `"redis"` makes the names redshard shares with
    /// redis_exporter match its dashboards.
    pub metrics_namespace: Option<Spanned<String>>,
    /// `admin_socket`: the Unix socket of the admin port, a path or `"off"`. Only the proxy's
    /// own user (and root) may connect; no password is asked. Default
    /// [`crate::ha::default_admin_socket`] (`/tmp/redshard-<uid>/admin.sock`), where
    /// `redshard-admin` looks by default.
    pub admin_socket: Option<Spanned<String>>,
    /// `admin_listen`: the admin port on TCP, `"IP:port"` or `"off"`. Default
    /// [`crate::ha::DEFAULT_ADMIN_LISTEN`] (off). Needs `admin_password`; it must differ from
    /// `listen` and `metrics_listen`.
    pub admin_listen: Option<Spanned<String>>,
    /// `admin_password`: the password TCP admin clients must `AUTH` with. Default none;
    /// required with `admin_listen`.
    pub admin_password: Option<Spanned<String>>,
    /// `tls_listen`: a second client listener, speaking TLS, an `IP:port` (no hostname).
    /// Default: unset (no TLS listener; `listen` serves plaintext either way). Needs `[tls]`;
    /// must differ from `listen` and `metrics_listen`.
    pub tls_listen: Option<Spanned<String>>,
    /// `[tls]`: the certificate of `tls_listen`. Only with `tls_listen`.
    pub tls: Option<Spanned<TlsFile>>,
    /// `[backend]`: how the proxy connects to redis-servers.
    #[serde(default)]
    pub backend: BackendFile,
    /// `[cluster]`: several proxies sharing the cluster through etcd (see
    /// [`crate::cluster`]). Default: none (one proxy, `topology_file`).
    pub cluster: Option<Spanned<crate::cluster::ClusterFile>>,
    /// `[replication]`: how replicas follow their master and when writes are acknowledged.
    #[serde(default)]
    pub replication: crate::ha::ReplicationFile,
    /// `[mirror]`: proxy-side mirroring (`[replication] mode = "proxy"`) and replica reads.
    #[serde(default)]
    pub mirror: crate::ha::MirrorFile,
    /// `[health]`: probes and failover.
    #[serde(default)]
    pub health: crate::ha::HealthFile,
    /// `[limits]`: bounds on what clients and backends may send.
    #[serde(default)]
    pub limits: LimitsFile,
    /// `[log]`: logging.
    #[serde(default)]
    pub log: LogFile,
    /// `[slowlog]`: which commands SLOWLOG keeps.
    #[serde(default)]
    pub slowlog: SlowlogFile,
    /// `[[shard]]`: the initial cluster, one table per shard. Required: together the shards
    /// must assign each of the 16384 slots exactly once.
    #[serde(default)]
    pub shard: Vec<Spanned<ShardFile>>,
    /// `[[rule]]`: key routing rules (`prefix`, `tag`, `own_tag`), see [`crate::rules`].
    /// Default: none (every key hashes by Redis Cluster's rules).
    #[serde(default)]
    pub rule: Vec<Spanned<crate::rules::KeyRule>>,
    /// `[[user]]`: clients that authenticate with `AUTH name password` (Redis 6 ACL style),
    /// each with an access level. Default: none (only the `default` user of `password`).
    #[serde(default)]
    pub user: Vec<Spanned<UserFile>>,
}

/// `[backend]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// `username`: the ACL user the proxy `AUTH`s as on each backend connection. Default: unset
    /// (the `default` user). Needs `password`.
    pub username: Option<Spanned<String>>,
    /// `password`: the password of that user (or of `requirepass`). Default: unset (no AUTH).
    pub password: Option<Spanned<String>>,
    /// `control_username`: the ACL user of the proxy's own control connections (health
    /// probes; later resync and migration), so that client traffic can run as a restricted
    /// user. Default: unset (the same credentials as client traffic). Needs
    /// `control_password`.
    pub control_username: Option<Spanned<String>>,
    /// `control_password`: the password of `control_username` (or of the `default` user).
    /// Default: unset (the client-traffic credentials).
    pub control_password: Option<Spanned<String>>,
    /// `manage_acl`: whether the proxy creates its own ACL users on every node (with the
    /// `username`/`password` connection, which needs `ACL SETUSER`) and runs client traffic
    /// as them, so that scripts obey `allow_flush` and the `[[user]]` access levels. `false`
    /// runs client traffic as `username` itself. Default [`DEFAULT_MANAGE_ACL`].
    pub manage_acl: Option<Spanned<bool>>,
    /// `keyless_scripts`: what a script or function called with no key (`EVAL ... 0`,
    /// `FCALL f 0`) may do: `"no-keys"` runs it on a master as a user that may touch no key
    /// (a key it touches is an error, never a partial answer), `"any-master"` runs it on a
    /// master with full rights. Default [`DEFAULT_KEYLESS_SCRIPTS`] (needs `manage_acl`).
    pub keyless_scripts: Option<Spanned<KeylessScripts>>,
    /// `lanes`: long-lived pipelined connections per node; a key always uses lane
    /// `slot % lanes`; 0 = one per worker thread. Default [`DEFAULT_LANES`],
    /// `0..=`[`MAX_LANES`].
    pub lanes: Option<Spanned<usize>>,
    /// `max_unwritten_bytes`: bytes a lane's connection has copied for its node and not
    /// written yet, past which it takes no more requests from its queue. Default
    /// [`DEFAULT_MAX_UNWRITTEN_BYTES`], `1..=`[`MAX_MAX_UNWRITTEN_BYTES`].
    pub max_unwritten_bytes: Option<Spanned<usize>>,
    /// `databases`: how many databases clients may `SELECT` (0 to `databases - 1`); every node
    /// must have at least as many (its own `databases`), which the proxy checks on each
    /// connection. Default [`DEFAULT_DATABASES`], `1..=`[`MAX_DATABASES`].
    pub databases: Option<Spanned<u32>>,
    /// `ready_connections`: whether the proxy keeps one connection per node and protocol open
    /// ahead of need, so that a client's first blocking command, transaction or subscription
    /// on a node goes out at once instead of after a connect and AUTH. Default
    /// [`DEFAULT_READY_CONNECTIONS`].
    pub ready_connections: Option<Spanned<bool>>,
    /// `connect_timeout_ms`: time allowed to open a connection (and AUTH). Default
    /// [`DEFAULT_CONNECT_TIMEOUT_MS`]; not 0.
    pub connect_timeout_ms: Option<Spanned<u64>>,
    /// `response_timeout_ms`: time a backend may take to answer a request before the
    /// connection is considered broken. Default [`DEFAULT_RESPONSE_TIMEOUT_MS`]; not 0.
    pub response_timeout_ms: Option<Spanned<u64>>,
    /// `reconnect_backoff_min_ms`: first wait before reconnecting to a node. Default
    /// [`DEFAULT_RECONNECT_BACKOFF_MIN_MS`]; not 0.
    pub reconnect_backoff_min_ms: Option<Spanned<u64>>,
    /// `reconnect_backoff_max_ms`: the wait doubles up to this. Default
    /// [`DEFAULT_RECONNECT_BACKOFF_MAX_MS`]; at least `reconnect_backoff_min_ms`.
    pub reconnect_backoff_max_ms: Option<Spanned<u64>>,
    /// `allowed_nodes`: the nodes ADDSHARD and ADDREPLICA may add when the proxy has backend
    /// credentials to send them (and no backend TLS): networks (`"10.0.0.0/8"`, an IP) or
    /// exact `host:port`s. Default: empty, so only the nodes of the `[[shard]]` lists.
    pub allowed_nodes: Option<Vec<Spanned<String>>>,
    /// `tls`: whether every backend connection (lanes, subscriptions, probes) speaks TLS.
    /// Default `false`. Needs `tls_ca_file`.
    pub tls: Option<Spanned<bool>>,
    /// `tls_ca_file`: PEM file of the certificate authorities that sign the backends'
    /// certificates (like redis-cli's `--cacert`). Required with `tls = true`.
    pub tls_ca_file: Option<Spanned<String>>,
    /// `tls_server_name`: the name every backend certificate must carry. Default: unset (each
    /// node's own host, an IP address or a hostname, as written in the topology).
    pub tls_server_name: Option<Spanned<String>>,
    /// `tls_cert_file`: PEM certificate chain the proxy presents to backends that verify
    /// clients (Redis's `tls-auth-clients yes`). Default: unset (none). Needs `tls_key_file`.
    pub tls_cert_file: Option<Spanned<String>>,
    /// `tls_key_file`: PEM private key of `tls_cert_file`. Needs `tls_cert_file`.
    pub tls_key_file: Option<Spanned<String>>,
}

/// `[tls]`: what the TLS client listener (`tls_listen`) presents and whom it accepts. The
/// files are read at start and again on every reload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// `cert_file`: PEM certificate chain, the server's own certificate first. Required.
    pub cert_file: Spanned<String>,
    /// `key_file`: PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1). Required.
    pub key_file: Spanned<String>,
    /// `client_ca_file`: PEM certificate authorities; when set, every client must present a
    /// certificate signed by one of them (mutual TLS). Default: unset (any client may
    /// connect, and authenticates with AUTH as on `listen`).
    pub client_ca_file: Option<Spanned<String>>,
}

/// `[limits]`. Every limit is at least 1.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// `max_clients`: connected clients; further connections wait to be accepted. Default
    /// [`DEFAULT_MAX_CLIENTS`].
    pub max_clients: Option<Spanned<usize>>,
    /// `max_bulk_bytes`: largest bulk string in a request. Default [`DEFAULT_MAX_BULK_BYTES`];
    /// at most `max_query_buffer_bytes`.
    pub max_bulk_bytes: Option<Spanned<usize>>,
    /// `max_multibulk_len`: most arguments in one request. Default
    /// [`DEFAULT_MAX_MULTIBULK_LEN`].
    pub max_multibulk_len: Option<Spanned<usize>>,
    /// `max_inline_bytes`: longest inline (telnet-style) request line. Default
    /// [`DEFAULT_MAX_INLINE_BYTES`]; at most `max_query_buffer_bytes`.
    pub max_inline_bytes: Option<Spanned<usize>>,
    /// `max_query_buffer_bytes`: most unparsed bytes buffered from one client. Default
    /// [`DEFAULT_MAX_QUERY_BUFFER_BYTES`].
    pub max_query_buffer_bytes: Option<Spanned<usize>>,
    /// `max_pipeline`: replies a client may have outstanding before the proxy stops reading
    /// from it. Default [`DEFAULT_MAX_PIPELINE`].
    pub max_pipeline: Option<Spanned<usize>>,
    /// `max_reply_depth`: nesting depth accepted in backend replies; a deeper reply is replaced
    /// by an error for its own request only. Default [`DEFAULT_MAX_REPLY_DEPTH`], at most
    /// [`MAX_REPLY_DEPTH_LIMIT`].
    pub max_reply_depth: Option<Spanned<usize>>,
    /// `output_buffer_hard_bytes`: reply bytes held for one client above which it is
    /// disconnected at once. Default [`DEFAULT_OUTPUT_BUFFER_HARD_BYTES`].
    pub output_buffer_hard_bytes: Option<Spanned<usize>>,
    /// `output_buffer_soft_bytes`: reply bytes held for one client at which it is paused
    /// (its requests are not forwarded, it is not read). Default
    /// [`DEFAULT_OUTPUT_BUFFER_SOFT_BYTES`]; at most `output_buffer_hard_bytes`.
    pub output_buffer_soft_bytes: Option<Spanned<usize>>,
    /// `max_inflight_reply_bytes`: reply bytes one client's forwarded, unanswered requests
    /// may be expected to bring back; its further requests wait. Default
    /// [`DEFAULT_MAX_INFLIGHT_REPLY_BYTES`].
    pub max_inflight_reply_bytes: Option<Spanned<usize>>,
    /// `monitor_buffer_bytes`: MONITOR lines waiting for one monitoring client beyond which
    /// it is closed. Default [`DEFAULT_MONITOR_BUFFER_BYTES`].
    pub monitor_buffer_bytes: Option<Spanned<usize>>,
    /// `output_buffer_soft_seconds`: time above the soft limit before disconnecting. Default
    /// [`DEFAULT_OUTPUT_BUFFER_SOFT_SECONDS`].
    pub output_buffer_soft_seconds: Option<Spanned<u64>>,
    /// `auth_timeout_ms`: with `password` set, how long a connection may stay
    /// unauthenticated. Default [`DEFAULT_AUTH_TIMEOUT_MS`].
    pub auth_timeout_ms: Option<Spanned<u64>>,
    /// `tls_handshake_timeout_ms`: how long a client on `tls_listen` may take to finish its
    /// TLS handshake. Default [`DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS`].
    pub tls_handshake_timeout_ms: Option<Spanned<u64>>,
    /// `idle_park_ms`: the idle sweep's interval; a client idle for a whole interval is
    /// parked. Default [`DEFAULT_IDLE_PARK_MS`]; 0 never parks.
    pub idle_park_ms: Option<Spanned<u64>>,
    /// `client_timeout_s`: a client idle this many seconds is closed, as Redis's `timeout`
    /// does (not one blocked in a command, subscribed or monitoring). Default 0: never;
    /// CONFIG SET / GET `timeout` set and show it until the next reload.
    pub client_timeout_s: Option<Spanned<u64>>,
    /// `close_linger_ms`: how long an orderly close waits for the client to close its side,
    /// dropping what it still sends. Default [`DEFAULT_CLOSE_LINGER_MS`]; 0 closes at once.
    pub close_linger_ms: Option<Spanned<u64>>,
    /// `auth_failure_delay_ms`: added delay per failed AUTH on a connection. Default
    /// [`DEFAULT_AUTH_FAILURE_DELAY_MS`]; 0 answers at once.
    pub auth_failure_delay_ms: Option<Spanned<u64>>,
    /// `auth_throttle_sources`: source addresses with failed AUTH attempts remembered, whose
    /// AUTH attempts on every connection are spaced out. Default
    /// [`DEFAULT_AUTH_THROTTLE_SOURCES`]; 0 turns the per-address throttle off.
    pub auth_throttle_sources: Option<Spanned<usize>>,
    /// `acllog_max_len`: entries `ACL LOG` keeps (Redis's `acllog-max-len`). Default
    /// [`DEFAULT_ACLLOG_MAX_LEN`].
    pub acllog_max_len: Option<Spanned<usize>>,
    /// `tracking_table_max_keys`: keys read by CLIENT TRACKING clients that the proxy
    /// remembers; past it, keys are forgotten and their readers told to drop them. Default
    /// [`DEFAULT_TRACKING_TABLE_MAX_KEYS`].
    pub tracking_table_max_keys: Option<Spanned<usize>>,
    /// `coalesce_replies`: whether the replies to the requests a pipelining client sent in
    /// one read leave together, once all are in. Default [`DEFAULT_COALESCE_REPLIES`].
    pub coalesce_replies: Option<Spanned<bool>>,
    /// `coalesce_max_bytes`: reply bytes held for a client past which its replies leave as
    /// they come. Default [`DEFAULT_COALESCE_MAX_BYTES`], `1..=`[`MAX_COALESCE_MAX_BYTES`].
    pub coalesce_max_bytes: Option<Spanned<usize>>,
}

/// `[slowlog]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowlogFile {
    /// `log_slower_than_us`: commands whose reply took at least this long (from arrival at
    /// the proxy to the reply being ready) enter SLOWLOG; 0 logs every command, a negative
    /// value none. Default [`DEFAULT_SLOWLOG_SLOWER_THAN_US`].
    pub log_slower_than_us: Option<i64>,
    /// `max_len`: entries kept (the oldest leave first). Default [`DEFAULT_SLOWLOG_MAX_LEN`].
    pub max_len: Option<Spanned<usize>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `level`: a tracing filter directive such as `"info"` or `"info,redshard=debug"`.
    /// Default [`DEFAULT_LOG_LEVEL`]; `RUST_LOG`, when set, is for the proxy to weigh.
    pub level: Option<Spanned<String>>,
    /// `format`: `"text"` (human) or `"json"` (one object per line). Default
    /// [`DEFAULT_LOG_FORMAT`].
    pub format: Option<LogFormat>,
}

/// One `[[user]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// `name`: what clients give to `AUTH name password`; not `default`, unique.
    pub name: Spanned<String>,
    /// `password`: the user's password; not empty.
    pub password: Spanned<String>,
    /// `access`: `"all"`, `"read-only"` (commands that cannot write) or `"no-dangerous"`
    /// (everything but Redis's `@dangerous` category). Default `"all"`.
    #[serde(default)]
    pub access: Access,
}

/// What a `[[user]]` may run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Every command the proxy allows.
    #[default]
    All,
    /// Only commands that cannot modify data (Redis's `readonly` flag; no scripts or publish).
    ReadOnly,
    /// Every command outside Redis's `@dangerous` category (KEYS, INFO, CONFIG, SORT, ...).
    NoDangerous,
}

/// One `[[shard]]`: a master, its replicas and the slots it serves at first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardFile {
    /// `name`: unique, 1-64 characters of `A-Za-z0-9._-`; how operators and admin commands
    /// name the shard. Required.
    pub name: Spanned<String>,
    /// `master`: the node that takes the shard's reads and writes, `host:port`. Required.
    pub master: Spanned<String>,
    /// `replicas`: nodes kept equal to the master by the proxy's mirroring. Default: none.
    #[serde(default)]
    pub replicas: Vec<Spanned<String>>,
    /// `slots`: slot ranges (`"0-5460"`) or single slots (`"7000"`). Default: none (a shard
    /// that only receives slots by migration).
    #[serde(default)]
    pub slots: Vec<Spanned<String>>,
}
