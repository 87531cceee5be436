//! The correlation index (`CorrelationTable`, the open-addressing hash
//! table behind `Requester::reply_for`) against a plain model, its header
//! decoder against garbage, and its file against corruption through the bus.
//!
//! - Model: random inserts (ids drawn from a small pool so ids repeat, as
//!   several replies to one request do), lookups, growth (a bigger table
//!   formatted and the live entries reinserted, as the inbox index does when
//!   half full), truncation (entries below an offset dropped, as retention
//!   does; until the next growth they stay in the table and lookups drop
//!   them) and rebuilds (a fresh table re-indexing the inbox, as after a
//!   crash), and reopens from the table's bytes. After every step, every id's
//!   lookup agrees with a `HashMap<u128, Vec<u64>>`, and no lookup ever yields
//!   an offset that was not inserted under that id.
//! - Garbage: `decode_correlation_header` on random bytes, on headers with a
//!   valid checksum but random fields, and on valid tables with flipped
//!   bytes or a wrong length never panics; whatever it accepts satisfies the
//!   documented invariants, and lookups and inserts in an accepted table
//!   stay in bounds and terminate (even when every slot holds garbage).
//! - Bus: a requester's `state/inboxes/<name>/correlation.cix` damaged while
//!   the bus is closed (bad magic, checksum, version, length, flags, garbage,
//!   empty, missing) is rebuilt at the next open and every reply is still
//!   found; an unclean index is rebuilt even if its slots were wiped, while a
//!   clean one is trusted as is.
//!
//! `PROPTEST_CASES` sets the number of cases per property (default 256).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use logbus::format::FORMAT_VERSION;
use logbus::internals::{CorrelationTable, decode_correlation_header};
use logbus::{Bus, BusOptions, CorrelationId, Durability, Record, TopicOptions};
use proptest::prelude::*;

const HEADER_LEN: usize = 48;
const SLOT_LEN: usize = 24;
const MAX_CAPACITY: u64 = 1 << 26;

// ------------------------------------------------------------------ model

#[derive(Debug, Clone)]
enum Op {
    /// Appends a record to the inbox; `id` indexes the id pool (0 = no id).
    Insert(usize),
    Lookup(usize),
    /// Moves the inbox start forward by this share (in 1/8) of what is left.
    Truncate(u8),
    /// Grows now, even if not half full.
    Grow,
    /// A crash: a fresh table re-indexes the live inbox.
    Rebuild,
    /// Writes the header and opens the table again from its bytes.
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..POOL).prop_map(Op::Insert),
        6 => (0..POOL).prop_map(Op::Lookup),
        1 => (1..=8u8).prop_map(Op::Truncate),
        1 => Just(Op::Grow),
        1 => Just(Op::Rebuild),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

const POOL: usize = 12;

/// Ids of a case: index 0 is "no correlation id"; the others are random,
/// some sharing their low or high halves (hash neighbours).
fn id_pool() -> impl Strategy<Value = Vec<u128>> {
    (prop::collection::vec(1..=u128::MAX, POOL - 1), any::<u64>()).prop_map(|(mut ids, half)| {
        ids[1] = (ids[0] & !(u64::MAX as u128)) | half as u128;
        ids[2] = (ids[0] & u64::MAX as u128) | ((half as u128) << 64);
        ids[3] = ids[0] ^ 1;
        ids.insert(0, 0);
        ids.iter_mut().skip(1).for_each(|id| *id = (*id).max(1));
        ids
    })
}

/// The inbox as the table should see it, plus the table's expected shape.
#[derive(Debug, Default)]
struct Model {
    /// Live records: id (0 = none) per offset from `start`.
    ids: Vec<u128>,
    start: u64,
    /// Every entry ever inserted, live or not: (id, offset).
    inserted: Vec<(u128, u64)>,
}

impl Model {
    fn end(&self) -> u64 {
        self.start + self.ids.len() as u64
    }

    fn live(&self) -> impl Iterator<Item = (u128, u64)> + '_ {
        (self.start..)
            .zip(&self.ids)
            .filter(|(_, id)| **id != 0)
            .map(|(offset, id)| (*id, offset))
    }

    fn expected(&self) -> HashMap<u128, Vec<u64>> {
        let mut map: HashMap<u128, Vec<u64>> = HashMap::new();
        for (id, offset) in self.live() {
            map.entry(id).or_default().push(offset);
        }
        map
    }
}

