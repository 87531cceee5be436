//! Crash safety with real processes and real files: the durability contract
//! checked against the operating system instead of the simulated storage.
//!
//! A child process (this test binary re-executed, entering through
//! [`child_writer_entry_point`]; the harness is `tests/common/child.rs`)
//! appends under `Durability::Always` and prints each offset `append`
//! acknowledged on stdout, flushed, before the next append. The parent
//! kills or faults the child, then reopens the log and checks that every
//! acknowledged record is present and intact, that offsets are dense, and
//! that the log still accepts appends.
//!
//! - `kill -9` at seeded random moments, many times over one directory, so
//!   recovery runs on logs that already survived earlier kills (and now and
//!   then the next child, not the parent, is the one recovering).
//! - `strace` fault injection (skipped loudly when strace is missing): a
//!   failed `fdatasync` poisons the log and nothing is acknowledged after
//!   it; SIGKILL on entry to the K-th `pwrite64` or `fdatasync` lands between
//!   creating and writing a segment, or between writing and syncing a frame;
//!   ENOSPC from one `pwrite64` fails that append (or that open) only,
//!   or nothing when it hits a write the log can do without.
//! - A real full file system (a 1 MiB tmpfs, root only, skipped loudly
//!   otherwise): appends fail with `ENOSPC`, and the same handle works again
//!   once space is freed.
//!
//! Every record's key, header, value and timestamp are derived from its
//! offset, so the parent can check any record without knowing which child
//! wrote it.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::child::{self, CHILD_DEADLINE, Finished, Running, SIGKILL, Waited, fork_guard, report};
use common::records::OffsetRecord;
use logbus::{Durability, Error, Log, LogOptions, Position};

/// A file the child deletes to free space once the disk is full.
const CHILD_FILLER_ENV: &str = "LOGBUS_CRASH_FILLER";
/// Set when the child must not preallocate its segments, so that every
/// append is a `pwrite64` that fault injection can hit.
const CHILD_UNRESERVED_ENV: &str = "LOGBUS_CRASH_UNRESERVED";
const ENTRY_POINT: &str = "child_writer_entry_point";
const DEFAULT_SEED: u64 = 0x5eed_c4a5_4000;
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// Small segments so that rolls (and their syncs and header writes) happen
/// every dozen or so appends.
const SEGMENT_BYTES: u64 = 4096;

fn options() -> LogOptions {
    LogOptions::default()
        .durability(Durability::Always)
        .segment_bytes(SEGMENT_BYTES)
        .index_interval_bytes(256)
}

// ---------------------------------------------------------------- records

/// The record stored at `offset`: mostly values under 120 bytes, a quarter
/// up to 700, a few up to 1500.
fn payload(offset: u64) -> OffsetRecord {
    let rng = fastrand::Rng::with_seed(offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xabcd);
    OffsetRecord::new(offset, rng, |rng| match rng.u8(..) {
        0..=179 => rng.usize(0..120),
        180..=244 => rng.usize(120..700),
        _ => rng.usize(700..1500),
    })
}

// ------------------------------------------------------------------ child

/// Entry point of the child process; returns at once in a normal run.
#[test]
fn child_writer_entry_point() {
    let Some((mode, dir)) = child::role() else {
        return;
    };
    let mode = ChildMode::parse(&mode);
    let segment_bytes = match mode {
        ChildMode::Fill { segment_bytes } => segment_bytes,
        _ => SEGMENT_BYTES,
    };
    let preallocate = std::env::var_os(CHILD_UNRESERVED_ENV).is_none();
    let options = options().segment_bytes(segment_bytes).preallocate(preallocate);
    let mut writer = ChildWriter::open(&dir, options);
    match mode {
        ChildMode::Forever => loop {
            if writer.attempt().is_err() {
                std::process::exit(2);
            }
        },
        ChildMode::Bounded { acks, errors } => writer.run_bounded(acks, errors),
        ChildMode::Fill { .. } => writer.fill_then_free(),
    }
    // A failed close is part of the outcome the parent judges: after a
    // failed sync it must fail, since the clean marker would be a lie.
    match writer.log.close() {
        Ok(()) => report("closed"),
        Err(e) => report(&format!("close-failed {e}")),
    }
}

