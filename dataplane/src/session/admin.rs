//! The operators' commands the proxy answers as one Redis server would: CONFIG SET /
//! RESETSTAT / REWRITE and LATENCY RESET (applied to every node by the controller), SAVE,
//! BGSAVE and BGREWRITEAOF (to every master), REPLICAOF NO ONE, MONITOR, and the tracking
//! queries of a client without tracking. (The ACL commands are in `acl.rs`.)

use std::sync::Arc;

use bytes::Bytes;

use super::dispatch::Action;
use super::Ctx;
use crate::events::{ControlEvent, Nodes};
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{CommandId, CommandSpec, Flags};
use redshard_protocol::resp::{encode, Args};

/// Why the controller keeps replication settings.
const REPLICATION: &str = "redshard's controller manages replication (REPLICAOF, masterauth, masteruser); use redshard-admin to change the topology";
/// Why addresses and files stay.
const NODE_LOCAL: &str =
    "each node's addresses, files and directories are set on the node itself, not through redshard";
/// Why the settings the proxy answers for stay.
const PROXY_OWN: &str = "the proxy answers for this setting itself (CONFIG GET shows its value); set it in the proxy's configuration";
/// Why cluster mode stays off.
const STANDALONE: &str = "redshard's nodes run standalone (cluster-enabled no)";
/// Why eviction stays off.
const NOEVICTION: &str = "redshard needs maxmemory-policy noeviction on every node (an evicted key would differ between a master and its replicas)";

/// The parameters CONFIG SET may not change through the proxy, and why (besides every
/// `cluster-*` one and `maxmemory-policy` other than `noeviction`).
const MANAGED: &[(&str, &str)] = &[
    ("replicaof", REPLICATION),
    ("slaveof", REPLICATION),
    ("masterauth", REPLICATION),
    ("masteruser", REPLICATION),
    ("port", NODE_LOCAL),
    ("tls-port", NODE_LOCAL),
    ("bind", NODE_LOCAL),
    ("bind-source-addr", NODE_LOCAL),
    ("unixsocket", NODE_LOCAL),
    ("unixsocketperm", NODE_LOCAL),
    ("dir", NODE_LOCAL),
    ("dbfilename", NODE_LOCAL),
    ("appendfilename", NODE_LOCAL),
    ("appenddirname", NODE_LOCAL),
    ("logfile", NODE_LOCAL),
    ("pidfile", NODE_LOCAL),
    ("aclfile", NODE_LOCAL),
    ("databases", PROXY_OWN),
    ("maxclients", PROXY_OWN),
    ("proto-max-bulk-len", PROXY_OWN),
    ("client-query-buffer-limit", PROXY_OWN),
    ("save", PROXY_OWN),
    ("appendonly", PROXY_OWN),
];

/// Why CONFIG SET may not set `param` to `value` through the proxy, if it may not.
fn managed(param: &[u8], value: &[u8]) -> Option<&'static str> {
    let lower = param.to_ascii_lowercase();
    if lower.starts_with(b"cluster-") {
        return Some(STANDALONE);
    }
    if lower == b"maxmemory-policy" && !value.eq_ignore_ascii_case(b"noeviction") {
        return Some(NOEVICTION);
    }
    MANAGED
        .iter()
        .find(|(name, _)| name.as_bytes() == lower.as_slice())
        .map(|(_, why)| *why)
}

