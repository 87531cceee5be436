//! Topics: named streams of records that publishers append to and that
//! subscriptions and consumer groups read, on either backend.
//!
//! [`Topic`] holds one backend (see `docs/BACKENDS.md`): the embedded
//! [`LogTopic`] (a [`crate::Log`] in the bus directory) or, with the `nats`
//! feature, a JetStream stream. Each method is one call into the backend;
//! the options and stats types here are shared by both.
//!
//! Offsets are the same on both: a topic's first record has offset 0, and
//! each record gets the next one.

use std::ops::Range;

use crate::api::Group;
use crate::api::Responder;
use crate::api::Subscription;
use crate::backend::TopicBackend;
use crate::embedded::LogTopic;
use crate::error::Result;
use crate::log::LogView;
use crate::patterns::GroupOptions;
use crate::patterns::StartAt;
use crate::patterns::TopicOptions;
use crate::patterns::TopicStats;
use crate::patterns::validate_name;
use crate::record::Record;

/// A named stream of records. Cheap to clone.
///
/// ```
/// use logbus::{Bus, BusOptions, Record, TopicOptions, Retention};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let orders = bus.topic_with("orders", TopicOptions::default().retention(Retention::Interest))?;
/// let first = orders.publish(&Record::new(b"order 1").key(b"customer-7"))?;
/// let batch = orders.publish_batch(&[Record::new(b"order 2"), Record::new(b"order 3")])?;
/// assert_eq!((first, batch), (0, 1..3));
/// assert_eq!(orders.end_offset(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Topic {
    backend: AnyTopic,
}

#[derive(Debug, Clone)]
enum AnyTopic {
    Log(LogTopic),
    #[cfg(feature = "nats")]
    Nats(crate::nats::NatsTopic),
    #[cfg(feature = "processes")]
    Remote(crate::remote::RemoteTopic),
}

// Zero cost without the `nats` and `processes` features: the one-variant enum has no
// discriminant, so a `Topic` is exactly the embedded handle.
#[cfg(not(any(feature = "nats", feature = "processes")))]
const _: () = assert!(size_of::<Topic>() == size_of::<LogTopic>());

#[cfg(feature = "processes")]
impl From<crate::remote::RemoteTopic> for Topic {
    #[inline]
    fn from(backend: crate::remote::RemoteTopic) -> Topic {
        Topic {
            backend: AnyTopic::Remote(backend),
        }
    }
}

impl From<LogTopic> for Topic {
    #[inline]
    fn from(topic: LogTopic) -> Topic {
        Topic {
            backend: AnyTopic::Log(topic),
        }
    }
}

#[cfg(feature = "nats")]
impl From<crate::nats::NatsTopic> for Topic {
    #[inline]
    fn from(topic: crate::nats::NatsTopic) -> Topic {
        Topic {
            backend: AnyTopic::Nats(topic),
        }
    }
}

impl Topic {
    /// The topic's name.
    #[inline]
    pub fn name(&self) -> &str {
        dispatch!(AnyTopic, &self.backend, t => t.name())
    }

    /// Appends a record; returns its offset. Durable per the topic's
    /// durability when this returns (on NATS: once the server acknowledged
    /// it, see [`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md)). On NATS a publish that finds no stream
    /// leader (a cluster electing one) is sent again for up to
    /// `NatsOptions::timeout`; an error after a publish whose
    /// acknowledgement never came leaves unknown whether it was stored, so
    /// retrying it may store the record twice.
    #[inline]
    pub fn publish(&self, record: &Record<'_>) -> Result<u64> {
        dispatch!(AnyTopic, &self.backend, t => t.publish(record))
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
        dispatch!(AnyTopic, &self.backend, t => t.publish_batch(records))
    }

