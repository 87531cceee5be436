//! Waiting for a log's activity: records becoming readable, the log
//! closing, or (notified by the pattern layer) a redelivery falling due.
//!
//! Invariant: every change a waiter may be waiting for is followed by
//! [`Activity::notify`]. A waiter registers ([`Activity::waiter`]) *before*
//! it checks its condition, so a change after the check always ends the
//! wait, and a change before it is seen by the check.
//!
//! A wait first spins for up to [`SPIN`] on a sequence number before it
//! parks the thread: a record or reply that arrives within that time is
//! picked up without a sleep and a cross-CPU wakeup, which on a virtual
//! machine cost tens of microseconds each way (a request-reply round trip
//! takes two of them).

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
            sequence: &self.sequence,
            seen: self.sequence.load(Ordering::Acquire),
            listener,
        }
    }

    /// Registers an async waiter (await it); check the condition after this.
    pub(crate) fn listen(&self) -> EventListener {
        self.event.listen()
    }
}

/// A registered wait for the next notification.
#[derive(Debug)]
pub(crate) struct Waiter<'a> {
    sequence: &'a AtomicU64,
    seen: u64,
    listener: EventListener,
}

impl Waiter<'_> {
    /// Returns once notified or when `clock` reaches `deadline`, whichever
    /// comes first. A simulated clock never blocks: the wait returns at
    /// once if it was notified, else moves the clock to `deadline`.
    pub(crate) fn wait_on(self, clock: &Clock, deadline: Instant) {
        if self.sequence.load(Ordering::Acquire) != self.seen || clock.jump_to(deadline) {
            return;
        }
        self.wait_until(deadline);
    }

    /// Returns once notified or at `deadline` (real time), whichever comes
    /// first.
    pub(crate) fn wait_until(self, deadline: Instant) {
        let spin_end = deadline.min(Instant::now() + SPIN);
        loop {
            for _ in 0..64 {
                if self.sequence.load(Ordering::Acquire) != self.seen {
                    return;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= spin_end {
                break;
            }
        }
        self.listener.wait_deadline(deadline);
    }
}
