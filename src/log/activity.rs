//! Waiting for a log's activity: records becoming readable, the log
//! closing, or (notified by the pattern layer) a redelivery falling due.
//!
//! Invariant: every change a waiter may be waiting for is followed by
//! [`Activity::notify`]. A waiter registers ([`Activity::waiter`]) *before*
//! it checks its condition, so a change after the check always ends the
//! wait, and a change before it is seen by the check.
//!
//! A wait may first spin on a sequence number before it parks the thread:
//! a record or reply that arrives within that time is picked up without a
//! sleep and a cross-CPU wakeup, which on a virtual machine cost tens of
//! microseconds each way (a request-reply round trip takes two of them).
//! Spinning only pays while the notifier runs on another CPU: a thread that
//! may run on one CPU only never spins (it would only delay the thread it
//! waits for).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener, Listener};

use crate::clock::Clock;

/// How long a wait spins before parking.
const SPIN: Duration = Duration::from_micros(20);

#[derive(Debug, Default)]
pub(crate) struct Activity {
    event: Event,
    /// Bumped by every notification; spinning waiters watch it.
    sequence: AtomicU64,
}

impl Activity {
    /// Wakes every waiter.
    pub(crate) fn notify(&self) {
        self.sequence.fetch_add(1, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    /// Registers a blocking waiter; check the condition after this.
    pub(crate) fn waiter(&self) -> Waiter<'_> {
        let listener = self.event.listen();
        Waiter {
            activity: self,
            seen: self.sequence.load(Ordering::Acquire),
            listener,
        }
    }

    /// Registers an async waiter (await it); check the condition after this.
    pub(crate) fn listen(&self) -> EventListener {
        self.event.listen()
    }
}

/// Whether this thread may run on more than one CPU. Asked of the kernel
/// once per 1,024 waits of a thread (its affinity rarely changes).
fn may_spin() -> bool {
    thread_local! {
        static CACHED: std::cell::Cell<(u32, bool)> = const { std::cell::Cell::new((0, true)) };
    }
    CACHED.with(|cached| {
        let (age, answer) = cached.get();
        let (age, answer) = match age {
            0 => (
                1024,
                std::thread::available_parallelism().map_or(true, |n| n.get() > 1),
            ),
            _ => (age, answer),
        };
        cached.set((age - 1, answer));
        answer
    })
}

/// A registered wait for the next notification.
#[derive(Debug)]
pub(crate) struct Waiter<'a> {
    activity: &'a Activity,
    seen: u64,
    listener: EventListener,
}

impl Waiter<'_> {
    fn notified(&self) -> bool {
        self.activity.sequence.load(Ordering::Acquire) != self.seen
    }

    /// Returns once notified or when `clock` reaches `deadline`, whichever
    /// comes first. A simulated clock never blocks: the wait returns at
    /// once if it was notified, else moves the clock to `deadline`.
    pub(crate) fn wait_on(self, clock: &Clock, deadline: Instant) {
        if self.notified() || clock.jump_to(deadline) {
            return;
        }
        self.wait_until(deadline);
    }

    /// Returns once notified or at `deadline` (real time), whichever comes
    /// first.
    pub(crate) fn wait_until(self, deadline: Instant) {
        if may_spin() {
            let spin_end = deadline.min(Instant::now() + SPIN);
            while Instant::now() < spin_end {
                for _ in 0..64 {
                    if self.notified() {
                        return;
                    }
                    std::hint::spin_loop();
                }
            }
        }
        self.listener.wait_deadline(deadline);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_may_run_on_one_cpu_only_never_spins() {
        let pinned = std::thread::spawn(|| {
            crate::io::pin_current_thread_to_cpu0().unwrap();
            may_spin()
        });
        assert!(!pinned.join().unwrap());
        let free = std::thread::spawn(may_spin).join().unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(free, cpus > 1);
    }
}
