//! Request-reply under concurrency and scatter-gather under its stop rules,
//! on the real file system.
//!
//! - Round trips: 8 requester threads and 4 responder threads on one
//!   service exchange 20k requests. Every request carries a payload unique to
//!   it and every reply echoes it, so a reply matched to the wrong request, a
//!   reply delivered to another requester's inbox, a lost reply and a
//!   duplicate all show. Three variants: each thread with its own requester
//!   name, each thread with its own handle on one requester name, and one
//!   requester shared by all threads. Topics use `Durability::Os`: nothing
//!   crashes here, the test is about matching and concurrency, and `Always`
//!   would cost some 100k fsyncs per variant.
//! - Scatter to five services, one slow and one without a responder: each
//!   stop rule (quorum, deadline, stall, max replies) stops when it should
//!   and names the missing recipients; `Recipients::GroupsOf` reaches every
//!   group of a topic; a gatherer that closes its bus and comes back with
//!   `resume_scatter` sees the replies sent while it was away; a recipient
//!   that answers twice (a redelivered request) counts once, with its first
//!   answer.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::groups::group_options;
use logbus::{
    Bus, BusOptions, CorrelationId, Durability, Gather, GroupOptions, Recipients, Record, Reply, Requester,
    Scatter, StartAt, StopReason, TopicOptions, headers,
};

const SERVICE: &str = "echo";
const REQUESTERS: usize = 8;
const RESPONDERS: usize = 4;
const REQUESTS: u64 = 20_000;
/// Requests a thread sends before collecting their replies.
const WINDOW: usize = 25;
/// Generous: only a lost reply should ever hit it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn os_durability() -> BusOptions {
    BusOptions::default().topic_defaults(TopicOptions::default().durability(Durability::Os))
}

/// How the requester threads get their requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handles {
    /// `bus.requester("client-<t>")` per thread: eight inboxes.
    OwnNames,
    /// `bus.requester("client")` per thread: eight handles, one inbox.
    SameName,
    /// One `bus.requester("client")` cloned into every thread.
    Shared,
}

impl Handles {
    fn name(self, thread: usize) -> String {
        match self {
            Handles::OwnNames => format!("client-{thread}"),
            Handles::SameName | Handles::Shared => "client".to_owned(),
        }
    }
}

/// The payload of request `seq` of `thread`: names the inbox it expects
/// its reply in, and a random tag so no two runs' payloads coincide.
fn payload(inbox: &str, thread: usize, seq: u64, tag: u64) -> String {
    format!("{inbox}|{thread}|{seq}|{tag:016x}")
}

fn echo(payload: &[u8]) -> Vec<u8> {
    [b"re:".as_slice(), payload].concat()
}

/// Serves requests until `done`; checks each request is a first delivery
/// addressed to the inbox its payload names.
fn responder_loop(bus: &Bus, done: &AtomicBool) -> u64 {
    let responder = bus.responder(SERVICE).expect("responder");
    let mut served = 0;
    while !done.load(Ordering::SeqCst) {
        let Some(request) = responder.recv(Duration::from_millis(20)).expect("recv") else {
            continue;
        };
        assert_eq!(request.attempt(), 1, "redelivered without a failure");
        let value = request.record().value().to_vec();
        let inbox = std::str::from_utf8(&value)
            .expect("utf-8")
            .split('|')
            .next()
            .expect("inbox");
        assert_eq!(request.reply_to(), Some(format!("{inbox}.inbox").as_str()));
        assert!(request.correlation_id().is_some());
        request.reply(&Record::new(&echo(&value))).expect("reply");
        served += 1;
    }
    served
}

/// Sends `count` requests in windows and checks every reply.
fn requester_loop(requester: &Requester, inbox: &str, thread: usize, count: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seq = 0;
    while seq < count {
        let mut window: Vec<(CorrelationId, String)> = Vec::with_capacity(WINDOW);
        while window.len() < WINDOW && seq < count {
            let body = payload(inbox, thread, seq, rng.u64(..));
            let id = requester
                .send_request(SERVICE, &Record::new(&body))
                .expect("send");
            window.push((id, body));
            seq += 1;
        }
        rng.shuffle(&mut window);
        for (id, body) in window {
            let reply = requester.reply_for(id, REPLY_TIMEOUT).expect("reply");
            check_reply(&reply, id, body.as_bytes());
            let all = requester.replies(id).expect("replies");
            assert_eq!(all.len(), 1, "request {body} answered {} times", all.len());
        }
    }
}

