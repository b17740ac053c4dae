//! Unit tests of the write effects: every rewrite, every effect, their error cases, RESP2 and
//! RESP3 replies, and no panic on arbitrary input.

use proptest::prelude::*;

use super::*;
use redshard_protocol::command::{all_specs, resolve};

/// The proxy's clock in these tests.
const NOW: i64 = 1_700_000_000_000;

/// `args` as a RESP request.
fn req(args: &[&[u8]]) -> Bytes {
    request(args)
}

/// Runs `f` on the `Args` of the request `args`, as the session has them.
fn with_args<R>(args: &[&[u8]], f: impl FnOnce(&Args<'_>) -> R) -> R {
    let buf = req(args);
    let mut scanner = RequestScanner::default();
    let frame = scanner.scan(&buf).unwrap().unwrap();
    assert_eq!(frame.len, buf.len());
    f(&scanner.args(&buf))
}

/// `prepare` as the session calls it: the spec from the command table.
fn prep_at(args: &[&[u8]], now: i64) -> Prepared {
    with_args(args, |a| {
        let spec = resolve(a).expect("a valid command");
        prepare(spec, a, now)
    })
}

fn prep(args: &[&[u8]]) -> Prepared {
    prep_at(args, NOW)
}

/// The table's spec called `name` (`container|sub` for subcommands).
fn spec_named(name: &str) -> &'static CommandSpec {
    all_specs()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} not in the table"))
}

/// `prepare` with the spec called `name` (for requests the arity check would refuse).
fn prep_named(name: &str, args: &[&[u8]]) -> Prepared {
    with_args(args, |a| prepare(spec_named(name), a, NOW))
}

/// Asserts that `args` is sent unchanged and mirrored as it is.
#[track_caller]
fn unchanged(args: &[&[u8]]) {
    assert_eq!(
        prep(args),
        Prepared::unchanged(Effect::Same),
        "{:?}",
        show(&req(args))
    );
}

/// Asserts that `args` becomes `expected` for master and replicas.
#[track_caller]
fn rewritten(args: &[&[u8]], expected: &[&[u8]]) {
    let prepared = prep(args);
    assert_eq!(prepared.effect, Effect::Same);
    let got = prepared.request.expect("rewritten");
    assert_eq!(show(&got), show(&req(expected)));
}

/// Asserts the effect of `args`, sent unchanged.
#[track_caller]
fn effect_of(args: &[&[u8]], effect: Effect) {
    assert_eq!(prep(args), Prepared::unchanged(effect));
}

/// Readable bytes for assertion messages.
fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", " ")
}

/// `NOW + ms` as an argument.
fn at(ms: i64) -> String {
    (NOW + ms).to_string()
}

/// The replica's request and expected reply for `effect`.
fn mirrored(
    effect: &Effect,
    request: &[u8],
    reply: &[u8],
    protocol: Protocol,
) -> Result<Option<(String, String)>, MirrorError> {
    let request = Bytes::copy_from_slice(request);
    let reply = Bytes::copy_from_slice(reply);
    Ok(replica_request(effect, &request, &reply, protocol)?
        .map(|m| (show(&m.request), show(&m.expect))))
}

/// The replica's request and expected reply for `effect`, which must mirror something.
#[track_caller]
fn some(effect: &Effect, request: &[u8], reply: &[u8], protocol: Protocol) -> (String, String) {
    mirrored(effect, request, reply, protocol)
        .expect("mirrorable")
        .expect("something to mirror")
}

#[track_caller]
fn none(effect: &Effect, request: &[u8], reply: &[u8], protocol: Protocol) {
    assert_eq!(mirrored(effect, request, reply, protocol), Ok(None));
}

#[track_caller]
fn fails(effect: &Effect, request: &[u8], reply: &[u8], protocol: Protocol) {
    let got = mirrored(effect, request, reply, protocol);
    assert!(got.is_err(), "{got:?}");
}

use Protocol::{Resp2, Resp3};

// ---------------------------------------------------------------------------------------
// Relative expirations

#[test]
fn set_ex_and_px_become_pxat() {
    rewritten(
        &[b"SET", b"k", b"v", b"EX", b"10"],
        &[b"SET", b"k", b"v", b"PXAT", at(10_000).as_bytes()],
    );
    rewritten(
        &[b"set", b"k", b"v", b"px", b"1500"],
        &[b"set", b"k", b"v", b"PXAT", at(1_500).as_bytes()],
    );
    // Other options stay where they were.
    rewritten(
        &[b"SET", b"k", b"v", b"NX", b"Ex", b"5", b"GET"],
        &[
            b"SET",
            b"k",
            b"v",
            b"NX",
            b"PXAT",
            at(5_000).as_bytes(),
            b"GET",
        ],
    );
    rewritten(
        &[b"SET", b"k", b"v", b"PX", b"7", b"XX", b"GET"],
        &[b"SET", b"k", b"v", b"PXAT", at(7).as_bytes(), b"XX", b"GET"],
    );
}

#[test]
fn set_keeps_the_last_of_repeated_expirations_as_redis_does() {
    // Redis accepts EX twice and uses the last value, never parsing the first.
    rewritten(
        &[b"SET", b"k", b"v", b"EX", b"abc", b"NX", b"EX", b"20"],
        &[b"SET", b"k", b"v", b"NX", b"PXAT", at(20_000).as_bytes()],
    );
    unchanged(&[b"SET", b"k", b"v", b"EX", b"20", b"EX", b"abc"]);
}

#[test]
fn set_options_compared_as_c_strings() {
    // Redis tests `opt[2] == '\0'`: an argument "EX\0junk" is EX to it.
    rewritten(
        &[b"SET", b"k", b"v", b"EX\0junk", b"3"],
        &[b"SET", b"k", b"v", b"PXAT", at(3_000).as_bytes()],
    );
    unchanged(&[b"SET", b"k", b"v", b"EXX", b"3"]);
    unchanged(&[b"SET", b"k", b"v", b"", b"3"]);
}

