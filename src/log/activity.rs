//! Waiting for a log's activity: records becoming readable, the log
//! closing, or (notified by the pattern layer) a redelivery falling due.
//!
//! Invariant: every change a waiter may be waiting for is followed by
//! [`Activity::notify`]. A waiter registers ([`Activity::waiter`]) *before*
//! it checks its condition, so a change after the check always ends the
//! wait, and a change before it is seen by the check.
//!
//! A notification with nobody registered costs a few atomic operations,
//! no lock: registering counts the waiter (an async one after it is in the
//! event's list), and a notifier checks the counts after its change, with
//! a `SeqCst` fence on each side between the two steps. So either the
//! notifier sees the count (and wakes the waiter), or the waiter sees the
//! change.
//!
//! Blocking waiters park on a condition variable, not in the event's list:
//! `event_listener` wakes a listener while it holds the list's lock, and a
//! woken thread that preempts its waker (on one CPU, at once) then finds
//! that lock taken, spins on it and sleeps again until the waker runs and
//! lets go: two context switches more per wake-up, four per request-reply
//! round trip. A notifier takes the condition variable's lock only to pass
//! it (so a waiter between its last check and its sleep cannot miss the
//! wake-up) and wakes the waiters after letting go of it. Async waiters
//! stay in the event's list (a waker is not a thread).
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
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener};

use crate::clock::Clock;

/// How long a wait spins before parking.
const SPIN: Duration = Duration::from_micros(20);

#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Async waiters wait in its list.
    event: Event,
    /// Bumped by every notification; waiters compare it with what they saw
    /// when they registered.
    sequence: AtomicU64,
    /// Async waiters registered in `event` and not yet dropped.
    listening: AtomicUsize,
    /// Blocking waiters registered and not yet dropped.
    waiting: AtomicUsize,
    /// Held by a blocking waiter from its last check until it sleeps on
    /// `wakeup`, and passed by a notifier before it wakes them.
    parked: Mutex<()>,
    wakeup: Condvar,
}

impl Activity {
    /// Wakes every waiter.
    #[inline]
    pub(crate) fn notify(&self) {
        self.sequence.fetch_add(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) > 0 {
            drop(self.parked());
            self.wakeup.notify_all();
        }
        if self.listening.load(Ordering::Relaxed) > 0 {
            self.event.notify(usize::MAX);
        }
    }

    fn parked(&self) -> MutexGuard<'_, ()> {
        self.parked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a waiter in `count` (see the module doc for the order).
    fn register<'a>(&'a self, count: &'a AtomicUsize) -> Registration<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Registration { count }
    }

    /// Registers a blocking waiter; check the condition after this.
    pub(crate) fn waiter(&self) -> Waiter<'_> {
        let registration = self.register(&self.waiting);
        Waiter {
            activity: self,
            seen: self.sequence.load(Ordering::Acquire),
            _registration: registration,
        }
    }

    /// Registers an async waiter (await it); check the condition after this.
    pub(crate) fn listen(&self) -> Listening<'_> {
        let listener = self.event.listen();
        Listening {
            listener,
            _registration: self.register(&self.listening),
        }
    }
}

/// Counts a registered waiter until it is dropped.
#[derive(Debug)]
struct Registration<'a> {
    count: &'a AtomicUsize,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
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
    activity: &'a Activity,
    seen: u64,
    _registration: Registration<'a>,
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
        let mut parked = self.activity.parked();
        while !self.notified() {
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
            else {
                return;
            };
            parked = match self.activity.wakeup.wait_timeout(parked, left) {
                Ok((parked, _)) => parked,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
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

    /// Two threads hand a counter back and forth, each waiting for the
    /// other's change with a blocking waiter: a waiter the change does not
    /// wake sleeps until its deadline and fails the test. Run on one CPU
    /// (where the woken thread preempts its waker) and on any. (The
    /// narrowest race, a notification between a waiter's last check and
    /// its sleep, is a few instructions wide: the lock a notifier passes
    /// closes it, but 600,000 wake-ups without that pass did not hit it.)
    #[test]
    fn ping_pong_through_blocking_waiters_loses_no_wake_up() {
        use std::sync::Arc;
        for pinned in [true, false] {
            let turn = Arc::new((AtomicU64::new(0), Activity::default()));
            let rounds = 5_000u64;
            let player = |parity: u64, turn: Arc<(AtomicU64, Activity)>| {
                move || {
                    if pinned {
                        crate::io::pin_current_thread_to_cpu0().unwrap();
                    }
                    let (counter, activity) = &*turn;
                    for round in 0..rounds {
                        let mine = 2 * round + parity;
                        loop {
                            let waiter = activity.waiter();
                            if counter.load(Ordering::Acquire) == mine {
                                break;
                            }
                            let deadline = Instant::now() + Duration::from_secs(10);
                            waiter.wait_until(deadline);
                            assert!(Instant::now() < deadline, "lost a wake-up in round {round}");
                        }
                        counter.store(mine + 1, Ordering::Release);
                        activity.notify();
                    }
                }
            };
            let first = std::thread::spawn(player(0, turn.clone()));
            let second = std::thread::spawn(player(1, turn.clone()));
            first.join().unwrap();
            second.join().unwrap();
            assert_eq!(turn.0.load(Ordering::Relaxed), 2 * rounds);
        }
    }
}
