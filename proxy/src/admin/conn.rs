//! One admin connection: reads requests with the proxy's own [`RequestScanner`], runs them
//! one at a time in order, writes each reply.

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::budget::Slot;
use super::commands::{self, Args, Command};
use super::fleet::{Fleet, Route};
use super::reply::Reply;
use crate::resp::{FrameKind, ProtocolError, RequestScanner, ScanLimits};
use redshard_control::Controller;
use redshard_dataplane::auth_throttle::AuthThrottle;
use redshard_dataplane::shutdown::Shutdown;

/// Admin requests are short (names, addresses, passwords, slot ranges): bounds far below the
/// client port's, so one connection buffers at most about 8 MiB whatever it sends (8192
/// ranges cover any slot list).
const LIMITS: ScanLimits = ScanLimits {
    max_multibulk_len: 8192,
    max_bulk_len: 1024,
    max_inline_len: 64 * 1024,
};

/// Bounds before AUTH, as Redis bounds unauthenticated clients (at most 10 arguments; here
/// 1 KiB each, the admin port's bound anyway, and 16 KiB inline): a connection that has not
/// proved anything holds at most about 16 KiB of input, however much it sends.
const UNAUTHENTICATED_LIMITS: ScanLimits = ScanLimits {
    max_multibulk_len: 10,
    max_bulk_len: 1024,
    max_inline_len: 16 * 1024,
};

/// Who is connected, for logs and for the rules that differ.
#[derive(Clone, Copy, Debug)]
pub enum AdminPeer {
    /// A TCP client (`admin_listen`).
    Tcp(std::net::SocketAddr),
    /// A client of the Unix socket (`admin_socket`), with its uid.
    Unix {
        /// The peer's user id, as the kernel reports it.
        uid: u32,
    },
}

impl fmt::Display for AdminPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminPeer::Tcp(addr) => write!(f, "{addr}"),
            AdminPeer::Unix { uid } => write!(f, "unix socket, uid {uid}"),
        }
    }
}

/// What the connection does after a reply.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// Reads the next request.
    Continue,
    /// Closes the connection once the reply is written (QUIT, protocol errors, no room
    /// after AUTH).
    Close,
}

/// One admin client.
#[derive(Debug)]
pub struct AdminConn {
    /// Runs the commands.
    controller: Arc<Controller>,
    /// Whether the connection may run commands: a socket client, a TCP client after AUTH
    /// (or any TCP client of a listener started without `admin_password`, see
    /// [`crate::Proxy::start_admin`]).
    authenticated: bool,
    /// Its place in the connection budget: waiting to AUTH, or authenticated.
    slot: Option<Slot>,
    /// Set when AUTH succeeded but the authenticated budget is full.
    refused: bool,
    /// Failed AUTH attempts, each answered later than the previous one.
    auth_failures: u32,
    /// The peer, for logs.
    peer: AdminPeer,
    /// The TCP admin port's failed-AUTH table, shared by its connections, so guessing in
    /// parallel from one address is slowed like guessing on one connection.
    throttle: Option<Arc<AuthThrottle>>,
    /// The fleet this proxy belongs to (`[cluster] etcd`), for FLEET and to send leader-only
    /// commands to the leader; `None` for a proxy alone.
    fleet: Option<Arc<Fleet>>,
}

impl AdminConn {
    /// A connection from `peer`, holding `slot` in the admin port's budget; it starts
    /// authenticated when the slot is an authenticated one.
    #[must_use]
    pub(super) fn new(controller: Arc<Controller>, peer: AdminPeer, slot: Slot) -> Self {
        Self {
            controller,
            authenticated: slot.evicted().is_none(),
            slot: Some(slot),
            refused: false,
            auth_failures: 0,
            peer,
            throttle: None,
            fleet: None,
        }
    }

    /// The connection belongs to a proxy of `fleet`: FLEET lists it, and leader-only
    /// commands run on its leader.
    #[must_use]
    pub(super) fn in_fleet(mut self, fleet: Option<Arc<Fleet>>) -> Self {
        self.fleet = fleet;
        self
    }

