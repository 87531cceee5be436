//! [`RemoteTopic`]: a topic of a joined bus, and [`RemoteReplies`], where
//! a joined process's responders store replies.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::client::{Client, Link};
use super::unexpected;
use super::{RemoteGroup, RemoteSubscription};
use crate::backend::{BoxFuture, ReplySink, TopicBackend};
use crate::error::{Error, Result};
use crate::patterns::{CorrelationId, GroupOptions, StartAt, TopicOptions, TopicStats};
use crate::record::Record;
use crate::wire::{Handle, OwnedRecord, Request, Response};

/// A topic of a joined bus. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RemoteTopic {
    shared: Arc<TopicShared>,
}

#[derive(Debug)]
struct TopicShared {
    client: Arc<Client>,
    name: String,
    /// The options it was asked for with (`None`: as it is), to open it
    /// again on a new owner.
    asked: Option<TopicOptions>,
    /// The options it is open with.
    options: TopicOptions,
    bound: Mutex<Option<(u64, Handle)>>,
    /// The offsets last learnt, for the getters that cannot fail.
    start: AtomicU64,
    end: AtomicU64,
}

impl Drop for TopicShared {
    fn drop(&mut self) {
        self.client.release(&self.bound);
    }
}

/// Encodes records to publish.
fn owned(records: &[Record<'_>]) -> Result<Vec<OwnedRecord>> {
    records
        .iter()
        .map(|record| {
            OwnedRecord::new(record).ok_or_else(|| Error::RecordTooLarge {
                size: u64::MAX,
                max: u64::from(u32::MAX),
            })
        })
        .collect()
}

fn range(response: Response) -> Result<Range<u64>> {
    match response {
        Response::Range(range) => Ok(range),
        _ => Err(unexpected()),
    }
}

impl RemoteTopic {
    pub(crate) fn open(client: Arc<Client>, name: &str, asked: Option<TopicOptions>) -> Result<RemoteTopic> {
        let (generation, handle, options, start, end) = client.opening(|link| {
            let (handle, options, start, end) = Self::ask_open(link, name, asked.as_ref())?;
            Ok((link.generation, handle, options, start, end))
        })?;
        let bound = Mutex::new(Some((generation, handle)));
        Ok(RemoteTopic {
            shared: Arc::new(TopicShared {
                client,
                name: name.to_owned(),
                asked,
                options,
                bound,
                start: AtomicU64::new(start),
                end: AtomicU64::new(end),
            }),
        })
    }

    fn ask_open(
        link: &Link,
        name: &str,
        asked: Option<&TopicOptions>,
    ) -> Result<(Handle, TopicOptions, u64, u64)> {
        let request = Request::Topic {
            name: name.to_owned(),
            options: asked.cloned(),
        };
        match link.ask(&request)? {
            Response::Topic {
                handle,
                options,
                start,
                end,
            } => Ok((handle, options, start, end)),
            _ => Err(unexpected()),
        }
    }

    pub(crate) fn client(&self) -> &Arc<Client> {
        &self.shared.client
    }

    /// Its handle on `link`, opening it there if needed.
    pub(crate) fn handle(&self, link: &Link) -> Result<Handle> {
        let shared = &self.shared;
        Client::bound(link, &shared.bound, |link| {
            Ok(Self::ask_open(link, &shared.name, shared.asked.as_ref())?.0)
        })
    }

    fn noted(&self, range: Range<u64>) -> Range<u64> {
        self.shared.end.fetch_max(range.end, Ordering::Relaxed);
        range
    }

    fn publish_request(&self, link: &Link, records: &[OwnedRecord]) -> Result<Request> {
        Ok(Request::Publish {
            topic: self.handle(link)?,
            records: records.to_vec(),
        })
    }

    fn offsets(&self) -> Result<(u64, u64)> {
        match self.shared.client.call(|link| {
            Ok(Request::Offsets {
                topic: self.handle(link)?,
            })
        })? {
            Response::Offsets { start, end } => {
                self.shared.start.store(start, Ordering::Relaxed);
                self.shared.end.store(end, Ordering::Relaxed);
                Ok((start, end))
            }
            _ => Err(unexpected()),
        }
    }
}

impl TopicBackend for RemoteTopic {
    type Subscription = RemoteSubscription;
    type Group = RemoteGroup;

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn options(&self) -> &TopicOptions {
        &self.shared.options
    }

    fn publish_batch(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        let records = owned(records)?;
        let response = self
            .shared
            .client
            .call(|link| self.publish_request(link, &records))?;
        range(response).map(|r| self.noted(r))
    }

    async fn publish_async(&self, record: &Record<'_>) -> Result<u64> {
        Ok(self
            .publish_batch_async(std::slice::from_ref(record))
            .await?
            .start)
    }

    async fn publish_batch_async(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        let records = owned(records)?;
        let response = self
            .shared
            .client
            .call_async(|link| self.publish_request(link, &records))
            .await?;
        range(response).map(|r| self.noted(r))
    }

    fn publish_redriven(&self, record: &Record<'_>, dlq_topic: &str, dlq_offset: u64) -> Result<u64> {
        let record = owned(std::slice::from_ref(record))?.remove(0);
        let response = self.shared.client.call(|link| {
            Ok(Request::PublishRedriven {
                topic: self.handle(link)?,
                record: record.clone(),
                dlq_topic: dlq_topic.to_owned(),
                dlq_offset,
            })
        })?;
        match response {
            Response::U64(offset) => Ok(offset),
            _ => Err(unexpected()),
        }
    }

    fn subscribe(&self, name: &str, start: StartAt) -> Result<RemoteSubscription> {
        RemoteSubscription::open(self.clone(), Some(name.to_owned()), start)
    }

    fn subscribe_ephemeral(&self, start: StartAt) -> Result<RemoteSubscription> {
        RemoteSubscription::open(self.clone(), None, start)
    }

    fn group(&self, name: &str, options: GroupOptions) -> Result<RemoteGroup> {
        RemoteGroup::open(self.clone(), name, options)
    }

    fn reply_sink(&self) -> Arc<dyn ReplySink> {
        Arc::new(RemoteReplies {
            client: self.shared.client.clone(),
        })
    }

    fn end_offset(&self) -> u64 {
        match self.offsets() {
            Ok((_, end)) => end,
            Err(_) => self.shared.end.load(Ordering::Relaxed),
        }
    }

    fn start_offset(&self) -> u64 {
        match self.offsets() {
            Ok((start, _)) => start,
            Err(_) => self.shared.start.load(Ordering::Relaxed),
        }
    }

    fn stats(&self) -> Result<TopicStats> {
        match self.shared.client.call(|link| {
            Ok(Request::TopicStats {
                topic: self.handle(link)?,
            })
        })? {
            Response::Stats(mut stats) if stats.len() == 1 => Ok(stats.remove(0)),
            _ => Err(unexpected()),
        }
    }

    fn purge(&self) -> Result<u64> {
        match self.shared.client.call(|link| {
            Ok(Request::Purge {
                topic: self.handle(link)?,
            })
        })? {
            Response::U64(end) => Ok(end),
            _ => Err(unexpected()),
        }
    }
}

/// Stores a joined process's replies through the owner.
#[derive(Debug)]
pub(crate) struct RemoteReplies {
    client: Arc<Client>,
}

impl RemoteReplies {
    fn request(inbox: &str, id: CorrelationId, reply: &Record<'_>) -> Result<Request> {
        Ok(Request::PublishReply {
            inbox: inbox.to_owned(),
            id: id.as_u128(),
            record: owned(std::slice::from_ref(reply))?.remove(0),
        })
    }
}

fn offset(response: Response) -> Result<u64> {
    match response {
        Response::U64(offset) => Ok(offset),
        _ => Err(unexpected()),
    }
}

impl ReplySink for RemoteReplies {
    fn publish_reply(&self, inbox: &str, id: CorrelationId, reply: &Record<'_>) -> Result<u64> {
        let request = Self::request(inbox, id, reply)?;
        let response = self.client.call(|_| Ok(request.clone()))?;
        offset(response)
    }

    fn publish_reply_async<'a>(
        &'a self,
        inbox: &'a str,
        id: CorrelationId,
        reply: &'a Record<'a>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let request = Self::request(inbox, id, reply)?;
            let response = self.client.call_async(|_| Ok(request.clone())).await?;
            offset(response)
        })
    }
}
