//! Read-only inspection, for the `logbus-dump` tool: walks segment bytes
//! with the library's own decoders (continuing past damage where the
//! framing allows), checks indexes against the frames they point at, runs
//! the real recovery as a dry run on an [`OverlayStorage`], and summarizes
//! a bus directory. Nothing here writes to disk or takes a lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{CorruptKind, Result};
use crate::format::{
    FrameError, OFFSET_ENTRY_LEN, OffsetEntry, SEGMENT_HEADER_LEN, SegmentHeader, StateEvent, TIME_ENTRY_LEN,
    TimeEntry, decode_frame, decode_segment_header, frame_len,
};
use crate::io::{OverlayStorage, Storage};
use crate::log::{Durability, Log, LogOptions, RecoveryReport};
use crate::patterns::{GROUPS, GroupSummary, SUBSCRIPTIONS, recovered_commit, summarize_group};
use crate::record::StoredRecord;
use crate::state::StateLog;

/// A frame found in a segment.
#[derive(Debug, Clone)]
pub struct FrameInfo {
    /// Where the frame starts in the file.
    pub position: u64,
    /// Its length in bytes.
    pub len: usize,
    /// The decoded record.
    pub record: StoredRecord,
}

/// Something wrong at a position of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte position in the file.
    pub position: u64,
    /// What check failed.
    pub kind: CorruptKind,
    /// Bytes skipped to reach the next decodable frame (0 if none skipped).
    pub skipped: u64,
}

impl Problem {
    /// A problem at `position` that skipped nothing.
    fn at(position: u64, kind: CorruptKind) -> Problem {
        Problem {
            position,
            kind,
            skipped: 0,
        }
    }
}

/// Everything decodable in one segment file.
#[derive(Debug, Clone)]
pub struct SegmentWalk {
    /// The header, or why it does not decode.
    pub header: std::result::Result<SegmentHeader, CorruptKind>,
    /// Every frame that decodes, in file order.
    pub frames: Vec<FrameInfo>,
    /// Every problem, in file order.
    pub problems: Vec<Problem>,
    /// Length of the file.
    pub file_len: u64,
    /// Zeros from the end of the frames to the end of the file: space
    /// preallocated for appends (an open or crashed log's active segment),
    /// not damage.
    pub unused_tail: u64,
}

/// Walks a segment's bytes: the header, then every frame. After a bad
/// frame whose length field is plausible, the walk skips that length; after
/// any other damage it searches forward for the next frame that decodes.
/// Offsets are checked for density from the header's base offset.
pub fn walk_segment(bytes: Bytes) -> SegmentWalk {
    let header = decode_segment_header(&bytes);
    let mut walk = SegmentWalk {
        header,
        frames: Vec::new(),
        problems: Vec::new(),
        file_len: bytes.len() as u64,
        unused_tail: 0,
    };
    let mut expected = walk.header.as_ref().ok().map(|h| h.base_offset);
    let mut position = SEGMENT_HEADER_LEN.min(bytes.len());
    while position < bytes.len() {
        let rest = &bytes[position..];
        if rest.iter().all(|&b| b == 0) {
            walk.unused_tail = rest.len() as u64;
            break;
        }
        match decode_frame(rest) {
            Ok(view) => {
                if let Some(want) = expected
                    && view.offset != want
                {
                    let kind = CorruptKind::OffsetMismatch {
                        expected: want,
                        found: view.offset,
                    };
                    walk.problems.push(Problem::at(position as u64, kind));
                }
                expected = Some(view.offset + 1);
                let frame = bytes.slice(position..position + view.len);
                let len = view.len;
                let record = StoredRecord::from_frame(frame, view);
                walk.frames.push(FrameInfo {
                    position: position as u64,
                    len,
                    record,
                });
                position += len;
            }
            Err(error) => {
                let kind = match error {
                    FrameError::Corrupt(kind) => kind,
                    FrameError::Incomplete { needed } => CorruptKind::Truncated {
                        needed: needed as u64,
                        available: rest.len() as u64,
                    },
                };
                let next = match (&kind, frame_len(rest)) {
                    (CorruptKind::Checksum { .. } | CorruptKind::Malformed(_), Ok(len))
                        if len <= rest.len() =>
                    {
                        position + len
                    }
                    _ => next_decodable(&bytes, position + 1),
                };
                let skipped = (next - position) as u64;
                walk.problems.push(Problem {
                    position: position as u64,
                    kind,
                    skipped,
                });
                position = next;
            }
        }
    }
    walk
}

/// The first position at or after `from` where a frame decodes, or the end.
fn next_decodable(bytes: &[u8], from: usize) -> usize {
    (from..bytes.len())
        .find(|&p| decode_frame(&bytes[p..]).is_ok())
        .unwrap_or(bytes.len())
}

