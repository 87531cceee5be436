//! Opening a log directory: deciding what on disk is the log.
//!
//! Rules:
//! - The segment scan is the truth; indexes are hints, rebuilt when missing
//!   or invalid, and verified on every use.
//! - The checkpoint names a segment only once every segment before it was
//!   sealed and synced, indexes included (`seal.rs`), so those are whole:
//!   damage inside them is [`Error::Corrupt`], never truncated away.
//! - Each of those must end exactly where the next one begins; a deleted
//!   segment or a cut one is [`Error::Corrupt`]
//!   ([`CorruptKind::OffsetGap`]). Sealing trimmed the file to its frames,
//!   so scanning the frames after its last index entry (at most
//!   `index_interval_bytes` plus one record) finds its end without reading
//!   the rest.
//! - Only the segment the checkpoint names and those after it can hold
//!   unsynced bytes: the last (active) one, and the one before it while
//!   its seal ran in the background. Each is scanned like the active one;
//!   one that ends short of the next base is where the log ends now (its
//!   tail never reached the disk), and the segments after it go. So
//!   recovery cost is bounded by two segments, not by the log. Without a
//!   valid checkpoint the segment before the last is checked as a sealed
//!   one first, and recovered as unsynced only if that check fails.
//!   After a crash, the scan starts at the recovery checkpoint: a position
//!   the log wrote to `.checkpoint` after syncing up to it, so the cost is
//!   the unsynced tail plus at most 1 MiB.
//!   After a clean close (the `.clean` marker) even that scan starts at the
//!   last index entry, unless that entry proves wrong.
//! - The scan of the last segment stops at the first frame that fails its
//!   checks or breaks the dense offset sequence; the file is truncated there
//!   and the cut is reported in the [`RecoveryReport`]. The active segment
//!   is preallocated, so after a crash its frames are followed by zeros: a
//!   scan that stops at zeros running to the end of the file, past the last
//!   checkpoint, found the end of what was written, and that cut is not
//!   reported as damage. The checkpoint's write limit bounds that check:
//!   the writer never writes past the limit of a synced checkpoint, so the
//!   zeros need checking only up to it, not through the whole reservation.
//! - An I/O error aborts the open and truncates nothing: only corruption is
//!   repaired.
//!
//! Decision table (each row has a test in `tests/recovery.rs`):
//!
//! | situation | action |
//! | --- | --- |
//! | no segment files | create segment 0 |
//! | `.idx` or `.tix` without its `.log` | delete it |
//! | last segment's header torn, no valid frame after it, `.checkpoint` not naming it | delete the segment (crash while creating it) |
//! | last segment with a bad header and valid frames after it, `.checkpoint` naming an earlier segment or none | write its header again from its name, then as below (its roll's seal had not synced the header) |
//! | last segment's header invalid and `.checkpoint` naming it (its header was synced) | `Error::Corrupt`, nothing deleted |
//! | a segment's header names a newer format version | `Error::Corrupt` (`UnsupportedVersion`), nothing deleted |
//! | a segment's header invalid, otherwise | `Error::Corrupt` |
//! | a segment before the one `.checkpoint` names, index valid | scan from its last entry to the end of the file |
//! | sealed segment's index missing or invalid, or its last entry not at a frame with its offset | rebuild it by scanning; a bad frame there is `Error::Corrupt` |
//! | either scan of a sealed segment meets a bad frame | `Error::Corrupt`, nothing changed |
//! | a sealed segment ends before or after the next segment's base (a segment deleted, or cut at a frame boundary) | `Error::Corrupt` (`OffsetGap`, naming both files), nothing changed |
//! | last segment after a clean close, index valid | scan from its last index entry |
//! | that entry does not point at a valid frame with its offset, or the last time entry names a record past the end | treat the index as invalid (next row) |
//! | last segment after a crash, `.checkpoint` valid and naming it | keep index entries below the checkpoint, scan from it |
//! | last segment otherwise | scan all of it, rebuilding its indexes |
//! | `.checkpoint` names a segment before the last (a seal was under way) | scan it and each later one like the last segment (rows above and below) |
//! | such a segment ends at the next one's base | seal it (trim and sync its indexes) and go on to the next |
//! | such a segment ends short of the next one's base | it ends the log: delete the segments after it, report their files |
//! | no valid `.checkpoint`, and the segment before the last fails the checks of a sealed one | recover it as if `.checkpoint` named it |
//! | that scan meets a bad frame below a checkpoint of this segment (synced data) with whole frames after it | `Error::Corrupt`, nothing truncated |
//! | that scan meets zeros from past the checkpoint to the end of the file, or to the checkpoint's write limit (unused preallocated space) | truncate there, report nothing |
//! | that scan meets a bad frame or an offset gap | truncate there, report it |
//! | I/O error anywhere | abort the open |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoint::read_checkpoint;
use super::options::LogOptions;
use super::scan::{FrameScanner, SCAN_CHUNK_BYTES, ScanError, Scanned};
use super::segment::{
    DATA_EXT, Extent, OFFSET_INDEX_EXT, PlacedFrame, Segment, TIME_INDEX_EXT, segment_file,
};
use crate::error::{CorruptKind, Error, Result};
use crate::format::{Checkpoint, FORMAT_VERSION, OffsetEntry, SEGMENT_HEADER_LEN, TimeEntry};
use crate::index::{validate_offset_entries, validate_time_entries};
use crate::io::Storage;

