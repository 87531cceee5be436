//! The failed-I/O latch at the storage seam, and retention as background
//! maintenance, on [`SimStorage`] faults of one operation kind each.
//!
//! - A failed write, length change, file sync or directory sync anywhere
//!   poisons the log: every later write is `Error::Poisoned` naming the
//!   first failure, acknowledged records stay readable and survive a
//!   reopen (after a power loss too). No call site poisons by hand, so the
//!   faults are driven at every occurrence of each kind, not at chosen
//!   sites.
//! - A failed removal or directory sync while retention deletes the files
//!   of removed segments fails nothing: not the open, append or ack that
//!   removed them (deletion runs on the maintenance thread), not the
//!   appends after it. The failure is counted, retried in the background
//!   until it succeeds, and the records that were not removed stay intact.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::maintenance::eventually;
use logbus::storage::{Fault, SimStorage};
use logbus::{
    Bus, BusOptions, Durability, Error, GroupOptions, Log, LogOptions, Record, Retention, TopicOptions,
};

const DIR: &str = "/sim/log";

fn value(offset: u64) -> Vec<u8> {
    format!("record {offset:06} ")
        .repeat(1 + (offset % 5) as usize)
        .into_bytes()
}

fn options(sim: &SimStorage) -> LogOptions {
    LogOptions::default()
        .durability(Durability::Always)
        .segment_bytes(512)
        .index_interval_bytes(48)
        .storage(Arc::new(sim.clone()))
}

/// Appends `value(offset)` until an append fails or `limit` succeeded;
/// returns how many were acknowledged and the failure.
fn append_until_failure(log: &Log, limit: u64) -> (u64, Option<Error>) {
    for offset in log.end_offset()..limit {
        if let Err(e) = log.append(&Record::new(&value(offset))) {
            return (offset, Some(e));
        }
    }
    (limit, None)
}

fn assert_holds(log: &Log, from: u64, acknowledged: u64, context: &str) {
    assert!(
        log.end_offset() >= acknowledged,
        "{context}: acknowledged records lost"
    );
    for offset in from..acknowledged {
        let record = log.read(offset).unwrap();
        assert_eq!(
            record.map(|r| r.value().to_vec()),
            Some(value(offset)),
            "{context}: offset {offset}"
        );
    }
}

fn segment_files(sim: &SimStorage, dir: &Path) -> Vec<PathBuf> {
    let is_segment_file = |p: &PathBuf| {
        p.parent() == Some(dir)
            && p.extension()
                .is_some_and(|e| e == "log" || e == "idx" || e == "tix")
    };
    sim.files().into_iter().filter(is_segment_file).collect()
}

