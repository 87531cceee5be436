//! Model test of the group state machine alone: no storage, no threads, no
//! sleeps. Random sequences of publish (of records with or without one of
//! a few keys, also of records scheduled for later), acquire (single and batch), ack, nack (with and without a delay), reject, lease extension, clock
//! advances, dead-letter faults, snapshots and crashes (between commands,
//! after a batch was persisted but before it was handed out, and in the
//! middle of a dead letter) drive a [`GroupMachine`] with an explicit clock,
//! through a small driver that persists events the way `src/embedded/group.rs` does,
//! beside a plain model of every record. After every step the test checks:
//! - a record is leased to at most one holder at a time (a new lease only
//!   once the previous one ended or was settled), and never before the
//!   time its record is scheduled for (waiting counts no attempt);
//! - in a per-key group, a record with a key is leased only once every
//!   earlier record of its key is acked or dead-lettered and no other
//!   record of its key is leased: one at a time per key, in offset order,
//!   through redeliveries, dead letters and crashes; in a group that parks
//!   keys, once a record of a key is dead-lettered only a redriven record
//!   of the key goes out until one is acked (redrives are published at
//!   random, and for every parked key when draining);
//! - attempts grow by exactly one per lease and never decrease, and each
//!   lease's `Delivered` is persisted before it is handed out;
//! - a record goes to the dead-letter topic only after exactly
//!   `max_attempts` failed deliveries or a reject, at most once, even
//!   across crashes in the middle of its dead letter;
//! - settling succeeds exactly when the model says the holder still owns
//!   the record;
//! - an acquisition that returns fewer than it was asked for leaves nothing
//!   deliverable or due for dead-lettering;
//! - the low watermark never decreases and never passes an unsettled record;
//! - replaying the persisted events (every prefix a crash could leave, at
//!   step boundaries) yields the state the live machine had then.
//!
//! Each case ends by draining: every published record is then acked or
//! dead-lettered, exactly one of the two.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::patterns::retry::Backoff;

const START_MS: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DlqFault {
    None,
    /// The dead-letter topic cannot be opened: nothing is written.
    FailBeforeIntent,
    /// The intent is persisted, the dead letter's append fails.
    FailAppend,
    /// The process dies once the intent is persisted.
    CrashAfterIntent,
    /// The process dies once the dead letter is written, before its outcome.
    CrashAfterLetter,
}

#[derive(Debug, Clone)]
enum Action {
    /// Records with these keys (`None`: no key).
    Publish(Vec<Option<u8>>),
    /// One record scheduled this many ms after now.
    PublishScheduled(u16, Option<u8>),
    /// Redrives the nth dead letter: a new record with its key.
    Redrive(usize),
    Acquire(usize),
    /// Persists a batch's attempts, then crashes before handing it out.
    AcquireThenCrash(usize),
    Ack(usize),
    Nack(usize, Option<u16>),
    Reject(usize),
    Extend(usize, u16),
    Advance(u16),
    Fault(DlqFault),
    Snapshot,
    Crash,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    rules: Rules,
    ordering: DeliveryOrder,
    on_dead_letter: OnDeadLetter,
}

/// What the model knows of one published record.
#[derive(Debug, Clone, Default)]
struct Rec {
    attempts: u32,
    /// Token of the latest lease, while its holder may still settle.
    holder: Option<u64>,
    /// End of the lease while the record is leased.
    until: Option<i64>,
    not_before: i64,
    /// The time the record itself is scheduled for (its header), or 0.
    schedule: i64,
    key: Option<u8>,
    /// Published by a redrive.
    redriven: bool,
    acked: bool,
    dead: bool,
    /// Rejected, or its dead letter failed: never delivered again (until a
    /// crash forgets it, unless its intent was persisted).
    dying: bool,
    intended: bool,
    /// The state log says it is leased (a crash releases it).
    open_on_disk: bool,
    /// When the state log says it is due, unless leased.
    disk_not_before: i64,
}

impl Rec {
    fn settled(&self) -> bool {
        self.acked || self.dead
    }
}

/// The topic as the machine sees it: every published offset, none removed.
struct Published {
    next: u64,
    end: u64,
    /// Each record's schedule (0: none), key and whether it is redriven.
    records: Vec<(i64, Option<u8>, bool)>,
    /// The offset `next_new` or `holds` found last.
    found: Option<u64>,
}

