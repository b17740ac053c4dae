use redshard_config::CertFiles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::test_pki::Ca;
use super::*;

fn server(files: &CertFiles, client_ca: Option<PathBuf>) -> TlsConfig {
    TlsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_file: files.cert_file.clone(),
        key_file: files.key_file.clone(),
        client_ca_file: client_ca,
    }
}

/// One handshake between `server` and `client` over loopback, then a byte each way.
async fn handshake(server: &ServerTls, client: &BackendTls) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let node = NodeAddr::parse(&listener.local_addr()?.to_string()).unwrap();
    let acceptor = server.acceptor();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.flush().await
    });
    let tcp = TcpStream::connect(node.as_str()).await?;
    let mut tls = client.connect(&node, tcp).await?;
    tls.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await?;
    assert_eq!(&byte, b"x");
    accepting.await.unwrap()
}

#[tokio::test]
async fn a_proxy_and_a_backend_shake_hands_with_files_from_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let server_files = ca.issue(dir.path(), "server", &["127.0.0.1", "localhost"]);
    let client_files = ca.issue(dir.path(), "client", &["redshard"]);
    let server_tls = ServerTls::load(&server(&server_files, Some(ca_file.clone()))).unwrap();
    let client = |client_cert| BackendTlsConfig {
        ca_file: ca_file.clone(),
        server_name: None,
        client_cert,
    };

    let with_cert = BackendTls::load(&client(Some(client_files))).unwrap();
    handshake(&server_tls, &with_cert).await.unwrap();

    // Mutual TLS: no client certificate, no connection.
    let without_cert = BackendTls::load(&client(None)).unwrap();
    assert!(handshake(&server_tls, &without_cert).await.is_err());

    // A name the certificate does not carry fails the client's check.
    let mut wrong_name = client(None);
    wrong_name.server_name = Some("redis.internal".into());
    let wrong_name = BackendTls::load(&wrong_name).unwrap();
    let open_server = ServerTls::load(&server(&server_files, None)).unwrap();
    let error = handshake(&open_server, &wrong_name).await.unwrap_err();
    assert!(
        error.to_string().starts_with("TLS handshake failed"),
        "{error}"
    );
    handshake(&open_server, &without_cert).await.unwrap();
}

#[test]
fn unusable_files_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let files = ca.issue(dir.path(), "server", &["localhost"]);
    let other = ca.issue(dir.path(), "other", &["localhost"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let error = |config: TlsConfig| ServerTls::load(&config).unwrap_err().to_string();

    let message = error(server(
        &CertFiles {
            cert_file: missing.clone(),
            key_file: files.key_file.clone(),
        },
        None,
    ));
    assert!(
        message.starts_with(&format!("tls.cert_file {}: cannot read", missing.display())),
        "{message}"
    );
    let message = error(server(
        &CertFiles {
            cert_file: garbage.clone(),
            key_file: files.key_file.clone(),
        },
        None,
    ));
    assert!(message.contains("holds no PEM certificate"), "{message}");
    let message = error(server(
        &CertFiles {
            cert_file: files.cert_file.clone(),
            key_file: files.cert_file.clone(),
        },
        None,
    ));
    assert!(message.starts_with("tls.key_file"), "{message}");
    assert!(message.contains("holds no PEM private key"), "{message}");
    let message = error(server(
        &CertFiles {
            cert_file: files.cert_file.clone(),
            key_file: other.key_file.clone(),
        },
        None,
    ));
    assert!(message.starts_with("tls.key_file"), "{message}");
    assert!(
        message.contains("cannot be used with the certificate"),
        "{message}"
    );
    let message = error(server(&files, Some(garbage.clone())));
    assert!(message.starts_with("tls.client_ca_file"), "{message}");

    let message = BackendTls::load(&BackendTlsConfig {
        ca_file: garbage,
        server_name: None,
        client_cert: None,
    })
    .unwrap_err()
    .to_string();
    assert!(message.starts_with("backend.tls_ca_file"), "{message}");
}

#[test]
fn a_reload_reports_changed_files_and_keeps_the_old_ones_when_the_new_fail() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let files = ca.issue(dir.path(), "server", &["localhost"]);
    let mut config = Config {
        tls: Some(server(&files, None)),
        ..Config::default()
    };
    config.backend.tls = Some(BackendTlsConfig {
        ca_file: ca.write(dir.path(), "ca.crt"),
        server_name: None,
        client_cert: None,
    });
    let tls = Tls::load(&config).unwrap();
    let server_config = |tls: &Tls| tls.server.as_ref().unwrap().acceptor().config().clone();
    let first = server_config(&tls);

    assert!(tls.prepare_reload(&config).unwrap().apply().is_empty());
    assert!(
        Arc::ptr_eq(&first, &server_config(&tls)),
        "unchanged files keep their config"
    );

    // New files under the same names, from another CA.
    let other = Ca::new();
    other.issue(dir.path(), "server", &["localhost"]);
    other.write(dir.path(), "ca.crt");
    assert_eq!(
        tls.prepare_reload(&config).unwrap().apply(),
        [
            "tls (certificate files re-read)",
            "backend.tls (certificate files re-read)"
        ]
    );
    let second = server_config(&tls);
    assert!(!Arc::ptr_eq(&first, &second));

    // A broken key refuses the reload; the certificates in use stay.
    std::fs::write(&files.key_file, "broken").unwrap();
    let message = tls.prepare_reload(&config).unwrap_err().to_string();
    assert!(message.starts_with("tls.key_file"), "{message}");
    assert!(Arc::ptr_eq(&second, &server_config(&tls)));

    // TLS the running proxy does not have is not read (turning it on needs a restart).
    let plain = Tls::default();
    assert!(plain.prepare_reload(&config).unwrap().apply().is_empty());
}
