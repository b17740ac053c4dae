//! Unit tests of the command module (the live comparison with redis-server is in
//! the integration module `command_table_live` (`tests/integration/command_table_live.rs`)).

use proptest::strategy::Strategy;
use smallvec::SmallVec;

use super::procs::{getkeys_of, GetKeys};
use super::*;

/// Resolves `req` (split on spaces) and returns its key indices, or the error text.
fn keys(req: &str) -> Result<Vec<usize>, String> {
    let args: Vec<&str> = req.split(' ').collect();
    let spec = resolve(&args).map_err(|e| e.to_string())?;
    let mut out = SmallVec::new();
    spec.key_indices(&args, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out.to_vec())
}

fn err(args: &[&[u8]]) -> Vec<u8> {
    resolve(args).expect_err("should fail").as_bytes().to_vec()
}

fn find(name: &str) -> &'static CommandSpec {
    all_specs()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} not in the table"))
}

#[test]
fn lookup_is_case_insensitive() {
    let get = lookup(b"get").expect("get");
    assert_eq!(get.name, "get");
    assert!(std::ptr::eq(lookup(b"GET").expect("GET"), get));
    assert!(std::ptr::eq(lookup(b"gEt").expect("gEt"), get));
    assert_eq!(
        lookup(b"georadiusbymember_ro").map(|c| c.name),
        Some("georadiusbymember_ro")
    );
    assert_eq!(
        lookup(b"RESTORE-ASKING").map(|c| c.name),
        Some("restore-asking")
    );
    assert!(lookup(b"").is_none());
    assert!(lookup(b"gett").is_none());
    assert!(lookup(b"ge").is_none());
    assert!(lookup(b"g\xc3\xa9t").is_none());
    assert!(lookup(&[b'a'; 200]).is_none());
    // Subcommands are not top-level commands.
    assert!(lookup(b"config|get").is_none());
}

#[test]
fn every_name_looks_up_to_itself() {
    let mut previous = "";
    for c in commands() {
        assert!(c.name > previous, "table sorted and unique at {}", c.name);
        previous = c.name;
        assert!(std::ptr::eq(lookup(c.name.as_bytes()).expect(c.name), c));
        assert!(std::ptr::eq(
            lookup(c.name.to_uppercase().as_bytes()).expect(c.name),
            c
        ));
        for s in c.subcommands {
            let (container, sub) = s.name.split_once('|').expect("fullname");
            assert_eq!(container, c.name);
            assert_eq!(s.container_name(), c.name);
            assert!(s.is_subcommand() && s.subcommands.is_empty());
            assert!(std::ptr::eq(
                c.subcommand(sub.to_uppercase().as_bytes()).expect(sub),
                s
            ));
        }
    }
    assert_eq!(commands().count(), 240);
    assert_eq!(all_specs().count(), 366);
    assert_eq!(REDIS_VERSION, "7.0.15");
}

#[test]
fn unknown_command_text_is_exact() {
    assert_eq!(
        err(&[b"foo", b"a", b"b"]),
        b"ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        err(&[b"foo"]),
        b"ERR unknown command 'foo', with args beginning with: "
    );
    let e = resolve(&[b"Foo".as_slice()]).expect_err("unknown");
    assert_eq!(e.kind(), CommandErrorKind::UnknownCommand);
    assert_eq!(
        e.to_string(),
        "ERR unknown command 'Foo', with args beginning with: "
    );
    let empty: [&[u8]; 0] = [];
    assert_eq!(
        err(&empty),
        b"ERR unknown command '', with args beginning with: "
    );
    // CR and LF become spaces; a NUL byte ends the echo of an argument (C's %s).
    assert_eq!(
        err(&[b"f\r\no", b"a\nb", b"c\0d", b"e"]),
        b"ERR unknown command 'f  o', with args beginning with: 'a b' 'c' 'e' "
    );
}

