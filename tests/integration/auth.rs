//! AUTH to the proxy (clients) and to the backends (the proxy's own credentials).

use redshard_tests::{Reply, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_must_authenticate_when_the_proxy_has_a_password() {
    let cluster = TestCluster::start_with(2, false, "password = \"s3cret\"\n", &[]).await;
    let mut c = cluster.client().await;
    let noauth = Reply::Error("NOAUTH Authentication required.".into());
    assert_eq!(c.cmd(&["GET", "k"]).await, noauth);
    assert_eq!(c.cmd(&["PING"]).await, noauth);
    assert_eq!(c.cmd(&["MGET", "a", "b"]).await, noauth);
    assert_eq!(c.cmd(&["INFO"]).await, noauth);
    assert_eq!(
        c.cmd(&["AUTH", "wrong"]).await,
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(
        c.cmd(&["AUTH", "someone", "s3cret"]).await,
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert!(c.cmd(&["AUTH", "s3cret"]).await.is_ok());
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("v"));
    // RESET logs the connection out again.
    assert_eq!(c.cmd(&["RESET"]).await, Reply::Status("RESET".into()));
    assert_eq!(c.cmd(&["GET", "k"]).await, noauth);
    // HELLO with AUTH, and AUTH default <pass>.
    let Reply::Array(_) = c
        .cmd(&["HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "me"])
        .await
    else {
        panic!("HELLO AUTH must succeed")
    };
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Reply::bulk("me"));
    let mut d = cluster.client().await;
    assert!(d.cmd(&["AUTH", "default", "s3cret"]).await.is_ok());
    assert_eq!(d.cmd(&["GET", "k"]).await, Reply::bulk("v"));
    // Nothing an unauthenticated client sent reached the backends: only the one SET ran.
    let mut calls = 0;
    for i in 0..2 {
        let stats = cluster.commandstats(i).await;
        // (INFO cannot be counted here: every lane connection asks `INFO server` itself.)
        assert!(!stats.contains("cmdstat_mget:"), "{stats}");
        calls += stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_set:calls=1,"))
            .count();
    }
    assert_eq!(calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_a_proxy_password_answers_like_redis() {
    // Without a password the default user is `nopass`: AUTH with its name and any password
    // logs in (as against Redis); AUTH with a password alone is an error; another user is not.
    let cluster = TestCluster::start(1).await;
    let mut c = cluster.client().await;
    let mut direct = redshard_tests::Client::connect(cluster.masters[0].addr()).await;
    let cases: &[&[&str]] = &[
        &["AUTH", "x"],
        &["AUTH", "default", "x"],
        &["AUTH", "default", ""],
        &["AUTH", "nobody", "x"],
        &["AUTH", "a", "b", "c"],
    ];
    for &args in cases {
        assert_eq!(c.cmd(args).await, direct.cmd(args).await, "{args:?}");
    }
    let Reply::Error(e) = c.cmd(&["AUTH", "x"]).await else {
        panic!()
    };
    assert!(
        e.starts_with("ERR AUTH <password> called without any password configured"),
        "{e}"
    );
    assert!(c.cmd(&["AUTH", "default", "pw"]).await.is_ok());
    let hello = c
        .cmd(&["HELLO", "2", "AUTH", "default", "pw", "SETNAME", "n"])
        .await;
    assert_eq!(*hello.field("proto"), Reply::Int(2), "{hello:?}");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Reply::bulk("n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_authenticates_to_password_protected_backends() {
    let cluster = TestCluster::start_with(
        2,
        false,
        "[backend]\npassword = \"backend-pw\"\n",
        &["--requirepass", "backend-pw"],
    )
    .await;
    let mut c = cluster.client().await;
    for i in 0..50 {
        assert!(c.cmd(&["SET", &format!("a:{i}"), "1"]).await.is_ok());
    }
    assert_eq!(c.cmd(&["DBSIZE"]).await, Reply::Int(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_authenticates_as_an_acl_user() {
    let cluster = TestCluster::start_with(
        2,
        false,
        "[backend]\nusername = \"proxy\"\npassword = \"proxy-pw\"\n",
        &["--user", "proxy", "on", ">proxy-pw", "~*", "&*", "+@all"],
    )
    .await;
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", "acl", "1"]).await.is_ok());
    assert_eq!(c.cmd(&["GET", "acl"]).await, Reply::bulk("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_backend_credentials_give_a_clear_error_not_a_hang() {
    let cluster = TestCluster::start_with(
        1,
        false,
        "[backend]\npassword = \"wrong\"\n",
        &["--requirepass", "right"],
    )
    .await;
    let mut c = cluster.client().await;
    let reply = c.cmd(&["GET", "k"]).await;
    let Reply::Error(e) = reply else {
        panic!("expected an error, got {reply:?}")
    };
    assert!(e.starts_with("ERR backend 127.0.0.1:"), "{e}");
    assert!(
        e.contains("credentials") || e.contains("unavailable"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_get_their_access_level() {
    let extra = "password = \"admin-pw\"\n\
        [[user]]\nname = \"reader\"\npassword = \"r-pw\"\naccess = \"read-only\"\n\
        [[user]]\nname = \"app\"\npassword = \"a-pw\"\naccess = \"no-dangerous\"\n\
        [[user]]\nname = \"ops\"\npassword = \"o-pw\"\n";
    let cluster = TestCluster::start_with(2, false, extra, &[]).await;
    let noperm = |user: &str, cmd: &str| {
        Reply::Error(format!(
            "NOPERM User {user} has no permissions to run the '{cmd}' command"
        ))
    };
    let mut admin = cluster.client().await;
    assert!(admin.cmd(&["AUTH", "admin-pw"]).await.is_ok());
    assert!(admin.cmd(&["SET", "k", "v"]).await.is_ok());

    let mut reader = cluster.client().await;
    assert!(reader.cmd(&["AUTH", "reader", "r-pw"]).await.is_ok());
    assert_eq!(reader.cmd(&["GET", "k"]).await, Reply::bulk("v"));
    assert_eq!(
        reader.cmd(&["MGET", "k", "x"]).await,
        Reply::Array(vec![Reply::bulk("v"), Reply::Bulk(None)])
    );
    assert_eq!(
        reader.cmd(&["SET", "k", "w"]).await,
        noperm("reader", "set")
    );
    assert_eq!(reader.cmd(&["DEL", "k"]).await, noperm("reader", "del"));
    assert_eq!(
        reader.cmd(&["EVAL", "return 1", "0"]).await,
        noperm("reader", "eval")
    );
    assert_eq!(
        reader.cmd(&["EVAL_RO", "return 1", "0"]).await,
        Reply::Int(1)
    );
    // Refused inside MULTI too, which then aborts.
    assert!(reader.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(reader.cmd(&["INCR", "n"]).await, noperm("reader", "incr"));
    assert!(matches!(reader.cmd(&["EXEC"]).await, Reply::Error(e) if e.starts_with("EXECABORT")));

    let mut app = cluster.client().await;
    assert!(app.cmd(&["AUTH", "app", "a-pw"]).await.is_ok());
    assert!(app.cmd(&["SET", "k2", "v"]).await.is_ok());
    assert_eq!(app.cmd(&["KEYS", "*"]).await, noperm("app", "keys"));
    assert_eq!(app.cmd(&["INFO"]).await, noperm("app", "info"));
    assert_eq!(
        app.cmd(&["CONFIG", "GET", "maxclients"]).await,
        noperm("app", "config|get")
    );

    let mut ops = cluster.client().await;
    assert!(ops.cmd(&["AUTH", "ops", "o-pw"]).await.is_ok());
    assert!(
        matches!(ops.cmd(&["KEYS", "*"]).await, Reply::Array(_)),
        "access defaults to all"
    );

    let mut stranger = cluster.client().await;
    assert_eq!(
        stranger.cmd(&["AUTH", "reader", "wrong"]).await,
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    // Refused commands never reached a backend.
    cluster.assert_never_ran(&["del", "eval", "incr"]).await;
}

/// A client of `cluster` whose connection comes from `source` (any 127.0.0.0/8 address: the
/// whole block is loopback on Linux).
async fn client_from(cluster: &TestCluster, source: &str) -> redshard_tests::Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(cluster.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    redshard_tests::Client::over(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_auth_slows_every_connection_of_its_address_and_no_other_address() {
    const STEP_MS: u64 = 50;
    let cluster = TestCluster::start_with(
        1,
        false,
        &format!("password = \"s3cret\"\n[limits]\nauth_failure_delay_ms = {STEP_MS}\n"),
        &[],
    )
    .await;
    let proxy = cluster.proxy.as_ref().unwrap();
    let throttled = || proxy.state().auth_throttle.throttled();
    let wrongpass =
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into());

    // One failure from 127.0.0.1 ...
    let mut first = client_from(&cluster, "127.0.0.1").await;
    assert_eq!(first.cmd(&["AUTH", "guess-0"]).await, wrongpass);
    assert_eq!(throttled(), 0, "nothing failed before it");

    // ... then ten guesses at once, each on a new connection (the per-connection delay
    // would answer them all after one step): answered one turn after another, at least
    // a step apart.
    let mut guessers = Vec::new();
    for _ in 0..10 {
        guessers.push(client_from(&cluster, "127.0.0.1").await);
    }
    let started = std::time::Instant::now();
    for (i, c) in guessers.iter_mut().enumerate() {
        let guess = format!("guess-{}", i + 1);
        if i % 5 == 4 {
            c.send_raw(&redshard_tests::client::encode_command(&[
                "HELLO", "2", "AUTH", "default", &guess,
            ]))
            .await;
        } else {
            c.send_raw(&redshard_tests::client::encode_command(&["AUTH", &guess]))
                .await;
        }
    }
    for c in &mut guessers {
        assert_eq!(c.read().await, wrongpass);
    }
    let span = started.elapsed();
    assert!(
        span >= std::time::Duration::from_millis(9 * STEP_MS),
        "ten parallel guesses took only {span:?}"
    );
    let after_guesses = throttled();
    assert!(
        (1..=10).contains(&after_guesses),
        "{after_guesses} attempts waited for their turn"
    );
    let metrics = redshard_proxy::metrics::scrape::render(proxy.state());
    assert!(
        metrics.contains(&format!("redshard_auth_throttled_total {after_guesses}\n")),
        "{metrics}"
    );

    // Another address is not slowed: its AUTH is answered without waiting for a turn.
    let mut other = client_from(&cluster, "127.0.0.2").await;
    assert_eq!(
        other.cmd(&["AUTH", "s3cret"]).await,
        Reply::Status("OK".into())
    );
    assert_eq!(other.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    assert_eq!(throttled(), after_guesses, "127.0.0.2 waited for no turn");

    // The right password from the guessing address waits for its turn too (answering it at
    // once would tell which of many parallel guesses was right), then logs in.
    let mut right = client_from(&cluster, "127.0.0.1").await;
    assert_eq!(
        right.cmd(&["AUTH", "s3cret"]).await,
        Reply::Status("OK".into())
    );
    assert_eq!(throttled(), after_guesses + 1);
    assert_eq!(right.cmd(&["PING"]).await, Reply::Status("PONG".into()));
}
