//! The markdown tables: medians with min-max over the repetitions, each
//! peer's ratio to the baseline (naive frames with a CRC) of the same
//! repetition, latencies, and the other figures some workloads report.

use std::fmt::Write as _;

use crate::BASELINE;
use crate::common::Workload;

/// One case's result, parsed back from its JSON line.
#[derive(Debug, Clone)]
pub struct Case {
    pub rep: usize,
    pub workload: String,
    pub peer: String,
    /// msg/s, or MB/s for the 1 KiB append.
    pub value: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub unsupported: bool,
    pub error: Option<String>,
    /// The JSON line, for the other figures.
    pub line: String,
}

/// The number after `"key":` in one of our own JSON lines.
pub fn number(line: &str, key: &str) -> Option<f64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let rest = &line[start..];
    let mut out = String::new();
    let mut escaped = false;
    for c in rest.chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return Some(out),
            (_, c) => {
                out.push(c);
                escaped = false;
            }
        }
    }
    Some(out)
}

impl Case {
    pub fn parse(rep: usize, line: &str) -> Case {
        let workload = string(line, "workload").unwrap_or_default();
        let megabytes = Workload::parse(&workload).is_some_and(Workload::in_megabytes);
        Case {
            rep,
            value: number(line, if megabytes { "mb_s" } else { "rate" }),
            p50_us: number(line, "p50_us"),
            p99_us: number(line, "p99_us"),
            p999_us: number(line, "p999_us"),
            unsupported: line.contains("\"unsupported\":true"),
            error: string(line, "error"),
            peer: string(line, "peer").unwrap_or_default(),
            workload,
            line: line.to_owned(),
        }
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// 1234567 -> "1.23M", 45678 -> "45.7k", 12.3 -> "12.3".
pub fn human(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let digits = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{suffix}")
}

pub fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn cases<'a>(all: &'a [Case], workload: &str, peer: &str) -> Vec<&'a Case> {
    all.iter()
        .filter(|c| c.workload == workload && c.peer == peer)
        .collect()
}

/// Whether `peer` has no result for the workload: it does not support it,
/// or the driver did not run it (a logbus-only workload).
fn unsupported(mine: &[&Case]) -> bool {
    mine.is_empty() || mine.iter().any(|c| c.unsupported)
}

/// Median (min-max) of `values`, in [`human`] form; `None` if empty.
fn spread(mut values: Vec<f64>) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let (low, high) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let mid = median(&mut values);
    Some(format!("{} ({}-{})", human(mid), human(low), human(high)))
}

fn cell(all: &[Case], workload: Workload, peer: &str) -> String {
    let mine = cases(all, workload.name(), peer);
    if unsupported(&mine) {
        return "none".into();
    }
    if let Some(error) = mine.iter().find_map(|c| c.error.as_ref()) {
        return format!("failed ({})", error.chars().take(60).collect::<String>());
    }
    let Some(mut text) = spread(mine.iter().filter_map(|c| c.value).collect()) else {
        return "-".into();
    };
    if peer != BASELINE {
        let baseline = cases(all, workload.name(), BASELINE);
        let mut ratios: Vec<f64> = mine
            .iter()
            .filter_map(|c| {
                let naive = baseline.iter().find(|b| b.rep == c.rep)?.value?;
                Some(c.value? / naive)
            })
            .collect();
        if !ratios.is_empty() {
            let _ = write!(text, " **{:.2}x**", median(&mut ratios));
        }
    }
    text
}

fn latency_cell(all: &[Case], workload: Workload, peer: &str) -> String {
    let mine = cases(all, workload.name(), peer);
    if unsupported(&mine) {
        return "none".into();
    }
    let pick = |f: fn(&Case) -> Option<f64>| {
        let mut values: Vec<f64> = mine.iter().filter_map(|c| f(c)).collect();
        (!values.is_empty()).then(|| micros(median(&mut values)))
    };
    match (pick(|c| c.p50_us), pick(|c| c.p99_us), pick(|c| c.p999_us)) {
        (Some(p50), Some(p99), Some(p999)) => format!("{p50} / {p99} / {p999}"),
        _ => "-".into(),
    }
}

/// The figure `key` of the workload's JSON lines for `peer`.
fn figure_cell(all: &[Case], workload: Workload, key: &str, peer: &str) -> String {
    let mine = cases(all, workload.name(), peer);
    if unsupported(&mine) {
        return "none".into();
    }
    spread(mine.iter().filter_map(|c| number(&c.line, key)).collect()).unwrap_or_else(|| "-".into())
}

fn display(peer: &str) -> &str {
    match peer {
        "naive-crc" => "naive frames + CRC",
        "naive" => "naive frames, no CRC",
        "naive-crc36" => "naive frames of logbus's size",
        "naive-crc20" => "naive frames, 20-byte header",
        "naive-batches" => "naive record batches",
        "logbus-1seg" => "logbus, no roll",
        "commitlog" => "commitlog 0.2",
        "sqlite" => "SQLite WAL",
        "redb" => "redb 4",
        "fjall" => "fjall 3",
        "yaque" => "yaque 0.6",
        other => other,
    }
}

fn header(out: &mut String, peers: &[String]) {
    out.push_str("| workload |");
    for peer in peers {
        let _ = write!(out, " {} |", display(peer));
    }
    out.push_str("\n| --- |");
    for _ in peers {
        out.push_str(" ---: |");
    }
    out.push('\n');
}

/// The throughput table and the durable latency table.
pub fn tables(all: &[Case], peers: &[String], workloads: &[Workload], reps: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Median of {reps} (min-max); **bold**: median over repetitions of the ratio to {} in the same repetition.\n",
        display(BASELINE)
    );
    header(&mut out, peers);
    for workload in workloads.iter().copied().filter(|w| w.has_rate()) {
        let _ = write!(out, "| {} |", workload.title());
        for peer in peers {
            let _ = write!(out, " {} |", cell(all, workload, peer));
        }
        out.push('\n');
    }
    let timed: Vec<Workload> = workloads.iter().copied().filter(|w| w.has_latency()).collect();
    if !timed.is_empty() {
        let _ = writeln!(
            out,
            "\nLatency per operation, p50 / p99 / p99.9 (median of {reps}):\n"
        );
        header(&mut out, peers);
        for workload in timed {
            let _ = write!(out, "| {} |", workload.title().trim_end_matches(" (msg/s)"));
            for peer in peers {
                let _ = write!(out, " {} |", latency_cell(all, workload, peer));
            }
            out.push('\n');
        }
    }
    let figures: Vec<(Workload, &str, &str)> = workloads
        .iter()
        .flat_map(|&w| w.figures().iter().map(move |&(key, label)| (w, key, label)))
        .collect();
    if !figures.is_empty() {
        let _ = writeln!(out, "\nOther figures (median of {reps}, min-max):\n");
        header(&mut out, peers);
        for (workload, key, label) in figures {
            let _ = write!(
                out,
                "| {}: {label} |",
                workload.title().trim_end_matches(" (msg/s)")
            );
            for peer in peers {
                let _ = write!(out, " {} |", figure_cell(all, workload, key, peer));
            }
            out.push('\n');
        }
    }
    out
}
