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

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::backend::{GroupBackend, ReplySink, TopicBackend};
use crate::embedded::LogSubscription;
use crate::embedded::{BusInner, LogReplies, OpenBus};
use crate::embedded::{GroupInner, LogGroup};
use crate::error::{Error, Result};
use crate::format::StateEvent;
use crate::log::{Durability, Log};
use crate::patterns::GroupOptions;
use crate::patterns::StartAt;
use crate::patterns::recovered_commit;
use crate::patterns::recovered_low_watermark;
use crate::patterns::validate_name;
use crate::patterns::{ConsumerStats, Retention, TopicOptions, TopicStats};
use crate::record::Record;
use crate::state::ConsumerId;
use crate::state::{
    Damaged, GROUPS, RecoveryMode, SUBSCRIPTIONS, StateLog, StateRepair, finish_interrupted_repairs, repair,
};

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
    positions: Mutex<HashMap<ConsumerId, u64>>,
    groups: Mutex<HashMap<String, Weak<GroupInner>>>,
    state_logs: Mutex<Vec<Weak<StateLog>>>,
    repairs: Mutex<Vec<StateRepair>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogTopic {
    pub(crate) fn open(bus: Arc<BusInner>, name: &str, options: TopicOptions) -> Result<LogTopic> {
        let log = bus.open_log(&bus.topic_dir(name), options.log.clone())?;
        let positions = Mutex::new(stored_positions(&bus, name, options.durability_mode())?);
        let inner = TopicInner {
            bus,
            name: name.to_owned(),
            log,
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
    pub(crate) fn open_state(&self, kind: &str, name: &str) -> Result<(Arc<StateLog>, Vec<StateEvent>)> {
        let bus = &self.inner.bus;
        let dir = bus.state_dir(kind, self.name()).join(name);
        let durability = self.inner.options.durability_mode();
        finish_interrupted_repairs(bus.storage().as_ref(), &bus.state_dir(kind, self.name()))?;
        let (state, events) = match StateLog::open(&dir, durability, bus.storage().clone()) {
            Err(Error::Corrupt { .. }) if bus.recovery_mode() == RecoveryMode::MoveAsideDamagedState => {
                self.repair_state(kind, name, &dir)?
            }
            opened => opened?,
        };
        let state = Arc::new(state);
        let mut logs = lock(&self.inner.state_logs);
        logs.retain(|w| w.strong_count() > 0);
        logs.push(Arc::downgrade(&state));
        Ok((state, events))
    }

    /// Moves the damaged state log in `dir` aside and opens the consumer's
    /// state from its longest valid prefix, or from the topic's start.
    fn repair_state(&self, kind: &str, name: &str, dir: &Path) -> Result<(StateLog, Vec<StateEvent>)> {
        let storage = self.inner.bus.storage();
        let durability = self.inner.options.durability_mode();
        // One repair at a time: a consumer opened twice at once is repaired
        // once, and the second open finds the repaired log (or its lock).
        let mut repairs = lock(&self.inner.repairs);
        let error = match StateLog::open(dir, durability, storage.clone()) {
            Err(error @ Error::Corrupt { .. }) => error,
            opened => return opened,
        };
        let damaged = damaged_consumer(kind, name, dir, error, self.start_offset());
        let (state, events, report) = repair(storage, durability, damaged)?;
        repairs.push(report);
        Ok((state, events))
    }

    /// Records a consumer's durable position and applies interest-based
    /// retention: the segments every consumer passed leave the log at once,
    /// their files in the background, so an ack never waits for (or fails
    /// because of) a deletion.
    pub(crate) fn set_position(&self, consumer: &ConsumerId, position: u64) -> Result<()> {
        let floor = {
            let mut positions = lock(&self.inner.positions);
            match positions.get_mut(consumer) {
                Some(stored) => *stored = position,
                None => drop(positions.insert(consumer.clone(), position)),
            }
            retention_floor(self.inner.options.retention, &positions)
        };
        if let Some(floor) = floor {
            self.inner.log.release_before(floor);
        }
        Ok(())
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

    fn publish(&self, record: &Record<'_>) -> Result<u64> {
        Ok(self.publish_batch(std::slice::from_ref(record))?.start)
    }

    fn publish_batch(&self, records: &[Record<'_>]) -> Result<std::ops::Range<u64>> {
        self.inner.log.append_batch(records)
    }

    fn publish_redriven(&self, record: &Record<'_>, _dlq_topic: &str, _dlq_offset: u64) -> Result<u64> {
        self.publish(record)
    }

    fn subscribe(&self, name: &str, start: StartAt) -> Result<LogSubscription> {
        LogSubscription::durable(self.clone(), name, start)
    }

    fn subscribe_ephemeral(&self, start: StartAt) -> Result<LogSubscription> {
        LogSubscription::ephemeral(self.clone(), start)
    }

    fn group(&self, name: &str, options: GroupOptions) -> Result<LogGroup> {
        let mut groups = lock(&self.inner.groups);
        if let Some(inner) = groups.get(name).and_then(Weak::upgrade) {
            let group = LogGroup { inner };
            group.reconfigure(options)?;
            return Ok(group);
        }
        let group = LogGroup::open(self.clone(), name, options)?;
        groups.insert(name.to_owned(), Arc::downgrade(&group.inner));
        Ok(group)
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
            .map(|(id, p)| (id.clone(), *p))
            .collect();
        let open_groups: Vec<LogGroup> = lock(&self.inner.groups)
            .values()
            .filter_map(Weak::upgrade)
            .map(|inner| LogGroup { inner })
            .collect();
        let mut consumers = Vec::with_capacity(positions.len());
        for (id, committed) in positions {
            let group = match &id {
                ConsumerId::Group(name) => open_groups
                    .iter()
                    .find(|g| g.name() == name)
                    .map(GroupBackend::stats),
                ConsumerId::Subscription(_) => None,
            };
            let lag = end_offset.saturating_sub(committed);
            consumers.push(ConsumerStats {
                id,
                committed,
                lag,
                group: group.transpose()?,
            });
        }
        consumers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(TopicStats {
            name: self.inner.name.clone(),
            start_offset: self.start_offset(),
            end_offset,
            sync: self.inner.log.sync_stats(),
            consumers,
        })
    }

    fn state_repairs(&self) -> Vec<StateRepair> {
        lock(&self.inner.repairs).clone()
    }
}

/// The offset below which retention may delete, if the mode has one.
fn retention_floor(retention: Retention, positions: &HashMap<ConsumerId, u64>) -> Option<u64> {
    let relevant = positions.iter().filter(|(id, _)| match retention {
        Retention::Limits => false,
        Retention::Interest => true,
        Retention::WorkQueue => matches!(id, ConsumerId::Group(_)),
    });
    relevant.map(|(_, &p)| p).min()
}

/// Reads the durable positions of every consumer of `topic` stored on disk;
/// one whose state cannot be read is at 0 (see the module doc).
fn stored_positions(bus: &BusInner, topic: &str, durability: Durability) -> Result<HashMap<ConsumerId, u64>> {
    let mut positions = HashMap::new();
    for (kind, make_id) in [
        (
            SUBSCRIPTIONS,
            ConsumerId::Subscription as fn(String) -> ConsumerId,
        ),
        (GROUPS, ConsumerId::Group as fn(String) -> ConsumerId),
    ] {
        let dir = bus.state_dir(kind, topic);
        finish_interrupted_repairs(bus.storage().as_ref(), &dir)?;
        let Ok(entries) = bus.storage().list(&dir) else {
            continue;
        };
        for path in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if validate_name(kind, name).is_err() {
                continue;
            }
            // Unknown counts as 0: retention deletes nothing it may need.
            let position = stored_position(bus, kind, &path, durability)
                .inspect_err(|_error| {
                    trace_event!(error, topic, consumer = name, error = %_error, "consumer state unreadable; its position counts as 0 until it is opened");
                })
                .unwrap_or(0);
            positions.insert(make_id(name.to_owned()), position);
        }
    }
    Ok(positions)
}

/// The position a consumer's state log in `dir` leads to.
fn stored_position(bus: &BusInner, kind: &str, dir: &Path, durability: Durability) -> Result<u64> {
    let (state, events) = StateLog::open(dir, durability, bus.storage().clone())?;
    state.close()?;
    Ok(match kind {
        SUBSCRIPTIONS => recovered_commit(&events),
        _ => recovered_low_watermark(&events),
    })
}

/// The `kind` consumer `name` whose state in `dir` failed to open with
/// `error`, to repair: it restarts from the topic's `start` when no
/// snapshot of its state survives.
fn damaged_consumer<'a>(kind: &str, name: &str, dir: &'a Path, error: Error, start: u64) -> Damaged<'a> {
    let (consumer, fallback, position): (_, _, fn(&[StateEvent]) -> u64) = match kind {
        SUBSCRIPTIONS => (
            ConsumerId::Subscription(name.to_owned()),
            StateEvent::Committed(start),
            recovered_commit,
        ),
        _ => (
            ConsumerId::Group(name.to_owned()),
            StateEvent::Snapshot {
                next_offset: start,
                entries: vec![],
            },
            recovered_low_watermark,
        ),
    };
    Damaged {
        consumer,
        dir,
        error,
        fallback,
        position,
    }
}
