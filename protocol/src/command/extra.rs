//! Subcommands newer than the table's Redis version that clients send while connecting and that
//! the proxy answers itself: `CLIENT SETINFO` (Redis 7.2; redis-py, go-redis and Jedis send it
//! on every connect) and `CLIENT NO-TOUCH` (7.2). Not in the generated table, because the
//! backends (7.0) do not know them; the live table test therefore does not see them.

use super::procs::getkeys_of;
use super::route::route_of;
use super::{AclCategories, CommandId, CommandSpec, Flags};

/// `CLIENT SETINFO <LIB-NAME libname | LIB-VER libver>` and `CLIENT NO-TOUCH <ON | OFF>`.
pub(super) static CLIENT_EXTRAS: [CommandSpec; 2] = [
    CommandSpec {
        name: "client|setinfo",
        id: CommandId::ClientSetinfo,
        arity: 4,
        flags: Flags::NOSCRIPT.union(Flags::LOADING).union(Flags::STALE),
        // Redis 7.2's categories of both.
        acl: AclCategories::SLOW.union(AclCategories::CONNECTION),
        first_key: 0,
        last_key: 0,
        step: 0,
        key_specs: &[],
        subcommands: &[],
        route: route_of(CommandId::ClientSetinfo),
        getkeys: getkeys_of(CommandId::ClientSetinfo),
    },
    CommandSpec {
        name: "client|no-touch",
        id: CommandId::ClientNoTouch,
        arity: 3,
        flags: Flags::NOSCRIPT.union(Flags::LOADING).union(Flags::STALE),
        // Redis 7.2's categories of both.
        acl: AclCategories::SLOW.union(AclCategories::CONNECTION),
        first_key: 0,
        last_key: 0,
        step: 0,
        key_specs: &[],
        subcommands: &[],
        route: route_of(CommandId::ClientNoTouch),
        getkeys: getkeys_of(CommandId::ClientNoTouch),
    },
];
