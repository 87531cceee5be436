//! `logbus-dump` on real directories: a bus with every kind of state, and
//! damaged copies. The binary is driven as a user would, and its output and
//! exit codes are checked (0 clean, 1 damage found, 2 could not read, 3
//! only leftovers of an unclean shutdown that recovery repairs without
//! loss), as are the failures seen when it was first tried from outside:
//! damaged consumer state, a closed pipe, a directory that is not logbus,
//! preallocated index room, redriven dead letters and power-loss leftovers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use logbus::{Backoff, Bus, BusOptions, GroupOptions, Record, RetryPolicy, StartAt, TopicOptions};

fn dump(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_logbus-dump"))
        .args(args)
        .output()
        .unwrap();
    let code = output.status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A bus with a topic, a subscription, a group with a dead letter, an
/// answered request and a pending one; small segments so several exist.
/// A bus in `dir` whose topic `topic` holds `count` records valued
/// `"<word> <i>"`.
fn bus_with_records(dir: &Path, topic: &str, count: u32, word: &str) -> (Bus, logbus::Topic) {
    let bus = Bus::open(dir, BusOptions::default()).unwrap();
    let topic = bus.topic(topic).unwrap();
    for i in 0..count {
        topic.publish(&Record::new(&format!("{word} {i}"))).unwrap();
    }
    (bus, topic)
}

fn sample_bus(dir: &Path) {
    let options = BusOptions::default().topic_defaults(TopicOptions::default().segment_bytes(1024));
    let bus = Bus::open(dir, options).unwrap();
    let orders = bus.topic("orders").unwrap();
    for i in 0..40 {
        orders
            .publish(&Record::new(&format!("order {i}")).key(b"k").header("n", b"1"))
            .unwrap();
    }
    let mut audit = orders.subscribe("audit", StartAt::Earliest).unwrap();
    for _ in 0..10 {
        audit.try_recv().unwrap().unwrap();
    }
    audit.commit().unwrap();
    let retry = RetryPolicy::default()
        .max_attempts(1)
        .backoff(Backoff::Fixed(Duration::ZERO));
    let billing = orders
        .group("billing", GroupOptions::default().retry(retry))
        .unwrap();
    billing
        .try_recv()
        .unwrap()
        .unwrap()
        .nack("card declined")
        .unwrap();
    billing.try_recv().unwrap().unwrap().ack().unwrap();
    let responder = bus.responder("pricing").unwrap();
    let client = bus.requester("checkout").unwrap();
    client.send_request("pricing", &Record::new(b"q1")).unwrap();
    responder
        .try_recv()
        .unwrap()
        .unwrap()
        .reply(&Record::new(b"a1"))
        .unwrap();
    client.send_request("pricing", &Record::new(b"q2")).unwrap();
    bus.close().unwrap();
}

#[test]
fn bus_view_shows_topics_consumers_dead_letters_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    sample_bus(dir.path());
    let (code, out, err) = dump(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("topic topic=orders start_offset=0 end_offset=40"),
        "{out}"
    );
    assert!(
        out.contains("subscription topic=orders name=audit committed=10 lag=30"),
        "{out}"
    );
    assert!(
        out.contains("group topic=orders name=billing low_watermark=2 lag=38"),
        "{out}"
    );
    assert!(out.contains("dead_lettered=1"), "{out}");
    assert!(
        out.contains(
            "dead_letter topic=orders.dlq offset=0 source_topic=orders source_group=billing source_offset=0"
        ),
        "{out}"
    );
    assert!(out.contains("last_reason=card declined"), "{out}");
    // Offset 0 is the requester's note of the first request (not a reply).
    assert!(out.contains("inbox topic=checkout.inbox replies=1"), "{out}");
    assert!(out.contains("reply topic=checkout.inbox offset=1"), "{out}");
    assert_eq!(out.matches("pending_request topic=pricing").count(), 1, "{out}");
}

#[test]
fn json_lines_are_one_object_each_with_stable_type_fields() {
    let dir = tempfile::tempdir().unwrap();
    sample_bus(dir.path());
    let topic = dir.path().join("topics/orders");
    let (code, out, _) = dump(&[
        topic.to_str().unwrap(),
        "--records",
        "--json",
        "--from",
        "5",
        "--limit",
        "3",
    ]);
    assert_eq!(code, 0, "{out}");
    let records: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"record\""))
        .collect();
    assert_eq!(records.len(), 3, "{out}");
    assert!(
        records[0].contains("\"offset\":5") && records[0].contains("\"value\":\"order 5\""),
        "{out}"
    );
    assert!(records[0].contains("\"headers\":[[\"n\",\"1\"]]"), "{out}");
    assert!(
        out.lines().all(|l| l.starts_with('{') && l.ends_with('}')),
        "{out}"
    );
}

