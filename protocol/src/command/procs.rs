//! Redis 7.0.15's `getkeys_proc`s (src/db.c), the fallback of the key specs, and the
//! `numkeys` checks of the commands that take one, ported for [`CommandSpec::key_indices`].

use redshard_config::Slot;
use smallvec::SmallVec;

use super::keys::{arg, c_eq};
use super::{ArgList, CommandError, CommandId, CommandSpec};
use crate::resp::parse_i64;

/// Redis's `getkeys_proc` of a command (`get_keys_function` in its `src/commands/*.json`),
/// plus the `numkeys` checks of the commands that have one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GetKeys {
    /// No proc: key specs only.
    None,
    /// `setGetKeys` / `bitfieldGetKeys`: the key is argument 1 (their specs have
    /// `VARIABLE_FLAGS`, so Redis always uses the proc).
    FirstArg,
    /// `sortGetKeys`: argument 1, and the last `STORE` destination.
    Sort,
    /// `sortROGetKeys`: argument 1.
    SortRo,
    /// `migrateGetKeys`: argument 3, or the arguments after `KEYS`.
    Migrate,
    /// `georadiusGetKeys`: argument 1 and the last `STORE`/`STOREDIST` destination.
    Georadius,
    /// `xreadGetKeys`: the first half of the arguments after `STREAMS`.
    Xread,
    /// `evalGetKeys` (EVAL, EVAL_RO): `script numkeys key...`.
    Eval,
    /// `evalGetKeys` (EVALSHA, EVALSHA_RO): as EVAL, but the SHA length is checked first.
    EvalSha,
    /// `functionGetKeys` (FCALL, FCALL_RO): `function numkeys key...`.
    Fcall,
    /// `zunionInterDiffStoreGetKeys`: `dest numkeys key...` (ZUNIONSTORE, ZINTERSTORE,
    /// ZDIFFSTORE).
    ZsetStore,
    /// `zunionInterDiffGetKeys`: `numkeys key...` (ZUNION, ZINTER, ZDIFF, ZINTERCARD).
    Zset,
    /// `sintercardGetKeys`: `numkeys key...`.
    Sintercard,
    /// `lmpopGetKeys` / `zmpopGetKeys`: `numkeys key... LEFT|RIGHT|MIN|MAX`.
    Mpop,
    /// `blmpopGetKeys` / `bzmpopGetKeys`: `timeout numkeys key... ...`.
    BlockingMpop,
}

/// The `getkeys_proc` of the command `id` (evaluated at compile time by the table): every
/// `get_keys_function` of Redis 7.0.15's `src/commands/*.json`. `COMMAND` does not report it,
/// so this is hand-maintained.
pub(crate) const fn getkeys_of(id: CommandId) -> GetKeys {
    use CommandId as C;
    match id {
        C::Set | C::Bitfield => GetKeys::FirstArg,
        C::Sort => GetKeys::Sort,
        C::SortRo => GetKeys::SortRo,
        C::Migrate => GetKeys::Migrate,
        C::Georadius | C::Georadiusbymember => GetKeys::Georadius,
        C::Xread | C::Xreadgroup => GetKeys::Xread,
        C::Eval | C::EvalRo => GetKeys::Eval,
        C::Evalsha | C::EvalshaRo => GetKeys::EvalSha,
        C::Fcall | C::FcallRo => GetKeys::Fcall,
        C::Zunionstore | C::Zinterstore | C::Zdiffstore => GetKeys::ZsetStore,
        C::Zunion | C::Zinter | C::Zdiff | C::Zintercard => GetKeys::Zset,
        C::Sintercard => GetKeys::Sintercard,
        C::Lmpop | C::Zmpop => GetKeys::Mpop,
        C::Blmpop | C::Bzmpop => GetKeys::BlockingMpop,
        _ => GetKeys::None,
    }
}

/// C's `atoi` as glibc has it (`(int)strtol(s, NULL, 10)`), used by Redis's
/// `genericGetKeys`: leading spaces, a sign, digits up to the first non-digit (or NUL).
fn atoi(s: &[u8]) -> i32 {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    while let Some(d) = s.get(i).filter(|d| d.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        i += 1;
    }
    let v = if negative { -v } else { v };
    // Truncation on purpose: that is what the C cast from long to int does.
    #[allow(clippy::cast_possible_truncation)]
    let v = v as i32;
    v
}

/// What a command's own `numkeys` check decided.
pub(super) enum NumkeysCheck {
    /// Valid (or not a numkeys command): find the keys.
    Proceed,
    /// Invalid, but the reply depends on server state: no keys, let a master answer.
    NoKeys,
}

