//! The async API on the embedded backend: every `*_async` method and the
//! receive streams under four executors (tokio current-thread and
//! multi-thread, `futures::executor` and smol), what a future dropped at
//! each of its await points did (cancellation), and that an append under
//! `Durability::Always` does not block the executor's thread while its
//! sync runs.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::futures::poll_once;
use common::groups::group_options;
use common::storage::{Hooked, Hooks};
use futures::StreamExt;
use logbus::storage::SimStorage;
use logbus::{
    Bus, BusOptions, Durability, Gather, Group, Recipients, Record, StartAt, StopReason, Topic, TopicOptions,
};

fn always() -> TopicOptions {
    TopicOptions::default().durability(Durability::Always)
}

/// Every async method and stream, on a bus in `dir`, under `Always`.
async fn every_async_method(dir: PathBuf) -> logbus::Result<()> {
    let bus = Bus::open(&dir, BusOptions::default().topic_defaults(always()))?;
    let jobs = bus.topic("jobs")?;
    assert_eq!(jobs.publish_async(&Record::new(b"a")).await?, 0);
    let batch = [Record::new(b"b"), Record::new(b"c")];
    assert_eq!(jobs.publish_batch_async(&batch).await?, 1..3);

    // A subscription's stream, then an async commit.
    let mut audit = jobs.subscribe("audit", StartAt::Earliest)?;
    let values: Vec<Vec<u8>> = audit
        .stream()
        .take(3)
        .map(|record| record.expect("a record").value().to_vec())
        .collect()
        .await;
    assert_eq!(values, [b"a", b"b", b"c"]);
    audit.commit_async().await?;
    assert_eq!(audit.committed(), 3);

    // A group's stream; each way to settle, async.
    let workers = jobs.group(
        "workers",
        group_options(Duration::from_secs(60), 2, Duration::ZERO),
    )?;
    let mut deliveries = workers.stream();
    let mut next = async || deliveries.next().await.expect("a delivery");
    next().await?.ack_async().await?;
    next().await?.nack_async("retry").await?; // "b", redelivered at once
    let again = next().await?;
    assert_eq!((again.record().value(), again.attempt()), (&b"b"[..], 2));
    again
        .nack_with_delay_async("still failing", Duration::ZERO)
        .await?; // the last attempt
    let poison = next().await?;
    assert_eq!(poison.record().value(), b"c");
    poison.reject_async("poison").await?;
    let stats = workers.stats()?;
    assert_eq!((stats.acked, stats.dead_lettered, stats.low_watermark), (1, 2, 3));
    assert_eq!(bus.topic("jobs.dlq")?.end_offset(), 2);

    // Request-reply, both ways of replying.
    let pricing = bus.responder("pricing")?;
    let checkout = bus.requester("checkout")?;
    let mut requests = pricing.stream();
    let (sku_7, sku_0) = (Record::new(b"sku-7"), Record::new(b"sku-0"));
    let (reply, served) = futures::join!(checkout.request_async("pricing", &sku_7), async {
        let request = requests.next().await.expect("a request")?;
        request.reply_async(&Record::new(b"3.20")).await
    });
    served?;
    assert_eq!(reply?.value(), b"3.20");
    let (reply, served) = futures::join!(checkout.request_async("pricing", &sku_0), async {
        let request = requests.next().await.expect("a request")?;
        request.reply_err_async("unknown sku").await
    });
    served?;
    assert_eq!(reply?.error(), Some("unknown sku"));

    // Scatter-gather: all replied, then a deadline the timer thread ends.
    let everyone = || Recipients::Services(vec!["pricing".into()]);
    let scatter = checkout.scatter_async(everyone(), &Record::new(b"quote")).await?;
    let (gathered, served) = futures::join!(
        scatter.gather_async(Gather::all(Duration::from_secs(30))),
        async {
            let request = requests.next().await.expect("a request")?;
            request.reply_async(&Record::new(b"4.00")).await
        }
    );
    served?;
    let gathered = gathered?;
    assert_eq!((gathered.replies.len(), gathered.stopped), (1, StopReason::All));
    let unanswered = checkout.scatter(everyone(), &Record::new(b"nobody answers"))?;
    let gathered = unanswered
        .gather_async(Gather::all(Duration::from_millis(50)))
        .await?;
    assert_eq!(
        (gathered.missing.len(), gathered.stopped),
        (1, StopReason::Deadline)
    );
    Ok(())
}

