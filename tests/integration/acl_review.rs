//! Attacks on the proxy's ACL users, each compared with what a redis-server 7.0.15 answers
//! the same user and request.

use redshard_tests::{Client, RedisServer, Reply, TestCluster};

/// The same `ACL SETUSER` on both, then a client of each authenticated as that user.
async fn as_user(
    direct: &mut Client,
    proxy: &mut Client,
    redis: &RedisServer,
    cluster: &TestCluster,
    rules: &[&str],
) -> (Client, Client) {
    let mut setuser = vec!["ACL", "SETUSER", "attacker", "reset", "on", ">pw"];
    setuser.extend_from_slice(rules);
    assert_eq!(direct.cmd(&setuser).await, Reply::Status("OK".into()));
    assert_eq!(proxy.cmd(&setuser).await, Reply::Status("OK".into()));
    let mut d = Client::connect(redis.addr()).await;
    let mut p = cluster.client().await;
    for c in [&mut d, &mut p] {
        assert_eq!(
            c.cmd(&["AUTH", "attacker", "pw"]).await,
            Reply::Status("OK".into())
        );
    }
    (d, p)
}

/// SORT's BY and GET patterns form key names the key check never sees: Redis refuses them
/// to a user who may not read every key, or `SORT list GET secret_*` reads any key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_by_and_get_patterns_need_access_to_every_key() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(1).await;
    let mut direct = Client::connect(redis.addr()).await;
    let mut proxy = cluster.client().await;
    for c in [&mut direct, &mut proxy] {
        assert_eq!(c.cmd(&["RPUSH", "{t}list", "1"]).await, Reply::Int(1));
        assert!(c.cmd(&["SET", "{t}secret_1", "hidden"]).await.is_ok());
        assert!(c.cmd(&["SET", "{t}w_1", "1"]).await.is_ok());
    }
    let (mut d, mut p) = as_user(
        &mut direct,
        &mut proxy,
        &redis,
        &cluster,
        &["~{t}list", "&*", "+@all"],
    )
    .await;
    let get =
        Reply::Error("ERR GET option of SORT denied due to insufficient ACL permissions.".into());
    let by =
        Reply::Error("ERR BY option of SORT denied due to insufficient ACL permissions.".into());
    let cases: &[(&[&str], &Reply)] = &[
        (
            &["SORT", "{t}list", "BY", "nosort", "GET", "{t}secret_*"],
            &get,
        ),
        (&["SORT_RO", "{t}list", "GET", "{t}secret_*"], &get),
        (&["SORT", "{t}list", "GET", "#"], &get),
        (&["SORT", "{t}list", "BY", "{t}w_*"], &by),
        (
            &[
                "SORT_RO",
                "{t}list",
                "DESC",
                "BY",
                "{t}secret_*",
                "GET",
                "#",
            ],
            &by,
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(&d.cmd(request).await, *expected, "redis: {request:?}");
        assert_eq!(&p.cmd(request).await, *expected, "proxy: {request:?}");
    }
    // What needs no pattern still works.
    for c in [&mut d, &mut p] {
        assert_eq!(
            c.cmd(&["SORT", "{t}list", "BY", "nosort"]).await,
            Reply::Array(vec![Reply::bulk("1")])
        );
    }
    // Patterns need a selector that allows the SORT and reads every key (`*` itself).
    for (rules, allowed) in [
        (&["~{t}list", "(%R~* +sort)", "&*", "+@all"][..], true),
        (&["~{t}list", "(%R~* +get)", "&*", "+@all"], false),
        (&["~{t}list", "%W~*", "&*", "+@all"], false),
    ] {
        let (mut d, mut p) = as_user(&mut direct, &mut proxy, &redis, &cluster, rules).await;
        let expected = if allowed {
            Reply::Array(vec![Reply::bulk("hidden")])
        } else {
            get.clone()
        };
        let request = ["SORT", "{t}list", "BY", "nosort", "GET", "{t}secret_*"];
        assert_eq!(d.cmd(&request).await, expected, "redis: {rules:?}");
        assert_eq!(p.cmd(&request).await, expected, "proxy: {rules:?}");
    }
}

