//! The CLIENT commands as one Redis server answers them, over the proxy's own clients: LIST
//! and INFO fields (`cmd`, `idle`, `fd`, MULTI and tracking flags) compared with a
//! redis-server's, KILL by every filter, PAUSE/UNPAUSE, UNBLOCK, REPLY.

use std::collections::{BTreeMap, BTreeSet};

use redshard_tests::cluster::key_on;
use redshard_tests::{Reply, TestCluster};

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

/// Waits (10 s at most) until the CLIENT LIST line of the client named `name` shows
/// `field=want`, asked over a new connection each time; `what` names the wait.
async fn wait_client_field(cluster: &TestCluster, name: &str, field: &str, want: &str, what: &str) {
    redshard_tests::wait_until(std::time::Duration::from_secs(10), what, || async {
        let mut c = cluster.client().await;
        client_field(&mut c, name, field).await.as_deref() == Some(want)
    })
    .await;
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
    wait_client_field(
        &cluster,
        "writer",
        "cmd",
        "set",
        "the proxy read the paused SET",
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
        wait_client_field(&cluster, "blocked", "flags", "b", "the client is blocked").await;
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
        wait_client_field(&cluster, "blocked", "flags", "b", "the client is blocked").await;
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

/// `CONFIG SET timeout` is the proxy's own, as Redis's `timeout`: a client idle that long is
/// closed (parked or not), one subscribed or blocked in a command is not; the nodes keep
/// theirs at 0; CONFIG GET shows it; a bad value gets Redis's error; mixed with other
/// parameters, those still reach every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_timeout_closes_idle_clients_at_the_proxy() {
    let cluster = TestCluster::start_with(1, false, "[limits]\nidle_park_ms = 200\n", &[]).await;
    let mut admin = cluster.client().await;
    let mut idle = cluster.client().await;
    let mut subscriber = cluster.client().await;
    let mut blocked = cluster.client().await;
    assert_eq!(idle.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    assert!(
        subscriber
            .cmd(&["SUBSCRIBE", "timeout-ch"])
            .await
            .items()
            .len()
            == 3
    );
    blocked
        .send_raw(&redshard_tests::client::encode_command(&[
            "BLPOP",
            "timeout-list",
            "0",
        ]))
        .await;
    let error = admin.cmd(&["CONFIG", "SET", "timeout", "soon"]).await;
    assert_eq!(
        error,
        Reply::Error(
            "ERR CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't be parsed into an integer"
                .into()
        )
    );
    assert_eq!(
        admin
            .cmd(&["CONFIG", "SET", "timeout", "1", "maxmemory", "104857600"])
            .await,
        Reply::Status("OK".into())
    );
    assert_eq!(
        admin.cmd(&["CONFIG", "GET", "timeout"]).await,
        Reply::Array(vec![Reply::bulk("timeout"), Reply::bulk("1")])
    );
    let mut node = redshard_tests::Client::connect(cluster.masters[0].addr()).await;
    assert_eq!(
        node.cmd(&["CONFIG", "GET", "timeout"]).await.items()[1].text(),
        "0"
    );
    assert_eq!(
        node.cmd(&["CONFIG", "GET", "maxmemory"]).await.items()[1].text(),
        "104857600"
    );

    // The idle client is closed: its connection ends.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), idle.try_read())
        .await
        .expect("the idle client is closed within its timeout and a sweep");
    assert_eq!(closed, None);
    // (So is `admin`, idle meanwhile.) The subscribed and the blocked ones are still served.
    let mut admin = cluster.client().await;
    assert_eq!(
        admin.cmd(&["PUBLISH", "timeout-ch", "m"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        subscriber.read().await,
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("timeout-ch"),
            Reply::bulk("m")
        ])
    );
    assert_eq!(
        admin.cmd(&["LPUSH", "timeout-list", "x"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        blocked.read().await,
        Reply::Array(vec![Reply::bulk("timeout-list"), Reply::bulk("x")])
    );
    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "timeout", "0"]).await,
        Reply::Status("OK".into())
    );
}
