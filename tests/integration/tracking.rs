//! CLIENT TRACKING (client-side caching) through the proxy: invalidations for keys spread over
//! several masters, whoever changed them (another client, an expiry on the node, a flush), in
//! the default, BCAST and OPTIN modes, as RESP3 pushes or, redirected, as
//! `__redis__:invalidate` messages to a RESP2 subscriber; the subcommands' replies and errors
//! with Redis's texts; and redis-py's own client-side cache against the proxy.

use std::process::Stdio;
use std::time::Duration;

use redshard_tests::client::{encode_command, Client};
use redshard_tests::cluster::{key_on, shard_of};
use redshard_tests::replication::wait_until;
use redshard_tests::{Reply, TestCluster};
use tokio::process::Command;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The RESP3 push `invalidate [keys]`.
fn push(keys: &[&str]) -> Vec<u8> {
    let mut out = format!(">2\r\n$10\r\ninvalidate\r\n*{}\r\n", keys.len());
    for key in keys {
        out.push_str(&format!("${}\r\n{key}\r\n", key.len()));
    }
    out.into_bytes()
}

/// The RESP3 push `invalidate null` (a flush).
const FLUSH_PUSH: &[u8] = b">2\r\n$10\r\ninvalidate\r\n_\r\n";

/// A RESP3 client with tracking turned on with `options`.
async fn tracking_client(cluster: &TestCluster, options: &[&str]) -> Client {
    let mut c = cluster.client().await;
    assert!(c.cmd_resp3(&["HELLO", "3"]).await.starts_with(b"%7"));
    let mut args = vec!["CLIENT", "TRACKING", "ON"];
    args.extend_from_slice(options);
    assert_eq!(text(&c.cmd_resp3(&args).await), "+OK\r\n");
    c
}