#[test]
fn set_left_untouched_where_the_master_refuses_it() {
    for bad in [
        &b"0"[..],
        b"-5",
        b"abc",
        b"01",
        b"+5",
        b" 5",
        b"5.0",
        b"",
        b"99999999999999999999",
    ] {
        unchanged(&[b"SET", b"k", b"v", b"EX", bad]);
        unchanged(&[b"SET", b"k", b"v", b"PX", bad]);
    }
    // Seconds that overflow once in milliseconds, and deadlines past i64::MAX.
    unchanged(&[b"SET", b"k", b"v", b"EX", b"9223372036854776"]);
    unchanged(&[b"SET", b"k", b"v", b"PX", b"9223372036854775807"]);
    // Incompatible options.
    unchanged(&[b"SET", b"k", b"v", b"KEEPTTL", b"EX", b"10"]);
    unchanged(&[b"SET", b"k", b"v", b"EX", b"10", b"KEEPTTL"]);
    unchanged(&[b"SET", b"k", b"v", b"EX", b"10", b"PX", b"10"]);
    unchanged(&[b"SET", b"k", b"v", b"EX", b"10", b"PXAT", b"10"]);
    unchanged(&[b"SET", b"k", b"v", b"EXAT", b"10", b"EX", b"10"]);
    unchanged(&[b"SET", b"k", b"v", b"NX", b"XX", b"EX", b"10"]);
    unchanged(&[b"SET", b"k", b"v", b"PERSIST", b"EX", b"10"]);
    unchanged(&[b"SET", b"k", b"v", b"EX"]);
    unchanged(&[b"SET", b"k", b"v", b"EX", b"10", b"BOGUS"]);
    // Absolute or no expiration.
    unchanged(&[b"SET", b"k", b"v"]);
    unchanged(&[b"SET", b"k", b"v", b"PXAT", b"10", b"NX"]);
    unchanged(&[b"SET", b"k", b"v", b"EXAT", b"10"]);
    unchanged(&[b"SET", b"k", b"v", b"KEEPTTL", b"GET"]);
}

#[test]
fn set_seconds_bounds() {
    // The largest number of seconds Redis accepts, with a clock at 0.
    let max = (i64::MAX / 1000).to_string();
    let prepared = prep_at(&[b"SET", b"k", b"v", b"EX", max.as_bytes()], 0);
    let expected = req(&[
        b"SET",
        b"k",
        b"v",
        b"PXAT",
        (i64::MAX / 1000 * 1000).to_string().as_bytes(),
    ]);
    assert_eq!(prepared.request, Some(expected));
    // The same with a real clock overflows: left to the master.
    unchanged(&[b"SET", b"k", b"v", b"EX", max.as_bytes()]);
}

#[test]
fn setex_and_psetex_become_set_pxat() {
    rewritten(
        &[b"SETEX", b"k", b"100", b"v"],
        &[b"SET", b"k", b"v", b"PXAT", at(100_000).as_bytes()],
    );
    rewritten(
        &[b"psetex", b"k", b"100", b"v"],
        &[b"SET", b"k", b"v", b"PXAT", at(100).as_bytes()],
    );
    for bad in [&b"0"[..], b"-1", b"x", b"9223372036854776"] {
        unchanged(&[b"SETEX", b"k", bad, b"v"]);
    }
    unchanged(&[b"PSETEX", b"k", b"9223372036854775807", b"v"]);
    // Missing arguments never reach `prepare` (arity), but must not panic.
    assert_eq!(
        prep_named("setex", &[b"SETEX", b"k", b"10"]),
        Prepared::unchanged(Effect::Same)
    );
}

#[test]
fn getex_relative_becomes_pxat() {
    rewritten(
        &[b"GETEX", b"k", b"EX", b"10"],
        &[b"GETEX", b"k", b"PXAT", at(10_000).as_bytes()],
    );
    rewritten(
        &[b"getex", b"k", b"px", b"10"],
        &[b"getex", b"k", b"PXAT", at(10).as_bytes()],
    );
    unchanged(&[b"GETEX", b"k"]);
    unchanged(&[b"GETEX", b"k", b"PERSIST"]);
    unchanged(&[b"GETEX", b"k", b"EXAT", b"10"]);
    unchanged(&[b"GETEX", b"k", b"PXAT", b"10"]);
    unchanged(&[b"GETEX", b"k", b"EX", b"0"]);
    unchanged(&[b"GETEX", b"k", b"EX", b"x"]);
    unchanged(&[b"GETEX", b"k", b"EX", b"10", b"PERSIST"]);
    unchanged(&[b"GETEX", b"k", b"PERSIST", b"EX", b"10"]);
    // SET's options are errors for GETEX.
    unchanged(&[b"GETEX", b"k", b"NX", b"EX", b"10"]);
    unchanged(&[b"GETEX", b"k", b"EX", b"10", b"GET"]);
    unchanged(&[b"GETEX", b"k", b"KEEPTTL"]);
}

#[test]
fn expire_and_pexpire_become_pexpireat() {
    rewritten(
        &[b"EXPIRE", b"k", b"100"],
        &[b"PEXPIREAT", b"k", at(100_000).as_bytes()],
    );
    rewritten(
        &[b"pexpire", b"k", b"100", b"gt"],
        &[b"PEXPIREAT", b"k", at(100).as_bytes(), b"gt"],
    );
    rewritten(
        &[b"EXPIRE", b"k", b"5", b"XX", b"LT"],
        &[b"PEXPIREAT", b"k", at(5_000).as_bytes(), b"XX", b"LT"],
    );
    // Zero and negative times are valid: the key is deleted, on every node alike.
    rewritten(
        &[b"EXPIRE", b"k", b"-1"],
        &[b"PEXPIREAT", b"k", at(-1_000).as_bytes()],
    );
    rewritten(
        &[b"PEXPIRE", b"k", b"0"],
        &[b"PEXPIREAT", b"k", at(0).as_bytes()],
    );
    rewritten(
        &[b"PEXPIRE", b"k", b"-9223372036854775808"],
        &[b"PEXPIREAT", b"k", (i64::MIN + NOW).to_string().as_bytes()],
    );
}

#[test]
fn expire_left_untouched_where_the_master_refuses_it() {
    unchanged(&[b"EXPIRE", b"k", b"abc"]);
    unchanged(&[b"EXPIRE", b"k", b"1.5"]);
    unchanged(&[b"EXPIRE", b"k", b"9223372036854776"]);
    unchanged(&[b"EXPIRE", b"k", b"-9223372036854776"]);
    unchanged(&[b"PEXPIRE", b"k", b"9223372036854775807"]);
    unchanged(&[b"EXPIRE", b"k", b"10", b"NX", b"XX"]);
    unchanged(&[b"EXPIRE", b"k", b"10", b"NX", b"GT"]);
    unchanged(&[b"EXPIRE", b"k", b"10", b"GT", b"LT"]);
    unchanged(&[b"EXPIRE", b"k", b"10", b"BOGUS"]);
    // Already absolute.
    unchanged(&[b"EXPIREAT", b"k", b"10"]);
    unchanged(&[b"PEXPIREAT", b"k", b"10", b"NX"]);
}

