//! A roll's seal: what makes a sealed segment, and the successor a roll
//! created without syncing anything, durable.
//!
//! A roll cuts the sealed segment's files to their frames and creates its
//! successor with no sync, then runs [`Seal::run`]: in place under
//! [`Durability::Always`](super::Durability::Always) (every append there
//! waits for a sync anyway), otherwise on a `logbus-sealer` thread, so an
//! append never waits for the disk to take in a whole segment.
//!
//! Invariants:
//! - the checkpoint names the successor only once the sealed segment, its
//!   indexes, the successor's header and the directory entry are durable:
//!   until then it names the sealed segment (or an earlier one), and
//!   recovery treats every segment from the one the checkpoint names on as
//!   possibly unsynced (`recovery.rs`);
//! - at most one seal is under way: the next roll, a sync of the active
//!   segment (`flush`, the `Interval` flusher) and `close` wait for it
//!   first, and no checkpoint is written for the successor meanwhile, so
//!   the checkpoint never names a segment while an earlier one is unsynced
//!   (the successor grows past `segment_bytes` meanwhile rather than roll
//!   and wait, up to twice it: `Shared::may_overrun`).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use super::checkpoint::CheckpointWriter;
use super::durability::GroupCommit;
use super::segment::{Extent, Segment};
use crate::format::SEGMENT_HEADER_LEN;
use crate::io::{CheckedStorage, Storage};

/// The durable half of one roll.
#[derive(Debug, Clone)]
pub(super) struct Seal {
    /// The segment the roll sealed, cut to its frames.
    pub sealed: Arc<Segment>,
    /// Where its frames end.
    pub end: Extent,
    /// Its successor, created (header written) but not synced.
    pub next: Arc<Segment>,
    pub checkpoint: Arc<CheckpointWriter>,
    pub commit: Arc<GroupCommit>,
    pub storage: CheckedStorage,
    pub dir: PathBuf,
}

impl Seal {
    /// Syncs the sealed segment and its indexes, marks its records durable
    /// (readable, under `Always`), syncs the successor's header and the
    /// directory, then records the successor in the checkpoint. A failed
    /// sync latched the log's storage.
    pub(super) fn run(&self) -> std::io::Result<()> {
        self.sealed.file().sync_all()?;
        self.sealed.indexes().sync()?;
        self.sealed.advance_limit(self.end);
        self.commit.mark_durable(self.end.end_offset);
        self.next.file().sync_all()?;
        self.storage.sync_dir(&self.dir)?;
        let start = Extent {
            end_offset: self.end.end_offset,
            end_pos: SEGMENT_HEADER_LEN as u64,
        };
        self.checkpoint.record(&self.next, start, true)
    }

    /// Runs the seal on a `logbus-sealer` thread; in place if no thread
    /// can be started.
    pub(super) fn spawn(self) -> std::io::Result<Option<Sealing>> {
        let ended = Arc::new(Ended::default());
        let theirs = (self.clone(), EndsOnDrop(ended.clone()));
        match std::thread::Builder::new()
            .name("logbus-sealer".into())
            .spawn(move || {
                // Dropped when the thread ends, also by a panic.
                let (seal, _ends) = theirs;
                seal.run()
            }) {
            Ok(thread) => Ok(Some(Sealing {
                thread,
                seal: self,
                ended,
            })),
            Err(_) => self.run().map(|()| None),
        }
    }
}

/// A seal under way on its thread.
#[derive(Debug)]
pub(super) struct Sealing {
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    /// The seal it runs, to run again here should the thread panic: a
    /// seal is idempotent (syncs, and records that only move forward).
    seal: Seal,
    ended: Arc<Ended>,
}

/// Whether a seal's thread has ended, for waiting without holding the
/// [`Sealing`] (and so without the writer's lock that holds it).
#[derive(Debug, Default)]
pub(super) struct Ended {
    ended: Mutex<bool>,
    changed: Condvar,
}

impl Ended {
    /// Whether the thread has ended (or is about to).
    fn is_set(&self) -> bool {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until the thread has ended.
    pub(super) fn wait(&self) {
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.changed.wait_while(ended, |ended| !*ended));
    }
}

/// Marks the seal's thread ended when dropped, whether its seal returned
/// or panicked.
struct EndsOnDrop(Arc<Ended>);

impl Drop for EndsOnDrop {
    fn drop(&mut self) {
        *self.0.ended.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.changed.notify_all();
    }
}

impl Sealing {
    /// Whether the seal is done (it may have failed): its thread has
    /// ended or is about to, so [`Sealing::finish`] does not wait for it.
    pub(super) fn is_finished(&self) -> bool {
        self.ended.is_set()
    }

    /// What to wait on for the thread to end, without taking the seal.
    pub(super) fn ended(&self) -> Arc<Ended> {
        self.ended.clone()
    }

    /// Waits for the seal and returns its failure. If its thread panicked
    /// the seal runs again on this one, so a roll is never left unsealed.
    pub(super) fn finish(self) -> std::io::Result<()> {
        match self.thread.join() {
            Ok(sealed) => sealed,
            Err(_panicked) => self.seal.run(),
        }
    }
}
