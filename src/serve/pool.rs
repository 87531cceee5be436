//! The owner's worker threads: one runs each request of a joined process,
//! so a receive that waits never holds up the others. Threads start when
//! every one is busy and end after [`IDLE`] without work, or as soon as
//! they have none once the pool is closed (the bus closed).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a worker waits for work before it ends.
const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    idle: usize,
    /// No more work is coming but what is under way: idle workers end.
    closed: bool,
}

/// Cheap to clone: clones share the workers.
#[derive(Clone, Default)]
pub(crate) struct Pool {
    shared: Arc<(Mutex<Jobs>, Condvar)>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

fn lock(jobs: &Mutex<Jobs>) -> MutexGuard<'_, Jobs> {
    jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// Runs `job` on an idle worker, or on a new one if none is idle.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
        let (jobs, wake) = &*self.shared;
        let mut guard = lock(jobs);
        guard.queue.push_back(Box::new(job));
        if guard.idle > guard.queue.len() - 1 {
            drop(guard);
            wake.notify_one();
            return;
        }
        drop(guard);
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("logbus-owner".into())
            .spawn(move || work(&shared));
        if started.is_err() {
            // No thread to be had: an idle one (or the next to free up)
            // takes the job.
            wake.notify_one();
        }
    }

    /// Ends the workers as soon as they have no job (the bus closed: the
    /// rest of a connection's requests still run), rather than after
    /// [`IDLE`]: a process that opens and closes buses keeps no threads
    /// of those it closed.
    pub(crate) fn close(&self) {
        let (jobs, wake) = &*self.shared;
        lock(jobs).closed = true;
        wake.notify_all();
    }
}

fn work(shared: &(Mutex<Jobs>, Condvar)) {
    let (jobs, wake) = shared;
    let mut guard = lock(jobs);
    loop {
        if let Some(job) = guard.queue.pop_front() {
            drop(guard);
            job();
            guard = lock(jobs);
            continue;
        }
        if guard.closed {
            return;
        }
        guard.idle += 1;
        let (next, timeout) = wake
            .wait_timeout(guard, IDLE)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard = next;
        guard.idle -= 1;
        if timeout.timed_out() && guard.queue.is_empty() {
            return;
        }
    }
}
