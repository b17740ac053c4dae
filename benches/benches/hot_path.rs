//! Micro-benchmarks of the per-request work outside the scanner: classifying a command, slot
//! hashing, routing a key, merging a split MGET, reading the live settings a session's round
//! works with, recording a command's metrics, a pipeline through a client's reply queue, and a
//! lane's request queue.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use redshard_config::{Config, Slot, Topology};
use redshard_dataplane::backend::{LaneConfig, NodePool};
use redshard_dataplane::mirror::effect::prepare;
use redshard_dataplane::outbuf::OutBuf;
use redshard_dataplane::router::RoutingTable;
use redshard_dataplane::session::merge::{merge, MergePlan};
use redshard_dataplane::state::LiveSettings;
use redshard_protocol::acl::User;
use redshard_protocol::command::resolve;
use redshard_protocol::resp::{encode, RequestScanner};

fn slot_hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("slot_for_key");
    for key in [
        "k",
        "key:000000012345",
        "user:1000:profile",
        "{user1000}.following",
        "a-rather-long-key-name-of-sixty-four-bytes-used-by-some-apps-xx",
    ] {
        group.throughput(Throughput::Bytes(key.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(key.len()),
            key.as_bytes(),
            |b, key| {
                b.iter(|| Slot::for_key(black_box(key)));
            },
        );
    }
    group.finish();
}

fn routing(c: &mut Criterion) {
    let text = "listen = \"127.0.0.1:0\"\n\
        [[shard]]\nname = \"a\"\nmaster = \"127.0.0.1:7001\"\nslots = [\"0-5460\"]\n\
        [[shard]]\nname = \"b\"\nmaster = \"127.0.0.1:7002\"\nslots = [\"5461-10922\"]\n\
        [[shard]]\nname = \"c\"\nmaster = \"127.0.0.1:7003\"\nslots = [\"10923-16383\"]\n";
    let config = Config::from_toml_str(text, "bench.toml").expect("valid");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Lanes are spawned (they fail to connect in the background; routing does not touch them).
    let table = runtime.block_on(async {
        let pool = NodePool::new(LaneConfig::from_config(&config.backend, 128, None));
        let (events, _control) = tokio::sync::mpsc::unbounded_channel();
        let mirror = redshard_dataplane::mirror::Mirror::new(
            config.mirror.clone(),
            config.replication.ack,
            config.replication.mode,
            events,
        );
        let gates = redshard_dataplane::router::Gates::default();
        RoutingTable::build(
            std::sync::Arc::new(Topology::from_config(&config)),
            &pool,
            &mirror,
            &gates,
        )
    });
    let keys: Vec<String> = (0..1024).map(|i| format!("key:{i:06}")).collect();
    c.bench_function("route_key", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            let slot = Slot::for_key(keys[i].as_bytes());
            let node = table.master_of(slot);
            black_box(node.lane(slot.get()));
        });
    });
}

fn mget_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("mget_merge");
    for keys in [10usize, 100] {
        // Three parts, keys dealt round-robin, 100-byte values.
        let order: Vec<u32> = (0..keys).map(|i| (i % 3) as u32).collect();
        let parts: Vec<Bytes> = (0..3)
            .map(|p| {
                let n = order.iter().filter(|&&o| o == p).count();
                let mut b = BytesMut::new();
                b.extend_from_slice(format!("*{n}\r\n").as_bytes());
                for _ in 0..n {
                    b.extend_from_slice(b"$100\r\n");
                    b.extend_from_slice(&[b'v'; 100]);
                    b.extend_from_slice(b"\r\n");
                }
                b.freeze()
            })
            .collect();
        group.throughput(Throughput::Elements(keys as u64));
        group.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, _| {
            b.iter(|| {
                let mut out = OutBuf::new();
                merge(
                    &parts,
                    MergePlan::Mget {
                        order: order.clone(),
                    },
                    &mut out,
                );
                black_box(out.len())
            });
        });
    }
    group.finish();
}

/// The `[limits]`/`[slowlog]` values each turn of a session's loop reads twice: from the
/// atomics the live settings keep for it (`hot`), and through the `ArcSwap` (`now`) that every
/// other reader uses.
fn live_settings(c: &mut Criterion) {
    let config = Config::from_toml_str(
        "[[shard]]\nname = \"a\"\nmaster = \"127.0.0.1:7001\"\nslots = [\"0-16383\"]\n",
        "bench.toml",
    )
    .expect("valid");
    let live = LiveSettings::new(std::sync::Arc::new(config));
    let mut group = c.benchmark_group("live_settings");
    group.bench_function("hot", |b| b.iter(|| black_box(black_box(&live).hot())));
    group.bench_function("now", |b| {
        b.iter(|| {
            let now = black_box(&live).now();
            black_box((now.limits.max_pipeline, now.slowlog))
        });
    });
    group.finish();
}

