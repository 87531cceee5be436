//! What a requester remembers of the requests it sent, without a backend:
//! before a request it collects later (`send_request`, a scatter) it
//! writes a record to its own inbox naming the correlation id (and a
//! scatter's recipients), so that after a restart it can list what is
//! still waiting for replies and resume a scatter from its id alone.
//!
//! Invariants: a sent record carries [`headers::SENT_ID`] and no
//! `correlation-id`, so it is never taken for a reply; it is written
//! before the request, so a request that was published always has one (a
//! crash between the two leaves one for a request never sent, which then
//! stays pending).

use std::collections::{BTreeSet, HashMap};

use crate::patterns::{CorrelationId, headers};
use crate::record::{Record, StoredRecord};

/// The value of a sent record of a request.
const REQUEST: &[u8] = b"request";
/// The value of a sent record of a scatter.
const SCATTER: &[u8] = b"scatter";

/// The record noting `id_text` as sent: a request, or a scatter to
/// `recipients`.
pub(crate) fn sent_record<'a>(id_text: &'a str, scatter: Option<&'a [String]>) -> Record<'a> {
    let value = match scatter {
        Some(_) => SCATTER,
        None => REQUEST,
    };
    let record = Record::new(value).header(headers::SENT_ID, id_text.as_bytes());
    scatter.unwrap_or_default().iter().fold(record, |record, to| {
        record.header(headers::RECIPIENT, to.as_bytes())
    })
}

/// A request noted as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    id: CorrelationId,
    /// A scatter's recipients; `None` for a request.
    recipients: Option<Vec<String>>,
}

/// The sent records and replies of an inbox, read in inbox order.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    sent: Vec<Sent>,
    /// Who replied to each id (an unnamed replier as "").
    replied: HashMap<CorrelationId, BTreeSet<String>>,
}

impl Ledger {
    /// Takes in one record of the inbox: a sent record, a reply, or
    /// anything else (ignored).
    pub(crate) fn read(&mut self, record: &StoredRecord) {
        let id_of = |name| record.header(name).and_then(CorrelationId::from_header);
        if let Some(id) = id_of(headers::CORRELATION_ID) {
            let from = record.header(headers::REPLIER).unwrap_or_default();
            let from = String::from_utf8_lossy(from).into_owned();
            self.replied.entry(id).or_default().insert(from);
        } else if let Some(id) = id_of(headers::SENT_ID) {
            let recipients = (record.value() == SCATTER).then(|| {
                (record.headers())
                    .filter(|(name, _)| *name == headers::RECIPIENT)
                    .map(|(_, to)| String::from_utf8_lossy(to).into_owned())
                    .collect()
            });
            self.sent.push(Sent { id, recipients });
        }
    }

    /// The ids sent and still waiting, in sending order: a request
    /// without a reply, a scatter with a recipient that has not replied.
    pub(crate) fn pending(&self) -> Vec<CorrelationId> {
        let waiting = |sent: &&Sent| {
            let replied = self.replied.get(&sent.id);
            match (&sent.recipients, replied) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(all), Some(replied)) => all.iter().any(|to| !replied.contains(to)),
            }
        };
        self.sent.iter().filter(waiting).map(|sent| sent.id).collect()
    }

    /// The recipients of the scatter `id`, if it was noted as one.
    pub(crate) fn recipients(&self, id: CorrelationId) -> Option<&[String]> {
        let sent = self.sent.iter().find(|sent| sent.id == id)?;
        sent.recipients.as_deref()
    }
}
