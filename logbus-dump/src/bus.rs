//! The bus view: every topic with its consumers, the dead letters still
//! pending, inboxes and requests awaiting a reply. A topic or consumer that
//! cannot be read is reported, and every other one still is.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use logbus::inspect::{self, ConsumersView};
use logbus::{CorrelationId, Position, StoredRecord, headers};

use crate::out::Value;
use crate::{Dump, Failure, Severity, is_broken_pipe};

impl Dump {
    /// Reports a topic of a bus that could not be read, unless the failure
    /// is stdout closing, which ends the dump.
    fn topic_error(&mut self, topic: &str, error: Failure) -> Result<(), Failure> {
        if is_broken_pipe(error.as_ref()) {
            return Err(error);
        }
        self.note(Severity::Damage);
        let error = error.to_string();
        Ok(self.out.item(
            "topic_error",
            &[("topic", Value::Str(topic)), ("error", Value::Str(&error))],
        )?)
    }

    /// The bus view: every topic with its consumers, the dead letters still
    /// pending, inboxes and pending requests; then, with `--records` or
    /// `--verify`, every topic as a log directory. A topic or consumer that
    /// cannot be read is reported and the others still are.
    pub(crate) fn bus(&mut self, dir: &Path) -> Result<(), Failure> {
        let topics_dir = dir.join("topics");
        // Hidden names are never topics: a deleted topic's tombstone.
        let mut topics: Vec<String> = std::fs::read_dir(&topics_dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        topics.sort();
        let mut logs = BTreeMap::new();
        for name in &topics {
            match read_topic(dir, name) {
                Ok(topic) => {
                    logs.insert(name.as_str(), topic);
                }
                Err(e) => self.topic_error(name, e)?,
            }
        }
        let dead = pending_dead_letters(&logs);
        let dead_counts = dead_letter_counts(&dead);
        for (name, topic) in &logs {
            self.topic_view(name, topic, &dead_counts)?;
        }
        for (name, topic) in &logs {
            if let Some(pending) = dead.get(name) {
                self.dead_letters(name, pending)?;
            }
            if name.ends_with(".inbox") {
                self.inbox(name, &topic.records)?;
            }
        }
        self.pending_requests(&logs)?;
        if self.args.verify || self.args.records {
            for name in &topics {
                if let Err(e) = self.log_dir(&topics_dir.join(name)) {
                    self.topic_error(name, e)?;
                }
            }
        }
        Ok(())
    }

    fn topic_view(
        &mut self,
        name: &str,
        topic: &Topic,
        dead_counts: &BTreeMap<(String, String), u64>,
    ) -> Result<(), Failure> {
        let log = &topic.log;
        let end = log.end_offset();
        let report = log.recovery_report();
        self.out.item(
            "topic",
            &[
                ("topic", Value::Str(name)),
                ("start_offset", Value::Num(log.start_offset().into())),
                ("end_offset", Value::Num(end.into())),
                ("segments", Value::Num(report.segments as i128)),
                ("clean_shutdown", Value::Bool(report.clean_shutdown)),
                (
                    "recovery_truncations",
                    Value::Num(report.truncations.len() as i128),
                ),
            ],
        )?;
        for sub in &topic.consumers.subscriptions {
            self.out.item(
                "subscription",
                &[
                    ("topic", Value::Str(name)),
                    ("name", Value::Str(&sub.name)),
                    ("committed", Value::Num(sub.committed.into())),
                    ("lag", Value::Num(end.saturating_sub(sub.committed).into())),
                ],
            )?;
        }
        for group in &topic.consumers.groups {
            let s = &group.summary;
            let dead = dead_counts
                .get(&(name.to_owned(), group.name.clone()))
                .copied()
                .unwrap_or(0);
            self.out.item(
                "group",
                &[
                    ("topic", Value::Str(name)),
                    ("name", Value::Str(&group.name)),
                    ("low_watermark", Value::Num(s.low_watermark.into())),
                    ("lag", Value::Num(end.saturating_sub(s.low_watermark).into())),
                    ("next_offset", Value::Num(s.next_offset.into())),
                    ("in_flight", Value::Num(s.unsettled as i128)),
                    ("retried", Value::Num(s.retried as i128)),
                    ("dead_lettered", Value::Num(dead.into())),
                    ("dead_letter_intents", Value::Num(s.dead_letter_intents as i128)),
                ],
            )?;
        }
        for error in &topic.consumers.errors {
            self.note(Severity::Damage);
            self.out.item(
                "consumer_error",
                &[
                    ("topic", Value::Str(name)),
                    ("kind", Value::Str(error.kind)),
                    ("name", Value::Str(&error.name)),
                    ("error", Value::Str(&error.error)),
                ],
            )?;
        }
        Ok(())
    }

    fn limited<'a, 'r>(
        &self,
        records: &'a [&'r StoredRecord],
    ) -> impl Iterator<Item = &'r StoredRecord> + 'a {
        let from = self.args.from.unwrap_or(0);
        let limit = self.args.limit.unwrap_or(u64::MAX) as usize;
        records
            .iter()
            .copied()
            .filter(move |r| r.offset() >= from)
            .take(limit)
    }

