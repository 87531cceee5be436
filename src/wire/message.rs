//! The messages: what a joined process asks ([`Request`]) and what the
//! owning process answers ([`Response`]), each encoded as one operation
//! code and its fields.
//!
//! Handles: the owner numbers each topic, subscription, group, delivery
//! and requester it opens for a connection; the numbers are the
//! connection's own and die with it.

use std::ops::Range;
use std::time::Duration;

use super::codec::{Dec, Decoded, Enc, OwnedRecord, WireError};
use super::types::*;
use crate::patterns::{GroupOptions, GroupStats, OnExpiry, StartAt, TopicOptions, TopicStats};
use crate::record::StoredRecord;
use crate::state::ConsumerId;

/// A handle the owner opened for a connection.
pub(crate) type Handle = u64;

/// A request.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    Topic {
        name: String,
        options: Option<TopicOptions>,
    },
    TopicNames,
    Stats,
    DeleteConsumer {
        topic: String,
        consumer: ConsumerId,
    },
    DeleteTopic {
        name: String,
    },
    Requester {
        name: String,
    },
    Publish {
        topic: Handle,
        records: Vec<OwnedRecord>,
    },
    PublishRedriven {
        topic: Handle,
        record: OwnedRecord,
        dlq_topic: String,
        dlq_offset: u64,
    },
    Subscribe {
        topic: Handle,
        name: Option<String>,
        start: StartAt,
    },
    Group {
        topic: Handle,
        name: String,
        options: GroupOptions,
    },
    Offsets {
        topic: Handle,
    },
    TopicStats {
        topic: Handle,
    },
    Purge {
        topic: Handle,
    },
    SubRecv {
        sub: Handle,
        wait: Wait,
    },
    SubCommit {
        sub: Handle,
        next_offset: Option<u64>,
    },
    SubSeek {
        sub: Handle,
        to: StartAt,
    },
    SubAutoCommit {
        sub: Handle,
        on: bool,
    },
    SubPosition {
        sub: Handle,
    },
    GroupRecv {
        group: Handle,
        max: u32,
        wait: Wait,
    },
    GroupStats {
        group: Handle,
    },
    GroupSeek {
        group: Handle,
        to: StartAt,
    },
    Ack {
        delivery: Handle,
    },
    Nack {
        delivery: Handle,
        reason: String,
        delay: Option<Duration>,
    },
    Reject {
        delivery: Handle,
        reason: String,
    },
    Extend {
        delivery: Handle,
        by: Duration,
    },
    Replies {
        requester: Handle,
        id: u128,
    },
    InboxWait {
        requester: Handle,
        seen_end: u64,
        wait: Wait,
    },
    PublishReply {
        inbox: String,
        id: u128,
        record: OwnedRecord,
    },
    RequesterClose {
        requester: Handle,
    },
    /// Forget a handle (its delivery is released). No answer.
    Release {
        handle: Handle,
    },
    /// Stop waiting for call `call`'s `Wait::Forever`. No answer.
    Cancel {
        call: u64,
    },
}

