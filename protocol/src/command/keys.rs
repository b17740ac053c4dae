//! Key extraction: a port of Redis 7.0.15's `getKeysFromCommandWithSpecs` (src/db.c).
//!
//! Redis first walks the key specs (`getKeysUsingKeySpecs`) when the command has at least
//! one spec that is not `NOT_KEY` and none with `VARIABLE_FLAGS`; when that fails (an
//! `INCOMPLETE` or `Unknown` spec, or out-of-range positions) it falls back to the command's
//! `getkeys_proc`, ported in `procs.rs`. The result is what `COMMAND GETKEYS`
//! answers, quirks included:
//! - keywords and options are compared like C's `strcasecmp`, so an argument stops at its
//!   first NUL byte;
//! - a keyword search never looks at its end position (the last argument when searching
//!   forwards, index 1 when searching backwards);
//! - `GEORADIUS ... STORE a STOREDIST b` yields both `a` and `b` (the specs), while
//!   `MIGRATE ... KEYS` and `SORT ... STORE` use the procs because their specs are
//!   `INCOMPLETE` / `Unknown`;
//! - `NOT_KEY` specs (the shard channel of SPUBLISH, SSUBSCRIBE, SUNSUBSCRIBE) are skipped.
//!
//! Before the walk, the commands that take a `numkeys` argument check it the way the command
//! itself does (`GetKeys::check_numkeys`), so an invalid count gets the reply Redis would
//! give instead of a wrong (or empty) key list.

use redshard_config::Slot;
use smallvec::SmallVec;

use super::procs::{GetKeys, NumkeysCheck};
use super::{ArgList, BeginSearch, CommandError, CommandSpec, FindKeys, KeySpecFlags};
use crate::resp::parse_i64;

/// The argument `i`, or an empty slice past the end (requests reaching here passed the arity
/// check, but this module must never panic on a short one).
pub(super) fn arg<A: ArgList + ?Sized>(args: &A, i: usize) -> &[u8] {
    if i < args.len() {
        args.arg(i)
    } else {
        &[]
    }
}

/// [`arg`] at an index computed in signed arithmetic, as Redis computes them.
fn arg_at<A: ArgList + ?Sized>(args: &A, i: i64) -> &[u8] {
    usize::try_from(i).map_or(&[][..], |i| arg(args, i))
}

/// C `strcasecmp(arg, word) == 0`: `arg` ends at its first NUL byte.
pub(super) fn c_eq(arg: &[u8], word: &str) -> bool {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    arg[..end].eq_ignore_ascii_case(word.as_bytes())
}

/// `getKeysUsingKeySpecs` with the default search flags. Returns false (and leaves `out`
/// empty) when a spec is invalid or incomplete, which sends Redis to the `getkeys_proc`.
fn keys_from_specs<A: ArgList + ?Sized>(
    spec: &CommandSpec,
    args: &A,
    out: &mut SmallVec<[usize; 8]>,
    mut flags: Option<&mut SmallVec<[KeySpecFlags; 8]>>,
) -> bool {
    let argc = i64::try_from(args.len()).unwrap_or(i64::MAX);
    for ks in spec.key_specs {
        if ks.flags.contains(KeySpecFlags::NOT_KEY) {
            continue;
        }
        let mut first: i64 = match ks.begin_search {
            BeginSearch::Index(pos) => i64::from(pos),
            BeginSearch::Keyword { keyword, startfrom } => {
                let startfrom = i64::from(startfrom);
                let (start, end) = if startfrom > 0 {
                    (startfrom, argc - 1)
                } else {
                    (argc + startfrom, 1)
                };
                let mut found = 0;
                let mut i = start;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if c_eq(arg_at(args, i), keyword) {
                        found = i + 1;
                        break;
                    }
                    i = if start <= end { i + 1 } else { i - 1 };
                }
                if found == 0 {
                    continue;
                }
                found
            }
            BeginSearch::Unknown => return invalid(out, flags),
        };
        let (last, step) = match ks.find_keys {
            FindKeys::Range {
                lastkey,
                keystep,
                limit,
            } => {
                let lastkey = i64::from(lastkey);
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit == 0 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / i64::from(limit) + lastkey)
                };
                (last, i64::from(keystep))
            }
            FindKeys::Keynum {
                keynumidx,
                firstkey,
                keystep,
            } => {
                let keynumidx = i64::from(keynumidx);
                if keynumidx >= argc || first + keynumidx >= argc || first + keynumidx < 0 {
                    return invalid(out, flags);
                }
                let numkeys = match parse_i64(arg_at(args, first + keynumidx)) {
                    Some(n) if n >= 0 => n,
                    _ => return invalid(out, flags),
                };
                first += i64::from(firstkey);
                // Redis adds `(int)numkeys`: the truncation is faithful on purpose.
                #[allow(clippy::cast_possible_truncation)]
                let numkeys = i64::from(numkeys as i32);
                (first + numkeys - 1, i64::from(keystep))
            }
            FindKeys::Unknown => return invalid(out, flags),
        };
        if last >= argc || last < first || first >= argc || first < 0 || step <= 0 {
            return invalid(out, flags);
        }
        let mut i = first;
        while i <= last {
            // Redis skips positions out of range for commands of variable arity.
            if let Some(i) = usize::try_from(i).ok().filter(|&i| i < args.len()) {
                out.push(i);
                if let Some(flags) = flags.as_deref_mut() {
                    flags.push(ks.flags);
                }
            }
            i += step;
        }
        if ks.flags.contains(KeySpecFlags::INCOMPLETE) {
            return invalid(out, flags);
        }
    }
    true
}

