//! The correlation index of an inbox: correlation id -> inbox offsets, an
//! open-addressing hash table in a mapped file, so a lookup costs the same
//! however large the inbox grows.
//!
//! ```text
//! header (48 bytes): magic[8] "LOGBUSCX" | version u16 | flags u16 | crc u32
//!                    | capacity u64 | count u64 | indexed_through u64 | reserved u64
//! slot (24 bytes):   correlation id u128 | inbox offset u64      (id 0 = empty)
//! ```
//!
//! The header `crc` is CRC-32/IEEE over bytes `0..12` and `16..48`. Flag bit 0
//! ("clean") is set only by a close that synced the table; any other state
//! means the table may be behind or torn and is rebuilt from the inbox.
//! Invariants: `capacity` is a power of two; at most half the slots are used;
//! the same id may occupy several slots (one per reply); every offset below
//! `indexed_through` that carries a correlation id has a slot. Entries are
//! hints: callers verify the record they point at.

use std::io;
use std::path::Path;

use crate::error::CorruptKind;
use crate::format::{check_header, new_header, seal_header};
use crate::io::{MappedFile, Storage};

const MAGIC: [u8; 8] = *b"LOGBUSCX";
const HEADER_LEN: usize = 48;
const SLOT_LEN: usize = 24;
const FLAG_CLEAN: u16 = 1;
const MIN_CAPACITY: u64 = 1024;
/// Largest table: 2^26 slots (1.5 GiB); an inbox needing more is rebuilt
/// with stale entries dropped instead of growing further.
const MAX_CAPACITY: u64 = 1 << 26;

const _: () = assert!(HEADER_LEN == 8 + 2 + 2 + 4 + 4 * 8 && SLOT_LEN == 16 + 8);

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationHeader {
    /// Slots in the table (a power of two).
    pub capacity: u64,
    /// Used slots.
    pub count: u64,
    /// Inbox offsets below this are indexed.
    pub indexed_through: u64,
    /// Closed cleanly after a sync.
    pub clean: bool,
}

/// Decodes and checks a correlation index header.
pub fn decode_correlation_header(bytes: &[u8]) -> Result<CorrelationHeader, CorruptKind> {
    let header = check_header::<HEADER_LEN>(bytes, MAGIC)?;
    let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
    let decoded = CorrelationHeader {
        capacity: field(16),
        count: field(24),
        indexed_through: field(32),
        clean: u16::from_le_bytes([header[10], header[11]]) & FLAG_CLEAN != 0,
    };
    // Saturating: the fields are checked only below, and a huge capacity
    // must be an error, not an overflow.
    let expected_len = (HEADER_LEN as u64).saturating_add(decoded.capacity.saturating_mul(SLOT_LEN as u64));
    if !decoded.capacity.is_power_of_two()
        || decoded.capacity > MAX_CAPACITY
        || decoded.count > decoded.capacity / 2
        || bytes.len() as u64 != expected_len
    {
        return Err(CorruptKind::Malformed(
            "correlation index header does not match its file",
        ));
    }
    Ok(decoded)
}

fn slot_of(id: u128, capacity: u64) -> u64 {
    let mixed = (id as u64) ^ ((id >> 64) as u64).rotate_left(29);
    mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) & (capacity - 1)
}

