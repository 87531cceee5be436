//! The consumer group's delivery state machine, pure: no I/O, no locks, no
//! clock (every command takes `now`, ms since the Unix epoch) and no
//! randomness but its own rng, given to it. Commands change the state and
//! return the [`StateEvent`]s that the driver (`src/embedded/group.rs`) must
//! persist; [`GroupMachine::apply`] is the one transition function for
//! those events, run by the commands themselves and by the replay of a
//! state log, so the live and the replayed state cannot diverge.
//!
//! Invariants:
//! - every offset from the low watermark up to `next_offset` either has an
//!   entry or was passed without one (removed by retention before it was
//!   read); an offset below `next_offset` without an entry is settled;
//! - an entry is Available (in `ready`, by due time), Leased (in `leases`,
//!   by lease end, to exactly one token), Blocked (a per-key group's
//!   record behind an unsettled earlier one of its key: in neither set),
//!   DeadLettering (claimed by one driver call writing its dead letter: in
//!   neither set), Parked (dead-lettered, holding its key until a redrive:
//!   in neither set) or Done;
//! - in a per-key group ([`DeliveryOrder::PerKey`]) no two records of a
//!   key are ever leased together, and a record is leased only in its
//!   key's turn (`group_machine/keys.rs` states the rules: offset order,
//!   and behind a Parked record only redriven records); the keys of
//!   replayed entries are learned from the source before the first lease,
//!   and [`MAX_BLOCKED`] Blocked entries stop reading ahead;
//! - a lease is granted only by applying a `Delivered` event, which the
//!   command returns for the driver to persist before the hand-out; attempts
//!   only grow, except when [`GroupMachine::unlease`] takes back a lease
//!   that was never handed out (its `Delivered` was not persisted);
//! - a record whose attempts reached `max_attempts` (or that was rejected,
//!   or whose dead letter is under way) is never leased again: when picked
//!   it is claimed for dead-lettering instead;
//! - Done is final: no event or command makes a Done entry anything else;
//! - the low watermark, the lowest offset not Done, only grows (live).
//!
//! Volatile (not persisted, and what a crash does instead): lease tokens,
//! lease ends and extensions, lease expiry (a crash releases every lease
//! through [`GroupMachine::recover`]), failures noted by an expiry (kept by
//! the next snapshot), a failed dead letter's "due" mark (a rejected record
//! whose intent was not persisted is an ordinary record after a crash, as
//! docs/SEMANTICS.md says) and records passed because retention removed
//! them (replay brings them back; the driver passes them again), and a
//! scheduled record's wait: a record whose source names a time before which
//! it may not be handed out is kept Available until then, without an event
//! and without counting an attempt; after a crash it comes back as a new
//! record, or as an Available gap below a later `Delivered`, and the next
//! pick keeps it back again. Keys and Blocked: a crash forgets them, and
//! the replayed state learns them again from the records (a Blocked
//! record was never leased, so it has no event, or only a gap entry). The
//! failure of a nack or reject that dead-letters is persisted by the
//! dead-letter intent.
//!
//! Transitions (state × command → state, events to persist):
//!
//! | state | command | next state | events |
//! | --- | --- | --- | --- |
//! | (new offset) | acquire | Leased | `Delivered` |
//! | Available, due, attempts < max, not dead | acquire | Leased | `Delivered` |
//! | Available, due, attempts ≥ max or dead step set | acquire | DeadLettering (claim) | — |
//! | Available, source lost it | acquire | Done | — |
//! | (new offset) or Available, due, scheduled later by its record | acquire | Available from that time | — |
//! | (new offset), per-key, its key has an unsettled record | acquire | Blocked | — |
//! | Blocked, the last earlier record of its key becomes Done | (any) | Available | — |
//! | DeadLettering, keyed, the group parks keys | dead-letter done | Parked | — |
//! | Parked, a redriven record of its key becomes Done | (any) | Done | `DeadLettered` (owed) |
//! | Leased, lease ended | acquire / expire | Available after backoff | — |
//! | Leased (own token) or Available (same attempt, dead step unset) | ack | Done | `Acked` |
//! | same | nack, attempt < max | Available after delay or backoff | `Released` |
//! | same | nack, attempt ≥ max / reject | DeadLettering (claim) | — |
//! | same | extend | Leased until the new end | — |
//! | anything else | ack / nack / reject / extend | unchanged | `LeaseExpired` |
//! | Leased, never handed out | unlease | Available now, attempt taken back | — |
//! | DeadLettering, no intent | intend | DeadLettering, intended | `DeadIntent` |
//! | DeadLettering | dead-letter done | Done | `DeadLettered` |
//! | DeadLettering | dead-letter failed | Available after backoff, due to be dead-lettered | — |
//! | Leased (after replay) | recover | Available after backoff | `Released` |
//! | anything, no record DeadLettering | seek | no entry, new from the offset sought | `Snapshot` (no entries) |
//!
//! `apply` folds events with the same rules, idempotently and only
//! growing: `Delivered` admits its offset (and any skipped below it) and
//! leases it unless Done; `Released` makes it Available; `DeadIntent`
//! records the intent and ends a lease; `Acked`/`DeadLettered` make it
//! Done; `Snapshot` replaces everything. An event about an offset below
//! `next_offset` without an entry (settled and pruned) changes nothing.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::format::{EntryState, Failure, MAX_DELIVERED_RUN, MAX_FAILURES_KEPT, StateEvent};
use crate::patterns::group_options::{DeliveryOrder, OnDeadLetter};
use crate::patterns::retry::RetryPolicy;
use deadlines::Deadlines;
use entries::Entries;
use keys::Keys;

