//! The `log_ops` target: a sequence of log operations with process crashes
//! and power losses on a [`SimStorage`], checked step by step against a
//! plain model of the log.
//!
//! The contract checked: offsets are dense and reads return exactly what
//! was appended; under `Durability::Always` every acknowledged record
//! survives a process crash (`Kill`) and a power loss at any I/O step
//! (`Halt` then `PowerLoss`); under `Durability::Os` a process crash loses
//! nothing acknowledged and a power loss keeps at least what was flushed or
//! closed. Records whose append failed in the crash may survive, in order,
//! after the acknowledged ones; nothing else may appear. While the storage
//! is halted every operation may fail, but whatever succeeds must still be
//! right.

use std::sync::Arc;

use super::Input;
use crate::io::{Fault, SimStorage};
use crate::{Cursor, Durability, Error, Log, LogOptions, Position, Record, StoredRecord};

const DIR: &str = "/sim/log";
/// Most operations one input runs.
const MAX_OPS: usize = 96;
const FIRST_TIMESTAMP: i64 = 1_700_000_000_000;
const SEGMENT_HEADER_BYTES: u64 = 32;
const HEADER_NAMES: [&str; 3] = ["trace", "", "content-type"];
const INDEX_INTERVALS: [u64; 8] = [1, 16, 64, 128, 256, 512, 1024, 4096];

/// A record to append, in five bytes; the record derived from it is at
/// most 155 bytes encoded, so it fits the smallest segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSpec {
    /// Value length, modulo 64.
    pub value_len: u8,
    /// Key length, modulo 9.
    pub key_len: u8,
    /// Header count (modulo 3), names and value length.
    pub headers: u8,
    /// Seed of the bytes.
    pub fill: u8,
    /// Timestamp change from the previous record, times 3 (may go back).
    pub ts_step: i8,
}

/// One operation of the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `append` one record.
    Append(RecordSpec),
    /// `append_batch` (up to 7 records; batches larger than a segment must
    /// be refused).
    Batch(Vec<RecordSpec>),
    /// `read` an offset picked among the stored ones and a few past them.
    Read(u8),
    /// A fresh cursor: `from % 4` picks Earliest, Latest, Offset or
    /// Timestamp (`pick` chooses which), then up to `count % 16` records.
    Cursor {
        /// Start kind.
        from: u8,
        /// Offset or timestamp choice.
        pick: u8,
        /// Records to read.
        count: u8,
    },
    /// Up to `n % 16` records from one long-lived cursor.
    CursorNext(u8),
    /// `truncate_before` an offset picked like `Read`'s.
    TruncateBefore(u8),
    /// `flush`.
    Flush,
    /// `close`, then open again.
    CloseReopen,
    /// The process dies (`kill -9`): every written byte stays.
    Kill,
    /// Arms `Fault::HaltAfterWrites` (or `HaltAfterSyncs`): the process
    /// dies at that I/O step; later operations fail until a crash op.
    Halt {
        /// Count writes instead of syncs.
        writes: bool,
        /// Steps that still succeed, modulo 32.
        after: u8,
    },
    /// The process dies and the power fails (`SimStorage::power_loss`).
    PowerLoss(u8),
}

const TAG_APPEND: u8 = 0;
const TAG_BATCH: u8 = 1;
const TAG_READ: u8 = 2;
const TAG_CURSOR: u8 = 3;
const TAG_CURSOR_NEXT: u8 = 4;
const TAG_TRUNCATE: u8 = 5;
const TAG_FLUSH: u8 = 6;
const TAG_CLOSE_REOPEN: u8 = 7;
const TAG_KILL: u8 = 8;
const TAG_HALT: u8 = 9;
const TAG_POWER_LOSS: u8 = 10;
/// Tags 11..16 are appends too, so random bytes append often.
const TAG_SPACE: u8 = 16;

