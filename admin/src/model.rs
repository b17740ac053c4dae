//! The admin port's structured replies read into types: TOPOLOGY, MIGRATIONS, REBALANCE.

use anyhow::{Context, Result};
use redshard_config::SlotRange;

use crate::client::{AdminClient, Value};

/// A replica as TOPOLOGY shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaView {
    /// Its address.
    pub addr: String,
    /// `in-sync`, `syncing` or `stale`.
    pub state: String,
    /// `up`, `failing`, `down` or `unknown`.
    pub health: String,
    /// Mirrored writes sent and not yet answered (`None` when not mirrored to).
    pub lag: Option<i64>,
    /// Redis replication: its replication offset, bytes of the master's stream it lacks,
    /// and whether it follows its master with its link up, as the proxy last checked
    /// (`None` with proxy mirroring, before the first check, or from an older proxy).
    pub repl: Option<ReplLink>,
}

/// A replica's Redis replication as TOPOLOGY shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplLink {
    /// Its replication offset.
    pub offset: i64,
    /// Bytes of its master's stream it lacks.
    pub lag: i64,
    /// It follows its master and its link is up.
    pub up: bool,
}

/// A shard as TOPOLOGY shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardView {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its master's address.
    pub master: String,
    /// `up`, `failing`, `down` or `unknown`.
    pub master_health: String,
    /// `open`, `paused` or `down`.
    pub gate: String,
    /// The slots it owns.
    pub slots: Vec<SlotRange>,
    /// How many.
    pub slot_count: usize,
    /// Keys on its master (`None` when it could not be asked).
    pub keys: Option<i64>,
    /// Its replicas.
    pub replicas: Vec<ReplicaView>,
    /// Slots moving away, as `ranges to shard` lines.
    pub migrating: Vec<String>,
    /// Slots moving in, as `ranges from shard` lines.
    pub importing: Vec<String>,
}

/// TOPOLOGY.
#[derive(Clone, Debug, PartialEq)]
pub struct TopologyView {
    /// The topology epoch.
    pub epoch: i64,
    /// Slots whose shard takes requests now.
    pub slots_served: i64,
    /// 16384.
    pub slots_total: i64,
    /// The shards, by id.
    pub shards: Vec<ShardView>,
    /// Failovers since the proxy started.
    pub failovers: i64,
    /// A line on the last one.
    pub last_failover: Option<String>,
    /// The key routing rules, one line each (none from a proxy without the field).
    pub rules: Vec<String>,
}

/// Ranges as the admin port writes them (`0-5460,10923`, or `-` for none).
///
/// # Errors
/// A range that does not parse.
pub fn parse_ranges(text: &str) -> Result<Vec<SlotRange>> {
    if text == "-" || text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|r| r.parse::<SlotRange>().map_err(Into::into))
        .collect()
}

