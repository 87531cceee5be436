//! Idempotent publishing: a record published again with its id
//! ([`Record::id`]) within the topic's dedupe window is stored once, and
//! the publish returns the first copy's offset; also after a reopen (both
//! backends), after a power loss and after kill -9 (embedded: the window
//! is read back from the log).

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{self, CHILD_DEADLINE, SIGKILL, Waited, report};
use logbus::clock::SimClock;
use logbus::storage::SimStorage;
use logbus::{Bus, BusOptions, Durability, Error, Position, Record, TopicOptions};

backend_tests! {
    /// The same id twice: one record, the first offset both times; other
    /// ids and records without one are appended; a reopen keeps it so.
    fn a_record_published_again_with_its_id_is_stored_once(backend: &TestBackend) {
        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        let first = Record::new(b"order 1").id("order-1");
        assert_eq!(orders.publish(&first).expect("publish"), 0);
        assert_eq!(orders.publish(&first).expect("again"), 0);
        assert_eq!(orders.publish(&Record::new(b"order 2").id("order-2")).expect("publish"), 1);
        let plain = Record::new(b"no id");
        assert_eq!(orders.publish(&plain).expect("publish"), 2);
        assert_eq!(orders.publish(&plain).expect("publish"), 3);
        let again = futures::executor::block_on(orders.publish_async(&first)).expect("async");
        assert_eq!(again, 0);
        assert_eq!(orders.publish_batch(std::slice::from_ref(&first)).expect("batch of one"), 0..1);
        let batch = [Record::new(b"order 3").id("order-3"), Record::new(b"order 4")];
        assert!(matches!(orders.publish_batch(&batch), Err(Error::InvalidArgument(_))));
        let refused = futures::executor::block_on(orders.publish_batch_async(&batch));
        assert!(matches!(refused, Err(Error::InvalidArgument(_))));
        assert_eq!(orders.end_offset(), 4);
        drop(orders);
        bus.close().expect("close");

        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        assert_eq!(orders.publish(&Record::new(b"order 2").id("order-2")).expect("after reopen"), 1);
        assert_eq!(orders.end_offset(), 4);
        let mut reader = orders.subscribe_ephemeral(logbus::StartAt::Earliest).expect("subscribe");
        let stored = reader.recv(Duration::from_secs(30)).expect("recv").expect("a record");
        assert_eq!(stored.id(), Some(&b"order-1"[..]));
        bus.close().expect("close");
    }

    /// Four threads publish the same ids at once, each in its own order:
    /// every id is stored once and every thread gets its one offset.
    fn concurrent_publishes_of_one_id_store_it_once(backend: &TestBackend) {
        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        let ids: Vec<String> = (0..40).map(|i| format!("order-{i}")).collect();
        let seen: Vec<Vec<(String, u64)>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let (orders, ids) = (&orders, &ids);
                    scope.spawn(move || {
                        let mut order: Vec<&String> = ids.iter().collect();
                        order.rotate_left(t * 10);
                        order
                            .into_iter()
                            .map(|id| (id.clone(), orders.publish(&Record::new(b"order").id(id)).expect("publish")))
                            .collect()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("publisher")).collect()
        });
        let mut offsets = BTreeMap::new();
        for (id, offset) in seen.into_iter().flatten() {
            assert_eq!(*offsets.entry(id.clone()).or_insert(offset), offset, "{id}");
        }
        assert_eq!(offsets.len(), 40);
        assert_eq!(orders.end_offset(), 40, "an id was stored twice");
        bus.close().expect("close");
    }

    /// With the window off, an id is only a header.
    fn with_the_window_off_an_id_is_only_a_header(backend: &TestBackend) {
        let bus = backend.open();
        let options = TopicOptions::default().dedupe_window(Duration::ZERO);
        let orders = bus.topic_with("orders", options).expect("topic");
        let record = Record::new(b"order 1").id("order-1");
        assert_eq!(orders.publish(&record).expect("publish"), 0);
        assert_eq!(orders.publish(&record).expect("publish"), 1);
        let batch = [record.clone(), record];
        assert_eq!(orders.publish_batch(&batch).expect("batch"), 2..4);
        bus.close().expect("close");
    }
}

