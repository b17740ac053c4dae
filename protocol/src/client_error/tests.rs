//! Each variant's exact bytes: a change to a text must change this table too. The texts
//! that Redis also writes are Redis 7.0's (`server.c`, `multi.c`, `networking.c`, `acl.c`,
//! `cluster.c`).

use super::*;
use crate::command::resolve;

fn command_error(args: &[&[u8]]) -> CommandError {
    resolve(args).expect_err("the request is refused")
}

fn addr() -> NodeAddr {
    "127.0.0.1:6390".parse().unwrap()
}

/// Every variant with data, and some of each kind of data, with the line it must produce.
fn table() -> Vec<(ClientError, &'static [u8])> {
    use ClientError as E;
    vec![
        (E::QueryBufferLimit, b"-ERR Protocol error: query buffer limit exceeded\r\n"),
        (E::SyntaxError, b"-ERR syntax error\r\n"),
        (E::NotAnInteger, b"-ERR value is not an integer or out of range\r\n"),
        (E::NoAuth, b"-NOAUTH Authentication required.\r\n"),
        (E::HelloNoAuth, b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"),
        (E::WrongPass, b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
        (E::AuthWithoutPassword, b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"),
        (E::SaveFailed, b"-ERR\r\n"),
        (E::DbIndexOutOfRange, b"-ERR DB index is out of range\r\n"),
        (E::ClusterDisabled, b"-ERR This instance has cluster support disabled\r\n"),
        (E::CrossSlot, b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"),
        (E::SortPatternCrossSlot, b"-CROSSSLOT Keys in request don't hash to the same slot (a SORT BY or GET pattern must carry the sorted key's hash tag before its '*', as in {tag}weight_*)\r\n"),
        (E::ExecWithoutMulti, b"-ERR EXEC without MULTI\r\n"),
        (
            E::NotAllowedInMulti,
            b"-ERR Command not allowed inside a transaction\r\n",
        ),
        (E::DiscardWithoutMulti, b"-ERR DISCARD without MULTI\r\n"),
        (E::MultiNested, b"-ERR MULTI calls can not be nested\r\n"),
        (E::WatchInsideMulti, b"-ERR WATCH inside MULTI is not allowed\r\n"),
        (E::ExecAbort, b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        (E::WatchLost, b"-ERR redshard: the backend connection that ran WATCH was lost; the transaction was not executed\r\n"),
        (E::BlockingOffWatchedShard, b"-ERR redshard: a blocking command on another shard than the WATCHed keys is not supported\r\n"),
        (E::TimeoutNotAnInteger, b"-ERR timeout is not an integer or out of range\r\n"),
        (E::TimeoutNegative, b"-ERR timeout is negative\r\n"),
        (E::IntOutOfRange, b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n"),
        (E::SlowlogCount, b"-ERR count should be greater than or equal to -1\r\n"),
        (E::InvalidClientId, b"-ERR Invalid client ID\r\n"),
        (E::ClientIdNotPositive, b"-ERR client-id should be greater than 0\r\n"),
        (E::NoSuchClient, b"-ERR No such client\r\n"),
        (E::TrackingRedirectTwice, b"-ERR A client can only redirect to a single other client\r\n"),
        (E::TrackingRedirectMissing, b"-ERR The client ID you want redirect to does not exist\r\n"),
        (E::TrackingPrefixNeedsBcast, b"-ERR PREFIX option requires BCAST mode to be enabled\r\n"),
        (E::TrackingBcastSwitch, b"-ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.\r\n"),
        (E::TrackingOptWithBcast, b"-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n"),
        (E::TrackingOptinAndOptout, b"-ERR You can't specify both OPTIN mode and OPTOUT mode\r\n"),
        (E::TrackingOptSwitch, b"-ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.\r\n"),
        (E::TrackingPrefixOverlap { prefix: b"ab".as_slice().into(), other: b"a".as_slice().into(), existing: true }, b"-ERR Prefix 'ab' overlaps with an existing prefix 'a'. Prefixes for a single client must not overlap.\r\n"),
        (E::TrackingPrefixOverlap { prefix: b"a".as_slice().into(), other: b"ab".as_slice().into(), existing: false }, b"-ERR Prefix 'a' overlaps with another provided prefix 'ab'. Prefixes for a single client must not overlap.\r\n"),
        (E::CachingWithoutTracking, b"-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n"),
        (E::CachingYesWithoutOptin, b"-ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.\r\n"),
        (E::CachingNoWithoutOptout, b"-ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.\r\n"),
        (E::UnblockReason, b"-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n"),
        (E::Unblocked, b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"),
        (E::ClientNameInvalid, b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"),
        (E::LibInfoInvalid, b"-ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.\r\n"),
        (E::NoProto, b"-NOPROTO unsupported protocol version\r\n"),
        (E::ProtocolVersionNotInteger, b"-ERR Protocol version is not an integer or out of range\r\n"),
        (E::InvalidCommandSpecified, b"-ERR Invalid command specified\r\n"),
        (E::NoKeyArguments, b"-ERR The command has no key arguments\r\n"),
        (
            E::GetKeysArity,
            b"-ERR Invalid number of arguments specified for command\r\n",
        ),
        (
            E::GetKeysInvalidArguments,
            b"-ERR Invalid arguments specified for command\r\n",
        ),
        (E::InvalidCursor, b"-ERR invalid cursor\r\n"),
        (E::NotBusy, b"-NOTBUSY No scripts in execution right now.\r\n"),
        (
            E::KeylessScriptTouchedKey { node: (*b"ERR The user executing the script can't access at least one of the keys").into() },
            b"-ERR redshard: a script called with no key may touch none (redshard routes scripts by the keys they declare): declare its keys, all in one slot (a {hash tag} or a routing rule), or set [backend] keyless_scripts = \"any-master\". The node said: ERR The user executing the script can't access at least one of the keys\r\n",
        ),
        (E::MonitorKeyspace, b"-ERR Replica can't interact with the keyspace\r\n"),
        (
            E::ConfigManaged { param: (*b"replicaof").into(), why: "managed by redshard" },
            b"-ERR CONFIG SET failed (possibly related to argument 'replicaof') - managed by redshard\r\n",
        ),
        (
            E::NodesRefused {
                refused: vec![("127.0.0.1:1".into(), NodeRefusal::Error("ERR bad".into())), ("127.0.0.1:2".into(), NodeRefusal::Error("ERR bad".into()))],
                applied: 0,
                total: 2,
            },
            b"-ERR bad (on 127.0.0.1:1, 127.0.0.1:2; applied on 0 of 2 nodes)\r\n",
        ),
        (
            E::NodesRefused {
                refused: vec![
                    ("127.0.0.1:1".into(), NodeRefusal::Error("ERR bad".into())),
                    ("127.0.0.1:2".into(), NodeRefusal::Error("LOADING x".into())),
                    ("127.0.0.1:3".into(), NodeRefusal::Unreachable("connection refused".into())),
                ],
                applied: 3,
                total: 6,
            },
            b"-ERR applied on 3 of 6 nodes; 127.0.0.1:1: ERR bad; 127.0.0.1:2: LOADING x; 127.0.0.1:3: ERR no answer: connection refused\r\n",
        ),
        (
            E::MonitorTooSlow { limit: 1024 },
            b"-ERR redshard: MONITOR output fell more than 1024 bytes behind (limits.monitor_buffer_bytes); closing the connection\r\n",
        ),
        (E::UnknownCategory { name: (*b"nope").into() }, b"-ERR Unknown category 'nope'\r\n"),
        (E::NoReplicas, b"-NOREPLICAS Not enough good replicas to write.\r\n"),
        (E::LaneClosed, b"-ERR backend lane closed\r\n"),
        (E::SubscriptionClosed, b"-ERR subscription connection closed\r\n"),
        (E::UnexpectedSplitReply, b"-ERR redshard: a backend sent an unexpected reply to a split command\r\n"),
        (E::UnexpectedScanReply, b"-ERR redshard: a backend sent an unexpected reply to SCAN\r\n"),
        (E::ScanCursorTooLarge, b"-ERR redshard: a backend's SCAN cursor is too large to carry\r\n"),
        (E::MaxClients, b"-ERR max number of clients reached\r\n"),
        (E::Protocol(ProtocolError::InvalidBulkLength), b"-ERR Protocol error: invalid bulk length\r\n"),
        (E::Protocol(ProtocolError::ExpectedDollar(b'\n')), b"-ERR Protocol error: expected '$', got ' '\r\n"),
        (E::Command(command_error(&[b"nosuch", b"a"])), b"-ERR unknown command 'nosuch', with args beginning with: 'a' \r\n"),
        (E::Command(command_error(&[b"get"])), b"-ERR wrong number of arguments for 'get' command\r\n"),
        (E::WrongArity { command: "ping" }, b"-ERR wrong number of arguments for 'ping' command\r\n"),
        (E::WrongArity { command: "client|setinfo" }, b"-ERR wrong number of arguments for 'client|setinfo' command\r\n"),
        (E::NoPerm { user: "reader".into(), command: "set" }, b"-NOPERM User reader has no permissions to run the 'set' command\r\n"),
        (E::NoPermKey, b"-NOPERM No permissions to access a key\r\n"),
        (E::AclUsernameNotUtf8, b"-ERR redshard: user names must be UTF-8\r\n"),
        (E::SortByDenied, b"-ERR BY option of SORT denied due to insufficient ACL permissions.\r\n"),
        (E::SortGetDenied, b"-ERR GET option of SORT denied due to insufficient ACL permissions.\r\n"),
        (E::NoPermChannel, b"-NOPERM No permissions to access a channel\r\n"),
        (E::AclSetuser { op: b"+foo"[..].into(), why: crate::acl::RuleError::UnknownName }, b"-ERR Error in ACL SETUSER modifier '+foo': Unknown command or category name in ACL\r\n"),
        (E::AclSetuser { op: b"foo"[..].into(), why: crate::acl::RuleError::Syntax }, b"-ERR Error in ACL SETUSER modifier 'foo': Syntax error\r\n"),
        (E::AclUnmatchedParen { op: b"(+get"[..].into() }, b"-ERR Unmatched parenthesis in acl selector starting at '(+get'.\r\n"),
        (E::UsersNotSaved { why: "not the leader".into() }, b"-ERR redshard: the users could not be saved with the topology, so the change was undone: not the leader\r\n"),
        (E::AclSubcommandSyntax { subcommand: b"log"[..].into() }, b"-ERR unknown subcommand or wrong number of arguments for 'log'. Try ACL HELP.\r\n"),
        (E::AclUsernameSpaces, b"-ERR Usernames can't contain spaces or null characters\r\n"),
        (E::AclDefaultUndeletable, b"-ERR The 'default' user cannot be removed\r\n"),
        (E::AclUserNotFound { user: b"nope"[..].into() }, b"-ERR User 'nope' not found\r\n"),
        (E::AclCommandNotFound { command: b"nope"[..].into() }, b"-ERR Command 'nope' not found\r\n"),
        (E::AclChangedBeforeExec { reason: "no permission to touch the specified keys" }, b"-NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: no permission to touch the specified keys\r\n"),
        (E::AclScriptsRefused { user: "u".into() }, b"-ERR redshard: the nodes cannot check the scripts and functions of user u (only those of a configured access level, or of rules that allow everything), so redshard refuses them\r\n"),
        (E::Unsupported { command: "client|kill" }, b"-ERR CLIENT KILL is not supported by redshard yet\r\n"),
        (E::UnsupportedInMulti { command: "subscribe" }, b"-ERR SUBSCRIBE is not supported inside MULTI by redshard\r\n"),
        (E::Forbidden { command: "swapdb" }, b"-ERR SWAPDB is not allowed through redshard\r\n"),
        (
            E::ReplicaofRefused { command: "slaveof" },
            b"-ERR SLAVEOF host port is not allowed through redshard: the proxy is a master (SLAVEOF NO ONE answers OK) and its controller manages the nodes' replication; use redshard-admin to change the topology\r\n",
        ),
        (E::FlushDisabled { command: "flushall" }, b"-ERR FLUSHALL is disabled in redshard; set allow_flush = true in the proxy's config to allow it\r\n"),
        (E::NotAllowedWhileSubscribed { command: "get" }, b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"),
        (E::ShardDown { shard: "s1".into() }, b"-CLUSTERDOWN The cluster is down: shard s1 has no reachable master\r\n"),
        (E::FleetSessionLost, b"-CLUSTERDOWN The proxy lost its etcd session; it serves again once it has one\r\n"),
        (E::ShardFailingOver { shard: "s2".into() }, b"-CLUSTERDOWN The cluster is down: shard s2 is failing over\r\n"),
        (E::MigrationFailed { error: "the target\r\nis down".into() }, b"-TRYAGAIN a key of this request could not be moved by the running slot migration: the target  is down\r\n"),
        (E::ExecAbortedBy(command_error(&[b"exec", b"x"])), b"-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n"),
        (E::SlowlogSyntax { subcommand: (*b"get").into() }, b"-ERR unknown subcommand or wrong number of arguments for 'get'. Try SLOWLOG HELP.\r\n"),
        (E::UnknownClientType { kind: (*b"b\xffad\r\n").into() }, "-ERR Unknown client type 'b\u{fffd}ad  '\r\n".as_bytes()),
        (E::NoSuchUser { user: (*b"nobody").into() }, b"-ERR No such user 'nobody'\r\n"),
        (E::UnrecognizedOption { option: (*b"lib-x").into() }, b"-ERR Unrecognized option 'lib-x'\r\n"),
        (E::HelloSyntax { option: (*b"SETNAM").into() }, b"-ERR Syntax error in HELLO option 'SETNAM'\r\n"),
        (
            E::Backend { addr: addr(), why: "refused the proxy's credentials: WRONGPASS bad\r\nx".into(), reached: Reached::No },
            b"-ERR backend 127.0.0.1:6390 refused the proxy's credentials: WRONGPASS bad  x\r\n",
        ),
        (
            E::Backend { addr: addr(), why: "timed out after 1000 ms".into(), reached: Reached::Unknown },
            b"-ERR backend 127.0.0.1:6390 timed out after 1000 ms\r\n",
        ),
    ]
}

#[test]
fn each_variant_has_its_exact_bytes() {
    for (error, line) in table() {
        let mut out = BytesMut::from(&b"before|"[..]);
        error.encode(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out[7..]),
            String::from_utf8_lossy(line),
            "{error:?}"
        );
        assert_eq!(&error.to_reply()[..], line, "{error:?}");
        assert_eq!(
            error.to_string().as_bytes(),
            &line[1..line.len() - 2],
            "{error:?}"
        );
    }
}

#[test]
fn a_text_without_data_is_static() {
    let reply = ClientError::CrossSlot.to_reply();
    let line = ClientError::CrossSlot.static_line().unwrap();
    assert_eq!(
        reply.as_ptr(),
        line.as_ptr(),
        "sent from the static bytes, not a copy"
    );
    assert!(ClientError::ShardDown { shard: "s1".into() }
        .static_line()
        .is_none());
}

#[test]
fn every_line_is_one_error_line() {
    for (error, _) in table() {
        let reply = error.to_reply();
        assert_eq!(reply[0], b'-', "{error:?}");
        assert!(reply.ends_with(b"\r\n"), "{error:?}");
        let body = &reply[1..reply.len() - 2];
        assert!(
            !body.contains(&b'\r') && !body.contains(&b'\n'),
            "{error:?}"
        );
        // An error code first, as clients parse it.
        let code = body.split(|&b| b == b' ').next().unwrap();
        assert!(
            !code.is_empty() && code.iter().all(u8::is_ascii_uppercase),
            "{error:?}"
        );
    }
}

#[test]
fn reached_says_whether_a_node_saw_the_request() {
    assert_eq!(ClientError::CrossSlot.reached(), Reached::No);
    assert_eq!(
        ClientError::ShardDown { shard: "s1".into() }.reached(),
        Reached::No
    );
    assert_eq!(ClientError::LaneClosed.reached(), Reached::No);
    assert_eq!(ClientError::UnexpectedSplitReply.reached(), Reached::Yes);
    assert_eq!(ClientError::NoReplicas.reached(), Reached::Yes);
    assert_eq!(ClientError::ScanCursorTooLarge.reached(), Reached::Yes);
    for reached in [Reached::No, Reached::Unknown] {
        let e = ClientError::Backend {
            addr: addr(),
            why: "closed the connection".into(),
            reached,
        };
        assert_eq!(e.reached(), reached);
    }
}
