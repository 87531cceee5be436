//! Damaged and hostile files: what a log does when its bytes are not what
//! it wrote.
//!
//! Files are untrusted input. Whatever a segment or index file holds, opening
//! and reading the log must give a clear `Error::Corrupt` naming the damaged
//! file, or a recovered prefix of the records, and never a panic, a wrong
//! record or silently skipped data. Damage inside sealed segments is never
//! repaired away: it is reported on every read that meets it.

mod common;

use std::fs;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::logs::{bases, copy_log, frames, key, segment_file, value};
use logbus::format::{FRAME_MAX_BYTES, INDEX_HEADER_LEN, IndexKind, OffsetEntry, encode_index_header};
use logbus::{CorruptKind, Durability, Error, Log, LogOptions, Position, Record};

const RECORDS: u64 = 40;
const CLEAN: &str = ".clean";

fn options() -> LogOptions {
    LogOptions::default()
        .durability(Durability::Os)
        .segment_bytes(1024)
        .index_interval_bytes(64)
}

fn append_numbered(log: &Log, range: Range<u64>) {
    for i in range {
        let (k, v) = (key(i), value(i));
        let record = Record::new(&v).key(&k).timestamp(1_000 + i as i64);
        assert_eq!(log.append(&record).unwrap(), i);
    }
}

