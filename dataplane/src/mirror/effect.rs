//! What each replica receives for one write, so that it ends up with the master's data.
//!
//! The proxy is the replication channel (DESIGN.md §4): after the master answered a write,
//! each replica gets the write's *effect*, in the master's order, and must answer exactly the
//! bytes given as [`Mirrored::expect`]; any other answer makes it `Stale`. This module is the
//! pure, synchronous part of it, in two steps:
//!
//! 1. [`prepare`], at dispatch while the arguments are borrowed: whether the request sent to
//!    the master is rewritten ([`Prepared::request`]) and which [`Effect`] the replicas get.
//! 2. [`replica_request`], once the master answered: the replica's request and expected reply,
//!    built from the request sent to the master and the master's reply.
//!
//! # What is rewritten, and why
//!
//! Mostly what Redis 7.0 itself rewrites when it propagates a command to its replicas:
//!
//! | Client's command | Master gets | Replica gets | Expected |
//! |---|---|---|---|
//! | `SET k v EX s` / `PX ms` (other options kept) | `SET k v PXAT abs` | the same | master's |
//! | `SETEX k s v` / `PSETEX k ms v` | `SET k v PXAT abs` | the same | master's |
//! | `GETEX k EX s` / `PX ms` | `GETEX k PXAT abs` | the same | master's |
//! | `EXPIRE k s [flag]` / `PEXPIRE k ms [flag]` | `PEXPIREAT k abs [flag]` | the same | master's |
//! | `RESTORE k ttl p [opts]` (ttl > 0) | `RESTORE k abs p [opts] ABSTTL` | the same | master's |
//! | `SPOP k [n]` | as sent | `SREM k <popped>` | `:<popped>` |
//! | `BLPOP`/`BRPOP` | as sent | `LPOP`/`RPOP <key served>` | the element |
//! | `BLMOVE`/`BRPOPLPUSH` | as sent | `LMOVE`/`RPOPLPUSH`, no timeout | master's |
//! | `BLMPOP` | as sent | `LMPOP 1 <key> LEFT\|RIGHT COUNT <popped>` | master's |
//! | `BZPOPMIN`/`BZPOPMAX` | as sent | `ZPOPMIN`/`ZPOPMAX <key>` | `[member, score]` |
//! | `BZMPOP` | as sent | `ZMPOP 1 <key> MIN\|MAX COUNT <popped>` | master's |
//! | `XREADGROUP .. BLOCK` | as sent | one `XREADGROUP` without BLOCK per stream served, `COUNT <delivered>` | that stream's part |
//! | `XADD k .. *` / `ms-*` | as sent | the ID the master chose instead of `*` | master's |
//! | `INCRBYFLOAT k n` | as sent | `SET k <result> KEEPTTL` | `+OK` |
//! | `EXEC` | as sent | `MULTI`, the queued writes' effects, `EXEC` | see [`Effect::Exec`] |
//!
//! Absolute times (`abs`, unix milliseconds) are computed once from the proxy's clock and sent
//! identically to master and replicas. A relative time is rewritten only when the master
//! would accept the original (a positive integer for `SET`/`GETEX`, no overflow, options
//! compatible, judged exactly as Redis 7.0's parsers do, `strcasecmp` NUL quirks included);
//! otherwise the request goes untouched so that the master answers with its own error text,
//! and the replica gets the same request and must give the same error.
//!
//! Every other command with the `write` flag is mirrored as it was sent ([`Effect::Same`]),
//! errors included (a script can have effects before its error); so are the scripts and
//! functions (`EVAL`, `EVALSHA`, `FCALL`), `SCRIPT LOAD`/`FLUSH` (so that `EVALSHA` works on
//! the replicas) and `PFCOUNT` (which may rewrite the HyperLogLog's cached cardinality).
//! `PUBLISH`/`SPUBLISH` and every other command are not mirrored ([`Effect::Skip`]).
//!
//! # What cannot be made deterministic
//!
//! The replies are compared byte for byte, so most divergence is caught at once and the
//! replica becomes `Stale`. What follows can diverge *without* a differing reply, or differ
//! from the master only in state the replies do not show:
//!
//! - **Clocks.** Absolute expiry instants are judged by each node's own clock. A key whose
//!   instant has passed on one node but not on another (a TTL shorter than the skew, or a
//!   write racing the expiry instant) is deleted or seen as missing by one node only: the
//!   replies then usually differ (`Stale`); `SET`/`GETEX` with a time already past on the
//!   master but not on a replica leave the key to expire there moments later. Keep clocks
//!   synchronised (NTP); TTLs seen by clients are relative to the proxy's clock.
//! - **Scripts and functions** (`EVAL`, `EVALSHA`, `FCALL`) are mirrored verbatim and rerun
//!   on each replica: they must write deterministically, as Redis before 5.0 required. Writes
//!   that depend on `TIME`, `RANDOMKEY`, `SRANDMEMBER`, `HRANDFIELD`, `ZRANDMEMBER`, `SPOP`,
//!   `XADD *`, `SCAN` or the order of `SMEMBERS`/`HGETALL`/`KEYS`, or relative expirations
//!   (`EXPIRE`, `SET .. EX`: each node adds its own clock) diverge; only the script's reply
//!   is compared.
//! - **Consumer-group times.** `XREADGROUP`, `XCLAIM`, `XAUTOCLAIM` and `XGROUP
//!   CREATECONSUMER` stamp delivery and seen times with each node's clock (`XPENDING` and
//!   `XINFO` idle times differ by the mirroring delay). `XCLAIM`/`XAUTOCLAIM` select entries by
//!   `min-idle-time` against those times and each node's clock, and `IDLE`/`TIME` set them, so
//!   near the threshold the nodes can claim different entries (the replies then differ).
//! - **Approximate trimming** (`XADD`/`XTRIM` with `MAXLEN ~` or `MINID ~`) is mirrored verbatim:
//!   it removes whole stream nodes, which is deterministic only between nodes with the same
//!   `stream-node-max-entries` and `stream-node-max-bytes` and the same node layout (the same
//!   history of writes, or a full sync, which copies the layout).
//! - **Floating point.** `HINCRBYFLOAT` (and `INCRBYFLOAT` inside scripts) is mirrored verbatim:
//!   the `long double` result and its formatting are the same on identical `redis-server`
//!   builds and platforms only. `INCRBYFLOAT` itself becomes a `SET` of the master's result.
//! - **Object metadata and encodings.** LRU/LFU data (`RESTORE .. IDLETIME|FREQ`, access times)
//!   and encodings can differ: `SPOP` of most of a set rebuilds the set on the master, whose
//!   encoding may then differ from the replica's after `SREM`; `INCRBYFLOAT`'s `SET` stores an
//!   integer-looking result as an integer. Data, digests and replies are the same.
//! - **Server configuration.** Backends must not evict (`maxmemory-policy noeviction`) and must
//!   share encoding and stream settings.
//! - **Reads inside `MULTI`** are left out of the replica's transaction: their replies may
//!   legitimately differ (`TTL`, `RANDOMKEY`, `TIME`), and they change nothing.
//! - **Routing.** `MIGRATE`, `MOVE`, `SWAPDB` and `DEBUG` are writes mirrored verbatim here; the
//!   proxy never sends them to a backend (`Route::Forbidden`), and they must stay so.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use redshard_protocol::command::{self, ArgList, CommandId, CommandSpec};
use redshard_protocol::resp::reply::is_error;
use redshard_protocol::resp::{
    encode, parse_i64, Args, FrameKind, Protocol, ReplyScanner, RequestScanner,
};