    fn dead_letters(&self, dlq: &str, records: &[&StoredRecord]) -> Result<(), Failure> {
        for record in self.limited(records) {
            let header = |name| {
                record
                    .header(name)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let failures: Vec<(&str, &[u8])> =
                record.headers().filter(|(n, _)| *n == headers::FAILURE).collect();
            self.out.item(
                "dead_letter",
                &[
                    ("topic", Value::Str(dlq)),
                    ("offset", Value::Num(record.offset().into())),
                    (
                        "source_topic",
                        Value::Str(&header(headers::SOURCE_TOPIC).unwrap_or_default()),
                    ),
                    (
                        "source_group",
                        Value::Str(&header(headers::SOURCE_GROUP).unwrap_or_default()),
                    ),
                    (
                        "source_offset",
                        Value::Str(&header(headers::SOURCE_OFFSET).unwrap_or_default()),
                    ),
                    (
                        "attempts",
                        Value::Str(&header(logbus::headers::ATTEMPTS).unwrap_or_default()),
                    ),
                    (
                        "last_reason",
                        Value::Str(&header(headers::LAST_REASON).unwrap_or_default()),
                    ),
                    ("failures", Value::Pairs(failures)),
                    ("value", Value::Bytes(record.value())),
                ],
            )?;
        }
        Ok(())
    }

    fn inbox(&self, inbox: &str, records: &[StoredRecord]) -> Result<(), Failure> {
        // The requester's notes of what it sent are not replies.
        let records: Vec<&StoredRecord> = records.iter().filter(|r| correlation_id(r).is_some()).collect();
        self.out.item(
            "inbox",
            &[
                ("topic", Value::Str(inbox)),
                ("replies", Value::Num(records.len() as i128)),
            ],
        )?;
        for record in self.limited(&records) {
            let id = correlation_id(record)
                .map(|id| id.to_string())
                .unwrap_or_default();
            let from = record
                .header(headers::REPLIER)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let error = record
                .header(headers::REPLY_ERROR)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            self.out.item(
                "reply",
                &[
                    ("topic", Value::Str(inbox)),
                    ("offset", Value::Num(record.offset().into())),
                    ("correlation_id", Value::Str(&id)),
                    ("from", Value::Str(&from.unwrap_or_default())),
                    ("error", error.as_deref().map_or(Value::Null, Value::Str)),
                ],
            )?;
        }
        Ok(())
    }

    /// Requests (records with `reply-to` and `correlation-id`) still
    /// awaiting the reply of one of the groups serving their topic (the
    /// topic itself when it has none): a scatter is pending per recipient.
    fn pending_requests(&self, topics: &BTreeMap<&str, Topic>) -> Result<(), Failure> {
        let replied: HashSet<(&str, CorrelationId, String)> = topics
            .iter()
            .filter(|(name, _)| name.ends_with(".inbox"))
            .flat_map(|(name, topic)| {
                topic.records.iter().filter_map(|r| {
                    let from = String::from_utf8_lossy(r.header(headers::REPLIER)?).into_owned();
                    Some((*name, correlation_id(r)?, from))
                })
            })
            .collect();
        for (name, topic) in topics.iter().filter(|(name, _)| !name.ends_with(".inbox")) {
            let mut repliers: Vec<&str> = topic.consumers.groups.iter().map(|g| g.name.as_str()).collect();
            if repliers.is_empty() {
                repliers.push(name);
            }
            for record in &topic.records {
                let (Some(id), Some(reply_to)) = (correlation_id(record), record.header(headers::REPLY_TO))
                else {
                    continue;
                };
                let reply_to = String::from_utf8_lossy(reply_to).into_owned();
                for replier in repliers
                    .iter()
                    .filter(|g| !replied.contains(&(reply_to.as_str(), id, (**g).to_owned())))
                {
                    self.out.item(
                        "pending_request",
                        &[
                            ("topic", Value::Str(name)),
                            ("offset", Value::Num(record.offset().into())),
                            ("correlation_id", Value::Str(&id.to_string())),
                            ("reply_to", Value::Str(&reply_to)),
                            ("awaiting", Value::Str(replier)),
                        ],
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// A topic of a bus, read whole.
struct Topic {
    log: logbus::Log,
    records: Vec<StoredRecord>,
    consumers: ConsumersView,
}

fn read_topic(bus: &Path, name: &str) -> Result<Topic, Failure> {
    let log = inspect::open_read_only(&bus.join("topics").join(name))?;
    let records = all_records(&log)?;
    let consumers = inspect::consumers(bus, name)?;
    Ok(Topic {
        log,
        records,
        consumers,
    })
}

/// The records of every dead-letter topic that `redrive` has not moved.
fn pending_dead_letters<'a>(topics: &'a BTreeMap<&str, Topic>) -> BTreeMap<&'a str, Vec<&'a StoredRecord>> {
    topics
        .iter()
        .filter(|(name, _)| name.ends_with(".dlq"))
        .map(|(name, topic)| {
            let pending = topic
                .records
                .iter()
                .filter(|r| !topic.consumers.redriven(r.offset()));
            (*name, pending.collect())
        })
        .collect()
}

fn correlation_id(record: &StoredRecord) -> Option<CorrelationId> {
    record
        .header(headers::CORRELATION_ID)
        .and_then(CorrelationId::from_header)
}

fn all_records(log: &logbus::Log) -> Result<Vec<StoredRecord>, Failure> {
    let mut cursor = log.cursor(Position::Earliest)?;
    let mut records = Vec::new();
    while let Some(record) = cursor.next()? {
        records.push(record);
    }
    Ok(records)
}

/// Pending dead letters per (source topic, source group).
fn dead_letter_counts(dead: &BTreeMap<&str, Vec<&StoredRecord>>) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for record in dead.values().flatten() {
        let header = |name| {
            record
                .header(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        if let (Some(topic), Some(group)) = (header(headers::SOURCE_TOPIC), header(headers::SOURCE_GROUP)) {
            *counts.entry((topic, group)).or_insert(0) += 1;
        }
    }
    counts
}
