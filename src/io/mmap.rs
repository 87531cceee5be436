//! Memory mappings: index files read and written as byte slices, the
//! write window of a preallocated data file, and the final bytes of a
//! sealed data file, read without copying ([`map_final`]). One of the two
//! modules allowed `unsafe` (the other reads the clock, `clock/system.rs`).
//!
//! Soundness rests on these invariants, each upheld by the callers:
//! - the owning directory is locked (`Storage::lock`), so no other logbus
//!   process truncates or rewrites a mapped file;
//! - a mapped file is only resized through [`MmapFile::set_len`], which
//!   drops the mapping before changing the length and maps again after;
//! - the mapping's length is the file's length at mapping time, so every
//!   slice handed out lies inside the file;
//! - the bytes [`map_final`] maps are never written or cut again, by any
//!   logbus process, even after the log closes (they may outlive it in a
//!   record a caller keeps): only sealed segments are mapped so, and
//!   logbus neither writes nor shortens a sealed segment (recovery, before
//!   any of this process's readers exists, may cut one whose seal a crash
//!   interrupted; later damage is reported as corruption instead of cut);
//!   retention only unlinks it, and an unlinked file stays readable through
//!   its mapping;
//! - the bytes [`WriteWindow::share_final`] shares out of a write window's
//!   mapping are an active segment's header and frames below its limit,
//!   shared after the limit was published (so after their write). Appends
//!   write only above the limit; no cut reaches below it: a seal cuts to
//!   the frames' end, a failed write is undone down to where it began, and
//!   recovery cuts only frames that fail their checks, which frames below
//!   a published limit passed when written (the writes of a process are
//!   whole once it can open the log again) and are never written again.
//!   They stay final after the log closes, as a sealed segment's do.
//!
//! Growing a file writes zeros instead of leaving a hole: the first store
//! into a page of a hole must allocate a block, and on a full file system
//! that raises SIGBUS and kills the process. Written zeros make a full disk
//! fail the resize with `ENOSPC` instead, which callers handle. A data
//! file's [`WriteWindow`] reserves its blocks with `fallocate` instead (no
//! zeros to write, same guarantee), and is dropped before its file's length
//! changes. Its mapping may outlive it for a moment on the background
//! thread (`background.rs`), which never reads or writes through it: it
//! only asks the kernel to fault pages in, which fails with an error,
//! never SIGBUS, where the file was cut.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{MmapMut, MmapOptions, MmapRaw};

use super::background;
use super::seam::MappedFile;
use super::std_fs::{context, open_owner_only};

/// A read-write mapping of a whole file. A zero-length file has no mapping.
#[derive(Debug)]
pub(super) struct MmapFile {
    file: File,
    map: Option<MmapMut>,
    /// Named in errors.
    path: PathBuf,
}

impl MmapFile {
    pub(super) fn open(path: &Path, min_len: u64) -> io::Result<Self> {
        let mapped = || {
            let file = open_owner_only(path, true)?;
            if file.metadata()?.len() < min_len {
                resize(&file, min_len)?;
            }
            let map = map_whole(&file)?;
            Ok(MmapFile {
                file,
                map,
                path: path.to_path_buf(),
            })
        };
        mapped().map_err(context("map", path))
    }
}

/// Sets the length of an unmapped file, allocating any growth (see the
/// module docs). A failed growth gives back what it took.
fn resize(file: &File, len: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let old_len = file.metadata()?.len();
    let mut position = old_len;
    while position < len {
        let chunk = (len - position).min(ZEROS.len() as u64);
        if let Err(e) = file.write_all_at(&ZEROS[..chunk as usize], position) {
            let _ = file.set_len(old_len);
            return Err(e);
        }
        position += chunk;
    }
    file.set_len(len)
}

fn map_whole(file: &File) -> io::Result<Option<MmapMut>> {
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the directory lock keeps other logbus processes from changing
    // the file, and this process only resizes it through `set_len`, which
    // unmaps first; the mapping covers exactly the current file length.
    let map = unsafe { MmapMut::map_mut(file)? };
    Ok(Some(map))
}

impl MappedFile for MmapFile {
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut resize_and_map = || {
            // The pages stay in the page cache when unmapped (the mapping
            // is shared): handing them over needs no wait for the disk
            // (`MS_ASYNC`), and `sync` makes them durable.
            if let Some(map) = self.map.take() {
                map.flush_async()?;
            }
            let resized = resize(&self.file, len);
            // Map again even if growing failed, so the entries stay readable.
            self.map = map_whole(&self.file)?;
            resized
        };
        resize_and_map().map_err(context("resize mapped", &self.path))
    }

    fn sync(&self) -> io::Result<()> {
        let sync = || {
            // Linux's `fsync` writes back pages dirtied through a shared
            // mapping too (`msync` would be a second sync of the same
            // pages); other systems need `msync` for them.
            #[cfg(not(target_os = "linux"))]
            if let Some(map) = &self.map {
                map.flush()?;
            }
            self.file.sync_all()
        };
        sync().map_err(context("sync mapped", &self.path))
    }
}

