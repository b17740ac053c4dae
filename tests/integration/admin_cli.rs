//! `redshard-admin` against a real proxy (started in-process) and real redis-server nodes:
//! exit codes and output of each verb. The binary is the one cargo built next to this test
//! binary (`cargo test --workspace` builds it; see [`redshard_tests::binary`]).

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redshard_control::migrate::MigrationState;
use redshard_tests::binary;
use redshard_tests::cluster::CrashableProxy;
use redshard_tests::replication::wait_until;
use redshard_tests::workload::{assert_keys_where_they_belong, assert_replicas_equal, Traffic};
use redshard_tests::{RedisServer, Reply, TestCluster};

/// What one run of the CLI gave.
#[derive(Debug)]
pub(crate) struct Run {
    /// The exit code.
    pub(crate) code: i32,
    /// Standard output.
    pub(crate) out: String,
    /// Standard error.
    pub(crate) err: String,
}

/// Runs `redshard-admin -p PORT args...` with `stdin` as input and `env` set.
pub(crate) async fn cli(
    admin: SocketAddr,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> Run {
    let port = admin.port().to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port];
    all.extend_from_slice(args);
    cli_with(&all, stdin, env).await
}

/// Runs `redshard-admin args...` (no connection flags) with `stdin` as input and `env` set.
async fn cli_with(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(binary("redshard-admin"));
    command
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("redshard-admin runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("stdin written");
        let output = child.wait_with_output().expect("redshard-admin ends");
        Run {
            code: output.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&output.stdout).into_owned(),
            err: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("the CLI task")
}

/// Runs `args` until `done` accepts the result, or panics after `timeout`.
async fn cli_until(
    admin: SocketAddr,
    args: &[&str],
    timeout: Duration,
    done: impl Fn(&Run) -> bool,
) -> Run {
    let deadline = Instant::now() + timeout;
    loop {
        let run = cli(admin, args, "", &[]).await;
        if done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} never satisfied: {run:?}"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_info_on_a_healthy_cluster() {
    let mut cluster = TestCluster::start_with(2, true, "", &[]).await;
    let admin = cluster.start_admin().await;
    let mut c = cluster.client().await;
    for i in 0..10 {
        assert!(c.cmd(&["SET", &format!("k{i}"), "v"]).await.is_ok());
    }
    let run = cli_until(admin, &["check"], Duration::from_secs(10), |r| r.code == 0).await;
    assert!(run.out.contains(">>> Performing Cluster Check"), "{run:?}");
    assert!(
        run.out
            .contains(&format!("M: s1 {} (up)", cluster.masters[0].addr())),
        "{run:?}"
    );
    assert!(
        run.out.contains("   slots:[0-8191] (8192 slots) master"),
        "{run:?}"
    );
    assert!(
        // `lag 0` (mirrored writes) or `offset N, lag N bytes` (Redis replication).
        run.out.contains(&format!(
            "S: {} replicates s1 (in-sync, up, {}",
            cluster.replicas[0].addr(),
            if cluster.redis_replication() {
                "offset "
            } else {
                "lag 0)"
            }
        )),
        "{run:?}"
    );
    assert!(run.out.contains("[OK] No slots are migrating."), "{run:?}");
    assert!(run.out.contains("[OK] All 16384 slots covered."), "{run:?}");
    assert!(!run.out.contains("[ERR]"), "{run:?}");

    let run = cli(admin, &["info"], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let line = format!("s2 {} (up) -> ", cluster.masters[1].addr());
    assert!(run.out.contains(&line), "{run:?}");
    assert!(
        run.out.contains("| 8192 slots | 1 replica (1 in-sync)."),
        "{run:?}"
    );
    assert!(
        run.out.contains(&format!(
            "[OK] 10 keys in 2 masters (epoch {}).",
            cluster.topology().epoch
        )),
        "{run:?}"
    );

    let run = cli(admin, &["migrations"], "", &[]).await;
    assert_eq!((run.code, run.out.trim()), (0, "No migrations."), "{run:?}");

    let run = cli(admin, &["commands"], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out
            .contains("\nADDREPLICA <shard-or-master-addr> <addr>\n"),
        "{run:?}"
    );
    assert!(run.out.contains("\nCOMMANDS\n"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_non_zero_naming_each_problem() {
    let mut cluster = TestCluster::start_with(2, true, "", &[]).await;
    let admin = cluster.start_admin().await;
    cli_until(admin, &["check"], Duration::from_secs(10), |r| r.code == 0).await;
    // A replica that dies; then a master without an in-sync replica that answers.
    let replica = cluster.replicas[1].addr();
    cluster.replicas[1].kill();
    let run = cli_until(admin, &["check"], Duration::from_secs(10), |r| r.code == 1).await;
    assert!(
        run.out
            .contains(&format!("[ERR] Replica {replica} of shard s2 is")),
        "{run:?}"
    );
    let master = cluster.masters[1].addr();
    cluster.masters[1].kill();
    let run = cli_until(admin, &["check"], Duration::from_secs(10), |r| {
        r.out.contains("Not all 16384 slots are covered")
    })
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.out
            .contains(&format!("[ERR] Master {master} of shard s2 is down")),
        "{run:?}"
    );
    assert!(
        !run.out.contains("[OK] All 16384 slots covered."),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_added_and_removed_with_the_cluster_verbs() {
    let mut cluster = TestCluster::start_with(2, false, "", &[]).await;
    let admin = cluster.start_admin().await;
    let master = RedisServer::start();
    let replica = RedisServer::start();

    let run = cli(admin, &["add-node", &master.addr()], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out.contains(&format!(
            "[OK] New shard s3 with master {} added",
            master.addr()
        )),
        "{run:?}"
    );
    assert!(
        run.out.contains("rebalance --cluster-use-empty-masters"),
        "{run:?}"
    );

    let run = cli(
        admin,
        &[
            "add-node",
            &replica.addr(),
            "--cluster-slave",
            "--cluster-master-id",
            &master.addr(),
        ],
        "",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out.contains(&format!(
            "[OK] Replica {} of shard s3 is in sync.",
            replica.addr()
        )),
        "{run:?}"
    );

    // The master first: refused with the order to follow.
    let run = cli(admin, &["del-node", &master.addr()], "", &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.err.contains("remove the replica first"), "{run:?}");
    let run = cli(admin, &["del-node", &replica.addr()], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out.contains(&format!(
            "[OK] Replica {} of shard s3 removed.",
            replica.addr()
        )),
        "{run:?}"
    );
    let run = cli(admin, &["del-node", &master.addr()], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.out.contains("[OK] Shard s3 and its master"), "{run:?}");

    // A master that owns slots cannot go.
    let run = cli(admin, &["del-node", &cluster.masters[0].addr()], "", &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.err.contains("hand the slots back first"), "{run:?}");
    let run = cli(admin, &["add-node", "127.0.0.1:1", "--name", "x"], "", &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.err.contains("does not answer"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_come_from_a_or_rediscli_auth() {
    let mut cluster = TestCluster::start_with(1, false, "admin_password = \"pw\"\n", &[]).await;
    let admin = cluster.start_admin().await;
    let run = cli(admin, &["migrations"], "", &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.err.contains("NOAUTH"), "{run:?}");
    let run = cli(admin, &["-a", "bad", "migrations"], "", &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.err.contains("AUTH failed: WRONGPASS"), "{run:?}");
    let run = cli(admin, &["-a", "pw", "migrations"], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = cli(admin, &["migrations"], "", &[("REDISCLI_AUTH", "pw")]).await;
    assert_eq!(run.code, 0, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_is_found_without_a_password() {
    let master = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let text = redshard_tests::cluster::config_text(
        &[master.addr()],
        &[],
        &format!(
            "metrics_listen = \"off\"\nadmin_socket = \"{}\"\n",
            path.display()
        ),
    );
    let config = redshard_config::Config::from_toml_str(&text, "test.toml").unwrap();
    let proxy = redshard_proxy::Proxy::start(config).await.unwrap();
    let socket = path.to_str().unwrap();
    let run = cli_with(&["check"], "", &[("REDSHARD_ADMIN_SOCKET", socket)]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.out.contains("All 16384 slots covered"), "{run:?}");
    let run = cli_with(&["-s", socket, "info"], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    proxy.shutdown(Duration::from_secs(2)).await;
    let run = cli_with(&["-s", socket, "info"], "", &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.err.contains("admin socket"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_admin_port_is_reported_as_full() {
    let mut cluster = TestCluster::start_with(1, false, "admin_password = \"pw\"\n", &[]).await;
    let admin = cluster.start_admin().await;
    let mut operators = Vec::new();
    for _ in 0..redshard_proxy::admin::MAX_ADMIN_CLIENTS {
        let mut c = redshard_tests::Client::connect_addr(admin).await;
        assert!(c.cmd(&["AUTH", "pw"]).await.is_ok());
        operators.push(c);
    }
    let run = cli(admin, &["-a", "pw", "info"], "", &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.err.contains("max number of clients reached"), "{run:?}");
    assert!(!run.err.contains("AUTH failed"), "{run:?}");
    operators.pop();
    // The freed place is found again once the proxy has seen the close.
    cli_until(
        admin,
        &["-a", "pw", "info"],
        Duration::from_secs(10),
        |run| run.code == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_rebalance_plan_and_reshard_prompt() {
    let mut cluster = TestCluster::start_with(1, true, "", &[]).await;
    let admin = cluster.start_admin().await;
    cli_until(admin, &["check"], Duration::from_secs(10), |r| r.code == 0).await;
    let run = cli(admin, &["failover", "s1"], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out.contains(&format!(
            "[OK] {} is the master of shard s1 now; {} stays an in-sync replica.",
            cluster.replicas[0].addr(),
            cluster.masters[0].addr()
        )),
        "{run:?}"
    );

    let empty = RedisServer::start();
    assert_eq!(
        cli(
            admin,
            &["add-node", &empty.addr(), "--name", "new"],
            "",
            &[]
        )
        .await
        .code,
        0
    );
    let run = cli(admin, &["rebalance"], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out
            .contains("*** No rebalancing needed! All shards are within the 2.00% threshold."),
        "{run:?}"
    );
    let run = cli(
        admin,
        &[
            "rebalance",
            "--cluster-use-empty-masters",
            "--cluster-simulate",
        ],
        "",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.out.contains("s1: 16384 -> 8192 slots"), "{run:?}");
    assert!(
        run.out
            .contains(">>> Moving 8192 slots from s1 to new (8192-16383)"),
        "{run:?}"
    );
    assert!(run.out.contains("nothing was moved"), "{run:?}");

    // Without --cluster-yes the plan waits for "yes".
    let run = cli(
        admin,
        &[
            "reshard",
            "--cluster-from",
            "s1",
            "--cluster-to",
            "new",
            "--cluster-slots",
            "100",
        ],
        "no\n",
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.out.contains("Moving slots 16284-16383 from s1 to new"),
        "{run:?}"
    );
    assert!(
        run.out
            .contains("Do you want to proceed with the proposed reshard plan (yes/no)?"),
        "{run:?}"
    );
    assert!(run.err.contains("aborted: nothing was moved"), "{run:?}");
    let run = cli(
        admin,
        &[
            "reshard",
            "--cluster-from",
            "new",
            "--cluster-to",
            "s1",
            "--cluster-slots",
            "1",
        ],
        "",
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.err.contains("shard new owns 0 slots"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_watch_says_the_moves_resume_when_the_proxy_goes_away() {
    // A TCP admin port needs its password.
    const AUTH: &[(&str, &str)] = &[("REDISCLI_AUTH", "pw")];
    let dir = std::env::temp_dir().join(format!("redshard-cli-{}-rebalance", std::process::id()));
    let extra = format!(
        "topology_file = \"{}\"\nmetrics_listen = \"off\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_password = \"pw\"\nadmin_socket = \"off\"\n",
        dir.join("topology.toml").display()
    );
    let masters: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let empty = RedisServer::start();
    let text = redshard_tests::cluster::config_text(
        &masters.iter().map(RedisServer::addr).collect::<Vec<_>>(),
        &[],
        &extra,
    );
    let config = || redshard_config::Config::from_toml_str(&text, "test.toml").unwrap();
    let mut proxy = CrashableProxy::start(config()).await;
    let admin = proxy.proxy().admin_addr().expect("the admin port");
    let mut client = redshard_tests::Client::connect_addr(proxy.proxy().local_addr()).await;
    let sets: Vec<Vec<String>> = (0..30_000)
        .map(|i| vec!["SET".into(), format!("k{i}"), format!("v{i}")])
        .collect();
    for chunk in sets.chunks(1000) {
        for reply in client.pipeline(chunk).await {
            assert!(reply.is_ok(), "{reply:?}");
        }
    }
    assert_eq!(
        cli(
            admin,
            &["add-node", &empty.addr(), "--name", "s3"],
            "",
            AUTH
        )
        .await
        .code,
        0
    );
    let controller = std::sync::Arc::clone(proxy.proxy().controller());
    let watching = tokio::spawn(async move {
        cli(
            admin,
            &["rebalance", "--cluster-use-empty-masters", "--cluster-yes"],
            "",
            AUTH,
        )
        .await
    });
    wait_until(Duration::from_secs(30), "the first move to run", || async {
        let all = controller.migrations();
        all.len() == 2 && all[0].state == MigrationState::Running && all[0].keys_moved > 0
    })
    .await;
    drop(controller);
    proxy.crash().await;
    let run = watching.await.expect("the CLI ran");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.err.contains("the proxy went away while the moves ran")
            && run.err.contains("2 moves not finished")
            && run.err.contains("resume, in order, when it starts again")
            && run.err.contains("`redshard-admin migrations`"),
        "{run:?}"
    );
    assert!(!run.err.contains("[ERR] 127.0.0.1"), "{run:?}");

    // Started again, it lists both moves and finishes them.
    let proxy = CrashableProxy::start(config()).await;
    let admin = proxy.proxy().admin_addr().expect("the admin port");
    let run = cli(admin, &["migrations"], "", AUTH).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.out.lines().count(), 2, "{run:?}");
    let run = cli_until(
        admin,
        &["-a", "pw", "migrations"],
        Duration::from_secs(120),
        |r| r.out.lines().count() == 2 && r.out.lines().all(|l| l.contains(" done: ")),
    )
    .await;
    assert!(
        run.out.contains("s1 -> s3") && run.out.contains("s2 -> s3"),
        "{run:?}"
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Nodes that answer DEBUG DIGEST.
const DEBUG: &[&str] = &["--enable-debug-command", "yes"];

/// The tutorial's second half with the CLI: 3+3 → 4+4 → 3+3 under continuous traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_scales_out_and_back_in_under_load() {
    let mut cluster = TestCluster::start_with(3, true, "", DEBUG).await;
    let admin = cluster.start_admin().await;
    let mut c = cluster.client().await;
    let keys = 10_000;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
        let cmds: Vec<Vec<String>> = chunk
            .iter()
            .map(|i| match i % 3 {
                0 => vec!["SET".into(), format!("key:{i}"), format!("v{i}")],
                1 => vec![
                    "HSET".into(),
                    format!("key:{i}"),
                    "f".into(),
                    format!("v{i}"),
                ],
                _ => vec!["RPUSH".into(), format!("key:{i}"), format!("v{i}")],
            })
            .collect();
        for reply in c.pipeline(&cmds).await {
            assert!(!matches!(reply, Reply::Error(_)), "{reply:?}");
        }
    }
    cli_until(admin, &["check"], Duration::from_secs(10), |r| r.code == 0).await;
    let traffic = Traffic::start(&cluster, 4).await;

    // Scale out: a fourth master and its replica, then a quarter of the slots.
    let m4 = RedisServer::start_with(DEBUG);
    let r4 = RedisServer::start_with(DEBUG);
    let run = cli(admin, &["add-node", &m4.addr()], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.out.contains("New shard s4"), "{run:?}");
    let run = cli(
        admin,
        &[
            "add-node",
            &r4.addr(),
            "--cluster-slave",
            "--cluster-master-id",
            "s4",
        ],
        "",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = cli(
        admin,
        &["rebalance", "--cluster-use-empty-masters", "--cluster-yes"],
        "",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.out.matches("[OK] Moved ").count(), 3, "{run:?}");
    let run = cli_until(admin, &["check"], Duration::from_secs(10), |r| r.code == 0).await;
    assert_eq!(run.out.matches("(4096 slots) master").count(), 4, "{run:?}");
    assert_keys_where_they_belong(&cluster.topology()).await;

    // Scale in: the replica, the slots back, the master, then even shares again.
    let run = cli(admin, &["del-node", &r4.addr()], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = cli(
        admin,
        &[
            "reshard",
            "--cluster-from",
            &m4.addr(),
            "--cluster-to",
            "s1",
            "--cluster-slots",
            "4096",
            "--cluster-yes",
        ],
        "",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.out.contains("Ready to move 4096 slots."), "{run:?}");
    let run = cli(admin, &["del-node", &m4.addr()], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = cli(admin, &["rebalance", "--cluster-yes"], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.out.contains("[OK] Moved "), "{run:?}");
    let run = cli_until(admin, &["check"], Duration::from_secs(10), |r| r.code == 0).await;
    assert!(!run.out.contains("s4"), "{run:?}");

    let (last, errors) = traffic.finish().await;
    assert_eq!(errors, 0, "clients saw errors");
    for i in 0..keys {
        let key = format!("key:{i}");
        let got = match i % 3 {
            0 => c.cmd(&["GET", &key]).await,
            1 => c.cmd(&["HGET", &key, "f"]).await,
            _ => c.cmd(&["LINDEX", &key, "0"]).await,
        };
        assert_eq!(got, Reply::bulk(&format!("v{i}")), "{key}");
    }
    for (key, value) in last {
        assert_eq!(c.cmd(&["GET", &key]).await, Reply::bulk(&value), "{key}");
    }
    assert_keys_where_they_belong(&cluster.topology()).await;
    assert_replicas_equal(&cluster).await;
}
