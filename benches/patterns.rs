//! Criterion benchmarks of the messaging patterns on a bus under
//! `Durability::Os` (topics, consumer state and inboxes alike):
//!
//! - `queue/{1,4}_receivers`: publish 1000 records of 100 B one by one, then
//!   1 or 4 threads sharing one consumer group receive and ack them all
//!   (the enqueue-then-dequeue workload of docs/PERFORMANCE.md);
//!   `queue/1_receiver_batches_of_100` receives with `try_recv_batch(100)`
//!   (one state write leases 100 records) and acks each;
//!   `queue/4_receivers_1000_keys_{unordered,per_key}`: the same with 4
//!   receivers, each record keyed with one of 1000 keys at random, in an
//!   unordered and in a per-key ordered group (`DeliveryOrder::PerKey`);
//! - `fanout/{1,4,16}_subscriptions`: publish 1000 records one by one, then
//!   each of K durable subscriptions reads all of them and commits;
//!   throughput counts the 1000 x K deliveries;
//! - `request_reply/round_trip`: one requester, one echoing responder
//!   thread; p50/p99/p99.9 of every timed round trip are printed to stderr;
//! - `scatter_gather/4`: one scatter to 4 services, each served by its own
//!   thread, gathered until all 4 replied.
//!
//! Every benchmark runs on a fresh temporary directory and checks what it
//! measured (each record delivered exactly once, each reply the echo of its
//! request); checks outside the timed section where they cost more than a
//! comparison. Thread start-up is never timed.
//!
//! Run with `cargo bench --bench patterns` (about 35 seconds on the 2-core
//! development machine).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use logbus::{
    Bus, BusOptions, DeliveryOrder, Durability, Gather, Group, GroupOptions, Recipients, Record, StartAt,
    StopReason, Subscription, Topic, TopicOptions,
};
use tempfile::TempDir;

const MESSAGES_PER_ITERATION: u64 = 1000;
const VALUE_BYTES: usize = 100;
/// Far above any healthy round trip: reaching it fails the benchmark.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle responder thread checks whether it should stop.
const RESPONDER_POLL: Duration = Duration::from_millis(20);

/// A bus on a fresh temporary directory with every topic under
/// `Durability::Os`. Keep the directory alive as long as the bus.
fn fresh_bus() -> (TempDir, Bus) {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = TopicOptions::default().durability(Durability::Os);
    let bus = Bus::open(dir.path(), BusOptions::default().topic_defaults(topics)).expect("open bus");
    (dir, bus)
}

/// A 100 B value carrying `number` in its first 8 bytes.
fn numbered_value(number: u64) -> [u8; VALUE_BYTES] {
    let mut value = [0x5a; VALUE_BYTES];
    value[..8].copy_from_slice(&number.to_le_bytes());
    value
}

fn value_number(value: &[u8]) -> u64 {
    assert_eq!(value.len(), VALUE_BYTES, "value length");
    u64::from_le_bytes(value[..8].try_into().expect("8 bytes"))
}

/// Publishes `MESSAGES_PER_ITERATION` numbered values one record at a
/// time; with `keys` > 0 each record gets one of that many keys at random.
fn publish_numbered(topic: &Topic, keys: u32) -> Range<u64> {
    let first = topic.end_offset();
    let mut rng = fastrand::Rng::with_seed(first);
    for number in 0..MESSAGES_PER_ITERATION {
        let value = numbered_value(number);
        let key = match keys {
            0 => String::new(),
            keys => format!("key-{}", rng.u32(..keys)),
        };
        topic.publish(&Record::new(&value).key(&key)).expect("publish");
    }
    first..topic.end_offset()
}

