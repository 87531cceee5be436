//! The failed-I/O latch at the seam: [`CheckedStorage`] wraps a log's
//! storage, and its files and maps, so that the first failure which leaves
//! the disk in a state the log no longer knows latches for good. No call
//! site can forget to poison the log: the log asks the wrapper.
//!
//! What latches, and why (after a failed fsync the kernel may have dropped
//! the dirty pages and cleared the error, so a later "successful" sync
//! proves nothing; see the fsync failure studies of 2018–2020):
//!
//! | operation | a failure latches | because |
//! | --- | --- | --- |
//! | `sync_data`, `sync_all`, a map's `sync`, `sync_dir` | always | the bytes or entries it should have made durable may be lost |
//! | `write_all_at`, `set_len` (of a file or a map) | unless the disk is full | the file's bytes or length are unknown; a full disk only cuts a write or growth short (a map's failed growth gives back what it took), which the caller undoes or tolerates |
//! | `preallocate` | never | on failure the length is unchanged (the seam's contract) |
//! | `start_writeback` | never | a hint; a writeback error is reported by the next sync, which latches |
//! | `remove`, `rename` | never | atomic: a failed one leaves the entry as it was |
//! | reads, `size`, `list`, `next_data`, `open`, `map`, `lock`, `create_dir_all`, `prefault_reservations` | never | nothing the log relies on changed |
//!
//! Once latched, every operation that changes files (writes, length
//! changes, syncs, removals, renames) fails at once with the first
//! failure; reads go on, so records acknowledged before it stay readable.
//! Only a new wrapper (reopening the log) clears the latch.
//!
//! One deliberate exception goes around the latch
//! ([`CheckedStorage::unlatched`]): deleting the files of segments that
//! retention already removed, whose failed removal or directory sync is
//! retried instead (`log/retired.rs` says why that is safe).

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::seam::{LockGuard, MappedFile, Storage, StorageFile};

/// The first failure that latched, shared by a storage and its files.
#[derive(Debug, Default)]
struct Latch {
    first: OnceLock<String>,
}

impl Latch {
    /// Fails once latched.
    fn refuse(&self) -> io::Result<()> {
        match self.first.get() {
            Some(cause) => Err(io::Error::other(format!(
                "refused after an earlier failure: {cause}"
            ))),
            None => Ok(()),
        }
    }

    /// Runs an operation that changes files; its failure latches unless
    /// `harmless` says otherwise.
    fn run<T>(
        &self,
        operation: &str,
        harmless: fn(&io::Error) -> bool,
        run: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        self.refuse()?;
        run().inspect_err(|error| {
            if !harmless(error) {
                let _ = self.first.set(format!("{operation} failed: {error}"));
            }
        })
    }
}

fn never_harmless(_: &io::Error) -> bool {
    false
}

fn always_harmless(_: &io::Error) -> bool {
    true
}

/// A full disk (or quota): the write or growth fell short, nothing else.
fn disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// A [`Storage`] that latches on the first failure that leaves the disk in
/// an unknown state (see the module docs). Clones share one latch.
#[derive(Debug, Clone)]
pub(crate) struct CheckedStorage {
    inner: Arc<dyn Storage>,
    latch: Arc<Latch>,
}

impl CheckedStorage {
    /// Wraps `inner` with a fresh latch.
    pub(crate) fn new(inner: Arc<dyn Storage>) -> Self {
        CheckedStorage {
            inner,
            latch: Arc::default(),
        }
    }

    /// The first failure that latched, if any.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.latch.first.get().map(String::as_str)
    }

    /// The storage below, whose failures do not latch: only for work that
    /// is retried rather than trusted (the log's background removal of
    /// retired segments, see `log::maintenance`).
    pub(crate) fn unlatched(&self) -> &dyn Storage {
        self.inner.as_ref()
    }
}

