//! The peer comparison: logbus against naive frames (with and without a
//! CRC), commitlog, SQLite, redb, fjall and yaque on the workloads of
//! docs/PERFORMANCE.md.
//!
//! `cargo run --release -p logbus-peers` runs every
//! case three times and prints one JSON line per case, then markdown tables
//! of medians (min-max) with ratios to the naive baseline of the same
//! repetition (naive frames with a CRC). Each case runs in its own child process (this binary with
//! `--case WORKLOAD PEER DIR`) on a fresh directory, verifies what it reads
//! back, and prints one JSON line. Options: `--reps N`, `--scale F` (message
//! counts times F), `--peers a,b`, `--workloads a,b`, `--dir PATH` (where
//! case directories go; default `$LOGBUS_PEERS_DIR` or the temp dir),
//! `--report FILE` (print the tables for the JSON lines of an earlier run).
//! `--peers` also takes the peers that split a gap into its parts,
//! `naive-crc36`, `naive-crc20`, `naive-batches`, `logbus-1seg` and
//! `naive-rounds`, which a plain run leaves out.

mod commitlog_peer;
mod common;
mod fjall_peer;
mod logbus_peer;
mod naive;
#[cfg(feature = "nats")]
mod nats_bench;
/// The tests' nats-server helper, shared as it is.
#[cfg(feature = "nats")]
#[path = "../../../tests/common/nats_server.rs"]
mod nats_server;
mod redb_peer;
mod report;
mod sqlite_peer;
mod yaque_peer;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::{Outcome, Res, Spec, WORKLOADS, Workload, json_str, memory_kib, quantile};
use naive::Frames;

/// The peers, in table order; the first is the baseline.
pub const PEERS: [&str; 8] = [
    "naive-crc",
    "naive",
    "logbus",
    "commitlog",
    "sqlite",
    "redb",
    "fjall",
    "yaque",
];

/// The baseline of every ratio.
pub const BASELINE: &str = PEERS[0];

/// Peers run only when `--peers` names them: they split a gap into its
/// parts (docs/PERFORMANCE.md: the batched append's in "The split, and the
/// two peers that make it" and "What a record costs in its frame"; the 16
/// durable producers' in "16 durable producers against ideal rounds").
pub const SPLITTING_PEERS: [&str; 5] = [
    "naive-crc36",
    "naive-crc20",
    "naive-batches",
    "logbus-1seg",
    "naive-rounds",
];

/// How long one case may take before it is killed and reported as failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Memory touched and freed before each case (see `touch_memory`).
const TOUCH_BYTES: usize = 300 << 20;

fn run_peer(peer: &str, spec: &Spec, dir: &Path) -> Res<Option<Outcome>> {
    match peer {
        "naive-crc" => naive::run(spec, dir, Frames::Crc),
        "naive" => naive::run(spec, dir, Frames::Bare),
        "naive-crc36" => naive::run(spec, dir, Frames::Sized(36)),
        "naive-crc20" => naive::run(spec, dir, Frames::Sized(20)),
        "naive-batches" => naive::run(spec, dir, Frames::Batches),
        "naive-rounds" => naive::run_in_rounds(spec, dir),
        "logbus" => logbus_peer::run(spec, dir),
        "logbus-1seg" => logbus_peer::run_one_segment(spec, dir),
        "commitlog" => commitlog_peer::run(spec, dir),
        "sqlite" => sqlite_peer::run(spec, dir),
        "redb" => redb_peer::run(spec, dir),
        "fjall" => fjall_peer::run(spec, dir),
        "yaque" => yaque_peer::run(spec, dir),
        other => Err(format!("unknown peer {other:?}").into()),
    }
}

/// The child: runs one case and prints its JSON line.
fn child(workload: &str, peer: &str, dir: &Path, scale: f64) -> Res<()> {
    let workload = Workload::parse(workload).ok_or_else(|| format!("unknown workload {workload:?}"))?;
    let spec = workload.spec(scale);
    let head = format!(
        "{{\"workload\":{},\"peer\":{},\"n\":{},\"size\":{},\"threads\":{}",
        json_str(workload.name()),
        json_str(peer),
        spec.n,
        spec.size,
        spec.threads
    );
    let Some(outcome) = run_peer(peer, &spec, dir)? else {
        println!("{head},\"unsupported\":true}}");
        return Ok(());
    };
    println!("{}", outcome_json(&head, spec.n, spec.size, outcome));
    Ok(())
}

