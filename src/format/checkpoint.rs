//! The recovery checkpoint (`.checkpoint`): where the active segment was
//! last known durable, so that recovery after a crash scans only the bytes
//! written since, not the whole segment.
//!
//! ```text
//! 0          8         10                   12       16         24             32          40              48
//! | magic[8] | version | write_limit_units  | crc u32| base u64 | end_offset u64| end_pos u64| max_timestamp i64 |
//! ```
//!
//! `write_limit_units` (once a reserved zero, so an older reader rejects a
//! checkpoint that sets it and scans the whole active segment instead):
//! when not zero, nothing of the segment at or past `end_pos +
//! write_limit_units x 64 KiB` was ever written, so recovery need not read
//! the preallocated space beyond it.
//!
//! `crc` is CRC-32/IEEE over bytes `0..12` followed by `16..48`. The file is
//! rewritten in place after syncs, without a sync of its own: it is written
//! only after the data it describes is durable, and a torn or stale copy
//! fails its checks (or names an older segment) and is ignored.

use super::le::{u16_at, u64_at};
use super::{check_header, new_header, seal_header};
use crate::error::CorruptKind;

/// Magic bytes of the checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"LOGBUSCP";
/// Bytes of the checkpoint file.
pub const CHECKPOINT_LEN: usize = 48;
/// The unit of [`Checkpoint::write_limit_units`]: 64 KiB.
pub const WRITE_LIMIT_UNIT_BYTES: u64 = 64 << 10;

/// A durable position in the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Base offset of the segment it describes.
    pub base_offset: u64,
    /// Every offset below this is durable.
    pub end_offset: u64,
    /// Byte position just past the last durable frame.
    pub end_pos: u64,
    /// Newest timestamp in the segment at that time (or later).
    pub max_timestamp: i64,
    /// `0`: unknown. Otherwise nothing of the segment at or past
    /// [`Checkpoint::write_limit`] was ever written.
    pub write_limit_units: u16,
}

impl Checkpoint {
    /// Encodes the checkpoint.
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut out = new_header::<CHECKPOINT_LEN>(CHECKPOINT_MAGIC);
        out[10..12].copy_from_slice(&self.write_limit_units.to_le_bytes());
        out[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.end_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.end_pos.to_le_bytes());
        out[40..48].copy_from_slice(&self.max_timestamp.to_le_bytes());
        seal_header(&mut out);
        out
    }

    /// Decodes and checks a checkpoint.
    pub fn decode(buf: &[u8]) -> Result<Checkpoint, CorruptKind> {
        let bytes = check_header::<CHECKPOINT_LEN>(buf, CHECKPOINT_MAGIC)?;
        let checkpoint = Checkpoint {
            base_offset: u64_at(bytes, 16),
            end_offset: u64_at(bytes, 24),
            end_pos: u64_at(bytes, 32),
            max_timestamp: u64_at(bytes, 40) as i64,
            write_limit_units: u16_at(bytes, 10),
        };
        if checkpoint.end_offset < checkpoint.base_offset {
            return Err(CorruptKind::Malformed("checkpoint fields are inconsistent"));
        }
        Ok(checkpoint)
    }

    /// The position before which every byte of the segment ever written
    /// lies, if the checkpoint names one.
    pub fn write_limit(&self) -> Option<u64> {
        (self.write_limit_units != 0).then(|| {
            self.end_pos
                .saturating_add(u64::from(self.write_limit_units) * WRITE_LIMIT_UNIT_BYTES)
        })
    }

    /// The [`Checkpoint::write_limit_units`] that name a limit at or past
    /// `limit` (`0`, unknown, if none fits).
    pub fn units_for(end_pos: u64, limit: u64) -> u16 {
        let units = limit
            .saturating_sub(end_pos)
            .div_ceil(WRITE_LIMIT_UNIT_BYTES)
            .max(1);
        u16::try_from(units).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_every_cut_and_bit_flip() {
        let checkpoint = Checkpoint {
            base_offset: 7,
            end_offset: 90,
            end_pos: 4096,
            max_timestamp: -5,
            write_limit_units: 3,
        };
        assert_eq!(checkpoint.write_limit(), Some(4096 + 3 * WRITE_LIMIT_UNIT_BYTES));
        let bytes = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(checkpoint));
        for cut in 0..CHECKPOINT_LEN {
            assert!(Checkpoint::decode(&bytes[..cut]).is_err());
        }
        for bit in 0..CHECKPOINT_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&flipped).is_err(), "bit {bit}");
        }
    }
}