#[test]
fn every_async_method_on_tokio_current_thread() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(every_async_method(dir.path().into())).unwrap();
}

#[test]
fn every_async_method_on_tokio_multi_thread() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // Spawned, so it runs on a worker (and its future must be Send).
    let task = runtime.spawn(every_async_method(dir.path().into()));
    runtime.block_on(task).unwrap().unwrap();
}

#[test]
fn every_async_method_on_futures_block_on() {
    let dir = tempfile::tempdir().unwrap();
    futures::executor::block_on(every_async_method(dir.path().into())).unwrap();
}

#[test]
fn every_async_method_on_smol() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(every_async_method(dir.path().into())).unwrap();
}

/// Holds every sync while closed (up to a minute, then lets it pass and
/// records that it had to).
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    held: usize,
    timed_out: bool,
}

impl Gate {
    fn close(&self) {
        self.state.lock().unwrap().closed = true;
    }

    fn open(&self) {
        self.state.lock().unwrap().closed = false;
        self.changed.notify_all();
    }

    /// Waits until a sync is held (it runs on another thread).
    fn wait_held(&self) {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(60), |s| s.held == 0)
            .unwrap();
        assert!(state.held > 0, "no sync started");
    }

    fn timed_out(&self) -> bool {
        self.state.lock().unwrap().timed_out
    }
}

impl Hooks for Arc<Gate> {
    fn before_sync(&self) {
        let mut state = self.state.lock().unwrap();
        state.held += 1;
        self.changed.notify_all();
        let (mut state, waited) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(60), |s| s.closed)
            .unwrap();
        state.timed_out |= waited.timed_out();
        state.held -= 1;
    }
}

/// A bus on simulated storage whose syncs `gate` can hold.
fn gated_bus(dir: &Path) -> (Bus, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let storage = Hooked::new(SimStorage::new(), gate.clone());
    let options = BusOptions::default()
        .storage(Arc::new(storage))
        .topic_defaults(always());
    (Bus::open(dir, options).unwrap(), gate)
}

/// A gated bus with one record on the topic "jobs" and its group "workers"
/// (60 s lease, 5 attempts, no backoff).
fn gated_job() -> (Bus, Arc<Gate>, Topic, Group) {
    let (bus, gate) = gated_bus(Path::new("/sim/bus"));
    let jobs = bus.topic("jobs").unwrap();
    jobs.publish(&Record::new(b"job")).unwrap();
    let options = group_options(Duration::from_secs(60), 5, Duration::ZERO);
    let workers = jobs.group("workers", options).unwrap();
    (bus, gate, jobs, workers)
}

#[test]
fn an_always_publish_async_leaves_the_executor_free_while_it_syncs() {
    let (bus, gate) = gated_bus(Path::new("/sim/bus"));
    let topic = bus.topic("events").unwrap();
    gate.close();
    let other_task_ran = AtomicBool::new(false);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let offset = runtime.block_on(async {
        let record = Record::new(b"e");
        let publish = topic.publish_async(&record);
        let other = async {
            // The publish wrote its record and its sync is held on another
            // thread; this task, on the same thread, still runs.
            tokio::task::yield_now().await;
            gate.wait_held();
            assert_eq!(topic.end_offset(), 0, "not readable before its sync");
            other_task_ran.store(true, Ordering::Relaxed);
            gate.open();
        };
        tokio::join!(publish, other).0
    });
    assert_eq!(offset.unwrap(), 0);
    assert!(other_task_ran.load(Ordering::Relaxed));
    assert!(!gate.timed_out(), "the publish blocked the executor's thread");
    assert_eq!(topic.end_offset(), 1);
}

#[test]
fn a_dropped_publish_async_wrote_nothing_before_its_first_poll_and_its_record_after() {
    let (bus, gate) = gated_bus(Path::new("/sim/bus"));
    let topic = bus.topic("events").unwrap();
    drop(topic.publish_async(&Record::new(b"never polled")));
    assert_eq!(topic.end_offset(), 0);

    gate.close();
    let pending = poll_once(topic.publish_async(&Record::new(b"cancelled while syncing")));
    assert!(pending.is_pending());
    gate.wait_held();
    gate.open();
    // The record was appended: the next one follows it, and it is durable.
    assert_eq!(topic.publish(&Record::new(b"next")).unwrap(), 1);
    let log = topic.log().expect("embedded");
    assert_eq!(log.read(0).unwrap().unwrap().value(), b"cancelled while syncing");
    assert!(!gate.timed_out());
}

