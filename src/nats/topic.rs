//! The NATS topic (the `Nats` variant of [`crate::Topic`]): the stream
//! `LOGBUS_<name>`, whose subject `logbus.<name>` records are published to.
//!
//! Invariants:
//! - The start and end offsets held here are the last ones known: set from
//!   the stream's info when the topic is opened and by [`NatsTopic::stats`],
//!   raised by every PubAck this process receives and by the metadata of
//!   every message its subscriptions receive. They never go down, so they
//!   may lag behind the server (another process publishing), never run
//!   ahead of it.
//! - Within this process nothing interleaves with a batch: single
//!   publishes share a lock that a batch holds exclusively. Each record of
//!   a batch after the first expects the previous one's message id as the
//!   stream's last (`Nats-Expected-Last-Msg-Id`), so a batch's offsets are
//!   consecutive or the batch stops, with exactly a prefix stored, at the
//!   first record another process got in ahead of (every later record
//!   expects one that was not stored).
//! - A durable subscription is open at most once per topic in this
//!   process (a second open is [`Error::Locked`]); processes do not
//!   exclude each other (`docs/NATS.md`, "Locks").
//! - A consumer (subscription or group) open in this process holds a
//!   [`ConsumerClaim`]; deleting it is refused while one lives.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::header::{NATS_EXPECTED_LAST_MESSAGE_ID, NATS_MESSAGE_ID};
use async_nats::jetstream;
use async_nats::{HeaderMap, HeaderName};
use bytes::Bytes;
use futures_util::TryStreamExt;

use super::bus::{NatsShared, OpenBus};
use super::client::{StreamSpec, StreamState};
use super::codec::encode_headers;
use super::error::{nats_error, publish_error};
use super::group::NatsGroup;
use super::names::{
    check_length, consumer_name, consumer_of_name, group_consumer_name, stream_name,
    subscription_consumer_name, topic_subject,
};
use super::subscription::{NatsSubscription, committed_of};
use crate::backend::{ReplySink, TopicBackend};
use crate::error::{Error, Result};
use crate::log::SyncStats;
use crate::patterns::DEAD_LETTER_HEADROOM_BYTES;
use crate::patterns::check_batch_ids;
use crate::patterns::{ConsumerStats, CorrelationId, GroupOptions, StartAt, TopicOptions, TopicStats};
use crate::record::Record;
use crate::state::ConsumerId;

/// A topic on JetStream. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct NatsTopic {
    shared: Arc<TopicShared>,
    /// Set on every handle the bus hands out, so that it and everything
    /// taken from it keep the bus open; `None` only in the bus's own table.
    _keep_open: Option<Arc<OpenBus>>,
}

#[derive(Debug)]
pub(crate) struct TopicShared {
    pub(crate) bus: Arc<NatsShared>,
    name: String,
    subject: String,
    /// The stream's configuration as this process would create it.
    spec: StreamSpec,
    /// The options the topic was opened with in this process.
    options: TopicOptions,
    start_offset: AtomicU64,
    end_offset: AtomicU64,
    /// Read-locked by a publish, write-locked by a batch (whose records
    /// name each other, so no publish of this process may come between).
    /// An async lock: the publishes hold it across their round trips.
    publishing: tokio::sync::RwLock<()>,
    /// Durable consumers open in this process, with their open handles.
    open_consumers: Mutex<HashMap<ConsumerId, usize>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A durable consumer's name, taken for as long as this is alive: by a
/// durable subscription alone, by a group's handles together.
#[derive(Debug)]
pub(crate) struct ConsumerClaim {
    topic: Arc<TopicShared>,
    consumer: ConsumerId,
}

impl ConsumerClaim {
    pub(crate) fn name(&self) -> &str {
        self.consumer.name()
    }
}

impl Drop for ConsumerClaim {
    fn drop(&mut self) {
        let mut open = lock(&self.topic.open_consumers);
        if let Some(count) = open.get_mut(&self.consumer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.consumer);
            }
        }
    }
}

impl TopicShared {
    pub(crate) fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub(crate) fn start_offset(&self) -> u64 {
        self.start_offset.load(Ordering::Acquire)
    }

    /// Raises the known end to `end` (an offset some record reached).
    pub(crate) fn note_end(&self, end: u64) {
        self.end_offset.fetch_max(end, Ordering::AcqRel);
    }