impl Source for Published {
    fn next_new(&mut self) -> Result<Option<u64>> {
        if self.next >= self.end {
            return Ok(None);
        }
        self.next += 1;
        self.found = Some(self.next - 1);
        Ok(self.found)
    }

    fn holds(&mut self, offset: u64) -> Result<bool> {
        self.found = Some(offset);
        Ok(offset < self.end)
    }

    fn not_before(&self) -> Option<i64> {
        let (schedule, _, _) = self.records[self.found? as usize];
        (schedule > 0).then_some(schedule)
    }

    fn put_back(&mut self) {
        self.found = None;
    }

    fn key(&self) -> Option<u64> {
        self.records[self.found? as usize].1.map(u64::from)
    }

    fn redriven(&self) -> bool {
        self.found.is_some_and(|found| self.records[found as usize].2)
    }
}

/// The state log's view of a machine, as far as a crash keeps it: for each
/// offset from the low watermark, attempts, done and a persisted intent
/// not yet resolved.
/// An offset admitted but never delivered looks like one never admitted.
type Projection = (u64, Vec<(u32, bool, bool)>);

fn project(machine: &GroupMachine) -> Projection {
    let low = machine.low_watermark();
    let mut rows: Vec<(u32, bool, bool)> = (low..machine.next_offset())
        .map(|offset| match machine.entries.get(offset) {
            Some(e) => {
                let done = e.status == Status::Done;
                let intended = matches!(e.dead, DeadStep::Intended { .. });
                (e.attempts, done, intended && !done)
            }
            None => (0, true, false),
        })
        .collect();
    while rows.last() == Some(&(0, false, false)) {
        rows.pop();
    }
    (low, rows)
}

struct Harness {
    rules: Rules,
    ordering: DeliveryOrder,
    on_dead_letter: OnDeadLetter,
    /// Parked keys, with the dead-lettered record each is parked behind.
    parked: HashMap<u8, u64>,
    now: i64,
    machine: GroupMachine,
    /// Every event persisted, in order (snapshots included).
    log: Vec<StateEvent>,
    /// The driver's cursor: next offset to read from the topic.
    cursor: u64,
    end: u64,
    recs: Vec<Rec>,
    /// Deliveries the test holds.
    open: Vec<Lease>,
    /// Source offsets of the dead letters, in order.
    dlq: Vec<u64>,
    fault: DlqFault,
    floor: u64,
    /// Log length and live projection at each step boundary.
    checkpoints: Vec<(usize, Projection)>,
}

/// A crash cut the current command short.
struct Crashed;

impl Harness {
    fn new(cfg: Config) -> Harness {
        let machine =
            GroupMachine::new(0, fastrand::Rng::with_seed(7)).ordered(cfg.ordering, cfg.on_dead_letter);
        let mut harness = Harness {
            rules: cfg.rules,
            ordering: cfg.ordering,
            on_dead_letter: cfg.on_dead_letter,
            parked: HashMap::new(),
            now: START_MS,
            log: machine.snapshot(),
            machine,
            cursor: 0,
            end: 0,
            recs: Vec::new(),
            open: Vec::new(),
            dlq: Vec::new(),
            fault: DlqFault::None,
            floor: 0,
            checkpoints: Vec::new(),
        };
        harness.check();
        harness
    }

    fn delay(&self, failures: u32) -> i64 {
        let mut rng = fastrand::Rng::with_seed(0);
        let delay = self.rules.retry.backoff.delay(failures.max(1), &mut rng);
        delay.as_millis() as i64
    }

    fn rec(&mut self, offset: u64) -> &mut Rec {
        &mut self.recs[offset as usize]
    }

    /// The model of lease expiry at `now` (the machine's acquire runs it).
    fn expire(&mut self) {
        let now = self.now;
        for offset in 0..self.end {
            let rec = &self.recs[offset as usize];
            if rec.until.is_some_and(|until| until <= now) {
                let not_before = now + self.delay(rec.attempts);
                let rec = self.rec(offset);
                rec.until = None;
                rec.not_before = not_before;
            }
        }
    }

