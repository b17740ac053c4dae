//! Deciding what happens to one request: forward, split, fan out, answer locally, or refuse.
//!
//! [`dispatch`] runs while the request's arguments are still borrowed from the read buffer and
//! returns an [`Action`]; [`finish`] then sends the request's original bytes where the action
//! says. Every request reserves exactly one entry in the reply queue, in request order.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::merge::MergePlan;
use super::{acl, admin, client, info, local, pubsub, scan, split, txn, Ctx};

use redshard_config::{KeylessScripts, ReadFrom};

use crate::backend::acl::BackendUser;
use crate::backend::{AfterMaster, Dest, LaneHandle, LaneRequest, Node};
use crate::mirror::effect::{self, Effect, Prepared};
use crate::mirror::{Follow, Job};
use crate::replies::{NodeSections, ReplyTo, TxAnswer};
use crate::router::{send_master, send_master_as, GateState, RoutingTable, ShardRoute};
use crate::state::ProxyState;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{self, CommandId, CommandSpec, Flags, Route};
use redshard_protocol::resp::{encode, Args, Protocol, RequestScanner};

/// What to do with a request's bytes once its arguments are no longer borrowed.
#[derive(Debug)]
pub(crate) enum Action {
    /// Its reply entry is already reserved (a local answer, an error, or split parts sent).
    Done,
    /// Send the original bytes to the master of shard `shard`, on the lane of `slot`.
    Forward {
        /// Index into the routing table's shards.
        shard: usize,
        /// Picks the lane.
        slot: u16,
        /// How the write is sent and mirrored, when the shard has in-sync replicas.
        mirror: Option<Prepared>,
    },
    /// A read under `[mirror] read_from = "replica" | "prefer-replica"`: send the original
    /// bytes to an in-sync replica of shard `shard` (its master when it has none).
    Read {
        /// Index into the routing table's shards.
        shard: usize,
        /// Picks the lane.
        slot: u16,
    },
    /// Send the original bytes to every master and merge the replies; `write` mirrors them.
    FanOut(MergePlan, bool),
    /// Not now: a shard it needs is paused (failover, cut-over). The request stays in the
    /// read buffer until the gate opens or the wait times out.
    Pause(tokio::sync::watch::Receiver<GateState>),
    /// Not now: a CLIENT PAUSE holds it. The request stays in the read buffer until the
    /// pause changes (UNPAUSE, another PAUSE) or ends at the instant given.
    ClientPause(
        tokio::time::Instant,
        tokio::sync::watch::Receiver<Option<crate::clients::Pause>>,
    ),
    /// Not now: these keys (database, name) of migrating slots must first leave their
    /// source. The request stays in the read buffer until they have.
    Migrate(Vec<(u16, Bytes)>),
    /// Not now: dispatch it again once every earlier reply is in (it goes to the private lane,
    /// which must not overtake the shared lanes). The request stays in the read buffer.
    HoldBack,
    /// Inside MULTI: keep the bytes (or their rewrite) for EXEC and answer `+QUEUED`.
    Queue(Option<Prepared>),
    /// Send the original bytes on the client's private lane to shard `shard`'s master.
    Private {
        /// Index into the routing table's shards.
        shard: usize,
        /// The slot of its keys: the replicas get its effect on that slot's lane.
        slot: u16,
        /// How it is mirrored, for a write (blocking pops).
        mirror: Option<Prepared>,
        /// Whether it is a blocking command (its client counts as blocked until answered).
        blocking: bool,
    },
    /// EXEC: send MULTI, the queued requests and the client's EXEC, as one request, to
    /// shard `shard`'s master: on the shared lane of `slot` (so it is ordered with every other
    /// write of the slot), or on the private lane after a WATCH; the client gets EXEC's reply.
    Exec {
        /// Index into the routing table's shards.
        shard: usize,
        /// The transaction's slot.
        slot: u16,
        /// The transaction's requests and their effects.
        queued: Vec<(Bytes, Effect)>,
        /// A WATCH ran on the private lane: it must still be the same connection.
        watched: bool,
        /// A script is queued (a restricted client's transaction runs as its level's user).
        scripts: bool,
        /// The commands the proxy answers, by position (see [`txn::Answer`]).
        answers: Vec<(usize, txn::Answer)>,
    },
}

impl Action {
    /// Queues the reply of `error` and returns `Done`.
    pub(crate) fn error(ctx: &Ctx, error: ClientError) -> Self {
        ctx.queue.push_ready(error.to_reply());
        Self::Done
    }

    /// Queues `reply` and returns `Done`.
    pub(crate) fn reply(ctx: &Ctx, reply: Bytes) -> Self {
        ctx.queue.push_ready(reply);
        Self::Done
    }
}

