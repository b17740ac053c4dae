//! INFO: the proxy's own sections in Redis's format, plus the keyspace summed over the masters.
//!
//! Clients and tools parse INFO as `key:value` lines under `# Section` headers, so the proxy
//! keeps Redis's section and field names (`redis_version`, `connected_clients`,
//! `role:master`, `db0:keys=...`) and adds sections of its own: `# Mirror`, `# Failover` and
//! `# Migration` (by name or with `INFO all`), and `# Redshard` (in the default set). Its own
//! multi-field lines use Redis's `name:field=value,...` form (like `slave0:` or `db0:`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use redshard_config::{ReplicaState, SlotRange};

use super::dispatch::{fan_out, Action};
use super::merge::MergePlan;
use super::Ctx;
use crate::allocator;
use crate::health::NodeStatus;
use crate::migration::MigrationState;
use crate::router::{RoutingTable, ShardRoute};
use crate::state::ProxyState;
use redshard_metrics::names::mirror_state;
use redshard_protocol::command::REDIS_VERSION;
use redshard_protocol::resp::{encode, reply, Args, Protocol};

/// The proxy's own sections in the order they are written (Redis's order, the proxy's
/// sections after replication), each with whether plain `INFO` / `INFO default` shows it.
/// Like Redis's, the default set stays small: the mirror, failover and migration details are
/// asked by name or with `INFO all` / `INFO everything`.
const SECTIONS: [(&str, bool); 10] = [
    ("server", true),
    ("clients", true),
    ("memory", true),
    ("stats", true),
    ("replication", true),
    ("mirror", false),
    ("failover", false),
    ("migration", false),
    ("cluster", true),
    ("redshard", true),
];

/// Builds the reply to `INFO [section ...]`; fans out to the masters when the keyspace is asked.
pub(super) fn info(ctx: &Ctx, table: &RoutingTable, args: Args<'_>) -> Action {
    let sections: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let (text, keyspace) = proxy_text(ctx, table, &sections);
    if keyspace {
        fan_out(
            ctx,
            table,
            MergePlan::Info {
                text,
                protocol: ctx.protocol,
            },
            &Bytes::from_static(KEYSPACE_REQUEST),
            false,
        );
        return Action::Done;
    }
    Action::reply(ctx, encode::text(ctx.protocol, text.as_bytes()))
}

/// What each master is asked for INFO's `# Keyspace`.
pub(super) const KEYSPACE_REQUEST: &[u8] = b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n";

/// The sections of `INFO <sections>` (lower case; none: the default set) that the proxy
/// writes, and whether the keyspace (summed over the masters, see [`with_keyspace`]) follows.
pub(super) fn proxy_text(ctx: &Ctx, table: &RoutingTable, sections: &[String]) -> (String, bool) {
    let default_set = ["default".to_owned()];
    let wanted = if sections.is_empty() {
        &default_set[..]
    } else {
        sections
    };
    let all = wanted
        .iter()
        .any(|w| matches!(w.as_str(), "all" | "everything"));
    let default = all || wanted.iter().any(|w| w == "default");
    let wants = |section: &str, in_default: bool| {
        (in_default && default) || all || wanted.iter().any(|w| w == section)
    };

    let mut text = String::with_capacity(1024);
    for (section, in_default) in SECTIONS {
        if wants(section, in_default) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            write_section(ctx, table, section, &mut text);
        }
    }
    let keyspace = wants("keyspace", true);
    if keyspace && !text.is_empty() {
        text.push_str("\r\n");
    }
    (text, keyspace)
}

