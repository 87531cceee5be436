//! Reading: random reads by offset and [`Cursor`]s that read forward.
//!
//! A cursor keeps its segment and a chunked scanner, so sequential reads
//! cost one file read per chunk and no allocation per record; in a sealed
//! segment it reads through a mapping instead (no read, no copy: its
//! records borrow the mapped bytes). It never reads
//! past a segment's readable limit, and it checks that every frame carries
//! the offset it expects, so a wrong index entry or damaged data is an
//! error, never a wrong record.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::engine::Shared;
use super::scan::{FrameScanner, SCAN_CHUNK_BYTES, ScanError, Scanned};
use super::segment::{Extent, Segment};
use crate::error::{CorruptKind, Error, Result};
use crate::format::SEGMENT_HEADER_LEN;
use crate::record::{RecordRef, StoredRecord};

/// Chunk size for random reads: one index interval and then some.
const RANDOM_READ_CHUNK_BYTES: usize = 16 << 10;

/// Where a cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The oldest stored record.
    Earliest,
    /// After the last readable record: only new records.
    Latest,
    /// A given offset (clamped to the stored range).
    Offset(u64),
    /// The first record whose timestamp (ms) is at least this.
    Timestamp(i64),
}

fn scan_error(segment: &Segment, error: ScanError) -> Error {
    match error {
        ScanError::Io(e) => Error::Io(e),
        ScanError::Invalid { position, kind } => Error::corrupt(segment.path(), position, kind),
    }
}

/// A scanner over `segment` positioned at the frame of `offset`, reading
/// `chunk_bytes` at a time, or slicing `frames` (the segment's mapped
/// bytes) when given. Starts at the index's hint; if the hint is wrong,
/// falls back to the segment start.
fn scanner_at(
    segment: &Segment,
    offset: u64,
    chunk_bytes: usize,
    frames: Option<Bytes>,
) -> Result<FrameScanner> {
    let limit = segment.limit().end_pos;
    let hint = segment.scan_start(offset);
    let mut last_error = None;
    for start in [hint, SEGMENT_HEADER_LEN as u64] {
        let mut scanner = FrameScanner::new(segment.file().clone(), start, limit, chunk_bytes).final_frames();
        if let Some(frames) = &frames {
            scanner = scanner.preloaded(frames.clone());
        }
        match skip_to(&mut scanner, offset) {
            Ok(()) => return Ok(scanner),
            Err(e) => last_error = Some(scan_error(segment, e)),
        }
        if start == SEGMENT_HEADER_LEN as u64 {
            break;
        }
    }
    Err(last_error.unwrap_or(Error::Closed))
}

/// Advances past records below `offset`, leaving the scanner on `offset`
/// (inside its batch frame if it has one).
fn skip_to(scanner: &mut FrameScanner, offset: u64) -> Result<(), ScanError> {
    loop {
        let position = scanner.position();
        match scanner.next_frame()? {
            Some(Scanned { frame, .. }) if frame.offsets().end <= offset => continue,
            Some(Scanned { frame, .. }) if frame.offsets().contains(&offset) => {
                scanner.seek(position);
                for _ in frame.offset()..offset {
                    scanner.next_record_ref()?;
                }
                return Ok(());
            }
            found => {
                let found = found.map_or(u64::MAX, |s| s.frame.offset());
                let kind = CorruptKind::OffsetMismatch {
                    expected: offset,
                    found,
                };
                return Err(ScanError::Invalid { position, kind });
            }
        }
    }
}

/// Reads the record at `offset`, which lies below `segment`'s limit.
pub(crate) fn read_record(segment: &Segment, offset: u64) -> Result<StoredRecord> {
    let mut scanner = scanner_at(segment, offset, RANDOM_READ_CHUNK_BYTES, None)?;
    next_record(segment, &mut scanner, offset)
}

#[inline]
fn next_record(segment: &Segment, scanner: &mut FrameScanner, offset: u64) -> Result<StoredRecord> {
    let position = scanner.position();
    let found = scanner.next_record().map_err(|e| scan_error(segment, e))?;
    expect_offset(segment, position, offset, found, StoredRecord::offset)
}

