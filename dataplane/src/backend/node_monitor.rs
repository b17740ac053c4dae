//! The proxy's MONITOR connection to one master, for the commands scripts run there (see
//! `crate::monitor`).
//!
//! A Lua script or a function runs its `redis.call()`s on the node, where the proxy does not
//! see them; the node's own MONITOR does, and writes them as `+<time> [<db> lua] "GET" "k"`.
//! While some client monitors the proxy, this connection runs `MONITOR` on the master and
//! forwards those lines, and only those: the lines of the node's other clients (the proxy's
//! own lanes, whose commands the proxy shows itself with their client's address) are dropped,
//! but for the proxy's own markers (see [`marker_request`]): a lane sends one after a script
//! while anyone monitors, and once its line is read every line of that script was.
//!
//! It connects with the configured backend credentials and TLS, without switching to the
//! proxy's managed ACL users (`[backend] manage_acl`), which may not run `MONITOR`. The task
//! reports when the node confirmed `MONITOR` and when it lost the connection (at once when its
//! node is fenced); it reconnects by itself (with the lanes' backoff) until it is aborted, and
//! waits while its node is fenced (the connection is [`super::watch`]'s, given the request and
//! the choice of lines here).

use std::sync::LazyLock;

use bytes::Bytes;

use super::watch::{Report, Watched};
use redshard_protocol::resp::Protocol;

/// What a master's MONITOR connection reports: `Ready` once the node confirmed `MONITOR`
/// (from then on its scripts' commands are forwarded), the [`NodeLine`]s, and `Lost` when
/// lines may be missed until the next `Ready`.
pub type NodeMonitor = Report<NodeLine>;

/// A line of the node's MONITOR the proxy wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeLine {
    /// A command a script or function ran, as the node wrote it (`+...\r\n`).
    Script(Bytes),
    /// The proxy's marker number `n` ran (see [`marker_request`]).
    Marker(u64),
}

/// The request.
const MONITOR: &[u8] = b"*1\r\n$7\r\nMONITOR\r\n";

impl Watched for NodeLine {
    const COMMAND: &'static str = "MONITOR";
    const REQUEST: &'static [u8] = MONITOR;
    const PROTOCOL: Protocol = Protocol::Resp2;
    const LOST_WHILE_FENCED: bool = true;

    fn message(frame: Bytes) -> Option<Self> {
        if is_script_line(&frame) {
            return Some(Self::Script(frame));
        }
        marker_of(&frame).map(Self::Marker)
    }
}

/// What a marker's argument starts with: the proxy's name and this process's own random
/// part, so that a client's `ECHO` (or another proxy's marker) is not taken for one.
static MARKER_PREFIX: LazyLock<String> = LazyLock::new(|| {
    format!(
        "redshard-monitor-mark:{:016x}:",
        std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id()
        )
    )
});

/// The proxy's marker number `n`: `ECHO <prefix><n>`, sent on a lane right after a script's
/// request while anyone monitors. The node runs it after the script, so its MONITOR writes
/// the marker's line after every line of the script: once the relay has read it, the
/// script's lines are shown (see `crate::monitor`).
#[must_use]
pub fn marker_request(n: u64) -> Bytes {
    let arg = format!("{}{n}", *MARKER_PREFIX);
    Bytes::from(format!("*2\r\n$4\r\nECHO\r\n${}\r\n{arg}\r\n", arg.len()))
}

/// The number of the proxy's marker whose MONITOR line `frame` is (`+<time> [<db> <client>]
/// "ECHO" "<prefix><n>"`), if it is one. Read from the line's end: while anyone monitors,
/// every command the master runs comes through here, and a large one costs no scan. (Quotes
/// inside arguments are escaped in MONITOR lines, so `] "ECHO" "` is the client's field
/// closing and the command's name.)
fn marker_of(frame: &[u8]) -> Option<u64> {
    let line = frame.strip_prefix(b"+")?.strip_suffix(b"\"\r\n")?;
    let digits_at = line.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    let (head, digits) = line.split_at(digits_at);
    head.strip_suffix(MARKER_PREFIX.as_bytes())?
        .strip_suffix(b"] \"ECHO\" \"")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
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

    #[test]
    fn markers_are_the_proxy_s_own_echo_lines() {
        let request = marker_request(42);
        let arg = format!("{}42", *MARKER_PREFIX);
        assert_eq!(
            request,
            format!("*2\r\n$4\r\nECHO\r\n${}\r\n{arg}\r\n", arg.len())
        );
        let line = |client: &str, arg: &str| {
            Bytes::from(format!(
                "+1700000000.123456 [0 {client}] \"ECHO\" \"{arg}\"\r\n"
            ))
        };
        assert_eq!(
            NodeLine::message(line("127.0.0.1:51234", &arg)),
            Some(NodeLine::Marker(42))
        );
        // A client's own ECHO, another prefix, a script's ECHO, trailing text: not markers.
        assert_eq!(NodeLine::message(line("127.0.0.1:51234", "hello")), None);
        assert_eq!(
            NodeLine::message(line("127.0.0.1:51234", "redshard-monitor-mark:0:42")),
            None
        );
        assert_eq!(
            NodeLine::message(line("127.0.0.1:51234", &format!("{arg}x"))),
            None
        );
        assert_eq!(
            NodeLine::message(line("127.0.0.1:51234", &MARKER_PREFIX)),
            None
        );
        let huge = format!("{arg}{}", "9".repeat(30));
        assert_eq!(NodeLine::message(line("127.0.0.1:51234", &huge)), None);
        let other = Bytes::from(format!(
            "+1700000000.123456 [0 127.0.0.1:1] \"SET\" \"{arg}\"\r\n"
        ));
        assert_eq!(NodeLine::message(other), None);
        let script = line("lua", &arg);
        assert_eq!(
            NodeLine::message(script.clone()),
            Some(NodeLine::Script(script))
        );
    }
}
