//! What every peer shares: the workloads and their sizes, record values,
//! the read-back verifier, the way the append, read and queue cases are
//! timed, latency percentiles and the measured outcome.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// The error type of the whole harness: any failure ends the case.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Records per batch in the batched workloads (and per transaction where a
/// database's unit of writing is a transaction).
pub const BATCH: usize = 1000;

/// One workload of the comparison table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Append 100 B values one call each, no per-message fsync.
    Append100,
    /// Append 100 B values in batches of [`BATCH`], no fsync.
    AppendBatch100,
    /// Append 1 KiB values one call each, no fsync (reported in MB/s).
    Append1K,
    /// Write 100 B values untimed, then read them all in order (timed).
    Read100,
    /// Durable appends of 1 KiB, fsync (or the store's durable commit)
    /// before each call returns, from 1, 4 or 16 threads.
    Durable1,
    Durable4,
    Durable16,
    /// Enqueue N values of 100 B one by one, then dequeue and ack each.
    Queue,
    /// In-process request-reply round trips of 100 B (logbus only: the
    /// peers have no request-reply).
    RequestReply,
    /// The same with the whole process (requester, responder and the bus's
    /// threads) pinned to one CPU.
    RequestReplyPinned,
    /// Ping-pong through two topics between the bus's owner and a receiver
    /// waiting in `recv`: a thread of the same process, or another process
    /// that joined the bus (logbus only). Latency: from the publish call
    /// to the receiver's `recv` returning (one way).
    WakeInProcess,
    WakeAcrossProcesses,
    /// Publish 100 B values one call each from a process that joined the
    /// bus (through its owner, `Durability::Os`; logbus only).
    PublishJoined,
    /// A bus with 10 topics holding one record each: the disk it allocates
    /// while open (logbus only).
    DiskPerTopic,
    /// A writer killed right after its log rolled to a new segment: the
    /// time of the next `Log::open` and what its recovery read (logbus
    /// only).
    OpenAfterCrash,
}

