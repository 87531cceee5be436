//! Checks for the dump tool, all with the library's own decoders: walking a
//! segment's frames (continuing past damage where the framing allows),
//! checking indexes against the frames they point at, and the dry run of
//! recovery, which sorts its repairs into leftovers and damage (see the
//! parent module's doc). Nothing here writes to disk or takes a lock.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::open_read_only;
use crate::error::{CorruptKind, Result};
use crate::format::{
    FrameError, OFFSET_ENTRY_LEN, OffsetEntry, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SegmentHeader,
    TIME_ENTRY_LEN, TimeEntry, decode_segment_frame, decode_segment_header, frame_len,
};
use crate::log::{RecoveryReport, parse_segment_name};
use crate::record::StoredRecord;

/// A record found in a segment, and the frame that holds it (a batch
/// frame holds several: they share its position and length).
#[derive(Debug, Clone)]
pub struct FrameInfo {
    /// Where the frame starts in the file.
    pub position: u64,
    /// The frame's length in bytes.
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
        match decode_segment_frame(rest) {
            Ok(decoded) => {
                if let Some(want) = expected
                    && decoded.offset() != want
                {
                    let kind = CorruptKind::OffsetMismatch {
                        expected: want,
                        found: decoded.offset(),
                    };
                    walk.problems.push(Problem::at(position as u64, kind));
                }
                expected = Some(decoded.offsets().end);
                let len = decoded.size();
                let frame = bytes.slice(position..position + len);
                for view in decoded.records(&frame) {
                    walk.frames.push(FrameInfo {
                        position: position as u64,
                        len,
                        record: StoredRecord::from_frame(frame.clone(), view),
                    });
                }
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
        .find(|&p| decode_segment_frame(&bytes[p..]).is_ok())
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
        // The first record of the frame at the entry's position.
        let first = frames.partition_point(|f| f.position < u64::from(entry.position));
        let found = frames
            .get(first)
            .filter(|f| f.position == u64::from(entry.position))
            .ok_or(());
        match found.map(|f| f.record.offset()) {
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

/// The base offset of a segment data file, from its name
/// (`{base_offset:020}.log`); `None` for any other name.
pub fn segment_base(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    match parse_segment_name(name)? {
        (base, "log") => Some(base),
        _ => None,
    }
}

/// Whether the file at `path` starts with the segment magic.
pub fn has_segment_magic(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; SEGMENT_MAGIC.len()];
    let mut file = std::fs::File::open(path)?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == SEGMENT_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// How recovery repairs a leftover file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Deleted: it holds no record.
    Removed,
    /// Rebuilt from its segment: an index is a hint.
    Rebuilt,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Repair::Removed => "removed",
            Repair::Rebuilt => "rebuilt",
        })
    }
}

/// What recovery would do to a log directory, with its repairs sorted.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// What recovery would report.
    pub report: RecoveryReport,
    /// Files an unclean shutdown left that recovery repairs without losing
    /// a record (see the module doc); empty after a clean close.
    pub leftovers: BTreeMap<PathBuf, Repair>,
}

/// Runs the real recovery on `dir` as a dry run: every change stays in
/// memory. Returns what recovery would report (truncations, rebuilt
/// indexes, removed files) and which of it is a leftover, or the error
/// that would stop the open.
pub fn dry_run_recovery(dir: &Path) -> Result<DryRun> {
    let log = open_read_only(dir)?;
    let report = log.recovery_report().clone();
    let leftovers = leftovers(&report, log.active_base());
    Ok(DryRun { report, leftovers })
}

/// The repairs of `report` that an unclean shutdown explains and that lose
/// nothing: removed files (recovery removes only orphan indexes and
/// segments without a record) and rebuilt indexes of the active segment at
/// `active_base` (written by mapped stores that need not have reached the
/// disk). Sealed indexes were synced before the next segment existed, so a
/// rebuilt one is damage.
fn leftovers(report: &RecoveryReport, active_base: u64) -> BTreeMap<PathBuf, Repair> {
    if report.clean_shutdown {
        return BTreeMap::new();
    }
    let active = |path: &Path| {
        let name = path.file_name().and_then(|n| n.to_str());
        name.and_then(parse_segment_name)
            .is_some_and(|(base, _)| base == active_base)
    };
    let removed = report.removed_files.iter().map(|p| (p.clone(), Repair::Removed));
    let rebuilt = report.rebuilt_indexes.iter().filter(|p| active(p));
    removed
        .chain(rebuilt.map(|p| (p.clone(), Repair::Rebuilt)))
        .collect()
}
