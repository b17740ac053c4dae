//! The verbs that read or change the cluster's nodes: `info`, `check`, `add-node`, `del-node`,
//! `failover`, `migrations`, `cancel`. Output follows `redis-cli --cluster`. With a proxy of a
//! fleet (`[cluster] etcd`), `info` and `check` also list the proxies and the leader (FLEET);
//! the commands that change the topology reach the leader through whichever proxy is asked.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::client::{AdminClient, Value};
use crate::model::{
    show_ranges, Fleet, FleetView, MigrationView, ProxyView, ShardView, TopologyView,
};
use crate::output::plural;

/// `M: s1 127.0.0.1:6381` and its slot line, as redis-cli prints a master.
fn print_master(shard: &ShardView) {
    say!(
        "M: {} {} ({}{})",
        shard.name,
        shard.master,
        shard.master_health,
        if shard.gate == "open" {
            String::new()
        } else {
            format!(", gate {}", shard.gate)
        }
    );
    say!(
        "   slots:[{}] ({}) master",
        show_ranges(&shard.slots),
        plural(shard.slot_count, "slot")
    );
    for line in &shard.migrating {
        say!("   migrating: {line}");
    }
    for line in &shard.importing {
        say!("   importing: {line}");
    }
    say!("   {}", plural(shard.replicas.len(), "additional replica"));
    for r in &shard.replicas {
        let lag = match &r.repl {
            Some(repl) => format!(
                ", offset {}, lag {} bytes{}",
                repl.offset,
                repl.lag,
                if repl.up { "" } else { ", link down" }
            ),
            None => r.lag.map_or(String::new(), |l| format!(", lag {l}")),
        };
        say!(
            "S: {} replicates {} ({}, {}{lag})",
            r.addr,
            shard.name,
            r.state,
            r.health
        );
    }
}

/// `info`: one line per shard, then totals, like `redis-cli --cluster info`.
///
/// # Errors
/// The proxy could not be asked.
pub fn info(client: &mut AdminClient) -> Result<()> {
    let t = TopologyView::fetch(client)?;
    let mut keys = 0;
    for s in &t.shards {
        keys += s.keys.unwrap_or_default();
        let in_sync = s.replicas.iter().filter(|r| r.state == "in-sync").count();
        say!(
            "{} {} ({}) -> {} | {} | {} ({in_sync} in-sync).",
            s.name,
            s.master,
            s.master_health,
            s.keys
                .map_or_else(|| "? keys".to_owned(), |k| plural(k, "key")),
            plural(s.slot_count, "slot"),
            plural(s.replicas.len(), "replica"),
        );
    }
    let masters = t.shards.iter().filter(|s| s.slot_count > 0).count();
    say!(
        "[OK] {} in {} (epoch {}).",
        plural(keys, "key"),
        plural(t.shards.len(), "master"),
        t.epoch
    );
    say!(
        "{:.2} keys per slot on average.",
        keys as f64 / t.slots_total.max(1) as f64
    );
    if masters < t.shards.len() {
        say!(
            "{} no slots: give them some with `redshard-admin rebalance --cluster-use-empty-masters`.",
            match t.shards.len() - masters {
                1 => "1 master owns".to_owned(),
                n => format!("{n} masters own"),
            }
        );
    }
    let fleet = FleetView::fetch(client)?;
    let migrations = match (MigrationView::fetch_all(client), &fleet) {
        (Ok(all), _) => all,
        // In a fleet, MIGRATIONS is the leader's: without one, the rest is still worth showing.
        (Err(e), Fleet::Member(_) | Fleet::Unknown(_)) => {
            say!("[WARNING] The migrations cannot be listed: {e}.");
            Vec::new()
        }
        (Err(e), Fleet::Alone) => return Err(e),
    };
    for m in migrations.iter().filter(|m| !m.finished()) {
        say!(
            "Migration {} -> {} of {}: {} ({} moved).",
            m.from,
            m.to,
            plural(m.slot_count, "slot"),
            m.state,
            plural(m.keys_moved, "key")
        );
    }
    match &fleet {
        Fleet::Alone => {}
        Fleet::Unknown(e) => say!("[WARNING] The fleet cannot be listed: {e}."),
        Fleet::Member(f) => {
            for p in &f.proxies {
                say!("{}", proxy_line(p));
            }
            say!("{}", fleet_summary(f));
        }
    }
    Ok(())
}

