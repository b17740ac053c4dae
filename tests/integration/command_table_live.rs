//! The command table and key extraction compared with a live redis-server 7.0.
//!
//! Each test starts its own `redis-server` on a free 127.0.0.1 port (stopped on drop) and
//! talks RESP2 to it over a `TcpStream`. `redis-server` must be on `PATH`: without it the
//! tests fail, they do not skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use redshard_proxy::command::{
    self, all_specs, commands, resolve, BeginSearch, CommandSpec, FindKeys, KeySpec, KeySpecFlags,
};
use redshard_tests::RedisServer;
use smallvec::SmallVec;

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reply {
    Status(String),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Reply::Status(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a string, got {other:?}"),
        }
    }
    fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
    fn array(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(a)) => a,
            other => panic!("expected an array, got {other:?}"),
        }
    }
    /// A RESP2 flattened map as (key, value) pairs.
    fn pairs(&self) -> impl Iterator<Item = (String, &Reply)> {
        self.array().chunks(2).map(|kv| (kv[0].text(), &kv[1]))
    }
    fn get(&self, key: &str) -> &Reply {
        self.pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }
}

/// Connections to a test server, in this file's [`Conn`].
trait ServerExt {
    fn conn(&self) -> Conn;
}

impl ServerExt for RedisServer {
    fn conn(&self) -> Conn {
        Conn::connect(self.port).expect("connect to redis-server")
    }
}

/// One RESP2 connection.
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("write request");
        self.read()
    }

    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .expect("read reply");
        assert!(line.ends_with(b"\r\n"), "truncated reply line {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn read(&mut self) -> Reply {
        let line = self.line();
        let rest = &line[1..];
        let num = || -> i64 { String::from_utf8_lossy(rest).parse().expect("number") };
        match line[0] {
            b'+' => Reply::Status(String::from_utf8_lossy(rest).into_owned()),
            b'-' => Reply::Error(rest.to_vec()),
            b':' => Reply::Int(num()),
            b'$' => match usize::try_from(num()) {
                Err(_) => Reply::Bulk(None),
                Ok(n) => {
                    let mut buf = vec![0; n + 2];
                    self.reader.read_exact(&mut buf).expect("read bulk");
                    buf.truncate(n);
                    Reply::Bulk(Some(buf))
                }
            },
            b'*' => match usize::try_from(num()) {
                Err(_) => Reply::Array(None),
                Ok(n) => Reply::Array(Some((0..n).map(|_| self.read()).collect())),
            },
            other => panic!("unexpected RESP type byte {other}"),
        }
    }
}

fn find_spec(name: &str) -> Option<&'static CommandSpec> {
    all_specs().find(|s| s.name == name)
}

/// A key spec of the `COMMAND` reply, in the table's representation.
fn parse_key_spec(raw: &Reply) -> KeySpec {
    let mut flags = KeySpecFlags::NONE;
    for f in raw.get("flags").array() {
        let f = f.text();
        flags = flags.union(KeySpecFlags::from_name(&f).unwrap_or_else(|| panic!("flag {f}")));
    }
    let bs = raw.get("begin_search");
    let int = |r: &Reply, k: &str| i32::try_from(r.get(k).int()).expect("i32");
    let begin_search = match bs.get("type").text().as_str() {
        "index" => BeginSearch::Index(int(bs.get("spec"), "index")),
        "keyword" => {
            let spec = bs.get("spec");
            let keyword = spec.get("keyword").text();
            let table_keyword = ["STREAMS", "KEYS", "STORE", "STOREDIST"]
                .into_iter()
                .find(|k| *k == keyword)
                .unwrap_or_else(|| panic!("new keyword {keyword}: extend this test"));
            BeginSearch::Keyword {
                keyword: table_keyword,
                startfrom: int(spec, "startfrom"),
            }
        }
        _ => BeginSearch::Unknown,
    };
    let fk = raw.get("find_keys");
    let find_keys = match fk.get("type").text().as_str() {
        "range" => {
            let s = fk.get("spec");
            FindKeys::Range {
                lastkey: int(s, "lastkey"),
                keystep: int(s, "keystep"),
                limit: int(s, "limit"),
            }
        }
        "keynum" => {
            let s = fk.get("spec");
            FindKeys::Keynum {
                keynumidx: int(s, "keynumidx"),
                firstkey: int(s, "firstkey"),
                keystep: int(s, "keystep"),
            }
        }
        _ => FindKeys::Unknown,
    };
    KeySpec {
        flags,
        begin_search,
        find_keys,
    }
}

