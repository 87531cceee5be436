//! Writes the recovery checkpoint (`.checkpoint`, see
//! [`crate::format::Checkpoint`]) after syncs, so that recovery after a
//! crash scans only what was written since the last sync.
//!
//! Invariant: a checkpoint is written only after the bytes it describes
//! and the segment's index entries so far were synced. It is then synced
//! itself (a few extra syncs per megabyte of data at most); if it is torn
//! anyway, recovery falls back to scanning the whole active segment.
//!
//! It also carries the segment's write limit: the writer never writes at
//! or past the limit of the last checkpoint written for its segment, and
//! the log syncs that checkpoint before it syncs data written under it
//! ([`CheckpointWriter::sync_covers`]), so every durable frame lies below
//! a durable limit and recovery need not read the preallocated space past
//! it to tell unused space from damage. Before a write would pass it the
//! writer raises it ([`CheckpointWriter::cover`], a write without a sync,
//! so an append never waits for one): to the write's end plus as much
//! again as was written since the durable position (at least 64 KiB), so
//! a segment written without syncs raises it about ten times per 64 MiB.
//! After the durable position moved, the writer's next append lowers it
//! the same way (never below what the writer wrote), so what recovery
//! reads past the last frame stays within about the unsynced bytes plus
//! 128 KiB.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::recovery::CHECKPOINT_FILE;
use super::segment::{Extent, Segment};
use crate::error::Result;
use crate::format::{CHECKPOINT_LEN, Checkpoint, SEGMENT_HEADER_LEN, WRITE_LIMIT_UNIT_BYTES};
use crate::io::{Storage, StorageFile, read_exact_at};

/// Bytes synced between two checkpoints of the same segment, at least.
const CHECKPOINT_INTERVAL_BYTES: u64 = 1 << 20;

/// The base `checkpoint` names, plus one; 0 for none.
fn base_plus_one(checkpoint: Option<&Checkpoint>) -> u64 {
    checkpoint.map_or(0, |c| c.base_offset.saturating_add(1))
}

