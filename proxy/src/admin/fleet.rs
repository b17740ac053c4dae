//! The fleet as the admin port sees it, when the proxy runs with `[cluster] etcd`: `FLEET`
//! (every proxy and the leader, from etcd), and the commands only the leader runs reaching it
//! from any proxy.
//!
//! **Forwarding, not redirecting.** A leader-only command (one that changes the topology, or
//! MIGRATIONS: see [`crate::admin`]) sent to a proxy that does not lead is forwarded:
//! the proxy opens a TCP connection to the leader's admin port (the `admin` address of the
//! leader's member record), AUTHs with its own `admin_password` (the same on every proxy of a
//! fleet), sends the request wrapped in `ONLEADER`, and relays the leader's reply unchanged.
//! Any client (the CLI, redis-cli, a script) can therefore be pointed at any proxy. `ONLEADER`
//! runs its command only on the leader and otherwise answers `-NOTLEADER`, so a request is
//! forwarded at most once, even while the leadership moves: the forwarding proxy then asks
//! etcd again and tries the new leader once.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use redshard_cluster::{ClusterError, Etcd, Member};
use redshard_config::cluster::ClusterConfig;
use redshard_config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

use super::reply::Reply;
use crate::resp::reply::ReplyScanner;
use crate::resp::ProtocolError;
use redshard_control::Controller;

/// How long a proxy that forwarded a change to the leader waits to have installed it before
/// it answers (see [`Fleet::see_own_change`]).
const SEE_OWN_CHANGE: Duration = Duration::from_secs(5);

/// Deepest reply relayed (the admin port's replies nest three levels).
const MAX_RELAYED_DEPTH: usize = 16;

/// Where a leader-only command runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// On this proxy: it leads.
    Here,
    /// On the leader `id`, whose admin port is at `admin`.
    Leader {
        /// The leader's proxy id.
        id: String,
        /// Its admin port's TCP address.
        admin: String,
    },
}

/// This proxy's view of its fleet, shared by the admin port's connections.
#[derive(Debug)]
pub struct Fleet {
    /// The `[cluster]` section: where etcd is, to connect on first use.
    cluster: ClusterConfig,
    /// This proxy's id in the fleet: the leader key holds the leader's id, so comparing it
    /// with this one tells whether this proxy leads.
    id: String,
    /// The etcd client, made on the first FLEET or leader-only command (so the admin port
    /// starts even while etcd is down) and kept afterwards; a failed attempt is retried by
    /// the next command.
    etcd: OnceCell<Etcd>,
    /// `admin_password`: what this proxy AUTHs with at the leader's admin port.
    password: Option<String>,
    /// Time allowed to connect to the leader's admin port (`[backend] connect_timeout_ms`).
    connect_timeout: Duration,
    /// Time allowed for the leader's reply to a forwarded command (`[cluster]
    /// forward_timeout_ms`).
    reply_timeout: Duration,
    /// The largest leader's reply relayed (`[cluster] forward_max_reply_bytes`): a bigger one
    /// is refused, not buffered.
    max_reply: usize,
}

impl Fleet {
    /// The fleet of a proxy configured by `config`, or `None` without `[cluster] etcd` (the
    /// proxy runs alone and every admin command runs on it).
    ///
    /// # Errors
    ///
    /// [`ClusterError::InvalidId`] when no valid proxy id can be made (see
    /// [`redshard_cluster::proxy_id`]).
    pub fn from_config(config: &Config) -> Result<Option<Fleet>, ClusterError> {
        let Some(cluster) = &config.cluster else {
            return Ok(None);
        };
        let id = redshard_cluster::proxy_id(cluster, config.listen)?;
        Ok(Some(Fleet {
            cluster: cluster.clone(),
            id,
            etcd: OnceCell::new(),
            password: config.admin_password.clone(),
            connect_timeout: config.backend.connect_timeout,
            // The slowest leader-only command, a graceful FAILOVER, waits at most twice
            // `[mirror] cutover_timeout_ms` (the drain, then the catch-up).
            reply_timeout: cluster.forward_timeout.unwrap_or(
                config.mirror.cutover_timeout * 2
                    + Duration::from_millis(redshard_config::cluster::DEFAULT_FORWARD_SLACK_MS),
            ),
            max_reply: cluster.forward_max_reply_bytes,
        }))
    }