enum ChildMode {
    /// Appends until killed; any error ends the child with status 2.
    Forever,
    /// Stops after `acks` acknowledged appends or `errors` failed ones.
    Bounded { acks: u64, errors: u64 },
    /// Appends until an I/O error, deletes the filler file, appends again.
    Fill { segment_bytes: u64 },
}

impl ChildMode {
    fn parse(mode: &str) -> ChildMode {
        let parts: Vec<&str> = mode.split(':').collect();
        match parts.as_slice() {
            ["forever"] => ChildMode::Forever,
            ["bounded", acks, errors] => ChildMode::Bounded {
                acks: acks.parse().expect("acks"),
                errors: errors.parse().expect("errors"),
            },
            ["fill", segment_bytes] => ChildMode::Fill {
                segment_bytes: segment_bytes.parse().expect("segment bytes"),
            },
            _ => panic!("unknown child mode {mode:?}"),
        }
    }
}

struct ChildWriter {
    log: Log,
    next: u64,
}

impl ChildWriter {
    fn open(dir: &Path, options: LogOptions) -> ChildWriter {
        let log = child::open_or_exit(Log::open(dir, options));
        let next = log.end_offset();
        report(&format!("open {next}"));
        ChildWriter { log, next }
    }

    /// Appends the record for the next offset and reports the outcome. A
    /// failed append is retried with the same offset next time.
    fn attempt(&mut self) -> Result<u64, ()> {
        let payload = payload(self.next);
        match self.log.append(&payload.record()) {
            Ok(offset) if offset == self.next => {
                report(&format!("ack {offset}"));
                self.next += 1;
                Ok(offset)
            }
            Ok(offset) => {
                report(&format!("misplaced {offset} expected {}", self.next));
                std::process::exit(3);
            }
            Err(e) => {
                let class = match &e {
                    Error::Poisoned { .. } => "poisoned".to_string(),
                    error @ Error::Io(_) => format!("io:{}", error.os_error().unwrap_or(-1)),
                    _ => "other".to_string(),
                };
                report(&format!("error {} {class} {e}", self.next));
                Err(())
            }
        }
    }

    fn run_bounded(&mut self, acks: u64, errors: u64) {
        let (mut acked, mut failed) = (0, 0);
        while acked < acks && failed < errors {
            match self.attempt() {
                Ok(_) => acked += 1,
                Err(()) => failed += 1,
            }
        }
    }

    fn fill_then_free(&mut self) {
        let filler = std::env::var(CHILD_FILLER_ENV).expect("fill mode needs a filler file");
        // Bounded so that a file system that never fills cannot hang the test.
        for _ in 0..100_000 {
            if self.attempt().is_err() {
                // Still full: the next append must fail the same way.
                let _ = self.attempt();
                std::fs::remove_file(&filler).expect("remove the filler file");
                report("freed");
                self.run_bounded(20, 1);
                return;
            }
        }
    }
}

// ----------------------------------------------------------------- parent

/// One report line of the child.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Open(u64),
    OpenFailed(String),
    Ack(u64),
    Error {
        offset: u64,
        class: String,
        message: String,
    },
    Freed,
    Closed {
        ok: bool,
    },
    Other(String),
}

