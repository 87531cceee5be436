//! The fuzz corpora, replayed without a fuzzer.
//!
//! Every file under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`
//! goes through the same `logbus::fuzzing::<target>` function the fuzzer
//! calls, so an input that once found a bug keeps guarding against it in
//! plain `cargo test`, and CI needs no fuzzer. The seed inputs are real
//! files made by the library (segments, indexes, checkpoints, state events,
//! a correlation table, operation sequences) plus hand-made edge cases;
//! they are rebuilt here from the current code and must pass every target
//! too. `LOGBUS_WRITE_FUZZ_CORPUS=1` writes them into `fuzz/corpus/`
//! (see docs/TESTING.md, "Fuzzing").

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbus::format::{
    BatchEntry, Checkpoint, EntryState, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MAX_BYTES, Failure,
    IndexKind, MAX_DELIVERED_RUN, OffsetEntry, SegmentHeader, StateEvent, TimeEntry, batch_record_len,
    encode_batch_into, encode_frame, encode_index_header,
};
use logbus::fuzzing::{Op, RecordSpec, RecoveryInput, SegmentFiles, TARGETS, Target, encode_ops};
use logbus::internals::CorrelationTable;
use logbus::storage::{Fault, SimStorage};
use logbus::{Durability, Log, LogOptions, Record};

/// The corpus stays small enough to replay in seconds and to review.
const MAX_FILES_PER_TARGET: usize = 48;
const MAX_CORPUS_BYTES: u64 = 1 << 20;
const DIR: &str = "/sim/log";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(target, _)| *target == name)
        .map(|(_, run)| *run)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"))
}

/// Files of `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("corpus entry").path()).collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_regression_input_passes_its_target() {
    let mut replayed = 0;
    for (name, run) in TARGETS {
        let corpus = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ has no seeds");
        let regressions = files_in(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = fs::read(path).expect("read corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} fails target {name}", path.display());
            replayed += 1;
        }
    }
    println!("replayed {replayed} inputs");
}

#[test]
fn corpus_and_regression_folders_are_named_after_targets_and_stay_small() {
    let mut total = 0;
    for folder in ["corpus", "regressions"] {
        for dir in files_in(&fuzz_dir().join(folder)) {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{folder}/{name} names no target"
            );
            let files = files_in(&dir);
            assert!(
                files.len() <= MAX_FILES_PER_TARGET,
                "fuzz/{folder}/{name} has {} files",
                files.len()
            );
            total += files
                .iter()
                .map(|f| f.metadata().expect("metadata").len())
                .sum::<u64>();
        }
    }
    assert!(
        total <= MAX_CORPUS_BYTES,
        "the committed corpus holds {total} bytes"
    );
}

#[test]
fn seeds_made_by_the_current_library_pass_every_target() {
    let seeds = seeds();
    for (name, files) in &seeds {
        assert!(!files.is_empty());
        for (file, data) in files {
            let outcome = std::panic::catch_unwind(|| target(name)(data));
            assert!(outcome.is_ok(), "seed {name}/{file} fails its target");
        }
    }
    if std::env::var_os("LOGBUS_WRITE_FUZZ_CORPUS").is_some() {
        for (name, files) in &seeds {
            let dir = fuzz_dir().join("corpus").join(name);
            fs::create_dir_all(&dir).expect("create corpus folder");
            for (file, data) in files {
                fs::write(dir.join(file), data).expect("write seed");
            }
        }
    }
}

type Seeds = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

fn seeds() -> Seeds {
    let mut seeds = Seeds::new();
    let log = small_log_files();
    seeds.insert("frame_decode", frame_seeds(&log));
    seeds.insert("segment_header", segment_header_seeds(&log));
    seeds.insert("index_entries", index_seeds(&log));
    seeds.insert("checkpoint", checkpoint_seeds(&log));
    seeds.insert("state_event", state_event_seeds());
    seeds.insert("correlation_index", correlation_seeds());
    seeds.insert("segment_recovery", recovery_seeds());
    seeds.insert("log_ops", log_ops_seeds());
    seeds.insert("wire", logbus::fuzzing::wire_seeds());
    for files in seeds.values_mut() {
        files.extend(edge_cases());
    }
    seeds
}

fn seed(name: &str, data: impl Into<Vec<u8>>) -> (String, Vec<u8>) {
    (format!("seed-{name}"), data.into())
}

