//! Dead letters: records that exhausted their retry policy (or were
//! rejected) are appended to the sibling topic `<topic>.dlq` with headers
//! that say where they came from and why they failed; `redrive` moves them
//! back.
//!
//! Exactly once in the dead-letter topic, across crashes: the group first
//! persists an intent naming the dead-letter topic's end offset, then
//! appends the record durably, then persists that it is dead. Recovery
//! resolves an intent without an outcome by searching the dead-letter topic
//! from the recorded end offset, so the record is written again only if the
//! first write did not survive.

use std::time::Duration;

use crate::backend::TopicBackend;
use crate::error::{Error, Result};
use crate::format::Failure;
use crate::log::Position;
use crate::patterns::headers;
use crate::patterns::log_topic::LogTopic;
use crate::patterns::queue::{Delivery, GroupOptions};
use crate::patterns::retry::{Backoff, RetryPolicy};
use crate::patterns::topic::Topic;
use crate::record::{Record, StoredRecord};

const DEAD_LETTER_HEADERS: [&str; 8] = [
    headers::SOURCE_TOPIC,
    headers::SOURCE_GROUP,
    headers::SOURCE_OFFSET,
    headers::ATTEMPTS,
    headers::FAILURE,
    headers::FIRST_FAILURE,
    headers::LAST_FAILURE,
    headers::LAST_REASON,
];

/// Name of the dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Extra record size allowed in a dead-letter topic for the failure
/// headers (16 reasons of up to 1 KiB, plus the fixed headers), on both
/// backends.
pub(crate) const DEAD_LETTER_HEADROOM_BYTES: u64 = 32 << 10;

/// Group on a dead-letter topic that tracks what `redrive` moved.
pub(crate) const REDRIVE_GROUP: &str = "logbus-redrive";

/// A record on its way to the dead-letter topic.
#[derive(Clone, Copy)]
pub(crate) struct DeadLetter<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub record: &'a StoredRecord,
    pub attempts: u32,
    pub failures: &'a [Failure],
}

impl DeadLetter<'_> {
    fn headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut headers = vec![
            (headers::SOURCE_TOPIC, self.topic.as_bytes().to_vec()),
            (headers::SOURCE_GROUP, self.group.as_bytes().to_vec()),
            (
                headers::SOURCE_OFFSET,
                self.record.offset().to_string().into_bytes(),
            ),
            (headers::ATTEMPTS, self.attempts.to_string().into_bytes()),
        ];
        for failure in self.failures {
            headers.push((
                headers::FAILURE,
                format!("{} {}", failure.at_ms, failure.reason).into_bytes(),
            ));
        }
        if let (Some(first), Some(last)) = (self.failures.first(), self.failures.last()) {
            headers.push((headers::FIRST_FAILURE, first.at_ms.to_string().into_bytes()));
            headers.push((headers::LAST_FAILURE, last.at_ms.to_string().into_bytes()));
            headers.push((headers::LAST_REASON, last.reason.as_bytes().to_vec()));
        }
        headers
    }

    /// Appends the dead letter to `dlq` (durable per its durability).
    pub(crate) fn append_to(&self, dlq: &LogTopic) -> Result<u64> {
        self.publish_with(|record| dlq.publish(record))
    }

    /// Hands the dead letter, as a record, to `publish` (either backend's
    /// append). If the failure headers make it too large for the
    /// dead-letter topic, it is published again with the last failure only,
    /// so that a record close to the size limit still gets there.
    pub(crate) fn publish_with<T>(&self, publish: impl Fn(&Record<'_>) -> Result<T>) -> Result<T> {
        match self.with_record(&publish) {
            Err(Error::RecordTooLarge { .. }) if self.failures.len() > 1 => {
                let last = &self.failures[self.failures.len() - 1..];
                DeadLetter {
                    failures: last,
                    ..*self
                }
                .with_record(&publish)
            }
            result => result,
        }
    }

    /// The record's key, value, timestamp and own headers, plus the
    /// dead-letter headers (replacing any it already had).
    fn with_record<T>(&self, publish: impl Fn(&Record<'_>) -> Result<T>) -> Result<T> {
        let added = self.headers();
        let kept = self
            .record
            .headers()
            .filter(|(name, _)| !DEAD_LETTER_HEADERS.contains(name));
        let mut record = Record::new(self.record.value()).key(self.record.key());
        record = record.timestamp(self.record.timestamp());
        for (name, value) in kept {
            record = record.header(name, value);
        }
        for (name, value) in &added {
            record = record.header(name, value);
        }
        publish(&record)
    }
}

fn header_str<'a>(record: &'a StoredRecord, name: &str) -> Option<&'a str> {
    record.header(name).and_then(|v| std::str::from_utf8(v).ok())
}

