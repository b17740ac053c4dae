//! CLIENT KILL, PAUSE, UNPAUSE and UNBLOCK on the proxy's own clients.
//!
//! The backend connections are the proxy's and shared, so these act where the client is: a
//! killed client's session closes its connection; a pause holds the matching commands of
//! every client at dispatch (the proxy's own traffic, mirroring and control work, goes on);
//! an unblocked client's blocking command is answered by the proxy and its private backend
//! connection, where the command waits, is closed.

use std::time::Duration;

use bytes::Bytes;

use super::dispatch::Action;
use super::Ctx;
use crate::clients::{KillFilter, Unblock};
use crate::state::ProxyState;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{CommandId, CommandSpec, Flags};
use redshard_protocol::resp::{encode, parse_i64, Args, Protocol};

/// `CLIENT KILL ip:port` (the old form: `+OK` or `-ERR No such client`, the caller too) or
/// `CLIENT KILL <filter> <value> ...` (the number of clients closed; not the caller unless
/// `SKIPME no`).
pub(super) fn kill(ctx: &Ctx, args: Args<'_>) -> Action {
    if args.len() == 3 {
        let filter = KillFilter {
            addr: Some(String::from_utf8_lossy(args.get(2)).into_owned()),
            ..KillFilter::default()
        };
        return match close(ctx, &filter) {
            0 => Action::error(ctx, ClientError::NoSuchClient),
            _ => Action::reply(ctx, Bytes::from_static(encode::OK)),
        };
    }
    let filter = match kill_filter(ctx, args) {
        Ok(filter) => filter,
        Err(e) => return Action::error(ctx, e),
    };
    let closed = close(ctx, &filter);
    Action::reply(ctx, Bytes::from(format!(":{closed}\r\n")))
}

/// The filters of the new form of CLIENT KILL, with Redis's checks and errors.
fn kill_filter(ctx: &Ctx, args: Args<'_>) -> Result<KillFilter, ClientError> {
    let mut filter = KillFilter {
        skip: Some(ctx.client.id),
        ..KillFilter::default()
    };
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(ClientError::SyntaxError);
        }
        let (name, value) = (args.get(i), args.get(i + 1));
        let text = || String::from_utf8_lossy(value).into_owned();
        match name.to_ascii_lowercase().as_slice() {
            b"id" => {
                let id = parse_i64(value)
                    .filter(|&id| id > 0)
                    .ok_or(ClientError::ClientIdNotPositive)?;
                filter.id = Some(id.unsigned_abs());
            }
            b"type" => match value.to_ascii_lowercase().as_slice() {
                b"normal" => filter.subscribed = Some(false),
                b"pubsub" => filter.subscribed = Some(true),
                b"master" | b"replica" | b"slave" => filter.nobody = true,
                _ => return Err(ClientError::UnknownClientType { kind: value.into() }),
            },
            b"addr" => filter.addr = Some(text()),
            b"laddr" => filter.laddr = Some(text()),
            b"user" => {
                let known = ctx.state.users.get_bytes(value).is_some();
                if !known {
                    return Err(ClientError::NoSuchUser { user: value.into() });
                }
                filter.user = Some(text());
            }
            b"skipme" => match value.to_ascii_lowercase().as_slice() {
                b"yes" => filter.skip = Some(ctx.client.id),
                b"no" => filter.skip = None,
                _ => return Err(ClientError::SyntaxError),
            },
            b"maxage" => {
                let age = parse_i64(value).ok_or(ClientError::NotAnInteger)?;
                filter.max_age = Some(u64::try_from(age).unwrap_or(0));
            }
            _ => return Err(ClientError::SyntaxError),
        }
        i += 2;
    }
    Ok(filter)
}

/// Closes every client `filter` matches; returns how many.
pub(super) fn close(ctx: &Ctx, filter: &KillFilter) -> usize {
    let targets = ctx.state.clients.matching(filter);
    for target in &targets {
        super::park::disconnect(&ctx.state, target);
    }
    targets.len()
}

/// Disconnects the clients of users another proxy of the fleet deleted, and the subscribed
/// clients of those it took channels from that are subscribed to what they lost (what that
/// proxy did to its own clients, as Redis does); returns how many.
pub fn disconnect_users(state: &ProxyState, dropped: &crate::users::Dropped) -> usize {
    let mut closed = 0;
    for name in &dropped.gone {
        let filter = KillFilter {
            user: Some(name.clone()),
            ..KillFilter::default()
        };
        for target in state.clients.matching(&filter) {
            super::park::disconnect(state, &target);
            closed += 1;
        }
    }
    for name in &dropped.lost_channels {
        closed += close_lost_subscribers(state, name);
    }
    closed
}

