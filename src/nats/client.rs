//! The connection and the one place that decides where its futures run.
//!
//! One async-nats connection and one JetStream context per bus, driven by
//! a tokio runtime: the caller's multi-thread runtime when the bus was
//! connected inside one (or was given one with [`NatsOptions::runtime`]),
//! else a private runtime with one worker thread named `logbus-nats`
//! ([`NatsOptions::private_runtime`] forces it).
//!
//! Invariants:
//! - Every async-nats future, and every tokio timer, is polled only inside
//!   a task spawned on the connection's runtime ([`NatsClient::run`],
//!   [`NatsClient::spawn`], [`NatsClient::block_on`]); a caller, blocking
//!   or async, on any executor, only ever awaits the task's `JoinHandle`,
//!   which needs no runtime. So a runtime that shut down (the caller's,
//!   dropped while the bus lived on) never panics a call: a task spawned
//!   on it is cancelled at once, and its join error is
//!   [`Error::Closed`] (see [`join_error`]).
//! - The futures the blocking calls wait for with [`wait`] are of two
//!   kinds only: a task's join ([`NatsClient::block_on`]), or one of the
//!   backend's own step sequences whose every server call is a
//!   [`NatsClient::run`] (a subscription's receive, a delivery's settle).
//! - A blocking wait on a worker thread of a multi-thread runtime gives the
//!   worker up for the wait (`tokio::task::block_in_place`), so a call
//!   from a task of the connection's own runtime does not take a worker
//!   its task needs; anywhere else (a plain thread, `spawn_blocking`, a
//!   current-thread runtime, another executor) it parks the thread.
//! - Nothing here holds the runtime's shutdown: a private runtime is shut
//!   down without blocking when the last handle goes; the caller's is the
//!   caller's, and tasks on either hold the JetStream context, never the
//!   [`NatsClient`], so a private runtime is never dropped from one of its
//!   own tasks.
//!
//! [`NatsOptions::runtime`]: super::NatsOptions::runtime
//! [`NatsOptions::private_runtime`]: super::NatsOptions::private_runtime

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::{JoinError, JoinHandle};

use super::codec::{encode_headers, millis, stored_record};
use super::error::{connect_error, nats_error, publish_error};
use super::names::{stream_name, topic_of_stream, topic_subject};
use super::options::RuntimeChoice;
use crate::error::{Error, Result};
use crate::patterns::{Retention, TopicOptions};
use crate::record::{Record, StoredRecord};

/// The name of the private runtime's thread.
const RUNTIME_THREAD: &str = "logbus-nats";

/// Blocks the calling thread until `future` completes; `future` must need
/// no runtime of its own to be polled (see the module invariants). On a
/// worker thread of a multi-thread runtime the worker is given up for the
/// wait (`block_in_place`: its other tasks move to another thread, and so
/// a task it waits for can run); `block_in_place` would panic on a
/// current-thread runtime, which is never given up: the wait blocks its
/// thread as any blocking I/O does. pollster parks the thread between
/// polls and minds no runtime (tokio's `block_on` panics inside one,
/// `futures::executor`'s inside another `block_on`).
pub(crate) fn wait<F: Future>(future: F) -> F::Output {
    let on_multi_thread =
        Handle::try_current().is_ok_and(|current| current.runtime_flavor() == RuntimeFlavor::MultiThread);
    match on_multi_thread {
        true => tokio::task::block_in_place(|| pollster::block_on(future)),
        false => pollster::block_on(future),
    }
}

/// A task of the connection's runtime that did not complete: cancelled
/// because that runtime shut down (the connection went with it), or
/// panicked (a bug of the client's).
pub(crate) fn join_error(error: JoinError) -> Error {
    match error.is_cancelled() {
        true => Error::Closed,
        false => nats_error("task", error),
    }
}

