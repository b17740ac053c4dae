//! Backend node addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::NodeAddrError;

/// The address of a backend redis-server: `host:port`.
///
/// The host is an IPv4 address (`10.0.0.5:6379`), an IPv6 address in brackets
/// (`[::1]:6379`), or a DNS hostname (`redis-1:6379`, as docker-compose names services). The port
/// is `1..=65535`. Hostnames are resolved when connecting, not here: the configuration stays
/// valid when a container has not started yet.
///
/// Invariant: the text is valid and in canonical form (hostname lowercased, IPv6 address in its
/// shortest form, port without leading zeros), so two `NodeAddr`s for the same written node
/// compare equal and duplicate nodes are caught. Different names for one machine (`localhost`
/// and `127.0.0.1`) cannot be told apart without DNS and are not.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr(String);

impl NodeAddr {
    /// Validates `text` as `host:port` and returns it in canonical form.
    ///
    /// # Errors
    ///
    /// [`NodeAddrError`] naming what is wrong: no port, a port outside `1..=65535`, an invalid
    /// IP address or hostname, or an IPv6 address without brackets.
    pub fn parse(text: &str) -> Result<NodeAddr, NodeAddrError> {
        let syntax = || NodeAddrError::Syntax {
            text: text.to_owned(),
        };
        let bad_host = |reason: &'static str| NodeAddrError::Host {
            text: text.to_owned(),
            reason,
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(syntax)?;
            let port = after.strip_prefix(':').ok_or_else(syntax)?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| bad_host("not a valid IPv6 address"))?;
            (format!("[{ip}]"), port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(syntax)?;
            if host.contains(':') {
                return Err(bad_host(
                    "an IPv6 address must be written in brackets, like [::1]:6379",
                ));
            }
            if let Ok(ip) = host.parse::<Ipv4Addr>() {
                (ip.to_string(), port)
            } else {
                check_hostname(host).map_err(bad_host)?;
                (host.to_ascii_lowercase(), port)
            }
        };
        let port = parse_port(port).ok_or_else(|| NodeAddrError::Port {
            text: text.to_owned(),
        })?;
        Ok(NodeAddr(format!("{host}:{port}")))
    }

    /// The address as text, `host:port`; what `TcpStream::connect` accepts.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host: an IP address (IPv6 without its brackets) or a hostname.
    #[must_use]
    pub fn host(&self) -> &str {
        let host = self.0.rsplit_once(':').map_or("", |(host, _)| host);
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The host as an IP address; `None` when it is a hostname.
    #[must_use]
    pub fn ip(&self) -> Option<IpAddr> {
        self.host().parse().ok()
    }

    /// The TCP port.
    #[must_use]
    pub fn port(&self) -> u16 {
        // The invariant guarantees a valid port after the last ':'; 0 is unreachable.
        self.0
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(0)
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

/// RFC 1123 hostname rules, plus `_` (docker-compose project and service names use it).
pub(crate) fn check_hostname(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.len() > 253 {
        return Err("a hostname is at most 253 characters");
    }
    let mut last = "";
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated part of a hostname must be 1-63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a hostname may hold only letters, digits, '-', '_' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a hostname part must not start or end with '-'");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a valid IPv4 address");
    }
    Ok(())
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeAddr {
    type Err = NodeAddrError;

    fn from_str(text: &str) -> Result<NodeAddr, NodeAddrError> {
        NodeAddr::parse(text)
    }
}

impl AsRef<str> for NodeAddr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for NodeAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NodeAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        NodeAddr::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> NodeAddr {
        NodeAddr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn accepts_ipv4_ipv6_and_hostnames() {
        assert_eq!(ok("127.0.0.1:6379").to_string(), "127.0.0.1:6379");
        assert_eq!(ok("127.0.0.1:6379").host(), "127.0.0.1");
        assert_eq!(ok("127.0.0.1:6379").port(), 6379);
        assert_eq!(ok("[::1]:7000").to_string(), "[::1]:7000");
        assert_eq!(ok("[::1]:7000").host(), "::1");
        assert_eq!(ok("[::1]:7000").port(), 7000);
        assert_eq!(ok("redis-1:6379").as_str(), "redis-1:6379");
        assert_eq!(ok("redshard_redis_1:6379").host(), "redshard_redis_1");
        assert_eq!(ok("cache.example.com:65535").port(), 65535);
        assert_eq!(ok("h:1").port(), 1);
    }

    #[test]
    fn canonical_form_makes_duplicates_equal() {
        assert_eq!(ok("Redis-1:6379"), ok("redis-1:6379"));
        assert_eq!(ok("[0:0:0:0:0:0:0:1]:6379"), ok("[::1]:6379"));
        assert_eq!(ok("[0:0:0:0:0:0:0:1]:6379").as_str(), "[::1]:6379");
        assert_eq!(ok("127.0.0.1:06379").as_str(), "127.0.0.1:6379");
    }

    #[test]
    fn refuses_bad_addresses() {
        let cases = [
            ("127.0.0.1", "host:port"),
            ("127.0.0.1:0", "port"),
            ("127.0.0.1:65536", "port"),
            ("127.0.0.1:", "port"),
            ("127.0.0.1:+80", "port"),
            ("127.0.0.1:abc", "port"),
            (":6379", "empty"),
            ("::1:6379", "brackets"),
            ("[::1]6379", "host:port"),
            ("[::1:6379", "host:port"),
            ("[zz]:6379", "IPv6"),
            ("256.1.1.1:6379", "IPv4"),
            ("1.2.3:6379", "IPv4"),
            ("-redis:6379", "'-'"),
            ("re dis:6379", "letters"),
            ("a..b:6379", "1-63"),
            ("redis.:6379", "1-63"),
        ];
        for (text, needle) in cases {
            let err = NodeAddr::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
        let long = format!("{}:1", "a.".repeat(130));
        assert!(NodeAddr::parse(&long).is_err());
    }

    #[test]
    fn from_str_matches_parse() {
        let addr: NodeAddr = "redis-2:6380".parse().unwrap();
        assert_eq!(addr, ok("redis-2:6380"));
        assert!("nope".parse::<NodeAddr>().is_err());
    }
}
