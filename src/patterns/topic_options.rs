//! The options of a topic and the stats it reports, the same on every
//! backend.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::{Durability, LogOptions, SyncStats};
use crate::patterns::GroupStats;
use crate::record::Record;
use crate::state::ConsumerId;

/// When a topic's records may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// By size and age only (see [`TopicOptions::max_bytes`] and
    /// [`TopicOptions::max_age`]). Consumers that fall behind are told how
    /// many records they skipped.
    #[default]
    Limits,
    /// Also keep every record until all durable subscriptions and groups
    /// have passed it; with no consumers at all, records are kept.
    Interest,
    /// Drop records once every group has acked (or dead-lettered) them.
    WorkQueue,
}

/// Options for a topic. Builder-style; every option has a default. A bus
/// gives new topics its [`crate::BusOptions::topic_defaults`];
/// [`crate::Bus::topic_with`] opens one with its own.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Bus, BusOptions, Durability, Retention, TopicOptions};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let options = TopicOptions::default()
///     .durability(Durability::Always)
///     .max_age(Duration::from_secs(24 * 3600))
///     .retention(Retention::WorkQueue); // records go once every group is done with them
/// let jobs = bus.topic_with("jobs", options)?;
/// # drop(jobs);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TopicOptions {
    pub(crate) log: LogOptions,
    pub(crate) retention: Retention,
    pub(crate) dedupe_window: Duration,
}

/// The default [`TopicOptions::dedupe_window`]: two minutes, as NATS
/// JetStream's duplicate window.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(120);

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            log: LogOptions::default(),
            retention: Retention::Limits,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
        }
    }
}

impl TopicOptions {
    /// Durability of the topic and of its consumers' state.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.log = self.log.durability(durability);
        self
    }

    /// Segment size of the topic's log.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.log = self.log.segment_bytes(bytes);
        self
    }

    /// Largest record accepted.
    pub fn max_record_bytes(mut self, bytes: u64) -> Self {
        self.log = self.log.max_record_bytes(bytes);
        self
    }

    /// Size limit: oldest whole segments go beyond it.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.log = self.log.retention_bytes(bytes);
        self
    }

    /// Age limit: whole segments whose newest record is older go.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.log = self.log.retention_age(age);
        self
    }

    /// The retention mode (default [`Retention::Limits`]).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// How long a record's id ([`crate::Record::id`]) is remembered: a
    /// publish of a record with the id of one published within the window
    /// before appends nothing and returns that one's offset, also after a
    /// crash and reopen. Measured by record timestamps (the append time
    /// unless the publisher set one). Default [`DEFAULT_DEDUPE_WINDOW`];
    /// `Duration::ZERO` turns it off (an id is then only a header). Records
    /// with ids are published one at a time: a batch of several with an id
    /// among them is refused.
    pub fn dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window = window;
        self
    }

    pub(crate) fn durability_mode(&self) -> Durability {
        self.log.durability
    }

    /// The name of the first option set differently in `self` and `other`.
    fn first_difference(&self, other: &TopicOptions) -> Option<&'static str> {
        let (a, b) = (&self.log, &other.log);
        [
            ("durability", a.durability == b.durability),
            ("segment_bytes", a.segment_bytes == b.segment_bytes),
            ("max_record_bytes", a.max_record_bytes == b.max_record_bytes),
            ("max_bytes", a.retention_bytes == b.retention_bytes),
            ("max_age", a.retention_age == b.retention_age),
            ("retention", self.retention == other.retention),
            ("dedupe_window", self.dedupe_window == other.dedupe_window),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(option, _)| option)
    }
}

/// [`Error::InvalidArgument`] naming the option if the topic `name`, open
/// with `open`, is asked for again with `asked` set otherwise: options are
/// never changed, nor silently ignored, on an open topic.
pub(crate) fn check_same_options(name: &str, open: &TopicOptions, asked: &TopicOptions) -> Result<()> {
    match open.first_difference(asked) {
        Some(option) => Err(Error::InvalidArgument(format!(
            "topic {name:?} is open with another {option}: ask with the options it was opened with, \
             or use Bus::topic, which returns it as it is"
        ))),
        None => Ok(()),
    }
}

/// [`Error::InvalidArgument`] for a batch of several records with an id
/// among them while `options`' dedupe window is on: each record with an id
/// is published on its own, so that each is deduplicated.
pub(crate) fn check_batch_ids(options: &TopicOptions, records: &[Record<'_>]) -> Result<()> {
    let refused = !options.dedupe_window.is_zero()
        && records.len() > 1
        && records.iter().any(|record| record.id_bytes().is_some());
    match refused {
        true => Err(Error::InvalidArgument(
            "a batch with records with ids: publish records with ids one at a time, so that each is deduplicated"
                .into(),
        )),
        false => Ok(()),
    }
}

/// A snapshot of a topic and its durable consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic's name.
    pub name: String,
    /// Oldest stored offset.
    pub start_offset: u64,
    /// Offset the next record gets.
    pub end_offset: u64,
    /// Bytes the topic's stored records take: segment headers and frames
    /// (not space reserved ahead of appends) on the embedded backend, the
    /// stream's bytes on NATS.
    pub bytes: u64,
    /// Syncs of the topic's log (fsync latency).
    pub sync: SyncStats,
    /// Every durable consumer, open or not.
    pub consumers: Vec<ConsumerStats>,
}

/// A durable consumer's position.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Which consumer.
    pub id: ConsumerId,
    /// Committed offset (subscription) or low watermark (group).
    pub committed: u64,
    /// Records behind the end of the topic.
    pub lag: u64,
    /// How old the oldest record the consumer has not passed (the one at
    /// `committed`) is, by its timestamp; `None` when it is caught up.
    /// Always `None` on NATS (see docs/NATS.md).
    pub oldest_unconsumed_age: Option<Duration>,
    /// Live counters, for a group open in this process.
    pub group: Option<GroupStats>,
}

impl ConsumerStats {
    /// A consumer at `committed` on a topic ending at `end_offset`.
    pub(crate) fn at(id: ConsumerId, committed: u64, end_offset: u64) -> ConsumerStats {
        ConsumerStats {
            id,
            committed,
            lag: end_offset.saturating_sub(committed),
            oldest_unconsumed_age: None,
            group: None,
        }
    }
}
