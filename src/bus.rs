//! [`Bus`]: a directory of named topics plus the internal state of their
//! subscriptions and consumer groups.
//!
//! Layout: `<dir>/.lock`, `<dir>/topics/<topic>/` (one [`Log`] each) and
//! `<dir>/state/{subscriptions,groups}/<topic>/<name>/` (state logs).
//! Names are validated so that none can escape the directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::{Error, Result};
use crate::io::{LockGuard, StdStorage, Storage};
use crate::log::Log;
use crate::patterns::{
    Group, GroupOptions, Recipients, Requester, RequesterInner, Responder, Scatter, Topic, TopicOptions,
    TopicStats, Wakeups, redrive,
};

/// Longest topic, group or subscription name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Options for [`Bus::open`].
#[derive(Clone, Debug)]
pub struct BusOptions {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) topic_defaults: TopicOptions,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            storage: Arc::new(StdStorage),
            topic_defaults: TopicOptions::default(),
        }
    }
}

impl BusOptions {
    /// Options for topics opened with [`Bus::topic`].
    pub fn topic_defaults(mut self, options: TopicOptions) -> Self {
        self.topic_defaults = options;
        self
    }

    /// Uses another storage backend (tests use [`crate::io::SimStorage`]).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }
}

/// A directory of topics. Cheap to clone; `Send + Sync`. When the last
/// clone is dropped the bus closes (as with [`Bus::close`]); topics, groups
/// and other handles taken from it then fail with [`Error::Closed`].
#[derive(Clone, Debug)]
pub struct Bus {
    handle: Arc<BusHandle>,
}

/// The user-facing owner: internal references hold [`BusInner`] directly,
/// so they never keep the bus open, and dropping the last `Bus` closes it.
#[derive(Debug)]
struct BusHandle {
    inner: Arc<BusInner>,
}

impl Drop for BusHandle {
    fn drop(&mut self) {
        // Best effort, like `Log`: what cannot be closed cleanly is
        // recovered at the next open.
        let _ = self.inner.close();
    }
}

#[derive(Debug)]
pub(crate) struct BusInner {
    dir: PathBuf,
    options: BusOptions,
    topics: Mutex<HashMap<String, Topic>>,
    /// Open requesters by name, closed with the bus.
    requesters: Mutex<HashMap<String, Weak<RequesterInner>>>,
    lock: Mutex<Option<LockGuard>>,
    wakeups: Wakeups,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks a topic, group or subscription name: non-empty, at most
/// [`MAX_NAME_BYTES`], no path separators, NUL or control characters, not
/// starting with `.` and no `..`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("is longer than 200 bytes")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.starts_with('.') || name.contains("..") {
        Some("starts with '.' or contains '..'")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::InvalidArgument(format!("{kind} name {name:?} {problem}"))),
        None => Ok(()),
    }
}

impl Bus {
    /// Opens (creating if needed) the bus in `dir`. Fails with
    /// [`Error::Locked`] if another handle owns it.
    pub fn open(dir: impl AsRef<Path>, options: BusOptions) -> Result<Bus> {
        let dir = dir.as_ref().to_path_buf();
        let storage = options.storage.clone();
        storage.create_dir_all(&dir.join("topics"))?;
        storage.create_dir_all(&dir.join("state"))?;
        let guard = storage
            .lock(&dir.join(".lock"))?
            .ok_or_else(|| Error::Locked(dir.clone()))?;
        let inner = BusInner {
            dir,
            options,
            topics: Mutex::new(HashMap::new()),
            requesters: Mutex::new(HashMap::new()),
            lock: Mutex::new(Some(guard)),
            wakeups: Wakeups::default(),
        };
        Ok(Bus {
            handle: Arc::new(BusHandle {
                inner: Arc::new(inner),
            }),
        })
    }

    fn inner(&self) -> &Arc<BusInner> {
        &self.handle.inner
    }

    /// The topic `name`, created on first use with the bus's default options.
    pub fn topic(&self, name: &str) -> Result<Topic> {
        self.inner().topic(name)
    }

    /// The topic `name`, created on first use with `options`. Options apply
    /// when the topic is first opened by this bus.
    pub fn topic_with(&self, name: &str, options: TopicOptions) -> Result<Topic> {
        self.inner().topic_with(name, options)
    }

