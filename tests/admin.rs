//! Admin operations: deleting a durable subscription, a consumer group or
//! a whole topic (with its dead-letter topic and every consumer's state).
//!
//! - On both backends: a deleted consumer is gone after a reopen and one
//!   opened under its name starts afresh; a deleted topic is no longer
//!   listed and reopens empty; deleting what is open in this process is
//!   refused with `Error::Locked` and deletes nothing.
//! - Embedded, on the simulated disk: a deletion cut short between its
//!   tombstone rename and the removal of the files (a failed removal, then
//!   a power loss) leaves no live consumer or topic, and the next open
//!   removes the leftovers.
//! - Embedded, `Retention::Interest`: deleting an abandoned subscription
//!   lets retention move on at once.
//! - Purging a topic (both backends) removes its records but not its
//!   offsets: the next record gets the old end offset, a subscription
//!   counts what it missed, a group never hands out a purged record; the
//!   purge survives a reopen (embedded: a power loss too).
//! - Seeking a subscription or a group (both backends) to an offset, a
//!   time, the earliest or the latest record moves it there durably (it
//!   survives a reopen; embedded, a power loss); a group delivers from
//!   there as new, and (embedded) a delivery handed out before the seek
//!   gets `LeaseExpired`.
//! - A requester restarted lists the requests it sent that still wait
//!   (`pending`) and resumes a scatter from its id alone (both backends):
//!   both are noted in its inbox when sent.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestBackend;
use common::maintenance::eventually;
use logbus::storage::{Fault, SimStorage};
use logbus::{
    Bus, BusOptions, ConsumerId, DeliveryOrder, Durability, Error, Gather, GroupOptions, Recipients, Record,
    Retention, RetryPolicy, StartAt, StopReason, Topic, TopicOptions,
};

const SHORT: Duration = Duration::from_millis(200);

/// Publishes `0..5`, then (20 ms later) `5..10`; the time between them.
fn five_then_five(topic: &Topic) -> i64 {
    let publish = |range: std::ops::Range<u8>| {
        for i in range {
            topic.publish(&Record::new(&[i])).expect("publish");
        }
    };
    publish(0..5);
    std::thread::sleep(Duration::from_millis(20));
    let between = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    std::thread::sleep(Duration::from_millis(20));
    publish(5..10);
    between
}

fn consumers(bus: &Bus, topic: &str) -> Vec<ConsumerId> {
    let stats = bus.topic(topic).expect("topic").stats().expect("stats");
    stats.consumers.into_iter().map(|c| c.id).collect()
}

