use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::Config;

const SHARD: &str = r#"
[[shard]]
name = "s1"
master = "127.0.0.1:6381"
slots = ["0-16383"]
"#;

fn parse(cluster: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(&format!("{cluster}\n{SHARD}"), "test.toml")
}

/// The error for `cluster`, which must name `line` of the text and each of `words`.
fn assert_error(cluster: &str, line: usize, words: &[&str]) {
    let message = match parse(cluster) {
        Ok(config) => panic!("accepted:\n{cluster}\nas {:?}", config.cluster),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains(&format!("line {line}")),
        "expected line {line} in: {message}"
    );
    for word in words {
        assert!(message.contains(word), "expected {word:?} in: {message}");
    }
}

#[test]
fn no_cluster_table_means_no_fleet() {
    assert_eq!(parse("").unwrap().cluster, None);
}

#[test]
fn etcd_alone_takes_every_default() {
    let cluster = parse("[cluster]\netcd = [\"127.0.0.1:2379\"]")
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(
        cluster.etcd,
        vec![NodeAddr::parse("127.0.0.1:2379").unwrap()]
    );
    assert_eq!(cluster.prefix, DEFAULT_CLUSTER_PREFIX);
    assert_eq!(
        cluster.lease_ttl,
        Duration::from_millis(DEFAULT_LEASE_TTL_MS)
    );
    assert_eq!(
        cluster.peer_poll_interval,
        Duration::from_millis(DEFAULT_PEER_POLL_INTERVAL_MS)
    );
    assert_eq!(cluster.proxy_id, None);
    assert_eq!(cluster.auth, None);
    assert_eq!(cluster.tls, None);
}

#[test]
fn every_key_is_read() {
    let cluster = parse(
        r#"[cluster]
etcd = ["etcd-1:2379", "10.0.0.2:2379"]
prefix = "/prod/redshard"
lease_ttl_ms = 5000
proxy_id = "proxy-a"
user = "redshard"
password = "pw"
ca_file = "ca.crt"
cert_file = "client.crt"
key_file = "client.key"
"#,
    )
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(cluster.etcd.len(), 2);
    assert_eq!(cluster.prefix, "/prod/redshard");
    assert_eq!(cluster.lease_ttl, Duration::from_secs(5));
    assert_eq!(cluster.proxy_id.as_deref(), Some("proxy-a"));
    let auth = cluster.auth.unwrap();
    assert_eq!(
        (auth.user.as_str(), auth.password.as_str()),
        ("redshard", "pw")
    );
    assert!(
        !format!("{auth:?}").contains("pw"),
        "Debug shows the password"
    );
    let tls = cluster.tls.unwrap();
    assert_eq!(tls.ca_file, PathBuf::from("ca.crt"));
    let cert = tls.client_cert.unwrap();
    assert_eq!(cert.cert_file, PathBuf::from("client.crt"));
    assert_eq!(cert.key_file, PathBuf::from("client.key"));
}

#[test]
fn tls_paths_are_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redshard.toml");
    let text = format!("[cluster]\netcd = [\"127.0.0.1:2379\"]\nca_file = \"tls/ca.crt\"\n{SHARD}");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let tls = config.cluster.unwrap().tls.unwrap();
    assert_eq!(tls.ca_file, dir.path().join(Path::new("tls/ca.crt")));
}

#[test]
fn a_cluster_table_needs_endpoints() {
    assert_error(
        "[cluster]\nprefix = \"/x\"",
        1,
        &["cluster.etcd", "is missing"],
    );
    assert_error("[cluster]\netcd = []", 2, &["cluster.etcd", "at least one"]);
    let many: Vec<String> = (0..17)
        .map(|i| format!("\"127.0.0.1:{}\"", 2000 + i))
        .collect();
    assert_error(
        &format!("[cluster]\netcd = [{}]", many.join(", ")),
        2,
        &["at most 16"],
    );
}

#[test]
fn bad_endpoints_are_refused() {
    assert_error(
        "[cluster]\netcd = [\"http://127.0.0.1:2379\"]",
        2,
        &["cluster.etcd[0]", "without a scheme"],
    );
    assert_error("[cluster]\netcd = [\"127.0.0.1\"]", 2, &["cluster.etcd[0]"]);
    assert_error(
        "[cluster]\netcd = [\"127.0.0.1:2379\", \"127.0.0.1:2379\"]",
        2,
        &["cluster.etcd[1]", "listed twice"],
    );
}

#[test]
fn bad_prefixes_are_refused() {
    for prefix in ["redshard", "/", "/a/", "/a//b", "/a b", ""] {
        assert_error(
            &format!("[cluster]\netcd = [\"127.0.0.1:2379\"]\nprefix = {prefix:?}"),
            3,
            &["cluster.prefix"],
        );
    }
    assert!(check_prefix("/a/b-c_d.e").is_ok());
}

#[test]
fn lease_ttl_is_bounded_whole_seconds() {
    let ttl = |ms: u64| format!("[cluster]\netcd = [\"127.0.0.1:2379\"]\nlease_ttl_ms = {ms}");
    assert_error(
        &ttl(1000),
        3,
        &["cluster.lease_ttl_ms", "between 2000 and 60000"],
    );
    assert_error(&ttl(61_000), 3, &["between 2000 and 60000"]);
    assert_error(&ttl(2500), 3, &["whole seconds"]);
    let ok = parse(&ttl(2000)).unwrap().cluster.unwrap();
    assert_eq!(ok.lease_ttl, Duration::from_secs(2));
}

