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

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::CorruptKind;
use crate::format::{FRAME_HEADER_LEN, FrameError, FrameView, decode_frame, frame_len};
use crate::io::{StorageFile, read_exact_at};
use crate::record::{RecordRef, StoredRecord};

/// Default chunk size for sequential reads.
pub(crate) const SCAN_CHUNK_BYTES: usize = 256 << 10;

/// A frame found by the scanner.
#[derive(Debug, Clone)]
pub(crate) struct Scanned {
    /// Where the frame starts in the file.
    pub position: u64,
    /// The decoded layout.
    pub view: FrameView,
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

    /// Position of the next frame.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Moves back or forward to `position` (keeps the buffered chunk).
    pub(crate) fn seek(&mut self, position: u64) {
        self.position = position;
    }

    /// Raises the limit as more of the file becomes readable.
    pub(crate) fn extend_limit(&mut self, limit: u64) {
        self.limit = self.limit.max(limit);
    }

    /// The next frame, `None` at `limit`.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Scanned>, ScanError> {
        let scanned = self.next_view()?;
        Ok(scanned.map(|(position, view)| Scanned { position, view }))
    }

    /// The next frame as a record, sharing the frame's bytes, `None` at
    /// `limit`: [`Self::next_frame`] for readers, built in place.
    #[inline]
    pub(crate) fn next_record(&mut self) -> Result<Option<StoredRecord>, ScanError> {
        let Some((position, view)) = self.next_view()? else {
            return Ok(None);
        };
        let bytes = self.chunk.slice(self.buffered(position, view.len));
        Ok(Some(StoredRecord::from_frame(bytes, view)))
    }

    /// The next frame as a record borrowed from the scanner's buffer,
    /// `None` at `limit`: [`Self::next_record`] without sharing the bytes.
    #[inline]
    pub(crate) fn next_record_ref(&mut self) -> Result<Option<RecordRef<'_>>, ScanError> {
        let Some((position, view)) = self.next_view()? else {
            return Ok(None);
        };
        let frame = self
            .chunk
            .get(self.buffered(position, view.len))
            .unwrap_or_default();
        Ok(Some(RecordRef::from_frame(frame, view)))
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
    fn next_view(&mut self) -> Result<Option<(u64, FrameView)>, ScanError> {
        if self.position >= self.limit {
            return Ok(None);
        }
        let position = self.position;
        let invalid = |kind| ScanError::Invalid { position, kind };
        let available = self.limit - position;
        let prefix = self.window(FRAME_HEADER_LEN)?;
        let len = match frame_len(prefix) {
            Ok(len) => len,
            Err(FrameError::Corrupt(kind)) => return Err(invalid(kind)),
            Err(FrameError::Incomplete { needed }) => {
                return Err(invalid(truncated(needed, available)));
            }
        };
        if len as u64 > available {
            return Err(invalid(truncated(len, available)));
        }
        let frame = self.window(len)?;
        let view = match decode_frame(frame) {
            Ok(view) => view,
            Err(FrameError::Corrupt(kind)) => return Err(invalid(kind)),
            Err(FrameError::Incomplete { needed }) => return Err(invalid(truncated(needed, available))),
        };
        self.position += len as u64;
        Ok(Some((position, view)))
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

fn truncated(needed: usize, available: u64) -> CorruptKind {
    CorruptKind::Truncated {
        needed: needed as u64,
        available,
    }
}
