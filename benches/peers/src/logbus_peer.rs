//! logbus: a `Log` under `Durability::Os` (appends, reads), `Durability::Always`
//! (durable cases, group commit), and for the queue a topic with a consumer
//! group, both under `Durability::Os`.

use std::path::Path;
use std::time::{Duration, Instant};

use logbus::{
    Bus, BusOptions, Delivery, Durability, GroupOptions, Log, LogOptions, Position, Record, TopicOptions,
};

use crate::common::{
    Checked, Outcome, Res, Spec, Values, Verifier, Workload, append_or_read, run_threads, timed_ops,
};

fn open(dir: &Path, durability: Durability) -> Res<Log> {
    Ok(Log::open(dir, LogOptions::default().durability(durability))?)
}

fn verify(log: &Log, spec: &Spec, ordered: bool) -> Res<Checked> {
    crate::common::verify(spec, ordered, |verifier| {
        let mut cursor = log.cursor(Position::Earliest)?;
        while let Some(record) = cursor.next()? {
            verifier.see(record.value());
        }
        Ok(())
    })
}

fn append(log: &Log, spec: &Spec, values: &Values, batched: bool) -> Res<Duration> {
    let started = Instant::now();
    if batched {
        values.each_batch(spec.n, |slab| {
            let records: Vec<Record> = slab.chunks_exact(spec.size).map(Record::new).collect();
            log.append_batch(&records)?;
            Ok(())
        })?;
    } else {
        values.each(spec.n, |_, value| {
            log.append(&Record::new(value))?;
            Ok(())
        })?;
    }
    Ok(started.elapsed())
}

/// An embedded bus whose topics (consumer state and inboxes included) are
/// under `Durability::Os`.
pub fn open_bus(dir: &Path) -> Res<Bus> {
    let topic_options = TopicOptions::default().durability(Durability::Os);
    Ok(Bus::open(
        dir,
        BusOptions::default().topic_defaults(topic_options),
    )?)
}

/// How the queue case takes deliveries from its group.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))] // the waiting ones: `--nats`
pub enum Receive {
    /// `try_recv`, one at a time (the peer comparison).
    Try,
    /// `recv(timeout)`, one at a time.
    Wait,
    /// `recv_batch(max, timeout)`.
    Batch(usize),
}

/// How long a waiting receive waits for a record that should be there.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

fn settle(verifier: &mut Verifier, delivery: Delivery) -> Res<()> {
    verifier.see(delivery.record().value());
    delivery.ack()?;
    Ok(())
}

/// Publishes `spec.n` values to a topic, then receives and acks them all
/// through one consumer group; closes the bus.
pub fn queue(bus: Bus, spec: &Spec, values: &Values, receive: Receive) -> Res<Outcome> {
    let topic = bus.topic("jobs")?;
    let group = topic.group("workers", GroupOptions::default())?;
    let started = Instant::now();
    values.each(spec.n, |_, value| {
        topic.publish(&Record::new(value))?;
        Ok(())
    })?;
    let enqueued = started.elapsed();
    let mut verifier = Verifier::new(spec.size);
    while verifier.count() < spec.n {
        let one = match receive {
            Receive::Try => group.try_recv()?,
            Receive::Wait => group.recv(RECV_TIMEOUT)?,
            Receive::Batch(max) => {
                let deliveries = group.recv_batch(max, RECV_TIMEOUT)?;
                if deliveries.is_empty() {
                    None
                } else {
                    for delivery in deliveries {
                        settle(&mut verifier, delivery)?;
                    }
                    continue;
                }
            }
        };
        let Some(delivery) = one else {
            return Err(format!("the group ran dry after {} deliveries", verifier.count()).into());
        };
        settle(&mut verifier, delivery)?;
    }
    let outcome = Outcome::queued(started, enqueued, &verifier, spec.n)?;
    let stats = group.stats()?;
    if stats.lag != 0 || stats.in_flight != 0 {
        return Err(format!("after acking everything: {stats:?}").into());
    }
    bus.close()?;
    Ok(outcome)
}

/// A responder thread echoes each request; the client times each round
/// trip and checks the echoed value; closes the bus.
pub fn request_reply(bus: Bus, spec: &Spec, values: &Values) -> Res<Outcome> {
    let responder = bus.responder("echo")?;
    let client = bus.requester("client")?;
    let n = spec.n;
    let server = std::thread::spawn(move || -> logbus::Result<u64> {
        let mut served = 0;
        while served < n {
            let Some(request) = responder.recv(Duration::from_secs(10))? else {
                break;
            };
            let value = request.record().value_bytes();
            request.reply(&Record::new(&value[..]))?;
            served += 1;
        }
        Ok(served)
    });
    let mut verifier = Verifier::new(spec.size);
    let started = Instant::now();
    let latencies = timed_ops(0, n, |i| {
        let value = values.buffer(i);
        let reply = client.request("echo", &Record::new(&value), Duration::from_secs(10))?;
        verifier.see(reply.value());
        Ok(())
    })?;
    let elapsed = started.elapsed();
    let served = server.join().map_err(|_| "the responder panicked")??;
    if served != n {
        return Err(format!("the responder served {served} of {n}").into());
    }
    let checked = verifier.check(n, true)?;
    bus.close()?;
    Ok(Outcome::with_latencies(elapsed, latencies, checked))
}

pub fn run(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    let outcome = match spec.workload {
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 | Workload::Read100 => {
            let log = open(dir, Durability::Os)?;
            let outcome = append_or_read(spec, |batched| append(&log, spec, &values, batched))?
                .verify(|| verify(&log, spec, true))?;
            log.close()?;
            outcome
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => {
            let log = open(dir, Durability::Always)?;
            let (elapsed, latencies) = run_threads(spec.threads, spec.per_thread(), |_, i| {
                let value = values.buffer(i);
                log.append(&Record::new(&value))?;
                Ok(())
            })?;
            let checked = verify(&log, spec, spec.threads == 1)?;
            let syncs = log.sync_stats();
            log.close()?;
            Outcome {
                extra: vec![
                    ("syncs", syncs.syncs as f64),
                    (
                        "sync_mean_us",
                        syncs.total.as_secs_f64() * 1e6 / syncs.syncs.max(1) as f64,
                    ),
                    ("sync_max_us", syncs.max.as_secs_f64() * 1e6),
                ],
                ..Outcome::with_latencies(elapsed, latencies, checked)
            }
        }
        Workload::Queue => queue(open_bus(dir)?, spec, &values, Receive::Try)?,
        Workload::RequestReply => request_reply(open_bus(dir)?, spec, &values)?,
    };
    Ok(Some(outcome))
}
