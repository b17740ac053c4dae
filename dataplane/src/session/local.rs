//! Commands the proxy answers itself: the connection's own state (PING, ECHO, QUIT, SELECT,
//! AUTH, HELLO, RESET, CLIENT ...), and what describes the proxy rather than one node (INFO,
//! COMMAND COUNT / GETKEYS, CONFIG GET); the operators' commands are in `admin.rs`.

use bytes::{Bytes, BytesMut};

use super::dispatch::Action;
use super::{info, Closing, Ctx};
use std::sync::Arc;

use crate::users::LiveUser;

use crate::clients::ListFilter;
use crate::events::{ControlEvent, ScriptKill};
use crate::router::RoutingTable;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{self, CommandSpec, Local, REDIS_VERSION};
use redshard_protocol::resp::{encode, parse_i64, Args, Protocol};

/// Answers a `Route::Local` command.
pub(super) fn handle(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &'static CommandSpec,
    args: Args<'_>,
) -> Action {
    // Only `Route::Local` commands come here, and those are exactly the ones `Local::of` knows.
    let Some(local) = Local::of(spec.id) else {
        return Action::error(ctx, ClientError::Unsupported { command: spec.name });
    };
    match local {
        Local::Ping => match args.len() {
            1 => Action::reply(ctx, Bytes::from_static(encode::PONG)),
            2 => bulk(ctx, args.get(1)),
            _ => Action::error(ctx, ClientError::WrongArity { command: "ping" }),
        },
        Local::Echo => bulk(ctx, args.get(1)),
        Local::Quit => {
            ctx.closing = Closing::AfterReplies;
            Action::reply(ctx, Bytes::from_static(encode::OK))
        }
        Local::Select => select(ctx, args.get(1)),
        Local::Wait => wait(ctx, args),
        Local::NotACluster => Action::error(ctx, ClientError::ClusterDisabled),
        Local::Auth => auth(ctx, args),
        Local::Hello => hello(ctx, args),
        Local::Reset => {
            // Like Redis: out of MULTI, UNWATCH (closing the private connection forgets what
            // it watched), unsubscribed, out of MONITOR, replies on, logged out, back to
            // RESP2, database 0 and no name.
            super::admin::stop_monitoring(ctx);
            super::reply_mode::reset(ctx);
            if ctx.tx.take().is_some() {
                ctx.client.set_multi(None);
            }
            if ctx.watch.take().is_some() {
                ctx.private = None;
            }
            ctx.authenticated = ctx.state.users.open_by_default();
            ctx.user.clear();
            ctx.client.fields().user.clear();
            // Back to the default user's rules, looked up at the next request.
            ctx.users_seen = u64::MAX;
            ctx.client.fields().name.clear();
            ctx.db = 0;
            ctx.client.set_db(0);
            ctx.pubsub = None;
            super::pubsub::show_subscriptions(ctx);
            super::tracking::reset(ctx);
            if ctx.protocol != Protocol::Resp2 {
                ctx.protocol = Protocol::Resp2;
                ctx.client.fields().resp = 2;
                ctx.barrier = true;
            }
            Action::reply(ctx, Bytes::from_static(b"+RESET\r\n"))
        }
        Local::Info => info::info(ctx, table, args),
        Local::CommandCount => {
            let mut out = BytesMut::new();
            encode::integer(&mut out, command::commands().count() as i64);
            Action::reply(ctx, out.freeze())
        }
        Local::CommandGetkeys => getkeys(ctx, args),
        // The full command documentation is the backends' own (same version as our table).
        Local::FromBackend => Action::Forward {
            shard: super::dispatch::keyless_shard(table),
            slot: 0,
            mirror: None,
        },
        Local::ConfigGet => config_get(ctx, table, args),
        // Its arity (-2) lets any count of arguments through; SLOWLOG itself takes one.
        Local::SlowlogGet if args.len() > 3 => Action::error(
            ctx,
            ClientError::SlowlogSyntax {
                subcommand: args.get(1).into(),
            },
        ),
        Local::SlowlogGet => {
            let count = if args.len() > 2 {
                match parse_i64(args.get(2)) {
                    Some(n) if n >= -1 => n,
                    _ => return Action::error(ctx, ClientError::SlowlogCount),
                }
            } else {
                10
            };
            Action::reply(ctx, ctx.state.slowlog.get(count))
        }
        Local::SlowlogLen => {
            let mut out = BytesMut::new();
            encode::integer(&mut out, ctx.state.slowlog.len() as i64);
            Action::reply(ctx, out.freeze())
        }
        Local::SlowlogReset => {
            ctx.state.slowlog.reset();
            Action::reply(ctx, Bytes::from_static(encode::OK))
        }
        Local::ClientId => {
            let mut out = BytesMut::new();
            encode::integer(&mut out, ctx.client.id as i64);
            Action::reply(ctx, out.freeze())
        }
        Local::ClientSetname => match set_name(ctx, args.get(2)) {
            Ok(()) => Action::reply(ctx, Bytes::from_static(encode::OK)),
            Err(e) => Action::error(ctx, e),
        },
        Local::ClientGetname => {
            let name = ctx.client.fields().name.clone();
            if name.is_empty() {
                Action::reply(ctx, null(ctx.protocol))
            } else {
                bulk(ctx, name.as_bytes())
            }
        }
        Local::ClientSetinfo => client_setinfo(ctx, args),
        Local::ClientInfo => {
            let line = ctx.client.line(argv_mem(&args)) + "\n";
            text(ctx, line.as_bytes())
        }
        Local::ClientList => match list_filter(args) {
            Ok(filter) => {
                let list = ctx
                    .state
                    .clients
                    .list(&filter, (ctx.client.id, argv_mem(&args)));
                text(ctx, list.as_bytes())
            }
            Err(e) => Action::error(ctx, e),
        },
        Local::ClientFlag => Action::reply(ctx, Bytes::from_static(encode::OK)),
        Local::ScriptKill => kill_script(ctx, spec, ScriptKill::Script),
        Local::FunctionKill => kill_script(ctx, spec, ScriptKill::Function),
        Local::ClientKill => super::client::kill(ctx, args),
        Local::ClientPause => super::client::pause(ctx, args),
        Local::ClientUnpause => super::client::unpause(ctx),
        Local::ClientUnblock => super::client::unblock(ctx, args),
        Local::Tracking => super::tracking::handle(ctx, spec, args),
        Local::EveryNode => super::admin::every_node(ctx, spec, args),
        Local::Monitor => super::admin::monitor(ctx),
        Local::ClientReply => super::reply_mode::client_reply(ctx, args.get(2)),
        Local::Replicaof => super::admin::replicaof(ctx, spec, args),
        Local::EveryMaster => super::admin::every_master(ctx, spec, args),
        Local::ModuleList => Action::reply(ctx, Bytes::from_static(b"*0\r\n")),
        Local::AclWhoami => super::acl::whoami(ctx),
        Local::AclUsers => super::acl::list(ctx, false),
        Local::AclList => super::acl::list(ctx, true),
        Local::AclGetuser => super::acl::getuser(ctx, args.get(2)),
        Local::AclSetuser => super::acl::setuser(ctx, args),
        Local::AclDeluser => super::acl::deluser(ctx, args),
        Local::AclDryrun => super::acl::dryrun(ctx, args),
        Local::AclLog => super::acl::acl_log(ctx, args),
    }
}

