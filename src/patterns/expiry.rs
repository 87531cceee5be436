//! Record expiry: a record whose [`EXPIRES_AT`] header has passed is not
//! handed out by a consumer group, which settles it as its
//! [`crate::OnExpiry`] says instead (`api/group.rs`, on every backend).
//! A value that is not a decimal `i64` never expires the record.

use std::time::Duration;

use crate::patterns::headers::EXPIRES_AT;
use crate::record::StoredRecord;

/// The reason an expired record is dead-lettered with.
pub(crate) const EXPIRED: &str = "expired";

/// Whether `record` expired by `now_ms` (asked only if it carries an
/// expiry).
pub(crate) fn expired(record: &StoredRecord, now_ms: impl FnOnce() -> i64) -> bool {
    record
        .header(EXPIRES_AT)
        .and_then(|value| std::str::from_utf8(value).ok()?.parse::<i64>().ok())
        .is_some_and(|expires_at| expires_at <= now_ms())
}

/// The [`EXPIRES_AT`] value of a deadline `timeout` after `now_ms`.
pub(crate) fn expires_after(now_ms: i64, timeout: Duration) -> String {
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_add(timeout_ms).to_string()
}
