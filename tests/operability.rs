//! What a new user runs into first on the embedded bus: errors that say
//! which file and which operation failed, a log directory that is not
//! mistaken for a bus, `topic_names` and `stats` that describe exactly the
//! stored topics (also right after a reopen, before any topic is opened),
//! and a topic's log that can only be read.

use std::time::Duration;

use logbus::clock::SimClock;
use logbus::{
    Bus, BusOptions, ConsumerId, Error, GroupOptions, Log, LogOptions, Record, StartAt, TopicOptions,
};

#[test]
fn opening_a_bus_on_a_plain_file_names_the_path_and_the_operation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostname");
    std::fs::write(&file, b"not a directory").unwrap();
    let error = Bus::open(&file, BusOptions::default()).unwrap_err();
    let message = error.to_string();
    let Error::Io(io) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::NotADirectory);
    // "I/O error: list directory /tmp/../hostname: Not a directory (os error 20)"
    assert!(
        message.contains(&format!("directory {}: ", file.display())),
        "{message}"
    );
}

#[test]
fn opening_a_log_directory_as_a_bus_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&Record::new(b"x")).unwrap();
    log.close().unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let error = Bus::open(dir.path(), BusOptions::default()).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidArgument(m) if m.contains("Log::open")),
        "{error:?}"
    );
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        Log::open(dir.path(), LogOptions::default()).unwrap().end_offset(),
        1
    );
}

#[test]
fn topic_names_lists_only_topic_directories() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    bus.topic("orders").unwrap();
    bus.topic("orders.dlq").unwrap();
    let topics = dir.path().join("topics");
    std::fs::write(topics.join("stray-file"), b"x").unwrap();
    std::fs::create_dir(topics.join(".hidden")).unwrap();
    std::fs::create_dir(topics.join("new\nline")).unwrap();
    assert_eq!(bus.topic_names().unwrap(), ["orders", "orders.dlq"]);
}

#[test]
fn stats_after_a_reopen_list_every_stored_topic_and_consumer_without_opening_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
        let orders = bus.topic("orders").unwrap();
        for i in 0..5u8 {
            orders.publish(&Record::new(&[i])).unwrap();
        }
        let mut audit = orders.subscribe("audit", StartAt::Earliest).unwrap();
        audit.try_recv().unwrap().unwrap();
        audit.try_recv().unwrap().unwrap();
        audit.commit().unwrap();
        let billing = orders.group("billing", GroupOptions::default()).unwrap();
        billing
            .recv(Duration::from_secs(1))
            .unwrap()
            .unwrap()
            .ack()
            .unwrap();
        bus.topic("empty").unwrap();
        bus.close().unwrap();
    }
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let stats = bus.stats().unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
    // The group (dead-lettering by default) created its dead-letter topic.
    assert_eq!(names, ["empty", "orders", "orders.dlq"]);
    let orders = &stats[1];
    assert_eq!((orders.start_offset, orders.end_offset), (0, 5));
    let consumers: Vec<(ConsumerId, u64, u64)> = orders
        .consumers
        .iter()
        .map(|c| (c.id.clone(), c.committed, c.lag))
        .collect();
    assert_eq!(
        consumers,
        [
            (ConsumerId::Subscription("audit".into()), 2, 3),
            (ConsumerId::Group("billing".into()), 1, 4),
        ]
    );
    // Reading the stats opened nothing: the application still chooses the
    // topic's options, and an open topic reports the same positions.
    let orders = bus
        .topic_with("orders", TopicOptions::default().max_record_bytes(4096))
        .unwrap();
    assert_eq!(orders.stats().unwrap().consumers.len(), 2);
    assert_eq!(bus.stats().unwrap()[1].end_offset, 5);
}

#[test]
fn stats_report_stored_bytes_and_how_old_each_consumers_oldest_unconsumed_record_is() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SimClock::new();
    let bus = Bus::open(dir.path(), BusOptions::default().clock(clock.clone())).unwrap();
    let orders = bus.topic("orders").unwrap();
    orders.publish(&Record::new(b"first")).unwrap();
    clock.advance(Duration::from_secs(7));
    orders.publish(&Record::new(b"second")).unwrap();
    let mut audit = orders.subscribe("audit", StartAt::Earliest).unwrap();
    audit.try_recv().unwrap().unwrap();
    audit.commit().unwrap();
    let mut caught_up = orders.subscribe("caught-up", StartAt::Latest).unwrap();
    caught_up.commit().unwrap();
    clock.advance(Duration::from_secs(3));

    let ages = |stats: &logbus::TopicStats| -> Vec<(ConsumerId, Option<Duration>)> {
        (stats.consumers.iter())
            .map(|c| (c.id.clone(), c.oldest_unconsumed_age))
            .collect()
    };
    let expected = [
        (
            ConsumerId::Subscription("audit".into()),
            Some(Duration::from_secs(3)),
        ),
        (ConsumerId::Subscription("caught-up".into()), None),
    ];
    let open = orders.stats().unwrap();
    assert_eq!(ages(&open), expected);
    // The segment's header and two frames.
    let frames = Record::new(b"first").encoded_len().unwrap() + Record::new(b"second").encoded_len().unwrap();
    assert_eq!(open.bytes, 32 + frames as u64);
    drop((audit, caught_up, orders));
    bus.close().unwrap();

    // The same from the stored files, without opening the topic.
    let bus = Bus::open(dir.path(), BusOptions::default().clock(clock.clone())).unwrap();
    let stored = bus.stats().unwrap().remove(0);
    assert_eq!(ages(&stored), expected);
    assert_eq!(stored.bytes, open.bytes);
}
