//! Records of the internal state logs (subscription offsets, consumer-group
//! deliveries). Each event is the value of one log record, so the record
//! frame's CRC already covers it; this layer only encodes fields.
//!
//! ```text
//! event := tag u8 | fields
//! 1 Committed     | offset u64
//! 2 Delivered     | offset u64 | attempt u32 | lease_until_ms i64
//! 3 Acked         | offset u64
//! 4 Released      | offset u64 | not_before_ms i64 | failure
//! 5 DeadIntent    | offset u64 | dlq_end u64 | failure
//! 6 DeadLettered  | offset u64
//! 7 Snapshot      | next_offset u64 | count u32 | count x entry
//! 8 DeliveredRun  | offset u64 | count u32 | attempt u32 | lease_until_ms i64
//! entry   := offset u64 | attempts u32 | not_before_ms i64 | done u8 | failures u8 | failures x failure
//! failure := at_ms i64 | reason_len u16 | reason (UTF-8)
//! ```
//!
//! A `DeliveredRun` is `count` `Delivered` events of the consecutive offsets
//! from `offset` with one attempt and lease end (what one receive that
//! leases new records persists), `count` from 1 to [`MAX_DELIVERED_RUN`].

use crate::error::CorruptKind;

/// Most records one [`StateEvent::DeliveredRun`] covers: a bound on what
/// one decoded event makes a replay do.
pub const MAX_DELIVERED_RUN: u32 = 4096;
/// Most failures remembered per record (oldest dropped first).
pub const MAX_FAILURES_KEPT: usize = 16;
/// Longest failure reason kept, in bytes (longer ones are cut).
pub const MAX_REASON_BYTES: usize = 1024;

/// One failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When it failed, ms since the Unix epoch.
    pub at_ms: i64,
    /// Why (as given to `nack`, or "lease expired").
    pub reason: String,
}

/// Persisted delivery state of one record of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryState {
    /// The record's offset in the topic.
    pub offset: u64,
    /// Deliveries so far.
    pub attempts: u32,
    /// Not deliverable before this time (backoff).
    pub not_before_ms: i64,
    /// Acked or dead-lettered.
    pub done: bool,
    /// Recent failures, oldest first.
    pub failures: Vec<Failure>,
}

/// An event of a state log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEvent {
    /// A subscription committed: it has consumed every offset below this.
    Committed(u64),
    /// A record was handed to a receiver (persisted before hand-out).
    Delivered {
        /// Topic offset.
        offset: u64,
        /// Attempt number, from 1.
        attempt: u32,
        /// Lease end, ms since the Unix epoch.
        lease_until_ms: i64,
    },
    /// Records `offset..offset + count` were handed out, each as a
    /// `Delivered` with this attempt and lease end would say.
    DeliveredRun {
        /// Topic offset of the first.
        offset: u64,
        /// How many, from 1 to [`MAX_DELIVERED_RUN`].
        count: u32,
        /// Attempt number, from 1.
        attempt: u32,
        /// Lease end, ms since the Unix epoch.
        lease_until_ms: i64,
    },
    /// A record was acknowledged.
    Acked(u64),
    /// A delivery failed and the record is available again from `not_before_ms`.
    Released {
        /// Topic offset.
        offset: u64,
        /// Earliest redelivery time.
        not_before_ms: i64,
        /// The failure.
        failure: Failure,
    },
    /// A record is about to be written to the dead-letter topic, whose end
    /// offset is `dlq_end`; recovery looks for it from there.
    DeadIntent {
        /// Topic offset.
        offset: u64,
        /// Dead-letter topic end offset before the write.
        dlq_end: u64,
        /// The failure that sent it there (the reject or last nack reason),
        /// kept so a crash before the write does not lose it.
        failure: Failure,
    },
    /// A record is in the dead-letter topic.
    DeadLettered(u64),
    /// The whole group state, replacing everything before it.
    Snapshot {
        /// The next offset never delivered.
        next_offset: u64,
        /// Records delivered at least once and not yet below the low watermark.
        entries: Vec<EntryState>,
    },
}