/// SCRIPT KILL / FUNCTION KILL: the controller asks every master on connections of its own
/// (the lanes queue behind the running script) and says what the client gets.
fn kill_script(ctx: &mut Ctx, spec: &'static CommandSpec, which: ScriptKill) -> Action {
    ask_controller(ctx, spec, |done| ControlEvent::KillScript { which, done })
}

/// A command the controller runs on connections of its own (`event` carries where its
/// answer goes): the client's reply is what the controller answers; without a controller
/// (a proxy embedded without one) the command is unsupported.
pub(super) fn ask_controller(
    ctx: &mut Ctx,
    spec: &'static CommandSpec,
    event: impl FnOnce(tokio::sync::oneshot::Sender<Bytes>) -> ControlEvent,
) -> Action {
    let (done, answer) = tokio::sync::oneshot::channel();
    if !ctx.state.router.pool().report(event(done)) {
        return Action::error(ctx, ClientError::Unsupported { command: spec.name });
    }
    let slot = ctx.queue.reserve();
    ctx.barrier = true;
    tokio::spawn(async move {
        // Dropped only when the proxy stops first.
        let reply = answer
            .await
            .unwrap_or_else(|_| ClientError::LaneClosed.to_reply());
        slot.deliver(reply);
    });
    Action::Done
}

