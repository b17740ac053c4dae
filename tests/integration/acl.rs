//! The proxy's ACL users on the backends: a Lua script cannot do what its client may not
//! (`allow_flush`, the `[[user]]` access levels), on masters and replicas, on nodes added or
//! restarted later.

use std::time::Duration;

use redshard_config::ReplicaState;
use redshard_tests::cluster::key_on;
use redshard_tests::replication::wait_until;
use redshard_tests::{Client, RedisServer, Reply, TestCluster};

use crate::mirror::replica_state;

/// Redis's refusal of a `redis.call()` the connection's ACL user may not make.
const SCRIPT_ACL: &str = "The user executing the script can't run this command or subcommand";

fn assert_script_refused(reply: &Reply, what: &str) {
    match reply {
        Reply::Error(e) => assert!(e.contains(SCRIPT_ACL), "{what}: {e}"),
        other => panic!("{what} must be refused by the node's ACL, got {other:?}"),
    }
}

fn noperm(user: &str, cmd: &str) -> Reply {
    Reply::Error(format!(
        "NOPERM User {user} has no permissions to run the '{cmd}' command"
    ))
}

async fn dbsize(addr: &str) -> i64 {
    Client::connect(addr.to_owned())
        .await
        .cmd(&["DBSIZE"])
        .await
        .int()
}

/// Whether the node at `addr` has the proxy's ACL user `name`.
async fn has_user(addr: &str, name: &str) -> bool {
    matches!(
        Client::connect(addr.to_owned())
            .await
            .cmd(&["ACL", "GETUSER", name])
            .await,
        Reply::Array(_)
    )
}

