//! Failed `AUTH` attempts counted per source address and shared by every connection, so a
//! password guessed over many parallel connections is no faster than over one.
//!
//! The per-connection delay (`[limits] auth_failure_delay_ms`, growing with each failure on
//! the connection) does not slow a guesser who opens a new connection for each guess. Here a
//! source (an IPv4 address, or the /64 prefix of an IPv6 address, since one host commonly
//! holds a whole /64) that failed once gets *turns*: each of its later `AUTH` attempts, on
//! any connection and whether right or wrong, is answered at the source's next turn, and the
//! turn after that comes `auth_failure_delay × failures` later (at most 20 times the delay).
//! So once it failed, a source gets at most one answer per delay, and fewer as it keeps
//! failing. A correct password after failures is also answered at its turn: answering it at
//! once would tell a guesser which of its parallel guesses was right before the others.
//! Sources that never failed, and every other address, are never delayed.
//!
//! The table is bounded (`[limits] auth_throttle_sources`): a source is forgotten
//! [`FORGET_AFTER`] after its last turn, and when the table is full a new failing source
//! replaces the one whose last failure is oldest. A flood of addresses therefore costs at most
//! the table's size, and can only make the proxy forget other flooding addresses sooner.
//!
//! The admin port can use the same type for its own `AUTH` (one table per port, so that
//! failures on one do not delay the other).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long after its last turn a source's failures are forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The spacing of a source's turns grows with its failures up to this many delays.
const MAX_STEPS: u32 = 20;

/// Where attempts come from: an IPv4 address, or the first 64 bits of an IPv6 address (an
/// IPv4-mapped IPv6 address counts as its IPv4 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address.
    V4([u8; 4]),
    /// An IPv6 /64 prefix.
    V6([u8; 8]),
}

impl Source {
    /// The source of a client at `ip`.
    #[must_use]
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let octets = v6.octets();
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&octets[..8]);
                    Self::V6(prefix)
                }
            },
        }
    }
}

/// What is remembered of one source.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Failed attempts since it was last forgotten.
    failures: u32,
    /// When its next attempt may be answered.
    next: Instant,
    /// When it last failed, for eviction.
    last_failure: Instant,
}

impl Entry {
    /// Whether the source is forgotten at `now`.
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.next) >= FORGET_AFTER
    }
}

/// The per-source throttle of one port. See the module docs.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    /// Sources with failures, bounded by the `capacity` given to [`AuthThrottle::failed`].
    table: Mutex<HashMap<Source, Entry>>,
    /// Attempts answered later than they arrived because their source had failed before.
    throttled: AtomicU64,
}

impl AuthThrottle {
    /// A throttle that knows no source.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next turn of the source at `ip` for an attempt arriving `now`; returns how
    /// long its answer must wait (`None`: answer at once, the source has no recent failure).
    /// `step` is `auth_failure_delay`.
    pub fn turn(&self, ip: IpAddr, step: Duration, now: Instant) -> Option<Duration> {
        let source = Source::of(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = table.get_mut(&source)?;
        if entry.expired(now) {
            table.remove(&source);
            return None;
        }
        let at = entry.next.max(now);
        entry.next = at + step * entry.failures.min(MAX_STEPS);
        drop(table);
        let wait = at.saturating_duration_since(now);
        if wait.is_zero() {
            return None;
        }
        self.throttled.fetch_add(1, Ordering::Relaxed);
        Some(wait)
    }

    /// Records a failed attempt of the source at `ip` at `now`, remembering at most
    /// `capacity` sources (0: none, the throttle is off).
    pub fn failed(&self, ip: IpAddr, step: Duration, capacity: usize, now: Instant) {
        if capacity == 0 {
            return;
        }
        let source = Source::of(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.get_mut(&source) {
            if !entry.expired(now) {
                entry.failures = entry.failures.saturating_add(1);
                entry.last_failure = now;
                return;
            }
        }
        if table.len() >= capacity {
            table.retain(|_, e| !e.expired(now));
        }
        while table.len() >= capacity {
            // Full of recent failures: forget the source whose last failure is oldest. A
            // scan, only when full, of at most `MAX_AUTH_THROTTLE_SOURCES` entries.
            let Some(oldest) = table
                .iter()
                .min_by_key(|(_, e)| e.last_failure)
                .map(|(s, _)| *s)
            else {
                break;
            };
            table.remove(&oldest);
        }
        table.insert(
            source,
            Entry {
                failures: 1,
                next: now + step,
                last_failure: now,
            },
        );
    }

    /// Attempts whose answer waited for their source's turn, since start.
    #[must_use]
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Sources remembered now.
    #[must_use]
    pub fn sources(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(100);

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_failing_source_gets_spaced_turns_and_others_none() {
        let t = AuthThrottle::new();
        let now = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(t.turn(a, STEP, now), None, "no failure yet");
        t.failed(a, STEP, 16, now);
        // Ten attempts arriving together are answered one step apart, then two apart
        // once a second failure is counted.
        assert_eq!(t.turn(a, STEP, now), Some(STEP));
        assert_eq!(t.turn(a, STEP, now), Some(STEP * 2));
        t.failed(a, STEP, 16, now);
        assert_eq!(t.turn(a, STEP, now), Some(STEP * 3));
        assert_eq!(t.turn(a, STEP, now), Some(STEP * 5));
        assert_eq!(t.throttled(), 4);
        // Another address is not delayed.
        assert_eq!(t.turn(ip("10.0.0.2"), STEP, now), None);
        assert_eq!(t.throttled(), 4);
        // Forgotten a while after its last turn.
        let later = now + STEP * 7 + FORGET_AFTER;
        assert_eq!(t.turn(a, STEP, later), None);
        assert_eq!(t.sources(), 0);
    }

    #[test]
    fn ipv6_counts_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
    }

    #[test]
    fn a_flood_of_addresses_stays_within_the_capacity() {
        let t = AuthThrottle::new();
        let now = Instant::now();
        for i in 0..1000u32 {
            let octets = i.to_be_bytes();
            let a = IpAddr::from([10, octets[1], octets[2], octets[3]]);
            t.failed(a, STEP, 64, now + Duration::from_micros(u64::from(i)));
        }
        assert_eq!(t.sources(), 64);
        // The newest failures are the ones kept.
        assert!(t.turn(ip("10.0.3.231"), STEP, now).is_some());
        assert_eq!(t.turn(ip("10.0.0.1"), STEP, now), None);
        // Capacity 0: off.
        let off = AuthThrottle::new();
        off.failed(ip("10.0.0.1"), STEP, 0, now);
        assert_eq!(off.turn(ip("10.0.0.1"), STEP, now), None);
    }
}
