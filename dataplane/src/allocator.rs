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

    #[test]
    fn resident_size_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = resident_bytes().expect("VmRSS");
            assert!(rss > 1024 * 1024, "{rss}");
        }
    }
}
