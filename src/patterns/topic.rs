//! Topics: named streams of records that publishers append to and that
//! subscriptions and consumer groups read, on either backend.
//!
//! [`Topic`] holds one backend (see `docs/BACKENDS.md`): the embedded
//! [`LogTopic`] (a [`Log`] in the bus directory) or, with the `nats`
//! feature, a JetStream stream. Each method is one call into the backend;
//! the options and stats types here are shared by both.
//!
//! Offsets are the same on both: a topic's first record has offset 0, and
//! each record gets the next one.

use std::ops::Range;
use std::time::Duration;

use crate::bus::validate_name;
use crate::error::{Error, Result};
use crate::log::{Durability, LogOptions, LogView, SyncStats};
use crate::patterns::log_topic::LogTopic;
use crate::patterns::queue::{Group, GroupOptions, GroupStats};
use crate::patterns::subscription::{StartAt, Subscription};
use crate::record::Record;

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

/// Options for a topic.
#[derive(Debug, Clone)]
pub struct TopicOptions {
    pub(crate) log: LogOptions,
    pub(crate) retention: Retention,
}

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            log: LogOptions::default(),
            retention: Retention::Limits,
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

/// Which consumer a tracked position belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsumerId {
    /// A durable subscription, by name.
    Subscription(String),
    /// A consumer group, by name.
    Group(String),
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
    /// Live counters, for a group open in this process.
    pub group: Option<GroupStats>,
}

/// A named stream of records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Topic {
    backend: TopicBackend,
}

#[derive(Debug, Clone)]
enum TopicBackend {
    Log(LogTopic),
    #[cfg(feature = "nats")]
    Nats(crate::nats::NatsTopic),
}

// Zero cost without the `nats` feature: the one-variant enum has no
// discriminant, so a `Topic` is exactly the embedded handle.
#[cfg(not(feature = "nats"))]
const _: () = assert!(size_of::<Topic>() == size_of::<LogTopic>());

impl From<LogTopic> for Topic {
    #[inline]
    fn from(topic: LogTopic) -> Topic {
        Topic {
            backend: TopicBackend::Log(topic),
        }
    }
}

#[cfg(feature = "nats")]
impl From<crate::nats::NatsTopic> for Topic {
    #[inline]
    fn from(topic: crate::nats::NatsTopic) -> Topic {
        Topic {
            backend: TopicBackend::Nats(topic),
        }
    }
}

impl Topic {
    /// The topic's name.
    #[inline]
    pub fn name(&self) -> &str {
        dispatch!(TopicBackend, &self.backend, t => t.name())
    }

    /// Appends a record; returns its offset. Durable per the topic's
    /// durability when this returns (on NATS: once the server acknowledged
    /// it, see `docs/NATS.md`). On NATS a publish that finds no stream
    /// leader (a cluster electing one) is sent again for up to
    /// `NatsOptions::timeout`; an error after a publish whose
    /// acknowledgement never came leaves unknown whether it was stored, so
    /// retrying it may store the record twice.
    #[inline]
    pub fn publish(&self, record: &Record<'_>) -> Result<u64> {
        dispatch!(TopicBackend, &self.backend, t => t.publish(record))
    }

    /// Appends records in order; returns their offsets, which are
    /// consecutive. Embedded, the batch is one write (and one sync). On
    /// NATS it is one publish per record (pipelined), each expecting the
    /// previous one as the stream's last: if another publisher
    /// interleaves, the call fails with [`crate::Error::Backend`] after
    /// storing a prefix of the batch, as a crash during an embedded write
    /// may leave a prefix.
    #[inline]
    pub fn publish_batch(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        dispatch!(TopicBackend, &self.backend, t => t.publish_batch(records))
    }

    /// A durable subscription named `name`: it resumes from its committed
    /// offset; `start` applies only when it is created.
    #[inline]
    pub fn subscribe(&self, name: &str, start: StartAt) -> Result<Subscription> {
        validate_name("subscription", name)?;
        dispatch!(TopicBackend, &self.backend, t => t.subscribe(name, start).map(Subscription::from))
    }

    /// An ephemeral subscription: not persisted, starts at `start` every time.
    #[inline]
    pub fn subscribe_ephemeral(&self, start: StartAt) -> Result<Subscription> {
        dispatch!(TopicBackend, &self.backend, t => t.subscribe_ephemeral(start).map(Subscription::from))
    }

    /// A responder serving requests published to this topic as the
    /// consumer group `group`: with several such groups on one topic, each
    /// is a recipient of a [`crate::Recipients::GroupsOf`] scatter.
    #[inline]
    pub fn responder(&self, group: &str, options: GroupOptions) -> Result<crate::Responder> {
        dispatch!(TopicBackend, &self.backend, t => t.responder(group, options))
    }

    /// The consumer group `name`, shared by every receiver that asks for it.
    /// A group that exists takes `options`' lease, retry policy and
    /// dead-letter setting (embedded: every handle of it in this process,
    /// from its next decision on; on NATS, where the group is a consumer on
    /// the server, its AckWait and MaxDeliver are updated for every handle,
    /// and the retry policy and dead-letter setting apply to the deliveries
    /// of this handle); its start and position are kept. Receivers should
    /// agree on the options: the last to ask sets them.
    #[inline]
    pub fn group(&self, name: &str, options: GroupOptions) -> Result<Group> {
        dispatch!(TopicBackend, &self.backend, t => t.group(name, options))
    }

    /// The offset the next published record gets (once readable). On NATS
    /// this is the value as of the last operation that told it (a publish
    /// through this process, opening the topic, [`Topic::stats`]): another
    /// process may have published since.
    #[inline]
    pub fn end_offset(&self) -> u64 {
        dispatch!(TopicBackend, &self.backend, t => t.end_offset())
    }

    /// The oldest stored offset. On NATS, as of the last operation that
    /// told it (opening the topic, [`Topic::stats`]).
    #[inline]
    pub fn start_offset(&self) -> u64 {
        dispatch!(TopicBackend, &self.backend, t => t.start_offset())
    }

    /// Positions and counters of the topic and its durable consumers (on
    /// NATS: asked of the server, which also refreshes
    /// [`Topic::end_offset`] and [`Topic::start_offset`]).
    #[inline]
    pub fn stats(&self) -> Result<TopicStats> {
        dispatch!(TopicBackend, &self.backend, t => t.stats())
    }

    /// The consumer state logs of this topic repaired since the bus opened
    /// it, under [`crate::RecoveryMode::MoveAsideDamagedState`]: which
    /// consumer, where its damaged state went, what was lost and where it
    /// restarted. Always empty on NATS, which keeps consumer state on the
    /// server.
    pub fn state_repairs(&self) -> Vec<crate::StateRepair> {
        match &self.backend {
            TopicBackend::Log(t) => t.state_repairs(),
            #[cfg(feature = "nats")]
            TopicBackend::Nats(_) => Vec::new(),
        }
    }

    /// The topic's underlying log, read-only (reads and cursors: appends
    /// go through [`Topic::publish`], and deletion through the topic's
    /// retention), on the embedded backend; `None` on NATS, whose records
    /// live on the server.
    pub fn log(&self) -> Option<LogView<'_>> {
        match &self.backend {
            TopicBackend::Log(t) => Some(LogView::new(t.log())),
            #[cfg(feature = "nats")]
            TopicBackend::Nats(_) => None,
        }
    }
}