/// `P: p1 127.0.0.1:6379 admin 127.0.0.1:6390 epoch 7 (alive, leader)`: one proxy of a fleet.
#[must_use]
pub fn proxy_line(p: &ProxyView) -> String {
    let mut notes = vec![if p.alive { "alive" } else { "not alive" }];
    if p.leader {
        notes.push("leader");
    }
    if p.this {
        notes.push("the proxy asked");
    }
    format!(
        "P: {} {} admin {} epoch {} ({})",
        p.id,
        p.addr.as_deref().unwrap_or("-"),
        p.admin.as_deref().unwrap_or("-"),
        p.epoch,
        notes.join(", ")
    )
}

/// `[OK] 3 proxies alive; leader p1.`, or what is missing.
fn fleet_summary(f: &FleetView) -> String {
    let alive = f.proxies.iter().filter(|p| p.alive).count();
    let proxies = if alive == 1 {
        "1 proxy".to_owned()
    } else {
        format!("{alive} proxies")
    };
    match &f.leader {
        Some(leader) => format!("[OK] {proxies} alive in the fleet; leader {leader}."),
        None => format!("[WARNING] {proxies} alive in the fleet; no leader yet."),
    }
}

/// What is wrong with the fleet, each with what to do about it; and what only needs watching.
#[must_use]
pub fn fleet_problems(fleet: &Fleet) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let f = match fleet {
        Fleet::Alone => return (problems, warnings),
        Fleet::Unknown(e) => {
            problems.push(format!(
                "The fleet's state cannot be read: {e}. Check that etcd answers ([cluster] etcd)."
            ));
            return (problems, warnings);
        }
        Fleet::Member(f) => f,
    };
    match &f.leader {
        None => problems.push(
            "No proxy leads the fleet: topology changes and failovers wait until one does (within [cluster] lease_ttl_ms of the last leader's end); if this lasts, check that the proxies reach etcd.".into(),
        ),
        Some(leader) if !f.proxies.iter().any(|p| &p.id == leader && p.alive) => problems.push(format!(
            "The leader {leader} has no live entry in the fleet: it is being replaced; check again shortly."
        )),
        Some(_) => {}
    }
    let newest = f.proxies.iter().filter(|p| p.alive).map(|p| p.epoch).max();
    for p in &f.proxies {
        if !p.alive {
            problems.push(format!(
                "Proxy {} (the one asked) has no live etcd session: it does not serve until it has one again; check that it reaches etcd.",
                p.id
            ));
        } else if newest.is_some_and(|n| p.epoch < n) {
            warnings.push(format!(
                "Proxy {} has installed epoch {}, behind epoch {}: it follows etcd's watch; check again shortly.",
                p.id,
                p.epoch,
                newest.unwrap_or_default()
            ));
        }
    }
    (problems, warnings)
}

/// What is wrong with the cluster, each with what to do about it.
#[must_use]
pub fn problems(t: &TopologyView, migrations: &[MigrationView]) -> Vec<String> {
    let mut out = Vec::new();
    if t.slots_served < t.slots_total {
        out.push(format!(
            "Not all {} slots are covered by nodes: {} are served.",
            t.slots_total, t.slots_served
        ));
    }
    for s in &t.shards {
        if s.master_health == "down" || s.gate == "down" {
            let has_in_sync = s.replicas.iter().any(|r| r.state == "in-sync");
            out.push(format!(
                "Master {} of shard {} is down{}.",
                s.master,
                s.name,
                if has_in_sync {
                    "; an in-sync replica takes over automatically, or run `redshard-admin failover` once it answers"
                } else {
                    "; it has no in-sync replica: restart it"
                }
            ));
        }
        for r in &s.replicas {
            if r.state != "in-sync" {
                out.push(format!(
                    "Replica {} of shard {} is {}, not in-sync{}.",
                    r.addr,
                    s.name,
                    r.state,
                    if r.health == "up" {
                        ": the proxy resynchronises it; check again shortly"
                    } else {
                        " and does not answer: restart it, or remove it with `redshard-admin del-node`"
                    }
                ));
            } else if r.health == "down" {
                out.push(format!(
                    "Replica {} of shard {} is down: restart it, or remove it with `redshard-admin del-node`.",
                    r.addr, s.name
                ));
            }
        }
    }
    for m in migrations {
        if m.state == "failed" {
            out.push(format!(
                "Migration of slots {} from {} to {} failed: {}. Cancel it with `redshard-admin cancel` (the slots go back to {}), then retry.",
                m.slots,
                m.from,
                m.to,
                m.error.as_deref().unwrap_or("no reason given"),
                m.from
            ));
        }
    }
    out
}