#[test]
fn restore_relative_ttl_becomes_absttl() {
    rewritten(
        &[b"RESTORE", b"k", b"5000", b"payload"],
        &[
            b"RESTORE",
            b"k",
            at(5_000).as_bytes(),
            b"payload",
            b"ABSTTL",
        ],
    );
    rewritten(
        &[b"RESTORE", b"k", b"1", b"p", b"REPLACE", b"IDLETIME", b"10"],
        &[
            b"RESTORE",
            b"k",
            at(1).as_bytes(),
            b"p",
            b"REPLACE",
            b"IDLETIME",
            b"10",
            b"ABSTTL",
        ],
    );
    rewritten(
        &[b"RESTORE", b"k", b"1", b"p", b"FREQ", b"255"],
        &[
            b"RESTORE",
            b"k",
            at(1).as_bytes(),
            b"p",
            b"FREQ",
            b"255",
            b"ABSTTL",
        ],
    );
    unchanged(&[b"RESTORE", b"k", b"0", b"p"]);
    unchanged(&[b"RESTORE", b"k", b"10", b"p", b"ABSTTL"]);
    unchanged(&[b"RESTORE", b"k", b"-1", b"p"]);
    unchanged(&[b"RESTORE", b"k", b"x", b"p"]);
    unchanged(&[b"RESTORE", b"k", b"9223372036854775807", b"p"]);
    unchanged(&[b"RESTORE", b"k", b"10", b"p", b"BOGUS"]);
    unchanged(&[b"RESTORE", b"k", b"10", b"p", b"IDLETIME", b"-1"]);
    unchanged(&[b"RESTORE", b"k", b"10", b"p", b"IDLETIME"]);
    unchanged(&[b"RESTORE", b"k", b"10", b"p", b"FREQ", b"256"]);
    unchanged(&[
        b"RESTORE",
        b"k",
        b"10",
        b"p",
        b"IDLETIME",
        b"1",
        b"FREQ",
        b"1",
    ]);
    unchanged(&[
        b"RESTORE",
        b"k",
        b"10",
        b"p",
        b"FREQ",
        b"1",
        b"IDLETIME",
        b"1",
    ]);
}

// ---------------------------------------------------------------------------------------
// Effects chosen at dispatch

#[test]
fn effects_of_commands() {
    effect_of(&[b"SPOP", b"s"], Effect::SpopToSrem);
    effect_of(&[b"SPOP", b"s", b"3"], Effect::SpopToSrem);
    effect_of(&[b"INCRBYFLOAT", b"k", b"1.5"], Effect::IncrByFloat);
    effect_of(
        &[b"BLPOP", b"a", b"b", b"0"],
        Effect::BlockingPop(Pop::List(ListEnd::Left)),
    );
    effect_of(
        &[b"BRPOP", b"a", b"0"],
        Effect::BlockingPop(Pop::List(ListEnd::Right)),
    );
    effect_of(
        &[b"BLMOVE", b"a", b"b", b"LEFT", b"RIGHT", b"0"],
        Effect::BlockingPop(Pop::Move),
    );
    effect_of(
        &[b"BRPOPLPUSH", b"a", b"b", b"0"],
        Effect::BlockingPop(Pop::RpopLpush),
    );
    effect_of(
        &[b"BZPOPMIN", b"z", b"0"],
        Effect::BlockingPop(Pop::Zset(ScoreEnd::Min)),
    );
    effect_of(
        &[b"BZPOPMAX", b"z", b"0"],
        Effect::BlockingPop(Pop::Zset(ScoreEnd::Max)),
    );
    // Mirrored as they are.
    for same in [
        &[&b"EVAL"[..], b"return 1", b"0"][..],
        &[b"EVALSHA", b"abc", b"0"],
        &[b"FCALL", b"f", b"0"],
        &[b"PFCOUNT", b"h"],
        &[b"SCRIPT", b"LOAD", b"return 1"],
        &[b"SCRIPT", b"FLUSH"],
        &[b"FUNCTION", b"DELETE", b"lib"],
        &[b"XGROUP", b"CREATE", b"x", b"g", b"$"],
        &[b"HINCRBYFLOAT", b"h", b"f", b"1.5"],
        &[b"DEL", b"k"],
        &[b"EXPIREAT", b"k", b"1"],
        &[b"XCLAIM", b"x", b"g", b"c", b"10", b"1-1"],
        &[b"FLUSHALL"],
    ] {
        effect_of(same, Effect::Same);
    }
    // Not mirrored.
    for skip in [
        &[&b"GET"[..], b"k"][..],
        &[b"PUBLISH", b"ch", b"m"],
        &[b"SPUBLISH", b"ch", b"m"],
        &[b"EVAL_RO", b"return 1", b"0"],
        &[b"CONFIG", b"SET", b"maxmemory", b"0"],
        &[b"MULTI"],
        &[b"EXEC"],
        &[b"TTL", b"k"],
        &[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"x", b"$"],
    ] {
        effect_of(skip, Effect::Skip);
    }
}