fn write_section(ctx: &Ctx, table: &RoutingTable, section: &str, text: &mut String) {
    let state = &ctx.state;
    let uptime = state.started.elapsed().as_secs();
    // Writing to a String cannot fail.
    let _ = match section {
        "server" => write!(
            text,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredshard_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            state.port,
            uptime / 86_400,
        ),
        "clients" => write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nclient_recent_max_output_buffer:{}\r\nblocked_clients:{}\r\nparked_clients:{}\r\n",
            state.clients.connected(),
            state.live.now().limits.max_clients,
            state.clients.max_output_bytes(),
            state.clients.blocked_now(),
            state.clients.parked.load(Ordering::Relaxed),
        ),
        "memory" => {
            write_memory(text);
            Ok(())
        }
        "stats" => {
            let [connections, commands, rejected] = state.clients.stats();
            write!(
                text,
                "# Stats\r\ntotal_connections_received:{connections}\r\ntotal_commands_processed:{commands}\r\nrejected_connections:{rejected}\r\n",
            )
        }
        "replication" => {
            write_replication(state, table, text);
            Ok(())
        }
        "mirror" => {
            write_mirror(state, table, text);
            Ok(())
        }
        "failover" => {
            write_failover(state, table, text);
            Ok(())
        }
        "migration" => {
            write_migration(state, text);
            Ok(())
        }
        // One server to its clients: not a cluster (tools such as redis-py's test suite read
        // `cluster_enabled` at start).
        "cluster" => {
            text.push_str("# Cluster\r\ncluster_enabled:0\r\n");
            Ok(())
        }
        "redshard" => {
            let _ = write!(
                text,
                "# Redshard\r\ntopology_epoch:{}\r\nshards:{}\r\n",
                table.epoch(),
                table.shards().len()
            );
            for (i, shard) in table.shards().iter().enumerate() {
                let _ = write!(
                    text,
                    "route{i}:name={},master={},lanes={}\r\n",
                    shard.name,
                    shard.master.addr(),
                    shard.master.lane_count()
                );
            }
            if let Some(fleet) = state.fleet.info() {
                let _ = write!(
                    text,
                    "fleet_proxy_id:{}\r\nfleet_role:{}\r\nfleet_leader:{}\r\nfleet_members:{}\r\n",
                    fleet.id,
                    fleet.role,
                    fleet.leader.as_deref().unwrap_or(""),
                    fleet.members
                );
            }
            let rules = table.topology().rules.rules();
            let _ = write!(text, "routing_rules:{}\r\n", rules.len());
            for (i, rule) in rules.iter().enumerate() {
                let _ = write!(text, "rule{i}:{rule}\r\n");
            }
            Ok(())
        }
        _ => Ok(()),
    };
}

/// `# Memory`: the proxy process's resident size and its allocator, under Redis's names, and
/// when jemalloc is the allocator how it returns freed memory (see [`crate::allocator`]).
fn write_memory(text: &mut String) {
    text.push_str("# Memory\r\n");
    let usage = allocator::usage();
    // Redis's used_memory is what its allocator handed out; without jemalloc's statistics
    // the resident size is the nearest the proxy knows.
    let used = usage
        .map(|u| u.allocated as u64)
        .or_else(allocator::resident_bytes);
    if let Some(used) = used {
        let _ = write!(
            text,
            "used_memory:{used}\r\nused_memory_human:{}\r\n",
            human_bytes(used)
        );
    }
    if let Some(rss) = allocator::resident_bytes() {
        let _ = write!(
            text,
            "used_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\n",
            human_bytes(rss)
        );
    }
    let _ = write!(text, "mem_allocator:{}\r\n", allocator::name());
    if let Some(usage) = usage {
        let _ = write!(
            text,
            "allocator_allocated:{}\r\nallocator_active:{}\r\nallocator_resident:{}\r\n\
             allocator_frag_ratio:{:.2}\r\nallocator_frag_bytes:{}\r\n",
            usage.allocated,
            usage.active,
            usage.resident,
            usage.active as f64 / usage.allocated.max(1) as f64,
            usage.active.saturating_sub(usage.allocated),
        );
    }
    if let Some(decay) = allocator::dirty_decay_ms() {
        let _ = write!(
            text,
            "allocator_dirty_decay_ms:{decay}\r\nallocator_background_purge:{}\r\n",
            if allocator::background_purge() {
                "yes"
            } else {
                "no"
            }
        );
    }
}

