//! Per-key ordered consumer groups (`DeliveryOrder::PerKey`): records of
//! one key go out one at a time and in offset order while other keys go to
//! other receivers in parallel; a failing record holds back only its key,
//! until it is dead-lettered (or, with `OnDeadLetter::ParkKey`, until it is
//! redriven and its redrive acked, also across a reopen); a reopened group
//! keeps the order of the records it had admitted. The NATS backend
//! refuses the option.
//! (The group machine's model test checks the same through random
//! failures and crashes.)

#[macro_use]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::TestBackend;
use common::groups::group_options;
use logbus::storage::SimStorage;
use logbus::{
    Bus, BusOptions, Delivery, DeliveryOrder, Durability, Error, Group, GroupOptions, OnDeadLetter, Record,
    StartAt, Topic, TopicOptions, dead_letter_topic,
};

const KEYS: usize = 4;
const PER_KEY: usize = 100;

fn per_key(options: GroupOptions) -> GroupOptions {
    options.ordering(DeliveryOrder::PerKey)
}

/// A record of `key` whose value is `key/seq`.
fn keyed(key: &str, seq: usize) -> Vec<u8> {
    format!("{key}/{seq}").into_bytes()
}

/// Publishes `key/seq` records, each keyed with its key.
fn publish_keyed(topic: &Topic, records: &[(&str, usize)]) {
    for &(key, seq) in records {
        topic
            .publish(&Record::new(&keyed(key, seq)).key(key))
            .expect("publish");
    }
}

/// The values of `deliveries`, in order.
fn texts(deliveries: &[Delivery]) -> Vec<String> {
    (deliveries.iter())
        .map(|d| String::from_utf8(d.record().value().to_vec()).expect("utf-8"))
        .collect()
}

fn value(group_delivery: &[u8]) -> (String, usize) {
    let text = std::str::from_utf8(group_delivery).expect("utf-8");
    let (key, seq) = text.split_once('/').expect("key/seq");
    (key.to_owned(), seq.parse().expect("seq"))
}

/// Four receivers, 4 keys of 100 records, every tenth delivery nacked
/// (redelivered after 2 ms): per key, no two records are ever held at once
/// and the acks come in offset order; several keys are held at once.
#[test]
fn records_of_one_key_go_out_one_at_a_time_in_offset_order_and_keys_in_parallel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
    let jobs = bus.topic("jobs").expect("topic");
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            let key = format!("k{key}");
            jobs.publish(&Record::new(&keyed(&key, seq)).key(&key))
                .expect("publish");
        }
    }
    let options = per_key(group_options(
        Duration::from_secs(60),
        100,
        Duration::from_millis(2),
    ));
    let workers = jobs.group("workers", options).expect("group");
    let held: HashMap<String, AtomicBool> = (0..KEYS)
        .map(|k| (format!("k{k}"), AtomicBool::new(false)))
        .collect();
    let acked: Mutex<HashMap<String, Vec<usize>>> = Mutex::new(HashMap::new());
    let (holding, most_held) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let deliveries = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while acked.lock().unwrap().values().map(Vec::len).sum::<usize>() < KEYS * PER_KEY {
                    let Some(delivery) = workers.recv(Duration::from_millis(50)).expect("recv") else {
                        continue;
                    };
                    let (key, seq) = value(delivery.record().value());
                    assert!(
                        !held[&key].swap(true, Ordering::SeqCst),
                        "{key}/{seq} handed out while another record of {key} is held"
                    );
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most_held.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(300));
                    let nth = deliveries.fetch_add(1, Ordering::SeqCst);
                    holding.fetch_sub(1, Ordering::SeqCst);
                    // Let go of the key before settling: the next record of
                    // the key may go out the moment the settle is applied.
                    held[&key].store(false, Ordering::SeqCst);
                    if nth % 10 == 9 {
                        delivery.nack("try again").expect("nack");
                        continue;
                    }
                    let mut acked = acked.lock().unwrap();
                    delivery.ack().expect("ack");
                    acked.entry(key).or_default().push(seq);
                }
            });
        }
    });
    let acked = acked.into_inner().unwrap();
    for (key, seqs) in &acked {
        assert!(
            seqs.iter().copied().eq(0..PER_KEY),
            "{key} acked out of order: {seqs:?}"
        );
    }
    assert_eq!(acked.len(), KEYS);
    assert!(
        most_held.load(Ordering::SeqCst) >= 2,
        "records of different keys never went out in parallel"
    );
    assert!(
        deliveries.load(Ordering::SeqCst) > KEYS * PER_KEY,
        "some deliveries were nacked"
    );
    bus.close().expect("close");
}