/// CONFIG SET / RESETSTAT / REWRITE, LATENCY RESET: checked here (CONFIG SET's pairs, the
/// parameters the proxy manages), then sent by the controller to every node; the client gets
/// `+OK` (LATENCY RESET: the events reset, summed) when every node accepted, else
/// [`ClientError::NodesRefused`].
pub(super) fn every_node(ctx: &mut Ctx, spec: &'static CommandSpec, args: Args<'_>) -> Action {
    if spec.id == CommandId::ConfigSet {
        // Redis: an odd count of parameter/value arguments is a syntax error.
        if args.len() % 2 != 0 {
            return Action::error(ctx, ClientError::SyntaxError);
        }
        for at in (2..args.len()).step_by(2) {
            if let Some(why) = managed(args.get(at), args.get(at + 1)) {
                return Action::error(
                    ctx,
                    ClientError::ConfigManaged {
                        param: args.get(at).into(),
                        why,
                    },
                );
            }
        }
    }
    let mut request: Vec<Bytes> = args.iter().map(Bytes::copy_from_slice).collect();
    if spec.id == CommandId::ConfigSet {
        // `timeout` is the proxy's alone (its clients' idle timeout): the nodes keep theirs
        // at 0, or they would close the proxy's idle connections.
        let mut timeout = None;
        for at in (2..args.len()).step_by(2) {
            if args.get(at).eq_ignore_ascii_case(b"timeout") {
                match client_timeout(args.get(at + 1)) {
                    Ok(secs) => timeout = Some(secs),
                    Err(why) => {
                        return Action::error(
                            ctx,
                            ClientError::ConfigManaged {
                                param: args.get(at).into(),
                                why,
                            },
                        )
                    }
                }
            }
        }
        if let Some(secs) = timeout {
            set_client_timeout(ctx, secs);
        }
        // `requirepass` is the default user's password at the proxy (as in Redis); the
        // nodes keep theirs, which the proxy authenticates with.
        let mut requirepass = false;
        for at in (2..args.len()).step_by(2) {
            if args.get(at).eq_ignore_ascii_case(b"requirepass") {
                ctx.state.users.set_default_password(args.get(at + 1));
                requirepass = true;
            }
        }
        let mut kept = request[..2].to_vec();
        for pair in request[2..].chunks(2) {
            if !pair[0].eq_ignore_ascii_case(b"timeout")
                && !pair[0].eq_ignore_ascii_case(b"requirepass")
            {
                kept.extend_from_slice(pair);
            }
        }
        request = kept;
        if request.len() == 2 {
            if requirepass {
                return super::acl::save_requirepass(ctx);
            }
            return Action::reply(ctx, Bytes::from_static(encode::OK));
        }
        if requirepass {
            super::acl::save_in_background(ctx);
        }
        slowlog_settings(ctx, args);
    }
    if spec.id == CommandId::ConfigResetstat {
        // The proxy's own counters in INFO, as the nodes reset theirs.
        ctx.state.clients.reset_stats();
    }
    super::local::ask_controller(ctx, spec, |done| ControlEvent::EveryNode {
        request,
        nodes: Nodes::All,
        done,
    })
}

/// SAVE, BGSAVE [SCHEDULE] and BGREWRITEAOF: checked here as Redis checks them, then sent by
/// the controller to every master; the client gets one server's answer (`+Background saving
/// started`; SAVE: `+OK` once every master saved) when every master gave it, else
/// [`ClientError::NodesRefused`] with the masters' errors (`Background save already in
/// progress` ...).
pub(super) fn every_master(ctx: &mut Ctx, spec: &'static CommandSpec, args: Args<'_>) -> Action {
    // BGSAVE takes SCHEDULE alone; BGREWRITEAOF's arity (1) is the table's.
    if spec.id == CommandId::Bgsave
        && args.len() > 1
        && (args.len() > 2 || !args.get(1).eq_ignore_ascii_case(b"schedule"))
    {
        return Action::error(ctx, ClientError::SyntaxError);
    }
    let request: Vec<Bytes> = args.iter().map(Bytes::copy_from_slice).collect();
    super::local::ask_controller(ctx, spec, |done| ControlEvent::EveryNode {
        request,
        nodes: Nodes::Masters,
        done,
    })
}

/// `REPLICAOF NO ONE` (and SLAVEOF): `+OK`, as a master answers it (the proxy is one, and
/// nothing changes); `REPLICAOF host port` is refused, as the controller manages the nodes'
/// replication.
pub(super) fn replicaof(ctx: &Ctx, spec: &'static CommandSpec, args: Args<'_>) -> Action {
    // The table's arity (3) holds the two arguments.
    if args.get(1).eq_ignore_ascii_case(b"no") && args.get(2).eq_ignore_ascii_case(b"one") {
        return Action::reply(ctx, Bytes::from_static(encode::OK));
    }
    Action::error(ctx, ClientError::ReplicaofRefused { command: spec.name })
}

/// `CONFIG SET timeout <value>`'s seconds, or why Redis refuses the value.
fn client_timeout(value: &[u8]) -> Result<u64, &'static str> {
    let n = redshard_protocol::resp::parse_i64(value)
        .ok_or("argument couldn't be parsed into an integer")?;
    u64::try_from(n)
        .ok()
        .filter(|&n| n <= u64::from(i32::MAX.unsigned_abs()))
        .ok_or("argument must be between 0 and 2147483647 inclusive")
}

