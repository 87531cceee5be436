//! A tour of logbus on a temporary directory.
//!
//! Run with `cargo run --release --example tour`. It walks through the log
//! underneath everything, then the messaging patterns built on it:
//! publish-subscribe, queues (consumer groups), dead-letter queues,
//! request-reply and scatter-gather.
//!
//! Last, several processes on the one bus directory: two worker processes
//! (this example started again with `--worker`) join the bus, share a
//! queue with each other, answer requests, and one of them takes over the
//! directory when the tour's process closes its bus (docs/PROCESSES.md).
//!
//! With `--features nats -- --nats nats://127.0.0.1:4222` (several URLs
//! comma-separated, `--replicas 3` on a cluster) the same five patterns run
//! on NATS JetStream; the raw log has no NATS form and is skipped. Each run
//! there uses topics of its own (`tour-<time>.<name>`), so runs against one
//! server do not see each other's records.

use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::sync::Mutex;

use logbus::{
    Backoff, Bus, BusOptions, DeliveryOrder, Durability, Error, Gather, GroupOptions, Log, LogOptions,
    Position, Recipients, Record, RetryPolicy, StartAt, headers,
};

fn main() -> logbus::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(dir) = option(&args, "--worker")? {
        return worker(std::path::Path::new(&dir));
    }
    let tour = match option(&args, "--nats")? {
        Some(urls) => Tour::nats(&urls, option(&args, "--replicas")?)?,
        None => Tour::embedded()?,
    };
    tour.publish_subscribe()?;
    tour.idempotent_publish()?;
    tour.queues()?;
    tour.per_key_ordering()?;
    tour.scheduled()?;
    tour.dead_letters()?;
    tour.request_reply()?;
    tour.scatter_gather()?;
    tour.admin()?;
    for topic in tour.bus.stats()? {
        let consumers: Vec<String> = topic
            .consumers
            .iter()
            .map(|c| format!("{:?} at {} (lag {})", c.id, c.committed, c.lag))
            .collect();
        println!(
            "stats {}: end {} consumers [{}]",
            topic.name,
            topic.end_offset,
            consumers.join(", ")
        );
    }
    if let Some(dir) = &tour.bus_dir {
        println!();
        several_processes(&tour.bus, dir)?;
    }
    tour.bus.close()
}

/// The value after `flag` in `args`, if the flag is there.
fn option(args: &[String], flag: &str) -> logbus::Result<Option<String>> {
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) => match args.get(i + 1) {
            Some(value) => Ok(Some(value.clone())),
            None => Err(Error::InvalidArgument(format!("{flag} needs a value"))),
        },
    }
}

/// The bus the patterns run on, and the prefix of this run's names.
struct Tour {
    bus: Bus,
    run: String,
    /// The bus directory of an embedded tour.
    bus_dir: Option<std::path::PathBuf>,
    /// Keeps the temporary directory of an embedded tour.
    _dir: Option<tempfile::TempDir>,
}

impl Tour {
    /// The log, then a bus, in a temporary directory (or LOGBUS_TOUR_DIR, to
    /// keep the files for `logbus-dump`, e.g. `cargo run -p logbus-dump --
    /// $LOGBUS_TOUR_DIR/bus`).
    fn embedded() -> logbus::Result<Tour> {
        let temporary = tempfile::tempdir()?;
        let dir =
            std::env::var_os("LOGBUS_TOUR_DIR").map_or_else(|| temporary.path().to_path_buf(), Into::into);
        println!("logbus tour in {}\n", dir.display());
        the_log(&dir.join("log"))?;
        Ok(Tour {
            bus: Bus::open(dir.join("bus"), BusOptions::default())?,
            run: String::new(),
            bus_dir: Some(dir.join("bus")),
            _dir: Some(temporary),
        })
    }

    #[cfg(feature = "nats")]
    fn nats(urls: &str, replicas: Option<String>) -> logbus::Result<Tour> {
        let replicas = match replicas {
            Some(n) => n
                .parse()
                .map_err(|_| Error::InvalidArgument(format!("--replicas {n:?} is not a number")))?,
            None => 1,
        };
        let options = logbus::NatsOptions::default().replicas(replicas);
        let bus = Bus::connect_nats(urls, options)?;
        let run = format!("tour-{}.", logbus::CorrelationId::new().as_u128() >> 80);
        println!("logbus tour on NATS JetStream at {urls} ({replicas} replicas), topics {run}*\n");
        Ok(Tour {
            bus,
            run,
            bus_dir: None,
            _dir: None,
        })
    }

