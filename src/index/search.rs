//! Binary search and validation over raw index entries.

use crate::error::CorruptKind;
use crate::format::{OFFSET_ENTRY_LEN, OffsetEntry, SEGMENT_HEADER_LEN, TIME_ENTRY_LEN, TimeEntry};

fn entry_count(entries: &[u8], entry_len: usize) -> usize {
    entries.len() / entry_len
}

fn offset_entry(entries: &[u8], i: usize) -> Option<OffsetEntry> {
    OffsetEntry::decode(entries.get(i * OFFSET_ENTRY_LEN..)?)
}

fn time_entry(entries: &[u8], i: usize) -> Option<TimeEntry> {
    TimeEntry::decode(entries.get(i * TIME_ENTRY_LEN..)?)
}

/// The last entry whose relative offset is at most `relative_offset`.
pub fn lookup_offset(entries: &[u8], relative_offset: u32) -> Option<OffsetEntry> {
    let count = entry_count(entries, OFFSET_ENTRY_LEN);
    let after = partition(count, |i| {
        offset_entry(entries, i).is_some_and(|e| e.relative_offset <= relative_offset)
    });
    after.checked_sub(1).and_then(|i| offset_entry(entries, i))
}

/// The last entry whose timestamp is below `timestamp`: every record up to
/// its offset is older than `timestamp`, so a search may start after it.
pub fn lookup_time(entries: &[u8], timestamp: i64) -> Option<TimeEntry> {
    let count = entry_count(entries, TIME_ENTRY_LEN);
    let after = partition(count, |i| {
        time_entry(entries, i).is_some_and(|e| e.timestamp < timestamp)
    });
    after.checked_sub(1).and_then(|i| time_entry(entries, i))
}

/// Index of the first `i` in `0..count` for which `pred` is false, given
/// that `pred` is true for a prefix.
fn partition(count: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// How many leading offset entries are plausible: strictly increasing
/// offsets and positions, positions in `SEGMENT_HEADER_LEN..position_end`,
/// relative offsets below `relative_end`.
pub fn valid_offset_prefix(entries: &[u8], position_end: u64, relative_end: u64) -> usize {
    let mut previous: Option<OffsetEntry> = None;
    let plausible = entries
        .chunks_exact(OFFSET_ENTRY_LEN)
        .map_while(OffsetEntry::decode)
        .take_while(|entry| {
            let position = u64::from(entry.position);
            let ok = position >= SEGMENT_HEADER_LEN as u64
                && position < position_end
                && u64::from(entry.relative_offset) < relative_end
                && previous.is_none_or(|prev| {
                    entry.relative_offset > prev.relative_offset && entry.position > prev.position
                });
            previous = Some(*entry);
            ok
        });
    plausible.count()
}

/// How many leading time entries are plausible: strictly increasing
/// timestamps, non-decreasing relative offsets below `relative_end`.
pub fn valid_time_prefix(entries: &[u8], relative_end: u64) -> usize {
    let mut previous: Option<TimeEntry> = None;
    let plausible = entries
        .chunks_exact(TIME_ENTRY_LEN)
        .map_while(TimeEntry::decode)
        .take_while(|entry| {
            let ok = u64::from(entry.relative_offset) < relative_end
                && previous.is_none_or(|prev| {
                    entry.timestamp > prev.timestamp && entry.relative_offset >= prev.relative_offset
                });
            previous = Some(*entry);
            ok
        });
    plausible.count()
}

/// Checks offset entries: whole entries, strictly increasing offsets and
/// positions, positions inside `segment_len`.
pub fn validate_offset_entries(entries: &[u8], segment_len: u64) -> Result<(), CorruptKind> {
    if !entries.len().is_multiple_of(OFFSET_ENTRY_LEN) {
        return Err(CorruptKind::Malformed("partial index entry"));
    }
    if valid_offset_prefix(entries, segment_len, u64::MAX) * OFFSET_ENTRY_LEN != entries.len() {
        return Err(CorruptKind::Malformed(
            "index entries not increasing or outside the segment",
        ));
    }
    Ok(())
}

/// Checks time entries: whole entries, strictly increasing timestamps and
/// non-decreasing offsets.
pub fn validate_time_entries(entries: &[u8]) -> Result<(), CorruptKind> {
    if !entries.len().is_multiple_of(TIME_ENTRY_LEN) {
        return Err(CorruptKind::Malformed("partial index entry"));
    }
    if valid_time_prefix(entries, u64::MAX) * TIME_ENTRY_LEN != entries.len() {
        return Err(CorruptKind::Malformed("time index entries not increasing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(u32, u32)]) -> Vec<u8> {
        pairs
            .iter()
            .flat_map(|&(r, p)| {
                OffsetEntry {
                    relative_offset: r,
                    position: p,
                }
                .encode()
            })
            .collect()
    }

    #[test]
    fn offset_lookup_finds_greatest_entry_not_above_target() {
        let entries = offsets(&[(0, 32), (10, 4000), (20, 8100)]);
        assert_eq!(lookup_offset(&entries, 0).map(|e| e.position), Some(32));
        assert_eq!(lookup_offset(&entries, 15).map(|e| e.position), Some(4000));
        assert_eq!(lookup_offset(&entries, 99).map(|e| e.position), Some(8100));
        assert_eq!(lookup_offset(&[], 5), None);
    }

    #[test]
    fn time_lookup_finds_last_entry_strictly_older() {
        let entries: Vec<u8> = [(100i64, 0u32), (200, 5), (300, 9)]
            .iter()
            .flat_map(|&(t, r)| {
                TimeEntry {
                    timestamp: t,
                    relative_offset: r,
                }
                .encode()
            })
            .collect();
        assert_eq!(lookup_time(&entries, 100), None);
        assert_eq!(lookup_time(&entries, 250).map(|e| e.relative_offset), Some(5));
        assert_eq!(lookup_time(&entries, 301).map(|e| e.relative_offset), Some(9));
    }

    #[test]
    fn validation_rejects_decreasing_or_out_of_range_entries() {
        assert!(validate_offset_entries(&offsets(&[(0, 32), (5, 100)]), 200).is_ok());
        assert!(validate_offset_entries(&offsets(&[(5, 32), (5, 100)]), 200).is_err());
        assert!(validate_offset_entries(&offsets(&[(0, 32), (5, 300)]), 200).is_err());
        assert!(validate_offset_entries(&[0; 7], 200).is_err());
    }
}
