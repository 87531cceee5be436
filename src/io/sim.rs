//! An in-memory file system that models what a crash leaves behind.
//!
//! Each file keeps its current bytes and its bytes as of the last sync, plus
//! the operations since. [`SimStorage::power_loss`] rebuilds every file from
//! its synced bytes and replays each unsynced operation at random: applied,
//! dropped, torn (a prefix applied) or replaced by garbage. Directory entries
//! created or removed since the last `sync_dir` of their directory may be
//! undone. Faults ([`Fault`]) make syncs, writes, length changes, directory
//! syncs or removals fail, run the disk full, or halt the "process" after a
//! number of syncs or writes, so tests can crash at any I/O step. After a power loss, handles opened before it stop working.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::seam::{LockGuard, MappedFile, Storage, StorageFile};

/// A fault to inject into [`SimStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The sync call after `after` more successful syncs fails with EIO.
    SyncError {
        /// Syncs that still succeed first.
        after: u64,
    },
    /// Writes beyond `capacity` total stored bytes fail with ENOSPC after
    /// writing the part that fits.
    DiskFull {
        /// Total bytes all files may hold.
        capacity: u64,
    },
    /// After `after` more successful syncs, every operation fails: the
    /// process is dead, and only [`SimStorage::power_loss`] revives it.
    HaltAfterSyncs {
        /// Syncs that still succeed first.
        after: u64,
    },
    /// Like `HaltAfterSyncs`, counting writes; the fatal write is torn.
    HaltAfterWrites {
        /// Writes that still succeed first.
        after: u64,
    },
    /// The file write after `after` more successful ones fails with EIO,
    /// writing nothing.
    WriteError {
        /// Writes that still succeed first.
        after: u64,
    },
    /// The length change (of a file or a mapped file) after `after` more
    /// successful ones fails with EIO, changing nothing.
    SetLenError {
        /// Length changes that still succeed first.
        after: u64,
    },
    /// The directory sync after `after` more successful ones fails with
    /// EIO (counted apart from file syncs; `SyncError` counts both).
    SyncDirError {
        /// Directory syncs that still succeed first.
        after: u64,
    },
    /// The removal (of a file or an empty directory) after `after` more
    /// successful ones fails with EIO, removing nothing.
    RemoveError {
        /// Removals that still succeed first.
        after: u64,
    },
}

/// The operations the `...Error` faults count, one kind each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write,
    SetLen,
    SyncDir,
    Remove,
}

impl Fault {
    /// The countdown of a fault that fails `op`, if this is one.
    fn countdown(&mut self, op: Op) -> Option<&mut u64> {
        match (self, op) {
            (Fault::WriteError { after }, Op::Write)
            | (Fault::SetLenError { after }, Op::SetLen)
            | (Fault::SyncDirError { after }, Op::SyncDir)
            | (Fault::RemoveError { after }, Op::Remove) => Some(after),
            _ => None,
        }
    }
}

/// The in-memory, fault-injecting [`Storage`]. Clones share one file system.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct SimState {
    epoch: u64,
    halted: bool,
    files: HashMap<PathBuf, Arc<Mutex<Node>>>,
    durable: HashMap<PathBuf, Arc<Mutex<Node>>>,
    dirs: HashSet<PathBuf>,
    locks: HashSet<PathBuf>,
    faults: Vec<Fault>,
    syncs: u64,
    writes: u64,
}