/// `check`: the topology, then the checks of `redis-cli --cluster check`. Returns whether
/// everything is fine.
///
/// # Errors
/// The proxy could not be asked.
pub fn check(client: &mut AdminClient) -> Result<bool> {
    let t = TopologyView::fetch(client)?;
    let fleet = FleetView::fetch(client)?;
    let mut unlisted = None;
    let migrations = match (MigrationView::fetch_all(client), &fleet) {
        (Ok(all), _) => all,
        (Err(e), Fleet::Member(_) | Fleet::Unknown(_)) => {
            unlisted = Some(format!(
                "The migrations cannot be listed: {e}. They are the leader's: check again once the fleet has one."
            ));
            Vec::new()
        }
        (Err(e), Fleet::Alone) => return Err(e),
    };
    say!(
        ">>> Performing Cluster Check (using the redshard admin port {}, epoch {})",
        client.addr(),
        t.epoch
    );
    for s in &t.shards {
        print_master(s);
    }
    say!(">>> Check for open slots...");
    let migrating: Vec<&MigrationView> = migrations.iter().filter(|m| !m.finished()).collect();
    if migrating.is_empty() && t.shards.iter().all(|s| s.migrating.is_empty()) {
        say!("[OK] No slots are migrating.");
    } else {
        for m in &migrating {
            say!(
                "[WARNING] Slots {} are moving from {} to {} ({}).",
                m.slots,
                m.from,
                m.to,
                m.state
            );
        }
        if migrating.is_empty() {
            for s in &t.shards {
                for line in &s.migrating {
                    say!("[WARNING] Slots of {} migrating: {line}.", s.name);
                }
            }
        }
    }
    say!(">>> Check slots coverage...");
    let mut found = problems(&t, &migrations);
    found.extend(unlisted);
    if t.slots_served == t.slots_total {
        say!("[OK] All {} slots covered.", t.slots_total);
    }
    for problem in &found {
        say!("[ERR] {problem}");
    }
    if found.is_empty() {
        say!("[OK] Every master is up and every replica is in sync.");
    }
    if let Fleet::Member(f) = &fleet {
        say!(">>> Check the fleet (etcd)...");
        for p in &f.proxies {
            say!("{}", proxy_line(p));
        }
    } else if matches!(fleet, Fleet::Unknown(_)) {
        say!(">>> Check the fleet (etcd)...");
    }
    let (fleet_found, fleet_warnings) = fleet_problems(&fleet);
    for warning in &fleet_warnings {
        say!("[WARNING] {warning}");
    }
    for problem in &fleet_found {
        say!("[ERR] {problem}");
    }
    if let Fleet::Member(f) = &fleet {
        if fleet_found.is_empty() {
            say!("{}", fleet_summary(f));
        }
    }
    found.extend(fleet_found);
    if !t.rules.is_empty() {
        say!(">>> Key routing rules (longest prefix first wins):");
        for rule in &t.rules {
            say!("    {rule}");
        }
    }
    Ok(found.is_empty())
}

/// `commands`: the admin port's own list of its commands (its `COMMANDS`, the same as its
/// `HELP`, which redis-cli answers itself).
///
/// # Errors
/// The proxy could not be asked or did not answer with a list.
pub fn commands(client: &mut AdminClient) -> Result<()> {
    let reply = client.ok(&["COMMANDS"])?;
    for line in reply.items()? {
        match line {
            Value::Status(text) | Value::Bulk(Some(text)) => say!("{text}"),
            other => bail!("COMMANDS answered an unexpected item {other:?}"),
        }
    }
    Ok(())
}

/// The name a new shard gets when none is given: `sN` with the smallest free N from 1.
#[must_use]
pub fn next_shard_name(t: &TopologyView) -> String {
    (1..)
        .map(|n| format!("s{n}"))
        .find(|name| t.shards.iter().all(|s| &s.name != name))
        .unwrap_or_else(|| "s0".into())
}

