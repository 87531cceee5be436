//! [`SimStorage`] with a test's own behaviour before its reads, writes and
//! syncs: the slow disk of the fault tests, the disk that fails reads of
//! part of a file in the recovery tests, the disk that fails writes to one
//! topic in the dead-letter tests, the directory that cannot be listed in
//! the retention tests. Everything else goes to the simulation.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbus::storage::{LockGuard, MappedFile, SimStorage, Storage, StorageFile};

/// What a test adds: each hook runs before the calls it names, and an
/// error it returns fails that call.
pub trait Hooks: Debug + Send + Sync + 'static {
    /// Before each sync of a file (data or all) or of a directory.
    fn before_sync(&self) {}

    /// Before each read of `len` bytes at `pos` of the file at `path`.
    fn before_read(&self, path: &Path, pos: u64, len: usize) -> io::Result<()> {
        let _ = (path, pos, len);
        Ok(())
    }

    /// Before each write of `len` bytes at `pos` of the file at `path`.
    fn before_write(&self, path: &Path, pos: u64, len: usize) -> io::Result<()> {
        let _ = (path, pos, len);
        Ok(())
    }

    /// Before each listing of the directory `dir`.
    fn before_list(&self, dir: &Path) -> io::Result<()> {
        let _ = dir;
        Ok(())
    }
}

/// `sim` with `hooks` before its reads and syncs.
#[derive(Debug)]
pub struct Hooked<H> {
    sim: SimStorage,
    hooks: Arc<H>,
}

impl<H> Hooked<H> {
    pub fn new(sim: SimStorage, hooks: H) -> Hooked<H> {
        Hooked::shared(sim, Arc::new(hooks))
    }

    /// Like [`Hooked::new`], with hooks the test keeps a handle on (to
    /// turn a fault on and off, or to use them across reopens).
    pub fn shared(sim: SimStorage, hooks: Arc<H>) -> Hooked<H> {
        Hooked { sim, hooks }
    }
}

#[derive(Debug)]
struct HookedFile<H> {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    hooks: Arc<H>,
}

impl<H: Hooks> Storage for Hooked<H> {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.sim.create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(HookedFile {
            file: self.sim.open(path, create)?,
            path: path.to_owned(),
            hooks: self.hooks.clone(),
        }))
    }

    fn map(&self, path: &Path, min_len: u64) -> io::Result<Box<dyn MappedFile>> {
        self.sim.map(path, min_len)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.sim.remove(path)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.sim.remove_dir(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sim.rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.hooks.before_list(dir)?;
        self.sim.list(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.hooks.before_sync();
        self.sim.sync_dir(dir)
    }

    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        self.sim.lock(path)
    }
}

impl<H: Hooks> StorageFile for HookedFile<H> {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.hooks.before_read(&self.path, pos, buf.len())?;
        self.file.read_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.hooks.before_write(&self.path, pos, buf.len())?;
        self.file.write_all_at(buf, pos)
    }

    fn size(&self) -> io::Result<u64> {
        self.file.size()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.hooks.before_sync();
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.hooks.before_sync();
        self.file.sync_all()
    }
}
