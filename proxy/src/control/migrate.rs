//! TEMPORARY SHIM (branch wt-admin only): the public API of the migration engine being
//! written on main, so the admin port compiles against it. Replaced by main's module on merge.

use std::sync::Arc;

use redshard_config::SlotRange;

use super::Controller;

/// Where a migration stands.
#[derive(Clone, Debug, PartialEq)]
pub enum MigrationState {
    /// Waiting in the queue.
    Queued,
    /// Moving keys.
    Running,
    /// Every slot now belongs to the target.
    Done,
    /// Stopped by an error.
    Failed(String),
    /// Cancelled.
    Cancelled,
}

/// What an operator sees of one migration.
#[derive(Clone, Debug)]
pub struct MigrationProgress {
    /// The source shard's name.
    pub from: String,
    /// The target shard's name.
    pub to: String,
    /// The slots it moves.
    pub slots: Vec<SlotRange>,
    /// Its state.
    pub state: MigrationState,
    /// Keys moved so far.
    pub keys_moved: u64,
    /// Bytes moved so far.
    pub bytes_moved: u64,
    /// Estimated keys to move in all.
    pub keys_estimate: u64,
    /// Seconds since it started running.
    pub elapsed_secs: f64,
    /// Keys per second so far.
    pub rate_keys_per_sec: f64,
    /// Seconds left at the current rate.
    pub eta_secs: Option<f64>,
}

/// Why a migration cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A shard name or address that matches no shard.
    #[error("no shard {0}")]
    NoShard(String),
    /// Source and target are the same shard.
    #[error("the source and the target are the same shard")]
    SameShard,
    /// A slot is not owned by the source, or already migrating.
    #[error("{0}")]
    Slots(String),
    /// Nothing to cancel.
    #[error("no migration is running")]
    NoneRunning,
}

impl Controller {
    /// Shim: always refused.
    ///
    /// # Errors
    /// Always.
    pub fn migrate(
        self: &Arc<Self>,
        _from: &str,
        _to: &str,
        _slots: Vec<SlotRange>,
    ) -> Result<(), MigrateError> {
        Err(MigrateError::Slots(
            "the migration engine is not in this build".into(),
        ))
    }

    /// Shim: always refused.
    ///
    /// # Errors
    /// Always.
    pub fn migrate_count(
        self: &Arc<Self>,
        _from: &str,
        _to: &str,
        _count: usize,
    ) -> Result<Vec<SlotRange>, MigrateError> {
        Err(MigrateError::Slots(
            "the migration engine is not in this build".into(),
        ))
    }

    /// Shim: none.
    #[must_use]
    pub fn migrations(&self) -> Vec<MigrationProgress> {
        Vec::new()
    }

    /// Shim: nothing to cancel.
    ///
    /// # Errors
    /// Always.
    pub async fn cancel_migrations(&self) -> Result<(), MigrateError> {
        Err(MigrateError::NoneRunning)
    }
}