impl Event {
    /// Parses a report line (after the report mark).
    fn parse(rest: &str) -> Option<Event> {
        let mut words = rest.split_whitespace();
        let kind = words.next()?;
        let number = |word: Option<&str>| word.and_then(|w| w.parse::<u64>().ok());
        Some(match kind {
            "open" => Event::Open(number(words.next())?),
            "open-failed" => Event::OpenFailed(words.collect::<Vec<_>>().join(" ")),
            "ack" => Event::Ack(number(words.next())?),
            "error" => Event::Error {
                offset: number(words.next())?,
                class: words.next()?.to_string(),
                message: words.collect::<Vec<_>>().join(" "),
            },
            "freed" => Event::Freed,
            "closed" => Event::Closed { ok: true },
            "close-failed" => Event::Closed { ok: false },
            _ => Event::Other(rest.trim().to_string()),
        })
    }
}

/// How the child is started.
struct Launch<'a> {
    mode: &'a str,
    dir: &'a Path,
    /// A program the child runs under, with its options (`strace …`), or
    /// nothing.
    wrapper: Vec<String>,
    filler: Option<&'a Path>,
    /// Whether the child preallocates its segments (appends then copy into
    /// a mapping instead of calling `pwrite64`).
    preallocate: bool,
}

impl Launch<'_> {
    fn spawn(&self) -> Running<Event> {
        let mut command = child::command(&self.wrapper, ENTRY_POINT, self.mode, self.dir);
        if !self.preallocate {
            command.env(CHILD_UNRESERVED_ENV, "1");
        }
        if let Some(filler) = self.filler {
            command.env(CHILD_FILLER_ENV, filler);
        }
        Running::spawn(command, Event::parse)
    }
}

impl Finished<Event> {
    fn acks(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Ack(offset) => Some(*offset),
                _ => None,
            })
            .collect()
    }

    fn errors(&self) -> Vec<(u64, &str, &str)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Error {
                    offset,
                    class,
                    message,
                } => Some((*offset, class.as_str(), message.as_str())),
                _ => None,
            })
            .collect()
    }

    /// One past the last acknowledged offset, if the child opened the log.
    fn acked_end(&self) -> Option<u64> {
        match self.events.first() {
            Some(Event::Open(start)) => Some(start + self.acks().len() as u64),
            _ => None,
        }
    }

    /// Checks the child's own view: one `open`, then acknowledged offsets
    /// dense from the end it opened at.
    fn check_acks_dense(&self) {
        let Some(Event::Open(start)) = self.events.first() else {
            if self.events.is_empty() {
                return; // killed before it opened the log
            }
            panic!("child reported before opening: {}", self.describe());
        };
        let acks = self.acks();
        let expected: Vec<u64> = (*start..*start + acks.len() as u64).collect();
        assert_eq!(
            acks,
            expected,
            "acknowledged offsets not dense: {}",
            self.describe()
        );
    }
}

/// Runs a helper command to completion (under the fork guard).
fn succeeds(command: &mut Command) -> bool {
    let _no_log_open = fork_guard();
    command.status().is_ok_and(|s| s.success())
}

/// What one reopen found.
#[derive(Debug, Clone, Copy)]
struct Verified {
    /// `end_offset()` after recovery (before the parent's own append); every
    /// record below it was checked.
    end: u64,
    clean_shutdown: bool,
    truncated: bool,
    removed_files: bool,
}

