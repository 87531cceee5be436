//! Log configuration and its limits.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::format::{FRAME_HEADER_LEN, FRAME_MAX_BYTES, SEGMENT_HEADER_LEN};
use crate::io::{StdStorage, Storage};

/// Smallest allowed `segment_bytes` (tests shrink segments to roll often).
pub const SEGMENT_BYTES_MIN: u64 = 256;
/// Largest allowed `segment_bytes`: index positions are `u32`, and a full
/// segment plus one maximal frame must stay below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// When an append counts as durable. Each variant is documented by what
/// survives a process crash and a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns only after its record is on stable storage
    /// (fdatasync). Survives process crash and power loss. Concurrent
    /// appenders share one sync (group commit). Readers see a record only
    /// once it is durable.
    Always,
    /// A background thread syncs at least every interval. A process crash
    /// loses nothing; a power loss loses at most the last interval of
    /// acknowledged appends. Readers see records as soon as they are written.
    Interval(Duration),
    /// The operating system writes back when it chooses; [`crate::Log::flush`]
    /// forces a sync. A process crash loses nothing; a power loss may lose
    /// anything not yet flushed.
    Os,
}

/// Options for [`crate::Log::open`]. Builder-style; every field has a default.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Durability, Log, LogOptions};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let options = LogOptions::default()
///     .durability(Durability::Interval(Duration::from_millis(50))) // fsync at least every 50 ms
///     .segment_bytes(16 << 20)
///     .retention_bytes(1 << 30) // oldest whole segments go beyond 1 GiB
///     .retention_age(Duration::from_secs(7 * 24 * 3600));
/// let log = Log::open(dir.path(), options)?;
/// # log.close()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LogOptions {
    pub(crate) durability: Durability,
    pub(crate) segment_bytes: u64,
    pub(crate) max_record_bytes: u64,
    pub(crate) index_interval_bytes: u64,
    pub(crate) retention_bytes: Option<u64>,
    pub(crate) retention_age: Option<Duration>,
    pub(crate) preallocate: bool,
    /// The first reservation of an active segment (see `Segment::reserve`).
    pub(crate) first_reservation_bytes: u64,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Clock,
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogOptions")
            .field("durability", &self.durability)
            .field("segment_bytes", &self.segment_bytes)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("index_interval_bytes", &self.index_interval_bytes)
            .field("retention_bytes", &self.retention_bytes)
            .field("retention_age", &self.retention_age)
            .field("preallocate", &self.preallocate)
            .finish_non_exhaustive()
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Always,
            segment_bytes: 64 << 20,
            max_record_bytes: 1 << 20,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_age: None,
            preallocate: true,
            first_reservation_bytes: 1 << 20,
            storage: Arc::new(StdStorage),
            clock: Clock::Real,
        }
    }
}

impl LogOptions {
    /// Sets the durability mode (default [`Durability::Always`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the size at which the active segment is sealed and a new one
    /// started (default 64 MiB; 256 B to 1 GiB).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Sets the largest encoded record accepted (default 1 MiB). The
    /// effective limit is also capped by the segment size.
    pub fn max_record_bytes(mut self, bytes: u64) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Sets how many bytes of records lie between index entries (default
    /// 4 KiB): smaller is faster to seek, larger keeps indexes smaller.
    pub fn index_interval_bytes(mut self, bytes: u64) -> Self {
        self.index_interval_bytes = bytes;
        self
    }

    /// Deletes the oldest sealed segments while the log exceeds `bytes`.
    pub fn retention_bytes(mut self, bytes: u64) -> Self {
        self.retention_bytes = Some(bytes);
        self
    }

    /// Deletes sealed segments whose newest record is older than `age`.
    pub fn retention_age(mut self, age: Duration) -> Self {
        self.retention_age = Some(age);
        self
    }

    /// Whether to reserve each active segment's space on disk ahead of its
    /// appends (default true: 1 MiB at first, or a quarter of a smaller
    /// segment, doubling up to the segment's size), trimming it when the
    /// segment is sealed or the log closed. An append inside a reservation
    /// cannot run out of space, and on the real file system appends become
    /// copies into a memory mapping of it instead of one `pwrite` each.
    /// Without it, every append is a `pwrite` that grows the file.
    pub fn preallocate(mut self, preallocate: bool) -> Self {
        self.preallocate = preallocate;
        self
    }

    /// Starts each active segment's reservation at `bytes` (still at most
    /// a quarter of the segment) instead of 1 MiB: a state log's, so that
    /// a group that acks little reserves little.
    pub(crate) fn first_reservation_bytes(mut self, bytes: u64) -> Self {
        self.first_reservation_bytes = bytes;
        self
    }

    /// Uses another storage backend, such as `storage::SimStorage` (feature
    /// `test-util`) in fault-injection tests (default: the real file system).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Reads the time from `clock` (default: the real one); a bus gives
    /// its topics its own (`crate::clock`).
    pub(crate) fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The largest encoded record accepted after capping by segment size.
    pub(crate) fn record_limit(&self) -> u64 {
        let fits_segment = self.segment_bytes - SEGMENT_HEADER_LEN as u64;
        self.max_record_bytes
            .min(fits_segment)
            .min(FRAME_MAX_BYTES as u64)
    }

    /// Entries an index needs for one full segment.
    pub(crate) fn index_capacity(&self) -> usize {
        (self.segment_bytes / self.index_interval_bytes + 2) as usize
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            )));
        }
        if self.max_record_bytes < FRAME_HEADER_LEN as u64 {
            return Err(Error::InvalidArgument(format!(
                "max_record_bytes {} is below the {FRAME_HEADER_LEN}-byte frame header",
                self.max_record_bytes
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::InvalidArgument(
                "index_interval_bytes must be positive".into(),
            ));
        }
        if let Durability::Interval(d) = self.durability
            && d.is_zero()
        {
            return Err(Error::InvalidArgument(
                "durability interval must be positive".into(),
            ));
        }
        Ok(())
    }
}
