//! The bus directory's layout, named in one place: [`BusLayout`] is the
//! only module that names paths under a bus directory. The embedded
//! backend, the state repair and the inspector ask it to create, lock,
//! list and open what lies there, and never join a bus path themselves.
//!
//! ```text
//! <bus>/.lock                                        the owner's lock
//! <bus>/topics/<topic>/                              one log per topic
//! <bus>/state/subscriptions/<topic>/<name>/          a durable subscription's state log
//! <bus>/state/groups/<topic>/<name>/                 a consumer group's state log
//! <bus>/state/{subscriptions,groups}/<topic>/.<name>.repairing/
//!                                                    a repaired state log being built
//! <bus>/state/{subscriptions,groups}/<topic>/.<name>.damaged-<unix ms>/
//!                                                    a damaged state log moved aside
//! <bus>/state/inboxes/<requester>/correlation.cix    a requester's correlation index
//! <bus>/topics/.<topic>.deleted/, <bus>/state/{subscriptions,groups}/.<topic>.deleted/,
//! <bus>/state/{subscriptions,groups}/<topic>/.<name>.deleted/,
//! <bus>/state/inboxes/.<requester>.deleted/
//!                                                    a deleted directory (a tombstone) being removed
//! ```
//!
//! Hidden names (starting with `.`) are never topic or consumer names, so a
//! listing of topics or consumers skips them.
//!
//! Deleting is crash-safe by a tombstone: the directory is renamed to its
//! hidden sibling `.<name>.deleted` and the parent synced (from then on it
//! is deleted: nothing reads a tombstone), then the tombstone's files are
//! removed. A crash, or a failed removal, leaves the tombstone, which the
//! next open of the bus (topics, a topic's consumer directories,
//! requesters' indexes) or of the topic (its consumers) removes. A topic is
//! deleted consumers first, its own log last, so a deletion cut short
//! leaves the topic with some consumers fewer, never consumers without
//! their topic. The files inside a topic's or a state log's
//! directory (segments, indexes, checkpoint) are the log's own
//! (`src/log/`), not part of this layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::StateEvent;
use crate::io::{LockGuard, OverlayStorage, Storage, remove_tree};
use crate::log::{Durability, Log, LogOptions, is_log_file_name, lock_log_dir};
use crate::state::repair::{finish_interrupted_repairs, repair};
use crate::state::{CorrelationIndex, Damaged, StateLog, StateRepair};

const LOCK_FILE: &str = ".lock";
/// Name of the socket the lock holder serves the bus on.
#[cfg(feature = "processes")]
const SOCKET_FILE: &str = ".socket";
const TOPICS_DIR: &str = "topics";
const STATE_DIR: &str = "state";
const INBOXES_DIR: &str = "inboxes";
const CORRELATION_INDEX_FILE: &str = "correlation.cix";
/// Suffix of the hidden sibling a repaired state log is built in.
const REPAIRING_SUFFIX: &str = ".repairing";
/// Suffix of the hidden sibling a deleted directory is renamed to before
/// its files are removed (its tombstone).
const DELETED_SUFFIX: &str = ".deleted";

/// Which consumer a tracked position belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsumerId {
    /// A durable subscription, by name.
    Subscription(String),
    /// A consumer group, by name.
    Group(String),
}

impl ConsumerId {
    /// Its kind.
    pub(crate) fn kind(&self) -> ConsumerKind {
        match self {
            ConsumerId::Subscription(_) => ConsumerKind::Subscription,
            ConsumerId::Group(_) => ConsumerKind::Group,
        }
    }

    /// Its name.
    pub(crate) fn name(&self) -> &str {
        match self {
            ConsumerId::Subscription(name) | ConsumerId::Group(name) => name,
        }
    }
}

/// The kinds of consumer that keep a state log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerKind {
    /// Durable subscriptions.
    Subscription,
    /// Consumer groups.
    Group,
}

impl ConsumerKind {
    /// Every kind, subscriptions first (the order of [`ConsumerId`]).
    pub(crate) const ALL: [ConsumerKind; 2] = [ConsumerKind::Subscription, ConsumerKind::Group];

    /// The consumer of this kind named `name`.
    pub(crate) fn consumer(self, name: String) -> ConsumerId {
        match self {
            ConsumerKind::Subscription => ConsumerId::Subscription(name),
            ConsumerKind::Group => ConsumerId::Group(name),
        }
    }