backend_tests! {
    /// A subscription and a group, each deleted once closed: gone from the
    /// topic's stats (also after a reopen), deleted once only, and opened
    /// again under the same names they start where a new one starts.
    fn a_deleted_subscription_or_group_is_gone_and_its_name_starts_afresh(backend: &TestBackend) {
        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        for value in [b"a", b"b", b"c"] {
            orders.publish(&Record::new(value)).expect("publish");
        }
        let mut audit = orders.subscribe("audit", StartAt::Earliest).expect("subscribe");
        while audit.recv(SHORT).expect("recv").is_some() {}
        audit.commit().expect("commit");
        let billing = orders.group("billing", GroupOptions::default()).expect("group");
        for _ in 0..2 {
            billing.recv(SHORT).expect("recv").expect("a record").ack().expect("ack");
        }
        billing.recv(SHORT).expect("recv").expect("a record").reject("bad").expect("reject");

        assert!(matches!(bus.delete_subscription("orders", "audit"), Err(Error::Locked(_))));
        assert!(matches!(bus.delete_group("orders", "billing"), Err(Error::Locked(_))));
        assert_eq!(consumers(&bus, "orders").len(), 2, "a refused deletion deletes nothing");
        drop((audit, billing));

        assert!(bus.delete_subscription("orders", "audit").expect("delete"));
        assert!(bus.delete_group("orders", "billing").expect("delete"));
        assert!(!bus.delete_subscription("orders", "audit").expect("again"));
        assert!(!bus.delete_group("orders", "billing").expect("again"));
        assert!(!bus.delete_group("orders", "never").expect("none"));
        assert!(consumers(&bus, "orders").is_empty());
        let dlq = bus.topic("orders.dlq").expect("dead-letter topic");
        dlq.stats().expect("stats");
        assert_eq!(dlq.end_offset(), 1, "the group's dead letter stays");
        drop((orders, dlq));
        bus.close().expect("close");

        let bus = backend.open();
        assert!(consumers(&bus, "orders").is_empty());
        let orders = bus.topic("orders").expect("topic");
        let mut audit = orders.subscribe("audit", StartAt::Earliest).expect("subscribe");
        assert_eq!(audit.recv(SHORT).expect("recv").map(|r| r.offset()), Some(0));
        let billing = orders.group("billing", GroupOptions::default()).expect("group");
        let first = billing.recv(SHORT).expect("recv").expect("a record");
        assert_eq!((first.record().offset(), first.attempt()), (0, 1));
    }

    /// A topic whose group dead-lettered a record: deleting it is refused
    /// while a handle lives, then takes the topic and its dead-letter topic;
    /// the name opens a new, empty topic without consumers.
    fn a_deleted_topic_takes_its_dead_letters_and_consumers_with_it(backend: &TestBackend) {
        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        orders.publish(&Record::new(b"poison")).expect("publish");
        orders.publish(&Record::new(b"fine")).expect("publish");
        orders.subscribe("audit", StartAt::Earliest).expect("subscribe");
        let billing = orders.group("billing", GroupOptions::default()).expect("group");
        billing.recv(SHORT).expect("recv").expect("a record").reject("bad").expect("reject");
        assert!(bus.topic_names().expect("names").contains(&"orders.dlq".to_owned()));

        assert!(matches!(bus.delete_topic("orders"), Err(Error::Locked(_))));
        drop(billing);
        assert!(matches!(bus.delete_topic("orders"), Err(Error::Locked(_))));
        assert!(bus.topic_names().expect("names").contains(&"orders".to_owned()));
        drop(orders);

        assert!(bus.delete_topic("orders").expect("delete"));
        assert!(!bus.delete_topic("orders").expect("again"));
        let names = bus.topic_names().expect("names");
        assert!(!names.iter().any(|n| n.starts_with("orders")), "{names:?}");
        bus.close().expect("close");

        let bus = backend.open();
        assert!(bus.topic_names().expect("names").is_empty());
        let orders = bus.topic("orders").expect("a new topic");
        assert_eq!((orders.start_offset(), orders.end_offset()), (0, 0));
        assert!(consumers(&bus, "orders").is_empty());
        assert_eq!(orders.publish(&Record::new(b"new")).expect("publish"), 0);
    }

    /// Five records, a subscription that committed two and a group with
    /// one in flight; the purge empties the topic, offsets go on, and the
    /// consumers resume at the new start.
    fn a_purged_topic_keeps_its_offsets_and_its_consumers_move_to_the_new_start(backend: &TestBackend) {
        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        for i in 0..5u8 {
            orders.publish(&Record::new(&[i])).expect("publish");
        }
        let mut audit = orders.subscribe("audit", StartAt::Earliest).expect("subscribe");
        for _ in 0..2 {
            audit.recv(SHORT).expect("recv").expect("a record");
        }
        audit.commit().expect("commit");
        let billing = orders.group("billing", GroupOptions::default()).expect("group");
        let in_flight = billing.recv(SHORT).expect("recv").expect("a record");
        assert_eq!(in_flight.record().offset(), 0);

        assert_eq!(orders.purge().expect("purge"), 5);
        assert_eq!((orders.start_offset(), orders.end_offset()), (5, 5));
        assert_eq!(orders.publish(&Record::new(b"after")).expect("publish"), 5);

        let next = audit.recv(SHORT).expect("recv").expect("the record after the purge");
        assert_eq!((next.offset(), next.value()), (5, &b"after"[..]));
        assert_eq!(audit.skipped(), 3);
        in_flight.nack_with_delay("purged meanwhile", Duration::ZERO).expect("settled");
        let next = billing.recv(SHORT).expect("recv").expect("the record after the purge");
        assert_eq!((next.record().offset(), next.attempt()), (5, 1));
        next.ack().expect("ack");
        assert!(billing.try_recv().expect("try_recv").is_none(), "no purged record comes back");
        drop((audit, billing, orders));
        bus.close().expect("close");

        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        orders.stats().expect("stats");
        assert_eq!((orders.start_offset(), orders.end_offset()), (5, 6));
        assert_eq!(orders.purge().expect("purge again"), 6);
        assert_eq!(orders.purge().expect("an empty topic"), 6);
    }

    /// A group failed a record once, was deleted and created again: the
    /// new group's dead letter of that record lists only its own failure
    /// (on NATS the deletion purged the group's stored failures).
    fn a_group_created_again_after_its_deletion_keeps_none_of_the_old_failures(backend: &TestBackend) {
        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        orders.publish(&Record::new(b"poison")).expect("publish");
        let retry = |attempts| GroupOptions::default().retry(RetryPolicy::default().max_attempts(attempts));
        let billing = orders.group("billing", retry(2)).expect("group");
        billing.recv(SHORT).expect("recv").expect("a record").nack("old failure").expect("nack");
        drop(billing);
        assert!(bus.delete_group("orders", "billing").expect("delete"));

        let billing = orders.group("billing", retry(2)).expect("group again");
        let first = billing.recv(SHORT).expect("recv").expect("the record again");
        assert_eq!(first.attempt(), 1);
        first.nack_with_delay("new failure", Duration::ZERO).expect("nack");
        let second = billing.recv(SHORT).expect("recv").expect("its second attempt");
        second.nack("new failure").expect("dead-lettered");
        let mut dlq = bus.topic("orders.dlq").expect("dlq").subscribe_ephemeral(StartAt::Earliest).expect("read");
        let letter = dlq.recv(SHORT).expect("recv").expect("the dead letter");
        let failures: Vec<String> = (letter.headers())
            .filter(|(name, _)| *name == "logbus-failure")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures.iter().all(|f| f.ends_with("new failure")), "{failures:?}");
    }

    /// Two requests and a scatter, one request and one recipient answered:
    /// the other two are pending, also after a reopen; the scatter resumes
    /// from its id with its recipients, and once every reply is in nothing
    /// is pending.
    fn a_restarted_requester_lists_what_is_pending_and_resumes_a_scatter_from_its_id(backend: &TestBackend) {
        let (first, second, scatter) = {
            let bus = backend.open();
            let pricing = bus.responder("pricing").expect("responder");
            let (eu, _us) = (bus.responder("eu").expect("eu"), bus.responder("us").expect("us"));
            let checkout = bus.requester("checkout").expect("requester");
            assert!(checkout.pending().expect("pending").is_empty());
            let first = checkout.send_request("pricing", &Record::new(b"basket 1")).expect("send");
            let second = checkout.send_request("pricing", &Record::new(b"basket 2")).expect("send");
            let everyone = Recipients::Services(vec!["eu".into(), "us".into()]);
            let scatter = checkout.scatter(everyone, &Record::new(b"sku 7")).expect("scatter").id();
            checkout.request("pricing", &Record::new(b"not noted"), Duration::ZERO).ok();
            let request = pricing.recv(SHORT).expect("recv").expect("the first request");
            request.reply(&Record::new(b"12.50")).expect("reply");
            eu.recv(SHORT).expect("recv").expect("the scatter").reply(&Record::new(b"3.20")).expect("reply");
            assert_eq!(checkout.pending().expect("pending"), [second, scatter]);
            drop((pricing, eu, checkout));
            bus.close().expect("close");
            (first, second, scatter)
        };

        let bus = backend.open();
        let checkout = bus.requester("checkout").expect("requester");
        assert_eq!(checkout.pending().expect("pending"), [second, scatter]);
        let resumed = checkout.resume_scatter(scatter).expect("noted when sent");
        assert_eq!(resumed.recipients(), ["eu", "us"]);
        let us = bus.responder("us").expect("us");
        us.recv(SHORT).expect("recv").expect("the scatter").reply(&Record::new(b"3.10")).expect("reply");
        let gathered = resumed.gather(Gather::all(SHORT)).expect("gather");
        assert_eq!((gathered.stopped, gathered.replies.len()), (StopReason::All, 2));
        assert_eq!(checkout.pending().expect("pending"), [second]);
        assert!(matches!(checkout.resume_scatter(second), Err(Error::InvalidArgument(_))));
        assert!(matches!(checkout.resume_scatter(first), Err(Error::InvalidArgument(_))));

        let pricing = bus.responder("pricing").expect("responder");
        while let Some(request) = pricing.recv(SHORT).expect("recv") {
            request.reply(&Record::new(b"9.99")).ok();
        }
        assert!(checkout.pending().expect("pending").is_empty());
    }

    /// A subscription that read everything seeks back to an offset (its
    /// commit follows, so a reopen resumes there), to a time, to either
    /// end; past the end is refused.
    fn a_subscription_seeks_to_an_offset_or_a_time_and_keeps_it_across_a_reopen(backend: &TestBackend) {
        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        let between = five_then_five(&orders);
        let mut audit = orders.subscribe("audit", StartAt::Earliest).expect("subscribe");
        while audit.recv(SHORT).expect("recv").is_some() {}
        audit.commit().expect("commit");

        assert_eq!(audit.seek(StartAt::Offset(3)).expect("seek"), 3);
        assert_eq!(audit.committed(), 3);
        assert_eq!(audit.recv(SHORT).expect("recv").map(|r| r.offset()), Some(3));
        assert!(matches!(audit.seek(StartAt::Offset(11)), Err(Error::InvalidArgument(_))));
        assert_eq!(audit.committed(), 3, "a refused seek moves nothing");
        assert_eq!(audit.seek(StartAt::Timestamp(between)).expect("seek"), 5);
        assert_eq!(audit.recv(SHORT).expect("recv").map(|r| r.offset()), Some(5));
        assert_eq!(audit.seek(StartAt::Latest).expect("seek"), 10);
        assert!(audit.recv(SHORT).expect("recv").is_none());
        assert_eq!(audit.seek(StartAt::Earliest).expect("seek"), 0);
        assert_eq!(audit.seek(StartAt::Offset(7)).expect("seek"), 7);
        drop((audit, orders));
        bus.close().expect("close");

        let bus = backend.open();
        let mut audit = bus.topic("orders").unwrap().subscribe("audit", StartAt::Earliest).unwrap();
        assert_eq!(audit.recv(SHORT).expect("recv").map(|r| r.offset()), Some(7));
    }

    /// A group that acked everything but one in flight seeks back: the
    /// records from there come again as new (attempt 1), the one in flight
    /// no longer settles (embedded: `LeaseExpired`), and a reopen resumes
    /// at the seek; then a seek to a time.
    fn a_group_seeks_back_and_delivers_again_from_there_across_a_reopen(backend: &TestBackend) {
        let bus = backend.open();
        let orders = bus.topic("orders").expect("topic");
        let between = five_then_five(&orders);
        let billing = orders.group("billing", GroupOptions::default()).expect("group");
        for _ in 0..9 {
            billing.recv(SHORT).expect("recv").expect("a record").ack().expect("ack");
        }
        let in_flight = billing.recv(SHORT).expect("recv").expect("the last record");
        assert_eq!(in_flight.record().offset(), 9);

        assert_eq!(billing.seek(StartAt::Offset(2)).expect("seek"), 2);
        match backend {
            TestBackend::Embedded { .. } => {
                assert!(matches!(in_flight.ack(), Err(Error::LeaseExpired { offset: 9 })));
            }
            // JetStream cannot tell the old consumer's deliveries apart:
            // docs/NATS.md, "Admin operations".
            #[cfg(feature = "nats")]
            TestBackend::Nats { .. } => drop(in_flight),
        }
        assert!(matches!(billing.seek(StartAt::Offset(11)), Err(Error::InvalidArgument(_))));
        let again = billing.recv(SHORT).expect("recv").expect("a record again");
        assert_eq!((again.record().offset(), again.attempt()), (2, 1));
        again.ack().expect("ack");
        drop((billing, orders));
        bus.close().expect("close");

        let bus = backend.open();
        let billing = bus.topic("orders").unwrap().group("billing", GroupOptions::default()).unwrap();
        let next = billing.recv(SHORT).expect("recv").expect("a record");
        assert_eq!(next.record().offset(), 3);
        drop(next);
        assert_eq!(billing.seek(StartAt::Timestamp(between)).expect("seek"), 5);
        let next = billing.recv(SHORT).expect("recv").expect("a record");
        assert_eq!((next.record().offset(), next.attempt()), (5, 1));
    }
}

