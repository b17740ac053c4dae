//! The client's user, checked on each request, and the ACL commands over the proxy's users
//! (WHOAMI, USERS, LIST, GETUSER, SETUSER, DELUSER, DRYRUN, LOG): see [`crate::users`].

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::dispatch::Action;
use super::{Closing, Ctx};
use crate::clients::KillFilter;
use crate::events::ControlEvent;
use crate::users::{LiveUser, LogEntry};
use redshard_protocol::acl::{self, Denied, SetUserError};
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{self, CommandSpec};
use redshard_protocol::resp::{encode, parse_i64, Args, Protocol};

/// The client's user name (`default` when it did not authenticate as a named user).
pub(super) fn user_name(ctx: &Ctx) -> &str {
    if ctx.user.is_empty() {
        "default"
    } else {
        &ctx.user
    }
}

/// Makes `user` the client's user: its rules for the checks, its level for scripts.
pub(super) fn set_user(ctx: &mut Ctx, name: &str, user: &Arc<LiveUser>) {
    ctx.user.clear();
    if name != "default" {
        ctx.user.push_str(name);
    }
    ctx.client.fields().user.clone_from(&ctx.user);
    adopt(ctx, user);
}

fn adopt(ctx: &mut Ctx, user: &Arc<LiveUser>) {
    ctx.acl = (!user.unrestricted).then(|| Arc::clone(user));
    ctx.access = user.scripts.unwrap_or(redshard_config::Access::All);
}

/// Looks the client's user up again when a user changed since it last did. A user that is
/// gone (ACL DELUSER) closes the connection, as Redis does; normally DELUSER already closed
/// it. Returns false then (the request is not served).
#[inline]
pub(super) fn refresh(ctx: &mut Ctx) -> bool {
    let now = ctx.state.users.generation();
    if now == ctx.users_seen {
        return true;
    }
    ctx.users_seen = now;
    match ctx.state.users.get(user_name(ctx)) {
        Some(user) => {
            adopt(ctx, &user);
            true
        }
        None => {
            ctx.closing = Closing::AfterReplies;
            false
        }
    }
}

/// Checks a request against the client's user (Redis's `ACLCheckAllPerm`), logs a refusal
/// in the ACL log, and answers it with Redis 7.2's NOPERM text. A script of a user whose
/// rules the nodes cannot enforce is refused too.
pub(super) fn check(
    ctx: &Ctx,
    spec: &'static CommandSpec,
    args: Args<'_>,
) -> Result<(), ClientError> {
    let Some(user) = ctx.acl.as_deref() else {
        return Ok(());
    };
    match user.rules.check(spec, &args) {
        Ok(()) => {}
        Err(denied) => {
            let (reason, object, error) = refusal(ctx, spec, args, denied);
            log(ctx, reason, object, user_name(ctx).as_bytes());
            return Err(error);
        }
    }
    // Redis refuses these while SORT runs, without an ACL log entry.
    match user.rules.sort_option_denied(spec, &args) {
        Some(acl::SortOption::By) => return Err(ClientError::SortByDenied),
        Some(acl::SortOption::Get) => return Err(ClientError::SortGetDenied),
        None => {}
    }
    if user.scripts.is_none() && super::dispatch::is_script(spec.id) {
        return Err(ClientError::AclScriptsRefused {
            user: user_name(ctx).to_owned(),
        });
    }
    Ok(())
}

/// EXEC's second check of a queued command (Redis's `execCommand`): the command, keys and
/// channels against the client's user now, a refusal logged with context `multi`.
pub(super) fn check_queued(
    ctx: &Ctx,
    spec: &'static CommandSpec,
    args: Args<'_>,
) -> Result<(), ClientError> {
    let Some(user) = ctx.acl.as_deref() else {
        return Ok(());
    };
    let denied = match user.rules.check(spec, &args) {
        Ok(()) => return Ok(()),
        Err(denied) => denied,
    };
    let (reason, object, _) = refusal(ctx, spec, args, denied);
    log_as(ctx, "multi", reason, object, user_name(ctx).as_bytes());
    Err(ClientError::AclChangedBeforeExec {
        reason: match denied {
            Denied::Command => "no permission to execute the command or subcommand",
            Denied::Key(_) => "no permission to touch the specified keys",
            Denied::Channel(_) => "no permission to access one of the channels used as arguments",
        },
    })
}

