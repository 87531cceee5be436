//! Repairing a consumer's damaged state log, when the bus was opened with
//! [`RecoveryMode::MoveAsideDamagedState`].
//!
//! Rules:
//! - Only corruption is repaired: an I/O error fails the open and changes
//!   nothing.
//! - Nothing is deleted. The damaged state log directory `<name>/` is
//!   renamed, untouched, to the hidden sibling `.<name>.damaged-<unix ms>/`
//!   (hidden names are never consumer names, so nothing else reads it).
//! - The consumer restarts from the longest valid prefix of its state log
//!   (segments in order, frames checked, offsets dense, events decodable),
//!   from the last snapshot in that prefix. Without one, it restarts from
//!   the start of its topic (records are delivered again; none is skipped).
//! - The repaired log is built in `.<name>.repairing/` and synced before the
//!   damaged one is moved: a crash leaves either the damaged log in place
//!   (the repair runs again) or the repaired one under its temporary name,
//!   which [`finish_interrupted_repairs`] puts in place before the topic's
//!   consumers are read (when it opens) or one of them is opened.
//!
//! The names of these directories are the layout's ([`StateDir`]); this
//! module only acts on them, called through [`crate::state::BusLayout`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::wall_ms;
use crate::error::{CorruptKind, Error, Result};
use crate::format::{SEGMENT_HEADER_LEN, StateEvent, decode_segment_frame, decode_segment_header};
use crate::io::{Storage, read_exact_at};
use crate::log::{Durability, parse_segment_name};
use crate::state::ConsumerId;
use crate::state::StateLog;
use crate::state::layout::StateDir;
use crate::state::store::is_snapshot;

/// What opening a consumer (a durable subscription or a consumer group)
/// does when its state log is damaged. Publishing and the topic's other
/// consumers never depend on it: only the damaged consumer is affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Opening the damaged consumer fails with [`Error::Corrupt`] naming
    /// the file, and nothing is changed, so it can be inspected (the
    /// default). A torn tail left by a crash is still cut by the log's own
    /// recovery, as for every log.
    #[default]
    AbsoluteConsistency,
    /// Opening the damaged consumer moves its state log aside (never
    /// deleting it), restarts the consumer from the longest valid prefix of
    /// the log and reports what was lost in a [`StateRepair`].
    MoveAsideDamagedState,
}

/// A consumer state log repaired by [`RecoveryMode::MoveAsideDamagedState`]:
/// what was damaged, where it went and what the consumer lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateRepair {
    /// The consumer.
    pub consumer: ConsumerId,
    /// Its state log directory, now holding the state kept.
    pub state_dir: PathBuf,
    /// Where the damaged state log now is, byte for byte as found.
    pub moved_to: PathBuf,
    /// The file whose damage failed the open, where it now is (in
    /// `moved_to`, or `moved_to` itself when the damage was in an event's
    /// encoding).
    pub damaged_file: PathBuf,
    /// Byte position of the damage in `damaged_file`.
    pub damaged_position: u64,
    /// The check that failed.
    pub damage: CorruptKind,
    /// Where the valid prefix ends (segment file, in `moved_to`, and byte
    /// position), or `None` if every frame was valid and the damage was
    /// elsewhere (an index or checkpoint file).
    pub kept_until: Option<(PathBuf, u64)>,
    /// Bytes of state log events after the kept prefix: what was lost
    /// (zero-filled, never-written space not counted).
    pub bytes_lost: u64,
    /// Events kept from the valid prefix: its last snapshot and the events
    /// after it (without a snapshot there, the events are replayed on top
    /// of one starting at the topic's start offset).
    pub events_kept: usize,
    /// The consumer's position after the repair: the committed offset of a
    /// subscription, the low watermark of a group.
    pub restarted_from: u64,
}

/// The longest valid prefix of a state log.
#[derive(Debug, Default)]
struct Salvage {
    /// Events from the last snapshot of the prefix on.
    events: Vec<StateEvent>,
    /// Where the prefix ends, if before the end of the log.
    kept_until: Option<(PathBuf, u64)>,
    bytes_lost: u64,
}

/// A consumer whose state to repair, and what failed its open.
pub(crate) struct Damaged {
    pub consumer: ConsumerId,
    /// The [`Error::Corrupt`] that failed the open.
    pub error: Error,
    /// The snapshot it restarts from when no valid one survives.
    pub fallback: StateEvent,
    /// Its position given its events.
    pub position: fn(&[StateEvent]) -> u64,
}

