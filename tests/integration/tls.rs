//! TLS: clients on `tls_listen` (with and without mutual TLS), plaintext refused on the TLS
//! port, redis-servers reached over TLS (`[backend] tls`), and certificates replaced by a
//! reload while connections stay open. Every certificate is made here by a CA of the test's
//! own (rcgen), in a temporary folder.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use redshard_config::{Config, Topology};
use redshard_proxy::{Proxy, StateOptions};
use redshard_tests::cluster::{config_text, key_on, start_proxy};
use redshard_tests::reap;
use redshard_tests::server::free_port;
use redshard_tests::{Client, Reply, TestCluster};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A certificate authority of the test's own.
pub(crate) struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub(crate) struct Pair {
    /// The PEM certificate.
    pub(crate) cert: PathBuf,
    /// Its PEM key.
    pub(crate) key: PathBuf,
}

impl Ca {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subjects: OpenSSL (redis-server) finds a certificate's issuer by name.
        params
            .distinguished_name
            .push(DnType::CommonName, "redshard test CA");
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// Writes the CA's certificate to `dir/name` and returns its path.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.0.pem()).unwrap();
        path
    }

    /// Writes a certificate for `localhost` and `127.0.0.1`, signed by this CA, to
    /// `dir/name.crt` and its key to `dir/name.key`.
    pub(crate) fn issue(&self, dir: &Path, name: &str) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.0).unwrap();
        let pair = Pair {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }
}

