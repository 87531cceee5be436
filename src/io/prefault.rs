//! Faulting in the pages of a write window ahead of the appends, on a
//! thread of its own, so that the appending thread's first store into a
//! page finds it in the page cache and mapped.
//!
//! Without it, the first store into each page of a preallocated segment
//! faults: the kernel allocates a page-cache page, zero-fills it (the
//! blocks are reserved but unwritten), maps it and marks it dirty, and
//! only then does the copy overwrite the zeros. [`Prefaulter::request`]
//! hands a range to the `logbus-prefault` thread, which faults it in
//! writable with `MADV_POPULATE_WRITE`, so the store takes no fault.
//! (`MADV_POPULATE_READ` was measured too: the store then still takes a
//! write-protect fault per page, and appends were no faster.)
//!
//! A page faulted in writable is dirty at once: a sync writes its zeros
//! back ahead of the data, and once written back the file system reports
//! it as data, not as a hole. So only logs that do not sync every append
//! ask for it (`StorageFile::prefault_reservations`), and recovery reads
//! no further than the checkpoint's write limit anyway, which lies below
//! the prefaulted pages. Sealing and closing trim them off with the rest
//! of the reservation.
//!
//! Invariants:
//! - the thread only calls `madvise` on a mapping it holds a reference to
//!   (`Arc<MmapRaw>`), so the range stays mapped while it works; it never
//!   reads or writes through the mapping. If the file was cut meanwhile,
//!   `madvise` fails with an error (populating never raises SIGBUS), which
//!   is ignored: prefaulting is only ever an optimisation;
//! - at most one thread runs; it exits after [`IDLE`] without a request,
//!   and the next request starts a new one. Requests are sent under the
//!   lock the exiting thread takes to leave, so none is lost between them;
//! - a kernel without `MADV_POPULATE_WRITE` (before Linux 5.14) answers
//!   `EINVAL` once, and no request is sent after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use memmap2::MmapRaw;

/// How long the thread waits for a request before it exits.
const IDLE: Duration = Duration::from_secs(2);

/// A range of a mapping to fault in.
struct Request {
    map: Arc<MmapRaw>,
    offset: usize,
    len: usize,
}

/// The process's prefault thread, started on demand.
pub(super) struct Prefaulter {
    /// The running thread's queue, if one runs.
    sender: Mutex<Option<Sender<Request>>>,
    /// Set once the kernel refused the advice.
    unsupported: AtomicBool,
}

static PREFAULTER: Prefaulter = Prefaulter {
    sender: Mutex::new(None),
    unsupported: AtomicBool::new(false),
};

impl Prefaulter {
    /// Faults in `len` bytes of `map` from `offset` on the prefault thread
    /// (cut to the mapping), soon; does nothing where prefaulting is
    /// unsupported or the thread cannot start.
    pub(super) fn request(map: &Arc<MmapRaw>, offset: usize, len: usize) {
        let prefaulter = &PREFAULTER;
        if prefaulter.unsupported.load(Ordering::Relaxed) || offset >= map.len() {
            return;
        }
        let request = Request {
            map: map.clone(),
            offset,
            len: len.min(map.len() - offset),
        };
        let mut sender = prefaulter.lock();
        let request = match sender.as_ref() {
            Some(running) => match running.send(request) {
                Ok(()) => return,
                // The thread ended without taking its sender down (it
                // panicked): start another.
                Err(mpsc::SendError(request)) => request,
            },
            None => request,
        };
        let (new_sender, receiver) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("logbus-prefault".into())
            .spawn(move || PREFAULTER.serve(receiver));
        if started.is_ok() && new_sender.send(request).is_ok() {
            *sender = Some(new_sender);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Sender<Request>>> {
        self.sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The thread: faults in each request's range; leaves after [`IDLE`]
    /// without one, taking its sender down under the lock so that no
    /// request is sent to it after it looked for the last time.
    fn serve(&self, receiver: Receiver<Request>) {
        loop {
            let request = match receiver.recv_timeout(IDLE) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    let mut sender = self.lock();
                    match receiver.try_recv() {
                        Ok(request) => request,
                        Err(_) => {
                            *sender = None;
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if populate(&request).is_err_and(|error| error.raw_os_error() == Some(libc::EINVAL)) {
                self.unsupported.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn populate(request: &Request) -> std::io::Result<()> {
    request
        .map
        .advise_range(memmap2::Advice::PopulateWrite, request.offset, request.len)
}

/// Elsewhere there is no such advice: the kernel "refuses" it.
#[cfg(not(target_os = "linux"))]
fn populate(_request: &Request) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(libc::EINVAL))
}