fn check_reply(reply: &Reply, id: CorrelationId, body: &[u8]) {
    assert_eq!(
        reply.value(),
        echo(body).as_slice(),
        "reply to {id} does not echo its request"
    );
    let header = reply
        .record()
        .header(headers::CORRELATION_ID)
        .expect("correlation-id header");
    assert_eq!(header, id.to_string().as_bytes());
    assert_eq!(reply.from(), Some(SERVICE));
    assert!(reply.error().is_none());
}

fn round_trips(handles: Handles) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::open(dir.path(), os_durability()).expect("open");
    let shared = bus.requester("client").expect("requester");
    // Keeps the group open (and its counters) after the responder threads end.
    let service = bus.responder(SERVICE).expect("responder");
    let done = AtomicBool::new(false);
    let per_thread = REQUESTS / REQUESTERS as u64;
    let started = Instant::now();
    let served: Vec<u64> = std::thread::scope(|scope| {
        let responders: Vec<_> = (0..RESPONDERS)
            .map(|_| scope.spawn(|| responder_loop(&bus, &done)))
            .collect();
        let requesters: Vec<_> = (0..REQUESTERS)
            .map(|thread| {
                let (bus, shared) = (&bus, &shared);
                scope.spawn(move || {
                    let name = handles.name(thread);
                    let requester = match handles {
                        Handles::Shared => shared.clone(),
                        _ => bus.requester(&name).expect("requester"),
                    };
                    requester_loop(&requester, &name, thread, per_thread, 0x5eed + thread as u64);
                })
            })
            .collect();
        // Every requester has its replies (or failed): the responders stop.
        let outcomes: Vec<_> = requesters.into_iter().map(|r| r.join()).collect();
        done.store(true, Ordering::SeqCst);
        let served = responders
            .into_iter()
            .map(|r| r.join().expect("responder thread"))
            .collect();
        for outcome in outcomes {
            outcome.expect("requester thread");
        }
        served
    });
    let elapsed = started.elapsed();
    assert_eq!(served.iter().sum::<u64>(), REQUESTS);
    // One reply per request, each in the inbox of its requester, beside
    // the note `send_request` wrote there first (`Requester::pending`).
    for thread in 0..REQUESTERS {
        let name = handles.name(thread);
        let requests = match handles {
            Handles::OwnNames => per_thread,
            Handles::SameName | Handles::Shared => REQUESTS,
        };
        let inbox = bus.topic(&format!("{name}.inbox")).expect("inbox");
        assert_eq!(
            inbox.end_offset(),
            2 * requests,
            "notes and replies in {name}.inbox"
        );
    }
    let stats = service.group().stats().expect("stats");
    assert_eq!(
        (stats.acked, stats.redeliveries, stats.low_watermark),
        (REQUESTS, 0, REQUESTS)
    );
    bus.close().expect("close");
    eprintln!(
        "{handles:?}: {REQUESTS} round trips ({REQUESTERS} requester x {RESPONDERS} responder threads, \
         Durability::Os) in {elapsed:.2?}: {:.0} requests/s; served per responder {served:?}",
        REQUESTS as f64 / elapsed.as_secs_f64()
    );
}

#[test]
fn twenty_thousand_round_trips_from_eight_requesters_with_their_own_names_match_by_id_and_content() {
    round_trips(Handles::OwnNames);
}

#[test]
fn twenty_thousand_round_trips_through_eight_handles_on_one_requester_name_match_by_id_and_content() {
    round_trips(Handles::SameName);
}

#[test]
fn twenty_thousand_round_trips_through_one_shared_requester_match_by_id_and_content() {
    round_trips(Handles::Shared);
}

// ---------------------------------------------------------- scatter-gather

const NODES: [&str; 5] = ["node0", "node1", "node2", "node3", "node4"];
/// Allowed lateness of a gather past its deadline or stall time (a loaded
/// two-core machine running a debug build).
const SLACK: Duration = Duration::from_millis(400);

fn nodes() -> Vec<String> {
    NODES.iter().map(|s| s.to_string()).collect()
}

/// Answers one request to `service` as soon as it arrives.
fn answer_once(bus: &Bus, service: &str) -> std::thread::JoinHandle<()> {
    answer_when(bus, service, None)
}

