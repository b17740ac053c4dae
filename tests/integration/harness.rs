//! The harness itself: the children an interrupted run leaves behind are killed by the next
//! run, and nothing else is (not a live run's children, not a process that reuses a pid).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use redshard_tests::reap;
use redshard_tests::server::free_port;
use redshard_tests::wait_until;

/// A redis-server as an interrupted run leaves it: started in the background by a shell that
/// has exited, so it is re-parented and no one will kill it. Killed on drop, should the test
/// fail before the reaper or the test kills it.
struct Orphan {
    pid: u32,
}

impl Orphan {
    /// Starts one on a free port, with `dir` as its working directory, and waits until the
    /// forked shell has become redis-server.
    async fn start(dir: &Path) -> Self {
        let port = free_port();
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no \
             --dir '{}' >/dev/null 2>&1 & echo $!",
            dir.display()
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("sh runs");
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the background pid");
        let orphan = Self { pid };
        wait_until(
            Duration::from_secs(10),
            "the orphan runs redis-server",
            || {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
                async move { comm.is_ok_and(|comm| comm == "redis-server\n") }
            },
        )
        .await;
        orphan
    }

    /// Whether it still runs (a zombie does not: killed, it waits for init to reap it).
    fn running(&self) -> bool {
        reap::stat_fields(self.pid).is_some_and(|fields| fields[0] != "Z")
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        if self.running() {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
    }
}

/// The pid of a process that has exited (and been reaped): the owner of an interrupted run.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("true runs");
    child.wait().expect("true exits");
    child.id()
}

#[tokio::test]
async fn the_children_of_an_interrupted_run_are_killed_and_no_others() {
    let registry = tempfile::tempdir().unwrap();
    let registry = registry.path();
    let me = std::process::id();

    // The child of a dead owner, with its temp dir. The owner has exited but is not reaped
    // yet (as a test binary killed with its `cargo` may wait for init): a zombie is dead.
    let mut zombie = Command::new("true").spawn().expect("true runs");
    let dead = zombie.id();
    wait_until(Duration::from_secs(10), "the owner exited", || {
        let fields = reap::stat_fields(dead).expect("the owner is not reaped");
        async move { fields[0] == "Z" }
    })
    .await;
    let (dead_too, dead_as_well) = (dead_pid(), dead_pid());
    let left_dir = tempfile::tempdir().unwrap().keep();
    let left = Orphan::start(&left_dir).await;
    let _left_record = reap::record(registry, dead, left.pid, "redis-server", Some(&left_dir));
    // The child of a live owner (this process), also re-parented.
    let live_dir = tempfile::tempdir().unwrap();
    let live = Orphan::start(live_dir.path()).await;
    let live_record = reap::record(registry, me, live.pid, "redis-server", None);
    // Dead owners' records whose pid is now another process (the live owner's child): one
    // of another executable, one that started at another time.
    let _other_name = reap::record(registry, dead_too, live.pid, "etcd", None);
    std::fs::write(
        registry.join(format!("{dead_as_well}-{}", live.pid)),
        "name redis-server\nstart 1\n",
    )
    .unwrap();
    let records = || {
        let mut names: Vec<String> = std::fs::read_dir(registry)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(records().len(), 4, "{:?}", records());

    reap::reap(registry);
    wait_until(
        Duration::from_secs(10),
        "the dead owner's child killed",
        || async { !left.running() },
    )
    .await;
    assert!(!left_dir.exists(), "its temp dir removed");
    assert!(live.running(), "the live owner's child untouched");
    // Every dead owner's record is gone; the live owner's stays.
    assert_eq!(records(), [format!("{me}-{}", live.pid)]);

    // Its owner kills it and drops the record.
    drop(live);
    drop(live_record);
    assert_eq!(records(), Vec::<String>::new());
    zombie.wait().unwrap();
}