/// Checks an offset index against the frames of its segment: every entry
/// must point at the start of the frame holding `base + relative_offset`,
/// and entries must increase.
pub fn check_offset_index(entries: &[u8], base: u64, frames: &[FrameInfo]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut previous: Option<OffsetEntry> = None;
    for (at, entry) in decode_entries(entries, OFFSET_ENTRY_LEN, OffsetEntry::decode, &mut problems) {
        let offset = base + u64::from(entry.relative_offset);
        let found = frames.binary_search_by_key(&u64::from(entry.position), |f| f.position);
        match found.map(|i| frames[i].record.offset()) {
            Ok(actual) if actual == offset => {}
            Ok(actual) => problems.push(Problem::at(
                at,
                CorruptKind::OffsetMismatch {
                    expected: offset,
                    found: actual,
                },
            )),
            Err(_) => problems.push(Problem::at(
                at,
                CorruptKind::Malformed("index entry does not point at a frame start"),
            )),
        }
        if previous
            .is_some_and(|p| entry.relative_offset <= p.relative_offset || entry.position <= p.position)
        {
            problems.push(Problem::at(
                at,
                CorruptKind::Malformed("index entries not increasing"),
            ));
        }
        previous = Some(entry);
    }
    problems
}

/// The entries of an index with their file positions; a partial last
/// entry ends the list and is reported in `problems`.
fn decode_entries<T>(
    entries: &[u8],
    entry_len: usize,
    decode: fn(&[u8]) -> Option<T>,
    problems: &mut Vec<Problem>,
) -> Vec<(u64, T)> {
    let mut decoded = Vec::with_capacity(entries.len() / entry_len);
    for (i, chunk) in entries.chunks(entry_len).enumerate() {
        let at = (crate::format::INDEX_HEADER_LEN + i * entry_len) as u64;
        match decode(chunk) {
            Some(entry) => decoded.push((at, entry)),
            None => {
                problems.push(Problem::at(at, CorruptKind::Malformed("partial index entry")));
                break;
            }
        }
    }
    decoded
}

/// Checks a time index: timestamps strictly increase, each entry names a
/// record of the segment, and no record up to that one is newer than the
/// entry says.
pub fn check_time_index(entries: &[u8], base: u64, frames: &[FrameInfo]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut previous: Option<TimeEntry> = None;
    let mut running_max = Vec::with_capacity(frames.len());
    let mut max = i64::MIN;
    for frame in frames {
        max = max.max(frame.record.timestamp());
        running_max.push((frame.record.offset(), max));
    }
    for (at, entry) in decode_entries(entries, TIME_ENTRY_LEN, TimeEntry::decode, &mut problems) {
        let offset = base + u64::from(entry.relative_offset);
        match running_max.binary_search_by_key(&offset, |(o, _)| *o) {
            Ok(i) if running_max[i].1 <= entry.timestamp => {}
            Ok(_) => problems.push(Problem::at(
                at,
                CorruptKind::Malformed("a record before the entry is newer than its timestamp"),
            )),
            Err(_) => problems.push(Problem::at(
                at,
                CorruptKind::Malformed("time index entry names no record"),
            )),
        }
        if previous
            .is_some_and(|p| entry.timestamp <= p.timestamp || entry.relative_offset < p.relative_offset)
        {
            problems.push(Problem::at(
                at,
                CorruptKind::Malformed("time index entries not increasing"),
            ));
        }
        previous = Some(entry);
    }
    problems
}

/// Runs the real recovery on `dir` as a dry run: every change stays in
/// memory. Returns what recovery would report (truncations, rebuilt
/// indexes, removed files), or the error that would stop the open.
pub fn dry_run_recovery(dir: &Path) -> Result<RecoveryReport> {
    let log = open_read_only(dir)?;
    Ok(log.recovery_report().clone())
}

/// Opens a log through a fresh overlay, so nothing is ever written.
pub fn open_read_only(dir: &Path) -> Result<Log> {
    let options = LogOptions::default()
        .durability(Durability::Os)
        .storage(Arc::new(OverlayStorage::new()));
    Log::open(dir, options)
}

/// A durable subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    /// Its name.
    pub name: String,
    /// Its committed offset.
    pub committed: u64,
}

/// A consumer group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Its persisted state.
    pub summary: GroupSummary,
}

/// The durable consumers of one topic in a bus directory.
#[derive(Debug, Clone, Default)]
pub struct ConsumersView {
    /// Durable subscriptions.
    pub subscriptions: Vec<SubscriptionView>,
    /// Consumer groups.
    pub groups: Vec<GroupView>,
}

/// Reads the stored consumers of `topic` in the bus at `bus_dir`, without
/// writing or locking.
pub fn consumers(bus_dir: &Path, topic: &str) -> Result<ConsumersView> {
    let mut view = ConsumersView::default();
    for kind in [SUBSCRIPTIONS, GROUPS] {
        for (name, events) in state_logs(&bus_dir.join("state").join(kind).join(topic))? {
            match kind {
                SUBSCRIPTIONS => view.subscriptions.push(SubscriptionView {
                    name,
                    committed: recovered_commit(&events),
                }),
                _ => view.groups.push(GroupView {
                    name,
                    summary: summarize_group(&events),
                }),
            }
        }
    }
    Ok(view)
}

/// The events of every state log under `dir`, by name, sorted.
fn state_logs(dir: &Path) -> Result<Vec<(String, Vec<StateEvent>)>> {
    let storage = Arc::new(OverlayStorage::new());
    let mut names: Vec<PathBuf> = match storage.list(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    let mut logs = Vec::new();
    for path in names {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        // Hidden entries are not consumers: state logs moved aside by a repair.
        if name.starts_with('.') {
            continue;
        }
        let (_state, events) = StateLog::open(&path, Durability::Os, storage.clone())?;
        logs.push((name, events));
    }
    Ok(logs)
}
