//! MONITOR shows the commands scripts run on the nodes: the proxy relays each master's
//! `[0 lua]` lines (and only those, not its own lanes' traffic) while someone monitors,
//! follows the masters as they change, and closes its node connections with the last monitor.

use std::net::SocketAddr;
use std::time::Duration;

use redshard_tests::cluster::key_on;
use redshard_tests::{wait_until, Client, RedisServer, Reply, TestCluster};

use crate::admin::topology;

/// The client part (`127.0.0.1:51234`, `lua`) and the arguments of a MONITOR line, once its
/// time is checked to be Redis's `<seconds>.<6 digits>`.
fn parts(line: &Reply) -> (String, String) {
    let Reply::Status(line) = line else {
        panic!("not a MONITOR line: {line:?}")
    };
    let (time, rest) = line.split_once(' ').expect("a time");
    assert!(
        time.split_once('.').is_some_and(|(s, us)| s.len() >= 10
            && us.len() == 6
            && (s.to_owned() + us).bytes().all(|b| b.is_ascii_digit())),
        "{line}"
    );
    let rest = rest.strip_prefix("[0 ").expect("[0 ...]");
    let (client, args) = rest.split_once("] ").expect("[0 client] args");
    (client.to_owned(), args.to_owned())
}

/// The address the proxy sees for client `c`.
async fn addr_of(c: &mut Client) -> String {
    let info = c.cmd(&["CLIENT", "INFO"]).await.text();
    info.split(' ')
        .find_map(|f| f.strip_prefix("addr="))
        .unwrap()
        .to_owned()
}

/// How many clients of the node at `addr` are in MONITOR mode.
async fn node_monitors(addr: &str) -> usize {
    let mut node = Client::connect(addr).await;
    let list = node.cmd(&["CLIENT", "LIST"]).await.text();
    list.lines().filter(|l| l.contains(" flags=O ")).count()
}

/// Waits until the node at `addr` has `count` MONITOR clients.
async fn wait_node_monitors(addr: &str, count: usize) {
    let what = format!("{count} MONITOR connection(s) on {addr}");
    wait_until(Duration::from_secs(10), &what, || async move {
        node_monitors(addr).await == count
    })
    .await;
}

/// Reads monitor lines until one is the `lua` line `args`; asserts that every line before it
/// is a script's or one of the `clients`'. Returns the lines read, with it.
async fn read_until_lua(m: &mut Client, clients: &[&str], args: &str) -> Vec<(String, String)> {
    read_lua_lines(m, clients, &[args]).await
}

