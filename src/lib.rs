//! # logbus
//!
//! Crash-safe messaging embedded in your application. One primitive, an
//! append-only segmented [`Log`] with memory-mapped indexes, is built to
//! carry five messaging patterns (queues, publish-subscribe, request-reply,
//! scatter-gather and dead-letter queues).
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
//! See `docs/SEMANTICS.md` for the durability contract and `docs/FORMAT.md`
//! for the on-disk format.
//!
//! ## Features
//!
//! The default build is the library alone. Storage is pluggable through
//! [`storage::Storage`] ([`LogOptions::storage`], [`BusOptions::storage`]).
//!
//! - `nats`: the NATS JetStream backend, `Bus::connect_nats`
//!   (`docs/NATS.md`).
//! - `tracing`: `tracing` events for recovery truncation, lease expiry,
//!   dead-lettering and redrive.
//! - `test-util`: test doubles and fuzz bodies: `storage::SimStorage` and
//!   `storage::Fault`, an in-memory file system that injects torn writes,
//!   fsync errors, disk full and power loss, and `logbus::fuzzing`, the
//!   bodies of the targets in `fuzz/`.
//! - `internals`: the on-disk codecs (`logbus::format`), read-only
//!   inspection (`logbus::inspect`) and index search
//!   (`logbus::internals`), for the `logbus-dump` inspector and the tests.
//!
//! `test-util` and `internals` carry no stability promise.

#![deny(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod trace;
#[macro_use]
mod dispatch;

mod bus;
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
mod state;
pub mod storage;

pub use bus::{Bus, BusOptions, MAX_NAME_BYTES, validate_name};
pub use error::{CorruptKind, Error, Result};
pub use log::{
    Cursor, Durability, Log, LogOptions, LogView, Position, RecoveryReport, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SyncStats, Truncation,
};
#[cfg(feature = "nats")]
pub use nats::{NatsOptions, NatsStorage};
pub use patterns::{
    Backoff, ConsumerId, ConsumerStats, CorrelationId, Delivery, Gather, Gathered, Group, GroupOptions,
    GroupStats, HEADER_ATTEMPTS, HEADER_CORRELATION_ID, HEADER_FAILURE, HEADER_FIRST_FAILURE,
    HEADER_LAST_FAILURE, HEADER_LAST_REASON, HEADER_REDRIVE_COUNT, HEADER_REPLIER, HEADER_REPLY_ERROR,
    HEADER_REPLY_TO, HEADER_SOURCE_GROUP, HEADER_SOURCE_OFFSET, HEADER_SOURCE_TOPIC, Recipients, Reply,
    Request, Requester, Responder, Retention, RetryPolicy, Scatter, StartAt, StopReason, Subscription, Topic,
    TopicOptions, TopicStats, dead_letter_topic, inbox_topic,
};
pub use record::{Record, StoredRecord};
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