    #[cfg(not(feature = "nats"))]
    fn nats(_urls: &str, _replicas: Option<String>) -> logbus::Result<Tour> {
        Err(Error::InvalidArgument(
            "--nats needs the nats feature: cargo run --example tour --features nats -- --nats <url>".into(),
        ))
    }

    /// This run's name for `name`.
    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.run)
    }
}

fn the_log(dir: &std::path::Path) -> logbus::Result<()> {
    println!("== the log");
    let options = LogOptions::default()
        .durability(Durability::Always)
        .segment_bytes(1 << 20);
    let log = Log::open(dir, options.clone())?;
    let offset = log.append(&Record::new(b"hello, log").key(b"greeting").header("lang", b"en"))?;
    let values: Vec<String> = (0..1000).map(|i| format!("event {i}")).collect();
    let records: Vec<Record> = values.iter().map(|v| Record::new(v.as_bytes())).collect();
    let started = Instant::now();
    let range = log.append_batch(&records)?;
    println!(
        "durable append at {offset}; batch of 1000 -> {range:?} in {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let log = &log;
            scope.spawn(move || {
                for i in 0..50 {
                    log.append(&Record::new(format!("thread {t} msg {i}").as_bytes()))
                        .expect("append");
                }
            });
        }
    });
    let syncs = log.sync_stats();
    println!(
        "4 threads x 50 durable appends in {:?} sharing {} fsyncs",
        started.elapsed(),
        syncs.syncs
    );

    let record = log.read(offset)?.expect("just appended");
    println!(
        "read {}: {:?}",
        record.offset(),
        String::from_utf8_lossy(record.value())
    );
    let mut tail = log.cursor(Position::Latest)?;
    let writer = log.clone();
    std::thread::spawn(move || writer.append(&Record::new(b"late news")));
    let news = tail
        .next_timeout(Duration::from_secs(5))?
        .expect("woken by the append");
    println!(
        "a tailing cursor woke with {:?}",
        String::from_utf8_lossy(news.value())
    );

    log.close()?;
    let log = Log::open(dir, options)?;
    let report = log.recovery_report();
    println!(
        "reopened: clean={} scanned {} bytes, end offset {}\n",
        report.clean_shutdown,
        report.scanned_bytes,
        log.end_offset()
    );
    log.close()
}

impl Tour {
    fn publish_subscribe(&self) -> logbus::Result<()> {
        println!("== publish-subscribe");
        let prices = self.bus.topic(&self.name("prices"))?;
        let mut audit = prices.subscribe("audit", StartAt::Earliest)?;
        let mut dashboard = prices.subscribe_ephemeral(StartAt::Latest)?;
        for (symbol, price) in [("ACME", "10.5"), ("INIT", "3.2"), ("ACME", "10.7")] {
            prices.publish(&Record::new(price).key(symbol))?;
        }
        for (name, sub) in [("audit", &mut audit), ("dashboard", &mut dashboard)] {
            let mut got = Vec::new();
            while let Some(record) = sub.try_recv()? {
                got.push(format!(
                    "{}={}",
                    String::from_utf8_lossy(record.key()),
                    String::from_utf8_lossy(record.value())
                ));
            }
            println!("{name} saw every record: {}", got.join(" "));
        }
        audit.commit()?;
        println!("audit committed {} (lag {})\n", audit.committed(), audit.lag());
        Ok(())
    }

    /// A publisher that retries with the record's id stores it once.
    fn idempotent_publish(&self) -> logbus::Result<()> {
        println!("== idempotent publish");
        let payments = self.bus.topic(&self.name("payments"))?;
        let payment = Record::new("42.00 EUR").id("payment-7");
        let first = payments.publish(&payment)?;
        // The acknowledgement was lost (a timeout, a crash): publish again.
        let retried = payments.publish(&payment)?;
        println!(
            "payment-7 published twice: offsets {first} and {retried}, {} record stored\n",
            payments.end_offset() - payments.start_offset()
        );
        Ok(())
    }

