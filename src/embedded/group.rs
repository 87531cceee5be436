//! The embedded consumer group (the `Log` variant of [`crate::Group`] and
//! [`crate::Delivery`]): competing receivers share one position on a
//! topic's log; each record is leased to one receiver at a time until it
//! is acked, nacked, rejected, dropped or its lease expires.
//!
//! Invariants:
//! - every offset below the group's `next_offset` that is not yet below the
//!   low watermark has an entry; an entry is Available, Leased (to exactly
//!   one delivery token) or Done;
//! - `Delivered` is persisted before a record is handed out, so attempts
//!   are counted even if the receiver's process dies while handling it;
//! - a failed delivery (nack, drop, lease expiry, restart) makes the record
//!   available again only after the retry policy's backoff;
//! - once attempts reach `max_attempts`, the record goes to the dead-letter
//!   topic exactly once (see `dead_letter.rs`) and is Done;
//! - a dead letter that cannot be written (disk full, I/O error, the
//!   dead-letter topic cannot be opened) leaves its record Available and
//!   due for another try after backoff: the call that tried returns the
//!   failure, and the record is never delivered again, only dead-lettered;
//! - the low watermark, the lowest offset not Done, only grows.
//!
//! Delivery is at-least-once: an ack lost in a crash, or a lease that
//! expires while the receiver is still working, leads to a redelivery.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::backend::TopicBackend;
use crate::embedded::LogTopic;
use crate::error::{Error, Result};
use crate::format::{EntryState, Failure, StateEvent};
use crate::log::{Cursor, Position, now_ms};
use crate::patterns::{
    DEAD_LETTER_HEADROOM_BYTES, DeadLetter, Replay, dead_letter_topic, is_dead_letter_of, push_failure,
};
use crate::patterns::{GroupOptions, GroupStats};
use crate::record::StoredRecord;
use crate::state::ConsumerId;
use crate::state::GROUPS;
use crate::state::StateLog;

/// The embedded consumer group (the `Log` variant of [`crate::Group`]).
/// Cheap to clone; share it between threads.
#[derive(Debug, Clone)]
pub(crate) struct LogGroup {
    pub(crate) inner: Arc<GroupInner>,
}

#[derive(Debug)]
pub(crate) struct GroupInner {
    topic: LogTopic,
    name: String,
    /// Replaced when the group is asked for again with other options.
    options: RwLock<Arc<GroupOptions>>,
    log: Arc<StateLog>,
    state: Mutex<GroupState>,
    dlq: OnceLock<LogTopic>,
    redeliveries: AtomicU64,
    acked: AtomicU64,
    dead_lettered: AtomicU64,
}

#[derive(Debug)]
struct GroupState {
    cursor: Cursor,
    entries: BTreeMap<u64, Entry>,
    ready: BTreeSet<(i64, u64)>,
    leases: BTreeSet<(i64, u64)>,
    next_token: u64,
    rng: fastrand::Rng,
    /// Low watermark last reported to the topic; the first is always
    /// reported, so a new group holds back `Interest`/`WorkQueue` retention
    /// from the start, not only once it has acked something.
    reported_floor: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    attempts: u32,
    status: Status,
    failures: Vec<Failure>,
    dead: DeadStep,
}

