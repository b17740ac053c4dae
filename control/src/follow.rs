//! The controller's part in a fleet (see [`crate::fleet`]): five tasks beside its own.
//!
//! - **follow**: installs each newer topology the etcd watch reports (fencing a master that
//!   was failed over elsewhere);
//! - **acknowledge**: acknowledges each installed epoch once no request is routed by an
//!   older table here (and a migration's source lanes have drained), however long it takes
//!   ([`epoch_ack`]);
//! - **lead**: campaigns; while leading, the controller's rounds decide and the migrations
//!   run; on losing the leadership the mover stops and forgets its queue;
//! - **session**: while out of touch with etcd, asks the other proxies whether any reaches
//!   it; on a lost session serves the last topology (`Frozen`) if none does, else nothing
//!   (`-CLUSTERDOWN`), until a new session is registered and the newest topology installed;
//! - **report**: publishes this proxy's view of the nodes every `[health] interval_ms`, and
//!   reads the leader and the members for INFO and the admin port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redshard_cluster::{ClusterError, NodeHealth, SessionState};
use redshard_config::{ReplicaState, Topology};
use redshard_dataplane::shutdown::Shutdown;
use tracing::{debug, error, info, warn};

use crate::epoch_ack::{self, Pending, EPOCH_DRAIN};
use crate::fleet::{self, Fleet, FleetRole};
use crate::peers;
use crate::Controller;

/// How long one try of a barrier waits for the members before it logs and tries again.
const BARRIER_TRY: Duration = Duration::from_secs(5);

impl Controller {
    /// Starts the fleet tasks.
    pub(crate) fn start_fleet(self: &Arc<Self>, fleet: Arc<Fleet>, shutdown: &Shutdown) {
        // The topology taken from etcd at start was installed without the controller: keys
        // of slots it shows migrating wait for the fleet as after any install.
        self.settle_when_acked(Arc::clone(self.state.router.load().topology()));
        tokio::spawn(Arc::clone(self).follow_fleet(Arc::clone(&fleet), shutdown.clone()));
        tokio::spawn(Arc::clone(self).lead(Arc::clone(&fleet), shutdown.clone()));
        tokio::spawn(Arc::clone(self).keep_session(Arc::clone(&fleet), shutdown.clone()));
        tokio::spawn(Arc::clone(self).report(Arc::clone(&fleet), shutdown.clone()));
        tokio::spawn(Arc::clone(self).acknowledge_epochs(fleet, shutdown.clone()));
    }

