//! Per-key ordering in the group machine ([`DeliveryOrder::PerKey`]): which
//! record of a key may go out, and a key parked behind its dead letter
//! ([`OnDeadLetter::ParkKey`]).
//!
//! Invariants, per key, over its unsettled records (not Done):
//! - at most one is *active*: the only one that may be Available, Leased
//!   or DeadLettering; every other one is Blocked (waiting) or Parked;
//! - at most one is Parked: a dead-lettered record of a parking group,
//!   which holds the key until a redriven record of the key is acked (or
//!   dead-lettered in its place);
//! - without a Parked record, the active one is the lowest of the key, and
//!   a waiting one becomes active only when the active one is Done, lowest
//!   first; with one, only a redriven record becomes active;
//! - a key is known for every unsettled entry whose record has one, except
//!   between a replay and the first acquire (`learn_keys`), which leases
//!   nothing before it learned them.
//!
//! Volatile: all of it. A crash forgets keys, waiting and parking; the
//! replay learns keys again from the records, and a Parked record, whose
//! dead-letter intent is persisted without its `DeadLettered`, is claimed
//! again, found in the dead-letter topic and parked again. Its
//! `DeadLettered` is persisted only when the key resumes (owed by the
//! command that settled the redriven record, ahead of that command's own
//! event).

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::{DeadStep, GroupMachine, Source, Status};
use crate::error::Result;
use crate::format::StateEvent;
use crate::patterns::group_options::{DeliveryOrder, OnDeadLetter};

/// Hashes a key hash to itself: the map's keys are hashes already.
#[derive(Default)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// What a per-key group knows of its records' keys.
#[derive(Debug, Default)]
pub(super) struct Keys {
    queues: HashMap<u64, KeyQueue, BuildHasherDefault<KeyHashHasher>>,
    /// Whether the keys of the entries a replay restored are learned.
    learned: bool,
    /// Entries Blocked now.
    pub(super) blocked: usize,
}

/// One key's unsettled records.
#[derive(Debug, Default)]
struct KeyQueue {
    /// The record of the key that may go out (see the module doc).
    active: Option<u64>,
    /// The dead-lettered record the key is parked behind.
    parked: Option<u64>,
    /// Blocked records, in offset order.
    waiting: BTreeSet<u64>,
}

impl KeyQueue {
    fn is_empty(&self) -> bool {
        self.active.is_none() && self.parked.is_none() && self.waiting.is_empty()
    }
}

/// A record's key as a per-key group sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordKey {
    hash: u64,
    /// Put back by a redrive (a parking group resumes the key with it).
    redriven: bool,
}

impl GroupMachine {
    /// The key of the record `source` just found, if this group orders by
    /// key and the record has one.
    pub(super) fn key_of_found(&self, source: &impl Source) -> Option<RecordKey> {
        if self.ordering == DeliveryOrder::Unordered {
            return None;
        }
        let hash = source.key()?;
        let redriven = self.on_dead_letter == OnDeadLetter::ParkKey && source.redriven();
        Some(RecordKey { hash, redriven })
    }

    /// Whether `key` has an unsettled record.
    pub(super) fn key_busy(&self, key: RecordKey) -> bool {
        self.keys.queues.contains_key(&key.hash)
    }

    /// `offset`, a record of `key`, joins the key's unsettled records:
    /// active if it is the key's only one, else Blocked until its turn.
    pub(super) fn join_key(&mut self, offset: u64, key: RecordKey) {
        let Some(entry) = self.entries.get_mut(offset) else {
            return;
        };
        entry.key = Some(key.hash);
        entry.redriven = key.redriven;
        let queue = self.keys.queues.entry(key.hash).or_default();
        if queue.is_empty() {
            queue.active = Some(offset);
            return;
        }
        queue.waiting.insert(offset);
        if let Status::Available { not_before_ms } = entry.status {
            self.set_status(offset, Status::Blocked { not_before_ms });
        }
        self.promote(key.hash);
    }