#[inline]
fn next_record_ref<'s>(
    segment: &Segment,
    scanner: &'s mut FrameScanner,
    offset: u64,
) -> Result<RecordRef<'s>> {
    let position = scanner.position();
    let found = scanner.next_record_ref().map_err(|e| scan_error(segment, e))?;
    expect_offset(segment, position, offset, found, RecordRef::offset)
}

/// `found`, the record scanned at `position`, if it is the one at `offset`.
#[inline]
fn expect_offset<R>(
    segment: &Segment,
    position: u64,
    offset: u64,
    found: Option<R>,
    offset_of: impl Fn(&R) -> u64,
) -> Result<R> {
    match found {
        Some(record) if offset_of(&record) == offset => Ok(record),
        found => {
            let found = found.map_or(u64::MAX, |r| offset_of(&r));
            let kind = CorruptKind::OffsetMismatch {
                expected: offset,
                found,
            };
            Err(Error::corrupt(segment.path(), position, kind))
        }
    }
}

/// Reads forward through a log from a starting position.
///
/// [`Cursor::next`] never blocks; [`Cursor::next_timeout`] waits for an
/// append. If retention removes records before the cursor reads them, the
/// cursor moves to the oldest stored record and counts the gap in
/// [`Cursor::skipped`].
///
/// ```
/// use std::time::Duration;
/// use logbus::{Log, LogOptions, Position, Record};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// log.append_batch(&[Record::new(b"a").timestamp(1_000), Record::new(b"b").timestamp(2_000)])?;
/// let mut cursor = log.cursor(Position::Timestamp(1_500))?; // first record at or after
/// assert_eq!(cursor.next()?.expect("b").value(), b"b");
/// assert!(cursor.next_timeout(Duration::from_millis(10))?.is_none()); // waits for appends
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Cursor {
    log: Arc<Shared>,
    next_offset: u64,
    current: Option<Reading>,
    skipped: u64,
}

/// The segment a cursor reads, and how much of it it knows to be readable
/// (refreshed only once the cursor reaches it, not per record).
#[derive(Debug)]
struct Reading {
    segment: Arc<Segment>,
    scanner: FrameScanner,
    limit: Extent,
}

impl Cursor {
    pub(crate) fn new(log: Arc<Shared>, position: Position) -> Result<Cursor> {
        let next_offset = match position {
            Position::Earliest => log.start_offset(),
            Position::Latest => log.end_offset(),
            Position::Offset(offset) => offset.clamp(log.start_offset(), log.end_offset()),
            Position::Timestamp(timestamp) => offset_for_timestamp(&log, timestamp)?,
        };
        Ok(Cursor {
            log,
            next_offset,
            current: None,
            skipped: 0,
        })
    }

    /// The offset of the next record this cursor returns.
    pub fn offset(&self) -> u64 {
        self.next_offset
    }

