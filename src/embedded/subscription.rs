//! The embedded [`SubscriptionBackend`]:
//! a cursor on the topic's log.
//!
//! A durable subscription persists its committed offset in a state log
//! (`state/subscriptions/<topic>/<name>/`); after a restart it resumes there,
//! so delivery is at-least-once: records received but not committed before
//! a crash are received again. An ephemeral subscription persists nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{SubscriptionBackend, TopicBackend};
use crate::embedded::{LogTopic, PositionSlot, seek_offset};
use crate::error::Result;
use crate::format::StateEvent;
use crate::log::{Async, Block, Cursor, Position, Wait, ready};
use crate::patterns::StartAt;
use crate::patterns::check_commit;
use crate::patterns::recovered_commit;
use crate::record::StoredRecord;
use crate::state::ConsumerId;
use crate::state::StateLog;

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

/// A cursor on a topic's log, with its committed offset in a state log
/// when durable.
#[derive(Debug)]
pub(crate) struct LogSubscription {
    topic: LogTopic,
    /// `None` for an ephemeral subscription.
    consumer: Option<ConsumerId>,
    /// Its committed offset in the topic's table of positions (durable
    /// subscriptions).
    position: PositionSlot,
    cursor: Cursor,
    state: Option<Arc<StateLog>>,
    committed: u64,
    skipped_before_open: u64,
    auto_commit: bool,
}

impl LogSubscription {
    pub(crate) fn durable(topic: LogTopic, name: &str, start: StartAt) -> Result<LogSubscription> {
        let consumer = ConsumerId::Subscription(name.to_owned());
        let (state, events) = topic.open_state(&consumer)?;
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
            state.write_snapshot(&[StateEvent::Committed(committed)])?;
        }
        let position = PositionSlot::default();
        topic.set_position(&consumer, &position, committed)?;
        let cursor = log.cursor(Position::Offset(committed))?;
        Ok(LogSubscription {
            topic,
            consumer: Some(consumer),
            position,
            cursor,
            state: Some(state),
            committed,
            skipped_before_open: skipped,
            auto_commit: false,
        })
    }

    pub(crate) fn ephemeral(topic: LogTopic, start: StartAt) -> Result<LogSubscription> {
        let cursor = topic.inner.log.cursor(start.into())?;
        let committed = cursor.offset();
        Ok(LogSubscription {
            topic,
            consumer: None,
            position: PositionSlot::default(),
            cursor,
            state: None,
            committed,
            skipped_before_open: 0,
            auto_commit: false,
        })
    }

    fn auto_commit_now(&mut self) -> Result<()> {
        if self.auto_commit && self.cursor.offset() > self.committed {
            self.commit()?;
        }
        Ok(())
    }
}

impl LogSubscription {
    /// Commits `next_offset`, waiting for the state's sync as `wait` says.
    #[inline]
    async fn commit_in<W: Wait>(&mut self, next_offset: u64, wait: W) -> Result<()> {
        check_commit(next_offset, self.topic.end_offset())?;
        if let (Some(state), Some(consumer)) = (&self.state, &self.consumer) {
            state
                .write_snapshot_in(&[StateEvent::Committed(next_offset)], wait)
                .await?;
            self.topic.set_position(consumer, &self.position, next_offset)?;
        }
        self.committed = next_offset;
        Ok(())
    }
}

impl SubscriptionBackend for LogSubscription {
    fn set_auto_commit(&mut self, on: bool) {
        self.auto_commit = on;
    }

    fn name(&self) -> Option<&str> {
        self.consumer.as_ref().map(ConsumerId::name)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<StoredRecord>> {
        self.auto_commit_now()?;
        self.cursor.next_timeout(timeout)
    }

    fn try_recv(&mut self) -> Result<Option<StoredRecord>> {
        self.auto_commit_now()?;
        self.cursor.next()
    }

    async fn recv_async(&mut self) -> Result<StoredRecord> {
        if self.auto_commit && self.cursor.offset() > self.committed {
            self.commit_async().await?;
        }
        loop {
            if let Some(record) = self.cursor.next()? {
                return Ok(record);
            }
            let listener = self.topic.inner.log.activity().listen();
            if let Some(record) = self.cursor.next()? {
                return Ok(record);
            }
            listener.await;
        }
    }

    fn commit(&mut self) -> Result<()> {
        self.commit_offset(self.cursor.offset())
    }

    fn commit_offset(&mut self, next_offset: u64) -> Result<()> {
        ready(self.commit_in(next_offset, Block))
    }

    async fn commit_async(&mut self) -> Result<()> {
        self.commit_in(self.cursor.offset(), Async).await
    }

    /// Commits the offset sought to (so the seek survives a restart) and
    /// moves the cursor there.
    fn seek(&mut self, to: StartAt) -> Result<u64> {
        let offset = seek_offset(self.topic.log(), to)?;
        self.commit_offset(offset)?;
        self.cursor = self.topic.log().cursor(Position::Offset(offset))?;
        Ok(offset)
    }

    fn committed(&self) -> u64 {
        self.committed
    }

    fn position(&self) -> u64 {
        self.cursor.offset()
    }

    fn lag(&self) -> u64 {
        self.topic.end_offset().saturating_sub(self.committed)
    }

    fn skipped(&self) -> u64 {
        self.skipped_before_open + self.cursor.skipped()
    }
}
