//! `logbus-dump`: the offline inspector of logbus files.
//!
//! It takes a segment file, an index file, a log (topic) directory or a bus
//! directory; it never takes the lock and never writes (the recovery it
//! reports is a dry run of the real recovery code on an in-memory overlay),
//! so it works while the owner runs and on a copy from another machine. It
//! decodes with the library's own decoders and, on damage, reports every
//! problem and keeps decoding where the framing allows.
//!
//! Exit codes: 0 nothing wrong, 1 damage found, 2 could not read.

mod out;

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use logbus::format::{INDEX_HEADER_LEN, IndexKind, decode_index_header};
use logbus::inspect::{self, FrameInfo, Problem, SegmentWalk};
use logbus::{
    CorrelationId, HEADER_CORRELATION_ID, HEADER_FAILURE, HEADER_LAST_REASON, HEADER_REPLIER,
    HEADER_REPLY_ERROR, HEADER_REPLY_TO, HEADER_SOURCE_GROUP, HEADER_SOURCE_OFFSET, HEADER_SOURCE_TOPIC,
    Position, StoredRecord,
};
use out::{Out, Preview, Value};

const EXAMPLES: &str = "Examples:
  logbus-dump data/bus                          topics, consumers, dead letters, pending requests
  logbus-dump data/bus/topics/orders --verify   check every CRC, offset and index; dry-run recovery
  logbus-dump 00000000000000000000.log --records --from 100 --limit 10 --value hex
  logbus-dump data/bus/topics/orders --records --json | jq .value

Exit codes: 0 nothing wrong, 1 damage found, 2 could not read.";

/// Inspect logbus files without changing them.
#[derive(Parser, Debug)]
#[command(name = "logbus-dump", version, about = "Inspect logbus files without changing them.", after_help = EXAMPLES)]
struct Args {
    /// A segment (.log), an index (.idx or .tix), a log directory or a bus directory.
    path: PathBuf,
    /// Print every record (offset, position, timestamp, key, headers, value).
    #[arg(long)]
    records: bool,
    /// How to show values and header values.
    #[arg(long, value_enum, default_value = "utf8")]
    value: Preview,
    /// Show at most this many bytes of each value.
    #[arg(long, default_value_t = 64)]
    max_bytes: usize,
    /// First offset to print with --records.
    #[arg(long)]
    from: Option<u64>,
    /// Print at most this many records (per log).
    #[arg(long)]
    limit: Option<u64>,
    /// Deep check: every CRC, dense offsets, index entries at record starts,
    /// time index order, and what recovery would truncate (a dry run).
    #[arg(long)]
    verify: bool,
    /// One JSON object per line (stable field names, see docs/DUMP.md).
    #[arg(long)]
    json: bool,
}

struct Dump {
    args: Args,
    out: Out,
    damaged: bool,
}

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args = Args::parse();
    let out = Out {
        json: args.json,
        preview: args.value,
        max_bytes: args.max_bytes,
    };
    let mut dump = Dump {
        args,
        out,
        damaged: false,
    };
    match dump.run() {
        Ok(()) if dump.damaged => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logbus-dump: {}: {e}", dump.args.path.display());
            ExitCode::from(2)
        }
    }
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

fn read(path: &Path) -> Result<Bytes, Failure> {
    Ok(Bytes::from(std::fs::read(path)?))
}

impl Dump {
    fn run(&mut self) -> Result<(), Failure> {
        let path = self.args.path.clone();
        if path.is_dir() {
            return match path.join("topics").is_dir() {
                true => self.bus(&path),
                false => self.log_dir(&path),
            };
        }
        match extension(&path) {
            Some("log") => self.segment(&path, &mut self.args.limit.clone()),
            Some("idx") => self.index(&path, IndexKind::Offset),
            Some("tix") => self.index(&path, IndexKind::Time),
            _ => Err(format!(
                "not a segment (.log), index (.idx, .tix) or directory: {}",
                path.display()
            )
            .into()),
        }
    }

    fn problem(&mut self, file: &Path, problem: &Problem) {
        self.damaged = true;
        self.out.item(
            "problem",
            &[
                ("file", Value::Str(&file.display().to_string())),
                ("position", Value::Num(problem.position.into())),
                ("kind", Value::Str(&problem.kind.to_string())),
                ("skipped", Value::Num(problem.skipped.into())),
            ],
        );
    }

