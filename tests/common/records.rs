//! Records whose every field derives from their offset, so that a parent
//! process can check any record without knowing which child wrote it.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use logbus::{Record, StoredRecord};

/// The record at one offset: key `key-<offset>`, header `offset` holding
/// the offset's little-endian bytes, timestamp 1_700_000_000_000 plus the
/// offset, and a value of random bytes.
pub struct OffsetRecord {
    key: String,
    tag: [u8; 8],
    value: Vec<u8>,
    timestamp: i64,
}

impl OffsetRecord {
    /// The record at `offset`, its value `len(&mut rng)` bytes drawn from
    /// `rng` (which the caller seeds from the offset).
    pub fn new(
        offset: u64,
        mut rng: fastrand::Rng,
        len: impl FnOnce(&mut fastrand::Rng) -> usize,
    ) -> OffsetRecord {
        let len = len(&mut rng);
        OffsetRecord {
            key: format!("key-{offset}"),
            tag: offset.to_le_bytes(),
            value: std::iter::repeat_with(|| rng.u8(..)).take(len).collect(),
            timestamp: 1_700_000_000_000 + offset as i64,
        }
    }

    pub fn record(&self) -> Record<'_> {
        Record::new(&self.value)
            .key(&self.key)
            .header("offset", &self.tag)
            .timestamp(self.timestamp)
    }

    pub fn matches(&self, stored: &StoredRecord) -> bool {
        let headers: Vec<_> = stored.headers().collect();
        stored.key() == self.key.as_bytes()
            && headers == [("offset", &self.tag[..])]
            && stored.value() == &self.value[..]
            && stored.timestamp() == self.timestamp
    }
}