    /// Whether the model has work for an acquire at `now`: a record to
    /// lease or to dead-letter.
    fn has_work(&self) -> bool {
        (self.recs.iter().enumerate()).any(|(offset, rec)| {
            !rec.settled() && rec.until.is_none() && rec.not_before <= self.now && self.key_free(offset)
        })
    }

    /// Whether a per-key group may hand out `offset` as far as its key
    /// goes: no other record of the key is leased, and every earlier one
    /// is settled; while the key is parked, only the lowest unsettled
    /// redriven record may go.
    fn key_free(&self, offset: usize) -> bool {
        let Some(key) = self.recs[offset]
            .key
            .filter(|_| self.ordering == DeliveryOrder::PerKey)
        else {
            return true;
        };
        let parked = self.parked.contains_key(&key);
        if parked && !self.recs[offset].redriven {
            return false;
        }
        (self.recs.iter().enumerate())
            .filter(|(other, rec)| *other != offset && rec.key == Some(key))
            .all(|(other, rec)| {
                let in_turn = other > offset || rec.settled() || (parked && !rec.redriven);
                in_turn && rec.until.is_none()
            })
    }

    /// The model of parking: whether a dead letter of `offset` parks its key.
    fn parks(&self, offset: u64) -> Option<u8> {
        match self.on_dead_letter {
            OnDeadLetter::ParkKey => self.recs[offset as usize].key,
            OnDeadLetter::Continue => None,
        }
    }

    /// Persists what settling `offset` owes and `event`; a redriven
    /// record acked resumes its parked key.
    fn acked(&mut self, offset: u64, event: StateEvent) {
        self.log.extend(self.machine.take_owed());
        self.log.push(event);
        let rec = self.rec(offset);
        rec.acked = true;
        if let (true, Some(key)) = (rec.redriven, rec.key) {
            self.parked.remove(&key);
        }
    }

    /// A redrive of the nth dead letter: a new record with its key.
    fn redrive(&mut self, nth: usize) {
        if self.dlq.is_empty() {
            return;
        }
        let key = self.recs[self.dlq[nth % self.dlq.len()] as usize].key;
        self.end += 1;
        self.recs.push(Rec {
            key,
            redriven: true,
            ..Rec::default()
        });
    }

    /// Like `src/embedded/group.rs`'s poll: acquire, dead-letter what it claims,
    /// persist the batch's attempts, hand out.
    fn acquire(&mut self, max: usize, crash_before_hand_out: bool) -> std::result::Result<(), Crashed> {
        self.expire();
        let mut acquired = Acquired::default();
        loop {
            let mut topic = Published {
                next: self.cursor,
                end: self.end,
                records: (self.recs.iter())
                    .map(|rec| (rec.schedule, rec.key, rec.redriven))
                    .collect(),
                found: None,
            };
            let dead = self
                .machine
                .acquire(self.now, max, &self.rules, &mut topic, &mut acquired)
                .expect("the model's topic never fails");
            self.cursor = topic.next;
            self.machine.pass_to(self.cursor);
            assert!(!acquired.passed, "nothing is removed from the model's topic");
            let Some(claim) = dead else {
                break;
            };
            self.check_claim(claim, false);
            if self.dead_letter(claim)?.is_err() {
                // The poll fails: its leases were never persisted.
                self.machine.unlease(&acquired.leases, self.now);
                return Ok(());
            }
        }
        let Acquired { leases, events, .. } = acquired;
        let delivered = one_per_record(&events);
        assert_eq!(delivered.len(), leases.len());
        for (lease, event) in leases.iter().zip(&delivered) {
            let persisted = StateEvent::Delivered {
                offset: lease.offset,
                attempt: lease.attempt,
                lease_until_ms: self.now + self.rules.lease_ms,
            };
            assert_eq!(event, &persisted, "each lease comes with its Delivered");
        }
        self.log.extend(events);
        if crash_before_hand_out {
            for lease in &leases {
                let rec = self.rec(lease.offset);
                rec.attempts = lease.attempt;
                rec.open_on_disk = true;
            }
            return Err(Crashed);
        }
        let short = leases.len() < max;
        for lease in leases {
            self.handed_out(lease);
        }
        if short {
            assert!(
                !self.has_work(),
                "a short batch left work at {}: {:?}",
                self.now,
                self.recs
            );
        }
        Ok(())
    }

