//! Batch frames (format version 2, docs/FORMAT.md "Batch frame"): an
//! `append_batch` of several records is one frame on disk, every record of
//! it reads back by offset, by cursor and by time, before and after a
//! reopen; a torn batch is cut whole; a version 1 segment is read as it is
//! and gets record frames only, until it rolls.

mod common;

use std::fs;
use std::path::Path;

use bytes::Bytes;
use common::logs::{bases, frames, segment_file};
use logbus::format::{FORMAT_VERSION, SEGMENT_HEADER_LEN, SegmentHeader, decode_segment_header};
use logbus::{Log, LogOptions, Position, Record, StoredRecord};

/// Record `i` of the tests: keys, headers and timestamps vary, so every
/// field of a batch record is exercised (timestamps go back as well as
/// forward, and some are far from the batch's first).
fn record_fields(i: u64) -> Fields {
    let key = match i % 3 {
        0 => Vec::new(),
        _ => format!("key-{i}").into_bytes(),
    };
    let headers = match i % 4 {
        0 => vec![("trace".to_owned(), i.to_le_bytes().to_vec())],
        1 => vec![("a".to_owned(), Vec::new()), ("b".to_owned(), vec![7; 200])],
        _ => Vec::new(),
    };
    let value = vec![i as u8; (i % 7 * 50) as usize];
    let timestamp = match i % 5 {
        0 => 1_000_000 + i as i64,
        1 => 1_000_000 - i as i64 * 1_000,
        2 => i64::MAX - i as i64,
        _ => 1_000_000,
    };
    (key, headers, value, timestamp)
}

type Fields = (Vec<u8>, Vec<(String, Vec<u8>)>, Vec<u8>, i64);

fn build(fields: &Fields) -> Record<'_> {
    let (key, headers, value, timestamp) = fields;
    let mut record = Record::new(value).key(key).timestamp(*timestamp);
    for (name, value) in headers {
        record = record.header(name, value);
    }
    record
}

fn append_batch(log: &Log, offsets: std::ops::Range<u64>) {
    let fields: Vec<Fields> = offsets.clone().map(record_fields).collect();
    let records: Vec<Record<'_>> = fields.iter().map(build).collect();
    assert_eq!(log.append_batch(&records).unwrap(), offsets);
}

fn append_one(log: &Log, offset: u64) {
    assert_eq!(log.append(&build(&record_fields(offset))).unwrap(), offset);
}

fn check_record(record: &StoredRecord, offset: u64) {
    let (key, headers, value, timestamp) = record_fields(offset);
    assert_eq!(record.offset(), offset);
    assert_eq!(record.key(), key, "key of {offset}");
    assert_eq!(record.value(), value, "value of {offset}");
    assert_eq!(record.timestamp(), timestamp, "timestamp of {offset}");
    let read: Vec<(String, Vec<u8>)> = record
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_vec()))
        .collect();
    assert_eq!(read, headers, "headers of {offset}");
}

/// Every record `0..end` reads back by offset, from a cursor started at
/// each offset (and its borrowed records), and a cursor started at each
/// record's timestamp finds the first record at or after it.
fn check_log(log: &Log, end: u64) {
    for offset in 0..end {
        check_record(&log.read(offset).unwrap().expect("stored"), offset);
        let mut cursor = log.cursor(Position::Offset(offset)).unwrap();
        for next in offset..end {
            check_record(&cursor.next().unwrap().expect("cursor"), next);
        }
        assert!(cursor.next().unwrap().is_none());
        let mut cursor = log.cursor(Position::Offset(offset)).unwrap();
        let borrowed = cursor.next_ref().unwrap().expect("borrowed").to_stored();
        check_record(&borrowed, offset);
    }
    for offset in 0..end {
        let timestamp = record_fields(offset).3;
        let first = (0..end).find(|&o| record_fields(o).3 >= timestamp).unwrap();
        let cursor = log.cursor(Position::Timestamp(timestamp)).unwrap();
        assert_eq!(cursor.offset(), first, "first record at or after {timestamp}");
    }
}

fn segment_bytes(dir: &Path, base: u64) -> Vec<u8> {
    fs::read(segment_file(dir, base, "log")).unwrap()
}

fn options() -> LogOptions {
    LogOptions::default().index_interval_bytes(256)
}

