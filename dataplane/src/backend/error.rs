//! Why a connection to a node failed: what lanes, subscribers and the handshake
//! (`connect.rs`) report, and the `kind` it counts under in `/metrics`.

use std::time::Duration;

use redshard_protocol::resp::ProtocolError;

/// Why a lane connection failed. Its display follows `backend ADDR ` in the client's error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaneError {
    /// TCP connect or the handshake's I/O failed.
    #[error("unavailable: {0}")]
    Connect(#[source] std::io::Error),
    /// Connect plus handshake took too long.
    #[error("unavailable: connect timed out after {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    /// The node refused the connection itself (it has `maxclients` connections already),
    /// answering the handshake's first request with that.
    #[error("refused the connection: {0}")]
    Refused(String),
    /// The node refused our credentials.
    #[error("refused the proxy's credentials: {0}")]
    Auth(String),
    /// The node refused to create the proxy's ACL users, or the switch to one of them.
    #[error("cannot run client traffic as the proxy's ACL users ({0}); grant the backend user ACL SETUSER, or set [backend] manage_acl = false (scripts then run with the backend user's rights)")]
    Acl(String),
    /// The node has fewer databases than clients may `SELECT` (`[backend] databases`), or
    /// refused a `SELECT` to the proxy's backend user.
    #[error("cannot serve [backend] databases = {databases} ({why}); set the nodes' `databases` to at least that, or lower [backend] databases")]
    Databases {
        /// The configured count.
        databases: u32,
        /// The node's answer.
        why: String,
    },
    /// The node refused `HELLO 3` (Redis before 6 has no RESP3).
    #[error("does not speak RESP3: {0}")]
    NoResp3(String),
    /// The node refused the lane's own switch of protocol, backend user or database
    /// (`HELLO`, `AUTH`, `SELECT`) on an established connection.
    #[error("refused a switch of protocol, user or database: {0}")]
    Switch(String),
    /// Reading or writing an established connection failed.
    #[error("connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// The node closed the connection.
    #[error("closed the connection")]
    Closed,
    /// The oldest request waited longer than the response timeout.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The node sent bytes that are not RESP.
    #[error("sent an invalid reply ({0})")]
    Protocol(ProtocolError),
    /// The node sent a reply nobody asked for.
    #[error("sent a reply with no request in flight")]
    Unsolicited,
    /// The node was failed over: the proxy no longer talks to it.
    #[error("is fenced after a failover")]
    Fenced,
    /// The node restarted (another `run_id`): it lost what it held in memory, and nothing
    /// is sent to it until the controller has dealt with that (see [`super::Incarnation`]).
    #[error("restarted and lost its data in memory; waiting for the proxy to fail it over or resynchronise")]
    Restarted,
}

impl LaneError {
    /// The `kind` label of `backend_errors_total` for this failure.
    #[must_use]
    pub(crate) fn metric_kind(&self) -> &'static str {
        use redshard_metrics::names::error_kind;
        match self {
            Self::Connect(_) | Self::ConnectTimeout(_) | Self::NoResp3(_) | Self::Refused(_) => {
                error_kind::CONNECT
            }
            Self::Auth(_) | Self::Acl(_) | Self::Databases { .. } => error_kind::AUTH,
            Self::Io(_) | Self::Closed => error_kind::CLOSED,
            Self::Timeout(_) => error_kind::TIMEOUT,
            Self::Protocol(_) | Self::Unsolicited | Self::Switch(_) => error_kind::PROTOCOL,
            Self::Fenced | Self::Restarted => error_kind::CLOSED,
        }
    }
}
