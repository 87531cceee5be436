//! A dead letter that cannot be written leaves its record deliverable: on
//! the simulated file system (`SimStorage`, under `Durability::Always`),
//! the dead-letter topic's writes fail (disk full, an I/O error), and the
//! call that tried returns the failure; the record stays in the group, is
//! tried again on the next receive (also after a reopen) and lands in the
//! dead-letter topic exactly once when the fault clears. Before, it was in
//! neither the ready set nor in flight: receives returned nothing forever
//! and the low watermark never passed it. A group opens its dead-letter
//! topic when it opens; a failure to do so must not fail the group. A dead
//! letter is written outside the group's lock: other receivers go on.

mod common;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::groups;
use common::storage::{Hooked, Hooks};
use logbus::clock::SimClock;
use logbus::storage::{Fault, SimStorage, Storage};
use logbus::{
    Bus, BusOptions, Durability, Error, Group, GroupOptions, Position, Record, TopicOptions, headers,
};

const BUS_DIR: &str = "/sim/bus";
const TOPIC: &str = "orders";
const DLQ: &str = "orders.dlq";
const SHORT: Duration = Duration::from_millis(20);

fn open_bus(storage: Arc<dyn Storage>) -> Bus {
    let topics = TopicOptions::default().durability(Durability::Always);
    let options = BusOptions::default().storage(storage).topic_defaults(topics);
    Bus::open(BUS_DIR, options).expect("open the bus")
}

/// One delivery, no backoff: the first nack dead-letters.
fn one_attempt() -> GroupOptions {
    groups::group_options(Duration::from_secs(600), 1, Duration::ZERO)
}

fn publish(bus: &Bus, count: u64) {
    let topic = bus.topic(TOPIC).expect("topic");
    for i in 0..count {
        topic
            .publish(&Record::new(&format!("order {i}")))
            .expect("publish");
    }
}

/// Source offsets of the dead letters in the dead-letter topic, in order.
fn dead_letters(bus: &Bus) -> Vec<u64> {
    let dlq = bus.topic(DLQ).expect("dlq");
    let log = dlq.log().expect("embedded topic");
    let mut cursor = log.cursor(Position::Earliest).expect("cursor");
    let mut offsets = Vec::new();
    while let Some(dead) = cursor.next().expect("read") {
        let offset = dead.header(headers::SOURCE_OFFSET).expect("source offset");
        offsets.push(std::str::from_utf8(offset).unwrap().parse().unwrap());
    }
    offsets
}

/// Receives the next record and nacks it: its only attempt.
fn nack_next(group: &Group) -> logbus::Result<()> {
    let delivery = group.recv(SHORT)?.expect("a delivery");
    delivery.nack("cannot process")
}

/// Total bytes stored on the simulated disk.
fn stored_bytes(sim: &SimStorage) -> u64 {
    sim.files()
        .iter()
        .map(|p| sim.read_file(p).map_or(0, |b| b.len() as u64))
        .sum()
}

/// Fails every write to the dead-letter topic's files with EIO while on.
#[derive(Debug, Default)]
struct FailingDeadLetterTopic {
    on: AtomicBool,
}

impl Hooks for FailingDeadLetterTopic {
    fn before_write(&self, path: &Path, _pos: u64, _len: usize) -> io::Result<()> {
        let dlq_file = path.components().any(|c| c.as_os_str() == DLQ);
        match dlq_file && self.on.load(Ordering::SeqCst) {
            true => Err(io::Error::other("injected I/O error")),
            false => Ok(()),
        }
    }
}

