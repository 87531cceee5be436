//! The options of a consumer group and the counters it reports, the same
//! on every backend.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::patterns::{RetryPolicy, StartAt, validate_dead_letter_source};

/// Options of a consumer group. Builder-style, like [`crate::TopicOptions`]:
/// start from [`GroupOptions::default`] and set what differs. The fields
/// are public to read; more may be added, so build with the methods.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Backoff, GroupOptions, RetryPolicy, StartAt};
///
/// let options = GroupOptions::default()
///     .lease(Duration::from_secs(10))
///     .retry(RetryPolicy::default().max_attempts(3).backoff(Backoff::Fixed(Duration::from_secs(1))))
///     .dead_letter(true)
///     .start(StartAt::Latest);
/// assert_eq!(options.retry.max_attempts, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupOptions {
    /// How long a receiver holds a record before it is redelivered
    /// (visibility timeout). Default 30 s.
    pub lease: Duration,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// Send records that exhaust their attempts to `<topic>.dlq` (default);
    /// if false they are dropped.
    pub dead_letter: bool,
    /// Where a new group starts (default: the earliest record).
    pub start: StartAt,
    /// What the group does with an expired record (see
    /// [`crate::headers::EXPIRES_AT`]) instead of handing it out.
    pub on_expiry: OnExpiry,
    /// Whether records of one key go out one at a time, in offset order.
    pub ordering: DeliveryOrder,
    /// What a per-key group does with a key after one of its records was
    /// dead-lettered.
    pub on_dead_letter: OnDeadLetter,
    /// How many records one receive leases at most (default 1: only what
    /// it returns). See [`GroupOptions::prefetch`].
    pub prefetch: usize,
}

/// The most records [`GroupOptions::prefetch`] takes.
pub const MAX_PREFETCH: usize = 1024;

/// What a per-key group ([`DeliveryOrder::PerKey`]) does with a key once
/// one of its records was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDeadLetter {
    /// The key goes on with its next record (the default).
    #[default]
    Continue,
    /// The key is parked: its later records wait until a redriven record
    /// of the key (see [`crate::Bus::redrive`]) was handed out and acked
    /// (or dead-lettered in its turn, which parks the key again). The
    /// redriven record goes out ahead of the ones that waited, so the key's
    /// order is the order it would have had without the failure. Other
    /// keys go on meanwhile.
    ParkKey,
}

/// In what order a consumer group hands out records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryOrder {
    /// Any receiver gets any record as soon as it is due: records go out
    /// in parallel in roughly offset order, redeliveries whenever they fall
    /// due (the default).
    #[default]
    Unordered,
    /// Records with the same key (see [`crate::Record::key`]) go out one
    /// at a time and in offset order: a record is handed out only once
    /// every earlier record of its key was acked or dead-lettered, while
    /// records of other keys go to other receivers in parallel. A record
    /// that keeps failing holds back its key, and only its key, until it is
    /// dead-lettered. Records without a key are unordered.
    PerKey,
}

/// What a consumer group does with a record that expired (its
/// [`crate::headers::EXPIRES_AT`] passed) before the group handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExpiry {
    /// Dead-letter it with the reason `expired` (as
    /// [`crate::Delivery::reject`] would; dropped if the group does not
    /// dead-letter). The default.
    #[default]
    DeadLetter,
    /// Drop it: it counts as acked.
    Drop,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            lease: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            dead_letter: true,
            start: StartAt::Earliest,
            on_expiry: OnExpiry::DeadLetter,
            ordering: DeliveryOrder::Unordered,
            on_dead_letter: OnDeadLetter::Continue,
            prefetch: 1,
        }
    }
}