impl Request {
    pub(crate) fn encode(&self, enc: &mut Enc) {
        match self {
            Request::Topic { name, options } => {
                enc.u8(1).str(name).bool(options.is_some());
                if let Some(options) = options {
                    put_topic_options(enc, options);
                }
            }
            Request::TopicNames => {
                enc.u8(2);
            }
            Request::Stats => {
                enc.u8(3);
            }
            Request::DeleteConsumer { topic, consumer } => put_consumer(enc.u8(4).str(topic), consumer),
            Request::DeleteTopic { name } => {
                enc.u8(5).str(name);
            }
            Request::Requester { name } => {
                enc.u8(6).str(name);
            }
            Request::Publish { topic, records } => {
                enc.u8(7).u64(*topic).u32(records.len() as u32);
                for record in records {
                    enc.record(record);
                }
            }
            Request::PublishRedriven {
                topic,
                record,
                dlq_topic,
                dlq_offset,
            } => {
                enc.u8(8)
                    .u64(*topic)
                    .record(record)
                    .str(dlq_topic)
                    .u64(*dlq_offset);
            }
            Request::Subscribe { topic, name, start } => {
                put_start(enc.u8(9).u64(*topic).opt_str(name.as_deref()), *start)
            }
            Request::Group { topic, name, options } => {
                put_group_options(enc.u8(10).u64(*topic).str(name), options)
            }
            Request::Offsets { topic } => {
                enc.u8(11).u64(*topic);
            }
            Request::TopicStats { topic } => {
                enc.u8(12).u64(*topic);
            }
            Request::Purge { topic } => {
                enc.u8(13).u64(*topic);
            }
            Request::SubRecv { sub, wait } => put_wait(enc.u8(14).u64(*sub), *wait),
            Request::SubCommit { sub, next_offset } => {
                enc.u8(15).u64(*sub).opt_u64(*next_offset);
            }
            Request::SubSeek { sub, to } => put_start(enc.u8(16).u64(*sub), *to),
            Request::SubAutoCommit { sub, on } => {
                enc.u8(17).u64(*sub).bool(*on);
            }
            Request::SubPosition { sub } => {
                enc.u8(18).u64(*sub);
            }
            Request::GroupRecv { group, max, wait } => put_wait(enc.u8(19).u64(*group).u32(*max), *wait),
            Request::GroupStats { group } => {
                enc.u8(20).u64(*group);
            }
            Request::GroupSeek { group, to } => put_start(enc.u8(21).u64(*group), *to),
            Request::Ack { delivery } => {
                enc.u8(22).u64(*delivery);
            }
            Request::Nack {
                delivery,
                reason,
                delay,
            } => {
                enc.u8(23).u64(*delivery).str(reason).opt_duration(*delay);
            }
            Request::Reject { delivery, reason } => {
                enc.u8(24).u64(*delivery).str(reason);
            }
            Request::Extend { delivery, by } => {
                enc.u8(25).u64(*delivery).duration(*by);
            }
            Request::Replies { requester, id } => {
                enc.u8(26).u64(*requester).u128(*id);
            }
            Request::InboxWait {
                requester,
                seen_end,
                wait,
            } => put_wait(enc.u8(27).u64(*requester).u64(*seen_end), *wait),
            Request::PublishReply { inbox, id, record } => {
                enc.u8(28).str(inbox).u128(*id).record(record);
            }
            Request::RequesterClose { requester } => {
                enc.u8(29).u64(*requester);
            }
            Request::Release { handle } => {
                enc.u8(30).u64(*handle);
            }
            Request::Cancel { call } => {
                enc.u8(31).u64(*call);
            }
        }
    }
}

