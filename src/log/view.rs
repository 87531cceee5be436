//! [`LogView`]: a log seen through a handle that can only read it, for
//! logs whose writes belong to someone else (a topic's log belongs to its
//! bus, whose retention modes would be bypassed by a direct truncation).

use std::path::Path;

use super::engine::Log;
use super::reader::{Cursor, Position};
use super::recovery::RecoveryReport;
use crate::error::Result;
use crate::record::StoredRecord;

/// Read-only access to a [`Log`]: reads, cursors and counters, and nothing
/// that appends, truncates, syncs or closes.
///
/// ```
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = logbus::Bus::open(dir.path(), logbus::BusOptions::default())?;
/// let topic = bus.topic("orders")?;
/// let offset = topic.publish(&logbus::Record::new(b"x"))?;
/// let log = topic.log().expect("an embedded topic");
/// assert_eq!(log.read(offset)?.expect("stored").value(), b"x");
/// # Ok(()) }
/// ```
///
/// Writing through it does not compile:
///
/// ```compile_fail
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = logbus::Bus::open(dir.path(), logbus::BusOptions::default())?;
/// let topic = bus.topic("orders")?;
/// topic.log().expect("an embedded topic").truncate_before(1)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LogView<'a> {
    log: &'a Log,
}

impl<'a> LogView<'a> {
    pub(crate) fn new(log: &'a Log) -> Self {
        LogView { log }
    }

    /// See [`Log::read`].
    pub fn read(&self, offset: u64) -> Result<Option<StoredRecord>> {
        self.log.read(offset)
    }

    /// See [`Log::cursor`].
    pub fn cursor(&self, position: Position) -> Result<Cursor> {
        self.log.cursor(position)
    }

    /// See [`Log::start_offset`].
    pub fn start_offset(&self) -> u64 {
        self.log.start_offset()
    }

    /// See [`Log::end_offset`].
    pub fn end_offset(&self) -> u64 {
        self.log.end_offset()
    }

    /// See [`Log::recovery_report`].
    pub fn recovery_report(&self) -> &'a RecoveryReport {
        self.log.recovery_report()
    }

    /// See [`Log::retention_failures`].
    pub fn retention_failures(&self) -> u64 {
        self.log.retention_failures()
    }

    /// See [`Log::dir`].
    pub fn dir(&self) -> &'a Path {
        self.log.dir()
    }
}
