//! Waiting for background maintenance: a log deletes the files of the
//! segments retention removed on its maintenance thread, soon after the
//! append or ack that removed them but not before it returns.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// The longest [`eventually`] waits: far beyond any real delay, so that
/// only a deletion that never happens fails the test.
const PATIENCE: Duration = Duration::from_secs(60);

/// Returns once `condition` holds; fails the test with `what` if it does
/// not within [`PATIENCE`].
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