impl RecordSpec {
    fn parse(input: &mut Input<'_>) -> RecordSpec {
        RecordSpec {
            value_len: input.u8(),
            key_len: input.u8(),
            headers: input.u8(),
            fill: input.u8(),
            ts_step: input.u8() as i8,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.value_len,
            self.key_len,
            self.headers,
            self.fill,
            self.ts_step as u8,
        ]);
    }
}

impl Op {
    fn parse(input: &mut Input<'_>) -> Op {
        match input.u8() % TAG_SPACE {
            TAG_BATCH => Op::Batch((0..input.u8() % 8).map(|_| RecordSpec::parse(input)).collect()),
            TAG_READ => Op::Read(input.u8()),
            TAG_CURSOR => Op::Cursor {
                from: input.u8(),
                pick: input.u8(),
                count: input.u8(),
            },
            TAG_CURSOR_NEXT => Op::CursorNext(input.u8()),
            TAG_TRUNCATE => Op::TruncateBefore(input.u8()),
            TAG_FLUSH => Op::Flush,
            TAG_CLOSE_REOPEN => Op::CloseReopen,
            TAG_KILL => Op::Kill,
            TAG_HALT => {
                let byte = input.u8();
                Op::Halt {
                    writes: byte & 0x80 != 0,
                    after: byte & 0x1f,
                }
            }
            TAG_POWER_LOSS => Op::PowerLoss(input.u8()),
            _ => Op::Append(RecordSpec::parse(input)),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Append(spec) => {
                out.push(TAG_APPEND);
                spec.encode(out);
            }
            Op::Batch(specs) => {
                let specs = &specs[..specs.len().min(7)];
                out.extend_from_slice(&[TAG_BATCH, specs.len() as u8]);
                specs.iter().for_each(|spec| spec.encode(out));
            }
            Op::Read(pick) => out.extend_from_slice(&[TAG_READ, *pick]),
            Op::Cursor { from, pick, count } => out.extend_from_slice(&[TAG_CURSOR, *from, *pick, *count]),
            Op::CursorNext(n) => out.extend_from_slice(&[TAG_CURSOR_NEXT, *n]),
            Op::TruncateBefore(pick) => out.extend_from_slice(&[TAG_TRUNCATE, *pick]),
            Op::Flush => out.push(TAG_FLUSH),
            Op::CloseReopen => out.push(TAG_CLOSE_REOPEN),
            Op::Kill => out.push(TAG_KILL),
            Op::Halt { writes, after } => {
                out.extend_from_slice(&[TAG_HALT, u8::from(*writes) << 7 | (after & 0x1f)]);
            }
            Op::PowerLoss(seed) => out.extend_from_slice(&[TAG_POWER_LOSS, *seed]),
        }
    }
}

/// The input bytes for `config` and `ops`. `config`: bits 0-1 are
/// `Durability::Os` when 3 (`Always` otherwise), bits 2-4 set
/// `segment_bytes = 256 + 128 n`, bits 5-7 pick the index interval.
pub fn encode_ops(config: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![config];
    ops.iter().for_each(|op| op.encode(&mut out));
    out
}

/// Runs the operations `data` encodes (see [`encode_ops`]) against a log
/// and a model, then crashes it once more and checks what survived.
pub fn log_ops(data: &[u8]) {
    let mut input = Input::new(data);
    let mut harness = Harness::new(Shape::parse(input.u8()));
    for step in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = Op::parse(&mut input);
        harness.context = format!("step {step}: {op:?}");
        harness.apply(&op);
    }
    harness.context = "final power loss".into();
    harness.apply(&Op::PowerLoss(0));
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    durability: Durability,
    segment_bytes: u64,
    index_interval_bytes: u64,
}

impl Shape {
    fn parse(config: u8) -> Shape {
        Shape {
            durability: if config & 3 == 3 {
                Durability::Os
            } else {
                Durability::Always
            },
            segment_bytes: 256 + u64::from((config >> 2) & 7) * 128,
            index_interval_bytes: INDEX_INTERVALS[usize::from(config >> 5)],
        }
    }

