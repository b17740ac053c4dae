//! Reloading the configuration file (SIGHUP, `POST /-/reload`).
//!
//! The file is read and validated again, and the TLS certificate files it names are read
//! again. An invalid file, or a TLS file that cannot be used, is refused and the running
//! configuration (certificates included) kept. Otherwise `[limits]` (except
//! `max_reply_depth`, fixed in the backend connections when they open), `[log] level`,
//! `[slowlog]`, `[backend] allowed_nodes` and the TLS files (`[tls]`, `[backend] tls_*`)
//! apply at once: the new values
//! are published in [`ProxyState::live`], and the new certificates serve the connections
//! opened from then on (see [`redshard_dataplane::tls`]). Every other key that changed is reported as
//! needing a restart, and keeps its running value in `live`, so `live` is always what is in
//! effect. `[[shard]]` is one of those: a reload never changes the topology (it has no
//! writer of it, see `redshard_dataplane::router::writer`); shards, replicas and slots move through the
//! controller (the admin port).

use std::fmt;
use std::sync::{Arc, PoisonError};

use redshard_config::{BackendConfig, Config, ConfigError, TlsConfig};

pub use redshard_dataplane::state::LogLevelHook;
use redshard_dataplane::state::ProxyState;
use redshard_dataplane::tls::TlsError;

