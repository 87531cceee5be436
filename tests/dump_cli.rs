//! `logbus-dump` on real directories: a bus with every kind of state, and
//! damaged copies. The binary is driven as a user would, and its output and
//! exit codes are checked (0 clean, 1 damage found, 2 could not read).

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
    let retry = RetryPolicy {
        max_attempts: 1,
        backoff: Backoff::Fixed(Duration::ZERO),
    };
    let billing = orders
        .group(
            "billing",
            GroupOptions {
                retry,
                ..GroupOptions::default()
            },
        )
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
    assert!(out.contains("reply topic=checkout.inbox offset=0"), "{out}");
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
    let bus = Bus::open(dir.path(), BusOptions::default()).unwrap();
    let topic = bus.topic("live").unwrap();
    for i in 0..5 {
        topic.publish(&Record::new(&format!("event {i}"))).unwrap();
    }
    let (code, out, err) = dump(&[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("topic topic=live start_offset=0 end_offset=5"),
        "{out}"
    );
    // The owner still holds its lock and keeps working.
    topic.publish(&Record::new(b"after the dump")).unwrap();
    assert!(matches!(
        Bus::open(dir.path(), BusOptions::default()),
        Err(logbus::Error::Locked(_))
    ));
    assert_eq!(topic.end_offset(), 6);
}