/// Reopens the log, checks every record from offset 0 against its payload,
/// checks that every offset in `acked` is present (reading the newest 200
/// back by offset, through the index), then appends at `end_offset()` and
/// closes cleanly.
fn reopen_and_verify(dir: &Path, acked: &BTreeSet<u64>) -> Verified {
    let _no_spawn = fork_guard();
    let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("reopen after the crash failed: {e}"));
    let report = log.recovery_report().clone();
    assert_eq!(log.start_offset(), 0, "nothing is ever deleted here");
    let end = log.end_offset();
    let mut cursor = log.cursor(Position::Earliest).expect("cursor");
    let mut records = 0;
    while let Some(record) = cursor.next().expect("read a recovered record") {
        assert_eq!(record.offset(), records, "offsets are not dense");
        assert!(
            payload(records).matches(&record),
            "record {records} differs from what was appended"
        );
        records += 1;
    }
    assert_eq!(records, end, "cursor and end_offset disagree ({report:?})");
    if let Some(&last) = acked.last() {
        assert!(
            last < end,
            "acknowledged offset {last} lost: the log ends at {end} ({report:?})"
        );
    }
    for &offset in acked.range(acked.len().saturating_sub(200) as u64..) {
        let record = log.read(offset).expect("read").expect("acknowledged record");
        assert!(payload(offset).matches(&record));
    }
    let appended = log
        .append(&payload(end).record())
        .unwrap_or_else(|e| panic!("recovered log refuses appends: {e}"));
    assert_eq!(appended, end);
    log.close().expect("close");
    Verified {
        end,
        clean_shutdown: report.clean_shutdown,
        truncated: !report.truncations.is_empty(),
        removed_files: !report.removed_files.is_empty(),
    }
}

/// Opens and closes a log so that a child's first write is a record frame.
fn precreate(dir: &Path) {
    let _no_spawn = fork_guard();
    Log::open(dir, options()).expect("create").close().expect("close");
}

// ------------------------------------------------------------- kill -9

/// When the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// After reading this many acknowledgements (the child keeps going
    /// while the parent reads, so the kill lands at an arbitrary point).
    Acks(usize),
    /// This long after spawning: sometimes during start-up or recovery.
    Delay(Duration),
}

#[derive(Debug, Default)]
struct KillTotals {
    cycles: u64,
    acked: u64,
    verifications: u64,
    /// Record checks summed over all verifications (each checks every record).
    record_checks: u64,
    /// Records in the log at the last verification.
    records: u64,
    truncations: u64,
}

fn kill_cycle(dir: &Path, at: KillAt) -> Finished<Event> {
    let mut running = Launch {
        mode: "forever",
        dir,
        wrapper: Vec::new(),
        filler: None,
        preallocate: true,
    }
    .spawn();
    let reached = match at {
        KillAt::Acks(count) => {
            let enough =
                |events: &[Event]| events.iter().filter(|e| matches!(e, Event::Ack(_))).count() >= count;
            running.wait_for(Instant::now() + CHILD_DEADLINE, enough) == Waited::Enough
        }
        KillAt::Delay(delay) => running.wait_for(Instant::now() + delay, |_| false) == Waited::TimedOut,
    };
    let finished = running.kill();
    assert!(
        reached && finished.status.signal() == Some(SIGKILL),
        "child ended before the kill ({at:?}): {}",
        finished.describe()
    );
    finished.check_acks_dense();
    finished
}

/// Runs `cycles` kill -9 cycles; every `fresh_every` cycles the directory
/// starts over so that long runs keep the log small.
fn kill_nine_cycles(cycles: u64, fresh_every: u64) -> KillTotals {
    let seed = child::seed(DEFAULT_SEED);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut totals = KillTotals::default();
    let mut dir = tempfile::tempdir().expect("tempdir");
    let mut acked = BTreeSet::new();
    for cycle in 0..cycles {
        if cycle > 0 && cycle % fresh_every == 0 {
            dir = tempfile::tempdir().expect("tempdir");
            acked.clear();
        }
        let at = if rng.bool() {
            KillAt::Acks(rng.usize(1..300))
        } else {
            KillAt::Delay(Duration::from_micros(rng.u64(0..30_000)))
        };
        let finished = kill_cycle(dir.path(), at);
        acked.extend(finished.acks());
        totals.acked += finished.acks().len() as u64;
        totals.cycles += 1;
        // Now and then the next child recovers the killed log itself.
        let last_of_dir = cycle + 1 == cycles || (cycle + 1) % fresh_every == 0;
        if last_of_dir || rng.u8(0..4) != 0 {
            let verified = reopen_and_verify(dir.path(), &acked);
            totals.verifications += 1;
            totals.record_checks += verified.end;
            totals.records = verified.end;
            totals.truncations += u64::from(verified.truncated);
        }
    }
    eprintln!("kill -9 (seed {seed}): {totals:?}");
    totals
}

