//! Records: [`Record`] is what callers append (borrowed, zero-copy on the
//! write path); [`StoredRecord`] is what reads return (the frame read from
//! disk, shared without copying, and where its fields lie in it).

use std::ops::Range;

use bytes::Bytes;

use crate::format::{FRAME_HEADER_LEN, FrameView, HeaderIter, encoded_len};

/// The header [`Record::id`] sets: a publisher's id for the record, by
/// which a topic recognizes the same record published again.
pub const MESSAGE_ID: &str = "logbus-message-id";

/// A record to append: value, optional key, headers and timestamp.
///
/// ```
/// use logbus::Record;
/// let record = Record::new(b"payload").key(b"user-7").header("trace", b"42");
/// assert_eq!(record.value(), b"payload");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record<'a> {
    key: &'a [u8],
    headers: Vec<(&'a str, &'a [u8])>,
    value: &'a [u8],
    timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    /// A record holding `value`, with an empty key and no headers.
    pub fn new<V: AsRef<[u8]> + ?Sized>(value: &'a V) -> Self {
        Record {
            value: value.as_ref(),
            ..Record::default()
        }
    }

    /// Sets the key.
    pub fn key<K: AsRef<[u8]> + ?Sized>(mut self, key: &'a K) -> Self {
        self.key = key.as_ref();
        self
    }

    /// Adds a header. Names need not be unique; order is kept.
    pub fn header<V: AsRef<[u8]> + ?Sized>(mut self, name: &'a str, value: &'a V) -> Self {
        self.headers.push((name, value.as_ref()));
        self
    }

    /// Sets the record's id (the header [`MESSAGE_ID`]): publishing a
    /// record with an id that a record of the topic published within its
    /// dedupe window carries appends nothing and returns that record's
    /// offset (see [`crate::TopicOptions::dedupe_window`]). For retrying a
    /// publish whose outcome is unknown (a crash, a lost acknowledgement).
    ///
    /// ```
    /// use logbus::{Bus, BusOptions, Record};
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let bus = Bus::open(dir.path(), BusOptions::default())?;
    /// let orders = bus.topic("orders")?;
    /// let first = orders.publish(&Record::new(b"order 1").id("order-1"))?;
    /// let again = orders.publish(&Record::new(b"order 1").id("order-1"))?;
    /// assert_eq!((first, again, orders.end_offset()), (0, 0, 1));
    /// # Ok(()) }
    /// ```
    pub fn id<V: AsRef<[u8]> + ?Sized>(self, id: &'a V) -> Self {
        self.header(MESSAGE_ID, id)
    }

    /// The id [`Record::id`] set (the first [`MESSAGE_ID`] header).
    pub(crate) fn id_bytes(&self) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(name, _)| *name == MESSAGE_ID)
            .map(|(_, id)| *id)
    }

    /// Sets the timestamp (milliseconds since the Unix epoch). Without it,
    /// the append time is used.
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// The value.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    pub(crate) fn key_bytes(&self) -> &'a [u8] {
        self.key
    }

    pub(crate) fn header_pairs(&self) -> &[(&'a str, &'a [u8])] {
        &self.headers
    }

    pub(crate) fn timestamp_or(&self, now: i64) -> i64 {
        self.timestamp.unwrap_or(now)
    }

    #[cfg(feature = "processes")]
    /// The timestamp [`Record::timestamp`] set, if any.
    pub(crate) fn own_timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// Bytes this record takes on disk, or `None` if a field is too long
    /// for the format.
    pub fn encoded_len(&self) -> Option<usize> {
        encoded_len(self.key, &self.headers, self.value)
    }
}

/// A record read back from a log. Cloning is cheap: the bytes are shared.
///
/// What they are shared with: a buffer the log read them into, or, for
/// records a cursor read from a sealed segment, a read-only mapping of
/// that segment's file. A record (or its [`StoredRecord::value_bytes`])
/// keeps that buffer or mapping alive until the last one is dropped, and
/// a mapping keeps its file's disk space even after retention deleted the
/// segment: copy what you keep for long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The whole frame: one shared buffer per record, however many fields.
    frame: Bytes,
    offset: u64,
    timestamp: i64,
    /// Where the key ends and the headers start (the key starts after the
    /// frame's fixed fields).
    key_end: u32,
    /// Where the headers end and the value starts (the value runs to the
    /// frame's end). Both positions were checked when the frame was
    /// decoded, and fit in `u32` as frames do.
    value_start: u32,
    header_count: u16,
}

impl StoredRecord {
    /// Builds the record from a frame's bytes and their decoded layout:
    /// kept as the few positions the layout follows from, so a record is
    /// small to move.
    #[inline]
    pub(crate) fn from_frame(mut frame: Bytes, view: FrameView) -> Self {
        frame.truncate(view.len);
        StoredRecord {
            frame,
            offset: view.offset,
            timestamp: view.timestamp,
            key_end: view.key.end as u32,
            value_start: view.value.start as u32,
            header_count: view.header_count,
        }
    }

    /// The bytes of one field (the decoder checked that it lies in the frame).
    fn field(&self, range: Range<usize>) -> &[u8] {
        self.frame.get(range).unwrap_or_default()
    }

    #[cfg(feature = "processes")]
    /// The whole frame, as the log stores it (CRC included).
    pub(crate) fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The record's offset in its log.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key (empty if none was set).
    pub fn key(&self) -> &[u8] {
        self.field(FRAME_HEADER_LEN..self.key_end as usize)
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        self.field(self.value_start as usize..self.frame.len())
    }

    /// The value as shared bytes, without copying.
    pub fn value_bytes(&self) -> Bytes {
        self.frame.slice_ref(self.value())
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> HeaderIter<'_> {
        let headers = self.field(self.key_end as usize..self.value_start as usize);
        HeaderIter::new(headers, self.header_count)
    }

    /// The first header named `name`.
    #[inline]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        if self.header_count == 0 {
            return None;
        }
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The id its publisher gave it ([`Record::id`]), if any.
    pub fn id(&self) -> Option<&[u8]> {
        self.header(MESSAGE_ID)
    }
}