    /// Records skipped because retention removed them before they were read.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next record, or `None` if the cursor has read everything readable.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<StoredRecord>> {
        self.read_next(next_record)
    }

    /// [`Cursor::next`], the record borrowed from the cursor's buffer (or
    /// the sealed segment's mapping) instead of sharing it: no reference
    /// count to take and drop per record. The record is valid until the
    /// cursor moves on; [`RecordRef::to_stored`] copies one to keep.
    ///
    /// ```
    /// use logbus::{Log, LogOptions, Position, Record};
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let log = Log::open(dir.path(), LogOptions::default())?;
    /// log.append_batch(&[Record::new(b"a"), Record::new(b"b")])?;
    /// let mut cursor = log.cursor(Position::Earliest)?;
    /// let mut values = Vec::new();
    /// while let Some(record) = cursor.next_ref()? {
    ///     values.push(record.value().to_vec());
    /// }
    /// assert_eq!(values, [b"a", b"b"]);
    /// # Ok(()) }
    /// ```
    pub fn next_ref(&mut self) -> Result<Option<RecordRef<'_>>> {
        self.read_next(next_record_ref)
    }

    /// Reads the record at the cursor with `read`, if there is one, and
    /// moves past it.
    #[inline]
    fn read_next<'c, R>(
        &'c mut self,
        read: fn(&'c Segment, &'c mut FrameScanner, u64) -> Result<R>,
    ) -> Result<Option<R>> {
        if !self.at_readable()? {
            return Ok(None);
        }
        let Some(reading) = &mut self.current else {
            return Ok(None);
        };
        let record = read(&reading.segment, &mut reading.scanner, self.next_offset)?;
        self.next_offset += 1;
        Ok(Some(record))
    }

    /// Whether the record at `next_offset` is readable, `current` then
    /// reading its segment.
    #[inline]
    fn at_readable(&mut self) -> Result<bool> {
        self.log.check_open()?;
        let within = |reading: &Reading| self.next_offset < reading.limit.end_offset;
        if self.current.as_ref().is_some_and(within) && self.next_offset >= self.log.start_offset() {
            return Ok(true);
        }
        self.find_readable()
    }

    /// [`Cursor::at_readable`] past the end of what the cursor knew to be
    /// readable, or behind the log's start: skips what retention removed,
    /// refreshes the segment's limit, moves to the next segment at the end
    /// of one.
    #[cold]
    fn find_readable(&mut self) -> Result<bool> {
        loop {
            // Checked before reading the current segment too: retention may
            // have removed it, and a removed record is skipped, not returned.
            let start = self.log.start_offset();
            if self.next_offset < start {
                self.skipped += start - self.next_offset;
                self.next_offset = start;
                self.current = None;
            }
            if let Some(reading) = &mut self.current {
                if self.next_offset >= reading.limit.end_offset {
                    reading.limit = reading.segment.limit();
                    reading.scanner.extend_limit(reading.limit.end_pos);
                }
                if self.next_offset < reading.limit.end_offset {
                    return Ok(true);
                }
            }
            let Some(segment) = self.log.segment_for(self.next_offset) else {
                return Ok(false);
            };
            let same = (self.current.as_ref()).is_some_and(|r| Arc::ptr_eq(&r.segment, &segment));
            let limit = segment.limit();
            if same || self.next_offset >= limit.end_offset {
                return Ok(false);
            }
            let frames = segment.sealed_frames();
            let scanner = scanner_at(&segment, self.next_offset, SCAN_CHUNK_BYTES, frames)?;
            self.current = Some(Reading {
                segment,
                scanner,
                limit,
            });
        }
    }

    /// The next record, waiting up to `timeout` for one to be appended.
    /// Returns `Ok(None)` on timeout and [`Error::Closed`] if the log closes.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<StoredRecord>> {
        let log = self.log.clone();
        let clock = log.clock();
        let deadline = clock.now() + timeout;
        loop {
            if let Some(record) = self.next()? {
                return Ok(Some(record));
            }
            let waiter = log.activity.waiter();
            if let Some(record) = self.next()? {
                return Ok(Some(record));
            }
            if clock.now() >= deadline {
                return Ok(None);
            }
            waiter.wait_on(clock, deadline);
        }
    }

    /// Moves the cursor to `position`.
    pub fn seek(&mut self, position: Position) -> Result<()> {
        *self = Cursor::new(self.log.clone(), position)?;
        Ok(())
    }
}

/// The first offset whose record's timestamp is at least `timestamp`, or
/// the end offset if none is.
fn offset_for_timestamp(log: &Shared, timestamp: i64) -> Result<u64> {
    let segments: Vec<Arc<Segment>> = log.segments().clone();
    for segment in segments.iter().filter(|s| s.max_timestamp() >= timestamp) {
        let limit = segment.limit();
        // A hint past the segment's records is wrong (the index is damaged):
        // scan the segment from its first record instead of skipping it.
        let hinted = segment.time_scan_start(timestamp).max(segment.base());
        let start = if hinted < limit.end_offset {
            hinted
        } else {
            segment.base()
        };
        if start >= limit.end_offset {
            continue;
        }
        let mut scanner = scanner_at(segment, start, SCAN_CHUNK_BYTES, None)?;
        for offset in start..limit.end_offset {
            let record = next_record(segment, &mut scanner, offset)?;
            if record.timestamp() >= timestamp {
                return Ok(offset);
            }
        }
    }
    Ok(log.end_offset())
}
