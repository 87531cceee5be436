//! The segment file header: the first `SEGMENT_HEADER_LEN` bytes of every
//! `.log` file, making a lone segment self-describing.
//!
//! ```text
//! 0          8         10       12       16              24              32
//! | magic[8] | version | flags  | crc u32| base_offset u64| created_ms i64 |
//! ```
//!
//! `crc` is CRC-32/IEEE over bytes `0..12` followed by `16..32`.

use super::le::{u16_at, u64_at};
use super::{check_header, new_header, seal_header};
use crate::error::CorruptKind;

/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LOGBUSSG";
/// The on-disk format version this build writes: version 2 added the
/// batch frame (`batch.rs`).
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads. Version 1 files differ
/// from version 2 only in that version 1 segments hold no batch frames.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// Bytes of the segment header; the first record frame starts here.
pub const SEGMENT_HEADER_LEN: usize = 32;

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format version the segment was written in.
    pub version: u16,
    /// Offset of the first record the segment holds.
    pub base_offset: u64,
    /// Creation time, milliseconds since the Unix epoch (informational).
    pub created_ms: i64,
}

impl SegmentHeader {
    /// Encodes the header (in its `version`, which must be one this build
    /// reads).
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = new_header::<SEGMENT_HEADER_LEN>(SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&self.version.to_le_bytes());
        out[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        seal_header(&mut out);
        out
    }
}

/// Decodes and checks a segment header from the start of `buf`.
pub fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, CorruptKind> {
    let bytes = check_header::<SEGMENT_HEADER_LEN>(buf, SEGMENT_MAGIC)?;
    if u16_at(bytes, 10) != 0 {
        return Err(CorruptKind::Malformed("unknown segment flags"));
    }
    Ok(SegmentHeader {
        version: u16_at(bytes, 8),
        base_offset: u64_at(bytes, 16),
        created_ms: u64_at(bytes, 24) as i64,
    })
}
