//! The NATS [`SubscriptionBackend`].
//!
//! A durable subscription `name` is the durable pull consumer `s_<name>`
//! with ack-all: acking a record commits everything up to it, so the
//! consumer's ack floor is the committed offset. An ephemeral subscription
//! is a pull consumer without acks, named by the server, kept in memory
//! and deleted when the subscription is dropped.
//!
//! Invariants:
//! - Every consumer is created pinned to a start sequence (a [`StartAt`]
//!   is resolved to an offset first), so before its first ack its
//!   committed offset is its configured start minus one: known from its
//!   configuration alone, also to [`crate::Topic::stats`].
//! - A durable consumer that delivered past its ack floor when it is
//!   opened (records received but not committed before a restart) is
//!   recreated at the floor: JetStream would otherwise redeliver them only
//!   after AckWait, out of order.
//! - Deliveries carry consecutive consumer sequences. A gap means a
//!   delivery was lost on the way (a dropped connection, an abandoned
//!   pull): the consumer is recreated at the committed offset (durable:
//!   the lost record comes again, at-least-once) or at the position
//!   (ephemeral).
//! - Every pull runs on the connection's runtime and is kept in `pending` until
//!   its result is used, so cancelling `recv_async` loses nothing; a
//!   durable subscription dropped with a pull pending naks what that pull
//!   brings, so the record is delivered again at once.
//! - `received` holds, oldest first, the records received since the last
//!   commit with their ack handles (durable only); `position` is the
//!   offset after the last record received.
//! - Every server call, and every timer, is a task of the connection's
//!   runtime ([`NatsClient::run`], [`NatsClient::spawn`],
//!   [`NatsClient::sleep`]), so the async methods work on any executor and
//!   the blocking ones [`wait`] for the same code. Tasks hold the
//!   JetStream context, never the [`NatsClient`] that owns a private
//!   runtime, so that runtime is never dropped from one of its own tasks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{AckKind, Context, Message};
use futures_util::future::Either;
use tokio::task::JoinHandle;

use super::client::{NatsClient, StreamState, join_error, wait};
use super::codec::{millis, stored_record};
use super::consumer::{MAX_PULL_WAIT, MIN_PULL_WAIT, deliver_policy, pull_one};
use super::error::nats_error;
use super::names::{stream_name, subscription_consumer_name};
use super::topic::{ConsumerClaim, NatsTopic};
use crate::backend::{SubscriptionBackend, TopicBackend};
use crate::error::Result;
use crate::patterns::StartAt;
use crate::patterns::check_commit;
use crate::record::StoredRecord;

/// How long a durable subscription's deliveries stay unacked before the
/// server would redeliver them: a subscription reads ahead of its commits
/// for as long as it likes, so in practice never.
const SUBSCRIPTION_ACK_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// An ephemeral subscription's consumer is deleted by the server after
/// this long without a pull (if the process died before deleting it); a
/// subscription that finds it gone recreates it at its position.
const EPHEMERAL_IDLE: Duration = Duration::from_secs(300);

type Pull = JoinHandle<Result<Option<Message>>>;

/// A subscription on JetStream. Not shared between threads.
#[derive(Debug)]
pub(crate) struct NatsSubscription {
    topic: NatsTopic,
    /// The durable name, held for this process; `None` when ephemeral.
    durable: Option<ConsumerClaim>,
    consumer: PullConsumer,
    received: VecDeque<(u64, Message)>,
    /// Consumer sequence of the last delivery.
    delivered: u64,
    position: u64,
    committed: u64,
    skipped: u64,
    auto_commit: bool,
    pending: Option<Pull>,
}

/// The committed offset of a durable subscription's consumer: its ack
/// floor, or before its first ack its pinned start minus one (the server
/// reports a zero floor then).
pub(crate) fn committed_of(info: &async_nats::jetstream::consumer::Info) -> u64 {
    match (info.ack_floor.consumer_sequence, &info.config.deliver_policy) {
        (0, DeliverPolicy::ByStartSequence { start_sequence }) => start_sequence.saturating_sub(1),
        _ => info.ack_floor.stream_sequence,
    }
}

/// The consumer of the durable subscription `name`, starting at `offset`.
fn durable_config(name: &str, offset: u64) -> pull::Config {
    let consumer = subscription_consumer_name(name);
    pull::Config {
        durable_name: Some(consumer.clone()),
        name: Some(consumer),
        ack_policy: AckPolicy::All,
        ack_wait: SUBSCRIPTION_ACK_WAIT,
        max_ack_pending: -1,
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: offset + 1,
        },
        ..Default::default()
    }
}