/// The ACL log's reason and object, and the client's error, of a refusal.
fn refusal(
    ctx: &Ctx,
    spec: &'static CommandSpec,
    args: Args<'_>,
    denied: Denied,
) -> (&'static str, Vec<u8>, ClientError) {
    match denied {
        Denied::Command => (
            "command",
            spec.name.as_bytes().to_vec(),
            ClientError::NoPerm {
                user: user_name(ctx).to_owned(),
                command: spec.name,
            },
        ),
        Denied::Key(at) => ("key", args.get(at).to_vec(), ClientError::NoPermKey),
        Denied::Channel(at) => ("channel", args.get(at).to_vec(), ClientError::NoPermChannel),
    }
}

/// Adds an entry to the ACL log.
pub(super) fn log(ctx: &Ctx, reason: &'static str, object: Vec<u8>, username: &[u8]) {
    let context = if ctx.tx.is_some() {
        "multi"
    } else {
        "toplevel"
    };
    log_as(ctx, context, reason, object, username);
}

fn log_as(
    ctx: &Ctx,
    context: &'static str,
    reason: &'static str,
    object: Vec<u8>,
    username: &[u8],
) {
    let entry = LogEntry {
        count: 1,
        reason,
        context,
        object,
        username: username.to_vec(),
        at: Instant::now(),
        client_info: ctx.client.line(0),
    };
    let max_len = ctx.state.live.now().limits.acllog_max_len;
    ctx.state.users.log(entry, max_len);
}

/// ACL WHOAMI.
pub(super) fn whoami(ctx: &Ctx) -> Action {
    let mut out = BytesMut::new();
    encode::bulk(&mut out, user_name(ctx).as_bytes());
    Action::reply(ctx, out.freeze())
}

/// ACL USERS and ACL LIST (`rules`: each user as its `ACL LIST` line), sorted by name.
pub(super) fn list(ctx: &Ctx, rules: bool) -> Action {
    let users = ctx.state.users.all();
    let mut out = BytesMut::new();
    encode::array_header(&mut out, users.len());
    for (name, user) in users.iter() {
        if rules {
            encode::bulk(&mut out, &crate::users::describe(user));
        } else {
            encode::bulk(&mut out, name.as_bytes());
        }
    }
    Action::reply(ctx, out.freeze())
}

/// ACL GETUSER name: Redis 7.0's description (a map in RESP3), or null for an unknown user.
pub(super) fn getuser(ctx: &Ctx, name: &[u8]) -> Action {
    let Some(user) = ctx.state.users.get_bytes(name) else {
        return Action::reply(ctx, super::local::null(ctx.protocol));
    };
    let rules = &user.rules;
    let mut out = BytesMut::new();
    encode::map_header(&mut out, ctx.protocol, 6);
    encode::bulk(&mut out, b"flags");
    let flags = rules.flags();
    set_header(&mut out, ctx.protocol, flags.len());
    for flag in flags {
        encode::bulk(&mut out, flag.as_bytes());
    }
    encode::bulk(&mut out, b"passwords");
    encode::array_header(&mut out, rules.passwords.len());
    for hash in &rules.passwords {
        encode::bulk(&mut out, hash.as_bytes());
    }
    selector_fields(&mut out, &rules.root);
    encode::bulk(&mut out, b"selectors");
    encode::array_header(&mut out, rules.selectors.len());
    for selector in &rules.selectors {
        encode::map_header(&mut out, ctx.protocol, 3);
        selector_fields(&mut out, selector);
    }
    Action::reply(ctx, out.freeze())
}

