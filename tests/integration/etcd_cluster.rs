//! The coordination layer of a fleet (`redshard-cluster`) against a real etcd: the topology's
//! compare-and-swap and watch, sessions, the election and its fencing, membership and the
//! epoch barrier, probe reports, and etcd going down and coming back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redshard_cluster::{
    ClusterError, Election, Etcd, HealthReports, LeaderState, Membership, NodeHealth, Session,
    SessionState,
};
use redshard_config::{Config, NodeAddr, Topology};
use redshard_tests::{wait_until, EtcdServer};

/// The shortest lease etcd grants; the tests wait for expiries of about this long.
const TTL: Duration = Duration::from_secs(2);
/// What a wait for an expiry may take beyond the TTL on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// A topology of two shards at `epoch`.
fn topology(epoch: u64) -> Topology {
    let config = Config::from_toml_str(
        r#"
[[shard]]
name = "s1"
master = "127.0.0.1:6381"
slots = ["0-8191"]
[[shard]]
name = "s2"
master = "127.0.0.1:6382"
slots = ["8192-16383"]
"#,
        "test",
    )
    .expect("valid shards");
    let mut topology = Topology::from_config(&config);
    topology.epoch = epoch;
    topology
}

async fn connect(etcd: &EtcdServer, prefix: &str) -> Etcd {
    Etcd::connect(&etcd.cluster_config(prefix, TTL))
        .await
        .expect("etcd client")
}

/// The first success of `attempt`, tried every 100 ms for at most 10 s (a client reconnects
/// to a restarted etcd on demand, so its first requests may fail).
async fn until_ok<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e}"),
        }
        // The retry interval of this wait, not synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A leader of the cluster of `client`, with its session.
