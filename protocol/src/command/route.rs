//! How redshard treats each command: the hand-maintained [`Route`] of every command.
//!
//! The generated table calls [`route_of`] for every entry (at compile time). A name not in
//! any list below is [`Route::Keyed`]: routed by its keys, which must all hash to one slot,
//! or to any master when it has none (TIME, LASTSAVE, ROLE, OBJECT HELP...). Names are
//! Redis's lowercase `fullname`s (`config|get`); a unit test checks that every name here
//! exists in the table, so a typo cannot silently fall back to `Keyed`.
//!
//! Container commands (CONFIG, CLIENT, ...) are routed by subcommand: [`resolve`] never
//! returns a container alone except `COMMAND`, because a container without a subcommand
//! fails Redis's arity check.
//!
//! [`resolve`]: super::resolve

use super::{const_eq, CommandId, Merge, Route, Split};

/// A command the proxy answers itself ([`Route::Local`]): they describe or change the
/// client's own connection, or the proxy (INFO, COMMAND), and a backend's answer would
/// describe the proxy's pooled backend connection instead. [`Local::of`] is the one list of
/// them; the session's handler is an exhaustive `match` on this enum, so a command routed
/// here without a handler does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// PING [message].
    Ping,
    /// ECHO message.
    Echo,
    /// QUIT: OK, then close after the replies.
    Quit,
    /// SELECT db: only database 0 exists.
    Select,
    /// WAIT counts the replicas that applied the client's writes, which the proxy tracks.
    Wait,
    /// Redis Cluster's connection commands (ASKING, READONLY, READWRITE), which a standalone
    /// Redis refuses with [`crate::ClientError::ClusterDisabled`]: redshard presents itself as one standalone
    /// server, so it answers them the same way, without touching a node. (A cluster-aware
    /// client cannot use redshard as a cluster anyway: CLUSTER SLOTS / SHARDS are refused.)
    NotACluster,
    /// AUTH: clients authenticate to the proxy.
    Auth,
    /// HELLO: protocol version, authentication, name.
    Hello,
    /// RESET the connection's state.
    Reset,
    /// INFO: the proxy's own sections and the backends' merged.
    Info,
    /// COMMAND COUNT of the proxy's table.
    CommandCount,
    /// COMMAND GETKEYS by the proxy's key extraction.
    CommandGetkeys,
    /// Documentation and help texts (COMMAND, COMMAND INFO / DOCS / LIST / HELP /
    /// GETKEYSANDFLAGS, CLIENT HELP): identical on every master since they run the table's
    /// Redis version, so the proxy sends them to any master and forwards its answer.
    FromBackend,
    /// CONFIG GET: clients read settings such as `maxmemory-policy`; the proxy answers from
    /// its own view rather than from one arbitrary backend.
    ConfigGet,
    /// SLOWLOG GET: the proxy keeps its own SLOWLOG (client-seen latency, all shards).
    SlowlogGet,
    /// SLOWLOG LEN.
    SlowlogLen,
    /// SLOWLOG RESET.
    SlowlogReset,
    /// CLIENT ID.
    ClientId,
    /// CLIENT SETNAME.
    ClientSetname,
    /// CLIENT GETNAME.
    ClientGetname,
    /// CLIENT SETINFO (Redis 7.2, see `extra.rs`).
    ClientSetinfo,
    /// CLIENT INFO.
    ClientInfo,
    /// CLIENT LIST.
    ClientList,
    /// CLIENT NO-EVICT and CLIENT NO-TOUCH: flags of the client's connection, which is the
    /// proxy's; accepted with OK.
    ClientFlag,
}

impl Local {
    /// How the proxy answers `id`, or `None` when a backend does.
    #[must_use]
    pub const fn of(id: CommandId) -> Option<Local> {
        use CommandId as C;
        Some(match id {
            C::Ping => Local::Ping,
            C::Echo => Local::Echo,
            C::Quit => Local::Quit,
            C::Select => Local::Select,
            C::Wait => Local::Wait,
            C::Asking | C::Readonly | C::Readwrite => Local::NotACluster,
            C::Auth => Local::Auth,
            C::Hello => Local::Hello,
            C::Reset => Local::Reset,
            C::Info => Local::Info,
            C::CommandCount => Local::CommandCount,
            C::CommandGetkeys => Local::CommandGetkeys,
            C::Command
            | C::CommandInfo
            | C::CommandDocs
            | C::CommandList
            | C::CommandHelp
            | C::CommandGetkeysandflags
            | C::ClientHelp => Local::FromBackend,
            C::ConfigGet => Local::ConfigGet,
            C::SlowlogGet => Local::SlowlogGet,
            C::SlowlogLen => Local::SlowlogLen,
            C::SlowlogReset => Local::SlowlogReset,
            C::ClientId => Local::ClientId,
            C::ClientSetname => Local::ClientSetname,
            C::ClientGetname => Local::ClientGetname,
            C::ClientSetinfo => Local::ClientSetinfo,
            C::ClientInfo => Local::ClientInfo,
            C::ClientList => Local::ClientList,
            C::ClientNoEvict | C::ClientNoTouch => Local::ClientFlag,
            _ => return None,
        })
    }
}