/// The base offsets of the `.log` files in `dir`.
fn segment_bases(sim: &SimStorage, dir: &Path) -> Vec<u64> {
    let base = |p: &PathBuf| p.file_stem()?.to_str()?.parse().ok();
    let data = segment_files(sim, dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"));
    data.filter_map(|p| base(&p)).collect()
}

#[test]
fn every_failed_write_length_change_or_sync_poisons_the_log_and_reopening_keeps_what_was_acknowledged() {
    type Injected = fn(u64) -> Fault;
    let kinds: [(&str, Injected); 4] = [
        ("write", |after| Fault::WriteError { after }),
        ("length change", |after| Fault::SetLenError { after }),
        ("sync", |after| Fault::SyncError { after }),
        ("directory sync", |after| Fault::SyncDirError { after }),
    ];
    for (kind, fault) in kinds {
        for after in 0..12 {
            let context = format!("{kind} failing after {after} more");
            let sim = SimStorage::new();
            let log = Log::open(DIR, options(&sim)).unwrap();
            sim.inject(fault(after));
            let (acknowledged, failure) = append_until_failure(&log, 400);
            let failure = failure.unwrap_or_else(|| panic!("{context}: no append failed"));
            assert!(
                matches!(failure, Error::Poisoned { .. } | Error::Io(_)),
                "{context}: {failure}"
            );
            for later in [log.append(&Record::new(b"later")).map(drop), log.flush()] {
                match later {
                    Err(Error::Poisoned { cause }) => assert!(cause.contains("failed"), "{context}: {cause}"),
                    other => panic!("{context}: after the failure: {other:?}"),
                }
            }
            assert_holds(&log, 0, acknowledged, &context);
            drop(log);
            if after % 2 == 0 {
                sim.power_loss(after);
            }
            let log = Log::open(DIR, options(&sim)).unwrap();
            assert_holds(&log, 0, acknowledged, &format!("{context}, reopened"));
            let end = log.end_offset();
            assert_eq!(log.append(&Record::new(&value(end))).unwrap(), end, "{context}");
        }
    }
}

#[test]
fn a_failed_removal_or_directory_sync_while_deleting_retired_segments_fails_no_open_or_append_and_is_retried()
{
    // The open itself removes the clean-shutdown marker and syncs the
    // directory twice (recovery, checkpoint); the next ones are retention's.
    let faults = [Fault::RemoveError { after: 1 }, Fault::SyncDirError { after: 2 }];
    for fault in faults {
        let context = format!("{fault:?}");
        let sim = SimStorage::new();
        let log = Log::open(DIR, options(&sim)).unwrap();
        let (written, _) = append_until_failure(&log, 120);
        log.close().unwrap();
        let segments = segment_bases(&sim, Path::new(DIR)).len();
        assert!(segments > 4, "{context}: {segments} segments");

        sim.inject(fault);
        let log = Log::open(DIR, options(&sim).retention_bytes(1024)).unwrap();
        let start = log.start_offset();
        assert!(start > 0, "{context}: retention removed nothing");
        eventually("the failed deletion is counted", || log.retention_failures() == 1);
        let (acknowledged, failure) = append_until_failure(&log, written + 40);
        assert!(failure.is_none(), "{context}: {failure:?}");
        assert_holds(&log, log.start_offset(), acknowledged, &context);

        // The fault fired once: the retry deletes every removed segment,
        // oldest first, and only those.
        eventually("the retry deleted the removed segments", || {
            segment_bases(&sim, Path::new(DIR)).first() == Some(&log.start_offset())
        });
        log.enforce_retention().unwrap();
        let bases = segment_bases(&sim, Path::new(DIR));
        assert_eq!(bases.first(), Some(&log.start_offset()), "{context}");
        sim.power_loss(7);
        let log = Log::open(DIR, options(&sim)).unwrap();
        assert_holds(
            &log,
            log.start_offset(),
            acknowledged,
            &format!("{context}, reopened"),
        );
    }
}

#[test]
fn an_ack_stays_ok_when_deleting_the_segments_it_released_fails_and_the_deletion_is_retried() {
    for fault in [Fault::RemoveError { after: 0 }, Fault::SyncDirError { after: 0 }] {
        let context = format!("{fault:?}");
        let sim = SimStorage::new();
        let bus_dir = Path::new("/sim/bus");
        let bus = Bus::open(bus_dir, BusOptions::default().storage(Arc::new(sim.clone()))).unwrap();
        let options = TopicOptions::default()
            .segment_bytes(1024)
            .retention(Retention::WorkQueue);
        let topic = bus.topic_with("jobs", options).unwrap();
        let group = topic.group("workers", GroupOptions::default()).unwrap();
        for offset in 0..200 {
            topic.publish(&Record::new(&value(offset))).unwrap();
        }
        let topic_dir = bus_dir.join("topics/jobs");
        let segments = segment_bases(&sim, &topic_dir).len();
        assert!(segments > 4, "{context}: {segments} segments");

        // Acks only sync the group's state log (no directory sync, no
        // removal), so the fault hits the first deletion retention starts.
        sim.inject(fault);
        for _ in 0..150 {
            let delivery = group.try_recv().unwrap().expect("a record to ack");
            delivery
                .ack()
                .unwrap_or_else(|e| panic!("{context}: ack failed: {e}"));
        }
        let log = topic.log().expect("an embedded topic");
        let start = log.start_offset();
        assert!(start > 0 && start <= 150, "{context}: start {start}");
        eventually("the failed deletion is counted", || log.retention_failures() == 1);
        for offset in start..200 {
            let record = log.read(offset).unwrap().map(|r| r.value().to_vec());
            assert_eq!(record, Some(value(offset)), "{context}: offset {offset}");
        }
        assert_eq!(
            topic.publish(&Record::new(&value(200))).unwrap(),
            200,
            "{context}"
        );
        eventually("the retry deleted the released segments", || {
            segment_bases(&sim, &topic_dir).first() == Some(&start)
        });
        let delivery = group.try_recv().unwrap().expect("record 150");
        assert_eq!(delivery.record().offset(), 150, "{context}");
        delivery.ack().unwrap();
        bus.close().unwrap();
    }
}
