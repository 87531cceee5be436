//! [`Bus`], the entry point: it holds one backend (see
//! `docs/BACKENDS.md`), the embedded [`LogBus`] opened on a directory or,
//! with the `nats` feature, a connection to NATS JetStream. Each method is
//! one call into the backend.

use std::path::Path;

use crate::api::redrive::redrive;
use crate::api::{Group, Recipients, Requester, Responder, Scatter, Topic};
use crate::backend::{BusBackend, TopicBackend};
use crate::embedded::{BusOptions, LogBus};
use crate::error::Result;
use crate::patterns::check_redrive_source;
use crate::patterns::{GroupOptions, TopicOptions, TopicStats, check_same_options};
use crate::patterns::{validate_name, validate_topic_name};
use crate::record::{Record, StoredRecord};
use crate::state::ConsumerId;

/// Named topics and the patterns built on them. Cheap to clone; `Send +
/// Sync`. Every handle taken from it (topics, subscriptions, groups,
/// deliveries, requesters, responders) keeps it open; the bus closes when
/// the last clone and the last handle are dropped, or at once with
/// [`Bus::close`], after which every handle fails with
/// [`crate::Error::Closed`].
///
/// ```
/// use logbus::{Bus, BusOptions, Record};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let orders = bus.topic("orders")?;
/// orders.publish(&Record::new(b"order 1"))?;
/// assert_eq!(bus.topic_names()?, ["orders"]);
/// bus.close()?; // or drop the bus and every handle taken from it
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Bus {
    backend: AnyBus,
}

#[derive(Clone, Debug)]
enum AnyBus {
    Log(LogBus),
    #[cfg(feature = "nats")]
    Nats(crate::nats::NatsBus),
    #[cfg(feature = "processes")]
    Remote(crate::remote::RemoteBus),
}

// Zero cost without the `nats` and `processes` features: the one-variant enum has no
// discriminant, so a `Bus` is exactly the embedded handle.
#[cfg(not(any(feature = "nats", feature = "processes")))]
const _: () = assert!(size_of::<Bus>() == size_of::<LogBus>());

/// Joins `dir` if a process serves it at `socket`, else opens it as its
/// owner and serves it, or joins the owner once it serves (an owner that
/// just took the lock, or one that is gone and whose place this process
/// takes).
#[cfg(feature = "processes")]
fn open_shared(dir: &Path, socket: std::path::PathBuf, options: BusOptions) -> Result<Bus> {
    use crate::remote::{RemoteBus, Takeover};
    let (owned_dir, owned_socket, owned_options) = (dir.to_path_buf(), socket.clone(), options.clone());
    let takeover: Takeover = std::sync::Arc::new(move || {
        own(&owned_dir, &owned_socket, &owned_options)
            .map(|bus| Box::new(bus) as Box<dyn std::any::Any + Send + Sync>)
    });
    let backend = match RemoteBus::join_served(socket.clone(), takeover.clone())? {
        Some(joined) => AnyBus::Remote(joined),
        None => match own(dir, &socket, &options) {
            Ok(bus) => AnyBus::Log(bus),
            Err(crate::Error::Locked(_)) => AnyBus::Remote(RemoteBus::join(socket, takeover)?),
            Err(e) => return Err(e),
        },
    };
    Ok(Bus { backend })
}

/// Opens `dir` as its owner and serves it at `socket`.
#[cfg(feature = "processes")]
fn own(dir: &Path, socket: &Path, options: &BusOptions) -> Result<LogBus> {
    let bus = LogBus::open(dir, options.clone())?;
    crate::serve::serve(&bus, socket.to_path_buf())?;
    Ok(bus)
}

/// Opens `dir` as its owner, serving no one (an exclusive bus).
#[cfg(feature = "processes")]
fn own_alone(dir: &Path, socket: std::path::PathBuf, options: BusOptions) -> Result<Bus> {
    let bus = LogBus::open(dir, options)?;
    crate::serve::refuse(&bus, socket)?;
    Ok(Bus {
        backend: AnyBus::Log(bus),
    })
}

impl Bus {
    /// Opens (creating if needed) the embedded bus in `dir`. Fails with
    /// [`crate::Error::InvalidArgument`] if `dir` holds a [`crate::Log`].
    ///
    /// Several processes may open one directory (feature `processes`, on
    /// by default; see [`docs/PROCESSES.md`](https://github.com/logbus/logbus/blob/main/docs/PROCESSES.md)):
    /// the first owns it and serves it to the others over a socket in the
    /// directory; the others join it, and when the owner goes (closes the
    /// bus, exits, is killed) one of them takes over. Every pattern works
    /// across them. With [`BusOptions::exclusive`], without the feature,
    /// or on a storage other than the host's files, a directory another
    /// handle owns fails with [`crate::Error::Locked`] instead.
    #[inline]
    pub fn open(dir: impl AsRef<Path>, options: BusOptions) -> Result<Bus> {
        let dir = dir.as_ref();
        #[cfg(feature = "processes")]
        if let Some(socket) = options.socket_path(dir) {
            return match options.exclusive {
                false => open_shared(dir, socket, options),
                true => own_alone(dir, socket, options),
            };
        }
        Ok(Bus {
            backend: AnyBus::Log(LogBus::open(dir, options)?),
        })
    }

