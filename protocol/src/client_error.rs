//! Every error reply the proxy itself gives a client, and whether the request reached a node.
//!
//! The data plane (session, router, backend lanes, mirroring, listener) never writes an error
//! text of its own: it builds a [`ClientError`] and sends [`ClientError::to_reply`] (or writes
//! [`ClientError::encode`] into a buffer). The texts live in this one file, so a change to
//! one is a visible change here, and the table test below holds each variant to its exact bytes.
//! Where Redis has an error for the same condition the text is Redis 7.0's, byte for byte
//! (clients match on them); the proxy's own refusals start with `ERR redshard` or name redshard.
//!
//! It lives in the protocol crate, the lowest layer, so that every layer of the proxy can use
//! it, and because it wraps the protocol's own errors: [`ProtocolError`] (a request that cannot
//! be framed) and [`CommandError`] (an unknown command, a wrong arity, invalid key arguments),
//! whose texts stay with the code that finds them. Errors *forwarded* from a node are the
//! node's own bytes and never pass through here. Not data path and not here: the admin port's
//! replies (`proxy/src/admin`, an operator's RESP port with its own texts) and the control
//! plane's errors (migration, failover), which reach operators and logs, not clients.
//!
//! To add one: a variant (with the data its text needs), its text in [`ClientError::static_line`]
//! (no data) or `write_text` (with data), its [`Reached`] in
//! [`ClientError::reached`], and a row in the table test. `proxy/tests/error_texts.rs` fails on
//! an error literal written anywhere else in the `src/` of the proxy's crates.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use redshard_config::NodeAddr;

use crate::command::CommandError;
use crate::resp::ProtocolError;

/// Whether the request an error answers reached a node, which says whether it may have run
/// (and so whether a client may safely send it again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reached {
    /// The proxy refused it, or it was never written to a node: it did not run.
    No,
    /// It was written, and the connection failed before the reply: it may have run.
    Unknown,
    /// A node ran it and answered, and the proxy could not use the answer.
    Yes,
}

