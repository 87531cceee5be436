//! # logbus
//!
//! Crash-safe messaging embedded in your application. One primitive, an
//! append-only segmented [`Log`] with memory-mapped indexes, carries five
//! messaging patterns on a [`Bus`] (a directory of topics), or on NATS
//! JetStream with the `nats` feature and the same types.
//!
//! ## The log
//!
//! ```
//! use logbus::{Durability, Log, LogOptions, Position, Record};
//! # fn main() -> logbus::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path(), LogOptions::default().durability(Durability::Always))?;
//! let first = log.append(&Record::new(b"hello").key(b"greeting").header("lang", b"en"))?;
//! let batch = log.append_batch(&[Record::new(b"a"), Record::new(b"b")])?;
//! assert_eq!(batch, first + 1..first + 3);
//!
//! let mut cursor = log.cursor(Position::Earliest)?;
//! while let Some(record) = cursor.next()? {
//!     println!("{} {:?}", record.offset(), record.value());
//! }
//! log.close()?;
//! # Ok(()) }
//! ```
//!
//! ## Publish-subscribe: every [`Subscription`] sees every record
//!
//! ```
//! # use logbus::{Bus, BusOptions, Record, StartAt};
//! # fn main() -> logbus::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let bus = Bus::open(dir.path(), BusOptions::default())?;
//! let news = bus.topic("news")?;
//! let (mut mobile, mut email) = (news.subscribe("mobile", StartAt::Latest)?, news.subscribe("email", StartAt::Latest)?);
//! news.publish(&Record::new(b"headline"))?;
//! assert!(mobile.try_recv()?.is_some() && email.try_recv()?.is_some());
//! # Ok(()) }
//! ```
//!
//! ## Queues: a [`Group`] hands each record to one of its receivers
//!
//! ```
//! # use std::time::Duration;
//! # use logbus::{Bus, BusOptions, Record};
//! # fn main() -> logbus::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let bus = Bus::open(dir.path(), BusOptions::default())?;
//! let jobs = bus.queue("jobs")?; // the group "jobs" on the topic "jobs"
//! bus.topic("jobs")?.publish(&Record::new(b"resize a.png"))?;
//! if let Some(job) = jobs.recv(Duration::from_secs(1))? {
//!     job.ack()?; // or nack(reason): retried with backoff, then dead-lettered
//! }
//! # Ok(()) }
//! ```
//!
//! ## Dead letters: exhausted records land in `<topic>.dlq`, and can be redriven
//!
//! ```
//! # use std::time::Duration;
//! # use logbus::{Bus, BusOptions, Record};
//! # fn main() -> logbus::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let bus = Bus::open(dir.path(), BusOptions::default())?;
//! let jobs = bus.queue("jobs")?;
//! bus.topic("jobs")?.publish(&Record::new(b"poison"))?;
//! jobs.try_recv()?.expect("a job").reject("malformed")?; // straight to "jobs.dlq"
//! assert_eq!(bus.topic("jobs.dlq")?.end_offset(), 1);
//! let moved = bus.redrive("jobs.dlq", |_| true)?; // back to "jobs", fresh attempts
//! assert_eq!(moved, 1);
//! # Ok(()) }
//! ```
//!
//! ## Request-reply: a [`Requester`] asks, a [`Responder`] answers
//!
//! ```
//! # use std::time::Duration;
//! # use logbus::{Bus, BusOptions, Record};
//! # fn main() -> logbus::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let bus = Bus::open(dir.path(), BusOptions::default())?;
//! let pricing = bus.responder("pricing")?;
//! std::thread::spawn(move || {
//!     if let Ok(Some(request)) = pricing.recv(Duration::from_secs(5)) {
//!         let _ = request.reply(&Record::new(b"12.50"));
//!     }
//! });
//! let reply = bus.requester("checkout")?.request("pricing", &Record::new(b"basket-42"), Duration::from_secs(5))?;
//! assert_eq!(reply.value(), b"12.50");
//! # Ok(()) }
//! ```
//!
//! ## Scatter-gather: one request to many, replies gathered by a [`Gather`] rule
//!
//! ```
//! # use std::time::Duration;
//! # use logbus::{Bus, BusOptions, Gather, Recipients, Record};
//! # fn main() -> logbus::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let bus = Bus::open(dir.path(), BusOptions::default())?;
//! let regions = ["eu", "us"].map(|name| bus.responder(name)).into_iter().collect::<logbus::Result<Vec<_>>>()?;
//! let scatter = bus.requester("quotes")?.scatter(Recipients::Services(vec!["eu".into(), "us".into()]), &Record::new(b"sku-7"))?;
//! for region in &regions {
//!     region.try_recv()?.expect("a request").reply(&Record::new(b"3.20"))?;
//! }
//! let gathered = scatter.gather(Gather::all(Duration::from_secs(1)))?;
//! assert_eq!((gathered.replies.len(), gathered.missing.len()), (2, 0));
//! # Ok(()) }
//! ```
//!
//! What survives a crash or a power loss under each [`Durability`] mode is
//! in [`docs/SEMANTICS.md`]; the on-disk format in [`docs/FORMAT.md`].
//!
//! ## Features
//!
//! The default build is the library alone. Storage is pluggable through
//! [`storage::Storage`] ([`LogOptions::storage`], [`BusOptions::storage`]).
//!
//! - `nats`: the NATS JetStream backend, `Bus::connect_nats`
//!   ([`docs/NATS.md`]).
//! - `tracing`: `tracing` events for recovery truncation, lease expiry,
//!   dead-lettering and redrive.
//! - `test-util`: test doubles and fuzz bodies: `storage::SimStorage` and
//!   `storage::Fault`, an in-memory file system that injects torn writes,
//!   fsync errors, disk full and power loss; `clock::SimClock`, a clock
//!   that moves only when the test advances it or a wait jumps it
//!   (`BusOptions::clock`); and `logbus::fuzzing`, the bodies of the
//!   targets in `fuzz/`.
//! - `internals`: the on-disk codecs (`logbus::format`), read-only
//!   inspection (`logbus::inspect`) and index search
//!   (`logbus::internals`), for the `logbus-dump` inspector and the tests.
//!
//! `test-util` and `internals` carry no stability promise.
//!
//! [`docs/SEMANTICS.md`]: https://github.com/logbus/logbus/blob/main/docs/SEMANTICS.md
//! [`docs/FORMAT.md`]: https://github.com/logbus/logbus/blob/main/docs/FORMAT.md
//! [`docs/NATS.md`]: https://github.com/logbus/logbus/blob/main/docs/NATS.md