/// A test client's TLS settings: trusting the CA in `ca`, presenting `cert` if given.
fn client_config(ca: &Path, cert: Option<&Pair>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    Arc::new(match cert {
        Some(pair) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&pair.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&pair.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// A TLS connection to `addr`, checking that its certificate is valid for `localhost`.
async fn connect_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A test client over TLS to `addr`.
async fn tls_client(addr: SocketAddr, config: Arc<ClientConfig>) -> Client {
    Client::over(connect_tls(addr, config).await.expect("TLS handshake"))
}

/// Whether the server refuses a client that already completed its side of the handshake
/// (with TLS 1.3 a client learns that its certificate was refused only when it reads):
/// a PING gets no reply, only an error or the end of the connection.
async fn refused_after_handshake(mut stream: TlsStream<TcpStream>) -> bool {
    if stream.write_all(b"PING\r\n").await.is_err() || stream.flush().await.is_err() {
        return true;
    }
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => buf.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// `[tls]` text for `pair`, optionally with a client CA.
fn tls_table(pair: &Pair, client_ca: Option<&Path>) -> String {
    let mut text = format!(
        "tls_listen = \"127.0.0.1:0\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pair.cert.display(),
        pair.key.display()
    );
    if let Some(ca) = client_ca {
        text.push_str(&format!("client_ca_file = \"{}\"\n", ca.display()));
    }
    text
}

fn tls_addr(cluster: &TestCluster) -> SocketAddr {
    cluster
        .proxy
        .as_ref()
        .and_then(Proxy::tls_addr)
        .expect("the proxy listens for TLS")
}

/// The value of the counter `name` on the proxy's metrics page (0 when absent).
fn counter(proxy: &Proxy, name: &str) -> u64 {
    redshard_proxy::metrics::scrape::render(proxy.state())
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn tls_clients_set_and_get_through_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let server = ca.issue(dir.path(), "server");
    let cluster = TestCluster::start_with(2, false, &tls_table(&server, None), &[]).await;
    let config = client_config(&ca_file, None);

    let mut client = tls_client(tls_addr(&cluster), Arc::clone(&config)).await;
    for shard in 0..2 {
        let key = key_on(2, shard, "tls");
        assert!(client.cmd(&["SET", &key, "over tls"]).await.is_ok());
        assert_eq!(client.cmd(&["GET", &key]).await, Reply::bulk("over tls"));
    }
    // A pipeline and a value larger than a TLS record and the proxy's read buffer.
    let big = "v".repeat(1024 * 1024);
    let commands: Vec<Vec<String>> = (0..200)
        .map(|i| vec!["SET".into(), format!("p{i}"), format!("{i}")])
        .chain([vec!["SET".into(), "big".into(), big.clone()]])
        .chain((0..200).map(|i| vec!["GET".into(), format!("p{i}")]))
        .collect();
    let replies = client.pipeline(&commands).await;
    assert!(replies[..201].iter().all(Reply::is_ok));
    for (i, reply) in replies[201..].iter().enumerate() {
        assert_eq!(*reply, Reply::bulk(&i.to_string()));
    }
    assert_eq!(client.cmd(&["GET", "big"]).await, Reply::bulk(&big));
    assert_eq!(
        client.cmd(&["MGET", "p1", "p2"]).await,
        Reply::Array(vec![Reply::bulk("1"), Reply::bulk("2")])
    );

    // The plaintext listener serves the same data.
    let mut plain = cluster.client().await;
    assert_eq!(plain.cmd(&["GET", "p7"]).await, Reply::bulk("7"));
    // Both listeners list their clients.
    let list = plain.cmd(&["CLIENT", "LIST"]).await.text();
    assert_eq!(list.lines().count(), 2, "{list}");

    // QUIT closes the TLS connection after its reply.
    assert!(client.cmd(&["QUIT"]).await.is_ok());
    assert_eq!(client.try_read().await, None);
}

/// A client that reads late, through a small receive buffer, still gets a reply much larger
/// than the socket's buffers and rustls's: the session keeps writing (and flushing what
/// rustls holds) as the client reads. (The unit tests of `session/stream.rs` pin down the
/// case of records left inside rustls.)
#[tokio::test]
async fn a_client_that_reads_late_gets_the_whole_reply() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let server = ca.issue(dir.path(), "server");
    let cluster = TestCluster::start_with(1, false, &tls_table(&server, None), &[]).await;
    let value = "w".repeat(8 * 1024 * 1024);
    assert!(cluster
        .client()
        .await
        .cmd(&["SET", "w", &value])
        .await
        .is_ok());

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(tls_addr(&cluster)).await.unwrap();
    let tls = TlsConnector::from(client_config(&ca_file, None))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut client = Client::over(tls);
    client.send_raw(b"GET w\r\n").await;
    // The session writes what the socket takes; the rest waits inside rustls.
    // The client reads late (the scenario): the proxy's writes back up meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.read().await, Reply::bulk(&value));
}

#[tokio::test]
async fn plaintext_on_the_tls_port_is_closed_without_a_byte_sent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let server = ca.issue(dir.path(), "server");
    let cluster = TestCluster::start_with(1, false, &tls_table(&server, None), &[]).await;
    let proxy = cluster.proxy.as_ref().unwrap();
    let before = counter(proxy, "redshard_tls_handshake_errors_total");

    for request in [
        &b"PING\r\n"[..],
        b"*1\r\n$4\r\nPING\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let mut tcp = TcpStream::connect(tls_addr(&cluster)).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
            .await
            .expect("the proxy closes the connection");
        // Not one byte, as from redis-server's TLS port (OpenSSL sends no alert to a client
        // that does not speak TLS): the connection ends with EOF, or with a reset when the
        // request was left unread.
        assert!(answer.is_empty(), "{request:?} got {answer:?}");
        match read {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert!(counter(proxy, "redshard_tls_handshake_errors_total") >= before + 4);
    // Nothing reached a backend, and the proxy keeps serving both ports.
    cluster.assert_never_ran(&["set"]).await;
    let mut client = tls_client(tls_addr(&cluster), client_config(&ca_file, None)).await;
    assert_eq!(client.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    assert_eq!(
        cluster.client().await.cmd(&["PING"]).await,
        Reply::Status("PONG".into())
    );
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new();
    let server_ca_file = server_ca.write(dir.path(), "server-ca.crt");
    let server = server_ca.issue(dir.path(), "server");
    let client_ca = Ca::new();
    let client_ca_file = client_ca.write(dir.path(), "client-ca.crt");
    let good = client_ca.issue(dir.path(), "good-client");
    let stranger = Ca::new().issue(dir.path(), "stranger");
    let extra = tls_table(&server, Some(&client_ca_file));
    let cluster = TestCluster::start_with(1, false, &extra, &[]).await;
    let addr = tls_addr(&cluster);

    let mut client = tls_client(addr, client_config(&server_ca_file, Some(&good))).await;
    assert!(client.cmd(&["SET", "m", "tls"]).await.is_ok());
    assert_eq!(client.cmd(&["GET", "m"]).await, Reply::bulk("tls"));

    for cert in [None, Some(&stranger)] {
        let config = client_config(&server_ca_file, cert);
        match connect_tls(addr, config).await {
            Err(_) => {}
            Ok(stream) => assert!(refused_after_handshake(stream).await, "{cert:?} was served"),
        }
    }
    // The refused clients did not disturb the others, nor the plaintext port.
    assert_eq!(client.cmd(&["GET", "m"]).await, Reply::bulk("tls"));
    assert_eq!(
        cluster.client().await.cmd(&["GET", "m"]).await,
        Reply::bulk("tls")
    );
}

/// A redis-server that speaks only TLS (`--port 0 --tls-port`), killed on drop.
struct TlsRedis {
    port: u16,
    child: Child,
    /// Its record, for the next run to kill it if this one is interrupted.
    _record: reap::Tracked,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    /// Starts one with `server` as its certificate, trusting client certificates of `ca`
    /// and requiring one.
    async fn start(server: &Pair, ca: &Path, client: &Pair) -> Self {
        for _attempt in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--protected-mode", "no", "--tls-auth-clients", "yes"])
                .arg("--tls-cert-file")
                .arg(&server.cert)
                .arg("--tls-key-file")
                .arg(&server.key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (apt-get install redis-server)");
            // Owned at once, so that a failing check below kills it.
            let mut redis = Self {
                port,
                _record: reap::track(&child, "redis-server", Some(dir.path())),
                child,
                _dir: dir,
            };
            let config = client_config(ca, Some(client));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = redis.child.try_wait() {
                    break; // the port was taken meanwhile
                }
                if let Ok(stream) = connect_tls(addr, Arc::clone(&config)).await {
                    // Another test's server could hold the port: it must be our child.
                    let info = Client::over(stream).cmd(&["INFO", "server"]).await.text();
                    if info.contains(&format!("process_id:{}\r\n", redis.child.id())) {
                        return redis;
                    }
                    break;
                }
                // Polling interval of this wait loop, not synchronisation.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("a TLS redis-server did not start after 5 attempts");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_proxy_reaches_tls_only_backends_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let redis_cert = ca.issue(dir.path(), "redis");
    let proxy_cert = ca.issue(dir.path(), "redshard");
    let masters = [
        TlsRedis::start(&redis_cert, &ca_file, &proxy_cert).await,
        TlsRedis::start(&redis_cert, &ca_file, &proxy_cert).await,
    ];
    let addrs: Vec<String> = masters.iter().map(TlsRedis::addr).collect();
    let backend = format!(
        "[backend]\ntls = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        ca_file.display(),
        proxy_cert.cert.display(),
        proxy_cert.key.display()
    );
    let text = config_text(&addrs, &[], &backend);
    let config = Config::from_toml_str(&text, "test.toml").unwrap();
    // With the HTTP endpoint, so the health probe runs (over TLS too).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let topology = Topology::from_config(&config);
    let proxy = Proxy::serve(
        listener,
        Some(http),
        config,
        topology,
        StateOptions::default(),
    )
    .unwrap();
    let mut client = Client::connect_addr(proxy.local_addr()).await;

    for (shard, node) in addrs.iter().enumerate() {
        let key = key_on(2, shard, "backend-tls");
        assert!(client.cmd(&["SET", &key, "encrypted"]).await.is_ok());
        assert_eq!(client.cmd(&["GET", &key]).await, Reply::bulk("encrypted"));
        // The value really is on that node, read over TLS directly.
        let addr: SocketAddr = node.parse().unwrap();
        let mut direct = Client::over(
            connect_tls(addr, client_config(&ca_file, Some(&proxy_cert)))
                .await
                .unwrap(),
        );
        assert_eq!(direct.cmd(&["GET", &key]).await, Reply::bulk("encrypted"));
    }
    // Large values in both directions, pipelined with small ones.
    let big = "b".repeat(2 * 1024 * 1024);
    let replies = client
        .pipeline(&[
            vec!["SET", "big", big.as_str()],
            vec!["GET", "big"],
            vec!["STRLEN", "big"],
        ])
        .await;
    assert_eq!(
        replies,
        [
            Reply::Status("OK".into()),
            Reply::bulk(&big),
            Reply::Int(2 * 1024 * 1024)
        ]
    );
    // Split commands, a private connection (transaction) and a subscription connection.
    let (a, b) = (key_on(2, 0, "m"), key_on(2, 1, "m"));
    assert!(client.cmd(&["MSET", &a, "1", &b, "2"]).await.is_ok());
    assert_eq!(
        client.cmd(&["MGET", &a, &b]).await,
        Reply::Array(vec![Reply::bulk("1"), Reply::bulk("2")])
    );
    assert!(client.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        client.cmd(&["INCR", &a]).await,
        Reply::Status("QUEUED".into())
    );
    assert_eq!(
        client.cmd(&["EXEC"]).await,
        Reply::Array(vec![Reply::Int(2)])
    );
    let mut subscriber = Client::connect_addr(proxy.local_addr()).await;
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "news"]).await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("news"),
            Reply::Int(1)
        ])
    );
    assert_eq!(
        client.cmd(&["PUBLISH", "news", "hello"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        subscriber.read().await,
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("news"),
            Reply::bulk("hello")
        ])
    );

    // The probe reaches the masters over TLS: the proxy becomes ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = proxy.state();
    while state.health.readiness(&state.router.load()).is_err() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            state.health.readiness(&state.router.load())
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn backends_with_an_untrusted_certificate_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let proxy_cert = ca.issue(dir.path(), "redshard");
    let master = TlsRedis::start(&ca.issue(dir.path(), "redis"), &ca_file, &proxy_cert).await;
    let other_ca = Ca::new().write(dir.path(), "other-ca.crt");
    for (trusted, name) in [(&other_ca, None), (&ca_file, Some("redis.internal"))] {
        let mut backend = format!(
            "[backend]\ntls = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nreconnect_backoff_min_ms = 10\n",
            trusted.display(),
            proxy_cert.cert.display(),
            proxy_cert.key.display()
        );
        if let Some(name) = name {
            backend.push_str(&format!("tls_server_name = \"{name}\"\n"));
        }
        let text = config_text(&[master.addr()], &[], &backend);
        let proxy = start_proxy(Config::from_toml_str(&text, "test.toml").unwrap()).await;
        let mut client = Client::connect_addr(proxy.local_addr()).await;
        match client.cmd(&["GET", "k"]).await {
            Reply::Error(e) => assert!(e.contains("unavailable: TLS handshake failed"), "{e}"),
            other => panic!("served through an untrusted backend: {other:?}"),
        }
        proxy.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_reload_serves_new_certificates_to_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = Ca::new();
    let first_ca_file = first_ca.write(dir.path(), "first-ca.crt");
    first_ca.issue(dir.path(), "server");
    let master = redshard_tests::RedisServer::start();
    // Relative paths: resolved against the config file's folder.
    let extra = "tls_listen = \"127.0.0.1:0\"\n[tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n";
    let path = dir.path().join("redshard.toml");
    std::fs::write(&path, config_text(&[master.addr()], &[], extra)).unwrap();
    let config = Config::load(&path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let topology = Topology::from_config(&config);
    let options = StateOptions {
        config_path: Some(path.clone()),
        log_level: None,
    };
    let proxy = Proxy::serve(listener, None, config, topology, options).unwrap();
    let addr = proxy.tls_addr().unwrap();

    let mut old = tls_client(addr, client_config(&first_ca_file, None)).await;
    assert!(old.cmd(&["SET", "r", "1"]).await.is_ok());

    // Nothing changed: nothing to apply.
    let report = proxy.reload().unwrap();
    assert!(report.applied.is_empty(), "{report:?}");

    // New files from another CA, under the same names.
    let second_ca = Ca::new();
    let second_ca_file = second_ca.write(dir.path(), "second-ca.crt");
    second_ca.issue(dir.path(), "server");
    let report = proxy.reload().unwrap();
    assert_eq!(report.applied, ["tls (certificate files re-read)"]);
    assert!(report.needs_restart.is_empty(), "{report:?}");

    // New connections get the new certificate: clients trusting only the old CA refuse it.
    assert!(connect_tls(addr, client_config(&first_ca_file, None))
        .await
        .is_err());
    let mut new = tls_client(addr, client_config(&second_ca_file, None)).await;
    assert_eq!(new.cmd(&["GET", "r"]).await, Reply::bulk("1"));
    // The connection opened before the reload goes on.
    assert!(old.cmd(&["SET", "r", "2"]).await.is_ok());
    assert_eq!(new.cmd(&["GET", "r"]).await, Reply::bulk("2"));

    // A broken key file refuses the reload; the certificate in use stays.
    let errors_before = counter(&proxy, "redshard_config_reloads_total{result=\"error\"}");
    std::fs::write(dir.path().join("server.key"), "not a key\n").unwrap();
    let error = proxy.reload().unwrap_err().to_string();
    assert!(error.starts_with("TLS: tls.key_file"), "{error}");
    assert!(error.contains("server.key"), "{error}");
    assert!(counter(&proxy, "redshard_config_reloads_total{result=\"error\"}") > errors_before);
    let mut after = tls_client(addr, client_config(&second_ca_file, None)).await;
    assert_eq!(after.cmd(&["GET", "r"]).await, Reply::bulk("2"));

    // Moving tls_listen needs a restart; the certificate files still reload.
    second_ca.issue(dir.path(), "server");
    let moved = extra.replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(&path, config_text(&[master.addr()], &[], &moved)).unwrap();
    let report = proxy.reload().unwrap();
    assert_eq!(report.needs_restart, ["tls_listen"]);
    assert_eq!(report.applied, ["tls (certificate files re-read)"]);
    proxy.shutdown(Duration::from_secs(1)).await;
}