/// Most records a per-key group keeps admitted behind busy keys: past that
/// it reads no further ahead until some of them are handed out (as Kafka's
/// share groups bound the records they lock), so one busy key with a long
/// backlog costs bounded memory.
pub(crate) const MAX_BLOCKED: usize = 10_000;

/// Appends `event` (a `Delivered`) to `events`, into the run the last
/// event from `first` on is if it extends it: one receive that leases
/// consecutive new records persists one event.
fn push_delivered(events: &mut Vec<StateEvent>, first: usize, event: StateEvent) {
    let StateEvent::Delivered {
        offset,
        attempt,
        lease_until_ms,
    } = event
    else {
        return events.push(event);
    };
    let last = events.len().checked_sub(1).filter(|&last| last >= first);
    let Some(last) = last.map(|last| &mut events[last]) else {
        return events.push(event);
    };
    // Extended in place: neither event holds anything to drop.
    match last {
        StateEvent::DeliveredRun {
            offset: start,
            count,
            attempt: a,
            lease_until_ms: until,
        } if (*a, *until) == (attempt, lease_until_ms)
            && start.checked_add(u64::from(*count)) == Some(offset)
            && *count < MAX_DELIVERED_RUN =>
        {
            *count += 1
        }
        &mut StateEvent::Delivered {
            offset: previous,
            attempt: a,
            lease_until_ms: until,
        } if (a, until) == (attempt, lease_until_ms) && previous.checked_add(1) == Some(offset) => {
            *last = StateEvent::DeliveredRun {
                offset: previous,
                count: 2,
                attempt,
                lease_until_ms,
            }
        }
        _ => events.push(event),
    }
}

/// Appends a failure, keeping the most recent [`MAX_FAILURES_KEPT`].
pub(crate) fn push_failure(failures: &mut Vec<Failure>, failure: Failure) {
    if failures.len() == MAX_FAILURES_KEPT {
        failures.remove(0);
    }
    failures.push(failure);
}

/// The group's options as the machine needs them, per command (they may
/// change while the group is open).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Lease length, ms.
    pub lease_ms: i64,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
}

/// Where the machine learns of records: the topic, as the driver sees it.
pub(crate) trait Source {
    /// The next record never admitted, if the topic has one.
    fn next_new(&mut self) -> Result<Option<u64>>;
    /// Whether the topic still holds `offset` (retention may have removed it).
    fn holds(&mut self, offset: u64) -> Result<bool>;
    /// The time before which the record that `next_new` or `holds` just
    /// found may not be handed out, if it names one.
    fn not_before(&self) -> Option<i64>;
    /// Forgets the record `next_new` or `holds` just found: it is not
    /// leased now.
    fn put_back(&mut self);
    /// A hash of the key of the record `next_new` or `holds` just found,
    /// if it has a key (asked only of a per-key group).
    fn key(&self) -> Option<u64>;
    /// Whether the record `next_new` or `holds` just found was put back by
    /// a redrive (asked only of a group that parks keys).
    fn redriven(&self) -> bool;
}

/// A record leased to a delivery: which record, which attempt, and the
/// token that tells this delivery from later ones of the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub offset: u64,
    pub attempt: u32,
    pub token: u64,
}

/// A record claimed for dead-lettering by one driver call, which must end
/// the claim with `dead_letter_done` or `dead_letter_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    pub offset: u64,
    /// The dead-letter topic's end offset an earlier try recorded in a
    /// persisted intent: the dead letter may be there already.
    pub intended: Option<u64>,
}

/// What [`GroupMachine::acquire`] leased, over one or more calls (a
/// driver dead-letters the record a call stopped at and calls again).
#[derive(Debug, Default)]
pub(crate) struct Acquired {
    /// Leased, in hand-out order; their `Delivered` events are in `events`.
    pub leases: Vec<Lease>,
    /// To persist before any lease is handed out.
    pub events: Vec<StateEvent>,
    /// Records settled because the source no longer holds them.
    pub passed: bool,
}