/// Classifies one request and does everything that needs its arguments.
pub(crate) fn dispatch(ctx: &mut Ctx, table: &RoutingTable, args: Args<'_>) -> Action {
    let spec = match command::resolve(&args) {
        Ok(spec) => spec,
        Err(e) if e.command() == Some(CommandId::Exec) => {
            // Redis answers a malformed EXEC by discarding the transaction (and the WATCH),
            // in MULTI or not.
            return txn::exec_abort(ctx, e);
        }
        Err(e) => {
            txn::abort_with(ctx);
            return Action::error(ctx, ClientError::Command(e));
        }
    };
    ctx.current_cmd = Some(spec);
    ctx.client.set_command(spec);
    if !ctx.authenticated && !spec.flags.contains(Flags::NO_AUTH) {
        return Action::error(ctx, ClientError::NoAuth);
    }
    if !acl::refresh(ctx) {
        // Its user was deleted: the connection closes without an answer, as in Redis.
        ctx.current_cmd = None;
        return Action::Done;
    }
    if let Err(refusal) = acl::check(ctx, spec, args) {
        txn::abort_with(ctx);
        return Action::error(ctx, refusal);
    }
    if is_script(spec.id) {
        infer_script_keys(ctx, spec, args);
    } else if !ctx.script_keys.is_empty() {
        ctx.script_keys.clear();
    }
    if spec.id == CommandId::ScriptLoad && args.len() == 3 {
        ctx.state.script_keys.learn(args.get(2));
    }
    if ctx.protocol == Protocol::Resp2
        && ctx.pubsub.as_deref().is_some_and(pubsub::PubSub::is_active)
    {
        if spec.id == CommandId::Ping {
            return pubsub::subscribed_ping(ctx, args);
        }
        if !pubsub::allowed_while_subscribed(spec.id) {
            return Action::error(
                ctx,
                ClientError::NotAllowedWhileSubscribed { command: spec.name },
            );
        }
    }
    if ctx.monitoring && admin::monitor_refuses(spec) {
        return Action::error(ctx, ClientError::MonitorKeyspace);
    }
    // The one cost of MONITOR while nobody monitors: this relaxed load.
    if ctx.state.monitors.active() && spec.route != Route::Forbidden {
        ctx.monitor_feed = true;
    }
    if let Some((until, changes)) = client::held_by_pause(ctx, spec) {
        return Action::ClientPause(until, changes);
    }
    if let Some(action) = gate_check(ctx, table, spec, args) {
        return action;
    }
    if let Some(action) = migration_check(ctx, table, spec, args) {
        return action;
    }
    if ctx.tracking.is_some() {
        super::tracking::on_command(ctx, spec, args);
    }
    // QUIT and RESET run at once inside MULTI too, as in Redis.
    if ctx.tx.is_some() && !matches!(spec.id, CommandId::Quit | CommandId::Reset) {
        return txn::inside_multi(ctx, table, spec, args);
    }
    if let Some(action) = txn::outside_multi(ctx, table, spec, args) {
        return action;
    }
    match spec.route {
        Route::Keyed => keyed(ctx, table, spec, args),
        Route::Split(kind) => split::split(ctx, table, spec, kind, args),
        Route::Local => local::handle(ctx, table, spec, args),
        Route::FanOut(merge) => Action::FanOut(merge.into(), is_mirrored(spec)),
        Route::Flush if ctx.state.config.allow_flush => Action::FanOut(MergePlan::AllOk, true),
        Route::Flush => Action::error(ctx, ClientError::FlushDisabled { command: spec.name }),
        Route::Forbidden => Action::error(ctx, ClientError::Forbidden { command: spec.name }),
        Route::Dedicated => unsupported(ctx, spec),
        Route::Scan => scan::scan(ctx, table, args),
        Route::PubSub => pubsub::handle(ctx, table, spec, args),
    }
}

fn unsupported(ctx: &Ctx, spec: &CommandSpec) -> Action {
    Action::error(ctx, ClientError::Unsupported { command: spec.name })
}

/// A command routed by its keys, which must all hash to one slot.
fn keyed(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &'static CommandSpec,
    args: Args<'_>,
) -> Action {
    if let Err(e) = spec.key_indices(&args, &mut ctx.keys) {
        return Action::error(ctx, ClientError::Command(e));
    }
    let Some((&first, rest)) = ctx.keys.split_first() else {
        if let Some(first) = ctx.script_keys.first() {
            // A script called with no key whose body names its keys as literals.
            let slot = table.slot_of(first);
            if ctx.script_keys.iter().any(|k| table.slot_of(k) != slot) {
                return Action::error(ctx, ClientError::CrossSlot);
            }
            let shard = table.shard_of(slot);
            return Action::Forward {
                shard,
                slot: slot.get(),
                mirror: plan(table, shard, spec, &args),
            };
        }
        // No key: any master can run it (TIME, LASTSAVE, EVAL with no key ...).
        let shard = keyless_shard(table);
        return Action::Forward {
            shard,
            slot: 0,
            mirror: plan(table, shard, spec, &args),
        };
    };
    let slot = table.slot_of(args.get(first));
    if rest.iter().any(|&k| table.slot_of(args.get(k)) != slot) {
        return Action::error(ctx, ClientError::CrossSlot);
    }
    if !spec.extra_keys_in_slot(&args, slot) {
        return Action::error(ctx, ClientError::SortPatternCrossSlot);
    }
    let shard = table.shard_of(slot);
    if ctx.state.config.mirror.read_from != ReadFrom::Master
        && spec.flags.contains(Flags::READONLY)
        && !is_mirrored(spec)
        && !table.is_migrating(slot)
        // A tracking client reads the master, whose changes its invalidations follow (a
        // replica could still answer the old value after the invalidation).
        && ctx.tracking.is_none()
    {
        return Action::Read {
            shard,
            slot: slot.get(),
        };
    }
    Action::Forward {
        shard,
        slot: slot.get(),
        mirror: plan(table, shard, spec, &args),
    }
}

