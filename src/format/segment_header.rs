//! The segment file header: the first `SEGMENT_HEADER_LEN` bytes of every
//! `.log` file, making a lone segment self-describing.
//!
//! ```text
//! 0          8         10       12       16              24              32
//! | magic[8] | version | flags  | crc u32| base_offset u64| created_ms i64 |
//! ```
//!
//! `crc` is CRC-32/IEEE over bytes `0..12` followed by `16..32`.

use super::le::{u16_at, u32_at, u64_at};
use crate::error::CorruptKind;

/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LOGBUSSG";
/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the segment header; the first record frame starts here.
pub const SEGMENT_HEADER_LEN: usize = 32;

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Offset of the first record the segment holds.
    pub base_offset: u64,
    /// Creation time, milliseconds since the Unix epoch (informational).
    pub created_ms: i64,
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = header_crc(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

fn header_crc(bytes: &[u8; SEGMENT_HEADER_LEN]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..12]);
    hasher.update(&bytes[16..32]);
    hasher.finalize()
}

/// Decodes and checks a segment header from the start of `buf`.
pub fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, CorruptKind> {
    let Some(bytes) = buf.first_chunk::<SEGMENT_HEADER_LEN>() else {
        return Err(CorruptKind::Truncated {
            needed: SEGMENT_HEADER_LEN as u64,
            available: buf.len() as u64,
        });
    };
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(CorruptKind::BadMagic);
    }
    let version = u16_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(CorruptKind::UnsupportedVersion(version));
    }
    let stored = u32_at(bytes, 12);
    let computed = header_crc(bytes);
    if stored != computed {
        return Err(CorruptKind::Checksum { stored, computed });
    }
    if u16_at(bytes, 10) != 0 {
        return Err(CorruptKind::Malformed("unknown segment flags"));
    }
    Ok(SegmentHeader {
        base_offset: u64_at(bytes, 16),
        created_ms: u64_at(bytes, 24) as i64,
    })
}
