//! Where a subscription or a group starts, and the one rule of committing.

use crate::error::{Error, Result};

/// [`Error::InvalidArgument`] if `next_offset` is past `end_offset`: a
/// commit there would count records nobody published as consumed.
pub(crate) fn check_commit(next_offset: u64, end_offset: u64) -> Result<()> {
    match next_offset > end_offset {
        true => Err(Error::InvalidArgument(format!(
            "cannot commit offset {next_offset}: the topic ends at {end_offset}"
        ))),
        false => Ok(()),
    }
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest stored record.
    Earliest,
    /// Only records published from now on.
    Latest,
    /// A given offset.
    Offset(u64),
    /// The first record at or after a timestamp (ms since the Unix epoch).
    Timestamp(i64),
}