/// An error reply the proxy gives a client instead of a node's reply. Each variant holds the
/// data its text needs; [`encode`](Self::encode) writes `-<text>\r\n`, with CR and LF in data
/// mapped to spaces as Redis's `addReplyErrorFormat` does, so the reply is always one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    // --- The request itself ---
    /// The request cannot be framed (the connection is then closed).
    Protocol(ProtocolError),
    /// Unknown command or subcommand, wrong arity, invalid key arguments (the command table's
    /// own checks, with Redis's texts).
    Command(CommandError),
    /// The client's unread input passed `limits.max_query_buffer_bytes`.
    QueryBufferLimit,
    /// A wrong number of arguments that the command table's arity lets through (PING with
    /// three, MSET with an odd count, WATCH without keys); `command` as Redis's full name.
    WrongArity {
        /// The command's name in the table (`ping`, `client|setinfo`).
        command: &'static str,
    },
    /// Redis's generic syntax error.
    SyntaxError,
    /// An argument that must be an integer is not.
    NotAnInteger,

    // --- Authentication and access ---
    /// A command other than AUTH/HELLO/... before authenticating.
    NoAuth,
    /// HELLO without AUTH on a connection that has not authenticated.
    HelloNoAuth,
    /// AUTH with a wrong user or password.
    WrongPass,
    /// `AUTH <password>` while the default user has no password.
    AuthWithoutPassword,
    /// The client's access level does not allow the command.
    NoPerm {
        /// The authenticated user (`default` for the default user).
        user: String,
        /// The command's name in the table.
        command: &'static str,
    },

    // --- What redshard does not do ---
    /// A command the proxy does not implement.
    Unsupported {
        /// The command's name in the table (`client|kill`), shown as `CLIENT KILL`.
        command: &'static str,
    },
    /// A command the proxy cannot queue in a transaction.
    UnsupportedInMulti {
        /// The command's name in the table.
        command: &'static str,
    },
    /// A command refused through the proxy (it would act on one node behind the client's
    /// back: SWAPDB, MOVE, SHUTDOWN ...).
    Forbidden {
        /// The command's name in the table.
        command: &'static str,
    },
    /// FLUSHALL/FLUSHDB while `allow_flush` is off.
    FlushDisabled {
        /// The command's name in the table.
        command: &'static str,
    },
    /// `REPLICAOF host port` (or SLAVEOF): the proxy stays a master (`NO ONE` is answered
    /// `+OK`), and the controller manages the nodes' replication.
    ReplicaofRefused {
        /// The command's name in the table (`replicaof`, `slaveof`).
        command: &'static str,
    },
    /// SAVE: a master's save failed (Redis's bare `-ERR`; the node's log says why).
    SaveFailed,
    /// SELECT of a database the nodes do not have (`[backend] databases`).
    DbIndexOutOfRange,
    /// A Redis Cluster command: the proxy presents itself as one standalone server, which
    /// answers this.
    ClusterDisabled,
    /// A command not allowed in RESP2 subscribed mode.
    NotAllowedWhileSubscribed {
        /// The command's name in the table.
        command: &'static str,
    },

    // --- Slots and shards ---
    /// The request's keys hash to different slots.
    CrossSlot,
    /// SORT's `BY`/`GET` pattern can name keys in other slots than the sorted key's.
    SortPatternCrossSlot,
    /// The shard has no reachable master and no replica to promote.
    ShardDown {
        /// The shard's name.
        shard: String,
    },
    /// The proxy lost its etcd session (a fleet of proxies): it serves nothing until it has
    /// a session again, since another proxy may be changing the topology meanwhile.
    FleetSessionLost,
    /// The shard stayed paused (a failover or cut-over) longer than the client may wait.
    ShardFailingOver {
        /// The shard's name.
        shard: String,
    },
    /// A key of the request could not be moved by the running slot migration.
    MigrationFailed {
        /// Why the move failed.
        error: String,
    },

    // --- Transactions ---
    /// EXEC outside MULTI.
    ExecWithoutMulti,
    /// DISCARD outside MULTI.
    DiscardWithoutMulti,
    /// MULTI inside MULTI.
    MultiNested,
    /// A command Redis flags `no-multi` (SAVE, SUBSCRIBE, ...) queued inside MULTI.
    NotAllowedInMulti,
    /// WATCH inside MULTI.
    WatchInsideMulti,
    /// EXEC after a command was refused while queueing.
    ExecAbort,
    /// A malformed EXEC: the transaction is discarded, with the command error that says why.
    ExecAbortedBy(CommandError),
    /// EXEC after WATCH, when the private connection that ran WATCH is gone.
    WatchLost,
    /// A blocking command for another shard than the WATCHed keys.
    BlockingOffWatchedShard,

    // --- Arguments of the commands the proxy answers itself ---
    /// WAIT's timeout is not an integer.
    TimeoutNotAnInteger,
    /// WAIT's timeout is negative.
    TimeoutNegative,
    /// SELECT's index does not fit a C int.
    IntOutOfRange,
    /// SLOWLOG GET's count is below -1.
    SlowlogCount,
    /// SLOWLOG GET with too many arguments.
    SlowlogSyntax {
        /// The subcommand as the client wrote it.
        subcommand: Box<[u8]>,
    },
    /// CLIENT LIST TYPE of an unknown type.
    UnknownClientType {
        /// The type as the client wrote it.
        kind: Box<[u8]>,
    },
    /// CLIENT LIST ID with an id that is not an integer.
    InvalidClientId,
    /// CLIENT KILL ID with an id that is not a positive integer.
    ClientIdNotPositive,
    /// CLIENT KILL addr:port (the old form) matching no client.
    NoSuchClient,
    /// CLIENT TRACKING with REDIRECT given twice.
    TrackingRedirectTwice,
    /// CLIENT TRACKING REDIRECT to a client id that is not connected.
    TrackingRedirectMissing,
    /// CLIENT TRACKING ON with PREFIX but without BCAST.
    TrackingPrefixNeedsBcast,
    /// CLIENT TRACKING ON switching BCAST on or off while tracking.
    TrackingBcastSwitch,
    /// CLIENT TRACKING ON with BCAST and OPTIN or OPTOUT.
    TrackingOptWithBcast,
    /// CLIENT TRACKING ON with both OPTIN and OPTOUT.
    TrackingOptinAndOptout,
    /// CLIENT TRACKING ON switching between OPTIN and OPTOUT while tracking.
    TrackingOptSwitch,
    /// CLIENT TRACKING ON BCAST with a prefix that overlaps another.
    TrackingPrefixOverlap {
        /// The prefix given.
        prefix: Box<[u8]>,
        /// The prefix it overlaps.
        other: Box<[u8]>,
        /// Whether `other` is one the client already had (else one given in the same call).
        existing: bool,
    },
    /// CLIENT CACHING while not tracking.
    CachingWithoutTracking,
    /// CLIENT CACHING YES outside OPTIN mode.
    CachingYesWithoutOptin,
    /// CLIENT CACHING NO outside OPTOUT mode.
    CachingNoWithoutOptout,
    /// A key the user's ACL rules do not allow (Redis 7.2's text).
    NoPermKey,
    /// A channel the user's ACL rules do not allow (Redis 7.2's text).
    NoPermChannel,
    /// ACL SETUSER of a name that is not UTF-8 (the proxy keeps names as text).
    AclUsernameNotUtf8,
    /// SORT's `BY` with a pattern, for a user without access to every key.
    SortByDenied,
    /// SORT's `GET`, for a user without access to every key.
    SortGetDenied,
    /// ACL SETUSER: a rule Redis refuses.
    AclSetuser {
        /// The rule as given (a selector as merged).
        op: Box<[u8]>,
        /// Why.
        why: crate::acl::RuleError,
    },
    /// ACL SETUSER: a selector's `(` without its `)`.
    AclUnmatchedParen {
        /// The argument the selector starts at.
        op: Box<[u8]>,
    },
    /// An ACL subcommand with a wrong number of arguments that its arity lets through
    /// (`ACL LOG 1 2`): Redis's `addReplySubcommandSyntaxError`.
    AclSubcommandSyntax {
        /// The subcommand as the client wrote it.
        subcommand: Box<[u8]>,
    },
    /// ACL SETUSER of a name with a space or NUL.
    AclUsernameSpaces,
    /// ACL DELUSER default.
    AclDefaultUndeletable,
    /// ACL DRYRUN of an unknown user.
    AclUserNotFound {
        /// The user as given.
        user: Box<[u8]>,
    },
    /// ACL DRYRUN of an unknown command.
    AclCommandNotFound {
        /// The command as given.
        command: Box<[u8]>,
    },
    /// ACL SETUSER / DELUSER / CONFIG SET requirepass: the controller could not save the
    /// users with the topology (in a fleet, only the leader saves), so the change was undone.
    UsersNotSaved {
        /// Why (the controller's error).
        why: String,
    },
    /// EXEC's second check refused a queued command: its user changed after it was queued
    /// (Redis's `execCommand` text).
    AclChangedBeforeExec {
        /// Why: Redis's words for a command, a key or a channel refused.
        reason: &'static str,
    },
    /// A script or function of a user whose rules the nodes cannot enforce.
    AclScriptsRefused {
        /// The user.
        user: String,
    },
    /// CLIENT KILL USER of a user the proxy does not know.
    NoSuchUser {
        /// The user as the client wrote it.
        user: Box<[u8]>,
    },
    /// CLIENT UNBLOCK with a reason other than TIMEOUT and ERROR.
    UnblockReason,
    /// What a client blocked in a blocking command gets from CLIENT UNBLOCK ... ERROR.
    Unblocked,
    /// CLIENT SETNAME (or HELLO SETNAME) with a character Redis refuses.
    ClientNameInvalid,
    /// CLIENT SETINFO with a character Redis refuses.
    LibInfoInvalid,
    /// CLIENT SETINFO of an attribute other than LIB-NAME and LIB-VER.
    UnrecognizedOption {
        /// The attribute as the client wrote it.
        option: Box<[u8]>,
    },
    /// HELLO with a protocol version other than 2 or 3.
    NoProto,
    /// HELLO with a protocol version that is not an integer.
    ProtocolVersionNotInteger,
    /// HELLO with an option it does not know (or without its arguments).
    HelloSyntax {
        /// The option as the client wrote it.
        option: Box<[u8]>,
    },
    /// COMMAND GETKEYS of an unknown command.
    InvalidCommandSpecified,
    /// COMMAND GETKEYS of a command without keys.
    NoKeyArguments,
    /// COMMAND GETKEYS with a number of arguments the command's arity refuses.
    GetKeysArity,
    /// COMMAND GETKEYS whose arguments name no key of a command that must have one.
    GetKeysInvalidArguments,
    /// SCAN with a cursor the proxy did not hand out.
    InvalidCursor,
    /// SCRIPT KILL / FUNCTION KILL while no master runs a script.
    NotBusy,
    /// A script or function called with no key touched one, which its no-keys backend user
    /// may not (`[backend] keyless_scripts = "no-keys"`): `node` is the node's error, without
    /// its `-` and CRLF.
    KeylessScriptTouchedKey {
        /// What the node answered.
        node: Box<[u8]>,
    },

    /// CONFIG SET of a parameter the proxy or its controller manages (replication,
    /// credentials, addresses and files, cluster mode, the settings the proxy answers for).
    ConfigManaged {
        /// The parameter as the client wrote it.
        param: Box<[u8]>,
        /// Why the proxy keeps it, and what to do instead.
        why: &'static str,
    },
    /// A command applied to every node (CONFIG SET, ...) that some refused or could not be
    /// asked.
    NodesRefused {
        /// Each refusing node's address and what it answered.
        refused: Vec<(String, NodeRefusal)>,
        /// How many nodes applied it.
        applied: usize,
        /// How many nodes were asked.
        total: usize,
    },
    /// A keyspace command on a connection in MONITOR mode (Redis treats it as a replica).
    MonitorKeyspace,
    /// A MONITOR connection fell further behind than `[limits] monitor_buffer_bytes`.
    MonitorTooSlow {
        /// The limit.
        limit: usize,
    },
    /// ACL CAT of a category Redis does not have.
    UnknownCategory {
        /// The category as the client wrote it.
        name: Box<[u8]>,
    },

    // --- Backends ---
    /// A backend lane could not complete the request: `why` is the lane's failure, as also
    /// logged (`unavailable: ...`, `timed out after 1000 ms`, `is fenced after a failover`).
    Backend {
        /// The node.
        addr: NodeAddr,
        /// What failed.
        why: String,
        /// `No` for a request still queued, `Unknown` for one in flight.
        reached: Reached,
    },
    /// A write the master ran whose acknowledgement by the in-sync replicas could not be
    /// verified, nor the replicas that may lack it recorded stale: Redis's refusal under
    /// `min-replicas-to-write`, here meaning the write may or may not be durable.
    NoReplicas,
    /// The lane's task is gone (only while the proxy shuts down).
    LaneClosed,
    /// The client's subscription connection failed before the request was sent.
    SubscriptionClosed,
    /// A part of a split or fanned-out command got a reply of another type than expected.
    UnexpectedSplitReply,
    /// A master's SCAN reply is not `[cursor, [keys...]]`.
    UnexpectedScanReply,
    /// A master's SCAN cursor leaves no room for the shard number in the client's cursor.
    ScanCursorTooLarge,

    // --- Connections ---
    /// A client over `max_clients` (it is closed after this line).
    MaxClients,
}

