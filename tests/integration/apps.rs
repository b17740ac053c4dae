//! Applications written for one Redis, unmodified, through redshard with 3 shards and a replica
//! each, configured with the ready-made routing rules of `deploy/rules/`: python-rq, Celery
//! (broker and result backend), Django's Redis cache, BullMQ and Sidekiq. Each must pass as it does on
//! one redis-server, and every replica must equal its master afterwards.
//!
//! The applications are installed by `scripts/ensure-apps.sh` (which `scripts/test.sh` runs);
//! the scripts they run are in `tests/apps/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use redshard_tests::cluster::REDIS_REPLICATION;
use redshard_tests::workload::assert_replicas_equal;
use redshard_tests::TestCluster;
use tokio::process::Command;

/// The repository's root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// The ready-made rules `deploy/rules/<name>.toml`, as they are.
fn rules(name: &str) -> String {
    let path = repo().join("deploy/rules").join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// 3 shards with a replica each, configured with `rules`, under Redis replication (whatever
/// mode the suite runs in: proxy mirroring cannot keep the order of kombu's and BullMQ's
/// blocking pops across connections, one of its documented limits).
async fn cluster_with(rules: &str) -> TestCluster {
    let config = format!("{REDIS_REPLICATION}{rules}");
    let cluster = TestCluster::start_with(3, true, &config, &[]).await;
    cluster.wait_probes_up().await;
    cluster
}

/// Runs `command` (in `tests/apps/<dir>`) to its end within `limit`, and asserts it printed
/// `expected` on its last line of stdout.
async fn run_app(mut command: Command, dir: &str, limit: Duration, expected: &str) {
    command
        .current_dir(repo().join("tests/apps").join(dir))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let what = format!("{command:?}");
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e} (run scripts/ensure-apps.sh)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.lines().last() == Some(expected),
        "{what} failed ({}); is the app installed (scripts/ensure-apps.sh)?\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
}

fn python(script: &str, port: u16) -> Command {
    let mut command = Command::new("python3");
    command.arg(script).arg(port.to_string());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_rq_runs_its_jobs() {
    let cluster = cluster_with(&rules("rq")).await;
    let port = cluster.addr.port();
    run_app(
        python("rq_app.py", port),
        "",
        Duration::from_secs(120),
        "rq ok",
    )
    .await;
    assert_replicas_equal(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_runs_tasks_groups_chains_retries_and_chords() {
    let cluster = cluster_with(&rules("celery")).await;
    let url = format!("redis://{}/0", cluster.addr);
    let mut worker = Command::new("python3");
    worker
        .args([
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=warning",
        ])
        .env("REDSHARD_URL", &url)
        .current_dir(repo().join("tests/apps/celery"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut worker = worker
        .spawn()
        .unwrap_or_else(|e| panic!("celery worker: {e} (run scripts/ensure-apps.sh)"));
    let mut client = python("client.py", cluster.addr.port());
    client.env("REDSHARD_URL", &url);
    run_app(client, "celery", Duration::from_secs(120), "celery ok").await;
    assert!(
        worker.try_wait().expect("worker status").is_none(),
        "the worker died"
    );
    worker.kill().await.expect("stop the worker");
    let stderr = worker
        .wait_with_output()
        .await
        .expect("worker output")
        .stderr;
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        !stderr.contains("CROSSSLOT") && !stderr.contains("CrossSlot"),
        "the worker met a refusal:\n{stderr}"
    );
    assert_replicas_equal(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_cache_sets_gets_and_deletes_many() {
    let cluster = cluster_with(&rules("django")).await;
    run_app(
        python("django_cache.py", cluster.addr.port()),
        "",
        Duration::from_secs(60),
        "django ok",
    )
    .await;
    assert_replicas_equal(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bullmq_runs_jobs_delays_retries_and_flows() {
    let cluster = cluster_with(&rules("bullmq")).await;
    let mut node = Command::new("node");
    node.arg("bullmq_app.js")
        .arg(cluster.addr.port().to_string());
    run_app(node, "bullmq", Duration::from_secs(120), "bullmq ok").await;
    assert_replicas_equal(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidekiq_runs_jobs_and_keeps_beating() {
    let cluster = cluster_with(&rules("sidekiq")).await;
    let mut ruby = Command::new("ruby");
    ruby.arg("run.rb").arg(cluster.addr.port().to_string());
    run_app(ruby, "sidekiq", Duration::from_secs(120), "sidekiq ok").await;
    assert_replicas_equal(&cluster).await;
}
