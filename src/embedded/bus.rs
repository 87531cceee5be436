//! The embedded bus (the `Log` variant of [`crate::Bus`]): a directory of
//! named topics plus the internal state of their subscriptions and
//! consumer groups.
//!
//! The directory's layout (topic logs, state logs, the lock) is
//! [`BusLayout`]'s: the bus asks it for what it opens and never joins a
//! path itself. Names are validated so that none can escape the directory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::backend::{BoxFuture, BusBackend, ReplySink, TopicBackend};
use crate::clock::Clock;
use crate::embedded::{LogRequester, LogTopic, RequesterInner, Wakeups, record_age};
use crate::error::{Error, Result};
use crate::inspect::{consumers_in, open_topic_read_only};
use crate::io::{LockGuard, StdStorage, Storage};
use crate::log::SyncStats;
use crate::patterns::{ConsumerStats, CorrelationId, TopicOptions, TopicStats};
use crate::patterns::{deleted_with, requester_of_inbox, validate_topic_name};
use crate::state::RecoveryMode;
use crate::state::{BusLayout, ConsumerId};

/// Options for [`crate::Bus::open`].
#[derive(Clone, Debug)]
pub struct BusOptions {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) topic_defaults: TopicOptions,
    pub(crate) recovery: RecoveryMode,
    pub(crate) clock: Clock,
    pub(crate) exclusive: bool,
    /// Where to serve or join the bus, whatever the storage (tests).
    #[cfg(all(feature = "processes", feature = "test-util"))]
    socket: Option<std::path::PathBuf>,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            storage: Arc::new(StdStorage),
            topic_defaults: TopicOptions::default(),
            recovery: RecoveryMode::default(),
            clock: Clock::Real,
            exclusive: false,
            #[cfg(all(feature = "processes", feature = "test-util"))]
            socket: None,
        }
    }
}

impl BusOptions {
    /// Options for topics opened with [`crate::Bus::topic`].
    pub fn topic_defaults(mut self, options: TopicOptions) -> Self {
        self.topic_defaults = options;
        self
    }

    /// What opening a consumer whose state log is damaged does (default
    /// [`RecoveryMode::AbsoluteConsistency`]: fail with the corruption).
    pub fn recovery(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        self
    }

    /// Keeps the bus directory to this handle (default false): no other
    /// process joins it, and opening it while another handle owns it fails
    /// with [`crate::Error::Locked`]. Without it (feature `processes`),
    /// the owner serves the directory to every process that opens it.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Serves the bus at `socket` when this handle owns it, and joins it
    /// there otherwise, whatever the storage (feature `test-util`): for
    /// tests of several processes on a simulated storage, whose handles
    /// share one `SimStorage` in one process.
    #[cfg(all(feature = "processes", feature = "test-util"))]
    pub fn socket(mut self, socket: impl Into<std::path::PathBuf>) -> Self {
        self.socket = Some(socket.into());
        self
    }

    /// Where the bus in `dir` is served to other processes: the socket in
    /// the directory, `None` on a storage other than the host's files
    /// (then every handle but the owner gets `Error::Locked`).
    #[cfg(feature = "processes")]
    pub(crate) fn socket_path(&self, dir: &Path) -> Option<std::path::PathBuf> {
        #[cfg(feature = "test-util")]
        if let Some(socket) = &self.socket {
            return Some(socket.clone());
        }
        BusLayout::new(self.storage.clone(), dir).socket_path()
    }

    /// Uses another storage backend (default: the real file system; tests
    /// use `storage::SimStorage`, feature `test-util`).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Runs the bus on a simulated clock (feature `test-util`; default:
    /// the real clock): record timestamps, leases, nack delays, backoff,
    /// receive timeouts and stats ages read it, and a receive that would
    /// wait moves it forward instead. See [`crate::clock::SimClock`].
    #[cfg(feature = "test-util")]
    pub fn clock(mut self, clock: crate::clock::SimClock) -> Self {
        self.clock = Clock::Sim(clock);
        self
    }
}

/// A bus directory, open and locked by this process. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct LogBus {
    open: Arc<OpenBus>,
}

/// Keeps the bus open: held by every [`LogBus`] and by every handle taken
/// from it (topics, and through them subscriptions, groups, deliveries and
/// requesters), so the bus closes when the last of them is dropped, or
/// earlier through [`LogBus::close`]. The bus's own tables never hold one
/// (they would keep the bus open forever): they reference [`BusInner`].
#[derive(Debug)]
pub(crate) struct OpenBus {
    inner: Arc<BusInner>,
}

impl Drop for OpenBus {
    fn drop(&mut self) {
        // Best effort, like `Log`: what cannot be closed cleanly is
        // recovered at the next open.
        let _ = self.inner.close();
    }
}

