//! The NATS JetStream backend (feature `nats`).
//!
//! [`crate::Bus::connect_nats`] gives a bus whose topics are streams and
//! whose subscriptions, groups and responders are pull consumers on a NATS
//! server or cluster; [`docs/NATS.md`](https://github.com/logbus/logbus/blob/main/docs/NATS.md) is the mapping and lists where the
//! semantics differ from the embedded bus, [`docs/BACKENDS.md`](https://github.com/logbus/logbus/blob/main/docs/BACKENDS.md) how the
//! backend sits under the public types. The `Nats` variants of the public
//! types: `NatsBus` (`bus`), `topic`, `subscription`, `group` (over
//! `consumer`), `requester`; the responder, scatter-gather and redrive are
//! shared with the embedded bus (`src/patterns/`).
//!
//! Documented here: [`NatsOptions`], the names logbus gives streams,
//! consumers and subjects (for operators and foreign clients), and the
//! headers of the record codec. Below the public types: `NatsClient`, the
//! connection and the one place that decides where its futures run (the
//! caller's multi-thread tokio runtime or a private one; public only for
//! `tests/nats_cluster.rs`, which asks it for a stream's leader and
//! positions; hidden from the documentation and not part of the API), and
//! `GroupConsumer`, the durable pull consumer a group shares. Nothing in
//! the embedded path uses this module.
//!
//! Offsets are stream sequences minus one: a topic's first record has
//! offset 0 on both backends.

mod bus;
mod client;
mod codec;
mod consumer;
mod error;
mod failures;
mod group;
mod names;
mod options;
mod requester;
mod subscription;
mod topic;

pub(crate) use bus::NatsBus;
// Public only for tests/nats_cluster.rs, which asks who leads a stream and
// reports stream and consumer positions when it fails; hidden from the
// documented API.
#[doc(hidden)]
pub use client::{ConsumerState, NatsClient, StreamState};
pub use codec::{HEADER_HEADER_ORDER, HEADER_KEY, HEADER_TIMESTAMP};
pub(crate) use consumer::NatsDelivery;
pub(crate) use group::NatsGroup;
pub use names::{
    SUBJECT_PREFIX, group_consumer_name, reply_subject, stream_name, subscription_consumer_name,
    topic_subject,
};
pub use options::{NatsOptions, NatsStorage};
pub(crate) use requester::NatsRequester;
pub(crate) use subscription::NatsSubscription;
pub(crate) use topic::NatsTopic;
