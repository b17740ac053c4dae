//! The admin commands: parsing their arguments, running them on the controller, and their
//! replies. Every error names what to do next.

use std::sync::Arc;

use redshard_config::{Migration, NodeAddr, NodeRole, ReplicaState, SlotRange};

use super::rebalance::{self, Options};
use super::reply::Reply;
use super::status;
use redshard_control::migrate::{MigrateError, MigrationState};
use redshard_control::{find_shard, Controller};

/// The admin port's commands. The dispatcher matches on this enum (so a command listed here
/// cannot go unhandled) and HELP and COMMANDS are written from [`COMMANDS`] (so a handled
/// command cannot go unlisted: a variant missing there is never constructed, which the build
/// refuses as dead code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Ping,
    Auth,
    Hello,
    Quit,
    Help,
    Commands,
    Topology,
    AddShard,
    AddReplica,
    DelReplica,
    DelShard,
    DelNode,
    Migrate,
    Migrations,
    Migration,
    Rebalance,
    Failover,
    SetUsers,
    Fleet,
    FleetPeer,
    OnLeader,
}

/// One command of the admin port, as HELP and COMMANDS show it.
pub(crate) struct Spec {
    /// What the dispatcher runs.
    pub command: Command,
    /// Its name, upper case.
    pub name: &'static str,
    /// Its forms, one line each.
    pub usage: &'static [&'static str],
    /// What it does, or empty when the usage says enough.
    pub summary: &'static str,
}

/// Every command of the admin port, in the order HELP lists them.
pub(crate) const COMMANDS: &[Spec] = &[
    spec(Command::Ping, "PING", &["PING [<message>]"], ""),
    spec(Command::Auth, "AUTH", &["AUTH [default] <password>"], ""),
    spec(
        Command::Hello,
        "HELLO",
        &["HELLO [2 [AUTH default <password>]]"],
        "",
    ),
    spec(Command::Quit, "QUIT", &["QUIT"], ""),
    spec(Command::Help, "HELP", &["HELP"], "This list."),
    spec(
        Command::Commands,
        "COMMANDS",
        &["COMMANDS"],
        "This list, under a name redis-cli sends on (it answers HELP itself): redis-cli -s <admin socket> COMMANDS.",
    ),
    spec(
        Command::Topology,
        "TOPOLOGY",
        &["TOPOLOGY"],
        "Epoch, slots served, each shard (master, health, gate, slots, keys, replicas with state, lag and applied writes, migrating slots), failovers.",
    ),
    spec(
        Command::AddShard,
        "ADDSHARD",
        &["ADDSHARD <name> <master-addr>"],
        "Add a shard whose master (empty, standalone) owns no slots yet; give it slots with MIGRATE or REBALANCE USE-EMPTY-MASTERS.",
    ),
    spec(
        Command::AddReplica,
        "ADDREPLICA",
        &["ADDREPLICA <shard-or-master-addr> <addr>"],
        "Add a replica; it must hold no keys (the full sync would replace them). It is filled by a full sync from the master, then mirrored to (state syncing, then in-sync).",
    ),
    spec(Command::DelReplica, "DELREPLICA", &["DELREPLICA <addr>"], ""),
    spec(
        Command::DelShard,
        "DELSHARD",
        &["DELSHARD <shard-or-master-addr>"],
        "Only once the shard has no replicas and neither owns nor migrates slots.",
    ),
    spec(
        Command::DelNode,
        "DELNODE",
        &["DELNODE <addr>"],
        "DELREPLICA for a replica, DELSHARD for a master.",
    ),
    spec(
        Command::Migrate,
        "MIGRATE",
        &[
            "MIGRATE <from> <to> <count>",
            "MIGRATE <from> <to> SLOTS <range> [<range> ...]",
        ],
        "Queue moving slots (the source's highest-numbered ones, or the listed ranges such as 0-99 or 7000).",
    ),
    spec(
        Command::Migrations,
        "MIGRATIONS",
        &["MIGRATIONS"],
        "Queued, running and recently finished migrations with keys and bytes moved, rate and time left.",
    ),
    spec(
        Command::Migration,
        "MIGRATION",
        &["MIGRATION CANCEL"],
        "Cancel the running and queued migrations; unfinished slots go back to their source.",
    ),
    spec(
        Command::Rebalance,
        "REBALANCE",
        &["REBALANCE [USE-EMPTY-MASTERS] [THRESHOLD <percent>] [DRY-RUN]"],
        "Give every shard that owns slots (every shard with USE-EMPTY-MASTERS) an equal share; nothing moves when all are within THRESHOLD percent (default 2).",
    ),
    spec(
        Command::Failover,
        "FAILOVER",
        &["FAILOVER <shard-or-master-addr> [TO <replica-addr>]"],
        "Graceful switch to an in-sync replica: writes pause, the replica catches up, no client sees an error.",
    ),
    spec(
        Command::SetUsers,
        "SETUSERS",
        &["SETUSERS <user-line> [<user-line> ...]"],
        "Replace the proxy's users, saved with the topology, by these lines as ACL LIST shows them (passwords as #<sha256>, one line must be the default user): what a proxy of a fleet sends the leader when its clients change users with ACL SETUSER, DELUSER or CONFIG SET requirepass.",
    ),
    spec(
        Command::Fleet,
        "FLEET",
        &["FLEET"],
        "With [cluster] etcd: this proxy's id, the leader's, and every proxy with its client and admin addresses, installed epoch and whether it is alive. Alone: mode standalone.",
    ),
    spec(
        Command::FleetPeer,
        "FLEETPEER",
        &["FLEETPEER [FROM <proxy-id> <admin-addr>]"],
        "With [cluster] etcd: this proxy's id, whether its etcd session is alive and in touch with etcd, its role and installed epoch (what a proxy out of touch with etcd asks the others before it serves a frozen topology). FROM names the asking proxy, which this one then asks too while it is out of touch with etcd.",
    ),
    spec(
        Command::OnLeader,
        "ONLEADER",
        &["ONLEADER <command> [<argument> ...]"],
        "Run the command only if this proxy leads the fleet, else -NOTLEADER (what a proxy sends when it forwards a command to the leader).",
    ),
];

