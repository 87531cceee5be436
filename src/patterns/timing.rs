//! When a consumer group may hand a record out, by its headers: not before
//! its [`NOT_BEFORE`] (the embedded group machine keeps it back until
//! then; on NATS the public layer releases it until then), and not at or
//! after its [`EXPIRES_AT`] (the public layer settles it as the group's
//! [`crate::OnExpiry`] says instead, on every backend). A value that is not
//! a decimal `i64` is ignored.

use std::time::Duration;

use crate::patterns::headers::{EXPIRES_AT, NOT_BEFORE};
use crate::record::StoredRecord;

/// The reason an expired record is dead-lettered with.
pub(crate) const EXPIRED: &str = "expired";

/// The reason a record handed out before its time is released with (NATS).
pub(crate) const SCHEDULED: &str = "scheduled";

fn header_ms(record: &StoredRecord, name: &str) -> Option<i64> {
    std::str::from_utf8(record.header(name)?).ok()?.parse().ok()
}

/// The time (ms since the Unix epoch) before which `record` may not be
/// handed out, if it names one.
pub(crate) fn not_before(record: &StoredRecord) -> Option<i64> {
    header_ms(record, NOT_BEFORE)
}

/// Whether `record` expired by `now_ms` (asked only if it carries an
/// expiry).
pub(crate) fn expired(record: &StoredRecord, now_ms: impl FnOnce() -> i64) -> bool {
    header_ms(record, EXPIRES_AT).is_some_and(|expires_at| expires_at <= now_ms())
}

/// The [`EXPIRES_AT`] value of a deadline `timeout` after `now_ms`.
pub(crate) fn expires_after(now_ms: i64, timeout: Duration) -> String {
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_add(timeout_ms).to_string()
}
