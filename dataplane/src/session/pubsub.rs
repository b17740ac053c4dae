//! Pub/sub across shards.
//!
//! Standalone Redis delivers a message only to subscribers on the node that ran the PUBLISH.
//! So a channel lives on the master of its slot (like Redis Cluster's sharded pub/sub):
//! PUBLISH, SUBSCRIBE, SPUBLISH and SSUBSCRIBE of a channel all go there, and PSUBSCRIBE goes to
//! every master, since a pattern may match channels anywhere. Each subscribed client has one
//! subscription connection per node it needs (`backend::subscriber`).
//!
//! The proxy keeps the client's subscription sets and writes the confirmations itself, with
//! the counts Redis would give for one server; a confirmation is released only after the
//! nodes confirmed, so a message published right after it is not missed. Messages are
//! forwarded as the nodes send them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use redshard_config::{NodeAddr, Slot};

use super::dispatch::Action;
use super::merge::MergePlan;
use super::Ctx;
use crate::backend::subscriber::Subscriber;
use crate::clients::Subscribed;
use crate::router::RoutingTable;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{CommandId, CommandSpec};
use redshard_protocol::resp::{encode, Args, Protocol};

/// A client's subscriptions and its connections to the nodes that serve them.
#[derive(Debug, Default)]
pub(crate) struct PubSub {
    /// The subscriptions by name, shared with the client's CLIENT LIST entry (see
    /// [`Subscribed`]); locked only by this session and by ACL changes.
    sets: Arc<Mutex<Subscribed>>,
    /// Subscription connections by node.
    conns: HashMap<NodeAddr, Subscriber>,
}

impl PubSub {
    /// The subscriptions, locked.
    fn sets(&self) -> MutexGuard<'_, Subscribed> {
        self.sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the client has any subscription (RESP2 clients are then in subscribed mode).
    pub(crate) fn is_active(&self) -> bool {
        let sets = self.sets();
        !(sets.channels.is_empty() && sets.patterns.is_empty() && sets.shard_channels.is_empty())
    }
}

/// The subscription set a command of `kind` works on.
fn set_mut(sets: &mut Subscribed, kind: Kind) -> &mut BTreeSet<Vec<u8>> {
    match kind {
        Kind::Channel => &mut sets.channels,
        Kind::Pattern => &mut sets.patterns,
        Kind::Shard => &mut sets.shard_channels,
    }
}

/// The commands a RESP2 client may send while subscribed.
pub(super) fn allowed_while_subscribed(id: CommandId) -> bool {
    matches!(
        id,
        CommandId::Subscribe
            | CommandId::Psubscribe
            | CommandId::Ssubscribe
            | CommandId::Unsubscribe
            | CommandId::Punsubscribe
            | CommandId::Sunsubscribe
            | CommandId::Ping
            | CommandId::Quit
            | CommandId::Reset
    )
}

/// PING in RESP2 subscribed mode: `["pong", message]`.
pub(super) fn subscribed_ping(ctx: &Ctx, args: Args<'_>) -> Action {
    if args.len() > 2 {
        return Action::error(ctx, ClientError::WrongArity { command: "ping" });
    }
    let mut out = BytesMut::new();
    encode::array_header(&mut out, 2);
    encode::bulk(&mut out, b"pong");
    encode::bulk(&mut out, if args.len() > 1 { args.get(1) } else { b"" });
    Action::reply(ctx, out.freeze())
}

/// Which subscription set a command works on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Channel,
    Pattern,
    Shard,
}

