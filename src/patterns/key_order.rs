//! What per-key ordering ([`crate::DeliveryOrder::PerKey`]) needs to know
//! of a record: its key, as a hash. Two keys with one hash are ordered as
//! one key: that costs parallelism, never order.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use crate::patterns::headers;
use crate::record::StoredRecord;

/// The hash of `record`'s key; `None` for a record without a key (which a
/// per-key group hands out unordered).
pub(crate) fn key_hash(record: &StoredRecord) -> Option<u64> {
    let key = record.key();
    (!key.is_empty()).then(|| BuildHasherDefault::<DefaultHasher>::default().hash_one(key))
}

/// Whether `record` was put back by a redrive (it carries
/// [`headers::REDRIVE_COUNT`]).
pub(crate) fn is_redriven(record: &StoredRecord) -> bool {
    record.header(headers::REDRIVE_COUNT).is_some()
}
