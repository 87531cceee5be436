//! Request-reply: a [`Requester`] publishes a request to a service topic
//! with `correlation-id` and `reply-to` headers; a [`Responder`] (a consumer
//! group on the service topic) appends its reply to the requester's inbox
//! topic; the requester finds replies through the inbox's correlation index.
//!
//! Invariants: correlation ids are unique across restarts (48-bit
//! millisecond time, 80 random bits); a reply is acked on the request only
//! after it is appended to the inbox, so a responder crash means a
//! redelivered request and possibly a second reply (the requester takes the
//! first); the correlation index is a hint: every offset it yields is
//! checked against the record's `correlation-id` header.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::bus::{BusInner, validate_name};
use crate::error::{Error, Result};
use crate::log::{Position, now_ms};
use crate::patterns::log_topic::LogTopic;
use crate::patterns::queue::{Delivery, Group, GroupOptions};
use crate::record::{Record, StoredRecord};
use crate::state::CorrelationIndex;

/// Header carrying the correlation id (32 lowercase hex digits).
pub const HEADER_CORRELATION_ID: &str = "correlation-id";
/// Header naming the topic replies go to.
pub const HEADER_REPLY_TO: &str = "reply-to";
/// Header naming the responder (its group) on a reply.
pub const HEADER_REPLIER: &str = "logbus-replier";
/// Header marking an error reply, with the reason.
pub const HEADER_REPLY_ERROR: &str = "logbus-reply-error";

/// A 128-bit, time-ordered id tying replies to their request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CorrelationId(u128);

impl CorrelationId {
    /// A new id: milliseconds since the Unix epoch in the top 48 bits,
    /// 80 random bits below (never zero).
    pub fn new() -> Self {
        let time = (now_ms().max(1) as u128 & ((1 << 48) - 1)) << 80;
        CorrelationId(time | (fastrand::u128(..) & ((1 << 80) - 1)))
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Parses the header form; `None` unless 32 hex digits of a non-zero id.
    pub fn from_header(value: &[u8]) -> Option<Self> {
        std::str::from_utf8(value).ok()?.parse().ok()
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for CorrelationId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument(format!("{s:?} is not a correlation id"));
        if s.len() != 32 {
            return Err(bad());
        }
        match u128::from_str_radix(s, 16) {
            Ok(0) | Err(_) => Err(bad()),
            Ok(id) => Ok(CorrelationId(id)),
        }
    }
}

/// A reply found in an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    record: StoredRecord,
}

impl Reply {
    /// The reply record (its value is the response body).
    pub fn record(&self) -> &StoredRecord {
        &self.record
    }

    /// The response body.
    pub fn value(&self) -> &[u8] {
        self.record.value()
    }

