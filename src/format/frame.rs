//! The record frame.
//!
//! ```text
//! 0        4        8                16               24     26     28       32       36
//! | len u32| crc u32| offset u64     | timestamp i64  |attr  |hdrs  |key_len |val_len | key | headers | value |
//! ```
//!
//! `len` counts the whole frame, itself included. `crc` is CRC-32/IEEE over
//! bytes `0..4` followed by bytes `8..len`: every byte but itself. Each header
//! is `name_len u16 | value_len u32 | name (UTF-8) | value`.
//!
//! Invariants a decoded frame satisfies: `FRAME_HEADER_LEN <= len <=
//! FRAME_MAX_BYTES`; the fixed fields, key, headers and value fill `len`
//! exactly; header names are UTF-8; `attributes == 0`. An all-zero region
//! never decodes (its `len` is 0), so a zero-filled hole after a crash is
//! never mistaken for a record.

use std::ops::Range;

use super::batch::{BATCH_ATTRIBUTE, BatchView, batch_record, decode_batch};
use super::le::{u16_at, u32_at, u64_at};
use crate::error::CorruptKind;

/// Bytes of the fixed part of a frame.
pub const FRAME_HEADER_LEN: usize = 36;
/// Hard upper bound on one frame, whatever the options say. Checked before
/// any allocation, so a crafted length cannot make a reader allocate more.
pub const FRAME_MAX_BYTES: usize = 256 << 20;

/// Bytes of a header entry before its name and value.
const HEADER_ENTRY_FIXED: usize = 6;

/// Why bytes did not decode as a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before the frame does; `needed` bytes are required.
    Incomplete {
        /// Total bytes the frame needs from its start.
        needed: usize,
    },
    /// The bytes are not a valid frame.
    Corrupt(CorruptKind),
}

/// Where each part of a decoded frame lies in the decoded buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameView {
    /// Total frame length in bytes.
    pub len: usize,
    /// Absolute offset of the record.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Number of headers.
    pub header_count: u16,
    /// Byte range of the key.
    pub key: Range<usize>,
    /// Byte range of the encoded headers.
    pub headers: Range<usize>,
    /// Byte range of the value.
    pub value: Range<usize>,
}

/// Encoded frame length of a record, or `None` when a field exceeds what the
/// format can express.
pub fn encoded_len(key: &[u8], headers: &[(&str, &[u8])], value: &[u8]) -> Option<usize> {
    FRAME_HEADER_LEN.checked_add(fields_len(key, headers, value)?)
}

/// Bytes of a record's key, header entries and value, laid out as both
/// frame kinds lay them out, or `None` when a field exceeds what the format
/// can express.
pub(super) fn fields_len(key: &[u8], headers: &[(&str, &[u8])], value: &[u8]) -> Option<usize> {
    if key.len() > u32::MAX as usize || value.len() > u32::MAX as usize {
        return None;
    }
    if headers.len() > u16::MAX as usize {
        return None;
    }
    let mut len = key.len() + value.len();
    for (name, value) in headers {
        if name.len() > u16::MAX as usize || value.len() > u32::MAX as usize {
            return None;
        }
        len = len.checked_add(HEADER_ENTRY_FIXED + name.len() + value.len())?;
    }
    Some(len)
}

/// Appends one frame to `out`. The caller has checked `encoded_len` against
/// its limits; this function only encodes. For the wire and NATS codecs,
/// the fuzz bodies and the tests; the log encodes a batch in place
/// ([`encode_frame_into`]).
#[cfg(any(
    test,
    feature = "processes",
    feature = "nats",
    feature = "test-util",
    feature = "internals"
))]
pub fn encode_frame(
    out: &mut Vec<u8>,
    offset: u64,
    timestamp: i64,
    key: &[u8],
    headers: &[(&str, &[u8])],
    value: &[u8],
) {
    let start = out.len();
    let len = encoded_len(key, headers, value).unwrap_or(0);
    out.resize(start + len, 0);
    encode_frame_into(&mut out[start..], offset, timestamp, key, headers, value);
}