/// Keys may span slots; Redis Cluster clients split these the same way, and each part is
/// itself a valid command.
pub const SPLIT: &[(&str, Split)] = &[
    ("mget", Split::Mget),
    ("mset", Split::Mset),
    ("del", Split::SumIntegers),
    ("unlink", Split::SumIntegers),
    ("exists", Split::SumIntegers),
    ("touch", Split::SumIntegers),
];

/// Whole-keyspace or whole-server-state commands: every master must see them.
/// - DBSIZE, KEYS: each master holds a part of the keyspace.
/// - SCRIPT LOAD / FUNCTION LOAD: every master must know the script or library, since a
///   later EVALSHA/FCALL may go to any of them; the SHA (or library name) is the same
///   everywhere, so the first reply is the reply.
/// - SCRIPT FLUSH, FUNCTION DELETE / FLUSH / RESTORE: keep the masters' script and function
///   state identical; success only when every master succeeded.
/// - SCRIPT EXISTS: a script exists for the client only if every master has it.
/// - RANDOMKEY: any master's random key, starting from a random master and skipping empty ones,
///   so that nil means the whole keyspace is empty.
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
];

/// Destructive on every shard: fanned out only when the operator enabled it.
pub const FLUSH: &[&str] = &["flushall", "flushdb"];

/// Never sent to a backend from a client connection.
/// - Server life, persistence and replication belong to the operator and to redshard's own
///   failover and resync (SHUTDOWN, SAVE, BGSAVE, BGREWRITEAOF, REPLICAOF, SLAVEOF,
///   FAILOVER, SYNC, PSYNC, REPLCONF, DEBUG, CONFIG SET/REWRITE/RESETSTAT, MODULE).
/// - Cluster protocol: the backends are not a Redis Cluster (CLUSTER, RESTORE-ASKING).
/// - Databases other than 0 and cross-node key moves would escape the slot table (SWAPDB,
///   MOVE, MIGRATE).
/// - MONITOR streams one backend's traffic, other clients' included.
/// - CLIENT KILL/PAUSE/UNPAUSE/UNBLOCK would act on the proxy's pooled backend connections
///   shared by every client; REPLY/TRACKING/CACHING/GETREDIR/TRACKINGINFO change how a
///   backend connection answers, which would desynchronise a shared lane.
/// - SCRIPT KILL / FUNCTION KILL would kill whichever script runs on one backend, not the
///   client's; SCRIPT DEBUG needs a private forked server.
/// - ACL (all subcommands): backends authenticate the proxy, not the client, so even
///   ACL WHOAMI / CAT / LOG would answer about the proxy's backend user and config; clients
///   authenticate to the proxy (AUTH/HELLO are local).
/// - LATENCY RESET would reset one arbitrary backend's statistics.
/// - PFSELFTEST / PFDEBUG are internal testing commands.
/// - Container names alone (ACL, CLIENT, ...): always an arity error in Redis; they are
///   listed so that the container's own entry does not look routable.
pub const FORBIDDEN: &[&str] = &[
    "shutdown",
    "debug",
    "config|set",
    "config|rewrite",
    "config|resetstat",
    "replicaof",
    "slaveof",
    "failover",
    "sync",
    "psync",
    "replconf",
    "save",
    "bgsave",
    "bgrewriteaof",
    "migrate",
    "monitor",
    "swapdb",
    "move",
    "restore-asking",
    "cluster",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|bumpepoch",
    "cluster|count-failure-reports",
    "cluster|countkeysinslot",
    "cluster|delslots",
    "cluster|delslotsrange",
    "cluster|failover",
    "cluster|flushslots",
    "cluster|forget",
    "cluster|getkeysinslot",
    "cluster|help",
    "cluster|info",
    "cluster|keyslot",
    "cluster|links",
    "cluster|meet",
    "cluster|myid",
    "cluster|nodes",
    "cluster|replicas",
    "cluster|replicate",
    "cluster|reset",
    "cluster|saveconfig",
    "cluster|set-config-epoch",
    "cluster|setslot",
    "cluster|shards",
    "cluster|slaves",
    "cluster|slots",
    "acl",
    "acl|cat",
    "acl|deluser",
    "acl|dryrun",
    "acl|genpass",
    "acl|getuser",
    "acl|help",
    "acl|list",
    "acl|load",
    "acl|log",
    "acl|save",
    "acl|setuser",
    "acl|users",
    "acl|whoami",
    "module",
    "module|help",
    "module|list",
    "module|load",
    "module|loadex",
    "module|unload",
    "client|kill",
    "client|pause",
    "client|unpause",
    "client|reply",
    "client|tracking",
    "client|caching",
    "client|getredir",
    "client|trackinginfo",
    "client|unblock",
    "latency|reset",
    "script|kill",
    "script|debug",
    "function|kill",
    "pfselftest",
    "pfdebug",
    "client",
    "config",
    "function",
    "latency",
    "memory",
    "object",
    "pubsub",
    "script",
    "slowlog",
    "xgroup",
    "xinfo",
];

