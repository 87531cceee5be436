//! The embedded consumer group (the `Log` variant of [`crate::Group`] and
//! [`crate::Delivery`]): a driver around the pure [`GroupMachine`]
//! (`group_machine.rs`, which states the delivery rules and invariants).
//! The driver holds the machine under the state mutex, runs one command
//! with `now` from the clock, releases the lock and persists the events the
//! command returned; it reads records, writes dead letters, reports the low
//! watermark to the topic for retention and writes snapshots.
//!
//! Time: everything here that reads the time reads the bus's clock (the
//! topic log's, `crate::clock`): the `now` of every command (lease ends,
//! expiry, nack delays, backoff, failure times), receive deadlines, stats
//! ages. A receive that finds nothing waits for activity on the topic or
//! for the machine's next due time (a lease end or a delayed record),
//! whichever is first: `recv_batch` on the clock (a simulated clock jumps
//! there), `recv_async` on a wake-up from `wakeup.rs` (on a simulated
//! clock it jumps to the due time and polls again at once).
//!
//! What runs under the state lock, and why:
//! - the machine's commands, and reads of the topic through the group's
//!   cursor (memory-mapped, no sync) while acquiring;
//! - snapshots: every event is applied to the machine under the lock and
//!   persisted after it, so a snapshot written under the lock either holds
//!   an event's change or precedes the event in the log; written outside,
//!   a snapshot could follow an event it misses and erase it on replay (an
//!   ack lost, a record redelivered).
//!
//! Everything else runs outside it: persisting `Delivered` (before the
//! deliveries are returned: attempts are durable before hand-out), acks and
//! releases, and the whole dead letter (intent, dead-letter append,
//! outcome). A record being dead-lettered is claimed by the machine, so no
//! other call can lease, settle or dead-letter it meanwhile. The
//! dead-letter topic is opened when the group opens (outside any lock); if
//! that fails the group still opens and the first dead letter tries again.
//!
//! Delivery is at-least-once: an ack lost in a crash, or a lease that
//! expires while the receiver is still working, leads to a redelivery.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use crate::backend::{DeliveryBackend, GroupBackend, TopicBackend};
use crate::clock::Clock;
use crate::embedded::{LogTopic, PositionSlot, record_age, seek_offset};
use crate::error::{Error, Result};
use crate::log::{Async, Block, Cursor, Log, Position, Wait, ready};
use crate::patterns::{Acquired, Claim, GroupMachine, Lease, Nacked, Rules, Source};
use crate::patterns::{
    DEAD_LETTER_HEADROOM_BYTES, DeadLetter, GroupOptions, GroupStats, OnExpiry, StartAt, dead_letter_topic,
    is_dead_letter_of, is_redriven, key_hash, not_before,
};
use crate::record::StoredRecord;
use crate::state::ConsumerId;
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
    /// The group's name, as the topic tracks its position.
    consumer: ConsumerId,
    /// Replaced when the group is asked for again with other options.
    options: RwLock<Arc<GroupOptions>>,
    log: Arc<StateLog>,
    state: Mutex<GroupState>,
    dlq: OnceLock<LogTopic>,
    redeliveries: AtomicU64,
    acked: AtomicU64,
    dead_lettered: AtomicU64,
    /// Its low watermark in the topic's table of positions.
    position: PositionSlot,
}

#[derive(Debug)]
struct GroupState {
    machine: GroupMachine,
    /// Reads the records the machine has not admitted yet.
    cursor: Cursor,
    /// Low watermark last reported to the topic; the first is always
    /// reported, so a new group holds back `Interest`/`WorkQueue` retention
    /// from the start, not only once it has acked something.
    reported_floor: Option<u64>,
    /// Records a receive leased beyond what it returned
    /// (`GroupOptions::prefetch`), their `Delivered` persisted, for the
    /// next receives: handed out while still leased to their lease.
    prefetched: VecDeque<(Lease, StoredRecord)>,
    /// The rules of the group's options, for what is decided under this
    /// lock alone (handing out kept records): `reconfigure` keeps them in
    /// step, so such a receive reads no options.
    rules: Rules,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn rules_of(options: &GroupOptions) -> Rules {
    Rules {
        lease_ms: millis(options.lease),
        retry: options.retry,
    }
}

/// The topic as the machine sees it while acquiring: new records come from
/// the group's cursor, and every record read is kept for the hand-out. The
/// machine leases a new record right after reading it and a redelivery
/// right after finding it held, so `read` lines up with the leases.
struct TopicRecords<'a> {
    cursor: &'a mut Cursor,
    log: &'a Log,
    read: &'a mut Vec<StoredRecord>,
}

