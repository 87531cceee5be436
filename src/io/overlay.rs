//! A storage that reads another storage (the real file system by default)
//! and keeps every change in memory. The dump tool runs the real recovery
//! code on it as a dry run, and the bus reads the stats of topics it has
//! not opened through it: whatever recovery would truncate, rebuild or
//! delete happens only in the overlay, and the underlying files are only
//! ever opened read-only. It takes no lock, so it can inspect a directory
//! while its owner is running.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::seam::{LockGuard, MappedFile, Storage, StorageFile, read_exact_at};
use super::std_fs::StdStorage;

/// The read-only, copy-on-write [`Storage`]. Clones share one overlay.
#[derive(Debug, Clone)]
pub struct OverlayStorage {
    state: Arc<Mutex<OverlayState>>,
    base: Arc<dyn Storage>,
}

impl Default for OverlayStorage {
    fn default() -> Self {
        Self::over(Arc::new(StdStorage))
    }
}

#[derive(Debug, Default)]
struct OverlayState {
    files: HashMap<PathBuf, Arc<Mutex<OverlayNode>>>,
    removed: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

/// A file as the overlay sees it: a prefix of the real file, then the
/// writes made through the overlay, in order.
#[derive(Debug, Default)]
struct OverlayNode {
    base: Option<Arc<dyn StorageFile>>,
    /// Real bytes below this are visible (shrinks with truncation).
    base_visible: u64,
    len: u64,
    patches: Vec<(u64, Vec<u8>)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OverlayNode {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if pos >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - pos) as usize);
        let buf = &mut buf[..n];
        buf.fill(0);
        if let Some(base) = &self.base
            && pos < self.base_visible
        {
            let from_base = n.min((self.base_visible - pos) as usize);
            let mut read = 0;
            while read < from_base {
                match base.read_at(&mut buf[read..from_base], pos + read as u64)? {
                    0 => break,
                    k => read += k,
                }
            }
        }
        for (at, bytes) in &self.patches {
            let (start, end) = (*at.max(&pos), (at + bytes.len() as u64).min(pos + n as u64));
            if start < end {
                let src = &bytes[(start - at) as usize..(end - at) as usize];
                buf[(start - pos) as usize..(end - pos) as usize].copy_from_slice(src);
            }
        }
        Ok(n)
    }

    fn set_len(&mut self, len: u64) {
        self.base_visible = self.base_visible.min(len);
        self.patches.retain_mut(|(at, bytes)| {
            bytes.truncate(len.saturating_sub(*at) as usize);
            !bytes.is_empty()
        });
        self.len = len;
    }

    fn write(&mut self, buf: &[u8], pos: u64) {
        self.patches.push((pos, buf.to_vec()));
        self.len = self.len.max(pos + buf.len() as u64);
    }
}

impl OverlayStorage {
    /// An overlay over `base` with no changes yet.
    pub fn over(base: Arc<dyn Storage>) -> Self {
        OverlayStorage {
            state: Arc::default(),
            base,
        }
    }

    fn node(&self, path: &Path, create: bool) -> io::Result<Arc<Mutex<OverlayNode>>> {
        let mut state = lock(&self.state);
        if let Some(node) = state.files.get(path) {
            return Ok(node.clone());
        }
        let base = match state.removed.contains(path) {
            true => None,
            false => match self.base.open_read_only(path) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
        };
        if base.is_none() && !create {
            return Err(io::ErrorKind::NotFound.into());
        }
        let len = match &base {
            Some(file) => file.size()?,
            None => 0,
        };
        let node = OverlayNode {
            base,
            base_visible: len,
            len,
            patches: Vec::new(),
        };
        let node = Arc::new(Mutex::new(node));
        state.removed.remove(path);
        state.files.insert(path.to_path_buf(), node.clone());
        Ok(node)
    }
}

impl Storage for OverlayStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        lock(&self.state).dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(OverlayFile(self.node(path, create)?)))
    }

    fn map(&self, path: &Path, min_len: u64) -> io::Result<Box<dyn MappedFile>> {
        let file = OverlayFile(self.node(path, true)?);
        let len = file.size()?;
        let mut bytes = vec![0u8; len.max(min_len) as usize];
        read_exact_at(&file, &mut bytes[..len as usize], 0)?;
        Ok(Box::new(OverlayMap { file, bytes }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.node(path, false)?;
        let mut state = lock(&self.state);
        state.files.remove(path);
        state.removed.insert(path.to_path_buf());
        Ok(())
    }

    /// Refused: the overlay shows what recovery would do, and recovery
    /// never removes a directory (only deleting a consumer or a topic
    /// does, after renaming it).
    fn remove_dir(&self, _dir: &Path) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Refused: the overlay shows what recovery would do, and recovery
    /// never renames (only repairing consumer state does).
    fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = lock(&self.state);
        let mut entries: HashSet<PathBuf> = match self.base.list(dir) {
            Ok(listing) => listing.into_iter().collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound && state.dirs.contains(dir) => HashSet::new(),
            Err(e) => return Err(e),
        };
        entries.retain(|p| !state.removed.contains(p));
        entries.extend(state.files.keys().filter(|p| p.parent() == Some(dir)).cloned());
        Ok(entries.into_iter().collect())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock(&self, _path: &Path) -> io::Result<Option<LockGuard>> {
        Ok(Some(Box::new(())))
    }
}

#[derive(Debug)]
struct OverlayFile(Arc<Mutex<OverlayNode>>);

impl StorageFile for OverlayFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        lock(&self.0).read_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        lock(&self.0).write(buf, pos);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.0).len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        lock(&self.0).set_len(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct OverlayMap {
    file: OverlayFile,
    bytes: Vec<u8>,
}

impl MappedFile for OverlayMap {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.bytes.resize(len as usize, 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut node = lock(&self.file.0);
        node.set_len(0);
        node.write(&self.bytes, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_stay_in_memory_and_reads_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let overlay = OverlayStorage::default();
        let file = overlay.open(&path, false).unwrap();
        file.write_all_at(b"HELLO", 0).unwrap();
        file.set_len(8).unwrap();
        file.set_len(10).unwrap();
        let mut buf = [0u8; 10];
        read_exact_at(file.as_ref(), &mut buf, 0).unwrap();
        assert_eq!(&buf, b"HELLO wo\0\0");
        overlay.remove(&path).unwrap();
        assert!(overlay.open(&path, false).is_err());
        assert!(overlay.list(dir.path()).unwrap().is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
    }
}
