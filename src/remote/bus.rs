//! [`RemoteBus`]: a bus directory owned by another process.

use std::path::PathBuf;
use std::sync::Arc;

use super::client::{Client, Takeover};
use super::unexpected;
use super::{RemoteRequester, RemoteTopic};
use crate::backend::BusBackend;
use crate::error::Result;
use crate::patterns::{TopicOptions, TopicStats};
use crate::state::ConsumerId;
use crate::wire::{Request, Response};

/// A joined bus. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RemoteBus {
    client: Arc<Client>,
}

impl RemoteBus {
    /// Joins the bus served at `socket` (taking over with `takeover` if
    /// its owner is gone).
    pub(crate) fn join(socket: PathBuf, takeover: Takeover) -> Result<RemoteBus> {
        Ok(RemoteBus {
            client: Client::join(socket, takeover)?,
        })
    }

    /// Joins the bus if an owner serves it at `socket` now.
    pub(crate) fn join_served(socket: PathBuf, takeover: Takeover) -> Result<Option<RemoteBus>> {
        Ok(Client::join_served(socket, takeover)?.map(|client| RemoteBus { client }))
    }
}

impl BusBackend for RemoteBus {
    type Topic = RemoteTopic;
    type Requester = RemoteRequester;

    fn topic(&self, name: &str) -> Result<RemoteTopic> {
        RemoteTopic::open(self.client.clone(), name, None)
    }

    fn topic_with(&self, name: &str, options: TopicOptions) -> Result<RemoteTopic> {
        RemoteTopic::open(self.client.clone(), name, Some(options))
    }

    fn requester(&self, name: &str) -> Result<RemoteRequester> {
        RemoteRequester::open(self.client.clone(), name)
    }

    fn stats(&self) -> Result<Vec<TopicStats>> {
        match self.client.call(|_| Ok(Request::Stats))? {
            Response::Stats(stats) => Ok(stats),
            _ => Err(unexpected()),
        }
    }

    fn topic_names(&self) -> Result<Vec<String>> {
        match self.client.call(|_| Ok(Request::TopicNames))? {
            Response::Names(names) => Ok(names),
            _ => Err(unexpected()),
        }
    }

    fn delete_consumer(&self, topic: &str, consumer: &ConsumerId) -> Result<bool> {
        let request = || Request::DeleteConsumer {
            topic: topic.to_owned(),
            consumer: consumer.clone(),
        };
        match self.client.call(|_| Ok(request()))? {
            Response::Bool(deleted) => Ok(deleted),
            _ => Err(unexpected()),
        }
    }

    fn delete_topic(&self, name: &str) -> Result<bool> {
        match self.client.call(|_| {
            Ok(Request::DeleteTopic {
                name: name.to_owned(),
            })
        })? {
            Response::Bool(deleted) => Ok(deleted),
            _ => Err(unexpected()),
        }
    }

    fn close(&self) -> Result<()> {
        self.client.close();
        Ok(())
    }
}