/// A purge that returned is durable: a power loss right after it brings
/// no record back, and the next record still gets the next offset.
#[test]
fn a_purge_survives_a_power_loss_right_after_it() {
    let sim = SimStorage::new();
    let options = TopicOptions::default().segment_bytes(1024);
    {
        let bus = sim_bus(&sim);
        let orders = bus.topic_with("orders", options.clone()).unwrap();
        for i in 0..100 {
            orders
                .publish(&Record::new(format!("record {i:04}").as_bytes()))
                .unwrap();
        }
        assert_eq!(orders.purge().unwrap(), 100);
        drop(orders);
        drop(bus);
        sim.power_loss(11);
    }
    let bus = sim_bus(&sim);
    let orders = bus.topic_with("orders", options).unwrap();
    assert_eq!((orders.start_offset(), orders.end_offset()), (100, 100));
    assert_eq!(orders.publish(&Record::new(b"next")).unwrap(), 100);
}

/// The note goes first: a request whose publish then fails (here: too
/// large for the service topic) is still listed as pending, as one cut
/// short by a crash would be, and is never answered.
#[test]
fn a_request_whose_publish_fails_after_its_note_stays_pending() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    bus.topic_with("pricing", TopicOptions::default().max_record_bytes(256))
        .unwrap();
    let checkout = bus.requester("checkout").unwrap();
    let refused = checkout.send_request("pricing", &Record::new(&[0u8; 512]));
    assert!(
        matches!(refused, Err(Error::RecordTooLarge { .. })),
        "{refused:?}"
    );
    assert_eq!(checkout.pending().unwrap().len(), 1);
    assert_eq!(bus.topic("pricing").unwrap().end_offset(), 0);
}