/// Compares one `COMMAND` entry with the table; returns its name.
fn check_entry(entry: &Reply, mismatches: &mut Vec<String>) -> String {
    let e = entry.array();
    let name = e[0].text();
    let Some(spec) = find_spec(&name) else {
        mismatches.push(format!("{name}: in redis-server, not in the table"));
        return name;
    };
    let ints = [e[1].int(), e[3].int(), e[4].int(), e[5].int()];
    let ours = [spec.arity, spec.first_key, spec.last_key, spec.step].map(i64::from);
    if ints != ours {
        mismatches.push(format!(
            "{name}: arity/first/last/step {ints:?} != {ours:?}"
        ));
    }
    let mut server_flags: Vec<String> = e[2].array().iter().map(Reply::text).collect();
    server_flags.sort();
    // may_replicate is hidden by COMMAND on purpose.
    let mut our_flags: Vec<String> = spec
        .flags
        .names()
        .filter(|n| *n != "may_replicate")
        .map(str::to_owned)
        .collect();
    our_flags.sort();
    if server_flags != our_flags {
        mismatches.push(format!("{name}: flags {server_flags:?} != {our_flags:?}"));
    }
    let mut server_cats: Vec<String> = e[6].array().iter().map(Reply::text).collect();
    server_cats.sort();
    let mut our_cats: Vec<String> = spec.acl.names().map(|n| format!("@{n}")).collect();
    our_cats.sort();
    if server_cats != our_cats {
        mismatches.push(format!(
            "{name}: ACL categories {server_cats:?} != {our_cats:?}"
        ));
    }
    let server_specs: Vec<KeySpec> = e[8].array().iter().map(parse_key_spec).collect();
    if server_specs != spec.key_specs {
        mismatches.push(format!(
            "{name}: key specs {server_specs:?} != {:?}",
            spec.key_specs
        ));
    }
    let subs: Vec<String> = e[9]
        .array()
        .iter()
        .map(|s| check_entry(s, mismatches))
        .collect();
    let mut ours: Vec<&str> = spec.subcommands.iter().map(|s| s.name).collect();
    ours.retain(|n| !subs.iter().any(|s| s == n));
    for n in ours {
        mismatches.push(format!("{n}: in the table, not in redis-server"));
    }
    name
}

