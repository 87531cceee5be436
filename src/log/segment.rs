//! One segment: a `.log` data file named by its base offset, with its
//! offset and time indexes.
//!
//! Invariants:
//! - the data file starts with a valid [`SegmentHeader`] whose base offset
//!   matches the file name; frames follow back to back with dense offsets;
//! - `limit` is the readable extent: readers never look past it, so they
//!   never see a frame that is still being written (or, under
//!   `Durability::Always`, one that is not yet durable);
//! - index entries point at frame starts below `limit.end_pos` (checked by
//!   readers anyway: indexes are hints);
//! - once sealed ([`Segment::mark_sealed`]: a later segment exists), the
//!   data file's first `limit.end_pos` bytes are final: no logbus process
//!   writes them or cuts the file below them again, so cursors may read
//!   them through a mapping ([`Segment::sealed_frames`]) that records
//!   borrow from.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::options::{Durability, LogOptions};
use crate::error::{Error, Result};
use crate::format::{
    BATCH_FORMAT_VERSION, Checkpoint, FORMAT_VERSION, IndexKind, OffsetEntry, SEGMENT_HEADER_LEN,
    SegmentHeader, TimeEntry, decode_segment_header,
};
use crate::index::{IndexFile, lookup_offset, lookup_time, valid_offset_prefix, valid_time_prefix};
use crate::io::{Storage, StorageFile, read_exact_at};

/// A frame as the indexes note it: written by an append or found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlacedFrame {
    /// The offset of its first record.
    pub offset: u64,
    /// Where it starts in the data file.
    pub position: u64,
    /// Its newest timestamp, and the offset of the first record that has it.
    pub newest: (i64, u64),
}

/// The readable end of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// One past the last readable offset.
    pub end_offset: u64,
    /// Byte position just past the last readable frame.
    pub end_pos: u64,
}

/// File name of a segment's data or index file.
pub(crate) fn segment_file(dir: &Path, base: u64, extension: &str) -> PathBuf {
    dir.join(format!("{base:020}.{extension}"))
}

pub(crate) const DATA_EXT: &str = "log";
pub(crate) const OFFSET_INDEX_EXT: &str = "idx";
pub(crate) const TIME_INDEX_EXT: &str = "tix";

#[derive(Debug)]
pub(crate) struct Segment {
    base: u64,
    /// The segment's format version has batch frames: the writer may
    /// append them (never to a segment an older logbus may read).
    holds_batches: bool,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    indexes: Mutex<Indexes>,
    limit: Mutex<Extent>,
    max_timestamp: AtomicI64,
    /// Length of the data file reserved for appends so far (written only
    /// by the appender); `u64::MAX` once a reservation failed, so appends
    /// to this segment stop trying (as when it reached `segment_bytes`).
    reserved: AtomicU64,
    /// Set once a later segment exists: the frames below the limit are
    /// final (see the module docs).
    sealed: AtomicBool,
}

#[derive(Debug)]
pub(crate) struct Indexes {
    pub(crate) offsets: IndexFile,
    pub(crate) times: IndexFile,
    interval: u64,
    last_entry_pos: Option<u64>,
    last_time_entry: Option<i64>,
    max_timestamp: Option<(i64, u32)>,
}

