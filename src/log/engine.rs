//! [`Log`]: the handle users hold, tying segments, durability, recovery and
//! retention together.
//!
//! Concurrency: appends are serialized by the writer mutex; reads take the
//! segment list's read lock only to find a segment, then read through their
//! own file handle, so readers never block writers. Lock order, where two
//! are held: writer, then segment list, then a segment's own locks or the
//! retired segments' queue.
//!
//! Failures: every file the log touches goes through its [`CheckedStorage`],
//! which latches on the first failed write, length change or sync (see
//! `io/checked.rs` for which failures latch); the log asks it before every
//! write and never poisons itself by hand.
//!
//! Rolls: an append that fills the active segment seals it and creates the
//! next one without waiting for a sync; the seal that makes both durable
//! (`seal.rs`) runs in place under `Always` and on a `logbus-sealer` thread
//! otherwise, and the next roll, a sync of the active segment and `close`
//! wait for it first (a sync without the writer's lock, so appends go on).
//! While a seal is under way a full active segment grows on instead of
//! rolling, up to twice `segment_bytes`, so an append waits for a seal only
//! once it is a whole segment ahead of the disk.
//!
//! Retention: deciding which segments go takes them out of the segment list
//! at once (at open, after a roll, on [`Log::release_before`], and on the
//! explicit calls), without I/O; deleting their files is background
//! maintenance (`retired.rs`), so it never fails an append or an ack.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::activity::Activity;
use super::checkpoint::CheckpointWriter;
use super::durability::{Async, Block, GroupCommit, SyncStats, Wait, ready};
use super::options::{Durability, LogOptions};
use super::reader::{Cursor, Position, read_record};
use super::recovery::{CHECKPOINT_FILE, CLEAN_MARKER, RecoveryReport, parse_segment_name, recover};
use super::retention::{RetentionRules, SegmentSummary, segments_to_remove};
use super::retired::RetiredSegments;
use super::seal::{Seal, Sealing};
use super::segment::{DATA_EXT, Extent, PlacedFrame, Segment};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::format::{
    BatchEntry, FRAME_HEADER_LEN, FRAME_MAX_BYTES, SEGMENT_HEADER_LEN, batch_record_len, encode_batch_into,
    encode_frame_into,
};
use crate::io::{CheckedStorage, LockGuard, Storage};
use crate::record::{Record, StoredRecord};

/// Without per-append syncs, writeback of the active segment is started
/// every this many bytes, so the sync when it is sealed (and `flush`) finds
/// little left to write instead of the whole segment.
const WRITEBACK_STEP_BYTES: u64 = 4 << 20;

/// Cuts a failed append's partial frames off (a failed append left no index
/// entries), so the next append starts where this one did. A failed cut
/// latches the storage (the file's tail is then unknown).
fn undo_partial_write(segment: &Segment, position: u64) {
    let _ = segment.file().set_len(position);
}

/// Waits for the seal the last roll started on its own thread, if any, and
/// returns its failure. (That thread holds no handle of the log, so it
/// never closes it and never gets here.)
fn finish_seal(writer: &mut Writer) -> std::io::Result<()> {
    match writer.sealing.take() {
        Some(sealing) => sealing.finish(),
        None => Ok(()),
    }
}

/// Starts writeback of what the writer wrote since the last step, once a
/// step's worth has piled up. Only a hint: failures are ignored (the next
/// sync reports any real one).
fn start_writeback(writer: &mut Writer) {
    let pending = writer.position - writer.writeback_from;
    if pending >= WRITEBACK_STEP_BYTES {
        let _ = writer
            .active
            .file()
            .start_writeback(writer.writeback_from, pending);
        writer.writeback_from = writer.position;
    }
}

/// Bytes of `records` as one batch frame, each stamped by `stamp`; `None`
/// when that frame would pass [`FRAME_MAX_BYTES`] (the records are then
/// written as record frames).
fn batch_frame_len(records: &[Record<'_>], stamp: impl Fn(&Record<'_>) -> i64) -> Option<usize> {
    let base = stamp(records.first()?);
    let mut len = FRAME_HEADER_LEN;
    for record in records {
        len = len.checked_add(batch_record_len(base, &batch_entry(record, stamp(record)))?)?;
    }
    (len <= FRAME_MAX_BYTES).then_some(len)
}