#[test]
fn table_matches_command_reply() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let reply = conn.call(&[b"COMMAND"]);
    let mut mismatches = Vec::new();
    let names: Vec<String> = reply
        .array()
        .iter()
        .map(|e| check_entry(e, &mut mismatches))
        .collect();
    for c in commands() {
        if !names.iter().any(|n| n == c.name) {
            mismatches.push(format!("{}: in the table, not in redis-server", c.name));
        }
    }
    assert_eq!(
        i64::try_from(commands().count()).expect("count"),
        conn.call(&["COMMAND", "COUNT"]).int()
    );
    let info = conn.call(&["INFO", "server"]).text();
    assert!(
        info.contains(&format!("redis_version:{}", command::REDIS_VERSION)),
        "the table was generated from redis {}, the server is another version",
        command::REDIS_VERSION
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Requests covering every begin-search and find-keys form, the getkeys procs, subcommands
/// and Redis's quirks. Words are separated by spaces; `''` is an empty argument.
const REQUESTS: &[&str] = &[
    "GET k",
    "get k",
    "SET k v GET",
    "SET k v EX 10",
    "GETEX k PERSIST",
    "APPEND k v",
    "DEL a b c",
    "EXISTS a b",
    "TOUCH a",
    "UNLINK a b",
    "MGET a b c",
    "MSET a 1 b 2",
    "MSETNX a 1 b 2 c 3",
    "SUNION a b c",
    "SINTERSTORE d a b",
    "SDIFFSTORE d a",
    "PFCOUNT a b",
    "PFMERGE d a b",
    "BITOP AND d a b",
    "WATCH a b",
    "RENAME a b",
    "COPY a b DB 0",
    "LCS a b IDX",
    "LMOVE a b LEFT RIGHT",
    "SMOVE a b m",
    "RPOPLPUSH a b",
    "BRPOPLPUSH a b 0",
    "BLPOP a b 0",
    "BZPOPMIN a b c 1.5",
    "ZRANGESTORE d s 0 -1",
    "GEOSEARCHSTORE d s FROMMEMBER m BYRADIUS 1 km",
    "XREAD STREAMS a b 0 0",
    "xread count 1 block 0 streams a 0",
    "XREAD STREAMS a b c",
    "XREAD STREAMS streams 0",
    "XREADGROUP GROUP g c COUNT 1 STREAMS a b > >",
    "XREADGROUP GROUP g streams NOACK STREAMS s >",
    "GEORADIUS g 0 0 1 km STORE d",
    "geoRADIUS g 0 0 1 km storedist d",
    "GEORADIUS g 0 0 1 km STORE a STOREDIST b",
    "GEORADIUS g 0 0 1 km WITHDIST STORE",
    "GEORADIUSBYMEMBER g m 1 km STORE d",
    "GEORADIUS_RO g 0 0 1 km",
    "MIGRATE h 1 k 0 100",
    "MIGRATE h 1 '' 0 100 KEYS a b",
    "MIGRATE h 1 '' 0 100 COPY REPLACE AUTH KEYS KEYS a",
    "MIGRATE h 1 '' 0 100 AUTH2 u p KEYS a b c",
    "MIGRATE h 1 k 0 100 KEYS a b",
    "EVAL s 2 a b c",
    "EVAL s 0",
    "EVAL_RO s 1 a x",
    "EVALSHA 0123456789012345678901234567890123456789 1 a",
    "FCALL f 2 a b",
    "FCALL_RO f 0 x",
    "ZUNIONSTORE d 2 a b WEIGHTS 1 2",
    "ZINTERSTORE d 1 a",
    "ZDIFFSTORE d 2 a b",
    "ZUNION 2 a b",
    "ZINTER 1 a WITHSCORES",
    "ZDIFF 2 a b",
    "ZINTERCARD 2 a b LIMIT 1",
    "SINTERCARD 2 a b",
    "LMPOP 2 a b LEFT",
    "BLMPOP 0 1 a RIGHT COUNT 2",
    "ZMPOP 2 a b MIN",
    "BZMPOP 0 1 a MAX",
    "SORT k",
    "sort k store d",
    "SORT k BY x GET y LIMIT 0 1 STORE d",
    "SORT k STORE d1 STORE d2",
    "SORT k LIMIT STORE 1 STORE d",
    "SORT k GET STORE",
    "SORT_RO k BY x GET y",
    "BITFIELD k GET u8 0 SET u8 0 1",
    "BITFIELD_RO k GET u8 0",
    "OBJECT ENCODING k",
    "object freq k",
    "XINFO STREAM s FULL",
    "XINFO GROUPS s",
    "XINFO CONSUMERS s g",
    "XGROUP CREATE s g $ MKSTREAM",
    "XGROUP CREATECONSUMER s g c",
    "MEMORY USAGE k",
    "XADD s * f v",
    "XAUTOCLAIM s g c 0 0",
    "RESTORE k 0 x",
    "EXPIRE k 10",
    "SPUBLISH ch m",
    "SSUBSCRIBE a b",
    "PING",
    "OBJECT HELP",
];

/// Splits a request of [`REQUESTS`].
fn words(req: &str) -> Vec<Vec<u8>> {
    req.split(' ')
        .map(|w| {
            if w == "''" {
                Vec::new()
            } else {
                w.as_bytes().to_vec()
            }
        })
        .collect()
}

/// Our keys of `args`: Ok(key names) or Err(error text).
fn our_keys(args: &[Vec<u8>]) -> Option<Result<Vec<Vec<u8>>, Vec<u8>>> {
    let spec = resolve(args).ok()?;
    let mut out = SmallVec::new();
    Some(
        spec.key_indices(args, &mut out)
            .map(|()| out.iter().map(|&i| args[i].clone()).collect())
            .map_err(|e| e.as_bytes().to_vec()),
    )
}

/// A reply for messages, errors as text.
fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Error(e) => format!("-{}", String::from_utf8_lossy(e)),
        other => format!("{other:?}"),
    }
}