/// A case's JSON line: `head` (the opening brace and the case's own keys),
/// then rate, count, checksum, phases, extras, latency percentiles and
/// memory.
fn outcome_json(head: &str, n: u64, size: usize, mut outcome: Outcome) -> String {
    let secs = outcome.elapsed.as_secs_f64();
    let mut line = format!(
        "{head},\"secs\":{secs:.6},\"rate\":{:.1},\"mb_s\":{:.2},\"count\":{},\"checksum\":\"{:016x}\"",
        n as f64 / secs,
        (n * size as u64) as f64 / secs / 1e6,
        outcome.checked.count,
        outcome.checked.checksum
    );
    for (name, took) in &outcome.phases {
        let took = took.as_secs_f64();
        line.push_str(&format!(
            ",\"{name}_secs\":{took:.6},\"{name}_rate\":{:.1}",
            n as f64 / took
        ));
    }
    for (name, value) in &outcome.extra {
        line.push_str(&format!(",\"{name}\":{value:.1}"));
    }
    if !outcome.latencies.is_empty() {
        outcome.latencies.sort_unstable();
        let sorted = &outcome.latencies;
        for (name, q) in [
            ("p50_us", 0.5),
            ("p99_us", 0.99),
            ("p999_us", 0.999),
            ("max_us", 1.0),
        ] {
            line.push_str(&format!(
                ",\"{name}\":{:.1}",
                quantile(sorted, q).as_secs_f64() * 1e6
            ));
        }
    }
    let (hwm, anon) = memory_kib();
    line.push_str(&format!(",\"hwm_kib\":{hwm},\"rss_anon_kib\":{anon}}}"));
    line
}

/// The VM hands idle memory back to the host; faulting pages back in
/// during a timed run makes results bimodal. Touching and freeing a few
/// hundred MiB first makes the guest's free pages resident again.
fn touch_memory() {
    let mut memory = vec![0u8; TOUCH_BYTES];
    for i in (0..memory.len()).step_by(4096) {
        memory[i] = i as u8;
    }
    std::hint::black_box(&memory);
}

/// Runs one case in a child process; returns its JSON line (or an error
/// line if it failed).
fn run_case(workload: Workload, peer: &str, base: &Path, scale: f64) -> String {
    let failed = |why: String| {
        format!(
            "{{\"workload\":{},\"peer\":{},\"error\":{}}}",
            json_str(workload.name()),
            json_str(peer),
            json_str(&why)
        )
    };
    let dir = match tempfile::Builder::new().prefix("logbus-peers-").tempdir_in(base) {
        Ok(dir) => dir,
        Err(e) => return failed(format!("tempdir: {e}")),
    };
    touch_memory();
    let scale = scale.to_string();
    let args: [&OsStr; 6] = [
        "--case".as_ref(),
        workload.name().as_ref(),
        peer.as_ref(),
        dir.path().as_os_str(),
        "--scale".as_ref(),
        scale.as_ref(),
    ];
    run_child(&args, failed)
}

/// Runs this binary with `args` as a child process (killed after
/// [`CASE_TIMEOUT`]); returns the last JSON line it printed, or
/// `failed(why)` if it failed.
fn run_child(args: &[&OsStr], failed: impl Fn(String) -> String) -> String {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return failed(format!("current_exe: {e}")),
    };
    let spawned = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return failed(format!("spawn: {e}")),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let err = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + CASE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        None => failed(format!("timed out after {CASE_TIMEOUT:?}")),
        Some(status) if !status.success() => failed(format!("{status}: {}", err.join(" | "))),
        Some(_) => out
            .into_iter()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| failed("no JSON line".into())),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

struct Args {
    reps: usize,
    scale: f64,
    peers: Vec<String>,
    workloads: Vec<Workload>,
    dir: PathBuf,
    /// Print the tables of an earlier run's JSON lines instead of running.
    report: Option<PathBuf>,
}