fn queue(c: &mut Criterion) {
    let mut bench = c.benchmark_group("queue");
    bench.throughput(Throughput::Elements(MESSAGES_PER_ITERATION));
    for (name, receivers, batch, keys, ordering) in [
        ("1_receivers", 1usize, 1usize, 0, DeliveryOrder::Unordered),
        ("4_receivers", 4, 1, 0, DeliveryOrder::Unordered),
        ("1_receiver_batches_of_100", 1, 100, 0, DeliveryOrder::Unordered),
        (
            "4_receivers_1000_keys_unordered",
            4,
            1,
            1000,
            DeliveryOrder::Unordered,
        ),
        ("4_receivers_1000_keys_per_key", 4, 1, 1000, DeliveryOrder::PerKey),
    ] {
        let (_dir, bus) = fresh_bus();
        let topic = bus.topic("jobs").expect("topic");
        let options = GroupOptions::default().ordering(ordering);
        let group = topic.group("workers", options).expect("group");
        bench.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| send_and_drain(&topic, &group, receivers, batch, keys))
                    .sum()
            })
        });
        bus.close().expect("close bus");
    }
    bench.finish();
}

/// One timed round: publish, then `receivers` threads (started untimed)
/// receive up to `batch` at a time and ack until the group is empty.
/// Checks that every number was received exactly once and nothing is left
/// in flight.
fn send_and_drain(topic: &Topic, group: &Group, receivers: usize, batch: usize, keys: u32) -> Duration {
    let go = Barrier::new(receivers + 1);
    let (elapsed, mut numbers) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..receivers)
            .map(|_| {
                scope.spawn(|| {
                    go.wait();
                    receive_until_empty(group, batch)
                })
            })
            .collect();
        let started = Instant::now();
        publish_numbered(topic, keys);
        go.wait();
        let numbers: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("receiver thread"))
            .collect();
        (started.elapsed(), numbers)
    });
    numbers.sort_unstable();
    assert!(
        numbers.iter().copied().eq(0..MESSAGES_PER_ITERATION),
        "each record received exactly once (got {} deliveries)",
        numbers.len()
    );
    let stats = group.stats().expect("group stats");
    assert_eq!((stats.lag, stats.in_flight), (0, 0), "group settled: {stats:?}");
    elapsed
}

fn receive_until_empty(group: &Group, batch: usize) -> Vec<u64> {
    let mut numbers = Vec::with_capacity(MESSAGES_PER_ITERATION as usize);
    loop {
        let deliveries = group.try_recv_batch(batch).expect("try_recv_batch");
        if deliveries.is_empty() {
            return numbers;
        }
        for delivery in deliveries {
            numbers.push(value_number(delivery.record().value()));
            delivery.ack().expect("ack");
        }
    }
}

fn fanout(c: &mut Criterion) {
    let mut bench = c.benchmark_group("fanout");
    for subscriptions in [1u64, 4, 16] {
        let (_dir, bus) = fresh_bus();
        let topic = bus.topic("prices").expect("topic");
        let mut readers: Vec<_> = (0..subscriptions)
            .map(|k| {
                topic
                    .subscribe(&format!("reader-{k}"), StartAt::Earliest)
                    .expect("subscribe")
            })
            .collect();
        bench.throughput(Throughput::Elements(MESSAGES_PER_ITERATION * subscriptions));
        let id = BenchmarkId::from_parameter(format!("{subscriptions}_subscriptions"));
        bench.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    let published = publish_numbered(&topic, 0);
                    for reader in &mut readers {
                        read_all(reader, &published);
                    }
                }
                started.elapsed()
            })
        });
        drop(readers);
        bus.close().expect("close bus");
    }
    bench.finish();
}

/// Reads `published` in order (anything else fails the benchmark), then
/// commits.
fn read_all(reader: &mut Subscription, published: &Range<u64>) {
    for offset in published.clone() {
        let record = reader.try_recv().expect("try_recv").expect("a published record");
        assert_eq!(
            record.offset(),
            offset,
            "subscription reads every record in order"
        );
    }
    assert!(
        reader.try_recv().expect("try_recv").is_none(),
        "nothing past the end"
    );
    reader.commit().expect("commit");
}