/// What a successful reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys whose new value is in effect (`limits.max_clients`, `log.level`).
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their running value until a restart.
    pub needs_restart: Vec<String>,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "reloaded")?;
        if self.applied.is_empty() {
            writeln!(f, "applied: nothing changed")?;
        } else {
            writeln!(f, "applied: {}", self.applied.join(", "))?;
        }
        if !self.needs_restart.is_empty() {
            writeln!(f, "needs a restart: {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy was not started from a file.
    #[error("the proxy was not started from a configuration file; nothing to reload")]
    NoFile,
    /// The file cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new `[log] level` is not a valid filter.
    #[error("log.level: {0}")]
    LogLevel(String),
    /// A TLS certificate or key file cannot be used; the running certificates stay.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Re-reads the configuration file and applies what can change live (see the
/// [module docs](self)). Logs the outcome either way.
///
/// # Errors
/// No file to read, an unreadable or invalid file, or an invalid log filter; nothing is
/// applied then.
pub fn reload(state: &ProxyState) -> Result<ReloadReport, ReloadError> {
    let result = reload_inner(state);
    redshard_metrics::config_reload(result.is_ok());
    match &result {
        Ok(report) => {
            let applied = if report.applied.is_empty() {
                "nothing changed".to_owned()
            } else {
                report.applied.join(",")
            };
            tracing::info!(applied = %applied, "configuration reloaded");
            if !report.needs_restart.is_empty() {
                tracing::warn!(
                    keys = %report.needs_restart.join(","),
                    "changed in the configuration file but needs a restart to apply"
                );
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            "configuration reload refused; the running configuration is kept"
        ),
    }
    result
}

fn reload_inner(state: &ProxyState) -> Result<ReloadReport, ReloadError> {
    // One reload at a time: SIGHUP and HTTP may race.
    let _one = state
        .reload
        .lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let path = state
        .reload
        .config_path
        .as_deref()
        .ok_or(ReloadError::NoFile)?;
    let file = Config::load(path)?;
    let running = state.live.snapshot();
    // Read and check every certificate before anything applies.
    let tls = state.tls.prepare_reload(&file)?;
    let mut report = ReloadReport {
        applied: Vec::new(),
        needs_restart: restart_keys(&running, &file),
    };
    let mut next = (*running).clone();

    if file.log.level != running.log.level {
        match &state.reload.log_level {
            Some(hook) => {
                if hook.apply(&file.log.level).map_err(ReloadError::LogLevel)? {
                    report.applied.push("log.level".into());
                    next.log.level.clone_from(&file.log.level);
                } else {
                    report
                        .needs_restart
                        .push("log.level (RUST_LOG is set and wins)".into());
                }
            }
            None => report.needs_restart.push("log.level".into()),
        }
    }

    let (old, new) = (&running.limits, &file.limits);
    for (key, changed) in [
        ("limits.max_clients", old.max_clients != new.max_clients),
        (
            "limits.max_bulk_bytes",
            old.max_bulk_bytes != new.max_bulk_bytes,
        ),
        (
            "limits.max_multibulk_len",
            old.max_multibulk_len != new.max_multibulk_len,
        ),
        (
            "limits.max_inline_bytes",
            old.max_inline_bytes != new.max_inline_bytes,
        ),
        (
            "limits.max_query_buffer_bytes",
            old.max_query_buffer_bytes != new.max_query_buffer_bytes,
        ),
        ("limits.max_pipeline", old.max_pipeline != new.max_pipeline),
        (
            "limits.output_buffer_hard_bytes",
            old.output_buffer_hard_bytes != new.output_buffer_hard_bytes,
        ),
        (
            "limits.output_buffer_soft_bytes",
            old.output_buffer_soft_bytes != new.output_buffer_soft_bytes,
        ),
        (
            "limits.max_inflight_reply_bytes",
            old.max_inflight_reply_bytes != new.max_inflight_reply_bytes,
        ),
        (
            "limits.output_buffer_soft_seconds",
            old.output_buffer_soft != new.output_buffer_soft,
        ),
        (
            "limits.auth_timeout_ms",
            old.auth_timeout != new.auth_timeout,
        ),
        (
            "limits.auth_failure_delay_ms",
            old.auth_failure_delay != new.auth_failure_delay,
        ),
        (
            "limits.auth_throttle_sources",
            old.auth_throttle_sources != new.auth_throttle_sources,
        ),
        (
            "limits.acllog_max_len",
            old.acllog_max_len != new.acllog_max_len,
        ),
        (
            "limits.close_linger_ms",
            old.close_linger != new.close_linger,
        ),
        ("limits.idle_park_ms", old.idle_park != new.idle_park),
        (
            "limits.coalesce_replies",
            old.coalesce_replies != new.coalesce_replies,
        ),
        (
            "limits.coalesce_max_bytes",
            old.coalesce_max_bytes != new.coalesce_max_bytes,
        ),
        (
            "limits.tracking_table_max_keys",
            old.tracking_table_max_keys != new.tracking_table_max_keys,
        ),
        (
            "limits.tls_handshake_timeout_ms",
            old.tls_handshake_timeout != new.tls_handshake_timeout,
        ),
    ] {
        if changed {
            report.applied.push(key.into());
        }
    }
    if running.slowlog != file.slowlog {
        report.applied.push("slowlog".into());
        next.slowlog = file.slowlog;
    }
    if old.max_reply_depth != new.max_reply_depth {
        report.needs_restart.push("limits.max_reply_depth".into());
    }
    next.limits = redshard_config::Limits {
        max_reply_depth: old.max_reply_depth,
        ..new.clone()
    };
    // TLS that keeps running takes the files the new configuration names.
    if let (Some(next), Some(file)) = (&mut next.tls, &file.tls) {
        *next = TlsConfig {
            listen: next.listen,
            ..file.clone()
        };
    }
    if let (Some(next), Some(file)) = (&mut next.backend.tls, &file.backend.tls) {
        next.clone_from(file);
    }
    // Read by ADDSHARD/ADDREPLICA from `live`: a new node can be allowed without a restart.
    if next.backend.allowed_nodes != file.backend.allowed_nodes {
        report.applied.push("backend.allowed_nodes".into());
        next.backend
            .allowed_nodes
            .clone_from(&file.backend.allowed_nodes);
    }
    report
        .applied
        .extend(tls.apply().into_iter().map(str::to_owned));
    state.live.replace(Arc::new(next));
    Ok(report)
}

/// The keys other than `[limits]`, `[log] level` and the TLS files that differ between
/// `running` and `file`.
fn restart_keys(running: &Config, file: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut check = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_owned());
        }
    };
    check("listen", running.listen != file.listen);
    check("password", running.password != file.password);
    check("allow_flush", running.allow_flush != file.allow_flush);
    check(
        "shutdown_grace_ms",
        running.shutdown_grace != file.shutdown_grace,
    );
    check("topology_file", running.topology_file != file.topology_file);
    check(
        "metrics_listen",
        running.metrics_listen != file.metrics_listen,
    );
    check(
        "metrics_namespace",
        running.metrics_namespace != file.metrics_namespace,
    );
    check("admin_socket", running.admin_socket != file.admin_socket);
    check("admin_listen", running.admin_listen != file.admin_listen);
    check(
        "admin_password",
        running.admin_password != file.admin_password,
    );
    check(
        "tls_listen",
        running.tls.as_ref().map(|t| t.listen) != file.tls.as_ref().map(|t| t.listen),
    );
    let without_tls = |backend: &BackendConfig| BackendConfig {
        tls: None,
        allowed_nodes: Vec::new(),
        ..backend.clone()
    };
    check(
        "backend",
        without_tls(&running.backend) != without_tls(&file.backend),
    );
    check(
        "backend.tls",
        running.backend.tls.is_some() != file.backend.tls.is_some(),
    );
    check("log.format", running.log.format != file.log.format);
    check("threads", running.threads != file.threads);
    check("busy_poll_us", running.busy_poll != file.busy_poll);
    // The lanes and the mirror are built with it: how writes reach the replicas and when
    // they are acknowledged changes only with a restart.
    check("replication", running.replication != file.replication);
    check("shard", running.shards != file.shards);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keys_name_what_changed() {
        let a = Config::default();
        let mut b = a.clone();
        assert!(restart_keys(&a, &b).is_empty());
        b.listen = "127.0.0.1:1".parse().unwrap();
        b.backend.lanes = 3;
        b.metrics_listen = None;
        b.limits.max_clients = 1;
        b.log.level = "debug".into();
        b.replication.ack = redshard_config::AckMode::Async;
        b.busy_poll = std::time::Duration::from_micros(200);
        assert_eq!(
            restart_keys(&a, &b),
            [
                "listen",
                "metrics_listen",
                "backend",
                "busy_poll_us",
                "replication"
            ]
        );
    }

    #[test]
    fn report_text() {
        let report = ReloadReport {
            applied: vec!["limits.max_clients".into()],
            needs_restart: vec!["listen".into(), "shard".into()],
        };
        assert_eq!(
            report.to_string(),
            "reloaded\napplied: limits.max_clients\nneeds a restart: listen, shard\n"
        );
        assert_eq!(
            ReloadReport::default().to_string(),
            "reloaded\napplied: nothing changed\n"
        );
    }
}
