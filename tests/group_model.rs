//! Model-based property test of consumer groups (`src/patterns/queue.rs`).
//!
//! Random sequences of publish, receive, ack, nack (with and without a
//! delay), reject, drop, lease expiry, power loss (between operations and in
//! the middle of one) and clean reopen run against a group on `SimStorage`
//! under `Durability::Always`, beside a plain model of what each record may
//! do next. After every step the test checks that
//! - a record is leased to at most one live delivery at a time;
//! - an acked record (ack returned `Ok`) is never delivered again;
//! - a record's attempt numbers grow by one per delivery, across crashes too
//!   (by more only where a crash hid a delivery that was persisted);
//! - a record reaches `<topic>.dlq` only after `max_attempts` deliveries or a
//!   reject, at most once, with headers naming its source, attempts and
//!   failures;
//! - a receive finds a record whenever one is surely available, and only
//!   ever hands out one that may be.
//!
//! Each case ends by draining the group: every published record is then
//! acked or dead-lettered, exactly one of the two, and a further power loss
//! changes nothing.
//!
//! Timing: the redelivery backoff is zero, and leases are either 60 s (never
//! expiring within a case) or 40 ms with `Wait` steps that sleep past them.
//! The group reads the wall clock, so the model gives every lease and delay a
//! window (surely not due before it, surely due after it) and accepts either
//! outcome inside it.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::groups::group_options;
use common::proptests;
use logbus::storage::{Fault, SimStorage};
use logbus::{
    Bus, BusOptions, Delivery, Durability, Error, Group, Record, StoredRecord, Topic, TopicOptions, headers,
};
use proptest::prelude::*;

const DIR: &str = "/sim/bus";
const TOPIC: &str = "jobs";
const DLQ: &str = "jobs.dlq";
const GROUP: &str = "workers";
const LONG_LEASE: Duration = Duration::from_secs(60);
const SHORT_LEASE: Duration = Duration::from_millis(40);
/// The group rounds wall-clock time down to milliseconds.
const SLACK: Duration = Duration::from_millis(3);

#[derive(Debug, Clone, Copy)]
struct Config {
    max_attempts: u32,
    short_lease: bool,
    segment_bytes: u64,
}

#[derive(Debug, Clone)]
enum Action {
    Publish(usize),
    Recv,
    /// `try_recv_batch` of up to this many.
    RecvBatch(usize),
    Ack(usize),
    Nack(usize),
    NackWithDelay(usize, u64),
    Reject(usize),
    Drop(usize),
    /// Sleeps past every lease (short-lease cases) and nack delay, or
    /// (`half`) for half a short lease, which must expire nothing.
    Wait {
        half: bool,
    },
    PowerLoss(u64),
    /// Halts the storage after `syncs` more syncs, runs `op`, then loses power.
    PowerLossDuring {
        op: MidOp,
        syncs: u64,
        seed: u64,
    },
    CleanReopen {
        drop_first: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum MidOp {
    Publish(usize),
    Recv,
    Ack(usize),
    Nack(usize),
    Reject(usize),
}

/// Whether something is possible at the time of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Avail {
    No,
    Maybe,
    Yes,
}

/// When an operation ran: it read the clock somewhere in between.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: Instant,
    end: Instant,
}

impl Span {
    fn time<T>(op: impl FnOnce() -> T) -> (T, Span) {
        let start = Instant::now();
        let result = op();
        (
            result,
            Span {
                start,
                end: Instant::now(),
            },
        )
    }
}

/// A moment set as "clock during an operation + a duration".
#[derive(Debug, Clone, Copy)]
struct Due {
    possible: Instant,
    sure: Instant,
}

impl Due {
    fn after(op: Span, duration: Duration) -> Due {
        let possible = op.start + duration;
        Due {
            possible: possible.checked_sub(SLACK).unwrap_or(possible),
            sure: op.end + duration + SLACK,
        }
    }

    /// Whether the moment has passed during `op`.
    fn at(self, op: Span) -> Avail {
        if op.start >= self.sure {
            Avail::Yes
        } else if op.end >= self.possible {
            Avail::Maybe
        } else {
            Avail::No
        }
    }
}