/// Whether `dlq` holds, at or after `from`, the dead letter of `offset`
/// from `topic` and `group`.
pub(crate) fn contains_dead_letter(
    dlq: &LogTopic,
    from: u64,
    topic: &str,
    group: &str,
    offset: u64,
) -> Result<bool> {
    let mut cursor = dlq.log().cursor(Position::Offset(from))?;
    let offset = offset.to_string();
    while let Some(record) = cursor.next()? {
        if header_str(&record, headers::SOURCE_TOPIC) == Some(topic)
            && header_str(&record, headers::SOURCE_GROUP) == Some(group)
            && header_str(&record, headers::SOURCE_OFFSET) == Some(offset.as_str())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// [`Error::InvalidArgument`] unless `dlq_topic` names a dead-letter topic
/// (`<topic>.dlq`) among the bus's `topics`: a redrive never creates one.
pub(crate) fn check_redrive_source(dlq_topic: &str, topics: &[String]) -> Result<()> {
    let problem = if !dlq_topic.ends_with(&dead_letter_topic("")) {
        "is not a dead-letter topic (its name does not end in .dlq)"
    } else if !topics.iter().any(|t| t == dlq_topic) {
        "does not exist"
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument(format!(
        "cannot redrive from topic {dlq_topic:?}: it {problem}"
    )))
}

/// Moves the records of `dlq` selected by `filter` back to their source
/// topics (see [`crate::Bus::redrive`]), on either backend: `republish`
/// stores a record in the named source topic, given the dead letter's
/// offset in `dlq` (NATS uses it to publish each dead letter once). A
/// crash between the move and its bookkeeping may move a record twice
/// (at-least-once) where the backend cannot deduplicate. A record without
/// the source headers is [`Error::InvalidArgument`] before anything moves.
pub(crate) fn redrive(
    dlq: &Topic,
    mut republish: impl FnMut(&str, &Record<'_>, u64) -> Result<u64>,
    mut filter: impl FnMut(&StoredRecord) -> bool,
) -> Result<usize> {
    let options = GroupOptions {
        lease: Duration::from_secs(300),
        retry: RetryPolicy {
            max_attempts: u32::MAX,
            backoff: Backoff::Fixed(Duration::ZERO),
        },
        dead_letter: false,
        ..GroupOptions::default()
    };
    let group = dlq.group(REDRIVE_GROUP, options)?;
    // Lease every pending dead letter first, so that records left in place
    // are not handed out again within this call.
    let mut leased = Vec::new();
    while let Some(delivery) = group.try_recv()? {
        leased.push(delivery);
    }
    let leased = all_dead_letters(dlq.name(), leased)?;
    let mut moved = 0;
    for delivery in leased {
        let source = header_str(delivery.record(), headers::SOURCE_TOPIC).map(str::to_owned);
        match source {
            Some(source) if filter(delivery.record()) => {
                let fresh = Redriven::new(delivery.record());
                let _offset = republish(&source, &fresh.record(), delivery.record().offset())?;
                trace_event!(info, dlq = dlq.name(), source = %source, offset = _offset, "record redriven");
                delivery.ack()?;
                moved += 1;
            }
            _ => delivery.nack_with_delay("not selected for redrive", Duration::ZERO)?,
        }
    }
    Ok(moved)
}

/// `leased` if every record is a dead letter (names its source topic);
/// otherwise puts them all back and fails with [`Error::InvalidArgument`].
fn all_dead_letters(dlq: &str, leased: Vec<Delivery>) -> Result<Vec<Delivery>> {
    let Some(stray) = leased
        .iter()
        .find(|d| header_str(d.record(), headers::SOURCE_TOPIC).is_none())
    else {
        return Ok(leased);
    };
    let offset = stray.record().offset();
    for delivery in leased {
        delivery.nack_with_delay("redrive refused", Duration::ZERO)?;
    }
    Err(Error::InvalidArgument(format!(
        "cannot redrive from topic {dlq:?}: its record at offset {offset} is not a dead letter \
         (no {} header)",
        headers::SOURCE_TOPIC
    )))
}

/// A dead letter as it goes back to its source: its key, value,
/// timestamp and own headers, without the dead-letter headers, with
/// `logbus-redrive-count` one higher.
struct Redriven<'a> {
    record: &'a StoredRecord,
    count: String,
}

impl<'a> Redriven<'a> {
    fn new(record: &'a StoredRecord) -> Redriven<'a> {
        let count = header_str(record, headers::REDRIVE_COUNT)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        Redriven {
            record,
            count: (count + 1).to_string(),
        }
    }

    fn record(&self) -> Record<'_> {
        let record = self.record;
        let mut fresh = Record::new(record.value())
            .key(record.key())
            .timestamp(record.timestamp());
        let original = record
            .headers()
            .filter(|(name, _)| !DEAD_LETTER_HEADERS.contains(name) && *name != headers::REDRIVE_COUNT);
        for (name, value) in original {
            fresh = fresh.header(name, value);
        }
        fresh.header(headers::REDRIVE_COUNT, self.count.as_bytes())
    }
}