/// What the proxy does with a write before sending it, decided at dispatch while the
/// arguments are borrowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The request to send to the master instead of the client's bytes (relative expirations
    /// turned absolute), or `None` to send the original bytes.
    pub request: Option<Bytes>,
    /// How the replicas get the write once the master answered.
    pub effect: Effect,
}

impl Prepared {
    /// The original request, with `effect`.
    fn unchanged(effect: Effect) -> Self {
        Self {
            request: None,
            effect,
        }
    }

    /// `request` instead of the original, mirrored as it is.
    fn rewritten(request: Bytes) -> Self {
        Self {
            request: Some(request),
            effect: Effect::Same,
        }
    }
}

/// How the replicas get one write (see the module documentation for each command).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Not a write: nothing is mirrored.
    Skip,
    /// The replica gets the request sent to the master and must answer the master's reply,
    /// byte for byte (errors included).
    Same,
    /// The arguments are invalid (Redis 7.0 refuses them before changing anything): the
    /// master must answer an error, and nothing is mirrored. Used for the blocking commands,
    /// which must never reach a replica as they are.
    Refused,
    /// `SPOP key [count]`: the replica gets `SREM key <the popped members>`.
    SpopToSrem,
    /// A blocking pop served by the master: the replica gets its non-blocking form for the
    /// key and the number of elements the master popped.
    BlockingPop(Pop),
    /// `XADD` whose ID the master chooses (`*`, `<ms>-*`): the argument at `id_index` is
    /// replaced by the ID the master returned.
    XaddId {
        /// Index of the ID argument (the command name is 0).
        id_index: usize,
    },
    /// `XREADGROUP .. BLOCK ..`: the replica gets, for each stream the master served, a
    /// non-blocking `XREADGROUP` reading exactly as many entries as the master delivered.
    XreadgroupBlock,
    /// `INCRBYFLOAT key n`: the replica gets `SET key <master's result> KEEPTTL`.
    IncrByFloat,
    /// `EXEC`: the effects of the queued requests, in order ([`prepare_exec`]).
    Exec(Vec<Effect>),
}

/// Which blocking pop was served, for [`Effect::BlockingPop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pop {
    /// `BLPOP`/`BRPOP` (reply `[key, element]`): `LPOP`/`RPOP key`.
    List(ListEnd),
    /// `BLMOVE src dst from to timeout`: `LMOVE src dst from to`.
    Move,
    /// `BRPOPLPUSH src dst timeout`: `RPOPLPUSH src dst`.
    RpopLpush,
    /// `BLMPOP` (reply `[key, [elements]]`): `LMPOP 1 key LEFT|RIGHT COUNT <popped>`.
    ListMany(ListEnd),
    /// `BZPOPMIN`/`BZPOPMAX` (reply `[key, member, score]`): `ZPOPMIN`/`ZPOPMAX key`.
    Zset(ScoreEnd),
    /// `BZMPOP` (reply `[key, [[member, score]...]]`): `ZMPOP 1 key MIN|MAX COUNT <popped>`.
    ZsetMany(ScoreEnd),
}

/// The end of a list a pop takes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListEnd {
    /// The head (`LEFT`, `LPOP`).
    Left,
    /// The tail (`RIGHT`, `RPOP`).
    Right,
}

/// The end of a sorted set a pop takes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreEnd {
    /// The lowest scores (`MIN`, `ZPOPMIN`).
    Min,
    /// The highest scores (`MAX`, `ZPOPMAX`).
    Max,
}

/// What one replica receives for one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrored {
    /// The request(s) to send to the replica, in the master's protocol.
    pub request: Bytes,
    /// The exact reply the replica must give: one reply per request in `request`, back to
    /// back (for a transaction: `+OK`, one `+QUEUED` per queued request, the `EXEC` reply).
    pub expect: Bytes,
}

