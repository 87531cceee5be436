//! Idempotent publishing on the embedded backend: a publish of a record
//! with an id ([`crate::Record::id`]) that a record of the topic published
//! within the topic's dedupe window already carries appends nothing and
//! returns that record's offset.
//!
//! Invariants:
//! - The window knows every id of the topic's records whose timestamp lies
//!   within the last `window` (by the bus clock), with the offset of the
//!   newest record carrying it. It is filled from the log itself, when the
//!   first publish with an id after opening comes (a topic never published
//!   to with ids never reads it), so it survives a crash: an id whose record
//!   is in the log is found again, and one whose record was lost (never
//!   acknowledged) is not.
//! - Publishes with an id hold the window's lock from the lookup to the
//!   write, so two publishes of one id never both append. Each caller then
//!   waits for durability itself: a duplicate returns once the first copy
//!   is as durable as its own append would have been (`Wait::after_write`
//!   on the first copy's offset).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::error::Result;
use crate::log::{Log, Position};
use crate::record::Record;

/// The ids published within a topic's dedupe window.
#[derive(Debug)]
pub(crate) struct IdWindow {
    window_ms: i64,
    /// `None` until the first publish with an id read them from the log.
    ids: Mutex<Option<Ids>>,
}

#[derive(Debug, Default)]
struct Ids {
    /// The offset of the newest record carrying each id.
    offsets: HashMap<Box<[u8]>, u64>,
    /// `(timestamp, offset, id)` in publish order, for expiry.
    published: VecDeque<(i64, u64, Box<[u8]>)>,
}

impl IdWindow {
    /// The window of a topic whose dedupe window is `window`; `None` when
    /// it is zero (ids are then only headers).
    pub(crate) fn new(window: Duration) -> Option<IdWindow> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        (window_ms > 0).then(|| IdWindow {
            window_ms,
            ids: Mutex::new(None),
        })
    }

    /// The offsets of `record`, whose id is `id`: those of the record
    /// within the window that carries `id`, or else those `write` gives it.
    pub(crate) fn publish_once(
        &self,
        log: &Log,
        record: &Record<'_>,
        id: &[u8],
        write: impl FnOnce() -> Result<Range<u64>>,
    ) -> Result<Range<u64>> {
        let now = log.clock().now_ms();
        let since = now.saturating_sub(self.window_ms);
        let mut ids = self.lock();
        let ids = match &mut *ids {
            Some(ids) => ids,
            unread => unread.insert(Ids::read(log, since)?),
        };
        ids.expire(since);
        if let Some(&offset) = ids.offsets.get(id) {
            return Ok(offset..offset + 1);
        }
        let written = write()?;
        ids.insert(id, written.start, record.own_timestamp().unwrap_or(now));
        Ok(written)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Ids>> {
        self.ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Ids {
    /// The ids of `log`'s records stamped at or after `since`.
    fn read(log: &Log, since: i64) -> Result<Ids> {
        let mut ids = Ids::default();
        let mut cursor = log.cursor(Position::Timestamp(since))?;
        while let Some(record) = cursor.next()? {
            if let Some(id) = record.id() {
                ids.insert(id, record.offset(), record.timestamp());
            }
        }
        Ok(ids)
    }

    fn insert(&mut self, id: &[u8], offset: u64, timestamp: i64) {
        let id: Box<[u8]> = id.into();
        self.offsets.insert(id.clone(), offset);
        self.published.push_back((timestamp, offset, id));
    }

    /// Forgets the ids published before `since` (unless published again
    /// since). Publish order is nearly timestamp order; a record stamped
    /// out of order is forgotten with its neighbours.
    fn expire(&mut self, since: i64) {
        while let Some((timestamp, offset, _)) = self.published.front()
            && *timestamp < since
        {
            let offset = *offset;
            if let Some((_, _, id)) = self.published.pop_front()
                && self.offsets.get(&id) == Some(&offset)
            {
                self.offsets.remove(&id);
            }
        }
    }
}
