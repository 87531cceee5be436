//! Retention modes and the size of consumer state, on the real file system,
//! plus async receive on a bare executor.
//!
//! - `Limits` drops whole old segments by size or age; a durable
//!   subscription it overtakes is told exactly how many records it skipped,
//!   whether it was reading at the time or reopened later.
//! - `Interest` keeps records until every durable subscription and group
//!   has passed them, including consumers stored on disk but not opened by
//!   this process, then drops whole segments.
//! - `WorkQueue` drops segments once every group acked them, whatever
//!   subscriptions think.
//! - Group and subscription state logs are compacted by snapshots: their
//!   size follows what is in flight, not the history.
//! - `recv_async` needs no particular runtime: a twenty-line executor that
//!   polls only when woken sees group and subscription receives wake on a
//!   publish from another thread, and on a delayed redelivery or an expired
//!   lease, which only the bus's timer thread can signal.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::groups::group_options;
use common::maintenance::eventually;
use common::storage::{Hooked, Hooks};
use logbus::storage::SimStorage;
use logbus::{
    Bus, BusOptions, ConsumerId, Durability, GroupOptions, Record, Retention, StartAt, Subscription, Topic,
    TopicOptions,
};

const SHORT: Duration = Duration::from_millis(10);
const SEGMENT_BYTES: u64 = 1024;

fn options(retention: Retention) -> TopicOptions {
    TopicOptions::default()
        .durability(Durability::Os)
        .segment_bytes(SEGMENT_BYTES)
        .retention(retention)
}

fn open(dir: &Path) -> Bus {
    Bus::open(dir, BusOptions::default()).unwrap()
}

fn publish(topic: &Topic, count: u64) {
    for _ in 0..count {
        let offset = topic.end_offset();
        topic
            .publish(&Record::new(&format!("record {offset:06}")))
            .unwrap();
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Total size of the files in a directory tree.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        // A file deleted in the background since it was listed counts as 0.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        total += match meta.is_dir() {
            true => tree_bytes(&entry.path()),
            false => meta.len(),
        };
    }
    total
}

fn segment_count(bus_dir: &Path, topic: &str) -> usize {
    std::fs::read_dir(bus_dir.join("topics").join(topic))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
        .count()
}

/// Reads a subscription to the end; checks that what it received plus what
/// it was told it skipped covers every offset from `from` exactly once.
fn read_to_end(sub: &mut Subscription, from: u64, end: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    while let Some(record) = sub.recv(SHORT).unwrap() {
        assert!(offsets.last().is_none_or(|&last| record.offset() > last));
        offsets.push(record.offset());
    }
    assert_eq!(
        offsets.len() as u64 + sub.skipped(),
        end - from,
        "records lost silently"
    );
    offsets
}

fn ack(topic: &Topic, group: &str, count: u64) {
    let group = topic.group(group, GroupOptions::default()).unwrap();
    for _ in 0..count {
        group.try_recv().unwrap().expect("a record to ack").ack().unwrap();
    }
}

#[test]
fn limits_by_size_drop_old_segments_and_overtaken_subscribers_learn_how_many_they_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let topic = bus
        .topic_with("metrics", options(Retention::Limits).max_bytes(4 * SEGMENT_BYTES))
        .unwrap();
    publish(&topic, 10);
    let mut reading = topic.subscribe("reading", StartAt::Earliest).unwrap();
    for offset in 0..3 {
        assert_eq!(reading.recv(SHORT).unwrap().unwrap().offset(), offset);
    }
    reading.commit().unwrap();
    let mut idle = topic.subscribe("idle", StartAt::Earliest).unwrap();
    idle.commit_offset(2).unwrap();
    drop(idle);

    publish(&topic, 400);
    let start = topic.start_offset();
    assert!(start > 10, "retention removed nothing");
    eventually("old segment files deleted", || {
        segment_count(dir.path(), "metrics") <= 6
    });
    assert_eq!(
        topic.log().expect("embedded topic").read(start - 1).unwrap(),
        None
    );

    // Reading when retention passed it: the gap is counted, nothing else lost.
    let offsets = read_to_end(&mut reading, 3, 410);
    assert!(reading.skipped() > 0);
    assert!(offsets.contains(&start));
    bus.close().unwrap();

    // Reopened after retention passed its commit: told at once.
    let bus = open(dir.path());
    let topic = bus.topic_with("metrics", options(Retention::Limits)).unwrap();
    let mut idle = topic.subscribe("idle", StartAt::Earliest).unwrap();
    assert_eq!(idle.skipped(), start - 2);
    assert_eq!(idle.lag(), 410 - start);
    let offsets = read_to_end(&mut idle, 2, 410);
    assert_eq!(offsets, (start..410).collect::<Vec<_>>());
    assert_eq!(idle.skipped(), start - 2);
}