/// The first `len` bytes of `file` (cut to its length), mapped read-only
/// and shared without copying: slicing the result costs a reference count,
/// and the mapping goes when the last slice does. The caller promises that
/// those bytes are final (see the module docs).
pub(super) fn map_final(file: &File, len: u64) -> io::Result<Bytes> {
    let len = len.min(file.metadata()?.len());
    if len == 0 {
        return Ok(Bytes::new());
    }
    let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the caller maps only bytes no logbus process writes or cuts
    // again (a sealed segment's frames, see the module docs), and the
    // directory lock kept every other logbus process away while they were
    // written; the mapping covers no more than the file's current length.
    // A party outside logbus cutting the file could still make a read
    // raise SIGBUS, as with every mapped file here.
    let map = unsafe { MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}

/// A preallocated file mapped for writing: a write inside it is a copy into
/// the page cache, with no system call. Reads still go through the file
/// (`pread` sees the same page cache, so they observe these writes), and
/// `fdatasync` on the file writes the mapped pages back (on Linux, pages
/// dirtied through a shared mapping are written back by `fsync` and
/// `fdatasync` of the file like any other dirty page).
///
/// The blocks are reserved with `fallocate` before mapping, so a store
/// into the mapping never has to allocate one: a full disk fails
/// [`WriteWindow::reserve`] with `ENOSPC`, never a later store with SIGBUS.
/// Writing takes `&mut self`, so no two writes into the mapping race.
#[derive(Debug)]
pub(super) struct WriteWindow {
    /// Shared with the background thread while it faults a range in.
    map: Arc<MmapRaw>,
    /// Whether pages are faulted in ahead of the writes.
    prefault: bool,
    /// Where the range handed to the background thread ends (a multiple
    /// of [`PREFAULT_STEP`]).
    prefaulted: usize,
    /// Whether anything was written through the mapping since the last
    /// [`WriteWindow::take_written`].
    written: bool,
}

/// How far ahead of a write the window's pages are faulted in, and in
/// steps of how much (see `background.rs`).
const PREFAULT_AHEAD: usize = 512 << 10;
const PREFAULT_STEP: usize = 256 << 10;

impl WriteWindow {
    /// Extends `file` to `len` bytes with reserved blocks and maps it,
    /// faulting its pages in ahead of the writes if `prefault` (see
    /// `background.rs`). On failure the file keeps its length.
    pub(super) fn reserve(file: &File, len: u64, prefault: bool) -> io::Result<WriteWindow> {
        let old_len = file.metadata()?.len();
        if len <= old_len || usize::try_from(len).is_err() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        if let Err(e) = allocate(file, old_len, len) {
            let _ = file.set_len(old_len);
            return Err(e);
        }
        // SAFETY: the directory lock keeps other logbus processes from
        // changing the file, and its owner (`StdFile`) drops this window
        // before changing the file's length; the mapping covers exactly
        // the `len` bytes just reserved.
        let map = MmapOptions::new().len(len as usize).map_raw(file)?;
        Ok(WriteWindow {
            map: Arc::new(map),
            prefault,
            prefaulted: 0,
            written: false,
        })
    }

    /// Copies `buf` to `pos` if it lies inside the window; false (nothing
    /// written) otherwise.
    pub(super) fn write(&mut self, buf: &[u8], pos: u64) -> bool {
        let Ok(start) = usize::try_from(pos) else {
            return false;
        };
        let Some(end) = start.checked_add(buf.len()).filter(|&end| end <= self.map.len()) else {
            return false;
        };
        if self.prefault {
            self.prefault_ahead_of(start, end);
        }
        // SAFETY: `start + buf.len()` is within the mapping (checked
        // above), which stays mapped while `self` lives; `&mut self` rules
        // out a concurrent write through this window (the background
        // thread only advises the kernel, see `background.rs`), and `buf`
        // is ordinary memory, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), self.map.as_mut_ptr().add(start), buf.len());
        }
        self.written = true;
        true
    }

    /// Whether anything was written through the mapping since the last
    /// call (or since the window was made); clears the mark.
    pub(super) fn take_written(&mut self) -> bool {
        std::mem::take(&mut self.written)
    }

    /// The first `len` bytes of the window's mapping, shared without
    /// copying (as long as one of them is, the mapping stays), or `None` if
    /// the window does not cover them. The caller promises they are final
    /// (see the module docs): written before this call, never written or
    /// cut again.
    pub(super) fn share_final(&self, len: u64) -> Option<Bytes> {
        let len = usize::try_from(len).ok().filter(|&len| len <= self.map.len())?;
        let map = self.map.clone();
        Some(Bytes::from_owner(FinalPrefix { map, len }))
    }

    /// Has the background thread fault in the pages up to
    /// [`PREFAULT_AHEAD`] past `end`, from `start` on, unless it was asked
    /// already.
    fn prefault_ahead_of(&mut self, start: usize, end: usize) {
        self.prefaulted = self.prefaulted.max(start - start % PREFAULT_STEP);
        while self.prefaulted < end + PREFAULT_AHEAD && self.prefaulted < self.map.len() {
            background::prefault(&self.map, self.prefaulted, PREFAULT_STEP);
            self.prefaulted += PREFAULT_STEP;
        }
    }
}

