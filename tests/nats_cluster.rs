//! Failover of a NATS cluster, through the public API a user holds: three
//! `nats-server` processes on loopback joined by cluster routes, a bus
//! connected to all three (`Bus::connect_nats` with `replicas(3)`), one
//! topic whose stream has three replicas. A producer publishes numbered
//! records without pause, a consumer group (two receivers) receives and
//! acks them and a durable subscription reads and commits them; the
//! stream's leader is killed in the middle of it. Publishing and consuming
//! go on after the kill (every call retried through the leader election),
//! then the producer stops and the group and the subscription drain.
//!
//! A publish that returned `Ok(offset)` is acknowledged: the test asserts
//! that every acknowledged number reached the group (received and acked)
//! and the subscription at least once, that the group received numbers
//! published after the kill while the producer was still running, and
//! that the subscription saw every offset, the acknowledged ones holding
//! their numbers. A publish that failed during the failover may still have
//! been stored, and the record is published again, so duplicates are
//! allowed (and counted).
//!
//! An ack that failed during the failover (its confirmation did not come)
//! may still have been applied by the server: then no redelivery comes.
//! A record the group received counts as acked when its ack returned `Ok`
//! or, its ack having failed, when the server's ack floor of the group's
//! consumer is past its offset (every record below the floor is acked;
//! the group never naks, and with 100 attempts nothing is termed). A
//! number the group never received is lost, whatever the server says.
//!
//! The phases are bounded by what the backend guarantees (docs/NATS.md,
//! cluster failover), not by what one run took: each R3 stream and
//! consumer is a Raft group, whose followers wait 4–9 s without the
//! leader's heartbeat before they campaign, a split vote costs one more
//! round, and then a call in flight ends within the client's timeout or
//! the pull grace.
//!
//! This test found that a pull in flight during the failover may never be
//! answered: every pull now gives up a few seconds after its expiry
//! (`PULL_GRACE` in `src/nats/consumer.rs`).
//!
//! Every wait is bounded: a call that hangs, a worker that panics or a
//! phase that overruns fails the test with what each worker is doing and
//! the server's view of the stream and its consumers.
//!
//! Without `nats-server` on PATH the test skips loudly, except under CI
//! (`CI` set), where that is a failure.
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logbus::nats::{NatsClient, NatsOptions, group_consumer_name, subscription_consumer_name};
use logbus::{Backoff, Bus, Error, GroupOptions, Record, RetryPolicy, StartAt, StoredRecord, Topic};

#[path = "common/nats_server.rs"]
mod nats_server;

use nats_server::{Server, cluster, have_nats_server};

const TOPIC: &str = "ledger";
/// How long the client waits for each answer of the server.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Each receive waits at most this long, so the threads see `stop` soon.
const RECV_WAIT: Duration = Duration::from_millis(300);
/// Pause between transient errors (no leader during the election).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Publishing before the kill, and at least this long after it.
const BEFORE_KILL: Duration = Duration::from_secs(3);
const AFTER_KILL: Duration = Duration::from_secs(4);
/// The group's lease (AckWait): an unacked delivery comes back after it.
const LEASE: Duration = Duration::from_secs(2);
/// nats-server's longest Raft election timeout (`maxElectionTimeoutDefault`
/// in server/raft.go, 2.9 and later): a follower that lost the leader's
/// heartbeat campaigns after a random 4–9 s.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(9);
/// How long logbus waits for a pull's answer past its expiry (`PULL_GRACE`
/// in src/nats/consumer.rs): a pull sent to the dead leader ends then.
const PULL_GRACE: Duration = Duration::from_secs(5);
/// Election rounds allowed. Raft bounds none: a round that elects nobody
/// (a split vote, or a candidate whose log is behind) starts another, and
/// a loaded machine makes that likelier. On a loaded 2-core machine the
/// stream once had no leader for 32 s (publishes failing with "no
/// responders" until 35.6 s after the kill): four rounds and more.
const ELECTION_ROUNDS: u32 = 5;
/// Room for a loaded machine (2 cores shared with other test suites):
/// processes scheduled late, answers sent late.
const LOAD_SLACK: Duration = Duration::from_secs(5);
/// Bounds of each phase: failing past them is a hang, said as such.
const SETUP_DEADLINE: Duration = Duration::from_secs(20);
/// From the kill until every side made progress, as the backend bounds it:
/// a new leader after `ELECTION_ROUNDS` full election timeouts (the
/// stream's and each consumer's Raft groups elect in parallel), then a
/// call in flight ends within the client's timeout or a pull within its
/// wait and grace, and a delivery a lost pull took comes back after the
/// lease. About 60 s; runs take 4–11 s, under load up to 21 s (the group)
/// and 35.6 s (the stream).
const RECOVERY_DEADLINE: Duration = ELECTION_TIMEOUT
    .saturating_mul(ELECTION_ROUNDS)
    .saturating_add(TIMEOUT)
    .saturating_add(RECV_WAIT)
    .saturating_add(PULL_GRACE)
    .saturating_add(LEASE)
    .saturating_add(LOAD_SLACK);
