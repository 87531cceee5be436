//! The batch frame (format version 2): the records of one append under one
//! fixed part and one CRC.
//!
//! ```text
//! 0        4        8                 16                24     26     28       32       36
//! | len u32| crc u32| base_offset u64 | base_ts i64     | attr | 0    | count  | 0      | records ... |
//! ```
//!
//! The fixed part has a record frame's size, and `len` and `crc` mean what
//! they mean there (the CRC covers every byte but itself). `attributes` is
//! [`BATCH_ATTRIBUTE`]; the `u16` after it and the last `u32` are zero;
//! `count` is the number of records, at least 1. Record `i` has offset
//! `base_offset + i`. Each record, back to back up to `len`:
//!
//! ```text
//! | ts_delta varint | key_len varint | header_count varint | value_len varint | key | headers | value |
//! ```
//!
//! Varints are LEB128, at most 10 bytes. `ts_delta` is the record's
//! timestamp minus `base_ts` (wrapping), zigzag-encoded, so records stamped
//! in the same millisecond as the first cost one byte. Headers are laid out
//! as in a record frame. A 100-byte value with no key and no header takes
//! 104 bytes in a batch, against 136 in its own frame.
//!
//! Invariants a decoded batch satisfies: its fixed part's (length range,
//! CRC, reserved fields zero); `count >= 1`; its offsets do not pass
//! `u64::MAX`; exactly `count` records fill the frame; every field of a
//! record lies in the frame and fits its type; header names are UTF-8.
//! Decoding checks all of it before any record is handed out, so iterating
//! a decoded batch ([`batch_record`]) cannot fail.

use super::frame::{
    FRAME_HEADER_LEN, FrameError, FrameView, fields_len, malformed, put_headers, skip_headers,
};
use super::le::{u16_at, u32_at, u64_at};

/// The `attributes` of a batch frame.
pub const BATCH_ATTRIBUTE: u16 = 1;
/// The first format version whose segments may hold batch frames.
pub const BATCH_FORMAT_VERSION: u16 = 2;

/// Most bytes of one LEB128 varint (a `u64`).
const VARINT_MAX_LEN: usize = 10;

/// A decoded batch frame's fixed part, and what its records hold that an
/// index needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView {
    /// Total frame length in bytes.
    pub len: usize,
    /// Offset of the first record.
    pub offset: u64,
    /// Timestamp of the first record; the others are stored as deltas.
    pub timestamp: i64,
    /// Number of records.
    pub count: u32,
    /// The newest timestamp in the batch, and the offset of the first
    /// record that has it.
    pub newest: (i64, u64),
}

/// One record to encode into a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchEntry<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key (empty if none).
    pub key: &'a [u8],
    /// The headers, in order.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The value.
    pub value: &'a [u8],
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Writes `value` as a varint at the start of `out`; the rest of `out`.
#[inline]
fn put_varint(out: &mut [u8], mut value: u64) -> &mut [u8] {
    let mut at = 0;
    while value >= 0x80 {
        out[at] = value as u8 | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    &mut out[at + 1..]
}

/// The varint at `at` in `buf` and where it ends; `None` if it runs past
/// `buf`, is longer than 10 bytes or overflows a `u64`.
#[inline(always)]
fn get_varint(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    match buf.get(at) {
        Some(&byte) if byte < 0x80 => Some((u64::from(byte), at + 1)),
        _ => get_long_varint(buf, at),
    }
}

/// [`get_varint`] for a varint of more than one byte.
#[cold]
fn get_long_varint(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in buf.get(at..)?.iter().take(VARINT_MAX_LEN).enumerate() {
        let bits = u64::from(byte & 0x7f);
        if i == VARINT_MAX_LEN - 1 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte < 0x80 {
            return Some((value, at + i + 1));
        }
    }
    None
}

/// Encoded bytes of one record in a batch whose first record has
/// `base_timestamp`; `None` when a field exceeds what the format can
/// express.
pub fn batch_record_len(base_timestamp: i64, entry: &BatchEntry<'_>) -> Option<usize> {
    let fields = fields_len(entry.key, entry.headers, entry.value)?;
    let lengths = varint_len(zigzag(entry.timestamp.wrapping_sub(base_timestamp)))
        + varint_len(entry.key.len() as u64)
        + varint_len(entry.headers.len() as u64)
        + varint_len(entry.value.len() as u64);
    fields.checked_add(lengths)
}

/// Encodes a batch frame into `frame`, whose length is the frame's:
/// [`FRAME_HEADER_LEN`] plus the [`batch_record_len`] of each entry (the
/// first entry's timestamp is the base), which the caller has checked
/// against its limits. Every byte of `frame` is written. Panics if `frame`
/// has another length or `entries` is empty (bugs in the caller).
pub fn encode_batch_into<'a>(
    frame: &mut [u8],
    base_offset: u64,
    entries: impl ExactSizeIterator<Item = BatchEntry<'a>>,
) {
    let len = frame.len() as u32;
    let count = entries.len() as u32;
    let (fixed, mut rest) = frame.split_at_mut(FRAME_HEADER_LEN);
    let mut base_timestamp = None;
    for entry in entries {
        let base = *base_timestamp.get_or_insert(entry.timestamp);
        rest = put_varint(rest, zigzag(entry.timestamp.wrapping_sub(base)));
        rest = put_varint(rest, entry.key.len() as u64);
        rest = put_varint(rest, entry.headers.len() as u64);
        rest = put_varint(rest, entry.value.len() as u64);
        let (key, after) = rest.split_at_mut(entry.key.len());
        key.copy_from_slice(entry.key);
        let after = put_headers(after, entry.headers);
        let (value, after) = after.split_at_mut(entry.value.len());
        value.copy_from_slice(entry.value);
        rest = after;
    }
    assert!(rest.is_empty(), "a batch frame's length is its records'");
    let base_timestamp = base_timestamp.expect("a batch holds at least one record");
    fixed.fill(0);
    fixed[0..4].copy_from_slice(&len.to_le_bytes());
    fixed[8..16].copy_from_slice(&base_offset.to_le_bytes());
    fixed[16..24].copy_from_slice(&base_timestamp.to_le_bytes());
    fixed[24..26].copy_from_slice(&BATCH_ATTRIBUTE.to_le_bytes());
    fixed[28..32].copy_from_slice(&count.to_le_bytes());
    super::frame::seal_crc(frame);
}

