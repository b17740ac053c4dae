//! Behaving like one Redis server where clients' own test suites look: CONFIG GET from the
//! nodes, INFO and CONFIG GET inside MULTI, SCAN of a small keyspace in one call, CLIENT
//! LIST's fields (`cmd`, `idle`, `fd`, MULTI and tracking flags) compared with a
//! redis-server's; the operators' commands: CONFIG SET / RESETSTAT / REWRITE and LATENCY
//! RESET on every node, MONITOR, CLIENT REPLY, the ACL read commands.

use std::collections::{BTreeMap, BTreeSet};

use redshard_tests::cluster::key_on;
use redshard_tests::{Reply, TestCluster};

/// A CONFIG GET reply (RESP2: a flat array) as a map; fails on a repeated name.
fn config_map(reply: &Reply) -> BTreeMap<String, String> {
    let items = reply.items();
    assert_eq!(items.len() % 2, 0, "{reply:?}");
    let mut map = BTreeMap::new();
    for pair in items.chunks(2) {
        let name = pair[0].text();
        assert!(
            map.insert(name.clone(), pair[1].text()).is_none(),
            "{name} twice"
        );
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_get_answers_the_nodes_parameters_with_the_proxy_s_own() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let all = config_map(&c.cmd(&["CONFIG", "GET", "*"]).await);
    assert!(all.len() > 100, "{}", all.len());
    // The nodes' own parameters.
    assert!(all.contains_key("maxmemory"));
    assert!(all.contains_key("hash-max-listpack-entries"));
    assert!(all.contains_key("slowlog-log-slower-than"));
    // The proxy's.
    assert_eq!(all["databases"], "1");
    assert_eq!(all["port"], cluster.addr.port().to_string());
    assert_eq!(all["cluster-enabled"], "no");
    assert_eq!(all["save"], "");
    assert_eq!(all["appendonly"], "no");

    let some = config_map(
        &c.cmd(&["CONFIG", "GET", "maxmemory", "databases", "data*", "nope"])
            .await,
    );
    assert_eq!(
        some.keys().map(String::as_str).collect::<Vec<_>>(),
        ["databases", "maxmemory"]
    );
    assert_eq!(some["databases"], "1");
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "nope"]).await,
        Reply::Array(vec![])
    );

    // RESP3: a map, with the proxy's value.
    assert!(c.cmd_resp3(&["HELLO", "3"]).await.starts_with(b"%7"));
    let map = c
        .cmd_resp3(&["CONFIG", "GET", "databases", "maxmemory"])
        .await;
    let text = String::from_utf8_lossy(&map);
    assert!(text.starts_with("%2\r\n"), "{text}");
    assert!(text.contains("$9\r\ndatabases\r\n$1\r\n1\r\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_config_get_run_inside_multi() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    for i in 0..30 {
        assert!(c.cmd(&["SET", &format!("k{i}"), "v"]).await.is_ok());
    }
    let key = key_on(3, 1, "tx");
    assert!(c.cmd(&["SET", &key, "0"]).await.is_ok());
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    for args in [
        &["INFO"][..],
        &["SET", &key, "1"],
        &["CONFIG", "GET", "databases", "maxmemory"],
        &["INFO", "server"],
        &["INCR", &key],
        &["CONFIG", "GET", "nope"],
    ] {
        assert_eq!(
            c.cmd(args).await,
            Reply::Status("QUEUED".into()),
            "{args:?}"
        );
    }
    let reply = c.cmd(&["EXEC"]).await;
    let items = reply.items();
    assert_eq!(items.len(), 6, "{reply:?}");
    let info = items[0].text();
    assert!(info.contains("redis_mode:standalone"), "{info}");
    assert!(info.contains("db0:keys=31,"), "every master's keys: {info}");
    assert!(items[1].is_ok());
    let config = config_map(&items[2]);
    assert_eq!(config["databases"], "1");
    assert!(config.contains_key("maxmemory"));
    let server = items[3].text();
    assert!(server.starts_with("# Server") && !server.contains("# Keyspace"));
    assert_eq!(items[4], Reply::Int(2));
    assert_eq!(items[5], Reply::Array(vec![]));

    // Only what the proxy answers, and an aborted transaction.
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["INFO", "clients"]).await,
        Reply::Status("QUEUED".into())
    );
    let reply = c.cmd(&["EXEC"]).await;
    assert!(
        reply.items()[0].text().starts_with("# Clients"),
        "{reply:?}"
    );
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(c.cmd(&["INFO"]).await, Reply::Status("QUEUED".into()));
    assert!(matches!(c.cmd(&["NOSUCH"]).await, Reply::Error(_)));
    assert!(matches!(c.cmd(&["EXEC"]).await, Reply::Error(e) if e.starts_with("EXECABORT")));

    // After a WATCH whose key changed: EXEC's null, as from Redis.
    let mut other = cluster.client().await;
    assert!(c.cmd(&["WATCH", &key]).await.is_ok());
    assert!(other.cmd(&["SET", &key, "9"]).await.is_ok());
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(c.cmd(&["INFO"]).await, Reply::Status("QUEUED".into()));
    assert_eq!(c.cmd(&["GET", &key]).await, Reply::Status("QUEUED".into()));
    assert_eq!(c.cmd(&["EXEC"]).await, Reply::Bulk(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_of_a_small_keyspace_returns_it_in_one_call() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let keys: BTreeSet<String> = (0..3).map(|shard| key_on(3, shard, "small")).collect();
    for key in &keys {
        assert!(c.cmd(&["SET", key, "1"]).await.is_ok());
    }
    let reply = c.cmd(&["SCAN", "0"]).await;
    let [next, found] = reply.items() else {
        panic!("{reply:?}")
    };
    assert_eq!(next, &Reply::bulk("0"));
    let found: BTreeSet<String> = found.items().iter().map(Reply::text).collect();
    assert_eq!(found, keys);

    // A COUNT used up ends the call at the end of a master; the iteration still returns
    // every key once the cursor is back at 0.
    let mut seen = BTreeSet::new();
    let mut cursor = "0".to_owned();
    let mut calls = 0;
    loop {
        let reply = c.cmd(&["SCAN", &cursor, "COUNT", "1"]).await;
        let [next, found] = reply.items() else {
            panic!("{reply:?}")
        };
        seen.extend(found.items().iter().map(Reply::text));
        cursor = next.text();
        calls += 1;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen, keys);
    assert!(
        calls >= 3,
        "one call per master when COUNT is reached: {calls}"
    );
    // The master's own errors.
    assert!(matches!(
        c.cmd(&["SCAN", "0", "COUNT", "0"]).await,
        Reply::Error(e) if e.starts_with("ERR syntax error")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_shows_each_client_s_last_command() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let mut other = cluster.client().await;
    assert!(other.cmd(&["CLIENT", "SETNAME", "other"]).await.is_ok());
    assert_eq!(other.cmd(&["GET", "x"]).await, Reply::Bulk(None));
    let line = |list: &str, name: &str| -> String {
        list.lines()
            .find(|l| l.contains(&format!(" name={name} ")))
            .unwrap_or_else(|| panic!("{list}"))
            .to_owned()
    };
    let list = c.cmd(&["CLIENT", "LIST"]).await.text();
    assert!(line(&list, "other").contains(" cmd=get "), "{list}");
    assert!(c.cmd(&["CLIENT", "SETNAME", "me"]).await.is_ok());
    let list = c.cmd(&["CLIENT", "LIST"]).await.text();
    assert!(line(&list, "me").contains(" cmd=client|list "), "{list}");
    let info = c.cmd(&["CLIENT", "INFO"]).await.text();
    assert!(info.contains(" cmd=client|info "), "{info}");
    assert!(other.cmd(&["SUBSCRIBE", "ch"]).await.items().len() == 3);
    let list = c.cmd(&["CLIENT", "LIST"]).await.text();
    assert!(line(&list, "other").contains(" cmd=subscribe "), "{list}");
}

/// The `field=` value of the CLIENT LIST line of the client named `name`.
async fn client_field(c: &mut redshard_tests::Client, name: &str, field: &str) -> Option<String> {
    let list = c.cmd(&["CLIENT", "LIST"]).await.text();
    let line = list
        .lines()
        .find(|l| l.contains(&format!(" name={name} ")))?
        .to_owned();
    line.split(' ')
        .find_map(|f| f.strip_prefix(&format!("{field}=")))
        .map(str::to_owned)
}

/// A new client named `name`, and its id.
async fn named(cluster: &TestCluster, name: &str) -> (redshard_tests::Client, String) {
    let mut c = cluster.client().await;
    assert!(c.cmd(&["CLIENT", "SETNAME", name]).await.is_ok());
    let id = c.cmd(&["CLIENT", "ID"]).await.int().to_string();
    (c, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_closes_the_proxy_s_clients_by_every_filter() {
    let extra = "[[user]]\nname = \"app\"\npassword = \"a-pw\"\naccess = \"no-dangerous\"\n";
    let cluster = TestCluster::start_with(2, false, extra, &[]).await;
    let mut admin = cluster.client().await;
    assert!(admin.cmd(&["CLIENT", "SETNAME", "admin"]).await.is_ok());

    // New form, by ID: the count; the client's connection closes.
    let (mut victim, id) = named(&cluster, "victim").await;
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &id]).await,
        Reply::Int(1)
    );
    assert_eq!(victim.try_read().await, None);
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &id]).await,
        Reply::Int(0)
    );

    // Old form, by address.
    let (mut victim, _) = named(&cluster, "old").await;
    let addr = client_field(&mut admin, "old", "addr").await.unwrap();
    assert!(admin.cmd(&["CLIENT", "KILL", &addr]).await.is_ok());
    assert_eq!(victim.try_read().await, None);
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", &addr]).await,
        Reply::Error("ERR No such client".into())
    );

    // ADDR, LADDR, TYPE and USER filters together; SKIPME spares the caller by default.
    let (mut subscriber, _) = named(&cluster, "sub").await;
    assert_eq!(subscriber.cmd(&["SUBSCRIBE", "ch"]).await.items().len(), 3);
    let (mut app, _) = named(&cluster, "app").await;
    assert!(app.cmd(&["AUTH", "app", "a-pw"]).await.is_ok());
    let laddr = client_field(&mut admin, "sub", "laddr").await.unwrap();
    assert_eq!(
        admin
            .cmd(&["CLIENT", "KILL", "TYPE", "pubsub", "LADDR", &laddr])
            .await,
        Reply::Int(1)
    );
    assert_eq!(subscriber.try_read().await, None);
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "TYPE", "master"]).await,
        Reply::Int(0)
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "MAXAGE", "100000"]).await,
        Reply::Int(0)
    );
    assert_eq!(
        app.cmd(&["CLIENT", "KILL", "USER", "app"]).await,
        Reply::Error("NOPERM User app has no permissions to run the 'client|kill' command".into())
    );
    assert_eq!(
        client_field(&mut admin, "app", "user").await.as_deref(),
        Some("app")
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "USER", "app"]).await,
        Reply::Int(1)
    );
    assert_eq!(app.try_read().await, None);

    // Redis's errors.
    for (args, error) in [
        (
            &["CLIENT", "KILL", "ID", "0"][..],
            "ERR client-id should be greater than 0",
        ),
        (
            &["CLIENT", "KILL", "TYPE", "nope"],
            "ERR Unknown client type 'nope'",
        ),
        (
            &["CLIENT", "KILL", "USER", "nobody"],
            "ERR No such user 'nobody'",
        ),
        (&["CLIENT", "KILL", "SKIPME", "maybe"], "ERR syntax error"),
        (&["CLIENT", "KILL", "ID", "1", "TYPE"], "ERR syntax error"),
        (&["CLIENT", "KILL", "NOPE", "x"], "ERR syntax error"),
    ] {
        assert_eq!(
            admin.cmd(args).await,
            Reply::Error(error.into()),
            "{args:?}"
        );
    }

    // SKIPME no: the caller too, after its reply.
    let own = admin.cmd(&["CLIENT", "ID"]).await.int().to_string();
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &own]).await,
        Reply::Int(0)
    );
    assert_eq!(
        admin
            .cmd(&["CLIENT", "KILL", "ID", &own, "SKIPME", "no"])
            .await,
        Reply::Int(1)
    );
    assert_eq!(admin.try_read().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_holds_writes_or_everything_until_unpause_or_its_end() {
    let cluster = TestCluster::start(2).await;
    let mut admin = cluster.client().await;
    let (mut writer, _) = named(&cluster, "writer").await;
    let mut reader = cluster.client().await;
    let key = key_on(2, 0, "paused");

    assert!(admin
        .cmd(&["CLIENT", "PAUSE", "100000", "WRITE"])
        .await
        .is_ok());
    writer
        .send_raw(&redshard_tests::client::encode_command(&["SET", &key, "1"]))
        .await;
    // The proxy read it (its last command) and holds it: the master has no such key.
    redshard_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the proxy read the paused SET",
        || async {
            let mut c = cluster.client().await;
            client_field(&mut c, "writer", "cmd").await.as_deref() == Some("set")
        },
    )
    .await;
    assert_eq!(reader.cmd(&["GET", &key]).await, Reply::Bulk(None));
    assert_eq!(
        cluster.master(0).await.cmd(&["EXISTS", &key]).await,
        Reply::Int(0)
    );
    assert!(admin.cmd(&["CLIENT", "UNPAUSE"]).await.is_ok());
    assert!(writer.read().await.is_ok());
    assert_eq!(reader.cmd(&["GET", &key]).await, Reply::bulk("1"));

    // ALL holds reads too, until the pause ends by itself.
    let start = std::time::Instant::now();
    assert!(admin.cmd(&["CLIENT", "PAUSE", "300", "ALL"]).await.is_ok());
    assert_eq!(reader.cmd(&["GET", &key]).await, Reply::bulk("1"));
    assert!(start.elapsed() >= std::time::Duration::from_millis(250));

    for (args, error) in [
        (
            &["CLIENT", "PAUSE", "x"][..],
            "ERR timeout is not an integer or out of range",
        ),
        (&["CLIENT", "PAUSE", "-1"], "ERR timeout is negative"),
        (&["CLIENT", "PAUSE", "10", "NOPE"], "ERR syntax error"),
    ] {
        assert_eq!(
            admin.cmd(args).await,
            Reply::Error(error.into()),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_unblock_ends_a_blocking_command_with_nil_or_an_error() {
    let cluster = TestCluster::start(2).await;
    let mut admin = cluster.client().await;
    let (mut blocked, id) = named(&cluster, "blocked").await;
    let key = key_on(2, 1, "unblock");
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id]).await, Reply::Int(0));

    for (reason, expected) in [
        ("TIMEOUT", Reply::Bulk(None)),
        (
            "ERROR",
            Reply::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into()),
        ),
    ] {
        blocked
            .send_raw(&redshard_tests::client::encode_command(&[
                "BLPOP", &key, "0",
            ]))
            .await;
        redshard_tests::wait_until(
            std::time::Duration::from_secs(10),
            "the client is blocked",
            || async {
                let mut c = cluster.client().await;
                client_field(&mut c, "blocked", "flags").await.as_deref() == Some("b")
            },
        )
        .await;
        assert_eq!(
            admin.cmd(&["CLIENT", "UNBLOCK", &id, reason]).await,
            Reply::Int(1)
        );
        assert_eq!(blocked.read().await, expected, "{reason}");
    }
    // BLMOVE's timeout is a null bulk; RESP3's null is `_`.
    let other = format!("{{{key}}}:dest");
    for (hello, args, expected) in [
        (
            false,
            vec!["BLMOVE", &key, &other, "LEFT", "LEFT", "0"],
            &b"$-1\r\n"[..],
        ),
        (true, vec!["BLPOP", &key, "0"], b"_\r\n"),
    ] {
        if hello {
            assert!(blocked.cmd_resp3(&["HELLO", "3"]).await.starts_with(b"%7"));
        }
        blocked
            .send_raw(&redshard_tests::client::encode_command(&args))
            .await;
        redshard_tests::wait_until(
            std::time::Duration::from_secs(10),
            "the client is blocked",
            || async {
                let mut c = cluster.client().await;
                client_field(&mut c, "blocked", "flags").await.as_deref() == Some("b")
            },
        )
        .await;
        assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id]).await, Reply::Int(1));
        assert_eq!(blocked.read_resp3_raw().await, expected, "{args:?}");
    }
    assert!(blocked.cmd_resp3(&["HELLO", "2"]).await.starts_with(b"*14"));

    // The client goes on, blocking again included.
    assert_eq!(admin.cmd(&["RPUSH", &key, "x"]).await, Reply::Int(1));
    assert_eq!(
        blocked.cmd(&["BLPOP", &key, "0"]).await,
        Reply::Array(vec![Reply::bulk(&key), Reply::bulk("x")])
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", &id, "NOPE"]).await,
        Reply::Error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR".into())
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", "x"]).await,
        Reply::Error("ERR value is not an integer or out of range".into())
    );
}

