//! The children of interrupted test runs, killed by the next run.
//!
//! The harness kills its `redis-server`, `etcd` and `redshard` children in `Drop`, which never
//! runs when the test binary itself is killed (a developer's Ctrl-C, SIGTERM or `kill -9` of
//! `cargo test`): the children are re-parented to init and run forever, their temp dirs stay,
//! and both pile up across interrupted runs. So every child the harness spawns is recorded in
//! a registry directory under the temp dir, one file named `<owner pid>-<child pid>`, removed
//! when the harness kills the child itself; the first spawn of every test process kills the
//! children of records whose owner is gone.
//!
//! Test binaries run in parallel, and a pid is reused once its process is gone, so a record is
//! acted on only when its owner is no longer alive (a live owner's children are its own
//! business) and its child is still the recorded process: the same executable name
//! (`/proc/<pid>/comm`), the same start time, and no longer the owner's child. Nothing that
//! was not recorded is ever killed. Every failure here (a registry that cannot be read or
//! written, a process that cannot be killed) is ignored: the reaper must never fail or slow a
//! test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;

/// The directory of this user's records: `$TMPDIR/redshard-test-children-<uid>` (one per user,
/// so that a shared `/tmp` holds no records another user could write).
#[must_use]
pub fn registry() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    std::env::temp_dir().join(format!("redshard-test-children-{uid}"))
}

/// The record of one running child, removed on drop (when the harness has killed the child,
/// or the child's owner dropped it). Dropped during a panic, it stays: a test that fails may
/// leave a bare [`Child`] running after the test binary exits, which the next run then kills.
#[derive(Debug)]
#[must_use = "the record is removed when this is dropped"]
pub struct Tracked {
    /// The record's file; `None` when it could not be written.
    path: Option<PathBuf>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            if !std::thread::panicking() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Records `child`, which runs the executable `name` (as `/proc/<pid>/comm` shows it:
/// `redis-server`, `etcd`, `redshard`), with `dir` to remove once it is killed after an
/// interrupted run. The first call in a test process first reaps the children that earlier,
/// interrupted runs left behind.
pub fn track(child: &Child, name: &str, dir: Option<&Path>) -> Tracked {
    static REAP_ONCE: Once = Once::new();
    let registry = registry();
    REAP_ONCE.call_once(|| reap(&registry));
    record(&registry, std::process::id(), child.id(), name, dir)
}

/// Writes the record of `child` (running `name`, with `dir` to remove) owned by the process
/// `owner`, in `registry`: `key value` lines with the name, the start times of the child and
/// the owner, and the dir. Nothing is written unless `registry` is a directory only this user
/// can write. [`track`] records this process's own children; a test records processes as an
/// interrupted run leaves them.
pub fn record(registry: &Path, owner: u32, child: u32, name: &str, dir: Option<&Path>) -> Tracked {
    let path = registry.join(format!("{owner}-{child}"));
    let mut text = format!("name {name}\n");
    if let Some(start) = start_time(child) {
        text.push_str(&format!("start {start}\n"));
    }
    if let Some(start) = start_time(owner) {
        text.push_str(&format!("owner_start {start}\n"));
    }
    if let Some(dir) = dir {
        text.push_str(&format!("dir {}\n", dir.display()));
    }
    let written = private_dir(registry)
        && std::fs::File::create(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .is_ok();
    Tracked {
        path: written.then_some(path),
    }
}

/// Kills the children recorded in `registry` whose owner is gone and which still run, removes
/// their recorded temp dirs and drops their records. Records of live owners stay untouched.
/// A dir is removed only when it is a `tempfile` dir directly in the temp dir, whatever a
/// record says.
pub fn reap(registry: &Path) {
    if !private_dir(registry) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(registry) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some((owner, child)) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.split_once('-'))
            .and_then(|(owner, child)| Some((owner.parse().ok()?, child.parse().ok()?)))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let field = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        };
        if alive(owner, field("owner_start")) {
            continue;
        }
        match identify(child, field("name"), field("start")) {
            // Still a child of the owner's pid: the owner is not gone after all.
            Some(parent) if parent == owner => continue,
            Some(_) => {
                let _ = Command::new("kill")
                    .args(["-9", &child.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            // Gone, or its pid now another process: nothing to kill.
            None => {}
        }
        if let Some(dir) = field("dir").map(Path::new) {
            if is_temp_dir(dir) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// Creates `registry` (readable and writable by this user only) if needed, and whether it is
/// a directory of this user's that no one else can write: records are trusted only there.
fn private_dir(registry: &Path) -> bool {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let _ = std::fs::DirBuilder::new().mode(0o700).create(registry);
    let (Ok(dir), Ok(me)) = (
        std::fs::symlink_metadata(registry),
        std::fs::metadata("/proc/self"),
    ) else {
        return false;
    };
    dir.is_dir() && dir.uid() == me.uid() && dir.mode() & 0o022 == 0
}

/// Whether a recorded dir is one the harness made: a `tempfile` dir (`.tmp…`) directly in the
/// temp dir. A record naming any other path never makes the reaper remove it.
fn is_temp_dir(dir: &Path) -> bool {
    dir.parent() == Some(std::env::temp_dir().as_path())
        && dir
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(".tmp"))
}

/// The fields of `/proc/<pid>/stat` after the command name (from the state, field 3, on:
/// field `n` of proc(5) is at index `n - 3`); `None` when there is no such process. The name
/// is in parentheses and may itself hold spaces and parentheses, hence the last `)`.
#[must_use]
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The start time of `pid` (field 22 of its stat, in clock ticks since boot): with the pid,
/// it names one process, whatever process later reuses the pid.
fn start_time(pid: u32) -> Option<String> {
    stat_fields(pid)?.get(22 - 3).cloned()
}

/// Whether `pid` runs and, when its start time was recorded, is still the process recorded.
/// A zombie does not run: a killed test binary whose parent (`cargo`) was killed too waits
/// as one until init reaps it, which may take a while.
fn alive(pid: u32, start: Option<&str>) -> bool {
    let Some(fields) = stat_fields(pid) else {
        return false;
    };
    let running = fields
        .first()
        .is_some_and(|state| state != "Z" && state != "X");
    running && start.is_none_or(|start| fields.get(22 - 3).is_some_and(|now| now == start))
}

/// The parent pid of `pid` when it is still the recorded child: it runs `name` (`comm` is the
/// executable's name cut to 15 bytes) and started at `start`. `None` otherwise, and when
/// either was not recorded.
fn identify(pid: u32, name: Option<&str>, start: Option<&str>) -> Option<u32> {
    let (name, start) = (name?, start?);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let short = &name.as_bytes()[..name.len().min(15)];
    if comm.trim_end_matches('\n').as_bytes() != short {
        return None;
    }
    let fields = stat_fields(pid)?;
    if fields.get(22 - 3).map(String::as_str) != Some(start) {
        return None;
    }
    fields.get(4 - 3)?.parse().ok()
}
