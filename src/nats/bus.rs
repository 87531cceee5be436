//! The NATS bus (the `Nats` variant of [`crate::Bus`]): one connection to
//! a server or cluster, the topics opened through it, and whether this
//! process closed it.
//!
//! As on the embedded bus, every handle taken from the bus (topics, and
//! through them subscriptions, groups and requesters) keeps it open: the
//! bus closes when the last [`crate::Bus`] and the last handle are dropped,
//! or earlier through [`crate::Bus::close`]. After a close every operation
//! fails with [`Error::Closed`]; a private runtime lives until the last
//! handle is dropped. A bus on the caller's runtime fails every operation
//! with [`Error::Closed`] once that runtime shut down (`client.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::client::NatsClient;
use super::client::StreamSpec;
use super::failures::{FailureStore, failure_stream_name};
use super::names::{check_length, consumer_name, reply_subject, stream_name};
use super::options::NatsOptions;
use super::requester::NatsRequester;
use super::topic::NatsTopic;
use crate::backend::{BoxFuture, BusBackend, ReplySink, TopicBackend};
use crate::error::{Error, Result};
use crate::patterns::{CorrelationId, TopicOptions, TopicStats, inbox_topic};
use crate::patterns::{
    deleted_with, derived, needed_dead_letter_topic, validate_requester_name, validate_topic_name,
};
use crate::record::Record;
use crate::state::ConsumerId;

/// A connection to NATS JetStream used as a bus. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct NatsBus {
    open: Arc<OpenBus>,
}

/// Keeps the bus open: held by every [`NatsBus`] and every topic handle
/// handed out; the bus's own table of topics never holds one (it would keep
/// the bus open forever). Closes the bus when the last one is dropped.
#[derive(Debug)]
pub(crate) struct OpenBus {
    shared: Arc<NatsShared>,
}

impl Drop for OpenBus {
    fn drop(&mut self) {
        // Best effort: a connection that cannot be drained is cut when the
        // runtime stops.
        let _ = self.shared.close();
    }
}

/// What the bus's topics and subscriptions share.
#[derive(Debug)]
pub(crate) struct NatsShared {
    pub(crate) client: NatsClient,
    options: NatsOptions,
    /// The bus's own table: these handles do not keep it open.
    topics: Mutex<HashMap<String, NatsTopic>>,
    closed: AtomicBool,
    /// Upgraded for each topic handed out.
    open: Weak<OpenBus>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl NatsShared {
    /// [`Error::Closed`] once this process closed the bus.
    pub(crate) fn check_open(&self) -> Result<()> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(Error::Closed),
            false => Ok(()),
        }
    }

    pub(crate) fn topic(self: &Arc<Self>, name: &str) -> Result<NatsTopic> {
        self.topic_with(name, self.options.topic_defaults.clone())
    }

    /// The topic's stream is created with `options` if it does not exist;
    /// an existing stream keeps its configuration.
    pub(crate) fn topic_with(self: &Arc<Self>, name: &str, options: TopicOptions) -> Result<NatsTopic> {
        validate_topic_name(name)?;
        // The longest server name a topic gets: its groups' failure stream;
        // its dead-letter topic's must fit too.
        check_length("topic", name, &failure_stream_name(name))?;
        if let Some(dlq) = needed_dead_letter_topic(name) {
            let check = check_length("dead-letter topic", &dlq, &failure_stream_name(&dlq));
            derived("topic", name, check)?;
        }
        self.check_open()?;
        let open = self.open.upgrade().ok_or(Error::Closed)?;
        let mut topics = lock(&self.topics);
        if let Some(topic) = topics.get(name) {
            return Ok(topic.keeping_open(open));
        }
        let spec = self.options.stream_spec(&options);
        let topic = NatsTopic::open(self.clone(), name, &spec, options)?;
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic.keeping_open(open))
    }

    /// Deletes the durable consumer of `consumer` on the stream of `topic`
    /// (and a group's stored failures), unless it is open in this process.
    fn delete_consumer(&self, topic: &str, consumer: &ConsumerId) -> Result<bool> {
        self.check_open()?;
        let open = lock(&self.topics).get(topic).cloned();
        if let Some(open) = &open {
            open.shared().check_not_open(consumer)?;
        }
        let deleted = self.client.delete_consumer(topic, &consumer_name(consumer))?;
        if let ConsumerId::Group(group) = consumer {
            let failures = FailureStore::new(self.client.js().clone(), topic, group, &StreamSpec::default());
            self.client.block_on(failures.forget_group())??;
        }
        Ok(deleted)
    }

    /// Deletes the streams of `name` and of its dead-letter topic, with
    /// their consumers and their groups' failure streams, unless a handle
    /// of this process holds one of the topics.
    fn delete_topic(&self, name: &str) -> Result<bool> {
        self.check_open()?;
        let mut topics = lock(&self.topics);
        let deleted = deleted_with(name);
        for topic in &deleted {
            if let Some(open) = topics.get(topic).filter(|t| t.in_use()) {
                let path = format!("nats:{}", stream_name(open.name()));
                return Err(Error::Locked(path.into()));
            }
        }
        let mut existed = false;
        for topic in &deleted {
            topics.remove(topic);
            self.client.delete_stream(&failure_stream_name(topic))?;
            existed = self.client.delete_stream(&stream_name(topic))?;
        }
        Ok(existed)
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The topics hold this shared state: forgetting them breaks the cycle.
        lock(&self.topics).clear();
        self.client.close()
    }
}