impl GetKeys {
    /// The command's own check of its `numkeys` argument, as its implementation does it
    /// before touching any key (evalGenericCommand, fcallCommandGeneric,
    /// zunionInterDiffGenericCommand, sinterCardCommand, lmpopGenericCommand,
    /// zmpopGenericCommand in Redis 7.0.15).
    pub(super) fn check_numkeys<A: ArgList + ?Sized>(
        self,
        spec: &CommandSpec,
        args: &A,
    ) -> Result<NumkeysCheck, CommandError> {
        let argc = i64::try_from(args.len()).unwrap_or(i64::MAX);
        let bad = |text: &str| Err(CommandError::bad_key_arguments(text));
        let at = |idx: usize| parse_i64(arg(args, idx));
        match self {
            GetKeys::Eval | GetKeys::EvalSha => {
                let numkeys = at(2);
                let valid = numkeys.is_some_and(|n| (0..=argc - 3).contains(&n));
                if !valid && self == GetKeys::EvalSha && arg(args, 1).len() != 40 {
                    // evalShaCommand rejects a SHA of the wrong length before numkeys.
                    return bad("NOSCRIPT No matching script. Please use EVAL.");
                }
                match numkeys {
                    None => bad("ERR value is not an integer or out of range"),
                    Some(n) if n > argc - 3 => {
                        bad("ERR Number of keys can't be greater than number of args")
                    }
                    Some(n) if n < 0 => bad("ERR Number of keys can't be negative"),
                    Some(_) => Ok(NumkeysCheck::Proceed),
                }
            }
            GetKeys::Fcall => {
                // fcallCommandGeneric answers "Function not found" before it looks at
                // numkeys, and only the server knows whether the function exists.
                let valid = at(2).is_some_and(|n| (0..=argc - 3).contains(&n));
                Ok(if valid {
                    NumkeysCheck::Proceed
                } else {
                    NumkeysCheck::NoKeys
                })
            }
            GetKeys::ZsetStore | GetKeys::Zset => {
                let (idx, at_idx) = if self == GetKeys::ZsetStore {
                    (2, at(2))
                } else {
                    (1, at(1))
                };
                match at_idx {
                    None => bad("ERR value is not an integer or out of range"),
                    Some(n) if n < 1 => Err(CommandError::bad_key_arguments(&format!(
                        "ERR at least 1 input key is needed for '{}' command",
                        spec.name
                    ))),
                    Some(n) if n > argc - (idx + 1) => bad("ERR syntax error"),
                    Some(_) => Ok(NumkeysCheck::Proceed),
                }
            }
            GetKeys::Sintercard => match at(1) {
                Some(n) if n >= 1 => {
                    if n > argc - 2 {
                        bad("ERR Number of keys can't be greater than number of args")
                    } else {
                        Ok(NumkeysCheck::Proceed)
                    }
                }
                _ => bad("ERR numkeys should be greater than 0"),
            },
            GetKeys::Mpop | GetKeys::BlockingMpop => {
                let (idx, at_idx) = if self == GetKeys::Mpop {
                    (1, at(1))
                } else {
                    (2, at(2))
                };
                match at_idx {
                    // where_idx = numkeys_idx + numkeys + 1 must be an argument.
                    Some(n) if n >= 1 => {
                        if n >= argc - idx - 1 {
                            bad("ERR syntax error")
                        } else {
                            Ok(NumkeysCheck::Proceed)
                        }
                    }
                    _ => bad("ERR numkeys should be greater than 0"),
                }
            }
            _ => Ok(NumkeysCheck::Proceed),
        }
    }

    /// Redis's `getkeys_proc`, the fallback when the key specs fail.
    pub(super) fn run<A: ArgList + ?Sized>(self, args: &A, out: &mut SmallVec<[usize; 8]>) {
        let argc = args.len();
        if argc < 2 {
            // Every proc's keys start at index 1; a shorter request has none.
            return;
        }
        match self {
            GetKeys::None => {}
            GetKeys::FirstArg | GetKeys::SortRo => out.push(1),
            GetKeys::Sort => sort_keys(args, out),
            GetKeys::Migrate => migrate_keys(args, out),
            GetKeys::Georadius => {
                out.push(1);
                let mut stored = None;
                let mut i = 5;
                while i < argc {
                    let a = args.arg(i);
                    if (c_eq(a, "store") || c_eq(a, "storedist")) && i + 1 < argc {
                        stored = Some(i + 1);
                        i += 1;
                    }
                    i += 1;
                }
                out.extend(stored);
            }
            GetKeys::Xread => xread_keys(args, out),
            GetKeys::Eval | GetKeys::EvalSha | GetKeys::Fcall | GetKeys::BlockingMpop => {
                generic_keys(args, None, 2, 3, out);
            }
            GetKeys::ZsetStore => generic_keys(args, Some(1), 2, 3, out),
            GetKeys::Zset | GetKeys::Sintercard | GetKeys::Mpop => {
                generic_keys(args, None, 1, 2, out);
            }
        }
    }
}

