//! The storage traits. Kept small on purpose: a new backend (or a new fault)
//! implements a dozen methods, and everything above works unchanged.

use std::any::Any;
use std::fmt::Debug;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// Held for as long as a directory is owned; dropping it releases the lock.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// A file system as logbus needs it.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing, creating it (owner-only) when
    /// `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing `path` for reading only: its writes fail. The
    /// default opens it as [`Storage::open`] does, for backends without
    /// permissions.
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.open(path, false)
    }
    /// Maps `path` (creating it, owner-only) and grows it to at least `min_len`.
    fn map(&self, path: &Path, min_len: u64) -> io::Result<Box<dyn MappedFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Removes the empty directory `dir`. Durable once its parent is
    /// synced with [`Storage::sync_dir`].
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Renames a file or directory; `to` must not exist. Durable once
    /// both parents are synced with [`Storage::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Lists the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Makes the entries of `dir` (creations and removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on `path` (created if missing), or returns
    /// `None` if someone else holds it.
    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;
    /// Whether these are the host's files, which other processes see too
    /// (so the lock holder may serve them to other processes over a
    /// socket beside them). False unless a storage says so.
    fn host_files(&self) -> bool {
        false
    }
}

/// An open file.
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read
    /// (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves space so the file holds at least `len` bytes, the new ones
    /// reading as zeros, and later writes below `len` cannot fail for lack
    /// of space. A backend may also make those writes cheaper (the real file
    /// system maps the reserved file and copies writes into the mapping).
    /// On failure the length is unchanged. Backends that cannot reserve
    /// space return [`io::ErrorKind::Unsupported`]; callers then write
    /// without a reservation.
    fn preallocate(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Allocates the file's blocks up to `len` bytes without changing its
    /// length, so that later [`StorageFile::preallocate`] calls below `len`
    /// only set the length and have nothing to allocate (on a busy disk a
    /// file system's allocator may wait for reads of its own metadata). A
    /// hint: the default does nothing, and a failure leaves the
    /// reservations to allocate as before.
    fn allocate_ahead(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }
    /// Whether the space later [`StorageFile::preallocate`] calls reserve
    /// is made ready for writing before the writes come (the real file
    /// system faults its mapped pages in on a thread of its own). Worth it
    /// only where appends are not each synced: a page made ready is dirty,
    /// so a sync writes back its zeros too. A hint; the default ignores it.
    fn prefault_reservations(&self, enabled: bool) {
        let _ = enabled;
    }
    /// The first region at or after `from` that may hold data, or `None`
    /// if the rest of the file is a hole (reads as zeros without being
    /// stored). The default treats the whole rest of the file as data.
    fn next_data(&self, from: u64) -> io::Result<Option<Range<u64>>> {
        let size = self.size()?;
        Ok((from < size).then_some(from..size))
    }
    /// Starts writing back `len` bytes from `pos` without waiting for them
    /// (a hint: a later sync then has less to wait for). The default does
    /// nothing.
    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
        let _ = (pos, len);
        Ok(())
    }
    /// The first `len` bytes of the file (at most its length) as shared
    /// bytes without copying them, or `None` if the backend cannot (the
    /// default; callers then read). For a file whose first `len` bytes
    /// are final: the caller never writes them or cuts the file below
    /// `len` again (logbus asks this only of sealed segments). The real
    /// file system maps them read-only, and a mapping's pages vanish if
    /// the file is cut below them (reading one then raises `SIGBUS`).
    fn map_final(&self, len: u64) -> io::Result<Option<Bytes>> {
        let _ = len;
        Ok(None)
    }
    /// The first `len` bytes of the file shared out of its write mapping,
    /// without copying and without a system call, if one covers them
    /// (`None` if none does, the default: callers then read). For bytes
    /// that are final, as [`StorageFile::map_final`]'s (logbus asks this
    /// only of an active segment's frames below its limit).
    fn share_final(&self, len: u64) -> Option<Bytes> {
        let _ = len;
        None
    }
    /// Makes written data durable (fdatasync), including data written
    /// into a preallocated file's mapping.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes data and metadata durable (fsync); used after a length change.
    fn sync_all(&self) -> io::Result<()>;
}

/// A file mapped into memory, read and written as a byte slice.
pub trait MappedFile: Send + Sync + Debug {
    /// The mapped bytes (the whole file).
    fn bytes(&self) -> &[u8];
    /// The mapped bytes, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Truncates or extends the file and the mapping.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the mapped bytes and the file length durable.
    fn sync(&self) -> io::Result<()>;
}

/// Removes `dir` and everything under it, depth first: an entry that can
/// be listed is a directory, any other is removed as a file. Stops at the
/// first failure, leaving the rest in place.
pub(crate) fn remove_tree(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    for entry in storage.list(dir)? {
        match storage.list(&entry) {
            Ok(_) => remove_tree(storage, &entry)?,
            Err(_) => storage.remove(&entry)?,
        }
    }
    storage.remove_dir(dir)
}

/// Fills `buf` from `pos`, failing with `UnexpectedEof` if the file is shorter.
pub fn read_exact_at(file: &dyn StorageFile, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, pos) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