/// Name of the clean-shutdown marker file.
pub(crate) const CLEAN_MARKER: &str = ".clean";
/// Name of the recovery checkpoint file.
pub(crate) const CHECKPOINT_FILE: &str = ".checkpoint";

/// What opening a log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The previous owner closed the log cleanly.
    pub clean_shutdown: bool,
    /// Segments found.
    pub segments: usize,
    /// Bytes of the active segment scanned to find the end of the log. Not
    /// counted: the check of where each sealed segment ends (the frames
    /// after its last index entry) and rebuilds of sealed indexes.
    pub scanned_bytes: u64,
    /// Bytes read after the scan stopped, to tell unused preallocated space
    /// (zeros) from damage. Never past the write limit of a checkpoint
    /// naming the segment (every preallocating writer of this version sets
    /// one), so about the unsynced bytes plus 128 KiB at most, however
    /// large the preallocation; without one, up to the end of the file.
    pub tail_checked_bytes: u64,
    /// Tails cut off the last segment.
    pub truncations: Vec<Truncation>,
    /// Index files rebuilt from their segments.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Files deleted: orphan indexes and segments torn while being created.
    pub removed_files: Vec<PathBuf>,
}

impl RecoveryReport {
    /// True if recovery changed nothing but the clean marker.
    pub fn is_pristine(&self) -> bool {
        self.truncations.is_empty() && self.removed_files.is_empty()
    }
}

/// A tail removed from a segment during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Truncation {
    /// The segment file.
    pub file: PathBuf,
    /// Where the first bad frame started; the file now ends here.
    pub position: u64,
    /// Bytes removed.
    pub bytes_removed: u64,
    /// Why the frame at `position` was rejected.
    pub reason: CorruptKind,
}

pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    pub report: RecoveryReport,
}

/// Where a scan of frames ended.
struct ScanEnd {
    end: Extent,
    stop: Option<(u64, CorruptKind)>,
}

