//! Pure encoding and decoding of every on-disk structure. No I/O here, so
//! every decoder can be fuzzed on raw bytes. docs/FORMAT.md is the byte-exact
//! description of what these functions read and write.
//!
//! All integers are little-endian. Checksums are CRC-32/IEEE (`crc32fast`).
//! Every decoder treats its input as untrusted: lengths are checked against
//! their limits and against the bytes present before anything is sliced.
//!
//! Public (feature `internals`) for the dump tool, the fuzzers and the
//! tests; without that feature some re-exports below serve only them.

#![cfg_attr(not(feature = "internals"), allow(unused_imports))]

mod batch;
mod checkpoint;
mod frame;
mod header;
mod index_entry;
mod le;
mod segment_header;
mod state;

pub use batch::{
    BATCH_ATTRIBUTE, BATCH_FORMAT_VERSION, BatchEntry, BatchView, batch_record, batch_record_len,
    encode_batch_into,
};
pub use checkpoint::{CHECKPOINT_LEN, CHECKPOINT_MAGIC, Checkpoint, WRITE_LIMIT_UNIT_BYTES};
pub use frame::{
    FRAME_HEADER_LEN, FRAME_MAX_BYTES, FrameError, FrameView, HeaderIter, SegmentFrame, decode_segment_frame,
    encode_frame_into, encoded_len, frame_len,
};
#[cfg(any(
    test,
    feature = "processes",
    feature = "nats",
    feature = "test-util",
    feature = "internals"
))]
pub use frame::{decode_frame, encode_frame};
pub(crate) use header::{check_header, new_header, seal_header};
pub use index_entry::{
    INDEX_HEADER_LEN, IndexKind, OFFSET_ENTRY_LEN, OffsetEntry, TIME_ENTRY_LEN, TimeEntry,
    decode_index_header, encode_index_header,
};
pub use segment_header::{
    FORMAT_VERSION, OLDEST_FORMAT_VERSION, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SegmentHeader,
    decode_segment_header,
};
pub use state::{
    EntryState, Failure, MAX_DELIVERED_RUN, MAX_FAILURES_KEPT, MAX_REASON_BYTES, StateEvent, truncate_utf8,
};
