//! The `redshard` binary: --help, --version, --check-config, bad configs, and SIGTERM.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redshard_tests::cluster::config_text;
use redshard_tests::reap;
use redshard_tests::server::free_port;
use redshard_tests::{binary, Client, RedisServer, Reply};

fn redshard() -> Command {
    Command::new(binary("redshard"))
}

/// The config text of a proxy on `port` in front of `server`, with `extra`, and none of the
/// fixed defaults (metrics port 9121, admin socket path) a local cluster may hold: a test never
/// uses a fixed port or path.
fn isolated_config(server: &RedisServer, port: u16, extra: &str) -> String {
    config_text(
        &[server.addr()],
        &[],
        &format!(
            "metrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n{extra}"
        ),
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
}

/// A single-threaded runtime for the async client of a test that runs the binary.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Everything an exited (or killed and reaped) child wrote to its piped stderr.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
    logs
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// A client of the proxy on `port`, once the proxy listens (within 10 s).
async fn connect_when_listening(port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            drop(s);
            return Client::connect(format!("127.0.0.1:{port}")).await;
        }
        assert!(
            Instant::now() < deadline,
            "redshard did not start listening"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn help_and_version() {
    let out = redshard().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("redshard "));
    let out = redshard().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config")
            && help.contains("--check-config")
            && help.contains("--log-format")
    );
}