/// SORT's sorted key is read and its STORE key written (Redis's `sortGetKeys` flags them so):
/// a user who may only read may sort, as on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_needs_read_on_the_sorted_key_and_write_on_the_destination_only() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(1).await;
    let mut direct = Client::connect(redis.addr()).await;
    let mut proxy = cluster.client().await;
    for c in [&mut direct, &mut proxy] {
        assert_eq!(c.cmd(&["RPUSH", "{t}list", "2", "1"]).await, Reply::Int(2));
    }
    let (mut d, mut p) = as_user(
        &mut direct,
        &mut proxy,
        &redis,
        &cluster,
        &["%R~{t}list", "%W~{t}dst", "&*", "+@all"],
    )
    .await;
    let sorted = Reply::Array(vec![Reply::bulk("1"), Reply::bulk("2")]);
    for (c, nokey) in [
        (
            &mut d,
            "NOPERM this user has no permissions to access one of the keys used as arguments",
        ),
        (&mut p, "NOPERM No permissions to access a key"),
    ] {
        assert_eq!(c.cmd(&["SORT", "{t}list"]).await, sorted);
        assert_eq!(
            c.cmd(&["SORT", "{t}list", "LIMIT", "0", "2", "STORE", "{t}dst"])
                .await,
            Reply::Int(2)
        );
        assert_eq!(
            c.cmd(&["SORT", "{t}list", "STORE", "{t}list"]).await,
            Reply::Error(nokey.into())
        );
    }
}

/// A subscriber's connection, authenticated as `user` / `pw`, subscribed to `channel`.
async fn subscriber(mut c: Client, user: &str, channel: &str) -> Client {
    assert_eq!(
        c.cmd(&["AUTH", user, "pw"]).await,
        Reply::Status("OK".into())
    );
    c.send_raw(&redshard_tests::client::encode_command(&[
        "SUBSCRIBE",
        channel,
    ]))
    .await;
    assert_eq!(
        c.read().await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk(channel),
            Reply::Int(1)
        ])
    );
    c
}

/// Taking channels away from a user that had every channel (`&*`, Redis 7's usual user)
/// disconnects its clients subscribed to a channel it lost on redis-server 7.0.15; they must
/// not keep receiving messages of channels they may no longer read. Its subscribers of a
/// channel it keeps stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_every_channel_disconnects_the_user_s_subscribers() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(1).await;
    let mut direct = Client::connect(redis.addr()).await;
    let mut proxy = cluster.client().await;
    for c in [&mut direct, &mut proxy] {
        assert!(c
            .cmd(&["ACL", "SETUSER", "sub", "on", ">pw", "~*", "&*", "+@all"])
            .await
            .is_ok());
    }
    let mut on_redis = subscriber(Client::connect(redis.addr()).await, "sub", "news").await;
    let mut on_proxy = subscriber(cluster.client().await, "sub", "news").await;
    // A subscriber of a channel the user keeps stays, on both.
    let mut kept_on_redis = subscriber(Client::connect(redis.addr()).await, "sub", "other").await;
    let mut kept_on_proxy = subscriber(cluster.client().await, "sub", "other").await;
    for c in [&mut direct, &mut proxy] {
        assert!(c
            .cmd(&["ACL", "SETUSER", "sub", "resetchannels", "&other"])
            .await
            .is_ok());
        // A message published now must not reach the narrowed subscriber.
        c.cmd(&["PUBLISH", "news", "after"]).await;
        c.cmd(&["PUBLISH", "other", "still"]).await;
    }
    for (kept, server) in [
        (&mut kept_on_redis, "redis-server"),
        (&mut kept_on_proxy, "the proxy"),
    ] {
        assert_eq!(
            kept.read().await,
            Reply::Array(vec![
                Reply::bulk("message"),
                Reply::bulk("other"),
                Reply::bulk("still")
            ]),
            "{server} closed a subscriber of a channel the user keeps"
        );
    }
    assert_eq!(
        on_redis.try_read().await,
        None,
        "redis-server kept the subscriber"
    );
    assert_eq!(
        on_proxy.try_read().await,
        None,
        "the proxy kept the subscriber"
    );
}