    fn options(&self, sim: &SimStorage) -> LogOptions {
        LogOptions::default()
            .durability(self.durability)
            .segment_bytes(self.segment_bytes)
            .index_interval_bytes(self.index_interval_bytes)
            .storage(Arc::new(sim.clone()))
    }
}

/// What a record must read back as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    key: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    value: Vec<u8>,
    timestamp: i64,
}

impl Expected {
    fn new(spec: &RecordSpec, timestamp: i64) -> Expected {
        let header_len = usize::from(spec.headers >> 2) % 7;
        Expected {
            key: (0..spec.key_len % 9).map(|i| spec.fill ^ i).collect(),
            headers: (0..usize::from(spec.headers % 3))
                .map(|i| {
                    (
                        HEADER_NAMES[(usize::from(spec.headers) / 3 + i) % 3],
                        vec![spec.fill; header_len],
                    )
                })
                .collect(),
            value: (0..spec.value_len % 64)
                .map(|i| spec.fill.wrapping_add(i))
                .collect(),
            timestamp,
        }
    }

    fn record(&self) -> Record<'_> {
        let record = Record::new(&self.value).key(&self.key).timestamp(self.timestamp);
        self.headers
            .iter()
            .fold(record, |record, (name, value)| record.header(name, value))
    }

    fn matches(&self, stored: &StoredRecord) -> bool {
        stored.key() == self.key
            && stored.value() == self.value
            && stored.timestamp() == self.timestamp
            && stored
                .headers()
                .eq(self.headers.iter().map(|(n, v)| (*n, v.as_slice())))
    }
}

/// The log as it must be.
#[derive(Debug)]
struct Model {
    /// Acknowledged records, by offset from 0 (truncated ones included).
    records: Vec<Expected>,
    /// Records whose append failed in a crash: they may follow `records`.
    maybe: Vec<Expected>,
    /// The start offset last observed.
    start: u64,
    /// Records a power loss must keep under `Durability::Os`.
    durable_end: u64,
    /// Highest `truncate_before` argument: the start never passes it.
    truncated_to: u64,
    last_timestamp: i64,
}

impl Model {
    fn end(&self) -> u64 {
        self.records.len() as u64
    }

    fn expected(&self, offset: u64) -> Option<&Expected> {
        let index = usize::try_from(offset).ok()?;
        self.records
            .get(index)
            .or_else(|| self.maybe.get(index - self.records.len()))
    }

    /// An offset among the stored ones, or a few past the end.
    fn pick_offset(&self, pick: u8) -> u64 {
        u64::from(pick) % (self.end() + 4)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    Kill,
    PowerLoss,
}

struct LongCursor {
    cursor: Cursor,
    next: u64,
    skipped: u64,
}

struct Harness {
    shape: Shape,
    sim: SimStorage,
    log: Option<Log>,
    cursor: Option<LongCursor>,
    model: Model,
    context: String,
}

impl Harness {
    fn new(shape: Shape) -> Harness {
        let sim = SimStorage::new();
        let log = Log::open(DIR, shape.options(&sim)).expect("a new log opens");
        Harness {
            shape,
            sim,
            log: Some(log),
            cursor: None,
            model: Model {
                records: Vec::new(),
                maybe: Vec::new(),
                start: 0,
                durable_end: 0,
                truncated_to: 0,
                last_timestamp: FIRST_TIMESTAMP,
            },
            context: String::new(),
        }
    }

    fn log(&self) -> &Log {
        self.log
            .as_ref()
            .expect("the harness always holds a log between steps")
    }

    fn alive(&self) -> bool {
        !self.sim.is_halted()
    }

