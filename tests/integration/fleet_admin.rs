//! The admin port and `redshard-admin` in a fleet (`[cluster] etcd`), against a real etcd,
//! real redis-server nodes and two in-process proxies: `info`/`check` list the proxies and the
//! leader from etcd, and a command that changes the topology, sent to a proxy that does not
//! lead, runs on the leader (forwarded by the admin port, its reply relayed).
//!
//! In the first tests the proxies are embedded without joining the fleet (`Proxy::start_on`),
//! and their membership and election are made here through `redshard-cluster`, so the test
//! decides who leads and when that changes; the last one runs a fleet that joins and elects
//! by itself.

use std::net::SocketAddr;
use std::time::Duration;

use redshard_cluster::{Election, Etcd, Leadership, Membership, Session};
use redshard_config::Config;
use redshard_proxy::Proxy;
use redshard_tests::cluster::{config_text, start_proxy};
use redshard_tests::{wait_until, Client, EtcdServer, RedisServer, Reply, TestCluster};
use tokio::net::TcpListener;

use crate::admin_cli::cli;

const PASSWORD: &str = "fleet-admin-pw";

/// One proxy of the fleet under test.
struct Member {
    /// The in-process proxy.
    proxy: Proxy,
    /// Its admin port.
    admin: SocketAddr,
    /// Its etcd session (`None` until it joins).
    session: Option<Session>,
    /// Its member entry, kept alive with the session.
    membership: Option<Membership>,
}

/// A proxy with id `id` in front of `master`, in the fleet of `etcd` under `prefix`, with a
/// TCP admin port whose password is `password`.
async fn proxy(etcd: &EtcdServer, prefix: &str, id: &str, master: &str, password: &str) -> Member {
    let extra = format!(
        "admin_password = \"{password}\"\n[replication]\nmode = \"redis\"\n\
         [cluster]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nlease_ttl_ms = 2000\nproxy_id = \"{id}\"\n",
        etcd.addr()
    );
    let text = config_text(&[master.to_owned()], &[], &extra);
    let config =
        Config::from_toml_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut proxy = start_proxy(config).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = proxy.start_admin(listener).expect("admin port starts");
    Member {
        proxy,
        admin,
        session: None,
        membership: None,
    }
}

/// The etcd client of the fleet under `prefix`.
async fn client(etcd: &EtcdServer, prefix: &str) -> Etcd {
    Etcd::connect(&etcd.cluster_config(prefix, Duration::from_secs(2)))
        .await
        .expect("etcd client")
}

impl Member {
    /// Registers the proxy as `id` with its client and admin addresses and its epoch.
    async fn join(&mut self, etcd: &Etcd, id: &str) {
        let session = Session::start(etcd).await.expect("session");
        let epoch = self.proxy.state().router.load().topology().epoch;
        let membership = Membership::register_with_admin(
            etcd,
            &session,
            id,
            &self.proxy.local_addr().to_string(),
            Some(&self.admin.to_string()),
            epoch,
        )
        .await
        .expect("registered");
        self.session = Some(session);
        self.membership = Some(membership);
    }

    /// Makes the proxy `id` the leader (its session's).
    async fn lead(&self, etcd: &Etcd, id: &str) -> Leadership {
        let session = self.session.as_ref().expect("joined first");
        Election::new(etcd, session, id)
            .campaign()
            .await
            .expect("leads")
    }

    /// An authenticated connection to the admin port.
    async fn admin(&self) -> Client {
        let mut c = Client::connect_addr(self.admin).await;
        assert!(c.cmd(&["AUTH", PASSWORD]).await.is_ok());
        c
    }

