use std::time::Duration;

use super::names::error_kind;
use super::*;

/// The value of the sample line starting with `series ` in `text`.
fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

/// The `_bucket` sample of `cmd`'s latency histogram with bound `le`.
fn bucket<'a>(text: &'a str, cmd: &str, le: &str) -> Option<&'a str> {
    let series = format!("redshard_command_duration_seconds_bucket{{cmd=\"{cmd}\",le=\"{le}\"}}");
    sample(text, &series)
}

#[test]
fn install_is_idempotent_and_keeps_the_first_namespace() {
    let first = install("redshard");
    let again = install("other");
    assert_eq!(first.namespace(), "redshard");
    assert_eq!(again.namespace(), "redshard");
}

#[test]
fn commands_are_counted_timed_and_bucketed() {
    let exporter = install("redshard");
    command("hgetall", Duration::from_micros(120), false);
    command("hgetall", Duration::from_millis(3), true);
    command("config|get", Duration::from_micros(40), false);
    // A name outside the command table still works (the proxy's own CLIENT subcommands).
    command("client|not-in-table", Duration::from_micros(10), false);
    let mut text = String::new();
    exporter.render_into(&mut text);

    assert_eq!(
        sample(&text, "redshard_commands_total{cmd=\"hgetall\"}"),
        Some("2")
    );
    assert_eq!(
        sample(
            &text,
            "redshard_commands_failed_calls_total{cmd=\"hgetall\"}"
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            "redshard_commands_failed_calls_total{cmd=\"config|get\"}"
        ),
        Some("0")
    );
    assert_eq!(
        sample(
            &text,
            "redshard_commands_total{cmd=\"client|not-in-table\"}"
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            "redshard_commands_duration_seconds_total{cmd=\"hgetall\"}"
        ),
        Some("0.003120000")
    );
    assert!(text.contains("# TYPE redshard_commands_duration_seconds_total counter\n"));
    assert!(text.contains("# TYPE redshard_command_duration_seconds histogram\n"));
    assert!(text.contains("# HELP redshard_commands_total Commands served"));
    let bucket = |le: &str| bucket(&text, "hgetall", le);
    assert_eq!(bucket("0.0001"), Some("0"), "{text}");
    assert_eq!(bucket("0.00025"), Some("1"));
    assert_eq!(bucket("0.0025"), Some("1"));
    assert_eq!(bucket("0.005"), Some("2"));
    assert_eq!(bucket("+Inf"), Some("2"));
    assert_eq!(
        sample(
            &text,
            "redshard_command_duration_seconds_count{cmd=\"hgetall\"}"
        ),
        Some("2")
    );
    // Commands never served do not appear.
    assert!(!text.contains("cmd=\"lpush\""));
}

#[test]
fn a_bucket_holds_calls_up_to_its_bound_and_inf_holds_the_rest() {
    let exporter = install("redshard");
    command("zadd", Duration::from_micros(250), false);
    command("zadd", Duration::from_nanos(250_001), false);
    command("zadd", Duration::from_secs(6), false);
    let mut text = String::new();
    exporter.render_into(&mut text);
    let bucket = |le: &str| bucket(&text, "zadd", le);
    assert_eq!(bucket("0.0001"), Some("0"), "{text}");
    assert_eq!(bucket("0.00025"), Some("1"));
    assert_eq!(bucket("0.0005"), Some("2"));
    assert_eq!(bucket("5"), Some("2"));
    assert_eq!(bucket("+Inf"), Some("3"));
    assert_eq!(
        sample(&text, "redshard_command_duration_seconds_sum{cmd=\"zadd\"}"),
        Some("6.000500001")
    );
}

#[test]
fn bytes_errors_and_backend_connections_are_counted() {
    let exporter = install("redshard");
    let counter = |text: &str, series: &str| -> u64 {
        sample(text, series).map_or(0, |v| v.parse().unwrap())
    };
    let mut before = String::new();
    exporter.render_into(&mut before);
    bytes_in(10);
    bytes_out(25);
    protocol_error();
    let node = NodeAddr::parse("10.1.2.3:6379").unwrap();
    backend_error(&node, error_kind::TIMEOUT);
    backend_connected(&node);
    backend_connected(&node);
    backend_disconnected(&node);
    config_reload(false);
    let mut after = String::new();
    exporter.render_into(&mut after);
    for (series, delta) in [
        ("redshard_net_input_bytes_total", 10),
        ("redshard_net_output_bytes_total", 25),
        ("redshard_protocol_errors_total", 1),
        (
            "redshard_backend_errors_total{node=\"10.1.2.3:6379\",kind=\"timeout\"}",
            1,
        ),
        ("redshard_config_reloads_total{result=\"error\"}", 1),
    ] {
        assert_eq!(
            counter(&after, series) - counter(&before, series),
            delta,
            "{series}\n{after}"
        );
    }
    assert_eq!(
        sample(
            &after,
            "redshard_backend_connections{node=\"10.1.2.3:6379\"}"
        ),
        Some("1")
    );
}

