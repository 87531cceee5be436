//! How the patterns' options, positions and stats travel: one `put` and
//! one `get` per type, each the other's inverse (`tests` below round-trips
//! them), so a message is encoded and decoded by the same field order.

use std::time::Duration;

use super::codec::{Dec, Decoded, Enc, WireError};
use crate::log::{Durability, SyncStats};
use crate::patterns::{
    Backoff, ConsumerStats, DeliveryOrder, GroupOptions, GroupStats, OnDeadLetter, OnExpiry, Retention,
    RetryPolicy, StartAt, TopicOptions, TopicStats,
};
use crate::state::ConsumerId;

fn bad(what: &'static str) -> WireError {
    WireError(what)
}

pub(crate) fn put_start(enc: &mut Enc, start: StartAt) {
    match start {
        StartAt::Earliest => enc.u8(0),
        StartAt::Latest => enc.u8(1),
        StartAt::Offset(offset) => enc.u8(2).u64(offset),
        StartAt::Timestamp(ms) => enc.u8(3).i64(ms),
    };
}

pub(crate) fn get_start(dec: &mut Dec) -> Decoded<StartAt> {
    Ok(match dec.u8()? {
        0 => StartAt::Earliest,
        1 => StartAt::Latest,
        2 => StartAt::Offset(dec.u64()?),
        3 => StartAt::Timestamp(dec.i64()?),
        _ => return Err(bad("bad start position")),
    })
}

fn put_durability(enc: &mut Enc, durability: Durability) {
    match durability {
        Durability::Always => enc.u8(0),
        Durability::Interval(every) => enc.u8(1).duration(every),
        Durability::Os => enc.u8(2),
    };
}

fn get_durability(dec: &mut Dec) -> Decoded<Durability> {
    Ok(match dec.u8()? {
        0 => Durability::Always,
        1 => Durability::Interval(dec.duration()?),
        2 => Durability::Os,
        _ => return Err(bad("bad durability")),
    })
}

/// The options a topic is asked for with: what [`TopicOptions`]' setters
/// set (the storage and clock are the owning process's).
pub(crate) fn put_topic_options(enc: &mut Enc, options: &TopicOptions) {
    let log = &options.log;
    put_durability(enc, log.durability);
    enc.u64(log.segment_bytes)
        .u64(log.max_record_bytes)
        .opt_u64(log.retention_bytes)
        .opt_duration(log.retention_age)
        .u8(match options.retention {
            Retention::Limits => 0,
            Retention::Interest => 1,
            Retention::WorkQueue => 2,
        })
        .duration(options.dedupe_window);
}

pub(crate) fn get_topic_options(dec: &mut Dec) -> Decoded<TopicOptions> {
    let durability = get_durability(dec)?;
    let segment_bytes = dec.u64()?;
    let max_record_bytes = dec.u64()?;
    let retention_bytes = dec.opt_u64()?;
    let retention_age = dec.opt_duration()?;
    let retention = match dec.u8()? {
        0 => Retention::Limits,
        1 => Retention::Interest,
        2 => Retention::WorkQueue,
        _ => return Err(bad("bad retention")),
    };
    let mut options = TopicOptions::default()
        .durability(durability)
        .segment_bytes(segment_bytes)
        .max_record_bytes(max_record_bytes)
        .retention(retention)
        .dedupe_window(dec.duration()?);
    options.log.retention_bytes = retention_bytes;
    options.log.retention_age = retention_age;
    Ok(options)
}

pub(crate) fn put_group_options(enc: &mut Enc, options: &GroupOptions) {
    enc.duration(options.lease).u32(options.retry.max_attempts);
    match options.retry.backoff {
        Backoff::Fixed(delay) => enc.u8(0).duration(delay),
        Backoff::Exponential { initial, max, jitter } => {
            enc.u8(1).duration(initial).duration(max).bool(jitter)
        }
    };
    enc.bool(options.dead_letter);
    put_start(enc, options.start);
    enc.u8(match options.on_expiry {
        OnExpiry::DeadLetter => 0,
        OnExpiry::Drop => 1,
    })
    .u8(match options.ordering {
        DeliveryOrder::Unordered => 0,
        DeliveryOrder::PerKey => 1,
    })
    .u8(match options.on_dead_letter {
        OnDeadLetter::Continue => 0,
        OnDeadLetter::ParkKey => 1,
    })
    .u32(u32::try_from(options.prefetch).unwrap_or(u32::MAX));
}