    /// Whether the proxy's own topology has a shard whose master is `addr`.
    fn has_master(&self, addr: &str) -> bool {
        self.proxy
            .state()
            .router
            .load()
            .topology()
            .shards
            .iter()
            .any(|s| s.master.to_string() == addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_check_list_the_proxies_and_the_leader() {
    let etcd = EtcdServer::start();
    let prefix = "/fleet-info";
    let master = RedisServer::start();
    let mut a = proxy(&etcd, prefix, "a", &master.addr(), PASSWORD).await;
    let mut b = proxy(&etcd, prefix, "b", &master.addr(), PASSWORD).await;
    let env = [("REDISCLI_AUTH", PASSWORD)];

    // Before any proxy joined: the one asked is listed, not alive, and nobody leads.
    let run = cli(a.admin, &["info"], "", &env).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out
            .contains("P: a - admin - epoch 1 (not alive, the proxy asked)"),
        "{run:?}"
    );
    assert!(
        run.out
            .contains("[WARNING] 0 proxies alive in the fleet; no leader yet."),
        "{run:?}"
    );
    let run = cli(a.admin, &["check"], "", &env).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.out.contains("[ERR] No proxy leads the fleet"),
        "{run:?}"
    );

    let etcd_client = client(&etcd, prefix).await;
    a.join(&etcd_client, "a").await;
    b.join(&etcd_client, "b").await;
    let _leadership = b.lead(&etcd_client, "b").await;

    // Asked through either proxy: both proxies with their addresses, and the leader.
    for (asked, this) in [(&a, "a"), (&b, "b")] {
        let run = cli(asked.admin, &["info"], "", &env).await;
        assert_eq!(run.code, 0, "{run:?}");
        for (m, id) in [(&a, "a"), (&b, "b")] {
            let mut notes = String::from("alive");
            if id == "b" {
                notes.push_str(", leader");
            }
            if id == this {
                notes.push_str(", the proxy asked");
            }
            let line = format!(
                "P: {id} {} admin {} epoch 1 ({notes})",
                m.proxy.local_addr(),
                m.admin
            );
            assert!(run.out.contains(&line), "{line} in {run:?}");
        }
        assert!(
            run.out
                .contains("[OK] 2 proxies alive in the fleet; leader b."),
            "{run:?}"
        );
        let run = cli(asked.admin, &["check"], "", &env).await;
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.out.contains(">>> Check the fleet (etcd)..."), "{run:?}");
        assert!(
            run.out
                .contains("[OK] 2 proxies alive in the fleet; leader b."),
            "{run:?}"
        );
    }

    // FLEET itself, as redis-cli shows it.
    let mut c = a.admin().await;
    let fleet = c.cmd(&["FLEET"]).await;
    assert_eq!(fleet.field("mode").text(), "fleet");
    assert_eq!(fleet.field("proxy").text(), "a");
    assert_eq!(fleet.field("leader").text(), "b");
    assert_eq!(fleet.field("proxies").items().len(), 2);

    // A proxy that leaves (its session closed) is no longer listed.
    let session = b.session.take().expect("joined");
    session.close().await.expect("closed");
    let admin = a.admin;
    wait_until(Duration::from_secs(10), "b leaves the listing", || async {
        let run = cli(admin, &["info"], "", &env).await;
        !run.out.contains("P: b ") && run.out.contains("no leader yet")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_alone_lists_no_fleet() {
    let mut cluster = TestCluster::start(1).await;
    let admin = cluster.start_admin().await;
    let run = cli(admin, &["info"], "", &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        !run.out.contains("P: ") && !run.out.contains("fleet"),
        "{run:?}"
    );
    let mut c = Client::connect_addr(admin).await;
    let fleet = c.cmd(&["FLEET"]).await;
    assert_eq!(fleet.field("mode").text(), "standalone");
    // A proxy alone leads itself: ONLEADER runs the command.
    let reply = c.cmd(&["ONLEADER", "MIGRATIONS"]).await;
    assert_eq!(reply, Reply::Array(Vec::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topology_change_sent_to_a_proxy_that_does_not_lead_runs_on_the_leader() {
    let etcd = EtcdServer::start();
    let prefix = "/fleet-forward";
    let master = RedisServer::start();
    let mut a = proxy(&etcd, prefix, "a", &master.addr(), PASSWORD).await;
    let mut b = proxy(&etcd, prefix, "b", &master.addr(), PASSWORD).await;
    let env = [("REDISCLI_AUTH", PASSWORD)];
    let etcd_client = client(&etcd, prefix).await;

    // No leader yet: refused with the reason, nothing runs anywhere.
    let mut on_a = a.admin().await;
    let empty = RedisServer::start();
    let reply = on_a.cmd(&["ADDSHARD", "s2", &empty.addr()]).await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("CLUSTERDOWN no proxy leads the fleet")),
        "{reply:?}"
    );

    a.join(&etcd_client, "a").await;
    b.join(&etcd_client, "b").await;
    let leadership = b.lead(&etcd_client, "b").await;

    // Through the CLI, pointed at a: the shard is added by b's controller.
    let run = cli(
        a.admin,
        &["add-node", &empty.addr(), "--name", "s2"],
        "",
        &env,
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out.contains(&format!(
            "[OK] New shard s2 with master {} added",
            empty.addr()
        )),
        "{run:?}"
    );
    assert!(b.has_master(&empty.addr()), "the leader b ran ADDSHARD");

    // The leader's refusals are relayed as they are.
    let reply = on_a.cmd(&["ADDSHARD", "s2", &empty.addr()]).await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("ERR ")),
        "{reply:?}"
    );
    let reply = on_a.cmd(&["MIGRATIONS"]).await;
    assert_eq!(reply, Reply::Array(Vec::new()));

    // ONLEADER on a proxy that does not lead never runs the command there.
    let reply = on_a.cmd(&["ONLEADER", "DELSHARD", "s2"]).await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("NOTLEADER this proxy does not lead the fleet; b does")),
        "{reply:?}"
    );

