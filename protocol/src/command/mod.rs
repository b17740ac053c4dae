//! The Redis 7.0 command table and how redshard treats each command.
//!
//! - [`lookup`] finds a top-level command by name (case-insensitive, allocation-free);
//!   [`resolve`] turns a whole request into the spec that governs it (the subcommand spec for
//!   container commands such as `CONFIG GET` → `config|get`) and checks the arity, with
//!   Redis's own error texts.
//! - [`CommandSpec::key_indices`] finds the keys of a request exactly as Redis 7.0's
//!   `getKeysFromCommandWithSpecs` does (what `COMMAND GETKEYS` answers).
//! - [`CommandSpec::route`] says how the proxy treats the command ([`Route`]).
//!
//! # Where the data comes from
//!
//! `table.rs` is generated from a live redis-server 7.0 (`COMMAND`, `COMMAND DOCS`) by
//! `tools/gen-command-table.py`. To regenerate it, from the repository root, with python3
//! and `redis-server` 7.0 on `PATH`:
//!
//! ```text
//! python3 tools/gen-command-table.py --out protocol/src/command/table.rs
//! ```
//!
//! The script spawns its own server on a free 127.0.0.1 port (or use `--port P`) and runs
//! rustfmt on the result. Two things cannot be read from a server and are hand-maintained
//! in Rust, evaluated at compile time by the table:
//! - [`Route`]s, in `route.rs` (`route_of`, a `match` on [`CommandId`]), with the reason for
//!   each group of commands;
//! - which commands have a Redis `getkeys_proc` (`get_keys_function` in Redis's
//!   `src/commands/*.json`), in `procs.rs` (`getkeys_of`, a `match` on [`CommandId`] too).
//!
//! Redis's ACL categories (`@read`, `@dangerous`, ...) are read from the server with the rest
//! ([`CommandSpec::acl`]).
//!
//! The integration test the integration module `command_table_live` (`tests/integration/command_table_live.rs`) compares the table and
//! `key_indices` with a live server.

mod error;
mod extra;
mod flags;
mod keys;
mod procs;
pub mod route;
pub mod script_keys;
pub mod support;
mod table;
#[cfg(test)]
mod tests;

pub use error::{CommandError, CommandErrorKind};
pub use flags::{AclCategories, Flags, KeySpecFlags};
pub use table::REDIS_VERSION;

use procs::GetKeys;
pub use route::Local;
pub use table::CommandId;

/// How redshard treats a command from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Routed by its keys: every key must hash to one slot; a command with no key goes to any master.
    Keyed,
    /// Keys may span slots: split per shard (and lane) and merged in key order.
    Split(Split),
    /// Answered by the proxy itself (session-local).
    Local,
    /// Sent to every master and the replies merged.
    FanOut(Merge),
    /// FLUSHALL / FLUSHDB: fanned out (Merge::AllOk) only when `allow_flush` is set, refused otherwise.
    Flush,
    /// Never reaches a backend from a client connection.
    Forbidden,
    /// Needs a dedicated backend connection (transactions, blocking commands, pub/sub, WATCH). Not supported by the plain data path.
    Dedicated,
    /// SCAN: visits the masters one after another; the proxy's cursor carries the shard.
    Scan,
    /// Pub/sub: channels live on the master of their slot, patterns on every master.
    PubSub,
}

/// How a [`Route::Split`] command is split into per-shard parts and merged back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `MGET key...`: one key per element; the reply arrays are re-assembled in key order.
    Mget,
    /// `MSET key value...`: key/value pairs; every part must answer `OK`.
    Mset,
    /// `DEL`/`UNLINK`/`EXISTS`/`TOUCH key...`: the integer replies are summed.
    SumIntegers,
}

