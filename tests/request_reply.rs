//! Request-reply and scatter-gather on every backend (the embedded log on
//! the real file system, and NATS JetStream with `--features nats`): round
//! trips matched by correlation id, timeouts naming the id, late replies,
//! replies found after a restart, error replies, requests without reply
//! headers, a waiting requester woken by a close, the async form, and the
//! gather stop rules.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::futures::poll_until_ready;
use logbus::{Bus, Error, Gather, GroupOptions, Recipients, Record, StopReason, dead_letter_topic, headers};

const TIMEOUT: Duration = Duration::from_secs(10);

fn serve_echo(bus: &Bus, service: &str, count: usize) -> std::thread::JoinHandle<()> {
    let responder = bus.responder(service).unwrap();
    let name = service.to_owned();
    std::thread::spawn(move || {
        for _ in 0..count {
            let request = responder.recv(TIMEOUT).unwrap().expect("a request");
            let body = format!("{name}:{}", String::from_utf8_lossy(request.record().value()));
            request.reply(&Record::new(body.as_bytes())).unwrap();
        }
    })
}

backend_tests! {
    fn request_gets_the_reply_matched_by_correlation_id(backend: &TestBackend) {
        let bus = backend.open();
        let server = serve_echo(&bus, "echo", 3);
        let requester = bus.requester("client").unwrap();
        assert_eq!(requester.inbox(), "client.inbox");
        for i in 0..3 {
            let reply = requester
                .request("echo", &Record::new(&format!("ping {i}")), TIMEOUT)
                .unwrap();
            assert_eq!(reply.value(), format!("echo:ping {i}").as_bytes());
            assert_eq!(reply.from(), Some("echo"));
            assert!(reply.error().is_none());
        }
        server.join().unwrap();
    }

    fn timeout_names_the_id_and_a_late_reply_stays_collectable(backend: &TestBackend) {
        let bus = backend.open();
        let requester = bus.requester("client").unwrap();
        let id = requester.send_request("slow", &Record::new(b"q")).unwrap();
        let started = Instant::now();
        match requester.reply_for(id, Duration::from_millis(50)) {
            Err(Error::Timeout { correlation_id }) => assert_eq!(correlation_id, id.as_u128()),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the timeout was kept");
        let responder = bus.responder("slow").unwrap();
        let request = responder.recv(TIMEOUT).unwrap().unwrap();
        assert_eq!(request.correlation_id(), Some(id));
        assert_eq!(request.reply_to(), Some("client.inbox"));
        request.reply_err("overloaded").unwrap();
        let reply = requester.reply_for(id, TIMEOUT).unwrap();
        assert_eq!(reply.error(), Some("overloaded"));
        assert!(reply.value().is_empty());
    }

    fn a_reply_to_one_id_is_never_taken_for_another(backend: &TestBackend) {
        let bus = backend.open();
        let requester = bus.requester("client").unwrap();
        let first = requester.send_request("svc", &Record::new(b"1")).unwrap();
        let second = requester.send_request("svc", &Record::new(b"2")).unwrap();
        let responder = bus.responder("svc").unwrap();
        for _ in 0..2 {
            let request = responder.recv(TIMEOUT).unwrap().unwrap();
            let body = request.record().value().to_vec();
            request.reply(&Record::new(&body)).unwrap();
        }
        assert_eq!(requester.reply_for(second, TIMEOUT).unwrap().value(), b"2");
        assert_eq!(requester.reply_for(first, TIMEOUT).unwrap().value(), b"1");
        assert_eq!(requester.replies(first).unwrap().len(), 1);
        assert!(requester.replies(logbus::CorrelationId::new()).unwrap().is_empty());
    }

    fn requester_that_restarts_collects_the_reply_to_an_id_sent_before(backend: &TestBackend) {
        let id = {
            let bus = backend.open();
            let id = bus
                .requester("client")
                .unwrap()
                .send_request("svc", &Record::new(b"q"))
                .unwrap();
            bus.close().unwrap();
            id
        };
        {
            let bus = backend.open();
            let responder = bus.responder("svc").unwrap();
            responder
                .recv(TIMEOUT)
                .unwrap()
                .unwrap()
                .reply(&Record::new(b"answer"))
                .unwrap();
            bus.close().unwrap();
        }
        let bus = backend.open();
        let reply = bus.requester("client").unwrap().reply_for(id, TIMEOUT).unwrap();
        assert_eq!(reply.value(), b"answer");
    }

    fn reply_for_waiting_in_another_thread_returns_closed_when_the_bus_closes(backend: &TestBackend) {
        let bus = backend.open();
        let requester = bus.requester("client").unwrap();
        let id = requester.send_request("svc", &Record::new(b"q")).unwrap();
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            (requester.reply_for(id, Duration::from_secs(30)), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        bus.close().unwrap();
        let (result, waited) = waiter.join().unwrap();
        assert!(matches!(result, Err(Error::Closed)), "{result:?}");
        assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    }

    fn a_request_without_reply_headers_is_rejected_to_the_dead_letter_topic(backend: &TestBackend) {
        let bus = backend.open();
        bus.topic("svc").unwrap().publish(&Record::new(b"no headers")).unwrap();
        let responder = bus.responder("svc").unwrap();
        let request = responder.recv(TIMEOUT).unwrap().unwrap();
        assert_eq!(request.correlation_id(), None);
        assert!(matches!(
            request.reply(&Record::new(b"lost")),
            Err(Error::InvalidArgument(_))
        ));
        let mut dead = bus
            .topic(&dead_letter_topic("svc"))
            .unwrap()
            .subscribe_ephemeral(logbus::StartAt::Earliest)
            .unwrap();
        let dead = dead.recv(TIMEOUT).unwrap().expect("a dead letter");
        assert_eq!(dead.value(), b"no headers");
        assert_eq!(dead.header(headers::SOURCE_TOPIC), Some(&b"svc"[..]));
        assert!(responder.try_recv().unwrap().is_none(), "not redelivered");
    }

    fn request_async_completes_without_an_executor(backend: &TestBackend) {
        let bus = backend.open();
        let server = serve_echo(&bus, "echo", 2);
        let requester = bus.requester("client").unwrap();
        let reply = poll_until_ready(requester.request_async("echo", &Record::new(b"a"))).unwrap();
        assert_eq!(reply.value(), b"echo:a");
        let id = requester.send_request("echo", &Record::new(b"b")).unwrap();
        let reply = poll_until_ready(requester.reply_async(id)).unwrap();
        assert_eq!(reply.value(), b"echo:b");
        server.join().unwrap();
    }

    fn scatter_with_quorum_returns_in_time_with_the_missing_list(backend: &TestBackend) {
        let bus = backend.open();
        let services: Vec<String> = (0..5).map(|i| format!("node{i}")).collect();
        let servers: Vec<_> = services[..3].iter().map(|s| serve_echo(&bus, s, 1)).collect();
        let slow = bus.responder("node3").unwrap();
        let requester = bus.requester("gatherer").unwrap();
        let scatter = requester
            .scatter(Recipients::Services(services.clone()), &Record::new(b"vote"))
            .unwrap();
        let started = Instant::now();
        let gathered = scatter.gather(Gather::all(TIMEOUT).quorum(3)).unwrap();
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
        slow.recv(TIMEOUT)
            .unwrap()
            .unwrap()
            .reply(&Record::new(b"late"))
            .unwrap();
        let (total, gathered) = scatter
            .gather_fold(
                Gather::all(Duration::from_secs(2)).stall(Duration::from_millis(300)),
                0,
                |n, r| n + r.value().len(),
            )
            .unwrap();
        assert_eq!(gathered.stopped, StopReason::Stalled);
        assert_eq!(gathered.replies.len(), 4);
        assert_eq!(gathered.missing, vec!["node4".to_owned()]);
        assert!(total > 0);
    }

    fn groups_of_a_topic_answer_a_scatter_and_max_replies_returns_only_the_first_n(backend: &TestBackend) {
        let bus = backend.open();
        let topic = bus.topic("quotes").unwrap();
        let responders: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|g| topic.responder(g, GroupOptions::default()).unwrap())
            .collect();
        let requester = bus.requester("buyer").unwrap();
        let scatter = requester
            .scatter(Recipients::GroupsOf("quotes".into()), &Record::new(b"price?"))
            .unwrap();
        assert_eq!(scatter.recipients(), ["a", "b", "c"]);
        for responder in &responders {
            let request = responder.recv(TIMEOUT).unwrap().unwrap();
            request.reply(&Record::new(b"10")).unwrap();
        }
        let all = scatter.gather(Gather::all(TIMEOUT)).unwrap();
        assert_eq!(all.stopped, StopReason::All);
        let mut from: Vec<_> = all.replies.iter().map(|r| r.from().unwrap().to_owned()).collect();
        from.sort();
        assert_eq!(from, ["a", "b", "c"]);
        let two = scatter.gather(Gather::all(TIMEOUT).max_replies(2)).unwrap();
        assert_eq!((two.stopped, two.replies.len()), (StopReason::MaxReplies, 2));
        assert!(two.missing.is_empty());
    }

    fn a_gatherer_that_restarts_resumes_with_the_replies_already_given(backend: &TestBackend) {
        let (id, recipients) = {
            let bus = backend.open();
            let requester = bus.requester("gatherer").unwrap();
            let recipients = vec!["x".to_owned(), "y".to_owned()];
            for service in &recipients {
                bus.responder(service).unwrap(); // the groups exist before the scatter
            }
            let scatter = requester
                .scatter(Recipients::Services(recipients.clone()), &Record::new(b"q"))
                .unwrap();
            let x = bus.responder("x").unwrap();
            x.recv(TIMEOUT).unwrap().unwrap().reply(&Record::new(b"from x")).unwrap();
            bus.close().unwrap();
            (scatter.id(), recipients)
        };
        let bus = backend.open();
        let y = bus.responder("y").unwrap();
        y.recv(TIMEOUT).unwrap().unwrap().reply(&Record::new(b"from y")).unwrap();
        let scatter = bus.requester("gatherer").unwrap().resume_scatter_with(id, recipients);
        let all = scatter.gather(Gather::all(TIMEOUT)).unwrap();
        assert_eq!(all.stopped, StopReason::All);
        assert_eq!(all.replies.len(), 2);
    }
}