/// Checks the layout of `frame`, a whole frame whose length and CRC were
/// checked and whose attributes are [`BATCH_ATTRIBUTE`]: reserved fields,
/// count, and every record.
pub(super) fn decode_batch(frame: &[u8]) -> Result<BatchView, FrameError> {
    if u16_at(frame, 26) != 0 || u32_at(frame, 32) != 0 {
        return Err(malformed("reserved batch field is not zero"));
    }
    let count = u32_at(frame, 28);
    if count == 0 {
        return Err(malformed("empty batch"));
    }
    let offset = u64_at(frame, 8);
    if offset.checked_add(count.into()).is_none() {
        return Err(malformed("batch offsets pass u64::MAX"));
    }
    let timestamp = u64_at(frame, 16) as i64;
    let mut newest = (timestamp, offset);
    let mut at = FRAME_HEADER_LEN;
    for i in 0..count {
        let record_offset = offset + u64::from(i);
        let (view, next) = batch_record(frame, at, record_offset, timestamp)?;
        if view.timestamp > newest.0 {
            newest = (view.timestamp, record_offset);
        }
        at = next;
    }
    if at != frame.len() {
        return Err(malformed("batch records do not add up to frame length"));
    }
    Ok(BatchView {
        len: frame.len(),
        offset,
        timestamp,
        count,
        newest,
    })
}