    /// An operation failed: only a crashed process may fail.
    fn failed(&self, what: &str, error: &Error) {
        assert!(
            !self.alive(),
            "{}: {what} failed without a crash: {error}",
            self.context
        );
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(spec) => self.append(std::slice::from_ref(spec), false),
            Op::Batch(specs) => self.append(specs, true),
            Op::Read(pick) => self.read(*pick),
            Op::Cursor { from, pick, count } => self.fresh_cursor(*from, *pick, *count),
            Op::CursorNext(n) => self.cursor_next(*n),
            Op::TruncateBefore(pick) => self.truncate(*pick),
            Op::Flush => self.flush(),
            Op::CloseReopen => self.close_reopen(),
            Op::Kill => self.crash(Crash::Kill, 0),
            Op::Halt { writes, after } => {
                let after = u64::from(after % 32);
                self.sim.inject(if *writes {
                    Fault::HaltAfterWrites { after }
                } else {
                    Fault::HaltAfterSyncs { after }
                });
            }
            Op::PowerLoss(seed) => self.crash(Crash::PowerLoss, *seed),
        }
        if self.alive() {
            self.check_bounds();
        }
    }

    fn check_bounds(&self) {
        let log = self.log();
        let context = &self.context;
        assert!(
            self.model.maybe.is_empty(),
            "{context}: a failed append without a crash"
        );
        assert_eq!(log.end_offset(), self.model.end(), "{context}: end offset");
        assert_eq!(log.start_offset(), self.model.start, "{context}: start offset");
    }

    fn append(&mut self, specs: &[RecordSpec], batch: bool) {
        let expected: Vec<Expected> = specs
            .iter()
            .map(|spec| {
                self.model.last_timestamp += i64::from(spec.ts_step) * 3;
                Expected::new(spec, self.model.last_timestamp)
            })
            .collect();
        let records: Vec<Record<'_>> = expected.iter().map(Expected::record).collect();
        let bytes: usize = records.iter().filter_map(Record::encoded_len).sum();
        let fits = bytes as u64 <= self.shape.segment_bytes - SEGMENT_HEADER_BYTES;
        let result = if batch {
            self.log().append_batch(&records)
        } else {
            self.log().append(&records[0]).map(|offset| offset..offset + 1)
        };
        drop(records);
        match result {
            Ok(range) => {
                let context = &self.context;
                assert!(fits, "{context}: a batch larger than a segment was accepted");
                assert!(
                    expected.is_empty() || self.model.maybe.is_empty(),
                    "{context}: acknowledged after a failed append"
                );
                let first = self.model.end();
                assert_eq!(range, first..first + expected.len() as u64, "{context}: offsets");
                self.model.records.extend(expected);
            }
            Err(Error::InvalidArgument(_)) if !fits => {}
            Err(e) => {
                self.failed("append", &e);
                if fits {
                    self.model.maybe.extend(expected);
                }
            }
        }
    }

    /// Checks a record read at `offset` (while halted too: what is returned
    /// must be right even when the process is dying).
    fn check_record(&self, offset: u64, record: &StoredRecord) {
        let context = &self.context;
        assert_eq!(
            record.offset(),
            offset,
            "{context}: record carries another offset"
        );
        let expected = self.model.expected(offset);
        assert!(
            expected.is_some_and(|e| e.matches(record)),
            "{context}: offset {offset} read {record:?}, expected {expected:?}"
        );
    }

    fn read(&mut self, pick: u8) {
        let offset = self.model.pick_offset(pick);
        match self.log().read(offset) {
            Ok(Some(record)) => self.check_record(offset, &record),
            Ok(None) => {
                let stored = self.model.start..self.model.end();
                assert!(
                    !self.alive() || !stored.contains(&offset),
                    "{}: read({offset}) found nothing inside {stored:?}",
                    self.context
                );
            }
            Err(e) => self.failed("read", &e),
        }
    }

    /// Where a fresh cursor must start, and how to ask for it.
    fn cursor_start(&self, from: u8, pick: u8) -> (Position, u64) {
        let (start, end) = (self.model.start, self.model.end());
        match from % 4 {
            0 => (Position::Earliest, start),
            1 => (Position::Latest, end),
            2 => {
                let offset = self.model.pick_offset(pick);
                (Position::Offset(offset), offset.clamp(start, end))
            }
            _ => {
                let stored = self.model.records.get(start as usize..).unwrap_or_default();
                let timestamp = match stored.len() {
                    0 => FIRST_TIMESTAMP + i64::from(pick as i8),
                    n => stored[usize::from(pick) % n].timestamp + i64::from(pick % 3) - 1,
                };
                let first = stored.iter().position(|e| e.timestamp >= timestamp);
                (
                    Position::Timestamp(timestamp),
                    first.map_or(end, |i| start + i as u64),
                )
            }
        }
    }

