use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::error::ConfigError;

/// Three shards covering every slot, as the usual example.
const SHARDS: &str = r#"
[[shard]]
name = "s1"
master = "127.0.0.1:6381"
replicas = ["127.0.0.1:6384"]
slots = ["0-5460"]

[[shard]]
name = "s2"
master = "127.0.0.1:6382"
slots = ["5461-10922"]

[[shard]]
name = "s3"
master = "redis-3:6379"
replicas = ["redis-3b:6379", "[::1]:6390"]
slots = ["10923-16383"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "test.toml")
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
        Err(e) => e.to_string(),
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        + 1
}

/// Asserts the error for `text` names the origin, the line holding `at`, and each of `words`.
fn assert_error(text: &str, at: &str, words: &[&str]) {
    let message = error(text);
    assert!(message.starts_with("test.toml: "), "{message}");
    let line = format!("line {}", line_of(text, at));
    assert!(message.contains(&line), "expected {line:?} in: {message}");
    for word in words {
        assert!(message.contains(word), "expected {word:?} in: {message}");
    }
}

#[test]
fn minimal_file_takes_every_default() {
    let config = parse(SHARDS).unwrap();
    let defaults = Config::default();
    assert_eq!(config.listen, defaults.listen);
    assert_eq!(
        config.listen,
        "127.0.0.1:6379".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.password, None);
    assert!(!config.allow_flush);
    assert!(
        config.backend.manage_acl,
        "the proxy manages its ACL users by default"
    );
    assert_eq!(config.shutdown_grace, Duration::from_secs(5));
    assert_eq!(config.topology_file, None);
    assert_eq!(
        config.metrics_listen,
        Some("127.0.0.1:9121".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        config.metrics_listen,
        Some(crate::file::DEFAULT_METRICS_LISTEN.parse().unwrap())
    );
    assert_eq!(config.metrics_namespace, "redshard");
    assert_eq!(config.backend, BackendConfig::default());
    assert_eq!(config.backend.lanes, 0, "one lane per worker thread");
    assert_eq!(config.backend.databases, 16, "Redis's own default");
    assert_eq!(config.backend.max_unwritten_bytes, 64 * 1024);
    assert_eq!(config.backend.connect_timeout, Duration::from_millis(1000));
    assert_eq!(config.backend.response_timeout, Duration::from_millis(5000));
    assert_eq!(
        config.backend.reconnect_backoff_min,
        Duration::from_millis(50)
    );
    assert_eq!(
        config.backend.reconnect_backoff_max,
        Duration::from_millis(2000)
    );
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.limits.max_clients, 10_000);
    assert_eq!(config.limits.max_bulk_bytes, 536_870_912);
    assert_eq!(config.limits.max_multibulk_len, 1_048_576);
    assert_eq!(config.limits.max_inline_bytes, 65_536);
    assert_eq!(config.limits.max_query_buffer_bytes, 1_073_741_824);
    assert_eq!(config.limits.max_pipeline, 100_000);
    assert_eq!(config.limits.max_reply_depth, 16_384);
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(
        Config {
            shards: Vec::new(),
            ..config.clone()
        },
        defaults
    );

    assert_eq!(config.shards.len(), 3);
    let s3 = &config.shards[2];
    assert_eq!(s3.name, "s3");
    assert_eq!(s3.master.as_str(), "redis-3:6379");
    let replicas: Vec<&str> = s3.replicas.iter().map(NodeAddr::as_str).collect();
    assert_eq!(replicas, ["redis-3b:6379", "[::1]:6390"]);
    assert_eq!(
        s3.slots,
        [SlotRange {
            start: 10923,
            end: 16383
        }]
    );
}

