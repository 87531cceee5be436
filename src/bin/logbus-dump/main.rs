//! `logbus-dump`: the offline inspector of logbus files.
//!
//! It takes a segment file, an index file, a log (topic) directory or a bus
//! directory; it never takes the lock and never writes (the recovery it
//! reports is a dry run of the real recovery code on an in-memory overlay),
//! so it works while the owner runs and on a copy from another machine. It
//! decodes with the library's own decoders and, on damage, reports every
//! problem and keeps decoding where the framing allows.
//!
//! A directory is a log directory if it holds a segment file (named
//! `{base_offset:020}.log`, starting with the segment magic), and a bus
//! directory if it holds `topics/`; anything else is refused (exit 2).
//! In a log directory, the problems of files that recovery would delete or
//! rebuild without losing a record after an unclean shutdown (see
//! [`logbus::inspect::DryRun`]) are reported as leftovers, not as damage.
//!
//! Exit codes: 0 nothing wrong; 1 damage found; 2 could not read (no such
//! path, not a logbus file or directory, an I/O error); 3 only leftovers of
//! an unclean shutdown that recovery repairs without losing a record. A
//! reader that closes stdout early (`| head`) ends the dump quietly with
//! the code of what was found so far.

mod out;
mod time;

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use logbus::format::{INDEX_HEADER_LEN, IndexKind, decode_index_header};
use logbus::inspect::{self, ConsumersView, DryRun, FrameInfo, Problem, Repair, SegmentWalk};
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

Exit codes:
  0  nothing wrong
  1  damage found
  2  could not read: no such path, not a logbus file or directory, or an I/O error
  3  only leftovers of an unclean shutdown that recovery repairs without losing a record
     (such as 0-byte indexes or a 0-byte new segment after a power loss)";

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

/// What the dump found, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    Clean,
    Leftover,
    Damage,
}

impl Severity {
    fn exit_code(self) -> ExitCode {
        match self {
            Severity::Clean => ExitCode::SUCCESS,
            Severity::Damage => ExitCode::from(1),
            Severity::Leftover => ExitCode::from(3),
        }
    }
}

/// Exit code when the path could not be read.
const EXIT_UNREADABLE: u8 = 2;

struct Dump {
    args: Args,
    out: Out,
    found: Severity,
    /// The leftovers of the log directory being walked; `None` outside one.
    leftovers: Option<BTreeMap<PathBuf, Repair>>,
}

/// A problem of a file, as reported.
struct FileProblem {
    file: PathBuf,
    position: u64,
    kind: String,
    skipped: u64,
}

impl FileProblem {
    fn new(file: &Path, problem: &Problem) -> FileProblem {
        FileProblem {
            file: file.to_path_buf(),
            position: problem.position,
            kind: problem.kind.to_string(),
            skipped: problem.skipped,
        }
    }

