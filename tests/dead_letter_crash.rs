//! Dead letters on the simulated file system (`SimStorage`), under
//! `Durability::Always`: each dead message is in `<topic>.dlq` exactly once
//! after any crash, redrive returns records with fresh attempts, and the
//! queue refuses bad input with the documented errors.
//!
//! The crash test runs a fixed workload that acks good records, nacks
//! "flaky" ones until their attempts run out and rejects "malformed" ones.
//! For every k it halts the storage after k syncs (then, separately, after
//! k writes), loses power with several seeds, reopens the bus and the group
//! and drains the rest with the same workload. Then every poisoned record
//! must be in the dead-letter topic exactly once with correct headers, no
//! good record may be there, everything must be settled, and no record whose
//! ack, reject or final nack returned `Ok` may ever be delivered again.
//!
//! Dead-lettering writes an intent (with the dead-letter topic's end
//! offset) to the group's state log, appends the record to the dead-letter
//! topic, then marks it dead; recovery searches the dead-letter topic from
//! the intent. A crash at each of those steps is among the k covered here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::groups;
use logbus::storage::{Fault, SimStorage};
use logbus::{
    Backoff, Bus, BusOptions, Delivery, Durability, Error, GroupOptions, Position, Record, RetryPolicy,
    StartAt, StoredRecord, TopicOptions, headers,
};

const BUS_DIR: &str = "/sim/bus";
const TOPIC: &str = "orders";
const DLQ: &str = "orders.dlq";
const GROUP: &str = "billing";
const MAX_ATTEMPTS: u32 = 3;
const STOPPED: &str = "receiver stopped before settling";

/// What the workload does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Acked.
    Good,
    /// Nacked on every attempt, so it is dead-lettered after `MAX_ATTEMPTS`.
    Flaky,
    /// Rejected at once.
    Malformed,
}

use Kind::{Flaky, Good, Malformed};

const PLAN: [Kind; 12] = [
    Good, Flaky, Good, Malformed, Good, Flaky, Good, Good, Malformed, Flaky, Good, Good,
];

fn kind_of(offset: u64) -> Kind {
    PLAN[offset as usize]
}

fn value(offset: u64) -> String {
    format!("{:?} order {offset}", kind_of(offset))
}

fn bus_options(sim: &SimStorage) -> BusOptions {
    // Small segments: the dead-letter topic rolls a segment now and then.
    let topics = TopicOptions::default()
        .durability(Durability::Always)
        .segment_bytes(1024);
    BusOptions::default()
        .storage(Arc::new(sim.clone()))
        .topic_defaults(topics)
}

fn group_options() -> GroupOptions {
    groups::group_options(Duration::from_secs(600), MAX_ATTEMPTS, Duration::ZERO)
}

fn open_bus(sim: &SimStorage) -> logbus::Result<Bus> {
    Bus::open(BUS_DIR, bus_options(sim))
}

/// A simulated disk holding the published plan, cleanly closed.
fn published_plan() -> SimStorage {
    let sim = SimStorage::new();
    let bus = open_bus(&sim).expect("open");
    let topic = bus.topic(TOPIC).expect("topic");
    for offset in 0..PLAN.len() as u64 {
        let value = value(offset);
        let key = format!("customer-{}", offset % 4);
        let trace = offset.to_le_bytes();
        let record = Record::new(&value).key(&key).header("trace", &trace);
        assert_eq!(topic.publish(&record).expect("publish"), offset);
    }
    bus.close().expect("close");
    sim
}

// ------------------------------------------------------------ the workload

/// What the workload saw return `Ok`.
#[derive(Debug, Default)]
struct Settled {
    acked: BTreeSet<u64>,
    dead: BTreeSet<u64>,
}

impl Settled {
    /// Settles one delivery as the plan says.
    fn settle(&mut self, delivery: Delivery, context: &str) -> logbus::Result<()> {
        let offset = delivery.record().offset();
        let attempt = delivery.attempt();
        assert!(
            !self.acked.contains(&offset) && !self.dead.contains(&offset),
            "offset {offset} delivered again (attempt {attempt}) after it was settled: {context}"
        );
        assert!(
            attempt <= MAX_ATTEMPTS,
            "offset {offset}: attempt {attempt}: {context}"
        );
        match kind_of(offset) {
            Good => {
                delivery.ack()?;
                self.acked.insert(offset);
            }
            Flaky => {
                delivery.nack(&format!("flaky attempt {attempt}"))?;
                if attempt == MAX_ATTEMPTS {
                    self.dead.insert(offset);
                }
            }
            Malformed => {
                delivery.reject("malformed")?;
                self.dead.insert(offset);
            }
        }
        Ok(())
    }