#[test]
fn unknown_command_truncates_like_redis() {
    let name = vec![b'n'; 200];
    let long = vec![b'x'; 200];
    let text = err(&[&name, &long, b"y"]);
    let mut expected = b"ERR unknown command '".to_vec();
    expected.extend_from_slice(&[b'n'; 128]);
    expected.extend_from_slice(b"', with args beginning with: '");
    expected.extend_from_slice(&[b'x'; 128]);
    expected.extend_from_slice(b"' ");
    assert_eq!(text, expected);

    // 40 bytes of arguments echoed ('a..' plus quotes and space), then the rest is cut to
    // what is left of the 128 bytes.
    let a = vec![b'a'; 37];
    let b = vec![b'b'; 200];
    let text = err(&[b"nope", &a, &b, b"c"]);
    let mut expected = b"ERR unknown command 'nope', with args beginning with: '".to_vec();
    expected.extend_from_slice(&a);
    expected.extend_from_slice(b"' '");
    expected.extend_from_slice(&[b'b'; 128 - 40]);
    expected.extend_from_slice(b"' ");
    assert_eq!(text, expected);
}

#[test]
fn arity_errors_name_the_full_command() {
    assert_eq!(
        err(&[b"get"]),
        b"ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(&[b"GET", b"a", b"b"]),
        b"ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(&[b"config", b"GET"]),
        b"ERR wrong number of arguments for 'config|get' command"
    );
    assert_eq!(
        err(&[b"config"]),
        b"ERR wrong number of arguments for 'config' command"
    );
    assert_eq!(
        err(&[b"mset", b"a"]),
        b"ERR wrong number of arguments for 'mset' command"
    );
    let e = resolve(&[b"get".as_slice()]).expect_err("arity");
    assert_eq!(e.kind(), CommandErrorKind::WrongArity);
    // The arity error names its command by id (a malformed EXEC discards the transaction).
    assert_eq!(e.command(), Some(CommandId::Get));
    let e = resolve(&["EXEC", "x"]).expect_err("arity");
    assert_eq!(e.command(), Some(CommandId::Exec));
    let e = resolve(&["config", "GET"]).expect_err("arity");
    assert_eq!(e.command(), Some(CommandId::ConfigGet));
    assert_eq!(resolve(&["nosuch"]).expect_err("unknown").command(), None);
    assert_eq!(
        resolve(&["config", "nosuch"])
            .expect_err("unknown")
            .command(),
        None
    );
    assert!(
        resolve(&["mset", "a", "1", "b"]).is_ok(),
        "mset arity is only -3"
    );
    assert_eq!(resolve(&["command"]).map(|c| c.name), Ok("command"));
    assert_eq!(resolve(&["PING"]).map(|c| c.name), Ok("ping"));
}

#[test]
fn subcommands_resolve() {
    assert_eq!(
        resolve(&["CONFIG", "get", "maxmemory"]).map(|c| c.name),
        Ok("config|get")
    );
    assert_eq!(
        resolve(&["config", "GeT", "x"]).map(|c| c.name),
        Ok("config|get")
    );
    assert_eq!(
        resolve(&["client", "no-evict", "on"]).map(|c| c.name),
        Ok("client|no-evict")
    );
    assert_eq!(
        resolve(&["Object", "encoding", "k"]).map(|c| c.name),
        Ok("object|encoding")
    );
    assert_eq!(
        resolve(&["xinfo", "STREAM", "s"]).map(|c| c.name),
        Ok("xinfo|stream")
    );
    assert_eq!(
        resolve(&["command", "count"]).map(|c| c.name),
        Ok("command|count")
    );
    assert_eq!(
        err(&[b"config", b"foo"]),
        b"ERR unknown subcommand 'foo'. Try CONFIG HELP."
    );
    assert_eq!(
        err(&[b"Client", b"bar", b"baz"]),
        b"ERR unknown subcommand 'bar'. Try CLIENT HELP."
    );
    let e = resolve(&["object", "x"]).expect_err("unknown subcommand");
    assert_eq!(e.kind(), CommandErrorKind::UnknownSubcommand);
    // A command without subcommands ignores what follows its name.
    assert_eq!(resolve(&["get", "config"]).map(|c| c.name), Ok("get"));
}