/// How far a record got on its way to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadStep {
    /// Not on its way.
    No,
    /// To be dead-lettered when next picked, never delivered again.
    Due,
    /// Its intent is persisted with the dead-letter topic's end offset
    /// then; the dead letter may have been written since.
    Intended { dlq_end: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Available { not_before_ms: i64 },
    Leased { token: u64, until_ms: i64 },
    Done,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogGroup {
    pub(crate) fn open(topic: LogTopic, name: &str, options: GroupOptions) -> Result<LogGroup> {
        options.validate_for(topic.name())?;
        let (log, events) = topic.open_state(GROUPS, name)?;
        let start = match events.is_empty() {
            true => topic.log().cursor(options.start.into())?.offset(),
            false => 0,
        };
        let replay = Replay::new(&events, start);
        let cursor = topic.log().cursor(Position::Offset(replay.next_offset))?;
        let state = GroupState {
            cursor,
            entries: BTreeMap::new(),
            ready: BTreeSet::new(),
            leases: BTreeSet::new(),
            next_token: 1,
            rng: fastrand::Rng::new(),
            reported_floor: None,
        };
        let inner = GroupInner {
            topic,
            name: name.to_owned(),
            options: RwLock::new(Arc::new(options)),
            log,
            state: Mutex::new(state),
            dlq: OnceLock::new(),
            redeliveries: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        };
        inner.restore(replay, events.is_empty())?;
        Ok(LogGroup {
            inner: Arc::new(inner),
        })
    }

    /// The group's name.
    pub(crate) fn name(&self) -> &str {
        &self.inner.name
    }

    /// Applies `options`' lease, retry policy and dead-letter setting to
    /// the group (every handle, from the next decision on); `start` only
    /// applies when a group is created.
    pub(crate) fn reconfigure(&self, options: GroupOptions) -> Result<()> {
        options.validate_for(self.inner.topic.name())?;
        *self.inner.options.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(options);
        Ok(())
    }

    /// The next record available to this group, waiting up to `timeout`.
    pub(crate) fn recv(&self, timeout: Duration) -> Result<Option<LogDelivery>> {
        Ok(self.recv_batch(1, timeout)?.pop())
    }

    /// Up to `max` records available to this group, waiting up to `timeout`
    /// for the first: returns as soon as at least one is available, and an
    /// empty `Vec` on timeout. All of them are leased with one state write
    /// (one sync under `Durability::Always`); each [`LogDelivery`] is then
    /// settled on its own, like one from [`LogGroup::recv`].
    pub(crate) fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<LogDelivery>> {
        let deadline = Instant::now() + timeout;
        loop {
            let waiter = self.inner.topic.log().activity().waiter();
            let (deliveries, next_due_ms) = self.inner.poll(max)?;
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
            let now = Instant::now();
            if now >= deadline || max == 0 {
                return Ok(deliveries);
            }
            let wake = next_due_ms.map_or(deadline, |due| {
                let wait = Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64);
                deadline.min(now + wait)
            });
            waiter.wait_until(wake);
        }
    }

    /// The next record available now, without waiting.
    pub(crate) fn try_recv(&self) -> Result<Option<LogDelivery>> {
        Ok(self.try_recv_batch(1)?.pop())
    }

    /// Up to `max` records available now, leased with one state write.
    pub(crate) fn try_recv_batch(&self, max: usize) -> Result<Vec<LogDelivery>> {
        Ok(self.inner.poll(max)?.0)
    }

    /// The next record, waiting as long as it takes (async, any executor).
    pub(crate) async fn recv_async(&self) -> Result<LogDelivery> {
        loop {
            let listener = self.inner.topic.log().activity().listen();
            let (mut deliveries, next_due_ms) = self.inner.poll(1)?;
            if let Some(delivery) = deliveries.pop() {
                return Ok(delivery);
            }
            if let Some(due) = next_due_ms {
                self.inner
                    .topic
                    .inner
                    .bus
                    .wakeups()
                    .schedule(due, &self.inner.topic.inner);
            }
            listener.await;
        }
    }

    /// Counters and positions of the group.
    pub(crate) fn stats(&self) -> Result<GroupStats> {
        self.inner.stats()
    }
}

