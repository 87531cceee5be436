//! docs/FORMAT.md cannot drift from the code: its worked hex examples are
//! parsed out of the markdown and compared with what `logbus::format` and a
//! real `Log` write, its constants block with the crate's constants, and its
//! claims about checksums, the directory layout and file modes, the limits
//! and the retention write order are checked here.
//!
//! Each checked block in FORMAT.md sits between `<!-- hex:NAME -->` and
//! `<!-- /hex:NAME -->` (or `constants`). A dump line is `OFFSET  BYTES...`,
//! optionally followed by `|` and free text; a line holding only an offset
//! marks the end and must equal the byte count. When a test fails it prints
//! the bytes the code produces, ready to paste.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use logbus::format::{
    BatchEntry, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MAX_BYTES, FrameError, HeaderIter, INDEX_HEADER_LEN,
    IndexKind, OFFSET_ENTRY_LEN, OLDEST_FORMAT_VERSION, OffsetEntry, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    SegmentFrame, SegmentHeader, TIME_ENTRY_LEN, TimeEntry, batch_record_len, decode_frame,
    decode_index_header, decode_segment_frame, decode_segment_header, encode_batch_into, encode_frame,
    encode_index_header,
};
use logbus::storage::SimStorage;
use logbus::{CorruptKind, Log, LogOptions, Record, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};

const FORMAT_MD: &str = include_str!("../docs/FORMAT.md");

/// The worked example's fixed inputs (FORMAT.md states them in prose).
const CREATED_MS: i64 = 1_700_000_000_000;
const TIMESTAMP_0: i64 = 1_700_000_000_000;
const TIMESTAMP_1: i64 = 1_700_000_000_001;
const TIMESTAMP_2: i64 = 1_700_000_000_002;
const TIMESTAMP_3: i64 = 1_700_000_000_003;

fn example_record_0() -> Record<'static> {
    Record::new(b"hello")
        .key(b"user-7")
        .header("trace", b"42")
        .timestamp(TIMESTAMP_0)
}

fn example_record_1() -> Record<'static> {
    Record::new(b"world").timestamp(TIMESTAMP_1)
}

/// The batch the example appends third: records 2 and 3.
fn example_batch() -> [Record<'static>; 2] {
    [
        Record::new(b"a").timestamp(TIMESTAMP_2),
        Record::new(b"bc").key(b"k").timestamp(TIMESTAMP_3),
    ]
}

/// The three frames of the example, encoded by `encode_frame` and
/// `encode_batch_into`.
fn example_frames() -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, 0, TIMESTAMP_0, b"user-7", &[("trace", b"42")], b"hello");
    encode_frame(&mut out, 1, TIMESTAMP_1, b"", &[], b"world");
    let entries = [
        BatchEntry {
            timestamp: TIMESTAMP_2,
            key: b"",
            headers: &[],
            value: b"a",
        },
        BatchEntry {
            timestamp: TIMESTAMP_3,
            key: b"k",
            headers: &[],
            value: b"bc",
        },
    ];
    let len: usize = entries
        .iter()
        .map(|e| batch_record_len(TIMESTAMP_2, e).unwrap())
        .sum();
    let start = out.len();
    out.resize(start + FRAME_HEADER_LEN + len, 0);
    encode_batch_into(&mut out[start..], 2, entries.into_iter());
    out
}

/// The whole example segment file `00000000000000000000.log`.
fn example_segment() -> Vec<u8> {
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        base_offset: 0,
        created_ms: CREATED_MS,
    };
    let mut out = header.encode().to_vec();
    out.extend(example_frames());
    out
}

/// The example's `.idx` after a clean close: one entry, for the first record.
fn example_offset_index() -> Vec<u8> {
    let mut out = encode_index_header(IndexKind::Offset, 0).to_vec();
    out.extend(
        OffsetEntry {
            relative_offset: 0,
            position: SEGMENT_HEADER_LEN as u32,
        }
        .encode(),
    );
    out
}

/// The example's `.tix` after a clean close: the running maximum timestamp
/// at the first index entry, then the final maximum written when sealing.
fn example_time_index() -> Vec<u8> {
    let mut out = encode_index_header(IndexKind::Time, 0).to_vec();
    for (timestamp, relative_offset) in [(TIMESTAMP_0, 0), (TIMESTAMP_3, 3)] {
        out.extend(
            TimeEntry {
                timestamp,
                relative_offset,
            }
            .encode(),
        );
    }
    out
}