#[test]
fn keys_of_simple_commands() {
    assert_eq!(keys("GET k"), Ok(vec![1]));
    assert_eq!(keys("MSET a 1 b 2 c 3"), Ok(vec![1, 3, 5]));
    assert_eq!(keys("MSET a 1 b"), Ok(vec![1, 3]));
    assert_eq!(keys("LCS a b"), Ok(vec![1, 2]));
    assert_eq!(keys("COPY src dst DB 0 REPLACE"), Ok(vec![1, 2]));
    assert_eq!(keys("RENAME a b"), Ok(vec![1, 2]));
    assert_eq!(keys("OBJECT ENCODING k"), Ok(vec![2]));
    assert_eq!(keys("XINFO STREAM s FULL"), Ok(vec![2]));
    assert_eq!(keys("MEMORY USAGE k SAMPLES 5"), Ok(vec![2]));
    assert_eq!(keys("SET k v GET"), Ok(vec![1]));
    assert_eq!(keys("BITFIELD k GET u8 0"), Ok(vec![1]));
    assert_eq!(keys("BLPOP a b 0"), Ok(vec![1, 2]));
    assert_eq!(keys("PING"), Ok(vec![]));
    assert_eq!(keys("OBJECT HELP"), Ok(vec![]));
    // NOT_KEY specs are not keys.
    assert_eq!(keys("SPUBLISH ch msg"), Ok(vec![]));
}

#[test]
fn keys_of_scripts() {
    assert_eq!(keys("EVAL s 0"), Ok(vec![]));
    assert_eq!(keys("EVAL s 0 a b"), Ok(vec![]));
    assert_eq!(keys("EVAL s 2 a b c"), Ok(vec![3, 4]));
    assert_eq!(
        keys("evalsha_ro 0123456789012345678901234567890123456789 1 k"),
        Ok(vec![3])
    );
    assert_eq!(keys("FCALL f 1 k a"), Ok(vec![3]));
    assert_eq!(
        keys("EVAL s 3 a b"),
        Err("ERR Number of keys can't be greater than number of args".into())
    );
    assert_eq!(
        keys("EVAL s -1"),
        Err("ERR Number of keys can't be negative".into())
    );
    assert_eq!(
        keys("EVAL s x"),
        Err("ERR value is not an integer or out of range".into())
    );
    assert_eq!(
        keys("EVAL s 01 a"),
        Err("ERR value is not an integer or out of range".into())
    );
    assert_eq!(
        keys("EVALSHA abc 5"),
        Err("NOSCRIPT No matching script. Please use EVAL.".into())
    );
    // The function may not exist: a master answers.
    assert_eq!(keys("FCALL f 3 a"), Ok(vec![]));
    let e = lookup(b"eval")
        .expect("eval")
        .key_indices(&["eval", "s", "2", "a"], &mut SmallVec::new())
        .expect_err("numkeys");
    assert_eq!(e.kind(), CommandErrorKind::BadKeyArguments);
}

#[test]
fn keys_of_numkeys_commands() {
    assert_eq!(keys("ZUNIONSTORE d 2 a b WEIGHTS 1 2"), Ok(vec![1, 3, 4]));
    assert_eq!(keys("ZINTERSTORE d 1 a"), Ok(vec![1, 3]));
    assert_eq!(keys("ZUNION 2 a b WITHSCORES"), Ok(vec![2, 3]));
    assert_eq!(
        keys("ZUNIONSTORE d 0 a"),
        Err("ERR at least 1 input key is needed for 'zunionstore' command".into())
    );
    assert_eq!(keys("ZUNIONSTORE d 3 a b"), Err("ERR syntax error".into()));
    assert_eq!(
        keys("ZDIFF x a"),
        Err("ERR value is not an integer or out of range".into())
    );
    assert_eq!(keys("ZINTERCARD 2 a b LIMIT 5"), Ok(vec![2, 3]));
    assert_eq!(
        keys("ZINTERCARD 0 a"),
        Err("ERR at least 1 input key is needed for 'zintercard' command".into())
    );
    assert_eq!(keys("SINTERCARD 2 a b"), Ok(vec![2, 3]));
    assert_eq!(
        keys("SINTERCARD 0 a"),
        Err("ERR numkeys should be greater than 0".into())
    );
    assert_eq!(
        keys("SINTERCARD 3 a b"),
        Err("ERR Number of keys can't be greater than number of args".into())
    );
    assert_eq!(keys("LMPOP 2 a b LEFT COUNT 3"), Ok(vec![2, 3]));
    assert_eq!(keys("LMPOP 2 a b"), Err("ERR syntax error".into()));
    assert_eq!(
        keys("LMPOP 0 a LEFT"),
        Err("ERR numkeys should be greater than 0".into())
    );
    assert_eq!(keys("BLMPOP 0 2 a b RIGHT"), Ok(vec![3, 4]));
    assert_eq!(
        keys("BLMPOP 0 -1 a LEFT"),
        Err("ERR numkeys should be greater than 0".into())
    );
    assert_eq!(keys("ZMPOP 1 z MIN"), Ok(vec![2]));
    assert_eq!(keys("BZMPOP 1.5 2 y z MAX COUNT 2"), Ok(vec![3, 4]));
}

