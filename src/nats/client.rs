//! The blocking facade: one connection and one JetStream context driven by
//! a private tokio runtime (one worker thread), so that callers on any
//! thread get logbus's blocking API: a plain thread, tokio's
//! `spawn_blocking` and `block_in_place`, even a task of another runtime
//! (whose thread it then blocks, as any blocking I/O would). Only the
//! private runtime's own thread may not block: it drives the connection
//! the call would wait for.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;

use super::codec::{encode_headers, millis, stored_record};
use super::error::{connect_error, nats_error, publish_error};
use super::names::{stream_name, topic_of_stream, topic_subject};
use crate::error::{Error, Result};
use crate::patterns::{Retention, TopicOptions};
use crate::record::{Record, StoredRecord};

/// The name of the private runtime's thread.
const RUNTIME_THREAD: &str = "logbus-nats";

/// [`NatsClient::block_on`] on `handle`'s runtime. Not tokio's
/// `Handle::block_on`, which panics inside any runtime's task, nor a
/// `futures` executor, which panics inside another one's `block_on`:
/// pollster parks the thread between polls and minds neither.
fn block_on_in<F: Future>(handle: &tokio::runtime::Handle, future: F) -> Result<F::Output> {
    if std::thread::current().name() == Some(RUNTIME_THREAD) {
        return Err(Error::InvalidArgument(
            "a blocking logbus call was made on the NATS backend's own runtime thread, which it would wait for; \
             use the *_async methods there"
                .into(),
        ));
    }
    let _context = handle.enter();
    Ok(pollster::block_on(future))
}

/// How a topic's stream is configured when it is first created.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// Retention mode (see [`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md) for how each maps).
    pub retention: Retention,
    /// Size limit in bytes (`max_bytes`).
    pub max_bytes: Option<u64>,
    /// Age limit (`max_age`).
    pub max_age: Option<Duration>,
    /// Largest message accepted (`max_msg_size`).
    pub max_record_bytes: Option<u64>,
    /// Copies kept by a cluster (`num_replicas`): 1 on a single server.
    pub replicas: usize,
    /// Memory instead of file storage.
    pub memory: bool,
    /// How long the server remembers a `Nats-Msg-Id` (`duplicate_window`);
    /// `None`: its default (two minutes).
    pub duplicate_window: Option<Duration>,
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            retention: Retention::Limits,
            max_bytes: None,
            max_age: None,
            max_record_bytes: None,
            replicas: 1,
            memory: false,
            duplicate_window: None,
        }
    }
}

impl StreamSpec {
    /// The stream a topic opened with `options` gets. Segment size and the
    /// index interval have no JetStream counterpart (the server sizes its
    /// own blocks). Every durability mode maps to file storage: what
    /// survives a power loss is the server's business (its sync interval,
    /// and replicas), see [`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md).
    pub fn from_topic_options(options: &TopicOptions) -> StreamSpec {
        let log = &options.log;
        StreamSpec {
            retention: options.retention,
            max_bytes: log.retention_bytes,
            max_age: log.retention_age,
            max_record_bytes: Some(log.max_record_bytes),
            replicas: 1,
            memory: false,
            duplicate_window: Some(options.dedupe_window).filter(|window| !window.is_zero()),
        }
    }

    fn config(&self, topic: &str) -> stream::Config {
        let subject = topic_subject(topic);
        stream::Config {
            name: stream_name(topic),
            // The bare subject for records, the subtree for replies by
            // correlation id (inbox topics).
            subjects: vec![subject.clone(), format!("{subject}.>")],
            retention: match self.retention {
                Retention::Limits => stream::RetentionPolicy::Limits,
                Retention::Interest => stream::RetentionPolicy::Interest,
                Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
            },
            max_bytes: self
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_age: self.max_age.unwrap_or_default(),
            max_message_size: self
                .max_record_bytes
                .map_or(-1, |b| i32::try_from(b).unwrap_or(i32::MAX)),
            storage: match self.memory {
                true => stream::StorageType::Memory,
                false => stream::StorageType::File,
            },
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window.unwrap_or_default(),
            allow_direct: true,
            ..Default::default()
        }
    }
}

