//! Point-to-point queues as consumer groups, on either backend: competing
//! receivers share one position on a topic; each record is leased to one
//! receiver at a time until it is acked, nacked, rejected, dropped or its
//! lease expires. Once a record has failed `max_attempts` times it goes to
//! the dead-letter topic `<topic>.dlq`, once.
//!
//! [`Group`] and [`Delivery`] hold one backend (`docs/BACKENDS.md`): the
//! embedded [`LogGroup`]/[`LogDelivery`] (`src/embedded/group.rs`) or, with the
//! `nats` feature, a durable pull consumer (`src/nats/group.rs`). Each
//! method is one call into the backend; where JetStream behaves otherwise
//! the method's doc says so (`docs/NATS.md`, "Where JetStream differs").
//!
//! Delivery is at-least-once: an ack lost in a crash, or a lease that
//! expires while the receiver is still working, leads to a redelivery.
//!
//! Expiry is applied here, once for both backends: a received record whose
//! [`crate::headers::EXPIRES_AT`] has passed (by the group's clock) is
//! settled as the group's [`OnExpiry`] says and the receive goes on to the
//! next record; the caller never sees it. So is a record received before
//! its [`crate::headers::NOT_BEFORE`] (only NATS hands one out: the
//! embedded group machine keeps it back), which is released until then.

use std::time::{Duration, Instant};

use crate::api::RecvStream;
use crate::backend::{DeliveryBackend, GroupBackend};
use crate::embedded::{LogDelivery, LogGroup};
use crate::error::Result;
use crate::log::{Async, Block, Wait, ready};
use crate::patterns::{EXPIRED, GroupStats, OnExpiry, SCHEDULED, StartAt, expired, not_before};
use crate::record::StoredRecord;

/// A consumer group: competing receivers sharing one topic. Cheap to
/// clone; share it between threads.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Bus, BusOptions, GroupOptions, Record};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let jobs = bus.topic("jobs")?;
/// jobs.publish_batch(&[Record::new(b"resize a.png"), Record::new(b"resize b.png")])?;
/// let workers = jobs.group("workers", GroupOptions::default())?;
/// // Any number of threads or handles compete; each record goes to one of them.
/// for delivery in workers.recv_batch(10, Duration::from_millis(100))? {
///     delivery.ack()?;
/// }
/// assert_eq!(workers.stats()?.low_watermark, 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Group {
    backend: AnyGroup,
}

#[derive(Debug, Clone)]
enum AnyGroup {
    Log(LogGroup),
    #[cfg(feature = "nats")]
    Nats(crate::nats::NatsGroup),
    #[cfg(feature = "processes")]
    Remote(crate::remote::RemoteGroup),
}

/// A record leased to one receiver. Settle it with [`Delivery::ack`],
/// [`Delivery::nack`] or [`Delivery::reject`]; dropping it unsettled
/// releases it for redelivery (after backoff), like a nack.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Backoff, Bus, BusOptions, GroupOptions, Record, RetryPolicy};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let jobs = bus.topic("jobs")?;
/// jobs.publish(&Record::new(b"poison"))?;
/// let retry = RetryPolicy::default().max_attempts(2).backoff(Backoff::Fixed(Duration::ZERO));
/// let workers = jobs.group("workers", GroupOptions::default().retry(retry))?;
/// let first = workers.try_recv()?.expect("a delivery");
/// assert_eq!(first.attempt(), 1);
/// first.nack("could not parse")?; // retried after the backoff
/// let second = workers.recv(Duration::from_secs(1))?.expect("redelivered");
/// second.nack("could not parse")?; // the last attempt: moved to "jobs.dlq"
/// assert_eq!(bus.topic("jobs.dlq")?.end_offset(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Delivery {
    backend: AnyDelivery,
}

#[derive(Debug)]
enum AnyDelivery {
    Log(LogDelivery),
    /// Boxed: a JetStream message carries its subjects, headers and a
    /// client handle, which would otherwise size every embedded delivery.
    #[cfg(feature = "nats")]
    Nats(Box<crate::nats::NatsDelivery>),
    #[cfg(feature = "processes")]
    Remote(crate::remote::RemoteDelivery),
}

// Zero cost without the `nats` and `processes` features: the one-variant enums have no
// discriminant, so a `Group` and a `Delivery` are exactly the embedded ones.
#[cfg(not(any(feature = "nats", feature = "processes")))]
const _: () = assert!(size_of::<Group>() == size_of::<LogGroup>());
#[cfg(not(any(feature = "nats", feature = "processes")))]
const _: () = assert!(size_of::<Delivery>() == size_of::<LogDelivery>());