    /// Connects to NATS JetStream at `urls` (comma-separated, e.g.
    /// `nats://127.0.0.1:4222`; with several, the client fails over between
    /// them). Topics are streams on the server: see [`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md) for the
    /// mapping and where the semantics differ from the embedded bus.
    ///
    /// Called inside a multi-thread tokio runtime, the connection runs on
    /// that runtime (no thread of logbus's own) and the bus lives as long
    /// as it: once the runtime shut down, every call fails with
    /// [`crate::Error::Closed`]. Elsewhere (a plain thread, a
    /// current-thread runtime, another executor) it runs on a private
    /// runtime with one thread. [`crate::NatsOptions`] ("The runtime")
    /// chooses otherwise; every call works from any thread and executor
    /// either way.
    #[cfg(feature = "nats")]
    #[inline]
    pub fn connect_nats(urls: &str, options: crate::nats::NatsOptions) -> Result<Bus> {
        Ok(Bus {
            backend: AnyBus::Nats(crate::nats::NatsBus::connect(urls, options)?),
        })
    }

    /// The topic `name`, created on first use with the bus's default
    /// options; a topic already open in this bus is returned as it is,
    /// whatever its options.
    #[inline]
    pub fn topic(&self, name: &str) -> Result<Topic> {
        dispatch!(AnyBus, &self.backend, b => b.topic(name).map(Topic::from))
    }

    /// The topic `name`, created on first use with `options`. Options apply
    /// when the topic is first opened by this bus (on NATS: when its stream
    /// is created); asking again while it is open with options set
    /// otherwise fails with [`crate::Error::InvalidArgument`] naming the
    /// option, rather than ignoring them. Embedded, a dead-letter topic
    /// that a group opened has its source topic's options with
    /// `max_record_bytes` 32 KiB larger (room for the failure headers).
    #[inline]
    pub fn topic_with(&self, name: &str, options: TopicOptions) -> Result<Topic> {
        let topic: Topic = dispatch!(AnyBus, &self.backend, b => b.topic_with(name, options.clone())?.into());
        check_same_options(name, topic.options(), &options)?;
        Ok(topic)
    }

    /// A work queue: the consumer group `name` on the topic `name`, with
    /// default [`GroupOptions`].
    #[inline]
    pub fn queue(&self, name: &str) -> Result<Group> {
        self.topic(name)?.group(name, GroupOptions::default())
    }

    /// A requester named `name`, with its inbox topic `<name>.inbox`. Every
    /// handle on one name shares one requester (and one correlation index).
    #[inline]
    pub fn requester(&self, name: &str) -> Result<Requester> {
        dispatch!(AnyBus, &self.backend, b => b.requester(name).map(Requester::from))
    }

    /// A responder serving `service`: the consumer group `service` on the
    /// topic `service`, with default [`GroupOptions`].
    pub fn responder(&self, service: &str) -> Result<Responder> {
        self.responder_with(service, GroupOptions::default())
    }

    /// A responder serving `service` with the given group options (applied
    /// to the group `service` if it is open, as by [`Topic::group`]).
    #[inline]
    pub fn responder_with(&self, service: &str, options: GroupOptions) -> Result<Responder> {
        self.topic(service)?.responder(service, options)
    }

    /// Sends `record` to every recipient through `requester` (see
    /// [`Requester::scatter`]).
    pub fn scatter(
        &self,
        requester: &Requester,
        recipients: Recipients,
        record: &Record<'_>,
    ) -> Result<Scatter> {
        requester.scatter(recipients, record)
    }

    /// Moves records from a dead-letter topic back to their source topics
    /// with fresh attempt counts and an incremented `logbus-redrive-count`
    /// header. Only records for which `filter` returns true move; the others
    /// stay. Returns how many moved. A crash between moving a record and
    /// marking it moved may move it twice; on NATS the move carries a
    /// message id, so a repeat within the source stream's duplicate window
    /// (2 minutes) stores it once. Fails with
    /// [`crate::Error::InvalidArgument`], moving nothing and creating
    /// nothing, if `dlq_topic` does not exist, is not named `<topic>.dlq`,
    /// or holds a record without the `logbus-source-topic` header.
    #[inline]
    pub fn redrive(&self, dlq_topic: &str, filter: impl FnMut(&StoredRecord) -> bool) -> Result<usize> {
        check_redrive_source(dlq_topic, &self.topic_names()?)?;
        let dlq = self.topic(dlq_topic)?;
        let republish = |source: &str, record: &Record<'_>, dlq_offset| dispatch!(AnyBus, &self.backend, b => b.topic(source)?.publish_redriven(record, dlq_topic, dlq_offset));
        redrive(&dlq, republish, filter)
    }