/// An ephemeral consumer starting at `deliver`.
fn ephemeral_config(deliver: DeliverPolicy) -> pull::Config {
    pull::Config {
        ack_policy: AckPolicy::None,
        deliver_policy: deliver,
        inactive_threshold: EPHEMERAL_IDLE,
        memory_storage: true,
        num_replicas: 1,
        ..Default::default()
    }
}

/// What opening found: the consumer and where the subscription stands.
struct Opened {
    consumer: PullConsumer,
    committed: u64,
    delivered: u64,
    stream: StreamState,
}

/// The stream of `topic` and its state (one request).
async fn stream_of(js: &Context, topic: &str) -> Result<(Stream, StreamState)> {
    let stream = js
        .get_stream(stream_name(topic))
        .await
        .map_err(|e| nats_error("get stream", e))?;
    let state = StreamState::from(&stream.cached_info().state);
    Ok((stream, state))
}

async fn create_consumer<I>(stream: &Stream<I>, config: pull::Config) -> Result<PullConsumer> {
    stream
        .create_consumer(config)
        .await
        .map_err(|e| nats_error("create consumer", e))
}

/// The offset `start` means on `stream`, in state `state`. A timestamp is
/// resolved by the server, through a short-lived consumer starting at that
/// time.
async fn resolve_start<I>(stream: &Stream<I>, state: &StreamState, start: StartAt) -> Result<u64> {
    Ok(match start {
        StartAt::Earliest => state.start_offset,
        StartAt::Latest => state.end_offset,
        StartAt::Offset(offset) => offset,
        StartAt::Timestamp(_) => {
            let probe = create_consumer(stream, ephemeral_config(deliver_policy(start)?)).await?;
            let first = probe.cached_info().delivered.stream_sequence;
            stream
                .delete_consumer(&probe.cached_info().name)
                .await
                .map_err(|e| nats_error("delete consumer", e))?;
            first
        }
    })
}

/// The offset a consumer of `topic` seeking to `to` moves to: the first
/// record at or after it still stored. An offset past the end is
/// [`crate::Error::InvalidArgument`], as a commit there is.
pub(crate) async fn seek_offset(js: &Context, topic: &str, to: StartAt) -> Result<u64> {
    let (stream, state) = stream_of(js, topic).await?;
    if let StartAt::Offset(offset) = to {
        check_commit(offset, state.end_offset)?;
    }
    Ok(resolve_start(&stream, &state, to).await?.max(state.start_offset))
}

/// Opens the durable subscription `name` of `topic` (see the module doc).
async fn open_durable(js: &Context, topic: &str, name: &str, start: StartAt) -> Result<Opened> {
    let (stream, state) = stream_of(js, topic).await?;
    let consumer_name = subscription_consumer_name(name);
    let (consumer, committed) = match stream.consumer_info(&consumer_name).await {
        Ok(info) if info.delivered.consumer_sequence <= info.ack_floor.consumer_sequence => {
            let consumer = stream
                .get_consumer(&consumer_name)
                .await
                .map_err(|e| nats_error("get consumer", e))?;
            (consumer, committed_of(&info))
        }
        Ok(info) => {
            let committed = committed_of(&info);
            stream
                .delete_consumer(&consumer_name)
                .await
                .map_err(|e| nats_error("delete consumer", e))?;
            (
                create_consumer(&stream, durable_config(name, committed)).await?,
                committed,
            )
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            let committed = resolve_start(&stream, &state, start).await?;
            (
                create_consumer(&stream, durable_config(name, committed)).await?,
                committed,
            )
        }
        Err(e) => return Err(nats_error("consumer info", e)),
    };
    let delivered = consumer.cached_info().delivered.consumer_sequence;
    Ok(Opened {
        consumer,
        committed,
        delivered,
        stream: state,
    })
}

/// Opens an ephemeral subscription of `topic` at `start`.
async fn open_ephemeral(js: &Context, topic: &str, start: StartAt) -> Result<Opened> {
    let (stream, state) = stream_of(js, topic).await?;
    let offset = resolve_start(&stream, &state, start).await?;
    let deliver = DeliverPolicy::ByStartSequence {
        start_sequence: offset + 1,
    };
    Ok(Opened {
        consumer: create_consumer(&stream, ephemeral_config(deliver)).await?,
        committed: offset,
        delivered: 0,
        stream: state,
    })
}

/// Replaces the consumer `old` of `stream` by one made from `config`.
async fn recreate(js: Context, stream: String, old: String, config: pull::Config) -> Result<PullConsumer> {
    let stream = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| nats_error("get stream", e))?;
    // Gone already (an idle ephemeral) is fine: the create decides.
    let _ = stream.delete_consumer(&old).await;
    create_consumer(&stream, config).await
}