/// Runs `future` as a task on `handle`'s runtime and waits for it from any
/// executor (the join handle is a plain future). Dropping the returned
/// future does not cancel `future`.
async fn run_on<F>(handle: &Handle, future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle.spawn(future).await.map_err(join_error)
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
    /// `None` on the caller's runtime.
    _private: Option<PrivateRuntime>,
    /// The connection's runtime: every task of this client runs there.
    handle: Handle,
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

/// The runtime `choice` names for a connection made on this thread, and
/// the private runtime if it is one of logbus's own.
fn runtime_for(choice: &RuntimeChoice) -> Result<(Handle, Option<PrivateRuntime>)> {
    let caller = match choice {
        RuntimeChoice::Private => None,
        RuntimeChoice::Handle(handle) => match handle.runtime_flavor() {
            RuntimeFlavor::MultiThread => Some(handle.clone()),
            flavor => {
                return Err(Error::InvalidArgument(format!(
                    "NatsOptions::runtime needs a multi-thread tokio runtime, got a {flavor:?} one: a \
                     current-thread runtime runs nothing while its thread waits in a blocking call \
                     (leave the runtime out to get logbus's own)"
                )));
            }
        },
        RuntimeChoice::Auto => Handle::try_current()
            .ok()
            .filter(|current| current.runtime_flavor() == RuntimeFlavor::MultiThread),
    };
    if let Some(handle) = caller {
        return Ok((handle, None));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(RUNTIME_THREAD)
        .enable_all()
        .build()?;
    Ok((runtime.handle().clone(), Some(PrivateRuntime(Some(runtime)))))
}

impl NatsClient {
    /// Connects to `urls` (comma-separated, e.g. `nats://127.0.0.1:4222`);
    /// with several, the client fails over between them. The connection
    /// runs on the caller's multi-thread runtime if there is one, else on
    /// a private one.
    pub fn connect(urls: &str, timeout: Duration) -> Result<NatsClient> {
        NatsClient::connect_on(urls, timeout, &RuntimeChoice::Auto)
    }

    /// [`NatsClient::connect`] on the runtime `runtime` names (the module
    /// doc).
    pub(crate) fn connect_on(urls: &str, timeout: Duration, runtime: &RuntimeChoice) -> Result<NatsClient> {
        let addrs = urls
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidArgument(format!("bad NATS url in {urls:?}: {e}")))?;
        let (handle, private) = runtime_for(runtime)?;
        let connect = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .connect(addrs);
        let client = wait(run_on(&handle, connect))?.map_err(connect_error)?;
        // The context spawns its acker task: inside the runtime.
        let js = {
            let _entered = handle.enter();
            jetstream::ContextBuilder::new()
                .timeout(timeout)
                .build(client.clone())
        };
        Ok(NatsClient {
            inner: Arc::new(Inner {
                _private: private,
                handle,
                client,
                js,
                timeout,
            }),
        })
    }

    /// Runs `future` as a task on the connection's runtime and blocks the
    /// calling thread until it completes ([`wait`]). Works from any thread,
    /// also a task of the connection's own runtime; [`Error::Closed`] if
    /// that runtime shut down.
    pub(crate) fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        wait(self.run(future))
    }

    /// Runs `future` as a task on the connection's runtime and waits for it
    /// from any executor (the join handle is a plain future). Dropping the
    /// returned future does not cancel `future`. [`Error::Closed`] if that
    /// runtime shut down.
    pub(crate) async fn run<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        run_on(&self.inner.handle, future).await
    }

    /// Starts `future` as a task on the connection's runtime. On a runtime
    /// that shut down it never runs, and the join handle says so (a
    /// cancelled [`JoinError`]).
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.handle.spawn(future)
    }

    /// Waits `duration` on the connection's runtime's timer, from any
    /// executor. The timer is made inside the task: making one needs the
    /// runtime's context, which the caller's thread may not have.
    pub(crate) async fn sleep(&self, duration: Duration) -> Result<()> {
        self.run(async move { tokio::time::sleep(duration).await }).await
    }

    /// Flushes what was sent and closes the connection.
    pub(crate) fn close(&self) -> Result<()> {
        let client = self.client().clone();
        self.block_on(async move { client.drain().await })?
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

    /// [`NatsClient::ensure_stream`] as a task for the connection's
    /// runtime (it holds the JetStream context, not this client).
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

    /// A handle on the stream of `topic` (no info round trip), as a step
    /// of a task for the connection's runtime.
    pub(crate) fn stream_of(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<stream::Stream<()>>> + Send + 'static + use<> {
        let js = self.js().clone();
        let name = stream_name(topic);
        async move {
            js.get_stream_no_info(name)
                .await
                .map_err(|e| nats_error("get stream", e))
        }
    }

    /// The server's information on the stream named `stream`.
    fn stream_info(&self, stream: &str) -> Result<stream::Info> {
        let js = self.js().clone();
        let stream = stream.to_owned();
        self.block_on(async move {
            let mut stream = js
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
        let js = self.js().clone();
        self.block_on(async move {
            let names: Vec<String> = js
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

    /// [`NatsClient::publish_to`] as a task for the connection's runtime.
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

    /// A publish waiting for its PubAck, as a task for the connection's
    /// runtime (it holds the JetStream context, not this client): the offset and
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
        let timeout = self.inner.timeout;
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
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
        let stream = self.stream_of(topic);
        self.block_on(async move {
            let stream = stream.await?;
            match stream.get_raw_message(offset + 1).await {
                Ok(m) => stored_record(Some(&m.headers), &m.payload, m.sequence, millis(&m.time)).map(Some),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(nats_error("get message", e)),
            }
        })?
    }

    /// Deletes the stream named `stream`; `Ok(false)` if there was none.
    pub(crate) fn delete_stream(&self, stream: &str) -> Result<bool> {
        let (js, stream) = (self.js().clone(), stream.to_owned());
        self.block_on(async move {
            match js.delete_stream(stream).await {
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
        let (js, consumer, stream) = (self.js().clone(), consumer.to_owned(), stream_name(topic));
        self.block_on(async move {
            let deleted = js.delete_consumer_from_stream(consumer, stream).await;
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
        let handle = self.stream_of(topic);
        self.block_on(async move {
            let handle = handle.await?;
            handle.purge().await.map_err(|e| nats_error("purge stream", e))
        })??;
        Ok(StreamState::from(&self.stream_info(&stream_name(topic))?.state))
    }

    /// The state of `consumer` on the stream of `topic`.
    pub fn consumer_state(&self, topic: &str, consumer: &str) -> Result<ConsumerState> {
        let (stream, consumer) = (self.stream_of(topic), consumer.to_owned());
        self.block_on(async move {
            let stream = stream.await?;
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