/// `record` stamped with `timestamp`, as a batch frame holds it.
fn batch_entry<'r>(record: &'r Record<'_>, timestamp: i64) -> BatchEntry<'r> {
    BatchEntry {
        timestamp,
        key: record.key_bytes(),
        headers: record.header_pairs(),
        value: record.value(),
    }
}

/// Name of the lock file in a log directory.
const LOCK_FILE: &str = ".lock";

/// An append-only, segmented, crash-safe log of records.
///
/// `Log` is a cheap handle: clones share one log. It is `Send + Sync`;
/// any number of threads may append and read at once.
///
/// ```
/// use logbus::{Log, LogOptions, Position, Record};
/// # fn main() -> logbus::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// let offset = log.append(&Record::new(b"hello").key(b"k"))?;
/// assert_eq!(log.read(offset)?.unwrap().value(), b"hello");
/// let mut cursor = log.cursor(Position::Earliest)?;
/// assert_eq!(cursor.next()?.unwrap().offset(), offset);
/// log.close()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Log {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    dir: PathBuf,
    options: LogOptions,
    /// `options.storage` behind the failure latch; every file goes through it.
    storage: CheckedStorage,
    retired: Arc<RetiredSegments>,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// The first segment's base, kept beside the list so that readers
    /// check it per record without taking the list's lock.
    start: AtomicU64,
    writer: Mutex<Writer>,
    commit: Arc<GroupCommit>,
    pub(crate) activity: Activity,
    closed: AtomicBool,
    report: RecoveryReport,
    flusher: Mutex<Option<Flusher>>,
    lock: Mutex<Option<LockGuard>>,
    checkpoint: Arc<CheckpointWriter>,
}

#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    next_offset: u64,
    position: u64,
    /// Writeback of the active segment was started up to here (see
    /// `WRITEBACK_STEP_BYTES`).
    writeback_from: u64,
    /// The batch being written, encoded (reused: each batch overwrites
    /// it whole).
    frames: Vec<u8>,
    /// Each record's frame length, as checked.
    sizes: Vec<usize>,
    /// The frames of the batch, for the indexes.
    placed: Vec<PlacedFrame>,
    /// The active segment is sealed but its successor could not be
    /// created: the next append must finish the roll before writing.
    roll_pending: bool,
    /// The active segment's write limit as the checkpoint last made it
    /// durable (0: none yet; `u64::MAX`: the checkpoint names none, so
    /// recovery reads to the end of the file): appends up to it need not
    /// raise it.
    write_limit: u64,
    /// `CheckpointWriter::recorded` when `write_limit` was set: once it
    /// changes, the next append may lower the limit.
    limit_recorded: u64,
    /// The seal of the segment before the active one, running on its own
    /// thread (`seal.rs`): until it is done no checkpoint names the active
    /// segment, so its appends raise no write limit.
    sealing: Option<Sealing>,
}

impl Writer {
    fn extent(&self) -> Extent {
        Extent {
            end_offset: self.next_offset,
            end_pos: self.position,
        }
    }

