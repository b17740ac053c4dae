//! An `etcd` child process on free 127.0.0.1 ports (client and peer), with its own data
//! directory, killed on drop. It can be stopped and started again on the same ports and data
//! (etcd down, then back).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// Where Debian's `etcd-server` installs etcd (`scripts/ensure-etcd.sh`).
const ETCD: &str = "/usr/bin/etcd";

/// The files of an etcd serving TLS to clients that present a certificate.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// PEM certificate authorities that sign the clients' certificates.
    pub ca_file: PathBuf,
    /// The server's PEM certificate (for `127.0.0.1`).
    pub cert_file: PathBuf,
    /// Its PEM key.
    pub key_file: PathBuf,
}

/// One single-member etcd cluster.
#[derive(Debug)]
pub struct EtcdServer {
    /// Its client port on 127.0.0.1.
    pub client_port: u16,
    /// Its peer port on 127.0.0.1 (no peer ever connects; etcd needs one).
    peer_port: u16,
    /// The member name, unique per server, by which [`EtcdServer::is_ours`] knows its child.
    name: String,
    /// With TLS on the client port: its files, and a second, plaintext client port on which
    /// the harness checks that etcd is up (it speaks no TLS itself).
    tls: Option<(EtcdTls, u16)>,
    /// The process; `None` while stopped.
    child: Option<Child>,
    /// Its record, for the next run to kill it if this one is interrupted.
    record: Option<crate::reap::Tracked>,
    /// Its data directory, kept across restarts, removed on drop.
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd on free ports.
    ///
    /// # Panics
    /// When etcd is not installed or does not come up.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts etcd on free ports serving TLS to clients, which must present a certificate
    /// signed by `tls.ca_file`.
    ///
    /// # Panics
    /// When etcd is not installed or does not come up.
    #[must_use]
    pub fn start_tls(tls: EtcdTls) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<EtcdTls>) -> Self {
        for _attempt in 0..5 {
            let client_port = free_port();
            let peer_port = free_port();
            let probe_port = free_port();
            if client_port == peer_port || probe_port == client_port || probe_port == peer_port {
                continue;
            }
            let mut server = Self {
                client_port,
                peer_port,
                name: format!("redshard-test-{client_port}"),
                tls: tls.clone().map(|tls| (tls, probe_port)),
                child: None,
                record: None,
                dir: tempfile::tempdir().expect("temp dir"),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("etcd did not start on free ports after 5 attempts");
    }

    /// `127.0.0.1:PORT` of the client listener.
    #[must_use]
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A `[cluster]` for this server with `prefix` and a lease TTL of `ttl`.
    ///
    /// # Panics
    /// When the values are refused by the configuration's validation.
    #[must_use]
    pub fn cluster_config(&self, prefix: &str, ttl: Duration) -> redshard_config::ClusterConfig {
        let text = format!(
            "[cluster]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nlease_ttl_ms = {}\n\
             [[shard]]\nname = \"s\"\nmaster = \"127.0.0.1:1\"\nslots = [\"0-16383\"]\n",
            self.addr(),
            ttl.as_millis()
        );
        redshard_config::Config::from_toml_str(&text, "test")
            .expect("valid [cluster]")
            .cluster
            .expect("[cluster] was given")
    }

    fn spawn(&mut self) -> bool {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let listen = match &self.tls {
            Some((_, probe)) => format!("{client},http://127.0.0.1:{probe}"),
            None => client.clone(),
        };
        let mut command = Command::new(ETCD);
        if let Some((tls, _)) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(Stdio::null())
            .stderr(log_file(self.client_port))
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => panic!("cannot run {ETCD} ({e}); install it: scripts/ensure-etcd.sh"),
        };
        self.record = Some(crate::reap::track(&child, "etcd", Some(self.dir.path())));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    self.record = None;
                    return false; // exited: most likely a port was taken meanwhile
                }
            }
            if self.is_ours() {
                return true;
            }
            // Polling interval of this wait loop, not synchronisation.
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether etcd answers on the (plaintext) client port as our member (its name in the
    /// member list), through etcd's JSON gateway.
    fn is_ours(&self) -> bool {
        let port = self
            .tls
            .as_ref()
            .map_or(self.client_port, |&(_, probe)| probe);
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
        let body = "{}";
        let request = format!(
            "POST /v3/cluster/member/list HTTP/1.0\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply.starts_with("HTTP/1.0 200") && reply.contains(&format!("\"name\":\"{}\"", self.name))
    }

    /// The process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills etcd (SIGKILL) and reaps it; its data stays for [`EtcdServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.record = None;
    }

    /// Starts etcd again on the same ports and data directory (after [`EtcdServer::stop`]).
    ///
    /// # Panics
    /// When it does not come back up.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "etcd did not restart on port {}",
            self.client_port
        );
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where etcd's log goes: `$REDSHARD_TEST_LOG_DIR/etcd-PORT.log` when that variable is set,
/// nowhere otherwise.
fn log_file(port: u16) -> Stdio {
    let Some(dir) = std::env::var_os("REDSHARD_TEST_LOG_DIR") else {
        return Stdio::null();
    };
    let path = std::path::Path::new(&dir).join(format!("etcd-{port}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}
