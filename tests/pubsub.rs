//! Publish-subscribe on the real file system: durable subscriptions start
//! where they were told, see exactly their records in order and resume from
//! their committed offset after a reopen; auto-commit, lag, ephemeral
//! subscriptions and two subscribers on one topic behave as documented; a
//! durable subscription cannot be opened twice at once.
//!
//! Every record's value and timestamp derive from its offset, so each check
//! is a plain list of offsets.

use std::path::Path;
use std::time::Duration;

use logbus::{Bus, BusOptions, ConsumerId, Error, Record, StartAt, Subscription, Topic};

/// Timestamp of record 0; record `i` is stamped `T0 + i` seconds.
const T0: i64 = 1_700_000_000_000;

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

/// Receives up to `n` records, checking each one's content.
fn take(sub: &mut Subscription, n: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    while offsets.len() < n {
        let Some(record) = sub.try_recv().expect("recv") else {
            break;
        };
        assert_eq!(record.value(), value(record.offset()).as_bytes());
        assert_eq!(record.timestamp(), T0 + record.offset() as i64 * 1000);
        offsets.push(record.offset());
    }
    offsets
}

fn drain(sub: &mut Subscription) -> Vec<u64> {
    take(sub, usize::MAX)
}

fn open(dir: &Path) -> (Bus, Topic) {
    let bus = Bus::open(dir, BusOptions::default()).expect("open the bus");
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

#[test]
fn five_durable_subscriptions_each_see_exactly_their_records_in_order_across_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (bus, topic) = open(dir.path());
        publish(&topic, 0..10);
        let mut earliest = topic.subscribe("earliest", StartAt::Earliest).expect("sub");
        let mut latest = topic.subscribe("latest", StartAt::Latest).expect("sub");
        let mut offset = topic.subscribe("offset", StartAt::Offset(4)).expect("sub");
        // The first record stamped at or after T0 + 6.5 s is record 7.
        let mut time = topic
            .subscribe("time", StartAt::Timestamp(T0 + 6500))
            .expect("sub");
        let positions = [&earliest, &latest, &offset, &time].map(|s| (s.position(), s.committed(), s.lag()));
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
        let (bus, topic) = open(dir.path());
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
    let (bus, topic) = open(dir.path());
    publish(&topic, 25..30);
    for name in ["earliest", "latest", "offset", "time"] {
        let mut sub = topic.subscribe(name, StartAt::Earliest).expect("resume");
        assert_eq!(drain(&mut sub), (25..30).collect::<Vec<_>>(), "{name}");
    }
    let mut later = topic.subscribe("later", StartAt::Earliest).expect("resume");
    assert_eq!(drain(&mut later), (23..30).collect::<Vec<_>>());
    bus.close().expect("close");
}

#[test]
fn auto_commit_resumes_after_the_last_record_received_and_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (bus, topic) = open(dir.path());
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
        let (bus, topic) = open(dir.path());
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
    let (bus, topic) = open(dir.path());
    let mut sub = topic.subscribe("auto", StartAt::Earliest).expect("resume");
    assert_eq!((sub.committed(), sub.lag()), (10, 0));
    assert!(sub.try_recv().expect("recv").is_none());
    publish(&topic, 10..12);
    assert_eq!(sub.lag(), 2);
    bus.close().expect("close");
}

#[test]
fn lag_counts_records_published_and_not_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bus, topic) = open(dir.path());
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
    sub.commit_offset(7).expect("commit");
    assert_eq!(sub.lag(), 0);
    assert_eq!(consumers(&topic), [("s".to_owned(), 7, 0)]);
    assert_eq!(sub.skipped(), 0);
    bus.close().expect("close");
}

#[test]
fn ephemeral_subscriptions_are_not_persisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (bus, topic) = open(dir.path());
        publish(&topic, 0..5);
        let mut eph = topic.subscribe_ephemeral(StartAt::Earliest).expect("ephemeral");
        assert_eq!(eph.name(), None);
        assert_eq!(take(&mut eph, 3), [0, 1, 2]);
        eph.commit().expect("commit is local");
        assert_eq!((eph.committed(), eph.lag()), (3, 2));
        assert_eq!(consumers(&topic), []);
        bus.close().expect("close");
    }
    let subscriptions = dir.path().join("state/subscriptions/news");
    let stored = std::fs::read_dir(&subscriptions).map_or(0, |entries| entries.count());
    assert_eq!(stored, 0, "state stored in {}", subscriptions.display());
    let (bus, topic) = open(dir.path());
    assert_eq!(consumers(&topic), []);
    let mut eph = topic.subscribe_ephemeral(StartAt::Earliest).expect("ephemeral");
    assert_eq!(drain(&mut eph), (0..5).collect::<Vec<_>>());
    let mut tail = topic.subscribe_ephemeral(StartAt::Latest).expect("ephemeral");
    assert!(tail.try_recv().expect("recv").is_none());
    publish(&topic, 5..6);
    assert_eq!(drain(&mut tail), [5]);
    bus.close().expect("close");
}

#[test]
fn two_subscriptions_on_one_topic_do_not_interfere() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (bus, topic) = open(dir.path());
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
    let (bus, topic) = open(dir.path());
    let mut b = topic.subscribe("b", StartAt::Earliest).expect("resume");
    let mut a = topic.subscribe("a", StartAt::Earliest).expect("resume");
    assert_eq!(drain(&mut b), (5..10).collect::<Vec<_>>());
    b.commit().expect("commit");
    assert_eq!(drain(&mut a), (3..10).collect::<Vec<_>>());
    assert_eq!((a.committed(), b.committed()), (3, 10));
    bus.close().expect("close");
}

#[test]
fn opening_a_durable_subscription_twice_at_once_fails_with_locked_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bus, topic) = open(dir.path());
    publish(&topic, 0..6);
    let mut first = topic.subscribe("s", StartAt::Earliest).expect("sub");
    assert_eq!(take(&mut first, 2), [0, 1]);
    first.commit().expect("commit");
    for start in [StartAt::Earliest, StartAt::Latest, StartAt::Offset(4)] {
        match topic.subscribe("s", start) {
            Err(Error::Locked(_)) => {}
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