/// Reads monitor lines until the `lua` lines read include each of `args` (as many times as
/// it is there), whatever their order; asserts that every line is a script's or one of the
/// `clients'`. Returns the lines read.
async fn read_lua_lines(m: &mut Client, clients: &[&str], args: &[&str]) -> Vec<(String, String)> {
    let mut missing: Vec<&str> = args.to_vec();
    let mut seen = Vec::new();
    while !missing.is_empty() {
        let Ok(line) = tokio::time::timeout(Duration::from_secs(8), m.read()).await else {
            panic!("no line in 8 s; still missing {missing:?}; read: {seen:?}");
        };
        let line = parts(&line);
        assert!(
            clients.contains(&line.0.as_str()) || line.0 == "lua",
            "a line of neither the clients {clients:?} nor a script (a lane's?): {line:?}; before: {seen:?}"
        );
        if line.0 == "lua" {
            if let Some(i) = missing.iter().position(|a| *a == line.1) {
                missing.remove(i);
            }
        }
        seen.push(line);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_s_commands_on_every_shard_are_shown_after_its_eval() {
    // A script's reply waits for its lines at most a response timeout: one longer than the
    // client's wait makes a marker the relay misses fail the test instead of slowing it.
    let cluster =
        TestCluster::start_with(2, false, "[backend]\nresponse_timeout_ms = 60000\n", &[]).await;
    let masters: Vec<String> = cluster.masters.iter().map(RedisServer::addr).collect();
    let mut c = cluster.client().await;
    let client = addr_of(&mut c).await;
    let (k1, k2) = (key_on(2, 0, "lua"), key_on(2, 1, "lua"));
    // Nobody monitors: no connection to the nodes.
    for master in &masters {
        assert_eq!(node_monitors(master).await, 0, "{master}");
    }

    let mut m = cluster.client().await;
    let first = addr_of(&mut m).await;
    assert!(m.cmd(&["MONITOR"]).await.is_ok());
    // Answered once every master's MONITOR connection is up.
    for master in &masters {
        assert_eq!(node_monitors(master).await, 1, "{master}");
    }
    let script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
    for (key, value) in [(&k1, "a\"1"), (&k2, "b\n2")] {
        assert_eq!(
            c.cmd(&["EVAL", script, "1", key, value]).await,
            Reply::bulk(value)
        );
    }
    // A function's commands are shown the same way.
    let library = "#!lua name=monlib\nredis.register_function('monget', function(keys) return redis.call('GET', keys[1]) end)";
    assert!(matches!(
        c.cmd(&["FUNCTION", "LOAD", "REPLACE", library]).await,
        Reply::Bulk(Some(_))
    ));
    assert_eq!(
        c.cmd(&["FCALL", "monget", "1", &k2]).await,
        Reply::bulk("b\n2")
    );

    let eval = |key: &str, value: &str| {
        format!(
            "\"EVAL\" \"{script}\" \"1\" \"{key}\" \"{}\"",
            value.replace('"', "\\\"").replace('\n', "\\n")
        )
    };
    // The shards' lines come through separate connections, but a script's reply waits until
    // they are shown: the client's lines and its scripts' come in the order one server
    // shows them.
    let (set1, get1) = (
        format!("\"SET\" \"{k1}\" \"a\\\"1\""),
        format!("\"GET\" \"{k1}\""),
    );
    let (set2, get2) = (
        format!("\"SET\" \"{k2}\" \"b\\n2\""),
        format!("\"GET\" \"{k2}\""),
    );
    let lines = read_lua_lines(&mut m, &[&client], &[&set1, &get1, &set2, &get2, &get2]).await;
    let all = |who: &str, args: &str| -> Vec<usize> {
        let at: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].0 == who && lines[i].1 == args)
            .collect();
        assert!(!at.is_empty(), "no [0 {who}] {args} in {lines:?}");
        at
    };
    let at = |who: &str, args: &str| all(who, args)[0];
    // Each script's lines after its EVAL and before the client's next command; the
    // function's after its FCALL.
    let eval1 = at(&client, &eval(&k1, "a\"1"));
    let (set1, get1) = (at("lua", &set1), at("lua", &get1));
    let eval2 = at(&client, &eval(&k2, "b\n2"));
    let (set2, gets2) = (at("lua", &set2), all("lua", &get2));
    let load = lines
        .iter()
        .position(|l| l.0 == client && l.1.starts_with("\"FUNCTION\" \"LOAD\""))
        .unwrap_or_else(|| panic!("no FUNCTION LOAD in {lines:?}"));
    let fcall = at(&client, &format!("\"FCALL\" \"monget\" \"1\" \"{k2}\""));
    let order = [
        eval1, set1, get1, eval2, set2, gets2[0], load, fcall, gets2[1],
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{order:?} in {lines:?}"
    );
    assert_eq!(lines.len(), order.len(), "{lines:?}");
    // Each script line once: the node's line, not a copy per connection.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.0 == "lua" && l.1 == format!("\"SET\" \"{k1}\" \"a\\\"1\""))
            .count(),
        1,
        "{lines:?}"
    );

    // A second monitor shares the node connections; they close with the last monitor.
    let mut m2 = cluster.client().await;
    assert!(m2.cmd(&["MONITOR"]).await.is_ok());
    for master in &masters {
        assert_eq!(node_monitors(master).await, 1, "{master}");
    }
    assert_eq!(m.cmd(&["RESET"]).await, Reply::Status("RESET".into()));
    assert_eq!(
        c.cmd(&["EVAL", script, "1", &k1, "x"]).await,
        Reply::bulk("x")
    );
    // (The first monitor's RESET is shown to the second.)
    let seen = read_until_lua(&mut m2, &[&client, &first], &format!("\"GET\" \"{k1}\"")).await;
    assert!(seen.iter().any(|l| l.0 == client), "{seen:?}");
    for master in &masters {
        assert_eq!(node_monitors(master).await, 1, "{master}");
    }
    drop(m2);
    for master in &masters {
        wait_node_monitors(master, 0).await;
    }
    // Monitoring again opens them again.
    let mut m3 = cluster.client().await;
    assert!(m3.cmd(&["MONITOR"]).await.is_ok());
    assert_eq!(
        c.cmd(&["EVAL", script, "1", &k2, "y"]).await,
        Reply::bulk("y")
    );
    read_until_lua(&mut m3, &[&client], &format!("\"GET\" \"{k2}\"")).await;
    assert_eq!(m3.cmd(&["RESET"]).await, Reply::Status("RESET".into()));
    for master in &masters {
        wait_node_monitors(master, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_s_script_lines_come_before_the_next_command() {
    // See the test above for the response timeout.
    let cluster =
        TestCluster::start_with(2, false, "[backend]\nresponse_timeout_ms = 60000\n", &[]).await;
    let mut c = cluster.client().await;
    let client = addr_of(&mut c).await;
    let key = key_on(2, 1, "txlua");
    let mut m = cluster.client().await;
    assert!(m.cmd(&["MONITOR"]).await.is_ok());
    let script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
    for (watch, value) in [(false, "t1"), (true, "t2")] {
        // Unwatched, the transaction goes on the shared lane; after WATCH, on the client's
        // own connection to the master.
        if watch {
            assert!(c.cmd(&["WATCH", &key]).await.is_ok());
        }
        assert!(c.cmd(&["MULTI"]).await.is_ok());
        assert_eq!(
            c.cmd(&["EVAL", script, "1", &key, value]).await,
            Reply::Status("QUEUED".into())
        );
        assert_eq!(
            c.cmd(&["EXEC"]).await,
            Reply::Array(vec![Reply::bulk(value)])
        );
        assert_eq!(c.cmd(&["ECHO", value]).await, Reply::bulk(value));
        let set = format!("\"SET\" \"{key}\" \"{value}\"");
        let get = format!("\"GET\" \"{key}\"");
        let lines = read_lua_lines(&mut m, &[&client], &[&set, &get]).await;
        // The client's ECHO may not be read yet: read on until it is.
        let mut lines = lines;
        let echo = format!("\"ECHO\" \"{value}\"");
        while !lines.iter().any(|l| l.0 == client && l.1 == echo) {
            let line = tokio::time::timeout(Duration::from_secs(8), m.read())
                .await
                .unwrap_or_else(|_| panic!("no ECHO line in 8 s; read: {lines:?}"));
            lines.push(parts(&line));
        }
        let at = |who: &str, args: &str| {
            lines
                .iter()
                .position(|l| l.0 == who && l.1 == args)
                .unwrap_or_else(|| panic!("no [0 {who}] {args} in {lines:?}"))
        };
        let order = [
            at(&client, "\"EXEC\""),
            at("lua", &set),
            at("lua", &get),
            at(&client, &echo),
        ];
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{order:?} in {lines:?}"
        );
    }
}

/// Sends `args` to the admin port at `admin` and asserts it did not fail.
async fn admin_ok(admin: SocketAddr, args: &[&str]) {
    let reply = Client::connect_addr(admin).await.cmd(args).await;
    assert!(!matches!(reply, Reply::Error(_)), "{args:?}: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_follows_masters_added_and_promoted() {
    let mut cluster = TestCluster::start_with(2, true, "", &[]).await;
    let admin = cluster.start_admin().await;
    cluster.wait_probes_up().await;
    let (old, promoted) = (cluster.masters[0].addr(), cluster.replicas[0].addr());
    let other = cluster.masters[1].addr();
    let mut c = cluster.client().await;
    let client = addr_of(&mut c).await;
    let mut m = cluster.client().await;
    assert!(m.cmd(&["MONITOR"]).await.is_ok());
    assert_eq!(node_monitors(&old).await, 1);
    assert_eq!(node_monitors(&promoted).await, 0, "not on replicas");

    // A master added later gets one.
    let added = RedisServer::start();
    admin_ok(admin, &["ADDSHARD", "s3", &added.addr()]).await;
    wait_node_monitors(&added.addr(), 1).await;

    // A failover moves it from the old master to the promoted one.
    admin_ok(admin, &["FAILOVER", "s1"]).await;
    let t = topology(admin).await;
    assert_eq!(
        *crate::admin::shard(&t, "s1").unwrap().field("master"),
        Reply::bulk(&promoted)
    );
    wait_node_monitors(&promoted, 1).await;
    wait_node_monitors(&old, 0).await;
    assert_eq!(node_monitors(&other).await, 1);
    let key = key_on(2, 0, "promoted");
    assert_eq!(
        c.cmd(&["EVAL", "return redis.call('INCR', KEYS[1])", "1", &key])
            .await,
        Reply::Int(1)
    );
    read_until_lua(&mut m, &[&client], &format!("\"INCR\" \"{key}\"")).await;

    // Removed from the topology: closed.
    admin_ok(admin, &["DELSHARD", "s3"]).await;
    wait_node_monitors(&added.addr(), 0).await;
    drop(m);
    for node in [&promoted, &other] {
        wait_node_monitors(node, 0).await;
    }
}

/// The `user=` of the MONITOR clients of the node at `addr`, asked as `proxy`.
async fn node_monitor_users(addr: &str) -> Vec<String> {
    let mut node = Client::connect(addr).await;
    assert!(node.cmd(&["AUTH", "proxy", "p-pw"]).await.is_ok());
    let list = node.cmd(&["CLIENT", "LIST"]).await.text();
    list.lines()
        .filter(|l| l.contains(" flags=O "))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("user=")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_connections_use_the_configured_backend_user() {
    // The proxy's managed users may not run MONITOR; the configured user may.
    let extra = "[backend]\nusername = \"proxy\"\npassword = \"p-pw\"\n";
    let allowed = [
        "--user", "default", "off", "--user", "proxy", "on", ">p-pw", "~*", "&*", "+@all",
    ];
    let cluster = TestCluster::start_with(1, false, extra, &allowed).await;
    let node = cluster.masters[0].addr();
    let mut c = cluster.client().await;
    let client = addr_of(&mut c).await;
    let mut m = cluster.client().await;
    assert!(m.cmd(&["MONITOR"]).await.is_ok());
    assert_eq!(node_monitor_users(&node).await, ["proxy"]);
    assert_eq!(
        c.cmd(&["EVAL", "return redis.call('GET', KEYS[1])", "1", "k"])
            .await,
        Reply::Bulk(None)
    );
    read_until_lua(&mut m, &[&client], "\"GET\" \"k\"").await;
    drop(m);
    wait_until(Duration::from_secs(10), "the node's MONITOR closed", || {
        let node = node.clone();
        async move { node_monitor_users(&node).await.is_empty() }
    })
    .await;

    // A configured user without MONITOR: the node refuses, the proxy's MONITOR still answers
    // and shows its clients' commands.
    let refused = [
        "--user", "default", "off", "--user", "proxy", "on", ">p-pw", "~*", "&*", "+@all",
        "-monitor",
    ];
    let cluster = TestCluster::start_with(1, false, extra, &refused).await;
    let node = cluster.masters[0].addr();
    let mut c = cluster.client().await;
    let client = addr_of(&mut c).await;
    let mut m = cluster.client().await;
    assert!(m.cmd(&["MONITOR"]).await.is_ok());
    assert!(node_monitor_users(&node).await.is_empty());
    assert_eq!(
        c.cmd(&["EVAL", "return redis.call('GET', KEYS[1])", "1", "k"])
            .await,
        Reply::Bulk(None)
    );
    assert!(c.cmd(&["SET", "after", "1"]).await.is_ok());
    let mut lines = Vec::new();
    loop {
        let line = parts(&m.read().await);
        assert_eq!(line.0, client, "{line:?}");
        let done = line.1 == "\"SET\" \"after\" \"1\"";
        lines.push(line);
        if done {
            break;
        }
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
}