/// Inputs every decoder must survive.
fn edge_cases() -> Vec<(String, Vec<u8>)> {
    vec![
        seed("empty", []),
        seed("zeros-64", [0; 64]),
        seed("ones-64", [0xff; 64]),
    ]
}

fn options(sim: &SimStorage, durability: Durability, segment_bytes: u64, interval: u64) -> LogOptions {
    LogOptions::default()
        .durability(durability)
        .segment_bytes(segment_bytes)
        .index_interval_bytes(interval)
        .storage(Arc::new(sim.clone()))
}

fn append_some(log: &Log, range: std::ops::Range<u64>) {
    for i in range {
        let value = format!("value-{i}");
        let record = Record::new(&value)
            .key(b"key")
            .header("trace", b"t")
            .timestamp(1_000 + i as i64);
        log.append(&record).expect("append");
    }
}

/// A closed log of three small segments (256-byte segments, an index entry
/// every 64 bytes), as `RecoveryInput` captures it.
fn small_log_files() -> RecoveryInput {
    let sim = SimStorage::new();
    let log = Log::open(DIR, options(&sim, Durability::Always, 256, 64)).expect("open");
    append_some(&log, 0..8);
    // And a batch frame.
    let values: Vec<String> = (8..11).map(|i| format!("value-{i}")).collect();
    let batch: Vec<Record<'_>> = values
        .iter()
        .zip(1_008..)
        .map(|(value, timestamp)| {
            Record::new(value)
                .key(b"key")
                .header("trace", b"t")
                .timestamp(timestamp)
        })
        .collect();
    log.append_batch(&batch).expect("append a batch");
    log.close().expect("close");
    let mut input = RecoveryInput::capture(&sim, Path::new(DIR));
    input.interval_shift = 6;
    input
}

fn first_segment(log: &RecoveryInput) -> &SegmentFiles {
    &log.segments[0]
}

fn frame(offset: u64, key: &[u8], headers: &[(&str, &[u8])], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, offset, -1, key, headers, value);
    out
}

fn frame_seeds(log: &RecoveryInput) -> Vec<(String, Vec<u8>)> {
    let segment = first_segment(log).log.clone().expect("segment file");
    let full = frame(
        7,
        b"key",
        &[("a", b"1"), ("", b""), ("content-type", b"text/plain")],
        b"value",
    );
    let mut too_long = full.clone();
    too_long[..4].copy_from_slice(&(FRAME_MAX_BYTES as u32 + 1).to_le_bytes());
    vec![
        seed("real-segment-frames", segment[32..].to_vec()),
        seed("empty-record", frame(0, b"", &[], b"")),
        seed("record-with-headers", full.clone()),
        seed("truncated-frame", full[..full.len() - 3].to_vec()),
        seed("fixed-part-only", full[..36].to_vec()),
        seed("length-past-max", too_long),
        seed("max-offset", frame(u64::MAX, b"k", &[], b"v")),
        seed("batch-with-headers", batch_frame(5, SPREAD)),
        seed("batch-at-max-offset", batch_frame(u64::MAX - 3, SPREAD)),
        seed("batch-past-max-offset", batch_frame(u64::MAX - 1, SPREAD)),
        seed("batch-all-at-the-oldest-time", batch_frame(5, [i64::MIN; 3])),
    ]
}

/// Timestamps that go back and forth, to the extremes.
const SPREAD: [i64; 3] = [5, -1_000, i64::MAX];

/// A batch frame of three records from `offset`, with keys, headers and
/// the given timestamps.
fn batch_frame(offset: u64, timestamps: [i64; 3]) -> Vec<u8> {
    let headers: [(&str, &[u8]); 2] = [("a", b"1"), ("", b"")];
    let entries = [
        BatchEntry {
            timestamp: timestamps[0],
            key: b"k",
            headers: &headers,
            value: b"one",
        },
        BatchEntry {
            timestamp: timestamps[1],
            key: b"",
            headers: &[],
            value: b"",
        },
        BatchEntry {
            timestamp: timestamps[2],
            key: b"key",
            headers: &headers[..1],
            value: &[7; 200],
        },
    ];
    let len: usize = entries
        .iter()
        .map(|e| batch_record_len(timestamps[0], e).expect("fits"))
        .sum();
    let mut out = vec![0; FRAME_HEADER_LEN + len];
    encode_batch_into(&mut out, offset, entries.into_iter());
    out
}