/// The text between `<!-- NAME -->` and `<!-- /NAME -->` in FORMAT.md.
fn marked_block(name: &str) -> &'static str {
    let begin = format!("<!-- {name} -->");
    let end = format!("<!-- /{name} -->");
    let start = FORMAT_MD
        .find(&begin)
        .unwrap_or_else(|| panic!("docs/FORMAT.md has no `{begin}` marker"))
        + begin.len();
    let stop = FORMAT_MD[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("docs/FORMAT.md has no `{end}` marker"));
    assert_eq!(
        FORMAT_MD[start + stop + end.len()..].find(&begin),
        None,
        "`{begin}` appears twice"
    );
    &FORMAT_MD[start..start + stop]
}

/// Parses a marked hex dump: offsets must count the bytes, and a final line
/// with only an offset must state the total.
fn hex_block(name: &str) -> Vec<u8> {
    let block = marked_block(&format!("hex:{name}"));
    let mut bytes = Vec::new();
    let mut ended = false;
    for line in block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("```"))
    {
        assert!(!ended, "hex:{name}: line after the end offset: {line:?}");
        let data = line.split_once('|').map_or(line, |(data, _comment)| data);
        let mut tokens = data.split_whitespace();
        let offset = tokens
            .next()
            .unwrap_or_else(|| panic!("hex:{name}: no offset in {line:?}"));
        let offset = usize::from_str_radix(offset, 16)
            .unwrap_or_else(|_| panic!("hex:{name}: bad offset in {line:?}"));
        assert_eq!(
            offset,
            bytes.len(),
            "hex:{name}: offset column disagrees with the bytes in {line:?}"
        );
        let before = bytes.len();
        for token in tokens {
            assert_eq!(
                token.len(),
                2,
                "hex:{name}: {token:?} is not one byte in {line:?}"
            );
            let byte = u8::from_str_radix(token, 16)
                .unwrap_or_else(|_| panic!("hex:{name}: {token:?} is not hex in {line:?}"));
            bytes.push(byte);
        }
        ended = bytes.len() == before;
    }
    assert!(
        ended,
        "hex:{name}: the dump must end with a line holding only the total length"
    );
    bytes
}

/// `hexdump -C` style, used to print the bytes a failing test expected.
fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, row) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:08x} ", i * 16);
        for (j, byte) in row.iter().enumerate() {
            let gap = if j == 8 { "  " } else { " " };
            let _ = write!(out, "{gap}{byte:02x}");
        }
        let pad = (16 - row.len()) * 3 + usize::from(row.len() <= 8);
        let ascii: String = row
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{:pad$}  |{ascii}|", "");
    }
    let _ = writeln!(out, "{:08x}", bytes.len());
    out
}

fn assert_doc_bytes(name: &str, expected: &[u8]) {
    let documented = hex_block(name);
    assert!(
        documented == expected,
        "docs/FORMAT.md block hex:{name} differs from what the code writes; the code writes:\n{}",
        hexdump(expected)
    );
}

#[test]
fn worked_example_segment_in_format_doc_is_what_the_encoder_writes() {
    let segment = example_segment();
    assert_doc_bytes("segment-annotated", &segment);
    assert_doc_bytes("segment-hexdump", &segment);
}

#[test]
fn worked_example_index_files_in_format_doc_are_what_the_encoder_writes() {
    assert_doc_bytes("offset-index", &example_offset_index());
    assert_doc_bytes("time-index", &example_time_index());
}