#[test]
fn multi_pops_read_their_end_or_are_refused() {
    let list = |end| Effect::BlockingPop(Pop::ListMany(end));
    let zset = |end| Effect::BlockingPop(Pop::ZsetMany(end));
    effect_of(&[b"BLMPOP", b"0", b"1", b"l", b"LEFT"], list(ListEnd::Left));
    effect_of(
        &[b"BLMPOP", b"0", b"2", b"a", b"b", b"right", b"COUNT", b"3"],
        list(ListEnd::Right),
    );
    effect_of(&[b"BZMPOP", b"0", b"1", b"z", b"min"], zset(ScoreEnd::Min));
    effect_of(
        &[b"BZMPOP", b"1.5", b"1", b"z", b"MAX", b"count", b"2"],
        zset(ScoreEnd::Max),
    );
    for refused in [
        &[&b"BLMPOP"[..], b"0", b"0", b"l", b"LEFT"][..],
        &[b"BLMPOP", b"0", b"-1", b"l", b"LEFT"],
        &[b"BLMPOP", b"0", b"x", b"l", b"LEFT"],
        &[b"BLMPOP", b"0", b"2", b"l", b"LEFT"],
        &[b"BLMPOP", b"0", b"9223372036854775807", b"l", b"LEFT"],
        &[b"BLMPOP", b"0", b"1", b"l", b"UP"],
        &[b"BLMPOP", b"0", b"1", b"l", b"LEFT", b"COUNT"],
        &[b"BLMPOP", b"0", b"1", b"l", b"LEFT", b"COUNT", b"0"],
        &[
            b"BLMPOP", b"0", b"1", b"l", b"LEFT", b"COUNT", b"1", b"COUNT", b"1",
        ],
        &[b"BLMPOP", b"0", b"1", b"l", b"LEFT", b"BOGUS"],
        &[b"BZMPOP", b"0", b"1", b"z", b"LEFT"],
    ] {
        effect_of(refused, Effect::Refused);
    }
}

#[test]
fn xadd_ids_chosen_by_the_master() {
    effect_of(
        &[b"XADD", b"x", b"*", b"f", b"v"],
        Effect::XaddId { id_index: 2 },
    );
    effect_of(
        &[b"XADD", b"x", b"5-*", b"f", b"v"],
        Effect::XaddId { id_index: 2 },
    );
    effect_of(
        &[b"XADD", b"x", b"MAXLEN", b"~", b"10", b"*", b"f", b"v"],
        Effect::XaddId { id_index: 5 },
    );
    effect_of(
        &[b"XADD", b"x", b"maxlen", b"10", b"*", b"f", b"v"],
        Effect::XaddId { id_index: 4 },
    );
    effect_of(
        &[
            b"XADD",
            b"x",
            b"NOMKSTREAM",
            b"MINID",
            b"=",
            b"0",
            b"LIMIT",
            b"5",
            b"123-*",
            b"f",
            b"v",
        ],
        Effect::XaddId { id_index: 8 },
    );
    effect_of(
        &[
            b"XADD", b"x", b"MAXLEN", b"~", b"10", b"LIMIT", b"100", b"*", b"f", b"v",
        ],
        Effect::XaddId { id_index: 7 },
    );
    // With two arguments after MAXLEN, "~" is the marker and "*" the (invalid) length: no ID.
    assert_eq!(
        xadd_id_index(&[&b"XADD"[..], b"x", b"MAXLEN", b"~", b"*"]),
        None
    );
    assert_eq!(
        xadd_id_index(&[&b"XADD"[..], b"x", b"MAXLEN", b"~", b"1", b"*"]),
        Some(5)
    );
    // Explicit IDs are deterministic.
    effect_of(&[b"XADD", b"x", b"1-1", b"f", b"v"], Effect::Same);
    effect_of(&[b"XADD", b"x", b"7", b"f", b"v"], Effect::Same);
    effect_of(
        &[b"XADD", b"x", b"MAXLEN", b"1", b"1-1", b"f", b"v"],
        Effect::Same,
    );
    // No ID at all: the master refuses it.
    assert_eq!(
        prep_named("xadd", &[b"XADD", b"x", b"NOMKSTREAM"]),
        Prepared::unchanged(Effect::Same)
    );
}

#[test]
fn xreadgroup_block_is_mirrored_without_blocking() {
    effect_of(
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c",
            b"BLOCK",
            b"0",
            b"STREAMS",
            b"x",
            b">",
        ],
        Effect::XreadgroupBlock,
    );
    effect_of(
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c",
            b"COUNT",
            b"2",
            b"STREAMS",
            b"x",
            b">",
        ],
        Effect::Same,
    );
    for refused in [
        &[&b"XREADGROUP"[..], b"BLOCK", b"0", b"STREAMS", b"x", b">"][..],
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c",
            b"STREAMS",
            b"x",
            b">",
            b"y",
        ],
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c",
            b"BOGUS",
            b"STREAMS",
            b"x",
            b">",
        ],
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c",
            b"BLOCK",
            b"0",
            b"x",
            b">",
        ],
    ] {
        assert_eq!(
            prep_named("xreadgroup", refused),
            Prepared::unchanged(Effect::Refused)
        );
    }
}

#[test]
fn exec_combines_the_queued_effects() {
    assert_eq!(
        prepare_exec(vec![Effect::Same, Effect::SpopToSrem]),
        Effect::Exec(vec![Effect::Same, Effect::SpopToSrem])
    );
}

// ---------------------------------------------------------------------------------------
// replica_request

#[test]
fn same_is_the_request_and_the_reply_without_copy() {
    let request = req(&[b"SET", b"k", b"v"]);
    let reply = Bytes::from_static(b"+OK\r\n");
    for protocol in [Resp2, Resp3] {
        let m = replica_request(&Effect::Same, &request, &reply, protocol)
            .unwrap()
            .unwrap();
        assert_eq!(m.request, request);
        assert_eq!(m.request.as_ptr(), request.as_ptr());
        assert_eq!(m.expect.as_ptr(), reply.as_ptr());
    }
    // An error is mirrored too: a script can have effects before it.
    let (r, e) = some(&Effect::Same, b"*1\r\n$4\r\nEVAL\r\n", b"-ERR x\r\n", Resp2);
    assert_eq!((r.as_str(), e.as_str()), ("*1 $4 EVAL ", "-ERR x "));
}

#[test]
fn skip_and_refused() {
    let request = req(&[b"GET", b"k"]);
    none(&Effect::Skip, &request, b"$1\r\nv\r\n", Resp2);
    none(&Effect::Refused, &request, b"-ERR syntax error\r\n", Resp2);
    none(&Effect::Refused, &request, b"!5\r\nERR x\r\n", Resp3);
    fails(&Effect::Refused, &request, b"*-1\r\n", Resp2);
    fails(&Effect::Refused, &request, b"+OK\r\n", Resp3);
}

