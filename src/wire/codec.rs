//! The primitives every message is built from: little-endian integers,
//! length-prefixed bytes and strings, and the record frame of the log
//! (`format::encode_frame`, CRC included) for records.
//!
//! Invariants: a decoder reads only the bytes it was given, checks every
//! length against what is left before slicing, and fails with
//! [`WireError`] on anything else: it never panics and never allocates more
//! than the message holds.

use std::time::Duration;

use bytes::Bytes;

use crate::format::{decode_frame, encode_frame};
use crate::record::{Record, StoredRecord};

/// Bytes that are not a message of this protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) &'static str);

pub(crate) type Decoded<T> = std::result::Result<T, WireError>;

/// Builds a message.
#[derive(Debug, Default)]
pub(crate) struct Enc {
    pub(crate) buf: Vec<u8>,
}

impl Enc {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u128(&mut self, v: u128) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    pub(crate) fn duration(&mut self, v: Duration) -> &mut Self {
        self.u64(v.as_secs()).u32(v.subsec_nanos())
    }

    pub(crate) fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).u64(v),
            None => self.u8(0),
        }
    }

    pub(crate) fn opt_duration(&mut self, v: Option<Duration>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).duration(v),
            None => self.u8(0),
        }
    }

    pub(crate) fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).str(v),
            None => self.u8(0),
        }
    }

    /// A record to publish: whether it carries its own timestamp, then
    /// its frame.
    pub(crate) fn record(&mut self, record: &OwnedRecord) -> &mut Self {
        self.bool(record.timestamp.is_some()).stored(&record.stored)
    }

    /// A stored record: its frame as the log holds it.
    pub(crate) fn stored(&mut self, record: &StoredRecord) -> &mut Self {
        self.bytes(&record.frame())
    }
}

/// Reads a message; `Bytes` so that records keep sharing its buffer.
#[derive(Debug)]
pub(crate) struct Dec {
    buf: Bytes,
    at: usize,
}

impl Dec {
    pub(crate) fn new(buf: Bytes) -> Self {
        Dec { buf, at: 0 }
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Decoded<()> {
        match self.at == self.buf.len() {
            true => Ok(()),
            false => Err(WireError("trailing bytes after a message")),
        }
    }

    fn take(&mut self, n: usize) -> Decoded<&[u8]> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.buf.len());
        let end = end.ok_or(WireError("message ends early"))?;
        let taken = &self.buf[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Decoded<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn bool(&mut self) -> Decoded<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError("bad boolean")),
        }
    }

    pub(crate) fn u16(&mut self) -> Decoded<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Decoded<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Decoded<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Decoded<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn u128(&mut self) -> Decoded<u128> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// Length-prefixed bytes, shared with the message's buffer.
    pub(crate) fn bytes(&mut self) -> Decoded<Bytes> {
        let len = self.u32()? as usize;
        let start = self.at;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }

    pub(crate) fn string(&mut self) -> Decoded<String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError("string is not UTF-8"))
    }

    pub(crate) fn duration(&mut self) -> Decoded<Duration> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(WireError("bad duration"));
        }
        Ok(Duration::new(secs, nanos))
    }

    pub(crate) fn opt_u64(&mut self) -> Decoded<Option<u64>> {
        self.opt(Dec::u64)
    }

    pub(crate) fn opt_duration(&mut self) -> Decoded<Option<Duration>> {
        self.opt(Dec::duration)
    }

    pub(crate) fn opt_string(&mut self) -> Decoded<Option<String>> {
        self.opt(Dec::string)
    }

    pub(crate) fn opt<T>(&mut self, read: impl FnOnce(&mut Dec) -> Decoded<T>) -> Decoded<Option<T>> {
        match self.bool()? {
            true => read(self).map(Some),
            false => Ok(None),
        }
    }

    /// A count of items that each take at least `min_bytes`: refused if
    /// the message cannot hold that many, so a crafted count allocates
    /// nothing.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Decoded<usize> {
        let count = self.u32()? as usize;
        let left = self.buf.len() - self.at;
        match count.checked_mul(min_bytes.max(1)).is_some_and(|n| n <= left) {
            true => Ok(count),
            false => Err(WireError("count larger than the message")),
        }
    }

    /// A stored record's frame, checked (CRC included).
    pub(crate) fn stored(&mut self) -> Decoded<StoredRecord> {
        let frame = self.bytes()?;
        let view = decode_frame(&frame).map_err(|_| WireError("bad record frame"))?;
        if view.len != frame.len() {
            return Err(WireError("bad record frame"));
        }
        Ok(StoredRecord::from_frame(frame, view))
    }

    /// A record to publish (see [`Enc::record`]).
    pub(crate) fn record(&mut self) -> Decoded<OwnedRecord> {
        let has_timestamp = self.bool()?;
        let stored = self.stored()?;
        Ok(OwnedRecord {
            timestamp: has_timestamp.then_some(stored.timestamp()),
            stored,
        })
    }
}

/// A record to publish, encoded once as a frame (offset 0; timestamp 0
/// when the record has none, the owner then stamps it): what a joined
/// process sends and the owner decodes; [`OwnedRecord::record`] borrows it
/// as the [`Record`] the backend appends.
#[derive(Debug, Clone)]
pub(crate) struct OwnedRecord {
    stored: StoredRecord,
    timestamp: Option<i64>,
}

impl OwnedRecord {
    /// Encodes `record`; `None` if a field is too long for a frame.
    pub(crate) fn new(record: &Record<'_>) -> Option<OwnedRecord> {
        let timestamp = record.own_timestamp();
        let mut frame = Vec::with_capacity(record.encoded_len()?);
        encode_frame(
            &mut frame,
            0,
            timestamp.unwrap_or(0),
            record.key_bytes(),
            record.header_pairs(),
            record.value(),
        );
        let frame = Bytes::from(frame);
        let view = decode_frame(&frame).ok()?;
        Some(OwnedRecord {
            stored: StoredRecord::from_frame(frame, view),
            timestamp,
        })
    }

    pub(crate) fn record(&self) -> Record<'_> {
        let mut record = Record::new(self.stored.value()).key(self.stored.key());
        for (name, value) in self.stored.headers() {
            record = record.header(name, value);
        }
        match self.timestamp {
            Some(timestamp) => record.timestamp(timestamp),
            None => record,
        }
    }
}