#[test]
fn a_dropped_ack_async_released_the_record_before_its_first_poll_and_acked_it_after() {
    let (_bus, gate, jobs, workers) = gated_job();

    let first = workers.try_recv().unwrap().expect("a delivery");
    drop(first.ack_async()); // never polled: dropped unsettled, so released
    let second = workers.try_recv().unwrap().expect("redelivered");
    assert_eq!(second.attempt(), 2);

    gate.close();
    assert!(poll_once(second.ack_async()).is_pending());
    gate.wait_held();
    gate.open();
    // Acked in memory at once, and its event synced by the sync thread.
    assert!(workers.try_recv().unwrap().is_none());
    assert_eq!(workers.stats().unwrap().in_flight, 0);
    jobs.publish(&Record::new(b"after")).unwrap(); // a sync behind the ack's
    assert!(!gate.timed_out());
}

#[test]
fn a_dropped_nack_async_redelivers_and_a_dropped_commit_async_commits_nothing_yet() {
    let (_bus, gate, jobs, workers) = gated_job();
    let mut audit = jobs.subscribe("audit", StartAt::Earliest).unwrap();
    assert!(audit.try_recv().unwrap().is_some());

    let delivery = workers.try_recv().unwrap().expect("a delivery");
    gate.close();
    assert!(poll_once(delivery.nack_async("failed")).is_pending());
    assert!(poll_once(audit.commit_async()).is_pending());
    assert_eq!(audit.committed(), 0, "a commit cut short does not count");
    gate.open();
    let again = workers.try_recv().unwrap().expect("redelivered after the nack");
    assert_eq!(again.attempt(), 2);
    again.ack().unwrap();
    audit.commit().unwrap();
    assert_eq!(audit.committed(), 1);
    assert!(!gate.timed_out());
}

#[test]
fn a_dropped_reject_async_dead_letters_once() {
    let (bus, gate) = gated_bus(Path::new("/sim/bus"));
    let jobs = bus.topic("jobs").unwrap();
    jobs.publish(&Record::new(b"poison")).unwrap();
    let workers = jobs
        .group(
            "workers",
            group_options(Duration::from_secs(60), 5, Duration::ZERO),
        )
        .unwrap();
    let dlq = bus.topic("jobs.dlq").unwrap();

    let delivery = workers.try_recv().unwrap().expect("a delivery");
    gate.close();
    // Cut short while its intent syncs: due to be dead-lettered again.
    assert!(poll_once(delivery.reject_async("bad")).is_pending());
    gate.wait_held();
    gate.open();
    // The next receive finishes the dead letter instead of handing it out.
    assert!(workers.recv(Duration::from_millis(100)).unwrap().is_none());
    assert_eq!(dlq.end_offset(), 1);
    assert_eq!(workers.stats().unwrap().dead_lettered, 1);
    assert!(!gate.timed_out());
}

#[test]
fn a_dropped_reply_or_gather_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let pricing = bus.responder("pricing").unwrap();
    let checkout = bus.requester("checkout").unwrap();
    let scatter = checkout
        .scatter(Recipients::Services(vec!["pricing".into()]), &Record::new(b"q"))
        .unwrap();

    // A gather dropped while it waits: the reply is there for the next.
    let rule = || Gather::all(Duration::from_secs(30));
    assert!(poll_once(scatter.gather_async(rule())).is_pending());
    let request = pricing.try_recv().unwrap().expect("a request");
    drop(request.reply_async(&Record::new(b"never sent"))); // released, not answered
    let request = pricing
        .recv(Duration::from_secs(30))
        .unwrap()
        .expect("redelivered");
    futures::executor::block_on(request.reply_async(&Record::new(b"4.00"))).unwrap();
    let gathered = futures::executor::block_on(scatter.gather_async(rule())).unwrap();
    assert_eq!(gathered.replies.len(), 1);
    assert_eq!(gathered.replies[0].value(), b"4.00");
    assert!(pricing.try_recv().unwrap().is_none(), "the request was acked");
}