/// Key patterns match as Redis's `stringmatchlen` does, odd classes included: the same
/// user asks `ACL DRYRUN ... GET key` of both for every pattern and key, and both must allow
/// the same keys (a proxy that matched more would give keys away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_patterns_match_the_keys_redis_matches() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(1).await;
    let mut direct = Client::connect(redis.addr()).await;
    let mut proxy = cluster.client().await;
    let patterns = [
        "a[b-]c", "a[bc]d", "a[^b]d", "a[c-a]d", "a\\*b", "a[\\]]b", "a[b", "a\\", "[]]", "[^]]x",
        "a**b", "*?*", "a[-b]c", "a[a-]", "[a-c-e]",
    ];
    let keys = [
        "a", "ab", "abc", "abd", "acd", "a*b", "axb", "a]b", "a^", "a[b", "a\\", "]", "^x", "a-c",
        "ad", "d", "-", "e",
    ];
    let mut differ = Vec::new();
    for pattern in patterns {
        let rule = format!("~{pattern}");
        for c in [&mut direct, &mut proxy] {
            assert!(c
                .cmd(&["ACL", "SETUSER", "globber", "reset", "on", "+get", &rule])
                .await
                .is_ok());
        }
        for key in keys {
            let dryrun = ["ACL", "DRYRUN", "globber", "GET", key];
            let on_redis = direct.cmd(&dryrun).await == Reply::Status("OK".into());
            let on_proxy = proxy.cmd(&dryrun).await == Reply::Status("OK".into());
            if on_redis != on_proxy {
                differ.push((pattern, key, on_redis, on_proxy));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "(pattern, key, redis, proxy): {differ:?}"
    );
}

/// A selector pattern ending in `)` (which Redis accepts) must not make the saved users
/// unreadable at the next start: the proxy came back with Redis's open `default` user
/// (`nopass`, every command), its password gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_default_password_whatever_the_selectors() {
    let saving = crate::acl_users::SavingProxy::new("");
    let proxy = saving.start().await;
    let mut c = proxy.client().await;
    assert!(c.cmd(&["AUTH", "start-pw"]).await.is_ok());
    assert!(c
        .cmd(&["ACL", "SETUSER", "default", "(~a) +get)"])
        .await
        .is_ok());
    assert!(c
        .cmd(&["ACL", "SETUSER", "app", "on", ">app-pw", "(~x) &y) +get)"])
        .await
        .is_ok());
    let before = c.cmd(&["ACL", "LIST"]).await;
    proxy.stop().await;

    let proxy = saving.start().await;
    let mut c = proxy.client().await;
    assert_eq!(
        c.cmd(&["SET", "k", "v"]).await,
        Reply::Error("NOAUTH Authentication required.".into())
    );
    assert!(c.cmd(&["AUTH", "start-pw"]).await.is_ok());
    assert_eq!(c.cmd(&["ACL", "LIST"]).await, before);
    let mut app = proxy.client().await;
    assert!(app.cmd(&["AUTH", "app", "app-pw"]).await.is_ok());
    proxy.stop().await;
}