impl GroupInner {
    /// Rebuilds the live state from a replay: deliveries open at the crash
    /// count as failed; records with a dead-letter intent are resolved when
    /// next picked (so a dead-letter topic that cannot be opened now fails
    /// that pick, not the group).
    fn restore(&self, replay: Replay, fresh: bool) -> Result<()> {
        let now = now_ms();
        let mut released = Vec::new();
        let mut state = lock(&self.state);
        let low_watermark = replay.low_watermark();
        for (offset, saved) in replay.entries.range(low_watermark..) {
            let mut entry = Entry {
                attempts: saved.attempts,
                status: Status::Available {
                    not_before_ms: saved.not_before_ms,
                },
                failures: saved.failures.clone(),
                dead: match replay.intents.get(offset) {
                    Some(&dlq_end) => DeadStep::Intended { dlq_end },
                    None => DeadStep::No,
                },
            };
            if saved.done {
                entry.status = Status::Done;
            } else if replay.leased.contains(offset) {
                let failure = Failure {
                    at_ms: now,
                    reason: "receiver stopped before settling".into(),
                };
                let not_before_ms = now + self.backoff_ms(&mut state.rng, entry.attempts);
                push_failure(&mut entry.failures, failure.clone());
                entry.status = Status::Available { not_before_ms };
                released.push(StateEvent::Released {
                    offset: *offset,
                    not_before_ms,
                    failure,
                });
            }
            if let Status::Available { not_before_ms } = entry.status {
                state.ready.insert((not_before_ms, *offset));
            }
            state.entries.insert(*offset, entry);
        }
        drop(state);
        if fresh {
            self.log.write_snapshot(&StateEvent::Snapshot {
                next_offset: replay.next_offset,
                entries: vec![],
            })?;
        }
        if !released.is_empty() {
            self.log.append(&released)?;
        }
        self.after_settle()
    }

    fn options(&self) -> Arc<GroupOptions> {
        self.options.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn backoff_ms(&self, rng: &mut fastrand::Rng, failures: u32) -> i64 {
        let delay = self.options().retry.backoff.delay(failures.max(1), rng);
        i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.options().lease.as_millis()).unwrap_or(i64::MAX)
    }

    fn dlq(&self) -> Result<&LogTopic> {
        if let Some(dlq) = self.dlq.get() {
            return Ok(dlq);
        }
        // Dead letters carry failure headers on top of the record: give
        // the dead-letter topic room for them.
        let mut options = self.topic.inner.options.clone();
        options.log = options
            .log
            .clone()
            .max_record_bytes(options.log.max_record_bytes + DEAD_LETTER_HEADROOM_BYTES);
        let dlq = self
            .topic
            .inner
            .bus
            .topic_with(&dead_letter_topic(self.topic.name()), options)?;
        Ok(self.dlq.get_or_init(|| dlq))
    }

    /// Hands out up to `max` deliverable records; when there is none,
    /// returns when the next delayed one falls due.
    fn poll(self: &Arc<Self>, max: usize) -> Result<(Vec<LogDelivery>, Option<i64>)> {
        self.topic.log().check_open()?;
        let mut state = lock(&self.state);
        let now = now_ms();
        self.expire_leases(&mut state, now);
        let mut settled = false;
        let mut picked = Vec::new();
        while picked.len() < max {
            match self.pick_deliverable(&mut state, now, &mut settled) {
                Ok(Some(pick)) => picked.push(pick),
                Ok(None) => break,
                Err(e) => {
                    // Picked but not leased: make them available again.
                    for (offset, _) in picked {
                        state.ready.insert((now, offset));
                    }
                    return Err(e);
                }
            }
        }
        let (deliveries, due) = if picked.is_empty() {
            let due = [state.ready.first(), state.leases.first()]
                .into_iter()
                .flatten()
                .map(|(t, _)| *t)
                .min();
            drop(state);
            (Vec::new(), due)
        } else {
            (self.lease(state, picked, now)?, None)
        };
        if settled {
            self.after_settle()?;
        }
        Ok((deliveries, due))
    }

    /// The next record to hand out, with its bytes: dead-letters exhausted
    /// candidates and settles ones retention removed on the way (noting it
    /// in `settled`).
    fn pick_deliverable(
        &self,
        state: &mut GroupState,
        now: i64,
        settled: &mut bool,
    ) -> Result<Option<(u64, StoredRecord)>> {
        loop {
            let Some((offset, record)) = self.pick(state, now)? else {
                return Ok(None);
            };
            let entry = state.entries.get_mut(&offset).ok_or(Error::Closed)?;
            if entry.dead != DeadStep::No || entry.attempts >= self.options().retry.max_attempts {
                self.dead_letter(state, offset, record)?;
                *settled = true;
                continue;
            }
            let record = match record {
                Some(record) => record,
                None => match self.topic.log().read(offset)? {
                    Some(record) => record,
                    None => {
                        // Retention removed it before it could be redelivered.
                        self.settle_locked(state, offset);
                        *settled = true;
                        continue;
                    }
                },
            };
            return Ok(Some((offset, record)));
        }
    }

