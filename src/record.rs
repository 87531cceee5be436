//! Records: [`Record`] is what callers append (borrowed, zero-copy on the
//! write path); [`StoredRecord`] is what reads return (the frame read from
//! disk, shared without copying, and where its fields lie in it), and
//! [`RecordRef`] the same borrowed from a reader that hands out records
//! without sharing them.

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

/// Where a stored record's fields lie in its bytes: kept as the few
/// positions the layout follows from, so a record is small to move. The
/// positions were checked when the frame was decoded, and fit in `u32` as
/// frames do. A record's bytes are its own record frame, whole (the wire
/// sends it as it is), or, for a record of a batch frame, its key, headers
/// and value alone: a record never keeps the rest of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    offset: u64,
    timestamp: i64,
    /// Where the key starts: after the fixed fields in a record frame
    /// ([`FRAME_HEADER_LEN`]), at 0 in a record of a batch.
    key_start: u32,
    /// Where the key ends and the headers start.
    key_end: u32,
    /// Where the headers end and the value starts (the value runs to the
    /// bytes' end).
    value_start: u32,
    header_count: u16,
}

impl Layout {
    /// The layout of `view`, a record frame's or a batch record's (see
    /// `format::batch_record`), and the range of the frame's bytes the
    /// record keeps. A record of a batch is told by where its key starts:
    /// never right after the fixed fields, as in a record frame, since its
    /// lengths come first.
    fn of(view: &FrameView) -> (Layout, Range<usize>) {
        let start = match view.key.start {
            FRAME_HEADER_LEN => 0,
            key_start => key_start,
        };
        let at = |position: usize| (position - start) as u32;
        let layout = Layout {
            offset: view.offset,
            timestamp: view.timestamp,
            key_start: at(view.key.start),
            key_end: at(view.key.end),
            value_start: at(view.value.start),
            header_count: view.header_count,
        };
        (layout, start..view.len)
    }

    /// The bytes of one field of `frame` (the decoder checked that it lies
    /// in the frame).
    fn field(frame: &[u8], range: Range<usize>) -> &[u8] {
        frame.get(range).unwrap_or_default()
    }

    fn key<'f>(&self, frame: &'f [u8]) -> &'f [u8] {
        Layout::field(frame, self.key_start as usize..self.key_end as usize)
    }

    fn value<'f>(&self, frame: &'f [u8]) -> &'f [u8] {
        Layout::field(frame, self.value_start as usize..frame.len())
    }

    fn headers<'f>(&self, frame: &'f [u8]) -> HeaderIter<'f> {
        let headers = Layout::field(frame, self.key_end as usize..self.value_start as usize);
        HeaderIter::new(headers, self.header_count)
    }

    #[inline]
    fn header<'f>(&self, frame: &'f [u8], name: &str) -> Option<&'f [u8]> {
        if self.header_count == 0 {
            return None;
        }
        self.headers(frame).value_of(name)
    }
}

/// A record read back from a log. Cloning is cheap: the bytes are shared.
///
/// What they are shared with: a buffer the log read them into, or, for
/// records a cursor read from a sealed segment, a read-only mapping of
/// that segment's file, or from the segment being appended to, the
/// mapping it is written through. A record (or its
/// [`StoredRecord::value_bytes`]) keeps that buffer or mapping alive until
/// the last one is dropped, and a mapping keeps its file's disk space even
/// after retention deleted the segment: copy what you keep for long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's bytes (see [`Layout`]): one shared buffer per record,
    /// however many fields.
    frame: Bytes,
    layout: Layout,
}

impl StoredRecord {
    /// Builds the record from a frame's bytes and their decoded layout.
    #[inline]
    pub(crate) fn from_frame(frame: Bytes, view: FrameView) -> Self {
        let (layout, kept) = Layout::of(&view);
        StoredRecord {
            frame: frame.slice(kept),
            layout,
        }
    }

    #[cfg(feature = "processes")]
    /// The record as a record frame (CRC included): the one the log stores
    /// when it has its own, else (a record of a batch frame) one encoded
    /// from its fields.
    pub(crate) fn frame(&self) -> Bytes {
        if self.layout.key_start as usize == FRAME_HEADER_LEN {
            return self.frame.clone();
        }
        let headers: Vec<(&str, &[u8])> = self.headers().collect();
        let mut frame = Vec::new();
        crate::format::encode_frame(
            &mut frame,
            self.offset(),
            self.timestamp(),
            self.key(),
            &headers,
            self.value(),
        );
        Bytes::from(frame)
    }

    /// The record's offset in its log.
    pub fn offset(&self) -> u64 {
        self.layout.offset
    }

    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.layout.timestamp
    }

    /// The key (empty if none was set).
    pub fn key(&self) -> &[u8] {
        self.layout.key(&self.frame)
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        self.layout.value(&self.frame)
    }

    /// The value as shared bytes, without copying.
    pub fn value_bytes(&self) -> Bytes {
        self.frame.slice_ref(self.value())
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> HeaderIter<'_> {
        self.layout.headers(&self.frame)
    }

    /// Whether the record carries any header.
    #[inline]
    pub(crate) fn has_headers(&self) -> bool {
        self.layout.header_count > 0
    }

    /// The first header named `name`.
    #[inline]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.layout.header(&self.frame, name)
    }

    /// The id its publisher gave it ([`Record::id`]), if any.
    pub fn id(&self) -> Option<&[u8]> {
        self.header(MESSAGE_ID)
    }
}

/// A record read back from a log, borrowed from the reader
/// ([`Cursor::next_ref`](crate::Cursor::next_ref)): the same fields as a
/// [`StoredRecord`], read where the log buffered or mapped them, with no
/// reference count to take and drop; valid until the reader moves on.
/// [`RecordRef::to_stored`] copies one to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    frame: &'a [u8],
    layout: Layout,
}

impl<'a> RecordRef<'a> {
    /// The record in `frame`, a frame with `view` its decoded layout.
    #[inline]
    pub(crate) fn from_frame(frame: &'a [u8], view: FrameView) -> Self {
        let (layout, kept) = Layout::of(&view);
        RecordRef {
            frame: frame.get(kept).unwrap_or_default(),
            layout,
        }
    }

    /// The record's offset in its log.
    pub fn offset(&self) -> u64 {
        self.layout.offset
    }

    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.layout.timestamp
    }

    /// The key (empty if none was set).
    pub fn key(&self) -> &'a [u8] {
        self.layout.key(self.frame)
    }

    /// The value.
    pub fn value(&self) -> &'a [u8] {
        self.layout.value(self.frame)
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> HeaderIter<'a> {
        self.layout.headers(self.frame)
    }

    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.layout.header(self.frame, name)
    }

    /// The record, copied out of the reader's buffer to keep.
    pub fn to_stored(&self) -> StoredRecord {
        StoredRecord {
            frame: Bytes::copy_from_slice(self.frame),
            layout: self.layout,
        }
    }
}