/// A stream's positions, in logbus offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// Oldest stored offset (`first_seq - 1`).
    pub start_offset: u64,
    /// Offset the next record gets (`last_seq`).
    pub end_offset: u64,
    /// Records stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// A consumer's positions, in logbus offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerState {
    /// Every record below it is acked (or termed): the ack floor's stream
    /// sequence, which as an offset is "the next one".
    pub ack_floor: u64,
    /// Offset after the last record delivered.
    pub delivered: u64,
    /// Delivered and not yet acked.
    pub ack_pending: usize,
    /// Not yet delivered.
    pub pending: u64,
    /// Messages delivered more than once and not yet acked.
    pub redelivered: usize,
}

impl From<&async_nats::jetstream::consumer::Info> for ConsumerState {
    fn from(info: &async_nats::jetstream::consumer::Info) -> Self {
        ConsumerState {
            ack_floor: info.ack_floor.stream_sequence,
            delivered: info.delivered.stream_sequence,
            ack_pending: info.num_ack_pending,
            pending: info.num_pending,
            redelivered: info.num_redelivered,
        }
    }
}

/// A connection to a NATS server or cluster with JetStream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NatsClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    _runtime: PrivateRuntime,
    handle: tokio::runtime::Handle,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// How long to wait for an answer of the server (also the time a
    /// publish is retried while its stream has no leader).
    timeout: Duration,
}

/// The private runtime, shut down without blocking when dropped: the last
/// handle may be dropped (or a connect fail) inside an async runtime, where
/// a blocking shutdown panics.
#[derive(Debug)]
struct PrivateRuntime(Option<tokio::runtime::Runtime>);

impl Drop for PrivateRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl NatsClient {
    /// Connects to `urls` (comma-separated, e.g. `nats://127.0.0.1:4222`);
    /// with several, the client fails over between them.
    pub fn connect(urls: &str, timeout: Duration) -> Result<NatsClient> {
        let addrs = urls
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidArgument(format!("bad NATS url in {urls:?}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(RUNTIME_THREAD)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let runtime = PrivateRuntime(Some(runtime));
        let connect = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .connect(addrs);
        let client = block_on_in(&handle, connect)?.map_err(connect_error)?;
        // The context spawns its acker task: inside the runtime.
        let js = {
            let _entered = handle.enter();
            jetstream::ContextBuilder::new()
                .timeout(timeout)
                .build(client.clone())
        };
        Ok(NatsClient {
            inner: Arc::new(Inner {
                _runtime: runtime,
                handle,
                client,
                js,
                timeout,
            }),
        })
    }

    /// Polls `future` on the calling thread, in the private runtime's
    /// context (its timers and sockets are driven by the runtime's
    /// thread), until it completes. Works from any thread but the private
    /// runtime's own (refused: it would wait for itself).
    pub(crate) fn block_on<F: Future>(&self, future: F) -> Result<F::Output> {
        block_on_in(&self.inner.handle, future)
    }

    /// Runs `future` on the private runtime and waits for it from any
    /// executor (the join handle is a plain future). Dropping the returned
    /// future does not cancel `future`.
    pub(crate) async fn run<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(future).await.map_err(|e| nats_error("task", e))
    }

    /// Starts `future` on the private runtime.
    pub(crate) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.handle.spawn(future)
    }