/// The checkpoint file's contents, if present and valid.
pub(crate) fn read_checkpoint(storage: &dyn Storage, dir: &Path) -> Result<Option<Checkpoint>> {
    let file = match storage.open(&dir.join(CHECKPOINT_FILE), false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = [0u8; CHECKPOINT_LEN];
    let len = (file.size()? as usize).min(CHECKPOINT_LEN);
    read_exact_at(file.as_ref(), &mut bytes[..len], 0)?;
    Ok(Checkpoint::decode(&bytes[..len]).ok())
}

#[derive(Debug)]
pub(crate) struct CheckpointWriter {
    file: Arc<dyn StorageFile>,
    /// The last checkpoint written and synced (or found valid at open).
    last: Mutex<Option<Checkpoint>>,
    /// The base of the segment `last` names, plus one (0: none), readable
    /// without waiting for a sync that holds `last` ([`Self::durable_base`]).
    last_base: AtomicU64,
    /// Checkpoints [`Self::record`] wrote: when it changes, the durable
    /// position may have moved and the write limit may come down.
    recorded: AtomicU64,
    /// Limits [`Self::cover`] wrote, and how many of them a sync of the
    /// file has made durable ([`Self::sync_covers`]).
    covers_written: AtomicU64,
    covers_synced: Mutex<u64>,
}

impl CheckpointWriter {
    /// Opens (creating) the checkpoint file; the caller syncs the directory.
    /// A checkpoint already there that names `active` at or before its
    /// recovered end stays valid and is not rewritten; any other (ahead of
    /// the data, after recovery cut damage) is replaced at the next record.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path, active: &Segment) -> Result<Self> {
        let current = read_checkpoint(storage, dir)?;
        let end = active.limit();
        // Its write limit is not kept: recovery cut the file at the end it
        // found, and this writer raises a limit of its own before writing.
        let last = current
            .filter(|c| {
                c.base_offset == active.base() && c.end_pos <= end.end_pos && c.end_offset <= end.end_offset
            })
            .map(|c| Checkpoint {
                write_limit_units: 0,
                ..c
            });
        let file = storage.open(&dir.join(CHECKPOINT_FILE), true)?;
        Ok(CheckpointWriter {
            file,
            last_base: AtomicU64::new(base_plus_one(last.as_ref())),
            last: Mutex::new(last),
            recorded: AtomicU64::new(0),
            covers_written: AtomicU64::new(0),
            covers_synced: Mutex::new(0),
        })
    }

    fn last(&self) -> MutexGuard<'_, Option<Checkpoint>> {
        self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The base of the segment the last checkpoint names, if any. The
    /// creation of that segment, and everything before it, is durable: a
    /// roll's seal records its successor only once it is (`seal.rs`), and
    /// [`Self::cover`], which may name the active segment before its own
    /// write is synced, runs only after that seal.
    pub(crate) fn durable_base(&self) -> Option<u64> {
        self.last_base.load(Ordering::Acquire).checked_sub(1)
    }

    /// Makes `checkpoint` the last one.
    fn set_last(&self, last: &mut Option<Checkpoint>, checkpoint: Checkpoint) {
        *last = Some(checkpoint);
        self.last_base
            .store(base_plus_one(last.as_ref()), Ordering::Release);
    }

    /// How many checkpoints [`Self::record`] wrote so far.
    pub(crate) fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Acquire)
    }

    /// Makes the last checkpoint's write limit cover `segment` up to `end`,
    /// where the writer, which has written nothing past `end`, is about to
    /// write, and not much more: raises it if `end` would pass it, lowers
    /// it if the durable position moved on (one write of the checkpoint
    /// either way, synced by the next [`Self::sync_covers`]). Returns the
    /// limit and [`Self::recorded`] as of it. Unlike [`Self::record`] it
    /// fails if the write fails: the writer must not pass a limit that is
    /// not in the file.
    pub(crate) fn cover(&self, segment: &Segment, end: u64) -> std::io::Result<(u64, u64)> {
        let mut last = self.last();
        let recorded = self.recorded();
        let current = last.filter(|c| c.base_offset == segment.base());
        // The segment's header was synced by the seal of the roll that
        // created it (no limit is raised before that seal is done), so its
        // first frame position is durable when no checkpoint names a later
        // one.
        let durable = current.unwrap_or(Checkpoint {
            base_offset: segment.base(),
            end_offset: segment.base(),
            end_pos: SEGMENT_HEADER_LEN as u64,
            max_timestamp: segment.max_timestamp(),
            write_limit_units: 0,
        });
        let limit = end + (end - durable.end_pos).max(WRITE_LIMIT_UNIT_BYTES);
        if let Some(current) = current.and_then(|c| c.write_limit())
            && (end..=limit + WRITE_LIMIT_UNIT_BYTES).contains(&current)
        {
            return Ok((current, recorded));
        }
        let checkpoint = Checkpoint {
            write_limit_units: Checkpoint::units_for(durable.end_pos, limit),
            ..durable
        };
        self.file.write_all_at(&checkpoint.encode(), 0)?;
        self.covers_written.fetch_add(1, Ordering::Release);
        self.set_last(&mut last, checkpoint);
        // A limit too far for the field (4 GiB past the durable position)
        // is written as none: recovery then checks to the end of the file,
        // so the writer need not raise it again until the next record.
        Ok((checkpoint.write_limit().unwrap_or(u64::MAX), recorded))
    }

    /// Makes every limit [`Self::cover`] wrote so far durable: called
    /// before a sync of the data written under them, so a frame is never
    /// durable past a limit that is not. A failed sync latched the storage.
    pub(crate) fn sync_covers(&self) -> std::io::Result<()> {
        let written = self.covers_written.load(Ordering::Acquire);
        let mut synced = self
            .covers_synced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *synced >= written {
            return Ok(());
        }
        self.file.sync_data()?;
        *synced = written;
        Ok(())
    }

    /// Records that `segment` is durable up to `extent`: always when
    /// `force`, otherwise when it moved on far enough since the last one.
    /// A failed sync is returned (it latched the log's storage: after a
    /// failed fsync nothing is trusted). A failed write is not: a full disk
    /// only leaves an older or torn checkpoint, which recovery ignores, and
    /// any other failed write latched the storage too.
    pub(crate) fn record(&self, segment: &Segment, extent: Extent, force: bool) -> std::io::Result<()> {
        let mut last = self.last();
        let current = last.filter(|c| c.base_offset == segment.base());
        let due = force || current.is_none_or(|c| extent.end_pos >= c.end_pos + CHECKPOINT_INTERVAL_BYTES);
        if !due {
            return Ok(());
        }
        // The write limit stays where it was: the writer may have written
        // past `extent` meanwhile (its next append may lower it). A
        // checkpoint of a segment without one names none.
        let limit = current.and_then(|c| c.write_limit());
        let checkpoint = Checkpoint {
            base_offset: segment.base(),
            end_offset: extent.end_offset,
            end_pos: extent.end_pos,
            max_timestamp: segment.max_timestamp(),
            write_limit_units: limit.map_or(0, |limit| Checkpoint::units_for(extent.end_pos, limit)),
        };
        // The indexes go first, so that a durable checkpoint comes with
        // durable index entries below it (none below the first frame:
        // recovery rebuilds indexes whose header is not durable).
        if extent.end_pos > SEGMENT_HEADER_LEN as u64 {
            segment.indexes().sync()?;
        }
        if self.file.write_all_at(&checkpoint.encode(), 0).is_err() {
            return Ok(());
        }
        self.file.sync_data()?;
        self.set_last(&mut last, checkpoint);
        self.recorded.fetch_add(1, Ordering::Release);
        Ok(())
    }
}
