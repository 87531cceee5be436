//! logbus: a `Log` under `Durability::Os` (appends, reads), `Durability::Always`
//! (durable cases, group commit), and for the queue a topic with a consumer
//! group, both under `Durability::Os`; request-reply (also on one CPU), a
//! ping-pong to a receiver in the same process or in another one that
//! joined the bus, publishing from a joined process, the disk 10 topics
//! allocate, and the open after a writer was killed right after a segment
//! roll. `logbus-1seg` runs the batched append with segments of 1 GiB, so
//! the run never rolls: with `naive-crc36` it splits the batched append's
//! gap into its parts (docs/PERFORMANCE.md, "The split, and the two peers
//! that make it").

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logbus::{
    Bus, BusOptions, Delivery, Durability, GroupOptions, Log, LogOptions, Position, Record,
    SEGMENT_BYTES_MAX, TopicOptions,
};

use crate::common::{
    Checked, Outcome, Res, Spec, Values, Verifier, Workload, append_or_read, run_threads, sync_extras,
    timed_ops,
};

fn open(dir: &Path, durability: Durability) -> Res<Log> {
    Ok(Log::open(dir, LogOptions::default().durability(durability))?)
}

/// `logbus-1seg`: the batched append into one segment of 1 GiB (the case
/// writes 136 MB), `Durability::Os`.
pub fn run_one_segment(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    if spec.workload != Workload::AppendBatch100 {
        return Ok(None);
    }
    let options = LogOptions::default()
        .durability(Durability::Os)
        .segment_bytes(SEGMENT_BYTES_MAX);
    let log = Log::open(dir, options)?;
    let values = Values::new(spec.size);
    let outcome = append_or_read(spec, |batched| append(&log, spec, &values, batched))?
        .verify(|| verify(&log, spec, true))?;
    log.close()?;
    Ok(Some(outcome))
}

