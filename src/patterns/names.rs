//! Names of topics, groups and subscriptions, checked the same way on
//! every backend: embedded they become directory names, so none may escape
//! the bus directory; on NATS they are encoded into subject tokens.
//!
//! A name is valid only if every name logbus derives from it is, so that
//! no operation can fail later on a name that was accepted: a topic's
//! dead-letter topic `<topic>.dlq` and a requester's inbox topic
//! `<requester>.inbox` are checked when the topic or requester is opened.
//! A dead-letter topic is exempt from having a valid dead-letter topic of
//! its own (the chain would never end); a group that dead-letters from one
//! is checked when it opens instead.

use crate::error::{Error, Result};
use crate::patterns::dead_letter_topic;
use crate::patterns::inbox_topic;

/// Longest topic, group or subscription name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Checks a topic, group or subscription name: non-empty, at most
/// [`MAX_NAME_BYTES`], no path separators, NUL or control characters, not
/// starting with `.` and no `..`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("is longer than 200 bytes")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.starts_with('.') || name.contains("..") {
        Some("starts with '.' or contains '..'")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::InvalidArgument(format!("{kind} name {name:?} {problem}"))),
        None => Ok(()),
    }
}

/// The dead-letter topic a topic needs, unless it is one itself.
pub(crate) fn needed_dead_letter_topic(topic: &str) -> Option<String> {
    let dlq = dead_letter_topic("");
    (!topic.ends_with(&dlq)).then(|| dead_letter_topic(topic))
}

/// What deleting `topic` deletes, in order: its dead-letter topic (unless
/// it is one itself), then the topic. Children first, so a deletion cut
/// short leaves the topic, never its dead letters without it.
pub(crate) fn deleted_with(topic: &str) -> Vec<String> {
    let mut topics: Vec<String> = needed_dead_letter_topic(topic).into_iter().collect();
    topics.push(topic.to_owned());
    topics
}

/// Checks a topic name and its dead-letter topic's (see the module doc).
pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    validate_topic_as("topic", name)
}

/// [`validate_topic_name`], the errors calling the topic a `kind`.
fn validate_topic_as(kind: &str, name: &str) -> Result<()> {
    validate_name(kind, name)?;
    match needed_dead_letter_topic(name) {
        Some(dlq) => derived(kind, name, validate_name("dead-letter topic", &dlq)),
        None => Ok(()),
    }
}

/// Checks the name of the dead-letter topic a group on `topic` writes to.
pub(crate) fn validate_dead_letter_source(topic: &str) -> Result<()> {
    let dlq = dead_letter_topic(topic);
    derived("topic", topic, validate_name("dead-letter topic", &dlq))
}

/// Checks a requester name and its inbox topic's.
pub(crate) fn validate_requester_name(name: &str) -> Result<()> {
    validate_name("requester", name)?;
    derived(
        "requester",
        name,
        validate_topic_as("inbox topic", &inbox_topic(name)),
    )
}

/// `check` of a name derived from the `kind` named `name`, its error
/// saying which name it was derived from.
pub(crate) fn derived(kind: &str, name: &str, check: Result<()>) -> Result<()> {
    check.map_err(|e| match e {
        Error::InvalidArgument(why) => {
            Error::InvalidArgument(format!("{kind} name {name:?} is unusable: {why}"))
        }
        other => other,
    })
}
