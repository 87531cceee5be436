//! Writes the recovery checkpoint (`.checkpoint`, see
//! [`crate::format::Checkpoint`]) after syncs, so that recovery after a
//! crash scans only what was written since the last sync.
//!
//! Invariant: a checkpoint is written only after the bytes it describes
//! and the segment's index entries so far were synced. It is then synced
//! itself (a few extra syncs per megabyte of data at most); if it is torn
//! anyway, recovery falls back to scanning the whole active segment.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::recovery::CHECKPOINT_FILE;
use super::segment::{Extent, Segment};
use crate::error::Result;
use crate::format::{CHECKPOINT_LEN, Checkpoint};
use crate::io::{Storage, StorageFile, read_exact_at};

/// Bytes synced between two checkpoints of the same segment, at least.
const CHECKPOINT_INTERVAL_BYTES: u64 = 1 << 20;

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
    /// Segment base and position of the last checkpoint written.
    last: Mutex<Option<(u64, u64)>>,
}

impl CheckpointWriter {
    /// Opens (creating) the checkpoint file; the caller syncs the directory.
    /// A checkpoint already there that names `active` at or before its
    /// recovered end stays valid and is not rewritten; any other (ahead of
    /// the data, after recovery cut damage) is replaced at the next record.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path, active: &Segment) -> Result<Self> {
        let current = read_checkpoint(storage, dir)?;
        let end = active.limit();
        let last = current
            .filter(|c| {
                c.base_offset == active.base() && c.end_pos <= end.end_pos && c.end_offset <= end.end_offset
            })
            .map(|c| (c.base_offset, c.end_pos));
        let file = storage.open(&dir.join(CHECKPOINT_FILE), true)?;
        Ok(CheckpointWriter {
            file,
            last: Mutex::new(last),
        })
    }

    fn last(&self) -> MutexGuard<'_, Option<(u64, u64)>> {
        self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `segment` is durable up to `extent`: always when
    /// `force`, otherwise when it moved on far enough since the last one.
    /// A failed sync is returned (it latched the log's storage: after a
    /// failed fsync nothing is trusted). A failed write is not: a full disk
    /// only leaves an older or torn checkpoint, which recovery ignores, and
    /// any other failed write latched the storage too.
    pub(crate) fn record(&self, segment: &Segment, extent: Extent, force: bool) -> std::io::Result<()> {
        let mut last = self.last();
        let due = force
            || last.is_none_or(|(base, position)| {
                base != segment.base() || extent.end_pos >= position + CHECKPOINT_INTERVAL_BYTES
            });
        if !due {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            base_offset: segment.base(),
            end_offset: extent.end_offset,
            end_pos: extent.end_pos,
            max_timestamp: segment.max_timestamp(),
        };
        // The indexes go first, so that a durable checkpoint comes with
        // durable index entries below it.
        segment.indexes().sync()?;
        if self.file.write_all_at(&checkpoint.encode(), 0).is_err() {
            return Ok(());
        }
        self.file.sync_data()?;
        *last = Some((segment.base(), extent.end_pos));
        Ok(())
    }
}