    /// `offset`, of `key`, is Done: it leaves the key's records, and if it
    /// was the redriven record a parked key waited for, the parked record
    /// is settled (its `DeadLettered` owed).
    pub(super) fn leave_key(&mut self, offset: u64, key: u64) {
        let Some(queue) = self.keys.queues.get_mut(&key) else {
            return;
        };
        let mut resumed = None;
        if queue.active == Some(offset) {
            queue.active = None;
            resumed = queue.parked.take();
        } else if queue.parked == Some(offset) {
            queue.parked = None;
        } else {
            queue.waiting.remove(&offset);
        }
        if let Some(parked) = resumed {
            self.settle_parked(parked);
        }
        self.promote(key);
    }

    /// Parks the dead-lettered `offset`, of `key`: it stays, not Done, and
    /// holds the key until a redrive. A record the key was parked behind
    /// before is settled (its redrive failed for good in its place).
    pub(super) fn park(&mut self, offset: u64, key: u64) {
        self.set_status(offset, Status::Parked);
        let queue = self.keys.queues.entry(key).or_default();
        if queue.active == Some(offset) {
            queue.active = None;
        }
        if let Some(earlier) = queue.parked.replace(offset) {
            self.settle_parked(earlier);
        }
        self.promote(key);
    }

    /// Whether a dead letter of `offset` parks its key rather than
    /// settling the record.
    pub(super) fn parks(&self, offset: u64) -> Option<u64> {
        if self.on_dead_letter != OnDeadLetter::ParkKey {
            return None;
        }
        self.entries.get(offset)?.key
    }

    fn settle_parked(&mut self, parked: u64) {
        let event = StateEvent::DeadLettered(parked);
        self.apply(&event);
        self.owed.push(event);
    }

    /// Makes the key's next record active if none is: the lowest waiting
    /// one, or while the key is parked the lowest redriven one.
    fn promote(&mut self, key: u64) {
        let Some(queue) = self.keys.queues.get_mut(&key) else {
            return;
        };
        if queue.active.is_some() {
            return;
        }
        let next = match queue.parked {
            None => queue.waiting.first().copied(),
            Some(_) => (queue.waiting.iter())
                .find(|&&offset| self.entries.get(offset).is_some_and(|e| e.redriven))
                .copied(),
        };
        let Some(next) = next else {
            if queue.is_empty() {
                self.keys.queues.remove(&key);
            }
            return;
        };
        queue.waiting.remove(&next);
        queue.active = Some(next);
        if let Some(Status::Blocked { not_before_ms }) = self.entries.get(next).map(|e| e.status) {
            self.set_status(next, Status::Available { not_before_ms });
        }
    }

    /// A per-key group learns the keys of the unsettled entries a replay
    /// restored, once, before its first lease: first those with a
    /// dead-letter intent (each was its key's active record when it was
    /// claimed, and a parked one may be a redriven record above others of
    /// its key), then the rest in offset order.
    pub(super) fn learn_keys(&mut self, source: &mut impl Source) -> Result<()> {
        if self.ordering == DeliveryOrder::Unordered || self.keys.learned {
            return Ok(());
        }
        let mut unknown: Vec<(bool, u64)> = (self.entries.iter())
            .filter(|(_, e)| e.status != Status::Done && e.key.is_none())
            .map(|(offset, e)| (!matches!(e.dead, DeadStep::Intended { .. }), offset))
            .collect();
        unknown.sort_unstable();
        let unknown = unknown.into_iter().map(|(_, offset)| offset);
        for offset in unknown {
            if !source.holds(offset)? {
                continue;
            }
            let key = self.key_of_found(source);
            source.put_back();
            if let Some(key) = key {
                self.join_key(offset, key);
            }
        }
        self.keys.learned = true;
        Ok(())
    }

    /// Forgets every key (a snapshot replaces the state).
    pub(super) fn forget_keys(&mut self) {
        self.keys = Keys::default();
    }
}
