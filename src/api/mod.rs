//! The handles users hold: [`Bus`], [`Topic`], [`Subscription`],
//! [`Group`], [`Delivery`], [`Requester`], [`Responder`], [`Request`] and
//! [`Scatter`]. Each holds one backend (the embedded log, or NATS
//! JetStream with the `nats` feature) and calls it through the traits of
//! `crate::backend`; what is the same on both (responders, scatter-gather,
//! redrive, request ids) is written here once.
//!
//! This layer may import every layer below it; none imports it.

mod bus;
mod group;
#[cfg(feature = "metrics")]
mod metrics;
mod redrive;
mod request;
mod responder;
mod scatter;
mod stream;
mod subscription;
mod topic;

pub use bus::Bus;
pub use group::{Delivery, Group};
pub use request::Requester;
pub use responder::{Request, Responder};
pub use scatter::{Gather, Gathered, Recipients, Scatter, StopReason};
pub use stream::RecvStream;
pub use subscription::Subscription;
pub use topic::Topic;