/// A per-key group forgets its keys with the rest: after seeking back
/// over a record in flight, that record's key is not held by the old
/// delivery (which gets `LeaseExpired`), and keys go out in order again.
#[test]
fn a_per_key_group_seeking_back_forgets_the_key_held_by_a_delivery_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let orders = bus.topic("orders").unwrap();
    for key in [b"a", b"a", b"b"] {
        orders.publish(&Record::new(b"v").key(key)).unwrap();
    }
    let options = GroupOptions::default().ordering(DeliveryOrder::PerKey);
    let billing = orders.group("billing", options).unwrap();
    let held = billing.try_recv().unwrap().expect("the first record of key a");
    let next = billing.try_recv().unwrap().expect("key b: a is busy");
    assert_eq!((held.record().offset(), next.record().offset()), (0, 2));

    assert_eq!(billing.seek(StartAt::Offset(0)).unwrap(), 0);
    assert!(matches!(held.ack(), Err(Error::LeaseExpired { offset: 0 })));
    drop(next);
    let again = billing.try_recv().unwrap().expect("key a again");
    assert_eq!((again.record().offset(), again.attempt()), (0, 1));
    let other = billing.try_recv().unwrap().expect("key b again, a busy");
    assert_eq!(other.record().offset(), 2);
    again.ack().unwrap();
    let last = billing.try_recv().unwrap().expect("key a's second record");
    assert_eq!(last.record().offset(), 1);
}

