//! Publish-subscribe: every subscription reads every record of its topic,
//! in order, from its own position, on either backend.
//!
//! A durable subscription keeps its committed offset (embedded: in a state
//! log of the bus; NATS: as the ack floor of a durable consumer); after a
//! restart it resumes there, so delivery is at-least-once: records received
//! but not committed before a crash are received again. An ephemeral
//! subscription persists nothing.

use std::time::Duration;

use crate::api::RecvStream;
use crate::backend::SubscriptionBackend;
use crate::embedded::LogSubscription;
use crate::error::Result;
use crate::patterns::StartAt;
use crate::record::StoredRecord;

/// A reader of every record of a topic. Not shared between threads: each
/// subscriber holds its own.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Bus, BusOptions, Record, StartAt};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let news = bus.topic("news")?;
/// news.publish(&Record::new(b"headline"))?;
/// let mut audit = news.subscribe("audit", StartAt::Earliest)?; // durable: resumes after a restart
/// while let Some(record) = audit.recv(Duration::from_millis(10))? {
///     println!("{} {:?}", record.offset(), record.value());
/// }
/// audit.commit()?;
/// assert_eq!((audit.committed(), audit.lag()), (1, 0));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription {
    backend: AnySubscription,
}

#[derive(Debug)]
enum AnySubscription {
    Log(LogSubscription),
    /// Boxed: a JetStream consumer handle carries its whole info (about
    /// 1 KiB), which would otherwise size every embedded subscription.
    #[cfg(feature = "nats")]
    Nats(Box<crate::nats::NatsSubscription>),
    #[cfg(feature = "processes")]
    Remote(crate::remote::RemoteSubscription),
}

// Zero cost without the `nats` and `processes` features: the one-variant enum has no
// discriminant, so a `Subscription` is exactly the embedded handle.
#[cfg(not(any(feature = "nats", feature = "processes")))]
const _: () = assert!(size_of::<Subscription>() == size_of::<LogSubscription>());

#[cfg(feature = "processes")]
impl From<crate::remote::RemoteSubscription> for Subscription {
    #[inline]
    fn from(backend: crate::remote::RemoteSubscription) -> Subscription {
        Subscription {
            backend: AnySubscription::Remote(backend),
        }
    }
}

impl From<LogSubscription> for Subscription {
    #[inline]
    fn from(subscription: LogSubscription) -> Subscription {
        Subscription {
            backend: AnySubscription::Log(subscription),
        }
    }
}

#[cfg(feature = "nats")]
impl From<crate::nats::NatsSubscription> for Subscription {
    #[inline]
    fn from(subscription: crate::nats::NatsSubscription) -> Subscription {
        Subscription {
            backend: AnySubscription::Nats(Box::new(subscription)),
        }
    }
}

impl Subscription {
    /// With auto-commit on, each receive first commits everything received
    /// before it (at-least-once: the last record received before a crash is
    /// received again).
    #[inline]
    pub fn set_auto_commit(&mut self, on: bool) {
        dispatch!(AnySubscription, &mut self.backend, s => s.set_auto_commit(on))
    }

    /// The subscription's name (`None` when ephemeral).
    #[inline]
    pub fn name(&self) -> Option<&str> {
        dispatch!(AnySubscription, &self.backend, s => s.name())
    }

    /// The next record, waiting up to `timeout` for one.
    #[inline]
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<StoredRecord>> {
        dispatch!(AnySubscription, &mut self.backend, s => s.recv(timeout))
    }

