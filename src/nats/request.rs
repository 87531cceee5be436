//! Request-reply on NATS, two ways.
//!
//! - Core: the request goes to `logbus-rpc.<service>` with the
//!   `correlation-id` header and a private reply inbox; a responder in the
//!   queue group `logbus` answers on that inbox. Nothing is stored: a
//!   request without a live responder fails at once ("no responders").
//! - Durable: requests are records of the service's stream (served by a
//!   group, as on the embedded bus); the responder publishes its reply to
//!   `logbus.<inbox>.<correlation id>`, a subject of the requester's inbox
//!   stream. The server's per-subject index is the correlation index: the
//!   first reply is a "next message by subject" read, which also works for
//!   an id sent before a restart. A core subscription on that subject,
//!   taken before the read, wakes a waiting requester.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;

use super::client::NatsClient;
use super::codec::{encode_headers, millis, stored_record};
use super::error::nats_error;
use super::names::{core_request_subject, reply_subject, stream_name};
use crate::error::{Error, Result};
use crate::patterns::{CorrelationId, HEADER_CORRELATION_ID, HEADER_REPLIER};
use crate::record::{Record, StoredRecord};

/// Queue group shared by every core responder of a service.
const CORE_QUEUE_GROUP: &str = "logbus";

impl NatsClient {
    /// Sends `record` to `service` over core request-reply and waits up to
    /// `timeout` for the reply, which carries the same correlation id.
    pub fn request_core(
        &self,
        service: &str,
        record: &Record<'_>,
        timeout: Duration,
    ) -> Result<(CorrelationId, StoredRecord)> {
        let id = CorrelationId::new();
        let mut headers = encode_headers(record)?;
        headers.insert(HEADER_CORRELATION_ID, id.to_string());
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(Bytes::copy_from_slice(record.value()))
            .timeout(Some(timeout));
        let reply = self
            .block_on(self.client().send_request(core_request_subject(service), request))?
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => Error::Timeout {
                    correlation_id: id.as_u128(),
                },
                _ => nats_error("request", e),
            })?;
        let replied = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_CORRELATION_ID))
            .and_then(|v| v.as_str().parse::<CorrelationId>().ok());
        if replied != Some(id) {
            return Err(Error::InvalidArgument(format!(
                "reply carries correlation id {replied:?}, not {id}"
            )));
        }
        let record = stored_record(reply.headers.as_ref(), &reply.payload, 0, crate::log::now_ms())?;
        Ok((id, record))
    }

    /// Serves core requests to `service` (queue group: responders share them).
    pub fn serve_core(&self, service: &str) -> Result<CoreResponder> {
        let subscriber = self
            .block_on(
                self.client()
                    .queue_subscribe(core_request_subject(service), CORE_QUEUE_GROUP.into()),
            )?
            .map_err(|e| nats_error("subscribe", e))?;
        // The subscription must reach the server before a request is sent.
        self.block_on(self.client().flush())?
            .map_err(|e| nats_error("flush", e))?;
        Ok(CoreResponder {
            bus: self.clone(),
            subscriber,
        })
    }

    /// Publishes a reply to `id` into the inbox topic `inbox` (durable):
    /// its offset in the inbox.
    pub fn publish_reply(
        &self,
        inbox: &str,
        id: CorrelationId,
        replier: &str,
        reply: &Record<'_>,
    ) -> Result<u64> {
        let id_text = id.to_string();
        let record = reply
            .clone()
            .header(HEADER_CORRELATION_ID, id_text.as_bytes())
            .header(HEADER_REPLIER, replier.as_bytes());
        Ok(self.publish_to(reply_subject(inbox, id), &record, None)?.0)
    }

    /// Every reply to `id` in the inbox topic `inbox`, oldest first: reads
    /// by subject, never scans the inbox.
    pub fn replies(&self, inbox: &str, id: CorrelationId) -> Result<Vec<StoredRecord>> {
        let subject = reply_subject(inbox, id);
        self.block_on(async {
            let stream = self.stream_of(inbox).await?;
            let mut replies = Vec::new();
            let mut next = 1;
            loop {
                match stream.get_first_raw_message_by_subject(&subject, next).await {
                    Ok(m) => {
                        next = m.sequence + 1;
                        replies.push(stored_record(
                            Some(&m.headers),
                            &m.payload,
                            m.sequence,
                            millis(&m.time),
                        )?);
                    }
                    Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(replies),
                    Err(e) => return Err(nats_error("get message by subject", e)),
                }
            }
        })?
    }

    /// The first reply to `id`, waiting up to `timeout`.
    pub fn reply_for(&self, inbox: &str, id: CorrelationId, timeout: Duration) -> Result<StoredRecord> {
        let deadline = Instant::now() + timeout;
        // Subscribe first, then read: a reply published in between wakes us.
        let mut wake = self
            .block_on(self.client().subscribe(reply_subject(inbox, id)))?
            .map_err(|e| nats_error("subscribe", e))?;
        loop {
            if let Some(reply) = self.replies(inbox, id)?.into_iter().next() {
                return Ok(reply);
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(Error::Timeout {
                    correlation_id: id.as_u128(),
                });
            }
            let _ = self.block_on(async { tokio::time::timeout(wait, wake.next()).await })?;
        }
    }
}