#[test]
fn limits_by_age_drop_segments_whose_newest_record_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let topic = bus
        .topic_with(
            "events",
            options(Retention::Limits).max_age(Duration::from_secs(3600)),
        )
        .unwrap();
    let mut sub = topic.subscribe("audit", StartAt::Earliest).unwrap();
    let minutes_ago = |minutes: i64| now_ms() - minutes * 60 * 1000;
    for i in 0..100 {
        let value = format!("aged {i:06}");
        let age = if i < 50 { 120 } else { 30 };
        topic
            .publish(&Record::new(&value).timestamp(minutes_ago(age)))
            .unwrap();
    }
    publish(&topic, 100);
    // Segments of two-hour-old records went as they were sealed; the one
    // that also holds a half-hour-old record stays.
    let start = topic.start_offset();
    assert!(start > 0 && start <= 50, "start {start}");
    let offsets = read_to_end(&mut sub, 0, 200);
    assert_eq!(sub.skipped(), start);
    assert_eq!(offsets, (start..200).collect::<Vec<_>>());
}

/// Lists every directory but one whose name ends with `groups/orders`
/// while `failing` is set.
#[derive(Debug, Default)]
struct UnlistableGroups {
    failing: AtomicBool,
}

impl Hooks for UnlistableGroups {
    fn before_list(&self, dir: &Path) -> std::io::Result<()> {
        if self.failing.load(Ordering::Relaxed) && dir.ends_with("groups/orders") {
            return Err(std::io::Error::other("listing fails"));
        }
        Ok(())
    }
}

/// A topic whose consumers cannot be listed does not open: it would not
/// know the positions that `Interest` retention must keep records for,
/// and would delete what a stored group still needs.
#[test]
fn a_topic_whose_consumers_cannot_be_listed_does_not_open() {
    let sim = SimStorage::new();
    let hooks = Arc::new(UnlistableGroups::default());
    let bus_dir = Path::new("/sim/bus");
    let open = || {
        let storage = Hooked::shared(sim.clone(), hooks.clone());
        Bus::open(bus_dir, BusOptions::default().storage(Arc::new(storage))).unwrap()
    };
    {
        let bus = open();
        let topic = bus.topic_with("orders", options(Retention::Interest)).unwrap();
        topic.group("billing", GroupOptions::default()).unwrap();
        publish(&topic, 300);
        bus.close().unwrap();
    }
    hooks.failing.store(true, Ordering::Relaxed);
    let bus = open();
    let refused = bus.topic_with("orders", options(Retention::Interest));
    assert!(
        matches!(&refused, Err(logbus::Error::Io(e)) if e.to_string().contains("listing fails")),
        "opened: {:?}",
        refused.as_ref().err()
    );
    drop(bus);

    hooks.failing.store(false, Ordering::Relaxed);
    let bus = open();
    let topic = bus.topic_with("orders", options(Retention::Interest)).unwrap();
    let mut audit = topic.subscribe("audit", StartAt::Earliest).unwrap();
    assert_eq!(read_to_end(&mut audit, 0, 300).len(), 300);
    audit.commit().unwrap();
    assert_eq!(topic.start_offset(), 0, "the group still needs every record");
}