#[derive(Debug, Default)]
struct Node {
    data: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<PendingOp>,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

fn halted_error() -> io::Error {
    io::Error::other("simulated crash: storage halted")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Node {
    fn write(&mut self, pos: u64, bytes: &[u8]) {
        let end = pos as usize + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[pos as usize..end].copy_from_slice(bytes);
        self.pending.push(PendingOp::Write {
            pos,
            bytes: bytes.to_vec(),
        });
    }

    fn set_len(&mut self, len: u64) {
        self.data.resize(len as usize, 0);
        self.pending.push(PendingOp::SetLen(len));
    }

    fn sync(&mut self) {
        self.synced = self.data.clone();
        self.pending.clear();
    }

    /// What the disk holds after power loss: synced bytes plus a random
    /// fate for each later operation.
    fn after_power_loss(&self, rng: &mut fastrand::Rng) -> Node {
        let mut data = self.synced.clone();
        for op in &self.pending {
            match op {
                PendingOp::SetLen(len) => {
                    if rng.bool() {
                        data.resize(*len as usize, 0);
                    }
                }
                PendingOp::Write { pos, bytes } => {
                    let landed: Vec<u8> = match rng.u8(0..4) {
                        0 => continue,
                        1 => bytes.clone(),
                        2 => bytes[..rng.usize(0..=bytes.len())].to_vec(),
                        _ => (0..bytes.len()).map(|_| rng.u8(..)).collect(),
                    };
                    let end = *pos as usize + landed.len();
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[*pos as usize..end].copy_from_slice(&landed);
                }
            }
        }
        Node {
            synced: data.clone(),
            data,
            pending: Vec::new(),
        }
    }
}

impl SimState {
    fn check_alive(&self, epoch: u64) -> io::Result<()> {
        if self.halted || epoch != self.epoch {
            return Err(halted_error());
        }
        Ok(())
    }

    fn stored_bytes(&self) -> u64 {
        self.files.values().map(|n| lock(n).data.len() as u64).sum()
    }

    /// Counts an `op` against the faults that fail it; `Err` means this
    /// one fails (with EIO, once per fault).
    fn on_op(&mut self, op: Op) -> io::Result<()> {
        for after in self.faults.iter_mut().filter_map(|f| f.countdown(op)) {
            if *after == 0 {
                *after = u64::MAX;
                return Err(io::Error::from_raw_os_error(5));
            }
            *after -= 1;
        }
        Ok(())
    }

    /// Counts a sync and applies sync faults; `Err` means this sync fails.
    fn on_sync(&mut self) -> io::Result<()> {
        for fault in &mut self.faults {
            match fault {
                Fault::SyncError { after: 0 } => {
                    *fault = Fault::SyncError { after: u64::MAX };
                    return Err(io::Error::from_raw_os_error(5));
                }
                Fault::HaltAfterSyncs { after: 0 } => {
                    self.halted = true;
                    return Err(halted_error());
                }
                Fault::SyncError { after } | Fault::HaltAfterSyncs { after } => {
                    *after = after.saturating_sub(1)
                }
                _ => {}
            }
        }
        self.syncs += 1;
        Ok(())
    }

    /// Counts a write and returns how many of `len` bytes at `end_after`
    /// may land, with the error to report if not all.
    fn on_write(&mut self, grow_by: u64, len: usize) -> (usize, Option<io::Error>) {
        self.writes += 1;
        let stored = self.stored_bytes();
        for fault in &mut self.faults {
            match fault {
                Fault::HaltAfterWrites { after: 0 } => {
                    self.halted = true;
                    return (len / 2, Some(halted_error()));
                }
                Fault::HaltAfterWrites { after } => *after -= 1,
                Fault::DiskFull { capacity } if stored + grow_by > *capacity => {
                    let room = capacity.saturating_sub(stored) as usize;
                    let fits = len.saturating_sub(grow_by as usize).saturating_add(room);
                    return (fits.min(len), Some(io::Error::from_raw_os_error(28)));
                }
                _ => {}
            }
        }
        (len, None)
    }
}

impl SimStorage {
    /// An empty file system with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a fault; it stays until it fires (sync errors) or is cleared.
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.push(fault);
    }

    /// Removes every pending fault (a halted storage stays halted).
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Successful syncs so far (file and directory).
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// Whether a halt fault has fired.
    pub fn is_halted(&self) -> bool {
        lock(&self.state).halted
    }

    /// Simulates power loss with the given seed: every unsynced operation
    /// gets a random fate, unsynced directory changes may be undone, open
    /// handles and locks are invalidated, faults are cleared.
    pub fn power_loss(&self, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut state = lock(&self.state);
        let mut paths: Vec<PathBuf> = state.files.keys().chain(state.durable.keys()).cloned().collect();
        paths.sort();
        paths.dedup();
        let mut files = HashMap::new();
        for path in paths {
            let current = state.files.get(&path);
            let durable = state.durable.get(&path);
            let survivor = match (current, durable) {
                (Some(c), Some(d)) if Arc::ptr_eq(c, d) => Some(c),
                (Some(c), _) if rng.bool() => Some(c),
                (_, Some(d)) if rng.bool() => Some(d),
                _ => None,
            };
            if let Some(node) = survivor {
                let node = lock(node).after_power_loss(&mut rng);
                files.insert(path, Arc::new(Mutex::new(node)));
            }
        }
        state.durable = files.clone();
        state.files = files;
        state.epoch += 1;
        state.halted = false;
        state.locks.clear();
        state.faults.clear();
    }

    /// The current bytes of a file, if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = lock(&self.state);
        state.files.get(path).map(|n| lock(n).data.clone())
    }