impl Request {
    pub(crate) fn decode(dec: &mut Dec) -> Decoded<Request> {
        let request = match dec.u8()? {
            1 => Request::Topic {
                name: dec.string()?,
                options: dec.opt(get_topic_options)?,
            },
            2 => Request::TopicNames,
            3 => Request::Stats,
            4 => Request::DeleteConsumer {
                topic: dec.string()?,
                consumer: get_consumer(dec)?,
            },
            5 => Request::DeleteTopic { name: dec.string()? },
            6 => Request::Requester { name: dec.string()? },
            7 => {
                let topic = dec.u64()?;
                let count = dec.count(1 + 4)?;
                let records = (0..count).map(|_| dec.record()).collect::<Decoded<_>>()?;
                Request::Publish { topic, records }
            }
            8 => Request::PublishRedriven {
                topic: dec.u64()?,
                record: dec.record()?,
                dlq_topic: dec.string()?,
                dlq_offset: dec.u64()?,
            },
            9 => Request::Subscribe {
                topic: dec.u64()?,
                name: dec.opt_string()?,
                start: get_start(dec)?,
            },
            10 => Request::Group {
                topic: dec.u64()?,
                name: dec.string()?,
                options: get_group_options(dec)?,
            },
            11 => Request::Offsets { topic: dec.u64()? },
            12 => Request::TopicStats { topic: dec.u64()? },
            13 => Request::Purge { topic: dec.u64()? },
            14 => Request::SubRecv {
                sub: dec.u64()?,
                wait: get_wait(dec)?,
            },
            15 => Request::SubCommit {
                sub: dec.u64()?,
                next_offset: dec.opt_u64()?,
            },
            16 => Request::SubSeek {
                sub: dec.u64()?,
                to: get_start(dec)?,
            },
            17 => Request::SubAutoCommit {
                sub: dec.u64()?,
                on: dec.bool()?,
            },
            18 => Request::SubPosition { sub: dec.u64()? },
            19 => Request::GroupRecv {
                group: dec.u64()?,
                max: dec.u32()?,
                wait: get_wait(dec)?,
            },
            20 => Request::GroupStats { group: dec.u64()? },
            21 => Request::GroupSeek {
                group: dec.u64()?,
                to: get_start(dec)?,
            },
            22 => Request::Ack { delivery: dec.u64()? },
            23 => Request::Nack {
                delivery: dec.u64()?,
                reason: dec.string()?,
                delay: dec.opt_duration()?,
            },
            24 => Request::Reject {
                delivery: dec.u64()?,
                reason: dec.string()?,
            },
            25 => Request::Extend {
                delivery: dec.u64()?,
                by: dec.duration()?,
            },
            26 => Request::Replies {
                requester: dec.u64()?,
                id: dec.u128()?,
            },
            27 => Request::InboxWait {
                requester: dec.u64()?,
                seen_end: dec.u64()?,
                wait: get_wait(dec)?,
            },
            28 => Request::PublishReply {
                inbox: dec.string()?,
                id: dec.u128()?,
                record: dec.record()?,
            },
            29 => Request::RequesterClose {
                requester: dec.u64()?,
            },
            30 => Request::Release { handle: dec.u64()? },
            31 => Request::Cancel { call: dec.u64()? },
            _ => return Err(WireError("unknown request")),
        };
        dec.finish()?;
        Ok(request)
    }
}

/// Where a subscription stands, returned with each of its operations so
/// the joined process answers `committed`, `position`, `lag` and
/// `skipped` without asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SubState {
    pub(crate) committed: u64,
    pub(crate) position: u64,
    pub(crate) lag: u64,
    pub(crate) skipped: u64,
}

/// A delivery handed to a joined process.
#[derive(Debug, Clone)]
pub(crate) struct Handed {
    pub(crate) handle: Handle,
    pub(crate) attempt: u32,
    pub(crate) record: StoredRecord,
}

/// An answer.
#[derive(Debug, Clone)]
pub(crate) enum Response {
    Unit,
    Bool(bool),
    U64(u64),
    Range(Range<u64>),
    Names(Vec<String>),
    Stats(Vec<TopicStats>),
    Topic {
        handle: Handle,
        options: TopicOptions,
        start: u64,
        end: u64,
    },
    Requester {
        handle: Handle,
        inbox: String,
    },
    Subscription {
        handle: Handle,
        state: SubState,
    },
    Group {
        handle: Handle,
        on_expiry: OnExpiry,
    },
    Records {
        records: Vec<StoredRecord>,
        state: SubState,
    },
    /// A requester's replies to one id, first first.
    Replies(Vec<StoredRecord>),
    Sub(SubState),
    Offsets {
        start: u64,
        end: u64,
    },
    Deliveries(Vec<Handed>),
    GroupStats(GroupStats),
}