/// Responder threads that echo every request back, one per service, until
/// stopped.
struct Responders {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<logbus::Result<u64>>>,
}

impl Responders {
    fn start(bus: &Bus, services: &[String]) -> Responders {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = services
            .iter()
            .map(|service| {
                let responder = bus.responder(service).expect("responder");
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut served = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(request) = responder.recv(RESPONDER_POLL)? {
                            let echo = request.record().value_bytes();
                            request.reply(&Record::new(&echo[..]))?;
                            served += 1;
                        }
                    }
                    Ok(served)
                })
            })
            .collect();
        Responders { stop, threads }
    }

    /// Stops and joins every thread; returns how many requests they served.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("responder thread").expect("responder"))
            .sum()
    }
}

fn request_reply(c: &mut Criterion) {
    let (_dir, bus) = fresh_bus();
    let responders = Responders::start(&bus, &["echo".to_owned()]);
    let client = bus.requester("client").expect("requester");
    let mut round_trips = Vec::new();
    let mut bench = c.benchmark_group("request_reply");
    bench.throughput(Throughput::Elements(1));
    bench.bench_function("round_trip", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let request = numbered_value(round_trips.len() as u64);
                let started = Instant::now();
                let reply = client
                    .request("echo", &Record::new(&request), REPLY_TIMEOUT)
                    .expect("request");
                let elapsed = started.elapsed();
                assert_eq!(reply.value(), &request[..], "the reply echoes its request");
                round_trips.push(elapsed);
                total += elapsed;
            }
            total
        })
    });
    bench.finish();
    print_percentiles(&mut round_trips);
    assert_eq!(
        responders.stop(),
        round_trips.len() as u64,
        "one request served per round trip"
    );
    bus.close().expect("close bus");
}

/// Prints p50/p99/p99.9 of `latencies` (criterion's warm-up included);
/// nothing when the bench was filtered out and measured none.
fn print_percentiles(latencies: &mut [Duration]) {
    if latencies.is_empty() {
        return;
    }
    latencies.sort_unstable();
    let at = |quantile: f64| {
        let rank = ((quantile * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        format!("{:.1} µs", latencies[rank - 1].as_secs_f64() * 1e6)
    };
    eprintln!(
        "request_reply round trip p50 {} p99 {} p99.9 {} over {} round trips (Durability::Os, warm-up included)",
        at(0.5),
        at(0.99),
        at(0.999),
        latencies.len()
    );
}

fn scatter_gather(c: &mut Criterion) {
    let (_dir, bus) = fresh_bus();
    let services: Vec<String> = (0..4).map(|i| format!("stock-{i}")).collect();
    let responders = Responders::start(&bus, &services);
    let client = bus.requester("planner").expect("requester");
    let request = numbered_value(7);
    let mut scatters = 0u64;
    let mut bench = c.benchmark_group("scatter_gather");
    bench.throughput(Throughput::Elements(1));
    bench.bench_function(BenchmarkId::from_parameter(services.len()), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let recipients = Recipients::Services(services.clone());
                let started = Instant::now();
                let gathered = client
                    .scatter(recipients, &Record::new(&request))
                    .and_then(|scatter| scatter.gather(Gather::all(REPLY_TIMEOUT)))
                    .expect("scatter-gather");
                total += started.elapsed();
                assert_eq!(
                    gathered.stopped,
                    StopReason::All,
                    "missing {:?}",
                    gathered.missing
                );
                assert_eq!(gathered.replies.len(), services.len());
                scatters += 1;
            }
            total
        })
    });
    bench.finish();
    assert_eq!(
        responders.stop(),
        scatters * services.len() as u64,
        "every recipient served every scatter"
    );
    bus.close().expect("close bus");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = queue, fanout, request_reply, scatter_gather
}
criterion_main!(benches);
