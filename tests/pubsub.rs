//! Publish-subscribe on every backend (the embedded log on the real file
//! system, and NATS JetStream with `--features nats`): durable
//! subscriptions start where they were told, see exactly their records in
//! order and resume from their committed offset after a reopen;
//! auto-commit, lag, ephemeral subscriptions and two subscribers on one
//! topic behave as documented; a durable subscription cannot be opened
//! twice at once; a cancelled `recv_async` loses nothing; batches get
//! consecutive offsets.
//!
//! Every record's value and timestamp derive from its offset, so each check
//! is a plain list of offsets. Where JetStream differs (docs/NATS.md), the
//! test says so in a `match` on the backend.

#[macro_use]
mod common;

use std::time::Duration;

use common::TestBackend;
use common::futures::poll_once;
use logbus::{Bus, ConsumerId, Record, StartAt, StoredRecord, Subscription, Topic};

/// Timestamp of record 0; record `i` is stamped `T0 + i` seconds.
const T0: i64 = 1_700_000_000_000;

const TIMEOUT: Duration = Duration::from_secs(5);

fn value(offset: u64) -> String {
    format!("news {offset}")
}

/// Publishes the records for `offsets`, one by one.
fn publish(topic: &Topic, offsets: std::ops::Range<u64>) {
    for offset in offsets {
        let value = value(offset);
        let record = Record::new(&value).timestamp(T0 + offset as i64 * 1000);
        assert_eq!(topic.publish(&record).expect("publish"), offset);
    }
}

/// Checks that `record` is the one published for its offset.
fn check(record: &StoredRecord) -> u64 {
    assert_eq!(record.value(), value(record.offset()).as_bytes());
    assert_eq!(record.timestamp(), T0 + record.offset() as i64 * 1000);
    record.offset()
}

/// Receives up to `n` records, checking each one's content.
fn take(sub: &mut Subscription, n: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    while offsets.len() < n {
        let Some(record) = sub.try_recv().expect("recv") else {
            break;
        };
        offsets.push(check(&record));
    }
    offsets
}

fn drain(sub: &mut Subscription) -> Vec<u64> {
    take(sub, usize::MAX)
}

fn open(backend: &TestBackend) -> (Bus, Topic) {
    let bus = backend.open();
    let topic = bus.topic("news").expect("topic");
    (bus, topic)
}

/// (name, committed, lag) of every durable subscription in the topic's stats.
fn consumers(topic: &Topic) -> Vec<(String, u64, u64)> {
    let stats = topic.stats().expect("stats");
    stats
        .consumers
        .iter()
        .map(|c| match &c.id {
            ConsumerId::Subscription(name) => (name.clone(), c.committed, c.lag),
            ConsumerId::Group(name) => panic!("unexpected group {name}"),
        })
        .collect()
}

/// The wall clock in ms, with a few ms of margin on each side: a time
/// strictly between what the server received before and after the call.
fn clock_between_publishes() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    std::thread::sleep(Duration::from_millis(5));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    std::thread::sleep(Duration::from_millis(5));
    now.as_millis() as i64
}