impl Source for TopicRecords<'_> {
    fn next_new(&mut self) -> Result<Option<u64>> {
        let Some(record) = self.cursor.next()? else {
            return Ok(None);
        };
        let offset = record.offset();
        self.read.push(record);
        Ok(Some(offset))
    }

    fn holds(&mut self, offset: u64) -> Result<bool> {
        let Some(record) = self.log.read(offset)? else {
            return Ok(false);
        };
        self.read.push(record);
        Ok(true)
    }

    fn not_before(&self) -> Option<i64> {
        self.read.last().and_then(not_before)
    }

    fn put_back(&mut self) {
        self.read.pop();
    }

    fn key(&self) -> Option<u64> {
        self.read.last().and_then(key_hash)
    }

    fn redriven(&self) -> bool {
        self.read.last().is_some_and(is_redriven)
    }
}

/// Deliveries leased by one poll and not yet handed out.
#[derive(Default)]
struct Batch {
    /// The leases and their `Delivered` events.
    acquired: Acquired,
    /// The leased records, in the order of the leases.
    records: Vec<StoredRecord>,
}

/// The most records a batch kept as a thread's spare has room for (a few
/// KiB): larger ones are freed.
const SPARE_BATCH_RECORDS: usize = 64;

thread_local! {
    /// This thread's last batch, emptied, its vectors' buffers kept: a
    /// poll takes it instead of allocating three vectors.
    static SPARE_BATCH: std::cell::Cell<Batch> = std::cell::Cell::new(Batch::default());
}

impl Batch {
    /// An empty batch with room for `max` (at most 1,024) records: this
    /// thread's spare one if it has it.
    #[inline]
    fn with_capacity(max: usize) -> Batch {
        let mut batch = SPARE_BATCH.take();
        let room = max.min(1024);
        batch.acquired.leases.reserve(room);
        batch.acquired.events.reserve(room);
        batch.records.reserve(room);
        batch
    }

    /// Keeps this batch's buffers (emptied) as the thread's spare, unless
    /// they grew past [`SPARE_BATCH_RECORDS`].
    #[inline]
    fn recycle(mut self) {
        if self.records.capacity() <= SPARE_BATCH_RECORDS {
            self.acquired.leases.clear();
            self.acquired.events.clear();
            self.acquired.passed = false;
            self.records.clear();
            SPARE_BATCH.set(self);
        }
    }
}

impl LogGroup {
    pub(crate) fn open(topic: LogTopic, name: &str, options: GroupOptions) -> Result<LogGroup> {
        options.validate_for(topic.name())?;
        let consumer = ConsumerId::Group(name.to_owned());
        let (log, events) = topic.open_state(&consumer)?;
        let fresh = events.is_empty();
        let start = match fresh {
            true => topic.log().cursor(options.start.into())?.offset(),
            false => 0,
        };
        let machine = GroupMachine::replay(&events, start, fastrand::Rng::new())
            .ordered(options.ordering, options.on_dead_letter);
        let cursor = topic.log().cursor(Position::Offset(machine.next_offset()))?;
        let state = GroupState {
            machine,
            cursor,
            reported_floor: None,
            prefetched: VecDeque::new(),
            rules: rules_of(&options),
        };
        let inner = GroupInner {
            topic,
            consumer,
            options: RwLock::new(Arc::new(options)),
            log,
            state: Mutex::new(state),
            dlq: OnceLock::new(),
            redeliveries: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            position: PositionSlot::default(),
        };
        inner.recover(fresh)?;
        inner.open_dlq();
        Ok(LogGroup {
            inner: Arc::new(inner),
        })
    }

