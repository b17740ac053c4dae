//! The capability to change what the data path routes by.
//!
//! Publishing a routing table (`Router::install`), setting a shard's gate (`ShardGate::set`)
//! and fencing or unfencing a node (`Node::fence`, `Node::unfence`) each take a
//! `&TopologyWriter`. The router mints exactly one when it is built (`Router::new`); it cannot
//! be cloned, and only the router module can make one, so whoever holds it is the one writer
//! of the topology. `ProxyState` hands it, with the data plane's event receiver, to the
//! controller at start (`ControllerParts`); sessions, the admin port and reloads never hold
//! it, so they can read the topology but must ask the controller to change it.
//!
//! A module of its own, below the backend, so that `Node::fence` can name it without the
//! backend importing the router above it.

/// The one capability to write the live topology (see the [module docs](self)).
#[derive(Debug)]
pub struct TopologyWriter {
    /// Private: a writer is made only here, by the router.
    _private: (),
}

impl TopologyWriter {
    /// The writer of a new router: called once, by `Router::new`.
    pub(super) fn mint() -> Self {
        Self { _private: () }
    }

    /// A writer for a unit test that changes a gate, a node or a table by hand.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn for_tests() -> Self {
        Self::mint()
    }
}
