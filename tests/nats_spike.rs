//! Spike for the NATS JetStream backend (issue 7 groundwork): proves,
//! against a real `nats-server` started by each test on a free loopback
//! port with JetStream in a temporary store directory, each mechanism the
//! mapping in docs/NATS.md relies on. Every test kills its servers when it
//! ends. Without `nats-server` on PATH the tests skip loudly, except under
//! CI (`CI` set), where that is a failure.
#![cfg(feature = "nats")]

use std::time::{Duration, Instant};

use logbus::nats::{GroupConsumer, GroupSpec, NatsClient, StreamSpec, topic_subject};
use logbus::{Backoff, GroupOptions, Record, Retention, RetryPolicy, headers};

#[path = "common/nats_server.rs"]
mod nats_server;

use nats_server::{Server, have_nats_server};

const TIMEOUT: Duration = Duration::from_secs(5);

/// One JetStream server and a connection to it.
fn single() -> Option<(Server, NatsClient, tempfile::TempDir)> {
    if !have_nats_server() {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start("spike", dir.path(), None);
    let bus = NatsClient::connect(&server.url(), TIMEOUT).expect("connect");
    Some((server, bus, dir))
}

fn group_spec(lease: Duration, max_attempts: u32, backoff: Duration) -> GroupSpec {
    GroupSpec::from_group_options(&GroupOptions {
        lease,
        retry: RetryPolicy {
            max_attempts,
            backoff: Backoff::Fixed(backoff),
        },
        ..GroupOptions::default()
    })
}

fn value(record: &logbus::StoredRecord) -> String {
    String::from_utf8_lossy(record.value()).into_owned()
}

#[test]
fn a_stream_per_topic_gives_offsets_from_zero_and_names_with_dots_stay_apart() {
    let Some((_server, bus, _dir)) = single() else {
        return;
    };
    let spec = StreamSpec::default();
    for topic in ["orders", "orders.dlq", "orders dlq"] {
        let state = bus.ensure_stream(topic, &spec).unwrap();
        assert_eq!((state.start_offset, state.end_offset), (0, 0));
        bus.ensure_stream(topic, &spec).unwrap(); // idempotent
    }
    let offsets: Vec<u64> = (0..3)
        .map(|i| {
            bus.publish("orders", &Record::new(format!("o{i}").as_bytes()))
                .unwrap()
        })
        .collect();
    assert_eq!(offsets, [0, 1, 2], "PubAck sequence minus one");
    assert_eq!(bus.publish("orders.dlq", &Record::new(b"d")).unwrap(), 0);
    let state = bus.stream_state("orders").unwrap();
    assert_eq!((state.start_offset, state.end_offset, state.messages), (0, 3, 3));
    assert_eq!(bus.stream_state("orders.dlq").unwrap().messages, 1);
    assert_eq!(value(&bus.read("orders", 1).unwrap().unwrap()), "o1");
    assert!(bus.read("orders", 7).unwrap().is_none());
    assert_eq!(bus.topic_names().unwrap(), ["orders", "orders dlq", "orders.dlq"]);
}

#[test]
fn key_binary_headers_their_order_and_an_explicit_timestamp_survive_the_round_trip() {
    let Some((_server, bus, _dir)) = single() else {
        return;
    };
    bus.ensure_stream("t", &StreamSpec::default()).unwrap();
    let binary = [0u8, 13, 10, b'%', 255, b' '];
    let record = Record::new(b"v\0\r\n")
        .key(b"customer 7\n")
        .header("b", b"1")
        .header("a", &binary)
        .header("b", b"2")
        .header("trace", b"x y")
        .timestamp(1_234_567);
    let offset = bus.publish("t", &record).unwrap();
    let plain = bus.publish("t", &Record::new(b"no timestamp")).unwrap();
    let expected: Vec<(&str, &[u8])> = vec![("b", b"1"), ("a", &binary), ("b", b"2"), ("trace", b"x y")];

    let stored = bus.read("t", offset).unwrap().unwrap();
    let group = GroupConsumer::open(&bus, "t", "g", group_spec(TIMEOUT, 3, Duration::ZERO)).unwrap();
    let delivered = group.recv(TIMEOUT).unwrap().unwrap();
    for got in [&stored, delivered.record()] {
        assert_eq!(got.offset(), 0);
        assert_eq!(got.value(), b"v\0\r\n");
        assert_eq!(got.key(), b"customer 7\n");
        assert_eq!(got.timestamp(), 1_234_567);
        assert_eq!(got.headers().collect::<Vec<_>>(), expected);
    }
    delivered.ack().unwrap();
    let plain = bus.read("t", plain).unwrap().unwrap();
    let age = logbus_now_ms() - plain.timestamp();
    assert!((0..60_000).contains(&age), "server time stands in: {age} ms old");
    assert!(plain.key().is_empty() && plain.headers().next().is_none());
}

fn logbus_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn failures_are_stored_per_record_until_it_is_settled() {
    let Some((_server, bus, _dir)) = single() else {
        return;
    };
    bus.ensure_stream("jobs", &StreamSpec::default()).unwrap();
    for value in ["acked later", "dead later", "fine"] {
        bus.publish("jobs", &Record::new(value.as_bytes())).unwrap();
    }
    let group = GroupConsumer::open(&bus, "jobs", "workers", group_spec(TIMEOUT, 3, Duration::ZERO)).unwrap();
    let fine = |d: &logbus::nats::NatsDelivery| value(d.record()) == "fine";
    let first = group.recv(TIMEOUT).unwrap().unwrap();
    assert!(
        bus.failure_stream_state("jobs").is_err(),
        "no failure yet, no failure stream"
    );
    assert_eq!(value(first.record()), "acked later");
    first.nack("one").unwrap();
    assert!(bus.failure_stream_state("jobs").is_ok());
    let stored = || bus.failure_stream_state("jobs").unwrap().messages;
    let mut settled = 0;
    while let Some(d) = group.recv(Duration::from_millis(500)).unwrap() {
        match (value(d.record()).as_str(), d.attempt()) {
            _ if fine(&d) => d.ack().unwrap(),
            ("acked later", 2) => {
                assert_eq!(stored(), 1, "the first failure waits for the second attempt");
                d.ack().unwrap();
                settled += 1;
            }
            ("dead later", 1 | 2) => d.nack("again").unwrap(),
            ("dead later", 3) => {
                assert_eq!(
                    stored(),
                    2,
                    "two failures of the other record, none of the acked one"
                );
                d.nack("last").unwrap();
                settled += 1;
            }
            (other, attempt) => panic!("{other} delivered as attempt {attempt}"),
        }
    }
    assert_eq!(settled, 2);
    assert_eq!(stored(), 0, "settled records leave no failures behind");
}

#[test]
fn a_group_acks_and_a_nak_with_delay_comes_back_after_the_delay_with_its_delivery_count() {
    let Some((_server, bus, _dir)) = single() else {
        return;
    };
    bus.ensure_stream("jobs", &StreamSpec::default()).unwrap();
    bus.publish("jobs", &Record::new(b"one")).unwrap();
    bus.publish("jobs", &Record::new(b"two")).unwrap();
    let group = GroupConsumer::open(&bus, "jobs", "workers", group_spec(TIMEOUT, 5, Duration::ZERO)).unwrap();
    let other = GroupConsumer::open(&bus, "jobs", "workers", group_spec(TIMEOUT, 5, Duration::ZERO)).unwrap();

    let first = group.recv(TIMEOUT).unwrap().unwrap();
    assert_eq!((value(first.record()), first.attempt()), ("one".into(), 1));
    first.ack().unwrap();
    let second = other.recv(TIMEOUT).unwrap().unwrap();
    assert_eq!((value(second.record()), second.attempt()), ("two".into(), 1));
    let naked = Instant::now();
    second
        .nack_with_delay("busy", Duration::from_millis(700))
        .unwrap();
    assert!(
        group.recv(Duration::from_millis(300)).unwrap().is_none(),
        "hidden during the delay"
    );
    let again = group.recv(TIMEOUT).unwrap().unwrap();
    let waited = naked.elapsed();
    assert_eq!((value(again.record()), again.attempt()), ("two".into(), 2));
    assert!(waited >= Duration::from_millis(650), "came back after {waited:?}");
    again.ack().unwrap();

    let state = group.state().unwrap();
    assert_eq!((state.ack_floor, state.ack_pending, state.pending), (2, 0, 0));
}

#[test]
fn an_expired_lease_is_redelivered_and_progress_resets_the_lease() {
    let Some((_server, bus, _dir)) = single() else {
        return;
    };
    bus.ensure_stream("jobs", &StreamSpec::default()).unwrap();
    bus.publish("jobs", &Record::new(b"slow")).unwrap();
    let lease = Duration::from_millis(1000);
    let group = GroupConsumer::open(&bus, "jobs", "workers", group_spec(lease, 5, Duration::ZERO)).unwrap();

    let mut first = group.recv(TIMEOUT).unwrap().unwrap();
    let leased = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    first.extend_lease(lease).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        group.try_recv().unwrap().is_none(),
        "still leased 1.4 s in, after +WPI"
    );
    first.abandon(); // the receiver "crashes": no ack, no nak
    let again = group.recv(TIMEOUT).unwrap().unwrap();
    assert!(
        leased.elapsed() >= Duration::from_millis(1600),
        "{:?}",
        leased.elapsed()
    );
    assert_eq!(again.attempt(), 2, "delivery count from the message metadata");
    again.ack().unwrap();
}

