//! An index file: header plus `used` entries, mapped through the storage
//! seam. While a segment is active the file is preallocated beyond `used`
//! and the tail is ignored; sealing trims it to exactly `used` entries.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::CorruptKind;
use crate::format::{INDEX_HEADER_LEN, IndexKind, decode_index_header, encode_index_header};
use crate::io::{MappedFile, Storage};

#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    kind: IndexKind,
    map: Box<dyn MappedFile>,
    used: usize,
}

impl IndexFile {
    /// Maps an existing index (or an empty new file) as it is; the entries
    /// are whatever the file's length holds. Call [`Self::validate`] before
    /// trusting them.
    pub(crate) fn open(storage: &dyn Storage, path: &Path, kind: IndexKind) -> io::Result<Self> {
        let map = storage.map(path, 0)?;
        let used = map.bytes().len().saturating_sub(INDEX_HEADER_LEN) / kind.entry_len();
        Ok(IndexFile {
            path: path.to_path_buf(),
            kind,
            map,
            used,
        })
    }

    /// Checks the header against `base_offset` and the length against the
    /// entry size. Entry contents are checked by the caller.
    pub(crate) fn validate(&self, base_offset: u64) -> Result<(), CorruptKind> {
        let bytes = self.map.bytes();
        let found = decode_index_header(self.kind, bytes)?;
        if found != base_offset {
            return Err(CorruptKind::OffsetMismatch {
                expected: base_offset,
                found,
            });
        }
        if !(bytes.len() - INDEX_HEADER_LEN).is_multiple_of(self.kind.entry_len()) {
            return Err(CorruptKind::Malformed(
                "index length is not a whole number of entries",
            ));
        }
        Ok(())
    }

    /// Empties the index and writes a fresh header, keeping room for at
    /// least `capacity` entries.
    pub(crate) fn reset(&mut self, base_offset: u64, capacity: usize) -> io::Result<()> {
        self.used = 0;
        self.reserve(capacity)?;
        let header = encode_index_header(self.kind, base_offset);
        self.map.bytes_mut()[..INDEX_HEADER_LEN].copy_from_slice(&header);
        Ok(())
    }

    /// Grows the file so that `capacity` entries fit.
    pub(crate) fn reserve(&mut self, capacity: usize) -> io::Result<()> {
        let needed = INDEX_HEADER_LEN + capacity * self.kind.entry_len();
        if self.map.bytes().len() < needed {
            self.map.set_len(needed as u64)?;
        }
        Ok(())
    }

    /// Appends one encoded entry, growing the file when full.
    pub(crate) fn push(&mut self, entry: &[u8]) -> io::Result<()> {
        debug_assert_eq!(entry.len(), self.kind.entry_len());
        let start = INDEX_HEADER_LEN + self.used * entry.len();
        if self.map.bytes().len() < start + entry.len() {
            self.reserve((self.used + 1) * 2)?;
        }
        self.map.bytes_mut()[start..start + entry.len()].copy_from_slice(entry);
        self.used += 1;
        Ok(())
    }

    /// How many entries are used.
    pub(crate) fn len(&self) -> usize {
        self.used
    }

    /// Forgets every entry after the first `count`.
    pub(crate) fn keep_first(&mut self, count: usize) {
        self.used = self.used.min(count);
    }

    /// The used entries, raw.
    pub(crate) fn entries(&self) -> &[u8] {
        let end = INDEX_HEADER_LEN + self.used * self.kind.entry_len();
        self.map.bytes().get(INDEX_HEADER_LEN..end).unwrap_or(&[])
    }

    /// The last used entry, raw.
    pub(crate) fn last(&self) -> Option<&[u8]> {
        let len = self.kind.entry_len();
        let entries = self.entries();
        entries.len().checked_sub(len).map(|start| &entries[start..])
    }

    /// Makes the entries written so far durable (without trimming).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.map.sync()
    }

    /// Trims the file to its used entries (durable once synced).
    pub(crate) fn trim(&mut self) -> io::Result<()> {
        let len = INDEX_HEADER_LEN + self.used * self.kind.entry_len();
        self.map.set_len(len as u64)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