    /// The follow task: every newer epoch in etcd installed and acknowledged.
    async fn follow_fleet(self: Arc<Self>, fleet: Arc<Fleet>, mut shutdown: Shutdown) {
        let mut attempt = 0;
        loop {
            let watch = tokio::select! {
                watch = fleet.store().watch_topology() => watch,
                () = shutdown.wait() => return,
            };
            let mut watch = match watch {
                // It follows etcd from now on, across outages: this loop never ends.
                Ok(watch) => watch,
                Err(e) => {
                    fleet.etcd_error();
                    if attempt == 0 {
                        warn!(error = %e, "cannot watch the topology in etcd; retrying");
                    }
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(fleet::backoff(attempt)) => continue,
                        () = shutdown.wait() => return,
                    }
                }
            };
            let mut next = watch.current();
            loop {
                self.install_newer(&next).await;
                tokio::select! {
                    topology = watch.changed() => next = topology,
                    () = shutdown.wait() => return,
                }
            }
        }
    }

    /// Installs `topology` if it is newer than the installed one, and queues its
    /// acknowledgement ([`Controller::queue_ack`]).
    pub(crate) async fn install_newer(&self, topology: &Arc<Topology>) {
        let _guard = self.change_lock.lock().await;
        let current = Arc::clone(self.state.router.load().topology());
        if topology.epoch <= current.epoch {
            return;
        }
        info!(
            from = current.epoch,
            epoch = topology.epoch,
            "installing the fleet's newer topology"
        );
        self.follow_masters(&current, topology);
        self.install_locked((**topology).clone());
        self.queue_ack(&current);
    }

    /// Queues the acknowledgement of the epoch just installed over `before` (see
    /// [`epoch_ack`]): once no request here is routed by an older table and, when it begins
    /// migrating slots, the lanes of their sources have run every request sent to them: once
    /// every proxy acknowledged it, no write of a migrating slot can still reach its source,
    /// and keys may move ([`Migrations::settle`](redshard_dataplane::migration::Migrations::settle)).
    pub(crate) fn queue_ack(&self, before: &Topology) {
        let table = self.state.router.load();
        let sources = begun_migrating(before, table.topology())
            .into_iter()
            .filter_map(|from| table.route(from).cloned())
            .collect();
        self.epoch_acks.push(Pending {
            epoch: table.epoch(),
            sources,
        });
    }

    /// The acknowledging task: each queued install's waits, then the etcd acknowledgement.
    async fn acknowledge_epochs(self: Arc<Self>, fleet: Arc<Fleet>, mut shutdown: Shutdown) {
        let Some(queue) = self.epoch_acks.take() else {
            return;
        };
        let changed = Arc::clone(&self.changed);
        let acknowledging = epoch_ack::acknowledge(
            queue,
            |pending| self.drained(pending),
            move |epoch| {
                let fleet = Arc::clone(&fleet);
                let changed = Arc::clone(&changed);
                async move {
                    fleet.ack(epoch).await;
                    changed.notify_one();
                }
            },
        );
        tokio::select! {
            () = acknowledging => {}
            () = shutdown.wait() => {}
        }
    }

    /// Waits, however long it takes, until nothing sent before `pending`'s install can still
    /// run by an older routing here; returns its epoch.
    async fn drained(&self, pending: Pending) -> u64 {
        let epoch = pending.epoch;
        epoch_ack::until_over(
            epoch,
            "requests routed by an older epoch are still being handed to their lanes",
            || self.state.router.epoch_barrier(EPOCH_DRAIN),
        )
        .await;
        for source in &pending.sources {
            let what = format!(
                "the lanes of {} (the source of slots this epoch begins migrating) have not run every request sent to them before it",
                source.name
            );
            epoch_ack::until_over(epoch, &what, || async {
                let started = Instant::now();
                // Answered early but not `+PONG` (an error, a lost connection): the lane
                // then holds nothing sent before the PING either.
                redshard_dataplane::router::barrier(source, false, EPOCH_DRAIN).await
                    || started.elapsed() < EPOCH_DRAIN
            })
            .await;
        }
        epoch
    }

    /// In a fleet, when `topology` shows migrating slots: waits in the background until every
    /// live proxy acknowledged its epoch, then lets keys of those slots move here
    /// ([`Migrations::settle`](redshard_dataplane::migration::Migrations::settle)). Gives up
    /// once a newer epoch is installed (that epoch's own wait takes over).
    pub(crate) fn settle_when_acked(&self, topology: Arc<Topology>) {
        let Some(fleet) = self.fleet() else {
            return;
        };
        if topology.migrations().is_empty() {
            return;
        }
        let fleet = Arc::clone(fleet);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                if state.router.load().epoch() > topology.epoch {
                    return;
                }
                match fleet.etcd().wait_acked(topology.epoch, BARRIER_TRY).await {
                    Ok(_) => {
                        debug!(
                            epoch = topology.epoch,
                            took_ms = started.elapsed().as_millis() as u64,
                            "every live proxy routes the migrating slots to their targets"
                        );
                        state.migrations.settle(topology);
                        return;
                    }
                    Err(e @ ClusterError::BarrierTimeout { .. }) => {
                        warn!(epoch = topology.epoch, error = %e, "migrating slots wait for every proxy to acknowledge the epoch");
                    }
                    Err(e) => {
                        fleet.etcd_error();
                        debug!(epoch = topology.epoch, error = %e, "cannot read the members' epochs; trying again");
                        tokio::time::sleep(fleet::backoff(3)).await;
                    }
                }
            }
        });
    }

    /// What a failover made elsewhere means for this proxy's lanes: a master replaced, and
    /// not an in-sync replica now, is fenced (its lanes fail what they hold, so no write
    /// acknowledged by it after its replacement is ever answered OK); a node the leader made
    /// an in-sync replica or a master again is unfenced.
    fn follow_masters(&self, current: &Topology, next: &Topology) {
        let pool = self.state.router.pool();
        for shard in &next.shards {
            let Some(before) = current.shard(shard.id) else {
                continue;
            };
            if before.master == shard.master {
                continue;
            }
            let old = pool.node(&before.master);
            old.incarnation().set_hold(false);
            let in_sync = shard
                .replica(&before.master)
                .is_some_and(|r| r.state == ReplicaState::InSync);
            if !in_sync {
                old.fence(&self.writer);
            }
        }
        for shard in &next.shards {
            let trusted = std::iter::once(&shard.master).chain(
                shard
                    .replicas
                    .iter()
                    .filter(|r| r.state == ReplicaState::InSync)
                    .map(|r| &r.addr),
            );
            for addr in trusted {
                let node = pool.node(addr);
                if node.is_fenced() {
                    node.unfence(&self.writer);
                }
            }
        }
    }

    /// The lead task: campaigns while the session lives; decides while it leads.
    async fn lead(self: Arc<Self>, fleet: Arc<Fleet>, mut shutdown: Shutdown) {
        let mut attempt = 0;
        'campaign: loop {
            let election = fleet.election();
            let leadership = tokio::select! {
                leadership = election.campaign() => leadership,
                () = shutdown.wait() => return,
            };
            let leadership = match leadership {
                Ok(leadership) => leadership,
                Err(e) => {
                    if !matches!(e, ClusterError::SessionLost { .. }) {
                        fleet.etcd_error();
                        debug!(error = %e, "campaigning for the fleet's leadership");
                    }
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(fleet::backoff(attempt)) => continue,
                        () = shutdown.wait() => return,
                    }
                }
            };
            attempt = 0;
            // Whatever the last leader saved must be installed before deciding anything.
            match fleet.store().load().await {
                Ok(Some(topology)) => self.install_newer(&Arc::new(topology)).await,
                Ok(None) => {}
                Err(e) => {
                    fleet.etcd_error();
                    warn!(error = %e, "could not read the topology on becoming the leader; resigning");
                    let _ = leadership.resign().await;
                    continue;
                }
            }
            // It leads only once its session has been in touch with etcd for the settle window
            // (at once if it has been for long; a new session waits it out): a proxy still
            // frozen has seen by then that it reaches etcd, and stopped. Later lapses hold its
            // decisions the same way (`Fleet::decides`).
            while let Some(left) = fleet.settle_left() {
                debug!(
                    left_ms = left.as_millis() as u64,
                    "won the fleet's election; leading after the settle window"
                );
                tokio::select! {
                    () = tokio::time::sleep(left) => {}
                    _ = leadership.ended() => continue 'campaign,
                    () = shutdown.wait() => return,
                }
            }
            fleet.set_leadership(Some(leadership.clone()));
            fleet.update_role(self.state.router.is_offline());
            info!(token = leadership.token(), "leading the fleet");
            // Resumes what the last leader left half done (migrations are in the topology).
            self.resume_migrations();
            self.changed.notify_one();
            tokio::select! {
                _ = leadership.ended() => {}
                // The clean stop resigns (`record_stop`).
                () = shutdown.wait() => return,
            }
            fleet.set_leadership(None);
            fleet.update_role(self.state.router.is_offline());
            warn!(
                token = leadership.token(),
                "no longer leading the fleet; the new leader decides"
            );
            self.stop_migrations_here();
        }
    }

    /// After losing the leadership: the queue in memory is forgotten (the new leader resumes
    /// from the topology in etcd, which holds the migrating slots and the queued moves).
    fn stop_migrations_here(&self) {
        let migrations = &self.state.migrations;
        let dropped: Vec<_> = migrations.queue().drain(..).collect();
        for job in dropped {
            job.update(|p| {
                p.state = redshard_dataplane::migration::MigrationState::Failed(
                    "this proxy stopped leading the fleet; the new leader resumes the migration"
                        .to_owned(),
                );
            });
            migrations.remember(job.snapshot());
        }
        migrations.wake_mover();
    }

    /// Completes once this proxy does not lead (at once when it does not; never alone).
    pub(crate) async fn until_not_leading(&self) {
        let Some(fleet) = self.fleet() else {
            return std::future::pending().await;
        };
        let mut role = fleet.subscribe();
        let _ = role.wait_for(|r| *r != FleetRole::Leading).await;
    }

    /// The session task. While the session is alive but out of touch with etcd, it asks
    /// the other proxies every `[cluster] peer_poll_interval_ms` whether any reaches etcd, so
    /// the verdict is ready when the session is lost: then the proxy serves its last topology
    /// (`Frozen`) if none does, else nothing (`Offline`), asks again every interval (moving
    /// between the two) and meanwhile starts a new session; with one registered and the
    /// newest topology installed it serves as before.
    async fn keep_session(self: Arc<Self>, fleet: Arc<Fleet>, mut shutdown: Shutdown) {
        loop {
            let session = fleet.link().session;
            let mut tick = tokio::time::interval(fleet.peer_poll());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut verdict = None;
            let ended = loop {
                tokio::select! {
                    ended = session.ended() => break ended,
                    _ = tick.tick() => {}
                    () = shutdown.wait() => return,
                }
                if session.in_contact() {
                    verdict = None;
                    continue;
                }
                tokio::select! {
                    asked = self.ask_peers(&fleet) => verdict = Some(asked),
                    ended = session.ended() => break ended,
                    () = shutdown.wait() => return,
                }
            };
            if ended == SessionState::Closed {
                return;
            }
            fleet.etcd_error();
            fleet.set_leadership(None);
            let lost = Instant::now();
            let verdict = match verdict {
                Some(verdict) => verdict,
                None => {
                    // No verdict yet (the session was lost without being out of touch for a
                    // poll interval first: etcd said the lease is gone): serve nothing while
                    // asking.
                    self.state.router.set_offline(&self.writer, true);
                    fleet.update_role(true);
                    self.ask_peers(&fleet).await
                }
            };
            self.apply_verdict(&fleet, &verdict, true);
            let before = fleet.peers();
            let topology = tokio::select! {
                topology = self.rejoin(&fleet) => topology,
                () = self.poll_peers_while_lost(&fleet) => return,
                () = shutdown.wait() => return,
            };
            self.tell_the_missing(&fleet, &before);
            self.install_newer(&Arc::new(topology)).await;
            let was = fleet.role();
            fleet.set_frozen(false);
            if self.state.router.is_offline() {
                self.state.router.set_offline(&self.writer, false);
            }
            fleet.update_role(false);
            info!(
                lost_ms = lost.elapsed().as_millis() as u64,
                was = was.label(),
                "a new etcd session: serving the fleet's newest topology"
            );
            self.changed.notify_one();
        }
    }

    /// Starts a new session until one is registered (retrying with a backoff); returns the
    /// newest topology in etcd.
    async fn rejoin(&self, fleet: &Fleet) -> Topology {
        let mut attempt = 0u32;
        loop {
            let epoch = self.state.router.load().epoch();
            match fleet.rejoin(epoch).await {
                Ok(topology) => return topology,
                Err(e) => {
                    fleet.etcd_error();
                    if attempt == 0 {
                        warn!(error = %e, "cannot start a new etcd session; retrying");
                    }
                    attempt += 1;
                    tokio::time::sleep(fleet::backoff(attempt)).await;
                }
            }
        }
    }

    /// While the session is lost: asks the other proxies every poll interval and serves or
    /// stops accordingly. Never returns (ended by a new session or the shutdown).
    async fn poll_peers_while_lost(&self, fleet: &Fleet) {
        let mut tick = tokio::time::interval(fleet.peer_poll());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: the verdict was just applied.
        tick.tick().await;
        loop {
            tick.tick().await;
            let verdict = self.ask_peers(fleet).await;
            self.apply_verdict(fleet, &verdict, false);
        }
    }

    /// Asks every member last read from etcd, and every proxy that asked this one since
    /// (their admin ports, within half a poll interval each), whether it reaches etcd.
    async fn ask_peers(&self, fleet: &Fleet) -> peers::Verdict {
        let epoch = self.state.router.load().epoch();
        peers::poll(
            self.asker(fleet),
            &fleet.peers(),
            epoch,
            fleet.peer_poll() / 2,
        )
        .await
    }

    /// This proxy as it introduces itself to the others.
    fn asker<'a>(&'a self, fleet: &'a Fleet) -> peers::Asker<'a> {
        peers::Asker {
            id: fleet.id(),
            admin: fleet.admin(),
            password: self.state.config.admin_password.as_deref(),
        }
    }

    /// After a new session: asks once every proxy this one knew before that is no longer a
    /// member (its session was lost too: it may be serving frozen), introducing itself, so
    /// such a proxy asks it back and stops serving within the settle window, before this
    /// one can lead and change the topology. The answers do not matter.
    fn tell_the_missing(&self, fleet: &Fleet, before: &[redshard_cluster::Member]) {
        let live = fleet.view().members;
        let missing: Vec<_> = before
            .iter()
            .filter(|m| m.id != fleet.id() && !live.iter().any(|l| l.id == m.id))
            .cloned()
            .collect();
        if missing.is_empty() {
            return;
        }
        let asker = self.asker(fleet);
        let ids: Vec<String> = missing.iter().map(|m| m.id.clone()).collect();
        let (id, admin, password) = (
            asker.id.to_owned(),
            asker.admin.map(str::to_owned),
            asker.password.map(str::to_owned),
        );
        let timeout = fleet.peer_poll() / 2;
        // In the background (bounded by the ask's timeout): serving waits for nothing.
        tokio::spawn(async move {
            let asker = peers::Asker {
                id: &id,
                admin: admin.as_deref(),
                password: password.as_deref(),
            };
            let _ = peers::poll(asker, &missing, 0, timeout).await;
            debug!(proxies = ?ids, "told the proxies that lost etcd that this one reaches it again");
        });
    }

    /// Serves the last topology (`Frozen`) or nothing (`Offline`) after a lost session, as
    /// `verdict` says; logs each change once (`first`: the loss itself).
    fn apply_verdict(&self, fleet: &Fleet, verdict: &peers::Verdict, first: bool) {
        match verdict {
            peers::Verdict::Freeze => {
                if fleet.is_frozen() {
                    return;
                }
                fleet.set_frozen(true);
                if self.state.router.is_offline() {
                    self.state.router.set_offline(&self.writer, false);
                }
                fleet.update_role(false);
                warn!(
                    renewed_ms_ago = fleet.renewed_at().elapsed().as_millis() as u64,
                    "the etcd session is lost and no other proxy of the fleet reaches etcd: serving the last topology (frozen); no topology change until etcd returns"
                );
                self.changed.notify_one();
            }
            peers::Verdict::Stop(why) => {
                if !first && !fleet.is_frozen() {
                    return;
                }
                fleet.set_frozen(false);
                self.state.router.set_offline(&self.writer, true);
                fleet.update_role(true);
                error!(
                    %why,
                    "the etcd session is lost: serving nothing (CLUSTERDOWN) until it has a new one"
                );
            }
        }
    }

    /// The report task: this proxy's view of the nodes, every probe interval.
    async fn report(self: Arc<Self>, fleet: Arc<Fleet>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.state.config.health.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.wait() => return,
            }
            let health = &self.state.config.health;
            let topology = Arc::clone(self.state.router.load().topology());
            let nodes: Vec<_> = topology
                .nodes()
                .map(|n| {
                    let down = self.probes.status(n).is_down(health);
                    (
                        n.clone(),
                        if down {
                            NodeHealth::Down
                        } else {
                            NodeHealth::Up
                        },
                    )
                })
                .collect();
            fleet.report(&nodes).await;
            fleet.update_role(self.state.router.is_offline());
        }
    }

    /// Whether the live proxies agree that `addr` is down (always true alone); see
    /// [`fleet::agreed_down`].
    pub(crate) async fn agreed_down(&self, addr: &redshard_config::NodeAddr) -> bool {
        let Some(fleet) = self.fleet() else {
            return true;
        };
        match fleet.views().await {
            Ok(views) => {
                let agreed = fleet::agreed_down(&views, fleet.id(), addr);
                if !agreed {
                    debug!(node = %addr, "down here, but most other proxies still reach it: no failover yet");
                }
                agreed
            }
            Err(e) => {
                fleet.etcd_error();
                warn!(node = %addr, error = %e, "cannot read the other proxies' views: no failover now");
                false
            }
        }
    }

    /// The barrier: waits until every live proxy acknowledged `epoch` (alone: at once). A
    /// timeout is logged and the wait tried again, never skipped; it ends early (false) if
    /// this proxy stops leading, since the new leader then decides.
    pub(crate) async fn fleet_barrier(&self, epoch: u64, why: &str) -> bool {
        let Some(fleet) = self.fleet() else {
            return true;
        };
        let started = Instant::now();
        loop {
            if !fleet.is_leader() {
                return false;
            }
            match fleet.etcd().wait_acked(epoch, BARRIER_TRY).await {
                Ok(_) => {
                    self.state.fleet.record_barrier(started.elapsed(), false);
                    debug!(epoch, took_ms = started.elapsed().as_millis() as u64, %why, "every live proxy acknowledged the epoch");
                    return true;
                }
                Err(e @ ClusterError::BarrierTimeout { .. }) => {
                    self.state.fleet.record_barrier(BARRIER_TRY, true);
                    warn!(epoch, error = %e, %why, "barrier not reached yet; waiting again");
                }
                Err(e) => {
                    fleet.etcd_error();
                    warn!(epoch, error = %e, %why, "barrier: etcd cannot be read; trying again");
                    tokio::time::sleep(fleet::backoff(3)).await;
                }
            }
        }
    }
}

/// The sources of the slots `next` shows migrating in another state than `before` did (a
/// migration that begins or turns around).
pub(crate) fn begun_migrating(before: &Topology, next: &Topology) -> Vec<redshard_config::ShardId> {
    next.migrations()
        .into_iter()
        .filter(|m| {
            m.slots
                .iter()
                .flat_map(redshard_config::SlotRange::slots)
                .any(|slot| before.slot_state(slot) != next.slot_state(slot))
        })
        .map(|m| m.from)
        .collect()
}