/// Opens every segment in `dir`, repairing the tail of the last one.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    options: &LogOptions,
    now_ms: i64,
) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let listing = DirListing::read(storage, dir)?;
    if listing.clean {
        storage.remove(&dir.join(CLEAN_MARKER))?;
        report.clean_shutdown = true;
    }
    for orphan in &listing.orphans {
        storage.remove(orphan)?;
        report.removed_files.push(orphan.clone());
    }
    let checkpoint = read_checkpoint(storage, dir)?;
    let mut segments = open_segments(
        storage,
        dir,
        options,
        &listing.bases,
        checkpoint,
        now_ms,
        &mut report,
    )?;
    if segments.is_empty() {
        let base = listing.bases.last().copied().unwrap_or(0);
        let segment = Segment::create(
            storage,
            dir,
            base,
            options.index_interval_bytes,
            options.index_capacity(),
            now_ms,
        )?;
        segment.file().sync_all()?;
        segments.push(Arc::new(segment));
    }
    storage.sync_dir(dir)?;
    let clean = report.clean_shutdown;
    let named = checkpoint.and_then(|c| segments.iter().position(|s| s.base() == c.base_offset));
    let last = segments.len() - 1;
    let synced_until = named.unwrap_or(last);
    let mut unsynced_from = synced_until;
    for i in 0..synced_until {
        match recover_sealed(&segments[i], &segments[i + 1], &mut report) {
            // Without a checkpoint to say how far syncs got, the segment
            // before the last may be one whose seal was under way.
            Err(e) if e.is_corruption() && named.is_none() && !clean && i + 1 == last => {
                unsynced_from = i;
            }
            other => other?,
        }
    }
    recover_unsynced(
        storage,
        dir,
        &mut segments,
        unsynced_from,
        clean,
        checkpoint,
        options,
        &mut report,
    )?;
    report.segments = segments.len();
    Ok(Recovered { segments, report })
}

/// Recovers the segments from `from` on, which syncs may not have reached
/// (see the module doc): each is scanned like the active one; one that
/// ends short of the next segment's base is where the log now ends, and
/// the segments after it are deleted (their records follow a gap).
#[allow(clippy::too_many_arguments)]
fn recover_unsynced(
    storage: &dyn Storage,
    dir: &Path,
    segments: &mut Vec<Arc<Segment>>,
    from: usize,
    clean: bool,
    checkpoint: Option<Checkpoint>,
    options: &LogOptions,
    report: &mut RecoveryReport,
) -> Result<()> {
    for i in from..segments.len() {
        let segment = segments[i].clone();
        let is_last = i + 1 == segments.len();
        recover_active(&segment, clean && is_last, checkpoint, options, report)?;
        let Some(next) = segments.get(i + 1) else {
            return Ok(());
        };
        let end = segment.limit().end_offset;
        if end > next.base() {
            let kind = CorruptKind::OffsetGap {
                expected: next.base(),
                found: end,
                next_segment: next.path().to_path_buf(),
            };
            return Err(Error::corrupt(segment.path(), segment.limit().end_pos, kind));
        }
        if end < next.base() {
            for removed in segments.drain(i + 1..) {
                remove_segment_files(storage, dir, removed.base(), report);
            }
            storage.sync_dir(dir)?;
            return Ok(());
        }
        segment.indexes().seal()?;
        segment.mark_sealed();
    }
    Ok(())
}

/// Deletes a segment's data and index files, reporting those it deleted.
fn remove_segment_files(storage: &dyn Storage, dir: &Path, base: u64, report: &mut RecoveryReport) {
    for ext in [DATA_EXT, OFFSET_INDEX_EXT, TIME_INDEX_EXT] {
        let path = segment_file(dir, base, ext);
        if storage.remove(&path).is_ok() {
            report.removed_files.push(path);
        }
    }
}

/// The recognised files of a log directory.
struct DirListing {
    bases: Vec<u64>,
    orphans: Vec<PathBuf>,
    clean: bool,
}

impl DirListing {
    fn read(storage: &dyn Storage, dir: &Path) -> Result<Self> {
        let mut bases = Vec::new();
        let mut indexes = Vec::new();
        let mut clean = false;
        for path in storage.list(dir)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name == CLEAN_MARKER {
                clean = true;
            }
            match parse_segment_name(name) {
                Some((base, DATA_EXT)) => bases.push(base),
                Some((base, OFFSET_INDEX_EXT | TIME_INDEX_EXT)) => indexes.push((base, path)),
                _ => {}
            }
        }
        bases.sort_unstable();
        let orphans = indexes
            .into_iter()
            .filter(|(base, _)| bases.binary_search(base).is_err())
            .map(|(_, path)| path)
            .collect();
        Ok(DirListing {
            bases,
            orphans,
            clean,
        })
    }
}