fn segment_header_seeds(log: &RecoveryInput) -> Vec<(String, Vec<u8>)> {
    let segment = first_segment(log).log.clone().expect("segment file");
    let header = |base_offset, created_ms| {
        SegmentHeader {
            version: FORMAT_VERSION,
            base_offset,
            created_ms,
        }
        .encode()
        .to_vec()
    };
    let mut newer = header(0, 0);
    newer[8] = FORMAT_VERSION as u8 + 1;
    vec![
        seed("real-segment", segment),
        seed("max-base", header(u64::MAX, i64::MIN)),
        seed("newer-version", newer),
        seed("truncated-header", header(5, 5)[..31].to_vec()),
    ]
}

fn index_seeds(log: &RecoveryInput) -> Vec<(String, Vec<u8>)> {
    let segment = first_segment(log);
    let idx = segment.idx.clone().expect("idx file");
    let tix = segment.tix.clone().expect("tix file");
    // The 28-byte parameter block index_entries reads before the entries.
    let params = |relative_offset: u32, timestamp: i64, segment_len: u64, relative_end: u64| {
        let mut out = relative_offset.to_le_bytes().to_vec();
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&segment_len.to_le_bytes());
        out.extend_from_slice(&relative_end.to_le_bytes());
        out
    };
    let offsets: Vec<u8> = [(0u32, 32u32), (3, 150), (9, 400)]
        .iter()
        .flat_map(|&(relative_offset, position)| {
            OffsetEntry {
                relative_offset,
                position,
            }
            .encode()
        })
        .collect();
    let times: Vec<u8> = [(100i64, 0u32), (250, 3), (900, 9)]
        .iter()
        .flat_map(|&(timestamp, relative_offset)| {
            TimeEntry {
                timestamp,
                relative_offset,
            }
            .encode()
        })
        .collect();
    let with = |params: Vec<u8>, entries: &[u8]| [params, entries.to_vec()].concat();
    vec![
        seed("real-idx-file", idx.clone()),
        seed("real-tix-file", tix.clone()),
        seed("real-idx-entries", with(params(2, 1003, 256, 8), &idx[24..])),
        seed("real-tix-entries", with(params(2, 1003, 256, 8), &tix[24..])),
        seed("offset-entries", with(params(5, 0, 1000, 20), &offsets)),
        seed("time-entries", with(params(0, 300, 0, 20), &times)),
        seed("partial-entry", with(params(1, 1, 1, 1), &offsets[..11])),
        seed(
            "max-base-idx-header",
            encode_index_header(IndexKind::Offset, u64::MAX).to_vec(),
        ),
        seed("max-params", params(u32::MAX, i64::MAX, u64::MAX, u64::MAX)),
    ]
}

fn checkpoint_seeds(log: &RecoveryInput) -> Vec<(String, Vec<u8>)> {
    let real = log.checkpoint.clone().expect("checkpoint file");
    let extreme = Checkpoint {
        base_offset: u64::MAX,
        end_offset: u64::MAX,
        end_pos: u64::MAX,
        max_timestamp: i64::MIN,
        write_limit_units: u16::MAX,
    };
    vec![
        seed("real-checkpoint", real.clone()),
        seed("extreme-fields", extreme.encode().to_vec()),
        seed("truncated", real[..47].to_vec()),
    ]
}

