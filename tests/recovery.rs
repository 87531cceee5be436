//! Recovery at open, one test per row of the decision table in
//! `src/log/recovery.rs`, plus the torn-tail and zero-fill sweeps.
//!
//! Recovery decides what on disk is the log after a crash, so every rule is
//! checked by its visible effect: the files left in the directory, the
//! [`RecoveryReport`], the offsets and bytes read back, and the offset the
//! next append gets. The torn-tail sweep cuts and bit-flips the last record
//! at every position on the real file system, because that is the damage a
//! crash actually leaves and the path users run.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::logs::{FrameAt, bases, copy_log, frames, key, segment_file, value};
use common::storage::{Hooked, Hooks};
use logbus::format::{
    FORMAT_VERSION, FRAME_HEADER_LEN, IndexKind, OFFSET_ENTRY_LEN, OffsetEntry, SEGMENT_HEADER_LEN,
    SegmentHeader, TimeEntry, decode_frame, decode_segment_header, encode_frame, encode_index_header,
};
use logbus::storage::{Fault, SimStorage, Storage};
use logbus::{CorruptKind, Durability, Error, Log, LogOptions, Position, Record, RecoveryReport, Truncation};

const SEGMENT_BYTES: u64 = 1024;
const INDEX_INTERVAL: u64 = 64;
const CLEAN: &str = ".clean";
const CHECKPOINT: &str = ".checkpoint";

/// A change made to a file's bytes behind the log's back.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

/// Small segments and a dense index, so a few dozen records span several
/// segments and most records are indexed. `Os` durability keeps the sweeps
/// fast; `close` still syncs everything.
/// Without preallocation, so a segment file is exactly its frames and the
/// tests can damage and measure it byte by byte; preallocated segments have
/// their own tests (see "Zero-filled tails").
fn options() -> LogOptions {
    LogOptions::default()
        .durability(Durability::Os)
        .segment_bytes(SEGMENT_BYTES)
        .index_interval_bytes(INDEX_INTERVAL)
        .preallocate(false)
}

fn timestamp(i: u64) -> i64 {
    1_000 + i as i64 * 10
}

fn append_numbered(log: &Log, range: std::ops::Range<u64>) {
    for i in range {
        let (k, v) = (key(i), value(i));
        let record = Record::new(&v).key(&k).header("n", &k).timestamp(timestamp(i));
        assert_eq!(log.append(&record).unwrap(), i);
    }
}

/// A copy of the log in `pristine`, in a fresh directory, with the segment
/// at `base` changed by `damage`: the directory, the segment's path and
/// the bytes it now holds.
fn damaged_copy(
    pristine: &Path,
    base: u64,
    damage: impl FnOnce(&mut Vec<u8>),
) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let scratch = tempfile::tempdir().unwrap();
    copy_log(pristine, scratch.path());
    let path = segment_file(scratch.path(), base, "log");
    let mut bytes = fs::read(&path).unwrap();
    damage(&mut bytes);
    fs::write(&path, &bytes).unwrap();
    (scratch, path, bytes)
}

/// Checks that offsets `range` read back as written, by offset and by cursor.
fn assert_numbered(log: &Log, range: std::ops::Range<u64>) {
    for i in range.clone() {
        let record = log
            .read(i)
            .unwrap()
            .unwrap_or_else(|| panic!("offset {i} missing"));
        assert_eq!(
            (record.offset(), record.value(), record.key()),
            (i, &value(i)[..], &key(i)[..])
        );
        assert_eq!(record.header("n"), Some(&key(i)[..]));
        assert_eq!(record.timestamp(), timestamp(i));
    }
    let mut cursor = log.cursor(Position::Offset(range.start)).unwrap();
    for i in range.clone() {
        assert_eq!(cursor.next().unwrap().unwrap().value(), &value(i)[..]);
    }
    if range.end == log.end_offset() {
        assert!(cursor.next().unwrap().is_none());
    }
}

/// A closed log of `count` numbered records; `clean` keeps the clean-close
/// marker, otherwise it and the checkpoint are removed as if the process
/// had crashed after its last sync but before any checkpoint.
fn numbered_log(count: u64, clean: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // Written under `Always`, whose rolls are sealed before the append
    // returns, so every segment ends where `segment_bytes` says (under `Os`
    // a segment grows on while the seal of the one before is under way).
    let log = Log::open(dir.path(), options().durability(Durability::Always)).unwrap();
    append_numbered(&log, 0..count);
    log.close().unwrap();
    if !clean {
        crash_before_checkpoint(dir.path());
    }
    dir
}

/// Turns a cleanly closed log into one that crashed before it ever wrote a
/// recovery checkpoint: no clean marker, no checkpoint, so recovery scans
/// the whole active segment.
fn crash_before_checkpoint(dir: &Path) {
    fs::remove_file(dir.join(CLEAN)).unwrap();
    fs::remove_file(dir.join(CHECKPOINT)).unwrap();
}

/// Turns a cleanly closed log into one that crashed after its last sync:
/// no clean marker, and the checkpoint (naming the last segment) kept, so
/// recovery holds every segment before the last to be sealed and synced.
fn crash_after_checkpoint(dir: &Path) {
    fs::remove_file(dir.join(CLEAN)).unwrap();
}

/// Waits until the checkpoint `read` returns names the segment starting at
/// `base`: the seal of the roll that created it (on a thread of its own
/// under `Os`) is done.
fn await_seal(base: u64, read: impl Fn() -> Option<Vec<u8>>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let named = read()
            .and_then(|bytes| logbus::format::Checkpoint::decode(&bytes).ok())
            .map(|c| c.base_offset);
        if named == Some(base) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the seal of segment {base} never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Every segment and index file's bytes, by name.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != ".lock")
        .map(|e| (e.file_name().into_string().unwrap(), fs::read(e.path()).unwrap()))
        .collect()
}

fn sorted(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths
}

// ---------------------------------------------------------------------------
// Decision table, row by row.
// ---------------------------------------------------------------------------

#[test]
fn opening_a_directory_without_segments_creates_segment_zero() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("not/yet/there");
    let log = Log::open(&dir, options()).unwrap();
    let report = log.recovery_report();
    assert!(!report.clean_shutdown);
    assert_eq!(report.segments, 1);
    assert!(report.is_pristine());
    assert_eq!((log.start_offset(), log.end_offset()), (0, 0));
    let header = fs::read(segment_file(&dir, 0, "log")).unwrap();
    assert_eq!(header.len(), SEGMENT_HEADER_LEN);
    assert_eq!(decode_segment_header(&header).unwrap().base_offset, 0);
    assert!(segment_file(&dir, 0, "idx").exists() && segment_file(&dir, 0, "tix").exists());
    append_numbered(&log, 0..3);
    assert_numbered(&log, 0..3);
}

#[test]
fn orphan_index_files_without_their_segment_are_deleted_and_reported() {
    let pristine = numbered_log(40, true);
    let dir = pristine.path();
    let orphans = [
        segment_file(dir, 777, "idx"),
        segment_file(dir, 777, "tix"),
        segment_file(dir, 1_000_000, "idx"),
    ];
    for orphan in &orphans {
        fs::write(orphan, b"left behind by a crash").unwrap();
    }
    let unrelated = dir.join("notes.txt");
    fs::write(&unrelated, b"not ours").unwrap();
    let log = Log::open(dir, options()).unwrap();
    let report = log.recovery_report();
    assert_eq!(sorted(report.removed_files.clone()), sorted(orphans.to_vec()));
    assert!(report.truncations.is_empty() && report.clean_shutdown);
    assert!(orphans.iter().all(|p| !p.exists()));
    assert_eq!(fs::read(&unrelated).unwrap(), b"not ours");
    assert_numbered(&log, 0..40);
}

