//! INFO: the proxy's own sections in Redis's format, plus the keyspace summed over the masters.
//!
//! Clients and tools parse INFO as `key:value` lines under `# Section` headers, so the proxy
//! keeps Redis's section and field names (`redis_version`, `connected_clients`,
//! `role:master`, `db0:keys=...`) and adds a `# Redshard` section of its own.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::dispatch::{fan_out, Action};
use super::merge::MergePlan;
use super::Ctx;
use crate::command::REDIS_VERSION;
use crate::resp::{encode, reply, Args};
use crate::router::RoutingTable;

/// Sections shown by plain `INFO` / `INFO default`, in Redis's order.
const DEFAULT_SECTIONS: [&str; 5] = ["server", "clients", "stats", "replication", "redshard"];

/// Builds the reply to `INFO [section ...]`; fans out to the masters when the keyspace is asked.
pub(super) fn info(ctx: &Ctx, table: &RoutingTable, args: Args<'_>) -> Action {
    let mut wanted: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    if wanted.is_empty() {
        wanted.push("default".into());
    }
    let all = wanted
        .iter()
        .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let wants = |section: &str| all || wanted.iter().any(|w| w == section);

    let mut text = String::with_capacity(1024);
    for section in DEFAULT_SECTIONS {
        if wants(section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            write_section(ctx, table, section, &mut text);
        }
    }
    if wants("keyspace") {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        fan_out(
            ctx,
            table,
            MergePlan::Info { text },
            &Bytes::from_static(b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n"),
            false,
        );
        return Action::Done;
    }
    let mut out = BytesMut::with_capacity(text.len() + 16);
    encode::bulk(&mut out, text.as_bytes());
    Action::reply(ctx, out.freeze())
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
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n",
            state.clients.connected(),
            state.live.load().limits.max_clients,
        ),
        "stats" => write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n",
            state.clients.total_connections.load(Ordering::Relaxed),
            state.clients.total_commands.load(Ordering::Relaxed),
            state.clients.rejected_connections.load(Ordering::Relaxed),
        ),
        "replication" => write!(text, "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"),
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
                    "shard{i}:name={},master={},lanes={}\r\n",
                    shard.name,
                    shard.master.addr(),
                    shard.master.lane_count()
                );
            }
            Ok(())
        }
        _ => Ok(()),
    };
}

/// Appends `# Keyspace` with every database's counts summed over the masters' INFO replies.
/// Masters that failed to answer are counted in `keyspace_unavailable_shards`.
pub(super) fn with_keyspace(mut text: String, parts: &[Bytes]) -> Bytes {
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
    let mut out = BytesMut::with_capacity(text.len() + 16);
    encode::bulk(&mut out, text.as_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_is_summed() {
        let parts = [
            Bytes::from_static(b"$45\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=100\r\n\r\n"),
            Bytes::from_static(b"$45\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=300\r\n\r\n"),
            Bytes::from_static(b"-ERR backend down\r\n"),
        ];
        let out = with_keyspace(String::new(), &parts);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("db0:keys=5,expires=2,avg_ttl=200\r\n"),
            "{text}"
        );
        assert!(text.contains("keyspace_unavailable_shards:1"), "{text}");
    }
}
