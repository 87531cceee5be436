//! Durable pull consumers for consumer groups (explicit acks, AckWait as
//! the lease, the client's backoff in a delayed nak, dead letters published
//! by the client), and the one-message pull that subscriptions share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures_util::StreamExt;

use super::client::{ConsumerState, NatsClient, StreamSpec};
use super::codec::{millis, stored_record};
use super::error::nats_error;
use super::names::{group_consumer_name, stream_name, topic_subject};
use crate::error::{Error, Result};
use crate::format::Failure;
use crate::log::now_ms;
use crate::patterns::{DeadLetter, GroupOptions, RetryPolicy, StartAt, dead_letter_topic};
use crate::record::StoredRecord;

/// Pull requests shorter than this are sent as no-wait fetches.
pub(crate) const MIN_PULL_WAIT: Duration = Duration::from_millis(10);

/// The consumer configuration of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// AckWait: how long a delivery is leased.
    pub lease: Duration,
    /// Attempts and backoff; the backoff is applied by the client as the
    /// delay of a nak.
    pub retry: RetryPolicy,
    /// Publish exhausted records to `<topic>.dlq` (else they are termed).
    pub dead_letter: bool,
    /// Where a new group starts.
    pub start: StartAt,
    /// MaxDeliver: the server stops redelivering after this many
    /// deliveries. `max_attempts + 1` by default: the extra delivery is
    /// never handed out but dead-lettered, which covers a receiver that
    /// died during its last attempt; -1 for no server-side limit.
    pub max_deliver: i64,
}

impl GroupSpec {
    /// The consumer a group opened with `options` gets.
    pub fn from_group_options(options: &GroupOptions) -> GroupSpec {
        GroupSpec {
            lease: options.lease,
            retry: options.retry,
            dead_letter: options.dead_letter,
            start: options.start,
            max_deliver: i64::from(options.retry.max_attempts) + 1,
        }
    }

    fn config(&self, group: &str) -> Result<pull::Config> {
        let name = group_consumer_name(group);
        Ok(pull::Config {
            durable_name: Some(name.clone()),
            name: Some(name),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.lease,
            max_deliver: self.max_deliver,
            deliver_policy: deliver_policy(self.start)?,
            ..Default::default()
        })
    }
}

/// `StartAt` as a deliver policy (offsets are sequences minus one;
/// `Latest` is "new from now on", not the last stored message).
pub(crate) fn deliver_policy(start: StartAt) -> Result<DeliverPolicy> {
    Ok(match start {
        StartAt::Earliest => DeliverPolicy::All,
        StartAt::Latest => DeliverPolicy::New,
        StartAt::Offset(offset) => DeliverPolicy::ByStartSequence {
            start_sequence: offset + 1,
        },
        StartAt::Timestamp(ms) => DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::DateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .map_err(|e| Error::InvalidArgument(format!("timestamp {ms}: {e}")))?,
        },
    })
}

/// What a group's deliveries share.
#[derive(Debug)]
struct GroupShared {
    bus: NatsClient,
    topic: String,
    group: String,
    spec: GroupSpec,
    consumer: PullConsumer,
    rng: Mutex<fastrand::Rng>,
    counters: GroupCounters,
}

/// What a group did in this process since it was opened (the counters of
/// [`crate::GroupStats`]; the server keeps no such totals).
#[derive(Debug, Default)]
pub(crate) struct GroupCounters {
    pub(crate) redeliveries: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

impl GroupCounters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A consumer group on JetStream: competing receivers of one durable pull
/// consumer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupConsumer {
    shared: Arc<GroupShared>,
}

/// Pulls up to `max` messages available now (a no-wait fetch).
async fn pull_now(consumer: &PullConsumer, max: usize) -> Result<Vec<async_nats::jetstream::Message>> {
    let mut batch = consumer
        .fetch()
        .max_messages(max)
        .messages()
        .await
        .map_err(|e| nats_error("pull", e))?;
    let mut messages = Vec::with_capacity(max);
    while let Some(message) = batch.next().await {
        messages.push(message.map_err(|e| nats_error("pull", e))?);
    }
    Ok(messages)
}

/// Pulls one message, waiting up to `wait` (no wait when `None` or short).
pub(crate) async fn pull_one(
    consumer: &PullConsumer,
    wait: Option<Duration>,
) -> Result<Option<async_nats::jetstream::Message>> {
    let batch = match wait {
        Some(wait) if wait >= MIN_PULL_WAIT => {
            consumer.batch().max_messages(1).expires(wait).messages().await
        }
        _ => consumer.fetch().max_messages(1).messages().await,
    };
    let mut batch = batch.map_err(|e| nats_error("pull", e))?;
    match batch.next().await {
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(e)) => Err(nats_error("pull", e)),
        None => Ok(None),
    }
}

