//! Criterion benchmarks of the log engine: appends under each durability
//! mode, batches, group commit, reads, timestamp seeks and recovery.
//!
//! Run with `cargo bench --bench log`; `LOGBUS_BENCH_RECOVERY_GIB=1` adds
//! the 1 GiB recovery case (it writes 1 GiB to the temp directory).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use logbus::{Durability, Log, LogOptions, Position, Record};

fn open(dir: &Path, durability: Durability) -> Log {
    Log::open(dir, LogOptions::default().durability(durability)).expect("open log")
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for size in [100usize, 1024, 64 << 10] {
        let value = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        for (name, durability) in [
            ("os", Durability::Os),
            ("interval_10ms", Durability::Interval(Duration::from_millis(10))),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), durability);
            group.bench_with_input(BenchmarkId::new(name, size), &value, |b, value| {
                b.iter(|| log.append(&Record::new(value)).expect("append"))
            });
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), Durability::Os);
        let records: Vec<Record> = (0..64).map(|_| Record::new(&value)).collect();
        group.throughput(Throughput::Bytes((size * records.len()) as u64));
        group.bench_with_input(BenchmarkId::new("batch64_os", size), &records, |b, records| {
            b.iter(|| log.append_batch(records).expect("append_batch"))
        });
    }
    group.finish();
}

fn durable_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_append_1KiB");
    group.sample_size(10);
    let value = vec![7u8; 1024];
    for producers in [1usize, 4, 16] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), Durability::Always);
        group.throughput(Throughput::Elements(producers as u64 * 20));
        group.bench_function(BenchmarkId::from_parameter(producers), |b| {
            b.iter(|| {
                std::thread::scope(|scope| {
                    for _ in 0..producers {
                        scope.spawn(|| {
                            for _ in 0..20 {
                                log.append(&Record::new(&value)).expect("append");
                            }
                        });
                    }
                })
            })
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), Durability::Os);
    let value = [7u8; 100];
    let count = 100_000u64;
    let records: Vec<Record> = (0..1000).map(|_| Record::new(&value)).collect();
    for _ in 0..count / 1000 {
        log.append_batch(&records).expect("append_batch");
    }
    let mut group = c.benchmark_group("read_100B");
    group.throughput(Throughput::Elements(count));
    group.bench_function("sequential", |b| {
        b.iter(|| {
            let mut cursor = log.cursor(Position::Earliest).expect("cursor");
            let mut n = 0u64;
            while let Some(record) = cursor.next().expect("next") {
                n += record.value().len() as u64;
            }
            black_box(n)
        })
    });
    group.throughput(Throughput::Elements(1));
    let mut rng = fastrand::Rng::with_seed(7);
    group.bench_function("random", |b| {
        b.iter(|| log.read(rng.u64(0..count)).expect("read"))
    });
    group.bench_function("seek_timestamp", |b| {
        let now = log.read(count / 2).expect("read").expect("record").timestamp();
        b.iter(|| log.cursor(Position::Timestamp(now)).expect("cursor").offset())
    });
    group.finish();
}

/// Writes `bytes` of 1 KiB records, closes, removes the clean marker (as a
/// crash leaves it) and returns the directory.
fn crashed_log(bytes: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), Durability::Os);
    let value = vec![7u8; 1024];
    let records: Vec<Record> = (0..1024).map(|_| Record::new(&value)).collect();
    for _ in 0..bytes / (1024 * 1024) {
        log.append_batch(&records).expect("append_batch");
    }
    log.close().expect("close");
    std::fs::remove_file(dir.path().join(".clean")).expect("remove clean marker");
    dir
}

fn recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery_open_after_crash");
    group.sample_size(10);
    let mut sizes = vec![10u64 << 20];
    if std::env::var_os("LOGBUS_BENCH_RECOVERY_GIB").is_some() {
        sizes.push(1 << 30);
    }
    for bytes in sizes {
        let dir = crashed_log(bytes);
        group.bench_function(BenchmarkId::from_parameter(format!("{}MiB", bytes >> 20)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let log = open(dir.path(), Durability::Os);
                    total += started.elapsed();
                    drop(log);
                    std::fs::remove_file(dir.path().join(".clean")).expect("remove clean marker");
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append, durable_append, read, recovery);
criterion_main!(benches);