/// A record that keeps failing holds back the records of its key, and
/// only those, until it is dead-lettered; then its key goes on.
#[test]
fn a_failing_record_holds_back_only_its_key_until_it_is_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
    let jobs = bus.topic("jobs").expect("topic");
    publish_keyed(&jobs, &[("a", 0), ("a", 1), ("b", 0), ("b", 1), ("", 0), ("", 1)]);
    let options = per_key(group_options(Duration::from_secs(60), 2, Duration::ZERO));
    let workers = jobs.group("workers", options).expect("group");

    let first = workers.try_recv_batch(10).expect("recv");
    // One record of each key; records without a key are unordered.
    assert_eq!(texts(&first), ["a/0", "b/0", "/0", "/1"]);
    let mut first = first.into_iter();
    first.next().expect("a/0").nack("poison").expect("nack");
    for delivery in first {
        delivery.ack().expect("ack");
    }
    let mut second = workers.try_recv_batch(10).expect("recv");
    second.sort_by_key(|d| d.record().offset());
    assert_eq!(texts(&second), ["a/0", "b/1"], "a/1 waits for a/0");
    assert!(
        workers.try_recv().expect("recv").is_none(),
        "a/1 waits while a/0 is held"
    );
    let mut second = second.into_iter();
    // The last attempt fails: dead-lettered, and a/1 goes on.
    second.next().expect("a/0").nack("poison again").expect("nack");
    second.next().expect("b/1").ack().expect("ack");
    let third = workers.try_recv_batch(10).expect("recv");
    assert_eq!(texts(&third), ["a/1"]);
    third.into_iter().for_each(|d| d.ack().expect("ack"));
    let dlq = bus.topic(&dead_letter_topic("jobs")).expect("dlq");
    let mut dead = dlq.subscribe_ephemeral(StartAt::Earliest).expect("subscribe");
    let letter = dead
        .recv(Duration::from_secs(5))
        .expect("recv")
        .expect("the dead letter");
    assert_eq!(letter.value(), b"a/0");
    bus.close().expect("close");
}

/// Records admitted behind a busy key are not in the state log; after a
/// reopen the group learns their keys again before handing anything out.
#[test]
fn a_reopened_group_keeps_the_order_of_the_records_it_had_admitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = per_key(group_options(Duration::from_secs(60), 5, Duration::ZERO));
    {
        let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
        let jobs = bus.topic("jobs").expect("topic");
        publish_keyed(&jobs, &[("a", 0), ("a", 1), ("b", 0), ("a", 2), ("b", 1)]);
        let workers = jobs.group("workers", options.clone()).expect("group");
        let held = workers.try_recv_batch(10).expect("recv");
        assert_eq!(texts(&held), ["a/0", "b/0"]);
        bus.close().expect("close");
    }
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("reopen");
    let workers = bus
        .topic("jobs")
        .expect("topic")
        .group("workers", options)
        .expect("group");
    let mut order = Vec::new();
    loop {
        let batch = workers.try_recv_batch(10).expect("recv");
        if batch.is_empty() {
            break;
        }
        let values: Vec<_> = batch.iter().map(|d| value(d.record().value())).collect();
        let keys: Vec<_> = values.iter().map(|(key, _)| key).collect();
        let mut unique = keys.clone();
        unique.dedup();
        assert_eq!(
            keys.len(),
            unique.len(),
            "one record per key at a time: {values:?}"
        );
        order.extend(values);
        for delivery in batch {
            delivery.ack().expect("ack");
        }
    }
    let of = |key: &str| -> Vec<usize> { order.iter().filter(|(k, _)| k == key).map(|(_, s)| *s).collect() };
    assert_eq!((of("a"), of("b")), (vec![0, 1, 2], vec![0, 1]));
    bus.close().expect("close");
}

/// The values a receive hands out now, acked, in hand-out order.
fn take(group: &Group) -> Vec<String> {
    let batch = group.try_recv_batch(10).expect("recv");
    let values = texts(&batch);
    batch.into_iter().for_each(|d| d.ack().expect("ack"));
    values
}