/// The drain's bound once the producer stopped, plus `DRAIN_PER_RECORD`
/// for each acknowledged number the group had not consumed yet then: the
/// producer keeps publishing while the group waits for its consumer's
/// leader, so a long election leaves thousands behind (the group takes
/// some 500 a second under load; this allows 100).
const DRAIN_DEADLINE: Duration = Duration::from_secs(25);
const DRAIN_PER_RECORD: Duration = Duration::from_millis(10);
/// A receive, commit or ack that has not returned after this long hangs:
/// every call is bounded by `RECV_WAIT` or `TIMEOUT` (a publish resent on
/// "no responders" by twice `TIMEOUT`, a pull whose answer is lost by
/// `RECV_WAIT + PULL_GRACE`).
const HUNG: Duration = Duration::from_secs(15);
/// How often the drain asks the server for the group's ack floor while
/// only records whose ack failed are missing.
const ACK_FLOOR_POLL: Duration = Duration::from_millis(500);

/// Retries `f` on any error until `deadline` (cluster formation, leader
/// election), then fails with the last error.
fn retry<T>(what: &str, deadline: Instant, mut f: impl FnMut() -> logbus::Result<T>) -> T {
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        match f() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                if attempts == 1 || attempts.is_multiple_of(10) {
                    eprintln!("{what}: {e} (attempt {attempts}, retrying)");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("{what}: still failing after {attempts} attempts: {e}"),
        }
    }
}

/// True for the errors a failover may cause; anything else fails the test.
fn transient(error: &Error) -> bool {
    matches!(error, Error::Unavailable { .. } | Error::Backend { .. })
}

/// Since when a worker's calls fail (transient errors only).
#[derive(Default)]
struct Failing {
    since: Option<Instant>,
}

impl Failing {
    /// A call succeeded: how long the calls had been failing, if they were.
    fn ok(&mut self) -> Option<Duration> {
        self.since.take().map(|since| since.elapsed())
    }

    /// A call failed: a transient error is counted in `errors` (every tenth
    /// printed) and followed by a pause, unless the calls have failed for
    /// longer than `RECOVERY_DEADLINE`; any other error fails the test.
    fn failed(&mut self, who: &str, error: Error, errors: &AtomicU64) {
        assert!(transient(&error), "{who}: unexpected error {error}");
        let since = *self.since.get_or_insert_with(Instant::now);
        if errors.fetch_add(1, Ordering::AcqRel).is_multiple_of(10) {
            eprintln!("{who}: {error} (retrying)");
        }
        assert!(
            since.elapsed() < RECOVERY_DEADLINE,
            "{who} has failed for {:?}: {error}",
            since.elapsed()
        );
        std::thread::sleep(RETRY_PAUSE);
    }
}

fn number_of(record: &StoredRecord) -> u64 {
    let text = std::str::from_utf8(record.value()).expect("utf-8 value");
    text.strip_prefix("entry ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected record {text:?}"))
}

