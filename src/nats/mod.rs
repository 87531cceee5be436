//! NATS JetStream mechanisms for the `nats` backend (issue 7 groundwork).
//!
//! This is a spike: a blocking facade over an internal tokio runtime that
//! shows, against a real `nats-server` (2.9.10, Debian's), each mechanism
//! the mapping in `docs/NATS.md` relies on: a stream per topic, publish
//! with headers and the stream sequence back, durable pull consumers for
//! groups (ack, nak with delay, term, AckWait redelivery, MaxDeliver,
//! delivery counts) and for subscriptions (their own ack floor), dead
//! letters published with the embedded DLQ's headers, core request-reply
//! and a durable inbox found by correlation id. It is not the final API:
//! `docs/NATS-SEAM.md` says how these pieces go under the public pattern
//! types. Nothing in the embedded path uses this module.
//!
//! Offsets are stream sequences minus one: a topic's first record has
//! offset 0 on both backends.

mod client;
mod codec;
mod consumer;
mod names;
mod request;

pub use client::{ConsumerState, NatsBus, StreamSpec, StreamState};
pub use codec::{HEADER_HEADER_ORDER, HEADER_KEY, HEADER_TIMESTAMP};
pub use consumer::{GroupConsumer, GroupSpec, NatsDelivery, SubscriptionConsumer};
pub use names::{
    CORE_REQUEST_PREFIX, SUBJECT_PREFIX, core_request_subject, group_consumer_name, reply_subject,
    stream_name, subscription_consumer_name, topic_subject,
};
pub use request::{CoreRequest, CoreResponder, MaxDeliveriesWatch};

use crate::error::Error;

/// Maps a client error to a logbus error. The spike has no error variant
/// of its own (the seam adds one: `docs/NATS-SEAM.md`).
fn nats_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("nats: {context}: {error}")))
}