/// A record `acquire` considers next.
enum Candidate {
    /// Never admitted: the source's next record.
    New(u64),
    /// Available and due.
    Due(u64),
}

/// What a nack led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Nacked {
    /// Available again later; the event is to persist.
    Released(StateEvent),
    /// Out of attempts: to dead-letter.
    DeadLetter(Claim),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Available {
        not_before_ms: i64,
    },
    /// Available, but not its key's turn yet (a per-key group only, see
    /// `keys.rs`).
    Blocked {
        not_before_ms: i64,
    },
    /// In the dead-letter topic, holding its key until a redrive (a group
    /// that parks keys only): not settled, never leased again.
    Parked,
    Leased {
        token: u64,
        until_ms: i64,
    },
    DeadLettering,
    Done,
}

/// How far a record got on its way to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadStep {
    /// Not on its way.
    No,
    /// A dead letter failed before its intent was persisted.
    Due,
    /// Its intent is persisted with the dead-letter topic's end offset then.
    Intended { dlq_end: u64 },
}

/// One record's delivery state: the only representation of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    attempts: u32,
    status: Status,
    failures: Vec<Failure>,
    dead: DeadStep,
    /// The hash of its record's key, once a per-key group learned it.
    key: Option<u64>,
    /// Its record was put back by a redrive (learned with the key).
    redriven: bool,
}

impl Entry {
    fn new(not_before_ms: i64) -> Entry {
        Entry {
            attempts: 0,
            status: Status::Available { not_before_ms },
            failures: Vec::new(),
            dead: DeadStep::No,
            key: None,
            redriven: false,
        }
    }
}

/// A consumer group's delivery state (see the module doc).
#[derive(Debug)]
pub(crate) struct GroupMachine {
    next_offset: u64,
    entries: Entries<Entry>,
    ready: BTreeSet<(i64, u64)>,
    leases: Deadlines,
    next_token: u64,
    rng: fastrand::Rng,
    ordering: DeliveryOrder,
    on_dead_letter: OnDeadLetter,
    keys: Keys,
    /// Events that settled records as a side effect of a command, to
    /// persist ahead of its own (see `keys.rs`).
    owed: Vec<StateEvent>,
}

fn failure(at_ms: i64, reason: &str) -> Failure {
    Failure {
        at_ms,
        reason: reason.to_owned(),
    }
}

impl GroupMachine {
    /// A group that has delivered nothing and starts at `start`.
    pub(crate) fn new(start: u64, rng: fastrand::Rng) -> GroupMachine {
        GroupMachine {
            next_offset: start,
            entries: Entries::default(),
            ready: BTreeSet::new(),
            leases: Deadlines::default(),
            next_token: 1,
            rng,
            ordering: DeliveryOrder::Unordered,
            on_dead_letter: OnDeadLetter::Continue,
            keys: Keys::default(),
            owed: Vec::new(),
        }
    }

    /// The same machine, handing out records in `ordering` and, per key,
    /// doing `on_dead_letter` after a dead letter; set before the first
    /// acquire.
    pub(crate) fn ordered(mut self, ordering: DeliveryOrder, on_dead_letter: OnDeadLetter) -> GroupMachine {
        self.ordering = ordering;
        self.on_dead_letter = on_dead_letter;
        self
    }

    /// The events earlier commands settled records with as a side effect:
    /// the driver persists them ahead of the event of the command it runs.
    pub(crate) fn take_owed(&mut self) -> Vec<StateEvent> {
        std::mem::take(&mut self.owed)
    }

    /// The state `events` (a state log from its last snapshot) lead to,
    /// for a group that started at `start`. Leases open at the end are
    /// still Leased: [`GroupMachine::recover`] releases them.
    pub(crate) fn replay(events: &[StateEvent], start: u64, rng: fastrand::Rng) -> GroupMachine {
        let mut machine = GroupMachine::new(start, rng);
        for event in events {
            machine.apply(event);
        }
        machine
    }