/// `param`'s value on the node at `addr`, asked directly.
async fn node_config(addr: &str, param: &str) -> String {
    let mut node = redshard_tests::Client::connect(addr).await;
    node.cmd(&["CONFIG", "GET", param]).await.items()[1].text()
}

fn error_of(reply: &Reply) -> String {
    match reply {
        Reply::Error(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_and_friends_apply_to_every_node() {
    let mut cluster = TestCluster::start_with(2, true, "", &[]).await;
    let nodes: Vec<String> = cluster
        .masters
        .iter()
        .chain(&cluster.replicas)
        .map(redshard_tests::RedisServer::addr)
        .collect();
    let mut c = cluster.client().await;

    // Several pairs at once, on masters and replicas alike.
    assert!(c
        .cmd(&["CONFIG", "SET", "hz", "17", "maxmemory-samples", "7"])
        .await
        .is_ok());
    for node in &nodes {
        assert_eq!(node_config(node, "hz").await, "17", "{node}");
        assert_eq!(node_config(node, "maxmemory-samples").await, "7", "{node}");
    }
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "hz"]).await,
        Reply::Array(vec![Reply::bulk("hz"), Reply::bulk("17")])
    );

    // SLOWLOG is the proxy's: its settings are the proxy's too (and the nodes').
    assert!(c.cmd(&["SLOWLOG", "RESET"]).await.is_ok());
    assert!(c
        .cmd(&[
            "CONFIG",
            "SET",
            "slowlog-log-slower-than",
            "0",
            "slowlog-max-len",
            "3"
        ])
        .await
        .is_ok());
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "slowlog-*"]).await,
        Reply::Array(vec![
            Reply::bulk("slowlog-log-slower-than"),
            Reply::bulk("0"),
            Reply::bulk("slowlog-max-len"),
            Reply::bulk("3"),
        ])
    );
    assert_eq!(node_config(&nodes[0], "slowlog-max-len").await, "3");
    for i in 0..5 {
        assert_eq!(
            c.cmd(&["GET", &format!("slow{i}")]).await,
            Reply::Bulk(None)
        );
    }
    assert_eq!(c.cmd(&["SLOWLOG", "LEN"]).await, Reply::Int(3));

    // What the proxy manages is refused before any node sees it; Redis's syntax rules.
    for (param, value) in [
        ("replicaof", "127.0.0.1 1"),
        ("SLAVEOF", "no one"),
        ("masterauth", "x"),
        ("requirepass", "x"),
        ("port", "1"),
        ("dir", "/tmp"),
        ("cluster-enabled", "yes"),
        ("maxmemory-policy", "allkeys-lru"),
        ("maxclients", "10"),
    ] {
        let e = error_of(&c.cmd(&["CONFIG", "SET", "hz", "18", param, value]).await);
        assert!(
            e.starts_with(&format!(
                "ERR CONFIG SET failed (possibly related to argument '{param}') - "
            )),
            "{e}"
        );
    }
    for node in &nodes {
        assert_eq!(
            node_config(node, "hz").await,
            "17",
            "nothing applied: {node}"
        );
    }
    assert!(c
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .await
        .is_ok());
    assert_eq!(
        error_of(&c.cmd(&["CONFIG", "SET", "hz", "18", "maxmemory"]).await),
        "ERR syntax error"
    );
    // Every node refuses a bad value with Redis's own words.
    let e = error_of(&c.cmd(&["CONFIG", "SET", "hz", "fast"]).await);
    assert!(
        e.starts_with("ERR CONFIG SET failed (possibly related to argument 'hz') - ")
            && e.ends_with(&format!("; applied on 0 of {} nodes)", nodes.len())),
        "{e}"
    );

    // RESETSTAT clears the nodes' statistics; LATENCY RESET counts what it reset.
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("v"));
    let mut masters = Vec::new();
    for m in 0..cluster.masters.len() {
        masters.push(cluster.master(m).await);
    }
    let mut total = 0;
    for m in &mut masters {
        total += keyspace_hits(m).await;
    }
    assert!(total >= 1);
    let processed = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = processed(c.cmd(&["INFO", "stats"]).await.text());
    assert!(before >= 10, "{before}");
    assert!(c.cmd(&["CONFIG", "RESETSTAT"]).await.is_ok());
    for m in &mut masters {
        assert_eq!(keyspace_hits(m).await, 0);
    }
    // The proxy's own counters start again too.
    assert!(processed(c.cmd(&["INFO", "stats"]).await.text()) < 5);
    assert_eq!(c.cmd(&["LATENCY", "RESET"]).await, Reply::Int(0));
    // The test nodes run without a configuration file: each says so.
    let e = error_of(&c.cmd(&["CONFIG", "REWRITE"]).await);
    assert!(
        e.starts_with("ERR The server is running without a config file (on "),
        "{e}"
    );

    // A node that cannot be asked is named; the others applied it.
    let down = cluster.replicas[1].addr();
    cluster.replicas[1].kill();
    let e = error_of(&c.cmd(&["CONFIG", "SET", "hz", "19"]).await);
    assert_eq!(
        e,
        format!(
            "ERR no answer: connection refused (on {down}; applied on {} of {} nodes)",
            nodes.len() - 1,
            nodes.len()
        )
    );
    assert_eq!(node_config(&nodes[0], "hz").await, "19");

    // A node added later gets what was set through the proxy.
    let admin = cluster.start_admin().await;
    let mut a = redshard_tests::Client::connect_addr(admin).await;
    let extra = redshard_tests::RedisServer::start();
    assert_eq!(node_config(&extra.addr(), "hz").await, "10");
    let added = a.cmd(&["ADDREPLICA", "s1", &extra.addr()]).await;
    assert_eq!(*added.field("shard"), Reply::bulk("s1"), "{added:?}");
    assert_eq!(node_config(&extra.addr(), "hz").await, "19");
    assert_eq!(node_config(&extra.addr(), "maxmemory-samples").await, "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_gets_the_config_set_parameters_again() {
    let mut cluster = TestCluster::start(1).await;
    let mut c = cluster.client().await;
    // A lane has met the node's process (its run_id), so it can tell a new one.
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    assert!(c.cmd(&["CONFIG", "SET", "hz", "23"]).await.is_ok());
    let node = cluster.masters[0].addr();
    assert_eq!(node_config(&node, "hz").await, "23");
    cluster.masters[0].restart();
    assert_eq!(node_config(&node, "hz").await, "10", "a fresh process");
    // The lanes find the new process as soon as they carry traffic to it.
    redshard_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the restarted node given hz 23",
        || {
            let (proxy, node) = (cluster.addr, node.clone());
            async move {
                let mut c = redshard_tests::Client::connect_addr(proxy).await;
                let _ = c.cmd(&["SET", "k", "v"]).await;
                node_config(&node, "hz").await == "23"
            }
        },
    )
    .await;
}

