//! The naive baselines: length-prefixed frames through a `BufWriter`,
//! `File::sync_data` for the durable cases, and for the queue an ack file
//! holding the next unacked position. `naive-crc` frames are
//! `[len u32][crc32 u32][value]` with the CRC checked on read (the
//! baseline of every ratio); `naive` frames are `[len u32][value]`, nothing
//! checked (what the page cache and a `BufWriter` cost at the least).
//! Three more layouts run the batched append only, to tell what a frame
//! layout costs from what logbus's code does (docs/PERFORMANCE.md, "The
//! split, and the two peers that make it", and "What a record costs in
//! its frame"): `naive-crc36` frames have logbus's size, a 36-byte
//! header, and their CRC covers the same bytes as logbus's; `naive-crc20`
//! frames are the same with a 20-byte header; `naive-batches` writes each
//! batch as one record batch, as Kafka does: one header and one CRC for
//! the batch, 6 bytes before each value. `naive-rounds` runs the durable
//! cases only, with `naive-crc` frames and the least a group commit can
//! do: what 16 producers with one append in flight each reach on this
//! machine at best (docs/PERFORMANCE.md, "16 durable producers against
//! ideal rounds").

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::{
    BATCH, Checked, Outcome, Res, Spec, Values, Verifier, Workload, ack_file, append_or_read, run_threads,
    sync_extras,
};

/// One of the three frame layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    /// `[len u32][value]`, nothing checked (`naive`).
    Bare,
    /// `[len u32][crc32 u32][value]`, the CRC of the value (`naive-crc`).
    Crc,
    /// `[len u32][crc32 u32][zero bytes up to the given header length]
    /// [value]`, the CRC of all but itself, as logbus computes it: over
    /// bytes 4.. with the length in the CRC's place (`naive-crc36`,
    /// `naive-crc20`; built in place, so batches only).
    Sized(usize),
    /// A batch as one record batch: `[len u32][crc32 u32][count u32]`, then
    /// per value `[value len u16][4 zero bytes][value]` (where Kafka keeps
    /// a record's attributes, offset and timestamp deltas and key length
    /// as one-byte varints); the CRC covers bytes 8.. (`naive-batches`,
    /// batches only).
    Batches,
}

/// Bytes of a record batch's header (`Frames::Batches`).
const BATCH_HEADER_LEN: usize = 12;
/// Bytes before each value in a record batch.
const BATCHED_RECORD_HEADER_LEN: usize = 6;

impl Frames {
    fn header_len(self) -> usize {
        match self {
            Frames::Bare => 4,
            Frames::Crc => 8,
            Frames::Sized(len) => len,
            Frames::Batches => BATCHED_RECORD_HEADER_LEN,
        }
    }

