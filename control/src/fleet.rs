//! A proxy in a fleet: several proxies sharing one cluster through etcd (`[cluster] etcd`).
//!
//! [`Fleet::join`] connects, starts the proxy's session, seeds the topology in etcd (the
//! first proxy of a new fleet) and registers the proxy. The controller then:
//! - saves every topology change to etcd before installing it (a compare-and-swap on the
//!   epoch, checked against its leadership's fencing token: [`Fleet::save`]);
//! - follows the topology watch, installing each newer epoch and acknowledging it;
//! - campaigns for leadership in the background: only the leader runs the deciding work of
//!   its rounds (failover, replica checks, migrations), every proxy probes and publishes its
//!   view of the nodes;
//! - when its session is out of touch with etcd, asks the other proxies whether any reaches
//!   it ([`crate::peers`]); on a lost session it serves its last topology (`Frozen`) if none
//!   does, else stops serving (every gate `Down`, `-CLUSTERDOWN`); either way it starts a new
//!   session, registers again, installs the newest topology and serves as before.
//!
//! The states ([`FleetRole`]) are drawn in `LIFECYCLE.md` beside this file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redshard_cluster::{
    ClusterError, Election, Etcd, EtcdTopologyStore, HealthReports, HealthView, Leadership,
    Membership, NodeHealth, Session,
};
use redshard_config::{ClusterConfig, NodeAddr, Topology};
use redshard_dataplane::state::ProxyState;
use tokio::sync::watch;

/// Where this proxy stands in the fleet (see `LIFECYCLE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetRole {
    /// Serving with a live session; another proxy (or none yet) leads.
    Following,
    /// Serving with a live session, and leading: the only proxy that decides topology
    /// changes (other than recording a replica stale).
    Leading,
    /// The session was lost and no other proxy reaches etcd either (etcd is down for the
    /// whole fleet): serving the last topology, changing nothing, asking the others every
    /// `[cluster] peer_poll_interval_ms` until etcd returns.
    Frozen,
    /// The session was lost while another proxy may reach etcd (or cannot be asked): serving
    /// nothing (`-CLUSTERDOWN`) until a new session is registered and the newest topology
    /// installed.
    Offline,
}

impl FleetRole {
    /// The word INFO and the admin port show.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            FleetRole::Following => "follower",
            FleetRole::Leading => "leader",
            FleetRole::Frozen => "frozen",
            FleetRole::Offline => "offline",
        }
    }
}

/// The session and the registration made with it; replaced together after a loss.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    /// The proxy's lease.
    pub(crate) session: Session,
    /// The member entry under that lease.
    pub(crate) membership: Arc<Membership>,
}

/// What the proxy last learnt of the fleet, for INFO, metrics and the admin port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetView {
    /// The leader's id, when one leads.
    pub leader: Option<String>,
    /// The live members: id, client address, admin address, acknowledged epoch.
    pub members: Vec<redshard_cluster::Member>,
}

/// This proxy's membership of a fleet. Shared by the controller's fleet tasks.
#[derive(Debug)]
pub struct Fleet {
    /// The etcd connection of the cluster.
    etcd: Etcd,
    /// The topology in etcd.
    store: EtcdTopologyStore,
    /// This proxy's id in the fleet.
    id: String,
    /// The client address registered, for the other proxies and operators.
    addr: String,
    /// The admin address registered, when the proxy has an admin port.
    admin: Option<String>,
    /// The current session and member entry (replaced after a lost session).
    link: Mutex<Link>,
    /// The leadership while this proxy leads; `None` otherwise.
    leadership: Mutex<Option<Leadership>>,
    /// The role, published for whoever waits on it (tests, the admin side).
    role: watch::Sender<FleetRole>,
    /// Set while the session is lost and the last topology is served anyway (`Frozen`): no
    /// other proxy reaches etcd. Moved by the session task only.
    frozen: AtomicBool,
    /// `[cluster] peer_poll_interval_ms`: how often the other proxies are asked while this
    /// one is out of touch with etcd (an ask gets half of it).
    peer_poll: Duration,
    /// Proxies that asked this one `FLEETPEER FROM ...` since its last member read: asked
    /// too while this one is out of touch (one that returned to etcd after this proxy lost
    /// it is missing from that read). Cleared by each member read.
    heard: Mutex<Vec<redshard_cluster::Member>>,
    /// The last leader and members read from etcd (refreshed every round).
    view: Mutex<FleetView>,
    /// The probe reports of the fleet.
    reports: HealthReports,
    /// The proxy's state, where INFO and `/metrics` read the fleet's status (set when the
    /// controller starts).
    state: std::sync::OnceLock<Arc<ProxyState>>,
}