    /// Encodes `records`, `bytes` in all, into `frames`: one batch frame
    /// when `batched`, else a record frame each (of the lengths in
    /// `sizes`), each record stamped by `stamp`; `placed` gets the frames
    /// for the indexes.
    fn encode(
        &mut self,
        records: &[Record<'_>],
        bytes: usize,
        batched: bool,
        stamp: impl Fn(&Record<'_>) -> i64,
    ) {
        let (first, position) = (self.next_offset, self.position);
        self.frames.resize(bytes, 0);
        self.placed.clear();
        if batched {
            let entries = records.iter().map(|record| batch_entry(record, stamp(record)));
            encode_batch_into(&mut self.frames, first, entries);
            let mut newest = (stamp(&records[0]), first);
            // Records first: the offsets then stop at the last record's,
            // which never passes u64::MAX - 1.
            for (record, offset) in records.iter().zip(first..) {
                if stamp(record) > newest.0 {
                    newest = (stamp(record), offset);
                }
            }
            self.placed.push(PlacedFrame {
                offset: first,
                position,
                newest,
            });
            return;
        }
        let mut at = 0;
        for ((record, offset), &size) in records.iter().zip(first..).zip(self.sizes.iter()) {
            let timestamp = stamp(record);
            self.placed.push(PlacedFrame {
                offset,
                position: position + at as u64,
                newest: (timestamp, offset),
            });
            encode_frame_into(
                &mut self.frames[at..at + size],
                offset,
                timestamp,
                record.key_bytes(),
                record.header_pairs(),
                record.value(),
            );
            at += size;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// True for the name of a file only a log directory holds: a data segment
/// (`{base:020}.log`) or the recovery checkpoint.
pub(crate) fn is_log_file_name(name: &str) -> bool {
    name == CHECKPOINT_FILE || parse_segment_name(name).is_some_and(|(_, ext)| ext == DATA_EXT)
}

/// Takes the lock of the log directory `dir` as [`Log::open`] does, without
/// opening the log: [`Error::Locked`] while a handle (of this process or
/// another) has it open. For deleting a log's directory.
pub(crate) fn lock_log_dir(storage: &dyn Storage, dir: &Path) -> Result<LockGuard> {
    storage
        .lock(&dir.join(LOCK_FILE))?
        .ok_or_else(|| Error::Locked(dir.to_path_buf()))
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering from any
    /// crash. Fails with [`Error::Locked`] if another handle owns `dir`.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let storage = CheckedStorage::new(options.storage.clone());
        storage.create_dir_all(&dir)?;
        let guard = lock_log_dir(&storage, &dir)?;
        let recovered = recover(&storage, &dir, &options, options.clock.now_ms())?;
        let active = recovered.segments.last().cloned().ok_or(Error::Closed)?;
        active.reserve(active.limit().end_pos, &options);
        let checkpoint = CheckpointWriter::open(&storage, &dir, &active)?;
        checkpoint.record(&active, active.limit(), false)?;
        storage.sync_dir(&dir)?;
        let extent = active.limit();
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                active,
                next_offset: extent.end_offset,
                position: extent.end_pos,
                frames: Vec::new(),
                sizes: Vec::new(),
                placed: Vec::new(),
                roll_pending: false,
                writeback_from: extent.end_pos,
                write_limit: 0,
                limit_recorded: 0,
                sealing: None,
            }),
            commit: Arc::new(GroupCommit::new(extent.end_offset, storage.clone())),
            retired: RetiredSegments::new(dir.clone(), storage.clone()),
            storage,
            start: AtomicU64::new(recovered.segments.first().map_or(0, |s| s.base())),
            segments: RwLock::new(recovered.segments),
            report: recovered.report,
            activity: Activity::default(),
            closed: AtomicBool::new(false),
            flusher: Mutex::new(None),
            lock: Mutex::new(Some(guard)),
            checkpoint: Arc::new(checkpoint),
            dir,
            options,
        });
        if let Durability::Interval(every) = shared.options.durability {
            *lock(&shared.flusher) = Some(Flusher::spawn(Arc::downgrade(&shared), Some(every))?);
        }
        shared.retire(None);
        Ok(Log { shared })
    }

    /// Appends one record and returns its offset. Under
    /// [`Durability::Always`] it returns once the record is durable.
    pub fn append(&self, record: &Record<'_>) -> Result<u64> {
        Ok(self.append_batch(std::slice::from_ref(record))?.start)
    }

    /// Appends records with one write (and, under `Always`, one sync) and
    /// returns their offsets. The batch lands in one segment; a batch
    /// larger than a segment is refused. After a crash, a prefix of an
    /// unacknowledged batch may survive.
    pub fn append_batch(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        ready(self.append_batch_in(records, Block))
    }

    /// [`Log::append_batch`] without blocking the calling thread: the
    /// records are written (copied into the page cache) when the future is
    /// first polled; under [`Durability::Always`] the future then waits,
    /// without blocking, for a sync by the log's sync thread (started on
    /// first use; it joins group commit like any appender).
    ///
    /// Cancellation: dropped before its first poll, nothing is written;
    /// dropped later, the records are appended and become durable with the
    /// next sync, but the caller does not learn their offsets.
    pub async fn append_batch_async(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        self.append_batch_in(records, Async).await
    }

