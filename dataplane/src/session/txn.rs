//! Transactions (WATCH, MULTI ... EXEC, DISCARD, UNWATCH) and blocking commands, on the
//! client's private lane.
//!
//! Such state lives on one backend connection, so it cannot share a lane. The rules:
//! - MULTI is answered `+OK` by the proxy and every command after it `+QUEUED` (after Redis's
//!   own checks and the slot check); EXEC sends `MULTI`, the queued commands and `EXEC` in one
//!   batch to the master of the transaction's slot, and the client gets the reply to EXEC.
//! - Every key of the transaction, and of the WATCH before it, must be in one slot, as in
//!   Redis Cluster: a key in another slot gets `-CROSSSLOT ...` and EXEC then answers
//!   `-EXECABORT ...`, like any command refused while queueing.
//! - WATCH goes at once to the master of its slot on the private lane, since it watches from
//!   the moment it runs.
//! - A transaction that ends without EXEC (DISCARD, EXECABORT) drops the private lane: closing
//!   the connection clears whatever it watched.
//! - Blocking commands (BLPOP, XREAD BLOCK, ...) run on the private lane and may block forever;
//!   a client that leaves closes that connection and so frees it.
//! - The private lane and the shared lanes are different connections, so before sending on the
//!   private lane the session waits until every earlier reply is in (they have run), and
//!   nothing after it is dispatched until its reply is in.

use bytes::Bytes;
use redshard_config::Slot;

use super::dispatch::Action;
use super::Ctx;
use crate::router::RoutingTable;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{ArgList, CommandId, CommandSpec, Flags, Local, Route};
use redshard_protocol::resp::Args;

/// A transaction being queued (between MULTI and EXEC).
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    /// The slot every key must hash to, once the first key (or the WATCH) fixed it.
    slot: Option<Slot>,
    /// The queued requests' bytes (rewritten for mirroring where needed) and effects, in
    /// order.
    pub(super) queued: Vec<(Bytes, crate::mirror::effect::Effect)>,
    /// A queued command was refused: EXEC answers EXECABORT.
    pub(super) dirty: bool,
    /// A script is queued: a restricted client's transaction then runs as its level's
    /// backend user (see [`super::dispatch::is_script`]).
    pub(super) scripts: bool,
    /// The commands the proxy answers itself, by position among every queued command (the
    /// master runs the others, and EXEC's reply gets these put in at their places).
    pub(super) answers: Vec<(usize, Answer)>,
    /// Bytes of the queued requests (CLIENT LIST's `multi-mem`).
    pub(super) queued_bytes: usize,
    /// The users' generation at MULTI: when a user changed before EXEC, EXEC checks every
    /// queued command against the client's user again, as Redis does.
    pub(super) users_seen: u64,
    /// The request as the client sent it, for each queued request rewritten for mirroring
    /// (by position in `queued`): what EXEC checks again.
    pub(super) originals: Vec<(usize, Bytes)>,
}