/// How the replies of a [`Route::FanOut`] command are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Integer replies summed (DBSIZE).
    SumIntegers,
    /// Array replies concatenated (KEYS).
    ConcatArrays,
    /// Every master must answer `OK`; the merged reply is `OK`.
    AllOk,
    /// Same reply expected from all, return the first.
    First,
    /// Element-wise AND of integer arrays (SCRIPT EXISTS).
    AndArrays,
    /// The first non-null reply, starting from a random master (RANDOMKEY).
    AnyNonNull,
    /// The smallest integer reply: the oldest time (LASTSAVE).
    Oldest,
}

/// Where the search for a key spec's keys begins (Redis 7.0 `begin_search`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeginSearch {
    /// The keys begin at this argument index (the command name is index 0).
    Index(i32),
    /// The keys begin right after `keyword` (compared case-insensitively), searched from
    /// `startfrom` forwards, or backwards from `argc + startfrom` when it is negative.
    Keyword {
        /// The keyword, as Redis spells it (`STREAMS`, `KEYS`, `STORE`...).
        keyword: &'static str,
        /// Where the search starts; negative counts from the end.
        startfrom: i32,
    },
    /// The keys cannot be found from the arguments alone (SORT's BY/GET/STORE).
    Unknown,
}

/// Which arguments after the begin-search point are keys (Redis 7.0 `find_keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the begin point up to `lastkey` (relative to it; negative: relative to the
    /// end of the arguments), every `keystep` arguments. A non-zero `limit` with
    /// `lastkey == -1` means the keys are the first `1/limit` of the remaining arguments.
    Range {
        /// Index of the last key relative to the begin point, or negative from the end.
        lastkey: i32,
        /// Distance between two keys.
        keystep: i32,
        /// With `lastkey == -1`: the keys are `(argc - begin) / limit` of the remaining args.
        limit: i32,
    },
    /// The number of keys is an argument (`numkeys`).
    Keynum {
        /// Index of the `numkeys` argument, relative to the begin point.
        keynumidx: i32,
        /// Index of the first key, relative to the begin point.
        firstkey: i32,
        /// Distance between two keys.
        keystep: i32,
    },
    /// The keys cannot be found from the arguments alone.
    Unknown,
}

/// One Redis 7.0 key specification: where some of a command's keys are and how they are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// How the keys are accessed (RO/RW/OW/RM, ...), and the spec's own caveats
    /// (INCOMPLETE, VARIABLE_FLAGS, NOT_KEY).
    pub flags: KeySpecFlags,
    /// Where the search begins.
    pub begin_search: BeginSearch,
    /// Which arguments are keys.
    pub find_keys: FindKeys,
}

/// Everything redshard knows about one command or subcommand.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lowercase name; subcommands as Redis's `fullname`, `container|sub` (`config|get`).
    pub name: &'static str,
    /// The typed name, for `match`es the compiler checks.
    pub id: CommandId,
    /// Redis arity: exactly `arity` arguments (the name included) when positive, at least
    /// `-arity` when negative.
    pub arity: i32,
    /// Command flags.
    pub flags: Flags,
    /// Redis's ACL categories of the command (what `+@read`, `-@write` ... select).
    pub acl: AclCategories,
    /// Legacy first key index (0: no key), as `COMMAND` reports it.
    pub first_key: i32,
    /// Legacy last key index (negative: from the end).
    pub last_key: i32,
    /// Legacy key step.
    pub step: i32,
    /// Redis 7 key specs, in Redis's order.
    pub key_specs: &'static [KeySpec],
    /// Subcommands of a container command, sorted by name; empty for other commands.
    pub subcommands: &'static [CommandSpec],
    /// How redshard treats this command.
    pub route: Route,
    /// Redis's `getkeys_proc` for this command, the fallback of the key specs.
    pub(crate) getkeys: GetKeys,
}