/// A node's `keyspace_hits`.
async fn keyspace_hits(node: &mut redshard_tests::Client) -> u64 {
    node.info_field("stats", "keyspace_hits")
        .await
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether `line` is a MONITOR line of the client at `addr` showing `args`.
fn monitor_line(line: &Reply, addr: &str, args: &str) -> bool {
    let Reply::Status(line) = line else {
        return false;
    };
    let Some((time, rest)) = line.split_once(' ') else {
        return false;
    };
    let time_ok = time.split_once('.').is_some_and(|(s, us)| {
        s.len() >= 10 && us.len() == 6 && (s.to_owned() + us).bytes().all(|b| b.is_ascii_digit())
    });
    time_ok && rest == format!("[0 {addr}] {args}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_shows_every_client_s_commands_as_redis_does() {
    let cluster = TestCluster::start(2).await;
    let mut other = cluster.client().await;
    let info = other.cmd(&["CLIENT", "INFO"]).await.text();
    assert!(info.contains(" flags=N "), "{info}");
    let addr = info
        .split(' ')
        .find_map(|f| f.strip_prefix("addr="))
        .unwrap()
        .to_owned();
    let mut m = cluster.client().await;
    assert!(m.cmd(&["CLIENT", "SETNAME", "watcher"]).await.is_ok());
    assert!(m.cmd(&["MONITOR"]).await.is_ok());
    let list = other.cmd(&["CLIENT", "LIST"]).await.text();
    assert!(
        list.lines()
            .any(|l| l.contains(" name=watcher ") && l.contains(" flags=O ")),
        "{list}"
    );
    // (CLIENT LIST is an `admin` command: not shown.)

    // Keys on both shards, the credentials hidden, admin and refused commands not shown.
    let (k1, k2) = (key_on(2, 0, "m"), key_on(2, 1, "m"));
    assert!(other.cmd(&["SET", &k1, "v 1"]).await.is_ok());
    assert_eq!(other.cmd(&["GET", &k2]).await, Reply::Bulk(None));
    assert!(other.cmd(&["AUTH", "default", "secret"]).await.is_ok());
    assert!(matches!(
        other.cmd(&["CONFIG", "GET", "hz"]).await,
        Reply::Array(_)
    ));
    assert!(matches!(other.cmd(&["NOSUCH"]).await, Reply::Error(_)));
    assert!(matches!(other.cmd(&["SHUTDOWN"]).await, Reply::Error(_)));
    assert_eq!(
        other.cmd(&["ECHO", "a\"b\n\u{1}"]).await,
        Reply::bulk("a\"b\n\u{1}")
    );
    for expected in [
        format!("\"SET\" \"{k1}\" \"v 1\""),
        format!("\"GET\" \"{k2}\""),
        "\"AUTH\" \"(redacted)\" \"(redacted)\"".to_owned(),
        "\"ECHO\" \"a\\\"b\\n\\x01\"".to_owned(),
    ] {
        let line = m.read().await;
        assert!(
            monitor_line(&line, &addr, &expected),
            "{line:?} is not {expected}"
        );
    }

    // The monitoring client is a replica to Redis: no keyspace, other commands answered.
    assert_eq!(
        m.cmd(&["GET", &k1]).await,
        Reply::Error("ERR Replica can't interact with the keyspace".into())
    );
    assert_eq!(m.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    let own = m.read().await;
    let my_addr = {
        let Reply::Status(line) = &own else {
            panic!("{own:?}")
        };
        line.split(['[', ']']).nth(1).unwrap()[2..].to_owned()
    };
    assert!(monitor_line(&own, &my_addr, "\"PING\""), "{own:?}");
    // A second MONITOR is not answered, as in Redis.
    m.send_raw(&redshard_tests::client::encode_command(&["MONITOR"]))
        .await;
    assert_eq!(m.cmd(&["RESET"]).await, Reply::Status("RESET".into()));
    assert!(other.cmd(&["SET", &k1, "2"]).await.is_ok());
    assert_eq!(
        m.cmd(&["GET", &k1]).await,
        Reply::bulk("2"),
        "out of MONITOR"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_that_falls_behind_is_closed() {
    let extra = "[limits]\nmonitor_buffer_bytes = 200000\noutput_buffer_soft_bytes = 200000\n";
    let cluster = TestCluster::start_with(2, false, extra, &[]).await;
    let mut m = cluster.client().await;
    assert!(m.cmd(&["MONITOR"]).await.is_ok());
    // It reads nothing while 20 MB of commands go by: far more than the socket buffers, the
    // output kept for it and the limit hold.
    let mut c = cluster.client().await;
    let value = "x".repeat(100_000);
    for i in 0..200 {
        assert!(c.cmd(&["SET", &format!("big{i}"), &value]).await.is_ok());
    }
    let mut lines = 0;
    let last = loop {
        match m.try_read().await {
            Some(Reply::Status(_)) => lines += 1,
            Some(other) => break Some(other),
            None => break None,
        }
    };
    assert!(lines < 200, "{lines} lines");
    // The error line is written when the socket takes it; the connection is closed anyway.
    if let Some(last) = last {
        assert_eq!(
            last,
            Reply::Error(
                "ERR redshard: MONITOR output fell more than 200000 bytes behind (limits.monitor_buffer_bytes); closing the connection".into()
            )
        );
        assert_eq!(m.try_read().await, None, "closed after the error");
    }
    // The proxy serves on, and a new monitor works.
    let mut m2 = cluster.client().await;
    assert!(m2.cmd(&["MONITOR"]).await.is_ok());
    assert!(c.cmd(&["SET", "after", "1"]).await.is_ok());
    assert!(matches!(m2.read().await, Reply::Status(l) if l.ends_with("\"SET\" \"after\" \"1\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_off_and_skip_silence_replies() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let (k1, k2) = (key_on(2, 0, "r"), key_on(2, 1, "r"));
    let pipeline = |commands: &[&[&str]]| -> Vec<u8> {
        commands
            .iter()
            .flat_map(|args| redshard_tests::client::encode_command(args))
            .collect()
    };
    // OFF: nothing (errors and replies of both shards included) until ON's +OK.
    c.send_raw(&pipeline(&[
        &["CLIENT", "REPLY", "OFF"],
        &["SET", &k1, "1"],
        &["MGET", &k1, &k2],
        &["NOSUCH"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", &k1],
    ]))
    .await;
    assert!(c.read().await.is_ok());
    assert_eq!(c.read().await, Reply::bulk("1"));
    // SKIP: the next command's reply only.
    c.send_raw(&pipeline(&[
        &["CLIENT", "REPLY", "SKIP"],
        &["SET", &k2, "2"],
        &["GET", &k2],
    ]))
    .await;
    assert_eq!(c.read().await, Reply::bulk("2"));
    // RESET turns replies back on; a bad mode is a syntax error.
    c.send_raw(&pipeline(&[
        &["CLIENT", "REPLY", "OFF"],
        &["PING"],
        &["RESET"],
    ]))
    .await;
    assert_eq!(c.read().await, Reply::Status("RESET".into()));
    assert_eq!(
        c.cmd(&["CLIENT", "REPLY", "MAYBE"]).await,
        Reply::Error("ERR syntax error".into())
    );
    assert_eq!(c.cmd(&["PING"]).await, Reply::Status("PONG".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_read_commands_describe_the_proxy_s_users() {
    let extra = "password = \"admin-pw\"\n\
        [[user]]\nname = \"reader\"\npassword = \"r-pw\"\naccess = \"read-only\"\n\
        [[user]]\nname = \"app\"\npassword = \"a-pw\"\naccess = \"no-dangerous\"\n";
    let cluster = TestCluster::start_with(2, false, extra, &[]).await;
    let mut c = cluster.client().await;
    assert!(c.cmd(&["AUTH", "admin-pw"]).await.is_ok());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk("default"));
    assert_eq!(
        c.cmd(&["ACL", "USERS"]).await,
        Reply::Array(vec![
            Reply::bulk("app"),
            Reply::bulk("default"),
            Reply::bulk("reader")
        ])
    );
    let list = c.cmd(&["ACL", "LIST"]).await;
    let lines: Vec<String> = list.items().iter().map(Reply::text).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        format!(
            "user app on #{} ~* &* +@all -@dangerous -script|flush -function|flush -function|restore",
            sha256_hex("a-pw")
        )
    );
    assert!(lines[1].starts_with("user default on #"), "{}", lines[1]);
    assert!(lines[2].starts_with("user reader on #"), "{}", lines[2]);
    assert!(lines[2].contains(" +@all -@write -@admin "), "{}", lines[2]);
    let user = c.cmd(&["ACL", "GETUSER", "app"]).await;
    assert_eq!(
        user,
        Reply::Array(vec![
            Reply::bulk("flags"),
            Reply::Array(vec![Reply::bulk("on")]),
            Reply::bulk("passwords"),
            Reply::Array(vec![Reply::bulk(&sha256_hex("a-pw"))]),
            Reply::bulk("commands"),
            Reply::bulk("+@all -@dangerous -script|flush -function|flush -function|restore"),
            Reply::bulk("keys"),
            Reply::bulk("~*"),
            Reply::bulk("channels"),
            Reply::bulk("&*"),
            Reply::bulk("selectors"),
            Reply::Array(vec![]),
        ])
    );
    assert_eq!(
        c.cmd(&["ACL", "GETUSER", "nobody"]).await,
        Reply::Bulk(None)
    );
    // Redis's categories, from a node.
    assert_eq!(c.cmd(&["ACL", "CAT"]).await.items().len(), 21);
    let dangerous = c.cmd(&["ACL", "CAT", "dangerous"]).await;
    assert!(dangerous.items().contains(&Reply::bulk("flushall")));
    assert_eq!(
        c.cmd(&["ACL", "CAT", "nope"]).await,
        Reply::Error("ERR Unknown category 'nope'".into())
    );
    assert!(c.cmd(&["ACL", "HELP"]).await.items().len() > 10);
    assert_eq!(c.cmd(&["ACL", "GENPASS", "32"]).await.text().len(), 8);
    assert_eq!(
        c.cmd(&["ACL", "SETUSER", "x"]).await,
        Reply::Error("ERR ACL SETUSER is not allowed through redshard".into())
    );
    // Tracking is not offered: the answers of a client with tracking off.
    assert_eq!(c.cmd(&["CLIENT", "GETREDIR"]).await, Reply::Int(-1));
    assert_eq!(
        c.cmd(&["CLIENT", "TRACKINGINFO"]).await,
        Reply::Array(vec![
            Reply::bulk("flags"),
            Reply::Array(vec![Reply::bulk("off")]),
            Reply::bulk("redirect"),
            Reply::Int(-1),
            Reply::bulk("prefixes"),
            Reply::Array(vec![]),
        ])
    );

    // RESP3: the bytes redis-server 7.0 sends (maps, sets, `_` for an unknown user).
    assert!(c.cmd_resp3(&["HELLO", "3"]).await.starts_with(b"%7"));
    assert_eq!(
        c.cmd_resp3(&["CLIENT", "TRACKINGINFO"]).await,
        b"%3\r\n$5\r\nflags\r\n~1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"
    );
    assert_eq!(
        String::from_utf8(c.cmd_resp3(&["ACL", "GETUSER", "app"]).await).unwrap(),
        format!(
            "%6\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n$9\r\npasswords\r\n*1\r\n$64\r\n{}\r\n$8\r\ncommands\r\n$65\r\n+@all -@dangerous -script|flush -function|flush -function|restore\r\n$4\r\nkeys\r\n$2\r\n~*\r\n$8\r\nchannels\r\n$2\r\n&*\r\n$9\r\nselectors\r\n*0\r\n",
            sha256_hex("a-pw")
        )
    );
    assert_eq!(c.cmd_resp3(&["ACL", "GETUSER", "nobody"]).await, b"_\r\n");

    // Each user sees itself; the user list is for those allowed dangerous commands.
    let mut app = cluster.client().await;
    assert!(app.cmd(&["AUTH", "app", "a-pw"]).await.is_ok());
    assert_eq!(app.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk("app"));
    assert_eq!(
        app.cmd(&["ACL", "LIST"]).await,
        Reply::Error("NOPERM User app has no permissions to run the 'acl|list' command".into())
    );
    assert_eq!(
        app.cmd(&["CONFIG", "SET", "hz", "11"]).await,
        Reply::Error("NOPERM User app has no permissions to run the 'config|set' command".into())
    );
}

/// The hex SHA-256 of `text`, from `sha256sum` (independent of the proxy's).
fn sha256_hex(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// `COMMAND GETKEYS` answers as the node itself does, errors included: an optional-key
/// command called with none (`EVAL ... 0`, `FCALL f 0`) gets an empty array, a command
/// without keys or with the wrong argument count Redis's own texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_getkeys_answers_as_the_node_does() {
    let cluster = TestCluster::start(1).await;
    let mut proxy = cluster.client().await;
    let mut node = redshard_tests::Client::connect(cluster.masters[0].addr()).await;
    let requests: &[&[&str]] = &[
        &["EVAL", "return 1", "0"],
        &["EVAL", "return 1", "2", "a", "b"],
        &["FCALL", "f", "0"],
        &["FCALL", "f", "1", "k"],
        &["GET", "k"],
        &["GET"],
        &["GET", "a", "b"],
        &["SET", "a", "b"],
        &["MSET", "a", "1", "b", "2"],
        &["ZUNIONSTORE", "d", "0", "a"],
        &["ZUNIONSTORE", "d", "2", "a", "b"],
        &["XREAD", "STREAMS", "a", "0"],
        &["PING", "x"],
        &["NOSUCHCOMMAND", "x"],
    ];
    for request in requests {
        let mut args = vec!["COMMAND", "GETKEYS"];
        args.extend_from_slice(request);
        let ours = proxy.cmd(&args).await;
        let theirs = node.cmd(&args).await;
        assert_eq!(ours, theirs, "COMMAND GETKEYS {request:?}");
    }
}

/// The value of `field` in an INFO text.
fn info_value(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')
            .map(|v| v.trim().to_owned())
    })
}

/// INFO shows the masters' persistence, CPU and error statistics merged like one server's
/// (its default set), and their per-command statistics when asked by name; a section the
/// client did not ask for is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_merges_the_masters_persistence_cpu_and_statistics() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    // Writes on both masters, and one error each.
    for shard in 0..2 {
        let key = key_on(2, shard, "info");
        assert_eq!(c.cmd(&["SET", &key, "v"]).await, Reply::Status("OK".into()));
        assert!(matches!(
            c.cmd(&["LPUSH", &key, "x"]).await,
            Reply::Error(_)
        ));
    }
    let text = c.cmd(&["INFO"]).await.text();
    for title in [
        "# Persistence",
        "# CPU",
        "# Errorstats",
        "# Keyspace",
        "# Server",
    ] {
        assert!(text.contains(title), "{title} in {text}");
    }
    assert!(!text.contains("# Commandstats"), "{text}");
    let mut on_nodes = 0;
    let mut wrongtype = 0;
    for master in &cluster.masters {
        let mut node = redshard_tests::Client::connect(master.addr()).await;
        let info = node
            .cmd(&["INFO", "persistence", "errorstats"])
            .await
            .text();
        on_nodes += info_value(&info, "rdb_changes_since_last_save")
            .and_then(|v| v.parse::<u64>().ok())
            .expect("rdb_changes_since_last_save");
        wrongtype += info_value(&info, "errorstat_WRONGTYPE").map_or(0, |v| {
            v.trim_start_matches("count=").parse::<u64>().unwrap()
        });
    }
    assert!(on_nodes >= 2, "{on_nodes}");
    assert_eq!(
        info_value(&text, "rdb_changes_since_last_save"),
        Some(on_nodes.to_string())
    );
    assert_eq!(wrongtype, 2);
    assert_eq!(
        info_value(&text, "errorstat_WRONGTYPE"),
        Some("count=2".to_owned())
    );
    assert!(info_value(&text, "used_cpu_sys").is_some(), "{text}");

    // By name: only that section, summed over the masters.
    let stats = c.cmd(&["INFO", "commandstats"]).await.text();
    assert!(!stats.contains("# Server"), "{stats}");
    let set = info_value(&stats, "cmdstat_set").expect("cmdstat_set");
    assert!(set.starts_with("calls=2,"), "{set}");
}

/// A script one client ran with EVAL (on its key's master only) is known to every master, as
/// to one server: EVALSHA of it works for keys on any shard and SCRIPT EXISTS says 1; after
/// SCRIPT FLUSH it is gone everywhere, and the next EVAL loads it everywhere again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_run_with_eval_is_known_to_every_master() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let body = "return 'ran:' .. KEYS[1]";
    let sha = c.cmd(&["SCRIPT", "LOAD", body]).await.text();
    assert_eq!(
        c.cmd(&["SCRIPT", "FLUSH"]).await,
        Reply::Status("OK".into())
    );
    let keys: Vec<String> = (0..3).map(|s| key_on(3, s, "script")).collect();
    for round in 0..2 {
        assert_eq!(
            c.cmd(&["EVAL", body, "1", &keys[0]]).await,
            Reply::bulk(&format!("ran:{}", keys[0])),
            "round {round}"
        );
        for key in &keys {
            assert_eq!(
                c.cmd(&["EVALSHA", &sha, "1", key]).await,
                Reply::bulk(&format!("ran:{key}")),
                "round {round}: EVALSHA for {key}"
            );
        }
        assert_eq!(
            c.cmd(&["SCRIPT", "EXISTS", &sha]).await,
            Reply::Array(vec![Reply::Int(1)])
        );
        assert_eq!(
            c.cmd(&["SCRIPT", "FLUSH"]).await,
            Reply::Status("OK".into())
        );
        assert!(
            matches!(c.cmd(&["EVALSHA", &sha, "1", &keys[2]]).await, Reply::Error(e) if e.starts_with("NOSCRIPT")),
            "round {round}: flushed"
        );
    }
}

/// One CLIENT LIST line's fields, in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value of `field` in the line of the client named `name` in `list`.
fn field_of(list: &str, name: &str, field: &str) -> String {
    let line = list
        .lines()
        .find(|l| l.contains(&format!(" name={name} ")))
        .unwrap_or_else(|| panic!("no client {name} in {list}"));
    fields(line)
        .into_iter()
        .find(|(k, _)| k == field)
        .unwrap_or_else(|| panic!("no {field} in {line}"))
        .1
}

/// CLIENT LIST of the server at `addr`, asked over a new connection.
async fn list_at(addr: String) -> String {
    let mut c = redshard_tests::Client::connect(addr).await;
    c.cmd(&["CLIENT", "LIST"]).await.text()
}

/// A client of `addr` named `name`.
async fn named_at(addr: &str, name: &str) -> redshard_tests::Client {
    let mut c = redshard_tests::Client::connect(addr).await;
    assert!(c.cmd(&["CLIENT", "SETNAME", name]).await.is_ok());
    c
}

/// What CLIENT LIST shows, on the server at `addr` (the proxy or a redis-server), of a client
/// in MULTI with one queued command, of tracking clients (default, BCAST, REDIRECT) and of a
/// plain one: by name, its `flags`, `multi`, `redir` (`obs` for the observer's id) and
/// `argv-mem`; then the observer's own line's field names and `argv-mem` (CLIENT INFO), and
/// every client's `fd`. The clients stay connected until the end.
async fn client_list_scenario(
    addr: &str,
) -> (BTreeMap<String, [String; 4]>, Vec<String>, String, Vec<i64>) {
    let mut obs = named_at(addr, "obs").await;
    let obs_id = obs.cmd(&["CLIENT", "ID"]).await.int().to_string();
    let mut m = named_at(addr, "m").await;
    assert!(m.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        m.cmd(&["SET", "clientlist:k", "v"]).await,
        Reply::Status("QUEUED".into())
    );
    let mut t = named_at(addr, "t").await;
    assert!(t.cmd(&["CLIENT", "TRACKING", "ON"]).await.is_ok());
    let mut b = named_at(addr, "b").await;
    assert!(b
        .cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a:"])
        .await
        .is_ok());
    let mut r = named_at(addr, "r").await;
    assert!(r
        .cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &obs_id])
        .await
        .is_ok());
    let _n = named_at(addr, "n").await;
    let list = obs.cmd(&["CLIENT", "LIST"]).await.text();
    let mut shown = BTreeMap::new();
    for name in ["m", "t", "b", "r", "n"] {
        let redir = field_of(&list, name, "redir");
        let redir = if redir == obs_id { "obs".into() } else { redir };
        shown.insert(
            name.to_owned(),
            [
                field_of(&list, name, "flags"),
                field_of(&list, name, "multi"),
                redir,
                field_of(&list, name, "argv-mem"),
            ],
        );
    }
    assert_ne!(field_of(&list, "m", "multi-mem"), "0", "{list}");
    let fds = list
        .lines()
        .map(|l| {
            fields(l)
                .into_iter()
                .find(|(k, _)| k == "fd")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or_else(|| panic!("{l}"))
        })
        .collect();
    let info = obs.cmd(&["CLIENT", "INFO"]).await.text();
    let names = fields(info.trim_end())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let own_argv = field_of(&info, "obs", "argv-mem");
    drop((m, t, b, r));
    (shown, names, own_argv, fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_shows_multi_tracking_fd_and_fields_as_redis_does() {
    let cluster = TestCluster::start(1).await;
    let proxy = client_list_scenario(&cluster.addr.to_string()).await;
    let redis = client_list_scenario(&cluster.masters[0].addr()).await;
    let expected: BTreeMap<String, [String; 4]> = [
        ("m", ["x", "1", "-1", "0"]),
        ("t", ["t", "-1", "0", "0"]),
        ("b", ["tB", "-1", "0", "0"]),
        ("r", ["t", "-1", "obs", "0"]),
        ("n", ["N", "-1", "-1", "0"]),
    ]
    .into_iter()
    .map(|(name, v)| (name.to_owned(), v.map(str::to_owned)))
    .collect();
    assert_eq!(proxy.0, expected, "the proxy's CLIENT LIST");
    assert_eq!(redis.0, expected, "redis-server's CLIENT LIST");
    // The same fields in the same order; Redis 7.0 has no lib-name and lib-ver (7.2's).
    let redis_names: Vec<String> = if redis.1.iter().any(|n| n == "lib-name") {
        redis.1.clone()
    } else {
        let mut names = redis.1.clone();
        names.extend(["lib-name".to_owned(), "lib-ver".to_owned()]);
        names
    };
    assert_eq!(proxy.1, redis_names);
    // CLIENT INFO's own `argv-mem`: the bytes of `client` and `info`.
    assert_eq!(proxy.2, "10");
    assert_eq!(proxy.2, redis.2);
    // Each client's own socket.
    let fds = proxy.3;
    assert!(fds.iter().all(|&fd| fd > 0), "{fds:?}");
    assert_eq!(
        fds.iter().collect::<BTreeSet<_>>().len(),
        fds.len(),
        "{fds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_idle_grows_without_commands_and_a_command_resets_it() {
    let cluster = TestCluster::start(1).await;
    let addr = cluster.addr.to_string();
    let mut obs = named_at(&addr, "obs").await;
    let mut idler = named_at(&addr, "idler").await;
    let idle = |list: &str| field_of(list, "idler", "idle").parse::<u64>().unwrap();
    redshard_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the idle client's idle= to reach 2",
        || {
            let addr = addr.clone();
            async move { idle(&list_at(addr).await) >= 2 }
        },
    )
    .await;
    assert_eq!(idler.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    let after = idle(&obs.cmd(&["CLIENT", "LIST"]).await.text());
    assert!(after < 2, "idle={after} right after a command");
    // The asking client is not idle (1 at most: a second may turn between its read and its
    // line).
    let info = obs.cmd(&["CLIENT", "INFO"]).await.text();
    let own: u64 = field_of(&info, "obs", "idle").parse().unwrap();
    assert!(own <= 1, "{info}");
}

/// A tracking client whose REDIRECT target left shows `R` once an invalidation was due, on
/// the server at `addr`; `writer_addr` changes `key`, which it read.
async fn broken_redirect_scenario(addr: &str, writer_addr: &str, key: &str) {
    let mut obs = named_at(addr, "obs").await;
    let mut target = named_at(addr, "target").await;
    let target_id = target.cmd(&["CLIENT", "ID"]).await.int().to_string();
    let mut t = named_at(addr, "t").await;
    assert!(t
        .cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &target_id])
        .await
        .is_ok());
    assert_eq!(t.cmd(&["GET", key]).await, Reply::Bulk(None));
    assert!(target.cmd(&["QUIT"]).await.is_ok());
    drop(target);
    redshard_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the redirect target to leave",
        || {
            let addr = addr.to_owned();
            async move { !list_at(addr).await.contains(" name=target ") }
        },
    )
    .await;
    assert_eq!(
        field_of(&obs.cmd(&["CLIENT", "LIST"]).await.text(), "t", "flags"),
        "t"
    );
    let mut writer = redshard_tests::Client::connect(writer_addr).await;
    assert!(writer.cmd(&["SET", key, "v"]).await.is_ok());
    redshard_tests::wait_until(
        std::time::Duration::from_secs(10),
        "flags=tR after an invalidation for a gone redirect target",
        || {
            let addr = addr.to_owned();
            async move { field_of(&list_at(addr).await, "t", "flags") == "tR" }
        },
    )
    .await;
    assert_eq!(
        field_of(&obs.cmd(&["CLIENT", "LIST"]).await.text(), "t", "redir"),
        target_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_shows_a_broken_tracking_redirect_as_redis_does() {
    let cluster = TestCluster::start(1).await;
    let proxy = cluster.addr.to_string();
    broken_redirect_scenario(&proxy, &proxy, "broken:proxy").await;
    let redis = cluster.masters[0].addr();
    broken_redirect_scenario(&redis, &redis, "broken:redis").await;
}
