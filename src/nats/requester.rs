//! The NATS requester (the `Nats` variant of [`crate::Requester`]): the
//! inbox topic `<name>.inbox` is a stream whose subjects include
//! `logbus.<inbox>.>`; a responder publishes the reply to `id` on
//! `logbus.<inbox>.<id>` ([`reply_subject`]). The server's per-subject
//! index is the correlation index: the replies to an id are "next message
//! by subject" reads, which also find an id sent before a restart, and
//! never scan the inbox.
//!
//! Waiting: a core subscription on the id's subject, taken before each
//! look at the stream, wakes a waiting requester; a reply stored between
//! the look and the wait is delivered to that subscription too, so none is
//! missed.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;

use super::bus::NatsShared;
use super::client::records_on_subject;
use super::error::nats_error;
use super::names::{reply_subject, stream_name};
use super::topic::NatsTopic;
use crate::backend::{RequesterBackend, TopicBackend};
use crate::error::{Error, Result};
use crate::patterns::headers;
use crate::patterns::{CorrelationId, Reply, ReplyCheck};
use crate::record::StoredRecord;

/// A requester on JetStream. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct NatsRequester {
    inbox: NatsTopic,
}

impl NatsRequester {
    pub(crate) fn new(inbox: NatsTopic) -> NatsRequester {
        NatsRequester { inbox }
    }

    fn bus(&self) -> &Arc<NatsShared> {
        &self.inbox.shared().bus
    }

    /// The replies to `id` stored now, oldest first, as a task for the
    /// connection's runtime (it holds a JetStream context, not this requester).
    /// Only records carrying `id` in their `correlation-id` header count:
    /// anything else published to the subject is not a reply.
    fn replies_task(
        &self,
        id: CorrelationId,
    ) -> impl Future<Output = Result<Vec<StoredRecord>>> + Send + 'static {
        let js = self.bus().client.js().clone();
        let stream = stream_name(self.inbox());
        let subject = reply_subject(self.inbox(), id);
        async move {
            let mut replies = records_on_subject(&js, &stream, &subject).await?;
            replies.retain(|r| {
                r.header(headers::CORRELATION_ID)
                    .and_then(CorrelationId::from_header)
                    == Some(id)
            });
            Ok(replies)
        }
    }

    /// A reply found: the inbox reached past it.
    fn found(&self, record: StoredRecord) -> Reply {
        self.inbox.shared().note_end(record.offset() + 1);
        Reply::new(record)
    }

    /// A core subscription to the replies to `id` (it wakes a waiter).
    async fn wake_on(client: async_nats::Client, subject: String) -> Result<async_nats::Subscriber> {
        let subscriber = client
            .subscribe(subject)
            .await
            .map_err(|e| nats_error("subscribe", e))?;
        // The subscription must be on the server before the stream is read.
        client.flush().await.map_err(|e| nats_error("flush", e))?;
        Ok(subscriber)
    }

    /// Waits on `wake` until a message comes or `deadline` passes, as a
    /// task for the connection's runtime (its timer is there), which hands
    /// the subscription back. [`Error::Closed`] when the subscription
    /// ended: it ends only when the connection is drained, i.e. this
    /// process closed the bus.
    async fn wait_task(
        mut wake: async_nats::Subscriber,
        deadline: std::time::Instant,
    ) -> Result<async_nats::Subscriber> {
        let deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(deadline, wake.next()).await {
            Ok(None) => Err(Error::Closed),
            Ok(Some(_)) | Err(_) => Ok(wake),
        }
    }
}

impl RequesterBackend for NatsRequester {
    type Topic = NatsTopic;

    fn inbox(&self) -> &str {
        self.inbox.name()
    }

    fn topic(&self, name: &str) -> Result<NatsTopic> {
        self.bus().topic(name)
    }

    fn replies(&self, id: CorrelationId) -> Result<Vec<Reply>> {
        let bus = self.bus();
        bus.check_open()?;
        let records = bus.client.block_on(self.replies_task(id))??;
        Ok(records.into_iter().map(|r| self.found(r)).collect())
    }

    fn watch<T>(&self, id: CorrelationId, mut check: impl FnMut() -> Result<ReplyCheck<T>>) -> Result<T> {
        let client = &self.bus().client;
        let subject = reply_subject(self.inbox(), id);
        let mut wake = client.block_on(Self::wake_on(client.client().clone(), subject))??;
        loop {
            match check()? {
                ReplyCheck::Done(value) => return Ok(value),
                ReplyCheck::WaitUntil(deadline) => {
                    wake = client.block_on(Self::wait_task(wake, deadline))??;
                }
            }
        }
    }

    async fn watch_async<T: Send>(
        &self,
        id: CorrelationId,
        mut check: impl FnMut(Vec<Reply>) -> ReplyCheck<T> + Send,
    ) -> Result<T> {
        let bus = self.bus();
        bus.check_open()?;
        let client = &bus.client;
        let subject = reply_subject(self.inbox(), id);
        let mut wake = client
            .run(Self::wake_on(client.client().clone(), subject))
            .await??;
        loop {
            let records = client.run(self.replies_task(id)).await??;
            match check(records.into_iter().map(|r| self.found(r)).collect()) {
                ReplyCheck::Done(value) => return Ok(value),
                ReplyCheck::WaitUntil(deadline) => {
                    wake = client.run(Self::wait_task(wake, deadline)).await??;
                }
            }
        }
    }

    async fn reply_async(&self, id: CorrelationId) -> Result<Reply> {
        let bus = self.bus();
        bus.check_open()?;
        let client = bus.client.client().clone();
        let subject = reply_subject(self.inbox(), id);
        let requester = self.clone();
        let record = bus
            .client
            .run(async move {
                let mut wake = Self::wake_on(client, subject).await?;
                loop {
                    if let Some(first) = requester.replies_task(id).await?.into_iter().next() {
                        return Ok(first);
                    }
                    if wake.next().await.is_none() {
                        return Err(Error::Closed);
                    }
                }
            })
            .await??;
        Ok(self.found(record))
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }
}
