//! fjall 3: one keyspace, keys are big-endian message indexes.
//!
//! Appends are `Keyspace::insert` per message (each writes its journal
//! entry to the OS), batches a `WriteBatch`; the durable cases follow each
//! insert with `Database::persist(PersistMode::SyncData)`. The queue
//! inserts, then iterates in key order and removes each key as the ack.

use std::path::Path;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::common::{
    BATCH, Checked, Outcome, Res, Spec, Values, Verifier, Workload, append_or_read, run_threads,
};

fn open(dir: &Path) -> Res<(Database, Keyspace)> {
    let db = Database::builder(dir).open()?;
    let keyspace = db.keyspace("log", KeyspaceCreateOptions::default)?;
    Ok((db, keyspace))
}

fn verify(keyspace: &Keyspace, spec: &Spec) -> Res<Checked> {
    crate::common::verify(spec, true, |verifier| {
        for guard in keyspace.iter() {
            let (_, value) = guard.into_inner()?;
            verifier.see(&value);
        }
        Ok(())
    })
}

fn append(db: &Database, keyspace: &Keyspace, spec: &Spec, values: &Values, batched: bool) -> Res<Duration> {
    let started = Instant::now();
    if batched {
        let mut value = vec![0u8; spec.size];
        for first in (0..spec.n).step_by(BATCH) {
            let mut batch = db.batch();
            for i in first..spec.n.min(first + BATCH as u64) {
                values.fill(i, &mut value);
                batch.insert(keyspace, &i.to_be_bytes()[..], &value[..]);
            }
            batch.commit()?;
        }
    } else {
        values.each(spec.n, |i, value| {
            Ok(keyspace.insert(&i.to_be_bytes()[..], value)?)
        })?;
    }
    Ok(started.elapsed())
}

fn queue(db: &Database, keyspace: &Keyspace, spec: &Spec, values: &Values) -> Res<Outcome> {
    let started = Instant::now();
    append(db, keyspace, spec, values, false)?;
    let enqueued = started.elapsed();
    let mut verifier = Verifier::new(spec.size);
    for guard in keyspace.iter() {
        let (key, value) = guard.into_inner()?;
        verifier.see(&value);
        keyspace.remove(key)?;
    }
    let outcome = Outcome::queued(started, enqueued, &verifier, spec.n)?;
    if keyspace.first_key_value().is_some() {
        return Err("keys left after acking everything".into());
    }
    Ok(outcome)
}

pub fn run(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    let (db, keyspace) = open(dir)?;
    let outcome = match spec.workload {
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 | Workload::Read100 => {
            append_or_read(spec, |batched| append(&db, &keyspace, spec, &values, batched))?
                .verify(|| verify(&keyspace, spec))?
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => {
            let (elapsed, latencies) = run_threads(spec.threads, spec.per_thread(), |_, i| {
                keyspace.insert(&i.to_be_bytes()[..], &values.buffer(i)[..])?;
                db.persist(PersistMode::SyncData)?;
                Ok(())
            })?;
            Outcome::with_latencies(elapsed, latencies, verify(&keyspace, spec)?)
        }
        Workload::Queue => queue(&db, &keyspace, spec, &values)?,
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}