/// What the model knows of one published record.
#[derive(Debug, Clone, Default)]
struct Rec {
    /// Highest attempt handed out (or known to be persisted).
    attempts: u32,
    /// Deliveries a failed operation may have persisted without handing out.
    extra: u32,
    acked: bool,
    /// An ack failed in a crash: it may or may not have been persisted.
    maybe_acked: bool,
    /// A reject failed in a crash.
    maybe_rejected: bool,
    dead: bool,
    /// The live delivery holding it.
    holder: Option<u64>,
    /// Not available before this (nack with delay).
    delay: Option<Due>,
}

/// A delivery the test holds.
struct Open {
    id: u64,
    delivery: Delivery,
    offset: u64,
    attempt: u32,
    leased: Span,
    /// Redelivered or dead-lettered since: it can no longer settle.
    stale: bool,
}

/// A dead letter the last operation must have produced.
struct Expect {
    offset: u64,
    attempts: u32,
    reason: Option<String>,
}

struct Live {
    bus: Bus,
    topic: Topic,
    dlq: Topic,
    group: Group,
}

struct Harness {
    cfg: Config,
    sim: SimStorage,
    live: Option<Live>,
    recs: Vec<Rec>,
    open: Vec<Open>,
    next_id: u64,
    dlq_seen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Nack(u64),
    Reject,
    Drop,
}

fn header<'a>(record: &'a StoredRecord, name: &str) -> &'a str {
    let value = record
        .header(name)
        .unwrap_or_else(|| panic!("dead letter lacks {name}"));
    std::str::from_utf8(value).unwrap()
}

fn check_payload(record: &StoredRecord, offset: u64) {
    assert_eq!(record.value(), format!("v{offset}").as_bytes());
    assert_eq!(record.key(), format!("k{offset}").as_bytes());
    assert_eq!(record.header("origin"), Some(offset.to_string().as_bytes()));
}

impl Harness {
    fn new(cfg: Config) -> Harness {
        let mut harness = Harness {
            cfg,
            sim: SimStorage::new(),
            live: None,
            recs: Vec::new(),
            open: Vec::new(),
            next_id: 0,
            dlq_seen: 0,
        };
        harness.reopen(0);
        harness
    }

    fn live(&self) -> &Live {
        self.live.as_ref().expect("bus is open")
    }

    fn lease(&self) -> Duration {
        match self.cfg.short_lease {
            true => SHORT_LEASE,
            false => LONG_LEASE,
        }
    }

    /// Opens the bus; the topic may hold up to `uncertain` records more than
    /// the model knows of (a publish that failed in a crash).
    fn reopen(&mut self, uncertain: usize) {
        assert!(self.live.is_none() && self.open.is_empty());
        let topic_options = TopicOptions::default()
            .durability(Durability::Always)
            .segment_bytes(self.cfg.segment_bytes);
        let options = BusOptions::default()
            .storage(Arc::new(self.sim.clone()))
            .topic_defaults(topic_options);
        let bus = Bus::open(Path::new(DIR), options).unwrap();
        let topic = bus.topic(TOPIC).unwrap();
        let dlq = bus.topic(DLQ).unwrap();
        let group_options = group_options(self.lease(), self.cfg.max_attempts, Duration::ZERO);
        let group = topic.group(GROUP, group_options).unwrap();
        let end = topic.end_offset() as usize;
        let known = self.recs.len();
        assert!(
            (known..=known + uncertain).contains(&end),
            "topic holds {end} records after reopen; {known} were published (+{uncertain} maybe)"
        );
        self.recs.resize(end, Rec::default());
        assert!(dlq.end_offset() >= self.dlq_seen, "dead letters vanished");
        self.live = Some(Live {
            bus,
            topic,
            dlq,
            group,
        });
    }

    /// Whether `offset` may be handed out by a receive during `op`.
    fn avail(&self, offset: u64, op: Span) -> Avail {
        let rec = &self.recs[offset as usize];
        let max = self.cfg.max_attempts;
        let mut avail = if rec.acked || rec.dead || rec.attempts >= max {
            Avail::No
        } else if rec.maybe_acked || rec.maybe_rejected || rec.attempts + rec.extra >= max {
            Avail::Maybe
        } else {
            Avail::Yes
        };
        if let Some(id) = rec.holder {
            avail = avail.min(self.lease_end(id).at(op));
        }
        if let Some(delay) = rec.delay {
            avail = avail.min(delay.at(op));
        }
        avail
    }