    /// Applies `options`' lease, retry policy and dead-letter setting to
    /// the group (every handle, from the next decision on); `start` only
    /// applies when a group is created; `ordering` and `on_dead_letter`
    /// may not change.
    pub(crate) fn reconfigure(&self, options: GroupOptions) -> Result<()> {
        options.validate_for(self.inner.topic.name())?;
        let open = self.inner.options();
        if (options.ordering, options.on_dead_letter) != (open.ordering, open.on_dead_letter) {
            return Err(Error::InvalidArgument(format!(
                "group {} is open with {:?} and {:?}: they cannot change until every handle is dropped",
                self.inner.consumer.name(),
                open.ordering,
                open.on_dead_letter
            )));
        }
        let rules = rules_of(&options);
        *self.inner.options.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(options);
        lock(&self.inner.state).rules = rules;
        self.inner.open_dlq();
        Ok(())
    }
}

impl GroupBackend for LogGroup {
    type Delivery = LogDelivery;

    fn name(&self) -> &str {
        self.inner.consumer.name()
    }

    fn recv(&self, timeout: Duration) -> Result<Option<LogDelivery>> {
        receive_one(|spare| self.receive(1, timeout, spare))
    }

    fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<LogDelivery>> {
        self.receive(max, timeout, Vec::new())
    }

    fn try_recv(&self) -> Result<Option<LogDelivery>> {
        receive_one(|spare| Ok(self.inner.poll(1, spare)?.0))
    }

    fn try_recv_batch(&self, max: usize) -> Result<Vec<LogDelivery>> {
        Ok(self.inner.poll(max, Vec::new())?.0)
    }

