//! `Bus::record_metrics` (feature `metrics`): what `Bus::stats` knows,
//! through the `metrics` facade, read back with `metrics-util`'s debugging
//! recorder.

use std::collections::BTreeMap;
use std::time::Duration;

use logbus::clock::SimClock;
use logbus::{Bus, BusOptions, GroupOptions, Record, StartAt};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Every recorded value by name and sorted `label=value` pairs.
type Recorded = BTreeMap<(String, Vec<String>), f64>;

fn record(bus: &Bus) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || bus.record_metrics()).unwrap();
    (snapshotter.snapshot().into_vec().into_iter())
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Gauge(gauge) => gauge.into_inner(),
                DebugValue::Counter(count) => count as f64,
                DebugValue::Histogram(_) => panic!("no histograms"),
            };
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn get(recorded: &Recorded, name: &str, labels: &[&str]) -> f64 {
    let key = (name.to_owned(), labels.iter().map(|l| l.to_string()).collect());
    *recorded
        .get(&key)
        .unwrap_or_else(|| panic!("{key:?} not in {recorded:#?}"))
}

#[test]
fn record_metrics_exports_topic_consumer_and_group_stats() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SimClock::new();
    let bus = Bus::open(dir.path(), BusOptions::default().clock(clock.clone())).unwrap();
    let orders = bus.topic("orders").unwrap();
    for i in 0..4u8 {
        orders.publish(&Record::new(&[i])).unwrap();
        clock.advance(Duration::from_secs(1));
    }
    let mut audit = orders.subscribe("audit", StartAt::Earliest).unwrap();
    audit.try_recv().unwrap().unwrap();
    audit.commit().unwrap();
    let billing = orders.group("billing", GroupOptions::default()).unwrap();
    billing.try_recv().unwrap().unwrap().ack().unwrap();
    let _held = billing.try_recv().unwrap().unwrap();
    billing.try_recv().unwrap().unwrap().nack("later").unwrap();

    let recorded = record(&bus);
    let topic = ["topic=orders"];
    assert_eq!(get(&recorded, "logbus_topic_end_offset", &topic), 4.0);
    assert_eq!(get(&recorded, "logbus_topic_start_offset", &topic), 0.0);
    let stats = orders.stats().unwrap();
    assert!(stats.bytes > 32);
    assert_eq!(get(&recorded, "logbus_topic_bytes", &topic), stats.bytes as f64);
    // Durability::Always: at least one sync, as many as the stats count.
    assert!(stats.sync.syncs > 0);
    assert_eq!(
        get(&recorded, "logbus_topic_syncs_total", &topic),
        stats.sync.syncs as f64
    );

    let audit = ["consumer=audit", "kind=subscription", "topic=orders"];
    assert_eq!(get(&recorded, "logbus_consumer_committed", &audit), 1.0);
    assert_eq!(get(&recorded, "logbus_consumer_lag", &audit), 3.0);
    // Record 1 was published at 1 s and the clock is at 4 s.
    assert_eq!(
        get(&recorded, "logbus_consumer_oldest_unconsumed_age_seconds", &audit),
        3.0
    );

    let billing = ["consumer=billing", "kind=group", "topic=orders"];
    assert_eq!(get(&recorded, "logbus_consumer_lag", &billing), 3.0);
    assert_eq!(get(&recorded, "logbus_group_in_flight", &billing), 1.0);
    assert_eq!(get(&recorded, "logbus_group_waiting", &billing), 1.0);
    assert_eq!(get(&recorded, "logbus_group_acked_total", &billing), 1.0);
    assert_eq!(get(&recorded, "logbus_group_redeliveries_total", &billing), 0.0);
    assert_eq!(get(&recorded, "logbus_group_dead_lettered_total", &billing), 0.0);
    assert_eq!(
        get(&recorded, "logbus_group_oldest_unacked_age_seconds", &billing),
        3.0
    );
}
