//! Behaving like one Redis server where clients' own test suites look: CONFIG GET from the
//! nodes, INFO (the masters' sections merged) and CONFIG GET inside MULTI, SCAN of a small
//! keyspace in one call, COMMAND GETKEYS as the node answers it, a script run with EVAL known
//! to every master. The clients' and the operators' commands are in `compat_client` and
//! `compat_operators`.

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
    assert_eq!(all["databases"], "16");
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
    assert_eq!(some["databases"], "16");
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
    assert!(text.contains("$9\r\ndatabases\r\n$2\r\n16\r\n"), "{text}");
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
    assert_eq!(config["databases"], "16");
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