/// Why one node did not apply a command sent to every node ([`ClientError::NodesRefused`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRefusal {
    /// The node's error line, without `-` and CRLF.
    Error(String),
    /// The node could not be asked or did not answer in time (whether it applied the
    /// command is then unknown): why (connection refused, a timeout ...).
    Unreachable(String),
}

impl NodeRefusal {
    fn write(&self, t: &mut Text<'_>) {
        match self {
            Self::Error(text) => {
                t.data(text);
            }
            Self::Unreachable(why) => {
                t.lit("ERR no answer: ").data(why);
            }
        }
    }
}

/// Writes the text of an error into a buffer: literal parts as they are, client or node data
/// rendered as `String::from_utf8_lossy` would, with CR and LF as spaces.
struct Text<'a>(&'a mut BytesMut);

impl Text<'_> {
    fn lit(&mut self, text: &str) -> &mut Self {
        self.0.put_slice(text.as_bytes());
        self
    }

    fn data(&mut self, text: &str) -> &mut Self {
        self.0.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self
    }

    fn bytes(&mut self, data: &[u8]) -> &mut Self {
        for chunk in data.utf8_chunks() {
            self.data(chunk.valid());
            if !chunk.invalid().is_empty() {
                self.lit(char::REPLACEMENT_CHARACTER.encode_utf8(&mut [0; 4]));
            }
        }
        self
    }

    /// A table name as Redis shows it in refusals: `config|set` → `CONFIG SET`.
    fn command(&mut self, name: &str) -> &mut Self {
        self.0.extend(name.bytes().map(|b| match b {
            b'|' => b' ',
            b => b.to_ascii_uppercase(),
        }));
        self
    }
}

