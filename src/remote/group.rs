//! [`RemoteGroup`]: a consumer group of a joined bus, and the
//! [`RemoteDelivery`]s it hands out. The owner runs the group; a delivery
//! is the owner's, by number, and settles only there: once that owner is
//! gone its lease is too ([`crate::Error::LeaseExpired`]), and the next
//! owner's recovery makes the record available again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::RemoteTopic;
use super::client::{Client, Link};
use super::unexpected;
use crate::backend::{DeliveryBackend, GroupBackend};
use crate::clock::wall_ms;
use crate::error::{Error, Result};
use crate::patterns::{GroupOptions, GroupStats, OnExpiry, StartAt};
use crate::record::StoredRecord;
use crate::wire::{Handle, Request, Response, Wait};

/// A group of a joined bus. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RemoteGroup {
    shared: Arc<GroupShared>,
}

#[derive(Debug)]
struct GroupShared {
    topic: RemoteTopic,
    name: String,
    options: GroupOptions,
    bound: Mutex<Option<(u64, Handle)>>,
}

impl Drop for GroupShared {
    fn drop(&mut self) {
        self.topic.client().release(&self.bound);
    }
}

impl RemoteGroup {
    pub(crate) fn open(topic: RemoteTopic, name: &str, options: GroupOptions) -> Result<RemoteGroup> {
        let group = RemoteGroup {
            shared: Arc::new(GroupShared {
                topic,
                name: name.to_owned(),
                options,
                bound: Mutex::new(None),
            }),
        };
        group.client().opening(|link| group.handle(link))?;
        Ok(group)
    }

    fn client(&self) -> &Arc<Client> {
        self.shared.topic.client()
    }

    fn handle(&self, link: &Link) -> Result<Handle> {
        let shared = &self.shared;
        Client::bound(link, &shared.bound, |link| {
            let request = Request::Group {
                topic: shared.topic.handle(link)?,
                name: shared.name.clone(),
                options: shared.options.clone(),
            };
            match link.ask(&request)? {
                Response::Group { handle, .. } => Ok(handle),
                _ => Err(unexpected()),
            }
        })
    }

    fn recv_request(&self, link: &Link, max: usize, wait: Wait) -> Result<Request> {
        Ok(Request::GroupRecv {
            group: self.handle(link)?,
            max: u32::try_from(max).unwrap_or(u32::MAX),
            wait,
        })
    }

    /// The deliveries of a receive's answer, on the link (`generation`)
    /// it came on.
    fn delivered(&self, (generation, response): (u64, Response)) -> Result<Vec<RemoteDelivery>> {
        let Response::Deliveries(handed) = response else {
            return Err(unexpected());
        };
        Ok(handed
            .into_iter()
            .map(|handed| RemoteDelivery {
                client: self.client().clone(),
                generation,
                handle: handed.handle,
                attempt: handed.attempt,
                record: handed.record,
                settled: false,
            })
            .collect())
    }

    fn recv_with(&self, max: usize, wait: Wait) -> Result<Vec<RemoteDelivery>> {
        let response = self
            .client()
            .call_linked(|link| self.recv_request(link, max, wait))?;
        self.delivered(response)
    }
}

impl GroupBackend for RemoteGroup {
    type Delivery = RemoteDelivery;

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn recv(&self, timeout: Duration) -> Result<Option<RemoteDelivery>> {
        Ok(self.recv_with(1, Wait::For(timeout))?.pop())
    }

    fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<RemoteDelivery>> {
        self.recv_with(max, Wait::For(timeout))
    }

    fn try_recv(&self) -> Result<Option<RemoteDelivery>> {
        Ok(self.recv_with(1, Wait::Now)?.pop())
    }

    fn try_recv_batch(&self, max: usize) -> Result<Vec<RemoteDelivery>> {
        self.recv_with(max, Wait::Now)
    }

