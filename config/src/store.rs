//! Persistence of the live topology, so failovers and slot moves survive a restart.
//!
//! A save replaces the file atomically: the topology is written to a temporary file in the
//! same directory, fsynced, renamed over the target, and the directory is fsynced so the
//! rename itself is durable. A crash leaves either the old or the new topology, never a mix.
//!
//! # The run marker
//!
//! A running proxy's store writes `running = true` into the file with every save (one is made
//! at start, before clients are served) and saves once more without it when the proxy stops
//! cleanly. So a file found with the marker at start was left by a proxy that was killed or
//! crashed: with proxy mirroring, its masters may hold writes whose effects never reached the
//! replicas, and the new proxy must not trust them ([`FileTopologyStore::load_marked`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::StoreError;
use crate::topology::form::{self, Marked};
use crate::topology::Topology;

/// Where the live topology is kept between runs.
pub trait TopologyStore {
    /// The last saved topology; `None` if none was ever saved.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the stored topology exists but cannot be read or is invalid.
    fn load(&self) -> Result<Option<Topology>, StoreError>;

    /// Saves `topology` durably; returns once it would survive a crash.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when it cannot be written; the previously saved topology is intact.
    fn save(&self, topology: &Topology) -> Result<(), StoreError>;
}

/// Header written at the top of the topology file.
const HEADER: &str = "# redshard live topology, written by the proxy at each change.\n\
                      # Edit it only while the proxy is stopped; the highest epoch wins at start.\n\n";

/// Distinguishes the temporary files of concurrent saves within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A [`TopologyStore`] in one TOML file (see [`crate::topology`] for the format).
#[derive(Debug)]
pub struct FileTopologyStore {
    /// The topology file; its directory holds the temporary files of saves.
    path: PathBuf,
    /// Whether saves write the run marker (see the module docs).
    running: AtomicBool,
}

impl Clone for FileTopologyStore {
    fn clone(&self) -> FileTopologyStore {
        FileTopologyStore {
            path: self.path.clone(),
            running: AtomicBool::new(self.running.load(Ordering::SeqCst)),
        }
    }
}

impl FileTopologyStore {
    /// A store at `path` whose saves write no run marker. Nothing is touched until
    /// [`TopologyStore::load`] or [`TopologyStore::save`].
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> FileTopologyStore {
        FileTopologyStore {
            path: path.into(),
            running: AtomicBool::new(false),
        }
    }

    /// Whether the following saves write the run marker: `true` for the store of a serving
    /// proxy, `false` for its last save after a clean stop.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }

    /// The saved topology and whether the file has the run marker (the proxy that wrote it
    /// last did not stop cleanly); `None` if none was ever saved.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the file exists but cannot be read or is invalid.
    pub fn load_marked(&self) -> Result<Option<(Topology, bool)>, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io_error(&self.path, "read the topology file")(e)),
        };
        match toml::from_str::<Marked>(&text) {
            Ok(marked) => Ok(Some((marked.topology, marked.running))),
            Err(e) => {
                let place = e.span().map_or(String::new(), |span| {
                    let before = text.get(..span.start).unwrap_or(&text);
                    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
                    format!("line {line}: ")
                });
                Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    message: format!("{place}{}", e.message().trim_end()),
                })
            }
        }
    }

    /// The topology file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io {
            path,
            action,
            source,
        }
    }

    fn write_temp(&self, temp: &Path, text: &str) -> Result<(), StoreError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .map_err(Self::io_error(temp, "create the temporary topology file"))?;
        file.write_all(text.as_bytes())
            .map_err(Self::io_error(temp, "write the temporary topology file"))?;
        file.sync_all()
            .map_err(Self::io_error(temp, "fsync the temporary topology file"))?;
        fs::rename(temp, &self.path).map_err(Self::io_error(
            &self.path,
            "rename the temporary topology file over",
        ))
    }
}

impl TopologyStore for FileTopologyStore {
    fn load(&self) -> Result<Option<Topology>, StoreError> {
        Ok(self.load_marked()?.map(|(topology, _)| topology))
    }

    fn save(&self, topology: &Topology) -> Result<(), StoreError> {
        let running = self.running.load(Ordering::SeqCst);
        let body =
            form::to_toml(topology, running).map_err(|e| StoreError::Encode(e.to_string()))?;
        let text = format!("{HEADER}{body}");
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = self
            .path
            .file_name()
            .map_or_else(|| "topology".into(), |n| n.to_string_lossy());
        // The operator named the file; its folder may not exist yet on a first start.
        fs::create_dir_all(dir)
            .map_err(FileTopologyStore::io_error(dir, "create the directory"))?;
        let temp = dir.join(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = self.write_temp(&temp, &text) {
            // Best effort: the temporary file may not exist, and the error that matters is e.
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        sync_dir(dir)
    }
}

/// Makes a rename in `dir` durable. Only Unix can open and fsync a directory.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    if cfg!(unix) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(FileTopologyStore::io_error(dir, "fsync the directory"))?;
    }
    Ok(())
}

/// A [`TopologyStore`] in memory, for tests and for running without `topology_file`: the
/// topology is then lost at exit.
#[derive(Debug, Default)]
pub struct MemoryTopologyStore {
    /// The last saved topology.
    saved: Mutex<Option<Topology>>,
}

impl MemoryTopologyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> MemoryTopologyStore {
        MemoryTopologyStore::default()
    }
}

impl TopologyStore for MemoryTopologyStore {
    fn load(&self) -> Result<Option<Topology>, StoreError> {
        // A poisoned lock still holds a whole topology: saves replace it in one assignment.
        Ok(self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }

    fn save(&self, topology: &Topology) -> Result<(), StoreError> {
        *self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(topology.clone());
        Ok(())
    }
}

/// Where the starting topology came from, for the proxy to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialSource {
    /// The configuration file's shards (no persisted topology, or not a newer one).
    Config,
    /// The persisted topology, newer than the configuration file's.
    Persisted {
        /// Its epoch.
        epoch: u64,
    },
}

impl fmt::Display for InitialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitialSource::Config => f.write_str("the configuration file"),
            InitialSource::Persisted { epoch } => {
                write!(f, "the persisted topology (epoch {epoch})")
            }
        }
    }
}

/// Picks the topology to start with: the persisted one when its epoch is higher than the
/// configuration's (it records failovers and slot moves made since), else the
/// configuration's. Shards added to the configuration file after a topology was persisted are
/// therefore ignored; add them with admin commands.
#[must_use]
pub fn choose_initial(
    config_topology: Topology,
    persisted: Option<Topology>,
) -> (Topology, InitialSource) {
    match persisted {
        Some(persisted) if persisted.epoch > config_topology.epoch => {
            let epoch = persisted.epoch;
            (persisted, InitialSource::Persisted { epoch })
        }
        _ => (config_topology, InitialSource::Config),
    }
}

#[cfg(test)]
mod tests;