/// With `OnDeadLetter::ParkKey` a dead letter parks its key: the key's
/// later records wait, across a reopen, until the dead letter is redriven
/// and its redrive acked; the redrive goes out first. Other keys go on.
#[test]
fn a_parked_key_waits_for_the_redrive_of_its_dead_letter_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = per_key(group_options(Duration::from_secs(60), 1, Duration::ZERO))
        .on_dead_letter(OnDeadLetter::ParkKey);
    {
        let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
        let jobs = bus.topic("jobs").expect("topic");
        publish_keyed(&jobs, &[("a", 0), ("a", 1), ("b", 0), ("a", 2), ("b", 1)]);
        let workers = jobs.group("workers", options.clone()).expect("group");
        let first = workers.try_recv_batch(10).expect("recv");
        assert_eq!(texts(&first), ["a/0", "b/0"]);
        let mut first = first.into_iter();
        first.next().expect("a/0").reject("poison").expect("reject");
        first.next().expect("b/0").ack().expect("ack");
        assert_eq!(take(&workers), ["b/1"], "a is parked, b goes on");
        assert!(take(&workers).is_empty());
        bus.close().expect("close");
    }
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("reopen");
    let workers = bus
        .topic("jobs")
        .expect("topic")
        .group("workers", options)
        .expect("group");
    assert!(take(&workers).is_empty(), "a stays parked across a reopen");
    let moved = bus
        .redrive(&dead_letter_topic("jobs"), |_| true)
        .expect("redrive");
    assert_eq!(moved, 1);
    let redriven = workers.try_recv().expect("recv").expect("the redrive of a/0");
    assert_eq!(redriven.record().value(), b"a/0");
    assert!(take(&workers).is_empty(), "a/1 waits until the redrive is acked");
    redriven.ack().expect("ack");
    assert_eq!(take(&workers), ["a/1"]);
    assert_eq!(take(&workers), ["a/2"]);
    assert!(take(&workers).is_empty());
    let stats = workers.stats().expect("stats");
    assert_eq!((stats.lag, stats.in_flight), (0, 0), "{stats:?}");
    bus.close().expect("close");
}

/// A power loss keeps a parked key parked, and after the redrive's ack
/// keeps it resumed: the parked record's `DeadLettered` is durable with
/// that ack (every state write here syncs), never without it.
#[test]
fn a_parked_key_and_its_resumption_survive_power_losses() {
    for seed in 0..8 {
        let sim = SimStorage::new();
        let topics = TopicOptions::default().durability(Durability::Always);
        let options = BusOptions::default()
            .storage(Arc::new(sim.clone()))
            .topic_defaults(topics);
        let open = || Bus::open(Path::new("/sim/bus"), options.clone()).expect("open");
        let group_options = per_key(group_options(Duration::from_secs(60), 1, Duration::ZERO))
            .on_dead_letter(OnDeadLetter::ParkKey);
        let workers = |bus: &Bus| {
            bus.topic("jobs")
                .expect("topic")
                .group("workers", group_options.clone())
                .expect("group")
        };
        let bus = open();
        publish_keyed(&bus.topic("jobs").expect("topic"), &[("a", 0), ("a", 1)]);
        let group = workers(&bus);
        let poison = group.try_recv().expect("recv").expect("a/0");
        poison.reject("poison").expect("reject");
        drop(group);
        drop(bus);
        sim.power_loss(seed);

        let bus = open();
        assert!(take(&workers(&bus)).is_empty(), "seed {seed}: a stays parked");
        assert_eq!(
            bus.redrive(&dead_letter_topic("jobs"), |_| true)
                .expect("redrive"),
            1
        );
        assert_eq!(
            take(&workers(&bus)),
            ["a/0"],
            "seed {seed}: the redrive goes first"
        );
        drop(bus);
        sim.power_loss(seed + 100);

        let bus = open();
        assert_eq!(
            take(&workers(&bus)),
            ["a/1"],
            "seed {seed}: a resumed, the redrive not redelivered"
        );
        assert!(take(&workers(&bus)).is_empty());
    }
}

/// Parking needs per-key ordering and dead letters to redrive.
#[test]
fn parking_keys_needs_per_key_ordering_and_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
    let jobs = bus.topic("jobs").expect("topic");
    let park = GroupOptions::default().on_dead_letter(OnDeadLetter::ParkKey);
    for options in [park.clone(), per_key(park).dead_letter(false)] {
        let group = jobs.group("workers", options);
        assert!(matches!(group, Err(Error::InvalidArgument(_))), "{group:?}");
    }
    bus.close().expect("close");
}

/// The ordering of an open group cannot change under its receivers.
#[test]
fn the_ordering_of_an_open_group_cannot_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
    let jobs = bus.topic("jobs").expect("topic");
    let _workers = jobs
        .group("workers", per_key(GroupOptions::default()))
        .expect("group");
    let again = jobs.group("workers", GroupOptions::default());
    assert!(matches!(again, Err(Error::InvalidArgument(_))), "{again:?}");
    bus.close().expect("close");
}

backend_tests! {
    /// The embedded backend orders per key; JetStream cannot, and NATS
    /// says so instead of handing records out unordered.
    fn per_key_ordering_is_refused_where_the_backend_cannot_keep_it(backend: &TestBackend) {
        let bus = backend.open();
        let jobs = bus.topic("jobs").expect("topic");
        let group = jobs.group("workers", per_key(GroupOptions::default()));
        match backend {
            TestBackend::Embedded { .. } => assert!(group.is_ok(), "{group:?}"),
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => assert!(
                matches!(group, Err(Error::Unsupported { backend: "nats", .. })),
                "{group:?}"
            ),
        }
        bus.close().expect("close");
    }
}
