//! The admin port: a RESP2 control port for operators and the `redshard-admin` CLI, on an
//! owner-only Unix socket (`admin_socket`, by default) and, with a password, on TCP
//! (`admin_listen` with `admin_password`).
//!
//! - [`run`] (TCP) and [`run_unix`]: the accept loops, one task per connection. Socket
//!   clients are trusted by the kernel (only the proxy's user and root may open the socket,
//!   and the peer's uid is checked again on accept); TCP clients must AUTH.
//! - `budget`: at most [`MAX_ADMIN_CLIENTS`] authenticated connections, and apart from them
//!   at most [`MAX_UNAUTHENTICATED_ADMIN_CLIENTS`] waiting to AUTH, the oldest of which is
//!   closed for a newcomer, so idle strangers cannot lock operators out.
//! - `conn`: one connection: requests read with the proxy's own scanner (tighter bounds
//!   before AUTH), run one at a time in order, AUTH against `admin_password` (wrong passwords
//!   are answered later each time), closed when it stays unauthenticated longer than
//!   `[limits] auth_timeout_ms`.
//! - `commands`: each command's arguments, the controller call, the reply.
//! - `status`: TOPOLOGY and MIGRATIONS.
//! - [`rebalance`]: the pure planner behind REBALANCE.
//! - [`fleet`]: FLEET, and leader-only commands forwarded to the fleet's leader.
//!
//! Every topology change goes through the [`Controller`], like failovers and migration steps.
//!
//! ## Replies
//! Structured replies are arrays of alternating field names and values (like `CONFIG GET` or
//! `XINFO`), nested where a field holds a list; errors are `-ERR ...` and say what to do next.
//! Those texts are written here, in the commands that find them, not as
//! [`crate::client_error::ClientError`]s: they are for operators on this port, not replies of
//! the data path, and a controller error's text is also what the CLI shows.
//!
//! | Command | Reply |
//! |---|---|
//! | `PING [msg]`, `AUTH [default] <password>`, `QUIT`, `HELLO [2 [AUTH default <pw>]]` | as Redis |
//! | `HELP`, `COMMANDS` | one status line per command form, each followed by its summary (COMMANDS because redis-cli answers HELP itself) |
//! | `TOPOLOGY` | `epoch`, `slots-served`, `slots-total`, `shards` (each: `id`, `name`, `master`, `master-health` up/failing/down/unknown, `gate` open/paused/down, `slots` ranges, `slot-count`, `keys` (the master's DBSIZE), `replicas` (each: `addr`, `state`, `health`, `lag`, `applied`), `migrating` / `importing` lines), `failovers`, `last-failover`, `rules` (each key routing rule, one line each, in the configured order) |
//! | `ADDSHARD <name> <master>` | `shard`, `master`, `epoch` |
//! | `ADDREPLICA <shard> <addr>` | `shard`, `replica`, `state` (`syncing`) |
//! | `DELREPLICA <addr>`, `DELSHARD <shard>`, `DELNODE <addr>` | `shard`, `removed`, `role` |
//! | `MIGRATE <from> <to> <count>` / `... SLOTS <range>...` | `from`, `to`, `slots`, `slot-count`, `state` (`queued`), `persisted` (yes/no: saved with the topology, resumed after a restart) |
//! | `MIGRATIONS` | a list; each: `from`, `to`, `slots`, `slot-count`, `state`, `error`, `keys-moved`, `bytes-moved`, `keys-estimate`, `elapsed-secs`, `rate-keys-per-sec`, `eta-secs` |
//! | `MIGRATION CANCEL` | `+OK` |
//! | `REBALANCE [USE-EMPTY-MASTERS] [THRESHOLD <pct>] [DRY-RUN]` | `status` (balanced/planned/queued), `threshold-pct`, `shards` (each: `shard`, `slots-now`, `slots-after`), `moves` (each: `from`, `to`, `slot-count`, `slots`), `persisted` (yes/no when queued, else nil) |
//! | `FAILOVER <shard> [TO <replica>]` | `shard`, `old-master`, `new-master` |
//! | `FLEET` | `mode` (`fleet` with `[cluster] etcd`, else `standalone`), `epoch` (installed here); in a fleet also `proxy` (this one's id), `leader` (id or nil), `proxies` (each: `id`, `addr`, `admin`, `epoch`, `alive`, `leader`, `self`) |
//! | `FLEETPEER [FROM <id> <admin>]` | in a fleet (FROM: the asker, asked back while this proxy is out of touch with etcd): `id`, `session` (`alive`/`lost`), `contact` (`yes`: renewed within half a lease TTL), `role` (`leader`, `follower`, `frozen`, `offline`), `epoch` (installed here); what a proxy out of touch with etcd asks the others |
//! | `ONLEADER <command> [args]` | the command's reply if this proxy leads, else `-NOTLEADER ...` |
//!
//! In a fleet, the commands that change the topology or read the migrations (ADDSHARD,
//! ADDREPLICA, DELREPLICA, DELSHARD, DELNODE, MIGRATE, MIGRATIONS, MIGRATION, REBALANCE,
//! FAILOVER) run on the leader: sent to another proxy they are forwarded to the leader's
//! admin port and its reply relayed ([`fleet`]).
//!
//! A shard is named by its name or by its master's address wherever one is asked.

mod budget;
mod commands;
mod conn;
pub mod fleet;
pub mod rebalance;
mod reply;
mod status;
mod unix;

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::{info, Instrument};

pub use budget::{MAX_ADMIN_CLIENTS, MAX_UNAUTHENTICATED_ADMIN_CLIENTS};
pub use conn::{AdminConn, AdminPeer};
pub use reply::Reply;
pub use unix::{bind_unix, run_unix, AdminSocketError};

use budget::Budget;
use redshard_control::Controller;
use redshard_dataplane::shutdown::Shutdown;

/// What a client over the budget is told before it is closed, like Redis.
const REFUSAL: &[u8] = b"-ERR max number of clients reached\r\n";

/// Accepts TCP admin clients on `listener` until `shutdown` fires. With `admin_password` set,
/// every connection must AUTH first; without one, every client of `listener` is trusted, which
/// only an embedder that alone can reach the listener may choose (see
/// [`crate::Proxy::start_admin`]; the configuration's `admin_listen` requires a password).
/// Connections end at their next request boundary after shutdown.
pub async fn run(listener: TcpListener, controller: Arc<Controller>, mut shutdown: Shutdown) {
    let budget = Budget::new();
    let fleet = fleet::for_controller(&controller);
    let throttle = Arc::new(redshard_dataplane::auth_throttle::AuthThrottle::new());
    let mut backoff = crate::listener::ACCEPT_BACKOFF_MIN;
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin port listening");
    }
    while let Some((socket, peer)) =
        crate::listener::accept(&listener, &mut backoff, &mut shutdown, "admin ").await
    {
        let _ = socket.set_nodelay(true);
        let slot = if controller.state().config.admin_password.is_some() {
            budget.admit_pending()
        } else if let Some(slot) = budget.admit_authenticated() {
            slot
        } else {
            refuse(socket);
            continue;
        };
        let conn = AdminConn::new(Arc::clone(&controller), AdminPeer::Tcp(peer), slot)
            .throttled_by(Arc::clone(&throttle))
            .in_fleet(fleet.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(
            conn.serve(socket, shutdown)
                .instrument(tracing::info_span!("admin", peer = %peer)),
        );
    }
    info!("admin port closed");
}

/// Tells `socket` it is over the budget and closes it, without holding up the accept loop.
fn refuse<S>(mut socket: S)
where
    S: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = socket.write_all(REFUSAL).await;
    });
}
