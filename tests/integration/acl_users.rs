//! The proxy's users changed at run time: ACL SETUSER / DELUSER / DRYRUN / LOG compared with
//! a live redis-server given the same rules, and enforced at the proxy (commands, keys,
//! channels, selectors), CONFIG SET requirepass.

use redshard_tests::cluster::config_text;
use redshard_tests::server::free_port;
use redshard_tests::{Client, RedisServer, Reply, TestCluster};

use crate::proxy_restart::ProxyProcess;

/// A proxy process in front of one master that saves its topology (and so its users) in a
/// file of a temporary folder, with `password = "start-pw"` and `extra` config text: started
/// again with [`SavingProxy::start`], it reads back what it saved.
pub struct SavingProxy {
    /// The shard's master, for the whole test.
    _master: RedisServer,
    /// Holds the config and the topology file.
    _dir: tempfile::TempDir,
    /// The config file.
    config: std::path::PathBuf,
    /// The topology file the proxy saves.
    pub topology_file: std::path::PathBuf,
    /// The client port, the same at every start.
    port: u16,
}

impl SavingProxy {
    /// Writes the config; starts nothing but the master.
    pub fn new(extra: &str) -> Self {
        let master = RedisServer::start();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let topology_file = dir.path().join("topology.toml");
        let port = free_port();
        let text = config_text(
            &[master.addr()],
            &[],
            &format!(
                "metrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\ntopology_file = \"{}\"\npassword = \"start-pw\"\n{extra}",
                topology_file.display(),
            ),
        )
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        let config = dir.path().join("redshard.toml");
        std::fs::write(&config, text).expect("the config file");
        Self {
            _master: master,
            _dir: dir,
            config,
            topology_file,
            port,
        }
    }

    /// Starts the proxy process (again).
    pub async fn start(&self) -> ProxyProcess {
        ProxyProcess::start(&self.config, self.port).await
    }
}

/// A description with its single-command rules sorted: Redis 7.0 writes them in the order
/// of its command dictionary, which a random hash seed picks at each start (two
/// redis-servers disagree too); the categories before them, and everything else, must be
/// equal as they are.
fn normalized(text: &str) -> String {
    let spaced = text.replace('(', "( ").replace(')', " )");
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for token in spaced.split(' ') {
        let single = (token.starts_with('+') || token.starts_with('-'))
            && !token.starts_with("+@")
            && !token.starts_with("-@");
        if single {
            run.push(token.to_owned());
            continue;
        }
        run.sort();
        out.append(&mut run);
        out.push(token.to_owned());
    }
    run.sort();
    out.append(&mut run);
    out.join(" ")
}

/// A GETUSER reply with each `commands` normalized.
fn normalized_reply(reply: &Reply) -> Reply {
    match reply {
        Reply::Array(items) => {
            let mut out = Vec::new();
            let mut commands_next = false;
            for item in items {
                if commands_next {
                    out.push(Reply::bulk(&normalized(&item.text())));
                    commands_next = false;
                    continue;
                }
                commands_next = *item == Reply::bulk("commands");
                out.push(normalized_reply(item));
            }
            Reply::Array(out)
        }
        other => other.clone(),
    }
}

