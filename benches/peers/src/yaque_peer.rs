//! yaque 0.6: `Sender::try_send` per message (`try_send_batch` for batches),
//! reads with `QueueIter`, the queue with `Receiver::try_recv` and a commit
//! per message (yaque saves the receiver position every 250 messages or
//! 350 ms by default). yaque has no fsync call, so no durable cases.

use std::path::Path;
use std::time::{Duration, Instant};

use yaque::queue::QueueIter;
use yaque::{Receiver, Sender};

use crate::common::{Checked, Outcome, Res, Spec, Values, Verifier, Workload, append_or_read};

fn verify(dir: &Path, spec: &Spec) -> Res<Checked> {
    crate::common::verify(spec, true, |verifier| {
        for value in QueueIter::open(dir)? {
            verifier.see(&value?);
        }
        Ok(())
    })
}

fn append(dir: &Path, spec: &Spec, values: &Values, batched: bool) -> Res<Duration> {
    let mut sender = Sender::open(dir)?;
    let started = Instant::now();
    if batched {
        values.each_batch(spec.n, |slab| {
            sender
                .try_send_batch(slab.chunks_exact(spec.size))
                .map_err(|e| e.unwrap_io())?;
            Ok(())
        })?;
    } else {
        values.each(spec.n, |_, value| {
            sender.try_send(value).map_err(|e| e.unwrap_io())?;
            Ok(())
        })?;
    }
    Ok(started.elapsed())
}

fn queue(dir: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let started = Instant::now();
    append(dir, spec, values, false)?;
    let enqueued = started.elapsed();
    let mut receiver = Receiver::open(dir)?;
    let mut verifier = Verifier::new(spec.size);
    while verifier.count() < spec.n {
        let guard = receiver
            .try_recv()
            .map_err(|e| format!("try_recv after {}: {e:?}", verifier.count()))?;
        verifier.see(&guard);
        guard.commit()?;
    }
    Outcome::queued(started, enqueued, &verifier, spec.n)
}

pub fn run(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    let outcome = match spec.workload {
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 | Workload::Read100 => {
            append_or_read(spec, |batched| append(dir, spec, &values, batched))?
                .verify(|| verify(dir, spec))?
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => return Ok(None),
        Workload::Queue => queue(dir, spec, &values)?,
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}
