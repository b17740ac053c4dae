//! SELECT: each client's requests run in the database it selected, on every shard, as on one
//! server; the key mover moves every database's keys; replicas follow in every database.

use std::sync::Arc;
use std::time::Duration;

use redshard_config::{Config, SlotRange};
use redshard_control::migrate::MigrationState;
use redshard_tests::cluster::{config_text, key_on, start_proxy, with_test_mode};
use redshard_tests::replication::wait_until;
use redshard_tests::{Client, RedisServer, Reply, TestCluster};

fn err(text: &str) -> Reply {
    Reply::Error(text.into())
}

/// The value of `key` in database `db` of the node `node`, asked directly.
async fn on_node(node: &mut Client, db: u16, key: &str) -> Reply {
    assert!(node.cmd(&["SELECT", &db.to_string()]).await.is_ok());
    node.cmd(&["GET", key]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_database_is_apart_on_every_shard() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    // One key per shard, so every master's lanes switch databases.
    let keys: Vec<String> = (0..3).map(|s| key_on(3, s, "k")).collect();
    for key in &keys {
        assert!(c.cmd(&["SET", key, "zero"]).await.is_ok());
    }
    assert_eq!(c.cmd(&["SELECT", "7"]).await, Reply::Status("OK".into()));
    for key in &keys {
        assert_eq!(
            c.cmd(&["GET", key]).await,
            Reply::Bulk(None),
            "{key} in db 7"
        );
        assert!(c.cmd(&["SET", key, "seven"]).await.is_ok());
    }
    // One more key than database 0 holds, so counts tell the databases apart.
    assert!(c.cmd(&["SET", "only-in-7", "x"]).await.is_ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, Reply::Int(4));
    let Reply::Array(listed) = c.cmd(&["KEYS", "*"]).await else {
        panic!("KEYS")
    };
    assert_eq!(listed.len(), 4);
    // SCAN walks the selected database of every master.
    let (mut cursor, mut scanned) = ("0".to_owned(), 0);
    loop {
        let Reply::Array(parts) = c.cmd(&["SCAN", &cursor, "COUNT", "1"]).await else {
            panic!("SCAN")
        };
        let (Reply::Bulk(Some(next)), Reply::Array(found)) = (&parts[0], &parts[1]) else {
            panic!("SCAN reply {parts:?}")
        };
        scanned += found.len();
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(scanned, 4);
    // A second client in database 0 at the same time, on the same lanes.
    let mut other = cluster.client().await;
    for key in &keys {
        assert_eq!(other.cmd(&["GET", key]).await, Reply::bulk("zero"));
        assert_eq!(c.cmd(&["GET", key]).await, Reply::bulk("seven"));
    }
    // The nodes hold each value in its database.
    for (shard, key) in keys.iter().enumerate() {
        let mut node = cluster.master(shard).await;
        assert_eq!(on_node(&mut node, 7, key).await, Reply::bulk("seven"));
        assert_eq!(on_node(&mut node, 0, key).await, Reply::bulk("zero"));
    }
    // MONITOR shows each command's database, as Redis 7 (after it ran: SELECT's is the new).
    let mut monitor = cluster.client().await;
    assert_eq!(monitor.cmd(&["MONITOR"]).await, Reply::Status("OK".into()));
    assert!(c.cmd(&["SELECT", "9"]).await.is_ok());
    assert!(c.cmd(&["SELECT", "7"]).await.is_ok());
    assert_eq!(c.cmd(&["GET", &keys[0]]).await, Reply::bulk("seven"));
    for want in ["[9 ", "[7 ", "[7 "] {
        let Reply::Status(line) = monitor.read().await else {
            panic!("a MONITOR line")
        };
        assert!(line.contains(want), "{line} has {want}");
    }
    // CLIENT LIST shows the database; FLUSHDB empties only the selected one.
    let Reply::Bulk(Some(info)) = c.cmd(&["CLIENT", "INFO"]).await else {
        panic!("CLIENT INFO")
    };
    assert!(
        String::from_utf8_lossy(&info).contains(" db=7 "),
        "{info:?}"
    );
    // (FLUSHDB is refused without `allow_flush`: the database is emptied key by key.)
    for key in keys.iter().map(String::as_str).chain(["only-in-7"]) {
        assert_eq!(c.cmd(&["DEL", key]).await, Reply::Int(1));
    }
    assert_eq!(c.cmd(&["DBSIZE"]).await, Reply::Int(0));
    assert_eq!(other.cmd(&["DBSIZE"]).await, Reply::Int(3));
    // RESET goes back to database 0.
    assert!(c.cmd(&["SELECT", "3"]).await.is_ok());
    assert_eq!(c.cmd(&["RESET"]).await, Reply::Status("RESET".into()));
    assert_eq!(c.cmd(&["GET", &keys[0]]).await, Reply::bulk("zero"));
    // Redis's refusals, and nothing changed by them.
    assert_eq!(
        c.cmd(&["SELECT", "16"]).await,
        err("ERR DB index is out of range")
    );
    assert_eq!(
        c.cmd(&["SELECT", "-1"]).await,
        err("ERR DB index is out of range")
    );
    assert_eq!(
        c.cmd(&["SELECT", "x"]).await,
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(c.cmd(&["GET", &keys[0]]).await, Reply::bulk("zero"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_selects_keep_every_request_in_its_database() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let key = key_on(2, 1, "p");
    let mut commands: Vec<Vec<String>> = Vec::new();
    for db in 0..16 {
        commands.push(vec!["SELECT".into(), db.to_string()]);
        commands.push(vec!["SET".into(), key.clone(), format!("v{db}")]);
    }
    for db in (0..16).rev() {
        commands.push(vec!["SELECT".into(), db.to_string()]);
        commands.push(vec!["GET".into(), key.clone()]);
    }
    let replies = c.pipeline(&commands).await;
    let reads: Vec<Reply> = replies[32..].iter().skip(1).step_by(2).cloned().collect();
    let wanted: Vec<Reply> = (0..16)
        .rev()
        .map(|db| Reply::bulk(&format!("v{db}")))
        .collect();
    assert_eq!(reads, wanted);
    // MOVE and COPY ... DB work within the key's master.
    assert!(c.cmd(&["SELECT", "2"]).await.is_ok());
    assert_eq!(c.cmd(&["DEL", &key]).await, Reply::Int(1));
    assert!(c.cmd(&["SELECT", "0"]).await.is_ok());
    assert_eq!(c.cmd(&["MOVE", &key, "2"]).await, Reply::Int(1));
    assert_eq!(c.cmd(&["GET", &key]).await, Reply::Bulk(None));
    assert!(c.cmd(&["SELECT", "2"]).await.is_ok());
    assert_eq!(c.cmd(&["GET", &key]).await, Reply::bulk("v0"));
    let tagged = format!("{{{key}}}:copy");
    assert_eq!(
        c.cmd(&["COPY", &key, &tagged, "DB", "9"]).await,
        Reply::Int(1)
    );
    assert!(c.cmd(&["SELECT", "9"]).await.is_ok());
    assert_eq!(c.cmd(&["GET", &tagged]).await, Reply::bulk("v0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_blocking_commands_run_in_the_selected_database() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SELECT", "4"]).await.is_ok());
    let key = key_on(2, 0, "t");
    // WATCH + MULTI/EXEC on the private connection, in database 4.
    assert!(c.cmd(&["WATCH", &key]).await.is_ok());
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["SET", &key, "tx"]).await,
        Reply::Status("QUEUED".into())
    );
    assert!(matches!(c.cmd(&["EXEC"]).await, Reply::Array(a) if a.len() == 1));
    let mut node = cluster.master(0).await;
    assert_eq!(on_node(&mut node, 4, &key).await, Reply::bulk("tx"));
    assert_eq!(on_node(&mut node, 0, &key).await, Reply::Bulk(None));
    // SELECT inside MULTI stays refused (the proxy keeps the database, not the node).
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert!(matches!(c.cmd(&["SELECT", "1"]).await, Reply::Error(_)));
    assert!(c.cmd(&["DISCARD"]).await.is_ok());
    // A blocked pop in database 5 is woken by a push in database 5 only.
    let list = key_on(2, 1, "q");
    let mut popper = cluster.client().await;
    assert!(popper.cmd(&["SELECT", "5"]).await.is_ok());
    let waiting = tokio::spawn(async move {
        let reply = popper.cmd(&["BLPOP", &list, "10"]).await;
        (popper, reply)
    });
    let list = key_on(2, 1, "q");
    let mut pusher = cluster.client().await;
    wait_until(Duration::from_secs(5), "the pop to block", || async {
        let mut node = cluster.master(1).await;
        let Reply::Bulk(Some(list)) = node.cmd(&["CLIENT", "LIST"]).await else {
            return false;
        };
        String::from_utf8_lossy(&list).contains("cmd=blpop")
    })
    .await;
    assert_eq!(pusher.cmd(&["RPUSH", &list, "db0"]).await, Reply::Int(1));
    assert!(pusher.cmd(&["SELECT", "5"]).await.is_ok());
    assert_eq!(pusher.cmd(&["RPUSH", &list, "db5"]).await, Reply::Int(1));
    let (_, reply) = waiting.await.expect("popper");
    assert_eq!(
        reply,
        Reply::Array(vec![Reply::bulk(&list), Reply::bulk("db5")])
    );
    assert!(pusher.cmd(&["SELECT", "0"]).await.is_ok());
    assert_eq!(pusher.cmd(&["LLEN", &list]).await, Reply::Int(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_moves_the_keys_of_every_database() {
    let cluster = TestCluster::start_with(2, false, "", &[]).await;
    let controller = Arc::clone(cluster.proxy.as_ref().expect("proxy").controller());
    let mut c = cluster.client().await;
    const KEYS: usize = 2_000;
    for db in [0u16, 3, 15] {
        assert!(c.cmd(&["SELECT", &db.to_string()]).await.is_ok());
        let commands: Vec<Vec<String>> = (0..KEYS)
            .map(|i| vec!["SET".into(), format!("key:{i}"), format!("db{db}-{i}")])
            .collect();
        for reply in c.pipeline(&commands).await {
            assert!(reply.is_ok(), "{reply:?}");
        }
    }
    // Every slot of s1 goes to s2, while a client keeps writing in database 3.
    let writer = {
        let mut w = cluster.client().await;
        tokio::spawn(async move {
            assert!(w.cmd(&["SELECT", "3"]).await.is_ok());
            for i in 0..500 {
                let reply = w.cmd(&["SET", &format!("late:{i}"), "x"]).await;
                assert!(reply.is_ok(), "{reply:?}");
            }
        })
    };
    controller
        .migrate("s1", "s2", vec![SlotRange::new(0, 8191).expect("range")])
        .await
        .expect("queue");
    wait_until(
        Duration::from_secs(60),
        "the migration to finish",
        || async {
            let all = controller.migrations();
            if let Some(failed) = all
                .iter()
                .find(|m| matches!(m.state, MigrationState::Failed(_)))
            {
                panic!("migration failed: {failed:?}");
            }
            all.iter().all(|m| m.state == MigrationState::Done)
        },
    )
    .await;
    writer.await.expect("writer");
    for db in [0u16, 3, 15] {
        assert!(c.cmd(&["SELECT", &db.to_string()]).await.is_ok());
        let commands: Vec<Vec<String>> = (0..KEYS)
            .map(|i| vec!["GET".into(), format!("key:{i}")])
            .collect();
        let replies = c.pipeline(&commands).await;
        for (i, reply) in replies.into_iter().enumerate() {
            assert_eq!(
                reply,
                Reply::bulk(&format!("db{db}-{i}")),
                "db {db} key:{i}"
            );
        }
    }
    assert!(c.cmd(&["SELECT", "3"]).await.is_ok());
    for i in 0..500 {
        assert_eq!(
            c.cmd(&["GET", &format!("late:{i}")]).await,
            Reply::bulk("x")
        );
    }
    // The source master holds nothing any more, in any database.
    let mut source = cluster.master(0).await;
    let Reply::Bulk(Some(info)) = source.cmd(&["INFO", "keyspace"]).await else {
        panic!("INFO")
    };
    let info = String::from_utf8_lossy(&info);
    assert!(
        !info.contains("keys="),
        "the source still holds keys: {info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_every_database_in_both_replication_modes() {
    for mode in ["redis", "proxy"] {
        let masters: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
        let replicas: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
        let text = config_text(
            &masters.iter().map(RedisServer::addr).collect::<Vec<_>>(),
            &replicas.iter().map(RedisServer::addr).collect::<Vec<_>>(),
            &with_test_mode(&format!("[replication]\nmode = \"{mode}\"\n")),
        );
        let config = Config::from_toml_str(&text, "test.toml").expect("config");
        let proxy = start_proxy(config).await;
        wait_until(
            Duration::from_secs(10),
            "the replicas to be in sync",
            || async { redshard_tests::cluster::replication_settled(&proxy) },
        )
        .await;
        let mut c = Client::connect_addr(proxy.local_addr()).await;
        assert!(c.cmd(&["SELECT", "6"]).await.is_ok());
        for shard in 0..2 {
            let key = key_on(2, shard, "r");
            assert!(c.cmd(&["SET", &key, mode]).await.is_ok());
            assert_eq!(
                c.cmd(&["SADD", &format!("{{{key}}}:s"), "a", "b"]).await,
                Reply::Int(2)
            );
            assert!(matches!(
                c.cmd(&["SPOP", &format!("{{{key}}}:s")]).await,
                Reply::Bulk(Some(_))
            ));
        }
        for (shard, replica) in replicas.iter().enumerate() {
            let key = key_on(2, shard, "r");
            let mut node = Client::connect(replica.addr()).await;
            wait_until(
                Duration::from_secs(5),
                "the replica to have the write",
                || async {
                    let mut node = Client::connect(replica.addr()).await;
                    on_node(&mut node, 6, &key).await == Reply::bulk(mode)
                },
            )
            .await;
            assert!(node.cmd(&["SELECT", "6"]).await.is_ok());
            let set = format!("{{{key}}}:s");
            let mut master = Client::connect(masters[shard].addr()).await;
            assert!(master.cmd(&["SELECT", "6"]).await.is_ok());
            assert_eq!(
                node.cmd(&["SMEMBERS", &set]).await,
                master.cmd(&["SMEMBERS", &set]).await,
                "{mode}: the replica popped what the master popped"
            );
            assert_eq!(on_node(&mut node, 0, &key).await, Reply::Bulk(None));
        }
        proxy.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_fewer_databases_are_refused_with_the_reason() {
    let node = RedisServer::start_with(&["--databases", "4"]);
    let text = config_text(&[node.addr()], &[], "");
    let config = Config::from_toml_str(&text, "test.toml").expect("config");
    let proxy = start_proxy(config).await;
    let mut c = Client::connect_addr(proxy.local_addr()).await;
    let reply = c.cmd(&["SET", "k", "v"]).await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.contains("[backend] databases = 16")),
        "{reply:?}"
    );
    proxy.shutdown(Duration::from_secs(5)).await;
    // Told how many the nodes have, it serves them, and no more.
    let text = config_text(&[node.addr()], &[], "[backend]\ndatabases = 4\n");
    let config = Config::from_toml_str(&text, "test.toml").expect("config");
    let proxy = start_proxy(config).await;
    let mut c = Client::connect_addr(proxy.local_addr()).await;
    assert!(c.cmd(&["SELECT", "3"]).await.is_ok());
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    assert_eq!(
        c.cmd(&["SELECT", "4"]).await,
        err("ERR DB index is out of range")
    );
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "databases"]).await,
        Reply::Array(vec![Reply::bulk("databases"), Reply::bulk("4")])
    );
    proxy.shutdown(Duration::from_secs(5)).await;
}
