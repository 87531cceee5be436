//! Request-reply across process deaths: requesters killed before their
//! reply exists, responders that abort while handling a request, and the
//! correlation index after unclean and clean shutdowns.
//!
//! - A requester process sends a request, prints its correlation id and is
//!   killed (`SIGKILL`) before anyone replied; a responder answers; a new
//!   requester process collects the reply by id with `reply_for`.
//! - A process filling an inbox (enough replies that the correlation index
//!   grew past its first size) is killed at random moments; its index is left
//!   unclean, is rebuilt at the next open and finds every reply the child saw;
//!   after a clean close the index is trusted and finds them too.
//! - A responder process aborts while handling a request: the next
//!   responder gets it again as attempt 2 and answers it (at-least-once). A
//!   request that crashes every responder is dead-lettered once its attempts
//!   are spent: it lands in `<service>.dlq` with its `correlation-id` and
//!   `reply-to` headers, and the requester gets `Error::Timeout` naming the
//!   id.
//! - On the simulated disk: an index marked clean may only claim inbox
//!   records that are durable, so a power loss that drops inbox records
//!   written before the clean close cannot hide later replies.
//! - A requester handle that outlives its bus fails with `Error::Closed`
//!   and leaves the index of the next bus alone.
//!
//! Children are this test binary re-executed with `--exact child_entry_point`
//! and an environment variable naming the mode (the harness is
//! `tests/common/child.rs`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{self, Finished, SIGABRT, SIGKILL, report, spawn_words};
use common::groups::group_options;
use logbus::internals::decode_correlation_header;
use logbus::storage::SimStorage;
use logbus::{
    Bus, BusOptions, CorrelationId, Durability, Error, GroupOptions, Record, Requester, StartAt,
    TopicOptions, headers,
};

const ENTRY_POINT: &str = "child_entry_point";
const SERVICE: &str = "svc";
const MAX_ATTEMPTS: u32 = 3;

fn responder_options() -> GroupOptions {
    group_options(Duration::from_secs(600), MAX_ATTEMPTS, Duration::ZERO)
}

/// Whether the requester `client`'s index file is marked clean.
fn index_is_clean(dir: &Path) -> bool {
    let bytes = std::fs::read(dir.join("state/inboxes/client/correlation.cix")).expect("index file");
    decode_correlation_header(&bytes).expect("index header").clean
}

// ------------------------------------------------------------------ child

/// Entry point of the child process; returns at once in a normal run.
#[test]
fn child_entry_point() {
    let Some((mode, dir)) = child::role() else {
        return;
    };
    let bus = Bus::open(&dir, BusOptions::default()).expect("child opens the bus");
    match mode.split(':').collect::<Vec<_>>().as_slice() {
        ["send"] => send_child(&bus),
        ["collect", id] => collect_child(&bus, id.parse().expect("an id")),
        ["fill", seed] => fill_child(&bus, seed.parse().expect("a seed")),
        ["serve"] => serve_child(&bus),
        _ => panic!("unknown child mode {mode:?}"),
    }
    bus.close().expect("child closes the bus");
}

/// Waits to be killed.
fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn send_child(bus: &Bus) {
    let requester = bus.requester("client").expect("requester");
    let id = requester
        .send_request(SERVICE, &Record::new(b"question from a doomed process"))
        .expect("send");
    report(&format!("sent {id}"));
    park_forever();
}

fn collect_child(bus: &Bus, id: CorrelationId) {
    let requester = bus.requester("client").expect("requester");
    let reply = requester.reply_for(id, Duration::from_secs(10)).expect("reply");
    let value = String::from_utf8(reply.value().to_vec()).expect("utf-8");
    report(&format!("reply {} {value}", reply.from().unwrap_or("-")));
}