/// A command of a transaction that the proxy answers (in EXEC's reply, see
/// [`super::merge::MergePlan::Exec`]).
#[derive(Debug)]
pub(crate) enum Answer {
    /// `INFO <sections>` (lower case), written when EXEC runs: the master never sees it.
    Info(Vec<String>),
    /// `CONFIG GET`: the master runs it, and the proxy's parameters matched (with its
    /// values) replace the master's.
    ConfigGet(Vec<(&'static str, String)>),
    /// A command the client's user may no longer run (its user changed after it was
    /// queued): its refusal, and the master never sees it.
    Refused(Bytes),
}

impl Transaction {
    /// The position the next queued command takes: after the requests for the master and
    /// the commands only the proxy answers (a CONFIG GET is both, counted once).
    pub(super) fn next_position(&self) -> usize {
        let proxy_only = self
            .answers
            .iter()
            .filter(|(_, a)| matches!(a, Answer::Info(_) | Answer::Refused(_)))
            .count();
        self.queued.len() + proxy_only
    }
}

impl Transaction {
    /// The slot the transaction's keys hash to, once known.
    pub(super) fn slot(&self) -> Option<Slot> {
        self.slot
    }
}

/// The one slot of a request's keys: `Ok(None)` without keys, `Err` with the error to reply.
fn slot_of(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &CommandSpec,
    args: Args<'_>,
) -> Result<Option<Slot>, ClientError> {
    spec.key_indices(&args, &mut ctx.keys)?;
    let mut slot = None;
    // A script called with no key counts the keys its body names as literals.
    let literal = ctx.script_keys.iter().map(|k| &k[..]);
    for key in ctx.keys.iter().map(|&k| args.arg(k)).chain(literal) {
        let s = table.slot_of(key);
        match slot {
            None => slot = Some(s),
            Some(first) if first != s => return Err(ClientError::CrossSlot),
            Some(_) => {}
        }
    }
    if slot.is_some_and(|slot| !spec.extra_keys_in_slot(&args, slot)) {
        return Err(ClientError::SortPatternCrossSlot);
    }
    Ok(slot)
}

/// Handles MULTI, EXEC, DISCARD, WATCH and UNWATCH outside a transaction, and blocking
/// commands. Returns `None` for every other command.
pub(super) fn outside_multi(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &CommandSpec,
    args: Args<'_>,
) -> Option<Action> {
    let action = match spec.id {
        CommandId::Multi => {
            if !ctx.queue.is_empty() {
                return Some(Action::HoldBack);
            }
            ctx.tx = Some(Box::new(Transaction {
                slot: ctx.watch,
                users_seen: ctx.state.users.generation(),
                ..Transaction::default()
            }));
            ctx.client.set_multi(Some((0, 0)));
            Action::reply(ctx, Bytes::from_static(b"+OK\r\n"))
        }
        CommandId::Exec => Action::error(ctx, ClientError::ExecWithoutMulti),
        CommandId::Discard => Action::error(ctx, ClientError::DiscardWithoutMulti),
        CommandId::Watch => {
            let slot = match slot_of(ctx, table, spec, args) {
                Ok(Some(slot)) => slot,
                Ok(None) => {
                    return Some(Action::error(
                        ctx,
                        ClientError::WrongArity { command: "watch" },
                    ))
                }
                Err(e) => return Some(Action::error(ctx, e)),
            };
            if ctx.watch.is_some_and(|w| w != slot) {
                return Some(Action::error(ctx, ClientError::CrossSlot));
            }
            if !ctx.queue.is_empty() {
                return Some(Action::HoldBack);
            }
            ctx.watch = Some(slot);
            Action::Private {
                shard: table.shard_of(slot),
                slot: slot.get(),
                mirror: None,
                blocking: false,
            }
        }
        CommandId::Unwatch => match ctx.watch.take() {
            Some(slot) => {
                if !ctx.queue.is_empty() {
                    ctx.watch = Some(slot);
                    return Some(Action::HoldBack);
                }
                Action::Private {
                    shard: table.shard_of(slot),
                    slot: slot.get(),
                    mirror: None,
                    blocking: false,
                }
            }
            None => Action::reply(ctx, Bytes::from_static(b"+OK\r\n")),
        },
        _ if spec.flags.contains(Flags::BLOCKING)
            || super::dispatch::is_blocking_read(spec, args) =>
        {
            let slot = match slot_of(ctx, table, spec, args) {
                Ok(slot) => slot.unwrap_or(Slot::for_key(b"")),
                Err(e) => return Some(Action::error(ctx, e)),
            };
            if ctx
                .watch
                .is_some_and(|w| table.shard_of(w) != table.shard_of(slot))
            {
                return Some(Action::error(ctx, ClientError::BlockingOffWatchedShard));
            }
            if !ctx.queue.is_empty() {
                return Some(Action::HoldBack);
            }
            let shard = table.shard_of(slot);
            Action::Private {
                shard,
                slot: slot.get(),
                mirror: super::dispatch::plan_blocking(table, shard, spec, &args),
                blocking: true,
            }
        }
        _ => return None,
    };
    Some(action)
}

/// Handles a command between MULTI and EXEC.
pub(super) fn inside_multi(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &CommandSpec,
    args: Args<'_>,
) -> Action {
    match spec.id {
        CommandId::Multi => return Action::error(ctx, ClientError::MultiNested),
        CommandId::Watch => return Action::error(ctx, ClientError::WatchInsideMulti),
        CommandId::Discard => {
            discard(ctx);
            return Action::reply(ctx, Bytes::from_static(b"+OK\r\n"));
        }
        CommandId::Exec => return exec(ctx, table),
        // Redis refuses these (SAVE, SHUTDOWN, SYNC, PSYNC) in a transaction with its own text,
        // before anything else about them.
        _ if spec.flags.contains(Flags::NO_MULTI) => {
            return refuse(ctx, ClientError::NotAllowedInMulti)
        }
        _ => {}
    }
    let queueable = match spec.route {
        Route::Keyed | Route::Split(_) | Route::Dedicated => {
            !spec.flags.contains(Flags::PUBSUB)
                && !matches!(spec.id, CommandId::Wait | CommandId::Unwatch)
        }
        // The master answers the cluster commands in EXEC's reply, as a standalone Redis
        // does (see `command::Local::NotACluster`).
        // INFO and CONFIG GET are answered (in part) by the proxy: see `Answer`.
        Route::Local => matches!(
            Local::of(spec.id),
            Some(Local::Ping | Local::Echo | Local::NotACluster | Local::Info | Local::ConfigGet)
        ),
        // A PUBLISH runs on the node of its channel's slot, where the proxy subscribes for
        // its clients: inside a transaction that slot must be the transaction's (Celery's
        // result backend stores a result and announces it in one MULTI, key and channel of
        // one name).
        Route::PubSub => matches!(spec.id, CommandId::Publish | CommandId::Spublish),
        _ => false,
    };
    if !queueable {
        return refuse(ctx, ClientError::UnsupportedInMulti { command: spec.name });
    }
    match Local::of(spec.id) {
        Some(Local::Info) => {
            let sections = args
                .iter()
                .skip(1)
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                .collect();
            if let Some(tx) = ctx.tx.as_mut() {
                let at = tx.next_position();
                tx.answers.push((at, Answer::Info(sections)));
                ctx.client
                    .set_multi(Some((tx.next_position(), tx.queued_bytes)));
            }
            return Action::reply(ctx, Bytes::from_static(b"+QUEUED\r\n"));
        }
        Some(Local::ConfigGet) => {
            let patterns: Vec<&[u8]> = args.iter().skip(2).collect();
            let overrides = super::local::proxy_config(ctx, &patterns);
            if let Some(tx) = ctx.tx.as_mut() {
                let at = tx.next_position();
                tx.answers.push((at, Answer::ConfigGet(overrides)));
            }
            return Action::Queue(None);
        }
        _ => {}
    }
    let slot = if spec.route == Route::PubSub {
        // Arity is checked before: the channel is there.
        Ok(Some(super::pubsub::channel_slot(args.get(1))))
    } else {
        slot_of(ctx, table, spec, args)
    };
    let slot = match slot {
        Ok(slot) => slot,
        Err(e) => {
            abort_with(ctx);
            return Action::error(ctx, e);
        }
    };
    if let (Some(tx), Some(slot)) = (ctx.tx.as_mut(), slot) {
        match tx.slot {
            Some(first) if first != slot => return refuse(ctx, ClientError::CrossSlot),
            _ => tx.slot = Some(slot),
        }
    }
    // Queued writes are prepared for mirroring now, while the arguments are at hand (the
    // shard is known only at EXEC, which mirrors only if it has in-sync replicas).
    Action::Queue(
        super::dispatch::is_mirrored(spec)
            .then(|| crate::mirror::effect::prepare(spec, &args, super::dispatch::now_ms())),
    )
}

/// A malformed EXEC (`error`): the transaction and the WATCH are discarded and the reply is
/// `EXECABORT Transaction discarded because of: <error>`.
pub(super) fn exec_abort(ctx: &mut Ctx, error: redshard_protocol::command::CommandError) -> Action {
    discard(ctx);
    Action::error(ctx, ClientError::ExecAbortedBy(error))
}

/// Ends the transaction, if one is queued, and forgets the WATCH (DISCARD, or an EXEC that
/// was refused).
pub(super) fn discard(ctx: &mut Ctx) {
    if ctx.tx.take().is_some() {
        ctx.client.set_multi(None);
    }
    if ctx.watch.take().is_some() {
        // Closing the private connection forgets what it watched.
        ctx.private = None;
    }
}

/// Marks the transaction so that EXEC answers EXECABORT.
pub(super) fn abort_with(ctx: &mut Ctx) {
    if let Some(tx) = ctx.tx.as_mut() {
        tx.dirty = true;
    }
}

fn refuse(ctx: &mut Ctx, error: ClientError) -> Action {
    abort_with(ctx);
    Action::error(ctx, error)
}

fn exec(ctx: &mut Ctx, table: &RoutingTable) -> Action {
    let Some(mut tx) = ctx.tx.take().map(|tx| *tx) else {
        return Action::error(ctx, ClientError::ExecWithoutMulti);
    };
    ctx.client.set_multi(None);
    let watched = ctx.watch.take();
    if tx.dirty {
        if watched.is_some() {
            ctx.private = None;
        }
        return Action::error(ctx, ClientError::ExecAbort);
    }
    if tx.users_seen != ctx.state.users.generation() {
        recheck(ctx, &mut tx);
    }
    // A transaction without keys runs on any master, like a keyless command.
    let slot = tx.slot.or(watched);
    Action::Exec {
        shard: slot.map_or_else(
            || super::dispatch::keyless_shard(table),
            |slot| table.shard_of(slot),
        ),
        slot: slot.map_or(0, Slot::get),
        queued: tx.queued,
        watched: watched.is_some(),
        scripts: tx.scripts,
        answers: tx.answers,
    }
}

/// Redis's `execCommand` checks each queued command's permissions again: a user changed
/// since it was queued. A refused command is logged (context `multi`), not sent, and answered
/// in EXEC's reply by its refusal; the others run.
fn recheck(ctx: &Ctx, tx: &mut Transaction) {
    if ctx.acl.is_none() {
        return;
    }
    let originals = std::mem::take(&mut tx.originals);
    // Positions taken by commands only the proxy answers (INFO): not in `queued`.
    let proxy_only: Vec<usize> = tx
        .answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Info(_)))
        .map(|(at, _)| *at)
        .collect();
    let mut position = 0;
    let mut refused: Vec<(usize, usize, ClientError)> = Vec::new();
    for (index, (bytes, _)) in tx.queued.iter().enumerate() {
        while proxy_only.contains(&position) {
            position += 1;
        }
        let request = originals
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(bytes, |(_, original)| original);
        let mut scanner = redshard_protocol::resp::RequestScanner::new(ctx.state.scan_limits());
        if let Ok(Some(_)) = scanner.scan(request) {
            let args = scanner.args(request);
            if let Ok(spec) = redshard_protocol::command::resolve(&args) {
                if let Err(error) = super::acl::check_queued(ctx, spec, args) {
                    refused.push((index, position, error));
                }
            }
        }
        position += 1;
    }
    for (index, position, error) in refused.into_iter().rev() {
        tx.queued.remove(index);
        tx.answers.retain(|(at, _)| *at != position);
        tx.answers
            .push((position, Answer::Refused(error.to_reply())));
    }
    tx.answers.sort_by_key(|(at, _)| *at);
}
