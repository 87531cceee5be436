//! [`NatsOptions`]: how [`crate::Bus::connect_nats`] connects and how the
//! streams of new topics are configured.

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
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            replicas: 1,
            storage: NatsStorage::File,
            timeout: Duration::from_secs(5),
            topic_defaults: TopicOptions::default(),
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

    /// The stream a new topic opened with `options` gets.
    pub(crate) fn stream_spec(&self, options: &TopicOptions) -> StreamSpec {
        StreamSpec {
            replicas: self.replicas,
            memory: self.storage == NatsStorage::Memory,
            ..StreamSpec::from_topic_options(options)
        }
    }
}
