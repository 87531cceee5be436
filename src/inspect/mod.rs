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
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "internals")]
pub use check::{
    DryRun, FrameInfo, Problem, Repair, SegmentWalk, check_offset_index, check_time_index, dry_run_recovery,
    has_segment_magic, segment_base, walk_segment,
};

use crate::error::Result;
use crate::format::StateEvent;
#[cfg(feature = "internals")]
use crate::io::StdStorage;
use crate::io::{OverlayStorage, Storage};
use crate::log::{Durability, Log, LogOptions};
use crate::patterns::{GroupSummary, recovered_commit, summarize_group};
#[cfg(feature = "internals")]
use crate::patterns::{REDRIVE_GROUP, unsettled_offsets};
use crate::state::StateLog;
use crate::state::{GROUPS, SUBSCRIPTIONS};

/// Opens a log through a fresh overlay, so nothing is ever written.
#[cfg(feature = "internals")]
pub fn open_read_only(dir: &Path) -> Result<Log> {
    open_read_only_over(Arc::new(StdStorage), dir)
}

/// Opens a log in `base` through a fresh overlay, so nothing is written.
pub(crate) fn open_read_only_over(base: Arc<dyn Storage>, dir: &Path) -> Result<Log> {
    let options = LogOptions::default()
        .durability(Durability::Os)
        .storage(Arc::new(OverlayStorage::over(base)));
    Log::open(dir, options)
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
    consumers_over(Arc::new(StdStorage), bus_dir, topic)
}

/// Reads the stored consumers of `topic` in the bus at `bus_dir` in `base`,
/// without writing or locking.
pub(crate) fn consumers_over(base: Arc<dyn Storage>, bus_dir: &Path, topic: &str) -> Result<ConsumersView> {
    let storage = Arc::new(OverlayStorage::over(base));
    let mut view = ConsumersView::default();
    for kind in [SUBSCRIPTIONS, GROUPS] {
        for (name, events) in state_logs(&storage, &bus_dir.join("state").join(kind).join(topic))? {
            let events = match events {
                Ok(events) => events,
                Err(e) => {
                    let kind = if kind == SUBSCRIPTIONS {
                        "subscription"
                    } else {
                        "group"
                    };
                    let error = e.to_string();
                    view.errors.push(ConsumerError { kind, name, error });
                    continue;
                }
            };
            match kind {
                SUBSCRIPTIONS => view.subscriptions.push(SubscriptionView {
                    name,
                    committed: recovered_commit(&events),
                }),
                _ => view.groups.push(GroupView {
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

/// The events of every state log under `dir`, or why it failed to open,
/// by name, sorted.
fn state_logs(storage: &Arc<OverlayStorage>, dir: &Path) -> Result<Vec<(String, Result<Vec<StateEvent>>)>> {
    let mut names: Vec<PathBuf> = match storage.list(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    let mut logs = Vec::new();
    for path in names {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        // Hidden entries are not consumers: state logs moved aside by a repair.
        if name.starts_with('.') {
            continue;
        }
        let events = StateLog::open(&path, Durability::Os, storage.clone()).map(|(_state, events)| events);
        logs.push((name, events));
    }
    Ok(logs)
}
