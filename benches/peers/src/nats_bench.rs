//! `--nats` (feature `nats`): logbus on NATS JetStream against the raw
//! async-nats client doing the same JetStream operations on the same kind
//! of server, with the embedded bus for context (docs/PERFORMANCE.md, "The
//! NATS backend").
//!
//! Each case runs in its own child process (`--nats-case CASE IMPL DIR URL
//! --scale F`) against its own `nats-server` (JetStream, store in a fresh
//! temporary directory, free loopback port), started before the child and
//! killed after it; the embedded bus opens in the same fresh directory.
//! Implementations alternate within each repetition (their order rotates
//! from one repetition to the next), and every case checks what it
//! received. Options: `--reps N` (default 3), `--scale F`, `--dir PATH`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use logbus::{Bus, NatsOptions};

use crate::common::{Outcome, Res, Spec, Values, Verifier, Workload, json_str};
use crate::logbus_peer::{self, Receive};
use crate::nats_server::{Server, have_nats_server};
use crate::report::{human, median, micros, number};

/// Cases: publish N then receive+ack N one at a time, the same with
/// batches of [`BATCH`], and request-reply round trips.
const CASES: [&str; 3] = ["queue", "queue_batch", "request_reply"];

/// Implementations; the first is the baseline.
const IMPLS: [&str; 3] = ["raw", "nats", "embedded"];

/// Records per receive in `queue_batch`.
const BATCH: usize = 100;

/// What logbus names the topic `jobs` and its group `workers` on NATS
/// (docs/NATS.md, "Names"); the raw client uses the same stream.
const STREAM: &str = "LOGBUS_jobs";
const SUBJECT: &str = "logbus.jobs";
const CONSUMER: &str = "g_workers";

fn spec(case: &str, scale: f64) -> Res<Spec> {
    let (workload, n) = match case {
        "queue" | "queue_batch" => (Workload::Queue, 20_000.0),
        "request_reply" => (Workload::RequestReply, 2_000.0),
        other => return Err(format!("unknown case {other:?}").into()),
    };
    let n = ((n * scale) as u64).max(BATCH as u64) / BATCH as u64 * BATCH as u64;
    Ok(Spec {
        workload,
        n,
        size: 100,
        threads: 1,
    })
}

/// The child: runs one case with one implementation, prints its JSON line.
pub fn child(args: &[String]) -> Res<()> {
    let [case, imp, dir, url, rest @ ..] = args else {
        return Err("usage: --nats-case CASE IMPL DIR URL [--scale F]".into());
    };
    let scale = match rest {
        [flag, value] if flag == "--scale" => value.parse()?,
        _ => 1.0,
    };
    let spec = spec(case, scale)?;
    let values = Values::new(spec.size);
    let receive = match case.as_str() {
        "queue_batch" => Receive::Batch(BATCH),
        _ => Receive::Wait,
    };
    let outcome = match imp.as_str() {
        "raw" => {
            // The client's fastest setup here: everything on this thread,
            // no hand-off between threads (logbus blocks on a private
            // runtime with one worker thread instead).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = async_nats::connect(url.as_str()).await?;
                match spec.workload {
                    Workload::Queue => raw_queue(client, &spec, &values, receive).await,
                    _ => raw_request_reply(client, &spec, &values).await,
                }
            })?
        }
        "nats" | "embedded" => {
            let bus = match imp.as_str() {
                "nats" => Bus::connect_nats(url, NatsOptions::default())?,
                _ => logbus_peer::open_bus(Path::new(dir))?,
            };
            match spec.workload {
                Workload::Queue => logbus_peer::queue(bus, &spec, &values, receive)?,
                _ => logbus_peer::request_reply(bus, &spec, &values)?,
            }
        }
        other => return Err(format!("unknown implementation {other:?}").into()),
    };
    let head = format!(
        "{{\"workload\":{},\"peer\":{},\"n\":{},\"size\":{}",
        json_str(case),
        json_str(imp),
        spec.n,
        spec.size
    );
    println!("{}", crate::outcome_json(&head, spec.n, spec.size, outcome));
    Ok(())
}

/// The stream logbus creates for a topic (`src/nats/client.rs`): file
/// storage, one replica, limits retention, direct gets allowed.
fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into(), format!("{SUBJECT}.>")],
        storage: stream::StorageType::File,
        num_replicas: 1,
        allow_direct: true,
        ..Default::default()
    }
}