#[derive(Debug)]
pub(crate) struct BusInner {
    layout: BusLayout,
    options: BusOptions,
    /// The bus's own table: these handles do not keep it open.
    topics: Mutex<HashMap<String, LogTopic>>,
    /// Open requesters by name, closed with the bus.
    requesters: Mutex<HashMap<String, Weak<RequesterInner>>>,
    lock: Mutex<Option<LockGuard>>,
    wakeups: Wakeups,
    /// Upgraded for each handle handed out; gone once the last handle is.
    open: Weak<OpenBus>,
    /// Run first when the bus closes (the owner's server stops there).
    on_close: Mutex<Vec<CloseHook>>,
}

/// Something to do when the bus closes, before its lock is released.
pub(crate) struct CloseHook(Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for CloseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CloseHook")
    }
}

#[cfg(feature = "processes")]
/// A [`LogBus`] that does not keep the bus open.
#[derive(Clone, Debug)]
pub(crate) struct WeakLogBus(Weak<OpenBus>);

#[cfg(feature = "processes")]
impl WeakLogBus {
    /// The bus, unless it closed.
    pub(crate) fn upgrade(&self) -> Option<LogBus> {
        let open = self.0.upgrade()?;
        open.inner.check_open().ok()?;
        Some(LogBus { open })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogBus {
    pub(crate) fn open(dir: &Path, options: BusOptions) -> Result<LogBus> {
        let layout = BusLayout::new(options.storage.clone(), dir);
        layout.create()?;
        let guard = layout.lock()?;
        layout.remove_deleted()?;
        let open = Arc::new_cyclic(|open| OpenBus {
            inner: Arc::new(BusInner {
                layout,
                options,
                topics: Mutex::new(HashMap::new()),
                requesters: Mutex::new(HashMap::new()),
                lock: Mutex::new(Some(guard)),
                wakeups: Wakeups::default(),
                open: open.clone(),
                on_close: Mutex::new(Vec::new()),
            }),
        });
        Ok(LogBus { open })
    }

    fn inner(&self) -> &Arc<BusInner> {
        &self.open.inner
    }

    #[cfg(feature = "processes")]
    /// This bus without keeping it open.
    pub(crate) fn downgrade(&self) -> WeakLogBus {
        WeakLogBus(Arc::downgrade(&self.open))
    }

    #[cfg(feature = "processes")]
    /// Runs `hook` when the bus closes, before its lock is released.
    pub(crate) fn on_close(&self, hook: Box<dyn FnOnce() + Send>) {
        lock(&self.inner().on_close).push(CloseHook(hook));
    }
}

impl BusBackend for LogBus {
    type Topic = LogTopic;
    type Requester = LogRequester;

    fn topic(&self, name: &str) -> Result<LogTopic> {
        self.inner().topic(name)
    }

    fn topic_with(&self, name: &str, options: TopicOptions) -> Result<LogTopic> {
        self.inner().topic_with(name, options)
    }

    fn requester(&self, name: &str) -> Result<LogRequester> {
        LogRequester::open(self.inner().clone(), name)
    }

    /// Every stored topic: those open in this process with live counters,
    /// the others read from their files without opening them (so their
    /// options, and their retention, stay the application's to choose).
    fn stats(&self) -> Result<Vec<TopicStats>> {
        self.inner().check_open()?;
        let names = self.topic_names()?;
        names.iter().map(|name| self.inner().topic_stats(name)).collect()
    }

    /// The bus directory's topics: its stored topics with valid topic
    /// names, sorted.
    fn topic_names(&self) -> Result<Vec<String>> {
        let mut names = self.inner().layout.topics()?;
        names.retain(|name| validate_topic_name(name).is_ok());
        Ok(names)
    }

    fn delete_consumer(&self, topic: &str, consumer: &ConsumerId) -> Result<bool> {
        self.inner().delete_consumer(topic, consumer)
    }

    fn delete_topic(&self, name: &str) -> Result<bool> {
        self.inner().delete_topic(name)
    }

    fn close(&self) -> Result<()> {
        self.inner().close()
    }
}

/// Where the embedded bus's responders store replies: appended to the
/// requester's inbox topic, opened on first use.
#[derive(Debug)]
pub(crate) struct LogReplies {
    bus: Arc<BusInner>,
}

impl LogReplies {
    pub(crate) fn new(bus: Arc<BusInner>) -> Self {
        LogReplies { bus }
    }
}

impl ReplySink for LogReplies {
    fn publish_reply(&self, inbox: &str, _id: CorrelationId, reply: &crate::Record<'_>) -> Result<u64> {
        self.bus.topic(inbox)?.publish(reply)
    }

    fn publish_reply_async<'a>(
        &'a self,
        inbox: &'a str,
        _id: CorrelationId,
        reply: &'a crate::Record<'a>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.bus.topic(inbox)?.publish_async(reply).await })
    }
}

impl BusInner {
    pub(crate) fn topic(self: &Arc<Self>, name: &str) -> Result<LogTopic> {
        self.topic_with(name, self.options.topic_defaults.clone())
    }