/// Answers one request to `service`: takes it at once, replies once `go`
/// says so (at once without a gate).
fn answer_when(
    bus: &Bus,
    service: &str,
    go: Option<std::sync::mpsc::Receiver<()>>,
) -> std::thread::JoinHandle<()> {
    let responder = bus.responder(service).expect("responder");
    std::thread::spawn(move || {
        let request = responder
            .recv(Duration::from_secs(30))
            .expect("recv")
            .expect("a request");
        if let Some(go) = go {
            let _ = go.recv();
        }
        let body = format!(
            "{}:{}",
            responder.group().name(),
            String::from_utf8_lossy(request.record().value())
        );
        request.reply(&Record::new(&body)).expect("reply");
    })
}

/// A vote scattered by requester `gatherer` to five nodes on a fresh bus:
/// node0-2 answer at once, node3 answers when released, node4 has no
/// responder.
struct Vote {
    scatter: Scatter,
    requester: Requester,
    /// Lets node3 answer.
    release: std::sync::mpsc::Sender<()>,
    /// The nodes' threads.
    threads: Vec<std::thread::JoinHandle<()>>,
    _bus: Bus,
    _dir: tempfile::TempDir,
}

impl Vote {
    fn scatter() -> Vote {
        let dir = tempfile::tempdir().expect("tempdir");
        let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
        let (release, gate) = std::sync::mpsc::channel();
        let mut threads: Vec<_> = NODES[..3].iter().map(|s| answer_once(&bus, s)).collect();
        threads.push(answer_when(&bus, NODES[3], Some(gate)));
        let requester = bus.requester("gatherer").expect("requester");
        let scatter = requester
            .scatter(Recipients::Services(nodes()), &Record::new(b"vote"))
            .expect("scatter");
        Vote {
            scatter,
            requester,
            release,
            threads,
            _bus: bus,
            _dir: dir,
        }
    }
}