#[test]
fn kill_nine_at_random_moments_never_loses_an_acknowledged_record() {
    let totals = kill_nine_cycles(100, u64::MAX);
    assert_eq!(totals.cycles, 100);
    assert!(totals.acked > 0, "no child ever acknowledged an append");
}

#[test]
#[ignore = "long: thousands of kill -9 cycles"]
fn kill_nine_thousands_of_times_never_loses_an_acknowledged_record() {
    let totals = kill_nine_cycles(3000, 200);
    assert!(totals.acked > 0);
}

// --------------------------------------------------------------- strace

/// True if strace can run; otherwise says loudly that `test` was skipped.
fn strace_available(test: &str) -> bool {
    let works = succeeds(
        Command::new("strace")
            .args(["-qq", "-o", "/dev/null", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    if !works {
        eprintln!(
            "\n{0}\nSKIPPED: strace not found (or cannot trace): {test} did not run\n{0}\n",
            "!".repeat(72)
        );
    }
    works
}

/// strace, with options injecting `inject` into the child (all its threads).
fn strace_inject(inject: &str) -> Vec<String> {
    let args = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=pwrite64,fdatasync",
        "-e",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(format!("inject={inject}"));
    args
}

fn run_under_strace(dir: &Path, mode: &str, inject: &str, preallocate: bool) -> Finished<Event> {
    Launch {
        mode,
        dir,
        wrapper: strace_inject(inject),
        filler: None,
        preallocate,
    }
    .spawn()
    .wait()
}

/// Counts the calls of each syscall in an `strace -f -o` trace.
fn syscall_counts(trace: &str) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for line in trace.lines() {
        // "<pid> <name>(<args>) = <result>"
        let call = line.split_whitespace().nth(1).unwrap_or("");
        if let Some((name, _)) = call.split_once('(') {
            *counts.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// The fault tests inject into `pwrite64` and `fdatasync`; if the library
/// (or std) ever writes or syncs through other calls, they would inject
/// nothing, so this checks the names against a real trace: without
/// preallocation every append is a `pwrite64`; with it, appends are copies
/// into the segment's mapping (no write call at all), and either way every
/// append under `Durability::Always` is an `fdatasync`.
#[test]
fn appends_write_with_pwrite64_unless_preallocated_and_sync_with_fdatasync() {
    if !strace_available("appends_write_with_pwrite64_unless_preallocated_and_sync_with_fdatasync") {
        return;
    }
    for preallocate in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        precreate(dir.path());
        let trace = dir.path().join("trace.txt");
        let calls = "trace=write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,sync_file_range,msync";
        let strace = [
            "strace",
            "-f",
            "-qq",
            "-o",
            trace.to_str().expect("utf-8 path"),
            "-e",
            calls,
        ];
        let finished = Launch {
            mode: "bounded:40:1",
            dir: dir.path(),
            wrapper: strace.iter().map(|s| s.to_string()).collect(),
            filler: None,
            preallocate,
        }
        .spawn()
        .wait();
        assert!(finished.status.success(), "{}", finished.describe());
        assert_eq!(finished.acks().len(), 40, "{}", finished.describe());
        let counts = syscall_counts(&std::fs::read_to_string(&trace).expect("read the trace"));
        eprintln!("syscalls of 40 appends (preallocate {preallocate}): {counts:?}");
        let count = |name: &str| counts.get(name).copied().unwrap_or(0);
        if preallocate {
            // Segment headers, index files and checkpoints are still pwrite64.
            assert!(
                count("pwrite64") < 40,
                "appends into a preallocated segment still call pwrite64: {counts:?}"
            );
        } else {
            assert!(
                count("pwrite64") >= 40,
                "frames are not written with pwrite64: {counts:?}"
            );
        }
        assert!(
            count("fdatasync") >= 40,
            "appends are not synced with fdatasync: {counts:?}"
        );
        for other in ["pwritev", "pwritev2", "sync_file_range"] {
            assert_eq!(count(other), 0, "unexpected {other}: {counts:?}");
        }
    }
}

/// Checks the run of a child whose `fdatasync` number `n` failed with EIO.
fn check_failed_sync_run(n: u32, finished: &Finished<Event>) -> &'static str {
    if let [Event::OpenFailed(message)] = finished.events.as_slice() {
        // Opening syncs too (the recovery checkpoint); failing it is fine.
        assert!(
            message.contains(&format!("os error {EIO}")),
            "{}",
            finished.describe()
        );
        return "open";
    }
    finished.check_acks_dense();
    assert!(
        finished.status.success(),
        "fdatasync #{n}: {}",
        finished.describe()
    );
    let first_error = finished
        .events
        .iter()
        .position(|e| matches!(e, Event::Error { .. }))
        .unwrap_or_else(|| panic!("fdatasync #{n} failed but no append did: {}", finished.describe()));
    for event in &finished.events[first_error + 1..] {
        match event {
            Event::Ack(offset) => panic!(
                "fdatasync #{n}: offset {offset} acknowledged after a failed sync: {}",
                finished.describe()
            ),
            Event::Error { class, .. } => assert_eq!(
                class,
                "poisoned",
                "fdatasync #{n}: append after a failed sync: {}",
                finished.describe()
            ),
            _ => {}
        }
    }
    assert!(
        finished.events.contains(&Event::Closed { ok: false }),
        "fdatasync #{n}: a poisoned log closed cleanly: {}",
        finished.describe()
    );
    let (_, class, message) = finished.errors()[0];
    // The group-commit sync latches the poison and reports it; a failed
    // sync while rolling to a new segment (sealing the old one, or its
    // recovery checkpoint) is reported as the I/O error itself.
    match class {
        "poisoned" if message.contains(&format!("os error {EIO}")) => "append",
        "io:5" => "segment roll",
        _ => panic!("fdatasync #{n}: unexpected first error: {}", finished.describe()),
    }
}

#[test]
fn failed_fdatasync_poisons_the_log_and_nothing_after_it_is_acknowledged() {
    if !strace_available("failed_fdatasync_poisons_the_log_and_nothing_after_it_is_acknowledged") {
        return;
    }
    let mut kinds = std::collections::BTreeMap::new();
    for n in 1..=36 {
        let dir = tempfile::tempdir().expect("tempdir");
        precreate(dir.path());
        let finished = run_under_strace(
            dir.path(),
            "bounded:60:4",
            &format!("fdatasync:error=EIO:when={n}"),
            true,
        );
        let kind = check_failed_sync_run(n, &finished);
        *kinds.entry(kind).or_insert(0) += 1;
        let acked: BTreeSet<u64> = finished.acks().into_iter().collect();
        assert!(acked.len() < n as usize, "more acks than successful syncs");
        let verified = reopen_and_verify(dir.path(), &acked);
        assert!(
            kind == "open" || !verified.clean_shutdown,
            "fdatasync #{n}: clean marker after a failed sync"
        );
    }
    eprintln!("failed fdatasync: 36 runs, first failure seen in {kinds:?}");
    assert!(kinds.get("append").is_some_and(|&runs| runs >= 18), "{kinds:?}");
}

#[test]
fn sigkill_on_entry_to_a_write_or_sync_loses_no_acknowledged_record() {
    if !strace_available("sigkill_on_entry_to_a_write_or_sync_loses_no_acknowledged_record") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = BTreeSet::new();
    let (mut runs, mut torn_creations, mut unacked_survivors) = (0, 0, 0);
    // Preallocated segments take their appends without pwrite64, so the
    // kills in pwrite64 run without preallocation.
    for (syscall, preallocate) in [("pwrite64", false), ("fdatasync", false), ("fdatasync", true)] {
        for k in 1..=40 {
            let inject = format!("{syscall}:signal=SIGKILL:when={k}");
            let finished = run_under_strace(dir.path(), "bounded:60:1", &inject, preallocate);
            assert_eq!(
                finished.status.signal(),
                Some(SIGKILL),
                "{inject}: the child was not killed: {}",
                finished.describe()
            );
            finished.check_acks_dense();
            acked.extend(finished.acks());
            let verified = reopen_and_verify(dir.path(), &acked);
            runs += 1;
            torn_creations += u64::from(verified.removed_files);
            if let Some(acked_end) = finished.acked_end() {
                // One append was in flight: its frame was either not yet
                // written (kill in pwrite64) or written but not synced.
                let in_flight = verified.end - acked_end;
                assert!(
                    in_flight <= u64::from(syscall == "fdatasync"),
                    "{inject}: {verified:?}"
                );
                unacked_survivors += in_flight;
            }
        }
    }
    eprintln!(
        "SIGKILL in syscalls: {runs} runs, {} acknowledged records, {torn_creations} torn segment \
         creations removed, {unacked_survivors} runs kept an unacknowledged record",
        acked.len()
    );
    assert!(
        torn_creations > 0,
        "no kill landed between creating and writing a segment"
    );
    assert!(
        unacked_survivors > 0,
        "no kill landed between writing and syncing a frame"
    );
}

#[test]
fn enospc_from_one_write_fails_that_operation_only_and_loses_nothing() {
    if !strace_available("enospc_from_one_write_fails_that_operation_only_and_loses_nothing") {
        return;
    }
    let mut landed = std::collections::BTreeMap::new();
    for k in 1..=40 {
        let dir = tempfile::tempdir().expect("tempdir");
        precreate(dir.path());
        let inject = format!("pwrite64:error=ENOSPC:when={k}");
        let finished = run_under_strace(dir.path(), "bounded:45:3", &inject, false);
        let context = format!("{inject}: {}", finished.describe());
        let acked: BTreeSet<u64> = finished.acks().into_iter().collect();
        if let [Event::OpenFailed(message)] = finished.events.as_slice() {
            // Opening grows the active segment's indexes back to capacity.
            assert!(message.contains(&format!("os error {ENOSPC}")), "{context}");
            assert_eq!(reopen_and_verify(dir.path(), &acked).end, 0, "{context}");
            *landed.entry("open").or_insert(0) += 1;
            continue;
        }
        assert!(finished.status.success(), "{context}");
        finished.check_acks_dense();
        // No error at all: the failed write was one the log may do without
        // (the recovery checkpoint, which recovery then ignores).
        let outcome = match finished.errors().as_slice() {
            [] => "absorbed",
            [(_, class, _)] if *class == format!("io:{ENOSPC}") => "append",
            _ => panic!("more than the one injected failure, or not ENOSPC: {context}"),
        };
        assert_eq!(acked.len(), 45, "{context}");
        assert!(finished.events.contains(&Event::Closed { ok: true }), "{context}");
        let verified = reopen_and_verify(dir.path(), &acked);
        assert!(
            verified.clean_shutdown && !verified.truncated && !verified.removed_files,
            "{verified:?}: {context}"
        );
        assert_eq!(
            verified.end, 45,
            "records besides the acknowledged ones: {context}"
        );
        *landed.entry(outcome).or_insert(0) += 1;
    }
    eprintln!("ENOSPC from pwrite64 calls 1..=40 failed: {landed:?}");
    assert!(landed.get("append").is_some_and(|&runs| runs >= 20), "{landed:?}");
}

// ------------------------------------------------------------ disk full

/// True if this process runs with effective uid 0.
fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid_line = status.lines().find_map(|line| line.strip_prefix("Uid:"));
    uid_line.and_then(|ids| ids.split_whitespace().nth(1)) == Some("0")
}

/// A size-capped tmpfs mounted on a fresh temporary directory, unmounted
/// on drop (also when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts `size` (as `mount -o size=` spells it), or `None` if mounting
    /// is not possible here.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = succeeds(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
                .arg(dir.path())
                .stderr(Stdio::null()),
        );
        mounted.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !succeeds(Command::new("umount").arg(self.dir.path())) {
            succeeds(Command::new("umount").arg("-l").arg(self.dir.path()));
        }
    }
}