const COMMITTED: u8 = 1;
const DELIVERED: u8 = 2;
const ACKED: u8 = 3;
const RELEASED: u8 = 4;
const DEAD_INTENT: u8 = 5;
const DEAD_LETTERED: u8 = 6;
const SNAPSHOT: u8 = 7;
const DELIVERED_RUN: u8 = 8;

impl StateEvent {
    /// Encodes the event (for the fuzzers and tests: the library encodes
    /// into a buffer it keeps, [`StateEvent::encode_into`]).
    #[cfg(any(test, feature = "internals", feature = "test-util"))]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        self.encode_into(&mut out);
        out
    }

    /// Appends the event's encoding to `out` (a buffer kept across events
    /// saves an allocation each).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            StateEvent::Committed(offset) => put_tag_u64(out, COMMITTED, *offset),
            StateEvent::Delivered {
                offset,
                attempt,
                lease_until_ms,
            } => {
                put_tag_u64(out, DELIVERED, *offset);
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&lease_until_ms.to_le_bytes());
            }
            StateEvent::DeliveredRun {
                offset,
                count,
                attempt,
                lease_until_ms,
            } => {
                put_tag_u64(out, DELIVERED_RUN, *offset);
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&lease_until_ms.to_le_bytes());
            }
            StateEvent::Acked(offset) => put_tag_u64(out, ACKED, *offset),
            StateEvent::Released {
                offset,
                not_before_ms,
                failure,
            } => {
                put_tag_u64(out, RELEASED, *offset);
                out.extend_from_slice(&not_before_ms.to_le_bytes());
                put_failure(out, failure);
            }
            StateEvent::DeadIntent {
                offset,
                dlq_end,
                failure,
            } => {
                put_tag_u64(out, DEAD_INTENT, *offset);
                out.extend_from_slice(&dlq_end.to_le_bytes());
                put_failure(out, failure);
            }
            StateEvent::DeadLettered(offset) => put_tag_u64(out, DEAD_LETTERED, *offset),
            StateEvent::Snapshot { next_offset, entries } => {
                put_tag_u64(out, SNAPSHOT, *next_offset);
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for entry in entries {
                    put_entry(out, entry);
                }
            }
        }
    }

    /// Decodes an event, rejecting unknown tags, short input and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<StateEvent, CorruptKind> {
        let mut input = Input(bytes);
        let event = match input.u8()? {
            COMMITTED => StateEvent::Committed(input.u64()?),
            DELIVERED => StateEvent::Delivered {
                offset: input.u64()?,
                attempt: input.u32()?,
                lease_until_ms: input.i64()?,
            },
            DELIVERED_RUN => {
                let offset = input.u64()?;
                let count = input.u32()?;
                if !(1..=MAX_DELIVERED_RUN).contains(&count) || offset.checked_add(u64::from(count)).is_none()
                {
                    return Err(CorruptKind::Malformed("delivered run of a bad length"));
                }
                StateEvent::DeliveredRun {
                    offset,
                    count,
                    attempt: input.u32()?,
                    lease_until_ms: input.i64()?,
                }
            }
            ACKED => StateEvent::Acked(input.u64()?),
            RELEASED => StateEvent::Released {
                offset: input.u64()?,
                not_before_ms: input.i64()?,
                failure: input.failure()?,
            },
            DEAD_INTENT => StateEvent::DeadIntent {
                offset: input.u64()?,
                dlq_end: input.u64()?,
                failure: input.failure()?,
            },
            DEAD_LETTERED => StateEvent::DeadLettered(input.u64()?),
            SNAPSHOT => {
                let next_offset = input.u64()?;
                let count = input.u32()? as usize;
                // Each entry takes at least 22 bytes: bound the allocation by the input.
                let mut entries = Vec::with_capacity(count.min(input.0.len() / 22));
                for _ in 0..count {
                    entries.push(input.entry()?);
                }
                StateEvent::Snapshot { next_offset, entries }
            }
            _ => return Err(CorruptKind::Malformed("unknown state event")),
        };
        if !input.0.is_empty() {
            return Err(CorruptKind::Malformed("trailing bytes after state event"));
        }
        Ok(event)
    }
}