/// An id is remembered for the window (by the bus clock), then forgotten:
/// the same id later is a new record. The window read back after a reopen
/// holds what the log holds within it.
#[test]
fn an_id_is_forgotten_once_its_record_is_older_than_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SimClock::new();
    let open = || Bus::open(dir.path(), BusOptions::default().clock(clock.clone())).unwrap();
    let options = TopicOptions::default().dedupe_window(Duration::from_secs(60));
    let bus = open();
    let orders = bus.topic_with("orders", options.clone()).unwrap();
    assert_eq!(orders.publish(&Record::new(b"a").id("a")).unwrap(), 0);
    clock.advance(Duration::from_secs(40));
    assert_eq!(orders.publish(&Record::new(b"b").id("b")).unwrap(), 1);
    assert_eq!(orders.publish(&Record::new(b"a").id("a")).unwrap(), 0, "40 s old");
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        orders.publish(&Record::new(b"a").id("a")).unwrap(),
        2,
        "70 s old: forgotten"
    );
    drop(orders);
    bus.close().unwrap();

    let bus = open();
    let orders = bus.topic_with("orders", options).unwrap();
    assert_eq!(orders.publish(&Record::new(b"b").id("b")).unwrap(), 1, "30 s old");
    assert_eq!(
        orders.publish(&Record::new(b"a").id("a")).unwrap(),
        2,
        "the newest copy"
    );
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        orders.publish(&Record::new(b"b").id("b")).unwrap(),
        3,
        "61 s old: forgotten"
    );
    bus.close().unwrap();
}

/// After a power loss, every id whose publish returned under `Always` is
/// still known: publishing all of them again appends nothing.
#[test]
fn acknowledged_ids_survive_a_power_loss() {
    for seed in 0..8 {
        let sim = SimStorage::new();
        let dir = Path::new("/sim/bus");
        let open = || {
            let options = BusOptions::default()
                .storage(Arc::new(sim.clone()))
                .topic_defaults(TopicOptions::default().durability(Durability::Always));
            Bus::open(dir, options).unwrap()
        };
        let bus = open();
        let orders = bus.topic("orders").unwrap();
        let acked: Vec<u64> = (0..50)
            .map(|i| {
                orders
                    .publish(&Record::new(b"order").id(&format!("order-{i}")))
                    .unwrap()
            })
            .collect();
        sim.power_loss(seed);
        drop(orders);
        drop(bus);

        let bus = open();
        let orders = bus.topic("orders").unwrap();
        for (i, offset) in acked.iter().enumerate() {
            let again = orders
                .publish(&Record::new(b"order").id(&format!("order-{i}")))
                .unwrap();
            assert_eq!(again, *offset, "seed {seed}: order-{i}");
        }
        assert_eq!(orders.end_offset(), 50, "seed {seed}");
    }
}

const ENTRY_POINT: &str = "child_publisher_entry_point";

/// The child: publishes `order-0`, `order-1`, ... under `Always`,
/// reporting each id's offset once its publish returned, until killed.
#[test]
fn child_publisher_entry_point() {
    let Some((_mode, dir)) = child::role() else {
        return;
    };
    let options =
        BusOptions::default().topic_defaults(TopicOptions::default().durability(Durability::Always));
    let bus = child::open_or_exit(Bus::open(&dir, options));
    let orders = child::open_or_exit(bus.topic("orders"));
    for i in 0.. {
        let offset = orders
            .publish(&Record::new(b"order").id(&format!("order-{i}")))
            .unwrap();
        report(&format!("{i} {offset}"));
    }
}

/// kill -9 at random moments while a child publishes with ids, each run
/// starting over from the first id (a publisher retrying all it is not
/// sure of): every id keeps the offset it was first acknowledged at, and
/// the topic holds each id once.
#[test]
fn kill_nine_while_publishing_with_ids_never_stores_an_id_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(child::seed(7));
    let mut offsets: BTreeMap<u64, u64> = BTreeMap::new();
    for _ in 0..12 {
        let mut running = child::spawn_words(ENTRY_POINT, "publish", dir.path());
        let stop_after = offsets.len() + rng.usize(1..200);
        let waited = running.wait_for(Instant::now() + CHILD_DEADLINE, |seen| seen.len() >= stop_after);
        assert_eq!(waited, Waited::Enough);
        std::thread::sleep(Duration::from_micros(rng.u64(0..2000)));
        for line in running.kill().expect_signal(SIGKILL) {
            let [i, offset] = [&line[0], &line[1]].map(|word| word.parse::<u64>().unwrap());
            let first = *offsets.entry(i).or_insert(offset);
            assert_eq!(
                offset, first,
                "order-{i} acknowledged at {first}, then at {offset}"
            );
        }
    }
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let log = bus.topic("orders").unwrap();
    let log = log.log().expect("embedded");
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    let mut stored = BTreeMap::new();
    while let Some(record) = cursor.next().unwrap() {
        let id = String::from_utf8(record.id().expect("an id").to_vec()).unwrap();
        assert!(
            stored.insert(id.clone(), record.offset()).is_none(),
            "{id} stored twice"
        );
    }
    for (i, offset) in offsets {
        assert_eq!(stored.get(&format!("order-{i}")), Some(&offset), "order-{i}");
    }
    bus.close().unwrap();
}
