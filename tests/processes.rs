//! Several processes on one bus directory (docs/PROCESSES.md), as two
//! handles of one directory in one process: the second open joins the
//! first, which serves it over the bus socket exactly as it serves
//! another process. Every pattern crosses: publish-subscribe both ways,
//! competing receivers, async receives (and one dropped while pending),
//! a dropped delivery, dead letters and redrive, request-reply,
//! scatter-gather, a durable subscription's one reader; a joined handle
//! takes over when the owner closes; an exclusive bus refuses to be
//! joined. The crash tests are `tests/processes_crash.rs`.

mod common;

use std::time::Duration;

use logbus::{Bus, BusOptions, GroupOptions, Record, StartAt};

const WAIT: Duration = Duration::from_secs(5);

/// A bus directory opened twice: by its owner, then by a handle that joins
/// it through the socket.
fn owner_and_joined() -> (tempfile::TempDir, Bus, Bus) {
    let dir = tempfile::tempdir().unwrap();
    let owner = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let joined = Bus::open(dir.path(), BusOptions::default()).unwrap();
    (dir, owner, joined)
}

#[test]
fn a_second_open_joins_the_owner_and_every_pattern_crosses() {
    let (_dir, owner, joined) = owner_and_joined();

    let offset = joined
        .topic("orders")
        .unwrap()
        .publish(&Record::new(b"one").key(b"k"))
        .unwrap();
    assert_eq!(offset, 0);
    let mut sub = owner
        .topic("orders")
        .unwrap()
        .subscribe("audit", StartAt::Earliest)
        .unwrap();
    let record = sub
        .recv(WAIT)
        .unwrap()
        .expect("the owner reads what the joined process published");
    assert_eq!((record.value(), record.key()), (&b"one"[..], &b"k"[..]));

    let mut joined_sub = joined
        .topic("orders")
        .unwrap()
        .subscribe("mirror", StartAt::Earliest)
        .unwrap();
    owner
        .topic("orders")
        .unwrap()
        .publish(&Record::new(b"two"))
        .unwrap();
    assert_eq!(joined_sub.recv(WAIT).unwrap().unwrap().value(), b"one");
    assert_eq!(joined_sub.recv(WAIT).unwrap().unwrap().value(), b"two");
    joined_sub.commit().unwrap();
    assert_eq!(joined_sub.committed(), 2);

    let group = joined
        .topic("orders")
        .unwrap()
        .group("billing", GroupOptions::default())
        .unwrap();
    let first = group.recv(WAIT).unwrap().unwrap();
    assert_eq!(first.record().value(), b"one");
    first.ack().unwrap();
    let second = group.recv(WAIT).unwrap().unwrap();
    second.nack("again").unwrap();
    let stats = owner
        .topic("orders")
        .unwrap()
        .group("billing", GroupOptions::default())
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!(stats.acked, 1);

    let responder = owner.responder("echo").unwrap();
    let serve = std::thread::spawn(move || {
        let request = responder.recv(WAIT).unwrap().unwrap();
        let value = request.record().value().to_vec();
        request.reply(&Record::new(&value)).unwrap();
    });
    let requester = joined.requester("client").unwrap();
    let reply = requester.request("echo", &Record::new(b"ping"), WAIT).unwrap();
    assert_eq!(reply.value(), b"ping");
    serve.join().unwrap();
}

#[test]
fn records_of_a_batch_frame_cross_to_a_joined_handle_whole() {
    let (_dir, owner, joined) = owner_and_joined();
    let values: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    let records: Vec<Record<'_>> = values
        .iter()
        .zip(&keys)
        .zip(1_000..)
        .map(|((value, key), timestamp)| {
            Record::new(value)
                .key(key.as_bytes())
                .header("n", &value[..1])
                .timestamp(timestamp)
        })
        .collect();
    // The owner writes them as one batch frame; the joined handle gets
    // each over the socket as a record frame of its own.
    owner.topic("batched").unwrap().publish_batch(&records).unwrap();
    let mut sub = joined
        .topic("batched")
        .unwrap()
        .subscribe("reader", StartAt::Earliest)
        .unwrap();
    for (i, value) in values.iter().enumerate() {
        let record = sub.recv(WAIT).unwrap().expect("a record of the batch");
        assert_eq!(record.offset(), i as u64);
        assert_eq!(record.value(), &value[..]);
        assert_eq!(record.key(), keys[i].as_bytes());
        assert_eq!(record.header("n"), Some(&value[..1]));
        assert_eq!(record.timestamp(), 1_000 + i as i64);
    }
}