/// Need a backend connection of their own for a while, which the plain pipelined lanes
/// cannot give.
/// - Transactions and optimistic locking: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
/// - Every command with Redis's `blocking` flag (a unit test checks it), except XREAD and
///   XREADGROUP, which block only with `BLOCK`: they stay `Keyed` and the session checks
///   for `BLOCK` itself.
pub const DEDICATED: &[&str] = &[
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "blpop",
    "brpop",
    "brpoplpush",
    "blmove",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
];

/// Pub/sub: a channel lives on the master of its slot (PUBLISH and SUBSCRIBE of a channel
/// meet there; SPUBLISH's channel is a `NOT_KEY` key spec, so `key_indices` does not report
/// it), patterns on every master; subscriptions hold connections of their own. See the
/// session's `pubsub.rs`.
pub const PUBSUB: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "publish",
    "spublish",
    "pubsub|channels",
    "pubsub|help",
    "pubsub|numpat",
    "pubsub|numsub",
    "pubsub|shardchannels",
    "pubsub|shardnumsub",
];

/// Redis 7.0.15's `@dangerous` ACL category (`ACL CAT dangerous`), which a `no-dangerous`
/// user may not run; the integration module `command_table_live` (`tests/integration/command_table_live.rs`) compares it with a live server.
pub const DANGEROUS: &[&str] = &[
    "acl|deluser",
    "acl|dryrun",
    "acl|getuser",
    "acl|list",
    "acl|load",
    "acl|log",
    "acl|save",
    "acl|setuser",
    "acl|users",
    "bgrewriteaof",
    "bgsave",
    "client|kill",
    "client|list",
    "client|no-evict",
    "client|pause",
    "client|unblock",
    "client|unpause",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|bumpepoch",
    "cluster|count-failure-reports",
    "cluster|delslots",
    "cluster|delslotsrange",
    "cluster|failover",
    "cluster|flushslots",
    "cluster|forget",
    "cluster|meet",
    "cluster|replicas",
    "cluster|replicate",
    "cluster|reset",
    "cluster|saveconfig",
    "cluster|set-config-epoch",
    "cluster|setslot",
    "cluster|slaves",
    "config|get",
    "config|resetstat",
    "config|rewrite",
    "config|set",
    "debug",
    "failover",
    "flushall",
    "flushdb",
    "info",
    "keys",
    "lastsave",
    "latency|doctor",
    "latency|graph",
    "latency|histogram",
    "latency|history",
    "latency|latest",
    "latency|reset",
    "migrate",
    "module|list",
    "module|load",
    "module|loadex",
    "module|unload",
    "monitor",
    "pfdebug",
    "pfselftest",
    "psync",
    "replconf",
    "replicaof",
    "restore",
    "restore-asking",
    "role",
    "save",
    "shutdown",
    "slaveof",
    "slowlog|get",
    "slowlog|len",
    "slowlog|reset",
    "sort",
    "sort_ro",
    "swapdb",
    "sync",
];

/// Whether `name` is in `list`, at compile time.
const fn listed(list: &[&str], name: &str) -> bool {
    let mut i = 0;
    while i < list.len() {
        if const_eq(list[i], name) {
            return true;
        }
        i += 1;
    }
    false
}

/// The [`Route`] of the command or subcommand `id`, called `name` (lowercase `fullname`).
pub const fn route_of(id: CommandId, name: &str) -> Route {
    // Each master holds a part of the keyspace: the session visits them in turn.
    if const_eq(name, "scan") {
        return Route::Scan;
    }
    if Local::of(id).is_some() {
        return Route::Local;
    }
    if listed(PUBSUB, name) {
        return Route::PubSub;
    }
    let mut i = 0;
    while i < SPLIT.len() {
        if const_eq(SPLIT[i].0, name) {
            return Route::Split(SPLIT[i].1);
        }
        i += 1;
    }
    let mut i = 0;
    while i < FAN_OUT.len() {
        if const_eq(FAN_OUT[i].0, name) {
            return Route::FanOut(FAN_OUT[i].1);
        }
        i += 1;
    }
    if listed(FLUSH, name) {
        return Route::Flush;
    }
    if listed(FORBIDDEN, name) {
        return Route::Forbidden;
    }
    if listed(DEDICATED, name) {
        return Route::Dedicated;
    }
    Route::Keyed
}

/// Every name listed above, for the tests.
#[cfg(test)]
pub fn listed_names() -> impl Iterator<Item = &'static str> {
    FLUSH
        .iter()
        .chain(FORBIDDEN)
        .chain(DEDICATED)
        .chain(PUBSUB)
        .copied()
        .chain(SPLIT.iter().map(|(n, _)| *n))
        .chain(FAN_OUT.iter().map(|(n, _)| *n))
}