/// Ranges for display, `-` for none.
#[must_use]
pub fn show_ranges(ranges: &[SlotRange]) -> String {
    if ranges.is_empty() {
        return "-".into();
    }
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn strings(value: &Value) -> Result<Vec<String>> {
    value
        .items()?
        .iter()
        .map(|v| match v {
            Value::Bulk(Some(s)) | Value::Status(s) => Ok(s.clone()),
            other => Err(anyhow::anyhow!("expected text, got {other:?}")),
        })
        .collect()
}

impl TopologyView {
    /// Asks the proxy.
    ///
    /// # Errors
    /// The command failed or its reply is not TOPOLOGY's.
    pub fn fetch(client: &mut AdminClient) -> Result<Self> {
        let reply = client.ok(&["TOPOLOGY"])?;
        Self::parse(&reply).context("reading TOPOLOGY")
    }

    /// Reads a TOPOLOGY reply.
    ///
    /// # Errors
    /// A field is missing or of the wrong type.
    pub fn parse(reply: &Value) -> Result<Self> {
        let mut shards = Vec::new();
        for s in reply.field("shards")?.items()? {
            let mut replicas = Vec::new();
            for r in s.field("replicas")?.items()? {
                replicas.push(ReplicaView {
                    addr: r.string("addr")?,
                    state: r.string("state")?,
                    health: r.string("health")?,
                    lag: r.int("lag")?,
                    repl: repl_link(r),
                });
            }
            shards.push(ShardView {
                id: s.int("id")?.unwrap_or_default(),
                name: s.string("name")?,
                master: s.string("master")?,
                master_health: s.string("master-health")?,
                gate: s.string("gate")?,
                slots: parse_ranges(&s.string("slots")?)?,
                slot_count: usize::try_from(s.int("slot-count")?.unwrap_or_default())
                    .unwrap_or_default(),
                keys: s.int("keys")?,
                replicas,
                migrating: strings(s.field("migrating")?)?,
                importing: strings(s.field("importing")?)?,
            });
        }
        Ok(Self {
            epoch: reply.int("epoch")?.unwrap_or_default(),
            slots_served: reply.int("slots-served")?.unwrap_or_default(),
            slots_total: reply.int("slots-total")?.unwrap_or_default(),
            shards,
            failovers: reply.int("failovers")?.unwrap_or_default(),
            last_failover: reply.text("last-failover")?,
            rules: match reply.field("rules") {
                Ok(rules) => strings(rules)?,
                Err(_) => Vec::new(),
            },
        })
    }

    /// The shard named `name`, or whose master is at `name`.
    #[must_use]
    pub fn shard(&self, name: &str) -> Option<&ShardView> {
        self.shards
            .iter()
            .find(|s| s.name == name)
            .or_else(|| self.shards.iter().find(|s| s.master == name))
    }

    /// The shard and replica at `addr`, if it is a replica.
    #[must_use]
    pub fn replica(&self, addr: &str) -> Option<(&ShardView, &ReplicaView)> {
        self.shards
            .iter()
            .find_map(|s| s.replicas.iter().find(|r| r.addr == addr).map(|r| (s, r)))
    }
}

/// One entry of MIGRATIONS.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationView {
    /// Source shard.
    pub from: String,
    /// Target shard.
    pub to: String,
    /// The slots, as the port wrote them.
    pub slots: String,
    /// How many.
    pub slot_count: u64,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Keys moved.
    pub keys_moved: u64,
    /// Bytes moved.
    pub bytes_moved: u64,
    /// Keys to move, estimated.
    pub keys_estimate: u64,
    /// Seconds it has run.
    pub elapsed_secs: f64,
    /// Keys per second.
    pub rate: f64,
    /// Seconds left, when known.
    pub eta_secs: Option<f64>,
}

impl MigrationView {
    /// Asks the proxy for every migration it lists.
    ///
    /// # Errors
    /// The command failed or its reply is not MIGRATIONS'.
    pub fn fetch_all(client: &mut AdminClient) -> Result<Vec<Self>> {
        let reply = client.ok(&["MIGRATIONS"])?;
        reply
            .items()?
            .iter()
            .map(Self::parse)
            .collect::<Result<_>>()
            .context("reading MIGRATIONS")
    }

    /// Reads one entry.
    ///
    /// # Errors
    /// A field is missing or of the wrong type.
    pub fn parse(v: &Value) -> Result<Self> {
        let count = |name: &str| -> Result<u64> {
            Ok(u64::try_from(v.int(name)?.unwrap_or_default()).unwrap_or_default())
        };
        Ok(Self {
            from: v.string("from")?,
            to: v.string("to")?,
            slots: v.string("slots")?,
            slot_count: count("slot-count")?,
            state: v.string("state")?,
            error: v.text("error")?,
            keys_moved: count("keys-moved")?,
            bytes_moved: count("bytes-moved")?,
            keys_estimate: count("keys-estimate")?,
            elapsed_secs: v.number("elapsed-secs")?.unwrap_or_default(),
            rate: v.number("rate-keys-per-sec")?.unwrap_or_default(),
            eta_secs: v.number("eta-secs")?,
        })
    }

    /// Whether it has ended (done, failed or cancelled).
    #[must_use]
    pub fn finished(&self) -> bool {
        matches!(self.state.as_str(), "done" | "failed" | "cancelled")
    }
}

/// One move of a REBALANCE plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMove {
    /// Source shard.
    pub from: String,
    /// Target shard.
    pub to: String,
    /// How many slots.
    pub slot_count: u64,
    /// Which, as the port wrote them.
    pub slots: String,
}

/// A REBALANCE reply.
#[derive(Clone, Debug, PartialEq)]
pub struct RebalanceView {
    /// `balanced`, `planned` or `queued`.
    pub status: String,
    /// The threshold used, in percent.
    pub threshold_pct: f64,
    /// Each shard taking part: name, slots now, slots after.
    pub shares: Vec<(String, i64, i64)>,
    /// The moves.
    pub moves: Vec<PlannedMove>,
}