/// What `CorrelationIndex::grow` does: live entries into a table with room
/// for at least twice as many.
fn grown_capacity(live: usize, capacity: u64) -> u64 {
    let mut capacity = capacity;
    while (live as u64 + 1) * 4 > capacity && capacity < MAX_CAPACITY {
        capacity *= 2;
    }
    capacity
}

fn formatted(capacity: u64, through: u64) -> Vec<u8> {
    let mut bytes = vec![0xa5; CorrelationTable::<Vec<u8>>::bytes_for(capacity)];
    CorrelationTable::format(&mut bytes[..], capacity, through);
    bytes
}

/// What the model cases did, summed over the run (printed after the last case).
#[derive(Debug, Default)]
struct Tally {
    cases: AtomicU64,
    inserts: AtomicU64,
    lookups: AtomicU64,
    growths: AtomicU64,
    truncations: AtomicU64,
    rebuilds: AtomicU64,
    reopens: AtomicU64,
    largest_capacity: AtomicU64,
}

static MODEL: Tally = Tally {
    cases: AtomicU64::new(0),
    inserts: AtomicU64::new(0),
    lookups: AtomicU64::new(0),
    growths: AtomicU64::new(0),
    truncations: AtomicU64::new(0),
    rebuilds: AtomicU64::new(0),
    reopens: AtomicU64::new(0),
    largest_capacity: AtomicU64::new(0),
};

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Runs `ops` against a table and the model; panics (with the step) on any
/// disagreement.
fn run_model(pool: &[u128], initial_capacity: u64, ops: &[Op]) {
    let mut model = Model::default();
    let mut bytes = formatted(initial_capacity, 0);
    let mut table = CorrelationTable::open(&mut bytes[..]).expect("a formatted table opens");
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Insert(which) => {
                let id = pool[which];
                let offset = model.end();
                model.ids.push(id);
                if id != 0 {
                    count(&MODEL.inserts);
                    if table.is_full() {
                        count(&MODEL.growths);
                        let live = live_entries(&table.entries(), model.start);
                        let capacity = grown_capacity(live.len(), table.header().capacity);
                        bytes = refill(capacity, model.end(), &live);
                        table = CorrelationTable::open(&mut bytes[..]).expect("grown table opens");
                    }
                    assert!(!table.is_full(), "step {step}: full after growing");
                    assert!(table.insert(id, offset), "step {step}: insert refused");
                    model.inserted.push((id, offset));
                }
            }
            Op::Lookup(which) => {
                count(&MODEL.lookups);
                check_lookup(&table, &model, pool[which], step);
            }
            Op::Truncate(eighths) => {
                count(&MODEL.truncations);
                let drop_count = model.ids.len() * eighths as usize / 8;
                model.ids.drain(..drop_count);
                model.start += drop_count as u64;
            }
            Op::Grow => {
                count(&MODEL.growths);
                let live = live_entries(&table.entries(), model.start);
                let capacity = grown_capacity(live.len(), table.header().capacity * 2);
                bytes = refill(capacity, model.end(), &live);
                table = CorrelationTable::open(&mut bytes[..]).expect("grown table opens");
            }
            Op::Rebuild => {
                count(&MODEL.rebuilds);
                let live: Vec<(u128, u64)> = model.live().collect();
                bytes = refill(grown_capacity(live.len(), initial_capacity), model.end(), &live);
                table = CorrelationTable::open(&mut bytes[..]).expect("rebuilt table opens");
            }
            Op::Reopen { clean } => {
                count(&MODEL.reopens);
                let before = table.header();
                let mut entries = table.entries();
                table.set_progress(model.end(), clean);
                let header = decode_correlation_header(&bytes).expect("header decodes");
                assert_eq!(
                    (
                        header.capacity,
                        header.count,
                        header.indexed_through,
                        header.clean
                    ),
                    (before.capacity, before.count, model.end(), clean),
                    "step {step}: header after reopen"
                );
                table = CorrelationTable::open(&mut bytes[..]).expect("reopens");
                let mut again = table.entries();
                entries.sort_unstable();
                again.sort_unstable();
                assert_eq!(again, entries, "step {step}: entries after reopen");
            }
        }
        let header = table.header();
        assert!(header.count <= header.capacity / 2, "step {step}: over half full");
        assert_eq!(header.count as usize, table.entries().len(), "step {step}: count");
    }
    for &id in pool {
        check_lookup(&table, &model, id, ops.len());
    }
    MODEL
        .largest_capacity
        .fetch_max(table.header().capacity, Ordering::Relaxed);
    if MODEL.cases.fetch_add(1, Ordering::Relaxed) + 1 == u64::from(proptest_config().cases) {
        eprintln!("model: {MODEL:?}");
    }
}

