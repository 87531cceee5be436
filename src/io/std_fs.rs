//! The real file system.
//!
//! Every error names the operation and the path it failed on ("create
//! directory /srv/bus/topics: Not a directory"), keeping the
//! [`io::ErrorKind`] that callers match on. Directories are created
//! owner-only (0700) and files owner-only (0600), whatever the umask; a
//! directory that already exists keeps its mode.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::background;
use super::mmap::{MmapFile, WriteWindow, allocate_ahead, map_final, next_data, start_writeback};
use super::seam::{LockGuard, MappedFile, Storage, StorageFile};

/// Storage on the operating system's file system. Files are created with
/// mode 0600 and directories with mode 0700 (owner-only).
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

/// Adds the failed operation and its path to `error`, keeping its kind;
/// the operating system's error stays reachable as the source (see
/// [`crate::Error::os_error`]).
pub(super) fn context(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    move |source| {
        let kind = source.kind();
        let failed = Failed {
            operation,
            path: path.to_path_buf(),
            source,
        };
        io::Error::new(kind, failed)
    }
}

/// An I/O error with the operation and the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {}: {source}", path.display())]
struct Failed {
    operation: &'static str,
    path: PathBuf,
    source: io::Error,
}

pub(super) fn open_owner_only(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .open(path)
}

impl Storage for StdStorage {
    fn host_files(&self) -> bool {
        true
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(context("create directory", dir))
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(StdFile {
            file: open_owner_only(path, create).map_err(context("open", path))?,
            path: path.to_path_buf(),
            window: Mutex::new(None),
            prefault: AtomicBool::new(false),
        }))
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(StdFile {
            file: File::open(path).map_err(context("open", path))?,
            path: path.to_path_buf(),
            window: Mutex::new(None),
            prefault: AtomicBool::new(false),
        }))
    }

    fn map(&self, path: &Path, min_len: u64) -> io::Result<Box<dyn MappedFile>> {
        Ok(Box::new(MmapFile::open(path, min_len)?))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path).map_err(context("remove", path))
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir).map_err(context("remove directory", dir))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match fs::exists(to)? {
            true => Err(io::ErrorKind::AlreadyExists.into()),
            false => fs::rename(from, to),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let entries = fs::read_dir(dir).and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect());
        entries.map_err(context("list directory", dir))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(context("sync directory", dir))
    }

    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let file = open_owner_only(path, true).map_err(context("open lock file", path))?;
        if held_locks().contains(path) {
            return Ok(None);
        }
        let deadline = Instant::now() + FORK_GRACE;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(Box::new(HeldLock::new(file, path)))),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(context("lock", path)(e)),
            }
        }
    }
}

/// How long a lock that another open file holds is retried before
/// [`StdStorage::lock`] gives up. A process spawned by this one shares
/// this one's open files, `flock` locks included, from its `fork` until its
/// `exec` closes them (every file is opened close-on-exec): a lock released
/// here just before can look held for that instant. A lock this process
/// holds is refused at once.
const FORK_GRACE: Duration = Duration::from_millis(500);