/// Handles every `Route::PubSub` command.
pub(super) fn handle(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &CommandSpec,
    args: Args<'_>,
) -> Action {
    match spec.id {
        CommandId::Publish | CommandId::Spublish => {
            let slot = channel_slot(args.get(1));
            Action::Forward {
                shard: table.shard_of(slot),
                slot: slot.get(),
                mirror: None,
            }
        }
        CommandId::Subscribe
        | CommandId::Psubscribe
        | CommandId::Ssubscribe
        | CommandId::Unsubscribe
        | CommandId::Punsubscribe
        | CommandId::Sunsubscribe => {
            let action = match spec.id {
                CommandId::Subscribe => subscribe(ctx, table, args, Kind::Channel),
                CommandId::Psubscribe => subscribe(ctx, table, args, Kind::Pattern),
                CommandId::Ssubscribe => subscribe(ctx, table, args, Kind::Shard),
                CommandId::Unsubscribe => unsubscribe(ctx, table, args, Kind::Channel),
                CommandId::Punsubscribe => unsubscribe(ctx, table, args, Kind::Pattern),
                _ => unsubscribe(ctx, table, args, Kind::Shard),
            };
            show_subscriptions(ctx);
            action
        }
        CommandId::PubsubChannels | CommandId::PubsubShardchannels => {
            Action::FanOut(MergePlan::ConcatArrays, false)
        }
        CommandId::PubsubNumsub | CommandId::PubsubShardnumsub => {
            Action::FanOut(MergePlan::SumPairs, false)
        }
        // Every master has every pattern: any one of them knows the count.
        CommandId::PubsubNumpat => Action::FanOut(MergePlan::First, false),
        _ => Action::Forward {
            shard: super::dispatch::keyless_shard(table),
            slot: 0,
            mirror: None,
        },
    }
}

/// Puts the client's subscriptions in its CLIENT LIST entry (for its counts, and for ACL
/// changes to check).
pub(super) fn show_subscriptions(ctx: &Ctx) {
    let shared = ctx
        .pubsub
        .as_deref()
        .filter(|ps| ps.is_active())
        .map(|ps| Arc::clone(&ps.sets));
    ctx.client.fields().subscriptions = shared;
}

fn names(kind: Kind) -> (&'static [u8], &'static [u8], &'static [u8]) {
    match kind {
        Kind::Channel => (b"SUBSCRIBE", b"subscribe", b"unsubscribe"),
        Kind::Pattern => (b"PSUBSCRIBE", b"psubscribe", b"punsubscribe"),
        Kind::Shard => (b"SSUBSCRIBE", b"ssubscribe", b"sunsubscribe"),
    }
}

/// One confirmation frame: `[kind, name, count]` (a push in RESP3).
fn confirmation(
    out: &mut BytesMut,
    protocol: Protocol,
    kind: &[u8],
    name: Option<&[u8]>,
    count: usize,
) {
    match protocol {
        Protocol::Resp2 => encode::array_header(out, 3),
        Protocol::Resp3 => out.extend_from_slice(b">3\r\n"),
    }
    encode::bulk(out, kind);
    match (name, protocol) {
        (Some(name), _) => encode::bulk(out, name),
        (None, Protocol::Resp2) => out.extend_from_slice(encode::NULL_BULK),
        (None, Protocol::Resp3) => out.extend_from_slice(b"_\r\n"),
    }
    encode::integer(out, count as i64);
}

fn count(sets: &Subscribed, kind: Kind) -> usize {
    match kind {
        Kind::Shard => sets.shard_channels.len(),
        _ => sets.channels.len() + sets.patterns.len(),
    }
}

/// The nodes a name is subscribed on: its slot's master, or every master for patterns.
fn nodes_for(table: &RoutingTable, kind: Kind, name: &[u8]) -> Vec<usize> {
    match kind {
        Kind::Pattern => (0..table.shards().len()).collect(),
        _ => vec![table.shard_of(channel_slot(name))],
    }
}

/// Sends `command name...` per node, reserving one part per node, and queues `text` (the
/// confirmations) to be released when every node confirmed. Nothing after it is dispatched
/// until then: a PUBLISH pipelined right behind a SUBSCRIBE (on the shared lane, another
/// connection) would otherwise reach the node first and its message miss the subscriber.
fn send_grouped(
    ctx: &mut Ctx,
    table: &RoutingTable,
    command: &[u8],
    per_shard: Vec<(usize, Vec<Vec<u8>>)>,
    text: Bytes,
) {
    let seq = ctx
        .queue
        .reserve_gather(per_shard.len(), MergePlan::Confirm { text });
    for (part, (shard, names)) in per_shard.into_iter().enumerate() {
        let node = &table.shards()[shard].master;
        let ps = ctx.pubsub.get_or_insert_with(Box::default);
        let conn = ps
            .conns
            .entry(node.addr().clone())
            .or_insert_with(|| node.subscriber(ctx.protocol, ctx.queue.clone()));
        let mut args: Vec<&[u8]> = vec![command];
        args.extend(names.iter().map(Vec::as_slice));
        let mut request = BytesMut::new();
        encode::request(&mut request, &args);
        conn.send(
            request.freeze(),
            names.len(),
            ctx.queue.part(seq, part as u32),
        );
    }
    ctx.barrier = true;
}