/// `commands`, `keys`, `channels` of a selector, as GETUSER shows them.
fn selector_fields(out: &mut BytesMut, selector: &acl::Selector) {
    encode::bulk(out, b"commands");
    encode::bulk(out, acl::describe_commands(selector).as_bytes());
    encode::bulk(out, b"keys");
    encode::bulk(out, &selector.keys_rules());
    encode::bulk(out, b"channels");
    encode::bulk(out, &selector.channels_rules());
}

/// A set's header: `~n` in RESP3, an array in RESP2.
fn set_header(out: &mut BytesMut, protocol: Protocol, len: usize) {
    match protocol {
        Protocol::Resp2 => encode::array_header(out, len),
        Protocol::Resp3 => out.extend_from_slice(format!("~{len}\r\n").as_bytes()),
    }
}

/// Has the controller save the users with the topology, then answers `success` (or why
/// they could not be saved).
fn save_then(ctx: &mut Ctx, success: Bytes) -> Action {
    let (done, answer) = tokio::sync::oneshot::channel();
    if !ctx
        .state
        .router
        .pool()
        .report(ControlEvent::SaveUsers { done })
    {
        // No controller (the proxy is stopping): nothing to save them with.
        return Action::reply(ctx, success);
    }
    let slot = ctx.queue.reserve();
    ctx.barrier = true;
    tokio::spawn(async move {
        let reply = match answer.await {
            Ok(reply) if reply.starts_with(b"+") => success,
            Ok(error) => error,
            // Dropped only when the proxy stops first.
            Err(_) => ClientError::LaneClosed.to_reply(),
        };
        slot.deliver(reply);
    });
    Action::Done
}

/// After `CONFIG SET requirepass` with other parameters: the users are saved while the
/// nodes apply the rest (the client gets the nodes' answer).
pub(super) fn save_in_background(ctx: &Ctx) {
    let (done, _answer) = tokio::sync::oneshot::channel();
    ctx.state
        .router
        .pool()
        .report(ControlEvent::SaveUsers { done });
}

/// `CONFIG SET requirepass` alone: saved, then `+OK`.
pub(super) fn save_requirepass(ctx: &mut Ctx) -> Action {
    save_then(ctx, Bytes::from_static(encode::OK))
}

/// ACL SETUSER name [rule ...].
pub(super) fn setuser(ctx: &mut Ctx, args: Args<'_>) -> Action {
    let name = args.get(2);
    if !acl::valid_name(name) {
        return Action::error(ctx, ClientError::AclUsernameSpaces);
    }
    let Ok(name) = std::str::from_utf8(name).map(str::to_owned) else {
        return Action::error(ctx, ClientError::AclUsernameNotUtf8);
    };
    let rules: Vec<&[u8]> = (3..args.len()).map(|i| args.get(i)).collect();
    match ctx.state.users.set_user(&name, &rules) {
        Ok(lost_channels) => {
            if lost_channels {
                // Redis disconnects the user's clients subscribed to what it lost.
                super::client::close_lost_subscribers(&ctx.state, &name);
            }
            save_then(ctx, Bytes::from_static(encode::OK))
        }
        Err(SetUserError::Rule { op, why }) => {
            Action::error(ctx, ClientError::AclSetuser { op: op.into(), why })
        }
        Err(SetUserError::UnmatchedParen { op }) => {
            Action::error(ctx, ClientError::AclUnmatchedParen { op: op.into() })
        }
    }
}