async fn lead(client: &Etcd, id: &str) -> (Session, redshard_cluster::Leadership) {
    let session = Session::start(client).await.expect("session");
    let leadership = Election::new(client, &session, id)
        .campaign()
        .await
        .expect("leadership");
    (session, leadership)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_are_compare_and_swap_on_the_epoch() {
    let etcd = EtcdServer::start();
    let client = connect(&etcd, "/cas").await;
    let store = client.topology_store();
    assert_eq!(store.load().await.unwrap(), None);
    // The first proxy seeds; a second seed keeps what is there.
    assert_eq!(store.seed(&topology(1)).await.unwrap().epoch, 1);
    assert_eq!(store.seed(&topology(5)).await.unwrap().epoch, 1);

    let (_session, leadership) = lead(&client, "a").await;
    store.save(&leadership, 1, &topology(2)).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(topology(2)));

    // A change based on an epoch that is no longer current is refused, never written.
    match store.save(&leadership, 1, &topology(3)).await {
        Err(ClusterError::Conflict {
            expected: 1,
            found: Some(2),
        }) => {}
        other => panic!("expected a conflict at epoch 2, got {other:?}"),
    }
    match store.save(&leadership, 2, &topology(2)).await {
        Err(ClusterError::EpochNotIncreasing {
            expected: 2,
            new: 2,
        }) => {}
        other => panic!("expected EpochNotIncreasing, got {other:?}"),
    }
    assert_eq!(store.load().await.unwrap().unwrap().epoch, 2);

    // Two leaders' worth of concurrent saves from one epoch: exactly one wins.
    let (three, four) = (topology(3), topology(4));
    let (a, b) = tokio::join!(
        store.save(&leadership, 2, &three),
        store.save(&leadership, 2, &four),
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one save wins: {a:?} {b:?}");
    let stored = store.load().await.unwrap().unwrap().epoch;
    assert!(stored == 3 || stored == 4, "{stored}");

    // The stored text is the topology file's form.
    let mut raw = etcd_client::Client::connect([etcd.addr()], None)
        .await
        .unwrap();
    let text = raw.get("/cas/topology", None).await.unwrap();
    let text = text.kvs()[0].value_str().unwrap().to_owned();
    assert!(text.contains(&format!("epoch = {stored}")), "{text}");
    assert!(
        text.contains("[[shard]]") && text.contains("slots = [\"0-8191\"]"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_follows_newer_epochs_only_and_survives_an_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let client = connect(&etcd, "/watch").await;
    let store = client.topology_store();
    assert!(matches!(
        store.watch_topology().await,
        Err(ClusterError::NoTopology { .. })
    ));
    store.seed(&topology(1)).await.unwrap();
    let mut watch = store.watch_topology().await.unwrap();
    assert_eq!(watch.current().epoch, 1);
    let (session, leadership) = lead(&client, "a").await;

    // Every epoch the watch reports is higher than the last.
    let seen = Arc::new(std::sync::Mutex::new(vec![1u64]));
    let mut receiver = watch.receiver();
    let recorder = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while receiver.changed().await.is_ok() {
                let epoch = receiver.borrow_and_update().epoch;
                seen.lock().unwrap().push(epoch);
            }
        })
    };

    store.save(&leadership, 1, &topology(2)).await.unwrap();
    assert_eq!(watch.changed().await.epoch, 2);

    // An older topology written behind the store's back is not installed.
    let mut raw = etcd_client::Client::connect([etcd.addr()], None)
        .await
        .unwrap();
    let old = toml::to_string(&topology(1)).unwrap();
    raw.put("/watch/topology", old, None).await.unwrap();
    raw.put("/watch/epoch", "1", None).await.unwrap();
    store.save(&leadership, 1, &topology(3)).await.unwrap();
    assert_eq!(watch.changed().await.epoch, 3);

    // etcd goes down and comes back: the watch resumes and sees the next change. (The
    // leader gives up first, so that the leadership after the restart does not depend on
    // whether its lease outlived the restart.)
    leadership.resign().await.unwrap();
    session.close().await.unwrap();
    etcd.stop();
    etcd.restart();
    let session2 = until_ok("a session after etcd's restart", || Session::start(&client)).await;
    let leadership2 = Election::new(&client, &session2, "b")
        .campaign()
        .await
        .unwrap();
    store.save(&leadership2, 3, &topology(4)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("the watch saw the change after etcd's restart");
    assert_eq!(next.epoch, 4);

    wait_until(
        Duration::from_secs(5),
        "the recorder saw epoch 4",
        || async { seen.lock().unwrap().last() == Some(&4) },
    )
    .await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "the watch went back: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_one_leader_and_the_other_takes_over_on_resign() {
    let etcd = EtcdServer::start();
    let client = connect(&etcd, "/elect").await;
    let session_a = Session::start(&client).await.unwrap();
    let session_b = Session::start(&client).await.unwrap();
    let a = Election::new(&client, &session_a, "a");
    let b = Election::new(&client, &session_b, "b");
    let mut campaign_a = tokio::spawn({
        let a = a.clone();
        async move { a.campaign().await }
    });
    let mut campaign_b = tokio::spawn({
        let b = b.clone();
        async move { b.campaign().await }
    });
    // Whichever won, the other is still campaigning while the winner's key is in etcd.
    let (winner, loser_task, loser_id) = tokio::select! {
        won = &mut campaign_a => (won.unwrap().unwrap(), campaign_b, "b"),
        won = &mut campaign_b => (won.unwrap().unwrap(), campaign_a, "a"),
    };
    let leader = a.leader().await.unwrap().expect("a leader");
    assert_ne!(leader.id, loser_id);
    assert_eq!(leader.token, winner.token());
    assert!(winner.is_leading());
    assert!(!loser_task.is_finished(), "two leaders at once");

    winner.resign().await.unwrap();
    assert_eq!(winner.state(), LeaderState::Resigned);
    let second = tokio::time::timeout(Duration::from_secs(5), loser_task)
        .await
        .expect("the other candidate leads once the first resigned")
        .unwrap()
        .unwrap();
    assert!(second.token() > winner.token(), "fencing tokens grow");
    assert_eq!(a.leader().await.unwrap().unwrap().id, loser_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_another_leads_within_the_ttl_and_the_old_one_is_fenced() {
    let etcd = EtcdServer::start();
    let client = connect(&etcd, "/fence").await;
    let store = client.topology_store();
    store.seed(&topology(1)).await.unwrap();
    let (session_a, leader_a) = lead(&client, "a").await;
    let session_b = Session::start(&client).await.unwrap();
    let campaign_b = tokio::spawn({
        let election = Election::new(&client, &session_b, "b");
        async move { election.campaign().await }
    });

    // The leader's process dies: its renewals stop and nothing is revoked (its lease is
    // taken over by a client that never renews it, as if the process were gone).
    let died = Instant::now();
    let stale = leader_a.clone();
    drop(session_a);
    drop(leader_a);
    let leader_b = tokio::time::timeout(TTL + SLACK, campaign_b)
        .await
        .expect("b leads within the lease TTL")
        .unwrap()
        .unwrap();
    let took = died.elapsed();
    eprintln!("a new leader {took:?} after the old one died (lease TTL {TTL:?})");
    assert!(took <= TTL + Duration::from_secs(1), "took {took:?}");
    store.save(&leader_b, 1, &topology(2)).await.unwrap();

    // The old leader's leadership is over: its save is refused and writes nothing.
    match store.save(&stale, 2, &topology(3)).await {
        Err(ClusterError::NotLeader { token }) => assert_eq!(token, stale.token()),
        other => panic!("the old leader saved: {other:?}"),
    }
    assert_eq!(store.load().await.unwrap().unwrap().epoch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_revoked_loses_and_its_saves_are_refused_in_etcd() {
    let etcd = EtcdServer::start();
    let client = connect(&etcd, "/revoke").await;
    let store = client.topology_store();
    store.seed(&topology(1)).await.unwrap();
    let (session_a, leader_a) = lead(&client, "a").await;
    // Revoked behind its back (an operator, or etcd expiring it): the key goes at once.
    let mut raw = etcd_client::Client::connect([etcd.addr()], None)
        .await
        .unwrap();
    raw.lease_revoke(session_a.lease()).await.unwrap();
    // Whether or not the leader noticed yet, its save must not land: etcd compares the token.
    let saved = store.save(&leader_a, 1, &topology(2)).await;
    assert!(
        matches!(saved, Err(ClusterError::NotLeader { .. })),
        "{saved:?}"
    );
    assert_eq!(store.load().await.unwrap().unwrap().epoch, 1);
    let state = tokio::time::timeout(TTL + SLACK, leader_a.ended())
        .await
        .expect("the leadership ends");
    assert_eq!(state, LeaderState::Lost);
    let session_state = tokio::time::timeout(TTL + SLACK, session_a.ended())
        .await
        .expect("the session ends");
    assert_eq!(session_state, SessionState::Lost);

    let (_session_b, leader_b) = lead(&client, "b").await;
    assert!(leader_b.token() > leader_a.token());
    store.save(&leader_b, 1, &topology(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_barrier_waits_for_laggards_and_not_for_expired_members() {
    let etcd = EtcdServer::start();
    let client = connect(&etcd, "/barrier").await;
    let session_a = Session::start(&client).await.unwrap();
    let session_b = Session::start(&client).await.unwrap();
    let a = Membership::register(&client, &session_a, "a", "127.0.0.1:7001", 1)
        .await
        .unwrap();
    let b = Membership::register(&client, &session_b, "b", "127.0.0.1:7002", 1)
        .await
        .unwrap();
    let mut members = client.members().await.unwrap();
    members.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(members.len(), 2);
    assert_eq!(
        (members[0].id.as_str(), members[0].addr.as_str()),
        ("a", "127.0.0.1:7001")
    );
    assert_eq!(members[1].epoch, 1);

    // Waits for both: a acknowledges, the barrier still waits for b.
    let barrier = tokio::spawn({
        let client = client.clone();
        async move { client.wait_acked(2, Duration::from_secs(20)).await }
    });
    a.ack_epoch(2).await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "a's acknowledgement in etcd",
        || async {
            client
                .members()
                .await
                .unwrap()
                .iter()
                .any(|m| m.id == "a" && m.epoch == 2)
        },
    )
    .await;
    assert!(!barrier.is_finished(), "the barrier passed without b");
    b.ack_epoch(2).await.unwrap();
    let passed = tokio::time::timeout(Duration::from_secs(5), barrier)
        .await
        .expect("the barrier passes once b acknowledged")
        .unwrap()
        .unwrap();
    assert!(passed.iter().all(|m| m.epoch >= 2));
    // An older acknowledgement never lowers the recorded epoch.
    b.ack_epoch(1).await.unwrap();

    // A timeout names the laggards.
    a.ack_epoch(3).await.unwrap();
    match client.wait_acked(3, Duration::from_millis(300)).await {
        Err(ClusterError::BarrierTimeout {
            epoch: 3, laggards, ..
        }) => {
            assert_eq!(laggards.len(), 1);
            assert_eq!((laggards[0].id.as_str(), laggards[0].epoch), ("b", 2));
        }
        other => panic!("expected a barrier timeout naming b, got {other:?}"),
    }

    // b's process dies: once its lease expires it no longer holds the barrier up.
    let barrier = tokio::spawn({
        let client = client.clone();
        async move { client.wait_acked(3, TTL * 5).await }
    });
    drop(b);
    drop(session_b);
    let passed = tokio::time::timeout(TTL + SLACK, barrier)
        .await
        .expect("the barrier passes once b's lease expired")
        .unwrap()
        .unwrap();
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0].id, "a");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_are_read_by_everyone_and_leave_with_their_proxy() {
    let etcd = EtcdServer::start();
    let client = connect(&etcd, "/health").await;
    let reports = HealthReports::new(&client);
    let session_a = Session::start(&client).await.unwrap();
    let session_b = Session::start(&client).await.unwrap();
    let node = NodeAddr::parse("127.0.0.1:6381").unwrap();
    reports
        .publish(&session_a, "a", &[(node.clone(), NodeHealth::Down)])
        .await
        .unwrap();
    reports
        .publish(&session_b, "b", &[(node.clone(), NodeHealth::Up)])
        .await
        .unwrap();
    let mut views = reports.views().await.unwrap();
    views.sort_by(|x, y| x.proxy.cmp(&y.proxy));
    assert_eq!(views.len(), 2);
    assert_eq!(views[0].of(&node), Some(NodeHealth::Down));
    assert_eq!(views[1].of(&node), Some(NodeHealth::Up));

    session_a.close().await.unwrap();
    assert_eq!(session_a.state(), SessionState::Closed);
    let views = reports.views().await.unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].proxy, "b");
    assert!(matches!(
        reports.publish(&session_a, "a", &[]).await,
        Err(ClusterError::SessionLost { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_the_session_is_lost_within_its_ttl_and_a_new_one_works_after() {
    let mut etcd = EtcdServer::start();
    let client = connect(&etcd, "/down").await;
    let session = Session::start(&client).await.unwrap();
    let membership = Membership::register(&client, &session, "a", "127.0.0.1:7001", 1)
        .await
        .unwrap();
    assert!(session.is_alive());

    let stopped = Instant::now();
    etcd.stop();
    let state = tokio::time::timeout(TTL + SLACK, session.ended())
        .await
        .expect("the session is lost while etcd is down");
    assert_eq!(state, SessionState::Lost);
    let took = stopped.elapsed();
    eprintln!("session lost {took:?} after etcd stopped (lease TTL {TTL:?})");
    // Lost no later than the TTL after the last renewal, which preceded the stop.
    assert!(took <= TTL + Duration::from_secs(1), "lost after {took:?}");
    assert!(matches!(
        membership.ack_epoch(2).await,
        Err(ClusterError::SessionLost { .. })
    ));

    etcd.restart();
    // The same client reconnects; a new session registers again.
    let session = until_ok("a new session after etcd came back", || {
        Session::start(&client)
    })
    .await;
    assert!(session.is_alive());
    let again = Membership::register(&client, &session, "a", "127.0.0.1:7001", 2)
        .await
        .unwrap();
    assert_eq!(again.id(), "a");
    let members = client.members().await.unwrap();
    assert!(
        members.iter().any(|m| m.id == "a" && m.epoch == 2),
        "{members:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_the_configured_user_signs_in() {
    let etcd = EtcdServer::start();
    let mut raw = etcd_client::Client::connect([etcd.addr()], None)
        .await
        .unwrap();
    raw.user_add("root", "rootpw", None).await.unwrap();
    raw.user_grant_role("root", "root").await.unwrap();
    raw.auth_enable().await.unwrap();

    let mut config = etcd.cluster_config("/auth", TTL);
    config.auth = Some(redshard_config::EtcdAuth {
        user: "root".to_owned(),
        password: "wrong".to_owned(),
    });
    let refused = Etcd::connect(&config).await;
    assert!(refused.is_err(), "a wrong password was accepted");
    if let Some(auth) = config.auth.as_mut() {
        auth.password = "rootpw".to_owned();
    }
    let client = Etcd::connect(&config).await.expect("signed in");
    let store = client.topology_store();
    assert_eq!(store.seed(&topology(1)).await.unwrap().epoch, 1);
    let (_session, leadership) = lead(&client, "a").await;
    store.save(&leadership, 1, &topology(2)).await.unwrap();
    // Without credentials etcd refuses to read.
    let anonymous = connect(&etcd, "/auth").await;
    assert!(anonymous.topology_store().load().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::tls::Ca::new();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let server = ca.issue(dir.path(), "etcd");
    let client_pair = ca.issue(dir.path(), "proxy");
    let etcd = EtcdServer::start_tls(redshard_tests::EtcdTls {
        ca_file: ca_file.clone(),
        cert_file: server.cert,
        key_file: server.key,
    });
    let mut config = etcd.cluster_config("/tls", TTL);
    config.tls = Some(redshard_config::EtcdTlsConfig {
        ca_file,
        client_cert: Some(redshard_config::CertFiles {
            cert_file: client_pair.cert,
            key_file: client_pair.key,
        }),
    });
    let client = Etcd::connect(&config).await.expect("client");
    let store = client.topology_store();
    assert_eq!(store.seed(&topology(1)).await.unwrap().epoch, 1);
    let session = Session::start(&client).await.unwrap();
    assert!(session.is_alive());

    // Without a client certificate etcd refuses the handshake.
    if let Some(tls) = config.tls.as_mut() {
        tls.client_cert = None;
    }
    let anonymous = Etcd::connect(&config).await.expect("client");
    assert!(anonymous.topology_store().load().await.is_err());
    // A missing file is named.
    if let Some(tls) = config.tls.as_mut() {
        tls.ca_file = dir.path().join("missing.crt");
    }
    let error = Etcd::connect(&config).await.unwrap_err().to_string();
    assert!(error.contains("missing.crt"), "{error}");
}