/// The client's next frame is `+PONG` to a PING sent now: nothing was queued for it before.
async fn assert_nothing_pending(c: &mut Client) {
    assert_eq!(text(&c.cmd_resp3(&["PING"]).await), "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_invalidated_when_anyone_changes_them_or_they_expire() {
    let cluster = TestCluster::start(2).await;
    let k = key_on(2, 0, "k");
    let other = key_on(2, 1, "o");
    let mut c = tracking_client(&cluster, &[]).await;
    let mut writer = cluster.client().await;

    // Read, changed by another client: one invalidation.
    assert_eq!(c.cmd_resp3(&["GET", &k]).await, b"_\r\n");
    assert!(writer.cmd(&["SET", &k, "v1"]).await.is_ok());
    assert_eq!(text(&c.read_resp3_raw().await), text(&push(&[&k])));

    // The next read arms it again, on either shard (MGET is split across both).
    assert_eq!(
        text(&c.cmd_resp3(&["MGET", &k, &other]).await),
        "*2\r\n$2\r\nv1\r\n_\r\n"
    );
    assert!(writer.cmd(&["SET", &other, "x"]).await.is_ok());
    assert_eq!(text(&c.read_resp3_raw().await), text(&push(&[&other])));
    assert!(writer.cmd(&["SET", &k, "v2"]).await.is_ok());
    assert_eq!(text(&c.read_resp3_raw().await), text(&push(&[&k])));

    // Not read since: a change says nothing. A second tracking client that read it shows
    // when the change was handled (both are told in the same step).
    let mut witness = tracking_client(&cluster, &[]).await;
    assert_eq!(witness.cmd_resp3(&["GET", &k]).await, b"$2\r\nv2\r\n");
    assert!(writer.cmd(&["SET", &k, "v3"]).await.is_ok());
    assert_eq!(text(&witness.read_resp3_raw().await), text(&push(&[&k])));
    assert_nothing_pending(&mut c).await;

    // An expiry on the node: the key is read while it lives, then nobody touches it.
    let e = key_on(2, 1, "exp");
    let mut bcast = tracking_client(&cluster, &["BCAST", "PREFIX", "exp:"]).await;
    assert!(writer.cmd(&["SET", &e, "soon", "PX", "400"]).await.is_ok());
    // The SET's own invalidation is handled before the read (BCAST is told of every change).
    assert_eq!(text(&bcast.read_resp3_raw().await), text(&push(&[&e])));
    assert_eq!(c.cmd_resp3(&["GET", &e]).await, b"$4\r\nsoon\r\n");
    assert_eq!(text(&c.read_resp3_raw().await), text(&push(&[&e])));
    assert_eq!(text(&bcast.read_resp3_raw().await), text(&push(&[&e])));
    assert_eq!(writer.cmd(&["EXISTS", &e]).await, Reply::Int(0));

    // GETREDIR and TRACKINGINFO of a default-mode client.
    assert_eq!(c.cmd_resp3(&["CLIENT", "GETREDIR"]).await, b":0\r\n");
    assert_eq!(
        text(&c.cmd_resp3(&["CLIENT", "TRACKINGINFO"]).await),
        "%3\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*0\r\n"
    );

    // OFF: nothing more, whatever it read.
    assert_eq!(
        text(&c.cmd_resp3(&["CLIENT", "TRACKING", "OFF"]).await),
        "+OK\r\n"
    );
    assert_eq!(c.cmd_resp3(&["GET", &k]).await, b"$2\r\nv3\r\n");
    assert_eq!(witness.cmd_resp3(&["GET", &k]).await, b"$2\r\nv3\r\n");
    assert!(writer.cmd(&["SET", &k, "v4"]).await.is_ok());
    assert_eq!(text(&witness.read_resp3_raw().await), text(&push(&[&k])));
    assert_nothing_pending(&mut c).await;
    assert_eq!(c.cmd_resp3(&["CLIENT", "GETREDIR"]).await, b":-1\r\n");
    assert_eq!(
        text(&c.cmd_resp3(&["CLIENT", "TRACKINGINFO"]).await),
        "%3\r\n$5\r\nflags\r\n~1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcast_optin_redirect_and_flush() {
    let cluster = TestCluster::start_with(2, false, "allow_flush = true\n", &[]).await;
    let mut writer = cluster.client().await;

    // BCAST with a prefix, keys on both shards: only the prefix's keys.
    let ua = key_on(2, 0, "user");
    let ub = key_on(2, 1, "user");
    let ox = key_on(2, 0, "other");
    let mut bcast = tracking_client(&cluster, &["BCAST", "PREFIX", "user:", "NOLOOP"]).await;
    assert!(writer.cmd(&["SET", &ox, "1"]).await.is_ok());
    assert!(writer.cmd(&["SET", &ua, "1"]).await.is_ok());
    assert!(writer.cmd(&["SET", &ub, "1"]).await.is_ok());
    let mut got = vec![
        text(&bcast.read_resp3_raw().await),
        text(&bcast.read_resp3_raw().await),
    ];
    got.sort();
    let mut want = vec![text(&push(&[&ua])), text(&push(&[&ub]))];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        text(&bcast.cmd_resp3(&["CLIENT", "TRACKINGINFO"]).await),
        "%3\r\n$5\r\nflags\r\n~3\r\n$2\r\non\r\n$5\r\nbcast\r\n$6\r\nnoloop\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*1\r\n$5\r\nuser:\r\n"
    );

    // OPTIN: only the read after CLIENT CACHING YES is tracked ({t}: one shard, in order).
    let mut optin = tracking_client(&cluster, &["OPTIN"]).await;
    assert_eq!(optin.cmd_resp3(&["GET", "{t}a"]).await, b"_\r\n");
    assert_eq!(
        text(&optin.cmd_resp3(&["CLIENT", "CACHING", "YES"]).await),
        "+OK\r\n"
    );
    assert_eq!(
        text(&optin.cmd_resp3(&["CLIENT", "TRACKINGINFO"]).await),
        "%3\r\n$5\r\nflags\r\n~3\r\n$2\r\non\r\n$5\r\noptin\r\n$11\r\ncaching-yes\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*0\r\n"
    );
    assert_eq!(optin.cmd_resp3(&["GET", "{t}b"]).await, b"_\r\n");
    assert!(writer.cmd(&["SET", "{t}a", "1"]).await.is_ok());
    assert!(writer.cmd(&["SET", "{t}b", "1"]).await.is_ok());
    assert_eq!(text(&optin.read_resp3_raw().await), text(&push(&["{t}b"])));
    // The flag covers a whole transaction, and then ends.
    for (args, reply) in [
        (&["CLIENT", "CACHING", "YES"][..], "+OK\r\n"),
        (&["MULTI"], "+OK\r\n"),
        (&["GET", "{t}c"], "+QUEUED\r\n"),
        (&["EXEC"], "*1\r\n_\r\n"),
        (&["GET", "{t}d"], "_\r\n"),
    ] {
        assert_eq!(text(&optin.cmd_resp3(args).await), reply, "{args:?}");
    }
    assert!(writer.cmd(&["SET", "{t}d", "1"]).await.is_ok());
    assert!(writer.cmd(&["SET", "{t}c", "1"]).await.is_ok());
    assert_eq!(text(&optin.read_resp3_raw().await), text(&push(&["{t}c"])));

    // RESP2, redirected to a client subscribed to __redis__:invalidate.
    let mut target = cluster.client().await;
    let target_id = target.cmd(&["CLIENT", "ID"]).await.int();
    target
        .send_raw(&encode_command(&["SUBSCRIBE", "__redis__:invalidate"]))
        .await;
    assert_eq!(
        target.read().await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("__redis__:invalidate"),
            Reply::Int(1)
        ])
    );
    let mut resp2 = cluster.client().await;
    let id = target_id.to_string();
    assert!(resp2
        .cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id])
        .await
        .is_ok());
    assert_eq!(
        resp2.cmd(&["CLIENT", "GETREDIR"]).await,
        Reply::Int(target_id)
    );
    assert_eq!(
        resp2.cmd(&["CLIENT", "TRACKINGINFO"]).await,
        Reply::Array(vec![
            Reply::bulk("flags"),
            Reply::Array(vec![Reply::bulk("on")]),
            Reply::bulk("redirect"),
            Reply::Int(target_id),
            Reply::bulk("prefixes"),
            Reply::Array(vec![]),
        ])
    );
    let rk = key_on(2, 1, "r");
    assert_eq!(resp2.cmd(&["GET", &rk]).await, Reply::Bulk(None));
    assert!(writer.cmd(&["SET", &rk, "1"]).await.is_ok());
    assert_eq!(
        target.read().await,
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("__redis__:invalidate"),
            Reply::Array(vec![Reply::bulk(&rk)]),
        ])
    );

    // A flush: every tracking client is told to drop everything (each master says so).
    assert!(writer.cmd(&["FLUSHALL"]).await.is_ok());
    for _ in 0..2 {
        assert_eq!(text(&optin.read_resp3_raw().await), text(FLUSH_PUSH));
        assert_eq!(text(&bcast.read_resp3_raw().await), text(FLUSH_PUSH));
        assert_eq!(
            target.read().await,
            Reply::Array(vec![
                Reply::bulk("message"),
                Reply::bulk("__redis__:invalidate"),
                Reply::Bulk(None),
            ])
        );
    }

    // A RESP3 client whose redirect target left is told so.
    let mut gone = cluster.client().await;
    let gone_id = gone.cmd(&["CLIENT", "ID"]).await.int();
    let mut broken = tracking_client(&cluster, &["REDIRECT", &gone_id.to_string()]).await;
    assert!(gone.cmd(&["QUIT"]).await.is_ok());
    drop(gone);
    let addr = cluster.addr;
    wait_until(Duration::from_secs(5), "the target leaves", || async move {
        let list = Client::connect_addr(addr)
            .await
            .cmd(&["CLIENT", "LIST"])
            .await
            .text();
        !list.contains(&format!("id={gone_id} "))
    })
    .await;
    assert_eq!(broken.cmd_resp3(&["GET", &rk]).await, b"_\r\n", "flushed");
    assert!(writer.cmd(&["SET", &rk, "2"]).await.is_ok());
    assert_eq!(
        text(&broken.read_resp3_raw().await),
        format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{gone_id}\r\n")
    );
    let info = text(&broken.cmd_resp3(&["CLIENT", "TRACKINGINFO"]).await);
    assert!(info.contains("$15\r\nbroken_redirect\r\n"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_errors_are_redis_texts() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let err = |s: &str| Reply::Error(s.into());
    for (args, error) in [
        (
            &["CLIENT", "TRACKING", "ON", "REDIRECT", "987654"][..],
            "ERR The client ID you want redirect to does not exist",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "REDIRECT", "x"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "PREFIX", "a"],
            "ERR PREFIX option requires BCAST mode to be enabled",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"],
            "ERR OPTIN and OPTOUT are not compatible with BCAST",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"],
            "ERR You can't specify both OPTIN mode and OPTOUT mode",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab", "PREFIX", "a"],
            "ERR Prefix 'ab' overlaps with another provided prefix 'a'. Prefixes for a single client must not overlap.",
        ),
        (&["CLIENT", "TRACKING", "MAYBE"], "ERR syntax error"),
        (&["CLIENT", "TRACKING", "ON", "NOPE"], "ERR syntax error"),
        (
            &["CLIENT", "CACHING", "YES"],
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        ),
    ] {
        assert_eq!(c.cmd(args).await, err(error), "{args:?}");
    }
    assert!(c.cmd(&["CLIENT", "TRACKING", "ON", "OPTIN"]).await.is_ok());
    assert_eq!(
        c.cmd(&["CLIENT", "CACHING", "NO"]).await,
        err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
    );
    assert_eq!(
        c.cmd(&["CLIENT", "TRACKING", "ON", "OPTOUT"]).await,
        err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.")
    );
    assert_eq!(
        c.cmd(&["CLIENT", "TRACKING", "ON", "BCAST"]).await,
        err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.")
    );
    assert!(c.cmd(&["CLIENT", "TRACKING", "OFF"]).await.is_ok());
    assert!(c
        .cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a"])
        .await
        .is_ok());
    assert_eq!(
        c.cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab"]).await,
        err("ERR Prefix 'ab' overlaps with an existing prefix 'a'. Prefixes for a single client must not overlap.")
    );
    // RESET turns tracking off.
    assert_eq!(c.cmd(&["RESET"]).await, Reply::Status("RESET".into()));
    assert_eq!(c.cmd(&["CLIENT", "GETREDIR"]).await, Reply::Int(-1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_client_side_cache_sees_changes_made_elsewhere() {
    let cluster = TestCluster::start(2).await;
    let keys = [key_on(2, 0, "py"), key_on(2, 1, "py")];
    assert_ne!(shard_of(&keys[0], 2), shard_of(&keys[1], 2));
    let mut command = Command::new("python3");
    command
        .arg(crate::apps::repo().join("tests/apps/client_cache.py"))
        .arg(cluster.addr.port().to_string())
        .args(&keys)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the script finishes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.lines().last() == Some("client cache ok"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tracking_connection_flushes_the_caches_and_comes_back() {
    let cluster = TestCluster::start(2).await;
    let k = key_on(2, 1, "k");
    let mut c = tracking_client(&cluster, &[]).await;
    let mut writer = cluster.client().await;
    assert_eq!(c.cmd_resp3(&["GET", &k]).await, b"_\r\n");
    // INFO counts them with Redis's names.
    let mut bcast = tracking_client(&cluster, &["BCAST", "PREFIX", "a", "PREFIX", "b"]).await;
    for (section, field, value) in [
        ("clients", "tracking_clients", "2"),
        ("stats", "tracking_total_keys", "1"),
        ("stats", "tracking_total_items", "1"),
        ("stats", "tracking_total_prefixes", "2"),
    ] {
        assert_eq!(
            writer.info_field(section, field).await.as_deref(),
            Some(value),
            "{field}"
        );
    }
    assert_eq!(
        text(&bcast.cmd_resp3(&["CLIENT", "TRACKING", "OFF"]).await),
        "+OK\r\n"
    );
    // The proxy's tracking connection on the master of `k`: flags `t` (tracking), `B` (BCAST).
    let mut node = cluster.master(1).await;
    let list = node.cmd(&["CLIENT", "LIST"]).await.text();
    let ids: Vec<&str> = list
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('B'))
        })
        .filter_map(|l| l.split(' ').next()?.strip_prefix("id="))
        .collect();
    assert_eq!(ids.len(), 1, "{list}");
    assert_eq!(
        node.cmd(&["CLIENT", "KILL", "ID", ids[0]]).await,
        Reply::Int(1)
    );
    // Changes may be missed while it is down: everything cached is dropped, once when it is
    // lost and once when it is back.
    assert_eq!(text(&c.read_resp3_raw().await), text(FLUSH_PUSH));
    assert_eq!(text(&c.read_resp3_raw().await), text(FLUSH_PUSH));
    // Back: reads are tracked again.
    assert_eq!(c.cmd_resp3(&["GET", &k]).await, b"_\r\n");
    assert!(writer.cmd(&["SET", &k, "1"]).await.is_ok());
    assert_eq!(text(&c.read_resp3_raw().await), text(&push(&[&k])));
    // The last tracking client leaves: the proxy closes its tracking connections.
    drop(c);
    let addr = cluster.masters[1].addr();
    wait_until(
        Duration::from_secs(5),
        "the tracking connection closes",
        || {
            let addr = addr.clone();
            async move {
                let list = Client::connect(addr)
                    .await
                    .cmd(&["CLIENT", "LIST"])
                    .await
                    .text();
                !list.lines().any(|l| {
                    l.split(' ')
                        .any(|f| f.starts_with("flags=") && f.contains('B'))
                })
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_new_master_reports_changes() {
    let mut cluster = TestCluster::start_with(2, true, "", &[]).await;
    let k = key_on(2, 0, "k");
    let mut c = tracking_client(&cluster, &[]).await;
    let mut writer = cluster.client().await;
    assert!(writer.cmd(&["SET", &k, "before"]).await.is_ok());
    assert_eq!(c.cmd_resp3(&["GET", &k]).await, b"$6\r\nbefore\r\n");
    cluster.wait_probes_up().await;
    let replica = cluster.replicas[0].addr();
    cluster.masters[0].kill();
    let addr = cluster.addr;
    wait_until(Duration::from_secs(10), "the replica is promoted", || {
        let replica = replica.clone();
        async move {
            let mut client = Client::connect_addr(addr).await;
            client.cmd(&["SET", "{k}probe", "x"]).await.is_ok()
                && Client::connect(replica)
                    .await
                    .cmd(&["ROLE"])
                    .await
                    .items()
                    .first()
                    == Some(&Reply::bulk("master"))
        }
    })
    .await;
    // Changes on the old master's shard may have been missed: the cache is dropped (null
    // invalidations, one per step the proxy noticed), never a key left stale. The client does
    // what a cache does: after a flush it reads again. Once the new master's tracking
    // connection is up, its changes come as invalidations of the key.
    let flush = text(FLUSH_PUSH);
    let invalidated = text(&push(&[&k]));
    for round in 0.. {
        assert!(round < 10, "the new master never reported the change");
        c.send_raw(&encode_command(&["GET", &k])).await;
        let value = loop {
            let frame = c.read_resp3_raw().await;
            if !frame.starts_with(b">") {
                break text(&frame);
            }
        };
        assert!(value.starts_with('$'), "{value}");
        assert!(writer.cmd(&["SET", &k, &round.to_string()]).await.is_ok());
        let frame = text(&c.read_resp3_raw().await);
        if frame == invalidated {
            break;
        }
        assert_eq!(frame, flush);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_of_a_read_key_is_invalidated_over_many_rounds() {
    // 400 rounds over two shards: read, another client writes, the invalidation must come
    // (none lost); prints how long after the write's reply it arrived.
    let cluster = TestCluster::start(2).await;
    let keys = [key_on(2, 0, "lat"), key_on(2, 1, "lat")];
    let mut c = tracking_client(&cluster, &[]).await;
    let mut writer = cluster.client().await;
    let mut delays = Vec::new();
    for round in 0..400 {
        let key = &keys[round % 2];
        assert!(c.cmd_resp3(&["GET", key]).await.starts_with(b"$") || round < 2);
        assert!(writer.cmd(&["SET", key, &round.to_string()]).await.is_ok());
        let written = std::time::Instant::now();
        assert_eq!(
            text(&c.read_resp3_raw().await),
            text(&push(&[key])),
            "round {round}"
        );
        delays.push(written.elapsed());
    }
    delays.sort();
    eprintln!(
        "invalidation after the write's reply: p50 {:?}, p99 {:?}, max {:?}",
        delays[delays.len() / 2],
        delays[delays.len() * 99 / 100],
        delays[delays.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_redirect_target_is_woken_for_its_invalidations() {
    let cluster = TestCluster::start_with(2, false, "[limits]\nidle_park_ms = 50\n", &[]).await;
    let mut target = cluster.client().await;
    assert!(target.cmd_resp3(&["HELLO", "3"]).await.starts_with(b"%7"));
    let id = text(&target.cmd_resp3(&["CLIENT", "ID"]).await);
    let id = id.trim_start_matches(':').trim_end().to_owned();
    let mut writer = cluster.client().await;
    wait_until(Duration::from_secs(5), "the idle target parks", || {
        let addr = cluster.addr;
        async move {
            Client::connect_addr(addr)
                .await
                .info_field("clients", "parked_clients")
                .await
                .as_deref()
                != Some("0")
        }
    })
    .await;
    // Tracking clients and their targets do not park: the invalidation is written at once.
    let mut tracker = tracking_client(&cluster, &["REDIRECT", &id]).await;
    for round in 0..3 {
        let k = key_on(2, round % 2, &format!("p{round}"));
        assert_eq!(tracker.cmd_resp3(&["GET", &k]).await, b"_\r\n");
        assert!(writer.cmd(&["SET", &k, "v"]).await.is_ok());
        assert_eq!(text(&target.read_resp3_raw().await), text(&push(&[&k])));
        // Idle longer than the park interval between rounds (not a synchronisation).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A script that declares its keys, or declares none and names them as literals, arms the
/// invalidation of the keys it reads, as Redis tracks a script's reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_read_by_scripts_are_invalidated() {
    let cluster = TestCluster::start(2).await;
    let declared = key_on(2, 0, "declared");
    let literal = key_on(2, 1, "literal");
    let mut c = tracking_client(&cluster, &[]).await;
    let mut writer = cluster.client().await;
    assert_eq!(
        c.cmd_resp3(&[
            "EVAL_RO",
            "return redis.call('GET', KEYS[1])",
            "1",
            &declared
        ])
        .await,
        b"_\r\n"
    );
    let script = format!("return redis.call('GET', '{literal}')");
    assert_eq!(c.cmd_resp3(&["EVAL_RO", &script, "0"]).await, b"_\r\n");
    assert!(writer.cmd(&["SET", &declared, "1"]).await.is_ok());
    assert_eq!(text(&c.read_resp3_raw().await), text(&push(&[&declared])));
    assert!(writer.cmd(&["SET", &literal, "1"]).await.is_ok());
    assert_eq!(text(&c.read_resp3_raw().await), text(&push(&[&literal])));
    assert_nothing_pending(&mut c).await;
}
