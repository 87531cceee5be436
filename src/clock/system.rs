//! The system's wall clocks, read with one `clock_gettime` each: no
//! `SystemTime` and no conversion through `Duration`, which cost more than
//! the reading itself on the paths that read the time once per record.
//! The only module besides `io/mmap.rs` allowed `unsafe`: one call into
//! the C library, with a pointer to a value of its own.
#![allow(unsafe_code)]

/// Milliseconds since the Unix epoch on the wall clock (`CLOCK_REALTIME`).
pub(crate) fn wall_ms() -> i64 {
    read_ms(libc::CLOCK_REALTIME)
}

/// Milliseconds since the Unix epoch as of the kernel's last clock tick
/// (`CLOCK_REALTIME_COARSE`): never ahead of [`wall_ms`], and behind it
/// by at most one tick (1 to 10 ms, by the kernel's configuration). A read
/// copies the time the kernel keeps; it reads no hardware counter.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn tick_ms() -> i64 {
    read_ms(libc::CLOCK_REALTIME_COARSE)
}

/// Where the kernel has no coarse clock, the wall clock.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn tick_ms() -> i64 {
    wall_ms()
}

/// Reads clock `id` in ms since the epoch; a clock the system cannot read
/// (none of these fails on a supported system) reads as the epoch, as
/// `SystemTime` before the epoch did.
fn read_ms(id: libc::clockid_t) -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec` that outlives the call,
    // and `clock_gettime` writes nothing else.
    let status = unsafe { libc::clock_gettime(id, &mut now) };
    if status != 0 {
        return 0;
    }
    // `time_t` and `c_long` are `i64` here but `i32` on some 32-bit
    // systems: the casts only ever widen.
    #[allow(clippy::unnecessary_cast)]
    let (secs, nanos) = (now.tv_sec as i64, now.tv_nsec as i64);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000).max(0)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    fn std_ms() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
    }

    #[test]
    fn the_precise_clock_reads_the_wall_clock() {
        let before = std_ms();
        let now = wall_ms();
        assert!(before <= now && now <= std_ms());
    }

    #[test]
    fn the_tick_clock_is_never_ahead_and_at_most_a_tick_behind() {
        for _ in 0..1000 {
            let before = wall_ms();
            let coarse = tick_ms();
            let after = wall_ms();
            assert!(coarse <= after, "coarse {coarse} is ahead of {after}");
            // A tick is 10 ms at most (HZ=100); the margin covers a
            // preemption between the reads.
            assert!(coarse >= before - 50, "coarse {coarse} lags {before}");
        }
    }
}