    fn lease_end(&self, id: u64) -> Due {
        let open = self.open.iter().find(|o| o.id == id).expect("holder is open");
        Due::after(open.leased, self.lease())
    }

    /// Whether a receive during `op` may dead-letter `offset` on its own
    /// (attempts exhausted, or a reject that a crash left unresolved).
    fn may_dead_letter(&self, offset: u64, op: Span) -> bool {
        let rec = &self.recs[offset as usize];
        let exhausted = rec.maybe_rejected || rec.attempts + rec.extra >= self.cfg.max_attempts;
        let free = rec.holder.is_none_or(|id| self.lease_end(id).at(op) != Avail::No);
        let due = rec.delay.is_none_or(|d| d.at(op) != Avail::No);
        !rec.acked && !rec.dead && exhausted && free && due
    }

    fn mark_stale(&mut self, holder: Option<u64>) {
        if let Some(id) = holder {
            self.open
                .iter_mut()
                .find(|o| o.id == id)
                .expect("holder is open")
                .stale = true;
        }
    }

    /// Reads the dead letters written since the last look and checks each:
    /// `expected` ones come from the last operation; others must come from
    /// a receive during `poll` that found the record exhausted.
    fn observe_dlq(&mut self, poll: Option<Span>, expected: &[Expect]) {
        let dlq = self.live().dlq.clone();
        let end = dlq.end_offset();
        assert!(end >= self.dlq_seen, "dead letters vanished");
        for dlq_offset in self.dlq_seen..end {
            let letter = dlq
                .log()
                .expect("embedded topic")
                .read(dlq_offset)
                .unwrap()
                .expect("dead letter readable");
            self.check_dead_letter(&letter, poll, expected);
        }
        self.dlq_seen = end;
        for e in expected {
            assert!(
                self.recs[e.offset as usize].dead,
                "offset {} was not dead-lettered",
                e.offset
            );
        }
    }

    fn check_dead_letter(&mut self, letter: &StoredRecord, poll: Option<Span>, expected: &[Expect]) {
        let max = self.cfg.max_attempts;
        assert_eq!(header(letter, headers::SOURCE_TOPIC), TOPIC);
        assert_eq!(header(letter, headers::SOURCE_GROUP), GROUP);
        let offset: u64 = header(letter, headers::SOURCE_OFFSET).parse().unwrap();
        assert!(
            (offset as usize) < self.recs.len(),
            "dead letter of unpublished {offset}"
        );
        check_payload(letter, offset);
        let attempts: u32 = header(letter, headers::ATTEMPTS).parse().unwrap();
        let rec = self.recs[offset as usize].clone();
        assert!(!rec.dead, "offset {offset} dead-lettered twice");
        assert!(!rec.acked, "acked offset {offset} dead-lettered");
        let failures: Vec<(i64, &str)> = letter
            .headers()
            .filter(|(name, _)| *name == headers::FAILURE)
            .map(|(_, v)| {
                let (at, reason) = std::str::from_utf8(v).unwrap().split_once(' ').unwrap();
                (at.parse().unwrap(), reason)
            })
            .collect();
        match expected.iter().find(|e| e.offset == offset) {
            Some(e) => {
                assert_eq!(attempts, e.attempts, "attempts of dead letter {offset}");
                if let Some(reason) = &e.reason {
                    assert_eq!(header(letter, headers::LAST_REASON), reason);
                }
            }
            None => {
                let allowed = poll.is_some_and(|op| self.may_dead_letter(offset, op));
                assert!(allowed, "offset {offset} dead-lettered unexpectedly: {rec:?}");
                assert!(
                    attempts >= rec.attempts && attempts <= (rec.attempts + rec.extra).min(max),
                    "dead letter {offset} says {attempts} attempts; model {rec:?}"
                );
                if !rec.maybe_rejected {
                    assert_eq!(attempts, max, "offset {offset} dead-lettered before max attempts");
                }
            }
        }
        assert!(!failures.is_empty(), "dead letter {offset} without failures");
        if !self.cfg.short_lease {
            // Without lease expiry every delivery ends in exactly one failure.
            assert_eq!(
                failures.len() as u32,
                attempts,
                "failures of dead letter {offset}"
            );
        }
        assert!(failures.windows(2).all(|w| w[0].0 <= w[1].0));
        let first: i64 = header(letter, headers::FIRST_FAILURE).parse().unwrap();
        let last: i64 = header(letter, headers::LAST_FAILURE).parse().unwrap();
        assert_eq!((first, last), (failures[0].0, failures[failures.len() - 1].0));
        assert_eq!(
            header(letter, headers::LAST_REASON),
            failures[failures.len() - 1].1
        );
        let rec = &mut self.recs[offset as usize];
        rec.dead = true;
        rec.maybe_acked = false;
        rec.maybe_rejected = false;
        rec.delay = None;
        let holder = rec.holder.take();
        self.mark_stale(holder);
    }

