//! The write effects of `mirror::effect` against two real redis-server 7.0 nodes.
//!
//! A "master" and a "replica" (two standalone servers, as redshard runs them) get a script of
//! writes: each goes to the master as [`prepare`] says, the replica gets
//! [`replica_request`]'s request and must answer exactly the expected bytes. At the end both
//! must hold the same data: the same `DEBUG DIGEST`, and per key the same `PEXPIRETIME`,
//! `DEBUG DIGEST-VALUE` and stream metadata. The script runs in RESP2 and in RESP3.
//!
//! `redis-server` must be on `PATH`: without it the test fails, it does not skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use redshard_dataplane::mirror::effect::{prepare, prepare_exec, replica_request, Effect};
use redshard_proxy::command::resolve;
use redshard_proxy::resp::encode;
use redshard_proxy::resp::{Protocol, ReplyScanner, RequestScanner};
use redshard_tests::RedisServer;

/// How much later than the master the replica gets each write.
const MIRROR_DELAY: Duration = Duration::from_millis(2);

/// Connections to a test server, in this file's [`Conn`].
trait ServerExt {
    fn conn(&self, protocol: Protocol) -> Conn;
}

impl ServerExt for RedisServer {
    fn conn(&self, protocol: Protocol) -> Conn {
        let mut conn = Conn::connect(self.port).expect("connect to redis-server");
        if protocol == Protocol::Resp3 {
            let hello = conn.call(&["HELLO", "3"]);
            assert!(hello.starts_with(b"%"), "{}", show(&hello));
        }
        conn
    }
}

/// One connection reading raw replies.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet returned as a reply.
    buf: Vec<u8>,
}