    /// What a user calls it: `"subscription"` or `"group"`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ConsumerKind::Subscription => "subscription",
            ConsumerKind::Group => "group",
        }
    }

    /// Its directory under `state/`.
    fn dir_name(self) -> &'static str {
        match self {
            ConsumerKind::Subscription => "subscriptions",
            ConsumerKind::Group => "groups",
        }
    }
}

/// A bus directory and the storage it is read and written through.
#[derive(Debug)]
pub(crate) struct BusLayout {
    storage: Arc<dyn Storage>,
    root: PathBuf,
}

impl BusLayout {
    /// The bus directory `root`, through `storage`; touches nothing.
    pub(crate) fn new(storage: Arc<dyn Storage>, root: &Path) -> BusLayout {
        BusLayout {
            storage,
            root: root.to_path_buf(),
        }
    }

    /// The same bus directory read through a fresh [`OverlayStorage`], so
    /// nothing done through it reaches the files.
    pub(crate) fn read_only(&self) -> BusLayout {
        BusLayout {
            storage: Arc::new(OverlayStorage::over(self.storage.clone())),
            root: self.root.clone(),
        }
    }

    /// Creates the bus directory with its `topics/` and `state/`. Refuses
    /// a directory holding a log's own files (segments, its checkpoint):
    /// it is a [`Log`], and opening it as a bus would mix the two layouts.
    pub(crate) fn create(&self) -> Result<()> {
        self.refuse_log_directory()?;
        self.storage.create_dir_all(&self.root.join(TOPICS_DIR))?;
        self.storage.create_dir_all(&self.root.join(STATE_DIR))?;
        Ok(())
    }

    /// Removes the tombstones of topics and requesters' indexes whose
    /// deletion was cut short (see the module doc). Run by the owner when
    /// the bus opens, after taking its lock.
    pub(crate) fn remove_deleted(&self) -> Result<()> {
        let state = self.root.join(STATE_DIR);
        let kind_dirs = ConsumerKind::ALL.map(|kind| state.join(kind.dir_name()));
        for parent in kind_dirs
            .iter()
            .chain([&self.root.join(TOPICS_DIR), &state.join(INBOXES_DIR)])
        {
            self.remove_tombstones(parent)?;
        }
        Ok(())
    }

    /// Removes the tombstones of the `kind` consumers of `topic` whose
    /// deletion was cut short. Run when the topic opens.
    pub(crate) fn remove_deleted_consumers(&self, kind: ConsumerKind, topic: &str) -> Result<()> {
        self.remove_tombstones(&self.kind_dir(kind, topic))
    }

    /// Removes every tombstone in `parent` (none if it does not exist).
    /// One whose files cannot be removed is left for the next time: it is
    /// never read, so it holds nothing up.
    fn remove_tombstones(&self, parent: &Path) -> Result<()> {
        for entry in self.list_if_any(parent)? {
            let name = entry.file_name().and_then(|name| name.to_str()).unwrap_or("");
            if name.starts_with('.') && name.ends_with(DELETED_SUFFIX) {
                self.remove_tombstone(&entry);
            }
        }
        Ok(())
    }

    fn remove_tombstone(&self, tombstone: &Path) {
        if let Err(_error) = remove_tree(self.storage.as_ref(), tombstone) {
            trace_event!(warn, dir = %tombstone.display(), error = %_error, "removing a deleted directory failed; retried at the next open");
        }
    }

