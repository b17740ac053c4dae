//! The keys of mirroring (`[mirror]`), health checks and failover (`[health]`) and the admin
//! port (`admin_listen`, `admin_password`): how the proxy keeps replicas equal and replaces a
//! dead master.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::validate::Source;

/// Default of `[mirror] max_lag_writes`.
pub const DEFAULT_MIRROR_MAX_LAG_WRITES: usize = 100_000;
/// Default of `[mirror] max_scripts`.
pub const DEFAULT_MAX_SCRIPTS: usize = 10_000;
/// Default of `[mirror] resync_timeout_ms`: ten minutes for a full sync.
pub const DEFAULT_RESYNC_TIMEOUT_MS: u64 = 600_000;
/// Default of `[mirror] cutover_timeout_ms`: the longest write pause of a resync cut-over.
pub const DEFAULT_CUTOVER_TIMEOUT_MS: u64 = 5_000;
/// Default of `[health] interval_ms`.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 100;
/// Default of `[health] timeout_ms`.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 500;
/// Default of `[health] down_after_ms`.
pub const DEFAULT_DOWN_AFTER_MS: u64 = 1_500;
/// Default of `[health] failover_wait_ms`.
pub const DEFAULT_FAILOVER_WAIT_MS: u64 = 5_000;
/// Default of `admin_listen`: no admin port on TCP. The admin socket serves the proxy's own
/// user without a secret; TCP needs `admin_password`, which a default cannot provide.
pub const DEFAULT_ADMIN_LISTEN: &str = "off";
/// The port operators conventionally give `admin_listen` (`redshard-admin -p`'s default).
pub const CONVENTIONAL_ADMIN_PORT: u16 = 6390;

/// Default of `admin_socket`: `/tmp/redshard-<uid>/admin.sock`, `<uid>` the effective user of
/// the calling process, so the proxy and `redshard-admin` run by the same user agree on it
/// without configuration (the layout of tmux's sockets). The proxy creates the directory
/// owner-only and refuses one that another user owns or can enter.
#[must_use]
pub fn default_admin_socket() -> std::path::PathBuf {
    let dir = match effective_uid() {
        Some(uid) => format!("/tmp/redshard-{uid}"),
        None => "/tmp/redshard".to_owned(),
    };
    std::path::Path::new(&dir).join("admin.sock")
}

/// The effective user id of this process, read from the owner of `/proc/self` (Linux); `None`
/// where there is no procfs.
#[must_use]
pub fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Default of `[replication] ack_timeout_ms`: how long a write's reply waits for the in-sync
/// replicas' acknowledgement before the replicas that did not acknowledge are made stale.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 1_000;

/// Default of `[replication] waits_in_flight`: `WAIT`s a lane's connection may have out at
/// once. Two let the master block on the next batch's `WAIT` as soon as the current one
/// answers (measured: 0–2% more sync write throughput at `-P 16`, less at three or more), but
/// when a replica stops, a write can then wait behind one more `WAIT` that runs its whole
/// `ack_timeout_ms`: one keeps that stall shortest.
pub const DEFAULT_WAITS_IN_FLIGHT: u32 = 1;

/// Upper bound of `[replication] waits_in_flight`.
pub const MAX_WAITS_IN_FLIGHT: u32 = 16;

/// How replicas receive their master's writes (`[replication] mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    /// Redis's own replication: every replica is `REPLICAOF` its master, set up and repaired
    /// by the controller; the proxy waits for the in-sync replicas' acknowledgement (`sync`).
    #[default]
    Redis,
    /// The proxy sends each write's deterministic effect to every in-sync replica (no
    /// `REPLICAOF` in steady state). Single proxy only; see the replication docs for its limits.
    Proxy,
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicationMode::Redis => "redis",
            ReplicationMode::Proxy => "proxy",
        })
    }
}

