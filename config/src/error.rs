//! The crate's error types. Each one's `Display` is the message an operator reads: it names the
//! file, line, key, shard or slot concerned and, where there is one, the way out.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::addr::NodeAddr;
use crate::slot::SlotRange;
use crate::topology::{NodeRole, ReplicaState, ShardId};

/// A slot range that is not `N` or `N-M` with `N <= M <= 16383`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotRangeError {
    /// Not digits, or not one `-` between two numbers.
    #[error("slot range {text:?} is not a slot number or a range like \"0-5460\"")]
    Syntax {
        /// The text given.
        text: String,
    },
    /// A bound is 16384 or more.
    #[error("slot range {text:?} is out of range: slots are numbered 0-16383")]
    OutOfRange {
        /// The text given.
        text: String,
    },
    /// `start > end`.
    #[error("slot range {text:?} starts after it ends")]
    Reversed {
        /// The text given.
        text: String,
    },
}

/// A node address that is not a valid `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeAddrError {
    /// No `:port`, or brackets that do not close.
    #[error("node address {text:?} must be host:port, [ipv6]:port or hostname:port")]
    Syntax {
        /// The text given.
        text: String,
    },
    /// The port is not a number in `1..=65535`.
    #[error("node address {text:?} has an invalid port: ports are 1-65535")]
    Port {
        /// The text given.
        text: String,
    },
    /// The host is not an IP address or a valid hostname.
    #[error("node address {text:?} has an invalid host: {reason}")]
    Host {
        /// The text given.
        text: String,
        /// What is wrong with the host.
        reason: &'static str,
    },
}

/// The configuration file cannot be used; the proxy refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// Where the text came from (a path or a name such as `<inline>`).
        origin: String,
        /// What is wrong, starting with `line N, column C:`.
        message: String,
    },
    /// A value is well-formed but not acceptable (range, uniqueness, slot coverage).
    #[error("{origin}: {}{key}: {message}", LinePrefix(*line))]
    Invalid {
        /// Where the text came from (a path or a name such as `<inline>`).
        origin: String,
        /// The 1-based line of the offending value, when it is in the file.
        line: Option<usize>,
        /// The key concerned, as a path: `backend.lanes`, `shard[1].slots`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

struct LinePrefix(Option<usize>);

impl fmt::Display for LinePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, "line {line}: "),
            None => Ok(()),
        }
    }
}