/// `genericGetKeys(storeKeyOfs, keyCountOfs, firstKeyOfs, 1)`: the `atoi` of the count,
/// the keys, then the destination.
fn generic_keys<A: ArgList + ?Sized>(
    args: &A,
    store: Option<usize>,
    count_at: usize,
    first: usize,
    out: &mut SmallVec<[usize; 8]>,
) {
    let argc = args.len();
    if count_at >= argc {
        return;
    }
    let num = atoi(args.arg(count_at));
    let Ok(num) = usize::try_from(num) else {
        return;
    };
    if num < 1 || num > argc.saturating_sub(first) {
        return;
    }
    out.extend(first..first + num);
    out.extend(store);
}

/// `sortGetKeys`: argument 1, and the last `STORE` destination (skipping the arguments of
/// LIMIT, GET and BY, exactly as Redis's loop does).
fn sort_keys<A: ArgList + ?Sized>(args: &A, out: &mut SmallVec<[usize; 8]>) {
    const SKIP: [(&str, usize); 3] = [("limit", 2), ("get", 1), ("by", 1)];
    let argc = args.len();
    out.push(1);
    let mut store = None;
    let mut i = 2;
    while i < argc {
        for (name, skip) in SKIP {
            if c_eq(args.arg(i), name) {
                i += skip;
                break;
            } else if c_eq(args.arg(i), "store") && i + 1 < argc {
                store = Some(i + 1);
                break;
            }
        }
        i += 1;
    }
    out.extend(store);
}

/// Whether every key SORT's `BY` and `GET` patterns can read is in slot `slot` (the sorted
/// key's). Redis Cluster denies these options outright, since a pattern names other keys; a
/// pattern can only be honoured when the part before its `*` carries a hash tag of that slot
/// (`{user}w_*`): then every key it makes has that tag. Patterns without `*` (`BY nosort`, a
/// constant `BY`, `GET #`, a constant `GET`) read no key.
pub(super) fn sort_patterns_in_slot<A: ArgList + ?Sized>(args: &A, slot: Slot) -> bool {
    let argc = args.len();
    let mut i = 2;
    while i < argc {
        let a = args.arg(i);
        if c_eq(a, "limit") {
            i += 3;
            continue;
        }
        if (c_eq(a, "by") || c_eq(a, "get") || c_eq(a, "store")) && i + 1 < argc {
            let pattern = args.arg(i + 1);
            if !c_eq(a, "store") && !pattern_in_slot(pattern, slot) {
                return false;
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    true
}

/// Whether the keys `pattern` makes (its `*` replaced by any element) are all in `slot`.
fn pattern_in_slot(pattern: &[u8], slot: Slot) -> bool {
    let Some(star) = pattern.iter().position(|&b| b == b'*') else {
        return true;
    };
    let prefix = &pattern[..star];
    // Redis's hash tag: the first '{', then the first '}' after it, with something between.
    let Some(open) = prefix.iter().position(|&b| b == b'{') else {
        return false;
    };
    match prefix[open + 1..].iter().position(|&b| b == b'}') {
        Some(0) | None => false,
        Some(_) => Slot::for_key(prefix) == slot,
    }
}

/// `migrateGetKeys`: argument 3, or with `KEYS` (when argument 3 is empty) every argument
/// after it.
fn migrate_keys<A: ArgList + ?Sized>(args: &A, out: &mut SmallVec<[usize; 8]>) {
    const SKIP: [(&str, usize); 4] = [("copy", 0), ("replace", 0), ("auth", 1), ("auth2", 2)];
    let argc = args.len();
    let (mut first, mut num) = (3, 1);
    if argc > 6 {
        let mut i = 6;
        while i < argc {
            if c_eq(args.arg(i), "keys") {
                if args.arg(3).is_empty() {
                    first = i + 1;
                    num = argc - first;
                } else {
                    num = 0;
                }
                break;
            }
            if let Some((_, skip)) = SKIP.iter().find(|(n, _)| c_eq(args.arg(i), n)) {
                i += skip;
            }
            i += 1;
        }
    }
    if first + num <= argc {
        out.extend(first..first + num);
    }
}

/// `xreadGetKeys`: the options before `STREAMS` are skipped with their arguments; the keys
/// are the first half of what follows `STREAMS`.
fn xread_keys<A: ArgList + ?Sized>(args: &A, out: &mut SmallVec<[usize; 8]>) {
    let argc = args.len();
    let mut streams = None;
    let mut i = 1;
    while i < argc {
        let a = args.arg(i);
        if c_eq(a, "block") || c_eq(a, "count") {
            i += 1;
        } else if c_eq(a, "group") {
            i += 2;
        } else if c_eq(a, "noack") {
        } else if c_eq(a, "streams") {
            streams = Some(i);
            break;
        } else {
            break;
        }
        i += 1;
    }
    let Some(pos) = streams else { return };
    let num = argc - pos - 1;
    if num == 0 || num % 2 != 0 {
        return;
    }
    out.extend(pos + 1..pos + 1 + num / 2);
}