impl GroupConsumer {
    /// Opens (creating if needed) the group `group` on `topic`, whose
    /// stream must exist. An existing consumer keeps its configuration.
    pub fn open(bus: &NatsClient, topic: &str, group: &str, spec: GroupSpec) -> Result<GroupConsumer> {
        let config = spec.config(group)?;
        let consumer = bus.block_on(async {
            let stream = bus
                .js()
                .get_stream_no_info(stream_name(topic))
                .await
                .map_err(|e| nats_error("get stream", e))?;
            stream
                .get_or_create_consumer(&group_consumer_name(group), config)
                .await
                .map_err(|e| nats_error("create consumer", e))
        })??;
        Ok(GroupConsumer {
            shared: Arc::new(GroupShared {
                bus: bus.clone(),
                topic: topic.to_owned(),
                group: group.to_owned(),
                spec,
                consumer,
                rng: Mutex::new(fastrand::Rng::new()),
                counters: GroupCounters::default(),
            }),
        })
    }

    /// The next delivery, waiting up to `timeout`. A message delivered
    /// more than `max_attempts` times (its last receiver let the lease
    /// expire, or died) is dead-lettered here and not handed out.
    pub fn recv(&self, timeout: Duration) -> Result<Option<NatsDelivery>> {
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let consumer = &self.shared.consumer;
            let Some(message) = self.shared.bus.block_on(pull_one(consumer, Some(wait)))?? else {
                return Ok(None);
            };
            if let Some(delivery) = self.admit(message)? {
                return Ok(Some(delivery));
            }
        }
    }

    /// The next delivery available now.
    pub fn try_recv(&self) -> Result<Option<NatsDelivery>> {
        loop {
            let consumer = &self.shared.consumer;
            let Some(message) = self.shared.bus.block_on(pull_one(consumer, None))?? else {
                return Ok(None);
            };
            if let Some(delivery) = self.admit(message)? {
                return Ok(Some(delivery));
            }
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.shared.group
    }

    /// Up to `max` deliveries, waiting up to `timeout` for the first: one
    /// pull waiting for the first message, one no-wait fetch for the rest.
    pub fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<NatsDelivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let Some(first) = self.recv(timeout)? else {
            return Ok(Vec::new());
        };
        let mut batch = vec![first];
        batch.extend(self.try_recv_batch(max - 1)?);
        Ok(batch)
    }

    /// Up to `max` deliveries available now (one no-wait fetch; fewer if
    /// some of them had to be dead-lettered instead).
    pub fn try_recv_batch(&self, max: usize) -> Result<Vec<NatsDelivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let messages = self.shared.bus.block_on(pull_now(&self.shared.consumer, max))??;
        let mut batch = Vec::with_capacity(messages.len());
        for message in messages {
            batch.extend(self.admit(message)?);
        }
        Ok(batch)
    }

    /// The group's counters in this process.
    pub(crate) fn counters(&self) -> &GroupCounters {
        &self.shared.counters
    }

    fn admit(&self, message: async_nats::jetstream::Message) -> Result<Option<NatsDelivery>> {
        let info = message.info().map_err(|e| nats_error("message metadata", e))?;
        let attempt = u32::try_from(info.delivered).unwrap_or(u32::MAX);
        let record = stored_record(
            message.headers.as_ref(),
            &message.payload,
            info.stream_sequence,
            millis(&info.published),
        )?;
        let delivery = NatsDelivery {
            group: self.shared.clone(),
            message: Some(message),
            record,
            attempt,
        };
        if attempt > self.shared.spec.retry.max_attempts {
            delivery.dead_letter("attempts exhausted: the last lease expired")?;
            return Ok(None);
        }
        if attempt > 1 {
            GroupCounters::count(&self.shared.counters.redeliveries);
        }
        Ok(Some(delivery))
    }

    /// The consumer's positions on the server.
    pub fn state(&self) -> Result<ConsumerState> {
        let shared = &self.shared;
        shared
            .bus
            .consumer_state(&shared.topic, &group_consumer_name(&shared.group))
    }
}

/// A message leased to one receiver of a group. Dropping it unsettled naks
/// it with the retry policy's backoff (sent in the background).
#[derive(Debug)]
pub struct NatsDelivery {
    group: Arc<GroupShared>,
    /// `None` once settled.
    message: Option<async_nats::jetstream::Message>,
    record: StoredRecord,
    attempt: u32,
}

