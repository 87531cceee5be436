//! The `wire` target: the messages between processes on one bus
//! directory (`crate::wire`), decoded from raw bytes.

use std::time::Duration;

use bytes::Bytes;

use crate::error::Error;
use crate::format::{decode_frame, encode_frame};
use crate::patterns::{GroupOptions, StartAt, TopicOptions};
use crate::record::{Record, StoredRecord};
use crate::state::ConsumerId;
use crate::wire::{
    Dec, Enc, Handed, OwnedRecord, Request, Response, SubState, Wait, check_hello, decode_answer,
    encode_answer, hello, read_message,
};

/// Decodes `data` as a request, as an answer, as a hello and as a stream
/// of messages: none panics, and whatever decodes encodes to bytes that
/// decode and encode to the same bytes again.
pub fn wire(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(request) = Request::decode(&mut Dec::new(bytes.clone())) {
        let first = encode_request(&request);
        let again =
            Request::decode(&mut Dec::new(first.clone().into())).expect("a re-encoded request decodes");
        assert_eq!(first, encode_request(&again), "a request re-encodes the same");
    }
    if let Ok(answer) = decode_answer(bytes.clone()) {
        let first = encode_answer(&answer);
        let again = decode_answer(first.clone().into()).expect("a re-encoded answer decodes");
        assert_eq!(first, encode_answer(&again), "an answer re-encodes the same");
    }
    let _ = check_hello(bytes);
    let mut stream = data;
    while read_message(&mut stream).is_ok() {}
}

fn encode_request(request: &Request) -> Vec<u8> {
    let mut enc = Enc::default();
    request.encode(&mut enc);
    enc.buf
}

/// Messages as the library sends them, for the corpus: each request kind
/// and the answers that carry records, options and errors.
pub fn wire_seeds() -> Vec<(String, Vec<u8>)> {
    let record = Record::new(b"value").key(b"key").header("h", b"v").timestamp(7);
    let owned = OwnedRecord::new(&record).expect("a small record encodes");
    let mut frame = Vec::new();
    encode_frame(&mut frame, 3, 7, b"key", &[("h", b"v")], b"value");
    let view = decode_frame(&frame).expect("a frame decodes");
    let stored = StoredRecord::from_frame(Bytes::from(frame), view);
    let requests = [
        (
            "topic",
            Request::Topic {
                name: "orders".into(),
                options: Some(TopicOptions::default()),
            },
        ),
        (
            "publish",
            Request::Publish {
                topic: 1,
                records: vec![owned.clone(), owned.clone()],
            },
        ),
        (
            "redriven",
            Request::PublishRedriven {
                topic: 1,
                record: owned.clone(),
                dlq_topic: "orders.dlq".into(),
                dlq_offset: 4,
            },
        ),
        (
            "subscribe",
            Request::Subscribe {
                topic: 1,
                name: Some("audit".into()),
                start: StartAt::Timestamp(5),
            },
        ),
        (
            "group",
            Request::Group {
                topic: 1,
                name: "billing".into(),
                options: GroupOptions::default(),
            },
        ),
        (
            "group-recv",
            Request::GroupRecv {
                group: 2,
                max: 10,
                wait: Wait::For(Duration::from_millis(5)),
            },
        ),
        (
            "nack",
            Request::Nack {
                delivery: 3,
                reason: "later".into(),
                delay: Some(Duration::from_secs(1)),
            },
        ),
        (
            "delete-consumer",
            Request::DeleteConsumer {
                topic: "orders".into(),
                consumer: ConsumerId::Group("billing".into()),
            },
        ),
        (
            "inbox-wait",
            Request::InboxWait {
                requester: 4,
                seen_end: 9,
                wait: Wait::Forever,
            },
        ),
        (
            "reply",
            Request::PublishReply {
                inbox: "client.inbox".into(),
                id: 77,
                record: owned,
            },
        ),
    ];
    let answers = [
        (
            "records",
            Ok(Response::Records {
                records: vec![stored.clone()],
                state: SubState::default(),
            }),
        ),
        ("replies", Ok(Response::Replies(vec![stored.clone()]))),
        (
            "deliveries",
            Ok(Response::Deliveries(vec![Handed {
                handle: 5,
                attempt: 2,
                record: stored,
            }])),
        ),
        (
            "topic-opened",
            Ok(Response::Topic {
                handle: 1,
                options: TopicOptions::default(),
                start: 0,
                end: 9,
            }),
        ),
        ("error", Err(Error::LeaseExpired { offset: 3 })),
        ("error-io", Err(Error::Io(std::io::Error::other("disk")))),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = requests
        .iter()
        .map(|(name, request)| (format!("seed-request-{name}"), encode_request(request)))
        .collect();
    seeds.extend(
        answers
            .iter()
            .map(|(name, answer)| (format!("seed-answer-{name}"), encode_answer(answer))),
    );
    seeds.push(("seed-hello".into(), hello()));
    seeds
}
