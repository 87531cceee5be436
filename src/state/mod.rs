//! Internal state logs: subscription offsets and consumer-group deliveries,
//! each a small [`crate::Log`] of [`crate::format::StateEvent`]s compacted by
//! periodic snapshots so its size follows the live state, not the history.

mod store;

pub(crate) use store::StateLog;