fn state_event_seeds() -> Vec<(String, Vec<u8>)> {
    let failure = |at_ms, reason: &str| Failure {
        at_ms,
        reason: reason.into(),
    };
    let entry = |offset, failures| EntryState {
        offset,
        attempts: 3,
        not_before_ms: 5,
        done: false,
        failures,
    };
    let events = [
        ("committed", StateEvent::Committed(9)),
        (
            "delivered",
            StateEvent::Delivered {
                offset: 1,
                attempt: 2,
                lease_until_ms: -3,
            },
        ),
        (
            "delivered-run",
            StateEvent::DeliveredRun {
                offset: 1,
                count: MAX_DELIVERED_RUN,
                attempt: 1,
                lease_until_ms: 3,
            },
        ),
        ("acked", StateEvent::Acked(4)),
        (
            "released",
            StateEvent::Released {
                offset: 5,
                not_before_ms: 6,
                failure: failure(7, "timeout ü"),
            },
        ),
        (
            "dead-intent",
            StateEvent::DeadIntent {
                offset: 7,
                dlq_end: 8,
                failure: failure(9, "rejected"),
            },
        ),
        ("dead-lettered", StateEvent::DeadLettered(u64::MAX)),
        (
            "snapshot",
            StateEvent::Snapshot {
                next_offset: 10,
                entries: vec![
                    entry(3, vec![failure(1, "a"), failure(2, "")]),
                    entry(4, (0..16).map(|i| failure(i, "x")).collect()),
                ],
            },
        ),
    ];
    let mut seeds: Vec<_> = events.iter().map(|(name, e)| seed(name, e.encode())).collect();
    // A reason longer than the encoder writes: decodes, and re-encodes cut.
    let mut long = vec![4];
    long.extend_from_slice(&[0; 16]);
    long.extend_from_slice(&1100u16.to_le_bytes());
    long.extend(std::iter::repeat_n(b'r', 1100));
    seeds.push(seed("reason-longer-than-kept", long));
    seeds.push(seed("unknown-tag", [9, 0, 0]));
    seeds.push(seed(
        "snapshot-count-max",
        [7, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
    ));
    seeds
}

fn correlation_seeds() -> Vec<(String, Vec<u8>)> {
    let table = |capacity: u64, entries: &[(u128, u64)]| {
        let mut bytes = vec![0u8; CorrelationTable::<Vec<u8>>::bytes_for(capacity)];
        let mut table = CorrelationTable::format(&mut bytes, capacity, 40);
        for &(id, offset) in entries {
            table.insert(id, offset);
        }
        table.set_progress(41, true);
        bytes
    };
    let many: Vec<(u128, u64)> = (1..200u64).map(|i| (u128::from(i % 37) << 70 | 1, i)).collect();
    vec![
        seed("capacity-1024", table(1024, &many)),
        seed("capacity-2-one-entry", table(2, &[(7, 3)])),
        seed("capacity-8", table(8, &[(1, 1), (1, 2), (9, 3)])),
        seed("capacity-2-empty", table(2, &[])),
        // As an operation sequence: capacity 4, inserts of colliding ids, finds.
        seed(
            "ops",
            [
                2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 1, 5, 2, 0, 0, 0, 0, 0, 0, 0, 2, 5,
                3, 1, 3,
            ],
        ),
    ]
}

fn recovery_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    // A closed log of three segments.
    let closed = small_log_files();
    seeds.push(seed("closed-three-segments", closed.encode()));
    // The same log crashed by a power loss mid-append (checkpoint, no marker).
    let sim = SimStorage::new();
    let log = Log::open(DIR, options(&sim, Durability::Always, 512, 16)).expect("open");
    append_some(&log, 0..5);
    sim.inject(Fault::HaltAfterWrites { after: 1 });
    let _ = log.append(&Record::new(b"torn").timestamp(9));
    drop(log);
    sim.power_loss(3);
    let mut crashed = RecoveryInput::capture(&sim, Path::new(DIR));
    (crashed.segment_shift, crashed.interval_shift) = (1, 4);
    seeds.push(seed("crashed-mid-append", crashed.encode()));
    // An Os log that was never flushed and lost its tail to a power loss.
    let sim = SimStorage::new();
    let log = Log::open(DIR, options(&sim, Durability::Os, 256, 1)).expect("open");
    append_some(&log, 0..6);
    sim.inject(Fault::HaltAfterSyncs { after: 0 });
    drop(log);
    sim.power_loss(5);
    let mut os = RecoveryInput::capture(&sim, Path::new(DIR));
    os.durability_os = true;
    seeds.push(seed("os-power-loss", os.encode()));
    // Hand-made: a lone segment near the end of the offset space.
    for (name, base) in [("base-max-minus-one", u64::MAX - 1), ("base-max", u64::MAX)] {
        let mut log = SegmentHeader {
            version: FORMAT_VERSION,
            base_offset: base,
            created_ms: 0,
        }
        .encode()
        .to_vec();
        log.extend(frame(base, b"k", &[], b"v"));
        let input = RecoveryInput {
            segments: vec![SegmentFiles {
                base,
                log: Some(log),
                idx: None,
                tix: None,
            }],
            ..RecoveryInput::default()
        };
        seeds.push(seed(name, input.encode()));
    }
    seeds
}