    fn handed_out(&mut self, lease: Lease) {
        let (now, lease_ms, max) = (self.now, self.rules.lease_ms, self.rules.retry.max_attempts);
        let rec = self.rec(lease.offset).clone();
        assert!(
            !rec.settled() && !rec.dying,
            "offset {} leased: {rec:?}",
            lease.offset
        );
        assert!(
            rec.until.is_none(),
            "offset {} leased twice at once: {rec:?}",
            lease.offset
        );
        assert!(
            rec.not_before <= now,
            "offset {} leased before due: {rec:?}",
            lease.offset
        );
        assert!(
            self.key_free(lease.offset as usize),
            "offset {} leased out of its key's order: {:?}",
            lease.offset,
            self.recs
        );
        assert_eq!(
            lease.attempt,
            rec.attempts + 1,
            "attempts of offset {}",
            lease.offset
        );
        assert!(
            lease.attempt <= max,
            "offset {} leased beyond max attempts",
            lease.offset
        );
        let rec = self.rec(lease.offset);
        rec.attempts = lease.attempt;
        rec.holder = Some(lease.token);
        rec.until = Some(now + lease_ms);
        rec.open_on_disk = true;
        self.open.push(lease);
    }

    /// A record claimed for dead-lettering must be due for it: a reject,
    /// exactly `max_attempts` failed deliveries, or an earlier try.
    fn check_claim(&self, claim: Claim, by_holder: bool) {
        let rec = &self.recs[claim.offset as usize];
        // A crash takes a key's parking with it: its dead letter is found
        // again and parks the key again.
        let parked = self.parked.values().any(|&offset| offset == claim.offset);
        assert!(
            !rec.settled() || parked,
            "settled offset {} claimed: {rec:?}",
            claim.offset
        );
        assert_eq!(claim.intended.is_some(), rec.intended);
        if !by_holder && !rec.dying && !parked {
            assert_eq!(
                rec.attempts, self.rules.retry.max_attempts,
                "offset {} claimed early",
                claim.offset
            );
        }
    }

    /// Like `src/embedded/group.rs`'s dead_letter, with the current fault. `Ok(Err)`
    /// is a failed dead letter; `Err` a crash.
    fn dead_letter(&mut self, claim: Claim) -> std::result::Result<std::result::Result<(), ()>, Crashed> {
        let offset = claim.offset;
        let written = match claim.intended {
            Some(dlq_end) if self.dlq[dlq_end as usize..].contains(&offset) => Ok(()),
            Some(_) => self.append_letter(offset),
            None if self.fault == DlqFault::FailBeforeIntent => Err(()),
            None => {
                let intent = self.machine.intend(offset, self.dlq.len() as u64, self.now);
                self.log.push(intent);
                let rec = self.rec(offset);
                rec.intended = true;
                if std::mem::take(&mut rec.open_on_disk) {
                    rec.disk_not_before = 0;
                }
                if self.fault == DlqFault::CrashAfterIntent {
                    return Err(Crashed);
                }
                self.append_letter(offset)
            }
        };
        if self.fault == DlqFault::CrashAfterLetter && written.is_ok() {
            return Err(Crashed);
        }
        let now = self.now;
        if written.is_err() {
            self.machine.dead_letter_failed(offset, now, &self.rules);
            let not_before = now + self.delay(self.recs[offset as usize].attempts);
            let rec = self.rec(offset);
            rec.dying = true;
            rec.not_before = not_before;
            return Ok(Err(()));
        }
        let done = self.machine.dead_letter_done(offset);
        self.log.extend(self.machine.take_owed());
        match self.parks(offset) {
            Some(key) => {
                assert_eq!(done, None, "a dead letter of a parking key settles nothing");
                self.parked.insert(key, offset);
            }
            None => self.log.push(done.expect("a dead letter settles its record")),
        }
        self.rec(offset).dead = true;
        Ok(Ok(()))
    }