#[test]
fn check_config_accepts_valid_and_names_the_problem_in_invalid_files() {
    let good = write_config(&config_text(
        &["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
        &[],
        "",
    ));
    let out = redshard()
        .arg("--check-config")
        .arg(good.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (2 shards"));

    let unknown = write_config("listen = \"127.0.0.1:0\"\nlisten_typo = 1\n");
    let out = redshard()
        .arg("--check-config")
        .arg(unknown.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen_typo") && err.contains("line 2"),
        "{err}"
    );

    let missing = write_config(
        "listen = \"127.0.0.1:0\"\n[[shard]]\nname = \"a\"\nmaster = \"127.0.0.1:7001\"\nslots = [\"0-100\"]\n",
    );
    let out = redshard()
        .arg("--check-config")
        .arg(missing.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("101-16383"), "{err}");
}

#[test]
fn sigterm_drains_and_exits() {
    let server = RedisServer::start();
    let port = free_port();
    let text = isolated_config(&server, port, "");
    let file = write_config(&text);
    let mut command = redshard();
    command
        .arg("--config")
        .arg(file.path())
        .arg("--log-format")
        .arg("json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Spawned::start(&mut command);
    let runtime = runtime();
    runtime.block_on(async {
        let mut c = connect_when_listening(port).await;
        assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
        assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("v"));
    });
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "redshard did not exit after SIGTERM"
        );
        // Polling interval of this wait loop, not synchronisation.
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success());
    let logs = stderr_of(&mut child);
    assert!(
        logs.contains("SIGTERM received") && logs.contains("drained gracefully"),
        "{logs}"
    );
    assert!(
        logs.lines().all(|l| l.starts_with('{')),
        "JSON logs: {logs}"
    );
    assert!(!logs.contains("\"v\""), "values never logged");
}

#[test]
fn a_client_that_never_reads_is_paused_then_disconnected_with_bounded_memory() {
    let server = RedisServer::start();
    let port = free_port();
    let extra = "[limits]\nmax_pipeline = 64\noutput_buffer_soft_bytes = 1048576\noutput_buffer_soft_seconds = 1\n";
    let text = isolated_config(&server, port, extra);
    let file = write_config(&text);
    let mut command = redshard();
    command
        .arg("--config")
        .arg(file.path())
        .stderr(Stdio::null());
    let mut child = Spawned::start(&mut command);
    let pid = child.id();
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut setter = loop {
        if let Ok(s) = std::net::TcpStream::connect(&addr) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "redshard did not start listening"
        );
        // Polling interval of this wait loop, not synchronisation.
        std::thread::sleep(Duration::from_millis(20));
    };
    let value = vec![b'v'; 100 * 1024];
    let mut set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    setter.write_all(&set).unwrap();
    let mut ok = [0u8; 5];
    std::io::Read::read_exact(&mut setter, &mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let before = super::limits::rss_bytes(pid);
    // 2,000 GETs of 100 KiB (200 MB of replies), never read.
    let mut greedy = std::net::TcpStream::connect(&addr).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let pipeline = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(2000);
    let _ = greedy.write_all(&pipeline); // may stop once the proxy stops reading
    let mut peak = 0;
    let closed_by = Instant::now() + Duration::from_secs(8);
    let mut buf = [0u8; 1];
    greedy
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Sample the proxy's memory while the client does not read; then drain to see the close.
    for _ in 0..10 {
        peak = peak.max(super::limits::rss_bytes(pid));
        // The sampling interval of the memory readings, not synchronisation.
        std::thread::sleep(Duration::from_millis(150));
    }
    let closed = loop {
        match std::io::Read::read(&mut greedy, &mut buf) {
            Ok(0) | Err(_) if Instant::now() > closed_by => break false,
            Ok(0) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            _ => {}
        }
    };
    assert!(
        closed,
        "the proxy must disconnect a client stuck above the soft limit"
    );
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "proxy memory stayed bounded: grew {grown} bytes for 200 MB of replies"
    );
    // Other clients are unaffected.
    setter.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    std::io::Read::read_exact(&mut setter, &mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
}

/// The binary runs on jemalloc, set to return freed memory within a second or so, and says so
/// in `INFO memory` (Redis's `mem_allocator`, `used_memory_rss`, `allocator_*`); jemalloc's
/// own options in `_RJEM_MALLOC_CONF` win over the proxy's settings.
#[test]
fn info_memory_shows_the_allocator_and_the_operator_can_tune_it() {
    let server = RedisServer::start();
    let runtime = runtime();
    for (env, decay, purge) in [
        (None, "1000", "yes"),
        (Some("dirty_decay_ms:5000"), "5000", "no"),
    ] {
        let port = free_port();
        let text = isolated_config(&server, port, "");
        let file = write_config(&text);
        let mut command = redshard();
        command
            .arg("--config")
            .arg(file.path())
            .stderr(Stdio::null())
            .env_remove("_RJEM_MALLOC_CONF");
        if let Some(conf) = env {
            command.env("_RJEM_MALLOC_CONF", conf);
        }
        let mut child = Spawned::start(&mut command);
        let info = runtime.block_on(async {
            let mut c = connect_when_listening(port).await;
            match c.cmd(&["INFO", "memory"]).await {
                Reply::Bulk(Some(text)) => String::from_utf8(text).unwrap(),
                other => panic!("INFO memory: {other:?}"),
            }
        });
        let _ = child.kill();
        let _ = child.wait();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("no {name} in {info}"))
                .to_owned()
        };
        assert!(info.starts_with("# Memory\r\n"), "{info}");
        assert!(field("mem_allocator").starts_with("jemalloc-5."), "{info}");
        assert_eq!(field("allocator_dirty_decay_ms"), decay, "{info}");
        assert_eq!(field("allocator_background_purge"), purge, "{info}");
        let rss: u64 = field("used_memory_rss").parse().unwrap();
        assert!(rss > 1024 * 1024, "{info}");
        // jemalloc's own accounting, under Redis's names: objects <= their pages <= resident.
        let bytes = |name: &str| -> u64 { field(name).parse().unwrap() };
        let (allocated, active, resident) = (
            bytes("allocator_allocated"),
            bytes("allocator_active"),
            bytes("allocator_resident"),
        );
        assert!(allocated > 100 * 1024, "{info}");
        // Redis's used_memory (redis-cli --stat's "mem") is what the allocator handed out.
        assert_eq!(bytes("used_memory"), allocated, "{info}");
        assert!(allocated <= active && active <= resident, "{info}");
        assert!(resident <= rss, "{info}");
        assert_eq!(bytes("allocator_frag_bytes"), active - allocated, "{info}");
        let ratio: f64 = field("allocator_frag_ratio").parse().unwrap();
        assert!(
            (ratio - active as f64 / allocated as f64).abs() < 0.01,
            "{info}"
        );
    }
}