/// Sets the clients' idle timeout (`[limits] client_timeout_s`) until the next reload
/// re-reads the file, as CONFIG SET of a SLOWLOG setting does.
fn set_client_timeout(ctx: &Ctx, secs: u64) {
    change_live(ctx, |next| {
        next.limits.client_timeout = std::time::Duration::from_secs(secs);
    });
}

/// Changes the live settings as `change` says, until the next reload re-reads the file:
/// the settings CONFIG SET changes at the proxy itself.
fn change_live(ctx: &Ctx, change: impl FnOnce(&mut redshard_config::Config)) {
    // Not while a reload compares and replaces the settings.
    let _reload = ctx
        .state
        .reload
        .lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut next = (*ctx.state.live.snapshot()).clone();
    change(&mut next);
    ctx.state.live.replace(Arc::new(next));
}

/// CONFIG SET of `slowlog-log-slower-than` / `slowlog-max-len`: SLOWLOG is the proxy's
/// own, so they set its `[slowlog]` (until the next reload re-reads the file), as well as the
/// nodes'. A value the nodes would refuse (not an integer, out of Redis's range) changes
/// nothing here; their answer says why.
fn slowlog_settings(ctx: &Ctx, args: Args<'_>) {
    let mut slowlog = ctx.state.live.now().slowlog;
    let mut changed = false;
    for at in (2..args.len()).step_by(2) {
        let (name, value) = (args.get(at), args.get(at + 1));
        let value = redshard_protocol::resp::parse_i64(value);
        if name.eq_ignore_ascii_case(b"slowlog-log-slower-than") {
            if let Some(us) = value.filter(|us| *us >= -1) {
                slowlog.log_slower_than_us = us;
                changed = true;
            }
        } else if name.eq_ignore_ascii_case(b"slowlog-max-len") {
            if let Some(len) = value.and_then(|n| usize::try_from(n).ok()) {
                slowlog.max_len = len;
                changed = true;
            }
        }
    }
    if changed {
        change_live(ctx, |next| next.slowlog = slowlog);
    }
    // The ACL log is the proxy's too.
    for at in (2..args.len()).step_by(2) {
        if args.get(at).eq_ignore_ascii_case(b"acllog-max-len") {
            let len = redshard_protocol::resp::parse_i64(args.get(at + 1))
                .and_then(|n| usize::try_from(n).ok());
            if let Some(len) = len {
                change_live(ctx, |next| next.limits.acllog_max_len = len);
            }
        }
    }
}

/// MONITOR: `+OK`, then every client's commands and the commands scripts run on the masters
/// (see [`crate::monitor`]). A second MONITOR on the same connection is not answered, as in
/// Redis.
pub(super) fn monitor(ctx: &mut Ctx) -> Action {
    if ctx.monitoring {
        // No reply, so no entry to label.
        ctx.current_cmd = None;
        return Action::Done;
    }
    // Answered once the masters' MONITOR connections have started (see `crate::monitor`).
    let ok = ctx.queue.reserve();
    ctx.monitoring = true;
    ctx.client.fields().monitor = true;
    ctx.state
        .monitors
        .add(&ctx.state, ctx.client.id, Arc::clone(&ctx.queue), ok);
    Action::Done
}

/// Whether a monitoring client may run `spec`: Redis treats it as a replica, which may not
/// touch the keyspace.
pub(super) fn monitor_refuses(spec: &CommandSpec) -> bool {
    spec.flags.intersects(
        Flags::READONLY
            .union(Flags::WRITE)
            .union(Flags::MAY_REPLICATE),
    )
}

/// Ends MONITOR mode (RESET, or the client leaves).
pub(super) fn stop_monitoring(ctx: &mut Ctx) {
    if std::mem::take(&mut ctx.monitoring) {
        ctx.state.monitors.remove(ctx.client.id);
        ctx.client.fields().monitor = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_proxy_manages_is_refused() {
        assert!(managed(b"REPLICAOF", b"h 1").is_some());
        assert!(managed(b"slaveof", b"no one").is_some());
        assert!(managed(b"cluster-enabled", b"yes").is_some());
        assert!(managed(b"maxmemory-policy", b"allkeys-lru").is_some());
        assert!(managed(b"maxmemory-policy", b"NOEVICTION").is_none());
        assert!(managed(b"maxmemory", b"100mb").is_none());
        assert!(managed(b"notify-keyspace-events", b"KEA").is_none());
    }
}