    fn fresh_cursor(&mut self, from: u8, pick: u8, count: u8) {
        let (position, first) = self.cursor_start(from, pick);
        let mut cursor = match self.log().cursor(position) {
            Ok(cursor) => cursor,
            Err(e) => return self.failed("cursor", &e),
        };
        let alive = self.alive();
        assert!(
            !alive || cursor.offset() == first,
            "{}: {position:?} starts at {}",
            self.context,
            cursor.offset()
        );
        for offset in first..first + u64::from(count % 16) {
            match cursor.next() {
                Ok(Some(record)) => self.check_record(if alive { offset } else { record.offset() }, &record),
                Ok(None) => {
                    assert!(
                        !alive || offset == self.model.end(),
                        "{}: cursor ended at {offset}",
                        self.context
                    );
                    break;
                }
                Err(e) => return self.failed("cursor next", &e),
            }
        }
        assert!(
            !self.alive() || cursor.skipped() == 0,
            "{}: fresh cursor skipped",
            self.context
        );
    }

    fn cursor_next(&mut self, n: u8) {
        if self.cursor.is_none() {
            match self.log().cursor(Position::Earliest) {
                Ok(cursor) => {
                    let next = cursor.offset();
                    self.cursor = Some(LongCursor {
                        cursor,
                        next,
                        skipped: 0,
                    });
                }
                Err(e) => return self.failed("cursor", &e),
            }
        }
        let Some(mut long) = self.cursor.take() else {
            return;
        };
        for _ in 0..n % 16 {
            match long.cursor.next() {
                Ok(Some(record)) => {
                    if self.alive() && record.offset() != long.next {
                        // Truncation removed records it had not read: it
                        // jumps to the start and counts the gap.
                        assert!(
                            long.next < self.model.start && record.offset() == self.model.start,
                            "{}: long cursor read {} after {}",
                            self.context,
                            record.offset(),
                            long.next
                        );
                        long.skipped += self.model.start - long.next;
                    }
                    self.check_record(record.offset(), &record);
                    long.next = record.offset() + 1;
                }
                Ok(None) => {
                    if self.alive() {
                        if long.next < self.model.start {
                            long.skipped += self.model.start - long.next;
                            long.next = self.model.start;
                        }
                        assert_eq!(
                            long.next,
                            self.model.end(),
                            "{}: long cursor ended early",
                            self.context
                        );
                    }
                    break;
                }
                Err(e) => {
                    self.failed("cursor next", &e);
                    break;
                }
            }
        }
        if self.alive() {
            assert_eq!(
                long.cursor.skipped(),
                long.skipped,
                "{}: skipped count",
                self.context
            );
        }
        self.cursor = Some(long);
    }

    fn truncate(&mut self, pick: u8) {
        let offset = self.model.pick_offset(pick);
        self.model.truncated_to = self.model.truncated_to.max(offset);
        let old_start = self.model.start;
        match self.log().truncate_before(offset) {
            Ok(removed) => {
                let start = self.log().start_offset();
                if self.alive() {
                    let context = &self.context;
                    assert!(start >= old_start, "{context}: start moved back");
                    assert!(
                        start <= offset.max(old_start),
                        "{context}: removed records at or after {offset}"
                    );
                    assert!(start <= self.model.end(), "{context}: start past the end");
                    assert_eq!(removed > 0, start > old_start, "{context}: removed count");
                }
                self.model.start = start;
            }
            Err(e) => self.failed("truncate_before", &e),
        }
    }

    fn flush(&mut self) {
        match self.log().flush() {
            Ok(()) => self.model.durable_end = self.model.end(),
            Err(e) => self.failed("flush", &e),
        }
    }

