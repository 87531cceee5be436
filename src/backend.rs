//! The backend seam: one trait per role, documented once, implemented by
//! the embedded log (`LogBus`, `LogTopic`, ...) and by NATS JetStream
//! (`NatsBus`, `NatsTopic`, ..., feature `nats`).
//!
//! The public handles ([`crate::Bus`], [`crate::Topic`],
//! [`crate::Subscription`], [`crate::Group`], [`crate::Delivery`],
//! [`crate::Requester`]) each hold one
//! implementation in a private enum and call it through these traits, so
//! the compiler checks that both backends offer the same operations with
//! the same types. Without the `nats` feature the enums have one variant
//! and no discriminant: a handle is exactly its embedded implementation.
//!
//! Backends return their own handles (associated types), never the public
//! ones; what is the same on both (responders, scatter-gather, redrive,
//! request ids and headers) is written once above the traits. Each method
//! here says what every backend guarantees; the public handle's docs say
//! where NATS differs.
//!
//! The `*_async` methods are the same operations as futures any executor
//! can await (no runtime of the caller's is needed: the embedded backend
//! waits on `event_listener` notifications and leaves syncs to a log's sync
//! thread, NATS runs each step as a task on the connection's runtime and
//! awaits its join handle). Awaiting one never
//! blocks the executor's thread on a sync or a round trip. Each says what a
//! future dropped before it completed did (cancellation): nothing that
//! breaks at-least-once delivery, but an effect may have happened.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use crate::error::Result;
use crate::patterns::{
    CorrelationId, GroupOptions, GroupStats, OnExpiry, Reply, ReplyCheck, StartAt, TopicOptions, TopicStats,
};
use crate::record::{Record, StoredRecord};
use crate::state::{ConsumerId, StateRepair};

/// A bus: named topics and requesters on one store.
pub(crate) trait BusBackend {
    /// The backend's topic.
    type Topic: TopicBackend;
    /// The backend's requester.
    type Requester: RequesterBackend;

    /// The topic `name`, created on first use with the bus's defaults; an
    /// open topic is returned as it is.
    fn topic(&self, name: &str) -> Result<Self::Topic>;
    /// The topic `name`, created on first use with `options`; an open
    /// topic is returned as it is (the public layer checks the options).
    fn topic_with(&self, name: &str, options: TopicOptions) -> Result<Self::Topic>;
    /// The requester `name` and its inbox topic `<name>.inbox`.
    fn requester(&self, name: &str) -> Result<Self::Requester>;
    /// Stats of every stored topic, sorted by name.
    fn stats(&self) -> Result<Vec<TopicStats>>;
    /// Names of every stored topic, sorted.
    fn topic_names(&self) -> Result<Vec<String>>;
    /// Deletes the durable subscription or group `consumer` of `topic`
    /// (names already validated): its position and its hold on
    /// `Interest`/`WorkQueue` retention; `Ok(false)` if there was none.
    /// [`crate::Error::Locked`], deleting nothing, while it is open in
    /// this process.
    fn delete_consumer(&self, topic: &str, consumer: &ConsumerId) -> Result<bool>;
    /// Deletes the topic `name` (already validated) with its dead-letter
    /// topic and every consumer of both; `Ok(false)` if the topic did not
    /// exist. [`crate::Error::Locked`], deleting nothing, while a handle
    /// of this process holds one of the topics.
    fn delete_topic(&self, name: &str) -> Result<bool>;
    /// Closes the bus: every later call on it or its handles is `Closed`.
    fn close(&self) -> Result<()>;
}

/// A named stream of records.
pub(crate) trait TopicBackend {
    /// The backend's subscription.
    type Subscription: SubscriptionBackend;
    /// The backend's consumer group.
    type Group: GroupBackend;

