//! The bodies of the fuzz targets in `fuzz/`, one `pub fn <target>(data)`
//! each, so that the fuzzers and the corpus replay in `tests/fuzz_corpus.rs`
//! run the same code.
//!
//! Two kinds of target (docs/TESTING.md, "Fuzzing"):
//! - decoders fed raw bytes (`frame_decode`, `segment_header`,
//!   `index_entries`, `checkpoint`, `state_event`,
//!   `correlation_index`): each must return a value or an error, never
//!   panic, and whatever decodes must re-encode to the same bytes;
//! - the messages between processes on one bus directory (`wire`,
//!   feature `processes`): requests, answers and hellos decoded from raw
//!   bytes, re-encoding what decodes;
//! - whole logs: `segment_recovery` opens a log over arbitrary file
//!   contents, and `log_ops` runs a sequence of operations with crashes
//!   against a model of the durability contract.
//!
//! Every function panics when the code under test breaks a contract: that
//! is how a fuzzer learns of a bug. Inputs are parsed with `Input`, a byte
//! cursor that reads zeros past the end, so every byte string is a valid
//! input and the core crate needs no fuzzing dependency.

mod correlation;
mod log_ops;
mod recovery;
#[cfg(feature = "processes")]
mod wire;

pub use correlation::correlation_index;
pub use log_ops::{Op, RecordSpec, encode_ops, log_ops};
pub use recovery::{RecoveryInput, SegmentFiles, segment_recovery};
#[cfg(feature = "processes")]
pub use wire::{wire, wire_seeds};