/// After user `name`'s channels were narrowed: closes its subscribed clients that are
/// subscribed to a channel or pattern its rules no longer allow (Redis 7.0's
/// `ACLKillPubsubClientsIfNeeded`), and keeps the others; returns how many it closed.
pub(super) fn close_lost_subscribers(state: &ProxyState, name: &str) -> usize {
    let Some(user) = state.users.get(name) else {
        return 0;
    };
    let filter = KillFilter {
        user: Some(name.to_owned()),
        subscribed: Some(true),
        ..KillFilter::default()
    };
    let mut closed = 0;
    for target in state.clients.matching(&filter) {
        // Out of the fields' lock before the session's (it never holds both either).
        let subscribed = target.fields().subscriptions.clone();
        let allowed = subscribed.is_some_and(|sets| {
            sets.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .allowed_by(&user.rules)
        });
        if allowed {
            continue;
        }
        super::park::disconnect(state, &target);
        closed += 1;
    }
    closed
}

/// `CLIENT PAUSE timeout [WRITE|ALL]`.
pub(super) fn pause(ctx: &Ctx, args: Args<'_>) -> Action {
    let all = match args.len() {
        3 => true,
        4 if args.get(3).eq_ignore_ascii_case(b"all") => true,
        4 if args.get(3).eq_ignore_ascii_case(b"write") => false,
        _ => return Action::error(ctx, ClientError::SyntaxError),
    };
    let Some(ms) = parse_i64(args.get(2)) else {
        return Action::error(ctx, ClientError::TimeoutNotAnInteger);
    };
    if ms < 0 {
        return Action::error(ctx, ClientError::TimeoutNegative);
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(ms.unsigned_abs());
    ctx.state.clients.pause(until, all);
    Action::reply(ctx, Bytes::from_static(encode::OK))
}

/// `CLIENT UNPAUSE`.
pub(super) fn unpause(ctx: &Ctx) -> Action {
    ctx.state.clients.unpause();
    Action::reply(ctx, Bytes::from_static(encode::OK))
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: 1 when the client was blocked, else 0.
pub(super) fn unblock(ctx: &Ctx, args: Args<'_>) -> Action {
    let how = match args.len() {
        3 => Unblock::Timeout,
        4 if args.get(3).eq_ignore_ascii_case(b"timeout") => Unblock::Timeout,
        4 if args.get(3).eq_ignore_ascii_case(b"error") => Unblock::Error,
        4 => return Action::error(ctx, ClientError::UnblockReason),
        _ => return Action::error(ctx, ClientError::SyntaxError),
    };
    let Some(id) = parse_i64(args.get(2)) else {
        return Action::error(ctx, ClientError::NotAnInteger);
    };
    let unblocked = u64::try_from(id)
        .ok()
        .and_then(|id| ctx.state.clients.get(id))
        .is_some_and(|target| target.unblock(how));
    Action::reply(
        ctx,
        Bytes::from_static(if unblocked { b":1\r\n" } else { b":0\r\n" }),
    )
}

/// What a blocked command (by its full name) gets when CLIENT UNBLOCK ends it `how` (Redis's
/// timeout reply: a null bulk for those that move one element, a null array for the others).
pub(super) fn unblocked_reply(command: &str, how: Unblock, protocol: Protocol) -> Bytes {
    match (how, protocol) {
        (Unblock::Error, _) => ClientError::Unblocked.to_reply(),
        (Unblock::Timeout, Protocol::Resp3) => Bytes::from_static(b"_\r\n"),
        (Unblock::Timeout, Protocol::Resp2) => {
            Bytes::from_static(if matches!(command, "blmove" | "brpoplpush") {
                encode::NULL_BULK
            } else {
                b"*-1\r\n"
            })
        }
    }
}

/// Whether a CLIENT PAUSE in force holds `spec` now: with the pause and a receiver told of
/// its changes. CLIENT PAUSE and UNPAUSE themselves are never held (a client can always
/// lift its pause).
pub(super) fn held_by_pause(
    ctx: &Ctx,
    spec: &CommandSpec,
) -> Option<(
    tokio::time::Instant,
    tokio::sync::watch::Receiver<Option<crate::clients::Pause>>,
)> {
    let (pause, changes) = ctx.state.clients.paused()?;
    if matches!(spec.id, CommandId::ClientPause | CommandId::ClientUnpause) {
        return None;
    }
    let writes = spec
        .flags
        .intersects(Flags::WRITE.union(Flags::MAY_REPLICATE))
        || spec.id == CommandId::Exec;
    (pause.all || writes).then_some((pause.until, changes))
}
