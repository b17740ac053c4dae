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
//! A writer is tied to the router that minted it ([`RouterId`]): the table, the gates and the
//! nodes of another router refuse it (a panic: a wiring mistake).
//!
//! A module of its own, below the backend, so that `Node::fence` can name it without the
//! backend importing the router above it.

/// Which router a writer writes (and which router's gates and nodes): a number
/// `Router::new` draws, so that a writer minted for one router cannot change another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterId(u64);

impl RouterId {
    /// A number no other router of this process has.
    pub(crate) fn next() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// The one capability to write the live topology (see the [module docs](self)).
#[derive(Debug)]
pub struct TopologyWriter {
    /// The router it was minted for: it writes that router's table, gates and nodes only.
    router: RouterId,
}

impl TopologyWriter {
    /// The writer of a new router: called once, by `Router::new`.
    pub(super) fn mint(router: RouterId) -> Self {
        Self { router }
    }

    /// Checks that this writer is the one of `owner`'s router.
    ///
    /// # Panics
    /// When it is another router's: a proxy wired with the wrong writer, a programming
    /// mistake that must not change a topology it does not own.
    pub(crate) fn check(&self, owner: RouterId) {
        assert_eq!(
            self.router, owner,
            "a TopologyWriter may only change the router it was minted for"
        );
    }

    /// A writer for a unit test that changes a gate, a node or a table of `router` by hand.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn for_tests(router: RouterId) -> Self {
        Self::mint(router)
    }
}