fn live_entries(entries: &[(u128, u64)], start: u64) -> Vec<(u128, u64)> {
    entries
        .iter()
        .copied()
        .filter(|(_, offset)| *offset >= start)
        .collect()
}

fn refill(capacity: u64, through: u64, entries: &[(u128, u64)]) -> Vec<u8> {
    let mut bytes = formatted(capacity, through);
    let mut table = CorrelationTable::open(&mut bytes[..]).expect("formatted table opens");
    for &(id, offset) in entries {
        assert!(table.insert(id, offset));
    }
    table.set_progress(through, false);
    bytes
}

fn check_lookup<B: AsRef<[u8]> + AsMut<[u8]>>(
    table: &CorrelationTable<B>,
    model: &Model,
    id: u128,
    step: usize,
) {
    let found = table.find(id);
    for offset in &found {
        assert!(
            model.inserted.contains(&(id, *offset)),
            "step {step}: id {id:x} yields offset {offset}, never inserted under it"
        );
    }
    let mut live: Vec<u64> = found.into_iter().filter(|o| *o >= model.start).collect();
    live.sort_unstable();
    let expected = match id {
        0 => vec![],
        _ => model.expected().remove(&id).unwrap_or_default(),
    };
    assert_eq!(live, expected, "step {step}: lookup of {id:x}");
}

// ---------------------------------------------------------------- garbage

/// A header with a valid checksum and the given fields.
fn header_bytes(version: u16, flags: u16, capacity: u64, count: u64, through: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(b"LOGBUSCX");
    header[8..10].copy_from_slice(&version.to_le_bytes());
    header[10..12].copy_from_slice(&flags.to_le_bytes());
    header[16..24].copy_from_slice(&capacity.to_le_bytes());
    header[24..32].copy_from_slice(&count.to_le_bytes());
    header[32..40].copy_from_slice(&through.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..12]);
    hasher.update(&header[16..HEADER_LEN]);
    header[12..16].copy_from_slice(&hasher.finalize().to_le_bytes());
    header
}

/// Decodes `bytes`; if accepted, checks the invariants and exercises the
/// table (lookups, inserts until full, entries), which must stay in bounds
/// and terminate whatever the slots hold.
fn exercise(mut bytes: Vec<u8>, ids: &[u128]) -> bool {
    let Ok(header) = decode_correlation_header(&bytes) else {
        assert!(CorrelationTable::open(&mut bytes[..]).is_err());
        return false;
    };
    assert!(header.capacity.is_power_of_two() && header.capacity <= MAX_CAPACITY);
    assert!(header.count <= header.capacity / 2);
    assert_eq!(bytes.len(), HEADER_LEN + header.capacity as usize * SLOT_LEN);
    let mut table = CorrelationTable::open(&mut bytes[..]).expect("decoded header opens");
    for &id in ids {
        let _ = table.find(id);
        table.insert(id, 7);
    }
    assert!(table.entries().len() as u64 <= header.capacity);
    true
}

// -------------------------------------------------------------- proptests