    /// Deletes the directory `dir` through its tombstone (see the module
    /// doc): once this returns `Ok`, the deletion is durable. A stale
    /// tombstone of the same name is removed first.
    fn delete_dir(&self, dir: &Path) -> Result<()> {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str())) else {
            return Err(Error::InvalidArgument(format!("cannot delete {}", dir.display())));
        };
        let tombstone = parent.join(format!(".{name}{DELETED_SUFFIX}"));
        if self.is_dir(&tombstone) {
            remove_tree(self.storage.as_ref(), &tombstone)?;
        }
        self.storage.rename(dir, &tombstone)?;
        self.storage.sync_dir(parent)?;
        self.remove_tombstone(&tombstone);
        Ok(())
    }

    /// Deletes the log directory `dir` if there is one, then runs
    /// `deleted` while still holding the log's lock, so nothing opens a log
    /// under the name before it ran: [`Error::Locked`] while it is open;
    /// `Ok(false)` if there is none.
    fn delete_log_dir(&self, dir: &Path, deleted: impl FnOnce()) -> Result<bool> {
        if !self.is_dir(dir) {
            return Ok(false);
        }
        let _owner = lock_log_dir(self.storage.as_ref(), dir)?;
        self.delete_dir(dir)?;
        deleted();
        Ok(true)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.storage.list(path).is_ok()
    }

    /// Deletes the state log of `consumer` of `topic`, durably, then runs
    /// `deleted` before the consumer can be opened again (a new one under
    /// its name); `Ok(false)` if it has none, [`Error::Locked`] (changing
    /// nothing) while it is open.
    pub(crate) fn delete_consumer(
        &self,
        topic: &str,
        consumer: &ConsumerId,
        deleted: impl FnOnce(),
    ) -> Result<bool> {
        self.delete_log_dir(self.state_dir(topic, consumer).path(), deleted)
    }

    /// Deletes `topic`: the state logs of its consumers, then its log;
    /// `Ok(false)` if it has no log. [`Error::Locked`] while the topic or
    /// one of its consumers is open (the consumers before it are deleted
    /// by then).
    pub(crate) fn delete_topic(&self, topic: &str) -> Result<bool> {
        for kind in ConsumerKind::ALL {
            for consumer in self.consumers(kind, topic)? {
                self.delete_consumer(topic, &consumer, || ())?;
            }
            let kind_dir = self.kind_dir(kind, topic);
            if self.is_dir(&kind_dir) {
                self.delete_dir(&kind_dir)?;
            }
        }
        self.delete_log_dir(&self.topic_dir(topic), || ())
    }

    /// Deletes the correlation index of the requester `requester`, if it
    /// has one.
    pub(crate) fn delete_correlation_index(&self, requester: &str) -> Result<()> {
        let dir = self.inbox_dir(requester);
        if self.is_dir(&dir) {
            self.delete_dir(&dir)?;
        }
        Ok(())
    }

    fn refuse_log_directory(&self) -> Result<()> {
        let holds_log = self
            .list_if_any(&self.root)?
            .iter()
            .filter_map(|path| path.file_name()?.to_str())
            .any(is_log_file_name);
        match holds_log {
            true => Err(Error::InvalidArgument(format!(
                "{} holds a log's segments, not a bus: open it with Log::open",
                self.root.display()
            ))),
            false => Ok(()),
        }
    }

    /// The entries of `dir`; none if it does not exist.
    fn list_if_any(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        match self.storage.list(dir) {
            Ok(entries) => Ok(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes the bus's lock; [`Error::Locked`] if another owner holds it.
    pub(crate) fn lock(&self) -> Result<LockGuard> {
        self.storage
            .lock(&self.root.join(LOCK_FILE))?
            .ok_or_else(|| Error::Locked(self.root.clone()))
    }

    #[cfg(feature = "processes")]
    /// Where the lock holder serves the bus to other processes: the
    /// socket in the bus directory, `None` unless the storage is the
    /// host's files.
    pub(crate) fn socket_path(&self) -> Option<PathBuf> {
        self.storage.host_files().then(|| self.root.join(SOCKET_FILE))
    }

    pub(crate) fn topic_dir(&self, topic: &str) -> PathBuf {
        self.root.join(TOPICS_DIR).join(topic)
    }

    /// Opens (creating if needed) the log of `topic`, through the bus's
    /// storage whatever `options` says.
    pub(crate) fn open_topic(&self, topic: &str, options: LogOptions) -> Result<Log> {
        Log::open(self.topic_dir(topic), options.storage(self.storage.clone()))
    }

    /// The stored topics: the names of the subdirectories of `topics/`
    /// (those that are valid UTF-8), sorted. Names are not checked.
    pub(crate) fn topics(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .storage
            .list(&self.root.join(TOPICS_DIR))?
            .iter()
            .filter(|path| self.storage.list(path).is_ok())
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The directory holding the state logs of the `kind` consumers of
    /// `topic`.
    fn kind_dir(&self, kind: ConsumerKind, topic: &str) -> PathBuf {
        self.root.join(STATE_DIR).join(kind.dir_name()).join(topic)
    }

    /// Where the state log of `consumer` of `topic` lives.
    fn state_dir(&self, topic: &str, consumer: &ConsumerId) -> StateDir {
        StateDir::new(self.kind_dir(consumer.kind(), topic), consumer.name())
    }

    /// The stored `kind` consumers of `topic`, sorted: the entries of their
    /// state directory with valid UTF-8, non-hidden names (names are not
    /// checked otherwise). None if the directory does not exist; an error
    /// if it cannot be listed.
    pub(crate) fn consumers(&self, kind: ConsumerKind, topic: &str) -> Result<Vec<ConsumerId>> {
        let mut names: Vec<String> = self
            .list_if_any(&self.kind_dir(kind, topic))?
            .iter()
            .filter_map(|path| path.file_name()?.to_str())
            .filter(|name| !name.starts_with('.'))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names.into_iter().map(|name| kind.consumer(name)).collect())
    }

    /// Opens (creating if needed) the state log of `consumer` of `topic`;
    /// returns it with the events from its last snapshot on.
    pub(crate) fn open_state(
        &self,
        topic: &str,
        consumer: &ConsumerId,
        durability: Durability,
    ) -> Result<(StateLog, Vec<StateEvent>)> {
        let dir = self.state_dir(topic, consumer);
        StateLog::open(dir.path(), durability, self.storage.clone())
    }

    /// The `kind` consumers of `topic` whose repair was interrupted after
    /// the damaged state log was moved aside: a repaired log waits under
    /// its temporary name and none is in place (see `state/repair.rs`).
    /// None if the directory cannot be listed.
    fn interrupted_repairs(&self, kind: ConsumerKind, topic: &str) -> Vec<StateDir> {
        let kind_dir = self.kind_dir(kind, topic);
        let Ok(entries) = self.storage.list(&kind_dir) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?;
                name.strip_prefix('.')?.strip_suffix(REPAIRING_SUFFIX)
            })
            .map(|name| StateDir::new(kind_dir.clone(), name))
            .filter(|state| !entries.contains(&state.path))
            .collect()
    }

    /// Puts in place every repaired state log of the `kind` consumers of
    /// `topic` whose repair was interrupted after the damaged log was
    /// moved aside (see `state/repair.rs`).
    pub(crate) fn finish_interrupted_repairs(&self, kind: ConsumerKind, topic: &str) -> Result<()> {
        finish_interrupted_repairs(self.storage.as_ref(), &self.interrupted_repairs(kind, topic))
    }

    /// Moves the damaged state log of `damaged.consumer` of `topic` aside,
    /// rebuilds it from its longest valid prefix and opens it (see
    /// `state/repair.rs`).
    pub(crate) fn repair_state(
        &self,
        topic: &str,
        durability: Durability,
        damaged: Damaged,
    ) -> Result<(StateLog, Vec<StateEvent>, StateRepair)> {
        let state_dir = self.state_dir(topic, &damaged.consumer);
        repair(&self.storage, durability, &state_dir, damaged)
    }

    fn inbox_dir(&self, requester: &str) -> PathBuf {
        self.root.join(STATE_DIR).join(INBOXES_DIR).join(requester)
    }

    /// Opens the correlation index of the requester `requester`, creating
    /// its directory; returns it and whether it was trusted (see
    /// [`CorrelationIndex::open`]).
    pub(crate) fn open_correlation_index(
        &self,
        requester: &str,
        inbox_start: u64,
    ) -> Result<(CorrelationIndex, bool)> {
        let dir = self.inbox_dir(requester);
        self.storage.create_dir_all(&dir)?;
        let path = dir.join(CORRELATION_INDEX_FILE);
        Ok(CorrelationIndex::open(self.storage.as_ref(), &path, inbox_start)?)
    }
}