#[test]
fn a_dead_letter_that_fails_on_a_full_disk_is_returned_retried_and_lands_once_when_space_returns() {
    let sim = SimStorage::new();
    let bus = open_bus(Arc::new(sim.clone()));
    publish(&bus, 2);
    let topic = bus.topic(TOPIC).unwrap();
    // A group opens its dead-letter topic when it opens (or is asked for
    // with dead-lettering on): this one has none yet.
    let no_dead_letters = one_attempt().dead_letter(false);
    let _opened = topic.group("billing", no_dead_letters).unwrap();
    // No room for the dead-letter topic's first segment: the group still
    // opens with dead-lettering on, and the dead letter fails.
    sim.inject(Fault::DiskFull {
        capacity: stored_bytes(&sim),
    });
    let group = topic.group("billing", one_attempt()).unwrap();
    assert!(matches!(nack_next(&group), Err(Error::Io(_))));
    for _ in 0..3 {
        assert!(
            matches!(group.recv(SHORT), Err(Error::Io(_))),
            "each receive tries the dead letter again and returns its failure"
        );
    }
    assert_eq!(group.stats().unwrap().low_watermark, 0);
    sim.clear_faults();
    nack_next(&group).expect("the second record is delivered and dead-lettered");
    assert!(group.recv(SHORT).unwrap().is_none());
    assert_eq!(dead_letters(&bus), [0, 1]);
    assert_eq!(group.stats().unwrap().low_watermark, 2);
}

#[test]
fn a_dead_letter_that_fails_with_an_io_error_stays_deliverable_across_a_reopen_and_lands_once() {
    let sim = SimStorage::new();
    let hooks = Arc::new(FailingDeadLetterTopic::default());
    let storage = || -> Arc<dyn Storage> { Arc::new(Hooked::shared(sim.clone(), hooks.clone())) };
    let bus = open_bus(storage());
    publish(&bus, 3);
    let group = bus.topic(TOPIC).unwrap().group("billing", one_attempt()).unwrap();
    nack_next(&group).expect("the first dead letter is written");
    hooks.on.store(true, Ordering::SeqCst);
    assert!(nack_next(&group).is_err());
    assert!(group.recv(SHORT).is_err(), "the dead letter is tried again");
    drop(group);
    let _ = bus.close();

    // Reopened while the fault lasts: the record is still there, not lost.
    let bus = open_bus(storage());
    let group = bus.topic(TOPIC).unwrap().group("billing", one_attempt()).unwrap();
    assert!(group.recv(SHORT).is_err());
    drop(group);
    let _ = bus.close();

    hooks.on.store(false, Ordering::SeqCst);
    let bus = open_bus(storage());
    let group = bus.topic(TOPIC).unwrap().group("billing", one_attempt()).unwrap();
    nack_next(&group).expect("the third record is delivered and dead-lettered");
    assert!(group.recv(SHORT).unwrap().is_none());
    assert_eq!(dead_letters(&bus), [0, 1, 2]);
    assert_eq!(group.stats().unwrap().low_watermark, 3);
}

/// A receive that took records kept by the prefetch and then fails (here
/// on a dead letter it meets while leasing more) keeps them: the next
/// receive hands them out on the same attempt, instead of their being
/// released as failed attempts.
#[test]
fn a_receive_that_fails_keeps_the_prefetched_records_it_took() {
    let sim = SimStorage::new();
    let hooks = Arc::new(FailingDeadLetterTopic::default());
    let clock = SimClock::new();
    let topics = TopicOptions::default().durability(Durability::Always);
    let options = BusOptions::default()
        .storage(Arc::new(Hooked::shared(sim.clone(), hooks.clone())))
        .clock(clock.clone())
        .topic_defaults(topics);
    let bus = Bus::open(BUS_DIR, options).unwrap();
    let backoff = Duration::from_secs(1);
    let group_options = groups::group_options(Duration::from_secs(600), 2, backoff).prefetch(4);
    let group = bus.topic(TOPIC).unwrap().group("billing", group_options).unwrap();

    // Record 0 fails twice; its dead letter fails: due again after backoff.
    publish(&bus, 1);
    nack_next(&group).unwrap();
    clock.advance(backoff);
    hooks.on.store(true, Ordering::SeqCst);
    assert!(nack_next(&group).is_err());
    // Records 1 to 3 are leased together: 1 goes out, 2 and 3 are kept.
    publish(&bus, 3);
    let first = group.try_recv().unwrap().expect("record 1");
    assert_eq!((first.record().offset(), first.attempt()), (1, 1));
    first.ack().unwrap();

    // Record 0 falls due: a receive takes 2 and 3, meets 0, and its dead
    // letter fails again (the dead-letter topic's log is poisoned now).
    clock.advance(backoff);
    assert!(group.try_recv_batch(3).is_err());
    let batch = group.try_recv_batch(2).unwrap();
    let got: Vec<(u64, u32)> = batch.iter().map(|d| (d.record().offset(), d.attempt())).collect();
    assert_eq!(got, [(2, 1), (3, 1)], "kept, on their first attempt");
    for delivery in batch {
        delivery.ack().unwrap();
    }
    let stats = group.stats().unwrap();
    assert_eq!(
        (stats.low_watermark, stats.in_flight),
        (0, 0),
        "record 0 is still due"
    );
}

