//! The naive baselines: length-prefixed frames through a `BufWriter`,
//! `File::sync_data` for the durable cases, and for the queue an ack file
//! holding the next unacked position. `naive-crc` frames are
//! `[len u32][crc32 u32][value]` with the CRC checked on read (the
//! baseline of every ratio); `naive` frames are `[len u32][value]`, nothing
//! checked (what the page cache and a `BufWriter` cost at the least).
//! `naive-crc36` frames have logbus's size, a 36-byte header, and their CRC
//! covers the same bytes as logbus's; they run the batched append
//! only, to tell the cost of logbus's frame layout from that of its code
//! (docs/PERFORMANCE.md, "The split, and the two peers that make it").

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{
    BATCH, Checked, Outcome, Res, Spec, Values, Verifier, Workload, ack_file, append_or_read, run_threads,
};

/// One of the three frame layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    /// `[len u32][value]`, nothing checked (`naive`).
    Bare,
    /// `[len u32][crc32 u32][value]`, the CRC of the value (`naive-crc`).
    Crc,
    /// `[len u32][crc32 u32][28 zero bytes][value]`, the CRC of all but
    /// itself, fed in two pieces: the length, then the rest (`naive-crc36`;
    /// built in place, so batches only).
    LogbusSized,
}

impl Frames {
    fn header_len(self) -> usize {
        match self {
            Frames::Bare => 4,
            Frames::Crc => 8,
            Frames::LogbusSized => 36,
        }
    }

    fn write_frame(self, out: &mut impl Write, value: &[u8]) -> std::io::Result<()> {
        debug_assert!(self != Frames::LogbusSized, "built in place only");
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(value.len() as u32).to_le_bytes());
        if self == Frames::Crc {
            header[4..].copy_from_slice(&crc32fast::hash(value).to_le_bytes());
        }
        out.write_all(&header[..self.header_len()])?;
        out.write_all(value)
    }

    /// Appends the frame of `value` to `out` (`LogbusSized` only): the
    /// header, the value, then the CRC of the bytes in place, as logbus
    /// encodes a batch into one buffer (`format::frame`).
    fn push_frame(self, out: &mut Vec<u8>, value: &[u8]) {
        debug_assert!(self == Frames::LogbusSized);
        let start = out.len();
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.resize(start + self.header_len(), 0);
        out.extend_from_slice(value);
        let crc = logbus_sized_crc(&out[start..start + 4], &out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads frames from the start of `path`, checking each CRC if there
    /// is one; calls `each` with the value and the position after its
    /// frame.
    fn read_frames(self, path: &Path, mut each: impl FnMut(&[u8], u64) -> Res<()>) -> Res<()> {
        let mut reader = BufReader::new(File::open(path)?);
        let mut header = [0u8; 36];
        let header = &mut header[..self.header_len()];
        let mut value = Vec::new();
        let mut position = 0u64;
        loop {
            match reader.read_exact(header) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let len = u32::from_le_bytes(header[..4].try_into()?) as usize;
            value.resize(len, 0);
            reader.read_exact(&mut value)?;
            let crc = match self {
                Frames::Bare => None,
                Frames::Crc => Some(crc32fast::hash(&value)),
                Frames::LogbusSized => Some(logbus_sized_crc(&header[..4], &[&header[8..], &value].concat())),
            };
            if crc.is_some_and(|crc| crc.to_le_bytes() != header[4..8]) {
                return Err(format!("crc mismatch at {position}").into());
            }
            position += (header.len() + len) as u64;
            each(&value, position)?;
        }
    }
}

/// The CRC of a `LogbusSized` frame: its length field, then everything
/// after its CRC field.
fn logbus_sized_crc(len: &[u8], rest: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(rest);
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
            for value in values.chunks_exact(spec.size) {
                if frames == Frames::LogbusSized {
                    frames.push_frame(&mut out, value);
                } else {
                    frames.write_frame(&mut out, value)?;
                }
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

/// Runs a case with frames of the given layout (`LogbusSized`: the
/// batched append only).
pub fn run(spec: &Spec, dir: &Path, frames: Frames) -> Res<Option<Outcome>> {
    if frames == Frames::LogbusSized && spec.workload != Workload::AppendBatch100 {
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