const fn spec(
    command: Command,
    name: &'static str,
    usage: &'static [&'static str],
    summary: &'static str,
) -> Spec {
    Spec {
        command,
        name,
        usage,
        summary,
    }
}

impl Command {
    /// The command named `name` (any case), if the admin port has one.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        COMMANDS
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.command)
    }

    /// Whether it is answered before AUTH (the connection commands, as in Redis).
    pub(crate) fn before_auth(self) -> bool {
        matches!(self, Self::Ping | Self::Auth | Self::Hello | Self::Quit)
    }

    /// Whether only the fleet's leader runs it: it changes the topology, or reads what only
    /// the leader's controller knows (migrations run there). Sent to another proxy of a fleet,
    /// it is forwarded to the leader (see `fleet`).
    pub(crate) fn leader_only(self) -> bool {
        match self {
            Self::AddShard
            | Self::AddReplica
            | Self::DelReplica
            | Self::DelShard
            | Self::DelNode
            | Self::Migrate
            | Self::Migrations
            | Self::Migration
            | Self::Rebalance
            | Self::Failover
            | Self::SetUsers => true,
            Self::Ping
            | Self::Auth
            | Self::Hello
            | Self::Quit
            | Self::Help
            | Self::Commands
            | Self::Topology
            | Self::Fleet
            | Self::FleetPeer
            | Self::OnLeader => false,
        }
    }
}