static CHECKSUMMED: AtomicU64 = AtomicU64::new(0);
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// 256 cases unless `PROPTEST_CASES` says otherwise; a fixed seed unless
/// `PROPTEST_RNG_SEED` does. Failures are kept in `proptest-regressions/`.
fn proptest_config() -> ProptestConfig {
    common::proptests::config(256, 1, 0xc0_44e1, "proptest-regressions/correlation_index.txt")
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn table_lookups_agree_with_a_hash_map_through_inserts_growth_truncation_and_rebuilds(
        pool in id_pool(),
        capacity_log2 in 1u32..6,
        ops in prop::collection::vec(op(), 1..400),
    ) {
        run_model(&pool, 1 << capacity_log2, &ops);
    }

    #[test]
    fn decoding_random_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        magic in any::<bool>(),
        ids in prop::collection::vec(any::<u128>(), 0..8),
    ) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[0..8].copy_from_slice(b"LOGBUSCX");
        }
        exercise(bytes, &ids);
    }

    #[test]
    fn headers_with_a_valid_checksum_but_random_fields_are_accepted_only_when_consistent(
        version in prop_oneof![3 => Just(1u16), 1 => any::<u16>()],
        flags in any::<u16>(),
        capacity in prop_oneof![
            3 => (0u32..12).prop_map(|s| 1u64 << s),
            1 => any::<u64>(),
            1 => Just(MAX_CAPACITY * 2),
        ],
        count in prop_oneof![3 => 0u64..64, 1 => any::<u64>()],
        through in any::<u64>(),
        extra in prop_oneof![3 => Just(0i64), 1 => -30i64..30],
        fill in prop_oneof![Just(0u8), Just(0xffu8), any::<u8>()],
        ids in prop::collection::vec(any::<u128>(), 0..8),
    ) {
        let header = header_bytes(version, flags, capacity, count, through);
        let slots = if capacity <= 1 << 12 { capacity as i64 * SLOT_LEN as i64 } else { 64 };
        let len = (HEADER_LEN as i64 + slots + extra).max(0) as usize;
        let mut bytes = vec![fill; len];
        let n = len.min(HEADER_LEN);
        bytes[..n].copy_from_slice(&header[..n]);
        let accepted = exercise(bytes, &ids);
        ACCEPTED.fetch_add(u64::from(accepted), Ordering::Relaxed);
        if CHECKSUMMED.fetch_add(1, Ordering::Relaxed) + 1 == u64::from(proptest_config().cases) {
            eprintln!("valid checksums: {ACCEPTED:?} of {CHECKSUMMED:?} headers accepted");
        }
        let consistent = version == 1
            && capacity.is_power_of_two()
            && capacity <= 1 << 12
            && count <= capacity / 2
            && extra == 0;
        prop_assert_eq!(accepted, consistent);
    }

    #[test]
    fn a_valid_table_with_flipped_bytes_or_a_wrong_length_never_panics(
        entries in prop::collection::vec((1..=u128::MAX, any::<u64>()), 0..40),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..6),
        resize in prop_oneof![Just(None), (0usize..2000).prop_map(Some)],
        ids in prop::collection::vec(any::<u128>(), 0..8),
    ) {
        let mut bytes = refill(128, 99, &entries);
        for (at, mask) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
        }
        if let Some(len) = resize {
            bytes.resize(len, 0x5a);
        }
        exercise(bytes, &ids);
    }
}

/// Slots are not covered by the header checksum, so a table whose header
/// is intact but whose slots are all non-zero (bit rot, a torn write in a
/// file marked clean) has no empty slot: insert must give up, not probe
/// forever. (Also found by the fuzzer; this test hung before its fix.)
#[test]
fn insert_into_a_table_whose_slots_are_all_garbage_terminates() {
    let mut bytes = vec![0xee; HEADER_LEN + 8 * SLOT_LEN];
    bytes[..HEADER_LEN].copy_from_slice(&header_bytes(1, 1, 8, 0, 0));
    let mut table = CorrelationTable::open(&mut bytes[..]).expect("header is valid");
    assert!(!table.insert(42, 1));
    assert!(table.find(42).is_empty());
    assert_eq!(table.entries().len(), 8);
}

/// Found by the checksummed-header property: a header with a valid checksum
/// and a capacity whose slot bytes exceed `u64::MAX - 48` overflowed the
/// expected-length sum (a panic in debug builds) instead of being rejected.
#[test]
fn header_claiming_an_enormous_capacity_is_rejected_without_overflow() {
    for capacity in [u64::MAX / 24, 768_614_336_404_564_649, 1 << 62, u64::MAX] {
        let bytes = header_bytes(1, 1, capacity, 0, 0);
        assert!(decode_correlation_header(&bytes).is_err(), "capacity {capacity}");
    }
}