    /// [`Log::append_batch`] or [`Log::append_batch_async`], as `wait` says
    /// (the records are written when this is called).
    #[inline]
    pub(crate) fn append_batch_in<W: Wait>(
        &self,
        records: &[Record<'_>],
        wait: W,
    ) -> impl Future<Output = Result<Range<u64>>> + Send {
        wait.after_write(self, self.write(records), |range| range)
    }

    /// Writes `records` (a copy into the page cache, no sync); their
    /// offsets. Under `Always` they are readable once a sync covers them:
    /// follow with [`Wait::after_write`].
    pub(crate) fn write(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        self.shared.write(records)
    }

    /// The offset a sync must reach for the `written` records to be
    /// durable: under [`Durability::Always`] only, if any were written.
    #[inline]
    pub(super) fn sync_target(&self, written: &Range<u64>) -> Option<u64> {
        let always = self.shared.options.durability == Durability::Always;
        (always && !written.is_empty()).then_some(written.end)
    }

    /// Blocks until every offset below `target` is durable (group commit:
    /// this thread may run the sync).
    pub(super) fn wait_durable(&self, target: u64) -> Result<()> {
        let shared = &self.shared;
        shared.commit.wait_durable(target, || shared.sync_written())
    }

    /// Waits, without blocking, until every offset below `target` is
    /// durable, asking the sync thread for a sync while it is not.
    pub(super) async fn durable_async(&self, target: u64) -> Result<()> {
        loop {
            let listener = self.shared.commit.listen();
            self.shared.check_open()?;
            if self.shared.commit.is_durable(target)? {
                return Ok(());
            }
            self.request_sync()?;
            listener.await;
        }
    }

    /// Asks the background sync thread (the `Interval` flusher, or under
    /// `Always` one started now) for a sync of everything written.
    fn request_sync(&self) -> Result<()> {
        let mut flusher = lock(&self.shared.flusher);
        // Under the flusher's lock: `close` takes the thread after setting
        // `closed`, so none is started that `close` would miss.
        self.shared.check_open()?;
        match flusher.as_ref() {
            Some(running) => running.request(),
            None => {
                let started = Flusher::spawn(Arc::downgrade(&self.shared), None)?;
                started.request();
                *flusher = Some(started);
            }
        }
        Ok(())
    }

    /// Reads the record at `offset`, or `None` if it is below the start or
    /// not yet readable.
    pub fn read(&self, offset: u64) -> Result<Option<StoredRecord>> {
        self.shared.check_open()?;
        match self.shared.segment_for(offset) {
            Some(segment) if offset < segment.limit().end_offset => read_record(&segment, offset).map(Some),
            _ => Ok(None),
        }
    }

    /// A cursor reading forward from `position`.
    pub fn cursor(&self, position: Position) -> Result<Cursor> {
        self.shared.check_open()?;
        Cursor::new(self.shared.clone(), position)
    }

    /// Makes every appended record durable now.
    pub fn flush(&self) -> Result<()> {
        self.shared.check_open()?;
        self.shared.flush()
    }

    /// The lowest offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset()
    }

    /// One past the last readable offset: the offset the next record gets
    /// once all pending appends are readable.
    pub fn end_offset(&self) -> u64 {
        self.shared.end_offset()
    }