/// Why a write's effect cannot be given to the replicas. The write happened on the master:
/// the caller must not drop it silently but take every replica of the shard out of sync.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// The master's reply does not have the shape Redis 7.0 gives this command.
    #[error("unexpected reply from the master: {0}")]
    UnexpectedReply(&'static str),
    /// The request given is not what was prepared (not one request, missing arguments, not
    /// `MULTI` .. `EXEC` for a transaction).
    #[error("unexpected request: {0}")]
    BadRequest(&'static str),
}

/// Decides how the write `args` is made deterministic.
///
/// `spec` is the command's entry in the table (what `command::resolve` gave for `args`), `args`
/// the full request (`args.get(0)` is the command name as the client sent it), `now_ms` the
/// proxy's wall clock in unix milliseconds. Never panics, whatever the arguments; for `EXEC`
/// use [`prepare_exec`] (here it is a non-write, [`Effect::Skip`]).
pub fn prepare(spec: &CommandSpec, args: &Args<'_>, now_ms: i64) -> Prepared {
    prepare_args(spec, args, now_ms)
}

/// The effect of `EXEC` from the effects of the queued requests, in order (each prepared
/// with [`prepare`] as it was queued, its request rewritten if [`Prepared::request`] said so).
pub fn prepare_exec(queued: Vec<Effect>) -> Effect {
    Effect::Exec(queued)
}

/// What the replica receives for one write and the exact reply it must give.
///
/// `request` is the request sent to the master (the rewritten one if [`Prepared::request`]
/// was `Some`), `master_reply` the master's complete reply, in `protocol`, the protocol of the
/// master's and the replica's connections. For [`Effect::Exec`], `request` is the whole
/// transaction sent to the master (`MULTI`, each queued request, `EXEC`) and `master_reply`
/// either `EXEC`'s reply alone or all the replies (`+OK`, the `+QUEUED`s, `EXEC`'s).
///
/// For [`Effect::Same`] the replica's request is `request` itself and the expected reply is
/// `master_reply` itself (no copy).
///
/// `Ok(None)`: nothing to mirror (not a write, a pop that found nothing or timed out, a
/// refused write that changed nothing, a transaction that did not run).
///
/// # Errors
/// [`MirrorError`] when the reply or the request is not what Redis 7.0 gives or what was
/// prepared: the write cannot be mirrored and the replicas are no longer in sync.
pub fn replica_request(
    effect: &Effect,
    request: &Bytes,
    master_reply: &Bytes,
    protocol: Protocol,
) -> Result<Option<Mirrored>, MirrorError> {
    Ok(
        mirror(effect, request, master_reply, protocol)?.map(|part| Mirrored {
            request: part.request,
            expect: part.expect,
        }),
    )
}

// ---------------------------------------------------------------------------------------
// prepare

/// [`prepare`] on any argument list (the session has `Args`, the tests plain slices).
fn prepare_args<A: ArgList + ?Sized>(spec: &CommandSpec, args: &A, now_ms: i64) -> Prepared {
    use CommandId as C;
    let effect = match spec.id {
        C::Set => return rewrite_set(args, now_ms),
        C::Setex => return rewrite_setex(args, Unit::Seconds, now_ms),
        C::Psetex => return rewrite_setex(args, Unit::Millis, now_ms),
        C::Getex => return rewrite_getex(args, now_ms),
        C::Expire => return rewrite_expire(args, Unit::Seconds, now_ms),
        C::Pexpire => return rewrite_expire(args, Unit::Millis, now_ms),
        C::Restore | C::RestoreAsking => return rewrite_restore(args, now_ms),
        C::Spop => Effect::SpopToSrem,
        C::Incrbyfloat => Effect::IncrByFloat,
        C::Blpop => Effect::BlockingPop(Pop::List(ListEnd::Left)),
        C::Brpop => Effect::BlockingPop(Pop::List(ListEnd::Right)),
        C::Blmove => Effect::BlockingPop(Pop::Move),
        C::Brpoplpush => Effect::BlockingPop(Pop::RpopLpush),
        C::Bzpopmin => Effect::BlockingPop(Pop::Zset(ScoreEnd::Min)),
        C::Bzpopmax => Effect::BlockingPop(Pop::Zset(ScoreEnd::Max)),
        C::Blmpop => mpop_end(args, b"left", b"right").map_or(Effect::Refused, |left| {
            let end = if left { ListEnd::Left } else { ListEnd::Right };
            Effect::BlockingPop(Pop::ListMany(end))
        }),
        C::Bzmpop => mpop_end(args, b"min", b"max").map_or(Effect::Refused, |min| {
            let end = if min { ScoreEnd::Min } else { ScoreEnd::Max };
            Effect::BlockingPop(Pop::ZsetMany(end))
        }),
        C::Xadd => xadd_effect(args),
        C::Xreadgroup => match parse_xreadgroup(args) {
            Some(read) if read.block => Effect::XreadgroupBlock,
            Some(_) => Effect::Same,
            None => Effect::Refused,
        },
        C::Eval | C::Evalsha | C::Fcall | C::Pfcount | C::ScriptLoad | C::ScriptFlush => {
            Effect::Same
        }
        C::Publish | C::Spublish => Effect::Skip,
        _ if spec.is_write() => Effect::Same,
        _ => Effect::Skip,
    };
    Prepared::unchanged(effect)
}

/// The unit of a relative time argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// `EX`, `SETEX`, `EXPIRE`.
    Seconds,
    /// `PX`, `PSETEX`, `PEXPIRE`.
    Millis,
}

/// `SET key value [options]` with `EX`/`PX` → the same with `PXAT abs`.
fn rewrite_set<A: ArgList + ?Sized>(args: &A, now_ms: i64) -> Prepared {
    rewrite_extended(args, 3, Kind::Set, now_ms)
}

/// `GETEX key [options]` with `EX`/`PX` → `GETEX key PXAT abs`.
fn rewrite_getex<A: ArgList + ?Sized>(args: &A, now_ms: i64) -> Prepared {
    rewrite_extended(args, 2, Kind::Get, now_ms)
}

/// `SETEX`/`PSETEX key time value` → `SET key value PXAT abs`.
fn rewrite_setex<A: ArgList + ?Sized>(args: &A, unit: Unit, now_ms: i64) -> Prepared {
    let (Some(key), Some(time), Some(value), 4) =
        (arg(args, 1), arg(args, 2), arg(args, 3), args.len())
    else {
        return Prepared::unchanged(Effect::Same);
    };
    match positive_deadline(time, unit, now_ms) {
        Some(abs) => Prepared::rewritten(request(&[
            b"SET",
            key,
            value,
            b"PXAT",
            abs.to_string().as_bytes(),
        ])),
        None => Prepared::unchanged(Effect::Same),
    }
}