/// A snapshot of a group's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// The topic's end offset.
    pub end_offset: u64,
    /// Lowest offset not yet acked or dead-lettered.
    pub low_watermark: u64,
    /// Records published but not yet settled: `end_offset - low_watermark`.
    pub lag: u64,
    /// Records leased to receivers now.
    pub in_flight: usize,
    /// Records waiting for redelivery (backoff).
    pub waiting: usize,
    /// Age of the oldest unsettled record, from its timestamp.
    pub oldest_unacked_age: Option<Duration>,
    /// Deliveries after the first, since open.
    pub redeliveries: u64,
    /// Records acked since open.
    pub acked: u64,
    /// Records dead-lettered (or dropped, without a dead-letter topic) since open.
    pub dead_lettered: u64,
}

impl GroupOptions {
    /// How long a receiver holds a record before it is redelivered
    /// (visibility timeout). Must be positive.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Attempts and backoff.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Whether records that exhaust their attempts go to `<topic>.dlq`
    /// (true, the default) or are dropped.
    pub fn dead_letter(mut self, dead_letter: bool) -> Self {
        self.dead_letter = dead_letter;
        self
    }

    /// Where a new group starts (an existing group resumes where it was).
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// What the group does with a record that expired before it was
    /// handed out (default [`OnExpiry::DeadLetter`]).
    pub fn on_expiry(mut self, on_expiry: OnExpiry) -> Self {
        self.on_expiry = on_expiry;
        self
    }

    /// Whether records of one key go out one at a time, in offset order
    /// (default [`DeliveryOrder::Unordered`]; the embedded backend only).
    /// Fixed while the group is open in this process.
    pub fn ordering(mut self, ordering: DeliveryOrder) -> Self {
        self.ordering = ordering;
        self
    }

    /// What a per-key group does with a key once one of its records was
    /// dead-lettered (default [`OnDeadLetter::Continue`]).
    /// [`OnDeadLetter::ParkKey`] needs [`DeliveryOrder::PerKey`] and dead
    /// letters (`dead_letter(true)`, the default). Fixed while the group is
    /// open in this process.
    pub fn on_dead_letter(mut self, on_dead_letter: OnDeadLetter) -> Self {
        self.on_dead_letter = on_dead_letter;
        self
    }

    /// Lets a receive lease up to `prefetch` records (1 to
    /// [`MAX_PREFETCH`]; default 1) with one state write, and keep those it
    /// does not return for the group's next receives in this process, as
    /// RabbitMQ's prefetch or Kafka's `max.poll.records` do. A record's
    /// attempt counts from when it was leased; one kept that long gets a
    /// fresh lease when it is handed out once half of its lease is gone,
    /// and one whose lease ran out meanwhile is redelivered like any. A
    /// record kept and never handed out when the process stops (or the
    /// group's last handle is dropped) counts that attempt, as a delivery
    /// open at a crash does. The records kept count in
    /// [`GroupStats::in_flight`]. The embedded backend only: on NATS the
    /// pull consumer fetches as it does without it.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// [`Error::InvalidArgument`] unless attempts and lease are positive,
    /// the prefetch is 1 to [`MAX_PREFETCH`],
    /// a parking group orders per key and dead-letters, and, when
    /// dead-lettering, the dead-letter topic of `topic` has a valid name.
    pub(crate) fn validate_for(&self, topic: &str) -> Result<()> {
        if self.retry.max_attempts == 0 || self.lease.is_zero() {
            return Err(Error::InvalidArgument(
                "max_attempts and lease must be positive".into(),
            ));
        }
        if !(1..=MAX_PREFETCH).contains(&self.prefetch) {
            return Err(Error::InvalidArgument(format!(
                "prefetch must be 1 to {MAX_PREFETCH}, not {}",
                self.prefetch
            )));
        }
        let parks = self.on_dead_letter == OnDeadLetter::ParkKey;
        if parks && (self.ordering != DeliveryOrder::PerKey || !self.dead_letter) {
            return Err(Error::InvalidArgument(
                "OnDeadLetter::ParkKey needs DeliveryOrder::PerKey and dead_letter(true)".into(),
            ));
        }
        match self.dead_letter {
            true => validate_dead_letter_source(topic),
            false => Ok(()),
        }
    }
}