/// A group's seek is durable when it returns: a power loss right after
/// it reopens the group at the seek.
#[test]
fn a_group_seek_survives_a_power_loss_right_after_it() {
    let sim = SimStorage::new();
    {
        let bus = sim_bus(&sim);
        let orders = bus.topic("orders").unwrap();
        for i in 0..5u8 {
            orders.publish(&Record::new(&[i])).unwrap();
        }
        let billing = orders.group("billing", GroupOptions::default()).unwrap();
        while let Some(delivery) = billing.try_recv().unwrap() {
            delivery.ack().unwrap();
        }
        assert_eq!(billing.seek(StartAt::Offset(1)).unwrap(), 1);
        drop((billing, orders));
        drop(bus);
        sim.power_loss(13);
    }
    let bus = sim_bus(&sim);
    let billing = bus
        .topic("orders")
        .unwrap()
        .group("billing", GroupOptions::default())
        .unwrap();
    assert_eq!(billing.stats().unwrap().low_watermark, 1);
    let next = billing.try_recv().unwrap().expect("a record");
    assert_eq!((next.record().offset(), next.attempt()), (1, 1));
}

fn sim_bus(sim: &SimStorage) -> Bus {
    let options = BusOptions::default().storage(Arc::new(sim.clone()));
    Bus::open(Path::new("/sim/bus"), options).expect("open")
}