/// The record encoded at `at` in the batch frame `frame` (offset `offset`,
/// the batch's base timestamp `base_timestamp`), and where the next one
/// starts. The view's ranges lie in `frame`, and its `len` is where the
/// record ends: a record's bytes are `frame[..len]`, as a record frame's
/// are, its key starting at `key.start`.
#[inline(always)]
pub fn batch_record(
    frame: &[u8],
    at: usize,
    offset: u64,
    base_timestamp: i64,
) -> Result<(FrameView, usize), FrameError> {
    let field = |at| get_varint(frame, at).ok_or_else(|| malformed("batch record overruns frame"));
    let (delta, at) = field(at)?;
    let (key_len, at) = field(at)?;
    let (header_count, at) = field(at)?;
    let (value_len, at) = field(at)?;
    let too_long = |len: u64, max: u32| len > u64::from(max);
    if too_long(key_len, u32::MAX) || too_long(value_len, u32::MAX) || too_long(header_count, u16::MAX.into())
    {
        return Err(malformed("batch record field out of range"));
    }
    let header_count = header_count as u16;
    let key = at..at.saturating_add(key_len as usize);
    let headers_start = key.end;
    if headers_start > frame.len() {
        return Err(malformed("key overruns frame"));
    }
    let headers_end = match header_count {
        0 => headers_start,
        _ => skip_headers(frame, headers_start, header_count)?,
    };
    let value = headers_end..headers_end.saturating_add(value_len as usize);
    if value.end > frame.len() {
        return Err(malformed("value overruns frame"));
    }
    let view = FrameView {
        len: value.end,
        offset,
        timestamp: base_timestamp.wrapping_add(unzigzag(delta)),
        header_count,
        key,
        headers: headers_start..headers_end,
        value: value.clone(),
    };
    Ok((view, value.end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{HeaderIter, SegmentFrame, decode_segment_frame};

    fn encode(base_offset: u64, entries: &[BatchEntry<'_>]) -> Vec<u8> {
        let base = entries[0].timestamp;
        let len = FRAME_HEADER_LEN
            + entries
                .iter()
                .map(|e| batch_record_len(base, e).unwrap())
                .sum::<usize>();
        let mut frame = vec![0xa5; len];
        encode_batch_into(&mut frame, base_offset, entries.iter().copied());
        frame
    }

    #[test]
    fn a_batch_decodes_to_the_records_encoded() {
        let headers: [(&str, &[u8]); 2] = [("trace", b"42"), ("", b"")];
        let entries = [
            BatchEntry {
                timestamp: 1_000,
                key: b"k1",
                headers: &headers,
                value: b"one",
            },
            BatchEntry {
                timestamp: 1_000,
                key: b"",
                headers: &[],
                value: b"",
            },
            BatchEntry {
                timestamp: i64::MIN,
                key: b"",
                headers: &headers[..1],
                value: &[7; 300],
            },
            BatchEntry {
                timestamp: i64::MAX,
                key: b"key",
                headers: &[],
                value: b"last",
            },
        ];
        let frame = encode(40, &entries);
        let Ok(SegmentFrame::Batch(view)) = decode_segment_frame(&frame) else {
            panic!("a batch frame decodes as one");
        };
        assert_eq!(
            (view.len, view.offset, view.timestamp, view.count),
            (frame.len(), 40, 1_000, 4)
        );
        assert_eq!(view.newest, (i64::MAX, 43));
        assert_eq!(SegmentFrame::Batch(view).offsets(), 40..44);
        let mut at = FRAME_HEADER_LEN;
        for (i, entry) in entries.iter().enumerate() {
            let (record, next) = batch_record(&frame, at, 40 + i as u64, view.timestamp).unwrap();
            assert_eq!(record.offset, 40 + i as u64);
            assert_eq!(record.timestamp, entry.timestamp);
            assert_eq!(&frame[record.key.clone()], entry.key);
            assert_eq!(&frame[record.value.clone()], entry.value);
            let read: Vec<_> = HeaderIter::new(&frame[record.headers.clone()], record.header_count).collect();
            assert_eq!(read, entry.headers);
            assert_eq!(record.len, next);
            at = next;
        }
        assert_eq!(at, frame.len());
    }

    #[test]
    fn a_record_of_100_bytes_costs_4_bytes_in_a_batch() {
        let value = [1u8; 100];
        let entry = BatchEntry {
            timestamp: 5,
            key: b"",
            headers: &[],
            value: &value,
        };
        assert_eq!(batch_record_len(5, &entry), Some(104));
    }

    #[test]
    fn damaged_batches_are_rejected_with_a_reason() {
        let entries = [
            BatchEntry {
                timestamp: 1,
                key: b"k",
                headers: &[],
                value: b"v1",
            },
            BatchEntry {
                timestamp: 2,
                key: b"",
                headers: &[("h", b"x")],
                value: b"v2",
            },
        ];
        let frame = encode(0, &entries);
        let mut flipped = frame.clone();
        flipped[FRAME_HEADER_LEN + 2] ^= 0x10;
        assert!(matches!(
            decode_segment_frame(&flipped),
            Err(FrameError::Corrupt(crate::error::CorruptKind::Checksum { .. }))
        ));
        // Valid CRCs over bad layouts: what only a crafted file holds.
        let resealed = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut bad = frame.clone();
            edit(&mut bad);
            let len = bad.len() as u32;
            bad[0..4].copy_from_slice(&len.to_le_bytes());
            super::super::frame::seal_crc(&mut bad);
            decode_segment_frame(&bad)
        };
        let malformed = |result: Result<SegmentFrame, FrameError>| {
            matches!(
                result,
                Err(FrameError::Corrupt(crate::error::CorruptKind::Malformed(_)))
            )
        };
        assert!(malformed(resealed(
            &|f| f[28..32].copy_from_slice(&0u32.to_le_bytes())
        )));
        assert!(malformed(resealed(
            &|f| f[28..32].copy_from_slice(&3u32.to_le_bytes())
        )));
        assert!(malformed(resealed(
            &|f| f[28..32].copy_from_slice(&1u32.to_le_bytes())
        )));
        assert!(malformed(resealed(&|f| f[26] = 1)));
        assert!(malformed(resealed(&|f| f[32] = 1)));
        assert!(malformed(resealed(&|f| f.truncate(f.len() - 1))));
        assert!(malformed(resealed(&|f| f.push(0))));
        // A varint that never ends.
        assert!(malformed(resealed(&|f| f[FRAME_HEADER_LEN..].fill(0xff))));
    }

    #[test]
    fn varints_round_trip_and_reject_overlong_encodings() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = [0u8; VARINT_MAX_LEN];
            let rest = put_varint(&mut buf, value).len();
            let len = VARINT_MAX_LEN - rest;
            assert_eq!(len, varint_len(value));
            assert_eq!(get_varint(&buf, 0), Some((value, len)));
        }
        assert_eq!(get_varint(&[0xff; 10], 0), None);
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], 0),
            None
        );
        assert_eq!(get_varint(&[0x80], 0), None);
        for value in [0, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
    }
}