/// EXEC checks the queued commands again, as Redis's `execCommand` does: taking a command or
/// a key away from the user between MULTI and EXEC refuses those commands in EXEC's reply
/// (logged with context `multi`), and the others run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_checks_the_queued_commands_again_after_a_user_change() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(2).await;
    let mut direct = Client::connect(redis.addr()).await;
    let mut proxy = cluster.client().await;
    let (mut d, mut p) = as_user(
        &mut direct,
        &mut proxy,
        &redis,
        &cluster,
        &["~{t}*", "&*", "+@all"],
    )
    .await;
    let changed = "NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: ";
    let nocmd = format!("{changed}no permission to execute the command or subcommand");
    let nokey = format!("{changed}no permission to touch the specified keys");
    for (admin, c) in [(&mut direct, &mut d), (&mut proxy, &mut p)] {
        assert!(admin.cmd(&["ACL", "LOG", "RESET"]).await.is_ok());
        assert!(c.cmd(&["MULTI"]).await.is_ok());
        for request in [
            &["SET", "{t}a", "1"][..],
            &["GET", "{t}a"],
            &["SET", "{t}b", "2"],
            &["ECHO", "hi"],
        ] {
            assert_eq!(c.cmd(request).await, Reply::Status("QUEUED".into()));
        }
        assert!(admin
            .cmd(&["ACL", "SETUSER", "attacker", "-get", "resetkeys", "~{t}a"])
            .await
            .is_ok());
        assert_eq!(
            c.cmd(&["EXEC"]).await,
            Reply::Array(vec![
                Reply::Status("OK".into()),
                Reply::Error(nocmd.clone()),
                Reply::Error(nokey.clone()),
                Reply::bulk("hi"),
            ])
        );
        assert_eq!(admin.cmd(&["EXISTS", "{t}b"]).await, Reply::Int(0));
        let log = admin.cmd(&["ACL", "LOG"]).await;
        let entries: Vec<(String, String, String)> = log
            .items()
            .iter()
            .map(|e| {
                (
                    e.field("reason").text(),
                    e.field("context").text(),
                    e.field("object").text(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("key".into(), "multi".into(), "{t}b".into()),
                ("command".into(), "multi".into(), "get".into()),
            ]
        );
    }
}

/// In a fleet, what `ACL DELUSER` and a channel-narrowing `ACL SETUSER` on the leader do to
/// its own clients (disconnect them, as Redis does) happens on every other proxy too: a
/// deleted user's idle client and a narrowed user's subscriber on another proxy are
/// disconnected, not left reading messages of channels they lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_proxies_disconnect_deleted_and_narrowed_users_clients_too() {
    use redshard_proxy::Proxy;
    use redshard_tests::{wait_until, EtcdServer};
    use std::time::Duration;

    let etcd = EtcdServer::start();
    let master = RedisServer::start();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n\
         [cluster]\netcd = [\"{}\"]\nprefix = \"/aclreview\"\nlease_ttl_ms = 2000\n\
         [[shard]]\nname = \"s1\"\nmaster = \"{}\"\nreplicas = []\nslots = [\"0-16383\"]\n",
        etcd.addr(),
        master.addr()
    );
    let config = redshard_config::Config::from_toml_str(&text, "acl review").expect("config");
    redshard_tests::server::init_logs();
    let proxies = [
        Proxy::start(config.clone()).await.expect("proxy starts"),
        Proxy::start(config).await.expect("proxy starts"),
    ];
    let leader = crate::fleet::wait_leader(&[&proxies[0], &proxies[1]]).await;
    let other = &proxies[1 - leader];
    let mut admin = Client::connect_addr(proxies[leader].local_addr()).await;
    for user in ["gone", "narrowed"] {
        assert!(admin
            .cmd(&["ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all"])
            .await
            .is_ok());
    }
    wait_until(
        Duration::from_secs(10),
        "the users on the other proxy",
        || async { other.state().users.get("narrowed").is_some() },
    )
    .await;
    let mut idle = Client::connect_addr(other.local_addr()).await;
    assert!(idle.cmd(&["AUTH", "gone", "pw"]).await.is_ok());
    let mut sub = subscriber(
        Client::connect_addr(other.local_addr()).await,
        "narrowed",
        "news",
    )
    .await;

    assert_eq!(admin.cmd(&["ACL", "DELUSER", "gone"]).await, Reply::Int(1));
    assert!(admin
        .cmd(&["ACL", "SETUSER", "narrowed", "resetchannels", "&other"])
        .await
        .is_ok());
    wait_until(
        Duration::from_secs(10),
        "the changes on the other proxy",
        || async {
            other.state().users.get("gone").is_none()
                && other
                    .state()
                    .users
                    .lines()
                    .iter()
                    .any(|l| l.starts_with("user narrowed ") && l.contains("&other"))
        },
    )
    .await;
    // The follower closes their clients once it has the change (their sessions notice it
    // at their next turn), as the leader does.
    let mut publisher = Client::connect_addr(other.local_addr()).await;
    wait_until(
        Duration::from_secs(10),
        "the clients of the deleted and narrowed users closed",
        || async {
            let mut lister = Client::connect_addr(other.local_addr()).await;
            let Reply::Bulk(Some(list)) = lister.cmd(&["CLIENT", "LIST"]).await else {
                return false;
            };
            let list = String::from_utf8_lossy(&list).into_owned();
            !list.contains("user=gone ") && !list.contains("user=narrowed ")
        },
    )
    .await;
    publisher.cmd(&["PUBLISH", "news", "after"]).await;
    assert_eq!(sub.try_read().await, None, "the narrowed subscriber stayed");
    assert_eq!(
        idle.try_read().await,
        None,
        "the deleted user's client stayed"
    );
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

/// User names are bytes in Redis: two names that are not UTF-8 are two names. The proxy
/// keeps names as text, so it must not let one name stand for another (`\xfe` and `\xff`
/// both read as U+FFFD): AUTH, DELUSER, GETUSER as a name that no user has fail, as on
/// Redis, and SETUSER refuses such a name rather than merge it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_that_are_not_utf8_do_not_stand_for_other_users() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(1).await;
    let mut direct = Client::connect(redis.addr()).await;
    let mut proxy = cluster.client().await;
    let setuser: [&[u8]; 8] = [
        b"ACL", b"SETUSER", b"\xff", b"on", b">pw", b"~*", b"&*", b"+@all",
    ];
    assert!(direct.cmd(&setuser).await.is_ok());
    assert_eq!(
        proxy.cmd(&setuser).await,
        Reply::Error("ERR redshard: user names must be UTF-8".into())
    );
    // A user whose name is U+FFFD itself, as the lossy text of both would be.
    let lossy = "\u{fffd}";
    assert!(proxy
        .cmd(&["ACL", "SETUSER", lossy, "on", ">pw", "~*", "&*", "+@all"])
        .await
        .is_ok());
    let others = [Client::connect(redis.addr()).await, cluster.client().await];
    for (c, mut other) in [&mut direct, &mut proxy].into_iter().zip(others) {
        assert_eq!(
            other.cmd(&[&b"AUTH"[..], b"\xfe", b"pw"]).await,
            Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
        );
        assert_eq!(
            c.cmd(&[&b"ACL"[..], b"GETUSER", b"\xfe"]).await,
            Reply::Bulk(None)
        );
        assert_eq!(
            c.cmd(&[&b"ACL"[..], b"DELUSER", b"\xfe"]).await,
            Reply::Int(0)
        );
    }
    assert!(!proxy
        .cmd(&["ACL", "GETUSER", lossy])
        .await
        .items()
        .is_empty());
}