    /// Failed AUTHs are also counted per source address in `throttle` (the TCP port's).
    #[must_use]
    pub(super) fn throttled_by(mut self, throttle: Arc<AuthThrottle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Serves the connection until the client leaves, QUITs, breaks the protocol, stays
    /// unauthenticated past `[limits] auth_timeout_ms`, is evicted by a newer unauthenticated
    /// connection, or the proxy shuts down (between commands: a command under way finishes
    /// and is answered).
    pub async fn serve<S>(mut self, mut socket: S, mut shutdown: Shutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(4096);
        let mut out = BytesMut::with_capacity(4096);
        let mut scanner = RequestScanner::new(if self.authenticated {
            LIMITS
        } else {
            UNAUTHENTICATED_LIMITS
        });
        let auth_timeout = self.controller.state().live.now().limits.auth_timeout;
        let auth_deadline = tokio::time::Instant::now() + auth_timeout;
        let evicted = self.slot.as_ref().and_then(Slot::evicted);
        loop {
            let mut after = After::Continue;
            while after == After::Continue {
                let was_authenticated = self.authenticated;
                let frame = match scanner.scan(&buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        Reply::Error(self.protocol_error(&e)).encode(&mut out);
                        after = After::Close;
                        break;
                    }
                };
                let args: Vec<Vec<u8>> = scanner.args(&buf).iter().map(<[u8]>::to_vec).collect();
                buf.advance(frame.len);
                scanner.reset();
                if frame.kind == FrameKind::Empty || args.is_empty() {
                    continue;
                }
                let (reply, next) = self.execute(&args).await;
                reply.encode(&mut out);
                after = next;
                if self.authenticated && !was_authenticated {
                    scanner = RequestScanner::new(LIMITS);
                }
            }
            if !out.is_empty() {
                if let Err(e) = socket.write_all(&out).await {
                    debug!(peer = %self.peer, error = %e, "admin client gone");
                    return;
                }
                out.clear();
            }
            if after == After::Close {
                return;
            }
            let read = if self.authenticated {
                tokio::select! {
                    () = shutdown.wait() => return,
                    read = socket.read_buf(&mut buf) => read,
                }
            } else {
                let evicted = evicted.as_deref();
                tokio::select! {
                    () = shutdown.wait() => return,
                    read = socket.read_buf(&mut buf) => read,
                    () = tokio::time::sleep_until(auth_deadline) => {
                        debug!(peer = %self.peer, "admin client closed: no AUTH in time");
                        return;
                    }
                    () = async { if let Some(n) = evicted { n.notified().await } else { std::future::pending().await } } => {
                        debug!(peer = %self.peer, "admin client closed: unauthenticated connections over budget");
                        return;
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The reply to a request that cannot be framed; before AUTH, Redis's own texts for an
    /// unauthenticated client's oversized request.
    fn protocol_error(&self, e: &ProtocolError) -> String {
        match e {
            ProtocolError::InvalidMultibulkLength if !self.authenticated => {
                "ERR Protocol error: unauthenticated multibulk length".into()
            }
            ProtocolError::InvalidBulkLength if !self.authenticated => {
                "ERR Protocol error: unauthenticated bulk length".into()
            }
            e => e.to_string(),
        }
    }

    /// Runs one request.
    async fn execute(&mut self, raw: &[Vec<u8>]) -> (Reply, After) {
        let name = String::from_utf8_lossy(&raw[0]).to_ascii_uppercase();
        let command = Command::parse(&name);
        match command {
            Some(c) if c.before_auth() => return self.connection(c, raw).await,
            _ if !self.authenticated => {
                return (
                    Reply::Error("NOAUTH Authentication required.".into()),
                    After::Continue,
                )
            }
            _ => {}
        }
        let Ok(rest) = raw[1..]
            .iter()
            .map(|a| String::from_utf8(a.clone()))
            .collect::<Result<Vec<String>, _>>()
        else {
            return (
                Reply::err("admin arguments must be UTF-8 text"),
                After::Continue,
            );
        };
        let given = String::from_utf8_lossy(&raw[0]);
        let args = Args::new(&given, &rest);
        let Some(command) = command else {
            debug!(peer = %self.peer, command = %name, "unknown admin command refused");
            return (unknown(&given, &rest), After::Continue);
        };
        let reply = match command {
            Command::Ping | Command::Auth | Command::Hello | Command::Quit => {
                return self.connection(command, raw).await
            }
            Command::OnLeader => self.on_leader(&rest).await,
            c if c.leader_only() => self.routed(c, raw, &args).await,
            c => self.run(c, &args).await,
        };
        if let Reply::Error(text) = &reply {
            debug!(peer = %self.peer, command = %name, error = %text, "admin command refused");
        } else if reply.is_error() {
            debug!(peer = %self.peer, command = %name, "admin command refused by the leader");
        } else if !matches!(
            command,
            Command::Help
                | Command::Commands
                | Command::Topology
                | Command::Migrations
                | Command::Fleet
                | Command::FleetPeer
        ) {
            tracing::info!(peer = %self.peer, command = %name, "admin command");
        }
        (reply, After::Continue)
    }

    /// A leader-only command: run here when this proxy leads its fleet (or runs alone),
    /// else forwarded to the leader, whose reply is relayed.
    async fn routed(&self, command: Command, raw: &[Vec<u8>], args: &Args<'_>) -> Reply {
        if let Some(fleet) = &self.fleet {
            match fleet.route().await {
                Ok(Route::Here) => {}
                Ok(route) => {
                    debug!(peer = %self.peer, ?route, "admin command forwarded to the leader");
                    let reply = fleet.forward(route, raw).await;
                    if !reply.is_error() {
                        let router = &self.controller.state().router;
                        fleet.see_own_change(|| router.load().epoch()).await;
                    }
                    return reply;
                }
                Err(reply) => return reply,
            }
        }
        self.run(command, args).await
    }

    /// `ONLEADER <command> [<argument> ...]`: the command, only if this proxy leads (a
    /// proxy alone leads itself); never forwarded again.
    async fn on_leader(&self, rest: &[String]) -> Reply {
        let [name, inner @ ..] = rest else {
            return Reply::err(
                "wrong number of arguments for 'onleader' command; usage: ONLEADER <command> [<argument> ...]",
            );
        };
        let Some(command) = Command::parse(name) else {
            return unknown(name, inner);
        };
        if command.before_auth() || command == Command::OnLeader {
            return Reply::err(format!(
                "ONLEADER runs an admin command such as MIGRATE or FAILOVER, not {}",
                name.to_ascii_uppercase()
            ));
        }
        if let Some(fleet) = &self.fleet {
            match fleet.leader().await {
                Ok(Some(leader)) if leader == fleet.id() => {}
                Ok(Some(leader)) => {
                    return Reply::Error(format!("NOTLEADER this proxy does not lead the fleet; {leader} does"))
                }
                Ok(None) => {
                    return Reply::Error("NOTLEADER no proxy leads the fleet right now (an election is under way); try again in a moment".into())
                }
                Err(reply) => return reply,
            }
        }
        self.run(command, &Args::new(name, inner)).await
    }

    /// Runs a command of an authenticated client on this proxy.
    async fn run(&self, command: Command, args: &Args<'_>) -> Reply {
        let controller = &self.controller;
        match command {
            Command::Help | Command::Commands => commands::help(),
            Command::Topology => commands::topology(controller, args).await,
            Command::AddShard => commands::add_shard(controller, args).await,
            Command::AddReplica => commands::add_replica(controller, args).await,
            Command::DelReplica => commands::del_replica(controller, args).await,
            Command::DelShard => commands::del_shard(controller, args).await,
            Command::DelNode => commands::del_node(controller, args).await,
            Command::Migrate => commands::migrate(controller, args).await,
            Command::Migrations => commands::migrations(controller, args),
            Command::Migration => commands::migration(controller, args).await,
            Command::Rebalance => commands::rebalance(controller, args).await,
            Command::Failover => commands::failover(controller, args).await,
            Command::SetUsers => commands::set_users(controller, args).await,
            Command::Fleet => commands::fleet(controller, self.fleet.as_deref(), args).await,
            Command::FleetPeer => commands::fleet_peer(controller, args),
            // Answered by `execute` before it gets here.
            Command::Ping | Command::Auth | Command::Hello | Command::Quit | Command::OnLeader => {
                Reply::err("a connection command cannot be run here")
            }
        }
    }

    /// The connection commands, answered before AUTH as in Redis.
    async fn connection(&mut self, command: Command, raw: &[Vec<u8>]) -> (Reply, After) {
        let after_auth = |conn: &Self| {
            if conn.refused {
                After::Close
            } else {
                After::Continue
            }
        };
        match command {
            Command::Quit => (Reply::ok(), After::Close),
            Command::Auth => {
                let reply = self.auth(raw).await;
                (reply, after_auth(self))
            }
            Command::Hello => {
                let reply = self.hello(raw).await;
                (reply, after_auth(self))
            }
            // PING, the only other connection command.
            _ => (ping(raw), After::Continue),
        }
    }

    /// `AUTH <password>` or `AUTH default <password>`.
    async fn auth(&mut self, raw: &[Vec<u8>]) -> Reply {
        let (user, password) = match raw {
            [_, password] => (None, password),
            [_, user, password] => (Some(user.as_slice()), password),
            _ => return Reply::err("wrong number of arguments for 'auth' command"),
        };
        self.check_password(user, password).await
    }

    /// Checks credentials; a failure is answered later each time, so guessing is slow.
    async fn check_password(&mut self, user: Option<&[u8]>, password: &[u8]) -> Reply {
        let Some(expected) = &self.controller.state().config.admin_password else {
            return Reply::err("AUTH <password> called without any password configured for the admin port (admin_password). Are you sure your configuration is correct?");
        };
        let (step, sources) = {
            let live = self.controller.state().live.now();
            (
                live.limits.auth_failure_delay,
                live.limits.auth_throttle_sources,
            )
        };
        let source = match (&self.throttle, &self.peer) {
            (Some(throttle), AdminPeer::Tcp(addr)) => Some((throttle, addr.ip())),
            _ => None,
        };
        // After a failure from this address (on any connection), every attempt waits for the
        // address's turn, right or wrong, so the wait does not tell which guess was right.
        if let Some(wait) = source.and_then(|(t, ip)| t.turn(ip, step, std::time::Instant::now())) {
            tokio::time::sleep(wait).await;
        }
        let user_ok = user.is_none_or(|u| u == b"default");
        if user_ok && redshard_dataplane::session::constant_time_eq(password, expected.as_bytes()) {
            if self.authenticated {
                return Reply::ok();
            }
            // From the waiting budget to the operators' one, if there is room.
            self.slot = self.slot.take().and_then(Slot::promote);
            if self.slot.is_none() {
                self.refused = true;
                warn!(peer = %self.peer, "admin AUTH succeeded but the admin port is full");
                return Reply::err("max number of clients reached");
            }
            self.authenticated = true;
            return Reply::ok();
        }
        self.auth_failures = self.auth_failures.saturating_add(1);
        warn!(peer = %self.peer, failures = self.auth_failures, "admin AUTH failed");
        if let Some((throttle, ip)) = source {
            throttle.failed(ip, step, sources, std::time::Instant::now());
        }
        tokio::time::sleep(step * self.auth_failures.min(20)).await;
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    }

    /// `HELLO [2 [AUTH <user> <password>] [SETNAME <name>]]`: the admin port speaks RESP2 only.
    async fn hello(&mut self, raw: &[Vec<u8>]) -> Reply {
        let mut rest = raw[1..].iter();
        if let Some(version) = rest.next() {
            if version.as_slice() != b"2" {
                return Reply::Error("NOPROTO the admin port speaks RESP2 only (HELLO 2)".into());
            }
        }
        while let Some(option) = rest.next() {
            match option.to_ascii_uppercase().as_slice() {
                b"AUTH" => {
                    let (Some(user), Some(password)) = (rest.next(), rest.next()) else {
                        return Reply::err("syntax error in HELLO option 'auth'");
                    };
                    let answer = self.check_password(Some(user), password).await;
                    if matches!(answer, Reply::Error(_)) {
                        return answer;
                    }
                }
                b"SETNAME" => {
                    if rest.next().is_none() {
                        return Reply::err("syntax error in HELLO option 'setname'");
                    }
                }
                _ => {
                    return Reply::err(format!(
                        "syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(option)
                    ))
                }
            }
        }
        if !self.authenticated {
            return Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
        }
        Reply::fields(vec![
            ("server", "redshard-admin".into()),
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("proto", 2u64.into()),
            ("mode", "admin".into()),
            ("role", "master".into()),
            ("modules", Reply::Array(Vec::new())),
        ])
    }
}

/// `PING [message]`.
fn ping(raw: &[Vec<u8>]) -> Reply {
    match raw {
        [_] => Reply::Status("PONG".into()),
        [_, message] => Reply::Bulk(String::from_utf8_lossy(message).into_owned()),
        _ => Reply::err("wrong number of arguments for 'ping' command"),
    }
}

/// Redis's unknown-command error, plus where to look.
fn unknown(name: &str, rest: &[String]) -> Reply {
    let shown: String = rest
        .iter()
        .take(3)
        .map(|a| format!("'{}' ", a.chars().take(64).collect::<String>()))
        .collect();
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {shown}(the admin port's commands are listed by HELP, or COMMANDS from redis-cli)",
        name.chars().take(64).collect::<String>()
    ))
}
