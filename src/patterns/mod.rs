//! What the messaging patterns need that no backend owns: names and their
//! rules, header names, retry policies and backoff, the dead-letter record
//! and redrive, what a requester noted as sent, and the replay of a
//! group's state.
//!
//! Nothing here touches files, and nothing here imports a backend or the
//! public handles.

mod correlation;
mod dead_letter;
mod group_machine;
mod group_options;
mod group_state;
pub mod headers;
mod key_order;
mod names;
mod retry;
mod sent;
mod start;
mod timing;
mod topic_options;

pub(crate) use correlation::requester_of_inbox;
pub use correlation::{CorrelationId, Reply, inbox_topic};
pub(crate) use correlation::{ReplyCheck, request_record};
pub use dead_letter::dead_letter_topic;
pub(crate) use dead_letter::{
    DEAD_LETTER_HEADROOM_BYTES, DeadLetter, REDRIVE_GROUP, Redriven, check_redrive_source, header_str,
    is_dead_letter_of,
};
#[cfg(feature = "nats")]
pub(crate) use group_machine::push_failure;
pub(crate) use group_machine::{Acquired, Claim, GroupMachine, Lease, Nacked, Rules, Source};
pub use group_options::{DeliveryOrder, GroupOptions, GroupStats, MAX_PREFETCH, OnDeadLetter, OnExpiry};
pub use group_state::GroupSummary;
#[cfg(feature = "internals")]
pub(crate) use group_state::unsettled_offsets;
pub(crate) use group_state::{recovered_commit, recovered_low_watermark, summarize_group};
pub(crate) use key_order::{is_redriven, key_hash};
pub(crate) use names::deleted_with;
pub use names::{MAX_NAME_BYTES, validate_name};
#[cfg(feature = "nats")]
pub(crate) use names::{derived, needed_dead_letter_topic};
pub(crate) use names::{validate_dead_letter_source, validate_requester_name, validate_topic_name};
pub use retry::{Backoff, RetryPolicy};
pub(crate) use sent::{Ledger, sent_record};
pub use start::StartAt;
pub(crate) use start::check_commit;
pub(crate) use timing::{EXPIRED, SCHEDULED, expired, expires_after, not_before};
pub use topic_options::{ConsumerStats, DEFAULT_DEDUPE_WINDOW, Retention, TopicOptions, TopicStats};
pub(crate) use topic_options::{check_batch_ids, check_same_options};
