//! A redis-server child process for the proxy crate's own tests (the integration tests have
//! `tests/support`, which this crate cannot use without a dependency cycle).
//!
//! `redis-server` must be on `PATH`: without it a test fails, it does not skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server on a free 127.0.0.1 port, killed on drop.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// A server of our own, started with `extra` arguments after the common ones (no
    /// persistence, 127.0.0.1 only). Tests run in parallel, so a port picked as free may be
    /// taken by another test's server before ours binds it; the answering server's
    /// `process_id` must be our child's, otherwise another port is tried.
    pub fn start(extra: &[&str]) -> Server {
        for _attempt in 0..5 {
            if let Some(server) = Server::try_start(extra) {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    fn try_start(extra: &[&str]) -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0 to pick a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `redis-server` ({e}): it must be on PATH for this test")
            });
        let mut server = Server { child, port };
        let pid = format!("process_id:{}\r\n", server.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None; // exited: the port was taken
            }
            if let Some(info) = info_server(port) {
                return info.contains(&pid).then_some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer INFO server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `INFO server` of whatever answers on `port`, or `None` while nothing answers (yet).
fn info_server(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .ok()?;
    // One bulk reply: `$<len>\r\n<len bytes>\r\n` (an error while loading: `-...`).
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&chunk[..n]);
        if got.first() != Some(&b'$') {
            return None;
        }
        let Some(eol) = got.windows(2).position(|w| w == b"\r\n") else {
            continue;
        };
        let len: usize = std::str::from_utf8(&got[1..eol]).ok()?.parse().ok()?;
        if got.len() >= eol + 2 + len + 2 {
            return Some(String::from_utf8_lossy(&got[eol + 2..eol + 2 + len]).into_owned());
        }
    }
}