/// A closed log of `RECORDS` numbered records in several segments.
fn numbered_log(clean: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // Written under `Always`, whose rolls are sealed before the append
    // returns, so every segment ends where `segment_bytes` says (under `Os`
    // a segment grows on while the seal of the one before is under way).
    let log = Log::open(dir.path(), options().durability(Durability::Always)).unwrap();
    append_numbered(&log, 0..RECORDS);
    log.close().unwrap();
    if !clean {
        fs::remove_file(dir.path().join(CLEAN)).unwrap();
    }
    dir
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

// ---------------------------------------------------------------------------
// Garbage files.
// ---------------------------------------------------------------------------

/// What opening a directory with one garbage file must give.
#[derive(Debug, Clone)]
enum Expect {
    /// `Error::Corrupt` naming the garbage file.
    Corrupt,
    /// The log opens with records `0..end` (the damaged file's records that
    /// survive may be unreadable, but only as `Error::Corrupt` naming it),
    /// and the garbage file is reported rebuilt or removed when it was.
    Recovered { end: u64, rebuilt: bool, removed: bool },
}

struct Case {
    name: String,
    file: String,
    contents: Vec<u8>,
    expect: Expect,
}

/// Segment garbage. The segment at `sealed` is followed by others; the one
/// at `last` is the active segment.
fn segment_cases(dir: &Path, sealed: u64, last: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    for (role, base) in [("sealed", sealed), ("last", last)] {
        let file = segment_file(dir, base, "log")
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let original = fs::read(dir.join(&file)).unwrap();
        let last_frame = frames(&original).last().unwrap().position as usize;
        let mut wrong_magic = original.clone();
        wrong_magic[..8].copy_from_slice(b"NOTLOGBS");
        let mut huge_length = original.clone();
        huge_length[last_frame..last_frame + 4].copy_from_slice(&(FRAME_MAX_BYTES as u32).to_le_bytes());
        let mut max_length = original.clone();
        max_length[last_frame..last_frame + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        // The last segment's header was synced before the checkpoint that
        // names it: a damaged header there is corruption too, never a
        // segment torn while being created (which would be deleted).
        let header_damage = Expect::Corrupt;
        // Open scans a sealed segment's frames after its last index entry
        // to check that it ends where the next begins, so a damaged last
        // frame there fails the open; the active segment's tail is cut.
        let frame_damage = match role {
            "sealed" => Expect::Corrupt,
            _ => Expect::Recovered {
                end: RECORDS - 1,
                rebuilt: false,
                removed: false,
            },
        };
        let variants = [
            (
                "random bytes",
                random_bytes(base, original.len()),
                header_damage.clone(),
            ),
            ("zeros", vec![0; original.len()], header_damage.clone()),
            ("wrong magic, frames intact", wrong_magic, Expect::Corrupt),
            (
                "header cut to 20 bytes",
                original[..20].to_vec(),
                header_damage.clone(),
            ),
            ("empty", Vec::new(), header_damage),
            (
                "last frame claims FRAME_MAX_BYTES",
                huge_length,
                frame_damage.clone(),
            ),
            ("last frame claims u32::MAX bytes", max_length, frame_damage),
        ];
        for (what, contents, expect) in variants {
            cases.push(Case {
                name: format!("{role} segment: {what}"),
                file: file.clone(),
                contents,
                expect,
            });
        }
    }
    cases
}

/// Index garbage, for both indexes of a sealed and of the active segment.
/// Indexes are hints: every case must recover the whole log.
fn index_cases(dir: &Path, sealed: u64, last: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    for (role, base) in [("sealed", sealed), ("last", last)] {
        for (ext, kind) in [("idx", IndexKind::Offset), ("tix", IndexKind::Time)] {
            let path = segment_file(dir, base, ext);
            let file = path.file_name().unwrap().to_str().unwrap().to_owned();
            let original = fs::read(&path).unwrap();
            assert!(
                original.len() > INDEX_HEADER_LEN + kind.entry_len(),
                "{file} has no entries"
            );
            let mut wrong_magic = original.clone();
            wrong_magic[0] ^= 0xFF;
            let mut foreign = encode_index_header(kind, base + 1).to_vec();
            foreign.extend_from_slice(&original[INDEX_HEADER_LEN..]);
            let variants = [
                ("random bytes", random_bytes(base + 7, 100)),
                (
                    "random bytes, whole entries",
                    random_bytes(base + 8, INDEX_HEADER_LEN + 10 * 24),
                ),
                ("zeros", vec![0; original.len()]),
                ("wrong magic", wrong_magic),
                ("header names another base", foreign),
                ("header cut to 10 bytes", original[..10].to_vec()),
                ("last entry cut short", original[..original.len() - 3].to_vec()),
                ("empty", Vec::new()),
            ];
            for (what, contents) in variants {
                cases.push(Case {
                    name: format!("{role} .{ext}: {what}"),
                    file: file.clone(),
                    contents,
                    expect: Expect::Recovered {
                        end: RECORDS,
                        rebuilt: true,
                        removed: false,
                    },
                });
            }
        }
    }
    cases
}

/// Opens a copy of `pristine` with one file replaced and checks the outcome.
fn run_case(pristine: &Path, case: &Case) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    copy_log(pristine, dir);
    let damaged = dir.join(&case.file);
    fs::write(&damaged, &case.contents).unwrap();
    let opened = Log::open(dir, options());
    match (&case.expect, opened) {
        (Expect::Corrupt, Err(Error::Corrupt { file, .. })) => assert_eq!(file, damaged),
        (
            Expect::Recovered {
                end,
                rebuilt,
                removed,
            },
            Ok(log),
        ) => {
            let report = log.recovery_report();
            assert_eq!(log.end_offset(), *end, "end offset");
            assert_eq!(report.rebuilt_indexes.contains(&damaged), *rebuilt, "{report:?}");
            assert_eq!(report.removed_files.contains(&damaged), *removed, "{report:?}");
            check_reads(&log, &damaged);
            append_numbered(&log, *end..*end + 1);
            assert_eq!(log.read(*end).unwrap().unwrap().value(), &value(*end)[..]);
        }
        (expect, got) => panic!("expected {expect:?}, got {:?}", got.map(|_| "an open log")),
    }
}

/// Every offset below the end reads back as written, or fails as corruption
/// of `damaged`; a cursor agrees.
fn check_reads(log: &Log, damaged: &Path) {
    let corrupt_in_damaged = |e: &Error| matches!(e, Error::Corrupt { file, .. } if file == damaged);
    for i in 0..log.end_offset() {
        match log.read(i) {
            Ok(Some(record)) => assert_eq!((record.offset(), record.value()), (i, &value(i)[..])),
            Err(e) if corrupt_in_damaged(&e) => {}
            other => panic!("read({i}): {other:?}"),
        }
    }
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    for i in 0..log.end_offset() {
        match cursor.next() {
            Ok(Some(record)) => assert_eq!(record.offset(), i),
            Err(e) if corrupt_in_damaged(&e) => break,
            other => panic!("cursor at {i}: {other:?}"),
        }
    }
}

fn run_cases(pristine: &Path, cases: &[Case]) -> usize {
    let mut failures = Vec::new();
    for case in cases {
        let outcome = catch_unwind(AssertUnwindSafe(|| run_case(pristine, case)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{} ({}): {message}", case.name, case.file));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn garbage_segment_files_give_corrupt_or_a_recovered_prefix_never_a_panic() {
    let pristine = numbered_log(true);
    let all = bases(pristine.path());
    assert!(all.len() >= 3);
    let cases = segment_cases(pristine.path(), all[1], *all.last().unwrap());
    let ran = run_cases(pristine.path(), &cases);
    assert_eq!(ran, 14);
}

#[test]
fn garbage_index_files_are_rebuilt_and_the_whole_log_reads_back() {
    let pristine = numbered_log(true);
    let all = bases(pristine.path());
    let cases = index_cases(pristine.path(), all[1], *all.last().unwrap());
    let ran = run_cases(pristine.path(), &cases);
    assert_eq!(ran, 32);
}

/// Offset-index entries that pass every structural check (right header,
/// increasing, inside the segment) but point between frames.
fn misleading_offset_index(dir: &Path, base: u64) -> Vec<u8> {
    let segment = fs::read(segment_file(dir, base, "log")).unwrap();
    let mut bytes = encode_index_header(IndexKind::Offset, base).to_vec();
    for (i, frame) in frames(&segment).iter().enumerate() {
        let entry = OffsetEntry {
            relative_offset: i as u32,
            position: frame.position as u32 + 5,
        };
        bytes.extend_from_slice(&entry.encode());
    }
    bytes
}

#[test]
fn plausible_but_wrong_index_entries_never_lose_or_misread_records() {
    let pristine = numbered_log(true);
    let all = bases(pristine.path());
    let mut cases = Vec::new();
    for base in [all[1], *all.last().unwrap()] {
        cases.push(Case {
            name: format!("segment {base}: offset index points inside frames"),
            file: segment_file(pristine.path(), base, "idx")
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .into(),
            contents: misleading_offset_index(pristine.path(), base),
            // Open scans from the last entry of every segment's index (the
            // sealed ones, to find where they end), so a wrong entry is
            // noticed and the index rebuilt.
            expect: Expect::Recovered {
                end: RECORDS,
                rebuilt: true,
                removed: false,
            },
        });
    }
    run_cases(pristine.path(), &cases);
}

// ---------------------------------------------------------------------------
// A checksum mismatch inside sealed data.
// ---------------------------------------------------------------------------

#[test]
fn checksum_mismatch_in_a_sealed_segment_is_reported_on_every_read_and_never_skipped() {
    let scratch = numbered_log(true);
    let dir = scratch.path();
    let all = bases(dir);
    let (base, next_base) = (all[0], all[1]);
    let path = segment_file(dir, base, "log");
    let mut bytes = fs::read(&path).unwrap();
    let victim_offset = 5;
    let victim = frames(&bytes)[victim_offset as usize];
    let (position, len) = (victim.position as usize, victim.len);
    bytes[position + len - 2] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let is_the_damage = |e: &Error| {
        matches!(e, Error::Corrupt { file, position: at, kind: CorruptKind::Checksum { .. } }
            if *file == path && *at == position as u64)
    };

    for round in ["before reopening", "after reopening"] {
        let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{round}: {e}"));
        assert!(log.recovery_report().is_pristine(), "{round}");
        match log.read(victim_offset) {
            Err(e) => assert!(is_the_damage(&e), "{round}: {e:?}"),
            Ok(r) => panic!("{round}: damaged record read as {r:?}"),
        }
        for i in (0..victim_offset).chain(next_base..RECORDS) {
            assert_eq!(
                log.read(i).unwrap().unwrap().value(),
                &value(i)[..],
                "{round}: offset {i}"
            );
        }
        // Records after the damage in the same segment read correctly or
        // fail naming the damage; none is ever another record.
        for i in victim_offset + 1..next_base {
            match log.read(i) {
                Ok(Some(r)) => assert_eq!((r.offset(), r.value()), (i, &value(i)[..]), "{round}"),
                Err(e) => assert!(is_the_damage(&e), "{round}: read({i}): {e:?}"),
                Ok(None) => panic!("{round}: offset {i} vanished"),
            }
        }
        let mut cursor = log.cursor(Position::Earliest).unwrap();
        for i in 0..victim_offset {
            assert_eq!(cursor.next().unwrap().unwrap().offset(), i, "{round}");
        }
        for attempt in 0..3 {
            match cursor.next() {
                Err(e) => assert!(is_the_damage(&e), "{round}: attempt {attempt}: {e:?}"),
                Ok(r) => panic!("{round}: cursor went past the damage: {r:?}"),
            }
        }
        let mut cursor = log.cursor(Position::Offset(victim_offset)).unwrap();
        assert!(cursor.next().is_err_and(|e| is_the_damage(&e)), "{round}");
        log.close().unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "{round}: sealed data was modified"
        );
    }
}

#[test]
fn checksum_mismatch_in_the_sealed_segment_before_an_unclean_restart_is_still_reported() {
    let scratch = numbered_log(false);
    let dir = scratch.path();
    let all = bases(dir);
    let path = segment_file(dir, all[1], "log");
    let mut bytes = fs::read(&path).unwrap();
    let first = frames(&bytes)[0];
    let (position, len) = (first.position as usize, first.len);
    bytes[position + len / 2] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let log = Log::open(dir, options()).unwrap();
    assert!(log.recovery_report().truncations.is_empty());
    assert!(matches!(
        log.read(all[1]),
        Err(Error::Corrupt { file, position: at, .. }) if file == path && at == position as u64
    ));
    assert_eq!(log.end_offset(), RECORDS);
    assert_eq!(fs::read(&path).unwrap(), bytes);
}