/// Where the indexes stood before an append, to go back to if it fails.
#[derive(Debug, Clone, Copy)]
struct IndexMark {
    offsets: usize,
    times: usize,
    last_entry_pos: Option<u64>,
    last_time_entry: Option<i64>,
    max_timestamp: Option<(i64, u32)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Indexes {
    fn open(storage: &dyn Storage, dir: &Path, base: u64, interval: u64) -> Result<Self> {
        Ok(Indexes {
            offsets: IndexFile::open(
                storage,
                &segment_file(dir, base, OFFSET_INDEX_EXT),
                IndexKind::Offset,
            )?,
            times: IndexFile::open(storage, &segment_file(dir, base, TIME_INDEX_EXT), IndexKind::Time)?,
            interval,
            last_entry_pos: None,
            last_time_entry: None,
            max_timestamp: None,
        })
    }

    /// Empties both indexes, ready to be filled by `record`.
    pub(crate) fn reset(&mut self, base: u64, capacity: usize) -> Result<()> {
        self.offsets.reset(base, capacity)?;
        self.times.reset(base, capacity)?;
        self.last_entry_pos = None;
        self.last_time_entry = None;
        self.max_timestamp = None;
        Ok(())
    }

    /// Resumes appending after the entries already present (clean reopen).
    pub(crate) fn resume(&mut self, capacity: usize) -> Result<()> {
        self.offsets.reserve(capacity)?;
        self.times.reserve(capacity)?;
        self.last_entry_pos = self
            .offsets
            .last()
            .and_then(OffsetEntry::decode)
            .map(|e| u64::from(e.position));
        let last_time = self.times.last().and_then(TimeEntry::decode);
        self.last_time_entry = last_time.map(|e| e.timestamp);
        self.max_timestamp = last_time.map(|e| (e.timestamp, e.relative_offset));
        Ok(())
    }

    /// After a crash, keeps the entries that plausibly describe the durable
    /// part of the segment, up to `checkpoint` (entries past it may be
    /// garbage), and resumes appending after them. False if an index header
    /// is invalid, in which case the caller rebuilds both.
    pub(crate) fn resume_at_checkpoint(&mut self, checkpoint: &Checkpoint, capacity: usize) -> Result<bool> {
        let base = checkpoint.base_offset;
        if self.offsets.validate(base).is_err() || self.times.validate(base).is_err() {
            return Ok(false);
        }
        let relative_end = checkpoint.end_offset - base;
        let offsets = valid_offset_prefix(self.offsets.entries(), checkpoint.end_pos, relative_end);
        let times = valid_time_prefix(self.times.entries(), relative_end);
        self.offsets.keep_first(offsets);
        self.times.keep_first(times);
        self.resume(capacity)?;
        if let Some(last) = relative_end.checked_sub(1)
            && self
                .max_timestamp
                .is_none_or(|(max, _)| checkpoint.max_timestamp > max)
        {
            self.max_timestamp = Some((checkpoint.max_timestamp, last as u32));
        }
        Ok(true)
    }

    /// Notes a frame at `position` whose first record has
    /// `relative_offset` and whose newest timestamp is `newest` (with the
    /// relative offset of the first record that has it); adds index
    /// entries every `interval` bytes.
    pub(crate) fn record(&mut self, relative_offset: u32, position: u64, newest: (i64, u32)) -> Result<()> {
        if self.max_timestamp.is_none_or(|(max, _)| newest.0 > max) {
            self.max_timestamp = Some(newest);
        }
        if self
            .last_entry_pos
            .is_some_and(|last| position - last < self.interval)
        {
            return Ok(());
        }
        let entry = OffsetEntry {
            relative_offset,
            position: position as u32,
        };
        self.offsets.push(&entry.encode())?;
        self.last_entry_pos = Some(position);
        self.push_time_entry()
    }

    fn push_time_entry(&mut self) -> Result<()> {
        if let Some((timestamp, relative_offset)) = self.max_timestamp
            && self.last_time_entry.is_none_or(|last| timestamp > last)
        {
            self.times.push(
                &TimeEntry {
                    timestamp,
                    relative_offset,
                }
                .encode(),
            )?;
            self.last_time_entry = Some(timestamp);
        }
        Ok(())
    }

    /// Makes both indexes durable as they are (for a checkpoint).
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.offsets.sync()?;
        self.times.sync()
    }

    /// Records the final maximum timestamp and trims both files to their
    /// entries, durably.
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.trim()?;
        Ok(self.sync()?)
    }

    /// Records the final maximum timestamp and trims both files to their
    /// entries, not durably: [`Indexes::sync`] makes that durable.
    pub(crate) fn trim(&mut self) -> Result<()> {
        self.push_time_entry()?;
        self.offsets.trim()?;
        self.times.trim()?;
        Ok(())
    }

    fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp.map(|(t, _)| t)
    }

    fn mark(&self) -> IndexMark {
        IndexMark {
            offsets: self.offsets.len(),
            times: self.times.len(),
            last_entry_pos: self.last_entry_pos,
            last_time_entry: self.last_time_entry,
            max_timestamp: self.max_timestamp,
        }
    }

    fn rewind(&mut self, mark: IndexMark) {
        self.offsets.keep_first(mark.offsets);
        self.times.keep_first(mark.times);
        self.last_entry_pos = mark.last_entry_pos;
        self.last_time_entry = mark.last_time_entry;
        self.max_timestamp = mark.max_timestamp;
    }
}