/// ACL DELUSER name [name ...]: the number removed; their clients are disconnected.
pub(super) fn deluser(ctx: &mut Ctx, args: Args<'_>) -> Action {
    // A name that is not UTF-8 names no user.
    let names: Vec<String> = (2..args.len())
        .filter_map(|i| std::str::from_utf8(args.get(i)).ok().map(str::to_owned))
        .collect();
    if names.iter().any(|n| n == "default") {
        return Action::error(ctx, ClientError::AclDefaultUndeletable);
    }
    let deleted = ctx.state.users.delete(&names);
    for name in &names {
        let filter = KillFilter {
            user: Some(name.clone()),
            ..KillFilter::default()
        };
        super::client::close(ctx, &filter);
    }
    let mut out = BytesMut::new();
    encode::integer(&mut out, deleted as i64);
    if deleted == 0 {
        return Action::reply(ctx, out.freeze());
    }
    save_then(ctx, out.freeze())
}

/// ACL DRYRUN user command [arg ...]: `+OK`, or why the user may not run it (a bulk string).
pub(super) fn dryrun(ctx: &Ctx, args: Args<'_>) -> Action {
    let Some(user) = ctx.state.users.get_bytes(args.get(2)) else {
        return Action::error(
            ctx,
            ClientError::AclUserNotFound {
                user: args.get(2).into(),
            },
        );
    };
    let request: Vec<&[u8]> = (3..args.len()).map(|i| args.get(i)).collect();
    let spec = match command::resolve(&request) {
        Ok(spec) => spec,
        Err(e) if e.command().is_some() => return Action::error(ctx, ClientError::Command(e)),
        Err(_) => {
            return Action::error(
                ctx,
                ClientError::AclCommandNotFound {
                    command: args.get(3).into(),
                },
            )
        }
    };
    match user.rules.check(spec, &request) {
        Ok(()) => Action::reply(ctx, Bytes::from_static(encode::OK)),
        Err(denied) => {
            let text = acl::dryrun_text(denied, spec, &request);
            let mut out = BytesMut::new();
            encode::bulk(&mut out, &text);
            Action::reply(ctx, out.freeze())
        }
    }
}

/// ACL LOG [count | RESET]: the newest entries (10 by default), as Redis 7.0 shows them.
pub(super) fn acl_log(ctx: &Ctx, args: Args<'_>) -> Action {
    let mut count = 10usize;
    if args.len() == 3 {
        let arg = args.get(2);
        if arg.eq_ignore_ascii_case(b"reset") {
            ctx.state.users.reset_log();
            return Action::reply(ctx, Bytes::from_static(encode::OK));
        }
        match parse_i64(arg) {
            Some(n) => count = usize::try_from(n).unwrap_or(0),
            None => return Action::error(ctx, ClientError::NotAnInteger),
        }
    } else if args.len() > 3 {
        return Action::error(
            ctx,
            ClientError::AclSubcommandSyntax {
                subcommand: args.get(1).into(),
            },
        );
    }
    let entries = ctx.state.users.log_entries(count);
    let now = Instant::now();
    let mut out = BytesMut::new();
    encode::array_header(&mut out, entries.len());
    for e in &entries {
        encode::map_header(&mut out, ctx.protocol, 7);
        encode::bulk(&mut out, b"count");
        encode::integer(&mut out, i64::try_from(e.count).unwrap_or(i64::MAX));
        for (key, value) in [
            ("reason", e.reason.as_bytes()),
            ("context", e.context.as_bytes()),
            ("object", &e.object),
            ("username", &e.username),
        ] {
            encode::bulk(&mut out, key.as_bytes());
            encode::bulk(&mut out, value);
        }
        encode::bulk(&mut out, b"age-seconds");
        let age = now.saturating_duration_since(e.at).as_secs_f64();
        match ctx.protocol {
            Protocol::Resp2 => encode::bulk(&mut out, age.to_string().as_bytes()),
            Protocol::Resp3 => out.extend_from_slice(format!(",{age}\r\n").as_bytes()),
        }
        encode::bulk(&mut out, b"client-info");
        encode::bulk(&mut out, e.client_info.as_bytes());
    }
    Action::reply(ctx, out.freeze())
}
