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

mod bus;
mod out;
mod time;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use logbus::format::{INDEX_HEADER_LEN, IndexKind, decode_index_header};
use logbus::inspect::{self, DryRun, FrameInfo, Problem, Repair, SegmentWalk};
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

/// The segment files of a log directory, by base offset: the regular files
/// named `{base_offset:020}.log` (a directory or pipe so named is not read). At least one must start with the segment magic;
/// otherwise `dir` is not a log directory, and the error says what it holds.
fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    let segments: Vec<PathBuf> = entries
        .iter()
        .filter(|p| inspect::segment_base(p).is_some() && p.is_file())
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
        if path.exists() && !path.is_file() {
            // A pipe or device would block the read or never end.
            return Err(format!("not a regular file: {}", path.display()).into());
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
        let version = walk.header.as_ref().ok().map(|h| u64::from(h.version));
        // A batch frame's records share its position.
        let frames = walk.frames.chunk_by(|a, b| a.position == b.position).count();
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
                ("format_version", num(version)),
                ("records", Value::Num(walk.frames.len() as i128)),
                ("frames", Value::Num(frames as i128)),
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
