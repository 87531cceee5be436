//! Sequential frame scanning over a segment file, in chunks.
//!
//! The scanner reads `chunk_bytes` at a time into one shared buffer and
//! hands out records sharing slices of it ([`FrameScanner::next_record`],
//! or borrowing them: [`FrameScanner::next_record_ref`];
//! [`FrameScanner::next_frame`] gives only where a frame lies and what it
//! holds), so reading many small records costs one
//! allocation per chunk, not one per record; and none at all once the
//! frames of the last chunk were dropped: the next chunk is read into the
//! same buffer (no zeroing, no fresh pages to fault in). It never reads
//! past `limit`. A reader's frames below the segment's limit, which are
//! final ([`FrameScanner::final_frames`]), are sliced out of the active
//! segment's write mapping when it has one, as out of a sealed segment's:
//! no system call and no copy. A scanner given the file's bytes up front
//! ([`FrameScanner::preloaded`], a sealed segment's mapping) slices frames
//! out of them instead and reads nothing below their end. Either way every
//! frame is decoded, CRC included, each time it is scanned.
//!
//! A batch frame is decoded (CRC and every record's layout) when the scan
//! reaches it, as a record frame is; the records are then handed out one
//! at a time from the buffered frame. [`FrameScanner::position`] stays at
//! the batch's start until its last record is out.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::CorruptKind;
use crate::format::{
    BatchView, FRAME_HEADER_LEN, FrameError, FrameView, SegmentFrame, batch_record, decode_segment_frame,
    frame_len,
};
use crate::io::{StorageFile, read_exact_at};
use crate::record::{RecordRef, StoredRecord};

/// Default chunk size for sequential reads.
pub(crate) const SCAN_CHUNK_BYTES: usize = 256 << 10;

/// A frame found by the scanner.
#[derive(Debug, Clone)]
pub(crate) struct Scanned {
    /// Where the frame starts in the file.
    pub position: u64,
    /// The decoded frame.
    pub frame: SegmentFrame,
}

/// The records of a batch frame that the scanner has yet to hand out.
#[derive(Debug, Clone, Copy)]
struct InBatch {
    /// Where the batch frame starts in the file.
    position: u64,
    len: usize,
    base_timestamp: i64,
    /// Where the next record starts in the frame, and its offset.
    at: usize,
    next_offset: u64,
    end_offset: u64,
}

impl InBatch {
    fn new(position: u64, view: &BatchView) -> Self {
        InBatch {
            position,
            len: view.len,
            base_timestamp: view.timestamp,
            at: FRAME_HEADER_LEN,
            next_offset: view.offset,
            end_offset: view.offset.saturating_add(view.count.into()),
        }
    }
}

/// Why a scan stopped before `limit`.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// Reading failed; nothing is known about the bytes.
    Io(std::io::Error),
    /// The bytes at `position` are not a valid frame.
    Invalid { position: u64, kind: CorruptKind },
}

impl From<std::io::Error> for ScanError {
    fn from(e: std::io::Error) -> Self {
        ScanError::Io(e)
    }
}

#[derive(Debug)]
pub(crate) struct FrameScanner {
    file: Arc<dyn StorageFile>,
    position: u64,
    limit: u64,
    chunk: Bytes,
    chunk_start: u64,
    chunk_bytes: usize,
    /// The bytes below `limit` are final (see [`FrameScanner::final_frames`]).
    final_frames: bool,
    /// The batch whose records are being handed out, its frame in `chunk`.
    batch: Option<InBatch>,
}

impl FrameScanner {
    pub(crate) fn new(file: Arc<dyn StorageFile>, position: u64, limit: u64, chunk_bytes: usize) -> Self {
        FrameScanner {
            file,
            position,
            limit,
            chunk: Bytes::new(),
            chunk_start: position,
            chunk_bytes,
            final_frames: false,
            batch: None,
        }
    }

    /// Notes that the bytes below `limit` (as it is raised, too) are a
    /// segment's frames below its limit, which are final: frames are then
    /// sliced out of the file's write mapping if it has one
    /// (`StorageFile::share_final`), as out of a preloaded sealed segment,
    /// rather than read.
    pub(crate) fn final_frames(mut self) -> Self {
        self.final_frames = true;
        self
    }

    /// Starts from `frames`, the file's bytes from its start: frames
    /// below their end are sliced from them, never read from the file.
    pub(crate) fn preloaded(mut self, frames: Bytes) -> Self {
        self.chunk = frames;
        self.chunk_start = 0;
        self
    }

    /// Position of the frame holding the next record.
    pub(crate) fn position(&self) -> u64 {
        self.batch.map_or(self.position, |batch| batch.position)
    }

    /// Moves back or forward to the frame at `position` (keeps the
    /// buffered chunk).
    pub(crate) fn seek(&mut self, position: u64) {
        self.position = position;
        self.batch = None;
    }

    /// Raises the limit as more of the file becomes readable.
    pub(crate) fn extend_limit(&mut self, limit: u64) {
        self.limit = self.limit.max(limit);
    }