fn senders(gathered: &logbus::Gathered) -> Vec<String> {
    let mut from: Vec<String> = gathered
        .replies
        .iter()
        .map(|r| r.from().expect("from").to_owned())
        .collect();
    from.sort();
    from
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn quorum_of_three_out_of_five_returns_at_once_and_names_the_slow_and_the_dead_recipient() {
    let vote = Vote::scatter();
    let started = Instant::now();
    let gathered = vote
        .scatter
        .gather(Gather::all(Duration::from_secs(20)).quorum(3))
        .expect("gather");
    let elapsed = started.elapsed();
    assert_eq!(gathered.stopped, StopReason::Quorum);
    assert!(elapsed < Duration::from_secs(5), "quorum took {elapsed:?}");
    assert_eq!(senders(&gathered), strings(&NODES[..3]));
    assert_eq!(gathered.missing, strings(&NODES[3..]));
    for reply in &gathered.replies {
        assert_eq!(
            reply.value(),
            format!("{}:vote", reply.from().expect("from")).as_bytes()
        );
    }
    // The slow node answers: a second gather with a quorum of four sees it.
    vote.release.send(()).expect("release node3");
    let gathered = vote
        .scatter
        .gather(Gather::all(Duration::from_secs(20)).quorum(4))
        .expect("gather");
    assert_eq!(
        (gathered.stopped, gathered.missing.clone()),
        (StopReason::Quorum, strings(&["node4"]))
    );
    assert_eq!(senders(&gathered), strings(&NODES[..4]));
    vote.threads.into_iter().for_each(|t| t.join().expect("node"));
    eprintln!("quorum of 3 of 5 in {elapsed:?}");
}

#[test]
fn gather_all_stops_at_its_deadline_not_before_and_not_much_after_with_partial_results() {
    let vote = Vote::scatter();
    let deadline = Duration::from_millis(600);
    let started = Instant::now();
    let gathered = vote.scatter.gather(Gather::all(deadline)).expect("gather");
    let elapsed = started.elapsed();
    assert_eq!(gathered.stopped, StopReason::Deadline);
    assert!(
        elapsed >= deadline,
        "stopped {elapsed:?} into a {deadline:?} deadline"
    );
    assert!(
        elapsed < deadline + SLACK,
        "stopped {elapsed:?} into a {deadline:?} deadline"
    );
    assert_eq!(senders(&gathered), strings(&NODES[..3]));
    assert_eq!(gathered.missing, strings(&NODES[3..]));
    vote.release.send(()).expect("release node3");
    vote.threads.into_iter().for_each(|t| t.join().expect("node"));
    eprintln!("deadline {deadline:?}: returned after {elapsed:?}");
}

#[test]
fn stall_stops_after_the_idle_time_since_the_last_reply_or_since_the_start() {
    let vote = Vote::scatter();
    // Wait for the three fast replies, so the idle time starts now.
    let fast = vote
        .scatter
        .gather(Gather::all(Duration::from_secs(20)).quorum(3))
        .expect("gather");
    assert_eq!(fast.replies.len(), 3);
    let idle = Duration::from_millis(300);
    let started = Instant::now();
    let gathered = vote
        .scatter
        .gather(Gather::all(Duration::from_secs(20)).stall(idle))
        .expect("gather");
    let elapsed = started.elapsed();
    assert_eq!(gathered.stopped, StopReason::Stalled);
    assert!(
        elapsed >= idle && elapsed < idle + SLACK,
        "stalled after {elapsed:?}"
    );
    assert_eq!(senders(&gathered), strings(&NODES[..3]));
    // Nobody at all answers: stalled from the start, not at the deadline.
    let silent = vote
        .requester
        .scatter(
            Recipients::Services(strings(&["node4"])),
            &Record::new(b"anyone?"),
        )
        .expect("scatter");
    let started = Instant::now();
    let gathered = silent
        .gather(Gather::all(Duration::from_secs(20)).stall(idle))
        .expect("gather");
    let from_start = started.elapsed();
    assert_eq!(
        (gathered.stopped, gathered.replies.len()),
        (StopReason::Stalled, 0)
    );
    assert!(
        from_start >= idle && from_start < idle + SLACK,
        "stalled after {from_start:?}"
    );
    vote.release.send(()).expect("release node3");
    vote.threads.into_iter().for_each(|t| t.join().expect("node"));
    eprintln!("stall {idle:?}: after the last reply {elapsed:?}, with no reply at all {from_start:?}");
}

#[test]
fn max_replies_stops_once_that_many_recipients_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
    let gates: Vec<_> = (0..3).map(|_| std::sync::mpsc::channel()).collect();
    let (releases, gates): (Vec<_>, Vec<_>) = gates.into_iter().unzip();
    let threads: Vec<_> = NODES[..3]
        .iter()
        .zip(gates)
        .map(|(node, gate)| answer_when(&bus, node, Some(gate)))
        .collect();
    let requester = bus.requester("gatherer").expect("requester");
    let scatter = requester
        .scatter(Recipients::Services(nodes()), &Record::new(b"vote"))
        .expect("scatter");
    // Two of the five answer; the rule stops there, long before the deadline.
    releases[0].send(()).expect("release");
    releases[2].send(()).expect("release");
    let started = Instant::now();
    let gathered = scatter
        .gather(Gather::all(Duration::from_secs(20)).max_replies(2))
        .expect("gather");
    assert_eq!(gathered.stopped, StopReason::MaxReplies);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(senders(&gathered), strings(&["node0", "node2"]));
    assert_eq!(gathered.missing, strings(&["node1", "node3", "node4"]));
    releases[1].send(()).expect("release");
    threads.into_iter().for_each(|t| t.join().expect("node"));
    let (total, gathered) = scatter
        .gather_fold(Gather::all(Duration::from_millis(100)), 0, |n, r| {
            n + r.value().len()
        })
        .expect("gather");
    assert_eq!(gathered.replies.len(), 3);
    assert_eq!(total, 3 * "nodeX:vote".len());
}

/// Answers one request to `topic` as consumer group `group`, by hand (a
/// `Responder` always replies as the service's own group).
fn answer_as_group(bus: &Bus, topic: &str, group: &str) -> std::thread::JoinHandle<()> {
    let group = bus
        .topic(topic)
        .expect("topic")
        .group(group, GroupOptions::default())
        .expect("group");
    let bus = bus.clone();
    std::thread::spawn(move || {
        let delivery = group
            .recv(Duration::from_secs(30))
            .expect("recv")
            .expect("a request");
        let record = delivery.record();
        let id = record
            .header(headers::CORRELATION_ID)
            .expect("correlation-id")
            .to_vec();
        let reply_to =
            String::from_utf8(record.header("reply-to").expect("reply-to").to_vec()).expect("utf-8");
        let body = format!("{} saw {}", group.name(), String::from_utf8_lossy(record.value()));
        let reply = Record::new(&body)
            .header(headers::CORRELATION_ID, &id)
            .header(headers::REPLIER, group.name());
        bus.topic(&reply_to)
            .expect("inbox")
            .publish(&reply)
            .expect("reply");
        delivery.ack().expect("ack");
    })
}