    /// The transition function of persisted events (see the module doc).
    pub(crate) fn apply(&mut self, event: &StateEvent) {
        match event {
            StateEvent::Snapshot { next_offset, entries } => self.restore(*next_offset, entries),
            StateEvent::Delivered {
                offset,
                attempt,
                lease_until_ms,
            } => self.delivered(*offset, *attempt, *lease_until_ms),
            StateEvent::DeliveredRun {
                offset,
                count,
                attempt,
                lease_until_ms,
            } => {
                for offset in *offset..offset.saturating_add(u64::from(*count)) {
                    self.delivered(offset, *attempt, *lease_until_ms);
                }
            }
            StateEvent::Released {
                offset,
                not_before_ms,
                failure,
            } => {
                if let Some(entry) = self.unsettled(*offset) {
                    push_failure(&mut entry.failures, failure.clone());
                    self.schedule(*offset, *not_before_ms);
                }
            }
            StateEvent::DeadIntent {
                offset,
                dlq_end,
                failure,
            } => self.intended(*offset, *dlq_end, failure),
            StateEvent::Acked(offset) | StateEvent::DeadLettered(offset) => {
                self.set_status(*offset, Status::Done)
            }
            StateEvent::Committed(_) => {}
        }
    }

    fn restore(&mut self, next_offset: u64, entries: &[EntryState]) {
        self.next_offset = next_offset;
        self.entries.clear();
        self.ready.clear();
        self.leases.clear();
        self.forget_keys();
        for saved in entries {
            let mut entry = Entry::new(saved.not_before_ms);
            entry.attempts = saved.attempts;
            entry.failures = saved.failures.clone();
            self.entries.insert(saved.offset, entry);
            match saved.done {
                true => self.set_status(saved.offset, Status::Done),
                false => self.schedule(saved.offset, saved.not_before_ms),
            }
        }
    }

    fn delivered(&mut self, offset: u64, attempt: u32, until_ms: i64) {
        // Deliveries persist out of order under concurrency: offsets
        // skipped here were taken but never handed out.
        for gap in self.next_offset..offset {
            self.entries.insert(gap, Entry::new(0));
            self.ready.insert((0, gap));
        }
        let token = self.next_token;
        if offset >= self.next_offset {
            // Admitted by this event: leased at once.
            self.next_offset = offset + 1;
            self.next_token += 1;
            let status = Status::Leased { token, until_ms };
            self.entries.insert(
                offset,
                Entry {
                    attempts: attempt,
                    status,
                    ..Entry::new(0)
                },
            );
            self.leases.insert(until_ms, offset);
            return;
        }
        let Some(entry) = self.unsettled(offset) else {
            return;
        };
        entry.attempts = entry.attempts.max(attempt);
        self.next_token += 1;
        self.set_status(offset, Status::Leased { token, until_ms });
    }

    fn intended(&mut self, offset: u64, dlq_end: u64, failure: &Failure) {
        let Some(entry) = self.unsettled(offset) else {
            return;
        };
        if entry.failures.last() != Some(failure) {
            push_failure(&mut entry.failures, failure.clone());
        }
        entry.dead = DeadStep::Intended { dlq_end };
        // The intent settles a delivery open at replay: it is picked (and
        // dead-lettered) at once.
        if matches!(entry.status, Status::Leased { .. }) {
            self.schedule(offset, 0);
        }
    }

    /// The entry of `offset` unless it is Done or gone.
    fn unsettled(&mut self, offset: u64) -> Option<&mut Entry> {
        self.entries.get_mut(offset).filter(|e| e.status != Status::Done)
    }

    /// Sets the status of `offset`, keeping `ready` and `leases` in step.
    fn set_status(&mut self, offset: u64, status: Status) {
        let Some(entry) = self.entries.get_mut(offset) else {
            return;
        };
        match entry.status {
            Status::Available { not_before_ms } => self.ready.remove(&(not_before_ms, offset)),
            Status::Leased { until_ms, .. } => {
                self.leases.remove(until_ms, offset);
                false
            }
            Status::Blocked { .. } => {
                self.keys.blocked -= 1;
                false
            }
            Status::DeadLettering | Status::Parked | Status::Done => false,
        };
        match status {
            Status::Available { not_before_ms } => self.ready.insert((not_before_ms, offset)),
            Status::Leased { until_ms, .. } => {
                self.leases.insert(until_ms, offset);
                false
            }
            Status::Blocked { .. } => {
                self.keys.blocked += 1;
                false
            }
            Status::DeadLettering | Status::Parked | Status::Done => false,
        };
        entry.status = status;
        if let (Status::Done, Some(key)) = (status, entry.key) {
            self.leave_key(offset, key);
        }
    }

    fn schedule(&mut self, offset: u64, not_before_ms: i64) {
        self.set_status(offset, Status::Available { not_before_ms });
    }

    fn backoff_ms(&mut self, rules: &Rules, failures: u32) -> i64 {
        let delay = rules.retry.backoff.delay(failures.max(1), &mut self.rng);
        i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
    }

