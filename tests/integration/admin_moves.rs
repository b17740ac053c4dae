//! Slot moves through the admin port: MIGRATE (a count or listed slots), MIGRATIONS with
//! progress, MIGRATION CANCEL, REBALANCE queued, and their refusals.

use std::net::SocketAddr;
use std::time::Duration;

use redshard_tests::{Client, RedisServer, Reply, TestCluster};

use crate::admin::{error_text, shard, topology};

/// Polls MIGRATIONS until nothing is queued or running; panics on a failed migration.
async fn wait_migrations_finished(admin: SocketAddr) -> Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let all = Client::connect_addr(admin).await.cmd(&["MIGRATIONS"]).await;
        let states: Vec<String> = all
            .items()
            .iter()
            .map(|m| m.field("state").text())
            .collect();
        assert!(!states.iter().any(|s| s == "failed"), "{all:?}");
        if states.iter().all(|s| s == "done" || s == "cancelled") {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "migrations still running: {all:?}"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_move_with_migrate_and_rebalance_and_progress_is_shown() {
    let mut cluster = TestCluster::start_with(2, false, "", &[]).await;
    let admin = cluster.start_admin().await;
    let mut a = Client::connect_addr(admin).await;
    let mut c = cluster.client().await;
    let sets: Vec<Vec<String>> = (0..3000)
        .map(|i| vec!["SET".into(), format!("k{i}"), format!("v{i}")])
        .collect();
    for reply in c.pipeline(&sets).await {
        assert!(reply.is_ok(), "{reply:?}");
    }

    // Refusals name what to do.
    let e = a.cmd(&["MIGRATE", "s1", "s1", "5"]).await;
    assert!(
        error_text(&e).contains("same shard; name two different shards"),
        "{e:?}"
    );
    let e = a.cmd(&["MIGRATE", "s1", "s2", "SLOTS", "9000"]).await;
    assert!(error_text(&e).contains("not owned by the source"), "{e:?}");
    assert!(
        error_text(&e).contains("TOPOLOGY shows which shard owns which slots"),
        "{e:?}"
    );
    let e = a.cmd(&["MIGRATE", "s1", "s9", "5"]).await;
    assert!(
        error_text(&e).contains("no shard s9: name a shard"),
        "{e:?}"
    );
    let e = a.cmd(&["MIGRATION", "CANCEL"]).await;
    assert!(
        error_text(&e).contains("no migration is running; MIGRATIONS lists them"),
        "{e:?}"
    );

    // N slots: the source's highest-numbered ones.
    let queued = a.cmd(&["MIGRATE", "s1", "s2", "500"]).await;
    assert_eq!(*queued.field("slots"), Reply::bulk("7692-8191"));
    assert_eq!(queued.field("slot-count").int(), 500);
    assert_eq!(*queued.field("state"), Reply::bulk("queued"));
    let all = wait_migrations_finished(admin).await;
    let done = &all.items()[0];
    assert_eq!(*done.field("from"), Reply::bulk("s1"));
    assert_eq!(*done.field("to"), Reply::bulk("s2"));
    assert_eq!(*done.field("slots"), Reply::bulk("7692-8191"));
    assert_eq!(*done.field("state"), Reply::bulk("done"));
    assert_eq!(*done.field("error"), Reply::Bulk(None));
    let moved = done.field("keys-moved").int();
    assert!(moved > 0, "{done:?}");
    assert!(done.field("bytes-moved").int() > 0, "{done:?}");
    assert!(done.field("elapsed-secs").text().parse::<f64>().unwrap() >= 0.0);
    let t = topology(admin).await;
    assert_eq!(
        shard(&t, "s1").unwrap().field("slot-count").int(),
        8192 - 500
    );
    assert_eq!(
        *shard(&t, "s2").unwrap().field("slots"),
        Reply::bulk("7692-16383")
    );

    // Listed slots, back again.
    let queued = a
        .cmd(&["MIGRATE", "s2", "s1", "SLOTS", "7692-7999", "8000-8191"])
        .await;
    assert_eq!(queued.field("slot-count").int(), 500);
    wait_migrations_finished(admin).await;
    assert_eq!(
        *shard(&topology(admin).await, "s1").unwrap().field("slots"),
        Reply::bulk("0-8191")
    );

    // A rebalance onto a new, empty shard, queued through the port.
    let third = RedisServer::start();
    let added = a.cmd(&["ADDSHARD", "s3", &third.addr()]).await;
    assert_eq!(*added.field("shard"), Reply::bulk("s3"));
    let plan = a.cmd(&["REBALANCE", "USE-EMPTY-MASTERS"]).await;
    assert_eq!(*plan.field("status"), Reply::bulk("queued"));
    assert_eq!(plan.field("moves").items().len(), 2);
    wait_migrations_finished(admin).await;
    let t = topology(admin).await;
    let counts: Vec<i64> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| shard(&t, n).unwrap().field("slot-count").int())
        .collect();
    assert_eq!(
        counts,
        vec![5462, 5461, 5461],
        "the leftover slot stays with s1 (tie: lowest id)"
    );
    assert_eq!(t.field("slots-served").int(), 16384);
    let plan = a.cmd(&["REBALANCE", "USE-EMPTY-MASTERS", "DRY-RUN"]).await;
    assert_eq!(*plan.field("status"), Reply::bulk("balanced"));

    // A cancelled migration leaves every slot with an owner and every key readable.
    let queued = a.cmd(&["MIGRATE", "s3", "s1", "3000"]).await;
    assert_eq!(*queued.field("state"), Reply::bulk("queued"));
    let cancelled = a.cmd(&["MIGRATION", "CANCEL"]).await;
    assert!(
        cancelled.is_ok() || error_text(&cancelled).contains("no migration is running"),
        "{cancelled:?}"
    );
    wait_migrations_finished(admin).await;
    let t = topology(admin).await;
    for s in t.field("shards").items() {
        assert!(s.field("migrating").items().is_empty(), "{s:?}");
    }
    assert_eq!(t.field("slots-served").int(), 16384);
    for i in 0..3000 {
        assert_eq!(
            c.cmd(&["GET", &format!("k{i}")]).await,
            Reply::bulk(&format!("v{i}"))
        );
    }
}
