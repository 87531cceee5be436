//! Max-deliveries advisories: the server's notice that a group's consumer
//! stopped redelivering a message (it reached MaxDeliver). Groups
//! dead-letter on the last attempt the client counts, one below the
//! server's MaxDeliver, so an advisory means that dead-lettering was
//! interrupted twice; the watch lets a test (or an operator) see it.

use std::time::Duration;

use futures_util::StreamExt;

use super::client::NatsClient;
use super::error::nats_error;
use super::names::stream_name;
use crate::error::Result;

/// Max-deliveries advisories of one group's consumer: the server's notice
/// that it stopped redelivering a message (the backstop that finds a
/// message whose dead-lettering was interrupted).
#[derive(Debug)]
pub struct MaxDeliveriesWatch {
    bus: NatsClient,
    subscriber: async_nats::Subscriber,
}

impl NatsClient {
    /// Watches the max-deliveries advisories of `group` on `topic`.
    pub fn watch_max_deliveries(&self, topic: &str, group: &str) -> Result<MaxDeliveriesWatch> {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            stream_name(topic),
            super::names::group_consumer_name(group)
        );
        let subscriber = self
            .block_on(self.client().subscribe(subject))?
            .map_err(|e| nats_error("subscribe", e))?;
        self.block_on(self.client().flush())?
            .map_err(|e| nats_error("flush", e))?;
        Ok(MaxDeliveriesWatch {
            bus: self.clone(),
            subscriber,
        })
    }
}

impl MaxDeliveriesWatch {
    /// The offset named by the next advisory, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<u64>> {
        let next = self
            .bus
            .block_on(async { tokio::time::timeout(timeout, self.subscriber.next()).await })?;
        let Ok(Some(message)) = next else {
            return Ok(None);
        };
        Ok(json_u64(&message.payload, "stream_seq").map(|seq| seq.saturating_sub(1)))
    }
}

/// The unsigned integer field `name` of a flat JSON object (advisories are
/// small and fixed in shape; no JSON parser needed).
fn json_u64(json: &[u8], name: &str) -> Option<u64> {
    let text = std::str::from_utf8(json).ok()?;
    let at = text.find(&format!("\"{name}\":"))? + name.len() + 3;
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