    /// A work queue: the consumer group `name` on the topic `name`, with
    /// default [`GroupOptions`].
    pub fn queue(&self, name: &str) -> Result<Group> {
        self.topic(name)?.group(name, GroupOptions::default())
    }

    /// A requester named `name`, with its inbox topic `<name>.inbox`. Every
    /// handle on one name shares one requester (and one correlation index).
    pub fn requester(&self, name: &str) -> Result<Requester> {
        Requester::open(self.inner().clone(), name)
    }

    /// A responder serving `service`: the consumer group `service` on the
    /// topic `service`, with default [`GroupOptions`].
    pub fn responder(&self, service: &str) -> Result<Responder> {
        self.responder_with(service, GroupOptions::default())
    }

    /// A responder serving `service` with the given group options.
    pub fn responder_with(&self, service: &str, options: GroupOptions) -> Result<Responder> {
        Responder::open(self.inner().clone(), service, service, options)
    }

    /// Sends `record` to every recipient through `requester` (see
    /// [`Requester::scatter`]).
    pub fn scatter(
        &self,
        requester: &Requester,
        recipients: Recipients,
        record: &crate::Record<'_>,
    ) -> Result<Scatter> {
        requester.scatter(recipients, record)
    }

    /// Moves records from a dead-letter topic back to their source topics
    /// with fresh attempt counts and an incremented `logbus-redrive-count`
    /// header. Only records for which `filter` returns true move; the others
    /// stay. Returns how many moved.
    pub fn redrive(
        &self,
        dlq_topic: &str,
        filter: impl FnMut(&crate::StoredRecord) -> bool,
    ) -> Result<usize> {
        let dlq = self.topic(dlq_topic)?;
        redrive(self.inner(), &dlq, filter)
    }

    /// Stats of every topic opened through this bus.
    pub fn stats(&self) -> Result<Vec<TopicStats>> {
        let topics: Vec<Topic> = lock(&self.inner().topics).values().cloned().collect();
        let mut stats = topics.iter().map(Topic::stats).collect::<Result<Vec<_>>>()?;
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(stats)
    }

    /// Names of the topics stored in the bus directory.
    pub fn topic_names(&self) -> Result<Vec<String>> {
        let inner = self.inner();
        let mut names: Vec<String> = inner
            .storage()
            .list(&inner.dir.join("topics"))?
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Closes every topic and consumer state and releases the directory
    /// lock. Later calls on any handle from this bus fail with
    /// [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        self.inner().close()
    }
}

impl BusInner {
    pub(crate) fn topic(self: &Arc<Self>, name: &str) -> Result<Topic> {
        self.topic_with(name, self.options.topic_defaults.clone())
    }

    pub(crate) fn topic_with(self: &Arc<Self>, name: &str, options: TopicOptions) -> Result<Topic> {
        validate_name("topic", name)?;
        self.check_open()?;
        let mut topics = lock(&self.topics);
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        let topic = Topic::open(self.clone(), name, options)?;
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    fn close(&self) -> Result<()> {
        // Requesters first: marking an index clean syncs its inbox topic.
        let requesters: Vec<Arc<RequesterInner>> = lock(&self.requesters)
            .drain()
            .filter_map(|(_, r)| r.upgrade())
            .collect();
        let mut result = Ok(());
        for requester in requesters {
            result = result.and(requester.close());
        }
        let topics: Vec<Topic> = lock(&self.topics).drain().map(|(_, t)| t).collect();
        for topic in topics {
            result = result.and(topic.close());
        }
        lock(&self.lock).take();
        result
    }

    fn check_open(&self) -> Result<()> {
        match lock(&self.lock).is_some() {
            true => Ok(()),
            false => Err(Error::Closed),
        }
    }

    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.options.storage
    }

    pub(crate) fn requesters(&self) -> &Mutex<HashMap<String, Weak<RequesterInner>>> {
        &self.requesters
    }

    pub(crate) fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    pub(crate) fn topic_dir(&self, topic: &str) -> PathBuf {
        self.dir.join("topics").join(topic)
    }

    /// Directory holding the state logs of `kind` ("subscriptions" or
    /// "groups") for `topic`.
    pub(crate) fn state_dir(&self, kind: &str, topic: &str) -> PathBuf {
        self.dir.join("state").join(kind).join(topic)
    }

    pub(crate) fn open_log(&self, dir: &Path, options: crate::LogOptions) -> Result<Log> {
        Log::open(dir, options.storage(self.options.storage.clone()))
    }
}