    /// The next frame, `None` at `limit`; the rest of a batch whose
    /// records were being handed out is skipped.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Scanned>, ScanError> {
        self.batch = None;
        let scanned = self.next_view()?;
        Ok(scanned.map(|(position, frame)| Scanned { position, frame }))
    }

    /// The next record, sharing its frame's bytes, `None` at `limit`.
    #[inline]
    pub(crate) fn next_record(&mut self) -> Result<Option<StoredRecord>, ScanError> {
        let Some((position, view)) = self.next_record_view()? else {
            return Ok(None);
        };
        let bytes = self.chunk.slice(self.buffered(position, view.len));
        Ok(Some(StoredRecord::from_frame(bytes, view)))
    }

    /// The next record borrowed from the scanner's buffer, `None` at
    /// `limit`: [`Self::next_record`] without sharing the bytes.
    #[inline]
    pub(crate) fn next_record_ref(&mut self) -> Result<Option<RecordRef<'_>>, ScanError> {
        let Some((position, view)) = self.next_record_view()? else {
            return Ok(None);
        };
        let frame = self
            .chunk
            .get(self.buffered(position, view.len))
            .unwrap_or_default();
        Ok(Some(RecordRef::from_frame(frame, view)))
    }

    /// Where the next record's frame starts and the record's layout in it
    /// (in a batch: its fields, `len` where it ends), `None` at `limit`.
    #[inline(always)]
    fn next_record_view(&mut self) -> Result<Option<(u64, FrameView)>, ScanError> {
        if self.batch.is_none() {
            match self.next_view()? {
                None => return Ok(None),
                Some((position, SegmentFrame::Record(view))) => return Ok(Some((position, view))),
                Some((position, SegmentFrame::Batch(view))) => {
                    self.batch = Some(InBatch::new(position, &view))
                }
            }
        }
        self.next_in_batch()
    }

    /// The next record of the batch being handed out.
    #[inline]
    fn next_in_batch(&mut self) -> Result<Option<(u64, FrameView)>, ScanError> {
        let Some(batch) = &mut self.batch else {
            return Ok(None);
        };
        let start = (batch.position - self.chunk_start) as usize;
        let frame = self.chunk.get(start..start + batch.len).unwrap_or_default();
        // The batch was decoded whole when the scan reached it: this only
        // fails on a bug, reported as damage at the batch.
        let decoded = batch_record(frame, batch.at, batch.next_offset, batch.base_timestamp);
        let (view, next) = decoded.map_err(|error| ScanError::Invalid {
            position: batch.position,
            kind: frame_error_kind(error, batch.len as u64),
        })?;
        let position = batch.position;
        batch.at = next;
        batch.next_offset += 1;
        if batch.next_offset >= batch.end_offset {
            self.batch = None;
        }
        Ok(Some((position, view)))
    }

    /// Where the `len` bytes at `position`, just decoded, lie in the buffer.
    #[inline(always)]
    fn buffered(&self, position: u64, len: usize) -> std::ops::Range<usize> {
        let start = (position - self.chunk_start) as usize;
        start..start + len
    }

    /// Decodes the frame at `position` (CRC included) and moves past it;
    /// its position and layout, `None` at `limit`.
    #[inline(always)]
    fn next_view(&mut self) -> Result<Option<(u64, SegmentFrame)>, ScanError> {
        if self.position >= self.limit {
            return Ok(None);
        }
        let position = self.position;
        let invalid = |kind| ScanError::Invalid { position, kind };
        let available = self.limit - position;
        let prefix = self.window(FRAME_HEADER_LEN)?;
        let len = match frame_len(prefix) {
            Ok(len) => len,
            Err(error) => return Err(invalid(frame_error_kind(error, available))),
        };
        if len as u64 > available {
            return Err(invalid(truncated(len, available)));
        }
        let frame = self.window(len)?;
        let decoded =
            decode_segment_frame(frame).map_err(|error| invalid(frame_error_kind(error, available)))?;
        self.position += len as u64;
        Ok(Some((position, decoded)))
    }

    /// The buffered bytes from `position`, at least `want` of them unless
    /// `limit` comes first; reads a new chunk when needed.
    #[inline]
    fn window(&mut self, want: usize) -> Result<&[u8], ScanError> {
        let want_end = (self.position + want as u64).min(self.limit);
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        if self.position < self.chunk_start || want_end > chunk_end {
            self.read_chunk(want)?;
        }
        let start = (self.position - self.chunk_start) as usize;
        Ok(&self.chunk[start..])
    }

    /// Reads the chunk starting at `position`: `chunk_bytes`, or `want` if
    /// more, or up to `limit` if less.
    #[cold]
    fn read_chunk(&mut self, want: usize) -> Result<(), ScanError> {
        if self.final_frames
            && let Some(frames) = self.file.share_final(self.limit)
        {
            self.chunk = frames;
            self.chunk_start = 0;
            return Ok(());
        }
        let len = (self.limit - self.position).min(want.max(self.chunk_bytes) as u64) as usize;
        let mut buf = self.reusable_buffer(len);
        read_exact_at(self.file.as_ref(), &mut buf, self.position)?;
        self.chunk = buf.freeze();
        self.chunk_start = self.position;
        Ok(())
    }

    /// A buffer of `len` bytes for the next chunk: the current chunk's,
    /// when no frame handed out still shares it and it is large enough
    /// (its old bytes are overwritten by the read), else a new one.
    fn reusable_buffer(&mut self, len: usize) -> BytesMut {
        match std::mem::take(&mut self.chunk).try_into_mut() {
            Ok(mut buf) if buf.len() >= len => {
                buf.truncate(len);
                buf
            }
            _ => BytesMut::zeroed(len),
        }
    }
}

/// What a frame that did not decode says of the bytes, `available` of them
/// left before the limit.
fn frame_error_kind(error: FrameError, available: u64) -> CorruptKind {
    match error {
        FrameError::Corrupt(kind) => kind,
        FrameError::Incomplete { needed } => truncated(needed, available),
    }
}

fn truncated(needed: usize, available: u64) -> CorruptKind {
    CorruptKind::Truncated {
        needed: needed as u64,
        available,
    }
}
