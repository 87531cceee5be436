//! A tour of logbus on a temporary directory.
//!
//! Run with `cargo run --release --example tour`. The messaging patterns
//! (queues, pub/sub, request-reply, scatter-gather, dead letters) are being
//! built on the log shown here; until they land, the tour shows the log.

use std::time::{Duration, Instant};

use logbus::{Durability, Log, LogOptions, Position, Record};

fn main() -> logbus::Result<()> {
    let dir = tempfile::tempdir()?;
    println!("logbus tour in {}", dir.path().display());

    // 1. Durable appends: each returns once its record is fdatasync'd.
    let options = LogOptions::default()
        .durability(Durability::Always)
        .segment_bytes(1 << 20);
    let log = Log::open(dir.path(), options.clone())?;
    let offset = log.append(&Record::new(b"hello, log").key(b"greeting").header("lang", b"en"))?;
    println!("appended offset {offset}");

    // 2. A batch: one write, one sync.
    let values: Vec<String> = (0..1000).map(|i| format!("event {i}")).collect();
    let records: Vec<Record> = values.iter().map(|v| Record::new(v.as_bytes())).collect();
    let started = Instant::now();
    let range = log.append_batch(&records)?;
    println!(
        "batch of {} records -> offsets {range:?} in {:?}",
        records.len(),
        started.elapsed()
    );

    // 3. Group commit: concurrent durable appenders share fsyncs.
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let log = &log;
            scope.spawn(move || {
                for i in 0..50 {
                    log.append(&Record::new(format!("thread {t} msg {i}").as_bytes()))
                        .unwrap();
                }
            });
        }
    });
    println!("4 threads x 50 durable appends in {:?}", started.elapsed());

    // 4. Reading: random access and a cursor.
    let record = log.read(offset)?.expect("just appended");
    println!(
        "read {}: key={:?} value={:?} lang={:?}",
        record.offset(),
        String::from_utf8_lossy(record.key()),
        String::from_utf8_lossy(record.value()),
        record.header("lang").map(String::from_utf8_lossy)
    );
    let mut cursor = log.cursor(Position::Offset(range.end - 3))?;
    for _ in 0..3 {
        let record = cursor.next()?.expect("three records follow");
        println!(
            "cursor -> {} {}",
            record.offset(),
            String::from_utf8_lossy(record.value())
        );
    }

    // 5. A tailing reader is woken by appends.
    let mut tail = log.cursor(Position::Latest)?;
    let writer = log.clone();
    std::thread::spawn(move || writer.append(&Record::new(b"late news")));
    let news = tail
        .next_timeout(Duration::from_secs(5))?
        .expect("woken by the append");
    println!("tail woke with {:?}", String::from_utf8_lossy(news.value()));

    // 6. Close cleanly and reopen: recovery scans almost nothing.
    let end = log.end_offset();
    log.close()?;
    let log = Log::open(dir.path(), options)?;
    let report = log.recovery_report();
    println!(
        "reopened: clean={} segments={} scanned={} bytes, end offset {} (was {end})",
        report.clean_shutdown,
        report.segments,
        report.scanned_bytes,
        log.end_offset()
    );
    log.close()
}