fn put_tag_u64(out: &mut Vec<u8>, tag: u8, value: u64) {
    out.push(tag);
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_failure(out: &mut Vec<u8>, failure: &Failure) {
    out.extend_from_slice(&failure.at_ms.to_le_bytes());
    let reason = truncate_utf8(&failure.reason, MAX_REASON_BYTES);
    out.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    out.extend_from_slice(reason.as_bytes());
}

fn put_entry(out: &mut Vec<u8>, entry: &EntryState) {
    out.extend_from_slice(&entry.offset.to_le_bytes());
    out.extend_from_slice(&entry.attempts.to_le_bytes());
    out.extend_from_slice(&entry.not_before_ms.to_le_bytes());
    out.push(u8::from(entry.done));
    let kept = &entry.failures[entry.failures.len().saturating_sub(MAX_FAILURES_KEPT)..];
    out.push(kept.len() as u8);
    for failure in kept {
        put_failure(out, failure);
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CorruptKind> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(CorruptKind::Truncated {
                needed: N as u64,
                available: self.0.len() as u64,
            });
        };
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, CorruptKind> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, CorruptKind> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, CorruptKind> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, CorruptKind> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn failure(&mut self) -> Result<Failure, CorruptKind> {
        let at_ms = self.i64()?;
        let len = u16::from_le_bytes(self.take()?) as usize;
        if self.0.len() < len {
            return Err(CorruptKind::Truncated {
                needed: len as u64,
                available: self.0.len() as u64,
            });
        }
        let (reason, rest) = self.0.split_at(len);
        self.0 = rest;
        let reason =
            std::str::from_utf8(reason).map_err(|_| CorruptKind::Malformed("reason is not UTF-8"))?;
        Ok(Failure {
            at_ms,
            reason: reason.to_owned(),
        })
    }

    fn entry(&mut self) -> Result<EntryState, CorruptKind> {
        let offset = self.u64()?;
        let attempts = self.u32()?;
        let not_before_ms = self.i64()?;
        let done = match self.u8()? {
            0 => false,
            1 => true,
            _ => return Err(CorruptKind::Malformed("bad done flag")),
        };
        let count = self.u8()? as usize;
        if count > MAX_FAILURES_KEPT {
            return Err(CorruptKind::Malformed("too many failures in entry"));
        }
        let failures = (0..count).map(|_| self.failure()).collect::<Result<_, _>>()?;
        Ok(EntryState {
            offset,
            attempts,
            not_before_ms,
            done,
            failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_and_truncations_are_rejected() {
        let failure = Failure {
            at_ms: 5,
            reason: "boom ü".into(),
        };
        let events = [
            StateEvent::Committed(9),
            StateEvent::Delivered {
                offset: 1,
                attempt: 2,
                lease_until_ms: -3,
            },
            StateEvent::DeliveredRun {
                offset: 11,
                count: MAX_DELIVERED_RUN,
                attempt: 1,
                lease_until_ms: 12,
            },
            StateEvent::Acked(4),
            StateEvent::Released {
                offset: 5,
                not_before_ms: 6,
                failure: failure.clone(),
            },
            StateEvent::DeadIntent {
                offset: 7,
                dlq_end: 8,
                failure: failure.clone(),
            },
            StateEvent::DeadLettered(9),
            StateEvent::Snapshot {
                next_offset: 10,
                entries: vec![EntryState {
                    offset: 3,
                    attempts: 2,
                    not_before_ms: 1,
                    done: false,
                    failures: vec![failure],
                }],
            },
        ];
        for event in events {
            let bytes = event.encode();
            assert_eq!(StateEvent::decode(&bytes), Ok(event));
            for cut in 0..bytes.len() {
                assert!(StateEvent::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(StateEvent::decode(&longer).is_err());
        }
    }

    #[test]
    fn a_delivered_run_of_no_record_too_many_or_past_the_last_offset_is_refused() {
        for (offset, count) in [(0, 0), (0, MAX_DELIVERED_RUN + 1), (u64::MAX - 1, 2)] {
            let run = StateEvent::DeliveredRun {
                offset,
                count,
                attempt: 1,
                lease_until_ms: 0,
            };
            assert!(StateEvent::decode(&run.encode()).is_err(), "{offset} + {count}");
        }
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
