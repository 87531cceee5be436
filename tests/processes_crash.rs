//! Several processes on one bus directory, killed at random: the
//! guarantees of docs/SEMANTICS.md ("Several processes") checked with
//! real processes, real files and `kill -9`.
//!
//! Publisher and consumer processes (this test binary re-executed, see
//! `tests/common/child.rs`) open one directory; whichever opened it
//! first owns it and serves the others, and when the parent kills the
//! owner one of the others takes over. Publishers publish records with
//! ids and report each publish that returned; consumers share one group
//! and report each record received and each ack that returned (the group
//! prefetches: a receive leases up to four records and keeps the rest for
//! the next); every fiftieth record is poison, nacked until it is
//! dead-lettered. The
//! parent kills a random child every few dozen milliseconds (the owner
//! among them, about as often as any) and starts another in its place.
//! At the end it kills every child, opens the directory itself, drains
//! the group, and checks:
//! - every acknowledged publish is consumed: acked by a child (or at
//!   least acking when it was killed), acked in the drain, or
//!   dead-lettered;
//! - no ack is lost: no record whose ack returned is delivered again;
//! - each dead-lettered record is in the dead-letter topic exactly once,
//!   and every poison record is there;
//! - offsets stay dense (the topic holds as many records as its end).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::child::{self, Running, Waited, open_or_exit, report, spawn_words};
use logbus::{Backoff, Bus, BusOptions, GroupOptions, Position, Record, RetryPolicy, headers};

const ENTRY_POINT: &str = "processes_child_entry_point";
const DEFAULT_SEED: u64 = 0x9e0c_e55e_5000;
const TOPIC: &str = "work";
const GROUP: &str = "workers";
const POISON_EVERY: u64 = 50;
const MAX_ATTEMPTS: u32 = 3;
const PUBLISHERS: usize = 2;
const CONSUMERS: usize = 2;

/// Consumers prefetch: a kill often finds records leased and kept, a
/// receive's batch handed out in part and acked in part.
fn group_options() -> GroupOptions {
    GroupOptions::default()
        .prefetch(4)
        .lease(Duration::from_secs(2))
        .dead_letter(true)
        .retry(
            RetryPolicy::default()
                .max_attempts(MAX_ATTEMPTS)
                .backoff(Backoff::Fixed(Duration::from_millis(5))),
        )
}

fn is_poison(value: &[u8]) -> bool {
    value.starts_with(b"poison ")
}

/// The id a record's value names (its value is the id, after `poison `
/// for a poison record).
fn id_of(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.strip_prefix("poison ").unwrap_or(&text).to_owned()
}

// ------------------------------------------------------------------ child

/// Entry point of the children; returns at once in a normal run.
#[test]
fn processes_child_entry_point() {
    let Some((mode, dir)) = child::role() else {
        return;
    };
    let bus = open_or_exit(Bus::open(&dir, BusOptions::default()));
    report("open");
    match mode.split_once(' ') {
        Some(("publish", name)) => publish(&bus, name),
        _ => consume(&bus),
    }
}

fn publish(bus: &Bus, name: &str) -> ! {
    let topic = open_or_exit(bus.topic(TOPIC));
    for seq in 0u64.. {
        let id = format!("{name}-{seq}");
        let value = match seq % POISON_EVERY == 7 {
            true => format!("poison {id}"),
            false => id.clone(),
        };
        match topic.publish(&Record::new(&value).id(&id)) {
            Ok(offset) => report(&format!("published {id} {offset}")),
            Err(e) => report(&format!("publish-failed {id} {e}")),
        }
    }
    unreachable!("u64 ran out")
}