#[test]
fn keys_of_movable_commands() {
    assert_eq!(keys("XREAD COUNT 2 STREAMS a b 0 0"), Ok(vec![4, 5]));
    assert_eq!(keys("XREAD STREAMS streams 0"), Ok(vec![2]));
    assert_eq!(
        keys("XREADGROUP GROUP g c BLOCK 0 STREAMS s1 s2 > >"),
        Ok(vec![7, 8])
    );
    assert_eq!(keys("SORT k"), Ok(vec![1]));
    assert_eq!(
        keys("SORT k BY w_* LIMIT 0 10 GET o_* STORE dst"),
        Ok(vec![1, 10])
    );
    assert_eq!(keys("SORT k STORE d1 STORE d2"), Ok(vec![1, 5]));
    assert_eq!(keys("SORT_RO k GET #"), Ok(vec![1]));
    assert_eq!(keys("MIGRATE h 6379 k 0 1000"), Ok(vec![3]));
    // KEYS with a non-empty key argument is a syntax error: Redis finds no key.
    assert_eq!(
        keys("MIGRATE h 6379 k 0 1000 COPY AUTH pw KEYS a b c"),
        Ok(vec![])
    );
    let args = [
        "MIGRATE", "h", "6379", "", "0", "1000", "REPLACE", "AUTH2", "u", "p", "KEYS", "a", "b",
    ];
    let spec = resolve(&args).expect("migrate");
    let mut out = SmallVec::new();
    spec.key_indices(&args, &mut out).expect("keys");
    assert_eq!(out.as_slice(), &[11, 12]);
    assert_eq!(keys("GEORADIUS g 0 0 1 km STORE dst"), Ok(vec![1, 7]));
    assert_eq!(
        keys("GEORADIUS g 0 0 1 km STORE a STOREDIST b"),
        Ok(vec![1, 7, 9])
    );
    assert_eq!(
        keys("GEORADIUSBYMEMBER g m 1 km WITHDIST STOREDIST d"),
        Ok(vec![1, 7])
    );
    assert_eq!(keys("GEORADIUS g 0 0 1 km WITHCOORD"), Ok(vec![1]));
}

#[test]
fn key_indices_stay_in_bounds_on_short_requests() {
    let mut out = SmallVec::new();
    for spec in all_specs() {
        let mut args = vec![spec.container_name().to_owned()];
        if spec.is_subcommand() {
            args.push(spec.name.split('|').nth(1).unwrap_or("").to_owned());
        }
        for extra in 0..4 {
            if spec.key_indices(&args, &mut out).is_ok() {
                assert!(out.iter().all(|&i| i > 0 && i < args.len()), "{args:?}");
            }
            args.push(if extra % 2 == 0 {
                "1".into()
            } else {
                "STREAMS".into()
            });
        }
    }
    let empty: [&[u8]; 0] = [];
    assert!(find("get").key_indices(&empty, &mut out).is_ok() && out.is_empty());
}

