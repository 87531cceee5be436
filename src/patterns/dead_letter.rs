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

use crate::error::{Error, Result};
use crate::format::Failure;
use crate::patterns::headers;
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

pub(crate) fn header_str<'a>(record: &'a StoredRecord, name: &str) -> Option<&'a str> {
    record.header(name).and_then(|v| std::str::from_utf8(v).ok())
}

/// Whether `record` is the dead letter of `offset` from `topic` and `group`.
pub(crate) fn is_dead_letter_of(record: &StoredRecord, topic: &str, group: &str, offset: u64) -> bool {
    header_str(record, headers::SOURCE_TOPIC) == Some(topic)
        && header_str(record, headers::SOURCE_GROUP) == Some(group)
        && header_str(record, headers::SOURCE_OFFSET) == Some(offset.to_string().as_str())
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

/// A dead letter as it goes back to its source: its key, value,
/// timestamp and own headers, without the dead-letter headers, with
/// `logbus-redrive-count` one higher.
pub(crate) struct Redriven<'a> {
    record: &'a StoredRecord,
    count: String,
}

impl<'a> Redriven<'a> {
    pub(crate) fn new(record: &'a StoredRecord) -> Redriven<'a> {
        let count = header_str(record, headers::REDRIVE_COUNT)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        Redriven {
            record,
            count: (count + 1).to_string(),
        }
    }

    pub(crate) fn record(&self) -> Record<'_> {
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