/// The reply of HELP and COMMANDS: a heading, then each command's forms, each followed by
/// its summary indented.
pub(crate) fn help() -> Reply {
    let mut lines = vec![Reply::Status(
        "redshard admin port. Commands (case-insensitive):".into(),
    )];
    for spec in COMMANDS {
        lines.extend(spec.usage.iter().map(|u| Reply::Status((*u).into())));
        if !spec.summary.is_empty() {
            lines.push(Reply::Status(format!("    {}", spec.summary)));
        }
    }
    Reply::Array(lines)
}

/// A command's arguments after the name, as text.
pub struct Args<'a> {
    /// The command name as given, for messages.
    name: &'a str,
    /// The arguments after the name.
    rest: &'a [String],
}

impl<'a> Args<'a> {
    /// The command name and its arguments.
    pub fn new(name: &'a str, rest: &'a [String]) -> Self {
        Self { name, rest }
    }

    /// `-ERR wrong number of arguments ...; usage: ...`.
    fn usage(&self, usage: &str) -> Reply {
        Reply::err(format!(
            "wrong number of arguments for '{}' command; usage: {usage}",
            self.name.to_ascii_lowercase()
        ))
    }
}

/// A node address argument.
fn addr(text: &str) -> Result<NodeAddr, Reply> {
    NodeAddr::parse(text).map_err(|e| {
        Reply::err(format!(
            "{text:?} is not a node address ({e}); write it as host:port, such as 127.0.0.1:6381"
        ))
    })
}