#[cfg(feature = "processes")]
impl From<crate::remote::RemoteDelivery> for Delivery {
    #[inline]
    fn from(backend: crate::remote::RemoteDelivery) -> Delivery {
        Delivery {
            backend: AnyDelivery::Remote(backend),
        }
    }
}

#[cfg(feature = "processes")]
impl From<crate::remote::RemoteGroup> for Group {
    #[inline]
    fn from(backend: crate::remote::RemoteGroup) -> Group {
        Group {
            backend: AnyGroup::Remote(backend),
        }
    }
}

impl From<LogGroup> for Group {
    #[inline]
    fn from(group: LogGroup) -> Group {
        Group {
            backend: AnyGroup::Log(group),
        }
    }
}

#[cfg(feature = "nats")]
impl From<crate::nats::NatsGroup> for Group {
    #[inline]
    fn from(group: crate::nats::NatsGroup) -> Group {
        Group {
            backend: AnyGroup::Nats(group),
        }
    }
}

impl From<LogDelivery> for Delivery {
    #[inline]
    fn from(delivery: LogDelivery) -> Delivery {
        Delivery {
            backend: AnyDelivery::Log(delivery),
        }
    }
}

#[cfg(feature = "nats")]
impl From<crate::nats::NatsDelivery> for Delivery {
    #[inline]
    fn from(delivery: crate::nats::NatsDelivery) -> Delivery {
        Delivery {
            backend: AnyDelivery::Nats(Box::new(delivery)),
        }
    }
}

/// Why a received record is not handed out.
enum Withheld {
    /// Its expiry passed.
    Expired,
    /// It is scheduled this much later.
    Early(Duration),
}

fn deliveries<D: Into<Delivery>>(batch: Vec<D>) -> Vec<Delivery> {
    batch.into_iter().map(Into::into).collect()
}

impl Group {
    /// The group's name.
    #[inline]
    pub fn name(&self) -> &str {
        dispatch!(AnyGroup, &self.backend, g => g.name())
    }

    /// The next record available to this group, waiting up to `timeout`.
    /// Expired records are settled on the way (see [`OnExpiry`]).
    #[inline]
    pub fn recv(&self, timeout: Duration) -> Result<Option<Delivery>> {
        let deadline = Instant::now() + timeout;
        let mut left = timeout;
        loop {
            let received = dispatch!(AnyGroup, &self.backend, g => g.recv(left)?.map(Delivery::from));
            let Some(delivery) = received else {
                return Ok(None);
            };
            match self.withheld(&delivery) {
                None => return Ok(Some(delivery)),
                Some(withheld) => ready(self.settle_withheld(delivery, withheld, Block))?,
            }
            left = deadline.saturating_duration_since(Instant::now());
        }
    }

