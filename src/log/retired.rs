//! Segments that retention took out of the log but whose files are still
//! on disk, and the maintenance step that deletes them.
//!
//! Retention works in two halves. Deciding is cheap and cannot fail: the
//! engine takes the selected segments out of its list at once (readers no
//! longer see them, `start_offset` moves) and hands their bases to
//! [`RetiredSegments::retire`]. Deleting is I/O and can fail: it runs on
//! the maintenance thread (`maintenance.rs`), or synchronously when asked
//! (`Log::enforce_retention`, `Log::truncate_before`, `close`).
//!
//! Invariants:
//! - only segments before the one the checkpoint names are ever
//!   retired (`Shared::retire`), so the creation of every later segment
//!   is durable before a file is deleted, and a power loss cannot leave
//!   the log with neither the deleted segments nor their successors;
//! - files are deleted oldest segment first, and the directory is synced
//!   after each segment before the next one is touched, so a crash at any
//!   point leaves the segments still on disk contiguous;
//! - a failed removal or directory sync stops the step at that segment and
//!   is retried later from the same segment (a removal that already
//!   happened counts as done); it does **not** latch the log: no
//!   acknowledged record lives in a retired segment, and a removal that
//!   does not become durable only brings back a whole, older segment,
//!   which recovery accepts. It is counted ([`RetiredSegments::failures`])
//!   and, with the `tracing` feature, reported as a `warn` event;
//! - nothing is deleted once the log's storage latched (the log refuses
//!   every write until it is reopened) or once the log is closed: `close`
//!   takes the step lock, so it waits for a step in progress, and no step
//!   runs in a directory whose lock was released.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::maintenance::{self, Maintained};
use super::segment::{DATA_EXT, OFFSET_INDEX_EXT, TIME_INDEX_EXT, segment_file};
use crate::error::{Error, Result};
use crate::io::CheckedStorage;

#[derive(Debug)]
pub(crate) struct RetiredSegments {
    dir: PathBuf,
    storage: CheckedStorage,
    /// Bases of the retired segments still on disk, oldest first.
    bases: Mutex<VecDeque<u64>>,
    /// Held while files are deleted; true once the log is closed.
    step: Mutex<bool>,
    /// A step is queued on the maintenance thread.
    scheduled: AtomicBool,
    failures: AtomicU64,
    me: Weak<RetiredSegments>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RetiredSegments {
    pub(crate) fn new(dir: PathBuf, storage: CheckedStorage) -> Arc<Self> {
        Arc::new_cyclic(|me| RetiredSegments {
            dir,
            storage,
            bases: Mutex::new(VecDeque::new()),
            step: Mutex::new(false),
            scheduled: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            me: me.clone(),
        })
    }

    /// Queues the files of the segments at `bases` (ascending, all older
    /// than any retired before) for deletion in the background.
    pub(crate) fn retire(&self, bases: impl IntoIterator<Item = u64>) {
        lock(&self.bases).extend(bases);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let me: Weak<dyn Maintained> = self.me.clone();
            maintenance::schedule(me);
        }
    }

    /// Deletes every retired segment's files now; returns how many
    /// segments' files were deleted.
    pub(crate) fn delete_now(&self) -> Result<usize> {
        let closed = lock(&self.step);
        if *closed {
            return Err(Error::Closed);
        }
        if let Some(cause) = self.storage.failure() {
            return Err(Error::Poisoned {
                cause: cause.to_owned(),
            });
        }
        Ok(self.delete()?)
    }

    /// Deletes what it can (a failure leaves the rest for the next open),
    /// then stops every later step.
    pub(crate) fn close(&self) {
        let mut closed = lock(&self.step);
        if !*closed && self.storage.failure().is_none() {
            let _ = self.delete().inspect_err(|e| self.report(e));
        }
        *closed = true;
    }

    /// Failed steps since the log was opened.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The step; the caller holds `step`.
    fn delete(&self) -> io::Result<usize> {
        let storage = self.storage.unlatched();
        let mut deleted = 0;
        loop {
            // Not in the loop's condition: its guard would live to the end.
            let Some(base) = lock(&self.bases).front().copied() else {
                return Ok(deleted);
            };
            for ext in [DATA_EXT, OFFSET_INDEX_EXT, TIME_INDEX_EXT] {
                match storage.remove(&segment_file(&self.dir, base, ext)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            storage.sync_dir(&self.dir)?;
            lock(&self.bases).pop_front();
            deleted += 1;
        }
    }

    fn report(&self, _error: &io::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        trace_event!(warn, dir = %self.dir.display(), error = %_error, "deleting retired segments failed; retrying later");
    }
}

impl Maintained for RetiredSegments {
    fn maintain(&self) -> bool {
        self.scheduled.store(false, Ordering::Release);
        let closed = lock(&self.step);
        if *closed || self.storage.failure().is_some() {
            return true;
        }
        self.delete().inspect_err(|e| self.report(e)).is_ok()
    }
}