    /// Replaces a file's bytes, durably, as if the disk had changed under
    /// logbus (for corruption tests). Creates the file if missing.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut state = lock(&self.state);
        let node = state.files.entry(path.to_path_buf()).or_default().clone();
        state.durable.insert(path.to_path_buf(), node.clone());
        *lock(&node) = Node {
            data: bytes.to_vec(),
            synced: bytes.to_vec(),
            pending: Vec::new(),
        };
    }

    /// Paths of every file, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = lock(&self.state).files.keys().cloned().collect();
        paths.sort();
        paths
    }

    fn node(&self, path: &Path, create: bool) -> io::Result<(Arc<Mutex<Node>>, u64)> {
        let mut state = lock(&self.state);
        state.check_alive(state.epoch)?;
        let epoch = state.epoch;
        if let Some(node) = state.files.get(path) {
            return Ok((node.clone(), epoch));
        }
        if !create {
            return Err(io::ErrorKind::NotFound.into());
        }
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        if !state.dirs.contains(&parent) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let node = Arc::new(Mutex::new(Node::default()));
        state.files.insert(path.to_path_buf(), node.clone());
        Ok((node, epoch))
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.check_alive(state.epoch)?;
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let (node, epoch) = self.node(path, create)?;
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            node,
            epoch,
        }))
    }

    fn map(&self, path: &Path, min_len: u64) -> io::Result<Box<dyn MappedFile>> {
        let (node, epoch) = self.node(path, true)?;
        let mut bytes = lock(&node).data.clone();
        if (bytes.len() as u64) < min_len {
            bytes.resize(min_len as usize, 0);
            lock(&node).set_len(min_len);
        }
        Ok(Box::new(SimMap {
            file: SimFile {
                storage: self.clone(),
                node,
                epoch,
            },
            bytes,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.check_alive(state.epoch)?;
        state.on_op(Op::Remove)?;
        state
            .files
            .remove(path)
            .map(drop)
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    /// Removes `dir` if it holds no file and no directory (counted and
    /// failed as a removal by [`Fault::RemoveError`]). The removal is
    /// durable at once, and with it the removals of the files it held:
    /// a power loss brings none of them back.
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.check_alive(state.epoch)?;
        state.on_op(Op::Remove)?;
        if !state.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let inside = |p: &PathBuf| p.parent() == Some(dir);
        if state.files.keys().any(inside) || state.dirs.iter().any(inside) {
            return Err(io::ErrorKind::DirectoryNotEmpty.into());
        }
        state.dirs.remove(dir);
        state.durable.retain(|p, _| !p.starts_with(dir));
        Ok(())
    }

    /// Moves every file and directory at or under `from`; the move is
    /// durable at once (as if both parents were synced with it).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.check_alive(state.epoch)?;
        let exists = |s: &SimState, p: &Path| s.files.contains_key(p) || s.dirs.contains(p);
        if !exists(&state, from) {
            return Err(io::ErrorKind::NotFound.into());
        }
        if exists(&state, to) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let moved = |p: &Path| p.strip_prefix(from).ok().map(|rest| to.join(rest));
        let SimState {
            files, durable, dirs, ..
        } = &mut *state;
        for map in [files, durable] {
            let keys: Vec<PathBuf> = map.keys().filter(|p| p.starts_with(from)).cloned().collect();
            for key in keys {
                if let (Some(node), Some(new)) = (map.remove(&key), moved(&key)) {
                    map.insert(new, node);
                }
            }
        }
        let old_dirs: Vec<PathBuf> = dirs.iter().filter(|p| p.starts_with(from)).cloned().collect();
        for dir in old_dirs {
            dirs.remove(&dir);
            dirs.extend(moved(&dir));
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = lock(&self.state);
        state.check_alive(state.epoch)?;
        if !state.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let files = state.files.keys();
        let subdirs = state.dirs.iter();
        Ok(files
            .chain(subdirs)
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.check_alive(state.epoch)?;
        state.on_op(Op::SyncDir)?;
        state.on_sync()?;
        let SimState { files, durable, .. } = &mut *state;
        durable.retain(|p, _| p.parent() != Some(dir));
        for (path, node) in files.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            durable.insert(path.clone(), node.clone());
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        self.node(path, true)?;
        let mut state = lock(&self.state);
        if !state.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            storage: self.clone(),
            path: path.to_path_buf(),
            epoch: state.epoch,
        })))
    }
}

