//! The deployment files in `deploy/` and `docker-compose.yml` stay true to the code: the
//! Grafana dashboard queries only metric names that `redshard_metrics::names` defines,
//! the metrics table in `docs/operations.md` lists every one of them, and the Docker
//! configuration is one the proxy accepts, naming the nodes compose starts. No Docker engine is
//! needed: they are read as text.

use std::path::{Path, PathBuf};

use redshard_config::Config;
use redshard_metrics::names::{self, Kind, EVENTS, PER_COMMAND, STATE};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The metric names written after each `prefix` in `text`: the longest run of
/// `[a-z0-9_]` that follows it.
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.split(prefix)
        .skip(1)
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// Every series name a query may use: each metric's name (a histogram's `_bucket`, `_sum` and
/// `_count` series).
fn known_series() -> Vec<String> {
    PER_COMMAND
        .iter()
        .chain(EVENTS)
        .chain(STATE)
        .flat_map(|m| match m.kind {
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{}{suffix}", m.name))
                .collect(),
            Kind::Counter | Kind::Gauge => vec![m.name.to_owned()],
        })
        .collect()
}

/// Queries write names as `${ns}_<name>` (the `ns` variable is the proxy's
/// `metrics_namespace`), or with the default namespace spelled out, `redshard_<name>`.
#[test]
fn the_dashboard_queries_only_defined_metric_names() {
    let dashboard = read("deploy/grafana/redshard-dashboard.json");
    let mut used = names_after(&dashboard, "${ns}_");
    used.extend(names_after(&dashboard, "redshard_"));
    let known = known_series();
    let unknown: Vec<&str> = used
        .iter()
        .copied()
        .filter(|name| !known.iter().any(|k| k == name))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics that metrics/src/names.rs does not define: {unknown:?}"
    );
    // The extraction found what the dashboard is about: latency quantiles per command, and the
    // mirroring and migration panels.
    for expected in [
        "commands_total",
        "command_duration_seconds_bucket",
        "backend_up",
        "slots",
        names::MIRROR_STATE.name,
        names::MIRROR_LAG_WRITES.name,
        names::FAILOVERS_TOTAL.name,
        names::MIGRATION_SLOTS_REMAINING.name,
        names::MIGRATION_KEYS_MOVED_TOTAL.name,
    ] {
        assert!(used.contains(&expected), "no query uses {expected}");
    }
    // The mirroring panels filter on the state label values the proxy writes.
    let filter = format!("state!=\\\"{}\\\"", names::mirror_state::IN_SYNC);
    assert!(dashboard.contains(&filter), "no query filters on {filter}");
}

/// The metrics table in `docs/operations.md` has one row per metric, with its type and labels
/// as defined.
#[test]
fn the_operations_doc_lists_every_metric() {
    let doc = read("docs/operations.md");
    for metric in EVENTS.iter().chain(STATE) {
        let prefix = format!("| `<ns>_{}` | {} |", metric.name, metric.kind.as_str());
        let row = doc
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("docs/operations.md's metrics table has no row {prefix}"));
        let labels: Vec<String> = metric.labels.iter().map(|l| format!("`{l}`")).collect();
        // `| name | type | labels | ...`: the labels are the fourth piece between pipes.
        let cells: Vec<&str> = row.split('|').collect();
        assert_eq!(
            cells.get(3).map(|c| c.trim()),
            Some(labels.join(", ").as_str()),
            "docs/operations.md lists other labels for {}: {row}",
            metric.name
        );
    }
}

/// `deploy/redshard.docker.toml` is accepted by the proxy, listens where docker-compose.yml
/// publishes, and names as nodes the compose services on the ports they run redis-server on.
#[test]
fn the_docker_config_names_the_compose_services() {
    let path = repo_file("deploy/redshard.docker.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let compose = read("docker-compose.yml");

    let metrics = config.metrics_listen.expect("metrics_listen is on");
    let admin = config.admin_listen.expect("admin_listen is on");
    assert!(
        config.admin_password.is_some(),
        "the admin port has a password"
    );
    for addr in [config.listen, metrics, admin] {
        assert!(
            addr.ip().is_unspecified(),
            "{addr}: listen on 0.0.0.0 in a container"
        );
        let port = addr.port();
        assert!(
            compose.contains(&format!("\"127.0.0.1:{port}:{port}\"")),
            "docker-compose.yml publishes {port} on 127.0.0.1"
        );
    }

    let nodes = config
        .shards
        .iter()
        .flat_map(|shard| std::iter::once(&shard.master).chain(&shard.replicas));
    let mut count = 0;
    for node in nodes {
        let service = service_block(&compose, node.host())
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {}", node.host()));
        assert!(
            service.contains(&format!("\"--port\", \"{}\"", node.port())),
            "service {} runs redis-server on port {}",
            node.host(),
            node.port()
        );
        count += 1;
    }
    assert_eq!(count, 6, "3 masters and 3 replicas");
}

/// The lines of the compose service `name` (from `  name:` to the next line indented by two
/// spaces or less).
fn service_block<'a>(compose: &'a str, name: &str) -> Option<&'a str> {
    let header = format!("\n  {name}:\n");
    let start = compose.find(&header)? + header.len();
    let rest = &compose[start..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let line = &rest[i..];
            !line.is_empty() && !line.starts_with("   ") && !line.starts_with('\n')
        })
        .unwrap_or(rest.len());
    Some(&rest[..end])
}