    fn close_reopen(&mut self) {
        self.cursor = None;
        let log = self.log.take().expect("a log between steps");
        let closed = log.close();
        drop(log);
        match closed {
            Ok(()) => self.model.durable_end = self.model.end(),
            Err(e) => {
                self.failed("close", &e);
                // The process died while closing: the power fails too.
                self.sim.power_loss(0);
                return self.reopen(Crash::PowerLoss);
            }
        }
        match Log::open(DIR, self.shape.options(&self.sim)) {
            Ok(log) => {
                let context = &self.context;
                assert!(
                    log.recovery_report().clean_shutdown,
                    "{context}: clean close not seen"
                );
                assert_eq!(
                    log.start_offset(),
                    self.model.start,
                    "{context}: start after reopen"
                );
                assert_eq!(log.end_offset(), self.model.end(), "{context}: end after reopen");
                self.log = Some(log);
                self.check_contents();
            }
            Err(e) => {
                // An armed halt fired during the open.
                self.failed("open", &e);
                self.sim.power_loss(1);
                self.reopen(Crash::PowerLoss);
            }
        }
    }

    fn crash(&mut self, crash: Crash, seed: u8) {
        self.cursor = None;
        match crash {
            Crash::Kill => {
                // Copy every written byte before the old handle closes.
                let fresh = SimStorage::new();
                for path in self.sim.files() {
                    if let Some(bytes) = self.sim.read_file(&path) {
                        fresh.write_file(&path, &bytes);
                    }
                }
                drop(self.log.take());
                self.sim = fresh;
            }
            Crash::PowerLoss => {
                // Die at the next sync, so dropping the handle cannot close.
                self.sim.inject(Fault::HaltAfterSyncs { after: 0 });
                drop(self.log.take());
                self.sim.power_loss(u64::from(seed));
            }
        }
        self.reopen(crash);
    }

    /// Reopens after a crash and checks what survived, then adopts it.
    fn reopen(&mut self, crash: Crash) {
        let log = match Log::open(DIR, self.shape.options(&self.sim)) {
            Ok(log) => log,
            Err(e) => panic!("{}: reopening after {crash:?} failed: {e}", self.context),
        };
        let (start, end) = (log.start_offset(), log.end_offset());
        let model = &mut self.model;
        let must_keep = match (self.shape.durability, crash) {
            (Durability::Os, Crash::PowerLoss) => model.durable_end,
            _ => model.end(),
        };
        let context = &self.context;
        assert!(
            end >= must_keep,
            "{context}: {crash:?} lost acknowledged records: end {end} < {must_keep}"
        );
        let written = model.end() + model.maybe.len() as u64;
        assert!(
            end <= written,
            "{context}: end {end} after {crash:?}, only {written} written"
        );
        assert!(start <= end, "{context}: start {start} after end {end}");
        assert!(
            start <= model.truncated_to,
            "{context}: start {start} never truncated to"
        );
        let mut all = std::mem::take(&mut model.records);
        all.append(&mut model.maybe);
        model.maybe = all.split_off(end as usize);
        model.records = all;
        model.start = start;
        self.log = Some(log);
        // Survivors are checked against the model before it adopts them.
        self.check_contents();
        self.model.maybe.clear();
        self.model.durable_end = end;
    }

    /// Every stored record, through a cursor and through `read`.
    fn check_contents(&self) {
        let log = self.log();
        let (start, end) = (log.start_offset(), log.end_offset());
        let mut cursor = log.cursor(Position::Earliest).expect("a cursor on a fresh log");
        for offset in start..end {
            match cursor.next() {
                Ok(Some(record)) => self.check_record(offset, &record),
                other => panic!(
                    "{}: cursor at {offset} of {start}..{end}: {other:?}",
                    self.context
                ),
            }
            match log.read(offset) {
                Ok(Some(record)) => self.check_record(offset, &record),
                other => panic!("{}: read({offset}) of {start}..{end}: {other:?}", self.context),
            }
        }
        assert!(
            matches!(cursor.next(), Ok(None)),
            "{}: cursor read past the end",
            self.context
        );
    }
}
