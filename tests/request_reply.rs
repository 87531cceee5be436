//! Request-reply and scatter-gather on the real file system: round trips,
//! timeouts, late replies, restarts and the gather stop rules.

use std::time::{Duration, Instant};

use logbus::{Bus, BusOptions, Error, Gather, Recipients, Record, StopReason};

fn serve_echo(bus: &Bus, service: &str, count: usize) -> std::thread::JoinHandle<()> {
    let responder = bus.responder(service).unwrap();
    let name = service.to_owned();
    std::thread::spawn(move || {
        for _ in 0..count {
            let request = responder
                .recv(Duration::from_secs(10))
                .unwrap()
                .expect("a request");
            let body = format!("{name}:{}", String::from_utf8_lossy(request.record().value()));
            request.reply(&Record::new(body.as_bytes())).unwrap();
        }
    })
}

#[test]
fn request_gets_the_reply_matched_by_correlation_id() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let server = serve_echo(&bus, "echo", 3);
    let requester = bus.requester("client").unwrap();
    for i in 0..3 {
        let reply = requester
            .request(
                "echo",
                &Record::new(&format!("ping {i}")),
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(reply.value(), format!("echo:ping {i}").as_bytes());
        assert_eq!(reply.from(), Some("echo"));
        assert!(reply.error().is_none());
    }
    server.join().unwrap();
}

#[test]
fn timeout_names_the_id_and_a_late_reply_stays_collectable() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let requester = bus.requester("client").unwrap();
    let id = requester.send_request("slow", &Record::new(b"q")).unwrap();
    match requester.reply_for(id, Duration::from_millis(20)) {
        Err(Error::Timeout { correlation_id }) => assert_eq!(correlation_id, id.as_u128()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let responder = bus.responder("slow").unwrap();
    responder
        .try_recv()
        .unwrap()
        .unwrap()
        .reply_err("overloaded")
        .unwrap();
    let reply = requester.reply_for(id, Duration::from_secs(5)).unwrap();
    assert_eq!(reply.error(), Some("overloaded"));
}

#[test]
fn requester_that_restarts_collects_the_reply_to_an_id_sent_before() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
        let id = bus
            .requester("client")
            .unwrap()
            .send_request("svc", &Record::new(b"q"))
            .unwrap();
        bus.close().unwrap();
        id
    };
    {
        let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
        let responder = bus.responder("svc").unwrap();
        responder
            .try_recv()
            .unwrap()
            .unwrap()
            .reply(&Record::new(b"answer"))
            .unwrap();
        bus.close().unwrap();
    }
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let reply = bus
        .requester("client")
        .unwrap()
        .reply_for(id, Duration::from_secs(5))
        .unwrap();
    assert_eq!(reply.value(), b"answer");
}

#[test]
fn scatter_with_quorum_returns_in_time_with_the_missing_list() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let services: Vec<String> = (0..5).map(|i| format!("node{i}")).collect();
    let servers: Vec<_> = services[..3].iter().map(|s| serve_echo(&bus, s, 1)).collect();
    let slow = bus.responder("node3").unwrap();
    let requester = bus.requester("gatherer").unwrap();
    let scatter = requester
        .scatter(Recipients::Services(services.clone()), &Record::new(b"vote"))
        .unwrap();
    let started = Instant::now();
    let gathered = scatter
        .gather(Gather::all(Duration::from_secs(10)).quorum(3))
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gathered.stopped, StopReason::Quorum);
    assert_eq!(gathered.replies.len(), 3);
    assert_eq!(gathered.missing, vec!["node3".to_owned(), "node4".to_owned()]);
    for server in servers {
        server.join().unwrap();
    }
    let all = scatter.gather(Gather::all(Duration::from_millis(200))).unwrap();
    assert_eq!(all.stopped, StopReason::Deadline);
    assert_eq!(all.replies.len(), 3);
    slow.try_recv()
        .unwrap()
        .unwrap()
        .reply(&Record::new(b"late"))
        .unwrap();
    let (total, gathered) = scatter
        .gather_fold(
            Gather::all(Duration::from_millis(200)).stall(Duration::from_millis(50)),
            0,
            |n, r| n + r.value().len(),
        )
        .unwrap();
    assert_eq!(gathered.replies.len(), 4);
    assert_eq!(gathered.missing, vec!["node4".to_owned()]);
    assert!(total > 0);
}

#[test]
fn groups_of_a_topic_answer_a_scatter_and_max_replies_returns_only_the_first_n() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let topic = bus.topic("quotes").unwrap();
    let responders: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|g| topic.responder(g, logbus::GroupOptions::default()).unwrap())
        .collect();
    let requester = bus.requester("buyer").unwrap();
    let scatter = requester
        .scatter(Recipients::GroupsOf("quotes".into()), &Record::new(b"price?"))
        .unwrap();
    assert_eq!(scatter.recipients(), ["a", "b", "c"]);
    for responder in &responders {
        let request = responder.try_recv().unwrap().unwrap();
        request.reply(&Record::new(b"10")).unwrap();
    }
    let all = scatter.gather(Gather::all(Duration::from_secs(5))).unwrap();
    assert_eq!(all.stopped, StopReason::All);
    let mut from: Vec<_> = all.replies.iter().map(|r| r.from().unwrap().to_owned()).collect();
    from.sort();
    assert_eq!(from, ["a", "b", "c"]);
    let two = scatter
        .gather(Gather::all(Duration::from_secs(5)).max_replies(2))
        .unwrap();
    assert_eq!((two.stopped, two.replies.len()), (StopReason::MaxReplies, 2));
    assert!(two.missing.is_empty());
}