impl ClientError {
    /// The whole reply line of an error whose text holds no data, `None` for the others: these
    /// are sent as static bytes, without allocating.
    #[must_use]
    pub fn static_line(&self) -> Option<&'static [u8]> {
        Some(match self {
            Self::QueryBufferLimit => b"-ERR Protocol error: query buffer limit exceeded\r\n",
            Self::SyntaxError => b"-ERR syntax error\r\n",
            Self::NotAnInteger => b"-ERR value is not an integer or out of range\r\n",
            Self::NoAuth => b"-NOAUTH Authentication required.\r\n",
            Self::HelloNoAuth => b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
            Self::WrongPass => {
                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
            }
            Self::NoPermKey => b"-NOPERM No permissions to access a key\r\n",
            Self::NoPermChannel => b"-NOPERM No permissions to access a channel\r\n",
            Self::AclUsernameNotUtf8 => b"-ERR redshard: user names must be UTF-8\r\n",
            Self::SortByDenied => {
                b"-ERR BY option of SORT denied due to insufficient ACL permissions.\r\n"
            }
            Self::SortGetDenied => {
                b"-ERR GET option of SORT denied due to insufficient ACL permissions.\r\n"
            }
            Self::AclUsernameSpaces => {
                b"-ERR Usernames can't contain spaces or null characters\r\n"
            }
            Self::AclDefaultUndeletable => b"-ERR The 'default' user cannot be removed\r\n",
            Self::AuthWithoutPassword => b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
            Self::SaveFailed => b"-ERR\r\n",
            Self::DbIndexOutOfRange => b"-ERR DB index is out of range\r\n",
            Self::ClusterDisabled => b"-ERR This instance has cluster support disabled\r\n",
            Self::CrossSlot => b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
            Self::SortPatternCrossSlot => b"-CROSSSLOT Keys in request don't hash to the same slot (a SORT BY or GET pattern must carry the sorted key's hash tag before its '*', as in {tag}weight_*)\r\n",
            Self::ExecWithoutMulti => b"-ERR EXEC without MULTI\r\n",
            Self::DiscardWithoutMulti => b"-ERR DISCARD without MULTI\r\n",
            Self::MultiNested => b"-ERR MULTI calls can not be nested\r\n",
            Self::NotAllowedInMulti => b"-ERR Command not allowed inside a transaction\r\n",
            Self::WatchInsideMulti => b"-ERR WATCH inside MULTI is not allowed\r\n",
            Self::ExecAbort => b"-EXECABORT Transaction discarded because of previous errors.\r\n",
            Self::FleetSessionLost => {
                b"-CLUSTERDOWN The proxy lost its etcd session; it serves again once it has one\r\n"
            }
            Self::WatchLost => b"-ERR redshard: the backend connection that ran WATCH was lost; the transaction was not executed\r\n",
            Self::BlockingOffWatchedShard => b"-ERR redshard: a blocking command on another shard than the WATCHed keys is not supported\r\n",
            Self::TimeoutNotAnInteger => b"-ERR timeout is not an integer or out of range\r\n",
            Self::TimeoutNegative => b"-ERR timeout is negative\r\n",
            Self::IntOutOfRange => {
                b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n"
            }
            Self::SlowlogCount => b"-ERR count should be greater than or equal to -1\r\n",
            Self::InvalidClientId => b"-ERR Invalid client ID\r\n",
            Self::ClientIdNotPositive => b"-ERR client-id should be greater than 0\r\n",
            Self::NoSuchClient => b"-ERR No such client\r\n",
            Self::TrackingRedirectTwice => {
                b"-ERR A client can only redirect to a single other client\r\n"
            }
            Self::TrackingRedirectMissing => {
                b"-ERR The client ID you want redirect to does not exist\r\n"
            }
            Self::TrackingPrefixNeedsBcast => {
                b"-ERR PREFIX option requires BCAST mode to be enabled\r\n"
            }
            Self::TrackingBcastSwitch => b"-ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.\r\n",
            Self::TrackingOptWithBcast => b"-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n",
            Self::TrackingOptinAndOptout => {
                b"-ERR You can't specify both OPTIN mode and OPTOUT mode\r\n"
            }
            Self::TrackingOptSwitch => b"-ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.\r\n",
            Self::CachingWithoutTracking => b"-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n",
            Self::CachingYesWithoutOptin => {
                b"-ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.\r\n"
            }
            Self::CachingNoWithoutOptout => {
                b"-ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.\r\n"
            }
            Self::UnblockReason => b"-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n",
            Self::Unblocked => b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
            Self::ClientNameInvalid => {
                b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
            }
            Self::LibInfoInvalid => b"-ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.\r\n",
            Self::NoProto => b"-NOPROTO unsupported protocol version\r\n",
            Self::ProtocolVersionNotInteger => {
                b"-ERR Protocol version is not an integer or out of range\r\n"
            }
            Self::InvalidCommandSpecified => b"-ERR Invalid command specified\r\n",
            Self::NoKeyArguments => b"-ERR The command has no key arguments\r\n",
            Self::GetKeysArity => b"-ERR Invalid number of arguments specified for command\r\n",
            Self::GetKeysInvalidArguments => b"-ERR Invalid arguments specified for command\r\n",
            Self::InvalidCursor => b"-ERR invalid cursor\r\n",
            Self::NotBusy => b"-NOTBUSY No scripts in execution right now.\r\n",
            Self::MonitorKeyspace => b"-ERR Replica can't interact with the keyspace\r\n",
            Self::NoReplicas => b"-NOREPLICAS Not enough good replicas to write.\r\n",
            Self::LaneClosed => b"-ERR backend lane closed\r\n",
            Self::SubscriptionClosed => b"-ERR subscription connection closed\r\n",
            Self::UnexpectedSplitReply => {
                b"-ERR redshard: a backend sent an unexpected reply to a split command\r\n"
            }
            Self::UnexpectedScanReply => {
                b"-ERR redshard: a backend sent an unexpected reply to SCAN\r\n"
            }
            Self::ScanCursorTooLarge => {
                b"-ERR redshard: a backend's SCAN cursor is too large to carry\r\n"
            }
            Self::MaxClients => b"-ERR max number of clients reached\r\n",
            Self::Protocol(_)
            | Self::Command(_)
            | Self::WrongArity { .. }
            | Self::NoPerm { .. }
            | Self::Unsupported { .. }
            | Self::UnsupportedInMulti { .. }
            | Self::Forbidden { .. }
            | Self::ReplicaofRefused { .. }
            | Self::FlushDisabled { .. }
            | Self::NotAllowedWhileSubscribed { .. }
            | Self::ShardDown { .. }
            | Self::ShardFailingOver { .. }
            | Self::MigrationFailed { .. }
            | Self::ExecAbortedBy(_)
            | Self::SlowlogSyntax { .. }
            | Self::UnknownClientType { .. }
            | Self::NoSuchUser { .. }
            | Self::AclSetuser { .. }
            | Self::AclUnmatchedParen { .. }
            | Self::AclSubcommandSyntax { .. }
            | Self::AclUserNotFound { .. }
            | Self::AclCommandNotFound { .. }
            | Self::AclScriptsRefused { .. }
            | Self::AclChangedBeforeExec { .. }
            | Self::UsersNotSaved { .. }
            | Self::UnrecognizedOption { .. }
            | Self::HelloSyntax { .. }
            | Self::TrackingPrefixOverlap { .. }
            | Self::Backend { .. }
            | Self::ConfigManaged { .. }
            | Self::NodesRefused { .. }
            | Self::MonitorTooSlow { .. }
            | Self::UnknownCategory { .. }
            | Self::KeylessScriptTouchedKey { .. } => return None,
        })
    }

    /// Appends the text (no `-`, no CRLF) of an error that holds data.
    fn write_text(&self, out: &mut BytesMut) {
        let mut t = Text(out);
        match self {
            Self::Protocol(e) => {
                t.data(&e.to_string());
            }
            // Already one line, as Redis writes it.
            Self::Command(e) => {
                t.0.put_slice(e.as_bytes());
            }
            Self::WrongArity { command } => {
                t.lit("ERR wrong number of arguments for '")
                    .lit(command)
                    .lit("' command");
            }
            Self::NoPerm { user, command } => {
                t.lit("NOPERM User ")
                    .data(user)
                    .lit(" has no permissions to run the '")
                    .lit(command)
                    .lit("' command");
            }
            Self::Unsupported { command } => {
                t.lit("ERR ")
                    .command(command)
                    .lit(" is not supported by redshard yet");
            }
            Self::UnsupportedInMulti { command } => {
                t.lit("ERR ")
                    .command(command)
                    .lit(" is not supported inside MULTI by redshard");
            }
            Self::Forbidden { command } => {
                t.lit("ERR ")
                    .command(command)
                    .lit(" is not allowed through redshard");
            }
            Self::ReplicaofRefused { command } => {
                t.lit("ERR ").command(command).lit(
                    " host port is not allowed through redshard: the proxy is a master (",
                ).command(command).lit(
                    " NO ONE answers OK) and its controller manages the nodes' replication; use redshard-admin to change the topology",
                );
            }
            Self::FlushDisabled { command } => {
                t.lit("ERR ").command(command).lit(
                    " is disabled in redshard; set allow_flush = true in the proxy's config to allow it",
                );
            }
            Self::NotAllowedWhileSubscribed { command } => {
                t.lit("ERR Can't execute '").lit(command).lit(
                    "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                );
            }
            Self::ShardDown { shard } => {
                t.lit("CLUSTERDOWN The cluster is down: shard ")
                    .data(shard)
                    .lit(" has no reachable master");
            }
            Self::ShardFailingOver { shard } => {
                t.lit("CLUSTERDOWN The cluster is down: shard ")
                    .data(shard)
                    .lit(" is failing over");
            }
            Self::MigrationFailed { error } => {
                t.lit("TRYAGAIN a key of this request could not be moved by the running slot migration: ")
                    .data(error);
            }
            // Redis: "EXECABORT Transaction discarded because of: " + the error without "ERR ".
            Self::ExecAbortedBy(e) => {
                t.lit("EXECABORT Transaction discarded because of: ");
                let text = e.as_bytes();
                t.0.put_slice(text.strip_prefix(b"ERR ").unwrap_or(text));
            }
            Self::SlowlogSyntax { subcommand } => {
                t.lit("ERR unknown subcommand or wrong number of arguments for '")
                    .bytes(subcommand)
                    .lit("'. Try SLOWLOG HELP.");
            }
            Self::UnknownClientType { kind } => {
                t.lit("ERR Unknown client type '").bytes(kind).lit("'");
            }
            Self::NoSuchUser { user } => {
                t.lit("ERR No such user '").bytes(user).lit("'");
            }
            // Redis 7.0's `ACLSetUserStringError`.
            Self::AclSetuser { op, why } => {
                use crate::acl::RuleError as R;
                t.lit("ERR Error in ACL SETUSER modifier '")
                    .bytes(op)
                    .lit("': ")
                    .lit(match why {
                        R::UnknownName => "Unknown command or category name in ACL",
                        R::Syntax => "Syntax error",
                        R::KeyAfterAllKeys => "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns",
                        R::ChannelAfterAllChannels => "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels",
                        R::NoSuchPassword => "The password you are trying to remove from the user does not exist",
                        R::BadHash => "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters",
                        R::SubcommandFirstArg => "Allowing first-arg of a subcommand is not supported",
                    });
            }
            Self::AclUnmatchedParen { op } => {
                t.lit("ERR Unmatched parenthesis in acl selector starting at '")
                    .bytes(op)
                    .lit("'.");
            }
            Self::AclSubcommandSyntax { subcommand } => {
                t.lit("ERR unknown subcommand or wrong number of arguments for '")
                    .bytes(subcommand)
                    .lit("'. Try ACL HELP.");
            }
            Self::AclUserNotFound { user } => {
                t.lit("ERR User '").bytes(user).lit("' not found");
            }
            Self::AclCommandNotFound { command } => {
                t.lit("ERR Command '").bytes(command).lit("' not found");
            }
            Self::UsersNotSaved { why } => {
                t.lit("ERR redshard: the users could not be saved with the topology, so the change was undone: ")
                    .data(why);
            }
            Self::AclChangedBeforeExec { reason } => {
                t.lit("NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: ")
                    .lit(reason);
            }
            Self::AclScriptsRefused { user } => {
                t.lit("ERR redshard: the nodes cannot check the scripts and functions of user ")
                    .data(user)
                    .lit(" (only those of a configured access level, or of rules that allow everything), so redshard refuses them");
            }
            Self::UnrecognizedOption { option } => {
                t.lit("ERR Unrecognized option '").bytes(option).lit("'");
            }
            Self::HelloSyntax { option } => {
                t.lit("ERR Syntax error in HELLO option '")
                    .bytes(option)
                    .lit("'");
            }
            Self::TrackingPrefixOverlap {
                prefix,
                other,
                existing,
            } => {
                t.lit("ERR Prefix '")
                    .bytes(prefix)
                    .lit(if *existing {
                        "' overlaps with an existing prefix '"
                    } else {
                        "' overlaps with another provided prefix '"
                    })
                    .bytes(other)
                    .lit("'. Prefixes for a single client must not overlap.");
            }
            Self::Backend { addr, why, .. } => {
                t.lit("ERR backend ").data(addr.as_str()).lit(" ").data(why);
            }
            // Redis's own text for a parameter CONFIG SET may not change.
            Self::ConfigManaged { param, why } => {
                t.lit("ERR CONFIG SET failed (possibly related to argument '")
                    .bytes(param)
                    .lit("') - ")
                    .lit(why);
            }
            Self::NodesRefused {
                refused,
                applied,
                total,
            } => {
                let same = refused.windows(2).all(|w| w[0].1 == w[1].1);
                match refused.first() {
                    // One answer everywhere it was refused: that answer (its error code
                    // first, as a client matches it), then where and what happened elsewhere.
                    Some((_, text)) if same => {
                        text.write(&mut t);
                        t.lit(" (on ");
                        for (i, (addr, _)) in refused.iter().enumerate() {
                            if i > 0 {
                                t.lit(", ");
                            }
                            t.data(addr);
                        }
                        t.lit("; applied on ")
                            .data(&applied.to_string())
                            .lit(" of ")
                            .data(&total.to_string())
                            .lit(" nodes)");
                    }
                    _ => {
                        t.lit("ERR applied on ")
                            .data(&applied.to_string())
                            .lit(" of ")
                            .data(&total.to_string())
                            .lit(" nodes");
                        for (addr, text) in refused {
                            t.lit("; ").data(addr).lit(": ");
                            text.write(&mut t);
                        }
                    }
                }
            }
            Self::MonitorTooSlow { limit } => {
                t.lit("ERR redshard: MONITOR output fell more than ")
                    .data(&limit.to_string())
                    .lit(" bytes behind (limits.monitor_buffer_bytes); closing the connection");
            }
            // Redis cuts the name at 128 bytes.
            Self::UnknownCategory { name } => {
                t.lit("ERR Unknown category '")
                    .bytes(&name[..name.len().min(128)])
                    .lit("'");
            }
            Self::KeylessScriptTouchedKey { node } => {
                t.lit("ERR redshard: a script called with no key may touch none (redshard routes scripts by the keys they declare): declare its keys, all in one slot (a {hash tag} or a routing rule), or set [backend] keyless_scripts = \"any-master\". The node said: ")
                    .bytes(node);
            }
            // The texts without data: their line without `-` and CRLF.
            _ => {
                let line = self.static_line();
                debug_assert!(line.is_some(), "{self:?} has no text in write_text");
                if let Some(line) = line {
                    t.0.put_slice(&line[1..line.len() - 2]);
                }
            }
        }
    }

    /// Appends the reply line `-<text>\r\n` to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        if let Some(line) = self.static_line() {
            out.put_slice(line);
            return;
        }
        out.put_u8(b'-');
        self.write_text(out);
        out.put_slice(b"\r\n");
    }

    /// The reply line as `Bytes`: static for an error without data (no allocation).
    #[must_use]
    pub fn to_reply(&self) -> Bytes {
        if let Some(line) = self.static_line() {
            return Bytes::from_static(line);
        }
        let mut out = BytesMut::with_capacity(96);
        self.encode(&mut out);
        out.freeze()
    }

    /// Whether the request this error answers reached a node.
    #[must_use]
    pub fn reached(&self) -> Reached {
        match self {
            Self::Backend { reached, .. } => *reached,
            Self::NoReplicas
            | Self::UnexpectedSplitReply
            | Self::UnexpectedScanReply
            | Self::ScanCursorTooLarge
            | Self::NodesRefused { .. }
            | Self::SaveFailed
            | Self::KeylessScriptTouchedKey { .. } => Reached::Yes,
            _ => Reached::No,
        }
    }
}

/// The text without the leading `-` and the CRLF (client bytes that are not UTF-8 shown
/// lossily), for logs and tests.
impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        f.write_str(&String::from_utf8_lossy(&out[1..out.len() - 2]))
    }
}

impl std::error::Error for ClientError {}

impl From<CommandError> for ClientError {
    fn from(e: CommandError) -> Self {
        Self::Command(e)
    }
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

#[cfg(test)]
mod tests;
