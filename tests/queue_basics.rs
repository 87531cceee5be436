//! Consumer groups, pub/sub and dead letters on every backend (the
//! embedded log on the real file system, and NATS JetStream with
//! `--features nats`): the everyday contract of the pattern layer. Where
//! JetStream differs (docs/NATS.md, "Where JetStream differs"), the test
//! asserts what both guarantee and says how they differ in a `match` on
//! the backend.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::TestBackend;
use common::futures::{poll_once, poll_until_ready};
use logbus::{
    Backoff, Bus, Error, Group, GroupOptions, MAX_NAME_BYTES, Record, Retention, RetryPolicy, StartAt,
    StoredRecord, TopicOptions, dead_letter_topic, headers,
};

const SHORT: Duration = Duration::from_millis(10);
const TIMEOUT: Duration = Duration::from_secs(5);

fn quick_retry(max_attempts: u32) -> GroupOptions {
    GroupOptions::default().lease(Duration::from_secs(30)).retry(
        RetryPolicy::default()
            .max_attempts(max_attempts)
            .backoff(Backoff::Fixed(Duration::ZERO)),
    )
}

/// A bus with ten records on topic `jobs` and a group on it.
fn ten_jobs(backend: &TestBackend) -> (Bus, Group) {
    let bus = backend.open();
    let topic = bus.topic("jobs").unwrap();
    for i in 0..10 {
        topic.publish(&Record::new(&format!("job {i}"))).unwrap();
    }
    let group = topic.group("workers", quick_retry(3)).unwrap();
    (bus, group)
}

/// The first record of the dead-letter topic `dlq`.
fn first_dead_letter(bus: &Bus, dlq: &str) -> StoredRecord {
    let topic = bus.topic(dlq).unwrap();
    let mut reader = topic.subscribe_ephemeral(StartAt::Earliest).unwrap();
    let dead = reader.recv(TIMEOUT).unwrap().expect("a dead letter");
    assert_eq!(dead.offset(), 0);
    dead
}