use crate::format::{
    BatchEntry, CHECKPOINT_LEN, Checkpoint, FRAME_HEADER_LEN, FrameError, FrameView, HeaderIter,
    INDEX_HEADER_LEN, IndexKind, MAX_REASON_BYTES, OFFSET_ENTRY_LEN, OffsetEntry, SEGMENT_HEADER_LEN,
    SegmentFrame, StateEvent, TIME_ENTRY_LEN, TimeEntry, decode_frame, decode_index_header,
    decode_segment_frame, decode_segment_header, encode_batch_into, encode_frame_into, encode_index_header,
    encoded_len, frame_len, truncate_utf8,
};
use crate::index::{
    lookup_offset, lookup_time, valid_offset_prefix, valid_time_prefix, validate_offset_entries,
    validate_time_entries,
};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` call it.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_decode", frame_decode),
    ("segment_header", segment_header),
    ("index_entries", index_entries),
    ("checkpoint", checkpoint),
    ("state_event", state_event),
    ("correlation_index", correlation_index),
    ("segment_recovery", segment_recovery),
    ("log_ops", log_ops),
    #[cfg(feature = "processes")]
    ("wire", wire),
];

/// A cursor over fuzz input that never fails: past the end it yields zeros
/// (and empty slices), so any byte string parses.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    /// True once every byte was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let head = self.take(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A little-endian `i64`.
    pub fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }

    /// A little-endian `u128`.
    pub fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.array())
    }
}

/// `format::frame_len`, `decode_segment_frame`, `decode_frame` and
/// `HeaderIter` on raw bytes. A frame that decodes must lie inside the
/// input, its parts (a batch's records' too) must tile it, and encoding
/// its parts must give back the same bytes (so the CRC, the lengths and
/// the header layout were all checked).
pub fn frame_decode(data: &[u8]) {
    let len = frame_len(data);
    let record_frame = decode_frame(data);
    match decode_segment_frame(data) {
        Ok(decoded) => {
            assert_eq!(
                len,
                Ok(decoded.size()),
                "frame_len disagrees with decode_segment_frame"
            );
            let frame = &data[..decoded.size()];
            let mut again = vec![0; frame.len()];
            match &decoded {
                SegmentFrame::Record(view) => {
                    assert_eq!(record_frame.as_ref(), Ok(view), "the two decoders disagree");
                    assert_eq!(view.key.start, FRAME_HEADER_LEN);
                    assert_eq!(view.value.end, view.len);
                    let (key, headers, value) = record_parts(frame, view);
                    assert_eq!(encoded_len(key, &headers, value), Some(view.len));
                    encode_frame_into(&mut again, view.offset, view.timestamp, key, &headers, value);
                }
                SegmentFrame::Batch(batch) => {
                    assert!(record_frame.is_err(), "decode_frame took a batch frame");
                    let records: Vec<FrameView> = decoded.records(frame).collect();
                    assert_eq!(
                        records.len() as u64,
                        decoded.count(),
                        "a decoded batch lost a record"
                    );
                    assert_eq!(records.last().map(|r| r.len), Some(frame.len()));
                    let parts: Vec<_> = records.iter().map(|r| record_parts(frame, r)).collect();
                    let entries =
                        records
                            .iter()
                            .zip(&parts)
                            .map(|(record, (key, headers, value))| BatchEntry {
                                timestamp: record.timestamp,
                                key,
                                headers,
                                value,
                            });
                    let newest =
                        records
                            .iter()
                            .fold((records[0].timestamp, records[0].offset), |newest, r| {
                                match r.timestamp > newest.0 {
                                    true => (r.timestamp, r.offset),
                                    false => newest,
                                }
                            });
                    assert_eq!(batch.newest, newest);
                    encode_batch_into(&mut again, batch.offset, entries);
                }
            }
            assert_eq!(again, frame, "a decoded frame does not re-encode to its bytes");
        }
        Err(FrameError::Incomplete { needed }) => assert!(needed > data.len(), "incomplete but present"),
        Err(FrameError::Corrupt(_)) => {
            assert!(len.is_err() || data.len() >= FRAME_HEADER_LEN);
            assert!(
                record_frame.is_err(),
                "decode_frame took what decode_segment_frame refused"
            );
        }
    }
    // The iterator over unvalidated bytes stops, and never yields more
    // headers than it was told there are.
    let mut input = Input::new(data);
    let count = input.u16();
    let yielded = HeaderIter::new(input.rest(), count)
        .take(usize::from(count) + 1)
        .count();
    assert!(yielded <= usize::from(count));
}

/// A record's key, headers and value.
type RecordParts<'f> = (&'f [u8], Vec<(&'f str, &'f [u8])>, &'f [u8]);

/// The key, headers and value of a decoded record in `frame`; the fields
/// tile the record's bytes and every header reads back.
fn record_parts<'f>(frame: &'f [u8], view: &FrameView) -> RecordParts<'f> {
    assert_eq!(view.key.end, view.headers.start);
    assert_eq!(view.headers.end, view.value.start);
    let headers: Vec<(&str, &[u8])> =
        HeaderIter::new(&frame[view.headers.clone()], view.header_count).collect();
    assert_eq!(
        headers.len(),
        usize::from(view.header_count),
        "a decoded header is unreadable"
    );
    (&frame[view.key.clone()], headers, &frame[view.value.clone()])
}

/// Checks that `encoded`, a header decoded from `read` and encoded again,
/// is `read`: byte for byte if `read` has this build's format version,
/// else but for the version and the CRC over it (an older version is read
/// and written in this one).
fn assert_reencoded(encoded: &[u8], read: &[u8]) {
    if read[8..10] == encoded[8..10] {
        assert_eq!(encoded, read, "a decoded header does not re-encode to its bytes");
    } else {
        assert_eq!(
            (&encoded[..8], &encoded[10..12], &encoded[16..]),
            (&read[..8], &read[10..12], &read[16..]),
            "a decoded header of an older version does not re-encode to its fields"
        );
    }
}

/// `format::decode_segment_header`: a valid header re-encodes to the same
/// 32 bytes; only input shorter than a header is "truncated".
pub fn segment_header(data: &[u8]) {
    match decode_segment_header(data) {
        Ok(header) => assert_eq!(header.encode()[..], data[..SEGMENT_HEADER_LEN]),
        Err(crate::CorruptKind::Truncated { .. }) => assert!(data.len() < SEGMENT_HEADER_LEN),
        Err(_) => assert!(data.len() >= SEGMENT_HEADER_LEN),
    }
}

/// `format::Checkpoint::decode`: a valid checkpoint is consistent and
/// re-encodes to the same 48 bytes.
pub fn checkpoint(data: &[u8]) {
    match Checkpoint::decode(data) {
        Ok(checkpoint) => {
            assert!(checkpoint.end_offset >= checkpoint.base_offset);
            assert_reencoded(&checkpoint.encode(), &data[..CHECKPOINT_LEN]);
        }
        Err(crate::CorruptKind::Truncated { .. }) => assert!(data.len() < CHECKPOINT_LEN),
        Err(_) => assert!(data.len() >= CHECKPOINT_LEN),
    }
}

/// `format::StateEvent::decode`: what decodes re-encodes, and the encoding
/// decodes to the same event (with reasons cut to [`MAX_REASON_BYTES`], as
/// the encoder cuts them); with nothing to cut, to the input's bytes.
pub fn state_event(data: &[u8]) {
    let Ok(event) = StateEvent::decode(data) else {
        return;
    };
    let bytes = event.encode();
    let again = StateEvent::decode(&bytes).expect("an encoded state event decodes");
    let cut = with_reasons_cut(&event);
    assert_eq!(again, cut, "state event changed through encode and decode");
    if cut == event {
        assert_eq!(bytes, data, "state event does not re-encode to its bytes");
    }
}

fn with_reasons_cut(event: &StateEvent) -> StateEvent {
    let cut = |failure: &crate::format::Failure| crate::format::Failure {
        at_ms: failure.at_ms,
        reason: truncate_utf8(&failure.reason, MAX_REASON_BYTES).to_owned(),
    };
    match event {
        StateEvent::Released {
            offset,
            not_before_ms,
            failure,
        } => StateEvent::Released {
            offset: *offset,
            not_before_ms: *not_before_ms,
            failure: cut(failure),
        },
        StateEvent::Snapshot { next_offset, entries } => StateEvent::Snapshot {
            next_offset: *next_offset,
            entries: entries
                .iter()
                .map(|entry| crate::format::EntryState {
                    failures: entry.failures.iter().map(cut).collect(),
                    ..entry.clone()
                })
                .collect(),
        },
        other => other.clone(),
    }
}

/// The offset and time index searches and validators on arbitrary entries
/// (the input after a 28-byte parameter block), and `decode_index_header`
/// on the whole input. On entries that pass validation, the binary searches
/// must agree with a linear scan; on any entries they must return an entry
/// that is present, or none.
pub fn index_entries(data: &[u8]) {
    for kind in [IndexKind::Offset, IndexKind::Time] {
        if let Ok(base) = decode_index_header(kind, data) {
            let encoded = encode_index_header(kind, base);
            // Bytes 10..12 are reserved: covered by the CRC but not checked.
            let mut read = data[..INDEX_HEADER_LEN].to_vec();
            read[10..12].copy_from_slice(&encoded[10..12]);
            if data[10..12] == encoded[10..12] {
                assert_reencoded(&encoded, &read);
            } else {
                assert_eq!((&encoded[..8], &encoded[16..]), (&read[..8], &read[16..]));
            }
        }
    }
    let mut input = Input::new(data);
    let relative_offset = input.u32();
    let timestamp = input.i64();
    let segment_len = input.u64();
    let relative_end = input.u64();
    let entries = input.rest();
    check_offset_entries(entries, relative_offset, segment_len, relative_end);
    check_time_entries(entries, timestamp, relative_end);
}

fn check_offset_entries(entries: &[u8], relative_offset: u32, segment_len: u64, relative_end: u64) {
    let all: Vec<OffsetEntry> = entries
        .chunks_exact(OFFSET_ENTRY_LEN)
        .filter_map(OffsetEntry::decode)
        .collect();
    let prefix = valid_offset_prefix(entries, segment_len, relative_end);
    assert!(prefix <= all.len());
    let prefix_bytes = &entries[..prefix * OFFSET_ENTRY_LEN];
    assert_eq!(
        valid_offset_prefix(prefix_bytes, segment_len, relative_end),
        prefix
    );
    let valid = validate_offset_entries(entries, segment_len).is_ok();
    let whole = entries.len().is_multiple_of(OFFSET_ENTRY_LEN);
    assert_eq!(
        valid,
        whole && valid_offset_prefix(entries, segment_len, u64::MAX) == all.len()
    );
    let found = lookup_offset(entries, relative_offset);
    assert!(
        found.is_none_or(|e| all.contains(&e)),
        "lookup_offset made up an entry"
    );
    if valid {
        let linear = all.iter().rev().find(|e| e.relative_offset <= relative_offset);
        assert_eq!(
            found.as_ref(),
            linear,
            "lookup_offset disagrees with a linear scan"
        );
    }
}

fn check_time_entries(entries: &[u8], timestamp: i64, relative_end: u64) {
    let all: Vec<TimeEntry> = entries
        .chunks_exact(TIME_ENTRY_LEN)
        .filter_map(TimeEntry::decode)
        .collect();
    let prefix = valid_time_prefix(entries, relative_end);
    assert!(prefix <= all.len());
    assert_eq!(
        valid_time_prefix(&entries[..prefix * TIME_ENTRY_LEN], relative_end),
        prefix
    );
    let valid = validate_time_entries(entries).is_ok();
    let whole = entries.len().is_multiple_of(TIME_ENTRY_LEN);
    assert_eq!(valid, whole && valid_time_prefix(entries, u64::MAX) == all.len());
    let found = lookup_time(entries, timestamp);
    assert!(
        found.is_none_or(|e| all.contains(&e)),
        "lookup_time made up an entry"
    );
    if valid {
        let linear = all.iter().rev().find(|e| e.timestamp < timestamp);
        assert_eq!(found.as_ref(), linear, "lookup_time disagrees with a linear scan");
    }
}