/// Which command's options `parse_extended` reads (Redis's `COMMAND_SET` / `COMMAND_GET`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `SET`: NX, XX, GET, KEEPTTL, EX, PX, EXAT, PXAT.
    Set,
    /// `GETEX`: PERSIST, EX, PX, EXAT, PXAT.
    Get,
}

/// The relative expiration of an accepted `SET`/`GETEX`.
#[derive(Debug)]
struct Relative {
    /// The unit of the value that counts (Redis keeps the last `EX`/`PX` given).
    unit: Unit,
    /// Index of every `EX`/`PX` option; its value follows it.
    options: Vec<usize>,
}

/// Redis 7.0's `parseExtendedStringArgumentsOrReply` from argument `start`: `None` when Redis
/// refuses the options, `Some(None)` when there is no relative expiration.
fn parse_extended<A: ArgList + ?Sized>(
    args: &A,
    start: usize,
    kind: Kind,
) -> Option<Option<Relative>> {
    const NX: u16 = 1;
    const XX: u16 = 1 << 1;
    const KEEPTTL: u16 = 1 << 2;
    const PERSIST: u16 = 1 << 3;
    const EX: u16 = 1 << 4;
    const PX: u16 = 1 << 5;
    const EXAT: u16 = 1 << 6;
    const PXAT: u16 = 1 << 7;
    let set = kind == Kind::Set;
    let mut flags = 0u16;
    let mut relative: Option<Relative> = None;
    let mut j = start;
    while j < args.len() {
        let opt = c_str(args.arg(j));
        let next = j + 1 < args.len();
        let is =
            |name: &[u8], excluded: u16| opt.eq_ignore_ascii_case(name) && flags & excluded == 0;
        // (flag, unit of a relative time, whether the option takes a value)
        let (flag, unit) = if set && is(b"nx", XX) {
            (NX, None)
        } else if set && is(b"xx", NX) {
            (XX, None)
        } else if set && is(b"get", 0) {
            (0, None)
        } else if set && is(b"keepttl", PERSIST | EX | EXAT | PX | PXAT) {
            (KEEPTTL, None)
        } else if !set && is(b"persist", EX | EXAT | PX | PXAT | KEEPTTL) {
            (PERSIST, None)
        } else if next && is(b"ex", KEEPTTL | PERSIST | EXAT | PX | PXAT) {
            (EX, Some(Unit::Seconds))
        } else if next && is(b"px", KEEPTTL | PERSIST | EX | EXAT | PXAT) {
            (PX, Some(Unit::Millis))
        } else if next && is(b"exat", KEEPTTL | PERSIST | EX | PX | PXAT) {
            (EXAT, None)
        } else if next && is(b"pxat", KEEPTTL | PERSIST | EX | EXAT | PX) {
            (PXAT, None)
        } else {
            return None;
        };
        flags |= flag;
        if let Some(unit) = unit {
            let rel = relative.get_or_insert_with(|| Relative {
                unit,
                options: Vec::new(),
            });
            rel.unit = unit;
            rel.options.push(j);
        }
        j += if flag & (EX | PX | EXAT | PXAT) != 0 {
            2
        } else {
            1
        };
    }
    Some(relative)
}

/// `SET`/`GETEX` with the `EX`/`PX` options from `start` on replaced by one `PXAT abs`, where
/// Redis would accept them; unchanged otherwise.
fn rewrite_extended<A: ArgList + ?Sized>(
    args: &A,
    start: usize,
    kind: Kind,
    now_ms: i64,
) -> Prepared {
    let Some(Some(relative)) = parse_extended(args, start, kind) else {
        return Prepared::unchanged(Effect::Same);
    };
    let Some(&last) = relative.options.last() else {
        return Prepared::unchanged(Effect::Same);
    };
    let Some(abs) = arg(args, last + 1).and_then(|t| positive_deadline(t, relative.unit, now_ms))
    else {
        return Prepared::unchanged(Effect::Same);
    };
    let abs = abs.to_string();
    let mut out: Vec<&[u8]> = Vec::with_capacity(args.len());
    let mut j = 0;
    while j < args.len() {
        if relative.options.contains(&j) {
            if j == last {
                out.extend([&b"PXAT"[..], abs.as_bytes()]);
            }
            j += 2;
        } else {
            out.push(args.arg(j));
            j += 1;
        }
    }
    Prepared::rewritten(request(&out))
}

/// Redis's `getExpireMillisecondsOrReply` for a relative time: the absolute deadline in
/// unix ms, or `None` where Redis answers "invalid expire time" or "not an integer".
fn positive_deadline(time: &[u8], unit: Unit, now_ms: i64) -> Option<i64> {
    let n = parse_i64(time).filter(|&n| n > 0)?;
    let ms = match unit {
        Unit::Seconds => n.checked_mul(1000)?,
        Unit::Millis => n,
    };
    ms.checked_add(now_ms).filter(|&abs| abs > 0)
}