/// When a client's write is acknowledged (`[replication] ack`, formerly `[mirror] mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    /// After the master and every in-sync replica applied it.
    #[default]
    Sync,
    /// After the master applied it; the replicas follow through a bounded queue.
    Async,
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckMode::Sync => "sync",
            AckMode::Async => "async",
        })
    }
}

/// Where read-only commands go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// Always the master.
    #[default]
    Master,
    /// An in-sync replica; the master when the shard has none.
    Replica,
    /// An in-sync replica that is up; the master otherwise.
    PreferReplica,
}

/// `[mirror]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFile {
    /// `mode`: `"sync"` or `"async"`: the older name of `[replication] ack`.
    pub mode: Option<Spanned<AckMode>>,
    /// `max_lag_writes`: mirrored writes a replica may have outstanding (sent, not answered)
    /// before it is declared stale. Default [`DEFAULT_MIRROR_MAX_LAG_WRITES`].
    pub max_lag_writes: Option<Spanned<usize>>,
    /// `read_from`: `"master"`, `"replica"` or `"prefer-replica"`. Default master.
    pub read_from: Option<ReadFrom>,
    /// `resync_timeout_ms`: how long a full sync of a replica may take before it is retried.
    pub resync_timeout_ms: Option<Spanned<u64>>,
    /// `max_scripts`: Lua script bodies the proxy remembers for replicas. Default
    /// [`DEFAULT_MAX_SCRIPTS`].
    pub max_scripts: Option<Spanned<usize>>,
    /// `cutover_timeout_ms`: the longest write pause while a resynced replica catches up.
    pub cutover_timeout_ms: Option<Spanned<u64>>,
}

/// `[replication]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationFile {
    /// `mode`: `"redis"` or `"proxy"`.
    pub mode: Option<ReplicationMode>,
    /// `ack`: `"sync"` or `"async"`. Default sync.
    pub ack: Option<Spanned<AckMode>>,
    /// `ack_timeout_ms`: how long a reply waits for the in-sync replicas' acknowledgement.
    /// Default [`DEFAULT_ACK_TIMEOUT_MS`].
    pub ack_timeout_ms: Option<Spanned<u64>>,
    /// `waits_in_flight`: `WAIT`s a lane's connection may have out at once. Default
    /// [`DEFAULT_WAITS_IN_FLIGHT`].
    pub waits_in_flight: Option<Spanned<u32>>,
}

/// The validated `[replication]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// How replicas receive their master's writes.
    pub mode: ReplicationMode,
    /// When a client's write is acknowledged.
    pub ack: AckMode,
    /// How long a reply waits for the in-sync replicas before those that did not acknowledge
    /// are made stale.
    pub ack_timeout: Duration,
    /// `WAIT`s a lane's connection may have out at once (1 to [`MAX_WAITS_IN_FLIGHT`]): the
    /// writes sent while that many are out are covered by the next one, sent when the oldest
    /// answers.
    pub waits_in_flight: u32,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            mode: ReplicationMode::default(),
            ack: AckMode::default(),
            ack_timeout: Duration::from_millis(DEFAULT_ACK_TIMEOUT_MS),
            waits_in_flight: DEFAULT_WAITS_IN_FLIGHT,
        }
    }
}

/// Validates `[replication]`; `mirror_mode` is `[mirror] mode`, the older name of `ack`, which
/// may be given instead of it but not differently beside it.
pub(crate) fn replication(
    file: ReplicationFile,
    mirror_mode: Option<Spanned<AckMode>>,
    src: &Source<'_>,
) -> Result<ReplicationConfig, ConfigError> {
    let ack = match (file.ack, mirror_mode) {
        (Some(ack), Some(old)) if ack.get_ref() != old.get_ref() => {
            return Err(src.invalid_at(
                Some(old.span()),
                "mirror.mode",
                format!(
                    "is the older name of replication.ack and differs from it ({})",
                    ack.get_ref()
                ),
            ));
        }
        (Some(ack), _) | (None, Some(ack)) => *ack.get_ref(),
        (None, None) => AckMode::default(),
    };
    let mode = file.mode.unwrap_or_default();
    Ok(ReplicationConfig {
        mode,
        ack,
        ack_timeout: Duration::from_millis(src.bounded(
            file.ack_timeout_ms,
            "replication.ack_timeout_ms",
            DEFAULT_ACK_TIMEOUT_MS,
            1,
            None,
        )?),
        waits_in_flight: src.bounded(
            file.waits_in_flight,
            "replication.waits_in_flight",
            DEFAULT_WAITS_IN_FLIGHT,
            1,
            Some(MAX_WAITS_IN_FLIGHT),
        )?,
    })
}