impl RebalanceView {
    /// Reads a REBALANCE reply.
    ///
    /// # Errors
    /// A field is missing or of the wrong type.
    pub fn parse(v: &Value) -> Result<Self> {
        let mut shares = Vec::new();
        for s in v.field("shards")?.items()? {
            shares.push((
                s.string("shard")?,
                s.int("slots-now")?.unwrap_or_default(),
                s.int("slots-after")?.unwrap_or_default(),
            ));
        }
        let mut moves = Vec::new();
        for m in v.field("moves")?.items()? {
            moves.push(PlannedMove {
                from: m.string("from")?,
                to: m.string("to")?,
                slot_count: u64::try_from(m.int("slot-count")?.unwrap_or_default())
                    .unwrap_or_default(),
                slots: m.string("slots")?,
            });
        }
        Ok(Self {
            status: v.string("status")?,
            threshold_pct: v.number("threshold-pct")?.unwrap_or_default(),
            shares,
            moves,
        })
    }
}

/// A replica's Redis replication fields, if the reply has them filled.
fn repl_link(replica: &Value) -> Option<ReplLink> {
    Some(ReplLink {
        offset: replica.int("offset").ok()??,
        lag: replica.int("repl-lag").ok()??,
        up: replica.text("link").ok()?? == "up",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip() {
        assert!(parse_ranges("-").unwrap().is_empty());
        let r = parse_ranges("0-5460,7000").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(show_ranges(&r), "0-5460,7000");
        assert_eq!(show_ranges(&[]), "-");
        assert!(parse_ranges("9-2").is_err());
    }
}

/// One proxy of a fleet, as FLEET lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyView {
    /// Its id.
    pub id: String,
    /// Where its clients connect; `None` for the proxy asked when it has no live entry.
    pub addr: Option<String>,
    /// Its admin port on TCP, when it has one.
    pub admin: Option<String>,
    /// The topology epoch it has installed.
    pub epoch: i64,
    /// Whether its etcd session is alive (its entry lives on its lease).
    pub alive: bool,
    /// Whether it leads the fleet.
    pub leader: bool,
    /// Whether it is the proxy asked.
    pub this: bool,
}

/// FLEET's reply for a proxy of a fleet (`[cluster] etcd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetView {
    /// The id of the proxy asked.
    pub proxy: String,
    /// The topology epoch the proxy asked has installed.
    pub epoch: i64,
    /// The leader's id; `None` while no proxy leads.
    pub leader: Option<String>,
    /// Every proxy, by id.
    pub proxies: Vec<ProxyView>,
}

/// What FLEET told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fleet {
    /// The proxy runs alone (no `[cluster]`, or a proxy too old to know FLEET).
    Alone,
    /// The proxy belongs to a fleet.
    Member(FleetView),
    /// The proxy belongs to a fleet whose state it cannot read now (etcd down): the text.
    Unknown(String),
}

impl FleetView {
    /// Asks the proxy for its fleet.
    ///
    /// # Errors
    /// The proxy could not be asked, or its reply is not FLEET's.
    pub fn fetch(client: &mut AdminClient) -> Result<Fleet> {
        match client.call(&["FLEET"])? {
            Value::Error(e) if e.starts_with("ERR unknown command") => Ok(Fleet::Alone),
            Value::Error(e) => Ok(Fleet::Unknown(e)),
            reply => Self::parse(&reply).context("reading FLEET"),
        }
    }

    /// Reads a FLEET reply.
    ///
    /// # Errors
    /// A field is missing or of the wrong type.
    pub fn parse(reply: &Value) -> Result<Fleet> {
        if reply.string("mode")? != "fleet" {
            return Ok(Fleet::Alone);
        }
        let yes = |v: &Value, name: &str| -> Result<bool> { Ok(v.string(name)? == "yes") };
        let mut proxies = Vec::new();
        for p in reply.field("proxies")?.items()? {
            proxies.push(ProxyView {
                id: p.string("id")?,
                addr: p.text("addr")?,
                admin: p.text("admin")?,
                epoch: p.int("epoch")?.unwrap_or_default(),
                alive: yes(p, "alive")?,
                leader: yes(p, "leader")?,
                this: yes(p, "self")?,
            });
        }
        Ok(Fleet::Member(Self {
            proxy: reply.string("proxy")?,
            epoch: reply.int("epoch")?.unwrap_or_default(),
            leader: reply.text("leader")?,
            proxies,
        }))
    }
}
