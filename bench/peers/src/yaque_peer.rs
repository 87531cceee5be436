//! yaque 0.6: `Sender::try_send` per message (`try_send_batch` for batches),
//! reads with `QueueIter`, the queue with `Receiver::try_recv` and a commit
//! per message (yaque saves the receiver position every 250 messages or
//! 350 ms by default). yaque has no fsync call, so no durable cases.

use std::path::Path;
use std::time::{Duration, Instant};

use yaque::queue::QueueIter;
use yaque::{Receiver, Sender};

use crate::common::{BATCH, Checked, Outcome, Res, Spec, Values, Verifier, Workload};

fn verify(dir: &Path, spec: &Spec) -> Res<Checked> {
    let mut verifier = Verifier::new(spec.size);
    for value in QueueIter::open(dir)? {
        verifier.see(&value?);
    }
    verifier.check(spec.n, true)
}

fn append(dir: &Path, spec: &Spec, values: &Values, batched: bool) -> Res<Duration> {
    let mut sender = Sender::open(dir)?;
    let started = Instant::now();
    if batched {
        let mut slab = vec![0u8; BATCH * spec.size];
        for first in (0..spec.n).step_by(BATCH) {
            let count = BATCH.min((spec.n - first) as usize);
            let slab = &mut slab[..count * spec.size];
            values.fill_batch(first, slab);
            sender
                .try_send_batch(slab.chunks_exact(spec.size))
                .map_err(|e| e.unwrap_io())?;
        }
    } else {
        let mut value = vec![0u8; spec.size];
        for i in 0..spec.n {
            values.fill(i, &mut value);
            sender.try_send(&value).map_err(|e| e.unwrap_io())?;
        }
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
    let elapsed = started.elapsed();
    let checked = verifier.check(spec.n, true)?;
    Ok(Outcome {
        phases: vec![("enqueue", enqueued), ("dequeue_ack", elapsed - enqueued)],
        ..Outcome::new(elapsed, checked)
    })
}

pub fn run(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    let outcome = match spec.workload {
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 => {
            let elapsed = append(dir, spec, &values, spec.workload == Workload::AppendBatch100)?;
            Outcome::new(elapsed, verify(dir, spec)?)
        }
        Workload::Read100 => {
            append(dir, spec, &values, true)?;
            let started = Instant::now();
            let checked = verify(dir, spec)?;
            Outcome::new(started.elapsed(), checked)
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => return Ok(None),
        Workload::Queue => queue(dir, spec, &values)?,
        Workload::RequestReply => return Ok(None),
    };
    Ok(Some(outcome))
}