/// Encodes one frame into `frame`, whose length is the frame's: the
/// `encoded_len` of its fields, which the caller has checked against its
/// limits. Every byte of `frame` is written, so it may hold anything
/// before. Panics if `frame` has another length (a bug in the caller).
#[inline]
pub fn encode_frame_into(
    frame: &mut [u8],
    offset: u64,
    timestamp: i64,
    key: &[u8],
    headers: &[(&str, &[u8])],
    value: &[u8],
) {
    let len = frame.len() as u32;
    let (fixed, mut rest) = frame.split_at_mut(FRAME_HEADER_LEN);
    let mut fields = [0u8; FRAME_HEADER_LEN];
    fields[0..4].copy_from_slice(&len.to_le_bytes());
    fields[8..16].copy_from_slice(&offset.to_le_bytes());
    fields[16..24].copy_from_slice(&timestamp.to_le_bytes());
    fields[26..28].copy_from_slice(&(headers.len() as u16).to_le_bytes());
    fields[28..32].copy_from_slice(&(key.len() as u32).to_le_bytes());
    fields[32..36].copy_from_slice(&(value.len() as u32).to_le_bytes());
    fixed.copy_from_slice(&fields);
    if !key.is_empty() {
        rest = put(rest, key);
    }
    rest = put_headers(rest, headers);
    rest.copy_from_slice(value);
    seal_crc(frame);
}

/// Writes `headers` as header entries at the start of `out`; the rest of
/// `out`.
#[inline]
pub(super) fn put_headers<'a>(mut out: &'a mut [u8], headers: &[(&str, &[u8])]) -> &'a mut [u8] {
    for (name, value) in headers {
        let mut entry = [0u8; HEADER_ENTRY_FIXED];
        entry[0..2].copy_from_slice(&(name.len() as u16).to_le_bytes());
        entry[2..6].copy_from_slice(&(value.len() as u32).to_le_bytes());
        out = put(out, &entry);
        out = put(out, name.as_bytes());
        out = put(out, value);
    }
    out
}

/// Computes the CRC of `frame`, whose every field but the CRC is written,
/// and stores it. The CRC covers bytes `0..4`, then `8..`: with the length
/// copied into the CRC's field first, that is one run of bytes from 4 on.
#[inline]
pub(super) fn seal_crc(frame: &mut [u8]) {
    frame.copy_within(0..4, 4);
    let mut hasher = new_hasher();
    hasher.update(&frame[4..]);
    frame[4..8].copy_from_slice(&hasher.finalize().to_le_bytes());
}

/// Copies `bytes` to the start of `out`; the rest of `out`.
#[inline]
fn put<'a>(out: &'a mut [u8], bytes: &[u8]) -> &'a mut [u8] {
    let (head, rest) = out.split_at_mut(bytes.len());
    head.copy_from_slice(bytes);
    rest
}

/// A fresh CRC-32 hasher. `Hasher::new` detects the CPU's features each
/// time; a copy of one made once does not.
#[inline]
fn new_hasher() -> crc32fast::Hasher {
    static NEW_HASHER: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    NEW_HASHER.get_or_init(crc32fast::Hasher::new).clone()
}

/// The CRC of `frame`: its bytes `0..4`, then `8..`.
#[inline]
fn frame_crc(frame: &[u8]) -> u32 {
    let mut hasher = new_hasher();
    hasher.update(&frame[0..4]);
    hasher.update(&frame[8..]);
    hasher.finalize()
}

/// Reads and range-checks the length field at the start of `buf`.
#[inline]
pub fn frame_len(buf: &[u8]) -> Result<usize, FrameError> {
    let Some(len_bytes) = buf.get(0..4) else {
        return Err(FrameError::Incomplete { needed: 4 });
    };
    let len = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default()) as usize;
    if len == 0 {
        return Err(FrameError::Corrupt(CorruptKind::ZeroFill));
    }
    if !(FRAME_HEADER_LEN..=FRAME_MAX_BYTES).contains(&len) {
        return Err(FrameError::Corrupt(CorruptKind::LengthOutOfRange(len as u64)));
    }
    Ok(len)
}

/// A frame of a segment: one record's, or a batch of records
/// (`batch.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentFrame {
    /// A record frame.
    Record(FrameView),
    /// A batch frame (format version 2).
    Batch(BatchView),
}