    /// Flushes what was sent and closes the connection.
    pub(crate) fn close(&self) -> Result<()> {
        self.block_on(self.client().drain())?
            .map_err(|e| nats_error("close", e))
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.inner.js
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Creates the stream of `topic` if it does not exist (an existing
    /// stream keeps its configuration, like a topic's options that apply
    /// when it is first opened) and returns its state.
    pub(crate) fn ensure_stream(&self, topic: &str, spec: &StreamSpec) -> Result<StreamState> {
        self.block_on(self.ensure_stream_task(topic, spec))?
    }

    /// [`NatsClient::ensure_stream`] as a task for the private runtime
    /// (it holds the JetStream context, not this client).
    pub(crate) fn ensure_stream_task(
        &self,
        topic: &str,
        spec: &StreamSpec,
    ) -> impl Future<Output = Result<StreamState>> + Send + 'static {
        let config = spec.config(topic);
        let js = self.js().clone();
        async move {
            let mut stream = js
                .get_or_create_stream(config)
                .await
                .map_err(|e| nats_error("create stream", e))?;
            let info = stream.info().await.map_err(|e| nats_error("stream info", e))?;
            Ok(StreamState::from(&info.state))
        }
    }

    /// Positions of the stream of `topic`.
    pub fn stream_state(&self, topic: &str) -> Result<StreamState> {
        Ok(StreamState::from(&self.stream_info(&stream_name(topic))?.state))
    }

    /// The leader of the stream of `topic` (its server name), in a cluster.
    pub fn stream_leader(&self, topic: &str) -> Result<Option<String>> {
        Ok(self
            .stream_info(&stream_name(topic))?
            .cluster
            .and_then(|c| c.leader))
    }

    /// A handle on the stream of `topic` (no info round trip).
    pub(crate) async fn stream_of(&self, topic: &str) -> Result<stream::Stream<()>> {
        self.js()
            .get_stream_no_info(stream_name(topic))
            .await
            .map_err(|e| nats_error("get stream", e))
    }

    /// The server's information on the stream named `stream`.
    fn stream_info(&self, stream: &str) -> Result<stream::Info> {
        self.block_on(async {
            let mut stream = self
                .js()
                .get_stream(stream)
                .await
                .map_err(|e| nats_error("get stream", e))?;
            stream
                .info()
                .await
                .cloned()
                .map_err(|e| nats_error("stream info", e))
        })?
    }

    /// Names of the topics with a stream on the server.
    pub(crate) fn topic_names(&self) -> Result<Vec<String>> {
        use futures_util::TryStreamExt;
        self.block_on(async {
            let names: Vec<String> = self
                .js()
                .stream_names()
                .try_collect()
                .await
                .map_err(|e| nats_error("stream names", e))?;
            let mut topics: Vec<String> = names.iter().filter_map(|n| topic_of_stream(n)).collect();
            topics.sort();
            Ok(topics)
        })?
    }

    /// Publishes `record` to `subject` with an optional `Nats-Msg-Id` (the
    /// stream drops a second message with the same id within its
    /// duplicate window). Returns the offset and whether the server took
    /// it for a duplicate (the offset is then the first copy's).
    pub(crate) fn publish_to(
        &self,
        subject: String,
        record: &Record<'_>,
        msg_id: Option<&str>,
    ) -> Result<(u64, bool)> {
        self.block_on(self.publish_to_task(subject, record, msg_id)?)?
    }

    /// [`NatsClient::publish_to`] as a task for the private runtime.
    pub(crate) fn publish_to_task(
        &self,
        subject: String,
        record: &Record<'_>,
        msg_id: Option<&str>,
    ) -> Result<impl Future<Output = Result<(u64, bool)>> + Send + 'static> {
        let mut headers = encode_headers(record)?;
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        Ok(self.publish_task(subject, headers, Bytes::copy_from_slice(record.value())))
    }

