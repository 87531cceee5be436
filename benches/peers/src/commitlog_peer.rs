//! commitlog 0.2: `append_msg` per message (a `MessageBuf` per batch in the
//! batched case), reads through `CommitLog::read` in 64 KiB slices.
//!
//! commitlog never syncs its segment data (`flush()` only flushes the file
//! handle and the index map), so the durable cases call `sync_data` on the
//! active segment file after each append, outside the log's mutex. The
//! queue's ack is a reader offset written to an ack file after each message.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};

use crate::common::{
    Checked, Outcome, Res, Spec, Values, Verifier, Workload, ack_file, append_or_read, run_threads,
};

fn open(dir: &Path) -> Res<CommitLog> {
    let mut options = LogOptions::new(dir);
    // One segment and one index for every case, so no roll interrupts a run
    // and the durable cases know which file to sync.
    options.segment_max_bytes(1 << 30).index_max_items(4_000_000);
    Ok(CommitLog::new(options)?)
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join(format!("{:020}.log", 0))
}

/// Reads every message from offset 0, calling `each` with the value and its
/// offset.
fn read_all(log: &CommitLog, mut each: impl FnMut(&[u8], u64) -> Res<()>) -> Res<()> {
    let mut offset = 0;
    while offset < log.next_offset() {
        let slice = log.read(offset, ReadLimit::max_bytes(64 << 10))?;
        if slice.is_empty() {
            return Err(format!("empty read at offset {offset}").into());
        }
        for message in slice.iter() {
            each(message.payload(), message.offset())?;
            offset = message.offset() + 1;
        }
    }
    Ok(())
}

fn verify(log: &CommitLog, spec: &Spec, ordered: bool) -> Res<Checked> {
    crate::common::verify(spec, ordered, |verifier| {
        read_all(log, |value, _| {
            verifier.see(value);
            Ok(())
        })
    })
}

fn append(log: &mut CommitLog, spec: &Spec, values: &Values, batched: bool) -> Res<Duration> {
    let started = Instant::now();
    if batched {
        values.each_batch(spec.n, |slab| {
            let mut messages = MessageBuf::default();
            for value in slab.chunks_exact(spec.size) {
                messages.push(value).map_err(|e| format!("{e:?}"))?;
            }
            log.append(&mut messages)?;
            Ok(())
        })?;
    } else {
        values.each(spec.n, |_, value| {
            log.append_msg(value)?;
            Ok(())
        })?;
    }
    Ok(started.elapsed())
}

fn durable(dir: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let log = Mutex::new(open(dir)?);
    let segment = File::open(first_segment(dir))?;
    let (elapsed, latencies) = run_threads(spec.threads, spec.per_thread(), |_, i| {
        let value = values.buffer(i);
        log.lock().map_err(|_| "poisoned")?.append_msg(&value)?;
        segment.sync_data()?;
        Ok(())
    })?;
    let log = log.into_inner().map_err(|_| "poisoned")?;
    let checked = verify(&log, spec, spec.threads == 1)?;
    Ok(Outcome::with_latencies(elapsed, latencies, checked))
}

fn queue(dir: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let mut log = open(&dir.join("log"))?;
    let acks = ack_file(&dir.join("reader.ack"))?;
    let started = Instant::now();
    append(&mut log, spec, values, false)?;
    let enqueued = started.elapsed();
    let mut verifier = Verifier::new(spec.size);
    read_all(&log, |value, offset| {
        verifier.see(value);
        acks.write_at(&(offset + 1).to_le_bytes(), 0)?;
        Ok(())
    })?;
    Outcome::queued(started, enqueued, &verifier, spec.n)
}

pub fn run(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    let outcome = match spec.workload {
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 | Workload::Read100 => {
            let mut log = open(dir)?;
            append_or_read(spec, |batched| append(&mut log, spec, &values, batched))?
                .verify(|| verify(&log, spec, true))?
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => durable(dir, spec, &values)?,
        Workload::Queue => queue(dir, spec, &values)?,
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}