    /// What recovery found and repaired when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.report
    }

    /// Base offset of the active (last) segment.
    #[cfg(feature = "internals")]
    pub(crate) fn active_base(&self) -> u64 {
        self.shared.segments().last().map_or(0, |s| s.base())
    }

    /// Notified whenever records become readable or the log closes. The
    /// pattern layer also notifies it when a redelivery becomes possible,
    /// so every waiter on a topic waits on one event.
    pub(crate) fn activity(&self) -> &Activity {
        &self.shared.activity
    }

    /// The clock the log stamps records with and waits on (`crate::clock`).
    pub(crate) fn clock(&self) -> &Clock {
        self.shared.clock()
    }

    /// Bytes the log's segments hold: headers and frames, not the space
    /// reserved ahead of appends.
    pub fn bytes(&self) -> u64 {
        self.shared.segments().iter().map(|s| s.limit().end_pos).sum()
    }

    /// Counters of the syncs group commit has run (fsync latency).
    pub fn sync_stats(&self) -> SyncStats {
        self.shared.commit.stats()
    }

    /// Fails with [`Error::Closed`] once the log is closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        self.shared.check_open()
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Applies the size and age retention limits now, and deletes the
    /// files of every segment retention removed, waiting for that and
    /// returning its error. (The limits are also applied at open and
    /// whenever a segment is sealed; the files of the segments they remove
    /// then go in the background.) Returns the segments this call removed.
    pub fn enforce_retention(&self) -> Result<usize> {
        self.shared.check_open()?;
        let removed = self.shared.retire(None);
        self.shared.retired.delete_now()?;
        Ok(removed)
    }

    /// Removes whole sealed segments whose records all lie below `offset`,
    /// for callers that own retention, and deletes their files (and those
    /// of any segment retention removed before) before it returns. Records
    /// of a segment that straddles `offset` stay readable. Returns the
    /// segments this call removed.
    pub fn truncate_before(&self, offset: u64) -> Result<usize> {
        self.shared.check_open()?;
        let removed = self.shared.retire(Some(offset));
        self.shared.retired.delete_now()?;
        Ok(removed)
    }

    /// Removes every record written so far, by retention's own path: the
    /// active segment is sealed if it holds a record (as a roll does), and
    /// every segment below the end goes, its files deleted before this
    /// returns. Offsets are not reused: the log then starts at its end,
    /// which it returns. Records appended meanwhile stay.
    pub(crate) fn purge(&self) -> Result<u64> {
        let end = {
            let mut writer = self.shared.writer();
            self.shared.check_open()?;
            self.shared.commit.check()?;
            if writer.position > SEGMENT_HEADER_LEN as u64 {
                self.shared
                    .roll(&mut writer)
                    .map_err(|e| self.shared.latched_or(e))?;
            }
            writer.next_offset
        };
        self.truncate_before(end)?;
        Ok(end)
    }

    /// Removes whole sealed segments whose records all lie below `offset`
    /// (readers stop seeing them at once) and leaves the deletion of their
    /// files to background maintenance: for acks and commits, which must
    /// not wait for, or fail because of, a deletion. Takes the segment
    /// list's write lock only if a segment lies below `offset`.
    pub(crate) fn release_before(&self, offset: u64) {
        if self.shared.check_open().is_ok() && self.has_segment_below(offset) {
            self.shared.retire(Some(offset));
        }
    }

    /// Background deletions of removed segments that failed since the log
    /// was opened (each is retried later; see [`Log::enforce_retention`]).
    pub fn retention_failures(&self) -> u64 {
        self.shared.retired.failures()
    }

    /// Whether a whole sealed segment lies below `offset`, i.e. whether
    /// [`Log::truncate_before`] would remove anything for that reason.
    /// Takes only the segment list's read lock.
    pub(crate) fn has_segment_below(&self, offset: u64) -> bool {
        (self.shared.segments().get(1)).is_some_and(|next| next.base() <= offset)
    }

    /// Syncs everything, trims the active segment's indexes and writes the
    /// clean-shutdown marker, so the next open scans almost nothing. Other
    /// handles to this log get [`Error::Closed`] afterwards.
    pub fn close(&self) -> Result<()> {
        self.shared.close()
    }
}