#[derive(Debug)]
struct SimLock {
    storage: SimStorage,
    path: PathBuf,
    epoch: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = lock(&self.storage.state);
        if state.epoch == self.epoch {
            state.locks.remove(&self.path);
        }
    }
}

#[derive(Debug)]
struct SimFile {
    storage: SimStorage,
    node: Arc<Mutex<Node>>,
    epoch: u64,
}

impl SimFile {
    fn alive(&self) -> io::Result<MutexGuard<'_, SimState>> {
        let state = lock(&self.storage.state);
        state.check_alive(self.epoch)?;
        Ok(state)
    }

    fn sync(&self) -> io::Result<()> {
        self.alive()?.on_sync()?;
        lock(&self.node).sync();
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let _state = self.alive()?;
        let node = lock(&self.node);
        let start = (pos as usize).min(node.data.len());
        let n = buf.len().min(node.data.len() - start);
        buf[..n].copy_from_slice(&node.data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut state = self.alive()?;
        state.on_op(Op::Write)?;
        let mut node = lock(&self.node);
        let grow_by = (pos + buf.len() as u64).saturating_sub(node.data.len() as u64);
        drop(node);
        let (fits, error) = state.on_write(grow_by, buf.len());
        node = lock(&self.node);
        if fits > 0 {
            node.write(pos, &buf[..fits]);
        }
        error.map_or(Ok(()), Err)
    }

    fn size(&self) -> io::Result<u64> {
        let _state = self.alive()?;
        Ok(lock(&self.node).data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.alive()?.on_op(Op::SetLen)?;
        lock(&self.node).set_len(len);
        Ok(())
    }

    /// Like `fallocate`: all or nothing, failing with ENOSPC when a
    /// [`Fault::DiskFull`] capacity has no room for the growth. Not a write:
    /// it neither counts towards nor triggers write faults. The new length
    /// is pending until a sync, like any length change.
    fn preallocate(&self, len: u64) -> io::Result<()> {
        let state = self.alive()?;
        let grow_by = len.saturating_sub(lock(&self.node).data.len() as u64);
        if grow_by == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let stored = state.stored_bytes();
        let full = (state.faults.iter())
            .any(|f| matches!(f, Fault::DiskFull { capacity } if stored + grow_by > *capacity));
        if full {
            return Err(io::Error::from_raw_os_error(28));
        }
        lock(&self.node).set_len(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

#[derive(Debug)]
struct SimMap {
    file: SimFile,
    bytes: Vec<u8>,
}

impl MappedFile for SimMap {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.bytes.resize(len as usize, 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        // Counted and faulted like any other sync.
        self.file.alive()?.on_sync()?;
        let mut node = lock(&self.file.node);
        node.data.clone_from(&self.bytes);
        node.sync();
        drop(node);
        Ok(())
    }
}