#[test]
fn term_stops_redelivery_and_max_deliver_stops_the_server_with_an_advisory() {
    let Some((_server, bus, _dir)) = single() else {
        return;
    };
    bus.ensure_stream("jobs", &StreamSpec::default()).unwrap();
    bus.publish("jobs", &Record::new(b"poison")).unwrap();
    bus.publish("jobs", &Record::new(b"flaky")).unwrap();
    bus.publish("jobs", &Record::new(b"fine")).unwrap();
    let mut spec = group_spec(Duration::from_millis(500), 100, Duration::ZERO);
    spec.max_deliver = 2; // the server's limit, the client's is far away
    spec.dead_letter = false;
    let group = GroupConsumer::open(&bus, "jobs", "workers", spec).unwrap();
    let mut advisories = bus.watch_max_deliveries("jobs", "workers").unwrap();

    let poison = group.recv(TIMEOUT).unwrap().unwrap();
    assert_eq!(value(poison.record()), "poison");
    poison.reject("never").unwrap(); // dead_letter = false: just +TERM
    // A nak'd message may be overtaken by newer ones: collect, don't order.
    let mut flaky_attempts = Vec::new();
    while let Some(d) = group.recv(Duration::from_millis(1200)).unwrap() {
        match value(d.record()).as_str() {
            "flaky" => {
                flaky_attempts.push(d.attempt());
                d.nack_with_delay("flaky", Duration::ZERO).unwrap();
            }
            "fine" => d.ack().unwrap(),
            other => panic!("{other} delivered again"),
        }
    }
    assert_eq!(
        flaky_attempts,
        [1, 2],
        "no third delivery, no redelivery of the termed one"
    );
    assert_eq!(
        advisories.next(TIMEOUT).unwrap(),
        Some(1),
        "advisory names offset 1"
    );
    let state = group.state().unwrap();
    eprintln!("after term + MaxDeliver: {state:?}");
    // The one that hit MaxDeliver was never acked, yet on 2.9.10 the ack
    // floor moves past it and nothing is pending: the server treats it as
    // settled, and only the advisory tells.
    assert_eq!((state.ack_floor, state.ack_pending, state.pending), (3, 0, 0));
}

