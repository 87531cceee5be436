//! redb: a table `u64 -> &[u8]`.
//!
//! Without fsync the append cases commit transactions of 1000 rows with
//! `Durability::None` (redb's commit without a sync; note that such commits
//! live only in memory until a durable one follows, so they do not survive
//! a process crash). The durable cases commit one `Durability::Immediate`
//! transaction per message; redb serializes write transactions. The queue
//! inserts one message per transaction and dequeues+acks with `pop_first`,
//! one transaction each, both `Durability::None`.

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::common::{
    BATCH, Checked, Outcome, Res, Spec, Values, Verifier, Workload, append_or_read, run_threads,
};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

fn open(dir: &Path) -> Res<Database> {
    let db = Database::create(dir.join("log.redb"))?;
    let transaction = db.begin_write()?;
    transaction.open_table(LOG)?;
    transaction.commit()?;
    Ok(db)
}

fn verify(db: &Database, spec: &Spec) -> Res<Checked> {
    crate::common::verify(spec, true, |verifier| {
        let transaction = db.begin_read()?;
        let table = transaction.open_table(LOG)?;
        for entry in table.iter()? {
            let (_, value) = entry?;
            verifier.see(value.value());
        }
        Ok(())
    })
}

fn write(db: &Database, durability: Durability, first: u64, end: u64, values: &Values) -> Res<()> {
    let mut transaction = db.begin_write()?;
    transaction.set_durability(durability)?;
    {
        let mut table = transaction.open_table(LOG)?;
        let mut value = vec![0u8; values.size()];
        for i in first..end {
            values.fill(i, &mut value);
            table.insert(i, &value[..])?;
        }
    }
    transaction.commit()?;
    Ok(())
}

fn append(db: &Database, spec: &Spec, values: &Values) -> Res<Duration> {
    let started = Instant::now();
    for first in (0..spec.n).step_by(BATCH) {
        write(
            db,
            Durability::None,
            first,
            spec.n.min(first + BATCH as u64),
            values,
        )?;
    }
    Ok(started.elapsed())
}

fn queue(db: &Database, spec: &Spec, values: &Values) -> Res<Outcome> {
    let started = Instant::now();
    for i in 0..spec.n {
        write(db, Durability::None, i, i + 1, values)?;
    }
    let enqueued = started.elapsed();
    let mut verifier = Verifier::new(spec.size);
    loop {
        let mut transaction = db.begin_write()?;
        transaction.set_durability(Durability::None)?;
        let popped = {
            let mut table = transaction.open_table(LOG)?;
            match table.pop_first()? {
                Some((_, value)) => {
                    verifier.see(value.value());
                    true
                }
                None => false,
            }
        };
        transaction.commit()?;
        if !popped {
            break;
        }
    }
    Outcome::queued(started, enqueued, &verifier, spec.n)
}

pub fn run(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    let db = open(dir)?;
    let outcome = match spec.workload {
        // One transaction per BATCH rows, batched or not (see above).
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 | Workload::Read100 => {
            append_or_read(spec, |_| append(&db, spec, &values))?.verify(|| verify(&db, spec))?
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => {
            let (elapsed, latencies) = run_threads(spec.threads, spec.per_thread(), |_, i| {
                write(&db, Durability::Immediate, i, i + 1, &values)
            })?;
            Outcome::with_latencies(elapsed, latencies, verify(&db, spec)?)
        }
        Workload::Queue => queue(&db, spec, &values)?,
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}