#[test]
fn routes_follow_the_rules() {
    let route = |n: &str| find(n).route;
    assert_eq!(route("get"), Route::Keyed);
    assert_eq!(route("lastsave"), Route::FanOut(Merge::Oldest));
    assert_eq!(route("bgsave"), Route::Local);
    assert_eq!(route("replicaof"), Route::Local);
    assert_eq!(route("save"), Route::Local);
    assert_eq!(route("xread"), Route::Keyed);
    assert_eq!(route("object|freq"), Route::Keyed);
    assert_eq!(route("ping"), Route::Local);
    assert_eq!(route("command|getkeys"), Route::Local);
    assert_eq!(route("config|get"), Route::Local);
    assert_eq!(route("mget"), Route::Split(Split::Mget));
    assert_eq!(route("mset"), Route::Split(Split::Mset));
    assert_eq!(route("unlink"), Route::Split(Split::SumIntegers));
    assert_eq!(route("flushall"), Route::Flush);
    assert_eq!(route("dbsize"), Route::FanOut(Merge::SumIntegers));
    assert_eq!(route("keys"), Route::FanOut(Merge::ConcatArrays));
    assert_eq!(route("script|exists"), Route::FanOut(Merge::AndArrays));
    assert_eq!(route("function|load"), Route::FanOut(Merge::First));
    assert_eq!(route("config|set"), Route::Local);
    assert_eq!(route("cluster|info"), Route::Forbidden);
    assert_eq!(route("acl|whoami"), Route::Local);
    assert_eq!(route("acl|setuser"), Route::Local);
    assert_eq!(route("acl|save"), Route::Forbidden);
    assert_eq!(route("multi"), Route::Dedicated);
    assert_eq!(route("wait"), Route::Local);
    assert_eq!(route("spublish"), Route::PubSub);
    assert_eq!(route("psubscribe"), Route::PubSub);
    assert_eq!(route("scan"), Route::Scan);
    assert_eq!(route("randomkey"), Route::FanOut(Merge::AnyNonNull));
    assert_eq!(route("command"), Route::Local);
}

#[test]
fn blocking_commands_are_dedicated() {
    for spec in all_specs().filter(|s| s.is_blocking()) {
        let expected = if matches!(spec.id, CommandId::Xread | CommandId::Xreadgroup) {
            Route::Keyed
        } else {
            Route::Dedicated
        };
        assert_eq!(spec.route, expected, "{}", spec.name);
    }
}

#[test]
fn containers_alone_are_arity_errors() {
    for c in commands().filter(|c| c.has_subcommands() && c.name != "command") {
        let e = resolve(&[c.name]).expect_err(c.name);
        assert_eq!(e.kind(), CommandErrorKind::WrongArity);
        assert_eq!(c.route, Route::Forbidden, "{}", c.name);
    }
}

#[test]
fn flags_and_getkeys_are_wired() {
    let eval = find("eval");
    assert!(eval.may_replicate() && eval.flags.contains(Flags::NO_MANDATORY_KEYS));
    assert!(find("pfcount").may_replicate() && find("pfcount").is_readonly());
    assert!(find("set").is_write() && !find("set").is_readonly());
    assert!(find("blpop").is_blocking());
    assert!(find("subscribe").is_pubsub());
    assert!(find("config|set").is_admin());
    assert_eq!(getkeys_of(CommandId::Sort), GetKeys::Sort);
    assert_eq!(find("zunionstore").getkeys, GetKeys::ZsetStore);
    assert_eq!(find("get").getkeys, GetKeys::None);
    // Every command whose keys move has a getkeys proc or complete specs.
    for spec in all_specs().filter(|s| s.flags.contains(Flags::MOVABLEKEYS)) {
        assert_ne!(spec.getkeys, GetKeys::None, "{}", spec.name);
    }
}

proptest::proptest! {
    /// Any request, resolved or not: no panic, and every index points into the request.
    #[test]
    fn key_indices_are_in_bounds(
        pick in 0usize..366,
        words in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec![
                    "0", "1", "2", "-1", "STORE", "STREAMS", "KEYS", "GET", "BY", "LIMIT",
                    "COUNT", "BLOCK", "GROUP", "AUTH", "AUTH2", "STOREDIST", "",
                ])
                .prop_map(|w| w.as_bytes().to_vec()),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4),
            ],
            0..10,
        ),
    ) {
        let spec = all_specs().nth(pick).expect("366 specs");
        let mut args = vec![spec.container_name().as_bytes().to_vec()];
        if let Some((_, sub)) = spec.name.split_once('|') {
            args.push(sub.as_bytes().to_vec());
        }
        args.extend(words);
        let mut out = SmallVec::new();
        if spec.key_indices(&args, &mut out).is_ok() {
            proptest::prop_assert!(out.iter().all(|&i| i > 0 && i < args.len()));
        }
        let _ = resolve(&args);
    }
}