/// What the threads record, read by the main thread as they run.
#[derive(Default)]
struct Tally {
    /// Acknowledged publishes: number -> offset.
    published: Mutex<BTreeMap<u64, u64>>,
    /// Publishes that failed (not acknowledged) and were retried.
    publish_errors: AtomicU64,
    /// Numbers the group received, with how many times each.
    group_received: Mutex<BTreeMap<u64, u32>>,
    /// Numbers whose ack returned Ok at least once.
    group_acked: Mutex<BTreeSet<u64>>,
    /// Records the group received whose ack failed: offset -> number. The
    /// server may have applied the ack anyway (then it never redelivers).
    group_ack_failed: Mutex<BTreeMap<u64, u64>>,
    /// Numbers received by the group, whose ack failed but which are below
    /// the ack floor of the group's consumer (the server has the ack).
    group_acked_by_server: Mutex<BTreeSet<u64>>,
    group_errors: AtomicU64,
    ack_errors: AtomicU64,
    /// Offsets the subscription received, with their numbers.
    subscription_received: Mutex<BTreeMap<u64, u64>>,
    subscription_errors: AtomicU64,
    /// Times an offset came again (received before a failed commit).
    subscription_repeats: AtomicU64,
    /// The next number the producer publishes.
    next_number: AtomicU64,
    /// Per worker: the call it is in (or last made), since when, and
    /// whether it returned.
    calls: Mutex<BTreeMap<&'static str, Call>>,
    /// Set once the producer must stop; `done` once everything must stop.
    stop_producing: AtomicBool,
    done: AtomicBool,
}

/// A worker's current (or last) call into the bus.
struct Call {
    what: &'static str,
    since: Instant,
    returned: bool,
}

impl Tally {
    /// Runs `f`, the call `what` of the worker `who`, noting it in `calls`.
    fn call<T>(&self, who: &'static str, what: &'static str, f: impl FnOnce() -> T) -> T {
        let call = Call {
            what,
            since: Instant::now(),
            returned: false,
        };
        self.calls.lock().unwrap().insert(who, call);
        let result = f();
        let mut calls = self.calls.lock().unwrap();
        let call = calls.get_mut(who).unwrap();
        (call.returned, call.since) = (true, Instant::now());
        result
    }

