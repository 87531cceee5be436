//! [`RemoteSubscription`]: a subscription of a joined bus. The owner
//! holds the cursor and the committed position; this handle keeps where
//! it stands, from each answer, to answer the getters and to open itself
//! again on a new owner where its reader left off.

use std::sync::Mutex;
use std::time::Duration;

use super::RemoteTopic;
use super::client::{Client, Link};
use super::unexpected;
use crate::backend::SubscriptionBackend;
use crate::error::Result;
use crate::patterns::StartAt;
use crate::record::StoredRecord;
use crate::wire::{Handle, Request, Response, SubState, Wait};

#[derive(Debug)]
pub(crate) struct RemoteSubscription {
    topic: RemoteTopic,
    name: Option<String>,
    start: StartAt,
    auto_commit: bool,
    /// As the owner's last answer said (set while opening, from `&self`).
    state: Mutex<SubState>,
    /// Whether a record was received: a new owner then resumes at
    /// `state.position` instead of `start`.
    moved: bool,
    bound: Mutex<Option<(u64, Handle)>>,
}

impl Drop for RemoteSubscription {
    fn drop(&mut self) {
        self.topic.client().release(&self.bound);
    }
}

impl RemoteSubscription {
    pub(crate) fn open(
        topic: RemoteTopic,
        name: Option<String>,
        start: StartAt,
    ) -> Result<RemoteSubscription> {
        let sub = RemoteSubscription {
            topic,
            name,
            start,
            auto_commit: true,
            state: Mutex::new(SubState::default()),
            moved: false,
            bound: Mutex::new(None),
        };
        sub.topic.client().opening(|link| sub.handle(link))?;
        Ok(sub)
    }

    /// Its handle on `link`: subscribes there if needed, and on a new
    /// owner moves to where this reader was.
    fn handle(&self, link: &Link) -> Result<Handle> {
        Client::bound(link, &self.bound, |link| {
            let subscribe = Request::Subscribe {
                topic: self.topic.handle(link)?,
                name: self.name.clone(),
                start: self.start,
            };
            let Response::Subscription { handle, state } = link.ask(&subscribe)? else {
                return Err(unexpected());
            };
            let position = self.state().position;
            self.noted(state);
            if !self.auto_commit {
                link.ask(&Request::SubAutoCommit {
                    sub: handle,
                    on: false,
                })?;
            }
            if self.moved {
                let seek = Request::SubSeek {
                    sub: handle,
                    to: StartAt::Offset(position),
                };
                match link.ask(&seek)? {
                    Response::Sub(state) => self.noted(state),
                    _ => return Err(unexpected()),
                }
            }
            Ok(handle)
        })
    }

    fn noted(&self, state: SubState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn state(&self) -> SubState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first record of a receive's answer.
    fn received(&mut self, response: Response) -> Result<Option<StoredRecord>> {
        match response {
            Response::Records { mut records, state } => {
                self.noted(state);
                self.moved |= !records.is_empty();
                Ok((!records.is_empty()).then(|| records.remove(0)))
            }
            _ => Err(unexpected()),
        }
    }

    fn recv_with(&mut self, wait: Wait) -> Result<Option<StoredRecord>> {
        let client = self.topic.client().clone();
        let response = client.call(|link| {
            Ok(Request::SubRecv {
                sub: self.handle(link)?,
                wait,
            })
        })?;
        self.received(response)
    }

    fn position_changed(&mut self, response: Response) -> Result<()> {
        match response {
            Response::Sub(state) => {
                self.noted(state);
                Ok(())
            }
            _ => Err(unexpected()),
        }
    }

    fn commit_request(&self, link: &Link, next_offset: Option<u64>) -> Result<Request> {
        Ok(Request::SubCommit {
            sub: self.handle(link)?,
            next_offset,
        })
    }
}

impl SubscriptionBackend for RemoteSubscription {
    fn set_auto_commit(&mut self, on: bool) {
        self.auto_commit = on;
        let client = self.topic.client().clone();
        // A failed call leaves it to the next owner, which is told at open.
        if let Ok(response) = client.call(|link| {
            Ok(Request::SubAutoCommit {
                sub: self.handle(link)?,
                on,
            })
        }) {
            let _ = self.position_changed(response);
        }
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<StoredRecord>> {
        self.recv_with(Wait::For(timeout))
    }

    fn try_recv(&mut self) -> Result<Option<StoredRecord>> {
        self.recv_with(Wait::Now)
    }

    async fn recv_async(&mut self) -> Result<StoredRecord> {
        let client = self.topic.client().clone();
        loop {
            let this = &*self;
            let response = client
                .call_async(|link| {
                    Ok(Request::SubRecv {
                        sub: this.handle(link)?,
                        wait: Wait::Forever,
                    })
                })
                .await?;
            if let Some(record) = self.received(response)? {
                return Ok(record);
            }
        }
    }

    fn commit(&mut self) -> Result<()> {
        let client = self.topic.client().clone();
        let response = client.call(|link| self.commit_request(link, None))?;
        self.position_changed(response)
    }

    async fn commit_async(&mut self) -> Result<()> {
        let client = self.topic.client().clone();
        let this = &*self;
        let response = client.call_async(|link| this.commit_request(link, None)).await?;
        self.position_changed(response)
    }

    fn commit_offset(&mut self, next_offset: u64) -> Result<()> {
        let client = self.topic.client().clone();
        let response = client.call(|link| self.commit_request(link, Some(next_offset)))?;
        self.position_changed(response)
    }

    fn seek(&mut self, to: StartAt) -> Result<u64> {
        let client = self.topic.client().clone();
        let response = client.call(|link| {
            Ok(Request::SubSeek {
                sub: self.handle(link)?,
                to,
            })
        })?;
        self.position_changed(response)?;
        self.moved = true;
        Ok(self.state().position)
    }

    fn committed(&self) -> u64 {
        self.state().committed
    }

    fn position(&self) -> u64 {
        self.state().position
    }

    fn lag(&self) -> u64 {
        let client = self.topic.client();
        match client.call(|link| {
            Ok(Request::SubPosition {
                sub: self.handle(link)?,
            })
        }) {
            Ok(Response::Sub(state)) => state.lag,
            _ => self.state().lag,
        }
    }

    fn skipped(&self) -> u64 {
        self.state().skipped
    }
}
