//! Rebuilding a consumer group's state from its state log: a pure fold
//! over [`StateEvent`]s, used by the group at open, by the topic for
//! retention and by the dump tool.
//!
//! Events are idempotent and their fields only grow (attempts take the
//! maximum, `done` is never unset), so replaying a snapshot followed by
//! events that were persisted around it in any order gives the same state.

use std::collections::{BTreeMap, BTreeSet};

use crate::format::{EntryState, Failure, MAX_FAILURES_KEPT, StateEvent};

/// Appends a failure, keeping the most recent [`MAX_FAILURES_KEPT`].
pub(crate) fn push_failure(failures: &mut Vec<Failure>, failure: Failure) {
    if failures.len() == MAX_FAILURES_KEPT {
        failures.remove(0);
    }
    failures.push(failure);
}

/// Group state rebuilt from its events.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub(crate) next_offset: u64,
    pub(crate) entries: BTreeMap<u64, EntryState>,
    /// Delivered and neither settled nor released when the log ended.
    pub(crate) leased: BTreeSet<u64>,
    /// Dead-letter intents without an outcome: offset to DLQ end offset.
    pub(crate) intents: BTreeMap<u64, u64>,
}

impl Replay {
    pub(crate) fn new(events: &[StateEvent], start: u64) -> Replay {
        let mut replay = Replay {
            next_offset: start,
            ..Replay::default()
        };
        for event in events {
            replay.apply(event);
        }
        replay
    }

    fn entry(&mut self, offset: u64) -> &mut EntryState {
        self.entries.entry(offset).or_insert_with(|| EntryState {
            offset,
            attempts: 0,
            not_before_ms: 0,
            done: false,
            failures: Vec::new(),
        })
    }

    fn apply(&mut self, event: &StateEvent) {
        match event {
            StateEvent::Snapshot { next_offset, entries } => {
                self.next_offset = *next_offset;
                self.entries = entries.iter().map(|e| (e.offset, e.clone())).collect();
                self.leased.clear();
                self.intents.clear();
            }
            StateEvent::Delivered { offset, attempt, .. } => {
                // Deliveries persist out of order under concurrency: offsets
                // skipped here were taken but never handed out.
                for gap in self.next_offset..*offset {
                    self.entry(gap);
                }
                self.next_offset = self.next_offset.max(offset + 1);
                let entry = self.entry(*offset);
                entry.attempts = entry.attempts.max(*attempt);
                self.leased.insert(*offset);
            }
            StateEvent::Acked(offset) | StateEvent::DeadLettered(offset) => {
                self.entry(*offset).done = true;
                self.leased.remove(offset);
                self.intents.remove(offset);
            }
            StateEvent::Released {
                offset,
                not_before_ms,
                failure,
            } => {
                let entry = self.entry(*offset);
                entry.not_before_ms = *not_before_ms;
                push_failure(&mut entry.failures, failure.clone());
                self.leased.remove(offset);
            }
            StateEvent::DeadIntent {
                offset,
                dlq_end,
                failure,
            } => {
                let entry = self.entry(*offset);
                if entry.failures.last() != Some(failure) {
                    push_failure(&mut entry.failures, failure.clone());
                }
                // The intent settles the delivery: its failure is recorded.
                self.leased.remove(offset);
                self.intents.insert(*offset, *dlq_end);
            }
            StateEvent::Committed(_) => {}
        }
    }

    pub(crate) fn low_watermark(&self) -> u64 {
        self.entries
            .values()
            .find(|e| !e.done)
            .map_or(self.next_offset, |e| e.offset)
    }
}

/// The low watermark a group's state log leads to.
pub(crate) fn recovered_low_watermark(events: &[StateEvent]) -> u64 {
    Replay::new(events, 0).low_watermark()
}

/// A group's persisted state, as the dump tool shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// Lowest offset not acked or dead-lettered.
    pub low_watermark: u64,
    /// Next offset never delivered.
    pub next_offset: u64,
    /// Delivered and not settled when the state was last written (leased,
    /// or waiting for redelivery).
    pub unsettled: usize,
    /// Unsettled records delivered more than once.
    pub retried: usize,
    /// Dead-letter writes begun and not confirmed.
    pub dead_letter_intents: usize,
}

/// The offsets below the group's next offset that it has not settled
/// (acked or dead-lettered); every other offset below it is settled.
/// Snapshots keep no settled entry below the low watermark, so an offset
/// without an entry is settled. Only the dump tool asks.
#[cfg(feature = "internals")]
pub(crate) fn unsettled_offsets(events: &[StateEvent]) -> BTreeSet<u64> {
    let replay = Replay::new(events, 0);
    replay
        .entries
        .values()
        .filter(|e| !e.done)
        .map(|e| e.offset)
        .collect()
}

/// Summarizes a group's state log events.
pub(crate) fn summarize_group(events: &[StateEvent]) -> GroupSummary {
    let replay = Replay::new(events, 0);
    let unsettled = replay.entries.values().filter(|e| !e.done && e.attempts > 0);
    GroupSummary {
        low_watermark: replay.low_watermark(),
        next_offset: replay.next_offset,
        unsettled: unsettled.clone().count(),
        retried: unsettled.filter(|e| e.attempts > 1).count(),
        dead_letter_intents: replay.intents.len(),
    }
}
