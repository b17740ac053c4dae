//! The operators' commands on every node, as on one server: CONFIG SET / RESETSTAT / REWRITE
//! and LATENCY RESET applied to every node (and to a node restarted later), MONITOR across all
//! shards, the ACL read commands over the proxy's users.

use redshard_tests::cluster::key_on;
use redshard_tests::{Reply, TestCluster};

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
            "user app on #{} ~* &* +@all -@dangerous -function|flush -function|restore -script|flush",
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
            Reply::bulk("+@all -@dangerous -function|flush -function|restore -script|flush"),
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
    // SETUSER and DELUSER change the proxy's users (see `acl_users`).
    assert!(c.cmd(&["ACL", "SETUSER", "x"]).await.is_ok());
    assert_eq!(c.cmd(&["ACL", "DELUSER", "x"]).await, Reply::Int(1));
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
            "%6\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n$9\r\npasswords\r\n*1\r\n$64\r\n{}\r\n$8\r\ncommands\r\n$65\r\n+@all -@dangerous -function|flush -function|restore -script|flush\r\n$4\r\nkeys\r\n$2\r\n~*\r\n$8\r\nchannels\r\n$2\r\n&*\r\n$9\r\nselectors\r\n*0\r\n",
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

/// `INFO persistence` field `field` of the node at `addr`, as a number.
async fn persistence(addr: &str, field: &str) -> i64 {
    redshard_tests::replication::info_field(addr, "persistence", field)
        .await
        .unwrap_or_else(|| panic!("no {field} on {addr}"))
        .parse()
        .unwrap_or_else(|e| panic!("{field} on {addr}: {e}"))
}

/// Waits until the node at `addr` has saved `saves` times in all and runs no save or
/// rewrite (none in progress, none scheduled).
async fn wait_saved(addr: &str, saves: i64) {
    let what = format!("{saves} saves and no child process on {addr}");
    redshard_tests::wait::wait_until(std::time::Duration::from_secs(10), &what, || async {
        persistence(addr, "rdb_saves").await == saves
            && persistence(addr, "rdb_bgsave_in_progress").await == 0
            && persistence(addr, "aof_rewrite_in_progress").await == 0
            && persistence(addr, "aof_rewrite_scheduled").await == 0
    })
    .await;
}

/// Waits until every master of `masters` has saved once more than `saves` says, and counts
/// that save in `saves`.
async fn each_saved_once_more(masters: &[String], saves: &mut [i64]) {
    for (m, saves) in masters.iter().zip(saves.iter_mut()) {
        *saves += 1;
        wait_saved(m, *saves).await;
    }
}