    /// A publish waiting for its PubAck, as a task for the private runtime
    /// (it holds the JetStream context, not this client): the offset and
    /// whether the server took it for a duplicate.
    ///
    /// While the stream has no leader (a cluster electing one after a node
    /// died) the server answers "no responders": nobody received the
    /// message, so it is sent again, for up to the client's timeout. Any
    /// other failure is returned at once; one without an answer (a PubAck
    /// that did not come) leaves unknown whether the record was stored.
    pub(crate) fn publish_task(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> impl Future<Output = Result<(u64, bool)>> + Send + 'static + use<> {
        let js = self.js().clone();
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        async move {
            let mut pause = Duration::from_millis(25);
            loop {
                let attempt = async {
                    js.publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                        .await?
                        .await
                };
                match attempt.await {
                    Ok(ack) => return Ok((ack.sequence.saturating_sub(1), ack.duplicate)),
                    Err(e)
                        if e.kind() == PublishErrorKind::StreamNotFound
                            && tokio::time::Instant::now() + pause < deadline =>
                    {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(250));
                    }
                    Err(e) => return Err(publish_error(e)),
                }
            }
        }
    }

    /// The record at `offset` of `topic`, if stored.
    pub(crate) fn read(&self, topic: &str, offset: u64) -> Result<Option<StoredRecord>> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        self.block_on(async {
            let stream = self.stream_of(topic).await?;
            match stream.get_raw_message(offset + 1).await {
                Ok(m) => stored_record(Some(&m.headers), &m.payload, m.sequence, millis(&m.time)).map(Some),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(nats_error("get message", e)),
            }
        })?
    }

    /// Deletes the stream named `stream`; `Ok(false)` if there was none.
    pub(crate) fn delete_stream(&self, stream: &str) -> Result<bool> {
        self.block_on(async {
            match self.js().delete_stream(stream).await {
                Ok(_) => Ok(true),
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(error)
                        if error.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Ok(false)
                    }
                    _ => Err(nats_error("delete stream", e)),
                },
            }
        })?
    }

    /// Deletes the durable consumer `consumer` of the stream of `topic`;
    /// `Ok(false)` if there was none (or no stream).
    pub(crate) fn delete_consumer(&self, topic: &str, consumer: &str) -> Result<bool> {
        self.block_on(async {
            let deleted = self
                .js()
                .delete_consumer_from_stream(consumer, stream_name(topic))
                .await;
            match deleted {
                Ok(_) => Ok(true),
                Err(e) => match e.kind() {
                    ConsumerErrorKind::JetStream(error)
                        if [ErrorCode::CONSUMER_NOT_FOUND, ErrorCode::STREAM_NOT_FOUND]
                            .contains(&error.error_code()) =>
                    {
                        Ok(false)
                    }
                    _ => Err(nats_error("delete consumer", e)),
                },
            }
        })?
    }

    /// Purges every message of the stream of `topic`; its state after.
    pub(crate) fn purge_stream(&self, topic: &str) -> Result<StreamState> {
        let stream = stream_name(topic);
        self.block_on(async {
            let handle = self.stream_of(topic).await?;
            handle.purge().await.map_err(|e| nats_error("purge stream", e))
        })??;
        Ok(StreamState::from(&self.stream_info(&stream)?.state))
    }

    /// The state of `consumer` on the stream of `topic`.
    pub fn consumer_state(&self, topic: &str, consumer: &str) -> Result<ConsumerState> {
        self.block_on(async {
            let stream = self.stream_of(topic).await?;
            let info = stream
                .consumer_info(consumer)
                .await
                .map_err(|e| nats_error("consumer info", e))?;
            Ok(ConsumerState::from(&info))
        })?
    }
}

/// The messages stored on `subject` in the stream named `stream`, oldest
/// first, as records: one direct get per message, plus one that finds
/// none. The server's per-subject index finds them; nothing is scanned.
pub(crate) async fn records_on_subject(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<Vec<StoredRecord>> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let stream = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| nats_error("get stream", e))?;
    let mut records = Vec::new();
    let mut next = 1;
    loop {
        match stream.get_first_raw_message_by_subject(subject, next).await {
            Ok(m) => {
                next = m.sequence + 1;
                records.push(stored_record(
                    Some(&m.headers),
                    &m.payload,
                    m.sequence,
                    millis(&m.time),
                )?);
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(records),
            Err(e) => return Err(nats_error("get message by subject", e)),
        }
    }
}

impl From<&stream::State> for StreamState {
    fn from(state: &stream::State) -> Self {
        StreamState {
            start_offset: state.first_sequence.saturating_sub(1),
            end_offset: state.last_sequence,
            messages: state.messages,
            bytes: state.bytes,
        }
    }
}