#[test]
fn spop_becomes_srem_of_the_popped_members() {
    let e = Effect::SpopToSrem;
    let one = req(&[b"SPOP", b"s"]);
    let many = req(&[b"SPOP", b"s", b"3"]);
    for protocol in [Resp2, Resp3] {
        assert_eq!(
            some(&e, &one, b"$1\r\na\r\n", protocol),
            (show(&req(&[b"SREM", b"s", b"a"])), ":1 ".into())
        );
    }
    assert_eq!(
        some(&e, &many, b"*3\r\n$1\r\na\r\n$2\r\nbb\r\n$0\r\n\r\n", Resp2),
        (show(&req(&[b"SREM", b"s", b"a", b"bb", b""])), ":3 ".into())
    );
    assert_eq!(
        some(&e, &many, b"~2\r\n$1\r\na\r\n$1\r\nb\r\n", Resp3),
        (show(&req(&[b"SREM", b"s", b"a", b"b"])), ":2 ".into())
    );
    // Nothing popped.
    none(&e, &one, b"$-1\r\n", Resp2);
    none(&e, &one, b"_\r\n", Resp3);
    none(&e, &many, b"*0\r\n", Resp2);
    none(&e, &many, b"~0\r\n", Resp3);
    none(&e, &many, b"-WRONGTYPE x\r\n", Resp2);
    none(
        &e,
        &many,
        b"-ERR value is out of range, must be positive\r\n",
        Resp3,
    );
    // Not what Redis answers.
    fails(&e, &one, b":1\r\n", Resp2);
    fails(&e, &one, b"_\r\n", Resp2);
    fails(&e, &one, b"$-1\r\n", Resp3);
    fails(&e, &many, b"*2\r\n$1\r\na\r\n:1\r\n", Resp2);
    fails(&e, &many, b"*2\r\n$1\r\na\r\n", Resp2);
    fails(&e, &one, b"$3\r\na\r\n", Resp2);
    fails(&e, b"*1\r\n$4\r\nSPOP\r\n", b"$1\r\na\r\n", Resp2);
}

#[test]
fn blpop_and_brpop_become_lpop_and_rpop() {
    let left = Effect::BlockingPop(Pop::List(ListEnd::Left));
    let right = Effect::BlockingPop(Pop::List(ListEnd::Right));
    let request = req(&[b"BLPOP", b"a", b"b", b"0"]);
    let reply = b"*2\r\n$1\r\nb\r\n$3\r\nval\r\n";
    for protocol in [Resp2, Resp3] {
        assert_eq!(
            some(&left, &request, reply, protocol),
            (show(&req(&[b"LPOP", b"b"])), "$3 val ".into())
        );
        assert_eq!(
            some(&right, &request, reply, protocol),
            (show(&req(&[b"RPOP", b"b"])), "$3 val ".into())
        );
    }
    none(&left, &request, b"*-1\r\n", Resp2);
    none(&left, &request, b"_\r\n", Resp3);
    none(&left, &request, b"-WRONGTYPE x\r\n", Resp2);
    fails(
        &left,
        &request,
        b"*3\r\n$1\r\nb\r\n$1\r\nv\r\n$1\r\nv\r\n",
        Resp2,
    );
    fails(&left, &request, b"*2\r\n:1\r\n$1\r\nv\r\n", Resp2);
    fails(&left, &request, b"*2\r\n$1\r\nb\r\n:1\r\n", Resp2);
    fails(&left, &request, b"$1\r\nv\r\n", Resp2);
}

#[test]
fn blmove_and_brpoplpush_lose_their_timeout() {
    let blmove = Effect::BlockingPop(Pop::Move);
    let request = req(&[b"BLMOVE", b"a", b"b", b"LEFT", b"right", b"1.5"]);
    for protocol in [Resp2, Resp3] {
        assert_eq!(
            some(&blmove, &request, b"$1\r\nv\r\n", protocol),
            (
                show(&req(&[b"LMOVE", b"a", b"b", b"LEFT", b"right"])),
                "$1 v ".into()
            )
        );
    }
    let brpoplpush = Effect::BlockingPop(Pop::RpopLpush);
    let request = req(&[b"BRPOPLPUSH", b"a", b"b", b"0"]);
    assert_eq!(
        some(&brpoplpush, &request, b"$1\r\nv\r\n", Resp2),
        (show(&req(&[b"RPOPLPUSH", b"a", b"b"])), "$1 v ".into())
    );
    // Timed out (a null array in RESP2), or empty inside MULTI (a null bulk).
    none(&brpoplpush, &request, b"*-1\r\n", Resp2);
    none(&brpoplpush, &request, b"$-1\r\n", Resp2);
    none(&brpoplpush, &request, b"_\r\n", Resp3);
    fails(&brpoplpush, &request, b":1\r\n", Resp2);
    // The arguments do not match the effect.
    fails(&blmove, &request, b"$1\r\nv\r\n", Resp2);
}

#[test]
fn blmpop_becomes_lmpop_of_what_was_popped() {
    let e = Effect::BlockingPop(Pop::ListMany(ListEnd::Right));
    let request = req(&[b"BLMPOP", b"0", b"2", b"a", b"b", b"RIGHT", b"COUNT", b"5"]);
    let reply = b"*2\r\n$1\r\nb\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n";
    for protocol in [Resp2, Resp3] {
        assert_eq!(
            some(&e, &request, reply, protocol),
            (
                show(&req(&[b"LMPOP", b"1", b"b", b"RIGHT", b"COUNT", b"2"])),
                show(reply)
            )
        );
    }
    none(&e, &request, b"*-1\r\n", Resp2);
    none(&e, &request, b"_\r\n", Resp3);
    fails(&e, &request, b"*2\r\n$1\r\nb\r\n*0\r\n", Resp2);
    fails(&e, &request, b"*2\r\n$1\r\nb\r\n$1\r\nx\r\n", Resp2);
}

#[test]
fn bzpopmin_becomes_zpopmin_with_the_protocols_score() {
    let min = Effect::BlockingPop(Pop::Zset(ScoreEnd::Min));
    let max = Effect::BlockingPop(Pop::Zset(ScoreEnd::Max));
    let request = req(&[b"BZPOPMIN", b"z", b"0"]);
    assert_eq!(
        some(
            &min,
            &request,
            b"*3\r\n$1\r\nz\r\n$1\r\nm\r\n$3\r\n1.5\r\n",
            Resp2
        ),
        (show(&req(&[b"ZPOPMIN", b"z"])), "*2 $1 m $3 1.5 ".into())
    );
    assert_eq!(
        some(
            &max,
            &request,
            b"*3\r\n$1\r\nz\r\n$1\r\nm\r\n,1.5\r\n",
            Resp3
        ),
        (show(&req(&[b"ZPOPMAX", b"z"])), "*2 $1 m ,1.5 ".into())
    );
    none(&min, &request, b"*-1\r\n", Resp2);
    none(&min, &request, b"_\r\n", Resp3);
    fails(&min, &request, b"*2\r\n$1\r\nm\r\n,1.5\r\n", Resp3);
}

