//! Names of topics, groups and subscriptions, checked the same way on
//! every backend: embedded they become directory names, so none may escape
//! the bus directory; on NATS they are encoded into subject tokens.

use crate::error::{Error, Result};

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