fn tombstones(sim: &SimStorage) -> Vec<PathBuf> {
    let deleted = |path: &PathBuf| {
        path.iter()
            .any(|part| part.to_string_lossy().ends_with(".deleted"))
    };
    sim.files().into_iter().filter(deleted).collect()
}

/// The removal after the tombstone's rename fails, then the power goes:
/// the subscription and the group are gone all the same, and the next
/// open of their topic removes what was left of them.
#[test]
fn a_consumer_deletion_cut_short_after_its_rename_leaves_no_consumer_and_is_finished_at_the_next_open() {
    let sim = SimStorage::new();
    {
        let bus = sim_bus(&sim);
        let orders = bus.topic("orders").expect("topic");
        orders.publish(&Record::new(b"a")).expect("publish");
        let mut audit = orders.subscribe("audit", StartAt::Earliest).expect("subscribe");
        audit.recv(SHORT).expect("recv");
        audit.commit().expect("commit");
        orders.group("billing", GroupOptions::default()).expect("group");
        drop(audit);
        bus.close().expect("close");
    }
    let bus = sim_bus(&sim);
    for (delete, name) in [
        (Bus::delete_subscription as fn(&Bus, &str, &str) -> _, "audit"),
        (Bus::delete_group, "billing"),
    ] {
        sim.inject(Fault::RemoveError { after: 0 });
        assert!(delete(&bus, "orders", name).expect("deleted once renamed"));
    }
    assert!(
        !tombstones(&sim).is_empty(),
        "the failed removals left their tombstones"
    );
    drop(bus);
    sim.power_loss(3);

    let bus = sim_bus(&sim);
    assert!(consumers(&bus, "orders").is_empty());
    assert!(tombstones(&sim).is_empty(), "{:?}", tombstones(&sim));
    let mut audit = bus
        .topic("orders")
        .unwrap()
        .subscribe("audit", StartAt::Latest)
        .unwrap();
    assert_eq!(audit.position(), 1, "a new subscription, not the deleted one");
    assert!(audit.try_recv().unwrap().is_none());
}

