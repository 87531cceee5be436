//! Request-reply: a [`Requester`] publishes a request to a service topic
//! with `correlation-id` and `reply-to` headers; a [`crate::Responder`] (a
//! consumer group on the service topic) publishes its reply to the
//! requester's inbox topic; the requester finds the replies to an id in
//! its inbox (embedded: `log_request.rs`, a correlation index; on NATS: a
//! subject per id).
//!
//! Invariants: correlation ids are unique across restarts (48-bit
//! millisecond time, 80 random bits); a reply is acked on the request only
//! after it is stored in the inbox, so a responder crash means a
//! redelivered request and possibly a second reply (the requester takes the
//! first); every reply returned carries the id asked for in its
//! `correlation-id` header.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::backend::RequesterBackend;
use crate::error::{Error, Result};
use crate::log::now_ms;
use crate::patterns::headers;
use crate::patterns::log_request::LogRequester;
use crate::patterns::topic::Topic;
use crate::record::{Record, StoredRecord};

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
    pub(crate) fn new(record: StoredRecord) -> Reply {
        Reply { record }
    }

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
            .header(headers::REPLIER)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The reason, if this is an error reply.
    pub fn error(&self) -> Option<&str> {
        self.record
            .header(headers::REPLY_ERROR)
            .map(|v| std::str::from_utf8(v).unwrap_or("(not UTF-8)"))
    }
}

/// Name of the inbox topic of requester `name`.
pub fn inbox_topic(name: &str) -> String {
    format!("{name}.inbox")
}

/// The request as published: `record` plus the `correlation-id` and
/// `reply-to` headers.
fn request_record<'a>(record: &Record<'a>, id_text: &'a str, inbox: &'a str) -> Record<'a> {
    record
        .clone()
        .header(headers::CORRELATION_ID, id_text.as_bytes())
        .header(headers::REPLY_TO, inbox.as_bytes())
}

/// What a check of the inbox decided: done, or look again once a reply
/// arrives or at the instant given, whichever comes first.
pub(crate) enum ReplyCheck<T> {
    Done(T),
    WaitUntil(Instant),
}

/// Sends requests and collects their replies from its own inbox topic.
/// Cheap to clone; share it between threads.
///
/// Embedded, the inbox has a correlation index next to it; on NATS each
/// correlation id has its own subject in the inbox's stream, whose
/// per-subject index finds the replies (`docs/NATS.md`). Either way a
/// reply to an id sent before a restart is found as long as retention
/// kept it.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Bus, BusOptions, Record};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let pricing = bus.responder("pricing")?;
/// let checkout = bus.requester("checkout")?;
/// let id = checkout.send_request("pricing", &Record::new(b"basket-42"))?;
/// // Usually another thread or process: the responder serves the request.
/// let request = pricing.recv(Duration::from_secs(1))?.expect("a request");
/// request.reply(&Record::new(b"12.50"))?;
/// let reply = checkout.reply_for(id, Duration::from_secs(1))?; // also after a restart
/// assert_eq!(reply.value(), b"12.50");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Requester {
    backend: AnyRequester,
}

#[derive(Debug, Clone)]
enum AnyRequester {
    Log(LogRequester),
    #[cfg(feature = "nats")]
    Nats(crate::nats::NatsRequester),
}

// Zero cost without the `nats` feature: the one-variant enum has no
// discriminant, so a `Requester` is exactly the embedded one.
#[cfg(not(feature = "nats"))]
const _: () = assert!(size_of::<Requester>() == size_of::<LogRequester>());

impl From<LogRequester> for Requester {
    #[inline]
    fn from(requester: LogRequester) -> Requester {
        Requester {
            backend: AnyRequester::Log(requester),
        }
    }
}

#[cfg(feature = "nats")]
impl From<crate::nats::NatsRequester> for Requester {
    #[inline]
    fn from(requester: crate::nats::NatsRequester) -> Requester {
        Requester {
            backend: AnyRequester::Nats(requester),
        }
    }
}

impl Requester {
    /// The inbox topic's name (the `reply-to` of every request).
    #[inline]
    pub fn inbox(&self) -> &str {
        dispatch!(AnyRequester, &self.backend, r => r.inbox())
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
        self.publish_request(&self.topic(service)?, id, record)?;
        Ok(id)
    }

    /// The topic `name` on this requester's bus.
    #[inline]
    pub(crate) fn topic(&self, name: &str) -> Result<Topic> {
        dispatch!(AnyRequester, &self.backend, r => r.topic(name).map(Topic::from))
    }

    /// Publishes `record` to `topic` as the request `id`; its offset.
    pub(crate) fn publish_request(
        &self,
        topic: &Topic,
        id: CorrelationId,
        record: &Record<'_>,
    ) -> Result<u64> {
        let id_text = id.to_string();
        topic.publish(&request_record(record, &id_text, self.inbox()))
    }

    /// The first reply to `id`, waiting up to `timeout`. Works for ids sent
    /// before a restart, as long as retention kept the reply.
    pub fn reply_for(&self, id: CorrelationId, timeout: Duration) -> Result<Reply> {
        let deadline = Instant::now() + timeout;
        self.watch(id, || {
            if let Some(reply) = self.replies(id)?.into_iter().next() {
                return Ok(ReplyCheck::Done(Ok(reply)));
            }
            Ok(match Instant::now() >= deadline {
                true => ReplyCheck::Done(Err(Error::Timeout {
                    correlation_id: id.as_u128(),
                })),
                false => ReplyCheck::WaitUntil(deadline),
            })
        })?
    }

    /// Runs `check` until it is done, waiting in between until a reply to
    /// `id` may have arrived or the instant it names.
    #[inline]
    pub(crate) fn watch<T>(
        &self,
        id: CorrelationId,
        check: impl FnMut() -> Result<ReplyCheck<T>>,
    ) -> Result<T> {
        dispatch!(AnyRequester, &self.backend, r => r.watch(id, check))
    }

    /// The first reply to `id`, waiting as long as it takes (async).
    #[inline]
    pub async fn reply_async(&self, id: CorrelationId) -> Result<Reply> {
        dispatch!(AnyRequester, &self.backend, r => r.reply_async(id).await)
    }

    /// Sends and awaits the reply (async, no timeout: wrap it in your
    /// runtime's timeout).
    pub async fn request_async(&self, service: &str, record: &Record<'_>) -> Result<Reply> {
        let id = self.send_request(service, record)?;
        self.reply_async(id).await
    }

    /// Every reply to `id` in the inbox now, in inbox order.
    #[inline]
    pub fn replies(&self, id: CorrelationId) -> Result<Vec<Reply>> {
        dispatch!(AnyRequester, &self.backend, r => r.replies(id))
    }

    /// Embedded: syncs the inbox and the correlation index and marks the
    /// index clean; the requester stays usable (the next reply marks it
    /// unclean). On NATS there is nothing to sync: the server holds the
    /// inbox.
    #[inline]
    pub fn close(&self) -> Result<()> {
        dispatch!(AnyRequester, &self.backend, r => r.close())
    }
}