pub(crate) fn get_group_options(dec: &mut Dec) -> Decoded<GroupOptions> {
    let lease = dec.duration()?;
    let max_attempts = dec.u32()?;
    let backoff = match dec.u8()? {
        0 => Backoff::Fixed(dec.duration()?),
        1 => Backoff::Exponential {
            initial: dec.duration()?,
            max: dec.duration()?,
            jitter: dec.bool()?,
        },
        _ => return Err(bad("bad backoff")),
    };
    let dead_letter = dec.bool()?;
    let start = get_start(dec)?;
    let on_expiry = match dec.u8()? {
        0 => OnExpiry::DeadLetter,
        1 => OnExpiry::Drop,
        _ => return Err(bad("bad expiry action")),
    };
    let ordering = match dec.u8()? {
        0 => DeliveryOrder::Unordered,
        1 => DeliveryOrder::PerKey,
        _ => return Err(bad("bad delivery order")),
    };
    let on_dead_letter = match dec.u8()? {
        0 => OnDeadLetter::Continue,
        1 => OnDeadLetter::ParkKey,
        _ => return Err(bad("bad dead-letter action")),
    };
    let prefetch = dec.u32()? as usize;
    Ok(GroupOptions {
        lease,
        retry: RetryPolicy {
            max_attempts,
            backoff,
        },
        dead_letter,
        start,
        on_expiry,
        ordering,
        on_dead_letter,
        prefetch,
    })
}

pub(crate) fn put_on_expiry(enc: &mut Enc, on_expiry: OnExpiry) {
    enc.bool(on_expiry == OnExpiry::Drop);
}

pub(crate) fn get_on_expiry(dec: &mut Dec) -> Decoded<OnExpiry> {
    Ok(match dec.bool()? {
        true => OnExpiry::Drop,
        false => OnExpiry::DeadLetter,
    })
}

pub(crate) fn put_consumer(enc: &mut Enc, id: &ConsumerId) {
    match id {
        ConsumerId::Subscription(name) => enc.u8(0).str(name),
        ConsumerId::Group(name) => enc.u8(1).str(name),
    };
}

pub(crate) fn get_consumer(dec: &mut Dec) -> Decoded<ConsumerId> {
    Ok(match dec.u8()? {
        0 => ConsumerId::Subscription(dec.string()?),
        1 => ConsumerId::Group(dec.string()?),
        _ => return Err(bad("bad consumer kind")),
    })
}

pub(crate) fn put_group_stats(enc: &mut Enc, stats: &GroupStats) {
    enc.u64(stats.end_offset)
        .u64(stats.low_watermark)
        .u64(stats.lag)
        .u64(stats.in_flight as u64)
        .u64(stats.waiting as u64)
        .opt_duration(stats.oldest_unacked_age)
        .u64(stats.redeliveries)
        .u64(stats.acked)
        .u64(stats.dead_lettered);
}

pub(crate) fn get_group_stats(dec: &mut Dec) -> Decoded<GroupStats> {
    Ok(GroupStats {
        end_offset: dec.u64()?,
        low_watermark: dec.u64()?,
        lag: dec.u64()?,
        in_flight: dec.u64()? as usize,
        waiting: dec.u64()? as usize,
        oldest_unacked_age: dec.opt_duration()?,
        redeliveries: dec.u64()?,
        acked: dec.u64()?,
        dead_lettered: dec.u64()?,
    })
}

pub(crate) fn put_topic_stats(enc: &mut Enc, stats: &TopicStats) {
    enc.str(&stats.name)
        .u64(stats.start_offset)
        .u64(stats.end_offset)
        .u64(stats.bytes)
        .u64(stats.sync.syncs)
        .duration(stats.sync.total)
        .duration(stats.sync.max)
        .u32(stats.consumers.len() as u32);
    for consumer in &stats.consumers {
        put_consumer(enc, &consumer.id);
        enc.u64(consumer.committed)
            .u64(consumer.lag)
            .opt_duration(consumer.oldest_unconsumed_age);
        match &consumer.group {
            Some(group) => put_group_stats(enc.u8(1), group),
            None => {
                enc.u8(0);
            }
        }
    }
}

