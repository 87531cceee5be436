//! Read-only inspection, for the `logbus-dump` tool: walks segment bytes
//! with the library's own decoders (continuing past damage where the
//! framing allows), checks indexes against the frames they point at, runs
//! the real recovery as a dry run on an `OverlayStorage`, and summarizes
//! a bus directory. Nothing here writes to disk or takes a lock.
//!
//! A dry run sorts recovery's repairs: after an unclean shutdown (no
//! `.clean` marker), deleting files that hold no record (orphan indexes, a
//! segment torn while being created) and rebuilding the active segment's
//! indexes are leftovers that recovery repairs without losing anything.
//! Every other repair (a truncated tail, a rebuilt sealed index) and every
//! repair after a clean close is damage.
//!
//! The read-only opening of logs and consumer state below is what the bus
//! itself uses for the stats of topics it has not opened; the checks
//! (`check`) and the real-file-system entry points exist for the dump tool
//! only, under the feature `internals`.

#[cfg(feature = "internals")]
mod check;

#[cfg(feature = "internals")]
use std::collections::BTreeSet;
#[cfg(feature = "internals")]
use std::path::Path;
#[cfg(feature = "internals")]
use std::sync::Arc;

#[cfg(feature = "internals")]
pub use check::{
    DryRun, FrameInfo, Problem, Repair, SegmentWalk, check_offset_index, check_time_index, dry_run_recovery,
    has_segment_magic, segment_base, walk_segment,
};

use crate::error::Result;
#[cfg(feature = "internals")]
use crate::io::{OverlayStorage, StdStorage};
use crate::log::{Durability, Log, LogOptions};
use crate::patterns::{GroupSummary, recovered_commit, summarize_group};
#[cfg(feature = "internals")]
use crate::patterns::{REDRIVE_GROUP, unsettled_offsets};
use crate::state::{BusLayout, ConsumerId, ConsumerKind};

/// Options of a read-only open: what recovery would write goes to an
/// overlay, never synced.
fn read_only_options() -> LogOptions {
    LogOptions::default().durability(Durability::Os)
}

/// Opens a log through a fresh overlay, so nothing is ever written.
#[cfg(feature = "internals")]
pub fn open_read_only(dir: &Path) -> Result<Log> {
    let overlay = Arc::new(OverlayStorage::over(Arc::new(StdStorage)));
    Log::open(dir, read_only_options().storage(overlay))
}

/// Opens the log of `topic` in the bus `layout` through a fresh overlay, so
/// nothing is written.
pub(crate) fn open_topic_read_only(layout: &BusLayout, topic: &str) -> Result<Log> {
    layout.read_only().open_topic(topic, read_only_options())
}

/// A durable subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    /// Its name.
    pub name: String,
    /// Its committed offset.
    pub committed: u64,
}

/// A consumer group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Its persisted state.
    pub summary: GroupSummary,
    /// Offsets below `summary.next_offset` not yet settled.
    #[cfg(feature = "internals")]
    unsettled: BTreeSet<u64>,
}

#[cfg(feature = "internals")]
impl GroupView {
    /// Whether the group acked or dead-lettered `offset`.
    pub fn settled(&self, offset: u64) -> bool {
        offset < self.summary.next_offset && !self.unsettled.contains(&offset)
    }
}

/// A consumer whose state log could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerError {
    /// `"subscription"` or `"group"`.
    pub kind: &'static str,
    /// The consumer's name.
    pub name: String,
    /// Why its state could not be read.
    pub error: String,
}

/// The durable consumers of one topic in a bus directory.
#[derive(Debug, Clone, Default)]
pub struct ConsumersView {
    /// Durable subscriptions.
    pub subscriptions: Vec<SubscriptionView>,
    /// Consumer groups.
    pub groups: Vec<GroupView>,
    /// Consumers whose state is damaged or unreadable.
    pub errors: Vec<ConsumerError>,
}

#[cfg(feature = "internals")]
impl ConsumersView {
    /// For a dead-letter topic's consumers: whether `redrive` moved the
    /// dead letter at `offset` back to its source (its group acked it).
    pub fn redriven(&self, offset: u64) -> bool {
        self.groups
            .iter()
            .any(|g| g.name == REDRIVE_GROUP && g.settled(offset))
    }
}

/// Reads the stored consumers of `topic` in the bus at `bus_dir`, without
/// writing or locking. A consumer whose state log fails to open is listed
/// in `errors`; only a failure to list the state directories is an error.
#[cfg(feature = "internals")]
pub fn consumers(bus_dir: &Path, topic: &str) -> Result<ConsumersView> {
    consumers_in(&BusLayout::new(Arc::new(StdStorage), bus_dir), topic)
}

/// Reads the stored consumers of `topic` in the bus `layout` through a
/// fresh overlay, without writing or locking.
pub(crate) fn consumers_in(layout: &BusLayout, topic: &str) -> Result<ConsumersView> {
    let layout = layout.read_only();
    let mut view = ConsumersView::default();
    for kind in ConsumerKind::ALL {
        for consumer in layout.consumers(kind, topic)? {
            let events = match layout.open_state(topic, &consumer, Durability::Os) {
                Ok((_state, events)) => events,
                Err(e) => {
                    view.errors.push(ConsumerError {
                        kind: kind.label(),
                        name: consumer.name().to_owned(),
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            match consumer {
                ConsumerId::Subscription(name) => view.subscriptions.push(SubscriptionView {
                    name,
                    committed: recovered_commit(&events),
                }),
                ConsumerId::Group(name) => view.groups.push(GroupView {
                    name,
                    summary: summarize_group(&events),
                    #[cfg(feature = "internals")]
                    unsettled: unsettled_offsets(&events),
                }),
            }
        }
    }
    Ok(view)
}
