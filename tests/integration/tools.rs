//! Unmodified tools against the proxy: redis-cli and redis-benchmark.

use std::process::Command;

use redshard_tests::{Reply, TestCluster};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; install redis-tools"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_set_and_get() {
    let cluster = TestCluster::start(3).await;
    let port = cluster.addr.port().to_string();
    let cli = move |args: &'static [&'static str]| {
        let port = port.clone();
        tokio::task::spawn_blocking(move || {
            run(Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port])
                .args(args))
        })
    };
    assert_eq!(cli(&["set", "k", "v"]).await.unwrap().trim(), "OK");
    assert_eq!(cli(&["get", "k"]).await.unwrap().trim(), "v");
    assert_eq!(cli(&["mget", "k", "nope"]).await.unwrap(), "v\n\n");
    assert_eq!(cli(&["ping"]).await.unwrap().trim(), "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_pipelined_runs_without_errors() {
    let cluster = TestCluster::start(3).await;
    let port = cluster.addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("redis-benchmark").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "set,get,mset,lpush",
            "-P",
            "16",
            "-n",
            "20000",
            "-c",
            "20",
            "-r",
            "1000",
            "-q",
            "--csv",
        ]))
    })
    .await
    .unwrap();
    // --csv prints one line per test: "test","rps",...
    for test in ["SET", "GET", "MSET (10 keys)", "LPUSH"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("\"{test}\""))),
            "{test} missing in:\n{out}"
        );
    }
    assert!(!out.to_lowercase().contains("error"), "{out}");
    // The keys really went through: random keys key:000000000NNN spread over the shards.
    let mut c = cluster.client().await;
    let Reply::Int(n) = c.cmd(&["DBSIZE"]).await else {
        panic!()
    };
    assert!(n > 1000, "dbsize {n}");
    for i in 0..3 {
        let Reply::Int(n) = cluster.master(i).await.cmd(&["DBSIZE"]).await else {
            panic!()
        };
        assert!(n > 100, "master {i} has {n} keys");
    }
}
