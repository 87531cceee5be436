//! Group commit and the failed-sync latch.
//!
//! Appenders that need durability call [`GroupCommit::wait_durable`] with
//! the offset they need covered. One of them becomes the leader and runs a
//! single sync for everything written so far; the others wait and are
//! released together. N concurrent appenders thus share roughly one fsync
//! per round instead of paying one each.
//!
//! Gathering: when a sync ends, the appenders it released have not written
//! their next record yet, while those that wrote during it are already
//! waiting; a leader that synced at once would cover only the latter, and
//! the appenders would split into two cohorts taking turns, each sync
//! covering half of them. So a new leader first waits, for at most half the
//! duration of the previous sync, until as many appenders are waiting as
//! were during the previous round. A lone appender never waits.
//!
//! Once a write or sync fails, the log is poisoned for good: after a failed
//! fsync the kernel may have dropped the dirty pages, so retrying and
//! reporting success would lie (see the fsync failure studies of 2018–2020).
//! Only reopening, which re-reads what really reached the disk, clears it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The longest a leader waits to gather appenders before syncing.
const MAX_GATHER: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct CommitState {
    /// Every offset below this is durable.
    durable_end: u64,
    /// A leader is syncing.
    syncing: bool,
    /// The first failure, once one happened.
    poisoned: Option<String>,
    /// The targets of the appenders waiting for a sync (released ones are
    /// removed at once, before they get to run).
    waiting: BinaryHeap<Reverse<u64>>,
    /// The most that waited at once since the current sync started.
    peak: usize,
    /// The same for the previous round: how many a leader gathers.
    previous_peak: usize,
    /// How long a leader may wait to gather them.
    gather_limit: Duration,
}

impl CommitState {
    /// Raises the durable end and forgets the waiters it covers.
    fn advance(&mut self, end: u64) {
        self.durable_end = self.durable_end.max(end);
        while self
            .waiting
            .peek()
            .is_some_and(|Reverse(t)| *t <= self.durable_end)
        {
            self.waiting.pop();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<CommitState>,
    changed: Condvar,
    /// Signalled when an appender starts waiting (wakes a gathering leader).
    arrived: Condvar,
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
        if state.durable_end < target && state.poisoned.is_none() {
            state.waiting.push(Reverse(target));
            state.peak = state.peak.max(state.waiting.len());
            self.arrived.notify_one();
        }
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
            state = self.gather(state);
            drop(state);
            let started = Instant::now();
            let result = sync();
            let took = started.elapsed();
            self.record_sync(took);
            state = self.lock();
            state.syncing = false;
            state.gather_limit = (took / 2).min(MAX_GATHER);
            match result {
                Ok(covered) => state.advance(covered),
                Err(e) => {
                    state.poisoned.get_or_insert_with(|| format!("sync failed: {e}"));
                    state.waiting.clear();
                }
            }
            self.changed.notify_all();
        }
    }

    /// Waits (as the leader) until the previous round's appenders are back
    /// or the gather limit passes, then starts counting the next round.
    fn gather<'a>(&self, mut state: MutexGuard<'a, CommitState>) -> MutexGuard<'a, CommitState> {
        let deadline = Instant::now() + state.gather_limit;
        while state.waiting.len() < state.previous_peak {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .arrived
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.previous_peak = state.peak;
        state.peak = state.waiting.len();
        state
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
        self.lock().advance(end);
        self.changed.notify_all();
    }

    /// Latches the first failure; every later write sees it.
    pub(crate) fn poison(&self, cause: String) {
        let mut state = self.lock();
        state.poisoned.get_or_insert(cause);
        state.waiting.clear();
        drop(state);
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