#[test]
fn interest_keeps_records_until_every_consumer_passed_them_including_ones_not_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = open(dir.path());
        let topic = bus.topic_with("orders", options(Retention::Interest)).unwrap();
        topic.subscribe("audit", StartAt::Earliest).unwrap();
        topic.group("billing", GroupOptions::default()).unwrap();
        bus.close().unwrap();
    }
    // Neither consumer is open in this process now.
    let bus = open(dir.path());
    let topic = bus.topic_with("orders", options(Retention::Interest)).unwrap();
    publish(&topic, 300);
    let segments = segment_count(dir.path(), "orders");
    assert!(segments > 5);

    // One consumer passing everything frees nothing while the group,
    // stored on disk but not open, is still at 0.
    let _ephemeral = topic.subscribe_ephemeral(StartAt::Earliest).unwrap();
    let mut audit = topic.subscribe("audit", StartAt::Earliest).unwrap();
    assert_eq!(read_to_end(&mut audit, 0, 300).len(), 300);
    audit.commit().unwrap();
    assert_eq!(topic.start_offset(), 0);
    assert_eq!(segment_count(dir.path(), "orders"), segments);
    let stats = topic.stats().unwrap();
    let billing = stats
        .consumers
        .iter()
        .find(|c| c.id == ConsumerId::Group("billing".into()));
    assert_eq!(billing.map(|c| (c.committed, c.lag)), Some((0, 300)));

    // The group acks half: whole segments below its low watermark go.
    ack(&topic, "billing", 150);
    let start = topic.start_offset();
    assert!(start > 0 && start <= 150, "start {start}");
    assert!(
        topic
            .log()
            .expect("embedded topic")
            .read(start - 1)
            .unwrap()
            .is_none()
    );
    assert!(topic.log().expect("embedded topic").read(150).unwrap().is_some());
    eventually("released segment files deleted", || {
        segment_count(dir.path(), "orders") < segments
    });

    // Everyone passed everything: only the active segment is left.
    ack(&topic, "billing", 150);
    eventually("all but the active segment deleted", || {
        segment_count(dir.path(), "orders") == 1
    });
    let start = topic.start_offset();
    assert!(start > 150 && start < 300);
    bus.close().unwrap();

    // After a reopen new records wait for the consumers again.
    let bus = open(dir.path());
    let topic = bus.topic_with("orders", options(Retention::Interest)).unwrap();
    assert_eq!(topic.start_offset(), start);
    publish(&topic, 100);
    let mut audit = topic.subscribe("audit", StartAt::Earliest).unwrap();
    assert_eq!(read_to_end(&mut audit, 300, 400).len(), 100);
    audit.commit().unwrap();
    // The group is at 300: what lies below may go, nothing after it.
    assert!(topic.start_offset() <= 300);
    assert!(topic.log().expect("embedded topic").read(300).unwrap().is_some());
    ack(&topic, "billing", 100);
    assert!(topic.start_offset() > 300);
}

/// A group holds records back from the moment it exists, before its first
/// ack (it used to register only once its low watermark moved).
#[test]
fn interest_counts_a_group_created_in_this_process_before_it_acks_anything() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let topic = bus.topic_with("orders", options(Retention::Interest)).unwrap();
    let mut audit = topic.subscribe("audit", StartAt::Earliest).unwrap();
    drop(topic.group("new", GroupOptions::default()).unwrap());
    publish(&topic, 300);
    assert_eq!(read_to_end(&mut audit, 0, 300).len(), 300);
    audit.commit().unwrap();
    assert_eq!(
        topic.start_offset(),
        0,
        "records the new group never saw were deleted"
    );
    ack(&topic, "new", 300);
    assert!(topic.start_offset() > 0);
}