fn skip_disk_full(why: &str) {
    eprintln!(
        "\n{0}\nSKIPPED: a_full_file_system_fails_appends_and_the_log_works_again_once_space_is_freed: \
         {why}\n{0}\n",
        "!".repeat(72)
    );
}

/// Fills a 1 MiB tmpfs holding `filler_bytes` of filler through a child
/// writing segments of `segment_bytes`, then checks what the child saw and
/// what a reopen finds.
fn fill_real_disk(filler_bytes: usize, segment_bytes: u64) -> Option<Finished<Event>> {
    let tmpfs = Tmpfs::mount("1m")?;
    let filler = tmpfs.path().join("filler");
    std::fs::write(&filler, vec![0xa5u8; filler_bytes]).expect("write the filler");
    let dir = tmpfs.path().join("log");
    let finished = Launch {
        mode: &format!("fill:{segment_bytes}"),
        dir: &dir,
        wrapper: Vec::new(),
        filler: Some(&filler),
        preallocate: true,
    }
    .spawn()
    .wait();
    let context = format!(
        "filler of {filler_bytes} bytes, segments of {segment_bytes}: {}",
        finished.describe()
    );
    assert!(finished.status.success(), "{context}");
    finished.check_acks_dense();
    let errors = finished.errors();
    assert_eq!(errors.len(), 2, "{context}");
    for (_, class, _) in &errors {
        assert_eq!(*class, format!("io:{ENOSPC}"), "not a plain ENOSPC: {context}");
    }
    let freed = finished.events.iter().position(|e| *e == Event::Freed);
    let acks_after_free = finished.events[freed.expect("freed") + 1..]
        .iter()
        .filter(|e| matches!(e, Event::Ack(_)))
        .count();
    assert_eq!(
        acks_after_free, 20,
        "the log stayed unusable after freeing space: {context}"
    );
    assert!(finished.events.contains(&Event::Closed { ok: true }), "{context}");
    let acked: BTreeSet<u64> = finished.acks().into_iter().collect();
    let verified = reopen_and_verify(&dir, &acked);
    assert!(verified.clean_shutdown && !verified.truncated, "{verified:?}");
    assert_eq!(
        Some(verified.end),
        finished.acked_end(),
        "{verified:?}: {context}"
    );
    Some(finished)
}

#[test]
fn a_full_file_system_fails_appends_and_the_log_works_again_once_space_is_freed() {
    if !running_as_root() {
        return skip_disk_full("needs root to mount a tmpfs");
    }
    // Segments of one page fill up when a segment is created (its header
    // or its index files); larger ones mostly inside a frame, which is then
    // cut off. Shifting the free space page by page moves the failure
    // between those places.
    for segment_bytes in [SEGMENT_BYTES, 64 << 10] {
        for pages in 0..4 {
            let Some(finished) = fill_real_disk((192 + pages) * 4096, segment_bytes) else {
                return skip_disk_full("mount -t tmpfs failed");
            };
            let (offset, _, message) = finished.errors()[0];
            eprintln!(
                "disk full (segments of {segment_bytes}, {pages} pages less): {} records acknowledged, \
                 offset {offset} failed with {message}",
                finished.acks().len(),
            );
        }
    }
}
