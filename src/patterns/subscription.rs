//! Publish-subscribe: every subscription reads every record of its topic,
//! in order, from its own position.
//!
//! A durable subscription persists its committed offset in a state log
//! (`state/subscriptions/<topic>/<name>/`); after a restart it resumes there,
//! so delivery is at-least-once: records received but not committed before
//! a crash are received again. An ephemeral subscription persists nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::format::StateEvent;
use crate::log::{Cursor, Position};
use crate::patterns::topic::{ConsumerId, SUBSCRIPTIONS, Topic};
use crate::record::StoredRecord;
use crate::state::StateLog;

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest stored record.
    Earliest,
    /// Only records published from now on.
    Latest,
    /// A given offset.
    Offset(u64),
    /// The first record at or after a timestamp (ms since the Unix epoch).
    Timestamp(i64),
}

impl From<StartAt> for Position {
    fn from(start: StartAt) -> Position {
        match start {
            StartAt::Earliest => Position::Earliest,
            StartAt::Latest => Position::Latest,
            StartAt::Offset(offset) => Position::Offset(offset),
            StartAt::Timestamp(ms) => Position::Timestamp(ms),
        }
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

/// A reader of every record of a topic. Not shared between threads: each
/// subscriber holds its own.
#[derive(Debug)]
pub struct Subscription {
    topic: Topic,
    name: Option<String>,
    cursor: Cursor,
    state: Option<Arc<StateLog>>,
    committed: u64,
    skipped_before_open: u64,
    auto_commit: bool,
}

impl Subscription {
    pub(crate) fn durable(topic: Topic, name: &str, start: StartAt) -> Result<Subscription> {
        let (state, events) = topic.open_state(SUBSCRIPTIONS, name)?;
        let log = &topic.inner.log;
        let (committed, skipped) = if events.is_empty() {
            let cursor = log.cursor(start.into())?;
            (cursor.offset(), 0)
        } else {
            let committed = recovered_commit(&events);
            (
                committed.max(log.start_offset()),
                log.start_offset().saturating_sub(committed),
            )
        };
        if events.is_empty() {
            state.write_snapshot(&StateEvent::Committed(committed))?;
        }
        topic.set_position(ConsumerId::Subscription(name.to_owned()), committed)?;
        let cursor = log.cursor(Position::Offset(committed))?;
        Ok(Subscription {
            topic,
            name: Some(name.to_owned()),
            cursor,
            state: Some(state),
            committed,
            skipped_before_open: skipped,
            auto_commit: false,
        })
    }

    pub(crate) fn ephemeral(topic: Topic, start: StartAt) -> Result<Subscription> {
        let cursor = topic.inner.log.cursor(start.into())?;
        let committed = cursor.offset();
        Ok(Subscription {
            topic,
            name: None,
            cursor,
            state: None,
            committed,
            skipped_before_open: 0,
            auto_commit: false,
        })
    }

    /// With auto-commit on, each receive first commits everything received
    /// before it (at-least-once: the last record received before a crash is
    /// received again).
    pub fn set_auto_commit(&mut self, on: bool) {
        self.auto_commit = on;
    }

    /// The subscription's name (`None` when ephemeral).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The next record, waiting up to `timeout` for one.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<StoredRecord>> {
        self.auto_commit_now()?;
        self.cursor.next_timeout(timeout)
    }

    /// The next record if one is readable now.
    pub fn try_recv(&mut self) -> Result<Option<StoredRecord>> {
        self.auto_commit_now()?;
        self.cursor.next()
    }

    /// The next record, waiting as long as it takes (async, any executor).
    pub async fn recv_async(&mut self) -> Result<StoredRecord> {
        loop {
            if let Some(record) = self.try_recv()? {
                return Ok(record);
            }
            let listener = self.topic.inner.log.activity().listen();
            if let Some(record) = self.try_recv()? {
                return Ok(record);
            }
            listener.await;
        }
    }

    fn auto_commit_now(&mut self) -> Result<()> {
        if self.auto_commit && self.cursor.offset() > self.committed {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits the position after the last record received.
    pub fn commit(&mut self) -> Result<()> {
        self.commit_offset(self.cursor.offset())
    }

    /// Commits `next_offset`: every record below it counts as consumed.
    pub fn commit_offset(&mut self, next_offset: u64) -> Result<()> {
        if let (Some(state), Some(name)) = (&self.state, &self.name) {
            state.write_snapshot(&StateEvent::Committed(next_offset))?;
            self.topic
                .set_position(ConsumerId::Subscription(name.clone()), next_offset)?;
        }
        self.committed = next_offset;
        Ok(())
    }

    /// The committed offset.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The offset of the next record this subscription receives.
    pub fn position(&self) -> u64 {
        self.cursor.offset()
    }

    /// Records published but not yet committed.
    pub fn lag(&self) -> u64 {
        self.topic.end_offset().saturating_sub(self.committed)
    }

    /// Records this subscription never saw because retention removed them
    /// first (since it was opened, including a gap found at open).
    pub fn skipped(&self) -> u64 {
        self.skipped_before_open + self.cursor.skipped()
    }
}
