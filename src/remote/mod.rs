//! The joined backend: a process that opened a bus directory another
//! process owns reaches it through the owner (docs/PROCESSES.md). Each
//! handle implements its role's trait of `crate::backend` by asking the
//! owner over the bus socket ([`crate::wire`]); `client.rs` holds the
//! connection and the takeover when the owner goes.
//!
//! Invariants: a handle holds no state the owner does not also hold,
//! except what it needs to open itself again on a new owner (names,
//! options, a subscription's position); a delivery is only ever settled
//! on the owner that handed it out.

mod bus;
mod client;
mod group;
mod requester;
mod subscription;
mod topic;

pub(crate) use bus::RemoteBus;
pub(crate) use client::Takeover;
pub(crate) use group::{RemoteDelivery, RemoteGroup};
pub(crate) use requester::RemoteRequester;
pub(crate) use subscription::RemoteSubscription;
pub(crate) use topic::RemoteTopic;

use crate::error::Error;
use crate::wire::OWNER;

/// The owner answered with a response of another kind than asked for.
fn unexpected() -> Error {
    Error::Backend {
        backend: OWNER,
        message: "unexpected answer".into(),
    }
}
