//! Waiting for a log's activity: records becoming readable, the log
//! closing, or (notified by the pattern layer) a redelivery falling due.
//!
//! Invariant: every change a waiter may be waiting for is followed by
//! [`Activity::notify`]. A waiter registers ([`Activity::waiter`]) *before*
//! it checks its condition, so a change after the check always ends the
//! wait, and a change before it is seen by the check.
//!
//! A notification with nobody registered costs two atomic operations, not
//! the event's lock: registering counts the waiter after it is in the
//! event's list, and a notifier checks the count after its change, with a
//! `SeqCst` fence on each side between the two steps. So either the
//! notifier sees the count (and the waiter is in the list it notifies), or
//! the waiter's check sees the change.
//!
//! A wait may first spin on a sequence number before it parks the thread:
//! a record or reply that arrives within that time is picked up without a
//! sleep and a cross-CPU wakeup, which on a virtual machine cost tens of
//! microseconds each way (a request-reply round trip takes two of them).
//! Spinning only pays while the notifier runs on another CPU: a thread that
//! may run on one CPU only never spins (it would only delay the thread it
//! waits for).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::task::{Context, Poll};
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
    /// Waiters registered in `event` and not yet dropped.
    registered: AtomicUsize,
}

impl Activity {
    /// Wakes every waiter.
    #[inline]
    pub(crate) fn notify(&self) {
        self.sequence.fetch_add(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.registered.load(Ordering::Relaxed) > 0 {
            self.event.notify(usize::MAX);
        }
    }

    /// Puts a listener in the event's list, then counts it (see the module
    /// doc for the order).
    fn register(&self) -> (EventListener, Registration<'_>) {
        let listener = self.event.listen();
        self.registered.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        (listener, Registration { activity: self })
    }

    /// Registers a blocking waiter; check the condition after this.
    pub(crate) fn waiter(&self) -> Waiter<'_> {
        let (listener, registration) = self.register();
        Waiter {
            seen: self.sequence.load(Ordering::Acquire),
            listener,
            registration,
        }
    }

    /// Registers an async waiter (await it); check the condition after this.
    pub(crate) fn listen(&self) -> Listening<'_> {
        let (listener, registration) = self.register();
        Listening {
            listener,
            _registration: registration,
        }
    }
}

/// Counts a registered waiter until it is dropped.
#[derive(Debug)]
struct Registration<'a> {
    activity: &'a Activity,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.activity.registered.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A registered async wait for the next notification: a future.
#[derive(Debug)]
pub(crate) struct Listening<'a> {
    listener: EventListener,
    _registration: Registration<'a>,
}

impl Future for Listening<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.listener).poll(cx)
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
    seen: u64,
    listener: EventListener,
    registration: Registration<'a>,
}

impl Waiter<'_> {
    fn notified(&self) -> bool {
        self.activity().sequence.load(Ordering::Acquire) != self.seen
    }

    fn activity(&self) -> &Activity {
        self.registration.activity
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