/// Sends requests, answers them itself and reports each reply once
/// `reply_for` found it, until killed.
fn fill_child(bus: &Bus, seed: u64) {
    let requester = bus.requester("client").expect("requester");
    let responder = bus.responder(SERVICE).expect("responder");
    let mut rng = fastrand::Rng::with_seed(seed);
    loop {
        let batch = rng.usize(1..50);
        let ids: Vec<CorrelationId> = (0..batch)
            .map(|_| {
                requester
                    .send_request(SERVICE, &Record::new(b"fill"))
                    .expect("send")
            })
            .collect();
        // Also answers what an earlier, killed child sent but did not answer.
        while let Some(request) = responder.try_recv().expect("recv") {
            let answer = format!("answer {}", request.correlation_id().expect("id"));
            request.reply(&Record::new(&answer)).expect("reply");
        }
        for id in ids {
            let reply = requester.reply_for(id, Duration::ZERO).expect("reply");
            assert_eq!(reply.value(), format!("answer {id}").as_bytes());
            report(&format!("replied {id}"));
        }
    }
}

/// Serves one request: aborts if it asks for a crash (always for `poison`,
/// on the first attempt for `crash-once`), else answers it.
fn serve_child(bus: &Bus) {
    let responder = bus
        .responder_with(SERVICE, responder_options())
        .expect("responder");
    let Some(request) = responder.recv(Duration::from_millis(500)).expect("recv") else {
        report("none");
        return;
    };
    let value = String::from_utf8(request.record().value().to_vec()).expect("utf-8");
    let id = request.correlation_id().expect("id");
    report(&format!("got {} {id} {value}", request.attempt()));
    if value == "poison" || (value == "crash-once" && request.attempt() == 1) {
        std::process::abort();
    }
    let answer = format!("done:{value}:attempt {}", request.attempt());
    request.reply(&Record::new(&answer)).expect("reply");
    report("replied");
}

// ---------------------------------------------------------------- harness

fn open(dir: &Path) -> Bus {
    Bus::open(dir, BusOptions::default()).expect("open the bus")
}

// ------------------------------------------------------------------ tests

#[test]
fn requester_killed_before_its_reply_exists_gets_it_by_id_in_a_new_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sender = spawn_words(ENTRY_POINT, "send", dir.path());
    let id: CorrelationId = sender.read(1)[0][1].parse().expect("the child's id");
    sender.kill().expect_signal(SIGKILL);
    assert!(!index_is_clean(dir.path()), "killed while open, yet marked clean");

    let bus = open(dir.path());
    let responder = bus.responder(SERVICE).expect("responder");
    let request = responder
        .try_recv()
        .expect("recv")
        .expect("the request survived the kill");
    assert_eq!(request.correlation_id(), Some(id));
    assert_eq!(request.reply_to(), Some("client.inbox"));
    assert_eq!(request.record().value(), b"question from a doomed process");
    request
        .reply(&Record::new(b"answer for the next process"))
        .expect("reply");
    drop(responder);
    child::close(&bus);

    let events = spawn_words(ENTRY_POINT, &format!("collect:{id}"), dir.path())
        .wait()
        .expect_success();
    assert_eq!(
        events,
        vec![child::words("reply svc answer for the next process")]
    );
    assert!(index_is_clean(dir.path()), "closed cleanly, yet not marked clean");

    // The clean index is trusted at open and still answers.
    let bus = open(dir.path());
    let reply = bus
        .requester("client")
        .expect("requester")
        .reply_for(id, Duration::ZERO);
    assert_eq!(reply.expect("reply").value(), b"answer for the next process");
    child::close(&bus);
}

#[test]
fn index_left_unclean_by_kill_nine_is_rebuilt_and_finds_every_reply_and_a_clean_one_is_trusted() {
    const KILLS: u64 = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = fastrand::Rng::with_seed(0x0c1a_55e5);
    let mut seen: Vec<CorrelationId> = Vec::new();
    for kill in 0..KILLS {
        let mut child = spawn_words(ENTRY_POINT, &format!("fill:{}", rng.u64(..)), dir.path());
        // Past 512 replies the index outgrows its first 1024 slots.
        let lines = 300 + rng.usize(..400);
        child.read(lines);
        // Every line the child wrote before the kill, those read above included.
        let events = child.kill().expect_signal(SIGKILL);
        seen.extend(events.iter().map(|e| e[1].parse::<CorrelationId>().expect("id")));
        assert!(!index_is_clean(dir.path()), "kill {kill}: index marked clean");
        check_replies(dir.path(), &seen, &format!("after kill {kill}"));
        assert!(index_is_clean(dir.path()));
        check_replies(
            dir.path(),
            &seen,
            &format!("after a clean close following kill {kill}"),
        );
    }
    let bytes = std::fs::read(dir.path().join("state/inboxes/client/correlation.cix")).expect("index");
    let header = decode_correlation_header(&bytes).expect("header");
    assert!(header.capacity > 1024, "the index never grew: {header:?}");
    eprintln!(
        "{} replies found after {KILLS} kills; index {header:?}",
        seen.len()
    );
}