fn verify(log: &Log, spec: &Spec, ordered: bool) -> Res<Checked> {
    crate::common::verify(spec, ordered, |verifier| {
        let mut cursor = log.cursor(Position::Earliest)?;
        while let Some(record) = cursor.next_ref()? {
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

/// How many records one receive of the queue case leases
/// (`GroupOptions::prefetch`; RabbitMQ and Kafka consumers prefetch too).
const QUEUE_PREFETCH: usize = 64;

/// Publishes `spec.n` values to a topic, then receives and acks them all
/// through one consumer group; closes the bus.
pub fn queue(bus: Bus, spec: &Spec, values: &Values, receive: Receive) -> Res<Outcome> {
    let topic = bus.topic("jobs")?;
    let group = topic.group("workers", GroupOptions::default().prefetch(QUEUE_PREFETCH))?;
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

/// Nanoseconds since the Unix epoch: one clock for every process of the
/// host, so a receiver measures how long ago another process published.
fn wall_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The receiving side of the ping-pong (`--echo DIR N` in another
/// process, or a thread): `n` times, waits in `recv` for a ping and
/// answers with how long ago it was published (in its first 8 bytes).
pub fn echo(bus: &Bus, n: u64) -> Res<()> {
    let mut pings = bus.topic("ping")?.subscribe("echo", logbus::StartAt::Earliest)?;
    let pongs = bus.topic("pong")?;
    for _ in 0..n {
        let ping = pings.recv(RECV_TIMEOUT)?.ok_or("no ping came")?;
        let woke = wall_nanos();
        let sent = u64::from_le_bytes(ping.value()[..8].try_into()?);
        let mut pong = ping.value().to_vec();
        pong[..8].copy_from_slice(&woke.saturating_sub(sent).to_le_bytes());
        pongs.publish(&Record::new(&pong))?;
    }
    Ok(())
}

/// The ping-pong: this process owns the bus and publishes each ping (its
/// first 8 bytes the time of the publish call), the receiver (a thread, or
/// `--echo` in another process that joins the bus) answers; the latency
/// is the one-way time it measured.
fn wake(dir: &Path, spec: &Spec, values: &Values, across: bool) -> Res<Outcome> {
    let bus = open_bus(dir)?;
    let n = spec.n;
    let receiver: Box<dyn FnOnce() -> Res<()>> = if across {
        let child = Command::new(std::env::current_exe()?)
            .arg("--echo")
            .arg(dir)
            .arg(n.to_string())
            .spawn()?;
        Box::new(move || {
            let status = child.wait_with_output()?.status;
            match status.success() {
                true => Ok(()),
                false => Err(format!("the echo process failed: {status}").into()),
            }
        })
    } else {
        let bus = bus.clone();
        let thread = std::thread::spawn(move || echo(&bus, n).map_err(|e| e.to_string()));
        Box::new(move || {
            thread
                .join()
                .map_err(|_| "the echo thread panicked")?
                .map_err(Into::into)
        })
    };
    let pings = bus.topic("ping")?;
    let mut pongs = bus
        .topic("pong")?
        .subscribe("pinger", logbus::StartAt::Earliest)?;
    let mut verifier = Verifier::new(spec.size);
    let mut latencies = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for i in 0..n {
        let mut value = values.buffer(i);
        let original = value[..8].to_vec();
        value[..8].copy_from_slice(&wall_nanos().to_le_bytes());
        pings.publish(&Record::new(&value))?;
        let pong = pongs.recv(RECV_TIMEOUT)?.ok_or("no pong came")?;
        latencies.push(Duration::from_nanos(u64::from_le_bytes(
            pong.value()[..8].try_into()?,
        )));
        value[..8].copy_from_slice(&original);
        if pong.value()[8..] != value[8..] {
            return Err(format!("pong {i} does not echo its ping").into());
        }
        verifier.see(&value);
    }
    let elapsed = started.elapsed();
    receiver()?;
    let checked = verifier.check(n, true)?;
    bus.close()?;
    Ok(Outcome::with_latencies(elapsed, latencies, checked))
}

/// `--publish-joined DIR N SIZE`: joins the bus in `dir` and publishes
/// `n` values one call each; prints the seconds it took.
pub fn publish_joined(dir: &Path, n: u64, size: usize) -> Res<()> {
    let bus = open_bus(dir)?;
    let topic = bus.topic("jobs")?;
    let values = Values::new(size);
    let started = Instant::now();
    values.each(n, |_, value| {
        topic.publish(&Record::new(value))?;
        Ok(())
    })?;
    println!("{:.6}", started.elapsed().as_secs_f64());
    Ok(())
}

/// Another process joins this process's bus and publishes `spec.n`
/// values; the timed part is its publishing; this process reads them back.
fn publish_from_joined(dir: &Path, spec: &Spec) -> Res<Outcome> {
    let bus = open_bus(dir)?;
    let output = Command::new(std::env::current_exe()?)
        .arg("--publish-joined")
        .arg(dir)
        .arg(spec.n.to_string())
        .arg(spec.size.to_string())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("the joined publisher failed: {}", output.status).into());
    }
    let secs: f64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    let topic = bus.topic("jobs")?;
    let checked = crate::common::verify(spec, true, |verifier| {
        let mut cursor = topic
            .log()
            .ok_or("an embedded topic")?
            .cursor(Position::Earliest)?;
        while let Some(record) = cursor.next()? {
            verifier.see(record.value());
        }
        Ok(())
    })?;
    bus.close()?;
    Ok(Outcome::new(Duration::from_secs_f64(secs), checked))
}

/// Pins this thread, and every thread it starts from now on, to the first
/// CPU it may run on.
fn pin_to_one_cpu() -> Res<()> {
    // SAFETY: `cpu_set_t` is plain data for which all zeros is the empty
    // set; `sched_getaffinity` and `sched_setaffinity` read and write only
    // the set passed with its size; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .ok_or("no CPU in this thread's affinity")?;
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size, &set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

/// Bytes allocated on disk (`st_blocks` x 512) by the files under `dir`.
fn allocated_bytes(dir: &Path) -> Res<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += allocated_bytes(&entry.path())?;
        }
    }
    Ok(total)
}

/// Opens a bus, creates `spec.n` topics and publishes one record to each,
/// then reports the disk allocated while the bus is open and after it
/// closed; reads each record back.
fn disk_per_topic(dir: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let bus = open_bus(dir)?;
    let started = Instant::now();
    let topics = (0..spec.n)
        .map(|i| {
            let topic = bus.topic(&format!("t{i}"))?;
            topic.publish(&Record::new(&values.buffer(i)))?;
            Ok(topic)
        })
        .collect::<Res<Vec<_>>>()?;
    let elapsed = started.elapsed();
    let open = allocated_bytes(dir)?;
    let checked = crate::common::verify(spec, true, |verifier| {
        for topic in &topics {
            let log = topic.log().ok_or("not an embedded topic")?;
            let record = log.read(0)?.ok_or("a topic lost its record")?;
            verifier.see(record.value());
        }
        Ok(())
    })?;
    drop(topics);
    bus.close()?;
    let closed = allocated_bytes(dir)?;
    Ok(Outcome {
        extra: vec![
            ("allocated_mb", open as f64 / 1e6),
            ("allocated_closed_mb", closed as f64 / 1e6),
        ],
        ..Outcome::new(elapsed, checked)
    })
}

/// The segment size of the crash case: small enough that a roll comes
/// after 10 MiB.
const CRASH_SEGMENT_BYTES: u64 = 10 << 20;

/// The crash case's record size (its `Spec::size`).
const CRASH_RECORD_BYTES: usize = 1024;

fn crash_options() -> LogOptions {
    LogOptions::default()
        .durability(Durability::Os)
        .segment_bytes(CRASH_SEGMENT_BYTES)
}

/// The segment files under `dir`, in order.
fn segments(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension() == Some(OsStr::new("log")));
    files.sort();
    Ok(files)
}

/// `--crash-writer DIR TAIL`: appends 1 KiB records to a log with 10 MiB
/// segments until it rolls, then `tail` more; prints how many it appended
/// and waits to be killed.
pub fn crash_writer(dir: &Path, tail: u64) -> Res<()> {
    let log = Log::open(dir, crash_options())?;
    let values = Values::new(CRASH_RECORD_BYTES);
    let mut value = vec![0u8; CRASH_RECORD_BYTES];
    let mut index = 0;
    let mut after_roll = None;
    while after_roll.is_none_or(|first| index < first + tail) {
        values.fill(index, &mut value);
        log.append(&Record::new(&value))?;
        index += 1;
        if after_roll.is_none() && segments(dir)?.len() > 1 {
            after_roll = Some(index);
        }
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{index}")?;
    stdout.flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// A writer (this binary with `--crash-writer`) appends until its log
/// rolls, then `spec.n` records more, and is killed (SIGKILL); the timed
/// part is the next `Log::open`, whose recovery report says what it read.
fn open_after_crash(dir: &Path, spec: &Spec) -> Res<Outcome> {
    let mut writer = Command::new(std::env::current_exe()?)
        .arg("--crash-writer")
        .arg(dir)
        .arg(spec.n.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(writer.stdout.take().ok_or("piped stdout")?).read_line(&mut line)?;
    writer.kill()?;
    writer.wait()?;
    let appended: u64 = line
        .trim()
        .parse()
        .map_err(|_| format!("the writer said {line:?}"))?;
    let active = segments(dir)?.pop().ok_or("no segment")?;
    let file_bytes = std::fs::metadata(&active)?.len();
    let started = Instant::now();
    let log = Log::open(dir, crash_options())?;
    let elapsed = started.elapsed();
    let report = log.recovery_report().clone();
    let base: u64 = active
        .file_stem()
        .and_then(OsStr::to_str)
        .and_then(|stem| stem.parse().ok())
        .ok_or("segment name")?;
    let tail_bytes = (appended - base) * CRASH_RECORD_BYTES as u64;
    let mut verifier = Verifier::new(CRASH_RECORD_BYTES);
    let mut cursor = log.cursor(Position::Earliest)?;
    while let Some(record) = cursor.next()? {
        verifier.see(record.value());
    }
    let checked = verifier.check(appended, true)?;
    log.close()?;
    Ok(Outcome {
        extra: vec![
            ("open_ms", elapsed.as_secs_f64() * 1e3),
            ("scanned_kib", report.scanned_bytes as f64 / 1024.0),
            ("tail_checked_kib", report.tail_checked_bytes as f64 / 1024.0),
            ("tail_kib", tail_bytes as f64 / 1024.0),
            ("file_kib", file_bytes as f64 / 1024.0),
        ],
        ..Outcome::new(elapsed, checked)
    })
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
                extra: sync_extras(syncs.syncs, syncs.total, syncs.max),
                ..Outcome::with_latencies(elapsed, latencies, checked)
            }
        }
        Workload::Queue => queue(open_bus(dir)?, spec, &values, Receive::Try)?,
        Workload::RequestReply => request_reply(open_bus(dir)?, spec, &values)?,
        Workload::RequestReplyPinned => {
            pin_to_one_cpu()?;
            request_reply(open_bus(dir)?, spec, &values)?
        }
        Workload::WakeInProcess => wake(dir, spec, &values, false)?,
        Workload::WakeAcrossProcesses => wake(dir, spec, &values, true)?,
        Workload::PublishJoined => publish_from_joined(dir, spec)?,
        Workload::DiskPerTopic => disk_per_topic(dir, spec, &values)?,
        Workload::OpenAfterCrash => open_after_crash(dir, spec)?,
    };
    Ok(Some(outcome))
}