backend_tests! {
    fn a_name_the_backend_cannot_store_is_refused_with_a_clear_error(backend: &TestBackend) {
        let bus = backend.open();
        let long = "é".repeat(100); // 200 bytes: the longest name
        // 196 bytes: the longest topic name, as its dead-letter topic's
        // name is 4 bytes longer.
        let topic = bus.topic(&"é".repeat(98));
        match backend {
            TestBackend::Embedded { .. } => {
                let topic = topic.unwrap();
                topic.publish(&Record::new(b"x")).unwrap();
                topic.subscribe(&long, StartAt::Earliest).unwrap();
            }
            // Each byte outside [A-Za-z0-9-] takes three in a NATS name,
            // and the server's store names a directory after the stream.
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => {
                assert!(matches!(topic, Err(logbus::Error::InvalidArgument(m)) if m.contains("too long for NATS")));
                // 39 × "é" encode to 234 bytes: the topic's own streams fit
                // in 255 bytes, its dead-letter topic's failure stream not.
                let dlq_too_long = bus.topic(&"é".repeat(39));
                assert!(
                    matches!(dlq_too_long, Err(logbus::Error::InvalidArgument(m)) if m.contains("dead-letter topic")),
                );
                let short = bus.topic("t").unwrap();
                assert!(matches!(short.subscribe(&long, StartAt::Earliest), Err(logbus::Error::InvalidArgument(_))));
                assert!(matches!(short.group(&long, logbus::GroupOptions::default()), Err(logbus::Error::InvalidArgument(_))));
            }
        }
        assert!(matches!(bus.topic(&"x".repeat(201)), Err(logbus::Error::InvalidArgument(_))));
    }

    fn five_durable_subscriptions_each_see_exactly_their_records_in_order_across_reopens(
        backend: &TestBackend
    ) {
        {
            let (bus, topic) = open(backend);
            publish(&topic, 0..7);
            // Both start the "time" subscription at record 7. Embedded,
            // `StartAt::Timestamp` compares the records' own timestamps
            // (record 7 is stamped T0 + 7 s); JetStream compares the times
            // the server received them (docs/NATS.md, "Timestamps").
            let start_time = match backend {
                TestBackend::Embedded { .. } => T0 + 6500,
                #[cfg(feature = "nats")]
                TestBackend::Nats { .. } => clock_between_publishes(),
            };
            publish(&topic, 7..10);
            let mut earliest = topic.subscribe("earliest", StartAt::Earliest).expect("sub");
            let mut latest = topic.subscribe("latest", StartAt::Latest).expect("sub");
            let mut offset = topic.subscribe("offset", StartAt::Offset(4)).expect("sub");
            let mut time = topic
                .subscribe("time", StartAt::Timestamp(start_time))
                .expect("sub");
            let positions =
                [&earliest, &latest, &offset, &time].map(|s| (s.position(), s.committed(), s.lag()));
            assert_eq!(positions, [(0, 0, 10), (10, 10, 0), (4, 4, 6), (7, 7, 3)]);
            publish(&topic, 10..20);

            assert_eq!(take(&mut earliest, 8), (0..8).collect::<Vec<_>>());
            earliest.commit().expect("commit");
            assert_eq!(take(&mut latest, 3), [10, 11, 12]);
            latest.commit().expect("commit");
            assert_eq!(take(&mut offset, 3), [4, 5, 6]);
            offset.commit().expect("commit");
            // Received but never committed: received again after the reopen.
            assert_eq!(take(&mut offset, 2), [7, 8]);
            assert_eq!(drain(&mut time), (7..20).collect::<Vec<_>>());
            time.commit_offset(13).expect("commit");
            assert_eq!(
                consumers(&topic),
                [
                    ("earliest".to_owned(), 8, 12),
                    ("latest".to_owned(), 13, 7),
                    ("offset".to_owned(), 7, 13),
                    ("time".to_owned(), 13, 7),
                ]
            );
            bus.close().expect("close");
        }
        {
            // Existing subscriptions ignore the start they are given now.
            let (bus, topic) = open(backend);
            let mut subs: Vec<Subscription> = ["earliest", "latest", "offset", "time"]
                .map(|name| topic.subscribe(name, StartAt::Latest).expect("resume"))
                .into();
            let mut later = topic.subscribe("later", StartAt::Latest).expect("sub");
            assert_eq!(later.position(), 20);
            publish(&topic, 20..25);
            let expected = [8..25, 13..25, 7..25, 13..25];
            for (sub, expected) in subs.iter_mut().zip(expected) {
                assert_eq!(drain(sub), expected.collect::<Vec<_>>(), "{:?}", sub.name());
            }
            assert_eq!(drain(&mut later), (20..25).collect::<Vec<_>>());
            // Commit everything but the last two records of "later".
            for sub in &mut subs {
                sub.commit().expect("commit");
                assert_eq!(sub.lag(), 0);
            }
            later.commit_offset(23).expect("commit");
            assert_eq!(later.lag(), 2);
            bus.close().expect("close");
        }
        let (bus, topic) = open(backend);
        publish(&topic, 25..30);
        for name in ["earliest", "latest", "offset", "time"] {
            let mut sub = topic.subscribe(name, StartAt::Earliest).expect("resume");
            assert_eq!(drain(&mut sub), (25..30).collect::<Vec<_>>(), "{name}");
        }
        let mut later = topic.subscribe("later", StartAt::Earliest).expect("resume");
        assert_eq!(drain(&mut later), (23..30).collect::<Vec<_>>());
        bus.close().expect("close");
    }

    fn auto_commit_resumes_after_the_last_record_received_and_passed(backend: &TestBackend) {
        {
            let (bus, topic) = open(backend);
            publish(&topic, 0..10);
            let mut sub = topic.subscribe("auto", StartAt::Earliest).expect("sub");
            sub.set_auto_commit(true);
            assert_eq!(take(&mut sub, 5), [0, 1, 2, 3, 4]);
            // Each receive committed what came before it: record 4 was received
            // but not passed.
            assert_eq!((sub.committed(), sub.lag()), (4, 6));
            let mut manual = topic.subscribe("manual", StartAt::Earliest).expect("sub");
            assert_eq!(take(&mut manual, 5), [0, 1, 2, 3, 4]);
            assert_eq!((manual.committed(), manual.lag()), (0, 10));
            bus.close().expect("close");
        }
        {
            let (bus, topic) = open(backend);
            let mut manual = topic.subscribe("manual", StartAt::Earliest).expect("resume");
            assert_eq!(take(&mut manual, 1), [0], "auto-commit is off by default");
            let mut sub = topic.subscribe("auto", StartAt::Earliest).expect("resume");
            sub.set_auto_commit(true);
            assert_eq!(drain(&mut sub), (4..10).collect::<Vec<_>>());
            // The receive that found nothing committed record 9 too.
            assert_eq!((sub.committed(), sub.lag()), (10, 0));
            assert!(sub.recv(Duration::from_millis(10)).expect("recv").is_none());
            bus.close().expect("close");
        }
        let (bus, topic) = open(backend);
        let mut sub = topic.subscribe("auto", StartAt::Earliest).expect("resume");
        assert_eq!((sub.committed(), sub.lag()), (10, 0));
        assert!(sub.try_recv().expect("recv").is_none());
        publish(&topic, 10..12);
        assert_eq!(sub.lag(), 2);
        bus.close().expect("close");
    }

    fn lag_counts_records_published_and_not_committed(backend: &TestBackend) {
        let (bus, topic) = open(backend);
        let mut sub = topic.subscribe("s", StartAt::Earliest).expect("sub");
        assert_eq!(sub.lag(), 0);
        publish(&topic, 0..7);
        assert_eq!(sub.lag(), 7);
        assert_eq!(take(&mut sub, 3), [0, 1, 2]);
        assert_eq!(sub.lag(), 7, "receiving does not commit");
        sub.commit().expect("commit");
        assert_eq!((sub.committed(), sub.position(), sub.lag()), (3, 3, 4));
        sub.commit_offset(1).expect("commit an earlier offset");
        assert_eq!(sub.lag(), 6);
        assert_eq!(consumers(&topic), [("s".to_owned(), 1, 6)]);
        // Embedded, a commit moves no cursor. JetStream cannot move an ack
        // floor back, so the consumer is recreated at the commit and
        // reading resumes there (docs/NATS.md, "Publish-subscribe").
        let resumes_at = match backend {
            TestBackend::Embedded { .. } => 3,
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => 1,
        };
        assert_eq!(sub.position(), resumes_at);
        assert_eq!(take(&mut sub, 1), [resumes_at]);
        sub.commit_offset(7).expect("commit");
        assert_eq!(sub.lag(), 0);
        assert_eq!(consumers(&topic), [("s".to_owned(), 7, 0)]);
        assert_eq!(sub.skipped(), 0);
        bus.close().expect("close");
    }

    fn ephemeral_subscriptions_are_not_persisted(backend: &TestBackend) {
        {
            let (bus, topic) = open(backend);
            publish(&topic, 0..5);
            let mut eph = topic.subscribe_ephemeral(StartAt::Earliest).expect("ephemeral");
            assert_eq!(eph.name(), None);
            assert_eq!(take(&mut eph, 3), [0, 1, 2]);
            eph.commit().expect("commit is local");
            assert_eq!((eph.committed(), eph.lag()), (3, 2));
            assert_eq!(consumers(&topic), []);
            bus.close().expect("close");
        }
        match backend {
            TestBackend::Embedded { dir } => {
                let subscriptions = dir.path().join("state/subscriptions/news");
                let stored = std::fs::read_dir(&subscriptions).map_or(0, |entries| entries.count());
                assert_eq!(stored, 0, "state stored in {}", subscriptions.display());
            }
            // Nothing durable on the server: `stats` lists the durable
            // consumers (none, checked after the reopen below). The
            // ephemeral consumer is unnamed, deleted when its subscription
            // is dropped on an open bus, else by the server once idle.
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => {}
        }
        let (bus, topic) = open(backend);
        assert_eq!(consumers(&topic), []);
        let mut eph = topic.subscribe_ephemeral(StartAt::Earliest).expect("ephemeral");
        assert_eq!(drain(&mut eph), (0..5).collect::<Vec<_>>());
        let mut tail = topic.subscribe_ephemeral(StartAt::Latest).expect("ephemeral");
        assert!(tail.try_recv().expect("recv").is_none());
        publish(&topic, 5..6);
        assert_eq!(drain(&mut tail), [5]);
        bus.close().expect("close");
    }

    fn two_subscriptions_on_one_topic_do_not_interfere(backend: &TestBackend) {
        {
            let (bus, topic) = open(backend);
            publish(&topic, 0..10);
            let mut a = topic.subscribe("a", StartAt::Earliest).expect("sub");
            let mut b = topic.subscribe("b", StartAt::Earliest).expect("sub");
            assert_eq!(take(&mut a, 3), [0, 1, 2]);
            a.commit().expect("commit");
            assert_eq!(take(&mut b, 1), [0]);
            b.commit().expect("commit");
            assert_eq!(take(&mut a, 2), [3, 4]);
            assert_eq!(take(&mut b, 4), [1, 2, 3, 4]);
            b.commit().expect("commit");
            assert_eq!((a.committed(), a.lag(), b.committed(), b.lag()), (3, 7, 5, 5));
            assert_eq!(
                consumers(&topic),
                [("a".to_owned(), 3, 7), ("b".to_owned(), 5, 5)]
            );
            bus.close().expect("close");
        }
        let (bus, topic) = open(backend);
        let mut b = topic.subscribe("b", StartAt::Earliest).expect("resume");
        let mut a = topic.subscribe("a", StartAt::Earliest).expect("resume");
        assert_eq!(drain(&mut b), (5..10).collect::<Vec<_>>());
        b.commit().expect("commit");
        assert_eq!(drain(&mut a), (3..10).collect::<Vec<_>>());
        assert_eq!((a.committed(), b.committed()), (3, 10));
        bus.close().expect("close");
    }

    /// Within one process on both backends. Across processes, the embedded
    /// bus has one owner (its directory lock) while NATS lets two
    /// processes share a subscription's consumer (docs/NATS.md, "Locks").
    fn opening_a_durable_subscription_twice_at_once_fails_with_locked_and_changes_nothing(
        backend: &TestBackend
    ) {
        let (bus, topic) = open(backend);
        publish(&topic, 0..6);
        let mut first = topic.subscribe("s", StartAt::Earliest).expect("sub");
        assert_eq!(take(&mut first, 2), [0, 1]);
        first.commit().expect("commit");
        for start in [StartAt::Earliest, StartAt::Latest, StartAt::Offset(4)] {
            match topic.subscribe("s", start) {
                Err(logbus::Error::Locked(_)) => {}
                other => panic!("second open of a durable subscription: {other:?}"),
            }
        }
        // The first handle is unaffected.
        assert_eq!(take(&mut first, 2), [2, 3]);
        first.commit().expect("commit");
        assert_eq!(consumers(&topic), [("s".to_owned(), 4, 2)]);
        drop(first);
        let mut again = topic
            .subscribe("s", StartAt::Latest)
            .expect("reopen once released");
        assert_eq!(again.committed(), 4);
        assert_eq!(drain(&mut again), [4, 5]);
        bus.close().expect("close");
    }

    /// More than JetStream's default MaxAckPending (1000) records received
    /// without a commit: neither backend stalls.
    fn a_subscription_reads_far_ahead_of_its_commits_and_a_reopen_resumes_at_the_commit(
        backend: &TestBackend
    ) {
        {
            let (bus, topic) = open(backend);
            publish(&topic, 0..1100);
            let mut board = topic.subscribe("board", StartAt::Earliest).expect("sub");
            let mut audit = topic.subscribe("audit", StartAt::Earliest).expect("sub");
            assert_eq!((audit.committed(), audit.lag()), (0, 1100));
            for offset in 0..1100 {
                let record = board.recv(TIMEOUT).expect("recv").expect("no stall");
                assert_eq!(check(&record), offset);
            }
            board.commit().expect("commit");
            assert_eq!(take(&mut audit, 5), [0, 1, 2, 3, 4]);
            audit.commit_offset(3).expect("commit");
            assert_eq!((audit.committed(), audit.position()), (3, 5));
            assert_eq!(
                consumers(&topic),
                [("audit".to_owned(), 3, 1097), ("board".to_owned(), 1100, 0)]
            );
            bus.close().expect("close");
        }
        // Offsets 3 and 4 were received, not committed: they come again,
        // first, in order.
        let (bus, topic) = open(backend);
        let mut audit = topic.subscribe("audit", StartAt::Earliest).expect("resume");
        assert_eq!(audit.committed(), 3);
        assert_eq!(take(&mut audit, 3), [3, 4, 5]);
        let mut board = topic.subscribe("board", StartAt::Earliest).expect("resume");
        assert!(board.recv(Duration::from_millis(200)).expect("recv").is_none());
        bus.close().expect("close");
    }

    fn a_cancelled_recv_async_loses_no_record(backend: &TestBackend) {
        let (bus, topic) = open(backend);
        let mut sub = topic.subscribe("s", StartAt::Earliest).expect("sub");
        assert!(poll_once(sub.recv_async()).is_pending(), "nothing published yet");
        publish(&topic, 0..1);
        assert_eq!(check(&sub.recv(TIMEOUT).expect("recv").expect("record 0")), 0);
        sub.commit().expect("commit");
        // Cancelled, then the subscription itself goes: the record
        // published next reaches the next handle.
        assert!(poll_once(sub.recv_async()).is_pending());
        drop(sub);
        publish(&topic, 1..2);
        let mut again = topic.subscribe("s", StartAt::Earliest).expect("resume");
        assert_eq!(check(&again.recv(TIMEOUT).expect("recv").expect("record 1")), 1);
        bus.close().expect("close");
    }

    /// On NATS the cancelled receive leaves its pull pending, and the next
    /// receive waits for it on the connection's timer, from a thread of no
    /// runtime (this once panicked making that timer outside the runtime).
    fn a_receive_after_a_cancelled_recv_async_waits_out_its_timeout(backend: &TestBackend) {
        let (bus, topic) = open(backend);
        let mut sub = topic.subscribe("s", StartAt::Earliest).expect("sub");
        assert!(poll_once(sub.recv_async()).is_pending(), "nothing published yet");
        assert!(sub.recv(Duration::from_millis(200)).expect("recv").is_none());
        publish(&topic, 0..1);
        assert_eq!(check(&sub.recv(TIMEOUT).expect("recv").expect("record 0")), 0);
        bus.close().expect("close");
    }

    /// Also after a reopen, before any topic is opened again.
    fn topic_names_and_bus_stats_list_the_stored_topics_sorted(backend: &TestBackend) {
        let bus = backend.open();
        for name in ["news", "a.b c", "alerts"] {
            publish(&bus.topic(name).expect("topic"), 0..2);
        }
        let ends = |bus: &Bus| -> Vec<(String, u64, u64)> {
            let stats = bus.stats().expect("stats");
            stats.into_iter().map(|t| (t.name, t.start_offset, t.end_offset)).collect()
        };
        let expected = [("a.b c", 0, 2), ("alerts", 0, 2), ("news", 0, 2)].map(|(n, s, e)| (n.to_owned(), s, e));
        assert_eq!(bus.topic_names().expect("names"), ["a.b c", "alerts", "news"]);
        assert_eq!(ends(&bus), expected);
        bus.close().expect("close");
        let bus = backend.open();
        assert_eq!(bus.topic_names().expect("names"), ["a.b c", "alerts", "news"]);
        assert_eq!(ends(&bus), expected, "no topic opened by this bus yet");
        bus.close().expect("close");
    }

    fn handles_of_a_closed_bus_fail_with_closed(backend: &TestBackend) {
        let (bus, topic) = open(backend);
        publish(&topic, 0..1);
        let mut sub = topic.subscribe("s", StartAt::Earliest).expect("sub");
        bus.close().expect("close");
        assert!(matches!(topic.publish(&Record::new(b"late")), Err(logbus::Error::Closed)));
        assert!(matches!(sub.try_recv(), Err(logbus::Error::Closed)));
        assert!(matches!(bus.topic("news"), Err(logbus::Error::Closed)));
        bus.close().expect("a second close is a no-op");
    }

    fn subscriptions_and_their_recv_async_futures_can_move_between_threads(backend: &TestBackend) {
        fn is_send<T: Send>(_: &T) {}
        let (bus, topic) = open(backend);
        let mut sub = topic.subscribe("s", StartAt::Earliest).expect("sub");
        is_send(&sub.recv_async());
        publish(&topic, 0..1);
        let received = std::thread::spawn(move || sub.recv(TIMEOUT).expect("recv").map(|r| check(&r)));
        assert_eq!(received.join().expect("thread"), Some(0));
        bus.close().expect("close");
    }

    fn a_batch_gets_consecutive_offsets_and_stops_after_a_stored_prefix_if_another_publisher_interleaves(
        backend: &TestBackend
    ) {
        let (bus, topic) = open(backend);
        let values: Vec<String> = (0..3).map(value).collect();
        let batch: Vec<Record> = values.iter().map(Record::new).collect();
        assert_eq!(topic.publish_batch(&batch).expect("batch"), 0..3);
        assert_eq!(topic.publish_batch(&[]).expect("empty batch"), 3..3);
        // Larger than the window NATS sends before awaiting acknowledgements.
        let values: Vec<String> = (3..603).map(value).collect();
        let batch: Vec<Record> = values.iter().map(Record::new).collect();
        assert_eq!(topic.publish_batch(&batch).expect("large batch"), 3..603);
        assert_eq!(topic.end_offset(), 603);
        match backend {
            // Another process's publisher goes through the directory's
            // owner, which writes each batch at once: none interleaves.
            TestBackend::Embedded { dir } => batches_never_interleave_embedded(dir.path(), &topic),
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => batches_interleaved_on_nats(backend, &topic),
        }
        bus.close().expect("close");
    }

    /// The NATS backend maps names onto stream names and subjects, where a
    /// dot is a separator: the mapping must keep such topics apart.
    fn topics_whose_names_differ_only_by_a_dot_or_a_space_stay_apart(backend: &TestBackend) {
        let bus = backend.open();
        let names = ["orders", "orders.dlq", "orders dlq"];
        for (count, name) in (1..).zip(names) {
            let topic = bus.topic(name).expect("topic");
            for i in 0..count {
                assert_eq!(topic.publish(&Record::new(name)).expect("publish"), i, "offsets count from 0");
            }
        }
        for (count, name) in (1..).zip(names) {
            let topic = bus.topic(name).expect("topic");
            let mut reader = topic.subscribe_ephemeral(StartAt::Earliest).expect("subscribe");
            let values: Vec<Vec<u8>> = (0..count)
                .map(|_| reader.recv(TIMEOUT).expect("recv").expect("a record").value().to_vec())
                .collect();
            assert_eq!(values, vec![name.as_bytes().to_vec(); count as usize], "{name}");
            assert!(reader.try_recv().expect("try_recv").is_none(), "{name} holds only its own");
        }
        assert_eq!(bus.topic_names().expect("names"), ["orders", "orders dlq", "orders.dlq"]);
        bus.close().expect("close");
    }

    /// Key, header order, repeated and binary header values and an explicit
    /// timestamp reach every kind of reader unchanged; without a timestamp
    /// the record is stamped with the time it was published.
    fn a_records_key_headers_and_timestamp_reach_subscriptions_and_groups_unchanged(backend: &TestBackend) {
        let (bus, topic) = open(backend);
        let binary = [0u8, 13, 10, b'%', 255, b' '];
        let record = Record::new(b"v\0\r\n")
            .key(b"customer 7\n")
            .header("b", b"1")
            .header("a", &binary)
            .header("b", b"2")
            .header("trace", b"x y")
            .timestamp(1_234_567);
        topic.publish(&record).expect("publish");
        let before = clock_between_publishes();
        topic.publish(&Record::new(b"no timestamp")).expect("publish");
        let after = clock_between_publishes();
        let expected: Vec<(&str, &[u8])> = vec![("b", b"1"), ("a", &binary), ("b", b"2"), ("trace", b"x y")];

        let mut reader = topic.subscribe("audit", StartAt::Earliest).expect("subscribe");
        let group = topic.group("g", logbus::GroupOptions::default()).expect("group");
        let read = reader.recv(TIMEOUT).expect("recv").expect("a record");
        let delivery = group.recv(TIMEOUT).expect("recv").expect("a delivery");
        for got in [&read, delivery.record()] {
            assert_eq!(got.offset(), 0);
            assert_eq!(got.value(), b"v\0\r\n");
            assert_eq!(got.key(), b"customer 7\n");
            assert_eq!(got.timestamp(), 1_234_567);
            assert_eq!(got.headers().collect::<Vec<_>>(), expected);
        }
        delivery.ack().expect("ack");
        let plain = reader.recv(TIMEOUT).expect("recv").expect("a record");
        assert!(plain.key().is_empty() && plain.headers().next().is_none());
        // NATS stamps with the server's clock: allow a little skew.
        let stamped = plain.timestamp();
        assert!((before - 1_000..=after + 1_000).contains(&stamped), "{before} <= {stamped} <= {after}");
        bus.close().expect("close");
    }
}

