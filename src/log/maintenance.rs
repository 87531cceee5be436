//! Background maintenance: one process-wide thread (`logbus-maintenance`)
//! that runs the maintenance step of every log that asks for one, so that
//! deleting retired segments and syncing their directory never happens
//! inside an append, an ack or a commit, and never fails one.
//!
//! Rules:
//! - [`schedule`] only queues: it takes one short lock and starts the
//!   thread if it is not running; it never does I/O.
//! - Steps run one at a time, in the order they fall due. A step that
//!   fails is run again after a delay that doubles from [`FIRST_RETRY`] up
//!   to [`MAX_RETRY`]; the log reports each failure itself.
//! - The thread holds only a weak reference between steps: a log dropped
//!   or closed meanwhile is skipped. A log serializes its steps with its
//!   own `close` (see `engine.rs`), so no step touches a directory whose
//!   lock was released.
//! - With nothing queued for [`IDLE`], the thread exits; the next
//!   [`schedule`] starts a new one. If a thread cannot be started, the job
//!   stays queued until a later [`schedule`] starts one.
//!
//! One thread for the whole process, rather than one per log: a bus holds
//! a log per topic and per consumer, maintenance is rare and short, and
//! its latency does not matter (only disk space waits for it).

use std::sync::{Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Delay before the first retry of a failed step.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest delay between retries.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long the thread waits for work before it exits.
const IDLE: Duration = Duration::from_secs(10);

/// Something with a maintenance step.
pub(crate) trait Maintained: Send + Sync {
    /// Runs the step; false if it failed and should run again later.
    fn maintain(&self) -> bool;
}

struct Job {
    due: Instant,
    /// Delay before the next retry if this run fails.
    retry: Duration,
    target: Weak<dyn Maintained>,
}

struct Queue {
    jobs: Vec<Job>,
    running: bool,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    jobs: Vec::new(),
    running: false,
});
static WAKE: Condvar = Condvar::new();

fn queue() -> MutexGuard<'static, Queue> {
    QUEUE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Queues a step of `target`, due now.
pub(crate) fn schedule(target: Weak<dyn Maintained>) {
    let mut queue = queue();
    queue.jobs.push(Job {
        due: Instant::now(),
        retry: FIRST_RETRY,
        target,
    });
    if queue.running {
        WAKE.notify_one();
        return;
    }
    let started = std::thread::Builder::new()
        .name("logbus-maintenance".into())
        .spawn(run);
    match started {
        Ok(_) => queue.running = true,
        Err(_error) => {
            trace_event!(error, error = %_error, "could not start the maintenance thread; retrying at the next schedule");
        }
    }
}

/// The thread: runs due jobs until none came for [`IDLE`].
fn run() {
    let mut queue = queue();
    loop {
        let Some(next) = (0..queue.jobs.len()).min_by_key(|&i| queue.jobs[i].due) else {
            let (guard, timeout) = WAKE
                .wait_timeout(queue, IDLE)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            queue = guard;
            if timeout.timed_out() && queue.jobs.is_empty() {
                queue.running = false;
                return;
            }
            continue;
        };
        let wait = queue.jobs[next].due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            queue = WAKE
                .wait_timeout(queue, wait)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
            continue;
        }
        let job = queue.jobs.swap_remove(next);
        drop(queue);
        let failed = job.target.upgrade().is_some_and(|target| !target.maintain());
        queue = self::queue();
        if failed {
            queue.jobs.push(Job {
                due: Instant::now() + job.retry,
                retry: (job.retry * 2).min(MAX_RETRY),
                target: job.target,
            });
        }
    }
}
