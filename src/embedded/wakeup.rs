//! A timer thread that wakes a topic's waiters when a delayed redelivery
//! (backoff) or a lease expiry falls due, for async receivers, which have no
//! blocking deadline of their own. One thread per bus, started on first use,
//! ending when the bus is dropped.
//!
//! Real time only: due times are wall-clock ms. On a simulated clock
//! (`crate::clock::SimClock`) nothing is scheduled here: `recv_async` moves
//! the clock to the due time itself and polls again (`group.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use crate::clock::wall_ms;
use crate::embedded::TopicInner;

#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    due: BinaryHeap<Reverse<(i64, u64)>>,
    targets: std::collections::HashMap<u64, Weak<TopicInner>>,
    next_id: u64,
    stopped: bool,
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Wakeups {
    /// Wakes `topic`'s waiters at `due_ms` (ms since the Unix epoch).
    pub(crate) fn schedule(&self, due_ms: i64, topic: &Arc<TopicInner>) {
        self.started.get_or_init(|| {
            let shared = Arc::downgrade(&self.shared);
            // If the thread cannot start, async receivers still wake on
            // appends and acks; only delayed redeliveries wait longer.
            let _ = std::thread::Builder::new()
                .name("logbus-wakeups".into())
                .spawn(move || run(shared));
        });
        let mut state = lock(&self.shared.state);
        let id = state.next_id;
        state.next_id += 1;
        state.targets.insert(id, Arc::downgrade(topic));
        state.due.push(Reverse((due_ms, id)));
        self.shared.changed.notify_all();
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        lock(&self.shared.state).stopped = true;
        self.shared.changed.notify_all();
    }
}

fn run(shared: Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else { return };
        let mut state = lock(&shared.state);
        if state.stopped {
            return;
        }
        let now = wall_ms();
        let mut fired = Vec::new();
        while let Some(&Reverse((due, id))) = state.due.peek()
            && due <= now
        {
            state.due.pop();
            fired.extend(state.targets.remove(&id));
        }
        let wait = state
            .due
            .peek()
            .map_or(Duration::from_secs(1), |Reverse((due, _))| {
                Duration::from_millis((due - now).clamp(1, 1000) as u64)
            });
        if fired.is_empty() {
            drop(shared.changed.wait_timeout(state, wait));
            continue;
        }
        drop(state);
        for topic in fired.iter().filter_map(Weak::upgrade) {
            topic.log.activity().notify();
        }
    }
}
