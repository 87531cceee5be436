//! When a consumer group hands a record out, by its headers. Expiry: a
//! record whose `logbus-expires-at-ms` has passed is not handed out but
//! dead-lettered with the reason `expired` (or dropped, by
//! `GroupOptions::on_expiry`); a request carries its requester's deadline,
//! so a responder does not serve one its requester gave up on. Scheduled
//! delivery: a record is not handed out before its `logbus-not-before-ms`,
//! and does not hold up the records behind it, also across a reopen.

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::groups::group_options;
use logbus::clock::SimClock;
use logbus::headers::{EXPIRES_AT, LAST_REASON, NOT_BEFORE};
use logbus::{Bus, BusOptions, Error, GroupOptions, OnExpiry, Record, StartAt};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The values of `topic`'s records from the start, with their last reason.
fn records(bus: &Bus, topic: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let topic = bus.topic(topic).expect("topic");
    let mut reader = topic.subscribe_ephemeral(StartAt::Earliest).expect("subscribe");
    let mut found = Vec::new();
    while found.len() < topic.end_offset() as usize {
        let record = reader
            .recv(Duration::from_secs(30))
            .expect("recv")
            .expect("a record");
        found.push((
            record.value().to_vec(),
            record.header(LAST_REASON).map(<[u8]>::to_vec),
        ));
    }
    found
}

backend_tests! {
    /// A record scheduled 1.5 s ahead is handed out after the one behind
    /// it and not before its time. (On NATS the early hand-out it is
    /// released from counts as a delivery: its attempt may be 2.)
    fn a_scheduled_record_is_not_handed_out_before_its_time(backend: &TestBackend) {
        let bus = backend.open();
        let jobs = bus.topic("jobs").expect("topic");
        let at = now_ms() + 1500;
        jobs.publish(&Record::new(b"later").header(NOT_BEFORE, &at.to_string())).expect("publish");
        jobs.publish(&Record::new(b"now")).expect("publish");
        let workers = jobs
            .group("workers", group_options(Duration::from_secs(60), 3, Duration::ZERO))
            .expect("group");
        let first = workers.recv(Duration::from_secs(30)).expect("recv").expect("a delivery");
        assert_eq!(first.record().value(), b"now");
        first.ack().expect("ack");
        let later = workers.recv(Duration::from_secs(30)).expect("recv").expect("the scheduled record");
        assert_eq!(later.record().value(), b"later");
        assert!(now_ms() >= at, "handed out {} ms early", at - now_ms());
        later.ack().expect("ack");
        assert!(workers.try_recv().expect("recv").is_none());
        bus.close().expect("close");
    }

    /// Expired records are dead-lettered as `expired` on the way to the
    /// next one; one that expires later, or never, is delivered.
    fn an_expired_record_is_dead_lettered_not_delivered(backend: &TestBackend) {
        let bus = backend.open();
        let jobs = bus.topic("jobs").expect("topic");
        let past = (now_ms() - 1000).to_string();
        let later = (now_ms() + 3_600_000).to_string();
        jobs.publish(&Record::new(b"stale").header(EXPIRES_AT, &past)).expect("publish");
        jobs.publish(&Record::new(b"fresh").header(EXPIRES_AT, &later)).expect("publish");
        jobs.publish(&Record::new(b"stale too").header(EXPIRES_AT, &past)).expect("publish");
        jobs.publish(&Record::new(b"no expiry")).expect("publish");
        let workers = jobs
            .group("workers", group_options(Duration::from_secs(60), 5, Duration::ZERO))
            .expect("group");
        let first = workers.try_recv().expect("recv").expect("a delivery");
        assert_eq!(first.record().value(), b"fresh");
        first.ack().expect("ack");
        let second = futures::executor::block_on(workers.recv_async()).expect("recv_async");
        assert_eq!(second.record().value(), b"no expiry");
        second.ack().expect("ack");
        assert!(workers.try_recv().expect("recv").is_none(), "nothing left, nothing redelivered");
        let dead = records(&bus, "jobs.dlq");
        let expired = Some(b"expired".to_vec());
        assert_eq!(dead, [(b"stale".to_vec(), expired.clone()), (b"stale too".to_vec(), expired)]);
        bus.close().expect("close");
    }

    /// With `OnExpiry::Drop` an expired record is dropped (acked), not
    /// dead-lettered; batches skip expired records too.
    fn on_expiry_drop_drops_an_expired_record(backend: &TestBackend) {
        let bus = backend.open();
        let jobs = bus.topic("jobs").expect("topic");
        let past = (now_ms() - 1000).to_string();
        for value in [&b"stale"[..], b"stale too"] {
            jobs.publish(&Record::new(value).header(EXPIRES_AT, &past)).expect("publish");
        }
        jobs.publish(&Record::new(b"current")).expect("publish");
        let options = group_options(Duration::from_secs(60), 5, Duration::ZERO).on_expiry(OnExpiry::Drop);
        let workers = jobs.group("workers", options).expect("group");
        let batch = workers.recv_batch(10, Duration::from_secs(30)).expect("batch");
        let values: Vec<&[u8]> = batch.iter().map(|d| d.record().value()).collect();
        assert_eq!(values, [&b"current"[..]]);
        for delivery in batch {
            delivery.ack().expect("ack");
        }
        assert!(workers.try_recv().expect("recv").is_none());
        assert_eq!(bus.topic("jobs.dlq").expect("dlq").end_offset(), 0);
        bus.close().expect("close");
    }

    /// A request carries its requester's deadline: once the requester timed
    /// out, the responder does not serve it; it is dead-lettered as expired.
    fn a_request_past_its_deadline_is_not_served(backend: &TestBackend) {
        let bus = backend.open();
        let pricing = bus
            .responder_with("pricing", GroupOptions::default().lease(Duration::from_secs(60)))
            .expect("responder");
        let checkout = bus.requester("checkout").expect("requester");
        let gave_up = checkout.request("pricing", &Record::new(b"sku-7"), Duration::from_millis(5));
        assert!(matches!(gave_up, Err(Error::Timeout { .. })), "{gave_up:?}");
        assert!(pricing.try_recv().expect("recv").is_none(), "an expired request was served");
        let dead = records(&bus, "pricing.dlq");
        assert_eq!(dead, [(b"sku-7".to_vec(), Some(b"expired".to_vec()))]);

        // One in time is served.
        let (reply, served) = std::thread::scope(|scope| {
            let served = scope.spawn(|| {
                let request = pricing.recv(Duration::from_secs(30)).expect("recv").expect("a request");
                request.reply(&Record::new(b"3.20")).expect("reply")
            });
            let reply = checkout.request("pricing", &Record::new(b"sku-8"), Duration::from_secs(30));
            (reply, served.join())
        });
        served.expect("responder");
        assert_eq!(reply.expect("reply").value(), b"3.20");
        bus.close().expect("close");
    }
}