fn list<T>(value: &str, parse: impl Fn(&str) -> Option<T>) -> Res<Vec<T>> {
    value
        .split(',')
        .map(|v| parse(v).ok_or_else(|| format!("unknown {v:?}").into()))
        .collect()
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Res<Args> {
    let mut parsed = Args {
        reps: 3,
        scale: 1.0,
        peers: PEERS.iter().map(|p| p.to_string()).collect(),
        workloads: WORKLOADS.to_vec(),
        dir: std::env::var_os("LOGBUS_PEERS_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
        report: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--reps" => parsed.reps = value.parse()?,
            "--scale" => parsed.scale = value.parse()?,
            "--peers" => {
                let known = |p: &str| PEERS.contains(&p) || SPLITTING_PEERS.contains(&p);
                parsed.peers = list(&value, |p| known(p).then(|| p.to_string()))?
            }
            "--workloads" => parsed.workloads = list(&value, Workload::parse)?,
            "--dir" => parsed.dir = value.into(),
            "--report" => parsed.report = Some(value.into()),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if !parsed.peers.iter().any(|p| p == BASELINE) {
        parsed.peers.insert(0, BASELINE.into());
    }
    Ok(parsed)
}

/// Prints the tables for the JSON lines saved from an earlier run.
fn report_file(path: &Path, args: &Args) -> Res<()> {
    let text = std::fs::read_to_string(path)?;
    let results: Vec<report::Case> = text
        .lines()
        .filter_map(|line| {
            let rep = line.strip_prefix("{\"rep\":")?;
            let rep = rep[..rep.find(',')?].parse().ok()?;
            Some(report::Case::parse(rep, line))
        })
        .collect();
    let reps = results.iter().map(|c| c.rep + 1).max().unwrap_or(0);
    print!("{}", report::tables(&results, &args.peers, &args.workloads, reps));
    Ok(())
}

fn driver(args: Args) -> Res<()> {
    if let Some(path) = &args.report {
        return report_file(path, &args);
    }
    let started = Instant::now();
    let mut results = Vec::new();
    println!(
        "{{\"meta\":\"start\",\"reps\":{},\"scale\":{},\"dir\":{},\"load\":{}}}",
        args.reps,
        args.scale,
        json_str(&args.dir.display().to_string()),
        load_average()
    );
    for rep in 0..args.reps {
        for &workload in &args.workloads {
            for peer in &args.peers {
                if workload.logbus_only() && peer != "logbus" {
                    continue;
                }
                let line = run_case(workload, peer, &args.dir, args.scale);
                let line = format!("{{\"rep\":{rep},{}", &line[1..]);
                println!("{line}");
                results.push(report::Case::parse(rep, &line));
            }
        }
        println!(
            "{{\"meta\":\"rep_done\",\"rep\":{rep},\"load\":{}}}",
            load_average()
        );
    }
    let elapsed = started.elapsed();
    println!();
    print!(
        "{}",
        report::tables(&results, &args.peers, &args.workloads, args.reps)
    );
    println!(
        "\n{} repetitions in {:.0} s; load average at the end {}.",
        args.reps,
        elapsed.as_secs_f64(),
        load_average()
    );
    Ok(())
}

/// `--nats` and `--nats-case` (docs/PERFORMANCE.md, "The NATS backend").
#[cfg(feature = "nats")]
fn nats(case: bool, args: Vec<String>) -> Res<()> {
    match case {
        true => nats_bench::child(&args),
        false => nats_bench::driver(args.into_iter()),
    }
}

#[cfg(not(feature = "nats"))]
fn nats(_: bool, _: Vec<String>) -> Res<()> {
    Err("--nats needs the NATS client: build with --features nats".into())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let mode = args.peek().cloned();
    let result = if matches!(mode.as_deref(), Some("--nats" | "--nats-case")) {
        let args: Vec<String> = args.skip(1).collect();
        nats(mode.as_deref() == Some("--nats-case"), args)
    } else if mode.as_deref() == Some("--crash-writer") {
        let rest: Vec<String> = args.skip(1).collect();
        match rest.as_slice() {
            [dir, tail] => tail
                .parse()
                .map_err(Into::into)
                .and_then(|tail| logbus_peer::crash_writer(Path::new(dir), tail)),
            _ => Err("usage: --crash-writer DIR RECORDS".into()),
        }
    } else if mode.as_deref() == Some("--echo") {
        let rest: Vec<String> = args.skip(1).collect();
        match rest.as_slice() {
            [dir, n] => n.parse().map_err(Into::into).and_then(|n| {
                let bus = logbus_peer::open_bus(Path::new(dir))?;
                logbus_peer::echo(&bus, n)
            }),
            _ => Err("usage: --echo DIR N".into()),
        }
    } else if mode.as_deref() == Some("--publish-joined") {
        let rest: Vec<String> = args.skip(1).collect();
        match rest.as_slice() {
            [dir, n, size] => match (n.parse(), size.parse()) {
                (Ok(n), Ok(size)) => logbus_peer::publish_joined(Path::new(dir), n, size),
                _ => Err("N and SIZE are numbers".into()),
            },
            _ => Err("usage: --publish-joined DIR N SIZE".into()),
        }
    } else if mode.as_deref() == Some("--case") {
        let rest: Vec<String> = args.skip(1).collect();
        match rest.as_slice() {
            [workload, peer, dir, rest @ ..] => {
                let scale = match rest {
                    [flag, value] if flag == "--scale" => value.parse().unwrap_or(1.0),
                    _ => 1.0,
                };
                child(workload, peer, Path::new(dir), scale)
            }
            _ => Err("usage: --case WORKLOAD PEER DIR [--scale F]".into()),
        }
    } else {
        parse_args(args).and_then(driver)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