#[test]
fn sort_patterns_must_stay_in_the_sorted_keys_slot() {
    let in_slot = |req: &str| {
        let args: Vec<&str> = req.split(' ').collect();
        let spec = resolve(&args).unwrap();
        spec.extra_keys_in_slot(&args, redshard_config::Slot::for_key(args[1].as_bytes()))
    };
    for ok in [
        "SORT l",
        "SORT l DESC ALPHA LIMIT 0 10",
        "SORT l BY nosort",
        "SORT l BY constant GET #",
        "SORT {l}x BY {l}w_* GET {l}o_* GET # GET {l}h_*->f",
        "SORT_RO {l}x BY {l}w_*",
        "SORT l BY {l}w_* STORE l2",
        "SORT l LIMIT 0 1 BY {l}by_*",
    ] {
        assert!(in_slot(ok), "{ok}");
    }
    for refused in [
        "SORT l BY w_*",
        "SORT l GET o_*",
        "SORT l GET # GET o_*",
        "SORT_RO l BY w_*->f",
        "SORT {l}x BY {other}w_*",
        "SORT {l}x BY {}w_*",
        "SORT {l}x BY w_{*}",
        "SORT {l}x BY {l*}",
    ] {
        assert!(!in_slot(refused), "{refused}");
    }
    // Other commands read no key besides their key arguments.
    let args = ["GET", "k"];
    assert!(resolve(&args)
        .unwrap()
        .extra_keys_in_slot(&args, redshard_config::Slot::for_key(b"other")));
}

/// Every spec, subcommands and the hand-written extras included.
fn every_spec() -> impl Iterator<Item = &'static CommandSpec> {
    all_specs().chain(&extra::CLIENT_EXTRAS)
}

#[test]
fn command_ids_name_their_commands() {
    let mut seen = std::collections::HashSet::new();
    for spec in every_spec() {
        let expected: String = spec
            .name
            .split(['|', '_', '-'])
            .map(|part| part[..1].to_ascii_uppercase() + &part[1..])
            .collect();
        assert_eq!(format!("{:?}", spec.id), expected, "id of {}", spec.name);
        assert!(seen.insert(spec.id), "{} shares its id", spec.name);
    }
}

#[test]
fn local_commands_are_the_ones_local_of_knows() {
    let mut local: Vec<&str> = every_spec()
        .filter(|s| s.route == Route::Local)
        .map(|s| s.name)
        .collect();
    local.sort_unstable();
    let mut expected = vec![
        "slowlog|get",
        "slowlog|len",
        "slowlog|reset",
        "wait",
        "ping",
        "echo",
        "quit",
        "select",
        "auth",
        "hello",
        "reset",
        "info",
        "command",
        "command|count",
        "command|docs",
        "command|getkeys",
        "command|getkeysandflags",
        "command|help",
        "command|info",
        "command|list",
        "config|get",
        "client|setname",
        "client|getname",
        "client|id",
        "client|info",
        "client|list",
        "client|no-evict",
        "client|help",
        "client|setinfo",
        "client|no-touch",
        "client|kill",
        "client|pause",
        "client|unpause",
        "client|unblock",
        "client|tracking",
        "client|caching",
        "client|getredir",
        "client|trackinginfo",
        "script|kill",
        "function|kill",
        "asking",
        "readonly",
        "readwrite",
        "config|set",
        "config|resetstat",
        "config|rewrite",
        "latency|reset",
        "monitor",
        "client|reply",
        "acl|whoami",
        "acl|cat",
        "acl|help",
        "acl|genpass",
        "acl|users",
        "acl|list",
        "acl|getuser",
        "replicaof",
        "slaveof",
        "save",
        "bgsave",
        "bgrewriteaof",
        "module|list",
        "acl|setuser",
        "acl|deluser",
        "acl|dryrun",
        "acl|log",
    ];
    expected.sort_unstable();
    assert_eq!(local, expected);
    for spec in every_spec() {
        assert_eq!(
            spec.route == Route::Local,
            Local::of(spec.id).is_some(),
            "{}",
            spec.name
        );
    }
}