/// In `redis` mode with `sync` acknowledgement a lane waits up to `ack_timeout` for a
/// `WAIT`'s answer, so the lane's response timeout must be longer: otherwise every replica
/// that falls behind would also make the lane drop its connection (and fail every request in
/// flight on it) instead of being marked stale. An `ack_timeout_ms` written in the file must
/// be below it; the default becomes half of it when it is not.
pub(crate) fn check_ack_timeout(
    replication: &mut ReplicationConfig,
    given: bool,
    response_timeout: Duration,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    if replication.mode != ReplicationMode::Redis
        || replication.ack != AckMode::Sync
        || replication.ack_timeout < response_timeout
    {
        return Ok(());
    }
    if !given {
        replication.ack_timeout = (response_timeout / 2).max(Duration::from_millis(1));
        return Ok(());
    }
    Err(src.invalid_at(
        None,
        "replication.ack_timeout_ms",
        format!(
            "must be below backend.response_timeout_ms ({} ms): a lane waits that long for the replicas' acknowledgement",
            response_timeout.as_millis()
        ),
    ))
}

/// `[health]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// `interval_ms`: time between two PINGs of a node. Default [`DEFAULT_HEALTH_INTERVAL_MS`].
    pub interval_ms: Option<Spanned<u64>>,
    /// `timeout_ms`: how long a PING may take. Default [`DEFAULT_HEALTH_TIMEOUT_MS`].
    pub timeout_ms: Option<Spanned<u64>>,
    /// `down_after_ms`: failing this long makes a node down (and a master failed over).
    /// Default [`DEFAULT_DOWN_AFTER_MS`].
    pub down_after_ms: Option<Spanned<u64>>,
    /// `failover_wait_ms`: how long requests for a shard whose master is down wait for the
    /// failover before they get `-CLUSTERDOWN`. Default [`DEFAULT_FAILOVER_WAIT_MS`].
    pub failover_wait_ms: Option<Spanned<u64>>,
    /// `auto_failover`: whether a down master is replaced automatically. Default true.
    pub auto_failover: Option<bool>,
}

/// The validated `[mirror]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Outstanding mirrored writes that make a replica stale.
    pub max_lag_writes: usize,
    /// Where reads go.
    pub read_from: ReadFrom,
    /// Bound on one full sync.
    pub resync_timeout: Duration,
    /// Script bodies remembered for replicas.
    pub max_scripts: usize,
    /// Bound on the write pause of a cut-over.
    pub cutover_timeout: Duration,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            max_lag_writes: DEFAULT_MIRROR_MAX_LAG_WRITES,
            read_from: ReadFrom::Master,
            resync_timeout: Duration::from_millis(DEFAULT_RESYNC_TIMEOUT_MS),
            max_scripts: DEFAULT_MAX_SCRIPTS,
            cutover_timeout: Duration::from_millis(DEFAULT_CUTOVER_TIMEOUT_MS),
        }
    }
}

/// The validated `[health]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between probes of one node.
    pub interval: Duration,
    /// Bound on one probe.
    pub timeout: Duration,
    /// Failing this long makes a node down.
    pub down_after: Duration,
    /// How long unsent requests wait for a failover.
    pub failover_wait: Duration,
    /// Whether down masters are failed over automatically.
    pub auto_failover: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(DEFAULT_HEALTH_INTERVAL_MS),
            timeout: Duration::from_millis(DEFAULT_HEALTH_TIMEOUT_MS),
            down_after: Duration::from_millis(DEFAULT_DOWN_AFTER_MS),
            failover_wait: Duration::from_millis(DEFAULT_FAILOVER_WAIT_MS),
            auto_failover: true,
        }
    }
}

