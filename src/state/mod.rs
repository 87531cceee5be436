//! Internal state logs: subscription offsets and consumer-group deliveries,
//! each a small [`crate::Log`] of [`crate::format::StateEvent`]s compacted by
//! periodic snapshots so its size follows the live state, not the history;
//! the correlation index of requesters; the repair of damaged state logs;
//! and [`BusLayout`], the one owner of the bus directory's layout.

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
pub(crate) use layout::{BusLayout, ConsumerKind};
pub(crate) use repair::Damaged;
pub use repair::{RecoveryMode, StateRepair};
pub(crate) use store::StateLog;