/// The queue case on the raw client: publish each value and wait for its
/// PubAck, then no-wait fetches of 1 (as `Group::recv` pulls) or
/// [`BATCH`] messages from a durable pull consumer with explicit acks, each
/// acked with `double_ack` (the server confirms, as `Delivery::ack` does).
async fn raw_queue(
    client: async_nats::Client,
    spec: &Spec,
    values: &Values,
    receive: Receive,
) -> Res<Outcome> {
    let js = jetstream::new(client);
    let stream = js.get_or_create_stream(stream_config()).await?;
    let consumer_config = pull::Config {
        durable_name: Some(CONSUMER.into()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    let consumer = stream.get_or_create_consumer(CONSUMER, consumer_config).await?;
    let started = Instant::now();
    let mut value = vec![0u8; spec.size];
    for i in 0..spec.n {
        values.fill(i, &mut value);
        let ack = js.publish(SUBJECT, value.clone().into()).await?.await?;
        if ack.sequence != i + 1 || ack.duplicate {
            return Err(format!("publish {i} stored as sequence {} ({ack:?})", ack.sequence).into());
        }
    }
    let enqueued = started.elapsed();
    let max = match receive {
        Receive::Batch(max) => max,
        Receive::Try | Receive::Wait => 1,
    };
    let mut verifier = Verifier::new(spec.size);
    while verifier.count() < spec.n {
        let mut messages = consumer.fetch().max_messages(max).messages().await?;
        let before = verifier.count();
        while let Some(message) = messages.next().await {
            let message = message?;
            verifier.see(&message.payload);
            message.double_ack().await?;
        }
        if verifier.count() == before {
            return Err(format!("the consumer ran dry after {before} messages").into());
        }
    }
    Outcome::queued(started, enqueued, &verifier, spec.n)
}

/// Core NATS request-reply on the raw client (no stream: the request and
/// the reply are not stored): an echo responder task on the same
/// connection, the requester timing each `Client::request`.
async fn raw_request_reply(client: async_nats::Client, spec: &Spec, values: &Values) -> Res<Outcome> {
    let mut requests = client.subscribe("echo").await?;
    client.flush().await?;
    let responder = client.clone();
    let served = tokio::spawn(async move {
        let mut served = 0u64;
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                responder.publish(reply, request.payload).await?;
                served += 1;
            }
        }
        Ok::<u64, async_nats::PublishError>(served)
    });
    let mut verifier = Verifier::new(spec.size);
    let mut latencies = Vec::with_capacity(spec.n as usize);
    let started = Instant::now();
    for i in 0..spec.n {
        let request = values.buffer(i);
        let began = Instant::now();
        let reply = client.request("echo", request.into()).await?;
        latencies.push(began.elapsed());
        verifier.see(&reply.payload);
    }
    let elapsed = started.elapsed();
    served.abort();
    let checked = verifier.check(spec.n, true)?;
    Ok(Outcome::with_latencies(elapsed, latencies, checked))
}

/// Runs one case in a child process, with its own nats-server unless the
/// implementation is the embedded bus; returns its JSON line.
fn run_case(case: &str, imp: &str, base: &Path, scale: f64) -> String {
    let failed = |why: String| {
        format!(
            "{{\"workload\":{},\"peer\":{},\"error\":{}}}",
            json_str(case),
            json_str(imp),
            json_str(&why)
        )
    };
    let dir = match tempfile::Builder::new().prefix("logbus-nats-").tempdir_in(base) {
        Ok(dir) => dir,
        Err(e) => return failed(format!("tempdir: {e}")),
    };
    crate::touch_memory();
    let server = (imp != "embedded").then(|| Server::start("logbus-bench", &dir.path().join("store"), None));
    let url = server.as_ref().map_or_else(|| "-".to_owned(), Server::url);
    let bus_dir = dir.path().join("bus");
    let scale = scale.to_string();
    let args: [&OsStr; 7] = [
        "--nats-case".as_ref(),
        case.as_ref(),
        imp.as_ref(),
        bus_dir.as_os_str(),
        url.as_ref(),
        "--scale".as_ref(),
        scale.as_ref(),
    ];
    crate::run_child(&args, failed)
    // The server is killed here (drop), before the directory is removed.
}

/// One repetition's JSON line of one case and implementation.
struct Line {
    rep: usize,
    case: &'static str,
    imp: &'static str,
    text: String,
}