#[test]
fn bzmpop_becomes_zmpop_of_what_was_popped() {
    let e = Effect::BlockingPop(Pop::ZsetMany(ScoreEnd::Max));
    let request = req(&[b"BZMPOP", b"0", b"1", b"z", b"MAX", b"COUNT", b"10"]);
    let resp2 = b"*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nm\r\n$1\r\n2\r\n";
    let resp3 = b"*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nm\r\n,2\r\n";
    let zmpop = show(&req(&[b"ZMPOP", b"1", b"z", b"MAX", b"COUNT", b"1"]));
    assert_eq!(
        some(&e, &request, resp2, Resp2),
        (zmpop.clone(), show(resp2))
    );
    assert_eq!(some(&e, &request, resp3, Resp3), (zmpop, show(resp3)));
    let min = Effect::BlockingPop(Pop::ZsetMany(ScoreEnd::Min));
    assert!(some(&min, &request, resp2, Resp2).0.contains("MIN"));
    none(&e, &request, b"*-1\r\n", Resp2);
}

#[test]
fn xadd_gets_the_masters_id() {
    let e = Effect::XaddId { id_index: 5 };
    let request = req(&[b"XADD", b"x", b"MAXLEN", b"~", b"10", b"*", b"f", b"v"]);
    let reply = b"$15\r\n1700000000000-3\r\n";
    for protocol in [Resp2, Resp3] {
        assert_eq!(
            some(&e, &request, reply, protocol),
            (
                show(&req(&[
                    b"XADD",
                    b"x",
                    b"MAXLEN",
                    b"~",
                    b"10",
                    b"1700000000000-3",
                    b"f",
                    b"v"
                ])),
                show(reply)
            )
        );
    }
    // NOMKSTREAM on a missing stream.
    none(&e, &request, b"$-1\r\n", Resp2);
    none(&e, &request, b"_\r\n", Resp3);
    // An error is mirrored as it is (the stream may have been created before it).
    let error = b"-ERR Elements are too large to be stored\r\n";
    assert_eq!(
        some(&e, &request, error, Resp2),
        (show(&request), show(error))
    );
    fails(&e, &request, b":1\r\n", Resp2);
    fails(&Effect::XaddId { id_index: 8 }, &request, reply, Resp2);
}

#[test]
fn incrbyfloat_becomes_set_keepttl() {
    let e = Effect::IncrByFloat;
    let request = req(&[b"INCRBYFLOAT", b"k", b"0.1"]);
    for protocol in [Resp2, Resp3] {
        assert_eq!(
            some(&e, &request, b"$4\r\n10.6\r\n", protocol),
            (
                show(&req(&[b"SET", b"k", b"10.6", b"KEEPTTL"])),
                "+OK ".into()
            )
        );
    }
    none(&e, &request, b"-ERR value is not a valid float\r\n", Resp2);
    fails(&e, &request, b"$-1\r\n", Resp2);
    fails(&e, &request, b"_\r\n", Resp3);
    fails(&e, &request, b"+OK\r\n", Resp2);
}

#[test]
fn xreadgroup_block_reads_exactly_what_was_delivered() {
    let e = Effect::XreadgroupBlock;
    let request = req(&[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"c",
        b"BLOCK",
        b"100",
        b"NOACK",
        b"STREAMS",
        b"x",
        b"y",
        b">",
        b"0",
    ]);
    let entry = "*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n";
    let x = format!("*2\r\n$1\r\nx\r\n*2\r\n{entry}{entry}");
    let y = "*2\r\n$1\r\ny\r\n*0\r\n".to_string();
    let resp2 = format!("*2\r\n{x}{y}");
    let read = |key: &[u8], count: &[u8], id: &[u8]| {
        req(&[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c",
            b"COUNT",
            count,
            b"NOACK",
            b"STREAMS",
            key,
            id,
        ])
    };
    let both = [read(b"x", b"2", b">"), read(b"y", b"0", b"0")].concat();
    assert_eq!(
        some(&e, &request, resp2.as_bytes(), Resp2),
        (show(&both), show(format!("*1\r\n{x}*1\r\n{y}").as_bytes()))
    );
    let resp3 = format!("%1\r\n$1\r\nx\r\n*1\r\n{entry}");
    assert_eq!(
        some(&e, &request, resp3.as_bytes(), Resp3),
        (show(&read(b"x", b"1", b">")), show(resp3.as_bytes()))
    );
    // Timed out, or refused: nothing delivered, nothing created.
    none(&e, &request, b"*-1\r\n", Resp2);
    none(&e, &request, b"_\r\n", Resp3);
    none(&e, &request, b"-NOGROUP x\r\n", Resp2);
    // A stream not asked for, or not the shape of XREADGROUP's reply.
    let other = format!("*1\r\n*2\r\n$1\r\nz\r\n*1\r\n{entry}");
    fails(&e, &request, other.as_bytes(), Resp2);
    fails(&e, &request, b"*0\r\n", Resp2);
    fails(&e, &request, b"*1\r\n$1\r\nx\r\n", Resp2);
    fails(&e, &request, b"%1\r\n$1\r\nx\r\n$1\r\nv\r\n", Resp3);
}

// ---------------------------------------------------------------------------------------
// EXEC

/// A transaction as sent to the master.
fn transaction(queued: &[&[&[u8]]]) -> Bytes {
    let mut out = req(&[b"MULTI"]).to_vec();
    for q in queued {
        out.extend_from_slice(&req(q));
    }
    out.extend_from_slice(&req(&[b"EXEC"]));
    Bytes::from(out)
}

