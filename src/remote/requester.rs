//! [`RemoteRequester`]: a requester of a joined bus. Its inbox and
//! correlation index are the owner's; waiting for a reply is waiting, on
//! the owner, for the inbox to grow past what the last check saw.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::RemoteTopic;
use super::client::{Client, Link};
use super::unexpected;
use crate::backend::RequesterBackend;
use crate::error::Result;
use crate::patterns::{CorrelationId, Reply, ReplyCheck};
use crate::wire::{Handle, Request, Response, Wait};

/// A requester of a joined bus. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RemoteRequester {
    shared: Arc<RequesterShared>,
}

#[derive(Debug)]
struct RequesterShared {
    client: Arc<Client>,
    name: String,
    inbox: String,
    bound: Mutex<Option<(u64, Handle)>>,
}

impl Drop for RequesterShared {
    fn drop(&mut self) {
        self.client.release(&self.bound);
    }
}

fn ask_open(link: &Link, name: &str) -> Result<(Handle, String)> {
    match link.ask(&Request::Requester {
        name: name.to_owned(),
    })? {
        Response::Requester { handle, inbox } => Ok((handle, inbox)),
        _ => Err(unexpected()),
    }
}

fn end(response: Response) -> Result<u64> {
    match response {
        Response::U64(end) => Ok(end),
        _ => Err(unexpected()),
    }
}

impl RemoteRequester {
    pub(crate) fn open(client: Arc<Client>, name: &str) -> Result<RemoteRequester> {
        let (generation, handle, inbox) = client.opening(|link| {
            let (handle, inbox) = ask_open(link, name)?;
            Ok((link.generation, handle, inbox))
        })?;
        Ok(RemoteRequester {
            shared: Arc::new(RequesterShared {
                bound: Mutex::new(Some((generation, handle))),
                client,
                name: name.to_owned(),
                inbox,
            }),
        })
    }

    fn handle(&self, link: &Link) -> Result<Handle> {
        let shared = &self.shared;
        Client::bound(link, &shared.bound, |link| Ok(ask_open(link, &shared.name)?.0))
    }

    fn inbox_wait(&self, link: &Link, seen_end: u64, wait: Wait) -> Result<Request> {
        Ok(Request::InboxWait {
            requester: self.handle(link)?,
            seen_end,
            wait,
        })
    }

    /// The inbox's end now.
    async fn inbox_end(&self) -> Result<u64> {
        end(self
            .shared
            .client
            .call_async(|link| self.inbox_wait(link, 0, Wait::Now))
            .await?)
    }

    fn replies_request(&self, link: &Link, id: CorrelationId) -> Result<Request> {
        Ok(Request::Replies {
            requester: self.handle(link)?,
            id: id.as_u128(),
        })
    }

    fn found(response: Response) -> Result<Vec<Reply>> {
        match response {
            Response::Replies(records) => Ok(records.into_iter().map(Reply::new).collect()),
            _ => Err(unexpected()),
        }
    }
}

impl RequesterBackend for RemoteRequester {
    type Topic = RemoteTopic;

    fn inbox(&self) -> &str {
        &self.shared.inbox
    }

    fn topic(&self, name: &str) -> Result<RemoteTopic> {
        RemoteTopic::open(self.shared.client.clone(), name, None)
    }

    fn replies(&self, id: CorrelationId) -> Result<Vec<Reply>> {
        Self::found(self.shared.client.call(|link| self.replies_request(link, id))?)
    }

    fn watch<T>(&self, _id: CorrelationId, mut check: impl FnMut() -> Result<ReplyCheck<T>>) -> Result<T> {
        let client = &self.shared.client;
        let mut seen = end(client.call(|link| self.inbox_wait(link, 0, Wait::Now))?)?;
        loop {
            match check()? {
                ReplyCheck::Done(value) => return Ok(value),
                ReplyCheck::WaitUntil(deadline) => {
                    let wait = Wait::For(deadline.saturating_duration_since(Instant::now()));
                    seen = end(client.call(|link| self.inbox_wait(link, seen, wait))?)?;
                }
            }
        }
    }

    async fn watch_async<T: Send>(
        &self,
        id: CorrelationId,
        mut check: impl FnMut(Vec<Reply>) -> ReplyCheck<T> + Send,
    ) -> Result<T> {
        let client = &self.shared.client;
        let mut seen = self.inbox_end().await?;
        loop {
            let replies = Self::found(client.call_async(|link| self.replies_request(link, id)).await?)?;
            match check(replies) {
                ReplyCheck::Done(value) => return Ok(value),
                ReplyCheck::WaitUntil(deadline) => {
                    let wait = Wait::For(deadline.saturating_duration_since(Instant::now()));
                    seen = end(client
                        .call_async(|link| self.inbox_wait(link, seen, wait))
                        .await?)?;
                }
            }
        }
    }

    async fn reply_async(&self, id: CorrelationId) -> Result<Reply> {
        let client = &self.shared.client;
        let mut seen = self.inbox_end().await?;
        loop {
            let replies = Self::found(client.call_async(|link| self.replies_request(link, id)).await?)?;
            if let Some(reply) = replies.into_iter().next() {
                return Ok(reply);
            }
            seen = end(client
                .call_async(|link| self.inbox_wait(link, seen, Wait::Forever))
                .await?)?;
        }
    }

    fn close(&self) -> Result<()> {
        let client = &self.shared.client;
        match client.call(|link| {
            Ok(Request::RequesterClose {
                requester: self.handle(link)?,
            })
        })? {
            Response::Unit => Ok(()),
            _ => Err(unexpected()),
        }
    }
}
