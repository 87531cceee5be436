//! Internal state logs: subscription offsets and consumer-group deliveries,
//! each a small [`crate::Log`] of [`crate::format::StateEvent`]s compacted by
//! periodic snapshots so its size follows the live state, not the history.

mod correlation;
mod layout;
mod repair;
mod store;

pub(crate) use correlation::CorrelationIndex;
#[cfg(any(feature = "internals", feature = "test-util"))]
pub use correlation::CorrelationTable;
#[cfg(feature = "internals")]
pub use correlation::{CorrelationHeader, decode_correlation_header};
pub use layout::ConsumerId;
pub(crate) use layout::{GROUPS, SUBSCRIPTIONS};
pub(crate) use repair::{Damaged, finish_interrupted_repairs, repair};
pub use repair::{RecoveryMode, StateRepair};
pub(crate) use store::StateLog;
