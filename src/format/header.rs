//! The preamble every fixed-size header shares (segment, index file,
//! checkpoint, correlation index):
//!
//! ```text
//! 0          8           10                 12        16
//! | magic[8] | version u16 | (per header) u16 | crc u32 | fields ... |
//! ```
//!
//! `crc` is CRC-32/IEEE over every byte of the header but itself: bytes
//! `0..12` followed by `16..len`. Checks run magic, then version, then CRC,
//! so a file of a newer version is reported as such even if that version
//! laid out or checksummed its header differently.

use super::le::{u16_at, u32_at};
use super::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use crate::error::CorruptKind;

/// A header of `N` bytes with `magic` and the format version set, the
/// rest zero; fill in the fields, then [`seal_header`].
pub(crate) fn new_header<const N: usize>(magic: [u8; 8]) -> [u8; N] {
    let mut header = [0u8; N];
    header[0..8].copy_from_slice(&magic);
    header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// Computes and stores the CRC of a filled-in header.
pub(crate) fn seal_header(header: &mut [u8]) {
    let crc = header_crc(header);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the `N`-byte header at the start of `buf`: present in full,
/// magic, version, CRC. Returns the header's bytes.
pub(crate) fn check_header<const N: usize>(buf: &[u8], magic: [u8; 8]) -> Result<&[u8; N], CorruptKind> {
    let Some(header) = buf.first_chunk::<N>() else {
        return Err(CorruptKind::Truncated {
            needed: N as u64,
            available: buf.len() as u64,
        });
    };
    if header[0..8] != magic {
        return Err(CorruptKind::BadMagic);
    }
    let version = u16_at(header, 8);
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(CorruptKind::UnsupportedVersion(version));
    }
    let stored = u32_at(header, 12);
    let computed = header_crc(header);
    if stored != computed {
        return Err(CorruptKind::Checksum { stored, computed });
    }
    Ok(header)
}

fn header_crc(header: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..12]);
    hasher.update(&header[16..]);
    hasher.finalize()
}