/// A consumer's state log directory, and the hidden siblings a repair
/// uses beside it.
#[derive(Debug)]
pub(super) struct StateDir {
    /// The directory of the state logs of its topic and kind.
    kind_dir: PathBuf,
    name: String,
    path: PathBuf,
}

impl StateDir {
    fn new(kind_dir: PathBuf, name: &str) -> StateDir {
        StateDir {
            path: kind_dir.join(name),
            kind_dir,
            name: name.to_owned(),
        }
    }

    /// The state log's directory.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding it and its siblings.
    pub(super) fn parent(&self) -> &Path {
        &self.kind_dir
    }

    /// Where a repaired state log is built before it is put in place.
    pub(super) fn repairing(&self) -> PathBuf {
        self.sibling(REPAIRING_SUFFIX)
    }

    /// Where a damaged state log found at `at_ms` (unix milliseconds) is
    /// moved.
    pub(super) fn damaged(&self, at_ms: i64) -> PathBuf {
        self.sibling(&format!(".damaged-{at_ms}"))
    }

    /// `.<name><suffix>` beside the state log.
    fn sibling(&self, suffix: &str) -> PathBuf {
        self.kind_dir.join(format!(".{}{suffix}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdStorage;

    /// What opening each part of a bus creates, relative to the bus
    /// directory: the layout of the module doc.
    #[test]
    fn each_part_of_a_bus_lands_where_the_module_doc_says() {
        let dir = tempfile::tempdir().unwrap();
        let bus = BusLayout::new(Arc::new(StdStorage), dir.path());
        bus.create().unwrap();
        let _lock = bus.lock().unwrap();
        bus.open_topic("orders", LogOptions::default())
            .unwrap()
            .close()
            .unwrap();
        let audit = ConsumerId::Subscription("audit".into());
        let billing = ConsumerId::Group("billing".into());
        for consumer in [&audit, &billing] {
            let (state, _) = bus.open_state("orders", consumer, Durability::Os).unwrap();
            state.close().unwrap();
        }
        let (mut index, _) = bus.open_correlation_index("client", 0).unwrap();
        index.close().unwrap();

        for path in [
            ".lock",
            "topics/orders",
            "state/subscriptions/orders/audit",
            "state/groups/orders/billing",
            "state/inboxes/client/correlation.cix",
        ] {
            assert!(dir.path().join(path).exists(), "{path} missing");
        }
        let state = bus.state_dir("orders", &billing);
        let groups = dir.path().join("state/groups/orders");
        assert_eq!(state.path(), groups.join("billing"));
        assert_eq!(state.repairing(), groups.join(".billing.repairing"));
        assert_eq!(state.damaged(17), groups.join(".billing.damaged-17"));

        assert_eq!(bus.topics().unwrap(), ["orders"]);
        assert_eq!(
            bus.consumers(ConsumerKind::Subscription, "orders").unwrap(),
            [audit]
        );
        assert_eq!(bus.consumers(ConsumerKind::Group, "orders").unwrap(), [billing]);
        assert!(bus.consumers(ConsumerKind::Group, "none").unwrap().is_empty());
    }

    /// A tombstone (`.<name>.deleted`, as the module doc says) is never a
    /// consumer or a topic and goes at the next sweep; a deletion renames
    /// the directory there and removes it.
    #[test]
    fn a_tombstone_is_never_a_consumer_or_topic_and_the_next_open_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let bus = BusLayout::new(Arc::new(StdStorage), dir.path());
        bus.create().unwrap();
        let groups = dir.path().join("state/groups/orders");
        for name in ["kept", ".gone.deleted"] {
            std::fs::create_dir_all(groups.join(name)).unwrap();
            std::fs::write(groups.join(name).join("00000000000000000000.log"), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("topics/.old.deleted/sub")).unwrap();
        assert_eq!(
            bus.consumers(ConsumerKind::Group, "orders").unwrap(),
            [ConsumerId::Group("kept".into())]
        );

        bus.remove_deleted_consumers(ConsumerKind::Group, "orders")
            .unwrap();
        bus.remove_deleted().unwrap();
        assert!(!groups.join(".gone.deleted").exists());
        assert!(!dir.path().join("topics/.old.deleted").exists());

        let kept = ConsumerId::Group("kept".into());
        assert!(bus.delete_consumer("orders", &kept, || ()).unwrap());
        assert!(!bus.delete_consumer("orders", &kept, || ()).unwrap());
        assert_eq!(std::fs::read_dir(&groups).unwrap().count(), 0);
    }

    #[test]
    fn hidden_entries_are_not_consumers_and_a_lone_repaired_log_is_an_interrupted_repair() {
        let dir = tempfile::tempdir().unwrap();
        let bus = BusLayout::new(Arc::new(StdStorage), dir.path());
        let groups = dir.path().join("state/groups/orders");
        for name in ["kept", ".kept.repairing", ".lost.repairing", ".lost.damaged-1"] {
            std::fs::create_dir_all(groups.join(name)).unwrap();
        }
        assert_eq!(
            bus.consumers(ConsumerKind::Group, "orders").unwrap(),
            [ConsumerId::Group("kept".into())]
        );
        let interrupted: Vec<PathBuf> = bus
            .interrupted_repairs(ConsumerKind::Group, "orders")
            .iter()
            .map(|state| state.path().to_path_buf())
            .collect();
        assert_eq!(interrupted, [groups.join("lost")]);
    }
}