/// `ADDSHARD <name> <master-addr>`.
pub async fn add_shard(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    let [name, master] = args.rest else {
        return args.usage("ADDSHARD <name> <master-addr>");
    };
    let master = match addr(master) {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    match controller.add_shard(name, &master).await {
        Ok(topology) => Reply::fields(vec![
            ("shard", name.as_str().into()),
            ("master", master.to_string().into()),
            ("epoch", topology.epoch.into()),
        ]),
        Err(e) => Reply::err(e),
    }
}

/// `ADDREPLICA <shard-or-master-addr> <addr>`.
pub async fn add_replica(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    let [shard, replica] = args.rest else {
        return args.usage("ADDREPLICA <shard-or-master-addr> <addr>");
    };
    let replica = match addr(replica) {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    match controller.add_replica(shard, &replica).await {
        Ok(name) => Reply::fields(vec![
            ("shard", name.into()),
            ("replica", replica.to_string().into()),
            ("state", "syncing".into()),
        ]),
        Err(e) => Reply::err(e),
    }
}

/// `DELREPLICA <addr>`.
pub async fn del_replica(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    let [replica] = args.rest else {
        return args.usage("DELREPLICA <addr>");
    };
    let replica = match addr(replica) {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    match controller.remove_replica(&replica).await {
        Ok(name) => Reply::fields(vec![
            ("shard", name.into()),
            ("removed", replica.to_string().into()),
            ("role", "replica".into()),
        ]),
        Err(e) => Reply::err(e),
    }
}

/// `DELSHARD <shard-or-master-addr>`.
pub async fn del_shard(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    let [shard] = args.rest else {
        return args.usage("DELSHARD <shard-or-master-addr>");
    };
    removed_shard(controller, shard).await
}

async fn removed_shard(controller: &Arc<Controller>, shard: &str) -> Reply {
    match controller.remove_shard(shard).await {
        Ok((name, master)) => Reply::fields(vec![
            ("shard", name.into()),
            ("removed", master.to_string().into()),
            ("role", "master".into()),
        ]),
        Err(e) => Reply::err(e),
    }
}

/// `DELNODE <addr>`: DELREPLICA for a replica, DELSHARD for a master.
pub async fn del_node(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    let [node] = args.rest else {
        return args.usage("DELNODE <addr>");
    };
    let node = match addr(node) {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    let role = controller
        .state()
        .router
        .load()
        .topology()
        .find_node(&node)
        .map(|(_, role)| role);
    match role {
        None => Reply::err(redshard_control::NodeError::NoNode(node)),
        Some(NodeRole::Master) => removed_shard(controller, node.as_str()).await,
        Some(NodeRole::Replica) => del_replica(controller, &Args::new("DELNODE", args.rest)).await,
    }
}

/// `SETUSERS <user-line> [...]`.
pub async fn set_users(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    if args.rest.is_empty() {
        return args.usage("SETUSERS <user-line> [<user-line> ...]");
    }
    match controller.set_users(args.rest.to_vec()).await {
        Ok(topology) => Reply::fields(vec![
            (
                "users",
                Reply::Int(i64::try_from(args.rest.len()).unwrap_or(i64::MAX)),
            ),
            (
                "epoch",
                Reply::Int(i64::try_from(topology.epoch).unwrap_or(i64::MAX)),
            ),
        ]),
        Err(e) => Reply::err(e),
    }
}

/// A migration error, with the next step.
fn migrate_error(e: &MigrateError) -> Reply {
    match e {
        MigrateError::NoShard(_) => Reply::err(format!(
            "{e}: name a shard by its name or its master's address (TOPOLOGY lists them)"
        )),
        MigrateError::SameShard => Reply::err(format!("{e}; name two different shards")),
        MigrateError::NoneRunning => Reply::err(format!("{e}; MIGRATIONS lists them")),
        _ => Reply::err(format!("{e}; TOPOLOGY shows which shard owns which slots")),
    }
}

/// `MIGRATE <from> <to> <count>` or `MIGRATE <from> <to> SLOTS <range> ...`.
pub async fn migrate(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    const USAGE: &str = "MIGRATE <from> <to> <count> | MIGRATE <from> <to> SLOTS <range> ...";
    let (from, to, what) = match args.rest {
        [from, to, what @ ..] if !what.is_empty() => (from, to, what),
        _ => return args.usage(USAGE),
    };
    let slots = if what[0].eq_ignore_ascii_case("SLOTS") {
        if what.len() < 2 {
            return args.usage(USAGE);
        }
        let mut slots = Vec::with_capacity(what.len() - 1);
        for text in &what[1..] {
            match text.parse::<SlotRange>() {
                Ok(range) => slots.push(range),
                Err(e) => {
                    return Reply::err(format!(
                        "{e}; write slots as 0-99 or 7000, each within 0-16383"
                    ))
                }
            }
        }
        match controller.migrate(from, to, slots.clone()).await {
            Ok(()) => slots,
            Err(e) => return migrate_error(&e),
        }
    } else {
        let [count] = what else {
            return args.usage(USAGE);
        };
        let count = match count.parse::<usize>() {
            Ok(n) if (1..=redshard_config::SLOT_COUNT).contains(&n) => n,
            _ => {
                return Reply::err(format!(
                    "{count:?} is not a slot count; give a number of slots from 1 to 16384, or SLOTS <range> ..."
                ))
            }
        };
        match controller.migrate_count(from, to, count).await {
            Ok(slots) => slots,
            Err(e) => return migrate_error(&e),
        }
    };
    let count: usize = slots.iter().map(SlotRange::len).sum();
    let text: Vec<String> = slots.iter().map(ToString::to_string).collect();
    Reply::fields(vec![
        ("from", from.as_str().into()),
        ("to", to.as_str().into()),
        ("slots", text.join(",").into()),
        ("slot-count", count.into()),
        ("state", "queued".into()),
        ("persisted", persisted(controller, true)),
    ])
}

/// `MIGRATION CANCEL`.
pub async fn migration(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    match args.rest {
        [sub] if sub.eq_ignore_ascii_case("CANCEL") => match controller.cancel_migrations().await {
            Ok(()) => Reply::ok(),
            Err(e) => migrate_error(&e),
        },
        _ => args.usage("MIGRATION CANCEL"),
    }
}

/// `REBALANCE [USE-EMPTY-MASTERS] [THRESHOLD <percent>] [DRY-RUN]`.
pub async fn rebalance(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    let mut options = Options::default();
    let mut dry_run = false;
    let mut rest = args.rest.iter();
    while let Some(word) = rest.next() {
        match word.to_ascii_uppercase().as_str() {
            "USE-EMPTY-MASTERS" => options.use_empty_masters = true,
            "DRY-RUN" => dry_run = true,
            "THRESHOLD" => {
                match rest.next().map(|t| t.parse::<f64>()) {
                    Some(Ok(pct)) if pct.is_finite() && pct >= 0.0 => options.threshold_pct = pct,
                    _ => return Reply::err("THRESHOLD needs a percentage such as 2 or 0.5"),
                }
            }
            _ => {
                return Reply::err(format!(
                    "unknown REBALANCE option {word:?}; usage: REBALANCE [USE-EMPTY-MASTERS] [THRESHOLD <percent>] [DRY-RUN]"
                ))
            }
        }
    }
    let busy = controller
        .migrations()
        .iter()
        .any(|m| matches!(m.state, MigrationState::Queued | MigrationState::Running));
    if busy && !dry_run {
        return Reply::err("a migration is queued or running; wait until it is done (MIGRATIONS) or cancel it (MIGRATION CANCEL), then rebalance");
    }
    let table = controller.state().router.load();
    let topology = Arc::clone(table.topology());
    drop(table);
    let plan = match rebalance::plan(&topology, options) {
        Ok(plan) => plan,
        Err(e) => return Reply::err(e),
    };
    let name = |id| topology.shard(id).map_or("?", |s| s.name.as_str());
    let moves: Vec<Reply> = plan
        .moves
        .iter()
        .map(|m| {
            let slots: Vec<String> = m.slots.iter().map(ToString::to_string).collect();
            Reply::fields(vec![
                ("from", name(m.from).into()),
                ("to", name(m.to).into()),
                ("slot-count", m.count().into()),
                ("slots", slots.join(",").into()),
            ])
        })
        .collect();
    let shares: Vec<Reply> = plan
        .shares
        .iter()
        .map(|(id, share)| {
            Reply::fields(vec![
                ("shard", name(*id).into()),
                (
                    "slots-now",
                    topology
                        .slots_of(*id)
                        .iter()
                        .map(SlotRange::len)
                        .sum::<usize>()
                        .into(),
                ),
                ("slots-after", (*share).into()),
            ])
        })
        .collect();
    let status = if plan.moves.is_empty() {
        "balanced"
    } else if dry_run {
        "planned"
    } else {
        // One change: the whole plan is persisted with the topology, or nothing is queued.
        let moves = plan
            .moves
            .iter()
            .map(|m| Migration {
                from: m.from,
                to: m.to,
                slots: m.slots.clone(),
            })
            .collect();
        if let Err(e) = controller.queue(moves).await {
            return Reply::err(format!(
                "the plan of {} moves was not queued: {e}. TOPOLOGY shows the slots; MIGRATIONS what runs",
                plan.moves.len()
            ));
        }
        "queued"
    };
    Reply::fields(vec![
        ("status", status.into()),
        ("threshold-pct", Reply::float(options.threshold_pct)),
        ("shards", Reply::Array(shares)),
        ("moves", Reply::Array(moves)),
        ("persisted", persisted(controller, status == "queued")),
    ])
}

/// Whether what was queued is saved with the topology (`topology_file`), so a restart
/// resumes it: `yes`, `no`, or nil when nothing was queued.
fn persisted(controller: &Controller, queued: bool) -> Reply {
    if !queued {
        return Reply::Nil;
    }
    (if controller.persists() { "yes" } else { "no" }).into()
}

/// `FAILOVER <shard-or-master-addr> [TO <replica-addr>]`.
pub async fn failover(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    const USAGE: &str = "FAILOVER <shard-or-master-addr> [TO <replica-addr>]";
    let (shard, to) = match args.rest {
        [shard] => (shard, None),
        [shard, kw, to] if kw.eq_ignore_ascii_case("TO") => match addr(to) {
            Ok(a) => (shard, Some(a)),
            Err(reply) => return reply,
        },
        _ => return args.usage(USAGE),
    };
    let (name, old) = {
        let table = controller.state().router.load();
        match find_shard(table.topology(), shard) {
            Some(s) => (s.name.clone(), s.master.clone()),
            None => {
                return Reply::err(format!(
                    "no shard {shard}: name a shard by its name or its master's address (TOPOLOGY lists them)"
                ))
            }
        }
    };
    if let Some(to) = &to {
        let table = controller.state().router.load();
        let state = find_shard(table.topology(), shard)
            .and_then(|s| s.replica(to))
            .map(|r| r.state);
        match state {
            None => {
                return Reply::err(format!(
                    "{to} is not a replica of shard {name}; TOPOLOGY lists its replicas"
                ))
            }
            Some(ReplicaState::InSync) => {}
            Some(other) => {
                return Reply::err(format!(
                    "replica {to} is {other}, not in-sync; wait until TOPOLOGY shows it in-sync, or fail over to another replica"
                ))
            }
        }
    }
    match controller.manual_failover(shard, to.as_ref()).await {
        Ok(new) => Reply::fields(vec![
            ("shard", name.into()),
            ("old-master", old.to_string().into()),
            ("new-master", new.to_string().into()),
        ]),
        Err(e) => Reply::err(e),
    }
}

/// `TOPOLOGY`.
pub async fn topology(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    if !args.rest.is_empty() {
        return args.usage("TOPOLOGY");
    }
    status::topology(controller).await
}

/// `MIGRATIONS`.
pub fn migrations(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    if !args.rest.is_empty() {
        return args.usage("MIGRATIONS");
    }
    status::migrations(controller)
}

/// `FLEET`: the proxies of the fleet and its leader, from etcd; `mode standalone` for a proxy
/// alone.
pub async fn fleet(
    controller: &Arc<Controller>,
    fleet: Option<&super::fleet::Fleet>,
    args: &Args<'_>,
) -> Reply {
    if !args.rest.is_empty() {
        return args.usage("FLEET");
    }
    let epoch = controller.state().router.load().topology().epoch;
    match fleet {
        Some(fleet) => fleet.status(epoch).await,
        None => super::fleet::standalone(epoch),
    }
}

/// `FLEETPEER [FROM <proxy-id> <admin-addr>]`: this proxy's answer to another proxy of its
/// fleet (`id`, `session` alive/lost, `contact` yes/no, `role`, `epoch`); with FROM, the
/// asker is asked back while this proxy is out of touch with etcd. See
/// [`redshard_control::peers`].
pub fn fleet_peer(controller: &Arc<Controller>, args: &Args<'_>) -> Reply {
    let from = match args.rest {
        [] => None,
        [from, id, admin] if from.eq_ignore_ascii_case("FROM") => Some((id, admin)),
        _ => return args.usage("FLEETPEER [FROM <proxy-id> <admin-addr>]"),
    };
    let Some(fleet) = controller.fleet() else {
        return Reply::err(
            "FLEETPEER is asked by the proxies of a fleet ([cluster] etcd); this proxy is in none",
        );
    };
    if let Some((id, admin)) = from {
        if let Err(e) = NodeAddr::parse(admin) {
            return Reply::err(format!("{admin:?} is not an admin address ({e})"));
        }
        fleet.heard_from(id, admin);
    }
    let epoch = controller.state().router.load().topology().epoch;
    let status = fleet.peer_status(epoch);
    let word = |yes: bool, y: &str, n: &str| Reply::from(if yes { y } else { n });
    Reply::fields(vec![
        ("id", status.id.into()),
        ("session", word(status.session, "alive", "lost")),
        ("contact", word(status.contact, "yes", "no")),
        ("role", status.role.into()),
        ("epoch", status.epoch.into()),
    ])
}
