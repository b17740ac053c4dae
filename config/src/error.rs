//! The crate's error types. Each one's `Display` is the message an operator reads: it names the
//! file, line, key, shard or slot concerned and, where there is one, the way out.

use std::fmt;
use std::io;
use std::path::PathBuf;

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
