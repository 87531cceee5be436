//! Durable pull consumers: one per consumer group (explicit acks, AckWait
//! as the lease, the client's backoff in a delayed nak, dead letters
//! published by the client) and one per durable subscription (ack-all: an
//! ack commits everything up to it, the ack floor is the committed
//! offset).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures_util::StreamExt;

use super::client::{ConsumerState, NatsBus, StreamSpec};
use super::codec::{millis, stored_record};
use super::names::{group_consumer_name, stream_name, subscription_consumer_name, topic_subject};
use super::nats_error;
use crate::error::{Error, Result};
use crate::log::now_ms;
use crate::patterns::{
    GroupOptions, HEADER_ATTEMPTS, HEADER_FAILURE, HEADER_FIRST_FAILURE, HEADER_LAST_FAILURE,
    HEADER_LAST_REASON, HEADER_SOURCE_GROUP, HEADER_SOURCE_OFFSET, HEADER_SOURCE_TOPIC, RetryPolicy, StartAt,
    dead_letter_topic,
};
use crate::record::{Record, StoredRecord};

/// Pull requests shorter than this are sent as no-wait fetches.
const MIN_PULL_WAIT: Duration = Duration::from_millis(10);

/// How long a subscription's deliveries stay unacked before the server
/// would redeliver them: a subscription reads ahead of its commits for as
/// long as it likes, so in practice never.
const SUBSCRIPTION_ACK_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

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
    bus: NatsBus,
    topic: String,
    group: String,
    spec: GroupSpec,
    consumer: PullConsumer,
    rng: Mutex<fastrand::Rng>,
}

/// A consumer group on JetStream: competing receivers of one durable pull
/// consumer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupConsumer {
    shared: Arc<GroupShared>,
}

/// Pulls one message, waiting up to `wait` (no wait when `None` or short).
async fn pull_one(
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
    pub fn open(bus: &NatsBus, topic: &str, group: &str, spec: GroupSpec) -> Result<GroupConsumer> {
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
        self.settle(AckKind::Ack)
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

    /// Resets the lease to a full AckWait from now (`+WPI`); the server
    /// takes no duration, so `extend_lease(by)` can only be approximated.
    pub fn extend_lease(&mut self) -> Result<()> {
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
    /// original. Only the failure of this attempt is known: JetStream keeps
    /// no reasons of earlier ones.
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
            let letter =
                DeadLetterRecord::new(&shared.topic, &shared.group, &self.record, self.attempt, reason);
            let (_offset, _duplicate) =
                shared
                    .bus
                    .publish_to(topic_subject(&dlq), &letter.record(), Some(&id))?;
        }
        self.settle(AckKind::Term)
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
        self.group.bus.inner.runtime.spawn(async move {
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        });
    }
}

/// The owned parts of a dead letter: the record's key, value, timestamp and
/// headers, plus the embedded DLQ's `logbus-*` headers.
struct DeadLetterRecord<'a> {
    source: &'a StoredRecord,
    headers: Vec<(&'static str, String)>,
}

impl<'a> DeadLetterRecord<'a> {
    fn new(topic: &str, group: &str, source: &'a StoredRecord, attempts: u32, reason: &str) -> Self {
        let now = now_ms();
        let headers = vec![
            (HEADER_SOURCE_TOPIC, topic.to_owned()),
            (HEADER_SOURCE_GROUP, group.to_owned()),
            (HEADER_SOURCE_OFFSET, source.offset().to_string()),
            (HEADER_ATTEMPTS, attempts.to_string()),
            (HEADER_FAILURE, format!("{now} {reason}")),
            (HEADER_FIRST_FAILURE, now.to_string()),
            (HEADER_LAST_FAILURE, now.to_string()),
            (HEADER_LAST_REASON, reason.to_owned()),
        ];
        DeadLetterRecord { source, headers }
    }

    fn record(&self) -> Record<'_> {
        let added: Vec<&str> = self.headers.iter().map(|(n, _)| *n).collect();
        let mut record = Record::new(self.source.value())
            .key(self.source.key())
            .timestamp(self.source.timestamp());
        for (name, value) in self.source.headers().filter(|(n, _)| !added.contains(n)) {
            record = record.header(name, value);
        }
        for (name, value) in &self.headers {
            record = record.header(name, value.as_bytes());
        }
        record
    }
}

/// The committed offset of a subscription's consumer: its ack floor, or,
/// before its first ack, its start (the server reports a zero floor then,
/// and the sequence before the start as "delivered").
fn committed_of(info: &async_nats::jetstream::consumer::Info) -> u64 {
    match info.ack_floor.consumer_sequence {
        0 => info.delivered.stream_sequence,
        _ => info.ack_floor.stream_sequence,
    }
}

