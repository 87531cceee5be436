//! The log's everyday contract on the real file system: append, read,
//! cursors, rolling, reopening, limits and the directory lock.

use std::time::Duration;

use logbus::{Durability, Error, Log, LogOptions, Position, Record};

fn small_segments() -> LogOptions {
    LogOptions::default().segment_bytes(1024).index_interval_bytes(64)
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

#[test]
fn appended_records_read_back_with_key_headers_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let offset = log
        .append(
            &Record::new(b"v")
                .key(b"k")
                .header("a", b"1")
                .header("b", b"")
                .timestamp(42),
        )
        .unwrap();
    assert_eq!(offset, 0);
    let record = log.read(0).unwrap().unwrap();
    assert_eq!(record.value(), b"v");
    assert_eq!(record.key(), b"k");
    assert_eq!(record.timestamp(), 42);
    let headers: Vec<_> = record.headers().collect();
    assert_eq!(headers, vec![("a", &b"1"[..]), ("b", &b""[..])]);
    assert_eq!(record.header("a"), Some(&b"1"[..]));
    assert!(log.read(1).unwrap().is_none());
}

#[test]
fn empty_key_and_value_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&Record::new(b"")).unwrap();
    let record = log.read(0).unwrap().unwrap();
    assert!(record.value().is_empty() && record.key().is_empty());
}

#[test]
fn records_survive_rolling_and_reopening_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..500 {
        assert_eq!(log.append(&Record::new(&value(i))).unwrap(), i);
    }
    log.close().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert!(log.recovery_report().segments > 10);
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    for i in 0..500 {
        let record = cursor.next().unwrap().unwrap();
        assert_eq!((record.offset(), record.value()), (i, &value(i)[..]));
        assert_eq!(log.read(i).unwrap().unwrap().value(), &value(i)[..]);
    }
    assert!(cursor.next().unwrap().is_none());
    assert_eq!(log.append(&Record::new(b"next")).unwrap(), 500);
}

#[test]
fn batch_gets_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&Record::new(b"first")).unwrap();
    let range = log
        .append_batch(&[Record::new(b"a"), Record::new(b"b"), Record::new(b"c")])
        .unwrap();
    assert_eq!(range, 1..4);
    assert_eq!(log.read(3).unwrap().unwrap().value(), b"c");
    assert_eq!(log.append_batch(&[]).unwrap(), 4..4);
}

#[test]
fn record_over_the_limit_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default().max_record_bytes(100)).unwrap();
    let big = vec![7u8; 200];
    assert!(matches!(
        log.append(&Record::new(&big)),
        Err(Error::RecordTooLarge { .. })
    ));
    assert!(matches!(
        log.append_batch(&[Record::new(b"ok"), Record::new(&big)]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(log.end_offset(), 0);
    assert_eq!(log.append(&Record::new(b"ok")).unwrap(), 0);
}

#[test]
fn second_open_of_a_locked_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(Error::Locked(_))
    ));
    log.close().unwrap();
    Log::open(dir.path(), LogOptions::default()).unwrap();
}

#[test]
fn cursor_positions_resolve_offsets_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..100u64 {
        log.append(&Record::new(&value(i)).timestamp(1000 + i as i64 * 10))
            .unwrap();
    }
    let at = |p| log.cursor(p).unwrap().offset();
    assert_eq!(at(Position::Earliest), 0);
    assert_eq!(at(Position::Latest), 100);
    assert_eq!(at(Position::Offset(37)), 37);
    assert_eq!(at(Position::Offset(1000)), 100);
    assert_eq!(at(Position::Timestamp(0)), 0);
    assert_eq!(at(Position::Timestamp(1505)), 51);
    assert_eq!(at(Position::Timestamp(1510)), 51);
    assert_eq!(at(Position::Timestamp(99_999)), 100);
}

#[test]
fn blocking_cursor_wakes_on_append_and_times_out_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default().durability(Durability::Os)).unwrap();
    let mut cursor = log.cursor(Position::Latest).unwrap();
    assert!(cursor.next_timeout(Duration::from_millis(20)).unwrap().is_none());
    let writer = log.clone();
    let handle = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        writer.append(&Record::new(b"wake")).unwrap();
    });
    let record = cursor.next_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(record.value(), b"wake");
    handle.join().unwrap();
}

