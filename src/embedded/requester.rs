//! The embedded requester (the `Log` variant of [`crate::Requester`]): an
//! inbox topic `<name>.inbox` and its correlation index
//! (`state/inboxes/<name>/correlation.cix`), which maps a correlation id to
//! the inbox offsets of its replies.
//!
//! Invariants: one [`RequesterInner`] per name and bus (two tables over
//! one mapped file would each index the inbox and reformat or resize it
//! under the other); the index is a hint: every offset it yields is
//! checked against the record's `correlation-id` header; it is marked
//! clean only after the inbox is synced, so a clean index never claims a
//! record a power loss could drop.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use crate::backend::{RequesterBackend, TopicBackend};
use crate::clock::wall_ms;
use crate::embedded::BusInner;
use crate::embedded::LogTopic;
use crate::error::{Error, Result};
use crate::log::{Cursor, Position};
use crate::patterns::headers;
use crate::patterns::validate_requester_name;
use crate::patterns::{CorrelationId, Reply, ReplyCheck, inbox_topic};
use crate::record::StoredRecord;
use crate::state::CorrelationIndex;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A requester on the embedded bus. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct LogRequester {
    inner: Arc<RequesterInner>,
}

#[derive(Debug)]
pub(crate) struct RequesterInner {
    bus: Arc<BusInner>,
    inbox: LogTopic,
    /// `None` once the bus closed it: the mapping is gone, so a handle kept
    /// past its bus neither reads a file the next bus resizes nor marks the
    /// next bus's index clean.
    index: Mutex<Option<Indexing>>,
}

/// The correlation index and the inbox cursor that feeds it.
#[derive(Debug)]
struct Indexing {
    table: CorrelationIndex,
    /// At the first inbox record not indexed yet, kept between calls so
    /// that each reads only what arrived since (a new cursor would decode
    /// every frame from the inbox's sparse index entry before it).
    cursor: Option<Cursor>,
}

impl LogRequester {
    /// The requester `name` of this bus, shared with every handle already
    /// open.
    pub(crate) fn open(bus: Arc<BusInner>, name: &str) -> Result<LogRequester> {
        validate_requester_name(name)?;
        let mut requesters = lock(bus.requesters());
        if let Some(inner) = requesters.get(name).and_then(Weak::upgrade) {
            return Ok(LogRequester { inner });
        }
        let inbox = bus.topic(&inbox_topic(name))?;
        let (index, _trusted) = bus.layout().open_correlation_index(name, inbox.start_offset())?;
        let requester = LogRequester {
            inner: Arc::new(RequesterInner {
                bus: bus.clone(),
                inbox,
                index: Mutex::new(Some(Indexing {
                    table: index,
                    cursor: None,
                })),
            }),
        };
        requesters.retain(|_, r| r.strong_count() > 0);
        requesters.insert(name.to_owned(), Arc::downgrade(&requester.inner));
        drop(requesters);
        requester.inner.catch_up(None)?;
        Ok(requester)
    }
}

impl RequesterBackend for LogRequester {
    type Topic = LogTopic;

    fn inbox(&self) -> &str {
        self.inner.inbox.name()
    }

    fn topic(&self, name: &str) -> Result<LogTopic> {
        self.inner.bus.topic(name)
    }