#[test]
fn the_last_failed_attempt_is_dead_lettered_with_logbus_headers_exactly_once() {
    let Some((_server, bus, _dir)) = single() else {
        return;
    };
    bus.ensure_stream("orders", &StreamSpec::default()).unwrap();
    bus.publish(
        "orders",
        &Record::new(b"bad order").key(b"k1").header("trace", b"t1"),
    )
    .unwrap();
    bus.publish("orders", &Record::new(b"crashing order")).unwrap();
    let lease = Duration::from_millis(500);
    let group = GroupConsumer::open(&bus, "orders", "billing", group_spec(lease, 2, Duration::ZERO)).unwrap();

    // Offset 0 is nacked at each attempt (the second nack is the last
    // attempt); offset 1's receiver dies each time (abandon): its third
    // delivery is dead-lettered by the client, never handed out.
    let mut attempts = [Vec::new(), Vec::new()];
    while let Some(d) = group.recv(Duration::from_millis(1500)).unwrap() {
        let offset = d.record().offset();
        attempts[offset as usize].push(d.attempt());
        match (offset, d.attempt()) {
            (0, 1) => d.nack("invalid").unwrap(),
            (0, _) => d.nack("still invalid").unwrap(),
            _ => d.abandon(),
        }
    }
    assert_eq!(attempts, [vec![1, 2], vec![1, 2]]);

    let dlq = bus.stream_state("orders.dlq").unwrap();
    assert_eq!(dlq.messages, 2);
    let letter = bus.read("orders.dlq", 0).unwrap().unwrap();
    assert_eq!((letter.value(), letter.key()), (&b"bad order"[..], &b"k1"[..]));
    let header = |name| String::from_utf8_lossy(letter.header(name).unwrap()).into_owned();
    assert_eq!(header("trace"), "t1");
    assert_eq!(header(headers::SOURCE_TOPIC), "orders");
    assert_eq!(header(headers::SOURCE_GROUP), "billing");
    assert_eq!(header(headers::SOURCE_OFFSET), "0");
    assert_eq!(header(headers::ATTEMPTS), "2");
    assert_eq!(header(headers::LAST_REASON), "still invalid");
    let crashed = bus.read("orders.dlq", 1).unwrap().unwrap();
    assert_eq!(crashed.header(headers::ATTEMPTS), Some(&b"3"[..]));
    assert_eq!(
        crashed.header(headers::LAST_REASON),
        Some(&b"attempts exhausted: the last lease expired"[..])
    );
    let state = group.state().unwrap();
    assert_eq!((state.ack_floor, state.ack_pending), (2, 0), "both termed");

    // A dead letter written again after a crash (same Nats-Msg-Id) is dropped.
    let id = "LOGBUS_orders:billing:1";
    let (offset, duplicate) = bus
        .publish_to(topic_subject("orders.dlq"), &Record::new(b"bad order"), Some(id))
        .unwrap();
    assert!(duplicate && offset == 0, "duplicate {duplicate} at {offset}");
    assert_eq!(bus.stream_state("orders.dlq").unwrap().messages, 2);
}