/// Serves core requests to one service.
#[derive(Debug)]
pub struct CoreResponder {
    bus: NatsClient,
    subscriber: async_nats::Subscriber,
}

impl CoreResponder {
    /// The next request, waiting up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<CoreRequest>> {
        let next = self
            .bus
            .block_on(async { tokio::time::timeout(timeout, self.subscriber.next()).await })?;
        let Ok(Some(message)) = next else {
            return Ok(None);
        };
        let record = stored_record(
            message.headers.as_ref(),
            &message.payload,
            0,
            crate::log::now_ms(),
        )?;
        Ok(Some(CoreRequest {
            bus: self.bus.clone(),
            reply_to: message.reply.map(|s| s.to_string()),
            record,
        }))
    }
}

/// A core request being served.
#[derive(Debug)]
pub struct CoreRequest {
    bus: NatsClient,
    reply_to: Option<String>,
    record: StoredRecord,
}

impl CoreRequest {
    /// The request record (offset 0: core messages have no sequence).
    pub fn record(&self) -> &StoredRecord {
        &self.record
    }

    /// The request's correlation id.
    pub fn correlation_id(&self) -> Option<CorrelationId> {
        self.record
            .header(HEADER_CORRELATION_ID)
            .and_then(CorrelationId::from_header)
    }

    /// Answers with `reply`, carrying the request's correlation id and
    /// `logbus-replier: replier`.
    pub fn reply(self, replier: &str, reply: &Record<'_>) -> Result<()> {
        let (Some(reply_to), Some(id)) = (self.reply_to.clone(), self.correlation_id()) else {
            return Err(Error::InvalidArgument(
                "request has no reply subject or correlation id".into(),
            ));
        };
        let id_text = id.to_string();
        let record = reply
            .clone()
            .header(HEADER_CORRELATION_ID, id_text.as_bytes())
            .header(HEADER_REPLIER, replier.as_bytes());
        let headers: HeaderMap = encode_headers(&record)?;
        let payload = Bytes::copy_from_slice(record.value());
        self.bus.block_on(async {
            let client = self.bus.client();
            client
                .publish_with_headers(reply_to, headers, payload)
                .await
                .map_err(|e| nats_error("reply", e))?;
            client.flush().await.map_err(|e| nats_error("flush", e))
        })?
    }
}

/// Max-deliveries advisories of one group's consumer: the server's notice
/// that it stopped redelivering a message (the backstop that finds a
/// message whose dead-lettering was interrupted).
#[derive(Debug)]
pub struct MaxDeliveriesWatch {
    bus: NatsClient,
    subscriber: async_nats::Subscriber,
}

impl NatsClient {
    /// Watches the max-deliveries advisories of `group` on `topic`.
    pub fn watch_max_deliveries(&self, topic: &str, group: &str) -> Result<MaxDeliveriesWatch> {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            stream_name(topic),
            super::names::group_consumer_name(group)
        );
        let subscriber = self
            .block_on(self.client().subscribe(subject))?
            .map_err(|e| nats_error("subscribe", e))?;
        self.block_on(self.client().flush())?
            .map_err(|e| nats_error("flush", e))?;
        Ok(MaxDeliveriesWatch {
            bus: self.clone(),
            subscriber,
        })
    }
}

impl MaxDeliveriesWatch {
    /// The offset named by the next advisory, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<u64>> {
        let next = self
            .bus
            .block_on(async { tokio::time::timeout(timeout, self.subscriber.next()).await })?;
        let Ok(Some(message)) = next else {
            return Ok(None);
        };
        Ok(json_u64(&message.payload, "stream_seq").map(|seq| seq.saturating_sub(1)))
    }
}

/// The unsigned integer field `name` of a flat JSON object (advisories are
/// small and fixed in shape; no JSON parser needed).
fn json_u64(json: &[u8], name: &str) -> Option<u64> {
    let text = std::str::from_utf8(json).ok()?;
    let at = text.find(&format!("\"{name}\":"))? + name.len() + 3;
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