/// `add-node NEW_ADDR [--cluster-slave [--cluster-master-id SHARD]] [--name NAME]`.
///
/// # Errors
/// The proxy refused (the error says why and what to do), or the replica did not get in
/// sync within `timeout`.
pub fn add_node(
    client: &mut AdminClient,
    addr: &str,
    replica_of: Option<Option<&str>>,
    name: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let t = TopologyView::fetch(client)?;
    match replica_of {
        None => {
            let name = name.map_or_else(|| next_shard_name(&t), str::to_owned);
            say!(">>> Adding node {addr} to the cluster as the master of a new shard {name}");
            client.ok(&["ADDSHARD", &name, addr])?;
            say!("[OK] New shard {name} with master {addr} added; it owns no slots yet.");
            say!(
                "Give it slots with `redshard-admin rebalance --cluster-use-empty-masters` or `redshard-admin reshard --cluster-from <shard> --cluster-to {name} --cluster-slots <n>`."
            );
            Ok(())
        }
        Some(shard) => {
            let shard = match shard {
                Some(s) => t.shard(s).map_or_else(|| s.to_owned(), |v| v.name.clone()),
                // Like redis-cli: the master with the fewest replicas.
                None => match t.shards.iter().min_by_key(|s| (s.replicas.len(), s.id)) {
                    Some(s) => s.name.clone(),
                    None => bail!("the cluster has no shard to add a replica to"),
                },
            };
            say!(">>> Adding replica {addr} to shard {shard}");
            client.ok(&["ADDREPLICA", &shard, addr])?;
            say!(">>> Waiting for {addr} to be filled by a full sync and caught up with its master...");
            wait_in_sync(client, addr, timeout)?;
            say!("[OK] Replica {addr} of shard {shard} is in sync.");
            Ok(())
        }
    }
}