impl Fleet {
    /// Joins the fleet of `config`: connects, starts a session, seeds the topology with
    /// `initial` when etcd holds none, and registers as `id` (client address `addr`, admin
    /// address `admin`) with the stored topology's epoch. Returns the fleet and the topology
    /// to serve (the one in etcd).
    ///
    /// # Errors
    ///
    /// [`ClusterError`] when etcd cannot be reached or refuses a step.
    pub async fn join(
        config: &ClusterConfig,
        id: String,
        addr: String,
        admin: Option<String>,
        initial: &Topology,
    ) -> Result<(Arc<Fleet>, Topology), ClusterError> {
        let etcd = Etcd::connect(config).await?;
        let session = Session::start(&etcd).await?;
        let store = etcd.topology_store();
        let topology = store.seed(initial).await?;
        let membership = Membership::register_with_admin(
            &etcd,
            &session,
            &id,
            &addr,
            admin.as_deref(),
            topology.epoch,
        )
        .await?;
        let (role, _) = watch::channel(FleetRole::Following);
        let reports = HealthReports::new(&etcd);
        let fleet = Arc::new(Fleet {
            etcd,
            store,
            id,
            addr,
            admin,
            link: Mutex::new(Link {
                session,
                membership: Arc::new(membership),
            }),
            leadership: Mutex::new(None),
            role,
            frozen: AtomicBool::new(false),
            peer_poll: config.peer_poll_interval,
            heard: Mutex::new(Vec::new()),
            view: Mutex::new(FleetView::default()),
            reports,
            state: std::sync::OnceLock::new(),
        });
        // The members to ask if etcd goes away before the first report reads them.
        fleet.read_members().await;
        Ok((fleet, topology))
    }

    /// Connects the fleet to the proxy's state, for INFO and `/metrics`.
    pub(crate) fn attach(&self, state: &Arc<ProxyState>) {
        let _ = self.state.set(Arc::clone(state));
        state.fleet.set(|info| {
            info.id.clone_from(&self.id);
            info.role = self.role().label();
        });
    }

    /// Counts a failed request to etcd.
    pub(crate) fn etcd_error(&self) {
        if let Some(state) = self.state.get() {
            state.fleet.record_etcd_error();
        }
    }

    /// This proxy's id in the fleet.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The etcd connection (for barriers and reads).
    #[must_use]
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The topology store in etcd.
    #[must_use]
    pub fn store(&self) -> &EtcdTopologyStore {
        &self.store
    }

    /// The role now.
    #[must_use]
    pub fn role(&self) -> FleetRole {
        *self.role.borrow()
    }

