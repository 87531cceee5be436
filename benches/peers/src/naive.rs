//! The naive baseline: length-prefixed frames `[len u32][crc32 u32][value]`
//! through a `BufWriter`, `File::sync_data` for the durable cases, and for
//! the queue an ack file holding the next unacked position.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{
    BATCH, Checked, Outcome, Res, Spec, Values, Verifier, Workload, ack_file, append_or_read, run_threads,
};

const HEADER: usize = 8;

fn frame_header(value: &[u8]) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&(value.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc32fast::hash(value).to_le_bytes());
    header
}

fn write_frame(out: &mut impl Write, value: &[u8]) -> std::io::Result<()> {
    out.write_all(&frame_header(value))?;
    out.write_all(value)
}

/// Reads frames from the start of `path`, checking each CRC; calls `each`
/// with the value and the position after its frame.
fn read_frames(path: &Path, mut each: impl FnMut(&[u8], u64) -> Res<()>) -> Res<()> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut header = [0u8; HEADER];
    let mut value = Vec::new();
    let mut position = 0u64;
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(header[..4].try_into()?) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into()?);
        value.resize(len, 0);
        reader.read_exact(&mut value)?;
        if crc32fast::hash(&value) != crc {
            return Err(format!("crc mismatch at {position}").into());
        }
        position += (HEADER + len) as u64;
        each(&value, position)?;
    }
}

fn verify(path: &Path, spec: &Spec, ordered: bool) -> Res<Checked> {
    crate::common::verify(spec, ordered, |verifier| {
        read_frames(path, |value, _| {
            verifier.see(value);
            Ok(())
        })
    })
}

/// Appends messages `0..n`, one `write_frame` each (or one write per batch).
fn append(path: &Path, spec: &Spec, values: &Values, batched: bool) -> Res<Duration> {
    let file = File::create(path)?;
    let started = Instant::now();
    if batched {
        let mut file = file;
        let mut frames = Vec::with_capacity(BATCH * (spec.size + HEADER));
        values.each_batch(spec.n, |slab| {
            frames.clear();
            for value in slab.chunks_exact(spec.size) {
                write_frame(&mut frames, value)?;
            }
            Ok(file.write_all(&frames)?)
        })?;
    } else {
        let mut out = BufWriter::new(file);
        values.each(spec.n, |_, value| Ok(write_frame(&mut out, value)?))?;
        out.flush()?;
    }
    Ok(started.elapsed())
}

fn durable(path: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let file = File::create(path)?;
    // One writer shared by all threads: each frame is written and flushed
    // under the lock, then synced outside it (so syncs can overlap).
    let writer = Mutex::new(BufWriter::new(file.try_clone()?));
    let (elapsed, latencies) = run_threads(spec.threads, spec.per_thread(), |_, i| {
        let value = values.buffer(i);
        {
            let mut out = writer.lock().map_err(|_| "poisoned")?;
            write_frame(&mut *out, &value)?;
            out.flush()?;
        }
        file.sync_data()?;
        Ok(())
    })?;
    let checked = verify(path, spec, spec.threads == 1)?;
    Ok(Outcome::with_latencies(elapsed, latencies, checked))
}

fn queue(dir: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let path = dir.join("queue.frames");
    let started = Instant::now();
    let mut out = BufWriter::new(File::create(&path)?);
    values.each(spec.n, |_, value| Ok(write_frame(&mut out, value)?))?;
    out.flush()?;
    drop(out);
    let enqueued = started.elapsed();
    let acks = ack_file(&dir.join("queue.ack"))?;
    let mut verifier = Verifier::new(spec.size);
    read_frames(&path, |value, next| {
        verifier.see(value);
        acks.write_at(&next.to_le_bytes(), 0)?;
        Ok(())
    })?;
    Outcome::queued(started, enqueued, &verifier, spec.n)
}

pub fn run(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    let path = dir.join("log.frames");
    let outcome = match spec.workload {
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 | Workload::Read100 => {
            append_or_read(spec, |batched| append(&path, spec, &values, batched))?
                .verify(|| verify(&path, spec, true))?
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => durable(&path, spec, &values)?,
        Workload::Queue => queue(dir, spec, &values)?,
        Workload::RequestReply => return Ok(None),
    };
    Ok(Some(outcome))
}
