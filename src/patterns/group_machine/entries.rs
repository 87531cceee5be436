//! A group machine's entries by offset. Offsets are dense (a group admits
//! a topic's records in order, and `delivered` fills the gaps it finds),
//! so the entries live in a window, one slot per offset from `base` on,
//! where finding, adding and dropping the first entry cost no search and
//! no allocation per entry. Only a gap wider than [`MAX_GAP`] (records
//! retention removed before they were admitted, under an unsettled
//! record that holds the low watermark) moves the window's entries to an
//! ordered map below it, so memory stays proportional to the entries held.
//!
//! Invariants:
//! - every offset in `below` is less than `base`;
//! - the window's first and last slots hold entries (or it is empty);
//! - `len` counts the entries of `below` and of the window's slots.

use std::collections::{BTreeMap, VecDeque};

/// The widest gap of empty slots the window takes; a wider one moves the
/// window's entries to `below` and starts it again.
const MAX_GAP: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entries<E> {
    below: BTreeMap<u64, E>,
    window: VecDeque<Option<E>>,
    base: u64,
    len: usize,
}

impl<E> Default for Entries<E> {
    fn default() -> Self {
        Entries {
            below: BTreeMap::new(),
            window: VecDeque::new(),
            base: 0,
            len: 0,
        }
    }
}

impl<E> Entries<E> {
    /// The window slot of `offset`, if the window covers it.
    fn slot(&self, offset: u64) -> Option<usize> {
        let index = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        (index < self.window.len()).then_some(index)
    }

    pub(super) fn get(&self, offset: u64) -> Option<&E> {
        match self.slot(offset) {
            Some(index) => self.window[index].as_ref(),
            None if offset < self.base => self.below.get(&offset),
            None => None,
        }
    }

    pub(super) fn get_mut(&mut self, offset: u64) -> Option<&mut E> {
        match self.slot(offset) {
            Some(index) => self.window[index].as_mut(),
            None if offset < self.base => self.below.get_mut(&offset),
            None => None,
        }
    }

    /// Sets the entry of `offset`.
    pub(super) fn insert(&mut self, offset: u64, entry: E) {
        // An empty window starts at `offset`, unless entries below need it
        // to stay above them.
        if self.window.is_empty() && self.below.last_key_value().is_none_or(|(&last, _)| last < offset) {
            self.base = offset;
        }
        if let Some(index) = self.slot(offset) {
            if self.window[index].replace(entry).is_none() {
                self.len += 1;
            }
            return;
        }
        if offset < self.base {
            if self.below.insert(offset, entry).is_none() {
                self.len += 1;
            }
            return;
        }
        let end = self.base + self.window.len() as u64;
        if offset - end > MAX_GAP {
            let base = self.base;
            let moved = (self.window.drain(..).enumerate())
                .filter_map(|(index, slot)| Some((base + index as u64, slot?)));
            self.below.extend(moved);
            self.base = offset;
        } else if offset > end {
            self.window
                .resize_with(self.window.len() + (offset - end) as usize, || None);
        }
        self.window.push_back(Some(entry));
        self.len += 1;
    }

    /// The entry of the lowest offset.
    pub(super) fn first(&self) -> Option<(u64, &E)> {
        match self.below.first_key_value() {
            Some((&offset, entry)) => Some((offset, entry)),
            None => Some((self.base, self.window.front()?.as_ref()?)),
        }
    }

    /// Drops the entry of the lowest offset.
    pub(super) fn pop_first(&mut self) {
        if self.below.pop_first().is_some() {
            self.len -= 1;
            return;
        }
        if self.window.pop_front().is_none() {
            return;
        }
        self.len -= 1;
        self.base += 1;
        while self.window.front().is_some_and(Option::is_none) {
            self.window.pop_front();
            self.base += 1;
        }
    }

    /// The entries in offset order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &E)> + Clone + '_ {
        let base = self.base;
        let below = self.below.iter().map(|(&offset, entry)| (offset, entry));
        let window = (self.window.iter().enumerate())
            .filter_map(move |(index, slot)| Some((base + index as u64, slot.as_ref()?)));
        below.chain(window)
    }

    pub(super) fn clear(&mut self) {
        self.below.clear();
        self.window.clear();
        self.len = 0;
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        PopFirst,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Mostly near the end, sometimes far past it (a retention gap)
            // or below the first entry (a topic behind its state).
            4 => (0u64..8).prop_map(Op::Insert),
            1 => (0u64..20_000).prop_map(Op::Insert),
            3 => Just(Op::PopFirst),
        ]
    }

    proptest! {
        /// The entries behave as an ordered map of offsets, whatever the
        /// gaps between them.
        #[test]
        fn entries_match_an_ordered_map(ops in proptest::collection::vec(op(), 1..200)) {
            let mut entries = Entries::default();
            let mut model = BTreeMap::new();
            let mut end = 0u64;
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(delta) => {
                        let offset = match delta {
                            0..8 => end + delta,
                            far => far,
                        };
                        end = end.max(offset + 1);
                        entries.insert(offset, step);
                        model.insert(offset, step);
                    }
                    Op::PopFirst => {
                        entries.pop_first();
                        model.pop_first();
                    }
                }
                let expected: Vec<(u64, usize)> = model.iter().map(|(&o, &s)| (o, s)).collect();
                let got: Vec<(u64, usize)> = entries.iter().map(|(o, &s)| (o, s)).collect();
                prop_assert_eq!(&got, &expected);
                prop_assert_eq!(entries.len(), model.len());
                prop_assert_eq!(entries.first().map(|(o, &s)| (o, s)), expected.first().copied());
                for probe in [0, end / 2, end.saturating_sub(1), end, end + 5000] {
                    prop_assert_eq!(entries.get(probe), model.get(&probe));
                }
            }
        }
    }
}