/// Starts a save on the first master directly (`first`), then sends `command` (SAVE or
/// BGSAVE) through the proxy (`c`): Redis's refusal, naming that master, while the other
/// master saved; then waits for both saves.
async fn refused_while_the_first_saves(
    first: &mut redshard_tests::Client,
    c: &mut redshard_tests::Client,
    command: &str,
    masters: &[String],
    saves: &mut [i64],
) {
    assert_eq!(
        first.cmd(&["BGSAVE"]).await,
        Reply::Status("Background saving started".into())
    );
    assert_eq!(
        error_of(&c.cmd(&[command]).await),
        format!(
            "ERR Background save already in progress (on {}; applied on 1 of 2 nodes)",
            masters[0]
        )
    );
    each_saved_once_more(masters, saves).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_bgsave_and_bgrewriteaof_run_on_every_master_as_on_one_server() {
    let extra = "[[user]]\nname = \"app\"\npassword = \"a-pw\"\naccess = \"no-dangerous\"\n";
    let cluster = TestCluster::start_with(2, true, extra, &[]).await;
    let masters: Vec<String> = cluster
        .masters
        .iter()
        .map(redshard_tests::RedisServer::addr)
        .collect();
    let replicas: Vec<String> = cluster
        .replicas
        .iter()
        .map(redshard_tests::RedisServer::addr)
        .collect();
    let mut c = cluster.client().await;
    for shard in 0..2 {
        for i in 0..2 {
            let key = key_on(2, shard, &format!("saved{i}"));
            assert!(c.cmd(&["SET", key.as_str(), "v"]).await.is_ok());
        }
    }
    let mut saves = Vec::new();
    for m in &masters {
        saves.push(persistence(m, "rdb_saves").await);
    }
    let mut replica_saves = Vec::new();
    for r in &replicas {
        replica_saves.push(persistence(r, "rdb_saves").await);
    }

    // One server's answer, and a save on every master (not on the replicas).
    assert_eq!(
        c.cmd(&["BGSAVE"]).await,
        Reply::Status("Background saving started".into())
    );
    each_saved_once_more(&masters, &mut saves).await;
    for (r, before) in replicas.iter().zip(&replica_saves) {
        assert_eq!(persistence(r, "rdb_saves").await, *before, "{r}");
    }
    // INFO persistence is the masters', merged; LASTSAVE their oldest save.
    assert_eq!(
        c.info_field("persistence", "rdb_bgsave_in_progress").await,
        Some("0".into())
    );
    assert_eq!(
        c.info_field("persistence", "rdb_saves").await,
        Some(saves.iter().sum::<i64>().to_string())
    );
    let mut oldest = i64::MAX;
    for m in &masters {
        let mut node = redshard_tests::Client::connect(m.as_str()).await;
        oldest = oldest.min(node.cmd(&["LASTSAVE"]).await.int());
    }
    assert_eq!(c.cmd(&["LASTSAVE"]).await, Reply::Int(oldest));
    assert_eq!(
        error_of(&c.cmd(&["BGSAVE", "NOW"]).await),
        "ERR syntax error"
    );
    assert_eq!(
        error_of(&c.cmd(&["BGSAVE", "SCHEDULE", "NOW"]).await),
        "ERR syntax error"
    );
    assert_eq!(
        c.cmd(&["BGREWRITEAOF"]).await,
        Reply::Status("Background append only file rewriting started".into())
    );
    for (m, saves) in masters.iter().zip(&saves) {
        wait_saved(m, *saves).await;
    }

    // A master already saving refuses with Redis's error, named; the others started.
    let mut first = redshard_tests::Client::connect(masters[0].as_str()).await;
    // Half a second per key: the first master's own save outlasts the proxy's request.
    assert!(first
        .cmd(&["CONFIG", "SET", "rdb-key-save-delay", "500000"])
        .await
        .is_ok());
    refused_while_the_first_saves(&mut first, &mut c, "BGSAVE", &masters, &mut saves).await;
    // BGSAVE SCHEDULE while a master rewrites its AOF: scheduled there, started on the other
    // master: the client hears that it is scheduled, and both masters save.
    assert_eq!(
        first.cmd(&["BGREWRITEAOF"]).await,
        Reply::Status("Background append only file rewriting started".into())
    );
    assert_eq!(
        c.cmd(&["BGSAVE", "SCHEDULE"]).await,
        Reply::Status("Background saving scheduled".into())
    );
    each_saved_once_more(&masters, &mut saves).await;

    // SAVE answers once every master saved, without blocking any: while the first master's
    // slow save runs, a read of its keys is answered.
    let saving = {
        let mut saver = cluster.client().await;
        tokio::spawn(async move { saver.cmd(&["SAVE"]).await })
    };
    redshard_tests::replication::wait_for_info(
        &masters[0],
        "persistence",
        "rdb_bgsave_in_progress",
        "1",
    )
    .await;
    let key = key_on(2, 0, "saved0");
    assert_eq!(c.cmd(&["GET", key.as_str()]).await, Reply::bulk("v"));
    assert!(
        !saving.is_finished(),
        "SAVE answered before the slow save ended"
    );
    assert!(saving.await.unwrap().is_ok());
    for (m, saves) in masters.iter().zip(&mut saves) {
        *saves += 1;
        assert_eq!(persistence(m, "rdb_saves").await, *saves, "{m}");
        assert_eq!(persistence(m, "rdb_bgsave_in_progress").await, 0, "{m}");
    }
    // A save running on a master refuses SAVE there, with Redis's error.
    refused_while_the_first_saves(&mut first, &mut c, "SAVE", &masters, &mut saves).await;

    // SAVE while a master rewrites its AOF: its save is scheduled behind the rewrite, and
    // SAVE answers once that save ended too.
    assert_eq!(
        first.cmd(&["BGREWRITEAOF"]).await,
        Reply::Status("Background append only file rewriting started".into())
    );
    assert!(c.cmd(&["SAVE"]).await.is_ok());
    for (m, saves) in masters.iter().zip(&mut saves) {
        *saves += 1;
        assert_eq!(persistence(m, "rdb_saves").await, *saves, "{m}");
        assert_eq!(persistence(m, "rdb_bgsave_in_progress").await, 0, "{m}");
    }
    assert_eq!(persistence(&masters[0], "aof_rewrite_in_progress").await, 0);

    // @dangerous, as in Redis.
    let mut app = cluster.client().await;
    assert!(app.cmd(&["AUTH", "app", "a-pw"]).await.is_ok());
    for command in ["SAVE", "BGSAVE", "BGREWRITEAOF", "LASTSAVE"] {
        assert_eq!(
            error_of(&app.cmd(&[command]).await),
            format!(
                "NOPERM User app has no permissions to run the '{}' command",
                command.to_ascii_lowercase()
            )
        );
    }
}

/// The node's role and its `REPLICAOF` / `SLAVEOF` command statistics.
async fn replication_trace(addr: &str) -> (Option<String>, Vec<String>) {
    let role = redshard_tests::replication::info_field(addr, "replication", "role").await;
    let mut direct = redshard_tests::Client::connect(addr).await;
    let stats = direct.cmd(&["INFO", "commandstats"]).await.text();
    let calls = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_replicaof:") || l.starts_with("cmdstat_slaveof:"))
        .map(|l| l.split(",usec=").next().unwrap_or_default().to_owned())
        .collect();
    (role, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaof_no_one_is_a_master_s_ok_and_a_master_address_is_refused() {
    let cluster = TestCluster::start_with(1, true, "", &[]).await;
    let nodes = [cluster.masters[0].addr(), cluster.replicas[0].addr()];
    let mut before = Vec::new();
    for node in &nodes {
        before.push(replication_trace(node).await);
    }
    let mut c = cluster.client().await;
    for (command, no, one) in [
        ("REPLICAOF", "NO", "ONE"),
        ("replicaof", "no", "one"),
        ("SLAVEOF", "No", "One"),
    ] {
        assert!(c.cmd(&[command, no, one]).await.is_ok(), "{command}");
    }
    assert_eq!(
        error_of(&c.cmd(&["REPLICAOF", "127.0.0.1", "6379"]).await),
        "ERR REPLICAOF host port is not allowed through redshard: the proxy is a master (REPLICAOF NO ONE answers OK) and its controller manages the nodes' replication; use redshard-admin to change the topology"
    );
    assert!(error_of(&c.cmd(&["SLAVEOF", "NO", "TWO"]).await).starts_with("ERR SLAVEOF host port "));
    // Redis's arity error (redis-py's `replicaof("NO ONE")` sends one argument).
    assert_eq!(
        error_of(&c.cmd(&["REPLICAOF", "NO ONE"]).await),
        "ERR wrong number of arguments for 'replicaof' command"
    );
    // The nodes never saw any of it: same role, no more REPLICAOF calls than the
    // controller's own.
    for (node, before) in nodes.iter().zip(&before) {
        assert_eq!(&replication_trace(node).await, before, "{node}");
    }
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_list_is_empty_as_the_proxy_s_hello_says() {
    let extra = "[[user]]\nname = \"app\"\npassword = \"a-pw\"\naccess = \"no-dangerous\"\n";
    let cluster = TestCluster::start_with(2, false, extra, &[]).await;
    let mut c = cluster.client().await;
    assert_eq!(c.cmd(&["MODULE", "LIST"]).await, Reply::Array(vec![]));
    let mut c3 = cluster.client().await;
    c3.cmd_resp3(&["HELLO", "3"]).await;
    assert_eq!(c3.cmd_resp3(&["MODULE", "LIST"]).await, b"*0\r\n");
    // The rest of MODULE stays refused.
    assert_eq!(
        error_of(&c.cmd(&["MODULE", "LOAD", "/tmp/none.so"]).await),
        "ERR MODULE LOAD is not allowed through redshard"
    );
    // @dangerous, as in Redis.
    let mut app = cluster.client().await;
    assert!(app.cmd(&["AUTH", "app", "a-pw"]).await.is_ok());
    assert_eq!(
        error_of(&app.cmd(&["MODULE", "LIST"]).await),
        "NOPERM User app has no permissions to run the 'module|list' command"
    );
    cluster.assert_never_ran(&["module|list"]).await;
}