#[test]
fn retention_by_size_drops_oldest_segments_and_cursor_reports_skips() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments().retention_bytes(4096)).unwrap();
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    for i in 0..1000 {
        log.append(&Record::new(&value(i))).unwrap();
    }
    assert!(log.start_offset() > 0);
    let first = cursor.next().unwrap().unwrap();
    assert_eq!(first.offset(), log.start_offset());
    assert_eq!(cursor.skipped(), log.start_offset());
    assert!(log.read(0).unwrap().is_none());
}

#[test]
fn truncate_before_removes_whole_segments_below_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..300 {
        log.append(&Record::new(&value(i))).unwrap();
    }
    let removed = log.truncate_before(150).unwrap();
    assert!(removed > 0);
    assert!(log.start_offset() <= 150 && log.start_offset() > 0);
    assert_eq!(log.read(150).unwrap().unwrap().value(), &value(150)[..]);
}

/// A cursor reads sealed segments through a mapping its records borrow
/// (no copy): they stay whole after the log deletes those segments and
/// after it closes.
#[test]
fn records_read_from_sealed_segments_outlive_their_files_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..300 {
        log.append(&Record::new(&value(i)).key(b"k").header("h", b"x"))
            .unwrap();
    }
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    let records: Vec<_> = std::iter::from_fn(|| cursor.next().unwrap()).collect();
    assert_eq!(records.len(), 300);
    assert!(log.truncate_before(300).unwrap() > 0);
    log.close().unwrap();
    drop(log);
    drop(dir);
    for (i, record) in (0..).zip(&records) {
        assert_eq!(record.offset(), i);
        assert_eq!(record.value(), &value(i)[..]);
        assert_eq!((record.key(), record.header("h")), (&b"k"[..], Some(&b"x"[..])));
    }
}

/// A cursor reads the segment being appended to through the mapping it is
/// written through (no copy, no read call): its records stay whole while
/// appends go on above them, after the roll cuts the segment to its
/// frames, after retention deletes it, after the log opens again
/// (recovery) and after its directory goes.
#[test]
fn records_read_from_the_active_segment_outlive_its_roll_its_file_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default().segment_bytes(1 << 20);
    let log = Log::open(dir.path(), options.clone()).unwrap();
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    let mut records = Vec::new();
    for i in 0..500 {
        log.append(&Record::new(&value(i)).key(b"k")).unwrap();
        // Each read finds the record just appended, at the segment's end.
        records.extend(cursor.next().unwrap());
    }
    let large = vec![7u8; 64 << 10];
    // Rolls once the segment is full; the sealed one is then removed.
    while log.truncate_before(log.end_offset()).unwrap() == 0 {
        log.append(&Record::new(&large)).unwrap();
    }
    assert!(log.start_offset() > 500, "the segment read from is gone");
    log.close().unwrap();
    drop(log);
    Log::open(dir.path(), options).unwrap().close().unwrap();
    drop(dir);
    assert_eq!(records.len(), 500);
    for (i, record) in (0..).zip(&records) {
        assert_eq!(record.offset(), i);
        assert_eq!((record.key(), record.value()), (&b"k"[..], &value(i)[..]));
    }
}

/// A borrowed read (`Cursor::next_ref`) sees every record a shared one
/// sees, field for field, across sealed (mapped) and active segments, skips
/// what retention removed the same way, and waits for appends the same way.
#[test]
fn borrowed_reads_see_what_shared_reads_see_and_copy_out_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments().retention_bytes(4096)).unwrap();
    let mut shared = log.cursor(Position::Earliest).unwrap();
    let mut borrowed = log.cursor(Position::Earliest).unwrap();
    for i in 0..300 {
        let value = value(i);
        let record = Record::new(&value)
            .key(b"k")
            .header("h", &value)
            .timestamp(i as i64);
        log.append(&record).unwrap();
    }
    let mut kept = Vec::new();
    while let Some(record) = borrowed.next_ref().unwrap() {
        let expected = shared.next().unwrap().expect("the same records");
        assert_eq!(record.offset(), expected.offset());
        assert_eq!(record.timestamp(), expected.timestamp());
        assert_eq!(record.key(), expected.key());
        assert_eq!(record.value(), expected.value());
        assert!(record.headers().eq(expected.headers()));
        assert_eq!(record.header("h"), expected.header("h"));
        assert_eq!(record.to_stored(), expected);
        kept.push(record.to_stored());
    }
    assert!(shared.next().unwrap().is_none());
    assert!(log.start_offset() > 0, "retention removed the first segments");
    assert_eq!((borrowed.skipped(), borrowed.offset()), (shared.skipped(), 300));
    assert_eq!(kept.first().map(|r| r.offset()), Some(log.start_offset()));
    log.append(&Record::new(b"late")).unwrap();
    assert_eq!(
        borrowed.next_ref().unwrap().map(|r| r.value()),
        Some(&b"late"[..])
    );
}