    fn missing(file: &Path) -> FileProblem {
        FileProblem {
            file: file.to_path_buf(),
            position: 0,
            kind: "file missing".to_owned(),
            skipped: 0,
        }
    }
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
        found: Severity::Clean,
        leftovers: None,
    };
    match dump.run() {
        Ok(()) => dump.found.exit_code(),
        Err(e) if is_broken_pipe(e.as_ref()) => dump.found.exit_code(),
        Err(e) => {
            dump.out
                .error(&dump.args.path.display().to_string(), &e.to_string());
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// Whether `error` is stdout closing under the dump (`| head`): not a
/// failure, but a reason to stop.
fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

fn read(path: &Path) -> Result<Bytes, Failure> {
    Ok(Bytes::from(std::fs::read(path)?))
}

/// The segment files of a log directory, by base offset: the files named
/// `{base_offset:020}.log`. At least one must start with the segment magic;
/// otherwise `dir` is not a log directory, and the error says what it holds.
fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    let segments: Vec<PathBuf> = entries
        .iter()
        .filter(|p| inspect::segment_base(p).is_some())
        .cloned()
        .collect();
    for segment in &segments {
        if inspect::has_segment_magic(segment)? {
            return Ok(segments);
        }
    }
    Err(format!("not a logbus directory: {}", describe(&entries, &segments)).into())
}

/// What a directory that is not a logbus directory holds.
fn describe(entries: &[PathBuf], segments: &[PathBuf]) -> String {
    const SHOWN: usize = 10;
    if entries.is_empty() {
        return "it is empty".to_owned();
    }
    let names: Vec<String> = entries
        .iter()
        .take(SHOWN)
        .map(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            match (segments.contains(path), path.is_dir()) {
                (true, _) => format!("{name} (no segment magic)"),
                (false, true) => format!("{name}/"),
                (false, false) => name.into_owned(),
            }
        })
        .collect();
    let more = match entries.len().saturating_sub(SHOWN) {
        0 => String::new(),
        more => format!(" and {more} more"),
    };
    format!(
        "no segment file ({{base_offset:020}}.log starting with the segment magic) and no topics/ directory; found {}{more}",
        names.join(", ")
    )
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

    fn note(&mut self, severity: Severity) {
        self.found = self.found.max(severity);
    }

    /// How much a problem of `file` weighs: a leftover if recovery repairs
    /// the file without loss after an unclean shutdown, else damage.
    fn weigh(&self, file: &Path) -> (Severity, Option<Repair>) {
        match self.leftovers.as_ref().and_then(|l| l.get(file)) {
            Some(repair) => (Severity::Leftover, Some(*repair)),
            None => (Severity::Damage, None),
        }
    }

    /// Reports a problem as a `leftover` (with the repair recovery makes)
    /// or as a `problem`.
    fn problem(&mut self, problem: &FileProblem) -> Result<(), Failure> {
        let (severity, repair) = self.weigh(&problem.file);
        self.note(severity);
        let repair = repair.map(|r| r.to_string());
        let file = problem.file.display().to_string();
        let mut fields = vec![
            ("file", Value::Str(&file)),
            ("position", Value::Num(problem.position.into())),
            ("kind", Value::Str(&problem.kind)),
            ("skipped", Value::Num(problem.skipped.into())),
        ];
        let kind = match &repair {
            Some(repair) => {
                fields.push(("repair", Value::Str(repair)));
                "leftover"
            }
            None => "problem",
        };
        Ok(self.out.item(kind, &fields)?)
    }

    /// Reports a topic of a bus that could not be read, unless the failure
    /// is stdout closing, which ends the dump.
    fn topic_error(&mut self, topic: &str, error: Failure) -> Result<(), Failure> {
        if is_broken_pipe(error.as_ref()) {
            return Err(error);
        }
        self.note(Severity::Damage);
        let error = error.to_string();
        Ok(self.out.item(
            "topic_error",
            &[("topic", Value::Str(topic)), ("error", Value::Str(&error))],
        )?)
    }

    fn log_dir(&mut self, dir: &Path) -> Result<(), Failure> {
        let segments = segment_files(dir)?;
        let dry_run = inspect::dry_run_recovery(dir);
        self.leftovers = Some(
            dry_run
                .as_ref()
                .map(|run| run.leftovers.clone())
                .unwrap_or_default(),
        );
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
            self.dry_run(dir, dry_run)?;
        }
        self.leftovers = None;
        Ok(())
    }

    fn dry_run(&mut self, dir: &Path, dry_run: logbus::Result<DryRun>) -> Result<(), Failure> {
        let file = dir.display().to_string();
        let report = match dry_run {
            Ok(run) => run.report,
            Err(e) => {
                self.note(Severity::Damage);
                let error = e.to_string();
                return Ok(self.out.item(
                    "recovery_error",
                    &[("dir", Value::Str(&file)), ("error", Value::Str(&error))],
                )?);
            }
        };
        for cut in &report.truncations {
            self.note(Severity::Damage);
            self.out.item(
                "recovery_truncation",
                &[
                    ("file", Value::Str(&cut.file.display().to_string())),
                    ("position", Value::Num(cut.position.into())),
                    ("bytes_removed", Value::Num(cut.bytes_removed.into())),
                    ("reason", Value::Str(&cut.reason.to_string())),
                ],
            )?;
        }
        for removed in &report.removed_files {
            let (severity, _) = self.weigh(removed);
            self.note(severity);
            let leftover = Value::Bool(severity == Severity::Leftover);
            let removed = removed.display().to_string();
            self.out.item(
                "recovery_removal",
                &[("file", Value::Str(&removed)), ("leftover", leftover)],
            )?;
        }
        let rebuilt = report.rebuilt_indexes.len() as i128;
        Ok(self.out.item(
            "recovery",
            &[
                ("dir", Value::Str(&file)),
                ("clean_shutdown", Value::Bool(report.clean_shutdown)),
                ("segments", Value::Num(report.segments as i128)),
                ("scanned_bytes", Value::Num(report.scanned_bytes.into())),
                ("truncations", Value::Num(report.truncations.len() as i128)),
                ("rebuilt_indexes", Value::Num(rebuilt)),
            ],
        )?)
    }

    fn segment(&mut self, path: &Path, limit: &mut Option<u64>) -> Result<(), Failure> {
        let walk = inspect::walk_segment(read(path)?);
        let header = walk.header.as_ref().err().map(|kind| Problem {
            position: 0,
            kind: kind.clone(),
            skipped: 0,
        });
        let mut problems: Vec<FileProblem> = (header.iter().chain(&walk.problems))
            .map(|p| FileProblem::new(path, p))
            .collect();
        if self.args.verify {
            problems.extend(self.index_problems(path, &walk)?);
        }
        let status = problems.iter().map(|p| self.weigh(&p.file).0).max();
        self.segment_summary(path, &walk, status.unwrap_or(Severity::Clean))?;
        if self.args.records {
            for frame in &walk.frames {
                if self.args.from.is_some_and(|from| frame.record.offset() < from) {
                    continue;
                }
                if limit.is_some_and(|l| l == 0) {
                    break;
                }
                *limit = limit.map(|l| l - 1);
                self.record_line(path, frame)?;
            }
        }
        for problem in &problems {
            self.problem(problem)?;
        }
        Ok(())
    }

    fn segment_summary(&self, path: &Path, walk: &SegmentWalk, status: Severity) -> Result<(), Failure> {
        let base = walk.header.as_ref().ok().map(|h| h.base_offset);
        let first = walk.frames.first().map(|f| f.record.offset());
        let last = walk.frames.last().map(|f| f.record.offset());
        let timestamps = walk.frames.iter().map(|f| f.record.timestamp());
        let (min_ts, max_ts) = (timestamps.clone().min(), timestamps.max());
        let entries = |ext: &str, kind: IndexKind| {
            let bytes = std::fs::read(path.with_extension(ext)).ok()?;
            let entries = bytes.get(INDEX_HEADER_LEN..).unwrap_or_default();
            Some(used_entries(entries, kind.entry_len()).len() / kind.entry_len())
        };
        let num = |n: Option<u64>| n.map_or(Value::Null, |n| Value::Num(n.into()));
        let ts = |n: Option<i64>| n.map_or(Value::Null, Value::Millis);
        let count = |n: Option<usize>| n.map_or(Value::Null, |n| Value::Num(n as i128));
        let status = match status {
            Severity::Clean => "ok",
            Severity::Leftover => "leftover",
            Severity::Damage => "damaged",
        };
        Ok(self.out.item(
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
                ("status", Value::Str(status)),
            ],
        )?)
    }

    fn record_line(&self, path: &Path, frame: &FrameInfo) -> Result<(), Failure> {
        let source = path.display().to_string();
        let record = &frame.record;
        Ok(self.out.item(
            "record",
            &[
                ("source", Value::Str(&source)),
                ("offset", Value::Num(record.offset().into())),
                ("position", Value::Num(frame.position.into())),
                ("timestamp", Value::Millis(record.timestamp())),
                ("key", Value::Bytes(record.key())),
                ("headers", Value::Pairs(record.headers().collect())),
                ("value", Value::Bytes(record.value())),
            ],
        )?)
    }

    /// Checks the `.idx` and `.tix` beside a segment against its frames. In
    /// a log directory a missing index is a problem too (recovery rebuilds
    /// it); beside a lone segment file it is not.
    fn index_problems(&self, segment: &Path, walk: &SegmentWalk) -> Result<Vec<FileProblem>, Failure> {
        let Ok(header) = &walk.header else {
            return Ok(Vec::new());
        };
        let mut problems = Vec::new();
        for (ext, kind) in [("idx", IndexKind::Offset), ("tix", IndexKind::Time)] {
            let path = segment.with_extension(ext);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if self.leftovers.is_some() {
                        problems.push(FileProblem::missing(&path));
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let found = check_index(&bytes, kind, header.base_offset, &walk.frames);
            problems.extend(found.iter().map(|p| FileProblem::new(&path, p)));
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
        )?;
        if self.args.records {
            self.index_entries(kind, entries)?;
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
            self.problem(&FileProblem::new(path, problem))?;
        }
        Ok(())
    }

    fn index_entries(&self, kind: IndexKind, entries: &[u8]) -> Result<(), Failure> {
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
                        ("timestamp", Value::Millis(e.timestamp)),
                        ("relative_offset", Value::Num(e.relative_offset.into())),
                    ]
                }),
            };
            self.out.item("index_entry", &fields)?;
        }
        Ok(())
    }

    /// The bus view: every topic with its consumers, the dead letters still
    /// pending, inboxes and pending requests; then, with `--records` or
    /// `--verify`, every topic as a log directory. A topic or consumer that
    /// cannot be read is reported and the others still are.
    fn bus(&mut self, dir: &Path) -> Result<(), Failure> {
        let topics_dir = dir.join("topics");
        let mut topics: Vec<String> = std::fs::read_dir(&topics_dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        topics.sort();
        let mut logs = BTreeMap::new();
        for name in &topics {
            match read_topic(dir, name) {
                Ok(topic) => {
                    logs.insert(name.as_str(), topic);
                }
                Err(e) => self.topic_error(name, e)?,
            }
        }
        let dead = pending_dead_letters(&logs);
        let dead_counts = dead_letter_counts(&dead);
        for (name, topic) in &logs {
            self.topic_view(name, topic, &dead_counts)?;
        }
        for (name, topic) in &logs {
            if let Some(pending) = dead.get(name) {
                self.dead_letters(name, pending)?;
            }
            if name.ends_with(".inbox") {
                self.inbox(name, &topic.records)?;
            }
        }
        self.pending_requests(&logs)?;
        if self.args.verify || self.args.records {
            for name in &topics {
                if let Err(e) = self.log_dir(&topics_dir.join(name)) {
                    self.topic_error(name, e)?;
                }
            }
        }
        Ok(())
    }

    fn topic_view(
        &mut self,
        name: &str,
        topic: &Topic,
        dead_counts: &BTreeMap<(String, String), u64>,
    ) -> Result<(), Failure> {
        let log = &topic.log;
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
        )?;
        for sub in &topic.consumers.subscriptions {
            self.out.item(
                "subscription",
                &[
                    ("topic", Value::Str(name)),
                    ("name", Value::Str(&sub.name)),
                    ("committed", Value::Num(sub.committed.into())),
                    ("lag", Value::Num(end.saturating_sub(sub.committed).into())),
                ],
            )?;
        }
        for group in &topic.consumers.groups {
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
            )?;
        }
        for error in &topic.consumers.errors {
            self.note(Severity::Damage);
            self.out.item(
                "consumer_error",
                &[
                    ("topic", Value::Str(name)),
                    ("kind", Value::Str(error.kind)),
                    ("name", Value::Str(&error.name)),
                    ("error", Value::Str(&error.error)),
                ],
            )?;
        }
        Ok(())
    }

    fn limited<'a, 'r>(
        &self,
        records: &'a [&'r StoredRecord],
    ) -> impl Iterator<Item = &'r StoredRecord> + 'a {
        let from = self.args.from.unwrap_or(0);
        let limit = self.args.limit.unwrap_or(u64::MAX) as usize;
        records
            .iter()
            .copied()
            .filter(move |r| r.offset() >= from)
            .take(limit)
    }

    fn dead_letters(&self, dlq: &str, records: &[&StoredRecord]) -> Result<(), Failure> {
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
            )?;
        }
        Ok(())
    }

    fn inbox(&self, inbox: &str, records: &[StoredRecord]) -> Result<(), Failure> {
        self.out.item(
            "inbox",
            &[
                ("topic", Value::Str(inbox)),
                ("replies", Value::Num(records.len() as i128)),
            ],
        )?;
        let records: Vec<&StoredRecord> = records.iter().collect();
        for record in self.limited(&records) {
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
            )?;
        }
        Ok(())
    }

    /// Requests (records with `reply-to` and `correlation-id`) still
    /// awaiting the reply of one of the groups serving their topic (the
    /// topic itself when it has none): a scatter is pending per recipient.
    fn pending_requests(&self, topics: &BTreeMap<&str, Topic>) -> Result<(), Failure> {
        let replied: HashSet<(&str, CorrelationId, String)> = topics
            .iter()
            .filter(|(name, _)| name.ends_with(".inbox"))
            .flat_map(|(name, topic)| {
                topic.records.iter().filter_map(|r| {
                    let from = String::from_utf8_lossy(r.header(HEADER_REPLIER)?).into_owned();
                    Some((*name, correlation_id(r)?, from))
                })
            })
            .collect();
        for (name, topic) in topics.iter().filter(|(name, _)| !name.ends_with(".inbox")) {
            let mut repliers: Vec<&str> = topic.consumers.groups.iter().map(|g| g.name.as_str()).collect();
            if repliers.is_empty() {
                repliers.push(name);
            }
            for record in &topic.records {
                let (Some(id), Some(reply_to)) = (correlation_id(record), record.header(HEADER_REPLY_TO))
                else {
                    continue;
                };
                let reply_to = String::from_utf8_lossy(reply_to).into_owned();
                for replier in repliers
                    .iter()
                    .filter(|g| !replied.contains(&(reply_to.as_str(), id, (**g).to_owned())))
                {
                    self.out.item(
                        "pending_request",
                        &[
                            ("topic", Value::Str(name)),
                            ("offset", Value::Num(record.offset().into())),
                            ("correlation_id", Value::Str(&id.to_string())),
                            ("reply_to", Value::Str(&reply_to)),
                            ("awaiting", Value::Str(replier)),
                        ],
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// A topic of a bus, read whole.
struct Topic {
    log: logbus::Log,
    records: Vec<StoredRecord>,
    consumers: ConsumersView,
}

fn read_topic(bus: &Path, name: &str) -> Result<Topic, Failure> {
    let log = inspect::open_read_only(&bus.join("topics").join(name))?;
    let records = all_records(&log)?;
    let consumers = inspect::consumers(bus, name)?;
    Ok(Topic {
        log,
        records,
        consumers,
    })
}

/// The records of every dead-letter topic that `redrive` has not moved.
fn pending_dead_letters<'a>(topics: &'a BTreeMap<&str, Topic>) -> BTreeMap<&'a str, Vec<&'a StoredRecord>> {
    topics
        .iter()
        .filter(|(name, _)| name.ends_with(".dlq"))
        .map(|(name, topic)| {
            let pending = topic
                .records
                .iter()
                .filter(|r| !topic.consumers.redriven(r.offset()));
            (*name, pending.collect())
        })
        .collect()
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

/// Pending dead letters per (source topic, source group).
fn dead_letter_counts(dead: &BTreeMap<&str, Vec<&StoredRecord>>) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for record in dead.values().flatten() {
        let header = |name| {
            record
                .header(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        if let (Some(topic), Some(group)) = (header(HEADER_SOURCE_TOPIC), header(HEADER_SOURCE_GROUP)) {
            *counts.entry((topic, group)).or_insert(0) += 1;
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