    /// Up to `max` records available to this group, waiting up to `timeout`
    /// for the first: returns as soon as at least one is available, and an
    /// empty `Vec` on timeout. Each [`Delivery`] is then settled on its
    /// own, like one from [`Group::recv`]. Embedded, all of them are leased
    /// with one state write (one sync under `Durability::Always`); on NATS
    /// the first comes from a waiting pull, the rest from one no-wait fetch.
    #[inline]
    pub fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + timeout;
        let mut left = timeout;
        loop {
            let batch = dispatch!(AnyGroup, &self.backend, g => deliveries(g.recv_batch(max, left)?));
            if batch.is_empty() {
                return Ok(batch);
            }
            let batch = self.deliverable(batch)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            left = deadline.saturating_duration_since(Instant::now());
        }
    }

    /// The next record available now, without waiting.
    #[inline]
    pub fn try_recv(&self) -> Result<Option<Delivery>> {
        loop {
            let received = dispatch!(AnyGroup, &self.backend, g => g.try_recv()?.map(Delivery::from));
            let Some(delivery) = received else {
                return Ok(None);
            };
            match self.withheld(&delivery) {
                None => return Ok(Some(delivery)),
                Some(withheld) => ready(self.settle_withheld(delivery, withheld, Block))?,
            }
        }
    }

    /// Up to `max` records available now (embedded: leased with one state
    /// write; on NATS: one no-wait fetch).
    #[inline]
    pub fn try_recv_batch(&self, max: usize) -> Result<Vec<Delivery>> {
        loop {
            let batch = dispatch!(AnyGroup, &self.backend, g => deliveries(g.try_recv_batch(max)?));
            if batch.is_empty() {
                return Ok(batch);
            }
            let batch = self.deliverable(batch)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Why `delivery` is not to be handed out, if it is not: its record
    /// expired, or is scheduled later (by the group's clock).
    #[inline]
    fn withheld(&self, delivery: &Delivery) -> Option<Withheld> {
        let record = delivery.record();
        // Expiry and schedule are headers: most records carry none.
        if !record.has_headers() {
            return None;
        }
        let now = || dispatch!(AnyGroup, &self.backend, g => g.now_ms());
        if expired(record, now) {
            return Some(Withheld::Expired);
        }
        let early_ms = not_before(record)?.saturating_sub(now());
        (early_ms > 0).then(|| Withheld::Early(Duration::from_millis(early_ms.unsigned_abs())))
    }

    /// Settles `delivery` as `withheld` says (waiting as `W` says): an
    /// expired record as the group's [`OnExpiry`] says, an early one
    /// released until its time.
    async fn settle_withheld<W: Wait>(&self, delivery: Delivery, withheld: Withheld, _: W) -> Result<()> {
        let on_expiry = dispatch!(AnyGroup, &self.backend, g => g.on_expiry());
        match (withheld, on_expiry, W::BLOCKS) {
            (Withheld::Expired, OnExpiry::DeadLetter, true) => delivery.reject(EXPIRED),
            (Withheld::Expired, OnExpiry::DeadLetter, false) => delivery.reject_async(EXPIRED).await,
            (Withheld::Expired, OnExpiry::Drop, true) => delivery.ack(),
            (Withheld::Expired, OnExpiry::Drop, false) => delivery.ack_async().await,
            (Withheld::Early(delay), _, true) => delivery.nack_with_delay(SCHEDULED, delay),
            (Withheld::Early(delay), _, false) => delivery.nack_with_delay_async(SCHEDULED, delay).await,
        }
    }

    /// The deliveries of `batch` to hand out (the others settled, see
    /// [`Group::settle_withheld`]).
    fn deliverable(&self, batch: Vec<Delivery>) -> Result<Vec<Delivery>> {
        let mut kept = Vec::with_capacity(batch.len());
        for delivery in batch {
            match self.withheld(&delivery) {
                Some(withheld) => ready(self.settle_withheld(delivery, withheld, Block))?,
                None => kept.push(delivery),
            }
        }
        Ok(kept)
    }

    /// The next record, waiting as long as it takes (async, any executor).
    /// Cancelling the future loses no record. On NATS a record that the
    /// cancelled receive's pull still brings (within a few seconds) is
    /// released at once but counts one more attempt ([`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md)).
    #[inline]
    pub async fn recv_async(&self) -> Result<Delivery> {
        loop {
            let delivery: Delivery = dispatch!(AnyGroup, &self.backend, g => g.recv_async().await?.into());
            match self.withheld(&delivery) {
                None => return Ok(delivery),
                Some(withheld) => self.settle_withheld(delivery, withheld, Async).await?,
            }
        }
    }

    /// The deliveries, as a [`futures_core::Stream`] of
    /// [`Group::recv_async`] on a clone of this handle (so it is
    /// `'static`): `while let Some(delivery) = stream.next().await`. It
    /// ends after yielding an error; dropping it loses no record.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use logbus::{Bus, BusOptions, GroupOptions, Record};
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let bus = Bus::open(dir.path(), BusOptions::default())?;
    /// let jobs = bus.topic("jobs")?;
    /// jobs.publish_batch(&[Record::new(b"a"), Record::new(b"b")])?;
    /// let workers = jobs.group("workers", GroupOptions::default())?;
    /// futures::executor::block_on(async {
    ///     let mut deliveries = workers.stream().take(2);
    ///     while let Some(delivery) = deliveries.next().await {
    ///         delivery?.ack_async().await?;
    ///     }
    ///     Ok::<(), logbus::Error>(())
    /// })?;
    /// assert_eq!(workers.stats()?.acked, 2);
    /// # Ok(()) }
    /// ```
    pub fn stream(&self) -> RecvStream<'static, Delivery> {
        RecvStream::new(self.clone(), |g: &mut Group| Box::pin(g.recv_async()))
    }

    /// Counters and positions of the group. On NATS the positions come
    /// from the consumer's info on the server (one round trip) and the
    /// counters count what this process did since it opened the group.
    #[inline]
    pub fn stats(&self) -> Result<GroupStats> {
        dispatch!(AnyGroup, &self.backend, g => g.stats())
    }

    /// Moves the group to `to` (an offset, a time: the first record stamped
    /// at or after it, the earliest or the latest record), for every
    /// receiver of the group and durably (embedded: a snapshot of its state
    /// log; on NATS the consumer is recreated there): every record from
    /// there on is delivered as new, with fresh attempts, and none before
    /// it again. Returns the offset it moved to (below the topic's start:
    /// the start). The group may be receiving meanwhile: a delivery handed
    /// out before the seek no longer settles its record (embedded: its
    /// `ack`, `nack` and `reject` fail with [`crate::Error::LeaseExpired`]).
    /// An offset past the topic's end is [`crate::Error::InvalidArgument`]
    /// and moves nothing; so is a seek while the group is writing a dead
    /// letter (embedded; seek again).
    #[inline]
    pub fn seek(&self, to: StartAt) -> Result<u64> {
        dispatch!(AnyGroup, &self.backend, g => g.seek(to))
    }
}