    async fn recv_async(&self) -> Result<RemoteDelivery> {
        loop {
            let response = self
                .client()
                .call_linked_async(|link| self.recv_request(link, 1, Wait::Forever))
                .await?;
            if let Some(delivery) = self.delivered(response)?.pop() {
                return Ok(delivery);
            }
        }
    }

    fn stats(&self) -> Result<GroupStats> {
        match self.client().call(|link| {
            Ok(Request::GroupStats {
                group: self.handle(link)?,
            })
        })? {
            Response::GroupStats(stats) => Ok(stats),
            _ => Err(unexpected()),
        }
    }

    fn seek(&self, to: StartAt) -> Result<u64> {
        match self.client().call(|link| {
            Ok(Request::GroupSeek {
                group: self.handle(link)?,
                to,
            })
        })? {
            Response::U64(offset) => Ok(offset),
            _ => Err(unexpected()),
        }
    }

    fn on_expiry(&self) -> OnExpiry {
        self.shared.options.on_expiry
    }

    fn now_ms(&self) -> i64 {
        wall_ms()
    }
}

/// A record a joined process received from a group.
#[derive(Debug)]
pub(crate) struct RemoteDelivery {
    client: Arc<Client>,
    /// The link (owner) that handed it out.
    generation: u64,
    handle: Handle,
    attempt: u32,
    record: StoredRecord,
    settled: bool,
}

impl RemoteDelivery {
    /// The link it was handed out on: [`Error::LeaseExpired`] once that
    /// owner is gone.
    fn link(&self) -> Result<Arc<Link>> {
        let link = self.client.link()?;
        match link.generation == self.generation {
            true => Ok(link),
            false => Err(Error::LeaseExpired {
                offset: self.record.offset(),
            }),
        }
    }

    fn settle(mut self, request: Request) -> Result<()> {
        self.settled = true;
        match self.link()?.ask(&request)? {
            Response::Unit => Ok(()),
            _ => Err(unexpected()),
        }
    }

    async fn settle_async(mut self, request: Request) -> Result<()> {
        self.settled = true;
        let link = self.link()?;
        match link.ask_async(&request).await? {
            Response::Unit => Ok(()),
            _ => Err(unexpected()),
        }
    }

    fn nack_request(&self, reason: &str, delay: Option<Duration>) -> Request {
        Request::Nack {
            delivery: self.handle,
            reason: reason.to_owned(),
            delay,
        }
    }
}

impl Drop for RemoteDelivery {
    fn drop(&mut self) {
        if !self.settled {
            self.client.release_on(self.generation, self.handle);
        }
    }
}

impl DeliveryBackend for RemoteDelivery {
    fn record(&self) -> &StoredRecord {
        &self.record
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn ack(self) -> Result<()> {
        let request = Request::Ack {
            delivery: self.handle,
        };
        self.settle(request)
    }

    fn nack(self, reason: &str) -> Result<()> {
        let request = self.nack_request(reason, None);
        self.settle(request)
    }

    fn nack_with_delay(self, reason: &str, delay: Duration) -> Result<()> {
        let request = self.nack_request(reason, Some(delay));
        self.settle(request)
    }

    fn reject(self, reason: &str) -> Result<()> {
        let request = Request::Reject {
            delivery: self.handle,
            reason: reason.to_owned(),
        };
        self.settle(request)
    }

    async fn ack_async(self) -> Result<()> {
        let request = Request::Ack {
            delivery: self.handle,
        };
        self.settle_async(request).await
    }

    async fn nack_async(self, reason: &str, delay: Option<Duration>) -> Result<()> {
        let request = self.nack_request(reason, delay);
        self.settle_async(request).await
    }

    async fn reject_async(self, reason: &str) -> Result<()> {
        let request = Request::Reject {
            delivery: self.handle,
            reason: reason.to_owned(),
        };
        self.settle_async(request).await
    }

    fn extend_lease(&mut self, by: Duration) -> Result<()> {
        let request = Request::Extend {
            delivery: self.handle,
            by,
        };
        match self.link()?.ask(&request)? {
            Response::Unit => Ok(()),
            _ => Err(unexpected()),
        }
    }
}
