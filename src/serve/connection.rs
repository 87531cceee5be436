//! One joined process's connection: its reader thread, the handles the
//! owner opened for it, and the running of its requests.
//!
//! Invariants: answers are written whole under the writer's lock, so
//! concurrent answers never interleave; a handle lives in the table from
//! the answer that names it until the joined process releases it, a
//! delivery is settled, or the connection ends; when it ends, dropping
//! the table releases every delivery still held (as a dropped delivery
//! does in one process), unless the owner is closing (it leaves their
//! leases to the next owner's recovery, as those of its own), and closes
//! the rest.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event;

use super::pool::Pool;
use crate::backend::{
    BusBackend, DeliveryBackend, GroupBackend, RequesterBackend, SubscriptionBackend, TopicBackend,
};
use crate::embedded::{LogBus, LogDelivery, LogGroup, LogRequester, LogSubscription, LogTopic};
use crate::error::{Error, Result};
use crate::log::Durability;
use crate::patterns::CorrelationId;
use crate::wire::{
    ANSWER, Dec, Handed, Handle, REQUEST, Request, Response, SubState, Wait, encode_answer, read_message,
    write_message,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a handle number names.
enum Opened {
    Topic(LogTopic),
    Subscription(Arc<Mutex<LogSubscription>>),
    Group(LogGroup),
    Delivery(LogDelivery),
    Requester(LogRequester),
}

/// A wait the joined process may call off (an async receive it dropped).
#[derive(Default)]
struct Cancel {
    cancelled: AtomicBool,
    event: Event,
}

impl Cancel {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    /// Completes once cancelled.
    async fn cancelled(&self) {
        loop {
            let listener = self.event.listen();
            if self.cancelled.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }
}

/// A connection's state, shared by its reader and the workers running its
/// requests.
pub(super) struct Connection {
    bus: LogBus,
    writer: Mutex<UnixStream>,
    handles: Mutex<HashMap<Handle, Opened>>,
    next_handle: AtomicU64,
    cancels: Mutex<HashMap<u64, Arc<Cancel>>>,
}

impl Connection {
    /// Serves `stream` until the joined process hangs up or the bus
    /// closes (`stopped` is set and `stream` shut down then).
    pub(super) fn serve(bus: LogBus, stream: UnixStream, pool: &Pool, stopped: &AtomicBool) {
        let Ok(reading) = stream.try_clone() else { return };
        let connection = Arc::new(Connection {
            bus,
            writer: Mutex::new(stream),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            cancels: Mutex::new(HashMap::new()),
        });
        let mut reader = BufReader::new(reading);
        while let Ok((call, kind, body)) = read_message(&mut reader) {
            if kind != REQUEST {
                break;
            }
            let request = match Request::decode(&mut Dec::new(body)) {
                Ok(request) => request,
                Err(_) => break,
            };
            match request {
                Request::Release { handle } => drop(lock(&connection.handles).remove(&handle)),
                Request::Cancel { call } => {
                    if let Some(cancel) = lock(&connection.cancels).get(&call) {
                        cancel.cancel();
                    }
                }
                request if connection.answers_at_once(&request) => connection.answer(call, request, None),
                request => {
                    let cancel = connection.cancellable(call, &request);
                    let connection = connection.clone();
                    pool.run(move || connection.answer(call, request, cancel));
                }
            }
        }
        // Workers still running hold the connection; the handles go now.
        let cancels: Vec<Arc<Cancel>> = lock(&connection.cancels).drain().map(|(_, c)| c).collect();
        cancels.iter().for_each(|cancel| cancel.cancel());
        let handles = std::mem::take(&mut *lock(&connection.handles));
        // A joined process that went has its deliveries released. When the
        // owner closes, their leases are left to the next owner's recovery,
        // as those of its own deliveries: released now, they would write
        // to a bus closing meanwhile, or not, as the race went.
        let closing = stopped.load(Ordering::Acquire);
        for opened in handles.into_values() {
            match opened {
                Opened::Delivery(delivery) if closing => delivery.abandon(),
                opened => drop(opened),
            }
        }
        let _ = lock(&connection.writer).shutdown(std::net::Shutdown::Both);
    }

    /// Whether `request` is run on the reader thread itself: it never
    /// waits (for a record, a reply or a sync), so running it there saves
    /// waking a worker and holds up the connection's next request no
    /// longer than its own work does: publishes to a topic that does not
    /// sync each append, and what only reads.
    fn answers_at_once(&self, request: &Request) -> bool {
        match request {
            Request::Publish { topic, .. } | Request::PublishRedriven { topic, .. } => self
                .topic(*topic)
                .is_ok_and(|topic| topic.options().durability_mode() != Durability::Always),
            Request::Offsets { .. }
            | Request::TopicStats { .. }
            | Request::SubPosition { .. }
            | Request::GroupStats { .. }
            | Request::Replies { .. }
            | Request::InboxWait { wait: Wait::Now, .. } => true,
            _ => false,
        }
    }

    /// The cancel of a request that waits until something comes (an async
    /// receive), registered before the request runs, so that a cancel read
    /// right after it finds it.
    fn cancellable(&self, call: u64, request: &Request) -> Option<Arc<Cancel>> {
        let waits_forever = matches!(
            request,
            Request::SubRecv {
                wait: Wait::Forever,
                ..
            } | Request::GroupRecv {
                wait: Wait::Forever,
                ..
            } | Request::InboxWait {
                wait: Wait::Forever,
                ..
            }
        );
        waits_forever.then(|| {
            let cancel = Arc::new(Cancel::default());
            lock(&self.cancels).insert(call, cancel.clone());
            cancel
        })
    }

    fn answer(&self, call: u64, request: Request, cancel: Option<Arc<Cancel>>) {
        let answer = self.run(request, cancel.as_deref());
        if cancel.is_some() {
            lock(&self.cancels).remove(&call);
        }
        let body = encode_answer(&answer);
        let mut writer = lock(&self.writer);
        if write_message(&mut *writer, call, ANSWER, &body).is_err() {
            let _ = writer.shutdown(std::net::Shutdown::Both);
        }
    }

    fn insert(&self, opened: Opened) -> Handle {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(handle, opened);
        handle
    }

    fn topic(&self, handle: Handle) -> Result<LogTopic> {
        match lock(&self.handles).get(&handle) {
            Some(Opened::Topic(topic)) => Ok(topic.clone()),
            _ => Err(unknown(handle)),
        }
    }

    fn subscription(&self, handle: Handle) -> Result<Arc<Mutex<LogSubscription>>> {
        match lock(&self.handles).get(&handle) {
            Some(Opened::Subscription(sub)) => Ok(sub.clone()),
            _ => Err(unknown(handle)),
        }
    }

    fn group(&self, handle: Handle) -> Result<LogGroup> {
        match lock(&self.handles).get(&handle) {
            Some(Opened::Group(group)) => Ok(group.clone()),
            _ => Err(unknown(handle)),
        }
    }

    fn requester(&self, handle: Handle) -> Result<LogRequester> {
        match lock(&self.handles).get(&handle) {
            Some(Opened::Requester(requester)) => Ok(requester.clone()),
            _ => Err(unknown(handle)),
        }
    }

    /// Takes a delivery out of the table to settle it; one no longer
    /// there was settled, or released with its connection: its lease is
    /// gone.
    fn take_delivery(&self, handle: Handle) -> Result<LogDelivery> {
        match lock(&self.handles).remove(&handle) {
            Some(Opened::Delivery(delivery)) => Ok(delivery),
            _ => Err(unknown(handle)),
        }
    }

    fn deliveries(&self, taken: Vec<LogDelivery>) -> Response {
        let handed = taken
            .into_iter()
            .map(|delivery| Handed {
                attempt: delivery.attempt(),
                record: delivery.record().clone(),
                handle: self.insert(Opened::Delivery(delivery)),
            })
            .collect();
        Response::Deliveries(handed)
    }

    fn run(&self, request: Request, cancel: Option<&Cancel>) -> Result<Response> {
        let bus = &self.bus;
        Ok(match request {
            Request::Topic { name, options } => {
                let topic = match options {
                    Some(options) => bus.topic_with(&name, options)?,
                    None => bus.topic(&name)?,
                };
                Response::Topic {
                    options: topic.options().clone(),
                    start: topic.start_offset(),
                    end: topic.end_offset(),
                    handle: self.insert(Opened::Topic(topic)),
                }
            }
            Request::TopicNames => Response::Names(bus.topic_names()?),
            Request::Stats => Response::Stats(bus.stats()?),
            Request::DeleteConsumer { topic, consumer } => {
                Response::Bool(bus.delete_consumer(&topic, &consumer)?)
            }
            Request::DeleteTopic { name } => Response::Bool(bus.delete_topic(&name)?),
            Request::Requester { name } => {
                let requester = bus.requester(&name)?;
                Response::Requester {
                    inbox: requester.inbox().to_owned(),
                    handle: self.insert(Opened::Requester(requester)),
                }
            }
            Request::Publish { topic, records } => {
                let topic = self.topic(topic)?;
                let records: Vec<_> = records.iter().map(|r| r.record()).collect();
                Response::Range(topic.publish_batch(&records)?)
            }
            Request::PublishRedriven {
                topic,
                record,
                dlq_topic,
                dlq_offset,
            } => Response::U64(self.topic(topic)?.publish_redriven(
                &record.record(),
                &dlq_topic,
                dlq_offset,
            )?),
            Request::Subscribe { topic, name, start } => {
                let topic = self.topic(topic)?;
                let sub = match name {
                    Some(name) => topic.subscribe(&name, start)?,
                    None => topic.subscribe_ephemeral(start)?,
                };
                let state = sub_state(&sub);
                Response::Subscription {
                    handle: self.insert(Opened::Subscription(Arc::new(Mutex::new(sub)))),
                    state,
                }
            }
            Request::Group { topic, name, options } => {
                let group = self.topic(topic)?.group(&name, options)?;
                Response::Group {
                    on_expiry: group.on_expiry(),
                    handle: self.insert(Opened::Group(group)),
                }
            }
            Request::Offsets { topic } => {
                let topic = self.topic(topic)?;
                Response::Offsets {
                    start: topic.start_offset(),
                    end: topic.end_offset(),
                }
            }
            Request::TopicStats { topic } => Response::Stats(vec![self.topic(topic)?.stats()?]),
            Request::Purge { topic } => Response::U64(self.topic(topic)?.purge()?),
            Request::SubRecv { sub, wait } => {
                let sub = self.subscription(sub)?;
                let mut sub = lock(&sub);
                let record = match wait {
                    Wait::Now => sub.try_recv()?,
                    Wait::For(timeout) => sub.recv(timeout)?,
                    Wait::Forever => until_cancelled(cancel, sub.recv_async())?,
                };
                Response::Records {
                    records: record.into_iter().collect(),
                    state: sub_state(&sub),
                }
            }
            Request::SubCommit { sub, next_offset } => {
                let sub = self.subscription(sub)?;
                let mut sub = lock(&sub);
                match next_offset {
                    Some(next) => sub.commit_offset(next)?,
                    None => sub.commit()?,
                }
                Response::Sub(sub_state(&sub))
            }
            Request::SubSeek { sub, to } => {
                let sub = self.subscription(sub)?;
                let mut sub = lock(&sub);
                sub.seek(to)?;
                Response::Sub(sub_state(&sub))
            }
            Request::SubAutoCommit { sub, on } => {
                let sub = self.subscription(sub)?;
                let mut sub = lock(&sub);
                sub.set_auto_commit(on);
                Response::Sub(sub_state(&sub))
            }
            Request::SubPosition { sub } => Response::Sub(sub_state(&lock(&*self.subscription(sub)?))),
            Request::GroupRecv { group, max, wait } => {
                let group = self.group(group)?;
                // As asked: a batch of none leases nothing.
                let max = max as usize;
                let taken = match wait {
                    Wait::Now => group.try_recv_batch(max)?,
                    Wait::For(timeout) => group.recv_batch(max, timeout)?,
                    Wait::Forever => match until_cancelled(cancel, group.recv_async()) {
                        Ok(Some(delivery)) => vec![delivery],
                        Ok(None) => Vec::new(),
                        Err(e) => return Err(e),
                    },
                };
                self.deliveries(taken)
            }
            Request::GroupStats { group } => Response::GroupStats(self.group(group)?.stats()?),
            Request::GroupSeek { group, to } => Response::U64(self.group(group)?.seek(to)?),
            Request::Ack { delivery } => {
                self.take_delivery(delivery)?.ack()?;
                Response::Unit
            }
            Request::Nack {
                delivery,
                reason,
                delay,
            } => {
                let delivery = self.take_delivery(delivery)?;
                match delay {
                    Some(delay) => delivery.nack_with_delay(&reason, delay)?,
                    None => delivery.nack(&reason)?,
                }
                Response::Unit
            }
            Request::Reject { delivery, reason } => {
                self.take_delivery(delivery)?.reject(&reason)?;
                Response::Unit
            }
            Request::Extend { delivery, by } => {
                let mut handles = lock(&self.handles);
                match handles.get_mut(&delivery) {
                    Some(Opened::Delivery(held)) => held.extend_lease(by)?,
                    _ => return Err(unknown(delivery)),
                }
                Response::Unit
            }
            Request::Replies { requester, id } => {
                let id = CorrelationId::from_u128(id)
                    .ok_or_else(|| Error::InvalidArgument("correlation id 0".into()))?;
                let replies = self.requester(requester)?.replies(id)?;
                Response::Replies(replies.into_iter().map(|r| r.record().clone()).collect())
            }
            Request::InboxWait {
                requester,
                seen_end,
                wait,
            } => {
                let requester = self.requester(requester)?;
                let inbox = bus.topic(requester.inbox())?;
                Response::U64(wait_past(&inbox, seen_end, wait, cancel)?)
            }
            Request::PublishReply { inbox, id, record } => {
                let id = CorrelationId::from_u128(id)
                    .ok_or_else(|| Error::InvalidArgument("correlation id 0".into()))?;
                let sink = bus.topic(&inbox)?.reply_sink();
                Response::U64(sink.publish_reply(&inbox, id, &record.record())?)
            }
            Request::RequesterClose { requester } => {
                self.requester(requester)?.close()?;
                Response::Unit
            }
            Request::Release { .. } | Request::Cancel { .. } => Response::Unit,
        })
    }
}

fn unknown(handle: Handle) -> Error {
    Error::InvalidArgument(format!("no open handle {handle} on this connection"))
}

fn sub_state(sub: &LogSubscription) -> SubState {
    SubState {
        committed: sub.committed(),
        position: sub.position(),
        lag: sub.lag(),
        skipped: sub.skipped(),
    }
}

/// Runs `op` on this worker until it completes or `cancel` fires; `None`
/// if cancelled.
fn until_cancelled<T>(cancel: Option<&Cancel>, op: impl Future<Output = Result<T>>) -> Result<Option<T>> {
    let cancelled = async {
        match cancel {
            Some(cancel) => cancel.cancelled().await,
            None => std::future::pending().await,
        }
        Ok(None)
    };
    futures_lite::future::block_on(futures_lite::future::or(async { op.await.map(Some) }, cancelled))
}

/// Waits until `inbox` ends past `seen_end`, or the wait is over; its end.
fn wait_past(inbox: &LogTopic, seen_end: u64, wait: Wait, cancel: Option<&Cancel>) -> Result<u64> {
    let activity = inbox.log().activity();
    let deadline = match wait {
        Wait::For(timeout) => Some(std::time::Instant::now() + timeout),
        Wait::Now | Wait::Forever => None,
    };
    loop {
        inbox.log().check_open()?;
        match wait {
            Wait::Forever => {
                let listener = activity.listen();
                if inbox.end_offset() > seen_end {
                    return Ok(inbox.end_offset());
                }
                if until_cancelled(cancel, async {
                    listener.await;
                    Ok(())
                })?
                .is_none()
                {
                    return Ok(inbox.end_offset());
                }
            }
            _ => {
                let waiter = activity.waiter();
                let end = inbox.end_offset();
                match deadline {
                    Some(deadline) if end <= seen_end && std::time::Instant::now() < deadline => {
                        waiter.wait_until(deadline)
                    }
                    _ => return Ok(end),
                }
            }
        }
    }
}
