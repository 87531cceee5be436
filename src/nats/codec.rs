//! Records as NATS messages.
//!
//! The value is the payload. The key, an explicit timestamp and the order
//! of the headers travel in headers of their own, because NATS messages
//! have no key, JetStream stamps its own time, and the client's header map
//! (a hash map of name to values) keeps the order of the values of one
//! name but not the order between names, which a [`Record`] promises.
//!
//! Header values are bytes in logbus and text in NATS (no CR or LF; the
//! client trims spaces), so every value is percent-encoded: bytes outside
//! `!`..=`~`, `%` and `,` as `%XX`. Names must already be valid NATS header
//! names (ASCII, no control characters, no `:`).
//!
//! A name used more than once is sent as one NATS header whose value is the
//! encoded values joined by `,` (as HTTP folds repeated headers): async-nats
//! 0.51 keeps repeated names on delivered messages but its stream-message
//! reads (`STREAM.MSG.GET`: reads by sequence and by subject) keep only the
//! last value of each name.

use std::str::FromStr;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{decode_frame, encode_frame};
use crate::record::{Record, StoredRecord};

/// Header carrying the record key (percent-encoded), absent when empty.
pub const HEADER_KEY: &str = "logbus-key";
/// Header carrying an explicit record timestamp (ms since the Unix epoch);
/// without it the record's timestamp is the server's receive time.
pub const HEADER_TIMESTAMP: &str = "logbus-timestamp-ms";
/// Header listing the record's header names in order (comma-separated,
/// percent-encoded), so that the order survives the client's header map.
pub const HEADER_HEADER_ORDER: &str = "logbus-header-order";

const INTERNAL: [&str; 3] = [HEADER_KEY, HEADER_TIMESTAMP, HEADER_HEADER_ORDER];

fn percent_encode(bytes: &[u8], extra: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b'!'..=b'~').contains(&b) && b != b'%' && !extra.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn header_name(name: &str) -> Result<HeaderName> {
    HeaderName::from_str(name)
        .map_err(|e| Error::InvalidArgument(format!("header name {name:?} is not valid on NATS: {e}")))
}

/// The headers of `record` as NATS headers (the payload is its value).
pub(crate) fn encode_headers(record: &Record<'_>) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let mut order = Vec::with_capacity(record.header_pairs().len());
    let mut folded: Vec<(&str, Vec<String>)> = Vec::new();
    for (name, value) in record.header_pairs() {
        if INTERNAL.contains(name) {
            return Err(Error::InvalidArgument(format!(
                "header name {name:?} is reserved"
            )));
        }
        let encoded = percent_encode(value, b",");
        match folded.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(encoded),
            None => folded.push((name, vec![encoded])),
        }
        order.push(percent_encode(name.as_bytes(), b","));
    }
    for (name, values) in folded {
        map.insert(header_name(name)?, HeaderValue::from(values.join(",")));
    }
    if !order.is_empty() {
        map.insert(HEADER_HEADER_ORDER, HeaderValue::from(order.join(",")));
    }
    if !record.key_bytes().is_empty() {
        map.insert(
            HEADER_KEY,
            HeaderValue::from(percent_encode(record.key_bytes(), b"")),
        );
    }
    // No explicit timestamp: the server's receive time stands in for the
    // append time.
    let timestamp = record.own_timestamp().unwrap_or(i64::MIN);
    if timestamp != i64::MIN {
        map.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
    }
    Ok(map)
}

/// Header pairs of a received message, in the publisher's order; headers
/// a foreign publisher added outside that order follow, sorted by name.
/// Server-interpreted `Nats-*` headers are left out.
fn decode_headers(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut used: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    if let Some(order) = map.get(HEADER_HEADER_ORDER) {
        for encoded in order.as_str().split(',').filter(|s| !s.is_empty()) {
            let name = String::from_utf8_lossy(&percent_decode(encoded)).into_owned();
            let index = used.entry(name.clone()).or_insert(0);
            let folded = map.get(name.as_str()).map(|v| v.as_str().split(',').nth(*index));
            if let Some(Some(value)) = folded {
                out.push((name, percent_decode(value)));
            }
            *index += 1;
        }
    }
    let mut rest: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, values) in map.iter() {
        let name: &str = name.as_ref();
        if INTERNAL.contains(&name) || name.starts_with("Nats-") {
            continue;
        }
        if used.contains_key(name) {
            continue;
        }
        for value in values {
            rest.push((name.to_owned(), percent_decode(value.as_str())));
        }
    }
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(rest);
    out
}

/// The record a message stored at stream sequence `sequence` holds, as a
/// [`StoredRecord`] at offset `sequence - 1`. It is encoded into a logbus
/// frame and decoded back, so a NATS record is indistinguishable from an
/// embedded one (one copy of the message per receive).
pub(crate) fn stored_record(
    headers: Option<&HeaderMap>,
    payload: &[u8],
    sequence: u64,
    server_time_ms: i64,
) -> Result<StoredRecord> {
    let empty = HeaderMap::new();
    let map = headers.unwrap_or(&empty);
    let key = map
        .get(HEADER_KEY)
        .map(|v| percent_decode(v.as_str()))
        .unwrap_or_default();
    let timestamp = map
        .get(HEADER_TIMESTAMP)
        .and_then(|v| v.as_str().parse::<i64>().ok())
        .unwrap_or(server_time_ms);
    let owned = decode_headers(map);
    let pairs: Vec<(&str, &[u8])> = owned.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let mut frame = Vec::new();
    encode_frame(
        &mut frame,
        sequence.saturating_sub(1),
        timestamp,
        &key,
        &pairs,
        payload,
    );
    let frame = Bytes::from(frame);
    let view = decode_frame(&frame)
        .map_err(|_| Error::InvalidArgument("message does not fit a logbus record".into()))?;
    Ok(StoredRecord::from_frame(frame, view))
}

/// Milliseconds since the Unix epoch of a server timestamp.
pub(crate) fn millis(time: &async_nats::datetime::DateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let text = percent_encode(&all, b",");
        assert!(text.bytes().all(|b| (b'!'..=b'~').contains(&b)));
        assert_eq!(percent_decode(&text), all);
    }
}