    fn write_frame(self, out: &mut impl Write, value: &[u8]) -> std::io::Result<()> {
        debug_assert!(matches!(self, Frames::Bare | Frames::Crc), "built in place only");
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(value.len() as u32).to_le_bytes());
        if self == Frames::Crc {
            header[4..].copy_from_slice(&crc32fast::hash(value).to_le_bytes());
        }
        out.write_all(&header[..self.header_len()])?;
        out.write_all(value)
    }

    /// Appends the frames of `values` (each `size` bytes) to `out` as one
    /// batch would be encoded in place (`Sized` and `Batches` only).
    fn push_batch(self, out: &mut Vec<u8>, values: &[u8], size: usize) {
        match self {
            Frames::Sized(header_len) => {
                for value in values.chunks_exact(size) {
                    let start = out.len();
                    let len = value.len() as u32;
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(&len.to_le_bytes());
                    out.resize(start + header_len, 0);
                    out.extend_from_slice(value);
                    let crc = crc32fast::hash(&out[start + 4..]);
                    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
                }
            }
            Frames::Batches => {
                let start = out.len();
                out.resize(start + BATCH_HEADER_LEN, 0);
                for value in values.chunks_exact(size) {
                    let at = out.len();
                    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
                    out.resize(at + BATCHED_RECORD_HEADER_LEN, 0);
                    out.extend_from_slice(value);
                }
                let len = (out.len() - start) as u32;
                let count = (values.len() / size) as u32;
                out[start..start + 4].copy_from_slice(&len.to_le_bytes());
                out[start + 8..start + 12].copy_from_slice(&count.to_le_bytes());
                let crc = crc32fast::hash(&out[start + 8..]);
                out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
            }
            Frames::Bare | Frames::Crc => unreachable!("written frame by frame"),
        }
    }

    /// Reads frames from the start of `path`, checking each CRC if there
    /// is one; calls `each` with the value and the position after its
    /// frame (after its batch, for `Batches`).
    fn read_frames(self, path: &Path, mut each: impl FnMut(&[u8], u64) -> Res<()>) -> Res<()> {
        let mut reader = BufReader::new(File::open(path)?);
        let mut header = [0u8; 36];
        let header = match self {
            Frames::Batches => &mut header[..BATCH_HEADER_LEN],
            _ => &mut header[..self.header_len()],
        };
        let mut body = Vec::new();
        let mut position = 0u64;
        loop {
            match reader.read_exact(header) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let len = u32::from_le_bytes(header[..4].try_into()?) as usize;
            let body_len = match self {
                Frames::Batches => len.checked_sub(BATCH_HEADER_LEN).ok_or("short batch")?,
                _ => len,
            };
            body.resize(body_len, 0);
            reader.read_exact(&mut body)?;
            let crc = match self {
                Frames::Bare => None,
                Frames::Crc => Some(crc32fast::hash(&body)),
                // The length stands in the CRC's place while it is computed.
                Frames::Sized(_) => Some(crc_of(&[&header[..4], &header[8..], &body])),
                Frames::Batches => Some(crc_of(&[&header[8..], &body])),
            };
            if crc.is_some_and(|crc| crc.to_le_bytes() != header[4..8]) {
                return Err(format!("crc mismatch at {position}").into());
            }
            position += (header.len() + body_len) as u64;
            if self != Frames::Batches {
                each(&body, position)?;
                continue;
            }
            let mut rest = &body[..];
            while let Some((len, after)) = rest.split_first_chunk::<2>() {
                let start = BATCHED_RECORD_HEADER_LEN - 2;
                let value = after
                    .get(start..start + u16::from_le_bytes(*len) as usize)
                    .ok_or("short record")?;
                each(value, position)?;
                rest = &after[start + value.len()..];
            }
        }
    }
}

/// The CRC of `pieces`, one after the other.
fn crc_of(pieces: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for piece in pieces {
        hasher.update(piece);
    }
    hasher.finalize()
}

fn verify(frames: Frames, path: &Path, spec: &Spec, ordered: bool) -> Res<Checked> {
    crate::common::verify(spec, ordered, |verifier| {
        frames.read_frames(path, |value, _| {
            verifier.see(value);
            Ok(())
        })
    })
}

/// Appends messages `0..n`, one `write_frame` each (or one write per batch).
fn append(frames: Frames, path: &Path, spec: &Spec, values: &Values, batched: bool) -> Res<Duration> {
    let file = File::create(path)?;
    let started = Instant::now();
    if batched {
        let mut file = file;
        let mut out = Vec::with_capacity(BATCH * (spec.size + frames.header_len()));
        values.each_batch(spec.n, |values| {
            out.clear();
            if let Frames::Bare | Frames::Crc = frames {
                for value in values.chunks_exact(spec.size) {
                    frames.write_frame(&mut out, value)?;
                }
            } else {
                frames.push_batch(&mut out, values, spec.size);
            }
            Ok(file.write_all(&out)?)
        })?;
    } else {
        let mut out = BufWriter::new(file);
        values.each(spec.n, |_, value| Ok(frames.write_frame(&mut out, value)?))?;
        out.flush()?;
    }
    Ok(started.elapsed())
}

fn durable(frames: Frames, path: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let file = File::create(path)?;
    // One writer shared by all threads: each frame is written and flushed
    // under the lock, then synced outside it (so syncs can overlap).
    let writer = Mutex::new(BufWriter::new(file.try_clone()?));
    let (elapsed, latencies) = run_threads(spec.threads, spec.per_thread(), |_, i| {
        let value = values.buffer(i);
        {
            let mut out = writer.lock().map_err(|_| "poisoned")?;
            frames.write_frame(&mut *out, &value)?;
            out.flush()?;
        }
        file.sync_data()?;
        Ok(())
    })?;
    let checked = verify(frames, path, spec, spec.threads == 1)?;
    Ok(Outcome::with_latencies(elapsed, latencies, checked))
}