/// `EXPIRE`/`PEXPIRE key time [NX|XX|GT|LT]...` → `PEXPIREAT key abs [flags]`, where Redis
/// would accept it (a negative or zero time is valid: the key is deleted).
fn rewrite_expire<A: ArgList + ?Sized>(args: &A, unit: Unit, now_ms: i64) -> Prepared {
    let (Some(key), Some(time)) = (arg(args, 1), arg(args, 2)) else {
        return Prepared::unchanged(Effect::Same);
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for j in 3..args.len() {
        let opt = c_str(args.arg(j));
        if opt.eq_ignore_ascii_case(b"nx") {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"xx") {
            xx = true;
        } else if opt.eq_ignore_ascii_case(b"gt") {
            gt = true;
        } else if opt.eq_ignore_ascii_case(b"lt") {
            lt = true;
        } else {
            return Prepared::unchanged(Effect::Same);
        }
    }
    if (nx && (xx || gt || lt)) || (gt && lt) {
        return Prepared::unchanged(Effect::Same);
    }
    let deadline = parse_i64(time).and_then(|n| {
        let ms = match unit {
            Unit::Seconds => n.checked_mul(1000)?,
            Unit::Millis => n,
        };
        // Redis: `when > LLONG_MAX - basetime` is an error; a negative sum is valid.
        ms.checked_add(now_ms)
    });
    let Some(abs) = deadline else {
        return Prepared::unchanged(Effect::Same);
    };
    let abs = abs.to_string();
    let mut out: Vec<&[u8]> = vec![b"PEXPIREAT", key, abs.as_bytes()];
    out.extend((3..args.len()).map(|j| args.arg(j)));
    Prepared::rewritten(request(&out))
}

/// `RESTORE key ttl payload [options]` with a relative ttl > 0 → `RESTORE key abs payload
/// [options] ABSTTL`, where Redis would accept the options and the ttl.
fn rewrite_restore<A: ArgList + ?Sized>(args: &A, now_ms: i64) -> Prepared {
    let (Some(ttl), 4..) = (arg(args, 2), args.len()) else {
        return Prepared::unchanged(Effect::Same);
    };
    let (mut absttl, mut idle, mut freq) = (false, false, false);
    let mut j = 4;
    while j < args.len() {
        let opt = c_str(args.arg(j));
        let value = arg(args, j + 1).and_then(parse_i64);
        if opt.eq_ignore_ascii_case(b"replace") {
        } else if opt.eq_ignore_ascii_case(b"absttl") {
            absttl = true;
        } else if opt.eq_ignore_ascii_case(b"idletime") && j + 1 < args.len() && !freq {
            if value.filter(|&v| v >= 0).is_none() {
                return Prepared::unchanged(Effect::Same);
            }
            idle = true;
            j += 1;
        } else if opt.eq_ignore_ascii_case(b"freq") && j + 1 < args.len() && !idle {
            if value.filter(|v| (0..=255).contains(v)).is_none() {
                return Prepared::unchanged(Effect::Same);
            }
            freq = true;
            j += 1;
        } else {
            return Prepared::unchanged(Effect::Same);
        }
        j += 1;
    }
    let ttl = parse_i64(ttl);
    let abs = match ttl {
        Some(ttl) if ttl > 0 && !absttl => ttl.checked_add(now_ms),
        _ => None,
    };
    let Some(abs) = abs else {
        return Prepared::unchanged(Effect::Same);
    };
    let abs = abs.to_string();
    let mut out: Vec<&[u8]> = (0..args.len()).map(|j| args.arg(j)).collect();
    out[2] = abs.as_bytes();
    out.push(b"ABSTTL");
    Prepared::rewritten(request(&out))
}

/// `BLMPOP`/`BZMPOP timeout numkeys key... <first>|<second> [COUNT n]`: whether the pop is
/// from the `first` end, or `None` where Redis refuses the arguments.
fn mpop_end<A: ArgList + ?Sized>(args: &A, first: &[u8], second: &[u8]) -> Option<bool> {
    let numkeys = arg(args, 2).and_then(parse_i64).filter(|&n| n >= 1)?;
    let where_idx = usize::try_from(numkeys).ok()?.checked_add(3)?;
    let end = c_str(arg(args, where_idx)?);
    let first = if end.eq_ignore_ascii_case(first) {
        true
    } else if end.eq_ignore_ascii_case(second) {
        false
    } else {
        return None;
    };
    let mut j = where_idx + 1;
    let mut count = false;
    while j < args.len() {
        let more = j + 1 < args.len();
        if !count && more && c_str(args.arg(j)).eq_ignore_ascii_case(b"count") {
            arg(args, j + 1).and_then(parse_i64).filter(|&n| n >= 1)?;
            count = true;
            j += 2;
        } else {
            return None;
        }
    }
    Some(first)
}

/// `XADD`: [`Effect::XaddId`] when the master chooses the ID (`*`, `<ms>-*`), mirrored as
/// it is otherwise (an explicit ID, or arguments the master refuses).
fn xadd_effect<A: ArgList + ?Sized>(args: &A) -> Effect {
    match xadd_id_index(args) {
        Some(i) if args.arg(i).contains(&b'*') => Effect::XaddId { id_index: i },
        _ => Effect::Same,
    }
}

/// Where the ID argument of `XADD` is, as Redis 7.0's `streamParseAddOrTrimArgsOrReply`
/// finds it (the values of the options are checked by the master).
fn xadd_id_index<A: ArgList + ?Sized>(args: &A) -> Option<usize> {
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = c_str(args.arg(i));
        if opt == b"*" {
            break;
        } else if (opt.eq_ignore_ascii_case(b"maxlen") || opt.eq_ignore_ascii_case(b"minid"))
            && more > 0
        {
            let next = c_str(args.arg(i + 1));
            if more >= 2 && (next == b"~" || next == b"=") {
                i += 1;
            }
            i += 1;
        } else if opt.eq_ignore_ascii_case(b"limit") && more > 0 {
            i += 1;
        } else if !opt.eq_ignore_ascii_case(b"nomkstream") {
            break;
        }
        i += 1;
    }
    (i < args.len()).then_some(i)
}

/// The arguments of an `XREADGROUP` Redis 7.0 would parse.
#[derive(Debug)]
struct ReadGroup<'a> {
    /// Whether `BLOCK` was given.
    block: bool,
    /// `GROUP <group> <consumer>`.
    group: &'a [u8],
    /// The consumer.
    consumer: &'a [u8],
    /// Whether `NOACK` was given.
    noack: bool,
    /// Index of the first stream key; the IDs follow the keys.
    streams: usize,
    /// How many streams.
    count: usize,
}