    fn replies(&self, id: CorrelationId) -> Result<Vec<Reply>> {
        // Replies that arrived since the last call are read once, here.
        let mut fresh = self.inner.catch_up(Some(id))?;
        let offsets = lock(&self.inner.index)
            .as_ref()
            .ok_or(Error::Closed)?
            .table
            .find(id.as_u128());
        let mut replies = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let record = match fresh.iter().position(|record| record.offset() == offset) {
                Some(at) => fresh.swap_remove(at),
                None => match self.inner.inbox.log().read(offset)? {
                    Some(record) => record,
                    None => continue,
                },
            };
            if record
                .header(headers::CORRELATION_ID)
                .and_then(CorrelationId::from_header)
                == Some(id)
            {
                replies.push(Reply::new(record));
            }
        }
        replies.sort_by_key(|r| r.record().offset());
        Ok(replies)
    }

    fn watch<T>(&self, _id: CorrelationId, mut check: impl FnMut() -> Result<ReplyCheck<T>>) -> Result<T> {
        loop {
            let waiter = self.inner.inbox.log().activity().waiter();
            match check()? {
                ReplyCheck::Done(value) => return Ok(value),
                ReplyCheck::WaitUntil(deadline) => waiter.wait_until(deadline),
            }
        }
    }

    async fn watch_async<T: Send>(
        &self,
        id: CorrelationId,
        mut check: impl FnMut(Vec<Reply>) -> ReplyCheck<T> + Send,
    ) -> Result<T> {
        let inbox = &self.inner.inbox;
        loop {
            let listener = inbox.log().activity().listen();
            match check(self.replies(id)?) {
                ReplyCheck::Done(value) => return Ok(value),
                ReplyCheck::WaitUntil(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let due_ms =
                        wall_ms().saturating_add(i64::try_from(left.as_millis()).unwrap_or(i64::MAX) + 1);
                    inbox.inner.bus.wakeups().schedule(due_ms, &inbox.inner);
                    listener.await;
                }
            }
        }
    }

    async fn reply_async(&self, id: CorrelationId) -> Result<Reply> {
        loop {
            let listener = self.inner.inbox.log().activity().listen();
            if let Some(reply) = self.replies(id)?.into_iter().next() {
                return Ok(reply);
            }
            listener.await;
        }
    }

    fn close(&self) -> Result<()> {
        match lock(&self.inner.index).as_mut() {
            Some(indexing) => self.inner.close_index(&mut indexing.table),
            None => Ok(()),
        }
    }
}

impl RequesterInner {
    /// Closes the index for good (the bus is closing).
    pub(crate) fn close(&self) -> Result<()> {
        match lock(&self.index).take() {
            Some(mut indexing) => self.close_index(&mut indexing.table),
            None => Ok(()),
        }
    }

    /// Marks the index clean, after syncing the inbox: a clean index is
    /// trusted at open, so it may only claim inbox records that are
    /// durable. Otherwise a power loss could drop inbox records the index
    /// claims, and the replies later written at those offsets would never
    /// be indexed.
    fn close_index(&self, index: &mut CorrelationIndex) -> Result<()> {
        self.inbox.log().flush()?;
        index.close()?;
        Ok(())
    }

    /// Indexes inbox records appended since the last call; returns those
    /// of them that answer `wanted`.
    fn catch_up(&self, wanted: Option<CorrelationId>) -> Result<Vec<StoredRecord>> {
        let mut answers = Vec::new();
        let mut indexing = lock(&self.index);
        let Indexing { table: index, cursor } = indexing.as_mut().ok_or(Error::Closed)?;
        let end = self.inbox.end_offset();
        let start = self.inbox.start_offset();
        let from = index.indexed_through().max(start);
        if from >= end {
            return Ok(answers);
        }
        let cursor = match cursor {
            Some(cursor) if cursor.offset() == from => cursor,
            cursor => cursor.insert(self.inbox.log().cursor(Position::Offset(from))?),
        };
        while let Some(record) = cursor.next()? {
            if let Some(id) = record
                .header(headers::CORRELATION_ID)
                .and_then(CorrelationId::from_header)
            {
                index.insert(id.as_u128(), record.offset(), start)?;
                if wanted == Some(id) {
                    answers.push(record);
                }
            }
        }
        index.set_indexed_through(cursor.offset());
        Ok(answers)
    }
}

impl Drop for RequesterInner {
    fn drop(&mut self) {
        // Best effort: an index not closed cleanly is rebuilt at next open.
        let _ = self.close();
    }
}