    /// What each worker is doing, and the first call that has not returned
    /// for far longer than its timeout (a hang).
    fn calls_status(&self) -> (String, Option<String>) {
        let calls = self.calls.lock().unwrap();
        let mut hung = None;
        let status = calls
            .iter()
            .map(|(who, call)| {
                let elapsed = call.since.elapsed();
                match call.returned {
                    true => format!("{who}: {} returned {elapsed:.1?} ago", call.what),
                    false => {
                        if elapsed > HUNG && hung.is_none() {
                            hung = Some(format!("{who}: {} has not returned for {elapsed:.1?}", call.what));
                        }
                        format!("{who}: in {} for {elapsed:.1?}", call.what)
                    }
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        (status, hung)
    }
    fn acked_numbers(&self) -> BTreeSet<u64> {
        self.published.lock().unwrap().keys().copied().collect()
    }

    fn subscription_numbers(&self) -> BTreeSet<u64> {
        self.subscription_received
            .lock()
            .unwrap()
            .values()
            .copied()
            .collect()
    }

    /// Numbers the group received and acked: its ack returned `Ok`, or
    /// it failed and the server's ack floor is past the record.
    fn group_consumed(&self) -> BTreeSet<u64> {
        let acked = self.group_acked.lock().unwrap();
        let by_server = self.group_acked_by_server.lock().unwrap();
        acked.union(&by_server).copied().collect()
    }

    /// The acknowledged numbers the group has not consumed yet, and those
    /// the subscription has not received.
    fn missing(&self) -> (BTreeSet<u64>, BTreeSet<u64>) {
        let acked = self.acked_numbers();
        let group = self.group_consumed();
        let subscription = self.subscription_numbers();
        (
            acked.difference(&group).copied().collect(),
            acked.difference(&subscription).copied().collect(),
        )
    }

    /// Counts as consumed each number the group received whose ack failed
    /// and whose record is below `ack_floor` (the stream sequence of the
    /// group consumer's ack floor: every offset below it is acked); the
    /// numbers newly counted.
    fn settle_by_ack_floor(&self, ack_floor: u64) -> Vec<u64> {
        let failed = self.group_ack_failed.lock().unwrap();
        let mut by_server = self.group_acked_by_server.lock().unwrap();
        failed
            .range(..ack_floor)
            .filter(|&(_, &number)| by_server.insert(number))
            .map(|(_, &number)| number)
            .collect()
    }
}

/// Publishes `entry 0`, `entry 1`, ... until told to stop; a number that
/// failed to publish is published again until acknowledged.
fn producer(topic: Topic, tally: Arc<Tally>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut number = 0;
        let mut failing = Failing::default();
        while !tally.stop_producing.load(Ordering::Acquire) {
            tally.next_number.store(number, Ordering::Release);
            let value = format!("entry {number}");
            match tally.call("producer", "Topic::publish", || {
                topic.publish(&Record::new(&value))
            }) {
                Ok(offset) => {
                    if let Some(failed_for) = failing.ok() {
                        eprintln!("producer: publishing again after {failed_for:?}");
                    }
                    tally.published.lock().unwrap().insert(number, offset);
                    number += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => failing.failed(&format!("publish {number}"), e, &tally.publish_errors),
            }
        }
    })
}

/// A receiver of the group: receives, records and acks until `done`.
fn group_receiver(id: &'static str, group: logbus::Group, tally: Arc<Tally>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut failing = Failing::default();
        while !tally.done.load(Ordering::Acquire) {
            match tally.call(id, "Group::recv(300ms)", || group.recv(RECV_WAIT)) {
                Ok(Some(delivery)) => {
                    failing.ok();
                    let number = number_of(delivery.record());
                    let offset = delivery.record().offset();
                    *tally.group_received.lock().unwrap().entry(number).or_default() += 1;
                    match tally.call(id, "Delivery::ack", || delivery.ack()) {
                        Ok(()) => {
                            tally.group_acked.lock().unwrap().insert(number);
                        }
                        Err(e) if transient(&e) => {
                            // Unknown: if the server did not apply the ack,
                            // it delivers the record again once the lease
                            // expires; if it did, its ack floor passes the
                            // offset (checked by the drain).
                            tally.group_ack_failed.lock().unwrap().insert(offset, number);
                            if tally.ack_errors.fetch_add(1, Ordering::AcqRel).is_multiple_of(10) {
                                eprintln!(
                                    "{id}: ack {number} (offset {offset}): {e} \
                                     (redelivered later, unless the server applied it)"
                                );
                            }
                        }
                        Err(e) => panic!("{id}: ack {number}: unexpected error {e}"),
                    }
                }
                Ok(None) => {
                    failing.ok();
                }
                Err(e) => failing.failed(&format!("{id}: recv"), e, &tally.group_errors),
            }
        }
    })
}

/// The durable subscription `audit`: receives in order, commits every 50
/// records and whenever it catches up, until `done`.
fn subscriber(topic: Topic, tally: Arc<Tally>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + SETUP_DEADLINE;
        let mut subscription = retry("subscribe", deadline, || {
            topic.subscribe("audit", StartAt::Earliest)
        });
        subscription.set_auto_commit(false);
        let mut failing = Failing::default();
        let mut uncommitted = 0;
        while !tally.done.load(Ordering::Acquire) {
            let recv = || subscription.recv(RECV_WAIT);
            let result = match tally.call("subscriber", "Subscription::recv(300ms)", recv) {
                Ok(Some(record)) => {
                    let previous = tally
                        .subscription_received
                        .lock()
                        .unwrap()
                        .insert(record.offset(), number_of(&record));
                    if previous.is_some() {
                        tally.subscription_repeats.fetch_add(1, Ordering::AcqRel);
                    }
                    uncommitted += 1;
                    match uncommitted >= 50 {
                        true => tally
                            .call("subscriber", "Subscription::commit", || subscription.commit())
                            .map(|()| uncommitted = 0),
                        false => Ok(()),
                    }
                }
                Ok(None) if uncommitted > 0 => tally
                    .call("subscriber", "Subscription::commit", || subscription.commit())
                    .map(|()| uncommitted = 0),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    failing.ok();
                }
                Err(e) => failing.failed("subscriber", e, &tally.subscription_errors),
            }
        }
        if uncommitted > 0 {
            let deadline = Instant::now() + SETUP_DEADLINE;
            retry("final commit", deadline, || subscription.commit());
        }
        assert_eq!(subscription.skipped(), 0, "the subscription skipped records");
    })
}