/// Minimal view of a request's arguments so this module does not depend on the scanner.
///
/// `arg(0)` is the command name. `arg(i)` may panic when `i >= len()`; this module never
/// asks for such an index.
pub trait ArgList {
    /// Number of arguments, the command name included.
    fn len(&self) -> usize;
    /// The `i`-th argument's bytes.
    fn arg(&self, i: usize) -> &[u8];
    /// Whether there is no argument at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A scanned request's arguments, read in place from the client's buffer.
impl ArgList for crate::resp::Args<'_> {
    fn len(&self) -> usize {
        crate::resp::Args::len(self)
    }

    fn arg(&self, i: usize) -> &[u8] {
        self.get(i)
    }
}

impl<T: AsRef<[u8]>> ArgList for [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn arg(&self, i: usize) -> &[u8] {
        self[i].as_ref()
    }
}

impl<T: AsRef<[u8]>> ArgList for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn arg(&self, i: usize) -> &[u8] {
        self[i].as_ref()
    }
}

impl<T: AsRef<[u8]>, const N: usize> ArgList for [T; N] {
    fn len(&self) -> usize {
        N
    }
    fn arg(&self, i: usize) -> &[u8] {
        self[i].as_ref()
    }
}

/// Longest top-level command name that [`lookup`] lowercases (Redis 7.0's longest is 20).
const MAX_NAME: usize = 32;

/// Case-insensitive look-up of a top-level command name.
///
/// Allocation-free: the name is lowercased into a 32-byte stack buffer and matched by the
/// generated `match` on the byte string. Measured at about 20 ns per look-up in a release
/// build, lowercasing included (a binary search over the sorted table took about 60 ns).
#[must_use]
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    table::index_of(lower).map(|i| &table::COMMANDS[i])
}

/// Resolve a whole request (`args[0]` = command name) to the spec that governs it: the
/// subcommand spec for container commands (CONFIG GET → `config|get`), with Redis's own
/// arity check.
///
/// Like Redis's `lookupCommand`, a container command alone (`CONFIG`) resolves to the
/// container, which then fails the arity check (`COMMAND` alone is valid).
///
/// # Errors
///
/// With Redis 7.0's exact texts (`commandCheckExistence`, `commandCheckArity`):
/// - unknown command: `ERR unknown command 'foo', with args beginning with: 'a' 'b' `
///   (also for an empty request);
/// - unknown subcommand: `ERR unknown subcommand 'foo'. Try CONFIG HELP.`;
/// - wrong arity: `ERR wrong number of arguments for 'get' command` (subcommands as
///   `'config|get'`).
pub fn resolve<A: ArgList + ?Sized>(args: &A) -> Result<&'static CommandSpec, CommandError> {
    if args.is_empty() {
        return Err(CommandError::unknown_command(args));
    }
    let base = lookup(args.arg(0)).ok_or_else(|| CommandError::unknown_command(args))?;
    let spec = if base.has_subcommands() && args.len() >= 2 {
        let sub = args.arg(1);
        base.subcommand(sub)
            .or_else(|| extra_subcommand(base, sub))
            .ok_or_else(|| CommandError::unknown_subcommand(base, sub))?
    } else {
        base
    };
    if !spec.arity_ok(args.len()) {
        return Err(CommandError::wrong_arity(spec));
    }
    Ok(spec)
}

/// The spec of an ACL rule's command name, as Redis 7.0's `ACLLookupCommand` finds it:
/// `get`, or `config|get` for a subcommand (case-insensitive; a `|` more is no command).
#[must_use]
pub fn lookup_fullname(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut parts = name.splitn(3, |&b| b == b'|');
    let base = lookup(parts.next()?)?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(base),
        (Some(sub), None) if base.has_subcommands() => {
            base.subcommand(sub).or_else(|| extra_subcommand(base, sub))
        }
        _ => None,
    }
}

/// The subcommands of a container as ACL rules see them: the table's, and for CLIENT the
/// proxy's extra ones (see `extra.rs`).
pub fn acl_subcommands(spec: &CommandSpec) -> impl Iterator<Item = &'static CommandSpec> {
    let extras: &'static [CommandSpec] = if spec.id == CommandId::Client {
        &extra::CLIENT_EXTRAS
    } else {
        &[]
    };
    spec.subcommands.iter().chain(extras.iter())
}