    /// Receives and settles until the group has nothing left: two deliveries
    /// at a time, the later one settled first. Stops at the first error.
    fn run(&mut self, bus: &Bus, context: &str) -> logbus::Result<()> {
        let group = bus.topic(TOPIC)?.group(GROUP, group_options())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let first = group.try_recv()?;
            let second = group.try_recv()?;
            if first.is_none() && group.stats()?.lag == 0 {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "the group never drained: {context}");
            for delivery in [second, first].into_iter().flatten() {
                self.settle(delivery, context)?;
            }
        }
    }
}

// ------------------------------------------------------------- the checks

fn header(record: &StoredRecord, name: &str) -> Option<String> {
    record
        .header(name)
        .map(|v| String::from_utf8(v.to_vec()).expect("UTF-8 header"))
}

/// What the checks noticed beyond pass/fail.
#[derive(Debug, Default)]
struct Figures {
    trials: u64,
    crashed_mid_workload: u64,
    dead_before_crash: u64,
    /// Dead letters whose last failure is the one recovery recorded.
    recovery_reason: u64,
    /// Rejected records whose dead letter lacks the reject reason.
    reject_reason_lost: u64,
}

/// Checks one dead letter's headers and content; returns its source offset.
fn check_dead_letter(dead: &StoredRecord, figures: &mut Figures, context: &str) -> u64 {
    let must = |name: &str| header(dead, name).unwrap_or_else(|| panic!("no {name}: {context}"));
    let offset: u64 = must(headers::SOURCE_OFFSET).parse().expect("decimal offset");
    let context = format!("dead letter of offset {offset}: {context}");
    assert!((offset as usize) < PLAN.len(), "{context}");
    assert_eq!(must(headers::SOURCE_TOPIC), TOPIC, "{context}");
    assert_eq!(must(headers::SOURCE_GROUP), GROUP, "{context}");
    assert_eq!(dead.value(), value(offset).as_bytes(), "{context}");
    assert_eq!(
        dead.key(),
        format!("customer-{}", offset % 4).as_bytes(),
        "{context}"
    );
    assert_eq!(dead.header("trace"), Some(&offset.to_le_bytes()[..]), "{context}");
    let attempts: u32 = must(headers::ATTEMPTS).parse().expect("decimal attempts");
    let reason = must(headers::LAST_REASON);
    let own_reason = match kind_of(offset) {
        Good => panic!("a good record was dead-lettered: {context}"),
        Flaky => {
            assert_eq!(attempts, MAX_ATTEMPTS, "{context}");
            format!("flaky attempt {MAX_ATTEMPTS}")
        }
        Malformed => {
            assert!((1..=MAX_ATTEMPTS).contains(&attempts), "{context}");
            "malformed".to_owned()
        }
    };
    // A crash between the intent and the dead letter loses the failure that
    // was only in memory; the record is then dead-lettered at recovery with
    // the failure recovery recorded.
    assert!(
        reason == own_reason || reason == STOPPED,
        "last reason {reason:?}: {context}"
    );
    figures.recovery_reason += u64::from(reason == STOPPED);
    let failures: Vec<String> = dead
        .headers()
        .filter(|(name, _)| *name == headers::FAILURE)
        .map(|(_, v)| String::from_utf8(v.to_vec()).expect("UTF-8 failure"))
        .collect();
    assert!(!failures.is_empty(), "{context}");
    let mut times = Vec::new();
    for failure in &failures {
        let (at_ms, text) = failure.split_once(' ').expect("\"<ms> <reason>\"");
        times.push(at_ms.parse::<i64>().expect("ms"));
        let known = text == STOPPED || text == "malformed" || text.starts_with("flaky attempt ");
        assert!(known, "failure {failure:?}: {context}");
    }
    assert_eq!(
        failures.last().and_then(|f| f.split_once(' ')).map(|f| f.1),
        Some(&*reason)
    );
    let rejected_with_reason = failures.iter().any(|f| f.ends_with(" malformed"));
    figures.reject_reason_lost += u64::from(kind_of(offset) == Malformed && !rejected_with_reason);
    assert_eq!(must(headers::FIRST_FAILURE), times[0].to_string(), "{context}");
    assert_eq!(
        must(headers::LAST_FAILURE),
        times[times.len() - 1].to_string(),
        "{context}"
    );
    assert!(times.is_sorted(), "{context}");
    offset
}