    /// The next record if one is readable now.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<StoredRecord>> {
        dispatch!(AnySubscription, &mut self.backend, s => s.try_recv())
    }

    /// The next record, waiting as long as it takes (async, any executor).
    /// Cancelling the future loses no record.
    #[inline]
    pub async fn recv_async(&mut self) -> Result<StoredRecord> {
        dispatch!(AnySubscription, &mut self.backend, s => s.recv_async().await)
    }

    /// The records, as a [`futures_core::Stream`] of
    /// [`Subscription::recv_async`]: `while let Some(record) =
    /// stream.next().await`. It ends after yielding an error. Commit as
    /// usual (auto-commit, or [`Subscription::commit_async`] once the
    /// stream is dropped); dropping the stream loses no record.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use logbus::{Bus, BusOptions, Record, StartAt};
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let bus = Bus::open(dir.path(), BusOptions::default())?;
    /// let news = bus.topic("news")?;
    /// news.publish_batch(&[Record::new(b"a"), Record::new(b"b")])?;
    /// let mut audit = news.subscribe("audit", StartAt::Earliest)?;
    /// futures::executor::block_on(async {
    ///     let mut records = audit.stream().take(2);
    ///     while let Some(record) = records.next().await {
    ///         println!("{:?}", record?.value());
    ///     }
    ///     Ok::<(), logbus::Error>(())
    /// })?;
    /// futures::executor::block_on(audit.commit_async())?;
    /// assert_eq!(audit.committed(), 2);
    /// # Ok(()) }
    /// ```
    pub fn stream(&mut self) -> RecvStream<'_, StoredRecord> {
        RecvStream::new(self, |s: &mut &mut Subscription| Box::pin(s.recv_async()))
    }

    /// Commits the position after the last record received.
    #[inline]
    pub fn commit(&mut self) -> Result<()> {
        dispatch!(AnySubscription, &mut self.backend, s => s.commit())
    }

    /// [`Subscription::commit`] as a future, for any executor; awaiting it
    /// never blocks the thread on a sync (embedded, under
    /// [`crate::Durability::Always`], the log's sync thread runs it).
    ///
    /// Cancellation: dropped before its first poll it did nothing; dropped
    /// later the commit may or may not be stored and
    /// [`Subscription::committed`] is unchanged: at worst the records are
    /// received again after a restart (at-least-once).
    #[inline]
    pub async fn commit_async(&mut self) -> Result<()> {
        dispatch!(AnySubscription, &mut self.backend, s => s.commit_async().await)
    }

    /// Commits `next_offset`: every record below it counts as consumed.
    /// An offset past the topic's end offset is [`crate::Error::InvalidArgument`]
    /// and commits nothing. On NATS, committing an offset other than one just after a record
    /// received since the last commit also moves [`Subscription::position`]
    /// there (the consumer is recreated at it, see [`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md)).
    #[inline]
    pub fn commit_offset(&mut self, next_offset: u64) -> Result<()> {
        dispatch!(AnySubscription, &mut self.backend, s => s.commit_offset(next_offset))
    }

    /// Moves the subscription to `to` (an offset, a time: the first record
    /// stamped at or after it, the earliest or the latest record) and
    /// commits it there, durably: the next record received is the first
    /// still stored at or after it, also after a restart. Returns the
    /// offset it moved to (below the topic's start: the start). An offset
    /// past the topic's end is [`crate::Error::InvalidArgument`] and moves
    /// nothing. On NATS the durable consumer is recreated there.
    #[inline]
    pub fn seek(&mut self, to: StartAt) -> Result<u64> {
        dispatch!(AnySubscription, &mut self.backend, s => s.seek(to))
    }

    /// The committed offset.
    #[inline]
    pub fn committed(&self) -> u64 {
        dispatch!(AnySubscription, &self.backend, s => s.committed())
    }

    /// The offset of the next record this subscription receives.
    #[inline]
    pub fn position(&self) -> u64 {
        dispatch!(AnySubscription, &self.backend, s => s.position())
    }

    /// Records published but not yet committed. On NATS the topic's end is
    /// the last one known (see [`crate::Topic::end_offset`]): as of the last
    /// operation, not a server round trip.
    #[inline]
    pub fn lag(&self) -> u64 {
        dispatch!(AnySubscription, &self.backend, s => s.lag())
    }

    /// Records this subscription never saw because retention removed them
    /// first (since it was opened, including a gap found at open). On NATS
    /// the gaps are counted as records arrive, so a gap is reported once the
    /// record after it was received.
    #[inline]
    pub fn skipped(&self) -> u64 {
        dispatch!(AnySubscription, &self.backend, s => s.skipped())
    }
}