#[test]
fn a_joined_handle_takes_over_when_the_owner_closes() {
    let (_dir, owner, joined) = owner_and_joined();
    let topic = joined.topic("orders").unwrap();
    topic.publish(&Record::new(b"before")).unwrap();
    owner.close().unwrap();
    drop(owner);
    assert_eq!(topic.publish(&Record::new(b"after")).unwrap(), 1);
    let mut sub = topic.subscribe("audit", StartAt::Earliest).unwrap();
    assert_eq!(sub.recv(WAIT).unwrap().unwrap().value(), b"before");
    assert_eq!(sub.recv(WAIT).unwrap().unwrap().value(), b"after");
}

/// Found by `tests/group_model.rs`: the owner ran a joined process's batch
/// receive of none as a batch of one, leasing a record nobody asked for.
#[test]
fn a_joined_batch_of_none_leases_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let joined = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let topic = joined.topic("jobs").unwrap();
    let group = topic.group("workers", GroupOptions::default()).unwrap();
    owner
        .topic("jobs")
        .unwrap()
        .publish(&Record::new(b"one"))
        .unwrap();
    assert!(group.try_recv_batch(0).unwrap().is_empty());
    assert!(group.recv_batch(0, WAIT).unwrap().is_empty());
    let first = group.try_recv().unwrap().expect("still available");
    assert_eq!(first.attempt(), 1);
}

/// Found by `tests/group_model.rs`: dropping a delivery whose owner was
/// gone linked again to release it, so the drop took the bus over (and
/// kept it while the joined handle lived).
#[test]
fn dropping_a_delivery_of_an_owner_that_went_takes_nothing_over() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let joined = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let topic = joined.topic("jobs").unwrap();
    topic.publish(&Record::new(b"one")).unwrap();
    let group = topic.group("workers", GroupOptions::default()).unwrap();
    let delivery = group.try_recv().unwrap().expect("published");
    owner.close().unwrap();
    // Time for the joined handle to see its link end (until then a drop
    // writes to the dead link, and takes nothing over either way).
    std::thread::sleep(Duration::from_millis(100));
    drop(delivery);
    let next = Bus::open(dir.path(), BusOptions::default()).unwrap();
    assert!(
        next.topic("jobs").unwrap().log().is_some(),
        "the next open owns the bus"
    );
}

#[test]
fn an_exclusive_bus_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _owner = Bus::open(dir.path(), BusOptions::default().exclusive(true)).unwrap();
    assert!(matches!(
        Bus::open(dir.path(), BusOptions::default()),
        Err(logbus::Error::Locked(_))
    ));
}

fn quick_retries() -> GroupOptions {
    GroupOptions::default()
        .retry(logbus::RetryPolicy::default().backoff(logbus::Backoff::Fixed(Duration::ZERO)))
}

#[test]
fn async_receives_cross_and_a_dropped_one_keeps_nothing() {
    let (_dir, owner, joined) = owner_and_joined();
    let topic = owner.topic("orders").unwrap();
    let group = joined
        .topic("orders")
        .unwrap()
        .group("billing", quick_retries())
        .unwrap();
    let mut sub = joined
        .topic("orders")
        .unwrap()
        .subscribe("audit", StartAt::Earliest)
        .unwrap();

    // Dropped while pending: the owner stops waiting for it, or, if the
    // record came first, the joined handle releases what it took (its
    // attempt counted, as for a dropped delivery).
    assert!(common::futures::poll_once(group.recv_async()).is_pending());
    topic.publish(&Record::new(b"one")).unwrap();
    let delivery = common::futures::poll_until_ready(group.recv_async()).unwrap();
    assert_eq!(delivery.record().value(), b"one");
    assert!(delivery.attempt() <= 2, "attempt {}", delivery.attempt());
    delivery.ack().unwrap();
    assert_eq!(
        common::futures::poll_until_ready(sub.recv_async())
            .unwrap()
            .value(),
        b"one"
    );
    let stats = owner
        .topic("orders")
        .unwrap()
        .group("billing", quick_retries())
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!((stats.acked, stats.in_flight), (1, 0));
}