/// Another connection publishes single records while batches of 50 are
/// published: some batch fails, every stored batch record sits at the
/// offsets the batch reported (a failed one's prefix included), and no
/// other batch record was stored.
fn batches_never_interleave_embedded(dir: &std::path::Path, topic: &Topic) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let other = Bus::open(dir, logbus::BusOptions::default()).expect("a second open joins the owner");
    let other_topic = other.topic("news").expect("topic");
    let stop = AtomicBool::new(false);
    let values: Vec<String> = (0..50).map(|i| format!("batch record {i}")).collect();
    let batch: Vec<Record> = values.iter().map(Record::new).collect();
    let stored = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                other_topic.publish(&Record::new(b"interloper")).expect("publish");
            }
        });
        let stored: Vec<_> = (0..50)
            .map(|_| topic.publish_batch(&batch).expect("batch"))
            .collect();
        stop.store(true, Ordering::Relaxed);
        stored
    });
    for range in stored {
        let mut cursor = topic
            .log()
            .expect("embedded")
            .cursor(logbus::Position::Offset(range.start))
            .expect("cursor");
        for expected in &values {
            assert_eq!(
                cursor.next().expect("read").expect("record").value(),
                expected.as_bytes()
            );
        }
    }
}

#[cfg(feature = "nats")]
fn batches_interleaved_on_nats(backend: &TestBackend, topic: &Topic) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let other = backend.open();
    let other_topic = other.topic("news").expect("topic");
    let stop = AtomicBool::new(false);
    let values: Vec<String> = (0..50).map(|i| format!("batch record {i}")).collect();
    let batch: Vec<Record> = values.iter().map(Record::new).collect();
    let (stored, failure) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                other_topic.publish(&Record::new(b"interloper")).expect("publish");
            }
        });
        let mut stored = Vec::new();
        let failure = (0..200).find_map(|_| match topic.publish_batch(&batch) {
            Ok(range) => {
                stored.push(range);
                None
            }
            Err(e) => Some(e),
        });
        stop.store(true, Ordering::Relaxed);
        (stored, failure)
    });
    let failure = failure.expect("200 batches of 50 never interleaved");
    let message = failure.to_string();
    assert!(
        matches!(failure, logbus::Error::Backend { backend: "nats", .. })
            && message.contains("wrong last message id")
            && message.contains("of this batch were stored"),
        "{message}"
    );
    // "... offsets 120..131 of this batch were stored"
    let prefix = message
        .split("offsets ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|range| range.split_once(".."))
        .map(|(a, b)| a.parse::<u64>().unwrap()..b.parse::<u64>().unwrap())
        .unwrap_or_else(|| panic!("no stored prefix in {message}"));
    let mut stored = stored;
    stored.push(prefix);
    let mut reader = topic.subscribe_ephemeral(StartAt::Earliest).expect("reader");
    let mut all = Vec::new();
    while let Some(record) = reader.try_recv().expect("recv") {
        all.push(record);
    }
    let reported: usize = stored.iter().map(|range| range.clone().count()).sum();
    for range in stored {
        for (i, offset) in range.enumerate() {
            assert_eq!(
                all[offset as usize].value(),
                values[i].as_bytes(),
                "offset {offset}"
            );
        }
    }
    let batch_records = all
        .iter()
        .filter(|r| r.value().starts_with(b"batch record"))
        .count();
    assert_eq!(
        batch_records, reported,
        "only the reported batch records were stored"
    );
    other.close().expect("close");
}