/// Writes `n` keys on every shard and waits until every replica holds them.
async fn fill(cluster: &TestCluster, n: usize) {
    let shards = cluster.masters.len();
    let mut c = cluster.client().await;
    for shard in 0..shards {
        for i in 0..n {
            let key = key_on(shards, shard, &format!("fill{i}"));
            assert!(c.cmd(&["SET", &key, "v"]).await.is_ok());
        }
    }
    for replica in &cluster.replicas {
        let addr = replica.addr();
        wait_until(Duration::from_secs(20), "replicas hold the keys", || {
            let addr = addr.clone();
            async move { dbsize(&addr).await == n as i64 }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_cannot_flush_or_swap_databases_without_allow_flush() {
    let cluster = TestCluster::start_with(2, true, "", &[]).await;
    fill(&cluster, 5).await;
    let mut c = cluster.client().await;
    // The proxy refuses FLUSHALL itself; a script calling it met no check before.
    for (script, keys) in [
        ("return redis.call('flushall')", vec!["0"]),
        ("return redis.call('flushdb')", vec!["0"]),
        ("return redis.call('swapdb', 0, 1)", vec!["1", "k"]),
    ] {
        let mut args = vec!["EVAL", script];
        args.extend(keys);
        assert_script_refused(&c.cmd(&args).await, script);
    }
    // SELECT and everything else a client may run still work inside scripts: a script's
    // SELECT changes its own database only, on the node of its keys.
    let other = key_on(2, 1, "other");
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "redis.call('select', 1) return redis.call('incr', KEYS[1])",
            "1",
            &other
        ])
        .await,
        Reply::Int(1)
    );
    assert!(c.cmd(&["SELECT", "1"]).await.is_ok());
    assert_eq!(c.cmd(&["GET", &other]).await, Reply::bulk("1"));
    assert_eq!(c.cmd(&["DEL", &other]).await, Reply::Int(1));
    assert!(c.cmd(&["SELECT", "0"]).await.is_ok());
    let n = key_on(2, 1, "n");
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "redis.call('select', 0) return redis.call('incr', KEYS[1])",
            "1",
            &n
        ])
        .await,
        Reply::Int(1)
    );
    let replica = cluster.replicas[1].addr();
    wait_until(Duration::from_secs(10), "the INCR mirrored", || {
        let replica = replica.clone();
        async move { dbsize(&replica).await == 6 }
    })
    .await;
    for (i, node) in cluster.masters.iter().chain(&cluster.replicas).enumerate() {
        let want = if i % 2 == 1 { 6 } else { 5 };
        assert_eq!(
            dbsize(&node.addr()).await,
            want,
            "{} kept its keys",
            node.addr()
        );
        let mut direct = Client::connect(node.addr()).await;
        assert!(direct.cmd(&["SELECT", "1"]).await.is_ok());
        assert_eq!(direct.cmd(&["DBSIZE"]).await, Reply::Int(0));
    }
    for replica in &cluster.replicas {
        assert_eq!(
            replica_state(&cluster, &replica.addr()),
            Some(ReplicaState::InSync)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_user_with_allow_flush_still_flushes_as_the_proxys_user() {
    let cluster = TestCluster::start_with(2, true, "allow_flush = true\n", &[]).await;
    fill(&cluster, 3).await;
    for node in cluster.masters.iter().chain(&cluster.replicas) {
        assert!(
            has_user(&node.addr(), "redshard-client").await,
            "{} has the proxy's user",
            node.addr()
        );
        // Only the levels some [[user]] has get a user.
        assert!(!has_user(&node.addr(), "redshard-readonly").await);
    }
    let mut c = cluster.client().await;
    assert!(c
        .cmd(&["EVAL", "return redis.call('flushall')", "0"])
        .await
        .is_ok());
    assert!(c.cmd(&["FLUSHALL"]).await.is_ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, Reply::Int(0));
    for replica in &cluster.replicas {
        let addr = replica.addr();
        wait_until(Duration::from_secs(10), "replicas flushed", || {
            let addr = addr.clone();
            async move { dbsize(&addr).await == 0 }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_users_cannot_change_server_state_directly_or_in_scripts() {
    let extra = "[[user]]\nname = \"reader\"\npassword = \"r-pw\"\naccess = \"read-only\"\n";
    let cluster = TestCluster::start_with(2, false, extra, &[]).await;
    let mut admin = cluster.client().await;
    assert!(admin.cmd(&["SET", "k", "v"]).await.is_ok());
    let loaded = admin.cmd(&["SCRIPT", "LOAD", "return 7"]).await;
    let mut r = cluster.client().await;
    assert!(r.cmd(&["AUTH", "reader", "r-pw"]).await.is_ok());
    assert_eq!(
        r.cmd(&["SCRIPT", "FLUSH"]).await,
        noperm("reader", "script|flush")
    );
    assert_eq!(
        r.cmd(&["SLOWLOG", "RESET"]).await,
        noperm("reader", "slowlog|reset")
    );
    assert_eq!(
        r.cmd(&["MEMORY", "PURGE"]).await,
        noperm("reader", "memory|purge")
    );
    assert_eq!(
        r.cmd(&["CLIENT", "NO-EVICT", "on"]).await,
        noperm("reader", "client|no-evict")
    );
    assert_eq!(
        r.cmd(&["EVAL", "return redis.call('set', KEYS[1], 'w')", "1", "k"])
            .await,
        noperm("reader", "eval")
    );
    // What its read-only scripts call is checked by the node.
    for call in [
        "redis.call('slowlog', 'reset')",
        "redis.call('memory', 'purge')",
    ] {
        assert_script_refused(&r.cmd(&["EVAL_RO", call, "0"]).await, call);
    }
    assert_eq!(
        r.cmd(&["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "k"])
            .await,
        Reply::bulk("v")
    );
    // In a transaction too.
    assert!(r.cmd(&["MULTI"]).await.is_ok());
    for command in [
        vec!["GET", "k"],
        vec!["PING"],
        vec!["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "k"],
        vec!["EVAL_RO", "return redis.call('memory', 'purge')", "0"],
    ] {
        assert_eq!(r.cmd(&command).await, Reply::Status("QUEUED".into()));
    }
    let Reply::Array(results) = r.cmd(&["EXEC"]).await else {
        panic!("EXEC runs")
    };
    assert_eq!(
        results[..3],
        [
            Reply::bulk("v"),
            Reply::Status("PONG".into()),
            Reply::bulk("v")
        ]
    );
    assert_script_refused(&results[3], "MEMORY PURGE in a transaction");
    // The scripts are still there, and an `all` client's scripts run with its rights.
    let Reply::Bulk(Some(sha)) = loaded else {
        panic!("SCRIPT LOAD: {loaded:?}")
    };
    let sha = String::from_utf8_lossy(&sha).into_owned();
    assert_eq!(r.cmd(&["EVALSHA_RO", &sha, "0"]).await, Reply::Int(7));
    assert!(matches!(
        admin
            .cmd(&["EVAL", "return redis.call('slowlog', 'reset')", "0"])
            .await,
        Reply::Status(_)
    ));
    cluster.assert_never_ran(&["script|flush"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dangerous_users_scripts_cannot_run_dangerous_commands() {
    let extra = "allow_flush = true\n\
        [[user]]\nname = \"app\"\npassword = \"a-pw\"\naccess = \"no-dangerous\"\n";
    let cluster = TestCluster::start_with(2, true, extra, &[]).await;
    fill(&cluster, 4).await;
    let mut app = cluster.client().await;
    assert!(app.cmd(&["AUTH", "app", "a-pw"]).await.is_ok());
    assert_eq!(
        app.cmd(&["SCRIPT", "FLUSH"]).await,
        noperm("app", "script|flush")
    );
    assert_eq!(
        app.cmd(&["FUNCTION", "FLUSH"]).await,
        noperm("app", "function|flush")
    );
    let key = key_on(2, 0, "nd");
    // A transaction holding a script runs as the level's user too.
    assert!(app.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        app.cmd(&["EVAL", "return redis.call('keys', '*')", "0"])
            .await,
        Reply::Status("QUEUED".into())
    );
    let Reply::Array(results) = app.cmd(&["EXEC"]).await else {
        panic!("EXEC runs")
    };
    assert_script_refused(&results[0], "KEYS in a transaction");
    for (script, keys) in [
        ("return redis.call('keys', '*')", vec!["0"]),
        ("return redis.call('flushall')", vec!["0"]),
        // A write before the refused call stays; the one after never runs, on the master
        // and on the replica alike.
        (
            "redis.call('incr', KEYS[1]) redis.call('flushdb') return redis.call('incr', KEYS[1])",
            vec!["1", key.as_str()],
        ),
    ] {
        let mut args = vec!["EVAL", script];
        args.extend(keys);
        assert_script_refused(&app.cmd(&args).await, script);
    }
    assert_eq!(
        app.cmd(&["EVAL", "return redis.call('incr', KEYS[1])", "1", &key])
            .await,
        Reply::Int(2)
    );
    // The `all` default user's scripts on the same lanes keep their rights.
    let mut ops = cluster.client().await;
    // (It counts the keys: their order differs between master and replica.)
    assert_eq!(
        ops.cmd(&["EVAL", "return #redis.call('keys', '*')", "0"])
            .await,
        Reply::Int(5)
    );
    for (i, (master, replica)) in cluster.masters.iter().zip(&cluster.replicas).enumerate() {
        // Shard 0 also holds the incremented key.
        let want = if i == 0 { 5 } else { 4 };
        assert_eq!(dbsize(&master.addr()).await, want, "nothing was flushed");
        let addr = replica.addr();
        wait_until(Duration::from_secs(10), "the replica equal", || {
            let addr = addr.clone();
            async move { dbsize(&addr).await == want }
        })
        .await;
        assert_eq!(
            replica_state(&cluster, &replica.addr()),
            Some(ReplicaState::InSync),
            "the replica ran the scripts as the master did"
        );
    }
    let mut replica = Client::connect(cluster.replicas[0].addr()).await;
    assert_eq!(replica.cmd(&["GET", &key]).await, Reply::bulk("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_added_or_restarted_later_get_the_proxys_users() {
    let mut cluster = TestCluster::start_with(1, true, "", &[]).await;
    let admin = cluster.start_admin().await;
    let added = RedisServer::start();
    let mut a = Client::connect_addr(admin).await;
    let reply = a.cmd(&["ADDREPLICA", "s1", &added.addr()]).await;
    assert!(!matches!(reply, Reply::Error(_)), "{reply:?}");
    let addr = added.addr();
    wait_until(
        Duration::from_secs(10),
        "the added node has the user",
        || {
            let addr = addr.clone();
            async move { has_user(&addr, "redshard-client").await }
        },
    )
    .await;
    // A restart forgets the users (no ACL file): the lanes' reconnection creates them again.
    cluster.replicas[0].restart();
    let addr = cluster.replicas[0].addr();
    wait_until(
        Duration::from_secs(20),
        "the restarted node has the user",
        || {
            let addr = addr.clone();
            async move { has_user(&addr, "redshard-client").await }
        },
    )
    .await;
    // With its rules: FLUSHALL refused (allow_flush is off), GET allowed.
    let mut direct = Client::connect(addr).await;
    let dryrun = direct
        .cmd(&["ACL", "DRYRUN", "redshard-client", "flushall"])
        .await;
    assert!(dryrun.text().contains("no permissions"), "{dryrun:?}");
    assert!(direct
        .cmd(&["ACL", "DRYRUN", "redshard-client", "get", "k"])
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_comes_back_after_a_failover_gets_the_proxys_users() {
    let mut cluster = TestCluster::start_with(1, true, "", &[]).await;
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    let old = cluster.masters[0].addr();
    let new = cluster.replicas[0].addr();
    // The probes must have seen every node up once.
    wait_until(Duration::from_secs(10), "every node probed up", || async {
        let proxy = cluster.proxy.as_ref().expect("proxy");
        [&old, &new].iter().all(|addr| {
            proxy
                .controller()
                .probe(&addr.parse().expect("a node address"))
                .is_up()
        })
    })
    .await;
    cluster.masters[0].kill();
    wait_until(Duration::from_secs(10), "the replica promoted", || async {
        let table = cluster.proxy.as_ref().expect("proxy").state().router.load();
        table.topology().shards[0].master.to_string() == new
    })
    .await;
    cluster.masters[0].restart();
    wait_until(
        Duration::from_secs(20),
        "the old master back in sync",
        || async { replica_state(&cluster, &old) == Some(ReplicaState::InSync) },
    )
    .await;
    assert!(has_user(&old, "redshard-client").await);
    // A script's FLUSHALL is refused on the new master and never reaches the old one.
    assert_script_refused(
        &c.cmd(&["EVAL", "return redis.call('flushall')", "0"]).await,
        "FLUSHALL after the failover",
    );
    assert!(c.cmd(&["SET", "k2", "v"]).await.is_ok());
    let addr = old.clone();
    wait_until(Duration::from_secs(10), "the old master mirrored", || {
        let addr = addr.clone();
        async move { dbsize(&addr).await == 2 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_user_without_acl_rights_gets_a_clear_error() {
    let server_args = [
        "--user",
        "default",
        "off",
        "--user",
        "traffic",
        "on",
        ">t-pw",
        "~*",
        "&*",
        "+@all",
        "-@dangerous",
    ];
    let extra = "[backend]\nusername = \"traffic\"\npassword = \"t-pw\"\n";
    let cluster = TestCluster::start_with(1, false, extra, &server_args).await;
    let mut c = cluster.client().await;
    let Reply::Error(e) = c.cmd(&["GET", "k"]).await else {
        panic!("the node must not serve client traffic as an unconfined user")
    };
    assert!(e.contains("ACL") && e.contains("manage_acl = false"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deleted_on_the_node_is_created_again() {
    let extra = "[[user]]\nname = \"app\"\npassword = \"a-pw\"\naccess = \"no-dangerous\"\n";
    let cluster = TestCluster::start_with(1, false, extra, &[]).await;
    let mut app = cluster.client().await;
    assert!(app.cmd(&["AUTH", "app", "a-pw"]).await.is_ok());
    let incr = ["EVAL", "return redis.call('incr', KEYS[1])", "1", "n"];
    assert_eq!(app.cmd(&incr).await, Reply::Int(1));
    // An operator removes the proxy's users (Redis also drops their connections).
    let mut node = cluster.master(0).await;
    assert_eq!(
        node.cmd(&["ACL", "DELUSER", "redshard-nodanger", "redshard-client"])
            .await,
        Reply::Int(2)
    );
    // The lanes' new connections create them again; a script in flight on a connection that
    // still switches to the deleted user fails with the reason, never runs unconfined.
    let addr = cluster.masters[0].addr();
    wait_until(Duration::from_secs(10), "scripts served again", || {
        let app = Client::connect_addr(cluster.addr);
        async move {
            let mut app = app.await;
            assert!(app.cmd(&["AUTH", "app", "a-pw"]).await.is_ok());
            match app
                .cmd(&["EVAL", "return redis.call('keys', '*')", "0"])
                .await
            {
                Reply::Error(e) if e.contains(SCRIPT_ACL) => true,
                Reply::Error(e) => {
                    assert!(
                        e.contains("proxy's ACL users") || e.contains("closed"),
                        "{e}"
                    );
                    false
                }
                other => panic!("KEYS ran unconfined: {other:?}"),
            }
        }
    })
    .await;
    assert!(has_user(&addr, "redshard-nodanger").await);
    assert!(has_user(&addr, "redshard-client").await);
}

/// Redis's refusal of a `redis.call()` on a key the connection's ACL user may not access.
const SCRIPT_KEY_ACL: &str = "can't access at least one of the keys";

/// A keyless script's refused key, as the client gets it: how to fix it, then the node's words.
fn assert_keyless_refused(reply: &Reply, what: &str) {
    match reply {
        Reply::Error(e) => assert!(
            e.starts_with("ERR redshard: a script called with no key may touch none")
                && e.contains("keyless_scripts = \"any-master\"")
                && e.contains(SCRIPT_KEY_ACL),
            "{what}: {e}"
        ),
        other => panic!("{what} answered {other:?}"),
    }
}

/// A script written for one server names its keys in its body and declares none: when the
/// text shows every key as a literal, the proxy routes it by them, as if declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_scripts_naming_their_keys_run_on_the_master_of_those_keys() {
    let shards = 3;
    let cluster = TestCluster::start_with(shards, false, "", &[]).await;
    let mut c = cluster.client().await;
    let keys: Vec<String> = (0..shards).map(|s| key_on(shards, s, "lit")).collect();
    for (shard, key) in keys.iter().enumerate() {
        let set = format!("return redis.call('SET', '{key}', ARGV[1])");
        assert!(
            c.cmd(&["EVAL", &set, "0", &format!("v{shard}")])
                .await
                .is_ok(),
            "{key}"
        );
        // Written on the master that owns the key, read back through any route.
        let mut master = cluster.master(shard).await;
        assert_eq!(
            master.cmd(&["GET", key]).await,
            Reply::bulk(&format!("v{shard}"))
        );
        let get = format!("return redis.call(\"get\", [[{key}]])");
        assert_eq!(
            c.cmd(&["EVAL_RO", &get, "0"]).await,
            Reply::bulk(&format!("v{shard}"))
        );
        assert_eq!(
            c.cmd(&["GET", key]).await,
            Reply::bulk(&format!("v{shard}"))
        );
    }
    // A key named in a comment is no key; one script's keys must share a slot.
    let commented = format!("-- redis.call('GET', '{}')\nreturn 1", keys[1]);
    assert_eq!(c.cmd(&["EVAL", &commented, "0"]).await, Reply::Int(1));
    let both = format!(
        "return redis.call('GET', '{}') .. redis.call('GET', '{}')",
        keys[0], keys[1]
    );
    match c.cmd(&["EVAL", &both, "0"]).await {
        Reply::Error(e) => assert!(e.starts_with("CROSSSLOT"), "{e}"),
        other => panic!("two shards' keys answered {other:?}"),
    }
    // Called by SHA1 once loaded (as clients' script helpers do), or once run by EVAL.
    let loaded = format!("return redis.call('GET', '{}')", keys[2]);
    let Reply::Bulk(Some(sha)) = c.cmd(&["SCRIPT", "LOAD", &loaded]).await else {
        panic!("SCRIPT LOAD");
    };
    let sha = String::from_utf8(sha).unwrap();
    assert_eq!(c.cmd(&["EVALSHA", &sha, "0"]).await, Reply::bulk("v2"));
    assert_eq!(c.cmd(&["EVALSHA_RO", &sha, "0"]).await, Reply::bulk("v2"));
    let ran = format!("return redis.call('GET', '{}') .. ''", keys[1]);
    assert_eq!(c.cmd(&["EVAL", &ran, "0"]).await, Reply::bulk("v1"));
    // Its SHA1 without loading it again: a script that touches no key computes it.
    let Reply::Bulk(Some(ran_sha)) = c
        .cmd(&["EVAL", "return redis.sha1hex(ARGV[1])", "0", &ran])
        .await
    else {
        panic!("sha1hex");
    };
    let ran_sha = String::from_utf8(ran_sha).unwrap();
    assert_eq!(c.cmd(&["EVALSHA", &ran_sha, "0"]).await, Reply::bulk("v1"));
    // SCRIPT FLUSH forgets them with the masters' caches.
    assert!(c.cmd(&["SCRIPT", "FLUSH"]).await.is_ok());
    match c.cmd(&["EVALSHA", &sha, "0"]).await {
        Reply::Error(e) => assert!(e.starts_with("NOSCRIPT"), "{e}"),
        other => panic!("a flushed script answered {other:?}"),
    }
    // In a transaction, the script's keys pick the transaction's master.
    let get = format!("return redis.call('GET', '{}')", keys[2]);
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["EVAL", &get, "0"]).await,
        Reply::Status("QUEUED".into())
    );
    assert_eq!(
        c.cmd(&["EXEC"]).await,
        Reply::Array(vec![Reply::bulk("v2")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_scripts_touch_no_key_by_default_and_any_master_is_a_choice() {
    let shards = 3;
    let cluster = TestCluster::start_with(shards, false, "", &[]).await;
    let mut c = cluster.client().await;
    for shard in 0..shards {
        let key = key_on(shards, shard, "lim:a");
        assert!(c.cmd(&["SET", &key, "1"]).await.is_ok());
    }
    // A script that needs every shard's keys (a rate limiter's reset): refused by the node,
    // never a count of one master's keys.
    let reset = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n = n + 1 end return n";
    assert_keyless_refused(
        &c.cmd(&["EVAL", reset, "0", "lim:*"]).await,
        "a keyless script deleting keys",
    );
    for shard in 0..shards {
        let key = key_on(shards, shard, "lim:a");
        assert_eq!(c.cmd(&["EXISTS", &key]).await, Reply::Int(1), "{key}");
    }
    // A key the text does not show (from ARGV here) cannot be routed.
    assert_keyless_refused(
        &c.cmd(&["EVAL", "return redis.call('GET', ARGV[1])", "0", "lim:a"])
            .await,
        "a keyless script reading a key",
    );
    // What touches no key runs; scripts that declare their keys are routed by them.
    assert_eq!(
        c.cmd(&["EVAL", "return #redis.call('TIME')", "0"]).await,
        Reply::Int(2)
    );
    let key = key_on(shards, 1, "lim:a");
    assert_eq!(
        c.cmd(&["EVAL", "return redis.call('GET', KEYS[1])", "1", &key])
            .await,
        Reply::bulk("1")
    );
    let lib = "#!lua name=keyless\nredis.register_function('peek', function(keys, args) return redis.call('GET', args[1]) end)";
    assert_eq!(
        c.cmd(&["FUNCTION", "LOAD", lib]).await,
        Reply::bulk("keyless")
    );
    assert_keyless_refused(
        &c.cmd(&["FCALL", "peek", "0", &key]).await,
        "a keyless function reading a key",
    );
    assert_eq!(
        c.cmd(&["FCALL", "peek", "1", &key, &key]).await,
        Reply::bulk("1")
    );
    assert!(has_user(&cluster.masters[0].addr(), "redshard-client-nokeys").await);
    drop(cluster);

    // The operator's other choice: keyless scripts run on a master with full rights.
    let cluster = TestCluster::start_with(
        shards,
        false,
        "[backend]\nkeyless_scripts = \"any-master\"\n",
        &[],
    )
    .await;
    let mut c = cluster.client().await;
    assert_eq!(
        c.cmd(&["EVAL", "return redis.call('GET', ARGV[1])", "0", "lim:a"])
            .await,
        Reply::Bulk(None)
    );
    assert!(!has_user(&cluster.masters[0].addr(), "redshard-client-nokeys").await);
}