/// Validates `[mirror]`.
pub(crate) fn mirror(file: MirrorFile, src: &Source<'_>) -> Result<MirrorConfig, ConfigError> {
    let ms = |value, key, default| src.bounded(value, key, default, 1, None);
    Ok(MirrorConfig {
        max_lag_writes: src.bounded(
            file.max_lag_writes,
            "mirror.max_lag_writes",
            DEFAULT_MIRROR_MAX_LAG_WRITES,
            1,
            None,
        )?,
        read_from: file.read_from.unwrap_or_default(),
        max_scripts: src.bounded(
            file.max_scripts,
            "mirror.max_scripts",
            DEFAULT_MAX_SCRIPTS,
            0,
            None,
        )?,
        resync_timeout: Duration::from_millis(ms(
            file.resync_timeout_ms,
            "mirror.resync_timeout_ms",
            DEFAULT_RESYNC_TIMEOUT_MS,
        )?),
        cutover_timeout: Duration::from_millis(ms(
            file.cutover_timeout_ms,
            "mirror.cutover_timeout_ms",
            DEFAULT_CUTOVER_TIMEOUT_MS,
        )?),
    })
}

/// Validates `[health]`: the probe must fit several times into the down-time.
pub(crate) fn health(file: HealthFile, src: &Source<'_>) -> Result<HealthConfig, ConfigError> {
    let ms = |value, key, default| src.bounded(value, key, default, 1, None);
    let down_span = file.down_after_ms.as_ref().map(Spanned::span);
    let interval = ms(
        file.interval_ms,
        "health.interval_ms",
        DEFAULT_HEALTH_INTERVAL_MS,
    )?;
    let timeout = ms(
        file.timeout_ms,
        "health.timeout_ms",
        DEFAULT_HEALTH_TIMEOUT_MS,
    )?;
    let down_after = ms(
        file.down_after_ms,
        "health.down_after_ms",
        DEFAULT_DOWN_AFTER_MS,
    )?;
    if down_after < interval.saturating_mul(2) {
        return Err(src.invalid_at(
            down_span,
            "health.down_after_ms",
            format!("must be at least twice health.interval_ms ({interval})"),
        ));
    }
    Ok(HealthConfig {
        interval: Duration::from_millis(interval),
        timeout: Duration::from_millis(timeout),
        down_after: Duration::from_millis(down_after),
        failover_wait: Duration::from_millis(ms(
            file.failover_wait_ms,
            "health.failover_wait_ms",
            DEFAULT_FAILOVER_WAIT_MS,
        )?),
        auto_failover: file.auto_failover.unwrap_or(true),
    })
}

/// `admin_socket`: a path, or `"off"`; absent means [`default_admin_socket`].
pub(crate) fn admin_socket(
    value: Option<Spanned<String>>,
    src: &Source<'_>,
) -> Result<Option<std::path::PathBuf>, ConfigError> {
    let Some(value) = value else {
        return Ok(Some(default_admin_socket()));
    };
    match value.get_ref().as_str() {
        "off" => Ok(None),
        "" => Err(src.invalid(
            Some(&value),
            "admin_socket",
            "must be a path such as \"/run/redshard/admin.sock\", or \"off\"",
        )),
        path => Ok(Some(std::path::PathBuf::from(path))),
    }
}

/// `admin_listen`: an `IP:port`, or `"off"`.
pub(crate) fn admin_listen(
    value: Option<&Spanned<String>>,
    src: &Source<'_>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.get_ref() == "off" {
        return Ok(None);
    }
    value.get_ref().parse().map(Some).map_err(|_| {
        src.invalid(
            Some(value),
            "admin_listen",
            "must be an IP:port such as \"127.0.0.1:6390\", or \"off\"",
        )
    })
}