    /// [`Topic::publish`] as a future, for any executor (tokio, smol,
    /// `futures::executor`, ...). Awaiting it never blocks the thread:
    /// embedded, the record is written when the future is first polled
    /// and, under [`crate::Durability::Always`], the future then waits for a
    /// sync run by the log's sync thread; on NATS the publish and its
    /// acknowledgement run as a task on the connection's runtime.
    ///
    /// Cancellation: a future dropped before its first poll did nothing;
    /// dropped later, the record may be stored (embedded: it is, and
    /// becomes durable with the next sync) without its offset being known.
    ///
    /// ```
    /// use logbus::{Bus, BusOptions, Record};
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let bus = Bus::open(dir.path(), BusOptions::default())?;
    /// let orders = bus.topic("orders")?;
    /// let offset = futures::executor::block_on(orders.publish_async(&Record::new(b"order 1")))?;
    /// assert_eq!(offset, 0);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub async fn publish_async(&self, record: &Record<'_>) -> Result<u64> {
        dispatch!(AnyTopic, &self.backend, t => t.publish_async(record).await)
    }

    /// [`Topic::publish_batch`] as a future (see [`Topic::publish_async`]).
    /// Cancellation: dropped before its first poll it did nothing; dropped
    /// later the batch (embedded: all of it; on NATS: a prefix) may be
    /// stored.
    #[inline]
    pub async fn publish_batch_async(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        dispatch!(AnyTopic, &self.backend, t => t.publish_batch_async(records).await)
    }

    /// A durable subscription named `name`: it resumes from its committed
    /// offset; `start` applies only when it is created.
    #[inline]
    pub fn subscribe(&self, name: &str, start: StartAt) -> Result<Subscription> {
        validate_name("subscription", name)?;
        dispatch!(AnyTopic, &self.backend, t => t.subscribe(name, start).map(Subscription::from))
    }

    /// An ephemeral subscription: not persisted, starts at `start` every time.
    #[inline]
    pub fn subscribe_ephemeral(&self, start: StartAt) -> Result<Subscription> {
        dispatch!(AnyTopic, &self.backend, t => t.subscribe_ephemeral(start).map(Subscription::from))
    }

    /// A responder serving requests published to this topic as the
    /// consumer group `group`: with several such groups on one topic, each
    /// is a recipient of a [`crate::Recipients::GroupsOf`] scatter.
    #[inline]
    pub fn responder(&self, group: &str, options: GroupOptions) -> Result<Responder> {
        let replies = dispatch!(AnyTopic, &self.backend, t => t.reply_sink());
        Ok(Responder::new(self.group(group, options)?, replies))
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
        validate_name("group", name)?;
        dispatch!(AnyTopic, &self.backend, t => t.group(name, options).map(Group::from))
    }

    /// The offset the next published record gets (once readable). On NATS
    /// this is the value as of the last operation that told it (a publish
    /// through this process, opening the topic, [`Topic::stats`]): another
    /// process may have published since.
    #[inline]
    pub fn end_offset(&self) -> u64 {
        dispatch!(AnyTopic, &self.backend, t => t.end_offset())
    }

    /// The oldest stored offset. On NATS, as of the last operation that
    /// told it (opening the topic, [`Topic::stats`]).
    #[inline]
    pub fn start_offset(&self) -> u64 {
        dispatch!(AnyTopic, &self.backend, t => t.start_offset())
    }

    /// Positions and counters of the topic and its durable consumers (on
    /// NATS: asked of the server, which also refreshes
    /// [`Topic::end_offset`] and [`Topic::start_offset`]).
    #[inline]
    pub fn stats(&self) -> Result<TopicStats> {
        dispatch!(AnyTopic, &self.backend, t => t.stats())
    }

    /// Removes every record the topic holds now, whatever its retention and
    /// its consumers' positions say (its dead-letter topic is a topic of
    /// its own: purge it apart). Offsets are not reused: the topic then
    /// starts at its end offset, which this returns, and the next record
    /// gets that offset. Consumers positioned below it move to it as they
    /// do when retention overtakes them: a subscription counts the records
    /// it never received in [`Subscription::skipped`], a group never hands
    /// out a record below it again (a delivery already handed out can
    /// still be settled). Records published while the purge runs may
    /// stay. Embedded, it is durable when it returns (the segments' files
    /// are deleted by then).
    #[inline]
    pub fn purge(&self) -> Result<u64> {
        dispatch!(AnyTopic, &self.backend, t => t.purge())
    }

    /// The consumer state logs of this topic repaired since the bus opened
    /// it, under [`crate::RecoveryMode::MoveAsideDamagedState`]: which
    /// consumer, where its damaged state went, what was lost and where it
    /// restarted. Always empty on NATS, which keeps consumer state on the
    /// server.
    pub fn state_repairs(&self) -> Vec<crate::StateRepair> {
        dispatch!(AnyTopic, &self.backend, t => t.state_repairs())
    }

    /// The options the topic was opened with.
    #[inline]
    pub(crate) fn options(&self) -> &TopicOptions {
        dispatch!(AnyTopic, &self.backend, t => t.options())
    }

    /// The topic's underlying log, read-only (reads and cursors: appends
    /// go through [`Topic::publish`], and deletion through the topic's
    /// retention), on the embedded backend; `None` on NATS, whose records
    /// live on the server.
    pub fn log(&self) -> Option<LogView<'_>> {
        match &self.backend {
            AnyTopic::Log(t) => Some(LogView::new(t.log())),
            #[cfg(feature = "nats")]
            AnyTopic::Nats(_) => None,
            #[cfg(feature = "processes")]
            AnyTopic::Remote(_) => None,
        }
    }
}