/// Checks the dead-letter topic and the group after the drain.
fn check_drained(bus: &Bus, figures: &mut Figures, context: &str) {
    let dlq = bus.topic(DLQ).expect("dead-letter topic");
    let mut copies: BTreeMap<u64, u32> = BTreeMap::new();
    let mut cursor = dlq
        .log()
        .expect("embedded topic")
        .cursor(Position::Earliest)
        .expect("cursor");
    while let Some(dead) = cursor.next().expect("read a dead letter") {
        *copies
            .entry(check_dead_letter(&dead, figures, context))
            .or_default() += 1;
    }
    let poisoned: BTreeMap<u64, u32> = (0..PLAN.len() as u64)
        .filter(|&o| kind_of(o) != Good)
        .map(|o| (o, 1))
        .collect();
    assert_eq!(copies, poisoned, "dead letters per source offset: {context}");
    let group = bus
        .topic(TOPIC)
        .expect("topic")
        .group(GROUP, group_options())
        .expect("group");
    let stats = group.stats().expect("stats");
    assert_eq!(
        (stats.low_watermark, stats.lag, stats.in_flight, stats.waiting),
        (PLAN.len() as u64, 0, 0, 0),
        "{context}"
    );
}

// -------------------------------------------------------------- the trials

/// Runs the workload until `fault` halts the storage, loses power with
/// `seed`, recovers, drains and checks.
fn trial(fault: Fault, seed: u64, figures: &mut Figures) -> bool {
    let context = format!("{fault:?}, power-loss seed {seed}");
    let sim = published_plan();
    sim.inject(fault);
    let mut settled = Settled::default();
    let (completed, fired) = match open_bus(&sim) {
        Ok(bus) => {
            let outcome = settled.run(&bus, &context);
            let fired = sim.is_halted();
            // The crash: nothing more reaches the disk, not even on drop.
            sim.inject(Fault::HaltAfterSyncs { after: 0 });
            drop(bus);
            (outcome.is_ok(), fired)
        }
        Err(_) => (false, true),
    };
    assert!(
        completed || fired,
        "the workload failed without a fault: {context}"
    );
    figures.trials += 1;
    figures.crashed_mid_workload += u64::from(!completed);
    figures.dead_before_crash += settled.dead.len() as u64;
    sim.power_loss(seed);
    let bus = open_bus(&sim).unwrap_or_else(|e| panic!("reopen after the crash failed: {e}: {context}"));
    settled
        .run(&bus, &context)
        .unwrap_or_else(|e| panic!("drain failed: {e}: {context}"));
    check_drained(&bus, figures, &context);
    bus.close().expect("close");
    // Settled stays settled: a further reopen delivers nothing.
    let bus = open_bus(&sim).expect("reopen");
    settled.run(&bus, &context).expect("nothing left");
    check_drained(&bus, &mut Figures::default(), &context);
    bus.close().expect("close");
    fired
}

/// Crashes at every step the fault counts, with several power-loss seeds,
/// until the fault no longer fires (the last few k halt the group's close on
/// drop, after the workload's last call returned).
fn crash_at_every_step(fault: fn(u64) -> Fault, what: &str) -> Figures {
    const SEEDS: u64 = 4;
    let mut figures = Figures::default();
    let mut k = 0;
    loop {
        let mut fired = false;
        for s in 0..SEEDS {
            let seed = 0xdead_1e77 ^ (k << 8) ^ s;
            fired |= trial(fault(k), seed, &mut figures);
        }
        if !fired {
            break;
        }
        k += 1;
        assert!(k < 10_000, "the workload never finished before the fault");
    }
    eprintln!("halt after k {what}s, k = 0..={k}: {figures:?}");
    assert!(k > 20, "the workload made only {k} {what}s");
    assert!(figures.dead_before_crash > 0, "no crash came after a dead letter");
    figures
}

#[test]
fn crash_at_every_sync_leaves_each_dead_letter_in_the_dlq_exactly_once() {
    crash_at_every_step(|after| Fault::HaltAfterSyncs { after }, "sync");
}