/// The `invalid_spec` exit of `getKeysUsingKeySpecs`.
fn invalid(
    out: &mut SmallVec<[usize; 8]>,
    flags: Option<&mut SmallVec<[KeySpecFlags; 8]>>,
) -> bool {
    out.clear();
    if let Some(flags) = flags {
        flags.clear();
    }
    false
}

impl CommandSpec {
    /// Whether every key the command reads besides its key arguments is in `slot`: false
    /// only for SORT and SORT_RO with a `BY` or `GET` pattern that can name keys in other
    /// slots (see `sort_patterns_in_slot`).
    pub fn extra_keys_in_slot<A: ArgList + ?Sized>(&self, args: &A, slot: Slot) -> bool {
        !matches!(self.getkeys, GetKeys::Sort | GetKeys::SortRo)
            || super::procs::sort_patterns_in_slot(args, slot)
    }

    /// Indices (into args) of every key of this request, following the key specs exactly as
    /// Redis 7's `getKeysFromCommandWithSpecs` does, with the command's `getkeys_proc` as
    /// the fallback: the result equals what `COMMAND GETKEYS` returns on a live server, in
    /// the same order (a key may appear twice, as it does in Redis's answer).
    ///
    /// `args` should be the whole request that [`resolve`](super::resolve) returned this spec
    /// for (`args[0]` the command name; for subcommands `args[1]` the subcommand). A request
    /// for which Redis finds no key leaves `out` empty. `out` is cleared first.
    ///
    /// # Errors
    ///
    /// For the commands with a `numkeys` argument, when it is invalid, the error the command
    /// itself replies, in its order of checks (Redis 7.0.15):
    /// - EVAL, EVAL_RO, EVALSHA, EVALSHA_RO: `ERR value is not an integer or out of range`,
    ///   `ERR Number of keys can't be greater than number of args`,
    ///   `ERR Number of keys can't be negative` (EVALSHA with a SHA that is not 40 bytes
    ///   long: `NOSCRIPT No matching script. Please use EVAL.`);
    /// - ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE, ZUNION, ZINTER, ZDIFF, ZINTERCARD:
    ///   `ERR value is not an integer or out of range`,
    ///   `ERR at least 1 input key is needed for 'zunionstore' command`, `ERR syntax error`;
    /// - SINTERCARD: `ERR numkeys should be greater than 0`,
    ///   `ERR Number of keys can't be greater than number of args`;
    /// - LMPOP, BLMPOP, ZMPOP, BZMPOP: `ERR numkeys should be greater than 0`,
    ///   `ERR syntax error` (no argument left for LEFT/RIGHT/MIN/MAX).
    ///
    /// FCALL and FCALL_RO never fail here: their first check is whether the function
    /// exists, which only a server knows, so an invalid `numkeys` yields no key and the
    /// request goes to any master, which answers.
    pub fn key_indices<A: ArgList + ?Sized>(
        &self,
        args: &A,
        out: &mut SmallVec<[usize; 8]>,
    ) -> Result<(), CommandError> {
        out.clear();
        if args.is_empty() {
            return Ok(());
        }
        if let NumkeysCheck::NoKeys = self.getkeys.check_numkeys(self, args)? {
            return Ok(());
        }
        // getAllKeySpecsFlags(cmd, 1) & NOT_KEY: some spec is a real key.
        let has_keyspec = self
            .key_specs
            .iter()
            .any(|ks| !ks.flags.contains(KeySpecFlags::NOT_KEY));
        let has_varflags = self
            .key_specs
            .iter()
            .any(|ks| ks.flags.contains(KeySpecFlags::VARIABLE_FLAGS));
        if has_keyspec && !has_varflags && keys_from_specs(self, args, out, None) {
            return Ok(());
        }
        out.clear();
        self.getkeys.run(args, out);
        Ok(())
    }

