//! Work handed off by an appending thread to the `logbus-io` thread, so
//! that it runs on another core instead of between two appends. Both kinds
//! are hints: a task done late, failed or never done changes nothing but
//! speed.
//!
//! - **Faulting in the pages of a write window ahead of the appends**
//!   ([`prefault`]). Without it, the first store into each page of a
//!   preallocated segment faults: the kernel allocates a page-cache page,
//!   zero-fills it (the blocks are reserved but unwritten), maps it and
//!   marks it dirty, and only then does the copy overwrite the zeros. The
//!   thread faults the range in writable with `MADV_POPULATE_WRITE`, so
//!   the store takes no fault. (`MADV_POPULATE_READ` was measured too: the
//!   store then still takes a write-protect fault per page, and appends
//!   were no faster.) A page faulted in writable is dirty at once: a sync
//!   writes its zeros back ahead of the data, and once written back the
//!   file system reports it as data, not as a hole. So only logs that do
//!   not sync every append ask for it (`StorageFile::prefault_reservations`),
//!   and recovery reads no further than the checkpoint's write limit
//!   anyway, which lies below the prefaulted pages. Sealing and closing
//!   trim them off with the rest of the reservation.
//! - **Starting writeback** of a range ([`start_writeback`],
//!   `sync_file_range` with `SYNC_FILE_RANGE_WRITE`): queueing the I/O
//!   walks every page of the range and builds its block requests, which
//!   took 7% of a thread appending batches. The caller keeps ranges
//!   written through a mapping to itself (`StdFile::start_writeback`):
//!   cleaning a page mapped writable write-protects it, and from another
//!   core that interrupts the appending one to flush its TLB, which cost
//!   more than the writeback saved.
//!
//! Invariants:
//! - the thread only calls `madvise` on a mapping it holds a reference to
//!   (`Arc<MmapRaw>`), so the range stays mapped while it works; it never
//!   reads or writes through the mapping. If the file was cut meanwhile,
//!   `madvise` fails with an error (populating never raises SIGBUS), which
//!   is ignored;
//! - writeback runs on a duplicate of the file's descriptor, so the file
//!   may be closed, cut or unlinked meanwhile; an error is ignored (a
//!   failed write is reported by the file's next sync, which every
//!   durability promise waits for);
//! - at most one thread runs; it exits after [`IDLE`] without a task, and
//!   the next task starts a new one. Tasks are sent under the lock the
//!   exiting thread takes to leave, so none is lost between them;
//! - a kernel without `MADV_POPULATE_WRITE` (before Linux 5.14) answers
//!   `EINVAL` once, and no range is prefaulted after it.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use memmap2::MmapRaw;

/// How long the thread waits for a task before it exits.
const IDLE: Duration = Duration::from_secs(2);

/// What the thread does.
enum Task {
    /// Fault in `len` bytes of `map` from `offset`.
    Prefault {
        map: Arc<MmapRaw>,
        offset: usize,
        len: usize,
    },
    /// Start writeback of `len` bytes of `file` from `pos`.
    Writeback { file: File, pos: u64, len: u64 },
}

/// The process's background I/O thread, started on demand.
struct Background {
    /// The running thread's queue, if one runs.
    sender: Mutex<Option<Sender<Task>>>,
    /// Set once the kernel refused to prefault.
    no_prefault: AtomicBool,
}

static BACKGROUND: Background = Background {
    sender: Mutex::new(None),
    no_prefault: AtomicBool::new(false),
};

/// Faults in `len` bytes of `map` from `offset` (cut to the mapping) on
/// the background thread, soon; does nothing where prefaulting is
/// unsupported.
pub(super) fn prefault(map: &Arc<MmapRaw>, offset: usize, len: usize) {
    if BACKGROUND.no_prefault.load(Ordering::Relaxed) || offset >= map.len() {
        return;
    }
    BACKGROUND.send(Task::Prefault {
        map: map.clone(),
        offset,
        len: len.min(map.len() - offset),
    });
}

/// Starts writeback of `len` bytes of `file` from `pos` on the background
/// thread, soon. Fails only if the descriptor cannot be duplicated.
/// Elsewhere than on Linux writeback is left to the operating system.
pub(super) fn start_writeback(file: &File, pos: u64, len: u64) -> io::Result<()> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let file = file.try_clone()?;
    BACKGROUND.send(Task::Writeback { file, pos, len });
    Ok(())
}

impl Background {
    /// Sends `task` to the thread, starting one if none runs (or the last
    /// one ended without taking its sender down: it panicked). A thread
    /// that cannot start leaves the task undone.
    fn send(&'static self, task: Task) {
        let mut sender = self.lock();
        let task = match sender.as_ref() {
            Some(running) => match running.send(task) {
                Ok(()) => return,
                Err(mpsc::SendError(task)) => task,
            },
            None => task,
        };
        let (new_sender, receiver) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("logbus-io".into())
            .spawn(move || self.serve(receiver));
        if started.is_ok() && new_sender.send(task).is_ok() {
            *sender = Some(new_sender);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Sender<Task>>> {
        self.sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The thread: runs each task; leaves after [`IDLE`] without one,
    /// taking its sender down under the lock so that no task is sent to it
    /// after it looked for the last time.
    fn serve(&self, receiver: Receiver<Task>) {
        loop {
            let task = match receiver.recv_timeout(IDLE) {
                Ok(task) => task,
                Err(RecvTimeoutError::Timeout) => {
                    let mut sender = self.lock();
                    match receiver.try_recv() {
                        Ok(task) => task,
                        Err(_) => {
                            *sender = None;
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match task {
                Task::Prefault { map, offset, len } => {
                    if populate(&map, offset, len)
                        .is_err_and(|error| error.raw_os_error() == Some(libc::EINVAL))
                    {
                        self.no_prefault.store(true, Ordering::Relaxed);
                    }
                }
                Task::Writeback { file, pos, len } => {
                    let _ = super::mmap::start_writeback(&file, pos, len);
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn populate(map: &MmapRaw, offset: usize, len: usize) -> io::Result<()> {
    map.advise_range(memmap2::Advice::PopulateWrite, offset, len)
}

/// Elsewhere there is no such advice: the kernel "refuses" it.
#[cfg(not(target_os = "linux"))]
fn populate(_map: &MmapRaw, _offset: usize, _len: usize) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}