/// Contents a crash can leave in a segment file whose creation it
/// interrupted: nothing, part of the header, or a header that never landed.
fn torn_headers(base: u64) -> Vec<(&'static str, Vec<u8>)> {
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        base_offset: base,
        created_ms: 1,
    }
    .encode();
    let mut bad_crc = header.to_vec();
    bad_crc[12] ^= 0xFF;
    bad_crc.extend_from_slice(&[0; 50]);
    vec![
        ("empty file", Vec::new()),
        ("first 10 header bytes", header[..10].to_vec()),
        (
            "header minus its last byte",
            header[..SEGMENT_HEADER_LEN - 1].to_vec(),
        ),
        ("32 zero bytes", vec![0; SEGMENT_HEADER_LEN]),
        ("header with bad crc, zeros after", bad_crc),
    ]
}

#[test]
fn torn_header_of_last_segment_without_frames_is_deleted_and_log_continues_at_its_base() {
    let pristine = numbered_log(40, false);
    let sealed_bases = bases(pristine.path());
    assert!(sealed_bases.len() >= 3, "test needs several segments");
    for (case, bytes) in torn_headers(40) {
        for with_index in [false, true] {
            let scratch = tempfile::tempdir().unwrap();
            let dir = scratch.path();
            copy_log(pristine.path(), dir);
            let torn = segment_file(dir, 40, "log");
            fs::write(&torn, &bytes).unwrap();
            let mut expected_removed = vec![torn.clone()];
            if with_index {
                fs::write(segment_file(dir, 40, "idx"), b"").unwrap();
                expected_removed.push(segment_file(dir, 40, "idx"));
            }
            let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{case}: {e}"));
            let report = log.recovery_report();
            assert_eq!(
                sorted(report.removed_files.clone()),
                sorted(expected_removed),
                "{case}"
            );
            assert!(report.truncations.is_empty(), "{case}");
            assert_eq!(report.segments, sealed_bases.len(), "{case}");
            assert!(!torn.exists(), "{case}");
            assert_eq!(log.end_offset(), 40, "{case}");
            assert_numbered(&log, 0..40);
            append_numbered(&log, 40..45);
            assert_numbered(&log, 0..45);
            log.close().unwrap();
            let log = Log::open(dir, options()).unwrap();
            assert!(log.recovery_report().is_pristine(), "{case}");
            assert_numbered(&log, 0..45);
        }
    }
}

