//! INFO: the proxy's own sections in Redis's format, plus the keyspace summed over the masters.
//!
//! Clients and tools parse INFO as `key:value` lines under `# Section` headers, so the proxy
//! keeps Redis's section and field names (`redis_version`, `connected_clients`,
//! `role:master`, `db0:keys=...`) and adds sections of its own: `# Mirror`, `# Failover` and
//! `# Migration` (by name or with `INFO all`), and `# Redshard` (in the default set). Its own
//! multi-field lines use Redis's `name:field=value,...` form (like `slave0:` or `db0:`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use redshard_config::{ReplicaState, SlotRange};

use super::dispatch::{fan_out, Action};
use super::merge::MergePlan;
use super::Ctx;
use crate::allocator;
use crate::health::NodeStatus;
use crate::migration::MigrationState;
use crate::replies::NodeSections;
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

/// Builds the reply to `INFO [section ...]`; fans out to the masters when one of their
/// sections (the keyspace, persistence, CPU, command and error statistics) is asked.
pub(super) fn info(ctx: &Ctx, table: &RoutingTable, args: Args<'_>) -> Action {
    let sections: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let (text, nodes) = proxy_text(ctx, table, &sections);
    if !nodes.is_empty() {
        fan_out(
            ctx,
            table,
            MergePlan::Info {
                text,
                nodes,
                protocol: ctx.protocol,
            },
            &node_request(nodes),
            false,
        );
        return Action::Done;
    }
    Action::reply(ctx, encode::text(ctx.protocol, text.as_bytes()))
}

/// The sections of `INFO <sections>` (lower case; none: the default set) that the proxy
/// writes, and the masters' sections (merged by [`with_nodes`]) that follow them.
pub(super) fn proxy_text(
    ctx: &Ctx,
    table: &RoutingTable,
    sections: &[String],
) -> (String, NodeSections) {
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
    let mut nodes = NodeSections::default();
    for (section, name) in NodeSections::ALL {
        // Like Redis's, the default set leaves out the per-command statistics.
        if wants(name, section != NodeSections::COMMANDSTATS) {
            nodes = nodes.with(section);
        }
    }
    (text, nodes)
}