#[test]
fn exec_of_same_effects_is_the_transaction_itself() {
    let e = prepare_exec(vec![Effect::Same, Effect::Same]);
    let request = transaction(&[&[b"SET", b"a", b"1"], &[b"INCR", b"a"]]);
    let exec_reply = Bytes::from_static(b"*2\r\n+OK\r\n:2\r\n");
    let expect = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n";
    for protocol in [Resp2, Resp3] {
        let m = replica_request(&e, &request, &exec_reply, protocol)
            .unwrap()
            .unwrap();
        assert_eq!(m.request.as_ptr(), request.as_ptr());
        assert_eq!(m.request, request);
        assert_eq!(&m.expect[..], expect);
    }
    // All the replies instead of EXEC's alone.
    let all = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n";
    assert_eq!(
        some(&e, &request, all, Resp2),
        (show(&request), show(expect))
    );
}

#[test]
fn exec_that_did_not_run_mirrors_nothing() {
    let e = prepare_exec(vec![Effect::Same]);
    let request = transaction(&[&[b"SET", b"a", b"1"]]);
    none(&e, &request, b"*-1\r\n", Resp2);
    none(&e, &request, b"_\r\n", Resp3);
    none(
        &e,
        &request,
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        Resp2,
    );
    none(
        &e,
        &request,
        b"+OK\r\n-ERR wrong number\r\n-EXECABORT x\r\n",
        Resp3,
    );
    // An empty transaction changes nothing.
    none(&prepare_exec(vec![]), &transaction(&[]), b"*0\r\n", Resp2);
}

#[test]
fn exec_with_effects_needing_the_reply() {
    let e = prepare_exec(vec![
        Effect::Same,
        Effect::Skip,
        Effect::SpopToSrem,
        Effect::SpopToSrem,
        Effect::XaddId { id_index: 2 },
        Effect::IncrByFloat,
    ]);
    let request = transaction(&[
        &[b"SET", b"a", b"1"],
        &[b"GET", b"a"],
        &[b"SPOP", b"s"],
        &[b"SPOP", b"missing"],
        &[b"XADD", b"x", b"*", b"f", b"v"],
        &[b"INCRBYFLOAT", b"n", b"1.5"],
    ]);
    let exec_reply = b"*6\r\n+OK\r\n$1\r\n1\r\n$1\r\nm\r\n$-1\r\n$3\r\n5-0\r\n$3\r\n2.5\r\n";
    let expected_request = [
        req(&[b"MULTI"]),
        req(&[b"SET", b"a", b"1"]),
        req(&[b"SREM", b"s", b"m"]),
        req(&[b"XADD", b"x", b"5-0", b"f", b"v"]),
        req(&[b"SET", b"n", b"2.5", b"KEEPTTL"]),
        req(&[b"EXEC"]),
    ]
    .concat();
    let expect = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
                   *4\r\n+OK\r\n:1\r\n$3\r\n5-0\r\n+OK\r\n";
    assert_eq!(
        some(&e, &request, exec_reply, Resp2),
        (show(&expected_request), show(expect))
    );
    // A queued write that failed at EXEC is mirrored with its error; a refused SPOP is not.
    let e = prepare_exec(vec![Effect::Same, Effect::SpopToSrem]);
    let request = transaction(&[&[b"INCR", b"a"], &[b"SPOP", b"a"]]);
    let exec_reply = b"*2\r\n-ERR not an integer\r\n-WRONGTYPE x\r\n";
    assert_eq!(
        some(&e, &request, exec_reply, Resp3),
        (
            show(&[req(&[b"MULTI"]), req(&[b"INCR", b"a"]), req(&[b"EXEC"])].concat()),
            show(b"+OK\r\n+QUEUED\r\n*1\r\n-ERR not an integer\r\n")
        )
    );
    // Only reads: nothing to mirror.
    let e = prepare_exec(vec![Effect::Skip]);
    none(
        &e,
        &transaction(&[&[b"GET", b"a"]]),
        b"*1\r\n$-1\r\n",
        Resp2,
    );
}

#[test]
fn exec_with_a_multi_request_effect_counts_its_requests() {
    let e = prepare_exec(vec![Effect::XreadgroupBlock, Effect::Same]);
    let request = transaction(&[
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c",
            b"BLOCK",
            b"0",
            b"STREAMS",
            b"x",
            b"y",
            b">",
            b">",
        ],
        &[b"DEL", b"k"],
    ]);
    let x = "*2\r\n$1\r\nx\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*0\r\n";
    let y = "*2\r\n$1\r\ny\r\n*1\r\n*2\r\n$3\r\n2-1\r\n*0\r\n";
    let exec_reply = format!("*2\r\n*2\r\n{x}{y}:0\r\n");
    let (_, expect) = some(&e, &request, exec_reply.as_bytes(), Resp2);
    assert_eq!(
        expect,
        show(
            format!("+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n*1\r\n{x}*1\r\n{y}:0\r\n")
                .as_bytes()
        )
    );
}

#[test]
fn exec_refuses_what_it_cannot_read() {
    let e = prepare_exec(vec![Effect::Same]);
    let request = transaction(&[&[b"SET", b"a", b"1"]]);
    // Not MULTI .. EXEC, or not one request per effect.
    fails(&e, &req(&[b"SET", b"a", b"1"]), b"*1\r\n+OK\r\n", Resp2);
    fails(&e, &transaction(&[]), b"*1\r\n+OK\r\n", Resp2);
    let swapped = [
        req(&[b"EXEC"]),
        req(&[b"SET", b"a", b"1"]),
        req(&[b"MULTI"]),
    ]
    .concat();
    fails(&e, &swapped, b"*1\r\n+OK\r\n", Resp2);
    fails(&e, &request[..request.len() - 1], b"*1\r\n+OK\r\n", Resp2);
    fails(&e, b"", b"*1\r\n+OK\r\n", Resp2);
    // Not one result per queued request, or not an array.
    fails(&e, &request, b"*2\r\n+OK\r\n+OK\r\n", Resp2);
    fails(&e, &request, b"+OK\r\n", Resp2);
    fails(&e, &request, b"+OK\r\n+QUEUED\r\n", Resp2);
    fails(&e, &request, b"*1\r\n+OK", Resp2);
    fails(&e, &request, b"", Resp2);
    // A transaction inside a transaction.
    let nested = prepare_exec(vec![prepare_exec(vec![Effect::Same]), Effect::SpopToSrem]);
    let request = transaction(&[&[b"EXEC"], &[b"SPOP", b"s"]]);
    fails(&nested, &request, b"*2\r\n*0\r\n$1\r\nm\r\n", Resp2);
}