#[test]
fn scatter_to_the_groups_of_a_topic_reaches_each_of_its_three_groups_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
    let groups = ["audit", "billing", "shipping"];
    let threads: Vec<_> = groups
        .iter()
        .map(|g| answer_as_group(&bus, "orders", g))
        .collect();
    // A subscription is not a recipient.
    let _tail = bus
        .topic("orders")
        .expect("topic")
        .subscribe("tail", StartAt::Earliest)
        .expect("subscribe");
    let requester = bus.requester("gatherer").expect("requester");
    let scatter = requester
        .scatter(Recipients::GroupsOf("orders".into()), &Record::new(b"order 7"))
        .expect("scatter");
    assert_eq!(scatter.recipients(), strings(&groups).as_slice());
    assert_eq!(
        bus.topic("orders").expect("topic").end_offset(),
        1,
        "published once"
    );
    let gathered = scatter
        .gather(Gather::all(Duration::from_secs(20)))
        .expect("gather");
    assert_eq!(gathered.stopped, StopReason::All);
    assert_eq!(senders(&gathered), strings(&groups));
    assert!(gathered.missing.is_empty());
    for reply in &gathered.replies {
        assert_eq!(
            reply.value(),
            format!("{} saw order 7", reply.from().expect("from")).as_bytes()
        );
    }
    threads.into_iter().for_each(|t| t.join().expect("group"));
}

#[test]
fn gatherer_that_restarts_resumes_its_scatter_and_sees_the_replies_sent_while_it_was_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = strings(&["a", "b", "c"]);
    // Before the restart: the scatter is sent and `a` answers.
    let id = {
        let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
        let a = answer_once(&bus, "a");
        let requester = bus.requester("gatherer").expect("requester");
        let scatter = requester
            .scatter(Recipients::Services(services.clone()), &Record::new(b"q"))
            .expect("scatter");
        let gathered = scatter
            .gather(Gather::all(Duration::from_secs(20)).quorum(1))
            .expect("gather");
        assert_eq!(senders(&gathered), strings(&["a"]));
        a.join().expect("a");
        bus.close().expect("close");
        scatter.id()
    };
    // While the gatherer is away (its bus closed), `b` and `c` answer.
    {
        let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
        let threads = [answer_once(&bus, "b"), answer_once(&bus, "c")];
        threads.into_iter().for_each(|t| t.join().expect("node"));
        bus.close().expect("close");
    }
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
    let requester = bus.requester("gatherer").expect("requester");
    let scatter = requester.resume_scatter_with(id, services.clone());
    let started = Instant::now();
    let gathered = scatter
        .gather(Gather::all(Duration::from_secs(20)))
        .expect("gather");
    assert_eq!(gathered.stopped, StopReason::All);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(senders(&gathered), services);
    bus.close().expect("close");
}

#[test]
fn recipient_that_answers_a_redelivered_request_twice_counts_once_with_its_first_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::open(dir.path(), BusOptions::default()).expect("open");
    let short_lease = group_options(Duration::from_millis(100), 5, Duration::ZERO);
    let twice = bus.responder_with("twice", short_lease).expect("responder");
    let others = [answer_once(&bus, "once-a"), answer_once(&bus, "once-b")];
    let requester = bus.requester("gatherer").expect("requester");
    let recipients = strings(&["twice", "once-a", "once-b"]);
    let scatter = requester
        .scatter(Recipients::Services(recipients), &Record::new(b"q"))
        .expect("scatter");
    // The first lease runs out while the first answer is being prepared:
    // the request is redelivered, and both deliveries answer.
    let first = twice
        .recv(Duration::from_secs(5))
        .expect("recv")
        .expect("first delivery");
    let second = twice
        .recv(Duration::from_secs(5))
        .expect("recv")
        .expect("redelivery after the lease");
    assert_eq!((first.attempt(), second.attempt()), (1, 2));
    let late = first.reply(&Record::new(b"first answer"));
    assert!(
        matches!(late, Err(logbus::Error::LeaseExpired { .. })),
        "{late:?}"
    );
    second.reply(&Record::new(b"second answer")).expect("reply");
    others.into_iter().for_each(|t| t.join().expect("node"));
    assert_eq!(requester.replies(scatter.id()).expect("replies").len(), 4);
    // Three recipients, three replies: the duplicate neither counts towards
    // max_replies nor replaces the first answer.
    let gathered = scatter
        .gather(Gather::all(Duration::from_secs(20)).max_replies(4))
        .expect("gather");
    assert_eq!((gathered.stopped, gathered.replies.len()), (StopReason::All, 3));
    let from_twice: Vec<&[u8]> = gathered
        .replies
        .iter()
        .filter(|r| r.from() == Some("twice"))
        .map(|r| r.value())
        .collect();
    assert_eq!(from_twice, vec![b"first answer".as_slice()]);
}