impl Shared {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        lock(&self.writer)
    }

    pub(crate) fn segments(&self) -> RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn segments_mut(&self) -> RwLockWriteGuard<'_, Vec<Arc<Segment>>> {
        self.segments.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The segment that holds (or would hold) `offset`; `None` below the start.
    pub(crate) fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments();
        let after = segments.partition_point(|s| s.base() <= offset);
        after.checked_sub(1).map(|i| segments[i].clone())
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.options.clock
    }

    pub(crate) fn start_offset(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    pub(crate) fn end_offset(&self) -> u64 {
        self.segments().last().map_or(0, |s| s.limit().end_offset)
    }

    /// Writes `records` (a copy into the page cache, no sync); their
    /// offsets. Under `Always` they are readable once a sync covers them.
    fn write(&self, records: &[Record<'_>]) -> Result<Range<u64>> {
        let mut writer = self.writer();
        self.check_open()?;
        self.commit.check()?;
        let start = writer.next_offset;
        if records.is_empty() {
            return Ok(start..start);
        }
        let extent = self
            .write_batch(&mut writer, records)
            .map_err(|e| self.latched_or(e))?;
        Ok(start..extent.end_offset)
    }

    /// `error`, or [`Error::Poisoned`] if the storage latched meanwhile (a
    /// refused operation's error says less than the first failure).
    fn latched_or(&self, error: Error) -> Error {
        match error {
            Error::Io(_) => self.commit.check().err().unwrap_or(error),
            other => other,
        }
    }

    /// Checks sizes, rolls if needed, writes the batch and indexes it: as
    /// one batch frame when it has several records and the segment may
    /// hold one, else a record frame each.
    fn write_batch(&self, writer: &mut Writer, records: &[Record<'_>]) -> Result<Extent> {
        let frames_bytes = self.checked_batch_bytes(records, &mut writer.sizes)?;
        // Only a crafted segment (a base near u64::MAX) gets here.
        if writer.next_offset.checked_add(records.len() as u64).is_none() {
            return Err(Error::InvalidArgument(format!(
                "offsets are exhausted: {} records from offset {} pass u64::MAX",
                records.len(),
                writer.next_offset
            )));
        }
        // The clock is read once a batch, and only for a record with no
        // timestamp of its own (a state log stamps its events itself).
        let now = match records.iter().all(|r| r.own_timestamp().is_some()) {
            true => 0,
            false => self.clock().now_ms(),
        };
        let stamp = |record: &Record<'_>| record.own_timestamp().unwrap_or(now);
        let batch_len = match records.len() > 1 {
            true => batch_frame_len(records, stamp),
            false => None,
        };
        // A batch frame goes only where the segment's version has them (a
        // roll's new segment always does).
        let batch_in = |segment: &Segment| batch_len.filter(|_| segment.holds_batches());
        let bytes_in = |segment: &Segment| batch_in(segment).map_or(frames_bytes, |len| len as u64);
        let bytes = bytes_in(&writer.active);
        let full = writer.position > SEGMENT_HEADER_LEN as u64
            && writer.position + bytes > self.options.segment_bytes;
        if writer.roll_pending || (full && !self.may_overrun(writer, bytes)) {
            self.roll(writer)?;
        }
        let batched = batch_in(&writer.active).is_some();
        let bytes = bytes_in(&writer.active);
        let end = writer.position + bytes;
        writer.active.reserve(end, &self.options);
        if self.options.preallocate
            && (end > writer.write_limit || writer.limit_recorded != self.checkpoint.recorded())
            && self.seal_done(writer)?
        {
            (writer.write_limit, writer.limit_recorded) = self.checkpoint.cover(&writer.active, end)?;
        }
        writer.encode(records, bytes as usize, batched, stamp);
        let Writer {
            frames,
            placed,
            next_offset,
            position,
            active,
            ..
        } = writer;
        let written = active.file().write_all_at(frames, *position).map_err(Error::from);
        let indexed = written.and_then(|()| active.frames_appended(placed));
        if let Err(e) = indexed {
            undo_partial_write(active, *position);
            return Err(e);
        }
        *next_offset += records.len() as u64;
        *position += frames.len() as u64;
        let extent = writer.extent();
        if self.options.durability != Durability::Always {
            writer.active.advance_limit(extent);
            self.activity.notify();
            start_writeback(writer);
        }
        Ok(extent)
    }

    /// The batch's size in bytes as record frames, once each record's is
    /// checked; `sizes` gets each record's.
    fn checked_batch_bytes(&self, records: &[Record<'_>], sizes: &mut Vec<usize>) -> Result<u64> {
        let max = self.options.record_limit();
        let mut total = 0u64;
        sizes.clear();
        for record in records {
            let size = record.encoded_len().map_or(u64::MAX, |n| n as u64);
            if size > max {
                return Err(Error::RecordTooLarge { size, max });
            }
            sizes.push(size as usize);
            total += size;
        }
        let room = self.options.segment_bytes - SEGMENT_HEADER_LEN as u64;
        if total > room {
            return Err(Error::InvalidArgument(format!(
                "batch of {total} bytes does not fit in a segment of {room} bytes"
            )));
        }
        Ok(total)
    }

    /// Syncs the active segment (after the seal of the one before, if it
    /// is under way); everything written before is then durable. A seal
    /// under way is waited for without the writer's lock, so appends go on
    /// meanwhile (a `flush()`, the `Interval` flusher).
    fn sync_written(&self) -> std::io::Result<u64> {
        let (segment, extent) = loop {
            let mut writer = self.writer();
            let running = writer.sealing.as_ref().filter(|s| !s.is_finished());
            if let Some(ended) = running.map(Sealing::ended) {
                drop(writer);
                ended.wait();
                continue;
            }
            finish_seal(&mut writer)?;
            break (writer.active.clone(), writer.extent());
        };
        self.checkpoint.sync_covers()?;
        segment.file().sync_data()?;
        segment.advance_limit(extent);
        self.checkpoint.record(&segment, extent, false)?;
        self.activity.notify();
        Ok(extent.end_offset)
    }

    fn flush(&self) -> Result<()> {
        let target = self.writer().next_offset;
        self.commit.wait_durable(target, || self.sync_written())
    }

    /// Seals the active segment and starts the next one: cuts the sealed
    /// segment's files to their frames and creates the successor without
    /// syncing, then makes both durable (`seal.rs`), in place under
    /// `Always` and on a thread of its own otherwise, after waiting for
    /// the previous roll's. A failed sync or length change latches the
    /// storage; any other failure (a full disk above all, which only
    /// touched the new, empty segment) leaves the roll to be retried by the
    /// next append.
    fn roll(&self, writer: &mut Writer) -> Result<()> {
        finish_seal(writer)?;
        let sealed = writer.active.clone();
        let extent = writer.extent();
        sealed.cut(extent.end_pos)?;
        // Until the successor exists, every append retries the roll at this
        // same base, so a half-created successor is rewritten, never left
        // behind with records after it in the sealed segment.
        writer.roll_pending = true;
        sealed.indexes().trim()?;
        let next = Arc::new(self.create_segment(extent.end_offset)?);
        next.allocate_ahead(&self.options);
        self.segments_mut().push(next.clone());
        sealed.mark_sealed();
        writer.active = next.clone();
        writer.position = SEGMENT_HEADER_LEN as u64;
        writer.writeback_from = writer.position;
        writer.write_limit = 0;
        writer.roll_pending = false;
        let seal = Seal {
            sealed,
            end: extent,
            next,
            checkpoint: self.checkpoint.clone(),
            commit: self.commit.clone(),
            storage: self.storage.clone(),
            dir: self.dir.clone(),
        };
        match self.options.durability {
            Durability::Always => seal.run()?,
            _ => writer.sealing = seal.spawn()?,
        }
        self.activity.notify();
        self.retire(None);
        Ok(())
    }

    /// Whether a batch of `batch_bytes` that would take the active segment
    /// past `segment_bytes` goes into it all the same: while the seal of
    /// the segment before is under way (under `Interval` and `Os`), a roll
    /// would wait for it, so the active segment grows on, up to twice
    /// `segment_bytes`; the first append after the seal is done rolls. An
    /// append thus waits for a seal only once it is a whole segment ahead
    /// of the disk. (Past `segment_bytes` nothing is reserved: those writes
    /// extend the file.)
    fn may_overrun(&self, writer: &Writer, batch_bytes: u64) -> bool {
        let sealing = writer.sealing.as_ref().is_some_and(|s| !s.is_finished());
        sealing && writer.position + batch_bytes <= 2 * self.options.segment_bytes
    }

    /// Whether no seal is under way, reaping one that finished (and
    /// returning its failure).
    fn seal_done(&self, writer: &mut Writer) -> Result<bool> {
        if writer
            .sealing
            .as_ref()
            .is_some_and(|sealing| !sealing.is_finished())
        {
            return Ok(false);
        }
        finish_seal(writer)?;
        Ok(true)
    }

    /// Creates the segment starting at `base`, its header written but not
    /// synced (a roll's seal syncs it and the directory entry).
    fn create_segment(&self, base: u64) -> Result<Segment> {
        let segment = Segment::create(
            &self.storage,
            &self.dir,
            base,
            self.options.index_interval_bytes,
            self.options.index_capacity(),
            self.clock().now_ms(),
        )?;
        segment.reserve(SEGMENT_HEADER_LEN as u64, &self.options);
        Ok(segment)
    }

    /// Takes the segments retention selects (size, age, and everything
    /// below `truncate_before`) out of the list and hands their files to
    /// background deletion. No I/O, so it cannot fail. Returns how many.
    fn retire(&self, truncate_before: Option<u64>) -> usize {
        let rules = RetentionRules {
            retention_bytes: self.options.retention_bytes,
            retention_age: self.options.retention_age,
            truncate_before,
        };
        // Only segments below the one the checkpoint names may go: a later
        // one's creation may not be durable yet (its roll's seal is under
        // way, or failed), and a power loss after deleting the segments
        // before it could leave the log without any of them.
        let durable_base = self.checkpoint.durable_base();
        let mut segments = self.segments_mut();
        let named = segments
            .iter()
            .skip(1)
            .take_while(|s| durable_base.is_some_and(|base| s.base() <= base))
            .count();
        let summaries: Vec<SegmentSummary> = segments
            .iter()
            .map(|s| SegmentSummary {
                base: s.base(),
                bytes: s.size_bytes(),
                max_timestamp: s.max_timestamp(),
            })
            .collect();
        let count = segments_to_remove(&summaries, rules, self.clock().now_ms()).min(named);
        if count > 0 {
            let removed: Vec<Arc<Segment>> = segments.drain(..count).collect();
            self.start
                .store(segments.first().map_or(0, |s| s.base()), Ordering::Release);
            // Still under the list's lock, so bases queue in removal order.
            self.retired.retire(removed.iter().map(|s| s.base()));
        }
        count
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(flusher) = lock(&self.flusher).take() {
            flusher.stop();
        }
        self.activity.notify();
        self.commit.wake_all();
        self.retired.close();
        let result = self.write_clean_marker();
        lock(&self.lock).take();
        result
    }

    fn write_clean_marker(&self) -> Result<()> {
        let mut writer = self.writer();
        finish_seal(&mut writer)?;
        self.commit.check()?;
        writer.active.trim(writer.position)?;
        self.checkpoint.record(&writer.active, writer.extent(), true)?;
        writer.active.indexes().seal()?;
        let storage = &self.storage;
        let marker = storage.open(&self.dir.join(CLEAN_MARKER), true)?;
        marker.sync_all()?;
        storage.sync_dir(&self.dir)?;
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Best effort: a handle dropped without `close` still closes cleanly
        // when it can; if it cannot, the next open recovers as after a crash.
        let _ = self.close();
    }
}

/// The background sync thread: every interval under
/// [`Durability::Interval`], and on request ([`Flusher::request`]) for the
/// async appends of [`Log::append_batch_async`].
#[derive(Debug)]
struct Flusher {
    signal: Arc<(Mutex<FlushSignal>, std::sync::Condvar)>,
    thread: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct FlushSignal {
    stop: bool,
    requested: bool,
}

impl Flusher {
    /// Starts the thread; it syncs every `every` (if set) and on request.
    fn spawn(log: Weak<Shared>, every: Option<Duration>) -> std::io::Result<Flusher> {
        let signal = Arc::new((Mutex::new(FlushSignal::default()), std::sync::Condvar::new()));
        let theirs = signal.clone();
        let thread = std::thread::Builder::new()
            .name("logbus-flusher".into())
            .spawn(move || {
                while !Flusher::wait_for_work(&theirs, every) {
                    let Some(shared) = log.upgrade() else { return };
                    // A failed sync poisons the log; appends report it.
                    let _ = shared.flush();
                }
            })?;
        Ok(Flusher { signal, thread })
    }

    /// Sleeps until a sync is requested or `every` passed; true once stop
    /// was requested.
    fn wait_for_work(signal: &(Mutex<FlushSignal>, std::sync::Condvar), every: Option<Duration>) -> bool {
        let (state, wake) = signal;
        let deadline = every.map(|every| Instant::now() + every);
        let mut guard = lock(state);
        loop {
            if guard.stop {
                return true;
            }
            if std::mem::take(&mut guard.requested) {
                return false;
            }
            guard = match deadline {
                None => wake.wait(guard).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    wake.wait_timeout(guard, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Asks for a sync of everything written.
    fn request(&self) {
        lock(&self.signal.0).requested = true;
        self.signal.1.notify_all();
    }

    fn stop(self) {
        lock(&self.signal.0).stop = true;
        self.signal.1.notify_all();
        if self.thread.thread().id() != std::thread::current().id() {
            let _ = self.thread.join();
        }
    }
}
