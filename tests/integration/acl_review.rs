//! Attacks on the proxy's ACL users, each compared with what a redis-server 7.0.15 answers
//! the same user and request.

use redshard_tests::{Client, RedisServer, Reply, TestCluster};

/// The same `ACL SETUSER` on both, then a client of each authenticated as that user.
async fn as_user(
    direct: &mut Client,
    proxy: &mut Client,
    redis: &RedisServer,
    cluster: &TestCluster,
    rules: &[&str],
) -> (Client, Client) {
    let mut setuser = vec!["ACL", "SETUSER", "attacker", "reset", "on", ">pw"];
    setuser.extend_from_slice(rules);
    assert_eq!(direct.cmd(&setuser).await, Reply::Status("OK".into()));
    assert_eq!(proxy.cmd(&setuser).await, Reply::Status("OK".into()));
    let mut d = Client::connect(redis.addr()).await;
    let mut p = cluster.client().await;
    for c in [&mut d, &mut p] {
        assert_eq!(
            c.cmd(&["AUTH", "attacker", "pw"]).await,
            Reply::Status("OK".into())
        );
    }
    (d, p)
}

/// SORT's sorted key is read and its STORE key written (Redis's `sortGetKeys` flags them so):
/// a user who may only read may sort, as on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_needs_read_on_the_sorted_key_and_write_on_the_destination_only() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(1).await;
    let mut direct = Client::connect(redis.addr()).await;
    let mut proxy = cluster.client().await;
    for c in [&mut direct, &mut proxy] {
        assert_eq!(c.cmd(&["RPUSH", "{t}list", "2", "1"]).await, Reply::Int(2));
    }
    let (mut d, mut p) = as_user(
        &mut direct,
        &mut proxy,
        &redis,
        &cluster,
        &["%R~{t}list", "%W~{t}dst", "&*", "+@all"],
    )
    .await;
    let sorted = Reply::Array(vec![Reply::bulk("1"), Reply::bulk("2")]);
    for (c, nokey) in [
        (
            &mut d,
            "NOPERM this user has no permissions to access one of the keys used as arguments",
        ),
        (&mut p, "NOPERM No permissions to access a key"),
    ] {
        assert_eq!(c.cmd(&["SORT", "{t}list"]).await, sorted);
        assert_eq!(
            c.cmd(&["SORT", "{t}list", "LIMIT", "0", "2", "STORE", "{t}dst"])
                .await,
            Reply::Int(2)
        );
        assert_eq!(
            c.cmd(&["SORT", "{t}list", "STORE", "{t}list"]).await,
            Reply::Error(nokey.into())
        );
    }
}