impl NatsSubscription {
    pub(crate) fn durable(
        topic: NatsTopic,
        claim: ConsumerClaim,
        start: StartAt,
    ) -> Result<NatsSubscription> {
        let client = &topic.shared().bus.client;
        let (js, name, durable) = (
            client.js().clone(),
            topic.name().to_owned(),
            claim.name().to_owned(),
        );
        let opened = client.block_on(async move { open_durable(&js, &name, &durable, start).await })??;
        Ok(NatsSubscription::new(topic, Some(claim), opened))
    }

    pub(crate) fn ephemeral(topic: NatsTopic, start: StartAt) -> Result<NatsSubscription> {
        let client = &topic.shared().bus.client;
        let (js, name) = (client.js().clone(), topic.name().to_owned());
        let opened = client.block_on(async move { open_ephemeral(&js, &name, start).await })??;
        Ok(NatsSubscription::new(topic, None, opened))
    }

    fn new(topic: NatsTopic, durable: Option<ConsumerClaim>, opened: Opened) -> NatsSubscription {
        let start = opened.stream.start_offset;
        topic.shared().note_end(opened.stream.end_offset);
        NatsSubscription {
            topic,
            durable,
            consumer: opened.consumer,
            received: VecDeque::new(),
            delivered: opened.delivered,
            position: opened.committed.max(start),
            committed: opened.committed,
            skipped: start.saturating_sub(opened.committed),
            auto_commit: false,
            pending: None,
        }
    }

    fn client(&self) -> &NatsClient {
        &self.topic.shared().bus.client
    }

    fn check_open(&self) -> Result<()> {
        self.topic.shared().bus.check_open()
    }

