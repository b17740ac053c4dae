//! `[backend] allowed_nodes`: which nodes the admin commands may add while the proxy has
//! backend credentials to send them.
//!
//! Nothing a node says before it has the password proves it is the operator's redis-server:
//! a fake server can answer `PING` with `-NOAUTH` as well as Redis does. What proves trust is
//! the operator's own word written where admin clients cannot change it: the configuration
//! file. A node is trusted when it is named in a `[[shard]]` list or matches a pattern here.

use std::fmt;
use std::net::IpAddr;

use toml::Spanned;

use crate::addr::NodeAddr;
use crate::error::ConfigError;
use crate::validate::Source;

/// One entry of `allowed_nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePattern {
    /// `IP/prefix` (or a bare IP, the whole address): any port of a node whose host is an IP
    /// address in that network. Hostnames are not resolved, so they never match a network.
    Network {
        /// The network's address, with the bits past `prefix` cleared.
        ip: IpAddr,
        /// Significant leading bits (at most 32 for IPv4, 128 for IPv6).
        prefix: u8,
    },
    /// `host:port`: exactly that node, as written in ADDSHARD/ADDREPLICA.
    Node(NodeAddr),
}

impl NodePattern {
    /// Parses `"10.0.0.0/8"`, `"10.1.2.3"`, `"[::1]:6379"`, `"redis-7.internal:6379"`.
    ///
    /// # Errors
    /// The text is neither a network nor a `host:port`; the message says what is expected.
    pub fn parse(text: &str) -> Result<NodePattern, String> {
        let (ip_text, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        if let Ok(ip) = ip_text.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?,
            };
            return Ok(NodePattern::Network {
                ip: mask(ip, prefix),
                prefix,
            });
        }
        NodeAddr::parse(text).map(NodePattern::Node).map_err(|_| {
            format!("{text:?} is neither a network (\"10.0.0.0/8\", \"127.0.0.1\") nor a host:port")
        })
    }

    /// Whether `node` is allowed by this pattern.
    #[must_use]
    pub fn matches(&self, node: &NodeAddr) -> bool {
        match self {
            NodePattern::Node(addr) => addr == node,
            NodePattern::Network { ip, prefix } => {
                let host = node.host().trim_start_matches('[').trim_end_matches(']');
                host.parse::<IpAddr>()
                    .is_ok_and(|host| host.is_ipv4() == ip.is_ipv4() && mask(host, *prefix) == *ip)
            }
        }
    }
}

impl fmt::Display for NodePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodePattern::Network { ip, prefix } => write!(f, "{ip}/{prefix}"),
            NodePattern::Node(addr) => write!(f, "{addr}"),
        }
    }
}

/// `ip` with every bit past the first `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

/// Validates `[backend] allowed_nodes`.
pub(crate) fn allowed_nodes(
    value: Option<Vec<Spanned<String>>>,
    src: &Source<'_>,
) -> Result<Vec<NodePattern>, ConfigError> {
    value
        .unwrap_or_default()
        .into_iter()
        .map(|entry| {
            NodePattern::parse(entry.get_ref())
                .map_err(|reason| src.invalid(Some(&entry), "backend.allowed_nodes", reason))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> NodeAddr {
        NodeAddr::parse(text).unwrap()
    }

    #[test]
    fn networks_match_any_port_of_their_addresses_and_nodes_match_exactly() {
        let net = NodePattern::parse("10.1.0.0/16").unwrap();
        assert!(net.matches(&node("10.1.200.3:6379")));
        assert!(!net.matches(&node("10.2.0.1:6379")));
        assert!(!net.matches(&node("redis.internal:6379")), "no DNS");
        let one = NodePattern::parse("127.0.0.1").unwrap();
        assert!(one.matches(&node("127.0.0.1:7000")));
        assert!(!one.matches(&node("127.0.0.2:7000")));
        let v6 = NodePattern::parse("::1/128").unwrap();
        assert!(v6.matches(&node("[::1]:7000")));
        assert!(!v6.matches(&node("127.0.0.1:7000")));
        let all = NodePattern::parse("0.0.0.0/0").unwrap();
        assert!(all.matches(&node("192.168.1.1:1")));
        let exact = NodePattern::parse("redis.internal:6379").unwrap();
        assert!(exact.matches(&node("redis.internal:6379")));
        assert!(!exact.matches(&node("redis.internal:6380")));
        assert_eq!(net.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn bad_patterns_say_what_is_expected() {
        assert!(NodePattern::parse("10.0.0.0/33")
            .unwrap_err()
            .contains("0..=32"));
        assert!(NodePattern::parse("nonsense")
            .unwrap_err()
            .contains("neither a network"));
    }
}
