//! # redshard-control
//!
//! The control plane of the proxy, a crate above the data plane (`redshard-dataplane`), which
//! cannot name it:
//!
//! - the controller ([`Controller`] and its modules: [`probe`], [`failover`], [`resync`],
//!   [`migrate`], the node changes, the replicas' acknowledgements, [`conn`]ections to the
//!   nodes, the clean stop): the one place that changes the live topology. It holds the data
//!   plane's `TopologyWriter`, handed over in `ControllerParts`; only the data plane can mint
//!   one, so no other writer of the topology can exist.
//! - [`reload`]: re-reading the configuration file (SIGHUP, `POST /-/reload`).
//!
//! The controller: the one place that changes the live topology.
//!
//! Every change (a replica gone stale, a failover, a resync finished, an admin command, a
//! migration step) goes through [`Controller::change`]: [`Topology::apply`] checks it, the new
//! epoch is persisted (temp file, fsync, rename) and only then published to the data path with
//! one `ArcSwap` store. Changes are serialised by one lock.
//!
//! A task ([`Controller::start`]) reacts to what the data path reports (see
//! [`ControlEvent`]) and to the [`probe`]s, at least every `[health] interval_ms`:
//! - a replica that failed a mirrored write is recorded `stale`, then the replies held for it
//!   are released (see [`redshard_dataplane::mirror`]);
//! - under Redis replication, a lane whose `WAIT` fell short has the in-sync replicas that
//!   lack its writes recorded `stale`, then releases the replies it held ([`ack`]);
//! - a master that is failing pauses its shard's gate when a replica could take over (requests
//!   wait instead of failing); a master that is down is [failed over](failover) to an in-sync
//!   replica, or its shard answers `-CLUSTERDOWN` when it has none;
//! - a stale or new replica that answers is [resynchronised](resync) from its master; with
//!   `[replication] mode = "redis"` every replica instead follows its master by `REPLICAOF`,
//!   which the controller [sets up, checks and repairs](replica);
//! - a master connection lost with mirrored writes in flight, on a master that stays up, makes
//!   its replicas stale (the master may have applied writes they never got).
//!
//! Every state the controller moves (the shard gate, per-shard holds, suspicions and write
//! losses, per-replica resyncs, failovers, migrations), who moves it and what clients see:
//! `LIFECYCLE.md` next to this file.

mod ack;
mod book;
pub mod conn;
mod epoch_ack;
mod every_node;
pub mod failover;
pub mod fleet;
mod follow;
mod kill;
pub mod migrate;
mod nodes;
pub mod peers;
pub mod probe;
pub mod reload;
mod replica;
pub mod resync;
/// The controller's counts, kept below it (see [`redshard_dataplane::ha_stats`]).
pub use redshard_dataplane::ha_stats as stats;
mod stop;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redshard_cluster::ClusterError;

use redshard_config::{
    FileTopologyStore, NodeAddr, ReplicaState, ShardId, StoreError, Topology, TopologyChange,
    TopologyError, TopologyStore,
};
use tokio::sync::Notify;
use tracing::{info, warn};

use book::{Book, HoldReason, LossVerdict, ResyncEnd};
use probe::Probes;
use redshard_dataplane::events::{AckVerdict, ControlEvent};
use redshard_dataplane::router::writer::TopologyWriter;
use redshard_dataplane::router::GateState;
use redshard_dataplane::shutdown::Shutdown;
use redshard_dataplane::state::{ControllerParts, ProxyState};

pub use nodes::{find_shard, NodeError};