/// The `ACL LIST` line of `name`.
async fn list_line(c: &mut Client, name: &str) -> Option<String> {
    let prefix = format!("user {name} ");
    c.cmd(&["ACL", "LIST"])
        .await
        .items()
        .iter()
        .map(Reply::text)
        .find(|l| l.starts_with(&prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuser_getuser_list_and_dryrun_answer_as_redis_does() {
    let redis = RedisServer::start();
    let cluster = TestCluster::start(1).await;
    let mut direct = Client::connect(redis.addr()).await;
    let mut proxy = cluster.client().await;
    let hash = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
    let cases: &[&[&str]] = &[
        &[],
        &["reset"],
        &["on", ">pw", "~k*", "+get"],
        &[
            "reset",
            ">pw",
            "+get",
            "+@hash",
            "-hset",
            "+config|get",
            "-@all",
            "+set",
            "+select|0",
            "%R~a*",
            "~b*",
            "%W~a*",
            "&ch*",
            "(+get ~x*)",
        ],
        &[
            "+@hash",
            "-@hash",
            "+get",
            "-get",
            "+config",
            "-config|get",
            "+client|id",
            "+@admin",
        ],
        &["+@all", "-@dangerous"],
        &["+@all", "-@admin"],
        &["-@all", "+@read", "+@write"],
        &["-@all", "+@read", "-@string"],
        &[
            "+@all",
            "-get",
            "-@string",
            "+client",
            "-client|kill",
            "skip-sanitize-payload",
        ],
        &[
            "+@all",
            "+get",
            "allcommands",
            "-@dangerous",
            "+select|0",
            "-select",
            "+select|1",
            "+select|0",
        ],
        &["%R~*", "%W~*", "~b"],
        &["&a", "&a", "&*"],
        &[">a", ">b", ">a", &format!("#{hash}"), "<b"],
        &["nopass", ">x"],
        &[">x", "nopass"],
        &["(~a +get)", "(&x)", "clearselectors", "( +set  ~b )"],
        &["(+get", "~a)", "(+set ~b*)"],
        &["()"],
        &["%R"],
        &[
            "+select|0",
            "+get|x",
            "+config|get",
            "+@all",
            "+config",
            "-config|set",
        ],
        &[
            "+@ALL",
            "-GET",
            "+Config|Get",
            "~A",
            "&B",
            "on",
            "resetpass",
            "sanitize-payload",
        ],
        &[
            "allkeys",
            "resetkeys",
            "allchannels",
            "resetchannels",
            "%R~x",
            "nocommands",
            "+@pubsub",
        ],
        // Refused: Redis's errors.
        &["~*", "~a"],
        &["foo"],
        &["+foo"],
        &["+@foo"],
        &["#abc"],
        &["<nope"],
        &["!0000000000000000000000000000000000000000000000000000000000000000"],
        &["(+get"],
        &["(+get", "x"],
        &["+get|x|y"],
        &["+config|"],
        &["+config|nope"],
        &["+config|get|x"],
        &["-select|0"],
        &["%X~a"],
        &["%~a"],
        &["%RR~a"],
        &["&a", "allchannels", "&b"],
        &["(nope)"],
        &["x)"],
        &["on", "+get", "nope"],
    ];
    for (i, rules) in cases.iter().enumerate() {
        let name = format!("u{i}");
        let mut args = vec!["ACL", "SETUSER", name.as_str()];
        args.extend_from_slice(rules);
        let want = direct.cmd(&args).await;
        assert_eq!(proxy.cmd(&args).await, want, "ACL SETUSER {name} {rules:?}");
        let want = normalized_reply(&direct.cmd(&["ACL", "GETUSER", &name]).await);
        let got = normalized_reply(&proxy.cmd(&["ACL", "GETUSER", &name]).await);
        assert_eq!(got, want, "ACL GETUSER after {rules:?}");
        let want = list_line(&mut direct, &name).await.map(|l| normalized(&l));
        let got = list_line(&mut proxy, &name).await.map(|l| normalized(&l));
        assert_eq!(got, want, "ACL LIST after {rules:?}");
    }

    // RESP3: the same bytes (sets, maps), for a user whose description has no single rule.
    let rules = [
        "ACL",
        "SETUSER",
        "r3",
        "on",
        ">pw",
        "~k*",
        "%R~r*",
        "&c*",
        "+@hash",
        "+@set",
        "(+@list ~l*)",
    ];
    assert!(direct.cmd(&rules).await.is_ok());
    assert!(proxy.cmd(&rules).await.is_ok());
    assert!(direct.cmd_resp3(&["HELLO", "3"]).await.starts_with(b"%"));
    assert!(proxy.cmd_resp3(&["HELLO", "3"]).await.starts_with(b"%"));
    for args in [
        &["ACL", "GETUSER", "r3"][..],
        &["ACL", "GETUSER", "nobody"],
        &["ACL", "DRYRUN", "r3", "get", "k"],
    ] {
        let want = direct.cmd_resp3(args).await;
        assert_eq!(
            String::from_utf8_lossy(&proxy.cmd_resp3(args).await),
            String::from_utf8_lossy(&want),
            "{args:?}"
        );
    }
    assert!(direct.cmd_resp3(&["HELLO", "2"]).await.starts_with(b"*"));
    assert!(proxy.cmd_resp3(&["HELLO", "2"]).await.starts_with(b"*"));

    // DRYRUN of the same requests for the same users.
    let user: &[&str] = &[
        "ACL",
        "SETUSER",
        "dry",
        "on",
        "+get",
        "+set",
        "+hget",
        "+publish",
        "+subscribe",
        "+psubscribe",
        "+select|0",
        "%R~r*",
        "~rw*",
        "%W~w*",
        "&news.*",
        "(+set ~sel*)",
    ];
    assert!(direct.cmd(user).await.is_ok());
    assert!(proxy.cmd(user).await.is_ok());
    let requests: &[&[&str]] = &[
        &["get", "r1"],
        &["get", "w1"],
        &["set", "w1", "v"],
        &["set", "r1", "v"],
        &["set", "rw1", "v", "GET"],
        &["set", "w1", "v", "GET"],
        &["set", "sel1", "v"],
        &["hget", "x", "f"],
        &["hset", "r1", "f", "v"],
        &["select", "0"],
        &["select", "1"],
        &["publish", "news.a", "m"],
        &["publish", "sport", "m"],
        &["subscribe", "news.a", "sport"],
        &["psubscribe", "news.*"],
        &["psubscribe", "news.a*"],
        &["auth", "x"],
        &["nope"],
        &["get"],
        &["config", "nope"],
    ];
    for request in requests {
        let mut args = vec!["ACL", "DRYRUN", "dry"];
        args.extend_from_slice(request);
        let want = direct.cmd(&args).await;
        assert_eq!(proxy.cmd(&args).await, want, "ACL DRYRUN dry {request:?}");
    }
    let args = ["ACL", "DRYRUN", "nobody", "get", "k"];
    assert_eq!(proxy.cmd(&args).await, direct.cmd(&args).await);

    // DELUSER: the count, and `default` is refused.
    for args in [
        &["ACL", "DELUSER", "u0", "u1", "nobody"][..],
        &["ACL", "DELUSER", "u2", "default"],
    ] {
        assert_eq!(proxy.cmd(args).await, direct.cmd(args).await, "{args:?}");
    }
    for args in [
        &["ACL", "SETUSER", "a b"][..],
        &["ACL", "GETUSER", "u0"],
        &["ACL", "LOG", "1", "2"],
        &["ACL", "LOG", "x"],
        &["ACL", "LOG", "-1"],
        &["ACL", "SETUSER"],
        &["ACL", "DRYRUN", "dry"],
    ] {
        assert_eq!(proxy.cmd(args).await, direct.cmd(args).await, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_rules_are_enforced_and_logged_at_the_proxy() {
    let cluster = TestCluster::start(2).await;
    let mut admin = cluster.client().await;
    assert!(admin
        .cmd(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">pw",
            "+get",
            "+set",
            "+publish",
            "+subscribe",
            "+eval",
            "+multi",
            "+exec",
            "%R~r:*",
            "~cache:*",
            "&news.*",
            "(+del ~tmp:*)"
        ])
        .await
        .is_ok());
    assert!(admin.cmd(&["ACL", "LOG", "RESET"]).await.is_ok());
    let mut app = cluster.client().await;
    assert!(app.cmd(&["AUTH", "app", "pw"]).await.is_ok());
    assert_eq!(
        app.cmd(&["ACL", "WHOAMI"]).await,
        Reply::Error("NOPERM User app has no permissions to run the 'acl|whoami' command".into())
    );
    assert!(app.cmd(&["SET", "cache:1", "v"]).await.is_ok());
    assert_eq!(app.cmd(&["GET", "cache:1"]).await, Reply::bulk("v"));
    assert_eq!(app.cmd(&["GET", "r:1"]).await, Reply::Bulk(None));
    let key = Reply::Error("NOPERM No permissions to access a key".into());
    assert_eq!(app.cmd(&["SET", "r:1", "v"]).await, key);
    assert_eq!(app.cmd(&["GET", "other"]).await, key);
    assert_eq!(
        app.cmd(&["HSET", "cache:1", "f", "v"]).await,
        Reply::Error("NOPERM User app has no permissions to run the 'hset' command".into())
    );
    // The selector allows DEL of tmp:* only.
    assert_eq!(app.cmd(&["DEL", "tmp:1"]).await, Reply::Int(0));
    assert_eq!(app.cmd(&["DEL", "cache:1"]).await, key);
    let channel = Reply::Error("NOPERM No permissions to access a channel".into());
    assert_eq!(app.cmd(&["PUBLISH", "sport", "m"]).await, channel);
    assert_eq!(app.cmd(&["PUBLISH", "news.a", "m"]).await, Reply::Int(0));
    // Scripts: the nodes cannot check these rules, so the proxy refuses them.
    let refused = app.cmd(&["EVAL", "return 1", "0"]).await;
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("scripts and functions of user app")),
        "{refused:?}"
    );
    // Inside MULTI the refusal aborts the transaction, as in Redis.
    assert!(app.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(app.cmd(&["GET", "other"]).await, key);
    assert!(matches!(app.cmd(&["EXEC"]).await, Reply::Error(e) if e.starts_with("EXECABORT")));

    // The ACL log, newest first, with Redis's fields.
    let log = admin.cmd(&["ACL", "LOG"]).await;
    let entries = log.items();
    assert_eq!(entries.len(), 7, "{log:?}");
    let field = |entry: &Reply, name: &str| {
        let items = entry.items();
        let at = items.iter().position(|i| *i == Reply::bulk(name)).unwrap();
        items[at + 1].clone()
    };
    assert_eq!(field(&entries[0], "reason"), Reply::bulk("key"));
    assert_eq!(field(&entries[0], "context"), Reply::bulk("multi"));
    assert_eq!(field(&entries[0], "object"), Reply::bulk("other"));
    assert_eq!(field(&entries[0], "username"), Reply::bulk("app"));
    assert!(field(&entries[0], "client-info")
        .text()
        .contains("user=app"));
    assert_eq!(field(&entries[1], "reason"), Reply::bulk("channel"));
    assert_eq!(field(&entries[1], "object"), Reply::bulk("sport"));
    let get_other = entries
        .iter()
        .find(|e| {
            field(e, "context") == Reply::bulk("toplevel")
                && field(e, "object") == Reply::bulk("other")
        })
        .unwrap();
    assert_eq!(field(get_other, "count"), Reply::Int(1));
    assert_eq!(admin.cmd(&["ACL", "LOG", "2"]).await.items().len(), 2);
    let mut bad = cluster.client().await;
    assert!(
        matches!(bad.cmd(&["AUTH", "app", "wrong"]).await, Reply::Error(e) if e.starts_with("WRONGPASS"))
    );
    let newest = admin.cmd(&["ACL", "LOG", "1"]).await;
    assert_eq!(field(&newest.items()[0], "reason"), Reply::bulk("auth"));
    assert_eq!(field(&newest.items()[0], "object"), Reply::bulk("AUTH"));
    assert!(admin.cmd(&["ACL", "LOG", "RESET"]).await.is_ok());
    assert_eq!(admin.cmd(&["ACL", "LOG"]).await, Reply::Array(vec![]));

    // A change applies to connected clients at their next request.
    assert!(admin.cmd(&["ACL", "SETUSER", "app", "+hset"]).await.is_ok());
    assert_eq!(app.cmd(&["HSET", "cache:h", "f", "v"]).await, Reply::Int(1));
    // `off`: no new AUTH (Redis keeps the connected clients).
    assert!(admin.cmd(&["ACL", "SETUSER", "app", "off"]).await.is_ok());
    let mut late = cluster.client().await;
    assert!(
        matches!(late.cmd(&["AUTH", "app", "pw"]).await, Reply::Error(e) if e.starts_with("WRONGPASS"))
    );
    assert!(admin.cmd(&["ACL", "SETUSER", "app", "on"]).await.is_ok());
    assert!(matches!(
        late.cmd(&["HELLO", "2", "AUTH", "app", "pw"]).await,
        Reply::Array(_)
    ));
    // Channels taken away close the user's subscribed clients, as in Redis.
    let mut sub = cluster.client().await;
    assert!(sub.cmd(&["AUTH", "app", "pw"]).await.is_ok());
    assert!(matches!(
        sub.cmd(&["SUBSCRIBE", "news.a"]).await,
        Reply::Array(_)
    ));
    assert!(admin
        .cmd(&["ACL", "SETUSER", "app", "resetchannels", "&news.b"])
        .await
        .is_ok());
    let closed = sub.try_read().await;
    assert!(closed.is_none(), "{closed:?}");
    // Its other clients stay.
    assert_eq!(app.cmd(&["GET", "cache:1"]).await, Reply::bulk("v"));
    // DELUSER closes its clients.
    assert_eq!(admin.cmd(&["ACL", "DELUSER", "app"]).await, Reply::Int(1));
    // Closed by the proxy: the connection ends without another reply.
    let closed = app.try_read().await;
    assert!(closed.is_none(), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_requirepass_is_the_default_user_s_password() {
    let cluster = TestCluster::start(1).await;
    let mut c = cluster.client().await;
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "requirepass"]).await,
        Reply::Array(vec![Reply::bulk("requirepass"), Reply::bulk("")])
    );
    assert!(c
        .cmd(&["CONFIG", "SET", "requirepass", "temp_pass"])
        .await
        .is_ok());
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "requirepass"]).await,
        Reply::Array(vec![Reply::bulk("requirepass"), Reply::bulk("temp_pass")])
    );
    // The connected client stays authenticated; a new one must AUTH.
    assert_eq!(c.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    let mut d = cluster.client().await;
    assert_eq!(
        d.cmd(&["GET", "k"]).await,
        Reply::Error("NOAUTH Authentication required.".into())
    );
    assert!(d.cmd(&["AUTH", "temp_pass"]).await.is_ok());
    assert!(d.cmd(&["AUTH", "default", "temp_pass"]).await.is_ok());
    // The nodes keep their own password: the proxy still reaches them.
    assert!(d.cmd(&["SET", "k", "v"]).await.is_ok());
    let node = Client::connect(cluster.masters[0].addr())
        .await
        .cmd(&["PING"])
        .await;
    assert_eq!(node, Reply::Status("PONG".into()));
    // A user without @admin may not change it.
    assert!(d
        .cmd(&["ACL", "SETUSER", "weak", "on", ">w", "+@all", "-@admin", "~*"])
        .await
        .is_ok());
    let mut weak = cluster.client().await;
    assert!(weak.cmd(&["AUTH", "weak", "w"]).await.is_ok());
    assert_eq!(
        weak.cmd(&["CONFIG", "SET", "requirepass", ""]).await,
        Reply::Error("NOPERM User weak has no permissions to run the 'config|set' command".into())
    );
    // "" is `nopass` again.
    assert!(d.cmd(&["CONFIG", "SET", "requirepass", ""]).await.is_ok());
    let mut e = cluster.client().await;
    assert_eq!(e.cmd(&["GET", "k"]).await, Reply::bulk("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_users_are_saved_with_the_topology_and_survive_a_restart() {
    let saving = SavingProxy::new(
        "[[user]]\nname = \"reader\"\npassword = \"r-pw\"\naccess = \"read-only\"\n",
    );
    let proxy = saving.start().await;
    let mut c = proxy.client().await;
    assert!(c.cmd(&["AUTH", "start-pw"]).await.is_ok());
    assert!(c
        .cmd(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">app-secret",
            "~app:*",
            "+get",
            "+set"
        ])
        .await
        .is_ok());
    assert!(c
        .cmd(&["CONFIG", "SET", "requirepass", "new-pw"])
        .await
        .is_ok());
    let before = c.cmd(&["ACL", "LIST"]).await;
    // Saved with the topology, passwords only as hashes.
    let saved = std::fs::read_to_string(&saving.topology_file).expect("the topology file");
    assert!(saved.contains("user app on #"), "{saved}");
    for secret in ["app-secret", "new-pw", "r-pw", "start-pw"] {
        assert!(!saved.contains(secret), "{secret} in {saved}");
    }
    proxy.stop().await;

    // The saved users win over the configuration's.
    let proxy = saving.start().await;
    let mut c = proxy.client().await;
    assert!(
        matches!(c.cmd(&["AUTH", "start-pw"]).await, Reply::Error(e) if e.starts_with("WRONGPASS"))
    );
    assert!(c.cmd(&["AUTH", "new-pw"]).await.is_ok());
    assert_eq!(c.cmd(&["ACL", "LIST"]).await, before);
    let mut app = proxy.client().await;
    assert!(app.cmd(&["AUTH", "app", "app-secret"]).await.is_ok());
    assert!(app.cmd(&["SET", "app:1", "v"]).await.is_ok());
    assert_eq!(
        app.cmd(&["SET", "other", "v"]).await,
        Reply::Error("NOPERM No permissions to access a key".into())
    );
    // A configured user keeps its level's rules, and its scripts run as its level's node user.
    let mut reader = proxy.client().await;
    assert!(reader.cmd(&["AUTH", "reader", "r-pw"]).await.is_ok());
    assert_eq!(
        reader.cmd(&["EVAL_RO", "return 1", "0"]).await,
        Reply::Int(1)
    );
    // DELUSER is saved too.
    assert_eq!(c.cmd(&["ACL", "DELUSER", "reader"]).await, Reply::Int(1));
    proxy.stop().await;
    let proxy = saving.start().await;
    let mut c = proxy.client().await;
    assert!(c.cmd(&["AUTH", "new-pw"]).await.is_ok());
    assert_eq!(
        c.cmd(&["ACL", "USERS"]).await,
        Reply::Array(vec![Reply::bulk("app"), Reply::bulk("default")])
    );
    proxy.stop().await;
}

/// User changes made while the topology changes for other reasons (here: an in-sync replica
/// marked in sync again and again, each an epoch) are all kept and saved: an epoch made
/// before a change was saved does not undo it (which would then count as saved already).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_changes_survive_topology_changes_made_meanwhile() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let cluster = TestCluster::start_with(1, true, "", &[]).await;
    let controller = Arc::clone(cluster.proxy.as_ref().expect("proxy").controller());
    let topology = Arc::clone(controller.state().router.load().topology());
    let (shard, replica) = (
        topology.shards[0].id,
        topology.shards[0].replicas[0].addr.clone(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let epochs = {
        let (controller, stop) = (Arc::clone(&controller), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut made = 0u32;
            while !stop.load(Ordering::Relaxed) {
                controller
                    .change(redshard_config::TopologyChange::SetReplicaState {
                        shard,
                        addr: replica.clone(),
                        state: redshard_config::ReplicaState::InSync,
                    })
                    .await
                    .expect("an unrelated topology change");
                made += 1;
            }
            made
        })
    };
    let mut c = cluster.client().await;
    const USERS: usize = 60;
    for i in 0..USERS {
        let name = format!("u{i}");
        assert!(c
            .cmd(&["ACL", "SETUSER", &name, "on", "nopass", "~*", "+@all"])
            .await
            .is_ok());
    }
    stop.store(true, Ordering::Relaxed);
    let made = epochs.await.expect("the epochs");
    assert!(made > 0, "no topology change ran meanwhile");
    let persisted = controller
        .state()
        .router
        .load()
        .topology()
        .users
        .clone()
        .unwrap_or_default();
    for i in 0..USERS {
        let name = format!("u{i}");
        assert!(
            matches!(c.cmd(&["ACL", "GETUSER", &name]).await, Reply::Array(_)),
            "{name} is gone ({made} other epochs meanwhile)"
        );
        assert!(
            persisted
                .iter()
                .any(|l| l.starts_with(&format!("user {name} "))),
            "{name} is not saved ({made} other epochs meanwhile)"
        );
    }
}
