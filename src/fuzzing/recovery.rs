//! The `segment_recovery` target: a log directory of arbitrary files
//! (segments, their indexes, a checkpoint, a clean marker) in a
//! [`SimStorage`], opened, read through and appended to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Input;
use crate::format::{
    Checkpoint, FRAME_HEADER_LEN, INDEX_HEADER_LEN, IndexKind, TIME_ENTRY_LEN, TimeEntry, decode_index_header,
};
use crate::io::SimStorage;
use crate::{Durability, Log, LogOptions, Position, Record, StoredRecord};

const DIR: &str = "/sim/log";
/// Blob length meaning "no such file".
const ABSENT: u16 = u16::MAX;
/// Offsets read one by one at each end of the log.
const READS_PER_END: u64 = 64;

/// The files of one segment; `None` leaves a file out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentFiles {
    /// Base offset, which names the files.
    pub base: u64,
    /// The `.log` file.
    pub log: Option<Vec<u8>>,
    /// The `.idx` file.
    pub idx: Option<Vec<u8>>,
    /// The `.tix` file.
    pub tix: Option<Vec<u8>>,
}

/// A `segment_recovery` input, parsed. Layout: a flags byte (bit 0 clean
/// marker, bit 1 `Durability::Os`, bits 2-3 extra segments), a shape byte
/// (bits 0-2: `segment_bytes = 256 << n`; bits 3-6: `index_interval_bytes =
/// 1 << n`), then per segment its base (`u64`) and three files, then the
/// checkpoint file and a timestamp to seek to. A file is a `u16` length
/// (`0xFFFF`: absent) and that many bytes (fewer at the end of the input).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryInput {
    /// Leave a `.clean` marker.
    pub clean: bool,
    /// Open with `Durability::Os` instead of `Always`.
    pub durability_os: bool,
    /// `segment_bytes = 256 << segment_shift` (0..=7).
    pub segment_shift: u8,
    /// `index_interval_bytes = 1 << interval_shift` (0..=15).
    pub interval_shift: u8,
    /// One to four segments.
    pub segments: Vec<SegmentFiles>,
    /// The `.checkpoint` file.
    pub checkpoint: Option<Vec<u8>>,
    /// Where a `Position::Timestamp` cursor starts.
    pub seek_timestamp: i64,
}

impl RecoveryInput {
    /// Parses any bytes.
    pub fn parse(data: &[u8]) -> RecoveryInput {
        let mut input = Input::new(data);
        let flags = input.u8();
        let shape = input.u8();
        let segment_count = 1 + usize::from((flags >> 2) & 3);
        let segments = (0..segment_count)
            .map(|_| SegmentFiles {
                base: input.u64(),
                log: blob(&mut input),
                idx: blob(&mut input),
                tix: blob(&mut input),
            })
            .collect();
        RecoveryInput {
            clean: flags & 1 != 0,
            durability_os: flags & 2 != 0,
            segment_shift: shape & 7,
            interval_shift: (shape >> 3) & 15,
            segments,
            checkpoint: blob(&mut input),
            seek_timestamp: input.i64(),
        }
    }

    /// The bytes that parse back to `self` (files longer than 65534 bytes
    /// are cut).
    pub fn encode(&self) -> Vec<u8> {
        let extra = (self.segments.len().clamp(1, 4) - 1) as u8;
        let flags = u8::from(self.clean) | u8::from(self.durability_os) << 1 | extra << 2;
        let mut out = vec![flags, (self.segment_shift & 7) | (self.interval_shift & 15) << 3];
        for segment in self.segments.iter().take(4) {
            out.extend_from_slice(&segment.base.to_le_bytes());
            for file in [&segment.log, &segment.idx, &segment.tix] {
                put_blob(&mut out, file.as_deref());
            }
        }
        put_blob(&mut out, self.checkpoint.as_deref());
        out.extend_from_slice(&self.seek_timestamp.to_le_bytes());
        out
    }