    /// A receiver of every role change.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<FleetRole> {
        self.role.subscribe()
    }

    /// Whether this proxy leads now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leadership().is_some_and(|l| l.is_leading())
    }

    /// Whether this proxy leads and may decide now: its session has also been in touch with
    /// etcd, without a lapse, for the settle window (see [`Fleet::settle`]).
    #[must_use]
    pub fn decides(&self) -> bool {
        self.is_leader() && self.contact_settled()
    }

    /// Whether the session has been in touch with etcd, without a lapse, for the settle
    /// window: a proxy that lapsed may have told a frozen proxy that it cannot reach etcd,
    /// and must let it notice that it can again before changing the topology.
    pub(crate) fn contact_settled(&self) -> bool {
        self.settle_left().is_none()
    }

    /// How much longer the session must stay in touch with etcd to have been so for the
    /// settle window; `None` once it has (a whole window while it is out of touch).
    pub(crate) fn settle_left(&self) -> Option<Duration> {
        match self.link().session.contact_since() {
            Some(since) => self
                .settle()
                .checked_sub(since.elapsed())
                .filter(|left| !left.is_zero()),
            None => Some(self.settle()),
        }
    }

    /// How long a leader's session must have been in touch with etcd, without a lapse (a
    /// new session counting from its grant), before it changes the topology: three peer poll
    /// intervals. A frozen proxy asks every interval (each ask within half of one), so by
    /// then it has seen that this proxy reaches etcd and stopped serving.
    #[must_use]
    pub fn settle(&self) -> Duration {
        self.peer_poll * 3
    }

    /// `[cluster] peer_poll_interval_ms`.
    #[must_use]
    pub fn peer_poll(&self) -> Duration {
        self.peer_poll
    }

    /// What this proxy answers to `FLEETPEER`, with `epoch` installed.
    #[must_use]
    pub fn peer_status(&self, epoch: u64) -> crate::peers::PeerStatus {
        let session = self.link().session;
        crate::peers::PeerStatus {
            id: self.id.clone(),
            session: session.is_alive(),
            contact: session.in_contact(),
            role: self.role().label().to_owned(),
            epoch,
        }
    }

    /// Whether the session is lost and the last topology served anyway.
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Relaxed)
    }

    /// Sets whether the last topology is served without a session.
    pub(crate) fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::Relaxed);
    }

    /// The admin address this proxy registered, which it gives when it asks the others.
    #[must_use]
    pub fn admin(&self) -> Option<&str> {
        self.admin.as_deref()
    }

    /// Records that the proxy `id`, whose admin port is at `admin`, asked this one: it is
    /// asked too while this proxy is out of touch with etcd.
    pub fn heard_from(&self, id: &str, admin: &str) {
        if id == self.id {
            return;
        }
        let mut heard = self.heard.lock().unwrap_or_else(PoisonError::into_inner);
        heard.retain(|m| m.id != id);
        heard.push(redshard_cluster::Member {
            id: id.to_owned(),
            addr: String::new(),
            admin: Some(admin.to_owned()),
            epoch: 0,
        });
    }

    /// Whom to ask while out of touch with etcd: the members last read, and the proxies that
    /// asked this one since.
    pub(crate) fn peers(&self) -> Vec<redshard_cluster::Member> {
        let mut peers = self.view().members;
        for member in self
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            match peers.iter_mut().find(|m| m.id == member.id) {
                Some(known) => known.admin.clone_from(&member.admin),
                None => peers.push(member.clone()),
            }
        }
        peers
    }

    /// When the session's last successful renewal was sent.
    pub(crate) fn renewed_at(&self) -> Instant {
        self.link().session.renewed_at()
    }

    /// The last leader and members read from etcd (refreshed every controller round).
    #[must_use]
    pub fn view(&self) -> FleetView {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The leadership while this proxy leads.
    pub(crate) fn leadership(&self) -> Option<Leadership> {
        self.leadership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn link(&self) -> Link {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the role from the facts: offline (`offline`, the session lost) first, else
    /// frozen, else leading while the leadership holds, else following.
    pub(crate) fn update_role(&self, offline: bool) {
        let role = if offline {
            FleetRole::Offline
        } else if self.is_frozen() {
            FleetRole::Frozen
        } else if self.is_leader() {
            FleetRole::Leading
        } else {
            FleetRole::Following
        };
        self.set_role(role);
    }

    fn set_role(&self, role: FleetRole) {
        self.role.send_if_modified(|held| {
            let changed = *held != role;
            *held = role;
            changed
        });
        if let Some(state) = self.state.get() {
            state.fleet.set(|info| info.role = role.label());
        }
    }

    pub(crate) fn set_leadership(&self, leadership: Option<Leadership>) {
        *self
            .leadership
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = leadership;
    }

    /// A campaign for leadership with the current session.
    pub(crate) fn election(&self) -> Election {
        Election::new(&self.etcd, &self.link().session, self.id.clone())
    }

    /// Saves `next` in place of the topology at `expected`: with this proxy's leadership, or
    /// without it for a change that only takes trust away (`demotion`).
    pub(crate) async fn save(
        &self,
        expected: u64,
        next: &Topology,
        demotion: bool,
    ) -> Result<(), ClusterError> {
        let result = match self.leadership() {
            Some(leadership) if leadership.is_leading() && self.contact_settled() => {
                self.store.save(&leadership, expected, next).await
            }
            _ if demotion => self.store.save_unfenced(expected, next).await,
            Some(leadership) => Err(ClusterError::NotLeader {
                token: leadership.token(),
            }),
            None => Err(ClusterError::NotLeader { token: 0 }),
        };
        if let Err(e) = &result {
            if !matches!(
                e,
                ClusterError::NotLeader { .. } | ClusterError::Conflict { .. }
            ) {
                self.etcd_error();
            }
        }
        result
    }

    /// Acknowledges `epoch` as installed (best effort: a failure is logged; a lost session
    /// registers again with the epoch installed then).
    pub(crate) async fn ack(&self, epoch: u64) {
        let membership = self.link().membership;
        if let Err(e) = membership.ack_epoch(epoch).await {
            self.etcd_error();
            tracing::warn!(epoch, error = %e, "could not acknowledge the installed epoch in etcd");
        }
    }

    /// Publishes this proxy's view of `nodes` and refreshes the leader and members it knows.
    pub(crate) async fn report(&self, nodes: &[(NodeAddr, NodeHealth)]) {
        let session = self.link().session;
        if !session.is_alive() {
            return;
        }
        if let Err(e) = self.reports.publish(&session, &self.id, nodes).await {
            self.etcd_error();
            tracing::debug!(error = %e, "could not publish the probe report");
        }
        let leader = self.election().leader().await;
        let members = self.etcd.members().await;
        if let (Ok(leader), Ok(members)) = (leader, members) {
            if let Some(state) = self.state.get() {
                state.fleet.set(|info| {
                    info.leader = leader.as_ref().map(|l| l.id.clone());
                    info.members = members.len();
                });
            }
            *self.view.lock().unwrap_or_else(PoisonError::into_inner) = FleetView {
                leader: leader.map(|l| l.id),
                members,
            };
            self.heard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Reads the members from etcd into the view (best effort): whom to ask if etcd goes.
    async fn read_members(&self) {
        match self.etcd.members().await {
            Ok(members) => {
                self.view
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .members = members;
                self.heard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            }
            Err(e) => tracing::debug!(error = %e, "could not read the fleet's members"),
        }
    }

    /// The probe reports of the live proxies.
    pub(crate) async fn views(&self) -> Result<Vec<HealthView>, ClusterError> {
        self.reports.views().await
    }

    /// After a lost session: a new session, the member entry again (with `epoch` installed),
    /// and the newest topology in etcd.
    pub(crate) async fn rejoin(&self, epoch: u64) -> Result<Topology, ClusterError> {
        let session = Session::start(&self.etcd).await?;
        let membership = Membership::register_with_admin(
            &self.etcd,
            &session,
            &self.id,
            &self.addr,
            self.admin.as_deref(),
            epoch,
        )
        .await?;
        let topology = self
            .store
            .load()
            .await?
            .ok_or_else(|| ClusterError::NoTopology {
                key: "topology".to_owned(),
            })?;
        *self.link.lock().unwrap_or_else(PoisonError::into_inner) = Link {
            session,
            membership: Arc::new(membership),
        };
        self.read_members().await;
        Ok(topology)
    }

    /// On a clean stop: resigns the leadership and revokes the session, so the others need
    /// not wait for the lease to expire.
    pub(crate) async fn leave(&self) {
        if let Some(leadership) = self.leadership() {
            let _ = leadership.resign().await;
        }
        self.set_leadership(None);
        let _ = self.link().session.close().await;
    }
}

/// Whether the live proxies' views agree that `node` is down: a strict majority of the
/// reports that mention it say down. This proxy's own probe (it decided already) counts for
/// one "down" in place of its own published report.
#[must_use]
pub fn agreed_down(views: &[HealthView], own: &str, node: &NodeAddr) -> bool {
    let mut down = 1usize;
    let mut total = 1usize;
    for view in views.iter().filter(|v| v.proxy != own) {
        match view.of(node) {
            Some(NodeHealth::Down) => {
                down += 1;
                total += 1;
            }
            Some(NodeHealth::Up) => total += 1,
            None => {}
        }
    }
    down * 2 > total
}

/// How long to wait before trying etcd again after `attempt` failures.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(4))).min(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(proxy: &str, health: Option<NodeHealth>) -> HealthView {
        let node = NodeAddr::parse("127.0.0.1:7000").unwrap();
        HealthView {
            proxy: proxy.to_owned(),
            nodes: health.map(|h| vec![(node, h)]).unwrap_or_default(),
        }
    }

    #[test]
    fn a_node_is_down_when_most_live_proxies_say_so() {
        let node = NodeAddr::parse("127.0.0.1:7000").unwrap();
        let up = Some(NodeHealth::Up);
        let down = Some(NodeHealth::Down);
        // Alone: its own probe decides.
        assert!(agreed_down(&[view("a", up)], "a", &node));
        // One of three cannot reach it: no failover.
        assert!(!agreed_down(
            &[view("a", up), view("b", up), view("c", up)],
            "a",
            &node
        ));
        // Two of three: failed over.
        assert!(agreed_down(
            &[view("a", up), view("b", down), view("c", up)],
            "a",
            &node
        ));
        // Two proxies, the other disagrees: not a majority.
        assert!(!agreed_down(&[view("b", up)], "a", &node));
        // A report that does not mention the node has no say.
        assert!(agreed_down(&[view("b", None), view("c", down)], "a", &node));
    }

    #[test]
    fn backoff_grows_to_a_second() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(10), Duration::from_secs(1));
    }
}