impl<'a> ReadGroup<'a> {
    /// The ID given for the stream `key` (the first one if it is given twice).
    fn id_of<A: ArgList + ?Sized>(&self, args: &'a A, key: &[u8]) -> Option<&'a [u8]> {
        let i = (self.streams..self.streams + self.count).find(|&i| args.arg(i) == key)?;
        arg(args, i + self.count)
    }
}

/// Redis 7.0's `xreadCommand` option parsing for `XREADGROUP`; `None` where it refuses them.
fn parse_xreadgroup<A: ArgList + ?Sized>(args: &A) -> Option<ReadGroup<'_>> {
    let mut block = false;
    let mut group = None;
    let mut noack = false;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = c_str(args.arg(i));
        if opt.eq_ignore_ascii_case(b"block") && more > 0 {
            block = true;
            i += 1;
        } else if opt.eq_ignore_ascii_case(b"count") && more > 0 {
            i += 1;
        } else if opt.eq_ignore_ascii_case(b"streams") && more > 0 {
            let (streams, pairs) = (i + 1, args.len() - i - 1);
            let (group, consumer) = group?;
            return (pairs % 2 == 0).then_some(ReadGroup {
                block,
                group,
                consumer,
                noack,
                streams,
                count: pairs / 2,
            });
        } else if opt.eq_ignore_ascii_case(b"group") && more >= 2 {
            group = Some((args.arg(i + 1), args.arg(i + 2)));
            i += 2;
        } else if opt.eq_ignore_ascii_case(b"noack") {
            noack = true;
        } else {
            return None;
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------
// replica_request

/// One mirrored write being built: the replica's request(s), the expected replies, and how
/// many requests (= replies) there are.
#[derive(Debug)]
struct Part {
    /// The request(s), back to back.
    request: Bytes,
    /// The expected replies, back to back.
    expect: Bytes,
    /// How many requests `request` holds.
    commands: usize,
}

impl Part {
    /// One request built from `args`, expecting `expect`.
    fn one(args: &[&[u8]], expect: Bytes) -> Self {
        Self {
            request: request(args),
            expect,
            commands: 1,
        }
    }
}

/// [`replica_request`], with the number of requests.
fn mirror(
    effect: &Effect,
    request: &Bytes,
    reply: &Bytes,
    protocol: Protocol,
) -> Result<Option<Part>, MirrorError> {
    let same = || Part {
        request: request.clone(),
        expect: reply.clone(),
        commands: 1,
    };
    match effect {
        Effect::Skip => return Ok(None),
        Effect::Same => return Ok(Some(same())),
        Effect::Exec(queued) => return exec(queued, request, reply, protocol),
        Effect::Refused if is_error(reply) => return Ok(None),
        Effect::Refused => return Err(unexpected("not an error to arguments Redis refuses")),
        // An XADD can fail after creating its stream: the replica fails the same way.
        Effect::XaddId { .. } if is_error(reply) => return Ok(Some(same())),
        // The other errors happen before anything is changed.
        _ if is_error(reply) => return Ok(None),
        _ if is_null(reply, protocol) && *effect != Effect::IncrByFloat => return Ok(None),
        _ => {}
    }
    let mut scanner = RequestScanner::default();
    match scanner.scan(request) {
        Ok(Some(frame)) if frame.len == request.len() && frame.kind != FrameKind::Empty => {}
        _ => return Err(MirrorError::BadRequest("not exactly one request")),
    }
    let args: Vec<&[u8]> = scanner.args(request).iter().collect();
    let args = args.as_slice();
    match effect {
        Effect::SpopToSrem => spop(args, reply),
        Effect::BlockingPop(pop) => blocking_pop(*pop, args, reply),
        Effect::XaddId { id_index } => {
            let id = bulk(reply).ok_or(unexpected("XADD's reply is not an ID"))?;
            let mut out = args.to_vec();
            let slot = out
                .get_mut(*id_index)
                .ok_or(MirrorError::BadRequest("XADD without its ID"))?;
            *slot = id;
            Ok(Some(Part::one(&out, reply.clone())))
        }
        Effect::XreadgroupBlock => xreadgroup(args, reply),
        Effect::IncrByFloat => {
            let value = bulk(reply).ok_or(unexpected("INCRBYFLOAT's reply is not a string"))?;
            let key = arg(args, 1).ok_or(MirrorError::BadRequest("INCRBYFLOAT without key"))?;
            Ok(Some(Part::one(
                &[b"SET", key, value, b"KEEPTTL"],
                Bytes::from_static(encode::OK),
            )))
        }
        Effect::Skip | Effect::Same | Effect::Refused | Effect::Exec(_) => Ok(None),
    }
}

/// `SPOP`'s popped members (one bulk, or an array or set of them) → `SREM key members`.
fn spop(args: &[&[u8]], reply: &[u8]) -> Result<Option<Part>, MirrorError> {
    let key = arg(args, 1).ok_or(MirrorError::BadRequest("SPOP without key"))?;
    let mut srem: Vec<&[u8]> = vec![b"SREM", key];
    if let Some(member) = bulk(reply) {
        srem.push(member);
    } else {
        let (_, members) = elements(reply, b"*~").ok_or(unexpected("SPOP's reply"))?;
        for m in members {
            srem.push(bulk(&reply[m]).ok_or(unexpected("SPOP's member is not a string"))?);
        }
    }
    let popped = srem.len() - 2;
    if popped == 0 {
        return Ok(None);
    }
    Ok(Some(Part::one(&srem, integer_reply(popped))))
}

/// A blocking pop's reply → its non-blocking form.
fn blocking_pop(pop: Pop, args: &[&[u8]], reply: &Bytes) -> Result<Option<Part>, MirrorError> {
    let shape = || unexpected("a blocking pop's reply");
    let part = match pop {
        Pop::Move | Pop::RpopLpush => {
            bulk(reply).ok_or_else(shape)?;
            let out: Vec<&[u8]> = match (pop, args) {
                (Pop::Move, &[_, src, dst, from, to, _]) => vec![b"LMOVE", src, dst, from, to],
                (Pop::RpopLpush, &[_, src, dst, _]) => vec![b"RPOPLPUSH", src, dst],
                _ => return Err(MirrorError::BadRequest("BLMOVE/BRPOPLPUSH arguments")),
            };
            Part::one(&out, reply.clone())
        }
        Pop::List(end) => {
            let (key, element) = match elements(reply, b"*").ok_or_else(shape)? {
                (_, e) if e.len() == 2 => (bulk(&reply[e[0].clone()]), e[1].clone()),
                _ => return Err(shape()),
            };
            bulk(&reply[element.clone()]).ok_or_else(shape)?;
            let name: &[u8] = if end == ListEnd::Left {
                b"LPOP"
            } else {
                b"RPOP"
            };
            Part::one(&[name, key.ok_or_else(shape)?], reply.slice(element))
        }
        Pop::Zset(end) => {
            let e = match elements(reply, b"*").ok_or_else(shape)? {
                (_, e) if e.len() == 3 => e,
                _ => return Err(shape()),
            };
            let key = bulk(&reply[e[0].clone()]).ok_or_else(shape)?;
            let mut expect = BytesMut::with_capacity(reply.len());
            encode::array_header(&mut expect, 2);
            expect.put_slice(&reply[e[1].start..e[2].end]);
            let name: &[u8] = if end == ScoreEnd::Min {
                b"ZPOPMIN"
            } else {
                b"ZPOPMAX"
            };
            Part::one(&[name, key], expect.freeze())
        }
        Pop::ListMany(_) | Pop::ZsetMany(_) => {
            let e = match elements(reply, b"*").ok_or_else(shape)? {
                (_, e) if e.len() == 2 => e,
                _ => return Err(shape()),
            };
            let key = bulk(&reply[e[0].clone()]).ok_or_else(shape)?;
            let (_, popped) = elements(&reply[e[1].clone()], b"*").ok_or_else(shape)?;
            if popped.is_empty() {
                return Err(shape());
            }
            let (name, end): (&[u8], &[u8]) = match pop {
                Pop::ListMany(ListEnd::Left) => (b"LMPOP", b"LEFT"),
                Pop::ListMany(ListEnd::Right) => (b"LMPOP", b"RIGHT"),
                Pop::ZsetMany(ScoreEnd::Min) => (b"ZMPOP", b"MIN"),
                _ => (b"ZMPOP", b"MAX"),
            };
            let count = popped.len().to_string();
            Part::one(
                &[name, b"1", key, end, b"COUNT", count.as_bytes()],
                reply.clone(),
            )
        }
    };
    Ok(Some(part))
}

/// `XREADGROUP .. BLOCK` served: one non-blocking read per stream in the reply, each reading
/// as many entries as the master delivered from it.
fn xreadgroup(args: &[&[u8]], reply: &Bytes) -> Result<Option<Part>, MirrorError> {
    let shape = || unexpected("XREADGROUP's reply");
    let read = parse_xreadgroup(args).ok_or(MirrorError::BadRequest("XREADGROUP arguments"))?;
    let (kind, items) = elements(reply, b"*%").ok_or_else(shape)?;
    // Each stream: (key element, entries element, the element(s) to copy into the expected).
    let mut streams: Vec<(Range<usize>, Range<usize>, Range<usize>)> = Vec::new();
    if kind == b'%' {
        for pair in items.chunks_exact(2) {
            streams.push((pair[0].clone(), pair[1].clone(), pair[0].start..pair[1].end));
        }
    } else {
        for item in items {
            match elements(&reply[item.clone()], b"*") {
                Some((_, kv)) if kv.len() == 2 => {
                    let at = |r: &Range<usize>| item.start + r.start..item.start + r.end;
                    streams.push((at(&kv[0]), at(&kv[1]), item.clone()));
                }
                _ => return Err(shape()),
            }
        }
    }
    let (mut request_out, mut expect) = (BytesMut::new(), BytesMut::new());
    for (key, entries, whole) in &streams {
        let key = bulk(&reply[key.clone()]).ok_or_else(shape)?;
        let (_, delivered) = elements(&reply[entries.clone()], b"*").ok_or_else(shape)?;
        let id = read.id_of(args, key).ok_or(MirrorError::BadRequest(
            "XREADGROUP served a stream not asked for",
        ))?;
        let count = delivered.len().to_string();
        let mut out: Vec<&[u8]> = vec![b"XREADGROUP", b"GROUP", read.group, read.consumer];
        out.extend([&b"COUNT"[..], count.as_bytes()]);
        if read.noack {
            out.push(b"NOACK");
        }
        out.extend([&b"STREAMS"[..], key, id]);
        encode::request(&mut request_out, &out);
        expect.put_slice(if kind == b'%' { b"%1\r\n" } else { b"*1\r\n" });
        expect.put_slice(&reply[whole.clone()]);
    }
    if streams.is_empty() {
        return Err(shape());
    }
    Ok(Some(Part {
        request: request_out.freeze(),
        expect: expect.freeze(),
        commands: streams.len(),
    }))
}

/// `EXEC`: the replica's transaction of the queued writes' effects.
fn exec(
    queued: &[Effect],
    request: &Bytes,
    reply: &Bytes,
    protocol: Protocol,
) -> Result<Option<Part>, MirrorError> {
    let n = queued.len();
    let frames = frames(request)?;
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        return Err(MirrorError::BadRequest("an empty transaction"));
    };
    if frames.len() != n + 2
        || !is_command(&request[first.clone()], CommandId::Multi)
        || !is_command(&request[last.clone()], CommandId::Exec)
    {
        return Err(MirrorError::BadRequest(
            "not MULTI, the queued requests, EXEC",
        ));
    }
    let replies = split_replies(reply).ok_or(unexpected("malformed replies to a transaction"))?;
    let exec_reply = match replies.as_slice() {
        [one] => reply.slice(one.clone()),
        all if all.len() == n + 2 => reply.slice(all[n + 1].clone()),
        _ => return Err(unexpected("not one reply per request of the transaction")),
    };
    // Nil (a WATCHed key changed), EXECABORT or any other error: nothing ran.
    if is_error(&exec_reply) || is_null(&exec_reply, protocol) {
        return Ok(None);
    }
    let (_, results) = elements(&exec_reply, b"*").ok_or(unexpected("EXEC's reply"))?;
    if results.len() != n {
        return Err(unexpected(
            "EXEC's reply has not one result per queued request",
        ));
    }
    if n > 0 && queued.iter().all(|e| *e == Effect::Same) {
        let mut expect = BytesMut::with_capacity(exec_reply.len() + 5 + 9 * n);
        put_transaction_replies(&mut expect, n);
        expect.put_slice(&exec_reply);
        return Ok(Some(Part {
            request: request.clone(),
            expect: expect.freeze(),
            commands: n + 2,
        }));
    }
    let mut parts = Vec::with_capacity(n);
    for ((effect, frame), result) in queued.iter().zip(&frames[1..=n]).zip(results) {
        if let Effect::Exec(_) = effect {
            return Err(MirrorError::BadRequest("EXEC inside a transaction"));
        }
        let part = mirror(
            effect,
            &request.slice(frame.clone()),
            &exec_reply.slice(result),
            protocol,
        )?;
        parts.extend(part);
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let count: usize = parts.iter().map(|p| p.commands).sum();
    let (mut out, mut expect) = (BytesMut::new(), BytesMut::new());
    encode::request(&mut out, &[b"MULTI"]);
    put_transaction_replies(&mut expect, count);
    encode::array_header(&mut expect, count);
    for part in &parts {
        out.put_slice(&part.request);
        expect.put_slice(&part.expect);
    }
    encode::request(&mut out, &[b"EXEC"]);
    Ok(Some(Part {
        request: out.freeze(),
        expect: expect.freeze(),
        commands: count + 2,
    }))
}

/// `+OK` (to MULTI) then `queued` times `+QUEUED`.
fn put_transaction_replies(out: &mut BytesMut, queued: usize) {
    out.put_slice(encode::OK);
    for _ in 0..queued {
        out.put_slice(b"+QUEUED\r\n");
    }
}

/// Where each request of `buf` is; an error unless `buf` is whole requests.
fn frames(buf: &[u8]) -> Result<Vec<Range<usize>>, MirrorError> {
    let mut scanner = RequestScanner::default();
    let mut frames = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match scanner.scan(&buf[at..]) {
            Ok(Some(frame)) if frame.kind != FrameKind::Empty => {
                frames.push(at..at + frame.len);
                at += frame.len;
                scanner.reset();
            }
            _ => return Err(MirrorError::BadRequest("not whole requests")),
        }
    }
    Ok(frames)
}

/// Whether the request `frame` is the command `id` (its name in any case).
fn is_command(frame: &[u8], id: CommandId) -> bool {
    let mut scanner = RequestScanner::default();
    matches!(scanner.scan(frame), Ok(Some(_)))
        && scanner
            .args(frame)
            .iter()
            .next()
            .and_then(command::lookup)
            .is_some_and(|spec| spec.id == id)
}

/// Where each reply of `buf` is; `None` unless `buf` is whole, well-formed replies.
fn split_replies(buf: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut replies = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let len = ReplyScanner::default().scan(&buf[at..]).ok()??;
        replies.push(at..at + len);
        at += len;
    }
    (!replies.is_empty()).then_some(replies)
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// The error for a reply of an unexpected shape.
fn unexpected(what: &'static str) -> MirrorError {
    MirrorError::UnexpectedReply(what)
}

/// The argument `i`, if there is one.
fn arg<A: ArgList + ?Sized>(args: &A, i: usize) -> Option<&[u8]> {
    (i < args.len()).then(|| args.arg(i))
}

/// An argument as Redis's C code compares options (`strcasecmp`, `opt[2] == '\0'`): up to
/// its first NUL byte.
fn c_str(a: &[u8]) -> &[u8] {
    a.iter().position(|&b| b == 0).map_or(a, |nul| &a[..nul])
}

/// The request `args` as a RESP multibulk.
fn request(args: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    encode::request(&mut out, args);
    out.freeze()
}

/// The reply `:n`.
fn integer_reply(n: usize) -> Bytes {
    let mut out = BytesMut::new();
    encode::integer(&mut out, i64::try_from(n).unwrap_or(i64::MAX));
    out.freeze()
}

/// Whether `reply` is the null of `protocol` (RESP2 `$-1` or `*-1`, RESP3 `_`).
fn is_null(reply: &[u8], protocol: Protocol) -> bool {
    match protocol {
        Protocol::Resp2 => reply == encode::NULL_BULK || reply == encode::NULL_ARRAY,
        Protocol::Resp3 => reply == b"_\r\n",
    }
}

/// The content of `reply` if it is exactly one bulk string `$len\r\n<data>\r\n`.
fn bulk(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len = usize::try_from(parse_i64(&rest[..cr])?).ok()?;
    let data = rest.get(cr + 2..)?;
    let well_formed = rest.get(cr + 1) == Some(&b'\n')
        && data.len() == len.checked_add(2)?
        && data.ends_with(b"\r\n");
    well_formed.then(|| &data[..len])
}

/// The type byte and the ranges of the elements of `reply` if it is exactly one aggregate of
/// one of `kinds` (`*`, `~`, `%`: a map's keys and values alternate). `None` for anything
/// else, a null or a malformed reply.
fn elements(reply: &[u8], kinds: &[u8]) -> Option<(u8, Vec<Range<usize>>)> {
    let kind = *reply.first().filter(|k| kinds.contains(k))?;
    let cr = reply.iter().position(|&b| b == b'\r')?;
    if reply.get(cr + 1) != Some(&b'\n') {
        return None;
    }
    let n = usize::try_from(parse_i64(&reply[1..cr])?).ok()?;
    let n = if kind == b'%' { n.checked_mul(2)? } else { n };
    let mut at = cr + 2;
    // Every element takes at least 3 bytes: a larger count must not size the allocation.
    if n > (reply.len() - at) / 3 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = ReplyScanner::default().scan(&reply[at..]).ok()??;
        out.push(at..at + len);
        at += len;
    }
    (at == reply.len()).then_some((kind, out))
}

#[cfg(test)]
mod tests;
