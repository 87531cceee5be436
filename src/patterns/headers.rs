//! The names of the headers logbus writes and reads. They are part of the
//! format other programs see (a consumer of a dead-letter topic, a
//! responder written without logbus), so they never change meaning.

/// Request-reply: the correlation id of a request and of its replies (32
/// lowercase hex digits).
pub const CORRELATION_ID: &str = "correlation-id";
/// Request-reply: the topic replies to a request go to.
pub const REPLY_TO: &str = "reply-to";
/// Request-reply: the responder (its group) that wrote a reply.
pub const REPLIER: &str = "logbus-replier";
/// Request-reply: marks an error reply, with the reason.
pub const REPLY_ERROR: &str = "logbus-reply-error";

/// Dead letters: the topic a dead letter came from.
pub const SOURCE_TOPIC: &str = "logbus-source-topic";
/// Dead letters: the consumer group that gave up on it.
pub const SOURCE_GROUP: &str = "logbus-source-group";
/// Dead letters: its offset in the source topic (decimal).
pub const SOURCE_OFFSET: &str = "logbus-source-offset";
/// Dead letters: deliveries made (decimal).
pub const ATTEMPTS: &str = "logbus-attempts";
/// Dead letters, repeated oldest first: `"<ms since epoch> <reason>"` per
/// failure.
pub const FAILURE: &str = "logbus-failure";
/// Dead letters: time of the first failure (ms since epoch, decimal).
pub const FIRST_FAILURE: &str = "logbus-first-failure-ms";
/// Dead letters: time of the last failure (ms since epoch, decimal).
pub const LAST_FAILURE: &str = "logbus-last-failure-ms";
/// Dead letters: the last failure's reason.
pub const LAST_REASON: &str = "logbus-last-reason";
/// Idempotent publishing: the publisher's id of a record ([`crate::Record::id`]).
pub use crate::record::MESSAGE_ID;
/// Scheduled delivery: the time (ms since the Unix epoch, decimal) before
/// which no consumer group hands the record out. The records behind it are
/// not held up; subscriptions read it in offset order as any other.
pub const NOT_BEFORE: &str = "logbus-not-before-ms";
/// Expiry: the time (ms since the Unix epoch, decimal) from which no
/// consumer group hands the record out: at or after it, a group settles it
/// as its [`crate::GroupOptions::on_expiry`] says instead. Requests carry
/// their requester's deadline in it.
pub const EXPIRES_AT: &str = "logbus-expires-at-ms";
/// Redrive: times the record was moved back from a dead-letter topic.
pub const REDRIVE_COUNT: &str = "logbus-redrive-count";
/// Request-reply: on a record a requester writes to its own inbox before
/// a request it collects later (`send_request`, a scatter), the request's
/// correlation id. Such a record is not a reply (it has no
/// `correlation-id`); its value says `request` or `scatter`.
pub const SENT_ID: &str = "logbus-sent-id";
/// Scatter-gather: on the record of [`SENT_ID`] of a scatter, one
/// recipient each (repeated).
pub const RECIPIENT: &str = "logbus-recipient";