#[test]
fn verify_of_a_healthy_log_reports_no_problem_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    sample_bus(dir.path());
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("problem"), "{out}");
    assert!(out.contains("recovery dir="), "{out}");
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_reported_and_decoding_continues_past_it() {
    let dir = tempfile::tempdir().unwrap();
    sample_bus(dir.path());
    let topic = dir.path().join("topics/orders");
    let segment = topic.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[60] ^= 0xFF;
    std::fs::write(&segment, &bytes).unwrap();
    let before = std::fs::read(&segment).unwrap();
    let (code, out, _) = dump(&[topic.to_str().unwrap(), "--verify", "--records"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("problem file=") && out.contains("position=32"),
        "{out}"
    );
    assert!(out.contains("checksum mismatch"), "{out}");
    assert!(
        out.contains("record source=") && out.contains("offset=1 "),
        "decoding continued: {out}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        before,
        "the dump must never write"
    );
}

#[test]
fn torn_tail_is_reported_with_what_recovery_would_truncate_without_truncating_it() {
    let dir = tempfile::tempdir().unwrap();
    sample_bus(dir.path());
    let topic = dir.path().join("topics/orders");
    let mut segments: Vec<_> = std::fs::read_dir(&topic)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    std::fs::remove_file(topic.join(".clean")).unwrap();
    std::fs::remove_file(topic.join(".checkpoint")).unwrap();
    let (code, out, _) = dump(&[topic.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("recovery_truncation"), "{out}");
    assert_eq!(std::fs::metadata(last).unwrap().len(), len - 3);
    assert!(!topic.join(".clean").exists());
}

#[test]
fn a_single_segment_and_an_index_file_can_be_dumped_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    sample_bus(dir.path());
    let base = dir.path().join("topics/orders").join(format!("{:020}", 0));
    let (code, out, _) = dump(&[
        base.with_extension("log").to_str().unwrap(),
        "--records",
        "--value",
        "hex",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("value=\"6f72646572203022\"") || out.contains("value=\"6f726465722030\""),
        "{out}"
    );
    let (code, out, _) = dump(&[base.with_extension("idx").to_str().unwrap(), "--records"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("index file=") && out.contains("index_entry relative_offset=0 position=32"),
        "{out}"
    );
}

#[test]
fn unreadable_input_exits_with_two_and_says_why() {
    let (code, _, err) = dump(&["/nonexistent/logbus/dir/00000000000000000000.log"]);
    assert_eq!(code, 2);
    assert!(err.contains("logbus-dump:"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"hi").unwrap();
    assert_eq!(dump(&[other.to_str().unwrap()]).0, 2);
}

#[test]
fn dump_reads_a_bus_while_its_owner_has_it_open_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_bus, topic) = bus_with_records(dir.path(), "live", 5, "event");
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("topic topic=live start_offset=0 end_offset=5"),
        "{out}"
    );
    // The owner still holds its lock and keeps working, serving another
    // process's writer beside the dump.
    topic.publish(&Record::new(b"after the dump")).unwrap();
    assert!(matches!(
        Bus::open(dir.path(), BusOptions::default().exclusive(true)),
        Err(logbus::Error::Locked(_))
    ));
    let joined = Bus::open(dir.path(), BusOptions::default()).unwrap();
    joined
        .topic("live")
        .unwrap()
        .publish(&Record::new(b"joined"))
        .unwrap();
    assert_eq!(topic.end_offset(), 7);
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("end_offset=7"), "{out}");
}

/// The state log files of `orders`'s group `billing` in the sample bus.
fn billing_state(bus: &Path) -> std::path::PathBuf {
    bus.join("state/groups/orders/billing")
}

#[test]
fn damaged_consumer_state_is_damage_and_every_other_topic_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    sample_bus(dir.path());
    let segment = billing_state(dir.path()).join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[0] ^= 0xFF;
    std::fs::write(&segment, &bytes).unwrap();
    let (code, out, err) = dump(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("consumer_error topic=orders kind=group name=billing error=")
            && out.contains("bad magic"),
        "{out}"
    );
    assert!(out.contains("subscription topic=orders name=audit"), "{out}");
    assert!(out.contains("topic topic=pricing"), "{out}");
    assert!(out.contains("pending_request topic=pricing"), "{out}");
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("{\"type\":\"consumer_error\",\"topic\":\"orders\""),
        "{out}"
    );
    assert!(
        out.lines().all(|l| l.starts_with('{') && l.ends_with('}')),
        "{out}"
    );
}