/// A reply goes to the subject of its id in the inbox's stream, which must
/// exist (its requester created it): otherwise this is
/// [`Error::Unavailable`] and the request stays unanswered.
impl ReplySink for NatsShared {
    fn publish_reply(&self, inbox: &str, id: CorrelationId, reply: &Record<'_>) -> Result<u64> {
        self.check_open()?;
        Ok(self.client.publish_to(reply_subject(inbox, id), reply, None)?.0)
    }

    fn publish_reply_async<'a>(
        &'a self,
        inbox: &'a str,
        id: CorrelationId,
        reply: &'a Record<'a>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            self.check_open()?;
            let publish = self
                .client
                .publish_to_task(reply_subject(inbox, id), reply, None)?;
            Ok(self.client.run(publish).await??.0)
        })
    }
}

impl NatsBus {
    pub(crate) fn connect(urls: &str, options: NatsOptions) -> Result<NatsBus> {
        let client = NatsClient::connect_on(urls, options.timeout, &options.runtime)?;
        let open = Arc::new_cyclic(|open| OpenBus {
            shared: Arc::new(NatsShared {
                client,
                options,
                topics: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                open: open.clone(),
            }),
        });
        Ok(NatsBus { open })
    }

    fn shared(&self) -> &Arc<NatsShared> {
        &self.open.shared
    }
}

impl BusBackend for NatsBus {
    type Topic = NatsTopic;
    type Requester = NatsRequester;

    fn topic(&self, name: &str) -> Result<NatsTopic> {
        self.shared().topic(name)
    }

    fn topic_with(&self, name: &str, options: TopicOptions) -> Result<NatsTopic> {
        self.shared().topic_with(name, options)
    }

    /// Its inbox topic's stream is created if needed. Handles on one name
    /// share nothing but the stream (there is no local index to share).
    fn requester(&self, name: &str) -> Result<NatsRequester> {
        validate_requester_name(name)?;
        Ok(NatsRequester::new(self.topic(&inbox_topic(name))?))
    }

    /// Every logbus stream on the server; a topic not open in this process
    /// is looked up for the occasion, not opened (its stream keeps its
    /// configuration either way).
    fn stats(&self) -> Result<Vec<TopicStats>> {
        let shared = self.shared();
        let open: HashMap<String, NatsTopic> = lock(&shared.topics).clone();
        let mut stats = Vec::new();
        for name in self.topic_names()? {
            let topic = match open.get(&name) {
                Some(topic) => topic.clone(),
                None => {
                    let defaults = shared.options.topic_defaults.clone();
                    let spec = shared.options.stream_spec(&defaults);
                    NatsTopic::open(shared.clone(), &name, &spec, defaults)?
                }
            };
            stats.push(topic.stats()?);
        }
        Ok(stats)
    }

    fn topic_names(&self) -> Result<Vec<String>> {
        self.shared().check_open()?;
        self.shared().client.topic_names()
    }

    fn delete_consumer(&self, topic: &str, consumer: &ConsumerId) -> Result<bool> {
        self.shared().delete_consumer(topic, consumer)
    }

    fn delete_topic(&self, name: &str) -> Result<bool> {
        self.shared().delete_topic(name)
    }

    fn close(&self) -> Result<()> {
        self.shared().close()
    }
}