/// The lock files this process holds, by the path they were locked with.
static HELD_LOCKS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn held_locks() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    HELD_LOCKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A held `flock`, listed in [`HELD_LOCKS`] while it lives.
struct HeldLock {
    /// Closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl HeldLock {
    fn new(file: File, path: &Path) -> HeldLock {
        held_locks().insert(path.to_path_buf());
        HeldLock {
            _file: file,
            path: path.to_path_buf(),
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        held_locks().remove(&self.path);
    }
}

/// Writes up to this size into a preallocated file are copied into its
/// mapping: a system call costs more than the copy. Larger ones use
/// `pwrite`, which fills whole page-cache pages directly, while a store
/// into the mapping first faults in each page zeroed (measured with 100 B
/// records in batches of 1000: 4.3M/s through the mapping, 5.8M/s with
/// `pwrite`).
const MAPPED_WRITE_MAX: usize = 32 << 10;

/// A file, and once it is preallocated, the mapping small writes are
/// copied into.
#[derive(Debug)]
struct StdFile {
    file: File,
    /// Named in errors.
    path: PathBuf,
    /// Dropped (unmapped) before the file's length changes.
    window: Mutex<Option<WriteWindow>>,
    /// Whether the next reservation's pages are faulted in ahead of the
    /// writes (`StorageFile::prefault_reservations`).
    prefault: AtomicBool,
}

impl StdFile {
    fn window(&self) -> MutexGuard<'_, Option<WriteWindow>> {
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos).map_err(context("read", &self.path))
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut window = self.window();
        if buf.len() <= MAPPED_WRITE_MAX && window.as_mut().is_some_and(|w| w.write(buf, pos)) {
            return Ok(());
        }
        self.file
            .write_all_at(buf, pos)
            .map_err(context("write", &self.path))
    }

    fn size(&self) -> io::Result<u64> {
        let metadata = self.file.metadata().map_err(context("stat", &self.path))?;
        Ok(metadata.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut window = self.window();
        *window = None;
        self.file
            .set_len(len)
            .map_err(context("set length of", &self.path))
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        let mut window = self.window();
        *window = None;
        let prefault = self.prefault.load(Ordering::Relaxed);
        let reserved =
            WriteWindow::reserve(&self.file, len, prefault).map_err(context("preallocate", &self.path))?;
        *window = Some(reserved);
        Ok(())
    }

    fn allocate_ahead(&self, len: u64) -> io::Result<()> {
        allocate_ahead(&self.file, len).map_err(context("allocate ahead in", &self.path))
    }

    fn prefault_reservations(&self, enabled: bool) {
        self.prefault.store(enabled, Ordering::Relaxed);
    }

    fn next_data(&self, from: u64) -> io::Result<Option<Range<u64>>> {
        next_data(&self.file, from).map_err(context("seek data in", &self.path))
    }

    /// On the background thread, unless something was written through the
    /// mapping since the last call: those pages are mapped writable, and
    /// cleaning them from another core would interrupt this one to flush
    /// its TLB (`background.rs`).
    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
        let mapped = self.window().as_mut().is_some_and(WriteWindow::take_written);
        let started = if mapped {
            start_writeback(&self.file, pos, len)
        } else {
            background::start_writeback(&self.file, pos, len)
        };
        started.map_err(context("start writeback of", &self.path))
    }

    fn map_final(&self, len: u64) -> io::Result<Option<Bytes>> {
        map_final(&self.file, len)
            .map(Some)
            .map_err(context("map", &self.path))
    }

    fn share_final(&self, len: u64) -> Option<Bytes> {
        self.window().as_ref()?.share_final(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data().map_err(context("fdatasync", &self.path))
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all().map_err(context("fsync", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(file: &dyn StorageFile) -> Vec<u8> {
        let mut bytes = vec![0; file.size().unwrap() as usize];
        super::super::read_exact_at(file, &mut bytes, 0).unwrap();
        bytes
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn writes_through_the_window_and_through_pwrite_read_back_alike() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdStorage.open(&dir.path().join("f"), true).unwrap();
        file.write_all_at(b"header", 0).unwrap();
        file.preallocate(256 << 10).unwrap();
        assert_eq!(file.size().unwrap(), 256 << 10);
        let mut expected = vec![0u8; 256 << 10];
        expected[..6].copy_from_slice(b"header");
        // Small (copied into the mapping), large (pwrite inside the
        // reservation) and one past the reservation (pwrite growing the file).
        let writes = [
            (6, pattern(100, 1)),
            (106, pattern(MAPPED_WRITE_MAX + 1, 2)),
            ((256 << 10) - 10, pattern(30, 3)),
        ];
        for (pos, bytes) in &writes {
            file.write_all_at(bytes, *pos as u64).unwrap();
            let end = pos + bytes.len();
            if expected.len() < end {
                expected.resize(end, 0);
            }
            expected[*pos..end].copy_from_slice(bytes);
        }
        assert_eq!(read_all(file.as_ref()), expected);
        file.sync_data().unwrap();
        let reopened = StdStorage.open(&dir.path().join("f"), false).unwrap();
        assert_eq!(read_all(reopened.as_ref()), expected);
    }

    #[test]
    fn written_bytes_are_shared_out_of_the_window_as_a_read_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdStorage.open(&dir.path().join("f"), true).unwrap();
        // No window yet: nothing shared.
        assert!(file.share_final(0).is_none());
        file.preallocate(64 << 10).unwrap();
        let small = pattern(100, 4);
        let large = pattern(MAPPED_WRITE_MAX + 1, 5);
        file.write_all_at(&small, 0).unwrap();
        file.write_all_at(&large, 100).unwrap(); // through pwrite
        let end = 100 + large.len();
        let shared = file.share_final(end as u64).unwrap();
        assert_eq!(&shared[..], &read_all(file.as_ref())[..end]);
        assert_eq!(&shared[..100], &small[..]);
        // Past the window: nothing shared.
        assert!(file.share_final((64 << 10) + 1).is_none());
        // Writes above go on, and what was shared stays as it was, also
        // once the window is gone and the file cut to what was written.
        file.write_all_at(b"more", end as u64).unwrap();
        file.set_len(end as u64 + 4).unwrap();
        assert!(file.share_final(1).is_none());
        assert_eq!(&shared[100..], &large[..]);
    }

    #[test]
    fn only_writes_through_the_mapping_keep_writeback_on_the_writing_thread() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdFile {
            file: open_owner_only(&dir.path().join("f"), true).unwrap(),
            path: dir.path().join("f"),
            window: Mutex::new(None),
            prefault: AtomicBool::new(false),
        };
        let written = |file: &StdFile| file.window().as_mut().is_some_and(WriteWindow::take_written);
        file.preallocate(256 << 10).unwrap();
        assert!(!written(&file));
        file.write_all_at(&pattern(100, 1), 0).unwrap();
        assert!(written(&file));
        assert!(!written(&file), "the mark is taken");
        file.write_all_at(&pattern(MAPPED_WRITE_MAX + 1, 2), 100).unwrap();
        assert!(!written(&file), "a pwrite leaves no page mapped writable");
        file.write_all_at(&pattern(100, 3), 200_000).unwrap();
        file.start_writeback(0, 200_100).unwrap();
        assert!(!written(&file), "starting writeback takes the mark");
    }

    #[test]
    fn writeback_started_in_the_background_outlives_cuts_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for round in 0..4u8 {
            let path = dir.path().join(format!("f{round}"));
            let file = StdStorage.open(&path, true).unwrap();
            file.preallocate(8 << 20).unwrap();
            let bytes = pattern(4 << 20, round);
            // Through pwrite, so the writeback goes to the background
            // thread, which may still hold the file after the cut and the
            // close below (and, in round 3, after its removal).
            file.write_all_at(&bytes, 0).unwrap();
            file.start_writeback(0, 4 << 20).unwrap();
            file.set_len(1 << 20).unwrap();
            drop(file);
            if round == 3 {
                StdStorage.remove(&path).unwrap();
            } else {
                expected.push((path, bytes[..1 << 20].to_vec()));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        for (path, bytes) in expected {
            let reopened = StdStorage.open(&path, false).unwrap();
            assert_eq!(read_all(reopened.as_ref()), bytes);
        }
    }

    #[test]
    fn changing_the_length_drops_the_window_and_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdStorage.open(&dir.path().join("f"), true).unwrap();
        file.preallocate(64 << 10).unwrap();
        file.write_all_at(b"kept", 0).unwrap();
        file.set_len(4).unwrap();
        file.write_all_at(b"after", 4).unwrap();
        assert_eq!(read_all(file.as_ref()), b"keptafter");
        // Reserving again maps again.
        file.preallocate(64 << 10).unwrap();
        file.write_all_at(b"!", 9).unwrap();
        assert_eq!(&read_all(file.as_ref())[..10], b"keptafter!");
    }

    #[test]
    fn a_prefaulted_window_reads_back_what_was_written_and_survives_being_cut_while_faulting() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdStorage.open(&dir.path().join("f"), true).unwrap();
        file.prefault_reservations(true);
        let mut expected = Vec::new();
        for round in 0..3u8 {
            file.preallocate(expected.len() as u64 + (4 << 20)).unwrap();
            // Sequential small writes hand range after range to the
            // background thread; the cut below drops the window (and the
            // file's tail) while it may still be faulting them in.
            for i in 0..200u8 {
                let bytes = pattern(1000, round.wrapping_mul(7).wrapping_add(i));
                file.write_all_at(&bytes, expected.len() as u64).unwrap();
                expected.extend_from_slice(&bytes);
            }
            file.set_len(expected.len() as u64).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(read_all(file.as_ref()), expected);
        file.sync_data().unwrap();
        let reopened = StdStorage.open(&dir.path().join("f"), false).unwrap();
        assert_eq!(read_all(reopened.as_ref()), expected);
    }

    #[test]
    fn preallocating_no_further_than_the_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdStorage.open(&dir.path().join("f"), true).unwrap();
        file.write_all_at(&[1; 100], 0).unwrap();
        assert!(file.preallocate(100).is_err());
        assert_eq!(file.size().unwrap(), 100);
    }

    #[test]
    fn next_data_finds_written_bytes_and_never_reports_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdStorage.open(&dir.path().join("f"), true).unwrap();
        file.write_all_at(&[7; 4096], 0).unwrap();
        file.set_len(1 << 20).unwrap();
        file.sync_all().unwrap();
        let first = file.next_data(0).unwrap().expect("written data");
        assert_eq!(first.start, 0);
        assert!(first.end >= 4096 && first.end <= 1 << 20, "{first:?}");
        // File systems without hole reporting call the rest data; those
        // with it call it a hole. Either way nothing lies past the end.
        if let Some(rest) = file.next_data(4096).unwrap() {
            assert!(rest.start >= 4096 && rest.end <= 1 << 20, "{rest:?}");
        }
        assert_eq!(file.next_data(1 << 20).unwrap(), None);
    }
}
