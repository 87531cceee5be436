//! One damaged consumer-state file blocks only its consumer: a flipped byte
//! in a group's state log leaves the topic openable, publishing and the
//! topic's other consumers working; opening that group fails with
//! `Error::Corrupt` naming the file (the default
//! `RecoveryMode::AbsoluteConsistency`), and under
//! `RecoveryMode::MoveAsideDamagedState` opening it moves the damaged state
//! log aside byte for byte, restarts the group from the longest valid
//! prefix of its log and reports what was lost. Retention never deletes
//! past a consumer whose state cannot be read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logbus::storage::SimStorage;
use logbus::{
    Backoff, Bus, BusOptions, ConsumerId, Error, Group, GroupOptions, Record, RecoveryMode, Retention,
    RetryPolicy, StartAt, TopicOptions,
};

const TOPIC: &str = "orders";
const DAMAGED: &str = "billing";
const SHORT: Duration = Duration::from_millis(10);

fn open(dir: &Path, mode: RecoveryMode) -> Bus {
    open_on(dir, mode, BusOptions::default())
}

/// Opens the bus in `dir` with `base`'s storage.
fn open_on(dir: &Path, mode: RecoveryMode, base: BusOptions) -> Bus {
    let topics = TopicOptions::default()
        .segment_bytes(4096)
        .retention(Retention::Interest);
    Bus::open(dir, base.recovery(mode).topic_defaults(topics)).expect("open the bus")
}

/// Redeliveries without backoff, so a restarted group hands out at once
/// what it had in flight.
fn options() -> GroupOptions {
    GroupOptions::default().retry(
        RetryPolicy::default()
            .max_attempts(5)
            .backoff(Backoff::Fixed(Duration::ZERO)),
    )
}

/// Receives and acks `count` records; returns their offsets.
fn ack(group: &Group, count: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    for _ in 0..count {
        let delivery = group.recv(SHORT).unwrap().expect("a record");
        offsets.push(delivery.record().offset());
        delivery.ack().unwrap();
    }
    offsets
}

/// A bus with 200 records (several segments), the group `billing` having
/// acked 120 of them, `shipping` 50 and the subscription `audit` at 80.
fn bus_with_consumers(dir: &Path) {
    bus_with_consumers_on(dir, BusOptions::default());
}

fn bus_with_consumers_on(dir: &Path, base: BusOptions) {
    let bus = open_on(dir, RecoveryMode::default(), base);
    let topic = bus.topic(TOPIC).unwrap();
    // Every consumer exists before anything is acked, so that `Interest`
    // retention keeps what the slowest still needs.
    let billing = topic.group(DAMAGED, options()).unwrap();
    let shipping = topic.group("shipping", options()).unwrap();
    let mut audit = topic.subscribe("audit", StartAt::Earliest).unwrap();
    for i in 0..200 {
        topic.publish(&Record::new(&format!("order {i:>40}"))).unwrap();
    }
    ack(&billing, 120);
    ack(&shipping, 50);
    audit.commit_offset(80).unwrap();
    bus.close().unwrap();
}

fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state/groups").join(TOPIC).join(DAMAGED)
}

/// Flips one byte in the middle of the damaged group's state log; returns
/// the segment file.
fn flip_a_byte(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(state_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let segment = segments.pop().expect("a state segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let written = bytes.iter().rposition(|b| *b != 0).unwrap();
    bytes[written / 2] ^= 0x40;
    std::fs::write(&segment, bytes).unwrap();
    segment
}

#[test]
fn a_damaged_group_state_fails_only_that_group_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    bus_with_consumers(dir.path());
    let segment = flip_a_byte(dir.path());

    let bus = open(dir.path(), RecoveryMode::default());
    let topic = bus.topic(TOPIC).expect("the topic opens");
    assert_eq!(topic.publish(&Record::new(b"more")).unwrap(), 200);
    let shipping = topic.group("shipping", options()).unwrap();
    assert_eq!(ack(&shipping, 1), [50]);
    let mut audit = topic.subscribe("audit", StartAt::Earliest).unwrap();
    assert_eq!(audit.recv(SHORT).unwrap().unwrap().offset(), 80);
    match topic.group(DAMAGED, options()) {
        Err(Error::Corrupt { file, .. }) => assert!(file.starts_with(state_dir(dir.path())), "{file:?}"),
        other => panic!("expected Corrupt naming {segment:?}, got {other:?}"),
    }
    assert!(topic.state_repairs().is_empty());
    assert!(segment.exists(), "nothing is changed in the default mode");
}

#[test]
fn retention_keeps_every_record_while_a_consumer_state_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    bus_with_consumers(dir.path());
    flip_a_byte(dir.path());
    let bus = open(dir.path(), RecoveryMode::default());
    let topic = bus.topic(TOPIC).unwrap();
    let start = topic.start_offset();
    // Every other consumer passes everything: only the unreadable one
    // holds the records.
    let shipping = topic.group("shipping", options()).unwrap();
    ack(&shipping, 150);
    let mut audit = topic.subscribe("audit", StartAt::Earliest).unwrap();
    audit.commit_offset(200).unwrap();
    assert_eq!(topic.start_offset(), start);
}