impl Response {
    pub(crate) fn encode(&self, enc: &mut Enc) {
        match self {
            Response::Unit => {
                enc.u8(1);
            }
            Response::Bool(v) => {
                enc.u8(2).bool(*v);
            }
            Response::U64(v) => {
                enc.u8(3).u64(*v);
            }
            Response::Range(range) => {
                enc.u8(4).u64(range.start).u64(range.end);
            }
            Response::Names(names) => {
                enc.u8(5).u32(names.len() as u32);
                for name in names {
                    enc.str(name);
                }
            }
            Response::Stats(stats) => {
                enc.u8(6).u32(stats.len() as u32);
                for topic in stats {
                    put_topic_stats(enc, topic);
                }
            }
            Response::Topic {
                handle,
                options,
                start,
                end,
            } => {
                enc.u8(7).u64(*handle);
                put_topic_options(enc, options);
                enc.u64(*start).u64(*end);
            }
            Response::Requester { handle, inbox } => {
                enc.u8(8).u64(*handle).str(inbox);
            }
            Response::Subscription { handle, state } => put_sub(enc.u8(9).u64(*handle), state),
            Response::Group { handle, on_expiry } => put_on_expiry(enc.u8(10).u64(*handle), *on_expiry),
            Response::Records { records, state } => {
                put_stored_records(enc.u8(11), records);
                put_sub(enc, state);
            }
            Response::Sub(state) => put_sub(enc.u8(12), state),
            Response::Offsets { start, end } => {
                enc.u8(13).u64(*start).u64(*end);
            }
            Response::Deliveries(handed) => {
                enc.u8(14).u32(handed.len() as u32);
                for delivery in handed {
                    enc.u64(delivery.handle)
                        .u32(delivery.attempt)
                        .stored(&delivery.record);
                }
            }
            Response::GroupStats(stats) => put_group_stats(enc.u8(15), stats),
            Response::Replies(records) => put_stored_records(enc.u8(16), records),
        }
    }

    pub(crate) fn decode(dec: &mut Dec) -> Decoded<Response> {
        let response = match dec.u8()? {
            1 => Response::Unit,
            2 => Response::Bool(dec.bool()?),
            3 => Response::U64(dec.u64()?),
            4 => Response::Range(dec.u64()?..dec.u64()?),
            5 => {
                let count = dec.count(4)?;
                Response::Names((0..count).map(|_| dec.string()).collect::<Decoded<_>>()?)
            }
            6 => {
                let count = dec.count(4)?;
                Response::Stats((0..count).map(|_| get_topic_stats(dec)).collect::<Decoded<_>>()?)
            }
            7 => Response::Topic {
                handle: dec.u64()?,
                options: get_topic_options(dec)?,
                start: dec.u64()?,
                end: dec.u64()?,
            },
            8 => Response::Requester {
                handle: dec.u64()?,
                inbox: dec.string()?,
            },
            9 => Response::Subscription {
                handle: dec.u64()?,
                state: get_sub(dec)?,
            },
            10 => Response::Group {
                handle: dec.u64()?,
                on_expiry: get_on_expiry(dec)?,
            },
            11 => Response::Records {
                records: stored_records(dec)?,
                state: get_sub(dec)?,
            },
            12 => Response::Sub(get_sub(dec)?),
            13 => Response::Offsets {
                start: dec.u64()?,
                end: dec.u64()?,
            },
            14 => {
                let count = dec.count(8 + 4 + 4)?;
                let mut handed = Vec::with_capacity(count);
                for _ in 0..count {
                    handed.push(Handed {
                        handle: dec.u64()?,
                        attempt: dec.u32()?,
                        record: dec.stored()?,
                    });
                }
                Response::Deliveries(handed)
            }
            15 => Response::GroupStats(get_group_stats(dec)?),
            16 => Response::Replies(stored_records(dec)?),
            _ => return Err(WireError("unknown response")),
        };
        dec.finish()?;
        Ok(response)
    }
}

fn put_stored_records(enc: &mut Enc, records: &[StoredRecord]) {
    enc.u32(records.len() as u32);
    for record in records {
        enc.stored(record);
    }
}

fn stored_records(dec: &mut Dec) -> Decoded<Vec<StoredRecord>> {
    let count = dec.count(4)?;
    (0..count).map(|_| dec.stored()).collect()
}

fn put_sub(enc: &mut Enc, state: &SubState) {
    enc.u64(state.committed)
        .u64(state.position)
        .u64(state.lag)
        .u64(state.skipped);
}

fn get_sub(dec: &mut Dec) -> Decoded<SubState> {
    Ok(SubState {
        committed: dec.u64()?,
        position: dec.u64()?,
        lag: dec.u64()?,
        skipped: dec.u64()?,
    })
}