    /// Leases records into `acquired` until it holds `max`: due
    /// redeliveries first, then new ones from `source`. Stops at a record
    /// to dead-letter, claiming and returning it; passes (settles) records
    /// `source` no longer holds. On an error from `source` nothing this
    /// call leased stays leased or in `acquired`.
    pub(crate) fn acquire(
        &mut self,
        now: i64,
        max: usize,
        rules: &Rules,
        source: &mut impl Source,
        acquired: &mut Acquired,
    ) -> Result<Option<Claim>> {
        self.expire(now, rules);
        self.learn_keys(source)?;
        let first = acquired.leases.len();
        let first_event = acquired.events.len();
        while acquired.leases.len() < max {
            let mut new_key = None;
            let (offset, attempts) = match self.candidate(now, source) {
                Ok(Some(Candidate::New(offset))) => {
                    new_key = self.key_of_found(source);
                    if let Some(key) = new_key.filter(|&key| self.key_busy(key)) {
                        source.put_back();
                        self.admit(offset, Status::Available { not_before_ms: 0 });
                        self.join_key(offset, key);
                        continue;
                    }
                    (offset, 0)
                }
                Ok(Some(Candidate::Due(offset))) => {
                    let Some(entry) = self.entries.get(offset) else {
                        break;
                    };
                    let attempts = entry.attempts;
                    if entry.dead != DeadStep::No || attempts >= rules.retry.max_attempts {
                        return Ok(Some(self.claim(offset)));
                    }
                    match source.holds(offset) {
                        Ok(true) => (offset, attempts),
                        Ok(false) => {
                            self.set_status(offset, Status::Done);
                            acquired.passed = true;
                            continue;
                        }
                        Err(e) => {
                            self.schedule(offset, now);
                            return Err(self.abandon(acquired, (first, first_event), now, e));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(self.abandon(acquired, (first, first_event), now, e)),
            };
            if let Some(not_before_ms) = source.not_before().filter(|&at| at > now) {
                source.put_back();
                self.admit(offset, Status::Available { not_before_ms });
                if let Some(key) = new_key {
                    self.join_key(offset, key);
                }
                continue;
            }
            let event = StateEvent::Delivered {
                offset,
                attempt: attempts + 1,
                lease_until_ms: now.saturating_add(rules.lease_ms),
            };
            self.apply(&event);
            if let Some(key) = new_key {
                self.join_key(offset, key);
            }
            acquired.leases.push(Lease {
                offset,
                attempt: attempts + 1,
                token: self.next_token - 1,
            });
            push_delivered(&mut acquired.events, first_event, event);
        }
        acquired.events.append(&mut self.owed);
        Ok(None)
    }

    /// Takes back what the failed acquire that started with `first`
    /// leases and `first_event` events in `acquired` leased: its events
    /// are its leases' (owed ones are added only when it succeeds).
    fn abandon(
        &mut self,
        acquired: &mut Acquired,
        (first, first_event): (usize, usize),
        now: i64,
        error: Error,
    ) -> Error {
        self.unlease(&acquired.leases[first..], now);
        acquired.events.truncate(first_event);
        acquired.leases.truncate(first);
        error
    }

    /// The next record to consider: a due redelivery, else a new record
    /// (admitted when `acquire` leases it).
    fn candidate(&mut self, now: i64, source: &mut impl Source) -> Result<Option<Candidate>> {
        if let Some(&(not_before_ms, offset)) = self.ready.first()
            && not_before_ms <= now
        {
            return Ok(Some(Candidate::Due(offset)));
        }
        if self.keys.blocked >= MAX_BLOCKED {
            return Ok(None);
        }
        let Some(offset) = source.next_new()? else {
            return Ok(None);
        };
        match offset < self.next_offset {
            // The topic is behind the state (a power loss under a lax
            // durability took records the state had seen): its new records
            // reuse those offsets and start afresh.
            true => self.readmit(offset, now),
            // Offsets the source skipped (removed by retention) are passed.
            false => self.next_offset = offset,
        }
        Ok(Some(Candidate::New(offset)))
    }

    /// Keeps `offset` from going out now, `status` saying until when:
    /// Available at the time its record schedules it for, or Blocked
    /// behind its key. Admitted if new; no attempt counted, no event (see
    /// the module doc).
    fn admit(&mut self, offset: u64, status: Status) {
        self.next_offset = self.next_offset.max(offset + 1);
        if self.entries.get(offset).is_none() {
            self.entries.insert(offset, Entry::new(0));
        }
        self.set_status(offset, status);
    }

    /// Forgets what the state held about `offset` and admits it as a new
    /// record, Available (not in `ready`: `acquire` leases it next).
    fn readmit(&mut self, offset: u64, now: i64) {
        self.set_status(offset, Status::Done);
        self.entries.insert(offset, Entry::new(now));
    }

    fn claim(&mut self, offset: u64) -> Claim {
        self.set_status(offset, Status::DeadLettering);
        let intended = match self.entries.get(offset).map(|e| e.dead) {
            Some(DeadStep::Intended { dlq_end }) => Some(dlq_end),
            _ => None,
        };
        Claim { offset, intended }
    }

    /// Releases every lease that ended by `now` (volatile: not persisted).
    pub(crate) fn expire(&mut self, now: i64, rules: &Rules) {
        while let Some((until_ms, offset)) = self.leases.first()
            && until_ms <= now
        {
            let attempts = self.entries.get(offset).map_or(0, |e| e.attempts);
            trace_event!(
                info,
                offset,
                attempts,
                "lease expired; record will be redelivered"
            );
            let not_before_ms = now.saturating_add(self.backoff_ms(rules, attempts));
            if let Some(entry) = self.entries.get_mut(offset) {
                push_failure(&mut entry.failures, failure(now, "lease expired"));
            }
            self.schedule(offset, not_before_ms);
        }
    }

    /// Takes back leases whose `Delivered` was not persisted (so they were
    /// never handed out): the records are available now, their attempts
    /// as before. A lease that ended and went elsewhere meanwhile is left.
    pub(crate) fn unlease(&mut self, leases: &[Lease], now: i64) {
        for lease in leases {
            let Some(entry) = self.entries.get_mut(lease.offset) else {
                continue;
            };
            if matches!(entry.status, Status::Leased { token, .. } if token == lease.token) {
                entry.attempts = lease.attempt - 1;
                self.schedule(lease.offset, now);
            }
        }
    }

    /// [`Error::LeaseExpired`] unless `lease` still owns its record:
    /// leased to its token, or released by lease expiry and neither handed
    /// out since nor on its way to the dead-letter topic.
    fn owns(&self, lease: &Lease) -> Result<()> {
        let owned = match self.entries.get(lease.offset) {
            Some(Entry {
                status: Status::Leased { token, .. },
                ..
            }) => *token == lease.token,
            Some(Entry {
                status: Status::Available { .. },
                attempts,
                dead,
                ..
            }) => *attempts == lease.attempt && *dead == DeadStep::No,
            _ => false,
        };
        match owned {
            true => Ok(()),
            false => Err(Error::LeaseExpired { offset: lease.offset }),
        }
    }

    /// When `lease`'s lease ends, if its record is still leased to it.
    pub(crate) fn lease_end(&self, lease: &Lease) -> Option<i64> {
        match self.entries.get(lease.offset)?.status {
            Status::Leased { token, until_ms } if token == lease.token => Some(until_ms),
            _ => None,
        }
    }

    /// Completes the delivery `lease`.
    pub(crate) fn ack(&mut self, lease: &Lease) -> Result<StateEvent> {
        self.owns(lease)?;
        let event = StateEvent::Acked(lease.offset);
        self.apply(&event);
        Ok(event)
    }

    /// Fails the delivery: available again after `delay_ms` (else the
    /// backoff), or claimed for dead-lettering once attempts are exhausted.
    pub(crate) fn nack(
        &mut self,
        lease: &Lease,
        reason: &str,
        delay_ms: Option<i64>,
        now: i64,
        rules: &Rules,
    ) -> Result<Nacked> {
        self.owns(lease)?;
        if lease.attempt >= rules.retry.max_attempts {
            return Ok(Nacked::DeadLetter(self.fail_to_dead_letter(
                lease.offset,
                reason,
                now,
            )));
        }
        let delay_ms = match delay_ms {
            Some(delay_ms) => delay_ms,
            None => self.backoff_ms(rules, lease.attempt),
        };
        let event = StateEvent::Released {
            offset: lease.offset,
            not_before_ms: now.saturating_add(delay_ms),
            failure: failure(now, reason),
        };
        self.apply(&event);
        Ok(Nacked::Released(event))
    }

    /// Fails the delivery and claims the record for dead-lettering.
    pub(crate) fn reject(&mut self, lease: &Lease, reason: &str, now: i64) -> Result<Claim> {
        self.owns(lease)?;
        Ok(self.fail_to_dead_letter(lease.offset, reason, now))
    }

    /// Notes the failure (its intent will persist it) and claims the record.
    fn fail_to_dead_letter(&mut self, offset: u64, reason: &str, now: i64) -> Claim {
        if let Some(entry) = self.entries.get_mut(offset) {
            push_failure(&mut entry.failures, failure(now, reason));
        }
        self.claim(offset)
    }

    /// Moves the end of the delivery's lease to `until_ms`.
    pub(crate) fn extend(&mut self, lease: &Lease, until_ms: i64) -> Result<()> {
        self.owns(lease)?;
        let token = lease.token;
        self.set_status(lease.offset, Status::Leased { token, until_ms });
        Ok(())
    }

    /// The intent to write the claimed record's dead letter to a
    /// dead-letter topic that ends at `dlq_end`, with the failure that
    /// sent it there; to persist before the dead letter is written.
    pub(crate) fn intend(&mut self, offset: u64, dlq_end: u64, now: i64) -> StateEvent {
        let last = self.entries.get(offset).and_then(|e| e.failures.last().cloned());
        let event = StateEvent::DeadIntent {
            offset,
            dlq_end,
            failure: last.unwrap_or_else(|| failure(now, "attempts exhausted")),
        };
        self.apply(&event);
        event
    }

    /// The attempts and failures of `offset`, for its dead letter.
    pub(crate) fn letter(&self, offset: u64) -> Option<(u32, Vec<Failure>)> {
        self.entries.get(offset).map(|e| (e.attempts, e.failures.clone()))
    }

    /// The claimed record is in the dead-letter topic (or dropped): Done,
    /// or in a group that parks keys, Parked, its `DeadLettered` owed
    /// until its key resumes (`None` then).
    pub(crate) fn dead_letter_done(&mut self, offset: u64) -> Option<StateEvent> {
        if let Some(key) = self.parks(offset) {
            self.park(offset, key);
            return None;
        }
        let event = StateEvent::DeadLettered(offset);
        self.apply(&event);
        Some(event)
    }

    /// The claimed record's dead letter failed: it stays, never delivered
    /// again, due to be dead-lettered after backoff. Does nothing unless
    /// the record is still claimed.
    pub(crate) fn dead_letter_failed(&mut self, offset: u64, now: i64, rules: &Rules) {
        let Some(entry) = self.entries.get_mut(offset) else {
            return;
        };
        if entry.status != Status::DeadLettering {
            return;
        }
        if entry.dead == DeadStep::No {
            entry.dead = DeadStep::Due;
        }
        let attempts = entry.attempts;
        let not_before_ms = now.saturating_add(self.backoff_ms(rules, attempts));
        self.schedule(offset, not_before_ms);
    }

    /// After a replay: every delivery open at the crash failed; returns
    /// the events that say so (applied already).
    pub(crate) fn recover(&mut self, now: i64, rules: &Rules) -> Vec<StateEvent> {
        let open: Vec<(u64, u32)> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.status, Status::Leased { .. }))
            .map(|(offset, e)| (offset, e.attempts))
            .collect();
        let mut events = Vec::with_capacity(open.len());
        for (offset, attempts) in open {
            let event = StateEvent::Released {
                offset,
                not_before_ms: now.saturating_add(self.backoff_ms(rules, attempts)),
                failure: failure(now, "receiver stopped before settling"),
            };
            self.apply(&event);
            events.push(event);
        }
        events
    }

    /// The event that moves the group to `offset` (a seek): a snapshot
    /// with no entries, so every record from `offset` on is new and
    /// nothing below it is delivered again. To persist, then
    /// [`GroupMachine::apply`]. Deliveries open before it then get
    /// [`Error::LeaseExpired`] (their entry is gone, and tokens keep
    /// growing). Refused while a dead letter is being written (its
    /// outcome would land on the group after the seek). Events owed
    /// before it are of records it forgets: the driver drops them.
    pub(crate) fn seek(&self, offset: u64) -> Result<StateEvent> {
        if let Some((at, _)) = (self.entries.iter()).find(|(_, e)| e.status == Status::DeadLettering) {
            return Err(Error::InvalidArgument(format!(
                "the record at offset {at} is being dead-lettered: seek again once that is done"
            )));
        }
        Ok(StateEvent::Snapshot {
            next_offset: offset,
            entries: Vec::new(),
        })
    }

    /// Records `offset` as the next the topic can give: records below it
    /// that were never admitted are gone (retention).
    pub(crate) fn pass_to(&mut self, offset: u64) {
        self.next_offset = self.next_offset.max(offset);
    }

    /// Drops the Done entries below the low watermark; returns it.
    pub(crate) fn prune(&mut self) -> u64 {
        while let Some((_, entry)) = self.entries.first()
            && entry.status == Status::Done
        {
            self.entries.pop_first();
        }
        self.low_watermark()
    }

    /// The lowest offset not Done.
    pub(crate) fn low_watermark(&self) -> u64 {
        self.entries
            .iter()
            .find(|(_, e)| e.status != Status::Done)
            .map_or(self.next_offset, |(offset, _)| offset)
    }

    /// The next offset never admitted.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Entries held (settled ones above the low watermark included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records leased now.
    pub(crate) fn in_flight(&self) -> usize {
        self.leases.len()
    }

    /// Records waiting for (re)delivery.
    pub(crate) fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// When the next delayed record falls due or lease ends.
    pub(crate) fn next_due(&self) -> Option<i64> {
        [self.ready.first().copied(), self.leases.first()]
            .into_iter()
            .flatten()
            .map(|(t, _)| t)
            .min()
    }

    /// Offsets not Done, with their attempts and whether a dead-letter
    /// intent is persisted for them.
    pub(crate) fn unsettled_entries(&self) -> impl Iterator<Item = (u64, u32, bool)> + Clone + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.status != Status::Done)
            .map(|(offset, e)| (offset, e.attempts, matches!(e.dead, DeadStep::Intended { .. })))
    }

    /// The events that restate the whole state: a snapshot, then the
    /// intents it cannot hold (so a snapshot never erases one).
    pub(crate) fn snapshot(&self) -> Vec<StateEvent> {
        let entries = self
            .entries
            .iter()
            .map(|(offset, entry)| EntryState {
                offset,
                attempts: entry.attempts,
                not_before_ms: match entry.status {
                    Status::Available { not_before_ms } | Status::Blocked { not_before_ms } => not_before_ms,
                    _ => 0,
                },
                done: entry.status == Status::Done,
                failures: entry.failures.clone(),
            })
            .collect();
        let snapshot = StateEvent::Snapshot {
            next_offset: self.next_offset,
            entries,
        };
        let intents = self
            .entries
            .iter()
            .filter_map(|(offset, entry)| match entry.dead {
                DeadStep::Intended { dlq_end } if entry.status != Status::Done => {
                    Some(StateEvent::DeadIntent {
                        offset,
                        dlq_end,
                        failure: entry.failures.last().cloned()?,
                    })
                }
                _ => None,
            });
        std::iter::once(snapshot).chain(intents).collect()
    }
}