    /// The responder (its group name), if it said.
    pub fn from(&self) -> Option<&str> {
        self.record
            .header(HEADER_REPLIER)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The reason, if this is an error reply.
    pub fn error(&self) -> Option<&str> {
        self.record
            .header(HEADER_REPLY_ERROR)
            .map(|v| std::str::from_utf8(v).unwrap_or("(not UTF-8)"))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Name of the inbox topic of requester `name`.
pub fn inbox_topic(name: &str) -> String {
    format!("{name}.inbox")
}

/// Sends requests and collects their replies from its own inbox topic.
/// Cheap to clone; share it between threads.
#[derive(Debug, Clone)]
pub struct Requester {
    inner: Arc<RequesterInner>,
}

#[derive(Debug)]
pub(crate) struct RequesterInner {
    bus: Arc<BusInner>,
    inbox: LogTopic,
    /// `None` once the bus closed it: the mapping is gone, so a handle kept
    /// past its bus neither reads a file the next bus resizes nor marks the
    /// next bus's index clean.
    index: Mutex<Option<CorrelationIndex>>,
}

impl Requester {
    /// The requester `name` of this bus, shared with every handle already
    /// open: two tables over one mapped file would each index the inbox
    /// (every reply found twice) and reformat or resize it under the other.
    pub(crate) fn open(bus: Arc<BusInner>, name: &str) -> Result<Requester> {
        validate_name("requester", name)?;
        let mut requesters = lock(bus.requesters());
        if let Some(inner) = requesters.get(name).and_then(Weak::upgrade) {
            return Ok(Requester { inner });
        }
        let inbox = bus.topic(&inbox_topic(name))?;
        let dir = bus.state_dir("inboxes", name);
        bus.storage().create_dir_all(&dir)?;
        let path = dir.join("correlation.cix");
        let (index, _trusted) = CorrelationIndex::open(bus.storage().as_ref(), &path, inbox.start_offset())?;
        let requester = Requester {
            inner: Arc::new(RequesterInner {
                bus: bus.clone(),
                inbox,
                index: Mutex::new(Some(index)),
            }),
        };
        requesters.retain(|_, r| r.strong_count() > 0);
        requesters.insert(name.to_owned(), Arc::downgrade(&requester.inner));
        drop(requesters);
        requester.inner.catch_up()?;
        Ok(requester)
    }

    /// The inbox topic's name (the `reply-to` of every request).
    pub fn inbox(&self) -> &str {
        self.inner.inbox.name()
    }

    /// Sends `record` to `service` and waits up to `timeout` for the reply.
    /// On timeout the error names the id; a late reply stays collectable
    /// with [`Requester::reply_for`].
    pub fn request(&self, service: &str, record: &Record<'_>, timeout: Duration) -> Result<Reply> {
        let id = self.send_request(service, record)?;
        self.reply_for(id, timeout)
    }

    /// Sends `record` to `service` without waiting; collect the reply later.
    pub fn send_request(&self, service: &str, record: &Record<'_>) -> Result<CorrelationId> {
        let id = CorrelationId::new();
        self.publish_request(&self.inner.bus.topic(service)?, id, record)?;
        Ok(id)
    }

    pub(crate) fn publish_request(
        &self,
        topic: &LogTopic,
        id: CorrelationId,
        record: &Record<'_>,
    ) -> Result<u64> {
        let id_text = id.to_string();
        let request = record
            .clone()
            .header(HEADER_CORRELATION_ID, id_text.as_bytes())
            .header(HEADER_REPLY_TO, self.inner.inbox.name().as_bytes());
        topic.publish(&request)
    }

    /// The first reply to `id`, waiting up to `timeout`. Works for ids sent
    /// before a restart, as long as retention kept the reply.
    pub fn reply_for(&self, id: CorrelationId, timeout: Duration) -> Result<Reply> {
        let deadline = Instant::now() + timeout;
        loop {
            let waiter = self.inner.inbox.log().activity().waiter();
            if let Some(reply) = self.replies(id)?.into_iter().next() {
                return Ok(reply);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    correlation_id: id.as_u128(),
                });
            }
            waiter.wait_until(deadline);
        }
    }

    /// The first reply to `id`, waiting as long as it takes (async).
    pub async fn reply_async(&self, id: CorrelationId) -> Result<Reply> {
        loop {
            let listener = self.inner.inbox.log().activity().listen();
            if let Some(reply) = self.replies(id)?.into_iter().next() {
                return Ok(reply);
            }
            listener.await;
        }
    }

    /// Sends and awaits the reply (async, no timeout: wrap it in your
    /// runtime's timeout).
    pub async fn request_async(&self, service: &str, record: &Record<'_>) -> Result<Reply> {
        let id = self.send_request(service, record)?;
        self.reply_async(id).await
    }

    /// Every reply to `id` in the inbox now, in inbox order.
    pub fn replies(&self, id: CorrelationId) -> Result<Vec<Reply>> {
        self.inner.catch_up()?;
        let offsets = lock(&self.inner.index)
            .as_ref()
            .ok_or(Error::Closed)?
            .find(id.as_u128());
        let mut replies = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let Some(record) = self.inner.inbox.log().read(offset)? else {
                continue;
            };
            if record
                .header(HEADER_CORRELATION_ID)
                .and_then(CorrelationId::from_header)
                == Some(id)
            {
                replies.push(Reply { record });
            }
        }
        replies.sort_by_key(|r| r.record.offset());
        Ok(replies)
    }

    pub(crate) fn inbox_activity(&self) -> &crate::log::Activity {
        self.inner.inbox.log().activity()
    }

    pub(crate) fn bus(&self) -> &Arc<BusInner> {
        &self.inner.bus
    }

    /// Syncs the inbox and the correlation index and marks the index
    /// clean. The requester stays usable (the next reply marks it unclean).
    pub fn close(&self) -> Result<()> {
        match lock(&self.inner.index).as_mut() {
            Some(index) => self.inner.close_index(index),
            None => Ok(()),
        }
    }
}