#[test]
fn a_delivery_a_joined_handle_drops_is_delivered_again() {
    let (_dir, owner, joined) = owner_and_joined();
    owner
        .topic("orders")
        .unwrap()
        .publish(&Record::new(b"one"))
        .unwrap();
    let theirs = joined
        .topic("orders")
        .unwrap()
        .group("billing", quick_retries())
        .unwrap();
    drop(theirs.recv(WAIT).unwrap().unwrap());
    let ours = owner
        .topic("orders")
        .unwrap()
        .group("billing", quick_retries())
        .unwrap();
    let again = ours.recv(WAIT).unwrap().expect("released by the owner");
    assert_eq!((again.record().value(), again.attempt()), (&b"one"[..], 2));
    again.ack().unwrap();
}

#[test]
fn dead_letters_and_redrive_from_a_joined_handle() {
    let (_dir, owner, joined) = owner_and_joined();
    let options = GroupOptions::default()
        .dead_letter(true)
        .retry(logbus::RetryPolicy::default().max_attempts(1));
    let group = joined.topic("orders").unwrap().group("billing", options).unwrap();
    joined
        .topic("orders")
        .unwrap()
        .publish(&Record::new(b"poison"))
        .unwrap();
    group.recv(WAIT).unwrap().unwrap().nack("bad").unwrap();
    let dlq = owner.topic("orders.dlq").unwrap();
    assert_eq!(dlq.end_offset(), 1, "dead-lettered once, in the owner's files");
    assert_eq!(joined.redrive("orders.dlq", |_| true).unwrap(), 1);
    let redriven = group.recv(WAIT).unwrap().expect("redriven");
    assert_eq!(
        (redriven.record().value(), redriven.attempt()),
        (&b"poison"[..], 1)
    );
    redriven.ack().unwrap();
}

#[test]
fn a_scatter_gathers_from_responders_of_both_handles() {
    let (_dir, owner, joined) = owner_and_joined();
    let servers: Vec<_> = [(&owner, "east"), (&joined, "west")]
        .into_iter()
        .map(|(bus, name)| {
            let responder = bus.responder(name).unwrap();
            std::thread::spawn(move || {
                let request = responder.recv(WAIT).unwrap().unwrap();
                request.reply(&Record::new(b"ok")).unwrap();
            })
        })
        .collect();
    let requester = joined.requester("planner").unwrap();
    let services = logbus::Recipients::Services(vec!["east".into(), "west".into()]);
    let scatter = requester.scatter(services, &Record::new(b"?")).unwrap();
    let gathered = scatter.gather(logbus::Gather::all(WAIT)).unwrap();
    assert_eq!(gathered.replies.len(), 2, "{gathered:?}");
    servers.into_iter().for_each(|s| s.join().unwrap());
}

#[test]
fn a_durable_subscription_has_one_reader_across_processes() {
    let (_dir, owner, joined) = owner_and_joined();
    let topic = owner.topic("orders").unwrap();
    topic.publish(&Record::new(b"one")).unwrap();
    let mut ours = topic.subscribe("audit", StartAt::Earliest).unwrap();
    assert_eq!(ours.recv(WAIT).unwrap().unwrap().value(), b"one");
    ours.commit().unwrap();
    let theirs = joined.topic("orders").unwrap();
    assert!(matches!(
        theirs.subscribe("audit", StartAt::Earliest),
        Err(logbus::Error::Locked(_))
    ));
    drop(ours);
    topic.publish(&Record::new(b"two")).unwrap();
    let mut sub = theirs.subscribe("audit", StartAt::Earliest).unwrap();
    assert_eq!(sub.committed(), 1);
    assert_eq!(sub.recv(WAIT).unwrap().unwrap().value(), b"two");
}

#[test]
fn appenders_in_two_joined_processes_share_the_owners_syncs() {
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let (dir, owner, joined) = owner_and_joined();
    let other = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let topic = owner.topic("orders").unwrap();
    let before = topic.stats().unwrap().sync.syncs;
    std::thread::scope(|scope| {
        for (t, bus) in (0..THREADS).map(|t| (t, if t % 2 == 0 { &joined } else { &other })) {
            let topic = bus.topic("orders").unwrap();
            scope.spawn(move || {
                for i in 0..EACH {
                    let value = format!("{t}-{i}");
                    topic.publish(&Record::new(value.as_bytes())).unwrap();
                }
            });
        }
    });
    let publishes = (THREADS * EACH) as u64;
    assert_eq!(topic.end_offset(), publishes);
    let syncs = topic.stats().unwrap().sync.syncs - before;
    // Durability::Always (the default): each publish returned once synced,
    // but publishes in flight together shared the owner's syncs.
    assert!(syncs < publishes, "{syncs} syncs for {publishes} publishes");
    eprintln!("{syncs} syncs for {publishes} publishes from two joined processes");
}