backend_tests! {
    fn queue_delivers_each_record_once_and_ack_completes_it(backend: &TestBackend) {
        let (_bus, group) = ten_jobs(backend);
        let mut seen = Vec::new();
        while let Some(delivery) = group.try_recv().unwrap() {
            assert_eq!(delivery.attempt(), 1);
            seen.push(delivery.record().offset());
            delivery.ack().unwrap();
        }
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(group.stats().unwrap().low_watermark, 10);
    }

    fn nacked_record_is_redelivered_with_a_higher_attempt_then_dead_lettered(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("orders").unwrap();
        topic
            .publish(&Record::new(b"poison").key(b"k").header("trace", b"7"))
            .unwrap();
        let group = topic.group("g", quick_retry(3)).unwrap();
        for attempt in 1..=3 {
            let delivery = group.recv(TIMEOUT).unwrap().unwrap();
            assert_eq!(delivery.attempt(), attempt);
            delivery.nack(&format!("failure {attempt}")).unwrap();
        }
        assert!(group.recv(SHORT).unwrap().is_none());
        let dead = first_dead_letter(&bus, "orders.dlq");
        assert_eq!(dead.value(), b"poison");
        assert_eq!(dead.key(), b"k");
        assert_eq!(dead.header("trace"), Some(&b"7"[..]));
        assert_eq!(dead.header(headers::SOURCE_TOPIC), Some(&b"orders"[..]));
        assert_eq!(dead.header(headers::SOURCE_OFFSET), Some(&b"0"[..]));
        assert_eq!(dead.header(headers::ATTEMPTS), Some(&b"3"[..]));
        assert_eq!(dead.header(headers::LAST_REASON), Some(&b"failure 3"[..]));
        let reasons: Vec<String> = dead
            .headers()
            .filter(|(n, _)| *n == headers::FAILURE)
            .map(|(_, v)| {
                let text = String::from_utf8(v.to_vec()).unwrap();
                let (_at_ms, reason) = text.split_once(' ').unwrap();
                reason.to_owned()
            })
            .collect();
        assert_eq!(reasons, ["failure 1", "failure 2", "failure 3"], "every failure, oldest first");
        assert_eq!(group.stats().unwrap().dead_lettered, 1);
    }

    fn backoff_hides_a_nacked_record_until_it_passes(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("t").unwrap();
        topic.publish(&Record::new(b"x")).unwrap();
        let group = topic
            .group(
                "g",
                GroupOptions::default().retry(RetryPolicy::default().max_attempts(5).backoff(Backoff::Fixed(Duration::from_millis(300)))),
            )
            .unwrap();
        group.try_recv().unwrap().unwrap().nack("later").unwrap();
        assert!(group.try_recv().unwrap().is_none());
        let started = std::time::Instant::now();
        let again = group.recv(TIMEOUT).unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(again.attempt(), 2);
    }

    fn dropped_delivery_is_released_and_expired_lease_redelivers(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("t").unwrap();
        topic.publish(&Record::new(b"x")).unwrap();
        let options = quick_retry(10).lease(Duration::from_millis(100));
        let group = topic.group("g", options).unwrap();
        drop(group.try_recv().unwrap().unwrap());
        let second = group.recv(TIMEOUT).unwrap().unwrap();
        assert_eq!(second.attempt(), 2);
        let third = group.recv(TIMEOUT).unwrap().unwrap();
        assert_eq!(third.attempt(), 3);
        match backend {
            TestBackend::Embedded { .. } => {
                assert!(matches!(second.ack(), Err(Error::LeaseExpired { offset: 0 })));
            }
            // The server takes a late ack without saying it came too late
            // (docs/NATS.md): the record is settled all the same.
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => second.ack().unwrap(),
        }
        third.ack().unwrap();
        assert!(group.recv(Duration::from_millis(300)).unwrap().is_none());
    }

    fn receive_async_waits_for_a_record_and_a_cancelled_one_loses_none(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("t").unwrap();
        let group = topic.group("g", quick_retry(5)).unwrap();
        fn is_send<T: Send>(_: &T) {}
        is_send(&group.recv_async());
        assert!(poll_once(group.recv_async()).is_pending(), "nothing published yet");
        topic.publish(&Record::new(b"x")).unwrap();
        let delivery = group.recv(TIMEOUT).unwrap().expect("not lost by the cancelled receive");
        assert_eq!(delivery.record().value(), b"x");
        let attempt = match backend {
            TestBackend::Embedded { .. } => 1,
            // The cancelled receive's pull was still on the server and
            // took the record: released at once, as one more attempt.
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => 2,
        };
        assert_eq!(delivery.attempt(), attempt);
        delivery.ack().unwrap();
        let waiting = std::thread::scope(|scope| {
            let waiting = scope.spawn(|| poll_until_ready(group.recv_async()));
            std::thread::sleep(Duration::from_millis(50));
            topic.publish(&Record::new(b"y")).unwrap();
            waiting.join().unwrap()
        });
        let delivery = waiting.unwrap();
        assert_eq!((delivery.record().offset(), delivery.attempt()), (1, 1));
        delivery.ack().unwrap();
        assert!(group.try_recv().unwrap().is_none());
    }

    fn group_resumes_after_reopen_and_counts_attempts_of_unsettled_deliveries(backend: &TestBackend) {
        let got = deliveries_after_a_restart(backend, |group| {
            group.try_recv().unwrap().unwrap().ack().unwrap();
            std::mem::forget(group.try_recv().unwrap().unwrap());
        });
        assert_eq!(got, vec![(1, 2), (2, 1), (3, 1), (4, 1)]);
    }

    fn receive_batch_hands_out_up_to_max_and_each_delivery_settles_on_its_own(backend: &TestBackend) {
        let (_bus, group) = ten_jobs(backend);
        assert!(group.try_recv_batch(0).unwrap().is_empty());
        let mut first = group.try_recv_batch(4).unwrap();
        let offsets: Vec<u64> = first.iter().map(|d| d.record().offset()).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3]);
        assert!(first.iter().all(|d| d.attempt() == 1));
        // Settled one by one: two acks, a nack and a drop.
        drop(first.pop());
        first.pop().unwrap().nack("try again").unwrap();
        for delivery in first {
            delivery.ack().unwrap();
        }
        let rest = match backend {
            // The failed two come back first (attempt 2), then the new
            // records, all in one batch.
            TestBackend::Embedded { .. } => {
                let rest = group.recv_batch(100, TIMEOUT).unwrap();
                let got: Vec<(u64, u32)> = rest.iter().map(|d| (d.record().offset(), d.attempt())).collect();
                let mut redelivered = got[..2].to_vec();
                redelivered.sort();
                assert_eq!(redelivered, vec![(2, 2), (3, 2)]);
                assert_eq!(got[2..], (4..10).map(|o| (o, 1)).collect::<Vec<_>>());
                rest
            }
            // The drop's nak is sent in the background, so it may reach the
            // server after the next pull: the records come back, but not
            // necessarily first nor in one batch (docs/NATS.md).
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => {
                let mut rest = Vec::new();
                while rest.len() < 8 {
                    rest.extend(group.recv_batch(100, TIMEOUT).unwrap());
                }
                let mut got: Vec<(u64, u32)> = rest.iter().map(|d| (d.record().offset(), d.attempt())).collect();
                got.sort();
                let expected: Vec<(u64, u32)> = [(2, 2), (3, 2)].into_iter().chain((4..10).map(|o| (o, 1))).collect();
                assert_eq!(got, expected);
                rest
            }
        };
        for delivery in rest {
            delivery.ack().unwrap();
        }
        assert!(group.recv_batch(5, SHORT).unwrap().is_empty());
        assert_eq!(group.stats().unwrap().low_watermark, 10);
    }

    fn a_batch_counts_every_attempt_before_hand_out_so_a_restart_redelivers_it(backend: &TestBackend) {
        let got = deliveries_after_a_restart(backend, |group| {
            let batch = group.try_recv_batch(3).unwrap();
            assert_eq!(batch.len(), 3);
            // Never settled, as if the process died while handling them.
            std::mem::forget(batch);
        });
        assert_eq!(got, vec![(0, 2), (1, 2), (2, 2), (3, 1), (4, 1)]);
    }

    fn reject_sends_straight_to_the_dead_letter_topic_with_its_reason(backend: &TestBackend) {
        let bus = backend.open();
        let group = reject_one_record(&bus);
        let dead = first_dead_letter(&bus, "t.dlq");
        assert_eq!(dead.value(), b"bad");
        assert_eq!(dead.header(headers::ATTEMPTS), Some(&b"1"[..]));
        assert_eq!(dead.header(headers::LAST_REASON), Some(&b"malformed"[..]));
        assert_eq!(group.stats().unwrap().dead_lettered, 1);
    }

    fn durable_subscriptions_resume_from_their_commit_and_ephemeral_ones_start_fresh(backend: &TestBackend) {
        {
            let bus = backend.open();
            let topic = bus.topic("news").unwrap();
            for i in 0..10 {
                topic.publish(&Record::new(&format!("{i}"))).unwrap();
            }
            let mut sub = topic.subscribe("reader", StartAt::Earliest).unwrap();
            for i in 0..4 {
                assert_eq!(sub.recv(TIMEOUT).unwrap().unwrap().offset(), i);
            }
            sub.commit().unwrap();
            assert_eq!(sub.lag(), 6);
            let mut latest = topic.subscribe("tail", StartAt::Latest).unwrap();
            assert!(latest.try_recv().unwrap().is_none());
            bus.close().unwrap();
        }
        let bus = backend.open();
        let topic = bus.topic("news").unwrap();
        let mut sub = topic.subscribe("reader", StartAt::Latest).unwrap();
        assert_eq!(sub.try_recv().unwrap().unwrap().offset(), 4);
        let mut tail = topic.subscribe("tail", StartAt::Earliest).unwrap();
        assert!(tail.try_recv().unwrap().is_none());
        let mut eph = topic.subscribe_ephemeral(StartAt::Offset(8)).unwrap();
        assert_eq!(eph.try_recv().unwrap().unwrap().offset(), 8);
    }

    fn bad_names_are_refused_with_a_clear_error(backend: &TestBackend) {
        let bus = backend.open();
        for bad in [
            "",
            "a/b",
            "a\\b",
            "..",
            "../x",
            ".hidden",
            "nul\0",
            &"x".repeat(201),
        ] {
            assert!(
                matches!(bus.topic(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        let topic = bus.topic("ok.name-1_2").unwrap();
        assert!(topic.group("a/b", GroupOptions::default()).is_err());
        assert!(topic.subscribe("..", StartAt::Earliest).is_err());
    }

    fn a_name_whose_derived_names_would_be_too_long_is_refused_when_opened(backend: &TestBackend) {
        let bus = backend.open();
        let longest_topic = "t".repeat(MAX_NAME_BYTES - ".dlq".len());
        let too_long = format!("{longest_topic}u");
        let refused = |result: logbus::Result<_>, derived: &str| match result {
            Err(Error::InvalidArgument(why)) => assert!(why.contains(derived), "{why}"),
            other => panic!("expected InvalidArgument naming the {derived}, got {other:?}"),
        };
        refused(bus.topic(&too_long).map(|_| ()), "dead-letter topic");
        // The longest topic dead-letters, and its dead-letter topic opens;
        // a group on that one may not dead-letter in turn.
        let topic = bus.topic(&longest_topic).unwrap();
        topic.publish(&Record::new(b"poison")).unwrap();
        let group = topic.group("g", quick_retry(1)).unwrap();
        group.recv(TIMEOUT).unwrap().unwrap().nack("bad").unwrap();
        let dlq = dead_letter_topic(&longest_topic);
        assert_eq!(first_dead_letter(&bus, &dlq).value(), b"poison");
        let dlq = bus.topic(&dlq).unwrap();
        refused(dlq.group("g", quick_retry(1)).map(|_| ()), "dead-letter topic");
        let keep = quick_retry(1).dead_letter(false);
        dlq.group("g", keep).unwrap();
        // A requester's inbox topic is a topic like any other.
        let longest_requester = "r".repeat(MAX_NAME_BYTES - ".inbox.dlq".len());
        bus.requester(&longest_requester).unwrap();
        refused(bus.requester(&format!("{longest_requester}s")).map(|_| ()), "inbox topic");
    }

    fn redrive_from_a_missing_topic_or_one_that_is_not_a_dead_letter_topic_is_refused(backend: &TestBackend) {
        let bus = backend.open();
        let refused = |dlq: &str, why: &str| match bus.redrive(dlq, |_| true) {
            Err(Error::InvalidArgument(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("redrive of {dlq:?}: expected InvalidArgument, got {other:?}"),
        };
        refused("nope.dlq", "does not exist");
        assert!(!bus.topic_names().unwrap().contains(&"nope.dlq".to_owned()));
        bus.topic("orders").unwrap().publish(&Record::new(b"order")).unwrap();
        refused("orders", "not a dead-letter topic");
        let fake = bus.topic("fake.dlq").unwrap();
        fake.publish(&Record::new(b"not a dead letter")).unwrap();
        refused("fake.dlq", "offset 0 is not a dead letter");
        assert_eq!(bus.topic("orders").unwrap().stats().unwrap().end_offset, 1);
    }

    fn commit_offset_past_the_end_is_refused_and_commits_nothing(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("events").unwrap();
        for i in 0..3 {
            topic.publish(&Record::new(&format!("event {i}"))).unwrap();
        }
        let mut sub = topic.subscribe("audit", StartAt::Earliest).unwrap();
        assert!(matches!(sub.commit_offset(4), Err(Error::InvalidArgument(_))));
        assert_eq!(sub.committed(), 0);
        sub.commit_offset(3).unwrap();
        assert_eq!(sub.committed(), 3);
    }

    fn a_topic_asked_for_with_other_options_is_refused_naming_the_option(backend: &TestBackend) {
        let bus = backend.open();
        let options = TopicOptions::default().max_record_bytes(4096);
        bus.topic_with("t", options.clone()).unwrap();
        bus.topic_with("t", options.clone()).unwrap();
        match bus.topic_with("t", options.retention(Retention::Interest)) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("retention"), "{why}"),
            other => panic!("expected InvalidArgument naming retention, got {other:?}"),
        }
        // `topic` takes the topic as it is open.
        let topic = bus.topic("t").unwrap();
        assert!(matches!(
            topic.publish(&Record::new(&[0u8; 8192][..])),
            Err(Error::RecordTooLarge { .. }) | Err(Error::Backend { .. })
        ));
    }

    fn a_group_asked_for_again_with_other_options_takes_its_lease_and_attempts_at_once(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("t").unwrap();
        topic.publish(&Record::new(b"flaky")).unwrap();
        let _first = topic.group("g", quick_retry(1)).unwrap();
        let group = topic.group("g", quick_retry(3)).unwrap();
        for attempt in 1..=3 {
            let delivery = group.recv(TIMEOUT).unwrap().expect("delivered again");
            assert_eq!(delivery.attempt(), attempt);
            delivery.nack("fails").unwrap();
        }
        assert!(group.recv(SHORT * 20).unwrap().is_none());
        let dead = first_dead_letter(&bus, "t.dlq");
        assert_eq!(dead.header(headers::ATTEMPTS), Some(&b"3"[..]));
    }

    fn receive_on_a_closed_bus_fails_with_closed(backend: &TestBackend) {
        let bus = backend.open();
        let group = bus.queue("q").unwrap();
        bus.close().unwrap();
        assert!(matches!(group.try_recv(), Err(Error::Closed)));
        assert!(matches!(bus.topic("q"), Err(Error::Closed)));
    }

    /// Handles keep the bus open: dropping every `Bus` while a topic and a
    /// group live leaves them working; the bus closes (embedded: releases
    /// the directory lock) once the last handle is gone too.
    fn handles_keep_the_bus_open_until_the_last_one_is_dropped(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("t").unwrap();
        let group = topic.group("g", GroupOptions::default()).unwrap();
        drop(bus);
        topic.publish(&Record::new(b"x")).unwrap();
        group.try_recv().unwrap().expect("the record").ack().unwrap();
        drop(topic);
        assert!(group.try_recv().unwrap().is_none());
        drop(group);
        let bus = backend.open();
        assert_eq!(bus.topic("t").unwrap().end_offset(), 1);
        assert_eq!(bus.topic("t").unwrap().group("g", GroupOptions::default()).unwrap().stats().unwrap().low_watermark, 1);
    }

    fn a_record_at_the_size_limit_still_reaches_the_dead_letter_topic_with_its_failures(backend: &TestBackend) {
        let bus = backend.open();
        let options = logbus::TopicOptions::default().max_record_bytes(4096);
        let topic = bus.topic_with("big", options).unwrap();
        let value = vec![b'x'; 4000];
        topic.publish(&Record::new(&value)).unwrap();
        let group = topic.group("g", quick_retry(3)).unwrap();
        let reason = "r".repeat(900);
        for _ in 0..3 {
            group.try_recv().unwrap().unwrap().nack(&reason).unwrap();
        }
        assert!(group.try_recv().unwrap().is_none());
        assert_eq!(group.stats().unwrap().low_watermark, 1);
        let dead = first_dead_letter(&bus, "big.dlq");
        assert_eq!(dead.value(), &value[..]);
        assert_eq!(dead.headers().filter(|(n, _)| *n == headers::FAILURE).count(), 3);
    }

    fn redrive_moves_back_only_what_the_filter_selects_with_a_fresh_attempt_count(backend: &TestBackend) {
        let bus = backend.open();
        let group = reject_one_record(&bus);
        bus.topic("t").unwrap().publish(&Record::new(b"keep")).unwrap();
        group.recv(TIMEOUT).unwrap().unwrap().reject("keep it dead").unwrap();
        assert_eq!(bus.redrive("t.dlq", |r| r.value() == b"bad").unwrap(), 1);
        assert_eq!(bus.redrive("t.dlq", |r| r.value() == b"bad").unwrap(), 0);
        let again = group.recv(TIMEOUT).unwrap().unwrap();
        assert_eq!(again.record().value(), b"bad");
        assert_eq!(again.record().header(logbus::headers::REDRIVE_COUNT), Some(&b"1"[..]));
        assert_eq!(again.record().header(headers::SOURCE_TOPIC), None, "dead-letter headers dropped");
        assert_eq!(again.attempt(), 1);
        again.reject("still bad").unwrap();
        // The one left in place moves when selected, with the second dead
        // letter of `bad`.
        assert_eq!(bus.redrive("t.dlq", |_| true).unwrap(), 2);
        let mut back = Vec::new();
        while let Some(d) = group.recv(SHORT * 50).unwrap() {
            let count = d.record().header(logbus::headers::REDRIVE_COUNT).map(<[u8]>::to_vec);
            back.push((d.record().value().to_vec(), count));
            d.ack().unwrap();
        }
        back.sort();
        assert_eq!(
            back,
            [(b"bad".to_vec(), Some(b"2".to_vec())), (b"keep".to_vec(), Some(b"1".to_vec()))]
        );
    }

    fn a_group_reopened_with_more_attempts_takes_them(backend: &TestBackend) {
        {
            let bus = backend.open();
            let topic = bus.topic("t").unwrap();
            topic.publish(&Record::new(b"flaky")).unwrap();
            let group = topic.group("g", quick_retry(2)).unwrap();
            let first = group.recv(TIMEOUT).unwrap().unwrap();
            assert_eq!(first.attempt(), 1);
            first.nack("fails").unwrap();
            bus.close().unwrap();
        }
        // Redeployed with more attempts: they apply to the record already
        // failing (on NATS the consumer's MaxDeliver is raised with them).
        let bus = backend.open();
        let group = bus.topic("t").unwrap().group("g", quick_retry(4)).unwrap();
        for attempt in 2..=4 {
            let delivery = group.recv(TIMEOUT).unwrap().expect("redelivered");
            assert_eq!(delivery.attempt(), attempt);
            delivery.nack("fails").unwrap();
        }
        assert!(group.recv(SHORT * 20).unwrap().is_none());
        let dead = first_dead_letter(&bus, "t.dlq");
        assert_eq!(dead.header(headers::ATTEMPTS), Some(&b"4"[..]));
    }

    /// On NATS the server takes no duration: an extension resets the lease
    /// to a full one from now (docs/NATS.md), which is what this asks for.
    fn an_extended_lease_keeps_the_record_hidden_past_its_first_deadline(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("t").unwrap();
        topic.publish(&Record::new(b"slow")).unwrap();
        let lease = Duration::from_millis(1000);
        let group = topic.group("g", quick_retry(5).lease(lease)).unwrap();
        let mut first = group.recv(TIMEOUT).unwrap().unwrap();
        let leased = Instant::now();
        std::thread::sleep(Duration::from_millis(700));
        first.extend_lease(lease).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        assert!(group.try_recv().unwrap().is_none(), "still leased 1.4 s in, after the extension");
        let again = group.recv(TIMEOUT).unwrap().expect("redelivered once the extended lease ran out");
        assert!(leased.elapsed() >= Duration::from_millis(1600), "{:?}", leased.elapsed());
        assert_eq!(again.attempt(), 2);
        again.ack().unwrap();
        drop(first);
        assert!(group.recv(Duration::from_millis(300)).unwrap().is_none());
    }

    /// A receiver that dies holding the record (here: keeps it past its
    /// lease) at every attempt still gets it dead-lettered, once, with a
    /// reason saying so; the failure of another record, acked in the end,
    /// stays out of its history.
    fn a_record_whose_every_lease_runs_out_is_dead_lettered_once_saying_so(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("orders").unwrap();
        topic.publish(&Record::new(b"flaky")).unwrap();
        topic.publish(&Record::new(b"crashing")).unwrap();
        let options = quick_retry(2).lease(Duration::from_millis(300));
        let group = topic.group("billing", options).unwrap();
        let mut held = Vec::new();
        let mut attempts = [Vec::new(), Vec::new()];
        while let Some(delivery) = group.recv(Duration::from_millis(1500)).unwrap() {
            let offset = delivery.record().offset();
            attempts[offset as usize].push(delivery.attempt());
            match offset {
                0 if delivery.attempt() == 1 => delivery.nack("flaky once").unwrap(),
                0 => delivery.ack().unwrap(),
                _ => held.push(delivery),
            }
        }
        assert_eq!(attempts, [vec![1, 2], vec![1, 2]]);
        let dead = first_dead_letter(&bus, "orders.dlq");
        assert_eq!(dead.value(), b"crashing");
        assert_eq!(dead.header(headers::SOURCE_OFFSET), Some(&b"1"[..]));
        let failures: Vec<&[u8]> = dead.headers().filter(|(n, _)| *n == headers::FAILURE).map(|(_, v)| v).collect();
        assert!(!failures.is_empty() && failures.iter().all(|f| !f.ends_with(b"flaky once")), "{failures:?}");
        let (attempts, reason) = match backend {
            TestBackend::Embedded { .. } => (&b"2"[..], &b"lease expired"[..]),
            // The client dead-letters at the delivery after the last
            // attempt, which the server makes once the last lease expired.
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => (&b"3"[..], &b"attempts exhausted: the last lease expired"[..]),
        };
        assert_eq!(dead.header(headers::ATTEMPTS), Some(attempts));
        assert_eq!(dead.header(headers::LAST_REASON), Some(reason));
        let dlq = bus.topic("orders.dlq").unwrap();
        let mut reader = dlq.subscribe_ephemeral(StartAt::Offset(1)).unwrap();
        assert!(reader.recv(SHORT * 20).unwrap().is_none(), "dead-lettered once");
        assert_eq!(group.stats().unwrap().dead_lettered, 1);
        drop(held);
    }

    /// JetStream's retention differs (docs/NATS.md): a work-queue stream
    /// takes one group and drops a record when it is acked, and an interest
    /// stream drops what no consumer was there to take. The embedded bus
    /// deletes whole sealed segments only, and a topic without consumers
    /// keeps everything.
    fn work_queue_and_interest_retention_differ_where_docs_nats_says(backend: &TestBackend) {
        let bus = backend.open();
        let work = bus.topic_with("work", TopicOptions::default().retention(Retention::WorkQueue)).unwrap();
        let only = work.group("a", quick_retry(5)).unwrap();
        let second = work.group("b", quick_retry(5));
        work.publish(&Record::new(b"w")).unwrap();
        only.recv(TIMEOUT).unwrap().unwrap().ack().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let start = work.stats().unwrap().start_offset;
        let interest = bus.topic_with("interest", TopicOptions::default().retention(Retention::Interest)).unwrap();
        interest.publish(&Record::new(b"nobody listens")).unwrap();
        let mut late = interest.subscribe_ephemeral(StartAt::Earliest).unwrap();
        let kept = late.recv(SHORT * 20).unwrap();
        match backend {
            TestBackend::Embedded { .. } => {
                assert!(second.is_ok(), "every group of a work-queue topic must ack");
                assert_eq!(start, 0, "the acked record's segment is not sealed");
                assert!(kept.is_some(), "no consumer yet: kept");
            }
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => {
                assert!(second.is_err(), "a work-queue stream takes one unfiltered consumer");
                assert_eq!(start, 1, "acked = removed");
                assert!(kept.is_none(), "no consumer: dropped at once");
            }
        }
    }
}

/// Publishes five records, lets `before` work on the group, closes the bus
/// (unsettled deliveries stay unsettled, as if the process had died), then
/// reopens it and drains the group: the `(offset, attempt)` of every
/// delivery, sorted.
fn deliveries_after_a_restart(backend: &TestBackend, before: impl FnOnce(&Group)) -> Vec<(u64, u32)> {
    let options = quick_retry(5).lease(Duration::from_secs(1));
    {
        let bus = backend.open();
        let topic = bus.topic("t").unwrap();
        for i in 0..5 {
            topic.publish(&Record::new(&format!("{i}"))).unwrap();
        }
        before(&topic.group("g", options.clone()).unwrap());
        bus.close().unwrap();
    }
    // Embedded, reopening the group releases what was unsettled at once
    // (the receiver's process is known to be gone); the server redelivers
    // it only when its lease runs out.
    let wait = match backend {
        TestBackend::Embedded { .. } => Duration::ZERO,
        #[cfg(feature = "nats")]
        TestBackend::Nats { .. } => options.lease * 3,
    };
    let bus = backend.open();
    let group = bus.topic("t").unwrap().group("g", options).unwrap();
    let mut got = Vec::new();
    while let Some(d) = group.recv(wait).unwrap() {
        got.push((d.record().offset(), d.attempt()));
        d.ack().unwrap();
    }
    got.sort();
    got
}

/// Publishes `bad` to topic `t` and rejects it ("malformed") through the
/// group `g`: it is in `t.dlq` and the group has nothing left.
fn reject_one_record(bus: &Bus) -> Group {
    let topic = bus.topic("t").unwrap();
    topic.publish(&Record::new(b"bad")).unwrap();
    let group = topic.group("g", quick_retry(5)).unwrap();
    group.try_recv().unwrap().unwrap().reject("malformed").unwrap();
    assert!(group.try_recv().unwrap().is_none());
    assert_eq!(bus.topic("t.dlq").unwrap().end_offset(), 1);
    group
}