/// The bytes of a command's arguments (CLIENT LIST's `argv-mem` of the client running it).
fn argv_mem(args: &Args<'_>) -> usize {
    args.iter().map(<[u8]>::len).sum()
}

/// `CLIENT LIST [TYPE type | ID id...]`, with Redis 7.0's argument rules and errors.
fn list_filter(args: Args<'_>) -> Result<ListFilter, ClientError> {
    let option = (args.len() > 2).then(|| args.get(2));
    match (args.len(), option) {
        (2, _) => Ok(ListFilter::All),
        (4, Some(o)) if o.eq_ignore_ascii_case(b"type") => {
            let kind = args.get(3);
            let lower = kind.to_ascii_lowercase();
            match lower.as_slice() {
                b"normal" => Ok(ListFilter::Subscribed(false)),
                b"pubsub" => Ok(ListFilter::Subscribed(true)),
                b"master" | b"replica" | b"slave" => Ok(ListFilter::Nobody),
                _ => Err(ClientError::UnknownClientType { kind: kind.into() }),
            }
        }
        (n, Some(o)) if n > 3 && o.eq_ignore_ascii_case(b"id") => args
            .iter()
            .skip(3)
            .map(|id| parse_i64(id).ok_or(ClientError::InvalidClientId))
            .collect::<Result<_, _>>()
            .map(ListFilter::Ids),
        _ => Err(ClientError::SyntaxError),
    }
}

/// A text reply (verbatim in RESP3), as Redis answers CLIENT INFO and CLIENT LIST.
fn text(ctx: &Ctx, value: &[u8]) -> Action {
    Action::reply(ctx, encode::text(ctx.protocol, value))
}

fn bulk(ctx: &Ctx, value: &[u8]) -> Action {
    let mut out = BytesMut::with_capacity(value.len() + 16);
    encode::bulk(&mut out, value);
    Action::reply(ctx, out.freeze())
}