#[test]
fn move_aside_mode_keeps_the_damaged_file_restarts_the_group_from_its_valid_prefix_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    bus_with_consumers(dir.path());
    let segment = flip_a_byte(dir.path());
    let damaged_bytes = std::fs::read(&segment).unwrap();

    let bus = open(dir.path(), RecoveryMode::MoveAsideDamagedState);
    let topic = bus.topic(TOPIC).unwrap();
    let group = topic.group(DAMAGED, options()).expect("repaired");
    let repairs = topic.state_repairs();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    let repair = &repairs[0];
    assert_eq!(repair.consumer, ConsumerId::Group(DAMAGED.into()));
    assert_eq!(repair.state_dir, state_dir(dir.path()));
    assert!(repair.bytes_lost > 0);
    assert!(repair.restarted_from <= 120);
    // The damaged log is kept, byte for byte, beside the new one.
    let moved = repair.moved_to.join(segment.file_name().unwrap());
    assert_eq!(std::fs::read(moved).unwrap(), damaged_bytes);
    assert!(repair.moved_to.parent() == state_dir(dir.path()).parent());
    // It restarts where the report says: nothing from there on is lost.
    let rest = ack(&group, (200 - repair.restarted_from) as usize);
    assert_eq!(rest, (repair.restarted_from..200).collect::<Vec<_>>());
    assert!(group.recv(SHORT).unwrap().is_none());
    bus.close().unwrap();

    // Repaired for good: a plain reopen finds a whole state log, and the
    // dump tool lists the consumers, not the directory moved aside.
    let bus = open(dir.path(), RecoveryMode::default());
    let group = bus.topic(TOPIC).unwrap().group(DAMAGED, options()).unwrap();
    assert_eq!(group.stats().unwrap().low_watermark, 200);
    let view = logbus::inspect::consumers(dir.path(), TOPIC).unwrap();
    let groups: Vec<&str> = view.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, [DAMAGED, "shipping"]);
}

#[test]
fn a_repair_interrupted_before_the_repaired_state_was_in_place_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    bus_with_consumers(dir.path());
    flip_a_byte(dir.path());
    let bus = open(dir.path(), RecoveryMode::MoveAsideDamagedState);
    let topic = bus.topic(TOPIC).unwrap();
    topic.group(DAMAGED, options()).unwrap();
    let restarted_from = topic.state_repairs()[0].restarted_from;
    assert_ne!(
        restarted_from,
        topic.start_offset(),
        "a fresh group would start there"
    );
    bus.close().unwrap();
    // As if the process died after moving the damaged log aside and
    // before renaming the repaired one into place.
    let repaired = state_dir(dir.path());
    std::fs::rename(
        &repaired,
        repaired.with_file_name(format!(".{DAMAGED}.repairing")),
    )
    .unwrap();

    let bus = open(dir.path(), RecoveryMode::default());
    let group = bus.topic(TOPIC).unwrap().group(DAMAGED, options()).unwrap();
    assert_eq!(group.stats().unwrap().low_watermark, restarted_from);
}

#[test]
fn a_damaged_subscription_state_is_repaired_and_resumes_no_later_than_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    bus_with_consumers(dir.path());
    let state = dir.path().join("state/subscriptions").join(TOPIC).join("audit");
    let segment = state.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let written = bytes.iter().rposition(|b| *b != 0).unwrap();
    bytes[written / 2] ^= 0x40;
    std::fs::write(&segment, bytes).unwrap();

    let bus = open(dir.path(), RecoveryMode::MoveAsideDamagedState);
    let topic = bus.topic(TOPIC).unwrap();
    let mut audit = topic.subscribe("audit", StartAt::Latest).expect("repaired");
    let repairs = topic.state_repairs();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    assert_eq!(repairs[0].consumer, ConsumerId::Subscription("audit".into()));
    assert!(repairs[0].restarted_from <= 80);
    let first = audit.recv(SHORT).unwrap().expect("a record");
    assert_eq!(
        first.offset(),
        repairs[0].restarted_from.max(topic.start_offset())
    );
}

#[test]
fn a_repair_on_the_simulated_disk_survives_a_power_loss() {
    let sim = SimStorage::new();
    let base = || BusOptions::default().storage(Arc::new(sim.clone()));
    let dir = Path::new("/sim/bus");
    bus_with_consumers_on(dir, base());
    let segment = state_dir(dir).join(format!("{:020}.log", 0));
    let mut bytes = sim.read_file(&segment).unwrap();
    let written = bytes.iter().rposition(|b| *b != 0).unwrap();
    bytes[written / 2] ^= 0x40;
    sim.write_file(&segment, &bytes);

    let bus = open_on(dir, RecoveryMode::MoveAsideDamagedState, base());
    let topic = bus.topic(TOPIC).unwrap();
    topic.group(DAMAGED, options()).expect("repaired");
    let repair = topic.state_repairs().remove(0);
    drop(topic);
    drop(bus);
    sim.power_loss(7);

    let bus = open_on(dir, RecoveryMode::default(), base());
    let group = bus.topic(TOPIC).unwrap().group(DAMAGED, options()).unwrap();
    assert_eq!(group.stats().unwrap().low_watermark, repair.restarted_from);
    let moved = repair.moved_to.join(segment.file_name().unwrap());
    assert_eq!(sim.read_file(&moved).unwrap(), bytes);
}
