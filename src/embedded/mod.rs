//! The embedded backend: a bus directory of topic logs and the state logs
//! of their consumers, implementing the traits of `crate::backend`.
//!
//! Invariants: every file goes through the bus's `state::BusLayout` (and
//! so its `Storage`), and nothing here names a path; a consumer's
//! state log is opened (and repaired) only by that consumer; the public
//! handles never reach in here except through the traits and the
//! constructors `Bus::open` uses.

mod bus;
mod dedupe;
mod group;
mod requester;
mod subscription;
mod topic;
mod wakeup;

pub use bus::BusOptions;
#[cfg(feature = "processes")]
pub(crate) use bus::WeakLogBus;
pub(crate) use bus::{BusInner, LogBus, LogReplies, OpenBus};
pub(crate) use group::{GroupInner, LogDelivery, LogGroup};
pub(crate) use requester::{LogRequester, RequesterInner};
pub(crate) use subscription::LogSubscription;
pub(crate) use topic::{LogTopic, PositionSlot, TopicInner, record_age, seek_offset};
pub(crate) use wakeup::Wakeups;