    fn queues(&self) -> logbus::Result<()> {
        println!("== queues (consumer groups)");
        let jobs = self.bus.topic(&self.name("jobs"))?;
        let bodies: Vec<String> = (0..20).map(|i| format!("job {i}")).collect();
        jobs.publish_batch(
            &bodies
                .iter()
                .map(|b| Record::new(b.as_bytes()))
                .collect::<Vec<_>>(),
        )?;
        let workers = jobs.group("workers", GroupOptions::default())?;
        let done: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let workers = workers.clone();
                    scope.spawn(move || {
                        let mut handled = 0;
                        while let Some(delivery) = workers.recv(Duration::from_millis(50)).expect("recv") {
                            delivery.ack().expect("ack");
                            handled += 1;
                        }
                        handled
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("worker")).collect()
        });
        println!("3 competing workers handled {done:?} jobs: each exactly once");
        println!("group low watermark {}\n", workers.stats()?.low_watermark);
        Ok(())
    }

    /// Records of one key (an account) go out one at a time, in order,
    /// while the accounts are worked on in parallel.
    fn per_key_ordering(&self) -> logbus::Result<()> {
        println!("== per-key ordering");
        let ledger = self.bus.topic(&self.name("ledger"))?;
        for step in 0..4 {
            for account in ["alice", "bob", "carol"] {
                let entry = format!("{account} step {step}");
                ledger.publish(&Record::new(entry.as_bytes()).key(account))?;
            }
        }
        let options = GroupOptions::default().ordering(DeliveryOrder::PerKey);
        let posters = match ledger.group("posters", options) {
            Ok(posters) => posters,
            Err(e @ Error::Unsupported { .. }) => {
                println!(
                    "{e}
"
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let posted: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());
        std::thread::scope(|scope| {
            for worker in 0..3 {
                let (posters, posted) = (&posters, &posted);
                scope.spawn(move || {
                    while let Some(delivery) = posters.recv(Duration::from_millis(50)).expect("recv") {
                        let account = String::from_utf8_lossy(delivery.record().key()).into_owned();
                        let entry = String::from_utf8_lossy(delivery.record().value()).into_owned();
                        let mut posted = posted.lock().expect("posted");
                        posted
                            .entry(account)
                            .or_default()
                            .push(format!("{entry} (worker {worker})"));
                        delivery.ack().expect("ack");
                    }
                });
            }
        });
        for (account, entries) in posted.into_inner().expect("posted") {
            println!("{account}: {}", entries.join(", "));
        }
        println!("each account's entries in order, one at a time; accounts in parallel\n");
        Ok(())
    }

    /// A record scheduled for later waits without holding up the others.
    fn scheduled(&self) -> logbus::Result<()> {
        println!("== scheduled delivery");
        let reminders = self.bus.topic(&self.name("reminders"))?;
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let in_300_ms = (since_epoch.unwrap_or_default().as_millis() + 300).to_string();
        reminders.publish(&Record::new("in 300 ms").header(headers::NOT_BEFORE, &in_300_ms))?;
        reminders.publish(&Record::new("now"))?;
        let senders = reminders.group("senders", GroupOptions::default())?;
        let started = Instant::now();
        for _ in 0..2 {
            let delivery = senders.recv(Duration::from_secs(5))?.ok_or(Error::Closed)?;
            println!(
                "after {:>3} ms: {:?}",
                started.elapsed().as_millis(),
                String::from_utf8_lossy(delivery.record().value())
            );
            delivery.ack()?;
        }
        println!();
        Ok(())
    }

    fn dead_letters(&self) -> logbus::Result<()> {
        println!("== dead-letter queue");
        let payments = self.bus.topic(&self.name("payments"))?;
        payments.publish(&Record::new(b"{not json").key(b"payment-17"))?;
        let retry = RetryPolicy::default()
            .max_attempts(3)
            .backoff(Backoff::Fixed(Duration::from_millis(10)));
        let group = payments.group("processor", GroupOptions::default().retry(retry))?;
        while let Some(delivery) = group.recv(Duration::from_millis(100))? {
            println!(
                "attempt {} of {:?} fails",
                delivery.attempt(),
                String::from_utf8_lossy(delivery.record().key())
            );
            delivery.nack("parse error: expected value")?;
        }
        let dlq = self.name("payments.dlq");
        let dead = self
            .bus
            .topic(&dlq)?
            .subscribe_ephemeral(StartAt::Earliest)?
            .recv(Duration::from_secs(5))?
            .expect("dead-lettered");
        let header = |name| String::from_utf8_lossy(dead.header(name).unwrap_or_default()).into_owned();
        println!(
            "dead letter: attempts={} reason={:?}",
            header(headers::ATTEMPTS),
            header(headers::LAST_REASON)
        );
        let moved = self.bus.redrive(&dlq, |_| true)?;
        let again = group.recv(Duration::from_secs(1))?.expect("redriven");
        println!(
            "redrove {moved}; it is back with attempt {} and redrive count 1",
            again.attempt()
        );
        again.ack()?;
        println!();
        Ok(())
    }

    fn request_reply(&self) -> logbus::Result<()> {
        println!("== request-reply");
        let pricing = self.name("pricing");
        let responder = self.bus.responder(&pricing)?;
        // Serves the two requests below.
        let server = std::thread::spawn(move || -> logbus::Result<()> {
            for _ in 0..2 {
                if let Some(request) = responder.recv(Duration::from_secs(5))? {
                    let quote = format!("quote for {}", String::from_utf8_lossy(request.record().value()));
                    request.reply(&Record::new(quote.as_bytes()))?;
                }
            }
            Ok(())
        });
        let client = self.bus.requester(&self.name("checkout"))?;
        let started = Instant::now();
        let reply = client.request(&pricing, &Record::new(b"basket-42"), Duration::from_secs(5))?;
        println!(
            "reply {:?} from {:?} in {:?}",
            String::from_utf8_lossy(reply.value()),
            reply.from(),
            started.elapsed()
        );
        // Fire now, collect later: the reply waits in the inbox, even across a restart.
        let id = client.send_request(&pricing, &Record::new(b"basket-43"))?;
        let later = client.reply_for(id, Duration::from_secs(5))?;
        println!(
            "collected {id} later: {:?}",
            String::from_utf8_lossy(later.value())
        );
        server.join().expect("server thread")?;
        println!();
        Ok(())
    }

    /// Seek a group back, purge a topic, list pending requests, delete
    /// what is no longer needed.
    fn admin(&self) -> logbus::Result<()> {
        println!("== admin operations");
        let audit = self.bus.topic(&self.name("audit"))?;
        for i in 0..5 {
            audit.publish(&Record::new(format!("event {i}").as_bytes()))?;
        }
        let replayers = audit.group("replayers", GroupOptions::default())?;
        while let Some(delivery) = replayers.try_recv()? {
            delivery.ack()?;
        }
        let back_to = replayers.seek(StartAt::Offset(3))?;
        let again: Vec<u64> = std::iter::from_fn(|| replayers.try_recv().ok().flatten())
            .map(|delivery| {
                let offset = delivery.record().offset();
                delivery.ack().map(|()| offset)
            })
            .collect::<logbus::Result<_>>()?;
        println!("group seeked back to {back_to}: delivered {again:?} again");
        let next = audit.purge()?;
        println!(
            "purged: records start at {next}, offsets go on from {}",
            audit.end_offset()
        );
        let client = self.bus.requester(&self.name("auditor"))?;
        let id = client.send_request(&self.name("nobody-serves-this"), &Record::new(b"ping"))?;
        let pending = client.pending()?;
        println!(
            "pending requests: {} (ours: {})",
            pending.len(),
            pending.contains(&id)
        );
        drop(replayers);
        println!(
            "group deleted: {}",
            self.bus.delete_group(&self.name("audit"), "replayers")?
        );
        println!();
        Ok(())
    }

    fn scatter_gather(&self) -> logbus::Result<()> {
        println!("== scatter-gather");
        let regions = ["eu", "us", "asia"];
        let service = |region: &str| self.name(&format!("stock-{region}"));
        let servers: Vec<_> = regions
            .iter()
            .map(|region| {
                let responder = self.bus.responder(&service(region))?;
                let stock = region.len() * 10;
                Ok(std::thread::spawn(move || -> logbus::Result<()> {
                    if let Some(request) = responder.recv(Duration::from_secs(5))? {
                        request.reply(&Record::new(stock.to_string().as_bytes()))?;
                    }
                    Ok(())
                }))
            })
            .collect::<logbus::Result<_>>()?;
        let client = self.bus.requester(&self.name("planner"))?;
        let mut services: Vec<String> = regions.iter().map(|r| service(r)).collect();
        services.push(service("mars")); // nobody serves this one
        let scatter = client.scatter(Recipients::Services(services), &Record::new(b"sku-7"))?;
        let rule = Gather::all(Duration::from_secs(2)).quorum(3);
        let (total, gathered) = scatter.gather_fold(rule, 0u64, |sum, reply| {
            sum + String::from_utf8_lossy(reply.value()).parse::<u64>().unwrap_or(0)
        })?;
        println!(
            "{} replies, stopped by {:?}, missing {:?}, total stock {total}",
            gathered.replies.len(),
            gathered.stopped,
            gathered.missing
        );
        for server in servers {
            server.join().expect("server thread")?;
        }
        println!();
        Ok(())
    }
}

/// Two worker processes join the tour's bus: they share the queue `jobs`
/// and answer `whoami`; then the tour's process closes its bus, one worker
/// takes the directory over, and the tour joins it to send the last jobs.
fn several_processes(bus: &Bus, dir: &std::path::Path) -> logbus::Result<()> {
    println!("== several processes on one directory");
    let exe = std::env::current_exe()?;
    let mut workers: Vec<std::process::Child> = (0..2)
        .map(|_| std::process::Command::new(&exe).arg("--worker").arg(dir).spawn())
        .collect::<std::io::Result<_>>()?;
    let jobs = bus.topic("jobs")?;
    let mut results = bus.topic("results")?.subscribe("tour", StartAt::Earliest)?;
    for job in 0..20 {
        jobs.publish(&Record::new(format!("job {job}").as_bytes()))?;
    }
    let by_pid = count_results(&mut results, 20)?;
    println!(
        "this process {} owns the bus; 20 jobs done by worker processes {by_pid:?}",
        std::process::id()
    );
    let reply = bus
        .requester("tour")?
        .request("whoami", &Record::new(b"?"), Duration::from_secs(5))?;
    println!(
        "whoami answered by process {}",
        String::from_utf8_lossy(reply.value())
    );

    bus.close()?;
    let joined = Bus::open(dir, BusOptions::default())?;
    let jobs = joined.topic("jobs")?;
    for job in 20..24 {
        jobs.publish(&Record::new(format!("job {job}").as_bytes()))?;
    }
    let mut results = joined.topic("results")?.subscribe("tour", StartAt::Earliest)?;
    let by_pid = count_results(&mut results, 4)?;
    println!(
        "closed; a worker took the directory over, and this process joined it: 4 more jobs done by {by_pid:?}"
    );
    // A worker that owns the bus closes it when it stops.
    for i in 0..workers.len() {
        publish_once(&jobs, &Record::new(b"stop").id(&format!("stop-{i}")))?;
    }
    for worker in &mut workers {
        worker.wait()?;
    }
    joined.close()?;
    println!();
    Ok(())
}

/// Publishes `record` (which has an id), again while the process that
/// owns the bus goes away during the call (`Unavailable`: the outcome is
/// unknown); the id makes the topic store it once.
fn publish_once(topic: &logbus::Topic, record: &Record<'_>) -> logbus::Result<u64> {
    loop {
        match topic.publish(record) {
            Err(Error::Unavailable { .. }) => continue,
            published => return published,
        }
    }
}

/// Receives `count` results (`done <job> by <pid>`); how many each pid did.
fn count_results(
    results: &mut logbus::Subscription,
    count: usize,
) -> logbus::Result<BTreeMap<String, usize>> {
    let mut by_pid = BTreeMap::new();
    for _ in 0..count {
        let record = results
            .recv(Duration::from_secs(10))?
            .ok_or_else(|| Error::InvalidArgument("a worker process did not answer".into()))?;
        let text = String::from_utf8_lossy(record.value()).into_owned();
        let pid = text.rsplit(' ').next().unwrap_or_default().to_owned();
        *by_pid.entry(pid).or_default() += 1;
    }
    results.commit()?;
    Ok(by_pid)
}

/// A worker process (`--worker <bus dir>`): joins the bus, takes jobs
/// from the queue `jobs` and publishes what it did to `results`, and
/// answers `whoami` with its pid, until it receives `stop`.
fn worker(dir: &std::path::Path) -> logbus::Result<()> {
    let bus = Bus::open(dir, BusOptions::default())?;
    let pid = std::process::id().to_string();
    let responder = bus.responder("whoami")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering = {
        let (stop, pid) = (stop.clone(), pid.clone());
        std::thread::spawn(move || -> logbus::Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(request) = responder.recv(Duration::from_millis(100))? {
                    // Lost with an owner that goes away: the requester
                    // times out, as for any lost reply.
                    let _ = request.reply(&Record::new(pid.as_bytes()));
                }
            }
            Ok(())
        })
    };
    let jobs = bus.queue("jobs")?;
    let results = bus.topic("results")?;
    loop {
        let Some(job) = jobs.recv(Duration::from_millis(100))? else {
            continue;
        };
        if job.record().value() == b"stop" {
            job.ack()?;
            break;
        }
        let job_name = String::from_utf8_lossy(job.record().value()).into_owned();
        let done = format!("done {job_name} by {pid}");
        publish_once(&results, &Record::new(done.as_bytes()).id(&job_name))?;
        // An ack cut short by an owner that goes away leaves the job to be
        // done again: its result has the same id, stored once.
        match job.ack() {
            Ok(()) | Err(Error::Unavailable { .. } | Error::LeaseExpired { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    answering.join().expect("the answering thread")?;
    bus.close()
}