    /// The next record, waiting up to `wait` (`None`: until one comes).
    async fn receive(&mut self, wait: Option<Duration>) -> Result<Option<StoredRecord>> {
        self.check_open()?;
        if self.auto_commit && self.position > self.committed {
            self.commit_offset_async(self.position).await?;
        }
        let deadline = wait.map(|wait| Instant::now() + wait);
        let mut recovered = false;
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.next_message(left).await {
                Ok(Some(message)) => {
                    if let Some(record) = self.admit(message).await? {
                        return Ok(Some(record));
                    }
                }
                Ok(None) if left.is_some_and(|left| left < MIN_PULL_WAIT) => return Ok(None),
                Ok(None) => {}
                // An ephemeral consumer the server deleted while idle.
                Err(_) if self.durable.is_none() && !recovered => {
                    recovered = true;
                    self.reposition(self.position).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The result of the pending pull, or of a new one waiting up to
    /// `wait`. A pull left by a cancelled `recv_async` is waited for at
    /// most `wait` and kept if it has not finished.
    async fn next_message(&mut self, wait: Option<Duration>) -> Result<Option<Message>> {
        let inherited = self.pending.is_some();
        let pending = match &mut self.pending {
            Some(pending) => pending,
            none => {
                let consumer = self.consumer.clone();
                let wait = wait.map_or(MAX_PULL_WAIT, |w| w.min(MAX_PULL_WAIT));
                let client = &self.topic.shared().bus.client;
                none.insert(client.spawn(pull_one(consumer, Some(wait))))
            }
        };
        let joined = match wait {
            Some(wait) if inherited => {
                // The timer runs on the connection's runtime too.
                let sleep = std::pin::pin!(self.topic.shared().bus.client.sleep(wait));
                match futures_util::future::select(pending, sleep).await {
                    Either::Left((joined, _sleep)) => joined,
                    Either::Right((slept, _pending)) => return slept.map(|()| None),
                }
            }
            _ => pending.await,
        };
        self.pending = None;
        joined.map_err(join_error)?
    }

    /// Takes a delivered message in; `None` if it revealed a lost delivery
    /// (the consumer was recreated: pull again).
    async fn admit(&mut self, message: Message) -> Result<Option<StoredRecord>> {
        let info = message.info().map_err(|e| nats_error("message metadata", e))?;
        let (consumer_sequence, sequence) = (info.consumer_sequence, info.stream_sequence);
        if consumer_sequence != self.delivered + 1 {
            let restart = match self.durable {
                Some(_) => self.committed,
                None => self.position,
            };
            self.reposition(restart).await?;
            return Ok(None);
        }
        self.topic.shared().note_end(sequence + info.pending);
        let record = stored_record(
            message.headers.as_ref(),
            &message.payload,
            sequence,
            millis(&info.published),
        )?;
        let offset = record.offset();
        self.delivered = consumer_sequence;
        self.skipped += offset.saturating_sub(self.position);
        self.position = offset + 1;
        if self.durable.is_some() {
            self.received.push_back((offset, message));
        }
        Ok(Some(record))
    }

    /// Recreates the consumer at `offset`: the next record received is
    /// the one at `offset` (or the first after it still stored), and for
    /// a durable subscription `offset` is committed.
    async fn reposition(&mut self, offset: u64) -> Result<()> {
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
        let config = match &self.durable {
            Some(claim) => durable_config(claim.name(), offset),
            None => ephemeral_config(DeliverPolicy::ByStartSequence {
                start_sequence: offset + 1,
            }),
        };
        let client = self.client().clone();
        let old = self.consumer.cached_info().name.clone();
        let stream = stream_name(self.topic.name());
        self.consumer = client
            .run(recreate(client.js().clone(), stream, old, config))
            .await??;
        self.delivered = 0;
        self.position = offset;
        self.received.clear();
        if self.durable.is_some() {
            self.committed = offset;
        }
        Ok(())
    }

    /// Commits `next_offset`. Durable: if the record before it was
    /// received since the last commit, an ack of it (ack-all) moves the
    /// floor there; any other offset recreates the consumer at it, which
    /// also moves the position. Ephemeral: the commit is local.
    async fn commit_offset_async(&mut self, next_offset: u64) -> Result<()> {
        if self.durable.is_none() {
            self.committed = next_offset;
            return Ok(());
        }
        if next_offset == self.committed {
            return Ok(());
        }
        match self.take_ack(next_offset) {
            Some(message) => {
                let ack = async move { message.double_ack().await.map_err(|e| nats_error("ack", e)) };
                self.client().run(ack).await??;
                self.committed = next_offset;
                Ok(())
            }
            None => self.reposition(next_offset).await,
        }
    }

    /// If the record at `next_offset - 1` was received since the last
    /// commit: forgets it and the records before it and returns its
    /// message (to ack).
    fn take_ack(&mut self, next_offset: u64) -> Option<Message> {
        let last = next_offset.checked_sub(1)?;
        let index = self.received.iter().position(|(offset, _)| *offset == last)?;
        self.received.drain(..=index).last().map(|(_, message)| message)
    }
}

impl SubscriptionBackend for NatsSubscription {
    fn set_auto_commit(&mut self, on: bool) {
        self.auto_commit = on;
    }

    fn name(&self) -> Option<&str> {
        self.durable.as_ref().map(ConsumerClaim::name)
    }

    // The blocking calls wait for the async code, whose every server call
    // and timer is a task (the module invariants), as [`wait`] requires.

    fn recv(&mut self, timeout: Duration) -> Result<Option<StoredRecord>> {
        wait(self.receive(Some(timeout)))
    }

    fn try_recv(&mut self) -> Result<Option<StoredRecord>> {
        self.recv(Duration::ZERO)
    }

    async fn recv_async(&mut self) -> Result<StoredRecord> {
        loop {
            if let Some(record) = self.receive(None).await? {
                return Ok(record);
            }
        }
    }

    fn commit(&mut self) -> Result<()> {
        self.commit_offset(self.position)
    }

    fn commit_offset(&mut self, next_offset: u64) -> Result<()> {
        self.check_open()?;
        if next_offset > self.topic.end_offset() {
            // The end known here may be stale: ask the server.
            self.topic.stats()?;
        }
        check_commit(next_offset, self.topic.end_offset())?;
        wait(self.commit_offset_async(next_offset))
    }

    async fn commit_async(&mut self) -> Result<()> {
        self.check_open()?;
        // The position follows a received record, so it is within the
        // topic: no end to check.
        self.commit_offset_async(self.position).await
    }

    /// Recreates the consumer at the offset sought (committing it, for a
    /// durable subscription).
    fn seek(&mut self, to: StartAt) -> Result<u64> {
        self.check_open()?;
        let (js, topic) = (self.client().js().clone(), self.topic.name().to_owned());
        let offset = self
            .client()
            .block_on(async move { seek_offset(&js, &topic, to).await })??;
        wait(self.reposition(offset))?;
        Ok(offset)
    }

    fn committed(&self) -> u64 {
        self.committed
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn lag(&self) -> u64 {
        self.topic.end_offset().saturating_sub(self.committed)
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        let pending = self.pending.take();
        if self.check_open().is_err() {
            return;
        }
        let client = self.client().clone();
        match &self.durable {
            // What a pending pull brings goes back at once: a nak.
            Some(_) => {
                if let Some(pending) = pending {
                    client.spawn(nak_when_delivered(pending));
                }
            }
            None => {
                let stream = stream_name(self.topic.name());
                let name = self.consumer.cached_info().name.clone();
                client.spawn(delete_consumer(client.js().clone(), stream, name));
            }
        }
    }
}

async fn nak_when_delivered(pending: Pull) {
    if let Ok(Ok(Some(message))) = pending.await {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
}

async fn delete_consumer(js: Context, stream: String, name: String) {
    if let Ok(stream) = js.get_stream_no_info(stream).await {
        let _ = stream.delete_consumer(&name).await;
    }
}
