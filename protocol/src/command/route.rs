//! How redshard treats each command: the hand-maintained [`Route`] of every command.
//!
//! The generated table calls [`route_of`] for every entry, at compile time, so reading a
//! command's route at run time is reading a field. [`route_of`] is an exhaustive `match` on
//! [`CommandId`], with the reason for each group of commands: a command added to the table
//! (a regenerated table, a new extra) does not compile until it is given a route, and a
//! misspelt command is a compile error rather than a silent fall-back to `Keyed`.
//!
//! Container commands (CONFIG, CLIENT, ...) are routed by subcommand: [`resolve`] never
//! returns a container alone except `COMMAND`, because a container without a subcommand
//! fails Redis's arity check.
//!
//! [`resolve`]: super::resolve

use super::{CommandId, Merge, Route, Split};

/// A command the proxy answers itself ([`Route::Local`]): they describe or change the
/// client's own connection, or the proxy (INFO, COMMAND), and a backend's answer would
/// describe the proxy's pooled backend connection instead. [`Local::of`] gives each its kind
/// ([`route_of`] checks, at compile time, that it knows exactly the commands routed here);
/// the session's handler is an exhaustive `match` on this enum, so a command routed here
/// without a handler does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// PING [message].
    Ping,
    /// ECHO message.
    Echo,
    /// QUIT: OK, then close after the replies.
    Quit,
    /// SELECT db: the database the client's later requests run in (the proxy keeps it).
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
    /// GETKEYSANDFLAGS, CLIENT HELP, ACL HELP, ACL CAT's categories and their commands):
    /// identical on every master since they run the table's Redis version, so the proxy sends
    /// them to any master and forwards its answer. (ACL GENPASS too: a random password from
    /// any master.)
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
    /// SCRIPT KILL: the lanes queue behind a running script, so the controller sends it to
    /// every master on connections of its own.
    ScriptKill,
    /// FUNCTION KILL, as SCRIPT KILL.
    FunctionKill,
    /// CLIENT KILL of the proxy's own clients (the backend connections are shared).
    ClientKill,
    /// CLIENT PAUSE: the proxy holds its clients' commands at dispatch.
    ClientPause,
    /// CLIENT UNPAUSE.
    ClientUnpause,
    /// CLIENT UNBLOCK of a client blocked on its private backend connection: the proxy
    /// answers it and closes that connection.
    ClientUnblock,
    /// CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO: the proxy tracks what its
    /// clients read and sends their invalidations (see the session's `tracking.rs`).
    Tracking,
    /// CONFIG SET / RESETSTAT / REWRITE and LATENCY RESET: server settings and statistics of
    /// every node (masters and replicas), which the controller applies on connections of its
    /// own; one node alone would leave the shards configured differently.
    EveryNode,
    /// MONITOR: the proxy streams every client's commands, across all shards.
    Monitor,
    /// CLIENT REPLY ON|OFF|SKIP: which of the client's replies the proxy writes.
    ClientReply,
    /// ACL WHOAMI: the proxy's user the client authenticated as.
    AclWhoami,
    /// ACL USERS: the proxy's users.
    AclUsers,
    /// ACL LIST: the proxy's users as ACL rules.
    AclList,
    /// ACL GETUSER: one of the proxy's users.
    AclGetuser,
    /// REPLICAOF / SLAVEOF: the proxy is a master, so `NO ONE` is answered `+OK` as a master
    /// answers it; making it a replica of another server is refused (the controller manages
    /// the nodes' replication).
    Replicaof,
    /// MODULE LIST: the proxy serves no module's commands (its table is Redis's own), so it
    /// lists none, as its HELLO says.
    ModuleList,
    /// SAVE, BGSAVE and BGREWRITEAOF: the masters hold the data set, so the controller sends
    /// them to every master on connections of its own and answers as one server (SAVE as a
    /// background save it waits for, so that no master is blocked).
    EveryMaster,
    /// ACL SETUSER: creates or changes one of the proxy's users.
    AclSetuser,
    /// ACL DELUSER: removes some of the proxy's users.
    AclDeluser,
    /// ACL DRYRUN: whether one of the proxy's users may run a command.
    AclDryrun,
    /// ACL LOG: the proxy's refusals.
    AclLog,
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
            | C::ClientHelp
            | C::AclCat
            | C::AclHelp
            | C::AclGenpass => Local::FromBackend,
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
            C::ScriptKill => Local::ScriptKill,
            C::FunctionKill => Local::FunctionKill,
            C::ClientKill => Local::ClientKill,
            C::ClientPause => Local::ClientPause,
            C::ClientUnpause => Local::ClientUnpause,
            C::ClientUnblock => Local::ClientUnblock,
            C::ClientTracking | C::ClientCaching | C::ClientGetredir | C::ClientTrackinginfo => {
                Local::Tracking
            }
            C::ConfigSet | C::ConfigResetstat | C::ConfigRewrite | C::LatencyReset => {
                Local::EveryNode
            }
            C::Monitor => Local::Monitor,
            C::ClientReply => Local::ClientReply,
            C::AclWhoami => Local::AclWhoami,
            C::AclUsers => Local::AclUsers,
            C::AclList => Local::AclList,
            C::AclGetuser => Local::AclGetuser,
            C::Replicaof | C::Slaveof => Local::Replicaof,
            C::Save | C::Bgsave | C::Bgrewriteaof => Local::EveryMaster,
            C::ModuleList => Local::ModuleList,
            C::AclSetuser => Local::AclSetuser,
            C::AclDeluser => Local::AclDeluser,
            C::AclDryrun => Local::AclDryrun,
            C::AclLog => Local::AclLog,
            _ => return None,
        })
    }
}