    /// Deletes the durable subscription `name` of `topic`: its committed
    /// offset, and with it its hold on [`crate::Retention::Interest`]
    /// retention (which an abandoned subscription would keep forever).
    /// Returns whether it existed. Fails with [`crate::Error::Locked`],
    /// deleting nothing, while the subscription is open in this process.
    /// Durable once it returns: a crash after it never brings the
    /// subscription back (see `docs/SEMANTICS.md`, "Deleting"); a
    /// subscription opened under the name later starts afresh.
    #[inline]
    pub fn delete_subscription(&self, topic: &str, name: &str) -> Result<bool> {
        self.delete_consumer(topic, ConsumerId::Subscription(name.to_owned()))
    }

    /// Deletes the consumer group `name` of `topic`: its position, its
    /// records in flight and its hold on [`crate::Retention::Interest`]
    /// and [`crate::Retention::WorkQueue`] retention. Returns whether it
    /// existed. Fails with [`crate::Error::Locked`], deleting nothing,
    /// while a handle of the group is open in this process. Records it
    /// already dead-lettered stay in the dead-letter topic.
    #[inline]
    pub fn delete_group(&self, topic: &str, name: &str) -> Result<bool> {
        self.delete_consumer(topic, ConsumerId::Group(name.to_owned()))
    }

    fn delete_consumer(&self, topic: &str, consumer: ConsumerId) -> Result<bool> {
        validate_topic_name(topic)?;
        validate_name(consumer.kind().label(), consumer.name())?;
        dispatch!(AnyBus, &self.backend, b => b.delete_consumer(topic, &consumer))
    }

    /// Deletes the topic `name` with its records, its dead-letter topic
    /// `<name>.dlq` (unless it is one itself) and the state of every
    /// consumer of both (for a requester's inbox, its correlation index
    /// too). Returns whether the topic existed. Fails with
    /// [`crate::Error::Locked`], deleting nothing, while this process
    /// holds a handle of either topic (a [`Topic`], or a subscription,
    /// group, responder or requester taken from it). A topic opened under
    /// the name later is a new, empty one, whose offsets start at 0.
    #[inline]
    pub fn delete_topic(&self, name: &str) -> Result<bool> {
        validate_topic_name(name)?;
        dispatch!(AnyBus, &self.backend, b => b.delete_topic(name))
    }

    /// Records what [`Bus::stats`] reports through the [`metrics`] facade
    /// (feature `metrics`), for whatever exporter the application installed
    /// (Prometheus, StatsD, ...): call it periodically, or before each
    /// scrape. Per topic (label `topic`): `logbus_topic_start_offset`,
    /// `logbus_topic_end_offset`, `logbus_topic_bytes`,
    /// `logbus_topic_syncs_total`, `logbus_topic_sync_seconds_total`. Per
    /// durable consumer (labels `topic`, `consumer`, `kind` =
    /// `subscription` or `group`): `logbus_consumer_committed`,
    /// `logbus_consumer_lag`, `logbus_consumer_oldest_unconsumed_age_seconds`
    /// (0 when caught up). Per consumer group open in this process (same
    /// labels): `logbus_group_in_flight`, `logbus_group_waiting`,
    /// `logbus_group_oldest_unacked_age_seconds`, and the counters
    /// `logbus_group_acked_total`, `logbus_group_redeliveries_total`,
    /// `logbus_group_dead_lettered_total` (since the group opened in this
    /// process).
    ///
    /// ```
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let bus = logbus::Bus::open(dir.path(), logbus::BusOptions::default())?;
    /// bus.topic("orders")?.publish(&logbus::Record::new(b"1"))?;
    /// bus.record_metrics()?; // e.g. from the exporter's scrape hook
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) -> Result<()> {
        super::metrics::record(&self.stats()?);
        Ok(())
    }

    /// Stats of every topic opened through this bus (on NATS: asked of the
    /// server, one round trip per topic and per consumer).
    #[inline]
    pub fn stats(&self) -> Result<Vec<TopicStats>> {
        dispatch!(AnyBus, &self.backend, b => b.stats())
    }

    /// Names of the topics stored in the bus (the bus directory's topics,
    /// or the logbus streams on the NATS server), sorted.
    #[inline]
    pub fn topic_names(&self) -> Result<Vec<String>> {
        dispatch!(AnyBus, &self.backend, b => b.topic_names())
    }

    /// Closes every topic and consumer state and releases the directory
    /// lock (on NATS: drains and closes the connection). Later calls on any
    /// handle from this bus fail with [`crate::Error::Closed`].
    #[inline]
    pub fn close(&self) -> Result<()> {
        dispatch!(AnyBus, &self.backend, b => b.close())
    }
}