impl SegmentFrame {
    /// Total frame length in bytes.
    pub fn size(&self) -> usize {
        match self {
            SegmentFrame::Record(view) => view.len,
            SegmentFrame::Batch(view) => view.len,
        }
    }

    /// The offset of the frame's first record.
    pub fn offset(&self) -> u64 {
        match self {
            SegmentFrame::Record(view) => view.offset,
            SegmentFrame::Batch(view) => view.offset,
        }
    }

    /// The number of records in the frame.
    pub fn count(&self) -> u64 {
        match self {
            SegmentFrame::Record(_) => 1,
            SegmentFrame::Batch(view) => view.count.into(),
        }
    }

    /// The offsets of the frame's records (cut at `u64::MAX`).
    pub fn offsets(&self) -> Range<u64> {
        let first = self.offset();
        first..first.saturating_add(self.count())
    }

    /// The newest timestamp among the frame's records, and the offset of
    /// the first record that has it.
    pub fn newest(&self) -> (i64, u64) {
        match self {
            SegmentFrame::Record(view) => (view.timestamp, view.offset),
            SegmentFrame::Batch(view) => view.newest,
        }
    }

    /// The layouts of the frame's records in `frame`, the bytes it was
    /// decoded from: a record frame's own, or each record of a batch (see
    /// [`batch_record`]: a record's bytes are `frame[..len]`).
    pub fn records<'f>(&self, frame: &'f [u8]) -> impl Iterator<Item = FrameView> + 'f {
        let (mut single, batch) = match self {
            SegmentFrame::Record(view) => (Some(view.clone()), None),
            SegmentFrame::Batch(view) => (None, Some(*view)),
        };
        let mut at = FRAME_HEADER_LEN;
        let mut offsets = self.offsets();
        std::iter::from_fn(move || {
            if let Some(view) = single.take() {
                return Some(view);
            }
            let batch = batch?;
            // A decoded batch's records all decode: no error is lost here.
            let (record, next) = batch_record(frame, at, offsets.next()?, batch.timestamp).ok()?;
            at = next;
            Some(record)
        })
    }
}

/// Decodes the frame of either kind at the start of `buf`, checking its
/// CRC and layout (a batch's records included).
#[inline]
pub fn decode_segment_frame(buf: &[u8]) -> Result<SegmentFrame, FrameError> {
    let frame = checked_frame(buf)?;
    match u16_at(frame, 24) {
        0 => record_layout(frame).map(SegmentFrame::Record),
        BATCH_ATTRIBUTE => decode_batch(frame).map(SegmentFrame::Batch),
        _ => Err(malformed("unknown attribute bits")),
    }
}

/// Decodes the record frame at the start of `buf`, checking its CRC and
/// layout. A batch frame is refused here (`unknown attribute bits`): this
/// is the decoder of frames that hold one record, as the wire carries
/// (and the fuzz bodies and the tests).
#[cfg(any(
    test,
    feature = "processes",
    feature = "nats",
    feature = "test-util",
    feature = "internals"
))]
#[inline]
pub fn decode_frame(buf: &[u8]) -> Result<FrameView, FrameError> {
    let frame = checked_frame(buf)?;
    if u16_at(frame, 24) != 0 {
        return Err(malformed("unknown attribute bits"));
    }
    record_layout(frame)
}

/// The frame at the start of `buf`, its length and CRC checked.
#[inline(always)]
fn checked_frame(buf: &[u8]) -> Result<&[u8], FrameError> {
    let len = frame_len(buf)?;
    if buf.len() < len {
        return Err(FrameError::Incomplete { needed: len });
    }
    let frame = &buf[..len];
    let stored = u32_at(frame, 4);
    let computed = frame_crc(frame);
    if stored != computed {
        return Err(FrameError::Corrupt(CorruptKind::Checksum { stored, computed }));
    }
    Ok(frame)
}