/// A topology change that cannot be applied; the topology is left as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// No shard has this id.
    #[error("shard {0} does not exist")]
    UnknownShard(ShardId),
    /// A shard name that is empty, too long or has characters other than `A-Za-z0-9._-`.
    #[error("shard name {name:?} is invalid: {reason}")]
    InvalidShardName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another shard already has this name.
    #[error("a shard named {0:?} already exists")]
    DuplicateShardName(String),
    /// The address is already a node of the topology.
    #[error("node {addr} is already the {role} of shard {shard:?}")]
    AddressInUse {
        /// The address given.
        addr: NodeAddr,
        /// Name of the shard that has it.
        shard: String,
        /// Its role there.
        role: NodeRole,
    },
    /// Every shard id is taken.
    #[error("no shard id is free: a topology holds at most 65536 shards")]
    TooManyShards,
    /// The address is not a replica of the shard.
    #[error("node {addr} is not a replica of shard {shard:?}")]
    NotAReplica {
        /// Name of the shard.
        shard: String,
        /// The address given.
        addr: NodeAddr,
    },
    /// Removing a shard that still has replicas.
    #[error(
        "shard {shard:?} still has {count} replica(s): remove the replica first, \
         hand the slots back, then remove the master"
    )]
    ShardHasReplicas {
        /// Name of the shard.
        shard: String,
        /// How many replicas it has.
        count: usize,
    },
    /// Removing a shard that still serves slots or is part of a migration.
    #[error(
        "shard {shard:?} still owns or migrates slots {ranges}: remove the replica first, \
         hand the slots back, then remove the master"
    )]
    ShardHasSlots {
        /// Name of the shard.
        shard: String,
        /// The slots concerned, compacted, as `0-99, 200`.
        ranges: String,
    },
    /// Promoting a replica that may lack acknowledged writes.
    #[error(
        "replica {addr} of shard {shard:?} is {state} and cannot be promoted; to force a \
         failover (accepting lost writes) mark it in-sync first"
    )]
    ReplicaNotInSync {
        /// Name of the shard.
        shard: String,
        /// The replica.
        addr: NodeAddr,
        /// Its state.
        state: ReplicaState,
    },
    /// A slot range with a bound past 16383 or `start > end`.
    #[error("invalid slot range {0}: slots are numbered 0-16383 and a range is start-end")]
    InvalidSlotRange(SlotRange),
    /// A migration step that names no slots.
    #[error("no slots given")]
    NoSlots,
    /// The ranges of one change overlap.
    #[error("slot {0} is named twice in the change")]
    SlotNamedTwice(u16),
    /// Beginning a migration of a slot that is already migrating.
    #[error("slot {slot} is already migrating from shard {from:?} to shard {to:?}")]
    SlotMigrating {
        /// The slot.
        slot: u16,
        /// Name of the source shard.
        from: String,
        /// Name of the target shard.
        to: String,
    },
    /// Beginning a migration of a slot to the shard that already owns it.
    #[error("slot {slot} is already owned by shard {shard:?}")]
    SlotAlreadyOwned {
        /// The slot.
        slot: u16,
        /// Name of the shard.
        shard: String,
    },
    /// Finishing or cancelling the migration of a slot that is not migrating.
    #[error("slot {slot} is not migrating (it is owned by shard {owner:?})")]
    SlotNotMigrating {
        /// The slot.
        slot: u16,
        /// Name of its owner.
        owner: String,
    },
    /// A queued migration whose slot is now owned by another shard than its source.
    #[error("slot {slot} is not owned by shard {shard:?} (it is owned by {owner:?})")]
    SlotNotOwnedBy {
        /// The slot.
        slot: u16,
        /// Name of the shard that should own it.
        shard: String,
        /// Name of the shard that owns it.
        owner: String,
    },
    /// Queuing a migration of a slot that another queued migration already moves.
    #[error("slot {0} is already queued to move")]
    SlotQueued(u16),
    /// A migration from a shard to itself.
    #[error("a migration from shard {0:?} to itself")]
    MigrationToItself(String),
    /// Dropping a queued migration that is not queued.
    #[error("no queued migration of {0}")]
    NotQueued(String),
    /// Removing a shard that a queued migration names.
    #[error(
        "shard {0:?} is named by queued migrations: wait until they ran (MIGRATIONS) or \
         cancel them (MIGRATION CANCEL)"
    )]
    ShardHasQueuedMigrations(String),
    /// The epoch counter is exhausted.
    #[error("the topology epoch cannot grow past {0}")]
    EpochExhausted(u64),
    /// A topology (from a file or built by hand) that breaks an invariant.
    #[error("inconsistent topology: {0}")]
    Inconsistent(String),
}

/// The persisted topology cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done, such as `"rename the temporary file over"`.
        action: &'static str,
        /// Why it failed.
        source: io::Error,
    },
    /// The file exists but does not hold a valid topology.
    #[error("{}: the persisted topology is unreadable: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The topology could not be encoded (a bug, reported rather than panicking).
    #[error("cannot encode the topology: {0}")]
    Encode(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_display_names_origin_line_and_key() {
        let err = ConfigError::Invalid {
            origin: "config.toml".into(),
            line: Some(12),
            key: "shard[1].slots".into(),
            message: "slot 5000 is assigned to both \"s1\" and \"s2\"".into(),
        };
        assert_eq!(
            err.to_string(),
            "config.toml: line 12: shard[1].slots: slot 5000 is assigned to both \"s1\" and \"s2\""
        );
        let err = ConfigError::Invalid {
            origin: "config.toml".into(),
            line: None,
            key: "shard".into(),
            message: "no shards".into(),
        };
        assert_eq!(err.to_string(), "config.toml: shard: no shards");
    }
}