/// Groups `(shard, name)` pairs by shard.
fn group(pairs: Vec<(usize, Vec<u8>)>) -> Vec<(usize, Vec<Vec<u8>>)> {
    let mut groups: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
    for (shard, name) in pairs {
        match groups.iter_mut().find(|g| g.0 == shard) {
            Some(g) => g.1.push(name),
            None => groups.push((shard, vec![name])),
        }
    }
    groups
}

fn subscribe(ctx: &mut Ctx, table: &RoutingTable, args: Args<'_>, kind: Kind) -> Action {
    let names_given: Vec<&[u8]> = args.iter().skip(1).collect();
    if kind == Kind::Shard {
        let first = channel_slot(names_given[0]);
        if names_given.iter().any(|n| channel_slot(n) != first) {
            return Action::error(ctx, ClientError::CrossSlot);
        }
    }
    let (command, reply_kind, _) = names(kind);
    let protocol = ctx.protocol;
    let ps = ctx.pubsub.get_or_insert_with(Box::default);
    let mut sets = ps.sets();
    let mut text = BytesMut::new();
    let mut to_send = Vec::new();
    for name in names_given {
        if set_mut(&mut sets, kind).insert(name.to_vec()) {
            for shard in nodes_for(table, kind, name) {
                to_send.push((shard, name.to_vec()));
            }
        }
        confirmation(
            &mut text,
            protocol,
            reply_kind,
            Some(name),
            count(&sets, kind),
        );
    }
    drop(sets);
    if to_send.is_empty() {
        return Action::reply(ctx, text.freeze());
    }
    send_grouped(ctx, table, command, group(to_send), text.freeze());
    Action::Done
}

fn unsubscribe(ctx: &mut Ctx, table: &RoutingTable, args: Args<'_>, kind: Kind) -> Action {
    let (_, _, reply_kind) = names(kind);
    let unsub_command: &[u8] = match kind {
        Kind::Channel => b"UNSUBSCRIBE",
        Kind::Pattern => b"PUNSUBSCRIBE",
        Kind::Shard => b"SUNSUBSCRIBE",
    };
    let protocol = ctx.protocol;
    let ps = ctx.pubsub.get_or_insert_with(Box::default);
    let mut sets = ps.sets();
    let targets: Vec<Vec<u8>> = if args.len() > 1 {
        args.iter().skip(1).map(<[u8]>::to_vec).collect()
    } else {
        set_mut(&mut sets, kind).iter().cloned().collect()
    };
    let mut text = BytesMut::new();
    let mut to_send = Vec::new();
    if targets.is_empty() {
        confirmation(&mut text, protocol, reply_kind, None, count(&sets, kind));
    }
    for name in targets {
        if set_mut(&mut sets, kind).remove(&name) {
            for shard in nodes_for(table, kind, &name) {
                to_send.push((shard, name.clone()));
            }
        }
        confirmation(
            &mut text,
            protocol,
            reply_kind,
            Some(&name),
            count(&sets, kind),
        );
    }
    drop(sets);
    if !ps.is_active() {
        // Nothing left: close every subscription connection (that unsubscribes everything).
        ctx.pubsub = None;
        return Action::reply(ctx, text.freeze());
    }
    if to_send.is_empty() {
        return Action::reply(ctx, text.freeze());
    }
    send_grouped(ctx, table, unsub_command, group(to_send), text.freeze());
    Action::Done
}

/// The slot a channel lives on: Redis Cluster's rules for its name (routing rules are for keys,
/// not channels), so a subscription and a PUBLISH from anywhere meet on one master.
pub(super) fn channel_slot(name: &[u8]) -> Slot {
    Slot::for_key(name)
}
