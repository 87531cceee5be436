//! Expiry: a record whose `logbus-expires-at-ms` header has passed is not
//! handed out by a consumer group: it is dead-lettered with the reason
//! `expired` (or dropped, by `GroupOptions::on_expiry`), on both backends;
//! a request carries its requester's deadline, so a responder does not
//! serve one its requester gave up on.

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::groups::group_options;
use logbus::headers::{EXPIRES_AT, LAST_REASON};
use logbus::{Bus, Error, GroupOptions, OnExpiry, Record, StartAt};

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