    /// The topic's name.
    fn name(&self) -> &str;
    /// The options the topic was opened with.
    fn options(&self) -> &TopicOptions;
    /// Appends `record`; its offset. By default a batch of one.
    fn publish(&self, record: &Record<'_>) -> Result<u64> {
        Ok(self.publish_batch(std::slice::from_ref(record))?.start)
    }
    /// Appends `records` in order, at consecutive offsets; a failure may
    /// leave a prefix stored.
    fn publish_batch(&self, records: &[Record<'_>]) -> Result<Range<u64>>;
    /// [`TopicBackend::publish`] as a future. Dropped before its first
    /// poll it did nothing; dropped later the record may be stored.
    fn publish_async(&self, record: &Record<'_>) -> impl Future<Output = Result<u64>> + Send;
    /// [`TopicBackend::publish_batch`] as a future. Dropped before its
    /// first poll it did nothing; dropped later a prefix of the batch (or
    /// all of it) may be stored.
    fn publish_batch_async(&self, records: &[Record<'_>]) -> impl Future<Output = Result<Range<u64>>> + Send;
    /// Publishes `record`, moved back by a redrive from the dead letter at
    /// `dlq_offset` of `dlq_topic`. A backend that can recognise a repeat
    /// of the same move (after a crash between the move and its ack)
    /// stores it once.
    fn publish_redriven(&self, record: &Record<'_>, dlq_topic: &str, dlq_offset: u64) -> Result<u64>;
    /// The durable subscription `name` (already validated); `start`
    /// applies when it is created.
    fn subscribe(&self, name: &str, start: StartAt) -> Result<Self::Subscription>;
    /// A subscription that is not persisted.
    fn subscribe_ephemeral(&self, start: StartAt) -> Result<Self::Subscription>;
    /// The consumer group `name` (already validated), created with
    /// `options`; an existing group takes the lease, retry policy and
    /// dead-letter setting of `options`.
    fn group(&self, name: &str, options: GroupOptions) -> Result<Self::Group>;
    /// Where responders of this topic's bus store their replies.
    fn reply_sink(&self) -> std::sync::Arc<dyn ReplySink>;
    /// The offset the next record gets, as last known.
    fn end_offset(&self) -> u64;
    /// The oldest stored offset, as last known.
    fn start_offset(&self) -> u64;
    /// Positions and counters of the topic and its durable consumers.
    fn stats(&self) -> Result<TopicStats>;
    /// Removes every record stored so far, whatever retention and the
    /// consumers say; offsets are not reused. The offset the topic then
    /// starts at (its end when purged).
    fn purge(&self) -> Result<u64>;
    /// Consumer state repaired since the topic opened; none where the
    /// backend keeps consumer state elsewhere.
    fn state_repairs(&self) -> Vec<StateRepair> {
        Vec::new()
    }
}

/// A durable or ephemeral reader of every record of a topic.
pub(crate) trait SubscriptionBackend {
    /// Turns committing before each receive on or off.
    fn set_auto_commit(&mut self, on: bool);
    /// The subscription's name; `None` when ephemeral.
    fn name(&self) -> Option<&str>;
    /// The next record, waiting up to `timeout`.
    fn recv(&mut self, timeout: Duration) -> Result<Option<StoredRecord>>;
    /// The next record if one is readable now.
    fn try_recv(&mut self) -> Result<Option<StoredRecord>>;
    /// The next record, however long it takes; cancelling loses nothing.
    fn recv_async(&mut self) -> impl Future<Output = Result<StoredRecord>> + Send;
    /// Commits the position after the last record received.
    fn commit(&mut self) -> Result<()>;
    /// [`SubscriptionBackend::commit`] as a future. Dropped before its
    /// first poll it did nothing; dropped later the commit may or may not
    /// be stored, and [`SubscriptionBackend::committed`] is unchanged: the
    /// records are received again after a restart at worst.
    fn commit_async(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Commits `next_offset`; past the topic's end is `InvalidArgument`.
    fn commit_offset(&mut self, next_offset: u64) -> Result<()>;
    /// Moves the subscription to `to` and commits it there (durable): the
    /// next record received is the first at or after it still stored. An
    /// offset past the end is `InvalidArgument`. The offset moved to.
    fn seek(&mut self, to: StartAt) -> Result<u64>;
    /// The committed offset.
    fn committed(&self) -> u64;
    /// The offset of the next record received.
    fn position(&self) -> u64;
    /// Records published and not committed.
    fn lag(&self) -> u64;
    /// Records retention removed before this subscription read them.
    fn skipped(&self) -> u64;
}

/// Competing receivers sharing one cursor on a topic.
pub(crate) trait GroupBackend {
    /// The backend's delivery.
    type Delivery: DeliveryBackend;

    /// The group's name.
    fn name(&self) -> &str;
    /// Leases the next available record, waiting up to `timeout`; its
    /// attempt is counted before it is handed out.
    fn recv(&self, timeout: Duration) -> Result<Option<Self::Delivery>>;
    /// Leases up to `max` records, waiting up to `timeout` for the first.
    fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Self::Delivery>>;
    /// Leases the next record if one is available now.
    fn try_recv(&self) -> Result<Option<Self::Delivery>>;
    /// Leases up to `max` records available now.
    fn try_recv_batch(&self, max: usize) -> Result<Vec<Self::Delivery>>;
    /// Leases the next record, however long it takes.
    fn recv_async(&self) -> impl Future<Output = Result<Self::Delivery>> + Send;
    /// The group's position and counters.
    fn stats(&self) -> Result<GroupStats>;
    /// Moves the group to `to`, durably: every record from there on is
    /// delivered as new, none before it again; deliveries handed out
    /// before no longer settle their records. An offset past the end is
    /// `InvalidArgument`. The offset moved to.
    fn seek(&self, to: StartAt) -> Result<u64>;
    /// What the group does with a record that expired before it was
    /// handed out (its options'; the public layer applies it).
    fn on_expiry(&self) -> OnExpiry;
    /// The group's clock (ms since the Unix epoch), by which records expire
    /// and fall due.
    fn now_ms(&self) -> i64;
}

/// One leased record of a group, settled once.
pub(crate) trait DeliveryBackend {
    /// The record.
    fn record(&self) -> &StoredRecord;
    /// Which delivery of the record this is (1 for the first).
    fn attempt(&self) -> u32;
    /// Completes the record.
    fn ack(self) -> Result<()>;
    /// Fails this attempt: redelivered after the retry policy's backoff,
    /// or dead-lettered once attempts run out.
    fn nack(self, reason: &str) -> Result<()>;
    /// As [`DeliveryBackend::nack`], redelivered after `delay`.
    fn nack_with_delay(self, reason: &str, delay: Duration) -> Result<()>;
    /// Dead-letters the record now, whatever attempts remain.
    fn reject(self, reason: &str) -> Result<()>;
    /// [`DeliveryBackend::ack`] as a future. Dropped before its first poll
    /// the delivery is dropped unsettled (released, as a nack); dropped
    /// later the ack may or may not be stored: the record is done, or
    /// delivered again (at-least-once).
    fn ack_async(self) -> impl Future<Output = Result<()>> + Send;
    /// [`DeliveryBackend::nack_with_delay`] as a future, with the retry
    /// policy's backoff when `delay` is `None`. Dropped at any point, the
    /// record is delivered again or dead-lettered, once.
    fn nack_async(self, reason: &str, delay: Option<Duration>) -> impl Future<Output = Result<()>> + Send;
    /// [`DeliveryBackend::reject`] as a future. Dropped before its first
    /// poll the delivery is released (as a nack); dropped later the record
    /// is dead-lettered, or (if the dead letter's steps were cut short)
    /// delivered again and dead-lettered then, once.
    fn reject_async(self, reason: &str) -> impl Future<Output = Result<()>> + Send;
    /// Keeps the lease for `by` more from now.
    fn extend_lease(&mut self, by: Duration) -> Result<()>;
}

/// The asking side of request-reply: an inbox topic and the replies in it.
pub(crate) trait RequesterBackend {
    /// The backend's topic (services are asked by publishing to one).
    type Topic: TopicBackend;

    /// The inbox topic's name.
    fn inbox(&self) -> &str;
    /// The topic `name` of the requester's bus.
    fn topic(&self, name: &str) -> Result<Self::Topic>;
    /// Every reply to `id` stored so far, first first.
    fn replies(&self, id: CorrelationId) -> Result<Vec<Reply>>;
    /// Runs `check` until it is done, waiting in between until a reply to
    /// `id` may have arrived or the instant it names.
    fn watch<T>(&self, id: CorrelationId, check: impl FnMut() -> Result<ReplyCheck<T>>) -> Result<T>;
    /// [`RequesterBackend::watch`] as a future, with the check given every
    /// reply to `id` stored so far (read without blocking) each time: it
    /// waits in between without blocking. Dropping it loses nothing.
    fn watch_async<T: Send>(
        &self,
        id: CorrelationId,
        check: impl FnMut(Vec<Reply>) -> ReplyCheck<T> + Send,
    ) -> impl Future<Output = Result<T>> + Send;
    /// The first reply to `id`, however long it takes.
    fn reply_async(&self, id: CorrelationId) -> impl Future<Output = Result<Reply>> + Send;
    /// Closes the requester's inbox state.
    fn close(&self) -> Result<()>;
}

/// A boxed future, for the one `dyn` trait.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Stores replies in requesters' inboxes.
pub(crate) trait ReplySink: std::fmt::Debug + Send + Sync {
    /// Stores `reply` (already carrying its headers) in the inbox topic
    /// `inbox` as a reply to `id`; its offset there.
    fn publish_reply(&self, inbox: &str, id: CorrelationId, reply: &Record<'_>) -> Result<u64>;
    /// [`ReplySink::publish_reply`] as a future; dropped after its first
    /// poll, the reply may be stored.
    fn publish_reply_async<'a>(
        &'a self,
        inbox: &'a str,
        id: CorrelationId,
        reply: &'a Record<'a>,
    ) -> BoxFuture<'a, Result<u64>>;
}
