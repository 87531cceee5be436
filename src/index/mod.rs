//! Sparse indexes over a segment: the offset index (`.idx`, relative offset
//! to file position) and the time index (`.tix`, running maximum timestamp
//! to relative offset).
//!
//! Indexes are hints. They are rebuilt from the segment whenever they are
//! missing or fail validation, and every position they yield is checked
//! against the record found there. Searches work on any `&[u8]` of entries,
//! so tests and fuzzers need no mapped file.

mod file;
mod search;

pub(crate) use file::IndexFile;
pub use search::{
    lookup_offset, lookup_time, valid_offset_prefix, valid_time_prefix, validate_offset_entries,
    validate_time_entries,
};
