//! Durable pull consumers for consumer groups (explicit acks, AckWait as
//! the lease, the client's backoff in a delayed nak, dead letters published
//! by the client), and the one-message pull that subscriptions share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, FromConsumer, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::client::{ConsumerState, NatsClient, StreamSpec, join_error, wait};
use super::codec::{encode_headers, millis, stored_record};
use super::error::nats_error;
use super::failures::FailureStore;
use super::names::{group_consumer_name, stream_name, topic_subject};
use super::subscription::seek_offset;
use crate::backend::DeliveryBackend;
use crate::clock::wall_ms;
use crate::error::{Error, Result};
use crate::format::Failure;
use crate::patterns::{DeadLetter, RetryPolicy, dead_letter_topic, push_failure};
use crate::patterns::{GroupOptions, StartAt};
use crate::record::StoredRecord;

/// Longest single pull: longer waits are several pulls.
pub(crate) const MAX_PULL_WAIT: Duration = Duration::from_secs(30);

/// Longest pull of a group's `recv_async`: a cancelled receive's pull
/// stays on the server this long, and a record it takes costs an attempt
/// (see [`GroupConsumer::recv_async`]), so it is kept short.
const ASYNC_PULL_WAIT: Duration = Duration::from_secs(5);

/// Why a message delivered more than `max_attempts` times is dead-lettered.
const EXHAUSTED: &str = "attempts exhausted: the last lease expired";

/// The failure of a delivery dropped unsettled (as embedded).
const DROPPED: &str = "delivery dropped without ack";

/// Pull requests shorter than this are sent as no-wait fetches.
pub(crate) const MIN_PULL_WAIT: Duration = Duration::from_millis(10);

/// How long after its own expiry (a no-wait fetch: at once) a pull may
/// stay unanswered before it is taken as empty. A server losing a stream's
/// leader may never answer a pull (seen in `tests/nats_cluster.rs`), and
/// the client sets no timer of its own on a fetch. A message the server
/// still delivers to a pull given up is not lost: a group's comes back
/// when its lease expires, a subscription's shows as a gap in the consumer
/// sequence and the consumer is recreated at the committed offset.
const PULL_GRACE: Duration = Duration::from_secs(5);

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
    /// How the dead-letter topic's stream is created.
    dead_letters: StreamSpec,
    consumer: PullConsumer,
    /// The failures of records still in the group.
    failures: FailureStore,
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

impl GroupShared {
    /// Forgets the failures of a settled record. Best effort: what a lost
    /// purge leaves is never read again (`failures.rs`).
    async fn forget_failures(&self, sequence: u64) -> Result<()> {
        if let Err(_error) = self.bus.run(self.failures.forget(sequence)).await? {
            trace_event!(warn, topic = %self.topic, group = %self.group, sequence, error = %_error, "failure history not purged");
        }
        Ok(())
    }
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

/// Pulls up to `max` messages available now (a no-wait fetch): those
/// that came within [`PULL_GRACE`]. A task for the connection's runtime.
async fn pull_now(consumer: PullConsumer, max: usize) -> Result<Vec<async_nats::jetstream::Message>> {
    let mut messages = Vec::with_capacity(max);
    let pull = async {
        let mut batch = consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(|e| nats_error("pull", e))?;
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|e| nats_error("pull", e))?);
        }
        Ok::<_, Error>(())
    };
    if let Ok(pulled) = tokio::time::timeout(PULL_GRACE, pull).await {
        pulled?;
    }
    Ok(messages)
}

/// Pulls one message, waiting up to `wait` (no wait when `None` or short),
/// and at most [`PULL_GRACE`] longer for the server's answer. A task for
/// the connection's runtime.
pub(crate) async fn pull_one(
    consumer: PullConsumer,
    wait: Option<Duration>,
) -> Result<Option<async_nats::jetstream::Message>> {
    let wait = wait.filter(|wait| *wait >= MIN_PULL_WAIT);
    let pull = async {
        let batch = match wait {
            Some(wait) => consumer.batch().max_messages(1).expires(wait).messages().await,
            None => consumer.fetch().max_messages(1).messages().await,
        };
        let mut batch = batch.map_err(|e| nats_error("pull", e))?;
        match batch.next().await {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(e)) => Err(nats_error("pull", e)),
            None => Ok(None),
        }
    };
    tokio::time::timeout(wait.unwrap_or_default() + PULL_GRACE, pull)
        .await
        .unwrap_or(Ok(None))
}

