//! The proxy's MONITOR connection to one master, for the commands scripts run there (see
//! `crate::monitor`).
//!
//! A Lua script or a function runs its `redis.call()`s on the node, where the proxy does not
//! see them; the node's own MONITOR does, and writes them as `+<time> [<db> lua] "GET" "k"`.
//! While some client monitors the proxy, this connection runs `MONITOR` on the master and
//! forwards those lines, and only those: the lines of the node's other clients (the proxy's
//! own lanes, whose commands the proxy shows itself with their client's address) are dropped.
//!
//! It connects with the configured backend credentials and TLS, without switching to the
//! proxy's managed ACL users (`[backend] manage_acl`), which may not run `MONITOR`. The task
//! reports when the node confirmed `MONITOR` and when it lost the connection (at once when its
//! node is fenced); it reconnects by itself (with the lanes' backoff) until it is aborted, and
//! waits while its node is fenced (the connection is [`super::watch`]'s, given the request and
//! the choice of lines here).

use bytes::Bytes;

use super::watch::{Report, Watched};
use redshard_protocol::resp::Protocol;

/// What a master's MONITOR connection reports: `Ready` once the node confirmed `MONITOR`
/// (from then on its scripts' commands are forwarded), the [`ScriptLine`]s, and `Lost` when
/// lines may be missed until the next `Ready`.
pub type NodeMonitor = Report<ScriptLine>;

/// One line of a command a script or function ran, as the node wrote it (`+...\r\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptLine(pub Bytes);

/// The request.
const MONITOR: &[u8] = b"*1\r\n$7\r\nMONITOR\r\n";

impl Watched for ScriptLine {
    const COMMAND: &'static str = "MONITOR";
    const REQUEST: &'static [u8] = MONITOR;
    const PROTOCOL: Protocol = Protocol::Resp2;
    const LOST_WHILE_FENCED: bool = true;

    fn message(frame: Bytes) -> Option<Self> {
        is_script_line(&frame).then_some(Self(frame))
    }
}

/// Runs the MONITOR connection to `addr` until aborted, sending what it reports to `tx` with
/// the node's address. Ends when `tx` is closed. `config` is the node's lane settings without
/// managed ACL users.
pub(super) use super::watch::run;

/// Whether `frame` is a MONITOR line of a command a script or function ran: Redis writes
/// `+<seconds>.<micros> [<db> lua] ...` for those, and `[<db> <addr>]` (or `[<db> unix:...]`)
/// for a client's.
fn is_script_line(frame: &[u8]) -> bool {
    let Some(line) = frame.strip_prefix(b"+") else {
        return false;
    };
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let Some(client) = line[space + 1..].strip_prefix(b"[") else {
        return false;
    };
    let digits = client.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && client[digits..].starts_with(b" lua] ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_script_lines_are_kept() {
        assert!(is_script_line(
            b"+1700000000.123456 [0 lua] \"GET\" \"foo\"\r\n"
        ));
        assert!(is_script_line(
            b"+1700000000.123456 [12 lua] \"SET\" \"a\" \"b\"\r\n"
        ));
        assert!(!is_script_line(
            b"+1700000000.123456 [0 127.0.0.1:51234] \"GET\" \"lua] \"\r\n"
        ));
        assert!(!is_script_line(
            b"+1700000000.123456 [0 unix:/tmp/redis.sock] \"GET\" \"k\"\r\n"
        ));
        assert!(!is_script_line(b"+1700000000.123456 [ lua] \"GET\"\r\n"));
        assert!(!is_script_line(b"+OK\r\n"));
        assert!(!is_script_line(b"-ERR no\r\n"));
    }
}