/// A durable subscription on JetStream: a durable pull consumer with
/// ack-all, whose ack floor is the committed offset. Not shared between
/// threads, like [`crate::Subscription`].
#[derive(Debug)]
pub struct SubscriptionConsumer {
    bus: NatsBus,
    topic: String,
    consumer: PullConsumer,
    /// Received and not yet committed, oldest first, with their ack handles.
    received: VecDeque<(u64, async_nats::jetstream::Message)>,
    position: u64,
    committed: u64,
}

impl SubscriptionConsumer {
    /// Opens the subscription `name` on `topic`: created at `start` the
    /// first time; afterwards it resumes from its ack floor. A consumer
    /// that delivered past its floor (records received but not committed
    /// before a restart) is recreated at the floor, because JetStream
    /// would otherwise only redeliver them after AckWait, out of order.
    pub fn open(bus: &NatsBus, topic: &str, name: &str, start: StartAt) -> Result<SubscriptionConsumer> {
        let consumer_name = subscription_consumer_name(name);
        let (consumer, floor) = bus.block_on(async {
            let stream = bus
                .js()
                .get_stream_no_info(stream_name(topic))
                .await
                .map_err(|e| nats_error("get stream", e))?;
            let deliver = match stream.consumer_info(&consumer_name).await {
                Ok(info) if info.delivered.consumer_sequence <= info.ack_floor.consumer_sequence => None,
                Ok(info) => {
                    stream
                        .delete_consumer(&consumer_name)
                        .await
                        .map_err(|e| nats_error("delete consumer", e))?;
                    Some(match info.ack_floor.consumer_sequence {
                        0 => info.config.deliver_policy,
                        _ => DeliverPolicy::ByStartSequence {
                            start_sequence: info.ack_floor.stream_sequence + 1,
                        },
                    })
                }
                // `Latest` is pinned to a sequence now, so that recreating
                // the consumer later starts at the same place.
                Err(_) if start == StartAt::Latest => {
                    let mut with_info = bus
                        .js()
                        .get_stream(stream_name(topic))
                        .await
                        .map_err(|e| nats_error("get stream", e))?;
                    let info = with_info.info().await.map_err(|e| nats_error("stream info", e))?;
                    Some(DeliverPolicy::ByStartSequence {
                        start_sequence: info.state.last_sequence + 1,
                    })
                }
                Err(_) => Some(deliver_policy(start)?),
            };
            let config = pull::Config {
                durable_name: Some(consumer_name.clone()),
                name: Some(consumer_name.clone()),
                ack_policy: AckPolicy::All,
                ack_wait: SUBSCRIPTION_ACK_WAIT,
                max_ack_pending: -1,
                deliver_policy: deliver.unwrap_or(DeliverPolicy::All),
                ..Default::default()
            };
            let mut consumer: PullConsumer = match deliver {
                Some(_) => stream.create_consumer(config).await,
                None => stream.get_or_create_consumer(&consumer_name, config).await,
            }
            .map_err(|e| nats_error("create consumer", e))?;
            let committed = committed_of(
                consumer
                    .info()
                    .await
                    .map_err(|e| nats_error("consumer info", e))?,
            );
            Ok::<_, Error>((consumer, committed))
        })??;
        Ok(SubscriptionConsumer {
            bus: bus.clone(),
            topic: topic.to_owned(),
            consumer,
            received: VecDeque::new(),
            position: floor,
            committed: floor,
        })
    }

    /// The next record, waiting up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<StoredRecord>> {
        let Some(message) = self.bus.block_on(pull_one(&self.consumer, Some(timeout)))?? else {
            return Ok(None);
        };
        let info = message.info().map_err(|e| nats_error("message metadata", e))?;
        let record = stored_record(
            message.headers.as_ref(),
            &message.payload,
            info.stream_sequence,
            millis(&info.published),
        )?;
        self.position = record.offset() + 1;
        self.received.push_back((record.offset(), message));
        Ok(Some(record))
    }

    /// Commits everything received.
    pub fn commit(&mut self) -> Result<()> {
        self.commit_offset(self.position)
    }

    /// Commits below `next_offset`: acks (ack-all) the newest received
    /// record below it, which moves the ack floor to it. Offsets never
    /// received cannot be acked, so the floor stops at the last one that was.
    pub fn commit_offset(&mut self, next_offset: u64) -> Result<()> {
        let mut newest = None;
        while self
            .received
            .front()
            .is_some_and(|(offset, _)| *offset < next_offset)
        {
            newest = self.received.pop_front();
        }
        let Some((offset, message)) = newest else {
            return Ok(());
        };
        self.bus
            .block_on(message.double_ack())?
            .map_err(|e| nats_error("ack", e))?;
        self.committed = offset + 1;
        Ok(())
    }

    /// The committed offset (the ack floor's sequence).
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The offset of the next record this subscription receives.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Records published but not yet committed.
    pub fn lag(&self) -> Result<u64> {
        Ok(self
            .bus
            .stream_state(&self.topic)?
            .end_offset
            .saturating_sub(self.committed))
    }
}