    /// The next candidate: a due redelivery first, else a new record.
    fn pick(&self, state: &mut GroupState, now: i64) -> Result<Option<(u64, Option<StoredRecord>)>> {
        if let Some(&(not_before, offset)) = state.ready.first()
            && not_before <= now
        {
            state.ready.pop_first();
            return Ok(Some((offset, None)));
        }
        let Some(record) = state.cursor.next()? else {
            return Ok(None);
        };
        let offset = record.offset();
        let entry = Entry {
            attempts: 0,
            status: Status::Available { not_before_ms: now },
            failures: vec![],
            dead: DeadStep::No,
        };
        state.entries.insert(offset, entry);
        Ok(Some((offset, Some(record))))
    }

    fn expire_leases(&self, state: &mut GroupState, now: i64) {
        while let Some(&(until, offset)) = state.leases.first()
            && until <= now
        {
            state.leases.pop_first();
            let attempts = state.entries.get(&offset).map_or(0, |e| e.attempts);
            let not_before_ms = now + self.backoff_ms(&mut state.rng, attempts);
            if let Some(entry) = state.entries.get_mut(&offset) {
                trace_event!(
                    info,
                    offset,
                    attempts = entry.attempts,
                    "lease expired; record will be redelivered"
                );
                push_failure(
                    &mut entry.failures,
                    Failure {
                        at_ms: now,
                        reason: "lease expired".into(),
                    },
                );
                entry.status = Status::Available { not_before_ms };
                state.ready.insert((not_before_ms, offset));
            }
        }
    }

    /// Leases `picked` records to new deliveries, persisting every
    /// attempt first with one state write.
    fn lease(
        self: &Arc<Self>,
        mut state: MutexGuard<'_, GroupState>,
        picked: Vec<(u64, StoredRecord)>,
        now: i64,
    ) -> Result<Vec<LogDelivery>> {
        let until_ms = now.saturating_add(self.lease_ms());
        let mut events = Vec::with_capacity(picked.len());
        let mut leased = Vec::with_capacity(picked.len());
        for (offset, record) in picked {
            let token = state.next_token;
            state.next_token += 1;
            let entry = state.entries.get_mut(&offset).ok_or(Error::Closed)?;
            entry.attempts += 1;
            entry.status = Status::Leased { token, until_ms };
            let attempt = entry.attempts;
            state.leases.insert((until_ms, offset));
            events.push(StateEvent::Delivered {
                offset,
                attempt,
                lease_until_ms: until_ms,
            });
            leased.push((offset, record, attempt, token));
        }
        drop(state);
        if let Err(e) = self.log.append(&events) {
            let mut state = lock(&self.state);
            for (offset, ..) in &leased {
                state.leases.remove(&(until_ms, *offset));
                if let Some(entry) = state.entries.get_mut(offset) {
                    entry.attempts -= 1;
                    entry.status = Status::Available { not_before_ms: now };
                    state.ready.insert((now, *offset));
                }
            }
            return Err(e);
        }
        let redelivered = leased.iter().filter(|(_, _, attempt, _)| *attempt > 1).count();
        self.redeliveries.fetch_add(redelivered as u64, Ordering::Relaxed);
        Ok(leased
            .into_iter()
            .map(|(_, record, attempt, token)| LogDelivery {
                group: self.clone(),
                record,
                attempt,
                token,
                settled: false,
            })
            .collect())
    }

    /// Takes `offset` out of the lease and ready sets, whatever its status.
    fn unschedule(state: &mut GroupState, offset: u64) {
        match state.entries.get(&offset).map(|e| e.status) {
            Some(Status::Leased { until_ms, .. }) => {
                state.leases.remove(&(until_ms, offset));
            }
            Some(Status::Available { not_before_ms }) => {
                state.ready.remove(&(not_before_ms, offset));
            }
            Some(Status::Done) | None => {}
        }
    }