#[test]
fn crash_at_every_write_leaves_each_dead_letter_in_the_dlq_exactly_once() {
    crash_at_every_step(|after| Fault::HaltAfterWrites { after }, "write");
}

// ---------------------------------------------------------------- redrive

/// A fresh plan run once through the group: its flaky and malformed records
/// are in the dead-letter topic.
fn dead_lettered_plan() -> (SimStorage, Bus) {
    let sim = published_plan();
    let bus = open_bus(&sim).expect("open");
    Settled::default().run(&bus, "first pass").expect("first pass");
    (sim, bus)
}

fn dlq_offsets(bus: &Bus, from: u64) -> Vec<u64> {
    let dlq = bus.topic(DLQ).expect("dlq");
    let mut cursor = dlq
        .log()
        .expect("embedded topic")
        .cursor(Position::Offset(from))
        .expect("cursor");
    let mut offsets = Vec::new();
    while let Some(dead) = cursor.next().expect("read") {
        offsets.push(
            header(&dead, headers::SOURCE_OFFSET)
                .expect("offset")
                .parse()
                .expect("decimal"),
        );
    }
    offsets
}

#[test]
fn redrive_returns_records_with_fresh_attempts_and_a_redrive_count_that_follows_them_back() {
    let (_sim, bus) = dead_lettered_plan();
    let topic = bus.topic(TOPIC).expect("topic");
    // In the order they were dead-lettered, which redrive keeps.
    let poisoned = dlq_offsets(&bus, 0);
    let mut sorted = poisoned.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..PLAN.len() as u64)
            .filter(|&o| kind_of(o) != Good)
            .collect::<Vec<_>>()
    );

    let end = topic.end_offset();
    assert_eq!(bus.redrive(DLQ, |_| true).expect("redrive"), poisoned.len());
    assert_eq!(topic.end_offset(), end + poisoned.len() as u64);
    let group = topic.group(GROUP, group_options()).expect("group");
    for (i, &source) in poisoned.iter().enumerate() {
        let delivery = group.try_recv().expect("recv").expect("redriven record");
        let record = delivery.record();
        assert_eq!(record.offset(), end + i as u64);
        assert_eq!(delivery.attempt(), 1, "fresh attempts");
        assert_eq!(record.value(), value(source).as_bytes());
        assert_eq!(record.key(), format!("customer-{}", source % 4).as_bytes());
        assert_eq!(record.header("trace"), Some(&source.to_le_bytes()[..]));
        assert_eq!(header(record, headers::REDRIVE_COUNT).as_deref(), Some("1"));
        assert_eq!(
            header(record, headers::SOURCE_OFFSET),
            None,
            "dead-letter headers stripped"
        );
        assert_eq!(header(record, headers::ATTEMPTS), None);
        // Fails again, all the way.
        delivery.reject("still malformed").expect("reject");
    }
    let second_round: Vec<u64> = (end..end + poisoned.len() as u64).collect();
    assert_eq!(dlq_offsets(&bus, poisoned.len() as u64), second_round);
    let dlq = bus.topic(DLQ).expect("dlq");
    for offset in poisoned.len() as u64..2 * poisoned.len() as u64 {
        let dead = dlq
            .log()
            .expect("embedded topic")
            .read(offset)
            .expect("read")
            .expect("dead letter");
        assert_eq!(header(&dead, headers::REDRIVE_COUNT).as_deref(), Some("1"));
        assert_eq!(header(&dead, headers::ATTEMPTS).as_deref(), Some("1"));
        assert_eq!(
            header(&dead, headers::LAST_REASON).as_deref(),
            Some("still malformed")
        );
    }

    assert_eq!(bus.redrive(DLQ, |_| true).expect("redrive"), poisoned.len());
    let delivery = group.try_recv().expect("recv").expect("redriven twice");
    assert_eq!(
        header(delivery.record(), headers::REDRIVE_COUNT).as_deref(),
        Some("2")
    );
    assert_eq!(delivery.attempt(), 1);
    // A nacked redriven record is dead-lettered after MAX_ATTEMPTS again.
    delivery.nack("flaky 1").expect("nack");
    for attempt in 2..=MAX_ATTEMPTS {
        let delivery = group.try_recv().expect("recv").expect("redelivery");
        assert_eq!(delivery.attempt(), attempt);
        delivery.nack(&format!("flaky {attempt}")).expect("nack");
    }
    let last = dlq
        .log()
        .expect("embedded topic")
        .read(dlq.end_offset() - 1)
        .expect("read")
        .expect("dead letter");
    assert_eq!(header(&last, headers::REDRIVE_COUNT).as_deref(), Some("2"));
    assert_eq!(header(&last, headers::ATTEMPTS), Some(MAX_ATTEMPTS.to_string()));
    assert_eq!(bus.redrive(DLQ, |_| true).expect("redrive"), 1);
    assert_eq!(bus.redrive(DLQ, |_| true).expect("redrive"), 0);
    bus.close().expect("close");
}