/// The node that serves a read of shard `route` for client `client` under `read_from`: an
/// in-sync replica still mirrored to (the same one for a client, so its reads never go back
/// in time across replicas), with `prefer-replica` only one known to be up; else the master.
fn read_node<'a>(ctx: &Ctx, route: &'a ShardRoute) -> &'a std::sync::Arc<Node> {
    let prefer_up = ctx.state.config.mirror.read_from == ReadFrom::PreferReplica;
    let candidates: smallvec::SmallVec<[&std::sync::Arc<Node>; 4]> = route
        .replica_nodes()
        .filter(|node| {
            !prefer_up || ctx.state.health.status(node.addr()) == crate::health::NodeStatus::Up
        })
        .collect();
    if candidates.is_empty() {
        return &route.master;
    }
    let pick = usize::try_from(ctx.client.id).unwrap_or(0) % candidates.len();
    candidates[pick]
}

/// Whether `spec` changes data, so its effect must reach the replicas: writes, scripts and
/// functions, and the script cache (so `EVALSHA` finds its script on a replica).
pub(crate) fn is_mirrored(spec: &CommandSpec) -> bool {
    spec.flags.contains(Flags::WRITE)
        || (spec.flags.contains(Flags::MAY_REPLICATE) && !spec.flags.contains(Flags::PUBSUB))
        || matches!(spec.id, CommandId::ScriptLoad | CommandId::ScriptFlush)
}

/// How a request for shard `shard` is sent and mirrored: `None` when it is not a write or
/// the shard has no in-sync replica.
pub(crate) fn plan(
    table: &RoutingTable,
    shard: usize,
    spec: &CommandSpec,
    args: &Args<'_>,
) -> Option<Prepared> {
    let mirror = &table.shards()[shard].mirror;
    if mirror.is_empty() && !mirror.is_inert() {
        return None;
    }
    plan_blocking(table, shard, spec, args)
}

/// A write under Redis replication: sent as the client wrote it (Redis replicates it), and
/// marked a write ([`Effect::Same`]) when its reply waits for the replicas' acknowledgement.
fn acknowledged(route: &ShardRoute) -> Option<Prepared> {
    (route.acks > 0).then_some(Prepared {
        request: None,
        effect: Effect::Same,
    })
}

/// The replicas a request's reply waits for (`WAIT`): for a write under Redis replication
/// with `sync` acknowledgement, the shard's in-sync replicas and any other replica streaming
/// from its master ([`ShardRoute::wait_for`]); else none.
fn acks_of(route: &ShardRoute, prepared: Option<&Prepared>) -> u32 {
    match prepared {
        Some(p) if p.effect != Effect::Skip => route.wait_for(),
        _ => 0,
    }
}

/// How a blocking command is mirrored: like [`plan`], but prepared even while the shard has
/// no in-sync replica, since one may be in sync by the time the master serves the command.
pub(crate) fn plan_blocking(
    table: &RoutingTable,
    shard: usize,
    spec: &CommandSpec,
    args: &Args<'_>,
) -> Option<Prepared> {
    let route = &table.shards()[shard];
    if !is_mirrored(spec) {
        return None;
    }
    if route.mirror.is_inert() {
        return acknowledged(route);
    }
    Some(effect::prepare(spec, args, now_ms()))
}

/// The proxy's wall clock in Unix milliseconds, for absolute expiry times.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The backend user a request runs as: a script (EVAL, FCALL and their variants) of a
/// `read-only` or `no-dangerous` client runs as its level's user, so that its `redis.call()`s
/// meet the node's ACL, and one called with no key (its keys were just extracted into
/// `ctx.keys`) as the level's user without keys under `keyless_scripts = "no-keys"`: the
/// proxy could not route its keys, so Redis refuses every key it touches rather than let it
/// answer from one master's part of the keyspace. Everything else the proxy checked itself.
fn script_user(ctx: &Ctx) -> BackendUser {
    if !ctx.current_cmd.is_some_and(|spec| is_script(spec.id)) {
        return BackendUser::Client;
    }
    let user = BackendUser::of(ctx.access);
    let backend = &ctx.state.config.backend;
    if ctx.keys.is_empty()
        && ctx.script_keys.is_empty()
        && backend.manage_acl
        && backend.keyless_scripts == KeylessScripts::NoKeys
    {
        user.without_keys()
    } else {
        user
    }
}