/// The name lists `route.rs` and `procs.rs` held before routes, `@dangerous` and the
/// `getkeys_proc`s were declared by [`CommandId`], frozen here: the typed declarations must
/// give every command exactly what these lists gave it.
mod by_name {
    use super::super::{Merge, Split};
    use super::GetKeys;

    pub const SPLIT: &[(&str, Split)] = &[
        ("mget", Split::Mget),
        ("mset", Split::Mset),
        ("del", Split::SumIntegers),
        ("unlink", Split::SumIntegers),
        ("exists", Split::SumIntegers),
        ("touch", Split::SumIntegers),
    ];

    pub const FAN_OUT: &[(&str, Merge)] = &[
        ("dbsize", Merge::SumIntegers),
        ("randomkey", Merge::AnyNonNull),
        ("keys", Merge::ConcatArrays),
        ("script|load", Merge::First),
        ("script|flush", Merge::AllOk),
        ("script|exists", Merge::AndArrays),
        ("function|load", Merge::First),
        ("function|delete", Merge::AllOk),
        ("function|flush", Merge::AllOk),
        ("function|restore", Merge::AllOk),
        ("lastsave", Merge::Oldest),
    ];

    pub const FLUSH: &str = "flushall flushdb";

    pub const FORBIDDEN: &str = "shutdown debug config|set config|rewrite config|resetstat
        replicaof slaveof failover sync psync replconf save bgsave bgrewriteaof migrate monitor
        swapdb restore-asking cluster cluster|addslots cluster|addslotsrange
        cluster|bumpepoch cluster|count-failure-reports cluster|countkeysinslot cluster|delslots
        cluster|delslotsrange cluster|failover cluster|flushslots cluster|forget
        cluster|getkeysinslot cluster|help cluster|info cluster|keyslot cluster|links
        cluster|meet cluster|myid cluster|nodes cluster|replicas cluster|replicate cluster|reset
        cluster|saveconfig cluster|set-config-epoch cluster|setslot cluster|shards
        cluster|slaves cluster|slots acl acl|cat acl|deluser acl|dryrun acl|genpass acl|getuser
        acl|help acl|list acl|load acl|log acl|save acl|setuser acl|users acl|whoami module
        module|help module|list module|load module|loadex module|unload client|kill
        client|pause client|unpause client|reply client|tracking client|caching client|getredir
        client|trackinginfo client|unblock latency|reset script|kill script|debug function|kill
        pfselftest pfdebug client config function latency memory object pubsub script slowlog
        xgroup xinfo";

    pub const DEDICATED: &str = "multi exec discard watch unwatch blpop brpop brpoplpush blmove
        blmpop bzpopmin bzpopmax bzmpop";

    pub const PUBSUB: &str = "subscribe psubscribe ssubscribe unsubscribe punsubscribe
        sunsubscribe publish spublish pubsub|channels pubsub|help pubsub|numpat pubsub|numsub
        pubsub|shardchannels pubsub|shardnumsub";

    pub const DANGEROUS: &str = "acl|deluser acl|dryrun acl|getuser acl|list acl|load acl|log
        acl|save acl|setuser acl|users bgrewriteaof bgsave client|kill client|list
        client|no-evict client|pause client|unblock client|unpause cluster|addslots
        cluster|addslotsrange cluster|bumpepoch cluster|count-failure-reports cluster|delslots
        cluster|delslotsrange cluster|failover cluster|flushslots cluster|forget cluster|meet
        cluster|replicas cluster|replicate cluster|reset cluster|saveconfig
        cluster|set-config-epoch cluster|setslot cluster|slaves config|get config|resetstat
        config|rewrite config|set debug failover flushall flushdb info keys lastsave
        latency|doctor latency|graph latency|histogram latency|history latency|latest
        latency|reset migrate module|list module|load module|loadex module|unload monitor pfdebug
        pfselftest psync replconf replicaof restore restore-asking role save shutdown slaveof
        slowlog|get slowlog|len slowlog|reset sort sort_ro swapdb sync";