impl Storage for CheckedStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.inner.open(path, create)?;
        Ok(Arc::new(CheckedFile {
            file,
            latch: self.latch.clone(),
        }))
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.open_read_only(path)
    }

    fn map(&self, path: &Path, min_len: u64) -> io::Result<Box<dyn MappedFile>> {
        let map = self.inner.map(path, min_len)?;
        Ok(Box::new(CheckedMap {
            map,
            latch: self.latch.clone(),
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.latch
            .run("remove", always_harmless, || self.inner.remove(path))
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.latch
            .run("remove directory", always_harmless, || self.inner.remove_dir(dir))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.latch
            .run("rename", always_harmless, || self.inner.rename(from, to))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.latch
            .run("directory sync", never_harmless, || self.inner.sync_dir(dir))
    }

    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        self.inner.lock(path)
    }
}

#[derive(Debug)]
struct CheckedFile {
    file: Arc<dyn StorageFile>,
    latch: Arc<Latch>,
}

impl StorageFile for CheckedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.latch
            .run("write", disk_full, || self.file.write_all_at(buf, pos))
    }

    fn size(&self) -> io::Result<u64> {
        self.file.size()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.latch
            .run("length change", disk_full, || self.file.set_len(len))
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        self.latch
            .run("preallocation", always_harmless, || self.file.preallocate(len))
    }

    fn allocate_ahead(&self, len: u64) -> io::Result<()> {
        self.latch.run("allocation ahead", always_harmless, || {
            self.file.allocate_ahead(len)
        })
    }

    fn prefault_reservations(&self, enabled: bool) {
        self.file.prefault_reservations(enabled);
    }

    fn next_data(&self, from: u64) -> io::Result<Option<Range<u64>>> {
        self.file.next_data(from)
    }

    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
        self.latch.run("writeback", always_harmless, || {
            self.file.start_writeback(pos, len)
        })
    }

    fn map_final(&self, len: u64) -> io::Result<Option<Bytes>> {
        self.file.map_final(len)
    }

    fn share_final(&self, len: u64) -> Option<Bytes> {
        self.file.share_final(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.latch
            .run("fdatasync", never_harmless, || self.file.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.latch.run("fsync", never_harmless, || self.file.sync_all())
    }
}

#[derive(Debug)]
struct CheckedMap {
    map: Box<dyn MappedFile>,
    latch: Arc<Latch>,
}

impl MappedFile for CheckedMap {
    fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.bytes_mut()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let map = &mut self.map;
        self.latch
            .run("mapped length change", disk_full, || map.set_len(len))
    }

    fn sync(&self) -> io::Result<()> {
        self.latch.run("mapped sync", never_harmless, || self.map.sync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Fault, SimStorage};

    fn checked_file(sim: &SimStorage) -> (CheckedStorage, Arc<dyn StorageFile>) {
        sim.create_dir_all(Path::new("/d")).unwrap();
        let storage = CheckedStorage::new(Arc::new(sim.clone()));
        let file = storage.open(Path::new("/d/f"), true).unwrap();
        (storage, file)
    }

    #[test]
    fn a_full_disk_does_not_latch_and_the_file_stays_writable() {
        let sim = SimStorage::new();
        let (storage, file) = checked_file(&sim);
        sim.inject(Fault::DiskFull { capacity: 4 });
        assert!(file.write_all_at(b"too long", 0).is_err());
        assert_eq!(storage.failure(), None);
        sim.clear_faults();
        file.set_len(0).unwrap();
        file.write_all_at(b"fits", 0).unwrap();
        file.sync_data().unwrap();
    }

    #[test]
    fn a_failed_write_latches_refuses_every_later_change_and_leaves_reads_alone() {
        let sim = SimStorage::new();
        let (storage, file) = checked_file(&sim);
        file.write_all_at(b"kept", 0).unwrap();
        sim.inject(Fault::WriteError { after: 0 });
        assert!(file.write_all_at(b"lost", 4).is_err());
        let cause = storage.failure().expect("latched").to_owned();
        assert!(cause.starts_with("write failed"), "{cause}");
        assert!(file.write_all_at(b"x", 4).is_err());
        assert!(file.set_len(0).is_err());
        assert!(file.sync_data().is_err());
        assert!(storage.sync_dir(Path::new("/d")).is_err());
        assert!(storage.remove(Path::new("/d/f")).is_err());
        let mut read = [0u8; 4];
        crate::io::read_exact_at(file.as_ref(), &mut read, 0).unwrap();
        assert_eq!(&read, b"kept");
        assert_eq!(
            storage.failure(),
            Some(cause.as_str()),
            "the first failure stays named"
        );
    }

    #[test]
    fn a_failed_removal_does_not_latch() {
        let sim = SimStorage::new();
        let (storage, _file) = checked_file(&sim);
        sim.inject(Fault::RemoveError { after: 0 });
        assert!(storage.remove(Path::new("/d/f")).is_err());
        assert_eq!(storage.failure(), None);
        storage.remove(Path::new("/d/f")).unwrap();
    }
}
