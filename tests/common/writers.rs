//! Writers crashed mid-workload, as the power-loss tests run them: random
//! records and calls (single appends and batches) whose every field the
//! test chose, what each writer attempted and had acknowledged, and how a
//! log several writers wrote must read back after the crash.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::ops::Range;

use fastrand::Rng;
use logbus::storage::SimStorage;
use logbus::{Cursor, Log, LogView, Position, Record, StoredRecord};

/// What a record must read back as: every field the caller chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    key: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    value: Vec<u8>,
    timestamp: i64,
}

impl Expected {
    pub fn record(&self) -> Record<'_> {
        let record = Record::new(&self.value).key(&self.key).timestamp(self.timestamp);
        self.headers.iter().fold(record, |record, (name, value)| {
            record.header(name.as_str(), value)
        })
    }

    pub fn of(stored: &StoredRecord) -> Expected {
        Expected {
            key: stored.key().to_vec(),
            headers: stored
                .headers()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            value: stored.value().to_vec(),
            timestamp: stored.timestamp(),
        }
    }

    pub fn encoded_len(&self) -> u64 {
        self.record().encoded_len().expect("test records are small") as u64
    }

    pub fn random(rng: &mut Rng, id: Option<String>) -> Expected {
        let value_len = if rng.u8(..5) == 0 { 0 } else { rng.usize(1..120) };
        let key_len = if rng.bool() { 0 } else { rng.usize(1..16) };
        let mut headers: Vec<(String, Vec<u8>)> =
            id.map(|id| ("id".into(), id.into_bytes())).into_iter().collect();
        for _ in 0..rng.usize(0..3) {
            let name = ["trace", "h", "", "content-type"][rng.usize(..4)];
            let len = rng.usize(0..12);
            headers.push((name.into(), random_bytes(rng, len)));
        }
        Expected {
            key: random_bytes(rng, key_len),
            headers,
            value: random_bytes(rng, value_len),
            timestamp: rng.i64(0..4_000_000_000_000),
        }
    }
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.u8(..)).collect()
}

/// One call of the workload.
#[derive(Debug, Clone)]
pub enum Op {
    Append(Expected),
    Batch(Vec<Expected>),
}

impl Op {
    pub fn records(&self) -> &[Expected] {
        match self {
            Op::Append(record) => std::slice::from_ref(record),
            Op::Batch(records) => records,
        }
    }
}

/// Random ops whose batches fit in `room` bytes. With `thread`, every record
/// carries an `id` header `thread:index:position-in-batch`.
pub fn random_ops(rng: &mut Rng, count: usize, room: u64, thread: Option<usize>) -> Vec<Op> {
    let mut next_index = 0usize;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let batch = rng.u8(..3) == 0;
        let wanted = if batch { rng.usize(0..=5) } else { 1 };
        let mut records: Vec<Expected> = Vec::new();
        let mut bytes = 0;
        for position in 0..wanted {
            let id = thread.map(|t| format!("{t}:{next_index}:{position}"));
            let record = Expected::random(rng, id);
            if bytes + record.encoded_len() > room {
                break;
            }
            bytes += record.encoded_len();
            next_index += 1;
            records.push(record);
        }
        match (batch, records.pop()) {
            (false, Some(record)) => ops.push(Op::Append(record)),
            (_, last) => {
                records.extend(last);
                ops.push(Op::Batch(records));
            }
        }
    }
    ops
}