    /// The stream of this topic's dead-letter topic, if a group creates
    /// it: this topic's, with room for the failure headers (as embedded).
    pub(crate) fn dead_letter_spec(&self) -> StreamSpec {
        StreamSpec {
            max_record_bytes: self
                .spec
                .max_record_bytes
                .map(|bytes| bytes + DEAD_LETTER_HEADROOM_BYTES),
            ..self.spec.clone()
        }
    }

    /// [`Error::Locked`] naming `consumer`'s durable consumer.
    fn locked(&self, consumer: &ConsumerId) -> Error {
        let path = format!("nats:{}/{}", stream_name(&self.name), consumer_name(consumer));
        Error::Locked(PathBuf::from(path))
    }

    /// [`Error::Locked`] while `consumer` is open in this process.
    pub(crate) fn check_not_open(&self, consumer: &ConsumerId) -> Result<()> {
        match lock(&self.open_consumers).contains_key(consumer) {
            true => Err(self.locked(consumer)),
            false => Ok(()),
        }
    }

    fn note_state(&self, state: &StreamState) {
        self.start_offset.fetch_max(state.start_offset, Ordering::AcqRel);
        self.note_end(state.end_offset);
    }
}

impl NatsTopic {
    /// Opens the topic `name`, creating its stream with `spec` (made from
    /// `options`) if needed.
    pub(crate) fn open(
        bus: Arc<NatsShared>,
        name: &str,
        spec: &StreamSpec,
        options: TopicOptions,
    ) -> Result<NatsTopic> {
        let state = bus.client.ensure_stream(name, spec)?;
        let shared = TopicShared {
            bus,
            name: name.to_owned(),
            subject: topic_subject(name),
            spec: spec.clone(),
            options,
            start_offset: AtomicU64::new(state.start_offset),
            end_offset: AtomicU64::new(state.end_offset),
            publishing: tokio::sync::RwLock::new(()),
            open_consumers: Mutex::new(HashMap::new()),
        };
        Ok(NatsTopic {
            shared: Arc::new(shared),
            _keep_open: None,
        })
    }

    /// This topic as a handle that keeps the bus open.
    pub(crate) fn keeping_open(&self, open: Arc<OpenBus>) -> NatsTopic {
        NatsTopic {
            shared: self.shared.clone(),
            _keep_open: Some(open),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<TopicShared> {
        &self.shared
    }

    /// Publishes `record` with the `Nats-Msg-Id` `msg_id`: within the
    /// stream's duplicate window a second publish with that id stores
    /// nothing and returns the first one's offset.
    /// The `Nats-Msg-Id` of `record` while the dedupe window is on: its id
    /// ([`Record::id`]) in hex, which no id logbus makes itself resembles.
    fn message_id(&self, record: &Record<'_>) -> Option<(HeaderName, String)> {
        if self.shared.options.dedupe_window.is_zero() {
            return None;
        }
        let id = record.id_bytes()?;
        let hex = id
            .iter()
            .fold(String::with_capacity(2 * id.len()), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });
        Some((NATS_MESSAGE_ID, hex))
    }

    pub(crate) fn publish_once(&self, record: &Record<'_>, msg_id: &str) -> Result<u64> {
        let shared = &self.shared;
        shared.bus.check_open()?;
        let publish = self.publish_task(record, Some((NATS_MESSAGE_ID, msg_id.to_owned())))?;
        shared.bus.client.block_on(publish)?
    }

    /// The publish of `record` with one JetStream header if given (a
    /// message id), as a task for the connection's runtime: its offset.
    fn publish_task(
        &self,
        record: &Record<'_>,
        jetstream: Option<(HeaderName, String)>,
    ) -> Result<impl Future<Output = Result<u64>> + Send + 'static> {
        let shared = self.shared.clone();
        let mut headers = encode_headers(record)?;
        if let Some((name, value)) = jetstream {
            headers.insert(name, value);
        }
        let payload = Bytes::copy_from_slice(record.value());
        let publish = shared
            .bus
            .client
            .publish_task(shared.subject.clone(), headers, payload);
        Ok(async move {
            let _shared = shared.publishing.read().await;
            let (offset, _duplicate) = publish.await?;
            shared.note_end(offset + 1);
            Ok(offset)
        })
    }

