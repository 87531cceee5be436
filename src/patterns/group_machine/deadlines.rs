//! The ends of a group machine's leases, in order: an ordered set of
//! (time, offset) pairs, kept as one queue of offsets per time. The
//! records one receive leases share a lease end, and records are leased
//! and settled mostly in offset order, so adding one and taking the first
//! of a time cost no search, where a set ordered by both would search a
//! tree on each.
//!
//! Invariants: each time's queue is sorted, holds no offset twice and is
//! never empty; `len` is the number of pairs held.

use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Default)]
pub(super) struct Deadlines {
    by_time: BTreeMap<i64, VecDeque<u64>>,
    len: usize,
}

impl Deadlines {
    /// Adds `offset` at `time`.
    pub(super) fn insert(&mut self, time: i64, offset: u64) {
        let offsets = self.by_time.entry(time).or_default();
        match offsets.back() {
            Some(&last) if last >= offset => match offsets.binary_search(&offset) {
                Ok(_) => return,
                Err(at) => offsets.insert(at, offset),
            },
            _ => offsets.push_back(offset),
        }
        self.len += 1;
    }

    /// Removes `offset` at `time`, if it is there.
    pub(super) fn remove(&mut self, time: i64, offset: u64) {
        let Some(offsets) = self.by_time.get_mut(&time) else {
            return;
        };
        let at = match offsets.front() {
            Some(&first) if first == offset => 0,
            _ => match offsets.binary_search(&offset) {
                Ok(at) => at,
                Err(_) => return,
            },
        };
        offsets.remove(at);
        self.len -= 1;
        if offsets.is_empty() {
            self.by_time.remove(&time);
        }
    }

    /// The earliest pair.
    pub(super) fn first(&self) -> Option<(i64, u64)> {
        let (&time, offsets) = self.by_time.first_key_value()?;
        Some((time, *offsets.front()?))
    }

    pub(super) fn clear(&mut self) {
        self.by_time.clear();
        self.len = 0;
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Deadlines behave as an ordered set of (time, offset).
        #[test]
        fn deadlines_match_an_ordered_set(
            ops in proptest::collection::vec((any::<bool>(), 0i64..4, 0u64..16), 1..200),
        ) {
            let mut deadlines = Deadlines::default();
            let mut model = BTreeSet::new();
            for (add, time, offset) in ops {
                match add {
                    true => {
                        deadlines.insert(time, offset);
                        model.insert((time, offset));
                    }
                    false => {
                        deadlines.remove(time, offset);
                        model.remove(&(time, offset));
                    }
                }
                prop_assert_eq!(deadlines.len(), model.len());
                prop_assert_eq!(deadlines.first(), model.first().copied());
            }
            while let Some((time, offset)) = deadlines.first() {
                prop_assert_eq!(model.pop_first(), Some((time, offset)));
                deadlines.remove(time, offset);
            }
            prop_assert!(model.is_empty());
        }
    }
}