#![deny(unsafe_code)]
#![warn(missing_docs)]
// On docs.rs (Cargo.toml, `package.metadata.docs.rs`): feature badges.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[macro_use]
mod trace;
#[macro_use]
mod dispatch;

mod api;
mod backend;
#[cfg(feature = "test-util")]
pub mod clock;
#[cfg(not(feature = "test-util"))]
mod clock;
mod embedded;
mod error;
#[cfg(feature = "internals")]
pub mod format;
#[cfg(not(feature = "internals"))]
mod format;
mod index;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod inspect;
#[cfg(not(feature = "internals"))]
mod inspect;
mod io;
mod log;
#[cfg(feature = "nats")]
pub mod nats;
mod patterns;
mod record;
#[cfg(feature = "processes")]
mod remote;
#[cfg(feature = "processes")]
mod serve;
mod state;
pub mod storage;
#[cfg(feature = "processes")]
mod wire;

pub use api::Bus;
pub use api::{
    Delivery, Gather, Gathered, Group, Recipients, RecvStream, Request, Requester, Responder, Scatter,
    StopReason, Subscription, Topic,
};
pub use embedded::BusOptions;
pub use error::{CorruptKind, Error, Result};
pub use log::{
    Cursor, Durability, Log, LogOptions, LogView, Position, RecoveryReport, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SyncStats, Truncation,
};
#[cfg(feature = "nats")]
pub use nats::{NatsOptions, NatsStorage};
pub use patterns::headers;
pub use patterns::{
    Backoff, ConsumerStats, CorrelationId, DeliveryOrder, GroupOptions, GroupStats, MAX_PREFETCH,
    OnDeadLetter, OnExpiry, Reply, Retention, RetryPolicy, StartAt, TopicOptions, TopicStats,
    dead_letter_topic, inbox_topic,
};
pub use patterns::{DEFAULT_DEDUPE_WINDOW, MAX_NAME_BYTES, validate_name};
pub use record::{Record, RecordRef, StoredRecord};
pub use state::ConsumerId;
pub use state::{RecoveryMode, StateRepair};

/// Index search and validation, exposed for the dump tool and fuzzers.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::index::{
        lookup_offset, lookup_time, valid_offset_prefix, valid_time_prefix, validate_offset_entries,
        validate_time_entries,
    };
    pub use crate::state::{CorrelationHeader, CorrelationTable, decode_correlation_header};
}

/// The fuzz targets' bodies, shared by `fuzz/` and `tests/fuzz_corpus.rs`.
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod fuzzing;
