//! Deciding what happens to one request: forward, split, fan out, answer locally, or refuse.
//!
//! [`dispatch`] runs while the request's arguments are still borrowed from the read buffer and
//! returns an [`Action`]; [`finish`] then sends the request's original bytes where the action
//! says. Every request reserves exactly one entry in the reply queue, in request order.

use bytes::{Bytes, BytesMut};
use redshard_config::Slot;

use super::merge::MergePlan;
use super::{local, pubsub, scan, split, txn, Ctx};

use redshard_config::Access;

use crate::backend::{LaneHandle, Node};
use crate::command::{self, ArgList, CommandSpec, Flags, Route};
use crate::resp::{encode, Args, Protocol};
use crate::router::RoutingTable;

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
    },
    /// Send the original bytes to every master and merge the replies.
    FanOut(MergePlan),
    /// Not now: dispatch it again once every earlier reply is in (it goes to the private lane,
    /// which must not overtake the shared lanes). The request stays in the read buffer.
    HoldBack,
    /// Inside MULTI: keep the bytes for EXEC and answer `+QUEUED`.
    Queue,
    /// Send the original bytes on the client's private lane to shard `shard`'s master.
    Private {
        /// Index into the routing table's shards.
        shard: usize,
    },
    /// EXEC: send MULTI, the queued requests and the client's EXEC on the private lane to
    /// shard `shard`'s master; the client gets EXEC's reply.
    Exec {
        /// Index into the routing table's shards.
        shard: usize,
        /// The transaction's requests.
        queued: Vec<Bytes>,
        /// A WATCH ran on the private lane: it must still be the same connection.
        watched: bool,
    },
}

impl Action {
    /// Queues the error reply `text` (without '-' and CRLF) and returns `Done`.
    pub(crate) fn error(ctx: &Ctx, text: &str) -> Self {
        ctx.queue.push_ready(error_reply(text));
        Self::Done
    }

    /// Queues the error reply `text` given as bytes (it may echo a client's non-UTF-8 input).
    pub(crate) fn error_raw(ctx: &Ctx, text: &[u8]) -> Self {
        let mut reply = Vec::with_capacity(text.len() + 3);
        reply.push(b'-');
        reply.extend_from_slice(text);
        reply.extend_from_slice(b"\r\n");
        ctx.queue.push_ready(Bytes::from(reply));
        Self::Done
    }

    /// Queues `reply` and returns `Done`.
    pub(crate) fn reply(ctx: &Ctx, reply: Bytes) -> Self {
        ctx.queue.push_ready(reply);
        Self::Done
    }
}

/// An error reply for `text` (given without the leading '-' and the CRLF).
pub(crate) fn error_reply(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 3);
    encode::error(&mut out, text);
    out.freeze()
}

impl ArgList for Args<'_> {
    fn len(&self) -> usize {
        Args::len(self)
    }

    fn arg(&self, i: usize) -> &[u8] {
        self.get(i)
    }
}

/// `CONFIG SET` → `CONFIG SET`, `get` → `GET`: how a command is named in refusals.
pub(crate) fn display_name(spec: &CommandSpec) -> String {
    spec.name.replace('|', " ").to_ascii_uppercase()
}

/// Classifies one request and does everything that needs its arguments.
pub(crate) fn dispatch(ctx: &mut Ctx, table: &RoutingTable, args: Args<'_>) -> Action {
    let spec = match command::resolve(&args) {
        Ok(spec) => spec,
        Err(e) => {
            txn::abort_with(ctx);
            return Action::error_raw(ctx, e.as_bytes());
        }
    };
    ctx.current_cmd = Some(spec.name);
    if !ctx.authenticated && !spec.flags.contains(Flags::NO_AUTH) {
        return Action::error(ctx, "NOAUTH Authentication required.");
    }
    if !permitted(ctx.access, spec) {
        txn::abort_with(ctx);
        return Action::error(
            ctx,
            &format!(
                "NOPERM this user has no permissions to run the '{}' command",
                spec.name
            ),
        );
    }
    if ctx.protocol == Protocol::Resp2 && ctx.pubsub.as_ref().is_some_and(pubsub::PubSub::is_active)
    {
        if spec.name == "ping" {
            return pubsub::subscribed_ping(ctx, args);
        }
        if !pubsub::allowed_while_subscribed(spec.name) {
            return Action::error(
                ctx,
                &format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                    spec.name
                ),
            );
        }
    }
    if ctx.tx.is_some() {
        return txn::inside_multi(ctx, table, spec, args);
    }
    if let Some(action) = txn::outside_multi(ctx, table, spec, args) {
        return action;
    }
    match spec.route {
        Route::Keyed => keyed(ctx, table, spec, args),
        Route::Split(kind) => split::split(ctx, table, spec, kind, args),
        Route::Local => local::handle(ctx, table, spec, args),
        Route::FanOut(merge) => Action::FanOut(merge.into()),
        Route::Flush if ctx.state.config.allow_flush => Action::FanOut(MergePlan::AllOk),
        Route::Flush => Action::error(
            ctx,
            &format!(
                "ERR {} is disabled in redshard; set allow_flush = true in the proxy's config to allow it",
                display_name(spec)
            ),
        ),
        Route::Forbidden => Action::error(
            ctx,
            &format!("ERR {} is not allowed through redshard", display_name(spec)),
        ),
        Route::Dedicated => unsupported(ctx, spec),
        Route::Scan => scan::scan(ctx, table, args),
        Route::PubSub => pubsub::handle(ctx, table, spec, args),
    }
}

