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

/// Where the NATS bus runs its connection: on the caller's multi-thread
/// runtime when connected inside one (no thread or runtime of logbus's
/// own), on a private runtime inside a current-thread runtime or when
/// asked; and what a bus does once the caller's runtime is gone.
#[cfg(feature = "nats")]
mod nats_runtime {
    use std::sync::mpsc;

    use common::TestBackend;
    use common::child::{self, Running};
    use logbus::{Error, NatsOptions};

    use super::*;

    /// The child's entry point, by its full name.
    const ENTRY_POINT: &str = "nats_runtime::child_on_the_callers_runtime_entry_point";
    /// Carries the server's URL to the child.
    const URL_ENV: &str = "LOGBUS_TEST_NATS_URL";
    /// The private runtime's thread.
    const PRIVATE_THREAD: &str = "logbus-nats";

    /// A task of the current runtime that serves one request of
    /// `responder` with blocking calls, replying `reply`.
    fn serve_blocking(responder: &logbus::Responder, reply: &'static [u8]) -> tokio::task::JoinHandle<()> {
        let responder = responder.clone();
        tokio::spawn(async move {
            let request = (responder.recv(Duration::from_secs(30)))
                .expect("recv")
                .expect("a request");
            request.reply(&Record::new(reply)).expect("reply from a task");
        })
    }

    /// [`serve_blocking`] with the async calls.
    fn serve_async(responder: &logbus::Responder, reply: &'static [u8]) -> tokio::task::JoinHandle<()> {
        let responder = responder.clone();
        tokio::spawn(async move {
            let request = responder.recv_async().await.expect("recv_async");
            request
                .reply_async(&Record::new(reply))
                .await
                .expect("reply_async");
        })
    }