    pub(crate) fn topic_with(self: &Arc<Self>, name: &str, options: TopicOptions) -> Result<LogTopic> {
        self.check_open()?;
        let open = self.open.upgrade().ok_or(Error::Closed)?;
        let mut topics = lock(&self.topics);
        // An open topic's name was checked when it opened (every reply
        // looks its inbox up here).
        if let Some(topic) = topics.get(name) {
            return Ok(topic.keeping_open(open));
        }
        validate_topic_name(name)?;
        let topic = LogTopic::open(self.clone(), name, options)?;
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic.keeping_open(open))
    }

    /// Deletes the stored state of `consumer` of `topic`, through the topic
    /// if it is open (which then stops counting it for retention).
    pub(crate) fn delete_consumer(&self, topic: &str, consumer: &ConsumerId) -> Result<bool> {
        self.check_open()?;
        // Held while the topic is not open, so that it does not open
        // meanwhile; released before deleting through an open topic (which
        // takes its groups' lock, held by a group opening its dead-letter
        // topic through this table).
        let topics = lock(&self.topics);
        match topics.get(topic).cloned() {
            Some(open) => {
                drop(topics);
                open.delete_consumer(consumer)
            }
            None => self.layout.delete_consumer(topic, consumer, || ()),
        }
    }

    /// Deletes `topic`, its dead-letter topic and every consumer's state
    /// (and, for a requester's inbox, its correlation index), in the
    /// order of [`deleted_with`]. [`Error::Locked`] while one of them is
    /// open through a handle.
    pub(crate) fn delete_topic(&self, name: &str) -> Result<bool> {
        self.check_open()?;
        let mut topics = lock(&self.topics);
        let deleted = deleted_with(name);
        for topic in &deleted {
            if topics.get(topic).is_some_and(LogTopic::in_use) {
                return Err(Error::Locked(self.layout.topic_dir(topic)));
            }
        }
        let mut existed = false;
        for topic in &deleted {
            if let Some(open) = topics.remove(topic) {
                open.close()?;
            }
            existed = self.layout.delete_topic(topic)?;
            if let Some(requester) = requester_of_inbox(topic) {
                self.layout.delete_correlation_index(requester)?;
            }
        }
        Ok(existed)
    }

    fn close(&self) -> Result<()> {
        let hooks = std::mem::take(&mut *lock(&self.on_close));
        hooks.into_iter().for_each(|hook| (hook.0)());
        // Requesters first: marking an index clean syncs its inbox topic.
        let requesters: Vec<Arc<RequesterInner>> = lock(&self.requesters)
            .drain()
            .filter_map(|(_, r)| r.upgrade())
            .collect();
        let mut result = Ok(());
        for requester in requesters {
            result = result.and(requester.close());
        }
        let topics: Vec<LogTopic> = lock(&self.topics).drain().map(|(_, t)| t).collect();
        for topic in topics {
            result = result.and(topic.close());
        }
        lock(&self.lock).take();
        result
    }

    /// Stats of the stored topic `name`: live if it is open, otherwise read
    /// through an overlay (nothing is written). Holds the table of open
    /// topics while reading, so the topic cannot open meanwhile; a live
    /// topic's stats are taken after releasing it (they take group locks,
    /// which a group holds while opening its dead-letter topic).
    fn topic_stats(&self, name: &str) -> Result<TopicStats> {
        let topics = lock(&self.topics);
        if let Some(topic) = topics.get(name).cloned() {
            drop(topics);
            return topic.stats();
        }
        let log = open_topic_read_only(&self.layout, name)?;
        let stored = consumers_in(&self.layout, name)?;
        drop(topics);
        let end_offset = log.end_offset();
        let subscriptions = stored
            .subscriptions
            .into_iter()
            .map(|s| (ConsumerId::Subscription(s.name), s.committed));
        let groups = stored
            .groups
            .into_iter()
            .map(|g| (ConsumerId::Group(g.name), g.summary.low_watermark));
        let now_ms = self.clock().now_ms();
        let mut consumers = Vec::new();
        for (id, committed) in subscriptions.chain(groups) {
            consumers.push(ConsumerStats {
                oldest_unconsumed_age: record_age(&log, committed, now_ms)?,
                ..ConsumerStats::at(id, committed, end_offset)
            });
        }
        consumers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(TopicStats {
            name: name.to_owned(),
            start_offset: log.start_offset(),
            end_offset,
            bytes: log.bytes(),
            sync: SyncStats::default(),
            consumers,
        })
    }

    fn check_open(&self) -> Result<()> {
        match lock(&self.lock).is_some() {
            true => Ok(()),
            false => Err(Error::Closed),
        }
    }

    pub(crate) fn layout(&self) -> &BusLayout {
        &self.layout
    }

    pub(crate) fn recovery_mode(&self) -> RecoveryMode {
        self.options.recovery
    }

    pub(crate) fn requesters(&self) -> &Mutex<HashMap<String, Weak<RequesterInner>>> {
        &self.requesters
    }

    /// The clock every topic of the bus reads.
    pub(crate) fn clock(&self) -> &Clock {
        &self.options.clock
    }

    pub(crate) fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }
}
