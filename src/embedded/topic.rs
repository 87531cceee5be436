//! The embedded topic: a named [`Log`] that publishers append to and that
//! subscriptions and consumer groups read (the `Log` variant of
//! [`crate::Topic`]).
//!
//! A topic also tracks the durable positions of its consumers (committed
//! offsets of durable subscriptions, low watermarks of groups) so that the
//! `Interest` and `WorkQueue` retention modes can drop what every consumer
//! has passed.
//!
//! Invariants:
//! - opening the topic, and publishing, never depend on a consumer's state:
//!   a consumer state log that cannot be read when the topic opens counts
//!   as position 0 (retention deletes nothing it may need) until the
//!   consumer itself is opened, which fails with the error or, under
//!   [`RecoveryMode::MoveAsideDamagedState`], repairs it (`state/repair.rs`);
//! - a consumer's state log is opened, and repaired, only by that consumer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use crate::backend::{GroupBackend, ReplySink, TopicBackend};
use crate::embedded::LogSubscription;
use crate::embedded::dedupe::IdWindow;
use crate::embedded::{BusInner, LogReplies, OpenBus};
use crate::embedded::{GroupInner, LogGroup};
use crate::error::{Error, Result};
use crate::format::StateEvent;
use crate::log::{Async, Block, Durability, Log, Wait, ready};
use crate::patterns::GroupOptions;
use crate::patterns::StartAt;
use crate::patterns::check_batch_ids;
use crate::patterns::check_commit;
use crate::patterns::recovered_commit;
use crate::patterns::recovered_low_watermark;
use crate::patterns::validate_name;
use crate::patterns::{ConsumerStats, Retention, TopicOptions, TopicStats};
use crate::record::{Record, StoredRecord};
use crate::state::{BusLayout, ConsumerId, ConsumerKind};
use crate::state::{Damaged, RecoveryMode, StateLog, StateRepair};

/// A topic stored in the bus directory. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct LogTopic {
    pub(crate) inner: Arc<TopicInner>,
    /// Set on every handle the bus hands out, so that it and everything
    /// taken from it (groups, subscriptions, deliveries) keep the bus open;
    /// `None` only in the bus's own table of open topics.
    _keep_open: Option<Arc<OpenBus>>,
}

#[derive(Debug)]
pub(crate) struct TopicInner {
    pub(crate) bus: Arc<BusInner>,
    pub(crate) name: String,
    pub(crate) log: Log,
    pub(crate) options: TopicOptions,
    /// The ids published within the dedupe window, if it is on.
    ids: Option<IdWindow>,
    /// A handful per topic, ordered by name; each a slot its open
    /// consumer holds too ([`PositionSlot`]).
    positions: Mutex<Positions>,
    groups: Mutex<HashMap<String, Weak<GroupInner>>>,
    state_logs: Mutex<Vec<Weak<StateLog>>>,
    repairs: Mutex<Vec<StateRepair>>,
}

/// The durable positions of a topic's consumers.
type Positions = BTreeMap<ConsumerId, Arc<AtomicU64>>;

/// An open consumer's hold on its position in its topic's table: once
/// reported, a new position is a store into the slot, with no lookup by
/// name and no lock, unless the topic's retention needs the consumers'
/// minimum ([`LogTopic::set_position`]).
#[derive(Debug, Default)]
pub(crate) struct PositionSlot(OnceLock<Arc<AtomicU64>>);

