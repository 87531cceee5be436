//! The bus directory's layout, named in one place:
//!
//! ```text
//! <bus>/.lock                              the owner's lock
//! <bus>/topics/<topic>/                    one log per topic
//! <bus>/state/subscriptions/<topic>/<name>/  a durable subscription's state log
//! <bus>/state/groups/<topic>/<name>/       a consumer group's state log
//! <bus>/state/inboxes/<requester>/correlation.cix  a requester's correlation index
//! ```

/// The directory under `state/` holding durable subscriptions' state logs.
pub(crate) const SUBSCRIPTIONS: &str = "subscriptions";
/// The directory under `state/` holding consumer groups' state logs.
pub(crate) const GROUPS: &str = "groups";

/// Which consumer a tracked position belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsumerId {
    /// A durable subscription, by name.
    Subscription(String),
    /// A consumer group, by name.
    Group(String),
}