    fn append_letter(&mut self, offset: u64) -> std::result::Result<(), ()> {
        if self.fault == DlqFault::FailAppend {
            return Err(());
        }
        let (attempts, failures) = self.machine.letter(offset).expect("claimed entry");
        assert_eq!(attempts, self.recs[offset as usize].attempts);
        assert!(!failures.is_empty(), "dead letter {offset} without failures");
        assert!(!self.dlq.contains(&offset), "offset {offset} dead-lettered twice");
        self.dlq.push(offset);
        Ok(())
    }

    /// Whether the model says `lease` still owns its record.
    fn owns(&self, lease: &Lease) -> bool {
        let rec = &self.recs[lease.offset as usize];
        rec.holder == Some(lease.token) && !rec.settled() && !rec.dying
    }

    fn settle(&mut self, index: usize, action: &Action) -> std::result::Result<(), Crashed> {
        if self.open.is_empty() {
            return Ok(());
        }
        let lease = self.open.remove(index % self.open.len());
        let owned = self.owns(&lease);
        let now = self.now;
        let result = match *action {
            Action::Ack(_) => self
                .machine
                .ack(&lease)
                .map(|event| self.acked(lease.offset, event)),
            Action::Nack(_, delay) => self.nack(&lease, delay.map(i64::from)),
            Action::Reject(_) => match self.machine.reject(&lease, "rejected", now) {
                Ok(claim) => {
                    self.rec(lease.offset).dying = true;
                    self.check_claim(claim, true);
                    // Failed or not, the reject returns (the record stays).
                    let _written = self.dead_letter(claim)?;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Action::Extend(_, by) => {
                let extended = self.machine.extend(&lease, now + i64::from(by));
                if extended.is_ok() {
                    self.rec(lease.offset).until = Some(now + i64::from(by));
                    self.open.push(lease);
                }
                extended
            }
            _ => unreachable!("not a settlement"),
        };
        match result {
            Ok(()) => assert!(owned, "a stale delivery of {} settled", lease.offset),
            Err(Error::LeaseExpired { offset }) => {
                assert_eq!(offset, lease.offset);
                assert!(!owned, "the holder of {offset} was refused");
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        if owned && !matches!(action, Action::Extend(..)) {
            let rec = self.rec(lease.offset);
            rec.holder = None;
            rec.until = None;
        }
        Ok(())
    }

    fn nack(&mut self, lease: &Lease, delay_ms: Option<i64>) -> Result<()> {
        let now = self.now;
        match self.machine.nack(lease, "nacked", delay_ms, now, &self.rules)? {
            Nacked::Released(event) => {
                let not_before = now + delay_ms.unwrap_or_else(|| self.delay(lease.attempt));
                assert!(lease.attempt < self.rules.retry.max_attempts);
                assert!(
                    matches!(event, StateEvent::Released { not_before_ms, .. } if not_before_ms == not_before)
                );
                self.log.push(event);
                let rec = self.rec(lease.offset);
                rec.not_before = not_before;
                rec.disk_not_before = not_before;
                rec.open_on_disk = false;
            }
            Nacked::DeadLetter(claim) => {
                assert_eq!(lease.attempt, self.rules.retry.max_attempts);
                self.check_claim(claim, true);
                // A crash here is handled by the caller's next check.
                if self.dead_letter(claim).is_err() {
                    self.crash();
                }
            }
        }
        Ok(())
    }

    /// The process dies: the machine is rebuilt from the persisted events.
    fn crash(&mut self) {
        let mut machine = GroupMachine::replay(&self.log, 0, fastrand::Rng::with_seed(9))
            .ordered(self.ordering, self.on_dead_letter);
        let released = machine.recover(self.now, &self.rules);
        self.log.extend(released);
        machine.prune();
        self.cursor = machine.next_offset();
        self.machine = machine;
        self.open.clear();
        for offset in 0..self.end {
            let released = self.now + self.delay(self.recs[offset as usize].attempts);
            let rec = self.rec(offset);
            if std::mem::take(&mut rec.open_on_disk) {
                rec.disk_not_before = released;
            }
            // A scheduled record waits for its time again: it is its own.
            rec.not_before = rec.disk_not_before.max(rec.schedule);
            rec.until = None;
            rec.holder = None;
            // A dead letter's failure is remembered only through its intent.
            rec.dying = rec.intended && !rec.settled();
        }
    }

    fn step(&mut self, action: &Action) {
        let crashed = match *action {
            Action::Publish(ref keys) => {
                self.end += keys.len() as u64;
                self.recs.extend(keys.iter().map(|&key| Rec {
                    key,
                    ..Rec::default()
                }));
                Ok(())
            }
            Action::PublishScheduled(after_ms, key) => {
                let schedule = self.now + i64::from(after_ms);
                self.end += 1;
                self.recs.push(Rec {
                    not_before: schedule,
                    schedule,
                    key,
                    ..Rec::default()
                });
                Ok(())
            }
            Action::Redrive(nth) => {
                self.redrive(nth);
                Ok(())
            }
            Action::Acquire(max) => self.acquire(max, false),
            Action::AcquireThenCrash(max) => self.acquire(max, true),
            Action::Ack(i) | Action::Nack(i, _) | Action::Reject(i) | Action::Extend(i, _) => {
                self.settle(i, action)
            }
            Action::Advance(ms) => {
                self.now += i64::from(ms);
                Ok(())
            }
            Action::Fault(fault) => {
                self.fault = fault;
                Ok(())
            }
            Action::Snapshot => {
                self.snapshot();
                Ok(())
            }
            Action::Crash => Err(Crashed),
        };
        if crashed.is_err() {
            self.crash();
        }
        self.machine.prune();
        self.check();
    }

    /// Persists a snapshot: a lease is not in it (the record is due at once
    /// after a crash), a delay is.
    fn snapshot(&mut self) {
        self.machine.prune();
        self.log.extend(self.machine.snapshot());
        let admitted = self.machine.next_offset().min(self.end);
        for rec in &mut self.recs[..admitted as usize] {
            rec.open_on_disk = false;
            rec.disk_not_before = match rec.until {
                Some(_) => 0,
                None => rec.not_before,
            };
        }
    }

    /// The invariants that hold between any two commands.
    fn check(&mut self) {
        let low = self.machine.low_watermark();
        assert!(
            low >= self.floor,
            "low watermark went back from {} to {low}",
            self.floor
        );
        self.floor = low;
        for offset in 0..low.min(self.end) {
            assert!(
                self.recs[offset as usize].settled(),
                "low watermark {low} passed unsettled {offset}"
            );
        }
        for (offset, rec) in self.recs.iter().enumerate() {
            assert!(
                !(rec.acked && rec.dead),
                "offset {offset} acked and dead-lettered"
            );
            let in_dlq = self.dlq.contains(&(offset as u64));
            assert!(!rec.dead || in_dlq, "dead offset {offset} not in the DLQ");
            assert!(
                !in_dlq || rec.dead || (rec.intended && !rec.acked),
                "offset {offset} in the DLQ: {rec:?}"
            );
        }
        let live = project(&self.machine);
        let replayed = GroupMachine::replay(&self.log, 0, fastrand::Rng::with_seed(1));
        assert_eq!(project(&replayed), live, "replay differs from the live state");
        self.checkpoints.push((self.log.len(), live));
    }

    /// Every prefix a crash at a step boundary could leave replays to the
    /// state the live machine had then.
    fn check_prefixes(&self) {
        for (len, live) in &self.checkpoints {
            let replayed = GroupMachine::replay(&self.log[..*len], 0, fastrand::Rng::with_seed(2));
            assert_eq!(&project(&replayed), live, "prefix of {len} events");
        }
    }

    /// Redrives each parked key that has no redriven record waiting.
    fn redrive_parked(&mut self) {
        let parked: Vec<(u8, u64)> = self.parked.iter().map(|(&key, &offset)| (key, offset)).collect();
        for (key, offset) in parked {
            let waiting =
                (self.recs.iter()).any(|rec| rec.key == Some(key) && rec.redriven && !rec.settled());
            if !waiting {
                let nth = self
                    .dlq
                    .iter()
                    .position(|&dead| dead == offset)
                    .expect("parked in the DLQ");
                self.redrive(nth);
            }
        }
    }

    /// Acks everything, past every delay and lease, until every record is
    /// settled (a bounded number of rounds: nothing may be stuck).
    fn drain(&mut self) {
        self.fault = DlqFault::None;
        self.open.clear();
        for round in 0.. {
            assert!(round < 1000, "drain does not end");
            self.now += 10_000_000;
            self.redrive_parked();
            self.acquire(8, false).ok().expect("no crash without a fault");
            for lease in std::mem::take(&mut self.open) {
                let acked = self.machine.ack(&lease).expect("the holder acks");
                self.acked(lease.offset, acked);
            }
            self.machine.prune();
            self.check();
            if self.recs.iter().all(Rec::settled) && self.parked.is_empty() {
                break;
            }
        }
        for (offset, rec) in self.recs.iter().enumerate() {
            assert!(rec.settled(), "offset {offset} is lost: {rec:?}");
            assert_eq!(
                rec.dead,
                self.dlq.contains(&(offset as u64)),
                "offset {offset} vs the DLQ"
            );
        }
        assert_eq!(self.machine.prune(), self.end);
        self.check_prefixes();
    }
}

fn action() -> impl Strategy<Value = Action> {
    let fault = prop_oneof![
        3 => Just(DlqFault::None),
        1 => Just(DlqFault::FailBeforeIntent),
        1 => Just(DlqFault::FailAppend),
        1 => Just(DlqFault::CrashAfterIntent),
        1 => Just(DlqFault::CrashAfterLetter),
    ];
    let key = prop::option::weighted(0.8, 0u8..3);
    prop_oneof![
        1 => any::<usize>().prop_map(Action::Redrive),
        6 => prop::collection::vec(key.clone(), 1..=4).prop_map(Action::Publish),
        2 => (1u16..100, key).prop_map(|(after_ms, key)| Action::PublishScheduled(after_ms, key)),
        8 => (1usize..=5).prop_map(Action::Acquire),
        1 => (1usize..=5).prop_map(Action::AcquireThenCrash),
        5 => any::<usize>().prop_map(Action::Ack),
        4 => (any::<usize>(), prop::option::of(0u16..50)).prop_map(|(i, d)| Action::Nack(i, d)),
        1 => any::<usize>().prop_map(Action::Reject),
        1 => (any::<usize>(), 1u16..100).prop_map(|(i, by)| Action::Extend(i, by)),
        4 => (0u16..60).prop_map(Action::Advance),
        1 => fault.prop_map(Action::Fault),
        1 => Just(Action::Snapshot),
        1 => Just(Action::Crash),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    let backoff = prop_oneof![
        Just(Backoff::Fixed(Duration::ZERO)),
        Just(Backoff::Fixed(Duration::from_millis(7))),
        Just(Backoff::Exponential {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(40),
            jitter: false,
        }),
    ];
    let ordering = prop_oneof![
        Just((DeliveryOrder::Unordered, OnDeadLetter::Continue)),
        Just((DeliveryOrder::PerKey, OnDeadLetter::Continue)),
        Just((DeliveryOrder::PerKey, OnDeadLetter::ParkKey)),
    ];
    (1u32..=4, prop_oneof![Just(20i64), Just(1000)], backoff, ordering).prop_map(
        |(max_attempts, lease_ms, backoff, (ordering, on_dead_letter))| Config {
            rules: Rules {
                lease_ms,
                retry: RetryPolicy::default().max_attempts(max_attempts).backoff(backoff),
            },
            ordering,
            on_dead_letter,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_group_machine_matches_its_model_through_failures_dead_letters_and_crashes(
        cfg in config(),
        actions in prop::collection::vec(action(), 1..80),
    ) {
        let mut harness = Harness::new(cfg);
        for action in &actions {
            harness.step(action);
        }
        harness.drain();
    }
}

/// `events` with each `DeliveredRun` written out as the `Delivered` of
/// each of its records.
fn one_per_record(events: &[StateEvent]) -> Vec<StateEvent> {
    let mut out = Vec::new();
    for event in events {
        match *event {
            StateEvent::DeliveredRun {
                offset,
                count,
                attempt,
                lease_until_ms,
            } => out.extend(
                (offset..offset + u64::from(count)).map(|offset| StateEvent::Delivered {
                    offset,
                    attempt,
                    lease_until_ms,
                }),
            ),
            _ => out.push(event.clone()),
        }
    }
    out
}