/// What each master is asked for the sections `nodes`: `INFO <section> ...`.
pub(super) fn node_request(nodes: NodeSections) -> Bytes {
    let mut args: Vec<&[u8]> = vec![b"INFO"];
    for (section, name) in NodeSections::ALL {
        if nodes.has(section) {
            args.push(name.as_bytes());
        }
    }
    let mut out = BytesMut::new();
    encode::request(&mut out, &args);
    out.freeze()
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
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nclient_recent_max_output_buffer:{}\r\nblocked_clients:{}\r\ntracking_clients:{}\r\nparked_clients:{}\r\n",
            state.clients.connected(),
            state.live.now().limits.max_clients,
            state.clients.max_output_bytes(),
            state.clients.blocked_now(),
            state.tracking.stats().clients,
            state.clients.parked.load(Ordering::Relaxed),
        ),
        "memory" => {
            write_memory(text);
            Ok(())
        }
        "stats" => {
            let [connections, commands, rejected] = state.clients.stats();
            let tracking = state.tracking.stats();
            write!(
                text,
                "# Stats\r\ntotal_connections_received:{connections}\r\ntotal_commands_processed:{commands}\r\nrejected_connections:{rejected}\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\n",
                tracking.keys,
                tracking.items,
                tracking.prefixes,
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
/// replica streaming from the master, which Redis's `WAIT` counts too), and
/// `write_acks_refused`: the writes its master's lanes answered `-NOREPLICAS` because that
/// acknowledgement could not be verified (counted per master node, since the proxy started).
/// With Redis replication each replica also gets a `shard_replicaN` line: whether it
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
            "shard{i}:name={},master={},replicas={},in_sync={},syncing={},stale={},write_acks={},write_acks_refused={}\r\n",
            shard.name,
            shard.master,
            shard.replicas.len(),
            count(ReplicaState::InSync),
            count(ReplicaState::Syncing),
            count(ReplicaState::Stale),
            table.route(shard.id).map_or(0, ShardRoute::wait_for),
            table.route(shard.id).map_or(0, |r| r.master.acks_refused()),
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

/// Appends the masters' sections `nodes` to the proxy's `text`, each merged over the masters'
/// INFO replies `parts` as one server would show it: `# Persistence` (counts summed, flags and
/// durations the largest, the oldest save time, a status `ok` only when every master's is),
/// `# CPU` (summed), `# Commandstats` and `# Errorstats` (summed per command and per error,
/// the proxy's own health checks and control commands on the nodes included), `# Keyspace`
/// (every database's counts summed). Masters that failed to answer are counted in
/// `keyspace_unavailable_shards`.
pub(super) fn with_nodes(
    text: String,
    nodes: NodeSections,
    parts: &[Bytes],
    protocol: Protocol,
) -> Bytes {
    let mut masters: Vec<Vec<Section>> = Vec::new();
    let mut unavailable = 0;
    for part in parts {
        if reply::is_error(part) {
            unavailable += 1;
        } else {
            // Byte for byte (Latin-1), not as UTF-8: an error code or a command name may be
            // any bytes (`errorstat_\xff\xfeBAD`), and must come out as the node wrote it.
            masters.push(node_sections(
                &part.iter().map(|&b| char::from(b)).collect::<String>(),
            ));
        }
    }
    let mut text = text.into_bytes();
    let fields_of = |name: &str| -> Vec<&[(String, String)]> {
        masters
            .iter()
            .filter_map(|m| m.iter().find(|(s, _)| s == name).map(|(_, f)| f.as_slice()))
            .collect()
    };
    let mut section = |title: &str, body: String| {
        if !text.is_empty() {
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(title.as_bytes());
        text.extend_from_slice(b"\r\n");
        // Every char of `body` is a byte of a node's reply (see above) or ASCII.
        text.extend(
            body.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')),
        );
    };
    if nodes.has(NodeSections::PERSISTENCE) {
        section(
            "# Persistence",
            merge_fields(&fields_of("persistence"), persistence_rule),
        );
    }
    if nodes.has(NodeSections::CPU) {
        section("# CPU", merge_fields(&fields_of("cpu"), |_| Rule::SumFloat));
    }
    if nodes.has(NodeSections::COMMANDSTATS) {
        section(
            "# Commandstats",
            merge_commandstats(&fields_of("commandstats")),
        );
    }
    if nodes.has(NodeSections::ERRORSTATS) {
        section(
            "# Errorstats",
            merge_counted(&fields_of("errorstats"), &["count"]),
        );
    }
    if nodes.has(NodeSections::KEYSPACE) {
        let mut body = keyspace(&fields_of("keyspace"));
        if unavailable > 0 {
            let _ = write!(body, "keyspace_unavailable_shards:{unavailable}\r\n");
        }
        section("# Keyspace", body);
    }
    encode::text(protocol, &text)
}

/// One section of a node's INFO: its title (lower case) and its `key:value` lines in order.
type Section = (String, Vec<(String, String)>);

/// An INFO reply's sections.
fn node_sections(body: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for line in body.lines() {
        // A RESP3 verbatim string's text starts after its `txt:` format.
        let line = line.trim_end();
        let line = line.strip_prefix("txt:").unwrap_or(line);
        if let Some(title) = line.strip_prefix("# ") {
            sections.push((title.to_ascii_lowercase(), Vec::new()));
        } else if let Some((key, value)) = line.split_once(':') {
            if let Some((_, fields)) = sections.last_mut() {
                fields.push((key.to_owned(), value.to_owned()));
            }
        }
    }
    sections
}

/// How one field is merged over the masters.
#[derive(Clone, Copy)]
enum Rule {
    /// Integers added up (counts).
    Sum,
    /// Numbers added up, written with six decimals as Redis writes CPU seconds.
    SumFloat,
    /// The largest (flags, durations, sizes of one operation).
    Max,
    /// The smallest (the oldest time).
    Min,
    /// `ok` unless a master says otherwise, then what it says.
    Status,
}

/// The rule of a `# Persistence` field.
fn persistence_rule(key: &str) -> Rule {
    if key.ends_with("_status") {
        Rule::Status
    } else if key == "rdb_last_save_time" {
        Rule::Min
    } else if key.contains("changes")
        || key.ends_with("_saves")
        || key.ends_with("rewrites")
        || key.contains("keys_")
        || key.ends_with("cow_size")
    {
        Rule::Sum
    } else {
        Rule::Max
    }
}

/// The fields of the first master, in its order, each merged over `masters` by `rule`; a
/// field whose values are not numbers keeps the first master's value.
fn merge_fields(masters: &[&[(String, String)]], rule: fn(&str) -> Rule) -> String {
    let mut out = String::new();
    let Some(first) = masters.first() else {
        return out;
    };
    for (key, value) in first.iter() {
        let values: Vec<&str> = masters
            .iter()
            .filter_map(|m| m.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()))
            .collect();
        let ints: Option<Vec<i64>> = values.iter().map(|v| v.parse().ok()).collect();
        let floats: Option<Vec<f64>> = values.iter().map(|v| v.parse().ok()).collect();
        let merged = match (rule(key), ints, floats) {
            (Rule::Status, _, _) => values
                .iter()
                .find(|v| **v != "ok")
                .map_or_else(|| "ok".to_owned(), |v| (*v).to_owned()),
            (Rule::Sum, Some(ints), _) => ints.iter().sum::<i64>().to_string(),
            (Rule::Max, Some(ints), _) => ints.iter().max().copied().unwrap_or(0).to_string(),
            (Rule::Min, Some(ints), _) => ints.iter().min().copied().unwrap_or(0).to_string(),
            (Rule::SumFloat | Rule::Sum, None, Some(floats))
            | (Rule::SumFloat, _, Some(floats)) => {
                format!("{:.6}", floats.iter().sum::<f64>())
            }
            (Rule::Max, None, Some(floats)) => {
                format!("{:.2}", floats.iter().copied().fold(f64::MIN, f64::max))
            }
            _ => value.clone(),
        };
        let _ = write!(out, "{key}:{merged}\r\n");
    }
    out
}

/// `name:field=count,...` lines (errorstats) with the integer `fields` summed per name over
/// the masters, names in the order first seen.
fn merge_counted(masters: &[&[(String, String)]], fields: &[&str]) -> String {
    let mut names: Vec<(String, Vec<u64>)> = Vec::new();
    for master in masters {
        for (name, value) in master.iter() {
            let counts: Vec<u64> = fields.iter().map(|f| field(value, f)).collect();
            match names.iter_mut().find(|(n, _)| n == name) {
                Some((_, sums)) => sums.iter_mut().zip(counts).for_each(|(s, c)| *s += c),
                None => names.push((name.clone(), counts)),
            }
        }
    }
    let mut out = String::new();
    for (name, sums) in names {
        let line: Vec<String> = fields
            .iter()
            .zip(sums)
            .map(|(f, v)| format!("{f}={v}"))
            .collect();
        let _ = write!(out, "{name}:{}\r\n", line.join(","));
    }
    out
}

/// `cmdstat_<name>:calls=..,usec=..,usec_per_call=..,rejected_calls=..,failed_calls=..`
/// summed per command over the masters, `usec_per_call` computed again from the sums.
fn merge_commandstats(masters: &[&[(String, String)]]) -> String {
    const FIELDS: [&str; 4] = ["calls", "usec", "rejected_calls", "failed_calls"];
    let mut names: Vec<(String, [u64; 4])> = Vec::new();
    for master in masters {
        for (name, value) in master.iter() {
            let counts = FIELDS.map(|f| field(value, f));
            match names.iter_mut().find(|(n, _)| n == name) {
                Some((_, sums)) => sums.iter_mut().zip(counts).for_each(|(s, c)| *s += c),
                None => names.push((name.clone(), counts)),
            }
        }
    }
    let mut out = String::new();
    for (name, [calls, usec, rejected, failed]) in names {
        #[allow(clippy::cast_precision_loss)]
        let per_call = if calls == 0 {
            0.0
        } else {
            usec as f64 / calls as f64
        };
        let _ = write!(
            out,
            "{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={failed}\r\n"
        );
    }
    out
}

/// The integer `name=` of a `field=value,...` line; 0 when absent.
fn field(line: &str, name: &str) -> u64 {
    line.split(',')
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `# Keyspace`'s lines: every database's counts summed over the masters.
fn keyspace(masters: &[&[(String, String)]]) -> String {
    // (db, keys, expires, avg_ttl weighted by expires)
    let mut dbs: Vec<(String, u64, u64, u128)> = Vec::new();
    for master in masters {
        for (db, fields) in master.iter() {
            if !db.starts_with("db") {
                continue;
            }
            let keys = field(fields, "keys");
            let expires = field(fields, "expires");
            let avg_ttl = field(fields, "avg_ttl");
            match dbs.iter_mut().find(|d| d.0 == *db) {
                Some(d) => {
                    d.1 += keys;
                    d.2 += expires;
                    d.3 += u128::from(avg_ttl) * u128::from(expires);
                }
                None => dbs.push((
                    db.clone(),
                    keys,
                    expires,
                    u128::from(avg_ttl) * u128::from(expires),
                )),
            }
        }
    }
    let mut out = String::new();
    for (db, keys, expires, ttl_sum) in dbs {
        let avg = if expires == 0 {
            0
        } else {
            ttl_sum / u128::from(expires)
        };
        let _ = write!(out, "{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n");
    }
    out
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
            Bytes::from_static(
                b"=49\r\ntxt:# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=300\r\n\r\n",
            ),
            Bytes::from_static(b"-ERR backend down\r\n"),
        ];
        let out = with_nodes(
            String::new(),
            NodeSections::KEYSPACE,
            &parts,
            Protocol::Resp2,
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("db0:keys=5,expires=2,avg_ttl=200\r\n"),
            "{text}"
        );
        assert!(text.contains("keyspace_unavailable_shards:1"), "{text}");
        assert!(!text.contains("# CPU"), "{text}");
    }

    #[test]
    fn the_masters_sections_are_merged_as_each_field_means() {
        let a = "$0\r\n# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:3\r\nrdb_last_save_time:1700000100\r\nrdb_last_bgsave_status:ok\r\nrdb_last_bgsave_time_sec:2\r\n\r\n# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250000\r\n\r\n# Commandstats\r\ncmdstat_get:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=1\r\n\r\n# Errorstats\r\nerrorstat_ERR:count=2\r\n";
        let b = "$0\r\n# Persistence\r\nloading:1\r\nrdb_changes_since_last_save:4\r\nrdb_last_save_time:1700000000\r\nrdb_last_bgsave_status:err\r\nrdb_last_bgsave_time_sec:5\r\n\r\n# CPU\r\nused_cpu_sys:0.500000\r\nused_cpu_user:0.250000\r\n\r\n# Commandstats\r\ncmdstat_get:calls=1,usec=50,usec_per_call=50.00,rejected_calls=2,failed_calls=0\r\ncmdstat_set:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\r\n# Errorstats\r\nerrorstat_ERR:count=1\r\nerrorstat_WRONGTYPE:count=1\r\n";
        let parts = [Bytes::from(a), Bytes::from(b)];
        let nodes = NodeSections::PERSISTENCE
            .with(NodeSections::CPU)
            .with(NodeSections::COMMANDSTATS)
            .with(NodeSections::ERRORSTATS);
        let out = with_nodes("# Server\r\n".to_owned(), nodes, &parts, Protocol::Resp2);
        let text = String::from_utf8_lossy(&out);
        for line in [
            "loading:1\r\n",
            "rdb_changes_since_last_save:7\r\n",
            "rdb_last_save_time:1700000000\r\n",
            "rdb_last_bgsave_status:err\r\n",
            "rdb_last_bgsave_time_sec:5\r\n",
            "used_cpu_sys:2.000000\r\n",
            "used_cpu_user:0.500000\r\n",
            "cmdstat_get:calls=4,usec=80,usec_per_call=20.00,rejected_calls=2,failed_calls=1\r\n",
            "cmdstat_set:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n",
            "errorstat_ERR:count=3\r\n",
            "errorstat_WRONGTYPE:count=1\r\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let order: Vec<usize> = [
            "# Server",
            "# Persistence",
            "# CPU",
            "# Commandstats",
            "# Errorstats",
        ]
        .iter()
        .map(|t| text.find(t).unwrap_or_else(|| panic!("{t} in {text}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        // A name that is not UTF-8 comes out as the node wrote it.
        let odd = [Bytes::from_static(
            b"$0\r\n# Errorstats\r\nerrorstat_\xff\xfeBAD:count=1\r\n",
        )];
        let out = with_nodes(
            String::new(),
            NodeSections::ERRORSTATS,
            &odd,
            Protocol::Resp2,
        );
        let line: &[u8] = b"errorstat_\xff\xfeBAD:count=1\r\n";
        assert!(out.windows(line.len()).any(|w| w == line), "{out:?}");
        assert!(!text.contains("# Keyspace"), "{text}");
    }
}