#[test]
fn redrive_filter_leaves_unselected_records_in_the_dlq_for_a_later_redrive() {
    let (sim, bus) = dead_lettered_plan();
    let is_malformed = |r: &StoredRecord| r.value().starts_with(b"Malformed");
    let malformed = PLAN.iter().filter(|&&k| k == Malformed).count();
    let flaky = PLAN.iter().filter(|&&k| k == Flaky).count();
    assert_eq!(bus.redrive(DLQ, is_malformed).expect("redrive"), malformed);
    assert_eq!(
        bus.redrive(DLQ, is_malformed).expect("redrive"),
        0,
        "moved once only"
    );
    bus.close().expect("close");

    // The unselected ones wait, also across a reopen.
    let bus = open_bus(&sim).expect("reopen");
    let topic = bus.topic(TOPIC).expect("topic");
    let end = topic.end_offset();
    assert_eq!(bus.redrive(DLQ, |_| true).expect("redrive"), flaky);
    assert_eq!(bus.redrive(DLQ, |_| true).expect("redrive"), 0);
    let mut cursor = topic
        .log()
        .expect("embedded topic")
        .cursor(Position::Offset(end - malformed as u64))
        .expect("cursor");
    let mut back = Vec::new();
    while let Some(record) = cursor.next().expect("read") {
        assert_eq!(header(&record, headers::REDRIVE_COUNT).as_deref(), Some("1"));
        back.push(String::from_utf8(record.value().to_vec()).expect("UTF-8"));
    }
    let values_of = |kind: Kind| -> BTreeSet<String> {
        (0..PLAN.len() as u64)
            .filter(|&o| kind_of(o) == kind)
            .map(value)
            .collect()
    };
    assert_eq!(back.len(), malformed + flaky);
    assert_eq!(
        back[..malformed].iter().cloned().collect::<BTreeSet<_>>(),
        values_of(Malformed)
    );
    assert_eq!(
        back[malformed..].iter().cloned().collect::<BTreeSet<_>>(),
        values_of(Flaky)
    );
    bus.close().expect("close");
}

// -------------------------------------------------------------- bad input

fn single_record_bus(lease: Duration, backoff: Duration) -> (Bus, logbus::Group) {
    let sim = SimStorage::new();
    let bus = open_bus(&sim).expect("open");
    let topic = bus.topic(TOPIC).expect("topic");
    topic.publish(&Record::new(b"only")).expect("publish");
    let options = groups::group_options(lease, 10, backoff);
    let group = topic.group(GROUP, options).expect("group");
    (bus, group)
}

#[test]
fn ack_and_extend_lease_of_an_expired_delivery_fail_with_lease_expired_once_it_was_redelivered() {
    let (bus, group) = single_record_bus(Duration::from_millis(50), Duration::ZERO);
    let mut stale = group.try_recv().expect("recv").expect("delivery");
    // Returns once the first lease has expired and the record is handed out again.
    let fresh = group
        .recv(Duration::from_secs(10))
        .expect("recv")
        .expect("redelivery");
    assert_eq!(fresh.attempt(), 2);
    assert!(matches!(
        stale.extend_lease(Duration::from_secs(60)),
        Err(Error::LeaseExpired { offset: 0 })
    ));
    assert!(matches!(stale.ack(), Err(Error::LeaseExpired { offset: 0 })));
    fresh.ack().expect("the current holder acks");
    assert!(group.try_recv().expect("recv").is_none());
    let stats = group.stats().expect("stats");
    assert_eq!((stats.acked, stats.redeliveries, stats.low_watermark), (1, 1, 1));
    bus.close().expect("close");
}

