//! SQLite (rusqlite, bundled) in WAL mode: a table `log(id INTEGER PRIMARY
//! KEY, v BLOB)`.
//!
//! Without fsync (`synchronous=OFF`, still safe against a process crash)
//! the append cases write in transactions of 1000 rows: a transaction is
//! SQLite's unit of writing, and one per row would measure commit overhead
//! instead. The durable cases use `synchronous=FULL` and one transaction
//! (autocommit insert) per message, each thread with its own connection.
//! The queue inserts one row per message and acks by deleting it.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::common::{
    BATCH, Checked, Outcome, Res, Spec, Values, Verifier, Workload, append_or_read, run_threads,
};

fn open(dir: &Path, synchronous: &str) -> Res<Connection> {
    let connection = Connection::open(dir.join("log.sqlite"))?;
    connection.busy_timeout(Duration::from_secs(30))?;
    connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    connection.execute_batch(&format!(
        "PRAGMA synchronous={synchronous};
         CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, v BLOB NOT NULL);"
    ))?;
    Ok(connection)
}

fn read_all(connection: &Connection, mut each: impl FnMut(&[u8])) -> Res<()> {
    let mut statement = connection.prepare("SELECT v FROM log ORDER BY id")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        each(row.get_ref(0)?.as_blob()?);
    }
    Ok(())
}

fn verify(connection: &Connection, spec: &Spec) -> Res<Checked> {
    crate::common::verify(spec, true, |verifier| {
        read_all(connection, |value| verifier.see(value))
    })
}

fn append(connection: &mut Connection, spec: &Spec, values: &Values) -> Res<Duration> {
    let started = Instant::now();
    let mut value = vec![0u8; spec.size];
    for first in (0..spec.n).step_by(BATCH) {
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached("INSERT INTO log (id, v) VALUES (?1, ?2)")?;
            for i in first..spec.n.min(first + BATCH as u64) {
                values.fill(i, &mut value);
                insert.execute(params![i as i64, &value[..]])?;
            }
        }
        transaction.commit()?;
    }
    Ok(started.elapsed())
}

fn durable(dir: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    open(dir, "FULL")?;
    let connections: Vec<std::sync::Mutex<Connection>> = (0..spec.threads)
        .map(|_| open(dir, "FULL").map(std::sync::Mutex::new))
        .collect::<Res<_>>()?;
    let (elapsed, latencies) = run_threads(spec.threads, spec.per_thread(), |t, i| {
        let value = values.buffer(i);
        let connection = connections[t].lock().map_err(|_| "poisoned")?;
        let mut insert = connection.prepare_cached("INSERT INTO log (id, v) VALUES (?1, ?2)")?;
        insert.execute(params![i as i64, &value[..]])?;
        Ok(())
    })?;
    let checked = verify(&open(dir, "FULL")?, spec)?;
    Ok(Outcome::with_latencies(elapsed, latencies, checked))
}

fn queue(dir: &Path, spec: &Spec, values: &Values) -> Res<Outcome> {
    let connection = open(dir, "OFF")?;
    let started = Instant::now();
    {
        let mut insert = connection.prepare_cached("INSERT INTO log (id, v) VALUES (?1, ?2)")?;
        values.each(spec.n, |i, value| {
            insert.execute(params![i as i64, value])?;
            Ok(())
        })?;
    }
    let enqueued = started.elapsed();
    let mut verifier = Verifier::new(spec.size);
    let mut head = connection.prepare_cached("SELECT id, v FROM log ORDER BY id LIMIT 1")?;
    let mut ack = connection.prepare_cached("DELETE FROM log WHERE id = ?1")?;
    loop {
        let mut rows = head.query([])?;
        let Some(row) = rows.next()? else { break };
        let id: i64 = row.get(0)?;
        verifier.see(row.get_ref(1)?.as_blob()?);
        drop(rows);
        ack.execute([id])?;
    }
    Outcome::queued(started, enqueued, &verifier, spec.n)
}

pub fn run(spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    let values = Values::new(spec.size);
    let outcome = match spec.workload {
        // One transaction per BATCH rows, batched or not (see above).
        Workload::Append100 | Workload::Append1K | Workload::AppendBatch100 | Workload::Read100 => {
            let mut connection = open(dir, "OFF")?;
            append_or_read(spec, |_| append(&mut connection, spec, &values))?
                .verify(|| verify(&connection, spec))?
        }
        Workload::Durable1 | Workload::Durable4 | Workload::Durable16 => durable(dir, spec, &values)?,
        Workload::Queue => queue(dir, spec, &values)?,
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}
