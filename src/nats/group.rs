//! The NATS consumer group (the `Nats` variant of [`crate::Group`]): a
//! [`GroupConsumer`] (a durable pull consumer shared by every
//! receiver: AckWait is the lease, MaxDeliver `max_attempts + 1`, the
//! retry backoff sent as the delay of a nak) on a topic of a NATS bus.
//!
//! Invariants:
//! - every receive fails with [`crate::Error::Closed`] once this process
//!   closed the bus, before any request to the server;
//! - the server holds the group's state (ack floor, pending and leased
//!   messages); [`NatsGroup::stats`] asks it, and only the counters
//!   (acked, redelivered, dead-lettered) are this process's own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::consumer::{GroupConsumer, GroupSpec, NatsDelivery};
use super::topic::{ConsumerClaim, NatsTopic};
use crate::backend::GroupBackend;
use crate::backend::TopicBackend;
use crate::clock::wall_ms;
use crate::error::{Error, Result};
use crate::patterns::{DeliveryOrder, GroupOptions, GroupStats, OnExpiry, StartAt};
use crate::state::ConsumerId;

/// A consumer group on JetStream. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct NatsGroup {
    /// Held while a handle of the group lives: no deletion meanwhile.
    _claim: Arc<ConsumerClaim>,
    topic: NatsTopic,
    consumer: GroupConsumer,
    on_expiry: OnExpiry,
}

impl NatsGroup {
    /// Opens (creating if needed) the group `name` on `topic`; an existing
    /// consumer keeps its start and position and takes `options`' lease
    /// and attempts (AckWait, MaxDeliver).
    pub(crate) fn open(topic: NatsTopic, name: &str, options: &GroupOptions) -> Result<NatsGroup> {
        options.validate_for(topic.name())?;
        if options.ordering != DeliveryOrder::Unordered {
            // A JetStream consumer's max-ack-pending counts a whole
            // consumer, not a key.
            return Err(Error::Unsupported {
                backend: "nats",
                feature: "per-key ordering (DeliveryOrder::PerKey)",
            });
        }
        let bus = &topic.shared().bus;
        bus.check_open()?;
        let spec = GroupSpec::from_group_options(options);
        let dead_letters = topic.shared().dead_letter_spec();
        let claim = Arc::new(topic.claim(ConsumerId::Group(name.to_owned()))?);
        let consumer = GroupConsumer::open(&bus.client, topic.name(), name, spec, dead_letters)?;
        Ok(NatsGroup {
            _claim: claim,
            topic,
            consumer,
            on_expiry: options.on_expiry,
        })
    }
}

impl GroupBackend for NatsGroup {
    type Delivery = NatsDelivery;

    fn name(&self) -> &str {
        self.consumer.name()
    }

    fn recv(&self, timeout: Duration) -> Result<Option<NatsDelivery>> {
        self.topic.shared().bus.check_open()?;
        self.consumer.recv(timeout)
    }

    fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<NatsDelivery>> {
        self.topic.shared().bus.check_open()?;
        self.consumer.recv_batch(max, timeout)
    }

    fn try_recv(&self) -> Result<Option<NatsDelivery>> {
        self.topic.shared().bus.check_open()?;
        self.consumer.try_recv()
    }

    fn try_recv_batch(&self, max: usize) -> Result<Vec<NatsDelivery>> {
        self.topic.shared().bus.check_open()?;
        self.consumer.try_recv_batch(max)
    }

    async fn recv_async(&self) -> Result<NatsDelivery> {
        self.topic.shared().bus.check_open()?;
        self.consumer.recv_async().await
    }

    fn seek(&self, to: StartAt) -> Result<u64> {
        self.topic.shared().bus.check_open()?;
        self.consumer.seek(to)
    }

    fn on_expiry(&self) -> OnExpiry {
        self.on_expiry
    }

    fn now_ms(&self) -> i64 {
        wall_ms()
    }

    fn stats(&self) -> Result<GroupStats> {
        let shared = self.topic.shared();
        shared.bus.check_open()?;
        let state = self.consumer.state()?;
        shared.note_end(state.delivered + state.pending);
        let end_offset = shared.end_offset();
        let low_watermark = state.ack_floor;
        let oldest = match low_watermark < end_offset {
            true => shared.bus.client.read(self.topic.name(), low_watermark)?,
            false => None,
        };
        let oldest_unacked_age =
            oldest.map(|r| Duration::from_millis(wall_ms().saturating_sub(r.timestamp()).max(0) as u64));
        let counters = self.consumer.counters();
        Ok(GroupStats {
            end_offset,
            low_watermark,
            lag: end_offset.saturating_sub(low_watermark),
            in_flight: state.ack_pending,
            waiting: 0,
            oldest_unacked_age,
            redeliveries: counters.redeliveries.load(Ordering::Relaxed),
            acked: counters.acked.load(Ordering::Relaxed),
            dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
        })
    }
}