#[test]
fn a_batch_is_one_frame_and_each_of_its_records_reads_back_before_and_after_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    append_one(&log, 0);
    append_batch(&log, 1..41);
    append_batch(&log, 41..42);
    append_batch(&log, 42..50);
    check_log(&log, 50);
    log.close().unwrap();
    let found: Vec<(u64, u64)> = frames(&segment_bytes(dir.path(), 0))
        .iter()
        .map(|f| (f.offset, f.count))
        .collect();
    assert_eq!(found, [(0, 1), (1, 40), (41, 1), (42, 8)], "one frame per append");

    // A clean reopen, then one that rebuilds the indexes.
    let log = Log::open(dir.path(), options()).unwrap();
    check_log(&log, 50);
    log.close().unwrap();
    for ext in ["idx", "tix"] {
        fs::remove_file(segment_file(dir.path(), 0, ext)).unwrap();
    }
    fs::remove_file(dir.path().join(".clean")).unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    check_log(&log, 50);
    append_batch(&log, 50..60);
    check_log(&log, 60);
    log.close().unwrap();

    // The offline checker sees every record, and indexes that agree.
    let bytes = Bytes::from(segment_bytes(dir.path(), 0));
    let walk = logbus::inspect::walk_segment(bytes);
    assert!(walk.problems.is_empty(), "{:?}", walk.problems);
    assert_eq!(walk.frames.len(), 60);
    let index = fs::read(segment_file(dir.path(), 0, "idx")).unwrap();
    let entries = &index[logbus::format::INDEX_HEADER_LEN..];
    assert!(
        entries.len() >= 2 * logbus::format::OFFSET_ENTRY_LEN,
        "the test indexes more than one frame"
    );
    assert_eq!(logbus::inspect::check_offset_index(entries, 0, &walk.frames), []);
    let times = fs::read(segment_file(dir.path(), 0, "tix")).unwrap();
    let entries = &times[logbus::format::INDEX_HEADER_LEN..];
    assert_eq!(logbus::inspect::check_time_index(entries, 0, &walk.frames), []);
}

#[test]
fn a_torn_batch_is_cut_whole_and_the_offsets_go_on_from_its_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    append_batch(&log, 0..10);
    append_batch(&log, 10..30);
    log.close().unwrap();
    let path = segment_file(dir.path(), 0, "log");
    let found = frames(&segment_bytes(dir.path(), 0));
    assert_eq!(found.len(), 2);
    let torn = found[1];
    // Cut the second batch anywhere inside it, or flip one of its bytes:
    // either way none of its records survive, and all of the first do.
    for damage in 0..3 {
        let copy = tempfile::tempdir().unwrap();
        common::logs::copy_log(dir.path(), copy.path());
        // A crash before any checkpoint: recovery scans every frame.
        fs::remove_file(copy.path().join(".clean")).unwrap();
        fs::remove_file(copy.path().join(".checkpoint")).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        match damage {
            0 => bytes.truncate((torn.position + 1) as usize),
            1 => bytes.truncate((torn.position as usize) + torn.len - 1),
            _ => bytes[(torn.position as usize) + torn.len / 2] ^= 0x40,
        }
        fs::write(segment_file(copy.path(), 0, "log"), &bytes).unwrap();
        let log = Log::open(copy.path(), options()).unwrap();
        let report = log.recovery_report();
        assert_eq!(report.truncations.len(), 1, "damage {damage}: {report:?}");
        assert_eq!(report.truncations[0].position, torn.position, "damage {damage}");
        assert_eq!(log.end_offset(), 10, "damage {damage}");
        check_log(&log, 10);
        append_batch(&log, 10..12);
        check_log(&log, 12);
        log.close().unwrap();
    }
}

#[test]
fn a_version_1_segment_is_read_and_gets_record_frames_until_it_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default()
        .segment_bytes(4096)
        .index_interval_bytes(256);
    let log = Log::open(dir.path(), options.clone()).unwrap();
    for offset in 0..5 {
        append_one(&log, offset);
    }
    log.close().unwrap();
    // What logbus 0.1 wrote: the same frames under a version 1 header.
    let path = segment_file(dir.path(), 0, "log");
    let mut bytes = fs::read(&path).unwrap();
    let header = decode_segment_header(&bytes).unwrap();
    assert_eq!(header.version, FORMAT_VERSION);
    let old = SegmentHeader { version: 1, ..header };
    bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&old.encode());
    fs::write(&path, &bytes).unwrap();

    let log = Log::open(dir.path(), options).unwrap();
    check_log(&log, 5);
    let mut end = 5;
    while bases(dir.path()).len() < 2 {
        append_batch(&log, end..end + 4);
        end += 4;
    }
    check_log(&log, end);
    log.close().unwrap();
    let old_frames = frames(&segment_bytes(dir.path(), 0));
    assert!(
        old_frames.iter().all(|f| f.count == 1),
        "a batch frame in a version 1 segment"
    );
    assert_eq!(
        decode_segment_header(&segment_bytes(dir.path(), 0))
            .unwrap()
            .version,
        1
    );
    let next = bases(dir.path())[1];
    let new = segment_bytes(dir.path(), next);
    assert_eq!(decode_segment_header(&new).unwrap().version, FORMAT_VERSION);
    assert!(
        frames(&new).iter().all(|f| f.count == 4),
        "the new segment holds batch frames"
    );
}