/// A subcommand the proxy knows beyond the table (see `extra.rs`).
fn extra_subcommand(base: &CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    if base.id != CommandId::Client {
        return None;
    }
    extra::CLIENT_EXTRAS
        .iter()
        .find(|s| s.name.as_bytes()[7..].eq_ignore_ascii_case(sub))
}

/// Every top-level spec, sorted by name (for COMMAND COUNT, COMMAND LIST and tests).
pub fn commands() -> impl Iterator<Item = &'static CommandSpec> {
    table::COMMANDS.iter()
}

/// Every spec of the table: each top-level command, then its subcommands (not the proxy's
/// extra CLIENT subcommands, which the backends do not know). For what is derived from the
/// table as a whole, such as the ACL rules of the forbidden commands.
pub fn all_specs() -> impl Iterator<Item = &'static CommandSpec> {
    commands().flat_map(|c| std::iter::once(c).chain(c.subcommands))
}

/// Every spec the proxy resolves: [`all_specs`] and the proxy's extra CLIENT subcommands.
/// For what looks a spec up by its id rarely (CLIENT LIST's `cmd`).
pub fn every_spec() -> impl Iterator<Item = &'static CommandSpec> {
    all_specs().chain(extra::CLIENT_EXTRAS.iter())
}

impl CommandSpec {
    /// Whether the command may modify the dataset (`write`).
    #[must_use]
    pub fn is_write(&self) -> bool {
        self.flags.contains(Flags::WRITE)
    }

    /// Whether the command never modifies keys (`readonly`).
    #[must_use]
    pub fn is_readonly(&self) -> bool {
        self.flags.contains(Flags::READONLY)
    }

    /// Whether the command is in Redis's `@dangerous` ACL category.
    #[must_use]
    pub fn is_dangerous(&self) -> bool {
        self.acl.contains(AclCategories::DANGEROUS)
    }

    /// Whether the command may block (`blocking`).
    #[must_use]
    pub fn is_blocking(&self) -> bool {
        self.flags.contains(Flags::BLOCKING)
    }

    /// Whether the command is administrative (`admin`).
    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.flags.contains(Flags::ADMIN)
    }

    /// Whether the command is a pub/sub command (`pubsub`).
    #[must_use]
    pub fn is_pubsub(&self) -> bool {
        self.flags.contains(Flags::PUBSUB)
    }

    /// Whether the command may replicate even when not a write (`may_replicate`: EVAL,
    /// EVALSHA, FCALL, PFCOUNT, PUBLISH, SPUBLISH).
    #[must_use]
    pub fn may_replicate(&self) -> bool {
        self.flags.contains(Flags::MAY_REPLICATE)
    }

    /// Whether this is a container command (CONFIG, CLIENT, ...).
    #[must_use]
    pub fn has_subcommands(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// Whether this spec is a subcommand (`config|get`).
    #[must_use]
    pub fn is_subcommand(&self) -> bool {
        self.name.contains('|')
    }

    /// The top-level command name: `config` for `config|get`, the name itself otherwise.
    #[must_use]
    pub fn container_name(&self) -> &'static str {
        self.name.split('|').next().unwrap_or(self.name)
    }

    /// Case-insensitive look-up of a subcommand of this container (`get` in `config`).
    #[must_use]
    pub fn subcommand(&self, name: &[u8]) -> Option<&'static CommandSpec> {
        let prefix = self.name.len() + 1;
        self.subcommands.iter().find(|s| {
            s.name
                .as_bytes()
                .get(prefix..)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }

    /// Whether a request of `argc` arguments (the name included) passes Redis's arity check.
    #[must_use]
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        let arity = i64::from(self.arity);
        if arity > 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
}