#[test]
fn operations_after_close_fail_with_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let other = log.clone();
    log.close().unwrap();
    assert!(matches!(other.append(&Record::new(b"x")), Err(Error::Closed)));
    assert!(matches!(other.read(0), Err(Error::Closed)));
}

#[test]
fn concurrent_appenders_share_syncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| log.append(&Record::new(&format!("{t}-{i}"))).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..1600).collect::<Vec<_>>());
}

/// Bytes of disk the file at `path` holds (allocated blocks) and its length.
fn disk_use(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).unwrap();
    (metadata.blocks() * 512, metadata.len())
}

#[test]
fn the_active_segment_reserves_disk_in_doubling_steps_up_to_the_segment_size() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default().segment_bytes(8 * MIB);
    let log = Log::open(dir.path(), options.clone()).unwrap();
    let first = dir.path().join(format!("{:020}.log", 0));
    log.append(&Record::new(b"one")).unwrap();
    let (blocks, len) = disk_use(&first);
    assert_eq!(len, MIB, "a new segment reserves 1 MiB, not its 8 MiB");
    assert!(
        blocks <= 2 * MIB,
        "{blocks} bytes of blocks for a 1 MiB reservation"
    );
    // 100 KiB records: the reservation doubles each time appends reach it.
    let big = vec![7u8; 100 << 10];
    let mut seen = vec![len];
    let mut offsets = 1..1;
    let segments = || {
        let names = std::fs::read_dir(dir.path()).unwrap();
        names
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
            .count()
    };
    while segments() == 1 {
        offsets.end = log.append(&Record::new(&big)).unwrap() + 1;
        let (_, len) = disk_use(&first);
        if seen.last() != Some(&len) {
            seen.push(len);
        }
    }
    // The segment rolled: it was cut back to its frames.
    let sealed_len = disk_use(&first).1;
    assert!(
        sealed_len < 8 * MIB && sealed_len > 7 * MIB,
        "sealed at {sealed_len}"
    );
    assert_eq!(
        seen[..4],
        [MIB, 2 * MIB, 4 * MIB, 8 * MIB],
        "reservations: {seen:?}"
    );
    for offset in offsets.clone() {
        assert_eq!(
            log.read(offset).unwrap().unwrap().value(),
            &big[..],
            "offset {offset}"
        );
    }
    log.close().unwrap();
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.end_offset(), offsets.end);
    assert_eq!(log.read(offsets.end - 1).unwrap().unwrap().value(), &big[..]);
}

/// A cursor reads its next chunk into the buffer of the last one only when
/// no record handed out still shares it: records kept while the cursor
/// reads on, over many chunks, keep their bytes.
#[test]
fn records_kept_while_a_cursor_reads_on_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let count = 20_000u64; // about 3 MB: a dozen chunks of the cursor
    let records: Vec<Vec<u8>> = (0..count).map(|i| [value(i), vec![b'.'; 90]].concat()).collect();
    let batch: Vec<Record> = records.iter().map(Record::new).collect();
    log.append_batch(&batch).unwrap();
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    let mut kept = Vec::new();
    let mut read = 0u64;
    while let Some(record) = cursor.next().unwrap() {
        if read.is_multiple_of(997) {
            kept.push((read, record));
        }
        read += 1;
    }
    assert_eq!(read, count);
    for (offset, record) in kept {
        assert_eq!(record.value(), records[offset as usize], "offset {offset}");
    }
}