/// Opens the bus, finds every id's reply (exactly one), closes cleanly.
fn check_replies(dir: &Path, ids: &[CorrelationId], context: &str) {
    let bus = open(dir);
    let requester = bus.requester("client").expect("requester");
    for id in ids {
        let replies = requester.replies(*id).expect("replies");
        assert_eq!(replies.len(), 1, "{context}: replies to {id}");
        assert_eq!(replies[0].value(), format!("answer {id}").as_bytes(), "{context}");
    }
    drop(requester);
    child::close(&bus);
}

/// Runs one responder child to its end.
fn serve(dir: &Path) -> Finished<Vec<String>> {
    spawn_words(ENTRY_POINT, "serve", dir).wait()
}

/// Sends `value` to the service from requester `client` (bus closed after).
fn send(dir: &Path, value: &str) -> CorrelationId {
    let bus = open(dir);
    let id = bus
        .requester("client")
        .expect("requester")
        .send_request(SERVICE, &Record::new(value.as_bytes()))
        .expect("send");
    child::close(&bus);
    id
}

#[test]
fn responder_that_aborts_mid_request_is_replaced_and_the_request_answered_on_attempt_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = send(dir.path(), "crash-once");
    let first = serve(dir.path()).expect_signal(SIGABRT);
    assert_eq!(first, vec![child::words(&format!("got 1 {id} crash-once"))]);
    let second = serve(dir.path()).expect_success();
    assert_eq!(
        second,
        vec![
            child::words(&format!("got 2 {id} crash-once")),
            child::words("replied")
        ]
    );

    let bus = open(dir.path());
    let requester = bus.requester("client").expect("requester");
    let reply = requester.reply_for(id, Duration::from_secs(5)).expect("reply");
    assert_eq!(reply.value(), b"done:crash-once:attempt 2");
    assert_eq!(requester.replies(id).expect("replies").len(), 1);
    let responder = bus
        .responder_with(SERVICE, responder_options())
        .expect("responder");
    assert!(
        responder.try_recv().expect("recv").is_none(),
        "answered request delivered again"
    );
    child::close(&bus);
}