/// The checkpoint is written only after its segment's header was synced:
/// a last segment it names is never a torn creation, so wiping its header
/// (and every frame after it) is corruption of synced data, refused
/// without deleting anything.
#[test]
fn torn_looking_last_segment_named_by_the_checkpoint_is_corrupt_and_kept() {
    let pristine = numbered_log(40, true);
    let last = *bases(pristine.path()).last().unwrap();
    for (case, bytes) in torn_headers(last) {
        let (scratch, path, bytes) = damaged_copy(pristine.path(), last, |b| *b = bytes);
        let dir = scratch.path();
        let error = Log::open(dir, options()).expect_err(case);
        assert!(error.is_corruption(), "{case}: {error}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "{case}: the segment was changed");
        assert!(segment_file(dir, last, "idx").exists(), "{case}");
    }
}

#[test]
fn invalid_segment_header_otherwise_is_corrupt_and_changes_nothing() {
    let pristine = numbered_log(40, false);
    let first = bases(pristine.path())[0];
    type HeaderDamage = fn(&mut Vec<u8>);
    // `None`: a checksum mismatch (its values depend on the bytes).
    let cases: [(&str, u64, HeaderDamage, u64, Option<CorruptKind>); 4] = [
        (
            "sealed: bad magic",
            first,
            |b| b[0] ^= 0xFF,
            0,
            Some(CorruptKind::BadMagic),
        ),
        (
            "sealed: unknown version",
            first,
            |b| b[8] = 3,
            0,
            Some(CorruptKind::UnsupportedVersion(3)),
        ),
        (
            "sealed: header names another base",
            first,
            |b| {
                let header = SegmentHeader {
                    version: FORMAT_VERSION,
                    base_offset: 1,
                    created_ms: 0,
                };
                b[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
            },
            16,
            Some(CorruptKind::OffsetMismatch {
                expected: 0,
                found: 1,
            }),
        ),
        (
            "sealed: header cut short",
            first,
            |b| b.truncate(20),
            0,
            Some(CorruptKind::Truncated {
                needed: SEGMENT_HEADER_LEN as u64,
                available: 20,
            }),
        ),
    ];
    assert_eq!(first, 0);
    for (case, base, damage, position, kind) in cases {
        let (scratch, path, _) = damaged_copy(pristine.path(), base, damage);
        let dir = scratch.path();
        let before = snapshot(dir);
        match Log::open(dir, options()) {
            Err(Error::Corrupt {
                file,
                position: at,
                kind: found,
            }) => {
                assert_eq!((file, at), (path.clone(), position), "{case}");
                match kind {
                    Some(kind) => assert_eq!(found, kind, "{case}"),
                    None => assert!(matches!(found, CorruptKind::Checksum { .. }), "{case}: {found:?}"),
                }
            }
            other => panic!("{case}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(snapshot(dir), before, "{case}: a failed open changed files");
    }
}

/// A roll writes its new segment's header without syncing it (the seal
/// syncs it later, in the background under `Os`), and writeback may take
/// the frames appended after it to disk first: a last segment that no
/// checkpoint names, with a bad header and frames after it, gets its header
/// back from its file name, and keeps its frames.
#[test]
fn bad_header_of_a_last_segment_no_checkpoint_names_with_frames_after_it_is_rewritten() {
    let pristine = numbered_log(40, false);
    let last = *bases(pristine.path()).last().unwrap();
    type HeaderDamage = fn(&mut Vec<u8>);
    let cases: [(&str, HeaderDamage); 3] = [
        ("bad magic", |b| b[0] ^= 0xFF),
        ("bad header crc", |b| b[30] ^= 0x01),
        ("zeroed header", |b| b[..SEGMENT_HEADER_LEN].fill(0)),
    ];
    for (case, damage) in cases {
        let (scratch, path, _) = damaged_copy(pristine.path(), last, damage);
        let dir = scratch.path();
        let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(log.recovery_report().removed_files.is_empty(), "{case}");
        assert_numbered(&log, 0..40);
        let decoded = decode_segment_header_of(&path).unwrap();
        assert_eq!(decoded.base_offset, last, "{case}");
        log.close().unwrap();
    }
    // Found by the model: retention had removed every earlier segment, so
    // the unsynced one is the first too.
    let (scratch, path, _) = damaged_copy(pristine.path(), last, |b| b[0] ^= 0xFF);
    let dir = scratch.path();
    for base in bases(dir).into_iter().filter(|&base| base < last) {
        for ext in ["log", "idx", "tix"] {
            fs::remove_file(segment_file(dir, base, ext)).unwrap();
        }
    }
    let log = Log::open(dir, options()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (last, 40));
    assert_numbered(&log, last..40);
    assert!(decode_segment_header_of(&path).is_ok());
}

fn decode_segment_header_of(path: &Path) -> Result<logbus::format::SegmentHeader, CorruptKind> {
    logbus::format::decode_segment_header(&fs::read(path).unwrap()[..SEGMENT_HEADER_LEN])
}

/// Ways a sealed segment's index can be missing or fail validation.
fn broken_sealed_indexes(
    dir: &Path,
    base: u64,
    next_base: u64,
) -> Vec<(&'static str, PathBuf, Option<Vec<u8>>)> {
    let idx = segment_file(dir, base, "idx");
    let tix = segment_file(dir, base, "tix");
    let original = fs::read(&idx).unwrap();
    let with_entries = |header: [u8; 24], entries: &[OffsetEntry]| {
        let mut bytes = header.to_vec();
        entries.iter().for_each(|e| bytes.extend_from_slice(&e.encode()));
        Some(bytes)
    };
    let header = encode_index_header(IndexKind::Offset, base);
    let entry = |relative_offset, position| OffsetEntry {
        relative_offset,
        position,
    };
    let mut wrong_magic = original.clone();
    wrong_magic[0] ^= 0xFF;
    let mut partial = original.clone();
    partial.extend_from_slice(&[1, 2, 3]);
    let mut tix_unordered = encode_index_header(IndexKind::Time, base).to_vec();
    for (timestamp, relative_offset) in [(2_000, 3u32), (1_500, 4)] {
        tix_unordered.extend_from_slice(
            &TimeEntry {
                timestamp,
                relative_offset,
            }
            .encode(),
        );
    }
    let rel_next = (next_base - base) as u32;
    vec![
        ("offset index deleted", idx.clone(), None),
        ("time index deleted", tix.clone(), None),
        ("offset index has wrong magic", idx.clone(), Some(wrong_magic)),
        (
            "offset index names another base",
            idx.clone(),
            with_entries(encode_index_header(IndexKind::Offset, base + 5), &[]),
        ),
        (
            "offset index points past the segment",
            idx.clone(),
            with_entries(header, &[entry(0, 1 << 20)]),
        ),
        (
            "offset index points into the header",
            idx.clone(),
            with_entries(header, &[entry(0, 4)]),
        ),
        (
            "offset index entries repeat",
            idx.clone(),
            with_entries(header, &[entry(0, 32), entry(0, 32)]),
        ),
        ("offset index has a partial entry", idx.clone(), Some(partial)),
        (
            "offset index names a record of the next segment",
            idx.clone(),
            with_entries(header, &[entry(0, 32), entry(rel_next, 33)]),
        ),
        ("time index not increasing", tix, Some(tix_unordered)),
    ]
}

#[test]
fn sealed_segment_with_missing_or_invalid_index_is_rebuilt_and_reads_stay_correct() {
    let pristine = numbered_log(40, false);
    let all = bases(pristine.path());
    let (base, next_base) = (all[1], all[2]);
    let cases = broken_sealed_indexes(pristine.path(), base, next_base);
    for (case, target, contents) in cases {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        copy_log(pristine.path(), dir);
        let target = dir.join(target.file_name().unwrap());
        match contents {
            Some(bytes) => fs::write(&target, bytes).unwrap(),
            None => fs::remove_file(&target).unwrap(),
        }
        let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{case}: {e}"));
        let rebuilt = sorted(log.recovery_report().rebuilt_indexes.clone());
        let (idx, tix) = (segment_file(dir, base, "idx"), segment_file(dir, base, "tix"));
        assert!(
            rebuilt.contains(&idx) && rebuilt.contains(&tix),
            "{case}: {rebuilt:?}"
        );
        assert!(log.recovery_report().is_pristine(), "{case}");
        assert_numbered(&log, 0..40);
        for i in [0, base, next_base - 1, next_base, 39] {
            let cursor = log.cursor(Position::Timestamp(timestamp(i))).unwrap();
            assert_eq!(cursor.offset(), i, "{case}: timestamp lookup");
        }
        log.close().unwrap();
        // The rebuild is deterministic: it writes what the appends wrote.
        for name in [&idx, &tix] {
            let original = fs::read(pristine.path().join(name.file_name().unwrap())).unwrap();
            assert_eq!(fs::read(name).unwrap(), original, "{case}: {}", name.display());
        }
        let log = Log::open(dir, options()).unwrap();
        assert!(
            log.recovery_report().rebuilt_indexes.is_empty(),
            "{case}: rebuilt twice"
        );
        assert_numbered(&log, 0..40);
    }
}

#[test]
fn sealed_segment_rebuild_that_meets_damage_is_corrupt_not_truncated() {
    let pristine = numbered_log(40, true);
    crash_after_checkpoint(pristine.path());
    let all = bases(pristine.path());
    let (base, next_base) = (all[1], all[2]);
    let segment = fs::read(segment_file(pristine.path(), base, "log")).unwrap();
    let found = frames(&segment);
    let victim = found[2];
    let last = *found.last().unwrap();
    assert_eq!(last.offset, next_base - 1);
    let cases: [(&str, Damage, u64); 2] = [
        (
            "a flipped byte in a frame",
            Box::new(move |b: &mut Vec<u8>| b[victim.position as usize + victim.len - 1] ^= 0x01),
            victim.position,
        ),
        (
            "the last frame missing",
            Box::new(move |b: &mut Vec<u8>| b.truncate(last.position as usize)),
            last.position,
        ),
    ];
    for (case, damage, position) in cases {
        let (scratch, path, bytes) = damaged_copy(pristine.path(), base, damage);
        let dir = scratch.path();
        fs::remove_file(segment_file(dir, base, "idx")).unwrap();
        match Log::open(dir, options()) {
            Err(Error::Corrupt {
                file, position: at, ..
            }) => {
                assert_eq!((file, at), (path.clone(), position), "{case}")
            }
            other => panic!("{case}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "{case}: sealed data was modified"
        );
    }
}

/// Sets the length of the file at `path`.
fn cut_to(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// What a crash leaves while a roll's seal runs in the background (`Os`):
/// `.checkpoint` still names the segment before the last, whose tail may
/// not have reached the disk. Recovery scans it like the active segment:
/// whole (even with unsynced zeros after its frames, its cut not synced),
/// it is sealed again and the log goes on; short of the next base, it ends
/// the log and the segment after it goes. Without any checkpoint the
/// segment before the last is first checked as a sealed one, and only if
/// that fails recovered the same way.
#[test]
fn a_seal_under_way_at_the_crash_is_finished_or_cut_with_the_segments_after_it() {
    let pristine = numbered_log(40, true);
    let all = bases(pristine.path());
    let (sealed, last) = (all[all.len() - 2], all[all.len() - 1]);
    let bytes = fs::read(segment_file(pristine.path(), sealed, "log")).unwrap();
    let final_frame = *frames(&bytes).last().unwrap();
    let naming_sealed = logbus::format::Checkpoint {
        base_offset: sealed,
        end_offset: sealed,
        end_pos: SEGMENT_HEADER_LEN as u64,
        max_timestamp: i64::MIN,
        write_limit_units: 0,
    }
    .encode();
    type Crash = fn(&Path, &[u8], u64);
    let cases: [(&str, Crash, u64); 4] = [
        (
            "whole",
            |dir, checkpoint, _| fs::write(dir.join(CHECKPOINT), checkpoint).unwrap(),
            40,
        ),
        (
            "whole, zeros after its frames",
            |dir, checkpoint, _| {
                fs::write(dir.join(CHECKPOINT), checkpoint).unwrap();
                let mut file = fs::OpenOptions::new().append(true).open(dir.join("seg")).unwrap();
                io::Write::write_all(&mut file, &[0; 300]).unwrap();
            },
            40,
        ),
        (
            "its last frame lost",
            |dir, checkpoint, cut| {
                fs::write(dir.join(CHECKPOINT), checkpoint).unwrap();
                cut_to(&dir.join("seg"), cut);
            },
            final_frame.offset,
        ),
        (
            "its last frame lost, no checkpoint",
            |dir, _, cut| {
                fs::remove_file(dir.join(CHECKPOINT)).unwrap();
                cut_to(&dir.join("seg"), cut);
            },
            final_frame.offset,
        ),
    ];
    for (case, crash, end) in cases {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        copy_log(pristine.path(), dir);
        crash_after_checkpoint(dir);
        // The case's damage goes through a link named `seg`.
        fs::hard_link(segment_file(dir, sealed, "log"), dir.join("seg")).unwrap();
        crash(dir, &naming_sealed, final_frame.position);
        fs::remove_file(dir.join("seg")).unwrap();
        let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{case}: {e}"));
        let report = log.recovery_report().clone();
        assert_eq!(log.end_offset(), end, "{case}: {report:?}");
        assert_numbered(&log, 0..end);
        let cut = end < 40;
        let removed = match cut {
            true => sorted(
                ["log", "idx", "tix"]
                    .map(|ext| segment_file(dir, last, ext))
                    .to_vec(),
            ),
            false => Vec::new(),
        };
        assert_eq!(sorted(report.removed_files.clone()), removed, "{case}");
        assert_eq!(report.segments, all.len() - usize::from(cut), "{case}");
        assert!(report.truncations.is_empty(), "{case}: {report:?}");
        append_numbered(&log, end..end + 5);
        log.close().unwrap();
        let log = Log::open(dir, options()).unwrap();
        assert!(log.recovery_report().is_pristine(), "{case}");
        assert_numbered(&log, 0..end + 5);
    }
}

/// A change to a log directory behind the log's back.
type DirDamage = Box<dyn Fn(&Path)>;

/// The ways a sealed segment can end before the next segment's base with
/// every remaining file intact: the case, the damage, the segment that now
/// ends early, the offset it ends at, and the base of the segment after it.
fn offset_gaps(pristine: &Path) -> Vec<(&'static str, DirDamage, u64, u64, u64)> {
    let all = bases(pristine);
    let segment = fs::read(segment_file(pristine, all[1], "log")).unwrap();
    let last = *frames(&segment).last().unwrap();
    // The cut removes only frames after the last index entry, so the index
    // stays valid and only the boundary check can notice it.
    let idx = fs::read(segment_file(pristine, all[1], "idx")).unwrap();
    let indexed = OffsetEntry::decode(&idx[idx.len() - OFFSET_ENTRY_LEN..]).unwrap();
    assert!(
        u64::from(indexed.position) < last.position,
        "the last frame is indexed"
    );
    let middle = all[1];
    let delete_middle: DirDamage = Box::new(move |dir| {
        for ext in ["log", "idx", "tix"] {
            fs::remove_file(segment_file(dir, middle, ext)).unwrap();
        }
    });
    let cut_at_frame: DirDamage = Box::new(move |dir| {
        let path = segment_file(dir, middle, "log");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..last.position as usize]).unwrap();
    });
    vec![
        (
            "a middle segment deleted with its indexes",
            delete_middle,
            all[0],
            all[1],
            all[2],
        ),
        (
            "a sealed segment cut at a frame boundary",
            cut_at_frame,
            all[1],
            last.offset,
            all[2],
        ),
    ]
}

#[test]
fn sealed_segment_ending_before_the_next_base_is_corrupt_naming_both_files() {
    for clean in [true, false] {
        // A sparse index, so the last frames of a segment are not indexed;
        // written under `Always`, so the segments end where `segment_bytes`
        // says (see `numbered_log`).
        let pristine = tempfile::tempdir().unwrap();
        let written = options().index_interval_bytes(512).durability(Durability::Always);
        let log = Log::open(pristine.path(), written).unwrap();
        append_numbered(&log, 0..40);
        log.close().unwrap();
        if !clean {
            crash_after_checkpoint(pristine.path());
        }
        for (case, damage, short, found, next) in offset_gaps(pristine.path()) {
            let scratch = tempfile::tempdir().unwrap();
            let dir = scratch.path();
            copy_log(pristine.path(), dir);
            damage(dir);
            // Open removes the clean marker before anything else, so that a
            // crash during the open is never taken for a clean close.
            let mut before = snapshot(dir);
            before.remove(CLEAN);
            let path = segment_file(dir, short, "log");
            let len = fs::metadata(&path).unwrap().len();
            match Log::open(dir, options()) {
                Err(Error::Corrupt { file, position, kind }) => {
                    assert_eq!((file, position), (path, len), "{case}");
                    let gap = CorruptKind::OffsetGap {
                        expected: next,
                        found,
                        next_segment: segment_file(dir, next, "log"),
                    };
                    assert_eq!(kind, gap, "{case}");
                }
                other => {
                    let opened = other.map(|log| log.end_offset());
                    panic!("{case} (clean: {clean}): expected Corrupt, got {opened:?}")
                }
            }
            assert!(snapshot(dir) == before, "{case}: a failed open changed files");
        }
    }
}

#[test]
fn clean_reopen_scans_only_from_the_last_index_entry() {
    let interval = 256;
    let options = || options().segment_bytes(64 << 10).index_interval_bytes(interval);
    let dir = tempfile::tempdir().unwrap();
    // Written under `Always`, so the segments end where `segment_bytes`
    // says and the last one holds the records past 64 KiB (under `Os` a
    // segment grows on while the seal before it is under way, and the last
    // one can be nearly empty).
    let log = Log::open(dir.path(), options().durability(Durability::Always)).unwrap();
    append_numbered(&log, 0..2_000);
    log.close().unwrap();
    let last = *bases(dir.path()).last().unwrap();
    let segment = fs::read(segment_file(dir.path(), last, "log")).unwrap();
    let largest_frame = frames(&segment).iter().map(|f| f.len).max().unwrap() as u64;
    assert!(
        segment.len() > 8 * interval as usize,
        "last segment too small to show anything"
    );

    let log = Log::open(dir.path(), options()).unwrap();
    let report = log.recovery_report().clone();
    assert!(report.clean_shutdown);
    assert!(report.scanned_bytes > 0);
    assert!(
        report.scanned_bytes <= interval + largest_frame,
        "scanned {} bytes of a {}-byte segment",
        report.scanned_bytes,
        segment.len()
    );
    assert!(report.rebuilt_indexes.is_empty() && report.is_pristine());
    assert_eq!(log.end_offset(), 2_000);
    assert_numbered(&log, 1_990..2_000);
    append_numbered(&log, 2_000..2_001);
}

#[test]
fn clean_reopen_with_a_wrong_last_index_entry_scans_everything_and_truncates_nothing() {
    let pristine = numbered_log(40, true);
    let dir = pristine.path();
    let last = *bases(dir).last().unwrap();
    let segment = fs::read(segment_file(dir, last, "log")).unwrap();
    let found = frames(&segment);
    let target = found[found.len() - 2];
    // Structurally valid (right header, inside the segment) but pointing
    // into the middle of a frame: a hint that is wrong, not damaged data.
    let mut index = encode_index_header(IndexKind::Offset, last).to_vec();
    let entry = OffsetEntry {
        relative_offset: (target.offset - last) as u32,
        position: target.position as u32 + 3,
    };
    index.extend_from_slice(&entry.encode());
    let idx = segment_file(dir, last, "idx");
    fs::write(&idx, &index).unwrap();

    let log = Log::open(dir, options()).unwrap();
    let report = log.recovery_report();
    assert!(report.clean_shutdown);
    assert!(report.is_pristine(), "{report:?}");
    assert_eq!(
        report.scanned_bytes,
        segment.len() as u64 - SEGMENT_HEADER_LEN as u64
    );
    assert!(report.rebuilt_indexes.contains(&idx), "{report:?}");
    assert_eq!(log.end_offset(), 40);
    assert_numbered(&log, 0..40);
    assert_eq!(fs::read(segment_file(dir, last, "log")).unwrap(), segment);
}

#[test]
fn unclean_reopen_scans_the_whole_last_segment_and_rebuilds_its_indexes() {
    let options = || options().segment_bytes(64 << 10).index_interval_bytes(256);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    append_numbered(&log, 0..2_000);
    log.close().unwrap();
    crash_before_checkpoint(dir.path());
    let all = bases(dir.path());
    assert!(all.len() >= 2);
    let last = *all.last().unwrap();
    let len = fs::metadata(segment_file(dir.path(), last, "log")).unwrap().len();

    let log = Log::open(dir.path(), options()).unwrap();
    let report = log.recovery_report().clone();
    assert!(!report.clean_shutdown);
    assert_eq!(
        report.scanned_bytes,
        len - SEGMENT_HEADER_LEN as u64,
        "only the last segment is scanned"
    );
    assert_eq!(
        sorted(report.rebuilt_indexes.clone()),
        vec![
            segment_file(dir.path(), last, "idx"),
            segment_file(dir.path(), last, "tix")
        ]
    );
    assert!(report.is_pristine());
    assert_eq!(log.end_offset(), 2_000);
    assert_numbered(&log, 0..2_000);
}

#[test]
fn power_loss_after_durable_appends_recovers_every_record_with_a_full_scan() {
    for seed in 0..8 {
        let sim = SimStorage::new();
        let dir = Path::new("/sim/log");
        let options = || {
            options()
                .durability(Durability::Always)
                .storage(Arc::new(sim.clone()))
        };
        let log = Log::open(dir, options()).unwrap();
        append_numbered(&log, 0..30);
        sim.power_loss(seed);
        drop(log);
        let log = Log::open(dir, options()).unwrap();
        let report = log.recovery_report().clone();
        let files = sim.files();
        let last = files
            .iter()
            .rfind(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap();
        let len = sim.read_file(last).unwrap().len() as u64;
        assert!(!report.clean_shutdown, "seed {seed}");
        assert_eq!(
            report.scanned_bytes,
            len - SEGMENT_HEADER_LEN as u64,
            "seed {seed}"
        );
        assert!(report.truncations.is_empty(), "seed {seed}: {report:?}");
        assert_eq!(log.end_offset(), 30, "seed {seed}");
        assert_numbered(&log, 0..30);
    }
}

/// Replaces the frame `at` in `segment` with one of the same size that
/// carries `offset` instead.
fn reencode_with_offset(segment: &mut [u8], at: FrameAt, offset: u64) {
    let frame = &segment[at.position as usize..at.position as usize + at.len];
    let view = decode_frame(frame).unwrap();
    let headers: Vec<(String, Vec<u8>)> =
        logbus::format::HeaderIter::new(&frame[view.headers.clone()], view.header_count)
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let mut out = Vec::new();
    encode_frame(
        &mut out,
        offset,
        view.timestamp,
        &frame[view.key.clone()],
        &headers,
        &frame[view.value.clone()],
    );
    assert_eq!(out.len(), at.len);
    segment[at.position as usize..at.position as usize + at.len].copy_from_slice(&out);
}

#[test]
fn bad_frame_or_offset_gap_in_last_segment_is_truncated_and_reported() {
    for clean in [false, true] {
        let pristine = numbered_log(40, clean);
        let last = *bases(pristine.path()).last().unwrap();
        let segment = fs::read(segment_file(pristine.path(), last, "log")).unwrap();
        let found = frames(&segment);
        assert!(found.len() >= 4);
        // After a clean close only the bytes from the last index entry on
        // are scanned (every record is indexed here), so damage the last frame.
        let victim = found[found.len() - if clean { 1 } else { 3 }];
        let cases: [(&str, Damage, Option<CorruptKind>); 4] = [
            (
                "checksum mismatch",
                Box::new(move |b| b[victim.position as usize + FRAME_HEADER_LEN] ^= 0x40),
                None,
            ),
            (
                "offset skips ahead",
                Box::new(move |b| reencode_with_offset(b, victim, victim.offset + 1)),
                Some(CorruptKind::OffsetMismatch {
                    expected: victim.offset,
                    found: victim.offset + 1,
                }),
            ),
            (
                "offset repeats",
                Box::new(move |b| reencode_with_offset(b, victim, victim.offset - 1)),
                Some(CorruptKind::OffsetMismatch {
                    expected: victim.offset,
                    found: victim.offset - 1,
                }),
            ),
            (
                "length out of range",
                Box::new(move |b| b[victim.position as usize..][..4].copy_from_slice(&7u32.to_le_bytes())),
                Some(CorruptKind::LengthOutOfRange(7)),
            ),
        ];
        for (case, damage, reason) in cases {
            let (scratch, path, bytes) = damaged_copy(pristine.path(), last, damage);
            let dir = scratch.path();
            let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{case}: {e}"));
            let report = log.recovery_report();
            assert_eq!(report.truncations.len(), 1, "{case} (clean {clean}): {report:?}");
            let cut = &report.truncations[0];
            assert_eq!(
                (&cut.file, cut.position, cut.bytes_removed),
                (&path, victim.position, bytes.len() as u64 - victim.position),
                "{case} (clean {clean})"
            );
            match &reason {
                Some(reason) => assert_eq!(&cut.reason, reason, "{case}"),
                None => assert!(matches!(cut.reason, CorruptKind::Checksum { .. }), "{case}"),
            }
            assert_eq!(fs::metadata(&path).unwrap().len(), victim.position, "{case}");
            assert_eq!(log.end_offset(), victim.offset, "{case}");
            assert_numbered(&log, 0..victim.offset);
            append_numbered(&log, victim.offset..40);
            assert_numbered(&log, 0..40);
        }
    }
}

// ---------------------------------------------------------------------------
// I/O errors abort the open and truncate nothing.
// ---------------------------------------------------------------------------

/// Reads of one file that fail at or beyond `fail_from`, for [`Hooked`]
/// [`SimStorage`]: a disk that returns EIO for part of a file.
#[derive(Debug)]
struct FailingReads {
    path: PathBuf,
    fail_from: u64,
}

impl Hooks for FailingReads {
    fn before_read(&self, path: &Path, pos: u64, len: usize) -> io::Result<()> {
        if path == self.path && pos + len as u64 > self.fail_from {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }
}

const SIM_DIR: &str = "/sim/log";

/// A simulated log of 40 numbered records in several segments, closed,
/// with `damage` applied to its files afterwards.
fn sim_log(damage: impl FnOnce(&SimStorage, &[PathBuf])) -> SimStorage {
    let sim = SimStorage::new();
    let log = Log::open(SIM_DIR, options().storage(Arc::new(sim.clone()))).unwrap();
    append_numbered(&log, 0..40);
    log.close().unwrap();
    let segments: Vec<PathBuf> = sim
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    damage(&sim, &segments);
    sim
}

fn sim_snapshot(sim: &SimStorage) -> BTreeMap<PathBuf, Vec<u8>> {
    sim.files()
        .into_iter()
        .filter(|p| !p.ends_with(".lock") && !p.ends_with(CLEAN) && !p.ends_with(CHECKPOINT))
        .map(|p| (p.clone(), sim.read_file(&p).unwrap()))
        .collect()
}

fn unclean_with_garbage_tail(sim: &SimStorage, segments: &[PathBuf]) {
    Storage::remove(sim, &Path::new(SIM_DIR).join(CLEAN)).unwrap();
    Storage::remove(sim, &Path::new(SIM_DIR).join(CHECKPOINT)).unwrap();
    sim.sync_dir(Path::new(SIM_DIR)).unwrap();
    let last = segments.last().unwrap();
    let mut bytes = sim.read_file(last).unwrap();
    bytes.extend_from_slice(&[0xAB; 40]);
    sim.write_file(last, &bytes);
}

#[test]
fn io_error_during_open_fails_the_open_and_truncates_nothing() {
    // The storage halts at the first sync of the open, before the tail is cut.
    let sim = sim_log(unclean_with_garbage_tail);
    let before = sim_snapshot(&sim);
    sim.inject(Fault::HaltAfterSyncs { after: 0 });
    match Log::open(SIM_DIR, options().storage(Arc::new(sim.clone()))) {
        Err(Error::Io(_)) => {}
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(sim.is_halted());
    assert_eq!(sim_snapshot(&sim), before);
    // The damage is still there to be repaired once the storage works.
    sim.power_loss(0);
    let log = Log::open(SIM_DIR, options().storage(Arc::new(sim.clone()))).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    assert_eq!(log.recovery_report().truncations.len(), 1);
    assert_eq!(log.recovery_report().truncations[0].bytes_removed, 40);
    assert_numbered(&log, 0..40);
}

#[test]
fn read_error_in_any_scan_at_open_fails_the_open_and_truncates_nothing() {
    type Setup = fn(&SimStorage, &[PathBuf]) -> PathBuf;
    let cases: [(&str, Setup); 3] = [
        ("scan of the last segment", |sim, segments| {
            unclean_with_garbage_tail(sim, segments);
            segments.last().unwrap().clone()
        }),
        ("rebuild of a sealed segment's index", |sim, segments| {
            Storage::remove(sim, &segments[0].with_extension("idx")).unwrap();
            segments[0].clone()
        }),
        ("check of a torn last segment", |sim, _| {
            let torn = Path::new(SIM_DIR).join(format!("{:020}.log", 40));
            sim.write_file(&torn, &[0; 100]);
            torn
        }),
    ];
    for (case, setup) in cases {
        let mut failing = None;
        let sim = sim_log(|sim, segments| failing = Some(setup(sim, segments)));
        let before = sim_snapshot(&sim);
        let storage = Hooked::new(
            sim.clone(),
            FailingReads {
                path: failing.unwrap(),
                fail_from: SEGMENT_HEADER_LEN as u64 + 1,
            },
        );
        match Log::open(SIM_DIR, options().storage(Arc::new(storage))) {
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(5), "{case}"),
            other => panic!("{case}: expected an I/O error, got {other:?}"),
        }
        let after = sim_snapshot(&sim);
        for (path, bytes) in &before {
            if path.extension().is_some_and(|e| e == "log") {
                assert_eq!(after.get(path), Some(bytes), "{case}: {} changed", path.display());
            }
        }
        // Without the read errors the same files open fine.
        let log = Log::open(SIM_DIR, options().storage(Arc::new(sim.clone()))).unwrap();
        assert_numbered(&log, 0..40);
    }
}

// ---------------------------------------------------------------------------
// Torn tail: every cut and every bit flip of the last record.
// ---------------------------------------------------------------------------

/// A closed log whose last segment ends with a record that has a key, a
/// header and a value. Without the clean marker it looks like a crash after
/// the last sync; with it, recovery starts from the index entry that points
/// at that record (every record is indexed here).
struct TornTail {
    pristine: tempfile::TempDir,
    /// Base offset of the last segment.
    base: u64,
    frame: FrameAt,
}

impl TornTail {
    fn new(clean: bool) -> TornTail {
        let pristine = tempfile::tempdir().unwrap();
        let log = Log::open(pristine.path(), options()).unwrap();
        append_numbered(&log, 0..20);
        log.append(&Record::new(b"last").key(b"k").header("h", b"x").timestamp(7))
            .unwrap();
        log.close().unwrap();
        if !clean {
            crash_before_checkpoint(pristine.path());
        }
        let last = *bases(pristine.path()).last().unwrap();
        assert!(last > 0, "the last record should sit in a later segment");
        let path = segment_file(pristine.path(), last, "log");
        let bytes = fs::read(&path).unwrap();
        let frame = *frames(&bytes).last().unwrap();
        assert_eq!(frame.position + frame.len as u64, bytes.len() as u64);
        assert_eq!(frame.offset, 20);
        TornTail {
            pristine,
            base: last,
            frame,
        }
    }

    /// Reopens a copy with the last segment damaged by `damage`; checks the
    /// recovery cut the last record exactly and the log goes on from there.
    fn check(&self, case: &str, damage: impl FnOnce(&mut Vec<u8>)) -> Truncation {
        let (scratch, path, bytes) = damaged_copy(self.pristine.path(), self.base, damage);
        let log = Log::open(scratch.path(), options()).unwrap_or_else(|e| panic!("{case}: {e}"));
        let report: RecoveryReport = log.recovery_report().clone();
        assert_eq!(report.truncations.len(), 1, "{case}: {report:?}");
        let cut = report.truncations[0].clone();
        let start = self.frame.position;
        assert_eq!(
            (&cut.file, cut.position, cut.bytes_removed),
            (&path, start, bytes.len() as u64 - start),
            "{case}"
        );
        assert_eq!(log.end_offset(), 20, "{case}");
        assert_eq!(log.read(19).unwrap().unwrap().value(), &value(19)[..], "{case}");
        assert!(log.read(20).unwrap().is_none(), "{case}");
        assert_eq!(log.append(&Record::new(b"again")).unwrap(), 20, "{case}");
        assert_eq!(log.read(20).unwrap().unwrap().value(), b"again", "{case}");
        let mut cursor = log.cursor(Position::Offset(19)).unwrap();
        assert_eq!(cursor.next().unwrap().unwrap().offset(), 19, "{case}");
        assert_eq!(cursor.next().unwrap().unwrap().value(), b"again", "{case}");
        assert!(cursor.next().unwrap().is_none(), "{case}");
        log.close().unwrap();
        let again_len = Record::new(b"again").encoded_len().unwrap() as u64;
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            start + again_len,
            "{case}: leftover bytes"
        );
        cut
    }
}

#[test]
fn torn_tail_cut_at_every_byte_of_the_last_record_recovers_to_the_previous_record() {
    for clean in [false, true] {
        let tail = TornTail::new(clean);
        let (start, len) = (tail.frame.position, tail.frame.len as u64);
        let mut cases = 0;
        for cut_at in start + 1..start + len {
            let case = format!("cut at {cut_at} (clean {clean})");
            let cut = tail.check(&case, |b| b.truncate(cut_at as usize));
            let available = cut_at - start;
            let needed = if available < 4 { 4 } else { len };
            assert_eq!(cut.reason, CorruptKind::Truncated { needed, available }, "{case}");
            cases += 1;
        }
        assert_eq!(cases, len - 1);
    }
}

#[test]
fn last_record_removed_whole_is_not_a_truncation() {
    let tail = TornTail::new(false);
    let cut_at = tail.frame.position as usize;
    let (scratch, _, _) = damaged_copy(tail.pristine.path(), tail.base, |b| b.truncate(cut_at));
    let log = Log::open(scratch.path(), options()).unwrap();
    assert!(log.recovery_report().is_pristine());
    assert_eq!(log.end_offset(), 20);
    assert_numbered(&log, 0..20);
}

#[test]
fn torn_tail_with_any_single_bit_flipped_in_the_last_record_recovers_to_the_previous_record() {
    // After a crash (no clean marker). With the marker, a flip takes the same
    // path as a cut (the indexed last frame fails, so the whole segment is
    // rescanned), which the cut sweep covers.
    let tail = TornTail::new(false);
    let (start, len) = (tail.frame.position as usize, tail.frame.len);
    let mut cases = 0;
    for byte in start..start + len {
        for bit in 0..8 {
            let case = format!("byte {} bit {bit}", byte - start);
            let cut = tail.check(&case, |b| b[byte] ^= 1 << bit);
            // Only a flipped length can fail before the checksum does.
            if byte >= start + 4 {
                assert!(
                    matches!(cut.reason, CorruptKind::Checksum { .. }),
                    "{case}: {:?}",
                    cut.reason
                );
            }
            cases += 1;
        }
    }
    assert_eq!(cases, len * 8);
}

// ---------------------------------------------------------------------------
// Zero-filled tails.
// ---------------------------------------------------------------------------

/// Zeros from past the last checkpoint to the end of the file are space
/// preallocated for appends that never came: cut without a report. Zeros
/// followed by anything else, or zeros over records a checkpoint says were
/// synced, are damage: cut (nothing follows them) and reported.
#[test]
fn zero_filled_tail_is_cut_and_reported_only_when_it_is_not_unused_space() {
    for clean in [false, true] {
        let pristine = numbered_log(40, clean);
        let last = *bases(pristine.path()).last().unwrap();
        let segment = fs::read(segment_file(pristine.path(), last, "log")).unwrap();
        let last_frame = *frames(&segment).last().unwrap();
        let original_len = segment.len() as u64;
        // (case, where the cut falls, the damage, whether it is reported)
        let cases: [(&str, u64, Damage, bool); 3] = [
            (
                "zeros appended",
                original_len,
                Box::new(|b| b.resize(b.len() + 4096, 0)),
                false,
            ),
            (
                "zeros appended, then a stray byte",
                original_len,
                Box::new(|b| {
                    b.resize(b.len() + 4096, 0);
                    b.push(0x5a);
                }),
                true,
            ),
            (
                // Only a clean close left a checkpoint saying it was synced.
                "last record zeroed",
                last_frame.position,
                Box::new(move |b| {
                    b.truncate(last_frame.position as usize);
                    b.resize(b.len() + 512, 0);
                }),
                clean,
            ),
        ];
        for (case, position, damage, reported) in cases {
            let (scratch, path, bytes) = damaged_copy(pristine.path(), last, damage);
            let dir = scratch.path();
            let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{case}: {e}"));
            let expected: Vec<_> = reported
                .then(|| {
                    (
                        path.clone(),
                        position,
                        bytes.len() as u64 - position,
                        CorruptKind::ZeroFill,
                    )
                })
                .into_iter()
                .collect();
            let truncations: Vec<_> = (log.recovery_report().truncations.iter())
                .map(|t| (t.file.clone(), t.position, t.bytes_removed, t.reason.clone()))
                .collect();
            assert_eq!(truncations, expected, "{case} (clean {clean})");
            assert_eq!(fs::metadata(&path).unwrap().len(), position, "{case}");
            let end = if position == original_len {
                40
            } else {
                last_frame.offset
            };
            assert_eq!(log.end_offset(), end, "{case}");
            assert_numbered(&log, 0..end);
            append_numbered(&log, end..40);
            assert_numbered(&log, 0..40);
        }
    }
}

/// A stray byte after a hole (a region of the file never written, which
/// recovery skips without reading) is still found and reported.
#[test]
fn a_stray_byte_after_a_hole_in_the_tail_is_reported() {
    use std::os::unix::fs::FileExt;
    let pristine = numbered_log(40, false);
    let last = *bases(pristine.path()).last().unwrap();
    let path = segment_file(pristine.path(), last, "log");
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let frames_end = file.metadata().unwrap().len();
    let hole_end = frames_end + (4 << 20);
    file.set_len(hole_end).unwrap();
    file.write_all_at(&[0x5a], hole_end).unwrap();
    drop(file);
    let log = Log::open(pristine.path(), options()).unwrap();
    let cuts = &log.recovery_report().truncations;
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert_eq!(
        (cuts[0].position, cuts[0].bytes_removed),
        (frames_end, hole_end + 1 - frames_end)
    );
    assert_eq!(log.end_offset(), 40);
    assert_numbered(&log, 0..40);
}

/// The active segment of an open log is preallocated to the segment size
/// and written through a mapping. A copy taken while it is open is what a
/// killed process leaves behind: recovery finds every record, reports no
/// damage, scans only the frames, and reserves the segment again; closing
/// trims it to its frames.
#[test]
fn a_crash_with_a_preallocated_segment_recovers_every_record_and_reports_no_damage() {
    let options = || options().preallocate(true);
    let live = tempfile::tempdir().unwrap();
    // Written under `Always`, so every roll is sealed when the append
    // returns and the last segment is within its reservation (under `Os`
    // it may grow past it while the seal before it is under way).
    let log = Log::open(live.path(), options().durability(Durability::Always)).unwrap();
    append_numbered(&log, 0..40);
    let last = *bases(live.path()).last().unwrap();
    let path = segment_file(live.path(), last, "log");
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        SEGMENT_BYTES,
        "not preallocated"
    );
    let crashed = tempfile::tempdir().unwrap();
    copy_log(live.path(), crashed.path());
    drop(log);
    assert!(
        fs::metadata(&path).unwrap().len() < SEGMENT_BYTES,
        "closing did not trim the active segment"
    );

    let path = segment_file(crashed.path(), last, "log");
    let frame_bytes: u64 = frames(&fs::read(&path).unwrap())
        .iter()
        .map(|f| f.len as u64)
        .sum();
    let log = Log::open(crashed.path(), options()).unwrap();
    let report = log.recovery_report();
    assert!(!report.clean_shutdown);
    assert!(report.truncations.is_empty(), "{report:?}");
    assert!(
        report.scanned_bytes <= frame_bytes,
        "scanned {} bytes for {frame_bytes} bytes of frames",
        report.scanned_bytes
    );
    assert_eq!(log.end_offset(), 40);
    assert_numbered(&log, 0..40);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        SEGMENT_BYTES,
        "not reserved again"
    );
    append_numbered(&log, 40..50);
    log.close().unwrap();
    let log = Log::open(crashed.path(), options()).unwrap();
    assert!(log.recovery_report().is_pristine());
    assert_numbered(&log, 0..50);
}

/// A last segment from a newer format version is refused, never taken for a
/// segment torn while being created and deleted — even when no frame of
/// this version decodes after its header.
#[test]
fn segment_of_a_newer_format_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    logbus::Log::open(dir.path(), logbus::LogOptions::default())
        .unwrap()
        .close()
        .unwrap();
    let segment = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[8..10].copy_from_slice(&(logbus::format::FORMAT_VERSION + 1).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[0..12]);
    crc.update(&bytes[16..32]);
    bytes[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    std::fs::write(&segment, &bytes).unwrap();
    match logbus::Log::open(dir.path(), logbus::LogOptions::default()) {
        Err(logbus::Error::Corrupt {
            kind: logbus::CorruptKind::UnsupportedVersion(v),
            file,
            ..
        }) => {
            assert_eq!(v, logbus::format::FORMAT_VERSION + 1);
            assert_eq!(file, segment);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);
}

/// After a crash, recovery starts at the `.checkpoint` written after the
/// last sync, so its cost is the unsynced tail, not the segment: a 2 MiB
/// segment with 20 KiB written since the last flush scans about 20 KiB,
/// and every flushed record survives the power loss.
#[test]
fn crash_recovery_scans_only_the_tail_written_after_the_last_checkpoint() {
    use std::sync::Arc;

    let sim = logbus::storage::SimStorage::new();
    let dir = std::path::Path::new("/sim/checkpointed");
    let options = || {
        logbus::LogOptions::default()
            .durability(logbus::Durability::Os)
            .segment_bytes(64 << 20)
            .storage(Arc::new(sim.clone()))
    };
    let value = vec![7u8; 1000];
    let log = logbus::Log::open(dir, options()).unwrap();
    for _ in 0..2000 {
        log.append(&logbus::Record::new(&value)).unwrap();
    }
    log.flush().unwrap();
    let flushed = log.end_offset();
    for _ in 0..20 {
        log.append(&logbus::Record::new(&value)).unwrap();
    }
    sim.inject(logbus::storage::Fault::HaltAfterWrites { after: 0 });
    let _ = log.append(&logbus::Record::new(&value));
    drop(log);
    sim.power_loss(11);

    let log = logbus::Log::open(dir, options()).unwrap();
    let report = log.recovery_report().clone();
    assert!(!report.clean_shutdown);
    assert!(
        report.scanned_bytes < 64 << 10,
        "scanned {} bytes",
        report.scanned_bytes
    );
    assert!(log.end_offset() >= flushed);
    for offset in [0, flushed / 2, flushed - 1] {
        assert_eq!(log.read(offset).unwrap().unwrap().value(), &value[..]);
    }
    let mut cursor = log.cursor(logbus::Position::Earliest).unwrap();
    let mut count = 0;
    while cursor.next().unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, log.end_offset());
}

/// What a process killed right after its log rolled leaves (every file as
/// the page cache held it), on storage of its own: the new segment's
/// preallocation (1 MiB) behind an unsynced tail of 20 records. With
/// `flushed`, 2,500 records more were appended and flushed before the tail
/// (the reservation is then the whole 4 MiB segment). Returns the storage,
/// the options to open it with, the active segment's path and the log's
/// end offset.
fn crashed_with_an_unsynced_tail(flushed: bool) -> (SimStorage, impl Fn() -> LogOptions, PathBuf, u64) {
    use logbus::fuzzing::RecoveryInput;

    let options = |sim: &SimStorage| {
        let sim = sim.clone();
        move || {
            LogOptions::default()
                .durability(Durability::Os)
                .segment_bytes(4 << 20)
                .storage(Arc::new(sim.clone()))
        }
    };
    let sim = SimStorage::new();
    let dir = Path::new("/sim/log");
    let log = Log::open(dir, options(&sim)()).unwrap();
    let value = vec![7u8; 1000];
    while sim
        .files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .count()
        < 2
    {
        log.append(&Record::new(&value)).unwrap();
    }
    let active_base = log.end_offset() - 1;
    await_seal(active_base, || sim.read_file(&dir.join(CHECKPOINT)));
    let active = segment_file(dir, active_base, "log");
    if flushed {
        for _ in 0..2500 {
            log.append(&Record::new(&value)).unwrap();
        }
        log.flush().unwrap();
    }
    for _ in 0..20 {
        log.append(&Record::new(&value)).unwrap();
    }
    // An append records a write limit only once the seal is done, which
    // on a loaded machine may be after the appends above: append on until
    // the checkpoint has one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sim
        .read_file(&dir.join(CHECKPOINT))
        .and_then(|bytes| logbus::format::Checkpoint::decode(&bytes).ok())
        .and_then(|c| c.write_limit())
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "no write limit recorded");
        log.append(&Record::new(&value)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let crashed = SimStorage::new();
    RecoveryInput::capture(&sim, dir).install(&crashed);
    let end = log.end_offset();
    drop(log);
    let options = options(&crashed);
    (crashed, options, active, end)
}

/// After a crash right after a roll, or after a flush in the middle of a
/// segment, recovery reads the unsynced tail and then checks for unused
/// space only up to the checkpoint's write limit (a few 64 KiB units past
/// the tail), never the rest of the reservation.
/// SimStorage reports every byte of a file as data (as `SEEK_DATA` does for
/// pages the kernel read ahead into the page cache), so nothing but the
/// write limit bounds what the check reads. Zeros followed by data below
/// the limit are still damage, reported; past the limit nothing was ever
/// written, so nothing there is read.
#[test]
fn crash_recovery_never_reads_the_unused_reservation() {
    use logbus::format::{Checkpoint, WRITE_LIMIT_UNIT_BYTES};

    let strays = [None, Some("below the limit"), Some("past the limit")];
    for (flushed, stray) in [false, true].into_iter().flat_map(|f| strays.map(|s| (f, s))) {
        let (sim, options, active, appended) = crashed_with_an_unsynced_tail(flushed);
        let mut bytes = sim.read_file(&active).unwrap();
        let reserved = bytes.len() as u64;
        assert!(reserved >= 1 << 20, "not preallocated: {reserved} bytes");
        let tail_end = frames(&bytes).last().map(|f| f.position + f.len as u64).unwrap();
        let checkpoint =
            Checkpoint::decode(&sim.read_file(Path::new("/sim/log/.checkpoint")).unwrap()).unwrap();
        let limit = checkpoint.write_limit().expect("a write limit");
        assert!(
            limit > tail_end && limit < reserved,
            "limit {limit}, tail end {tail_end}"
        );
        let at = match stray {
            None => None,
            Some("below the limit") => Some(limit - 1),
            Some(_) => Some(reserved - 1),
        };
        if let Some(at) = at {
            bytes[at as usize] = 0x5a;
            sim.write_file(&active, &bytes);
        }

        let log = Log::open(Path::new("/sim/log"), options()).unwrap();
        let report = log.recovery_report().clone();
        assert!(!report.clean_shutdown);
        assert_eq!(log.end_offset(), appended, "{stray:?}");
        let tail = report.scanned_bytes;
        assert_eq!(tail, tail_end - checkpoint.end_pos, "{stray:?}");
        assert!(tail < 2 * 20 * 1024, "{flushed} {stray:?}: scanned {tail} bytes");
        assert!(
            report.tail_checked_bytes <= tail.max(WRITE_LIMIT_UNIT_BYTES) + WRITE_LIMIT_UNIT_BYTES,
            "{stray:?}: read {} bytes past a tail of {tail} (the reservation is {reserved} bytes)",
            report.tail_checked_bytes
        );
        let reported: Vec<(u64, CorruptKind)> = report
            .truncations
            .iter()
            .map(|t| (t.position, t.reason.clone()))
            .collect();
        match stray {
            Some("below the limit") => assert_eq!(reported, [(tail_end, CorruptKind::ZeroFill)]),
            _ => assert_eq!(reported, [], "{stray:?}"),
        }
    }
}

/// An append raises the write limit with a write of `.checkpoint` and no
/// sync of its own; the log syncs that write before the data under it. So
/// after any power loss every acknowledged frame lies below the limit of
/// the checkpoint that survived, and recovery's check for unused space
/// past the tail covers it.
#[test]
fn every_acknowledged_frame_lies_below_a_durable_write_limit() {
    use logbus::format::Checkpoint;

    for seed in 0..16 {
        let sim = SimStorage::new();
        let dir = Path::new("/sim/log");
        let options = LogOptions::default()
            .durability(Durability::Always)
            .segment_bytes(4 << 20)
            .storage(Arc::new(sim.clone()));
        let log = Log::open(dir, options).unwrap();
        let value = vec![7u8; 4000];
        // Past the first 64 KiB unit and more: the limit was raised a few
        // times, each by an append.
        for _ in 0..(seed + 1) * 20 {
            log.append(&Record::new(&value)).unwrap();
        }
        let active = segment_file(dir, 0, "log");
        let written = sim.read_file(&active).unwrap();
        let tail_end = frames(&written)
            .last()
            .map(|f| f.position + f.len as u64)
            .unwrap();
        sim.power_loss(seed);
        drop(log);

        let checkpoint = Checkpoint::decode(&sim.read_file(&dir.join(".checkpoint")).unwrap()).unwrap();
        let limit = checkpoint.write_limit();
        assert!(
            limit.is_some_and(|limit| limit >= tail_end),
            "seed {seed}: limit {limit:?} below the acknowledged tail at {tail_end}"
        );
    }
}

/// A checkpoint that is garbage (or names another segment) is ignored:
/// recovery scans the whole active segment and loses nothing.
#[test]
fn garbage_checkpoint_falls_back_to_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let log = logbus::Log::open(dir.path(), logbus::LogOptions::default()).unwrap();
    for i in 0..100u32 {
        log.append(&logbus::Record::new(&i.to_le_bytes())).unwrap();
    }
    log.close().unwrap();
    drop(log);
    // Closing trimmed the preallocated segment to its frames.
    let segment_len = std::fs::metadata(dir.path().join(format!("{:020}.log", 0)))
        .unwrap()
        .len();
    std::fs::remove_file(dir.path().join(".clean")).unwrap();
    std::fs::write(dir.path().join(".checkpoint"), [0xA5u8; 48]).unwrap();
    let log = logbus::Log::open(dir.path(), logbus::LogOptions::default()).unwrap();
    assert_eq!(log.recovery_report().scanned_bytes, segment_len - 32);
    assert_eq!(log.end_offset(), 100);
    assert_eq!(log.read(99).unwrap().unwrap().value(), &99u32.to_le_bytes()[..]);
}

/// A checkpoint ahead of the data (the segment lost its tail after the
/// checkpoint was written) is unusable; recovery scans the segment, cuts
/// the torn frame, and the open replaces the checkpoint so the next crash
/// recovers from a true position.
#[test]
fn checkpoint_ahead_of_the_data_is_ignored_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let log = logbus::Log::open(dir.path(), logbus::LogOptions::default()).unwrap();
    for i in 0..50u32 {
        log.append(&logbus::Record::new(&i.to_le_bytes())).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let segment = segment_file(dir.path(), 0, "log");
    let len = fs::metadata(&segment).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    fs::remove_file(dir.path().join(CLEAN)).unwrap();

    let log = logbus::Log::open(dir.path(), logbus::LogOptions::default()).unwrap();
    assert_eq!(log.recovery_report().truncations.len(), 1);
    assert_eq!(log.end_offset(), 49);
    let checkpoint =
        logbus::format::Checkpoint::decode(&fs::read(dir.path().join(CHECKPOINT)).unwrap()).unwrap();
    assert_eq!(checkpoint.end_offset, 49);
    assert!(checkpoint.end_pos <= fs::metadata(&segment).unwrap().len());
}