    /// Reads a log directory of `sim` back into an input.
    pub fn capture(sim: &SimStorage, dir: &Path) -> RecoveryInput {
        let mut input = RecoveryInput {
            clean: sim.read_file(&dir.join(".clean")).is_some(),
            checkpoint: sim.read_file(&dir.join(".checkpoint")),
            ..RecoveryInput::default()
        };
        for path in sim.files() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(base) = name.strip_suffix(".log").and_then(|stem| stem.parse().ok()) else {
                continue;
            };
            let file = |ext: &str| sim.read_file(&segment_path(dir, base, ext));
            input.segments.push(SegmentFiles {
                base,
                log: file("log"),
                idx: file("idx"),
                tix: file("tix"),
            });
        }
        input
    }

    /// Writes the files into `sim` under `/sim/log`.
    pub fn install(&self, sim: &SimStorage) {
        let dir = Path::new(DIR);
        for segment in &self.segments {
            for (ext, file) in [
                ("log", &segment.log),
                ("idx", &segment.idx),
                ("tix", &segment.tix),
            ] {
                if let Some(bytes) = file {
                    sim.write_file(&segment_path(dir, segment.base, ext), bytes);
                }
            }
        }
        if let Some(bytes) = &self.checkpoint {
            sim.write_file(&dir.join(".checkpoint"), bytes);
        }
        if self.clean {
            sim.write_file(&dir.join(".clean"), &[]);
        }
    }

    /// The write limit of the checkpoint, if it decodes, names one and
    /// names the last segment.
    fn write_limit(&self) -> Option<u64> {
        let checkpoint = Checkpoint::decode(self.checkpoint.as_deref()?).ok()?;
        let last = self
            .segments
            .iter()
            .filter(|s| s.log.is_some())
            .map(|s| s.base)
            .max();
        (last == Some(checkpoint.base_offset))
            .then(|| checkpoint.write_limit())
            .flatten()
    }

    fn options(&self, sim: &SimStorage) -> LogOptions {
        let durability = if self.durability_os {
            Durability::Os
        } else {
            Durability::Always
        };
        LogOptions::default()
            .durability(durability)
            .segment_bytes(256 << (self.segment_shift & 7))
            .index_interval_bytes(1 << (self.interval_shift & 15))
            .storage(Arc::new(sim.clone()))
    }
}

fn segment_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn blob(input: &mut Input<'_>) -> Option<Vec<u8>> {
    match input.u16() {
        ABSENT => None,
        len => Some(input.take(usize::from(len)).to_vec()),
    }
}

