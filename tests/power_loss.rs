//! Power loss at any I/O step must never lose an acknowledged record.
//!
//! Each trial opens a log on [`SimStorage`] under `Durability::Always`, with
//! segments small enough to roll every few records and a small index
//! interval, runs a seeded random workload (appends and batches of random
//! sizes, empty values included) and halts the simulated process after a
//! random number of syncs or writes. A power loss then gives every unsynced
//! write a random fate (dropped, applied, torn or garbage) and may undo
//! unsynced directory changes. The reopened log must hold every acknowledged
//! record unchanged at its acknowledged offset, with dense offsets, nothing
//! that was never written and nothing reordered; `read` and a cursor must
//! agree; appends must resume at `end_offset()`; and a second power loss
//! without new writes must change nothing. The exhaustive tests crash one
//! fixed workload at every sync and at every write, with several power-loss
//! seeds each. Figures are printed (run with `--nocapture` to see them).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use fastrand::Rng;
use logbus::storage::{Fault, SimStorage};
use logbus::{Durability, Log, LogOptions, Position, Record, StoredRecord};

const DIR: &str = "/sim/log";
const SEGMENT_HEADER_BYTES: u64 = 32;

/// What a record must read back as: every field the caller chose.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    key: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    value: Vec<u8>,
    timestamp: i64,
}

impl Expected {
    fn record(&self) -> Record<'_> {
        let record = Record::new(&self.value).key(&self.key).timestamp(self.timestamp);
        self.headers.iter().fold(record, |record, (name, value)| {
            record.header(name.as_str(), value)
        })
    }

    fn of(stored: &StoredRecord) -> Expected {
        Expected {
            key: stored.key().to_vec(),
            headers: stored
                .headers()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            value: stored.value().to_vec(),
            timestamp: stored.timestamp(),
        }
    }

    fn encoded_len(&self) -> u64 {
        self.record().encoded_len().expect("test records are small") as u64
    }

    fn random(rng: &mut Rng, id: Option<String>) -> Expected {
        let value_len = if rng.u8(..5) == 0 { 0 } else { rng.usize(1..120) };
        let key_len = if rng.bool() { 0 } else { rng.usize(1..16) };
        let mut headers: Vec<(String, Vec<u8>)> =
            id.map(|id| ("id".into(), id.into_bytes())).into_iter().collect();
        for _ in 0..rng.usize(0..3) {
            let name = ["trace", "h", "", "content-type"][rng.usize(..4)];
            let len = rng.usize(0..12);
            headers.push((name.into(), random_bytes(rng, len)));
        }
        Expected {
            key: random_bytes(rng, key_len),
            headers,
            value: random_bytes(rng, value_len),
            timestamp: rng.i64(0..4_000_000_000_000),
        }
    }
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.u8(..)).collect()
}

/// One call of the workload.
#[derive(Debug, Clone)]
enum Op {
    Append(Expected),
    Batch(Vec<Expected>),
}

impl Op {
    fn records(&self) -> &[Expected] {
        match self {
            Op::Append(record) => std::slice::from_ref(record),
            Op::Batch(records) => records,
        }
    }

    /// Runs the call; the offsets it was given, or why it failed.
    fn run(&self, log: &Log) -> logbus::Result<Range<u64>> {
        match self {
            Op::Append(record) => log.append(&record.record()).map(|offset| offset..offset + 1),
            Op::Batch(records) => {
                let records: Vec<Record<'_>> = records.iter().map(Expected::record).collect();
                log.append_batch(&records)
            }
        }
    }
}

/// Random ops whose batches fit in `room` bytes. With `thread`, every record
/// carries an `id` header `thread:index:position-in-batch`.
fn random_ops(rng: &mut Rng, count: usize, room: u64, thread: Option<usize>) -> Vec<Op> {
    let mut next_index = 0usize;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let batch = rng.u8(..3) == 0;
        let wanted = if batch { rng.usize(0..=5) } else { 1 };
        let mut records: Vec<Expected> = Vec::new();
        let mut bytes = 0;
        for position in 0..wanted {
            let id = thread.map(|t| format!("{t}:{next_index}:{position}"));
            let record = Expected::random(rng, id);
            if bytes + record.encoded_len() > room {
                break;
            }
            bytes += record.encoded_len();
            next_index += 1;
            records.push(record);
        }
        match (batch, records.pop()) {
            (false, Some(record)) => ops.push(Op::Append(record)),
            (_, last) => {
                records.extend(last);
                ops.push(Op::Batch(records));
            }
        }
    }
    ops
}