/// Sets `ctx.script_keys` for the script request `spec` called with no key: for `EVAL` /
/// `EVAL_RO`, the keys its body names as literals when the text shows them all
/// ([`script_keys::literal_keys`](redshard_protocol::command::script_keys::literal_keys)),
/// remembered for `EVALSHA`; for `EVALSHA` / `EVALSHA_RO`, those remembered for its SHA1
/// ([`crate::script_keys`]); else none. Those keys then route it, lock it during a migration
/// and give it its level's user with keys, as if it had declared them.
fn infer_script_keys(ctx: &mut Ctx, spec: &CommandSpec, args: Args<'_>) {
    ctx.script_keys.clear();
    if args.len() < 3 || redshard_protocol::resp::parse_i64(args.get(2)) != Some(0) {
        return;
    }
    match spec.id {
        CommandId::Eval | CommandId::EvalRo => {
            ctx.script_keys = ctx.state.script_keys.learn(args.get(1));
        }
        CommandId::Evalsha | CommandId::EvalshaRo => {
            if let Some(keys) = ctx.state.script_keys.keys_of(args.get(1)) {
                ctx.script_keys.extend(keys.iter().cloned());
            }
        }
        _ => {}
    }
}

/// Where the reply of a script called with no key goes (run as a user without keys): to the
/// client as it is, unless the node refused a key the script touched, which the client gets
/// as [`ClientError::KeylessScriptTouchedKey`], saying how to fix it.
fn explained_keyless(slot: crate::replies::ReplyTo) -> Dest {
    Dest::on_reply(move |reply| async move {
        let reply = if is_key_refusal(&reply) {
            ClientError::KeylessScriptTouchedKey {
                node: reply[1..reply.len().saturating_sub(2).max(1)].into(),
            }
            .to_reply()
        } else {
            reply
        };
        slot.deliver(reply);
    })
}

/// Whether `reply` is Redis's refusal of a key a script's ACL user may not access.
fn is_key_refusal(reply: &[u8]) -> bool {
    const REFUSAL: &[u8] = b"can't access at least one of the keys";
    reply.first() == Some(&b'-') && reply.windows(REFUSAL.len()).any(|w| w == REFUSAL)
}

/// Whether the command `id` runs a Lua script or function.
pub(super) fn is_script(id: CommandId) -> bool {
    matches!(
        id,
        CommandId::Eval
            | CommandId::Evalsha
            | CommandId::EvalRo
            | CommandId::EvalshaRo
            | CommandId::Fcall
            | CommandId::FcallRo
    )
}

/// While anyone monitors, the reply of a request that runs scripts (`script`) on `master`
/// waits until their lines are shown (see `crate::monitor`): returns the destination to
/// send it with, and the marker to send right behind it on the same connection. Else `dest`
/// as it is.
fn shown_first(
    ctx: &Ctx,
    master: &Node,
    script: bool,
    (dest, group): (Dest, bool),
) -> (Dest, Option<LaneRequest>) {
    let mark = if script && ctx.state.monitors.active() {
        ctx.state.monitors.mark_after_script(master.addr())
    } else {
        None
    };
    let Some((n, seen)) = mark else {
        return (dest, None);
    };
    let (echo_tx, echo) = tokio::sync::oneshot::channel();
    let mut marker = LaneRequest::new(
        crate::backend::node_monitor::marker_request(n),
        Dest::Signal(echo_tx),
        ctx.protocol,
    );
    marker.db = ctx.db;
    let limit = ctx.state.live.now().backend.response_timeout;
    let state = Arc::clone(&ctx.state);
    let forget = move || state.monitors.forget_mark(n);
    let held = crate::monitor::held_until_shown(dest, group, seen, echo, limit, forget);
    (held, Some(marker))
}

/// The keys of the request in migrating slots, which must leave their source before it is
/// sent (see `redshard_control::migrate`). Costs one load while nothing migrates.
fn migration_check(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &CommandSpec,
    args: Args<'_>,
) -> Option<Action> {
    if !table.has_migrations() {
        return None;
    }
    if let Some(error) = ctx.migration_failed.take() {
        return Some(Action::error(ctx, ClientError::MigrationFailed { error }));
    }
    if ctx.migrated || matches!(spec.route, Route::Local | Route::PubSub) {
        return None;
    }
    let mut keys = smallvec::SmallVec::<[usize; 8]>::new();
    if spec.key_indices(&args, &mut keys).is_err() {
        return None;
    }
    // MOVE and COPY ... DB n write the key in another database too, which must not get a
    // copy from the source after them.
    let other_db = match spec.id {
        CommandId::Move => redshard_protocol::resp::parse_i64(args.get(2)),
        CommandId::Copy => (3..args.len().saturating_sub(1))
            .find(|&i| args.get(i).eq_ignore_ascii_case(b"DB"))
            .and_then(|i| redshard_protocol::resp::parse_i64(args.get(i + 1))),
        _ => None,
    }
    .and_then(|db| u16::try_from(db).ok());
    let mut moving: Vec<(u16, Bytes)> = Vec::new();
    for (n, &k) in keys.iter().enumerate() {
        let key = args.get(k);
        if !table.is_migrating(table.slot_of(key)) {
            continue;
        }
        moving.push((ctx.db, Bytes::copy_from_slice(key)));
        // MOVE's key, COPY's destination (its second key).
        let elsewhere = match spec.id {
            CommandId::Move => n == 0,
            CommandId::Copy => n == 1,
            _ => false,
        };
        if let (true, Some(db)) = (elsewhere, other_db) {
            if db != ctx.db {
                moving.push((db, Bytes::copy_from_slice(key)));
            }
        }
    }
    for key in &ctx.script_keys {
        if table.is_migrating(table.slot_of(key)) {
            moving.push((ctx.db, key.clone()));
        }
    }
    (!moving.is_empty()).then_some(Action::Migrate(moving))
}