pub const WORKLOADS: [Workload; 15] = [
    Workload::Append100,
    Workload::AppendBatch100,
    Workload::Append1K,
    Workload::Read100,
    Workload::Durable1,
    Workload::Durable4,
    Workload::Durable16,
    Workload::Queue,
    Workload::RequestReply,
    Workload::RequestReplyPinned,
    Workload::WakeInProcess,
    Workload::WakeAcrossProcesses,
    Workload::PublishJoined,
    Workload::DiskPerTopic,
    Workload::OpenAfterCrash,
];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Append100 => "append_100",
            Workload::AppendBatch100 => "append_batch_100",
            Workload::Append1K => "append_1k",
            Workload::Read100 => "read_100",
            Workload::Durable1 => "durable_1k_1t",
            Workload::Durable4 => "durable_1k_4t",
            Workload::Durable16 => "durable_1k_16t",
            Workload::Queue => "queue_100",
            Workload::RequestReply => "request_reply_100",
            Workload::RequestReplyPinned => "request_reply_pinned_100",
            Workload::WakeInProcess => "wake_1_process_100",
            Workload::WakeAcrossProcesses => "wake_2_processes_100",
            Workload::PublishJoined => "publish_joined_100",
            Workload::DiskPerTopic => "disk_10_topics",
            Workload::OpenAfterCrash => "open_after_roll_crash",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Workload::Append100 => "append 100 B, no per-message fsync (msg/s)",
            Workload::AppendBatch100 => "append 100 B in batches of 1000 (msg/s)",
            Workload::Append1K => "append 1 KiB, no fsync (MB/s)",
            Workload::Read100 => "sequential read 100 B (msg/s)",
            Workload::Durable1 => "durable append 1 KiB, 1 thread (msg/s)",
            Workload::Durable4 => "durable append 1 KiB, 4 threads (msg/s)",
            Workload::Durable16 => "durable append 1 KiB, 16 threads (msg/s)",
            Workload::Queue => "queue: enqueue N then dequeue+ack N, 100 B (msg/s)",
            Workload::RequestReply => "request-reply round trip, 100 B, Durability::Os (msg/s)",
            Workload::RequestReplyPinned => {
                "request-reply round trip, 100 B, Durability::Os, one CPU (msg/s)"
            }
            Workload::WakeInProcess => "ping-pong to a receiver in recv, same process, 100 B (round trips/s)",
            Workload::WakeAcrossProcesses => {
                "ping-pong to a receiver in recv, another process, 100 B (round trips/s)"
            }
            Workload::PublishJoined => "publish 100 B from a joined process, Durability::Os (msg/s)",
            Workload::DiskPerTopic => "10 topics with one record each, bus open",
            Workload::OpenAfterCrash => "open after a kill right after a segment roll",
        }
    }

    /// Whether only logbus runs this workload (the peers have no
    /// request-reply, topics or recovery report).
    pub fn logbus_only(self) -> bool {
        matches!(
            self,
            Workload::RequestReply
                | Workload::RequestReplyPinned
                | Workload::WakeInProcess
                | Workload::WakeAcrossProcesses
                | Workload::PublishJoined
                | Workload::DiskPerTopic
                | Workload::OpenAfterCrash
        )
    }

    /// Whether the throughput table has a row for it (the others report
    /// only their [`Workload::figures`]).
    pub fn has_rate(self) -> bool {
        !matches!(self, Workload::DiskPerTopic | Workload::OpenAfterCrash)
    }

    /// Figures of the JSON line shown in the table of other figures: key
    /// and label.
    pub fn figures(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Workload::Queue => &[
                ("enqueue_rate", "publish (msg/s)"),
                ("dequeue_ack_rate", "recv + ack (msg/s)"),
            ],
            Workload::DiskPerTopic => &[
                ("allocated_mb", "allocated while open (MB)"),
                ("allocated_closed_mb", "allocated after close (MB)"),
            ],
            Workload::OpenAfterCrash => &[
                ("open_ms", "`Log::open` (ms)"),
                ("scanned_kib", "frames scanned by recovery (KiB)"),
                ("tail_checked_kib", "read past the last frame (KiB)"),
                ("tail_kib", "written after the roll (KiB)"),
                ("file_kib", "active segment file, reservation included (KiB)"),
            ],
            _ => &[],
        }
    }

    pub fn parse(name: &str) -> Option<Workload> {
        WORKLOADS.into_iter().find(|w| w.name() == name)
    }

    /// Whether the table reports MB/s rather than messages per second.
    pub fn in_megabytes(self) -> bool {
        self == Workload::Append1K
    }

    /// Whether each operation's latency is measured.
    pub fn has_latency(self) -> bool {
        matches!(
            self,
            Workload::Durable1
                | Workload::Durable4
                | Workload::Durable16
                | Workload::RequestReply
                | Workload::RequestReplyPinned
                | Workload::WakeInProcess
                | Workload::WakeAcrossProcesses
        )
    }

    /// The case's size: messages (in total), value bytes and threads.
    /// `scale` shrinks or grows the message count (for quick trials).
    pub fn spec(self, scale: f64) -> Spec {
        let (n, size, threads) = match self {
            Workload::Append100 | Workload::AppendBatch100 | Workload::Read100 => (1_000_000, 100, 1),
            Workload::Append1K => (100_000, 1024, 1),
            Workload::Durable1 => (2_000, 1024, 1),
            Workload::Durable4 => (4_000, 1024, 4),
            Workload::Durable16 => (4_000, 1024, 16),
            Workload::Queue => (50_000, 100, 1),
            Workload::RequestReply | Workload::RequestReplyPinned => (5_000, 100, 1),
            Workload::WakeInProcess | Workload::WakeAcrossProcesses => (5_000, 100, 1),
            Workload::PublishJoined => (50_000, 100, 1),
            Workload::DiskPerTopic => (10, 100, 1),
            Workload::OpenAfterCrash => (100, 1024, 1),
        };
        // Ten topics are ten topics at any scale.
        let scale = if self == Workload::DiskPerTopic {
            1.0
        } else {
            scale
        };
        let n = ((n as f64 * scale) as u64).max(threads as u64 * 10);
        let n = n / threads as u64 * threads as u64;
        Spec {
            workload: self,
            n,
            size,
            threads,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub workload: Workload,
    /// Messages in total (across threads).
    pub n: u64,
    /// Value bytes per message.
    pub size: usize,
    pub threads: usize,
}

impl Spec {
    pub fn per_thread(&self) -> u64 {
        self.n / self.threads as u64
    }
}

/// Record values: `size` bytes cut from a fixed pseudo-random slab (so no
/// store gains from compressing them), with the message index in the first
/// 8 bytes and its low byte repeated in the last one.
pub struct Values {
    slab: Vec<u8>,
    size: usize,
}

const SLAB_BYTES: usize = 8 << 20;

impl Values {
    pub fn new(size: usize) -> Values {
        assert!(size >= 9, "values carry an 8-byte index and a check byte");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut slab = Vec::with_capacity(SLAB_BYTES + size);
        while slab.len() < SLAB_BYTES + size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            slab.extend_from_slice(&state.to_le_bytes());
        }
        Values { slab, size }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Writes the value of message `index` into `out` (`size` bytes).
    #[inline]
    pub fn fill(&self, index: u64, out: &mut [u8]) {
        let start = (index as usize).wrapping_mul(self.size) % SLAB_BYTES;
        out.copy_from_slice(&self.slab[start..start + self.size]);
        out[..8].copy_from_slice(&index.to_le_bytes());
        out[self.size - 1] = index as u8;
    }

    /// A buffer holding message `index`.
    pub fn buffer(&self, index: u64) -> Vec<u8> {
        let mut out = vec![0; self.size];
        self.fill(index, &mut out);
        out
    }

    /// Fills `slab` (a multiple of `size` bytes) with messages from `first`.
    pub fn fill_batch(&self, first: u64, slab: &mut [u8]) {
        for (i, out) in slab.chunks_exact_mut(self.size).enumerate() {
            self.fill(first + i as u64, out);
        }
    }

    /// Calls `each` with the index and value of each message `0..n` in turn
    /// (one buffer, refilled each time).
    pub fn each(&self, n: u64, mut each: impl FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        let mut value = vec![0u8; self.size];
        for i in 0..n {
            self.fill(i, &mut value);
            each(i, &value)?;
        }
        Ok(())
    }

    /// Calls `each` with the values of messages `0..n` in slabs of up to
    /// [`BATCH`] values, `size` bytes each (one slab, refilled each time).
    pub fn each_batch(&self, n: u64, mut each: impl FnMut(&[u8]) -> Res<()>) -> Res<()> {
        let mut slab = vec![0u8; BATCH * self.size];
        for first in (0..n).step_by(BATCH) {
            let count = BATCH.min((n - first) as usize);
            let slab = &mut slab[..count * self.size];
            self.fill_batch(first, slab);
            each(slab)?;
        }
        Ok(())
    }
}

/// Checks what a peer reads back: every value has the right length and
/// check byte, the indexes sum to what was written, and (for single
/// writers) they come in order.
#[derive(Debug, Clone)]
pub struct Verifier {
    size: usize,
    count: u64,
    sum: u64,
    next: u64,
    in_order: bool,
    bad: u64,
}

/// A cheap mix so that the sum of indexes catches swaps and duplicates.
#[inline]
fn mix(index: u64) -> u64 {
    (index ^ 0x5bd1_e995)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(23)
}

impl Verifier {
    pub fn new(size: usize) -> Verifier {
        Verifier {
            size,
            count: 0,
            sum: 0,
            next: 0,
            in_order: true,
            bad: 0,
        }
    }

    #[inline]
    pub fn see(&mut self, value: &[u8]) {
        if value.len() != self.size {
            self.bad += 1;
            return;
        }
        let index = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
        if value[self.size - 1] != index as u8 {
            self.bad += 1;
        }
        self.in_order &= index == self.next;
        self.next = index + 1;
        self.sum = self.sum.wrapping_add(mix(index));
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Fails unless exactly messages `0..n` were seen (in order if `ordered`).
    pub fn check(&self, n: u64, ordered: bool) -> Res<Checked> {
        let expected = (0..n).fold(0u64, |sum, i| sum.wrapping_add(mix(i)));
        if self.bad > 0 || self.count != n || self.sum != expected || (ordered && !self.in_order) {
            return Err(format!(
                "verification failed: {} values read of {n}, {} malformed, checksum {:016x} expected {expected:016x}, in order {}",
                self.count, self.bad, self.sum, self.in_order
            )
            .into());
        }
        Ok(Checked {
            count: self.count,
            checksum: self.sum,
        })
    }
}

/// Feeds what `read` reads back to a fresh verifier and checks that it was
/// exactly messages `0..spec.n` (in order if `ordered`).
pub fn verify(spec: &Spec, ordered: bool, read: impl FnOnce(&mut Verifier) -> Res<()>) -> Res<Checked> {
    let mut verifier = Verifier::new(spec.size);
    read(&mut verifier)?;
    verifier.check(spec.n, ordered)
}

#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub count: u64,
    pub checksum: u64,
}

/// What a case measured.
#[derive(Debug)]
pub struct Outcome {
    /// Time of the timed part.
    pub elapsed: Duration,
    /// Named parts of `elapsed` (e.g. enqueue and dequeue).
    pub phases: Vec<(&'static str, Duration)>,
    /// Per-operation latencies (durable cases).
    pub latencies: Vec<Duration>,
    pub checked: Checked,
    /// Peer-specific figures for the JSON line (e.g. logbus's sync count).
    pub extra: Vec<(&'static str, f64)>,
}

/// The JSON extras of a durable case that timed its syncs: how many, their
/// mean and their maximum.
pub fn sync_extras(syncs: u64, total: Duration, max: Duration) -> Vec<(&'static str, f64)> {
    vec![
        ("syncs", syncs as f64),
        ("sync_mean_us", total.as_secs_f64() * 1e6 / syncs.max(1) as f64),
        ("sync_max_us", max.as_secs_f64() * 1e6),
    ]
}

impl Outcome {
    pub fn new(elapsed: Duration, checked: Checked) -> Outcome {
        Outcome {
            elapsed,
            phases: Vec::new(),
            latencies: Vec::new(),
            checked,
            extra: Vec::new(),
        }
    }

    /// A case that timed each operation.
    pub fn with_latencies(elapsed: Duration, latencies: Vec<Duration>, checked: Checked) -> Outcome {
        Outcome {
            latencies,
            ..Outcome::new(elapsed, checked)
        }
    }

    /// A queue case that started at `started` and had enqueued everything
    /// after `enqueued`: checks that `dequeued` saw messages `0..n` in order
    /// and splits the time into enqueueing and dequeueing with acks.
    pub fn queued(started: Instant, enqueued: Duration, dequeued: &Verifier, n: u64) -> Res<Outcome> {
        let elapsed = started.elapsed();
        let checked = dequeued.check(n, true)?;
        Ok(Outcome {
            phases: vec![("enqueue", enqueued), ("dequeue_ack", elapsed - enqueued)],
            ..Outcome::new(elapsed, checked)
        })
    }
}

/// The append cases and read_100, run alike for every peer: an append case
/// times `append` (batched for append_batch_100) and then verifies;
/// read_100 appends in batches untimed and then times the verification
/// ([`Appended::verify`]). `append` returns the time of its timed part.
pub fn append_or_read(spec: &Spec, append: impl FnOnce(bool) -> Res<Duration>) -> Res<Appended> {
    if spec.workload == Workload::Read100 {
        append(true)?;
        return Ok(Appended { elapsed: None });
    }
    let elapsed = append(spec.workload == Workload::AppendBatch100)?;
    Ok(Appended {
        elapsed: Some(elapsed),
    })
}

/// What [`append_or_read`] appended, to be verified.
pub struct Appended {
    /// The append's time; `None` when the verification is what is timed.
    elapsed: Option<Duration>,
}

impl Appended {
    pub fn verify(self, verify: impl FnOnce() -> Res<Checked>) -> Res<Outcome> {
        let started = Instant::now();
        let checked = verify()?;
        Ok(Outcome::new(
            self.elapsed.unwrap_or_else(|| started.elapsed()),
            checked,
        ))
    }
}

/// A new, empty file where a queue without acks of its own keeps the
/// position of its next unacked message, rewritten after each message.
pub fn ack_file(path: &Path) -> Res<File> {
    Ok(OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?)
}

/// Runs `op` once per message of one thread's share and records each call's
/// latency. Index `first + i` is passed to `op`.
pub fn timed_ops(first: u64, count: u64, mut op: impl FnMut(u64) -> Res<()>) -> Res<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(count as usize);
    for i in first..first + count {
        let started = Instant::now();
        op(i)?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// Runs `threads` threads, thread `t` handling indexes
/// `t * per_thread .. (t + 1) * per_thread`, and gathers their latencies.
pub fn run_threads<F>(threads: usize, per_thread: u64, op: F) -> Res<(Duration, Vec<Duration>)>
where
    F: Fn(usize, u64) -> Res<()> + Sync,
{
    let started = Instant::now();
    let results: Vec<Res<Vec<Duration>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                scope.spawn(move || timed_ops(t as u64 * per_thread, per_thread, |i| op(t, i)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a producer thread panicked".into()))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    for result in results {
        latencies.extend(result?);
    }
    Ok((elapsed, latencies))
}

/// The `q`-quantile (0..=1) of sorted latencies.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak and current resident memory of this process, from /proc.
pub fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("RssAnon:"))
}

/// Escapes a string for JSON.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