/// The layout of `frame`, a whole record frame whose length and CRC were
/// checked.
#[inline(always)]
fn record_layout(frame: &[u8]) -> Result<FrameView, FrameError> {
    let len = frame.len();
    let header_count = u16_at(frame, 26);
    let key_len = u32_at(frame, 28) as usize;
    let value_len = u32_at(frame, 32) as usize;
    let key = FRAME_HEADER_LEN..FRAME_HEADER_LEN.saturating_add(key_len);
    if key.end > len {
        return Err(malformed("key overruns frame"));
    }
    let headers_end = match header_count {
        0 => key.end,
        _ => skip_headers(frame, key.end, header_count)?,
    };
    let value = headers_end..headers_end.saturating_add(value_len);
    if value.end != len {
        return Err(malformed("field lengths do not add up to frame length"));
    }
    Ok(FrameView {
        len,
        offset: u64_at(frame, 8),
        timestamp: u64_at(frame, 16) as i64,
        header_count,
        key: key.clone(),
        headers: key.end..headers_end,
        value,
    })
}

/// Validates `count` headers starting at `start`; returns where they end.
pub(super) fn skip_headers(frame: &[u8], start: usize, count: u16) -> Result<usize, FrameError> {
    let mut iter = HeaderIter::new(&frame[start..], count);
    for _ in 0..count {
        match iter.next_checked() {
            Some(Ok(_)) => {}
            Some(Err(reason)) => return Err(malformed(reason)),
            None => return Err(malformed("missing header")),
        }
    }
    Ok(start + iter.consumed)
}

pub(super) fn malformed(reason: &'static str) -> FrameError {
    FrameError::Corrupt(CorruptKind::Malformed(reason))
}

/// A header's name and value, the name not checked to be UTF-8.
type RawHeader<'a> = (&'a [u8], &'a [u8]);

/// Iterates the headers of a decoded frame as `(name, value)` pairs.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    remaining: u16,
    consumed: usize,
}

impl<'a> HeaderIter<'a> {
    /// Iterates `count` headers encoded at the start of `buf`.
    pub fn new(buf: &'a [u8], count: u16) -> Self {
        HeaderIter {
            buf,
            remaining: count,
            consumed: 0,
        }
    }

    fn next_checked(&mut self) -> Option<Result<(&'a str, &'a [u8]), &'static str>> {
        Some(
            self.next_raw()?
                .and_then(|(name, value)| match std::str::from_utf8(name) {
                    Ok(name) => Ok((name, value)),
                    Err(_) => Err("header name is not UTF-8"),
                }),
        )
    }

    /// The next header, its name as bytes (not checked to be UTF-8).
    #[inline]
    fn next_raw(&mut self) -> Option<Result<RawHeader<'a>, &'static str>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let rest = &self.buf[self.consumed..];
        if rest.len() < HEADER_ENTRY_FIXED {
            return Some(Err("header overruns frame"));
        }
        let name_len = u16_at(rest, 0) as usize;
        let value_len = u32_at(rest, 2) as usize;
        let name_end = HEADER_ENTRY_FIXED + name_len;
        let Some(value_end) = name_end.checked_add(value_len).filter(|&e| e <= rest.len()) else {
            return Some(Err("header overruns frame"));
        };
        self.consumed += value_end;
        Some(Ok((
            &rest[HEADER_ENTRY_FIXED..name_end],
            &rest[name_end..value_end],
        )))
    }

    /// The value of the first of the remaining headers named `name`: the
    /// names compared as bytes, none decoded as text.
    #[inline]
    pub(crate) fn value_of(mut self, name: &str) -> Option<&'a [u8]> {
        while let Some(Ok((found, value))) = self.next_raw() {
            if found == name.as_bytes() {
                return Some(value);
            }
        }
        None
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Frames are validated when decoded, so an error here means the
        // caller built the iterator over unvalidated bytes: stop.
        self.next_checked()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_encoded_over_old_bytes_is_the_frame_encoded_afresh() {
        let headers: [(&str, &[u8]); 2] = [("trace", b"42"), ("", b"")];
        for (key, headers, value) in [
            (&b"user-7"[..], &headers[..], &b"hello"[..]),
            (b"", &[], b""),
            (b"", &headers[..1], &[9; 300][..]),
        ] {
            let mut fresh = Vec::new();
            encode_frame(&mut fresh, 7, -3, key, headers, value);
            let mut reused = vec![0xa5; fresh.len()];
            encode_frame_into(&mut reused, 7, -3, key, headers, value);
            assert_eq!(reused, fresh);
            let view = decode_frame(&reused).unwrap();
            assert_eq!((view.offset, view.timestamp), (7, -3));
            assert_eq!(&reused[view.value], value);
        }
    }
}