    /// Threads of this process named `name` (`/proc/self/task/*/comm`).
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    /// Runs `call` on a thread of its own and returns its result, failing
    /// the test if it takes longer than `limit` (a call that hangs).
    fn within<T: Send + 'static>(limit: Duration, call: impl FnOnce() -> T + Send + 'static) -> T {
        let (send, result) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = send.send(call());
        });
        result.recv_timeout(limit).expect("the calls returned in time")
    }

    /// Every pattern on `bus`, each with async calls and with blocking
    /// calls made from tasks (on a one-worker runtime: a blocking call that
    /// kept its worker would leave the connection's tasks nobody to run
    /// them) and from `spawn_blocking`.
    async fn every_pattern_async_and_blocking(bus: &Bus) {
        // Publish-subscribe.
        let jobs = bus.topic("jobs").expect("topic from the runtime's block_on");
        let mut audit = jobs.subscribe("audit", StartAt::Earliest).expect("subscribe");
        assert_eq!(
            jobs.publish_async(&Record::new(b"a"))
                .await
                .expect("publish_async"),
            0
        );
        let (jobs, mut audit) = tokio::spawn(async move {
            assert_eq!(jobs.publish(&Record::new(b"b")).expect("publish from a task"), 1);
            let record = audit
                .recv(Duration::from_secs(30))
                .expect("recv")
                .expect("a record");
            assert_eq!(record.value(), b"a");
            (jobs, audit)
        })
        .await
        .expect("join");
        assert_eq!(audit.recv_async().await.expect("recv_async").value(), b"b");
        audit.commit_async().await.expect("commit_async");
        let mut audit = tokio::task::spawn_blocking(move || {
            audit.commit().expect("commit from spawn_blocking");
            audit
        })
        .await
        .expect("join");
        assert_eq!(audit.committed(), 2);

        // A queue.
        let workers = jobs
            .group(
                "workers",
                group_options(Duration::from_secs(60), 5, Duration::ZERO),
            )
            .expect("group");
        let first = workers.recv_async().await.expect("recv_async");
        first.nack_async("once more").await.expect("nack_async");
        let again = workers.clone();
        let acked = tokio::spawn(async move {
            let mut acked = Vec::new();
            while acked.len() < 2 {
                let delivery = again
                    .recv(Duration::from_secs(30))
                    .expect("recv")
                    .expect("a delivery");
                acked.push(delivery.record().value().to_vec());
                delivery.ack().expect("ack from a task");
            }
            acked.sort();
            acked
        })
        .await
        .expect("join");
        assert_eq!(acked, [b"a", b"b"]);
        let batch = [Record::new(b"c"), Record::new(b"d")];
        assert_eq!(jobs.publish_batch_async(&batch).await.expect("batch"), 2..4);
        let delivery = workers.recv_async().await.expect("recv_async");
        delivery.ack_async().await.expect("ack_async");
        assert!(audit.recv(Duration::from_secs(30)).expect("recv").is_some());

        // Request-reply: a blocking responder in a task, an async request;
        // then an async responder in a task, a blocking request.
        let pricing = bus.responder("pricing").expect("responder");
        let checkout = bus.requester("checkout").expect("requester");
        let served = serve_blocking(&pricing, b"3.20");
        let reply = checkout
            .request_async("pricing", &Record::new(b"sku-7"))
            .await
            .expect("request_async");
        assert_eq!(reply.value(), b"3.20");
        served.await.expect("join");
        let served = serve_async(&pricing, b"3.30");
        let asking = checkout.clone();
        let reply = tokio::spawn(async move {
            asking
                .request("pricing", &Record::new(b"sku-8"), Duration::from_secs(30))
                .expect("request from a task")
        })
        .await
        .expect("join");
        assert_eq!(reply.value(), b"3.30");
        served.await.expect("join");

        // Scatter-gather, async and blocking.
        let services = Recipients::Services(vec!["pricing".to_owned()]);
        let scatter = checkout
            .scatter_async(services.clone(), &Record::new(b"quote"))
            .await
            .expect("scatter_async");
        let served = serve_blocking(&pricing, b"4.00");
        let gathered = scatter
            .gather_async(Gather::all(Duration::from_secs(30)))
            .await
            .expect("gather_async");
        assert_eq!((gathered.replies.len(), gathered.stopped), (1, StopReason::All));
        served.await.expect("join");
        let served = serve_async(&pricing, b"4.10");
        let gathered = tokio::spawn(async move {
            let scatter = checkout
                .scatter(services, &Record::new(b"quote"))
                .expect("scatter");
            scatter
                .gather(Gather::all(Duration::from_secs(30)))
                .expect("gather from a task")
        })
        .await
        .expect("join");
        assert_eq!((gathered.replies.len(), gathered.stopped), (1, StopReason::All));
        served.await.expect("join");
    }

    /// The child: connects from a task of a multi-thread runtime with one
    /// worker, runs every pattern, and checks that no thread of logbus's
    /// own runtime exists (alone in its process, so other tests' buses
    /// cannot start one).
    #[test]
    fn child_on_the_callers_runtime_entry_point() {
        let Some((_mode, _dir)) = child::role() else {
            return;
        };
        let url = std::env::var(URL_ENV).expect("the server's URL");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let bus = tokio::spawn(async move { Bus::connect_nats(&url, NatsOptions::default()) })
                .await
                .expect("join")
                .expect("connect from a task");
            every_pattern_async_and_blocking(&bus).await;
            assert_eq!(threads_named(PRIVATE_THREAD), 0, "a runtime of logbus's own");
            bus.close().expect("close");
        });
        child::report("done");
    }

    /// Connected inside a multi-thread runtime, the bus uses it: every
    /// pattern works with async and blocking calls, also from the
    /// runtime's only worker, and no `logbus-nats` thread exists (checked
    /// in a child process of its own).
    #[test]
    fn connected_inside_a_multi_thread_runtime_every_pattern_runs_on_it_and_no_thread_of_logbus_exists() {
        let Some(backend) = TestBackend::nats() else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = child::command(&[], ENTRY_POINT, "callers-runtime", dir.path());
        command.env(URL_ENV, backend.nats_url().expect("a NATS backend"));
        let reports = Running::spawn(command, |line| Some(line.trim().to_owned()))
            .wait()
            .expect_success();
        assert_eq!(reports, ["done"]);
    }

    /// Once the runtime the bus was connected on is dropped, every call on
    /// the bus and its handles (blocking or async, on another executor)
    /// fails at once with `Closed`, and dropping the handles, also a
    /// delivery unsettled and a subscription with a pull in flight, does
    /// not panic.
    #[test]
    fn after_the_callers_runtime_is_dropped_every_call_fails_closed_without_a_panic() {
        let Some(backend) = TestBackend::nats() else {
            return;
        };
        let url = backend.nats_url().expect("a NATS backend");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (bus, jobs, workers, audit, deliveries, checkout, pricing) = runtime.block_on(async {
            let bus = Bus::connect_nats(&url, NatsOptions::default()).expect("connect");
            let jobs = bus.topic("jobs").expect("topic");
            let workers = jobs
                .group(
                    "workers",
                    group_options(Duration::from_secs(60), 5, Duration::ZERO),
                )
                .expect("group");
            let batch = [Record::new(b"a"), Record::new(b"b")];
            jobs.publish_batch_async(&batch).await.expect("publish");
            let deliveries = [
                workers.recv_async().await.expect("a delivery"),
                workers.recv_async().await.expect("a delivery"),
            ];
            let mut audit = jobs.subscribe("audit", StartAt::Latest).expect("subscribe");
            // A receive cut short: its pull (of nothing yet) stays in flight.
            assert!(poll_once(audit.recv_async()).is_pending());
            let checkout = bus.requester("checkout").expect("requester");
            let pricing = bus.responder("pricing").expect("responder");
            (bus, jobs, workers, audit, deliveries, checkout, pricing)
        });
        drop(runtime);
        let closed = |what: &str, result: logbus::Result<()>| match result {
            Err(Error::Closed) => {}
            other => panic!("{what}: {other:?}, expected Closed"),
        };
        within(Duration::from_secs(30), move || {
            let mut audit = audit;
            let [delivery, unsettled] = deliveries;
            closed("publish", jobs.publish(&Record::new(b"b")).map(drop));
            closed(
                "publish_async",
                futures::executor::block_on(jobs.publish_async(&Record::new(b"b"))).map(drop),
            );
            closed("recv", workers.recv(Duration::from_secs(5)).map(drop));
            closed(
                "recv_async",
                futures::executor::block_on(workers.recv_async()).map(drop),
            );
            closed("subscription recv", audit.recv(Duration::from_secs(5)).map(drop));
            closed("ack", delivery.ack());
            drop(unsettled);
            let ephemeral = jobs.subscribe_ephemeral(StartAt::Latest).map(drop);
            closed("ephemeral subscription", ephemeral);
            closed(
                "request",
                checkout
                    .request("pricing", &Record::new(b"sku"), Duration::from_secs(5))
                    .map(drop),
            );
            closed("responder recv", pricing.recv(Duration::from_secs(5)).map(drop));
            closed("stats", jobs.stats().map(drop));
            closed("topic", bus.topic("other").map(drop));
            drop((audit, workers, pricing, checkout, jobs));
            closed("close", bus.close());
        });
    }

    /// Inside a current-thread runtime the bus runs on a private runtime
    /// (a runtime of the caller's of that flavor is refused by
    /// `NatsOptions::runtime`), so blocking calls from its only thread
    /// work, and the bus outlives it; `private_runtime(true)` does the same
    /// inside a multi-thread runtime.
    #[test]
    fn inside_a_current_thread_runtime_or_when_asked_the_bus_runs_on_a_private_runtime_that_outlives_the_callers()
     {
        let Some(backend) = TestBackend::nats() else {
            return;
        };
        let url = backend.nats_url().expect("a NATS backend");
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (bus, jobs) = current.block_on(async {
            let refused = Bus::connect_nats(
                &url,
                NatsOptions::default().runtime(tokio::runtime::Handle::current()),
            );
            assert!(matches!(refused, Err(Error::InvalidArgument(_))), "{refused:?}");
            let bus = Bus::connect_nats(&url, NatsOptions::default()).expect("connect");
            assert!(threads_named(PRIVATE_THREAD) > 0);
            let jobs = bus.topic("jobs").expect("topic");
            let workers = jobs
                .group(
                    "workers",
                    group_options(Duration::from_secs(60), 5, Duration::ZERO),
                )
                .expect("group");
            assert_eq!(
                jobs.publish_async(&Record::new(b"a"))
                    .await
                    .expect("publish_async"),
                0
            );
            assert_eq!(
                jobs.publish(&Record::new(b"b")).expect("publish from the task"),
                1
            );
            let delivery = workers.recv_async().await.expect("recv_async");
            delivery.ack().expect("ack from the task");
            let delivery = workers
                .recv(Duration::from_secs(30))
                .expect("recv")
                .expect("a delivery");
            delivery.ack_async().await.expect("ack_async");
            (bus, jobs)
        });
        drop(current);
        assert_eq!(
            jobs.publish(&Record::new(b"c"))
                .expect("publish after the runtime"),
            2
        );
        bus.close().expect("close");

        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (bus, jobs) = multi.block_on(async {
            let bus = Bus::connect_nats(&url, NatsOptions::default().private_runtime(true)).expect("connect");
            let jobs = bus.topic("jobs").expect("topic");
            assert_eq!(
                jobs.publish_async(&Record::new(b"d"))
                    .await
                    .expect("publish_async"),
                3
            );
            (bus, jobs)
        });
        drop(multi);
        assert_eq!(
            jobs.publish(&Record::new(b"e"))
                .expect("publish after the runtime"),
            4
        );
        bus.close().expect("close");
    }
}