mod deadlines;
mod entries;
mod keys;
#[cfg(test)]
mod model;
#[cfg(test)]
mod seek;

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic holding `offsets`, read from the first, with no keys,
    /// schedules or redrives.
    pub(super) struct Topic(pub(super) std::ops::Range<u64>);

    impl Source for Topic {
        fn next_new(&mut self) -> Result<Option<u64>> {
            Ok(self.0.next())
        }

        fn holds(&mut self, _offset: u64) -> Result<bool> {
            Ok(true)
        }

        fn not_before(&self) -> Option<i64> {
            None
        }

        fn put_back(&mut self) {}

        fn key(&self) -> Option<u64> {
            None
        }

        fn redriven(&self) -> bool {
            false
        }
    }

    #[test]
    fn new_records_leased_together_persist_as_one_run_that_replays_to_the_same_state() {
        let rules = Rules {
            lease_ms: 1000,
            retry: RetryPolicy::default(),
        };
        let mut machine = GroupMachine::new(0, fastrand::Rng::with_seed(1));
        let mut acquired = Acquired::default();
        machine
            .acquire(100, 5, &rules, &mut Topic(0..5), &mut acquired)
            .unwrap();
        let run = StateEvent::DeliveredRun {
            offset: 0,
            count: 5,
            attempt: 1,
            lease_until_ms: 1100,
        };
        assert_eq!(acquired.events, [run]);
        let replayed = GroupMachine::replay(&acquired.events, 0, fastrand::Rng::with_seed(1));
        assert_eq!(replayed.snapshot(), machine.snapshot());
        assert_eq!(replayed.in_flight(), 5);
        for lease in &acquired.leases {
            assert_eq!(replayed.lease_end(lease), Some(1100));
        }
    }

    #[test]
    fn records_a_topic_behind_its_state_reuses_are_leased_afresh_and_acked() {
        let rules = Rules {
            lease_ms: 1000,
            retry: RetryPolicy::default(),
        };
        // The state saw offsets 0..3 delivered and acked; a power loss
        // took them from the topic, which now holds new records 0..2.
        let seen = [0, 1, 2].iter().flat_map(|&offset| {
            [
                StateEvent::Delivered {
                    offset,
                    attempt: 1,
                    lease_until_ms: 10,
                },
                StateEvent::Acked(offset),
            ]
        });
        let mut machine = GroupMachine::replay(&seen.collect::<Vec<_>>(), 0, fastrand::Rng::with_seed(1));
        let mut acquired = Acquired::default();
        let dead = machine
            .acquire(100, 8, &rules, &mut Topic(0..2), &mut acquired)
            .unwrap();
        assert_eq!(dead, None);
        let offsets: Vec<(u64, u32)> = acquired.leases.iter().map(|l| (l.offset, l.attempt)).collect();
        assert_eq!(offsets, [(0, 1), (1, 1)]);
        assert_eq!(machine.in_flight(), 2);
        for lease in &acquired.leases {
            assert_eq!(machine.ack(lease).unwrap(), StateEvent::Acked(lease.offset));
        }
        assert_eq!(machine.in_flight(), 0);
    }
}