    /// The publish of `records` as one batch, as a task for the
    /// connection's runtime: each record carries a `Nats-Msg-Id` and names its
    /// predecessor's as the expected last one, so the batch is stored
    /// contiguously or up to the first failure (the error says which
    /// offsets were stored).
    fn publish_batch_task(
        &self,
        records: &[Record<'_>],
    ) -> Result<impl Future<Output = Result<Range<u64>>> + Send + 'static> {
        check_batch_ids(&self.shared.options, records)?;
        let shared = self.shared.clone();
        let batch = CorrelationId::new();
        let id = |i: usize| format!("logbus-batch.{batch}.{i}");
        let mut messages = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let mut headers = encode_headers(record)?;
            // A batch of one is a publish: deduplicated by its id, if any.
            let own_id = self.message_id(record).map(|(_, id)| id);
            headers.insert(NATS_MESSAGE_ID, own_id.unwrap_or_else(|| id(i)));
            if i > 0 {
                headers.insert(NATS_EXPECTED_LAST_MESSAGE_ID, id(i - 1));
            }
            messages.push((headers, Bytes::copy_from_slice(record.value())));
        }
        Ok(async move {
            let _exclusive = shared.publishing.write().await;
            let mut messages = messages.into_iter();
            let Some((headers, payload)) = messages.next() else {
                let end = shared.end_offset();
                return Ok(end..end);
            };
            let client = &shared.bus.client;
            let (start, _duplicate) = client
                .publish_task(shared.subject.clone(), headers, payload)
                .await?;
            let mut stored = start..start + 1;
            shared.note_end(stored.end);
            let mut messages = messages.peekable();
            while messages.peek().is_some() {
                let window: Vec<_> = messages.by_ref().take(BATCH_WINDOW).collect();
                for result in publish_pipelined(client.js(), &shared.subject, window).await {
                    match result {
                        Ok(offset) if offset == stored.end => {
                            stored.end += 1;
                            shared.note_end(stored.end);
                        }
                        Ok(offset) => {
                            return Err(with_stored_prefix(
                                nats_error(
                                    "publish",
                                    format!("batch record stored at {offset}, not {}", stored.end),
                                ),
                                Some(&stored),
                            ));
                        }
                        Err(e) => return Err(with_stored_prefix(e, Some(&stored))),
                    }
                }
            }
            Ok(stored)
        })
    }

    /// Takes the name of `consumer` for this process: a subscription's
    /// only if no handle has it ([`Error::Locked`] otherwise), a group's
    /// beside its other handles.
    pub(crate) fn claim(&self, consumer: ConsumerId) -> Result<ConsumerClaim> {
        let shared = &self.shared;
        let mut open = lock(&shared.open_consumers);
        let count = open.entry(consumer.clone()).or_insert(0);
        if *count > 0 && matches!(consumer, ConsumerId::Subscription(_)) {
            return Err(shared.locked(&consumer));
        }
        *count += 1;
        Ok(ConsumerClaim {
            topic: shared.clone(),
            consumer,
        })
    }

    /// True while a handle other than the bus's own table holds the topic
    /// (a topic handle, or a subscription or group of it).
    pub(crate) fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }
}

impl TopicBackend for NatsTopic {
    type Subscription = NatsSubscription;
    type Group = NatsGroup;

    fn options(&self) -> &TopicOptions {
        &self.shared.options
    }

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn publish(&self, record: &Record<'_>) -> Result<u64> {
        let shared = &self.shared;
        shared.bus.check_open()?;
        shared
            .bus
            .client
            .block_on(self.publish_task(record, self.message_id(record))?)?
    }

    async fn publish_async(&self, record: &Record<'_>) -> Result<u64> {
        let shared = &self.shared;
        shared.bus.check_open()?;
        let publish = self.publish_task(record, self.message_id(record))?;
        shared.bus.client.run(publish).await?
    }

    fn publish_batch(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        let shared = &self.shared;
        shared.bus.check_open()?;
        shared.bus.client.block_on(self.publish_batch_task(records)?)?
    }

    async fn publish_batch_async(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        let shared = &self.shared;
        shared.bus.check_open()?;
        let batch = self.publish_batch_task(records)?;
        shared.bus.client.run(batch).await?
    }

    /// Carries a `Nats-Msg-Id` naming the dead letter: a move repeated
    /// within the stream's duplicate window (2 minutes by default) is
    /// stored once.
    fn publish_redriven(&self, record: &Record<'_>, dlq_topic: &str, dlq_offset: u64) -> Result<u64> {
        self.publish_once(
            record,
            &format!("logbus-redrive.{}.{dlq_offset}", stream_name(dlq_topic)),
        )
    }

