//! The memory allocator: jemalloc (cargo feature `jemalloc`, on by default), set up to hand
//! freed memory back to the OS, and what `INFO memory` reports of it.
//!
//! glibc's malloc keeps what a burst of clients freed: a thousand connections closing leave
//! their pages in the heap for reuse, and the RSS stays up until the process ends. jemalloc
//! returns unused dirty pages to the OS after its decay time; [`configure`] sets that to
//! [`DIRTY_DECAY_MS`] (jemalloc's default is 10 s) and starts jemalloc's background thread, so
//! the purge happens while the proxy idles too, not only when a later allocation passes
//! through the arena.
//!
//! Operators who set jemalloc's own run-time options in [`CONF_ENV`] (the build uses
//! jemalloc's `_rjem_` prefix), e.g. `_RJEM_MALLOC_CONF=dirty_decay_ms:5000`, get exactly
//! those: [`configure`] then changes nothing. With the feature off (`--no-default-features`)
//! every binary linking this crate keeps the system allocator.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long freed pages stay with the process before jemalloc returns them to the OS, in
/// milliseconds: long enough that steady traffic reuses its buffers instead of faulting pages
/// back in, short enough that the RSS comes down within seconds after a burst of clients.
pub const DIRTY_DECAY_MS: isize = 1000;

/// The environment variable through which jemalloc reads its run-time options in this build.
pub const CONF_ENV: &str = "_RJEM_MALLOC_CONF";

/// Applies the proxy's allocator settings unless the operator set [`CONF_ENV`]. The `redshard`
/// binary calls it once, before the runtime starts its threads. A failure only means freed
/// memory returns later, so the caller reports it and goes on.
///
/// # Errors
/// jemalloc's refusal (e.g. a platform without background-thread support), as text.
pub fn configure() -> Result<(), String> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{arenas, background_thread, Access, AsName};
        if std::env::var_os(CONF_ENV).is_some() {
            return Ok(());
        }
        let failed = |what: &str, e: tikv_jemalloc_ctl::Error| format!("{what}: {e}");
        // Arenas made from now on (the worker threads', lazily)...
        b"arenas.dirty_decay_ms\0"
            .name()
            .write(DIRTY_DECAY_MS)
            .map_err(|e| failed("arenas.dirty_decay_ms", e))?;
        // ...and those that exist already (the main thread's).
        let mut mib = b"arena.0.dirty_decay_ms\0"
            .name()
            .mib::<[usize; 3]>()
            .map_err(|e| failed("arena.0.dirty_decay_ms", e))?;
        let count = arenas::narenas::read().map_err(|e| failed("arenas.narenas", e))?;
        for arena in 0..count as usize {
            mib[1] = arena;
            // Arenas not made yet refuse; they will take the default written above.
            let _ = mib.write(DIRTY_DECAY_MS);
        }
        background_thread::write(true).map_err(|e| failed("background_thread", e))
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        Ok(())
    }
}

/// How much a worker thread must have freed since its cache was last handed back before
/// parking hands it back again ([`on_worker_park`]): below that, what the cache can hold is
/// too little to matter.
pub const PARK_FLUSH_BYTES: u64 = 64 * 1024;