#[test]
fn request_that_crashes_every_responder_is_dead_lettered_with_its_id_and_the_requester_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = send(dir.path(), "poison");
    for attempt in 1..=MAX_ATTEMPTS {
        let events = serve(dir.path()).expect_signal(SIGABRT);
        assert_eq!(events, vec![child::words(&format!("got {attempt} {id} poison"))]);
    }
    // Attempts are spent: the next responder dead-letters it instead.
    let events = serve(dir.path()).expect_success();
    assert_eq!(events, vec![child::words("none")]);

    let bus = open(dir.path());
    let requester = bus.requester("client").expect("requester");
    let started = Instant::now();
    match requester.reply_for(id, Duration::from_millis(200)) {
        Err(Error::Timeout { correlation_id }) => assert_eq!(correlation_id, id.as_u128()),
        other => panic!("expected a timeout naming {id}, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The requester (or an operator) finds the request in the DLQ by its id.
    let mut dlq = bus
        .topic(&format!("{SERVICE}.dlq"))
        .expect("dlq")
        .subscribe_ephemeral(StartAt::Earliest)
        .expect("subscribe");
    let dead = dlq.try_recv().expect("recv").expect("the dead letter");
    assert!(dlq.try_recv().expect("recv").is_none(), "dead-lettered twice");
    assert_eq!(dead.value(), b"poison");
    let header = |name: &str| dead.header(name).map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(header(headers::CORRELATION_ID), Some(id.to_string()));
    assert_eq!(header(headers::REPLY_TO).as_deref(), Some("client.inbox"));
    assert_eq!(header(headers::SOURCE_TOPIC).as_deref(), Some(SERVICE));
    assert_eq!(header(headers::SOURCE_GROUP).as_deref(), Some(SERVICE));
    assert_eq!(header(headers::ATTEMPTS), Some(MAX_ATTEMPTS.to_string()));
    let failures = dead
        .headers()
        .filter(|(name, _)| *name == headers::FAILURE)
        .count();
    assert_eq!(failures, MAX_ATTEMPTS as usize, "one failure per crash");
    child::close(&bus);
}

// -------------------------------------------------------- simulated disk

const SIM_DIR: &str = "/sim/bus";

fn sim_bus(sim: &SimStorage) -> Bus {
    let topics = TopicOptions::default().durability(Durability::Os);
    let options = BusOptions::default()
        .storage(Arc::new(sim.clone()))
        .topic_defaults(topics);
    Bus::open(SIM_DIR, options).expect("open the simulated bus")
}

/// Sends `count` requests through `requester` and answers them; returns the ids.
fn round_trips(bus: &Bus, requester: &Requester, count: usize) -> Vec<CorrelationId> {
    let responder = bus.responder(SERVICE).expect("responder");
    let ids: Vec<CorrelationId> = (0..count)
        .map(|_| requester.send_request(SERVICE, &Record::new(b"q")).expect("send"))
        .collect();
    while let Some(request) = responder.try_recv().expect("recv") {
        request.reply(&Record::new(b"a")).expect("reply");
    }
    for id in &ids {
        requester.reply_for(*id, Duration::ZERO).expect("reply");
    }
    ids
}

#[test]
fn index_closed_clean_before_a_power_loss_never_hides_replies_written_after_it() {
    const SEEDS: u64 = 16;
    let (mut lost_inbox_records, mut trusted_after_power_loss) = (0, 0);
    for seed in 0..SEEDS {
        let sim = SimStorage::new();
        let bus = sim_bus(&sim);
        let requester = bus.requester("client").expect("requester");
        round_trips(&bus, &requester, 6);
        requester.close().expect("close the index");
        let indexed = bus.topic("client.inbox").expect("inbox").end_offset();
        sim.power_loss(seed);
        drop(requester);
        drop(bus);

        let index = sim.read_file(Path::new("/sim/bus/state/inboxes/client/correlation.cix"));
        let trusted = index.is_some_and(|b| decode_correlation_header(&b).is_ok_and(|h| h.clean));
        trusted_after_power_loss += u64::from(trusted);
        let bus = sim_bus(&sim);
        lost_inbox_records += indexed - bus.topic("client.inbox").expect("inbox").end_offset();
        // Whatever the power loss kept, replies written from now on are found.
        let requester = bus.requester("client").expect("requester");
        let ids = round_trips(&bus, &requester, 8);
        for id in ids {
            assert_eq!(requester.replies(id).expect("replies").len(), 1, "seed {seed}");
        }
        drop(requester);
        bus.close().expect("close");
    }
    // The index survived clean, so the next open trusted it without a scan.
    assert!(trusted_after_power_loss > 0);
    eprintln!(
        "{SEEDS} power losses: index trusted after {trusted_after_power_loss}, \
         inbox records lost {lost_inbox_records}"
    );
}

#[test]
fn requester_kept_past_its_bus_fails_with_closed_and_leaves_the_next_index_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = open(dir.path());
    let old = bus.requester("client").expect("requester");
    // Enough replies that the old handle's table grew past its first size.
    let ids = round_trips(&bus, &old, 1_200);
    child::close(&bus);
    assert!(matches!(old.replies(ids[0]), Err(Error::Closed)));
    assert!(matches!(
        old.send_request(SERVICE, &Record::new(b"q")),
        Err(Error::Closed)
    ));

    let bus = open(dir.path());
    let new = bus.requester("client").expect("requester");

    let more = round_trips(&bus, &new, 10);
    // The old handle, still alive, neither reads the remapped file nor
    // marks the new requester's index clean when dropped.
    for id in &more {
        assert!(matches!(old.replies(*id), Err(Error::Closed)));
    }
    drop(old);
    assert!(
        !index_is_clean(dir.path()),
        "a dead handle marked the live index clean"
    );
    for id in ids.iter().chain(&more) {
        assert_eq!(new.replies(*id).expect("replies").len(), 1);
    }
    drop(new);
    child::close(&bus);
    assert!(index_is_clean(dir.path()));
}