fn consume(bus: &Bus) -> ! {
    let group = open_or_exit(bus.topic(TOPIC).and_then(|t| t.group(GROUP, group_options())));
    loop {
        match group.recv(Duration::from_millis(200)) {
            Ok(Some(delivery)) => {
                let id = id_of(delivery.record().value());
                report(&format!("received {id} {}", delivery.attempt()));
                if is_poison(delivery.record().value()) {
                    let _ = delivery.nack("poison");
                    continue;
                }
                report(&format!("acking {id}"));
                match delivery.ack() {
                    Ok(()) => report(&format!("acked {id}")),
                    Err(e) => report(&format!("ack-failed {id} {e}")),
                }
            }
            Ok(None) => {}
            Err(e) => {
                report(&format!("recv-failed {e}"));
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

// ----------------------------------------------------------------- parent

/// What the children reported, over every child.
#[derive(Default)]
struct Reports {
    published: BTreeSet<String>,
    /// Acks that were called: each took effect or not (a kill may come
    /// before its report).
    acking: BTreeSet<String>,
    acked: BTreeSet<String>,
    received: u64,
    failures: BTreeMap<String, u64>,
}

impl Reports {
    fn take(&mut self, events: &[Vec<String>]) {
        for event in events {
            let word = |i: usize| event.get(i).cloned().unwrap_or_default();
            match word(0).as_str() {
                "published" => drop(self.published.insert(word(1))),
                "acking" => drop(self.acking.insert(word(1))),
                "acked" => drop(self.acked.insert(word(1))),
                "received" => self.received += 1,
                "open" => {}
                other => *self.failures.entry(other.to_owned()).or_default() += 1,
            }
        }
    }
}

struct Slot {
    mode: String,
    child: Running<Vec<String>>,
}

fn spawn(dir: &Path, kind: &str, generation: u64) -> Slot {
    let mode = match kind {
        "publish" => format!("publish p{generation}"),
        _ => "consume".to_owned(),
    };
    Slot {
        child: spawn_words(ENTRY_POINT, &mode, dir),
        mode,
    }
}

fn kind(slot: &Slot) -> &'static str {
    match slot.mode.starts_with("publish") {
        true => "publish",
        false => "consume",
    }
}

/// Kills `cycles` children at random moments (from `pause` up to twice
/// it apart), starting another in each one's place; then kills the rest.
fn chaos(dir: &Path, seed: u64, cycles: u64, pause: Duration) -> Reports {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut reports = Reports::default();
    let mut generation = 0u64;
    let mut slots: Vec<Slot> = (0..PUBLISHERS)
        .map(|_| "publish")
        .chain((0..CONSUMERS).map(|_| "consume"))
        .map(|kind| {
            generation += 1;
            spawn(dir, kind, generation)
        })
        .collect();
    for _ in 0..cycles {
        let until = Instant::now() + pause + pause.mul_f64(rng.f64());
        for slot in &mut slots {
            if slot.child.wait_for(until, |_| false) == Waited::Closed {
                let finished = std::mem::replace(slot, spawn(dir, "consume", 0)).child.kill();
                panic!("a child exited by itself: {}", finished.describe());
            }
        }
        let victim = rng.usize(..slots.len());
        generation += 1;
        let replacement = spawn(dir, kind(&slots[victim]), generation);
        let killed = std::mem::replace(&mut slots[victim], replacement).child.kill();
        reports.take(&killed.events);
    }
    for slot in slots {
        reports.take(&slot.child.kill().events);
    }
    reports
}

/// Drains the group as its owner: every record still due is received,
/// acked (or nacked to the dead-letter topic if poison); the ids acked.
fn drain(bus: &Bus) -> BTreeSet<String> {
    let group = bus.topic(TOPIC).unwrap().group(GROUP, group_options()).unwrap();
    let mut acked = BTreeSet::new();
    let mut quiet_since = Instant::now();
    // Leases of killed consumers end within 2 s.
    while quiet_since.elapsed() < Duration::from_secs(3) {
        let Some(delivery) = group.recv(Duration::from_millis(100)).unwrap() else {
            continue;
        };
        quiet_since = Instant::now();
        let id = id_of(delivery.record().value());
        match is_poison(delivery.record().value()) {
            true => delivery.nack("poison").unwrap(),
            false => {
                delivery.ack().unwrap();
                assert!(acked.insert(id.clone()), "{id} acked twice in the drain");
            }
        }
    }
    let stats = group.stats().unwrap();
    assert_eq!(stats.lag, 0, "the group drained: {stats:?}");
    acked
}

fn dead_letters(bus: &Bus) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let dlq = bus.topic(&logbus::dead_letter_topic(TOPIC)).unwrap();
    let mut cursor = dlq.log().unwrap().cursor(Position::Earliest).unwrap();
    while let Some(record) = cursor.next().unwrap() {
        assert!(record.header(headers::SOURCE_TOPIC).is_some());
        *found.entry(id_of(record.value())).or_default() += 1;
    }
    found
}

fn run(cycles: u64, pause: Duration) {
    let seed = child::seed(DEFAULT_SEED);
    let dir = tempfile::tempdir().unwrap();
    let reports = chaos(dir.path(), seed, cycles, pause);
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let drained = drain(&bus);
    let dead = dead_letters(&bus);
    let topic = bus.topic(TOPIC).unwrap();
    let mut stored = 0u64;
    let mut cursor = topic.log().unwrap().cursor(Position::Earliest).unwrap();
    while cursor.next().unwrap().is_some() {
        stored += 1;
    }
    assert_eq!(stored, topic.end_offset(), "offsets are dense");
    let context = format!(
        "seed {seed}: {} published, {} acked by children, {} drained, {} dead, {} received, failures {:?}",
        reports.published.len(),
        reports.acked.len(),
        drained.len(),
        dead.len(),
        reports.received,
        reports.failures
    );
    eprintln!("{context}");
    assert!(reports.published.len() > 100, "too little happened: {context}");
    let lost_acks: Vec<_> = drained.intersection(&reports.acked).collect();
    assert!(
        lost_acks.is_empty(),
        "acked records delivered again {lost_acks:?}: {context}"
    );
    for (id, copies) in &dead {
        assert_eq!(*copies, 1, "{id} dead-lettered {copies} times: {context}");
        assert!(
            !reports.acked.contains(id) && !drained.contains(id),
            "{id} acked and dead: {context}"
        );
    }
    // An ack a child called and was killed before it reported may have
    // taken effect; any other record must be acked, drained or dead.
    for id in &reports.published {
        let consumed =
            [&reports.acking, &drained].iter().any(|ids| ids.contains(id)) || dead.contains_key(id);
        assert!(consumed, "published {id} was never consumed: {context}");
    }
    let poison_published = reports.published.iter().filter(|id| {
        id.rsplit('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| s % POISON_EVERY == 7)
    });
    for id in poison_published {
        assert!(
            dead.contains_key(id),
            "poison {id} is not in the dead-letter topic: {context}"
        );
    }
}

#[test]
fn publishers_and_consumers_killed_at_random_lose_nothing() {
    run(200, Duration::from_millis(40));
}

#[test]
#[ignore = "long: a thousand kill -9 cycles"]
fn a_thousand_kills_of_publishers_consumers_and_owners_lose_nothing() {
    run(1000, Duration::from_millis(40));
}