#[test]
fn work_queue_drops_segments_every_group_acked_and_ignores_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let topic = bus.topic_with("jobs", options(Retention::WorkQueue)).unwrap();
    let mut observer = topic.subscribe("observer", StartAt::Earliest).unwrap();
    topic.group("fast", GroupOptions::default()).unwrap();
    topic.group("slow", GroupOptions::default()).unwrap();
    publish(&topic, 300);

    ack(&topic, "fast", 300);
    ack(&topic, "slow", 60);
    let start = topic.start_offset();
    assert!(start > 0 && start <= 60, "start {start}");
    ack(&topic, "slow", 240);
    let start = topic.start_offset();
    assert!(start > 60, "start {start}");
    eventually("all but the active segment deleted", || {
        segment_count(dir.path(), "jobs") == 1
    });

    // The subscription never committed, yet retention went on: it is told.
    let offsets = read_to_end(&mut observer, 0, 300);
    assert_eq!(observer.skipped(), start);
    assert_eq!(offsets, (start..300).collect::<Vec<_>>());
}

#[test]
fn group_state_stays_small_after_acking_200k_records_one_by_one() {
    const RECORDS: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let options = BusOptions::default().topic_defaults(TopicOptions::default().durability(Durability::Os));
    let bus = Bus::open(dir.path(), options.clone()).unwrap();
    let topic = bus.topic("work").unwrap();
    let values: Vec<String> = (0..1000).map(|i| format!("job {i}")).collect();
    let batch: Vec<Record<'_>> = values.iter().map(Record::new).collect();
    for _ in 0..RECORDS / 1000 {
        topic.publish_batch(&batch).unwrap();
    }
    let group = topic.group("workers", GroupOptions::default()).unwrap();
    let state_dir = dir.path().join("state/groups/work/workers");
    for i in 0..RECORDS {
        group.try_recv().unwrap().unwrap().ack().unwrap();
        if i % 1000 == 999 {
            // Without compaction the events alone would take about 28 MB;
            // with it, at most the segment being written (reserved up to
            // 4 MiB), the one before it and their indexes, once the
            // compacted segments' files are deleted in the background.
            eventually("group state at most 9 MiB", || tree_bytes(&state_dir) <= 9 << 20);
        }
    }
    assert_eq!(group.stats().unwrap().low_watermark, RECORDS);
    bus.close().unwrap();

    let bus = Bus::open(dir.path(), options).unwrap();
    let group = bus
        .topic("work")
        .unwrap()
        .group("workers", GroupOptions::default())
        .unwrap();
    assert_eq!(group.stats().unwrap().low_watermark, RECORDS);
    assert!(group.try_recv().unwrap().is_none());
}

#[test]
fn subscription_state_stays_small_after_400k_commits() {
    const RECORDS: u64 = 400_000;
    let dir = tempfile::tempdir().unwrap();
    let options = BusOptions::default().topic_defaults(TopicOptions::default().durability(Durability::Os));
    let bus = Bus::open(dir.path(), options.clone()).unwrap();
    let topic = bus.topic("news").unwrap();
    let values: Vec<String> = (0..1000).map(|i| format!("story {i}")).collect();
    let batch: Vec<Record<'_>> = values.iter().map(Record::new).collect();
    for _ in 0..RECORDS / 1000 {
        topic.publish_batch(&batch).unwrap();
    }
    let mut sub = topic.subscribe("reader", StartAt::Earliest).unwrap();
    let state_dir = dir.path().join("state/subscriptions/news/reader");
    for i in 0..RECORDS {
        sub.try_recv().unwrap().unwrap();
        sub.commit().unwrap();
        if i % 100 == 99 {
            // Without compaction the commits alone would take about 18 MB;
            // with it, at most two 4 MiB state segments and their indexes,
            // once the compacted segments' files are deleted.
            eventually("subscription state at most 8 MiB + 64 KiB", || {
                tree_bytes(&state_dir) <= (8 << 20) + (64 << 10)
            });
        }
    }
    bus.close().unwrap();

    let bus = Bus::open(dir.path(), options).unwrap();
    let mut sub = bus
        .topic("news")
        .unwrap()
        .subscribe("reader", StartAt::Earliest)
        .unwrap();
    assert_eq!(sub.committed(), RECORDS);
    assert!(sub.try_recv().unwrap().is_none());
}

