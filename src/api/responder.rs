//! The serving side of request-reply: a [`Responder`] is a consumer group
//! on a service topic (so several share the load, and failed requests
//! follow the group's retry and dead-letter policy); each [`Request`] it
//! hands out is answered into the inbox its `reply-to` header names.
//!
//! Invariant: a request is acked only after its reply is stored, so a
//! crash in between redelivers the request (and may reply twice; the
//! requester takes the first reply).

use std::sync::Arc;
use std::time::Duration;

use crate::api::{Delivery, Group, RecvStream};
use crate::backend::ReplySink;
use crate::error::{Error, Result};
use crate::log::{Async, Block, Wait, ready};
use crate::patterns::CorrelationId;
use crate::patterns::headers;
use crate::record::{Record, StoredRecord};

/// Serves requests sent to a service topic: a consumer group named after
/// the service (or any group of the topic, see [`crate::Topic::responder`]).
///
/// ```
/// use std::time::Duration;
/// use logbus::{Bus, BusOptions, Record};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let pricing = bus.responder("pricing")?;
/// let id = bus.requester("checkout")?.send_request("pricing", &Record::new(b"sku-7"))?;
/// while let Some(request) = pricing.recv(Duration::from_millis(10))? {
///     match request.record().value() {
///         b"sku-7" => request.reply(&Record::new(b"3.20"))?,
///         _ => request.reply_err("unknown sku")?, // an error reply, not a retry
///     };
/// }
/// assert_eq!(bus.requester("checkout")?.replies(id)?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Responder {
    group: Group,
    replies: Arc<dyn ReplySink>,
}

impl Responder {
    /// A responder that serves the requests `group` receives.
    pub(crate) fn new(group: Group, replies: Arc<dyn ReplySink>) -> Responder {
        Responder { group, replies }
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
            replies: self.replies.clone(),
            replier: self.group.name().to_owned(),
        }
    }

    /// The requests, as a [`futures_core::Stream`] of
    /// [`Responder::recv_async`] on a clone of this handle: `while let
    /// Some(request) = stream.next().await`, answering each with
    /// [`Request::reply_async`]. It ends after yielding an error; dropping
    /// it loses no request.
    pub fn stream(&self) -> RecvStream<'static, Request> {
        RecvStream::new(self.clone(), |r: &mut Responder| Box::pin(r.recv_async()))
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
    replies: Arc<dyn ReplySink>,
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
            .header(headers::CORRELATION_ID)
            .and_then(CorrelationId::from_header)
    }

    /// The inbox topic the reply goes to, if named.
    pub fn reply_to(&self) -> Option<&str> {
        self.record()
            .header(headers::REPLY_TO)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Stores `reply` in the requester's inbox, then acks the request; the
    /// reply's offset in the inbox. A request without valid
    /// `correlation-id` and `reply-to` headers is rejected to the
    /// dead-letter topic and this returns `Error::InvalidArgument`.
    pub fn reply(self, reply: &Record<'_>) -> Result<u64> {
        ready(self.send(reply, None, Block))
    }

    /// Stores an error reply (empty value, `logbus-reply-error: reason`),
    /// then acks the request.
    pub fn reply_err(self, reason: &str) -> Result<u64> {
        ready(self.send(&Record::new(b""), Some(reason), Block))
    }

    /// [`Request::reply`] as a future, for any executor: awaiting it never
    /// blocks the thread on a sync or a round trip (see
    /// [`crate::Topic::publish_async`] and [`crate::Delivery::ack_async`]).
    ///
    /// Cancellation: dropped before its first poll, the request is released
    /// for redelivery (as a dropped request is); dropped later, the reply
    /// may be stored and the request may or may not be acked: it may be
    /// served again, and the requester takes the first reply.
    ///
    /// ```
    /// use logbus::{Bus, BusOptions, Record};
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let bus = Bus::open(dir.path(), BusOptions::default())?;
    /// let pricing = bus.responder("pricing")?;
    /// let checkout = bus.requester("checkout")?;
    /// let sku = Record::new(b"sku-7");
    /// let reply = futures::executor::block_on(async {
    ///     let asked = checkout.request_async("pricing", &sku);
    ///     let served = async {
    ///         let request = pricing.recv_async().await?;
    ///         request.reply_async(&Record::new(b"3.20")).await
    ///     };
    ///     let (reply, served) = futures::join!(asked, served);
    ///     served?;
    ///     reply
    /// })?;
    /// assert_eq!(reply.value(), b"3.20");
    /// # Ok(()) }
    /// ```
    pub async fn reply_async(self, reply: &Record<'_>) -> Result<u64> {
        self.send(reply, None, Async).await
    }

    /// [`Request::reply_err`] as a future; cancellation as
    /// [`Request::reply_async`].
    pub async fn reply_err_async(self, reason: &str) -> Result<u64> {
        self.send(&Record::new(b""), Some(reason), Async).await
    }

    #[inline]
    async fn send<W: Wait>(self, reply: &Record<'_>, error: Option<&str>, _: W) -> Result<u64> {
        let (Some(id), Some(inbox)) = (self.correlation_id(), self.reply_to().map(str::to_owned)) else {
            let reason = "request without a valid correlation-id or reply-to header";
            match W::BLOCKS {
                true => self.delivery.reject(reason)?,
                false => self.delivery.reject_async(reason).await?,
            }
            return Err(Error::InvalidArgument(
                "request has no valid correlation-id or reply-to header".into(),
            ));
        };
        let id_text = id.hex();
        let mut record = reply
            .clone()
            .header(headers::CORRELATION_ID, id_text.as_str().as_bytes())
            .header(headers::REPLIER, self.replier.as_bytes());
        if let Some(reason) = error {
            record = record.header(headers::REPLY_ERROR, reason.as_bytes());
        }
        let offset = match W::BLOCKS {
            true => self.replies.publish_reply(&inbox, id, &record)?,
            false => self.replies.publish_reply_async(&inbox, id, &record).await?,
        };
        match W::BLOCKS {
            true => self.delivery.ack()?,
            false => self.delivery.ack_async().await?,
        }
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
