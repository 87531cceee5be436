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
//! A failed sync latches the log's [`CheckedStorage`] for good: after a
//! failed fsync the kernel may have dropped the dirty pages, so retrying
//! and reporting success would lie. Group commit never retries a sync that
//! latched; it fails every waiter with [`Error::Poisoned`]. Only reopening,
//! which re-reads what really reached the disk, clears it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener};

use crate::error::{Error, Result};
use crate::io::CheckedStorage;
use crate::log::Log;

/// The longest a leader waits to gather appenders before syncing.
const MAX_GATHER: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct CommitState {
    /// Every offset below this is durable.
    durable_end: u64,
    /// A leader is syncing.
    syncing: bool,
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

#[derive(Debug)]
pub(crate) struct GroupCommit {
    /// The log's storage, asked for its latch.
    storage: CheckedStorage,
    state: Mutex<CommitState>,
    changed: Condvar,
    /// Signalled when an appender starts waiting (wakes a gathering leader).
    arrived: Condvar,
    /// Notified, like `changed`, whenever a round ends: wakes async waiters
    /// ([`GroupCommit::listen`]).
    rounds: Event,
    syncs: AtomicU64,
    sync_nanos_total: AtomicU64,
    sync_nanos_max: AtomicU64,
}

/// Counters of the syncs run by group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SyncStats {
    /// Syncs run (each may cover many appends).
    pub syncs: u64,
    /// Total time spent in them.
    pub total: Duration,
    /// The slowest one.
    pub max: Duration,
}

impl GroupCommit {
    pub(crate) fn new(durable_end: u64, storage: CheckedStorage) -> Self {
        GroupCommit {
            storage,
            state: Mutex::new(CommitState {
                durable_end,
                ..CommitState::default()
            }),
            changed: Condvar::new(),
            arrived: Condvar::new(),
            rounds: Event::new(),
            syncs: AtomicU64::new(0),
            sync_nanos_total: AtomicU64::new(0),
            sync_nanos_max: AtomicU64::new(0),
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
        if state.durable_end < target && self.check().is_ok() {
            state.waiting.push(Reverse(target));
            state.peak = state.peak.max(state.waiting.len());
            // A gathering leader waits for the previous round's count: it
            // is woken once that many wait, not by every arrival (on a
            // busy machine each needless wake takes a core from the
            // appenders it waits for).
            if state.waiting.len() >= state.previous_peak {
                self.arrived.notify_one();
            }
        }
        loop {
            self.check()?;
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
            let failed = result.map(|covered| state.advance(covered)).err();
            if failed.is_some() {
                state.waiting.clear();
            }
            self.changed.notify_all();
            self.rounds.notify(usize::MAX);
            // A failed sync latched: the next round of the loop reports it.
            // Anything else (an error before the sync) fails this caller only.
            if let Some(error) = failed
                && self.storage.failure().is_none()
            {
                return Err(error.into());
            }
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
        self.rounds.notify(usize::MAX);
    }

    /// True once every offset below `target` is durable; the latched
    /// failure, if any.
    pub(crate) fn is_durable(&self, target: u64) -> Result<bool> {
        self.check()?;
        Ok(self.lock().durable_end >= target)
    }

    /// Registers an async waiter for the end of the next sync round (or a
    /// sealed segment, or [`GroupCommit::wake_all`]); check
    /// [`GroupCommit::is_durable`] after this.
    pub(crate) fn listen(&self) -> EventListener {
        self.rounds.listen()
    }

    /// Wakes every async waiter (the log is closing).
    pub(crate) fn wake_all(&self) {
        self.rounds.notify(usize::MAX);
    }

    /// The latched failure, if any.
    pub(crate) fn check(&self) -> Result<()> {
        match self.storage.failure() {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.to_owned(),
            }),
            None => Ok(()),
        }
    }
}

/// How a write waits for durability: blocking the calling thread (group
/// commit, as the blocking API does), or as a future that leaves the sync to
/// the log's sync thread (the async API). Code written once as an `async fn`
/// generic over a `Wait` serves both; [`Wait::after_write`] is the one leaf
/// where the two differ.
///
/// The mode is a type, not a value, so that the blocking path does not pay
/// for the async one: compiled for [`Block`], the leaf is a plain blocking
/// call whose future is complete when made ([`std::future::Ready`]), the
/// generic code above it holds none of the `Async` leaf's state, its future
/// completes on its first poll ([`ready`]) and, being small, mostly inlines
/// away (docs/PERFORMANCE.md, "The async API's cost on the blocking
/// calls"). Compiled for [`Async`], the same code awaits the sync thread.
pub(crate) trait Wait: Copy + Send + Sync + 'static {
    /// True for [`Block`]: layers above the log pick the blocking or the
    /// async public call by it.
    const BLOCKS: bool;

    /// Once the records `written` to `log` are durable (under
    /// [`super::Durability::Always`]; at once under the others), `then`
    /// with their offsets; a failed write fails the future. The write was
    /// made when this is called (not when the future is first polled):
    /// callers await it at once. [`Block`] waits in the call (group commit:
    /// this thread may run the sync), [`Async`] in the future.
    fn after_write<T: Send>(
        self,
        log: &Log,
        written: Result<Range<u64>>,
        then: impl FnOnce(Range<u64>) -> T + Send,
    ) -> impl Future<Output = Result<T>> + Send;
}

/// Block the calling thread until durable (group commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block;

/// Await durability without blocking (the log's sync thread syncs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Async;

impl Wait for Block {
    const BLOCKS: bool = true;

    #[inline(always)]
    fn after_write<T: Send>(
        self,
        log: &Log,
        written: Result<Range<u64>>,
        then: impl FnOnce(Range<u64>) -> T + Send,
    ) -> impl Future<Output = Result<T>> + Send {
        std::future::ready(written.and_then(|written| {
            if let Some(end) = log.sync_target(&written) {
                log.wait_durable(end)?;
            }
            Ok(then(written))
        }))
    }
}

impl Wait for Async {
    const BLOCKS: bool = false;

    async fn after_write<T: Send>(
        self,
        log: &Log,
        written: Result<Range<u64>>,
        then: impl FnOnce(Range<u64>) -> T + Send,
    ) -> Result<T> {
        let written = written?;
        if let Some(end) = log.sync_target(&written) {
            log.durable_async(end).await?;
        }
        Ok(then(written))
    }
}

/// The output of a future that never waits: one built over [`Block`].
#[inline(always)]
pub(crate) fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => unreachable!("a future over Block never waits"),
    }
}