/// Parses `{base:020}.{ext}`.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

fn open_segments(
    storage: &dyn Storage,
    dir: &Path,
    options: &LogOptions,
    bases: &[u64],
    checkpoint: Option<Checkpoint>,
    now_ms: i64,
    report: &mut RecoveryReport,
) -> Result<Vec<Arc<Segment>>> {
    let mut segments = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        // A checkpoint is written only after its segment's header was
        // synced, so a segment it names was not torn while being created.
        let synced = checkpoint.is_some_and(|c| c.base_offset == base);
        match Segment::open(storage, dir, base, options.index_interval_bytes) {
            Ok(segment) => segments.push(Arc::new(segment)),
            Err(e) if may_be_torn(&e) && i + 1 == bases.len() && !synced => {
                if torn_creation(storage, dir, base)? {
                    remove_segment_files(storage, dir, base, report);
                } else if checkpoint.is_none_or(|c| c.base_offset < base) {
                    // Created by a roll whose seal was under way (the
                    // checkpoint still names an earlier segment, perhaps
                    // one retention removed since): its header was not
                    // synced, but frames written after it were (by
                    // writeback). Its name gives the header back.
                    rewrite_header(storage, dir, base, now_ms)?;
                    let segment = Segment::open(storage, dir, base, options.index_interval_bytes)?;
                    segments.push(Arc::new(segment));
                } else {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(segments)
}

/// Writes the header of the segment starting at `base` again, durably.
fn rewrite_header(storage: &dyn Storage, dir: &Path, base: u64, now_ms: i64) -> Result<()> {
    let file = storage.open(&segment_file(dir, base, DATA_EXT), false)?;
    let header = crate::format::SegmentHeader {
        version: FORMAT_VERSION,
        base_offset: base,
        created_ms: now_ms,
    };
    file.write_all_at(&header.encode(), 0)?;
    file.sync_all()?;
    Ok(())
}

/// A header error that a crash while creating the segment can produce. A
/// newer format version is never one: such a file is refused, not deleted.
fn may_be_torn(error: &Error) -> bool {
    match error {
        Error::Corrupt {
            kind: CorruptKind::UnsupportedVersion(version),
            ..
        } => *version < FORMAT_VERSION,
        other => other.is_corruption(),
    }
}

/// A segment whose header is bad is a torn creation only if no valid frame
/// follows the header: records are written only after the header was synced.
fn torn_creation(storage: &dyn Storage, dir: &Path, base: u64) -> Result<bool> {
    let file = storage.open(&segment_file(dir, base, DATA_EXT), false)?;
    let len = file.size()?;
    let mut scanner = FrameScanner::new(file, SEGMENT_HEADER_LEN as u64, len, SCAN_CHUNK_BYTES);
    match scanner.next_frame() {
        Ok(Some(_)) => Ok(false),
        Ok(None) | Err(ScanError::Invalid { .. }) => Ok(true),
        Err(ScanError::Io(e)) => Err(e.into()),
    }
}

/// Scans frames from `position`, expecting dense offsets from
/// `next_offset`, calling `each` per frame; stops at the first bad frame.
fn scan_frames(
    segment: &Segment,
    position: u64,
    next_offset: u64,
    limit: u64,
    mut each: impl FnMut(&Scanned) -> Result<()>,
) -> Result<ScanEnd> {
    let mut scanner = FrameScanner::new(segment.file().clone(), position, limit, SCAN_CHUNK_BYTES);
    let mut end = Extent {
        end_offset: next_offset,
        end_pos: position,
    };
    loop {
        match scanner.next_frame() {
            Ok(None) => return Ok(ScanEnd { end, stop: None }),
            Ok(Some(frame)) if frame.frame.offset() != end.end_offset => {
                let kind = CorruptKind::OffsetMismatch {
                    expected: end.end_offset,
                    found: frame.frame.offset(),
                };
                return Ok(ScanEnd {
                    end,
                    stop: Some((frame.position, kind)),
                });
            }
            Ok(Some(frame)) => {
                // Appends stop below u64::MAX, so the end offset always fits.
                let Some(end_offset) = end.end_offset.checked_add(frame.frame.count()) else {
                    let kind = CorruptKind::Malformed("record offset u64::MAX is never written");
                    return Ok(ScanEnd {
                        end,
                        stop: Some((frame.position, kind)),
                    });
                };
                each(&frame)?;
                end = Extent {
                    end_offset,
                    end_pos: scanner.position(),
                };
            }
            Err(ScanError::Invalid { position, kind }) => {
                return Ok(ScanEnd {
                    end,
                    stop: Some((position, kind)),
                });
            }
            Err(ScanError::Io(e)) => return Err(e.into()),
        }
    }
}

/// A frame a scan found, as the indexes note it.
fn placed(scanned: &Scanned) -> PlacedFrame {
    PlacedFrame {
        offset: scanned.frame.offset(),
        position: scanned.position,
        newest: scanned.frame.newest(),
    }
}

fn validate_indexes(segment: &Segment, file_len: u64) -> std::result::Result<(), CorruptKind> {
    let indexes = segment.indexes();
    indexes.offsets.validate(segment.base())?;
    indexes.times.validate(segment.base())?;
    validate_offset_entries(indexes.offsets.entries(), file_len)?;
    validate_time_entries(indexes.times.entries())
}

fn index_paths(segment: &Segment) -> [PathBuf; 2] {
    let indexes = segment.indexes();
    [
        indexes.offsets.path().to_path_buf(),
        indexes.times.path().to_path_buf(),
    ]
}

/// Rebuilds both indexes of `segment` by scanning it from the header.
fn rebuild_indexes(
    segment: &Segment,
    limit: u64,
    capacity: usize,
    report: &mut RecoveryReport,
) -> Result<ScanEnd> {
    segment.indexes().reset(segment.base(), capacity)?;
    report.rebuilt_indexes.extend(index_paths(segment));
    let header = SEGMENT_HEADER_LEN as u64;
    scan_frames(segment, header, segment.base(), limit, |frame| {
        segment.frame_appended(placed(frame))
    })
}

/// Checks that a sealed segment is whole and ends exactly where `next`
/// begins. With valid indexes only the frames after the last offset-index
/// entry are scanned (at most `index_interval_bytes` plus one record):
/// sealing trimmed the file to its frames, so that scan reaching the end of
/// the file at the next segment's base rules out a deleted segment or a cut
/// at a frame boundary without reading the whole segment.
fn recover_sealed(segment: &Segment, next: &Segment, report: &mut RecoveryReport) -> Result<()> {
    let len = segment.file().size()?;
    let next_base = next.base();
    let last_indexed = segment.indexes().offsets.last().and_then(OffsetEntry::decode);
    let index_ok = validate_indexes(segment, len).is_ok()
        && last_indexed.is_none_or(|e| segment.base() + u64::from(e.relative_offset) < next_base);
    let hinted = match index_ok {
        true => {
            segment.indexes().resume(0)?;
            scan_from_hint(segment, len, |_| Ok(()))?
        }
        false => None,
    };
    let rebuilt = hinted.is_none();
    let scan = match hinted {
        Some((_, scan)) => scan,
        None => rebuild_indexes(segment, len, 0, report)?,
    };
    if let Some((position, kind)) = scan.stop {
        return Err(Error::corrupt(segment.path(), position, kind));
    }
    if scan.end.end_offset != next_base {
        let kind = CorruptKind::OffsetGap {
            expected: next_base,
            found: scan.end.end_offset,
            next_segment: next.path().to_path_buf(),
        };
        return Err(Error::corrupt(segment.path(), scan.end.end_pos, kind));
    }
    if rebuilt {
        segment.indexes().seal()?;
    }
    segment.set_limit(Extent {
        end_offset: next_base,
        end_pos: len,
    });
    segment.refresh_max_timestamp();
    segment.mark_sealed();
    Ok(())
}

/// Scans from the last offset-index entry (or the first frame when the
/// index is empty) to `len`, calling `each` per frame. `None` if that entry
/// does not point at a valid frame with the offset it names: a plausible
/// but wrong entry is a bad hint, not damage, and must not truncate or
/// condemn the records after it.
fn scan_from_hint(
    segment: &Segment,
    len: u64,
    each: impl FnMut(&Scanned) -> Result<()>,
) -> Result<Option<(u64, ScanEnd)>> {
    let last = segment.indexes().offsets.last().and_then(OffsetEntry::decode);
    let (position, offset) = last.map_or((SEGMENT_HEADER_LEN as u64, segment.base()), |e| {
        (
            u64::from(e.position),
            segment.base() + u64::from(e.relative_offset),
        )
    });
    let scan = scan_frames(segment, position, offset, len, each)?;
    let hint_wrong = scan.stop.as_ref().is_some_and(|(at, _)| *at == position);
    Ok((!hint_wrong).then_some((position, scan)))
}

/// After a clean close: scans from the last offset-index entry. `None` if
/// the index is invalid, the hint is wrong (see [`scan_from_hint`]), or the
/// last time entry names a record past the end.
fn scan_from_last_entry(segment: &Segment, len: u64, capacity: usize) -> Result<Option<(u64, ScanEnd)>> {
    if validate_indexes(segment, len).is_err() {
        return Ok(None);
    }
    segment.indexes().resume(capacity)?;
    let last_time = segment.indexes().times.last().and_then(TimeEntry::decode);
    let Some((position, scan)) = scan_from_hint(segment, len, |frame| segment.frame_appended(placed(frame)))?
    else {
        return Ok(None);
    };
    // A time entry naming a record past the end is wrong too: appending
    // after it would write entries for earlier records, and the next open
    // would reject the index and rescan the segment from its start.
    let time_wrong =
        last_time.is_some_and(|e| segment.base() + u64::from(e.relative_offset) >= scan.end.end_offset);
    Ok((!time_wrong).then_some((position, scan)))
}

/// Whether a frame that decodes starts anywhere after `position`.
fn frame_follows(segment: &Segment, position: u64, len: u64) -> Result<bool> {
    let mut bytes = vec![0u8; (len - position) as usize];
    crate::io::read_exact_at(segment.file().as_ref(), &mut bytes, position)?;
    Ok((1..bytes.len()).any(|at| crate::format::decode_segment_frame(&bytes[at..]).is_ok()))
}

/// Whether every byte from `position` to `len` is zero; adds what it read
/// to `read`. Holes (such as reserved blocks never written) are skipped
/// without reading.
fn zeros_to_end(segment: &Segment, position: u64, len: u64, read: &mut u64) -> Result<bool> {
    if position >= len {
        return Ok(true);
    }
    let file = segment.file().as_ref();
    let mut chunk = vec![0u8; SCAN_CHUNK_BYTES];
    let mut from = position;
    while let Some(data) = file.next_data(from)? {
        let mut at = data.start.max(from);
        let end = data.end.min(len);
        if end <= from {
            // A region behind `from`: the file system answered nonsense;
            // call the tail damage rather than loop.
            return Ok(false);
        }
        while at < end {
            let n = (end - at).min(chunk.len() as u64) as usize;
            crate::io::read_exact_at(file, &mut chunk[..n], at)?;
            *read += n as u64;
            if !all_zero(&chunk[..n]) {
                return Ok(false);
            }
            at += n as u64;
        }
        if end >= len {
            break;
        }
        from = end;
    }
    Ok(true)
}

/// Whether `bytes` are all zero, 64 at a time (the OR of a block
/// vectorizes; an early exit per byte does not).
fn all_zero(bytes: &[u8]) -> bool {
    let blocks = bytes.chunks_exact(64);
    let rest = blocks.remainder();
    blocks
        .map(|block| block.iter().fold(0, |acc, &b| acc | b))
        .chain(rest.iter().copied())
        .all(|b| b == 0)
}

/// After a crash: scans only what was written after the last durable
/// checkpoint of this segment. `None` if the checkpoint names another
/// segment, lies beyond the file, or the indexes' headers are invalid.
fn scan_from_checkpoint(
    segment: &Segment,
    checkpoint: Checkpoint,
    len: u64,
    capacity: usize,
) -> Result<Option<(u64, ScanEnd)>> {
    let usable = checkpoint.base_offset == segment.base()
        && (SEGMENT_HEADER_LEN as u64..=len).contains(&checkpoint.end_pos);
    if !usable || !segment.indexes().resume_at_checkpoint(&checkpoint, capacity)? {
        return Ok(None);
    }
    let scan = scan_frames(segment, checkpoint.end_pos, checkpoint.end_offset, len, |frame| {
        segment.frame_appended(placed(frame))
    })?;
    Ok(Some((checkpoint.end_pos, scan)))
}

fn recover_active(
    segment: &Segment,
    clean: bool,
    checkpoint: Option<Checkpoint>,
    options: &LogOptions,
    report: &mut RecoveryReport,
) -> Result<()> {
    let len = segment.file().size()?;
    let capacity = options.index_capacity();
    let header = SEGMENT_HEADER_LEN as u64;
    let resumed = match (clean, checkpoint) {
        (true, _) => scan_from_last_entry(segment, len, capacity)?,
        (false, Some(checkpoint)) => scan_from_checkpoint(segment, checkpoint, len, capacity)?,
        (false, None) => None,
    };
    let (start, scan) = match resumed {
        Some(resumed) => resumed,
        None => (header, rebuild_indexes(segment, len, capacity, report)?),
    };
    let scanned_end = scan
        .stop
        .as_ref()
        .map_or(scan.end.end_pos, |(position, _)| *position);
    report.scanned_bytes += scanned_end.saturating_sub(start);
    if let Some((position, reason)) = scan.stop {
        // Below a checkpoint of this segment the bytes were synced: damage
        // there with whole frames after it is corruption of acknowledged
        // data, not a torn tail, and cutting it off would lose every record
        // after it.
        let this_segment = checkpoint.filter(|c| c.base_offset == segment.base());
        let durable_end = this_segment.map_or(0, |c| c.end_pos);
        if position < durable_end && frame_follows(segment, position, len)? {
            return Err(Error::corrupt(segment.path(), position, reason));
        }
        // Zeros from past the last sync to the end of the file are space
        // preallocated for appends that never came: cut, but not damage.
        // Nothing the log synced lies at or past the checkpoint's write
        // limit (the limit is synced first; anything there reached the
        // disk by writeback alone, unacknowledged), so the check stops
        // there.
        let written_end = this_segment
            .and_then(|c| c.write_limit())
            .map_or(len, |limit| limit.min(len).max(position));
        let unwritten = position >= durable_end
            && zeros_to_end(segment, position, written_end, &mut report.tail_checked_bytes)?;
        segment.file().set_len(position)?;
        segment.file().sync_all()?;
        if !unwritten {
            trace_event!(warn, file = %segment.path().display(), position, bytes = len - position, reason = %reason, "recovery truncated a torn or corrupt tail");
            report.truncations.push(Truncation {
                file: segment.path().to_path_buf(),
                position,
                bytes_removed: len - position,
                reason,
            });
        }
    } else if !clean {
        // After a process crash the tail may exist only in the page cache:
        // make it durable before readers see it, or a power loss could take
        // back records that were already served.
        segment.file().sync_data()?;
    }
    segment.set_limit(scan.end);
    segment.refresh_max_timestamp();
    Ok(())
}