    /// This proxy's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The etcd client, connecting on first use.
    async fn etcd(&self) -> Result<&Etcd, ClusterError> {
        self.etcd
            .get_or_try_init(|| Etcd::connect(&self.cluster))
            .await
    }

    /// The live members and the leader's id, read from etcd.
    async fn read(&self) -> Result<(Vec<Member>, Option<String>), Reply> {
        let etcd = self.etcd().await.map_err(etcd_error)?;
        let mut members = etcd.members().await.map_err(etcd_error)?;
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let election = etcd.leader().await.map_err(etcd_error)?;
        Ok((members, election.map(|l| l.id)))
    }

    /// `FLEET`: this proxy's id, the leader's, and every proxy with its addresses, installed
    /// epoch and whether it is alive (its member entry lives on its etcd lease). This proxy is
    /// listed even when it has no entry (not registered yet, or its session was lost), as not
    /// alive.
    pub async fn status(&self, installed_epoch: u64) -> Reply {
        let (members, leader) = match self.read().await {
            Ok(read) => read,
            Err(reply) => return reply,
        };
        let mut proxies: Vec<Reply> = members
            .iter()
            .map(|m| {
                proxy_entry(
                    m,
                    true,
                    leader.as_deref() == Some(m.id.as_str()),
                    m.id == self.id,
                )
            })
            .collect();
        if !members.iter().any(|m| m.id == self.id) {
            let me = Member {
                id: self.id.clone(),
                addr: String::new(),
                admin: None,
                epoch: installed_epoch,
            };
            proxies.push(proxy_entry(
                &me,
                false,
                leader.as_deref() == Some(self.id.as_str()),
                true,
            ));
        }
        Reply::fields(vec![
            ("mode", "fleet".into()),
            ("proxy", self.id.as_str().into()),
            ("epoch", installed_epoch.into()),
            ("leader", leader.map_or(Reply::Nil, Reply::from)),
            ("proxies", Reply::Array(proxies)),
        ])
    }

    /// The leader's id, `None` when no proxy leads.
    ///
    /// # Errors
    ///
    /// The reply to give when etcd cannot be read.
    pub async fn leader(&self) -> Result<Option<String>, Reply> {
        let etcd = self.etcd().await.map_err(etcd_error)?;
        let leader = etcd.leader().await.map_err(etcd_error)?;
        Ok(leader.map(|l| l.id))
    }

    /// Where a leader-only command runs now.
    ///
    /// # Errors
    ///
    /// The reply to give instead when it cannot run anywhere now: etcd cannot be read, no
    /// proxy leads (an election is under way), or the leader has no admin port on TCP.
    pub async fn route(&self) -> Result<Route, Reply> {
        let (members, leader) = self.read().await?;
        let Some(leader) = leader else {
            return Err(Reply::Error(
                "CLUSTERDOWN no proxy leads the fleet right now (an election is under way, within [cluster] lease_ttl_ms); try again in a moment".into(),
            ));
        };
        if leader == self.id {
            return Ok(Route::Here);
        }
        match members.into_iter().find(|m| m.id == leader) {
            Some(Member {
                admin: Some(admin), ..
            }) => Ok(Route::Leader { id: leader, admin }),
            Some(_) => Err(Reply::err(format!(
                "the leader {leader} registered no admin address the other proxies can reach to forward this command to; run it on {leader} itself (its admin socket), or give every proxy admin_listen on a specific IP and the same admin_password"
            ))),
            None => Err(Reply::Error(format!(
                "CLUSTERDOWN the leader {leader} is not registered in the fleet (starting, or its session is being lost); try again in a moment"
            ))),
        }
    }

