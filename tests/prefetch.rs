//! `GroupOptions::prefetch` on the embedded bus: a receive leases up to
//! the prefetch with one state write and keeps what it does not return for
//! the next receives. Each record still goes to one receiver at a time, in
//! the group's order; a kept record's attempt counts from its lease; one
//! kept long gets a fresh lease when handed out; one whose lease ran out is
//! redelivered; a seek drops them; and a process that stops with records
//! kept counts their attempt, as a crash with deliveries open does.

use std::collections::BTreeSet;
use std::time::Duration;

use logbus::clock::SimClock;
use logbus::{Backoff, Bus, BusOptions, Error, Group, GroupOptions, Record, RetryPolicy, StartAt};

fn options(prefetch: usize) -> GroupOptions {
    GroupOptions::default()
        .lease(Duration::from_secs(10))
        .retry(
            RetryPolicy::default()
                .max_attempts(5)
                .backoff(Backoff::Fixed(Duration::ZERO)),
        )
        .prefetch(prefetch)
}

fn publish(bus: &Bus, count: u64) {
    let topic = bus.topic("jobs").unwrap();
    for i in 0..count {
        topic.publish(&Record::new(&i.to_le_bytes())).unwrap();
    }
}

/// A bus in `dir` with `count` records on `jobs` and the group `workers`
/// on it, with `prefetch`.
fn jobs(dir: &std::path::Path, count: u64, prefetch: usize) -> (Bus, Group) {
    let bus = Bus::open(dir, BusOptions::default()).unwrap();
    publish(&bus, count);
    let group = bus
        .topic("jobs")
        .unwrap()
        .group("workers", options(prefetch))
        .unwrap();
    (bus, group)
}

/// Receives and acks everything available; each record's offset and
/// attempt.
fn drain(group: &Group) -> Vec<(u64, u32)> {
    std::iter::from_fn(|| group.try_recv().unwrap())
        .map(|delivery| {
            let seen = (delivery.record().offset(), delivery.attempt());
            delivery.ack().unwrap();
            seen
        })
        .collect()
}

fn state_log_records(dir: &std::path::Path) -> u64 {
    let state = dir.join("state/groups/jobs/workers");
    logbus::Log::open(&state, logbus::LogOptions::default())
        .unwrap()
        .end_offset()
}

#[test]
fn records_go_out_once_in_order_with_one_state_write_per_prefetch() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, group) = jobs(dir.path(), 100, 16);
    let before = group.stats().unwrap();
    assert_eq!(before.in_flight, 0);
    let first = group.try_recv().unwrap().expect("a record");
    assert_eq!(group.stats().unwrap().in_flight, 16, "the kept ones are leased");
    first.ack().unwrap();
    assert_eq!(
        drain(&group),
        (1..100).map(|offset| (offset, 1)).collect::<Vec<_>>()
    );
    let stats = group.stats().unwrap();
    assert_eq!((stats.in_flight, stats.lag, stats.acked), (0, 0, 100));
    drop(group);
    bus.close().unwrap();
    // 7 receives that leased (16 × 6 + 4), 100 acks, and what opening and
    // snapshots wrote: far from the 200 events of one write per lease.
    let written = state_log_records(dir.path());
    assert!(written < 130, "{written} state records");
}

#[test]
fn concurrent_receivers_never_share_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, group) = jobs(dir.path(), 400, 8);
    let seen: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let group = group.clone();
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let batch = group.try_recv_batch(3).unwrap();
                        if batch.is_empty() {
                            return mine;
                        }
                        for delivery in batch {
                            mine.push(delivery.record().offset());
                            delivery.ack().unwrap();
                        }
                    }
                })
            })
            .collect();
        receivers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let all: Vec<u64> = seen.iter().flatten().copied().collect();
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a record went to two receivers");
    assert_eq!(distinct, (0..400).collect());
    assert_eq!(group.stats().unwrap().redeliveries, 0);
    bus.close().unwrap();
}

#[test]
fn a_kept_record_gets_a_fresh_lease_when_handed_out_late_and_is_redelivered_once_it_ran_out() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SimClock::new();
    let bus = Bus::open(dir.path(), BusOptions::default().clock(clock.clone())).unwrap();
    publish(&bus, 3);
    let group = bus.topic("jobs").unwrap().group("workers", options(3)).unwrap();
    group.try_recv().unwrap().expect("offset 0").ack().unwrap();
    // Past half its lease: handed out with a fresh one.
    clock.advance(Duration::from_secs(6));
    let late = group.try_recv().unwrap().expect("offset 1");
    assert_eq!((late.record().offset(), late.attempt()), (1, 1));
    clock.advance(Duration::from_secs(6));
    late.ack().expect("still its lease");
    // Kept past its lease: redelivered as any expired lease is.
    clock.advance(Duration::from_secs(11));
    let again = group.try_recv().unwrap().expect("offset 2");
    assert_eq!((again.record().offset(), again.attempt()), (2, 2));
    again.ack().unwrap();
    assert!(group.try_recv().unwrap().is_none());
    bus.close().unwrap();
}

#[test]
fn a_seek_drops_the_kept_records() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, group) = jobs(dir.path(), 10, 5);
    group.try_recv().unwrap().expect("offset 0").ack().unwrap();
    group.seek(StartAt::Offset(7)).unwrap();
    assert_eq!(drain(&group), [(7, 1), (8, 1), (9, 1)]);
    bus.close().unwrap();
}

#[test]
fn records_kept_when_the_bus_closes_count_their_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, group) = jobs(dir.path(), 5, 4);
    group.try_recv().unwrap().expect("offset 0").ack().unwrap();
    drop(group);
    bus.close().unwrap();

    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let group = bus.topic("jobs").unwrap().group("workers", options(1)).unwrap();
    assert_eq!(drain(&group), [(1, 2), (2, 2), (3, 2), (4, 1)]);
    bus.close().unwrap();
}

#[test]
fn a_receive_of_none_leases_none() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, group) = jobs(dir.path(), 3, 8);
    assert!(group.try_recv_batch(0).unwrap().is_empty());
    assert!(group.recv_batch(0, Duration::from_secs(1)).unwrap().is_empty());
    assert_eq!(group.stats().unwrap().in_flight, 0);
    bus.close().unwrap();
}

#[test]
fn a_prefetch_of_none_or_too_many_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let topic = bus.topic("jobs").unwrap();
    for prefetch in [0, logbus::MAX_PREFETCH + 1] {
        let refused = topic.group("workers", options(prefetch)).err();
        assert!(
            matches!(refused, Some(Error::InvalidArgument(_))),
            "{prefetch}: {refused:?}"
        );
    }
    bus.close().unwrap();
}