impl Delivery {
    /// The record.
    #[inline]
    pub fn record(&self) -> &StoredRecord {
        dispatch!(AnyDelivery, &self.backend, d => d.record())
    }

    /// Which delivery of this record this is, from 1.
    #[inline]
    pub fn attempt(&self) -> u32 {
        dispatch!(AnyDelivery, &self.backend, d => d.attempt())
    }

    /// Completes the record: it is never delivered again (once the ack is
    /// durable). Embedded, fails with [`crate::Error::LeaseExpired`] if the lease
    /// ran out and the record went to another receiver; on NATS the server
    /// confirms the ack but does not say whether it came too late
    /// ([`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md)).
    #[inline]
    pub fn ack(self) -> Result<()> {
        dispatch!(AnyDelivery, self.backend, d => d.ack())
    }

    /// Fails this attempt: the record is redelivered after the retry
    /// policy's backoff, or dead-lettered if attempts are exhausted.
    #[inline]
    pub fn nack(self, reason: &str) -> Result<()> {
        dispatch!(AnyDelivery, self.backend, d => d.nack(reason))
    }

    /// Like [`Delivery::nack`], with an explicit delay instead of the backoff.
    #[inline]
    pub fn nack_with_delay(self, reason: &str, delay: Duration) -> Result<()> {
        dispatch!(AnyDelivery, self.backend, d => d.nack_with_delay(reason, delay))
    }

    /// Sends the record straight to the dead-letter topic, without retries.
    #[inline]
    pub fn reject(self, reason: &str) -> Result<()> {
        dispatch!(AnyDelivery, self.backend, d => d.reject(reason))
    }

    /// [`Delivery::ack`] as a future, for any executor; awaiting it never
    /// blocks the thread on a sync (embedded, under
    /// [`crate::Durability::Always`], the log's sync thread runs it) or a
    /// round trip (NATS: a task on the connection's runtime runs it).
    ///
    /// Cancellation: dropped before its first poll, the delivery is dropped
    /// unsettled (released for redelivery, as a nack); dropped later, the
    /// ack may or may not be stored: the record is done, or delivered again
    /// (at-least-once).
    ///
    /// ```
    /// use logbus::{Bus, BusOptions, GroupOptions, Record};
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let bus = Bus::open(dir.path(), BusOptions::default())?;
    /// let jobs = bus.topic("jobs")?;
    /// let workers = jobs.group("workers", GroupOptions::default())?;
    /// futures::executor::block_on(async {
    ///     jobs.publish_async(&Record::new(b"resize a.png")).await?;
    ///     let delivery = workers.recv_async().await?;
    ///     delivery.ack_async().await
    /// })?;
    /// assert_eq!(workers.stats()?.acked, 1);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub async fn ack_async(self) -> Result<()> {
        dispatch!(AnyDelivery, self.backend, d => d.ack_async().await)
    }

    /// [`Delivery::nack`] as a future (see [`Delivery::ack_async`]).
    /// Cancellation: whenever the future is dropped, the record is
    /// delivered again or dead-lettered, once (dropped unpolled, the
    /// delivery is released as a dropped delivery is).
    #[inline]
    pub async fn nack_async(self, reason: &str) -> Result<()> {
        dispatch!(AnyDelivery, self.backend, d => d.nack_async(reason, None).await)
    }

    /// [`Delivery::nack_with_delay`] as a future; cancellation as
    /// [`Delivery::nack_async`].
    #[inline]
    pub async fn nack_with_delay_async(self, reason: &str, delay: Duration) -> Result<()> {
        dispatch!(AnyDelivery, self.backend, d => d.nack_async(reason, Some(delay)).await)
    }

    /// [`Delivery::reject`] as a future (see [`Delivery::ack_async`]).
    /// Cancellation: dropped before its first poll, the delivery is
    /// released (as a nack); dropped later, the record is dead-lettered, or
    /// (if the dead letter's steps were cut short) due to be dead-lettered
    /// again, once.
    #[inline]
    pub async fn reject_async(self, reason: &str) -> Result<()> {
        dispatch!(AnyDelivery, self.backend, d => d.reject_async(reason).await)
    }

    /// Extends the lease to `by` from now. On NATS the server takes no
    /// duration: the lease is reset to one full lease
    /// ([`crate::GroupOptions::lease`], the consumer's AckWait) from now, whatever
    /// `by` is ([`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md)).
    #[inline]
    pub fn extend_lease(&mut self, by: Duration) -> Result<()> {
        dispatch!(AnyDelivery, &mut self.backend, d => d.extend_lease(by))
    }
}
