//! Numbered records and the files of a log directory, as the recovery and
//! corruption tests build, find, copy and decode them.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use logbus::format::{SEGMENT_HEADER_LEN, decode_segment_frame};

pub fn key(i: u64) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

pub fn value(i: u64) -> Vec<u8> {
    format!("value-{i:04}").into_bytes()
}

pub fn segment_file(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Base offsets of the `.log` files in `dir`, ascending.
pub fn bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").map(|stem| stem.parse().unwrap())
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// One frame found by walking a segment with the public decoder.
#[derive(Debug, Clone, Copy)]
pub struct FrameAt {
    pub position: u64,
    pub len: usize,
    /// The offset of its first record.
    pub offset: u64,
    /// How many records it holds (more than one in a batch frame).
    pub count: u64,
}

/// The valid frames of a segment file, in order, from its header on.
pub fn frames(segment: &[u8]) -> Vec<FrameAt> {
    let mut found = Vec::new();
    let mut position = SEGMENT_HEADER_LEN;
    while let Ok(frame) = decode_segment_frame(&segment[position.min(segment.len())..]) {
        found.push(FrameAt {
            position: position as u64,
            len: frame.size(),
            offset: frame.offset(),
            count: frame.count(),
        });
        position += frame.size();
    }
    found
}

/// Copies the log files of `from` into `to` (not the lock file).
pub fn copy_log(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != ".lock" {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
