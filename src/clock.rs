//! The clock seam: where a bus reads the time and how it waits.
//!
//! A `Clock` gives three readings of one time: `now_ms` (ms since the Unix
//! epoch: record timestamps, lease ends, nack delays and backoff, failure
//! times, stats ages), `tick_ms` (the same as of the system's last clock
//! tick, for the hot paths below) and `now` (an [`Instant`]: receive
//! deadlines), and decides how a wait until an instant is served
//! (`Clock::jump_to`).
//!
//! - The real clock (the default, and the only one without `test-util`)
//!   reads the wall clock (`clock/system.rs`: `CLOCK_REALTIME`, and
//!   `CLOCK_REALTIME_COARSE` for `tick_ms`) and `Instant::now()`; a wait
//!   blocks. It is a field-less enum variant: reading it is a `match` and
//!   a call into the C library's clock, with no allocation and no virtual
//!   call. The coarse reading costs a copy where the precise one reads the
//!   CPU's counter (reading clocks took a tenth of a queue message's
//!   time), and it lags by up to a tick: so a time that starts a wait (a
//!   lease, a delay) is always precise, and the coarse one only checks
//!   whether one passed (a receive handing out records it kept: a lease
//!   ends up to a tick late there, never early) or stamps what nothing
//!   reads the time of (a state log's events).
//! - The simulated clock, `SimClock` (feature `test-util`, set with
//!   `BusOptions::clock`), stands still until the test advances it. A wait
//!   on it never blocks: a receive with a timeout that finds nothing moves
//!   the clock to the moment it would wake (its deadline, or the next lease
//!   end or nack delay falling due) and goes on from there, like tokio's
//!   paused time auto-advancing. A single-threaded test is then
//!   deterministic and takes no wall time.
//!
//! Who reads it: a log (`log/engine.rs`: record timestamps, age retention,
//! segment times; `Cursor::next_timeout`'s waits), a state log
//! (`state/store.rs`: its events' stamps, coarse) and the embedded
//! consumer group (`embedded/group.rs`: every `now` given to the group's
//! state machine, the coarse one when it checks the leases of the records
//! it kept, receive deadlines and waits, `recv_async`'s wake-ups, stats
//! ages). The rest stays on real time: request-reply and scatter-gather
//! deadlines, `Durability::Interval` syncs, background maintenance, the
//! correlation ids' time bits and the names of moved-aside state.
//!
//! Invariants: `tick_ms` is never ahead of `now_ms`; a simulated clock
//! only moves forward, by `SimClock::advance` or a wait, and its
//! readings move together (`now_ms` and `tick_ms` are its start plus the
//! whole ms `now` has moved); every handle of a bus reads the same clock.

#[cfg(feature = "test-util")]
use std::sync::Arc;
#[cfg(feature = "test-util")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod system;

pub(crate) use system::wall_ms;

/// The time as a bus sees it (see the module doc).
#[derive(Debug, Clone, Default)]
pub(crate) enum Clock {
    /// The wall clock and `Instant::now()`; waits block.
    #[default]
    Real,
    /// Moves only when a test advances it or a wait jumps it.
    #[cfg(feature = "test-util")]
    Sim(SimClock),
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        match self {
            Clock::Real => wall_ms(),
            #[cfg(feature = "test-util")]
            Clock::Sim(sim) => sim.now_ms(),
        }
    }

    /// Milliseconds since the Unix epoch as of the system's last clock
    /// tick: never ahead of [`Clock::now_ms`], at most a tick (1 to 10 ms)
    /// behind it, and cheaper to read. Only to check whether a time passed
    /// (see the module doc), never to start one.
    pub(crate) fn tick_ms(&self) -> i64 {
        match self {
            Clock::Real => system::tick_ms(),
            #[cfg(feature = "test-util")]
            Clock::Sim(sim) => sim.now_ms(),
        }
    }

    /// The current instant, for deadlines.
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            #[cfg(feature = "test-util")]
            Clock::Sim(sim) => sim.now(),
        }
    }

    /// The instant at which [`Clock::now_ms`] reaches `due_ms` (now, if it
    /// has passed), to wait until.
    pub(crate) fn instant_at_ms(&self, due_ms: i64) -> Instant {
        let wait = due_ms.saturating_sub(self.now_ms()).max(0);
        self.now() + Duration::from_millis(wait as u64)
    }

    /// True for a simulated clock: its bus serves single-threaded tests,
    /// whose async receives run to completion at their first poll (they
    /// sync their state writes inline rather than on a sync thread).
    pub(crate) fn is_simulated(&self) -> bool {
        match self {
            Clock::Real => false,
            #[cfg(feature = "test-util")]
            Clock::Sim(_) => true,
        }
    }

    /// In place of a wait until `deadline`: a simulated clock moves there
    /// (unless it is past it already) and returns true, the wait is over;
    /// the real clock returns false, the caller really waits.
    #[cfg_attr(not(feature = "test-util"), allow(unused_variables))]
    pub(crate) fn jump_to(&self, deadline: Instant) -> bool {
        match self {
            Clock::Real => false,
            #[cfg(feature = "test-util")]
            Clock::Sim(sim) => {
                sim.advance_to(deadline);
                true
            }
        }
    }
}

