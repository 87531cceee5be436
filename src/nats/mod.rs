//! The NATS JetStream backend (feature `nats`, issue 7 in progress).
//!
//! [`crate::Bus::connect_nats`] gives a bus whose topics are streams and
//! whose subscriptions are pull consumers on a NATS server or cluster;
//! `docs/NATS.md` is the mapping and lists where the semantics differ from
//! the embedded bus, `docs/NATS-SEAM.md` how the backend sits under the
//! public types. Done so far: topics and publish-subscribe (`bus`,
//! `topic`, `subscription`), consumer groups with dead letters (`group`
//! over `consumer`). Request-reply, scatter-gather and redrive return
//! [`crate::Error::Backend`] ("not yet available") on a NATS bus.
//!
//! The other modules are the spike's mechanisms, proven against a real
//! `nats-server` (2.9.10, Debian's) by `tests/nats_spike.rs`: a blocking
//! facade over a private tokio runtime ([`NatsClient`]), the record codec,
//! names, group consumers with dead letters, and request-reply. They stay
//! public for that test until the remaining patterns are on the seam.
//! Nothing in the embedded path uses this module.
//!
//! Offsets are stream sequences minus one: a topic's first record has
//! offset 0 on both backends.

mod advisory;
mod bus;
mod client;
mod codec;
mod consumer;
mod error;
mod group;
mod names;
mod options;
mod requester;
mod subscription;
mod topic;

pub use advisory::MaxDeliveriesWatch;
pub(crate) use bus::NatsBus;
pub(crate) use bus::NatsShared;
pub use client::{ConsumerState, NatsClient, StreamSpec, StreamState};
pub use codec::{HEADER_HEADER_ORDER, HEADER_KEY, HEADER_TIMESTAMP};
pub use consumer::{GroupConsumer, GroupSpec, NatsDelivery};
pub(crate) use group::NatsGroup;
pub use names::{
    SUBJECT_PREFIX, group_consumer_name, reply_subject, stream_name, subscription_consumer_name,
    topic_subject,
};
pub use options::{NatsOptions, NatsStorage};
pub(crate) use requester::NatsRequester;
pub(crate) use subscription::NatsSubscription;
pub(crate) use topic::NatsTopic;
