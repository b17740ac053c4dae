//! The admin port's Unix socket (`admin_socket`): the default way in, safe without a secret.
//!
//! Who may connect is the kernel's business: the socket file is made owner-only (0600) and,
//! at the default path, lives in a directory only the proxy's user may enter (0700), which
//! the proxy creates and refuses to use if another user owns it or can write to it (an
//! attacker who prepared the directory in `/tmp` could swap the socket). On each accept the
//! peer's credentials are checked too: only the proxy's own user and root are served, so a
//! socket made readable by mistake, or a client that connected between the bind and the
//! `chmod`, gets nothing. Clients of the socket do not AUTH.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tracing::{error, info, warn, Instrument};

use super::budget::Budget;
use super::conn::{AdminConn, AdminPeer};
use redshard_control::Controller;
use redshard_dataplane::shutdown::Shutdown;

/// Why the admin socket could not be opened; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    /// Creating, checking or binding failed at the OS level.
    #[error("admin_socket {path}: {what}: {source}")]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The directory of the socket is not private to the proxy's user.
    #[error("admin_socket {path}: the directory {dir} {problem}; remove it (the proxy creates it owner-only) or set admin_socket to a path in a directory only this user can write")]
    UnsafeDirectory {
        /// The socket's path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Another proxy answers on the socket.
    #[error("admin_socket {path}: another process is listening there (another proxy?); stop it or set admin_socket to another path")]
    InUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    #[error("admin_socket {path}: a file that is not a socket is in the way; remove it or set admin_socket to another path")]
    NotASocket {
        /// The socket's path.
        path: PathBuf,
    },
}

/// Binds the admin socket at `path`: creates its directory (0700) if missing, checks it when
/// `private_dir` (the default path, in a shared directory such as `/tmp`), replaces a stale
/// socket left by a proxy that died, and makes the socket 0600. Returns the listener and the
/// uid owning the socket (the proxy's own), which [`run_unix`] serves besides root.
///
/// # Errors
/// The directory is unsafe or cannot be created, another process listens there, a
/// non-socket file is in the way, or the bind fails.
pub fn bind_unix(path: &Path, private_dir: bool) -> Result<(UnixListener, u32), AdminSocketError> {
    let io = |what, source| AdminSocketError::Io {
        path: path.to_owned(),
        what,
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("cannot create its directory", e))?,
            Err(e) => return Err(io("cannot read its directory", e)),
            Ok(_) => {}
        }
        if private_dir {
            check_private(path, dir)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            // A socket nobody answers on is a dead proxy's: take its place.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(AdminSocketError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(|e| io("cannot remove the stale socket", e))?;
        }
        Ok(_) => {
            return Err(AdminSocketError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot read it", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| io("cannot bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("cannot make it owner-only", e))?;
    let owner = std::fs::metadata(path)
        .map_err(|e| io("cannot read it", e))?
        .uid();
    Ok((listener, owner))
}

/// Refuses a directory that is not the proxy's own or that others may write or enter.
fn check_private(path: &Path, dir: &Path) -> Result<(), AdminSocketError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| AdminSocketError::Io {
        path: path.to_owned(),
        what: "cannot read its directory",
        source,
    })?;
    let unsafe_dir = |problem: String| AdminSocketError::UnsafeDirectory {
        path: path.to_owned(),
        dir: dir.to_owned(),
        problem,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory (a symlink?)".into()));
    }
    let me = redshard_config::ha::effective_uid();
    if me.is_some_and(|me| meta.uid() != me) {
        return Err(unsafe_dir(format!(
            "belongs to uid {}, not to this proxy's user",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "has mode {:o}; other users must not be able to enter it (0700)",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// Accepts admin clients on the socket `listener` (at `path`, owned by `owner`) until
/// `shutdown` fires, then removes the socket file. Clients other than `owner` and root are
/// closed at once; the others are authenticated, within [`super::MAX_ADMIN_CLIENTS`].
pub async fn run_unix(
    listener: UnixListener,
    path: PathBuf,
    owner: u32,
    controller: Arc<Controller>,
    mut shutdown: Shutdown,
) {
    let budget = Budget::new();
    let fleet = super::fleet::for_controller(&controller);
    let mut backoff = crate::listener::ACCEPT_BACKOFF_MIN;
    let inode = std::fs::metadata(&path).map(|m| m.ino()).ok();
    info!(path = %path.display(), "admin socket listening");
    loop {
        let accepted = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _)) => {
                backoff = crate::listener::ACCEPT_BACKOFF_MIN;
                socket
            }
            Err(e) => {
                error!(error = %e, retry_ms = backoff.as_millis() as u64, "admin socket accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let uid = match socket.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                warn!(error = %e, "admin socket: cannot read the peer's credentials; closed");
                continue;
            }
        };
        if uid != owner && uid != 0 {
            warn!(uid, "admin socket: a client of another user was refused");
            continue;
        }
        let Some(slot) = budget.admit_authenticated() else {
            super::refuse(socket);
            continue;
        };
        let peer = AdminPeer::Unix { uid };
        let conn = AdminConn::new(Arc::clone(&controller), peer, slot).in_fleet(fleet.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(
            conn.serve(socket, shutdown)
                .instrument(tracing::info_span!("admin", peer = %peer)),
        );
    }
    // Only if it is still the socket this proxy bound (same inode), not a successor's.
    if inode.is_some() && std::fs::metadata(&path).map(|m| m.ino()).ok() == inode {
        let _ = std::fs::remove_file(&path);
    }
    info!("admin socket closed");
}
