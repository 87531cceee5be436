//! Redrive: moving dead letters back to their source topics, written once
//! over the public handles, so it runs on either backend.
//!
//! Invariants: every pending dead letter is leased before any moves, so a
//! record left in place is not handed out again within one call; a record
//! is acked in the dead-letter topic only after its move is stored, so a
//! crash in between moves it again (at-least-once) unless the backend
//! recognises the repeat.

use std::time::Duration;

use crate::api::{Delivery, Topic};
use crate::error::{Error, Result};
use crate::patterns::{Backoff, GroupOptions, REDRIVE_GROUP, Redriven, RetryPolicy, header_str, headers};
use crate::record::{Record, StoredRecord};

/// Moves the records of `dlq` selected by `filter` back to their source
/// topics (see [`crate::Bus::redrive`]), on either backend: `republish`
/// stores a record in the named source topic, given the dead letter's
/// offset in `dlq` (NATS uses it to publish each dead letter once). A
/// crash between the move and its bookkeeping may move a record twice
/// (at-least-once) where the backend cannot deduplicate. A record without
/// the source headers is [`Error::InvalidArgument`] before anything moves.
pub(crate) fn redrive(
    dlq: &Topic,
    mut republish: impl FnMut(&str, &Record<'_>, u64) -> Result<u64>,
    mut filter: impl FnMut(&StoredRecord) -> bool,
) -> Result<usize> {
    let options = GroupOptions::default()
        .lease(Duration::from_secs(300))
        .retry(
            RetryPolicy::default()
                .max_attempts(u32::MAX)
                .backoff(Backoff::Fixed(Duration::ZERO)),
        )
        .dead_letter(false);
    let group = dlq.group(REDRIVE_GROUP, options)?;
    // Lease every pending dead letter first, so that records left in place
    // are not handed out again within this call.
    let mut leased = Vec::new();
    while let Some(delivery) = group.try_recv()? {
        leased.push(delivery);
    }
    let leased = all_dead_letters(dlq.name(), leased)?;
    let mut moved = 0;
    for delivery in leased {
        let source = header_str(delivery.record(), headers::SOURCE_TOPIC).map(str::to_owned);
        match source {
            Some(source) if filter(delivery.record()) => {
                let fresh = Redriven::new(delivery.record());
                let _offset = republish(&source, &fresh.record(), delivery.record().offset())?;
                trace_event!(info, dlq = dlq.name(), source = %source, offset = _offset, "record redriven");
                delivery.ack()?;
                moved += 1;
            }
            _ => delivery.nack_with_delay("not selected for redrive", Duration::ZERO)?,
        }
    }
    Ok(moved)
}

/// `leased` if every record is a dead letter (names its source topic);
/// otherwise puts them all back and fails with [`Error::InvalidArgument`].
fn all_dead_letters(dlq: &str, leased: Vec<Delivery>) -> Result<Vec<Delivery>> {
    let Some(stray) = leased
        .iter()
        .find(|d| header_str(d.record(), headers::SOURCE_TOPIC).is_none())
    else {
        return Ok(leased);
    };
    let offset = stray.record().offset();
    for delivery in leased {
        delivery.nack_with_delay("redrive refused", Duration::ZERO)?;
    }
    Err(Error::InvalidArgument(format!(
        "cannot redrive from topic {dlq:?}: its record at offset {offset} is not a dead letter \
         (no {} header)",
        headers::SOURCE_TOPIC
    )))
}