    /// The commands with a Redis `getkeys_proc`, as `procs.rs` listed them by name.
    pub const GETKEYS: &[(&str, GetKeys)] = &[
        ("set", GetKeys::FirstArg),
        ("bitfield", GetKeys::FirstArg),
        ("sort", GetKeys::Sort),
        ("sort_ro", GetKeys::SortRo),
        ("migrate", GetKeys::Migrate),
        ("georadius", GetKeys::Georadius),
        ("georadiusbymember", GetKeys::Georadius),
        ("xread", GetKeys::Xread),
        ("xreadgroup", GetKeys::Xread),
        ("eval", GetKeys::Eval),
        ("eval_ro", GetKeys::Eval),
        ("evalsha", GetKeys::EvalSha),
        ("evalsha_ro", GetKeys::EvalSha),
        ("fcall", GetKeys::Fcall),
        ("fcall_ro", GetKeys::Fcall),
        ("zunionstore", GetKeys::ZsetStore),
        ("zinterstore", GetKeys::ZsetStore),
        ("zdiffstore", GetKeys::ZsetStore),
        ("zunion", GetKeys::Zset),
        ("zinter", GetKeys::Zset),
        ("zdiff", GetKeys::Zset),
        ("zintercard", GetKeys::Zset),
        ("sintercard", GetKeys::Sintercard),
        ("lmpop", GetKeys::Mpop),
        ("zmpop", GetKeys::Mpop),
        ("blmpop", GetKeys::BlockingMpop),
        ("bzmpop", GetKeys::BlockingMpop),
    ];

    fn listed(list: &str, name: &str) -> bool {
        list.split_whitespace().any(|n| n == name)
    }

    /// Every name of the lists above.
    pub fn names() -> impl Iterator<Item = &'static str> {
        [FLUSH, FORBIDDEN, DEDICATED, PUBSUB, DANGEROUS]
            .into_iter()
            .flat_map(str::split_whitespace)
            .chain(SPLIT.iter().map(|(n, _)| *n))
            .chain(FAN_OUT.iter().map(|(n, _)| *n))
            .chain(GETKEYS.iter().map(|(n, _)| *n))
    }

    /// The `getkeys_proc` the list gave `name`.
    pub fn getkeys(name: &str) -> GetKeys {
        GETKEYS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(GetKeys::None, |(_, g)| *g)
    }

    /// The route the lists gave `name` (a local command is `local`: `Local::of` was already
    /// typed), in the order the old `route_of` tried them.
    pub fn route(name: &str, local: bool) -> super::Route {
        use super::Route;
        if name == "scan" {
            return Route::Scan;
        }
        if local {
            return Route::Local;
        }
        if listed(PUBSUB, name) {
            return Route::PubSub;
        }
        if let Some((_, split)) = SPLIT.iter().find(|(n, _)| *n == name) {
            return Route::Split(*split);
        }
        if let Some((_, merge)) = FAN_OUT.iter().find(|(n, _)| *n == name) {
            return Route::FanOut(*merge);
        }
        if listed(FLUSH, name) {
            Route::Flush
        } else if listed(FORBIDDEN, name) {
            Route::Forbidden
        } else if listed(DEDICATED, name) {
            Route::Dedicated
        } else {
            Route::Keyed
        }
    }

    /// Whether the list gave `name` Redis's `@dangerous` category.
    pub fn dangerous(name: &str) -> bool {
        listed(DANGEROUS, name)
    }
}

#[test]
fn routes_dangerous_and_getkeys_are_what_the_name_lists_gave() {
    for name in by_name::names() {
        let _ = every_spec()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} not in the table"));
    }
    for spec in every_spec() {
        let local = Local::of(spec.id).is_some();
        assert_eq!(
            spec.route,
            by_name::route(spec.name, local),
            "route of {}",
            spec.name
        );
        assert_eq!(
            spec.is_dangerous(),
            by_name::dangerous(spec.name),
            "@dangerous of {}",
            spec.name
        );
        assert_eq!(
            spec.getkeys,
            by_name::getkeys(spec.name),
            "getkeys of {}",
            spec.name
        );
    }
}
