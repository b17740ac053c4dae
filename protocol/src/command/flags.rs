//! Small `Copy` bitsets for command flags and key-spec flags.
//!
//! The names are Redis's own (`COMMAND` spells them in lowercase, key-spec flags partly in
//! uppercase); the bit positions are redshard's and mean nothing on the wire.

use std::fmt;

/// Defines a `u32` newtype bitset with named constants, `const fn union` and `contains`,
/// and a `Debug` that lists the names.
macro_rules! bitset {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* const $flag:ident = $bit:expr, $text:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        $vis struct $name(u32);

        impl $name {
            /// No flag set.
            pub const NONE: Self = Self(0);
            $( $(#[$fmeta])* pub const $flag: Self = Self(1 << $bit); )*

            /// Every flag with the name Redis gives it, in declaration order.
            pub const ALL: &'static [(Self, &'static str)] = &[ $( (Self::$flag, $text), )* ];

            /// Both sets together.
            #[must_use]
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// Whether every flag of `other` is set in `self`.
            #[must_use]
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether at least one flag of `other` is set in `self`.
            #[must_use]
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// Whether no flag is set.
            #[must_use]
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// The raw bits (redshard's own numbering, not Redis's).
            #[must_use]
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// The flag called `name` by Redis (exact spelling), if there is one.
            #[must_use]
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
            }

            /// The Redis names of the flags set, in declaration order.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                Self::ALL
                    .iter()
                    .filter(move |(f, _)| self.contains(*f))
                    .map(|(_, n)| *n)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "("))?;
                for (i, n) in self.names().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    f.write_str(n)?;
                }
                f.write_str(")")
            }
        }
    };
}

bitset! {
    /// Command flags, as `COMMAND` reports them in Redis 7.0, plus `may_replicate`, which
    /// `COMMAND` hides on purpose but the generator adds from Redis's command JSON files.
    pub struct Flags {
        /// May modify the dataset.
        const WRITE = 0, "write";
        /// Never modifies keys.
        const READONLY = 1, "readonly";
        /// May grow memory: refused by Redis when over `maxmemory`.
        const DENYOOM = 2, "denyoom";
        /// Implemented by a module.
        const MODULE = 3, "module";
        /// Administrative command.
        const ADMIN = 4, "admin";
        /// Pub/sub related.
        const PUBSUB = 5, "pubsub";
        /// Not allowed inside scripts.
        const NOSCRIPT = 6, "noscript";
        /// May block the client.
        const BLOCKING = 7, "blocking";
        /// Allowed while the database is loading.
        const LOADING = 8, "loading";
        /// Allowed on a replica with stale data.
        const STALE = 9, "stale";
        /// Not shown to MONITOR.
        const SKIP_MONITOR = 10, "skip_monitor";
        /// Not logged to the slow log.
        const SKIP_SLOWLOG = 11, "skip_slowlog";
        /// Accepted in importing slots in cluster mode.
        const ASKING = 12, "asking";
        /// O(1) or O(log N), never delays the server.
        const FAST = 13, "fast";
        /// Allowed before authentication.
        const NO_AUTH = 14, "no_auth";
        /// May replicate even when not flagged write (EVAL, FCALL, PFCOUNT, PUBLISH...).
        const MAY_REPLICATE = 15, "may_replicate";
        /// May legitimately be called with no key at all (scripts with numkeys 0).
        const NO_MANDATORY_KEYS = 16, "no_mandatory_keys";
        /// Refused during async loading.
        const NO_ASYNC_LOADING = 17, "no_async_loading";
        /// Not allowed inside MULTI.
        const NO_MULTI = 18, "no_multi";
        /// Key positions cannot be found from the legacy first/last/step.
        const MOVABLEKEYS = 19, "movablekeys";
        /// Allowed while a script or function is busy.
        const ALLOW_BUSY = 20, "allow_busy";
    }
}

bitset! {
    /// Key-spec flags of Redis 7.0 (`COMMAND` spells the first four in uppercase).
    pub struct KeySpecFlags {
        /// Read-only access to the key's value.
        const RO = 0, "RO";
        /// Read-write access.
        const RW = 1, "RW";
        /// Overwrite: the value is replaced without being read.
        const OW = 2, "OW";
        /// Removes the key.
        const RM = 3, "RM";
        /// Returns, copies or uses user data from the value.
        const ACCESS = 4, "access";
        /// Updates the value.
        const UPDATE = 5, "update";
        /// Adds data to the value.
        const INSERT = 6, "insert";
        /// Deletes data from the value.
        const DELETE = 7, "delete";
        /// The argument is not a key (a shard channel), though it hashes like one.
        const NOT_KEY = 8, "not_key";
        /// The spec may not find every key: Redis falls back to the command's own getkeys.
        const INCOMPLETE = 9, "incomplete";
        /// The flags depend on the arguments (SET ... GET, BITFIELD).
        const VARIABLE_FLAGS = 10, "variable_flags";
    }
}

bitset! {
    /// Redis 7.0's ACL categories of a command (`@read`, `@write`, ...), as `COMMAND` reports
    /// them; declared in Redis's order (the order of `ACL CAT`).
    pub struct AclCategories {
        /// Writes or reads keys, databases or their metadata in a type-agnostic way.
        const KEYSPACE = 0, "keyspace";
        /// Reads from keys.
        const READ = 1, "read";
        /// Writes to keys.
        const WRITE = 2, "write";
        /// Sets.
        const SET = 3, "set";
        /// Sorted sets.
        const SORTEDSET = 4, "sortedset";
        /// Lists.
        const LIST = 5, "list";
        /// Hashes.
        const HASH = 6, "hash";
        /// Strings.
        const STRING = 7, "string";
        /// Bitmaps.
        const BITMAP = 8, "bitmap";
        /// HyperLogLogs.
        const HYPERLOGLOG = 9, "hyperloglog";
        /// Geospatial indexes.
        const GEO = 10, "geo";
        /// Streams.
        const STREAM = 11, "stream";
        /// Pub/sub.
        const PUBSUB = 12, "pubsub";
        /// Administration.
        const ADMIN = 13, "admin";
        /// O(1) commands.
        const FAST = 14, "fast";
        /// Every command that is not `fast`.
        const SLOW = 15, "slow";
        /// May block the client.
        const BLOCKING = 16, "blocking";
        /// Potentially dangerous (administration, KEYS, ...).
        const DANGEROUS = 17, "dangerous";
        /// The connection's own state.
        const CONNECTION = 18, "connection";
        /// Transactions.
        const TRANSACTION = 19, "transaction";
        /// Scripting and functions.
        const SCRIPTING = 20, "scripting";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_contains_and_debug() {
        let f = Flags::WRITE.union(Flags::DENYOOM);
        assert!(f.contains(Flags::WRITE));
        assert!(f.contains(Flags::WRITE.union(Flags::DENYOOM)));
        assert!(!f.contains(Flags::READONLY));
        assert!(f.intersects(Flags::READONLY.union(Flags::WRITE)));
        assert!(Flags::NONE.is_empty());
        assert_eq!(format!("{f:?}"), "Flags(write | denyoom)");
        assert_eq!(Flags::from_name("no_auth"), Some(Flags::NO_AUTH));
        assert_eq!(KeySpecFlags::from_name("RO"), Some(KeySpecFlags::RO));
        assert_eq!(KeySpecFlags::from_name("ro"), None);
    }
}
