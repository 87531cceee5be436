//! Request-reply: a [`Requester`] publishes a request to a service topic
//! with `correlation-id` and `reply-to` headers; a [`crate::Responder`] (a
//! consumer group on the service topic) publishes its reply to the
//! requester's inbox topic; the requester finds the replies to an id in
//! its inbox (embedded: `src/embedded/requester.rs`, a correlation index; on NATS: a
//! subject per id).
//!
//! Invariants: correlation ids are unique across restarts (48-bit
//! millisecond time, 80 random bits); a reply is acked on the request only
//! after it is stored in the inbox, so a responder crash means a
//! redelivered request and possibly a second reply (the requester takes the
//! first); every reply returned carries the id asked for in its
//! `correlation-id` header.

use std::time::{Duration, Instant};

use crate::api::Topic;
use crate::backend::RequesterBackend;
use crate::clock::wall_ms;
use crate::embedded::LogRequester;
use crate::error::{Error, Result};
use crate::log::{Async, Block, Wait, ready};
use crate::patterns::CorrelationId;
use crate::patterns::Reply;
use crate::patterns::ReplyCheck;
use crate::patterns::expires_after;
use crate::patterns::headers::EXPIRES_AT;
use crate::patterns::request_record;
use crate::patterns::{Ledger, StartAt, sent_record};
use crate::record::Record;

/// How long reading the inbox for [`Requester::pending`] waits for a record
/// it knows is there (NATS: a pull's round trip) before it takes the
/// inbox as read.
const LEDGER_READ_WAIT: Duration = Duration::from_secs(1);

/// Publishes `record` to `topic`, waiting as `W` says (blocking, or on the
/// async path).
async fn publish_in<W: Wait>(topic: &Topic, record: &Record<'_>, _: W) -> Result<u64> {
    match W::BLOCKS {
        true => topic.publish(record),
        false => topic.publish_async(record).await,
    }
}

/// Sends requests and collects their replies from its own inbox topic.
/// Cheap to clone; share it between threads.
///
/// Embedded, the inbox has a correlation index next to it; on NATS each
/// correlation id has its own subject in the inbox's stream, whose
/// per-subject index finds the replies ([`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md)). Either way a
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
    #[cfg(feature = "processes")]
    Remote(crate::remote::RemoteRequester),
}

// Zero cost without the `nats` and `processes` features: the one-variant enum has no
// discriminant, so a `Requester` is exactly the embedded one.
#[cfg(not(any(feature = "nats", feature = "processes")))]
const _: () = assert!(size_of::<Requester>() == size_of::<LogRequester>());