/// A simulated clock for tests (feature `test-util`; no stability
/// promise): set it with `BusOptions::clock` and the bus reads its time
/// from it (see the `clock` module doc for what does). Time stands still
/// until [`SimClock::advance`], or until a wait of the bus jumps it
/// forward: a receive with a timeout, or `recv_async`, that finds nothing
/// moves the clock to when it would wake (its deadline, or the next lease
/// end or nack delay falling due) instead of sleeping.
///
/// A wait on it never blocks, so it suits single-threaded tests: a
/// receive waiting for a record another thread has yet to publish would
/// jump to its deadline and return empty. `recv_async` with nothing due
/// still waits for activity on the topic (a publish, an ack, a nack), as
/// on the real clock. Clones share one time.
///
/// ```
/// use std::time::Duration;
/// use logbus::clock::SimClock;
/// use logbus::{Bus, BusOptions, Record};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let clock = SimClock::new();
/// let bus = Bus::open(dir.path(), BusOptions::default().clock(clock.clone()))?;
/// let start = clock.now_ms();
/// assert!(bus.queue("jobs")?.recv(Duration::from_secs(30))?.is_none());
/// assert_eq!(clock.now_ms() - start, 30_000); // at once, in wall time
/// bus.topic("jobs")?.publish(&Record::new(b"x"))?;
/// clock.advance(Duration::from_millis(250));
/// let age = bus.queue("jobs")?.stats()?.oldest_unacked_age;
/// assert_eq!(age, Some(Duration::from_millis(250)));
/// # Ok(()) }
/// ```
#[cfg(feature = "test-util")]
#[derive(Debug, Clone)]
pub struct SimClock {
    shared: Arc<SimTime>,
}

#[cfg(feature = "test-util")]
#[derive(Debug)]
struct SimTime {
    /// The real instant standing for the clock's start.
    origin: Instant,
    /// Nanoseconds the clock moved since its start.
    elapsed_ns: AtomicU64,
}

/// Where every simulated clock starts: 2024-01-01T00:00:00Z.
#[cfg(feature = "test-util")]
const SIM_START_MS: i64 = 1_704_067_200_000;

#[cfg(feature = "test-util")]
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(feature = "test-util")]
impl SimClock {
    /// A clock at 2024-01-01T00:00:00Z, standing still.
    pub fn new() -> SimClock {
        SimClock {
            shared: Arc::new(SimTime {
                origin: Instant::now(),
                elapsed_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Milliseconds since the Unix epoch on this clock.
    pub fn now_ms(&self) -> i64 {
        let elapsed_ms = self.elapsed().as_millis();
        SIM_START_MS.saturating_add(i64::try_from(elapsed_ms).unwrap_or(i64::MAX))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = nanos(by);
        let _ = (self.shared.elapsed_ns).fetch_update(Ordering::AcqRel, Ordering::Acquire, |elapsed| {
            Some(elapsed.saturating_add(by))
        });
    }

    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.shared.elapsed_ns.load(Ordering::Acquire))
    }

    fn now(&self) -> Instant {
        self.shared.origin + self.elapsed()
    }

    /// Moves the clock to `instant`, unless it is there already.
    fn advance_to(&self, instant: Instant) {
        let target = nanos(instant.saturating_duration_since(self.shared.origin));
        self.shared.elapsed_ns.fetch_max(target, Ordering::AcqRel);
    }
}

#[cfg(feature = "test-util")]
impl Default for SimClock {
    fn default() -> Self {
        SimClock::new()
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_moves_only_forward_and_its_readings_together() {
        let sim = SimClock::new();
        let clock = Clock::Sim(sim.clone());
        let (start, start_ms) = (clock.now(), clock.now_ms());
        assert_eq!(start_ms, SIM_START_MS);
        assert_eq!((clock.now(), clock.now_ms()), (start, start_ms), "stands still");
        sim.advance(Duration::from_micros(1500));
        assert_eq!(clock.now() - start, Duration::from_micros(1500));
        assert_eq!(clock.now_ms(), start_ms + 1, "whole ms since the start");
        assert!(clock.jump_to(start + Duration::from_millis(40)));
        assert_eq!(clock.now_ms(), start_ms + 40);
        assert!(clock.jump_to(start), "a wait until a past instant is over");
        assert_eq!(clock.now_ms(), start_ms + 40, "never backwards");
        assert_eq!(
            clock.instant_at_ms(start_ms + 50),
            start + Duration::from_millis(50)
        );
        assert_eq!(clock.instant_at_ms(start_ms), clock.now(), "a past moment is now");
    }

    #[test]
    fn the_real_clock_reads_the_wall_clock_and_never_jumps() {
        let clock = Clock::Real;
        let before = wall_ms();
        let now = clock.now_ms();
        assert!(now >= before && now <= wall_ms());
        let deadline = clock.now() + Duration::from_secs(60);
        assert!(!clock.jump_to(deadline));
        assert!(clock.now() < deadline);
    }
}
