//! Consumer-group options as the queue tests set them.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use logbus::{Backoff, GroupOptions, RetryPolicy};

/// Leases of `lease`, and up to `max_attempts` deliveries of a record with
/// a fixed `backoff` between them; the rest as by default.
pub fn group_options(lease: Duration, max_attempts: u32, backoff: Duration) -> GroupOptions {
    GroupOptions::default().lease(lease).retry(
        RetryPolicy::default()
            .max_attempts(max_attempts)
            .backoff(Backoff::Fixed(backoff)),
    )
}
