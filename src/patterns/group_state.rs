//! What a consumer group's state log says, for the topic (retention) and
//! the dump tool: queries over the state [`GroupMachine::replay`] rebuilds,
//! so they follow the same transition function as the live group.

use crate::format::StateEvent;
use crate::patterns::group_machine::GroupMachine;

/// The state `events` lead to. Nothing here draws on the rng (it serves
/// backoff only), so a fixed seed changes nothing.
fn replay(events: &[StateEvent]) -> GroupMachine {
    GroupMachine::replay(events, 0, fastrand::Rng::with_seed(0))
}

/// The low watermark a group's state log leads to.
pub(crate) fn recovered_low_watermark(events: &[StateEvent]) -> u64 {
    replay(events).low_watermark()
}

/// A group's persisted state, as the dump tool shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
pub(crate) fn unsettled_offsets(events: &[StateEvent]) -> std::collections::BTreeSet<u64> {
    replay(events)
        .unsettled_entries()
        .map(|(offset, ..)| offset)
        .collect()
}

/// Summarizes a group's state log events.
pub(crate) fn summarize_group(events: &[StateEvent]) -> GroupSummary {
    let machine = replay(events);
    let delivered = machine
        .unsettled_entries()
        .filter(|(_, attempts, _)| *attempts > 0);
    GroupSummary {
        low_watermark: machine.low_watermark(),
        next_offset: machine.next_offset(),
        unsettled: delivered.clone().count(),
        retried: delivered.filter(|(_, attempts, _)| *attempts > 1).count(),
        dead_letter_intents: machine
            .unsettled_entries()
            .filter(|(.., intended)| *intended)
            .count(),
    }
}

/// The committed offset a state log's events lead to (0 if none).
pub(crate) fn recovered_commit(events: &[StateEvent]) -> u64 {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            StateEvent::Committed(offset) => Some(*offset),
            _ => None,
        })
        .unwrap_or(0)
}
