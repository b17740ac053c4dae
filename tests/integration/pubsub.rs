//! Pub/sub through the proxy: channels on their slot's master, patterns on every master,
//! confirmations with single-server counts, messages from any proxy connection.

use std::time::Duration;

use redshard_tests::cluster::shard_of;
use redshard_tests::replication::wait_until;
use redshard_tests::{Reply, TestCluster};

fn msg(kind: &str, parts: &[&str], count: Option<i64>) -> Reply {
    let mut items = vec![Reply::bulk(kind)];
    items.extend(parts.iter().map(|p| Reply::bulk(p)));
    if let Some(n) = count {
        items.push(Reply::Int(n));
    }
    Reply::Array(items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_messages_published_through_any_connection() {
    let cluster = TestCluster::start(3).await;
    // Two channels on different shards.
    let (a, b) = ("news", "sport");
    assert_ne!(shard_of(a, 3), shard_of(b, 3));
    let mut sub = cluster.client().await;
    let mut publisher = cluster.client().await;
    sub.send_raw(&redshard_tests::client::encode_command(&[
        "SUBSCRIBE",
        a,
        b,
    ]))
    .await;
    assert_eq!(sub.read().await, msg("subscribe", &[a], Some(1)));
    assert_eq!(sub.read().await, msg("subscribe", &[b], Some(2)));
    assert_eq!(publisher.cmd(&["PUBLISH", a, "hello"]).await, Reply::Int(1));
    assert_eq!(sub.read().await, msg("message", &[a, "hello"], None));
    assert_eq!(publisher.cmd(&["PUBLISH", b, "goal"]).await, Reply::Int(1));
    assert_eq!(sub.read().await, msg("message", &[b, "goal"], None));
    assert_eq!(
        publisher.cmd(&["PUBLISH", "nobody", "x"]).await,
        Reply::Int(0)
    );
    // Patterns match channels on every shard.
    sub.send_raw(&redshard_tests::client::encode_command(&[
        "PSUBSCRIBE",
        "ch.*",
    ]))
    .await;
    assert_eq!(sub.read().await, msg("psubscribe", &["ch.*"], Some(3)));
    for i in 0..6 {
        let channel = format!("ch.{i}");
        assert_eq!(
            publisher.cmd(&["PUBLISH", &channel, "p"]).await,
            Reply::Int(1)
        );
        assert_eq!(
            sub.read().await,
            msg("pmessage", &["ch.*", &channel, "p"], None)
        );
    }
    // Subscribed mode (RESP2) allows only a few commands; PING answers like Redis.
    let Reply::Error(e) = sub.cmd(&["GET", "k"]).await else {
        panic!("GET must be refused")
    };
    assert!(e.starts_with("ERR Can't execute 'get'"), "{e}");
    assert_eq!(sub.cmd(&["PING"]).await, msg("pong", &[""], None));
    assert_eq!(sub.cmd(&["PING", "hi"]).await, msg("pong", &["hi"], None));
    assert_eq!(
        sub.cmd(&["PING", "a", "b"]).await,
        Reply::Error("ERR wrong number of arguments for 'ping' command".into())
    );
    // PUBSUB introspection merged over the masters.
    let Reply::Array(numsub) = publisher.cmd(&["PUBSUB", "NUMSUB", a, b, "nobody"]).await else {
        panic!()
    };
    assert_eq!(
        numsub,
        vec![
            Reply::bulk(a),
            Reply::Int(1),
            Reply::bulk(b),
            Reply::Int(1),
            Reply::bulk("nobody"),
            Reply::Int(0)
        ]
    );
    assert_eq!(publisher.cmd(&["PUBSUB", "NUMPAT"]).await, Reply::Int(1));
    let Reply::Array(mut channels) = publisher.cmd(&["PUBSUB", "CHANNELS"]).await else {
        panic!()
    };
    channels.sort_by_key(|c| c.text());
    assert_eq!(channels, vec![Reply::bulk(a), Reply::bulk(b)]);
    // Unsubscribing everything leaves subscribed mode.
    sub.send_raw(&redshard_tests::client::encode_command(&["UNSUBSCRIBE"]))
        .await;
    assert_eq!(sub.read().await, msg("unsubscribe", &[a], Some(2)));
    assert_eq!(sub.read().await, msg("unsubscribe", &[b], Some(1)));
    assert_eq!(
        sub.cmd(&["PUNSUBSCRIBE", "ch.*"]).await,
        msg("punsubscribe", &["ch.*"], Some(0))
    );
    assert_eq!(publisher.cmd(&["PUBLISH", a, "gone"]).await, Reply::Int(0));
    assert_eq!(
        sub.cmd(&["SET", "k", "v"]).await,
        Reply::Status("OK".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_pubsub_and_resp3_pushes() {
    let cluster = TestCluster::start(3).await;
    let mut sub = cluster.client().await;
    let mut publisher = cluster.client().await;
    let hello = sub.cmd_resp3(&["HELLO", "3"]).await;
    assert!(hello.starts_with(b"%7"));
    sub.send_raw(&redshard_tests::client::encode_command(&[
        "SSUBSCRIBE",
        "{room}1",
        "{room}2",
    ]))
    .await;
    assert_eq!(
        sub.read_resp3_raw().await,
        b">3\r\n$10\r\nssubscribe\r\n$7\r\n{room}1\r\n:1\r\n"
    );
    assert_eq!(
        sub.read_resp3_raw().await,
        b">3\r\n$10\r\nssubscribe\r\n$7\r\n{room}2\r\n:2\r\n"
    );
    assert_eq!(
        publisher.cmd(&["SPUBLISH", "{room}2", "hi"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        sub.read_resp3_raw().await,
        b">3\r\n$8\r\nsmessage\r\n$7\r\n{room}2\r\n$2\r\nhi\r\n"
    );
    // RESP3 clients may run ordinary commands while subscribed.
    assert_eq!(sub.cmd_resp3(&["SET", "k", "v"]).await, b"+OK\r\n");
    assert_eq!(
        publisher.cmd(&["SSUBSCRIBE", "a", "b"]).await,
        Reply::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_subscribed_node_closes_the_client_so_it_resubscribes() {
    let mut cluster = TestCluster::start(2).await;
    // A channel served by master 1.
    let channel = redshard_tests::cluster::key_on(2, 1, "ch");
    let mut sub = cluster.client().await;
    sub.send_raw(&redshard_tests::client::encode_command(&[
        "SUBSCRIBE",
        &channel,
    ]))
    .await;
    assert_eq!(sub.read().await, msg("subscribe", &[&channel], Some(1)));
    cluster.masters[1].kill();
    // Messages from that node can no longer arrive: the proxy closes the connection, as
    // losing the node would, instead of leaving the client waiting forever.
    assert_eq!(sub.try_read().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_before_the_nodes_confirmed_answers_both_and_goes_on() {
    // SUBSCRIBE then, in the same write (before the node confirmed), UNSUBSCRIBE, RESET or
    // PUNSUBSCRIBE: Redis answers every confirmation and the connection goes on.
    let cluster = TestCluster::start(2).await;
    let encode = redshard_tests::client::encode_command::<&str>;
    let reset = Reply::Status("RESET".into());
    let cases: [(Vec<u8>, Vec<Reply>); 4] = [
        (
            [encode(&["SUBSCRIBE", "ch"]), encode(&["UNSUBSCRIBE"])].concat(),
            vec![
                msg("subscribe", &["ch"], Some(1)),
                msg("unsubscribe", &["ch"], Some(0)),
            ],
        ),
        (
            [
                encode(&["SUBSCRIBE", "a", "b"]),
                encode(&["UNSUBSCRIBE", "b", "a"]),
            ]
            .concat(),
            vec![
                msg("subscribe", &["a"], Some(1)),
                msg("subscribe", &["b"], Some(2)),
                msg("unsubscribe", &["b"], Some(1)),
                msg("unsubscribe", &["a"], Some(0)),
            ],
        ),
        (
            [encode(&["PSUBSCRIBE", "p*"]), encode(&["PUNSUBSCRIBE"])].concat(),
            vec![
                msg("psubscribe", &["p*"], Some(1)),
                msg("punsubscribe", &["p*"], Some(0)),
            ],
        ),
        (
            [encode(&["SUBSCRIBE", "ch"]), encode(&["RESET"])].concat(),
            vec![msg("subscribe", &["ch"], Some(1)), reset],
        ),
    ];
    for (request, expected) in cases {
        let mut c = cluster.client().await;
        c.send_raw(&request).await;
        for want in &expected {
            assert_eq!(&c.read().await, want);
        }
        assert_eq!(c.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    }
    // Nobody is left subscribed on the nodes (the connections close as the sessions let go).
    for master in &cluster.masters {
        let addr = master.addr();
        wait_until(
            Duration::from_secs(5),
            "no subscriber left on the node",
            || {
                let addr = addr.clone();
                async move {
                    let mut direct = redshard_tests::Client::connect(addr).await;
                    let channels = direct.cmd(&["PUBSUB", "NUMSUB", "ch", "a", "b"]).await;
                    let zero = |name: &str| [Reply::bulk(name), Reply::Int(0)];
                    channels == Reply::Array([zero("ch"), zero("a"), zero("b")].concat())
                        && direct.cmd(&["PUBSUB", "NUMPAT"]).await == Reply::Int(0)
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_follows_the_last_unsubscribe_confirmation() {
    // A busy channel: after the confirmation that leaves the last subscription, a RESP2
    // client must only get replies to its commands, never a late message it would take for
    // one.
    let cluster = TestCluster::start(1).await;
    let mut publisher = cluster.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publisher.cmd(&["PUBLISH", "busy", "m"]).await;
            }
        })
    };
    let encode = redshard_tests::client::encode_command::<&str>;
    for _ in 0..20 {
        let mut sub = cluster.client().await;
        sub.send_raw(&encode(&["SUBSCRIBE", "busy"])).await;
        assert_eq!(sub.read().await, msg("subscribe", &["busy"], Some(1)));
        // Once messages flow, leave and ask for something else at once.
        assert_eq!(sub.read().await, msg("message", &["busy", "m"], None));
        let mut request = encode(&["UNSUBSCRIBE"]);
        for _ in 0..20 {
            request.extend(encode(&["GET", "nothing"]));
        }
        sub.send_raw(&request).await;
        loop {
            let reply = sub.read().await;
            if reply == msg("unsubscribe", &["busy"], Some(0)) {
                break;
            }
            assert_eq!(reply, msg("message", &["busy", "m"], None));
        }
        for _ in 0..20 {
            assert_eq!(sub.read().await, Reply::Bulk(None));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publishing.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_pipelined_behind_a_subscribe_reaches_the_subscriber() {
    // RESP3: SUBSCRIBE and a PUBLISH to that channel in one write. Redis runs them in order,
    // so the message arrives; the proxy must not let the PUBLISH overtake the subscription.
    let cluster = TestCluster::start(3).await;
    for i in 0..20 {
        let mut c = cluster.client().await;
        assert!(c.cmd_resp3(&["HELLO", "3"]).await.starts_with(b"%"));
        let (command, kind, publish) = match i % 3 {
            0 => ("SUBSCRIBE", "subscribe", "PUBLISH"),
            1 => ("SSUBSCRIBE", "ssubscribe", "SPUBLISH"),
            _ => ("PSUBSCRIBE", "psubscribe", "PUBLISH"),
        };
        let channel = format!("ch{i}");
        let subject = if kind == "psubscribe" {
            format!("ch{i}*")
        } else {
            channel.clone()
        };
        c.send_raw(
            &[
                redshard_tests::client::encode_command(&[command, subject.as_str()]),
                redshard_tests::client::encode_command(&[publish, channel.as_str(), "m"]),
            ]
            .concat(),
        )
        .await;
        let confirmation = c.read_resp3_raw().await;
        let expected = format!(
            ">3\r\n${}\r\n{kind}\r\n${}\r\n{subject}\r\n:1\r\n",
            kind.len(),
            subject.len()
        );
        assert_eq!(String::from_utf8_lossy(&confirmation), expected);
        // The message push and PUBLISH's count, in either order.
        let mut rest = [c.read_resp3_raw().await, c.read_resp3_raw().await];
        rest.sort();
        assert_eq!(String::from_utf8_lossy(&rest[0]), ":1\r\n", "{command}");
        let message = String::from_utf8_lossy(&rest[1]).into_owned();
        assert!(message.starts_with(">"), "{message}");
        assert!(message.ends_with("$1\r\nm\r\n"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_confirms_a_subscribe_times_out_like_a_lane() {
    // The channel's node hangs (SIGSTOP): the SUBSCRIBE is not confirmed, and after
    // `response_timeout_ms` the client gets the lane's timeout error and is closed (its
    // messages could be lost), instead of waiting forever.
    // (Without the proxy's ACL users the subscription connection needs no handshake: it
    // opens while the node is stopped, and what waits is the SUBSCRIBE itself.)
    let cluster = TestCluster::start_with(
        1,
        false,
        "[backend]\nresponse_timeout_ms = 300\nmanage_acl = false\n",
        &[],
    )
    .await;
    let mut c = cluster.client().await;
    let pid = cluster.masters[0].pid().expect("the node runs");
    redshard_tests::replication::signal(pid, "STOP");
    c.send_raw(&redshard_tests::client::encode_command(&[
        "SUBSCRIBE",
        "ch",
    ]))
    .await;
    let reply = c.read().await;
    redshard_tests::replication::signal(pid, "CONT");
    let Reply::Error(e) = reply else {
        panic!("expected the timeout, got {reply:?}")
    };
    assert!(e.ends_with("timed out after 300 ms"), "{e}");
    assert_eq!(c.try_read().await, None, "the client is closed");
}

/// Fills the master `node` to its `maxclients` (set to the connections it has now), so that
/// every new connection to it is refused; `Drop`-free: the caller restores it.
async fn refuse_new_connections(node: &mut redshard_tests::Client) {
    let connected = node
        .info_field("clients", "connected_clients")
        .await
        .expect("connected_clients");
    assert_eq!(
        node.cmd(&["CONFIG", "SET", "maxclients", &connected]).await,
        Reply::Status("OK".into())
    );
}

/// A subscription or a blocking command goes out at once on a connection the proxy opened
/// ahead of need (`[backend] ready_connections`), not after a connect and AUTH of its own:
/// here the node refuses every new connection, and the client's SUBSCRIBE and BLPOP still
/// reach it, so a PUBLISH or LPUSH another client sends after them finds them there. Without
/// the ready connection both fail (the node is full).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_or_blocking_command_goes_out_on_a_connection_opened_ahead() {
    let cluster = TestCluster::start(1).await;
    let master = cluster.masters[0].addr();
    let node = cluster
        .proxy
        .as_ref()
        .expect("proxy")
        .state()
        .router
        .pool()
        .node(&redshard_config::NodeAddr::parse(&master).unwrap());
    let resp2 = redshard_proxy::resp::Protocol::Resp2;
    let mut direct = redshard_tests::Client::connect(master.clone()).await;
    let mut publisher = cluster.client().await;
    let mut subscriber = cluster.client().await;
    let mut popper = cluster.client().await;

    // SUBSCRIBE with the node full: it goes out on the ready connection.
    wait_until(Duration::from_secs(5), "a ready connection", || async {
        node.has_ready_connection(resp2)
    })
    .await;
    refuse_new_connections(&mut direct).await;
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "ready-ch"]).await,
        msg("subscribe", &["ready-ch"], Some(1))
    );
    assert_eq!(
        publisher.cmd(&["PUBLISH", "ready-ch", "m"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        subscriber.read().await,
        msg("message", &["ready-ch", "m"], None)
    );

    // BLPOP the same way: on the node (blocked there) before the LPUSH.
    assert_eq!(
        direct.cmd(&["CONFIG", "SET", "maxclients", "10000"]).await,
        Reply::Status("OK".into())
    );
    wait_until(
        Duration::from_secs(5),
        "the next ready connection",
        || async { node.has_ready_connection(resp2) },
    )
    .await;
    refuse_new_connections(&mut direct).await;
    popper
        .send_raw(&redshard_tests::client::encode_command(&[
            "BLPOP",
            "ready-list",
            "0",
        ]))
        .await;
    let shared = tokio::sync::Mutex::new(direct);
    wait_until(
        Duration::from_secs(5),
        "BLPOP blocked on the node",
        || async {
            let blocked = shared
                .lock()
                .await
                .info_field("clients", "blocked_clients")
                .await;
            blocked.as_deref() == Some("1")
        },
    )
    .await;
    let mut direct = shared.into_inner();
    assert_eq!(
        publisher.cmd(&["LPUSH", "ready-list", "x"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        popper.read().await,
        Reply::Array(vec![Reply::bulk("ready-list"), Reply::bulk("x")])
    );
    // With no connection ready and the node full, the client is told why, in those words.
    let mut late = cluster.client().await;
    let reply = late.cmd(&["BLPOP", "ready-list", "0"]).await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.contains("refused the connection: ERR max number of clients reached")),
        "{reply:?}"
    );
    assert_eq!(
        direct.cmd(&["CONFIG", "SET", "maxclients", "10000"]).await,
        Reply::Status("OK".into())
    );
}