    /// Segment files of a log directory, by base offset.
    fn segments(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|p| extension(p) == Some("log"))
            .collect();
        segments.sort();
        Ok(segments)
    }

    fn log_dir(&mut self, dir: &Path) -> Result<(), Failure> {
        let segments = Self::segments(dir)?;
        let progress = self.args.verify && segments.len() > 1 && std::io::stderr().is_terminal();
        let mut limit = self.args.limit;
        for (i, segment) in segments.iter().enumerate() {
            if progress {
                eprint!("\rverifying segment {}/{}", i + 1, segments.len());
            }
            self.segment(segment, &mut limit)?;
        }
        if progress {
            eprintln!();
        }
        if self.args.verify {
            self.dry_run(dir);
        }
        Ok(())
    }

    fn dry_run(&mut self, dir: &Path) {
        let file = dir.display().to_string();
        match inspect::dry_run_recovery(dir) {
            Ok(report) => {
                for cut in &report.truncations {
                    self.damaged = true;
                    self.out.item(
                        "recovery_truncation",
                        &[
                            ("file", Value::Str(&cut.file.display().to_string())),
                            ("position", Value::Num(cut.position.into())),
                            ("bytes_removed", Value::Num(cut.bytes_removed.into())),
                            ("reason", Value::Str(&cut.reason.to_string())),
                        ],
                    );
                }
                for removed in &report.removed_files {
                    self.damaged = true;
                    let removed = removed.display().to_string();
                    self.out
                        .item("recovery_removal", &[("file", Value::Str(&removed))]);
                }
                let rebuilt = report.rebuilt_indexes.len() as i128;
                self.out.item(
                    "recovery",
                    &[
                        ("dir", Value::Str(&file)),
                        ("clean_shutdown", Value::Bool(report.clean_shutdown)),
                        ("segments", Value::Num(report.segments as i128)),
                        ("scanned_bytes", Value::Num(report.scanned_bytes.into())),
                        ("truncations", Value::Num(report.truncations.len() as i128)),
                        ("rebuilt_indexes", Value::Num(rebuilt)),
                    ],
                );
            }
            Err(e) => {
                self.damaged = true;
                let error = e.to_string();
                self.out.item(
                    "recovery_error",
                    &[("dir", Value::Str(&file)), ("error", Value::Str(&error))],
                );
            }
        }
    }

    fn segment(&mut self, path: &Path, limit: &mut Option<u64>) -> Result<(), Failure> {
        let walk = inspect::walk_segment(read(path)?);
        let index_problems = if self.args.verify {
            self.index_problems(path, &walk)?
        } else {
            Vec::new()
        };
        self.segment_summary(path, &walk, index_problems.is_empty());
        if self.args.records {
            for frame in &walk.frames {
                if self.args.from.is_some_and(|from| frame.record.offset() < from) {
                    continue;
                }
                if limit.is_some_and(|l| l == 0) {
                    break;
                }
                *limit = limit.map(|l| l - 1);
                self.record_line(path, frame);
            }
        }
        if let Err(kind) = &walk.header {
            self.problem(
                path,
                &Problem {
                    position: 0,
                    kind: kind.clone(),
                    skipped: 0,
                },
            );
        }
        for problem in &walk.problems {
            self.problem(path, problem);
        }
        for (file, problem) in &index_problems {
            self.problem(file, problem);
        }
        Ok(())
    }

    fn segment_summary(&mut self, path: &Path, walk: &SegmentWalk, index_ok: bool) {
        let base = walk.header.as_ref().ok().map(|h| h.base_offset);
        let first = walk.frames.first().map(|f| f.record.offset());
        let last = walk.frames.last().map(|f| f.record.offset());
        let timestamps = walk.frames.iter().map(|f| f.record.timestamp());
        let (min_ts, max_ts) = (timestamps.clone().min(), timestamps.max());
        let entries = |ext: &str, kind: IndexKind| {
            std::fs::metadata(path.with_extension(ext))
                .map(|m| (m.len() as usize).saturating_sub(INDEX_HEADER_LEN) / kind.entry_len())
                .ok()
        };
        let ok = walk.header.is_ok() && walk.problems.is_empty() && index_ok;
        let num = |n: Option<u64>| n.map_or(Value::Null, |n| Value::Num(n.into()));
        let ts = |n: Option<i64>| n.map_or(Value::Null, |n| Value::Num(n.into()));
        let count = |n: Option<usize>| n.map_or(Value::Null, |n| Value::Num(n as i128));
        self.out.item(
            "segment",
            &[
                ("file", Value::Str(&path.display().to_string())),
                ("base_offset", num(base)),
                ("records", Value::Num(walk.frames.len() as i128)),
                ("first_offset", num(first)),
                ("last_offset", num(last)),
                ("min_timestamp", ts(min_ts)),
                ("max_timestamp", ts(max_ts)),
                ("bytes", Value::Num(walk.file_len.into())),
                ("unused_tail_bytes", Value::Num(walk.unused_tail.into())),
                ("index_entries", count(entries("idx", IndexKind::Offset))),
                ("time_index_entries", count(entries("tix", IndexKind::Time))),
                ("status", Value::Str(if ok { "ok" } else { "damaged" })),
            ],
        );
    }

    fn record_line(&self, path: &Path, frame: &FrameInfo) {
        self.record_item(
            "record",
            &path.display().to_string(),
            frame.position,
            &frame.record,
        );
    }

    fn record_item(&self, kind: &str, source: &str, position: u64, record: &StoredRecord) {
        self.out.item(
            kind,
            &[
                ("source", Value::Str(source)),
                ("offset", Value::Num(record.offset().into())),
                ("position", Value::Num(position.into())),
                ("timestamp", Value::Num(record.timestamp().into())),
                ("key", Value::Bytes(record.key())),
                ("headers", Value::Pairs(record.headers().collect())),
                ("value", Value::Bytes(record.value())),
            ],
        );
    }

    /// Checks the `.idx` and `.tix` beside a segment against its frames.
    fn index_problems(&self, segment: &Path, walk: &SegmentWalk) -> Result<Vec<(PathBuf, Problem)>, Failure> {
        let Ok(header) = &walk.header else {
            return Ok(Vec::new());
        };
        let mut problems = Vec::new();
        for (ext, kind) in [("idx", IndexKind::Offset), ("tix", IndexKind::Time)] {
            let path = segment.with_extension(ext);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let found = check_index(&bytes, kind, header.base_offset, &walk.frames);
            problems.extend(found.into_iter().map(|p| (path.clone(), p)));
        }
        Ok(problems)
    }

    fn index(&mut self, path: &Path, kind: IndexKind) -> Result<(), Failure> {
        let bytes = std::fs::read(path)?;
        let base = decode_index_header(kind, &bytes);
        let entries = used_entries(bytes.get(INDEX_HEADER_LEN..).unwrap_or(&[]), kind.entry_len());
        self.out.item(
            "index",
            &[
                ("file", Value::Str(&path.display().to_string())),
                (
                    "kind",
                    Value::Str(if kind == IndexKind::Offset {
                        "offset"
                    } else {
                        "time"
                    }),
                ),
                (
                    "base_offset",
                    base.as_ref().map_or(Value::Null, |b| Value::Num((*b).into())),
                ),
                ("entries", Value::Num((entries.len() / kind.entry_len()) as i128)),
            ],
        );
        if self.args.records {
            self.index_entries(kind, entries);
        }
        let segment = path.with_extension("log");
        let problems = match (&base, segment.exists()) {
            (Err(kind), _) => vec![Problem {
                position: 0,
                kind: kind.clone(),
                skipped: 0,
            }],
            (Ok(base), true) => {
                let walk = inspect::walk_segment(read(&segment)?);
                check_index(&bytes, kind, *base, &walk.frames)
            }
            (Ok(_), false) => Vec::new(),
        };
        for problem in &problems {
            self.problem(path, problem);
        }
        Ok(())
    }

    fn index_entries(&self, kind: IndexKind, entries: &[u8]) {
        for chunk in entries.chunks_exact(kind.entry_len()) {
            let fields: Vec<(&str, Value<'_>)> = match kind {
                IndexKind::Offset => logbus::format::OffsetEntry::decode(chunk).map_or(Vec::new(), |e| {
                    vec![
                        ("relative_offset", Value::Num(e.relative_offset.into())),
                        ("position", Value::Num(e.position.into())),
                    ]
                }),
                IndexKind::Time => logbus::format::TimeEntry::decode(chunk).map_or(Vec::new(), |e| {
                    vec![
                        ("timestamp", Value::Num(e.timestamp.into())),
                        ("relative_offset", Value::Num(e.relative_offset.into())),
                    ]
                }),
            };
            self.out.item("index_entry", &fields);
        }
    }

    fn bus(&mut self, dir: &Path) -> Result<(), Failure> {
        let topics_dir = dir.join("topics");
        let mut topics: Vec<String> = std::fs::read_dir(&topics_dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        topics.sort();
        let mut logs = BTreeMap::new();
        for name in &topics {
            match inspect::open_read_only(&topics_dir.join(name)) {
                Ok(log) => {
                    logs.insert(name.clone(), log);
                }
                Err(e) => {
                    self.damaged = true;
                    let error = e.to_string();
                    self.out.item(
                        "topic_error",
                        &[("topic", Value::Str(name)), ("error", Value::Str(&error))],
                    );
                }
            }
        }
        let records: BTreeMap<&String, Vec<StoredRecord>> = logs
            .iter()
            .map(|(name, log)| Ok((name, all_records(log)?)))
            .collect::<Result<_, Failure>>()?;
        let dead_counts = dead_letter_counts(&records);
        for (name, log) in &logs {
            self.topic_view(dir, name, log, &dead_counts)?;
        }
        for (name, records) in &records {
            if name.ends_with(".dlq") {
                self.dead_letters(name, records);
            }
            if name.ends_with(".inbox") {
                self.inbox(name, records);
            }
        }
        self.pending_requests(dir, &records)?;
        if self.args.verify {
            for name in &topics {
                self.log_dir(&topics_dir.join(name))?;
            }
        }
        Ok(())
    }

    fn topic_view(
        &mut self,
        bus: &Path,
        name: &str,
        log: &logbus::Log,
        dead_counts: &BTreeMap<(String, String), u64>,
    ) -> Result<(), Failure> {
        let end = log.end_offset();
        let report = log.recovery_report();
        self.out.item(
            "topic",
            &[
                ("topic", Value::Str(name)),
                ("start_offset", Value::Num(log.start_offset().into())),
                ("end_offset", Value::Num(end.into())),
                ("segments", Value::Num(report.segments as i128)),
                ("clean_shutdown", Value::Bool(report.clean_shutdown)),
                (
                    "recovery_truncations",
                    Value::Num(report.truncations.len() as i128),
                ),
            ],
        );
        let consumers = inspect::consumers(bus, name)?;
        for sub in &consumers.subscriptions {
            self.out.item(
                "subscription",
                &[
                    ("topic", Value::Str(name)),
                    ("name", Value::Str(&sub.name)),
                    ("committed", Value::Num(sub.committed.into())),
                    ("lag", Value::Num(end.saturating_sub(sub.committed).into())),
                ],
            );
        }
        for group in &consumers.groups {
            let s = &group.summary;
            let dead = dead_counts
                .get(&(name.to_owned(), group.name.clone()))
                .copied()
                .unwrap_or(0);
            self.out.item(
                "group",
                &[
                    ("topic", Value::Str(name)),
                    ("name", Value::Str(&group.name)),
                    ("low_watermark", Value::Num(s.low_watermark.into())),
                    ("lag", Value::Num(end.saturating_sub(s.low_watermark).into())),
                    ("next_offset", Value::Num(s.next_offset.into())),
                    ("in_flight", Value::Num(s.unsettled as i128)),
                    ("retried", Value::Num(s.retried as i128)),
                    ("dead_lettered", Value::Num(dead.into())),
                    ("dead_letter_intents", Value::Num(s.dead_letter_intents as i128)),
                ],
            );
        }
        Ok(())
    }

    fn limited<'a>(&self, records: &'a [StoredRecord]) -> impl Iterator<Item = &'a StoredRecord> {
        let from = self.args.from.unwrap_or(0);
        let limit = self.args.limit.unwrap_or(u64::MAX) as usize;
        records.iter().filter(move |r| r.offset() >= from).take(limit)
    }

    fn dead_letters(&self, dlq: &str, records: &[StoredRecord]) {
        for record in self.limited(records) {
            let header = |name| {
                record
                    .header(name)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let failures: Vec<(&str, &[u8])> =
                record.headers().filter(|(n, _)| *n == HEADER_FAILURE).collect();
            self.out.item(
                "dead_letter",
                &[
                    ("topic", Value::Str(dlq)),
                    ("offset", Value::Num(record.offset().into())),
                    (
                        "source_topic",
                        Value::Str(&header(HEADER_SOURCE_TOPIC).unwrap_or_default()),
                    ),
                    (
                        "source_group",
                        Value::Str(&header(HEADER_SOURCE_GROUP).unwrap_or_default()),
                    ),
                    (
                        "source_offset",
                        Value::Str(&header(HEADER_SOURCE_OFFSET).unwrap_or_default()),
                    ),
                    (
                        "attempts",
                        Value::Str(&header(logbus::HEADER_ATTEMPTS).unwrap_or_default()),
                    ),
                    (
                        "last_reason",
                        Value::Str(&header(HEADER_LAST_REASON).unwrap_or_default()),
                    ),
                    ("failures", Value::Pairs(failures)),
                    ("value", Value::Bytes(record.value())),
                ],
            );
        }
    }

    fn inbox(&self, inbox: &str, records: &[StoredRecord]) {
        self.out.item(
            "inbox",
            &[
                ("topic", Value::Str(inbox)),
                ("replies", Value::Num(records.len() as i128)),
            ],
        );
        for record in self.limited(records) {
            let id = correlation_id(record)
                .map(|id| id.to_string())
                .unwrap_or_default();
            let from = record
                .header(HEADER_REPLIER)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let error = record
                .header(HEADER_REPLY_ERROR)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            self.out.item(
                "reply",
                &[
                    ("topic", Value::Str(inbox)),
                    ("offset", Value::Num(record.offset().into())),
                    ("correlation_id", Value::Str(&id)),
                    ("from", Value::Str(&from.unwrap_or_default())),
                    ("error", error.as_deref().map_or(Value::Null, Value::Str)),
                ],
            );
        }
    }

    /// Requests (records with `reply-to` and `correlation-id`) still
    /// awaiting the reply of one of the groups serving their topic (the
    /// topic itself when it has none): a scatter is pending per recipient.
    fn pending_requests(
        &self,
        bus: &Path,
        records: &BTreeMap<&String, Vec<StoredRecord>>,
    ) -> Result<(), Failure> {
        let replied: HashSet<(&str, CorrelationId, String)> = records
            .iter()
            .filter(|(name, _)| name.ends_with(".inbox"))
            .flat_map(|(name, rs)| {
                rs.iter().filter_map(|r| {
                    let from = String::from_utf8_lossy(r.header(HEADER_REPLIER)?).into_owned();
                    Some((name.as_str(), correlation_id(r)?, from))
                })
            })
            .collect();
        for (topic, rs) in records.iter().filter(|(name, _)| !name.ends_with(".inbox")) {
            let mut repliers: Vec<String> = inspect::consumers(bus, topic)?
                .groups
                .into_iter()
                .map(|g| g.name)
                .collect();
            if repliers.is_empty() {
                repliers.push((*topic).clone());
            }
            for record in rs {
                let (Some(id), Some(reply_to)) = (correlation_id(record), record.header(HEADER_REPLY_TO))
                else {
                    continue;
                };
                let reply_to = String::from_utf8_lossy(reply_to).into_owned();
                for replier in repliers
                    .iter()
                    .filter(|g| !replied.contains(&(reply_to.as_str(), id, (*g).clone())))
                {
                    self.out.item(
                        "pending_request",
                        &[
                            ("topic", Value::Str(topic)),
                            ("offset", Value::Num(record.offset().into())),
                            ("correlation_id", Value::Str(&id.to_string())),
                            ("reply_to", Value::Str(&reply_to)),
                            ("awaiting", Value::Str(replier)),
                        ],
                    );
                }
            }
        }
        Ok(())
    }
}

