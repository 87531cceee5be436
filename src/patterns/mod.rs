//! The messaging patterns, built on [`crate::Log`]: topics with
//! publish-subscribe, consumer-group queues, retry policies and dead letters.
//! Nothing here touches files directly: state goes through state logs.

mod dead_letter;
mod group_state;
mod log_group;
mod log_request;
mod log_subscription;
mod log_topic;
mod queue;
mod request;
mod responder;
mod retry;
mod scatter;
mod subscription;
mod topic;
mod wakeup;

#[cfg(feature = "internals")]
pub(crate) use dead_letter::REDRIVE_GROUP;
#[cfg(feature = "nats")]
pub(crate) use dead_letter::{DEAD_LETTER_HEADROOM_BYTES, DeadLetter};
pub use dead_letter::{
    HEADER_ATTEMPTS, HEADER_FAILURE, HEADER_FIRST_FAILURE, HEADER_LAST_FAILURE, HEADER_LAST_REASON,
    HEADER_REDRIVE_COUNT, HEADER_SOURCE_GROUP, HEADER_SOURCE_OFFSET, HEADER_SOURCE_TOPIC, dead_letter_topic,
};
pub(crate) use dead_letter::{check_redrive_source, redrive};
pub use group_state::GroupSummary;
#[cfg(feature = "nats")]
pub(crate) use group_state::push_failure;
pub(crate) use group_state::summarize_group;
#[cfg(feature = "internals")]
pub(crate) use group_state::unsettled_offsets;
pub(crate) use log_request::{LogRequester, RequesterInner};
pub(crate) use log_subscription::recovered_commit;
pub(crate) use log_topic::LogTopic;
pub(crate) use log_topic::{GROUPS, SUBSCRIPTIONS};
pub use queue::{Delivery, Group, GroupOptions, GroupStats};
#[cfg(feature = "nats")]
pub(crate) use request::ReplyCheck;
pub use request::{
    CorrelationId, HEADER_CORRELATION_ID, HEADER_REPLIER, HEADER_REPLY_ERROR, HEADER_REPLY_TO, Reply,
    Requester, inbox_topic,
};
#[cfg(feature = "nats")]
pub(crate) use responder::Inboxes;
pub use responder::{Request, Responder};
pub use retry::{Backoff, RetryPolicy};
pub use scatter::{Gather, Gathered, Recipients, Scatter, StopReason};
#[cfg(feature = "nats")]
pub(crate) use subscription::check_commit;
pub use subscription::{StartAt, Subscription};
pub(crate) use topic::check_same_options;
pub use topic::{ConsumerId, ConsumerStats, Retention, Topic, TopicOptions, TopicStats};
pub(crate) use wakeup::Wakeups;