/// How long opening a group waits for its previous instance, whose last
/// handle is being dropped, to release the group's state log.
const DYING_GROUP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogTopic {
    pub(crate) fn open(bus: Arc<BusInner>, name: &str, options: TopicOptions) -> Result<LogTopic> {
        let layout = bus.layout();
        let log = layout.open_topic(name, options.log.clone().clock(bus.clock().clone()))?;
        let positions = Mutex::new(stored_positions(layout, name, options.durability_mode())?);
        let inner = TopicInner {
            bus,
            name: name.to_owned(),
            log,
            ids: IdWindow::new(options.dedupe_window),
            options,
            positions,
            groups: Mutex::new(HashMap::new()),
            state_logs: Mutex::new(Vec::new()),
            repairs: Mutex::new(Vec::new()),
        };
        Ok(LogTopic {
            inner: Arc::new(inner),
            _keep_open: None,
        })
    }

    /// This topic as a handle that keeps the bus open.
    pub(crate) fn keeping_open(&self, open: Arc<OpenBus>) -> LogTopic {
        LogTopic {
            inner: self.inner.clone(),
            _keep_open: Some(open),
        }
    }

    pub(crate) fn log(&self) -> &Log {
        &self.inner.log
    }

    /// Writes `records` as a publish does: a single record with an id
    /// through the dedupe window (which may find it published already),
    /// several at once only if none has an id (while the window is on).
    fn write(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        let log = &self.inner.log;
        check_batch_ids(&self.inner.options, records)?;
        match (&self.inner.ids, records) {
            (Some(ids), [record]) => match record.id_bytes() {
                Some(id) => ids.publish_once(log, record, id, || log.write(records)),
                None => log.write(records),
            },
            _ => log.write(records),
        }
    }

    /// A publish of `records`, waiting for durability as `wait` says.
    fn publish_in<W: Wait>(
        &self,
        records: &[Record<'_>],
        wait: W,
    ) -> impl Future<Output = Result<Range<u64>>> + Send {
        wait.after_write(&self.inner.log, self.write(records), |range| range)
    }

    /// Closes the topic's log and the state logs of its open consumers.
    pub(crate) fn close(&self) -> Result<()> {
        let state_logs: Vec<Arc<StateLog>> = lock(&self.inner.state_logs)
            .drain(..)
            .filter_map(|w| w.upgrade())
            .collect();
        let mut result = Ok(());
        for state in state_logs {
            result = result.and(state.close());
        }
        result.and(self.inner.log.close())
    }

    /// Opens a consumer's state log, to be closed with the topic; a
    /// damaged one fails with [`Error::Corrupt`] or is repaired, per the
    /// bus's [`RecoveryMode`].
    pub(crate) fn open_state(&self, consumer: &ConsumerId) -> Result<(Arc<StateLog>, Vec<StateEvent>)> {
        let bus = &self.inner.bus;
        let layout = bus.layout();
        let durability = self.inner.options.durability_mode();
        layout.finish_interrupted_repairs(consumer.kind(), self.name())?;
        let (state, events) = match layout.open_state(self.name(), consumer, durability) {
            Err(Error::Corrupt { .. }) if bus.recovery_mode() == RecoveryMode::MoveAsideDamagedState => {
                self.repair_state(consumer)?
            }
            opened => opened?,
        };
        let state = Arc::new(state);
        let mut logs = lock(&self.inner.state_logs);
        logs.retain(|w| w.strong_count() > 0);
        logs.push(Arc::downgrade(&state));
        Ok((state, events))
    }

    /// Moves the consumer's damaged state log aside and opens its state
    /// from the log's longest valid prefix, or from the topic's start.
    fn repair_state(&self, consumer: &ConsumerId) -> Result<(StateLog, Vec<StateEvent>)> {
        let layout = self.inner.bus.layout();
        let durability = self.inner.options.durability_mode();
        // One repair at a time: a consumer opened twice at once is repaired
        // once, and the second open finds the repaired log (or its lock).
        let mut repairs = lock(&self.inner.repairs);
        let error = match layout.open_state(self.name(), consumer, durability) {
            Err(error @ Error::Corrupt { .. }) => error,
            opened => return opened,
        };
        let damaged = damaged_consumer(consumer.clone(), error, self.start_offset());
        let (state, events, report) = layout.repair_state(self.name(), durability, damaged)?;
        repairs.push(report);
        Ok((state, events))
    }

    /// Records a consumer's durable position, through `slot` (the
    /// consumer's own) once it is known, and applies interest-based
    /// retention: the segments every consumer passed leave the log at once,
    /// their files in the background, so an ack never waits for (or fails
    /// because of) a deletion. Under `Retention::Limits` no position
    /// releases anything: a known slot takes the position alone.
    pub(crate) fn set_position(
        &self,
        consumer: &ConsumerId,
        slot: &PositionSlot,
        position: u64,
    ) -> Result<()> {
        if let Some(stored) = slot.0.get()
            && self.inner.options.retention == Retention::Limits
        {
            stored.store(position, Ordering::Release);
            return Ok(());
        }
        self.change_positions(|positions| {
            let stored = match positions.get(consumer) {
                Some(stored) => stored.clone(),
                None => {
                    let stored = Arc::new(AtomicU64::new(position));
                    positions.insert(consumer.clone(), stored.clone());
                    stored
                }
            };
            stored.store(position, Ordering::Release);
            let _ = slot.0.set(stored);
        });
        Ok(())
    }

    /// Changes the tracked positions of the consumers and releases what
    /// every one of them then passed (see [`LogTopic::set_position`]).
    fn change_positions(&self, change: impl FnOnce(&mut Positions)) {
        let floor = {
            let mut positions = lock(&self.inner.positions);
            change(&mut positions);
            retention_floor(self.inner.options.retention, &positions)
        };
        if let Some(floor) = floor {
            self.inner.log.release_before(floor);
        }
    }

    /// Deletes the stored state of `consumer` (see
    /// [`BusLayout::delete_consumer`]): it no longer holds back retention,
    /// and the segments every remaining consumer passed go at once. Its
    /// position is dropped before a consumer under its name can open (and
    /// report its own). [`Error::Locked`] while it is open. Group opens
    /// wait meanwhile.
    pub(crate) fn delete_consumer(&self, consumer: &ConsumerId) -> Result<bool> {
        let _groups = lock(&self.inner.groups);
        let layout = self.inner.bus.layout();
        layout.delete_consumer(self.name(), consumer, || {
            self.change_positions(|positions| {
                positions.remove(consumer);
            });
        })
    }

    /// True while a handle other than the bus's own table holds the topic
    /// (a topic handle, or a subscription, group or requester of it).
    pub(crate) fn in_use(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    /// Wakes every receiver waiting on this topic.
    pub(crate) fn wake_waiters(&self) {
        self.inner.log.activity().notify();
    }
}

impl TopicBackend for LogTopic {
    type Subscription = LogSubscription;
    type Group = LogGroup;

    fn name(&self) -> &str {
        &self.inner.name
    }

    fn options(&self) -> &TopicOptions {
        &self.inner.options
    }

    fn publish_batch(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        ready(self.publish_in(records, Block))
    }

    async fn publish_async(&self, record: &Record<'_>) -> Result<u64> {
        Ok(self
            .publish_batch_async(std::slice::from_ref(record))
            .await?
            .start)
    }

    async fn publish_batch_async(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        self.publish_in(records, Async).await
    }

    /// Not through the dedupe window: a redriven record keeps its id, which
    /// its first publish put in the window.
    fn publish_redriven(&self, record: &Record<'_>, _dlq_topic: &str, _dlq_offset: u64) -> Result<u64> {
        Ok(self.inner.log.append_batch(std::slice::from_ref(record))?.start)
    }

    fn subscribe(&self, name: &str, start: StartAt) -> Result<LogSubscription> {
        LogSubscription::durable(self.clone(), name, start)
    }

    fn subscribe_ephemeral(&self, start: StartAt) -> Result<LogSubscription> {
        LogSubscription::ephemeral(self.clone(), start)
    }

    /// The group's one [`GroupInner`] per name: shared while a handle
    /// lives. When the last handle is being dropped on another thread (a
    /// process that joined the bus hung up), its state log is still locked
    /// for an instant: the open waits for it instead of failing.
    fn group(&self, name: &str, options: GroupOptions) -> Result<LogGroup> {
        let deadline = std::time::Instant::now() + DYING_GROUP_GRACE;
        loop {
            let mut groups = lock(&self.inner.groups);
            let dying = match groups.get(name) {
                Some(weak) => match weak.upgrade() {
                    Some(inner) => {
                        let group = LogGroup { inner };
                        group.reconfigure(options)?;
                        return Ok(group);
                    }
                    None => true,
                },
                None => false,
            };
            match LogGroup::open(self.clone(), name, options.clone()) {
                Ok(group) => {
                    groups.insert(name.to_owned(), Arc::downgrade(&group.inner));
                    return Ok(group);
                }
                Err(Error::Locked(_)) if dying && std::time::Instant::now() < deadline => {
                    drop(groups);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn reply_sink(&self) -> Arc<dyn ReplySink> {
        Arc::new(LogReplies::new(self.inner.bus.clone()))
    }

    fn end_offset(&self) -> u64 {
        self.inner.log.end_offset()
    }

    fn start_offset(&self) -> u64 {
        self.inner.log.start_offset()
    }

    fn stats(&self) -> Result<TopicStats> {
        let end_offset = self.end_offset();
        let positions: Vec<(ConsumerId, u64)> = lock(&self.inner.positions)
            .iter()
            .map(|(id, p)| (id.clone(), p.load(Ordering::Acquire)))
            .collect();
        let open_groups: Vec<LogGroup> = lock(&self.inner.groups)
            .values()
            .filter_map(Weak::upgrade)
            .map(|inner| LogGroup { inner })
            .collect();
        let now_ms = self.inner.log.clock().now_ms();
        let mut consumers = Vec::with_capacity(positions.len());
        for (id, committed) in positions {
            let group = match &id {
                ConsumerId::Group(name) => open_groups
                    .iter()
                    .find(|g| g.name() == name)
                    .map(GroupBackend::stats),
                ConsumerId::Subscription(_) => None,
            };
            consumers.push(ConsumerStats {
                oldest_unconsumed_age: record_age(&self.inner.log, committed, now_ms)?,
                group: group.transpose()?,
                ..ConsumerStats::at(id, committed, end_offset)
            });
        }
        consumers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(TopicStats {
            name: self.inner.name.clone(),
            start_offset: self.start_offset(),
            end_offset,
            bytes: self.inner.log.bytes(),
            sync: self.inner.log.sync_stats(),
            consumers,
        })
    }

    /// Through the log's retention (`Log::purge`); receivers waiting on the
    /// topic are woken to find their position moved.
    fn purge(&self) -> Result<u64> {
        let start = self.inner.log.purge()?;
        self.wake_waiters();
        Ok(start)
    }

    fn state_repairs(&self) -> Vec<StateRepair> {
        lock(&self.inner.repairs).clone()
    }
}

/// The offset a consumer of `log` seeking to `to` moves to: the first
/// record at or after it that is still stored (a timestamp: the first
/// record stamped at or after it). An offset past the end is
/// [`Error::InvalidArgument`], as a commit there is.
pub(crate) fn seek_offset(log: &Log, to: StartAt) -> Result<u64> {
    if let StartAt::Offset(offset) = to {
        check_commit(offset, log.end_offset())?;
    }
    Ok(log.cursor(to.into())?.offset())
}

/// The offset below which retention may delete, if the mode has one.
fn retention_floor(retention: Retention, positions: &Positions) -> Option<u64> {
    let relevant = positions.iter().filter(|(id, _)| match retention {
        Retention::Limits => false,
        Retention::Interest => true,
        Retention::WorkQueue => matches!(id, ConsumerId::Group(_)),
    });
    relevant.map(|(_, p)| p.load(Ordering::Acquire)).min()
}

/// Reads the durable positions of every consumer of `topic` stored on disk;
/// one whose state cannot be read is at 0 (see the module doc). Fails if
/// the consumers cannot be listed: retention would not know whom to keep
/// records for.
fn stored_positions(layout: &BusLayout, topic: &str, durability: Durability) -> Result<Positions> {
    let mut positions = BTreeMap::new();
    for kind in ConsumerKind::ALL {
        layout.finish_interrupted_repairs(kind, topic)?;
        layout.remove_deleted_consumers(kind, topic)?;
        for consumer in layout.consumers(kind, topic)? {
            if validate_name(kind.label(), consumer.name()).is_err() {
                continue;
            }
            // Unknown counts as 0: retention deletes nothing it may need.
            let position = stored_position(layout, topic, &consumer, durability)
                .inspect_err(|_error| {
                    trace_event!(error, topic, consumer = consumer.name(), error = %_error, "consumer state unreadable; its position counts as 0 until it is opened");
                })
                .unwrap_or(0);
            positions.insert(consumer, Arc::new(AtomicU64::new(position)));
        }
    }
    Ok(positions)
}

/// The position the stored state log of `consumer` leads to.
fn stored_position(
    layout: &BusLayout,
    topic: &str,
    consumer: &ConsumerId,
    durability: Durability,
) -> Result<u64> {
    let (state, events) = layout.open_state(topic, consumer, durability)?;
    state.close()?;
    Ok(recovered_position(consumer)(&events))
}

/// How a consumer's position follows from its state events: a
/// subscription's committed offset, a group's low watermark.
fn recovered_position(consumer: &ConsumerId) -> fn(&[StateEvent]) -> u64 {
    match consumer {
        ConsumerId::Subscription(_) => recovered_commit,
        ConsumerId::Group(_) => recovered_low_watermark,
    }
}

/// `consumer`, whose state failed to open with `error`, to repair: it
/// restarts from the topic's `start` when no snapshot of its state
/// survives.
fn damaged_consumer(consumer: ConsumerId, error: Error, start: u64) -> Damaged {
    let fallback = match consumer {
        ConsumerId::Subscription(_) => StateEvent::Committed(start),
        ConsumerId::Group(_) => StateEvent::Snapshot {
            next_offset: start,
            entries: vec![],
        },
    };
    Damaged {
        position: recovered_position(&consumer),
        consumer,
        error,
        fallback,
    }
}

/// How old the record at `offset` of `log` is at `now_ms`, by its
/// timestamp; `None` if the log does not hold it (past the end, or removed
/// by retention).
pub(crate) fn record_age(log: &Log, offset: u64, now_ms: i64) -> Result<Option<Duration>> {
    if offset >= log.end_offset() {
        return Ok(None);
    }
    let age_ms = |record: StoredRecord| now_ms.saturating_sub(record.timestamp()).max(0);
    Ok(log.read(offset)?.map(|r| Duration::from_millis(age_ms(r) as u64)))
}
