//! Index files: a header, then fixed-size entries.
//!
//! ```text
//! header: | magic[8] | version u16 | reserved u16 | crc u32 | base_offset u64 |   (24 bytes)
//! .idx entry: | relative_offset u32 | position u32 |                            (8 bytes)
//! .tix entry: | timestamp i64 | relative_offset u32 |                           (12 bytes)
//! ```
//!
//! The header `crc` is CRC-32/IEEE over bytes `0..12` followed by `16..24`.
//! Entries carry no checksum: an index is a hint, and every position it
//! yields is verified against the record found there.

use super::le::{u32_at, u64_at};
use super::{check_header, new_header, seal_header};
use crate::error::CorruptKind;

/// Bytes of an index file header; entries start here.
pub const INDEX_HEADER_LEN: usize = 24;
/// Bytes of one offset-index entry.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes of one time-index entry.
pub const TIME_ENTRY_LEN: usize = 12;

const _: () = assert!(INDEX_HEADER_LEN.is_multiple_of(4) && OFFSET_ENTRY_LEN == 4 + 4);
const _: () = assert!(TIME_ENTRY_LEN == 8 + 4);

/// Which index a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// `.idx`: relative offset to file position.
    Offset,
    /// `.tix`: timestamp to relative offset.
    Time,
}

impl IndexKind {
    /// Magic bytes of this kind of index file.
    pub fn magic(self) -> [u8; 8] {
        match self {
            IndexKind::Offset => *b"LOGBUSIX",
            IndexKind::Time => *b"LOGBUSTX",
        }
    }

    /// Bytes of one entry.
    pub fn entry_len(self) -> usize {
        match self {
            IndexKind::Offset => OFFSET_ENTRY_LEN,
            IndexKind::Time => TIME_ENTRY_LEN,
        }
    }
}

/// Encodes an index file header.
pub fn encode_index_header(kind: IndexKind, base_offset: u64) -> [u8; INDEX_HEADER_LEN] {
    let mut out = new_header::<INDEX_HEADER_LEN>(kind.magic());
    out[16..24].copy_from_slice(&base_offset.to_le_bytes());
    seal_header(&mut out);
    out
}

/// Decodes an index header, returning the base offset it names.
pub fn decode_index_header(kind: IndexKind, buf: &[u8]) -> Result<u64, CorruptKind> {
    let bytes = check_header::<INDEX_HEADER_LEN>(buf, kind.magic())?;
    Ok(u64_at(bytes, 16))
}

/// One `.idx` entry: the record `relative_offset` past the segment's base
/// starts at byte `position` of the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Offset relative to the segment base.
    pub relative_offset: u32,
    /// Byte position of the record's frame in the segment file.
    pub position: u32,
}

impl OffsetEntry {
    /// Encodes the entry.
    pub fn encode(&self) -> [u8; OFFSET_ENTRY_LEN] {
        let mut out = [0u8; OFFSET_ENTRY_LEN];
        out[0..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[4..8].copy_from_slice(&self.position.to_le_bytes());
        out
    }

    /// Decodes the entry at the start of `buf` (`None` if too short).
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let bytes = buf.first_chunk::<OFFSET_ENTRY_LEN>()?;
        Some(OffsetEntry {
            relative_offset: u32_at(bytes, 0),
            position: u32_at(bytes, 4),
        })
    }
}

/// One `.tix` entry: every record up to `relative_offset` has a timestamp
/// no greater than `timestamp` (the running maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Running maximum timestamp, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Offset (relative to the segment base) of the record that set it.
    pub relative_offset: u32,
}

impl TimeEntry {
    /// Encodes the entry.
    pub fn encode(&self) -> [u8; TIME_ENTRY_LEN] {
        let mut out = [0u8; TIME_ENTRY_LEN];
        out[0..8].copy_from_slice(&self.timestamp.to_le_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_le_bytes());
        out
    }

    /// Decodes the entry at the start of `buf` (`None` if too short).
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let bytes = buf.first_chunk::<TIME_ENTRY_LEN>()?;
        Some(TimeEntry {
            timestamp: u64_at(bytes, 0) as i64,
            relative_offset: u32_at(bytes, 8),
        })
    }
}