/// Key names for messages.
fn lossy(keys: &[Vec<u8>]) -> Vec<String> {
    keys.iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// Compares `key_indices` with `COMMAND GETKEYS` for one request; when ours is an error,
/// compares it with the command's real reply (only keynum commands fail, and they fail
/// before doing anything, so running them is safe).
fn compare(conn: &mut Conn, args: &[Vec<u8>], mismatches: &mut Vec<String>) {
    let show = || String::from_utf8_lossy(&args.join(&b' ')).into_owned();
    let Some(ours) = our_keys(args) else {
        return;
    };
    let mut getkeys = vec![b"COMMAND".to_vec(), b"GETKEYS".to_vec()];
    getkeys.extend_from_slice(args);
    let theirs = conn.call(&getkeys);
    match (&ours, &theirs) {
        // FCALL with an invalid numkeys: GETKEYS's atoi fallback may still find keys, ours
        // finds none because the command fails on any master ("Function not found" first).
        (Ok(ours), Reply::Array(_))
            if ours.is_empty() && args[0].eq_ignore_ascii_case(b"fcall") =>
        {
            if !matches!(conn.call(args), Reply::Error(_)) {
                mismatches.push(format!("{}: FCALL did not fail", show()));
            }
        }
        (Ok(ours), Reply::Array(Some(keys))) => {
            let keys: Vec<Vec<u8>> = keys
                .iter()
                .map(|k| match k {
                    Reply::Bulk(Some(b)) => b.clone(),
                    other => panic!("GETKEYS element {other:?}"),
                })
                .collect();
            if *ours != keys {
                let (ours, keys) = (lossy(ours), lossy(&keys));
                mismatches.push(format!("{}: ours {ours:?}, GETKEYS {keys:?}", show()));
            }
        }
        (Ok(ours), Reply::Error(_)) if ours.is_empty() => {}
        (Err(text), _) => {
            let reply = conn.call(args);
            if reply != Reply::Error(text.clone()) {
                mismatches.push(format!(
                    "{}: ours {:?}, the command replies {}",
                    show(),
                    String::from_utf8_lossy(text),
                    describe(&reply)
                ));
            }
        }
        (Ok(ours), theirs) => {
            let ours = lossy(ours);
            mismatches.push(format!(
                "{}: ours {ours:?}, GETKEYS {}",
                show(),
                describe(theirs)
            ));
        }
    }
}

#[test]
fn key_indices_match_command_getkeys() {
    assert!(REQUESTS.len() >= 60);
    let server = RedisServer::start();
    let mut conn = server.conn();
    let mut mismatches = Vec::new();
    for req in REQUESTS {
        let args = words(req);
        assert!(resolve(&args).is_ok(), "{req} must be a valid request");
        compare(&mut conn, &args, &mut mismatches);
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[usize::try_from(self.next() % items.len() as u64).expect("index")]
    }
}

#[test]
fn key_indices_match_getkeys_on_generated_requests() {
    // Commands whose keys move, with every keyword their key finding looks at. MIGRATE is
    // only asked about (GETKEYS), never run: our MIGRATE never fails.
    const HEADS: &[&str] = &[
        "SORT k",
        "SORT_RO k",
        "MIGRATE h 1",
        "GEORADIUS g 0 0 1 km",
        "GEORADIUSBYMEMBER g m 1 km",
        "XREAD",
        "XREADGROUP",
        "EVAL s",
        "EVALSHA s",
        "EVAL_RO s",
        "FCALL f",
        "ZUNIONSTORE d",
        "ZDIFF",
        "ZINTERCARD",
        "SINTERCARD",
        "LMPOP",
        "BLMPOP 0",
        "ZMPOP",
        "BZMPOP 0",
        "SET k v",
        "BITFIELD k",
        "MSET",
        "DEL",
    ];
    const WORDS: &[&str] = &[
        "STORE",
        "store",
        "STOREDIST",
        "KEYS",
        "STREAMS",
        "streams",
        "BY",
        "GET",
        "LIMIT",
        "COUNT",
        "BLOCK",
        "GROUP",
        "NOACK",
        "AUTH",
        "AUTH2",
        "COPY",
        "REPLACE",
        "LEFT",
        "MIN",
        "0",
        "1",
        "2",
        "3",
        "-1",
        "01",
        "x",
        "''",
        "k1",
        "k2",
        "k3",
    ];
    let server = RedisServer::start();
    let mut conn = server.conn();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for _ in 0..3000 {
        let mut req = rng.pick(HEADS).to_owned();
        for _ in 0..rng.next() % 9 {
            req.push(' ');
            req.push_str(rng.pick(WORDS));
        }
        let args = words(&req);
        if resolve(&args).is_err() {
            continue;
        }
        compared += 1;
        compare(&mut conn, &args, &mut mismatches);
    }
    assert!(compared > 1000, "only {compared} requests compared");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn resolve_errors_are_redis_bytes() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let long = vec![b'x'; 300];
    let requests: Vec<Vec<&[u8]>> = vec![
        vec![b"foo"],
        vec![b"foo", b"a", b"b"],
        vec![b"FoO", b"a\r\nb", b"c\0d", b""],
        vec![&long, &long, &long],
        vec![b"nope", b"12345678901234567890123456789012345", &long, b"z"],
        vec![b"config", b"nope"],
        vec![b"CONFIG", b"nope", b"more"],
        vec![b"client", &long],
        vec![b"object"],
        vec![b"config", b"get"],
        vec![b"get"],
        vec![b"GET", b"a", b"b"],
        vec![b"xinfo", b"stream"],
        vec![b"mset", b"a"],
    ];
    let mut mismatches = Vec::new();
    for args in &requests {
        let ours = resolve(args.as_slice()).expect_err("must fail");
        let theirs = conn.call(args);
        if theirs != Reply::Error(ours.as_bytes().to_vec()) {
            mismatches.push(format!("ours {ours:?}, redis {}", describe(&theirs)));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn dangerous_list_matches_acl_cat_dangerous() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let mut live: Vec<String> = conn
        .call(&[&b"ACL"[..], b"CAT", b"dangerous"])
        .array()
        .iter()
        .map(Reply::text)
        .collect();
    live.sort();
    let mut ours: Vec<String> = all_specs()
        .filter(|s| s.is_dangerous())
        .map(|s| s.name.to_owned())
        .collect();
    ours.sort();
    assert_eq!(
        ours, live,
        "regenerate protocol/src/command/table.rs (tools/gen-command-table.py)"
    );
}

#[test]
fn acl_cat_of_every_category_matches() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let live: Vec<String> = conn
        .call(&[&b"ACL"[..], b"CAT"])
        .array()
        .iter()
        .map(Reply::text)
        .collect();
    let ours: Vec<&str> = command::AclCategories::ALL
        .iter()
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(live, ours, "ACL CAT's categories, in order");
    for (cat, name) in command::AclCategories::ALL {
        let mut live: Vec<String> = conn
            .call(&[&b"ACL"[..], b"CAT", name.as_bytes()])
            .array()
            .iter()
            .map(Reply::text)
            .collect();
        live.sort();
        let mut ours: Vec<String> = redshard_proxy::acl::category_commands(*cat)
            .filter(|n| !matches!(*n, "client|setinfo" | "client|no-touch"))
            .map(str::to_owned)
            .collect();
        ours.sort();
        assert_eq!(ours, live, "ACL CAT {name}");
    }
}
