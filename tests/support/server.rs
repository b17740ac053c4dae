//! A `redis-server` child process on a free 127.0.0.1 port (or a given loopback address and
//! port), killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running redis-server.
#[derive(Debug)]
pub struct RedisServer {
    /// The loopback address it binds (127.0.0.1 unless started by [`RedisServer::start_at`]),
    /// and the source address of its connection to a master.
    ip: String,
    /// Its port on `ip`.
    pub port: u16,
    /// Extra arguments it was started with (kept for restarts).
    args: Vec<String>,
    /// The process; `None` after [`RedisServer::kill`].
    child: Option<Child>,
    /// Its record, for the next run to kill it if this one is interrupted.
    record: Option<crate::reap::Tracked>,
    /// Its working directory (dump files), removed on drop.
    dir: tempfile::TempDir,
}

/// Unless `REDSHARD_TEST_REPLICATION=proxy`, a full sync (a replica added, repaired or back
/// after a failover) starts after 1 s rather than Redis's default 5 s, so the suite stays
/// fast when every replica follows its master by Redis replication (the default mode). Not 0: a master
/// restarted empty at once would then wipe its replicas by a full sync before the failover
/// to one of them. Proxy mirroring keeps Redis's default, which its resync tests were
/// written against.
fn sync_delay() -> &'static [&'static str] {
    // Redis replication is the default: test nodes sync after 1 s, not Redis's 5 s, unless
    // the suite runs in proxy mode.
    if !std::env::var(crate::cluster::REPLICATION_MODE_VAR).is_ok_and(|m| m == "proxy") {
        &["--repl-diskless-sync-delay", "1"]
    } else {
        &[]
    }
}

/// A port that was free a moment ago, for a process the test starts (and may restart on it).
///
/// Taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, from 32768 by
/// default), from 10000 up (clear of the usual fixed ports of a developer's local Redis,
/// cluster, etcd and metrics): a port from `bind(0)` is in that range, where the source
/// port of any outgoing connection of the suite may take it while its server is down
/// between a stop and a restart on it, which then fails. Never the same port twice in one
/// test process. Falls back to `bind(0)` where the range leaves no room below it.
#[must_use]
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    const LOWEST: u16 = 10_000;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    static SEED: AtomicU64 = AtomicU64::new(0);
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if below > LOWEST + 1_000 {
        let span = u64::from(below - LOWEST);
        // A different sequence in every test process (xorshift; no need for a real RNG).
        let mut x = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            ^ u64::from(std::process::id()).rotate_left(32)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let given = given.get_or_insert_with(HashSet::new);
        for _ in 0..1_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = LOWEST + u16::try_from(x % span).unwrap_or(0);
            if given.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts a redis-server with no persistence and DEBUG enabled.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a redis-server with extra arguments (`["--requirepass", "x"]`).
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up.
    #[must_use]
    pub fn start_with(args: &[&str]) -> Self {
        let mut server = Self::unstarted("127.0.0.1", 0, args);
        for _attempt in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    /// Starts a redis-server on loopback address `ip` (`127.0.0.3`, say: the same port can
    /// then serve another node on 127.0.0.1) and `port`, which also connects to a master
    /// from `ip`.
    ///
    /// # Panics
    /// When it does not come up there.
    #[must_use]
    pub fn start_at(ip: &str, port: u16, args: &[&str]) -> Self {
        let mut server = Self::unstarted(ip, port, args);
        assert!(server.spawn(), "redis-server did not start at {ip}:{port}");
        server
    }

    /// A server not started yet, with its own data directory.
    fn unstarted(ip: &str, port: u16, args: &[&str]) -> Self {
        Self {
            ip: ip.to_owned(),
            port,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            record: None,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                &self.ip,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "yes", "--protected-mode", "no"])
            .args(sync_delay())
            // Redis 7's option; the default address needs none.
            .args(if self.ip == "127.0.0.1" {
                vec![]
            } else {
                vec!["--bind-source-addr", self.ip.as_str()]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(log_file(&port))
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run redis-server ({e}); install it: sudo apt-get install redis-server"
            ),
        };
        self.record = Some(crate::reap::track(
            &child,
            "redis-server",
            Some(self.dir.path()),
        ));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    self.record = None;
                    return false; // exited: most likely the port was taken meanwhile
                }
            }
            if self.answers_ping() {
                // Tests run in parallel: the answer must come from our own child, not from
                // another test's server that took the port first.
                return self.is_ours();
            }
            // Polling interval of this wait loop, not synchronisation.
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect((self.ip.as_str(), self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        // With requirepass the answer is -NOAUTH, which still means the server is up.
        matches!(s.read(&mut buf), Ok(n) if n > 0)
    }

    /// Whether the server on our port is our child (its INFO `process_id`). A server that
    /// requires a password answers NOAUTH; then the child still running is the evidence.
    fn is_ours(&mut self) -> bool {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return false;
        };
        let Ok(mut s) = TcpStream::connect((self.ip.as_str(), self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        let mut buf = vec![0u8; 16 * 1024];
        let mut text = Vec::new();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            if text.starts_with(b"-") || text.windows(2).filter(|w| w == b"\r\n").count() > 20 {
                break;
            }
        }
        let text = String::from_utf8_lossy(&text);
        if text.starts_with("-NOAUTH") || text.starts_with("-NOPERM") {
            // Give a failed bind time to make our child exit, then trust a live child. (A
            // NOAUTH server shows no process_id; this grace lets the negative show, it is
            // not a wait for something to happen.)
            std::thread::sleep(Duration::from_millis(50));
            return matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)));
        }
        if text.contains(&format!("process_id:{pid}\r\n")) {
            return true;
        }
        self.kill();
        false
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless started by [`RedisServer::start_at`]).
    #[must_use]
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.record = None;
    }

    /// Starts the server again on the same port (after [`RedisServer::kill`]).
    ///
    /// # Panics
    /// When it does not come back up.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where a server's log goes: `$REDSHARD_TEST_LOG_DIR/redis-PORT.log` when that variable is
/// set (to debug a failing test), nowhere otherwise.
fn log_file(port: &str) -> Stdio {
    let Some(dir) = std::env::var_os("REDSHARD_TEST_LOG_DIR") else {
        return Stdio::null();
    };
    let path = std::path::Path::new(&dir).join(format!("redis-{port}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The path of the workspace binary `name` (`redshard`, `redshard-admin`), which cargo puts in
/// `target/<profile>/`, next to the `deps/` directory holding this test binary. A test can
/// only name another package's binary this way: `CARGO_BIN_EXE_*` exists only for the
/// package's own binaries. `cargo test --workspace` builds every binary before it runs a test.
///
/// # Panics
/// When the binary was not built, naming the command that builds it.
#[must_use]
pub fn binary(name: &str) -> std::path::PathBuf {
    let mut path = std::env::current_exe().expect("the test binary's path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.push(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --workspace --bins); cargo test --workspace does",
        path.display()
    );
    path
}

/// Sends the proxy's logs to stderr when `RUST_LOG` is set (to debug a failing test).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