/// The [`Route`] of the command or subcommand `id`.
///
/// # Panics
///
/// At compile time (the table calls it in a `static`), when the [`Route::Local`] arm and
/// [`Local::of`] disagree about a command: each local command needs both its route and its
/// handler.
#[must_use]
pub const fn route_of(id: CommandId) -> Route {
    let route = declared_route(id);
    assert!(
        matches!(route, Route::Local) == Local::of(id).is_some(),
        "a command is routed Local exactly when Local::of knows it"
    );
    route
}

/// The route of every command, by group ([`route_of`] checks the local ones).
const fn declared_route(id: CommandId) -> Route {
    use CommandId as C;
    match id {
        // Answered by the proxy itself: see [`Local`].
        C::Asking
        | C::Auth
        | C::ClientGetname
        | C::ClientHelp
        | C::ClientId
        | C::ClientInfo
        | C::ClientKill
        | C::ClientList
        | C::ClientNoEvict
        | C::ClientPause
        | C::ClientUnblock
        | C::ClientUnpause
        | C::ClientNoTouch
        | C::ClientSetinfo
        | C::ClientSetname
        | C::ClientTracking
        | C::ClientCaching
        | C::ClientGetredir
        | C::ClientTrackinginfo
        | C::Command
        | C::CommandCount
        | C::CommandDocs
        | C::CommandGetkeys
        | C::CommandGetkeysandflags
        | C::CommandHelp
        | C::CommandInfo
        | C::CommandList
        | C::ConfigGet
        | C::Echo
        | C::Hello
        | C::Info
        | C::Ping
        | C::Quit
        | C::Readonly
        | C::Readwrite
        | C::Reset
        | C::ScriptKill
        | C::FunctionKill
        | C::Select
        | C::SlowlogGet
        | C::SlowlogLen
        | C::SlowlogReset
        | C::Wait
        | C::ConfigSet
        | C::ConfigResetstat
        | C::ConfigRewrite
        | C::LatencyReset
        | C::Monitor
        | C::ClientReply
        | C::AclWhoami
        | C::AclCat
        | C::AclHelp
        | C::AclGenpass
        | C::AclUsers
        | C::AclList
        | C::AclGetuser
        | C::Replicaof
        | C::Slaveof
        | C::Save
        | C::Bgsave
        | C::Bgrewriteaof
        | C::ModuleList
        | C::AclSetuser
        | C::AclDeluser
        | C::AclDryrun
        | C::AclLog => Route::Local,
        // Each master holds a part of the keyspace: the session visits them in turn.
        C::Scan => Route::Scan,
        // Pub/sub: a channel lives on the master of its slot (PUBLISH and SUBSCRIBE of a
        // channel meet there; SPUBLISH's channel is a `NOT_KEY` key spec, so `key_indices`
        // does not report it), patterns on every master; subscriptions hold connections of
        // their own. See the session's `pubsub.rs`.
        C::Subscribe
        | C::Psubscribe
        | C::Ssubscribe
        | C::Unsubscribe
        | C::Punsubscribe
        | C::Sunsubscribe
        | C::Publish
        | C::Spublish
        | C::PubsubChannels
        | C::PubsubHelp
        | C::PubsubNumpat
        | C::PubsubNumsub
        | C::PubsubShardchannels
        | C::PubsubShardnumsub => Route::PubSub,
        // Keys may span slots; Redis Cluster clients split these the same way, and each part
        // is itself a valid command.
        C::Mget => Route::Split(Split::Mget),
        C::Mset => Route::Split(Split::Mset),
        C::Del | C::Unlink | C::Exists | C::Touch => Route::Split(Split::SumIntegers),
        // Whole-keyspace or whole-server-state commands: every master must see them.
        // DBSIZE, KEYS: each master holds a part of the keyspace.
        C::Dbsize => Route::FanOut(Merge::SumIntegers),
        C::Keys => Route::FanOut(Merge::ConcatArrays),
        // RANDOMKEY: any master's random key, starting from a random master and skipping
        // empty ones, so that nil means the whole keyspace is empty.
        C::Randomkey => Route::FanOut(Merge::AnyNonNull),
        // SCRIPT LOAD / FUNCTION LOAD: every master must know the script or library, since a
        // later EVALSHA/FCALL may go to any of them; the SHA (or library name) is the same
        // everywhere, so the first reply is the reply.
        C::ScriptLoad | C::FunctionLoad => Route::FanOut(Merge::First),
        // SCRIPT FLUSH, FUNCTION DELETE / FLUSH / RESTORE: keep the masters' script and
        // function state identical; success only when every master succeeded.
        C::ScriptFlush | C::FunctionDelete | C::FunctionFlush | C::FunctionRestore => {
            Route::FanOut(Merge::AllOk)
        }
        // SCRIPT EXISTS: a script exists for the client only if every master has it.
        C::ScriptExists => Route::FanOut(Merge::AndArrays),
        // Destructive on every shard: fanned out only when the operator enabled it.
        C::Flushall | C::Flushdb => Route::Flush,
        // LASTSAVE: the oldest of the masters' last saves, the time by which the whole data set
        // was saved (INFO's merged `rdb_last_save_time` too).
        C::Lastsave => Route::FanOut(Merge::Oldest),
        // Never sent to a backend from a client connection:
        // Server life and replication belong to the operator and to redshard's own failover and
        // resync.
        C::Shutdown
        | C::Debug
        | C::Failover
        | C::Sync
        | C::Psync
        | C::Replconf
        | C::Module
        | C::ModuleHelp
        | C::ModuleLoad
        | C::ModuleLoadex
        | C::ModuleUnload => Route::Forbidden,
        // Cluster protocol: the backends are not a Redis Cluster.
        C::RestoreAsking
        | C::Cluster
        | C::ClusterAddslots
        | C::ClusterAddslotsrange
        | C::ClusterBumpepoch
        | C::ClusterCountFailureReports
        | C::ClusterCountkeysinslot
        | C::ClusterDelslots
        | C::ClusterDelslotsrange
        | C::ClusterFailover
        | C::ClusterFlushslots
        | C::ClusterForget
        | C::ClusterGetkeysinslot
        | C::ClusterHelp
        | C::ClusterInfo
        | C::ClusterKeyslot
        | C::ClusterLinks
        | C::ClusterMeet
        | C::ClusterMyid
        | C::ClusterNodes
        | C::ClusterReplicas
        | C::ClusterReplicate
        | C::ClusterReset
        | C::ClusterSaveconfig
        | C::ClusterSetConfigEpoch
        | C::ClusterSetslot
        | C::ClusterShards
        | C::ClusterSlaves
        | C::ClusterSlots => Route::Forbidden,
        // SWAPDB would swap each master's databases at another moment (no client may see
        // one half swapped), and MIGRATE moves keys to nodes outside the slot table.
        C::Swapdb | C::Migrate => Route::Forbidden,
        // (CLIENT KILL/PAUSE/UNPAUSE/UNBLOCK/REPLY/TRACKING... and MONITOR are the proxy's:
        // see [`Local`].)
        // SCRIPT DEBUG needs a private forked server.
        C::ScriptDebug => Route::Forbidden,
        // ACL LOAD and SAVE: the proxy has no ACL file (its users live in its configuration
        // and its state); the other ACL commands act on the proxy's users: see [`Local`].
        C::Acl | C::AclLoad | C::AclSave => Route::Forbidden,
        // PFSELFTEST / PFDEBUG are internal testing commands.
        C::Pfselftest | C::Pfdebug => Route::Forbidden,
        // Container names alone: always an arity error in Redis (see the module documentation);
        // routed here so that the container's own entry does not look routable.
        C::Client
        | C::Config
        | C::Function
        | C::Latency
        | C::Memory
        | C::Object
        | C::Pubsub
        | C::Script
        | C::Slowlog
        | C::Xgroup
        | C::Xinfo => Route::Forbidden,
        // Need a backend connection of their own for a while, which the plain pipelined lanes
        // cannot give: transactions and optimistic locking, and every command with Redis's
        // `blocking` flag (a unit test checks it) except XREAD and XREADGROUP, which block
        // only with `BLOCK`: they are `Keyed` and the session checks for `BLOCK` itself.
        C::Multi
        | C::Exec
        | C::Discard
        | C::Watch
        | C::Unwatch
        | C::Blpop
        | C::Brpop
        | C::Brpoplpush
        | C::Blmove
        | C::Blmpop
        | C::Bzpopmin
        | C::Bzpopmax
        | C::Bzmpop => Route::Dedicated,
        // Everything else is routed by its keys, which must all hash to one slot, or to any
        // master when it has none (TIME, ROLE, OBJECT HELP, EVAL without keys ...).
        C::Append
        | C::Bitcount
        | C::Bitfield
        | C::BitfieldRo
        | C::Bitop
        | C::Bitpos
        | C::ConfigHelp
        | C::Copy
        | C::Move
        | C::Decr
        | C::Decrby
        | C::Dump
        | C::Eval
        | C::EvalRo
        | C::Evalsha
        | C::EvalshaRo
        | C::Expire
        | C::Expireat
        | C::Expiretime
        | C::Fcall
        | C::FcallRo
        | C::FunctionDump
        | C::FunctionHelp
        | C::FunctionList
        | C::FunctionStats
        | C::Geoadd
        | C::Geodist
        | C::Geohash
        | C::Geopos
        | C::Georadius
        | C::GeoradiusRo
        | C::Georadiusbymember
        | C::GeoradiusbymemberRo
        | C::Geosearch
        | C::Geosearchstore
        | C::Get
        | C::Getbit
        | C::Getdel
        | C::Getex
        | C::Getrange
        | C::Getset
        | C::Hdel
        | C::Hexists
        | C::Hget
        | C::Hgetall
        | C::Hincrby
        | C::Hincrbyfloat
        | C::Hkeys
        | C::Hlen
        | C::Hmget
        | C::Hmset
        | C::Hrandfield
        | C::Hscan
        | C::Hset
        | C::Hsetnx
        | C::Hstrlen
        | C::Hvals
        | C::Incr
        | C::Incrby
        | C::Incrbyfloat
        | C::LatencyDoctor
        | C::LatencyGraph
        | C::LatencyHelp
        | C::LatencyHistogram
        | C::LatencyHistory
        | C::LatencyLatest
        | C::Lcs
        | C::Lindex
        | C::Linsert
        | C::Llen
        | C::Lmove
        | C::Lmpop
        | C::Lolwut
        | C::Lpop
        | C::Lpos
        | C::Lpush
        | C::Lpushx
        | C::Lrange
        | C::Lrem
        | C::Lset
        | C::Ltrim
        | C::MemoryDoctor
        | C::MemoryHelp
        | C::MemoryMallocStats
        | C::MemoryPurge
        | C::MemoryStats
        | C::MemoryUsage
        | C::Msetnx
        | C::ObjectEncoding
        | C::ObjectFreq
        | C::ObjectHelp
        | C::ObjectIdletime
        | C::ObjectRefcount
        | C::Persist
        | C::Pexpire
        | C::Pexpireat
        | C::Pexpiretime
        | C::Pfadd
        | C::Pfcount
        | C::Pfmerge
        | C::Psetex
        | C::Pttl
        | C::Rename
        | C::Renamenx
        | C::Restore
        | C::Role
        | C::Rpop
        | C::Rpoplpush
        | C::Rpush
        | C::Rpushx
        | C::Sadd
        | C::Scard
        | C::ScriptHelp
        | C::Sdiff
        | C::Sdiffstore
        | C::Set
        | C::Setbit
        | C::Setex
        | C::Setnx
        | C::Setrange
        | C::Sinter
        | C::Sintercard
        | C::Sinterstore
        | C::Sismember
        | C::SlowlogHelp
        | C::Smembers
        | C::Smismember
        | C::Smove
        | C::Sort
        | C::SortRo
        | C::Spop
        | C::Srandmember
        | C::Srem
        | C::Sscan
        | C::Strlen
        | C::Substr
        | C::Sunion
        | C::Sunionstore
        | C::Time
        | C::Ttl
        | C::Type
        | C::Xack
        | C::Xadd
        | C::Xautoclaim
        | C::Xclaim
        | C::Xdel
        | C::XgroupCreate
        | C::XgroupCreateconsumer
        | C::XgroupDelconsumer
        | C::XgroupDestroy
        | C::XgroupHelp
        | C::XgroupSetid
        | C::XinfoConsumers
        | C::XinfoGroups
        | C::XinfoHelp
        | C::XinfoStream
        | C::Xlen
        | C::Xpending
        | C::Xrange
        | C::Xread
        | C::Xreadgroup
        | C::Xrevrange
        | C::Xsetid
        | C::Xtrim
        | C::Zadd
        | C::Zcard
        | C::Zcount
        | C::Zdiff
        | C::Zdiffstore
        | C::Zincrby
        | C::Zinter
        | C::Zintercard
        | C::Zinterstore
        | C::Zlexcount
        | C::Zmpop
        | C::Zmscore
        | C::Zpopmax
        | C::Zpopmin
        | C::Zrandmember
        | C::Zrange
        | C::Zrangebylex
        | C::Zrangebyscore
        | C::Zrangestore
        | C::Zrank
        | C::Zrem
        | C::Zremrangebylex
        | C::Zremrangebyrank
        | C::Zremrangebyscore
        | C::Zrevrange
        | C::Zrevrangebylex
        | C::Zrevrangebyscore
        | C::Zrevrank
        | C::Zscan
        | C::Zscore
        | C::Zunion
        | C::Zunionstore => Route::Keyed,
    }
}