// -------------------------------------------------------------- via the bus

const REPLIES: usize = 1_500;

fn index_path(dir: &Path) -> PathBuf {
    dir.join("state/inboxes/client/correlation.cix")
}

/// Sends `REPLIES` requests and answers them all (enough replies that the
/// index grew past its first size); closes the bus cleanly.
fn bus_with_replies(dir: &Path) -> Vec<(CorrelationId, Vec<u8>)> {
    let bus = Bus::open(dir, BusOptions::default()).expect("open");
    let requester = bus.requester("client").expect("requester");
    let ids: Vec<(CorrelationId, Vec<u8>)> = (0..REPLIES)
        .map(|i| {
            let body = format!("question {i}").into_bytes();
            let id = requester.send_request("svc", &Record::new(&body)).expect("send");
            (id, body)
        })
        .collect();
    let responder = bus.responder("svc").expect("responder");
    while let Some(request) = responder.try_recv().expect("recv") {
        let answer = [b"answer to ".as_slice(), request.record().value()].concat();
        request.reply(&Record::new(&answer)).expect("reply");
    }
    for (id, body) in &ids {
        let reply = requester.reply_for(*id, Duration::ZERO).expect("reply");
        assert_eq!(reply.value(), [b"answer to ".as_slice(), body].concat());
    }
    drop(requester);
    bus.close().expect("close");
    let header = decode_correlation_header(&std::fs::read(index_path(dir)).expect("index")).expect("header");
    assert!(header.clean && header.capacity > 1024, "{header:?}");
    ids
}

/// Reopens the bus and counts the replies the requester finds.
fn replies_found(dir: &Path, ids: &[(CorrelationId, Vec<u8>)]) -> usize {
    let bus = Bus::open(dir, BusOptions::default()).expect("reopen");
    let requester = bus.requester("client").expect("requester");
    let found = ids
        .iter()
        .filter(|(id, body)| {
            let replies = requester.replies(*id).expect("replies");
            assert!(replies.len() <= 1);
            replies
                .first()
                .is_some_and(|r| r.value() == [b"answer to ".as_slice(), body].concat())
        })
        .count();
    drop(requester);
    bus.close().expect("close");
    found
}

type Damage = fn(&mut Vec<u8>);

/// Rewrites the header with a valid checksum and `edit` applied to its fields.
fn reheader(bytes: &mut [u8], edit: impl FnOnce(&mut (u16, u16, u64, u64, u64))) {
    let h = decode_correlation_header(bytes).expect("valid before the damage");
    let mut fields = (
        FORMAT_VERSION,
        h.clean as u16,
        h.capacity,
        h.count,
        h.indexed_through,
    );
    edit(&mut fields);
    let (version, flags, capacity, count, through) = fields;
    bytes[..HEADER_LEN].copy_from_slice(&header_bytes(version, flags, capacity, count, through));
}

const DAMAGES: [(&str, Damage); 10] = [
    ("bad magic", |b| b[0] ^= 0xff),
    ("bad checksum", |b| b[13] ^= 0x01),
    ("newer version", |b| reheader(b, |h| h.0 = FORMAT_VERSION + 1)),
    ("capacity not matching the length", |b| reheader(b, |h| h.2 *= 2)),
    ("count over half the capacity", |b| {
        reheader(b, |h| h.3 = h.2 / 2 + 1)
    }),
    ("truncated header", |b| b.truncate(20)),
    ("empty file", |b| b.clear()),
    ("one slot cut off", |b| {
        let len = b.len() - SLOT_LEN;
        b.truncate(len)
    }),
    ("bytes appended", |b| b.extend_from_slice(&[0; 100])),
    ("all garbage", |b| {
        let mut rng = fastrand::Rng::with_seed(7);
        b.iter_mut().for_each(|x| *x = rng.u8(..))
    }),
];