#[test]
fn retention_modes_differ_from_the_embedded_ones_where_docs_nats_says() {
    let Some((_server, bus, _dir)) = single() else {
        return;
    };
    let work = StreamSpec {
        retention: Retention::WorkQueue,
        ..StreamSpec::default()
    };
    bus.ensure_stream("work", &work).unwrap();
    GroupConsumer::open(&bus, "work", "a", group_spec(TIMEOUT, 5, Duration::ZERO)).unwrap();
    let second = GroupConsumer::open(&bus, "work", "b", group_spec(TIMEOUT, 5, Duration::ZERO));
    eprintln!("second group on a work-queue stream: {second:?}");
    assert!(
        second.is_err(),
        "a work-queue stream takes one unfiltered consumer"
    );
    bus.publish("work", &Record::new(b"w")).unwrap();
    let group = GroupConsumer::open(&bus, "work", "a", group_spec(TIMEOUT, 5, Duration::ZERO)).unwrap();
    group.recv(TIMEOUT).unwrap().unwrap().ack().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(bus.stream_state("work").unwrap().messages, 0, "acked = removed");

    let interest = StreamSpec {
        retention: Retention::Interest,
        ..StreamSpec::default()
    };
    bus.ensure_stream("interest", &interest).unwrap();
    bus.publish("interest", &Record::new(b"nobody listens")).unwrap();
    let state = bus.stream_state("interest").unwrap();
    assert_eq!(
        state.messages, 0,
        "no consumer: JetStream drops it (embedded keeps it)"
    );
    assert_eq!(state.end_offset, 1);
}