/// Polls TOPOLOGY until the replica at `addr` is in sync.
fn wait_in_sync(client: &mut AdminClient, addr: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    loop {
        let t = TopologyView::fetch(client)?;
        match t.replica(addr) {
            Some((_, r)) if r.state == "in-sync" => {
                spinner.finish_and_clear();
                return Ok(());
            }
            Some((s, r)) => spinner.set_message(format!(
                "{addr}: {} ({}), master {} ({:.0} s)",
                r.state,
                r.health,
                s.master,
                started.elapsed().as_secs_f64()
            )),
            None => {
                spinner.finish_and_clear();
                bail!("{addr} is no longer in the topology (removed meanwhile?)");
            }
        }
        if started.elapsed() > timeout {
            spinner.finish_and_clear();
            bail!(
                "{addr} is not in sync after {} s; it keeps trying: watch it with `redshard-admin check`",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `del-node ADDR`.
///
/// # Errors
/// The proxy refused; the error says what to do first.
pub fn del_node(client: &mut AdminClient, addr: &str) -> Result<()> {
    say!(">>> Removing node {addr} from the cluster");
    let reply = client.ok(&["DELNODE", addr])?;
    let shard = reply.string("shard")?;
    match reply.string("role")?.as_str() {
        "master" => say!("[OK] Shard {shard} and its master {addr} removed."),
        _ => say!("[OK] Replica {addr} of shard {shard} removed."),
    }
    Ok(())
}

/// `failover SHARD [--to ADDR]`.
///
/// # Errors
/// The proxy refused or the switch did not happen.
pub fn failover(client: &mut AdminClient, shard: &str, to: Option<&str>) -> Result<()> {
    say!(">>> Graceful failover of shard {shard}: writes pause, a replica catches up, roles swap");
    let reply = match to {
        Some(to) => client.ok(&["FAILOVER", shard, "TO", to])?,
        None => client.ok(&["FAILOVER", shard])?,
    };
    say!(
        "[OK] {} is the master of shard {} now; {} stays an in-sync replica.",
        reply.string("new-master")?,
        reply.string("shard")?,
        reply.string("old-master")?
    );
    Ok(())
}

/// `migrations`: every migration the proxy lists.
///
/// # Errors
/// The proxy could not be asked.
pub fn migrations(client: &mut AdminClient) -> Result<()> {
    let all = MigrationView::fetch_all(client)?;
    if all.is_empty() {
        say!("No migrations.");
        return Ok(());
    }
    for m in &all {
        let eta = m
            .eta_secs
            .map_or(String::new(), |s| format!(", ETA {s:.0} s"));
        say!(
            "{} -> {}: {} [{}] {}: {}/{} keys, {} moved, {:.0} keys/s, {:.1} s{eta}{}",
            m.from,
            m.to,
            plural(m.slot_count, "slot"),
            m.slots,
            m.state,
            m.keys_moved,
            m.keys_estimate,
            crate::moves::human_bytes(m.bytes_moved),
            m.rate,
            m.elapsed_secs,
            m.error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})")),
        );
    }
    Ok(())
}

/// `cancel`: cancels the running and queued migrations.
///
/// # Errors
/// The proxy refused (nothing to cancel, ...).
pub fn cancel(client: &mut AdminClient) -> Result<()> {
    client.ok(&["MIGRATION", "CANCEL"])?;
    say!("[OK] Migrations cancelled; the slots that had not finished are back with their source.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReplicaView;

    fn shard(name: &str, health: &str, replica_state: &str) -> ShardView {
        ShardView {
            id: 0,
            name: name.into(),
            master: format!("127.0.0.1:{}", 7000 + name.len()),
            master_health: health.into(),
            gate: "open".into(),
            slots: Vec::new(),
            slot_count: 0,
            keys: Some(0),
            replicas: vec![ReplicaView {
                addr: "127.0.0.1:8000".into(),
                state: replica_state.into(),
                health: "up".into(),
                lag: None,
                repl: None,
            }],
            migrating: Vec::new(),
            importing: Vec::new(),
        }
    }

    fn topology(shards: Vec<ShardView>, served: i64) -> TopologyView {
        TopologyView {
            epoch: 1,
            slots_served: served,
            slots_total: 16384,
            shards,
            failovers: 0,
            last_failover: None,
            rules: Vec::new(),
        }
    }

    #[test]
    fn a_healthy_cluster_has_no_problems() {
        let t = topology(vec![shard("s1", "up", "in-sync")], 16384);
        assert!(problems(&t, &[]).is_empty());
    }

    #[test]
    fn each_problem_is_reported_with_what_to_do() {
        let t = topology(
            vec![shard("s1", "down", "stale"), shard("s22", "up", "syncing")],
            100,
        );
        let failed = MigrationView {
            from: "s1".into(),
            to: "s22".into(),
            slots: "0-9".into(),
            slot_count: 10,
            state: "failed".into(),
            error: Some("boom".into()),
            keys_moved: 0,
            bytes_moved: 0,
            keys_estimate: 0,
            elapsed_secs: 0.0,
            rate: 0.0,
            eta_secs: None,
        };
        let found = problems(&t, &[failed]);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].starts_with("Not all 16384 slots are covered"));
        assert!(found[1].contains("is down; it has no in-sync replica: restart it"));
        assert!(found[2].contains("is stale, not in-sync"));
        assert!(found[3].contains("is syncing, not in-sync: the proxy resynchronises it"));
        assert!(found[4].contains("failed: boom. Cancel it with `redshard-admin cancel`"));
    }

    fn proxy(id: &str, epoch: i64, alive: bool, leader: bool) -> ProxyView {
        ProxyView {
            id: id.into(),
            addr: Some("127.0.0.1:6379".into()),
            admin: None,
            epoch,
            alive,
            leader,
            this: !alive,
        }
    }

    #[test]
    fn fleet_problems_name_the_missing_leader_and_dead_or_lagging_proxies() {
        assert_eq!(fleet_problems(&Fleet::Alone), (vec![], vec![]));
        let healthy = Fleet::Member(FleetView {
            proxy: "a".into(),
            epoch: 3,
            leader: Some("a".into()),
            proxies: vec![proxy("a", 3, true, true), proxy("b", 3, true, false)],
        });
        assert_eq!(fleet_problems(&healthy), (vec![], vec![]));
        let broken = Fleet::Member(FleetView {
            proxy: "c".into(),
            epoch: 2,
            leader: None,
            proxies: vec![
                proxy("a", 3, true, false),
                proxy("b", 2, true, false),
                proxy("c", 2, false, false),
            ],
        });
        let (problems, warnings) = fleet_problems(&broken);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("No proxy leads the fleet"));
        assert!(problems[1].starts_with("Proxy c (the one asked) has no live etcd session"));
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(warnings[0].starts_with("Proxy b has installed epoch 2, behind epoch 3"));
        let (problems, _) = fleet_problems(&Fleet::Unknown("CLUSTERDOWN etcd".into()));
        assert!(problems[0].contains("CLUSTERDOWN etcd"));
        assert_eq!(
            proxy_line(&proxy("a", 3, true, true)),
            "P: a 127.0.0.1:6379 admin - epoch 3 (alive, leader)"
        );
    }

    #[test]
    fn new_shards_take_the_smallest_free_name() {
        let t = topology(
            vec![shard("s1", "up", "in-sync"), shard("s3", "up", "in-sync")],
            0,
        );
        assert_eq!(next_shard_name(&t), "s2");
        let t = topology(
            vec![shard("s1", "up", "in-sync"), shard("s2", "up", "in-sync")],
            0,
        );
        assert_eq!(next_shard_name(&t), "s3");
    }
}