/// `WAIT numreplicas timeout`: the number of replicas that applied this client's writes.
///
/// The answer is the fewest replicas, over the shards, known to hold every write answered
/// before it ([`ShardRoute::acknowledging_replicas`](crate::router::ShardRoute::acknowledging_replicas)):
/// at once when that is enough, else when the timeout ends, and never for timeout 0, as Redis
/// does. Under Redis replication with `async` acknowledgement that is 0.
fn wait(ctx: &mut Ctx, args: Args<'_>) -> Action {
    // Redis reads (and refuses) the count before the timeout, each with its own error.
    let Some(replicas) = parse_i64(args.get(1)) else {
        return Action::error(ctx, ClientError::NotAnInteger);
    };
    let Some(timeout_ms) = parse_i64(args.get(2)) else {
        return Action::error(ctx, ClientError::TimeoutNotAnInteger);
    };
    if timeout_ms < 0 {
        return Action::error(ctx, ClientError::TimeoutNegative);
    }
    if replicas <= 0 {
        return Action::reply(ctx, Bytes::from_static(b":0\r\n"));
    }
    let reply = ctx.queue.reserve();
    ctx.waiting = true;
    ctx.barrier = true;
    // The routes, not the table: a table held for the whole wait would hold up the epoch
    // barrier of a topology change.
    let routes = ctx.state.router.load().shards().to_vec();
    let wanted = usize::try_from(replicas).unwrap_or(usize::MAX);
    let deadline = (timeout_ms > 0).then(|| {
        tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.unsigned_abs())
    });
    tokio::spawn(async move {
        // Every write this client was answered before WAIT went through its slot's lane; a
        // mirrored PING behind it on every lane of every shard has been applied by a replica
        // only after all of them. The answer is the fewest replicas that did, over the shards.
        let bound = deadline.map_or(std::time::Duration::from_secs(3600), |d| {
            d.saturating_duration_since(tokio::time::Instant::now())
        });
        let mut applied = usize::MAX;
        for route in &routes {
            let done = crate::router::barrier(route, true, bound).await;
            let count = if done {
                route.acknowledging_replicas()
            } else {
                0
            };
            applied = applied.min(count);
        }
        let applied = if applied == usize::MAX { 0 } else { applied };
        if applied < wanted {
            match deadline {
                // Redis waits for the timeout before answering with fewer replicas.
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // Blocks forever, like Redis: the session ends as soon as the client leaves.
                None => return drop(reply),
            }
        }
        reply.deliver(Bytes::from(format!(":{applied}\r\n")));
    });
    Action::Done
}

/// SELECT: the database every later request of the client runs in, as on one server (each
/// node has the same databases; the lanes switch to the request's).
fn select(ctx: &mut Ctx, db: &[u8]) -> Action {
    let databases = ctx.state.config.backend.databases;
    match parse_i64(db) {
        // Redis reads the index as a C int, then checks it against `databases`.
        Some(n) => match u16::try_from(n) {
            Ok(db) if u32::from(db) < databases => {
                ctx.db = db;
                ctx.client.set_db(db);
                Action::reply(ctx, Bytes::from_static(encode::OK))
            }
            _ if i32::try_from(n).is_err() => Action::error(ctx, ClientError::IntOutOfRange),
            _ => Action::error(ctx, ClientError::DbIndexOutOfRange),
        },
        None => Action::error(ctx, ClientError::NotAnInteger),
    }
}

/// Checks credentials against the live users (`None`: `AUTH password`, the default user).
/// A failure is logged in the ACL log (reason `auth`, the command as the client wrote it as
/// the object) as Redis does.
fn check_credentials(
    ctx: &Ctx,
    command: &[u8],
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(String, Arc<LiveUser>), ClientError> {
    let name = user.map_or_else(
        || "default".to_owned(),
        |u| String::from_utf8_lossy(u).into_owned(),
    );
    if user.is_none()
        && ctx
            .state
            .users
            .get("default")
            .is_some_and(|d| d.rules.nopass)
    {
        return Err(ClientError::AuthWithoutPassword);
    }
    // A name that is not UTF-8 names no user (not the one its lossy text would name).
    let found = match user.map(std::str::from_utf8) {
        Some(Err(_)) => None,
        _ => ctx.state.users.authenticate(&name, password),
    };
    match found {
        Some(found) => Ok((name, found)),
        None => {
            super::acl::log(ctx, "auth", command.to_vec(), user.unwrap_or(b"default"));
            Err(ClientError::WrongPass)
        }
    }
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
/// Also checks the admin port's password.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn auth(ctx: &mut Ctx, args: Args<'_>) -> Action {
    if !(2..=3).contains(&args.len()) {
        return Action::error(ctx, ClientError::SyntaxError);
    }
    let turn = source_turn(ctx);
    let result = match args.len() {
        2 => check_credentials(ctx, args.get(0), None, args.get(1)),
        _ => check_credentials(ctx, args.get(0), Some(args.get(1)), args.get(2)),
    };
    match result {
        Ok((name, user)) => {
            ctx.authenticated = true;
            super::acl::set_user(ctx, &name, &user);
            let ok = Bytes::from_static(encode::OK);
            match turn {
                Some(wait) => answer_later(ctx, wait, ok),
                None => Action::reply(ctx, ok),
            }
        }
        Err(e) => auth_failed(ctx, e, turn),
    }
}

/// When the client's address failed AUTH recently (on any connection), how long this
/// attempt's answer waits for the address's next turn (see [`crate::auth_throttle`]); `None`
/// to answer at once, and always without any password configured (nothing to guess).
fn source_turn(ctx: &Ctx) -> Option<std::time::Duration> {
    if !ctx.state.users.any_password() {
        return None;
    }
    let step = ctx.state.live.now().limits.auth_failure_delay;
    ctx.state
        .auth_throttle
        .turn(ctx.client.addr.ip(), step, std::time::Instant::now())
}

/// Answers `reply` after `delay`; nothing after it may overtake it (later requests wait).
fn answer_later(ctx: &mut Ctx, delay: std::time::Duration, reply: Bytes) -> Action {
    let slot = ctx.queue.reserve();
    ctx.barrier = true;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        slot.deliver(reply);
    });
    Action::Done
}