fn id_of(header: Option<&[u8]>) -> Option<(usize, usize, usize)> {
    let text = std::str::from_utf8(header?).ok()?;
    let mut parts = text.split(':').map(|p| p.parse::<usize>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// What one of several writers attempted, in call order, and the offsets
/// of the records acknowledged (a prefix of them).
#[derive(Debug, Default)]
pub struct ThreadAttempt {
    pub attempted: Vec<Expected>,
    pub offsets: Vec<u64>,
}

impl ThreadAttempt {
    /// Notes a call of `op` and what it returned; whether the writer goes
    /// on. A call may only fail because `sim` crashed, and a crashed
    /// process acknowledges nothing more: the writer stops.
    pub fn note(&mut self, op: &Op, returned: logbus::Result<Range<u64>>, sim: &SimStorage) -> bool {
        self.attempted.extend_from_slice(op.records());
        match returned {
            Ok(range) => {
                assert_eq!(range.end - range.start, op.records().len() as u64);
                self.offsets.extend(range);
                true
            }
            Err(e) => {
                assert!(sim.is_halted(), "append failed without a crash: {e}");
                false
            }
        }
    }
}

/// What [`verify_threads`] reads: a log, or a topic's view of one.
pub trait Readable {
    fn start_offset(&self) -> u64;
    fn end_offset(&self) -> u64;
    fn read(&self, offset: u64) -> logbus::Result<Option<StoredRecord>>;
    fn cursor(&self, position: Position) -> logbus::Result<Cursor>;
}

impl Readable for Log {
    fn start_offset(&self) -> u64 {
        Log::start_offset(self)
    }

    fn end_offset(&self) -> u64 {
        Log::end_offset(self)
    }

    fn read(&self, offset: u64) -> logbus::Result<Option<StoredRecord>> {
        Log::read(self, offset)
    }

    fn cursor(&self, position: Position) -> logbus::Result<Cursor> {
        Log::cursor(self, position)
    }
}

impl Readable for LogView<'_> {
    fn start_offset(&self) -> u64 {
        LogView::start_offset(self)
    }

    fn end_offset(&self) -> u64 {
        LogView::end_offset(self)
    }

    fn read(&self, offset: u64) -> logbus::Result<Option<StoredRecord>> {
        LogView::read(self, offset)
    }

    fn cursor(&self, position: Position) -> logbus::Result<Cursor> {
        LogView::cursor(self, position)
    }
}

/// Checks a log written by several threads: each thread's records appear
/// in its call order as a gap-free prefix of what it attempted, acknowledged
/// ones at their acknowledged offsets, batches unsplit. Returns the log's
/// records in offset order.
pub fn verify_threads(log: &impl Readable, threads: &[ThreadAttempt], context: &str) -> Vec<Expected> {
    assert_eq!(log.start_offset(), 0, "{context}");
    let end = log.end_offset();
    let mut next_index = vec![0usize; threads.len()];
    let mut previous: Option<(usize, usize, usize)> = None;
    let mut cursor = log.cursor(Position::Earliest).unwrap();
    let mut present = Vec::new();
    for offset in 0..end {
        let read = log.read(offset).unwrap();
        let read = read.unwrap_or_else(|| panic!("{context}: offset {offset} below end {end} is missing"));
        assert_eq!(
            cursor.next().unwrap().as_ref(),
            Some(&read),
            "{context}: cursor and read disagree"
        );
        let (thread, index, position) = id_of(read.header("id"))
            .unwrap_or_else(|| panic!("{context}: record {offset} was never written"));
        let attempt = &threads[thread];
        assert_eq!(
            index, next_index[thread],
            "{context}: thread {thread} reordered or gapped at {offset}"
        );
        next_index[thread] += 1;
        assert_eq!(
            Expected::of(&read),
            attempt.attempted[index],
            "{context}: offset {offset} differs"
        );
        if let Some(acknowledged) = attempt.offsets.get(index) {
            assert_eq!(*acknowledged, offset, "{context}: acknowledged record moved");
        }
        if position > 0 {
            assert_eq!(
                previous,
                Some((thread, index - 1, position - 1)),
                "{context}: batch split at {offset}"
            );
        }
        previous = Some((thread, index, position));
        present.push(attempt.attempted[index].clone());
    }
    assert!(cursor.next().unwrap().is_none(), "{context}");
    for (thread, attempt) in threads.iter().enumerate() {
        let acknowledged = attempt.offsets.len();
        assert!(
            next_index[thread] >= acknowledged,
            "{context}: thread {thread} lost {} acknowledged records",
            acknowledged - next_index[thread]
        );
    }
    present
}