#[test]
fn seconds_keep_nanosecond_precision() {
    assert_eq!(Seconds(0).to_string(), "0.000000000");
    assert_eq!(Seconds(1_500_000_001).to_string(), "1.500000001");
}

#[test]
fn a_command_recorded_by_its_spec_counts_where_its_name_does() {
    use redshard_protocol::command::{every_spec, lookup, lookup_fullname};
    let exporter = install("redshard");
    let linsert = lookup(b"linsert").unwrap();
    let subcommand = lookup_fullname(b"object|encoding").unwrap();
    // Not in the command table: the proxy's own CLIENT subcommand, found by name.
    let extra = every_spec().find(|s| s.name == "client|setinfo").unwrap();
    for spec in [linsert, subcommand, extra] {
        command_spec(spec, Duration::from_micros(30), false);
        command(spec.name, Duration::from_millis(2), true);
    }
    let mut text = String::new();
    exporter.render_into(&mut text);
    for name in ["linsert", "object|encoding", "client|setinfo"] {
        let series = |metric: &str| format!("redshard_{metric}{{cmd=\"{name}\"}}");
        assert_eq!(
            sample(&text, &series("commands_total")),
            Some("2"),
            "{name}"
        );
        assert_eq!(
            sample(&text, &series("commands_failed_calls_total")),
            Some("1"),
            "{name}"
        );
        assert_eq!(bucket(&text, name, "0.00005"), Some("1"), "{name}");
        assert_eq!(bucket(&text, name, "0.0025"), Some("2"), "{name}");
    }
}

#[test]
fn every_thread_s_calls_add_up_also_after_the_thread_ended() {
    let exporter = install("redshard");
    let spec = redshard_protocol::command::lookup(b"zrangestore").unwrap();
    // Four threads record and end; a fifth takes over one's counters and records more.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..1000 {
                    command_spec(spec, Duration::from_micros(20), (i + t) % 10 == 0);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    std::thread::spawn(move || command_spec(spec, Duration::from_millis(2), true))
        .join()
        .unwrap();
    command_spec(spec, Duration::from_micros(20), false);
    let mut text = String::new();
    exporter.render_into(&mut text);
    let series = |metric: &str| format!("redshard_{metric}{{cmd=\"zrangestore\"}}");
    assert_eq!(sample(&text, &series("commands_total")), Some("4002"));
    assert_eq!(
        sample(&text, &series("commands_failed_calls_total")),
        Some("401")
    );
    assert_eq!(bucket(&text, "zrangestore", "0.00005"), Some("4001"));
    assert_eq!(
        sample(
            &text,
            "redshard_command_duration_seconds_count{cmd=\"zrangestore\"}"
        ),
        Some("4002")
    );
}

#[test]
fn a_thread_that_starts_after_another_ended_takes_its_counters() {
    // Serialised with the other tests' threads by the table's lock: a free entry is there
    // when the next thread adopts, unless another test's thread took it first, so at least
    // one of several tries must reuse.
    install("redshard");
    let commands = &registry().unwrap().commands;
    let spec = redshard_protocol::command::lookup(b"zunionstore").unwrap();
    let reused = (0..20).any(|_| {
        std::thread::spawn(move || command_spec(spec, Duration::from_micros(5), false))
            .join()
            .unwrap();
        let ended = commands
            .lock_threads()
            .free
            .last()
            .map(|c| Arc::as_ptr(c) as usize);
        let taken = std::thread::spawn(move || {
            command_spec(spec, Duration::from_micros(5), false);
            LOCAL.with(|local| local.0.get().map(|c| Arc::as_ptr(c) as usize))
        })
        .join()
        .unwrap();
        ended.is_some() && ended == taken
    });
    assert!(reused);
}