fn id_of(header: Option<&[u8]>) -> Option<(usize, usize, usize)> {
    let text = std::str::from_utf8(header?).ok()?;
    let mut parts = text.split(':').map(|p| p.parse::<usize>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Log shape of a trial: small segments and index intervals so rolls and
/// index entries happen constantly.
#[derive(Debug, Clone, Copy)]
struct Shape {
    segment_bytes: u64,
    index_interval_bytes: u64,
}

impl Shape {
    fn random(rng: &mut Rng) -> Shape {
        Shape {
            segment_bytes: rng.u64(512..=2048),
            index_interval_bytes: rng.u64(16..=256),
        }
    }

    fn options(&self, sim: &SimStorage) -> LogOptions {
        LogOptions::default()
            .durability(Durability::Always)
            .segment_bytes(self.segment_bytes)
            .index_interval_bytes(self.index_interval_bytes)
            .storage(Arc::new(sim.clone()))
    }

    fn room(&self) -> u64 {
        self.segment_bytes - SEGMENT_HEADER_BYTES
    }
}

fn random_fault(rng: &mut Rng, ops: usize) -> Fault {
    let after = rng.u64(0..=ops as u64 * 3 / 2 + 4);
    if rng.bool() {
        Fault::HaltAfterSyncs { after }
    } else {
        Fault::HaltAfterWrites { after }
    }
}

fn open(sim: &SimStorage, shape: Shape, context: &str) -> Log {
    Log::open(DIR, shape.options(sim)).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"))
}

/// Kills the process (it dies at its next sync, so `drop` cannot close the
/// log cleanly) and cuts the power.
fn crash(sim: &SimStorage, log: Log, seed: u64) {
    sim.inject(Fault::HaltAfterSyncs { after: 0 });
    drop(log);
    sim.power_loss(seed);
}

/// Figures across trials.
#[derive(Debug, Default)]
struct Stats {
    trials: u64,
    crashed_by_fault: u64,
    acknowledged_checked: u64,
    unacknowledged_survivors: u64,
    truncations: u64,
}

impl Stats {
    fn print(&self, what: &str) {
        println!(
            "{what}: {} trials, {} crashed by the fault, {} acknowledged records checked, 0 lost \
             (asserted per trial), {} unacknowledged records survived, {} tails truncated by recovery",
            self.trials,
            self.crashed_by_fault,
            self.acknowledged_checked,
            self.unacknowledged_survivors,
            self.truncations
        );
    }
}

/// What one writer attempted, in call order, and how many leading records
/// were acknowledged.
struct Attempt {
    attempted: Vec<Expected>,
    acknowledged: usize,
}

/// Runs `ops` from one thread until the first failure, which must be the
/// crash; a crashed process acknowledges nothing more.
fn run_single_writer(log: &Log, sim: &SimStorage, ops: &[Op], context: &str) -> Attempt {
    let mut attempted: Vec<Expected> = Vec::new();
    let mut acknowledged = 0;
    for op in ops {
        let start = attempted.len() as u64;
        attempted.extend_from_slice(op.records());
        match op.run(log) {
            Ok(range) => {
                assert_eq!(range, start..attempted.len() as u64, "{context}: wrong offsets");
                acknowledged = attempted.len();
            }
            Err(e) => {
                assert!(sim.is_halted(), "{context}: append failed without a crash: {e}");
                assert!(
                    log.append(&Record::new(b"after the crash")).is_err(),
                    "{context}: a halted process acknowledged an append"
                );
                break;
            }
        }
    }
    Attempt {
        attempted,
        acknowledged,
    }
}

/// Checks the log holds exactly a prefix of `attempted` that covers the
/// first `acknowledged` records, through `read` and a cursor alike. Returns
/// the prefix length.
fn verify_prefix(log: &Log, attempted: &[Expected], acknowledged: usize, context: &str) -> usize {
    assert_eq!(
        log.start_offset(),
        0,
        "{context}: records vanished from the start"
    );
    let end = log.end_offset() as usize;
    assert!(
        end >= acknowledged,
        "{context}: {} acknowledged records lost (end {end}, acknowledged {acknowledged})",
        acknowledged - end
    );
    assert!(
        end <= attempted.len(),
        "{context}: end {end} but only {} records attempted",
        attempted.len()
    );
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    for (offset, expected) in attempted[..end].iter().enumerate() {
        let offset = offset as u64;
        let read = log.read(offset).unwrap();
        let read = read.unwrap_or_else(|| panic!("{context}: offset {offset} below end {end} is missing"));
        assert_eq!(read.offset(), offset, "{context}");
        assert_eq!(
            &Expected::of(&read),
            expected,
            "{context}: offset {offset} differs"
        );
        let next = cursor.next().unwrap();
        assert_eq!(
            next.as_ref(),
            Some(&read),
            "{context}: cursor and read disagree at {offset}"
        );
    }
    assert!(
        log.read(end as u64).unwrap().is_none(),
        "{context}: a record past the end"
    );
    assert!(
        cursor.next().unwrap().is_none(),
        "{context}: the cursor reads past the end"
    );
    end
}

/// After the first power loss: the log is a prefix of the attempt holding
/// everything acknowledged; a new append lands at the end; a second power
/// loss changes nothing.
fn check_after_power_loss(
    sim: &SimStorage,
    shape: Shape,
    attempt: &Attempt,
    rng: &mut Rng,
    context: &str,
    stats: &mut Stats,
) {
    let log = open(sim, shape, context);
    stats.truncations += log.recovery_report().truncations.len() as u64;
    let end = verify_prefix(&log, &attempt.attempted, attempt.acknowledged, context);
    stats.acknowledged_checked += attempt.acknowledged as u64;
    stats.unacknowledged_survivors += (end - attempt.acknowledged) as u64;
    let mut durable = attempt.attempted[..end].to_vec();
    durable.push(append_one_more(&log, rng, context));
    crash(sim, log, rng.u64(..));
    let log = open(sim, shape, &format!("{context}, second power loss"));
    verify_prefix(
        &log,
        &durable,
        durable.len(),
        &format!("{context}, second power loss"),
    );
    stats.acknowledged_checked += durable.len() as u64;
}

/// Appends a random record, checking it gets `end_offset()` and reads back.
fn append_one_more(log: &Log, rng: &mut Rng, context: &str) -> Expected {
    let extra = Expected::random(rng, None);
    let end = log.end_offset();
    let offset = log
        .append(&extra.record())
        .unwrap_or_else(|e| panic!("{context}: append failed: {e}"));
    assert_eq!(offset, end, "{context}: new append not at the end");
    assert_eq!(
        Expected::of(&log.read(offset).unwrap().unwrap()),
        extra,
        "{context}"
    );
    extra
}

fn single_writer_trial(seed: u64, stats: &mut Stats) {
    let mut rng = Rng::with_seed(seed);
    let shape = Shape::random(&mut rng);
    let count = rng.usize(5..60);
    let ops = random_ops(&mut rng, count, shape.room(), None);
    let fault = random_fault(&mut rng, ops.len());
    let power_seed = rng.u64(..);
    let context = format!("seed {seed} ({shape:?}, {fault:?}, power loss {power_seed})");
    let sim = SimStorage::new();
    let log = open(&sim, shape, &context);
    sim.inject(fault);
    let attempt = run_single_writer(&log, &sim, &ops, &context);
    drop(log);
    stats.trials += 1;
    stats.crashed_by_fault += u64::from(sim.is_halted());
    sim.power_loss(power_seed);
    check_after_power_loss(&sim, shape, &attempt, &mut rng, &context, stats);
}

/// What one of several writers attempted, and the offset of each record
/// that was acknowledged.
struct ThreadAttempt {
    attempted: Vec<Expected>,
    offsets: Vec<Option<u64>>,
}

fn run_thread(log: &Log, sim: &SimStorage, ops: &[Op]) -> ThreadAttempt {
    let mut attempt = ThreadAttempt {
        attempted: Vec::new(),
        offsets: Vec::new(),
    };
    for op in ops {
        attempt.attempted.extend_from_slice(op.records());
        match op.run(log) {
            Ok(range) => {
                assert_eq!(range.end - range.start, op.records().len() as u64);
                attempt.offsets.extend(range.map(Some));
            }
            Err(e) => {
                assert!(sim.is_halted(), "append failed without a crash: {e}");
                break;
            }
        }
    }
    attempt
}

/// Checks a log written by several threads: each thread's records appear
/// in its call order as a gap-free prefix of what it attempted, acknowledged
/// ones at their acknowledged offsets, batches unsplit. Returns the log's
/// records in offset order.
fn verify_threads(log: &Log, threads: &[ThreadAttempt], context: &str) -> Vec<Expected> {
    assert_eq!(log.start_offset(), 0, "{context}");
    let end = log.end_offset();
    let mut next_index = vec![0usize; threads.len()];
    let mut previous: Option<(usize, usize, usize)> = None;
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    let mut present = Vec::new();
    for offset in 0..end {
        let read = log.read(offset).unwrap();
        let read = read.unwrap_or_else(|| panic!("{context}: offset {offset} below end {end} is missing"));
        assert_eq!(
            cursor.next().unwrap().as_ref(),
            Some(&read),
            "{context}: cursor and read disagree"
        );
        let (thread, index, position) = id_of(read.header("id"))
            .unwrap_or_else(|| panic!("{context}: record {offset} was never written"));
        let attempt = &threads[thread];
        assert_eq!(
            index, next_index[thread],
            "{context}: thread {thread} reordered or gapped at {offset}"
        );
        next_index[thread] += 1;
        assert_eq!(
            Expected::of(&read),
            attempt.attempted[index],
            "{context}: offset {offset} differs"
        );
        if let Some(Some(acknowledged)) = attempt.offsets.get(index) {
            assert_eq!(*acknowledged, offset, "{context}: acknowledged record moved");
        }
        if position > 0 {
            assert_eq!(
                previous,
                Some((thread, index - 1, position - 1)),
                "{context}: batch split at {offset}"
            );
        }
        previous = Some((thread, index, position));
        present.push(attempt.attempted[index].clone());
    }
    assert!(cursor.next().unwrap().is_none(), "{context}");
    for (thread, attempt) in threads.iter().enumerate() {
        let acknowledged = attempt.offsets.len();
        assert!(
            next_index[thread] >= acknowledged,
            "{context}: thread {thread} lost {} acknowledged records",
            acknowledged - next_index[thread]
        );
    }
    present
}

fn three_writer_trial(seed: u64, stats: &mut Stats) {
    let mut rng = Rng::with_seed(seed);
    let shape = Shape::random(&mut rng);
    let ops: Vec<Vec<Op>> = (0..3)
        .map(|t| {
            let count = rng.usize(5..30);
            random_ops(&mut rng, count, shape.room(), Some(t))
        })
        .collect();
    let fault = random_fault(&mut rng, ops.iter().map(Vec::len).sum());
    let power_seed = rng.u64(..);
    let context = format!("three writers, seed {seed} ({shape:?}, {fault:?}, power loss {power_seed})");
    let sim = SimStorage::new();
    let log = open(&sim, shape, &context);
    sim.inject(fault);
    let threads: Vec<ThreadAttempt> = std::thread::scope(|scope| {
        let handles: Vec<_> = ops
            .iter()
            .map(|ops| scope.spawn(|| run_thread(&log, &sim, ops)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    drop(log);
    stats.trials += 1;
    stats.crashed_by_fault += u64::from(sim.is_halted());
    sim.power_loss(power_seed);
    let log = open(&sim, shape, &context);
    stats.truncations += log.recovery_report().truncations.len() as u64;
    let present = verify_threads(&log, &threads, &context);
    let acknowledged: usize = threads.iter().map(|t| t.offsets.len()).sum();
    stats.acknowledged_checked += acknowledged as u64;
    stats.unacknowledged_survivors += (present.len() - acknowledged) as u64;
    let mut durable = present;
    durable.push(append_one_more(&log, &mut rng, &context));
    crash(&sim, log, rng.u64(..));
    let context = format!("{context}, second power loss");
    let log = open(&sim, shape, &context);
    verify_prefix(&log, &durable, durable.len(), &context);
    stats.acknowledged_checked += durable.len() as u64;
}

fn run_trials(seeds: Range<u64>, every_nth_threaded: u64) -> Stats {
    let mut stats = Stats::default();
    for seed in seeds {
        if seed % every_nth_threaded == 0 {
            three_writer_trial(seed, &mut stats);
        } else {
            single_writer_trial(seed, &mut stats);
        }
    }
    stats
}

#[test]
fn single_writer_random_crashes_lose_no_acknowledged_record() {
    let started = std::time::Instant::now();
    let mut stats = Stats::default();
    for seed in 0..4000 {
        single_writer_trial(seed, &mut stats);
    }
    stats.print("single writer");
    println!("single writer: {:?}", started.elapsed());
    assert!(
        stats.crashed_by_fault > stats.trials / 2,
        "most trials must crash mid-workload"
    );
    assert!(
        stats.unacknowledged_survivors > 0 && stats.truncations > 0,
        "power loss never hit a tail"
    );
}

#[test]
fn three_writer_random_crashes_lose_no_acknowledged_record() {
    let started = std::time::Instant::now();
    let mut stats = Stats::default();
    for seed in 0..1000 {
        three_writer_trial(1_000_000 + seed, &mut stats);
    }
    stats.print("three writers");
    println!("three writers: {:?}", started.elapsed());
    assert!(
        stats.crashed_by_fault > stats.trials / 2,
        "most trials must crash mid-workload"
    );
}

#[test]
#[ignore = "long: 50 000 trials; run with --ignored"]
fn fifty_thousand_random_crashes_lose_no_acknowledged_record() {
    let stats = run_trials(10_000_000..10_050_000, 10);
    stats.print("50k trials");
    assert_eq!(stats.trials, 50_000);
}

/// One fixed workload, crashed at every sync or write it performs
/// (`fault(n)` for n = 0, 1, ... until the fault no longer fires), each
/// crash followed by several different power losses.
fn crash_at_every_step(fault: fn(u64) -> Fault, what: &str) {
    let shape = Shape {
        segment_bytes: 512,
        index_interval_bytes: 40,
    };
    let ops = random_ops(&mut Rng::with_seed(7), 40, shape.room(), None);
    let power_seeds = 4;
    let mut stats = Stats::default();
    let mut survivors: HashMap<usize, u64> = HashMap::new();
    let mut crash_points = 0;
    for n in 0..10_000 {
        let mut fired = false;
        for power_seed in 0..power_seeds {
            let context = format!("{what} {n}, power loss {power_seed}");
            let sim = SimStorage::new();
            let log = open(&sim, shape, &context);
            sim.inject(fault(n));
            let attempt = run_single_writer(&log, &sim, &ops, &context);
            drop(log);
            fired = sim.is_halted();
            stats.trials += 1;
            stats.crashed_by_fault += u64::from(fired);
            sim.power_loss(power_seed);
            let mut rng = Rng::with_seed(power_seed);
            check_after_power_loss(&sim, shape, &attempt, &mut rng, &context, &mut stats);
            *survivors.entry(attempt.acknowledged).or_default() += 1;
        }
        if !fired {
            break;
        }
        crash_points += 1;
    }
    stats.print(&format!("crash at every {what}"));
    println!("crash at every {what}: {crash_points} crash points x {power_seeds} power losses");
    assert!(crash_points > 40, "the workload performs more than 40 {what}s");
    assert!(survivors.len() > 20, "crashes landed at too few distinct points");
}

#[test]
fn crash_at_every_sync_of_a_fixed_workload_loses_no_acknowledged_record() {
    crash_at_every_step(|after| Fault::HaltAfterSyncs { after }, "sync");
}

#[test]
fn crash_at_every_write_of_a_fixed_workload_loses_no_acknowledged_record() {
    crash_at_every_step(|after| Fault::HaltAfterWrites { after }, "write");
}