/// The hash table over raw bytes (header + slots). Works on any byte
/// buffer, so it is tested and fuzzed without a mapped file.
#[derive(Debug)]
pub struct CorrelationTable<B> {
    bytes: B,
    header: CorrelationHeader,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> CorrelationTable<B> {
    /// Bytes a table of `capacity` slots needs.
    pub fn bytes_for(capacity: u64) -> usize {
        HEADER_LEN + capacity as usize * SLOT_LEN
    }

    /// Opens an existing table, checking its header.
    pub fn open(bytes: B) -> Result<Self, CorruptKind> {
        let header = decode_correlation_header(bytes.as_ref())?;
        Ok(CorrelationTable { bytes, header })
    }

    /// Formats `bytes` (exactly `bytes_for(capacity)` long) as an empty table.
    pub fn format(bytes: B, capacity: u64, indexed_through: u64) -> Self {
        let header = CorrelationHeader {
            capacity,
            count: 0,
            indexed_through,
            clean: false,
        };
        let mut table = CorrelationTable { bytes, header };
        table.reset(capacity, indexed_through);
        table
    }

    /// Empties the table; its bytes must already be `bytes_for(capacity)` long.
    fn reset(&mut self, capacity: u64, indexed_through: u64) {
        self.bytes.as_mut().fill(0);
        self.header = CorrelationHeader {
            capacity,
            count: 0,
            indexed_through,
            clean: false,
        };
        self.write_header();
    }

    /// The header as last written.
    pub fn header(&self) -> CorrelationHeader {
        self.header
    }

    fn write_header(&mut self) {
        let h = self.header;
        let mut out = new_header::<HEADER_LEN>(MAGIC);
        out[10..12].copy_from_slice(&(if h.clean { FLAG_CLEAN } else { 0 }).to_le_bytes());
        out[16..24].copy_from_slice(&h.capacity.to_le_bytes());
        out[24..32].copy_from_slice(&h.count.to_le_bytes());
        out[32..40].copy_from_slice(&h.indexed_through.to_le_bytes());
        seal_header(&mut out);
        self.bytes.as_mut()[..HEADER_LEN].copy_from_slice(&out);
    }

    fn slot(&self, index: u64) -> (u128, u64) {
        let at = HEADER_LEN + index as usize * SLOT_LEN;
        let raw = &self.bytes.as_ref()[at..at + SLOT_LEN];
        let id = u128::from_le_bytes(raw[0..16].try_into().unwrap_or_default());
        let offset = u64::from_le_bytes(raw[16..24].try_into().unwrap_or_default());
        (id, offset)
    }

    /// True when one more entry would pass the half-full mark.
    pub fn is_full(&self) -> bool {
        self.header.count + 1 > self.header.capacity / 2
    }

    /// Adds `id -> offset`; false if it was not stored. The caller grows
    /// the table first when full; a full table ignores the entry (lookups
    /// then verify and miss), and so does a damaged one whose slots are all
    /// taken although its count says otherwise.
    pub fn insert(&mut self, id: u128, offset: u64) -> bool {
        if id == 0 || self.is_full() {
            return false;
        }
        let capacity = self.header.capacity;
        let mut index = slot_of(id, capacity);
        // Bounded: the count is read from the file, so free slots may not exist.
        for _ in 0..capacity {
            if self.slot(index).0 == 0 {
                let at = HEADER_LEN + index as usize * SLOT_LEN;
                let out = &mut self.bytes.as_mut()[at..at + SLOT_LEN];
                out[0..16].copy_from_slice(&id.to_le_bytes());
                out[16..24].copy_from_slice(&offset.to_le_bytes());
                self.header.count += 1;
                return true;
            }
            index = (index + 1) & (capacity - 1);
        }
        false
    }

    /// Every offset recorded for `id`, in insertion order of probing.
    pub fn find(&self, id: u128) -> Vec<u64> {
        let capacity = self.header.capacity;
        let mut found = Vec::new();
        let mut index = slot_of(id, capacity);
        for _ in 0..capacity {
            match self.slot(index) {
                (0, _) => break,
                (slot_id, offset) if slot_id == id => found.push(offset),
                _ => {}
            }
            index = (index + 1) & (capacity - 1);
        }
        found
    }

    /// Every entry, in slot order.
    pub fn entries(&self) -> Vec<(u128, u64)> {
        (0..self.header.capacity)
            .map(|i| self.slot(i))
            .filter(|(id, _)| *id != 0)
            .collect()
    }

    /// Records that offsets below `offset` are indexed, and the clean flag.
    pub fn set_progress(&mut self, indexed_through: u64, clean: bool) {
        self.header.indexed_through = indexed_through;
        self.header.clean = clean;
        self.write_header();
    }
}

/// A mapped file viewed as bytes for [`CorrelationTable`].
#[derive(Debug)]
pub(crate) struct MappedBytes(pub(crate) Box<dyn MappedFile>);

impl AsRef<[u8]> for MappedBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl AsMut<[u8]> for MappedBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.bytes_mut()
    }
}