/// How often at most a worker thread hands its cache back when it parks ([`on_worker_park`]):
/// a busy thread parks thousands of times a second, and each hand-back makes its next
/// allocations refill the cache from the arena (~45 µs for the hand-back and the refills of
/// 13 size classes, measured on the 2-core VM of `benches/`). Ten a second cost under 0.05%
/// of a core, and the cache of a thread that goes idle holds at most what it freed in its
/// last 100 ms.
pub const PARK_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Called by each worker thread just before it parks (tokio's `on_thread_park`): hands the
/// objects the thread freed and jemalloc keeps in its thread cache back to the arena, where
/// they return to the OS with their pages, at most every [`PARK_FLUSH_INTERVAL`] and only
/// once the thread freed [`PARK_FLUSH_BYTES`] since the last time.
///
/// Why: each thread's cache keeps up to a few hundred freed objects of each size class for
/// its next allocations, and a thread that goes idle never uses them: after a burst of clients
/// went idle and parked, each worker beyond the first kept ~0.4 MB per 1,000 clients their
/// sessions had freed (1,368 bytes per idle client with two workers, 1,933 with four, against
/// 926 with one). The thread's freed-bytes counter is a thread-local read, so a park that does
/// not flush costs a load and a compare.
///
/// Only with several workers: a single worker reuses its cache with the next burst anyway
/// (926 bytes per idle client without the hand-back, ~930 with), and the hand-backs cost
/// clients that keep pipelining memory (1,000 clients at `-P 16`: 14.4–15.3 / 16.3–16.7 KB
/// per client, median / peak, against 13.1–13.4 / 15.5–15.7 without).
pub fn on_worker_park() {
    #[cfg(feature = "jemalloc")]
    PARK_FLUSH.with(ParkFlush::on_park);
}

/// A worker thread's record of its last cache hand-back ([`on_worker_park`]).
#[cfg(feature = "jemalloc")]
struct ParkFlush {
    /// jemalloc's count of the bytes this thread freed (a pointer to its thread-local
    /// counter); `None` where jemalloc does not keep it (statistics off): then nothing is
    /// flushed.
    freed: Option<tikv_jemalloc_ctl::thread::ThreadLocal<u64>>,
    /// That count after the last hand-back.
    freed_then: std::cell::Cell<u64>,
    /// When the last hand-back was (the thread's first park counts as one).
    at: std::cell::Cell<std::time::Instant>,
}

#[cfg(feature = "jemalloc")]
thread_local! {
    static PARK_FLUSH: ParkFlush = ParkFlush::new();
}

#[cfg(feature = "jemalloc")]
impl ParkFlush {
    fn new() -> Self {
        let freed = tikv_jemalloc_ctl::thread::deallocatedp::read().ok();
        Self {
            freed,
            freed_then: std::cell::Cell::new(freed.map_or(0, |f| f.get())),
            at: std::cell::Cell::new(std::time::Instant::now()),
        }
    }

    fn on_park(&self) {
        let Some(freed) = self.freed else { return };
        if freed.get().wrapping_sub(self.freed_then.get()) < PARK_FLUSH_BYTES {
            return;
        }
        let now = std::time::Instant::now();
        if now.duration_since(self.at.get()) < PARK_FLUSH_INTERVAL {
            return;
        }
        flush_thread_cache();
        self.at.set(now);
        self.freed_then.set(freed.get());
    }
}

/// Hands the calling thread's cached objects back to its arena. jemalloc's
/// `thread.tcache.flush` takes no argument, which its safe interface cannot express; turning
/// the thread's cache off flushes and releases it, and turning it on again gives the thread
/// a fresh, empty one. Returns whether both steps were taken (a failure leaves the cache as
/// jemalloc left it, on or off: both are correct, only slower or larger).
#[cfg(feature = "jemalloc")]
fn flush_thread_cache() -> bool {
    use tikv_jemalloc_ctl::{Access, AsName};
    let enabled = b"thread.tcache.enabled\0".name();
    enabled.write(false).is_ok() && enabled.write(true).is_ok()
}

/// The allocator's name as Redis's `mem_allocator` gives it: `jemalloc-5.3.0` or `libc`.
pub fn name() -> String {
    #[cfg(feature = "jemalloc")]
    {
        let version = tikv_jemalloc_ctl::version::read().unwrap_or("unknown");
        // "5.3.0-1-ge13ca993..." → "5.3.0"
        let short = version.split('-').next().unwrap_or(version);
        format!("jemalloc-{short}")
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        "libc".to_owned()
    }
}

/// The decay time new arenas get, in milliseconds (-1: never purge), or `None` without
/// jemalloc.
pub fn dirty_decay_ms() -> Option<isize> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{Access, AsName};
        b"arenas.dirty_decay_ms\0".name().read().ok()
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}