fn correlation_id(record: &StoredRecord) -> Option<CorrelationId> {
    record
        .header(HEADER_CORRELATION_ID)
        .and_then(CorrelationId::from_header)
}

fn all_records(log: &logbus::Log) -> Result<Vec<StoredRecord>, Failure> {
    let mut cursor = log.cursor(Position::Earliest)?;
    let mut records = Vec::new();
    while let Some(record) = cursor.next()? {
        records.push(record);
    }
    Ok(records)
}

/// Dead letters per (source topic, source group).
fn dead_letter_counts(records: &BTreeMap<&String, Vec<StoredRecord>>) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for (_, rs) in records.iter().filter(|(name, _)| name.ends_with(".dlq")) {
        for record in rs {
            let header = |name| {
                record
                    .header(name)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            if let (Some(topic), Some(group)) = (header(HEADER_SOURCE_TOPIC), header(HEADER_SOURCE_GROUP)) {
                *counts.entry((topic, group)).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The entries of an index file that are in use: a preallocated active
/// index ends in zero-filled entries, which are not entries at all.
fn used_entries(entries: &[u8], entry_len: usize) -> &[u8] {
    let whole = entries.len() / entry_len * entry_len;
    let mut end = whole;
    while end >= entry_len && entries[end - entry_len..end].iter().all(|&b| b == 0) {
        end -= entry_len;
    }
    &entries[..end]
}

fn check_index(bytes: &[u8], kind: IndexKind, base: u64, frames: &[FrameInfo]) -> Vec<Problem> {
    if let Err(kind) = decode_index_header(kind, bytes) {
        return vec![Problem {
            position: 0,
            kind,
            skipped: 0,
        }];
    }
    let entries = used_entries(&bytes[INDEX_HEADER_LEN..], kind.entry_len());
    match kind {
        IndexKind::Offset => inspect::check_offset_index(entries, base, frames),
        IndexKind::Time => inspect::check_time_index(entries, base, frames),
    }
}