    async fn recv_async(&self) -> Result<LogDelivery> {
        loop {
            let listener = self.inner.topic.log().activity().listen();
            // Inline (blocking) on a simulated clock.
            let (mut deliveries, next_due_ms) = match self.inner.clock().is_simulated() {
                true => self.inner.poll_in(1, Block, Vec::new()).await?,
                false => self.inner.poll_in(1, Async, Vec::new()).await?,
            };
            if let Some(delivery) = deliveries.pop() {
                return Ok(delivery);
            }
            if let Some(due) = next_due_ms {
                let clock = self.inner.clock();
                if clock.jump_to(clock.instant_at_ms(due)) {
                    continue; // a simulated clock: it is due now
                }
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

    fn stats(&self) -> Result<GroupStats> {
        self.inner.stats()
    }

    fn seek(&self, to: StartAt) -> Result<u64> {
        self.inner.seek(to)
    }

    fn on_expiry(&self) -> OnExpiry {
        self.inner.options().on_expiry
    }

    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }
}

impl LogGroup {
    /// Up to `max` deliveries, added to `into` (empty), waiting up to
    /// `timeout` for the first.
    fn receive(&self, max: usize, timeout: Duration, mut into: Vec<LogDelivery>) -> Result<Vec<LogDelivery>> {
        // A receive that does not wait reads no clock and registers no
        // waiter.
        if timeout.is_zero() {
            return Ok(self.inner.poll(max, into)?.0);
        }
        let clock = self.inner.clock();
        let deadline = clock.now() + timeout;
        loop {
            let waiter = self.inner.topic.log().activity().waiter();
            let (deliveries, next_due_ms) = self.inner.poll(max, into)?;
            if !deliveries.is_empty() || max == 0 || clock.now() >= deadline {
                return Ok(deliveries);
            }
            into = deliveries;
            let wake = next_due_ms.map_or(deadline, |due| deadline.min(clock.instant_at_ms(due)));
            waiter.wait_on(clock, wake);
        }
    }
}

/// Runs `receive` (of one record) with this thread's spare vector of
/// deliveries, and keeps the vector, emptied, for the next: a receive of
/// one record allocates none.
fn receive_one(
    receive: impl FnOnce(Vec<LogDelivery>) -> Result<Vec<LogDelivery>>,
) -> Result<Option<LogDelivery>> {
    thread_local! {
        static SPARE_DELIVERIES: std::cell::Cell<Vec<LogDelivery>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut deliveries = receive(SPARE_DELIVERIES.take())?;
    let delivery = deliveries.pop();
    if deliveries.is_empty() {
        SPARE_DELIVERIES.set(deliveries);
    }
    Ok(delivery)
}

impl GroupInner {
    /// Finishes opening from the replayed state: deliveries open at the
    /// crash count as failed; records with a dead-letter intent are
    /// resolved when next picked.
    fn recover(&self, fresh: bool) -> Result<()> {
        let released = lock(&self.state).machine.recover(self.now_ms(), &self.rules());
        if fresh {
            self.log.write_snapshot(&lock(&self.state).machine.snapshot())?;
        }
        if !released.is_empty() {
            self.log.append(&released)?;
        }
        self.after_settle()
    }

    /// The bus's clock (`crate::clock`): every `now` given to the machine,
    /// receive deadlines and waits, stats ages.
    fn clock(&self) -> &Clock {
        self.topic.log().clock()
    }

    fn now_ms(&self) -> i64 {
        self.clock().now_ms()
    }

    fn options(&self) -> Arc<GroupOptions> {
        self.options.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn rules(&self) -> Rules {
        rules_of(&self.options())
    }

    /// Opens the dead-letter topic ahead of the first dead letter, if the
    /// group writes dead letters. A failure is left for that dead letter to
    /// meet (and return): it must not fail opening the group.
    fn open_dlq(&self) {
        if self.options().dead_letter {
            let _ = self.dlq();
        }
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

    /// Hands out up to `max` deliverable records, dead-lettering exhausted
    /// ones met on the way; when there is none, returns when the next
    /// delayed one falls due.
    fn poll(self: &Arc<Self>, max: usize, into: Vec<LogDelivery>) -> Result<(Vec<LogDelivery>, Option<i64>)> {
        ready(self.poll_in(max, Block, into))
    }

    /// [`GroupInner::poll`], waiting for syncs as `wait` says: records
    /// prefetched by an earlier receive first, then leases of its own, as
    /// many as the prefetch says, the ones it does not return kept. A
    /// future dropped before it completed hands nothing out: its leases are
    /// taken back (`Leasing`), as after a failure, and the records it took
    /// or leased for hand-out are kept again (`Taken`).
    #[inline]
    async fn poll_in<W: Wait>(
        self: &Arc<Self>,
        max: usize,
        wait: W,
        into: Vec<LogDelivery>,
    ) -> Result<(Vec<LogDelivery>, Option<i64>)> {
        self.topic.log().check_open()?;
        let mut taken = Taken {
            group: self,
            deliveries: into,
        };
        self.take_prefetched(max, &mut taken.deliveries);
        if max > 0 && taken.deliveries.len() == max {
            return Ok((taken.hand_over(), None));
        }
        let options = self.options();
        let rules = rules_of(&options);
        let want = max - taken.deliveries.len();
        // A prefetched record's attempt counts even if it is never handed
        // out: not when it would be the only one, nor for a receive of none.
        let lease = match want > 0 && options.retry.max_attempts > 1 {
            true => want.max(options.prefetch),
            false => want,
        };
        let mut leasing = Leasing {
            group: self,
            batch: Batch::with_capacity(lease),
        };
        let mut settled = false;
        let next_due = loop {
            let (claim, next_due) = self.acquire(lease, &rules, &mut leasing.batch)?;
            let Some(claim) = claim else {
                break next_due;
            };
            settled = true;
            self.dead_letter_in(claim, wait).await?;
        };
        settled |= leasing.batch.acquired.passed;
        if !leasing.batch.records.is_empty() {
            // Attempts are durable before hand-out: one state write.
            self.log.append_in(&leasing.batch.acquired.events, wait).await?;
            let mut batch = leasing.into_batch();
            self.hand_out(&mut batch, want, &mut taken.deliveries);
            batch.recycle();
        }
        if settled {
            self.after_settle()?;
        }
        Ok((taken.hand_over(), next_due))
    }

    /// Adds to `deliveries` up to `max` records an earlier receive
    /// prefetched, each still leased to its lease; one with less than half
    /// its lease left gets a fresh one. Those whose lease ran out (they are
    /// due again) are dropped.
    fn take_prefetched(self: &Arc<Self>, max: usize, deliveries: &mut Vec<LogDelivery>) {
        let mut state = lock(&self.state);
        if state.prefetched.is_empty() {
            return;
        }
        let rules = state.rules;
        deliveries.reserve(max.min(state.prefetched.len()));
        // Only checks whether leases ran out: the coarse time serves (a
        // lease ends up to a tick late here, never early); a fresh lease
        // starts from the precise time.
        let now = self.clock().tick_ms();
        state.machine.expire(now, &rules);
        while deliveries.len() < max {
            let Some((lease, record)) = state.prefetched.pop_front() else {
                break;
            };
            let Some(until_ms) = state.machine.lease_end(&lease) else {
                continue;
            };
            if until_ms.saturating_sub(now) < rules.lease_ms / 2 {
                // Still its lease: extending it cannot fail.
                let _ = state
                    .machine
                    .extend(&lease, self.now_ms().saturating_add(rules.lease_ms));
            }
            deliveries.push(self.delivery(lease, record));
        }
    }

    /// Runs the machine's acquire under the lock, adding the leases and
    /// their records to `batch` until it holds `max`; returns the record to
    /// dead-letter it stopped at and when the next one falls due.
    #[inline]
    fn acquire(&self, max: usize, rules: &Rules, batch: &mut Batch) -> Result<(Option<Claim>, Option<i64>)> {
        let mut state = lock(&self.state);
        let GroupState { machine, cursor, .. } = &mut *state;
        let mut records = TopicRecords {
            cursor,
            log: self.topic.log(),
            read: &mut batch.records,
        };
        let dead = machine.acquire(self.now_ms(), max, rules, &mut records, &mut batch.acquired)?;
        let leases = &batch.acquired.leases;
        let lined_up = leases.len() == batch.records.len()
            && (leases.iter().zip(&batch.records)).all(|(l, r)| l.offset == r.offset());
        if !lined_up {
            return Err(Error::Closed);
        }
        machine.pass_to(cursor.offset());
        Ok((dead, machine.next_due()))
    }

    /// Hands out the first `want` records of `batch`, its attempts
    /// persisted, into `deliveries`, and keeps the rest for the next
    /// receives; leaves `batch` empty.
    #[inline]
    fn hand_out(self: &Arc<Self>, batch: &mut Batch, want: usize, deliveries: &mut Vec<LogDelivery>) {
        let mut leased = batch.acquired.leases.drain(..).zip(batch.records.drain(..));
        deliveries.extend((leased.by_ref().take(want)).map(|(lease, record)| self.delivery(lease, record)));
        if leased.len() > 0 {
            lock(&self.state).prefetched.extend(leased);
        }
    }

    fn delivery(self: &Arc<Self>, lease: Lease, record: StoredRecord) -> LogDelivery {
        LogDelivery {
            group: self.clone(),
            record,
            lease,
            settled: false,
        }
    }

    /// Counts the redeliveries among `leases`, handed out now.
    fn count_redeliveries<'a>(&self, leases: impl Iterator<Item = &'a Lease>) {
        let redelivered = leases.filter(|lease| lease.attempt > 1).count();
        if redelivered > 0 {
            self.redeliveries.fetch_add(redelivered as u64, Ordering::Relaxed);
        }
    }

    /// Writes the claimed record to the dead-letter topic (exactly once,
    /// see `dead_letter.rs`) and marks it Done, waiting for syncs as `wait`
    /// says; without a dead-letter topic the record is dropped. On failure,
    /// or if the future is dropped before it completed, the record stays,
    /// due to be dead-lettered again after backoff, once.
    async fn dead_letter_in<W: Wait>(&self, claim: Claim, wait: W) -> Result<()> {
        let unfinished = UnfinishedDeadLetter {
            group: self,
            offset: claim.offset,
        };
        self.write_dead_letter(claim, wait).await?;
        self.confirm_dead_letter(claim.offset, wait).await?;
        std::mem::forget(unfinished);
        Ok(())
    }

    /// Appends the dead letter of the claimed record unless an earlier
    /// try did: an intent persisted by that try says where to look.
    async fn write_dead_letter<W: Wait>(&self, claim: Claim, wait: W) -> Result<()> {
        let offset = claim.offset;
        let record = self.topic.log().read(offset)?;
        let (Some(record), true) = (record, self.options().dead_letter) else {
            return Ok(());
        };
        let dlq = self.dlq()?;
        match claim.intended {
            Some(dlq_end)
                if contains_dead_letter(dlq, dlq_end, self.topic.name(), self.consumer.name(), offset)? =>
            {
                return Ok(());
            }
            Some(_) => {}
            None => {
                let intent = lock(&self.state)
                    .machine
                    .intend(offset, dlq.end_offset(), self.now_ms());
                self.log.append_in(&[intent], wait).await?;
            }
        }
        let (attempts, failures) = lock(&self.state).machine.letter(offset).ok_or(Error::Closed)?;
        let letter = DeadLetter {
            topic: self.topic.name(),
            group: self.consumer.name(),
            record: &record,
            attempts,
            failures: &failures,
        };
        let written = letter.publish_with(|record| dlq.log().write(std::slice::from_ref(record)));
        let written = wait.after_write(dlq.log(), written, |written| written).await?;
        let _dlq_offset = written.start;
        trace_event!(warn, topic = self.topic.name(), group = %self.consumer.name(), offset, dlq_offset = _dlq_offset, attempts, "record dead-lettered");
        Ok(())
    }

    /// Marks the dead-lettered record Done, then persists that. Like an
    /// ack, a failure to persist leaves it Done in memory: the persisted
    /// intent (or its exhausted attempts) settles it again after a reopen.
    async fn confirm_dead_letter<W: Wait>(&self, offset: u64, wait: W) -> Result<()> {
        let events = {
            let machine = &mut lock(&self.state).machine;
            let done = machine.dead_letter_done(offset);
            let mut events = machine.take_owed();
            events.extend(done);
            events
        };
        if !events.is_empty() {
            self.log.append_in(&events, wait).await?;
        }
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    #[inline]
    async fn ack<W: Wait>(&self, lease: &Lease, wait: W) -> Result<()> {
        let (mut owed, acked) = {
            let machine = &mut lock(&self.state).machine;
            let acked = machine.ack(lease)?;
            (machine.take_owed(), acked)
        };
        match owed.is_empty() {
            true => self.log.append_in(&[acked], wait).await?,
            false => {
                owed.push(acked);
                self.log.append_in(&owed, wait).await?
            }
        }
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.after_settle()
    }

    #[inline]
    async fn release<W: Wait>(
        &self,
        lease: &Lease,
        reason: &str,
        delay: Option<Duration>,
        wait: W,
    ) -> Result<()> {
        let rules = self.rules();
        let nacked =
            lock(&self.state)
                .machine
                .nack(lease, reason, delay.map(millis), self.now_ms(), &rules)?;
        match nacked {
            Nacked::Released(released) => {
                self.log.append_in(&[released], wait).await?;
                self.topic.wake_waiters();
                Ok(())
            }
            Nacked::DeadLetter(claim) => {
                self.dead_letter_in(claim, wait).await?;
                self.after_settle()
            }
        }
    }

    #[inline]
    async fn reject<W: Wait>(&self, lease: &Lease, reason: &str, wait: W) -> Result<()> {
        let claim = lock(&self.state).machine.reject(lease, reason, self.now_ms())?;
        self.dead_letter_in(claim, wait).await?;
        self.after_settle()
    }

    fn extend_lease(&self, lease: &Lease, by: Duration) -> Result<()> {
        let until_ms = self.now_ms().saturating_add(millis(by));
        lock(&self.state).machine.extend(lease, until_ms)
    }

    /// Moves the group to `to` (see [`GroupMachine::seek`]): the snapshot
    /// that says so is written under the state lock, like every snapshot,
    /// and applied once it is durable; the cursor follows, and the topic
    /// learns the new position (a seek back holds retention back again,
    /// as far as the records are still there).
    fn seek(&self, to: StartAt) -> Result<u64> {
        let log = self.topic.log();
        let offset = seek_offset(log, to)?;
        {
            let mut state = lock(&self.state);
            let event = state.machine.seek(offset)?;
            self.log.write_snapshot(std::slice::from_ref(&event))?;
            state.machine.apply(&event);
            // Events owed (a parked key's dead letter) are of records the
            // snapshot forgets: written after it, one would settle a
            // record admitted again since.
            drop(state.machine.take_owed());
            state.prefetched.clear();
            state.cursor = log.cursor(Position::Offset(offset))?;
            state.reported_floor = Some(offset);
        }
        self.topic.set_position(&self.consumer, &self.position, offset)?;
        self.topic.wake_waiters();
        Ok(offset)
    }

    /// Prunes settled entries below the low watermark, reports it to the
    /// topic for retention and snapshots the state when it is due.
    fn after_settle(&self) -> Result<()> {
        let floor = {
            let mut state = lock(&self.state);
            let floor = state.machine.prune();
            let report = state.reported_floor.is_none_or(|reported| floor > reported);
            if report {
                state.reported_floor = Some(floor);
            }
            // Under the state lock: see the module doc. A failed snapshot
            // fails nothing already settled (its event is durable): the
            // snapshot stays due, and a failed sync latched the state log,
            // so the group's next operation reports it.
            if self.log.wants_snapshot(state.machine.len())
                && let Err(_error) = self.log.write_snapshot(&state.machine.snapshot())
            {
                trace_event!(error, topic = self.topic.name(), group = %self.consumer.name(), error = %_error, "state snapshot failed");
            }
            report.then_some(floor)
        };
        if let Some(floor) = floor {
            self.topic.set_position(&self.consumer, &self.position, floor)?;
        }
        Ok(())
    }

    fn stats(&self) -> Result<GroupStats> {
        let (low_watermark, in_flight, waiting) = {
            let state = lock(&self.state);
            let machine = &state.machine;
            (machine.low_watermark(), machine.in_flight(), machine.waiting())
        };
        let end_offset = self.topic.end_offset();
        let oldest_unacked_age = record_age(self.topic.log(), low_watermark, self.now_ms())?;
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
    lease: Lease,
    settled: bool,
}

impl DeliveryBackend for LogDelivery {
    fn record(&self) -> &StoredRecord {
        &self.record
    }

    fn attempt(&self) -> u32 {
        self.lease.attempt
    }

    fn ack(mut self) -> Result<()> {
        ready(self.ack_in(Block))
    }

    fn nack(mut self, reason: &str) -> Result<()> {
        ready(self.nack_in(reason, None, Block))
    }

    fn nack_with_delay(mut self, reason: &str, delay: Duration) -> Result<()> {
        ready(self.nack_in(reason, Some(delay), Block))
    }

    fn reject(mut self, reason: &str) -> Result<()> {
        ready(self.reject_in(reason, Block))
    }

    async fn ack_async(mut self) -> Result<()> {
        self.ack_in(Async).await
    }

    async fn nack_async(mut self, reason: &str, delay: Option<Duration>) -> Result<()> {
        self.nack_in(reason, delay, Async).await
    }

    async fn reject_async(mut self, reason: &str) -> Result<()> {
        self.reject_in(reason, Async).await
    }

    fn extend_lease(&mut self, by: Duration) -> Result<()> {
        self.group.extend_lease(&self.lease, by)
    }
}

impl LogDelivery {
    /// Drops the delivery without releasing it: its lease is left to the
    /// next open's recovery, as that of a delivery dropped after the bus
    /// closed (for the deliveries a closing owner held for joined
    /// processes).
    #[cfg(feature = "processes")]
    pub(crate) fn abandon(mut self) {
        self.settled = true;
    }

    // Each settles the delivery where it lies: the blocking calls poll
    // these once in place; the async ones move the delivery into their
    // future first and settle it on its first poll (dropped unpolled, the
    // delivery is released as a dropped delivery is).

    #[inline]
    async fn ack_in<W: Wait>(&mut self, wait: W) -> Result<()> {
        self.settled = true;
        self.group.ack(&self.lease, wait).await
    }

    #[inline]
    async fn nack_in<W: Wait>(&mut self, reason: &str, delay: Option<Duration>, wait: W) -> Result<()> {
        self.settled = true;
        self.group.release(&self.lease, reason, delay, wait).await
    }

    #[inline]
    async fn reject_in<W: Wait>(&mut self, reason: &str, wait: W) -> Result<()> {
        self.settled = true;
        self.group.reject(&self.lease, reason, wait).await
    }
}

impl Drop for LogDelivery {
    fn drop(&mut self) {
        if !self.settled {
            let reason = "delivery dropped without ack";
            // Best effort: if this fails, the lease expires instead.
            let _ = ready(self.group.release(&self.lease, reason, None, Block));
        }
    }
}

/// The deliveries of a poll under way: the records it took from the
/// prefetched ones, then those it leased for hand-out. Dropped before the
/// poll returned them (an error, or a dropped future), it keeps them again,
/// still leased, first in line for the next receive, instead of releasing
/// each as a failed attempt.
struct Taken<'a> {
    group: &'a GroupInner,
    deliveries: Vec<LogDelivery>,
}

impl Taken<'_> {
    /// The deliveries, handed out (and counted as redeliveries where they
    /// are).
    fn hand_over(self) -> Vec<LogDelivery> {
        let mut this = std::mem::ManuallyDrop::new(self);
        let deliveries = std::mem::take(&mut this.deliveries);
        this.group.count_redeliveries(deliveries.iter().map(|d| &d.lease));
        deliveries
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.deliveries.is_empty() {
            return;
        }
        let mut state = lock(&self.group.state);
        for mut delivery in self.deliveries.drain(..).rev() {
            // Kept, not released: its lease stays.
            delivery.settled = true;
            state
                .prefetched
                .push_front((delivery.lease, delivery.record.clone()));
        }
    }
}

/// The batch of a poll under way; dropped before its records were handed
/// out (an error, or a dropped future), it takes their leases back.
struct Leasing<'a> {
    group: &'a GroupInner,
    batch: Batch,
}

impl Leasing<'_> {
    /// The batch, to hand out: its leases are no longer taken back.
    fn into_batch(self) -> Batch {
        // The empty batch left behind holds no allocation: nothing to drop.
        std::mem::take(&mut std::mem::ManuallyDrop::new(self).batch)
    }
}

impl Drop for Leasing<'_> {
    fn drop(&mut self) {
        if !self.batch.acquired.leases.is_empty() {
            lock(&self.group.state)
                .machine
                .unlease(&self.batch.acquired.leases, self.group.now_ms());
        }
    }
}

/// A dead letter under way ([`GroupInner::dead_letter_in`]); dropped
/// before it finished (it failed, or its future was dropped), it leaves the
/// record due to be dead-lettered again after backoff. A no-op on a record
/// the dead letter already marked Done.
struct UnfinishedDeadLetter<'a> {
    group: &'a GroupInner,
    offset: u64,
}

impl Drop for UnfinishedDeadLetter<'_> {
    fn drop(&mut self) {
        let group = self.group;
        trace_event!(warn, topic = group.topic.name(), group = %group.consumer.name(), offset = self.offset, "dead letter failed; will retry");
        lock(&group.state)
            .machine
            .dead_letter_failed(self.offset, group.now_ms(), &group.rules());
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