/// Whether a user of `access` may run `spec`.
fn permitted(access: Access, spec: &CommandSpec) -> bool {
    match access {
        Access::All => true,
        // Scripts, functions and publishing may write or replicate: refused too.
        Access::ReadOnly => {
            !spec
                .flags
                .intersects(Flags::WRITE.union(Flags::MAY_REPLICATE))
                && spec.route != Route::Flush
        }
        Access::NoDangerous => !spec.is_dangerous(),
    }
}

fn unsupported(ctx: &Ctx, spec: &CommandSpec) -> Action {
    Action::error(
        ctx,
        &format!(
            "ERR {} is not supported by redshard yet",
            display_name(spec)
        ),
    )
}

/// A command routed by its keys, which must all hash to one slot.
fn keyed(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &'static CommandSpec,
    args: Args<'_>,
) -> Action {
    if let Err(e) = spec.key_indices(&args, &mut ctx.keys) {
        return Action::error_raw(ctx, e.as_bytes());
    }
    let Some((&first, rest)) = ctx.keys.split_first() else {
        // No key: any master can run it (TIME, LASTSAVE, COMMAND DOCS ...).
        return Action::Forward { shard: 0, slot: 0 };
    };
    let slot = Slot::for_key(args.get(first));
    if rest.iter().any(|&k| Slot::for_key(args.get(k)) != slot) {
        return Action::error(ctx, "CROSSSLOT Keys in request don't hash to the same slot");
    }
    Action::Forward {
        shard: table.shard_of(slot),
        slot: slot.get(),
    }
}

/// XREAD / XREADGROUP with a BLOCK option block like BLPOP and need a dedicated connection.
pub(crate) fn is_blocking_read(spec: &CommandSpec, args: Args<'_>) -> bool {
    matches!(spec.name, "xread" | "xreadgroup")
        && args
            .iter()
            .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
            .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

/// Sends the request's bytes where `action` says.
pub(crate) fn finish(ctx: &mut Ctx, table: &RoutingTable, action: Action, bytes: Bytes) {
    match action {
        Action::Done => {}
        Action::Forward { shard, slot } => {
            let reply = ctx.queue.reserve();
            table.shards()[shard]
                .master
                .lane(slot, ctx.protocol)
                .send(bytes, reply);
        }
        Action::FanOut(plan) => fan_out(ctx, table, plan, &bytes),
        Action::HoldBack => unreachable!("held-back requests are not consumed"),
        Action::Queue => {
            if let Some(tx) = ctx.tx.as_mut() {
                tx.queued.push(bytes);
            }
            ctx.queue.push_ready(Bytes::from_static(b"+QUEUED\r\n"));
        }
        Action::Private { shard } => {
            let reply = ctx.queue.reserve();
            private_lane(ctx, &table.shards()[shard].master).send(bytes, reply);
            ctx.barrier = true;
        }
        Action::Exec {
            shard,
            queued,
            watched,
        } => {
            let node = &table.shards()[shard].master;
            if watched
                && !ctx
                    .private
                    .as_ref()
                    .is_some_and(|p| p.serves(node.addr(), ctx.protocol) && !p.is_closed())
            {
                ctx.private = None;
                ctx.queue.push_ready(error_reply(
                    "ERR redshard: the backend connection that ran WATCH was lost; the transaction was not executed",
                ));
                return;
            }
            let seq = ctx.queue.reserve_gather(queued.len() + 2, MergePlan::Last);
            let lane = private_lane(ctx, node).clone();
            lane.send(
                Bytes::from_static(b"*1\r\n$5\r\nMULTI\r\n"),
                ctx.queue.part(seq, 0),
            );
            let count = queued.len();
            for (i, request) in queued.into_iter().enumerate() {
                lane.send(request, ctx.queue.part(seq, i as u32 + 1));
            }
            lane.send(bytes, ctx.queue.part(seq, count as u32 + 1));
            ctx.barrier = true;
        }
    }
}

/// The client's private lane to `node`, opened (or replaced) when needed.
fn private_lane<'a>(ctx: &'a mut Ctx, node: &Node) -> &'a LaneHandle {
    let reusable = ctx
        .private
        .as_ref()
        .is_some_and(|p| p.serves(node.addr(), ctx.protocol) && !p.is_closed());
    if !reusable {
        ctx.private = Some(node.private_lane(ctx.protocol));
    }
    match &ctx.private {
        Some(private) => private.handle(),
        None => unreachable!("set just above"),
    }
}

/// Sends `request` to every master's first lane, merged by `plan`.
pub(crate) fn fan_out(ctx: &Ctx, table: &RoutingTable, plan: MergePlan, request: &Bytes) {
    let shards = table.shards();
    let seq = ctx.queue.reserve_gather(shards.len(), plan);
    for (index, shard) in shards.iter().enumerate() {
        shard
            .master
            .lane(0, ctx.protocol)
            .send(request.clone(), ctx.queue.part(seq, index as u32));
    }
}