/// Repairs the damaged state log in `state_dir` (see the module doc) and
/// opens it.
pub(super) fn repair(
    storage: &Arc<dyn Storage>,
    durability: Durability,
    state_dir: &StateDir,
    damaged: Damaged,
) -> Result<(StateLog, Vec<StateEvent>, StateRepair)> {
    let Error::Corrupt {
        file,
        position: damaged_position,
        kind,
    } = damaged.error
    else {
        return Err(damaged.error);
    };
    let dir = state_dir.path();
    let mut salvage = salvage(storage.as_ref(), dir)?;
    let events_kept = salvage.events.len();
    if !salvage.events.first().is_some_and(is_snapshot) {
        salvage.events.insert(0, damaged.fallback);
    }
    let repairing = state_dir.repairing();
    build(storage, &repairing, &salvage.events)?;
    let moved_to = state_dir.damaged(wall_ms());
    storage.rename(dir, &moved_to)?;
    storage.rename(&repairing, dir)?;
    storage.sync_dir(state_dir.parent())?;
    let (state, events) = StateLog::open(dir, durability, storage.clone())?;
    let now_in_moved = |path: PathBuf| match path.strip_prefix(dir) {
        Ok(rest) => moved_to.join(rest),
        Err(_) => path,
    };
    let report = StateRepair {
        consumer: damaged.consumer,
        state_dir: dir.to_path_buf(),
        damaged_file: now_in_moved(file),
        damaged_position,
        damage: kind,
        kept_until: salvage.kept_until.map(|(file, end)| (now_in_moved(file), end)),
        moved_to: moved_to.clone(),
        bytes_lost: salvage.bytes_lost,
        events_kept,
        restarted_from: (damaged.position)(&events),
    };
    trace_event!(error, consumer = ?report.consumer, moved_to = %report.moved_to.display(), bytes_lost = report.bytes_lost, restarted_from = report.restarted_from, "damaged consumer state moved aside and repaired");
    Ok((state, events, report))
}

/// Puts in place the repaired state log of each of `interrupted`, whose
/// repair was interrupted after the damaged log was moved aside.
pub(super) fn finish_interrupted_repairs(storage: &dyn Storage, interrupted: &[StateDir]) -> Result<()> {
    for state_dir in interrupted {
        storage.rename(&state_dir.repairing(), state_dir.path())?;
        storage.sync_dir(state_dir.parent())?;
    }
    Ok(())
}

/// Writes `events` (a snapshot first) as a fresh, synced state log in
/// `dir`, replacing what an interrupted earlier repair left there.
fn build(storage: &Arc<dyn Storage>, dir: &Path, events: &[StateEvent]) -> Result<()> {
    if let Ok(stale) = storage.list(dir) {
        for file in stale {
            storage.remove(&file)?;
        }
    }
    let (state, _) = StateLog::open(dir, Durability::Always, storage.clone())?;
    if let Some((snapshot, rest)) = events.split_first() {
        state.write_snapshot(std::slice::from_ref(snapshot))?;
        if !rest.is_empty() {
            state.append(rest)?;
        }
    }
    state.close()
}

/// Reads the longest valid prefix of the state log in `dir`.
fn salvage(storage: &dyn Storage, dir: &Path) -> Result<Salvage> {
    let mut segments: Vec<(u64, PathBuf)> = storage
        .list(dir)?
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            match parse_segment_name(name)? {
                (base, "log") => Some((base, path.clone())),
                _ => None,
            }
        })
        .collect();
    segments.sort();
    let mut salvage = Salvage::default();
    let mut next_offset = segments.first().map_or(0, |(base, _)| *base);
    for (base, path) in &segments {
        let bytes = read_all(storage, path)?;
        if salvage.kept_until.is_some() {
            salvage.bytes_lost += written_len(&bytes) as u64;
            continue;
        }
        let end = match *base == next_offset {
            true => valid_prefix(&bytes, *base, &mut next_offset, &mut salvage.events),
            false => 0,
        };
        if end < written_len(&bytes) {
            salvage.kept_until = Some((path.clone(), end as u64));
            salvage.bytes_lost += (written_len(&bytes) - end) as u64;
        }
    }
    Ok(salvage)
}

/// Decodes the frames of one segment from `next_offset` on, pushing their
/// events (restarting at each snapshot); returns where the valid frames end.
fn valid_prefix(bytes: &[u8], base: u64, next_offset: &mut u64, events: &mut Vec<StateEvent>) -> usize {
    let header = bytes.get(..SEGMENT_HEADER_LEN).map(decode_segment_header);
    if !matches!(header, Some(Ok(h)) if h.base_offset == base) {
        return 0;
    }
    let mut position = SEGMENT_HEADER_LEN;
    while let Some((frame_events, len)) = decode_events(&bytes[position..], *next_offset) {
        for event in frame_events {
            if is_snapshot(&event) {
                events.clear();
            }
            events.push(event);
            *next_offset += 1;
        }
        position += len;
    }
    position
}

/// The events of the frame at the start of `bytes`, whose first record
/// must have offset `offset`, and the frame's length; `None` if there is
/// no such valid frame or one of its events does not decode (a batch's
/// events are kept or lost together, as it was written).
fn decode_events(bytes: &[u8], offset: u64) -> Option<(Vec<StateEvent>, usize)> {
    let frame = decode_segment_frame(bytes).ok()?;
    if frame.offset() != offset {
        return None;
    }
    let bytes = bytes.get(..frame.size())?;
    let events = frame
        .records(bytes)
        .map(|record| StateEvent::decode(bytes.get(record.value)?).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((events, frame.size()))
}

/// Length of `bytes` without the zero fill after the last written byte.
fn written_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1)
}

fn read_all(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let file = storage.open(path, false)?;
    let mut bytes = vec![0; usize::try_from(file.size()?).unwrap_or(usize::MAX)];
    read_exact_at(file.as_ref(), &mut bytes, 0)?;
    Ok(bytes)
}