impl Segment {
    /// Creates a new, empty segment: its header written, nothing synced
    /// (the caller syncs the file and the directory).
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        interval: u64,
        capacity: usize,
        now_ms: i64,
    ) -> Result<Self> {
        let path = segment_file(dir, base, DATA_EXT);
        let file = storage.open(&path, true)?;
        file.set_len(0)?;
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            base_offset: base,
            created_ms: now_ms,
        };
        file.write_all_at(&header.encode(), 0)?;
        let mut indexes = Indexes::open(storage, dir, base, interval)?;
        indexes.reset(base, capacity)?;
        Ok(Self::assemble(header, path, file, indexes))
    }

    /// Opens an existing segment, checking its header. Its limit starts at
    /// the header; recovery sets the real one.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path, base: u64, interval: u64) -> Result<Self> {
        let path = segment_file(dir, base, DATA_EXT);
        let file = storage.open(&path, false)?;
        let len = file.size()?;
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let available = (len as usize).min(SEGMENT_HEADER_LEN);
        read_exact_at(file.as_ref(), &mut header[..available], 0)?;
        let decoded =
            decode_segment_header(&header[..available]).map_err(|kind| Error::corrupt(&path, 0, kind))?;
        if decoded.base_offset != base {
            let kind = crate::error::CorruptKind::OffsetMismatch {
                expected: base,
                found: decoded.base_offset,
            };
            return Err(Error::corrupt(&path, 16, kind));
        }
        let indexes = Indexes::open(storage, dir, base, interval)?;
        Ok(Self::assemble(decoded, path, file, indexes))
    }

    fn assemble(header: SegmentHeader, path: PathBuf, file: Arc<dyn StorageFile>, indexes: Indexes) -> Self {
        let base = header.base_offset;
        Segment {
            base,
            holds_batches: header.version >= BATCH_FORMAT_VERSION,
            path,
            file,
            indexes: Mutex::new(indexes),
            limit: Mutex::new(Extent {
                end_offset: base,
                end_pos: SEGMENT_HEADER_LEN as u64,
            }),
            max_timestamp: AtomicI64::new(i64::MIN),
            reserved: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
        }
    }

    /// Makes sure the data file's space is reserved beyond `end`, so
    /// appends cannot run out of disk mid-reservation and, on the real
    /// file system, are copies into a mapping instead of system calls. A
    /// reservation starts at the options' first reservation, 1 MiB by
    /// default (a quarter of smaller segments), and doubles each time
    /// appends reach its end, up to `segment_bytes`: a topic holding little
    /// reserves little, and a full segment takes a handful of reservations.
    /// Best effort: a backend or file system without reservations, or a
    /// disk too full for one, leaves appends to write (and grow the file)
    /// one by one for the rest of this segment.
    pub(crate) fn reserve(&self, end: u64, options: &LogOptions) {
        let reserved = self.reserved.load(Ordering::Relaxed);
        if !options.preallocate || end < reserved || reserved >= options.segment_bytes {
            return;
        }
        let first = options.first_reservation_bytes.min(options.segment_bytes / 4);
        let mut len = reserved.saturating_mul(2).max(first);
        while len <= end {
            len = len.saturating_mul(2);
        }
        let len = len.min(options.segment_bytes);
        self.file
            .prefault_reservations(options.durability != Durability::Always);
        match self.file.preallocate(len) {
            Ok(()) => self.reserved.store(len, Ordering::Relaxed),
            Err(_error) => {
                trace_event!(debug, file = %self.path.display(), error = %_error, "segment not preallocated");
                self.reserved.store(u64::MAX, Ordering::Relaxed);
            }
        }
    }

    /// Allocates the blocks of the whole segment ahead of its reservations
    /// (a hint, `StorageFile::allocate_ahead`). A roll does this for the
    /// segment it starts: the one before filled up, so this one will too,
    /// and its reservations then only set its length instead of waiting
    /// for the file system's allocator while the seal of the one before
    /// keeps the disk busy. The length stays as reserved, so recovery never
    /// reads the blocks allocated ahead.
    pub(crate) fn allocate_ahead(&self, options: &LogOptions) {
        if !options.preallocate {
            return;
        }
        if let Err(_error) = self.file.allocate_ahead(options.segment_bytes) {
            trace_event!(debug, file = %self.path.display(), error = %_error, "segment not allocated ahead");
        }
    }

    /// Notes that a later segment exists: the data file was cut to its
    /// frames (synced by the roll's seal, `seal.rs`), its limit is final,
    /// and nothing writes it again.
    pub(crate) fn mark_sealed(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// A sealed segment's data file up to its limit, mapped: frames read
    /// from it are shared, not copied. `None` while the segment is active,
    /// or if its storage does not map files or mapping failed (callers
    /// then read the file).
    pub(crate) fn sealed_frames(&self) -> Option<Bytes> {
        if !self.sealed.load(Ordering::Acquire) {
            return None;
        }
        let mapped = self.file.map_final(self.limit().end_pos).inspect_err(|_error| {
            trace_event!(debug, file = %self.path.display(), error = %_error, "sealed segment not mapped");
        });
        mapped.ok().flatten()
    }

    /// Cuts the data file to its frames (dropping any reservation) and
    /// makes that durable: done before a segment is closed.
    pub(crate) fn trim(&self, end_pos: u64) -> std::io::Result<()> {
        match self.cut(end_pos)? {
            true => self.file.sync_all(),
            false => self.file.sync_data(),
        }
    }

    /// Cuts the data file to its frames (dropping any reservation), not
    /// durably; true if its length changed.
    pub(crate) fn cut(&self, end_pos: u64) -> std::io::Result<bool> {
        if self.file.size()? == end_pos {
            return Ok(false);
        }
        self.file.set_len(end_pos)?;
        Ok(true)
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Whether appends may write batch frames to this segment.
    pub(crate) fn holds_batches(&self) -> bool {
        self.holds_batches
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }

    pub(crate) fn indexes(&self) -> MutexGuard<'_, Indexes> {
        lock(&self.indexes)
    }

    pub(crate) fn limit(&self) -> Extent {
        *lock(&self.limit)
    }

    /// Moves the readable end forward (never back).
    pub(crate) fn advance_limit(&self, extent: Extent) {
        let mut limit = lock(&self.limit);
        if extent.end_offset > limit.end_offset {
            *limit = extent;
        }
    }

    /// Sets the readable end outright (recovery only).
    pub(crate) fn set_limit(&self, extent: Extent) {
        *lock(&self.limit) = extent;
    }

    /// Newest timestamp in the segment, `i64::MIN` when empty.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Notes one appended or scanned frame (see [`Segment::frames_appended`]).
    pub(crate) fn frame_appended(&self, frame: PlacedFrame) -> Result<()> {
        self.frames_appended(&[frame])
    }

    /// Notes appended frames in the indexes and the timestamp summary. One
    /// lock for them all. If an index cannot take them (its file could not
    /// grow), the indexes are left as they were. Called by the log's one
    /// writer at a time.
    pub(crate) fn frames_appended(&self, frames: &[PlacedFrame]) -> Result<()> {
        let mut indexes = self.indexes();
        let mark = indexes.mark();
        let mut newest = i64::MIN;
        for frame in frames {
            let relative = |offset: u64| (offset - self.base) as u32;
            let frame_newest = (frame.newest.0, relative(frame.newest.1));
            if let Err(e) = indexes.record(relative(frame.offset), frame.position, frame_newest) {
                indexes.rewind(mark);
                return Err(e);
            }
            newest = newest.max(frame.newest.0);
        }
        // One writer: a plain store keeps the maximum.
        if newest > self.max_timestamp.load(Ordering::Acquire) {
            self.max_timestamp.store(newest, Ordering::Release);
        }
        Ok(())
    }

    /// Refreshes the timestamp summary from the indexes (after a rebuild).
    pub(crate) fn refresh_max_timestamp(&self) {
        let max = self.indexes().max_timestamp().unwrap_or(i64::MIN);
        self.max_timestamp.store(max, Ordering::Release);
    }

    /// File position from which a scan finds `offset`: the greatest indexed
    /// record at or before it, or the first frame.
    pub(crate) fn scan_start(&self, offset: u64) -> u64 {
        let relative = offset.saturating_sub(self.base).min(u64::from(u32::MAX)) as u32;
        lookup_offset(self.indexes().offsets.entries(), relative)
            .map_or(SEGMENT_HEADER_LEN as u64, |e| u64::from(e.position))
    }

    /// The offset from which a scan finds the first record at or after
    /// `timestamp`: every record before it is older.
    pub(crate) fn time_scan_start(&self, timestamp: i64) -> u64 {
        let entry = lookup_time(self.indexes().times.entries(), timestamp);
        entry.map_or(self.base, |e| self.base + u64::from(e.relative_offset))
    }

    /// Bytes the segment occupies on disk (data file).
    pub(crate) fn size_bytes(&self) -> u64 {
        self.limit().end_pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdStorage;

    #[test]
    fn only_a_sealed_segment_on_the_real_file_system_is_mapped_and_only_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(&StdStorage, dir.path(), 0, 64, 16, 0).unwrap();
        let frames = [7u8; 100];
        let end_pos = SEGMENT_HEADER_LEN as u64 + frames.len() as u64;
        segment
            .file()
            .write_all_at(&frames, SEGMENT_HEADER_LEN as u64)
            .unwrap();
        segment.file().write_all_at(&[9; 50], end_pos).unwrap();
        segment.set_limit(Extent {
            end_offset: 1,
            end_pos,
        });
        assert!(
            segment.sealed_frames().is_none(),
            "the active segment is read, not mapped"
        );
        segment.mark_sealed();
        let mapped = segment.sealed_frames().expect("a sealed segment is mapped");
        let mut file = vec![0; end_pos as usize];
        read_exact_at(segment.file().as_ref(), &mut file, 0).unwrap();
        assert_eq!(&mapped[..], &file[..]);
    }
}