/// The first `len` bytes of a write window's mapping, handed out as
/// [`Bytes`] ([`WriteWindow::share_final`]); keeps the mapping alive.
struct FinalPrefix {
    map: Arc<MmapRaw>,
    len: usize,
}

impl AsRef<[u8]> for FinalPrefix {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` is within the mapping (checked when the prefix was
        // made), which `map` keeps mapped. The bytes are final (see the
        // module docs): nothing writes them while they are shared (appends
        // go above them) and no cut reaches them, so no store races these
        // loads and reading them raises no SIGBUS.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len) }
    }
}

/// Starts writeback of `[pos, pos + len)` of `file` (`sync_file_range`
/// with `SYNC_FILE_RANGE_WRITE`): returns once the I/O is queued, without
/// waiting for it and without any durability promise.
#[cfg(target_os = "linux")]
pub(super) fn start_writeback(file: &File, pos: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(pos), libc::off64_t::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: `sync_file_range` takes a file descriptor, integers and
    // flags; the descriptor is open for as long as `file` lives.
    let result = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The next region at or after `from` holding data (`lseek` with
/// `SEEK_DATA`, then `SEEK_HOLE`), `None` if only a hole follows. File
/// systems without hole reporting report the whole rest as data. Reserved
/// but never written blocks count as a hole, which lets recovery skip the
/// unused part of a preallocated segment without reading it.
#[cfg(target_os = "linux")]
pub(super) fn next_data(file: &File, from: u64) -> io::Result<Option<std::ops::Range<u64>>> {
    use std::os::fd::AsRawFd;
    let Ok(from) = libc::off64_t::try_from(from) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let seek = |offset: libc::off64_t, whence: libc::c_int| {
        // SAFETY: `lseek64` takes a file descriptor and integers; the
        // descriptor is open for as long as `file` lives. The file offset
        // it moves is unused: all reads and writes are positional.
        let result = unsafe { libc::lseek64(file.as_raw_fd(), offset, whence) };
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(result as u64)
        }
    };
    let start = match seek(from, libc::SEEK_DATA) {
        Ok(start) => start,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(e) => return Err(e),
    };
    let end = seek(start as libc::off64_t, libc::SEEK_HOLE)?;
    Ok(Some(start..end))
}

/// Elsewhere every byte counts as data.
#[cfg(not(target_os = "linux"))]
pub(super) fn next_data(file: &File, from: u64) -> io::Result<Option<std::ops::Range<u64>>> {
    let size = file.metadata()?.len();
    Ok((from < size).then_some(from..size))
}

/// Elsewhere writeback is left to the operating system.
#[cfg(not(target_os = "linux"))]
pub(super) fn start_writeback(_file: &File, _pos: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

/// Reserves blocks for `[from, to)`, extending the file's length to `to`.
fn allocate(file: &File, from: u64, to: u64) -> io::Result<()> {
    fallocate(file, 0, from, to)
}

/// Allocates blocks for the file up to `len` bytes, keeping its length
/// (`StorageFile::allocate_ahead`).
#[cfg(target_os = "linux")]
pub(super) fn allocate_ahead(file: &File, len: u64) -> io::Result<()> {
    let size = file.metadata()?.len();
    if len <= size {
        return Ok(());
    }
    fallocate(file, libc::FALLOC_FL_KEEP_SIZE, size, len)
}

/// Elsewhere blocks are not allocated ahead (`StorageFile::allocate_ahead`
/// is a hint).
#[cfg(not(target_os = "linux"))]
pub(super) fn allocate_ahead(_file: &File, _len: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// `fallocate(2)` of `[from, to)` with `mode`, retried when interrupted.
#[cfg(target_os = "linux")]
fn fallocate(file: &File, mode: libc::c_int, from: u64, to: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(to - from)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    loop {
        // SAFETY: `fallocate` takes a file descriptor and four integers;
        // the descriptor is open for writing for as long as `file` lives.
        let result = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Elsewhere there is no portable way to reserve blocks without writing
/// them, so data files are written without a window.
#[cfg(not(target_os = "linux"))]
fn fallocate(_file: &File, _mode: i32, _from: u64, _to: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Pins the calling thread to CPU 0 (tests of CPU-dependent choices).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn pin_current_thread_to_cpu0() -> io::Result<()> {
    // SAFETY: `cpu_set_t` is plain data and all zeroes is an empty set;
    // `CPU_SET` writes inside it; `sched_setaffinity` reads
    // `size_of::<cpu_set_t>()` bytes of it for the calling thread (pid 0).
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    match result {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