#[test]
fn requests_that_are_not_one_request_are_refused() {
    let e = Effect::SpopToSrem;
    let two = [req(&[b"SPOP", b"s"]), req(&[b"SPOP", b"s"])].concat();
    fails(&e, &two, b"$1\r\na\r\n", Resp2);
    fails(&e, b"*2\r\n$4\r\nSPOP\r\n", b"$1\r\na\r\n", Resp2);
    fails(&e, b"*0\r\n", b"$1\r\na\r\n", Resp2);
    // An inline request is one request.
    assert_eq!(
        some(&e, b"SPOP s\r\n", b"$1\r\na\r\n", Resp2),
        (show(&req(&[b"SREM", b"s", b"a"])), ":1 ".into())
    );
}

// ---------------------------------------------------------------------------------------
// Helpers and robustness

#[test]
fn reply_helpers() {
    assert_eq!(bulk(b"$0\r\n\r\n"), Some(&b""[..]));
    assert_eq!(bulk(b"$2\r\na\r\n\r\n"), None);
    assert_eq!(bulk(b"$3\r\na\r\n\r\n"), Some(&b"a\r\n"[..]));
    assert_eq!(bulk(b"$1\r\nab\r\n"), None);
    assert_eq!(bulk(b"$-1\r\n"), None);
    assert_eq!(bulk(b"$1\rxa\r\n"), None);
    assert_eq!(bulk(b"+a\r\n"), None);
    assert_eq!(
        elements(b"%1\r\n$1\r\nk\r\n:1\r\n", b"%"),
        Some((b'%', vec![4..11, 11..15]))
    );
    assert_eq!(elements(b"*1\r\n:1\r\n:2\r\n", b"*"), None);
    assert_eq!(elements(b"*9999999\r\n:1\r\n", b"*"), None);
    assert_eq!(elements(b"*-1\r\n", b"*"), None);
    assert_eq!(elements(b"~0\r\n", b"*"), None);
    assert_eq!(c_str(b"ab\0cd"), b"ab");
}

/// Names whose preparation parses arguments, plus a plain write and a read.
const NAMES: &[&str] = &[
    "set",
    "setex",
    "psetex",
    "getex",
    "expire",
    "pexpire",
    "restore",
    "spop",
    "blpop",
    "blmove",
    "brpoplpush",
    "blmpop",
    "bzmpop",
    "bzpopmin",
    "xadd",
    "xreadgroup",
    "incrbyfloat",
    "del",
    "get",
];

/// Arguments made mostly of the words the parsers look for.
fn arb_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let word = prop_oneof![
        prop::sample::select(vec![
            "EX",
            "PX",
            "EXAT",
            "PXAT",
            "NX",
            "XX",
            "GT",
            "LT",
            "GET",
            "KEEPTTL",
            "PERSIST",
            "ABSTTL",
            "IDLETIME",
            "FREQ",
            "REPLACE",
            "COUNT",
            "LEFT",
            "right",
            "MIN",
            "max",
            "MAXLEN",
            "MINID",
            "~",
            "=",
            "LIMIT",
            "NOMKSTREAM",
            "*",
            "5-*",
            "BLOCK",
            "GROUP",
            "NOACK",
            "STREAMS",
            ">",
            "0",
            "1",
            "-1",
            "10",
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999999999999",
            "",
        ])
        .prop_map(|w| w.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(word, 1..10)
}

/// Replies made of well-formed pieces and arbitrary bytes.
fn arb_reply() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "*2\r\n",
            "*3\r\n",
            "*1\r\n",
            "*0\r\n",
            "*-1\r\n",
            "~1\r\n",
            "%1\r\n",
            "$1\r\na\r\n",
            "$3\r\n1-1\r\n",
            "$-1\r\n",
            "_\r\n",
            ":1\r\n",
            ",1.5\r\n",
            "+OK\r\n",
            "-ERR\r\n",
            "*9999\r\n",
        ])
        .prop_map(|p| p.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

fn arb_effect() -> impl Strategy<Value = Effect> {
    let leaf = prop_oneof![
        Just(Effect::Skip),
        Just(Effect::Same),
        Just(Effect::Refused),
        Just(Effect::SpopToSrem),
        Just(Effect::BlockingPop(Pop::List(ListEnd::Left))),
        Just(Effect::BlockingPop(Pop::Move)),
        Just(Effect::BlockingPop(Pop::RpopLpush)),
        Just(Effect::BlockingPop(Pop::ListMany(ListEnd::Right))),
        Just(Effect::BlockingPop(Pop::Zset(ScoreEnd::Min))),
        Just(Effect::BlockingPop(Pop::ZsetMany(ScoreEnd::Max))),
        (0usize..6).prop_map(|id_index| Effect::XaddId { id_index }),
        Just(Effect::XreadgroupBlock),
        Just(Effect::IncrByFloat),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Effect::Exec)
    })
}

proptest! {
    #[test]
    fn prepare_never_panics_and_rewrites_into_one_request(
        name in prop::sample::select(NAMES),
        mut args in arb_args(),
        now in prop_oneof![Just(NOW), any::<i64>()],
    ) {
        args.insert(0, name.as_bytes().to_vec());
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let prepared = with_args(&args, |a| prepare(spec_named(name), a, now));
        if let Some(rewritten) = prepared.request {
            let mut scanner = RequestScanner::default();
            let frame = scanner.scan(&rewritten).unwrap().unwrap();
            prop_assert_eq!(frame.len, rewritten.len());
        }
    }

    #[test]
    fn replica_request_never_panics(
        effect in arb_effect(),
        args in arb_args(),
        queued in prop::collection::vec(arb_args(), 0..3),
        reply in arb_reply(),
        resp3 in any::<bool>(),
        exec in any::<bool>(),
    ) {
        let protocol = if resp3 { Resp3 } else { Resp2 };
        let request = if exec {
            let queued: Vec<Vec<&[u8]>> =
                queued.iter().map(|q| q.iter().map(Vec::as_slice).collect()).collect();
            let queued: Vec<&[&[u8]]> = queued.iter().map(Vec::as_slice).collect();
            transaction(&queued)
        } else {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            req(&args)
        };
        let reply = Bytes::from(reply);
        let _ = replica_request(&effect, &request, &reply, protocol);
    }
}