/// When a shard the request needs is paused or down: `Pause` (wait for it) or the error.
/// Costs one atomic load while every gate is open.
///
/// A request waits only for the shards that hold its data: one without keys (TIME, `EVAL`
/// with no key, a transaction of keyless commands) runs on any shard whose gate is open
/// ([`keyless_shard`]), and what the proxy answers itself (MULTI, DISCARD, EXEC outside a
/// transaction) waits for none, so that MULTI never fails where Redis would not.
fn gate_check(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &CommandSpec,
    args: Args<'_>,
) -> Option<Action> {
    if !table.any_gate_closed() {
        return None;
    }
    let shards: Vec<usize> = match spec.route {
        Route::Local | Route::PubSub => return None,
        // Every master must see it; only SCRIPT LOAD can do without one that is down.
        Route::FanOut(_) | Route::Flush | Route::Scan => fan_out_shards(table, spec.id),
        _ if ctx.tx.is_some() && spec.id != CommandId::Exec => return None,
        // Answered by the proxy (MULTI, and the errors of EXEC / DISCARD without MULTI).
        _ if matches!(
            spec.id,
            CommandId::Multi | CommandId::Exec | CommandId::Discard
        ) && ctx.tx.is_none() =>
        {
            return None
        }
        _ if spec.id == CommandId::Unwatch && ctx.watch.is_none() => return None,
        _ => {
            let mut keys = smallvec::SmallVec::<[usize; 8]>::new();
            let _ = spec.key_indices(&args, &mut keys);
            let mut shards: Vec<usize> = keys
                .iter()
                .map(|&k| table.shard_of(table.slot_of(args.get(k))))
                .chain(
                    ctx.script_keys
                        .iter()
                        .map(|k| table.shard_of(table.slot_of(k))),
                )
                .collect();
            if matches!(spec.id, CommandId::Exec | CommandId::Unwatch) {
                let slot = ctx.tx.as_ref().and_then(|tx| tx.slot()).or(ctx.watch);
                shards.push(slot.map_or_else(|| keyless_shard(table), |s| table.shard_of(s)));
            }
            if shards.is_empty() {
                shards.push(keyless_shard(table));
            }
            shards
        }
    };
    for shard in shards {
        let route = &table.shards()[shard];
        let error = match route.gate.state() {
            GateState::Open => continue,
            GateState::Down if route.gate.offline() => ClientError::FleetSessionLost,
            GateState::Down => ClientError::ShardDown {
                shard: route.name.clone(),
            },
            GateState::Paused if ctx.pause_expired => ClientError::ShardFailingOver {
                shard: route.name.clone(),
            },
            GateState::Paused => return Some(Action::Pause(route.gate.subscribe())),
        };
        if spec.id == CommandId::Exec {
            // As in Redis Cluster, an EXEC refused before it ran discards the transaction:
            // the client's next commands must not be queued into a transaction it was told
            // had failed.
            txn::discard(ctx);
        }
        return Some(Action::error(ctx, error));
    }
    None
}

/// The shard that runs a request without keys (TIME, LASTSAVE, `EVAL` with no key, COMMAND
/// DOCS, a transaction of keyless commands): the first one whose gate is open, so that it
/// never waits for, or fails with, a shard that holds none of its data; else the first paused
/// one (it waits there), else the first. Costs one atomic load while every gate is open.
pub(crate) fn keyless_shard(table: &RoutingTable) -> usize {
    if !table.any_gate_closed() {
        return 0;
    }
    let shards = table.shards();
    let first = |wanted: GateState| shards.iter().position(|r| r.gate.state() == wanted);
    first(GateState::Open)
        .or_else(|| first(GateState::Paused))
        .unwrap_or(0)
}

/// Whether the fanned-out command `id` is sent only to the shards that have a master, not
/// refused while one has none: SCRIPT LOAD, whose reply (the SHA) is the same from any
/// master. A master that comes back has lost its script cache anyway, so clients already
/// handle `NOSCRIPT` by loading again (every Redis client's EVALSHA helper does).
fn skips_down_shards(id: CommandId) -> bool {
    id == CommandId::ScriptLoad
}

/// The shards a fanned-out command `id` is sent to: all of them, or for SCRIPT LOAD those
/// whose gate is not down (all of them if every one is).
fn fan_out_shards(table: &RoutingTable, id: CommandId) -> Vec<usize> {
    let all = 0..table.shards().len();
    if !skips_down_shards(id) || !table.any_gate_closed() {
        return all.collect();
    }
    let up: Vec<usize> = all
        .clone()
        .filter(|&i| table.shards()[i].gate.state() != GateState::Down)
        .collect();
    if up.is_empty() {
        all.collect()
    } else {
        up
    }
}

