//! Memory-mapped index files: the only module allowed `unsafe`.
//!
//! Soundness rests on three invariants, each upheld by the callers:
//! - the owning directory is locked (`Storage::lock`), so no other logbus
//!   process truncates or rewrites a mapped file;
//! - a mapped file is only resized through [`MmapFile::set_len`], which
//!   drops the mapping before changing the length and maps again after;
//! - the mapping's length is the file's length at mapping time, so every
//!   slice handed out lies inside the file.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;

use memmap2::MmapMut;

use super::seam::MappedFile;
use super::std_fs::open_owner_only;

/// A read-write mapping of a whole file. A zero-length file has no mapping.
#[derive(Debug)]
pub(super) struct MmapFile {
    file: File,
    map: Option<MmapMut>,
}

impl MmapFile {
    pub(super) fn open(path: &Path, min_len: u64) -> io::Result<Self> {
        let file = open_owner_only(path, true)?;
        if file.metadata()?.len() < min_len {
            file.set_len(min_len)?;
        }
        let map = map_whole(&file)?;
        Ok(MmapFile { file, map })
    }
}

fn map_whole(file: &File) -> io::Result<Option<MmapMut>> {
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the directory lock keeps other logbus processes from changing
    // the file, and this process only resizes it through `set_len`, which
    // unmaps first; the mapping covers exactly the current file length.
    let map = unsafe { MmapMut::map_mut(file)? };
    Ok(Some(map))
}

impl MappedFile for MmapFile {
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if let Some(map) = self.map.take() {
            map.flush()?;
        }
        self.file.set_len(len)?;
        self.map = map_whole(&self.file)?;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        if let Some(map) = &self.map {
            map.flush()?;
        }
        self.file.sync_all()
    }
}
