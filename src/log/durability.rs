//! Group commit and the failed-sync latch.
//!
//! Appenders that need durability call [`GroupCommit::wait_durable`] with
//! the offset they need covered. One of them becomes the leader and runs a
//! single sync for everything written so far; the others wait and are
//! released together. N concurrent appenders thus share roughly one fsync
//! per round instead of paying one each.
//!
//! Once a write or sync fails, the log is poisoned for good: after a failed
//! fsync the kernel may have dropped the dirty pages, so retrying and
//! reporting success would lie (see the fsync failure studies of 2018–2020).
//! Only reopening, which re-reads what really reached the disk, clears it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct CommitState {
    /// Every offset below this is durable.
    durable_end: u64,
    /// A leader is syncing.
    syncing: bool,
    /// The first failure, once one happened.
    poisoned: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<CommitState>,
    changed: Condvar,
    syncs: AtomicU64,
    sync_nanos_total: AtomicU64,
    sync_nanos_max: AtomicU64,
}

/// Counters of the syncs run by group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Syncs run (each may cover many appends).
    pub syncs: u64,
    /// Total time spent in them.
    pub total: Duration,
    /// The slowest one.
    pub max: Duration,
}

impl GroupCommit {
    pub(crate) fn new(durable_end: u64) -> Self {
        GroupCommit {
            state: Mutex::new(CommitState {
                durable_end,
                ..CommitState::default()
            }),
            ..GroupCommit::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns once every offset below `target` is durable. If no sync is
    /// running, this caller runs `sync`, which syncs everything written so
    /// far and returns the end offset it covered.
    pub(crate) fn wait_durable(&self, target: u64, sync: impl Fn() -> io::Result<u64>) -> Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(cause) = &state.poisoned {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if state.durable_end >= target {
                return Ok(());
            }
            if state.syncing {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.syncing = true;
            drop(state);
            let started = Instant::now();
            let result = sync();
            self.record_sync(started.elapsed());
            state = self.lock();
            state.syncing = false;
            match result {
                Ok(covered) => state.durable_end = state.durable_end.max(covered),
                Err(e) => {
                    state.poisoned.get_or_insert_with(|| format!("sync failed: {e}"));
                }
            }
            self.changed.notify_all();
        }
    }

    fn record_sync(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        self.sync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> SyncStats {
        SyncStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            total: Duration::from_nanos(self.sync_nanos_total.load(Ordering::Relaxed)),
            max: Duration::from_nanos(self.sync_nanos_max.load(Ordering::Relaxed)),
        }
    }

    /// Records that everything below `end` is durable (a segment was sealed).
    pub(crate) fn mark_durable(&self, end: u64) {
        let mut state = self.lock();
        state.durable_end = state.durable_end.max(end);
        self.changed.notify_all();
    }

    /// Latches the first failure; every later write sees it.
    pub(crate) fn poison(&self, cause: String) {
        self.lock().poisoned.get_or_insert(cause);
        self.changed.notify_all();
    }

    /// The latched failure, if any.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.lock().poisoned {
            Some(cause) => Err(Error::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }
}
