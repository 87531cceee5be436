//! Several processes on one bus directory (docs/PROCESSES.md).

use std::time::Duration;

use logbus::{Bus, BusOptions, GroupOptions, Record, StartAt};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn a_second_open_joins_the_owner_and_every_pattern_crosses() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let joined = Bus::open(dir.path(), BusOptions::default()).unwrap();

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
fn a_joined_handle_takes_over_when_the_owner_closes() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let joined = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let topic = joined.topic("orders").unwrap();
    topic.publish(&Record::new(b"before")).unwrap();
    owner.close().unwrap();
    drop(owner);
    assert_eq!(topic.publish(&Record::new(b"after")).unwrap(), 1);
    let mut sub = topic.subscribe("audit", StartAt::Earliest).unwrap();
    assert_eq!(sub.recv(WAIT).unwrap().unwrap().value(), b"before");
    assert_eq!(sub.recv(WAIT).unwrap().unwrap().value(), b"after");
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