/// XREAD / XREADGROUP with a BLOCK option block like BLPOP and need a dedicated connection.
pub(crate) fn is_blocking_read(spec: &CommandSpec, args: Args<'_>) -> bool {
    matches!(spec.id, CommandId::Xread | CommandId::Xreadgroup)
        && args
            .iter()
            .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
            .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

/// Sends the request's bytes where `action` says.
pub(crate) fn finish(ctx: &mut Ctx, table: &RoutingTable, action: Action, bytes: Bytes) {
    match action {
        Action::Done => {}
        Action::Forward {
            shard,
            slot,
            mirror,
        } => {
            if ctx
                .current_cmd
                .is_some_and(|spec| matches!(spec.id, CommandId::Eval | CommandId::EvalRo))
            {
                load_everywhere(table, &bytes);
            }
            let reply = ctx.queue.reserve();
            let (bytes, effect) = match mirror {
                Some(p) => (p.request.unwrap_or(bytes), Some(p.effect)),
                None => (bytes, None),
            };
            let user = script_user(ctx);
            let dest = if user.has_keys() {
                reply.into()
            } else {
                explained_keyless(reply)
            };
            let route = &table.shards()[shard];
            let script = ctx.current_cmd.is_some_and(|spec| is_script(spec.id));
            let (dest, marker) = shown_first(ctx, &route.master, script, (dest, false));
            send_master_as(
                route,
                slot,
                bytes,
                dest,
                ctx.protocol,
                effect,
                1,
                user,
                ctx.db,
            );
            if let Some(marker) = marker {
                // Right behind the script, on its connection (`send_master_as`'s lane).
                route.master.lane(slot).submit(marker);
            }
        }
        Action::Read { shard, slot } => {
            let reply = ctx.queue.reserve();
            let mut request = LaneRequest::new(bytes, reply, ctx.protocol);
            request.user = script_user(ctx);
            request.db = ctx.db;
            read_node(ctx, &table.shards()[shard])
                .lane(slot)
                .submit(request);
        }
        Action::FanOut(plan, write) => {
            if ctx
                .current_cmd
                .is_some_and(|spec| spec.id == CommandId::ScriptFlush)
            {
                table.forget_scripts();
                ctx.state.script_keys.forget();
            }
            fan_out(ctx, table, plan, &bytes, write);
        }
        Action::HoldBack | Action::Pause(_) | Action::ClientPause(..) | Action::Migrate(_) => {
            unreachable!("held-back requests are not consumed")
        }
        Action::Queue(prepared) => {
            let script = ctx.current_cmd.is_some_and(|spec| is_script(spec.id));
            if let Some(tx) = ctx.tx.as_mut() {
                tx.scripts |= script;
                tx.queued_bytes += bytes.len();
                let index = tx.queued.len();
                tx.queued.push(match prepared {
                    Some(p) => match p.request {
                        Some(rewritten) => {
                            tx.originals.push((index, bytes));
                            (rewritten, p.effect)
                        }
                        None => (bytes, p.effect),
                    },
                    None => (bytes, Effect::Skip),
                });
                ctx.client
                    .set_multi(Some((tx.next_position(), tx.queued_bytes)));
            }
            ctx.queue.push_ready(Bytes::from_static(b"+QUEUED\r\n"));
        }
        Action::Private {
            shard,
            slot,
            mirror,
            blocking,
        } => {
            let reply = ctx.queue.reserve();
            let seq = reply.seq();
            let reply: Dest = reply.into();
            let reply = if blocking {
                let blocked = ctx.state.clients.blocked(&ctx.client, seq);
                Dest::Blocked(Box::new((reply, blocked)))
            } else {
                reply
            };
            let route = &table.shards()[shard];
            let protocol = ctx.protocol;
            let acks = acks_of(route, mirror.as_ref());
            // Only blocking commands are mirrored from here.
            let db = ctx.db;
            let (bytes, job) =
                private_job(route, slot, (protocol, db), bytes, mirror, Some(&ctx.state));
            private_lane(ctx, &route.master).submit(LaneRequest {
                bytes,
                dest: reply,
                protocol,
                replies: 1,
                mirror: job,
                via: None,
                user: BackendUser::Client,
                acks,
                db,
            });
            ctx.barrier = true;
        }
        Action::Exec {
            shard,
            slot,
            queued,
            watched,
            scripts,
            answers,
        } => {
            let user = if scripts {
                BackendUser::of(ctx.access)
            } else {
                BackendUser::Client
            };
            let exec_request = ExecRequest {
                queued,
                watched,
                answers,
                exec: &bytes,
                user,
                scripts,
            };
            exec(ctx, table, shard, slot, exec_request);
        }
    }
}

/// Loads the script of the `EVAL` `request` on every lane of every master, the first time
/// this table sees it ([`RoutingTable::first_sight`]), ahead of anything sent there after it:
/// once the EVAL is answered, an `EVALSHA` of it works on any master, as on one server, and
/// `SCRIPT EXISTS` says 1. The loads' answers are not waited for; a master that cannot take
/// it answers that EVALSHA `NOSCRIPT`, and the client runs EVAL again.
fn load_everywhere(table: &RoutingTable, request: &Bytes) {
    let mut scanner = RequestScanner::default();
    if !matches!(scanner.scan(request), Ok(Some(_))) {
        return;
    }
    let args = scanner.args(request);
    if args.len() < 2 || !table.first_sight(args.get(1)) {
        return;
    }
    let mut load = BytesMut::new();
    encode::request(&mut load, &[&b"SCRIPT"[..], b"LOAD", args.get(1)]);
    let load = load.freeze();
    for shard in table.shards() {
        for lane in 0..shard.master.lane_count() {
            shard.master.lane_at(lane).submit(LaneRequest {
                bytes: load.clone(),
                dest: Dest::Discard,
                protocol: Protocol::Resp2,
                replies: 1,
                mirror: None,
                via: None,
                user: BackendUser::Client,
                acks: 0,
                db: 0,
            });
        }
    }
}

/// The request and mirroring job of a request on the private lane.
///
/// A `blocking` command (given the proxy's state) may be served by the master long after it
/// was sent, right after the write that let it go: its job is made even while the shard has
/// no in-sync replica, and mirrors after that write, to the replicas in sync then
/// ([`Job::following`]).
fn private_job(
    route: &ShardRoute,
    slot: u16,
    (protocol, db): (Protocol, u16),
    bytes: Bytes,
    mirror: Option<Prepared>,
    blocking: Option<&Arc<ProxyState>>,
) -> (Bytes, Option<Box<dyn AfterMaster>>) {
    match mirror {
        Some(p)
            if !route.mirror.is_inert()
                && (blocking.is_some() || !route.mirror.is_empty())
                && p.effect != Effect::Skip =>
        {
            let bytes = p.request.unwrap_or(bytes);
            let lane = usize::from(slot) % route.master.lane_count();
            let job = Job::new(
                Arc::clone(&route.mirror),
                p.effect,
                bytes.clone(),
                protocol,
                lane,
            )
            .in_db(db);
            let job = match blocking {
                Some(state) => {
                    job.following(follow_shard(state, route), route.master.lane(slot).clone())
                }
                None => job,
            };
            (bytes, Some(job as Box<dyn AfterMaster>))
        }
        Some(p) => (p.request.unwrap_or(bytes), None),
        None => (bytes, None),
    }
}

/// Finds `route`'s shard's replicas in the routing table current when called.
fn follow_shard(state: &Arc<ProxyState>, route: &ShardRoute) -> Follow {
    // Weak: the job waits in a lane's queue, and the state owns the lanes.
    let state = Arc::downgrade(state);
    let shard = route.id;
    Box::new(move || {
        let table = state.upgrade()?.router.load();
        let now = table.shards().iter().find(|r| r.id == shard)?;
        Some(Arc::clone(&now.mirror))
    })
}

/// What EXEC sends and how (see [`Action::Exec`]).
struct ExecRequest<'a> {
    /// The requests for the master and their effects.
    queued: Vec<(Bytes, Effect)>,
    /// It runs on the private lane, after a WATCH.
    watched: bool,
    /// What the proxy answers, by position.
    answers: Vec<(usize, txn::Answer)>,
    /// The client's EXEC.
    exec: &'a Bytes,
    /// The backend user it runs as.
    user: BackendUser,
    /// Whether a queued command runs a script (see [`shown_first`]).
    scripts: bool,
}