#[test]
fn index_with_a_damaged_header_is_rebuilt_at_open_and_every_reply_is_still_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = bus_with_replies(dir.path());
    let path = index_path(dir.path());
    let pristine = std::fs::read(&path).expect("index");
    for (what, damage) in DAMAGES {
        let mut bytes = pristine.clone();
        damage(&mut bytes);
        assert!(
            decode_correlation_header(&bytes).is_err(),
            "{what}: still decodes"
        );
        std::fs::write(&path, &bytes).expect("damage the index");
        assert_eq!(replies_found(dir.path(), &ids), REPLIES, "{what}");
        let rebuilt = decode_correlation_header(&std::fs::read(&path).expect("index")).expect(what);
        assert!(rebuilt.clean, "{what}: not closed cleanly after the rebuild");
        std::fs::write(&path, &pristine).expect("restore");
    }
    std::fs::remove_file(&path).expect("remove the index");
    assert_eq!(replies_found(dir.path(), &ids), REPLIES, "index file missing");
}

/// Wipes every slot, and sets the clean flag as told (with a valid checksum).
fn wipe_slots(path: &Path, clean: bool) {
    let mut bytes = std::fs::read(path).expect("index");
    reheader(&mut bytes, |h| h.1 = clean as u16);
    bytes[HEADER_LEN..].fill(0);
    std::fs::write(path, bytes).expect("write the index");
}

#[test]
fn unclean_index_is_rebuilt_from_the_inbox_while_a_clean_one_is_trusted_as_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = bus_with_replies(dir.path());
    let path = index_path(dir.path());
    // Not marked clean: rebuilt from the inbox, so the wiped slots are back.
    wipe_slots(&path, false);
    assert_eq!(replies_found(dir.path(), &ids), REPLIES);
    // Marked clean: trusted without a scan of the inbox, so what was wiped
    // stays missing. (This is the price of an O(1) open; the flag is only
    // ever set by a close that synced the table.)
    wipe_slots(&path, true);
    assert_eq!(replies_found(dir.path(), &ids), 0);
}

#[test]
fn inbox_retention_drops_old_replies_from_lookups_and_the_index_keeps_its_first_size() {
    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    // Durability::Os: nothing crashes here; the test is about retention.
    let topics = TopicOptions::default().durability(Durability::Os);
    let options = BusOptions::default().topic_defaults(topics.clone());
    let inbox_options = topics.segment_bytes(4096).max_bytes(16 << 10);
    let bus = Bus::open(dir.path(), options.clone()).expect("open");
    let inbox = bus
        .topic_with("client.inbox", inbox_options.clone())
        .expect("inbox");
    let requester = bus.requester("client").expect("requester");
    let responder = bus.responder("svc").expect("responder");
    let mut answered: Vec<(CorrelationId, u64)> = Vec::new();
    for _ in 0..ROUNDS {
        let ids: Vec<CorrelationId> = (0..PER_ROUND)
            .map(|_| requester.send_request("svc", &Record::new(b"q")).expect("send"))
            .collect();
        while let Some(request) = responder.try_recv().expect("recv") {
            request.reply(&Record::new(b"a")).expect("reply");
        }
        for id in ids {
            let reply = requester.reply_for(id, Duration::ZERO).expect("a fresh reply");
            answered.push((id, reply.record().offset()));
        }
    }
    let start = inbox.start_offset();
    assert!(
        start > (ROUNDS * PER_ROUND / 2) as u64,
        "retention kept too much: start {start}"
    );
    let check = |requester: &logbus::Requester, start: u64, context: &str| {
        for (id, offset) in &answered {
            let found = requester.replies(*id).expect("replies").len();
            assert_eq!(
                found,
                usize::from(*offset >= start),
                "{context}: reply at {offset}, start {start}"
            );
        }
    };
    check(&requester, start, "open");
    // Growth dropped the entries retention made stale instead of doubling.
    let header = decode_correlation_header(&std::fs::read(index_path(dir.path())).expect("index"));
    assert_eq!(header.expect("header").capacity, 1024);
    drop(requester);
    bus.close().expect("close");

    let bus = Bus::open(dir.path(), options).expect("reopen");
    let inbox = bus.topic_with("client.inbox", inbox_options).expect("inbox");
    let requester = bus.requester("client").expect("requester");
    check(&requester, inbox.start_offset(), "after a clean reopen");
    drop(requester);
    bus.close().expect("close");
}