/// The error, answered at the address's turn when HELLO's AUTH took one: any answer after an
/// AUTH attempt waits for it, or it would tell whether the password was right.
fn error_at_turn(ctx: &mut Ctx, turn: Option<std::time::Duration>, error: ClientError) -> Action {
    match turn {
        Some(wait) => answer_later(ctx, wait, error.to_reply()),
        None => Action::error(ctx, error),
    }
}

/// A failed AUTH (or HELLO AUTH): logged without the password, counted against the client's
/// address, and answered after a delay that grows with each failure on this connection and
/// is at least the wait for the address's turn (`turn`), so guessing is slow over one
/// connection and over many.
fn auth_failed(ctx: &mut Ctx, error: ClientError, turn: Option<std::time::Duration>) -> Action {
    if !ctx.state.users.any_password() {
        // Not a guess: the proxy has no password at all.
        return Action::error(ctx, error);
    }
    ctx.auth_failures = ctx.auth_failures.saturating_add(1);
    tracing::warn!(client = %ctx.client.addr, failures = ctx.auth_failures, throttled = turn.is_some(), "AUTH failed");
    let live = ctx.state.live.now();
    let step = live.limits.auth_failure_delay;
    ctx.state.auth_throttle.failed(
        ctx.client.addr.ip(),
        step,
        live.limits.auth_throttle_sources,
        std::time::Instant::now(),
    );
    let delay = (step * ctx.auth_failures.min(20)).max(turn.unwrap_or_default());
    drop(live);
    if delay.is_zero() {
        return Action::error(ctx, error);
    }
    answer_later(ctx, delay, error.to_reply())
}