/// Where EXEC's reply goes: its own entry, or, when the proxy answers some of the
/// transaction's commands, the first part of an entry that puts them in (with the masters'
/// `INFO keyspace` in the other parts when a queued INFO shows the keyspace, asked now).
fn exec_reply(ctx: &Ctx, table: &RoutingTable, answers: Vec<(usize, txn::Answer)>) -> ReplyTo {
    if answers.is_empty() {
        return ctx.queue.reserve();
    }
    let mut asked = NodeSections::default();
    let answers: Vec<(usize, TxAnswer)> = answers
        .into_iter()
        .map(|(at, answer)| {
            let answer = match answer {
                txn::Answer::Info(sections) => {
                    let (text, nodes) = info::proxy_text(ctx, table, &sections);
                    asked = asked.union(nodes);
                    if nodes.is_empty() {
                        TxAnswer::Reply(encode::text(ctx.protocol, text.as_bytes()))
                    } else {
                        TxAnswer::Info(text, nodes)
                    }
                }
                txn::Answer::ConfigGet(overrides) => TxAnswer::ConfigGet(overrides),
                txn::Answer::Refused(reply) => TxAnswer::Reply(reply),
            };
            (at, answer)
        })
        .collect();
    let shards = table.shards();
    let parts = 1 + if asked.is_empty() { 0 } else { shards.len() };
    let seq = ctx.queue.reserve_gather(
        parts,
        MergePlan::Exec {
            answers,
            protocol: ctx.protocol,
        },
    );
    if !asked.is_empty() {
        // Every queued INFO's sections, asked once: each takes those it shows.
        let request = info::node_request(asked);
        for (index, shard) in shards.iter().enumerate() {
            shard.master.lane(0).send(
                request.clone(),
                ctx.queue.part(seq, index as u32 + 1),
                ctx.protocol,
            );
        }
    }
    ctx.queue.part(seq, 0)
}