    /// Marks `offset` Done in memory.
    fn settle_locked(&self, state: &mut GroupState, offset: u64) {
        Self::unschedule(state, offset);
        if let Some(entry) = state.entries.get_mut(&offset) {
            entry.status = Status::Done;
        }
    }

    /// Writes the record to the dead-letter topic (exactly once, see
    /// `dead_letter.rs`) and marks it Done; without a dead-letter topic the
    /// record is dropped. On failure the record stays, due to be
    /// dead-lettered again after backoff.
    fn dead_letter(&self, state: &mut GroupState, offset: u64, record: Option<StoredRecord>) -> Result<()> {
        let written = self
            .write_dead_letter(state, offset, record)
            .and_then(|()| self.log.append(&[StateEvent::DeadLettered(offset)]));
        if let Err(e) = written {
            trace_event!(warn, topic = self.topic.name(), group = %self.name, offset, error = %e, "dead letter failed; will retry");
            self.retry_dead_letter_later(state, offset);
            return Err(e);
        }
        self.settle_locked(state, offset);
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Appends the dead letter of `offset` unless an earlier try did: an
    /// intent persisted by that try says where to look.
    fn write_dead_letter(
        &self,
        state: &mut GroupState,
        offset: u64,
        record: Option<StoredRecord>,
    ) -> Result<()> {
        let record = match record {
            Some(record) => Some(record),
            None => self.topic.log().read(offset)?,
        };
        let (Some(record), true) = (record, self.options().dead_letter) else {
            return Ok(());
        };
        let dlq = self.dlq()?;
        let entry = state.entries.get_mut(&offset).ok_or(Error::Closed)?;
        match entry.dead {
            DeadStep::Intended { dlq_end } => {
                if contains_dead_letter(dlq, dlq_end, self.topic.name(), &self.name, offset)? {
                    return Ok(());
                }
            }
            DeadStep::No | DeadStep::Due => {
                let failure = entry.failures.last().cloned().unwrap_or_else(|| Failure {
                    at_ms: now_ms(),
                    reason: "attempts exhausted".into(),
                });
                let dlq_end = dlq.end_offset();
                self.log.append(&[StateEvent::DeadIntent {
                    offset,
                    dlq_end,
                    failure,
                }])?;
                entry.dead = DeadStep::Intended { dlq_end };
            }
        }
        let letter = DeadLetter {
            topic: self.topic.name(),
            group: &self.name,
            record: &record,
            attempts: entry.attempts,
            failures: &entry.failures,
        };
        let _dlq_offset = letter.publish_with(|record| dlq.publish(record))?;
        trace_event!(warn, topic = self.topic.name(), group = %self.name, offset, dlq_offset = _dlq_offset, attempts = entry.attempts, "record dead-lettered");
        Ok(())
    }

    /// Leaves `offset` Available, due to be dead-lettered after backoff.
    fn retry_dead_letter_later(&self, state: &mut GroupState, offset: u64) {
        Self::unschedule(state, offset);
        let attempts = state.entries.get(&offset).map_or(0, |e| e.attempts);
        let not_before_ms = now_ms().saturating_add(self.backoff_ms(&mut state.rng, attempts));
        if let Some(entry) = state.entries.get_mut(&offset) {
            if entry.dead == DeadStep::No {
                entry.dead = DeadStep::Due;
            }
            entry.status = Status::Available { not_before_ms };
            state.ready.insert((not_before_ms, offset));
        }
    }

    /// Checks that `token` still owns `offset`: leased to it, or released
    /// by lease expiry and not handed out since.
    fn owns(state: &GroupState, offset: u64, token: u64, attempt: u32) -> Result<()> {
        let owned = match state.entries.get(&offset) {
            Some(Entry {
                status: Status::Leased { token: t, .. },
                ..
            }) => *t == token,
            Some(Entry {
                status: Status::Available { .. },
                attempts,
                ..
            }) => *attempts == attempt,
            _ => false,
        };
        match owned {
            true => Ok(()),
            false => Err(Error::LeaseExpired { offset }),
        }
    }

    fn ack(&self, offset: u64, token: u64, attempt: u32) -> Result<()> {
        {
            let mut state = lock(&self.state);
            Self::owns(&state, offset, token, attempt)?;
            self.settle_locked(&mut state, offset);
        }
        self.log.append(&[StateEvent::Acked(offset)])?;
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.after_settle()
    }

    fn release(
        &self,
        offset: u64,
        token: u64,
        attempt: u32,
        reason: &str,
        delay: Option<Duration>,
    ) -> Result<()> {
        let now = now_ms();
        let failure = Failure {
            at_ms: now,
            reason: reason.to_owned(),
        };
        let mut state = lock(&self.state);
        Self::owns(&state, offset, token, attempt)?;
        let exhausted = attempt >= self.options().retry.max_attempts;
        let entry = state.entries.get_mut(&offset).ok_or(Error::Closed)?;
        push_failure(&mut entry.failures, failure.clone());
        if exhausted {
            self.dead_letter(&mut state, offset, None)?;
            drop(state);
            return self.after_settle();
        }
        self.settle_locked(&mut state, offset);
        let delay_ms = match delay {
            Some(delay) => i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            None => self.backoff_ms(&mut state.rng, attempt),
        };
        let not_before_ms = now.saturating_add(delay_ms);
        if let Some(entry) = state.entries.get_mut(&offset) {
            entry.status = Status::Available { not_before_ms };
        }
        state.ready.insert((not_before_ms, offset));
        drop(state);
        self.log.append(&[StateEvent::Released {
            offset,
            not_before_ms,
            failure,
        }])?;
        self.topic.wake_waiters();
        Ok(())
    }

    fn reject(&self, offset: u64, token: u64, attempt: u32, reason: &str) -> Result<()> {
        let mut state = lock(&self.state);
        Self::owns(&state, offset, token, attempt)?;
        let entry = state.entries.get_mut(&offset).ok_or(Error::Closed)?;
        push_failure(
            &mut entry.failures,
            Failure {
                at_ms: now_ms(),
                reason: reason.to_owned(),
            },
        );
        self.dead_letter(&mut state, offset, None)?;
        drop(state);
        self.after_settle()
    }

    fn extend_lease(&self, offset: u64, token: u64, attempt: u32, by: Duration) -> Result<()> {
        let mut state = lock(&self.state);
        Self::owns(&state, offset, token, attempt)?;
        let until_ms = now_ms().saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
        Self::unschedule(&mut state, offset);
        let Some(entry) = state.entries.get_mut(&offset) else {
            return Err(Error::LeaseExpired { offset });
        };
        entry.status = Status::Leased { token, until_ms };
        state.leases.insert((until_ms, offset));
        Ok(())
    }

    /// Prunes settled entries below the low watermark, reports it to the
    /// topic for retention and snapshots the state when it is due.
    fn after_settle(&self) -> Result<()> {
        let floor = {
            let mut state = lock(&self.state);
            while let Some(entry) = state.entries.first_entry() {
                if entry.get().status != Status::Done {
                    break;
                }
                entry.remove();
            }
            let floor = state
                .entries
                .keys()
                .next()
                .copied()
                .unwrap_or_else(|| state.cursor.offset());
            let report = state.reported_floor.is_none_or(|reported| floor > reported);
            if report {
                state.reported_floor = Some(floor);
            }
            // Written under the state lock: an event whose change the
            // snapshot misses could otherwise be appended before it and be
            // erased by it on replay (an ack lost, a record redelivered).
            if self.log.wants_snapshot(state.entries.len()) {
                self.log.write_snapshot(&self.snapshot(&state))?;
            }
            report.then_some(floor)
        };
        if let Some(floor) = floor {
            self.topic
                .set_position(ConsumerId::Group(self.name.clone()), floor)?;
        }
        Ok(())
    }

    fn snapshot(&self, state: &GroupState) -> StateEvent {
        let entries = state
            .entries
            .iter()
            .map(|(offset, entry)| EntryState {
                offset: *offset,
                attempts: entry.attempts,
                not_before_ms: match entry.status {
                    Status::Available { not_before_ms } => not_before_ms,
                    _ => 0,
                },
                done: entry.status == Status::Done,
                failures: entry.failures.clone(),
            })
            .collect();
        StateEvent::Snapshot {
            next_offset: state.cursor.offset(),
            entries,
        }
    }

    fn stats(&self) -> Result<GroupStats> {
        let (low_watermark, in_flight, waiting) = {
            let state = lock(&self.state);
            let low = state
                .entries
                .keys()
                .next()
                .copied()
                .unwrap_or_else(|| state.cursor.offset());
            (low, state.leases.len(), state.ready.len())
        };
        let end_offset = self.topic.end_offset();
        let oldest = match low_watermark < end_offset {
            true => self.topic.log().read(low_watermark)?,
            false => None,
        };
        let oldest_unacked_age =
            oldest.map(|r| Duration::from_millis(now_ms().saturating_sub(r.timestamp()).max(0) as u64));
        Ok(GroupStats {
            end_offset,
            low_watermark,
            lag: end_offset.saturating_sub(low_watermark),
            in_flight,
            waiting,
            oldest_unacked_age,
            redeliveries: self.redeliveries.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        })
    }
}

/// A record leased to one receiver of a [`LogGroup`] (the `Log` variant of
/// [`crate::Delivery`]); dropping it unsettled releases it for redelivery
/// (after backoff), like a nack.
#[derive(Debug)]
pub(crate) struct LogDelivery {
    group: Arc<GroupInner>,
    record: StoredRecord,
    attempt: u32,
    token: u64,
    settled: bool,
}

impl LogDelivery {
    /// The record.
    pub(crate) fn record(&self) -> &StoredRecord {
        &self.record
    }