/// What dispatch does with a scanned request's command before any I/O: resolve it in the
/// table, read its route and whether it is `@dangerous` (a `no-dangerous` user's check), and
/// prepare a write's mirror effect (an unchanged HSET, a SET whose EX becomes PXAT).
fn classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    let requests: [&[&[u8]]; 3] = [
        &[b"GET", b"k"],
        &[b"HSET", b"k", b"f", b"v"],
        &[b"SET", b"k", b"v", b"EX", b"10"],
    ];
    for request in requests {
        let mut buf = BytesMut::new();
        encode::request(&mut buf, request);
        let mut scanner = RequestScanner::default();
        scanner.scan(&buf).expect("valid").expect("whole");
        let name = String::from_utf8_lossy(request[0]).to_lowercase();
        group.bench_function(name, |b| {
            b.iter(|| {
                let args = scanner.args(&buf);
                let spec = resolve(&args).expect("known");
                black_box((spec.route, spec.is_dangerous()));
                if spec.is_write() {
                    black_box(prepare(spec, &args, 1_700_000_000_000));
                }
            });
        });
    }
    group.finish();
}

/// The ACL check of a request: what a session does for its user (the default user: one
/// generation load and a `None` test; a restricted user: [`User::check`], a bit test per
/// command plus a glob per key pattern tried).
fn acl_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("acl_check");
    let users = redshard_dataplane::users::Users::from_config(&Config::default());
    let default = users.get("default").expect("the default user");
    let seen = users.generation();
    let mut buf = BytesMut::new();
    encode::request(&mut buf, &[b"SET", b"cache:1", b"v"]);
    let mut scanner = RequestScanner::default();
    scanner.scan(&buf).expect("valid").expect("whole");
    let restricted = if default.unrestricted {
        None
    } else {
        Some(&default)
    };
    group.bench_function("default_user", |b| {
        b.iter(|| {
            let fresh = black_box(users.generation()) == seen;
            black_box(fresh && black_box(restricted).is_none())
        });
    });
    let mut app = User::new("app");
    app.apply_all(&["on", "+@all", "-@dangerous", "%R~r:*", "~cache:*", "&*"])
        .expect("valid rules");
    group.bench_function("restricted_user", |b| {
        b.iter(|| {
            let args = scanner.args(&buf);
            let spec = resolve(&args).expect("known");
            black_box(app.check(spec, &args))
        });
    });
    group.finish();
}

/// A client's reply queue through one pipeline (reserve, look, deliver, take): 16 requests
/// whose replies, arriving one by one, are held until all are in (`[limits] coalesce_replies`:
/// one wake-up) or not (a wake-up and a take for each), and one request.
fn reply_queue(c: &mut Criterion) {
    assert_eq!(
        redshard_dataplane::bench_pipeline(16, true),
        (1, 16 * 5),
        "held: one wake-up"
    );
    assert_eq!(
        redshard_dataplane::bench_pipeline(16, false),
        (16, 16 * 5),
        "one wake-up per reply"
    );
    let mut group = c.benchmark_group("reply_queue");
    for (name, requests, hold) in [
        ("p16_held", 16, true),
        ("p16_unheld", 16, false),
        ("p1", 1, true),
    ] {
        group.throughput(Throughput::Elements(requests as u64));
        group.bench_function(name, |b| {
            b.iter(|| redshard_dataplane::bench_pipeline(black_box(requests), hold));
        });
    }
    group.finish();
}

/// The per-command metrics each reply's request records (count, failures, time, latency
/// bucket): found by the command's id (`command_spec`, the data path's call), and by the
/// address of its name (`command`, for names outside the command table).
fn command_metrics(c: &mut Criterion) {
    redshard_metrics::install("bench");
    let get = redshard_protocol::command::lookup(b"get").expect("in the table");
    let took = std::time::Duration::from_micros(180);
    let mut group = c.benchmark_group("command_metrics");
    group.bench_function("command_spec", |b| {
        b.iter(|| redshard_metrics::command_spec(black_box(get), black_box(took), false));
    });
    group.bench_function("command", |b| {
        b.iter(|| redshard_metrics::command(black_box(get.name), black_box(took), false));
    });
    group.finish();
}

/// A lane's request queue: a turn's 16 requests queued by the sessions, then taken by the lane
/// in one go, against tokio's unbounded channel (which the lanes used before) doing the same.
/// The items are as large as a lane's request.
fn lane_queue(c: &mut Criterion) {
    type Request = [u8; 104];
    let mut group = c.benchmark_group("lane_queue");
    group.throughput(Throughput::Elements(16));
    let (tx, mut rx) = redshard_dataplane::backend::queue::channel::<Request>();
    let mut batch = Vec::with_capacity(64);
    group.bench_function("queue_p16", |b| {
        b.iter(|| {
            for i in 0..16u8 {
                tx.send(black_box([i; 104])).expect("open");
            }
            batch.clear();
            black_box(rx.try_recv_many(&mut batch, 64))
        });
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
    group.bench_function("tokio_unbounded_p16", |b| {
        b.iter(|| {
            for i in 0..16u8 {
                tx.send(black_box([i; 104])).expect("open");
            }
            batch.clear();
            while let Ok(request) = rx.try_recv() {
                batch.push(request);
            }
            black_box(batch.len())
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    reply_queue,
    lane_queue,
    command_metrics,
    classify,
    slot_hashing,
    routing,
    mget_merge,
    acl_check,
    live_settings
);
criterion_main!(benches);