/// Durable appends in ideal rounds: each producer writes its frame, the
/// last of the round to arrive syncs for all of them, and the others sleep
/// until that sync is done. Nothing waits for a timer and no lock is held
/// across the sync, so a round costs one sync of everything written plus
/// what the kernel takes to put the producers to sleep and wake them. It
/// needs every producer to make the same number of appends (the rounds
/// stay whole), as the durable cases do.
fn durable_in_rounds(path: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let file = File::create(path)?;
    let writer = Mutex::new(BufWriter::new(file.try_clone()?));
    let rounds = Rounds::new(spec.threads);
    let (elapsed, latencies) = run_threads(spec.threads, spec.per_thread(), |_, i| {
        let value = values.buffer(i);
        {
            let mut out = writer.lock().map_err(|_| "poisoned")?;
            Frames::Crc.write_frame(&mut *out, &value)?;
            out.flush()?;
        }
        rounds.finish(|| file.sync_data())
    })?;
    let checked = verify(Frames::Crc, path, spec, spec.threads == 1)?;
    let synced = rounds.lock();
    Ok(Outcome {
        extra: sync_extras(synced.done, synced.sync_total, synced.sync_max),
        ..Outcome::with_latencies(elapsed, latencies, checked)
    })
}

/// The rendezvous of [`durable_in_rounds`].
struct Rounds {
    producers: usize,
    state: Mutex<RoundState>,
    synced: Condvar,
}

#[derive(Default)]
struct RoundState {
    /// Producers that wrote in the current round.
    arrived: usize,
    /// Rounds whose sync is done.
    done: u64,
    /// A sync failed: every waiter gives up.
    failed: bool,
    /// Time spent in the syncs, and the longest.
    sync_total: Duration,
    sync_max: Duration,
}

impl Rounds {
    fn new(producers: usize) -> Self {
        Rounds {
            producers,
            state: Mutex::new(RoundState::default()),
            synced: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoundState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns once the round this producer wrote in is synced; the last
    /// producer to arrive runs `sync` (no other can arrive meanwhile: each
    /// has its append waiting in this round).
    fn finish(&self, sync: impl FnOnce() -> std::io::Result<()>) -> Res<()> {
        let mut state = self.lock();
        state.arrived += 1;
        if state.arrived == self.producers {
            state.arrived = 0;
            drop(state);
            let started = Instant::now();
            let synced = sync();
            let took = started.elapsed();
            let mut state = self.lock();
            state.done += 1;
            state.sync_total += took;
            state.sync_max = state.sync_max.max(took);
            state.failed |= synced.is_err();
            self.synced.notify_all();
            return Ok(synced?);
        }
        let round = state.done;
        while state.done == round && !state.failed {
            state = self
                .synced
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.failed {
            return Err("a round's sync failed".into());
        }
        Ok(())
    }
}

fn queue(frames: Frames, dir: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let path = dir.join("queue.frames");
    let started = Instant::now();
    let mut out = BufWriter::new(File::create(&path)?);
    values.each(spec.n, |_, value| Ok(frames.write_frame(&mut out, value)?))?;
    out.flush()?;
    drop(out);
    let enqueued = started.elapsed();
    let acks = ack_file(&dir.join("queue.ack"))?;
    let mut verifier = Verifier::new(spec.size);
    frames.read_frames(&path, |value, next| {
        verifier.see(value);
        acks.write_at(&next.to_le_bytes(), 0)?;
        Ok(())
    })?;
    Outcome::queued(started, enqueued, &verifier, spec.n)
}

/// Runs a case with frames of the given layout (`Sized` and `Batches`:
/// the batched append only).
pub fn run(spec: &Spec, dir: &Path, frames: Frames) -> Res<Option<Outcome>> {
    let batches_only = !matches!(frames, Frames::Bare | Frames::Crc);
    if batches_only && spec.workload != Workload::AppendBatch100 {
        return Ok(None);
    }
    let values = Values::new(spec.size);
    let path = dir.join("log.frames");
    let outcome = match spec.workload {
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 | Workload::Read100 => {
            append_or_read(spec, |batched| append(frames, &path, spec, &values, batched))?
                .verify(|| verify(frames, &path, spec, true))?
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => {
            durable(frames, &path, spec, &values)?
        }
        Workload::Queue => queue(frames, dir, spec, &values)?,
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}

/// Runs a durable case in ideal rounds (`naive-rounds`; the durable cases
/// only).
pub fn run_in_rounds(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    match spec.workload {
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => {
            Ok(Some(durable_in_rounds(&dir.join("log.frames"), spec, &values)?))
        }
        _ => Ok(None),
    }
}