    /// Which delivery of this record this is, from 1.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Completes the record: it is never delivered again (once the ack is
    /// durable). Fails with [`Error::LeaseExpired`] if the lease ran out and
    /// the record went to another receiver.
    pub(crate) fn ack(mut self) -> Result<()> {
        self.settled = true;
        self.group.ack(self.record.offset(), self.token, self.attempt)
    }

    /// Fails this attempt: the record is redelivered after the retry
    /// policy's backoff, or dead-lettered if attempts are exhausted.
    pub(crate) fn nack(mut self, reason: &str) -> Result<()> {
        self.settled = true;
        self.group
            .release(self.record.offset(), self.token, self.attempt, reason, None)
    }

    /// Like [`LogDelivery::nack`], with an explicit delay instead of the backoff.
    pub(crate) fn nack_with_delay(mut self, reason: &str, delay: Duration) -> Result<()> {
        self.settled = true;
        self.group.release(
            self.record.offset(),
            self.token,
            self.attempt,
            reason,
            Some(delay),
        )
    }

    /// Sends the record straight to the dead-letter topic, without retries.
    pub(crate) fn reject(mut self, reason: &str) -> Result<()> {
        self.settled = true;
        self.group
            .reject(self.record.offset(), self.token, self.attempt, reason)
    }

    /// Extends the lease to `by` from now.
    pub(crate) fn extend_lease(&mut self, by: Duration) -> Result<()> {
        self.group
            .extend_lease(self.record.offset(), self.token, self.attempt, by)
    }
}

impl Drop for LogDelivery {
    fn drop(&mut self) {
        if !self.settled {
            let reason = "delivery dropped without ack";
            // Best effort: if this fails, the lease expires instead.
            let _ = self
                .group
                .release(self.record.offset(), self.token, self.attempt, reason, None);
        }
    }
}

/// Whether `dlq` holds, at or after `from`, the dead letter of `offset`
/// from `topic` and `group`.
fn contains_dead_letter(dlq: &LogTopic, from: u64, topic: &str, group: &str, offset: u64) -> Result<bool> {
    let mut cursor = dlq.log().cursor(Position::Offset(from))?;
    while let Some(record) = cursor.next()? {
        if is_dead_letter_of(&record, topic, group, offset) {
            return Ok(true);
        }
    }
    Ok(false)
}