fn spec(i: u8) -> RecordSpec {
    RecordSpec {
        value_len: i.wrapping_mul(7),
        key_len: i,
        headers: i,
        fill: i,
        ts_step: if i.is_multiple_of(4) { -2 } else { 5 },
    }
}

fn log_ops_seeds() -> Vec<(String, Vec<u8>)> {
    let appends = |range: std::ops::Range<u8>| range.map(|i| Op::Append(spec(i))).collect::<Vec<_>>();
    let with = |mut ops: Vec<Op>, more: &[Op]| {
        ops.extend_from_slice(more);
        ops
    };
    // Config bits 0-1: durability (3 = Os), 2-4: segment size, 5-7: index interval.
    let always_small = 1 << 5; // Always, 256-byte segments, an index entry every 16 bytes
    let os = 2 << 5 | 3 << 2 | 3; // Os, 640-byte segments, every 64 bytes
    vec![
        seed(
            "appends-reads-reopen",
            encode_ops(
                always_small,
                &with(
                    appends(0..12),
                    &[
                        Op::Read(3),
                        Op::Cursor {
                            from: 3,
                            pick: 5,
                            count: 9,
                        },
                        Op::CloseReopen,
                        Op::Read(11),
                    ],
                ),
            ),
        ),
        seed(
            "halt-after-syncs-then-power-loss",
            encode_ops(
                always_small,
                &with(
                    appends(0..6),
                    &[
                        Op::Halt {
                            writes: false,
                            after: 3,
                        },
                        Op::Batch(vec![spec(1), spec(2)]),
                        Op::Append(spec(9)),
                        Op::Append(spec(10)),
                        Op::PowerLoss(7),
                    ],
                ),
            ),
        ),
        seed(
            "halt-after-writes-then-kill",
            encode_ops(
                always_small,
                &with(
                    appends(0..4),
                    &[
                        Op::Halt {
                            writes: true,
                            after: 2,
                        },
                        Op::Append(spec(5)),
                        Op::Append(spec(6)),
                        Op::Read(1),
                        Op::Kill,
                        Op::CursorNext(15),
                    ],
                ),
            ),
        ),
        seed(
            "os-flush-power-loss",
            encode_ops(
                os,
                &with(
                    appends(0..5),
                    &[Op::Flush, Op::Append(spec(40)), Op::PowerLoss(2), Op::Read(5)],
                ),
            ),
        ),
        seed(
            "truncate-under-a-long-cursor",
            encode_ops(
                always_small,
                &with(
                    appends(0..10),
                    &[
                        Op::CursorNext(2),
                        Op::TruncateBefore(8),
                        Op::CursorNext(15),
                        Op::Batch((0..7).map(|i| spec(i * 9)).collect()),
                        Op::TruncateBefore(255),
                        Op::CloseReopen,
                    ],
                ),
            ),
        ),
    ]
}

/// Found by `segment_recovery`: a valid-looking time index whose entry names
/// a record past the segment's end made a timestamp seek skip the whole
/// segment (and answer "no such record"). A hint past the records is wrong,
/// so the seek scans the segment from its start instead.
#[test]
fn a_time_index_entry_past_the_segment_end_does_not_hide_the_segment_from_a_seek() {
    let sim = SimStorage::new();
    let log = Log::open(DIR, options(&sim, Durability::Always, 1024, 64)).expect("open");
    append_some(&log, 0..3);
    log.close().expect("close");
    let mut tix = encode_index_header(IndexKind::Time, 0).to_vec();
    tix.extend(
        TimeEntry {
            timestamp: -1,
            relative_offset: u32::MAX,
        }
        .encode(),
    );
    sim.write_file(&Path::new(DIR).join("00000000000000000000.tix"), &tix);
    let log = Log::open(DIR, options(&sim, Durability::Always, 1024, 64)).expect("reopen");
    for (timestamp, first) in [(0, 0), (1_001, 1), (1_002, 2), (1_003, 3)] {
        let cursor = log.cursor(logbus::Position::Timestamp(timestamp)).expect("seek");
        assert_eq!(cursor.offset(), first, "seek to {timestamp}");
    }
}