    // The leadership moves to a: commands sent to b now run on a.
    leadership.resign().await.expect("resigned");
    let _leadership = a.lead(&etcd_client, "a").await;
    let third = RedisServer::start();
    let mut on_b = b.admin().await;
    let reply = on_b.cmd(&["ADDSHARD", "s3", &third.addr()]).await;
    assert_eq!(reply.field("shard").text(), "s3", "{reply:?}");
    assert!(a.has_master(&third.addr()), "the leader a ran ADDSHARD");

    // A leader that refuses the forwarding proxy's admin password: the reason is told.
    let mut c = proxy(&etcd, prefix, "c", &master.addr(), "another-password").await;
    c.join(&etcd_client, "c").await;
    let mut on_c = Client::connect_addr(c.admin).await;
    assert!(on_c.cmd(&["AUTH", "another-password"]).await.is_ok());
    let reply = on_c.cmd(&["MIGRATIONS"]).await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.contains("every proxy of a fleet needs the same admin_password")),
        "{reply:?}"
    );
}

/// `n` proxies in front of `master` that join the fleet of `etcd` under `prefix` by
/// themselves (`Proxy::start`), each with a TCP admin port on a free port (advertised as
/// `localhost:<port>` when `by_name`); returns them once one leads, with its index.
async fn joined_fleet(
    etcd: &EtcdServer,
    master: &RedisServer,
    prefix: &str,
    n: usize,
    by_name: bool,
) -> (Vec<Proxy>, usize) {
    redshard_tests::server::init_logs();
    let mut proxies = Vec::new();
    for _ in 0..n {
        let admin = redshard_tests::server::free_port();
        let advertise = if by_name {
            format!("advertise_admin = \"localhost:{admin}\"\n")
        } else {
            String::new()
        };
        let extra = format!(
            "metrics_listen = \"off\"\nadmin_socket = \"off\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             admin_password = \"{PASSWORD}\"\n[replication]\nmode = \"redis\"\n\
             [cluster]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nlease_ttl_ms = 2000\n{advertise}",
            etcd.addr()
        );
        let text = config_text(&[master.addr()], &[], &extra);
        let config = Config::from_toml_str(&text, "test.toml").expect("valid config");
        proxies.push(Proxy::start(config).await.expect("proxy starts"));
    }
    let leads = |p: &Proxy| p.controller().fleet().is_some_and(|f| f.is_leader());
    wait_until(Duration::from_secs(10), "one proxy to lead", || async {
        proxies.iter().filter(|p| leads(p)).count() == 1
    })
    .await;
    let leader = proxies.iter().position(leads).expect("a leader");
    (proxies, leader)
}