/// Waits until `done()` says so or fails after `limit`, naming `what`,
/// with the last status `done()` gave, what each worker is doing and
/// `diagnose()` (the server's view). Fails at once if a worker ended
/// (panicked) or a call of one hangs.
fn wait_for(
    what: &str,
    limit: Duration,
    tally: &Tally,
    mut done: impl FnMut() -> (bool, String),
    diagnose: impl Fn() -> String,
    threads: &[JoinHandle<()>],
) {
    let deadline = Instant::now() + limit;
    loop {
        let (done, status) = done();
        if done {
            return;
        }
        let (calls, hung) = tally.calls_status();
        let failure = if threads.iter().any(|t| t.is_finished()) {
            Some("a worker thread ended early (see its panic above)".to_owned())
        } else if let Some(hung) = hung {
            Some(format!("a call hangs: {hung}"))
        } else if Instant::now() > deadline {
            Some(format!("not within {limit:?}"))
        } else {
            None
        };
        if let Some(failure) = failure {
            panic!(
                "waiting for {what}: {failure}\n  progress: {status}\n  workers: {calls}\n  server: {}",
                diagnose()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn no_acknowledged_record_is_lost_when_the_stream_leader_of_three_nodes_is_killed() {
    if !have_nats_server() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut servers = cluster(dir.path());
    let urls = servers.iter().map(Server::url).collect::<Vec<_>>().join(",");
    let options = NatsOptions::default().replicas(3).timeout(TIMEOUT);
    let bus = Bus::connect_nats(&urls, options).expect("connect to the cluster");
    // The stream needs a JetStream meta leader: retried while the cluster forms.
    let deadline = Instant::now() + SETUP_DEADLINE;
    let topic = retry("open R3 topic", deadline, || bus.topic(TOPIC));
    let group_options = GroupOptions::default()
        .lease(LEASE)
        .retry(
            RetryPolicy::default()
                .max_attempts(100)
                .backoff(Backoff::Fixed(Duration::from_millis(100))),
        )
        .dead_letter(false)
        .start(StartAt::Earliest);
    let group = retry("open group", deadline, || {
        topic.group("posting", group_options.clone())
    });
    // The backend's own client, only to ask who leads the stream.
    let admin = NatsClient::connect(&urls, TIMEOUT).unwrap();
    eprintln!(
        "cluster formed, R3 topic and group open in {:?}",
        started.elapsed()
    );

    let diagnose = || {
        let consumer = |name: &str| match admin.consumer_state(TOPIC, name) {
            Ok(state) => format!("{state:?}"),
            Err(e) => format!("({e})"),
        };
        let leader = match admin.stream_leader(TOPIC) {
            Ok(leader) => format!("{leader:?}"),
            Err(e) => format!("({e})"),
        };
        format!(
            "stream leader {leader}, stream {:?}, group consumer {}, subscription consumer {}",
            admin.stream_state(TOPIC).map_err(|e| e.to_string()),
            consumer(&group_consumer_name("posting")),
            consumer(&subscription_consumer_name("audit")),
        )
    };
    let tally = Arc::new(Tally::default());
    let mut threads = vec![
        group_receiver("receiver 1", group.clone(), tally.clone()),
        group_receiver("receiver 2", group.clone(), tally.clone()),
    ];
    threads.push(subscriber(topic.clone(), tally.clone()));
    let producer = producer(topic.clone(), tally.clone());
    threads.push(producer);

    std::thread::sleep(BEFORE_KILL);
    let deadline = Instant::now() + SETUP_DEADLINE;
    let leader = retry("stream leader", deadline, || admin.stream_leader(TOPIC)).expect("a leader");
    let victim = servers
        .iter_mut()
        .find(|s| s.name == leader)
        .expect("leader is ours");
    let before_kill = tally.published.lock().unwrap().len();
    let first_after_kill = tally.next_number.load(Ordering::Acquire) + 1;
    victim.kill();
    let killed = Instant::now();
    eprintln!(
        "killed stream leader {leader} at {:?}: {before_kill} publishes acknowledged before",
        started.elapsed()
    );

    // Both sides keep going: numbers published after the kill are
    // acknowledged, and received by the group and the subscription,
    // while the producer still runs.
    let after_kill = |numbers: &BTreeSet<u64>| numbers.range(first_after_kill..).count();
    let mut resumed: [Option<Duration>; 3] = [None; 3];
    wait_for(
        "publish and consumption of records published after the kill",
        RECOVERY_DEADLINE,
        &tally,
        || {
            let counts = [
                after_kill(&tally.acked_numbers()),
                after_kill(&tally.group_acked.lock().unwrap()),
                after_kill(&tally.subscription_numbers()),
            ];
            for (side, count) in resumed.iter_mut().zip(counts) {
                if side.is_none() && count > 0 {
                    *side = Some(killed.elapsed());
                }
            }
            let status = format!(
                "records numbered from {first_after_kill} (published after the kill): \
                 {} acknowledged, {} acked by the group, {} received by the subscription",
                counts[0], counts[1], counts[2]
            );
            (counts[0] >= 100 && counts[1] >= 50 && counts[2] >= 50, status)
        },
        diagnose,
        &threads,
    );
    eprintln!(
        "after the kill, records published after it were first acknowledged in {:?}, \
         acked by the group in {:?}, received by the subscription in {:?}",
        resumed[0].unwrap(),
        resumed[1].unwrap(),
        resumed[2].unwrap(),
    );
    std::thread::sleep(AFTER_KILL.saturating_sub(killed.elapsed()));
    tally.stop_producing.store(true, Ordering::Release);
    let producer = threads.pop().unwrap();
    producer.join().expect("producer panicked");
    let stopped = Instant::now();
    let backlog = tally.missing().0.len();
    let drain_deadline = DRAIN_DEADLINE
        .saturating_add(DRAIN_PER_RECORD.saturating_mul(u32::try_from(backlog).unwrap_or(u32::MAX)));
    eprintln!(
        "producer stopped: {backlog} acknowledged numbers not yet acked by the group, drain bounded by {drain_deadline:?}"
    );

    // A number the group received but whose ack failed is not redelivered
    // if the server applied the ack: while only such numbers are missing,
    // the server's ack floor of the group's consumer tells.
    let mut floor_asked: Option<Instant> = None;
    let mut last_floor: Option<String> = None;
    wait_for(
        "drain: every acknowledged number received by the group and the subscription",
        drain_deadline,
        &tally,
        || {
            let (mut group, subscription) = tally.missing();
            let ack_failed = || {
                let failed = tally.group_ack_failed.lock().unwrap();
                let failed: BTreeSet<u64> = failed.values().copied().collect();
                group.iter().all(|n| failed.contains(n))
            };
            let due = floor_asked.is_none_or(|at| at.elapsed() >= ACK_FLOOR_POLL);
            if !group.is_empty() && due && ack_failed() {
                floor_asked = Some(Instant::now());
                match admin.consumer_state(TOPIC, &group_consumer_name("posting")) {
                    Ok(state) => {
                        let settled = tally.settle_by_ack_floor(state.ack_floor);
                        if !settled.is_empty() {
                            eprintln!(
                                "acked by the server although the ack failed (below the \
                                 group's ack floor, {state:?}): {settled:?}"
                            );
                        }
                        last_floor = Some(format!("{state:?}"));
                        group = tally.missing().0;
                    }
                    Err(e) => last_floor = Some(format!("({e})")),
                }
            }
            let status = format!(
                "acknowledged numbers not yet acked by the group: {} {:?}, \
                 not yet received by the subscription: {} {:?}; \
                 received by the group with a failed ack (offset -> number): {:?}; \
                 group consumer when last asked: {}",
                group.len(),
                group.iter().take(20).collect::<Vec<_>>(),
                subscription.len(),
                subscription.iter().take(20).collect::<Vec<_>>(),
                tally.group_ack_failed.lock().unwrap(),
                last_floor.as_deref().unwrap_or("(not asked)"),
            );
            (group.is_empty() && subscription.is_empty(), status)
        },
        diagnose,
        &threads,
    );
    eprintln!("drained in {:?}", stopped.elapsed());
    tally.done.store(true, Ordering::Release);
    for thread in threads {
        thread.join().expect("consumer panicked");
    }
    let new_leader = retry("new stream leader", Instant::now() + SETUP_DEADLINE, || {
        admin.stream_leader(TOPIC)
    });

    let published = tally.published.lock().unwrap().clone();
    let acked = tally.acked_numbers();
    let group_received = tally.group_received.lock().unwrap().clone();
    let group_consumed = tally.group_consumed();
    let acked_by_server = tally.group_acked_by_server.lock().unwrap().clone();
    let subscription = tally.subscription_received.lock().unwrap().clone();
    let subscription_numbers = tally.subscription_numbers();
    let lost_group: Vec<u64> = acked.difference(&group_consumed).copied().collect();
    let lost_subscription: Vec<u64> = acked.difference(&subscription_numbers).copied().collect();
    let group_duplicates: u64 = group_received.values().map(|&n| u64::from(n) - 1).sum();
    // Records stored more than once (a publish that failed but was stored).
    let stored_duplicates = subscription.len() - subscription_numbers.len();
    let offsets: Vec<u64> = subscription.keys().copied().collect();
    let end = offsets.last().map_or(0, |last| last + 1);
    eprintln!(
        "=== cluster failover: {} publishes acknowledged ({} before the kill, {} failed and were retried); \
         group received {} deliveries of {} numbers ({} duplicate deliveries, {} ack errors of which {} \
         applied by the server, {} recv errors); \
         subscription (live through the kill) received {} offsets ({} stored duplicates, {} repeats, {} errors); \
         node kills survived: 1 (leader {leader} -> {new_leader:?}); lost: group {}, subscription {}; \
         total {:?} ===",
        acked.len(),
        before_kill,
        tally.publish_errors.load(Ordering::Acquire),
        group_received.values().map(|&n| u64::from(n)).sum::<u64>(),
        group_received.len(),
        group_duplicates,
        tally.ack_errors.load(Ordering::Acquire),
        acked_by_server.len(),
        tally.group_errors.load(Ordering::Acquire),
        subscription.len(),
        stored_duplicates,
        tally.subscription_repeats.load(Ordering::Acquire),
        tally.subscription_errors.load(Ordering::Acquire),
        lost_group.len(),
        lost_subscription.len(),
        started.elapsed(),
    );

    assert!(
        lost_group.is_empty(),
        "acknowledged but never acked by the group: {lost_group:?}"
    );
    assert!(
        lost_subscription.is_empty(),
        "acknowledged but never received by the subscription: {lost_subscription:?}"
    );
    assert_eq!(
        offsets,
        (0..end).collect::<Vec<u64>>(),
        "the subscription saw every offset of the stream once, in a row"
    );
    for (number, offset) in &published {
        assert_eq!(
            subscription.get(offset),
            Some(number),
            "the acknowledged offset of {number} holds it"
        );
    }
    let numbers_received: BTreeSet<u64> = group_received.keys().copied().collect();
    assert!(
        numbers_received.is_subset(&subscription_numbers),
        "the group received only published numbers"
    );
    assert!(before_kill > 0, "publishes acknowledged before the kill");
    assert!(
        acked.range(first_after_kill..).count() >= 100,
        "publishes acknowledged after the kill"
    );
    assert!(
        new_leader.as_deref().is_some_and(|l| l != leader),
        "a new stream leader: {new_leader:?}"
    );
}