    /// Runs the leader-only request `raw` (command name first) on the leader: forwarded to the
    /// one `route` named, and if that proxy no longer leads, once more to the leader etcd
    /// names then. The leader's reply is relayed as it came.
    pub async fn forward(&self, route: Route, raw: &[Vec<u8>]) -> Reply {
        let mut route = route;
        for attempt in 0..2 {
            let Route::Leader { id, admin } = &route else {
                // The leadership came here meanwhile: the caller runs it.
                return Reply::Error(
                    "NOTLEADER this proxy became the leader while forwarding; send the command again".into(),
                );
            };
            let relayed = match self.send(admin, raw).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    return Reply::err(format!(
                        "cannot forward {} to the leader {id} at {admin}: {e}; try again, or run it on the leader itself",
                        String::from_utf8_lossy(&raw[0]).to_ascii_uppercase()
                    ))
                }
            };
            if attempt == 0 && relayed.starts_with(b"-NOTLEADER") {
                route = match self.route().await {
                    Ok(next) => next,
                    Err(reply) => return reply,
                };
                continue;
            }
            return Reply::Relayed(relayed);
        }
        Reply::Error(
            "NOTLEADER the leadership moved twice while forwarding; send the command again".into(),
        )
    }

    /// After a command forwarded to the leader succeeded: waits (at most [`SEE_OWN_CHANGE`])
    /// until this proxy has installed the topology etcd holds now, which has the change, so
    /// that what the caller asks of this proxy next (TOPOLOGY, `redshard-admin` waiting for a
    /// replica it added) sees it. A proxy that cannot read etcd or is slower answers anyway:
    /// the change is made either way.
    pub async fn see_own_change(&self, installed_epoch: impl Fn() -> u64) {
        let stored = match self.etcd().await {
            Ok(etcd) => match etcd.topology_store().load().await {
                Ok(Some(topology)) => topology.epoch,
                _ => return,
            },
            Err(_) => return,
        };
        let deadline = tokio::time::Instant::now() + SEE_OWN_CHANGE;
        while installed_epoch() < stored && tokio::time::Instant::now() < deadline {
            // The watch installs it within milliseconds; polled, not waited on, because the
            // router has no epoch notification of its own.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One forwarded request: AUTH (with a password), `ONLEADER <raw...>`; the second reply's
    /// bytes.
    async fn send(&self, admin: &str, raw: &[Vec<u8>]) -> Result<Vec<u8>, ForwardError> {
        let mut socket = tokio::time::timeout(self.connect_timeout, TcpStream::connect(admin))
            .await
            .map_err(|_| ForwardError::ConnectTimeout(self.connect_timeout))?
            .map_err(ForwardError::Io)?;
        let _ = socket.set_nodelay(true);
        let mut out = BytesMut::new();
        if let Some(password) = &self.password {
            crate::resp::encode::request(&mut out, &[b"AUTH", password.as_bytes()]);
        }
        let mut request: Vec<&[u8]> = Vec::with_capacity(raw.len() + 1);
        request.push(b"ONLEADER");
        request.extend(raw.iter().map(Vec::as_slice));
        crate::resp::encode::request(&mut out, &request);
        let exchange = async {
            socket.write_all(&out).await.map_err(ForwardError::Io)?;
            let mut buf = Vec::with_capacity(4096);
            let mut scanner = ReplyScanner::new(MAX_RELAYED_DEPTH);
            if self.password.is_some() {
                let auth = read_reply(&mut socket, &mut buf, &mut scanner, self.max_reply).await?;
                if auth != b"+OK\r\n" {
                    return Err(ForwardError::Auth(
                        String::from_utf8_lossy(auth.strip_suffix(b"\r\n").unwrap_or(&auth))
                            .into_owned(),
                    ));
                }
            }
            read_reply(&mut socket, &mut buf, &mut scanner, self.max_reply).await
        };
        tokio::time::timeout(self.reply_timeout, exchange)
            .await
            .map_err(|_| ForwardError::ReplyTimeout(self.reply_timeout))?
    }
}

/// Reads one complete reply, at most `max_reply` bytes, from `socket` into `buf` and takes
/// it off the front.
async fn read_reply(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
    scanner: &mut ReplyScanner,
    max_reply: usize,
) -> Result<Vec<u8>, ForwardError> {
    loop {
        if let Some(len) = scanner.scan(buf).map_err(ForwardError::Protocol)? {
            if scanner.too_deep() {
                return Err(ForwardError::TooLarge(max_reply));
            }
            return Ok(buf.drain(..len).collect());
        }
        if buf.len() >= max_reply {
            return Err(ForwardError::TooLarge(max_reply));
        }
        buf.reserve(4096);
        let n = socket.read_buf(buf).await.map_err(ForwardError::Io)?;
        if n == 0 {
            return Err(ForwardError::Closed);
        }
    }
}

/// Why a command could not be forwarded to the leader.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    /// The leader's admin port did not accept in time.
    #[error("no connection within {0:?} ([backend] connect_timeout_ms)")]
    ConnectTimeout(Duration),
    /// The leader did not answer in time (the command may still complete there).
    #[error("no reply within {0:?}")]
    ReplyTimeout(Duration),
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// The leader closed the connection before its reply.
    #[error("the connection closed before the reply")]
    Closed,
    /// The leader's reply cannot be framed.
    #[error("its reply is not RESP: {0}")]
    Protocol(ProtocolError),
    /// The leader's reply is over the bounds of a relayed reply.
    #[error("its reply is larger than {0} bytes ([cluster] forward_max_reply_bytes) or nested deeper than {MAX_RELAYED_DEPTH} levels")]
    TooLarge(usize),
    /// The leader refused this proxy's `admin_password`.
    #[error("it refused this proxy's admin_password ({0}); every proxy of a fleet needs the same admin_password")]
    Auth(String),
}