#[test]
fn worked_example_decodes_back_to_the_records_the_doc_describes() {
    let segment = hex_block("segment-annotated");
    let header = decode_segment_header(&segment).unwrap();
    assert_eq!(
        header,
        SegmentHeader {
            version: FORMAT_VERSION,
            base_offset: 0,
            created_ms: CREATED_MS
        }
    );
    let frame_0 = decode_frame(&segment[SEGMENT_HEADER_LEN..]).unwrap();
    let bytes_0 = &segment[SEGMENT_HEADER_LEN..];
    assert_eq!(
        (frame_0.len, frame_0.offset, frame_0.timestamp),
        (60, 0, TIMESTAMP_0)
    );
    assert_eq!(&bytes_0[frame_0.key.clone()], b"user-7");
    assert_eq!(&bytes_0[frame_0.value.clone()], b"hello");
    let headers: Vec<_> = HeaderIter::new(&bytes_0[frame_0.headers.clone()], frame_0.header_count).collect();
    assert_eq!(headers, vec![("trace", &b"42"[..])]);
    let bytes_1 = &segment[SEGMENT_HEADER_LEN + frame_0.len..];
    let frame_1 = decode_frame(bytes_1).unwrap();
    assert_eq!(
        (frame_1.len, frame_1.offset, frame_1.timestamp),
        (41, 1, TIMESTAMP_1)
    );
    assert!(frame_1.key.is_empty() && frame_1.headers.is_empty());
    assert_eq!(&bytes_1[frame_1.value.clone()], b"world");
    let bytes_2 = &bytes_1[frame_1.len..];
    let Ok(SegmentFrame::Batch(batch)) = decode_segment_frame(bytes_2) else {
        panic!("the third frame is a batch");
    };
    assert_eq!(
        (batch.len, batch.offset, batch.timestamp, batch.count),
        (48, 2, TIMESTAMP_2, 2)
    );
    let records: Vec<_> = SegmentFrame::Batch(batch)
        .records(bytes_2)
        .map(|r| (r.offset, r.timestamp, &bytes_2[r.key], &bytes_2[r.value]))
        .collect();
    assert_eq!(
        records,
        [
            (2, TIMESTAMP_2, &b""[..], &b"a"[..]),
            (3, TIMESTAMP_3, &b"k"[..], &b"bc"[..])
        ]
    );
    assert_eq!(bytes_2.len(), batch.len, "the example holds exactly three frames");
    assert_eq!(
        decode_index_header(IndexKind::Offset, &hex_block("offset-index")),
        Ok(0)
    );
    assert_eq!(
        decode_index_header(IndexKind::Time, &hex_block("time-index")),
        Ok(0)
    );
}