fn put_blob(out: &mut Vec<u8>, file: Option<&[u8]>) {
    match file {
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
        Some(bytes) => {
            let bytes = &bytes[..bytes.len().min(usize::from(ABSENT - 1))];
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// Opens a log over the files the input describes. Opening may fail with
/// an error; if it succeeds, a cursor must read dense offsets from the start
/// to the end or stop at an error, random reads must agree with it, a
/// timestamp seek must land inside the log, and one more record must append
/// at the end offset and, after a clean close, be there on reopening. Only
/// damage that reads already reported may make the reopening fail, and
/// then with `Error::Corrupt` (a segment sealed with damage inside is
/// refused when its index must be rebuilt: the decision table in
/// `src/log/recovery.rs`). The check for unused space after the last
/// frame never reads past the checkpoint's write limit.
pub fn segment_recovery(data: &[u8]) {
    let input = RecoveryInput::parse(data);
    let sim = SimStorage::new();
    input.install(&sim);
    let Ok(log) = Log::open(DIR, input.options(&sim)) else {
        return;
    };
    if let Some(limit) = input.write_limit() {
        let read = log.recovery_report().tail_checked_bytes;
        assert!(
            read <= limit,
            "read {read} bytes past the last frame, limit {limit}"
        );
    }
    let (start, end) = (log.start_offset(), log.end_offset());
    assert!(start <= end, "start {start} after end {end}");
    // Every record is a frame of at least FRAME_HEADER_LEN input bytes.
    let most_records = data.len() as u64 / FRAME_HEADER_LEN as u64;
    let (forward, whole) = read_forward(&log, start, end, most_records);
    check_random_reads(&log, start, end, &forward);
    if let Ok(cursor) = log.cursor(Position::Timestamp(input.seek_timestamp)) {
        assert!(
            (start..=end).contains(&cursor.offset()),
            "timestamp seek left the log"
        );
        // With time indexes that tell the truth (or none: they are rebuilt
        // from the records), the seek finds exactly the first record at or
        // after the timestamp. A plausible but lying index is trusted by
        // design, so it only has to land inside the log.
        if whole && time_indexes_truthful(&input, &forward, end) {
            let first = forward.iter().find(|r| r.timestamp() >= input.seek_timestamp);
            let expected = first.map_or(end, StoredRecord::offset);
            assert_eq!(
                cursor.offset(),
                expected,
                "timestamp seek to {}",
                input.seek_timestamp
            );
        }
    }
    let record = Record::new(b"after recovery").key(b"k").timestamp(1);
    let Ok(offset) = log.append(&record) else {
        return;
    };
    assert_eq!(offset, end, "append did not land at the end offset");
    check_appended(&log, offset);
    if log.close().is_err() {
        return;
    }
    drop(log);
    let reopened = match Log::open(DIR, input.options(&sim)) {
        Ok(log) => log,
        Err(e) if !whole && e.is_corruption() => return,
        Err(e) => panic!("a log that read back whole and closed cleanly does not reopen: {e}"),
    };
    assert_eq!(reopened.end_offset(), offset + 1, "the appended record was lost");
    check_appended(&reopened, offset);
}

/// Reads with a cursor from `start` until the end or an error; the records
/// read, whose offsets must be dense, and whether it reached the end.
fn read_forward(log: &Log, start: u64, end: u64, most_records: u64) -> (Vec<StoredRecord>, bool) {
    let mut records = Vec::new();
    let Ok(mut cursor) = log.cursor(Position::Earliest) else {
        return (records, false);
    };
    loop {
        let expected = start + records.len() as u64;
        match cursor.next() {
            Ok(Some(record)) => {
                assert_eq!(record.offset(), expected, "cursor skipped or repeated an offset");
                records.push(record);
                assert!(
                    records.len() as u64 <= most_records,
                    "cursor read more records than the files hold"
                );
            }
            Ok(None) => {
                assert_eq!(expected, end, "cursor stopped before the end without an error");
                return (records, true);
            }
            Err(_) => return (records, false),
        }
    }
}

fn check_random_reads(log: &Log, start: u64, end: u64, forward: &[StoredRecord]) {
    let head = start..end.min(start.saturating_add(READS_PER_END));
    let tail = end.saturating_sub(READS_PER_END).max(head.end)..end;
    for offset in head.chain(tail) {
        match log.read(offset) {
            Ok(Some(record)) => {
                assert_eq!(record.offset(), offset, "read returned another offset");
                if let Some(read) = forward.get((offset - start) as usize) {
                    assert_eq!(&record, read, "read and cursor disagree at {offset}");
                }
            }
            Ok(None) => panic!("read({offset}) found nothing inside {start}..{end}"),
            Err(_) => {}
        }
    }
    assert!(
        matches!(log.read(end), Ok(None)),
        "read past the end found something"
    );
    if let Some(below) = start.checked_sub(1) {
        assert!(
            matches!(log.read(below), Ok(None)),
            "read below the start found something"
        );
    }
}

/// The record appended at `offset` reads back (or fails with an error,
/// when damage before it stops the scan that finds it).
fn check_appended(log: &Log, offset: u64) {
    match log.read(offset) {
        Ok(Some(record)) => {
            assert_eq!(record.offset(), offset);
            assert_eq!(record.value(), b"after recovery");
            assert_eq!(record.key(), b"k");
        }
        Ok(None) => panic!("the record appended at {offset} is not readable"),
        Err(_) => {}
    }
}

/// True when every valid `.tix` of the input says only what the log itself
/// would have written about `records` (the whole log, read forward): each
/// entry names a record of its segment and the running maximum timestamp
/// there, and the last entry holds the segment's newest timestamp. A `.tix`
/// that is missing or invalid is rebuilt by recovery, so it tells the truth.
fn time_indexes_truthful(input: &RecoveryInput, records: &[StoredRecord], end: u64) -> bool {
    // The files as installed: a later segment of the input overwrites the
    // files of an earlier one with the same base.
    let mut bases = BTreeSet::new();
    let mut tixes = BTreeMap::new();
    for segment in &input.segments {
        if segment.log.is_some() {
            bases.insert(segment.base);
        }
        if let Some(tix) = &segment.tix {
            tixes.insert(segment.base, tix.as_slice());
        }
    }
    let bases: Vec<u64> = bases.into_iter().collect();
    bases.iter().enumerate().all(|(i, &base)| {
        let segment_end = bases.get(i + 1).copied().unwrap_or(end);
        let in_segment: Vec<&StoredRecord> = records
            .iter()
            .filter(|r| (base..segment_end).contains(&r.offset()))
            .collect();
        tixes
            .get(&base)
            .is_none_or(|tix| tix_truthful(tix, base, &in_segment))
    })
}

fn tix_truthful(tix: &[u8], base: u64, records: &[&StoredRecord]) -> bool {
    let whole =
        tix.len() >= INDEX_HEADER_LEN && (tix.len() - INDEX_HEADER_LEN).is_multiple_of(TIME_ENTRY_LEN);
    if decode_index_header(IndexKind::Time, tix) != Ok(base) || !whole {
        return true;
    }
    let mut last = None;
    for entry in tix[INDEX_HEADER_LEN..]
        .chunks_exact(TIME_ENTRY_LEN)
        .filter_map(TimeEntry::decode)
    {
        let at = base.saturating_add(u64::from(entry.relative_offset));
        let up_to: Vec<i64> = records
            .iter()
            .filter(|r| r.offset() <= at)
            .map(|r| r.timestamp())
            .collect();
        let named = records.iter().any(|r| r.offset() == at);
        if !named || up_to.iter().max() != Some(&entry.timestamp) {
            return false;
        }
        last = Some(entry.timestamp);
    }
    last == records.iter().map(|r| r.timestamp()).max()
}