#[test]
fn in_json_mode_a_fatal_error_is_a_json_line_too() {
    let (code, out, err) = dump(&["/nonexistent/logbus/dir/00000000000000000000.log", "--json"]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    let line = err.trim_end();
    assert!(
        line.starts_with("{\"type\":\"error\",\"path\":\"/nonexistent/logbus/dir/00000000000000000000.log\"")
            && line.ends_with('}')
            && !line.contains('\n'),
        "{err}"
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_dump_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (bus, _topic) = bus_with_records(dir.path(), "many", 3_000, "event");
    bus.close().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logbus-dump"))
        .args([dir.path().join("topics/many").to_str().unwrap(), "--records"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The pipe is closed here, with most of the output still to come.
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8(output.stderr).unwrap();
    assert!(err.is_empty(), "{err}");
    assert_eq!(output.status.code(), Some(0), "{first}");
}

#[test]
fn a_directory_that_is_not_logbus_is_refused_saying_what_was_found() {
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err) = dump(&[empty.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("not a logbus directory") && err.contains("empty"),
        "{err}"
    );
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("app.log"), b"started\n").unwrap();
    std::fs::write(other.path().join(format!("{:020}.log", 0)), b"not a segment").unwrap();
    std::fs::write(other.path().join("notes.txt"), b"hi").unwrap();
    // Named like a segment but a directory: listed, never read.
    std::fs::create_dir(other.path().join(format!("{:020}.log", 1))).unwrap();
    let (code, out, err) = dump(&[other.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("not a logbus directory"), "{err}");
    assert!(err.contains("app.log") && err.contains("notes.txt"), "{err}");
    assert!(
        err.contains("00000000000000000000.log (no segment magic)"),
        "{err}"
    );
    assert!(err.contains("00000000000000000001.log/"), "{err}");
}

#[test]
fn records_on_a_bus_directory_lists_the_records_of_every_topic() {
    let dir = tempfile::tempdir().unwrap();
    sample_bus(dir.path());
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--records"]);
    assert_eq!(code, 0, "{out}{err}");
    let records = |topic: &str| {
        out.lines()
            .filter(|l| l.starts_with("record ") && l.contains(&format!("/topics/{topic}/")))
            .count()
    };
    assert_eq!(records("orders"), 40, "{out}");
    assert_eq!(records("pricing"), 2, "{out}");
    assert_eq!(records("orders.dlq"), 1, "{out}");
    assert!(
        out.contains("topic topic=orders "),
        "the summary is still there: {out}"
    );
}

/// The value of `field=` in the first line of `out` that starts with `kind `.
fn field<'a>(out: &'a str, kind: &str, name: &str) -> &'a str {
    let line = out.lines().find(|l| l.starts_with(&format!("{kind} "))).unwrap();
    let start = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
    line[start..].split(' ').next().unwrap()
}

#[test]
fn a_segment_reports_its_format_version_and_its_records_and_frames() {
    let dir = tempfile::tempdir().unwrap();
    let log = logbus::Log::open(dir.path(), logbus::LogOptions::default()).unwrap();
    log.append(&Record::new(b"alone")).unwrap();
    let batch: Vec<Record<'_>> = (0..10).map(|_| Record::new(b"batched")).collect();
    log.append_batch(&batch).unwrap();
    log.close().unwrap();
    let (code, out, err) = dump(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(field(&out, "segment", "format_version"), "2", "{out}");
    assert_eq!(field(&out, "segment", "records"), "11", "{out}");
    assert_eq!(field(&out, "segment", "frames"), "2", "{out}");
}

#[test]
fn a_live_segment_reports_the_index_entries_in_use_not_its_preallocated_room() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, topic) = bus_with_records(dir.path(), "live", 100, "event");
    let log_dir = dir.path().join("topics/live");
    let (code, live, err) = dump(&[log_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{live}{err}");
    assert_eq!(field(&live, "segment", "records"), "100", "{live}");
    drop(topic);
    // Closing trims the indexes to the entries in use (and adds a last
    // time entry for the newest timestamp).
    bus.close().unwrap();
    let (_, closed, _) = dump(&[log_dir.to_str().unwrap()]);
    let entries = |out, name| field(out, "segment", name).parse::<u64>().unwrap();
    assert_eq!(
        entries(&live, "index_entries"),
        entries(&closed, "index_entries"),
        "{live}{closed}"
    );
    let (live_times, closed_times) = (
        entries(&live, "time_index_entries"),
        entries(&closed, "time_index_entries"),
    );
    assert!(
        (closed_times - 1..=closed_times).contains(&live_times),
        "{live}{closed}"
    );
}

#[test]
fn redriven_dead_letters_are_not_listed_as_pending() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, orders) = bus_with_records(dir.path(), "orders", 3, "order");
    let retry = RetryPolicy::default()
        .max_attempts(1)
        .backoff(Backoff::Fixed(Duration::ZERO));
    let options = GroupOptions::default().retry(retry);
    let billing = orders.group("billing", options).unwrap();
    for _ in 0..3 {
        billing.try_recv().unwrap().unwrap().nack("declined").unwrap();
    }
    let moved = bus
        .redrive("orders.dlq", |r| r.header("logbus-source-offset") == Some(b"1"))
        .unwrap();
    assert_eq!(moved, 1);
    drop(billing);
    bus.close().unwrap();
    let (code, out, err) = dump(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let pending: Vec<&str> = out.lines().filter(|l| l.starts_with("dead_letter ")).collect();
    assert_eq!(pending.len(), 2, "{out}");
    assert!(pending.iter().all(|l| !l.contains("source_offset=1 ")), "{out}");
    assert!(out.contains("dead_lettered=2"), "{out}");
}

#[test]
fn timestamps_are_printed_as_rfc3339_beside_the_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let log = logbus::Log::open(dir.path(), logbus::LogOptions::default()).unwrap();
    log.append(&Record::new(b"x").timestamp(1_700_000_000_123))
        .unwrap();
    log.close().unwrap();
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--records"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(" timestamp=1700000000123 timestamp_rfc3339=2023-11-14T22:13:20.123Z "),
        "{out}"
    );
    assert!(
        out.contains(" min_timestamp=1700000000123 min_timestamp_rfc3339=2023-11-14T22:13:20.123Z "),
        "{out}"
    );
    let (_, out, _) = dump(&[dir.path().to_str().unwrap(), "--records", "--json"]);
    assert!(
        out.contains("\"timestamp\":1700000000123,\"timestamp_rfc3339\":\"2023-11-14T22:13:20.123Z\""),
        "{out}"
    );
}

