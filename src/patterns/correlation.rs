//! Request-reply without a backend: correlation ids, the request as
//! published, replies as found in an inbox, and how a wait for them is
//! decided.
//!
//! Invariants: correlation ids are unique across restarts (48-bit
//! millisecond time, 80 random bits); every reply carries the id it
//! answers in its `correlation-id` header.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use crate::clock::wall_ms;
use crate::error::{Error, Result};
use crate::patterns::headers;
use crate::record::{Record, StoredRecord};

/// A 128-bit, time-ordered id tying replies to their request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CorrelationId(u128);

impl CorrelationId {
    /// A new id: milliseconds since the Unix epoch in the top 48 bits,
    /// 80 random bits below (never zero).
    pub fn new() -> Self {
        let time = (wall_ms().max(1) as u128 & ((1 << 48) - 1)) << 80;
        CorrelationId(time | (fastrand::u128(..) & ((1 << 80) - 1)))
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    #[cfg(feature = "processes")]
    /// The id `value` is, `None` for zero (never an id).
    pub(crate) fn from_u128(value: u128) -> Option<Self> {
        (value != 0).then_some(CorrelationId(value))
    }

    /// Parses the header form; `None` unless 32 hex digits of a non-zero id.
    pub fn from_header(value: &[u8]) -> Option<Self> {
        let digits: &[u8; 32] = value.try_into().ok()?;
        let mut id = 0u128;
        for &digit in digits {
            let nibble = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                b'A'..=b'F' => digit - b'A' + 10,
                _ => return None,
            };
            id = id << 4 | u128::from(nibble);
        }
        (id != 0).then_some(CorrelationId(id))
    }

    /// The header form, 32 lowercase hex digits, written without the
    /// formatting machinery (every request and reply writes one).
    pub(crate) fn hex(self) -> HexId {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (at, digit) in hex.iter_mut().enumerate() {
            let nibble = (self.0 >> (4 * (31 - at))) & 0xf;
            *digit = DIGITS[nibble as usize];
        }
        HexId(hex)
    }
}

/// A correlation id's header form ([`CorrelationId::hex`]).
pub(crate) struct HexId([u8; 32]);

impl HexId {
    pub(crate) fn as_str(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl FromStr for CorrelationId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        CorrelationId::from_header(s.as_bytes())
            .ok_or_else(|| Error::InvalidArgument(format!("{s:?} is not a correlation id")))
    }
}

/// A reply found in an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    record: StoredRecord,
}

impl Reply {
    pub(crate) fn new(record: StoredRecord) -> Reply {
        Reply { record }
    }

    /// The reply record (its value is the response body).
    pub fn record(&self) -> &StoredRecord {
        &self.record
    }

    /// The response body.
    pub fn value(&self) -> &[u8] {
        self.record.value()
    }

    /// The responder (its group name), if it said.
    pub fn from(&self) -> Option<&str> {
        self.record
            .header(headers::REPLIER)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The reason, if this is an error reply.
    pub fn error(&self) -> Option<&str> {
        self.record
            .header(headers::REPLY_ERROR)
            .map(|v| std::str::from_utf8(v).unwrap_or("(not UTF-8)"))
    }
}

/// Name of the inbox topic of requester `name`.
pub fn inbox_topic(name: &str) -> String {
    format!("{name}.inbox")
}

/// The requester whose inbox `topic` is, if it is named as one.
pub(crate) fn requester_of_inbox(topic: &str) -> Option<&str> {
    topic.strip_suffix(".inbox").filter(|name| !name.is_empty())
}

/// The request as published: `record` plus the `correlation-id` and
/// `reply-to` headers.
pub(crate) fn request_record<'a>(record: &Record<'a>, id_text: &'a str, inbox: &'a str) -> Record<'a> {
    record
        .clone()
        .header(headers::CORRELATION_ID, id_text.as_bytes())
        .header(headers::REPLY_TO, inbox.as_bytes())
}

/// What a check of the inbox decided: done, or look again once a reply
/// arrives or at the instant given, whichever comes first.
pub(crate) enum ReplyCheck<T> {
    Done(T),
    WaitUntil(Instant),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_form_is_32_lowercase_hex_digits_and_parses_back() {
        for value in [1, 0xabc, u128::MAX, 1 << 127, CorrelationId::new().as_u128()] {
            let id = CorrelationId(value);
            let hex = id.hex();
            assert_eq!(hex.as_str(), format!("{value:032x}"));
            assert_eq!(id.to_string(), hex.as_str());
            assert_eq!(CorrelationId::from_header(hex.as_str().as_bytes()), Some(id));
            let upper = hex.as_str().to_uppercase();
            assert_eq!(upper.parse::<CorrelationId>().unwrap(), id);
        }
        let zero = "0".repeat(32);
        for bad in [
            "",
            "abc",
            &zero,
            &"g".repeat(32),
            &format!("+{}", "1".repeat(31)),
            &"1".repeat(33),
        ] {
            assert_eq!(CorrelationId::from_header(bad.as_bytes()), None, "{bad:?}");
            assert!(bad.parse::<CorrelationId>().is_err(), "{bad:?}");
        }
    }
}
