//! The admin port: a RESP2 control port (`admin_listen`, loopback by default) for operators and
//! the `redshard-admin` CLI.
//!
//! - [`run`]: the accept loop, at most [`MAX_ADMIN_CLIENTS`] connections, one task each.
//! - `conn`: one connection: requests read with the proxy's own scanner, run one at a time
//!   in order, AUTH against `admin_password` (wrong passwords are answered later each time).
//! - `commands`: each command's arguments, the controller call, the reply.
//! - `status`: TOPOLOGY and MIGRATIONS.
//! - [`rebalance`]: the pure planner behind REBALANCE.
//!
//! Every topology change goes through the [`Controller`], like failovers and migration steps.
//!
//! ## Replies
//! Structured replies are arrays of alternating field names and values (like `CONFIG GET` or
//! `XINFO`), nested where a field holds a list; errors are `-ERR ...` and say what to do next.
//!
//! | Command | Reply |
//! |---|---|
//! | `PING [msg]`, `AUTH [default] <password>`, `QUIT`, `HELLO [2 [AUTH default <pw>]]` | as Redis |
//! | `HELP` | one status line per command |
//! | `TOPOLOGY` | `epoch`, `slots-served`, `slots-total`, `shards` (each: `id`, `name`, `master`, `master-health` up/failing/down/unknown, `gate` open/paused/down, `slots` ranges, `slot-count`, `keys` (the master's DBSIZE), `replicas` (each: `addr`, `state`, `health`, `lag`, `applied`), `migrating` / `importing` lines), `failovers`, `last-failover` |
//! | `ADDSHARD <name> <master>` | `shard`, `master`, `epoch` |
//! | `ADDREPLICA <shard> <addr>` | `shard`, `replica`, `state` (`syncing`) |
//! | `DELREPLICA <addr>`, `DELSHARD <shard>`, `DELNODE <addr>` | `shard`, `removed`, `role` |
//! | `MIGRATE <from> <to> <count>` / `... SLOTS <range>...` | `from`, `to`, `slots`, `slot-count`, `state` (`queued`), `persisted` (yes/no: saved with the topology, resumed after a restart) |
//! | `MIGRATIONS` | a list; each: `from`, `to`, `slots`, `slot-count`, `state`, `error`, `keys-moved`, `bytes-moved`, `keys-estimate`, `elapsed-secs`, `rate-keys-per-sec`, `eta-secs` |
//! | `MIGRATION CANCEL` | `+OK` |
//! | `REBALANCE [USE-EMPTY-MASTERS] [THRESHOLD <pct>] [DRY-RUN]` | `status` (balanced/planned/queued), `threshold-pct`, `shards` (each: `shard`, `slots-now`, `slots-after`), `moves` (each: `from`, `to`, `slot-count`, `slots`), `persisted` (yes/no when queued, else nil) |
//! | `FAILOVER <shard> [TO <replica>]` | `shard`, `old-master`, `new-master` |
//!
//! A shard is named by its name or by its master's address wherever one is asked.

mod commands;
mod conn;
pub mod rebalance;
mod reply;
mod status;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::{info, Instrument};

pub use conn::AdminConn;
pub use reply::Reply;

use crate::control::Controller;
use crate::shutdown::Shutdown;

/// Admin connections served at once; more are told `-ERR max number of clients reached` and
/// closed, like Redis. Operators and scripts need few; the bound keeps a runaway script from
/// taking the proxy's memory.
pub const MAX_ADMIN_CLIENTS: usize = 64;

/// Accepts admin clients on `listener` until `shutdown` fires. Connections end at their next
/// request boundary after shutdown.
pub async fn run(listener: TcpListener, controller: Arc<Controller>, mut shutdown: Shutdown) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut backoff = crate::listener::ACCEPT_BACKOFF_MIN;
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin port listening");
    }
    while let Some((mut socket, peer)) =
        crate::listener::accept(&listener, &mut backoff, &mut shutdown, "admin ").await
    {
        if active.load(Ordering::Acquire) >= MAX_ADMIN_CLIENTS {
            tokio::spawn(async move {
                let _ = socket
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        let slot = Counted::enter(&active);
        let _ = socket.set_nodelay(true);
        let conn = AdminConn::new(Arc::clone(&controller), peer);
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                conn.serve(socket, shutdown).await;
                drop(slot);
            }
            .instrument(tracing::info_span!("admin", peer = %peer)),
        );
    }
    info!("admin port closed");
}

/// One connection in the count of active ones; leaves it when dropped (even on a panic).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