    fn subscribe(&self, name: &str, start: StartAt) -> Result<NatsSubscription> {
        self.shared.bus.check_open()?;
        check_length("subscription", name, &subscription_consumer_name(name))?;
        let claim = self.claim(ConsumerId::Subscription(name.to_owned()))?;
        NatsSubscription::durable(self.clone(), claim, start)
    }

    fn subscribe_ephemeral(&self, start: StartAt) -> Result<NatsSubscription> {
        self.shared.bus.check_open()?;
        NatsSubscription::ephemeral(self.clone(), start)
    }

    fn group(&self, name: &str, options: GroupOptions) -> Result<NatsGroup> {
        check_length("group", name, &group_consumer_name(name))?;
        NatsGroup::open(self.clone(), name, &options)
    }

    fn reply_sink(&self) -> Arc<dyn ReplySink> {
        self.shared.bus.clone()
    }

    fn end_offset(&self) -> u64 {
        self.shared.end_offset()
    }

    fn start_offset(&self) -> u64 {
        self.shared.start_offset()
    }

    fn purge(&self) -> Result<u64> {
        let shared = &self.shared;
        shared.bus.check_open()?;
        let state = shared.bus.client.purge_stream(&shared.name)?;
        shared.note_state(&state);
        Ok(state.start_offset)
    }

    fn stats(&self) -> Result<TopicStats> {
        let shared = &self.shared;
        shared.bus.check_open()?;
        let client = &shared.bus.client;
        let (js, stream) = (client.js().clone(), stream_name(&shared.name));
        let (state, infos) = client.block_on(async move {
            let mut stream = js
                .get_stream(stream)
                .await
                .map_err(|e| nats_error("get stream", e))?;
            let info = stream.info().await.map_err(|e| nats_error("stream info", e))?;
            let state = StreamState::from(&info.state);
            let infos: Vec<_> = stream
                .consumers()
                .try_collect()
                .await
                .map_err(|e| nats_error("consumer list", e))?;
            Ok::<_, Error>((state, infos))
        })??;
        shared.note_state(&state);
        let mut consumers: Vec<ConsumerStats> = infos
            .iter()
            .filter_map(|info| {
                let id = consumer_of_name(&info.name)?;
                let committed = match id {
                    ConsumerId::Subscription(_) => committed_of(info),
                    ConsumerId::Group(_) => info.ack_floor.stream_sequence,
                };
                Some(ConsumerStats::at(id, committed, state.end_offset))
            })
            .collect();
        consumers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(TopicStats {
            name: shared.name.clone(),
            start_offset: state.start_offset,
            end_offset: state.end_offset,
            bytes: state.bytes,
            sync: SyncStats::default(),
            consumers,
        })
    }
}

/// Records of a batch sent before their acknowledgements are awaited: well
/// below the client's limit of unacknowledged publishes (5,000).
const BATCH_WINDOW: usize = 256;

/// Sends `messages` to `subject` without waiting, then awaits their
/// acknowledgements in order: each one's offset, up to and including the
/// first failure (the messages after it were chained on it).
async fn publish_pipelined(
    js: &jetstream::Context,
    subject: &str,
    messages: Vec<(HeaderMap, Bytes)>,
) -> Vec<Result<u64>> {
    let mut pending = Vec::with_capacity(messages.len());
    let mut unsent = None;
    for (headers, payload) in messages {
        match js
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
        {
            Ok(ack) => pending.push(ack),
            Err(e) => {
                unsent = Some(publish_error(e));
                break;
            }
        }
    }
    let mut results = Vec::with_capacity(pending.len() + 1);
    for ack in pending {
        let result = ack
            .await
            .map(|ack| ack.sequence.saturating_sub(1))
            .map_err(publish_error);
        let failed = result.is_err();
        results.push(result);
        if failed {
            return results;
        }
    }
    results.extend(unsent.map(Err));
    results
}

/// `error` of a batch publish, saying which offsets of the batch were
/// stored before it.
fn with_stored_prefix(error: Error, stored: Option<&Range<u64>>) -> Error {
    match (error, stored) {
        (Error::Backend { backend, message }, Some(stored)) => Error::Backend {
            backend,
            message: format!("{message}; offsets {stored:?} of this batch were stored"),
        },
        (error, _) => error,
    }
}