impl GroupConsumer {
    /// Opens (creating if needed) the group `group` on `topic`, whose
    /// stream must exist. An existing consumer keeps where it started and
    /// its position; its lease (AckWait) and MaxDeliver are updated to
    /// `spec`'s, as an embedded group takes the options it is opened with
    /// (a MaxDeliver left below the client's `max_attempts + 1` would let
    /// the server drop a failing record without a dead letter). The
    /// dead-letter topic's stream, if this group creates it, gets
    /// `dead_letters`.
    pub(crate) fn open(
        bus: &NatsClient,
        topic: &str,
        group: &str,
        spec: GroupSpec,
        dead_letters: StreamSpec,
    ) -> Result<GroupConsumer> {
        let config = spec.config(group)?;
        let (stream, name) = (bus.stream_of(topic), group_consumer_name(group));
        let (lease, max_deliver) = (spec.lease, spec.max_deliver);
        let consumer = bus.block_on(async move {
            let stream = stream.await?;
            let consumer: PullConsumer = stream
                .get_or_create_consumer(&name, config)
                .await
                .map_err(|e| nats_error("create consumer", e))?;
            let existing = &consumer.cached_info().config;
            if existing.ack_wait == lease && existing.max_deliver == max_deliver {
                return Ok(consumer);
            }
            let updated = pull::Config {
                ack_wait: lease,
                max_deliver,
                ..pull::Config::try_from_consumer_config(existing.clone())
                    .map_err(|e| nats_error("consumer config", e))?
            };
            stream
                .create_consumer(updated)
                .await
                .map_err(|e| nats_error("update consumer", e))
        })??;
        Ok(GroupConsumer {
            shared: Arc::new(GroupShared {
                bus: bus.clone(),
                topic: topic.to_owned(),
                group: group.to_owned(),
                spec,
                failures: FailureStore::new(bus.js().clone(), topic, group, &dead_letters),
                dead_letters,
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
            let consumer = self.shared.consumer.clone();
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
            let consumer = self.shared.consumer.clone();
            let Some(message) = self.shared.bus.block_on(pull_one(consumer, None))?? else {
                return Ok(None);
            };
            if let Some(delivery) = self.admit(message)? {
                return Ok(Some(delivery));
            }
        }
    }

    /// Recreates the group's consumer (same name and configuration) to
    /// deliver from the offset `to` resolves to, and forgets the failures
    /// of its records. The handles of this process pull from it by name.
    pub(crate) fn seek(&self, to: StartAt) -> Result<u64> {
        let shared = self.shared.clone();
        let name = group_consumer_name(&shared.group);
        let stream = shared.bus.stream_of(&shared.topic);
        self.shared.bus.block_on(async move {
            let offset = seek_offset(shared.bus.js(), &shared.topic, to).await?;
            let stream = stream.await?;
            let info = stream
                .consumer_info(&name)
                .await
                .map_err(|e| nats_error("consumer info", e))?;
            let config = pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: offset + 1,
                },
                ..pull::Config::try_from_consumer_config(info.config.clone())
                    .map_err(|e| nats_error("consumer config", e))?
            };
            stream
                .delete_consumer(&name)
                .await
                .map_err(|e| nats_error("delete consumer", e))?;
            stream
                .create_consumer(config)
                .await
                .map_err(|e| nats_error("create consumer", e))?;
            shared.failures.forget_group().await?;
            Ok(offset)
        })?
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
        let consumer = self.shared.consumer.clone();
        let messages = self.shared.bus.block_on(pull_now(consumer, max))??;
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

    /// The next delivery, waiting as long as it takes. The pulls run on
    /// the connection's runtime, so any executor can await this. If the future
    /// is dropped while a pull is out (which the server cannot cancel),
    /// whatever the pull brings within its few seconds is nak'd without
    /// delay: redelivered at once, but as one more attempt.
    pub(crate) async fn recv_async(&self) -> Result<NatsDelivery> {
        loop {
            let Some(message) = PendingPull::start(&self.shared).message().await? else {
                continue;
            };
            let (delivery, exhausted) = self.delivery(message)?;
            match exhausted {
                true => delivery.dead_letter_async(EXHAUSTED).await?,
                false => return Ok(delivery),
            }
        }
    }

    /// Takes a pulled message in: its delivery, or `None` when its attempts
    /// were exhausted and it was dead-lettered instead.
    fn admit(&self, message: Message) -> Result<Option<NatsDelivery>> {
        let (delivery, exhausted) = self.delivery(message)?;
        match exhausted {
            true => delivery.dead_letter(EXHAUSTED).map(|()| None),
            false => Ok(Some(delivery)),
        }
    }

    /// The delivery of `message`, and whether it was delivered more than
    /// `max_attempts` times (its last receiver let the lease expire, or
    /// died): then it must be dead-lettered, not handed out.
    fn delivery(&self, message: Message) -> Result<(NatsDelivery, bool)> {
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
        let exhausted = attempt > self.shared.spec.retry.max_attempts;
        if attempt > 1 && !exhausted {
            GroupCounters::count(&self.shared.counters.redeliveries);
        }
        Ok((delivery, exhausted))
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
    message: Option<Message>,
    record: StoredRecord,
    attempt: u32,
}

impl NatsDelivery {
    fn take(&mut self) -> Result<Message> {
        self.message.take().ok_or(Error::Closed)
    }

    /// Sends `kind` and waits for the server to confirm it (an ack sent
    /// with a reply subject), as a task for the connection's runtime: once it
    /// completes the server has the ack.
    fn settle_task(&mut self, kind: AckKind) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let message = self.take()?;
        Ok(async move {
            message
                .double_ack_with(kind)
                .await
                .map_err(|e| nats_error("ack", e))
        })
    }

    /// The record's stream sequence.
    fn sequence(&self) -> u64 {
        self.record.offset() + 1
    }

    /// Forgets the delivery without telling the server, as a receiver that
    /// crashed would: the lease runs out and the server redelivers.
    pub fn abandon(mut self) {
        self.message = None;
    }

    /// Blocks on [`NatsDelivery::dead_letter_async`] (whose steps are
    /// tasks: [`wait`] may poll it).
    fn dead_letter(self, reason: &str) -> Result<()> {
        wait(self.dead_letter_async(reason))
    }

    /// Publishes the dead letter to `<topic>.dlq` and waits for its
    /// PubAck, then terms the original (confirmed); each step runs on the
    /// connection's runtime, so any executor can await this. A crash in between
    /// redelivers the original, and the dead letter published again carries
    /// the same `Nats-Msg-Id`, which the stream drops within its duplicate
    /// window.
    async fn dead_letter_async(mut self, reason: &str) -> Result<()> {
        let shared = self.group.clone();
        let bus = &shared.bus;
        let (sequence, redelivered) = (self.sequence(), self.attempt > 1);
        if shared.spec.dead_letter {
            let dlq = dead_letter_topic(&shared.topic);
            bus.run(bus.ensure_stream_task(&dlq, &shared.dead_letters))
                .await??;
            let mut failures = match redelivered {
                true => bus.run(shared.failures.read(sequence)).await??,
                false => Vec::new(),
            };
            let last = Failure {
                at_ms: wall_ms(),
                reason: reason.to_owned(),
            };
            push_failure(&mut failures, last);
            let (headers, payload) = self.dead_letter_message(&failures)?;
            let (_offset, _duplicate) = bus
                .run(bus.publish_task(topic_subject(&dlq), headers, payload))
                .await??;
        }
        bus.run(self.settle_task(AckKind::Term)?).await??;
        GroupCounters::count(&shared.counters.dead_lettered);
        if redelivered {
            shared.forget_failures(sequence).await?;
        }
        Ok(())
    }

    /// The dead letter as a message: the embedded dead letter's record and
    /// headers with `failures` (the stored ones and this attempt's), with
    /// the id `<stream>:<group>:<sequence>`.
    fn dead_letter_message(&self, failures: &[Failure]) -> Result<(HeaderMap, Bytes)> {
        let shared = &self.group;
        let id = format!(
            "{}:{}:{}",
            stream_name(&shared.topic),
            shared.group,
            self.record.offset() + 1
        );
        let letter = DeadLetter {
            topic: &shared.topic,
            group: &shared.group,
            record: &self.record,
            attempts: self.attempt,
            failures,
        };
        letter.publish_with(|record| {
            let mut headers = encode_headers(record)?;
            headers.insert(NATS_MESSAGE_ID, id.as_str());
            Ok((headers, Bytes::copy_from_slice(record.value())))
        })
    }
}

impl DeliveryBackend for NatsDelivery {
    fn record(&self) -> &StoredRecord {
        &self.record
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    // The blocking settles wait for the async ones, whose steps are tasks
    // (so [`wait`] may poll them).

    fn ack(self) -> Result<()> {
        wait(self.ack_async())
    }

    fn nack(self, reason: &str) -> Result<()> {
        wait(self.nack_async(reason, None))
    }

    fn nack_with_delay(self, reason: &str, delay: Duration) -> Result<()> {
        wait(self.nack_async(reason, Some(delay)))
    }

    fn reject(self, reason: &str) -> Result<()> {
        self.dead_letter(reason)
    }

    // The async ones run each step on the connection's runtime: a future
    // dropped after it sent a step leaves that step to finish there.

    async fn ack_async(mut self) -> Result<()> {
        let group = self.group.clone();
        let (sequence, redelivered) = (self.sequence(), self.attempt > 1);
        group.bus.run(self.settle_task(AckKind::Ack)?).await??;
        GroupCounters::count(&group.counters.acked);
        if redelivered {
            group.forget_failures(sequence).await?;
        }
        Ok(())
    }

    async fn nack_async(mut self, reason: &str, delay: Option<Duration>) -> Result<()> {
        if self.attempt >= self.group.spec.retry.max_attempts {
            return self.dead_letter_async(reason).await;
        }
        let delay = delay.unwrap_or_else(|| {
            let mut rng = self.group.rng.lock().unwrap_or_else(|p| p.into_inner());
            self.group.spec.retry.backoff.delay(self.attempt.max(1), &mut rng)
        });
        let failure = Failure {
            at_ms: wall_ms(),
            reason: reason.to_owned(),
        };
        let group = self.group.clone();
        group
            .bus
            .run(group.failures.record(self.sequence(), &failure))
            .await??;
        let nak = self.settle_task(AckKind::Nak((!delay.is_zero()).then_some(delay)))?;
        group.bus.run(nak).await?
    }

    async fn reject_async(self, reason: &str) -> Result<()> {
        self.dead_letter_async(reason).await
    }

    fn extend_lease(&mut self, _by: Duration) -> Result<()> {
        let message = self.message.clone().ok_or(Error::Closed)?;
        let bus = &self.group.bus;
        let client = bus.client().clone();
        bus.block_on(async move {
            message
                .ack_with(AckKind::Progress)
                .await
                .map_err(|e| nats_error("progress", e))?;
            client.flush().await.map_err(|e| nats_error("flush", e))
        })?
    }
}

/// A pull on the connection's runtime for [`GroupConsumer::recv_async`]. Dropped
/// before its result was taken (the future awaiting it was cancelled), it
/// naks whatever the pull brings, without delay, so that no message waits
/// out a lease nobody holds.
struct PendingPull {
    bus: NatsClient,
    pull: Option<JoinHandle<Result<Option<Message>>>>,
}

impl PendingPull {
    fn start(shared: &GroupShared) -> PendingPull {
        let consumer = shared.consumer.clone();
        let pull = shared.bus.spawn(pull_one(consumer, Some(ASYNC_PULL_WAIT)));
        PendingPull {
            bus: shared.bus.clone(),
            pull: Some(pull),
        }
    }

    /// The message the pull brought, if any before it expired.
    async fn message(mut self) -> Result<Option<Message>> {
        let pull = self.pull.as_mut().ok_or(Error::Closed)?;
        let joined = pull.await;
        self.pull = None;
        joined.map_err(join_error)?
    }
}

impl Drop for PendingPull {
    fn drop(&mut self) {
        if let Some(pull) = self.pull.take() {
            self.bus.spawn(async move {
                if let Ok(Ok(Some(message))) = pull.await {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
            });
        }
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
        let failure = Failure {
            at_ms: wall_ms(),
            reason: DROPPED.to_owned(),
        };
        let record = self.group.failures.record(self.sequence(), &failure);
        // Best effort, without blocking: if either is lost, the lease
        // expires (without the failure in the history).
        self.group.bus.spawn(async move {
            if record.await.is_ok() {
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
        });
    }
}