/// The correlation index file of one inbox.
#[derive(Debug)]
pub(crate) struct CorrelationIndex {
    table: CorrelationTable<MappedBytes>,
}

impl CorrelationIndex {
    /// Opens the index at `path`. Returns it with `true` if it can be
    /// trusted (clean close), or formats an empty one (`false`: the caller
    /// re-indexes the inbox from its start).
    pub(crate) fn open(storage: &dyn Storage, path: &Path, inbox_start: u64) -> io::Result<(Self, bool)> {
        let mut map = storage.map(path, 0)?;
        let trusted = decode_correlation_header(map.bytes()).is_ok_and(|h| h.clean);
        let mut table = match CorrelationTable::open(MappedBytes(map)) {
            Ok(table) if trusted => table,
            Ok(CorrelationTable { bytes, .. }) => Self::formatted(bytes, inbox_start)?,
            Err(_) => {
                map = storage.map(path, 0)?;
                Self::formatted(MappedBytes(map), inbox_start)?
            }
        };
        let through = table.header().indexed_through.max(inbox_start);
        table.set_progress(through, false);
        table.bytes.0.sync()?;
        Ok((CorrelationIndex { table }, trusted))
    }

    fn formatted(mut bytes: MappedBytes, inbox_start: u64) -> io::Result<CorrelationTable<MappedBytes>> {
        bytes
            .0
            .set_len(CorrelationTable::<MappedBytes>::bytes_for(MIN_CAPACITY) as u64)?;
        Ok(CorrelationTable::format(bytes, MIN_CAPACITY, inbox_start))
    }

    pub(crate) fn indexed_through(&self) -> u64 {
        self.table.header().indexed_through
    }

    /// Adds an entry, growing (and dropping entries below `inbox_start`) first if needed.
    pub(crate) fn insert(&mut self, id: u128, offset: u64, inbox_start: u64) -> io::Result<()> {
        if self.table.is_full() {
            self.grow(inbox_start)?;
        }
        if id != 0 && !self.table.insert(id, offset) {
            // Slots taken beyond the count: a damaged file. Rebuilding
            // makes the count true again, so the entry then fits.
            self.grow(inbox_start)?;
            self.table.insert(id, offset);
        }
        Ok(())
    }

    fn grow(&mut self, inbox_start: u64) -> io::Result<()> {
        let live: Vec<(u128, u64)> = self
            .table
            .entries()
            .into_iter()
            .filter(|(_, offset)| *offset >= inbox_start)
            .collect();
        let mut capacity = self.table.header().capacity;
        while (live.len() as u64 + 1) * 4 > capacity && capacity < MAX_CAPACITY {
            capacity *= 2;
        }
        let through = self.table.header().indexed_through;
        self.table
            .bytes
            .0
            .set_len(CorrelationTable::<MappedBytes>::bytes_for(capacity) as u64)?;
        self.table.reset(capacity, through);
        for (id, offset) in live {
            self.table.insert(id, offset);
        }
        Ok(())
    }

    pub(crate) fn set_indexed_through(&mut self, offset: u64) {
        self.table.set_progress(offset, false);
    }

    pub(crate) fn find(&self, id: u128) -> Vec<u64> {
        self.table.find(id)
    }

    /// Syncs the table and marks it clean, so the next open trusts it.
    pub(crate) fn close(&mut self) -> io::Result<()> {
        self.table.bytes.0.sync()?;
        let through = self.indexed_through();
        self.table.set_progress(through, true);
        self.table.bytes.0.sync()
    }
}