impl Conn {
    fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// The next complete reply, as bytes.
    fn reply(&mut self) -> Bytes {
        let mut scanner = ReplyScanner::new(64);
        loop {
            if let Some(len) = scanner.scan(&self.buf).expect("a well-formed reply") {
                let reply = Bytes::copy_from_slice(&self.buf[..len]);
                self.buf.drain(..len);
                return reply;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).expect("read reply");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Bytes {
        self.send(&request(args));
        self.reply()
    }
}

/// `args` as a RESP request.
fn request<A: AsRef<[u8]>>(args: &[A]) -> Bytes {
    let args: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
    let mut out = BytesMut::new();
    encode::request(&mut out, &args);
    out.freeze()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", " ")
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(since.as_millis()).expect("ms fit in i64")
}

/// How many replies `buf` holds.
fn count_replies(buf: &[u8]) -> usize {
    let (mut n, mut at) = (0, 0);
    while at < buf.len() {
        let len = ReplyScanner::new(64)
            .scan(&buf[at..])
            .expect("well-formed")
            .expect("complete");
        at += len;
        n += 1;
    }
    n
}

/// A write as the proxy prepares it: what the master gets, and the effect.
struct Prepped {
    request: Bytes,
    effect: Effect,
}

/// Prepares `args` as the session would (the table name from `resolve`). A request that
/// fails `resolve` is sent as it is and mirrored as it is (the proxy refuses such requests
/// itself; only the EXECABORT test sends one).
fn prepare_write<A: AsRef<[u8]>>(args: &[A]) -> Prepped {
    let original = request(args);
    let mut scanner = RequestScanner::default();
    scanner
        .scan(&original)
        .expect("valid request")
        .expect("complete");
    let args = scanner.args(&original);
    match resolve(&args) {
        Ok(spec) => {
            let prepared = prepare(spec, &args, now_ms());
            Prepped {
                request: prepared.request.unwrap_or_else(|| original.clone()),
                effect: prepared.effect,
            }
        }
        Err(_) => Prepped {
            request: original.clone(),
            effect: Effect::Same,
        },
    }
}

/// The master, a second master connection (for blocked clients), and the replica.
struct Pair {
    master: Conn,
    blocked: Conn,
    replica: Conn,
    protocol: Protocol,
    /// How many writes reached the replica.
    mirrored: usize,
    /// Alternates how the master's replies to a transaction are given.
    all_exec_replies: bool,
}

impl Pair {
    /// Sends `args` to the master as prepared, mirrors its effect, returns the master's reply.
    fn write<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Bytes {
        let write = prepare_write(args);
        self.master.send(&write.request);
        let reply = self.master.reply();
        self.mirror(&write.effect, &write.request, &reply);
        reply
    }

    /// Asserts that `args` is not a write: nothing reaches the replica.
    fn read<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Bytes {
        let write = prepare_write(args);
        assert_eq!(write.effect, Effect::Skip, "{}", show(&write.request));
        self.master.send(&write.request);
        self.master.reply()
    }

    /// Sends the replica what `replica_request` says and checks its replies.
    fn mirror(&mut self, effect: &Effect, request: &Bytes, reply: &Bytes) -> bool {
        let mirrored = replica_request(effect, request, reply, self.protocol)
            .unwrap_or_else(|e| panic!("{e} for {} → {}", show(request), show(reply)));
        let Some(mirrored) = mirrored else {
            return false;
        };
        // The replica applies the write later than the master, as through a real lane: a
        // write whose effect depends on the node's clock then differs. (The delay is the
        // scenario, not synchronisation.)
        std::thread::sleep(MIRROR_DELAY);
        self.replica.send(&mirrored.request);
        let mut got = Vec::new();
        for _ in 0..count_replies(&mirrored.expect) {
            got.extend_from_slice(&self.replica.reply());
        }
        assert_eq!(
            show(&got),
            show(&mirrored.expect),
            "replica's replies to {} (master got {}, answered {})",
            show(&mirrored.request),
            show(request),
            show(reply)
        );
        self.mirrored += 1;
        true
    }

    /// Like `write`, asserting whether anything was mirrored.
    fn write_mirrored<A: AsRef<[u8]>>(&mut self, args: &[A], expect_mirror: bool) -> Bytes {
        let write = prepare_write(args);
        self.master.send(&write.request);
        let reply = self.master.reply();
        let mirrored = self.mirror(&write.effect, &write.request, &reply);
        assert_eq!(
            mirrored,
            expect_mirror,
            "{} → {}",
            show(&write.request),
            show(&reply)
        );
        reply
    }

    /// MULTI, `queued`, EXEC on the master in one go; mirrors the transaction.
    fn transaction(&mut self, queued: &[&[&str]]) -> Bytes {
        let writes: Vec<Prepped> = queued.iter().map(|q| prepare_write(q)).collect();
        let mut tx = request(&["MULTI"]).to_vec();
        for w in &writes {
            tx.extend_from_slice(&w.request);
        }
        tx.extend_from_slice(&request(&["EXEC"]));
        let tx = Bytes::from(tx);
        self.master.send(&tx);
        let mut all = Vec::new();
        let mut exec_reply = Bytes::new();
        for _ in 0..writes.len() + 2 {
            exec_reply = self.master.reply();
            all.extend_from_slice(&exec_reply);
        }
        let effect = prepare_exec(writes.into_iter().map(|w| w.effect).collect());
        self.all_exec_replies = !self.all_exec_replies;
        let reply = if self.all_exec_replies {
            Bytes::from(all)
        } else {
            exec_reply.clone()
        };
        self.mirror(&effect, &tx, &reply);
        exec_reply
    }

    /// Sends a blocking command on the second connection and waits until the master has
    /// blocked it; `finish` then reads its reply and mirrors it.
    fn block<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Prepped {
        let write = prepare_write(args);
        self.blocked.send(&write.request);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !contains(
            &self.master.call(&["INFO", "clients"]),
            b"blocked_clients:1\r\n",
        ) {
            assert!(Instant::now() < deadline, "the client never blocked");
            // Polling interval of this wait loop, not synchronisation.
            std::thread::sleep(Duration::from_millis(5));
        }
        write
    }

    fn finish(&mut self, write: &Prepped) -> Bytes {
        let reply = self.blocked.reply();
        self.mirror(&write.effect, &write.request, &reply);
        reply
    }
}

/// The writes of the script: every rewrite and every effect, valid and refused.
fn script(p: &mut Pair) {
    let resp3 = p.protocol == Protocol::Resp3;
    p.write(&["FLUSHALL"]);

    // SET with relative expirations, and the master's own errors.
    p.write(&["SET", "s:ex", "v", "EX", "1000"]);
    p.write(&["SET", "s:px", "v", "px", "1000000", "GET"]);
    p.write(&["SET", "s:px", "v2", "XX", "PX", "2000000", "GET"]);
    p.write(&["SET", "s:px", "v3", "NX", "EX", "10"]);
    p.write(&["SET", "s:rep", "v", "EX", "junk", "EX", "300"]);
    p.write(&["SET", "s:keep", "v", "PX", "900000"]);
    p.write(&["SET", "s:keep", "w", "KEEPTTL"]);
    p.write(&[
        "SET",
        "s:abs",
        "v",
        "PXAT",
        &(now_ms() + 500_000).to_string(),
    ]);
    for bad in [
        &["SET", "s:bad", "v", "EX", "0"][..],
        &["SET", "s:bad", "v", "EX", "-3"],
        &["SET", "s:bad", "v", "PX", "abc"],
        &["SET", "s:bad", "v", "EX", "9223372036854776"],
        &["SET", "s:bad", "v", "PX", "9223372036854775807"],
        &["SET", "s:bad", "v", "EX", "10", "PX", "10"],
        &["SET", "s:bad", "v", "KEEPTTL", "EX", "10"],
        &["SET", "s:bad", "v", "EX"],
    ] {
        let reply = p.write(bad);
        assert!(reply.starts_with(b"-"), "{}", show(&reply));
    }
    p.write(&["SETEX", "s:setex", "1000", "v"]);
    p.write(&["PSETEX", "s:psetex", "1000000", "v"]);
    p.write(&["SETEX", "s:setex", "0", "v"]);
    p.write(&["PSETEX", "s:setex", "x", "v"]);

    // GETEX.
    p.write(&["SET", "g:a", "v"]);
    p.write(&["GETEX", "g:a", "EX", "700"]);
    p.write(&["SET", "g:b", "v"]);
    p.write(&["GETEX", "g:b", "PX", "700000"]);
    p.write(&["SET", "g:c", "v", "EX", "100"]);
    p.write(&["GETEX", "g:c", "PERSIST"]);
    p.write(&["GETEX", "g:missing", "EX", "10"]);
    p.write(&["GETEX", "g:a", "EX", "0"]);
    p.write(&["GETEX", "g:a", "NX"]);

    // EXPIRE and PEXPIRE, with flags; negative times delete.
    p.write(&["SET", "e:a", "v"]);
    p.write(&["EXPIRE", "e:a", "1000"]);
    p.write(&["EXPIRE", "e:a", "2000", "GT"]);
    p.write(&["EXPIRE", "e:a", "3000", "lt"]);
    p.write(&["PEXPIRE", "e:a", "500000", "XX", "LT"]);
    p.write(&["EXPIRE", "e:a", "10", "NX"]);
    p.write(&["EXPIRE", "e:missing", "10"]);
    p.write(&["SET", "e:gone", "v"]);
    p.write(&["EXPIRE", "e:gone", "-1"]);
    p.write(&["SET", "e:gone2", "v"]);
    p.write(&["PEXPIRE", "e:gone2", "0"]);
    p.write(&["EXPIRE", "e:a", "abc"]);
    p.write(&["EXPIRE", "e:a", "10", "NX", "XX"]);
    p.write(&["EXPIRE", "e:a", "9223372036854776"]);
    p.write(&["PEXPIRE", "e:a", "9223372036854775807"]);
    p.write(&["SET", "e:at", "v"]);
    p.write(&["EXPIREAT", "e:at", &(now_ms() / 1000 + 3000).to_string()]);

    // RESTORE with a relative ttl, with options, and refused.
    p.write(&["RPUSH", "r:src", "a", "b", "c"]);
    let dump = p.read(&["DUMP", "r:src"]);
    let payload = dump
        .splitn(2, |&b| b == b'\n')
        .nth(1)
        .map(|rest| rest[..rest.len() - 2].to_vec())
        .expect("DUMP's payload");
    let restore = |key: &str, ttl: &str, options: &[&str]| {
        let mut args: Vec<Vec<u8>> =
            vec![b"RESTORE".to_vec(), key.into(), ttl.into(), payload.clone()];
        args.extend(options.iter().map(|o| o.as_bytes().to_vec()));
        args
    };
    p.write(&restore("r:ttl", "600000", &[]));
    p.write(&restore("r:ttl", "700000", &["REPLACE", "IDLETIME", "5"]));
    p.write(&restore("r:freq", "800000", &["FREQ", "3"]));
    p.write(&restore("r:none", "0", &[]));
    p.write(&restore(
        "r:abs",
        &(now_ms() + 900_000).to_string(),
        &["ABSTTL"],
    ));
    p.write(&restore("r:busy", "10", &[]));
    p.write(&restore("r:ttl", "10", &[]));
    p.write(&restore("r:bad", "-1", &[]));
    p.write(&restore("r:bad", "10", &["FREQ", "300"]));

    // SPOP: one, some, all, none, refused; integers and strings.
    p.write(&["SADD", "p:ints", "1", "2", "3", "4", "5", "6", "7", "8"]);
    p.write(&[
        "SADD", "p:strs", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
    ]);
    p.write(&["SPOP", "p:ints"]);
    p.write(&["SPOP", "p:ints", "2"]);
    p.write(&["SPOP", "p:strs", "8"]);
    p.write(&["SPOP", "p:ints", "100"]);
    p.write_mirrored(&["SPOP", "p:missing"], false);
    p.write_mirrored(&["SPOP", "p:missing", "3"], false);
    p.write_mirrored(&["SPOP", "p:strs", "0"], false);
    p.write_mirrored(&["SPOP", "p:strs", "-1"], false);
    p.write_mirrored(&["SPOP", "s:ex"], false);

    // Blocking list pops served at once, refused, timed out.
    p.write(&["RPUSH", "l:a", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    p.write(&["BLPOP", "l:none", "l:a", "0"]);
    p.write(&["BRPOP", "l:a", "0"]);
    p.write(&["BLMOVE", "l:a", "l:b", "LEFT", "RIGHT", "0"]);
    p.write(&["BRPOPLPUSH", "l:a", "l:b", "0"]);
    p.write(&["BLMPOP", "0", "2", "l:none", "l:a", "LEFT", "COUNT", "2"]);
    p.write(&["BLMPOP", "0", "1", "l:b", "right", "COUNT", "10"]);
    p.write(&["BLMPOP", "0", "1", "l:a", "RIGHT"]);
    p.write_mirrored(&["BLPOP", "l:none", "0.01"], false);
    p.write_mirrored(&["BLMOVE", "l:none", "l:b", "LEFT", "LEFT", "0.01"], false);
    p.write_mirrored(&["BLMPOP", "0.01", "1", "l:none", "LEFT"], false);
    p.write_mirrored(&["BLMPOP", "0", "1", "l:a", "UP"], false);
    p.write_mirrored(&["BLPOP", "s:ex", "0"], false);

    // Blocking sorted-set pops.
    p.write(&[
        "ZADD", "z:a", "1", "a", "2.5", "b", "3", "c", "4", "d", "5", "e",
    ]);
    p.write(&["BZPOPMIN", "z:none", "z:a", "0"]);
    p.write(&["BZPOPMAX", "z:a", "0"]);
    p.write(&["BZMPOP", "0", "1", "z:a", "MIN", "COUNT", "2"]);
    p.write(&["BZMPOP", "0", "1", "z:a", "max", "COUNT", "10"]);
    p.write_mirrored(&["BZPOPMIN", "z:a", "0.01"], false);
    p.write_mirrored(&["BZMPOP", "0", "1", "z:a", "SIDEWAYS"], false);

    // Blocked first, served by a later write: the replica gets the write, then the pop.
    let blpop = p.block(&["BLPOP", "b:list", "10"]);
    p.write(&["RPUSH", "b:list", "x", "y"]);
    let reply = p.finish(&blpop);
    assert!(contains(&reply, b"x"), "{}", show(&reply));
    let bzpop = p.block(&["BZPOPMAX", "b:zset", "10"]);
    p.write(&["ZADD", "b:zset", "1", "m", "2", "n"]);
    p.finish(&bzpop);
    let blmpop = p.block(&["BLMPOP", "10", "1", "b:list2", "RIGHT", "COUNT", "5"]);
    p.write(&["RPUSH", "b:list2", "1", "2", "3"]);
    p.finish(&blmpop);
    let bzmpop = p.block(&["BZMPOP", "10", "1", "b:zset2", "MIN", "COUNT", "5"]);
    p.write(&["ZADD", "b:zset2", "1", "m", "2", "n"]);
    p.finish(&bzmpop);
    let blmove = p.block(&["BLMOVE", "b:list3", "b:dst", "RIGHT", "LEFT", "10"]);
    p.write(&["RPUSH", "b:list3", "1", "2"]);
    p.finish(&blmove);

    // XADD with IDs chosen by the master, trimming, refused.
    for i in 0..250 {
        let i = i.to_string();
        p.write(&["XADD", "x:a", "MAXLEN", "~", "120", "*", "n", &i]);
    }
    p.write(&["XADD", "x:a", "*", "f", "v"]);
    let future = format!("{}-*", now_ms() + 60_000);
    p.write(&["XADD", "x:a", &future, "f", "v"]);
    p.write(&["XADD", "x:a", &future, "f", "v"]);
    p.write(&["XADD", "x:a", "*", "f", "v"]);
    p.write(&[
        "XADD",
        "x:a",
        "NOMKSTREAM",
        "MINID",
        "=",
        "0",
        "*",
        "f",
        "v",
    ]);
    p.write(&["XTRIM", "x:a", "MAXLEN", "~", "50"]);
    p.write(&["XADD", "x:b", "1-1", "f", "v"]);
    p.write(&["XADD", "x:b", "5", "f", "v"]);
    p.write_mirrored(&["XADD", "x:missing", "NOMKSTREAM", "*", "f", "v"], false);
    for bad in [
        &["XADD", "x:b", "1-1", "f", "v"][..],
        &["XADD", "x:b", "0-0", "f", "v"],
        &["XADD", "x:b", "MAXLEN", "x", "*", "f", "v"],
        &["XADD", "x:b", "*", "f"],
        &["XADD", "s:ex", "*", "f", "v"],
    ] {
        let reply = p.write_mirrored(bad, true);
        assert!(reply.starts_with(b"-"), "{}", show(&reply));
    }

    // Consumer groups: reads, blocking reads served at once, later, or timed out.
    p.write(&["XGROUP", "CREATE", "x:a", "g", "0"]);
    p.write(&["XGROUP", "CREATE", "x:c", "g", "$", "MKSTREAM"]);
    p.write(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c1",
        "COUNT",
        "3",
        "STREAMS",
        "x:a",
        ">",
    ]);
    p.write(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c1",
        "BLOCK",
        "100",
        "COUNT",
        "4",
        "STREAMS",
        "x:a",
        ">",
    ]);
    p.write(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c2",
        "BLOCK",
        "100",
        "NOACK",
        "COUNT",
        "2",
        "STREAMS",
        "x:a",
        "x:c",
        ">",
        ">",
    ]);
    p.write(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c1",
        "BLOCK",
        "100",
        "STREAMS",
        "x:c",
        "x:a",
        ">",
        "0",
    ]);
    p.write_mirrored(
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c3",
            "BLOCK",
            "10",
            "STREAMS",
            "x:c",
            ">",
        ],
        false,
    );
    p.write_mirrored(
        &[
            "XREADGROUP",
            "GROUP",
            "nogroup",
            "c",
            "BLOCK",
            "10",
            "STREAMS",
            "x:c",
            ">",
        ],
        false,
    );
    let xread = p.block(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c4",
        "BLOCK",
        "10000",
        "STREAMS",
        "x:c",
        ">",
    ]);
    p.write(&["XADD", "x:c", "*", "late", "1"]);
    p.finish(&xread);
    p.write(&["XACK", "x:a", "g", "1-1"]);
    p.write(&["XCLAIM", "x:a", "g", "c9", "0", "0-1"]);
    p.write(&[
        "XAUTOCLAIM",
        "x:a",
        "g",
        "c9",
        "0",
        "0",
        "COUNT",
        "2",
        "JUSTID",
    ]);

    // INCRBYFLOAT becomes SET .. KEEPTTL; HINCRBYFLOAT is mirrored as it is.
    p.write(&["SET", "f:a", "10.5", "EX", "1000"]);
    p.write(&["INCRBYFLOAT", "f:a", "0.1"]);
    p.write(&["INCRBYFLOAT", "f:a", "1e3"]);
    p.write(&["INCRBYFLOAT", "f:new", "3"]);
    p.write(&["INCRBYFLOAT", "f:new", "-0.333333333333333333333"]);
    p.write_mirrored(&["INCRBYFLOAT", "f:a", "abc"], false);
    p.write_mirrored(&["INCRBYFLOAT", "s:ex", "1"], false);
    p.write(&["HINCRBYFLOAT", "f:h", "x", "1.1"]);
    p.write(&["HINCRBYFLOAT", "f:h", "x", "2.2e-3"]);

    // Scripts, functions, HyperLogLog.
    p.write(&[
        "EVAL",
        "return redis.call('SET', KEYS[1], ARGV[1])",
        "1",
        "sc:a",
        "1",
    ]);
    p.write(&[
        "EVAL",
        "redis.call('INCR', KEYS[1]); return redis.call('GET', 'nokey')",
        "1",
        "sc:a",
    ]);
    p.write(&[
        "EVAL",
        "redis.call('INCR', KEYS[1]); return redis.error_reply('E x')",
        "1",
        "sc:a",
    ]);
    let sha = p.write(&[
        "SCRIPT",
        "LOAD",
        "return redis.call('INCRBY', KEYS[1], ARGV[1])",
    ]);
    let sha = String::from_utf8_lossy(&sha)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    p.write(&["EVALSHA", &sha, "1", "sc:b", "5"]);
    p.write(&[
        "FUNCTION",
        "LOAD",
        "REPLACE",
        "#!lua name=mirrorlib\nredis.register_function('bump', function(keys, args) \
         return redis.call('INCR', keys[1]) end)",
    ]);
    p.write(&["FCALL", "bump", "1", "sc:c"]);
    p.write(&["PFADD", "h:a", "a", "b", "c"]);
    p.write(&["PFCOUNT", "h:a"]);
    p.write(&["PFADD", "h:a", "d"]);
    p.write(&["PFCOUNT", "h:a"]);

    // Reads are not mirrored.
    p.read(&["GET", "s:ex"]);
    p.read(&["PTTL", "s:ex"]);
    p.read(&["PUBLISH", "ch", "m"]);

    // Transactions: all mirrored as they are, with effects needing the reply, refused.
    p.transaction(&[
        &["SET", "t:a", "1"],
        &["INCR", "t:a"],
        &["LPUSH", "t:l", "a", "b"],
    ]);
    p.write(&["SADD", "t:s", "a", "b", "c", "d"]);
    p.write(&["RPUSH", "t:list", "a", "b"]);
    let reply = p.transaction(&[
        &["SET", "t:b", "1", "EX", "500"],
        &["INCR", "t:b"],
        &["GET", "t:b"],
        &["PTTL", "t:b"],
        &["SPOP", "t:s"],
        &["SPOP", "t:s", "2"],
        &["SPOP", "t:none"],
        &["XADD", "t:x", "*", "f", "v"],
        &["INCRBYFLOAT", "t:f", "1.5"],
        &["BLPOP", "t:list", "0"],
        &["BLPOP", "t:empty", "0"],
        &["EXPIRE", "t:b", "400"],
        &["INCR", "t:s"],
    ]);
    assert!(reply.starts_with(b"*13\r\n"), "{}", show(&reply));
    p.transaction(&[&["GET", "t:a"], &["TTL", "t:a"]]);
    p.master.call(&["WATCH", "t:w"]);
    p.write(&["SET", "t:w", "1"]);
    let reply = p.transaction(&[&["SET", "t:w", "2"]]);
    assert_eq!(&reply[..], if resp3 { &b"_\r\n"[..] } else { b"*-1\r\n" });
    let reply = p.transaction(&[&["SET", "t:w", "3"], &["SET", "t:w"]]);
    assert!(reply.starts_with(b"-EXECABORT"), "{}", show(&reply));
    p.transaction(&[]);
}