#[test]
fn nack_and_reject_of_an_expired_and_redelivered_delivery_fail_with_lease_expired() {
    let (bus, group) = single_record_bus(Duration::from_millis(50), Duration::ZERO);
    let first = group.try_recv().expect("recv").expect("delivery");
    let second = group
        .recv(Duration::from_secs(10))
        .expect("recv")
        .expect("redelivery");
    let third = group
        .recv(Duration::from_secs(10))
        .expect("recv")
        .expect("redelivery");
    assert_eq!(third.attempt(), 3);
    assert!(matches!(
        first.nack("late"),
        Err(Error::LeaseExpired { offset: 0 })
    ));
    assert!(matches!(
        second.reject("late"),
        Err(Error::LeaseExpired { offset: 0 })
    ));
    third.ack().expect("ack");
    assert_eq!(
        bus.topic(DLQ).expect("dlq").end_offset(),
        0,
        "a stale reject dead-lettered nothing"
    );
    bus.close().expect("close");
}

#[test]
fn extend_lease_of_an_expired_delivery_nobody_took_yet_takes_it_back() {
    let (bus, group) = single_record_bus(Duration::from_millis(50), Duration::from_secs(3600));
    let mut held = group.try_recv().expect("recv").expect("delivery");
    // This receive outlasts the lease, then finds the record waiting out
    // its hour of backoff.
    assert!(group.recv(Duration::from_millis(150)).expect("recv").is_none());
    assert_eq!(group.stats().expect("stats").waiting, 1);
    held.extend_lease(Duration::from_secs(60))
        .expect("not redelivered yet");
    assert_eq!(group.stats().expect("stats").in_flight, 1);
    held.ack().expect("ack");
    assert_eq!(group.stats().expect("stats").low_watermark, 1);
    bus.close().expect("close");
}

#[test]
fn receive_on_a_closed_bus_fails_with_closed_and_wakes_a_waiting_receiver() {
    let sim = SimStorage::new();
    let bus = open_bus(&sim).expect("open");
    let topic = bus.topic(TOPIC).expect("topic");
    let group = topic.group(GROUP, group_options()).expect("group");
    let mut sub = topic.subscribe("reader", StartAt::Earliest).expect("sub");
    let waiting = {
        let group = group.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            (group.recv(Duration::from_secs(30)), started.elapsed())
        })
    };
    // Close once the receiver is (very likely) waiting; if it is not yet,
    // its first poll sees the closed bus, which is checked the same way.
    std::thread::sleep(Duration::from_millis(50));
    bus.close().expect("close");
    let (result, waited) = waiting.join().expect("receiver thread");
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert!(
        waited < Duration::from_secs(10),
        "the waiting receiver was not woken: {waited:?}"
    );
    assert!(matches!(group.try_recv(), Err(Error::Closed)));
    assert!(matches!(
        group.recv(Duration::from_millis(10)),
        Err(Error::Closed)
    ));
    assert!(matches!(sub.try_recv(), Err(Error::Closed)));
    assert!(matches!(sub.recv(Duration::from_millis(10)), Err(Error::Closed)));
    assert!(matches!(topic.publish(&Record::new(b"late")), Err(Error::Closed)));
    assert!(matches!(bus.topic(TOPIC), Err(Error::Closed)));
    assert!(matches!(bus.queue("other"), Err(Error::Closed)));
}

#[test]
fn group_options_with_zero_max_attempts_or_zero_lease_are_invalid() {
    let sim = SimStorage::new();
    let bus = open_bus(&sim).expect("open");
    let topic = bus.topic(TOPIC).expect("topic");
    let zero_attempts = GroupOptions::default().retry(
        RetryPolicy::default()
            .max_attempts(0)
            .backoff(Backoff::Fixed(Duration::ZERO)),
    );
    assert!(matches!(
        topic.group(GROUP, zero_attempts),
        Err(Error::InvalidArgument(_))
    ));
    let zero_lease = GroupOptions::default().lease(Duration::ZERO);
    assert!(matches!(
        topic.group(GROUP, zero_lease),
        Err(Error::InvalidArgument(_))
    ));
    // Nothing was created for the refused groups: valid options still work.
    let state = Path::new(BUS_DIR).join("state/groups").join(TOPIC).join(GROUP);
    assert!(
        sim.files().iter().all(|f| !f.starts_with(&state)),
        "state created for a refused group"
    );
    topic
        .group(GROUP, GroupOptions::default())
        .expect("valid options");
    bus.close().expect("close");
}