impl RequesterInner {
    /// Closes the index for good (the bus is closing).
    pub(crate) fn close(&self) -> Result<()> {
        match lock(&self.index).take() {
            Some(mut index) => self.close_index(&mut index),
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

    /// Indexes inbox records appended since the last call.
    fn catch_up(&self) -> Result<()> {
        let mut index = lock(&self.index);
        let index = index.as_mut().ok_or(Error::Closed)?;
        let end = self.inbox.end_offset();
        let start = self.inbox.start_offset();
        let from = index.indexed_through().max(start);
        if from >= end {
            return Ok(());
        }
        let mut cursor = self.inbox.log().cursor(Position::Offset(from))?;
        while let Some(record) = cursor.next()? {
            if let Some(id) = record
                .header(HEADER_CORRELATION_ID)
                .and_then(CorrelationId::from_header)
            {
                index.insert(id.as_u128(), record.offset(), start)?;
            }
        }
        index.set_indexed_through(cursor.offset());
        Ok(())
    }
}

impl Drop for RequesterInner {
    fn drop(&mut self) {
        // Best effort: an index not closed cleanly is rebuilt at next open.
        let _ = self.close();
    }
}

/// Serves requests sent to a service topic: a consumer group named after
/// the service, so several responders share the load and failed requests
/// follow the group's retry and dead-letter policy.
#[derive(Debug, Clone)]
pub struct Responder {
    group: Group,
    bus: Arc<BusInner>,
}

impl Responder {
    /// Opens a responder that serves requests published to `service` as
    /// the consumer group `group` (see [`crate::Topic::responder`]).
    pub(crate) fn open(
        bus: Arc<BusInner>,
        service: &str,
        group: &str,
        options: GroupOptions,
    ) -> Result<Responder> {
        let group = bus.topic(service)?.group(group, options)?;
        Ok(Responder { group, bus })
    }

    /// The next request, waiting up to `timeout`.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Request>> {
        Ok(self.group.recv(timeout)?.map(|d| self.request(d)))
    }

    /// The next request if one is available now.
    pub fn try_recv(&self) -> Result<Option<Request>> {
        Ok(self.group.try_recv()?.map(|d| self.request(d)))
    }

    /// The next request, waiting as long as it takes (async).
    pub async fn recv_async(&self) -> Result<Request> {
        Ok(self.request(self.group.recv_async().await?))
    }

    fn request(&self, delivery: Delivery) -> Request {
        Request {
            delivery,
            bus: self.bus.clone(),
            replier: self.group.name().to_owned(),
        }
    }

    /// The underlying consumer group (stats, options).
    pub fn group(&self) -> &Group {
        &self.group
    }
}

/// A request being served. Reply, reply with an error, or fail it like any
/// delivery; dropping it releases it for redelivery.
#[derive(Debug)]
pub struct Request {
    delivery: Delivery,
    bus: Arc<BusInner>,
    replier: String,
}

impl Request {
    /// The request record.
    pub fn record(&self) -> &StoredRecord {
        self.delivery.record()
    }

    /// Which delivery of this request this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.delivery.attempt()
    }

    /// The request's correlation id, if it carries a valid one.
    pub fn correlation_id(&self) -> Option<CorrelationId> {
        self.record()
            .header(HEADER_CORRELATION_ID)
            .and_then(CorrelationId::from_header)
    }

    /// The inbox topic the reply goes to, if named.
    pub fn reply_to(&self) -> Option<&str> {
        self.record()
            .header(HEADER_REPLY_TO)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Appends `reply` to the requester's inbox, then acks the request.
    /// A request without valid `correlation-id` and `reply-to` headers is
    /// rejected to the dead-letter topic and this returns
    /// `Error::InvalidArgument`.
    pub fn reply(self, reply: &Record<'_>) -> Result<u64> {
        self.send(reply, None)
    }

    /// Appends an error reply (empty value, `logbus-reply-error: reason`),
    /// then acks the request.
    pub fn reply_err(self, reason: &str) -> Result<u64> {
        self.send(&Record::new(b""), Some(reason))
    }

    fn send(self, reply: &Record<'_>, error: Option<&str>) -> Result<u64> {
        let (Some(id), Some(inbox)) = (self.correlation_id(), self.reply_to().map(str::to_owned)) else {
            self.delivery
                .reject("request without a valid correlation-id or reply-to header")?;
            return Err(Error::InvalidArgument(
                "request has no valid correlation-id or reply-to header".into(),
            ));
        };
        let id_text = id.to_string();
        let mut record = reply
            .clone()
            .header(HEADER_CORRELATION_ID, id_text.as_bytes())
            .header(HEADER_REPLIER, self.replier.as_bytes());
        if let Some(reason) = error {
            record = record.header(HEADER_REPLY_ERROR, reason.as_bytes());
        }
        let offset = self.bus.topic(&inbox)?.publish(&record)?;
        self.delivery.ack()?;
        Ok(offset)
    }

    /// Fails this attempt (retry policy applies, then the dead-letter topic).
    pub fn nack(self, reason: &str) -> Result<()> {
        self.delivery.nack(reason)
    }

    /// Sends the request straight to the dead-letter topic.
    pub fn reject(self, reason: &str) -> Result<()> {
        self.delivery.reject(reason)
    }
}