/// Asserts that master and replica hold the same data.
fn assert_same_data(p: &mut Pair) {
    let digest = p.master.call(&["DEBUG", "DIGEST"]);
    assert_ne!(
        digest.as_ref(),
        b"+0000000000000000000000000000000000000000\r\n"
    );
    let mut keys_master = keys(&mut p.master);
    let mut keys_replica = keys(&mut p.replica);
    keys_master.sort();
    keys_replica.sort();
    assert_eq!(keys_master, keys_replica);
    assert!(keys_master.len() > 40, "{}", keys_master.len());
    for key in &keys_master {
        for check in [&["PEXPIRETIME"][..], &["DEBUG", "DIGEST-VALUE"], &["TYPE"]] {
            let mut args: Vec<&[u8]> = check.iter().map(|c| c.as_bytes()).collect();
            args.push(key);
            assert_eq!(
                show(&p.master.call(&args)),
                show(&p.replica.call(&args)),
                "{check:?} {}",
                show(key)
            );
        }
        if p.master.call(&[&b"TYPE"[..], key]).as_ref() == b"+stream\r\n" {
            for check in [&["XINFO", "STREAM"][..], &["XINFO", "GROUPS"]] {
                let mut args: Vec<&[u8]> = check.iter().map(|c| c.as_bytes()).collect();
                args.push(key);
                assert_eq!(
                    show(&p.master.call(&args)),
                    show(&p.replica.call(&args)),
                    "{check:?} {}",
                    show(key)
                );
            }
            let pending = [&b"XPENDING"[..], key, b"g"];
            assert_eq!(
                show(&p.master.call(&pending)),
                show(&p.replica.call(&pending))
            );
        }
    }
    assert_eq!(
        show(&digest),
        show(&p.replica.call(&["DEBUG", "DIGEST"])),
        "DEBUG DIGEST"
    );
    assert_eq!(
        show(&p.master.call(&["FUNCTION", "LIST"])),
        show(&p.replica.call(&["FUNCTION", "LIST"]))
    );
}

/// Every key of `conn`'s database.
fn keys(conn: &mut Conn) -> Vec<Vec<u8>> {
    let reply = conn.call(&["KEYS", "*"]);
    let mut keys = Vec::new();
    let mut at = reply.iter().position(|&b| b == b'\n').expect("header") + 1;
    while at < reply.len() {
        let cr = at
            + reply[at..]
                .iter()
                .position(|&b| b == b'\r')
                .expect("bulk header");
        let len: usize = std::str::from_utf8(&reply[at + 1..cr])
            .expect("ascii")
            .parse()
            .expect("length");
        keys.push(reply[cr + 2..cr + 2 + len].to_vec());
        at = cr + 2 + len + 2;
    }
    keys
}

#[test]
fn replicas_end_with_the_masters_data() {
    // Both run with DEBUG enabled, as every test server does.
    let master = RedisServer::start();
    let replica = RedisServer::start();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut pair = Pair {
            master: master.conn(protocol),
            blocked: master.conn(protocol),
            replica: replica.conn(protocol),
            protocol,
            mirrored: 0,
            all_exec_replies: false,
        };
        script(&mut pair);
        assert!(pair.mirrored > 300, "{}", pair.mirrored);
        assert_same_data(&mut pair);
    }
}