/// Wakes the executor thread.
struct Unpark {
    woken: AtomicBool,
    thread: Thread,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Runs `future` on this thread, polling it only when its waker was called
/// (a future nobody wakes fails the test after 10 s). Calls `on_pending`
/// after the first poll that returns pending. Returns the output and the
/// number of polls.
fn block_on<F: Future>(future: F, on_pending: impl FnOnce()) -> (F::Output, u32) {
    let unpark = Arc::new(Unpark {
        woken: AtomicBool::new(true),
        thread: thread::current(),
    });
    let waker = Waker::from(unpark.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut on_pending = Some(on_pending);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut polls = 0;
    loop {
        if unpark.woken.swap(false, Ordering::SeqCst) {
            polls += 1;
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return (output, polls);
            }
            if let Some(on_pending) = on_pending.take() {
                on_pending();
            }
            continue;
        }
        let now = Instant::now();
        assert!(now < deadline, "the future was never woken");
        thread::park_timeout(deadline - now);
    }
}

/// Publishes `value` to `topic` from another thread once `start` fires.
fn publish_when_told(
    topic: &Topic,
    value: &'static str,
) -> (std::sync::mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (start, told) = std::sync::mpsc::channel();
    let topic = topic.clone();
    let publisher = thread::spawn(move || {
        if told.recv().is_ok() {
            topic.publish(&Record::new(value)).unwrap();
        }
    });
    (start, publisher)
}

#[test]
fn group_recv_async_wakes_on_a_publish_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let topic = bus.topic("tasks").unwrap();
    let group = topic.group("workers", GroupOptions::default()).unwrap();
    let (start, publisher) = publish_when_told(&topic, "wake up");
    let (delivery, polls) = block_on(group.recv_async(), || start.send(()).unwrap());
    let delivery = delivery.unwrap();
    assert_eq!(delivery.record().value(), b"wake up");
    assert!(polls >= 2, "the receive never waited");
    delivery.ack().unwrap();
    publisher.join().unwrap();
}

#[test]
fn subscription_recv_async_wakes_on_a_publish_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let topic = bus.topic("news").unwrap();
    let mut sub = topic.subscribe("reader", StartAt::Latest).unwrap();
    let (start, publisher) = publish_when_told(&topic, "extra");
    let (record, polls) = block_on(sub.recv_async(), || start.send(()).unwrap());
    assert_eq!(record.unwrap().value(), b"extra");
    assert!(polls >= 2, "the receive never waited");
    publisher.join().unwrap();
}

#[test]
fn group_recv_async_wakes_when_a_delayed_redelivery_falls_due() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let topic = bus.topic("tasks").unwrap();
    topic.publish(&Record::new(b"retry me")).unwrap();
    let group = topic.group("workers", GroupOptions::default()).unwrap();
    let delay = Duration::from_millis(100);
    let nacked = Instant::now();
    group
        .try_recv()
        .unwrap()
        .unwrap()
        .nack_with_delay("busy", delay)
        .unwrap();
    // Nothing is published: only the bus's timer thread can wake it.
    let (delivery, polls) = block_on(group.recv_async(), || {});
    let delivery = delivery.unwrap();
    assert!(nacked.elapsed() >= delay - Duration::from_millis(2));
    assert_eq!(delivery.attempt(), 2);
    assert!(polls <= 4, "{polls} polls: woken without cause");
    delivery.ack().unwrap();
}

#[test]
fn group_recv_async_wakes_when_a_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let topic = bus.topic("tasks").unwrap();
    topic.publish(&Record::new(b"slow")).unwrap();
    let options = group_options(Duration::from_millis(100), 5, Duration::ZERO);
    let group = topic.group("workers", options).unwrap();
    let held = group.try_recv().unwrap().unwrap();
    let (delivery, _) = block_on(group.recv_async(), || {});
    let delivery = delivery.unwrap();
    assert_eq!((delivery.record().offset(), delivery.attempt()), (0, 2));
    delivery.ack().unwrap();
    assert!(held.ack().is_err(), "the expired delivery still settled");
}