    /// [`key_indices`](Self::key_indices) with each key's key-spec flags, which say whether
    /// the command reads it (`access`) or writes it (`insert`, `update`, `delete`): what an
    /// ACL key pattern's `%R` / `%W` permission is checked against, as Redis 7.0 does.
    ///
    /// Keys found by the key specs get their spec's flags. Keys found by a `getkeys_proc`:
    /// `SET` and `BITFIELD` get the flags Redis's procs give them from the arguments
    /// (`SET ... GET` reads; `BITFIELD` with only `GET`s reads), `SORT`'s sorted key is read
    /// and its `STORE` key overwritten; the others get their one
    /// key spec's flags, or with several specs the union of them all (a key may then need
    /// both permissions where Redis would ask for one).
    ///
    /// # Errors
    ///
    /// As [`key_indices`](Self::key_indices).
    pub fn key_refs<A: ArgList + ?Sized>(
        &self,
        args: &A,
        out: &mut SmallVec<[usize; 8]>,
        flags: &mut SmallVec<[KeySpecFlags; 8]>,
    ) -> Result<(), CommandError> {
        out.clear();
        flags.clear();
        if args.is_empty() {
            return Ok(());
        }
        if let NumkeysCheck::NoKeys = self.getkeys.check_numkeys(self, args)? {
            return Ok(());
        }
        let real = || {
            self.key_specs
                .iter()
                .filter(|ks| !ks.flags.contains(KeySpecFlags::NOT_KEY))
        };
        let has_varflags = self
            .key_specs
            .iter()
            .any(|ks| ks.flags.contains(KeySpecFlags::VARIABLE_FLAGS));
        if real().next().is_some()
            && !has_varflags
            && keys_from_specs(self, args, out, Some(&mut *flags))
        {
            return Ok(());
        }
        out.clear();
        flags.clear();
        self.getkeys.run(args, out);
        if self.id == super::CommandId::Sort {
            // Redis 7.0's `sortGetKeys`: the sorted key is read, the STORE key overwritten.
            let read = KeySpecFlags::RO.union(KeySpecFlags::ACCESS);
            let store = KeySpecFlags::OW.union(KeySpecFlags::UPDATE);
            flags.extend(
                out.iter()
                    .enumerate()
                    .map(|(i, _)| if i == 0 { read } else { store }),
            );
            return Ok(());
        }
        let proc_flags = match self.id {
            super::CommandId::Set => set_key_flags(args),
            super::CommandId::Bitfield => bitfield_key_flags(args),
            _ => real().fold(KeySpecFlags::NONE, |acc, ks| acc.union(ks.flags)),
        };
        flags.extend(out.iter().map(|_| proc_flags));
        Ok(())
    }
}

/// Redis 7.0's `setGetKeys`: `SET key value ... GET` reads and updates, else overwrites.
fn set_key_flags<A: ArgList + ?Sized>(args: &A) -> KeySpecFlags {
    if (3..args.len()).any(|i| c_eq(args.arg(i), "get")) {
        KeySpecFlags::RW
            .union(KeySpecFlags::ACCESS)
            .union(KeySpecFlags::UPDATE)
    } else {
        KeySpecFlags::OW.union(KeySpecFlags::UPDATE)
    }
}

/// Redis 7.0's `bitfieldGetKeys`: only `GET`s (and `OVERFLOW`) read, anything else writes.
fn bitfield_key_flags<A: ArgList + ?Sized>(args: &A) -> KeySpecFlags {
    let mut i = 2;
    let mut readonly = true;
    while i < args.len() {
        let remaining = args.len() - i - 1;
        let arg = args.arg(i);
        if c_eq(arg, "get") && remaining >= 2 {
            i += 3;
        } else if c_eq(arg, "overflow") && remaining >= 1 {
            i += 2;
        } else {
            readonly = false;
            break;
        }
    }
    if readonly {
        KeySpecFlags::RO.union(KeySpecFlags::ACCESS)
    } else {
        KeySpecFlags::RW
            .union(KeySpecFlags::ACCESS)
            .union(KeySpecFlags::UPDATE)
    }
}