/// `n` bytes the way Redis's INFO writes its `_human` fields: `512B`, `1.50K`, `9.31M`, ...
fn human_bytes(n: u64) -> String {
    const UNITS: [char; 5] = ['K', 'M', 'G', 'T', 'P'];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

/// `# Replication`: the proxy is a master no node replicates from (`connected_slaves:0`, so
/// tools that follow `slaveN` lines find none); the shards' replicas are counted per shard by
/// state, with `write_acks`: how many replicas a write's acknowledgement waits for (0 without
/// `sync` acknowledgement under Redis replication; else the in-sync replicas and every other
/// replica streaming from the master, which Redis's `WAIT` counts too). With Redis replication each replica also gets a `shard_replicaN` line: whether it
/// follows its master with its link up, its replication offset and how many bytes of the
/// master's stream it lacks, as the controller's last check saw them.
fn write_replication(state: &ProxyState, table: &RoutingTable, text: &mut String) {
    let shards = &table.topology().shards;
    let _ = write!(
        text,
        "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nshard_replicas:{}\r\n",
        shards.iter().map(|s| s.replicas.len()).sum::<usize>()
    );
    for (i, shard) in shards.iter().enumerate() {
        let count = |state| shard.replicas.iter().filter(|r| r.state == state).count();
        let _ = write!(
            text,
            "shard{i}:name={},master={},replicas={},in_sync={},syncing={},stale={},write_acks={}\r\n",
            shard.name,
            shard.master,
            shard.replicas.len(),
            count(ReplicaState::InSync),
            count(ReplicaState::Syncing),
            count(ReplicaState::Stale),
            table.route(shard.id).map_or(0, ShardRoute::wait_for),
        );
    }
    if state.config.replication.mode != redshard_config::ReplicationMode::Redis {
        return;
    }
    let replicas = shards
        .iter()
        .flat_map(|shard| shard.replicas.iter().map(move |r| (shard, r)));
    for (i, (shard, replica)) in replicas.enumerate() {
        let link = state.ha.link(&replica.addr);
        let _ = write!(
            text,
            "shard_replica{i}:shard={},addr={},state={},link={},offset={},lag={}\r\n",
            shard.name,
            replica.addr,
            replica.state,
            match &link {
                Some(l) if l.attached => "up",
                Some(_) => "down",
                None => "unknown",
            },
            link.as_ref().map_or(0, |l| l.offset),
            link.as_ref().map_or(0, |l| l.lag),
        );
    }
}

/// `# Mirror`: the mode, and each replica's state (the words of the `mirror_state` metric),
/// writes in flight to it and writes it applied since its mirror stream started.
fn write_mirror(state: &ProxyState, table: &RoutingTable, text: &mut String) {
    let mirror = state.router.mirror();
    let settings = mirror.settings();
    let ha = state.ha.snapshot();
    let _ = write!(
        text,
        "# Mirror\r\nmirror_mode:{}\r\nreplication_mode:{}\r\nmirror_max_lag_writes:{}\r\nresyncs_completed:{}\r\nreplicas_marked_stale:{}\r\n",
        state.config.replication.ack, state.config.replication.mode, settings.max_lag_writes, ha.resyncs_completed, ha.replicas_marked_stale,
    );
    let replicas = table
        .topology()
        .shards
        .iter()
        .flat_map(|shard| shard.replicas.iter().map(move |r| (shard, r)));
    for (i, (shard, replica)) in replicas.enumerate() {
        let link = mirror.link(&replica.addr);
        let _ = write!(
            text,
            "replica{i}:shard={},addr={},state={},lag={},applied={}\r\n",
            shard.name,
            replica.addr,
            mirror_state::of(replica.state),
            link.as_ref().map_or(0, |l| l.backlog()),
            link.as_ref().map_or(0, |l| l.applied()),
        );
    }
}

/// `# Failover`: counts, the last failover's line, and per shard its master's health (as
/// the probes last reported it) and whether its gate lets requests through.
fn write_failover(state: &ProxyState, table: &RoutingTable, text: &mut String) {
    let ha = state.ha.snapshot();
    let _ = write!(
        text,
        "# Failover\r\nauto_failover:{}\r\nfailovers:{}\r\nlast_failover:{}\r\n",
        if state.config.health.auto_failover {
            "yes"
        } else {
            "no"
        },
        ha.failovers_total(),
        ha.last_failover.as_deref().unwrap_or(""),
    );
    for (i, shard) in table.topology().shards.iter().enumerate() {
        let health = match state.health.status(&shard.master) {
            NodeStatus::Up => "up",
            NodeStatus::Down(_) => "down",
            NodeStatus::Unknown => "unknown",
        };
        let _ = write!(
            text,
            "health{i}:name={},master={},master_health={health},gate={},failovers={}\r\n",
            shard.name,
            shard.master,
            state.router.gate(shard.id).state().label(),
            ha.failovers.get(&shard.name).copied().unwrap_or(0),
        );
    }
}

/// `# Migration`: each queued, running and recently finished migration, oldest first, then
/// the keys and bytes moved per (source, target) pair since start.
fn write_migration(state: &ProxyState, text: &mut String) {
    let progress = state.migrations.progress();
    let count = |wanted: &MigrationState| progress.iter().filter(|p| &p.state == wanted).count();
    let _ = write!(
        text,
        "# Migration\r\nmigrations_running:{}\r\nmigrations_queued:{}\r\n",
        count(&MigrationState::Running),
        count(&MigrationState::Queued),
    );
    for (i, p) in progress.iter().enumerate() {
        let ranges: Vec<String> = p.slots.iter().map(ToString::to_string).collect();
        let (state, eta) = match &p.state {
            MigrationState::Queued => ("queued", -1.0),
            MigrationState::Running => ("running", p.eta_secs.unwrap_or(-1.0)),
            MigrationState::Done => ("done", 0.0),
            MigrationState::Failed(_) => ("failed", -1.0),
            MigrationState::Cancelled => ("cancelled", -1.0),
        };
        let _ = write!(
            text,
            "migration{i}:from={},to={},slots={},ranges={},state={state},keys_moved={},bytes_moved={},keys_estimate={},rate_keys_per_sec={:.1},eta_seconds={eta:.1}\r\n",
            p.from,
            p.to,
            p.slots.iter().map(SlotRange::len).sum::<usize>(),
            ranges.join(" "),
            p.keys_moved,
            p.bytes_moved,
            p.keys_estimate,
            p.rate_keys_per_sec,
        );
    }
    for (i, t) in state.migrations.moved_totals().iter().enumerate() {
        let _ = write!(
            text,
            "moved{i}:from={},to={},keys={},bytes={}\r\n",
            t.from, t.to, t.keys, t.bytes
        );
    }
}

/// Appends `# Keyspace` with every database's counts summed over the masters' INFO replies.
/// Masters that failed to answer are counted in `keyspace_unavailable_shards`.
pub(super) fn with_keyspace(mut text: String, parts: &[Bytes], protocol: Protocol) -> Bytes {
    // (db, keys, expires, avg_ttl weighted by expires)
    let mut dbs: Vec<(String, u64, u64, u128)> = Vec::new();
    let mut unavailable = 0;
    for part in parts {
        if reply::is_error(part) {
            unavailable += 1;
            continue;
        }
        let body = String::from_utf8_lossy(part);
        for line in body.lines() {
            let Some((db, fields)) = line.split_once(':') else {
                continue;
            };
            if !db.starts_with("db") {
                continue;
            }
            let mut keys = 0;
            let mut expires = 0;
            let mut avg_ttl = 0;
            for field in fields.trim_end().split(',') {
                let (name, value) = field.split_once('=').unwrap_or((field, "0"));
                let value: u64 = value.parse().unwrap_or(0);
                match name {
                    "keys" => keys = value,
                    "expires" => expires = value,
                    "avg_ttl" => avg_ttl = value,
                    _ => {}
                }
            }
            match dbs.iter_mut().find(|d| d.0 == db) {
                Some(d) => {
                    d.1 += keys;
                    d.2 += expires;
                    d.3 += u128::from(avg_ttl) * u128::from(expires);
                }
                None => dbs.push((
                    db.to_owned(),
                    keys,
                    expires,
                    u128::from(avg_ttl) * u128::from(expires),
                )),
            }
        }
    }
    text.push_str("# Keyspace\r\n");
    for (db, keys, expires, ttl_sum) in dbs {
        let avg = if expires == 0 {
            0
        } else {
            ttl_sum / u128::from(expires)
        };
        let _ = write!(text, "{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n");
    }
    if unavailable > 0 {
        let _ = write!(text, "keyspace_unavailable_shards:{unavailable}\r\n");
    }
    encode::text(protocol, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_like_redis_writes_them() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(9_765_888), "9.31M");
        assert_eq!(human_bytes(3 << 30), "3.00G");
    }

    #[test]
    fn keyspace_is_summed() {
        let parts = [
            Bytes::from_static(b"$45\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=100\r\n\r\n"),
            Bytes::from_static(b"$45\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=300\r\n\r\n"),
            Bytes::from_static(b"-ERR backend down\r\n"),
        ];
        let out = with_keyspace(String::new(), &parts, Protocol::Resp2);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("db0:keys=5,expires=2,avg_ttl=200\r\n"),
            "{text}"
        );
        assert!(text.contains("keyspace_unavailable_shards:1"), "{text}");
    }
}