/// Records in [`closed_log`].
const LOG_RECORDS: u64 = 100;

/// A log of [`LOG_RECORDS`] records in small segments, closed cleanly.
fn closed_log(dir: &Path) {
    let options = logbus::LogOptions::default().segment_bytes(1024);
    let log = logbus::Log::open(dir, options).unwrap();
    for i in 0..LOG_RECORDS {
        log.append(&Record::new(&format!("event {i}"))).unwrap();
    }
    log.close().unwrap();
}

fn segment_path(dir: &Path, base: u64, ext: &str) -> std::path::PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// The base offsets of the log's segments in `dir`, ascending.
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

#[test]
fn power_loss_leftovers_that_recovery_repairs_without_loss_exit_three() {
    // A 0-byte new segment with 0-byte indexes: the roll was cut short.
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());
    std::fs::remove_file(dir.path().join(".clean")).unwrap();
    for ext in ["log", "idx", "tix"] {
        std::fs::write(segment_path(dir.path(), LOG_RECORDS, ext), b"").unwrap();
    }
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("leftover file=") && out.contains(&format!("{LOG_RECORDS:020}.log")),
        "{out}"
    );
    assert!(!out.contains("problem "), "{out}");
    // The active segment's indexes 0 bytes long: never synced.
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());
    std::fs::remove_file(dir.path().join(".clean")).unwrap();
    let last = *segment_bases(dir.path()).last().unwrap();
    for ext in ["idx", "tix"] {
        std::fs::write(segment_path(dir.path(), last, ext), b"").unwrap();
    }
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(!out.contains("problem "), "{out}");
}

#[test]
fn the_same_leftovers_or_a_missing_index_after_a_clean_close_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());
    for ext in ["log", "idx", "tix"] {
        std::fs::write(segment_path(dir.path(), LOG_RECORDS, ext), b"").unwrap();
    }
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 1, "{out}{err}");
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());
    std::fs::remove_file(segment_path(dir.path(), 0, "idx")).unwrap();
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("problem file=") && out.contains("missing"), "{out}");
}

#[test]
fn verify_reports_a_deleted_middle_segment_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 3);
    for ext in ["log", "idx", "tix"] {
        std::fs::remove_file(segment_path(dir.path(), bases[1], ext)).unwrap();
    }
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("recovery_error") && out.contains("offset gap"),
        "{out}"
    );
}