/// Why a topology change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change does not fit the topology (unknown shard, replica not in sync, ...).
    #[error("{0}")]
    Refused(#[from] TopologyError),
    /// The new topology could not be persisted; nothing changed.
    #[error("the topology could not be saved: {0}")]
    Store(#[from] StoreError),
    /// In a fleet: this proxy does not lead, and only the leader changes the topology.
    #[error("this proxy is not the fleet's leader; topology changes are made by the leader{}", .leader.as_ref().map_or_else(String::new, |l| format!(" ({l})")))]
    NotLeader {
        /// The leader's id, when known.
        leader: Option<String>,
    },
    /// In a fleet: another proxy saved a newer topology since this change was based on the
    /// installed one; that newer topology is installed now and nothing of this change was.
    #[error("the topology changed meanwhile (epoch {found} in etcd, this change was based on {expected}); it is installed now: check it and try again")]
    Conflict {
        /// The epoch the change was based on.
        expected: u64,
        /// The epoch found in etcd (0: none).
        found: u64,
    },
    /// In a fleet: etcd could not be reached; the change may or may not have been saved
    /// (the topology watch installs it if it was).
    #[error("the topology could not be saved in etcd: {0}")]
    Etcd(ClusterError),
}

/// How many times a stale mark is made again on a newer topology that another proxy of the
/// fleet saved first (each try installs the newer one).
const STALE_MARK_RETRIES: usize = 8;

/// Where the controller persists topologies.
#[derive(Debug)]
enum Store {
    /// Nowhere: topologies live in memory only.
    None,
    /// The `topology_file`.
    File(FileTopologyStore),
    /// etcd, shared with the other proxies of a fleet.
    Etcd(Arc<fleet::Fleet>),
}

/// The controller of one proxy.
#[derive(Debug)]
pub struct Controller {
    /// The proxy's shared state (router, mirror links, config).
    state: Arc<ProxyState>,
    /// The one capability to install tables, set gates and fence nodes: the controller is
    /// the only writer of the topology.
    writer: TopologyWriter,
    /// Where topologies are persisted.
    store: Store,
    /// Serialises changes and installs. Async: an etcd save is awaited under it, before the
    /// new table is installed.
    change_lock: tokio::sync::Mutex<()>,
    /// Serialises queueing and cancelling migrations, so the queue in memory keeps the
    /// persisted order (held across the change that persists the queue).
    queue_lock: tokio::sync::Mutex<()>,
    /// Node health.
    probes: Probes,
    /// Woken by probes with news.
    changed: Arc<Notify>,
    /// What it remembers between rounds: per-shard holds, suspicions and write losses,
    /// per-replica resyncs (see `LIFECYCLE.md`).
    book: Mutex<Book>,
    /// The data path's reports the controller's task gave back when it ended, so the clean
    /// stop (`stop.rs`) sees what was never acted on; `None` while the task runs.
    returned_events: Mutex<Option<redshard_dataplane::events::EventReceiver>>,
    /// Shortfalls of the replicas' acknowledgement waiting for a check (see [`ack`]).
    acks: ack::AckChecks,
    /// In a fleet, the installed epochs waiting to be acknowledged (see [`epoch_ack`]).
    epoch_acks: epoch_ack::Queue,
    /// The checks of Redis replication (`[replication] mode = "redis"`).
    replicas: replica::Tracker,
    /// The parameters clients set with `CONFIG SET`, given to nodes added later (see
    /// [`every_node`]).
    node_settings: every_node::NodeSettings,
    /// In a fleet, how a proxy that does not lead has the leader save the users its clients
    /// changed (the admin port's forwarding, given once by the layer above at start).
    leader_forward: std::sync::OnceLock<Arc<dyn LeaderForward>>,
}

/// How a proxy of a fleet that does not lead has the leader save a change only the leader
/// may make: its clients' `ACL SETUSER` / `DELUSER` / `CONFIG SET requirepass`. The proxy's
/// admin port forwards it (the layer above the controller implements this).
pub trait LeaderForward: Send + Sync + std::fmt::Debug {
    /// Has the leader make `users` (lines as [`redshard_dataplane::users::Users::lines`]
    /// writes them) the fleet's users, and returns once this proxy has installed the leader's
    /// change (or gave up waiting for it: it is saved either way).
    ///
    /// # Errors
    /// Why the leader did not save them (none leads, it cannot be reached, it refused them).
    fn set_users(
        &self,
        users: Vec<String>,
    ) -> futures_util::future::BoxFuture<'static, Result<(), String>>;
}

impl Controller {
    /// The controller of `state`, persisting to `state.config.topology_file` when set; it takes
    /// the `parts` made with the state (the topology's writer and the data path's reports).
    /// Starts its task on the current runtime; it ends with `shutdown`.
    #[must_use]
    pub fn start(state: Arc<ProxyState>, parts: ControllerParts, shutdown: Shutdown) -> Arc<Self> {
        Self::start_in(state, parts, shutdown, None)
    }

    /// [`Controller::start`], in the fleet `fleet` when given (`[cluster] etcd`): topologies
    /// are then saved to etcd (not to `topology_file`), the etcd topology is followed, and
    /// only the leader decides (see [`fleet`]).
    #[must_use]
    pub fn start_in(
        state: Arc<ProxyState>,
        parts: ControllerParts,
        shutdown: Shutdown,
        fleet: Option<Arc<fleet::Fleet>>,
    ) -> Arc<Self> {
        let ControllerParts { writer, events } = parts;
        let changed = Arc::new(Notify::new());
        let probes = Probes::new(
            state.config.health.clone(),
            redshard_dataplane::health::auth_request(&state.config.backend),
            state.tls.backend.clone(),
            Arc::clone(&state.health),
            Arc::clone(&changed),
        );
        let store = match (&fleet, &state.config.topology_file) {
            (Some(fleet), _) => {
                fleet.attach(&state);
                Store::Etcd(Arc::clone(fleet))
            }
            (None, Some(path)) => {
                let store = FileTopologyStore::new(path.clone());
                // Every save while serving keeps the run marker (see `redshard_config::store`).
                store.set_running(true);
                Store::File(store)
            }
            (None, None) => Store::None,
        };
        let controller = Arc::new(Self {
            state,
            writer,
            store,
            change_lock: tokio::sync::Mutex::new(()),
            queue_lock: tokio::sync::Mutex::new(()),
            probes,
            changed,
            book: Mutex::new(Book::default()),
            returned_events: Mutex::new(None),
            acks: ack::AckChecks::default(),
            epoch_acks: epoch_ack::Queue::default(),
            replicas: replica::Tracker::default(),
            node_settings: every_node::NodeSettings::default(),
            leader_forward: std::sync::OnceLock::new(),
        });
        controller
            .probes
            .track(controller.state.router.load().topology().nodes());
        let mover_shutdown = shutdown.clone();
        if let Some(fleet) = fleet {
            controller.start_fleet(fleet, &shutdown);
        } else {
            // In a fleet, the leader resumes migrations when it starts leading.
            controller.resume_migrations();
        }
        tokio::spawn(Arc::clone(&controller).run(events, shutdown));
        tokio::spawn(Arc::clone(&controller).run_migrations(mover_shutdown));
        controller
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The proxy's state.
    #[must_use]
    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    /// A control connection to `addr` with the proxy's control credentials (and TLS when
    /// `[backend] tls` is on).
    ///
    /// # Errors
    /// The node cannot be reached, or refuses the handshake or the credentials.
    pub async fn connect(
        &self,
        addr: &NodeAddr,
        timeout: Duration,
    ) -> Result<conn::ControlConn, conn::ConnError> {
        let auth = redshard_dataplane::health::auth_request(&self.state.config.backend);
        conn::ControlConn::open(
            addr,
            auth.as_ref(),
            self.state.tls.backend.as_deref(),
            timeout,
        )
        .await
    }

    /// Loads every script the proxy knows into the node at `addr`, logging a failure.
    async fn load_scripts(&self, addr: &NodeAddr) {
        let bodies = self.state.router.mirror().scripts().bodies();
        if bodies.is_empty() {
            return;
        }
        let loaded = async {
            let mut conn = self.connect(addr, Duration::from_secs(5)).await?;
            for body in bodies {
                conn.call_ok(&[b"SCRIPT", b"LOAD", &body]).await?;
            }
            Ok::<(), conn::ConnError>(())
        };
        if let Err(e) = loaded.await {
            warn!(node = %addr, error = %e, "could not load the known scripts into a new master");
        }
    }

    /// What the probes know of `addr`.
    #[must_use]
    pub fn probe(&self, addr: &NodeAddr) -> probe::ProbeStatus {
        self.probes.status(addr)
    }

    /// Failovers done since start, and a line on the last one (kept in
    /// [`ProxyState::ha`](redshard_dataplane::state::ProxyState::ha), with the other counts INFO and
    /// metrics show).
    #[must_use]
    pub fn failovers(&self) -> (u64, Option<String>) {
        self.state.ha.failovers()
    }

    /// Whether topology changes (and queued migrations) are saved to `topology_file`, so a
    /// restart resumes them.
    #[must_use]
    pub fn persists(&self) -> bool {
        !matches!(self.store, Store::None)
    }

    /// The fleet this proxy belongs to (`[cluster] etcd`): its id, role, the leader and the
    /// members ([`fleet::Fleet::view`]); `None` when it runs alone.
    #[must_use]
    pub fn fleet(&self) -> Option<&Arc<fleet::Fleet>> {
        match &self.store {
            Store::Etcd(fleet) => Some(fleet),
            _ => None,
        }
    }

    /// Whether this proxy makes the deciding moves (failover, replica repair, migrations):
    /// always when it runs alone, only while it leads in a fleet and has been in touch with
    /// etcd for the settle window ([`fleet::Fleet::decides`]).
    #[must_use]
    pub fn decides(&self) -> bool {
        self.fleet().is_none_or(|f| f.decides())
    }

    /// Applies `change`, persists the result and publishes it. Returns the new topology.
    ///
    /// # Errors
    /// The change does not fit the current topology, or it could not be persisted; in both
    /// cases nothing changed.
    pub async fn change(&self, change: TopologyChange) -> Result<Arc<Topology>, ChangeError> {
        if let TopologyChange::AddShard { master, .. } = &change {
            // It never saw the SCRIPT LOADs fanned out before: give it every known script so
            // EVALSHA works once slots move to it (best effort: clients fall back to EVAL).
            self.load_scripts(master).await;
        }
        self.change_now(&change).await
    }

    /// [`Controller::change`] without its preparation for `AddShard` (the known scripts are
    /// not loaded into a new master): applies, persists and publishes `change` at once.
    ///
    /// # Errors
    /// As [`Controller::change`].
    pub(crate) async fn change_now(
        &self,
        change: &TopologyChange,
    ) -> Result<Arc<Topology>, ChangeError> {
        let _guard = self.change_lock.lock().await;
        let current = Arc::clone(self.state.router.load().topology());
        let next = current.apply(change)?;
        match &self.store {
            Store::None => {}
            Store::File(store) => store.save(&next)?,
            Store::Etcd(fleet) => {
                // Recording a replica stale only takes trust away: any proxy may (an
                // acknowledgement shortfall is seen by the proxy that served the write).
                let demotion = matches!(
                    change,
                    TopologyChange::SetReplicaState {
                        state: ReplicaState::Stale,
                        ..
                    }
                );
                if let Err(e) = fleet.save(current.epoch, &next, demotion).await {
                    return Err(self.save_failed(fleet, current.epoch, e).await);
                }
            }
        }
        info!(epoch = next.epoch, change = %change, "topology changed");
        self.install_locked(next);
        if matches!(self.store, Store::Etcd(_)) {
            // Acknowledged once no write routed by the older epoch can still reach a node
            // here, as every proxy does for the epochs it follows.
            self.queue_ack(&current);
        }
        Ok(Arc::clone(self.state.router.load().topology()))
    }

    /// The error for a failed etcd save: on a conflict, the newer topology is read and
    /// installed first (the change lock is held by the caller).
    async fn save_failed(
        &self,
        fleet: &fleet::Fleet,
        expected: u64,
        e: ClusterError,
    ) -> ChangeError {
        match e {
            ClusterError::NotLeader { .. } => ChangeError::NotLeader {
                leader: fleet.view().leader,
            },
            ClusterError::Conflict { found, .. } => {
                match fleet.store().load().await {
                    Ok(Some(newer)) if newer.epoch > self.state.router.load().epoch() => {
                        info!(
                            epoch = newer.epoch,
                            "another proxy changed the topology: installing it"
                        );
                        self.install_locked(newer);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        fleet.etcd_error();
                        warn!(error = %e, "could not read the newer topology from etcd; the watch installs it");
                    }
                }
                ChangeError::Conflict {
                    expected,
                    found: found.unwrap_or(0),
                }
            }
            e => ChangeError::Etcd(e),
        }
    }

    /// Saves the proxy's users with the topology (a [`TopologyChange::SetUsers`]) when they
    /// differ from the topology's, and answers the client that changed them.
    ///
    /// Until it is done, topologies installed meanwhile do not replace the users (they may
    /// predate the change: see [`redshard_dataplane::users::Users::sync`]); then the proxy
    /// takes the installed topology's users, which another proxy of the fleet may have
    /// changed since.
    fn save_users(self: &Arc<Self>, done: tokio::sync::oneshot::Sender<bytes::Bytes>) {
        let controller = Arc::clone(self);
        tokio::spawn(async move {
            let changes = controller.state.users.local_changes();
            let users = controller.state.users.lines();
            let saved = controller.state.router.load().topology().users.as_ref() == Some(&users);
            let reply = if saved {
                bytes::Bytes::from_static(b"+OK\r\n")
            } else {
                let changed = match controller
                    .change_now(&TopologyChange::SetUsers {
                        users: users.clone(),
                    })
                    .await
                {
                    Err(ChangeError::NotLeader { .. }) => controller.users_on_leader(users).await,
                    other => other.map(|_| ()).map_err(|e| e.to_string()),
                };
                match changed {
                    Ok(()) => bytes::Bytes::from_static(b"+OK\r\n"),
                    Err(e) => {
                        warn!(error = %e, "the proxy's users could not be saved with the topology; the change is undone");
                        let _guard = controller.change_lock.lock().await;
                        let table = controller.state.router.load();
                        controller
                            .state
                            .users
                            .revert(table.topology().users.as_deref());
                        controller.state.users.settled(changes);
                        redshard_protocol::client_error::ClientError::UsersNotSaved { why: e }
                            .to_reply()
                    }
                }
            };
            {
                let _guard = controller.change_lock.lock().await;
                controller.state.users.settled(changes);
                let table = controller.state.router.load();
                controller.take_users(table.topology().users.as_deref());
            }
            let _ = done.send(reply);
        });
    }

    /// Makes `users` (lines as [`redshard_dataplane::users::Users::lines`] writes them) the
    /// proxy's users, saved with the topology: what a proxy of the fleet that does not lead
    /// sends the leader when its clients changed them (the admin port's `SETUSERS`).
    ///
    /// # Errors
    /// A line that does not describe a user (nothing changes), or the change's error.
    pub async fn set_users(&self, users: Vec<String>) -> Result<Arc<Topology>, String> {
        if let Some(bad) = self.state.users.unreadable(&users) {
            return Err(format!("not a user as ACL LIST describes one: {bad}"));
        }
        self.change(TopologyChange::SetUsers { users })
            .await
            .map_err(|e| e.to_string())
    }

    /// Gives the fleet's leader `forward` to have it save the users changed here when this
    /// proxy does not lead. Set once, at start; later calls are ignored.
    pub fn forward_to_leader_with(&self, forward: Arc<dyn LeaderForward>) {
        let _ = self.leader_forward.set(forward);
    }

    /// On a proxy of a fleet that does not lead: has the leader save `users` (through the
    /// forwarding the layer above gave, which returns once this proxy installed the change).
    ///
    /// # Errors
    /// Why the leader did not save them; without a way to reach it, that only the leader can.
    async fn users_on_leader(&self, users: Vec<String>) -> Result<(), String> {
        let Some(forward) = self.leader_forward.get() else {
            return Err(ChangeError::NotLeader { leader: None }.to_string()
                + "; this proxy cannot forward it (it has no admin port forwarding), so send it to the leader");
        };
        forward.set_users(users).await
    }

    /// Makes a topology's users (`lines`) the proxy's, unless a change made here is not
    /// saved yet, and disconnects the clients Redis would have (the change lock is held).
    fn take_users(&self, lines: Option<&[String]>) {
        let dropped = self.state.users.sync(lines);
        redshard_dataplane::session::disconnect_users(&self.state, &dropped);
    }

    /// Installs `next` and has the probes track its nodes (the change lock is held); its
    /// users become the proxy's when they differ (another proxy of the fleet changed them).
    fn install_locked(&self, next: Topology) {
        self.take_users(next.users.as_deref());
        self.state.router.install(&self.writer, next);
        let table = self.state.router.load();
        self.probes.track(table.topology().nodes());
        self.settle_when_acked(Arc::clone(table.topology()));
    }

    /// The controller's task.
    async fn run(
        self: Arc<Self>,
        mut events: redshard_dataplane::events::EventReceiver,
        mut shutdown: Shutdown,
    ) {
        let mut tick = tokio::time::interval(self.state.config.health.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                () = self.changed.notified() => self.round().await,
                _ = tick.tick() => self.round().await,
            }
        }
        self.probes.stop();
        // For the clean stop to see what was never acted on (`stop.rs`).
        *self
            .returned_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(events);
    }

    /// Handles one report of the data path.
    async fn handle(self: &Arc<Self>, event: ControlEvent) {
        match event {
            ControlEvent::ReplicaFailed {
                shard,
                addr,
                reason,
            } => {
                let verdict = if self.record_stale(shard, &addr, &reason).await {
                    AckVerdict::Release
                } else {
                    AckVerdict::Refuse
                };
                if let Some(link) = self.state.router.mirror().link(&addr) {
                    link.stale_recorded(verdict);
                }
            }
            ControlEvent::AckShortfall {
                master,
                wanted,
                answer,
                done,
            } => self.ack_shortfall(master, wanted, &answer, done),
            ControlEvent::ConnectionLost { addr } => {
                self.probes.kick(&addr);
                let table = self.state.router.load();
                let topology = table.topology();
                if let Some(shard) = topology.shards.iter().find(|s| s.master == addr) {
                    self.book().suspect(shard.id, addr.clone(), Instant::now());
                    let master = self.probes.status(&addr);
                    self.settle_gate(
                        shard.id,
                        &shard.master,
                        &master,
                        self.candidate(shard).is_some(),
                    );
                }
            }
            ControlEvent::NodeRestarted { addr, run_id } => {
                self.node_restarted(&addr, &run_id).await;
            }
            ControlEvent::MasterWriteLost { shard, master } => {
                self.book().writes_lost(shard, master, Instant::now());
            }
            ControlEvent::KillScript { which, done } => self.kill_script(which, done),
            ControlEvent::EveryNode {
                request,
                nodes,
                done,
            } => self.every_node(request, nodes, done),
            ControlEvent::SaveUsers { done } => self.save_users(done),
        }
    }

    /// Records the in-sync replica `addr` of `shard` stale (persisted), for `reason`; logs
    /// when it cannot be. Returns whether the stored topology no longer counts it in sync
    /// (recorded now, or already stale or gone): false when the mark could not be saved.
    async fn record_stale(&self, shard: ShardId, addr: &NodeAddr, reason: &str) -> bool {
        let change = TopologyChange::SetReplicaState {
            shard,
            addr: addr.clone(),
            state: ReplicaState::Stale,
        };
        // In a fleet another proxy may save a topology between this one's read and its save:
        // the newer one is installed then, and the mark is made again on it (the replies
        // that wait for it are released only after; a mark lost to a race would let an
        // acknowledged write miss an in-sync replica).
        let mut outcome = self.change_now(&change).await;
        for _ in 0..STALE_MARK_RETRIES {
            if !matches!(outcome, Err(ChangeError::Conflict { .. })) {
                break;
            }
            outcome = self.change_now(&change).await;
        }
        match outcome {
            Ok(_) => {
                self.state.ha.record_stale();
                warn!(replica = %addr, %reason, "replica recorded stale");
                true
            }
            // Already stale or gone: nothing to persist.
            Err(ChangeError::Refused(e)) => {
                info!(replica = %addr, error = %e, %reason, "replica failure not recorded");
                true
            }
            // A restart (or, in a fleet, another proxy) would trust the replica: the writes
            // it lacks are not acknowledged, and the operator must know.
            Err(e @ ChangeError::Store(_)) => {
                tracing::error!(replica = %addr, error = %e, %reason, "a stale replica could not be recorded in the topology file; the writes it lacks are answered -NOREPLICAS; do not restart the proxy before fixing the file's storage");
                false
            }
            Err(e) => {
                tracing::error!(replica = %addr, error = %e, %reason, "a stale replica could not be recorded in etcd; the writes it lacks are answered -NOREPLICAS");
                false
            }
        }
    }

    /// One round over every shard: gates, failovers, lost writes, resyncs.
    async fn round(self: &Arc<Self>) {
        let health = self.state.config.health.clone();
        // The topology only: a table held across the failovers below would hold up the
        // epoch barrier of a migration starting meanwhile.
        let topology = Arc::clone(self.state.router.load().topology());
        // In a fleet only the leader decides; the others keep their gates and follow the
        // topology it saves.
        let decides = self.decides();
        for shard in &topology.shards {
            let master = self.probes.status(&shard.master);
            let candidate = self.candidate(shard);
            if master.is_down(&health) && decides {
                if let (true, Some(replica)) = (health.auto_failover, candidate.as_ref()) {
                    if self.agreed_down(&shard.master).await {
                        let since = master.failing_since.unwrap_or_else(Instant::now);
                        let kind = failover::FailoverKind::MasterDown { since };
                        if let Err(e) = self.failover(shard.id, replica, kind).await {
                            warn!(shard = %shard.name, error = %e, "failover failed");
                        }
                        continue;
                    }
                }
            }
            // Frozen (etcd down for the whole fleet), nobody can fail the master over: a
            // request waiting for that would only wait, so a down master's shard is Down.
            let frozen = self.fleet().is_some_and(|f| f.is_frozen());
            self.settle_gate(
                shard.id,
                &shard.master,
                &master,
                candidate.is_some() && !frozen,
            );
            if !decides {
                if self.redis_replication() {
                    self.start_replica_check(shard, &master, false);
                }
                continue;
            }
            self.check_lost_writes(shard, &master, &health).await;
            if self.redis_replication() {
                self.start_replica_check(shard, &master, true);
            } else {
                self.start_resyncs(shard, &master);
            }
        }
    }

    /// The replica to promote if `shard`'s master is down: in sync, still mirrored to, and
    /// answering probes.
    fn candidate(&self, shard: &redshard_config::Shard) -> Option<NodeAddr> {
        let mirror = self.state.router.mirror();
        shard
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::InSync)
            .filter(|r| mirror.link(&r.addr).is_none_or(|l| l.is_active()))
            .find(|r| self.probes.status(&r.addr).is_up())
            .map(|r| r.addr.clone())
    }

    /// Sets `shard`'s gate from its master's health and what holds it.
    fn settle_gate(
        &self,
        shard: ShardId,
        addr: &NodeAddr,
        master: &probe::ProbeStatus,
        can_fail_over: bool,
    ) {
        let health = &self.state.config.health;
        if self.state.router.is_offline() {
            // The proxy serves nothing until it has an etcd session again.
            let gate = self.state.router.gate(shard);
            if gate.state() != GateState::Down {
                gate.set(&self.writer, GateState::Down);
            }
            return;
        }
        let node = self.state.router.pool().node(addr);
        let incarnation = node.incarnation();
        let (held, suspect) = {
            let mut book = self.book();
            // A suspicion ends with the first probe answered after it, or after a few rounds;
            // and once every lane is connected again to the same process (a probe also
            // answers a node restarted empty, which must be failed over before it is
            // served), or after `failover_wait`, as long as a lane holds what it could not
            // send.
            let ends = |since: Instant| {
                (master.last_ok.is_some_and(|ok| ok > since)
                    || since.elapsed() > health.timeout + health.interval * 2)
                    && (incarnation.lanes_connected() || since.elapsed() > health.failover_wait)
            };
            let suspect = book.still_suspect(shard, addr, ends);
            (book.is_held(shard), suspect)
        };
        let wanted = if held {
            GateState::Paused
        } else if master.is_down(health) && !can_fail_over {
            GateState::Down
        } else if (master.is_failing() || suspect || incarnation.restart_pending())
            && can_fail_over
            && health.auto_failover
        {
            // It may be failed over soon: new requests wait for the outcome.
            GateState::Paused
        } else {
            GateState::Open
        };
        // A decision is coming unless the shard is down: until then, the master's lanes
        // keep what they could not send.
        incarnation.set_hold(wanted != GateState::Down);
        let gate = self.state.router.gate(shard);
        if gate.state() != wanted {
            gate.set(&self.writer, wanted);
        }
    }

    /// Pauses `shard`'s gate for a cut-over (see [`resync`], [`failover`]) until
    /// [`Controller::release`].
    fn hold(&self, shard: ShardId, reason: HoldReason) {
        self.book().hold(shard, reason);
        self.state
            .router
            .gate(shard)
            .set(&self.writer, GateState::Paused);
    }

    /// Ends the cut-over [`Controller::hold`] began for `reason`: once no other cut-over holds
    /// the shard, the gate reopens, and the next round sets it from the master's health.
    fn release(&self, shard: ShardId, reason: &HoldReason) {
        if !self.book().release(shard, reason) {
            // Another cut-over still holds the shard: it reopens the gate when it ends.
            return;
        }
        let gate = self.state.router.gate(shard);
        if gate.state() == GateState::Paused {
            gate.set(&self.writer, GateState::Open);
            // The next round corrects it if the master's health says otherwise.
            self.changed.notify_one();
        }
    }

    /// Makes the replicas of a shard stale when its master lost mirrored writes in flight and
    /// stayed up (it may hold writes they never got).
    async fn check_lost_writes(
        &self,
        shard: &redshard_config::Shard,
        master: &probe::ProbeStatus,
        health: &redshard_config::HealthConfig,
    ) {
        // A loss recorded for a master failed over since is forgotten: the old master's
        // writes are gone with it.
        let verdict = self.book().judge_loss(shard.id, &shard.master, |since| {
            master.is_up() && since.elapsed() >= health.down_after
        });
        if verdict != LossVerdict::Act {
            return;
        }
        // "Stayed up" or came back as another process faster than its lanes noticed (they
        // reconnect with a backoff)? Then the replicas hold what it lost: fail over instead.
        if let Some(run_id) = self.restarted(&shard.master).await {
            self.node_restarted(&shard.master, &run_id).await;
            return;
        }
        for replica in shard
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::InSync)
        {
            if let Some(link) = self.state.router.mirror().link(&replica.addr) {
                link.fail(format!(
                    "the master {} stayed up after a connection with mirrored writes in flight failed; their outcome is unknown",
                    shard.master
                ));
            }
        }
    }

    /// The node's `run_id` when it is another process than the one the lanes serve (asked
    /// over a control connection; `None` if it is the same, unknown, or cannot be asked).
    async fn restarted(&self, addr: &NodeAddr) -> Option<String> {
        let timeout = self.state.config.health.timeout;
        let mut conn = self.connect(addr, timeout).await.ok()?;
        let run_id = conn.info("server").await.ok()?.get("run_id")?.clone();
        let node = self.state.router.pool().node(addr);
        node.incarnation().differs(&run_id).then_some(run_id)
    }

    /// Tells the resync of `addr`, if one runs, to stop: the replica was removed.
    fn stop_resync(&self, addr: &NodeAddr) {
        self.book().stop_resync(addr);
    }

    /// Starts the resync of the shard's replicas that need one and answer, one at a time.
    fn start_resyncs(
        self: &Arc<Self>,
        shard: &redshard_config::Shard,
        master: &probe::ProbeStatus,
    ) {
        if !master.is_up() {
            return;
        }
        let mut book = self.book();
        // A graceful failover holds the shard while the old master is briefly stale between
        // the promotion and its return as an in-sync replica: it needs no resync.
        if book.is_held(shard.id) || book.any_resyncing(shard.replicas.iter().map(|r| &r.addr)) {
            return;
        }
        let now = Instant::now();
        let next = shard.replicas.iter().find(|r| {
            r.state != ReplicaState::InSync
                && book.resync_due(&r.addr, now)
                && self.probes.status(&r.addr).is_up()
        });
        if let Some(replica) = next {
            // Refused (`None`) only if one runs already, which the check above excludes.
            let Some(stop) = book.start_resync(&replica.addr, now) else {
                return;
            };
            let controller = Arc::clone(self);
            let (shard, addr) = (shard.id, replica.addr.clone());
            tokio::spawn(async move {
                let result = controller.resync(shard, &addr, &stop).await;
                let mut book = controller.book();
                match result {
                    Ok(took) => {
                        book.end_resync(&addr, ResyncEnd::Finished);
                        info!(replica = %addr, took_ms = took.as_millis() as u64, "replica resynchronised and in sync");
                    }
                    Err(resync::ResyncError::Removed) => {
                        book.end_resync(&addr, ResyncEnd::Finished);
                        info!(replica = %addr, "resync stopped: the replica was removed");
                    }
                    Err(e) => {
                        book.end_resync(
                            &addr,
                            ResyncEnd::RetryAt(Instant::now() + Duration::from_secs(2)),
                        );
                        warn!(replica = %addr, error = %e, "resync failed; retrying in 2 s");
                    }
                }
            });
        }
    }
}
