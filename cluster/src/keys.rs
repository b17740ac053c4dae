//! Where each piece of shared state lives in etcd, under the configured prefix:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `<prefix>/topology` | the topology, in the text a `topology_file` holds | none |
//! | `<prefix>/epoch` | its epoch in decimal (what a compare-and-swap compares) | none |
//! | `<prefix>/leader` | the leading proxy's id; its create revision is the fencing token | the leader's |
//! | `<prefix>/proxies/<id>` | `addr = "..."` and the acknowledged `epoch` | that proxy's |
//! | `<prefix>/health/<id>` | that proxy's view of the nodes, one `host:port up|down` a line | that proxy's |

/// The keys under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    /// The configured prefix, such as `/redshard` (no trailing `/`).
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    pub(crate) fn topology(&self) -> String {
        format!("{}/topology", self.prefix)
    }

    pub(crate) fn epoch(&self) -> String {
        format!("{}/epoch", self.prefix)
    }

    pub(crate) fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The prefix of every member key, with its trailing `/`.
    pub(crate) fn proxies(&self) -> String {
        format!("{}/proxies/", self.prefix)
    }

    pub(crate) fn proxy(&self, id: &str) -> String {
        format!("{}{id}", self.proxies())
    }

    /// The prefix of every probe report, with its trailing `/`.
    pub(crate) fn health(&self) -> String {
        format!("{}/health/", self.prefix)
    }

    pub(crate) fn health_of(&self, id: &str) -> String {
        format!("{}{id}", self.health())
    }
}