#[test]
fn log_engine_writes_the_worked_example_byte_for_byte() {
    let sim = SimStorage::new();
    let dir = Path::new("/sim/log");
    let log = Log::open(dir, LogOptions::default().storage(Arc::new(sim.clone()))).unwrap();
    assert_eq!(log.append(&example_record_0()).unwrap(), 0);
    assert_eq!(log.append(&example_record_1()).unwrap(), 1);
    assert_eq!(log.append_batch(&example_batch()).unwrap(), 2..4);
    log.close().unwrap();
    drop(log);

    let file = |name: &str| {
        sim.read_file(&dir.join(name))
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let segment = file("00000000000000000000.log");
    let documented = hex_block("segment-annotated");
    assert_eq!(segment.len(), documented.len());
    // Only the creation time (and so the header CRC) depends on the clock.
    assert_eq!(segment[..12], documented[..12], "magic, version, flags");
    assert_eq!(segment[16..24], documented[16..24], "base offset");
    assert_eq!(decode_segment_header(&segment).map(|h| h.base_offset), Ok(0));
    assert!(
        segment[SEGMENT_HEADER_LEN..] == documented[SEGMENT_HEADER_LEN..],
        "frames differ"
    );
    assert_doc_bytes("offset-index", &file("00000000000000000000.idx"));
    assert_doc_bytes("time-index", &file("00000000000000000000.tix"));
}

#[test]
fn all_zero_region_never_decodes_as_a_frame() {
    // CRC-32/IEEE of no bytes is 0, which is why the length is checked first.
    assert_eq!(crc32fast::hash(&[]), 0);
    for len in [0, 4, FRAME_HEADER_LEN, 4096] {
        let zeros = vec![0u8; len];
        let expected = if len < 4 {
            FrameError::Incomplete { needed: 4 }
        } else {
            FrameError::Corrupt(CorruptKind::ZeroFill)
        };
        assert_eq!(decode_frame(&zeros), Err(expected), "{len} zero bytes");
    }
    // A plausible length followed by zeros fails the checksum instead.
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    frame[..4].copy_from_slice(&(FRAME_HEADER_LEN as u32).to_le_bytes());
    assert!(matches!(
        decode_frame(&frame),
        Err(FrameError::Corrupt(CorruptKind::Checksum { stored: 0, .. }))
    ));
    assert_eq!(
        decode_segment_header(&[0; SEGMENT_HEADER_LEN]),
        Err(CorruptKind::BadMagic)
    );
    assert_eq!(
        decode_index_header(IndexKind::Offset, &[0; INDEX_HEADER_LEN]),
        Err(CorruptKind::BadMagic)
    );
}

#[test]
fn flipping_any_bit_of_a_frame_or_header_makes_it_fail_to_decode() {
    let segment = example_segment();
    let frames = &segment[SEGMENT_HEADER_LEN..];
    let frame_0_len = decode_frame(frames).unwrap().len;
    for byte in 0..frame_0_len {
        for bit in 0..8 {
            let mut damaged = frames[..frame_0_len].to_vec();
            damaged[byte] ^= 1 << bit;
            assert!(decode_frame(&damaged).is_err(), "frame byte {byte} bit {bit}");
        }
    }
    for byte in 0..SEGMENT_HEADER_LEN {
        for bit in 0..8 {
            let mut damaged = segment[..SEGMENT_HEADER_LEN].to_vec();
            damaged[byte] ^= 1 << bit;
            assert!(
                decode_segment_header(&damaged).is_err(),
                "header byte {byte} bit {bit}"
            );
        }
    }
    let index = example_offset_index();
    for byte in 0..INDEX_HEADER_LEN {
        let mut damaged = index.clone();
        damaged[byte] ^= 0x01;
        assert!(
            decode_index_header(IndexKind::Offset, &damaged).is_err(),
            "index header byte {byte}"
        );
    }
}

#[test]
fn constants_in_format_doc_match_the_code() {
    let actual: Vec<(&str, u64)> = vec![
        ("FORMAT_VERSION", u64::from(FORMAT_VERSION)),
        ("OLDEST_FORMAT_VERSION", u64::from(OLDEST_FORMAT_VERSION)),
        ("SEGMENT_HEADER_LEN", SEGMENT_HEADER_LEN as u64),
        ("FRAME_HEADER_LEN", FRAME_HEADER_LEN as u64),
        ("FRAME_MAX_BYTES", FRAME_MAX_BYTES as u64),
        ("INDEX_HEADER_LEN", INDEX_HEADER_LEN as u64),
        ("OFFSET_ENTRY_LEN", OFFSET_ENTRY_LEN as u64),
        ("TIME_ENTRY_LEN", TIME_ENTRY_LEN as u64),
        ("SEGMENT_BYTES_MIN", SEGMENT_BYTES_MIN),
        ("SEGMENT_BYTES_MAX", SEGMENT_BYTES_MAX),
    ];
    let mut documented = Vec::new();
    for line in marked_block("constants").lines().map(str::trim) {
        if line.is_empty() || line.starts_with("```") {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not `NAME = value`: {line:?}"));
        let value = value
            .split('(')
            .next()
            .unwrap_or_default()
            .trim()
            .replace('_', "");
        let value: u64 = value.parse().unwrap_or_else(|_| panic!("bad number in {line:?}"));
        documented.push((name.trim(), value));
    }
    assert_eq!(documented, actual);
    assert_eq!(&SEGMENT_MAGIC, b"LOGBUSSG");
    assert_eq!(IndexKind::Offset.magic(), *b"LOGBUSIX");
    assert_eq!(IndexKind::Time.magic(), *b"LOGBUSTX");
    for magic in ["LOGBUSSG", "LOGBUSIX", "LOGBUSTX", "LOGBUSCP"] {
        assert!(
            FORMAT_MD.contains(&format!("`{magic}`")),
            "FORMAT.md does not name magic {magic}"
        );
    }
}

#[test]
fn log_directory_holds_the_documented_files_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&example_record_0()).unwrap();
    log.close().unwrap();
    drop(log);
    let expected = [
        ".checkpoint",
        ".clean",
        ".lock",
        "00000000000000000000.idx",
        "00000000000000000000.log",
        "00000000000000000000.tix",
    ];
    assert_eq!(names(dir.path()), expected);
    for name in expected {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} has mode {:o}", mode & 0o777);
    }
    assert_eq!(std::fs::metadata(dir.path().join(".clean")).unwrap().len(), 0);
    let checkpoint = std::fs::read(dir.path().join(".checkpoint")).unwrap();
    let checkpoint = logbus::format::Checkpoint::decode(&checkpoint).unwrap();
    assert_eq!((checkpoint.base_offset, checkpoint.end_offset), (0, 1));
    // A sealed (or cleanly closed) index holds exactly its header and entries.
    let idx = std::fs::read(dir.path().join("00000000000000000000.idx")).unwrap();
    assert_eq!(idx.len(), INDEX_HEADER_LEN + OFFSET_ENTRY_LEN);

    // Opening consumes the clean marker; while open, indexes are preallocated.
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert!(!dir.path().join(".clean").exists());
    let idx_len = std::fs::metadata(dir.path().join("00000000000000000000.idx"))
        .unwrap()
        .len();
    assert!(idx_len > (INDEX_HEADER_LEN + OFFSET_ENTRY_LEN) as u64);
}