/// Embedded, on a simulated clock: a scheduled record waits for its time
/// without counting an attempt or holding up the records behind it, keeps
/// its schedule across a reopen (the schedule is the record's), and a
/// `recv` waiting past its time gets it.
#[test]
fn a_scheduled_record_keeps_its_time_across_a_reopen_and_counts_no_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SimClock::new();
    let open = || Bus::open(dir.path(), BusOptions::default().clock(clock.clone())).unwrap();
    let options = || group_options(Duration::from_secs(60), 1, Duration::ZERO);
    let bus = open();
    let jobs = bus.topic("jobs").unwrap();
    let at = (clock.now_ms() + 60_000).to_string();
    jobs.publish(&Record::new(b"later").header(NOT_BEFORE, &at))
        .unwrap();
    jobs.publish(&Record::new(b"now")).unwrap();
    let workers = jobs.group("workers", options()).unwrap();
    let first = workers.try_recv().unwrap().expect("the record behind it");
    assert_eq!((first.record().value(), first.attempt()), (&b"now"[..], 1));
    first.ack().unwrap();
    assert!(workers.try_recv().unwrap().is_none());
    assert_eq!(workers.stats().unwrap().low_watermark, 0, "kept, not passed");
    drop((workers, jobs));
    bus.close().unwrap();

    let bus = open();
    let workers = bus.topic("jobs").unwrap().group("workers", options()).unwrap();
    clock.advance(Duration::from_secs(59));
    assert!(workers.try_recv().unwrap().is_none(), "a second early");
    let later = workers.recv(Duration::from_secs(5)).unwrap().expect("due");
    assert_eq!((later.record().value(), later.attempt()), (&b"later"[..], 1));
    later.ack().unwrap();
    assert_eq!(workers.stats().unwrap().low_watermark, 2);
    bus.close().unwrap();
}