#[cfg(feature = "processes")]
impl From<crate::remote::RemoteRequester> for Requester {
    #[inline]
    fn from(backend: crate::remote::RemoteRequester) -> Requester {
        Requester {
            backend: AnyRequester::Remote(backend),
        }
    }
}

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
    /// The request carries its deadline ([`crate::headers::EXPIRES_AT`]):
    /// a responder that receives it later does not serve it, but settles
    /// it as its group's [`crate::OnExpiry`] says (dead-lettered as
    /// `expired` by default). On timeout the error names the id; a reply
    /// sent in time that arrives late stays collectable with
    /// [`Requester::reply_for`].
    pub fn request(&self, service: &str, record: &Record<'_>, timeout: Duration) -> Result<Reply> {
        let id = CorrelationId::new();
        let expires_at = expires_after(wall_ms(), timeout);
        let record = record.clone().header(EXPIRES_AT, expires_at.as_bytes());
        ready(self.publish_request(&self.topic(service)?, id, &record, Block))?;
        self.reply_for(id, timeout)
    }

    /// Sends `record` to `service` without waiting; collect the reply later.
    /// The id is noted in the inbox first, so [`Requester::pending`] lists
    /// it until a reply arrives, also after a restart.
    pub fn send_request(&self, service: &str, record: &Record<'_>) -> Result<CorrelationId> {
        let id = CorrelationId::new();
        let service = self.topic(service)?;
        ready(self.note_sent(id, None, Block))?;
        ready(self.publish_request(&service, id, record, Block))?;
        Ok(id)
    }

    /// The requests sent through this requester's name with
    /// [`Requester::send_request`] or a scatter (before a restart too)
    /// that still wait: a request without a reply, a scatter with a
    /// recipient that has not replied; oldest first. Read from the inbox
    /// (from its first record: the cost follows the inbox's size, which its
    /// retention bounds), so a request whose note retention removed is not
    /// listed. A request whose publish failed after its note (a crash
    /// between the two) is listed and never answered. [`Requester::request`]
    /// and [`Requester::request_async`], which wait for their reply in the
    /// call, note nothing.
    pub fn pending(&self) -> Result<Vec<CorrelationId>> {
        Ok(self.ledger()?.pending())
    }

    /// The sent notes and replies of the inbox, read from its start to
    /// its end as of now.
    pub(crate) fn ledger(&self) -> Result<Ledger> {
        let inbox = self.topic(self.inbox())?;
        let end = inbox.stats()?.end_offset;
        let mut reader = inbox.subscribe_ephemeral(StartAt::Earliest)?;
        let mut ledger = Ledger::default();
        while reader.position() < end {
            match reader.recv(LEDGER_READ_WAIT)? {
                Some(record) => ledger.read(&record),
                None => break,
            }
        }
        Ok(ledger)
    }

    /// Notes `id` as sent in the inbox (a scatter's with its recipients),
    /// before the request goes out; see `patterns/sent.rs`.
    pub(crate) async fn note_sent<W: Wait>(
        &self,
        id: CorrelationId,
        scatter: Option<&[String]>,
        wait: W,
    ) -> Result<()> {
        let id_text = id.hex();
        let inbox = self.topic(self.inbox())?;
        publish_in(&inbox, &sent_record(id_text.as_str(), scatter), wait).await?;
        Ok(())
    }

    /// The topic `name` on this requester's bus.
    #[inline]
    pub(crate) fn topic(&self, name: &str) -> Result<Topic> {
        dispatch!(AnyRequester, &self.backend, r => r.topic(name).map(Topic::from))
    }

    /// Publishes `record` to `topic` as the request `id`; its offset.
    #[inline]
    pub(crate) async fn publish_request<W: Wait>(
        &self,
        topic: &Topic,
        id: CorrelationId,
        record: &Record<'_>,
        wait: W,
    ) -> Result<u64> {
        let id_text = id.hex();
        let request = request_record(record, id_text.as_str(), self.inbox());
        publish_in(topic, &request, wait).await
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

    /// [`Requester::watch`] as a future; `check` is given the replies to
    /// `id` stored so far.
    #[inline]
    pub(crate) async fn watch_async<T: Send>(
        &self,
        id: CorrelationId,
        check: impl FnMut(Vec<Reply>) -> ReplyCheck<T> + Send,
    ) -> Result<T> {
        dispatch!(AnyRequester, &self.backend, r => r.watch_async(id, check).await)
    }

    /// The first reply to `id`, waiting as long as it takes (async).
    #[inline]
    pub async fn reply_async(&self, id: CorrelationId) -> Result<Reply> {
        dispatch!(AnyRequester, &self.backend, r => r.reply_async(id).await)
    }

    /// Sends and awaits the reply (async, any executor; no timeout: wrap
    /// it in your runtime's timeout). The request is published with
    /// [`Topic::publish_async`]. Cancellation: dropped before its first
    /// poll, nothing was sent; dropped later, the request may be stored
    /// (and served) and its reply is collectable only by an id this caller
    /// never learnt: use [`Requester::send_request`] and
    /// [`Requester::reply_async`] to keep the id.
    pub async fn request_async(&self, service: &str, record: &Record<'_>) -> Result<Reply> {
        let id = CorrelationId::new();
        self.publish_request(&self.topic(service)?, id, record, Async)
            .await?;
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