backend_tests! {
    /// From inside a tokio runtime, on both backends: publish, receive,
    /// settle, commit, scatter and gather, async.
    fn publish_settle_commit_scatter_and_gather_async_inside_a_tokio_runtime(backend: &TestBackend) {
        let bus = backend.open();
        let jobs = bus.topic("jobs").expect("topic");
        let workers = jobs
            .group("workers", group_options(Duration::from_secs(60), 5, Duration::ZERO))
            .expect("group");
        let mut audit = jobs.subscribe("audit", StartAt::Earliest).expect("subscribe");
        let pricing_topic = "pricing".to_owned();
        let pricing = bus.responder(&pricing_topic).expect("responder");
        let checkout = bus.requester("checkout").expect("requester");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            for value in [&b"a"[..], b"b"] {
                jobs.publish_async(&Record::new(value)).await.expect("publish");
            }
            let first = workers.recv_async().await.expect("first");
            assert_eq!(first.record().value(), b"a");
            first.nack_async("once more").await.expect("nack");
            let mut acked = Vec::new();
            while acked.len() < 2 {
                let delivery = workers.recv_async().await.expect("delivery");
                acked.push(delivery.record().value().to_vec());
                delivery.ack_async().await.expect("ack");
            }
            acked.sort();
            assert_eq!(acked, [b"a", b"b"]);
            let mut records = audit.stream().take(2);
            while let Some(record) = records.next().await {
                record.expect("record");
            }
            drop(records);
            audit.commit_async().await.expect("commit");
            // Scatter-gather, the request served by a sibling future.
            let services = Recipients::Services(vec![pricing_topic.clone()]);
            let scatter = checkout
                .scatter_async(services, &Record::new(b"quote"))
                .await
                .expect("scatter");
            let (gathered, served) = futures::join!(scatter.gather_async(Gather::all(Duration::from_secs(30))), async {
                let request = pricing.recv_async().await?;
                request.reply_async(&Record::new(b"4.00")).await
            });
            served.expect("reply");
            let gathered = gathered.expect("gather");
            assert_eq!((gathered.replies.len(), gathered.stopped), (1, StopReason::All));
        });
        assert_eq!(audit.committed(), 2);
        let batch = [Record::new(b"c"), Record::new(b"d")];
        let stored = futures::executor::block_on(jobs.publish_batch_async(&batch));
        assert_eq!(stored.expect("batch"), 2..4);
        bus.close().expect("close");
    }

    /// The blocking calls inside a tokio runtime, on both backends: from
    /// `spawn_blocking`, from `block_in_place`, and straight from a task
    /// (which blocks its thread while it waits, as any blocking I/O does),
    /// on a multi-thread and a current-thread runtime.
    fn blocking_calls_work_inside_a_tokio_runtime(backend: &TestBackend) {
        let bus = backend.open();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let opened = bus.clone();
        let (jobs, workers) = runtime.block_on(async {
            let (jobs, workers) = tokio::task::spawn_blocking(move || {
                let jobs = opened.topic("jobs")?;
                let workers = jobs.group("workers", group_options(Duration::from_secs(60), 5, Duration::ZERO))?;
                assert_eq!(jobs.publish(&Record::new(b"a"))?, 0);
                Ok::<_, logbus::Error>((jobs, workers))
            })
            .await
            .expect("join")
            .expect("opened from spawn_blocking");
            let delivery = tokio::task::block_in_place(|| workers.recv(Duration::from_secs(30)))
                .expect("recv")
                .expect("a delivery");
            assert_eq!(delivery.record().value(), b"a");
            tokio::task::block_in_place(|| delivery.ack()).expect("ack from block_in_place");
            assert_eq!(jobs.publish(&Record::new(b"b")).expect("publish from a task"), 1);
            (jobs, workers)
        });
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        current.block_on(async {
            let delivery = workers.recv(Duration::from_secs(30)).expect("recv").expect("a delivery");
            assert_eq!(delivery.record().value(), b"b");
            delivery.ack().expect("ack from a task");
            let stored = jobs.publish_batch(&[Record::new(b"c"), Record::new(b"d")]).expect("batch");
            assert_eq!(stored, 2..4);
            assert_eq!(bus.topic("jobs").expect("topic").end_offset(), 4);
        });
        drop(runtime);
        bus.close().expect("close");
    }
}

#[test]
fn a_group_recv_async_dropped_while_its_lease_syncs_hands_nothing_out() {
    let (_bus, gate, _jobs, workers) = gated_job();
    gate.close();
    // Leased, its attempt written, then cut short while that syncs.
    assert!(poll_once(workers.recv_async()).is_pending());
    gate.wait_held();
    gate.open();
    let delivery = workers.try_recv().unwrap().expect("the lease was taken back");
    assert_eq!(delivery.attempt(), 1, "the attempt was taken back too");
    delivery.ack().unwrap();
    assert!(!gate.timed_out());
}
