//! A state log: events appended to a private [`Log`], replayed on open from
//! the last snapshot.
//!
//! Invariants: a snapshot event (a group `Snapshot`, or a subscription's
//! `Committed`, which is a snapshot by itself) makes every earlier event
//! irrelevant, so after one is durable the segments before it may go. The
//! log therefore holds at most one segment of history beyond the live
//! state plus the events since the last snapshot.

use std::cell::RefCell;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::StateEvent;
use crate::io::Storage;
use crate::log::{Block, Durability, Log, LogOptions, Position, Wait, ready};
use crate::record::Record;

/// Segment size of state logs. Compaction frees whole segments, so smaller
/// frees space earlier; but every segment roll syncs the sealed segment and
/// its indexes, creates three files and, once compaction deletes the old
/// ones, closes three, and at about 46 bytes of events per queue message
/// (an ack, a share of a prefetched run's delivery) 4 MiB rolls every
/// ~90,000 messages. 1 MiB rolled every ~22,000 and the rolls took a tenth
/// of a queue's receive and ack (64 KiB, every ~450, dominated it).
const STATE_SEGMENT_BYTES: u64 = 4 << 20;
/// The first reservation of a state log's segment, doubling from there: a
/// group that acks little reserves as little as with 1 MiB segments.
const STATE_FIRST_RESERVATION_BYTES: u64 = 256 << 10;
/// Events between snapshots, at least.
const MIN_EVENTS_BETWEEN_SNAPSHOTS: u64 = 512;

#[derive(Debug)]
pub(crate) struct StateLog {
    log: Log,
    since_snapshot: AtomicU64,
}

impl StateLog {
    /// Opens the state log in `dir`; returns it with the events from the
    /// last snapshot on (the snapshot first, if any).
    pub(crate) fn open(
        dir: &Path,
        durability: Durability,
        storage: Arc<dyn Storage>,
    ) -> Result<(StateLog, Vec<StateEvent>)> {
        let options = LogOptions::default()
            .durability(durability)
            .segment_bytes(STATE_SEGMENT_BYTES)
            .first_reservation_bytes(STATE_FIRST_RESERVATION_BYTES)
            .index_interval_bytes(4096)
            .storage(storage);
        let log = Log::open(dir, options)?;
        let mut events = Vec::new();
        let mut cursor = log.cursor(Position::Earliest)?;
        while let Some(record) = cursor.next()? {
            let event = StateEvent::decode(record.value()).map_err(|kind| Error::Corrupt {
                file: dir.to_path_buf(),
                position: record.offset(),
                kind,
            })?;
            if is_snapshot(&event) {
                events.clear();
            }
            events.push(event);
        }
        let since_snapshot = AtomicU64::new(events.len() as u64);
        Ok((StateLog { log, since_snapshot }, events))
    }

    /// Appends events durably (per the log's durability) in one batch.
    pub(crate) fn append(&self, events: &[StateEvent]) -> Result<()> {
        ready(self.append_in(events, Block))
    }

    /// [`StateLog::append`], waiting for durability as `wait` says (the
    /// events are written when this is called).
    #[inline]
    pub(crate) fn append_in<W: Wait>(
        &self,
        events: &[StateEvent],
        wait: W,
    ) -> impl Future<Output = Result<()>> + Send {
        let count = events.len() as u64;
        wait.after_write(&self.log, self.write_events(events), move |_| {
            self.since_snapshot.fetch_add(count, Ordering::Relaxed);
        })
    }

    /// True when enough events piled up since the last snapshot that one
    /// is worth writing, given `live` entries of state.
    pub(crate) fn wants_snapshot(&self, live: usize) -> bool {
        self.since_snapshot.load(Ordering::Relaxed) >= MIN_EVENTS_BETWEEN_SNAPSHOTS.max(2 * live as u64)
    }

    /// Writes `snapshot` (a snapshot event, then events that restate what
    /// it cannot hold) in one batch and drops the segments it made
    /// irrelevant.
    pub(crate) fn write_snapshot(&self, snapshot: &[StateEvent]) -> Result<()> {
        ready(self.write_snapshot_in(snapshot, Block))
    }

    /// [`StateLog::write_snapshot`], waiting for durability as `wait` says
    /// (the snapshot is written when this is called).
    #[inline]
    pub(crate) fn write_snapshot_in<W: Wait>(
        &self,
        snapshot: &[StateEvent],
        wait: W,
    ) -> impl Future<Output = Result<()>> + Send {
        debug_assert!(snapshot.first().is_some_and(is_snapshot));
        let count = snapshot.len() as u64;
        wait.after_write(&self.log, self.write_events(snapshot), move |offsets| {
            self.since_snapshot.store(count, Ordering::Relaxed);
            self.log.release_before(offsets.start);
        })
    }

    /// Writes `events` with one write, one record each (durable once
    /// [`Wait::after_write`] says so). They are encoded into one buffer of
    /// this thread's, kept across calls, so writing an event allocates
    /// nothing.
    fn write_events(&self, events: &[StateEvent]) -> Result<Range<u64>> {
        /// The largest encoding buffer a thread keeps between writes.
        const KEPT_BUFFER_BYTES: usize = 64 << 10;
        thread_local! {
            static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        ENCODED.with(|encoded| {
            // A write never writes state events itself, so the buffer is
            // free; should that change, a fresh one serves.
            let mut fresh = Vec::new();
            let mut borrowed = encoded.try_borrow_mut();
            let buffer = borrowed.as_deref_mut().unwrap_or(&mut fresh);
            buffer.clear();
            // Stamped with the coarse clock (see `crate::clock`): a state
            // write, once per ack, reads no precise time.
            let at_ms = self.log.clock().tick_ms();
            let written = match events {
                // The common case (one ack, one delivery): no vector of records.
                [event] => {
                    event.encode_into(buffer);
                    self.log
                        .write(std::slice::from_ref(&Record::new(buffer).timestamp(at_ms)))
                }
                _ => {
                    let mut ends = Vec::with_capacity(events.len());
                    for event in events {
                        event.encode_into(buffer);
                        ends.push(buffer.len());
                    }
                    let starts = std::iter::once(0).chain(ends.iter().copied());
                    let records: Vec<Record<'_>> = (starts.zip(&ends))
                        .map(|(start, &end)| Record::new(&buffer[start..end]).timestamp(at_ms))
                        .collect();
                    self.log.write(&records)
                }
            };
            // A thread keeps no more than a small buffer after a snapshot.
            if buffer.capacity() > KEPT_BUFFER_BYTES {
                *buffer = Vec::new();
            }
            written
        })
    }

    pub(crate) fn close(&self) -> Result<()> {
        self.log.close()
    }
}

/// True for the events that make every earlier one irrelevant.
pub(crate) fn is_snapshot(event: &StateEvent) -> bool {
    matches!(event, StateEvent::Snapshot { .. } | StateEvent::Committed(_))
}