/// The same for a topic: after its rename it is gone, dead-letter topic
/// and consumers with it, and the next open of the bus removes the rest.
#[test]
fn a_topic_deletion_cut_short_after_its_rename_leaves_no_topic_and_is_finished_at_the_next_open() {
    let sim = SimStorage::new();
    {
        let bus = sim_bus(&sim);
        let orders = bus.topic("orders").expect("topic");
        orders.publish(&Record::new(b"a")).expect("publish");
        orders.subscribe("audit", StartAt::Earliest).expect("subscribe");
        let billing = orders.group("billing", GroupOptions::default()).expect("group");
        billing.recv(SHORT).unwrap().unwrap().reject("bad").unwrap();
        bus.close().expect("close");
    }
    let bus = sim_bus(&sim);
    sim.inject(Fault::RemoveError { after: 0 });
    assert!(bus.delete_topic("orders").expect("deleted once renamed"));
    assert!(bus.topic_names().unwrap().is_empty());
    assert!(
        !tombstones(&sim).is_empty(),
        "the failed removal left a tombstone"
    );
    drop(bus);
    sim.power_loss(5);

    let bus = sim_bus(&sim);
    assert!(bus.topic_names().unwrap().is_empty());
    assert!(tombstones(&sim).is_empty(), "{:?}", tombstones(&sim));
    let orders = bus.topic("orders").unwrap();
    assert_eq!(orders.end_offset(), 0);
    assert!(consumers(&bus, "orders").is_empty());
}

/// A requester's inbox is a topic like any other, and deleting it takes
/// the requester's correlation index too; refused while the requester is
/// open.
#[test]
fn deleting_a_requesters_inbox_deletes_its_correlation_index() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let checkout = bus.requester("checkout").unwrap();
    checkout.send_request("pricing", &Record::new(b"q")).unwrap();
    let index = dir.path().join("state/inboxes/checkout");
    assert!(index.exists());
    assert!(matches!(
        bus.delete_topic("checkout.inbox"),
        Err(Error::Locked(_))
    ));
    drop(checkout);
    assert!(bus.delete_topic("checkout.inbox").unwrap());
    assert!(!index.exists());
    assert!(!dir.path().join("topics/checkout.inbox").exists());
    assert!(bus.requester("checkout").unwrap().pending().unwrap().is_empty());
}

/// Under `Interest`, a subscription nobody reads any more keeps every
/// record; deleting it lets the segments the group acked go at once.
#[test]
fn retention_moves_on_once_an_abandoned_subscription_is_deleted() {
    retention_moves_on_once_deleted(Retention::Interest, |topic| {
        drop(topic.subscribe("abandoned", StartAt::Earliest).unwrap());
        Bus::delete_subscription
    });
}

/// The same under `WorkQueue`, where only groups hold records back: an
/// abandoned group.
#[test]
fn work_queue_retention_moves_on_once_an_abandoned_group_is_deleted() {
    retention_moves_on_once_deleted(Retention::WorkQueue, |topic| {
        drop(topic.group("abandoned", GroupOptions::default()).unwrap());
        Bus::delete_group
    });
}

/// A topic under `retention` with a consumer `abandon` creates (returning
/// how to delete it) and a group that acks everything: nothing goes until
/// the abandoned consumer is deleted, then the acked segments do.
fn retention_moves_on_once_deleted(
    retention: Retention,
    abandon: impl FnOnce(&Topic) -> fn(&Bus, &str, &str) -> logbus::Result<bool>,
) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let options = TopicOptions::default()
        .durability(Durability::Os)
        .segment_bytes(1024)
        .retention(retention);
    let orders = bus.topic_with("orders", options).unwrap();
    let delete = abandon(&orders);
    let billing = orders.group("billing", GroupOptions::default()).unwrap();
    for i in 0..200 {
        orders
            .publish(&Record::new(format!("record {i:04}").as_bytes()))
            .unwrap();
    }
    while let Some(delivery) = billing.try_recv().unwrap() {
        delivery.ack().unwrap();
    }
    assert_eq!(
        orders.start_offset(),
        0,
        "the abandoned consumer holds every record"
    );

    // Counted before the deletion: the files go in the background after it.
    let segments = || {
        std::fs::read_dir(dir.path().join("topics/orders"))
            .unwrap()
            .count()
    };
    let before = segments();
    assert!(delete(&bus, "orders", "abandoned").unwrap());
    assert!(orders.start_offset() > 100, "start {}", orders.start_offset());
    eventually("released segment files deleted", || segments() < before);
}
