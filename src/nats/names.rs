//! Names on the server: logbus names allow bytes that NATS subjects and
//! stream or consumer names do not (`.`, spaces, `*`, `>`), so each logbus
//! name is encoded as one NATS token: `[A-Za-z0-9-]` kept, every other byte
//! as `_` and two lowercase hex digits. The encoding is injective (so two
//! topics never share a stream) and reversible (so `topic_names` can list
//! streams back).
//!
//! | logbus | NATS |
//! | --- | --- |
//! | topic `orders.dlq` | stream `LOGBUS_orders_2edlq`, subjects `logbus.orders_2edlq` and `logbus.orders_2edlq.>` |
//! | group `billing` | durable consumer `g_billing` |
//! | subscription `audit` | durable consumer `s_audit` |
//! | reply to id `X` in inbox `c.inbox` | subject `logbus.c_2einbox.X` of the inbox's stream |

use crate::error::{Error, Result};
use crate::patterns::CorrelationId;
use crate::state::ConsumerId;

/// Prefix of every subject a topic's stream captures.
pub const SUBJECT_PREFIX: &str = "logbus";
/// One NATS token for a logbus name (see the module doc).
pub(crate) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(byte as char),
            _ => out.push_str(&format!("_{byte:02x}")),
        }
    }
    out
}

/// The logbus name a token encodes, if it is one.
pub(crate) fn untoken(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Longest stream or consumer name the backend creates: the server names
/// a directory of its store after each, and file systems allow 255 bytes.
pub(crate) const MAX_SERVER_NAME_BYTES: usize = 255;

/// [`Error::InvalidArgument`] if `encoded`, the server's name for the
/// logbus `kind` named `name`, is too long for the server's store (a name
/// of up to [`crate::MAX_NAME_BYTES`] bytes can grow threefold when
/// encoded).
pub(crate) fn check_length(kind: &str, name: &str, encoded: &str) -> Result<()> {
    match encoded.len() > MAX_SERVER_NAME_BYTES {
        true => Err(Error::InvalidArgument(format!(
            "{kind} name {name:?} is too long for NATS: encoded as {} bytes, more than {MAX_SERVER_NAME_BYTES}",
            encoded.len()
        ))),
        false => Ok(()),
    }
}

/// The stream holding `topic`.
pub fn stream_name(topic: &str) -> String {
    format!("LOGBUS_{}", token(topic))
}

/// The topic a stream holds, if it is a logbus stream.
pub(crate) fn topic_of_stream(stream: &str) -> Option<String> {
    untoken(stream.strip_prefix("LOGBUS_")?)
}

/// The subject records of `topic` are published to.
pub fn topic_subject(topic: &str) -> String {
    format!("{SUBJECT_PREFIX}.{}", token(topic))
}

/// The subject of replies to `id` in the inbox topic `inbox`: one subject
/// per correlation id, so the server's per-subject index finds them.
pub fn reply_subject(inbox: &str, id: CorrelationId) -> String {
    format!("{SUBJECT_PREFIX}.{}.{id}", token(inbox))
}

/// The durable consumer of the group `group`.
pub fn group_consumer_name(group: &str) -> String {
    format!("g_{}", token(group))
}

/// The durable consumer of the subscription `name`.
pub fn subscription_consumer_name(name: &str) -> String {
    format!("s_{}", token(name))
}

/// The durable consumer of `consumer`.
pub(crate) fn consumer_name(consumer: &ConsumerId) -> String {
    match consumer {
        ConsumerId::Subscription(name) => subscription_consumer_name(name),
        ConsumerId::Group(name) => group_consumer_name(name),
    }
}

/// The logbus consumer a durable consumer's name belongs to, if it is one
/// of logbus's (ephemeral consumers have names chosen by the server).
pub(crate) fn consumer_of_name(consumer: &str) -> Option<ConsumerId> {
    if let Some(group) = consumer.strip_prefix("g_") {
        return untoken(group).map(ConsumerId::Group);
    }
    untoken(consumer.strip_prefix("s_")?).map(ConsumerId::Subscription)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_nats_tokens_and_decode_back() {
        for name in ["orders", "orders.dlq", "a b*c>d", "x_y", "ünï", "A-9"] {
            let t = token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(untoken(&t).as_deref(), Some(name));
        }
        assert_ne!(token("a_2e"), token("a.")); // `_` is escaped too
        assert_eq!(
            topic_of_stream(&stream_name("c.inbox")).as_deref(),
            Some("c.inbox")
        );
        assert_eq!(
            consumer_of_name(&subscription_consumer_name("a.b")),
            Some(ConsumerId::Subscription("a.b".into()))
        );
        assert_eq!(
            consumer_of_name(&group_consumer_name("g_1")),
            Some(ConsumerId::Group("g_1".into()))
        );
        assert_eq!(consumer_of_name("xK3jP9"), None);
    }
}