#[test]
fn a_group_that_dead_letters_opens_its_dead_letter_topic_when_it_opens_and_no_other_does() {
    let sim = SimStorage::new();
    let bus = open_bus(Arc::new(sim.clone()));
    let topic = bus.topic(TOPIC).unwrap();
    let no_dead_letters = one_attempt().dead_letter(false);
    topic.group("audit", no_dead_letters).unwrap();
    assert_eq!(bus.topic_names().unwrap(), [TOPIC]);
    topic.group("billing", one_attempt()).unwrap();
    assert_eq!(bus.topic_names().unwrap(), [TOPIC, DLQ]);
}

/// Holds every write to the dead-letter topic's files, once armed, until
/// the gate opens.
#[derive(Debug, Default)]
struct StalledDeadLetterTopic {
    armed: AtomicBool,
    stalled: AtomicBool,
    open: Mutex<bool>,
    opened: Condvar,
}

impl StalledDeadLetterTopic {
    fn open_gate(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Hooks for StalledDeadLetterTopic {
    fn before_write(&self, path: &Path, _pos: u64, _len: usize) -> io::Result<()> {
        let dlq_file = path.components().any(|c| c.as_os_str() == DLQ);
        if dlq_file && self.armed.load(Ordering::SeqCst) {
            self.stalled.store(true, Ordering::SeqCst);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        Ok(())
    }
}

#[test]
fn a_dead_letter_being_written_holds_up_no_other_receiver_of_its_group() {
    let sim = SimStorage::new();
    let hooks = Arc::new(StalledDeadLetterTopic::default());
    let bus = open_bus(Arc::new(Hooked::shared(sim.clone(), hooks.clone())));
    publish(&bus, 3);
    let group = bus.topic(TOPIC).unwrap().group("billing", one_attempt()).unwrap();
    let failing = group.recv(SHORT).unwrap().expect("record 0");
    let other = group.recv(SHORT).unwrap().expect("record 1");
    hooks.armed.store(true, Ordering::SeqCst);
    std::thread::scope(|scope| {
        let nacker = scope.spawn(|| failing.nack("cannot process"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !hooks.stalled.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::yield_now();
        }
        // The dead letter of record 0 is stuck in its write; the group
        // must still settle and hand out the others.
        let (done, finished) = mpsc::channel();
        let receiver = group.clone();
        scope.spawn(move || {
            other.ack().expect("ack record 1");
            let third = receiver.try_recv().unwrap().expect("record 2");
            done.send(third.ack()).unwrap();
        });
        let served = finished.recv_timeout(Duration::from_secs(10));
        hooks.open_gate();
        served
            .expect("the group served others while a dead letter was written")
            .expect("ack record 2");
        nacker.join().unwrap().expect("the dead letter lands");
    });
    assert_eq!(dead_letters(&bus), [0]);
    assert_eq!(group.stats().unwrap().low_watermark, 3);
}
