//! [`NatsOptions`]: how [`crate::Bus::connect_nats`] connects, on which
//! tokio runtime the connection runs, and how the streams of new topics
//! are configured.

use std::time::Duration;

use super::client::StreamSpec;
use crate::patterns::TopicOptions;

/// Where the server keeps a topic's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsStorage {
    /// In the server's file store (synced to disk on the server's timer:
    /// see "Durability modes" in [`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md)).
    #[default]
    File,
    /// In the server's memory: lost when the server (or, with replicas,
    /// every replica) stops.
    Memory,
}

/// Options for [`crate::Bus::connect_nats`]. Builder-style; every option
/// has a default.
///
/// # The runtime
///
/// The connection (async-nats's connection task, and every request logbus
/// makes) runs on a tokio runtime:
/// - by default, when `connect_nats` is called inside a **multi-thread**
///   tokio runtime (`#[tokio::main]`, a task, `spawn_blocking`), on that
///   runtime: logbus starts no thread or runtime of its own;
/// - otherwise (a plain thread, a current-thread runtime, another
///   executor), on a private runtime with one worker thread
///   (`logbus-nats`), shut down when the bus and its last handle are
///   dropped;
/// - [`NatsOptions::runtime`] names the runtime (a multi-thread one),
///   [`NatsOptions::private_runtime`] forces the private one.
///
/// Either way every call works from any thread and executor: the async
/// calls await a task of the connection's runtime, and the blocking calls
/// wait for it (on a worker thread of a multi-thread runtime through
/// `tokio::task::block_in_place`, so the worker's other tasks move on).
/// A connection on the caller's runtime lives as long as that runtime:
/// once it shut down, every call on the bus or a handle from it fails with
/// [`crate::Error::Closed`] (connect again on a running one).
///
/// ```no_run
/// use std::time::Duration;
/// use logbus::{Bus, NatsOptions, NatsStorage, TopicOptions};
/// # fn main() -> logbus::Result<()> {
/// let options = NatsOptions::default()
///     .replicas(3) // each topic a stream with three replicas
///     .storage(NatsStorage::File)
///     .timeout(Duration::from_secs(10))
///     .topic_defaults(TopicOptions::default().max_age(Duration::from_secs(24 * 3600)));
/// let bus = Bus::connect_nats("nats://127.0.0.1:4222", options)?;
/// # drop(bus);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub(crate) replicas: usize,
    pub(crate) storage: NatsStorage,
    pub(crate) timeout: Duration,
    pub(crate) topic_defaults: TopicOptions,
    pub(crate) runtime: RuntimeChoice,
}

/// Which runtime the connection runs on (see [`NatsOptions`]).
#[derive(Debug, Clone, Default)]
pub(crate) enum RuntimeChoice {
    /// The caller's if it is a multi-thread runtime, else a private one.
    #[default]
    Auto,
    /// A private runtime.
    Private,
    /// This runtime (checked at connect: multi-thread only).
    Handle(tokio::runtime::Handle),
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            replicas: 1,
            storage: NatsStorage::File,
            timeout: Duration::from_secs(5),
            topic_defaults: TopicOptions::default(),
            runtime: RuntimeChoice::Auto,
        }
    }
}

impl NatsOptions {
    /// Copies of each new topic's stream in a cluster (1 on a single
    /// server; 3 survives the loss of any one node).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Where new topics' streams keep their records.
    pub fn storage(mut self, storage: NatsStorage) -> Self {
        self.storage = storage;
        self
    }

    /// How long to wait for the connection and for each answer of the
    /// server (stream and consumer requests, publish acknowledgements).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Options for topics opened with [`crate::Bus::topic`].
    pub fn topic_defaults(mut self, options: TopicOptions) -> Self {
        self.topic_defaults = options;
        self
    }

    /// Runs the connection on the multi-thread tokio runtime of `handle`
    /// (for instance `tokio::runtime::Handle::current()` captured earlier,
    /// to connect from a thread outside it). The bus is usable while that
    /// runtime runs; after it shut down every call fails with
    /// [`crate::Error::Closed`]. A current-thread runtime is refused by
    /// [`crate::Bus::connect_nats`] with [`crate::Error::InvalidArgument`]:
    /// a blocking call on its thread would wait for tasks that only that
    /// thread runs. Replaces an earlier [`NatsOptions::private_runtime`].
    ///
    /// ```no_run
    /// use logbus::{Bus, NatsOptions};
    /// # fn main() -> logbus::Result<()> {
    /// let runtime = tokio::runtime::Runtime::new()?;
    /// let options = NatsOptions::default().runtime(runtime.handle().clone());
    /// let bus = Bus::connect_nats("nats://127.0.0.1:4222", options)?;
    /// # drop(bus);
    /// # Ok(()) }
    /// ```
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = RuntimeChoice::Handle(handle);
        self
    }

    /// `true`: runs the connection on a private runtime (one worker thread
    /// named `logbus-nats`) even inside a multi-thread tokio runtime, so
    /// that the bus outlives the caller's runtime. `false` (the default):
    /// the caller's multi-thread runtime if there is one (see
    /// [`NatsOptions`]). Replaces an earlier [`NatsOptions::runtime`].
    pub fn private_runtime(mut self, private: bool) -> Self {
        self.runtime = match private {
            true => RuntimeChoice::Private,
            false => RuntimeChoice::Auto,
        };
        self
    }

    /// The stream a new topic opened with `options` gets.
    pub(crate) fn stream_spec(&self, options: &TopicOptions) -> StreamSpec {
        StreamSpec {
            replicas: self.replicas,
            memory: self.storage == NatsStorage::Memory,
            ..StreamSpec::from_topic_options(options)
        }
    }
}