pub(crate) fn get_topic_stats(dec: &mut Dec) -> Decoded<TopicStats> {
    let name = dec.string()?;
    let start_offset = dec.u64()?;
    let end_offset = dec.u64()?;
    let bytes = dec.u64()?;
    let sync = SyncStats {
        syncs: dec.u64()?,
        total: dec.duration()?,
        max: dec.duration()?,
    };
    let count = dec.count(2 + 8 + 8 + 1 + 1)?;
    let mut consumers = Vec::with_capacity(count);
    for _ in 0..count {
        consumers.push(ConsumerStats {
            id: get_consumer(dec)?,
            committed: dec.u64()?,
            lag: dec.u64()?,
            oldest_unconsumed_age: dec.opt_duration()?,
            group: dec.opt(get_group_stats)?,
        });
    }
    Ok(TopicStats {
        name,
        start_offset,
        end_offset,
        bytes,
        sync,
        consumers,
    })
}

/// A wait for a receive: return at once, wait up to a time, or wait until
/// something comes (an async receive, ended early by a cancel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Now,
    For(Duration),
    Forever,
}

pub(crate) fn put_wait(enc: &mut Enc, wait: Wait) {
    match wait {
        Wait::Now => enc.u8(0),
        Wait::For(timeout) => enc.u8(1).duration(timeout),
        Wait::Forever => enc.u8(2),
    };
}

pub(crate) fn get_wait(dec: &mut Dec) -> Decoded<Wait> {
    Ok(match dec.u8()? {
        0 => Wait::Now,
        1 => Wait::For(dec.duration()?),
        2 => Wait::Forever,
        _ => return Err(bad("bad wait")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(value: &T, put: impl Fn(&mut Enc, &T), get: impl Fn(&mut Dec) -> Decoded<T>) -> T {
        let mut enc = Enc::default();
        put(&mut enc, value);
        let mut dec = Dec::new(enc.buf.into());
        let back = get(&mut dec).unwrap();
        dec.finish().unwrap();
        back
    }

    #[test]
    fn group_options_survive_the_trip() {
        let options = GroupOptions::default()
            .lease(Duration::from_millis(1500))
            .retry(
                RetryPolicy::default()
                    .max_attempts(3)
                    .backoff(Backoff::Fixed(Duration::from_millis(7))),
            )
            .dead_letter(true)
            .start(StartAt::Timestamp(-5))
            .on_expiry(OnExpiry::Drop)
            .ordering(DeliveryOrder::PerKey)
            .on_dead_letter(OnDeadLetter::ParkKey)
            .prefetch(64);
        assert_eq!(
            round_trip(&options, put_group_options, get_group_options),
            options
        );
    }

    #[test]
    fn topic_options_survive_the_trip() {
        let options = TopicOptions::default()
            .durability(Durability::Interval(Duration::from_millis(3)))
            .segment_bytes(1 << 20)
            .max_bytes(5 << 20)
            .max_age(Duration::from_secs(9))
            .retention(Retention::WorkQueue)
            .dedupe_window(Duration::ZERO);
        let back = round_trip(&options, put_topic_options, get_topic_options);
        assert!(crate::patterns::check_same_options("t", &options, &back).is_ok());
    }

    #[test]
    fn topic_stats_survive_the_trip() {
        let mut consumer = ConsumerStats::at(ConsumerId::Group("g".into()), 3, 9);
        consumer.group = Some(GroupStats {
            end_offset: 9,
            low_watermark: 3,
            lag: 6,
            in_flight: 2,
            waiting: 1,
            oldest_unacked_age: Some(Duration::from_millis(4)),
            redeliveries: 5,
            acked: 7,
            dead_lettered: 8,
        });
        let stats = TopicStats {
            name: "orders".into(),
            start_offset: 1,
            end_offset: 9,
            bytes: 99,
            sync: SyncStats::default(),
            consumers: vec![
                consumer,
                ConsumerStats::at(ConsumerId::Subscription("s".into()), 9, 9),
            ],
        };
        assert_eq!(round_trip(&stats, put_topic_stats, get_topic_stats), stats);
    }

    #[test]
    fn a_crafted_count_allocates_nothing() {
        let mut enc = Enc::default();
        enc.str("t")
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .duration(Duration::ZERO)
            .duration(Duration::ZERO);
        enc.u32(u32::MAX);
        let mut dec = Dec::new(enc.buf.into());
        assert!(get_topic_stats(&mut dec).is_err());
    }
}