/// Whether jemalloc's background purging thread runs.
pub(crate) fn background_purge() -> bool {
    #[cfg(feature = "jemalloc")]
    {
        tikv_jemalloc_ctl::background_thread::read().unwrap_or(false)
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        false
    }
}

/// What the allocator holds, in bytes, as Redis's `INFO memory` reports jemalloc's: the
/// objects the proxy allocated, the pages of the size classes they live in (`active` minus
/// `allocated` is fragmentation: freed slots in pages still in use), and the pages jemalloc
/// holds resident (`resident` minus `active`: freed pages not yet returned to the OS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in allocated objects.
    pub allocated: usize,
    /// Bytes in pages with allocated objects.
    pub active: usize,
    /// Bytes in pages jemalloc holds resident (its metadata included).
    pub resident: usize,
}

/// The allocator's current [`Usage`], or `None` without jemalloc.
pub fn usage() -> Option<Usage> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are a snapshot taken when the epoch advances.
        epoch::advance().ok()?;
        Some(Usage {
            allocated: stats::allocated::read().ok()?,
            active: stats::active::read().ok()?,
            resident: stats::resident::read().ok()?,
        })
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`), where the OS
/// tells it.
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary links this crate, so with the feature it runs on jemalloc too, and
    /// `configure` must leave exactly the settings it promises (or those of the environment).
    #[cfg(feature = "jemalloc")]
    #[test]
    fn configure_sets_decay_and_background_thread() {
        configure().unwrap();
        if std::env::var_os(CONF_ENV).is_none() {
            assert_eq!(dirty_decay_ms(), Some(DIRTY_DECAY_MS));
            assert!(background_purge());
        }
        assert!(name().starts_with("jemalloc-5."), "{}", name());
    }

    /// A thread that freed enough hands its cache back when it parks (the cache is on again
    /// after), no more often than the interval, and not before it freed enough again.
    #[cfg(feature = "jemalloc")]
    #[test]
    fn a_parking_thread_hands_its_cache_back_when_it_freed_enough() {
        use tikv_jemalloc_ctl::{Access, AsName};
        std::thread::spawn(|| {
            let flush = ParkFlush::new();
            let freed = flush.freed.expect("jemalloc counts freed bytes");
            let churn = |bytes: u64| {
                for _ in 0..bytes / 512 {
                    drop(std::hint::black_box(vec![0u8; 512]));
                }
            };
            assert!(
                flush_thread_cache(),
                "jemalloc refused to flush the thread cache"
            );
            // Freed enough, but its first park is not an interval after its start.
            churn(2 * PARK_FLUSH_BYTES);
            flush.on_park();
            assert!(
                freed.get() - flush.freed_then.get() >= PARK_FLUSH_BYTES,
                "flushed too soon"
            );
            // An interval later it flushes, and the cache is on again.
            flush.at.set(flush.at.get() - PARK_FLUSH_INTERVAL);
            let before = flush.at.get();
            flush.on_park();
            assert!(flush.at.get() > before, "no flush after the interval");
            assert!(freed.get() - flush.freed_then.get() < PARK_FLUSH_BYTES);
            let enabled: bool = b"thread.tcache.enabled\0".name().read().unwrap();
            assert!(enabled, "the thread cache must be on again after a flush");
            // An interval later again, but it freed too little since: no flush.
            flush.at.set(flush.at.get() - PARK_FLUSH_INTERVAL);
            let before = flush.at.get();
            flush.on_park();
            assert_eq!(flush.at.get(), before, "flushed with too little freed");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn resident_size_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = resident_bytes().expect("VmRSS");
            assert!(rss > 1024 * 1024, "{rss}");
        }
    }
}