#[test]
fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    let server = RedisServer::start();
    let port = free_port();
    let text = isolated_config(&server, port, "[log]\nformat = \"text\"\nlevel = \"info\"");
    let file = write_config(&text);
    let mut command = redshard();
    command
        .arg("--config")
        .arg(file.path())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Spawned::start(&mut command);
    let runtime = runtime();
    runtime.block_on(async {
        let mut c = connect_when_listening(port).await;
        assert_eq!(c.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    });
    let _ = child.kill();
    let _ = child.wait();
    let logs = stderr_of(&mut child);
    assert!(logs.contains("INFO"), "the start is logged: {logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "no ANSI escapes in a pipe: {logs:?}"
    );
}

/// utime + stime of process `pid` so far (`/proc/PID/stat`, clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let fields = reap::stat_fields(pid).expect("the proxy runs");
    // utime and stime: fields 14 and 15.
    let ticks: u64 =
        fields[14 - 3].parse::<u64>().unwrap() + fields[15 - 3].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// With `busy_poll_us` the worker polls for work a while after each burst instead of sleeping
/// at once: it serves requests (pipelined and not) as without, and once nothing comes it
/// sleeps: 3 s of idling cost a few tens of milliseconds of CPU, where a worker that never
/// stopped polling would spend most of the 3 s (at least a quarter even on a crowded
/// machine).
#[test]
fn a_busy_polling_worker_serves_and_sleeps_when_idle() {
    let server = RedisServer::start();
    let port = free_port();
    let text = isolated_config(&server, port, "threads = 1\nbusy_poll_us = 500");
    let file = write_config(&text);
    let mut command = redshard();
    command
        .arg("--config")
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Killed however the test ends: a proxy that polls without end must not outlive a
    // failed assertion.
    let child = Spawned::start(&mut command);
    let pid = child.id();
    let runtime = runtime();
    runtime.block_on(async {
        let mut c = connect_when_listening(port).await;
        for i in 0..200 {
            let key = format!("k{i}");
            assert_eq!(c.cmd(&["SET", &key, "v"]).await, Reply::Status("OK".into()));
        }
        let pipeline: Vec<Vec<String>> = (0..200)
            .map(|i| vec!["GET".to_owned(), format!("k{i}")])
            .collect();
        for reply in c.pipeline(&pipeline).await {
            assert_eq!(reply, Reply::Bulk(Some(b"v".to_vec())));
        }
        // Idle: the client stays connected and sends nothing.
        let before = cpu_time(pid);
        // The idle period under test, not synchronisation.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let spent = cpu_time(pid) - before;
        assert!(
            spent < Duration::from_millis(300),
            "the worker kept polling while idle: {spent:?} of CPU in 3 s"
        );
        assert_eq!(
            c.cmd(&["GET", "k1"]).await,
            Reply::Bulk(Some(b"v".to_vec()))
        );
    });
}

/// A proxy process a test started: killed and reaped when dropped, however the test ends (a
/// failed assertion included), so that it never outlives the test; recorded meanwhile for the
/// next run's reaper, in case the test process itself is killed.
struct Spawned {
    /// The process; the test reaches it through `Deref` (its pid, stderr, exit status).
    child: std::process::Child,
    /// Its reaper record, removed after the process is gone.
    _record: reap::Tracked,
}

impl Spawned {
    fn start(command: &mut Command) -> Self {
        let child = command.spawn().expect("redshard starts");
        let record = reap::track(&child, "redshard", None);
        Self {
            child,
            _record: record,
        }
    }
}

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.child
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.child
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // A child that already exited and was reaped is not signalled again.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
