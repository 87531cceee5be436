//! Memory-mapped index files: the only module allowed `unsafe`.
//!
//! Soundness rests on three invariants, each upheld by the callers:
//! - the owning directory is locked (`Storage::lock`), so no other logbus
//!   process truncates or rewrites a mapped file;
//! - a mapped file is only resized through [`MmapFile::set_len`], which
//!   drops the mapping before changing the length and maps again after;
//! - the mapping's length is the file's length at mapping time, so every
//!   slice handed out lies inside the file.
//!
//! Growing a file writes zeros instead of leaving a hole: the first store
//! into a page of a hole must allocate a block, and on a full file system
//! that raises SIGBUS and kills the process. Written zeros make a full disk
//! fail the resize with `ENOSPC` instead, which callers handle.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
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
            resize(&file, min_len)?;
        }
        let map = map_whole(&file)?;
        Ok(MmapFile { file, map })
    }
}

/// Sets the length of an unmapped file, allocating any growth (see the
/// module docs). A failed growth gives back what it took.
fn resize(file: &File, len: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let old_len = file.metadata()?.len();
    let mut position = old_len;
    while position < len {
        let chunk = (len - position).min(ZEROS.len() as u64);
        if let Err(e) = file.write_all_at(&ZEROS[..chunk as usize], position) {
            let _ = file.set_len(old_len);
            return Err(e);
        }
        position += chunk;
    }
    file.set_len(len)
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
        let resized = resize(&self.file, len);
        // Map again even if growing failed, so the entries stay readable.
        self.map = map_whole(&self.file)?;
        resized
    }

    fn sync(&self) -> io::Result<()> {
        if let Some(map) = &self.map {
            map.flush()?;
        }
        self.file.sync_all()
    }
}