#[test]
fn the_peer_poll_interval_is_bounded_by_the_lease() {
    let poll = |ttl: u64, ms: u64| {
        format!("[cluster]\netcd = [\"127.0.0.1:2379\"]\nlease_ttl_ms = {ttl}\npeer_poll_interval_ms = {ms}")
    };
    assert_error(
        &poll(2000, 10),
        4,
        &["cluster.peer_poll_interval_ms", "between 50"],
    );
    assert_error(&poll(2000, 600), 4, &["a quarter of cluster.lease_ttl_ms"]);
    let ok = parse(&poll(2000, 500)).unwrap().cluster.unwrap();
    assert_eq!(ok.peer_poll_interval, Duration::from_millis(500));
}

#[test]
fn bad_proxy_ids_are_refused() {
    for id in ["", "a/b", "a b"] {
        assert_error(
            &format!("[cluster]\netcd = [\"127.0.0.1:2379\"]\nproxy_id = {id:?}"),
            3,
            &["cluster.proxy_id"],
        );
    }
    assert!(check_proxy_id("127.0.0.1:6379").is_ok());
    assert!(check_proxy_id("[::1]:6379").is_ok());
    assert!(check_proxy_id(&"x".repeat(129)).is_err());
}

#[test]
fn credentials_come_in_pairs() {
    let base = "[cluster]\netcd = [\"127.0.0.1:2379\"]\n";
    assert_error(
        &format!("{base}user = \"u\""),
        3,
        &["cluster.user", "password"],
    );
    assert_error(
        &format!("{base}password = \"p\""),
        3,
        &["cluster.password", "user"],
    );
    assert_error(
        &format!("{base}user = \"\"\npassword = \"p\""),
        3,
        &["cluster.user", "must not be empty"],
    );
}

#[test]
fn client_certificates_need_their_key_and_a_ca() {
    let base = "[cluster]\netcd = [\"127.0.0.1:2379\"]\n";
    assert_error(
        &format!("{base}cert_file = \"c\""),
        3,
        &["cluster.cert_file", "ca_file"],
    );
    assert_error(
        &format!("{base}ca_file = \"ca\"\ncert_file = \"c\""),
        4,
        &["cluster.cert_file", "key_file"],
    );
    assert_error(
        &format!("{base}ca_file = \"ca\"\nkey_file = \"k\""),
        4,
        &["cluster.key_file", "cert_file"],
    );
    assert_error(
        &format!("{base}ca_file = \"\""),
        3,
        &["cluster.ca_file", "empty"],
    );
}

#[test]
fn unknown_keys_are_refused() {
    let message = parse("[cluster]\netcd = [\"127.0.0.1:2379\"]\nleader = true")
        .unwrap_err()
        .to_string();
    assert!(message.contains("leader"), "{message}");
}

#[test]
fn proxy_mirroring_is_refused_in_a_fleet() {
    let message = parse("[replication]\nmode = \"proxy\"\n[cluster]\netcd = [\"127.0.0.1:2379\"]")
        .unwrap_err()
        .to_string();
    assert!(message.contains("replication.mode"), "{message}");
    assert!(message.contains("one proxy only"), "{message}");
    assert!(parse("[replication]\nmode = \"proxy\"").is_ok());
}

#[test]
fn the_advertised_admin_address_is_one_to_connect_to_and_needs_an_admin_port() {
    let admin = "admin_listen = \"0.0.0.0:6390\"\nadmin_password = \"pw\"\n";
    let cluster = parse(&format!(
        "{admin}[cluster]\netcd = [\"127.0.0.1:2379\"]\nadvertise_admin = \"Proxy-A.example:6390\""
    ))
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(
        cluster.advertise_admin,
        Some(NodeAddr::parse("proxy-a.example:6390").unwrap())
    );
    assert_error(
        &format!(
            "{admin}[cluster]\netcd = [\"127.0.0.1:2379\"]\nadvertise_admin = \"0.0.0.0:6390\""
        ),
        5,
        &["cluster.advertise_admin", "wildcard"],
    );
    assert_error(
        &format!("{admin}[cluster]\netcd = [\"127.0.0.1:2379\"]\nadvertise_admin = \"proxy-a\""),
        5,
        &["cluster.advertise_admin"],
    );
    let message =
        parse("[cluster]\netcd = [\"127.0.0.1:2379\"]\nadvertise_admin = \"10.0.0.5:6390\"")
            .unwrap_err()
            .to_string();
    assert!(
        message.contains("cluster.advertise_admin") && message.contains("admin_listen"),
        "{message}"
    );
}

#[test]
fn forwarding_has_bounds_with_defaults() {
    let cluster = parse("[cluster]\netcd = [\"127.0.0.1:2379\"]")
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(cluster.forward_timeout, None);
    assert_eq!(
        cluster.forward_max_reply_bytes,
        DEFAULT_FORWARD_MAX_REPLY_BYTES
    );
    let set = parse(
        "[cluster]\netcd = [\"127.0.0.1:2379\"]\nforward_timeout_ms = 2500\nforward_max_reply_bytes = 65536",
    )
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(set.forward_timeout, Some(Duration::from_millis(2500)));
    assert_eq!(set.forward_max_reply_bytes, 65536);
    assert_error(
        "[cluster]\netcd = [\"127.0.0.1:2379\"]\nforward_max_reply_bytes = 10",
        3,
        &["cluster.forward_max_reply_bytes"],
    );
    assert_error(
        "[cluster]\netcd = [\"127.0.0.1:2379\"]\nforward_timeout_ms = 0",
        3,
        &["cluster.forward_timeout_ms"],
    );
}