#[test]
fn full_file_sets_every_key() {
    let text = format!(
        r#"
listen = "0.0.0.0:7000"
password = "secret"
allow_flush = true
shutdown_grace_ms = 0
busy_poll_us = 200
topology_file = "/var/lib/redshard/topology.toml"
metrics_listen = "0.0.0.0:9200"
metrics_namespace = "redis"
tls_listen = "0.0.0.0:7001"

[tls]
cert_file = "/etc/redshard/server.crt"
key_file = "/etc/redshard/server.key"
client_ca_file = "/etc/redshard/clients.crt"

[backend]
username = "proxyuser"
password = "pw"
manage_acl = false
lanes = 64
max_unwritten_bytes = 8192
databases = 100
ready_connections = false
connect_timeout_ms = 10
response_timeout_ms = 20
reconnect_backoff_min_ms = 30
reconnect_backoff_max_ms = 30
tls = true
tls_ca_file = "/etc/redshard/redis-ca.crt"
tls_server_name = "redis.internal"
tls_cert_file = "/etc/redshard/client.crt"
tls_key_file = "/etc/redshard/client.key"

[limits]
max_clients = 1
max_bulk_bytes = 100
max_multibulk_len = 3
max_inline_bytes = 100
max_query_buffer_bytes = 100
max_pipeline = 5
max_reply_depth = 1024
output_buffer_hard_bytes = 4000
output_buffer_soft_bytes = 3000
max_inflight_reply_bytes = 2000
monitor_buffer_bytes = 1500
output_buffer_soft_seconds = 7
auth_timeout_ms = 40
tls_handshake_timeout_ms = 50
auth_failure_delay_ms = 0
auth_throttle_sources = 9
acllog_max_len = 64
close_linger_ms = 60
idle_park_ms = 70
client_timeout_s = 300
coalesce_replies = false
coalesce_max_bytes = 4096

[log]
level = "info,redshard=debug"
format = "json"
{SHARDS}"#
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.listen, "0.0.0.0:7000".parse::<SocketAddr>().unwrap());
    assert_eq!(config.password.as_deref(), Some("secret"));
    assert!(config.allow_flush);
    assert_eq!(config.shutdown_grace, Duration::ZERO);
    assert_eq!(config.busy_poll, Duration::from_micros(200));
    assert_eq!(
        config.topology_file.as_deref(),
        Some(Path::new("/var/lib/redshard/topology.toml"))
    );
    assert_eq!(
        config.metrics_listen,
        Some("0.0.0.0:9200".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(config.metrics_namespace, "redis");
    assert_eq!(
        config.tls,
        Some(TlsConfig {
            listen: "0.0.0.0:7001".parse().unwrap(),
            cert_file: "/etc/redshard/server.crt".into(),
            key_file: "/etc/redshard/server.key".into(),
            client_ca_file: Some("/etc/redshard/clients.crt".into()),
        })
    );
    assert_eq!(
        config.backend,
        BackendConfig {
            username: Some("proxyuser".into()),
            password: Some("pw".into()),
            control_username: None,
            control_password: None,
            manage_acl: false,
            // Without manage_acl, keyless scripts can only run with full rights.
            keyless_scripts: KeylessScripts::AnyMaster,
            lanes: 64,
            max_unwritten_bytes: 8192,
            databases: 100,
            ready_connections: false,
            connect_timeout: Duration::from_millis(10),
            response_timeout: Duration::from_millis(20),
            reconnect_backoff_min: Duration::from_millis(30),
            reconnect_backoff_max: Duration::from_millis(30),
            tls: Some(BackendTlsConfig {
                ca_file: "/etc/redshard/redis-ca.crt".into(),
                server_name: Some("redis.internal".into()),
                client_cert: Some(CertFiles {
                    cert_file: "/etc/redshard/client.crt".into(),
                    key_file: "/etc/redshard/client.key".into(),
                }),
            }),
            allowed_nodes: Vec::new(),
        }
    );
    assert_eq!(
        config.limits,
        Limits {
            max_clients: 1,
            max_bulk_bytes: 100,
            max_multibulk_len: 3,
            max_inline_bytes: 100,
            max_query_buffer_bytes: 100,
            max_pipeline: 5,
            max_reply_depth: 1024,
            output_buffer_hard_bytes: 4000,
            output_buffer_soft_bytes: 3000,
            max_inflight_reply_bytes: 2000,
            monitor_buffer_bytes: 1500,
            output_buffer_soft: Duration::from_secs(7),
            auth_timeout: Duration::from_millis(40),
            tls_handshake_timeout: Duration::from_millis(50),
            auth_failure_delay: Duration::ZERO,
            auth_throttle_sources: 9,
            acllog_max_len: 64,
            close_linger: Duration::from_millis(60),
            idle_park: Duration::from_millis(70),
            client_timeout: Duration::from_secs(300),
            tracking_table_max_keys: DEFAULT_TRACKING_TABLE_MAX_KEYS,
            coalesce_replies: false,
            coalesce_max_bytes: 4096,
        }
    );
    assert_eq!(config.log.level, "info,redshard=debug");
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn slots_may_be_single_and_spread() {
    let text = r#"
[[shard]]
name = "a"
master = "10.0.0.1:6379"
slots = ["0", "2-16383"]
[[shard]]
name = "b"
master = "10.0.0.2:6379"
slots = ["1"]
[[shard]]
name = "empty"
master = "10.0.0.3:6379"
"#;
    let config = parse(text).unwrap();
    assert_eq!(config.shards[0].slots.len(), 2);
    assert!(config.shards[2].slots.is_empty());
}

#[test]
fn unknown_keys_are_refused_with_line() {
    let text = format!("lsten = \"127.0.0.1:1\"\n{SHARDS}");
    assert_error(&text, "lsten", &["lsten", "unknown field"]);
    let text = format!("[backend]\nlanes = 2\nlans = 2\n{SHARDS}");
    assert_error(&text, "lans =", &["backend: unknown field `lans`"]);
    let text = format!("[limits]\nmax_client = 2\n{SHARDS}");
    assert_error(&text, "max_client", &["max_client"]);
    let text = format!("[log]\nlevl = \"x\"\n{SHARDS}");
    assert_error(&text, "levl", &["levl"]);
    let text = SHARDS.replace("slots = [\"5461-10922\"]", "slot = [\"5461-10922\"]");
    assert_error(&text, "slot =", &["`slot`"]);
    let text = format!("[clustr]\nx = 1\n{SHARDS}");
    assert_error(&text, "[clustr]", &["clustr"]);
    let text = format!("[cluster]\nx = 1\n{SHARDS}");
    assert_error(&text, "x = 1", &["cluster: unknown field `x`"]);
}

#[test]
fn syntax_and_type_errors_name_the_line() {
    let text = format!("{SHARDS}\nlanes = = 2\n");
    assert_error(&text, "lanes = =", &[]);
    let text = format!("[backend]\nlanes = \"two\"\n{SHARDS}");
    assert_error(&text, "lanes", &["string"]);
    let text = format!("[limits]\nmax_clients = -1\n{SHARDS}");
    assert_error(&text, "max_clients", &["limits.max_clients: ", "-1"]);
    let text = format!("[log]\nformat = \"xml\"\n{SHARDS}");
    assert_error(&text, "format", &["log.format: ", "xml", "text", "json"]);
    let text = format!("allow_flush = \"yes\"\n{SHARDS}");
    assert_error(&text, "allow_flush", &["string"]);
    let text = SHARDS.replace("name = \"s2\"\n", "");
    let message = error(&text);
    assert!(
        message.contains("name") && message.contains("line"),
        "{message}"
    );
}

#[test]
fn no_shards_is_refused() {
    let message = error("listen = \"127.0.0.1:7000\"\n");
    assert!(
        message.contains("test.toml: shard: no [[shard]]"),
        "{message}"
    );
}

#[test]
fn shard_names_must_be_valid_and_unique() {
    let text = SHARDS.replace("name = \"s2\"", "name = \"\"");
    assert_error(
        &text,
        "name = \"\"",
        &["shard[1].name", "must not be empty"],
    );
    let text = SHARDS.replace("name = \"s2\"", "name = \"has space\"");
    assert_error(&text, "has space", &["shard[1].name", "letters"]);
    let long = "x".repeat(65);
    let text = SHARDS.replace("name = \"s2\"", &format!("name = \"{long}\""));
    assert_error(&text, &long, &["shard[1].name", "at most 64"]);
    let text = SHARDS.replace("name = \"s3\"", "name = \"s1\"");
    let at = "name = \"s1\"\nmaster = \"redis-3";
    let message = error(&text);
    let line = text[..text.find(at).unwrap()].lines().count() + 1;
    assert!(
        message.contains(&format!("line {line}: shard[2].name")),
        "{message}"
    );
    assert!(
        message.contains("\"s1\" is already the name of shard[0]"),
        "{message}"
    );
}

#[test]
fn node_addresses_must_be_valid_and_unique() {
    let text = SHARDS.replace("127.0.0.1:6382", "127.0.0.1");
    assert_error(
        &text,
        "master = \"127.0.0.1\"",
        &["shard[1].master", "host:port"],
    );
    let text = SHARDS.replace("127.0.0.1:6382", "127.0.0.1:0");
    assert_error(&text, ":0\"", &["shard[1].master", "port"]);
    let text = SHARDS.replace("redis-3b:6379", "bad_host!:6379");
    assert_error(&text, "bad_host!", &["shard[2].replicas[0]"]);
    // Master of s2 is the replica of s1.
    let text = SHARDS.replace("127.0.0.1:6382", "127.0.0.1:6384");
    assert_error(
        &text,
        "master = \"127.0.0.1:6384\"",
        &[
            "shard[1].master",
            "127.0.0.1:6384 is already the replica of shard \"s1\"",
        ],
    );
    // Replica of s3 is the master of s2.
    let text = SHARDS.replace("[::1]:6390", "127.0.0.1:6382");
    assert_error(
        &text,
        "replicas = [\"redis-3b",
        &["shard[2].replicas[1]", "already the master of shard \"s2\""],
    );
    // The same node twice in one shard, written differently.
    let text = SHARDS.replace("[::1]:6390", "REDIS-3B:6379");
    assert_error(
        &text,
        "REDIS-3B",
        &["shard[2].replicas[1]", "redis-3b:6379"],
    );
    // A shard's master as its own replica.
    let text = SHARDS.replace("127.0.0.1:6384", "127.0.0.1:6381");
    assert_error(
        &text,
        "replicas = [\"127.0.0.1:6381",
        &["shard[0].replicas[0]"],
    );
}

#[test]
fn the_proxy_must_not_be_its_own_backend() {
    let text = format!("listen = \"127.0.0.1:6382\"\n{SHARDS}");
    assert_error(
        &text,
        "master = \"127.0.0.1:6382\"",
        &["shard[1].master", "itself"],
    );
    let text = format!("listen = \"0.0.0.0:6382\"\n{SHARDS}");
    assert_error(&text, "master = \"127.0.0.1:6382\"", &["itself"]);
    let text = format!("listen = \"127.0.0.2:6382\"\n{SHARDS}");
    assert!(parse(&text).is_ok());
}

#[test]
fn bad_slot_ranges_are_refused() {
    for (bad, word) in [
        ("5-3", "starts after it ends"),
        ("16384", "0-16383"),
        ("abc", "abc"),
    ] {
        let text = SHARDS.replace("\"5461-10922\"", &format!("\"{bad}\""));
        assert_error(&text, &format!("\"{bad}\""), &["shard[1].slots", word]);
    }
    let text = SHARDS.replace("\"5461-10922\"", "5461");
    assert_error(&text, "slots = [5461]", &["string"]);
}

#[test]
fn overlapping_slots_name_the_slot_and_both_shards() {
    let text = SHARDS.replace("\"5461-10922\"", "\"5000-10922\"");
    let message = error(&text);
    let line = line_of(&text, "5000-10922");
    assert_eq!(
        message,
        format!("test.toml: line {line}: shard[1].slots: slot 5000 is assigned to both \"s1\" and \"s2\"")
    );
    let text = SHARDS.replace("\"5461-10922\"", "\"5461-10922\", \"6000\"");
    assert_error(
        &text,
        "\"6000\"",
        &["shard[1].slots", "slot 6000 is assigned twice to \"s2\""],
    );
}

#[test]
fn unassigned_slots_are_named() {
    let text = SHARDS.replace("slots = [\"5461-10922\"]", "");
    let message = error(&text);
    assert_eq!(
        message,
        "test.toml: shard[*].slots: slots 5461-10922 are not assigned to any shard"
    );
    let text = SHARDS
        .replace("\"0-5460\"", "\"1-5460\"")
        .replace("\"5461-10922\"", "\"5461-7000\", \"7002-10922\"")
        .replace("\"10923-16383\"", "\"10923-16382\"");
    assert!(error(&text).ends_with("slots 0, 7001, 16383 are not assigned to any shard"));
    let text = SHARDS.replace("\"0-5460\"", "\"1-5460\"");
    assert!(error(&text).ends_with("slot 0 is not assigned to any shard"));
    let many: Vec<String> = (0..16384)
        .step_by(2)
        .map(|n: u32| format!("\"{n}\""))
        .collect();
    let text = format!(
        "[[shard]]\nname = \"a\"\nmaster = \"h:1\"\nslots = [{}]\n",
        many.join(", ")
    );
    assert!(error(&text).contains("1, 3, 5, 7, 9, and 8187 more ranges are not"));
}

#[test]
fn backend_values_are_bounded() {
    for (line, key, word) in [
        ("lanes = 65", "backend.lanes", "between 0 and 64, not 65"),
        (
            "max_unwritten_bytes = 0",
            "backend.max_unwritten_bytes",
            "between 1 and 1073741824, not 0",
        ),
        (
            "databases = 0",
            "backend.databases",
            "between 1 and 65536, not 0",
        ),
        (
            "databases = 65537",
            "backend.databases",
            "between 1 and 65536, not 65537",
        ),
        (
            "connect_timeout_ms = 0",
            "backend.connect_timeout_ms",
            "at least 1",
        ),
        (
            "response_timeout_ms = 0",
            "backend.response_timeout_ms",
            "at least 1",
        ),
        (
            "reconnect_backoff_min_ms = 0",
            "backend.reconnect_backoff_min_ms",
            "at least 1",
        ),
        (
            "reconnect_backoff_max_ms = 0",
            "backend.reconnect_backoff_max_ms",
            "at least 1",
        ),
        (
            "reconnect_backoff_min_ms = 3000",
            "backend.reconnect_backoff_min_ms",
            "2000",
        ),
        (
            "reconnect_backoff_max_ms = 10",
            "backend.reconnect_backoff_max_ms",
            "(50)",
        ),
        ("password = \"\"", "backend.password", "must not be empty"),
        ("username = \"\"", "backend.username", "must not be empty"),
        (
            "username = \"u\"",
            "backend.username",
            "backend.password is not",
        ),
    ] {
        let text = format!("[backend]\n{line}\n{SHARDS}");
        assert_error(&text, line, &[key, word]);
    }
    let text = format!("[backend]\npassword = \"pw\"\n{SHARDS}");
    assert_eq!(
        parse(&text).unwrap().backend.password.as_deref(),
        Some("pw")
    );
}

#[test]
fn limits_are_bounded() {
    for key in [
        "max_clients",
        "max_bulk_bytes",
        "max_multibulk_len",
        "max_inline_bytes",
        "max_query_buffer_bytes",
        "max_pipeline",
        "max_reply_depth",
        "coalesce_max_bytes",
    ] {
        let text = format!("[limits]\n{key} = 0\n{SHARDS}");
        assert_error(&text, key, &[&format!("limits.{key}"), "1", ", not 0"]);
    }
    let text = format!("[limits]\nmax_reply_depth = 1048577\n{SHARDS}");
    assert_error(&text, "max_reply_depth", &["between 1 and 1048576"]);
    let text = format!("[limits]\nauth_throttle_sources = 65537\n{SHARDS}");
    assert_error(
        &text,
        "auth_throttle_sources",
        &["limits.auth_throttle_sources", "between 0 and 65536"],
    );
    assert_eq!(
        parse(SHARDS).unwrap().limits.auth_throttle_sources,
        crate::file::DEFAULT_AUTH_THROTTLE_SOURCES
    );
    let text = format!("[limits]\nauth_throttle_sources = 0\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().limits.auth_throttle_sources, 0);
    let text = format!("[limits]\nmax_query_buffer_bytes = 1000\nmax_bulk_bytes = 1001\n{SHARDS}");
    assert_error(
        &text,
        "max_bulk_bytes",
        &["limits.max_bulk_bytes", "1001 is larger"],
    );
    let text = format!("[limits]\nmax_query_buffer_bytes = 1000\n{SHARDS}");
    assert_error(&text, "max_query_buffer_bytes", &["limits.max_bulk_bytes"]);
}

#[test]
fn top_level_values_are_checked() {
    let text = format!("listen = \"localhost:6379\"\n{SHARDS}");
    assert_error(&text, "listen", &["listen", "IP:port"]);
    let text = format!("password = \"\"\n{SHARDS}");
    assert_error(&text, "password", &["password: must not be empty"]);
    let text = format!("topology_file = \"\"\n{SHARDS}");
    assert_error(
        &text,
        "topology_file",
        &["topology_file: must not be empty"],
    );
    let text = format!("[log]\nlevel = \" \"\n{SHARDS}");
    assert_error(&text, "level", &["log.level"]);
    let text = format!("listen = \"127.0.0.1:0\"\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().listen.port(), 0);
}

#[test]
fn load_reads_the_file_and_resolves_the_topology_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redshard.toml");
    std::fs::write(
        &path,
        format!("topology_file = \"state/topology.toml\"\n{SHARDS}"),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.topology_file,
        Some(dir.path().join("state/topology.toml"))
    );

    std::fs::write(&path, format!("topology_file = \"/abs/t.toml\"\n{SHARDS}")).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.topology_file.as_deref(),
        Some(Path::new("/abs/t.toml"))
    );

    std::fs::write(&path, "[backend]\nlanes = 65\n").unwrap();
    let message = Config::load(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: line 2: backend.lanes", path.display())),
        "{message}"
    );

    std::fs::write(
        &path,
        format!(
            "tls_listen = \"127.0.0.1:0\"\n[tls]\ncert_file = \"tls/s.crt\"\nkey_file = \"/abs/s.key\"\n\
             client_ca_file = \"ca.crt\"\n[backend]\ntls = true\ntls_ca_file = \"r/ca.crt\"\n\
             tls_cert_file = \"c.crt\"\ntls_key_file = \"c.key\"\n{SHARDS}"
        ),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(tls.cert_file, dir.path().join("tls/s.crt"));
    assert_eq!(tls.key_file, Path::new("/abs/s.key"));
    assert_eq!(tls.client_ca_file, Some(dir.path().join("ca.crt")));
    let backend = config.backend.tls.unwrap();
    assert_eq!(backend.ca_file, dir.path().join("r/ca.crt"));
    let client = backend.client_cert.unwrap();
    assert_eq!(client.cert_file, dir.path().join("c.crt"));
    assert_eq!(client.key_file, dir.path().join("c.key"));

    let missing = dir.path().join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

#[test]
fn metrics_listen_is_an_address_or_off() {
    let text = format!("metrics_listen = \"off\"\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().metrics_listen, None);
    let text = format!("metrics_listen = \"127.0.0.1:0\"\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().metrics_listen.unwrap().port(), 0);
    let text = format!("metrics_listen = \"[::1]:9121\"\n{SHARDS}");
    assert!(parse(&text).unwrap().metrics_listen.unwrap().is_ipv6());
    for bad in ["localhost:9121", "", "Off", "9121"] {
        let text = format!("metrics_listen = \"{bad}\"\n{SHARDS}");
        assert_error(
            &text,
            "metrics_listen",
            &["metrics_listen: ", "IP:port", "\"off\""],
        );
    }
    let text = format!("metrics_listen = 9121\n{SHARDS}");
    assert_error(&text, "metrics_listen", &["metrics_listen", "string"]);
}

#[test]
fn metrics_listen_must_not_be_the_client_port() {
    let text =
        format!("listen = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7000\"\n{SHARDS}");
    assert_error(
        &text,
        "metrics_listen",
        &["metrics_listen: 127.0.0.1:7000 is also the client address"],
    );
    let text = format!("listen = \"0.0.0.0:7000\"\nmetrics_listen = \"127.0.0.1:7000\"\n{SHARDS}");
    assert_error(&text, "metrics_listen", &["also the client address"]);
    // The default collides too, without a line to point at.
    let text = format!("listen = \"127.0.0.1:9121\"\n{SHARDS}");
    assert_eq!(
        error(&text),
        "test.toml: metrics_listen: 127.0.0.1:9121 (the default) is also the client address \
         `listen`; choose another port"
    );
    // Other addresses, and port 0 on both (tests), are fine.
    let text =
        format!("listen = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.2:7000\"\n{SHARDS}");
    assert!(parse(&text).is_ok());
    let text = format!("listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n{SHARDS}");
    assert!(parse(&text).is_ok());
}

#[test]
fn metrics_namespace_must_be_a_prometheus_name_prefix() {
    for good in ["redis", "redshard_eu1", "_x", "A9"] {
        let text = format!("metrics_namespace = \"{good}\"\n{SHARDS}");
        assert_eq!(parse(&text).unwrap().metrics_namespace, good);
    }
    let long = "n".repeat(65);
    for (bad, word) in [
        ("", "must not be empty"),
        ("9lives", "must not start with a digit"),
        ("red-shard", "letters, digits and '_'"),
        ("a.b", "letters, digits and '_'"),
        (long.as_str(), "at most 64"),
    ] {
        let text = format!("metrics_namespace = \"{bad}\"\n{SHARDS}");
        assert_error(&text, "metrics_namespace", &["metrics_namespace: ", word]);
    }
}

#[test]
fn output_soft_limit_must_not_exceed_the_hard_one() {
    let text = format!(
        "[limits]\noutput_buffer_hard_bytes = 10\noutput_buffer_soft_bytes = 11\n{}",
        SHARDS
    );
    let err = Config::from_toml_str(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.output_buffer_soft_bytes"), "{err}");
}

#[test]
fn busy_polling_is_off_by_default_and_bounded() {
    let config = Config::from_toml_str(SHARDS, "t.toml").unwrap();
    assert_eq!(config.busy_poll, Duration::ZERO);
    let text = format!("busy_poll_us = 10000\n{SHARDS}");
    let config = Config::from_toml_str(&text, "t.toml").unwrap();
    assert_eq!(config.busy_poll, Duration::from_millis(10));
    let text = format!("busy_poll_us = 10001\n{SHARDS}");
    let err = Config::from_toml_str(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("busy_poll_us") && err.contains("must be between 0 and 10000, not 10001"),
        "{err}"
    );
}

#[test]
fn the_inflight_reply_budget_defaults_to_16_mib_and_cannot_be_zero() {
    let config = Config::from_toml_str(SHARDS, "t.toml").unwrap();
    assert_eq!(config.limits.max_inflight_reply_bytes, 16 * 1024 * 1024);
    let text = format!("[limits]\nmax_inflight_reply_bytes = 0\n{SHARDS}");
    let err = Config::from_toml_str(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.max_inflight_reply_bytes"), "{err}");
}

#[test]
fn admin_listen_must_not_take_another_port() {
    let pw = "admin_password = \"pw\"\n";
    let text =
        format!("listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7000\"\n{pw}{SHARDS}");
    assert_error(
        &text,
        "admin_listen",
        &["admin_listen: 127.0.0.1:7000 is also the client address `listen`"],
    );
    let text = format!(
        "metrics_listen = \"0.0.0.0:7001\"\nadmin_listen = \"127.0.0.1:7001\"\n{pw}{SHARDS}"
    );
    assert_error(
        &text,
        "admin_listen",
        &["also the HTTP endpoint's address `metrics_listen`"],
    );
    // Off, other ports, and port 0 everywhere (tests) are fine.
    let text = format!("listen = \"127.0.0.1:6390\"\nadmin_listen = \"off\"\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().admin_listen, None);
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{pw}{SHARDS}"
    );
    assert_eq!(parse(&text).unwrap().admin_listen.unwrap().port(), 0);
    let text = format!(
        "tls_listen = \"127.0.0.1:6380\"\nadmin_listen = \"127.0.0.1:6380\"\n{pw}[tls]\ncert_file = \"s.crt\"\nkey_file = \"s.key\"\n{SHARDS}"
    );
    assert_error(
        &text,
        "admin_listen",
        &["also the TLS client address `tls_listen`"],
    );
}

#[test]
fn the_admin_port_is_a_socket_by_default_and_tcp_needs_a_password() {
    // By default: no TCP port, an owner-only socket at the well-known path.
    let config = parse(SHARDS).unwrap();
    assert_eq!(config.admin_listen, None);
    assert_eq!(config.admin_socket, Some(crate::ha::default_admin_socket()));
    let uid = crate::ha::effective_uid().unwrap();
    assert_eq!(
        crate::ha::default_admin_socket(),
        std::path::PathBuf::from(format!("/tmp/redshard-{uid}/admin.sock"))
    );
    // TCP without admin_password is refused, naming the key, even with a client password.
    let text = format!("password = \"client\"\nadmin_listen = \"127.0.0.1:6390\"\n{SHARDS}");
    assert_error(
        &text,
        "admin_listen",
        &["admin_password: must be set when admin_listen is"],
    );
    let text = format!("admin_listen = \"127.0.0.1:6390\"\nadmin_password = \"pw\"\n{SHARDS}");
    let config = parse(&text).unwrap();
    assert_eq!(config.admin_listen.unwrap().port(), 6390);
    assert_eq!(config.admin_password.as_deref(), Some("pw"));
    // The socket's path is configurable, relative to the file's directory, or off.
    let text = format!("admin_socket = \"off\"\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().admin_socket, None);
    let text = format!("admin_socket = \"\"\n{SHARDS}");
    assert_error(&text, "admin_socket", &["must be a path"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redshard.toml");
    std::fs::write(
        &file,
        format!("admin_socket = \"run/admin.sock\"\n{SHARDS}"),
    )
    .unwrap();
    assert_eq!(
        Config::load(&file).unwrap().admin_socket,
        Some(dir.path().join("run/admin.sock"))
    );
}

#[test]
fn backend_credentials_go_only_to_nodes_the_file_names() {
    let node = |s: &str| NodeAddr::parse(s).unwrap();
    // Without credentials there is nothing to leak: any node may be added.
    let config = parse(SHARDS).unwrap();
    assert!(config.trusts_node(&node("10.9.9.9:6379")));
    // With a backend password: the [[shard]] nodes, and allowed_nodes.
    let text = format!(
        "[backend]\npassword = \"secret\"\nallowed_nodes = [\"10.0.0.0/8\", \"cache-7.internal:6379\"]\n{SHARDS}"
    );
    let config = parse(&text).unwrap();
    assert!(
        config.trusts_node(&node("127.0.0.1:6384")),
        "a configured replica"
    );
    assert!(config.trusts_node(&node("10.20.30.40:7000")));
    assert!(config.trusts_node(&node("cache-7.internal:6379")));
    assert!(
        !config.trusts_node(&node("127.0.0.1:9999")),
        "loopback is not implied"
    );
    assert!(!config.trusts_node(&node("192.168.1.1:6379")));
    // The control password counts as a credential too.
    let text = format!("[backend]\ncontrol_password = \"c\"\n{SHARDS}");
    assert!(!parse(&text).unwrap().trusts_node(&node("127.0.0.1:9999")));
    let text = format!("[backend]\nallowed_nodes = [\"10.0.0.0/40\"]\n{SHARDS}");
    assert_error(&text, "allowed_nodes", &["backend.allowed_nodes", "0..=32"]);
}

#[test]
fn tls_listen_needs_its_table_and_a_port_of_its_own() {
    let table = "[tls]\ncert_file = \"s.crt\"\nkey_file = \"s.key\"\n";
    let text = format!("tls_listen = \"127.0.0.1:6380\"\n{table}{SHARDS}");
    let tls = parse(&text).unwrap().tls.unwrap();
    assert_eq!(tls.listen, "127.0.0.1:6380".parse::<SocketAddr>().unwrap());
    assert_eq!(tls.client_ca_file, None);

    let text = format!("tls_listen = \"127.0.0.1:6380\"\n{SHARDS}");
    assert_error(&text, "tls_listen", &["tls_listen", "[tls]", "cert_file"]);
    let text = format!("{table}{SHARDS}");
    assert_error(&text, "[tls]", &["tls: [tls] is set but tls_listen is not"]);
    let text = format!("tls_listen = \"localhost:6380\"\n{table}{SHARDS}");
    assert_error(&text, "tls_listen", &["tls_listen", "not an IP:port"]);
    let text = format!("tls_listen = \"0.0.0.0:6379\"\n{table}{SHARDS}");
    assert_error(&text, "tls_listen", &["tls_listen", "also `listen`"]);
    let text = format!("tls_listen = \"127.0.0.1:9121\"\n{table}{SHARDS}");
    assert_error(&text, "tls_listen", &["also `metrics_listen`"]);
    let text = format!("tls_listen = \"127.0.0.1:6380\"\n[tls]\ncert_file = \"s.crt\"\n{SHARDS}");
    assert_error(&text, "[tls]", &["key_file"]);
    let text = format!(
        "tls_listen = \"127.0.0.1:6380\"\n[tls]\ncert_file = \"\"\nkey_file = \"k\"\n{SHARDS}"
    );
    assert_error(&text, "cert_file", &["tls.cert_file", "empty"]);
    let text = format!("tls_listen = \"127.0.0.1:6380\"\n{table}ca_file = \"x\"\n{SHARDS}");
    assert_error(&text, "ca_file", &["unknown field"]);
    // A backend on the TLS port would be the proxy itself.
    let text = format!(
        "tls_listen = \"127.0.0.1:6380\"\n{table}\
         [[shard]]\nname = \"a\"\nmaster = \"127.0.0.1:6380\"\nslots = [\"0-16383\"]\n"
    );
    assert_error(&text, "master", &["proxy's own listen address"]);
}

#[test]
fn backend_tls_keys_need_tls_and_a_ca() {
    let text = format!("[backend]\ntls = true\ntls_ca_file = \"ca.crt\"\n{SHARDS}");
    let tls = parse(&text).unwrap().backend.tls.unwrap();
    assert_eq!(tls.ca_file, Path::new("ca.crt"));
    assert_eq!(tls.server_name, None);
    assert_eq!(tls.client_cert, None);
    let text = format!("[backend]\ntls = false\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().backend.tls, None);

    let text = format!("[backend]\ntls = true\n{SHARDS}");
    assert_error(&text, "tls = true", &["backend.tls", "tls_ca_file"]);
    let text = format!("[backend]\ntls_ca_file = \"ca.crt\"\n{SHARDS}");
    assert_error(
        &text,
        "tls_ca_file",
        &["backend.tls_ca_file", "backend.tls is not true"],
    );
    let text = format!("[backend]\ntls = false\ntls_server_name = \"r\"\n{SHARDS}");
    assert_error(&text, "tls_server_name", &["backend.tls_server_name"]);
    let on = "[backend]\ntls = true\ntls_ca_file = \"ca.crt\"\n";
    let text = format!("{on}tls_cert_file = \"c.crt\"\n{SHARDS}");
    assert_error(
        &text,
        "tls_cert_file",
        &["backend.tls_cert_file", "tls_key_file"],
    );
    let text = format!("{on}tls_key_file = \"c.key\"\n{SHARDS}");
    assert_error(
        &text,
        "tls_key_file",
        &["backend.tls_key_file", "tls_cert_file"],
    );
    let text = format!("{on}tls_server_name = \"not a name\"\n{SHARDS}");
    assert_error(
        &text,
        "tls_server_name",
        &["not a hostname or an IP address"],
    );
    for name in ["redis.internal", "10.0.0.7", "::1", "redis_1"] {
        let text = format!("{on}tls_server_name = \"{name}\"\n{SHARDS}");
        assert_eq!(
            parse(&text)
                .unwrap()
                .backend
                .tls
                .unwrap()
                .server_name
                .as_deref(),
            Some(name)
        );
    }
    let text = format!("{on}tls = 1\n{SHARDS}");
    assert!(error(&text).contains("line"), "{}", error(&text));
}

#[test]
fn replication_takes_its_mode_ack_and_timeout_and_the_old_ack_name() {
    let config = parse(SHARDS).unwrap();
    assert_eq!(config.replication, crate::ha::ReplicationConfig::default());
    assert_eq!(config.replication.mode, crate::ReplicationMode::Redis);
    assert_eq!(config.replication.ack, crate::AckMode::Sync);
    assert_eq!(config.replication.ack_timeout, Duration::from_millis(1_000));
    assert_eq!(config.replication.waits_in_flight, 1);

    let text =
        format!("[replication]\nmode = \"proxy\"\nack = \"async\"\nack_timeout_ms = 250\n{SHARDS}");
    let config = parse(&text).unwrap();
    assert_eq!(config.replication.mode, crate::ReplicationMode::Proxy);
    assert_eq!(config.replication.ack, crate::AckMode::Async);
    assert_eq!(config.replication.ack_timeout, Duration::from_millis(250));

    // `[mirror] mode` is the older name of `ack`: alone it still counts.
    let text = format!("[mirror]\nmode = \"async\"\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().replication.ack, crate::AckMode::Async);
    // Beside `ack` it may repeat it, not contradict it.
    let text = format!("[replication]\nack = \"async\"\n[mirror]\nmode = \"async\"\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().replication.ack, crate::AckMode::Async);
    let text = format!("[replication]\nack = \"sync\"\n[mirror]\nmode = \"async\"\n{SHARDS}");
    assert_error(
        &text,
        "mode = \"async\"",
        &["mirror.mode", "replication.ack"],
    );

    let text = format!("[replication]\nmode = \"redis\"\n{SHARDS}");
    let config = parse(&text).unwrap();
    assert_eq!(config.replication.mode, crate::ReplicationMode::Redis);

    let text = format!("[replication]\nmode = \"cluster\"\n{SHARDS}");
    assert_error(&text, "mode = \"cluster\"", &["redis", "proxy"]);
    let text = format!("[replication]\nack_timeout_ms = 0\n{SHARDS}");
    assert_error(&text, "ack_timeout_ms", &["replication.ack_timeout_ms"]);
    let text = format!("[replication]\nwaits_in_flight = 3\n{SHARDS}");
    assert_eq!(parse(&text).unwrap().replication.waits_in_flight, 3);
    for bad in [0, 17] {
        let text = format!("[replication]\nwaits_in_flight = {bad}\n{SHARDS}");
        assert_error(
            &text,
            "waits_in_flight",
            &["replication.waits_in_flight", "between 1 and 16"],
        );
    }

    // Redis's own replication is accepted, with its acknowledgement wait shorter than a
    // lane's response timeout (async waits for nothing, so any value goes there).
    let text = format!("[replication]\nmode = \"redis\"\n{SHARDS}");
    assert_eq!(
        parse(&text).unwrap().replication.mode,
        crate::ReplicationMode::Redis
    );
    // Left to its default, the wait fits under a shorter response timeout (half of it) ...
    let text =
        format!("[backend]\nresponse_timeout_ms = 800\n[replication]\nmode = \"redis\"\n{SHARDS}");
    assert_eq!(
        parse(&text).unwrap().replication.ack_timeout,
        Duration::from_millis(400)
    );
    // ... written in the file, it must.
    let text = format!(
        "[backend]\nresponse_timeout_ms = 800\n[replication]\nmode = \"redis\"\nack_timeout_ms = 800\n{SHARDS}"
    );
    let message = error(&text);
    assert!(
        message.contains("replication.ack_timeout_ms")
            && message.contains("backend.response_timeout_ms (800 ms)"),
        "{message}"
    );
    let text = format!(
        "[backend]\nresponse_timeout_ms = 800\n[replication]\nmode = \"redis\"\nack = \"async\"\n{SHARDS}"
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn rules_are_read_in_order_and_bad_ones_are_named() {
    let text = format!(
        "{SHARDS}\n[[rule]]\nprefix = \"rq:\"\ntag = \"rq\"\n\n[[rule]]\nprefix = \"celery\\u0006\"\ntag = \"celery\"\nown_tag = \"ignored\"\n"
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.rules.len(), 2);
    assert_eq!(config.rules[0].prefix, "rq:");
    assert_eq!(config.rules[0].own_tag, crate::OwnTag::Wins);
    assert_eq!(config.rules[1].prefix, "celery\u{6}");
    assert_eq!(config.rules[1].own_tag, crate::OwnTag::Ignored);
    assert!(parse(SHARDS).unwrap().rules.is_empty());

    let empty = format!("{SHARDS}\n[[rule]]\nprefix = \"\"\ntag = \"x\"\n");
    assert_error(&empty, "[[rule]]", &["rule[1]", "prefix must not be empty"]);
    let no_tag = format!("{SHARDS}\n[[rule]]\nprefix = \"a:\"\ntag = \"\"\n");
    assert_error(&no_tag, "[[rule]]", &["rule[1]", "tag must not be empty"]);
    let exception = format!("{SHARDS}\n[[rule]]\nprefix = \"a:\"\n");
    assert_eq!(parse(&exception).unwrap().rules[0].tag, None);
    let twice = format!(
        "{SHARDS}\n[[rule]]\nprefix = \"a:\"\ntag = \"x\"\n[[rule]]\nprefix = \"a:\"\ntag = \"y\"\n"
    );
    let message = error(&twice);
    assert!(
        message.contains("rule[2]") && message.contains("rule 1"),
        "{message}"
    );
    let unknown = format!("{SHARDS}\n[[rule]]\nprefix = \"a:\"\ntag = \"x\"\nhash = 1\n");
    assert!(error(&unknown).contains("hash"), "{}", error(&unknown));
}

#[test]
fn keyless_scripts_default_to_no_keys_and_no_keys_needs_managed_users() {
    let base = "[[shard]]\nname = \"s1\"\nmaster = \"127.0.0.1:7000\"\nslots = [\"0-16383\"]\n";
    let config = Config::from_toml_str(base, "t.toml").unwrap();
    assert_eq!(config.backend.keyless_scripts, KeylessScripts::NoKeys);
    let text = format!("[backend]\nkeyless_scripts = \"any-master\"\n{base}");
    let config = Config::from_toml_str(&text, "t.toml").unwrap();
    assert_eq!(config.backend.keyless_scripts, KeylessScripts::AnyMaster);
    let text = format!("[backend]\nmanage_acl = false\nkeyless_scripts = \"no-keys\"\n{base}");
    let error = Config::from_toml_str(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("keyless_scripts") && error.contains("manage_acl = true"),
        "{error}"
    );
    let text = format!("[backend]\nkeyless_scripts = \"everywhere\"\n{base}");
    assert!(Config::from_toml_str(&text, "t.toml").is_err());
}
