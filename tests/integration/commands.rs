//! Commands the proxy answers itself, refuses, or fans out.

use std::time::Duration;

use redshard_tests::{wait_until, Client, Reply, TestCluster};

fn err(text: &str) -> Reply {
    Reply::Error(text.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_commands_are_answered_by_the_proxy() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    assert_eq!(c.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    assert_eq!(c.cmd(&["ping", "hi"]).await, Reply::bulk("hi"));
    assert_eq!(c.cmd(&["ECHO", "x y"]).await, Reply::bulk("x y"));
    assert!(c.cmd(&["SELECT", "0"]).await.is_ok());
    assert!(c.cmd(&["SELECT", "1"]).await.is_ok());
    assert_eq!(
        c.cmd(&["SELECT", "16"]).await,
        err("ERR DB index is out of range")
    );
    assert!(c.cmd(&["SELECT", "0"]).await.is_ok());
    assert_eq!(
        c.cmd(&["SELECT", "x"]).await,
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Reply::Bulk(None));
    assert!(c.cmd(&["CLIENT", "SETNAME", "worker-1"]).await.is_ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Reply::bulk("worker-1"));
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "bad name"]).await,
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert!(c
        .cmd(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"])
        .await
        .is_ok());
    assert!(c
        .cmd(&["CLIENT", "SETINFO", "lib-ver", "5.0.1"])
        .await
        .is_ok());
    let Reply::Int(id) = c.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID is an integer")
    };
    let Reply::Bulk(Some(info)) = c.cmd(&["CLIENT", "INFO"]).await else {
        panic!()
    };
    let info = String::from_utf8(info).unwrap();
    assert!(info.starts_with(&format!("id={id} ")), "{info}");
    assert!(
        info.contains("name=worker-1")
            && info.contains("lib-name=redis-py")
            && info.contains("lib-ver=5.0.1")
    );
    let mut other = cluster.client().await;
    assert!(other.cmd(&["PING"]).await == Reply::Status("PONG".into()));
    let list = c.cmd(&["CLIENT", "LIST"]).await.text();
    assert_eq!(list.lines().count(), 2, "{list}");
    let Reply::Array(hello) = c.cmd(&["HELLO", "2"]).await else {
        panic!("HELLO replies an array in RESP2")
    };
    assert_eq!(hello[0], Reply::bulk("server"));
    assert_eq!(hello[4], Reply::bulk("proto"));
    assert_eq!(hello[5], Reply::Int(2));
    assert_eq!(
        c.cmd(&["HELLO", "4"]).await,
        err("NOPROTO unsupported protocol version")
    );
    assert_eq!(c.cmd(&["RESET"]).await, Reply::Status("RESET".into()));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Reply::Bulk(None));
    assert_eq!(c.cmd(&["QUIT"]).await, Reply::Status("OK".into()));
    assert_eq!(c.try_read().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_wrong_arity_forbidden_and_unsupported_commands() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    assert_eq!(
        c.cmd(&["NOSUCH", "a", "b"]).await,
        err("ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' ")
    );
    assert_eq!(
        c.cmd(&["GET"]).await,
        err("ERR wrong number of arguments for 'get' command")
    );
    assert!(
        matches!(c.cmd(&["CONFIG", "NOPE"]).await, Reply::Error(e) if e.starts_with("ERR unknown subcommand 'NOPE'"))
    );
    for forbidden in [
        vec!["SHUTDOWN"],
        vec!["DEBUG", "SLEEP", "0"],
        vec!["CONFIG", "SET", "replicaof", "127.0.0.1 1"],
        vec!["REPLICAOF", "127.0.0.1", "1"],
        vec!["SLAVEOF", "127.0.0.1", "1"],
        vec!["CLUSTER", "INFO"],
        vec!["SWAPDB", "0", "1"],
        vec!["FLUSHALL"],
        vec!["FLUSHDB"],
        vec!["MIGRATE", "127.0.0.1", "1", "k", "0", "10"],
    ] {
        let reply = c.cmd(&forbidden).await;
        assert!(
            matches!(&reply, Reply::Error(e) if e.starts_with("ERR ")),
            "{forbidden:?} → {reply:?}"
        );
    }
    // None of them reached a backend.
    cluster
        .assert_never_ran(&[
            "shutdown",
            "debug",
            "config|set",
            "replicaof",
            "slaveof",
            "cluster",
            "swapdb",
            "flushall",
            "flushdb",
            "migrate",
        ])
        .await;
    // The connection is still usable after all of that.
    assert_eq!(c.cmd(&["PING"]).await, Reply::Status("PONG".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_dbsize_keys_and_flush_fan_out() {
    let cluster = TestCluster::start_with(3, false, "allow_flush = true\n", &[]).await;
    let mut c = cluster.client().await;
    for i in 0..90 {
        assert!(c.cmd(&["SET", &format!("f:{i}"), "1"]).await.is_ok());
    }
    assert!(c.cmd(&["SET", "ttl", "1", "EX", "1000"]).await.is_ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, Reply::Int(91));
    let Reply::Array(keys) = c.cmd(&["KEYS", "f:*"]).await else {
        panic!()
    };
    assert_eq!(keys.len(), 90);
    let info = c.cmd(&["INFO"]).await.text();
    for field in [
        "redis_version:",
        "connected_clients:",
        "role:master",
        "# Keyspace",
        "db0:keys=91,expires=1,",
    ] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
    let server = c.cmd(&["INFO", "server"]).await.text();
    assert!(server.contains("redis_mode:standalone") && !server.contains("# Keyspace"));
    let keyspace = c.cmd(&["INFO", "keyspace"]).await.text();
    assert!(
        keyspace.starts_with("# Keyspace\r\ndb0:keys=91,"),
        "{keyspace}"
    );
    assert!(c.cmd(&["FLUSHALL"]).await.is_ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, Reply::Int(0));
    let Reply::Array(cfg) = c.cmd(&["CONFIG", "GET", "databases"]).await else {
        panic!()
    };
    assert_eq!(cfg, vec![Reply::bulk("databases"), Reply::bulk("16")]);
    assert_eq!(
        c.cmd(&["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"])
            .await,
        Reply::Array(vec![Reply::bulk("a"), Reply::bulk("b")])
    );
    let Reply::Int(count) = c.cmd(&["COMMAND", "COUNT"]).await else {
        panic!()
    };
    assert!(count > 200);
    let Reply::Int(backend_count) = cluster.master(0).await.cmd(&["COMMAND", "COUNT"]).await else {
        panic!()
    };
    assert_eq!(count, backend_count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_commands_go_to_a_master() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let Reply::Array(time) = c.cmd(&["TIME"]).await else {
        panic!("TIME is an array")
    };
    assert_eq!(time.len(), 2);
    assert!(matches!(c.cmd(&["LASTSAVE"]).await, Reply::Int(_)));
    let Reply::Array(docs) = c.cmd(&["COMMAND", "INFO", "get"]).await else {
        panic!()
    };
    assert_eq!(docs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_visits_every_master_and_randomkey_finds_any_key() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    assert_eq!(
        c.cmd(&["RANDOMKEY"]).await,
        Reply::Bulk(None),
        "empty keyspace"
    );
    let mut written = std::collections::BTreeSet::new();
    for i in 0..500 {
        let key = format!("scan:{i}");
        assert!(c.cmd(&["SET", &key, "1"]).await.is_ok());
        written.insert(key);
    }
    assert_eq!(c.cmd(&["RPUSH", "scan:list", "x"]).await, Reply::Int(1));
    // A full iteration with a small COUNT returns every key; cursor 0 only at the end.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        let Reply::Array(reply) = c
            .cmd(&["SCAN", &cursor, "MATCH", "scan:*", "COUNT", "20"])
            .await
        else {
            panic!("SCAN replies an array")
        };
        let [Reply::Bulk(Some(next)), Reply::Array(keys)] = &reply[..] else {
            panic!("{reply:?}")
        };
        for k in keys {
            seen.insert(k.text());
        }
        cursor = String::from_utf8(next.clone()).unwrap();
        rounds += 1;
        if cursor == "0" {
            break;
        }
        assert!(rounds < 1000, "SCAN never ended");
    }
    let mut expected = written.clone();
    expected.insert("scan:list".into());
    assert_eq!(seen, expected);
    // TYPE filters per master like Redis.
    let Reply::Array(reply) = c.cmd(&["SCAN", "0", "TYPE", "list", "COUNT", "1000"]).await else {
        panic!()
    };
    assert_eq!(reply.len(), 2);
    assert_eq!(
        c.cmd(&["SCAN", "nope"]).await,
        Reply::Error("ERR invalid cursor".into())
    );
    assert_eq!(
        c.cmd(&["SCAN", "1023"]).await,
        Reply::Error("ERR invalid cursor".into())
    );
    let key = c.cmd(&["RANDOMKEY"]).await.text();
    assert!(expected.contains(&key), "{key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_and_functions_are_loaded_on_every_master() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let sha = c
        .cmd(&[
            "SCRIPT",
            "LOAD",
            "return redis.call('INCRBY', KEYS[1], ARGV[1])",
        ])
        .await
        .text();
    assert_eq!(sha.len(), 40);
    // EVALSHA works whichever master the key lands on.
    for i in 0..30 {
        assert_eq!(
            c.cmd(&["EVALSHA", &sha, "1", &format!("ev:{i}"), "2"])
                .await,
            Reply::Int(2)
        );
    }
    assert_eq!(
        c.cmd(&[
            "SCRIPT",
            "EXISTS",
            &sha,
            "0000000000000000000000000000000000000000"
        ])
        .await,
        Reply::Array(vec![Reply::Int(1), Reply::Int(0)])
    );
    assert_eq!(c.cmd(&["EVAL", "return 7", "0"]).await, Reply::Int(7));
    let lib = "#!lua name=redshardlib\nredis.register_function('getset2', function(keys, args) return redis.call('SET', keys[1], args[1], 'GET') end)";
    assert_eq!(
        c.cmd(&["FUNCTION", "LOAD", lib]).await,
        Reply::bulk("redshardlib")
    );
    for i in 0..30 {
        assert_eq!(
            c.cmd(&["FCALL", "getset2", "1", &format!("fn:{i}"), "v"])
                .await,
            Reply::Bulk(None)
        );
    }
    assert!(c.cmd(&["FUNCTION", "DELETE", "redshardlib"]).await.is_ok());
    for i in 0..3 {
        let Reply::Array(libs) = cluster.master(i).await.cmd(&["FUNCTION", "LIST"]).await else {
            panic!()
        };
        assert!(libs.is_empty(), "master {i} still has the library");
    }
    assert!(c.cmd(&["SCRIPT", "FLUSH"]).await.is_ok());
    assert_eq!(
        c.cmd(&["SCRIPT", "EXISTS", &sha]).await,
        Reply::Array(vec![Reply::Int(0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_answers_like_a_server_without_replicas() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    assert_eq!(c.cmd(&["WAIT", "0", "0"]).await, Reply::Int(0));
    let started = std::time::Instant::now();
    assert_eq!(c.cmd(&["WAIT", "1", "150"]).await, Reply::Int(0));
    assert!(started.elapsed() >= std::time::Duration::from_millis(140));
    assert_eq!(
        c.cmd(&["WAIT", "x", "0"]).await,
        Reply::Error("ERR value is not an integer or out of range".into())
    );
    assert_eq!(
        c.cmd(&["WAIT", "1", "-1"]).await,
        Reply::Error("ERR timeout is negative".into())
    );
    // The next command waits behind WAIT, in order.
    let replies = c
        .pipeline(&[vec!["WAIT", "1", "100"], vec!["GET", "k"]])
        .await;
    assert_eq!(replies, vec![Reply::Int(0), Reply::bulk("v")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowlog_records_slow_commands_as_the_client_saw_them() {
    let cluster = TestCluster::start_with(
        2,
        false,
        "[slowlog]\nlog_slower_than_us = 15000\nmax_len = 4\n",
        &[],
    )
    .await;
    let mut c = cluster.client().await;
    assert!(c.cmd(&["CLIENT", "SETNAME", "slowpoke"]).await.is_ok());
    assert!(c.cmd(&["SLOWLOG", "RESET"]).await.is_ok());
    assert!(c.cmd(&["SET", "fast", "1"]).await.is_ok());
    // A script that busy-waits 30 ms on the backend.
    let spin = "local t = redis.call('TIME') while true do local n = redis.call('TIME') \
                if (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 30000 then break end end return 1";
    assert_eq!(c.cmd(&["EVAL", spin, "1", "slowkey"]).await, Reply::Int(1));
    assert_eq!(c.cmd(&["SLOWLOG", "LEN"]).await, Reply::Int(1));
    let Reply::Array(entries) = c.cmd(&["SLOWLOG", "GET"]).await else {
        panic!("SLOWLOG GET is an array")
    };
    let Reply::Array(entry) = &entries[0] else {
        panic!()
    };
    assert_eq!(entry.len(), 6);
    let Reply::Int(micros) = entry[2] else {
        panic!()
    };
    assert!(micros >= 30_000, "{micros}");
    // Arguments are shortened to 128 bytes, as Redis does.
    let shortened = format!("{}... ({} more bytes)", &spin[..128], spin.len() - 128);
    assert_eq!(
        entry[3],
        Reply::Array(vec![
            Reply::bulk("EVAL"),
            Reply::bulk(&shortened),
            Reply::bulk("1"),
            Reply::bulk("slowkey")
        ])
    );
    assert_eq!(entry[5], Reply::bulk("slowpoke"));
    assert!(c.cmd(&["SLOWLOG", "RESET"]).await.is_ok());
    assert_eq!(c.cmd(&["SLOWLOG", "LEN"]).await, Reply::Int(0));
    assert_eq!(
        c.cmd(&["SLOWLOG", "GET", "-2"]).await,
        Reply::Error("ERR count should be greater than or equal to -1".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_the_proxy_reads_itself_are_refused_like_redis_refuses_them() {
    // Redis reads integers strictly (string2ll): no sign "+", no leading zeros or spaces, no
    // "-0". Each request is sent to the proxy and to one of its redis-servers directly; the
    // replies must be the same (the ones that succeed here succeed alike on both).
    let cluster = TestCluster::start(1).await;
    let mut proxy = cluster.client().await;
    let mut redis = cluster.master(0).await;
    let cases: &[&[&str]] = &[
        &["WAIT", "+1", "0"],
        &["WAIT", " 1", "0"],
        &["WAIT", "01", "0"],
        &["WAIT", "x", "0"],
        &["WAIT", "0", "+0"],
        &["WAIT", "0", "abc"],
        &["WAIT", "0", "-1"],
        &["WAIT", "0", "0"],
        &["WAIT", "0", "9223372036854775807"],
        &["WAIT", "0", "9223372036854775808"],
        &["SELECT", "01"],
        &["SELECT", "+0"],
        &["SELECT", "-0"],
        &["SELECT", " 0"],
        &["SELECT", "4294967296"],
        &["SELECT", "16"],
        &["SELECT", "-1"],
        &["SELECT", "2147483648"],
        &["SELECT", "15"],
        &["SELECT", "0"],
        &["HELLO", "03"],
        &["HELLO", "+3"],
        &["HELLO", "x"],
        &["HELLO", "4"],
        &["SLOWLOG", "GET", "+1"],
        &["SLOWLOG", "GET", "01"],
        &["SLOWLOG", "GET", "-2"],
        &["SLOWLOG", "GET", "x"],
        &["SLOWLOG", "GET", "1", "2"],
        &["SLOWLOG", "get", "1", "2"],
        &["SLOWLOG", "LEN", "2"],
    ];
    for &args in cases {
        let expected = redis.cmd(args).await;
        assert_eq!(proxy.cmd(args).await, expected, "{args:?}");
    }
    // Both refused the malformed ones: the table above does test refusals.
    assert!(matches!(
        redis.cmd(&["SELECT", "01"]).await,
        Reply::Error(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_texts_are_the_nodes_own() {
    let cluster = TestCluster::start(1).await;
    let mut proxy = cluster.client().await;
    let mut redis = cluster.master(0).await;
    for args in [["CLIENT", "HELP"], ["COMMAND", "HELP"]] {
        let expected = redis.cmd(&args).await;
        assert!(
            matches!(&expected, Reply::Array(lines) if lines.len() > 10),
            "{expected:?}"
        );
        assert_eq!(proxy.cmd(&args).await, expected, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_filters_by_type_and_id_like_redis() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let mut redis = cluster.master(0).await;
    // The argument rules and errors are Redis's.
    let cases: &[&[&str]] = &[
        &["CLIENT", "LIST", "x"],
        &["CLIENT", "LIST", "ID"],
        &["CLIENT", "LIST", "ID", "abc"],
        &["CLIENT", "LIST", "ID", "01"],
        &["CLIENT", "LIST", "TYPE"],
        &["CLIENT", "LIST", "TYPE", "foo"],
        &["CLIENT", "LIST", "TYPE", "normal", "x"],
        &["CLIENT", "LIST", "TYPE", "master"],
        &["CLIENT", "LIST", "type", "REPLICA"],
        &["CLIENT", "LIST", "ID", "-5", "999999"],
    ];
    for &args in cases {
        assert_eq!(c.cmd(args).await, redis.cmd(args).await, "{args:?}");
    }

    // A subscriber is of type pubsub, with its counts; the others are normal.
    let mut sub = cluster.client().await;
    let sub_id = sub.cmd(&["CLIENT", "ID"]).await.int();
    let my_id = c.cmd(&["CLIENT", "ID"]).await.int();
    sub.send_raw(&redshard_tests::client::encode_command(&[
        "SUBSCRIBE",
        "a",
        "b",
    ]))
    .await;
    sub.read().await;
    sub.read().await;
    sub.send_raw(&redshard_tests::client::encode_command(&[
        "PSUBSCRIBE",
        "p*",
    ]))
    .await;
    sub.read().await;
    let pubsub = c.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]).await.text();
    let lines: Vec<&str> = pubsub.lines().collect();
    assert_eq!(lines.len(), 1, "{pubsub}");
    assert!(lines[0].starts_with(&format!("id={sub_id} ")), "{pubsub}");
    assert!(lines[0].contains(" flags=P "), "{pubsub}");
    assert!(lines[0].contains(" sub=2 psub=1 ssub=0 "), "{pubsub}");
    let normal = c.cmd(&["CLIENT", "LIST", "TYPE", "normal"]).await.text();
    assert!(normal.contains(&format!("id={my_id} ")), "{normal}");
    assert!(!normal.contains(&format!("id={sub_id} ")), "{normal}");

    // IDs in the order given, repeats repeated, unknown ones skipped.
    let by_id = c
        .cmd(&[
            "CLIENT",
            "LIST",
            "ID",
            &sub_id.to_string(),
            "424242",
            &my_id.to_string(),
            &sub_id.to_string(),
        ])
        .await
        .text();
    let ids: Vec<&str> = by_id
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            format!("id={sub_id}"),
            format!("id={my_id}"),
            format!("id={sub_id}")
        ]
    );

    // Unsubscribed: normal again.
    sub.send_raw(&redshard_tests::client::encode_command(&["RESET"]))
        .await;
    let mut reset = sub.read().await;
    while reset != redshard_tests::Reply::Status("RESET".into()) {
        reset = sub.read().await;
    }
    let pubsub = c.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]).await.text();
    assert_eq!(pubsub, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_patterns_work_within_the_slot_and_are_refused_across_slots() {
    // A pattern names other keys: with the sorted key's hash tag before its '*' they are in
    // its slot and SORT answers as Redis does; without, they could be anywhere, and SORT
    // would read them on the wrong master, so it is refused like a cross-slot request.
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let oracle = redshard_tests::RedisServer::start();
    let mut redis = redshard_tests::Client::connect(oracle.addr()).await;
    let setup: &[&[&str]] = &[
        &["RPUSH", "{q}list", "3", "1", "2"],
        &["MSET", "{q}w_1", "30", "{q}w_2", "10", "{q}w_3", "20"],
        &["MSET", "{q}o_1", "one", "{q}o_2", "two", "{q}o_3", "three"],
        &["HSET", "{q}h_1", "f", "x"],
    ];
    for &args in setup {
        assert_eq!(c.cmd(args).await, redis.cmd(args).await, "{args:?}");
    }
    let same: &[&[&str]] = &[
        &["SORT", "{q}list", "BY", "{q}w_*"],
        &[
            "SORT", "{q}list", "BY", "{q}w_*", "GET", "{q}o_*", "GET", "#",
        ],
        &["SORT", "{q}list", "BY", "nosort", "GET", "{q}h_*->f"],
        &[
            "SORT_RO", "{q}list", "BY", "{q}w_*", "DESC", "GET", "{q}o_*",
        ],
        &["SORT", "{q}list", "LIMIT", "0", "2", "ALPHA"],
    ];
    for &args in same {
        let expected = redis.cmd(args).await;
        assert!(
            matches!(&expected, Reply::Array(items) if !items.is_empty()),
            "{args:?}"
        );
        assert_eq!(c.cmd(args).await, expected, "{args:?}");
    }
    for args in [
        &["SORT", "{q}list", "BY", "w_*"][..],
        &["SORT", "{q}list", "GET", "o_*"],
        &["SORT_RO", "{q}list", "BY", "{r}w_*"],
    ] {
        let Reply::Error(e) = c.cmd(args).await else {
            panic!("{args:?} must be refused")
        };
        assert!(e.starts_with("CROSSSLOT "), "{e}");
    }
    // Inside MULTI the refusal aborts the transaction, as CROSSSLOT does.
    let replies = c
        .pipeline(&[
            vec!["MULTI"],
            vec!["SORT", "{q}list", "BY", "w_*"],
            vec!["EXEC"],
        ])
        .await;
    assert!(
        matches!(&replies[1], Reply::Error(e) if e.starts_with("CROSSSLOT ")),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[2], Reply::Error(e) if e.starts_with("EXECABORT")),
        "{replies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_connection_commands_are_refused_as_by_a_standalone_redis_without_a_node() {
    // redshard is one standalone server to its clients: ASKING, READONLY and READWRITE get a
    // standalone Redis's answer, from the proxy itself.
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let commands = [
        vec!["ASKING"],
        vec!["READONLY"],
        vec!["READWRITE"],
        vec!["READONLY", "x"],
    ];
    let mut answers = Vec::new();
    for command in &commands {
        answers.push(c.cmd(command).await);
    }
    cluster
        .assert_never_ran(&["asking", "readonly", "readwrite"])
        .await;
    let mut direct = cluster.master(0).await;
    for (command, answer) in commands.iter().zip(answers) {
        assert_eq!(answer, direct.cmd(command).await, "{command:?}");
    }
    assert_eq!(
        c.cmd(&["READONLY"]).await,
        err("ERR This instance has cluster support disabled")
    );
    // Inside MULTI they are queued, and EXEC's reply holds the same error, as in Redis.
    let replies = c
        .pipeline(&[vec!["MULTI"], vec!["READWRITE"], vec!["EXEC"]])
        .await;
    assert_eq!(
        replies[2],
        Reply::Array(vec![err("ERR This instance has cluster support disabled")]),
        "{replies:?}"
    );
}

/// INFO says the proxy is not a cluster, as a standalone Redis does: tools read
/// `cluster_enabled` at start (redis-py's test suite does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_has_a_cluster_section_saying_cluster_mode_is_off() {
    let cluster = TestCluster::start(1).await;
    let mut c = cluster.client().await;
    for args in [vec!["INFO"], vec!["INFO", "cluster"], vec!["INFO", "all"]] {
        let Reply::Bulk(Some(info)) = c.cmd(&args).await else {
            panic!("{args:?}");
        };
        let info = String::from_utf8(info).unwrap();
        assert!(
            info.contains("# Cluster\r\ncluster_enabled:0\r\n"),
            "{args:?}: {info}"
        );
    }
    let Reply::Bulk(Some(info)) = c.cmd(&["INFO", "server"]).await else {
        panic!("INFO server");
    };
    assert!(!String::from_utf8(info).unwrap().contains("# Cluster"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_kill_and_function_kill_stop_a_running_script_on_whichever_master_runs_it() {
    // A node answers other clients (and SCRIPT KILL) only once a script has run this long.
    let cluster = TestCluster::start_with(2, false, "", &["--busy-reply-threshold", "100"]).await;
    let mut c = cluster.client().await;
    let notbusy = err("NOTBUSY No scripts in execution right now.");
    assert_eq!(c.cmd(&["SCRIPT", "KILL"]).await, notbusy);
    assert_eq!(c.cmd(&["FUNCTION", "KILL"]).await, notbusy);
    let lib = "#!lua name=spinlib\nredis.register_function{function_name='spin', callback=function(keys) while true do end end, flags={'no-writes'}}";
    assert_eq!(
        c.cmd(&["FUNCTION", "LOAD", lib]).await,
        Reply::bulk("spinlib")
    );
    for (run, kill) in [
        (
            vec!["EVAL", "while true do end", "1", "{spin}:k"],
            ["SCRIPT", "KILL"],
        ),
        (
            vec!["FCALL_RO", "spin", "1", "{spin}:k"],
            ["FUNCTION", "KILL"],
        ),
    ] {
        let mut runner = cluster.client().await;
        let running = tokio::spawn(async move { runner.cmd(&run).await });
        // NOTBUSY until the script runs; OK once it was stopped.
        let proxy = cluster.addr.to_string();
        wait_until(
            Duration::from_secs(10),
            "the kill to stop the script",
            || {
                let (proxy, notbusy) = (proxy.clone(), notbusy.clone());
                async move {
                    match Client::connect(proxy).await.cmd(&kill).await {
                        Reply::Status(ok) if ok == "OK" => true,
                        reply => {
                            assert_eq!(reply, notbusy, "{kill:?}");
                            false
                        }
                    }
                }
            },
        )
        .await;
        let Reply::Error(killed) = running.await.expect("the runner") else {
            panic!("the stopped script's client got no error");
        };
        assert!(killed.contains("killed by user"), "{killed}");
        // The shard serves again, through the lanes that queued behind the script.
        assert!(c.cmd(&["SET", "{spin}:k", "1"]).await.is_ok());
        assert_eq!(c.cmd(&["SCRIPT", "KILL"]).await, notbusy);
    }
}