/// CLIENT SETNAME's rule: printable ASCII without spaces.
fn set_name(ctx: &Ctx, name: &[u8]) -> Result<(), ClientError> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(ClientError::ClientNameInvalid);
    }
    ctx.client.fields().name = String::from_utf8_lossy(name).into_owned();
    Ok(())
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value` (Redis 7.2; clients send it on connect).
fn client_setinfo(ctx: &Ctx, args: Args<'_>) -> Action {
    if args.len() != 4 {
        return Action::error(
            ctx,
            ClientError::WrongArity {
                command: "client|setinfo",
            },
        );
    }
    let value = args.get(3);
    if value.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Action::error(ctx, ClientError::LibInfoInvalid);
    }
    let value = String::from_utf8_lossy(value).into_owned();
    let attr = args.get(2);
    if attr.eq_ignore_ascii_case(b"lib-name") {
        ctx.client.fields().lib_name = value;
    } else if attr.eq_ignore_ascii_case(b"lib-ver") {
        ctx.client.fields().lib_ver = value;
    } else {
        return Action::error(
            ctx,
            ClientError::UnrecognizedOption {
                option: attr.into(),
            },
        );
    }
    Action::reply(ctx, Bytes::from_static(encode::OK))
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: switches the protocol, authenticates,
/// names the connection, and describes the server (a map in RESP3, a flat array in RESP2).
fn hello(ctx: &mut Ctx, args: Args<'_>) -> Action {
    let mut protocol = ctx.protocol;
    if args.len() >= 2 {
        protocol = match parse_i64(args.get(1)) {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Action::error(ctx, ClientError::NoProto),
            None => return Action::error(ctx, ClientError::ProtocolVersionNotInteger),
        };
    }
    let mut i = 2;
    let mut name = None;
    // The wait for the address's turn, when HELLO carries AUTH (see `auth`).
    let mut turn = None;
    while i < args.len() {
        let option = args.get(i);
        let more = args.len() - i - 1;
        if option.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            turn = source_turn(ctx);
            match check_credentials(ctx, args.get(0), Some(args.get(i + 1)), args.get(i + 2)) {
                Ok((name, user)) => super::acl::set_user(ctx, &name, &user),
                Err(e) => return auth_failed(ctx, e, turn),
            }
            ctx.authenticated = true;
            i += 3;
        } else if option.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            name = Some(args.get(i + 1));
            i += 2;
        } else {
            let error = ClientError::HelloSyntax {
                option: option.into(),
            };
            return error_at_turn(ctx, turn, error);
        }
    }
    if !ctx.authenticated {
        return Action::error(ctx, ClientError::HelloNoAuth);
    }
    if let Some(name) = name {
        if let Err(e) = set_name(ctx, name) {
            return error_at_turn(ctx, turn, e);
        }
    }
    if protocol != ctx.protocol {
        ctx.protocol = protocol;
        ctx.client.fields().resp = if protocol == Protocol::Resp3 { 3 } else { 2 };
        // Earlier requests travel on the other protocol's lanes: let them finish first.
        ctx.barrier = true;
    }
    let mut out = BytesMut::new();
    encode::map_header(&mut out, protocol, 7);
    for (key, value) in [("server", "redis"), ("version", REDIS_VERSION)] {
        encode::bulk(&mut out, key.as_bytes());
        encode::bulk(&mut out, value.as_bytes());
    }
    encode::bulk(&mut out, b"proto");
    encode::integer(&mut out, if protocol == Protocol::Resp3 { 3 } else { 2 });
    encode::bulk(&mut out, b"id");
    encode::integer(&mut out, ctx.client.id as i64);
    for (key, value) in [("mode", "standalone"), ("role", "master")] {
        encode::bulk(&mut out, key.as_bytes());
        encode::bulk(&mut out, value.as_bytes());
    }
    encode::bulk(&mut out, b"modules");
    encode::array_header(&mut out, 0);
    match turn {
        Some(wait) => answer_later(ctx, wait, out.freeze()),
        None => Action::reply(ctx, out.freeze()),
    }
}

/// The null reply of the client's protocol: `$-1` in RESP2, `_` in RESP3.
pub(crate) fn null(protocol: Protocol) -> Bytes {
    Bytes::from_static(match protocol {
        Protocol::Resp2 => encode::NULL_BULK,
        Protocol::Resp3 => b"_\r\n",
    })
}

/// COMMAND GETKEYS from redshard's own table (what the proxy routes by), with Redis's answers:
/// a command without key specs is refused, so is an argument count its arity refuses; a call
/// that names no key gets `*0` from a command whose keys are optional (EVAL, FCALL with 0
/// keys), else Redis's invalid-arguments error.
fn getkeys(ctx: &mut Ctx, args: Args<'_>) -> Action {
    let inner: Vec<&[u8]> = args.iter().skip(2).collect();
    // Redis looks the command up first, then says whether it has keys, then checks the arity.
    let spec = match command::resolve(inner.as_slice()) {
        Ok(spec) => spec,
        Err(e) if e.kind() == command::CommandErrorKind::WrongArity => {
            let has_keys = e
                .command()
                .and_then(|id| command::all_specs().find(|s| s.id == id))
                .is_some_and(|s| !s.key_specs.is_empty() || s.first_key != 0);
            return Action::error(
                ctx,
                if has_keys {
                    ClientError::GetKeysArity
                } else {
                    ClientError::NoKeyArguments
                },
            );
        }
        Err(_) => return Action::error(ctx, ClientError::InvalidCommandSpecified),
    };
    if spec.key_specs.is_empty() && spec.first_key == 0 {
        return Action::error(ctx, ClientError::NoKeyArguments);
    }
    if spec.key_indices(inner.as_slice(), &mut ctx.keys).is_err() || ctx.keys.is_empty() {
        if ctx.keys.is_empty() && spec.flags.contains(command::Flags::NO_MANDATORY_KEYS) {
            return Action::reply(ctx, Bytes::from_static(b"*0\r\n"));
        }
        return Action::error(ctx, ClientError::GetKeysInvalidArguments);
    }
    let mut out = BytesMut::new();
    encode::array_header(&mut out, ctx.keys.len());
    for &k in &ctx.keys {
        encode::bulk(&mut out, inner[k]);
    }
    Action::reply(ctx, out.freeze())
}

/// CONFIG GET: asked of one master (any that is up), with the parameters the proxy owns
/// answered from the proxy's own view (see [`proxy_config`]); clients read these to adapt
/// themselves.
fn config_get(ctx: &Ctx, table: &RoutingTable, args: Args<'_>) -> Action {
    let patterns: Vec<&[u8]> = args.iter().skip(2).collect();
    let overrides = proxy_config(ctx, &patterns);
    let parts: Vec<&[u8]> = args.iter().collect();
    let mut request = BytesMut::new();
    encode::request(&mut request, &parts);
    let seq = ctx.queue.reserve_gather(
        1,
        super::merge::MergePlan::ConfigGet {
            overrides,
            protocol: ctx.protocol,
        },
    );
    let shard = super::dispatch::keyless_shard(table);
    table.shards()[shard].master.lane(0).send(
        request.freeze(),
        ctx.queue.part(seq, 0),
        ctx.protocol,
    );
    Action::Done
}

/// The parameters whose values are the proxy's, not a master's, that any of `patterns`
/// matches, each once, with the proxy's values.
pub(super) fn proxy_config(ctx: &Ctx, patterns: &[&[u8]]) -> Vec<(&'static str, String)> {
    let live = ctx.state.live.now();
    let limits = &live.limits;
    let values: [(&'static str, String); 13] = [
        ("databases", ctx.state.config.backend.databases.to_string()),
        ("maxclients", limits.max_clients.to_string()),
        ("proto-max-bulk-len", limits.max_bulk_bytes.to_string()),
        (
            "client-query-buffer-limit",
            limits.max_query_buffer_bytes.to_string(),
        ),
        ("timeout", limits.client_timeout.as_secs().to_string()),
        ("cluster-enabled", "no".into()),
        ("port", ctx.state.port.to_string()),
        ("save", String::new()),
        ("appendonly", "no".into()),
        // SLOWLOG is the proxy's own (CONFIG SET changes these too).
        (
            "slowlog-log-slower-than",
            live.slowlog.log_slower_than_us.to_string(),
        ),
        ("slowlog-max-len", live.slowlog.max_len.to_string()),
        // The default user's password and the ACL log are the proxy's (CONFIG SET too).
        (
            "requirepass",
            String::from_utf8_lossy(&ctx.state.users.requirepass()).into_owned(),
        ),
        ("acllog-max-len", limits.acllog_max_len.to_string()),
    ];
    let mut matched: Vec<(&'static str, String)> = Vec::new();
    for pattern in patterns {
        for (name, value) in &values {
            if glob_match(pattern, name.as_bytes()) && !matched.iter().any(|m| m.0 == *name) {
                matched.push((name, value.clone()));
            }
        }
    }
    matched
}

/// Redis's glob, case-insensitive as CONFIG GET uses it.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    redshard_protocol::glob::matches(pattern, text, true)
}