/// One proxy of FLEET.
fn proxy_entry(member: &Member, alive: bool, leader: bool, this: bool) -> Reply {
    let yes_no = |b: bool| Reply::from(if b { "yes" } else { "no" });
    Reply::fields(vec![
        ("id", member.id.as_str().into()),
        (
            "addr",
            if member.addr.is_empty() {
                Reply::Nil
            } else {
                member.addr.as_str().into()
            },
        ),
        (
            "admin",
            member.admin.as_deref().map_or(Reply::Nil, Reply::from),
        ),
        ("epoch", member.epoch.into()),
        ("alive", yes_no(alive)),
        ("leader", yes_no(leader)),
        ("self", yes_no(this)),
    ])
}

/// The reply when etcd cannot be read.
fn etcd_error(e: ClusterError) -> Reply {
    Reply::Error(format!(
        "CLUSTERDOWN etcd cannot be read ({e}); the fleet's state is unknown until it answers"
    ))
}

/// `FLEET` on a proxy without `[cluster]`: it is alone.
#[must_use]
pub fn standalone(installed_epoch: u64) -> Reply {
    Reply::fields(vec![
        ("mode", "standalone".into()),
        ("epoch", installed_epoch.into()),
    ])
}

/// The address of this proxy's admin port that the other proxies of a fleet should forward
/// to, for its member record: `[cluster] advertise_admin` when set; else the bound
/// `admin_listen` address, and when that is a wildcard (`0.0.0.0`), the client listener's IP
/// with the admin port, if that one is specific. `None` when there is no TCP admin port or no
/// specific address to advertise (a warning says so and how to fix it).
#[must_use]
pub fn advertised_admin_addr(
    config: &Config,
    bound: Option<std::net::SocketAddr>,
) -> Option<String> {
    let mut admin = bound?;
    if let Some(addr) = config
        .cluster
        .as_ref()
        .and_then(|c| c.advertise_admin.as_ref())
    {
        return Some(addr.to_string());
    }
    if admin.ip().is_unspecified() {
        if config.listen.ip().is_unspecified() {
            tracing::warn!(
                admin = %admin,
                "admin_listen and listen are wildcard addresses: the other proxies of the fleet cannot forward admin commands to this one; set [cluster] advertise_admin"
            );
            return None;
        }
        admin.set_ip(config.listen.ip());
    }
    Some(admin.to_string())
}

/// A proxy's way to have its fleet's leader save the users its clients changed (see
/// [`redshard_control::LeaderForward`]): `SETUSERS` forwarded to the leader's admin port, as
/// the admin port forwards its own leader-only commands.
#[derive(Debug)]
pub struct UsersToLeader {
    /// The fleet, as the admin port sees it.
    fleet: Arc<Fleet>,
    /// The proxy's state, whose installed epoch shows when the leader's change arrived here.
    state: Arc<redshard_dataplane::state::ProxyState>,
}

impl redshard_control::LeaderForward for UsersToLeader {
    fn set_users(
        &self,
        users: Vec<String>,
    ) -> futures_util::future::BoxFuture<'static, Result<(), String>> {
        let fleet = Arc::clone(&self.fleet);
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let route = fleet
                .route()
                .await
                .map_err(|r| r.error_text().unwrap_or_default())?;
            if matches!(route, Route::Here) {
                return Err(
                    "this proxy became the fleet's leader meanwhile; send the change again".into(),
                );
            }
            let mut raw = Vec::with_capacity(users.len() + 1);
            raw.push(b"SETUSERS".to_vec());
            raw.extend(users.into_iter().map(String::into_bytes));
            if let Some(refused) = fleet.forward(route, &raw).await.error_text() {
                return Err(format!("the leader did not save them: {refused}"));
            }
            // As after a forwarded admin command: the client's next ACL LIST here sees it.
            fleet.see_own_change(|| state.router.load().epoch()).await;
            Ok(())
        })
    }
}

