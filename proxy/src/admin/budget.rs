//! How many admin connections may be open: operators first.
//!
//! Authenticated connections (socket clients, and TCP clients after AUTH) share
//! [`MAX_ADMIN_CLIENTS`]. TCP connections that have not authenticated yet have a budget of
//! their own, [`MAX_UNAUTHENTICATED_ADMIN_CLIENTS`]; when it is full, the oldest waiting one is
//! closed to make room. Strangers holding connections open therefore never take an
//! operator's place: the operator's new connection evicts one of theirs, then AUTHs (a round
//! trip), and from then on counts only against the authenticated budget.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Authenticated admin connections served at once; more are told `-ERR max number of
/// clients reached` and closed, like Redis. Operators and scripts need few; the bound keeps a
/// runaway script from taking the proxy's memory.
pub const MAX_ADMIN_CLIENTS: usize = 64;

/// TCP admin connections waiting to AUTH at once; a new one closes the oldest. Each holds
/// little (a small input bound, a short deadline), and honest clients AUTH at once.
pub const MAX_UNAUTHENTICATED_ADMIN_CLIENTS: usize = 16;

/// The admin port's connection counts, shared by its accept loop and its connections.
#[derive(Debug, Default)]
pub(super) struct Budget {
    /// The counts.
    inner: Mutex<Counts>,
}

/// What [`Budget`] guards.
#[derive(Debug, Default)]
struct Counts {
    /// Authenticated connections open.
    authenticated: usize,
    /// Connections waiting to AUTH, oldest first, with the signal that evicts each.
    waiting: VecDeque<(u64, Arc<Notify>)>,
    /// The next waiting connection's id.
    next_id: u64,
}

impl Budget {
    /// A budget with no connection.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for an authenticated connection, or `None` when all are taken.
    pub(super) fn admit_authenticated(self: &Arc<Self>) -> Option<Slot> {
        let mut counts = self.counts();
        if counts.authenticated >= MAX_ADMIN_CLIENTS {
            return None;
        }
        counts.authenticated += 1;
        Some(Slot::Authenticated(Arc::clone(self)))
    }

    /// A place for a connection that must AUTH first; when they are all taken, the oldest
    /// waiting connection is told to close.
    pub(super) fn admit_pending(self: &Arc<Self>) -> Slot {
        let mut counts = self.counts();
        if counts.waiting.len() >= MAX_UNAUTHENTICATED_ADMIN_CLIENTS {
            if let Some((_, evict)) = counts.waiting.pop_front() {
                // Stores a permit if the connection is not waiting on it right now.
                evict.notify_one();
            }
        }
        let id = counts.next_id;
        counts.next_id += 1;
        let evicted = Arc::new(Notify::new());
        counts.waiting.push_back((id, Arc::clone(&evicted)));
        Slot::Pending {
            budget: Arc::clone(self),
            id,
            evicted,
        }
    }

    /// Forgets waiting connection `id`, if it was not evicted already.
    fn leave_waiting(&self, id: u64) {
        self.counts().waiting.retain(|(waiting, _)| *waiting != id);
    }
}

/// One connection's place in the [`Budget`]; given back when dropped.
#[derive(Debug)]
pub(super) enum Slot {
    /// Waiting to AUTH.
    Pending {
        /// The budget it counts in.
        budget: Arc<Budget>,
        /// Its id among the waiting.
        id: u64,
        /// Notified when it is evicted.
        evicted: Arc<Notify>,
    },
    /// Authenticated.
    Authenticated(Arc<Budget>),
}

impl Slot {
    /// The signal that this connection was evicted; `None` once it is authenticated.
    pub(super) fn evicted(&self) -> Option<Arc<Notify>> {
        match self {
            Slot::Pending { evicted, .. } => Some(Arc::clone(evicted)),
            Slot::Authenticated(_) => None,
        }
    }

    /// Moves a waiting connection that just authenticated to the authenticated budget;
    /// `None` when that is full (the connection must be closed).
    pub(super) fn promote(self) -> Option<Slot> {
        match self {
            Slot::Pending { ref budget, .. } => {
                let budget = Arc::clone(budget);
                // Dropping `self` leaves the waiting list.
                drop(self);
                budget.admit_authenticated()
            }
            authenticated @ Slot::Authenticated(_) => Some(authenticated),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self {
            Slot::Pending { budget, id, .. } => budget.leave_waiting(*id),
            Slot::Authenticated(budget) => {
                let mut counts = budget.counts();
                counts.authenticated = counts.authenticated.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_connections_never_take_an_operators_place() {
        let budget = Budget::new();
        let first = budget.admit_pending();
        let first_evicted = first.evicted().unwrap();
        let mut strangers: Vec<Slot> = (1..MAX_UNAUTHENTICATED_ADMIN_CLIENTS)
            .map(|_| budget.admit_pending())
            .collect();
        assert_eq!(
            budget.counts().waiting.len(),
            MAX_UNAUTHENTICATED_ADMIN_CLIENTS
        );
        // The operator's connection evicts the oldest stranger and then authenticates.
        let operator = budget.admit_pending();
        assert_eq!(
            budget.counts().waiting.len(),
            MAX_UNAUTHENTICATED_ADMIN_CLIENTS
        );
        assert!(futures_util::FutureExt::now_or_never(first_evicted.notified()).is_some());
        let operator = operator.promote().expect("room for an operator");
        assert!(operator.evicted().is_none());
        assert_eq!(budget.counts().authenticated, 1);
        assert_eq!(
            budget.counts().waiting.len(),
            MAX_UNAUTHENTICATED_ADMIN_CLIENTS - 1
        );
        drop(first);
        strangers.clear();
        drop(operator);
        let counts = budget.counts();
        assert_eq!((counts.authenticated, counts.waiting.len()), (0, 0));
    }

    #[test]
    fn the_authenticated_budget_is_bounded() {
        let budget = Budget::new();
        let held: Vec<Slot> = (0..MAX_ADMIN_CLIENTS)
            .map(|_| budget.admit_authenticated().unwrap())
            .collect();
        assert!(budget.admit_authenticated().is_none());
        assert!(budget.admit_pending().promote().is_none());
        drop(held);
        assert!(budget.admit_authenticated().is_some());
    }
}