/// FORMAT.md "Write order", step 5: retention deletes oldest segments first
/// and syncs the directory after each, so a power loss part-way can bring
/// back only a suffix of the removed segments and the log stays contiguous.
#[test]
fn retention_cut_short_by_power_loss_leaves_contiguous_segments() {
    let value = |i: u64| format!("value-{i:04}").into_bytes();
    for seed in 0..48u64 {
        let sim = SimStorage::new();
        let dir = Path::new("/sim/log");
        let options = || {
            LogOptions::default()
                .segment_bytes(256)
                .storage(Arc::new(sim.clone()))
        };
        let log = Log::open(dir, options()).unwrap();
        for i in 0..40 {
            log.append(&Record::new(&value(i))).unwrap();
        }
        sim.inject(logbus::storage::Fault::HaltAfterSyncs { after: seed % 8 });
        let _ = log.truncate_before(39);
        drop(log);
        sim.power_loss(seed);

        let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("seed {seed}: open failed: {e}"));
        assert_eq!(log.end_offset(), 40, "seed {seed}");
        let mut cursor = log.cursor(logbus::Position::Earliest).unwrap();
        for i in log.start_offset()..40 {
            let record = cursor
                .next()
                .unwrap_or_else(|e| panic!("seed {seed}: offset {i}: {e}"));
            assert_eq!(record.map(|r| r.value().to_vec()), Some(value(i)), "seed {seed}");
        }
    }
}

/// FORMAT.md "Limits": options outside the documented ranges are refused at
/// open, before anything is created.
#[test]
fn options_outside_the_documented_limits_are_refused_at_open() {
    let sim = SimStorage::new();
    let options = || LogOptions::default().storage(Arc::new(sim.clone()));
    let refused = [
        options().segment_bytes(SEGMENT_BYTES_MIN - 1),
        options().segment_bytes(SEGMENT_BYTES_MAX + 1),
        options().max_record_bytes(FRAME_HEADER_LEN as u64 - 1),
        options().index_interval_bytes(0),
        options().durability(logbus::Durability::Interval(std::time::Duration::ZERO)),
    ];
    for options in refused {
        let result = Log::open(Path::new("/sim/log"), options.clone());
        assert!(
            matches!(result, Err(logbus::Error::InvalidArgument(_))),
            "{options:?}"
        );
    }
    assert!(sim.files().is_empty(), "a refused open created {:?}", sim.files());
    for bytes in [SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX] {
        Log::open(Path::new("/sim/log"), options().segment_bytes(bytes))
            .unwrap()
            .close()
            .unwrap();
    }
}

/// FORMAT.md "Limits": a segment file never grows past twice
/// `segment_bytes` (past `segment_bytes` only while the seal of the segment
/// before is under way), and a batch that cannot fit in an empty segment is
/// refused.
#[test]
fn segment_files_never_exceed_twice_segment_bytes() {
    let sim = SimStorage::new();
    let dir = Path::new("/sim/log");
    let segment_bytes = SEGMENT_BYTES_MIN;
    let log = Log::open(
        dir,
        LogOptions::default()
            .segment_bytes(segment_bytes)
            .durability(logbus::Durability::Os)
            .storage(Arc::new(sim.clone())),
    )
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let values: Vec<Vec<u8>> = (0..300).map(|_| vec![b'x'; rng.usize(0..=180)]).collect();
    let (mut next, mut refused) = (0, 0);
    while next < values.len() {
        let count = rng.usize(1..=3).min(values.len() - next);
        let batch: Vec<Record<'_>> = values[next..next + count].iter().map(Record::new).collect();
        let bytes: usize = batch.iter().map(|r| r.encoded_len().unwrap()).sum();
        match log.append_batch(&batch) {
            Ok(range) => assert_eq!(range, next as u64..(next + count) as u64),
            Err(logbus::Error::InvalidArgument(_)) => {
                assert!(
                    bytes as u64 > segment_bytes - SEGMENT_HEADER_LEN as u64,
                    "{bytes} bytes refused"
                );
                refused += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        next += count;
    }
    assert!(refused > 0, "no batch was too large for a segment");
    let segments: Vec<_> = sim
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(segments.len() > 50, "only {} segments", segments.len());
    for path in segments {
        let len = sim.read_file(&path).unwrap().len() as u64;
        assert!(len <= 2 * segment_bytes, "{} holds {len} bytes", path.display());
    }
}