/// Three proxies that join the fleet by themselves (`Proxy::start`), each with a TCP admin
/// port it advertises by name (`[cluster] advertise_admin = "localhost:<port>"`):
/// `redshard-admin` asked of a follower lists every proxy with that address and the leader,
/// and its `add-node` runs on the leader, reached at that address, and reaches every proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshard_admin_pointed_at_a_follower_of_a_running_fleet() {
    let etcd = EtcdServer::start();
    let master = RedisServer::start();
    let (proxies, leader) = joined_fleet(&etcd, &master, "/fleet-cli", 3, true).await;
    let follower = (leader + 1) % proxies.len();
    let other = (leader + 2) % proxies.len();
    let admin_of = |i: usize| proxies[i].admin_addr().expect("admin port");
    let id_of = |i: usize| proxies[i].local_addr().to_string();
    let env = [("REDISCLI_AUTH", PASSWORD)];

    // Every proxy listed, alive, with its admin address; the leader named.
    let admin = admin_of(follower);
    let run = cli(admin, &["info"], "", &env).await;
    assert_eq!(run.code, 0, "{run:?}");
    for i in 0..proxies.len() {
        let advertised = format!("localhost:{}", admin_of(i).port());
        let line = format!("P: {} {} admin {advertised} epoch", id_of(i), id_of(i));
        assert!(run.out.contains(&line), "{line} in {run:?}");
    }
    assert!(
        run.out.contains(&format!(
            "[OK] 3 proxies alive in the fleet; leader {}.",
            id_of(leader)
        )),
        "{run:?}"
    );

    // add-node through a follower: the leader adds the shard, every proxy installs it.
    let empty = RedisServer::start();
    let run = cli(
        admin,
        &["add-node", &empty.addr(), "--name", "s2"],
        "",
        &env,
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let has = |p: &Proxy| {
        p.state()
            .router
            .load()
            .topology()
            .shards
            .iter()
            .any(|s| s.name == "s2")
    };
    // The proxy the CLI was pointed at answered only once it had the change itself: what
    // the CLI asks of it next sees the new shard.
    assert!(
        has(&proxies[follower]),
        "the follower answered before it had s2"
    );
    wait_until(
        Duration::from_secs(10),
        "every proxy to have s2",
        || async { proxies.iter().all(has) },
    )
    .await;

    // check through the third proxy: the fleet at one epoch, nothing wrong.
    let admin = admin_of(other);
    wait_until(Duration::from_secs(10), "check to pass", || async {
        cli(admin, &["check"], "", &env).await.code == 0
    })
    .await;
    let run = cli(admin, &["check"], "", &env).await;
    assert!(run.out.contains(">>> Check the fleet (etcd)..."), "{run:?}");
    assert!(!run.out.contains("[WARNING]"), "{run:?}");
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(1)).await;
    }
}

/// A client's ACL SETUSER / DELUSER sent to a proxy that does not lead is saved by the leader
/// (forwarded to its admin port as `SETUSERS`), and every proxy has the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_changes_sent_to_a_proxy_that_does_not_lead_are_saved_by_the_leader() {
    let etcd = EtcdServer::start();
    let master = RedisServer::start();
    let (proxies, leader) = joined_fleet(&etcd, &master, "/fleet-users", 2, false).await;
    let follower = 1 - leader;

    let mut on_follower = Client::connect_addr(proxies[follower].local_addr()).await;
    assert_eq!(
        on_follower
            .cmd(&["ACL", "SETUSER", "app", "on", ">app-pw", "~app:*", "+get"])
            .await,
        Reply::Status("OK".into())
    );
    // Saved by the leader, and installed by the follower before it answered.
    let has_app = |p: &Proxy| {
        p.state()
            .router
            .load()
            .topology()
            .users
            .as_ref()
            .is_some_and(|u| u.iter().any(|l| l.starts_with("user app on ")))
    };
    assert!(
        has_app(&proxies[follower]),
        "the follower answered before it had the user"
    );
    wait_until(
        Duration::from_secs(10),
        "the leader to have the user",
        || async {
            has_app(&proxies[leader]) && proxies[leader].state().users.get("app").is_some()
        },
    )
    .await;
    for proxy in &proxies {
        let mut app = Client::connect_addr(proxy.local_addr()).await;
        assert!(app.cmd(&["AUTH", "app", "app-pw"]).await.is_ok());
        assert_eq!(
            app.cmd(&["SET", "app:1", "x"]).await,
            Reply::Error("NOPERM User app has no permissions to run the 'set' command".into())
        );
    }
    assert_eq!(
        on_follower.cmd(&["ACL", "DELUSER", "app"]).await,
        Reply::Int(1)
    );
    wait_until(
        Duration::from_secs(10),
        "the user gone everywhere",
        || async { proxies.iter().all(|p| p.state().users.get("app").is_none()) },
    )
    .await;

    // The leader refuses lines that describe no user; nothing changes.
    let mut admin = Client::connect_addr(proxies[leader].admin_addr().expect("admin port")).await;
    assert!(admin.cmd(&["AUTH", PASSWORD]).await.is_ok());
    let reply = admin
        .cmd(&["SETUSERS", "user nobody on >pw ~* +@all"])
        .await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.contains("no default user")),
        "{reply:?}"
    );
    let reply = admin.cmd(&["SETUSERS", "not a user line"]).await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.contains("not a user as ACL LIST describes one")),
        "{reply:?}"
    );
    assert!(proxies[leader].state().users.get("nobody").is_none());
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}