/// A row's figure from a JSON line: records per second of a phase, or a
/// latency percentile in µs.
#[derive(Clone, Copy)]
enum Figure {
    Rate(&'static str),
    Micros(&'static str),
}

impl Figure {
    fn of(self, line: &str) -> Option<f64> {
        match self {
            Figure::Rate(phase) => Some(number(line, "n")? / number(line, &format!("{phase}_secs"))?),
            Figure::Micros(key) => number(line, key),
        }
    }

    fn show(self, value: f64) -> String {
        match self {
            Figure::Rate(_) => human(value),
            Figure::Micros(_) => micros(value),
        }
    }
}

const ROWS: [(&str, &str, Figure); 5] = [
    (
        "publish 100 B, one at a time, each waiting for its ack (records/s)",
        "queue",
        Figure::Rate("enqueue"),
    ),
    (
        "queue: receive + ack 100 B one at a time (records/s)",
        "queue",
        Figure::Rate("dequeue_ack"),
    ),
    (
        "queue: receive + ack 100 B in batches of 100 (records/s)",
        "queue_batch",
        Figure::Rate("dequeue_ack"),
    ),
    (
        "request-reply round trip 100 B, p50",
        "request_reply",
        Figure::Micros("p50_us"),
    ),
    (
        "request-reply round trip 100 B, p99",
        "request_reply",
        Figure::Micros("p99_us"),
    ),
];

/// Median (min-max) of one implementation's figure, and its per-repetition
/// values by repetition.
fn figures(lines: &[Line], case: &str, imp: &str, figure: Figure) -> Result<Vec<(usize, f64)>, String> {
    let mut out = Vec::new();
    for line in lines.iter().filter(|l| l.case == case && l.imp == imp) {
        if let Some(error) = crate::report::Case::parse(line.rep, &line.text).error {
            return Err(format!("failed ({})", error.chars().take(60).collect::<String>()));
        }
        out.extend(figure.of(&line.text).map(|v| (line.rep, v)));
    }
    Ok(out)
}

fn cell(values: &Result<Vec<(usize, f64)>, String>, figure: Figure) -> String {
    match values {
        Err(failed) => failed.clone(),
        Ok(values) if values.is_empty() => "-".into(),
        Ok(values) => {
            let mut all: Vec<f64> = values.iter().map(|&(_, v)| v).collect();
            let (low, high) = all
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let mid = median(&mut all);
            format!(
                "{} ({}-{})",
                figure.show(mid),
                figure.show(low),
                figure.show(high)
            )
        }
    }
}

/// Median over repetitions of `a / b` within the same repetition.
fn ratio(a: &Result<Vec<(usize, f64)>, String>, b: &Result<Vec<(usize, f64)>, String>) -> String {
    let (Ok(a), Ok(b)) = (a, b) else {
        return "-".into();
    };
    let mut ratios: Vec<f64> = a
        .iter()
        .filter_map(|&(rep, x)| b.iter().find(|&&(r, _)| r == rep).map(|&(_, y)| x / y))
        .collect();
    if ratios.is_empty() {
        return "-".into();
    }
    format!("**{:.2}x**", median(&mut ratios))
}

fn table(lines: &[Line], reps: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Median of {reps} (min-max); **bold**: median over repetitions of the ratio within the same repetition (for latencies, above 1 is slower).\n"
    );
    out.push_str("| case | raw async-nats | logbus on NATS | embedded logbus | logbus-NATS / raw | embedded / logbus-NATS |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (title, case, figure) in ROWS {
        let [raw, nats, embedded] = IMPLS.map(|imp| figures(lines, case, imp, figure));
        let _ = writeln!(
            out,
            "| {title} | {} | {} | {} | {} | {} |",
            cell(&raw, figure),
            cell(&nats, figure),
            cell(&embedded, figure),
            ratio(&nats, &raw),
            ratio(&embedded, &nats)
        );
    }
    out
}

/// The driver: `--nats [--reps N] [--scale F] [--dir PATH]`.
pub fn driver(mut args: impl Iterator<Item = String>) -> Res<()> {
    let mut reps = 3;
    let mut scale = 1.0;
    let mut base = std::env::var_os("LOGBUS_PEERS_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--reps" => reps = value.parse()?,
            "--scale" => scale = value.parse()?,
            "--dir" => base = value.into(),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if !have_nats_server() {
        println!("=== NATS bench SKIPPED: nats-server not on PATH (apt-get install -y nats-server) ===");
        return Ok(());
    }
    let version = std::process::Command::new("nats-server")
        .arg("--version")
        .output()?;
    let started = Instant::now();
    println!(
        "{{\"meta\":\"start\",\"reps\":{reps},\"scale\":{scale},\"server\":{},\"load\":{}}}",
        json_str(String::from_utf8_lossy(&version.stdout).trim()),
        crate::load_average()
    );
    let mut lines = Vec::new();
    for rep in 0..reps {
        for case in CASES {
            for k in 0..IMPLS.len() {
                let imp = IMPLS[(k + rep) % IMPLS.len()];
                let text = run_case(case, imp, &base, scale);
                println!("{{\"rep\":{rep},{}", &text[1..]);
                lines.push(Line { rep, case, imp, text });
            }
        }
        println!(
            "{{\"meta\":\"rep_done\",\"rep\":{rep},\"load\":{}}}",
            crate::load_average()
        );
    }
    println!("\n{}", table(&lines, reps));
    println!(
        "{reps} repetitions in {:.0} s; load average at the end {}.",
        started.elapsed().as_secs_f64(),
        crate::load_average()
    );
    Ok(())
}