/// Sends a transaction as one request: `MULTI`, the queued requests, `EXEC`, run as the
/// backend `user`.
fn exec(ctx: &mut Ctx, table: &RoutingTable, shard: usize, slot: u16, request: ExecRequest<'_>) {
    let ExecRequest {
        queued,
        watched,
        answers,
        exec,
        user,
        scripts,
    } = request;
    let route = &table.shards()[shard];
    if watched
        && !ctx
            .private
            .as_ref()
            .is_some_and(|p| p.serves(route.master.addr()) && !p.is_closed())
    {
        ctx.private = None;
        ctx.queue.push_ready(ClientError::WatchLost.to_reply());
        return;
    }
    let replies = u32::try_from(queued.len() + 2).unwrap_or(u32::MAX);
    let mut whole = BytesMut::with_capacity(
        15 + exec.len() + queued.iter().map(|(b, _)| b.len()).sum::<usize>(),
    );
    whole.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
    let mut effects = Vec::with_capacity(queued.len());
    for (request, effect) in queued {
        whole.extend_from_slice(&request);
        effects.push(effect);
    }
    whole.extend_from_slice(exec);
    let whole = whole.freeze();
    let effect = if effects.iter().all(|e| *e == Effect::Skip) {
        None
    } else {
        Some(effect::prepare_exec(effects))
    };
    let reply = exec_reply(ctx, table, answers);
    if watched {
        let prepared = effect.map(|effect| Prepared {
            request: None,
            effect,
        });
        let acks = acks_of(route, prepared.as_ref());
        let (bytes, job) = private_job(route, slot, (ctx.protocol, ctx.db), whole, prepared, None);
        let protocol = ctx.protocol;
        let private = private_lane(ctx, &route.master).clone();
        // Mirrored, it runs fenced through the shared lane: its scripts' lines are not waited
        // for there.
        let (dest, marker) = shown_first(
            ctx,
            &route.master,
            scripts && job.is_none(),
            (reply.into(), true),
        );
        let request = LaneRequest {
            bytes,
            dest,
            protocol,
            replies,
            via: None,
            mirror: None,
            user,
            acks,
            db: ctx.db,
        };
        match job {
            // Mirrored: the slot's shared lane fences it, so the master runs it at a known
            // place among the slot's other writes, the place the mirror replays it in.
            Some(job) => route.master.lane(slot).submit(LaneRequest {
                mirror: Some(job),
                via: Some(private),
                ..request
            }),
            None => {
                private.submit(request);
                if let Some(marker) = marker {
                    private.submit(marker);
                }
            }
        }
        ctx.barrier = true;
    } else {
        let (dest, marker) = shown_first(ctx, &route.master, scripts, (reply.into(), true));
        send_master_as(
            route,
            slot,
            whole,
            dest,
            ctx.protocol,
            effect,
            replies,
            user,
            ctx.db,
        );
        if let Some(marker) = marker {
            route.master.lane(slot).submit(marker);
        }
    }
}

/// The client's private lane to `node`, opened (or replaced) when needed.
fn private_lane<'a>(ctx: &'a mut Ctx, node: &Node) -> &'a LaneHandle {
    let reusable = ctx
        .private
        .as_ref()
        .is_some_and(|p| p.serves(node.addr()) && !p.is_closed());
    if !reusable {
        ctx.private = Some(node.private_lane(ctx.protocol));
    }
    match &ctx.private {
        Some(private) => private.handle(),
        None => unreachable!("set just above"),
    }
}

/// Sends `request` to every master's first lane (for SCRIPT LOAD, every master there is; see
/// [`skips_down_shards`]), merged by `plan`; a `write` is mirrored to each shard's replicas
/// as it is.
pub(crate) fn fan_out(
    ctx: &Ctx,
    table: &RoutingTable,
    plan: MergePlan,
    request: &Bytes,
    write: bool,
) {
    let shards = table.shards();
    if ctx
        .current_cmd
        .is_some_and(|spec| skips_down_shards(spec.id))
        && table.any_gate_closed()
    {
        let targets = fan_out_shards(table, CommandId::ScriptLoad);
        let seq = ctx.queue.reserve_gather(targets.len(), plan);
        for (index, &shard) in targets.iter().enumerate() {
            send_master(
                &shards[shard],
                0,
                request.clone(),
                ctx.queue.part(seq, index as u32).into(),
                ctx.protocol,
                write.then_some(Effect::Same),
                1,
                ctx.db,
            );
        }
        return;
    }
    let seq = ctx.queue.reserve_gather(shards.len(), plan);
    for (index, shard) in shards.iter().enumerate() {
        send_master(
            shard,
            0,
            request.clone(),
            ctx.queue.part(seq, index as u32).into(),
            ctx.protocol,
            write.then_some(Effect::Same),
            1,
            ctx.db,
        );
    }
}