/// Has `controller` forward its clients' user changes to the fleet's leader while it does
/// not lead (nothing without `[cluster]`).
pub fn forward_users(controller: &Controller) {
    if let Some(fleet) = for_controller(controller) {
        controller.forward_to_leader_with(Arc::new(UsersToLeader {
            fleet,
            state: Arc::clone(controller.state()),
        }));
    }
}

/// The fleet for the admin port of `controller`'s proxy: the controller's own when the proxy
/// joined one (same id, same etcd client), else one made from `[cluster]` (a proxy started
/// without joining, as tools and tests embed it); `None` without `[cluster]`, and logged and
/// `None` too when no proxy id can be made (the proxy cannot join a fleet then anyway).
pub(super) fn for_controller(controller: &Controller) -> Option<Arc<Fleet>> {
    let config = &controller.state().config;
    let fleet = match Fleet::from_config(config) {
        Ok(fleet) => fleet?,
        Err(e) => {
            tracing::error!(error = %e, "the admin port cannot name this proxy in its fleet");
            return None;
        }
    };
    Some(Arc::new(match controller.fleet() {
        Some(joined) => Fleet {
            id: joined.id().to_owned(),
            etcd: OnceCell::new_with(Some(joined.etcd().clone())),
            ..fleet
        },
        None => fleet,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_admin_address_is_specific() {
        let text = |listen: &str, cluster: &str| {
            format!(
                "listen = \"{listen}\"\nadmin_listen = \"0.0.0.0:6390\"\nadmin_password = \"pw\"\n{cluster}[[shard]]\nname = \"s\"\nmaster = \"127.0.0.1:1\"\nslots = [\"0-16383\"]\n"
            )
        };
        let config = Config::from_toml_str(&text("10.0.0.5:6379", ""), "test").unwrap();
        let bound = |a: &str| Some(a.parse().unwrap());
        let text_of = |a: &str| Some(a.to_owned());
        assert_eq!(
            advertised_admin_addr(&config, bound("0.0.0.0:6390")),
            text_of("10.0.0.5:6390")
        );
        assert_eq!(
            advertised_admin_addr(&config, bound("10.0.0.9:6390")),
            text_of("10.0.0.9:6390")
        );
        assert_eq!(advertised_admin_addr(&config, None), None);
        let wildcard = Config::from_toml_str(&text("0.0.0.0:6379", ""), "test").unwrap();
        assert_eq!(
            advertised_admin_addr(&wildcard, bound("0.0.0.0:6390")),
            None
        );
        let advertised = Config::from_toml_str(
            &text(
                "0.0.0.0:6379",
                "[cluster]\netcd = [\"127.0.0.1:2379\"]\nadvertise_admin = \"proxy-a.example:7390\"\n",
            ),
            "test",
        )
        .unwrap();
        assert_eq!(
            advertised_admin_addr(&advertised, bound("0.0.0.0:6390")),
            text_of("proxy-a.example:7390")
        );
        let wildcard_advertised = Config::from_toml_str(
            &text(
                "0.0.0.0:6379",
                "[cluster]\netcd = [\"127.0.0.1:2379\"]\nadvertise_admin = \"0.0.0.0:7390\"\n",
            ),
            "test",
        );
        assert!(wildcard_advertised
            .unwrap_err()
            .to_string()
            .contains("wildcard"));
    }

    #[test]
    fn a_member_without_an_admin_port_shows_nil() {
        let member = Member {
            id: "p1".into(),
            addr: "127.0.0.1:6379".into(),
            admin: None,
            epoch: 4,
        };
        let Reply::Array(items) = proxy_entry(&member, true, false, true) else {
            panic!("an array");
        };
        let field = |name: &str| {
            let i = items.iter().position(|r| *r == Reply::from(name)).unwrap();
            items[i + 1].clone()
        };
        assert_eq!(field("admin"), Reply::Nil);
        assert_eq!(field("epoch"), Reply::Int(4));
        assert_eq!(field("alive"), Reply::from("yes"));
        assert_eq!(field("leader"), Reply::from("no"));
        assert_eq!(field("self"), Reply::from("yes"));
    }
}