impl NatsDelivery {
    /// The record.
    pub fn record(&self) -> &StoredRecord {
        &self.record
    }

    /// Which delivery of this record this is, from 1 (the server's count).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    fn take(&mut self) -> Result<async_nats::jetstream::Message> {
        self.message.take().ok_or(Error::Closed)
    }

    /// Sends `kind` and waits for the server to confirm it (an ack sent
    /// with a reply subject): once this returns the server has the ack.
    fn settle(mut self, kind: AckKind) -> Result<()> {
        let message = self.take()?;
        self.group
            .bus
            .block_on(message.double_ack_with(kind))?
            .map_err(|e| nats_error("ack", e))
    }

    /// Completes the record.
    pub fn ack(self) -> Result<()> {
        let group = self.group.clone();
        self.settle(AckKind::Ack)?;
        GroupCounters::count(&group.counters.acked);
        Ok(())
    }

    /// Fails this attempt: redelivered after the retry policy's backoff, or
    /// dead-lettered if this was the last attempt.
    pub fn nack(self, reason: &str) -> Result<()> {
        let delay = {
            let mut rng = self.group.rng.lock().unwrap_or_else(|p| p.into_inner());
            self.group.spec.retry.backoff.delay(self.attempt.max(1), &mut rng)
        };
        self.nack_with_delay(reason, delay)
    }

    /// Like [`NatsDelivery::nack`] with an explicit delay.
    pub fn nack_with_delay(self, reason: &str, delay: Duration) -> Result<()> {
        if self.attempt >= self.group.spec.retry.max_attempts {
            return self.dead_letter(reason);
        }
        self.settle(AckKind::Nak((!delay.is_zero()).then_some(delay)))
    }

    /// Dead-letters the record at once.
    pub fn reject(self, reason: &str) -> Result<()> {
        self.dead_letter(reason)
    }

    /// Resets the lease to a full AckWait from now (`+WPI`), whatever `by`
    /// is: the server takes no duration.
    pub fn extend_lease(&mut self, _by: Duration) -> Result<()> {
        let message = self.message.as_ref().ok_or(Error::Closed)?;
        let bus = &self.group.bus;
        bus.block_on(async {
            message
                .ack_with(AckKind::Progress)
                .await
                .map_err(|e| nats_error("progress", e))?;
            bus.client().flush().await.map_err(|e| nats_error("flush", e))
        })?
    }

    /// Forgets the delivery without telling the server, as a receiver that
    /// crashed would: the lease runs out and the server redelivers.
    pub fn abandon(mut self) {
        self.message = None;
    }

    /// Publishes the dead letter to `<topic>.dlq` (with `Nats-Msg-Id`
    /// `<stream>:<group>:<sequence>`, so a repeat after a crash within the
    /// stream's duplicate window is dropped by the server), then terms the
    /// original. The headers are the embedded dead letter's, but only the
    /// failure of this attempt is known: JetStream keeps no reasons of
    /// earlier ones.
    fn dead_letter(self, reason: &str) -> Result<()> {
        let shared = self.group.clone();
        if shared.spec.dead_letter {
            let dlq = dead_letter_topic(&shared.topic);
            shared.bus.ensure_stream(&dlq, &StreamSpec::default())?;
            let id = format!(
                "{}:{}:{}",
                stream_name(&shared.topic),
                shared.group,
                self.record.offset() + 1
            );
            let failure = Failure {
                at_ms: now_ms(),
                reason: reason.to_owned(),
            };
            let letter = DeadLetter {
                topic: &shared.topic,
                group: &shared.group,
                record: &self.record,
                attempts: self.attempt,
                failures: std::slice::from_ref(&failure),
            };
            let subject = topic_subject(&dlq);
            let (_offset, _duplicate) =
                letter.publish_with(|record| shared.bus.publish_to(subject.clone(), record, Some(&id)))?;
        }
        self.settle(AckKind::Term)?;
        GroupCounters::count(&shared.counters.dead_lettered);
        Ok(())
    }
}

impl Drop for NatsDelivery {
    fn drop(&mut self) {
        let Some(message) = self.message.take() else {
            return;
        };
        let delay = {
            let mut rng = self.group.rng.lock().unwrap_or_else(|p| p.into_inner());
            self.group.spec.retry.backoff.delay(self.attempt.max(1), &mut rng)
        };
        // Best effort, without blocking: if it is lost, the lease expires.
        self.group.bus.spawn(async move {
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        });
    }
}