    fn publish(&mut self, n: usize, crashing: bool) -> usize {
        let start = self.live().topic.end_offset();
        let texts: Vec<(String, String, String)> = (start..start + n as u64)
            .map(|o| (format!("v{o}"), format!("k{o}"), o.to_string()))
            .collect();
        let records: Vec<Record<'_>> = texts
            .iter()
            .map(|(v, k, h)| Record::new(v).key(k).header("origin", h))
            .collect();
        match self.live().topic.publish_batch(&records) {
            Ok(range) => {
                assert_eq!(range, start..start + n as u64);
                assert_eq!(start as usize, self.recs.len());
                self.recs.resize(range.end as usize, Rec::default());
                0
            }
            Err(e) if crashing => {
                let _ = e;
                n
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }

    fn recv(&mut self, crashing: bool) -> Span {
        let group = self.live().group.clone();
        let (result, span) = Span::time(|| group.try_recv());
        match result {
            Ok(Some(delivery)) => self.delivered(delivery, span),
            Ok(None) => self.check_nothing_surely_available(span),
            Err(e) if crashing => {
                let _ = e;
                // Any record it could have picked may have had its delivery
                // persisted.
                for offset in 0..self.recs.len() as u64 {
                    if self.avail(offset, span) != Avail::No {
                        self.recs[offset as usize].extra += 1;
                    }
                }
            }
            Err(e) => panic!("receive failed: {e}"),
        }
        span
    }

    /// A batch is checked as that many single receives: each delivery must
    /// be available and distinct, and a short batch means nothing else
    /// surely was.
    fn recv_batch(&mut self, max: usize) -> Span {
        let group = self.live().group.clone();
        let (result, span) = Span::time(|| group.try_recv_batch(max));
        let deliveries = result.unwrap_or_else(|e| panic!("batch receive failed: {e}"));
        let short = deliveries.len() < max;
        for delivery in deliveries {
            self.delivered(delivery, span);
        }
        if short {
            self.check_nothing_surely_available(span);
        }
        span
    }

    fn delivered(&mut self, delivery: Delivery, span: Span) {
        let offset = delivery.record().offset();
        let attempt = delivery.attempt();
        assert!(
            (offset as usize) < self.recs.len(),
            "delivered unpublished {offset}"
        );
        check_payload(delivery.record(), offset);
        let rec = self.recs[offset as usize].clone();
        assert!(
            self.avail(offset, span) != Avail::No,
            "offset {offset} delivered (attempt {attempt}) while unavailable: {rec:?}"
        );
        assert!(
            attempt > rec.attempts && attempt <= rec.attempts + 1 + rec.extra,
            "offset {offset} delivered as attempt {attempt}; model {rec:?}"
        );
        assert!(attempt <= self.cfg.max_attempts);
        self.mark_stale(rec.holder);
        let id = self.next_id;
        self.next_id += 1;
        self.recs[offset as usize] = Rec {
            attempts: attempt,
            holder: Some(id),
            ..Rec::default()
        };
        self.open.push(Open {
            id,
            delivery,
            offset,
            attempt,
            leased: span,
            stale: false,
        });
    }

    fn check_nothing_surely_available(&self, span: Span) {
        for offset in 0..self.recs.len() as u64 {
            assert_ne!(
                self.avail(offset, span),
                Avail::Yes,
                "receive found nothing though offset {offset} is available: {:?}",
                self.recs[offset as usize]
            );
        }
    }

    /// Settles the `index`-th open delivery; returns the dead letter it
    /// must have produced, if any.
    fn settle(&mut self, index: usize, how: Settle, crashing: bool) -> (Span, Option<Expect>) {
        let open = self.open.remove(index % self.open.len());
        let (offset, attempt) = (open.offset, open.attempt);
        let reason = format!("{how:?} of {offset}/{attempt}");
        let delivery = open.delivery;
        let (result, span) = Span::time(|| match how {
            Settle::Ack => delivery.ack(),
            Settle::Nack(0) => delivery.nack(&reason),
            Settle::Nack(ms) => delivery.nack_with_delay(&reason, Duration::from_millis(ms)),
            Settle::Reject => delivery.reject(&reason),
            Settle::Drop => {
                drop(delivery);
                Ok(())
            }
        });
        if open.stale {
            if how != Settle::Drop {
                assert!(
                    matches!(result, Err(Error::LeaseExpired { offset: o }) if o == offset),
                    "stale delivery of {offset} settled: {result:?}"
                );
            }
            return (span, None);
        }
        if let Err(e) = &result {
            assert!(crashing, "{how:?} of offset {offset} failed: {e}");
        }
        let ok = result.is_ok();
        let exhausted = attempt >= self.cfg.max_attempts;
        let rec = &mut self.recs[offset as usize];
        assert_eq!(rec.holder, Some(open.id));
        rec.holder = None;
        let expect = |reason: Option<String>| {
            Some(Expect {
                offset,
                attempts: attempt,
                reason,
            })
        };
        match how {
            Settle::Ack if ok => rec.acked = true,
            Settle::Ack => rec.maybe_acked = true,
            Settle::Reject if ok => return (span, expect(Some(reason))),
            Settle::Reject => rec.maybe_rejected = true,
            // Exhausted: dead-lettered now, or (after a crash) at the next receive.
            Settle::Nack(_) | Settle::Drop if exhausted => {
                if ok {
                    let reason = (how != Settle::Drop).then_some(reason);
                    return (span, expect(reason));
                }
            }
            Settle::Nack(ms) if ms > 0 => {
                let due = Due::after(span, Duration::from_millis(ms));
                rec.delay = Some(match ok {
                    true => due,
                    // Either the delay was persisted or the restart released it.
                    false => Due {
                        possible: span.start,
                        sure: due.sure,
                    },
                });
            }
            Settle::Nack(_) | Settle::Drop => {}
        }
        (span, None)
    }

    /// Forgets every delivery: a live one is released by the restart.
    fn abandon_deliveries(&mut self) {
        for open in std::mem::take(&mut self.open) {
            if !open.stale {
                self.recs[open.offset as usize].holder = None;
            }
            drop(open.delivery);
        }
    }

    fn power_loss(&mut self, seed: u64, poll: Option<Span>, expected: &[Expect], uncertain: usize) {
        self.sim.power_loss(seed);
        self.abandon_deliveries();
        self.live = None;
        self.reopen(uncertain);
        self.observe_dlq(poll, expected);
    }

    fn power_loss_during(&mut self, op: MidOp, syncs: u64, seed: u64) {
        self.sim.inject(Fault::HaltAfterSyncs { after: syncs });
        let mut poll = None;
        let mut expected = Vec::new();
        let mut uncertain = 0;
        let has_open = !self.open.is_empty();
        match op {
            MidOp::Publish(n) => uncertain = self.publish(n, true),
            MidOp::Recv => poll = Some(self.recv(true)),
            MidOp::Ack(i) if has_open => drop(self.settle(i, Settle::Ack, true)),
            MidOp::Nack(i) | MidOp::Reject(i) if has_open => {
                let how = match op {
                    MidOp::Nack(_) => Settle::Nack(0),
                    _ => Settle::Reject,
                };
                let (span, expect) = self.settle(i, how, true);
                // An exhausted nack that failed leaves the record for the next receive.
                poll = Some(span);
                expected.extend(expect);
            }
            _ => {}
        }
        self.power_loss(seed, poll, &expected, uncertain);
    }

    fn clean_reopen(&mut self, drop_first: bool) {
        if drop_first {
            while !self.open.is_empty() {
                let (span, expect) = self.settle(0, Settle::Drop, false);
                self.observe_dlq(Some(span), expect.as_slice());
            }
        }
        self.live().bus.close().unwrap();
        // Deliveries dropped after close cannot write; the reopen releases them.
        self.abandon_deliveries();
        self.live = None;
        self.reopen(0);
        self.observe_dlq(None, &[]);
    }

    fn step(&mut self, action: &Action) {
        let has_open = !self.open.is_empty();
        let settle = |i: usize, how: Settle| (i, how);
        let settling = match *action {
            Action::Ack(i) if has_open => Some(settle(i, Settle::Ack)),
            Action::Nack(i) if has_open => Some(settle(i, Settle::Nack(0))),
            Action::NackWithDelay(i, ms) if has_open => Some(settle(i, Settle::Nack(ms))),
            Action::Reject(i) if has_open => Some(settle(i, Settle::Reject)),
            Action::Drop(i) if has_open => Some(settle(i, Settle::Drop)),
            _ => None,
        };
        if let Some((i, how)) = settling {
            let (span, expect) = self.settle(i, how, false);
            self.observe_dlq(Some(span), expect.as_slice());
            return;
        }
        match *action {
            Action::Publish(n) => {
                self.publish(n, false);
                self.observe_dlq(None, &[]);
            }
            Action::Recv => {
                let span = self.recv(false);
                self.observe_dlq(Some(span), &[]);
            }
            Action::RecvBatch(max) => {
                let span = self.recv_batch(max);
                self.observe_dlq(Some(span), &[]);
            }
            Action::Wait { half: true } => std::thread::sleep(SHORT_LEASE / 2),
            Action::Wait { half: false } => std::thread::sleep(match self.cfg.short_lease {
                true => SHORT_LEASE + 4 * SLACK,
                false => Duration::from_millis(10) + 4 * SLACK,
            }),
            Action::PowerLoss(seed) => self.power_loss(seed, None, &[], 0),
            Action::PowerLossDuring { op, syncs, seed } => self.power_loss_during(op, syncs, seed),
            Action::CleanReopen { drop_first } => self.clean_reopen(drop_first),
            _ => {}
        }
    }

    /// Acks everything left, then checks that every record was acked or
    /// dead-lettered exactly once, and stays so after another power loss.
    fn drain(&mut self, seed: u64) {
        while !self.open.is_empty() {
            let (span, _) = self.settle(0, Settle::Ack, false);
            self.observe_dlq(Some(span), &[]);
        }
        loop {
            let span = self.recv(false);
            self.observe_dlq(Some(span), &[]);
            if !self.open.is_empty() {
                let (span, _) = self.settle(0, Settle::Ack, false);
                self.observe_dlq(Some(span), &[]);
                continue;
            }
            let pending: Vec<u64> = (0..self.recs.len() as u64)
                .filter(|&o| {
                    let rec = &self.recs[o as usize];
                    !rec.acked && !rec.dead && !rec.maybe_acked
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            // Only records waiting out a nack delay may be left.
            for &offset in &pending {
                let rec = &self.recs[offset as usize];
                assert!(rec.delay.is_some(), "offset {offset} is lost: {rec:?}");
            }
            let group = self.live().group.clone();
            let (delivery, span) = Span::time(|| group.recv(Duration::from_secs(5)));
            let delivery = delivery.unwrap().expect("a delayed record comes back");
            self.delivered(delivery, span);
            self.observe_dlq(Some(span), &[]);
        }
        // Nothing redelivered them: their acks were persisted.
        for rec in &mut self.recs {
            if rec.maybe_acked && !rec.dead {
                rec.acked = true;
            }
        }
        self.check_settled();
        self.power_loss(seed, None, &[], 0);
        let (again, span) = Span::time(|| self.live().group.try_recv().unwrap());
        assert!(again.is_none(), "redelivered after the drain and a power loss");
        self.observe_dlq(Some(span), &[]);
        self.check_settled();
    }

    fn check_settled(&self) {
        for (offset, rec) in self.recs.iter().enumerate() {
            assert!(
                rec.acked != rec.dead,
                "offset {offset} not settled exactly once: {rec:?}"
            );
        }
        let dead = self.recs.iter().filter(|r| r.dead).count() as u64;
        assert_eq!(
            self.live().dlq.end_offset(),
            dead,
            "dead letters beyond one per record"
        );
        let stats = self.live().group.stats().unwrap();
        assert_eq!(stats.low_watermark, self.recs.len() as u64);
    }
}

fn action() -> impl Strategy<Value = Action> {
    let mid_op = prop_oneof![
        (1usize..=3).prop_map(MidOp::Publish),
        Just(MidOp::Recv),
        any::<usize>().prop_map(MidOp::Ack),
        any::<usize>().prop_map(MidOp::Nack),
        any::<usize>().prop_map(MidOp::Reject),
    ];
    prop_oneof![
        6 => (1usize..=4).prop_map(Action::Publish),
        10 => Just(Action::Recv),
        3 => (0usize..=5).prop_map(Action::RecvBatch),
        5 => any::<usize>().prop_map(Action::Ack),
        3 => any::<usize>().prop_map(Action::Nack),
        2 => (any::<usize>(), prop_oneof![Just(0u64), Just(3), Just(8)])
            .prop_map(|(i, ms)| Action::NackWithDelay(i, ms)),
        1 => any::<usize>().prop_map(Action::Reject),
        2 => any::<usize>().prop_map(Action::Drop),
        1 => any::<bool>().prop_map(|half| Action::Wait { half }),
        1 => any::<u64>().prop_map(Action::PowerLoss),
        2 => (mid_op, 0u64..4, any::<u64>())
            .prop_map(|(op, syncs, seed)| Action::PowerLossDuring { op, syncs, seed }),
        1 => any::<bool>().prop_map(|drop_first| Action::CleanReopen { drop_first }),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        2u32..=4,
        prop::bool::weighted(0.3),
        prop_oneof![Just(1024u64), Just(8192)],
    )
        .prop_map(|(max_attempts, short_lease, segment_bytes)| Config {
            max_attempts,
            short_lease,
            segment_bytes,
        })
}

proptest! {
    // 256 cases unless `PROPTEST_CASES` says otherwise; a fixed seed unless
    // `PROPTEST_RNG_SEED` does. Failures are kept in `proptest-regressions/`.
    #![proptest_config(proptests::config(256, 1, 0x0106_5b05, "proptest-regressions/group_model.txt"))]

    #[test]
    fn group_matches_its_model_through_failures_crashes_and_reopens(
        cfg in config(),
        actions in prop::collection::vec(action(), 1..60),
        final_seed in any::<u64>(),
    ) {
        let mut harness = Harness::new(cfg);
        for action in &actions {
            harness.step(action);
        }
        harness.drain(final_seed);
    }
}

/// Found by the model: a dead letter that recovery found in the DLQ (intent
/// and record durable, the outcome lost) stayed in the ready set, so a later
/// receive handed the dead record out again.
#[test]
fn dead_letter_resolved_by_recovery_is_never_delivered_again() {
    let cfg = Config {
        max_attempts: 3,
        short_lease: false,
        segment_bytes: 8192,
    };
    let mut harness = Harness::new(cfg);
    let steps = [
        Action::Publish(2),
        Action::Recv,
        Action::Recv,
        // Intent and dead letter synced; the power goes before the outcome.
        Action::PowerLossDuring {
            op: MidOp::Reject(1),
            syncs: 2,
            seed: 1,
        },
        Action::Recv,
        Action::Recv,
    ];
    for step in &steps {
        harness.step(step);
    }
    assert!(harness.recs[1].dead && harness.live().dlq.end_offset() == 1);
    harness.drain(2);
}

/// Found by the model: a receive that dead-lettered an exhausted record
/// (here one whose receiver died at its last attempt) left the low
/// watermark behind it until some later ack.
#[test]
fn dead_lettering_during_a_receive_advances_the_low_watermark() {
    let cfg = Config {
        max_attempts: 2,
        short_lease: false,
        segment_bytes: 8192,
    };
    let mut harness = Harness::new(cfg);
    let steps = [
        Action::Publish(1),
        Action::Recv,
        Action::PowerLoss(1),
        Action::Recv,
        Action::PowerLoss(2),
        Action::Recv,
    ];
    for step in &steps {
        harness.step(step);
    }
    assert!(harness.recs[0].dead);
    let stats = harness.live().group.stats().unwrap();
    assert_eq!((stats.low_watermark, stats.dead_lettered), (1, 1));
}
